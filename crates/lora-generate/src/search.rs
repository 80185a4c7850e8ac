//! The entry point: checks, the processor list, and greedy search or sampling.

use std::time::Instant;

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::beam::beam_search;
use crate::sampling::{draw, most_likely};
use crate::{
    EncoderDecoderModel, GenerateOutput, GenerationConfig, GenerationError, HostTraffic,
    LogitsProcessor, LogitsProcessorList, NextTokens, SpecialTokens, StepContext, StopStrings,
    StoppingCriterion, TokenStreamer,
};

/// A tokenizer's decoding of token ids into text.
pub type Decode<'a> = &'a dyn Fn(&[u32]) -> String;

/// What a call adds to its [`GenerationConfig`]: processors and stopping criteria of its own,
/// the tokenizer's decoding for stop strings, a streamer.
///
/// ```
/// use burn::backend::NdArray;
/// use lora_generate::GenerateOptions;
///
/// let mut printed = Vec::new();
/// let mut print = |tokens: &[u32]| printed.extend_from_slice(tokens);
/// let decode = |ids: &[u32]| format!("{ids:?}");
/// let options = GenerateOptions::<NdArray>::default().streamer(&mut print).decoder(&decode);
/// # let _ = options;
/// ```
pub struct GenerateOptions<'a, B: Backend> {
    processors: Vec<Box<dyn LogitsProcessor<B>>>,
    stopping: Vec<Box<dyn StoppingCriterion + 'a>>,
    streamer: Option<&'a mut dyn TokenStreamer>,
    decoder: Option<Decode<'a>>,
}

impl<B: Backend> Default for GenerateOptions<'_, B> {
    fn default() -> Self {
        Self {
            processors: Vec::new(),
            stopping: Vec::new(),
            streamer: None,
            decoder: None,
        }
    }
}

impl<'a, B: Backend> GenerateOptions<'a, B> {
    /// Adds a processor, run after the configuration's processors and before its sampling
    /// warpers (where transformers merges a `logits_processor` argument).
    pub fn processor(mut self, processor: impl LogitsProcessor<B> + 'static) -> Self {
        self.processors.push(Box::new(processor));
        self
    }

    /// Adds a stopping criterion.
    pub fn stopping(mut self, criterion: impl StoppingCriterion + 'a) -> Self {
        self.stopping.push(Box::new(criterion));
        self
    }

    /// Streams each step's tokens (greedy search and sampling).
    pub fn streamer(mut self, streamer: &'a mut dyn TokenStreamer) -> Self {
        self.streamer = Some(streamer);
        self
    }

    /// The tokenizer's decoding of new tokens, which the configuration's `stop_strings` need.
    pub fn decoder(mut self, decode: Decode<'a>) -> Self {
        self.decoder = Some(decode);
        self
    }
}

/// The parts of a search every strategy shares.
pub(crate) struct Search<'a, B: Backend, M: EncoderDecoderModel<B>> {
    pub model: &'a M,
    pub config: &'a GenerationConfig,
    pub special: SpecialTokens,
    pub processors: LogitsProcessorList<B>,
    pub stopping: Vec<Box<dyn StoppingCriterion + 'a>>,
    pub traffic: HostTraffic,
    pub device: B::Device,
    started: Instant,
}

