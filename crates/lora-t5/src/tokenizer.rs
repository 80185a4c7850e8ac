//! The Hugging Face `tokenizer.json` of a T5 checkpoint.

use std::path::{Path, PathBuf};

use crate::T5Error;

/// A T5 tokenizer read from `tokenizer.json` (the `tokenizers` crate): encoding appends `</s>`
/// as the checkpoint's post-processor says; decoding skips special tokens.
#[derive(Debug, Clone)]
pub struct T5Tokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    /// The longest vocabulary entry, in characters (at least 1).
    longest_piece: usize,
}

/// Runs `f`, turning a panic into its message. tokenizers 0.22 panics instead of failing on
/// some malformed files: at loading (a syntax error inside `decoder`) and at encoding (a
/// template naming a special token its post-processor does not define).
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "the tokenizers crate panicked".to_string())
    })
}

/// The longest entry of `inner`'s vocabulary in characters, at least 1.
fn longest_piece(inner: &tokenizers::Tokenizer) -> usize {
    inner
        .get_vocab(true)
        .keys()
        .map(|piece| piece.chars().count())
        .max()
        .unwrap_or(1)
        .max(1)
}

impl T5Tokenizer {
    /// Reads `tokenizer.json`.
    ///
    /// # Errors
    /// [`T5Error::File`] naming the file when it cannot be read, and every error of
    /// [`from_json_str`](Self::from_json_str).
    pub fn from_file(path: &Path) -> Result<Self, T5Error> {
        let text = std::fs::read_to_string(path).map_err(|e| lora_hf::HfFileError::io(path, e))?;
        Self::from_json_str(&text, path)
    }

