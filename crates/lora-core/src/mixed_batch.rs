//! Forward passes where each sample of the batch uses its own adapter (PEFT's `adapter_names`),
//! with the adapters gathered per sample into one batched product.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::tensor_util::linear_flat;
use crate::{LoraAdapter, LoraError, LoraLinear, BASE_ONLY};

impl<B: Backend> LoraLinear<B> {
    /// Applies the layer with one adapter per sample: sample `i` (along the first dimension of
    /// `x`) uses `adapter_names[i]`, or the base layer alone for [`BASE_ONLY`] (PEFT's
    /// `adapter_names`).
    ///
    /// The distinct adapters are stacked (their ranks padded with zeros, their scalings folded
    /// into `B`, the base alone as an all-zero slot), each sample gathers its own `A` and `B`,
    /// and one batched product computes every sample's update (the SGMV / BGMV idea): a batch
    /// with eight distinct adapters costs about what one adapter costs. DoRA adapters take
    /// part too (PEFT refuses them): each sample gathers its adapter's magnitude scale.
    ///
    /// Refused while adapters are merged and for unknown names, as in PEFT. With adapters
    /// disabled, every sample gets the base layer. While training, each adapter's dropout
    /// applies to its own samples.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::LinearConfig;
    /// use burn::tensor::Tensor;
    /// use lora_core::{LoraConfig, LoraInit, LoraLinear, BASE_ONLY};
    ///
    /// let device = Default::default();
    /// let base = LinearConfig::new(4, 3).init::<NdArray>(&device);
    /// let config = LoraConfig::new(2, 2.0).with_init_lora_weights(LoraInit::Random);
    /// let layer = LoraLinear::from_linear(base, &config).unwrap();
    /// let x = Tensor::<NdArray, 3>::ones([2, 5, 4], &device);
    /// let y = layer.forward_mixed(x, &["default", BASE_ONLY]).unwrap();
    /// assert_eq!(y.dims(), [2, 5, 3]);
    /// ```
    ///
    /// # Errors
    /// [`LoraError::BatchSizeMismatch`] when the names do not match the batch,
    /// [`LoraError::UnknownAdapter`], and [`LoraError::MergedLayer`] while adapters are
    /// merged.
    ///
    /// # Shapes
    /// - `x`: `[batch, ..., d_input]`, with `batch == adapter_names.len()`
    /// - output: `[batch, ..., d_output]`
    pub fn forward_mixed<const D: usize, S: AsRef<str>>(
        &self,
        x: Tensor<B, D>,
        adapter_names: &[S],
    ) -> Result<Tensor<B, D>, LoraError> {
        let dims = x.dims();
        let batch = dims[0];
        if adapter_names.len() != batch {
            return Err(LoraError::BatchSizeMismatch {
                batch,
                names: adapter_names.len(),
            });
        }
        if self.is_merged() {
            return Err(LoraError::MergedLayer {
                operation: "a mixed-batch forward",
                merged: self.state.merged.clone(),
            });
        }
        // Slot 0 is the base alone; slot k + 1 is the k-th distinct adapter.
        let mut distinct: Vec<usize> = Vec::new();
        let mut slots: Vec<i64> = Vec::with_capacity(batch);
        for name in adapter_names {
            let name = name.as_ref();
            if name == BASE_ONLY {
                slots.push(0);
                continue;
            }
            let index = self.require_adapter(name)?;
            let slot = match distinct.iter().position(|i| *i == index) {
                Some(k) => k,
                None => {
                    distinct.push(index);
                    distinct.len() - 1
                }
            };
            slots.push(slot as i64 + 1);
        }
        let output = self.base_forward(x.clone());
        if self.state.disabled || distinct.is_empty() {
            return Ok(output);
        }
        let device = x.device();
        let adapters: Vec<&LoraAdapter<B>> = distinct.iter().map(|i| &self.adapters[*i]).collect();
        let input = per_adapter_dropout(x, adapter_names, &adapters);
        let (d_input, d_output) = (self.d_input(), self.d_output());
        let tokens: usize = dims[1..D - 1].iter().product();
        let flat = input.reshape([batch, tokens, d_input]);
        let slots = Tensor::<B, 1, Int>::from_data(TensorData::new(slots, [batch]), &device);
        let (a, b) = gathered_factors(&adapters, slots.clone(), d_input, d_output);
        let update = flat.clone().matmul(a).matmul(b);
        let mut out_dims = dims;
        out_dims[D - 1] = d_output;
        if !adapters
            .iter()
            .any(|a| a.is_dora() && a.magnitude.is_some())
        {
            return Ok(output + update.reshape(out_dims));
        }
        // DoRA, per sample: output + (scale − 1) · W x + scale · update, where the scale is
        // 1 for the base and for plain adapters.
        let weight = self.base.weight.val().dequantize();
        let mut scales = vec![Tensor::<B, 1>::ones([d_output], &device)];
        for adapter in &adapters {
            scales.push(match (&adapter.magnitude, adapter.is_dora()) {
                (Some(magnitude), true) => {
                    let norm = (weight.clone() + adapter.delta_weight().detach())
                        .square()
                        .sum_dim(0)
                        .sqrt()
                        .squeeze_dim::<1>(0)
                        .detach();
                    magnitude.val() / norm
                }
                _ => Tensor::ones([d_output], &device),
            });
        }
        let scale = Tensor::stack::<2>(scales, 0)
            .select(0, slots)
            .reshape([batch, 1, d_output]);
        let base_term = linear_flat(flat, weight, None);
        let adapted = (scale.clone() - 1.0) * base_term + scale * update;
        Ok(output + adapted.reshape(out_dims))
    }
}

