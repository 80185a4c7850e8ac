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
/// 2.3 ns on one thread (`examples/kernel_shapes.rs`). Other backends draw the mask on the device with Burn's sampler.
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
    let threshold = (keep * 4_294_967_296.0).min(4_294_967_295.0) as u64;
    let scale = (1.0 / keep) as f32;
    let mut mask = vec![0f32; count];
    let fill = |(block, values): (usize, &mut [f32])| {
        let block_seed = seed ^ (block as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(block_seed);
        let value = |draw: u64| if draw < threshold { scale } else { 0.0 };
        let mut pairs = values.chunks_exact_mut(2);
        for pair in &mut pairs {
            let bits = rng.next_u64();
            pair[0] = value(bits & 0xffff_ffff);
            pair[1] = value(bits >> 32);
        }
        if let [last] = pairs.into_remainder() {
            *last = value(rng.next_u64() & 0xffff_ffff);
        }
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
