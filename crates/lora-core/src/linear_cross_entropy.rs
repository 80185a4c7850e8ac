//! The mean cross-entropy of a linear head's logits (`hidden · Wᵀ`), with the head and the loss
//! fused so that the `[rows, vocab]` logits never become a backend tensor.
//!
//! A language model's head over a large vocabulary dominates a training step outside the
//! layers: for t5-small, 1024 target tokens times the 32128-word head make 33 million logits
//! (131 MB), which an unfused loss writes, reads and writes again several times (the product,
//! the maximum, the exponentials, the sum, the gradient), each a pass of its own. On the flex
//! backend this function instead computes the logits in slabs of vocabulary columns on all
//! threads, reduces each slab to a row maximum and a sum of exponentials while it is fresh,
//! turns the slabs into the softmax gradient in place, and multiplies that gradient by the
//! head's weight at once: the gradient with respect to `hidden` is known when the forward pass
//! ends. The autodiff graph then records only `Σ hidden·g`, whose gradient is that `g` (the
//! head's weight must be frozen, as it is when only adapters train).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::LossGroups;

/// The label value a sequence loss ignores (PyTorch's and transformers' `-100`): padding in a
/// batch of labels.
///
/// ```
/// assert_eq!(lora_core::IGNORE_INDEX, -100);
/// ```
pub const IGNORE_INDEX: i64 = -100;

/// How a head's weight stores its vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadLayout {
    /// `[vocab, d_model]`: one row per word, as an embedding table (a tied head).
    VocabRows,
    /// `[d_model, vocab]`: one column per word, as a Burn `Linear` weight (`d_input × d_output`).
    VocabColumns,
}

/// The mean cross-entropy of the logits `hidden · Wᵀ` (or `hidden · W` for
/// [`HeadLayout::VocabColumns`]) against `labels`, one per row of `hidden`, where labels equal
/// to `ignore_index` count for nothing, with the head and the loss fused; `None` where the fused
/// path does not apply, so that the caller computes the logits and the loss with Burn's
/// operations.
///
/// It applies on the flex backend (crate feature `flex`), and on the autodiff backend over it,
/// for `f32` tensors with a contiguous weight, when the head's weight is frozen (a parameter
/// that does not require a gradient, or a tensor outside any graph: a weight computed from
/// tracked tensors would get no gradient), at least one label is kept and every kept label is a
/// word of the vocabulary. On an autodiff backend the loss carries the gradient with respect to
/// `hidden`. Exponentials use a
/// polynomial on CPUs with AVX-512 (within 2 ulp of the exact value) and the standard library's
/// `exp` elsewhere; per-row sums are combined in `f64`.
///
/// Without the crate feature `flex` it always returns `None`.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::activation::log_softmax;
/// use burn::tensor::{Int, Tensor, TensorData};
/// use lora_core::{linear_cross_entropy, HeadLayout};
///
/// let device = Default::default();
/// let hidden = Tensor::<NdArray, 2>::ones([2, 4], &device);
/// let embedding = Tensor::<NdArray, 2>::zeros([5, 4], &device);
/// let labels = [3, -100];
/// let loss = linear_cross_entropy(hidden.clone(), &embedding, HeadLayout::VocabRows, &labels, -100)
///     .unwrap_or_else(|| {
///         // The same loss with Burn's operations: row 0 only, the other is ignored.
///         let logits = hidden.slice([0..1]).matmul(embedding.clone().transpose());
///         let label = Tensor::<NdArray, 2, Int>::from_data(TensorData::new(vec![3i64], [1, 1]), &device);
///         log_softmax(logits, 1).gather(1, label).mean().neg()
///     });
/// // Five equal logits: ln 5.
/// assert!((loss.into_scalar() - 5f32.ln()).abs() < 1e-6);
/// ```
pub fn linear_cross_entropy<B: Backend>(
    hidden: Tensor<B, 2>,
    weight: &Tensor<B, 2>,
    layout: HeadLayout,
    labels: &[i64],
    ignore_index: i64,
) -> Option<Tensor<B, 1>> {
    let groups = LossGroups::single(labels, ignore_index).ok()?;
    linear_cross_entropy_grouped(hidden, weight, layout, labels, ignore_index, &groups)
}

