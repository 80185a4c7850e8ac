//! The index of the largest entry of each row of `rows · matrixᵀ`, found without reading the whole
//! `f32` matrix: greedy decoding's next token from a tied head.
//!
//! Greedy decoding keeps one logit per row, the largest, yet the head's product reads the whole
//! `[vocab, d_model]` embedding at every step (t5-small: 66 MB, about 30% of a step's time on a
//! 2-core machine, BENCHMARKS.md). [`ArgmaxScreen`] keeps an int8 copy of the matrix, one scale
//! per matrix row, and for each row `v` a bound `c_v` such that the `f32` logit `F_v` that
//! [`few_rows_times_transposed`](crate::few_rows_times_transposed) computes and the int8
//! estimate `A_v` differ by at most `‖x‖·c_v`:
//!
//! - `c_v = ‖E_v − s_v·q_v‖ + γ_d·‖E_v‖ + γ_{d+1}·s_v·‖q_v‖`, by Cauchy–Schwarz on the
//!   quantization error and the standard bound `γ_n = n·u / (1 − n·u)`, `u = 2⁻²⁴`, on the
//!   rounding of an `n`-term `f32` dot product in any order (Higham, *Accuracy and Stability of
//!   Numerical Algorithms*, §3.1), for both products.
//!
//! The largest `F` is then at least `T = max_v (A_v − ‖x‖·c_v)`, so only the rows with
//! `A_v + ‖x‖·c_v ≥ T` can hold it: those few are recomputed with the kernel of the full product,
//! and the first of the largest is returned. The index is the one the full product's `argmax`
//! gives, bit for bit, ties included (the first index of the largest value); one pass reads a
//! quarter of the bytes.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// An int8 copy of a matrix `[v, d]` with error bounds, which finds the column of the largest
/// entry of each row of `rows · matrixᵀ` exactly while reading about a quarter of the bytes
/// (see the module documentation for the bound).
///
/// Built only on the flex backend, for a finite, contiguous `f32` matrix; the copy takes a
/// quarter of the matrix's memory. It holds the matrix itself (a shared handle, not a copy), so
/// it cannot be used with another one. A linear layer's output (an untied language-model head)
/// has its screen from [`LoraLinear::output_screen`](crate::LoraLinear::output_screen).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_core::ArgmaxScreen;
///
/// let device = Default::default();
/// let embedding = Tensor::<NdArray, 2>::ones([5, 16], &device);
/// // Other backends than flex keep to the full product.
/// let screen = ArgmaxScreen::new(embedding.clone());
/// let rows = Tensor::<NdArray, 2>::ones([1, 16], &device);
/// let next = match screen.and_then(|s| s.argmax_rows(&rows, &[])) {
///     Some(tokens) => tokens,
///     None => vec![rows.matmul(embedding.transpose()).argmax(1).into_scalar() as u32],
/// };
/// assert_eq!(next, [0]);
/// ```
#[derive(Debug, Clone)]
pub struct ArgmaxScreen<B: Backend> {
    matrix: Tensor<B, 2>,
    #[cfg(feature = "flex")]
    quantized: std::sync::Arc<flex::QuantizedRows>,
}

impl<B: Backend> ArgmaxScreen<B> {
    /// The screen of `matrix` `[v, d]`: quantizes every row on all threads (about the time of
    /// two full products). `None` unless `B` is the flex backend and `matrix` is a contiguous
    /// `f32` tensor of finite values; always `None` without the crate feature `flex`.
    pub fn new(matrix: Tensor<B, 2>) -> Option<Self> {
        #[cfg(feature = "flex")]
        {
            let quantized = flex::QuantizedRows::new(&matrix)?;
            Some(Self {
                matrix,
                quantized: std::sync::Arc::new(quantized),
            })
        }
        #[cfg(not(feature = "flex"))]
        {
            let _ = matrix;
            None
        }
    }

    /// The screen of `x · weight` for a linear layer's `weight` `[d, v]` (Burn's layout) without
    /// bias, whose entries [`argmax_rows`](Self::argmax_rows) then reproduces as the layer's
    /// product of a few rows computes them (`crate::streamed_product`); what
    /// [`LoraLinear::output_screen`](crate::LoraLinear::output_screen) builds. `None` as for
    /// [`new`](Self::new).
    pub(crate) fn for_linear_weight(weight: Tensor<B, 2>) -> Option<Self> {
        #[cfg(feature = "flex")]
        {
            let quantized = flex::QuantizedRows::for_columns(&weight)?;
            Some(Self {
                matrix: weight,
                quantized: std::sync::Arc::new(quantized),
            })
        }
        #[cfg(not(feature = "flex"))]
        {
            let _ = weight;
            None
        }
    }

    /// The matrix (or linear weight) the screen was built from.
    pub fn matrix(&self) -> &Tensor<B, 2> {
        &self.matrix
    }

    /// For each row `r` of `rows` `[m, d]`, the index of the largest entry of row `r` of
    /// [`few_rows_times_transposed`](crate::few_rows_times_transposed)`(rows, matrix)` (the first
    /// of equal ones), leaving out the `(row, column)` pairs in `banned`: the token greedy search
    /// picks when those tokens' scores are `-inf`.
    ///
    /// `None` when the answer needs the full product: `rows` not a flex `f32` tensor of width
    /// `d`, more than [`FEW_ROWS_MAX`](crate::FEW_ROWS_MAX) rows, a non-finite value in
    /// `rows`, products so large that the full product could overflow, or every column of a
    /// row banned.
    pub fn argmax_rows(&self, rows: &Tensor<B, 2>, banned: &[(usize, u32)]) -> Option<Vec<u32>> {
        #[cfg(feature = "flex")]
        {
            flex::argmax_rows(&self.quantized, &self.matrix, rows, banned)
        }
        #[cfg(not(feature = "flex"))]
        {
            let _ = (rows, banned);
            None
        }
    }
}

