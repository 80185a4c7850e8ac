//! Text generation for any Burn encoder-decoder model, with transformers' `generate()`
//! semantics.
//!
//! A model implements [`EncoderDecoderModel`] (encode once, decode one step, reorder its
//! cache); [`generate`] runs greedy search, sampling or beam search on it, as
//! [`GenerationConfig`] says. The controls transformers users set every day are here under
//! their transformers names (`repetition_penalty`, `no_repeat_ngram_size`, `bad_words_ids`,
//! `top_k`, `top_p`, `min_p`, `typical_p`, `num_return_sequences`, `max_time`, stop strings, …),
//! read from a checkpoint's `generation_config.json` too.
//!
//! Logits processors work on device tensors: the `[rows, vocab]` scores never travel to the
//! host whole. Greedy search reads back one token id per row; sampling draws on device from
//! host-seeded uniforms; top-k, top-p, typical-p and beam search read back only the candidates
//! that can be selected ([`top_candidates`]).
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::tensor::{Int, Tensor};
//! use lora_generate::{generate, EncoderDecoderModel, GenerateOptions, GenerationConfig, SpecialTokens};
//!
//! /// A toy model whose next token is always the previous one plus one.
//! struct Counter;
//!
//! impl EncoderDecoderModel<NdArray> for Counter {
//!     type State = ();
//!     fn vocab_size(&self) -> usize { 8 }
//!     fn special_tokens(&self) -> SpecialTokens { SpecialTokens { decoder_start: 0, eos: vec![1], pad: 0 } }
//!     fn encode(&self, _: Tensor<NdArray, 2, Int>, _: Tensor<NdArray, 2, Int>) {}
//!     fn step(&self, tokens: Tensor<NdArray, 2, Int>, _: &mut ()) -> Tensor<NdArray, 2> {
//!         let next = tokens.add_scalar(2).clamp_max(7).reshape([-1]);
//!         next.one_hot::<2>(8).float().mul_scalar(10.0)
//!     }
//!     fn reorder(&self, state: (), _: Tensor<NdArray, 1, Int>) {}
//! }
//!
//! let device = Default::default();
//! let ids = Tensor::<NdArray, 2, Int>::from_ints([[3, 1]], &device);
//! let mask = Tensor::<NdArray, 2, Int>::ones([1, 2], &device);
//! let config = GenerationConfig { max_new_tokens: 3, ..GenerationConfig::default() };
//! let out = generate(&Counter, ids, mask, &config, GenerateOptions::default()).unwrap();
//! assert_eq!(out.sequences, vec![vec![0, 2, 4, 6]]);
//! ```

mod beam;
mod config;
mod constraints;
mod error;
mod model;
mod ngrams;
mod output;
mod penalties;
mod processor;
mod sampling;
mod search;
mod stopping;
mod streamer;
mod token_mask;
mod top_candidates;
mod traffic;
mod warpers;

pub use config::{EarlyStopping, GenerationConfig, GENERATION_CONFIG_FILE};
pub use constraints::{ForcedTokens, MinNewTokens, SuppressTokens, SuppressTokensAtBegin};
pub use error::GenerationError;
pub use model::{EncoderDecoderModel, NextTokens, SpecialTokens};
pub use ngrams::{EncoderNoRepeatNGram, NoBadWords, NoRepeatNGram};
pub use output::{generated_tokens, GenerateOutput};
pub use penalties::{EncoderRepetitionPenalty, RepetitionPenalty};
pub use processor::{LogitsProcessor, LogitsProcessorList, StepContext, TokenBans};
pub use search::{generate, Decode, GenerateOptions};
pub use stopping::{StopStrings, StoppingCriterion};
pub use streamer::TokenStreamer;
pub use top_candidates::{top_candidates, Candidate};
pub use traffic::HostTraffic;
pub use warpers::{EpsilonCutoff, EtaCutoff, MinP, Temperature, TopK, TopP, TypicalP};
