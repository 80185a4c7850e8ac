//! `[a, b, c, d] → [a, c, b, d]` written out contiguously: the head split and merge of multi-head
//! attention (`[batch, length, heads, d_head] ↔ [batch, heads, length, d_head]`).
//!
//! Burn's `swap_dims(1, 2)` is a view. Attention then multiplies strided operands, and in the
//! backward pass the gradient that reaches the view's `reshape` is strided too, so Burn 0.21's
//! flex backend copies it element by element on one thread (its generic strided iterator) for
//! every query, key and value of every layer. Here the swap is one operation that writes the
//! swapped tensor in row-major order, `d`-element runs at a time and on all threads, and whose
//! backward pass is the same swap of the gradient. Where one of the two middle dimensions is 1
//! (a decoding step's one-token heads) the swap moves no value and is a reshape on every
//! backend.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// `x.swap_dims(1, 2)` in row-major order: on the flex backend and on autodiff over it (crate
/// feature `flex`), a parallel copy recorded as one operation, whose backward pass swaps the
/// gradient back the same way; on every other backend, Burn's `swap_dims` (a view).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Int, Tensor};
/// use lora_core::swap_middle_dims;
///
/// let x = Tensor::<NdArray, 1, Int>::arange(0..24, &Default::default())
///     .float()
///     .reshape([1, 2, 3, 4]);
/// let y = swap_middle_dims(x.clone());
/// assert_eq!(y.dims(), [1, 3, 2, 4]);
/// assert_eq!(y.into_data(), x.swap_dims(1, 2).into_data());
/// ```
pub fn swap_middle_dims<B: Backend>(x: Tensor<B, 4>) -> Tensor<B, 4> {
    let [a, b, c, d] = x.dims();
    if b == 1 || c == 1 {
        // The same values in the same order, as in decoding's one-token heads: no copy.
        return x.reshape([a, c, b, d]);
    }
    #[cfg(feature = "flex")]
    let x = match flex::swap_middle_dims(x) {
        Ok(y) => return y,
        Err(x) => x,
    };
    x.swap_dims(1, 2)
}

#[cfg(feature = "flex")]
mod flex {
    use burn::tensor::backend::Backend;
    use burn::tensor::{DType, Shape, Tensor, TensorData, TensorPrimitive};
    use burn_flex::{Flex, FlexTensor};
    use rayon::prelude::*;

    use crate::flex_tensor::{
        float_primitive, from_autodiff_flex, from_flex, into_autodiff_flex, zeros_f32,
    };
    use crate::recorded_op::{record_unary, UnaryGradient};

    /// Output rows (`d` values each) per task.
    const TASK_ROWS: usize = 512;

    /// [`super::swap_middle_dims`] on flex and autodiff over flex; `Err(x)` elsewhere.
    pub(super) fn swap_middle_dims<B: Backend>(
        x: Tensor<B, 4>,
    ) -> Result<Tensor<B, 4>, Tensor<B, 4>> {
        if let Some(flex) = float_primitive(&x) {
            if let Some(swapped) = swapped(&flex) {
                if let Some(y) = from_flex(swapped) {
                    return Ok(y);
                }
            }
            return Err(x);
        }
        let x = into_autodiff_flex(x)?;
        let primitive = x.into_primitive().tensor();
        let Some(output) = swapped(&primitive.primitive) else {
            return Err(from_autodiff_flex(Tensor::from_primitive(
                TensorPrimitive::Float(primitive),
            )));
        };
        let y = record_unary(SwapBackward, &primitive, (), output);
        Ok(from_autodiff_flex(Tensor::from_primitive(
            TensorPrimitive::Float(y),
        )))
    }

    /// `x` `[a, b, c, d]` (any strides) as a row-major `[a, c, b, d]`; `None` unless `f32`.
    fn swapped(x: &FlexTensor) -> Option<FlexTensor> {
        if x.dtype() != DType::F32 {
            return None;
        }
        let layout = x.layout();
        let dims = layout.shape();
        if dims.num_dims() != 4 {
            return None;
        }
        let [a, b, c, d] = [dims[0], dims[1], dims[2], dims[3]];
        let strides = layout.strides();
        let [s0, s1, s2, s3] = [strides[0], strides[1], strides[2], strides[3]];
        let start = layout.start_offset() as isize;
        let storage = x.storage::<f32>();
        let mut out = zeros_f32(a * b * c * d);
        if d > 0 {
            out.par_chunks_mut(d * TASK_ROWS)
                .enumerate()
                .for_each(|(task, rows)| {
                    for (i, row) in rows.chunks_mut(d).enumerate() {
                        // Output row `(ia, ic, ib)` of `[a, c, b]`.
                        let index = task * TASK_ROWS + i;
                        let (ib, rest) = (index % b, index / b);
                        let (ic, ia) = (rest % c, rest / c);
                        let base = start + ia as isize * s0 + ib as isize * s1 + ic as isize * s2;
                        if s3 == 1 {
                            let base = base as usize;
                            row.copy_from_slice(&storage[base..base + d]);
                        } else {
                            for (e, value) in row.iter_mut().enumerate() {
                                *value = storage[(base + e as isize * s3) as usize];
                            }
                        }
                    }
                });
        }
        Some(FlexTensor::from_data(TensorData::new(
            out,
            Shape::from(vec![a, c, b, d]),
        )))
    }

