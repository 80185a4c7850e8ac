//! Criterion benchmarks of a t5-small-sized model with LoRA adapters on `q` and `v`.
//!
//! The model has random weights and t5-small's shape: d_model 512, 6 encoder + 6 decoder
//! layers, 8 heads of 64, d_ff 2048, vocabulary 32128, ReLU feed-forward (T5 v1.0), head tied
//! to the embedding, dropout 0.1. A PEFT-style adapter (r = 16, alpha = 32, targets `q`, `v`)
//! is injected with `lora_peft_io::inject_adapter`; `lora_B` keeps PEFT's default zero
//! initialisation (the adapter path is computed all the same, zeros do not short-cut it).
//!
//! Group `t5`, ids:
//!
//! - `greedy_64`: one 64-token prompt, greedy search, exactly 64 new tokens
//!   (`min_new_tokens = max_new_tokens = 64`, so EOS is never chosen);
//! - `beam4_32`: the same prompt, 4 beams, exactly 32 new tokens;
//! - `greedy_64_int8` and `beam4_32_int8`: the same with every `LoraLinear` base weight stored
//!   in int8 (`quantize_base_weights` with 32 weights per scale, as `--int8` does);
//! - `train_step_bs8`: one LoRA training step on the autodiff backend (batch 8, source 64,
//!   target 128, random ids): `loss` (the head and the cross-entropy fused on flex), backward and
//!   `GradientsParams::from_grads` on the compute threads (`on_compute_threads`, as the trainer
//!   runs them), AdamW `step`; everything but the adapters is frozen with
//!   `mark_only_lora_as_trainable`;
//! - `trainer_2steps_bs8`: the same training steps run by `lora_train::Trainer` (two optimizer
//!   steps of 8 examples, source 64, target 128; the default global-norm clipping at 1.0, the
//!   learning-rate schedule, and everything the trainer writes: the PEFT adapter and
//!   `metrics.jsonl`), to show what the trainer adds to the raw step.
//!
//! Throughput is set in elements per iteration, so criterion's `thrpt` line reads as tokens/s:
//! new tokens for `greedy_64` (64) and `beam4_32` (32, the length of the returned sequence),
//! source + target tokens for `train_step_bs8` (8 × (64 + 128) = 1536) and for
//! `trainer_2steps_bs8` (2 × 1536).
//! `scripts/bench_torch_t5.py` times the same cases with PyTorch + transformers + PEFT, and
//! `examples/t5_train_step_memory.rs` reports the peak memory of the training step.
//!
//! ```sh
//! cargo bench --bench t5                                    # flex (default)
//! cargo bench --bench t5 --features ndarray                 # ndarray
//! ```

use std::time::Duration;

use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use criterion::{criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use lora_burn::backend::{InferenceBackend, TrainBackend};
use lora_burn::lora_core::{
    int8_quantizer, mark_only_lora_as_trainable, on_compute_threads, quantize_base_weights,
    LoraBias, LoraConfig,
};
use lora_burn::lora_peft_io::{inject_adapter, AdapterConfig, ModuleSelector};
use lora_burn::lora_t5::{GenerationConfig, Seq2SeqInput, T5Config, T5ForConditionalGeneration};
use lora_burn::lora_train::data::{Seq2SeqCollator, TokenizedExample};
use lora_burn::lora_train::{Trainer, TrainerConfig, TrainingMode};

const PROMPT_LEN: usize = 64;
const GREEDY_NEW: usize = 64;
const BEAM_NEW: usize = 32;
const BEAMS: usize = 4;
const TRAIN_BATCH: usize = 8;
const TRAIN_SOURCE: usize = 64;
const TRAIN_TARGET: usize = 128;

/// t5-small's dimensions (T5 v1.0: ReLU, tied head): `T5Config`'s defaults, with the head tied.
fn t5_small_config() -> T5Config {
    T5Config {
        tie_word_embeddings: Some(true),
        ..T5Config::default()
    }
}

/// A random t5-small-sized model with a LoRA adapter (r 16, alpha 32) on every `q` and `v`.
fn lora_model<B: Backend>(device: &B::Device) -> T5ForConditionalGeneration<B> {
    let mut model = T5ForConditionalGeneration::<B>::new(&t5_small_config(), device);
    let targets = ModuleSelector::Names(vec!["q".into(), "v".into()]);
    let adapter = AdapterConfig::from_lora_config(&LoraConfig::new(16, 32.0), targets)
        .expect("valid adapter config");
    let paths = inject_adapter(&mut model, &adapter, "default").expect("inject adapter");
    assert_eq!(
        paths.len(),
        6 * 2 + 6 * 2 * 2,
        "q and v of every attention layer"
    );
    model
}

/// Deterministic token ids in `2..30000` (no pad, no EOS), the same sequence as
/// `scripts/bench_torch_t5.py` uses.
fn token_ids(count: usize, seed: u64) -> Vec<i64> {
    let mut state = seed;
    (0..count)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            2 + ((state >> 33) % 29998) as i64
        })
        .collect()
}

fn ids<B: Backend>(rows: usize, cols: usize, seed: u64, device: &B::Device) -> Tensor<B, 2, Int> {
    Tensor::from_data(
        TensorData::new(token_ids(rows * cols, seed), [rows, cols]),
        device,
    )
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("t5");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    generation(&mut group);
    train_step(&mut group);
    trainer_steps(&mut group);
    group.finish();
}

