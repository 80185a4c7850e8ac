//! T5 on the model-agnostic generation engine of `lora-generate`.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use lora_core::{on_compute_threads, ArgmaxScreen, FEW_ROWS_MAX};
use lora_generate::{
    generate, EncoderDecoderModel, GenerateOptions, GenerateOutput, GenerationConfig,
    GenerationError, NextTokens, SpecialTokens,
};

use crate::{DecoderState, T5Error, T5ForConditionalGeneration};

/// What T5 keeps between the decoding steps of one [`generate`] call: the decoder's caches and,
/// for greedy search, the head's [`ArgmaxScreen`].
///
/// Greedy search needs only the largest logit of each row. On the flex backend, the first
/// greedy step builds an int8 screen of the head (the tied embedding, or an untied head
/// without adapters: [`lora_core::LoraLinear::output_screen`]) in about the time of two steps'
/// head products, and every step then reads it instead of the `f32` head, recomputing only
/// the few tokens it cannot rule out: the same tokens, bit for bit, at about a quarter of the
/// head's bytes. The screen lives as long as the call, so it always matches the
/// weights that decode.
#[derive(Debug, Clone)]
pub struct GenerationState<B: Backend> {
    /// The decoder's caches.
    pub decoder: DecoderState<B>,
    /// The head's screen, once the first greedy step has built it (`None` inside when this
    /// model or backend has none).
    head_screen: Option<Option<ArgmaxScreen<B>>>,
}

impl<B: Backend> EncoderDecoderModel<B> for T5ForConditionalGeneration<B> {
    type State = GenerationState<B>;

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn special_tokens(&self) -> SpecialTokens {
        SpecialTokens {
            decoder_start: self.config.decoder_start_token_id,
            eos: vec![self.config.eos_token_id],
            pad: self.config.pad_token_id,
        }
    }

    fn encode(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> GenerationState<B> {
        on_compute_threads(|| {
            let encoded =
                T5ForConditionalGeneration::encode(self, input_ids, attention_mask.clone());
            GenerationState {
                decoder: self.start_decoding(encoded, attention_mask),
                head_screen: None,
            }
        })
    }

    fn step(&self, tokens: Tensor<B, 2, Int>, state: &mut GenerationState<B>) -> Tensor<B, 2> {
        on_compute_threads(|| {
            let logits = self.decode(tokens, &mut state.decoder);
            let [rows, _, vocab] = logits.dims();
            logits.reshape([rows, vocab])
        })
    }

    fn step_most_likely(
        &self,
        tokens: Tensor<B, 2, Int>,
        state: &mut GenerationState<B>,
        banned: &[(usize, u32)],
    ) -> NextTokens<B> {
        on_compute_threads(|| {
            let hidden = self.decode_hidden(tokens, &mut state.decoder);
            let [rows, length, d_model] = hidden.dims();
            // The screen answers for a few rows (a batch of up to `FEW_ROWS_MAX` greedy rows).
            if !B::ad_enabled(&hidden.device()) && rows * length <= FEW_ROWS_MAX {
                let screen = state
                    .head_screen
                    .get_or_insert_with(|| match &self.lm_head {
                        None => ArgmaxScreen::new(self.shared.weight.val()),
                        Some(head) => head.output_screen(),
                    });
                if let Some(screen) = screen {
                    let scaled = self.scaled_for_head(hidden.clone());
                    let rows_2d = scaled.reshape([rows * length, d_model]);
                    if let Some(tokens) = screen.argmax_rows(&rows_2d, banned) {
                        return NextTokens::MostLikely(tokens);
                    }
                }
            }
            let logits = self.lm_logits(hidden);
            NextTokens::Logits(logits.reshape([rows * length, self.config.vocab_size]))
        })
    }

    fn reorder(&self, state: GenerationState<B>, rows: Tensor<B, 1, Int>) -> GenerationState<B> {
        on_compute_threads(|| GenerationState {
            decoder: state.decoder.select(rows),
            head_screen: state.head_screen,
        })
    }
}

impl From<GenerationError> for T5Error {
    fn from(err: GenerationError) -> Self {
        match err {
            GenerationError::InvalidInput { reason } => T5Error::InvalidInput { reason },
            GenerationError::NonFinite { step, row, value } => {
                T5Error::NonFinite { step, row, value }
            }
            GenerationError::File(err) => T5Error::File(err),
        }
    }
}

impl<B: Backend> T5ForConditionalGeneration<B> {
    /// Generates from a padded batch of prompts (see [`lora_generate::generate`] for the
    /// strategies and controls). Returns `batch × num_return_sequences` sequences, each
    /// starting with the decoder start token, padded as transformers pads them.
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
    /// - output: `batch × num_return_sequences` sequences of token ids
    ///
    /// # Errors
    /// [`T5Error::InvalidInput`] for a `generation` config that cannot run (ranges, token ids
    /// outside the vocabulary, beam sampling, stop strings without a decoder: use
    /// [`generate_with`](Self::generate_with)), for a batch whose scores would not fit in
    /// memory, and the input checks of [`check_source`](Self::check_source);
    /// [`T5Error::NonFinite`] when the model gives a NaN or infinite logit (overflowing
    /// weights or adapter scaling), instead of decoding garbage.
    pub fn generate(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        generation: &GenerationConfig,
    ) -> Result<Vec<Vec<u32>>, T5Error> {
        self.generate_with(
            input_ids,
            attention_mask,
            generation,
            GenerateOptions::default(),
        )
        .map(|out| out.sequences)
    }

    /// [`generate`](Self::generate) with the call's own processors, stopping criteria,
    /// stop-string decoding and streamer, returning the scores when `output_scores` and what
    /// moved between device and host.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::tensor::{Int, Tensor};
    /// use lora_t5::{GenerateOptions, GenerationConfig, T5Config, T5ForConditionalGeneration};
    ///
    /// let config = T5Config { vocab_size: 40, d_model: 16, d_kv: 4, num_heads: 4, d_ff: 32,
    ///     num_layers: 1, num_decoder_layers: 1, ..T5Config::default() };
    /// let device = Default::default();
    /// let model = T5ForConditionalGeneration::<NdArray>::new(&config, &device);
    /// let ids = Tensor::<NdArray, 2, Int>::from_ints([[5, 6, 1]], &device);
    /// let mask = Tensor::<NdArray, 2, Int>::ones([1, 3], &device);
    /// let mut streamed = Vec::new();
    /// let mut stream = |tokens: &[u32]| streamed.push(tokens[0]);
    /// let generation = GenerationConfig { max_new_tokens: 4, output_scores: true, ..Default::default() };
    /// let out = model
    ///     .generate_with(ids, mask, &generation, GenerateOptions::default().streamer(&mut stream))
    ///     .unwrap();
    /// assert_eq!(out.scores.len(), out.sequences[0].len() - 1);
    /// drop(out);
    /// assert!(!streamed.is_empty());
    /// ```
    ///
    /// # Errors
    /// As [`generate`](Self::generate).
    pub fn generate_with(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        generation: &GenerationConfig,
        options: GenerateOptions<'_, B>,
    ) -> Result<GenerateOutput<B>, T5Error> {
        self.check_source(&input_ids, &attention_mask)?;
        Ok(generate(
            self,
            input_ids,
            attention_mask,
            generation,
            options,
        )?)
    }
}
