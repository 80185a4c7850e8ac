//! The product `x · dequantize(W) + b` with an int8 weight, computed without materialising the
//! float weight: each group of 16 weights is widened to `f32` in registers and used at once.
//!
//! Burn 0.21 computes a quantized product by dequantizing the whole weight first (serially, on
//! the flex backend), which makes int8 inference slower than f32. Decoding multiplies one or a
//! few rows by each weight, so its cost is reading the weight: reading one byte per weight
//! instead of four is where int8 pays. Products over many rows are bound by arithmetic instead;
//! for them the weight is dequantized on all threads and multiplied by the backend's GEMM.
//!
//! Used by [`crate::LoraLinear`] on the flex backend (crate feature `flex`); other backends keep
//! Burn's own quantized product.

use burn::tensor::backend::Backend;
use burn::tensor::quantization::{QTensorPrimitive, QuantLevel};
use burn::tensor::Tensor;
use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::flex_tensor::has_avx512_fma;
use crate::flex_tensor::{float_primitive, quantized_primitive, row_major_f32, tensor_from_f32};
use crate::tensor_util::linear_flat;

/// Rows up to which the fused product is used; above it, the weight is dequantized first.
pub(crate) const FUSED_MAX_ROWS: usize = 16;

/// Multiply-adds per fused product below which the work stays on the calling thread. Waking
/// the pool costs more than it saves for a decoding step's products: on t5-small's shapes
/// (`benches/t5.rs`, `greedy_64_int8`, `beam4_32_int8`) every product of one to four rows ran
/// faster on one thread.
const PARALLEL_MIN_PRODUCTS: usize = 1 << 23;

/// Weights below which [`dequantize`] stays on the calling thread.
const PARALLEL_MIN_WEIGHTS: usize = 1 << 18;

/// The scales of an int8 matrix stored row-major as `[k, n]`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Int8Scales<'a> {
    /// One scale for the whole matrix.
    Tensor(f32),
    /// One scale per run of `size` consecutive weights (in row-major order) along `n`.
    Block { size: usize, scales: &'a [f32] },
}

/// A borrowed int8 matrix `[k, n]`, row-major, with its scales.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Int8Matrix<'a> {
    pub(crate) values: &'a [i8],
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) scales: Int8Scales<'a>,
}

impl<'a> Int8Matrix<'a> {
    /// Checks that the values and scales cover exactly `[k, n]`.
    pub(crate) fn new(
        values: &'a [i8],
        k: usize,
        n: usize,
        scales: Int8Scales<'a>,
    ) -> Option<Self> {
        if values.len() != k.checked_mul(n)? {
            return None;
        }
        if let Int8Scales::Block { size, scales } = scales {
            if size == 0 || !n.is_multiple_of(size) || scales.len() != values.len() / size {
                return None;
            }
        }
        Some(Self {
            values,
            k,
            n,
            scales,
        })
    }

    /// Writes the dequantized columns `start..start + out.len()` of row `i` into `out`; `start`
    /// and the width are multiples of the block size.
    #[inline(always)]
    fn dequantize_row_into(&self, i: usize, start: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if has_avx512_fma() && self.fills_vectors(out.len()) {
            // SAFETY: the CPU has AVX-512F, and `fills_vectors` holds.
            return unsafe { self.dequantize_row_avx512(i, start, out) };
        }
        self.dequantize_row_scalar(i, start, out)
    }