/// [`linear_cross_entropy`] with one mean per group of rows (`[groups]`): group `g`'s value is
/// the mean loss over its own kept rows, and its gradient reaches only those rows. With one
/// group per adapter trained in a batch, the sum of the values trains each adapter as a batch
/// of its own samples would. `None` where the fused path does not apply (as
/// [`linear_cross_entropy`]) or when `groups` has another number of rows than `labels`.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_core::{linear_cross_entropy_grouped, HeadLayout, LossGroups};
///
/// let device = Default::default();
/// let hidden = Tensor::<NdArray, 2>::ones([3, 4], &device);
/// let embedding = Tensor::<NdArray, 2>::zeros([5, 4], &device);
/// let labels = [3, 1, -100];
/// let groups = LossGroups::new(vec![0, 1, 1], 2, &labels, -100).unwrap();
/// if let Some(means) = linear_cross_entropy_grouped(hidden, &embedding, HeadLayout::VocabRows, &labels, -100, &groups) {
///     // Five equal logits: ln 5 in each group.
///     for mean in means.into_data().to_vec::<f32>().unwrap() {
///         assert!((mean - 5f32.ln()).abs() < 1e-6);
///     }
/// }
/// ```
pub fn linear_cross_entropy_grouped<B: Backend>(
    hidden: Tensor<B, 2>,
    weight: &Tensor<B, 2>,
    layout: HeadLayout,
    labels: &[i64],
    ignore_index: i64,
    groups: &LossGroups,
) -> Option<Tensor<B, 1>> {
    #[cfg(not(feature = "flex"))]
    {
        let _ = (hidden, weight, layout, labels, ignore_index, groups);
        None
    }
    #[cfg(feature = "flex")]
    flex::linear_cross_entropy(hidden, weight, layout, labels, ignore_index, groups)
}

#[cfg(feature = "flex")]
mod flex {
    use burn::tensor::backend::Backend;
    use burn::tensor::{Tensor, TensorData};
    use rayon::prelude::*;

    use super::HeadLayout;
    use crate::flex_tensor::{
        any_float_primitive, gemm_into, row_major_f32, zeros_f32, MatrixView,
    };
    use crate::row_exp::{max_and_sum_exp, softmax_times};
    use crate::LossGroups;

    /// Vocabulary columns per slab: one task's product and reduction. The slab's product keeps
    /// the GEMM's full rate on one thread (`[1024, 512] · [512, 2048]`).
    const SLAB_COLUMNS: usize = 2048;
    /// Rows handled at once, which bounds the logits buffer (`ROW_BLOCK × vocab` values).
    const ROW_BLOCK: usize = 1024;

    pub(super) fn linear_cross_entropy<B: Backend>(
        hidden: Tensor<B, 2>,
        weight: &Tensor<B, 2>,
        layout: HeadLayout,
        labels: &[i64],
        ignore_index: i64,
        groups: &LossGroups,
    ) -> Option<Tensor<B, 1>> {
        let [rows, d] = hidden.dims();
        let [first, second] = weight.dims();
        let vocab = match layout {
            HeadLayout::VocabRows if second == d => first,
            HeadLayout::VocabColumns if first == d => second,
            _ => return None,
        };
        if weight.is_require_grad()
            || labels.len() != rows
            || groups.rows() != rows
            || rows == 0
            || d == 0
            || vocab == 0
        {
            return None;
        }
        let mut targets = Vec::with_capacity(rows);
        for &label in labels {
            if label == ignore_index {
                targets.push(None);
            } else if (0..vocab as i64).contains(&label) {
                targets.push(Some(label as usize));
            } else {
                return None;
            }
        }
        let hidden_flex = any_float_primitive(&hidden)?;
        let weight_flex = any_float_primitive(weight)?;
        let hidden_values = row_major_f32(&hidden_flex)?;
        let weight_values = weight_flex.as_slice::<f32>()?;
        let head = Head {
            weight: weight_values,
            layout,
            vocab,
            d,
        };
        let want_gradient = B::ad_enabled(&hidden.device());
        let (row_losses, gradient) =
            head.loss(&hidden_values, &targets, groups.weights(), want_gradient)?;
        let mut totals = vec![0f64; groups.len()];
        for (group, loss) in groups.of_row().iter().zip(&row_losses) {
            totals[*group] += loss;
        }
        let device = hidden.device();
        let totals = totals.into_iter().map(|t| t as f32).collect();
        let value = Tensor::<B, 1>::from_data(TensorData::new(totals, [groups.len()]), &device);
        let Some(gradient) = gradient else {
            return Some(value);
        };
        let gradient = Tensor::<B, 2>::from_data(TensorData::new(gradient, [rows, d]), &device);
        // `Σ hidden·g` over a group's rows has the gradient `g` there; subtracting its detached
        // value leaves the loss's.
        let surrogate = if groups.len() == 1 {
            (hidden * gradient).sum()
        } else {
            groups.sum_rows((hidden * gradient).sum_dim(1))
        };
        Some(surrogate.clone() - surrogate.detach() + value)
    }

