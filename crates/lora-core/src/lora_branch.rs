//! The LoRA branch `s · (x · A) · B` on autodiff over flex, recorded as one operation whose
//! backward pass calls the GEMM directly.
//!
//! Recorded by Burn as two products and a scaling, the branch's backward pass goes through
//! Burn's generic product backward for each of them: transposed views, outputs zeroed and then
//! copied, and a graph node per step, for products whose inner or outer size is the rank. Here
//! the forward pass keeps `h = s · x · A` and the backward pass computes, from the output's
//! gradient `g`:
//!
//! - `∂B = hᵀ · g`,
//! - `∂h = s · g · Bᵀ`, then `∂A = xᵀ · ∂h` and, when `x` is tracked, `∂x = ∂h · Aᵀ`,
//!
//! each as one GEMM call over strided views, without copies.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData, TensorPrimitive};
use burn_flex::{Flex, FlexTensor};

use crate::flex_tensor::{
    from_autodiff_flex, gemm_into, into_autodiff_flex, row_major_f32, zeros_f32, MatrixView,
};

/// Multiply-adds from which a product runs on all threads. Lower than burn-flex's `192³`, which
/// assumes sleeping threads: a training step runs under `on_compute_threads`, whose threads
/// spin and take their share at once, and the branch's products are thin (a rank-16 branch of
/// the embedded model's 256 × 768 layers over 1600 tokens is 6.5 M). The demo's 40-step run
/// took 1.5–5.5% less time with this threshold in three alternated pairs, with the same losses
/// (the split is by rows and columns, each sum in one order).
const PARALLEL_MIN_PRODUCTS: usize = 1 << 20;