    /// Parses the text of a `tokenizer.json`; `path` names it in errors.
    ///
    /// tokenizers 0.22 panics instead of failing on some malformed files (a JSON syntax error
    /// inside `decoder` meets an `expect` in its deserializer): such a panic is caught here
    /// and reported as the error it should have been, as are its panics in
    /// [`encode`](Self::encode) and [`decode`](Self::decode).
    ///
    /// ```
    /// use lora_t5::{T5Error, T5Tokenizer};
    ///
    /// let err = T5Tokenizer::from_json_str(r#"{"decoder": {"type": ]}"#, "tokenizer.json".as_ref());
    /// assert!(matches!(err, Err(T5Error::Tokenizer { .. })));
    /// ```
    ///
    /// # Errors
    /// [`T5Error::Tokenizer`] naming the file when the text is not a tokenizer.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, T5Error> {
        use std::str::FromStr;
        let error = |message: String| T5Error::Tokenizer {
            path: path.to_path_buf(),
            message,
        };
        match guarded(|| tokenizers::Tokenizer::from_str(text)) {
            Ok(Ok(inner)) => Ok(Self::from_tokenizer(inner, path)),
            Ok(Err(e)) => Err(error(e.to_string())),
            Err(message) => Err(error(format!("not a valid tokenizer: {message}"))),
        }
    }

    /// Wraps a tokenizer built in memory; `path` names it in errors.
    pub fn from_tokenizer(inner: tokenizers::Tokenizer, path: &Path) -> Self {
        Self {
            longest_piece: longest_piece(&inner),
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
        use tokenizers::pre_tokenizers::metaspace::Metaspace;
        use tokenizers::{
            AddedToken, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
        };

        let path = PathBuf::from("<trained unigram tokenizer>");
        let error = |message: String| T5Error::Tokenizer {
            path: path.clone(),
            message,
        };
        let specials = ["<pad>", "</s>", "<unk>"];
        let trainer = UnigramTrainer::builder()
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
            .map_err(|e| error(e.to_string()))?;
        // `Tokenizer::train` counts the words in a hash map, whose order changes from process to
        // process, and sums the E-step over as many chunks as there are threads, so the learnt
        // scores (and the pieces kept on a tie) differ between runs. Here the words are counted
        // in sorted order and the trainer runs on one thread: the same texts give the same
        // tokenizer on every run and every machine.
        let pre_tokenizer = Metaspace::default();
        let mut counts = std::collections::BTreeMap::<String, u32>::new();
        for text in texts {
            let mut words = PreTokenizedString::from(text.as_str());
            pre_tokenizer
                .pre_tokenize(&mut words)
                .map_err(|e| error(e.to_string()))?;
            for (word, _, _) in words.get_splits(OffsetReferential::Original, OffsetType::Byte) {
                *counts.entry(word.to_owned()).or_default() += 1;
            }
        }
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .map_err(|e| error(e.to_string()))?;
        let mut trained = Unigram::default();
        let trained_specials = one_thread
            .install(|| trainer.do_train(counts.into_iter().collect(), &mut trained))
            .map_err(|e| error(e.to_string()))?;
        let vocabulary = canonical_vocabulary(&trained, specials.len());
        let model = Unigram::from(vocabulary, Some(2), trained.byte_fallback())
            .map_err(|e| error(e.to_string()))?;
        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(MetaspaceDecoder::default()));
        append_eos(&mut inner, &trained_specials).map_err(error)?;
        for token in specials {
            inner.add_special_tokens(&[AddedToken::from(token, true)]);
        }
        Ok(Self::from_tokenizer(inner, &path))
    }

    /// Trains a byte-pair-encoding tokenizer with `vocab_size` entries on `texts`, with T5's
    /// special tokens (`<pad>` 0, `</s>` 1, `<unk>` 2) and `</s>` appended to every encoding.
    ///
    /// Before the merges are learnt, each run of punctuation and symbols (anything but letters,
    /// digits, `_`, `-` and spaces, e.g. `":"`, `"},{"`, `、`) is split off as its own word, so
    /// that no token spans a boundary of JSON syntax or a clause: `"position":"top"` is
    /// `"`, `position`, `":"`, `top`, `"` whatever follows it. Spaces are kept as `▁` (Metaspace,
    /// prepended to the first word only), so decoding gives back the text. The same texts give
    /// the same tokenizer on every run.
    ///
    /// ```
    /// use lora_t5::T5Tokenizer;
    ///
    /// let texts: Vec<String> = (0..50)
    ///     .map(|i| format!(r#"{{"position":"top","n":{i}}} 顶部搜索，两列商品卡"#))
    ///     .collect();
    /// let tokenizer = T5Tokenizer::train_bpe(&texts, 80).unwrap();
    /// let ids = tokenizer.encode(&texts[3]).unwrap();
    /// assert_eq!(ids.last(), Some(&1));
    /// assert_eq!(tokenizer.decode(&ids).unwrap(), texts[3]);
    /// let pieces = tokenizer.inner().encode(r#"{"position":"top"}"#, false).unwrap();
    /// assert!(pieces.get_tokens().iter().any(|t| t == "position"));
    /// ```
    ///
    /// # Errors
    /// [`T5Error::Tokenizer`] when there are no texts, the vocabulary is too small for the
    /// special tokens, or the trainer fails.
    pub fn train_bpe(texts: &[String], vocab_size: usize) -> Result<Self, T5Error> {
        use tokenizers::decoders::metaspace::Metaspace as MetaspaceDecoder;
        use tokenizers::models::bpe::{BpeTrainer, BPE};
        use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
        use tokenizers::pre_tokenizers::sequence::Sequence;
        use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
        use tokenizers::pre_tokenizers::PreTokenizerWrapper;
        use tokenizers::{
            AddedToken, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
            SplitDelimiterBehavior, Trainer,
        };

        let path = PathBuf::from("<trained BPE tokenizer>");
        let error = |message: String| T5Error::Tokenizer {
            path: path.clone(),
            message,
        };
        let specials = ["<pad>", "</s>", "<unk>"];
        if texts.is_empty() {
            return Err(error("no texts to train on".into()));
        }
        if vocab_size <= specials.len() {
            return Err(error(format!(
                "a vocabulary of {vocab_size} leaves no room beside the {} special tokens",
                specials.len()
            )));
        }
        let punctuation = Split::new(
            SplitPattern::Regex(r"[^\w\s-]+".into()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| error(e.to_string()))?;
        let pre_tokenizer = Sequence::new(vec![
            PreTokenizerWrapper::Split(punctuation),
            PreTokenizerWrapper::Metaspace(Metaspace::new('▁', PrependScheme::First, true)),
        ]);
        let mut trainer = BpeTrainer::builder()
            .vocab_size(vocab_size)
            .special_tokens(
                specials
                    .iter()
                    .map(|t| AddedToken::from(*t, true))
                    .collect(),
            )
            .show_progress(false)
            .build();
        trainer
            .feed(texts.iter(), |text| {
                let mut words = PreTokenizedString::from(text);
                pre_tokenizer.pre_tokenize(&mut words)?;
                Ok(words
                    .get_splits(OffsetReferential::Original, OffsetType::Byte)
                    .into_iter()
                    .map(|(word, _, _)| word.to_owned())
                    .collect())
            })
            .map_err(|e| error(e.to_string()))?;
        let mut model = BPE::builder()
            .unk_token("<unk>".into())
            .build()
            .map_err(|e| error(e.to_string()))?;
        let trained_specials = trainer
            .train(&mut model)
            .map_err(|e| error(e.to_string()))?;
        let mut inner = tokenizers::Tokenizer::new(model);
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(MetaspaceDecoder::new('▁', PrependScheme::First, true)));
        append_eos(&mut inner, &trained_specials).map_err(error)?;
        Ok(Self::from_tokenizer(inner, &path))
    }

    /// The wrapped tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Token ids of `text`, with the special tokens the post-processor adds (`</s>`).
    ///
    /// # Errors
    /// [`T5Error::Tokenizer`] when the tokenizer fails (or panics) on `text`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, T5Error> {
        guarded(|| self.inner.encode(text, true))
            .map_err(|message| self.panicked(&message))?
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| self.error(e))
    }

    /// Token ids of `text` without the special tokens the post-processor adds
    /// (transformers' `add_special_tokens=False`): the form `bad_words_ids` takes.
    ///
    /// ```
    /// use lora_t5::T5Tokenizer;
    ///
    /// let texts: Vec<String> = (0..20).map(|i| format!("顶部搜索 {i}")).collect();
    /// let tokenizer = T5Tokenizer::train_unigram(&texts, 40).unwrap();
    /// let with_eos = tokenizer.encode("顶部搜索").unwrap();
    /// assert_eq!(tokenizer.encode_without_special_tokens("顶部搜索").unwrap(), with_eos[..with_eos.len() - 1]);
    /// ```
    ///
    /// # Errors
    /// [`T5Error::Tokenizer`] when the tokenizer fails (or panics) on `text`.
    pub fn encode_without_special_tokens(&self, text: &str) -> Result<Vec<u32>, T5Error> {
        guarded(|| self.inner.encode(text, false))
            .map_err(|message| self.panicked(&message))?
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| self.error(e))
    }

    /// Token ids of the beginning of `text`, reading at most the characters `max_tokens` tokens
    /// can cover, so that a huge text costs what a short one does. Returns the ids (with
    /// `</s>`) and whether `text` was cut; when it was, it certainly has more than `max_tokens`
    /// tokens, and the ids are those of its first characters.
    ///
    /// The bound is `(max_tokens + 1) × longest piece × 4` characters: no token covers more
    /// characters than the longest piece, and the factor 4 covers what normalization and the
    /// word-start marker can change. Unigram segments each word on its own, and a cut this far
    /// past the kept tokens leaves the first `max_tokens` ids as the whole text's.
    ///
    /// ```
    /// use lora_t5::T5Tokenizer;
    ///
    /// let texts: Vec<String> = (0..50).map(|i| format!("顶部搜索 {i} 两列商品卡")).collect();
    /// let tokenizer = T5Tokenizer::train_unigram(&texts, 60).unwrap();
    /// let long = "顶部搜索 两列商品卡 ".repeat(100_000);
    /// let (ids, cut) = tokenizer.encode_bounded(&long, 16).unwrap();
    /// assert!(cut && ids.len() > 16 && ids.len() < 2_000);
    /// assert_eq!(tokenizer.encode_bounded("顶部搜索", 16).unwrap(), (tokenizer.encode("顶部搜索").unwrap(), false));
    /// ```
    ///
    /// # Errors
    /// [`T5Error::Tokenizer`] when the tokenizer fails on the text.
    pub fn encode_bounded(
        &self,
        text: &str,
        max_tokens: usize,
    ) -> Result<(Vec<u32>, bool), T5Error> {
        let limit = max_tokens
            .saturating_add(1)
            .saturating_mul(self.longest_piece)
            .saturating_mul(4);
        match text.char_indices().nth(limit) {
            Some((end, _)) => Ok((self.encode(&text[..end])?, true)),
            None => Ok((self.encode(text)?, false)),
        }
    }

    /// Text of `ids`, skipping special tokens.
    ///
    /// # Errors
    /// [`T5Error::Tokenizer`] when the tokenizer fails (or panics) on `ids` (an id outside its
    /// vocabulary).
    pub fn decode(&self, ids: &[u32]) -> Result<String, T5Error> {
        guarded(|| self.inner.decode(ids, true))
            .map_err(|message| self.panicked(&message))?
            .map_err(|e| self.error(e))
    }

    /// Writes the tokenizer as `tokenizer.json`, atomically (a reader sees the old file or the
    /// new one).
    ///
    /// # Errors
    /// [`T5Error::Tokenizer`] when it cannot be serialised, [`T5Error::File`] naming the file
    /// when it cannot be written (the old file then stays).
    pub fn save(&self, path: &Path) -> Result<(), T5Error> {
        let text = self.inner.to_string(false).map_err(|e| self.error(e))?;
        Ok(lora_hf::write_atomic(path, text.as_bytes())?)
    }

    /// Size of the vocabulary, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// A panic of the tokenizers crate, as the error it should have been.
    fn panicked(&self, message: &str) -> T5Error {
        T5Error::Tokenizer {
            path: self.path.clone(),
            message: format!("the tokenizer cannot handle this input: {message}"),
        }
    }

    fn error(&self, e: tokenizers::Error) -> T5Error {
        T5Error::Tokenizer {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }
}