    fn dequantize_row_scalar(&self, i: usize, start: usize, out: &mut [f32]) {
        let offset = i * self.n + start;
        let row = &self.values[offset..offset + out.len()];
        match self.scales {
            Int8Scales::Tensor(scale) => {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = f32::from(v) * scale;
                }
            }
            Int8Scales::Block { size, scales } => {
                let blocks = out.chunks_mut(size).zip(row.chunks(size));
                for ((o, v), &scale) in blocks.zip(&scales[offset / size..]) {
                    for (o, &v) in o.iter_mut().zip(v) {
                        *o = f32::from(v) * scale;
                    }
                }
            }
        }
    }

    /// Whether a row run of `width` weights splits into whole 16-lane vectors of one scale
    /// each, with a block size (if any) of 16 times a power of two.
    fn fills_vectors(&self, width: usize) -> bool {
        width > 0
            && width.is_multiple_of(16)
            && match self.scales {
                Int8Scales::Tensor(_) => true,
                Int8Scales::Block { size, .. } => size >= 16 && (size / 16).is_power_of_two(),
            }
    }

    /// [`dequantize_row_scalar`](Self::dequantize_row_scalar) 16 weights at a time (the
    /// compiler does not vectorise the widening of short blocks by itself).
    ///
    /// # Safety
    /// The CPU must have AVX-512F, and [`fills_vectors`](Self::fills_vectors)`(out.len())`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    unsafe fn dequantize_row_avx512(&self, i: usize, start: usize, out: &mut [f32]) {
        use std::arch::x86_64::{
            __m128i, _mm512_cvtepi32_ps, _mm512_cvtepi8_epi32, _mm512_mul_ps, _mm512_set1_ps,
            _mm512_storeu_ps, _mm_loadu_si128,
        };
        let offset = i * self.n + start;
        let row = &self.values[offset..offset + out.len()];
        let (per_scale, scales): (usize, &[f32]) = match self.scales {
            Int8Scales::Tensor(ref scale) => (out.len(), std::slice::from_ref(scale)),
            Int8Scales::Block { size, scales } => (size, &scales[offset / size..]),
        };
        for ((out, row), &scale) in out
            .chunks_exact_mut(per_scale)
            .zip(row.chunks_exact(per_scale))
            .zip(scales)
        {
            let scale = _mm512_set1_ps(scale);
            for (out, row) in out.chunks_exact_mut(16).zip(row.chunks_exact(16)) {
                // SAFETY: both chunks hold exactly 16 elements; the accesses are unaligned.
                unsafe {
                    let bytes = _mm_loadu_si128(row.as_ptr().cast::<__m128i>());
                    let widened = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(bytes));
                    _mm512_storeu_ps(out.as_mut_ptr(), _mm512_mul_ps(widened, scale));
                }
            }
        }
    }
}

/// `x · W (+ bias)` for `x` row-major `[m, k]`, reading each weight once per call. Meant for
/// small `m` ([`FUSED_MAX_ROWS`]); the result is row-major `[m, n]`.
///
/// The weight rows are split into fixed ranges of [`TASK_ROWS`], one task each, whose partial
/// sums are added in order at the end; the tasks run on several threads only for products large
/// enough to pay for waking them ([`PARALLEL_MIN_PRODUCTS`]). The split does not depend on the
/// thread count, so neither does the result.
pub(crate) fn fused_product(
    x: &[f32],
    m: usize,
    weight: &Int8Matrix<'_>,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let (k, n) = (weight.k, weight.n);
    debug_assert_eq!(x.len(), m * k);
    if m == 0 || n == 0 || k == 0 {
        let mut out = vec![0f32; m * n];
        add_bias(&mut out, bias, n);
        return out;
    }
    let ranges: Vec<std::ops::Range<usize>> = (0..k)
        .step_by(TASK_ROWS)
        .map(|i| i..(i + TASK_ROWS).min(k))
        .collect();
    let run = |rows: &std::ops::Range<usize>| {
        let mut part = vec![0f32; m * n];
        accumulate(x, m, weight, rows.clone(), &mut part);
        part
    };
    let mut parts: Vec<Vec<f32>> = if ranges.len() > 1 && m * k * n >= PARALLEL_MIN_PRODUCTS {
        ranges.par_iter().map(run).collect()
    } else {
        ranges.iter().map(run).collect()
    };
    let mut out = parts.remove(0);
    for part in &parts {
        for (o, &p) in out.iter_mut().zip(part) {
            *o += p;
        }
    }
    add_bias(&mut out, bias, n);
    out
}

fn add_bias(out: &mut [f32], bias: Option<&[f32]>, n: usize) {
    if let (Some(bias), true) = (bias, n > 0) {
        for row in out.chunks_exact_mut(n) {
            for (o, &b) in row.iter_mut().zip(bias) {
                *o += b;
            }
        }
    }
}

/// Dequantizes the whole weight to row-major `f32` `[k, n]`, rows on all threads.
pub(crate) fn dequantize(weight: &Int8Matrix<'_>) -> Vec<f32> {
    let n = weight.n;
    let mut out = vec![0f32; weight.k * n];
    if n == 0 {
        return out;
    }
    let row = |(i, out): (usize, &mut [f32])| weight.dequantize_row_into(i, 0, out);
    if weight.values.len() >= PARALLEL_MIN_WEIGHTS {
        out.par_chunks_mut(n).enumerate().for_each(row);
    } else {
        out.chunks_mut(n).enumerate().for_each(row);
    }
    out
}

/// Weight rows per task of [`fused_product`].
const TASK_ROWS: usize = 128;

/// Weight rows whose contributions are summed in registers before the partial sums in memory
/// are updated: as many sequential streams as the hardware prefetcher follows well.
const ROW_CHUNK: usize = 8;