#[cfg(feature = "flex")]
mod flex {
    use burn::tensor::backend::Backend;
    use burn::tensor::Tensor;
    use rayon::prelude::*;

    use crate::few_rows_product::flex::dot_rows;
    use crate::flex_tensor::{float_primitive, row_major_f32};
    use crate::int8_product::{Int8Matrix, Int8Scales};
    use crate::streamed_product::{streamed_product, streamed_product_columns, F32Matrix};
    use crate::FEW_ROWS_MAX;

    /// Matrix rows per task of the quantization and of the int8 pass (512 KiB of int8 at
    /// t5-small's width).
    const TASK_ROWS: usize = 1024;

    /// How far ahead, in matrix rows, the int8 pass prefetches (as the `f32` kernel does).
    const PREFETCH_ROWS: usize = 8;

    /// The unit roundoff of `f32`.
    const UNIT_ROUNDOFF: f64 = f32::EPSILON as f64 / 2.0;

    /// Relative margin on every bound, far above the rounding of the `f64` arithmetic that
    /// computes the bounds.
    const BOUND_MARGIN: f64 = 1e-6;

    /// `γ_n = n·u / (1 − n·u)`: the relative error bound of an `n`-term `f32` dot product.
    fn gamma(n: usize) -> f64 {
        let nu = n as f64 * UNIT_ROUNDOFF;
        nu / (1.0 - nu)
    }

