//! The activations of the form `x·σ(z(x))`, alone and gated as in transformer feed-forward
//! blocks (`act(x·W₀) ⊙ x·W₁`), as one pass over the elements:
//!
//! - GELU with the tanh approximation (transformers' `gelu_new`, PyTorch's
//!   `gelu(approximate="tanh")`, the gated-gelu block of T5 v1.1 and FLAN-T5):
//!   `½·x·(1 + tanh u) = x·σ(2u)` with `u = √(2/π)·(x + 0.044715·x³)`, so `z = 2u`;
//! - SiLU (swish, LLaMA's SwiGLU block when gated): `x·σ(x)`, so `z = x`.
//!
//! Written with Burn's tensor operations, GELU's tanh form (`gelu_approximate`) is eight
//! operations (a power, a hyperbolic tangent, sums and products), each a pass over the tensor
//! with an output of its own and, on the autodiff backend, a recorded step of its own; the
//! power and the tangent are scalar calls of the C library. Here both come from the one
//! exponential `e = exp(−|z|)` (so it never overflows; `z` has the sign of `x`):
//! `σ(z) = 1/(1 + e)` for `x ≥ 0` and `e/(1 + e)` below. The derivative follows from the same
//! exponential: `(x·σ(z))′ = σ + x·σ·(1 − σ)·z′` with `σ·(1 − σ) = e/(1 + e)²`. On the flex
//! backend (crate feature `flex`) the forward pass is one loop on all threads, with the vector
//! `exp` of the fused softmax; on the autodiff backend over flex it is recorded as one operation
//! whose backward pass is one more loop. Every other backend runs Burn's operations.

use burn::tensor::activation::{gelu_approximate, silu as burn_silu};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// `√(2/π)`.
const SQRT_2_OVER_PI: f32 = 0.797_884_6;
/// The cubic term's coefficient of GELU's `u`.
const CUBIC: f32 = 0.044_715;

/// Which `x·σ(z(x))` activation a loop computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    /// GELU's tanh form: `z = 2·√(2/π)·(x + 0.044715·x³)`.
    GeluTanh,
    /// SiLU: `z = x`.
    Silu,
}

impl Activation {
    /// `z(x)`, the argument of the sigmoid.
    #[inline(always)]
    fn z(self, x: f32) -> f32 {
        match self {
            Self::GeluTanh => 2.0 * SQRT_2_OVER_PI * (x + CUBIC * x * x * x),
            Self::Silu => x,
        }
    }

    /// The activation by Burn's tensor operations.
    fn with_burn<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::GeluTanh => gelu_approximate(x),
            Self::Silu => burn_silu(x),
        }
    }

    /// `z′(x)`.
    #[inline(always)]
    fn dz(self, x: f32) -> f32 {
        match self {
            Self::GeluTanh => 2.0 * SQRT_2_OVER_PI * (1.0 + 3.0 * CUBIC * x * x),
            Self::Silu => 1.0,
        }
    }
}

/// GELU with the tanh approximation, `½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`: transformers'
/// `gelu_new` and Burn's [`gelu_approximate`], the activation of FLAN-T5's feed-forward block.
///
/// One pass on the flex backend and one recorded operation on the autodiff backend over it
/// (crate feature `flex`); Burn's `gelu_approximate` on every other backend. Both give the same
/// values and gradients within a few `f32` roundings.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_core::gelu_tanh;
///
/// let device = Default::default();
/// let x = Tensor::<NdArray, 1>::from_floats([-1.0, 0.0, 1.0], &device);
/// let y = gelu_tanh(x).into_data().to_vec::<f32>().unwrap();
/// assert!((y[0] + 0.158_808).abs() < 1e-5);
/// assert_eq!(y[1], 0.0);
/// assert!((y[2] - 0.841_192).abs() < 1e-5);
/// ```
pub fn gelu_tanh<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activate(Activation::GeluTanh, x)
}

