//! The decoding settings, with transformers' names, defaults and `generation_config.json`.

use std::path::Path;

use lora_hf::{checked, json_config_from_value, parse_json_object, HfFileError};
use serde::Deserialize;
use serde_json::Value;

use crate::{GenerationError, SpecialTokens};

/// The file name of a checkpoint's generation defaults.
pub const GENERATION_CONFIG_FILE: &str = "generation_config.json";

/// When beam search stops (transformers' `early_stopping`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EarlyStopping {
    /// Stop as soon as `num_beams` hypotheses are finished (`True`).
    Immediate,
    /// Stop when no running beam is likely to beat the finished ones (`False`, the default).
    #[default]
    Heuristic,
    /// Stop only when no running beam can beat the finished ones (`"never"`).
    Never,
}

/// How [`generate`](crate::generate) decodes, with transformers' names and semantics.
///
/// The defaults are transformers' (greedy; `top_k` 50 when sampling), except that the length
/// is counted in new tokens (20), not in decoder positions. A checkpoint's
/// `generation_config.json` gives a model's own defaults ([`from_file`](Self::from_file)); a
/// call overrides fields with struct update syntax.
///
/// ```
/// use lora_generate::GenerationConfig;
///
/// let beam = GenerationConfig { num_beams: 4, max_new_tokens: 32, ..GenerationConfig::default() };
/// let sample = GenerationConfig { repetition_penalty: 1.2, ..GenerationConfig::default() }
///     .sampling(0.7, 50, 0.9, 42);
/// assert!(sample.do_sample && !beam.do_sample);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    /// Most tokens to generate after the decoder start token (`max_new_tokens`; a file's
    /// `max_length` counts the start token too).
    pub max_new_tokens: usize,
    /// End-of-sequence is forbidden before this many new tokens (`min_new_tokens`, or a file's
    /// `min_length` − 1).
    pub min_new_tokens: usize,
    /// Beams (1: greedy or sampling).
    pub num_beams: usize,
    /// Sequences returned per prompt: the best finished beams, or independent samples.
    pub num_return_sequences: usize,
    /// Beam scores are `sum_logprob / length^length_penalty`.
    pub length_penalty: f32,
    /// Beam-search stopping rule.
    pub early_stopping: EarlyStopping,
    /// Sample instead of taking the most likely token.
    pub do_sample: bool,
    /// Sampling temperature.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens when sampling (0: all).
    pub top_k: usize,
    /// Keep the smallest set of tokens with probability mass `top_p` when sampling (1: all).
    pub top_p: f32,
    /// Keep tokens at least `min_p` times as likely as the most likely one when sampling.
    pub min_p: Option<f32>,
    /// Locally typical sampling's mass (1: off).
    pub typical_p: f32,
    /// Drop tokens less likely than this when sampling (0: off).
    pub epsilon_cutoff: f32,
    /// Eta sampling's cutoff (0: off).
    pub eta_cutoff: f32,
    /// Scores of tokens already in the decoder sequence are divided (positive) or multiplied
    /// (negative) by this (1: off).
    pub repetition_penalty: f32,
    /// The same for tokens of the encoder input, with the inverse penalty (1: off).
    pub encoder_repetition_penalty: f32,
    /// No n-gram of this size appears twice in a decoder sequence (0: off).
    pub no_repeat_ngram_size: usize,
    /// No n-gram of this size of the encoder input appears in the decoder sequence (0: off).
    pub encoder_no_repeat_ngram_size: usize,
    /// Token sequences that are never generated (end-of-sequence ids are left out).
    pub bad_words_ids: Vec<Vec<u32>>,
    /// The token forced as the first new token.
    pub forced_bos_token_id: Option<u32>,
    /// The tokens forced as the last new token when `max_new_tokens` is reached (any of them).
    pub forced_eos_token_id: Vec<u32>,
    /// Tokens never generated.
    pub suppress_tokens: Vec<u32>,
    /// Tokens not generated as the first new token (the second when `forced_bos_token_id`).
    pub begin_suppress_tokens: Vec<u32>,
    /// Stop every sequence after this many seconds (checked after each step).
    pub max_time: Option<f64>,
    /// Stop a sequence when its text comes to contain one of these, overlapping its last
    /// token; needs a decoding function ([`GenerateOptions::stop_strings`](crate::GenerateOptions)).
    pub stop_strings: Vec<String>,
    /// Return the processed scores of every step ([`GenerateOutput::scores`](crate::GenerateOutput)).
    pub output_scores: bool,
    /// Seed of the sampling random numbers (a xoshiro256++ stream; one uniform per row and
    /// step).
    pub seed: u64,
    /// Overrides the model's decoder start token.
    pub decoder_start_token_id: Option<u32>,
    /// Overrides the model's end-of-sequence ids.
    pub eos_token_id: Option<Vec<u32>>,
    /// Overrides the model's padding id.
    pub pad_token_id: Option<u32>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 20,
            min_new_tokens: 0,
            num_beams: 1,
            num_return_sequences: 1,
            length_penalty: 1.0,
            early_stopping: EarlyStopping::Heuristic,
            do_sample: false,
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            min_p: None,
            typical_p: 1.0,
            epsilon_cutoff: 0.0,
            eta_cutoff: 0.0,
            repetition_penalty: 1.0,
            encoder_repetition_penalty: 1.0,
            no_repeat_ngram_size: 0,
            encoder_no_repeat_ngram_size: 0,
            bad_words_ids: Vec::new(),
            forced_bos_token_id: None,
            forced_eos_token_id: Vec::new(),
            suppress_tokens: Vec::new(),
            begin_suppress_tokens: Vec::new(),
            max_time: None,
            stop_strings: Vec::new(),
            output_scores: false,
            seed: 0,
            decoder_start_token_id: None,
            eos_token_id: None,
            pad_token_id: None,
        }
    }
}

