//! Row kernels of exponentials shared by the fused softmax and loss paths (crate feature
//! `flex`): a row's maximum with its sum of exponentials, and the scaled softmax of a row in
//! place. On x86-64 with AVX-512F and FMA they run 16 lanes at a time with a polynomial `exp`
//! within 2 ulp; elsewhere they are scalar loops over the standard library's `exp`.

/// A row's maximum and `Σ exp(z − max)`.
pub(crate) fn max_and_sum_exp(row: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::flex_tensor::has_avx512_fma() {
        // SAFETY: the CPU has AVX-512F and FMA.
        return unsafe { avx512::max_and_sum_exp(row) };
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    (max, row.iter().map(|z| (z - max).exp()).sum())
}

/// `z ← w·exp(z − lse)` over a row.
pub(crate) fn softmax_times(row: &mut [f32], lse: f32, weight: f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::flex_tensor::has_avx512_fma() {
        // SAFETY: the CPU has AVX-512F and FMA.
        return unsafe { avx512::softmax_times(row, lse, weight) };
    }
    row.iter_mut().for_each(|z| *z = weight * (*z - lse).exp());
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, __mmask16, _mm512_add_ps, _mm512_fmadd_ps, _mm512_fnmadd_ps, _mm512_mask_add_ps,
        _mm512_mask_loadu_ps, _mm512_mask_max_ps, _mm512_mask_storeu_ps, _mm512_max_ps,
        _mm512_mul_ps, _mm512_reduce_add_ps, _mm512_reduce_max_ps, _mm512_roundscale_ps,
        _mm512_scalef_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_sub_ps, _MM_FROUND_NO_EXC,
        _MM_FROUND_TO_NEAREST_INT,
    };

    const LANES: usize = 16;

    /// `exp(x)` for `x ≤ 88` on 16 lanes: `x = n·ln 2 + r` with `|r| ≤ ln 2 / 2`, Cephes'
    /// degree-6 polynomial for `exp(r)`, then `2ⁿ` by `scalef`. Below −103 the result is 0
    /// or subnormal, as is the exact value's `f32` rounding.
    #[target_feature(enable = "avx512f,fma")]
    pub(super) fn exp(x: __m512) -> __m512 {
        let x = _mm512_max_ps(x, _mm512_set1_ps(-104.0));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm512_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        let y = _mm512_fmadd_ps(
            p,
            _mm512_mul_ps(r, r),
            _mm512_add_ps(r, _mm512_set1_ps(1.0)),
        );
        _mm512_scalef_ps(y, n)
    }

    fn tail_mask(len: usize) -> __mmask16 {
        ((1u32 << len) - 1) as __mmask16
    }

    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn max_and_sum_exp(row: &[f32]) -> (f32, f32) {
        let full = row.len() / LANES * LANES;
        let tail = tail_mask(row.len() - full);
        let lowest = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut max = lowest;
        for i in (0..full).step_by(LANES) {
            // SAFETY: `i + 16 ≤ full ≤ row.len()`.
            max = _mm512_max_ps(max, unsafe { load(row, i) });
        }
        // SAFETY: the mask covers the `row.len() − full` values left.
        let last = unsafe { _mm512_mask_loadu_ps(lowest, tail, row[full..].as_ptr()) };
        max = _mm512_mask_max_ps(max, tail, max, last);
        let max = _mm512_reduce_max_ps(max);
        let shift = _mm512_set1_ps(max);
        let mut sum = _mm512_setzero_ps();
        for i in (0..full).step_by(LANES) {
            // SAFETY: as above.
            sum = _mm512_add_ps(sum, exp(_mm512_sub_ps(unsafe { load(row, i) }, shift)));
        }
        sum = _mm512_mask_add_ps(sum, tail, sum, exp(_mm512_sub_ps(last, shift)));
        (max, _mm512_reduce_add_ps(sum))
    }

    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn softmax_times(row: &mut [f32], lse: f32, weight: f32) {
        let shift = _mm512_set1_ps(lse);
        let weight = _mm512_set1_ps(weight);
        let zero = _mm512_setzero_ps();
        for chunk in row.chunks_mut(LANES) {
            let mask = tail_mask(chunk.len());
            // SAFETY: the mask covers `chunk`'s values only.
            unsafe {
                let z = _mm512_mask_loadu_ps(zero, mask, chunk.as_ptr());
                let g = _mm512_mul_ps(weight, exp(_mm512_sub_ps(z, shift)));
                _mm512_mask_storeu_ps(chunk.as_mut_ptr(), mask, g);
            }
        }
    }

    /// 16 values of `row` from `i`.
    ///
    /// # Safety
    /// `i + 16 ≤ row.len()`.
    #[target_feature(enable = "avx512f")]
    unsafe fn load(row: &[f32], i: usize) -> __m512 {
        // SAFETY: the caller keeps `i + 16` within `row`.
        unsafe { std::arch::x86_64::_mm512_loadu_ps(row.as_ptr().add(i)) }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn vector_exp_is_within_two_ulp_of_the_exact_value() {
        if !crate::flex_tensor::has_avx512_fma() {
            return;
        }
        let mut worst = 0u32;
        let mut x = -103.0f32;
        while x <= 0.0 {
            let lanes = [x; 16];
            // SAFETY: the CPU has AVX-512F and FMA (checked above).
            let found = unsafe {
                use std::arch::x86_64::{_mm512_loadu_ps, _mm512_storeu_ps};
                let mut out = [0f32; 16];
                _mm512_storeu_ps(
                    out.as_mut_ptr(),
                    super::avx512::exp(_mm512_loadu_ps(lanes.as_ptr())),
                );
                out[0]
            };
            let exact = (x as f64).exp() as f32;
            if exact.is_normal() {
                worst = worst.max(found.to_bits().abs_diff(exact.to_bits()));
            }
            x += 0.001_3;
        }
        assert!(worst <= 2, "{worst} ulp");
    }
}
