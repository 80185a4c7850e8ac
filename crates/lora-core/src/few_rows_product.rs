//! `rows · matrixᵀ` for a few rows and a large row-major matrix, such as a decoder state times a
//! tied embedding (`hidden · Eᵀ`), computed in one pass over the matrix.
//!
//! Burn's flex backend multiplies four decoder rows by t5-small's 32128 × 512 embedding in
//! 6.4 ms where one row takes 2.6 ms (`examples/kernel_shapes.rs`): its kernel for few rows reads
//! the matrix more than once. Here every matrix row is read once and dotted with all the input
//! rows while it is in registers, so four rows cost about what one costs: the time of reading the
//! matrix from memory.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// The most input rows [`few_rows_times_transposed`] takes.
pub const FEW_ROWS_MAX: usize = 8;

/// `rows · matrixᵀ` (`[m, d] · [v, d]ᵀ = [m, v]`) on the flex backend for `m ≤ FEW_ROWS_MAX`
/// rows, reading `matrix` once; `None` when the tensors are not the flex backend's contiguous
/// `f32` ones (or `m` is larger), so that the caller uses Burn's `matmul`.
///
/// Without the crate feature `flex` it always returns `None`.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_core::few_rows_times_transposed;
///
/// let device = Default::default();
/// let rows = Tensor::<NdArray, 2>::ones([2, 16], &device);
/// let matrix = Tensor::<NdArray, 2>::ones([5, 16], &device);
/// let product = few_rows_times_transposed(&rows, &matrix)
///     .unwrap_or_else(|| rows.clone().matmul(matrix.clone().transpose()));
/// assert_eq!(product.dims(), [2, 5]);
/// ```
pub fn few_rows_times_transposed<B: Backend>(
    rows: &Tensor<B, 2>,
    matrix: &Tensor<B, 2>,
) -> Option<Tensor<B, 2>> {
    #[cfg(not(feature = "flex"))]
    {
        let _ = (rows, matrix);
        None
    }
    #[cfg(feature = "flex")]
    flex::few_rows_times_transposed(rows, matrix)
}

#[cfg(feature = "flex")]
pub(crate) mod flex {
    use burn::tensor::backend::Backend;
    use burn::tensor::Tensor;
    use rayon::prelude::*;

    use super::FEW_ROWS_MAX;
    use crate::flex_tensor::{float_primitive, row_major_f32, tensor_from_f32};

    /// Matrix rows per task.
    const TASK_MATRIX_ROWS: usize = 512;

    /// How far ahead, in matrix rows, the kernel prefetches: greedy decoding of a t5-small-sized
    /// model, whose head does not stay in cache between steps, measured about 5% faster with it.
    const PREFETCH_ROWS: usize = 8;

    /// [`super::few_rows_times_transposed`] on the flex backend.
    pub(super) fn few_rows_times_transposed<B: Backend>(
        rows: &Tensor<B, 2>,
        matrix: &Tensor<B, 2>,
    ) -> Option<Tensor<B, 2>> {
        let ([m, d], [v, d_matrix]) = (rows.dims(), matrix.dims());
        if m == 0 || m > FEW_ROWS_MAX || d != d_matrix || d == 0 || v == 0 {
            return None;
        }
        let rows_flex = float_primitive(rows)?;
        let matrix_flex = float_primitive(matrix)?;
        let rows_values = row_major_f32(&rows_flex)?;
        let matrix_values = matrix_flex.as_slice::<f32>()?;
        let product = product_rows_transposed(&rows_values, m, matrix_values, v, d);
        tensor_from_f32(product, [m, v])
    }

    /// `x · matrixᵀ` for `x` `[m, d]` and `matrix` `[v, d]`, both row-major; the result is `[m, v]`.
    pub(crate) fn product_rows_transposed(
        x: &[f32],
        m: usize,
        matrix: &[f32],
        v: usize,
        d: usize,
    ) -> Vec<f32> {
        debug_assert!(x.len() == m * d && matrix.len() == v * d);
        // Each task writes the transposed result `[v, m]` of its matrix rows, contiguously.
        let mut transposed = vec![0f32; v * m];
        transposed
            .par_chunks_mut(TASK_MATRIX_ROWS * m)
            .enumerate()
            .for_each(|(task, out)| {
                let first = task * TASK_MATRIX_ROWS;
                let count = out.len() / m;
                dot_rows(x, m, &matrix[first * d..(first + count) * d], d, out);
            });
        if m == 1 {
            // `[v, 1]` and `[1, v]` are the same values in the same order.
            return transposed;
        }
        let mut product = vec![0f32; m * v];
        for (j, values) in transposed.chunks_exact(m).enumerate() {
            for (r, &value) in values.iter().enumerate() {
                product[r * v + j] = value;
            }
        }
        product
    }

