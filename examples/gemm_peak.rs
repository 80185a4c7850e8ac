//! The machine's f32 peak, against which BENCHMARKS.md states GEMM efficiency.
//!
//! Two numbers, on every core:
//!
//! - the FMA peak: independent fused multiply-adds in registers on each core at the widest
//!   vector width the CPU has (AVX-512, else AVX2+FMA; 2 FLOP per lane), the ceiling no
//!   product can pass;
//! - the backend's own large-GEMM rate: `Tensor::matmul` of two 2048 × 2048 matrices, the
//!   best the backend reaches on a product big enough to hide packing and threading costs.
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
}
