//! The logits-processor interface and the list transformers builds from a configuration.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::constraints::{ForcedTokens, MinNewTokens, SuppressTokens, SuppressTokensAtBegin};
use crate::ngrams::{EncoderNoRepeatNGram, NoBadWords, NoRepeatNGram};
use crate::penalties::{EncoderRepetitionPenalty, RepetitionPenalty};
use crate::token_mask::ban;
use crate::warpers::{EpsilonCutoff, EtaCutoff, MinP, Temperature, TopK, TopP, TypicalP};
use crate::{GenerationConfig, GenerationError, HostTraffic, SpecialTokens};

/// What a processor may look at besides the scores of one step.
///
/// ```
/// use lora_generate::{HostTraffic, StepContext};
///
/// let traffic = HostTraffic::default();
/// let sequences = vec![vec![0, 5, 6]];
/// let encoder_ids = vec![vec![5, 9, 1]];
/// let context = StepContext { sequences: &sequences, encoder_ids: &encoder_ids, new_tokens: 2, max_new_tokens: 10, traffic: &traffic };
/// assert_eq!(context.rows(), 1);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct StepContext<'a> {
    /// Each row's decoder ids so far, the decoder start token first.
    pub sequences: &'a [Vec<u32>],
    /// Each row's encoder input ids (padding included, as transformers passes them).
    pub encoder_ids: &'a [Vec<u32>],
    /// Tokens generated so far: the step's token is new token `new_tokens` (from 0).
    pub new_tokens: usize,
    /// The configured most new tokens.
    pub max_new_tokens: usize,
    /// Where processors count what they move between host and device.
    pub traffic: &'a HostTraffic,
}

impl StepContext<'_> {
    /// The number of rows.
    pub fn rows(&self) -> usize {
        self.sequences.len()
    }
}

/// Changes the `[rows, vocab]` scores of one step (transformers' `LogitsProcessor`), on the
/// device.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{backend::Backend, Tensor};
/// use lora_generate::{GenerationError, LogitsProcessor, StepContext};
///
/// /// Halves every score.
/// struct Halve;
///
/// impl<B: Backend> LogitsProcessor<B> for Halve {
///     fn process(&self, _: &StepContext<'_>, scores: Tensor<B, 2>) -> Result<Tensor<B, 2>, GenerationError> {
///         Ok(scores.div_scalar(2.0))
///     }
/// }
/// ```
pub trait LogitsProcessor<B: Backend> {
    /// The processed scores.
    ///
    /// # Errors
    /// [`GenerationError`] when the scores cannot be read back where the processor needs a
    /// few values on the host.
    fn process(
        &self,
        context: &StepContext<'_>,
        scores: Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>, GenerationError>;

    /// The `(row, token)` pairs whose scores [`process`](Self::process) sets to `-inf` at this
    /// step, when that is all it does here (an empty list when it changes nothing); `None`, the
    /// default, when it changes the scores in any other way.
    ///
    /// When every processor of a greedy search answers, the model may pick each row's most
    /// likely token without computing every score
    /// ([`EncoderDecoderModel::step_most_likely`](crate::EncoderDecoderModel::step_most_likely)).
    fn bans(&self, context: &StepContext<'_>) -> Option<Vec<(usize, u32)>> {
        let _ = context;
        None
    }
}

/// A processor that only sets some `(row, token)` scores to `-inf` (transformers' bans and
/// suppressions): it is a [`LogitsProcessor`] whose [`bans`](LogitsProcessor::bans) always
/// answers, so greedy search under it may pick tokens without every score.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_generate::{HostTraffic, LogitsProcessor, StepContext, TokenBans};
///
/// /// Token 3 is never generated.
/// struct NoThree;
///
/// impl TokenBans for NoThree {
///     fn banned(&self, context: &StepContext<'_>) -> Vec<(usize, u32)> {
///         (0..context.rows()).map(|row| (row, 3)).collect()
///     }
/// }
///
/// let traffic = HostTraffic::default();
/// let (sequences, encoder_ids) = (vec![vec![0]], vec![vec![]]);
/// let context = StepContext { sequences: &sequences, encoder_ids: &encoder_ids, new_tokens: 0, max_new_tokens: 4, traffic: &traffic };
/// let scores = Tensor::<NdArray, 2>::zeros([1, 5], &Default::default());
/// let out = NoThree.process(&context, scores).unwrap().into_data().to_vec::<f32>().unwrap();
/// assert_eq!(out[3], f32::NEG_INFINITY);
/// assert_eq!(LogitsProcessor::<NdArray>::bans(&NoThree, &context), Some(vec![(0, 3)]));
/// ```
pub trait TokenBans {
    /// The `(row, token)` pairs banned at this step (pairs outside the scores are ignored).
    fn banned(&self, context: &StepContext<'_>) -> Vec<(usize, u32)>;
}

impl<B: Backend, T: TokenBans> LogitsProcessor<B> for T {
    fn process(
        &self,
        context: &StepContext<'_>,
        scores: Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>, GenerationError> {
        Ok(ban(scores, self.banned(context), context.traffic))
    }

    fn bans(&self, context: &StepContext<'_>) -> Option<Vec<(usize, u32)>> {
        Some(self.banned(context))
    }
}

/// Processors applied one after the other.
///
/// ```
/// use burn::backend::NdArray;
/// use lora_generate::{GenerationConfig, LogitsProcessorList, SpecialTokens};
///
/// let config = GenerationConfig { repetition_penalty: 1.2, ..GenerationConfig::default() }.sampling(0.7, 50, 0.9, 0);
/// let special = SpecialTokens { decoder_start: 0, eos: vec![1], pad: 0 };
/// let list = LogitsProcessorList::<NdArray>::from_config(&config, &special);
/// assert_eq!(list.len(), 4); // repetition penalty, temperature, top-k, top-p
/// ```
pub struct LogitsProcessorList<B: Backend> {
    processors: Vec<Box<dyn LogitsProcessor<B>>>,
}

impl<B: Backend> Default for LogitsProcessorList<B> {
    fn default() -> Self {
        Self {
            processors: Vec::new(),
        }
    }
}

impl<B: Backend> LogitsProcessorList<B> {
    /// The processors `config` asks for, in transformers' order (`_get_logits_processor`):
    /// encoder repetition penalty, repetition penalty, no-repeat n-grams (decoder, then
    /// encoder), bad words, minimum length, forced BOS / EOS, suppressed tokens; then, when
    /// sampling, temperature, top-k, top-p, min-p, typical-p, epsilon and eta cutoffs.
    pub fn from_config(config: &GenerationConfig, special: &SpecialTokens) -> Self {
        let mut list = Self::default();
        list.extend_processors(config, special);
        if config.do_sample {
            list.extend_warpers(config);
        }
        list
    }