/// `part[r, ·] += Σ_{i ∈ rows} x[r, i] · W[i, ·]`, on the widest SIMD level the CPU has.
fn accumulate(
    x: &[f32],
    m: usize,
    weight: &Int8Matrix<'_>,
    rows: std::ops::Range<usize>,
    part: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if has_avx512_fma() && weight.fills_vectors(weight.n) {
        // SAFETY: the CPU has the features, and the rows split into whole vectors.
        return unsafe { accumulate_avx512(x, m, weight, rows, part) };
    }
    let n = weight.n;
    let mut row = vec![0f32; n];
    for i in rows {
        weight.dequantize_row_scalar(i, 0, &mut row);
        for (r, part) in part.chunks_exact_mut(n).enumerate() {
            let a = x[r * weight.k + i];
            for (o, &w) in part.iter_mut().zip(&row) {
                *o += a * w;
            }
        }
    }
}

/// [`accumulate`] with AVX-512, up to four input rows at a time: for each [`ROW_CHUNK`] weight
/// rows and 64 columns, the sums stay in registers; each 16 weights are widened once and used
/// by every input row, their scale folded into the input.
///
/// # Safety
/// The CPU must have AVX-512F and FMA, and `weight.fills_vectors(weight.n)` must hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn accumulate_avx512(
    x: &[f32],
    m: usize,
    weight: &Int8Matrix<'_>,
    rows: std::ops::Range<usize>,
    part: &mut [f32],
) {
    let (k, n) = (weight.k, weight.n);
    assert!(part.len() == m * n && x.len() == m * k && rows.end <= k);
    for first in (0..m).step_by(4) {
        let count = (m - first).min(4);
        let x = &x[first * k..(first + count) * k];
        let part = &mut part[first * n..(first + count) * n];
        let mut i = rows.start;
        while i < rows.end {
            let chunk = i..(i + ROW_CHUNK).min(rows.end);
            // SAFETY: the caller's conditions hold; `x` and `part` hold `count` rows.
            unsafe {
                match count {
                    1 => row_chunk::<1>(x, weight, chunk, part),
                    2 => row_chunk::<2>(x, weight, chunk, part),
                    3 => row_chunk::<3>(x, weight, chunk, part),
                    _ => row_chunk::<4>(x, weight, chunk, part),
                }
            }
            i += ROW_CHUNK;
        }
    }
}

/// `part[r, ·] += Σ_{i ∈ rows} x[r, i] · W[i, ·]` for `R` input rows, 64 (then 16) columns at
/// a time with the sums in registers.
///
/// # Safety
/// As [`accumulate_avx512`]; `x` holds `R` rows of `k` and `part` `R` rows of `n`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn row_chunk<const R: usize>(
    x: &[f32],
    weight: &Int8Matrix<'_>,
    rows: std::ops::Range<usize>,
    part: &mut [f32],
) {
    let n = weight.n;
    let mut column = 0;
    while column + 64 <= n {
        // SAFETY: passed on; `column + 64 <= n`.
        unsafe { column_group::<R, 4>(x, weight, rows.clone(), column, part) };
        column += 64;
    }
    while column < n {
        // SAFETY: passed on; `n` is a multiple of 16, so `column + 16 <= n`.
        unsafe { column_group::<R, 1>(x, weight, rows.clone(), column, part) };
        column += 16;
    }
}

