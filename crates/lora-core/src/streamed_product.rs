//! `x · W (+ b)` for a few rows `x` and a row-major weight `W` `[k, n]`, reading each weight
//! once per call: the products of decoding.
//!
//! A decoding step multiplies one row (or one per beam) by every weight of the model, so its
//! time is the time of reading the weights from memory. The backend's GEMM, built for many rows,
//! reads t5-small's decoder weights at about 16 GB/s where the machine streams 25–30 GB/s on two
//! cores (BENCHMARKS.md). Here [`ROW_CHUNK`] weight rows at a time are read as parallel streams,
//! and each group of 16 weights is used by every input row while it is in registers.
//!
//! The weight rows are split between threads in fixed blocks of consecutive rows, so that each
//! thread reads one contiguous stretch of memory. Split by columns instead, each thread reading
//! every other half-row, t5-small-sized greedy decoding was 4% slower and 4-beam decoding 1%
//! slower in f32 (2% and 5% in int8; medians of runs alternating both versions in one process
//! of `examples/t5_decode_profile.rs` on an AVX2 machine, BENCHMARKS.md). Each block's sums are
//! added in block order, whichever thread computed them, so the result does not depend on the
//! thread count.
//!
//! The weight is `f32` ([`F32Matrix`]) or int8 with its scales (`crate::int8_product`): both
//! implement [`StreamedWeight`], which loads 16 weights at a time with AVX-512 and 8 with AVX2.

#[cfg(target_arch = "x86_64")]
use crate::flex_tensor::{has_avx2_fma, has_avx512_fma};

/// Weight rows whose contributions are summed in registers before the sums in memory are
/// updated: as many sequential streams as the hardware prefetcher follows well.
const ROW_CHUNK: usize = 8;

/// Weight bytes from which a product is split between threads. Decoding a t5-small-sized model
/// (`examples/t5_decode_profile.rs`) ran equally fast with 32 KiB, 128 KiB and 512 KiB, in f32
/// and int8, and slower with no split at all.
const PARALLEL_MIN_WEIGHT_BYTES: usize = 1 << 17;

/// Weight bytes per task of a split product, at most: t5-small-sized greedy decoding took 1–4%
/// longer with 128 KiB, 256 KiB or 1 MiB (paired runs, BENCHMARKS.md).
const BLOCK_BYTES: usize = 1 << 19;

/// A row-major weight `[k, n]` read 16 weights at a time by [`streamed_product`].
pub(crate) trait StreamedWeight: Sync {
    /// Bytes per stored weight (what the prefetching steps by).
    const BYTES_PER_WEIGHT: usize;

    /// `[k, n]`.
    fn shape(&self) -> [usize; 2];

    /// Whether every run of 16 weights along a row from a column that is a multiple of 16
    /// shares one scale and `n` is a multiple of 16: the condition of the vector kernel.
    fn fills_vectors(&self) -> bool;

    /// Writes the weights of row `i`, columns `start..start + out.len()`, as `f32`.
    fn row_into(&self, i: usize, start: usize, out: &mut [f32]);

    /// The address of the weight at row-major `offset` (prefetched, never read through).
    fn address(&self, offset: usize) -> *const u8;

    /// The 16 weights from row-major `offset`, unscaled, and their scale.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, [`fills_vectors`](Self::fills_vectors) must hold, `offset`
    /// be a multiple of 16 and `offset + 16 <= k·n`.
    #[cfg(target_arch = "x86_64")]
    unsafe fn group(&self, offset: usize) -> (std::arch::x86_64::__m512, f32);

    /// The 16 weights from row-major `offset` as two 8-lane halves, scaled (the AVX2 kernel
    /// uses each group for every input row, so the scale is applied to the weights, once).
    ///
    /// # Safety
    /// As [`group`](Self::group), with AVX2 in place of AVX-512F.
    #[cfg(target_arch = "x86_64")]
    unsafe fn group_avx2(&self, offset: usize) -> [std::arch::x86_64::__m256; 2];
}