/// `gelu_tanh(gate) ⊙ up`: the gated activation of T5 v1.1's and FLAN-T5's feed-forward block
/// (`gated-gelu`), where `gate = x·W₀` and `up = x·W₁`.
///
/// One pass on the flex backend and one recorded operation with both gradients on the
/// autodiff backend over it (crate feature `flex`); Burn's operations on every other backend.
///
/// # Shapes
/// - `gate`, `up`: the same shape (a mismatch panics, as Burn's product does)
/// - output: that shape
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_core::gated_gelu_tanh;
///
/// let device = Default::default();
/// let gate = Tensor::<NdArray, 2>::from_floats([[1.0, 0.0]], &device);
/// let up = Tensor::<NdArray, 2>::from_floats([[2.0, 5.0]], &device);
/// let y = gated_gelu_tanh(gate, up).into_data().to_vec::<f32>().unwrap();
/// assert!((y[0] - 2.0 * 0.841_192).abs() < 1e-5);
/// assert_eq!(y[1], 0.0);
/// ```
pub fn gated_gelu_tanh<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Tensor<B, D> {
    activate_gated(Activation::GeluTanh, gate, up)
}

/// SiLU (swish), `x·σ(x)`: Burn's [`silu`](burn::tensor::activation::silu), the activation of
/// T5's `gated-silu` block and of LLaMA's SwiGLU.
///
/// One pass on the flex backend and one recorded operation on the autodiff backend over it
/// (crate feature `flex`); Burn's `silu` on every other backend.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_core::silu;
///
/// let device = Default::default();
/// let x = Tensor::<NdArray, 1>::from_floats([-1.0, 0.0, 2.0], &device);
/// let y = silu(x).into_data().to_vec::<f32>().unwrap();
/// assert!((y[0] + 0.268_941).abs() < 1e-5);
/// assert_eq!(y[1], 0.0);
/// assert!((y[2] - 1.761_594).abs() < 1e-5);
/// ```
pub fn silu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Tensor<B, D> {
    activate(Activation::Silu, x)
}

