//! `lora-t5 pretrain`: the recipe of the embedded base model. A BPE tokenizer and a small
//! T5 trained from scratch on the base UI-DSL corpus (without the held-out theme and section
//! type), saved as a Hugging Face directory.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use clap::{Args, ValueEnum};
use lora_burn::backend::TrainBackend;
use lora_burn::lora_hf::WeightDtype;
use lora_burn::lora_t5::{FeedForwardKind, T5Config, T5ForConditionalGeneration, T5Tokenizer};
use lora_burn::lora_train::data::Seq2SeqCollator;
use lora_burn::lora_train::{DecayKind, Trainer, TrainerConfig, TrainingMode};

use crate::common::{read_pairs, tokenize, train_with_display, CliResult};
use crate::flags;

/// The stored type of the pretrained weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveDtype {
    /// bfloat16.
    Bf16,
    /// float32.
    F32,
}

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Folder with base_train.jsonl, base_valid.jsonl and heldout_train.jsonl.
    #[arg(long, default_value = "data/uidsl")]
    data: PathBuf,
    /// Output model directory.
    #[arg(long, default_value = "models/uidsl-t5-small")]
    out: PathBuf,
    /// Records of the base task generated on top of `base_train.jsonl` (the seeded generator's
    /// `base_train_supplement`: none of their instructions is in any file of `--data`).
    #[arg(long, default_value_t = 29_000, value_parser = flags::count(0..=flags::MAX_COUNT))]
    generated_train: usize,
    /// Tokenizer vocabulary size.
    #[arg(long, default_value_t = 1000, value_parser = flags::count(1..=flags::MAX_COUNT))]
    vocab_size: usize,
    /// Hidden size.
    #[arg(long, default_value_t = 256, value_parser = flags::count(1..=flags::MAX_RANK))]
    d_model: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4, value_parser = flags::count(1..=flags::MAX_RANK))]
    heads: usize,
    /// Feed-forward size.
    #[arg(long, default_value_t = 768, value_parser = flags::count(1..=flags::MAX_COUNT))]
    d_ff: usize,
    /// Encoder and decoder layers.
    #[arg(long, default_value_t = 3, value_parser = flags::count(1..=1024))]
    layers: usize,
    /// Passes over the base corpus.
    #[arg(long, visible_alias = "epochs", default_value_t = 2, value_parser = flags::count(1..=flags::MAX_COUNT))]
    num_train_epochs: usize,
    /// Examples per step.
    #[arg(long, visible_alias = "batch-size", default_value_t = 32, value_parser = flags::count(1..=flags::MAX_COUNT))]
    per_device_train_batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 5e-4, value_parser = flags::positive())]
    learning_rate: f64,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// How the weights are stored: bf16 (half the file of f32; the loaders read it back as f32)
    /// or f32.
    #[arg(long, value_enum, default_value_t = SaveDtype::Bf16)]
    save_dtype: SaveDtype,
    /// Folder of the run's `metrics.jsonl` and `loss.png` (replacing an earlier run's).
    #[arg(long, default_value = "runs/pretrain")]
    run_dir: PathBuf,
}

pub fn run(args: PretrainArgs) -> CliResult {
    type B = TrainBackend;
    let started = Instant::now();
    let mut train = read_pairs(&args.data.join("base_train.jsonl"), false)?;
    let valid = read_pairs(&args.data.join("base_valid.jsonl"), false)?;
    // The tokenizer also sees the held-out training texts so that their characters have
    // pieces; the model itself never trains on them here.
    let heldout = read_pairs(&args.data.join("heldout_train.jsonl"), false)?;
    train.extend(
        uidsl::standard_corpora()
            .base_train_supplement(args.generated_train)?
            .into_iter()
            .map(|record| (record.instruction, record.output_json_minified)),
    );
    let texts: Vec<String> = train
        .iter()
        .chain(&heldout)
        .flat_map(|(s, t)| [s.clone(), t.clone()])
        .collect();
    if !args.d_model.is_multiple_of(args.heads) {
        return Err(format!(
            "--heads must divide --d-model ({}), got {}",
            args.d_model, args.heads
        )
        .into());
    }
    let tokenizer = T5Tokenizer::train_bpe(&texts, args.vocab_size)?;
    let config = T5Config {
        vocab_size: tokenizer.vocab_size(),
        d_model: args.d_model,
        d_kv: args.d_model / args.heads,
        num_heads: args.heads,
        d_ff: args.d_ff,
        num_layers: args.layers,
        num_decoder_layers: args.layers,
        relative_attention_num_buckets: 32,
        relative_attention_max_distance: 128,
        dropout_rate: 0.1,
        feed_forward: FeedForwardKind::GATED_GELU,
        tie_word_embeddings: Some(true),
        scale_decoder_outputs: true,
        ..T5Config::default()
    };
    config.check("the pretrain flags".as_ref())?;
    let device = Default::default();
    B::seed(&device, args.seed);
    let model = T5ForConditionalGeneration::<B>::new(&config, &device);
    let _ = model.valid(); // materialise the lazily initialised weights from the seed
    let mut trainer = Trainer {
        config: TrainerConfig {
            learning_rate: args.learning_rate,
            weight_decay: 0.01,
            adam_epsilon: 1e-8,
            decay: DecayKind::Linear,
            batch_size: args.per_device_train_batch_size,
            max_grad_norm: Some(1.0),
            epochs: args.num_train_epochs,
            // Evaluated at the end of each epoch.
            eval_every: 0,
            log_every: 10,
            seed: args.seed,
            // `--run-dir` holds only this recipe's logs: each run replaces the last one.
            overwrite_output_dir: true,
            ..TrainerConfig::default()
        },
        output_dir: args.run_dir.clone(),
        mode: TrainingMode::Full,
        collator: Seq2SeqCollator {
            max_source_len: 128,
            max_target_len: 128,
            pad_id: config.pad_token_id,
        },
    };
    let train = tokenize(&tokenizer, &train, &trainer.collator)?;
    let valid = tokenize(&tokenizer, &valid, &trainer.collator)?;
    let total = trainer.total_steps(train.len());
    trainer.config.warmup_steps = total / 20;
    println!(
        "pretraining a {} on {} examples, {total} steps",
        lora_burn::lora_core::count_parameters(&lora_burn::lora_core::mark_all_as_trainable(
            model.clone()
        )),
        train.len()
    );
    let outcome = train_with_display(&trainer, model, &train, &valid, false)?;
    for entry in outcome
        .state
        .history
        .iter()
        .filter(|e| e.eval_loss.is_some())
    {
        println!(
            "epoch {}: train loss {:.4}, valid loss {:.4}",
            entry.epoch,
            entry.loss,
            entry.eval_loss.unwrap_or(f64::NAN)
        );
    }
    let model = outcome.model.valid();
    let dtype = match args.save_dtype {
        SaveDtype::Bf16 => WeightDtype::BF16,
        SaveDtype::F32 => WeightDtype::F32,
    };
    model.save_pretrained_as(&args.out, dtype)?;
    tokenizer.save(&args.out.join("tokenizer.json"))?;
    println!(
        "saved {} in {:.0} s (run log in {})",
        args.out.display(),
        started.elapsed().as_secs_f64(),
        trainer.output_dir.display()
    );
    Ok(())
}