/// A borrowed `f32` matrix `[k, n]`, row-major.
#[derive(Clone, Copy, Debug)]
pub(crate) struct F32Matrix<'a> {
    values: &'a [f32],
    k: usize,
    n: usize,
}

impl<'a> F32Matrix<'a> {
    /// The matrix, if `values` holds exactly `k · n` weights.
    pub(crate) fn new(values: &'a [f32], k: usize, n: usize) -> Option<Self> {
        (values.len() == k.checked_mul(n)?).then_some(Self { values, k, n })
    }
}

impl StreamedWeight for F32Matrix<'_> {
    const BYTES_PER_WEIGHT: usize = 4;

    fn shape(&self) -> [usize; 2] {
        [self.k, self.n]
    }

    fn fills_vectors(&self) -> bool {
        self.n.is_multiple_of(16)
    }

    fn row_into(&self, i: usize, start: usize, out: &mut [f32]) {
        let offset = i * self.n + start;
        out.copy_from_slice(&self.values[offset..offset + out.len()]);
    }

    fn address(&self, offset: usize) -> *const u8 {
        self.values.as_ptr().wrapping_add(offset).cast()
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn group(&self, offset: usize) -> (std::arch::x86_64::__m512, f32) {
        let group = &self.values[offset..offset + 16];
        // SAFETY: the caller guarantees AVX-512F; `group` holds 16 floats, loaded unaligned.
        (
            unsafe { std::arch::x86_64::_mm512_loadu_ps(group.as_ptr()) },
            1.0,
        )
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn group_avx2(&self, offset: usize) -> [std::arch::x86_64::__m256; 2] {
        use std::arch::x86_64::_mm256_loadu_ps;
        debug_assert!(offset + 16 <= self.values.len());
        // SAFETY: the caller guarantees AVX2 and `offset + 16 <= k·n`; unaligned loads.
        unsafe {
            let group = self.values.as_ptr().add(offset);
            [_mm256_loadu_ps(group), _mm256_loadu_ps(group.add(8))]
        }
    }
}

/// `x · W (+ bias)` for `x` row-major `[m, k]`; the result is row-major `[m, n]`. Meant for a
/// few rows: the weight is read once per four input rows.
pub(crate) fn streamed_product<W: StreamedWeight>(
    x: &[f32],
    m: usize,
    weight: &W,
    bias: Option<&[f32]>,
) -> Vec<f32> {
    let [k, n] = weight.shape();
    debug_assert_eq!(x.len(), m * k);
    let mut out = sum_of_blocks(x, m, weight, 0..n, true);
    if let Some(bias) = bias {
        for row in out.chunks_exact_mut(n.max(1)) {
            row.iter_mut().zip(bias).for_each(|(o, &b)| *o += b);
        }
    }
    out
}

/// The columns `columns` of [`streamed_product`]`(x, m, weight, None)`, bit for bit, reading
/// only those columns of the weight: the same blocks of rows, each column's sums formed in the
/// same order by the same kernel (whose arithmetic per column does not depend on how many
/// columns it covers), added in the same block order. Row-major `[m, columns.len()]`.
///
/// `columns.start` must be a multiple of 16 and, when `weight.fills_vectors()`, so must the
/// width, as for the full product's kernel.
pub(crate) fn streamed_product_columns<W: StreamedWeight>(
    x: &[f32],
    m: usize,
    weight: &W,
    columns: std::ops::Range<usize>,
) -> Vec<f32> {
    debug_assert!(columns.start.is_multiple_of(16));
    sum_of_blocks(x, m, weight, columns, false)
}

/// `x · W[·, columns]`, row-major `[m, columns.len()]`: each block of [`row_blocks`] summed by
/// [`accumulate`], on the compute threads when `parallel`, and the blocks' sums added in block
/// order. The one place that order is fixed, for [`streamed_product`] and
/// [`streamed_product_columns`] alike.
fn sum_of_blocks<W: StreamedWeight>(
    x: &[f32],
    m: usize,
    weight: &W,
    columns: std::ops::Range<usize>,
    parallel: bool,
) -> Vec<f32> {
    let [k, n] = weight.shape();
    debug_assert!(x.len() == m * k && columns.end <= n);
    let width = columns.len();
    let mut out = vec![0f32; m * width];
    if m == 0 || width == 0 || k == 0 {
        return out;
    }
    let blocks = row_blocks(k, n * W::BYTES_PER_WEIGHT);
    if blocks.len() == 1 {
        accumulate(x, m, weight, 0..k, columns, &mut out);
        return out;
    }
    let block_sum = |b: usize| {
        let mut part = vec![0f32; m * width];
        accumulate(x, m, weight, blocks[b].clone(), columns.clone(), &mut part);
        part
    };
    let parts: Vec<Vec<f32>> = if parallel {
        crate::compute_threads::map_tasks(blocks.len(), block_sum)
    } else {
        (0..blocks.len()).map(block_sum).collect()
    };
    for part in &parts {
        out.iter_mut().zip(part).for_each(|(o, &p)| *o += p);
    }
    out
}

/// The weight rows of the tasks: consecutive blocks of [`BLOCK_BYTES`] or half the weight,
/// whichever is less, rounded up to whole [`ROW_CHUNK`]s; one block for weights under
/// [`PARALLEL_MIN_WEIGHT_BYTES`]. They depend on the shape alone, not on the thread count.
fn row_blocks(k: usize, row_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let weight_bytes = k * row_bytes;
    let rows = if weight_bytes < PARALLEL_MIN_WEIGHT_BYTES {
        k
    } else {
        let block_bytes = BLOCK_BYTES.min(weight_bytes / 2);
        block_bytes.div_ceil(row_bytes).div_ceil(ROW_CHUNK) * ROW_CHUNK
    };
    (0..k)
        .step_by(rows.max(1))
        .map(|start| start..(start + rows).min(k))
        .collect()
}

/// `part[r, ·] = Σ_{i ∈ rows} x[r, i] · W[i, columns]`, `part` row-major `[m, columns.len()]`
/// and zero.
fn accumulate<W: StreamedWeight>(
    x: &[f32],
    m: usize,
    weight: &W,
    rows: std::ops::Range<usize>,
    columns: std::ops::Range<usize>,
    part: &mut [f32],
) {
    let [k, _] = weight.shape();
    let width = columns.len();
    #[cfg(target_arch = "x86_64")]
    if weight.fills_vectors() && columns.start.is_multiple_of(16) {
        if has_avx512_fma() {
            // SAFETY: the CPU has the features; the columns split into whole vectors of one
            // scale.
            return unsafe { accumulate_avx512(x, m, weight, rows, columns, part) };
        }
        if has_avx2_fma() {
            // SAFETY: as above.
            return unsafe { accumulate_avx2(x, m, weight, rows, columns, part) };
        }
    }
    let mut row = vec![0f32; width];
    for i in rows {
        weight.row_into(i, columns.start, &mut row);
        for (r, part) in part.chunks_exact_mut(width).enumerate() {
            let a = x[r * k + i];
            part.iter_mut().zip(&row).for_each(|(o, &w)| *o += a * w);
        }
    }
}

/// [`accumulate`] with AVX-512, four input rows at a time: for each [`ROW_CHUNK`] weight rows
/// and 64 columns the sums stay in registers, and each 16 weights are loaded once for every
/// input row, their scale folded into the input.
///
/// # Safety
/// The CPU must have AVX-512F and FMA, `weight.fills_vectors()` hold and `columns.start` be a
/// multiple of 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,fma")]
unsafe fn accumulate_avx512<W: StreamedWeight>(
    x: &[f32],
    m: usize,
    weight: &W,
    rows: std::ops::Range<usize>,
    columns: std::ops::Range<usize>,
    part: &mut [f32],
) {
    for_each_chunk(x, m, weight, rows, columns, part, |chunk, count, part| {
        // SAFETY: the caller's conditions hold; `x` and `part` hold `count` rows.
        unsafe {
            match count {
                1 => chunk.add_into::<1>(part),
                2 => chunk.add_into::<2>(part),
                3 => chunk.add_into::<3>(part),
                _ => chunk.add_into::<4>(part),
            }
        }
    })
}

/// [`accumulate_avx512`] with AVX2's 8-lane registers: as many columns per step as keep the
/// sums of the input rows in registers (64 for one row, 32 for two, 16 for three or four).
///
/// # Safety
/// The CPU must have AVX2 and FMA, `weight.fills_vectors()` hold and `columns.start` be a
/// multiple of 16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
pub(crate) unsafe fn accumulate_avx2<W: StreamedWeight>(
    x: &[f32],
    m: usize,
    weight: &W,
    rows: std::ops::Range<usize>,
    columns: std::ops::Range<usize>,
    part: &mut [f32],
) {
    for_each_chunk(x, m, weight, rows, columns, part, |chunk, count, part| {
        // SAFETY: the caller's conditions hold; `x` and `part` hold `count` rows.
        unsafe {
            match count {
                1 => chunk.add_into_avx2::<1, 4>(part),
                2 => chunk.add_into_avx2::<2, 2>(part),
                3 => chunk.add_into_avx2::<3, 1>(part),
                _ => chunk.add_into_avx2::<4, 1>(part),
            }
        }
    })
}

/// Calls `add(chunk, count, part)` for each [`ROW_CHUNK`] weight rows of each run of up to four
/// input rows (`count` of them), with `part` the rows of the sums those input rows own: the
/// order in which the vector kernels visit the weight.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn for_each_chunk<W: StreamedWeight>(
    x: &[f32],
    m: usize,
    weight: &W,
    rows: std::ops::Range<usize>,
    columns: std::ops::Range<usize>,
    part: &mut [f32],
    mut add: impl FnMut(&Chunk<'_, W>, usize, &mut [f32]),
) {
    let [k, n] = weight.shape();
    let width = columns.len();
    assert!(part.len() == m * width && x.len() == m * k && columns.end <= n && rows.end <= k);
    for first in (0..m).step_by(4) {
        let count = (m - first).min(4);
        let x = &x[first * k..(first + count) * k];
        let part = &mut part[first * width..(first + count) * width];
        for start in rows.clone().step_by(ROW_CHUNK) {
            let chunk = Chunk {
                x,
                weight,
                rows: start..(start + ROW_CHUNK).min(rows.end),
                columns: columns.clone(),
            };
            add(&chunk, count, part);
        }
    }
}

/// Some weight rows and columns, and the input rows they multiply.
#[cfg(target_arch = "x86_64")]
struct Chunk<'a, W> {
    x: &'a [f32],
    weight: &'a W,
    rows: std::ops::Range<usize>,
    columns: std::ops::Range<usize>,
}

