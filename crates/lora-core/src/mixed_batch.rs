//! Forward passes where each sample of the batch uses its own adapter (PEFT's `adapter_names`).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::{LoraError, LoraLinear, BASE_ONLY};

impl<B: Backend> LoraLinear<B> {
    /// Applies the layer with one adapter per sample: sample `i` (along the first dimension of
    /// `x`) uses `adapter_names[i]`, or the base layer alone for [`BASE_ONLY`]. Each adapter runs
    /// once over the batch with a per-sample mask; the batch is never split into sub-batches.
    ///
    /// Refused while adapters are merged, for DoRA adapters, and for unknown names, as in PEFT.
    /// With adapters disabled, every sample gets the base layer.
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
    /// [`LoraError::UnknownAdapter`], [`LoraError::MergedLayer`] while adapters are merged, and
    /// [`LoraError::UnsupportedVariant`] for a DoRA adapter.
    ///
    /// # Shapes
    /// - `x`: `[batch, ..., d_input]`, with `batch == adapter_names.len()`
    /// - output: `[batch, ..., d_output]`
    pub fn forward_mixed<const D: usize, S: AsRef<str>>(
        &self,
        x: Tensor<B, D>,
        adapter_names: &[S],
    ) -> Result<Tensor<B, D>, LoraError> {
        let batch = x.dims()[0];
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
        let mut distinct: Vec<&str> = Vec::new();
        for name in adapter_names {
            let name = name.as_ref();
            if name == BASE_ONLY || distinct.contains(&name) {
                continue;
            }
            let index = self.require_adapter(name)?;
            if let Some(variant) = self.adapters[index].variant() {
                return Err(LoraError::UnsupportedVariant {
                    operation: "a mixed-batch forward",
                    variant: variant.name(),
                    name: name.to_string(),
                });
            }
            distinct.push(name);
        }
        let mut output = self.base_forward(x.clone());
        if self.state.disabled {
            return Ok(output);
        }
        let device = x.device();
        for name in distinct {
            let index = self.require_adapter(name)?;
            let adapter = &self.adapters[index];
            let mask: Vec<f32> = adapter_names
                .iter()
                .map(|n| if n.as_ref() == name { 1.0 } else { 0.0 })
                .collect();
            let mut dims = [1usize; D];
            dims[0] = batch;
            let mask =
                Tensor::<B, 1>::from_data(TensorData::new(mask, [batch]), &device).reshape(dims);
            let branch = adapter.branch(adapter.dropout.forward(x.clone()));
            output = output + branch * mask;
        }
        Ok(output)
    }
}
