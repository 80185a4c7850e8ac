//! Access to the flex backend's host tensors from code generic over `B: Backend`, for the fast
//! paths of this crate (crate feature `flex`), and the CPU check their kernels share. Every
//! tensor function returns `None` when `B` is not the flex backend or the tensor is not what the
//! fast path needs, so that the caller falls back to Burn's own operations.

use std::any::Any;
use std::borrow::Cow;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use burn_flex::{Flex, FlexQTensor, FlexTensor};

/// The flex tensor behind a float tensor (a cheap clone of its shared storage).
pub(crate) fn float_primitive<B: Backend, const D: usize>(
    tensor: &Tensor<B, D>,
) -> Option<FlexTensor> {
    if tensor.dtype() != DType::F32 {
        return None;
    }
    let TensorPrimitive::Float(primitive) = tensor.clone().into_primitive() else {
        return None;
    };
    let boxed: Box<dyn Any> = Box::new(primitive);
    boxed.downcast::<FlexTensor>().ok().map(|b| *b)
}

/// The flex tensor behind a float tensor of the flex backend or of the autodiff backend over it
/// (its value, outside the graph).
pub(crate) fn any_float_primitive<B: Backend, const D: usize>(
    tensor: &Tensor<B, D>,
) -> Option<FlexTensor> {
    if let Some(primitive) = float_primitive(tensor) {
        return Some(primitive);
    }
    let any: &dyn Any = tensor;
    let autodiff = any.downcast_ref::<Tensor<Autodiff<Flex>, D>>()?;
    float_primitive(&autodiff.clone().inner())
}

/// The flex quantized tensor behind a quantized tensor.
pub(crate) fn quantized_primitive<B: Backend, const D: usize>(
    tensor: &Tensor<B, D>,
) -> Option<FlexQTensor> {
    let TensorPrimitive::QFloat(primitive) = tensor.clone().into_primitive() else {
        return None;
    };
    let boxed: Box<dyn Any> = Box::new(primitive);
    boxed.downcast::<FlexQTensor>().ok().map(|b| *b)
}

/// The values of an `f32` flex tensor in row-major order: borrowed when contiguous, copied
/// otherwise.
pub(crate) fn row_major_f32(tensor: &FlexTensor) -> Option<Cow<'_, [f32]>> {
    match tensor.as_slice::<f32>() {
        Some(values) => Some(Cow::Borrowed(values)),
        None => Some(Cow::Owned(
            tensor.to_contiguous().as_slice::<f32>()?.to_vec(),
        )),
    }
}

/// A `B` tensor of `shape` holding `values` (`None` unless `B` is the flex backend).
pub(crate) fn tensor_from_f32<B: Backend, const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
) -> Option<Tensor<B, D>> {
    from_flex(FlexTensor::from_data(TensorData::new(values, shape)))
}

/// A `B` tensor wrapping a flex tensor (`None` unless `B` is the flex backend).
pub(crate) fn from_flex<B: Backend, const D: usize>(tensor: FlexTensor) -> Option<Tensor<B, D>> {
    let boxed: Box<dyn Any> = Box::new(tensor);
    let primitive: B::FloatTensorPrimitive = *boxed.downcast().ok()?;
    Some(Tensor::from_primitive(TensorPrimitive::Float(primitive)))
}

/// Whether the CPU has AVX-512F and FMA, the features of the fast paths' vector kernels
/// (detected once, then cached by the standard library).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn has_avx512_fma() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma")
}

/// Whether the CPU has AVX2 and FMA, the features of the fast paths' 8-lane kernels, used where
/// AVX-512 is missing (AMD before Zen 4, most Intel client CPUs).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn has_avx2_fma() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// The sum of the 8 lanes of `v`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
#[inline]
pub(crate) fn sum_lanes_avx(v: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::{
        _mm256_castps256_ps128, _mm256_extractf128_ps, _mm_add_ps, _mm_add_ss, _mm_cvtss_f32,
        _mm_movehl_ps, _mm_shuffle_ps,
    };
    let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps::<1>(pair, pair)))
}

/// Elements from which [`zeros_f32`] writes its zeros on all threads.
const PARALLEL_ZEROS_MIN: usize = 1 << 16;

