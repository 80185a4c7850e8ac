//! Typed errors of adapter reading and writing.

use std::path::PathBuf;

use lora_core::LoraError;
use lora_hf::HfFileError;

/// Everything that can go wrong reading, writing or applying a PEFT adapter. Each variant names
/// the file (and key) involved and what was expected.
///
/// ```
/// use lora_hf::HfFileError;
/// use lora_peft_io::{AdapterConfig, PeftIoError};
///
/// let err = AdapterConfig::from_json_str("{\"r\": 8,}", "adapter_config.json".as_ref()).unwrap_err();
/// assert!(matches!(err, PeftIoError::File(HfFileError::Json { line: 1, .. })));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum PeftIoError {
    /// A file-level error: an unreadable or unwritable file, invalid JSON, a config value of the
    /// wrong kind, a malformed safetensors file, a tensor dtype or non-finite values.
    #[error(transparent)]
    File(#[from] HfFileError),
    /// A required config key is missing.
    #[error("{path}: missing required key `{key}`")]
    MissingConfigKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// A regular expression in the config does not compile.
    #[error("{path}: key `{key}`: invalid regular expression `{pattern}`: {message}")]
    InvalidPattern {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The pattern.
        pattern: String,
        /// The regex engine's message.
        message: String,
    },
    /// The legacy PyTorch `adapter_model.bin` could not be read.
    #[error("{path}: invalid PyTorch checkpoint: {message}")]
    Pickle {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor has the wrong shape.
    #[error("{path}: tensor `{key}`: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// The file.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A targeted module has no weights (or only one of A and B) in the file.
    #[error("{path}: module `{module}` is targeted but `{key}` is missing")]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The module path.
        module: String,
        /// The missing key.
        key: String,
    },
    /// The file holds a tensor for a module that is not a target, or a key of unknown meaning.
    #[error("{path}: unexpected tensor `{key}`: {reason}")]
    UnexpectedTensor {
        /// The file.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// Why it cannot be placed.
        reason: String,
    },
    /// An entry of `target_modules` matches no LoRA layer of the model.
    #[error("target module `{target}` matches no LoRA layer of the model (layers: {available})")]
    TargetNotFound {
        /// The target entry.
        target: String,
        /// A summary of the model's LoRA layer paths.
        available: String,
    },
    /// A feature of the adapter is not supported.
    #[error("{path}: unsupported adapter feature: {feature}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// The feature and how to get around it.
        feature: String,
    },
    /// The LoRA layer refused the adapter.
    #[error("module `{module}`: {source}")]
    Layer {
        /// The module path.
        module: String,
        /// The layer's error.
        source: LoraError,
    },
    /// An adapter cannot replace the loaded one of the same name ([`hotswap_adapter`](crate::hotswap_adapter)).
    #[error("{dir}: cannot hot-swap adapter `{adapter}`: {reason}")]
    HotswapIncompatible {
        /// The new adapter's directory.
        dir: PathBuf,
        /// The adapter name.
        adapter: String,
        /// What does not fit.
        reason: String,
    },
    /// The directory holds neither `adapter_model.safetensors` nor `adapter_model.bin`.
    #[error("{dir}: no adapter_model.safetensors or adapter_model.bin")]
    NoWeights {
        /// The adapter directory.
        dir: PathBuf,
    },
}
