//! `lora-t5 pretrain`: the recipe of the embedded base model. A Unigram tokenizer and a small
//! T5 trained from scratch on the base UI-DSL corpus (without the held-out theme and section
//! type), saved as a Hugging Face directory.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::{AutodiffModule, Module, ModuleMapper, Param};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use clap::Args;
use lora_burn::backend::TrainBackend;
use lora_burn::lora_t5::data::Seq2SeqCollator;
use lora_burn::lora_t5::{
    clip_global_norm, evaluate_loss, DecayKind, FeedForwardKind, LrSchedule, Progress, T5Config,
    T5ForConditionalGeneration, T5Tokenizer,
};

use crate::common::{read_pairs, tokenize, CliResult};

#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Folder with base_train.jsonl, base_valid.jsonl and heldout_train.jsonl.
    #[arg(long, default_value = "data/uidsl")]
    data: PathBuf,
    /// Output model directory.
    #[arg(long, default_value = "models/uidsl-t5-small")]
    out: PathBuf,
    /// Tokenizer vocabulary size.
    #[arg(long, default_value_t = 1000)]
    vocab_size: usize,
    /// Hidden size.
    #[arg(long, default_value_t = 128)]
    d_model: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 4)]
    heads: usize,
    /// Feed-forward size.
    #[arg(long, default_value_t = 384)]
    d_ff: usize,
    /// Encoder and decoder layers.
    #[arg(long, default_value_t = 2)]
    layers: usize,
    /// Passes over the base corpus.
    #[arg(long, default_value_t = 30)]
    epochs: usize,
    /// Examples per step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    learning_rate: f64,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// Makes every parameter trainable (a model built with LoRA layers starts with frozen bases).
struct Unfreeze;

impl<B: Backend> ModuleMapper<B> for Unfreeze {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(true)
    }
}

pub fn run(args: PretrainArgs) -> CliResult {
    type B = TrainBackend;
    let started = Instant::now();
    let train = read_pairs(&args.data.join("base_train.jsonl"), false)?;
    let valid = read_pairs(&args.data.join("base_valid.jsonl"), false)?;
    // The tokenizer also sees the held-out training texts so that their characters have
    // pieces; the model itself never trains on them here.
    let heldout = read_pairs(&args.data.join("heldout_train.jsonl"), false)?;
    let texts: Vec<String> = train
        .iter()
        .chain(&heldout)
        .flat_map(|(s, t)| [s.clone(), t.clone()])
        .collect();
    let tokenizer = T5Tokenizer::train_unigram(&texts, args.vocab_size)?;
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
    let device = Default::default();
    B::seed(&device, args.seed);
    let model = T5ForConditionalGeneration::<B>::new(&config, &device);
    let _ = model.valid(); // materialise the lazily initialised weights from the seed
    let mut model = model.map(&mut Unfreeze);
    let collator = Seq2SeqCollator {
        max_source_len: 128,
        max_target_len: 128,
        pad_id: config.pad_token_id,
    };
    let train = tokenize(&tokenizer, &train)?;
    let valid = tokenize(&tokenizer, &valid)?;
    let steps_per_epoch = train.len().div_ceil(args.batch_size);
    let total = steps_per_epoch * args.epochs;
    let schedule = LrSchedule {
        peak: args.learning_rate,
        warmup_steps: total / 20,
        total_steps: total,
        decay: DecayKind::Linear,
    };
    let mut optimizer = AdamWConfig::new()
        .with_weight_decay(0.01)
        .with_epsilon(1e-8)
        .init::<B, T5ForConditionalGeneration<B>>();
    println!(
        "pretraining a {} on {} examples, {total} steps",
        lora_burn::lora_core::count_parameters(&model),
        train.len()
    );
    let progress = Progress::new(total, 0, true);
    let mut step = 0;
    let training_started = Instant::now();
    let mut tokens = 0usize;
    for epoch in 0..args.epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        lora_burn::lora_t5::data::SplitMix64::new(args.seed + epoch as u64).shuffle(&mut order);
        let (mut loss_sum, mut batches) = (0.0, 0);
        for indices in order.chunks(args.batch_size) {
            B::seed(&device, args.seed.wrapping_add(step as u64));
            let examples: Vec<_> = indices.iter().map(|i| train[*i].clone()).collect();
            tokens += examples
                .iter()
                .map(|e| e.source.len() + e.target.len())
                .sum::<usize>();
            let batch = collator.collate::<B>(&examples, &device)?;
            let loss = model.loss(batch.input_ids, batch.attention_mask, batch.labels)?;
            loss_sum += loss.clone().into_scalar() as f64;
            batches += 1;
            let mut grads = GradientsParams::from_grads(loss.backward(), &model);
            clip_global_norm(&model, &mut grads, 1.0);
            let lr = schedule.at(step);
            model = optimizer.step(lr, model, grads);
            step += 1;
            if step % 10 == 0 {
                let seconds = training_started.elapsed().as_secs_f64().max(1e-9);
                progress.show(step, loss_sum / batches as f64, lr, tokens as f64 / seconds);
            }
        }
        let eval = evaluate_loss(&model.valid(), &valid, 32, &collator)?;
        progress.finish();
        println!(
            "epoch {epoch}: train loss {:.4}, valid loss {eval:.4}",
            loss_sum / batches.max(1) as f64
        );
    }
    let model = model.valid();
    model.save_pretrained(&args.out)?;
    tokenizer.save(&args.out.join("tokenizer.json"))?;
    println!(
        "saved {} in {:.0} s",
        args.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
