//! New adapters made as weighted combinations of existing ones (PEFT's `add_weighted_adapter`).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::linalg::{jacobi_svd, thin_qr, Matrix};
use crate::task_merge::{merge_task_tensors, Pruning, Summing};
use crate::tensor_util::{from_host_f64, to_host};
use crate::{LoraAdapter, LoraConfig, LoraError, LoraInit, LoraLinear, MajoritySign};

/// How [`LoraLinear::add_weighted_adapter`] combines adapters: PEFT's eleven
/// `combination_type`s, with their `density` and `majority_sign_method`.
///
/// The methods without `Svd` in their name (`Linear`, `Ties`, `DareLinear`, `DareTies`,
/// `MagnitudePrune`) merge the `A` factors and the `B` factors separately, each source weighing
/// `±√|wᵢsᵢ|` (`wᵢ` its weight, `sᵢ` its scaling; the sign on `A` only), and need equal ranks.
/// The `…Svd` methods merge the full updates `sᵢAᵢBᵢ` with the weights `wᵢ`, then keep the best
/// rank-`rank` approximation (PEFT's `svd_rank`; `None` keeps the largest rank among the
/// sources), optionally clamping both factors to the `clamp` quantile of their entries (PEFT's
/// `svd_clamp`, `[-q, q]`). Each singular pair is oriented so that the largest-magnitude entry of
/// its output-side vector is positive: PEFT takes LAPACK's orientation, which is
/// implementation-defined, and a clamp depends on it. Pruning keeps `⌊density · n⌋` entries by magnitude (`Ties`,
/// `MagnitudePrune`) or each entry with probability `density`, rescaled by `1 / density`
/// (`Dare…`); a density of 1 or more prunes nothing. PEFT draws DARE's masks from torch's
/// global generator; here they come from a xoshiro256++ stream seeded with `seed` (plus the
/// index of the tensor pruned, the `B` factors after the `A` factors), so a run repeats exactly but does not reproduce PEFT's draws.
///
/// ```
/// use lora_core::{MajoritySign, WeightedCombination};
///
/// let method = WeightedCombination::Svd { rank: Some(8), clamp: None };
/// assert_ne!(method, WeightedCombination::Cat);
/// let ties = WeightedCombination::Ties { density: 0.5, majority_sign: MajoritySign::Total };
/// assert_ne!(ties, WeightedCombination::MagnitudePrune { density: 0.5 });
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WeightedCombination {
    /// Concatenates the ranks: `A = [w₁s₁A₁ … wₙsₙAₙ]`, `B = [B₁ … Bₙ]`. Exact: the update is
    /// `Σ wᵢ sᵢ Aᵢ Bᵢ`; the new rank is the sum of the ranks.
    Cat,
    /// Sums the factors: `A = Σ sign(wᵢsᵢ) √|wᵢsᵢ| Aᵢ`, `B = Σ √|wᵢsᵢ| Bᵢ`. Needs equal ranks; not
    /// the weighted sum of the updates (cross terms appear).
    Linear,
    /// The best rank-`rank` approximation (truncated SVD) of `Σ wᵢ sᵢ Aᵢ Bᵢ`.
    Svd {
        /// The rank of the new adapter; `None` for the largest source rank.
        rank: Option<usize>,
        /// The quantile (in `[0, 1]`) both factors are clamped to; `None` for no clamp.
        clamp: Option<f64>,
    },
    /// TIES on the factors: magnitude pruning, sign election, disjoint merge.
    Ties {
        /// Share of entries kept.
        density: f64,
        /// How the sign of each entry is elected.
        majority_sign: MajoritySign,
    },
    /// TIES on the full updates, then a rank-`rank` SVD.
    TiesSvd {
        /// The rank of the new adapter; `None` for the largest source rank.
        rank: Option<usize>,
        /// The quantile (in `[0, 1]`) both factors are clamped to; `None` for no clamp.
        clamp: Option<f64>,
        /// Share of entries kept.
        density: f64,
        /// How the sign of each entry is elected.
        majority_sign: MajoritySign,
    },
    /// DARE on the factors: random pruning with rescaling, then the weighted sum.
    DareLinear {
        /// Probability of keeping an entry.
        density: f64,
        /// Seed of the pruning masks.
        seed: u64,
    },
    /// DARE on the full updates, then a rank-`rank` SVD.
    DareLinearSvd {
        /// The rank of the new adapter; `None` for the largest source rank.
        rank: Option<usize>,
        /// The quantile (in `[0, 1]`) both factors are clamped to; `None` for no clamp.
        clamp: Option<f64>,
        /// Probability of keeping an entry.
        density: f64,
        /// Seed of the pruning masks.
        seed: u64,
    },
    /// DARE pruning, then TIES' sign election and disjoint merge, on the factors.
    DareTies {
        /// Probability of keeping an entry.
        density: f64,
        /// How the sign of each entry is elected.
        majority_sign: MajoritySign,
        /// Seed of the pruning masks.
        seed: u64,
    },
    /// DARE-TIES on the full updates, then a rank-`rank` SVD.
    DareTiesSvd {
        /// The rank of the new adapter; `None` for the largest source rank.
        rank: Option<usize>,
        /// The quantile (in `[0, 1]`) both factors are clamped to; `None` for no clamp.
        clamp: Option<f64>,
        /// Probability of keeping an entry.
        density: f64,
        /// How the sign of each entry is elected.
        majority_sign: MajoritySign,
        /// Seed of the pruning masks.
        seed: u64,
    },
    /// Magnitude pruning, then the weighted sum, on the factors.
    MagnitudePrune {
        /// Share of entries kept.
        density: f64,
    },
    /// Magnitude pruning of the full updates, the weighted sum, then a rank-`rank` SVD.
    MagnitudePruneSvd {
        /// The rank of the new adapter; `None` for the largest source rank.
        rank: Option<usize>,
        /// The quantile (in `[0, 1]`) both factors are clamped to; `None` for no clamp.
        clamp: Option<f64>,
        /// Share of entries kept.
        density: f64,
    },
}