#[cfg(target_arch = "x86_64")]
impl<W: StreamedWeight> Chunk<'_, W> {
    /// `part[r, ·] += Σ_{i ∈ rows} x[r, i] · W[i, columns]` for `R` input rows, 64 (then 16)
    /// columns at a time.
    ///
    /// # Safety
    /// As [`accumulate_avx512`]; `x` holds `R` rows of `k` and `part` `R` rows of the width.
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    unsafe fn add_into<const R: usize>(&self, part: &mut [f32]) {
        let mut column = self.columns.start;
        while column + 64 <= self.columns.end {
            // SAFETY: passed on; `column + 64` is within the columns.
            unsafe { self.group_into::<R, 4>(column, part) };
            column += 64;
        }
        while column < self.columns.end {
            // SAFETY: passed on; the width is a multiple of 16 (`n` is, and so is the start).
            unsafe { self.group_into::<R, 1>(column, part) };
            column += 16;
        }
    }

    /// The sums of `R` input rows over the chunk's weight rows for the columns
    /// `column..column + 16·G`, added into `part`.
    ///
    /// # Safety
    /// As [`add_into`](Self::add_into), and `column + 16·G <= columns.end`.
    #[target_feature(enable = "avx512f,fma")]
    #[inline]
    unsafe fn group_into<const R: usize, const G: usize>(&self, column: usize, part: &mut [f32]) {
        use std::arch::x86_64::{
            _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps,
            _mm512_storeu_ps, _mm_prefetch, _MM_HINT_T0,
        };
        let [k, n] = self.weight.shape();
        let width = self.columns.len();
        assert!(self.x.len() == R * k && part.len() == R * width && column + 16 * G <= n);
        let mut sums = [[_mm512_setzero_ps(); G]; R];
        for i in self.rows.clone() {
            let offset = i * n + column;
            for g in 0..G {
                // The same columns of the next chunk's rows: the chunk's rows are read as
                // interleaved streams, which the hardware prefetcher alone follows at a fraction
                // of the bandwidth. One prefetch per 64-byte line.
                if (16 * g * W::BYTES_PER_WEIGHT).is_multiple_of(64) {
                    let ahead = self.weight.address(offset + 16 * g + ROW_CHUNK * n);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                }
                // SAFETY: the caller's conditions; `offset + 16·g` is a multiple of 16.
                let (w, scale) = unsafe { self.weight.group(offset + 16 * g) };
                for (r, sums) in sums.iter_mut().enumerate() {
                    let input = _mm512_set1_ps(self.x[r * k + i] * scale);
                    sums[g] = _mm512_fmadd_ps(input, w, sums[g]);
                }
            }
        }
        let local = column - self.columns.start;
        for (r, sums) in sums.iter().enumerate() {
            for (g, &sum) in sums.iter().enumerate() {
                let start = r * width + local + 16 * g;
                let out = &mut part[start..start + 16];
                // SAFETY: `out` holds 16 floats; the accesses are unaligned.
                unsafe {
                    let previous = _mm512_loadu_ps(out.as_ptr());
                    _mm512_storeu_ps(out.as_mut_ptr(), _mm512_add_ps(previous, sum));
                }
            }
        }
    }

    /// [`add_into`](Self::add_into) with AVX2: `G` groups of 16 columns at a time, then one.
    ///
    /// # Safety
    /// As [`accumulate_avx2`]; `x` holds `R` rows of `k` and `part` `R` rows of the width.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn add_into_avx2<const R: usize, const G: usize>(&self, part: &mut [f32]) {
        let mut column = self.columns.start;
        while column + 16 * G <= self.columns.end {
            // SAFETY: passed on; `column + 16·G` is within the columns.
            unsafe { self.group_into_avx2::<R, G>(column, part) };
            column += 16 * G;
        }
        while column < self.columns.end {
            // SAFETY: passed on; the width is a multiple of 16 (`n` is, and so is the start).
            unsafe { self.group_into_avx2::<R, 1>(column, part) };
            column += 16;
        }
    }

    /// [`group_into`](Self::group_into) with AVX2: each group of 16 weights as two 8-lane
    /// halves, scaled once and used by every input row.
    ///
    /// # Safety
    /// As [`add_into_avx2`](Self::add_into_avx2), and `column + 16·G <= columns.end`.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn group_into_avx2<const R: usize, const G: usize>(
        &self,
        column: usize,
        part: &mut [f32],
    ) {
        use std::arch::x86_64::{
            _mm256_add_ps, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_setzero_ps,
            _mm256_storeu_ps, _mm_prefetch, _MM_HINT_T0,
        };
        let [k, n] = self.weight.shape();
        let width = self.columns.len();
        assert!(self.x.len() == R * k && part.len() == R * width && column + 16 * G <= n);
        let mut sums = [[[_mm256_setzero_ps(); 2]; G]; R];
        for i in self.rows.clone() {
            let offset = i * n + column;
            let inputs: [_; R] = std::array::from_fn(|r| _mm256_set1_ps(self.x[r * k + i]));
            for g in 0..G {
                // As in `group_into`: the next chunk's rows, one prefetch per 64-byte line.
                if (16 * g * W::BYTES_PER_WEIGHT).is_multiple_of(64) {
                    let ahead = self.weight.address(offset + 16 * g + ROW_CHUNK * n);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                }
                // SAFETY: the caller's conditions; `offset + 16·g` is a multiple of 16.
                let [low, high] = unsafe { self.weight.group_avx2(offset + 16 * g) };
                for (sums, input) in sums.iter_mut().zip(&inputs) {
                    sums[g][0] = _mm256_fmadd_ps(*input, low, sums[g][0]);
                    sums[g][1] = _mm256_fmadd_ps(*input, high, sums[g][1]);
                }
            }
        }
        let local = column - self.columns.start;
        for (r, sums) in sums.iter().enumerate() {
            for (g, halves) in sums.iter().enumerate() {
                for (h, &sum) in halves.iter().enumerate() {
                    let start = r * width + local + 16 * g + 8 * h;
                    let out = &mut part[start..start + 8];
                    // SAFETY: `out` holds 8 floats; the accesses are unaligned.
                    unsafe {
                        let previous = _mm256_loadu_ps(out.as_ptr());
                        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_add_ps(previous, sum));
                    }
                }
            }
        }
    }
}

