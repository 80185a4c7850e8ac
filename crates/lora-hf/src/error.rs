//! Typed errors of Hugging Face file reading and writing.

use std::path::PathBuf;

/// Everything that can go wrong reading or writing a Hugging Face file. Each variant names the
/// file (and key) involved and what was expected.
///
/// ```
/// let err = lora_hf::read_model_weights("/nonexistent-model-dir".as_ref()).unwrap_err();
/// assert!(matches!(err, lora_hf::HfFileError::NoWeights { .. }));
/// ```
#[derive(Debug, thiserror::Error)]
pub enum HfFileError {
    /// A file could not be read or written.
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
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A key of a JSON file holds a value of the wrong kind.
    #[error("{path}: key `{key}`: expected {expected}, found {found}")]
    InvalidValue {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What the key must hold.
        expected: String,
        /// What it holds.
        found: String,
    },
    /// The safetensors file is malformed (header, sizes, offsets).
    #[error("{path}: invalid safetensors file: {message}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A tensor has a dtype the reader does not convert.
    #[error("{path}: tensor `{key}` has dtype {dtype}; expected F32, F16 or BF16")]
    UnsupportedDtype {
        /// The file.
        path: PathBuf,
        /// The tensor key.
        key: String,
        /// Its dtype.
        dtype: String,
    },
    /// A tensor contains NaN or infinite values.
    #[error("{path}: tensor `{key}` contains non-finite values")]
    NonFinite {
        /// The file.
        path: PathBuf,
        /// The tensor key.
        key: String,
    },
    /// A model directory has neither `model.safetensors` nor `model.safetensors.index.json`.
    #[error("{dir}: no model.safetensors or model.safetensors.index.json")]
    NoWeights {
        /// The directory.
        dir: PathBuf,
    },
}

impl HfFileError {
    /// The error for `path` that `serde_json` reported, with its line and column.
    ///
    /// ```
    /// let parsed = serde_json::from_str::<serde_json::Value>("{\"r\": 8,}");
    /// let err = lora_hf::HfFileError::json("adapter_config.json".as_ref(), &parsed.unwrap_err());
    /// assert!(matches!(err, lora_hf::HfFileError::Json { line: 1, .. }));
    /// ```
    pub fn json(path: &std::path::Path, error: &serde_json::Error) -> Self {
        Self::Json {
            path: path.to_path_buf(),
            line: error.line(),
            column: error.column(),
            message: error.to_string(),
        }
    }

    /// The error for `path` that the operating system reported.
    ///
    /// ```
    /// let source = std::fs::read("/nonexistent-file").unwrap_err();
    /// let err = lora_hf::HfFileError::io("/nonexistent-file".as_ref(), source);
    /// assert!(err.to_string().starts_with("/nonexistent-file: "));
    /// ```
    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The error for a value of the wrong kind under `key` of the JSON file `path`: what the key
    /// must hold and the JSON text of what it holds.
    ///
    /// ```
    /// let found = serde_json::json!(-1);
    /// let err = lora_hf::HfFileError::invalid_value(
    ///     "config.json".as_ref(), "d_model", "a positive integer", &found);
    /// assert_eq!(err.to_string(), "config.json: key `d_model`: expected a positive integer, found -1");
    /// ```
    pub fn invalid_value(
        path: &std::path::Path,
        key: &str,
        expected: &str,
        found: &serde_json::Value,
    ) -> Self {
        Self::InvalidValue {
            path: path.to_path_buf(),
            key: key.to_string(),
            expected: expected.to_string(),
            found: crate::json_config::describe(found),
        }
    }
}