impl WeightedCombination {
    /// The pruning, the summing and (for the `…Svd` methods) the SVD settings; `None` for
    /// `Cat`.
    fn parts(self) -> Option<(Pruning, Summing, Option<SvdSettings>)> {
        use WeightedCombination as W;
        let svd = |rank, clamp| SvdSettings { rank, clamp };
        let disjoint = Summing::Disjoint;
        let magnitude = |density| Pruning::Magnitude { density };
        let random = |density, seed| Pruning::Random { density, seed };
        Some(match self {
            W::Cat => return None,
            W::Linear => (Pruning::None, Summing::Weighted, None),
            W::Svd { rank, clamp } => (Pruning::None, Summing::Weighted, Some(svd(rank, clamp))),
            W::Ties {
                density,
                majority_sign,
            } => (magnitude(density), disjoint(majority_sign), None),
            W::TiesSvd {
                rank,
                clamp,
                density,
                majority_sign,
            } => (
                magnitude(density),
                disjoint(majority_sign),
                Some(svd(rank, clamp)),
            ),
            W::DareLinear { density, seed } => (random(density, seed), Summing::Weighted, None),
            W::DareLinearSvd {
                rank,
                clamp,
                density,
                seed,
            } => (
                random(density, seed),
                Summing::Weighted,
                Some(svd(rank, clamp)),
            ),
            W::DareTies {
                density,
                majority_sign,
                seed,
            } => (random(density, seed), disjoint(majority_sign), None),
            W::DareTiesSvd {
                rank,
                clamp,
                density,
                majority_sign,
                seed,
            } => (
                random(density, seed),
                disjoint(majority_sign),
                Some(svd(rank, clamp)),
            ),
            W::MagnitudePrune { density } => (magnitude(density), Summing::Weighted, None),
            W::MagnitudePruneSvd {
                rank,
                clamp,
                density,
            } => (
                magnitude(density),
                Summing::Weighted,
                Some(svd(rank, clamp)),
            ),
        })
    }

    /// Whether this is an `…Svd` method without a rank (PEFT's `svd_rank=None`).
    pub(crate) fn needs_default_rank(self) -> bool {
        matches!(
            self.parts(),
            Some((_, _, Some(SvdSettings { rank: None, .. })))
        )
    }