/// The sums of `R` input rows over weight rows `rows` for columns `column..column + 16·G`,
/// added into `part`.
///
/// # Safety
/// As [`row_chunk`], and `column + 16·G <= n`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
#[inline]
unsafe fn column_group<const R: usize, const G: usize>(
    x: &[f32],
    weight: &Int8Matrix<'_>,
    rows: std::ops::Range<usize>,
    column: usize,
    part: &mut [f32],
) {
    use std::arch::x86_64::{
        __m128i, __m512, _mm512_add_ps, _mm512_cvtepi32_ps, _mm512_cvtepi8_epi32, _mm512_fmadd_ps,
        _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps, _mm_loadu_si128,
        _mm_prefetch, _MM_HINT_T0,
    };
    let (k, n) = (weight.k, weight.n);
    assert!(x.len() == R * k && part.len() == R * n && column + 16 * G <= n);
    // The scale of weight `(i, j)`: one per tensor, or one per block of `1 << shift`.
    let (scales, shift): (&[f32], u32) = match weight.scales {
        Int8Scales::Tensor(ref scale) => (std::slice::from_ref(scale), usize::BITS - 1),
        Int8Scales::Block { size, scales } => (scales, size.trailing_zeros()),
    };
    let per_tensor = matches!(weight.scales, Int8Scales::Tensor(_));
    let mut sums = [[_mm512_setzero_ps(); G]; R];
    for i in rows {
        let offset = i * n + column;
        let bytes = &weight.values[offset..offset + 16 * G];
        // The same columns of the next chunk's row: the chunk's rows are read as interleaved
        // streams, which the hardware prefetcher alone follows at a fraction of the bandwidth.
        let ahead = bytes.as_ptr().wrapping_add(ROW_CHUNK * n);
        _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
        for g in 0..G {
            let scale = if per_tensor {
                scales[0]
            } else {
                scales[(offset + 16 * g) >> shift]
            };
            // SAFETY: `bytes` holds `16·G` bytes; the load is unaligned.
            let group = unsafe { _mm_loadu_si128(bytes.as_ptr().add(16 * g).cast::<__m128i>()) };
            let w: __m512 = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(group));
            for (r, sums) in sums.iter_mut().enumerate() {
                let input = _mm512_set1_ps(x[r * k + i] * scale);
                sums[g] = _mm512_fmadd_ps(input, w, sums[g]);
            }
        }
    }
    for (r, sums) in sums.iter().enumerate() {
        for (g, &sum) in sums.iter().enumerate() {
            let start = r * n + column + 16 * g;
            let out = &mut part[start..start + 16];
            // SAFETY: `out` holds 16 floats; the accesses are unaligned.
            unsafe {
                let previous = _mm512_loadu_ps(out.as_ptr());
                _mm512_storeu_ps(out.as_mut_ptr(), _mm512_add_ps(previous, sum));
            }
        }
    }
}

