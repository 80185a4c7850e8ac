//! Root-mean-square layer normalisation (T5's `T5LayerNorm`, LLaMA's `RMSNorm`), recorded as one
//! operation on the autodiff backend over flex.
//!
//! `y = x · w / √(mean(x²) + ε)` over the last dimension. Written with Burn's tensor operations it
//! is seven operations (on the autodiff backend, seven recorded ones (square, mean, add, square root, reciprocal and two products),
//! each with an output of its own and a backward step). Here the forward pass is one loop over
//! each row (on flex too, for inference), and the backward pass another:
//! `∂x = r·(g ⊙ w) − x·r³·mean((g ⊙ w) ⊙ x)` with `r = 1/√(mean(x²) + ε)`, and
//! `∂w = Σ_rows g ⊙ x·r` when the weight trains.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// `x · weight / √(mean(x²) + epsilon)` over the last dimension of `x`: one pass on the flex
/// backend and one recorded operation on the autodiff backend over it (crate feature `flex`),
/// Burn's tensor operations on every other backend. Both give the same values and gradients up to the order of sums.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_core::rms_norm;
///
/// let device = Default::default();
/// let x = Tensor::<NdArray, 2>::from_floats([[3.0, 4.0]], &device);
/// let weight = Tensor::<NdArray, 1>::from_floats([1.0, 2.0], &device);
/// let y = rms_norm(x, weight, 0.0).into_data().to_vec::<f32>().unwrap();
/// // √(mean(9, 16)) = √12.5
/// assert!((y[0] - 3.0 / 12.5f32.sqrt()).abs() < 1e-6);
/// assert!((y[1] - 8.0 / 12.5f32.sqrt()).abs() < 1e-6);
/// ```
pub fn rms_norm<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let (x, weight) = match flex::rms_norm(x, weight, epsilon) {
        Ok(y) => return y,
        Err(inputs) => inputs,
    };
    recorded(x, weight, epsilon)
}