    /// This combination with `rank` where an `…Svd` method has none.
    pub(crate) fn with_default_rank(self, default: usize) -> Self {
        use WeightedCombination as W;
        let fill = |rank: Option<usize>| Some(rank.unwrap_or(default));
        match self {
            W::Svd { rank, clamp } => W::Svd {
                rank: fill(rank),
                clamp,
            },
            W::TiesSvd {
                rank,
                clamp,
                density,
                majority_sign,
            } => W::TiesSvd {
                rank: fill(rank),
                clamp,
                density,
                majority_sign,
            },
            W::DareLinearSvd {
                rank,
                clamp,
                density,
                seed,
            } => W::DareLinearSvd {
                rank: fill(rank),
                clamp,
                density,
                seed,
            },
            W::DareTiesSvd {
                rank,
                clamp,
                density,
                majority_sign,
                seed,
            } => W::DareTiesSvd {
                rank: fill(rank),
                clamp,
                density,
                majority_sign,
                seed,
            },
            W::MagnitudePruneSvd {
                rank,
                clamp,
                density,
            } => W::MagnitudePruneSvd {
                rank: fill(rank),
                clamp,
                density,
            },
            other => other,
        }
    }
}

/// The rank and clamp of an `…Svd` method.
#[derive(Debug, Clone, Copy, PartialEq)]
struct SvdSettings {
    rank: Option<usize>,
    clamp: Option<f64>,
}

impl<B: Backend> LoraLinear<B> {
    /// Adds adapter `name` combining `adapters` with `weights` by `combination`, as PEFT's
    /// `add_weighted_adapter` does: the new adapter has `r = lora_alpha = new rank` and otherwise
    /// the first source's configuration; it is added inactive. One source is always combined
    /// `Linear`, as PEFT does.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::LinearConfig;
    /// use lora_core::{LoraConfig, LoraInit, LoraLinear, WeightedCombination};
    ///
    /// let device = Default::default();
    /// let base = LinearConfig::new(6, 5).init::<NdArray>(&device);
    /// let config = LoraConfig::new(2, 4.0).with_init_lora_weights(LoraInit::Random);
    /// let mut layer = LoraLinear::from_linear(base, &config).unwrap();
    /// layer.add_adapter("other", &LoraConfig::new(3, 3.0)).unwrap();
    /// layer
    ///     .add_weighted_adapter(&["default", "other"], &[0.7, 0.3], "mix", WeightedCombination::Cat)
    ///     .unwrap();
    /// assert_eq!(layer.adapter("mix").unwrap().rank(), 5);
    /// ```
    ///
    /// # Errors
    /// [`LoraError::InvalidWeightedAdapter`] for no sources, mismatched lengths, non-finite
    /// weights, a negative or non-finite density, or sources the combination cannot join
    /// (unequal ranks for the methods on the factors, an SVD rank outside `1..=min(in, out)`,
    /// an SVD clamp outside `[0, 1]`),
    /// [`LoraError::UnknownAdapter`], [`LoraError::DuplicateAdapter`] for `name`, and
    /// [`LoraError::UnsupportedVariant`] for a DoRA source.
    pub fn add_weighted_adapter<S: AsRef<str>>(
        &mut self,
        adapters: &[S],
        weights: &[f64],
        name: &str,
        combination: WeightedCombination,
    ) -> Result<(), LoraError> {
        let invalid = |reason: String| LoraError::InvalidWeightedAdapter { reason };
        if adapters.is_empty() {
            return Err(invalid("no source adapters given".into()));
        }
        if adapters.len() != weights.len() {
            return Err(invalid(format!(
                "{} adapters but {} weights",
                adapters.len(),
                weights.len()
            )));
        }
        if let Some(w) = weights.iter().find(|w| !w.is_finite()) {
            return Err(invalid(format!("weight {w} is not finite")));
        }
        let combination = if adapters.len() == 1 {
            WeightedCombination::Linear
        } else {
            combination
        };
        if let Some((Pruning::Magnitude { density } | Pruning::Random { density, .. }, _, _)) =
            combination.parts()
        {
            if !(density.is_finite() && density >= 0.0) {
                return Err(invalid(format!(
                    "density must be a finite number ≥ 0, got {density}"
                )));
            }
        }
        if let Some((_, _, Some(SvdSettings { clamp: Some(q), .. }))) = combination.parts() {
            if !(0.0..=1.0).contains(&q) {
                return Err(invalid(format!(
                    "svd_clamp must be a quantile in [0, 1], got {q}"
                )));
            }
        }
        let mut sources = Vec::with_capacity(adapters.len());
        for (adapter, weight) in adapters.iter().zip(weights) {
            let source = &self.adapters[self.require_adapter(adapter.as_ref())?];
            if let Some(variant) = source.variant() {
                return Err(LoraError::UnsupportedVariant {
                    operation: "add_weighted_adapter",
                    variant: variant.name(),
                    name: source.name.clone(),
                });
            }
            sources.push((source, *weight * source.scaling()));
        }
        // PEFT's default SVD rank: the largest among the sources.
        let largest_rank = sources.iter().map(|(s, _)| s.rank()).max().unwrap_or(1);
        let (lora_a, lora_b) = match combination.with_default_rank(largest_rank).parts() {
            None => combine_cat(&sources),
            Some((Pruning::None, Summing::Weighted, None)) => combine_linear(&sources)?,
            Some((Pruning::None, Summing::Weighted, Some(svd))) => combine_svd(&sources, svd)?,
            Some((pruning, summing, None)) => combine_factors(&sources, pruning, summing)?,
            Some((pruning, summing, Some(svd))) => {
                let raw: Vec<f64> = adapters.iter().zip(weights).map(|(_, w)| *w).collect();
                combine_updates_svd(&sources, &raw, pruning, summing, svd)?
            }
        };
        let new_rank = lora_a.dims()[1];
        let config = LoraConfig {
            r: new_rank,
            lora_alpha: new_rank as f64,
            init_lora_weights: LoraInit::Default,
            use_dora: false,
            ..sources[0].0.config.clone()
        };
        let adapter = LoraAdapter::from_weights(name, &config, lora_a, lora_b, None)?;
        self.insert_adapter(adapter)
    }
}

