//! LoRA variants (PEFT's `LoraVariant`): strategies that change how one adapter is prepared,
//! merged, unmerged and applied, so that the layer's main paths stay plain LoRA.

use std::fmt::Debug;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::{LoraAdapter, LoraError};

/// The base layer's terms a variant's forward pass may reuse, computed once per call for all
/// the active adapters.
#[derive(Debug, Clone)]
pub struct BaseTerms<B: Backend> {
    /// The base weight, dequantized, in Burn's layout `[d_input, d_output]`.
    pub weight: Tensor<B, 2>,
    /// `x · W` without the bias, `[tokens, d_output]`.
    pub product: Tensor<B, 2>,
}

/// What merging a variant adapter gives: the new base weight, and the per-output values the
/// variant needs to take the adapter out again exactly.
#[derive(Debug, Clone)]
pub struct VariantMerge<B: Backend> {
    /// The base weight with the adapter folded in, `[d_input, d_output]`.
    pub weight: Tensor<B, 2>,
    /// Kept on the adapter until it is unmerged.
    pub cache: Vec<f32>,
}

/// How one kind of adapter departs from plain LoRA (PEFT's `LoraVariant`): hooks for adding
/// the adapter to a layer, merging, unmerging and the forward pass.
///
/// A [`LoraLinear`](crate::LoraLinear) runs plain LoRA for an adapter without a variant and
/// calls these hooks for one with a variant ([`LoraAdapter::variant`]); the variant is chosen
/// by the adapter's config (`use_dora`: [`Dora`](crate::Dora)). Shapes are 2-D: the layer flattens the
/// leading dimensions of its input into `tokens` before it calls a hook.
///
/// ```
/// use burn::backend::NdArray;
/// use lora_core::{LoraAdapter, LoraConfig};
///
/// let device = Default::default();
/// let dora = LoraConfig { use_dora: true, ..LoraConfig::new(2, 4.0) };
/// let adapter = LoraAdapter::<NdArray>::new("d", 6, 5, &dora, &device).unwrap();
/// assert_eq!(adapter.variant().map(|v| v.name()), Some("DoRA"));
/// let plain = LoraAdapter::<NdArray>::new("p", 6, 5, &LoraConfig::new(2, 4.0), &device).unwrap();
/// assert!(plain.variant().is_none());
/// ```
pub trait LoraVariant<B: Backend>: Debug + Sync {
    /// The variant's name, for messages (`"DoRA"`).
    fn name(&self) -> &'static str;

    /// Completes `adapter` as it joins a layer whose base weight is `weight`
    /// (`[d_input, d_output]`, dequantized).
    fn init(&self, adapter: &mut LoraAdapter<B>, weight: Tensor<B, 2>);

    /// The base weight `weight` with `adapter` folded in.
    ///
    /// # Errors
    /// [`LoraError::TensorData`] when a value the unmerge needs cannot be read back.
    fn merge(
        &self,
        adapter: &LoraAdapter<B>,
        weight: Tensor<B, 2>,
    ) -> Result<VariantMerge<B>, LoraError>;

    /// The base weight with `adapter` taken out of `merged` again; `cache` is what
    /// [`merge`](Self::merge) kept.
    fn unmerge(
        &self,
        adapter: &LoraAdapter<B>,
        merged: Tensor<B, 2>,
        cache: &[f32],
    ) -> Tensor<B, 2>;

    /// `output` with the adapter's contribution for the input `x` added, where `output`
    /// already holds the base layer's result (bias included) and any earlier adapter's.
    ///
    /// # Shapes
    /// - `x`: `[tokens, d_input]`, before the adapter's dropout
    /// - `output`, result: `[tokens, d_output]`
    fn forward(
        &self,
        adapter: &LoraAdapter<B>,
        base: &BaseTerms<B>,
        x: Tensor<B, 2>,
        output: Tensor<B, 2>,
    ) -> Tensor<B, 2>;
}