/// Every sample's `A` (`[batch, d_input, rank]`) and scaled `B` (`[batch, rank, d_output]`),
/// gathered by slot from the stacked adapters (slot 0: zeros, the base alone), ranks padded
/// with zeros to the largest.
fn gathered_factors<B: Backend>(
    adapters: &[&LoraAdapter<B>],
    slots: Tensor<B, 1, Int>,
    d_input: usize,
    d_output: usize,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let device = slots.device();
    let rank = adapters.iter().map(|a| a.rank()).max().unwrap_or(1);
    let mut stacked_a = vec![Tensor::<B, 2>::zeros([d_input, rank], &device)];
    let mut stacked_b = vec![Tensor::<B, 2>::zeros([rank, d_output], &device)];
    for adapter in adapters {
        let mut a = adapter.lora_a.val();
        let mut b = adapter.lora_b.val().mul_scalar(adapter.scaling());
        let padding = rank - adapter.rank();
        if padding > 0 {
            a = Tensor::cat(vec![a, Tensor::zeros([d_input, padding], &device)], 1);
            b = Tensor::cat(vec![b, Tensor::zeros([padding, d_output], &device)], 0);
        }
        stacked_a.push(a);
        stacked_b.push(b);
    }
    (
        Tensor::stack::<3>(stacked_a, 0).select(0, slots.clone()),
        Tensor::stack::<3>(stacked_b, 0).select(0, slots),
    )
}

/// `x` with each adapter's dropout on the samples that use it, and the base's samples as they
/// are; `x` itself when no dropout is active (outside training, or every probability 0).
fn per_adapter_dropout<B: Backend, const D: usize, S: AsRef<str>>(
    x: Tensor<B, D>,
    adapter_names: &[S],
    adapters: &[&LoraAdapter<B>],
) -> Tensor<B, D> {
    let device = x.device();
    if !B::ad_enabled(&device) || adapters.iter().all(|a| a.dropout.prob <= 0.0) {
        return x;
    }
    let batch = adapter_names.len();
    let mask = |keep: &dyn Fn(&str) -> bool| {
        let values: Vec<f32> = adapter_names
            .iter()
            .map(|n| f32::from(u8::from(keep(n.as_ref()))))
            .collect();
        let mut dims = [1usize; D];
        dims[0] = batch;
        Tensor::<B, 1>::from_data(TensorData::new(values, [batch]), &device).reshape(dims)
    };
    let mut input = x.clone() * mask(&|n| n == BASE_ONLY);
    for adapter in adapters {
        let samples = mask(&|n| n == adapter.name);
        input = input + adapter.dropout.forward(x.clone()) * samples;
    }
    input
}
