//! Softmax over the last dimension, recorded as one operation on the autodiff backend over flex.
//!
//! Burn 0.21's autodiff backend records a softmax as the five operations it is made of (the
//! maximum, a subtraction, the exponentials, a sum and a division), each with its own output and
//! backward step. Here the forward pass is flex's fused softmax, and the backward pass one loop
//! over each row: `∂x = y ⊙ (g − Σ g ⊙ y)`, from the saved output `y`.

use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// `softmax(x, D − 1)`, with one recorded operation on the autodiff backend over flex (crate
/// feature `flex`); Burn's `softmax` on every other backend. Both give the same values and
/// gradients up to the order of floating-point sums.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_core::softmax_last_dim;
///
/// let scores = Tensor::<NdArray, 2>::from_floats([[0.0, 0.0], [0.0, 2f32.ln()]], &Default::default());
/// let weights = softmax_last_dim(scores).into_data().to_vec::<f32>().unwrap();
/// assert!((weights[3] - 2.0 / 3.0).abs() < 1e-6);
/// ```
pub fn softmax_last_dim<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let x = match flex::softmax_last_dim(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    softmax(x, D - 1)
}

/// `softmax(x + bias, D − 1)`, with `bias` broadcast to `x`'s shape (each of its dimensions
/// equal to `x`'s or 1, as for `x + bias`): attention weights from scores and an additive
/// position or mask bias. On the flex backend and on autodiff over it (crate feature `flex`) the
/// sum and the softmax are one pass over each row on all threads, recorded as one operation whose
/// backward pass is the softmax's (a `bias` that requires a gradient takes Burn's operations);
/// every other backend computes `softmax_last_dim(x + bias)`.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_core::softmax_last_dim_with_bias;
///
/// let device = Default::default();
/// let scores = Tensor::<NdArray, 2>::zeros([2, 2], &device);
/// // One bias row for both rows of scores: the second key is masked out.
/// let mask = Tensor::<NdArray, 2>::from_floats([[0.0, -1e9]], &device);
/// let weights = softmax_last_dim_with_bias(scores, mask).into_data().to_vec::<f32>().unwrap();
/// assert_eq!(weights, [1.0, 0.0, 1.0, 0.0]);
/// ```
pub fn softmax_last_dim_with_bias<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    bias: Tensor<B, D>,
) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let (x, bias) = match flex::softmax_last_dim_with_bias(x, bias) {
        Ok(y) => return y,
        Err(inputs) => inputs,
    };
    softmax_last_dim(x + bias)
}

#[cfg(feature = "flex")]
mod flex {
    use burn::tensor::ops::ActivationOps;
    use burn::tensor::{Tensor, TensorPrimitive};
    use burn_flex::{Flex, FlexTensor};
    use rayon::prelude::*;

    use crate::flex_tensor::{
        any_float_primitive, float_primitive, from_autodiff_flex, from_flex, into_autodiff_flex,
        row_major_f32, zeros_f32,
    };
    use crate::recorded_op::{record_unary, AutodiffPrimitive, UnaryGradient};
    use crate::row_exp::{max_and_sum_exp, softmax_times};

    /// Rows per task of the forward and backward loops.
    const TASK_ROWS: usize = 256;

    type Inputs<B, const D: usize> = (Tensor<B, D>, Tensor<B, D>);

