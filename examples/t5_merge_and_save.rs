//! Merges a LoRA adapter into T5's weights and saves a full Hugging Face checkpoint that
//! transformers loads (`T5ForConditionalGeneration.from_pretrained(OUT)`).
//!
//! ```sh
//! cargo run --release --example t5_merge_and_save -- OUT_DIR
//! ```

use std::error::Error;
use std::path::PathBuf;

use lora_burn::backend::InferenceBackend;
use lora_burn::lora_core::LoraModelOps;
use lora_burn::lora_t5::T5ForConditionalGeneration;

fn main() -> Result<(), Box<dyn Error>> {
    let out = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("lora-t5-merged"));
    let fixtures = PathBuf::from("crates/lora-t5/tests/fixtures");
    let device = Default::default();
    let mut model = T5ForConditionalGeneration::<InferenceBackend>::from_pretrained(
        &fixtures.join("t5_v1_1"),
        &device,
    )?;
    lora_burn::lora_peft_io::load_adapter(
        &mut model,
        &fixtures.join("t5_v1_1_lora/adapter"),
        "default",
    )?;

    let merged = model.merge_and_unload()?;
    model.save_pretrained(&out)?;
    println!(
        "merged {merged} layers; checkpoint written to {}",
        out.display()
    );
    Ok(())
}
