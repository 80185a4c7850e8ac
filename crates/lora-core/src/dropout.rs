//! Dropout with masks drawn quickly on the host for the CPU backends.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use rand_xoshiro::rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Zeroes each element with probability `prob` while training and scales the kept ones by
/// `1 / (1 - prob)`; the identity otherwise. The same semantics as [`burn::nn::Dropout`] (and
/// PyTorch's `nn.Dropout`): active only on an autodiff backend.
///
/// On the CPU backends (`ndarray`, `flex`) the mask is drawn on the host with xoshiro256++,
/// seeded by one draw from the backend's own generator, so [`Backend::seed`] still fixes every
/// mask and seeded runs stay reproducible; the mask carries the scale, so applying it is one
/// multiplication; the mask is drawn in blocks of 2¹⁶ elements on all threads (crate feature
/// `flex`). Burn's `Bernoulli` sampling costs 12 ns per element on flex, this (mask and product)
/// 2.3 ns on one thread (`examples/kernel_shapes.rs`). On autodiff over flex the draw and the
/// product are one recorded operation that keeps the mask as one bit per element (the same
/// values as the `f32` mask). Other backends draw the mask on the device with Burn's sampler.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::tensor::Tensor;
/// use lora_core::Dropout;
///
/// type B = Autodiff<NdArray>;
/// let device = Default::default();
/// let x = Tensor::<B, 2>::ones([64, 64], &device);
/// let y = Dropout::new(0.25).forward(x).into_data().to_vec::<f32>().unwrap();
/// // Every element is dropped (0) or kept and scaled by 1 / 0.75.
/// assert!(y.iter().all(|&v| v == 0.0 || (v - 4.0 / 3.0).abs() < 1e-6));
/// let kept = y.iter().filter(|&&v| v != 0.0).count() as f64 / y.len() as f64;
/// assert!((kept - 0.75).abs() < 0.05);
/// ```
#[derive(Module, Clone, Debug)]
pub struct Dropout {
    /// The probability of zeroing an element.
    pub prob: f64,
}

impl Dropout {
    /// A dropout layer that zeroes elements with probability `prob`: `prob ≤ 0` (or NaN) is the
    /// identity and `prob ≥ 1` zeroes everything. The configurations that build it
    /// ([`LoraConfig`](crate::LoraConfig), T5's) reject probabilities outside `[0, 1)`.
    pub fn new(prob: f64) -> Self {
        Self { prob }
    }

    /// Applies dropout to `input` while training (on an autodiff backend); returns it unchanged
    /// otherwise.
    pub fn forward<B: Backend, const D: usize>(&self, input: Tensor<B, D>) -> Tensor<B, D> {
        let device = input.device();
        if !B::ad_enabled(&device) || self.prob.is_nan() || self.prob <= 0.0 {
            return input;
        }
        if self.prob >= 1.0 {
            return input.zeros_like();
        }
        let keep = 1.0 - self.prob;
        if !host_mask_is_faster::<B>(&device) {
            let mask = input.random_like(Distribution::Bernoulli(keep));
            return input * mask * (1.0 / keep);
        }
        let shape = input.shape();
        let seed = backend_seed::<B>(&device);
        #[cfg(feature = "flex")]
        let input = match flex::dropout(input, keep, seed) {
            Ok(output) => return output,
            Err(input) => input,
        };
        let mask = scaled_keep_mask(shape.num_elements(), keep, seed);
        let mask =
            Tensor::<B, D>::from_data(TensorData::new(mask, shape), (&device, input.dtype()));
        input * mask
    }
}

/// Whether `B` computes on the host, where a host-drawn mask needs no transfer.
fn host_mask_is_faster<B: Backend>(device: &B::Device) -> bool {
    let name = B::name(device);
    name.contains("ndarray") || name.contains("flex")
}

/// A 48-bit seed drawn from the backend's generator (two uniform `f32`s of 24 bits each), so
/// that `Backend::seed` decides it.
fn backend_seed<B: Backend>(device: &B::Device) -> u64 {
    let draws = Tensor::<B, 1>::random([2], Distribution::Default, device)
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap_or_default();
    draws.iter().fold(0u64, |seed, &u| {
        (seed << 24) | ((u.clamp(0.0, 1.0) * (1u32 << 24) as f32) as u64 & 0xff_ffff)
    })
}

