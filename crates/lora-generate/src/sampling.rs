//! Drawing the next tokens on the device.

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use rand::RngExt;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::token_mask::per_row;
use crate::{GenerationError, HostTraffic};

/// The most likely token of each row (the first of equal scores).
pub(crate) fn most_likely<B: Backend>(
    scores: Tensor<B, 2>,
    traffic: &HostTraffic,
) -> Result<Vec<u32>, GenerationError> {
    let tokens = traffic.ints(scores.argmax(1))?;
    Ok(tokens.into_iter().map(|t| t as u32).collect())
}

/// One token per row drawn from `softmax(scores)` by inverting its cumulative sum at a
/// uniform from `rng`: one uniform goes to the device and one id comes back per row.
pub(crate) fn draw<B: Backend>(
    scores: Tensor<B, 2>,
    rng: &mut Xoshiro256PlusPlus,
    traffic: &HostTraffic,
) -> Result<Vec<u32>, GenerationError> {
    let [rows, vocab] = scores.dims();
    let cumulative = softmax(scores, 1).cumsum(1);
    let total = cumulative.clone().narrow(1, vocab - 1, 1);
    // In (0, 1], so that a token of probability 0 is never drawn.
    let uniforms: Vec<f32> = (0..rows).map(|_| 1.0 - rng.random::<f32>()).collect();
    let targets = total.mul(traffic.float_tensor(uniforms, [rows, 1], &cumulative.device()));
    let below = cumulative.lower(per_row(targets, vocab)).int().sum_dim(1);
    let tokens = traffic.ints(below.clamp_max(vocab as i64 - 1))?;
    Ok(tokens.into_iter().map(|t| t as u32).collect())
}