    /// [`super::softmax_last_dim_with_bias`] on flex and on autodiff over flex; `Err` with the
    /// inputs elsewhere.
    pub(super) fn softmax_last_dim_with_bias<B: burn::tensor::backend::Backend, const D: usize>(
        x: Tensor<B, D>,
        bias: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, Inputs<B, D>> {
        if bias.is_require_grad() {
            return Err((x, bias));
        }
        let Some(bias_flex) = any_float_primitive(&bias) else {
            return Err((x, bias));
        };
        // The flex backend itself (inference): the forward loop alone.
        if let Some(x_flex) = float_primitive(&x) {
            if let Some(y) = biased_softmax(&x_flex, &bias_flex).and_then(from_flex) {
                return Ok(y);
            }
            return Err((x, bias));
        }
        let x = match into_autodiff_flex(x) {
            Ok(x) => x,
            Err(x) => return Err((x, bias)),
        };
        let primitive = x.into_primitive().tensor();
        let Some(output) = biased_softmax(&primitive.primitive, &bias_flex) else {
            let x = from_autodiff_flex(Tensor::from_primitive(TensorPrimitive::Float(primitive)));
            return Err((x, bias));
        };
        Ok(from_autodiff_flex(Tensor::from_primitive(
            TensorPrimitive::Float(record(&primitive, output)),
        )))
    }

    /// `softmax(x + bias)` over the last dimension, with `bias` broadcast to `x`'s shape; `None`
    /// unless both are `f32`, of the same rank, and `bias` broadcasts.
    fn biased_softmax(x: &FlexTensor, bias: &FlexTensor) -> Option<FlexTensor> {
        let shape = x.layout().shape().clone();
        let bias_shape = bias.layout().shape();
        let dims = shape.num_dims();
        if dims == 0 || bias_shape.num_dims() != dims {
            return None;
        }
        // Row-major strides of `bias`, 0 along the dimensions it is broadcast over.
        let mut strides = vec![0usize; dims];
        let mut stride = 1;
        for i in (0..dims).rev() {
            if bias_shape[i] == shape[i] {
                strides[i] = stride;
            } else if bias_shape[i] != 1 {
                return None;
            }
            stride *= bias_shape[i];
        }
        let (x_values, bias_values) = (row_major_f32(x)?, row_major_f32(bias)?);
        let row = shape[dims - 1];
        let mut output = zeros_f32(x_values.len());
        if row > 0 {
            let leading = &shape[..dims - 1];
            let bias_row_start = |mut r: usize| {
                let mut offset = 0;
                for i in (0..leading.len()).rev() {
                    offset += (r % leading[i]) * strides[i];
                    r /= leading[i];
                }
                offset
            };
            let column_stride = strides[dims - 1];
            output
                .par_chunks_mut(row * TASK_ROWS)
                .zip(x_values.par_chunks(row * TASK_ROWS))
                .enumerate()
                .for_each(|(task, (out, x))| {
                    let rows = out.chunks_mut(row).zip(x.chunks(row));
                    for (i, (out, x)) in rows.enumerate() {
                        let start = bias_row_start(task * TASK_ROWS + i);
                        if column_stride == 1 {
                            let b = &bias_values[start..start + row];
                            for ((o, x), b) in out.iter_mut().zip(x).zip(b) {
                                *o = x + b;
                            }
                        } else {
                            let b = bias_values[start];
                            out.iter_mut().zip(x).for_each(|(o, x)| *o = x + b);
                        }
                        let (max, sum) = max_and_sum_exp(out);
                        softmax_times(out, max + sum.ln(), 1.0);
                    }
                });
        }
        Some(FlexTensor::from_data(burn::tensor::TensorData::new(
            output, shape,
        )))
    }

    /// Records a softmax's `output` with `x`'s node as the one parent.
    fn record(x: &AutodiffPrimitive, output: FlexTensor) -> AutodiffPrimitive {
        record_unary(SoftmaxBackward, x, output.clone(), output)
    }

    /// [`super::softmax_last_dim`] on the autodiff backend over flex; `Err(x)` elsewhere.
    pub(super) fn softmax_last_dim<B: burn::tensor::backend::Backend, const D: usize>(
        x: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        let x = into_autodiff_flex(x)?;
        let primitive = x.into_primitive().tensor();
        let output = Flex::softmax(primitive.primitive.clone(), D - 1);
        Ok(from_autodiff_flex(Tensor::from_primitive(
            TensorPrimitive::Float(record(&primitive, output)),
        )))
    }

    #[derive(Debug)]
    struct SoftmaxBackward;

    impl UnaryGradient for SoftmaxBackward {
        /// The softmax's output.
        type State = FlexTensor;

        fn input_gradient(self, output: &FlexTensor, grad: FlexTensor) -> FlexTensor {
            input_gradient(output, grad)
        }
    }

    /// `y ⊙ (g − Σ g ⊙ y)` row by row, on all threads.
    fn input_gradient(output: &FlexTensor, grad: FlexTensor) -> FlexTensor {
        let shape = output.layout().shape().clone();
        let dims = shape.num_dims();
        let row = shape[dims - 1];
        let (Some(y), Some(g)) = (row_major_f32(output), row_major_f32(&grad)) else {
            // Not f32 (the op is only built for f32): Burn's own arithmetic.
            return fallback(output, grad);
        };
        let mut dx = zeros_f32(y.len());
        if row > 0 {
            dx.par_chunks_mut(row * TASK_ROWS)
                .zip(y.par_chunks(row * TASK_ROWS))
                .zip(g.par_chunks(row * TASK_ROWS))
                .for_each(|((dx, y), g)| {
                    for ((dx, y), g) in dx.chunks_mut(row).zip(y.chunks(row)).zip(g.chunks(row)) {
                        let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
                        for ((dx, y), g) in dx.iter_mut().zip(y).zip(g) {
                            *dx = y * (g - dot);
                        }
                    }
                });
        }
        FlexTensor::from_data(burn::tensor::TensorData::new(dx, shape))
    }

    fn fallback(output: &FlexTensor, grad: FlexTensor) -> FlexTensor {
        use burn::tensor::ops::FloatTensorOps;
        let dims = output.layout().shape().num_dims();
        let product = Flex::float_mul(output.clone(), grad.clone());
        let dot = Flex::float_sum_dim(product, dims - 1);
        Flex::float_mul(output.clone(), Flex::float_sub(grad, dot))
    }

    #[cfg(test)]
    mod tests {
        use burn::backend::Autodiff;
        use burn::tensor::activation::softmax;
        use burn::tensor::{Distribution, Tensor};
        use burn_flex::Flex;

        use super::super::{softmax_last_dim, softmax_last_dim_with_bias};
        use crate::test_util::{assert_close, values};

        type T = Autodiff<Flex>;

        #[test]
        fn values_and_gradients_match_burn_s_recorded_softmax() {
            let device = Default::default();
            let x =
                Tensor::<T, 4>::random([2, 3, 5, 70], Distribution::Uniform(-4.0, 4.0), &device);
            let upstream =
                Tensor::<T, 4>::random([2, 3, 5, 70], Distribution::Uniform(-1.0, 1.0), &device);
            let run = |fused: bool| {
                let x = x.clone().detach().require_grad();
                let y = if fused {
                    softmax_last_dim(x.clone())
                } else {
                    softmax(x.clone(), 3)
                };
                let grads = (y.clone() * upstream.clone()).sum().backward();
                (values(y), values(x.grad(&grads).expect("gradient")))
            };
            let ((y, dx), (expected_y, expected_dx)) = (run(true), run(false));
            for (i, (f, e)) in y.iter().zip(&expected_y).enumerate() {
                assert!((f - e).abs() <= 1e-6, "value {i}: {f} against {e}");
            }
            for (i, (f, e)) in dx.iter().zip(&expected_dx).enumerate() {
                assert!((f - e).abs() <= 1e-6, "gradient {i}: {f} against {e}");
            }
        }

        /// `softmax_last_dim_with_bias` against Burn's recorded `softmax(x + bias)`: values and
        /// the gradient of `x`.
        fn check_biased(bias_shape: [usize; 4]) {
            let device = Default::default();
            let shape = [2, 3, 5, 40];
            let x = Tensor::<T, 4>::random(shape, Distribution::Uniform(-4.0, 4.0), &device);
            let bias =
                Tensor::<T, 4>::random(bias_shape, Distribution::Uniform(-3.0, 3.0), &device);
            let upstream = Tensor::<T, 4>::random(shape, Distribution::Uniform(-1.0, 1.0), &device);
            let run = |fused: bool| {
                let x = x.clone().detach().require_grad();
                let y = if fused {
                    softmax_last_dim_with_bias(x.clone(), bias.clone())
                } else {
                    softmax(x.clone() + bias.clone(), 3)
                };
                let grads = (y.clone() * upstream.clone()).sum().backward();
                (values(y), values(x.grad(&grads).expect("gradient")))
            };
            let ((y, dx), (expected_y, expected_dx)) = (run(true), run(false));
            assert_close(&y, &expected_y, 1e-5, "value");
            assert_close(&dx, &expected_dx, 1e-5, "gradient");
        }

        #[test]
        fn a_bias_shared_by_the_batch_matches_burn_s_recorded_sum_and_softmax() {
            check_biased([1, 3, 5, 40]);
        }

        #[test]
        fn a_bias_per_sample_and_key_matches_burn_s_recorded_sum_and_softmax() {
            check_biased([2, 1, 1, 40]);
        }

        #[test]
        fn a_bias_of_the_full_shape_matches_burn_s_recorded_sum_and_softmax() {
            check_biased([2, 3, 5, 40]);
        }

        #[test]
        fn a_bias_constant_along_rows_matches_burn_s_recorded_sum_and_softmax() {
            check_biased([2, 3, 5, 1]);
        }

        #[test]
        fn the_biased_fast_path_is_taken_on_flex_and_on_autodiff_over_flex() {
            let device = Default::default();
            let x = Tensor::<T, 3>::zeros([2, 3, 4], &device).require_grad();
            let bias = Tensor::<T, 3>::zeros([1, 3, 4], &device);
            assert!(super::softmax_last_dim_with_bias(x, bias).is_ok());
            let x = Tensor::<Flex, 3>::zeros([2, 3, 4], &device);
            let bias = Tensor::<Flex, 3>::zeros([2, 1, 4], &device);
            assert!(super::softmax_last_dim_with_bias(x, bias).is_ok());
        }

        #[test]
        fn inference_on_flex_matches_burn_s_sum_and_softmax() {
            let device = Default::default();
            let x =
                Tensor::<Flex, 4>::random([2, 3, 5, 33], Distribution::Uniform(-4.0, 4.0), &device);
            let bias =
                Tensor::<Flex, 4>::random([1, 3, 5, 33], Distribution::Uniform(-4.0, 4.0), &device);
            let found = values(softmax_last_dim_with_bias(x.clone(), bias.clone()));
            assert_close(&found, &values(softmax(x + bias, 3)), 1e-5, "value");
        }

        #[test]
        fn a_trainable_bias_gets_its_gradient_through_burn_s_operations() {
            let device = Default::default();
            let x = Tensor::<T, 3>::random([2, 4, 6], Distribution::Uniform(-2.0, 2.0), &device);
            let bias = Tensor::<T, 3>::random([1, 4, 6], Distribution::Uniform(-2.0, 2.0), &device);
            let upstream =
                Tensor::<T, 3>::random([2, 4, 6], Distribution::Uniform(-1.0, 1.0), &device);
            assert!(
                super::softmax_last_dim_with_bias(x.clone(), bias.clone().require_grad()).is_err()
            );
            let run = |fused: bool| {
                let bias = bias.clone().detach().require_grad();
                let y = if fused {
                    softmax_last_dim_with_bias(x.clone(), bias.clone())
                } else {
                    softmax(x.clone() + bias.clone(), 2)
                };
                let grads = (y * upstream.clone()).sum().backward();
                values(bias.grad(&grads).expect("gradient"))
            };
            assert_close(&run(true), &run(false), 1e-5, "bias gradient");
        }

        #[test]
        fn a_bias_that_does_not_broadcast_is_refused_by_the_fast_path() {
            let device = Default::default();
            let x = Tensor::<Flex, 2>::zeros([2, 4], &device);
            let bias = Tensor::<Flex, 2>::zeros([2, 3], &device);
            assert!(super::softmax_last_dim_with_bias(x, bias).is_err());
        }

        #[test]
        fn the_fast_path_is_taken_on_autodiff_over_flex() {
            let x = Tensor::<T, 2>::zeros([2, 3], &Default::default()).require_grad();
            assert!(super::softmax_last_dim(x).is_ok());
        }

        #[test]
        fn an_untracked_input_gives_the_values_alone() {
            let device = Default::default();
            let x = Tensor::<T, 2>::random([4, 9], Distribution::Uniform(-2.0, 2.0), &device);
            let (found, expected) = (values(softmax_last_dim(x.clone())), values(softmax(x, 1)));
            for (f, e) in found.iter().zip(&expected) {
                assert!((f - e).abs() <= 1e-6);
            }
        }
    }
}