    /// `out[j·m + r] = x[r] · matrix[j]` for the rows `j` of `matrix`: the kernel of
    /// [`super::few_rows_times_transposed`], whose every entry depends only on its input row and
    /// matrix row (`crate::ArgmaxScreen` recomputes single entries with it).
    pub(crate) fn dot_rows(x: &[f32], m: usize, matrix: &[f32], d: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if d.is_multiple_of(32) && crate::flex_tensor::has_avx512_fma() {
            // SAFETY: the CPU has the features; `d` is a multiple of 32.
            unsafe {
                match m {
                    1 => return dot_rows_avx512::<1>(x, matrix, d, out),
                    2 => return dot_rows_avx512::<2>(x, matrix, d, out),
                    3 => return dot_rows_avx512::<3>(x, matrix, d, out),
                    4 => return dot_rows_avx512::<4>(x, matrix, d, out),
                    5 => return dot_rows_avx512::<5>(x, matrix, d, out),
                    6 => return dot_rows_avx512::<6>(x, matrix, d, out),
                    7 => return dot_rows_avx512::<7>(x, matrix, d, out),
                    8 => return dot_rows_avx512::<8>(x, matrix, d, out),
                    _ => {}
                }
            }
        }
        #[cfg(target_arch = "x86_64")]
        if d.is_multiple_of(16) && crate::flex_tensor::has_avx2_fma() {
            // SAFETY: the CPU has the features; `d` is a multiple of 16.
            if unsafe { dot_rows_avx2_for(m, x, matrix, d, out) } {
                return;
            }
        }
        for (row, out) in matrix.chunks_exact(d).zip(out.chunks_exact_mut(m)) {
            for (r, out) in out.iter_mut().enumerate() {
                *out = x[r * d..(r + 1) * d]
                    .iter()
                    .zip(row)
                    .map(|(a, b)| a * b)
                    .sum();
            }
        }
    }

