//! An adapter config without `target_modules` targets T5's own defaults (the query and value
//! projections, as PEFT does for `t5`): the model states them, so no caller passes them.

use burn::backend::NdArray;
use lora_peft_io::{inject_adapter, AdapterConfig};
use lora_t5::{T5Config, T5ForConditionalGeneration, T5_DEFAULT_TARGET_MODULES};

#[test]
fn a_null_target_modules_targets_every_q_and_v_of_t5() {
    let config = T5Config {
        vocab_size: 16,
        d_model: 8,
        d_kv: 4,
        num_heads: 2,
        d_ff: 16,
        num_layers: 2,
        num_decoder_layers: 1,
        ..T5Config::default()
    };
    let mut model = T5ForConditionalGeneration::<NdArray>::new(&config, &Default::default());
    let adapter = AdapterConfig::from_json_str(
        r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": null}"#,
        "adapter_config.json".as_ref(),
    )
    .unwrap();
    let targets = inject_adapter(&mut model, &adapter, "default").unwrap();
    let expected: Vec<String> = model
        .linear_paths()
        .into_iter()
        .filter(|p| {
            T5_DEFAULT_TARGET_MODULES
                .iter()
                .any(|t| p.ends_with(&format!(".{t}")))
        })
        .collect();
    // Two encoder blocks and one decoder block with self- and cross-attention: 2 + 2 + 4.
    assert_eq!(expected.len(), 8);
    assert_eq!(targets, expected);
}
