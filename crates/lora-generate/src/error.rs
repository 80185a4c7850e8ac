//! The errors of generation.

use lora_hf::HfFileError;

/// Why [`generate`](crate::generate) or a [`GenerationConfig`](crate::GenerationConfig) file
/// was refused.
///
/// ```
/// let err = lora_generate::GenerationError::InvalidInput { reason: "num_beams must be in 1..=1024, got 0".into() };
/// assert_eq!(err.to_string(), "invalid input: num_beams must be in 1..=1024, got 0");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    /// A configuration or an argument that cannot run.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// The model gave a NaN or infinite logit: its weights or an adapter's scaling overflow
    /// `f32`, and decoding it would give garbage.
    #[error(
        "the model gave a non-finite or overflowing logit ({value}) at new token {step}, row {row}: \
         its weights or an adapter's scaling overflow f32"
    )]
    NonFinite {
        /// The new token being chosen (0 for the first).
        step: usize,
        /// The row of the batch (prompt × beam or returned sequence).
        row: usize,
        /// The value found.
        value: f32,
    },
    /// `generation_config.json` could not be read or holds a bad value.
    #[error(transparent)]
    File(#[from] HfFileError),
}

impl GenerationError {
    /// An [`InvalidInput`](Self::InvalidInput) error.
    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Self::InvalidInput {
            reason: reason.into(),
        }
    }
}