    /// [`dot_rows`] for `R` input rows with AVX-512: two accumulators per input row (even and odd
    /// 16-lane steps), reduced once per matrix row.
    ///
    /// # Safety
    /// The CPU must have AVX-512F and FMA, `d` be a multiple of 32, `x` hold `R` rows of `d` and
    /// `out` `R` values per matrix row.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn dot_rows_avx512<const R: usize>(
        x: &[f32],
        matrix: &[f32],
        d: usize,
        out: &mut [f32],
    ) {
        use std::arch::x86_64::{
            _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_reduce_add_ps,
            _mm512_setzero_ps, _mm_prefetch, _MM_HINT_T0,
        };
        assert!(x.len() == R * d && d.is_multiple_of(32));
        for (row, out) in matrix.chunks_exact(d).zip(out.chunks_exact_mut(R)) {
            let mut even = [_mm512_setzero_ps(); R];
            let mut odd = [_mm512_setzero_ps(); R];
            for c in (0..d).step_by(32) {
                // The same place [`PREFETCH_ROWS`] matrix rows on: one stream alone is read at a
                // fraction of the bandwidth.
                let ahead = row.as_ptr().wrapping_add(c + PREFETCH_ROWS * d);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16).cast());
                // SAFETY: `c + 32 <= d`, the length of `row` and of each input row; unaligned loads.
                unsafe {
                    let m0 = _mm512_loadu_ps(row.as_ptr().add(c));
                    let m1 = _mm512_loadu_ps(row.as_ptr().add(c + 16));
                    for r in 0..R {
                        let input = x.as_ptr().add(r * d + c);
                        even[r] = _mm512_fmadd_ps(_mm512_loadu_ps(input), m0, even[r]);
                        odd[r] = _mm512_fmadd_ps(_mm512_loadu_ps(input.add(16)), m1, odd[r]);
                    }
                }
            }
            for r in 0..R {
                out[r] = _mm512_reduce_add_ps(_mm512_add_ps(even[r], odd[r]));
            }
        }
    }

    /// [`dot_rows_avx2`] for `m` input rows, if `m` is one it takes (then `true`).
    ///
    /// # Safety
    /// As [`dot_rows_avx2`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn dot_rows_avx2_for(
        m: usize,
        x: &[f32],
        matrix: &[f32],
        d: usize,
        out: &mut [f32],
    ) -> bool {
        // SAFETY (each call): passed on from the caller.
        unsafe {
            match m {
                1 => dot_rows_avx2::<1>(x, matrix, d, out),
                2 => dot_rows_avx2::<2>(x, matrix, d, out),
                3 => dot_rows_avx2::<3>(x, matrix, d, out),
                4 => dot_rows_avx2::<4>(x, matrix, d, out),
                5 => dot_rows_avx2::<5>(x, matrix, d, out),
                6 => dot_rows_avx2::<6>(x, matrix, d, out),
                7 => dot_rows_avx2::<7>(x, matrix, d, out),
                8 => dot_rows_avx2::<8>(x, matrix, d, out),
                _ => return false,
            }
        }
        true
    }

    /// [`dot_rows_avx512`] with AVX2: two 8-lane accumulators per input row (even and odd
    /// 8-lane steps).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA, `d` be a multiple of 16, `x` hold `R` rows of `d` and
    /// `out` `R` values per matrix row.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_rows_avx2<const R: usize>(x: &[f32], matrix: &[f32], d: usize, out: &mut [f32]) {
        use std::arch::x86_64::{
            _mm256_add_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps, _mm_prefetch,
            _MM_HINT_T0,
        };
        assert!(x.len() == R * d && d.is_multiple_of(16));
        for (row, out) in matrix.chunks_exact(d).zip(out.chunks_exact_mut(R)) {
            let mut even = [_mm256_setzero_ps(); R];
            let mut odd = [_mm256_setzero_ps(); R];
            for c in (0..d).step_by(16) {
                // As in `dot_rows_avx512`: one prefetch per 64-byte line, rows ahead.
                let ahead = row.as_ptr().wrapping_add(c + PREFETCH_ROWS * d);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                // SAFETY: `c + 16 <= d`, the length of `row` and of each input row; unaligned loads.
                unsafe {
                    let m0 = _mm256_loadu_ps(row.as_ptr().add(c));
                    let m1 = _mm256_loadu_ps(row.as_ptr().add(c + 8));
                    for r in 0..R {
                        let input = x.as_ptr().add(r * d + c);
                        even[r] = _mm256_fmadd_ps(_mm256_loadu_ps(input), m0, even[r]);
                        odd[r] = _mm256_fmadd_ps(_mm256_loadu_ps(input.add(8)), m1, odd[r]);
                    }
                }
            }
            for r in 0..R {
                out[r] = crate::flex_tensor::sum_lanes_avx(_mm256_add_ps(even[r], odd[r]));
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use burn::tensor::{Distribution, Tensor};
        use burn_flex::Flex;

        use super::*;

        fn check(m: usize, d: usize) {
            let device = Default::default();
            let x = Tensor::<Flex, 2>::random([m, d], Distribution::Uniform(-1.0, 1.0), &device);
            let e = Tensor::<Flex, 2>::random([1100, d], Distribution::Uniform(-1.0, 1.0), &device);
            let expected = x.clone().matmul(e.clone().transpose()).into_data();
            let found = few_rows_times_transposed(&x, &e)
                .expect("flex tensors")
                .into_data();
            let (expected, found) = (
                expected.into_vec::<f32>().unwrap(),
                found.into_vec::<f32>().unwrap(),
            );
            for (i, (f, e)) in found.iter().zip(&expected).enumerate() {
                assert!(
                    (f - e).abs() <= 1e-5 * d as f32,
                    "{m}×{d}, element {i}: {f} against {e}"
                );
            }
        }

        #[test]
        fn one_row_matches_burn_matmul() {
            check(1, 64);
        }

        #[test]
        fn eight_rows_match_burn_matmul() {
            check(8, 96);
        }

        #[test]
        fn a_width_without_whole_vectors_takes_the_scalar_loop() {
            check(3, 40);
        }

        /// The AVX2 kernel called directly (so that it is tested on CPUs whose dispatch picks
        /// AVX-512), for every row count, against f64 dot products.
        #[cfg(target_arch = "x86_64")]
        #[test]
        fn the_avx2_kernel_matches_f64_dot_products() {
            if !crate::flex_tensor::has_avx2_fma() {
                return;
            }
            let (d, v) = (48, 21);
            let matrix: Vec<f32> = (0..v * d)
                .map(|i| ((i * 31 % 97) as f32 - 48.0) / 48.0)
                .collect();
            for m in 1..=FEW_ROWS_MAX {
                let x: Vec<f32> = (0..m * d)
                    .map(|i| ((i * 17 % 89) as f32 - 44.0) / 44.0)
                    .collect();
                let mut out = vec![0f32; v * m];
                // SAFETY: the CPU has AVX2 and FMA; `d` is a multiple of 16.
                assert!(unsafe { dot_rows_avx2_for(m, &x, &matrix, d, &mut out) });
                for j in 0..v {
                    for r in 0..m {
                        let exact: f64 = (0..d)
                            .map(|c| f64::from(x[r * d + c]) * f64::from(matrix[j * d + c]))
                            .sum();
                        let found = f64::from(out[j * m + r]);
                        assert!(
                            (found - exact).abs() <= 1e-5,
                            "{m} rows, [{r}, {j}]: {found} against {exact}"
                        );
                    }
                }
            }
        }

        #[test]
        fn more_rows_than_the_kernel_takes_are_left_to_burn() {
            let device = Default::default();
            let x = Tensor::<Flex, 2>::ones([FEW_ROWS_MAX + 1, 32], &device);
            assert!(few_rows_times_transposed(&x, &x).is_none());
        }
    }
}
