//! Loads a PEFT LoRA adapter directory onto a T5 model and generates with beam search.
//!
//! ```sh
//! cargo run --release --example t5_peft_adapter_generate -- ADAPTER_DIR
//! ```
//! Without an argument it uses the adapter shipped with the T5 test fixtures (made by PEFT).

use std::error::Error;
use std::path::PathBuf;

use burn::tensor::{Int, Tensor, TensorData};
use lora_burn::backend::InferenceBackend;
use lora_burn::lora_t5::{GenerationConfig, T5ForConditionalGeneration};

fn main() -> Result<(), Box<dyn Error>> {
    type B = InferenceBackend;
    let fixtures = PathBuf::from("crates/lora-t5/tests/fixtures");
    let adapter = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| fixtures.join("t5_v1_1_lora/adapter"));
    let device = Default::default();
    let mut model =
        T5ForConditionalGeneration::<B>::from_pretrained(&fixtures.join("t5_v1_1"), &device)?;
    let config = lora_burn::lora_peft_io::load_adapter(&mut model, &adapter, "default")?;
    println!(
        "adapter r={} alpha={} on {:?}",
        config.r(),
        config.lora_alpha(),
        config.target_modules()
    );

    let ids =
        Tensor::<B, 2, Int>::from_data(TensorData::new(vec![5i64, 17, 23, 42, 1], [1, 5]), &device);
    let mask = Tensor::<B, 2, Int>::ones([1, 5], &device);
    let generation = GenerationConfig {
        num_beams: 4,
        max_new_tokens: 12,
        ..GenerationConfig::default()
    };
    println!(
        "generated ids: {:?}",
        model.generate(ids, mask, &generation)?[0]
    );
    Ok(())
}
