//! Merging task tensors the way PEFT's `merge_utils` does: magnitude and random (DARE)
//! pruning, sign election and disjoint merging (TIES), on host `f64` values. The tensors are
//! the LoRA factors (or full updates) of the adapters being combined, all of one shape.

use rand_xoshiro::rand_core::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// How TIES elects the sign of each entry (PEFT's `majority_sign_method`).
///
/// ```
/// assert_eq!(lora_core::MajoritySign::default(), lora_core::MajoritySign::Total);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MajoritySign {
    /// The sign of the sum of the (pruned, unweighted) values (`"total"`).
    #[default]
    Total,
    /// The sign held by more tensors (`"frequency"`); a tie elects `+`.
    Frequency,
}

/// How the entries to keep are chosen before merging.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Pruning {
    /// Keep everything.
    None,
    /// Keep the `⌊density · n⌋` entries of largest magnitude (PEFT's `magnitude_based_pruning`).
    Magnitude { density: f64 },
    /// Keep each entry with probability `density` and divide the kept ones by `density`
    /// (DARE; PEFT's `random_pruning` with `rescale=True`). The draws: one `f64` in `[0, 1)`
    /// per entry from a xoshiro256++ stream seeded with `seed` plus the tensor's index, in
    /// row-major order, kept when below `density`.
    Random { density: f64, seed: u64 },
}

impl Pruning {
    /// The same pruning with random masks drawn from the streams after the first `count`, for
    /// a second set of tensors that must not share the first set's masks.
    pub(crate) fn streams_after(self, count: usize) -> Self {
        match self {
            Pruning::Random { density, seed } => Pruning::Random {
                density,
                seed: seed.wrapping_add(count as u64),
            },
            other => other,
        }
    }
}

/// How the pruned, weighted tensors are summed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Summing {
    /// `Σ wᵢ tᵢ` (task arithmetic).
    Weighted,
    /// TIES: per entry, the mean of the weighted values whose (unweighted) sign is the elected
    /// one (PEFT's `disjoint_merge`).
    Disjoint(MajoritySign),
}

/// Merges `tensors` (equal lengths) with `weights` as PEFT's `merge_utils` functions do:
/// `task_arithmetic`, `magnitude_prune`, `ties`, `dare_linear` and `dare_ties` are
/// `(None | Magnitude | Random) × (Weighted | Disjoint)`. A density of 1 or more prunes nothing,
/// as in PEFT.
pub(crate) fn merge_task_tensors(
    tensors: &[Vec<f64>],
    weights: &[f64],
    pruning: Pruning,
    summing: Summing,
) -> Vec<f64> {
    let pruned: Vec<Vec<f64>> = tensors
        .iter()
        .enumerate()
        .map(|(index, t)| prune(t, pruning, index as u64))
        .collect();
    let len = pruned.first().map_or(0, Vec::len);
    match summing {
        Summing::Weighted => (0..len)
            .map(|i| pruned.iter().zip(weights).map(|(t, w)| w * t[i]).sum())
            .collect(),
        Summing::Disjoint(method) => (0..len)
            .map(|i| {
                let elected = match method {
                    MajoritySign::Total => pruned.iter().map(|t| t[i]).sum::<f64>(),
                    MajoritySign::Frequency => pruned.iter().map(|t| sign(t[i])).sum::<f64>(),
                };
                let elected = if elected >= 0.0 { 1.0 } else { -1.0 };
                let (mut sum, mut count) = (0.0, 0usize);
                for (t, w) in pruned.iter().zip(weights) {
                    // A pruned (zero) entry has sign 0 and is never counted.
                    if sign(t[i]) == elected {
                        sum += w * t[i];
                        count += 1;
                    }
                }
                sum / count.max(1) as f64
            })
            .collect(),
    }
}

/// torch's `sign`: −1, 0 or 1.
fn sign(x: f64) -> f64 {
    if x > 0.0 {
        1.0
    } else if x < 0.0 {
        -1.0
    } else {
        0.0
    }
}

fn prune(values: &[f64], pruning: Pruning, index: u64) -> Vec<f64> {
    match pruning {
        Pruning::None => values.to_vec(),
        Pruning::Magnitude { density } | Pruning::Random { density, .. } if density >= 1.0 => {
            values.to_vec()
        }
        Pruning::Magnitude { density } => {
            let keep = (density * values.len() as f64) as usize;
            // The largest magnitudes first; equal magnitudes keep the lower index first.
            let mut order: Vec<usize> = (0..values.len()).collect();
            order.sort_by(|a, b| values[*b].abs().total_cmp(&values[*a].abs()).then(a.cmp(b)));
            let mut kept = vec![0.0; values.len()];
            for i in order.into_iter().take(keep) {
                kept[i] = values[i];
            }
            kept
        }
        Pruning::Random { density, seed } => {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed.wrapping_add(index));
            values
                .iter()
                .map(|v| {
                    // 53 random bits: a uniform f64 in [0, 1).
                    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    if u < density {
                        v / density
                    } else {
                        0.0
                    }
                })
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magnitude_pruning_keeps_the_largest_magnitudes() {
        let kept = prune(
            &[0.1, -3.0, 2.0, -0.5],
            Pruning::Magnitude { density: 0.5 },
            0,
        );
        assert_eq!(kept, [0.0, -3.0, 2.0, 0.0]);
        // ⌊0.3 · 4⌋ = 1 entry.
        let kept = prune(
            &[0.1, -3.0, 2.0, -0.5],
            Pruning::Magnitude { density: 0.3 },
            0,
        );
        assert_eq!(kept, [0.0, -3.0, 0.0, 0.0]);
    }

    #[test]
    fn ties_averages_the_weighted_values_of_the_elected_sign() {
        let tensors = [vec![1.0, -2.0, 0.0], vec![3.0, 1.0, -1.0]];
        let merged = merge_task_tensors(
            &tensors,
            &[0.5, 2.0],
            Pruning::None,
            Summing::Disjoint(MajoritySign::Total),
        );
        // Entry 0: both positive → (0.5 + 6) / 2. Entry 1: total −1 → only −2 · 0.5.
        // Entry 2: total −1 → only −1 · 2.
        assert_eq!(merged, [3.25, -1.0, -2.0]);
        let by_count = merge_task_tensors(
            &tensors,
            &[0.5, 2.0],
            Pruning::None,
            Summing::Disjoint(MajoritySign::Frequency),
        );
        // Entry 1: one of each sign → + elected → 1 · 2.
        assert_eq!(by_count[1], 2.0);
    }

    #[test]
    fn random_pruning_keeps_about_density_and_rescales_what_it_keeps() {
        let values = vec![1.0; 20_000];
        let dare = Pruning::Random {
            density: 0.25,
            seed: 9,
        };
        let kept = prune(&values, dare, 0);
        let share = kept.iter().filter(|v| **v != 0.0).count() as f64 / values.len() as f64;
        assert!((share - 0.25).abs() < 0.02, "{share}");
        assert!(kept.iter().all(|v| *v == 0.0 || *v == 4.0));
        assert_eq!(kept, prune(&values, dare, 0));
        assert_ne!(kept, prune(&values, dare, 1));
        // A second set of tensors (the B factors) draws other masks than the first.
        assert_ne!(kept, prune(&values, dare.streams_after(2), 0));
        assert_eq!(Pruning::None.streams_after(2), Pruning::None);
    }
}
