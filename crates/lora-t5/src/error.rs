//! Typed errors of the T5 crate.

use std::path::PathBuf;

/// Everything that can go wrong loading, running or generating with T5. Each variant names the
/// file and key involved where there is one.
///
/// ```
/// use lora_t5::{T5Config, T5Error};
///
/// let err = T5Config::from_json_str("{\"d_model\": -1}", "config.json".as_ref()).unwrap_err();
/// assert!(matches!(err, T5Error::InvalidConfig { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum T5Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// A JSON file is not valid JSON.
    #[error("{path}: invalid JSON at line {line}, column {column}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A config key holds an invalid value.
    #[error("{path}: key `{key}`: expected {expected}, found {found}")]
    InvalidConfig {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What it must hold.
        expected: String,
        /// What it holds.
        found: String,
    },
    /// A weights file is not a valid safetensors file.
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
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
    /// A tensor has a dtype the loader does not convert.
    #[error("{path}: tensor `{key}` has dtype {dtype}; expected F32, F16 or BF16")]
    UnsupportedDtype {
        /// The weights file.
        path: PathBuf,
        /// The key.
        key: String,
        /// Its dtype.
        dtype: String,
    },
    /// The model directory has no weights file.
    #[error("{dir}: no model.safetensors or model.safetensors.index.json")]
    NoWeights {
        /// The directory.
        dir: PathBuf,
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
    /// A tensor contains NaN or infinite values.
    #[error("{path}: tensor `{key}` contains non-finite values")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The tensor key.
        key: String,
    },
    /// A LoRA layer refused an operation.
    #[error(transparent)]
    Lora(#[from] lora_core::LoraError),
}

impl From<lora_hf::HfFileError> for T5Error {
    /// The file-level error as this crate's variant of the same name (a JSON value error as an
    /// invalid config value).
    fn from(error: lora_hf::HfFileError) -> Self {
        use lora_hf::HfFileError as E;
        match error {
            E::Io { path, source } => Self::Io { path, source },
            E::Json {
                path,
                line,
                column,
                message,
            } => Self::Json {
                path,
                line,
                column,
                message,
            },
            E::InvalidValue {
                path,
                key,
                expected,
                found,
            } => Self::InvalidConfig {
                path,
                key,
                expected,
                found,
            },
            E::Safetensors { path, message } => Self::Safetensors { path, message },
            E::UnsupportedDtype { path, key, dtype } => Self::UnsupportedDtype { path, key, dtype },
            E::NonFinite { path, key } => Self::NonFinite { path, key },
            E::NoWeights { dir } => Self::NoWeights { dir },
        }
    }
}