/// `s · (x · A) · B` over the last dimension of `x` (`A` `[d_input, r]`, `B` `[r, d_output]`) on
/// autodiff over flex, recorded as one operation; `None` for any other backend or element type,
/// so that the caller records Burn's products.
pub(crate) fn lora_branch<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    lora_a: &Tensor<B, 2>,
    lora_b: &Tensor<B, 2>,
    scaling: f64,
) -> Option<Tensor<B, D>> {
    let [d_input, rank] = lora_a.dims();
    let [rank_b, d_output] = lora_b.dims();
    if x.dims()[D - 1] != d_input || rank_b != rank {
        return None;
    }
    let x = into_autodiff_flex(x.clone())
        .ok()?
        .into_primitive()
        .tensor();
    let a = into_autodiff_flex(lora_a.clone())
        .ok()?
        .into_primitive()
        .tensor();
    let b = into_autodiff_flex(lora_b.clone())
        .ok()?
        .into_primitive()
        .tensor();
    let shape = Shapes {
        rows: x.primitive.layout().shape().num_elements() / d_input.max(1),
        d_input,
        rank,
        d_output,
    };
    let x_values = row_major_f32(&x.primitive)?;
    let a_values = row_major_f32(&a.primitive)?;
    let b_values = row_major_f32(&b.primitive)?;
    let mut hidden = zeros_f32(shape.rows * rank);
    product(
        &mut hidden,
        [&x_values, &a_values],
        [shape.rows, d_input, rank],
    )?;
    let s = scaling as f32;
    hidden.iter_mut().for_each(|h| *h *= s);
    let mut output = zeros_f32(shape.rows * d_output);
    product(
        &mut output,
        [&hidden, &b_values],
        [shape.rows, rank, d_output],
    )?;
    let mut out_shape = x.primitive.layout().shape().clone();
    out_shape[D - 1] = d_output;
    let output = FlexTensor::from_data(TensorData::new(output, out_shape));

    let recorded = match LoraBranchBackward
        .prepare::<NoCheckpointing>([x.node.clone(), a.node.clone(), b.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let state = BranchState {
                x: x.primitive.clone(),
                a: a.primitive.clone(),
                b: b.primitive.clone(),
                hidden,
                scaling: s,
                shape,
            };
            prep.finish(state, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    Some(from_autodiff_flex(Tensor::from_primitive(
        TensorPrimitive::Float(recorded),
    )))
}

/// `dst ← lhs · rhs` for row-major `[m, k]` and `[k, n]`.
fn product(dst: &mut [f32], [lhs, rhs]: [&[f32]; 2], [m, k, n]: [usize; 3]) -> Option<()> {
    gemm_into(
        dst,
        false,
        MatrixView::row_major(lhs, k),
        MatrixView::row_major(rhs, n),
        [m, k, n],
        m * k * n >= PARALLEL_MIN_PRODUCTS,
    )
}

/// The sizes of a branch: `x` is `[rows, d_input]` once flattened.
#[derive(Debug, Clone, Copy)]
struct Shapes {
    rows: usize,
    d_input: usize,
    rank: usize,
    d_output: usize,
}

/// What the backward pass needs: the inputs and `h = s · x · A`.
#[derive(Debug, Clone)]
struct BranchState {
    x: FlexTensor,
    a: FlexTensor,
    b: FlexTensor,
    hidden: Vec<f32>,
    scaling: f32,
    shape: Shapes,
}

#[derive(Debug)]
struct LoraBranchBackward;

impl Backward<Flex, 3> for LoraBranchBackward {
    type State = BranchState;

    fn backward(
        self,
        ops: Ops<Self::State, 3>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [x_parent, a_parent, b_parent] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let state = &ops.state;
        let Shapes {
            rows,
            d_input,
            rank,
            d_output,
        } = state.shape;
        let gradients = (|| {
            let g = row_major_f32(&g)?;
            let x = row_major_f32(&state.x)?;
            let a = row_major_f32(&state.a)?;
            let b = row_major_f32(&state.b)?;
            let parallel = |m: usize, k: usize, n: usize| m * k * n >= PARALLEL_MIN_PRODUCTS;
            // ∂B = hᵀ · g
            let grad_b = match b_parent {
                Some(_) => {
                    let mut grad_b = zeros_f32(rank * d_output);
                    gemm_into(
                        &mut grad_b,
                        false,
                        MatrixView::transposed(&state.hidden, rank),
                        MatrixView::row_major(&g, d_output),
                        [rank, rows, d_output],
                        parallel(rank, rows, d_output),
                    )?;
                    Some(grad_b)
                }
                None => None,
            };
            // ∂h = s · g · Bᵀ
            let grad_hidden = if a_parent.is_some() || x_parent.is_some() {
                let mut grad_hidden = zeros_f32(rows * rank);
                gemm_into(
                    &mut grad_hidden,
                    false,
                    MatrixView::row_major(&g, d_output),
                    MatrixView::transposed(&b, d_output),
                    [rows, d_output, rank],
                    parallel(rows, d_output, rank),
                )?;
                grad_hidden.iter_mut().for_each(|v| *v *= state.scaling);
                Some(grad_hidden)
            } else {
                None
            };
            // ∂A = xᵀ · ∂h
            let grad_a = match (&a_parent, &grad_hidden) {
                (Some(_), Some(grad_hidden)) => {
                    let mut grad_a = zeros_f32(d_input * rank);
                    gemm_into(
                        &mut grad_a,
                        false,
                        MatrixView::transposed(&x, d_input),
                        MatrixView::row_major(grad_hidden, rank),
                        [d_input, rows, rank],
                        parallel(d_input, rows, rank),
                    )?;
                    Some(grad_a)
                }
                _ => None,
            };
            // ∂x = ∂h · Aᵀ
            let grad_x = match (&x_parent, &grad_hidden) {
                (Some(_), Some(grad_hidden)) => {
                    let mut grad_x = zeros_f32(rows * d_input);
                    gemm_into(
                        &mut grad_x,
                        false,
                        MatrixView::row_major(grad_hidden, rank),
                        MatrixView::transposed(&a, rank),
                        [rows, rank, d_input],
                        parallel(rows, rank, d_input),
                    )?;
                    Some(grad_x)
                }
                _ => None,
            };
            Some((grad_x, grad_a, grad_b))
        })();
        // The operation is recorded only for contiguous-or-copyable f32 tensors, so the
        // products above always apply.
        let Some((grad_x, grad_a, grad_b)) = gradients else {
            unreachable!("the branch is recorded only for f32 tensors");
        };
        if let (Some(parent), Some(grad)) = (x_parent, grad_x) {
            let shape = state.x.layout().shape().clone();
            grads.register::<Flex>(
                parent.id,
                FlexTensor::from_data(TensorData::new(grad, shape)),
            );
        }
        if let (Some(parent), Some(grad)) = (a_parent, grad_a) {
            let data = TensorData::new(grad, [d_input, rank]);
            grads.register::<Flex>(parent.id, FlexTensor::from_data(data));
        }
        if let (Some(parent), Some(grad)) = (b_parent, grad_b) {
            let data = TensorData::new(grad, [rank, d_output]);
            grads.register::<Flex>(parent.id, FlexTensor::from_data(data));
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Autodiff;
    use burn::tensor::{Distribution, Tensor};

    use super::lora_branch;
    use crate::tensor_util::linear_flat;
    use crate::test_util::{assert_close, values};

    type T = Autodiff<burn_flex::Flex>;

    /// Values and gradients of the fused branch and of Burn's products, for `x` tracked or not.
    fn check(x_tracked: bool) {
        let device = Default::default();
        // Large enough for the threaded products.
        let x = Tensor::<T, 3>::random([4, 100, 256], Distribution::Default, &device);
        let a = Tensor::<T, 2>::random([256, 16], Distribution::Default, &device);
        let b = Tensor::<T, 2>::random([16, 320], Distribution::Default, &device);
        let upstream = Tensor::<T, 3>::random([4, 100, 320], Distribution::Default, &device);
        let run = |fused: bool| {
            let x = if x_tracked {
                x.clone().detach().require_grad()
            } else {
                x.clone().detach()
            };
            let (a, b) = (
                a.clone().detach().require_grad(),
                b.clone().detach().require_grad(),
            );
            let y = if fused {
                lora_branch(&x, &a, &b, 0.5).expect("autodiff over flex")
            } else {
                let hidden = linear_flat(x.clone(), a.clone(), None).mul_scalar(0.5);
                linear_flat(hidden, b.clone(), None)
            };
            let grads = (y.clone() * upstream.clone()).sum().backward();
            let grad_x = x.grad(&grads).map(values);
            (
                values(y),
                values(a.grad(&grads).expect("∂A")),
                values(b.grad(&grads).expect("∂B")),
                grad_x,
            )
        };
        let (fused, burn) = (run(true), run(false));
        assert_close(&fused.0, &burn.0, 1e-5, "value");
        assert_close(&fused.1, &burn.1, 1e-5, "∂A");
        assert_close(&fused.2, &burn.2, 1e-5, "∂B");
        match (fused.3, burn.3) {
            (Some(fused), Some(burn)) => assert_close(&fused, &burn, 1e-5, "∂x"),
            (None, None) => assert!(!x_tracked),
            _ => panic!("∂x present in one path only"),
        }
    }

    #[test]
    fn values_and_gradients_equal_burn_s_products() {
        check(true);
    }

    #[test]
    fn an_untracked_input_gets_no_gradient() {
        check(false);
    }

    #[test]
    fn other_backends_are_left_to_burn() {
        let device = Default::default();
        let x = Tensor::<burn_flex::Flex, 2>::ones([2, 4], &device);
        let a = Tensor::<burn_flex::Flex, 2>::ones([4, 2], &device);
        let b = Tensor::<burn_flex::Flex, 2>::ones([2, 3], &device);
        assert!(lora_branch(&x, &a, &b, 1.0).is_none());
    }
}
