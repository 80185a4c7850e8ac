//! The single-operation timings behind the layout and loss choices in `lora-core` and
//! `lora-t5`, on the backend of the build (medians, milliseconds):
//!
//! - the rank-r up-projection `[512, 16] · [16, 3072]` and the merge product
//!   `[768, 16] · [16, 3072]` with a row-major and a column-major right-hand side
//!   (the LoRA branch and merge multiply by `B` in whatever layout it has);
//! - the tied 32128-word head as `(E · hᵀ)ᵀ`, as `h · Eᵀ` and (up to 8 rows) in one pass over `E`
//!   (`lora_core::few_rows_times_transposed`) over 1, 4, 128 and 1024 rows, and
//!   the softmax over 1024 rows of each result (`T5ForConditionalGeneration::lm_logits`);
//! - greedy decoding's pick from the head's int8 screen (`lora_core::ArgmaxScreen`), tied
//!   (`[32128, 512]`) and untied (`LoraLinear::output_screen` of `[512, 32128]`), for one row
//!   against the full one-row product, cycling through three heads so that neither the `f32`
//!   heads nor their int8 copies stay in the cache, and the time to build a screen;
//! - head + loss forward and backward over 1024 rows: the recorded `log_softmax` + `gather`,
//!   `cross_entropy_ignoring`, the fused `linear_cross_entropy`, and the head's products alone;
//! - T5's layer norm over `[8, 128, 512]` and the attention softmax over `[8, 8, 128, 128]`,
//!   forward and backward: Burn's recorded operations against `lora_core::rms_norm` and
//!   `lora_core::softmax_last_dim`;
//! - a dropout mask over 2²⁰ elements: Burn's `Bernoulli` sampling against `lora_core::Dropout`;
//! - a `LoraLinear` base product `[rows, 512] · [512, 2048]` (t5-small's `wi`) over 1, 4, 16
//!   and 64 rows with the weight in f32 and in int8 (32 weights per scale), and 1, 4 and 8 rows
//!   through 30 distinct such weights (out of cache, as in decoding), with the bytes read per
//!   second.
//!
//! ```sh
//! cargo run --release --example kernel_shapes
//! ```

use std::time::Instant;

use burn::nn::LinearConfig;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Distribution, Int, Tensor};
use lora_burn::backend::{Backend, BackendInfo, InferenceBackend as B, TrainBackend as T};
use lora_burn::lora_core::{
    few_rows_times_transposed, int8_quantizer, linear_cross_entropy, rms_norm, softmax_last_dim,
    ArgmaxScreen, Dropout, HeadLayout, LoraConfig, LoraLinear,
};
use lora_burn::lora_t5::cross_entropy_ignoring;

/// The median wall time of `reps` calls of `f` after one warm-up call, in ms.
fn median_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[reps / 2]
}

/// Times a product (or any op) and waits for the device.
fn op_ms<Bk: Backend, const D: usize>(reps: usize, mut f: impl FnMut() -> Tensor<Bk, D>) -> f64 {
    let device = Default::default();
    median_ms(reps, || {
        let out = f();
        Bk::sync(&device).expect("sync");
        drop(out);
    })
}

fn random<Bk: Backend, const D: usize>(shape: [usize; D]) -> Tensor<Bk, D> {
    Tensor::random(shape, Distribution::Default, &Default::default())
}

fn rank_r_products() {
    let hidden = random::<B, 2>([512, 16]);
    let a = random::<B, 2>([768, 16]);
    let row_major = random::<B, 2>([16, 3072]);
    let column_major = random::<B, 2>([3072, 16]).transpose();
    let up_row = op_ms(21, || hidden.clone().matmul(row_major.clone()));
    let up_col = op_ms(21, || hidden.clone().matmul(column_major.clone()));
    let merge_row = op_ms(21, || a.clone().matmul(row_major.clone()));
    let merge_col = op_ms(21, || a.clone().matmul(column_major.clone()));
    println!("[512,16]·[16,3072]: row-major {up_row:.3}, column-major {up_col:.3}");
    println!("[768,16]·[16,3072]: row-major {merge_row:.3}, column-major {merge_col:.3}");
}

fn tied_head() {
    let embedding = random::<B, 2>([32128, 512]);
    for rows in [1, 4, 128, 1024] {
        let hidden = random::<B, 2>([rows, 512]);
        let reps = if rows >= 128 { 7 } else { 41 };
        let transposed = op_ms(reps, || {
            embedding
                .clone()
                .matmul(hidden.clone().transpose())
                .transpose()
        });
        let contiguous = op_ms(reps, || {
            hidden.clone().matmul(embedding.clone().transpose())
        });
        let one_pass = match few_rows_times_transposed(&hidden, &embedding) {
            Some(_) => format!(
                ", one pass {:.3}",
                op_ms(reps, || few_rows_times_transposed(&hidden, &embedding)
                    .expect("few rows"))
            ),
            None => String::new(),
        };
        println!("head, {rows} rows: (E·hᵀ)ᵀ {transposed:.3}, h·Eᵀ {contiguous:.3}{one_pass}");
    }
    let hidden = random::<B, 2>([1024, 512]);
    let strided = embedding
        .clone()
        .matmul(hidden.clone().transpose())
        .transpose();
    let contiguous = hidden.matmul(embedding.transpose());
    let on_strided = op_ms(7, || log_softmax(strided.clone(), 1));
    let on_contiguous = op_ms(7, || log_softmax(contiguous.clone(), 1));
    println!(
        "log_softmax over 1024 × 32128: of (E·hᵀ)ᵀ {on_strided:.3}, of h·Eᵀ {on_contiguous:.3}"
    );
}