    /// A head's weight as row-major values.
    pub(crate) struct Head<'a> {
        pub(crate) weight: &'a [f32],
        pub(crate) layout: HeadLayout,
        pub(crate) vocab: usize,
        pub(crate) d: usize,
    }

    impl Head<'_> {
        /// The weight's words `v0..` as the right-hand side of `hidden · Wᵀ` (`[d, words]`).
        fn logits_rhs(&self, v0: usize) -> MatrixView<'_> {
            match self.layout {
                HeadLayout::VocabRows => {
                    MatrixView::transposed(&self.weight[v0 * self.d..], self.d)
                }
                HeadLayout::VocabColumns => MatrixView::row_major(&self.weight[v0..], self.vocab),
            }
        }

        /// The weight's words `v0..` as the right-hand side of `g · W` (`[words, d]`).
        fn gradient_rhs(&self, v0: usize) -> MatrixView<'_> {
            let transposed = self.logits_rhs(v0);
            MatrixView {
                values: transposed.values,
                row_stride: transposed.col_stride,
                col_stride: transposed.row_stride,
            }
        }

        /// Each row's `w·(logsumexp(z) − z_label)` (0 for a row without a target), `w` the row's
        /// weight, and the gradient of their sum with respect to `hidden` (`[rows, d]`) when
        /// wanted.
        pub(crate) fn loss(
            &self,
            hidden: &[f32],
            targets: &[Option<usize>],
            row_weights: &[f64],
            want_gradient: bool,
        ) -> Option<(Vec<f64>, Option<Vec<f32>>)> {
            let d = self.d;
            let mut losses = vec![0.0; targets.len()];
            let mut gradient = want_gradient.then(|| zeros_f32(targets.len() * d));
            for (block, block_targets) in targets.chunks(ROW_BLOCK).enumerate() {
                let start = block * ROW_BLOCK;
                let end = start + block_targets.len();
                let block_hidden = &hidden[start * d..end * d];
                let block_gradient = gradient.as_mut().map(|g| &mut g[start * d..end * d]);
                self.block_loss(
                    block_hidden,
                    block_targets,
                    &row_weights[start..end],
                    &mut losses[start..end],
                    block_gradient,
                )?;
            }
            Some((losses, gradient))
        }

        fn block_loss(
            &self,
            hidden: &[f32],
            targets: &[Option<usize>],
            row_weights: &[f64],
            losses: &mut [f64],
            gradient: Option<&mut [f32]>,
        ) -> Option<()> {
            let rows = targets.len();
            let d = self.d;
            // The logits in slabs of `SLAB_COLUMNS` vocabulary columns, each slab `[rows, width]`.
            let mut logits = zeros_f32(rows * self.vocab);
            let stats: Vec<Vec<(f32, f32)>> = logits
                .par_chunks_mut(rows * SLAB_COLUMNS)
                .enumerate()
                .map(|(slab, values)| {
                    let v0 = slab * SLAB_COLUMNS;
                    let width = values.len() / rows;
                    gemm_into(
                        values,
                        false,
                        MatrixView::row_major(hidden, d),
                        self.logits_rhs(v0),
                        [rows, d, width],
                        false,
                    )?;
                    Some(values.chunks(width).map(max_and_sum_exp).collect())
                })
                .collect::<Option<_>>()?;

            // Each row's log-sum-exp from its slabs' maxima and sums, and the loss.
            let slab_of = |label: usize| (label / SLAB_COLUMNS, label % SLAB_COLUMNS);
            let mut log_sum_exp = vec![0f32; rows];
            for (row, target) in targets.iter().enumerate() {
                let Some(label) = *target else { continue };
                let max = stats
                    .iter()
                    .map(|s| s[row].0)
                    .fold(f32::NEG_INFINITY, f32::max);
                let sum: f64 = stats
                    .iter()
                    .map(|s| s[row].1 as f64 * ((s[row].0 - max) as f64).exp())
                    .sum();
                let lse = max as f64 + sum.ln();
                let (slab, column) = slab_of(label);
                let width = SLAB_COLUMNS.min(self.vocab - slab * SLAB_COLUMNS);
                let picked = logits[slab * rows * SLAB_COLUMNS + row * width + column];
                losses[row] = row_weights[row] * (lse - picked as f64);
                log_sum_exp[row] = lse as f32;
            }
            let Some(gradient) = gradient else {
                return Some(());
            };

            // The slabs become `w·(softmax − onehot)` in place and are multiplied by the weight's
            // words at once, each thread accumulating its own `[rows, d]` sum.
            // Each slab's product goes to a buffer of its own and the buffers are summed in slab
            // order, so the gradient does not depend on how the threads split the work (a
            // seeded run gives the same adapter every time).
            let partials: Vec<Vec<f32>> = logits
                .par_chunks_mut(rows * SLAB_COLUMNS)
                .enumerate()
                .map(|(slab, values)| {
                    let v0 = slab * SLAB_COLUMNS;
                    let width = values.len() / rows;
                    for (row, values) in values.chunks_mut(width).enumerate() {
                        match targets[row] {
                            None => values.fill(0.0),
                            Some(label) => {
                                let weight = row_weights[row] as f32;
                                softmax_times(values, log_sum_exp[row], weight);
                                if (v0..v0 + width).contains(&label) {
                                    values[label - v0] -= weight;
                                }
                            }
                        }
                    }
                    let mut partial = vec![0f32; rows * d];
                    gemm_into(
                        &mut partial,
                        false,
                        MatrixView::row_major(values, width),
                        self.gradient_rhs(v0),
                        [rows, width, d],
                        false,
                    )?;
                    Some(partial)
                })
                .collect::<Option<_>>()?;
            gradient.fill(0.0);
            for partial in &partials {
                gradient.iter_mut().zip(partial).for_each(|(g, p)| *g += p);
            }
            Some(())
        }
    }

    #[cfg(test)]
    mod tests {
        use burn::backend::{Autodiff, NdArray};
        use burn::tensor::activation::log_softmax;
        use burn::tensor::{Distribution, Int, Tensor, TensorData};
        use burn_flex::Flex;

        use super::super::{linear_cross_entropy, linear_cross_entropy_grouped};
        use super::HeadLayout;
        use crate::test_util::{assert_close, values};
        use crate::LossGroups;

        type T = Autodiff<Flex>;
        const IGNORE: i64 = -100;

        /// Labels in `0..vocab`, every fifth one ignored.
        fn labels(rows: usize, vocab: usize) -> Vec<i64> {
            (0..rows)
                .map(|i| {
                    if i % 5 == 3 {
                        IGNORE
                    } else {
                        ((i * 7919 + 13) % vocab) as i64
                    }
                })
                .collect()
        }

        /// The loss and `∂loss/∂hidden` with Burn's recorded operations.
        fn reference(
            hidden: &Tensor<T, 2>,
            weight: &Tensor<T, 2>,
            layout: HeadLayout,
            labels: &[i64],
        ) -> (f32, Vec<f32>) {
            let device = Default::default();
            let h = hidden.clone().detach().require_grad();
            let logits = match layout {
                HeadLayout::VocabRows => h.clone().matmul(weight.clone().transpose()),
                HeadLayout::VocabColumns => h.clone().matmul(weight.clone()),
            };
            let kept: Vec<f32> = labels.iter().map(|l| (*l != IGNORE) as u8 as f32).collect();
            let count = kept.iter().sum::<f32>();
            let safe: Vec<i64> = labels.iter().map(|l| (*l).max(0)).collect();
            let rows = labels.len();
            let safe = Tensor::<T, 2, Int>::from_data(TensorData::new(safe, [rows, 1]), &device);
            let kept = Tensor::<T, 2>::from_data(TensorData::new(kept, [rows, 1]), &device);
            let loss = (log_softmax(logits, 1).gather(1, safe) * kept).sum().neg() / count;
            let value = loss.clone().into_scalar();
            let grads = loss.backward();
            let grad = h.grad(&grads).expect("gradient").into_data();
            (value, grad.into_vec::<f32>().expect("f32"))
        }

        fn check(rows: usize, d: usize, vocab: usize, layout: HeadLayout) {
            let device = Default::default();
            let hidden =
                Tensor::<T, 2>::random([rows, d], Distribution::Uniform(-2.0, 2.0), &device);
            let shape = match layout {
                HeadLayout::VocabRows => [vocab, d],
                HeadLayout::VocabColumns => [d, vocab],
            };
            let weight = Tensor::<T, 2>::random(shape, Distribution::Uniform(-1.0, 1.0), &device);
            let labels = labels(rows, vocab);
            let (expected, expected_grad) = reference(&hidden, &weight, layout, &labels);

            let h = hidden.detach().require_grad();
            let loss = linear_cross_entropy(h.clone(), &weight, layout, &labels, IGNORE)
                .expect("the fused path applies on autodiff over flex");
            let found = loss.clone().into_scalar();
            let grads = loss.backward();
            let grad = values(h.grad(&grads).expect("gradient"));
            assert!(
                (found - expected).abs() <= 1e-5 * expected.abs(),
                "loss {found} against {expected}"
            );
            assert_close(&grad, &expected_grad, 1e-5, "gradient element");
        }

        #[test]
        fn tied_layout_matches_recorded_log_softmax_and_gather() {
            // Three slabs, the last one partial.
            check(70, 48, 4500, HeadLayout::VocabRows);
        }

        #[test]
        fn linear_layout_matches_recorded_log_softmax_and_gather() {
            check(37, 40, 2100, HeadLayout::VocabColumns);
        }

        #[test]
        fn more_rows_than_a_block_match_recorded_log_softmax_and_gather() {
            check(1030, 16, 2050, HeadLayout::VocabRows);
        }

        #[test]
        fn grouped_means_match_each_group_alone() {
            let device = Default::default();
            let (rows, d, vocab) = (50, 24, 2500);
            let hidden =
                Tensor::<T, 2>::random([rows, d], Distribution::Uniform(-2.0, 2.0), &device);
            let weight =
                Tensor::<T, 2>::random([vocab, d], Distribution::Uniform(-1.0, 1.0), &device);
            let labels = labels(rows, vocab);
            let of_row: Vec<usize> = (0..rows).map(|r| (r / 7) % 3).collect();
            let groups = LossGroups::new(of_row.clone(), 3, &labels, IGNORE).expect("groups");

            let h = hidden.clone().detach().require_grad();
            let means = linear_cross_entropy_grouped(
                h.clone(),
                &weight,
                HeadLayout::VocabRows,
                &labels,
                IGNORE,
                &groups,
            )
            .expect("fused");
            let found = values(means.clone());
            // Each group's loss weighed differently: each row's gradient is its own group's.
            let factors = Tensor::<T, 1>::from_floats([1.0, 2.0, 3.0], &device);
            let grads = (means * factors).sum().backward();
            let grad = values(h.grad(&grads).expect("gradient"));
            for (group, found) in found.iter().enumerate() {
                let members: Vec<usize> = (0..rows).filter(|r| of_row[*r] == group).collect();
                let index = Tensor::<T, 1, Int>::from_data(
                    TensorData::new(members.iter().map(|r| *r as i64).collect(), [members.len()]),
                    &device,
                );
                let group_labels: Vec<i64> = members.iter().map(|r| labels[*r]).collect();
                let (expected, expected_grad) = reference(
                    &hidden.clone().select(0, index),
                    &weight,
                    HeadLayout::VocabRows,
                    &group_labels,
                );
                assert!(
                    (found - expected).abs() <= 1e-5 * expected.abs(),
                    "group {group}: {found} against {expected}"
                );
                let scaled: Vec<f32> = expected_grad
                    .iter()
                    .map(|g| g * (group + 1) as f32)
                    .collect();
                let picked: Vec<f32> = members
                    .iter()
                    .flat_map(|r| grad[r * d..(r + 1) * d].iter().copied())
                    .collect();
                assert_close(&picked, &scaled, 1e-5, "gradient element");
            }
        }

        #[test]
        fn the_gradient_is_the_same_on_every_run() {
            let device = Default::default();
            let hidden =
                Tensor::<T, 2>::random([300, 32], Distribution::Uniform(-2.0, 2.0), &device);
            let weight =
                Tensor::<T, 2>::random([9000, 32], Distribution::Uniform(-1.0, 1.0), &device);
            let labels = labels(300, 9000);
            let gradient = || {
                let h = hidden.clone().detach().require_grad();
                let loss = linear_cross_entropy(
                    h.clone(),
                    &weight,
                    HeadLayout::VocabRows,
                    &labels,
                    IGNORE,
                )
                .expect("fused");
                values(h.grad(&loss.backward()).expect("gradient"))
            };
            let first = gradient();
            for _ in 0..4 {
                assert_eq!(gradient(), first);
            }
        }

        #[test]
        fn without_autodiff_only_the_value_is_computed() {
            let device = Default::default();
            let hidden =
                Tensor::<Flex, 2>::random([9, 24], Distribution::Uniform(-2.0, 2.0), &device);
            let weight =
                Tensor::<Flex, 2>::random([3000, 24], Distribution::Uniform(-1.0, 1.0), &device);
            let labels = labels(9, 3000);
            let (expected, _) = reference(
                &Tensor::<T, 2>::from_data(hidden.to_data(), &device),
                &Tensor::<T, 2>::from_data(weight.to_data(), &device),
                HeadLayout::VocabRows,
                &labels,
            );
            let found =
                linear_cross_entropy(hidden, &weight, HeadLayout::VocabRows, &labels, IGNORE)
                    .expect("the fused path applies on flex")
                    .into_scalar();
            assert!(
                (found - expected).abs() <= 1e-5 * expected.abs(),
                "{found} against {expected}"
            );
        }

        #[test]
        fn a_trainable_weight_takes_the_caller_s_path() {
            let device = Default::default();
            let hidden = Tensor::<T, 2>::ones([2, 8], &device);
            let weight = Tensor::<T, 2>::ones([10, 8], &device).require_grad();
            assert!(
                linear_cross_entropy(hidden, &weight, HeadLayout::VocabRows, &[1, 2], IGNORE)
                    .is_none()
            );
        }

        #[test]
        fn all_ignored_or_out_of_range_labels_take_the_caller_s_path() {
            let device = Default::default();
            let hidden = Tensor::<T, 2>::ones([2, 8], &device);
            let weight = Tensor::<T, 2>::ones([10, 8], &device);
            for labels in [[IGNORE, IGNORE], [1, 10], [-1, 2]] {
                let loss = linear_cross_entropy(
                    hidden.clone(),
                    &weight,
                    HeadLayout::VocabRows,
                    &labels,
                    IGNORE,
                );
                assert!(loss.is_none(), "labels {labels:?}");
            }
            // Mismatched shapes too.
            assert!(linear_cross_entropy(
                hidden,
                &weight,
                HeadLayout::VocabColumns,
                &[1, 2],
                IGNORE
            )
            .is_none());
        }

        #[test]
        fn other_backends_take_the_caller_s_path() {
            let device = Default::default();
            let hidden = Tensor::<NdArray, 2>::ones([2, 8], &device);
            let weight = Tensor::<NdArray, 2>::ones([10, 8], &device);
            assert!(
                linear_cross_entropy(hidden, &weight, HeadLayout::VocabRows, &[1, 2], IGNORE)
                    .is_none()
            );
        }
    }
}
