//! Small tensor helpers shared by the layer's code paths.

use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::{Tensor, TensorData};

use crate::LoraError;

/// Reads a tensor of any rank back as row-major values of element type `E` (converted from the
/// backend's float type).
pub(crate) fn to_host<E: burn::tensor::Element, B: Backend, const D: usize>(
    tensor: Tensor<B, D>,
) -> Result<Vec<E>, LoraError> {
    tensor
        .into_data()
        .convert::<E>()
        .to_vec::<E>()
        .map_err(|e| LoraError::TensorData {
            reason: format!("{e:?}"),
        })
}

/// Builds a 2-D tensor from row-major `f64` values.
pub(crate) fn from_host_f64<B: Backend>(
    values: Vec<f64>,
    shape: [usize; 2],
    device: &B::Device,
) -> Tensor<B, 2> {
    let values: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// `x · W + b` for `x` of any rank, computed as one 2-D product over the flattened leading
/// dimensions: the batched path of CPU backends copies the weight for every call.
pub(crate) fn linear_flat<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
) -> Tensor<B, D> {
    if D <= 2 {
        return linear(x, weight, bias);
    }
    let dims = x.dims();
    let rows: usize = dims[..D - 1].iter().product();
    let [d_input, d_output] = weight.dims();
    let flat = linear(x.reshape([rows, d_input]), weight, bias);
    let mut out = dims;
    out[D - 1] = d_output;
    flat.reshape(out)
}