/// Elements per block of a mask: each block draws from its own generator, so that blocks fill
/// on all threads and the mask does not depend on how many there are.
const MASK_BLOCK: usize = 1 << 16;

/// `count` values, each `1 / keep` with probability `keep` and 0 otherwise. Element `i` lies in
/// block `b = i / 2¹⁶`, drawn by xoshiro256++ seeded (`seed_from_u64`) with
/// `seed ⊕ b·0x9E3779B97F4A7C15`: it is kept when the block's `(i mod 2¹⁶)`-th 32-bit draw (two
/// per 64-bit output, low half first) is below `keep · 2³²`. Blocks fill on all threads with
/// the crate feature `flex` (rayon), one after another without it; the values are the same.
pub(crate) fn scaled_keep_mask(count: usize, keep: f64, seed: u64) -> Vec<f32> {
    let threshold = keep_threshold(keep);
    let scale = (1.0 / keep) as f32;
    let mut mask = vec![0f32; count];
    let fill = |(block, values): (usize, &mut [f32])| {
        let mut words = [0u64; MASK_BLOCK / 64];
        let words = &mut words[..values.len().div_ceil(64)];
        fill_keep_words(block_seed(seed, block), threshold, values.len(), words);
        expand_keep_words(words, scale, values);
    };
    #[cfg(feature = "flex")]
    {
        use rayon::prelude::*;
        mask.par_chunks_mut(MASK_BLOCK).enumerate().for_each(fill);
    }
    #[cfg(not(feature = "flex"))]
    mask.chunks_mut(MASK_BLOCK).enumerate().for_each(fill);
    mask
}

/// The 32-bit draws below which an element is kept.
fn keep_threshold(keep: f64) -> u64 {
    (keep * 4_294_967_296.0).min(4_294_967_295.0) as u64
}

