//! Typed errors of training.

use std::path::PathBuf;

/// Everything that can go wrong reading data, training, checkpointing or evaluating. Each
/// variant names the file (and line or key) involved where there is one.
///
/// ```
/// use lora_train::{data::train_valid_split, TrainError};
///
/// let err = train_valid_split(vec![1, 2, 3], 1.5, 7).unwrap_err();
/// assert!(matches!(err, TrainError::InvalidDataConfig { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A JSONL data file holds a record that cannot be used (with
    /// [`BadRecordPolicy::Fail`](crate::data::BadRecordPolicy::Fail)).
    #[error("{path}:{line}: {reason}")]
    BadRecord {
        /// The data file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong with the record.
        reason: String,
    },
    /// A split or collator was configured with values it cannot use.
    #[error("invalid data configuration: {reason}")]
    InvalidDataConfig {
        /// What is wrong.
        reason: String,
    },
    /// Bad arguments: a trainer configuration, a batch, or metric inputs.
    #[error("invalid input: {reason}")]
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// A checkpoint's optimizer or model state could not be written or read back.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The checkpoint file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// `output_dir` already holds another run's outputs, and neither resuming nor overwriting
    /// was asked for.
    #[error(
        "{path}: holds the outputs of an earlier run ({found}); resume it, or overwrite it \
         (`overwrite_output_dir`)"
    )]
    OutputDirInUse {
        /// The output directory.
        path: PathBuf,
        /// The outputs found there.
        found: String,
    },
    /// The training or validation loss became NaN or infinite (a learning rate or data that
    /// makes training diverge): the run stops before it saves such weights.
    #[error(
        "the {what} loss is {loss} at step {step}: training diverged (lower the learning rate \
         or clip the gradients)"
    )]
    NonFiniteLoss {
        /// `training` or `validation`.
        what: &'static str,
        /// The optimizer step being made (training) or just made (validation).
        step: usize,
        /// The value.
        loss: f64,
    },
    /// A resume was asked with other settings or other data than the checkpoint's run.
    #[error("{path}: cannot resume with other settings than the run's: {}", differences.join("; "))]
    ResumeMismatch {
        /// The checkpoint.
        path: PathBuf,
        /// Each differing setting with both values.
        differences: Vec<String>,
    },
    /// A trainer state or other JSON file could not be read or written.
    #[error(transparent)]
    File(#[from] lora_hf::HfFileError),
    /// Saving or reading a PEFT adapter failed.
    #[error(transparent)]
    Adapter(#[from] lora_peft_io::PeftIoError),
    /// A LoRA layer refused an operation.
    #[error(transparent)]
    Lora(#[from] lora_core::LoraError),
    /// The model refused a batch (its own error type, boxed).
    #[error(transparent)]
    Model(Box<dyn std::error::Error + Send + Sync>),
}

#[cfg(feature = "t5")]
impl From<lora_t5::T5Error> for TrainError {
    /// T5's error as [`TrainError::Model`].
    fn from(error: lora_t5::T5Error) -> Self {
        Self::Model(Box::new(error))
    }
}
