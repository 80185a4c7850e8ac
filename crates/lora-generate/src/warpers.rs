//! The sampling warpers (transformers' `TemperatureLogitsWarper`, `TopKLogitsWarper`,
//! `TopPLogitsWarper`, `MinPLogitsWarper`, `TypicalLogitsWarper`, `EpsilonLogitsWarper`,
//! `EtaLogitsWarper`), each keeping at least one token. Filtered tokens get `-inf`.
//!
//! Elementwise rules run on the device. The rules that depend on an order (top-k, top-p,
//! typical-p) read back only the candidates that can be kept ([`top_candidates`]), widening
//! the set when the mass is not reached, and then filter on the device against one threshold
//! per row.

use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

use crate::token_mask::per_row;
use crate::{top_candidates, GenerationError, HostTraffic, LogitsProcessor, StepContext};

/// `scores` with `-inf` where `remove` holds.
fn remove<B: Backend>(scores: Tensor<B, 2>, remove: Tensor<B, 2, Bool>) -> Tensor<B, 2> {
    scores.mask_fill(remove, f32::NEG_INFINITY)
}

/// One value per row as a `[rows, 1]` tensor broadcast to `columns`.
fn thresholds<B: Backend>(
    values: Vec<f32>,
    columns: usize,
    device: &B::Device,
    traffic: &HostTraffic,
) -> Tensor<B, 2> {
    let rows = values.len();
    per_row(traffic.float_tensor(values, [rows, 1], device), columns)
}

/// Per row, the smallest `key` value kept when tokens are taken in decreasing `key` order
/// while the probability mass before them is below `mass` (top-p with `key` the
/// probabilities, typical-p with `key` the negated distance to the entropy).
fn cutoff_by_mass<B: Backend>(
    key: Tensor<B, 2>,
    probs: Tensor<B, 2>,
    mass: f32,
    traffic: &HostTraffic,
) -> Result<Vec<f32>, GenerationError> {
    let [rows, vocab] = key.dims();
    let device = key.device();
    let mass = f64::from(mass);
    let mut k = 64.min(vocab);
    'widen: loop {
        let candidates = top_candidates(key.clone(), k, traffic)?;
        let columns: Vec<i64> = candidates
            .iter()
            .flat_map(|row| row.iter().map(|c| c.index as i64))
            .collect();
        let columns = traffic.int_tensor::<B, 2>(columns, [rows, k], &device);
        let p = traffic.floats(probs.clone().gather(1, columns))?;
        let mut cutoffs = Vec::with_capacity(rows);
        for (row, candidates) in candidates.iter().enumerate() {
            let mut before = 0.0;
            let mut kept = 0;
            for (i, _) in candidates.iter().enumerate() {
                if before >= mass {
                    break;
                }
                kept = i + 1;
                before += f64::from(p[row * k + i]);
            }
            if kept == k && before < mass && k < vocab {
                k = (k * 4).min(vocab);
                continue 'widen;
            }
            cutoffs.push(candidates[kept.max(1) - 1].value);
        }
        return Ok(cutoffs);
    }
}

/// Divides the scores by a temperature, after shifting each row by its maximum: the same
/// distribution as transformers' `scores / temperature`, but a temperature as small as `f32`
/// allows gives the greedy token instead of an overflow to NaN.
///
/// ```
/// let warper = lora_generate::Temperature::new(0.7);
/// # let _ = warper;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Temperature {
    temperature: f32,
}

impl Temperature {
    /// A positive temperature.
    pub fn new(temperature: f32) -> Self {
        Self { temperature }
    }
}

impl<B: Backend> LogitsProcessor<B> for Temperature {
    fn process(
        &self,
        _: &StepContext<'_>,
        scores: Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>, GenerationError> {
        let [_, vocab] = scores.dims();
        let max = per_row(scores.clone().max_dim(1), vocab);
        Ok(scores.sub(max).div_scalar(self.temperature))
    }
}

/// Keeps the `k` highest scores of each row (and every score equal to the `k`-th).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_generate::{HostTraffic, LogitsProcessor, StepContext, TopK};
///
/// let traffic = HostTraffic::default();
/// let (sequences, encoder_ids) = (vec![vec![0]], vec![vec![]]);
/// let context = StepContext { sequences: &sequences, encoder_ids: &encoder_ids, new_tokens: 0, max_new_tokens: 5, traffic: &traffic };
/// let scores = Tensor::<NdArray, 2>::from_floats([[0.1, 3.0, 2.0, -1.0]], &Default::default());
/// let out = TopK::new(2).process(&context, scores).unwrap().into_data().to_vec::<f32>().unwrap();
/// assert_eq!(out, vec![f32::NEG_INFINITY, 3.0, 2.0, f32::NEG_INFINITY]);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TopK {
    k: usize,
}

impl TopK {
    /// Keeps `k` tokens (at least one).
    pub fn new(k: usize) -> Self {
        Self { k: k.max(1) }
    }
}

impl<B: Backend> LogitsProcessor<B> for TopK {
    fn process(
        &self,
        context: &StepContext<'_>,
        scores: Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>, GenerationError> {
        let [_, vocab] = scores.dims();
        if self.k >= vocab {
            return Ok(scores);
        }
        let kth: Vec<f32> = top_candidates(scores.clone(), self.k, context.traffic)?
            .iter()
            .map(|row| row.last().map_or(f32::NEG_INFINITY, |c| c.value))
            .collect();
        let kth = thresholds(kth, vocab, &scores.device(), context.traffic);
        Ok(remove(scores.clone(), scores.lower(kth)))
    }
}

/// Keeps the most likely tokens until their probability mass reaches `top_p` (nucleus
/// sampling).
///
/// ```
/// let warper = lora_generate::TopP::new(0.9);
/// # let _ = warper;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TopP {
    top_p: f32,
}

