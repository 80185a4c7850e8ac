//! Token losses averaged per group of rows: one mean per adapter when several adapters train in
//! one batch, each on its own samples.

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use crate::LoraError;

/// Which group each row of a token loss belongs to, and each row's weight in its group's mean:
/// `1 / (kept rows of the group)` for a kept label, 0 for an ignored one.
///
/// With one group the weighted sum is the batch's mean loss; with one group per adapter
/// trained in a batch it gives each adapter the mean over its own samples' tokens, exactly what
/// it would see in a batch of its own.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_core::LossGroups;
///
/// // Rows 0–1 in group 0, rows 2–4 in group 1; row 1 is ignored.
/// let groups = LossGroups::new(vec![0, 0, 1, 1, 1], 2, &[7, -100, 3, 4, 5], -100).unwrap();
/// assert_eq!(groups.weights(), &[1.0, 0.0, 1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]);
/// let per_row = Tensor::<NdArray, 1>::from_floats([2.0, 9.0, 1.0, 2.0, 3.0], &Default::default());
/// let weighted = per_row * Tensor::from_floats(groups.weights_f32().as_slice(), &Default::default());
/// let means = groups.sum_rows(weighted.reshape([5, 1]));
/// assert_eq!(means.into_data().to_vec::<f32>().unwrap(), vec![2.0, 2.0]);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct LossGroups {
    of_row: Vec<usize>,
    count: usize,
    weights: Vec<f64>,
}

impl LossGroups {
    /// Groups rows by `of_row` (one group index in `0..count` per row) for `labels`, one per
    /// row, where `ignore_index` marks a row that counts for nothing.
    ///
    /// # Errors
    /// [`LoraError::InvalidLossGroups`] when `of_row` and `labels` differ in length, a group
    /// index is not below `count`, or a group holds no kept label (its mean would divide by
    /// zero).
    pub fn new(
        of_row: Vec<usize>,
        count: usize,
        labels: &[i64],
        ignore_index: i64,
    ) -> Result<Self, LoraError> {
        let invalid = |reason: String| Err(LoraError::InvalidLossGroups { reason });
        if of_row.len() != labels.len() {
            return invalid(format!(
                "{} row groups for {} labels",
                of_row.len(),
                labels.len()
            ));
        }
        if let Some(bad) = of_row.iter().find(|g| **g >= count) {
            return invalid(format!("group {bad} of a row, with {count} groups"));
        }
        let mut kept = vec![0usize; count];
        for (group, label) in of_row.iter().zip(labels) {
            if *label != ignore_index {
                kept[*group] += 1;
            }
        }
        if let Some(empty) = kept.iter().position(|k| *k == 0) {
            return invalid(format!(
                "group {empty} has no label that is not ignored ({ignore_index})"
            ));
        }
        let weights = of_row
            .iter()
            .zip(labels)
            .map(|(group, label)| {
                if *label == ignore_index {
                    0.0
                } else {
                    1.0 / kept[*group] as f64
                }
            })
            .collect();
        Ok(Self {
            of_row,
            count,
            weights,
        })
    }

    /// Every row in one group: the batch's mean.
    ///
    /// # Errors
    /// [`LoraError::InvalidLossGroups`] when every label is ignored.
    pub fn single(labels: &[i64], ignore_index: i64) -> Result<Self, LoraError> {
        Self::new(vec![0; labels.len()], 1, labels, ignore_index)
    }

    /// The number of groups.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are no groups (never: every group holds a kept row).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.of_row.len()
    }

    /// Each row's weight in its group's mean.
    pub fn weights(&self) -> &[f64] {
        &self.weights
    }

    /// [`weights`](Self::weights) as `f32`, as a tensor's values.
    pub fn weights_f32(&self) -> Vec<f32> {
        self.weights.iter().map(|w| *w as f32).collect()
    }

    /// The group of each row.
    pub fn of_row(&self) -> &[usize] {
        &self.of_row
    }

    /// Sums `per_row` (`[rows, 1]`) within each group: `[groups]`. One group is a plain sum;
    /// more multiply by a `[groups, rows]` indicator, so that each group's sum carries the
    /// gradient of its own rows only.
    ///
    /// # Panics
    /// When `per_row` is not `[rows, 1]`.
    pub fn sum_rows<B: Backend>(&self, per_row: Tensor<B, 2>) -> Tensor<B, 1> {
        let rows = self.rows();
        assert_eq!(per_row.dims(), [rows, 1], "one value per row");
        if self.count == 1 {
            return per_row.sum();
        }
        let mut indicator = vec![0f32; self.count * rows];
        for (row, group) in self.of_row.iter().enumerate() {
            indicator[group * rows + row] = 1.0;
        }
        let device = per_row.device();
        let indicator =
            Tensor::<B, 2>::from_data(TensorData::new(indicator, [self.count, rows]), &device);
        indicator.matmul(per_row).reshape([self.count])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_group_without_a_kept_label() {
        let error = LossGroups::new(vec![0, 1], 2, &[3, -100], -100).unwrap_err();
        assert!(error.to_string().contains("group 1"), "{error}");
    }

    #[test]
    fn refuses_a_group_index_out_of_range_and_a_length_mismatch() {
        assert!(LossGroups::new(vec![0, 2], 2, &[3, 4], -100).is_err());
        assert!(LossGroups::new(vec![0], 1, &[3, 4], -100).is_err());
    }

    #[test]
    fn each_group_s_sum_carries_only_its_rows_gradient() {
        type A = burn::backend::Autodiff<burn::backend::NdArray>;
        let groups = LossGroups::new(vec![0, 1, 0], 2, &[1, 2, 3], -100).unwrap();
        let x =
            Tensor::<A, 2>::from_floats([[1.0], [2.0], [3.0]], &Default::default()).require_grad();
        let sums = groups.sum_rows(x.clone());
        assert_eq!(sums.to_data().to_vec::<f32>().unwrap(), vec![4.0, 2.0]);
        let grad = x.grad(&sums.narrow(0, 1, 1).sum().backward()).unwrap();
        assert_eq!(
            grad.into_data().to_vec::<f32>().unwrap(),
            vec![0.0, 1.0, 0.0]
        );
    }

    #[test]
    fn one_group_weighs_every_kept_row_alike() {
        let groups = LossGroups::single(&[1, -100, 2, 3], -100).unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!(groups.weights(), &[1.0 / 3.0, 0.0, 1.0 / 3.0, 1.0 / 3.0]);
    }
}