/// `x · W + b` for a flex-backend `x` and an int8 `weight`, or `None` when the tensors are not
/// the flex backend's contiguous `f32` / int8 ones (the caller then uses Burn's product).
pub(crate) fn try_flex_linear<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Option<Tensor<B, D>> {
    let q = quantized_primitive(weight)?;
    let [k, n] = weight.dims();
    let values = q.tensor().as_slice::<i8>()?;
    let scales = match q.scheme().level {
        QuantLevel::Tensor => Int8Scales::Tensor(*q.scales().first()?),
        QuantLevel::Block(block) => Int8Scales::Block {
            size: block.num_elements(),
            scales: q.scales(),
        },
    };
    let matrix = Int8Matrix::new(values, k, n, scales)?;

    let dims = x.dims();
    let m = dims[..D - 1].iter().product::<usize>();
    if dims[D - 1] != k {
        return None;
    }
    if m > FUSED_MAX_ROWS {
        let weight = tensor_from_f32::<B, 2>(dequantize(&matrix), [k, n])?;
        return Some(linear_flat(x.clone(), weight, bias.cloned()));
    }
    let x_flex = float_primitive(x)?;
    let x_values = row_major_f32(&x_flex)?;
    let bias_flex = match bias {
        Some(bias) => Some(float_primitive(bias)?),
        None => None,
    };
    let bias_values = match &bias_flex {
        Some(bias) => Some(row_major_f32(bias)?),
        None => None,
    };
    let out = fused_product(&x_values, m, &matrix, bias_values.as_deref());
    let mut out_dims = dims;
    out_dims[D - 1] = n;
    tensor_from_f32(out, out_dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], m: usize, w: &Int8Matrix<'_>, bias: Option<&[f32]>) -> Vec<f64> {
        let dense = dequantize(w);
        let mut out = vec![0f64; m * w.n];
        for r in 0..m {
            for j in 0..w.n {
                let mut sum = bias.map_or(0.0, |b| f64::from(b[j]));
                for i in 0..w.k {
                    sum += f64::from(x[r * w.k + i]) * f64::from(dense[i * w.n + j]);
                }
                out[r * w.n + j] = sum;
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<i8> {
        (0..len)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 24) as i8)
            .collect()
    }

    fn inputs(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
            .collect()
    }

    fn assert_close(found: &[f32], expected: &[f64]) {
        assert_eq!(found.len(), expected.len());
        let scale = expected.iter().fold(1.0f64, |s, v| s.max(v.abs()));
        for (i, (&f, &e)) in found.iter().zip(expected).enumerate() {
            assert!(
                (f64::from(f) - e).abs() <= 1e-5 * scale,
                "element {i}: {f} against {e} (scale {scale})"
            );
        }
    }

    #[test]
    fn fused_block_scaled_product_matches_the_dequantized_one() {
        let (k, n, m, size) = (300, 544, 3, 32);
        let q = values(k * n, 7);
        let scales: Vec<f32> = (0..k * n / size)
            .map(|b| 0.001 + (b % 13) as f32 * 1e-4)
            .collect();
        let w = Int8Matrix::new(
            &q,
            k,
            n,
            Int8Scales::Block {
                size,
                scales: &scales,
            },
        )
        .unwrap();
        let x = inputs(m * k);
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.01).collect();
        assert_close(
            &fused_product(&x, m, &w, Some(&bias)),
            &reference(&x, m, &w, Some(&bias)),
        );
    }

    #[test]
    fn fused_tensor_scaled_product_matches_the_dequantized_one() {
        let (k, n, m) = (64, 100, 1);
        let q = values(k * n, 3);
        let w = Int8Matrix::new(&q, k, n, Int8Scales::Tensor(0.02)).unwrap();
        let x = inputs(m * k);
        assert_close(&fused_product(&x, m, &w, None), &reference(&x, m, &w, None));
    }

    #[test]
    fn dequantize_applies_each_block_scale() {
        let q = [1i8, -2, 3, -4, 5, -6];
        let scales = [0.5f32, 2.0, 10.0];
        let w = Int8Matrix::new(
            &q,
            3,
            2,
            Int8Scales::Block {
                size: 2,
                scales: &scales,
            },
        )
        .unwrap();
        assert_eq!(dequantize(&w), vec![0.5, -1.0, 6.0, -8.0, 50.0, -60.0]);
    }

    mod on_flex {
        use burn::module::ModuleMapper;
        use burn::tensor::{Distribution, Tensor};
        use burn_flex::Flex;

        use super::super::try_flex_linear;
        use crate::int8_quantizer;
        use crate::tensor_util::linear_flat;

        fn host(t: Tensor<Flex, 3>) -> Vec<f32> {
            t.into_data().into_vec::<f32>().unwrap()
        }

        /// The flex product against Burn's: dequantize, then multiply.
        fn check(rows: usize, block: Option<u8>, bias: bool) {
            let device = Default::default();
            let (k, n) = (96, 320);
            let x =
                Tensor::<Flex, 3>::random([1, rows, k], Distribution::Uniform(-1.0, 1.0), &device);
            let w = Tensor::<Flex, 2>::random([k, n], Distribution::Uniform(-0.2, 0.2), &device);
            let b = bias.then(|| Tensor::<Flex, 1>::random([n], Distribution::Default, &device));
            let mut quantizer = int8_quantizer::<Flex>(block);
            let q = ModuleMapper::<Flex>::map_float(
                &mut quantizer,
                burn::module::Param::from_tensor(w),
            )
            .val();
            let expected = host(linear_flat(x.clone(), q.clone().dequantize(), b.clone()));
            let found = host(try_flex_linear(&x, &q, b.as_ref()).expect("the flex path applies"));
            let scale = expected.iter().fold(1.0f32, |s, v| s.max(v.abs()));
            for (i, (f, e)) in found.iter().zip(&expected).enumerate() {
                assert!(
                    (f - e).abs() <= 1e-5 * scale,
                    "{rows} rows, element {i}: {f} against {e}"
                );
            }
        }

        #[test]
        fn one_row_with_block_scales_and_bias() {
            check(1, Some(32), true);
        }

        #[test]
        fn the_largest_fused_batch_with_one_scale() {
            check(super::super::FUSED_MAX_ROWS, None, false);
        }

        #[test]
        fn many_rows_take_the_dequantized_product() {
            check(super::super::FUSED_MAX_ROWS + 25, Some(32), true);
        }

        #[test]
        fn float_weights_are_left_to_burn() {
            let device = Default::default();
            let x = Tensor::<Flex, 3>::ones([1, 2, 4], &device);
            let w = Tensor::<Flex, 2>::ones([4, 3], &device);
            assert!(try_flex_linear(&x, &w, None).is_none());
        }
    }

    #[test]
    fn mismatched_scales_are_refused() {
        let q = [0i8; 12];
        assert!(Int8Matrix::new(
            &q,
            3,
            4,
            Int8Scales::Block {
                size: 3,
                scales: &[1.0; 4]
            }
        )
        .is_none());
        assert!(Int8Matrix::new(
            &q,
            3,
            4,
            Int8Scales::Block {
                size: 2,
                scales: &[1.0; 5]
            }
        )
        .is_none());
        assert!(Int8Matrix::new(&q, 4, 4, Int8Scales::Tensor(1.0)).is_none());
    }
}