/// Options of `generation_config.json` that change the output and that this crate does not
/// implement: a file setting one of them is refused rather than decoded otherwise.
const UNSUPPORTED: &[&str] = &[
    "num_beam_groups",
    "diversity_penalty",
    "penalty_alpha",
    "guidance_scale",
    "sequence_bias",
    "exponential_decay_length_penalty",
    "watermarking_config",
    "remove_invalid_values",
    "renormalize_logits",
    "top_h",
    "constraints",
    "force_words_ids",
    "token_healing",
    "dola_layers",
    "prompt_lookup_num_tokens",
];

/// The values of those options that mean "off".
fn is_off(key: &str, value: &Value) -> bool {
    match (key, value) {
        (_, Value::Null) | (_, Value::Bool(false)) => true,
        ("num_beam_groups", v) | ("guidance_scale", v) => v.as_f64() == Some(1.0),
        ("diversity_penalty", v) | ("penalty_alpha", v) => v.as_f64() == Some(0.0),
        (_, Value::Array(items)) => items.is_empty(),
        _ => false,
    }
}

impl GenerationConfig {
    /// The most beams a search may keep: each step scores `num_beams × vocab_size` candidates
    /// per prompt.
    pub const MAX_NUM_BEAMS: usize = 1024;
    /// The most new tokens one call may generate: the key/value cache grows by one position
    /// per token, and a model that never emits EOS runs to this bound.
    pub const MAX_NEW_TOKENS: usize = 65_536;
    /// The most sequences returned per prompt.
    pub const MAX_RETURN_SEQUENCES: usize = 1024;

    /// This configuration with sampling on.
    pub fn sampling(self, temperature: f32, top_k: usize, top_p: f32, seed: u64) -> Self {
        Self {
            do_sample: true,
            temperature,
            top_k,
            top_p,
            seed,
            ..self
        }
    }

    /// Reads a checkpoint's `generation_config.json`: its values over the defaults.
    ///
    /// ```
    /// let dir = std::env::temp_dir().join("lora-generate-doc-from-file");
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("generation_config.json");
    /// std::fs::write(&path, r#"{"decoder_start_token_id": 0, "eos_token_id": [1], "max_length": 33, "num_beams": 4}"#).unwrap();
    /// let config = lora_generate::GenerationConfig::from_file(&path).unwrap();
    /// assert_eq!((config.max_new_tokens, config.num_beams), (32, 4));
    /// ```
    ///
    /// # Errors
    /// [`GenerationError::File`] when the file cannot be read or holds a bad value (naming the
    /// key and what it must hold), or sets an option this crate does not implement.
    pub fn from_file(path: &Path) -> Result<Self, GenerationError> {
        Self::from_file_over(path, Self::default())
    }

