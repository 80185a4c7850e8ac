//! Typed errors of the T5 crate.

use std::path::PathBuf;

use lora_hf::HfFileError;

/// Everything that can go wrong loading, running or generating with T5. Each variant names the
/// file and key involved where there is one.
///
/// ```
/// use lora_hf::HfFileError;
/// use lora_t5::{T5Config, T5Error};
///
/// let err = T5Config::from_json_str("{\"d_model\": -1}", "config.json".as_ref()).unwrap_err();
/// assert!(matches!(err, T5Error::File(HfFileError::InvalidValue { .. })));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum T5Error {
    /// A file-level error: an unreadable or unwritable file, invalid JSON, a config value of the
    /// wrong kind, a missing or malformed weights file, a tensor dtype or non-finite values.
    #[error(transparent)]
    File(#[from] HfFileError),
    /// A tensor the model needs is in no weights file.
    #[error("{path}: missing tensor `{key}`")]
    MissingTensor {
        /// The weights file (or index).
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A tensor has the wrong shape for the config.
    #[error("{path}: tensor `{key}`: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// Bad arguments to a forward pass or to generation.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// The tokenizer could not be read or failed on its input.
    #[error("{path}: tokenizer error: {message}")]
    Tokenizer {
        /// The tokenizer file.
        path: PathBuf,
        /// The tokenizer's message.
        message: String,
    },
    /// The model gave a NaN or infinite logit while generating: its weights or an
    /// adapter's scaling overflow `f32`.
    #[error(
        "the model gave a non-finite or overflowing logit ({value}) at new token {step}, row {row}: \
         its weights or an adapter's scaling overflow f32"
    )]
    NonFinite {
        /// The new token being chosen (0 for the first).
        step: usize,
        /// The row of the batch (prompt × beam).
        row: usize,
        /// The value found.
        value: f32,
    },
    /// A LoRA layer refused an operation.
    #[error(transparent)]
    Lora(#[from] lora_core::LoraError),
}