fn head_screen() {
    const HEADS: usize = 3;
    let device = Default::default();
    let hidden = random::<B, 2>([1, 512]);
    let embeddings: Vec<Tensor<B, 2>> = (0..HEADS).map(|_| random([32128, 512])).collect();
    let build = median_ms(5, || {
        ArgmaxScreen::new(embeddings[0].clone()).expect("a flex build");
    });
    let Some(screens) = embeddings
        .iter()
        .map(|e| ArgmaxScreen::new(e.clone()))
        .collect::<Option<Vec<_>>>()
    else {
        println!("head screen: not on this backend");
        return;
    };
    let mut next = 0;
    let full = op_ms(31, || {
        next = (next + 1) % HEADS;
        few_rows_times_transposed(&hidden, &embeddings[next]).expect("one row")
    });
    let screened = median_ms(31, || {
        next = (next + 1) % HEADS;
        screens[next].argmax_rows(&hidden, &[]).expect("screened");
    });
    println!(
        "head screen, tied, 1 row: full product {full:.3}, screen {screened:.3}, build {build:.1}"
    );
    let config = LoraConfig::new(8, 16.0);
    let heads: Vec<LoraLinear<B>> = (0..HEADS)
        .map(|_| {
            let base = LinearConfig::new(512, 32128)
                .with_bias(false)
                .init::<B>(&device);
            let mut head = LoraLinear::from_linear(base, &config).expect("valid config");
            head.disable_adapters().expect("no merged adapter");
            head
        })
        .collect();
    let screens: Vec<ArgmaxScreen<B>> = heads
        .iter()
        .map(|h| h.output_screen().expect("the base product alone"))
        .collect();
    let full = op_ms(31, || {
        next = (next + 1) % HEADS;
        heads[next].forward(hidden.clone())
    });
    let screened = median_ms(31, || {
        next = (next + 1) % HEADS;
        screens[next].argmax_rows(&hidden, &[]).expect("screened");
    });
    println!("head screen, untied, 1 row: full product {full:.3}, screen {screened:.3}");
}

fn head_and_loss() {
    let device = Default::default();
    let embedding = random::<T, 2>([32128, 512]);
    let hidden = random::<T, 2>([1024, 512]);
    let labels =
        Tensor::<T, 2, Int>::random([1024, 1], Distribution::Uniform(0.0, 32128.0), &device);
    let backward = |loss: Tensor<T, 1>, h: &Tensor<T, 2>| {
        let grads = loss.backward();
        let _ = h.grad(&grads).expect("gradient").into_data();
    };
    let recorded = median_ms(5, || {
        let h = hidden.clone().require_grad();
        let logits = h.clone().matmul(embedding.clone().transpose());
        let loss = log_softmax(logits, 1)
            .gather(1, labels.clone())
            .mean()
            .neg();
        backward(loss.reshape([1]), &h);
    });
    let fused = median_ms(5, || {
        let h = hidden.clone().require_grad();
        let logits = h
            .clone()
            .matmul(embedding.clone().transpose())
            .reshape([8, 128, 32128]);
        let loss = cross_entropy_ignoring(logits, labels.clone().reshape([8, 128])).expect("loss");
        backward(loss, &h);
    });
    let labels_host: Vec<i64> = labels
        .clone()
        .into_data()
        .convert::<i64>()
        .into_vec()
        .expect("labels");
    let one_pass = median_ms(5, || {
        let h = hidden.clone().require_grad();
        let loss = linear_cross_entropy(
            h.clone(),
            &embedding,
            HeadLayout::VocabRows,
            &labels_host,
            -100,
        )
        .expect("flex");
        backward(loss, &h);
    });
    let products = median_ms(5, || {
        let h = hidden.clone().require_grad();
        let logits = h.clone().matmul(embedding.clone().transpose());
        backward(logits.sum(), &h);
    });
    println!(
        "head + loss fwd+bwd, 1024 rows: recorded log_softmax {recorded:.1}, \
         cross_entropy_ignoring {fused:.1}, linear_cross_entropy {one_pass:.1}, \
         the head's products alone {products:.1}"
    );
}