/// `len` zeros: the output buffer of a fast path. Large buffers are written on all threads;
/// the allocator hands back reused memory, which `vec![0.0; len]` would zero on the calling
/// thread while the others wait.
pub(crate) fn zeros_f32(len: usize) -> Vec<f32> {
    use rayon::iter::ParallelExtend;
    if len < PARALLEL_ZEROS_MIN {
        return vec![0.0; len];
    }
    let mut zeros = Vec::with_capacity(len);
    zeros.par_extend(rayon::iter::repeat_n(0f32, len));
    zeros
}

/// The autodiff backend over flex, whose tensors the fused operations record themselves.
pub(crate) type AutodiffFlex = Autodiff<Flex>;

/// `value` as a `U` when `T` is `U`, `Err(value)` otherwise.
fn cast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let boxed: Box<dyn Any> = Box::new(value);
    match boxed.downcast::<U>() {
        Ok(cast) => Ok(*cast),
        Err(boxed) => match boxed.downcast::<T>() {
            Ok(value) => Err(*value),
            Err(_) => unreachable!("a box holds the type it was made with"),
        },
    }
}

/// `tensor` as an autodiff-over-flex `f32` tensor; `Err(tensor)` for any other backend or
/// element type.
pub(crate) fn into_autodiff_flex<B: Backend, const D: usize>(
    tensor: Tensor<B, D>,
) -> Result<Tensor<AutodiffFlex, D>, Tensor<B, D>> {
    if tensor.dtype() != DType::F32 {
        return Err(tensor);
    }
    cast(tensor)
}

/// The inverse of [`into_autodiff_flex`], for a tensor it returned.
pub(crate) fn from_autodiff_flex<B: Backend, const D: usize>(
    tensor: Tensor<AutodiffFlex, D>,
) -> Tensor<B, D> {
    match cast(tensor) {
        Ok(tensor) => tensor,
        Err(_) => unreachable!("only called with `B` the autodiff backend over flex"),
    }
}

/// A matrix inside a slice of `f32`, with its row and column strides (a row-major matrix, or a
/// transposed view of one), as `gemm` takes it.
#[derive(Clone, Copy)]
pub(crate) struct MatrixView<'a> {
    pub(crate) values: &'a [f32],
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
}

