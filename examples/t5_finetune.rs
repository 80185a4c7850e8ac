//! Fine-tunes a LoRA adapter on T5 with the library API (no command-line tool): load a model,
//! inject an adapter from a PEFT-style config, train with the `Trainer`, save the adapter.
//!
//! ```sh
//! cargo run --release --example t5_finetune
//! ```

use std::error::Error;
use std::path::Path;

use lora_burn::backend::TrainBackend;
use lora_burn::lora_core::{count_parameters, LoraConfig};
use lora_burn::lora_peft_io::{inject_adapter, AdapterConfig, ModuleSelector};
use lora_burn::lora_t5::{T5ForConditionalGeneration, T5Tokenizer};
use lora_burn::lora_train::data::{read_jsonl, JsonlOptions, Seq2SeqCollator, TokenizedExample};
use lora_burn::lora_train::{Trainer, TrainerConfig, TrainingMode};

fn main() -> Result<(), Box<dyn Error>> {
    let model_dir = Path::new("models/uidsl-t5-small");
    let device = Default::default();
    let tokenizer = T5Tokenizer::from_file(&model_dir.join("tokenizer.json"))?;
    let mut model =
        T5ForConditionalGeneration::<TrainBackend>::from_pretrained(model_dir, &device)?;

    let config = AdapterConfig::from_lora_config(
        &LoraConfig::new(8, 16.0).with_lora_dropout(0.05),
        ModuleSelector::Names(vec!["q".into(), "v".into()]),
    )?;
    let targets = inject_adapter(&mut model, &config, "default")?;
    println!("LoRA on {} layers", targets.len());

    let read = |file: &str| -> Result<Vec<TokenizedExample>, Box<dyn Error>> {
        let data = read_jsonl(
            &Path::new("data/uidsl").join(file),
            &JsonlOptions::default(),
        )?;
        data.examples
            .iter()
            .map(|e| Ok(TokenizedExample::encode(&tokenizer, &e.source, &e.target)?))
            .collect()
    };
    let (train, valid) = (read("heldout_train.jsonl")?, read("heldout_valid.jsonl")?);

    let trainer = Trainer {
        config: TrainerConfig {
            learning_rate: 3e-3,
            max_steps: Some(40),
            epochs: 10,
            batch_size: 16,
            eval_every: 20,
            ..TrainerConfig::default()
        },
        output_dir: std::env::temp_dir().join("lora-t5-example-finetune"),
        mode: TrainingMode::Adapter {
            name: "default".into(),
            config,
        },
        collator: Seq2SeqCollator {
            max_source_len: 128,
            max_target_len: 128,
            pad_id: 0,
        },
    };
    let outcome = trainer.train(model, &train, &valid, false)?;
    println!("{}", count_parameters(&outcome.model));
    println!(
        "best validation loss {:?}; adapter saved in {}",
        outcome.state.best,
        trainer.output_dir.join("final").display()
    );
    Ok(())
}
