//! The Hugging Face `tokenizer.json` of a T5 checkpoint.

use std::path::{Path, PathBuf};

use crate::T5Error;

/// A T5 tokenizer read from `tokenizer.json` (the `tokenizers` crate): encoding appends `</s>`
/// as the checkpoint's post-processor says; decoding skips special tokens.
#[derive(Debug, Clone)]
pub struct T5Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
}

impl T5Tokenizer {
    /// Reads `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self, T5Error> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| T5Error::Tokenizer {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// Wraps a tokenizer built in memory; `path` names it in errors.
    pub fn from_tokenizer(inner: tokenizers::Tokenizer, path: &Path) -> Self {
        Self {
            inner,
            path: path.to_path_buf(),
        }
    }

    /// The wrapped tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text`, with the special tokens the post-processor adds (`</s>`).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, T5Error> {
        self.inner
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| self.error(e))
    }

    /// Text of `ids`, skipping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, T5Error> {
        self.inner.decode(ids, true).map_err(|e| self.error(e))
    }

    /// Writes the tokenizer as `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<(), T5Error> {
        self.inner.save(path, false).map_err(|e| self.error(e))
    }

    /// Size of the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    fn error(&self, e: tokenizers::Error) -> T5Error {
        T5Error::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}