impl<'a> MatrixView<'a> {
    /// A row-major `[rows, cols]` matrix.
    pub(crate) fn row_major(values: &'a [f32], cols: usize) -> Self {
        Self {
            values,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub(crate) fn transposed(values: &'a [f32], cols: usize) -> Self {
        Self {
            values,
            row_stride: 1,
            col_stride: cols,
        }
    }

    /// Whether a `[rows, cols]` matrix with these strides lies inside `values`.
    fn holds(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.values.len()
    }
}

/// Columns of a column block of [`gemm_into`]'s split product: a multiple of the AVX-512 width.
const COLUMN_BLOCK_ALIGN: usize = 16;

/// `dst ← lhs · rhs` (`[m, k] · [k, n]`, `dst` row-major `[m, n]`), or `dst += lhs · rhs` when
/// `accumulate`, on all threads when `parallel`. `None` when a matrix does not fit its slice.
///
/// gemm 0.19 multiplies a row-major `dst` as `dstᵀ = rhsᵀ · lhsᵀ`, and it packs a left-hand
/// side whose rows are not contiguous on the calling thread, before its threads start: for a
/// transposed `rhs` (the weight of a backward product `g · Wᵀ`) that packing is a serial pass
/// over the whole weight. Such products are split here into column blocks, one single-threaded
/// product per thread, so that each thread packs only its own block of the weight.
pub(crate) fn gemm_into(
    dst: &mut [f32],
    accumulate: bool,
    lhs: MatrixView<'_>,
    rhs: MatrixView<'_>,
    [m, k, n]: [usize; 3],
    parallel: bool,
) -> Option<()> {
    if dst.len() != m * n || !lhs.holds(m, k) || !rhs.holds(k, n) {
        return None;
    }
    if m == 0 || n == 0 {
        return Some(());
    }
    let threads = rayon::current_num_threads();
    let transposed_rhs = rhs.row_stride == 1 && rhs.col_stride != 1;
    if parallel && transposed_rhs && threads > 1 && n >= 2 * COLUMN_BLOCK_ALIGN {
        use rayon::prelude::*;
        let block = n.div_ceil(threads).next_multiple_of(COLUMN_BLOCK_ALIGN);
        let dst_address = dst.as_mut_ptr() as usize;
        (0..n.div_ceil(block)).into_par_iter().for_each(|b| {
            let first = b * block;
            let cols = block.min(n - first);
            // SAFETY: the blocks' column ranges are disjoint and inside `[0, n)`, so each task
            // writes its own elements of `dst` (borrowed mutably for the whole call); the
            // column block of `rhs` starts at column `first` of a matrix that fits its slice.
            unsafe {
                raw_gemm(
                    (dst_address as *mut f32).add(first),
                    n,
                    accumulate,
                    lhs,
                    rhs.values.as_ptr().add(first * rhs.col_stride),
                    rhs,
                    [m, k, cols],
                    gemm::Parallelism::None,
                );
            }
        });
        return Some(());
    }
    let parallelism = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every matrix lies inside its slice (checked above), and `dst` is borrowed mutably,
    // so it aliases neither input.
    unsafe {
        raw_gemm(
            dst.as_mut_ptr(),
            n,
            accumulate,
            lhs,
            rhs.values.as_ptr(),
            rhs,
            [m, k, n],
            parallelism,
        );
    }
    Some(())
}

/// gemm's `dst ← lhs · rhs` (or `+=`) for a `dst` with rows `dst_row_stride` apart and a
/// right-hand side starting at `rhs_start` with `rhs`'s strides.
///
/// # Safety
/// `dst` must be valid for writes of an `[m, n]` matrix with these strides that no other
/// thread touches; `lhs` must hold an `[m, k]` matrix and `rhs_start` a `[k, n]` one.
#[allow(clippy::too_many_arguments)]
unsafe fn raw_gemm(
    dst: *mut f32,
    dst_row_stride: usize,
    accumulate: bool,
    lhs: MatrixView<'_>,
    rhs_start: *const f32,
    rhs: MatrixView<'_>,
    [m, k, n]: [usize; 3],
    parallelism: gemm::Parallelism,
) {
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_row_stride as isize,
            accumulate,
            lhs.values.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs_start,
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::{gemm_into, zeros_f32, MatrixView, PARALLEL_ZEROS_MIN};

    /// `[m, k] · [k, n]` by the definition, for row-major `a` and a transposed view of `w_t`.
    fn reference(a: &[f32], w_t: &[f32], [m, k, n]: [usize; 3]) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * w_t[j * k + p]).sum();
            }
        }
        out
    }

    #[test]
    fn a_transposed_product_split_by_columns_equals_the_definition() {
        // n = 100 is not a multiple of the column blocks, so the last block is narrower.
        let [m, k, n] = [37, 53, 100];
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
            .collect();
        let w_t: Vec<f32> = (0..n * k)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 8.0)
            .collect();
        let expected = reference(&a, &w_t, [m, k, n]);
        for (parallel, accumulate) in [(true, false), (false, false), (true, true)] {
            let mut out = if accumulate {
                vec![1f32; m * n]
            } else {
                vec![0f32; m * n]
            };
            gemm_into(
                &mut out,
                accumulate,
                MatrixView::row_major(&a, k),
                MatrixView::transposed(&w_t, k),
                [m, k, n],
                parallel,
            )
            .expect("the matrices fit");
            let offset = if accumulate { 1.0 } else { 0.0 };
            for (i, (found, expected)) in out.iter().zip(&expected).enumerate() {
                assert!(
                    (found - offset - expected).abs() <= 1e-4,
                    "{parallel} {accumulate} {i}: {found} against {expected}"
                );
            }
        }
    }

    #[test]
    fn zeros_are_zeros_on_both_sides_of_the_parallel_size() {
        for len in [0, 5, PARALLEL_ZEROS_MIN, PARALLEL_ZEROS_MIN * 3 + 1] {
            let zeros = zeros_f32(len);
            assert_eq!(zeros.len(), len);
            assert!(zeros.iter().all(|&z| z == 0.0));
        }
    }
}