impl TopP {
    /// A mass in `(0, 1]`.
    pub fn new(top_p: f32) -> Self {
        Self { top_p }
    }
}

impl<B: Backend> LogitsProcessor<B> for TopP {
    fn process(
        &self,
        context: &StepContext<'_>,
        scores: Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>, GenerationError> {
        let [_, vocab] = scores.dims();
        let probs = softmax(scores.clone(), 1);
        let cutoffs = cutoff_by_mass(probs.clone(), probs.clone(), self.top_p, context.traffic)?;
        let cutoffs = thresholds(cutoffs, vocab, &scores.device(), context.traffic);
        Ok(remove(scores, probs.lower(cutoffs)))
    }
}

/// Keeps the tokens at least `min_p` times as likely as the most likely one.
///
/// ```
/// let warper = lora_generate::MinP::new(0.05);
/// # let _ = warper;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct MinP {
    min_p: f32,
}

impl MinP {
    /// A fraction in `[0, 1]`.
    pub fn new(min_p: f32) -> Self {
        Self { min_p }
    }
}

impl<B: Backend> LogitsProcessor<B> for MinP {
    fn process(
        &self,
        _: &StepContext<'_>,
        scores: Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>, GenerationError> {
        let [_, vocab] = scores.dims();
        let probs = softmax(scores.clone(), 1);
        let floor = per_row(probs.clone().max_dim(1).mul_scalar(self.min_p), vocab);
        Ok(remove(scores, probs.lower(floor)))
    }
}

/// The entropy of each row's distribution, `[rows, 1]`, and its log-probabilities.
fn entropy<B: Backend>(scores: Tensor<B, 2>) -> (Tensor<B, 2>, Tensor<B, 2>, Tensor<B, 2>) {
    let log_probs = log_softmax(scores, 1);
    let probs = log_probs.clone().exp();
    // p · log p is 0 where p is 0 (transformers' `nansum`).
    let terms = log_probs
        .clone()
        .mul(probs.clone())
        .mask_fill(probs.clone().equal_elem(0.0), 0.0);
    (terms.sum_dim(1).neg(), log_probs, probs)
}

/// Locally typical sampling: keeps the tokens whose information is closest to the entropy,
/// until their mass reaches `mass`.
///
/// ```
/// let warper = lora_generate::TypicalP::new(0.9);
/// # let _ = warper;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TypicalP {
    mass: f32,
}

impl TypicalP {
    /// A mass in `(0, 1)`.
    pub fn new(mass: f32) -> Self {
        Self { mass }
    }
}

impl<B: Backend> LogitsProcessor<B> for TypicalP {
    fn process(
        &self,
        context: &StepContext<'_>,
        scores: Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>, GenerationError> {
        let [_, vocab] = scores.dims();
        let (entropy, log_probs, probs) = entropy(scores.clone());
        let distance = log_probs.neg().sub(per_row(entropy, vocab)).abs();
        let closeness = distance.neg();
        let cutoffs = cutoff_by_mass(closeness.clone(), probs, self.mass, context.traffic)?;
        let cutoffs = thresholds(cutoffs, vocab, &scores.device(), context.traffic);
        Ok(remove(scores, closeness.lower(cutoffs)))
    }
}

/// Drops the tokens less likely than `epsilon`, except the most likely one.
///
/// ```
/// let warper = lora_generate::EpsilonCutoff::new(3e-4);
/// # let _ = warper;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct EpsilonCutoff {
    epsilon: f32,
}

impl EpsilonCutoff {
    /// A probability in `(0, 1)`.
    pub fn new(epsilon: f32) -> Self {
        Self { epsilon }
    }
}

/// `scores` without the tokens whose probability is below `floor` (`[rows, vocab]`), except
/// each row's highest score.
fn cut_below<B: Backend>(
    scores: Tensor<B, 2>,
    probs: Tensor<B, 2>,
    floor: Tensor<B, 2>,
) -> Tensor<B, 2> {
    let [_, vocab] = scores.dims();
    let best = per_row(scores.clone().max_dim(1), vocab);
    let below = probs.lower(floor).bool_and(scores.clone().lower(best));
    remove(scores, below)
}

impl<B: Backend> LogitsProcessor<B> for EpsilonCutoff {
    fn process(
        &self,
        _: &StepContext<'_>,
        scores: Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>, GenerationError> {
        let probs = softmax(scores.clone(), 1);
        let floor = probs.zeros_like().add_scalar(self.epsilon);
        Ok(cut_below(scores, probs, floor))
    }
}

/// Eta sampling: drops the tokens less likely than `min(eta, √eta · e^(−entropy))`, except the
/// most likely one.
///
/// ```
/// let warper = lora_generate::EtaCutoff::new(3e-4);
/// # let _ = warper;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct EtaCutoff {
    eta: f32,
}

impl EtaCutoff {
    /// A probability in `(0, 1)`.
    pub fn new(eta: f32) -> Self {
        Self { eta }
    }
}

impl<B: Backend> LogitsProcessor<B> for EtaCutoff {
    fn process(
        &self,
        _: &StepContext<'_>,
        scores: Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>, GenerationError> {
        let [_, vocab] = scores.dims();
        let (entropy, _, probs) = entropy(scores.clone());
        let floor = entropy
            .neg()
            .exp()
            .mul_scalar(self.eta.sqrt())
            .clamp_max(self.eta);
        Ok(cut_below(scores, probs, per_row(floor, vocab)))
    }
}
