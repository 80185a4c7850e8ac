//! The machine's f32 peak, against which BENCHMARKS.md states GEMM efficiency, and its memory
//! read bandwidth, against which it states decoding speed.
//!
//! Three numbers, on every core:
//!
//! - the FMA peak: independent fused multiply-adds in registers on each core at the widest
//!   vector width the CPU has (AVX-512, else AVX2+FMA; 2 FLOP per lane), the ceiling no
//!   product can pass;
//! - the backend's own large-GEMM rate: `Tensor::matmul` of two 2048 × 2048 matrices, the
//!   best the backend reaches on a product big enough to hide packing and threading costs;
//! - the read bandwidth: summing 154 MB of `f32` (the weights a t5-small-sized decoder and its
//!   tied head read per generated token) split between the threads, the best of 15 passes. A
//!   decoding step cannot read its weights faster.
//!
//! ```sh
//! cargo run --release --example gemm_peak
//! ```

use std::time::Instant;

use burn::tensor::{Distribution, Tensor};
use lora_burn::backend::{Backend, BackendInfo, InferenceBackend};

/// Runs `iterations` rounds of `CHAINS` independent FMA chains of `LANES` f32 lanes each and
/// returns the FLOP executed.
#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::*;

    const CHAINS: usize = 12;

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(iterations: u64) -> (f32, u64) {
        let mut acc = [_mm512_set1_ps(1.0); CHAINS];
        let a = _mm512_set1_ps(0.999_999);
        let b = _mm512_set1_ps(1e-7);
        for _ in 0..iterations {
            for lane in acc.iter_mut() {
                *lane = _mm512_fmadd_ps(*lane, a, b);
            }
        }
        let sum = acc.iter().fold(0.0, |s, v| s + _mm512_reduce_add_ps(*v));
        (sum, iterations * (CHAINS * 16 * 2) as u64)
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(iterations: u64) -> (f32, u64) {
        let mut acc = [_mm256_set1_ps(1.0); CHAINS];
        let a = _mm256_set1_ps(0.999_999);
        let b = _mm256_set1_ps(1e-7);
        for _ in 0..iterations {
            for lane in acc.iter_mut() {
                *lane = _mm256_fmadd_ps(*lane, a, b);
            }
        }
        let mut out = [0.0f32; 8];
        let mut sum = 0.0;
        for v in acc {
            _mm256_storeu_ps(out.as_mut_ptr(), v);
            sum += out.iter().sum::<f32>();
        }
        (sum, iterations * (CHAINS * 8 * 2) as u64)
    }

    /// FLOP done by one thread in `iterations` rounds at the widest width, and its name.
    pub fn run(iterations: u64) -> Option<(&'static str, f32, u64)> {
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F.
            let (sum, flop) = unsafe { avx512(iterations) };
            Some(("AVX-512", sum, flop))
        } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA.
            let (sum, flop) = unsafe { avx2(iterations) };
            Some(("AVX2+FMA", sum, flop))
        } else {
            None
        }
    }
}

fn fma_peak_gflops(threads: usize) -> Option<(&'static str, f64)> {
    #[cfg(target_arch = "x86_64")]
    {
        let iterations = 200_000_000;
        // A warm-up so that the cores reach their sustained clock.
        let _ = fma::run(iterations / 10)?;
        let start = Instant::now();
        let results: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|_| scope.spawn(move || fma::run(iterations)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().ok().flatten())
                .collect()
        });
        let seconds = start.elapsed().as_secs_f64();
        let mut flop = 0u64;
        let mut width = "";
        for (name, sum, done) in results.into_iter().flatten() {
            // Keep the sums observable so the loops are not optimised away.
            assert!(sum.is_finite());
            flop += done;
            width = name;
        }
        Some((width, flop as f64 / seconds / 1e9))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = threads;
        None
    }
}

fn gemm_gflops(n: usize, repeats: usize) -> f64 {
    type B = InferenceBackend;
    let device = Default::default();
    let a = Tensor::<B, 2>::random([n, n], Distribution::Default, &device);
    let b = Tensor::<B, 2>::random([n, n], Distribution::Default, &device);
    let _ = a.clone().matmul(b.clone()).into_data();
    let mut times = Vec::with_capacity(repeats);
    for _ in 0..repeats {
        let start = Instant::now();
        let c = a.clone().matmul(b.clone());
        B::sync(&device).expect("sync");
        drop(c);
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    2.0 * (n * n * n) as f64 / median / 1e9
}

fn main() {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("backend: {}", BackendInfo::current());
    match fma_peak_gflops(threads) {
        Some((width, gflops)) => {
            println!("FMA peak ({width}, {threads} threads): {gflops:.1} GFLOP/s")
        }
        None => println!("FMA peak: not measured on this architecture"),
    }
    let gemm = gemm_gflops(2048, 9);
    println!("backend matmul 2048×2048×2048 (median of 9): {gemm:.1} GFLOP/s");
    let bytes = DECODER_STEP_BYTES;
    let gb_s = read_gb_per_s(bytes, threads);
    println!(
        "read bandwidth ({threads} threads, {} MB): {gb_s:.1} GB/s, {:.2} ms per {} MB",
        bytes / 1_000_000,
        bytes as f64 / gb_s / 1e6,
        bytes / 1_000_000
    );
}

/// The bytes of `f32` weights one decoding step of a t5-small-sized model reads: per decoder
/// layer self-attention `q, k, v, o`, cross-attention `q, o` (its keys and values are computed
/// once per prompt) and the feed-forward `wi, wo`, then the tied 32128 × 512 head.
const DECODER_STEP_BYTES: usize = 4 * (6 * (6 * 512 * 512 + 2 * 512 * 2048) + 32128 * 512);

/// The best rate over 15 passes at which `threads` threads sum disjoint parts of `bytes` of
/// `f32`, in GB/s.
fn read_gb_per_s(bytes: usize, threads: usize) -> f64 {
    let values: Vec<f32> = (0..bytes / 4).map(|i| (i % 7) as f32).collect();
    let part = values.len().div_ceil(threads.max(1));
    let mut best = f64::INFINITY;
    for _ in 0..15 {
        let start = Instant::now();
        let total: f32 = std::thread::scope(|scope| {
            let handles: Vec<_> = values
                .chunks(part)
                .map(|chunk| scope.spawn(move || sum_lanes(chunk)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0.0)).sum()
        });
        best = best.min(start.elapsed().as_secs_f64());
        // Keep the sum observable so the reads are not optimised away.
        assert!(total.is_finite());
    }
    bytes as f64 / best / 1e9
}

/// The sum of `values` in 16 independent lanes (which the compiler keeps in vector registers).
fn sum_lanes(values: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = values.chunks_exact(16);
    for chunk in &mut chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}