/// The normalisation with Burn's tensor operations.
fn recorded<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    weight: Tensor<B, 1>,
    epsilon: f64,
) -> Tensor<B, D> {
    let mean_square = x.clone().square().mean_dim(D - 1);
    let normalised = x * (mean_square + epsilon).sqrt().recip();
    let [d] = weight.dims();
    let mut shape = [1usize; D];
    shape[D - 1] = d;
    normalised * weight.reshape(shape)
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorData, TensorPrimitive};
    use burn_flex::{Flex, FlexTensor};
    use rayon::prelude::*;

    use crate::flex_tensor::zeros_f32;
    use crate::flex_tensor::{
        float_primitive, from_autodiff_flex, from_flex, into_autodiff_flex, row_major_f32,
    };

    /// Rows per task.
    const TASK_ROWS: usize = 64;

    type Inputs<B, const D: usize> = (Tensor<B, D>, Tensor<B, 1>);

    /// [`super::rms_norm`] on the autodiff backend over flex; `Err` with the inputs elsewhere.
    pub(super) fn rms_norm<B: Backend, const D: usize>(
        x: Tensor<B, D>,
        weight: Tensor<B, 1>,
        epsilon: f64,
    ) -> Result<Tensor<B, D>, Inputs<B, D>> {
        let d = x.dims()[D - 1];
        if weight.dims() != [d] || d == 0 {
            return Err((x, weight));
        }
        // The flex backend itself (inference): the forward loop alone.
        if let (Some(x_flex), Some(w_flex)) = (float_primitive(&x), float_primitive(&weight)) {
            if let (Some(x_values), Some(w_values)) =
                (row_major_f32(&x_flex), row_major_f32(&w_flex))
            {
                let (output, _) = forward(&x_values, &w_values, epsilon as f32);
                let shape = x_flex.layout().shape().clone();
                if let Some(y) = from_flex(FlexTensor::from_data(TensorData::new(output, shape))) {
                    return Ok(y);
                }
            }
        }
        let x = match into_autodiff_flex(x) {
            Ok(x) => x,
            Err(x) => return Err((x, weight)),
        };
        let weight = match into_autodiff_flex(weight) {
            Ok(weight) => weight,
            Err(weight) => return Err((from_autodiff_flex(x), weight)),
        };
        let x = x.into_primitive().tensor();
        let weight = weight.into_primitive().tensor();
        let (Some(x_values), Some(w_values)) = (
            row_major_f32(&x.primitive),
            row_major_f32(&weight.primitive),
        ) else {
            let x = from_autodiff_flex(Tensor::from_primitive(TensorPrimitive::Float(x)));
            let weight = from_autodiff_flex(Tensor::from_primitive(TensorPrimitive::Float(weight)));
            return Err((x, weight));
        };
        let shape = x.primitive.layout().shape().clone();
        let (output, inverse_rms) = forward(&x_values, &w_values, epsilon as f32);
        let output = FlexTensor::from_data(TensorData::new(output, shape));
        let nodes = [x.node.clone(), weight.node.clone()];
        let y = match RmsNormBackward
            .prepare::<NoCheckpointing>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let state = State {
                    x: x.primitive.clone(),
                    weight: weight.primitive.clone(),
                    inverse_rms,
                };
                prep.finish(state, output)
            }
            OpsKind::UnTracked(prep) => prep.finish(output),
        };
        Ok(from_autodiff_flex(Tensor::from_primitive(
            TensorPrimitive::Float(y),
        )))
    }

    /// `y = x·r·w` per row and the rows' `r = 1/√(mean(x²) + ε)`.
    fn forward(x: &[f32], w: &[f32], epsilon: f32) -> (Vec<f32>, Vec<f32>) {
        let d = w.len();
        let rows = x.len() / d;
        let mut y = zeros_f32(x.len());
        let mut inverse_rms = vec![0f32; rows];
        y.par_chunks_mut(d * TASK_ROWS)
            .zip(inverse_rms.par_chunks_mut(TASK_ROWS))
            .zip(x.par_chunks(d * TASK_ROWS))
            .for_each(|((y, r), x)| {
                for ((y, r), x) in y.chunks_mut(d).zip(r.iter_mut()).zip(x.chunks(d)) {
                    let mean_square = x.iter().map(|v| v * v).sum::<f32>() / d as f32;
                    *r = 1.0 / (mean_square + epsilon).sqrt();
                    for ((y, x), w) in y.iter_mut().zip(x).zip(w) {
                        *y = x * *r * w;
                    }
                }
            });
        (y, inverse_rms)
    }

    #[derive(Debug, Clone)]
    struct State {
        x: FlexTensor,
        weight: FlexTensor,
        inverse_rms: Vec<f32>,
    }

    #[derive(Debug)]
    struct RmsNormBackward;

    impl Backward<Flex, 2> for RmsNormBackward {
        type State = State;

        fn backward(
            self,
            ops: Ops<Self::State, 2>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let [x_node, weight_node] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            let state = ops.state;
            let shape = state.x.layout().shape().clone();
            let (Some(x), Some(w), Some(g)) = (
                row_major_f32(&state.x),
                row_major_f32(&state.weight),
                row_major_f32(&grad),
            ) else {
                return;
            };
            let d = w.len();
            if let Some(node) = x_node {
                let dx = input_gradient(&x, &w, &g, &state.inverse_rms);
                grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dx, shape)));
            }
            if let Some(node) = weight_node {
                let mut dw = vec![0f64; d];
                for ((x, g), r) in x.chunks(d).zip(g.chunks(d)).zip(&state.inverse_rms) {
                    for ((dw, x), g) in dw.iter_mut().zip(x).zip(g) {
                        *dw += (g * x * r) as f64;
                    }
                }
                let dw: Vec<f32> = dw.into_iter().map(|v| v as f32).collect();
                grads.register::<Flex>(node.id, FlexTensor::from_data(TensorData::new(dw, [d])));
            }
        }
    }

    /// `∂x = r·(g ⊙ w) − x·r³·mean((g ⊙ w) ⊙ x)` per row.
    fn input_gradient(x: &[f32], w: &[f32], g: &[f32], inverse_rms: &[f32]) -> Vec<f32> {
        let d = w.len();
        let mut dx = zeros_f32(x.len());
        dx.par_chunks_mut(d * TASK_ROWS)
            .zip(x.par_chunks(d * TASK_ROWS))
            .zip(g.par_chunks(d * TASK_ROWS))
            .zip(inverse_rms.par_chunks(TASK_ROWS))
            .for_each(|(((dx, x), g), r)| {
                for (((dx, x), g), r) in dx.chunks_mut(d).zip(x.chunks(d)).zip(g.chunks(d)).zip(r) {
                    let dot = x
                        .iter()
                        .zip(g)
                        .zip(w)
                        .map(|((x, g), w)| g * w * x)
                        .sum::<f32>()
                        / d as f32;
                    let c = r * r * r * dot;
                    for (((dx, x), g), w) in dx.iter_mut().zip(x).zip(g).zip(w) {
                        *dx = r * g * w - x * c;
                    }
                }
            });
        dx
    }

    #[cfg(test)]
    mod tests {
        use burn::backend::Autodiff;
        use burn::tensor::{Distribution, Tensor};
        use burn_flex::Flex;

        use super::super::{recorded, rms_norm};
        use crate::test_util::{assert_close, values};

        type T = Autodiff<Flex>;

        fn close(found: &[f32], expected: &[f32], what: &str) {
            assert_close(found, expected, 1e-5, what);
        }

        fn check(weight_trains: bool) {
            let device = Default::default();
            let x = Tensor::<T, 3>::random([3, 70, 48], Distribution::Uniform(-3.0, 3.0), &device);
            let w = Tensor::<T, 1>::random([48], Distribution::Uniform(0.5, 1.5), &device);
            let upstream =
                Tensor::<T, 3>::random([3, 70, 48], Distribution::Uniform(-1.0, 1.0), &device);
            let run = |fused: bool| {
                let x = x.clone().detach().require_grad();
                let w = if weight_trains {
                    w.clone().detach().require_grad()
                } else {
                    w.clone().detach()
                };
                let y = if fused {
                    rms_norm(x.clone(), w.clone(), 1e-6)
                } else {
                    recorded(x.clone(), w.clone(), 1e-6)
                };
                let grads = (y.clone() * upstream.clone()).sum().backward();
                let dw = w.grad(&grads).map(values);
                (values(y), values(x.grad(&grads).expect("gradient")), dw)
            };
            let ((y, dx, dw), (expected_y, expected_dx, expected_dw)) = (run(true), run(false));
            close(&y, &expected_y, "value");
            close(&dx, &expected_dx, "input gradient");
            assert_eq!(dw.is_some(), weight_trains);
            if let (Some(dw), Some(expected_dw)) = (dw, expected_dw) {
                close(&dw, &expected_dw, "weight gradient");
            }
        }

        #[test]
        fn the_fast_path_is_taken_on_flex_and_autodiff_over_flex() {
            let device = Default::default();
            let (x, w) = (
                Tensor::<Flex, 2>::ones([2, 3], &device),
                Tensor::<Flex, 1>::ones([3], &device),
            );
            assert!(super::rms_norm(x, w, 1e-6).is_ok());
            let (x, w) = (
                Tensor::<T, 2>::ones([2, 3], &device).require_grad(),
                Tensor::<T, 1>::ones([3], &device),
            );
            assert!(super::rms_norm(x, w, 1e-6).is_ok());
        }

        #[test]
        fn flex_inference_gives_burn_s_values() {
            let device = Default::default();
            let x = Tensor::<Flex, 2>::random([33, 40], Distribution::Uniform(-3.0, 3.0), &device);
            let w = Tensor::<Flex, 1>::random([40], Distribution::Uniform(0.5, 1.5), &device);
            let found = values(rms_norm(x.clone(), w.clone(), 1e-6));
            close(&found, &values(recorded(x, w, 1e-6)), "value");
        }

        #[test]
        fn a_frozen_weight_gives_burn_s_values_and_input_gradient() {
            check(false);
        }

        #[test]
        fn a_trained_weight_gets_burn_s_gradient_too() {
            check(true);
        }
    }
}