/// The vocabulary of a trained Unigram model with what the trainer leaves to its hash sets'
/// order made fixed: the characters every word needs but the trained model lost get the scores
/// `lowest + k·1e-4` in set order (tokenizers' `UnigramTrainer::finalize`), and pieces of equal
/// score keep their insertion order. Here those characters take the same scores in character
/// order, and the pieces are sorted by score, then by text. The first `specials` entries stay.
fn canonical_vocabulary(
    trained: &tokenizers::models::unigram::Unigram,
    specials: usize,
) -> Vec<(String, f64)> {
    const PENALTY_STEP: f64 = 0.0001;
    let mut vocabulary: Vec<(String, f64)> = trained.iter().cloned().collect();
    let mut pieces = vocabulary.split_off(specials.min(vocabulary.len()));
    let lowest = pieces.iter().map(|(_, s)| *s).fold(f64::INFINITY, f64::min);
    // The trainer's scores for lost characters, summed step by step as it does.
    let mut ladder = Vec::with_capacity(pieces.len());
    let mut penalty = 0.0;
    for _ in 0..pieces.len() {
        ladder.push(lowest + penalty);
        penalty += PENALTY_STEP;
    }
    let on_ladder = |score: f64| {
        let step = ((score - lowest) / PENALTY_STEP).round();
        step >= 0.0 && ladder.get(step as usize) == Some(&score)
    };
    let mut lost: Vec<usize> = (0..pieces.len())
        .filter(|&i| pieces[i].0.chars().count() == 1 && on_ladder(pieces[i].1))
        .collect();
    let mut scores: Vec<f64> = lost.iter().map(|&i| pieces[i].1).collect();
    scores.sort_by(f64::total_cmp);
    lost.sort_by(|&a, &b| pieces[a].0.cmp(&pieces[b].0));
    for (i, score) in lost.into_iter().zip(scores) {
        pieces[i].1 = score;
    }
    pieces.sort_by(|(a, x), (b, y)| y.total_cmp(x).then_with(|| a.cmp(b)));
    vocabulary.extend(pieces);
    vocabulary
}