fn generation(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    type B = InferenceBackend;
    let device = Default::default();
    let model = lora_model::<B>(&device);
    let prompt = ids::<B>(1, PROMPT_LEN, 1, &device);
    let mask = Tensor::<B, 2, Int>::ones([1, PROMPT_LEN], &device);
    // One forward pass initialises the lazily created parameters before anything is timed.
    let _ = model
        .forward(
            Seq2SeqInput::new(prompt.clone(), ids::<B>(1, 4, 2, &device))
                .attention_mask(mask.clone()),
        )
        .logits;
    B::sync(&device).expect("sync");

    let greedy = GenerationConfig {
        max_new_tokens: GREEDY_NEW,
        min_new_tokens: GREEDY_NEW,
        ..GenerationConfig::default()
    };
    let beam = GenerationConfig {
        num_beams: BEAMS,
        max_new_tokens: BEAM_NEW,
        min_new_tokens: BEAM_NEW,
        ..GenerationConfig::default()
    };
    let mut int8_model = model.clone();
    quantize_base_weights(&mut int8_model, &mut int8_quantizer::<B>(Some(32))).expect("int8");
    for (suffix, model) in [("", &model), ("_int8", &int8_model)] {
        for (id, config, new_tokens) in [
            ("greedy_64", &greedy, GREEDY_NEW),
            ("beam4_32", &beam, BEAM_NEW),
        ] {
            group.throughput(Throughput::Elements(new_tokens as u64));
            group.bench_function(format!("{id}{suffix}"), |bench| {
                bench.iter(|| {
                    let out = model
                        .generate(prompt.clone(), mask.clone(), config)
                        .expect("generate");
                    assert_eq!(out[0].len(), 1 + new_tokens);
                    out
                })
            });
        }
    }
}

fn train_step(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    type T = TrainBackend;
    let device = Default::default();
    let model = mark_only_lora_as_trainable(lora_model::<T>(&device), LoraBias::None);
    let input_ids = ids::<T>(TRAIN_BATCH, TRAIN_SOURCE, 3, &device);
    let mask = Tensor::<T, 2, Int>::ones([TRAIN_BATCH, TRAIN_SOURCE], &device);
    let labels = ids::<T>(TRAIN_BATCH, TRAIN_TARGET, 4, &device);
    let mut optimizer = AdamWConfig::new().init::<T, T5ForConditionalGeneration<T>>();
    let lr = 1e-4;
    let mut step = |model: T5ForConditionalGeneration<T>| {
        let grads_of = || {
            let loss = model
                .loss(input_ids.clone(), mask.clone(), labels.clone())
                .expect("forward");
            GradientsParams::from_grads(loss.backward(), &model)
        };
        let grads = on_compute_threads(grads_of);
        let model = optimizer.step(lr, model, grads);
        T::sync(&device).expect("sync");
        model
    };
    // The first step initialises the lazy parameters and the optimizer state.
    let mut model = Some(step(model));
    group.throughput(Throughput::Elements(
        (TRAIN_BATCH * (TRAIN_SOURCE + TRAIN_TARGET)) as u64,
    ));
    group.bench_function("train_step_bs8", |bench| {
        bench.iter(|| {
            let next = step(model.take().expect("model"));
            model = Some(next);
        })
    });
}

fn trainer_steps(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    type T = TrainBackend;
    const STEPS: usize = 2;
    let device = Default::default();
    let model = lora_model::<T>(&device);
    // Materialise the lazily created parameters so that every clone shares them.
    let _ = model.valid();
    let examples: Vec<TokenizedExample> = (0..STEPS * TRAIN_BATCH)
        .map(|i| TokenizedExample {
            source: unsigned(token_ids(TRAIN_SOURCE, 10 + i as u64)),
            target: unsigned(token_ids(TRAIN_TARGET, 100 + i as u64)),
        })
        .collect();
    let adapter_config = AdapterConfig::from_lora_config(
        &LoraConfig::new(16, 32.0),
        ModuleSelector::Names(vec!["q".into(), "v".into()]),
    )
    .expect("valid adapter config");
    let output_dir =
        std::env::temp_dir().join(format!("lora-burn-bench-trainer-{}", std::process::id()));
    let trainer = Trainer {
        config: TrainerConfig {
            learning_rate: 1e-4,
            batch_size: TRAIN_BATCH,
            max_steps: Some(STEPS),
            ..TrainerConfig::default()
        },
        output_dir: output_dir.clone(),
        mode: TrainingMode::Adapter {
            name: "default".into(),
            config: adapter_config,
        },
        collator: Seq2SeqCollator {
            max_source_len: TRAIN_SOURCE,
            max_target_len: TRAIN_TARGET,
            pad_id: 0,
        },
    };
    group.throughput(Throughput::Elements(
        (STEPS * TRAIN_BATCH * (TRAIN_SOURCE + TRAIN_TARGET)) as u64,
    ));
    group.bench_function("trainer_2steps_bs8", |bench| {
        bench.iter_batched(
            || model.clone(),
            |model| {
                let outcome = trainer.train(model, &examples, &[], false).expect("train");
                assert_eq!(outcome.state.step, STEPS);
                outcome
            },
            BatchSize::PerIteration,
        )
    });
    let _ = std::fs::remove_dir_all(output_dir);
}

fn unsigned(ids: Vec<i64>) -> Vec<u32> {
    ids.into_iter().map(|id| id as u32).collect()
}

/// criterion's group macro defines a `pub fn` of its own, without a doc comment.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
