//! Int8 storage of the frozen base weights, for inference with less memory.

use burn::module::{ModuleMapper, Quantizer};
use burn::tensor::backend::Backend;
use burn::tensor::ops::QuantizedTensor;
use burn::tensor::quantization::{
    Calibration, QTensorPrimitive, QuantLevel, QuantParam, QuantScheme, QuantValue,
};
use burn::tensor::DType;

use crate::{in_layer, LoraError, LoraLinear, LoraModelOps, LoraModule};

/// Burn's symmetric int8 quantizer with min-max calibration: one scale per tensor
/// (`block_size: None`) or one per run of `block_size` consecutive weights along the output
/// dimension (more accurate; the output dimension must be a multiple of it).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::quantization::{QuantLevel, QuantValue};
/// use lora_core::int8_quantizer;
///
/// let quantizer = int8_quantizer::<NdArray>(Some(32));
/// assert_eq!(quantizer.scheme.level, QuantLevel::block([32]));
/// assert_eq!(quantizer.scheme.value, QuantValue::Q8S);
/// ```
pub fn int8_quantizer<B: Backend>(block_size: Option<u8>) -> Quantizer {
    let level = match block_size {
        None => QuantLevel::Tensor,
        Some(size) => QuantLevel::block([size]),
    };
    let scheme: QuantScheme = <QuantizedTensor<B> as QTensorPrimitive>::default_scheme()
        .with_value(QuantValue::Q8S)
        .with_level(level)
        .with_param(QuantParam::F32);
    Quantizer {
        calibration: Calibration::MinMax,
        scheme,
    }
}

impl<B: Backend> LoraLinear<B> {
    /// Stores the frozen base weight quantized by `quantizer` (usually
    /// [`int8_quantizer`]); the adapters and the bias stay in floating point. Every forward pass
    /// then dequantizes the weight for its product, so outputs differ from the float layer by
    /// the quantization error (at most half a scale step per weight).
    ///
    /// For inference only: refused on an autodiff backend ([`LoraError::QuantizedTraining`];
    /// quantize the model returned by `valid()`). Refused while adapters are merged, and for a
    /// block size that does not divide the output dimension. A quantized layer cannot merge
    /// adapters ([`LoraError::QuantizedBase`]); it can still add, switch and delete them.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::LinearConfig;
    /// use lora_core::{int8_quantizer, LoraConfig, LoraLinear};
    ///
    /// let device = Default::default();
    /// let base = LinearConfig::new(64, 32).init::<NdArray>(&device);
    /// let mut layer = LoraLinear::from_linear(base, &LoraConfig::new(4, 8.0)).unwrap();
    /// layer.quantize_base(&mut int8_quantizer::<NdArray>(Some(32))).unwrap();
    /// assert!(layer.is_base_quantized());
    /// assert!(layer.merge_active().is_err());
    /// ```
    ///
    /// # Errors
    /// [`LoraError::QuantizedTraining`] on an autodiff backend, [`LoraError::MergedLayer`] while
    /// adapters are merged, and [`LoraError::QuantizationBlock`] for a block size that does not
    /// divide the output dimension.
    pub fn quantize_base(&mut self, quantizer: &mut Quantizer) -> Result<(), LoraError> {
        if self.is_merged() {
            return Err(LoraError::MergedLayer {
                operation: "quantizing the base weight",
                merged: self.state.merged.clone(),
            });
        }
        if B::ad_enabled(&self.base.weight.device()) {
            return Err(LoraError::QuantizedTraining);
        }
        if self.is_base_quantized() {
            return Ok(());
        }
        if let QuantLevel::Block(block) = quantizer.scheme.level {
            let size = block.num_elements();
            if size == 0 || !self.d_output().is_multiple_of(size) {
                return Err(LoraError::QuantizationBlock {
                    block: size,
                    d_output: self.d_output(),
                });
            }
        }
        let weight = self.base.weight.clone();
        self.base.weight = ModuleMapper::<B>::map_float(quantizer, weight);
        Ok(())
    }

    /// Whether the base weight is stored quantized ([`quantize_base`](Self::quantize_base)).
    pub fn is_base_quantized(&self) -> bool {
        matches!(self.base.weight.val().dtype(), DType::QFloat(_))
    }
}

/// Quantizes the base weight of every LoRA layer in `module` (see
/// [`LoraLinear::quantize_base`]) and returns how many layers were quantized. Layers outside
/// `LoraLinear` (embeddings, norms) keep their float weights.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::LinearConfig;
/// use lora_core::{int8_quantizer, quantize_base_weights, LoraLinear};
///
/// let device = Default::default();
/// let mut layers: Vec<LoraLinear<NdArray>> = (0..3)
///     .map(|_| LoraLinear::new(LinearConfig::new(32, 32).init(&device)))
///     .collect();
/// let quantized = quantize_base_weights(&mut layers, &mut int8_quantizer::<NdArray>(None));
/// assert_eq!(quantized, Ok(3));
/// ```
///
/// # Errors
/// The first layer that [`LoraLinear::quantize_base`] refuses, as [`LoraError::InLayer`]
/// naming it; the layers before it stay quantized.
pub fn quantize_base_weights<B: Backend, M: LoraModule<B> + ?Sized>(
    module: &mut M,
    quantizer: &mut Quantizer,
) -> Result<usize, LoraError> {
    let mut count = 0;
    module.try_visit_lora_mut(|path, layer| {
        in_layer(path, layer.quantize_base(quantizer))?;
        count += 1;
        Ok(())
    })?;
    Ok(count)
}