/// Adds a trained tokenizer's special tokens and the post-processor that ends every encoding
/// with `</s>`, as T5's tokenizer does.
fn append_eos(
    inner: &mut tokenizers::Tokenizer,
    specials: &[tokenizers::AddedToken],
) -> Result<(), String> {
    use tokenizers::processors::template::TemplateProcessing;
    inner.add_special_tokens(specials);
    let eos = inner
        .token_to_id("</s>")
        .ok_or_else(|| "the trained vocabulary has no </s>".to_string())?;
    let processor = TemplateProcessing::builder()
        .try_single("$A </s>")?
        .special_tokens(vec![("</s>", eos)])
        .build()
        .map_err(|e| e.to_string())?;
    inner.with_post_processor(Some(processor));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus() -> Vec<String> {
        (0..200)
            .map(|i| {
                format!(
                    "页面 {} 顶部搜索栏，{} 列商品卡，底部导航 {}",
                    i % 7,
                    i % 3 + 1,
                    i % 11
                )
            })
            .collect()
    }

    #[test]
    fn training_twice_on_the_same_texts_gives_the_same_tokenizer() {
        let first = T5Tokenizer::train_unigram(&corpus(), 80).unwrap();
        let second = T5Tokenizer::train_unigram(&corpus(), 80).unwrap();
        let json = |t: &T5Tokenizer| t.inner().to_string(false).unwrap();
        assert_eq!(json(&first), json(&second));
    }

    #[test]
    fn a_trained_tokenizer_has_t5s_special_ids() {
        let tokenizer = T5Tokenizer::train_unigram(&corpus(), 80).unwrap();
        let ids: Vec<_> = ["<pad>", "</s>", "<unk>"]
            .iter()
            .map(|t| tokenizer.inner().token_to_id(t))
            .collect();
        assert_eq!(ids, [Some(0), Some(1), Some(2)]);
    }
}
