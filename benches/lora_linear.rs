//! Criterion benchmarks of `LoraLinear` against a plain `Linear`.
//!
//! Group `lora_linear`, one id per case: `plain_fwd/T×I×O`, `lora_fwd/T×I×O/rR`,
//! `merged_fwd/T×I×O/rR`, `lora_fwd_bwd/T×I×O/rR`, `full_fwd_bwd/T×I×O` for T tokens, I inputs,
//! O outputs and rank R, and `lora_fwd_factored/…` / `lora_fwd_materialized/…` over token counts
//! for the crossover of the two unmerged forward paths. `scripts/bench_torch_lora.py` times the same ids with PyTorch + PEFT.
//!
//! ```sh
//! cargo bench --bench lora_linear                    # flex (default)
//! cargo bench --bench lora_linear --features ndarray # ndarray
//! cargo bench --bench lora_linear --features cuda    # CUDA
//! ```

use std::time::Duration;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use criterion::{criterion_main, Criterion};
use lora_burn::backend::{InferenceBackend, TrainBackend};
use lora_burn::lora_core::{LoraConfig, LoraInit, LoraLinear};

/// (tokens, inputs, outputs, rank)
const CASES: [(usize, usize, usize, usize); 4] = [
    (512, 768, 768, 16),
    (512, 768, 3072, 16),
    (2048, 1024, 1024, 64),
    (1, 768, 768, 16),
];

fn layers<B: Backend>(i: usize, o: usize, r: usize) -> (Linear<B>, LoraLinear<B>) {
    let device = Default::default();
    let base = LinearConfig::new(i, o).init::<B>(&device);
    // Materialise the lazily initialised base so the LoRA layer wraps the same weights.
    let base = base.clone().no_grad().fork(&device);
    let config = LoraConfig::new(r, 2.0 * r as f64).with_init_lora_weights(LoraInit::Random);
    let lora = LoraLinear::from_linear(base.clone(), &config).expect("valid config");
    (base, lora)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("lora_linear");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (t, i, o, r) in CASES {
        let shape = format!("{t}×{i}×{o}");
        type B = InferenceBackend;
        let device = Default::default();
        let (base, lora) = layers::<B>(i, o, r);
        let mut merged = lora.clone();
        merged.merge_active().expect("finite merge");
        let x = Tensor::<B, 2>::random([t, i], Distribution::Default, &device);
        group.bench_function(format!("plain_fwd/{shape}"), |bench| {
            bench.iter(|| {
                let y = base.forward(x.clone());
                B::sync(&device).expect("sync");
                y
            })
        });
        group.bench_function(format!("lora_fwd/{shape}/r{r}"), |bench| {
            bench.iter(|| {
                let y = lora.forward(x.clone());
                B::sync(&device).expect("sync");
                y
            })
        });
        group.bench_function(format!("merged_fwd/{shape}/r{r}"), |bench| {
            bench.iter(|| {
                let y = merged.forward(x.clone());
                B::sync(&device).expect("sync");
                y
            })
        });

        type T = TrainBackend;
        let (full, lora) = layers::<T>(i, o, r);
        let full = Linear {
            weight: full.weight.set_require_grad(true),
            bias: full.bias.map(|b| b.set_require_grad(true)),
        };
        let x = Tensor::<T, 2>::random([t, i], Distribution::Default, &device);
        group.bench_function(format!("lora_fwd_bwd/{shape}/r{r}"), |bench| {
            bench.iter(|| {
                let grads = lora.forward(x.clone()).sum().backward();
                B::sync(&device).expect("sync");
                grads
            })
        });
        group.bench_function(format!("full_fwd_bwd/{shape}"), |bench| {
            bench.iter(|| {
                let grads = full.forward(x.clone()).sum().backward();
                B::sync(&device).expect("sync");
                grads
            })
        });
    }
    crossover(&mut group);
    group.finish();
}

/// Factored against materialised unmerged forward over token counts, at 1024×1024, r = 64:
/// where `LoraLinear::forward` switches from one to the other.
fn crossover(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    type B = InferenceBackend;
    let device = Default::default();
    let (i, o, r) = (1024, 1024, 64);
    let (_, lora) = layers::<B>(i, o, r);
    for t in [128, 256, 512, 1024, 2048] {
        let x = Tensor::<B, 2>::random([t, i], Distribution::Default, &device);
        let shape = format!("{t}×{i}×{o}/r{r}");
        group.bench_function(format!("lora_fwd_factored/{shape}"), |bench| {
            bench.iter(|| {
                let y = lora.forward_factored(x.clone());
                B::sync(&device).expect("sync");
                y
            })
        });
        group.bench_function(format!("lora_fwd_materialized/{shape}"), |bench| {
            bench.iter(|| {
                let y = lora.forward_materialized(x.clone());
                B::sync(&device).expect("sync");
                y
            })
        });
    }
}

/// criterion's group macro defines a `pub fn` of its own, without a doc comment.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
