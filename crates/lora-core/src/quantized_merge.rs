//! Merging adapters into an int8 base weight: dequantize, merge, quantize again, and say how
//! far the requantized weight is from the exact merge.

use burn::module::{ModuleMapper, Param, Quantizer};
use burn::tensor::backend::Backend;
use burn::tensor::quantization::Calibration;
use burn::tensor::DType;

use crate::tensor_util::to_host;
use crate::{in_layer, LoraError, LoraLinear, LoraModelOps, LoraModule};

/// How far merging into int8 base weights moved them from the exact float merge: the
/// requantization error `|q(W + ΔW) − (W + ΔW)|` over every merged weight, beside the size of
/// the updates merged (an error well below the updates means the merge kept the adapter).
///
/// ```
/// let report = lora_core::RequantizationError { layers: 2, weights: 64, max_abs_error: 0.01, mean_abs_error: 0.004, max_abs_update: 0.5 };
/// assert!(report.max_abs_error < report.max_abs_update);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequantizationError {
    /// Layers whose adapters were merged.
    pub layers: usize,
    /// Weights requantized.
    pub weights: usize,
    /// The largest `|requantized − exact|` of a weight.
    pub max_abs_error: f64,
    /// The mean `|requantized − exact|`.
    pub mean_abs_error: f64,
    /// The largest `|ΔW|` merged.
    pub max_abs_update: f64,
}

impl RequantizationError {
    fn none() -> Self {
        Self {
            layers: 0,
            weights: 0,
            max_abs_error: 0.0,
            mean_abs_error: 0.0,
            max_abs_update: 0.0,
        }
    }

    fn add(self, other: Self) -> Self {
        let weights = self.weights + other.weights;
        let mean = if weights == 0 {
            0.0
        } else {
            (self.mean_abs_error * self.weights as f64
                + other.mean_abs_error * other.weights as f64)
                / weights as f64
        };
        Self {
            layers: self.layers + other.layers,
            weights,
            max_abs_error: self.max_abs_error.max(other.max_abs_error),
            mean_abs_error: mean,
            max_abs_update: self.max_abs_update.max(other.max_abs_update),
        }
    }
}

impl<B: Backend> LoraLinear<B> {
    /// [`merge_and_unload`](Self::merge_and_unload) for a quantized base weight
    /// ([`quantize_base`](Self::quantize_base)): dequantizes it, merges the active adapters
    /// (checking for non-finite values), quantizes the result again with the weight's own
    /// scheme (min-max calibration, as [`int8_quantizer`](crate::int8_quantizer)) and deletes
    /// every adapter. The rounding cannot be taken out again, so the adapters are unloaded, not
    /// kept unmerged. A float base is merged exactly (the error is zero).
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::LinearConfig;
    /// use lora_core::{int8_quantizer, LoraConfig, LoraInit, LoraLinear};
    ///
    /// let device = Default::default();
    /// let config = LoraConfig::new(4, 8.0).with_init_lora_weights(LoraInit::Random);
    /// let base = LinearConfig::new(64, 32).init::<NdArray>(&device);
    /// let mut layer = LoraLinear::from_linear(base, &config).unwrap();
    /// layer.quantize_base(&mut int8_quantizer::<NdArray>(Some(32))).unwrap();
    /// let report = layer.merge_and_unload_quantized().unwrap();
    /// assert!(layer.is_base_quantized() && layer.adapters.is_empty());
    /// assert!(report.max_abs_error <= report.max_abs_update);
    /// ```
    ///
    /// # Errors
    /// The refusals of [`safe_merge`](Self::safe_merge) (a non-finite merge, a routed layer;
    /// the layer is left as it was), and [`LoraError::TensorData`] when a weight cannot be read
    /// back.
    pub fn merge_and_unload_quantized(&mut self) -> Result<RequantizationError, LoraError> {
        let scheme = match self.base.weight.val().dtype() {
            DType::QFloat(scheme) => Some(scheme),
            _ => None,
        };
        let active = if self.state.disabled {
            Vec::new()
        } else {
            self.state.active.clone()
        };
        let mut float = self.clone();
        let id = self.base.weight.id;
        let dequantized = self.base.weight.val().dequantize();
        float.base.weight = Param::initialized(id, dequantized.clone().set_require_grad(false));
        float.safe_merge(&active)?;
        let exact = float.base.weight.val();
        let update = to_host::<f64, _, 2>(exact.clone() - dequantized)?;
        let weight = match scheme {
            None => exact.clone(),
            Some(scheme) => {
                let mut quantizer = Quantizer {
                    calibration: Calibration::MinMax,
                    scheme,
                };
                let param = Param::initialized(id, exact.clone());
                ModuleMapper::<B>::map_float(&mut quantizer, param).val()
            }
        };
        let error = to_host::<f64, _, 2>(weight.clone().dequantize() - exact)?;
        let weights = error.len();
        let report = RequantizationError {
            layers: usize::from(!active.is_empty()),
            weights,
            max_abs_error: error.iter().fold(0.0, |m, e| m.max(e.abs())),
            mean_abs_error: error.iter().map(|e| e.abs()).sum::<f64>() / weights.max(1) as f64,
            max_abs_update: update.iter().fold(0.0, |m, u| m.max(u.abs())),
        };
        *self = self.rewrapped(burn::nn::Linear {
            weight: Param::initialized(id, weight.set_require_grad(false)),
            bias: float.base.bias.clone(),
        });
        Ok(report)
    }
}

/// [`LoraLinear::merge_and_unload_quantized`] on every layer with adapters of `model`; the
/// report covers them all.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::LinearConfig;
/// use lora_core::{int8_quantizer, merge_and_unload_quantized, quantize_base_weights, LoraConfig, LoraInit, LoraLinear};
///
/// let device = Default::default();
/// let config = LoraConfig::new(2, 4.0).with_init_lora_weights(LoraInit::Random);
/// let mut layers: Vec<LoraLinear<NdArray>> = (0..2)
///     .map(|_| LoraLinear::from_linear(LinearConfig::new(32, 32).init(&device), &config).unwrap())
///     .collect();
/// quantize_base_weights(&mut layers, &mut int8_quantizer::<NdArray>(None)).unwrap();
/// let report = merge_and_unload_quantized(&mut layers).unwrap();
/// assert_eq!(report.layers, 2);
/// ```
///
/// # Errors
/// The first layer's refusal, as [`LoraError::InLayer`] naming it; the layers before it stay
/// merged.
pub fn merge_and_unload_quantized<B: Backend, M: LoraModule<B> + ?Sized>(
    model: &mut M,
) -> Result<RequantizationError, LoraError> {
    let mut report = RequantizationError::none();
    model.try_visit_lora_mut(|path, layer| {
        if layer.adapters.is_empty() {
            return Ok(());
        }
        report = report.add(in_layer(path, layer.merge_and_unload_quantized())?);
        Ok(())
    })?;
    Ok(report)
}