    /// [`from_file`](Self::from_file) with `base` in place of the defaults: the file's values
    /// over `base`'s (a tool's own defaults, such as a longer `max_new_tokens`).
    ///
    /// ```
    /// use lora_generate::GenerationConfig;
    ///
    /// let dir = std::env::temp_dir().join("lora-generate-doc-from-file-over");
    /// std::fs::create_dir_all(&dir).unwrap();
    /// let path = dir.join("generation_config.json");
    /// std::fs::write(&path, r#"{"eos_token_id": 1}"#).unwrap();
    /// let base = GenerationConfig { max_new_tokens: 96, ..GenerationConfig::default() };
    /// let config = GenerationConfig::from_file_over(&path, base).unwrap();
    /// assert_eq!((config.max_new_tokens, config.eos_token_id), (96, Some(vec![1])));
    /// ```
    ///
    /// # Errors
    /// As [`from_file`](Self::from_file).
    pub fn from_file_over(path: &Path, base: Self) -> Result<Self, GenerationError> {
        let text = std::fs::read_to_string(path).map_err(|e| HfFileError::io(path, e))?;
        Self::from_json_str_over(&text, path, base)
    }

    /// [`from_file`](Self::from_file) on the text of the file; `path` names it in errors.
    ///
    /// ```
    /// use lora_generate::GenerationConfig;
    ///
    /// let file = "generation_config.json".as_ref();
    /// let config = GenerationConfig::from_json_str(r#"{"top_p": 0.9, "do_sample": true}"#, file).unwrap();
    /// assert!(config.do_sample && config.top_p == 0.9);
    /// let err = GenerationConfig::from_json_str(r#"{"num_beam_groups": 2}"#, file).unwrap_err();
    /// assert!(err.to_string().contains("num_beam_groups"));
    /// ```
    ///
    /// # Errors
    /// As [`from_file`](Self::from_file).
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, GenerationError> {
        Self::from_json_str_over(text, path, Self::default())
    }

    /// The values of a `generation_config.json` text over `base`'s.
    fn from_json_str_over(text: &str, path: &Path, base: Self) -> Result<Self, GenerationError> {
        let map = parse_json_object(text, path)?;
        for key in UNSUPPORTED {
            if let Some(value) = map.get(*key).filter(|v| !is_off(key, v)) {
                return Err(HfFileError::invalid_value(
                    path,
                    key,
                    "its default: this option is not implemented",
                    value,
                )
                .into());
            }
        }
        let file: GenerationConfigFile = json_config_from_value(&Value::Object(map), path)?;
        Ok(file.over(base))
    }