type Source<'a, B> = (&'a LoraAdapter<B>, f64);

fn combine_cat<B: Backend>(sources: &[Source<'_, B>]) -> (Tensor<B, 2>, Tensor<B, 2>) {
    let a = sources
        .iter()
        .map(|(s, ws)| s.lora_a.val().detach().mul_scalar(*ws))
        .collect();
    let b = sources
        .iter()
        .map(|(s, _)| s.lora_b.val().detach())
        .collect();
    (Tensor::cat(a, 1), Tensor::cat(b, 0))
}

/// Refuses sources of unequal ranks, which the methods on the factors cannot join.
fn check_equal_ranks<B: Backend>(sources: &[Source<'_, B>]) -> Result<(), LoraError> {
    let rank = sources[0].0.rank();
    match sources.iter().find(|(s, _)| s.rank() != rank) {
        Some((other, _)) => Err(LoraError::InvalidWeightedAdapter {
            reason: format!(
                "combining the factors (`linear`, `ties`, `dare_*`, `magnitude_prune`) needs \
                 equal ranks: `{}` has {rank}, `{}` has {}",
                sources[0].0.name,
                other.name,
                other.rank()
            ),
        }),
        None => Ok(()),
    }
}

fn combine_linear<B: Backend>(
    sources: &[Source<'_, B>],
) -> Result<(Tensor<B, 2>, Tensor<B, 2>), LoraError> {
    check_equal_ranks(sources)?;
    let mut a: Option<Tensor<B, 2>> = None;
    let mut b: Option<Tensor<B, 2>> = None;
    for (source, ws) in sources {
        let root = ws.abs().sqrt();
        let term_a = source.lora_a.val().detach().mul_scalar(root * ws.signum());
        let term_b = source.lora_b.val().detach().mul_scalar(root);
        a = Some(a.map_or(term_a.clone(), |acc| acc + term_a));
        b = Some(b.map_or(term_b.clone(), |acc| acc + term_b));
    }
    // `sources` is non-empty, checked by the caller.
    Ok((a.expect("non-empty sources"), b.expect("non-empty sources")))
}

/// `ties`, `dare_linear`, `dare_ties`, `magnitude_prune`: the `A` factors merged with weights
/// `sign(wᵢsᵢ)√|wᵢsᵢ|`, the `B` factors with `√|wᵢsᵢ|`.
fn combine_factors<B: Backend>(
    sources: &[Source<'_, B>],
    pruning: Pruning,
    summing: Summing,
) -> Result<(Tensor<B, 2>, Tensor<B, 2>), LoraError> {
    check_equal_ranks(sources)?;
    let first = sources[0].0;
    let device = first.lora_a.val().device();
    let weights_a: Vec<f64> = sources
        .iter()
        .map(|(_, ws)| ws.signum() * ws.abs().sqrt())
        .collect();
    let weights_b: Vec<f64> = sources.iter().map(|(_, ws)| ws.abs().sqrt()).collect();
    let mut factors_a = Vec::with_capacity(sources.len());
    let mut factors_b = Vec::with_capacity(sources.len());
    for (source, _) in sources {
        factors_a.push(to_host::<f64, _, 2>(source.lora_a.val().detach())?);
        factors_b.push(to_host::<f64, _, 2>(source.lora_b.val().detach())?);
    }
    let a = merge_task_tensors(&factors_a, &weights_a, pruning, summing);
    // DARE: B's masks from streams of their own (A's are seed + i, B's seed + n + i).
    let b = merge_task_tensors(
        &factors_b,
        &weights_b,
        pruning.streams_after(sources.len()),
        summing,
    );
    let rank = first.rank();
    Ok((
        from_host_f64(a, [first.d_input(), rank], &device),
        from_host_f64(b, [rank, first.d_output()], &device),
    ))
}

/// `ties_svd`, `dare_linear_svd`, `dare_ties_svd`, `magnitude_prune_svd`: the full updates
/// `sᵢAᵢBᵢ` merged with the weights `raw_weights`, then the best rank-`rank` approximation.
fn combine_updates_svd<B: Backend>(
    sources: &[Source<'_, B>],
    raw_weights: &[f64],
    pruning: Pruning,
    summing: Summing,
    svd: SvdSettings,
) -> Result<(Tensor<B, 2>, Tensor<B, 2>), LoraError> {
    let first = sources[0].0;
    let (d_input, d_output) = (first.d_input(), first.d_output());
    let rank = check_svd_rank(svd.rank, d_input, d_output)?;
    let device = first.lora_a.val().device();
    let mut updates = Vec::with_capacity(sources.len());
    for (source, _) in sources {
        let update = source
            .lora_a
            .val()
            .detach()
            .matmul(source.lora_b.val().detach())
            .mul_scalar(source.scaling());
        updates.push(to_host::<f64, _, 2>(update)?);
    }
    let merged = Matrix {
        rows: d_input,
        cols: d_output,
        data: merge_task_tensors(&updates, raw_weights, pruning, summing),
    };
    let (left, s, right) = dense_svd(&merged);
    let (a, b) = truncate(&left, &s, &right, rank, svd.clamp);
    Ok((
        from_host_f64(a.data, [d_input, rank], &device),
        from_host_f64(b.data, [rank, d_output], &device),
    ))
}

/// The SVD rank (set by then: [`WeightedCombination::with_default_rank`]), checked against the
/// layer.
fn check_svd_rank(
    rank: Option<usize>,
    d_input: usize,
    d_output: usize,
) -> Result<usize, LoraError> {
    let rank = rank.unwrap_or(0);
    if rank == 0 || rank > d_input.min(d_output) {
        return Err(LoraError::InvalidWeightedAdapter {
            reason: format!(
                "svd rank must be in 1..={}, got {rank}",
                d_input.min(d_output)
            ),
        });
    }
    Ok(rank)
}

/// `m = left · diag(s) · rightᵀ` for any `[rows, cols]` matrix, by a thin QR of the taller side
/// and a Jacobi SVD of its square factor; singular values in descending order.
fn dense_svd(m: &Matrix) -> (Matrix, Vec<f64>, Matrix) {
    if m.rows >= m.cols {
        let (q, r) = thin_qr(m);
        let (u, s, v) = jacobi_svd(&r);
        (q.matmul(&u), s, v)
    } else {
        let (right, s, left) = dense_svd(&m.transpose());
        (left, s, right)
    }
}

/// The rank-`rank` factors of `left · diag(s) · rightᵀ`: `A = left[:, :rank]` and
/// `B = diag(s[:rank]) · right[:, :rank]ᵀ` (the singular values on `B`, as PEFT puts them).
/// Each pair is oriented so that the largest-magnitude entry of its output-side vector is
/// positive; with `clamp`, both factors are then clamped to `[-q, q]`, `q` the `clamp` quantile
/// of all their entries (PEFT's `svd_clamp`).
fn truncate(
    left: &Matrix,
    s: &[f64],
    right: &Matrix,
    rank: usize,
    clamp: Option<f64>,
) -> (Matrix, Matrix) {
    let (d_input, d_output) = (left.rows, right.rows);
    let mut a = Matrix::zeros(d_input, rank);
    let mut b = Matrix::zeros(rank, d_output);
    for (k, sigma) in s.iter().enumerate().take(rank) {
        let sign = orientation((0..d_output).map(|o| right.at(o, k)));
        for i in 0..d_input {
            a.data[i * rank + k] = sign * left.at(i, k);
        }
        for o in 0..d_output {
            b.data[k * d_output + o] = sign * sigma * right.at(o, k);
        }
    }
    if let Some(q) = clamp {
        let all: Vec<f64> = a.data.iter().chain(&b.data).copied().collect();
        let high = quantile(all, q);
        for v in a.data.iter_mut().chain(b.data.iter_mut()) {
            // torch.clamp(v, -high, high): the upper bound wins when the bounds cross.
            *v = v.max(-high).min(high);
        }
    }
    (a, b)
}

/// `1` or `-1`: the sign that makes the first entry of largest magnitude positive.
fn orientation(values: impl Iterator<Item = f64>) -> f64 {
    let mut largest = 0.0f64;
    for v in values {
        if v.abs() > largest.abs() {
            largest = v;
        }
    }
    if largest < 0.0 {
        -1.0
    } else {
        1.0
    }
}

/// The `q` quantile of `values` with linear interpolation between the two nearest ranks
/// (`torch.quantile`'s default).
fn quantile(mut values: Vec<f64>, q: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let position = q * (values.len() - 1) as f64;
    let below = position.floor() as usize;
    let above = (below + 1).min(values.len() - 1);
    let fraction = position - below as f64;
    values[below] + fraction * (values[above] - values[below])
}

fn combine_svd<B: Backend>(
    sources: &[Source<'_, B>],
    svd: SvdSettings,
) -> Result<(Tensor<B, 2>, Tensor<B, 2>), LoraError> {
    let first = sources[0].0;
    let (d_input, d_output) = (first.d_input(), first.d_output());
    let rank = check_svd_rank(svd.rank, d_input, d_output)?;
    // ΔW = P · Qᵀ with P = [w₁s₁A₁ …] ([in, R]) and Q = [B₁ … ]ᵀ ([out, R]); the SVD of the
    // small R×R core gives the SVD of ΔW without forming it.
    let (cat_a, cat_b) = combine_cat(sources);
    let total_rank = cat_a.dims()[1];
    let device = cat_a.device();
    let p = Matrix {
        rows: d_input,
        cols: total_rank,
        data: to_host::<f64, _, 2>(cat_a)?,
    };
    let q = Matrix {
        rows: total_rank,
        cols: d_output,
        data: to_host::<f64, _, 2>(cat_b)?,
    }
    .transpose();
    let (q1, r1) = thin_qr(&p);
    let (q2, r2) = thin_qr(&q);
    let (u, s, v) = jacobi_svd(&r1.matmul(&r2.transpose()));
    let left = q1.matmul(&u); // [in, R]: input-side singular vectors
    let right = q2.matmul(&v); // [out, R]: output-side singular vectors
    let (new_a, new_b) = truncate(&left, &s, &right, rank, svd.clamp);
    Ok((
        from_host_f64(new_a.data, [d_input, rank], &device),
        from_host_f64(new_b.data, [rank, d_output], &device),
    ))
}