impl<B: Backend, M: EncoderDecoderModel<B>> Search<'_, B, M> {
    /// The logits of the next token of every row, after `last` (one token per row), checked
    /// for NaN and infinities.
    pub fn logits(
        &self,
        last: &[u32],
        step: usize,
        state: &mut M::State,
    ) -> Result<Tensor<B, 2>, GenerationError> {
        let logits = self.model.step(self.last_tokens(last), state);
        self.traffic.step();
        self.checked(logits, step)
    }

    /// Greedy search's next token of every row after `last`, when the processors do nothing at
    /// this step but set the `banned` pairs' scores to `-inf`: from the model directly where it
    /// can pick without every logit, else from its checked and processed logits.
    fn most_likely_after(
        &self,
        last: &[u32],
        state: &mut M::State,
        context: &StepContext<'_>,
        banned: &[(usize, u32)],
    ) -> Result<Vec<u32>, GenerationError> {
        let next = self
            .model
            .step_most_likely(self.last_tokens(last), state, banned);
        self.traffic.step();
        match next {
            NextTokens::MostLikely(tokens) => {
                let vocab = self.model.vocab_size();
                if tokens.len() != last.len() || tokens.iter().any(|t| *t as usize >= vocab) {
                    return Err(GenerationError::invalid(format!(
                        "the model picked {tokens:?} for {} rows of a vocabulary of {vocab}",
                        last.len()
                    )));
                }
                self.traffic.ids_to_host(tokens.len());
                Ok(tokens)
            }
            NextTokens::Logits(logits) => {
                let logits = self.checked(logits, context.new_tokens)?;
                most_likely(self.processors.process(context, logits)?, &self.traffic)
            }
        }
    }

    /// `last` as a `[rows, 1]` device tensor.
    fn last_tokens(&self, last: &[u32]) -> Tensor<B, 2, Int> {
        let ids = last.iter().map(|t| i64::from(*t)).collect();
        self.traffic
            .int_tensor::<B, 2>(ids, [last.len(), 1], &self.device)
    }

    /// `logits` checked for NaN and infinities.
    fn checked(&self, logits: Tensor<B, 2>, step: usize) -> Result<Tensor<B, 2>, GenerationError> {
        // Two values a row come back: the sum, finite when every logit is, and the spread of
        // the finite logits (maximum − minimum), finite unless the logits are so large that
        // log-softmax overflows. A row whose sum is not finite is read whole: `-inf` masks a
        // token (a model may do that); a NaN, `+inf` or a row of nothing but `-inf` comes
        // from overflowing weights, as does a spread that overflows.
        let [rows, _] = logits.dims();
        let finite_min = logits
            .clone()
            .mask_fill(logits.clone().is_inf(), f32::MAX)
            .min_dim(1);
        let spread = logits.clone().max_dim(1) - finite_min;
        let checks = self
            .traffic
            .floats(Tensor::cat(vec![logits.clone().sum_dim(1), spread], 1))?;
        for row in 0..rows {
            let (sum, spread) = (checks[2 * row], checks[2 * row + 1]);
            if sum.is_finite() && spread.is_finite() {
                continue;
            }
            let values = self.traffic.floats(logits.clone().narrow(0, row, 1))?;
            let finite = || values.iter().filter(|v| v.is_finite()).copied();
            let extreme = || finite().fold(0.0, |m: f32, v| if v.abs() > m.abs() { v } else { m });
            let (low, high) = finite().fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), v| {
                (l.min(v), h.max(v))
            });
            let bad = values
                .iter()
                .find(|v| v.is_nan() || **v == f32::INFINITY)
                .copied()
                .or_else(|| finite().next().is_none().then_some(f32::NEG_INFINITY))
                .or_else(|| (!(high - low).is_finite()).then(extreme));
            if let Some(value) = bad {
                return Err(GenerationError::NonFinite { step, row, value });
            }
        }
        Ok(logits)
    }

    /// Whether the time allowed by `max_time` is over.
    pub fn out_of_time(&self) -> bool {
        self.config
            .max_time
            .is_some_and(|limit| self.started.elapsed().as_secs_f64() > limit)
    }

    /// Whether a stopping criterion ends `sequence`.
    pub fn stops(&self, sequence: &[u32]) -> bool {
        self.stopping.iter().any(|c| c.is_done(sequence))
    }

    /// A step's context for the processors.
    pub fn context<'c>(
        &'c self,
        sequences: &'c [Vec<u32>],
        encoder_ids: &'c [Vec<u32>],
        new_tokens: usize,
    ) -> StepContext<'c> {
        StepContext {
            sequences,
            encoder_ids,
            new_tokens,
            max_new_tokens: self.config.max_new_tokens,
            traffic: &self.traffic,
        }
    }
}

/// Generates from a padded batch of prompts with `model`, as `config` says, following
/// transformers' `generate()`: greedy search, multinomial sampling or beam search, the
/// configuration's logits processors and warpers in transformers' order, its stopping rules.
///
/// Greedy search and sampling process the raw logits, beam search the log-probabilities (as
/// transformers does). Sampling draws from a xoshiro256++ stream seeded with `config.seed`:
/// runs are reproducible here, but transformers' (torch's) draws are not reproduced.
///
/// See the crate documentation for an example.
///
/// # Shapes
/// - `input_ids`, `attention_mask`: `[batch, source_len]`, ids already checked against the
///   model's vocabulary
///
/// # Errors
/// [`GenerationError::InvalidInput`] for a configuration that cannot run (see
/// [`GenerationConfig`]'s fields: ranges, token ids outside the vocabulary, stop strings
/// without a decoder, a streamer with beam search) or a batch whose scores would not fit in
/// memory; [`GenerationError::NonFinite`] when the model gives a NaN or infinite logit.
pub fn generate<B: Backend, M: EncoderDecoderModel<B>>(
    model: &M,
    input_ids: Tensor<B, 2, Int>,
    attention_mask: Tensor<B, 2, Int>,
    config: &GenerationConfig,
    options: GenerateOptions<'_, B>,
) -> Result<GenerateOutput<B>, GenerationError> {
    config.validate()?;
    let vocab = model.vocab_size();
    let special = config.special_tokens(model.special_tokens());
    let named = config.token_ids().into_iter().chain(
        [
            ("the decoder start token", special.decoder_start),
            ("the padding id", special.pad),
        ]
        .into_iter()
        .chain(special.eos.iter().map(|t| ("the end-of-sequence id", *t))),
    );
    for (name, token) in named {
        if token as usize >= vocab {
            return Err(GenerationError::invalid(format!(
                "{name} {token} is outside the vocabulary of {vocab}"
            )));
        }
    }
    let [batch, _] = input_ids.dims();
    let per_prompt = config.num_beams.max(config.num_return_sequences);
    let bytes = batch
        .checked_mul(per_prompt)
        .and_then(|rows| rows.checked_mul(vocab))
        .and_then(|n| n.checked_mul(std::mem::size_of::<f32>()));
    if bytes.is_none_or(|bytes| bytes > isize::MAX as usize) {
        return Err(GenerationError::invalid(format!(
            "{batch} prompts × {per_prompt} rows × a vocabulary of {vocab} scores do not fit in memory"
        )));
    }
    let GenerateOptions {
        processors: extra,
        mut stopping,
        streamer,
        decoder,
    } = options;
    if !config.stop_strings.is_empty() {
        let Some(decode) = decoder else {
            return Err(GenerationError::invalid(
                "stop_strings need the tokenizer's decoding: pass GenerateOptions::decoder",
            ));
        };
        stopping.push(Box::new(StopStrings::new(
            config.stop_strings.clone(),
            decode,
        )));
    }
    if config.num_beams > 1 && streamer.is_some() {
        return Err(GenerationError::invalid(
            "a streamer cannot be used with beam search",
        ));
    }
    let mut processors = LogitsProcessorList::default();
    processors.extend_processors(config, &special);
    for processor in extra {
        processors.push_boxed(processor);
    }
    if config.do_sample {
        processors.extend_warpers(config);
    }
    let device = input_ids.device();
    let search = Search {
        model,
        config,
        special,
        processors,
        stopping,
        traffic: HostTraffic::default(),
        device,
        started: Instant::now(),
    };
    let prompts: Vec<Vec<u32>> = search
        .traffic
        .ints(input_ids.clone())?
        .chunks(input_ids.dims()[1].max(1))
        .map(|row| row.iter().map(|t| *t as u32).collect())
        .collect();
    let state = model.encode(input_ids, attention_mask);
    if config.num_beams > 1 {
        beam_search(search, state, &prompts)
    } else {
        greedy_or_sample(search, state, &prompts, streamer)
    }
}

