//! Criterion benchmarks of mixed-adapter batches: one `LoraLinear` forward over a batch of 8
//! samples (64 tokens each, 768 → 768, rank 16) where the samples use 1, 2, 4 or 8 distinct
//! adapters.
//!
//! Group `mixed_adapters`: `gathered/N` is `LoraLinear::forward_mixed` (each sample gathers
//! its adapter's factors; one batched product), `masked/N` the per-adapter masked sum it
//! replaced (every distinct adapter over the whole batch, masked per sample), computed here
//! from the layer's public factors.
//!
//! ```sh
//! cargo bench --bench mixed_adapters
//! ```

use std::time::Duration;

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::{Distribution, Tensor, TensorData};
use criterion::{criterion_main, Criterion};
use lora_burn::backend::InferenceBackend;
use lora_burn::lora_core::{LoraConfig, LoraInit, LoraLinear};

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

mod group {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(group::benches);
