//! Text generation with a key/value cache: greedy search, beam search and sampling, following
//! transformers' `generate()`.

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::{DecoderState, T5Error, T5ForConditionalGeneration};

/// When beam search stops (transformers' `early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// Stop as soon as `num_beams` hypotheses are finished (`True`).
    Immediate,
    /// Stop when no running beam is likely to beat the finished ones (`False`, the default).
    #[default]
    Heuristic,
    /// Stop only when no running beam can beat the finished ones (`"never"`).
    Never,
}

/// How [`T5ForConditionalGeneration::generate`] decodes, with transformers' names and
/// defaults (greedy, at most 20 new tokens).
///
/// ```
/// use lora_t5::GenerationConfig;
///
/// let beam = GenerationConfig { num_beams: 4, max_new_tokens: 32, ..GenerationConfig::default() };
/// let sample = GenerationConfig::default().sampling(0.7, 50, 0.9, 42);
/// assert!(sample.do_sample && !beam.do_sample);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Most tokens to generate after the decoder start token.
    pub max_new_tokens: usize,
    /// End-of-sequence is forbidden before this many new tokens.
    pub min_new_tokens: usize,
    /// Beams (1: greedy or sampling).
    pub num_beams: usize,
    /// Beam scores are `sum_logprob / length^length_penalty`.
    pub length_penalty: f32,
    /// Beam-search stopping rule.
    pub early_stopping: EarlyStopping,
    /// Sample instead of taking the most likely token.
    pub do_sample: bool,
    /// Sampling temperature.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens when sampling (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens with probability mass `top_p` when sampling (1: all).
    pub top_p: f32,
    /// Seed of the sampling random numbers (a xoshiro256++ stream, `rand`'s `WeightedIndex`
    /// draws).
    pub seed: u64,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 20,
            min_new_tokens: 0,
            num_beams: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl GenerationConfig {
    /// The most beams a search may keep: each step scores `num_beams × vocab_size` candidates
    /// per prompt.
    pub const MAX_NUM_BEAMS: usize = 1024;
    /// The most new tokens one call may generate: the key/value cache grows by one position
    /// per token, and a model that never emits EOS runs to this bound.
    pub const MAX_NEW_TOKENS: usize = 65_536;

    /// This configuration with sampling on.
    pub fn sampling(self, temperature: f32, top_k: usize, top_p: f32, seed: u64) -> Self {
        Self {
            do_sample: true,
            temperature,
            top_k,
            top_p,
            seed,
            ..self
        }
    }

    fn validate(&self) -> Result<(), T5Error> {
        let invalid = |reason: String| Err(T5Error::InvalidInput { reason });
        if !(1..=Self::MAX_NEW_TOKENS).contains(&self.max_new_tokens) {
            return invalid(format!(
                "max_new_tokens must be in 1..={}, got {}",
                Self::MAX_NEW_TOKENS,
                self.max_new_tokens
            ));
        }
        if !(1..=Self::MAX_NUM_BEAMS).contains(&self.num_beams) {
            return invalid(format!(
                "num_beams must be in 1..={}, got {}",
                Self::MAX_NUM_BEAMS,
                self.num_beams
            ));
        }
        if self.min_new_tokens > self.max_new_tokens {
            return invalid(format!(
                "min_new_tokens ({}) must not exceed max_new_tokens ({})",
                self.min_new_tokens, self.max_new_tokens
            ));
        }
        if self.do_sample && self.num_beams > 1 {
            return invalid(
                "beam sampling is not supported: use num_beams = 1 with do_sample".into(),
            );
        }
        if self.do_sample && !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return invalid(format!(
                "temperature must be positive, got {}",
                self.temperature
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return invalid(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !self.length_penalty.is_finite() {
            return invalid("length_penalty must be finite".into());
        }
        Ok(())
    }
}

impl<B: Backend> T5ForConditionalGeneration<B> {
    /// Generates from a padded batch of prompts. Returns one sequence per prompt, starting with
    /// the decoder start token; shorter sequences are padded as transformers pads them (greedy
    /// and sampling: pad token after EOS; beam search: EOS, or pad when it is non-zero).
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::tensor::{Int, Tensor};
    /// use lora_t5::{GenerationConfig, T5Config, T5ForConditionalGeneration};
    ///
    /// let config = T5Config { vocab_size: 40, d_model: 16, d_kv: 4, num_heads: 4, d_ff: 32,
    ///     num_layers: 1, num_decoder_layers: 1, ..T5Config::default() };
    /// let device = Default::default();
    /// let model = T5ForConditionalGeneration::<NdArray>::new(&config, &device);
    /// let ids = Tensor::<NdArray, 2, Int>::from_ints([[5, 6, 1]], &device);
    /// let mask = Tensor::<NdArray, 2, Int>::ones([1, 3], &device);
    /// let generation = GenerationConfig { max_new_tokens: 4, num_beams: 2, ..Default::default() };
    /// let out = model.generate(ids, mask, &generation).unwrap();
    /// assert_eq!(out[0][0], 0);
    /// assert!(out[0].len() <= 5);
    /// ```
    ///
    /// # Shapes
    /// - `input_ids`, `attention_mask`: `[batch, source_len]`
    /// - output: `batch` sequences of token ids, each starting with the decoder start token
    ///
    /// # Errors
    /// [`T5Error::InvalidInput`] for a `generation` config that cannot run (no new tokens or
    /// more than [`GenerationConfig::MAX_NEW_TOKENS`], zero beams or more than
    /// [`GenerationConfig::MAX_NUM_BEAMS`], `min_new_tokens` above `max_new_tokens`, beam
    /// sampling, a non-positive temperature, `top_p` outside (0, 1], a non-finite length
    /// penalty), for a batch whose `[rows, vocab_size]` scores would not fit in memory, and the
    /// input checks of [`check_source`](Self::check_source); [`T5Error::NonFinite`] when the
    /// model gives a NaN or infinite log-probability (overflowing weights or adapter scaling),
    /// instead of decoding garbage.
    pub fn generate(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        generation: &GenerationConfig,
    ) -> Result<Vec<Vec<u32>>, T5Error> {
        generation.validate()?;
        self.check_source(&input_ids, &attention_mask)?;
        let [batch, _] = input_ids.dims();
        let scores = batch
            .checked_mul(generation.num_beams)
            .and_then(|rows| rows.checked_mul(self.config.vocab_size))
            .and_then(|n| n.checked_mul(std::mem::size_of::<f32>()));
        if scores.is_none_or(|bytes| bytes > isize::MAX as usize) {
            return Err(T5Error::InvalidInput {
                reason: format!(
                    "{batch} prompts × {} beams × a vocabulary of {} scores do not fit in memory",
                    generation.num_beams, self.config.vocab_size
                ),
            });
        }
        let encoded = self.encode(input_ids, attention_mask.clone());
        if generation.num_beams > 1 {
            self.beam_search(encoded, attention_mask, generation)
        } else {
            self.greedy_or_sample(encoded, attention_mask, generation)
        }
    }

    /// Log-probabilities of the next token for every row, after the last token of `tokens`
    /// (new token number `step`, from 0).
    ///
    /// # Errors
    /// [`T5Error::NonFinite`] naming the step and row of the first NaN or infinite value.
    fn next_log_probs(
        &self,
        tokens: &[u32],
        step: usize,
        state: &mut DecoderState<B>,
        device: &B::Device,
    ) -> Result<Vec<f32>, T5Error> {
        let rows = tokens.len();
        let ids = Tensor::<B, 2, Int>::from_data(
            TensorData::new(
                tokens.iter().map(|t| *t as i64).collect::<Vec<_>>(),
                [rows, 1],
            ),
            device,
        );
        let logits = self.decode(ids, state);
        let [_, _, vocab] = logits.dims();
        let log_probs = log_softmax(logits.reshape([rows, vocab]), 1);
        let values = log_probs
            .into_data()
            .convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| T5Error::InvalidInput {
                reason: format!("could not read logits: {e:?}"),
            })?;
        // log_softmax of finite logits is finite: anything else comes from an overflow in the
        // weights or the adapters' scaling, and decoding it would give garbage.
        match values.iter().position(|v| !v.is_finite()) {
            Some(index) => Err(T5Error::NonFinite {
                step,
                row: index / vocab.max(1),
                value: values[index],
            }),
            None => Ok(values),
        }
    }

    fn greedy_or_sample(
        &self,
        encoded: Tensor<B, 3>,
        attention_mask: Tensor<B, 2, Int>,
        generation: &GenerationConfig,
    ) -> Result<Vec<Vec<u32>>, T5Error> {
        let device = encoded.device();
        let [batch, _, _] = encoded.dims();
        let vocab = self.config.vocab_size;
        let (eos, pad) = (self.config.eos_token_id, self.config.pad_token_id);
        let mut state = self.start_decoding(encoded, attention_mask);
        let mut sequences: Vec<Vec<u32>> = vec![vec![self.config.decoder_start_token_id]; batch];
        let mut finished = vec![false; batch];
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(generation.seed);
        for step in 0..generation.max_new_tokens {
            let last: Vec<u32> = sequences.iter().map(|s| s[s.len() - 1]).collect();
            let log_probs = self.next_log_probs(&last, step, &mut state, &device)?;
            for (row, sequence) in sequences.iter_mut().enumerate() {
                let mut scores = log_probs[row * vocab..(row + 1) * vocab].to_vec();
                if step < generation.min_new_tokens {
                    scores[eos as usize] = f32::NEG_INFINITY;
                }
                let token = if finished[row] {
                    pad
                } else if generation.do_sample {
                    sample(&mut scores, generation, &mut rng)
                } else {
                    argmax(&scores)
                };
                sequence.push(token);
                finished[row] |= token == eos;
            }
            if finished.iter().all(|f| *f) {
                break;
            }
        }
        Ok(sequences)
    }

    fn beam_search(
        &self,
        encoded: Tensor<B, 3>,
        attention_mask: Tensor<B, 2, Int>,
        generation: &GenerationConfig,
    ) -> Result<Vec<Vec<u32>>, T5Error> {
        let device = encoded.device();
        let [batch, _, _] = encoded.dims();
        let beams = generation.num_beams;
        let vocab = self.config.vocab_size;
        let (eos, pad) = (self.config.eos_token_id, self.config.pad_token_id);
        // transformers fills unused positions with `pad_token_id or eos_token_id`.
        let fill = if pad != 0 { pad } else { eos };
        // Every prompt repeated `beams` times, beam-major within each prompt.
        let repeat: Vec<i64> = (0..batch)
            .flat_map(|b| std::iter::repeat_n(b as i64, beams))
            .collect();
        let repeat =
            Tensor::<B, 1, Int>::from_data(TensorData::new(repeat, [batch * beams]), &device);
        let mut state = self.start_decoding(encoded, attention_mask).select(repeat);
        let mut searches: Vec<BeamSearch> = (0..batch)
            .map(|_| BeamSearch::new(beams, self.config.decoder_start_token_id, generation))
            .collect();
        let max_len = 1 + generation.max_new_tokens;
        for cur_len in 1..max_len {
            let last: Vec<u32> = searches
                .iter()
                .flat_map(|s| s.running.iter().map(|b| b.tokens[b.tokens.len() - 1]))
                .collect();
            let log_probs = self.next_log_probs(&last, cur_len - 1, &mut state, &device)?;
            let mut reorder = Vec::with_capacity(batch * beams);
            for (b, search) in searches.iter_mut().enumerate() {
                let rows = &log_probs[b * beams * vocab..(b + 1) * beams * vocab];
                let chosen = search.step(rows, vocab, cur_len, max_len, eos);
                reorder.extend(chosen.into_iter().map(|beam| (b * beams + beam) as i64));
            }
            if searches.iter().all(|s| s.done) {
                break;
            }
            let reorder =
                Tensor::<B, 1, Int>::from_data(TensorData::new(reorder, [batch * beams]), &device);
            state = state.select(reorder);
        }
        let best: Vec<Vec<u32>> = searches.into_iter().map(|s| s.best()).collect();
        let longest = best.iter().map(Vec::len).max().unwrap_or(1);
        Ok(best
            .into_iter()
            .map(|mut tokens| {
                tokens.resize(longest, fill);
                tokens
            })
            .collect())
    }
}

/// Drops the decoder start token, everything from the first EOS on, and padding: the tokens a
/// tokenizer should decode.
///
/// ```
/// assert_eq!(lora_t5::generated_tokens(&[0, 7, 8, 1, 0], 0, 1), vec![7, 8]);
/// ```
pub fn generated_tokens(sequence: &[u32], decoder_start: u32, eos: u32) -> Vec<u32> {
    let body = match sequence.first() {
        Some(first) if *first == decoder_start => &sequence[1..],
        _ => sequence,
    };
    body.iter().take_while(|t| **t != eos).copied().collect()
}

fn argmax(scores: &[f32]) -> u32 {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    best as u32
}

/// Samples a token from log-probabilities with temperature, top-k and top-p, in the order
/// transformers applies them.
///
/// The weights are `exp((score − max) / temperature)`: the same distribution as a softmax of
/// `score / temperature`, but the most likely token always weighs exactly 1, so a temperature
/// as small as `f32` allows gives greedy decoding, not an overflow.
fn sample(scores: &mut [f32], generation: &GenerationConfig, rng: &mut impl Rng) -> u32 {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let mut keep = if generation.top_k > 0 {
        generation.top_k.min(order.len())
    } else {
        order.len()
    };
    let max = scores[order[0]];
    let temperature = f64::from(generation.temperature);
    let weights: Vec<f64> = order[..keep]
        .iter()
        .map(|i| (f64::from(scores[*i] - max) / temperature).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    if generation.top_p < 1.0 {
        // Keep the most likely tokens until their mass reaches top_p (at least one).
        let mut mass = 0.0;
        for (n, w) in weights.iter().enumerate() {
            mass += w / total;
            if mass >= generation.top_p as f64 {
                keep = n + 1;
                break;
            }
        }
    }
    // The most likely token weighs exp(0) = 1, so the weights are never all zero.
    match WeightedIndex::new(&weights[..keep]) {
        Ok(distribution) => order[distribution.sample(rng)] as u32,
        Err(_) => order[0] as u32,
    }
}

#[derive(Debug, Clone)]
struct Beam {
    tokens: Vec<u32>,
    score: f32,
}

/// The beam search of one prompt, step by step as transformers' `_beam_search` does it.
struct BeamSearch {
    running: Vec<Beam>,
    finished: Vec<(Beam, bool)>,
    heuristic_unsatisfied: bool,
    done: bool,
    beams: usize,
    length_penalty: f32,
    early_stopping: EarlyStopping,
    min_new_tokens: usize,
}

const NEG: f32 = -1.0e9;

impl BeamSearch {
    fn new(beams: usize, start: u32, generation: &GenerationConfig) -> Self {
        let running = (0..beams)
            .map(|i| Beam {
                tokens: vec![start],
                score: if i == 0 { 0.0 } else { NEG },
            })
            .collect();
        let finished = (0..beams)
            .map(|_| {
                (
                    Beam {
                        tokens: vec![start],
                        score: NEG,
                    },
                    false,
                )
            })
            .collect();
        Self {
            running,
            finished,
            heuristic_unsatisfied: true,
            done: false,
            beams,
            length_penalty: generation.length_penalty,
            early_stopping: generation.early_stopping,
            min_new_tokens: generation.min_new_tokens,
        }
    }

    /// One step with the log-probabilities of every running beam (`beams × vocab`). Returns,
    /// for each new running beam, the index of the beam it continues.
    fn step(
        &mut self,
        log_probs: &[f32],
        vocab: usize,
        cur_len: usize,
        max_len: usize,
        eos: u32,
    ) -> Vec<usize> {
        let keep = 2 * self.beams;
        let mut candidates: Vec<(f32, usize, u32)> = Vec::with_capacity(self.beams * vocab);
        for (beam, running) in self.running.iter().enumerate() {
            for token in 0..vocab {
                let mut lp = log_probs[beam * vocab + token];
                if cur_len - 1 < self.min_new_tokens && token as u32 == eos {
                    lp = f32::NEG_INFINITY;
                }
                candidates.push((lp + running.score, beam, token as u32));
            }
        }
        // torch.topk: largest first; ties keep the lower index first. The order is total (the
        // flat indices differ), so selecting the best `keep` before sorting them gives exactly
        // the order of a full sort, without sorting `beams × vocab` candidates.
        let order = |a: &(f32, usize, u32), b: &(f32, usize, u32)| {
            b.0.total_cmp(&a.0)
                .then((a.1 * vocab + a.2 as usize).cmp(&(b.1 * vocab + b.2 as usize)))
        };
        if candidates.len() > keep {
            candidates.select_nth_unstable_by(keep - 1, order);
            candidates.truncate(keep);
        }
        candidates.sort_by(order);
        let hits: Vec<bool> = candidates
            .iter()
            .map(|(_, _, token)| *token == eos || cur_len + 1 >= max_len)
            .collect();

        // Next running beams: the best candidates that did not stop.
        let mut next: Vec<(f32, usize, usize)> = candidates
            .iter()
            .enumerate()
            .map(|(k, (score, beam, _))| (if hits[k] { score + NEG } else { *score }, *beam, k))
            .collect();
        next.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2)));
        next.truncate(self.beams);
        let new_running: Vec<Beam> = next
            .iter()
            .map(|(score, beam, k)| {
                let mut tokens = self.running[*beam].tokens.clone();
                tokens.push(candidates[*k].2);
                Beam {
                    tokens,
                    score: *score,
                }
            })
            .collect();

        // Finished hypotheses: merge the new ones (top `beams` candidates that stopped).
        // transformers divides by (generated length including the new token)^length_penalty.
        let penalty = (cur_len as f32).powf(self.length_penalty);
        let all_full = self.finished.iter().all(|(_, f)| *f)
            && self.early_stopping == EarlyStopping::Immediate;
        let mut merged: Vec<(f32, Beam, bool)> = self
            .finished
            .iter()
            .map(|(beam, f)| (beam.score, beam.clone(), *f))
            .collect();
        for (k, (score, beam, token)) in candidates.iter().enumerate() {
            let just_finished = hits[k] && k < self.beams;
            let mut value = score / penalty;
            if all_full {
                value += NEG;
            }
            if !self.heuristic_unsatisfied {
                value += NEG;
            }
            if !just_finished {
                value += NEG;
            }
            let mut tokens = self.running[*beam].tokens.clone();
            tokens.push(*token);
            merged.push((
                value,
                Beam {
                    tokens,
                    score: value,
                },
                just_finished,
            ));
        }
        let mut order: Vec<usize> = (0..merged.len()).collect();
        order.sort_by(|a, b| merged[*b].0.total_cmp(&merged[*a].0).then(a.cmp(b)));
        self.finished = order[..self.beams]
            .iter()
            .map(|i| (merged[*i].1.clone(), merged[*i].2))
            .collect();

        let chosen = next.iter().map(|(_, beam, _)| *beam).collect();
        self.running = new_running;

        // Stopping rules, after the length grows by one.
        let cur_len = cur_len + 1;
        let hypothetical =
            if self.early_stopping == EarlyStopping::Never && self.length_penalty > 0.0 {
                max_len - 1
            } else {
                cur_len - 1
            };
        let best_running = self.running[0].score / (hypothetical as f32).powf(self.length_penalty);
        let worst_finished = self
            .finished
            .iter()
            .map(|(b, _)| b.score)
            .fold(f32::INFINITY, f32::min);
        let improvable = self
            .finished
            .iter()
            .any(|(_, f)| best_running > if *f { worst_finished } else { NEG });
        self.heuristic_unsatisfied &= improvable;
        let all_finished = self.finished.iter().all(|(_, f)| *f);
        let full = all_finished && self.early_stopping == EarlyStopping::Immediate;
        // Once done, nothing can enter this prompt's finished hypotheses any more.
        self.done = !self.heuristic_unsatisfied || full || hits.iter().all(|h| *h);
        chosen
    }

    fn best(self) -> Vec<u32> {
        self.finished
            .into_iter()
            .next()
            .map(|(beam, _)| beam.tokens)
            .unwrap_or_default()
    }
}