/// Rows up to which [`try_flex_linear`] streams an `f32` weight; above it, the backend's GEMM is
/// faster (`examples/kernel_shapes.rs`).
pub(crate) const STREAMED_MAX_ROWS: usize = 8;

/// `x · W + b` over the last dimension of a flex-backend `x` with at most
/// [`STREAMED_MAX_ROWS`] rows and an `f32` `weight` `[k, n]`; `None` otherwise (other
/// backends, autodiff, other element types, more rows), so that the caller uses Burn's product.
pub(crate) fn try_flex_linear<B: burn::tensor::backend::Backend, const D: usize>(
    x: &burn::tensor::Tensor<B, D>,
    weight: &burn::tensor::Tensor<B, 2>,
    bias: Option<&burn::tensor::Tensor<B, 1>>,
) -> Option<burn::tensor::Tensor<B, D>> {
    let dims = x.dims();
    let [k, n] = weight.dims();
    let m = dims[..D - 1].iter().product::<usize>();
    if dims[D - 1] != k || m > STREAMED_MAX_ROWS || bias.is_some_and(|b| b.dims() != [n]) {
        return None;
    }
    let weight_flex = crate::flex_tensor::float_primitive(weight)?;
    let weight_values = weight_flex.as_slice::<f32>()?;
    let matrix = F32Matrix::new(weight_values, k, n)?;
    streamed_linear(x, &matrix, bias)
}

