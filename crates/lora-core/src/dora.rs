//! DoRA (weight-decomposed LoRA) as a [`LoraVariant`]: a trainable magnitude per output feature
//! rescales the adapted weight.

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::tensor_util::linear_flat;
use crate::variant::{BaseTerms, LoraVariant, VariantMerge};
use crate::{LoraAdapter, LoraError};

/// DoRA (PEFT's `DoraLinearVariant`): the layer computes `m / ‖W + s·A·B‖ · (W + s·A·B)` per
/// output feature, with the norm treated as a constant in the backward pass, as PEFT does.
/// Adapters whose config has `use_dora` use it.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::LinearConfig;
/// use lora_core::{LoraConfig, LoraLinear};
///
/// let base = LinearConfig::new(4, 3).init::<NdArray>(&Default::default());
/// let dora = LoraConfig { use_dora: true, ..LoraConfig::new(2, 4.0) };
/// let layer = LoraLinear::from_linear(base, &dora).unwrap();
/// // Added to a layer, the adapter gets PEFT's initial magnitude `‖W + s·A·B‖`.
/// assert_eq!(layer.adapters[0].magnitude.as_ref().unwrap().dims(), [3]);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Dora;

impl<B: Backend> LoraVariant<B> for Dora {
    fn name(&self) -> &'static str {
        "DoRA"
    }

    /// Sets PEFT's initial magnitude `‖W + s·A·B‖` unless the adapter has one (read from a
    /// file, say).
    fn init(&self, adapter: &mut LoraAdapter<B>, weight: Tensor<B, 2>) {
        if adapter.magnitude.is_none() {
            let norm = column_norm(weight + adapter.delta_weight());
            adapter.magnitude = Some(Param::from_tensor(norm.detach()));
        }
    }

    /// `W' = m / ‖W + ΔW‖ · (W + ΔW)`, keeping the factor `m / ‖W + ΔW‖` to unmerge.
    fn merge(
        &self,
        adapter: &LoraAdapter<B>,
        weight: Tensor<B, 2>,
    ) -> Result<VariantMerge<B>, LoraError> {
        let combined = weight + adapter.delta_weight().detach();
        let Some(magnitude) = &adapter.magnitude else {
            return Ok(VariantMerge {
                weight: combined,
                cache: Vec::new(),
            });
        };
        let factor = magnitude.val().detach() / column_norm(combined.clone());
        let merged = combined * factor.clone().unsqueeze_dim::<2>(0);
        let cache = crate::tensor_util::to_host::<f32, _, 1>(factor)?;
        Ok(VariantMerge {
            weight: merged,
            cache,
        })
    }

    /// `W = W' / factor − ΔW`.
    fn unmerge(
        &self,
        adapter: &LoraAdapter<B>,
        merged: Tensor<B, 2>,
        cache: &[f32],
    ) -> Tensor<B, 2> {
        let delta = adapter.delta_weight().detach();
        if cache.is_empty() {
            return merged - delta;
        }
        let factor = Tensor::<B, 1>::from_data(
            burn::tensor::TensorData::new(cache.to_vec(), [cache.len()]),
            &merged.device(),
        );
        merged / factor.unsqueeze_dim::<2>(0) - delta
    }

    /// `output + (scale − 1)·(x·W) + scale · s·B(A(dropout(x)))` with `scale = m / ‖W + ΔW‖`.
    /// While dropout trains, the base term is recomputed on the dropped input, as PEFT does.
    fn forward(
        &self,
        adapter: &LoraAdapter<B>,
        base: &BaseTerms<B>,
        x: Tensor<B, 2>,
        output: Tensor<B, 2>,
    ) -> Tensor<B, 2> {
        let training = B::ad_enabled(&x.device()) && adapter.dropout.prob > 0.0;
        let dropped = adapter.dropout.forward(x);
        let branch = adapter.branch(dropped.clone());
        let Some(magnitude) = &adapter.magnitude else {
            return output + branch;
        };
        let scale = column_scale(base.weight.clone(), adapter, magnitude.val()).unsqueeze_dim(0);
        let base_term = if training {
            linear_flat(dropped, base.weight.clone(), None)
        } else {
            base.product.clone()
        };
        output + (scale.clone() - 1.0) * base_term + scale * branch
    }
}

/// The L2 norm of each output feature's weights: `‖W[:, j]‖` in Burn's `[d_input, d_output]`
/// layout (PEFT's row norm of `[d_output, d_input]`), shape `[d_output]`.
fn column_norm<B: Backend>(weight: Tensor<B, 2>) -> Tensor<B, 1> {
    weight.square().sum_dim(0).sqrt().squeeze_dim::<1>(0)
}

/// DoRA's factor `m / ‖W + s·A·B‖` per output feature, with the norm detached from the graph
/// (PEFT treats it as a constant).
fn column_scale<B: Backend>(
    weight: Tensor<B, 2>,
    adapter: &LoraAdapter<B>,
    magnitude: Tensor<B, 1>,
) -> Tensor<B, 1> {
    let norm = column_norm(weight + adapter.delta_weight().detach()).detach();
    magnitude / norm
}
