//! T5 and FLAN-T5 for [Burn](https://burn.dev), built on [`lora_core::LoraLinear`] so that
//! PEFT LoRA adapters apply to it one to one.
//!
//! - [`T5Config`] reads Hugging Face `config.json` (transformers 4.x and 5.x conventions).
//! - [`T5ForConditionalGeneration::from_pretrained`] loads `model.safetensors` (or shards) in
//!   F32, F16 or BF16.
//! - `forward` on named inputs and outputs ([`Seq2SeqInput`], [`Seq2SeqOutput`]), infallible
//!   like Burn's modules (ids from outside are checked once, where they enter:
//!   [`T5ForConditionalGeneration::check_input`]); `forward_with_labels` and `loss` (labels
//!   checked, `-100` ignored); generation.
//!
//! Training lives in `lora-train` (its `Seq2SeqModel` is implemented for this model) and PEFT
//! adapter directories in `lora-peft-io`; this crate is the model alone.

mod adapter_names;
mod attention;
mod block;
mod config;
mod error;
mod feed_forward;
mod generation;
mod hf_layout;
mod layer_norm;
mod loading;
mod model;
mod position_bias;
mod saving;
mod seq2seq_io;
mod stack;
mod tied_layers;
mod tokenizer;

pub use attention::{KeyValue, T5Attention};
pub use block::{T5AttentionLayer, T5Block, T5FeedForwardLayer};
pub use config::{Activation, FeedForwardKind, T5Config};
pub use error::T5Error;
pub use feed_forward::T5FeedForward;
pub use generation::GenerationState;
pub use layer_norm::T5LayerNorm;
/// Generation, on the model-agnostic engine T5 implements.
pub use lora_generate::{
    generated_tokens, EarlyStopping, GenerateOptions, GenerateOutput, GenerationConfig,
    GENERATION_CONFIG_FILE,
};
/// The file-level errors inside [`T5Error::File`].
pub use lora_hf::HfFileError;
pub use model::{
    cross_entropy_ignoring, T5ForConditionalGeneration, IGNORE_INDEX, T5_DEFAULT_TARGET_MODULES,
};
pub use position_bias::relative_position_bucket;
pub use seq2seq_io::{Seq2SeqInput, Seq2SeqLossOutput, Seq2SeqOutput};
pub use stack::{DecoderState, T5Stack};
pub use tokenizer::T5Tokenizer;
