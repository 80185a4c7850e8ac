//! T5's layer norm: scale only, no mean subtraction, no bias (RMS norm).

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use lora_core::rms_norm;

/// `y = weight · x / sqrt(mean(x²) + ε)` over the last dimension.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_t5::T5LayerNorm;
///
/// let device = Default::default();
/// let norm = T5LayerNorm::<NdArray>::new(4, 1e-6, &device);
/// let y = norm.forward(Tensor::<NdArray, 3>::from_floats([[[2.0, 2.0, 2.0, 2.0]]], &device));
/// let y = y.into_data().to_vec::<f32>().unwrap();
/// assert!((y[0] - 1.0).abs() < 1e-5);
/// ```
#[derive(Module, Debug)]
pub struct T5LayerNorm<B: Backend> {
    /// The scale, `[d_model]` (Hugging Face `layer_norm.weight`).
    pub weight: Param<Tensor<B, 1>>,
    /// ε added to the mean square.
    pub epsilon: f64,
}

impl<B: Backend> T5LayerNorm<B> {
    /// A norm of width `d_model` with unit scale.
    pub fn new(d_model: usize, epsilon: f64, device: &B::Device) -> Self {
        Self {
            weight: Param::from_tensor(Tensor::ones([d_model], device)),
            epsilon,
        }
    }

    /// Normalises `x` (`[..., d_model]`), in one pass where `lora_core::rms_norm` has a fast path
    /// (flex, and one recorded operation on autodiff over flex).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        rms_norm(x, self.weight.val(), self.epsilon)
    }
}
