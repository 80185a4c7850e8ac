//! DoRA (weight-decomposed LoRA): the magnitude rescaling of the adapted weight.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::LoraAdapter;

/// The L2 norm of each output feature's weights: `‖W[:, j]‖` in Burn's `[d_input, d_output]`
/// layout (PEFT's row norm of `[d_output, d_input]`), shape `[d_output]`.
pub(crate) fn column_norm<B: Backend>(weight: Tensor<B, 2>) -> Tensor<B, 1> {
    weight.square().sum_dim(0).sqrt().squeeze_dim::<1>(0)
}

/// DoRA's factor `m / ‖W + s·A·B‖` per output feature, with the norm detached from the graph
/// (PEFT treats it as a constant).
pub(crate) fn dora_column_scale<B: Backend>(
    weight: Tensor<B, 2>,
    adapter: &LoraAdapter<B>,
    magnitude: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let norm = column_norm(weight + adapter.delta_weight().detach()).detach();
    magnitude / norm
}