/// T5's layer norm and attention softmax at the training step's sizes, forward and backward on
/// the autodiff backend: Burn's recorded operations against `lora_core`'s single operations.
fn row_operations() {
    let x = random::<T, 3>([8, 128, 512]);
    let weight = random::<T, 1>([512]);
    let upstream = random::<T, 3>([8, 128, 512]);
    let norm = |fused: bool| {
        let upstream = upstream.clone();
        let (x, weight) = (x.clone().require_grad(), weight.clone());
        median_ms(9, move || {
            let y = if fused {
                rms_norm(x.clone(), weight.clone(), 1e-6)
            } else {
                let mean_square = x.clone().square().mean_dim(2);
                x.clone()
                    * (mean_square + 1e-6).sqrt().recip()
                    * weight.clone().reshape([1, 1, 512])
            };
            let grads = (y * upstream.clone()).sum().backward();
            let _ = x.grad(&grads).expect("gradient").into_data();
        })
    };
    let scores = random::<T, 4>([8, 8, 128, 128]);
    let upstream_scores = random::<T, 4>([8, 8, 128, 128]);
    let soft = |fused: bool| {
        let upstream = upstream_scores.clone();
        let x = scores.clone().require_grad();
        median_ms(9, move || {
            let y = if fused {
                softmax_last_dim(x.clone())
            } else {
                softmax(x.clone(), 3)
            };
            let grads = (y * upstream.clone()).sum().backward();
            let _ = x.grad(&grads).expect("gradient").into_data();
        })
    };
    println!(
        "rms_norm fwd+bwd over [8, 128, 512]: recorded {:.2}, one operation {:.2}; \
         softmax fwd+bwd over [8, 8, 128, 128]: recorded {:.2}, one operation {:.2}",
        norm(false),
        norm(true),
        soft(false),
        soft(true)
    );
}

fn dropout_masks() {
    let x = random::<T, 2>([1024, 1024]);
    let burn_mask = op_ms(11, || x.random_like(Distribution::Bernoulli(0.9)));
    let ours = op_ms(11, || Dropout::new(0.1).forward(x.clone()));
    let per_element = |ms: f64| ms * 1e6 / (1024.0 * 1024.0);
    println!(
        "dropout mask over 2^20 elements: Burn's Bernoulli {burn_mask:.3} ({:.1} ns each), \
         lora_core::Dropout (mask and product) {ours:.3} ({:.1} ns each)",
        per_element(burn_mask),
        per_element(ours)
    );
}

fn int8_products() {
    let device = Default::default();
    let base = LinearConfig::new(512, 2048)
        .with_bias(false)
        .init::<B>(&device);
    let float = LoraLinear::new(base);
    let mut int8 = float.clone();
    int8.quantize_base(&mut int8_quantizer::<B>(Some(32)))
        .expect("int8");
    for rows in [1, 4, 16, 64] {
        let x = random::<B, 2>([rows, 512]);
        let f32_ms = op_ms(51, || float.forward(x.clone()));
        let int8_ms = op_ms(51, || int8.forward(x.clone()));
        println!(
            "base product [{rows}, 512] · [512, 2048]: f32 {f32_ms:.3}, int8 {int8_ms:.3} \
             ({:.2}× the f32 time)",
            int8_ms / f32_ms
        );
    }
    // As in decoding: a few rows through many distinct weights (120 MB in f32, more than the
    // cache), each product timed as the mean over a pass through all of them.
    let layers: Vec<(LoraLinear<B>, LoraLinear<B>)> = (0..30)
        .map(|_| {
            let float =
                LoraLinear::new(LinearConfig::new(512, 2048).with_bias(false).init(&device));
            let mut int8 = float.clone();
            int8.quantize_base(&mut int8_quantizer::<B>(Some(32)))
                .expect("int8");
            (float, int8)
        })
        .collect();
    for rows in [1, 4, 8] {
        let x = random::<B, 2>([rows, 512]);
        let per_product = |int8: bool| {
            median_ms(11, || {
                for (float, quantized) in &layers {
                    let layer = if int8 { quantized } else { float };
                    drop(layer.forward(x.clone()));
                }
                B::sync(&device).expect("sync");
            }) / layers.len() as f64
        };
        let (f32_ms, int8_ms) = (per_product(false), per_product(true));
        // The weight bytes read per millisecond.
        let gb_per_s = |bytes: f64, ms: f64| bytes / ms / 1e6;
        println!(
            "base product [{rows}, 512] · [512, 2048] over 30 distinct weights: f32 {f32_ms:.3} \
             ({:.1} GB/s), int8 {int8_ms:.3} ({:.1} GB/s, {:.2}× the f32 time)",
            gb_per_s(512.0 * 2048.0 * 4.0, f32_ms),
            gb_per_s(512.0 * 2048.0 * (1.0 + 4.0 / 32.0), int8_ms),
            int8_ms / f32_ms
        );
    }
}

fn main() {
    println!("backend: {}", BackendInfo::current());
    int8_products();
    rank_r_products();
    tied_head();
    head_screen();
    head_and_loss();
    row_operations();
    dropout_masks();
}