/// The generator seed of block `block` of a mask.
fn block_seed(seed: u64, block: usize) -> u64 {
    seed ^ (block as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// `values[j] = scale` where bit `j mod 64` of `words[j / 64]` is set, 0 elsewhere.
fn expand_keep_words(words: &[u64], scale: f32, values: &mut [f32]) {
    for (word, values) in words.iter().zip(values.chunks_mut(64)) {
        for (j, value) in values.iter_mut().enumerate() {
            *value = if word >> j & 1 == 1 { scale } else { 0.0 };
        }
    }
}

/// Which of a block's `len` elements are kept: bit `j mod 64` of `words[j / 64]`, as
/// [`scaled_keep_mask`] defines them (two 32-bit draws per 64-bit output, low half first).
fn fill_keep_words(block_seed: u64, threshold: u64, len: usize, words: &mut [u64]) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(block_seed);
    for (w, word) in words.iter_mut().enumerate() {
        let n = (len - w * 64).min(64);
        let mut bits = 0u64;
        for j in (0..n).step_by(2) {
            let draw = rng.next_u64();
            bits |= u64::from(draw & 0xffff_ffff < threshold) << j;
            if j + 1 < n {
                bits |= u64::from(draw >> 32 < threshold) << (j + 1);
            }
        }
        *word = bits;
    }
}

/// Dropout as one recorded operation on autodiff over flex: the mask is drawn, applied and
/// kept as one bit per element in a single pass on all threads, and the backward pass
/// multiplies the gradient by the same mask. Burn's `x * mask` keeps an `f32` mask in the
/// graph and runs the products on the calling thread.
#[cfg(feature = "flex")]
mod flex {
    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorData, TensorPrimitive};
    use burn_flex::{Flex, FlexTensor};
    use rayon::prelude::*;

    use super::{block_seed, expand_keep_words, fill_keep_words, keep_threshold, MASK_BLOCK};
    use crate::flex_tensor::{from_autodiff_flex, into_autodiff_flex, row_major_f32, zeros_f32};
    use crate::recorded_op::{record_unary, UnaryGradient};

    /// Mask words per block.
    const BLOCK_WORDS: usize = MASK_BLOCK / 64;

    /// `x ⊙ mask` with [`super::scaled_keep_mask`]'s mask for `keep` and `seed`, recorded as
    /// one operation on autodiff over flex; `Err(x)` elsewhere.
    pub(super) fn dropout<B: Backend, const D: usize>(
        x: Tensor<B, D>,
        keep: f64,
        seed: u64,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        let x = into_autodiff_flex(x)?;
        let primitive = x.into_primitive().tensor();
        let Some(values) = row_major_f32(&primitive.primitive) else {
            return Err(from_autodiff_flex(Tensor::from_primitive(
                TensorPrimitive::Float(primitive),
            )));
        };
        let shape = primitive.primitive.layout().shape().clone();
        let threshold = keep_threshold(keep);
        let scale = (1.0 / keep) as f32;
        let mut words = vec![0u64; values.len().div_ceil(64)];
        let mut y = zeros_f32(values.len());
        words
            .par_chunks_mut(BLOCK_WORDS)
            .zip(y.par_chunks_mut(MASK_BLOCK))
            .zip(values.par_chunks(MASK_BLOCK))
            .enumerate()
            .for_each(|(block, ((words, y), x))| {
                fill_keep_words(block_seed(seed, block), threshold, x.len(), words);
                mask_product(words, scale, x, y);
            });
        let mask = KeptBits { words, scale };
        let output = FlexTensor::from_data(TensorData::new(y, shape));
        let y = record_unary(DropoutBackward, &primitive, mask, output);
        Ok(from_autodiff_flex(Tensor::from_primitive(
            TensorPrimitive::Float(y),
        )))
    }

    /// `out[j] = x[j] · (scale if bit j is set, else 0)`.
    fn mask_product(words: &[u64], scale: f32, x: &[f32], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if crate::flex_tensor::has_avx512_fma() {
            // SAFETY: the CPU has AVX-512F.
            return unsafe { avx512::mask_product(words, scale, x, out) };
        }
        #[cfg(target_arch = "x86_64")]
        if crate::flex_tensor::has_avx2_fma() {
            // SAFETY: the CPU has AVX2.
            return unsafe { avx2::mask_product(words, scale, x, out) };
        }
        for (word, (x, out)) in words.iter().zip(x.chunks(64).zip(out.chunks_mut(64))) {
            scalar_mask_product(*word, scale, x, out);
        }
    }

    /// [`mask_product`] over one word's elements.
    fn scalar_mask_product(word: u64, scale: f32, x: &[f32], out: &mut [f32]) {
        for (j, (x, out)) in x.iter().zip(out.iter_mut()).enumerate() {
            *out = x * if word >> j & 1 == 1 { scale } else { 0.0 };
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod avx512 {
        use std::arch::x86_64::{
            _mm512_loadu_ps, _mm512_maskz_mov_ps, _mm512_mul_ps, _mm512_set1_ps, _mm512_storeu_ps,
        };

        /// [`super::mask_product`], 16 lanes at a time: each lane multiplied by the scale or by
        /// 0 (not masked to 0, so that a dropped infinity or NaN gives NaN, as `x * mask` does).
        #[target_feature(enable = "avx512f")]
        pub(super) unsafe fn mask_product(words: &[u64], scale: f32, x: &[f32], out: &mut [f32]) {
            let scale_lanes = _mm512_set1_ps(scale);
            for (word, (x, out)) in words.iter().zip(x.chunks(64).zip(out.chunks_mut(64))) {
                if x.len() < 64 || out.len() < 64 {
                    super::scalar_mask_product(*word, scale, x, out);
                    continue;
                }
                for lane in 0..4 {
                    let keep = (word >> (16 * lane)) as u16;
                    // SAFETY: `16 · lane + 16 ≤ 64` values of `x` and `out`.
                    unsafe {
                        let values = _mm512_loadu_ps(x.as_ptr().add(16 * lane));
                        let factors = _mm512_maskz_mov_ps(keep, scale_lanes);
                        let product = _mm512_mul_ps(values, factors);
                        _mm512_storeu_ps(out.as_mut_ptr().add(16 * lane), product);
                    }
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod avx2 {
        use std::arch::x86_64::{
            _mm256_and_ps, _mm256_and_si256, _mm256_castsi256_ps, _mm256_cmpeq_epi32,
            _mm256_loadu_ps, _mm256_mul_ps, _mm256_set1_epi32, _mm256_set1_ps, _mm256_setr_epi32,
            _mm256_storeu_ps,
        };

        /// [`super::mask_product`], 8 lanes at a time: lane `j` of each 8 takes bit `j` of its
        /// byte of the word, and is multiplied by the scale or by 0 (as the AVX-512 kernel).
        #[target_feature(enable = "avx2")]
        pub(super) unsafe fn mask_product(words: &[u64], scale: f32, x: &[f32], out: &mut [f32]) {
            let scale_lanes = _mm256_set1_ps(scale);
            let lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
            for (word, (x, out)) in words.iter().zip(x.chunks(64).zip(out.chunks_mut(64))) {
                if x.len() < 64 || out.len() < 64 {
                    super::scalar_mask_product(*word, scale, x, out);
                    continue;
                }
                for lane in 0..8 {
                    let byte = _mm256_set1_epi32(i32::from((word >> (8 * lane)) as u8));
                    let kept = _mm256_cmpeq_epi32(_mm256_and_si256(byte, lane_bits), lane_bits);
                    let factors = _mm256_and_ps(_mm256_castsi256_ps(kept), scale_lanes);
                    // SAFETY: `8 · lane + 8 ≤ 64` values of `x` and `out`.
                    unsafe {
                        let values = _mm256_loadu_ps(x.as_ptr().add(8 * lane));
                        let product = _mm256_mul_ps(values, factors);
                        _mm256_storeu_ps(out.as_mut_ptr().add(8 * lane), product);
                    }
                }
            }
        }
    }

    /// A dropout mask, one bit per element, and the scale of the kept elements.
    #[derive(Clone, Debug)]
    struct KeptBits {
        words: Vec<u64>,
        scale: f32,
    }

    #[derive(Debug)]
    struct DropoutBackward;

    impl UnaryGradient for DropoutBackward {
        type State = KeptBits;

        fn input_gradient(self, mask: &KeptBits, grad: FlexTensor) -> FlexTensor {
            let shape = grad.layout().shape().clone();
            match row_major_f32(&grad) {
                Some(g) => {
                    let mut dx = zeros_f32(g.len());
                    mask.words
                        .par_chunks(BLOCK_WORDS)
                        .zip(dx.par_chunks_mut(MASK_BLOCK))
                        .zip(g.par_chunks(MASK_BLOCK))
                        .for_each(|((words, dx), g)| mask_product(words, mask.scale, g, dx));
                    FlexTensor::from_data(TensorData::new(dx, shape))
                }
                // Not f32 (the operation is only recorded for f32): the gradient unchanged in
                // type, through Burn's product with the expanded mask.
                None => {
                    use burn::tensor::ops::FloatTensorOps;
                    let mut expanded = vec![0f32; shape.num_elements()];
                    expand_keep_words(&mask.words, mask.scale, &mut expanded);
                    let expanded = FlexTensor::from_data(TensorData::new(expanded, shape));
                    Flex::float_mul(grad, expanded)
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use burn::backend::Autodiff;
        use burn::tensor::{Distribution, Tensor, TensorData};
        use burn_flex::Flex;

        use super::super::scaled_keep_mask;
        use super::dropout;
        use crate::test_util::values;

        type T = Autodiff<Flex>;

        /// The fused operation against Burn's `x * mask` with the same mask: values and the
        /// gradient of `x`, bit for bit.
        fn check(shape: [usize; 3], keep: f64, seed: u64) {
            let device = Default::default();
            let x = Tensor::<T, 3>::random(shape, Distribution::Uniform(-2.0, 2.0), &device);
            let upstream = Tensor::<T, 3>::random(shape, Distribution::Uniform(-1.0, 1.0), &device);
            let count = shape.iter().product();
            let mask = Tensor::<T, 3>::from_data(
                TensorData::new(scaled_keep_mask(count, keep, seed), shape),
                &device,
            );
            let run = |fused: bool| {
                let x = x.clone().detach().require_grad();
                let y = if fused {
                    dropout(x.clone(), keep, seed).expect("the fast path")
                } else {
                    x.clone() * mask.clone()
                };
                let grads = (y.clone() * upstream.clone()).sum().backward();
                (values(y), values(x.grad(&grads).expect("gradient")))
            };
            assert_eq!(run(true), run(false));
        }

        #[test]
        fn one_partial_block_equals_burn_s_product_with_the_mask() {
            check([3, 7, 11], 0.9, 5);
        }

        #[test]
        fn several_blocks_with_an_odd_tail_equal_burn_s_product_with_the_mask() {
            check([3, 257, 171], 0.7, 11);
        }

        #[test]
        fn an_untracked_input_gives_the_values_alone() {
            let device = Default::default();
            let x = Tensor::<T, 3>::ones([2, 3, 50], &device);
            let y = values(dropout(x, 0.5, 3).expect("the fast path"));
            assert_eq!(y, scaled_keep_mask(300, 0.5, 3));
        }

        #[test]
        fn a_dropped_nan_stays_nan_as_in_burn_s_product() {
            let x = Tensor::<T, 2>::full([2, 150], f32::NAN, &Default::default());
            let y = values(dropout(x, 0.5, 9).expect("the fast path"));
            assert!(y.iter().all(|v| v.is_nan()));
        }

        /// The AVX2 kernel called directly (so that it is tested on CPUs whose dispatch picks
        /// AVX-512): equal to the scalar product, a dropped infinity giving NaN as there.
        #[cfg(target_arch = "x86_64")]
        #[test]
        fn the_avx2_mask_product_equals_the_scalar_one() {
            if !crate::flex_tensor::has_avx2_fma() {
                return;
            }
            let words = [0x8000_0000_0000_0001u64, 0x0123_4567_89ab_cdef, u64::MAX];
            let mut x: Vec<f32> = (0..150).map(|i| i as f32 - 70.0).collect();
            x[1] = f32::INFINITY;
            let (mut vector, mut scalar) = (vec![0f32; 150], vec![0f32; 150]);
            // SAFETY: the CPU has AVX2.
            unsafe { super::avx2::mask_product(&words, 2.0, &x, &mut vector) };
            for (word, (x, out)) in words.iter().zip(x.chunks(64).zip(scalar.chunks_mut(64))) {
                super::scalar_mask_product(*word, 2.0, x, out);
            }
            assert!(vector[1].is_nan() && scalar[1].is_nan());
            vector[1] = 0.0;
            scalar[1] = 0.0;
            assert_eq!(vector, scalar);
        }

        #[test]
        fn other_backends_take_the_caller_s_path() {
            let x = Tensor::<Flex, 2>::ones([2, 3], &Default::default());
            assert!(dropout(x, 0.5, 3).is_err());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::scaled_keep_mask;

    #[test]
    fn mask_keeps_the_expected_share_with_the_scale() {
        let mask = scaled_keep_mask(100_001, 0.9, 42);
        assert_eq!(mask.len(), 100_001);
        let kept = mask.iter().filter(|&&v| v != 0.0).count();
        // Binomial(100001, 0.9): the standard deviation is about 95.
        assert!((kept as f64 - 90_000.9).abs() < 600.0, "{kept}");
        let scale = (1.0 / 0.9) as f32;
        assert!(mask.iter().all(|&v| v == 0.0 || v == scale));
    }

    #[test]
    fn blocks_draw_different_streams() {
        let mask = scaled_keep_mask(2 * super::MASK_BLOCK, 0.5, 3);
        let (first, second) = mask.split_at(super::MASK_BLOCK);
        assert_ne!(first, second);
    }

    #[test]
    fn mask_is_a_function_of_the_seed() {
        assert_eq!(
            scaled_keep_mask(1000, 0.5, 7),
            scaled_keep_mask(1000, 0.5, 7)
        );
        assert_ne!(
            scaled_keep_mask(1000, 0.5, 7),
            scaled_keep_mask(1000, 0.5, 8)
        );
    }
}
