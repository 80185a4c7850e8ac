//! One decoding case of `benches/t5.rs` (a random t5-small-sized model with LoRA on `q` and
//! `v`, a 64-token prompt) run in a loop, with nothing else in the process: the program to
//! profile decoding with (`perf record`). Prints the median wall time.
//!
//! Arguments: `greedy` (64 new tokens) or `beam` (4 beams, 32 new tokens), the number of
//! timed runs, then `int8` for int8 base weights (32 weights per scale), `untied` for a
//! language-model head of its own (FLAN-T5's layout) instead of the tied embedding, and
//! `reloaded` for the model saved as a Hugging Face checkpoint and loaded back with
//! `from_pretrained`, the way a user's model arrives.
//!
//! ```sh
//! cargo run --release --example t5_decode_profile -- beam 20
//! perf record -g target/release/examples/t5_decode_profile greedy 20 int8
//! ```

use std::time::Instant;

use burn::tensor::{Int, Tensor, TensorData};
use lora_burn::backend::{Backend, InferenceBackend as B};
use lora_burn::lora_core::{int8_quantizer, quantize_base_weights, LoraConfig};
use lora_burn::lora_peft_io::{inject_adapter, AdapterConfig, ModuleSelector};
use lora_burn::lora_t5::{GenerationConfig, T5Config, T5ForConditionalGeneration};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let case = args.get(1).map(String::as_str).unwrap_or("beam");
    let reps: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let device = Default::default();
    let options = args.get(3..).unwrap_or_default();
    let config = T5Config {
        tie_word_embeddings: Some(!options.iter().any(|a| a == "untied")),
        ..T5Config::default()
    };
    let mut model = T5ForConditionalGeneration::<B>::new(&config, &device);
    if options.iter().any(|a| a == "reloaded") {
        let dir = std::env::temp_dir().join(format!("t5-decode-profile-{}", std::process::id()));
        model.save_pretrained(&dir).expect("save the checkpoint");
        model = T5ForConditionalGeneration::from_pretrained(&dir, &device).expect("load it back");
        std::fs::remove_dir_all(&dir).expect("remove the checkpoint");
    }
    let targets = ModuleSelector::Names(vec!["q".into(), "v".into()]);
    let adapter = AdapterConfig::from_lora_config(&LoraConfig::new(16, 32.0), targets)
        .expect("valid adapter config");
    inject_adapter(&mut model, &adapter, "default").expect("inject adapter");
    if options.iter().any(|a| a == "int8") {
        quantize_base_weights(&mut model, &mut int8_quantizer::<B>(Some(32))).expect("int8");
    }
    let ids: Vec<i64> = (0..64).map(|i| 2 + (i * 7919 % 29998)).collect();
    let prompt = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [1, 64]), &device);
    let mask = Tensor::<B, 2, Int>::ones([1, 64], &device);
    let generation = match case {
        "greedy" => GenerationConfig {
            max_new_tokens: 64,
            min_new_tokens: 64,
            ..GenerationConfig::default()
        },
        _ => GenerationConfig {
            num_beams: 4,
            max_new_tokens: 32,
            min_new_tokens: 32,
            ..GenerationConfig::default()
        },
    };
    // The first run initialises the lazily created parameters.
    let run = || {
        model
            .generate(prompt.clone(), mask.clone(), &generation)
            .expect("generate")
    };
    run();
    let mut times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let start = Instant::now();
            run();
            B::sync(&device).expect("sync");
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!("{case}: median {:.3} s", times[times.len() / 2]);
}