    /// Checks what can be checked without a model.
    pub(crate) fn validate(&self) -> Result<(), GenerationError> {
        let invalid = |reason: String| Err(GenerationError::invalid(reason));
        if !(1..=Self::MAX_NEW_TOKENS).contains(&self.max_new_tokens) {
            return invalid(format!(
                "max_new_tokens must be in 1..={}, got {}",
                Self::MAX_NEW_TOKENS,
                self.max_new_tokens
            ));
        }
        if !(1..=Self::MAX_NUM_BEAMS).contains(&self.num_beams) {
            return invalid(format!(
                "num_beams must be in 1..={}, got {}",
                Self::MAX_NUM_BEAMS,
                self.num_beams
            ));
        }
        if !(1..=Self::MAX_RETURN_SEQUENCES).contains(&self.num_return_sequences) {
            return invalid(format!(
                "num_return_sequences must be in 1..={}, got {}",
                Self::MAX_RETURN_SEQUENCES,
                self.num_return_sequences
            ));
        }
        if self.num_beams > 1 && self.num_return_sequences > self.num_beams {
            return invalid(format!(
                "num_return_sequences ({}) must not exceed num_beams ({})",
                self.num_return_sequences, self.num_beams
            ));
        }
        if self.num_beams == 1 && !self.do_sample && self.num_return_sequences > 1 {
            return invalid(
                "greedy search returns one sequence per prompt: set do_sample or num_beams \
                 for num_return_sequences > 1"
                    .into(),
            );
        }
        if self.min_new_tokens > self.max_new_tokens {
            return invalid(format!(
                "min_new_tokens ({}) must not exceed max_new_tokens ({})",
                self.min_new_tokens, self.max_new_tokens
            ));
        }
        if self.do_sample && self.num_beams > 1 {
            return invalid(
                "beam sampling is not supported: use num_beams = 1 with do_sample".into(),
            );
        }
        if self.do_sample && !(self.temperature > 0.0 && self.temperature.is_finite()) {
            return invalid(format!(
                "temperature must be positive, got {}",
                self.temperature
            ));
        }
        let probability = |name: &str, value: f32, closed: bool| {
            let ok = value > 0.0 && (value < 1.0 || (closed && value == 1.0));
            if ok {
                Ok(())
            } else {
                let range = if closed { "(0, 1]" } else { "(0, 1)" };
                invalid(format!("{name} must be in {range}, got {value}"))
            }
        };
        probability("top_p", self.top_p, true)?;
        probability("typical_p", self.typical_p, true)?;
        if let Some(min_p) = self.min_p {
            if !(0.0..=1.0).contains(&min_p) {
                return invalid(format!("min_p must be in [0, 1], got {min_p}"));
            }
        }
        for (name, value) in [
            ("epsilon_cutoff", self.epsilon_cutoff),
            ("eta_cutoff", self.eta_cutoff),
        ] {
            if !(0.0..1.0).contains(&value) {
                return invalid(format!("{name} must be in [0, 1), got {value}"));
            }
        }
        for (name, value) in [
            ("repetition_penalty", self.repetition_penalty),
            (
                "encoder_repetition_penalty",
                self.encoder_repetition_penalty,
            ),
        ] {
            if !(value > 0.0 && value.is_finite()) {
                return invalid(format!("{name} must be positive and finite, got {value}"));
            }
        }
        if !self.length_penalty.is_finite() {
            return invalid("length_penalty must be finite".into());
        }
        if let Some(max_time) = self.max_time {
            if !(max_time > 0.0 && max_time.is_finite()) {
                return invalid(format!("max_time must be positive, got {max_time}"));
            }
        }
        if self.bad_words_ids.iter().any(Vec::is_empty) {
            return invalid("bad_words_ids must not hold an empty sequence".into());
        }
        if self.stop_strings.iter().any(String::is_empty) {
            return invalid("stop_strings must not hold an empty string".into());
        }
        if self.eos_token_id.as_ref().is_some_and(Vec::is_empty) {
            return invalid("eos_token_id must name at least one token".into());
        }
        Ok(())
    }

    /// The model's special tokens with this configuration's overrides.
    pub(crate) fn special_tokens(&self, model: SpecialTokens) -> SpecialTokens {
        SpecialTokens {
            decoder_start: self.decoder_start_token_id.unwrap_or(model.decoder_start),
            eos: self.eos_token_id.clone().unwrap_or(model.eos),
            pad: self.pad_token_id.unwrap_or(model.pad),
        }
    }

    /// Every token id the configuration names, with the option naming it.
    pub(crate) fn token_ids(&self) -> Vec<(&'static str, u32)> {
        let mut ids = Vec::new();
        let mut add = |name: &'static str, tokens: &mut dyn Iterator<Item = u32>| {
            ids.extend(tokens.map(|t| (name, t)));
        };
        add(
            "bad_words_ids",
            &mut self.bad_words_ids.iter().flatten().copied(),
        );
        add(
            "forced_bos_token_id",
            &mut self.forced_bos_token_id.into_iter(),
        );
        add(
            "forced_eos_token_id",
            &mut self.forced_eos_token_id.iter().copied(),
        );
        add("suppress_tokens", &mut self.suppress_tokens.iter().copied());
        add(
            "begin_suppress_tokens",
            &mut self.begin_suppress_tokens.iter().copied(),
        );
        add(
            "decoder_start_token_id",
            &mut self.decoder_start_token_id.into_iter(),
        );
        add(
            "eos_token_id",
            &mut self.eos_token_id.iter().flatten().copied(),
        );
        add("pad_token_id", &mut self.pad_token_id.into_iter());
        ids
    }
}