/// Each prompt's row repeated `times` times, next to each other.
pub(crate) fn expand<B: Backend, M: EncoderDecoderModel<B>>(
    search: &Search<'_, B, M>,
    state: M::State,
    prompts: &[Vec<u32>],
    times: usize,
) -> (M::State, Vec<Vec<u32>>) {
    if times == 1 {
        return (state, prompts.to_vec());
    }
    let rows: Vec<i64> = (0..prompts.len())
        .flat_map(|b| std::iter::repeat_n(b as i64, times))
        .collect();
    let count = rows.len();
    let encoder_ids = rows.iter().map(|b| prompts[*b as usize].clone()).collect();
    let rows = search
        .traffic
        .int_tensor::<B, 1>(rows, [count], &search.device);
    (search.model.reorder(state, rows), encoder_ids)
}

fn greedy_or_sample<B: Backend, M: EncoderDecoderModel<B>>(
    search: Search<'_, B, M>,
    state: M::State,
    prompts: &[Vec<u32>],
    mut streamer: Option<&mut dyn TokenStreamer>,
) -> Result<GenerateOutput<B>, GenerationError> {
    let config = search.config;
    let (mut state, encoder_ids) = expand(&search, state, prompts, config.num_return_sequences);
    let rows = encoder_ids.len();
    let (eos, pad) = (&search.special.eos, search.special.pad);
    let mut sequences: Vec<Vec<u32>> = vec![vec![search.special.decoder_start]; rows];
    let mut finished = vec![false; rows];
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);
    let mut all_scores = Vec::new();
    for step in 0..config.max_new_tokens {
        let last: Vec<u32> = sequences.iter().map(|s| s[s.len() - 1]).collect();
        let context = search.context(&sequences, &encoder_ids, step);
        // Greedy search needs every score only when a processor does more than ban tokens.
        let bans = if config.do_sample || config.output_scores {
            None
        } else {
            search.processors.bans(&context)
        };
        let chosen = if let Some(banned) = bans {
            search.most_likely_after(&last, &mut state, &context, &banned)?
        } else {
            let logits = search.logits(&last, step, &mut state)?;
            let scores = search.processors.process(&context, logits)?;
            if config.output_scores {
                all_scores.push(scores.clone());
            }
            if config.do_sample {
                draw(scores, &mut rng, &search.traffic)?
            } else {
                most_likely(scores, &search.traffic)?
            }
        };
        let timed_out = search.out_of_time();
        let mut tokens = Vec::with_capacity(rows);
        for (row, token) in chosen.into_iter().enumerate() {
            let token = if finished[row] { pad } else { token };
            sequences[row].push(token);
            tokens.push(token);
            if !finished[row] {
                finished[row] = eos.contains(&token) || timed_out || search.stops(&sequences[row]);
            }
        }
        if let Some(streamer) = streamer.as_mut() {
            streamer.put(&tokens);
        }
        if finished.iter().all(|f| *f) {
            break;
        }
    }
    if let Some(streamer) = streamer.as_mut() {
        streamer.end();
    }
    Ok(GenerateOutput {
        sequences,
        scores: all_scores,
        sequences_scores: Vec::new(),
        traffic: search.traffic,
    })
}
