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

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::tensor::ops::ActivationOps;
    use burn::tensor::{Tensor, TensorPrimitive};
    use burn_flex::{Flex, FlexTensor};
    use rayon::prelude::*;

    use crate::flex_tensor::{from_autodiff_flex, into_autodiff_flex, row_major_f32};

    /// Rows per task of the backward loop.
    const TASK_ROWS: usize = 256;

    /// [`super::softmax_last_dim`] on the autodiff backend over flex; `Err(x)` elsewhere.
    pub(super) fn softmax_last_dim<B: burn::tensor::backend::Backend, const D: usize>(
        x: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        let x = into_autodiff_flex(x)?;
        let primitive = x.into_primitive().tensor();
        let output = Flex::softmax(primitive.primitive.clone(), D - 1);
        let node = primitive.node.clone();
        let y = match SoftmaxBackward
            .prepare::<NoCheckpointing>([node])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(output.clone(), output),
            OpsKind::UnTracked(prep) => prep.finish(output),
        };
        Ok(from_autodiff_flex(Tensor::from_primitive(
            TensorPrimitive::Float(y),
        )))
    }

    #[derive(Debug)]
    struct SoftmaxBackward;

    impl Backward<Flex, 1> for SoftmaxBackward {
        /// The softmax's output.
        type State = FlexTensor;

        fn backward(
            self,
            ops: Ops<Self::State, 1>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let [Some(parent)] = ops.parents else {
                return;
            };
            let grad = grads.consume::<Flex>(&ops.node);
            grads.register::<Flex>(parent.id, input_gradient(&ops.state, grad));
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
        let mut dx = vec![0f32; y.len()];
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

        use super::super::softmax_last_dim;
        use crate::test_util::values;

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
