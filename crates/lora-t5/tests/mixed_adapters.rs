//! One adapter per prompt through T5 (`with_adapter_names`) against PEFT's `adapter_names`.
//!
//! Fixture: `scripts/gen_mixed_adapter_fixtures.py` loads the hot-swap fixture's adapters `a`
//! and `larger` (as `b`) on the tiny `t5_v1_1` model with PEFT 0.21.2 and routes three
//! prompts to `a`, `__base__` and `b`: the forward logits must agree within 1e-4 relative to
//! the largest magnitude, the greedy and 4-beam ids of `generate` must be identical.

mod common;

use std::path::{Path, PathBuf};

use burn::backend::{Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use lora_peft_io::load_adapter;
use lora_t5::{GenerationConfig, Seq2SeqInput, T5Error, T5ForConditionalGeneration};
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn fixture() -> Value {
    let text = std::fs::read_to_string(fixtures().join("mixed_adapters.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ints<B: Backend>(value: &Value) -> Tensor<B, 2, Int> {
    common::int_matrix(value)
}

fn names(f: &Value) -> Vec<String> {
    f["adapter_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The model with adapters `a` and `b`, routed as the fixture routes its prompts.
fn routed<B: Backend>(f: &Value) -> T5ForConditionalGeneration<B> {
    let mut model = T5ForConditionalGeneration::from_pretrained(
        &fixtures().join("t5_v1_1"),
        &Default::default(),
    )
    .unwrap();
    load_adapter(&mut model, &fixtures().join("hotswap/a"), "a").unwrap();
    load_adapter(&mut model, &fixtures().join("hotswap/larger"), "b").unwrap();
    model.with_adapter_names(&names(f)).unwrap()
}

fn logits_match<B: Backend>() {
    let f = fixture();
    let model = routed::<B>(&f);
    let input = Seq2SeqInput::new(ints(&f["input_ids"]), ints(&f["decoder_input_ids"]))
        .attention_mask(ints(&f["attention_mask"]));
    model.check_input(&input).unwrap();
    let got = model
        .forward(input)
        .logits
        .into_data()
        .to_vec::<f32>()
        .unwrap();
    let expected: Vec<f32> = f["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s.as_array().unwrap().iter())
        .flat_map(|p| {
            p.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    assert_eq!(got.len(), expected.len());
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
        assert!((a - b).abs() <= TOLERANCE * scale, "logit {i}: {a} vs {b}");
    }
}

#[test]
fn routed_forward_logits_equal_peft_adapter_names() {
    logits_match::<NdArray>();
}

#[test]
fn routed_forward_logits_equal_peft_adapter_names_on_flex() {
    logits_match::<Flex>();
}

fn generate_matches(run: &str) {
    let f = fixture();
    let model = routed::<NdArray>(&f);
    let kwargs = &f["generate"][run]["kwargs"];
    let config = GenerationConfig {
        max_new_tokens: kwargs["max_new_tokens"].as_u64().unwrap() as usize,
        num_beams: kwargs["num_beams"].as_u64().unwrap() as usize,
        ..GenerationConfig::default()
    };
    let got = model
        .generate(ints(&f["input_ids"]), ints(&f["attention_mask"]), &config)
        .unwrap();
    let expected: Vec<Vec<u32>> = f["generate"][run]["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    assert_eq!(got, expected, "{run}");
}

#[test]
fn routed_greedy_ids_equal_peft_adapter_names() {
    generate_matches("greedy");
}

#[test]
fn routed_beam_ids_equal_peft_adapter_names() {
    generate_matches("beam");
}

#[test]
fn a_batch_other_than_the_routed_names_is_refused() {
    let f = fixture();
    let model = routed::<NdArray>(&f);
    let ids = ints::<NdArray>(&f["input_ids"]).narrow(0, 0, 2);
    let mask = ints::<NdArray>(&f["attention_mask"]).narrow(0, 0, 2);
    let result = model.generate(ids, mask, &GenerationConfig::default());
    assert!(
        matches!(&result, Err(T5Error::InvalidInput { reason }) if reason.contains("3 adapter names")),
        "{result:?}"
    );
    let unknown = model.with_adapter_names(&["a", "nope", "b"]);
    assert!(matches!(unknown, Err(T5Error::Lora(_))), "{unknown:?}");
}