/// `silu(gate) ⊙ up`: SwiGLU, the gated activation of LLaMA's feed-forward block and of T5's
/// `gated-silu`, where `gate = x·W₀` and `up = x·W₁`.
///
/// One pass on the flex backend and one recorded operation with both gradients on the
/// autodiff backend over it (crate feature `flex`); Burn's operations on every other backend.
///
/// # Shapes
/// - `gate`, `up`: the same shape (a mismatch panics, as Burn's product does)
/// - output: that shape
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_core::gated_silu;
///
/// let device = Default::default();
/// let gate = Tensor::<NdArray, 2>::from_floats([[2.0, 0.0]], &device);
/// let up = Tensor::<NdArray, 2>::from_floats([[0.5, 5.0]], &device);
/// let y = gated_silu(gate, up).into_data().to_vec::<f32>().unwrap();
/// assert!((y[0] - 0.5 * 1.761_594).abs() < 1e-5);
/// assert_eq!(y[1], 0.0);
/// ```
pub fn gated_silu<B: Backend, const D: usize>(
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Tensor<B, D> {
    activate_gated(Activation::Silu, gate, up)
}

/// `activation(x)`: the fused loops where the backend has them, Burn's operations elsewhere.
fn activate<B: Backend, const D: usize>(activation: Activation, x: Tensor<B, D>) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let x = match flex::activation(activation, x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    activation.with_burn(x)
}

/// `activation(gate) ⊙ up`, as [`activate`].
fn activate_gated<B: Backend, const D: usize>(
    activation: Activation,
    gate: Tensor<B, D>,
    up: Tensor<B, D>,
) -> Tensor<B, D> {
    #[cfg(feature = "flex")]
    let (gate, up) = match flex::gated(activation, gate, up) {
        Ok(y) => return y,
        Err(inputs) => inputs,
    };
    activation.with_burn(gate) * up
}

/// The elementwise loops, in blocks whose exponentials are taken by the vector kernel.
#[cfg(feature = "flex")]
mod kernel {
    use super::Activation;
    use crate::row_exp::exp_in_place;

    /// Elements whose exponentials one block takes at once (they stay in the L1 cache).
    pub(super) const BLOCK: usize = 256;

    /// `e = exp(−|z(x)|)` for each `x` of a block.
    fn exponentials(activation: Activation, x: &[f32], e: &mut [f32]) {
        for (e, &x) in e.iter_mut().zip(x) {
            *e = -activation.z(x).abs();
        }
        exp_in_place(e);
    }

    /// `σ(z)` from `e` and the sign of `x` (the sign of `z`), and `1/(1 + e)`.
    #[inline(always)]
    fn sigmoid(x: f32, e: f32) -> (f32, f32) {
        let r = 1.0 / (1.0 + e);
        (if x >= 0.0 { r } else { e * r }, r)
    }

    /// `(x·σ(z))′` from `σ(z)`, `e` and `r = 1/(1 + e)`.
    #[inline(always)]
    fn slope(activation: Activation, x: f32, s: f32, e: f32, r: f32) -> f32 {
        s + x * e * r * r * activation.dz(x)
    }

    /// `out = act(x) ⊙ up` (or `act(x)` without `up`), for slices of one length.
    pub(super) fn forward(activation: Activation, x: &[f32], up: Option<&[f32]>, out: &mut [f32]) {
        let mut e = [0f32; BLOCK];
        for (start, out) in (0..x.len()).step_by(BLOCK).zip(out.chunks_mut(BLOCK)) {
            let x = &x[start..start + out.len()];
            let e = &mut e[..out.len()];
            exponentials(activation, x, e);
            for ((out, &x), &e) in out.iter_mut().zip(x).zip(e.iter()) {
                *out = x * sigmoid(x, e).0;
            }
            if let Some(up) = up {
                let len = out.len();
                for (out, &up) in out.iter_mut().zip(&up[start..start + len]) {
                    *out *= up;
                }
            }
        }
    }

    /// The gradients from the output's gradient `g`: `∂x = g·act′(x)` alone, or with `up`,
    /// `∂x = g·up·act′(x)` and `∂up = g·act(x)`, each written where a slice is given.
    pub(super) fn backward(
        activation: Activation,
        x: &[f32],
        up: Option<&[f32]>,
        g: &[f32],
        dx: Option<&mut [f32]>,
        dup: Option<&mut [f32]>,
    ) {
        let mut e = [0f32; BLOCK];
        let (mut dx, mut dup) = (dx, dup);
        for start in (0..x.len()).step_by(BLOCK) {
            let end = (start + BLOCK).min(x.len());
            let (x, g) = (&x[start..end], &g[start..end]);
            let e = &mut e[..end - start];
            exponentials(activation, x, e);
            let up = up.map(|up| &up[start..end]);
            for i in 0..end - start {
                let (s, r) = sigmoid(x[i], e[i]);
                if let Some(dx) = dx.as_deref_mut() {
                    let scale = up.map_or(1.0, |up| up[i]);
                    dx[start + i] = g[i] * scale * slope(activation, x[i], s, e[i], r);
                }
                if let Some(dup) = dup.as_deref_mut() {
                    dup[start + i] = g[i] * x[i] * s;
                }
            }
        }
    }
}

#[cfg(feature = "flex")]
mod flex {
    use burn::backend::autodiff::checkpoint::base::Checkpointer;
    use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
    use burn::backend::autodiff::grads::Gradients;
    use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
    use burn::tensor::backend::Backend;
    use burn::tensor::{Shape, Tensor, TensorData, TensorPrimitive};
    use burn_flex::{Flex, FlexTensor};
    use rayon::prelude::*;

    use super::kernel::{self, BLOCK};
    use super::Activation;
    use crate::flex_tensor::{
        float_primitive, from_autodiff_flex, from_flex, into_autodiff_flex, row_major_f32,
        zeros_f32,
    };
    use crate::recorded_op::{record_unary, UnaryGradient};

    /// Elements per task on the threads (whole blocks).
    const TASK: usize = 64 * BLOCK;

    /// `activation(x)` on flex and on the autodiff backend over it; `Err(x)` elsewhere.
    pub(super) fn activation<B: Backend, const D: usize>(
        activation: Activation,
        x: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, Tensor<B, D>> {
        if let Some(x_flex) = float_primitive(&x) {
            let Some(values) = row_major_f32(&x_flex) else {
                return Err(x);
            };
            let output = forward(activation, &values, None);
            let output =
                FlexTensor::from_data(TensorData::new(output, x_flex.layout().shape().clone()));
            return from_flex(output).ok_or(x);
        }
        let x = into_autodiff_flex(x)?.into_primitive().tensor();
        let Some(values) = row_major_f32(&x.primitive) else {
            return Err(from_autodiff_flex(Tensor::from_primitive(
                TensorPrimitive::Float(x),
            )));
        };
        let output = forward(activation, &values, None);
        let shape = x.primitive.layout().shape().clone();
        let output = FlexTensor::from_data(TensorData::new(output, shape));
        let state = x.primitive.clone();
        let y = record_unary(UnaryBackward(activation), &x, state, output);
        Ok(from_autodiff_flex(Tensor::from_primitive(
            TensorPrimitive::Float(y),
        )))
    }

    type Inputs<B, const D: usize> = (Tensor<B, D>, Tensor<B, D>);

    /// `activation(gate) ⊙ up` on flex and on the autodiff backend over it; `Err` with the
    /// inputs elsewhere or when their shapes differ.
    pub(super) fn gated<B: Backend, const D: usize>(
        activation: Activation,
        gate: Tensor<B, D>,
        up: Tensor<B, D>,
    ) -> Result<Tensor<B, D>, Inputs<B, D>> {
        if gate.dims() != up.dims() {
            return Err((gate, up));
        }
        if let (Some(gate_flex), Some(up_flex)) = (float_primitive(&gate), float_primitive(&up)) {
            let (Some(gate_values), Some(up_values)) =
                (row_major_f32(&gate_flex), row_major_f32(&up_flex))
            else {
                return Err((gate, up));
            };
            let output = forward(activation, &gate_values, Some(&up_values));
            let shape = gate_flex.layout().shape().clone();
            return match from_flex(FlexTensor::from_data(TensorData::new(output, shape))) {
                Some(y) => Ok(y),
                None => Err((gate, up)),
            };
        }
        let gate = match into_autodiff_flex(gate) {
            Ok(gate) => gate,
            Err(gate) => return Err((gate, up)),
        };
        let up = match into_autodiff_flex(up) {
            Ok(up) => up,
            Err(up) => return Err((from_autodiff_flex(gate), up)),
        };
        let (gate, up) = (gate.into_primitive().tensor(), up.into_primitive().tensor());
        let (Some(gate_values), Some(up_values)) =
            (row_major_f32(&gate.primitive), row_major_f32(&up.primitive))
        else {
            let back = |t| from_autodiff_flex(Tensor::from_primitive(TensorPrimitive::Float(t)));
            return Err((back(gate), back(up)));
        };
        let output = forward(activation, &gate_values, Some(&up_values));
        let shape = gate.primitive.layout().shape().clone();
        let output = FlexTensor::from_data(TensorData::new(output, shape));
        let y = match GatedBackward(activation)
            .prepare::<NoCheckpointing>([gate.node.clone(), up.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                prep.finish((gate.primitive.clone(), up.primitive.clone()), output)
            }
            OpsKind::UnTracked(prep) => prep.finish(output),
        };
        Ok(from_autodiff_flex(Tensor::from_primitive(
            TensorPrimitive::Float(y),
        )))
    }

    /// The forward loop over all elements, on all threads for large tensors.
    fn forward(activation: Activation, x: &[f32], up: Option<&[f32]>) -> Vec<f32> {
        let mut output = zeros_f32(x.len());
        output
            .par_chunks_mut(TASK)
            .zip(x.par_chunks(TASK))
            .enumerate()
            .for_each(|(task, (out, x))| {
                let up = up.map(|up| &up[task * TASK..task * TASK + x.len()]);
                kernel::forward(activation, x, up, out);
            });
        output
    }

    /// The backward loop over all elements, on all threads: `(∂x, ∂up)`, each computed only when
    /// asked for.
    fn backward(
        activation: Activation,
        x: &[f32],
        up: Option<&[f32]>,
        g: &[f32],
        [want_dx, want_dup]: [bool; 2],
    ) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
        let mut dx = want_dx.then(|| zeros_f32(x.len()));
        let mut dup = (want_dup && up.is_some()).then(|| zeros_f32(x.len()));
        let tasks = x.len().div_ceil(TASK);
        let dx_address = dx.as_mut().map(|v| v.as_mut_ptr() as usize);
        let dup_address = dup.as_mut().map(|v| v.as_mut_ptr() as usize);
        (0..tasks).into_par_iter().for_each(|task| {
            let start = task * TASK;
            let len = TASK.min(x.len() - start);
            // SAFETY: the tasks' ranges `start..start + len` are disjoint and inside both
            // outputs, which hold `x.len()` values and outlive the loop.
            let slice = |address: usize| unsafe {
                std::slice::from_raw_parts_mut((address as *mut f32).add(start), len)
            };
            kernel::backward(
                activation,
                &x[start..start + len],
                up.map(|up| &up[start..start + len]),
                &g[start..start + len],
                dx_address.map(slice),
                dup_address.map(slice),
            );
        });
        (dx, dup)
    }

    fn tensor(values: Vec<f32>, shape: Shape) -> FlexTensor {
        FlexTensor::from_data(TensorData::new(values, shape))
    }

    /// The backward pass of [`activation`]; its state is the input.
    #[derive(Debug)]
    struct UnaryBackward(Activation);

    impl UnaryGradient for UnaryBackward {
        type State = FlexTensor;

        fn input_gradient(self, x: &FlexTensor, grad: FlexTensor) -> FlexTensor {
            let (Some(x_values), Some(g)) = (row_major_f32(x), row_major_f32(&grad)) else {
                unreachable!("the operation is recorded only for f32 tensors");
            };
            let (Some(dx), _) = backward(self.0, &x_values, None, &g, [true, false]) else {
                unreachable!("∂x was asked for");
            };
            tensor(dx, x.layout().shape().clone())
        }
    }

    /// The backward pass of [`gated`]; its state is `(gate, up)`.
    #[derive(Debug)]
    struct GatedBackward(Activation);

    impl Backward<Flex, 2> for GatedBackward {
        type State = (FlexTensor, FlexTensor);

        fn backward(
            self,
            ops: Ops<Self::State, 2>,
            grads: &mut Gradients,
            _checkpointer: &mut Checkpointer,
        ) {
            let [gate_node, up_node] = ops.parents;
            let grad = grads.consume::<Flex>(&ops.node);
            let (gate, up) = &ops.state;
            let (Some(gate_values), Some(up_values), Some(g)) =
                (row_major_f32(gate), row_major_f32(up), row_major_f32(&grad))
            else {
                unreachable!("the operation is recorded only for f32 tensors");
            };
            let wanted = [gate_node.is_some(), up_node.is_some()];
            let (dgate, dup) = backward(self.0, &gate_values, Some(&up_values), &g, wanted);
            let shape = gate.layout().shape().clone();
            if let (Some(node), Some(dgate)) = (gate_node, dgate) {
                grads.register::<Flex>(node.id, tensor(dgate, shape.clone()));
            }
            if let (Some(node), Some(dup)) = (up_node, dup) {
                grads.register::<Flex>(node.id, tensor(dup, shape));
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use burn::backend::Autodiff;
        use burn::tensor::backend::Backend;
        use burn::tensor::{Distribution, Tensor};
        use burn_flex::Flex;

        use super::super::{gated_gelu_tanh, gated_silu, gelu_tanh, silu, Activation};
        use crate::test_util::{assert_close, values};

        type T = Autodiff<Flex>;

        /// Both activations: this crate's and Burn's forms of each, alone and gated.
        const BOTH: [Activation; 2] = [Activation::GeluTanh, Activation::Silu];

        fn fused<Bk: Backend>(activation: Activation, x: Tensor<Bk, 2>) -> Tensor<Bk, 2> {
            match activation {
                Activation::GeluTanh => gelu_tanh(x),
                Activation::Silu => silu(x),
            }
        }

        fn burn_s<Bk: Backend>(activation: Activation, x: Tensor<Bk, 2>) -> Tensor<Bk, 2> {
            activation.with_burn(x)
        }

        fn fused_gated<Bk: Backend>(
            activation: Activation,
            gate: Tensor<Bk, 2>,
            up: Tensor<Bk, 2>,
        ) -> Tensor<Bk, 2> {
            match activation {
                Activation::GeluTanh => gated_gelu_tanh(gate, up),
                Activation::Silu => gated_silu(gate, up),
            }
        }

        /// Inputs over the activation's whole range: its bend near 0, both tails, and values
        /// far enough out that `exp(|z|)` would overflow.
        fn inputs<Bk: Backend>(shape: [usize; 2]) -> Tensor<Bk, 2> {
            let device = Default::default();
            let wide = Tensor::<Bk, 2>::random(shape, Distribution::Uniform(-8.0, 8.0), &device);
            let far = Tensor::<Bk, 2>::from_floats(
                [[-200.0, -60.0, -11.0, 0.0, 11.0, 60.0, 200.0]],
                &device,
            );
            Tensor::cat(vec![wide.reshape([-1, 7]), far], 0)
        }

        /// Within `1e-6` of the largest magnitude, as Burn's operations round too.
        fn close(found: &[f32], expected: &[f32], what: &str) {
            assert_close(found, expected, 1e-6, what);
        }

        #[test]
        fn flex_inference_gives_burn_s_values() {
            for activation in BOTH {
                // Over one task, so that several run on the threads.
                let x = inputs::<Flex>([3000, 28]);
                let found = values(fused(activation, x.clone()));
                close(
                    &found,
                    &values(burn_s(activation, x)),
                    &format!("{activation:?}"),
                );
            }
        }

        #[test]
        fn flex_inference_of_the_gated_form_gives_burn_s_values() {
            for activation in BOTH {
                let (gate, up) = (inputs::<Flex>([3000, 28]), inputs::<Flex>([3000, 28]));
                let found = values(fused_gated(activation, gate.clone(), up.clone()));
                let expected = values(burn_s(activation, gate) * up);
                close(&found, &expected, &format!("gated {activation:?}"));
            }
        }

        #[test]
        fn the_gradient_is_burn_s() {
            for activation in BOTH {
                let x = inputs::<T>([100, 35]);
                let upstream = inputs::<T>([100, 35]);
                let run = |ours: bool| {
                    let x = x.clone().detach().require_grad();
                    let y = if ours {
                        fused(activation, x.clone())
                    } else {
                        burn_s(activation, x.clone())
                    };
                    let grads = (y.clone() * upstream.clone()).sum().backward();
                    (values(y), values(x.grad(&grads).expect("∂x")))
                };
                let ((y, dx), (expected_y, expected_dx)) = (run(true), run(false));
                close(&y, &expected_y, &format!("{activation:?} value"));
                close(&dx, &expected_dx, &format!("{activation:?} ∂x"));
            }
        }

        /// Both gradients, or the one whose input is tracked.
        fn check_gated(gate_tracked: bool, up_tracked: bool) {
            for activation in BOTH {
                let (gate, up) = (inputs::<T>([100, 35]), inputs::<T>([100, 35]));
                let upstream = inputs::<T>([100, 35]);
                let track = |t: &Tensor<T, 2>, on: bool| {
                    let t = t.clone().detach();
                    if on {
                        t.require_grad()
                    } else {
                        t
                    }
                };
                let run = |ours: bool| {
                    let (gate, up) = (track(&gate, gate_tracked), track(&up, up_tracked));
                    let y = if ours {
                        fused_gated(activation, gate.clone(), up.clone())
                    } else {
                        burn_s(activation, gate.clone()) * up.clone()
                    };
                    let grads = (y.clone() * upstream.clone()).sum().backward();
                    (
                        values(y),
                        gate.grad(&grads).map(values),
                        up.grad(&grads).map(values),
                    )
                };
                let (ours, burn) = (run(true), run(false));
                close(&ours.0, &burn.0, &format!("{activation:?} value"));
                assert_eq!(ours.1.is_some(), gate_tracked);
                assert_eq!(ours.2.is_some(), up_tracked);
                if let (Some(found), Some(expected)) = (&ours.1, &burn.1) {
                    close(found, expected, &format!("{activation:?} ∂gate"));
                }
                if let (Some(found), Some(expected)) = (&ours.2, &burn.2) {
                    close(found, expected, &format!("{activation:?} ∂up"));
                }
            }
        }

        #[test]
        fn the_gated_form_gives_burn_s_gradients() {
            check_gated(true, true);
        }

        #[test]
        fn the_gated_form_gives_the_gate_alone_its_gradient() {
            check_gated(true, false);
        }

        #[test]
        fn the_gated_form_gives_the_up_projection_alone_its_gradient() {
            check_gated(false, true);
        }

        #[test]
        fn the_fast_path_is_taken_on_flex_and_autodiff_over_flex() {
            let device = Default::default();
            for activation in BOTH {
                let x = Tensor::<Flex, 2>::ones([2, 3], &device);
                assert!(super::activation(activation, x.clone()).is_ok());
                assert!(super::gated(activation, x.clone(), x).is_ok());
                let x = Tensor::<T, 2>::ones([2, 3], &device).require_grad();
                assert!(super::activation(activation, x.clone()).is_ok());
                assert!(super::gated(activation, x.clone(), x).is_ok());
            }
        }

        #[test]
        fn other_backends_and_mismatched_shapes_are_left_to_burn() {
            for activation in BOTH {
                let x = Tensor::<burn::backend::NdArray, 2>::ones([2, 3], &Default::default());
                assert!(super::activation(activation, x).is_err());
                let device = Default::default();
                let (a, b) = (
                    Tensor::<Flex, 2>::ones([2, 3], &device),
                    Tensor::<Flex, 2>::ones([1, 3], &device),
                );
                assert!(super::gated(activation, a, b).is_err());
            }
        }

        /// The loops against `f64`, with the activation's derivative from a central difference.
        #[test]
        fn the_loops_match_f64() {
            let gelu = |v: f64| {
                let u = (2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3));
                0.5 * v * (1.0 + u.tanh())
            };
            let silu = |v: f64| v / (1.0 + (-v).exp());
            let exact: [(Activation, &dyn Fn(f64) -> f64); 2] =
                [(Activation::GeluTanh, &gelu), (Activation::Silu, &silu)];
            for (activation, act) in exact {
                let x: Vec<f32> = (0..600).map(|i| (i as f32 - 300.0) / 37.0).collect();
                let up: Vec<f32> = x.iter().map(|v| 0.5 - v / 9.0).collect();
                let mut y = vec![0f32; x.len()];
                super::kernel::forward(activation, &x, Some(&up), &mut y);
                let g: Vec<f32> = x.iter().map(|v| 1.0 + v / 11.0).collect();
                let (mut dx, mut dup) = (vec![0f32; x.len()], vec![0f32; x.len()]);
                let (dx_out, dup_out) = (Some(&mut dx[..]), Some(&mut dup[..]));
                super::kernel::backward(activation, &x, Some(&up), &g, dx_out, dup_out);
                for i in 0..x.len() {
                    let (v, u, gi) = (f64::from(x[i]), f64::from(up[i]), f64::from(g[i]));
                    let h = 1e-5;
                    let slope = (act(v + h) - act(v - h)) / (2.0 * h);
                    let expected = [act(v) * u, gi * u * slope, gi * act(v)];
                    for (found, expected) in [y[i], dx[i], dup[i]].iter().zip(expected) {
                        assert!(
                            (f64::from(*found) - expected).abs() <= 2e-6 * expected.abs().max(1.0),
                            "{activation:?}, x = {v}: {found} against {expected}"
                        );
                    }
                }
            }
        }
    }
}
