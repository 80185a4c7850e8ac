//! `x · W + b` for a frozen weight on autodiff over the flex backend, recorded as one operation
//! with the GEMM called directly.
//!
//! Burn 0.21's flex backend allocates every product's output as zeroed bytes and then copies
//! them into a buffer of the alignment it requires (`FlexTensor::empty`): two passes over the
//! output on the calling thread before the threads multiply. A LoRA training step spends about a
//! tenth of its time there. Here the output is one `Vec<f32>` that the GEMM writes, and on
//! autodiff over flex the product is recorded as one operation whose backward pass is
//! `∂x = g · Wᵀ`, the same way (the weight and bias are frozen, so they get no gradient).

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};

use crate::flex_tensor::{
    any_float_primitive, from_autodiff_flex, gemm_into, into_autodiff_flex, row_major_f32,
    zeros_f32, MatrixView,
};

/// Multiply-adds from which a product runs on all threads: burn-flex's own threshold.
const PARALLEL_MIN_PRODUCTS: usize = 192 * 192 * 192;

/// `x · weight + bias` over the last dimension of `x` (`weight` `[d_input, d_output]`) on
/// autodiff over flex, for a frozen `f32` weight and bias; `Err(x)` otherwise.
pub(crate) fn frozen_linear<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: &Tensor<B, 2>,
    bias: Option<&Tensor<B, 1>>,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let [d_input, d_output] = weight.dims();
    if x.dims()[D - 1] != d_input
        || weight.is_require_grad()
        || bias.is_some_and(|b| b.is_require_grad() || b.dims() != [d_output])
    {
        return Err(x);
    }
    let (Some(weight), bias) = (any_float_primitive(weight), bias.map(any_float_primitive)) else {
        return Err(x);
    };
    let bias = match bias {
        Some(None) => return Err(x),
        Some(Some(bias)) => Some(bias),
        None => None,
    };
    let mut out_shape = x.dims();
    out_shape[D - 1] = d_output;

    // Inference on flex keeps Burn's product: on the embedded model's generation, whose
    // products are small, it measured faster (`lora-t5 eval`, 0.7 s against 0.9 s).
    let x = into_autodiff_flex(x)?;
    let primitive = x.into_primitive().tensor();
    let Some(y) = product(
        &primitive.primitive,
        &weight,
        bias.as_ref(),
        [d_input, d_output],
    ) else {
        return Err(from_autodiff_flex(Tensor::from_primitive(
            TensorPrimitive::Float(primitive),
        )));
    };
    let y = burn_flex::FlexTensor::from_data(TensorData::new(y, out_shape));
    Ok(from_autodiff_flex(Tensor::from_primitive(
        TensorPrimitive::Float(autodiff::record(&primitive, weight, y)),
    )))
}

/// `x · W + b` as row-major values; `None` if a tensor is not `f32` or not as shaped.
fn product(
    x: &burn_flex::FlexTensor,
    weight: &burn_flex::FlexTensor,
    bias: Option<&burn_flex::FlexTensor>,
    [d_input, d_output]: [usize; 2],
) -> Option<Vec<f32>> {
    let x = row_major_f32(x)?;
    let w = row_major_f32(weight)?;
    let rows = x.len() / d_input.max(1);
    let mut y = zeros_f32(rows * d_output);
    gemm_into(
        &mut y,
        false,
        MatrixView::row_major(&x, d_input),
        MatrixView::row_major(&w, d_output),
        [rows, d_input, d_output],
        rows * d_input * d_output >= PARALLEL_MIN_PRODUCTS,
    )?;
    if let Some(bias) = bias {
        let b = row_major_f32(bias)?;
        for row in y.chunks_mut(d_output) {
            row.iter_mut().zip(b.iter()).for_each(|(y, b)| *y += b);
        }
    }
    Some(y)
}

mod autodiff {
    use burn::tensor::TensorData;
    use burn_flex::{Flex, FlexTensor};

    use super::PARALLEL_MIN_PRODUCTS;
    use crate::flex_tensor::{gemm_into, row_major_f32, zeros_f32, MatrixView};
    use crate::recorded_op::{record_unary, AutodiffPrimitive, UnaryGradient};