/// [`streamed_product`] of a flex-backend `x` (its last dimension `k`, at most a few rows) and
/// `weight` plus `bias`, as a tensor of `x`'s leading shape; `None` when `x` or `bias` are not
/// the flex backend's `f32` tensors.
pub(crate) fn streamed_linear<
    B: burn::tensor::backend::Backend,
    W: StreamedWeight,
    const D: usize,
>(
    x: &burn::tensor::Tensor<B, D>,
    weight: &W,
    bias: Option<&burn::tensor::Tensor<B, 1>>,
) -> Option<burn::tensor::Tensor<B, D>> {
    use crate::flex_tensor::{float_primitive, row_major_f32, tensor_from_f32};
    let dims = x.dims();
    let [k, n] = weight.shape();
    let m = dims[..D - 1].iter().product::<usize>();
    if dims[D - 1] != k || bias.is_some_and(|b| b.dims() != [n]) {
        return None;
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
    let out = streamed_product(&x_values, m, weight, bias_values.as_deref());
    let mut out_dims = dims;
    out_dims[D - 1] = n;
    tensor_from_f32(out, out_dims)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Distribution, Tensor};
    use burn_flex::Flex;

    use super::*;
    use crate::tensor_util::linear_flat;

    /// `x · W + b` in f64.
    fn reference(
        x: &[f32],
        m: usize,
        w: &[f32],
        [k, n]: [usize; 2],
        bias: Option<&[f32]>,
    ) -> Vec<f64> {
        let mut out = vec![0f64; m * n];
        for r in 0..m {
            for j in 0..n {
                let mut sum = bias.map_or(0.0, |b| f64::from(b[j]));
                for i in 0..k {
                    sum += f64::from(x[r * k + i]) * f64::from(w[i * n + j]);
                }
                out[r * n + j] = sum;
            }
        }
        out
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 - 1001.0) / 1001.0)
            .collect()
    }

    /// Column slices recomputed alone equal the full product's, bit for bit, over several
    /// blocks, every row count the kernels take and a width without whole vectors.
    #[test]
    fn columns_recomputed_alone_are_the_full_products_bits() {
        for (m, [k, n]) in [
            (1, [64, 4096]),
            (3, [40, 2048]),
            (5, [17, 512]),
            (2, [24, 40]),
        ] {
            let (x, w) = (values(m * k, 4), values(k * n, 5));
            let matrix = F32Matrix::new(&w, k, n).unwrap();
            let full = streamed_product(&x, m, &matrix, None);
            let step = if matrix.fills_vectors() { 16 } else { n };
            for start in (0..n)
                .step_by(step)
                .filter(|s| s % 96 == 0 || *s + step >= n)
            {
                let slice = streamed_product_columns(&x, m, &matrix, start..start + step);
                for r in 0..m {
                    for c in 0..step {
                        assert_eq!(
                            slice[r * step + c].to_bits(),
                            full[r * n + start + c].to_bits(),
                            "{m}×{k}×{n}, row {r}, column {}",
                            start + c
                        );
                    }
                }
            }
        }
    }

    fn check(m: usize, [k, n]: [usize; 2], with_bias: bool) {
        let (x, w, b) = (values(m * k, 1), values(k * n, 2), values(n, 3));
        let bias = with_bias.then_some(b.as_slice());
        let matrix = F32Matrix::new(&w, k, n).expect("k · n weights");
        let found = streamed_product(&x, m, &matrix, bias);
        let expected = reference(&x, m, &w, [k, n], bias);
        assert_eq!(found.len(), expected.len());
        for (i, (&f, &e)) in found.iter().zip(&expected).enumerate() {
            assert!(
                (f64::from(f) - e).abs() <= 1e-5 * (1.0 + e.abs()) * (k as f64).sqrt(),
                "{m}×{k}×{n}, element {i}: {f} against {e}"
            );
        }
    }

    #[test]
    fn one_row_matches_the_f64_product() {
        check(1, [37, 80], false);
    }

    #[test]
    fn every_row_count_up_to_eight_matches_with_bias() {
        for m in 1..=8 {
            check(m, [19, 144], true);
        }
    }

    #[test]
    fn a_weight_split_between_threads_matches() {
        // 260 · 1008 · 4 bytes: above the split threshold, in two blocks of 136 and 124 rows;
        // 1008 columns leave a 16-column tail after the 64-column groups.
        assert_eq!(row_blocks(260, 1008 * 4), vec![0..136, 136..260]);
        check(3, [260, 1008], true);
    }

    /// The AVX2 kernel called directly (so that it is tested on CPUs whose dispatch picks
    /// AVX-512): every row count it takes, over all columns and over a column range.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_avx2_kernel_matches_the_f64_product() {
        if !crate::flex_tensor::has_avx2_fma() {
            return;
        }
        let [k, n] = [19, 144];
        let w = values(k * n, 2);
        let matrix = F32Matrix::new(&w, k, n).expect("k · n weights");
        for m in 1..=8 {
            let x = values(m * k, 1);
            let expected = reference(&x, m, &w, [k, n], None);
            for columns in [0..n, 16..128] {
                let width = columns.len();
                let mut part = vec![0f32; m * width];
                // Two blocks of weight rows, the first not a whole number of chunks.
                for rows in [0..11, 11..k] {
                    // SAFETY: the CPU has AVX2 and FMA; `n` and the columns' start are
                    // multiples of 16; `x` holds `m` rows of `k` and `part` `m` rows of the
                    // width.
                    unsafe { accumulate_avx2(&x, m, &matrix, rows, columns.clone(), &mut part) };
                }
                for (r, row) in part.chunks_exact(width).enumerate() {
                    for (j, &f) in columns.clone().zip(row) {
                        let e = expected[r * n + j];
                        assert!(
                            (f64::from(f) - e).abs() <= 1e-5 * (1.0 + e.abs()),
                            "{m} rows, {columns:?}: [{r}, {j}] {f} against {e}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_width_without_whole_vectors_takes_the_scalar_loop() {
        check(2, [9, 30], true);
    }

    #[test]
    fn empty_products_are_the_bias() {
        let matrix = F32Matrix::new(&[], 0, 3).expect("no weights");
        assert_eq!(
            streamed_product(&[], 2, &matrix, Some(&[1.0, 2.0, 3.0])),
            vec![1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
        );
        assert!(F32Matrix::new(&[1.0; 5], 2, 3).is_none());
    }

    #[test]
    fn the_result_does_not_depend_on_the_thread_count() {
        let (k, n, m) = (300, 2048, 4);
        let (x, w) = (values(m * k, 4), values(k * n, 5));
        let matrix = F32Matrix::new(&w, k, n).expect("k · n weights");
        let on = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a pool")
                .install(|| streamed_product(&x, m, &matrix, None))
        };
        let one = on(1);
        assert_eq!(one, on(2));
        assert_eq!(one, on(3));
    }

    mod on_flex {
        use super::*;

        fn host<const D: usize>(t: Tensor<Flex, D>) -> Vec<f32> {
            t.into_data().into_vec::<f32>().expect("f32")
        }

        #[test]
        fn few_rows_match_burn_s_linear() {
            let device = Default::default();
            let x =
                Tensor::<Flex, 3>::random([2, 3, 96], Distribution::Uniform(-1.0, 1.0), &device);
            let w = Tensor::<Flex, 2>::random([96, 320], Distribution::Uniform(-0.2, 0.2), &device);
            let b = Tensor::<Flex, 1>::random([320], Distribution::Default, &device);
            let expected = host(linear_flat(x.clone(), w.clone(), Some(b.clone())));
            let found = try_flex_linear(&x, &w, Some(&b)).expect("six rows stream");
            assert_eq!(found.dims(), [2, 3, 320]);
            for (i, (f, e)) in host(found).iter().zip(&expected).enumerate() {
                assert!((f - e).abs() <= 1e-5, "element {i}: {f} against {e}");
            }
        }

        #[test]
        fn more_rows_or_other_backends_are_left_to_burn() {
            let device = Default::default();
            let w = Tensor::<Flex, 2>::ones([8, 16], &device);
            let x = Tensor::<Flex, 2>::ones([STREAMED_MAX_ROWS + 1, 8], &device);
            assert!(try_flex_linear(&x, &w, None).is_none());
            type T = burn::backend::Autodiff<Flex>;
            let x = Tensor::<T, 2>::ones([1, 8], &device);
            let w = Tensor::<T, 2>::ones([8, 16], &device);
            assert!(try_flex_linear(&x, &w, None).is_none());
            let x = Tensor::<burn::backend::NdArray, 2>::ones([1, 8], &Default::default());
            let w = Tensor::<burn::backend::NdArray, 2>::ones([8, 16], &Default::default());
            assert!(try_flex_linear(&x, &w, None).is_none());
        }
    }
}
