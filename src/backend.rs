//! The backend chosen by the cargo features, and what it runs on.
//!
//! `cuda` wins over `ndarray`, which wins over `flex` (the default), so naming a backend's
//! feature selects it even with the default features left on:
//!
//! ```sh
//! cargo run --release --bin lora-t5 -- demo                     # flex (default)
//! cargo run --release --features ndarray --bin lora-t5 -- demo  # ndarray
//! cargo run --release --features cuda --bin lora-t5 -- demo     # CUDA
//! ```
//!
//! Both CPU backends are built with their threads (rayon) and SIMD kernels; gemm (flex) and
//! matrixmultiply (ndarray) pick their AVX-512 kernels at run time where the CPU has them, so
//! the binaries stay portable. [`BackendInfo::current`] says what the running process uses.

pub use burn::tensor::backend::Backend;

/// The inference backend.
#[cfg(feature = "cuda")]
pub type InferenceBackend = burn::backend::Cuda;
/// The inference backend.
#[cfg(all(not(feature = "cuda"), feature = "ndarray"))]
pub type InferenceBackend = burn::backend::NdArray<f32>;
/// The inference backend.
#[cfg(all(not(feature = "cuda"), not(feature = "ndarray"), feature = "flex"))]
pub type InferenceBackend = burn::backend::Flex;

/// The training backend: autodiff over [`InferenceBackend`].
pub type TrainBackend = burn::backend::Autodiff<InferenceBackend>;

/// The selected backend, the threads its products run on and the SIMD level of its kernels.
///
/// ```
/// let info = lora_burn::backend::BackendInfo::current();
/// assert!(info.threads >= 1);
/// println!("{info}"); // e.g. "flex, 2 threads (rayon; set by RAYON_NUM_THREADS), AVX-512"
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendInfo {
    /// `flex`, `ndarray` or `cuda`.
    pub name: &'static str,
    /// Threads that large products and elementwise passes are split over (1 on CUDA, where
    /// the host thread only launches kernels).
    pub threads: usize,
    /// What sets [`threads`](Self::threads): the thread pools and the variables that size them.
    pub threading: String,
    /// The widest SIMD instruction set the CPU kernels use on this CPU (`AVX-512`,
    /// `AVX2+FMA`, `SSE2`, `NEON`, `scalar`), or `gpu`.
    pub simd: &'static str,
}

impl BackendInfo {
    /// What the backend of this build uses in this process.
    pub fn current() -> Self {
        #[cfg(feature = "cuda")]
        {
            BackendInfo {
                name: "cuda",
                threads: 1,
                threading: "GPU kernels".to_string(),
                simd: "gpu",
            }
        }
        #[cfg(all(not(feature = "cuda"), feature = "ndarray"))]
        {
            let rayon = rayon::current_num_threads();
            let gemm = matrixmultiply_threads();
            BackendInfo {
                name: "ndarray",
                threads: rayon.min(gemm),
                threading: format!(
                    "rayon {rayon}, matrixmultiply {gemm}; set by RAYON_NUM_THREADS, \
                     MATMUL_NUM_THREADS"
                ),
                simd: cpu_simd_level(),
            }
        }
        #[cfg(all(not(feature = "cuda"), not(feature = "ndarray"), feature = "flex"))]
        {
            let rayon = rayon::current_num_threads();
            BackendInfo {
                name: "flex",
                threads: rayon,
                threading: "rayon; set by RAYON_NUM_THREADS".to_string(),
                simd: cpu_simd_level(),
            }
        }
    }
}

/// Sizes the CPU backend's thread pools to `threads` (what `RAYON_NUM_THREADS`, and for
/// `ndarray` also `MATMUL_NUM_THREADS`, would set). Must run before the first tensor operation:
/// a pool, once started, keeps its size. Does nothing on CUDA.
///
/// ```no_run
/// lora_burn::backend::use_threads(2).expect("called before any tensor operation");
/// assert_eq!(lora_burn::backend::BackendInfo::current().threads, 2);
/// ```
///
/// # Errors
/// A message when the pool has already started (with another size) or `threads` is 0.
pub fn use_threads(threads: usize) -> Result<(), String> {
    if threads == 0 {
        return Err("the thread count must be at least 1, not 0".to_string());
    }
    #[cfg(all(not(feature = "cuda"), feature = "ndarray"))]
    // SAFETY: called at start-up, before the backend's pools (the only other readers of the
    // variable) start their threads.
    std::env::set_var("MATMUL_NUM_THREADS", threads.to_string());
    #[cfg(all(not(feature = "cuda"), any(feature = "ndarray", feature = "flex")))]
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .or_else(|error| {
            if rayon::current_num_threads() == threads {
                Ok(())
            } else {
                Err(format!("cannot use {threads} threads: {error}"))
            }
        })?;
    Ok(())
}

impl std::fmt::Display for BackendInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plural = if self.threads == 1 { "" } else { "s" };
        write!(
            f,
            "{}, {} thread{plural} ({}), {}",
            self.name, self.threads, self.threading, self.simd
        )
    }
}

/// The threads matrixmultiply's pool starts with: `MATMUL_NUM_THREADS`, else the physical
/// cores, clamped to 1..=4 as matrixmultiply 0.3 does.
#[cfg(all(not(feature = "cuda"), feature = "ndarray"))]
fn matrixmultiply_threads() -> usize {
    let requested = match std::env::var("MATMUL_NUM_THREADS") {
        Ok(value) if !value.is_empty() => value.parse().unwrap_or(1),
        _ => num_cpus::get_physical(),
    };
    requested.clamp(1, 4)
}

/// The widest instruction set the CPU kernels (gemm, matrixmultiply, macerator) dispatch to
/// on this CPU at run time.
#[cfg_attr(feature = "cuda", allow(dead_code))]
fn cpu_simd_level() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl")
        {
            return "AVX-512";
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return "AVX2+FMA";
        }
        "SSE2"
    }
    #[cfg(target_arch = "aarch64")]
    {
        "NEON"
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "scalar"
    }
}
