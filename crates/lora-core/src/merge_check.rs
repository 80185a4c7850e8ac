//! A merge that proves itself: the model's outputs on probe inputs before and after
//! `merge_and_unload`, compared, and the merge refused above a threshold.

use std::fmt;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::tensor_util::to_host;
use crate::{LoraError, LoraModelOps};

/// How much merging changed a model's outputs on probe inputs (see
/// [`LoraModelOps::merge_and_unload_checked`]).
///
/// ```
/// let check = lora_core::MergeCheck { layers: 2, max_abs_diff: 2e-6, mean_abs_diff: 1e-7, max_abs_output: 4.0 };
/// assert_eq!(check.relative_diff(), 5e-7);
/// assert!(check.to_string().starts_with("merged 2 layers"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MergeCheck {
    /// Layers that had adapters.
    pub layers: usize,
    /// The largest absolute difference between an output before and after the merge.
    pub max_abs_diff: f64,
    /// The mean absolute difference.
    pub mean_abs_diff: f64,
    /// The largest absolute output before the merge (the scale of the differences).
    pub max_abs_output: f64,
}

impl MergeCheck {
    /// `max_abs_diff / max_abs_output` (0 for all-zero outputs).
    pub fn relative_diff(&self) -> f64 {
        if self.max_abs_output > 0.0 {
            self.max_abs_diff / self.max_abs_output
        } else {
            self.max_abs_diff
        }
    }
}

impl fmt::Display for MergeCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "merged {} layers; outputs on the probe inputs differ by at most {:.3e} (mean {:.3e}, \
             {:.3e} of the largest output {:.3e})",
            self.layers,
            self.max_abs_diff,
            self.mean_abs_diff,
            self.relative_diff(),
            self.max_abs_output
        )
    }
}

/// [`LoraModelOps::merge_and_unload_checked`].
pub(crate) fn merge_and_unload_checked<B, M, const D: usize>(
    model: &mut M,
    probe: impl Fn(&M) -> Tensor<B, D>,
    max_abs_diff: Option<f64>,
) -> Result<MergeCheck, LoraError>
where
    B: Backend,
    M: LoraModelOps<B> + Clone,
{
    let before = to_host::<f32, _, D>(probe(model))?;
    let mut merged = model.clone();
    let layers = merged.merge_and_unload()?;
    let after = to_host::<f32, _, D>(probe(&merged))?;
    if before.len() != after.len() {
        return Err(LoraError::MergeCheckFailed {
            reason: format!(
                "the probe gave {} values before the merge and {} after",
                before.len(),
                after.len()
            ),
        });
    }
    let (mut max_diff, mut sum, mut max_output) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in before.iter().zip(&after) {
        let diff = f64::from((x - y).abs());
        // NaN compares false: a non-finite output fails below.
        max_diff = if diff.is_nan() {
            f64::NAN
        } else {
            max_diff.max(diff)
        };
        sum += diff;
        max_output = max_output.max(f64::from(x.abs()));
    }
    let check = MergeCheck {
        layers,
        max_abs_diff: max_diff,
        mean_abs_diff: sum / before.len().max(1) as f64,
        max_abs_output: max_output,
    };
    if !check.max_abs_diff.is_finite()
        || max_abs_diff.is_some_and(|limit| check.max_abs_diff > limit)
    {
        return Err(LoraError::MergeCheckFailed {
            reason: format!(
                "{check}, above the limit {}; the model is left unmerged",
                max_abs_diff.map_or("of finite values".to_string(), |l| format!("{l:e}"))
            ),
        });
    }
    *model = merged;
    Ok(check)
}