    #[derive(Debug)]
    struct SwapBackward;

    impl UnaryGradient for SwapBackward {
        type State = ();

        fn input_gradient(self, _: &(), grad: FlexTensor) -> FlexTensor {
            swapped(&grad).unwrap_or_else(|| {
                use burn::tensor::ops::FloatTensorOps;
                Flex::float_swap_dims(grad, 1, 2)
            })
        }
    }
}

#[cfg(all(test, feature = "flex"))]
mod tests {
    use burn::backend::Autodiff;
    use burn::tensor::{Distribution, Tensor};
    use burn_flex::Flex;

    use super::swap_middle_dims;
    use crate::test_util::values;

    type T = Autodiff<Flex>;

    #[test]
    fn the_fast_path_is_taken_on_flex_and_autodiff_over_flex() {
        let device = Default::default();
        let x = Tensor::<Flex, 4>::zeros([1, 2, 3, 4], &device);
        assert!(super::flex::swap_middle_dims(x).is_ok());
        let x = Tensor::<T, 4>::zeros([1, 2, 3, 4], &device).require_grad();
        assert!(super::flex::swap_middle_dims(x).is_ok());
    }

    #[test]
    fn flex_values_equal_burn_s_view() {
        let x = Tensor::<Flex, 4>::random([2, 5, 3, 7], Distribution::Default, &Default::default());
        assert_eq!(
            values(swap_middle_dims(x.clone())),
            values(x.swap_dims(1, 2))
        );
    }

    #[test]
    fn a_middle_dimension_of_one_is_swapped_by_a_reshape() {
        let device = Default::default();
        for shape in [[2, 1, 3, 4], [2, 3, 1, 4]] {
            let x = Tensor::<Flex, 4>::random(shape, Distribution::Default, &device);
            let y = swap_middle_dims(x.clone());
            assert_eq!(y.dims(), [shape[0], shape[2], shape[1], shape[3]]);
            assert_eq!(values(y), values(x.clone().swap_dims(1, 2)));
            // Gradients flow through the reshape.
            let x = Tensor::<T, 4>::from_data(x.into_data(), &device).require_grad();
            let grads = (swap_middle_dims(x.clone()) * 2.0).sum().backward();
            let grad = values(x.grad(&grads).expect("gradient"));
            assert!(grad.iter().all(|&g| g == 2.0));
        }
    }

    #[test]
    fn a_strided_input_is_read_through_its_strides() {
        let x = Tensor::<Flex, 4>::random([2, 7, 3, 5], Distribution::Default, &Default::default());
        // A view whose last dimension is not contiguous.
        let strided = x.swap_dims(1, 3);
        assert_eq!(
            values(swap_middle_dims(strided.clone())),
            values(strided.swap_dims(1, 2))
        );
    }

    #[test]
    fn gradients_equal_those_through_burn_s_view() {
        let device = Default::default();
        let x = Tensor::<T, 4>::random([2, 6, 4, 8], Distribution::Default, &device);
        let upstream = Tensor::<T, 4>::random([2, 4, 6, 8], Distribution::Default, &device);
        let run = |fused: bool| {
            let x = x.clone().detach().require_grad();
            // A strided gradient reaches the swap: the product's transposed view.
            let y = if fused {
                swap_middle_dims(x.clone())
            } else {
                x.clone().swap_dims(1, 2)
            };
            let loss =
                (y.clone() * upstream.clone()).sum() + y.clone().matmul(y.swap_dims(2, 3)).sum();
            let grads = loss.backward();
            values(x.grad(&grads).expect("gradient"))
        };
        let (found, expected) = (run(true), run(false));
        for (i, (f, e)) in found.iter().zip(&expected).enumerate() {
            assert!(
                (f - e).abs() <= 1e-5 * e.abs().max(1.0),
                "{i}: {f} against {e}"
            );
        }
    }
}
