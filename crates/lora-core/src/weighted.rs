//! New adapters made as weighted combinations of existing ones (PEFT's `add_weighted_adapter`).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::linalg::{jacobi_svd, thin_qr, Matrix};
use crate::tensor_util::{from_host_f64, to_host};
use crate::{LoraAdapter, LoraConfig, LoraError, LoraInit, LoraLinear};

/// How [`LoraLinear::add_weighted_adapter`] combines adapters.
///
/// ```
/// use lora_core::WeightedCombination;
///
/// let method = WeightedCombination::Svd { rank: 8 };
/// assert_ne!(method, WeightedCombination::Cat);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightedCombination {
    /// Concatenates the ranks: `A = [w₁s₁A₁ … wₙsₙAₙ]`, `B = [B₁ … Bₙ]`. Exact: the update is
    /// `Σ wᵢ sᵢ Aᵢ Bᵢ`; the new rank is the sum of the ranks.
    Cat,
    /// Sums the factors: `A = Σ sign(wᵢsᵢ) √|wᵢsᵢ| Aᵢ`, `B = Σ √|wᵢsᵢ| Bᵢ`. Needs equal ranks; not
    /// the weighted sum of the updates (cross terms appear).
    Linear,
    /// The best rank-`rank` approximation (truncated SVD) of `Σ wᵢ sᵢ Aᵢ Bᵢ`.
    Svd {
        /// The rank of the new adapter.
        rank: usize,
    },
}

impl<B: Backend> LoraLinear<B> {
    /// Adds adapter `name` combining `adapters` with `weights` by `combination`, as PEFT's
    /// `add_weighted_adapter` does: the new adapter has `r = lora_alpha = new rank` and otherwise
    /// the first source's configuration; it is added inactive.
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
    /// weights or sources the combination cannot join (unequal ranks for `linear`),
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
        let (lora_a, lora_b) = match combination {
            WeightedCombination::Cat => combine_cat(&sources),
            WeightedCombination::Linear => combine_linear(&sources)?,
            WeightedCombination::Svd { rank } => combine_svd(&sources, rank)?,
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

fn combine_linear<B: Backend>(
    sources: &[Source<'_, B>],
) -> Result<(Tensor<B, 2>, Tensor<B, 2>), LoraError> {
    let rank = sources[0].0.rank();
    if let Some((other, _)) = sources.iter().find(|(s, _)| s.rank() != rank) {
        return Err(LoraError::InvalidWeightedAdapter {
            reason: format!(
                "the `linear` combination needs equal ranks: `{}` has {rank}, `{}` has {}",
                sources[0].0.name,
                other.name,
                other.rank()
            ),
        });
    }
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

fn combine_svd<B: Backend>(
    sources: &[Source<'_, B>],
    rank: usize,
) -> Result<(Tensor<B, 2>, Tensor<B, 2>), LoraError> {
    let first = sources[0].0;
    let (d_input, d_output) = (first.d_input(), first.d_output());
    if rank == 0 || rank > d_input.min(d_output) {
        return Err(LoraError::InvalidWeightedAdapter {
            reason: format!(
                "svd rank must be in 1..={}, got {rank}",
                d_input.min(d_output)
            ),
        });
    }
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
    let mut new_a = Matrix::zeros(d_input, rank);
    let mut new_b = Matrix::zeros(rank, d_output);
    for (k, sigma) in s.iter().enumerate().take(rank) {
        for i in 0..d_input {
            new_a.data[i * rank + k] = left.at(i, k);
        }
        for o in 0..d_output {
            new_b.data[k * d_output + o] = sigma * right.at(o, k);
        }
    }
    Ok((
        from_host_f64(new_a.data, [d_input, rank], &device),
        from_host_f64(new_b.data, [rank, d_output], &device),
    ))
}