    /// Where the screened matrix's tokens are.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Layout {
        /// A matrix `[v, d]` whose rows are the tokens: `rows · matrixᵀ` (a tied head).
        Rows,
        /// A linear layer's weight `[d, v]` whose columns are the tokens: `rows · weight`.
        Columns,
    }

    /// The int8 copy: `q` in the matrix's own layout, one scale per token, the bound `c_v` per
    /// token, and the largest token norm (for the overflow check).
    #[derive(Debug)]
    pub(super) struct QuantizedRows {
        layout: Layout,
        q: Vec<i8>,
        scales: Vec<f32>,
        bounds: Vec<f64>,
        absolutes: Vec<f64>,
        largest_norm: f64,
        v: usize,
        d: usize,
    }

    impl QuantizedRows {
        pub(super) fn new<B: Backend>(matrix: &Tensor<B, 2>) -> Option<Self> {
            let [v, d] = matrix.dims();
            // `1 − n·u` must stay well above 0 for the bound to hold.
            if v == 0 || d == 0 || d > 1 << 20 {
                return None;
            }
            let primitive = float_primitive(matrix)?;
            let values = primitive.as_slice::<f32>()?;
            let mut q = vec![0i8; v * d];
            let mut scales = vec![0f32; v];
            let mut bounds = vec![0f64; v];
            let mut absolutes = vec![0f64; v];
            let mut norms = vec![0f64; v];
            let finite = q
                .par_chunks_mut(TASK_ROWS * d)
                .zip(scales.par_chunks_mut(TASK_ROWS))
                .zip(bounds.par_chunks_mut(TASK_ROWS))
                .zip(absolutes.par_chunks_mut(TASK_ROWS))
                .zip(norms.par_chunks_mut(TASK_ROWS))
                .enumerate()
                .all(|(task, ((((q, scales), bounds), absolutes), norms))| {
                    let first = task * TASK_ROWS;
                    let rows = values[first * d..(first + scales.len()) * d].chunks_exact(d);
                    let outputs = q
                        .chunks_exact_mut(d)
                        .zip(scales)
                        .zip(bounds)
                        .zip(absolutes)
                        .zip(norms);
                    for (row, ((((q, scale), bound), absolute), norm)) in rows.zip(outputs) {
                        let Some(quantized) = quantize_row(row, q) else {
                            return false;
                        };
                        *scale = quantized.scale;
                        *bound = quantized.bound;
                        *absolute = quantized.absolute;
                        *norm = quantized.norm;
                    }
                    true
                });
            if !finite {
                return None;
            }
            let largest_norm = norms.iter().fold(0f64, |m, n| m.max(*n));
            Some(Self {
                layout: Layout::Rows,
                q,
                scales,
                bounds,
                absolutes,
                largest_norm,
                v,
                d,
            })
        }
    }

    impl QuantizedRows {
        /// The screen of a linear layer's weight `[d, v]`, one scale per column; `None` for a
        /// weight that is not a contiguous flex `f32` tensor of finite values.
        pub(super) fn for_columns<B: Backend>(weight: &Tensor<B, 2>) -> Option<Self> {
            let [d, v] = weight.dims();
            if v == 0 || d == 0 || d > 1 << 20 {
                return None;
            }
            let primitive = float_primitive(weight)?;
            let values = primitive.as_slice::<f32>()?;
            let task_rows = (TASK_ROWS * 512 / v.max(1)).max(1);
            // The largest magnitude of every column, from blocks of rows on all threads.
            let largest = values
                .par_chunks(task_rows * v)
                .map(|rows| {
                    let mut largest = vec![0f32; v];
                    for row in rows.chunks_exact(v) {
                        largest_magnitudes(row, &mut largest);
                    }
                    largest
                })
                .reduce_with(|mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a = a.max(*b));
                    a
                })?;
            let scales: Vec<f32> = largest.iter().map(|l| l / 127.0).collect();
            let inverses: Vec<f32> = scales
                .iter()
                .zip(&largest)
                .map(|(s, l)| {
                    if *s > 0.0 && s.is_finite() {
                        127.0 / l
                    } else {
                        0.0
                    }
                })
                .collect();
            let mut q = vec![0i8; d * v];
            let sums = q
                .par_chunks_mut(task_rows * v)
                .zip(values.par_chunks(task_rows * v))
                .map(|(q, rows)| {
                    let mut sums = ColumnSums::new(v);
                    for (q, row) in q.chunks_exact_mut(v).zip(rows.chunks_exact(v)) {
                        quantize_columns(row, &scales, &inverses, q, &mut sums);
                    }
                    sums
                })
                .reduce_with(ColumnSums::add)?;
            let mut bounds = Vec::with_capacity(v);
            let mut absolutes = Vec::with_capacity(v);
            let mut largest_norm = 0f64;
            for c in 0..v {
                let column = bounded(
                    &RowSums {
                        scale: scales[c],
                        residual_squares: sums.residual_squares[c],
                        squares: sums.squares[c] + largest[c] * 0.0,
                        level_squares: sums.level_squares[c],
                    },
                    d,
                )?;
                bounds.push(column.bound);
                absolutes.push(column.absolute);
                largest_norm = largest_norm.max(column.norm);
            }
            Some(Self {
                layout: Layout::Columns,
                q,
                scales,
                bounds,
                absolutes,
                largest_norm,
                v,
                d,
            })
        }
    }

    /// `largest[c] = max(largest[c], |row[c]|)` (a NaN is caught by the sums of squares).
    fn largest_magnitudes(row: &[f32], largest: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::flex_tensor::has_avx2_fma() {
            // SAFETY: the CPU has the features.
            return unsafe { largest_magnitudes_avx2(row, largest) };
        }
        largest_magnitudes_portable(row, largest);
    }

    /// [`largest_magnitudes_portable`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn largest_magnitudes_avx2(row: &[f32], largest: &mut [f32]) {
        largest_magnitudes_portable(row, largest);
    }

    #[inline(always)]
    fn largest_magnitudes_portable(row: &[f32], largest: &mut [f32]) {
        for (l, e) in largest.iter_mut().zip(row) {
            let e = e.abs();
            *l = if e > *l { e } else { *l };
        }
    }

    /// Per-column `f32` sums of the squares of the residuals, values and levels.
    struct ColumnSums {
        residual_squares: Vec<f32>,
        squares: Vec<f32>,
        level_squares: Vec<f32>,
    }

    impl ColumnSums {
        fn new(v: usize) -> Self {
            Self {
                residual_squares: vec![0.0; v],
                squares: vec![0.0; v],
                level_squares: vec![0.0; v],
            }
        }

        fn add(mut self, other: Self) -> Self {
            let pairs = [
                (&mut self.residual_squares, &other.residual_squares),
                (&mut self.squares, &other.squares),
                (&mut self.level_squares, &other.level_squares),
            ];
            for (a, b) in pairs {
                a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
            }
            self
        }
    }

    /// Quantizes one weight row, column `c` with `scales[c]`, adding to the column sums.
    fn quantize_columns(
        row: &[f32],
        scales: &[f32],
        inverses: &[f32],
        q: &mut [i8],
        sums: &mut ColumnSums,
    ) {
        #[cfg(target_arch = "x86_64")]
        if crate::flex_tensor::has_avx2_fma() {
            // SAFETY: the CPU has the features.
            return unsafe { quantize_columns_avx2(row, scales, inverses, q, sums) };
        }
        quantize_columns_portable(row, scales, inverses, q, sums);
    }

    /// [`quantize_columns_portable`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn quantize_columns_avx2(
        row: &[f32],
        scales: &[f32],
        inverses: &[f32],
        q: &mut [i8],
        sums: &mut ColumnSums,
    ) {
        quantize_columns_portable(row, scales, inverses, q, sums);
    }

    /// As [`quantize_row_sums`], one column per lane: plain multiplications and subtractions.
    #[inline(always)]
    fn quantize_columns_portable(
        row: &[f32],
        scales: &[f32],
        inverses: &[f32],
        q: &mut [i8],
        sums: &mut ColumnSums,
    ) {
        let columns = row.iter().zip(scales).zip(inverses).zip(q.iter_mut());
        let totals = sums
            .residual_squares
            .iter_mut()
            .zip(sums.squares.iter_mut())
            .zip(sums.level_squares.iter_mut());
        for ((((e, scale), inverse), q), ((residual_squares, squares), level_squares)) in
            columns.zip(totals)
        {
            let level = (e * inverse).round_ties_even().clamp(-127.0, 127.0);
            *q = level as i8;
            let residual = e - scale * level;
            *residual_squares += residual * residual;
            *squares += e * e;
            *level_squares += level * level;
        }
    }

    /// What quantizing one row gives besides its int8 values.
    struct QuantizedRow {
        scale: f32,
        bound: f64,
        absolute: f64,
        norm: f64,
    }

    /// Independent partial sums the row loops keep, so that they vectorize.
    const LANES: usize = 8;

    /// The `f32` sums of one quantized row, each an upper bound once inflated by
    /// [`inflated_norm`].
    struct RowSums {
        scale: f32,
        residual_squares: f32,
        squares: f32,
        level_squares: f32,
    }

    /// Quantizes `row` into `q` and computes its bound `c_v`; `None` for a non-finite value (or
    /// squares that overflow `f32`, which the full product would be close to as well).
    fn quantize_row(row: &[f32], q: &mut [i8]) -> Option<QuantizedRow> {
        #[cfg(target_arch = "x86_64")]
        let sums = if crate::flex_tensor::has_avx2_fma() {
            // SAFETY: the CPU has the features.
            unsafe { quantize_row_avx2(row, q) }
        } else {
            quantize_row_sums(row, q)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let sums = quantize_row_sums(row, q);
        bounded(&sums, row.len())
    }

    /// The scale and bounds of a quantized row (or column) of `d` values from its sums; `None`
    /// when the sums are not finite.
    fn bounded(sums: &RowSums, d: usize) -> Option<QuantizedRow> {
        if !sums.squares.is_finite() || !sums.level_squares.is_finite() {
            return None;
        }
        let u = UNIT_ROUNDOFF;
        let scale = f64::from(sums.scale);
        let level_norm = inflated_norm(sums.level_squares, d);
        let norm = inflated_norm(sums.squares, d);
        // Each residual `e − fl(s·q)` is rounded twice: the computed norm is within
        // `2u·(‖s·q‖ + ‖residual‖)` of the exact one, plus `u` for the square root.
        let computed = inflated_norm(sums.residual_squares, d) * (1.0 + u);
        let residual = (computed + 2.01 * u * scale * level_norm) / (1.0 - 2.01 * u);
        let bound = residual + gamma(d) * norm + gamma(d + 1) * scale * level_norm;
        // Underflow: at most half the smallest subnormal per rounding, in both dot products.
        let absolute = (scale + 1.0) * (d as f64 + 2.0) * f64::from(f32::from_bits(1));
        Some(QuantizedRow {
            scale: sums.scale,
            bound: bound * (1.0 + BOUND_MARGIN),
            absolute,
            norm,
        })
    }

    /// An upper bound on `√(Σ values²)` from its `f32` sum of `d` squares computed in any order
    /// (`γ_d` relative, plus what the squares lose to underflow).
    fn inflated_norm(computed_squares: f32, d: usize) -> f64 {
        let underflow = d as f64 * f64::from(f32::from_bits(1));
        ((f64::from(computed_squares) + underflow) / (1.0 - gamma(d))).sqrt() * (1.0 + BOUND_MARGIN)
    }

    /// [`quantize_row_sums`] with AVX2, 8 values at a time (the sums in another order, which
    /// the bound allows for).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn quantize_row_avx2(row: &[f32], q: &mut [i8]) -> RowSums {
        use std::arch::x86_64::{
            __m128i, _mm256_add_ps, _mm256_andnot_ps, _mm256_castsi256_si128, _mm256_cvtps_epi32,
            _mm256_extracti128_si256, _mm256_loadu_ps, _mm256_max_ps, _mm256_min_ps, _mm256_mul_ps,
            _mm256_round_ps, _mm256_set1_ps, _mm256_setzero_ps, _mm256_storeu_ps, _mm256_sub_ps,
            _mm_packs_epi16, _mm_packs_epi32, _mm_storel_epi64, _MM_FROUND_NO_EXC,
            _MM_FROUND_TO_NEAREST_INT,
        };
        let d = row.len();
        if !d.is_multiple_of(8) || q.len() != d {
            return quantize_row_sums(row, q);
        }
        let lanes = |v| {
            let mut out = [0f32; 8];
            // SAFETY: `out` holds 8 values.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
            out
        };
        let sign = _mm256_set1_ps(-0.0);
        let mut largest = _mm256_setzero_ps();
        for c in (0..d).step_by(8) {
            // SAFETY: `c + 8 <= d`.
            let e = unsafe { _mm256_loadu_ps(row.as_ptr().add(c)) };
            largest = _mm256_max_ps(largest, _mm256_andnot_ps(sign, e));
        }
        let largest = lanes(largest).iter().fold(0f32, |m, l| m.max(*l));
        let scale = largest / 127.0;
        let inverse = if scale > 0.0 && scale.is_finite() {
            127.0 / largest
        } else {
            0.0
        };
        let (scale_v, inverse_v) = (_mm256_set1_ps(scale), _mm256_set1_ps(inverse));
        let (low, high) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
        let mut residual_squares = _mm256_setzero_ps();
        let mut squares = _mm256_setzero_ps();
        let mut level_squares = _mm256_setzero_ps();
        for c in (0..d).step_by(8) {
            // SAFETY: `c + 8 <= d`, the length of `row` and of `q`.
            unsafe {
                let e = _mm256_loadu_ps(row.as_ptr().add(c));
                let level = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                    _mm256_mul_ps(e, inverse_v),
                );
                let level = _mm256_min_ps(_mm256_max_ps(level, low), high);
                let ints = _mm256_cvtps_epi32(level);
                let words = _mm_packs_epi32(
                    _mm256_castsi256_si128(ints),
                    _mm256_extracti128_si256::<1>(ints),
                );
                _mm_storel_epi64(
                    q.as_mut_ptr().add(c).cast::<__m128i>(),
                    _mm_packs_epi16(words, words),
                );
                let residual = _mm256_sub_ps(e, _mm256_mul_ps(scale_v, level));
                residual_squares =
                    _mm256_add_ps(residual_squares, _mm256_mul_ps(residual, residual));
                squares = _mm256_add_ps(squares, _mm256_mul_ps(e, e));
                level_squares = _mm256_add_ps(level_squares, _mm256_mul_ps(level, level));
            }
        }
        let sum = |v| lanes(v).iter().sum::<f32>();
        RowSums {
            scale,
            residual_squares: sum(residual_squares),
            // A NaN or infinite value makes this sum NaN or infinite.
            squares: sum(squares) + largest * 0.0,
            level_squares: sum(level_squares),
        }
    }

    /// `scale = max |e| / 127`, `q = round(e / scale)`, and the `f32` sums of the squares of the
    /// residuals `e − scale·q`, of `e` and of `q`. Plain multiplications and subtractions (Rust
    /// never fuses them), so the rounding the bound allows for is the same on every CPU.
    #[inline(always)]
    fn quantize_row_sums(row: &[f32], q: &mut [i8]) -> RowSums {
        let mut largest = [0f32; LANES];
        let mut chunks = row.chunks_exact(LANES);
        for chunk in &mut chunks {
            for (l, e) in largest.iter_mut().zip(chunk) {
                *l = l.max(e.abs());
            }
        }
        for (l, e) in largest.iter_mut().zip(chunks.remainder()) {
            *l = l.max(e.abs());
        }
        let largest = largest.iter().fold(0f32, |m, l| m.max(*l));
        let scale = largest / 127.0;
        let inverse = if scale > 0.0 && scale.is_finite() {
            127.0 / largest
        } else {
            0.0
        };
        let mut residual_squares = [0f32; LANES];
        let mut squares = [0f32; LANES];
        let mut level_squares = [0f32; LANES];
        let mut accumulate = |lane: usize, e: f32, q: &mut i8| {
            let level = (e * inverse).round_ties_even().clamp(-127.0, 127.0);
            *q = level as i8;
            let residual = e - scale * level;
            residual_squares[lane] += residual * residual;
            squares[lane] += e * e;
            level_squares[lane] += level * level;
        };
        let mut q_chunks = q.chunks_exact_mut(LANES);
        let mut chunks = row.chunks_exact(LANES);
        for (chunk, q) in (&mut chunks).zip(&mut q_chunks) {
            for (lane, (e, q)) in chunk.iter().zip(q).enumerate() {
                accumulate(lane, *e, q);
            }
        }
        for (lane, (e, q)) in chunks
            .remainder()
            .iter()
            .zip(q_chunks.into_remainder())
            .enumerate()
        {
            accumulate(lane, *e, q);
        }
        let sum = |lanes: [f32; LANES]| lanes.iter().sum::<f32>();
        RowSums {
            scale,
            residual_squares: sum(residual_squares),
            // A NaN or infinite value makes this sum NaN or infinite.
            squares: sum(squares) + largest * 0.0,
            level_squares: sum(level_squares),
        }
    }

    /// [`super::ArgmaxScreen::argmax_rows`] on the flex backend.
    pub(super) fn argmax_rows<B: Backend>(
        screen: &QuantizedRows,
        matrix: &Tensor<B, 2>,
        rows: &Tensor<B, 2>,
        banned: &[(usize, u32)],
    ) -> Option<Vec<u32>> {
        let (v, d) = (screen.v, screen.d);
        let [m, width] = rows.dims();
        let shape = match screen.layout {
            Layout::Rows => [v, d],
            Layout::Columns => [d, v],
        };
        if m == 0 || m > FEW_ROWS_MAX || width != d || matrix.dims() != shape {
            return None;
        }
        let rows_flex = float_primitive(rows)?;
        let x = row_major_f32(&rows_flex)?;
        let matrix_flex = float_primitive(matrix)?;
        let matrix = matrix_flex.as_slice::<f32>()?;
        let mut x_norms = Vec::with_capacity(m);
        for row in x.chunks_exact(d) {
            let squares: f64 = row.iter().map(|x| f64::from(*x) * f64::from(*x)).sum();
            let norm = squares.sqrt() * (1.0 + BOUND_MARGIN);
            // Every logit, and the sum of a row of them, stays far from overflowing, as the
            // full product's checks require.
            let limit = f64::from(f32::MAX) / 4.0 / v as f64;
            if !norm.is_finite() || norm * screen.largest_norm * (1.0 + gamma(d)) >= limit {
                return None;
            }
            x_norms.push(norm);
        }
        let mut estimates = match screen.layout {
            Layout::Rows => row_estimates(screen, &x, m),
            Layout::Columns => column_estimates(screen, &x, m)?,
        };
        // Entry `(r, j)` of the estimates and of the product: `[v, m]` for a matrix of token
        // rows (as its f32 kernel writes them), `[m, v]` for a weight of token columns.
        let at = |r: usize, j: usize| match screen.layout {
            Layout::Rows => j * m + r,
            Layout::Columns => r * v + j,
        };
        for &(row, column) in banned {
            if row < m && (column as usize) < v {
                estimates[at(row, column as usize)] = f32::NEG_INFINITY;
            }
        }
        let weight = F32Matrix::new(matrix, d, v)?;
        let mut tokens = Vec::with_capacity(m);
        let mut exact = vec![0f32; m];
        for (r, x_norm) in x_norms.iter().enumerate() {
            let slack = |j: usize| x_norm * screen.bounds[j] + screen.absolutes[j];
            let estimate = |j: usize| f64::from(estimates[at(r, j)]);
            // A lower bound on the largest full-product entry; `-inf` when every one is banned.
            let floor = (0..v)
                .map(|j| estimate(j) - slack(j))
                .fold(f64::NEG_INFINITY, f64::max);
            if floor == f64::NEG_INFINITY {
                return None;
            }
            let mut best: Option<(u32, f32)> = None;
            for j in (0..v).filter(|j| estimate(*j) + slack(*j) >= floor) {
                let value = match screen.layout {
                    Layout::Rows => {
                        dot_rows(&x, m, &matrix[j * d..(j + 1) * d], d, &mut exact);
                        exact[r]
                    }
                    Layout::Columns => {
                        // The 16 columns the product's kernel computes together.
                        let start = j - j % 16;
                        let columns = start..(start + 16).min(v);
                        let width = columns.len();
                        let values = streamed_product_columns(&x, m, &weight, columns);
                        values[r * width + j - start]
                    }
                };
                if best.is_none_or(|(_, b)| value > b) {
                    best = Some((j as u32, value));
                }
            }
            tokens.push(best?.0);
        }
        Some(tokens)
    }

    /// The int8 estimates of a matrix of token rows, `[v, m]`.
    fn row_estimates(screen: &QuantizedRows, x: &[f32], m: usize) -> Vec<f32> {
        let d = screen.d;
        let mut estimates = vec![0f32; screen.v * m];
        estimates
            .par_chunks_mut(TASK_ROWS * m)
            .enumerate()
            .for_each(|(task, out)| {
                let first = task * TASK_ROWS;
                let count = out.len() / m;
                let q = &screen.q[first * d..(first + count) * d];
                estimate_rows(x, m, q, &screen.scales[first..first + count], d, out);
            });
        estimates
    }

    /// The int8 estimates of a weight of token columns, `[m, v]`: the int8 weight streamed with
    /// a unit scale, then each column scaled.
    fn column_estimates(screen: &QuantizedRows, x: &[f32], m: usize) -> Option<Vec<f32>> {
        let q = Int8Matrix::new(&screen.q, screen.d, screen.v, Int8Scales::Tensor(1.0))?;
        let mut estimates = streamed_product(x, m, &q, None);
        for row in estimates.chunks_exact_mut(screen.v) {
            row.iter_mut()
                .zip(&screen.scales)
                .for_each(|(e, scale)| *e *= scale);
        }
        Some(estimates)
    }

    /// `out[j·m + r] = scales[j] · (x[r] · q[j])` for the rows `j` of `q`.
    fn estimate_rows(x: &[f32], m: usize, q: &[i8], scales: &[f32], d: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if d.is_multiple_of(16) && crate::flex_tensor::has_avx2_fma() {
            // SAFETY: the CPU has the features; `d` is a multiple of 16.
            if unsafe { estimate_rows_avx2_for(m, x, q, scales, d, out) } {
                return;
            }
        }
        for ((row, scale), out) in q.chunks_exact(d).zip(scales).zip(out.chunks_exact_mut(m)) {
            for (r, out) in out.iter_mut().enumerate() {
                let dot: f32 = x[r * d..(r + 1) * d]
                    .iter()
                    .zip(row)
                    .map(|(a, b)| a * f32::from(*b))
                    .sum();
                *out = scale * dot;
            }
        }
    }

    /// [`estimate_rows_avx2`] for `m` input rows, if `m` is one it takes (then `true`).
    ///
    /// # Safety
    /// As [`estimate_rows_avx2`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn estimate_rows_avx2_for(
        m: usize,
        x: &[f32],
        q: &[i8],
        scales: &[f32],
        d: usize,
        out: &mut [f32],
    ) -> bool {
        // SAFETY (each call): passed on from the caller.
        unsafe {
            match m {
                1 => estimate_rows_avx2::<1>(x, q, scales, d, out),
                2 => estimate_rows_avx2::<2>(x, q, scales, d, out),
                3 => estimate_rows_avx2::<3>(x, q, scales, d, out),
                4 => estimate_rows_avx2::<4>(x, q, scales, d, out),
                5 => estimate_rows_avx2::<5>(x, q, scales, d, out),
                6 => estimate_rows_avx2::<6>(x, q, scales, d, out),
                7 => estimate_rows_avx2::<7>(x, q, scales, d, out),
                8 => estimate_rows_avx2::<8>(x, q, scales, d, out),
                _ => return false,
            }
        }
        true
    }

    /// [`estimate_rows`] for `R` input rows with AVX2: 16 int8 weights widened to two 8-lane
    /// `f32` vectors per step, two accumulators per input row.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA, `d` be a multiple of 16, `x` hold `R` rows of `d` and
    /// `out` `R` values per row of `q`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn estimate_rows_avx2<const R: usize>(
        x: &[f32],
        q: &[i8],
        scales: &[f32],
        d: usize,
        out: &mut [f32],
    ) {
        use std::arch::x86_64::{
            __m128i, _mm256_add_ps, _mm256_cvtepi32_ps, _mm256_cvtepi8_epi32, _mm256_fmadd_ps,
            _mm256_loadu_ps, _mm256_setzero_ps, _mm_loadl_epi64, _mm_prefetch, _MM_HINT_T0,
        };
        assert!(x.len() == R * d && d.is_multiple_of(16) && q.len() == scales.len() * d);
        for ((row, scale), out) in q.chunks_exact(d).zip(scales).zip(out.chunks_exact_mut(R)) {
            let mut even = [_mm256_setzero_ps(); R];
            let mut odd = [_mm256_setzero_ps(); R];
            for c in (0..d).step_by(16) {
                if c % 64 == 0 {
                    let ahead = row.as_ptr().wrapping_add(c + PREFETCH_ROWS * d);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                }
                // SAFETY: `c + 16 <= d`, the length of `row` and of each input row; unaligned
                // 8-byte and 32-byte loads.
                unsafe {
                    let low = _mm_loadl_epi64(row.as_ptr().add(c).cast::<__m128i>());
                    let high = _mm_loadl_epi64(row.as_ptr().add(c + 8).cast::<__m128i>());
                    let w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(low));
                    let w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(high));
                    for r in 0..R {
                        let input = x.as_ptr().add(r * d + c);
                        even[r] = _mm256_fmadd_ps(_mm256_loadu_ps(input), w0, even[r]);
                        odd[r] = _mm256_fmadd_ps(_mm256_loadu_ps(input.add(8)), w1, odd[r]);
                    }
                }
            }
            for r in 0..R {
                out[r] = scale * crate::flex_tensor::sum_lanes_avx(_mm256_add_ps(even[r], odd[r]));
            }
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::tensor::{Distribution, Tensor, TensorData};
    use burn_flex::Flex;

    use super::ArgmaxScreen;
    use crate::few_rows_times_transposed;

    /// The full product's argmax per row with `banned` set to `-inf`, as greedy search takes it.
    fn full_argmax(
        rows: &Tensor<Flex, 2>,
        matrix: &Tensor<Flex, 2>,
        banned: &[(usize, u32)],
    ) -> Vec<u32> {
        let logits = few_rows_times_transposed(rows, matrix).expect("flex tensors");
        masked_argmax(logits, banned)
    }

    fn random(shape: [usize; 2]) -> Tensor<Flex, 2> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), &Default::default())
    }

    fn from_values(values: Vec<f32>, shape: [usize; 2]) -> Tensor<Flex, 2> {
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn check(rows: &Tensor<Flex, 2>, matrix: &Tensor<Flex, 2>, banned: &[(usize, u32)]) {
        let screen = ArgmaxScreen::new(matrix.clone()).expect("a finite flex matrix");
        let found = screen.argmax_rows(rows, banned).expect("screened");
        assert_eq!(found, full_argmax(rows, matrix, banned));
    }

    #[test]
    fn random_rows_pick_the_full_products_argmax_for_every_row_count() {
        let matrix = random([3000, 64]);
        for m in 1..=crate::FEW_ROWS_MAX {
            for _ in 0..8 {
                check(&random([m, 64]), &matrix, &[]);
            }
        }
    }

    #[test]
    fn a_width_without_whole_vectors_takes_the_scalar_kernels() {
        let matrix = random([700, 40]);
        for m in [1, 3] {
            for _ in 0..8 {
                check(&random([m, 40]), &matrix, &[]);
            }
        }
    }

    #[test]
    fn equal_rows_give_the_first_of_them() {
        // Rows 3, 9 and 11 are the same, and point where the input does.
        let (v, d) = (20, 32);
        let mut values: Vec<f32> = (0..v * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 400.0)
            .collect();
        for j in [3, 9, 11] {
            for c in 0..d {
                values[j * d + c] = 1.0 + c as f32 / 64.0;
            }
        }
        let matrix = from_values(values, [v, d]);
        let x = from_values((0..d).map(|c| 1.0 + c as f32 / 64.0).collect(), [1, d]);
        let screen = ArgmaxScreen::new(matrix.clone()).unwrap();
        assert_eq!(screen.argmax_rows(&x, &[]).unwrap(), [3]);
        assert_eq!(full_argmax(&x, &matrix, &[]), [3]);
        // Banning the first moves the pick to the next equal row.
        assert_eq!(screen.argmax_rows(&x, &[(0, 3)]).unwrap(), [9]);
    }

    #[test]
    fn rows_one_rounding_apart_are_told_apart_as_the_full_product_does() {
        // Every matrix row is the same base row with one element nudged by a few ulps, so the
        // logits differ in their last bits, far inside the int8 error.
        let (v, d) = (600, 64);
        let base: Vec<f32> = (0..d)
            .map(|c| ((c * 13 % 29) as f32 - 14.0) / 7.0)
            .collect();
        let mut values = Vec::with_capacity(v * d);
        for j in 0..v {
            let mut row = base.clone();
            let c = j % d;
            for _ in 0..(j % 5) {
                row[c] = f32::from_bits(row[c].to_bits() + 1);
            }
            values.extend(row);
        }
        let matrix = from_values(values, [v, d]);
        for m in [1, 2, 5] {
            for _ in 0..4 {
                check(&random([m, d]), &matrix, &[]);
            }
        }
    }

    #[test]
    fn banned_tokens_are_left_out() {
        let matrix = random([2000, 32]);
        let rows = random([2, 32]);
        let first = full_argmax(&rows, &matrix, &[]);
        let banned = [(0, first[0]), (1, first[1]), (1, 7), (5, 3), (0, 99_999)];
        check(&rows, &matrix, &banned);
        assert_ne!(full_argmax(&rows, &matrix, &banned), first);
    }

    #[test]
    fn what_needs_the_full_product_is_declined() {
        let matrix = random([4, 16]);
        let screen = ArgmaxScreen::new(matrix.clone()).unwrap();
        let all: Vec<(usize, u32)> = (0..4).map(|j| (0, j)).collect();
        assert!(screen.argmax_rows(&random([1, 16]), &all).is_none());
        let nan = from_values([vec![f32::NAN], vec![0.0; 15]].concat(), [1, 16]);
        assert!(screen.argmax_rows(&nan, &[]).is_none());
        let huge = from_values(vec![1e37; 16], [1, 16]);
        assert!(screen.argmax_rows(&huge, &[]).is_none());
        assert!(screen.argmax_rows(&random([1, 8]), &[]).is_none());
        assert!(screen
            .argmax_rows(&random([crate::FEW_ROWS_MAX + 1, 16]), &[])
            .is_none());
        let infinite = from_values([vec![f32::INFINITY], vec![0.0; 15]].concat(), [1, 16]);
        assert!(ArgmaxScreen::new(infinite).is_none());
    }

    #[test]
    fn a_zero_row_and_a_zero_input_are_handled() {
        let mut values: Vec<f32> = (0..10 * 16).map(|i| (i % 7) as f32 - 3.0).collect();
        values[32..48].fill(0.0);
        let matrix = from_values(values, [10, 16]);
        check(&from_values(vec![0.0; 16], [1, 16]), &matrix, &[]);
        check(&random([1, 16]), &matrix, &[]);
    }

    /// The argmax per row of a linear layer's streamed product `x · weight`, with bans.
    fn linear_argmax(
        rows: &Tensor<Flex, 2>,
        weight: &Tensor<Flex, 2>,
        banned: &[(usize, u32)],
    ) -> Vec<u32> {
        let logits = crate::streamed_product::try_flex_linear(rows, weight, None).unwrap();
        masked_argmax(logits, banned)
    }

    /// Greedy search's pick per row of `logits` with `banned` set to `-inf`.
    fn masked_argmax(logits: Tensor<Flex, 2>, banned: &[(usize, u32)]) -> Vec<u32> {
        let [m, v] = logits.dims();
        let mut values = logits.into_data().into_vec::<f32>().unwrap();
        for &(r, j) in banned.iter().filter(|(r, j)| *r < m && (*j as usize) < v) {
            values[r * v + j as usize] = f32::NEG_INFINITY;
        }
        let logits =
            Tensor::<Flex, 2>::from_data(TensorData::new(values, [m, v]), &Default::default());
        let ids = logits.argmax(1).into_data().convert::<i64>();
        ids.into_vec::<i64>()
            .unwrap()
            .into_iter()
            .map(|t| t as u32)
            .collect()
    }

    fn check_linear(rows: &Tensor<Flex, 2>, weight: &Tensor<Flex, 2>, banned: &[(usize, u32)]) {
        let screen = ArgmaxScreen::for_linear_weight(weight.clone()).expect("a finite flex weight");
        let found = screen.argmax_rows(rows, banned).expect("screened");
        assert_eq!(found, linear_argmax(rows, weight, banned));
    }

    /// A weight `[d, v]` whose columns come in near twins, closer than the int8 step.
    fn twin_columns(d: usize, v: usize) -> Tensor<Flex, 2> {
        let device = Default::default();
        let even = Tensor::<Flex, 2>::random([d, v / 2], Distribution::Normal(0.0, 1.0), &device);
        let odd =
            even.clone() + Tensor::random([d, v / 2], Distribution::Normal(0.0, 1e-3), &device);
        Tensor::stack::<3>(vec![even, odd], 2).reshape([d, v])
    }

    #[test]
    fn a_linear_weight_gives_its_streamed_products_argmax_over_several_blocks() {
        // 64 × 3008 f32 weights are 770 KB: the product splits them into blocks of rows.
        let weight = twin_columns(64, 3008);
        for m in 1..=crate::FEW_ROWS_MAX {
            for _ in 0..4 {
                check_linear(&random([m, 64]), &weight, &[]);
            }
        }
        let rows = random([2, 64]);
        let first = linear_argmax(&rows, &weight, &[]);
        check_linear(&rows, &weight, &[(0, first[0]), (1, first[1]), (1, 3)]);
    }

    #[test]
    fn a_linear_weight_without_whole_vectors_takes_the_scalar_kernels() {
        let weight = twin_columns(40, 330);
        for m in [1, 4] {
            for _ in 0..6 {
                check_linear(&random([m, 40]), &weight, &[]);
            }
        }
    }

    #[test]
    fn a_lora_layer_has_an_output_screen_only_while_its_forward_is_the_base_product() {
        use burn::nn::LinearConfig;

        use crate::{LoraConfig, LoraInit, LoraLinear};

        let device = Default::default();
        let config = LoraConfig::new(4, 8.0).with_init_lora_weights(LoraInit::Random);
        let base = LinearConfig::new(32, 48)
            .with_bias(false)
            .init::<Flex>(&device);
        let mut layer = LoraLinear::from_linear(base, &config).unwrap();
        assert!(layer.output_screen().is_none(), "an active adapter");
        layer.disable_adapters().unwrap();
        let screen = layer.output_screen().expect("the base product alone");
        let rows = random([3, 32]);
        let expected = masked_argmax(layer.forward(rows.clone()), &[]);
        assert_eq!(screen.argmax_rows(&rows, &[]).unwrap(), expected);
        let biased = LinearConfig::new(32, 48).init::<Flex>(&device);
        let mut biased = LoraLinear::from_linear(biased, &config).unwrap();
        biased.disable_adapters().unwrap();
        assert!(biased.output_screen().is_none(), "a bias");
    }
}