/// A list of token ids, or one id read as a list of one.
struct TokenIds(Vec<u32>);

impl<'de> Deserialize<'de> for TokenIds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked::required(d, "a token id or a list of token ids", |v| match v {
            Value::Array(items) => items.iter().map(as_token_id).collect(),
            v => as_token_id(v).map(|t| vec![t]),
        })
        .map(TokenIds)
    }
}

/// A list of token-id lists (`bad_words_ids`).
struct TokenSequences(Vec<Vec<u32>>);

impl<'de> Deserialize<'de> for TokenSequences {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked::required(d, "a list of non-empty lists of token ids", |v| {
            v.as_array()?
                .iter()
                .map(|seq| {
                    let seq = seq.as_array().filter(|s| !s.is_empty())?;
                    seq.iter().map(as_token_id).collect()
                })
                .collect()
        })
        .map(TokenSequences)
    }
}

fn as_token_id(value: &Value) -> Option<u32> {
    value.as_u64().and_then(|n| u32::try_from(n).ok())
}

fn ids<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<u32>>, D::Error> {
    Option::<TokenIds>::deserialize(d).map(|ids| ids.map(|ids| ids.0))
}

fn sequences<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<Vec<u32>>>, D::Error> {
    Option::<TokenSequences>::deserialize(d).map(|s| s.map(|s| s.0))
}

fn count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    checked::value(d, "a non-negative integer", |v| {
        v.as_u64().and_then(|n| usize::try_from(n).ok())
    })
}

fn early_stopping<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<EarlyStopping>, D::Error> {
    checked::value(d, "true, false or \"never\"", |v| match v {
        Value::Bool(true) => Some(EarlyStopping::Immediate),
        Value::Bool(false) => Some(EarlyStopping::Heuristic),
        Value::String(s) if s == "never" => Some(EarlyStopping::Never),
        _ => None,
    })
}

fn strings<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    checked::one_or_more_strings(d)
}

/// The keys of `generation_config.json` this crate reads; the others (bookkeeping such as
/// `transformers_version`, `use_cache`, output flags) change nothing here.
#[derive(Deserialize, Default)]
#[serde(default)]
struct GenerationConfigFile {
    #[serde(deserialize_with = "checked::positive_count")]
    max_new_tokens: Option<usize>,
    #[serde(deserialize_with = "checked::positive_count")]
    max_length: Option<usize>,
    #[serde(deserialize_with = "count")]
    min_new_tokens: Option<usize>,
    #[serde(deserialize_with = "count")]
    min_length: Option<usize>,
    #[serde(deserialize_with = "checked::positive_count")]
    num_beams: Option<usize>,
    #[serde(deserialize_with = "checked::positive_count")]
    num_return_sequences: Option<usize>,
    #[serde(deserialize_with = "checked::finite_number")]
    length_penalty: Option<f64>,
    #[serde(deserialize_with = "early_stopping")]
    early_stopping: Option<EarlyStopping>,
    #[serde(deserialize_with = "checked::flag")]
    do_sample: Option<bool>,
    #[serde(deserialize_with = "checked::finite_number")]
    temperature: Option<f64>,
    #[serde(deserialize_with = "count")]
    top_k: Option<usize>,
    #[serde(deserialize_with = "checked::finite_number")]
    top_p: Option<f64>,
    #[serde(deserialize_with = "checked::finite_number")]
    min_p: Option<f64>,
    #[serde(deserialize_with = "checked::finite_number")]
    typical_p: Option<f64>,
    #[serde(deserialize_with = "checked::finite_number")]
    epsilon_cutoff: Option<f64>,
    #[serde(deserialize_with = "checked::finite_number")]
    eta_cutoff: Option<f64>,
    #[serde(deserialize_with = "checked::finite_number")]
    repetition_penalty: Option<f64>,
    #[serde(deserialize_with = "checked::finite_number")]
    encoder_repetition_penalty: Option<f64>,
    #[serde(deserialize_with = "count")]
    no_repeat_ngram_size: Option<usize>,
    #[serde(deserialize_with = "count")]
    encoder_no_repeat_ngram_size: Option<usize>,
    #[serde(deserialize_with = "sequences")]
    bad_words_ids: Option<Vec<Vec<u32>>>,
    #[serde(deserialize_with = "checked::token_id")]
    forced_bos_token_id: Option<u32>,
    #[serde(deserialize_with = "ids")]
    forced_eos_token_id: Option<Vec<u32>>,
    #[serde(deserialize_with = "ids")]
    suppress_tokens: Option<Vec<u32>>,
    #[serde(deserialize_with = "ids")]
    begin_suppress_tokens: Option<Vec<u32>>,
    #[serde(deserialize_with = "checked::finite_number")]
    max_time: Option<f64>,
    #[serde(deserialize_with = "strings")]
    stop_strings: Option<Vec<String>>,
    #[serde(deserialize_with = "checked::flag")]
    output_scores: Option<bool>,
    #[serde(deserialize_with = "checked::token_id")]
    decoder_start_token_id: Option<u32>,
    #[serde(deserialize_with = "ids")]
    eos_token_id: Option<Vec<u32>>,
    #[serde(deserialize_with = "checked::token_id")]
    pad_token_id: Option<u32>,
}

