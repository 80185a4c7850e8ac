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
    ///
    /// # Errors
    /// [`T5Error::Tokenizer`] naming the file when it cannot be read or is not a tokenizer.
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

    /// Trains a T5-style tokenizer on `texts`: a Unigram model of `vocab_size` pieces with
    /// `<pad>` = 0, `</s>` = 1, `<unk>` = 2, a Metaspace pre-tokenizer and decoder, and a
    /// post-processor appending `</s>`, as Hugging Face's T5 `tokenizer.json` has.
    ///
    /// ```
    /// use lora_t5::T5Tokenizer;
    ///
    /// let texts: Vec<String> = (0..50).map(|i| format!("顶部搜索 {i} 两列商品卡")).collect();
    /// let tokenizer = T5Tokenizer::train_unigram(&texts, 60).unwrap();
    /// let ids = tokenizer.encode("顶部搜索").unwrap();
    /// assert_eq!(ids.last(), Some(&1));
    /// assert_eq!(tokenizer.decode(&ids).unwrap(), "顶部搜索");
    /// ```
    ///
    /// # Errors
    /// [`T5Error::Tokenizer`] when there are no texts, the vocabulary is too small for the
    /// special tokens, or the trainer fails.
    pub fn train_unigram(texts: &[String], vocab_size: usize) -> Result<Self, T5Error> {
        use tokenizers::decoders::metaspace::Metaspace as MetaspaceDecoder;
        use tokenizers::models::unigram::{Unigram, UnigramTrainer};
        use tokenizers::models::TrainerWrapper;
        use tokenizers::pre_tokenizers::metaspace::Metaspace;
        use tokenizers::processors::template::TemplateProcessing;
        use tokenizers::AddedToken;

        let path = PathBuf::from("<trained unigram tokenizer>");
        let error = |message: String| T5Error::Tokenizer {
            path: path.clone(),
            message,
        };
        let specials = ["<pad>", "</s>", "<unk>"];
        let mut trainer: TrainerWrapper = UnigramTrainer::builder()
            .vocab_size(vocab_size as u32)
            .special_tokens(
                specials
                    .iter()
                    .map(|t| AddedToken::from(*t, true))
                    .collect(),
            )
            .unk_token(Some("<unk>".to_string()))
            .show_progress(false)
            .build()
            .map_err(|e| error(e.to_string()))?
            .into();
        let mut inner = tokenizers::Tokenizer::new(Unigram::default());
        inner.with_pre_tokenizer(Some(Metaspace::default()));
        inner.with_decoder(Some(MetaspaceDecoder::default()));
        inner
            .train(&mut trainer, texts.iter())
            .map_err(|e| error(e.to_string()))?;
        let eos = inner
            .token_to_id("</s>")
            .ok_or_else(|| error("the trained vocabulary has no </s>".into()))?;
        let processor = TemplateProcessing::builder()
            .try_single("$A </s>")
            .map_err(error)?
            .special_tokens(vec![("</s>", eos)])
            .build()
            .map_err(|e| error(e.to_string()))?;
        inner.with_post_processor(Some(processor));
        for token in specials {
            inner.add_special_tokens(&[AddedToken::from(token, true)]);
        }
        Ok(Self { inner, path })
    }

    /// The wrapped tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text`, with the special tokens the post-processor adds (`</s>`).
    ///
    /// # Errors
    /// [`T5Error::Tokenizer`] when the tokenizer fails on `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, T5Error> {
        self.inner
            .encode(text, true)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| self.error(e))
    }

    /// Text of `ids`, skipping special tokens.
    ///
    /// # Errors
    /// [`T5Error::Tokenizer`] when the tokenizer fails on `ids` (an id outside its vocabulary).
    pub fn decode(&self, ids: &[u32]) -> Result<String, T5Error> {
        self.inner.decode(ids, true).map_err(|e| self.error(e))
    }

    /// Writes the tokenizer as `tokenizer.json`.
    ///
    /// # Errors
    /// [`T5Error::Tokenizer`] naming the file when it cannot be written.
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
