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
use crate::flex_tensor::{has_avx2_fma, has_avx512_fma};
use crate::flex_tensor::{quantized_primitive, tensor_from_f32};
use crate::streamed_product::{streamed_linear, StreamedWeight};
use crate::tensor_util::linear_flat;

/// Rows up to which the fused product is used; above it, the weight is dequantized first.
pub(crate) const FUSED_MAX_ROWS: usize = 16;

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
        if self.fills_vectors(out.len()) {
            if has_avx512_fma() {
                // SAFETY: the CPU has AVX-512F, and `fills_vectors` holds.
                return unsafe { self.dequantize_row_avx512(i, start, out) };
            }
            if has_avx2_fma() {
                // SAFETY: the CPU has AVX2, and `fills_vectors` holds.
                return unsafe { self.dequantize_row_avx2(i, start, out) };
            }
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

    /// [`dequantize_row_avx512`](Self::dequantize_row_avx512) 16 weights at a time with AVX2.
    ///
    /// # Safety
    /// The CPU must have AVX2, and [`fills_vectors`](Self::fills_vectors)`(out.len())`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn dequantize_row_avx2(&self, i: usize, start: usize, out: &mut [f32]) {
        use std::arch::x86_64::_mm256_storeu_ps;
        let offset = i * self.n + start;
        assert!(offset + out.len() <= self.values.len());
        for (g, out) in out.chunks_exact_mut(16).enumerate() {
            // SAFETY: the caller's conditions make every run of 16 from a multiple of 16 one
            // group of one scale, within the values (asserted); `out` holds 16 floats, stored
            // unaligned.
            unsafe {
                let [low, high] = self.group_avx2(offset + 16 * g);
                _mm256_storeu_ps(out.as_mut_ptr(), low);
                _mm256_storeu_ps(out.as_mut_ptr().add(8), high);
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

impl StreamedWeight for Int8Matrix<'_> {
    const BYTES_PER_WEIGHT: usize = 1;

    fn shape(&self) -> [usize; 2] {
        [self.k, self.n]
    }

    fn fills_vectors(&self) -> bool {
        Int8Matrix::fills_vectors(self, self.n)
    }

    fn row_into(&self, i: usize, start: usize, out: &mut [f32]) {
        self.dequantize_row_scalar(i, start, out)
    }

    fn address(&self, offset: usize) -> *const u8 {
        self.values.as_ptr().wrapping_add(offset).cast()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn group(&self, offset: usize) -> (std::arch::x86_64::__m512, f32) {
        use std::arch::x86_64::{
            __m128i, _mm512_cvtepi32_ps, _mm512_cvtepi8_epi32, _mm_loadu_si128,
        };
        let scale = match self.scales {
            Int8Scales::Tensor(scale) => scale,
            Int8Scales::Block { size, scales } => scales[offset >> size.trailing_zeros()],
        };
        let bytes = &self.values[offset..offset + 16];
        // SAFETY: the caller guarantees AVX-512F; `bytes` holds 16 bytes, loaded unaligned.
        let widened = unsafe {
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(
                bytes.as_ptr().cast::<__m128i>(),
            )))
        };
        (widened, scale)
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn group_avx2(&self, offset: usize) -> [std::arch::x86_64::__m256; 2] {
        use std::arch::x86_64::{
            __m128i, _mm256_cvtepi32_ps, _mm256_cvtepi8_epi32, _mm256_mul_ps, _mm256_set1_ps,
            _mm_loadu_si128, _mm_unpackhi_epi64,
        };
        debug_assert!(offset + 16 <= self.values.len());
        // SAFETY: the caller guarantees `offset + 16 <= k·n`, and that `offset` is a multiple
        // of 16 from which 16 weights share one scale, so the scale index is within `scales`.
        let scale = unsafe {
            match self.scales {
                Int8Scales::Tensor(scale) => scale,
                Int8Scales::Block { size, scales } => {
                    *scales.get_unchecked(offset >> size.trailing_zeros())
                }
            }
        };
        let scale = _mm256_set1_ps(scale);
        // SAFETY: the caller guarantees AVX2; 16 bytes from `offset`, loaded unaligned.
        unsafe {
            let bytes = _mm_loadu_si128(self.values.as_ptr().add(offset).cast::<__m128i>());
            [
                _mm256_cvtepi8_epi32(bytes),
                _mm256_cvtepi8_epi32(_mm_unpackhi_epi64(bytes, bytes)),
            ]
            .map(|half| _mm256_mul_ps(_mm256_cvtepi32_ps(half), scale))
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
    streamed_linear(x, &matrix, bias)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streamed_product::streamed_product;

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

    /// The AVX2 forms called directly (so that they are tested on CPUs whose dispatch picks
    /// AVX-512): dequantized rows equal the scalar ones exactly, and the streamed kernel's
    /// products match the dequantized product, with block and tensor scales.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_forms_match_the_scalar_ones() {
        if !has_avx2_fma() {
            return;
        }
        let (k, n) = (40, 96);
        let q = values(k * n, 3);
        let block_scales: Vec<f32> = (0..k * n / 32).map(|b| 0.01 + b as f32 * 1e-3).collect();
        for scales in [
            Int8Scales::Block {
                size: 32,
                scales: &block_scales,
            },
            Int8Scales::Tensor(0.02),
        ] {
            let w = Int8Matrix::new(&q, k, n, scales).unwrap();
            for i in [0, 17, k - 1] {
                let (mut vector, mut scalar) = (vec![0f32; 64], vec![0f32; 64]);
                // SAFETY: the CPU has AVX2; 64 columns from 32 split into whole blocks.
                unsafe { w.dequantize_row_avx2(i, 32, &mut vector) };
                w.dequantize_row_scalar(i, 32, &mut scalar);
                assert_eq!(vector, scalar, "row {i}");
            }
            for m in 1..=4 {
                let x = inputs(m * k);
                let mut part = vec![0f32; m * n];
                // SAFETY: as above; `n` is a multiple of 16 and the columns start at 0.
                unsafe {
                    crate::streamed_product::accumulate_avx2(&x, m, &w, 0..k, 0..n, &mut part);
                }
                assert_close(&part, &reference(&x, m, &w, None));
            }
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
            &streamed_product(&x, m, &w, Some(&bias)),
            &reference(&x, m, &w, Some(&bias)),
        );
    }

    #[test]
    fn fused_tensor_scaled_product_matches_the_dequantized_one() {
        let (k, n, m) = (64, 100, 1);
        let q = values(k * n, 3);
        let w = Int8Matrix::new(&q, k, n, Int8Scales::Tensor(0.02)).unwrap();
        let x = inputs(m * k);
        assert_close(
            &streamed_product(&x, m, &w, None),
            &reference(&x, m, &w, None),
        );
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