impl GenerationConfigFile {
    /// The file's values over `base`. transformers counts `max_length` and `min_length` in
    /// decoder positions, the start token included.
    fn over(self, base: GenerationConfig) -> GenerationConfig {
        let f32_or = |v: Option<f64>, d: f32| v.map_or(d, |v| v as f32);
        let max_new_tokens = self
            .max_new_tokens
            .or(self.max_length.map(|l| l.saturating_sub(1).max(1)))
            .unwrap_or(base.max_new_tokens);
        let min_new_tokens = match (self.min_new_tokens, self.min_length) {
            (None, None) => base.min_new_tokens,
            (new, length) => new
                .unwrap_or(0)
                .max(length.map_or(0, |l| l.saturating_sub(1))),
        };
        GenerationConfig {
            max_new_tokens,
            min_new_tokens,
            num_beams: self.num_beams.unwrap_or(base.num_beams),
            num_return_sequences: self
                .num_return_sequences
                .unwrap_or(base.num_return_sequences),
            length_penalty: f32_or(self.length_penalty, base.length_penalty),
            early_stopping: self.early_stopping.unwrap_or(base.early_stopping),
            do_sample: self.do_sample.unwrap_or(base.do_sample),
            temperature: f32_or(self.temperature, base.temperature),
            top_k: self.top_k.unwrap_or(base.top_k),
            top_p: f32_or(self.top_p, base.top_p),
            min_p: self.min_p.map(|v| v as f32).or(base.min_p),
            typical_p: f32_or(self.typical_p, base.typical_p),
            epsilon_cutoff: f32_or(self.epsilon_cutoff, base.epsilon_cutoff),
            eta_cutoff: f32_or(self.eta_cutoff, base.eta_cutoff),
            repetition_penalty: f32_or(self.repetition_penalty, base.repetition_penalty),
            encoder_repetition_penalty: f32_or(
                self.encoder_repetition_penalty,
                base.encoder_repetition_penalty,
            ),
            no_repeat_ngram_size: self
                .no_repeat_ngram_size
                .unwrap_or(base.no_repeat_ngram_size),
            encoder_no_repeat_ngram_size: self
                .encoder_no_repeat_ngram_size
                .unwrap_or(base.encoder_no_repeat_ngram_size),
            bad_words_ids: self.bad_words_ids.unwrap_or(base.bad_words_ids),
            forced_bos_token_id: self.forced_bos_token_id.or(base.forced_bos_token_id),
            forced_eos_token_id: self.forced_eos_token_id.unwrap_or(base.forced_eos_token_id),
            suppress_tokens: self.suppress_tokens.unwrap_or(base.suppress_tokens),
            begin_suppress_tokens: self
                .begin_suppress_tokens
                .unwrap_or(base.begin_suppress_tokens),
            max_time: self.max_time.or(base.max_time),
            stop_strings: self.stop_strings.unwrap_or(base.stop_strings),
            output_scores: self.output_scores.unwrap_or(base.output_scores),
            seed: base.seed,
            decoder_start_token_id: self.decoder_start_token_id.or(base.decoder_start_token_id),
            eos_token_id: self.eos_token_id.or(base.eos_token_id),
            pad_token_id: self.pad_token_id.or(base.pad_token_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<GenerationConfig, GenerationError> {
        GenerationConfig::from_json_str(text, "generation_config.json".as_ref())
    }

    #[test]
    fn a_t5_checkpoint_file_sets_its_special_tokens_and_nothing_else() {
        let config = read(
            r#"{"_from_model_config": true, "decoder_start_token_id": 0, "eos_token_id": 1,
                "pad_token_id": 0, "transformers_version": "5.24.0", "use_cache": true}"#,
        )
        .unwrap();
        let expected = GenerationConfig {
            decoder_start_token_id: Some(0),
            eos_token_id: Some(vec![1]),
            pad_token_id: Some(0),
            ..GenerationConfig::default()
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn lengths_in_decoder_positions_become_new_tokens() {
        let config = read(r#"{"max_length": 64, "min_length": 5}"#).unwrap();
        assert_eq!((config.max_new_tokens, config.min_new_tokens), (63, 4));
        let config = read(r#"{"max_length": 64, "max_new_tokens": 10}"#).unwrap();
        assert_eq!(config.max_new_tokens, 10);
    }

    #[test]
    fn lists_and_single_ids_are_read() {
        let config = read(
            r#"{"eos_token_id": [1, 7], "forced_eos_token_id": 1, "bad_words_ids": [[3], [4, 5]],
                "stop_strings": "}", "early_stopping": "never"}"#,
        )
        .unwrap();
        assert_eq!(config.eos_token_id, Some(vec![1, 7]));
        assert_eq!(config.forced_eos_token_id, vec![1]);
        assert_eq!(config.bad_words_ids, vec![vec![3], vec![4, 5]]);
        assert_eq!(config.stop_strings, vec!["}".to_string()]);
        assert_eq!(config.early_stopping, EarlyStopping::Never);
    }

    #[test]
    fn a_bad_value_names_its_key() {
        let err = read(r#"{"bad_words_ids": [[]]}"#).unwrap_err().to_string();
        assert_eq!(
            err,
            "generation_config.json: key `bad_words_ids`: expected a list of non-empty lists of \
             token ids, found [[]]"
        );
        let err = read(r#"{"num_beams": 0}"#).unwrap_err().to_string();
        assert!(err.contains("`num_beams`"), "{err}");
    }

    #[test]
    fn an_unimplemented_option_is_refused_unless_off() {
        let err = read(r#"{"diversity_penalty": 0.5}"#)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "generation_config.json: key `diversity_penalty`: expected its default: this option \
             is not implemented, found 0.5"
        );
        assert!(
            read(r#"{"diversity_penalty": 0.0, "num_beam_groups": 1, "sequence_bias": null}"#)
                .is_ok()
        );
    }

    #[test]
    fn validation_refuses_what_cannot_run() {
        let cases = [
            GenerationConfig {
                num_return_sequences: 2,
                ..GenerationConfig::default()
            },
            GenerationConfig {
                num_beams: 2,
                num_return_sequences: 3,
                ..GenerationConfig::default()
            },
            GenerationConfig {
                top_p: 0.0,
                ..GenerationConfig::default()
            },
            GenerationConfig {
                typical_p: 1.5,
                ..GenerationConfig::default()
            },
            GenerationConfig {
                repetition_penalty: 0.0,
                ..GenerationConfig::default()
            },
            GenerationConfig {
                epsilon_cutoff: 1.0,
                ..GenerationConfig::default()
            },
            GenerationConfig {
                max_time: Some(f64::NAN),
                ..GenerationConfig::default()
            },
            GenerationConfig {
                bad_words_ids: vec![vec![]],
                ..GenerationConfig::default()
            },
            GenerationConfig {
                min_p: Some(2.0),
                ..GenerationConfig::default()
            },
        ];
        for config in cases {
            assert!(
                matches!(config.validate(), Err(GenerationError::InvalidInput { .. })),
                "{config:?}"
            );
        }
    }
}