    /// Records `output = x · weight (+ bias)` with `x`'s node as the one parent.
    pub(super) fn record(
        x: &AutodiffPrimitive,
        weight: FlexTensor,
        output: FlexTensor,
    ) -> AutodiffPrimitive {
        record_unary(FrozenLinearBackward, x, weight, output)
    }

    #[derive(Debug)]
    struct FrozenLinearBackward;

    impl UnaryGradient for FrozenLinearBackward {
        /// The weight `[d_input, d_output]`.
        type State = FlexTensor;

        fn input_gradient(self, weight: &FlexTensor, grad: FlexTensor) -> FlexTensor {
            let mut shape = grad.layout().shape().clone();
            let dims = shape.num_dims();
            let weight_shape = weight.layout().shape();
            let [d_input, d_output] = [weight_shape[0], weight_shape[1]];
            shape[dims - 1] = d_input;
            let dx = (|| {
                let g = row_major_f32(&grad)?;
                let w = row_major_f32(weight)?;
                let rows = g.len() / d_output.max(1);
                let mut dx = zeros_f32(rows * d_input);
                gemm_into(
                    &mut dx,
                    false,
                    MatrixView::row_major(&g, d_output),
                    MatrixView::transposed(&w, d_output),
                    [rows, d_output, d_input],
                    rows * d_input * d_output >= PARALLEL_MIN_PRODUCTS,
                )?;
                Some(dx)
            })();
            match dx {
                Some(dx) => FlexTensor::from_data(TensorData::new(dx, shape)),
                // Not f32 (the operation is only recorded for f32): Burn's own product.
                None => {
                    use burn::tensor::ops::FloatTensorOps;
                    let w_t = Flex::float_transpose(weight.clone());
                    Flex::float_matmul(grad, w_t)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Autodiff;
    use burn::tensor::module::linear;
    use burn::tensor::{Distribution, Tensor};
    use burn_flex::Flex;

    use super::frozen_linear;
    use crate::test_util::{assert_close, values};

    type T = Autodiff<Flex>;

    fn close(found: &[f32], expected: &[f32], what: &str) {
        assert_close(found, expected, 1e-5, what);
    }

    #[test]
    fn flex_inference_keeps_burn_s_linear() {
        let device = Default::default();
        let x = Tensor::<Flex, 2>::ones([2, 4], &device);
        let w = Tensor::<Flex, 2>::ones([4, 3], &device);
        assert!(frozen_linear(x, &w, None).is_err());
    }

    #[test]
    fn autodiff_values_and_input_gradients_equal_burn_s_linear() {
        let device = Default::default();
        // Large enough for the threaded product.
        let x = Tensor::<T, 3>::random([4, 128, 256], Distribution::Default, &device);
        let w = Tensor::<T, 2>::random([256, 192], Distribution::Default, &device);
        let upstream = Tensor::<T, 3>::random([4, 128, 192], Distribution::Default, &device);
        let run = |fused: bool| {
            let x = x.clone().detach().require_grad();
            let y = if fused {
                frozen_linear(x.clone(), &w, None).expect("autodiff over flex")
            } else {
                linear(x.clone(), w.clone(), None)
            };
            let grads = (y.clone() * upstream.clone()).sum().backward();
            (values(y), values(x.grad(&grads).expect("gradient")))
        };
        let ((y, dx), (expected_y, expected_dx)) = (run(true), run(false));
        close(&y, &expected_y, "value");
        close(&dx, &expected_dx, "input gradient");
    }

    #[test]
    fn a_trainable_weight_or_bias_takes_burn_s_linear() {
        let device = Default::default();
        let x = Tensor::<T, 2>::ones([2, 4], &device);
        let w = Tensor::<T, 2>::ones([4, 3], &device);
        let b = Tensor::<T, 1>::ones([3], &device);
        assert!(frozen_linear(x.clone(), &w.clone().require_grad(), None).is_err());
        assert!(frozen_linear(x.clone(), &w, Some(&b.require_grad())).is_err());
        assert!(frozen_linear(x, &Tensor::<T, 2>::ones([5, 3], &device), None).is_err());
    }
}
