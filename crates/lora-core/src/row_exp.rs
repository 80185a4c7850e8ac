//! Row kernels of exponentials shared by the fused softmax and loss paths (crate feature
//! `flex`): a row's maximum with its sum of exponentials, and the scaled softmax of a row in
//! place. On x86-64 with AVX-512F and FMA they run 16 lanes at a time, with AVX2 and FMA 8 lanes
//! at a time, with a polynomial `exp` within 2 ulp; elsewhere they are scalar loops over the
//! standard library's `exp`.

/// A row's maximum and `Σ exp(z − max)`.
pub(crate) fn max_and_sum_exp(row: &[f32]) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    if crate::flex_tensor::has_avx512_fma() {
        // SAFETY: the CPU has AVX-512F and FMA.
        return unsafe { avx512::max_and_sum_exp(row) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::flex_tensor::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { avx2::max_and_sum_exp(row) };
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
    #[cfg(target_arch = "x86_64")]
    if crate::flex_tensor::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { avx2::softmax_times(row, lse, weight) };
    }
    row.iter_mut().for_each(|z| *z = weight * (*z - lse).exp());
}

/// `v ← exp(v)` over a slice whose values are at most 88 (no overflow); values below −103 give
/// 0 or a subnormal, as the exact value's `f32` rounding does.
pub(crate) fn exp_in_place(values: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::flex_tensor::has_avx512_fma() {
        // SAFETY: the CPU has AVX-512F and FMA.
        return unsafe { avx512::exp_in_place(values) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::flex_tensor::has_avx2_fma() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { avx2::exp_in_place(values) };
    }
    values.iter_mut().for_each(|v| *v = v.exp());
}

/// The constants of the vector kernels' `exp`: `x = n·ln 2 + r` with `ln 2` split in two parts
/// (Cody–Waite), and Cephes' degree-6 polynomial for `exp(r)`, highest power first.
#[cfg(target_arch = "x86_64")]
mod exp_constants {
    /// Inputs are clamped from below here: every result under it is 0 or subnormal.
    pub(super) const LOWEST: f32 = -104.0;
    /// `ln 2`'s leading part, exact in few bits.
    pub(super) const LN2_HIGH: f32 = 0.693_359_4;
    /// `ln 2 − LN2_HIGH`.
    pub(super) const LN2_LOW: f32 = -2.121_944_4e-4;
    /// The coefficients of `p(r)` in `exp(r) ≈ 1 + r + r²·p(r)`, highest power first.
    pub(super) const POLYNOMIAL: [f32; 6] = [
        1.987_569_1e-4,
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ];
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
        use super::exp_constants::{LN2_HIGH, LN2_LOW, LOWEST, POLYNOMIAL};
        let x = _mm512_max_ps(x, _mm512_set1_ps(LOWEST));
        let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm512_mul_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HIGH), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LOW), r);
        let mut p = _mm512_set1_ps(POLYNOMIAL[0]);
        for c in &POLYNOMIAL[1..] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(*c));
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

    #[target_feature(enable = "avx512f,fma")]
    pub(super) unsafe fn exp_in_place(values: &mut [f32]) {
        let zero = _mm512_setzero_ps();
        for chunk in values.chunks_mut(LANES) {
            let mask = tail_mask(chunk.len());
            // SAFETY: the mask covers `chunk`'s values only.
            unsafe {
                let v = _mm512_mask_loadu_ps(zero, mask, chunk.as_ptr());
                _mm512_mask_storeu_ps(chunk.as_mut_ptr(), mask, exp(v));
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

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256, __m256i, _mm256_add_epi32, _mm256_add_ps, _mm256_blendv_ps, _mm256_castsi256_ps,
        _mm256_cmpgt_epi32, _mm256_cvtps_epi32, _mm256_fmadd_ps, _mm256_fnmadd_ps, _mm256_loadu_ps,
        _mm256_maskload_ps, _mm256_maskstore_ps, _mm256_max_ps, _mm256_mul_ps, _mm256_round_ps,
        _mm256_set1_epi32, _mm256_set1_ps, _mm256_setr_epi32, _mm256_setzero_ps, _mm256_slli_epi32,
        _mm256_srai_epi32, _mm256_storeu_ps, _mm256_sub_epi32, _mm256_sub_ps, _MM_FROUND_NO_EXC,
        _MM_FROUND_TO_NEAREST_INT,
    };

    const LANES: usize = 8;

    /// `exp(x)` for `x ≤ 88` on 8 lanes: the same reduction and polynomial as the AVX-512
    /// kernel, then `2ⁿ` applied as two factors `2^(n/2)` and `2^(n − n/2)`, each a normal
    /// float, so that results down to the subnormals are rounded once, as by `scalef`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn exp(x: __m256) -> __m256 {
        use super::exp_constants::{LN2_HIGH, LN2_LOW, LOWEST, POLYNOMIAL};
        let x = _mm256_max_ps(x, _mm256_set1_ps(LOWEST));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HIGH), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LOW), r);
        let mut p = _mm256_set1_ps(POLYNOMIAL[0]);
        for c in &POLYNOMIAL[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(*c));
        }
        let y = _mm256_fmadd_ps(
            p,
            _mm256_mul_ps(r, r),
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let n = _mm256_cvtps_epi32(n);
        let half = _mm256_srai_epi32::<1>(n);
        let rest = _mm256_sub_epi32(n, half);
        _mm256_mul_ps(_mm256_mul_ps(y, power_of_two(half)), power_of_two(rest))
    }

    /// `2ᵏ` for `−126 ≤ k ≤ 127`, built from its exponent bits.
    #[target_feature(enable = "avx2")]
    fn power_of_two(k: __m256i) -> __m256 {
        _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(
            k,
            _mm256_set1_epi32(127),
        )))
    }

    /// The lanes below `len` (at most 8) set (all bits), the others clear.
    #[target_feature(enable = "avx2")]
    fn tail_mask(len: usize) -> __m256i {
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_cmpgt_epi32(_mm256_set1_epi32(len as i32), lanes)
    }

    /// The maximum of the 8 lanes of `v`.
    #[target_feature(enable = "avx2")]
    fn max_lanes(v: __m256) -> f32 {
        let mut lanes = [0f32; LANES];
        // SAFETY: `lanes` holds 8 floats.
        unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
        lanes.into_iter().fold(f32::NEG_INFINITY, f32::max)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn max_and_sum_exp(row: &[f32]) -> (f32, f32) {
        let full = row.len() / LANES * LANES;
        let tail = tail_mask(row.len() - full);
        let lowest = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut max = lowest;
        for i in (0..full).step_by(LANES) {
            // SAFETY: `i + 8 ≤ full ≤ row.len()`.
            max = _mm256_max_ps(max, unsafe { _mm256_loadu_ps(row.as_ptr().add(i)) });
        }
        // SAFETY: the mask covers the `row.len() − full` values left.
        let last = unsafe { _mm256_maskload_ps(row[full..].as_ptr(), tail) };
        let last_or_lowest = _mm256_blendv_ps(lowest, last, _mm256_castsi256_ps(tail));
        let max = max_lanes(_mm256_max_ps(max, last_or_lowest));
        let shift = _mm256_set1_ps(max);
        let mut sum = _mm256_setzero_ps();
        for i in (0..full).step_by(LANES) {
            // SAFETY: as above.
            let z = unsafe { _mm256_loadu_ps(row.as_ptr().add(i)) };
            sum = _mm256_add_ps(sum, exp(_mm256_sub_ps(z, shift)));
        }
        let last = exp(_mm256_sub_ps(last, shift));
        sum = _mm256_add_ps(
            sum,
            _mm256_blendv_ps(_mm256_setzero_ps(), last, _mm256_castsi256_ps(tail)),
        );
        (max, crate::flex_tensor::sum_lanes_avx(sum))
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn softmax_times(row: &mut [f32], lse: f32, weight: f32) {
        let shift = _mm256_set1_ps(lse);
        let weight = _mm256_set1_ps(weight);
        for chunk in row.chunks_mut(LANES) {
            let mask = tail_mask(chunk.len());
            // SAFETY: the mask covers `chunk`'s values only.
            unsafe {
                let z = _mm256_maskload_ps(chunk.as_ptr(), mask);
                let g = _mm256_mul_ps(weight, exp(_mm256_sub_ps(z, shift)));
                _mm256_maskstore_ps(chunk.as_mut_ptr(), mask, g);
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_in_place(values: &mut [f32]) {
        let (full, rest) = values.split_at_mut(values.len() / LANES * LANES);
        for chunk in full.chunks_exact_mut(LANES) {
            // SAFETY: `chunk` holds 8 values.
            unsafe {
                let v = _mm256_loadu_ps(chunk.as_ptr());
                _mm256_storeu_ps(chunk.as_mut_ptr(), exp(v));
            }
        }
        if !rest.is_empty() {
            let mask = tail_mask(rest.len());
            // SAFETY: the mask covers `rest`'s values only.
            unsafe {
                let v = _mm256_maskload_ps(rest.as_ptr(), mask);
                _mm256_maskstore_ps(rest.as_mut_ptr(), mask, exp(v));
            }
        }
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

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn eight_lane_exp_is_within_two_ulp_of_the_exact_value() {
        if !crate::flex_tensor::has_avx2_fma() {
            return;
        }
        let mut worst = 0u32;
        let mut x = -103.0f32;
        while x <= 88.0 {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            let found = unsafe {
                use std::arch::x86_64::{_mm256_set1_ps, _mm256_storeu_ps};
                let mut out = [0f32; 8];
                _mm256_storeu_ps(out.as_mut_ptr(), super::avx2::exp(_mm256_set1_ps(x)));
                out[0]
            };
            let exact = (x as f64).exp() as f32;
            if exact.is_normal() {
                worst = worst.max(found.to_bits().abs_diff(exact.to_bits()));
            } else {
                // Subnormal or zero: within one step of the smallest subnormal.
                assert!(
                    (found - exact).abs() <= f32::from_bits(1),
                    "exp({x}): {found}"
                );
            }
            x += 0.001_3;
        }
        assert!(worst <= 2, "{worst} ulp");
    }

    /// Every row length around the vector widths, against `f64`: the maximum exactly, the sum
    /// and the scaled softmax within 1e-6 relative, through the kernel the CPU dispatches to.
    #[test]
    fn row_kernels_match_f64_for_every_tail_length() {
        check_row_kernels(super::max_and_sum_exp, super::softmax_times);
    }

    /// [`row_kernels_match_f64_for_every_tail_length`] with the AVX2 kernels called directly
    /// (so that they are tested on CPUs whose dispatch picks AVX-512).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_row_kernels_match_f64_for_every_tail_length() {
        if !crate::flex_tensor::has_avx2_fma() {
            return;
        }
        // SAFETY (both): the CPU has AVX2 and FMA (checked above).
        check_row_kernels(
            |row| unsafe { super::avx2::max_and_sum_exp(row) },
            |row, lse, weight| unsafe { super::avx2::softmax_times(row, lse, weight) },
        );
    }

    /// `exp_in_place` over every length around the vector widths, through the dispatched
    /// kernel and (where the CPU has it) the AVX2 one, within 2 ulp of `f64` for normal results.
    #[test]
    fn exp_in_place_is_within_two_ulp_for_every_tail_length() {
        let check = |exp_in_place: &dyn Fn(&mut [f32])| {
            for len in 0..=40 {
                let inputs: Vec<f32> = (0..len).map(|i| -(i as f32) * 2.7 + 20.0).collect();
                let mut found = inputs.clone();
                exp_in_place(&mut found);
                for (found, x) in found.iter().zip(&inputs) {
                    let exact = f64::from(*x).exp() as f32;
                    assert!(
                        found.to_bits().abs_diff(exact.to_bits()) <= 2,
                        "length {len}: exp({x}) = {found}, not {exact}"
                    );
                }
            }
        };
        check(&super::exp_in_place);
        #[cfg(target_arch = "x86_64")]
        if crate::flex_tensor::has_avx2_fma() {
            // SAFETY: the CPU has AVX2 and FMA (checked above).
            check(&|values| unsafe { super::avx2::exp_in_place(values) });
        }
    }

    fn check_row_kernels(
        max_and_sum_exp: impl Fn(&[f32]) -> (f32, f32),
        softmax_times: impl Fn(&mut [f32], f32, f32),
    ) {
        for len in 1..=40 {
            let row: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.7)
                .collect();
            let (max, sum) = max_and_sum_exp(&row);
            let exact_max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exact_sum: f64 = row.iter().map(|&z| f64::from(z - exact_max).exp()).sum();
            assert_eq!(max, exact_max, "length {len}");
            assert!(
                (f64::from(sum) - exact_sum).abs() <= 1e-6 * exact_sum,
                "length {len}: {sum} against {exact_sum}"
            );
            let lse = max + sum.ln();
            let mut softmax = row.clone();
            softmax_times(&mut softmax, lse, 0.5);
            for (found, &z) in softmax.iter().zip(&row) {
                let exact = 0.5 * f64::from(z - lse).exp();
                assert!(
                    (f64::from(*found) - exact).abs() <= 1e-6 * exact.max(1e-30),
                    "length {len}: {found} against {exact}"
                );
            }
        }
    }
}