    /// Adds the processors of `config` that are not sampling warpers.
    pub(crate) fn extend_processors(&mut self, config: &GenerationConfig, special: &SpecialTokens) {
        if config.encoder_repetition_penalty != 1.0 {
            self.push(EncoderRepetitionPenalty::new(
                config.encoder_repetition_penalty,
            ));
        }
        if config.repetition_penalty != 1.0 {
            self.push(RepetitionPenalty::new(config.repetition_penalty));
        }
        if config.no_repeat_ngram_size > 0 {
            self.push(NoRepeatNGram::new(config.no_repeat_ngram_size));
        }
        if config.encoder_no_repeat_ngram_size > 0 {
            self.push(EncoderNoRepeatNGram::new(
                config.encoder_no_repeat_ngram_size,
            ));
        }
        if !config.bad_words_ids.is_empty() {
            self.push(NoBadWords::new(config.bad_words_ids.clone(), &special.eos));
        }
        if config.min_new_tokens > 0 {
            self.push(MinNewTokens::new(
                config.min_new_tokens,
                special.eos.clone(),
            ));
        }
        if let Some(bos) = config.forced_bos_token_id {
            self.push(ForcedTokens::first(bos));
        }
        if !config.forced_eos_token_id.is_empty() {
            self.push(ForcedTokens::last(config.forced_eos_token_id.clone()));
        }
        if !config.suppress_tokens.is_empty() {
            self.push(SuppressTokens::new(config.suppress_tokens.clone()));
        }
        if !config.begin_suppress_tokens.is_empty() {
            let first_free = usize::from(config.forced_bos_token_id.is_some());
            self.push(SuppressTokensAtBegin::new(
                config.begin_suppress_tokens.clone(),
                first_free,
            ));
        }
    }

    /// Adds the sampling warpers of `config` (one token is always kept).
    pub(crate) fn extend_warpers(&mut self, config: &GenerationConfig) {
        if config.temperature != 1.0 {
            self.push(Temperature::new(config.temperature));
        }
        if config.top_k != 0 {
            self.push(TopK::new(config.top_k));
        }
        if config.top_p < 1.0 {
            self.push(TopP::new(config.top_p));
        }
        if let Some(min_p) = config.min_p {
            self.push(MinP::new(min_p));
        }
        if config.typical_p < 1.0 {
            self.push(TypicalP::new(config.typical_p));
        }
        if config.epsilon_cutoff > 0.0 {
            self.push(EpsilonCutoff::new(config.epsilon_cutoff));
        }
        if config.eta_cutoff > 0.0 {
            self.push(EtaCutoff::new(config.eta_cutoff));
        }
    }

    /// Appends a processor.
    pub fn push(&mut self, processor: impl LogitsProcessor<B> + 'static) {
        self.processors.push(Box::new(processor));
    }

    /// Appends a boxed processor.
    pub fn push_boxed(&mut self, processor: Box<dyn LogitsProcessor<B>>) {
        self.processors.push(processor);
    }

    /// The number of processors.
    pub fn len(&self) -> usize {
        self.processors.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.processors.is_empty()
    }

    /// The `(row, token)` pairs the processors set to `-inf` at this step, when that is all
    /// every one of them does ([`LogitsProcessor::bans`]); `None` otherwise.
    pub fn bans(&self, context: &StepContext<'_>) -> Option<Vec<(usize, u32)>> {
        let mut all = Vec::new();
        for processor in &self.processors {
            all.extend(processor.bans(context)?);
        }
        Some(all)
    }

    /// The scores after every processor.
    ///
    /// # Errors
    /// The first processor's error.
    pub fn process(
        &self,
        context: &StepContext<'_>,
        scores: Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>, GenerationError> {
        self.processors
            .iter()
            .try_fold(scores, |scores, p| p.process(context, scores))
    }
}
