//! Criterion benchmarks of mixed-adapter batches: one `LoraLinear` forward over a batch of 8
//! samples (64 tokens each, 768 → 768, rank 16) where the samples use 1, 2, 4 or 8 distinct
//! adapters.
//!
//! Group `mixed_adapters`: `gathered/N` is `LoraLinear::forward_mixed` (each sample gathers
//! its adapter's factors; one batched product), `masked/N` the per-adapter masked sum it
//! replaced (every distinct adapter over the whole batch, masked per sample), computed here
//! from the layer's public factors.
//!
//! Group `t5_mixed_adapters`: a random t5-small-sized model with N adapters (r 16 on every `q`
//! and `v`) and a batch of 8 prompts of 64 tokens routed over them with
//! `T5ForConditionalGeneration::with_adapter_names` (prompt i uses adapter i mod N):
//! `forward/N` is one forward pass with 64 decoder tokens, `greedy_64/N` greedy search with
//! exactly 64 new tokens. `forward/single` and `greedy_64/single` run the same batch through one
//! active adapter without routing, the plain path a single-adapter server takes.
//!
//! ```sh
//! cargo bench --bench mixed_adapters
//! ```

use std::time::Duration;

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use criterion::{criterion_main, Criterion, SamplingMode};
use lora_burn::backend::InferenceBackend;
use lora_burn::lora_core::{LoraConfig, LoraInit, LoraLinear};
use lora_burn::lora_peft_io::{inject_adapter, AdapterConfig, ModuleSelector};
use lora_burn::lora_t5::{GenerationConfig, Seq2SeqInput, T5Config, T5ForConditionalGeneration};

type B = InferenceBackend;
const BATCH: usize = 8;
const TOKENS: usize = 64;
const WIDTH: usize = 768;
const RANK: usize = 16;

fn layer_with(adapters: usize) -> LoraLinear<B> {
    let device = Default::default();
    let base = LinearConfig::new(WIDTH, WIDTH).init::<B>(&device);
    let base = base.no_grad().fork(&device);
    let config = LoraConfig::new(RANK, 2.0 * RANK as f64).with_init_lora_weights(LoraInit::Random);
    let mut layer = LoraLinear::new(base);
    for k in 0..adapters {
        layer
            .add_adapter(&format!("a{k}"), &config)
            .expect("valid config");
    }
    layer
}

/// The masked path: the base once, then every distinct adapter over the whole batch, masked.
fn masked(layer: &LoraLinear<B>, x: Tensor<B, 3>, names: &[String]) -> Tensor<B, 3> {
    let device = x.device();
    let mut output = layer.base.forward(x.clone());
    for name in layer.adapter_names() {
        let adapter = layer.adapter(name).expect("adapter");
        let mask: Vec<f32> = names
            .iter()
            .map(|n| f32::from(u8::from(n == name)))
            .collect();
        let mask = Tensor::<B, 1>::from_data(TensorData::new(mask, [BATCH]), &device)
            .reshape([BATCH, 1, 1]);
        let branch = x
            .clone()
            .matmul(adapter.lora_a.val().unsqueeze::<3>())
            .matmul(adapter.lora_b.val().unsqueeze::<3>())
            .mul_scalar(adapter.scaling());
        output = output + branch * mask;
    }
    output
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("mixed_adapters");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let device = Default::default();
    let x = Tensor::<B, 3>::random([BATCH, TOKENS, WIDTH], Distribution::Default, &device);
    for distinct in [1, 2, 4, 8] {
        let layer = layer_with(distinct);
        let names: Vec<String> = (0..BATCH).map(|i| format!("a{}", i % distinct)).collect();
        group.bench_function(format!("gathered/{distinct}"), |bench| {
            bench.iter(|| {
                let y = layer
                    .forward_mixed(x.clone(), &names)
                    .expect("known adapters");
                y.into_data()
            })
        });
        group.bench_function(format!("masked/{distinct}"), |bench| {
            bench.iter(|| masked(&layer, x.clone(), &names).into_data())
        });
    }
    group.finish();
}

/// A random t5-small-sized model (tied head) with `adapters` random adapters `a0`, `a1`, …
/// (r 16, alpha 32) on every `q` and `v`.
fn t5_with(adapters: usize) -> T5ForConditionalGeneration<B> {
    let device = Default::default();
    let config = T5Config {
        tie_word_embeddings: Some(true),
        ..T5Config::default()
    };
    let mut model = T5ForConditionalGeneration::<B>::new(&config, &device);
    let lora = LoraConfig::new(RANK, 2.0 * RANK as f64).with_init_lora_weights(LoraInit::Random);
    let targets = ModuleSelector::Names(vec!["q".into(), "v".into()]);
    let adapter = AdapterConfig::from_lora_config(&lora, targets).expect("valid adapter config");
    for k in 0..adapters {
        inject_adapter(&mut model, &adapter, &format!("a{k}")).expect("inject adapter");
    }
    model
}

/// Deterministic ids in `2..30000` (no pad, no EOS).
fn t5_ids(rows: usize, cols: usize, seed: u64) -> Tensor<B, 2, Int> {
    let mut state = seed;
    let values: Vec<i64> = (0..rows * cols)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            2 + ((state >> 33) % 29998) as i64
        })
        .collect();
    Tensor::from_data(TensorData::new(values, [rows, cols]), &Default::default())
}

fn t5_bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("t5_mixed_adapters");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    let prompts = t5_ids(BATCH, TOKENS, 1);
    let decoder = t5_ids(BATCH, TOKENS, 2);
    let mask = Tensor::<B, 2, Int>::ones([BATCH, TOKENS], &Default::default());
    let greedy = GenerationConfig {
        max_new_tokens: TOKENS,
        min_new_tokens: TOKENS,
        ..GenerationConfig::default()
    };
    let single = t5_with(1);
    let mut cases = vec![("single".to_string(), single)];
    for distinct in [1, 2, 4, 8] {
        let names: Vec<String> = (0..BATCH).map(|i| format!("a{}", i % distinct)).collect();
        let routed = t5_with(distinct)
            .with_adapter_names(&names)
            .expect("known adapters");
        cases.push((distinct.to_string(), routed));
    }
    for (id, model) in &cases {
        group.bench_function(format!("forward/{id}"), |bench| {
            bench.iter(|| {
                let input = Seq2SeqInput::new(prompts.clone(), decoder.clone())
                    .attention_mask(mask.clone());
                model.forward(input).logits.into_data()
            })
        });
        group.bench_function(format!("greedy_64/{id}"), |bench| {
            bench.iter(|| {
                let out = model
                    .generate(prompts.clone(), mask.clone(), &greedy)
                    .expect("generate");
                assert_eq!(out[0].len(), 1 + TOKENS);
                out
            })
        });
    }
    group.finish();
}

mod group {
    criterion::criterion_group!(benches, super::bench, super::t5_bench);
}
criterion_main!(group::benches);
