//! `config.json` of a Hugging Face T5 / FLAN-T5 checkpoint.

use std::path::Path;

use lora_hf::{checked, parse_json_config};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::{HfFileError, T5Error};

/// The activation of the feed-forward block (transformers' `dense_act_fn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `relu`.
    Relu,
    /// `gelu`: the exact GELU with erf.
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh` / `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `silu` / `swish`.
    Silu,
}

impl Activation {
    fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "relu" => Self::Relu,
            "gelu" => Self::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Self::GeluTanh,
            "silu" | "swish" => Self::Silu,
            _ => return None,
        })
    }
}

/// The feed-forward block of a T5 layer: `feed_forward_proj`, overridden by explicit
/// `dense_act_fn` / `is_gated_act` keys as transformers does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeedForwardKind {
    /// The activation.
    pub activation: Activation,
    /// Gated: `wo(act(wi_0(x)) · wi_1(x))`; plain: `wo(act(wi(x)))`.
    pub gated: bool,
}

impl FeedForwardKind {
    /// `relu` (T5 v1.0).
    pub const RELU: Self = Self {
        activation: Activation::Relu,
        gated: false,
    };
    /// `gelu` (exact GELU, not gated).
    pub const GELU: Self = Self {
        activation: Activation::Gelu,
        gated: false,
    };
    /// `gated-gelu` (T5 v1.1, FLAN-T5): tanh GELU, gated.
    pub const GATED_GELU: Self = Self {
        activation: Activation::GeluTanh,
        gated: true,
    };
    /// `gated-silu`.
    pub const GATED_SILU: Self = Self {
        activation: Activation::Silu,
        gated: true,
    };
    /// `gated-relu`.
    pub const GATED_RELU: Self = Self {
        activation: Activation::Relu,
        gated: true,
    };

    /// Whether the block has the two input projections `wi_0` and `wi_1`.
    pub fn is_gated(self) -> bool {
        self.gated
    }
}

/// The T5 hyper-parameters, with transformers' defaults for absent keys.
///
/// ```
/// use lora_t5::{FeedForwardKind, T5Config};
///
/// let config = T5Config::from_json_str(
///     r#"{"d_model": 768, "num_layers": 12, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": false}"#,
///     "config.json".as_ref(),
/// ).unwrap();
/// assert_eq!(config.num_decoder_layers, 12);
/// assert_eq!(config.feed_forward, FeedForwardKind::GATED_GELU);
/// assert!(!config.scale_decoder_outputs);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct T5Config {
    /// Vocabulary size (default 32128).
    pub vocab_size: usize,
    /// Hidden size (512).
    pub d_model: usize,
    /// Size of each attention head (64).
    pub d_kv: usize,
    /// Inner size of the feed-forward block (2048).
    pub d_ff: usize,
    /// Encoder layers (6).
    pub num_layers: usize,
    /// Decoder layers (defaults to `num_layers`).
    pub num_decoder_layers: usize,
    /// Attention heads (8).
    pub num_heads: usize,
    /// Relative position buckets (32).
    pub relative_attention_num_buckets: usize,
    /// Largest distance with its own bucket range (128).
    pub relative_attention_max_distance: usize,
    /// Dropout probability (0.1).
    pub dropout_rate: f64,
    /// Layer-norm epsilon (1e-6).
    pub layer_norm_epsilon: f64,
    /// The feed-forward block (`relu`).
    pub feed_forward: FeedForwardKind,
    /// Whether the decoder output is multiplied by `d_model^-0.5` before the LM head:
    /// `scale_decoder_outputs`, else `tie_word_embeddings`, else true.
    pub scale_decoder_outputs: bool,
    /// `tie_word_embeddings` as written (None when absent).
    pub tie_word_embeddings: Option<bool>,
    /// Padding token (0).
    pub pad_token_id: u32,
    /// End-of-sequence token (1).
    pub eos_token_id: u32,
    /// First decoder token (0).
    pub decoder_start_token_id: u32,
}

impl Default for T5Config {
    fn default() -> Self {
        Self {
            vocab_size: 32128,
            d_model: 512,
            d_kv: 64,
            d_ff: 2048,
            num_layers: 6,
            num_decoder_layers: 6,
            num_heads: 8,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            dropout_rate: 0.1,
            layer_norm_epsilon: 1e-6,
            feed_forward: FeedForwardKind::RELU,
            scale_decoder_outputs: true,
            tie_word_embeddings: None,
            pad_token_id: 0,
            eos_token_id: 1,
            decoder_start_token_id: 0,
        }
    }
}

impl T5Config {
    /// Reads `config.json`.
    ///
    /// # Errors
    /// [`HfFileError::Io`] (in [`T5Error::File`]) when the file cannot be read, and every error of
    /// [`from_json_str`](Self::from_json_str).
    pub fn read(path: &Path) -> Result<Self, T5Error> {
        let text = std::fs::read_to_string(path).map_err(|source| HfFileError::io(path, source))?;
        Self::from_json_str(&text, path)
    }

    /// Parses the text of a `config.json`; `path` names the file in errors.
    ///
    /// ```
    /// use lora_t5::{HfFileError, T5Config, T5Error};
    ///
    /// let err = T5Config::from_json_str(r#"{"num_heads": 0}"#, "config.json".as_ref()).unwrap_err();
    /// assert!(matches!(&err, T5Error::File(HfFileError::InvalidValue { key, .. }) if key == "num_heads"));
    /// assert_eq!(err.to_string(), "config.json: key `num_heads`: expected a positive integer, found 0");
    /// ```
    ///
    /// # Errors
    /// [`T5Error::File`] holding [`HfFileError::Json`] with line and column for invalid JSON, or
    /// [`HfFileError::InvalidValue`] naming the key, the expected value and the value found.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, T5Error> {
        let file: T5ConfigFile = parse_json_config(text, path)?;
        let defaults = Self::default();
        let num_layers = file.num_layers.unwrap_or(defaults.num_layers);
        let mut feed_forward = file.feed_forward_proj.unwrap_or(FeedForwardKind::RELU);
        if let Some(activation) = file.dense_act_fn {
            feed_forward.activation = activation;
        }
        if let Some(gated) = file.is_gated_act {
            feed_forward.gated = gated;
        }
        let config = Self {
            vocab_size: file.vocab_size.unwrap_or(defaults.vocab_size),
            d_model: file.d_model.unwrap_or(defaults.d_model),
            d_kv: file.d_kv.unwrap_or(defaults.d_kv),
            d_ff: file.d_ff.unwrap_or(defaults.d_ff),
            num_layers,
            num_decoder_layers: file.num_decoder_layers.unwrap_or(num_layers),
            num_heads: file.num_heads.unwrap_or(defaults.num_heads),
            relative_attention_num_buckets: file
                .relative_attention_num_buckets
                .unwrap_or(defaults.relative_attention_num_buckets),
            relative_attention_max_distance: file
                .relative_attention_max_distance
                .unwrap_or(defaults.relative_attention_max_distance),
            dropout_rate: file.dropout_rate.unwrap_or(defaults.dropout_rate),
            layer_norm_epsilon: file
                .layer_norm_epsilon
                .unwrap_or(defaults.layer_norm_epsilon),
            feed_forward,
            scale_decoder_outputs: file
                .scale_decoder_outputs
                .or(file.tie_word_embeddings)
                .unwrap_or(true),
            tie_word_embeddings: file.tie_word_embeddings,
            pad_token_id: file.pad_token_id.unwrap_or(defaults.pad_token_id),
            eos_token_id: file.eos_token_id.unwrap_or(defaults.eos_token_id),
            decoder_start_token_id: file
                .decoder_start_token_id
                .unwrap_or(defaults.decoder_start_token_id),
        };
        config.check(path)?;
        Ok(config)
    }

    /// Checks what no single key shows: the relations between keys, and that every tensor the
    /// config shapes fits in memory. [`from_json_str`](Self::from_json_str) calls it; call it on
    /// a config built in code before [`T5ForConditionalGeneration::new`](crate::T5ForConditionalGeneration::new).
    /// `path` names the file (or the source of the values) in errors.
    ///
    /// The rules: `relative_attention_num_buckets` ≥ 4; `relative_attention_max_distance` >
    /// `relative_attention_num_buckets / 2` (the decoder's exact range, below which the
    /// logarithmic buckets of [`relative_position_bucket`](crate::relative_position_bucket)
    /// would run backwards); `pad_token_id`, `eos_token_id` and `decoder_start_token_id` below
    /// `vocab_size`; every size positive; the parameter count, in f32 bytes, at most
    /// `isize::MAX` (Rust's limit on one allocation), with each product computed without
    /// overflow.
    ///
    /// ```
    /// use lora_t5::{HfFileError, T5Config, T5Error};
    ///
    /// let config = T5Config { vocab_size: 100, eos_token_id: 100, ..T5Config::default() };
    /// let err = config.check("config.json".as_ref()).unwrap_err();
    /// assert!(matches!(&err, T5Error::File(HfFileError::InvalidValue { key, .. }) if key == "eos_token_id"));
    /// assert_eq!(
    ///     err.to_string(),
    ///     "config.json: key `eos_token_id`: expected a token id below vocab_size (100), found 100"
    /// );
    /// ```
    ///
    /// # Errors
    /// [`HfFileError::InvalidValue`] (in [`T5Error::File`]) naming the key (for a product, the
    /// keys joined by ` × `), what it must hold and what it holds.
    pub fn check(&self, path: &Path) -> Result<(), T5Error> {
        let refuse = |key: &str, expected: String, found: Value| -> Result<(), T5Error> {
            Err(HfFileError::invalid_value(path, key, &expected, &found).into())
        };
        for (key, size) in [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_layers", self.num_layers),
            ("num_decoder_layers", self.num_decoder_layers),
            ("num_heads", self.num_heads),
        ] {
            if size == 0 {
                return refuse(key, "a positive integer".into(), Value::from(0));
            }
        }
        let buckets = self.relative_attention_num_buckets;
        if buckets < 4 {
            return refuse(
                "relative_attention_num_buckets",
                "at least 4".into(),
                Value::from(buckets),
            );
        }
        if self.relative_attention_max_distance <= buckets / 2 {
            return refuse(
                "relative_attention_max_distance",
                format!(
                    "a distance greater than relative_attention_num_buckets / 2 ({})",
                    buckets / 2
                ),
                Value::from(self.relative_attention_max_distance),
            );
        }
        for (key, id) in [
            ("pad_token_id", self.pad_token_id),
            ("eos_token_id", self.eos_token_id),
            ("decoder_start_token_id", self.decoder_start_token_id),
        ] {
            if id as usize >= self.vocab_size {
                return refuse(
                    key,
                    format!("a token id below vocab_size ({})", self.vocab_size),
                    Value::from(id),
                );
            }
        }
        let limit = isize::MAX as usize / std::mem::size_of::<f32>();
        for (keys, a, b) in [
            (["num_heads", "d_kv"], self.num_heads, self.d_kv),
            (["vocab_size", "d_model"], self.vocab_size, self.d_model),
            (["d_model", "d_ff"], self.d_model, self.d_ff),
            (
                ["relative_attention_num_buckets", "num_heads"],
                buckets,
                self.num_heads,
            ),
        ] {
            if a.checked_mul(b).is_none_or(|n| n > limit) {
                return refuse(
                    &keys.join(" × "),
                    format!("a product of at most {limit} values (f32 bytes within isize::MAX)"),
                    Value::from(format!("{a} × {b}")),
                );
            }
        }
        if self.parameter_count().is_none_or(|n| n > limit) {
            return refuse(
                "<root>",
                format!("a model of at most {limit} parameters (f32 bytes within isize::MAX)"),
                Value::from(match self.parameter_count() {
                    Some(n) => format!("{n} parameters"),
                    None => "more than usize::MAX parameters".to_string(),
                }),
            );
        }
        Ok(())
    }

    /// The number of parameters of the model this config describes (embedding, both stacks,
    /// and the head when untied), as `T5ForConditionalGeneration::new` builds it, or `None`
    /// when it overflows `usize`.
    ///
    /// ```
    /// use lora_t5::T5Config;
    ///
    /// // t5-small: 60.5M parameters.
    /// assert_eq!(T5Config::default().parameter_count(), Some(60_506_624));
    /// ```
    pub fn parameter_count(&self) -> Option<usize> {
        let d = self.d_model;
        let attention = self
            .num_heads
            .checked_mul(self.d_kv)?
            .checked_mul(d)?
            .checked_mul(4)?;
        let projections = if self.feed_forward.is_gated() { 3 } else { 2 };
        let feed_forward = d.checked_mul(self.d_ff)?.checked_mul(projections)?;
        let position_bias = self
            .relative_attention_num_buckets
            .checked_mul(self.num_heads)?;
        // Encoder block: self-attention, feed-forward and two norms; decoder block: also
        // cross-attention and a third norm. Each stack: a bias table and a final norm.
        let encoder_block = attention.checked_add(feed_forward)?.checked_add(2 * d)?;
        let decoder_block = encoder_block.checked_add(attention)?.checked_add(d)?;
        let stack = |block: usize, layers: usize| {
            block
                .checked_mul(layers)?
                .checked_add(position_bias)?
                .checked_add(d)
        };
        let embedding = self.vocab_size.checked_mul(d)?;
        let heads = if self.tie_word_embeddings == Some(false) {
            2
        } else {
            1
        };
        embedding
            .checked_mul(heads)?
            .checked_add(stack(encoder_block, self.num_layers)?)?
            .checked_add(stack(decoder_block, self.num_decoder_layers)?)
    }

    /// `num_heads · d_kv`, the width of the attention projections ([`check`](Self::check)
    /// guarantees the product does not overflow).
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }
}

/// The keys of `config.json` this crate reads, as written (absent or `null`: `None`); every
/// other key is ignored, as transformers keeps but does not use them for T5.
#[derive(Deserialize)]
struct T5ConfigFile {
    #[serde(default, deserialize_with = "checked::positive_count")]
    vocab_size: Option<usize>,
    #[serde(default, deserialize_with = "checked::positive_count")]
    d_model: Option<usize>,
    #[serde(default, deserialize_with = "checked::positive_count")]
    d_kv: Option<usize>,
    #[serde(default, deserialize_with = "checked::positive_count")]
    d_ff: Option<usize>,
    #[serde(default, deserialize_with = "checked::positive_count")]
    num_layers: Option<usize>,
    #[serde(default, deserialize_with = "checked::positive_count")]
    num_decoder_layers: Option<usize>,
    #[serde(default, deserialize_with = "checked::positive_count")]
    num_heads: Option<usize>,
    #[serde(default, deserialize_with = "checked::positive_count")]
    relative_attention_num_buckets: Option<usize>,
    #[serde(default, deserialize_with = "checked::positive_count")]
    relative_attention_max_distance: Option<usize>,
    #[serde(default, deserialize_with = "checked::dropout_probability")]
    dropout_rate: Option<f64>,
    #[serde(default, deserialize_with = "checked::non_negative_number")]
    layer_norm_epsilon: Option<f64>,
    #[serde(default, deserialize_with = "feed_forward_proj")]
    feed_forward_proj: Option<FeedForwardKind>,
    #[serde(default, deserialize_with = "dense_act_fn")]
    dense_act_fn: Option<Activation>,
    #[serde(default, deserialize_with = "checked::flag")]
    is_gated_act: Option<bool>,
    #[serde(default, deserialize_with = "checked::flag")]
    scale_decoder_outputs: Option<bool>,
    #[serde(default, deserialize_with = "checked::flag")]
    tie_word_embeddings: Option<bool>,
    #[serde(default, deserialize_with = "checked::token_id")]
    pad_token_id: Option<u32>,
    #[serde(default, deserialize_with = "checked::first_token_id")]
    eos_token_id: Option<u32>,
    #[serde(default, deserialize_with = "checked::token_id")]
    decoder_start_token_id: Option<u32>,
}

/// `feed_forward_proj`: `ACT` or `gated-ACT`; transformers maps `gated-gelu` to the tanh GELU.
fn feed_forward_proj<'de, D: Deserializer<'de>>(d: D) -> Result<Option<FeedForwardKind>, D::Error> {
    checked::value(d, "relu, gelu, gated-gelu, gated-silu or gated-relu", |v| {
        let name = v.as_str()?;
        let (gated, name) = match name.strip_prefix("gated-") {
            Some("gelu") => (true, "gelu_new"),
            Some(name) => (true, name),
            None => (false, name),
        };
        let activation = Activation::from_name(name)?;
        Some(FeedForwardKind { activation, gated })
    })
}

/// `dense_act_fn`: an activation name, overriding the one of `feed_forward_proj`.
fn dense_act_fn<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Activation>, D::Error> {
    checked::value(
        d,
        "relu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, silu or swish",
        |v| Activation::from_name(v.as_str()?),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<T5Config, T5Error> {
        T5Config::from_json_str(text, "config.json".as_ref())
    }

    /// The key, expected value and value found of an `InvalidValue` error.
    fn refusal(text: &str) -> (String, String, String) {
        match parse(text) {
            Err(T5Error::File(HfFileError::InvalidValue {
                path,
                key,
                expected,
                found,
            })) => {
                assert_eq!(path, Path::new("config.json"));
                (key, expected, found)
            }
            other => panic!("expected InvalidValue, got {other:?}"),
        }
    }

    #[test]
    fn an_empty_object_gives_transformers_defaults() {
        assert_eq!(parse("{}").unwrap(), T5Config::default());
    }

    #[test]
    fn null_values_read_as_absent() {
        let config = parse(r#"{"d_model": null, "tie_word_embeddings": null}"#).unwrap();
        assert_eq!(config, T5Config::default());
    }

    #[test]
    fn decoder_layers_default_to_the_encoder_layers() {
        assert_eq!(parse(r#"{"num_layers": 3}"#).unwrap().num_decoder_layers, 3);
        let config = parse(r#"{"num_layers": 3, "num_decoder_layers": 2}"#).unwrap();
        assert_eq!(config.num_decoder_layers, 2);
    }

    #[test]
    fn scaling_follows_scale_decoder_outputs_then_tie_word_embeddings() {
        let untied = parse(r#"{"tie_word_embeddings": false}"#).unwrap();
        assert!(!untied.scale_decoder_outputs);
        let explicit = parse(r#"{"tie_word_embeddings": false, "scale_decoder_outputs": true}"#);
        assert!(explicit.unwrap().scale_decoder_outputs);
    }

    #[test]
    fn dense_act_fn_and_is_gated_act_override_feed_forward_proj() {
        let config = parse(
            r#"{"feed_forward_proj": "gated-gelu", "dense_act_fn": "silu", "is_gated_act": false}"#,
        )
        .unwrap();
        assert_eq!(
            config.feed_forward,
            FeedForwardKind {
                activation: Activation::Silu,
                gated: false
            }
        );
        assert_eq!(
            parse(r#"{"feed_forward_proj": "gelu"}"#)
                .unwrap()
                .feed_forward,
            FeedForwardKind::GELU
        );
    }

    #[test]
    fn a_list_of_eos_tokens_uses_the_first() {
        assert_eq!(
            parse(r#"{"eos_token_id": [7, 1]}"#).unwrap().eos_token_id,
            7
        );
    }

    #[test]
    fn a_zero_size_is_refused() {
        let (key, expected, found) = refusal(r#"{"d_kv": 0}"#);
        assert_eq!(
            (key.as_str(), expected.as_str(), found.as_str()),
            ("d_kv", "a positive integer", "0")
        );
    }

    #[test]
    fn a_size_of_the_wrong_kind_is_refused() {
        let (key, _, found) = refusal(r#"{"vocab_size": "32128"}"#);
        assert_eq!((key.as_str(), found.as_str()), ("vocab_size", "\"32128\""));
    }

    #[test]
    fn an_unknown_feed_forward_proj_is_refused() {
        let (key, expected, found) = refusal(r#"{"feed_forward_proj": "gated-tanh"}"#);
        assert_eq!(key, "feed_forward_proj");
        assert!(expected.contains("gated-gelu"), "{expected}");
        assert_eq!(found, "\"gated-tanh\"");
    }

    #[test]
    fn an_unknown_dense_act_fn_is_refused() {
        let (key, _, found) = refusal(r#"{"dense_act_fn": "tanh"}"#);
        assert_eq!((key.as_str(), found.as_str()), ("dense_act_fn", "\"tanh\""));
    }

    #[test]
    fn a_dropout_rate_of_one_is_refused() {
        let (key, expected, _) = refusal(r#"{"dropout_rate": 1.0}"#);
        assert_eq!(
            (key.as_str(), expected.as_str()),
            ("dropout_rate", "a number in [0, 1)")
        );
    }

    #[test]
    fn a_negative_layer_norm_epsilon_is_refused() {
        let (key, _, found) = refusal(r#"{"layer_norm_epsilon": -1e-6}"#);
        assert_eq!(
            (key.as_str(), found.as_str()),
            ("layer_norm_epsilon", "-1e-6")
        );
    }

    #[test]
    fn a_flag_of_the_wrong_kind_is_refused() {
        let (key, expected, _) = refusal(r#"{"tie_word_embeddings": 0}"#);
        assert_eq!(
            (key.as_str(), expected.as_str()),
            ("tie_word_embeddings", "true or false")
        );
    }

    #[test]
    fn a_token_id_beyond_u32_is_refused() {
        let (key, expected, _) = refusal(r#"{"decoder_start_token_id": 4294967296}"#);
        assert_eq!(
            (key.as_str(), expected.as_str()),
            ("decoder_start_token_id", "a token id")
        );
    }

    #[test]
    fn an_empty_eos_list_is_refused() {
        let (key, _, found) = refusal(r#"{"eos_token_id": []}"#);
        assert_eq!((key.as_str(), found.as_str()), ("eos_token_id", "[]"));
    }

    #[test]
    fn fewer_than_four_buckets_are_refused() {
        let (key, expected, found) = refusal(r#"{"relative_attention_num_buckets": 3}"#);
        assert_eq!(
            (key.as_str(), expected.as_str(), found.as_str()),
            ("relative_attention_num_buckets", "at least 4", "3")
        );
    }

    #[test]
    fn a_max_distance_within_the_decoders_exact_range_is_refused() {
        let (key, expected, found) = refusal(
            r#"{"relative_attention_num_buckets": 32, "relative_attention_max_distance": 16}"#,
        );
        assert_eq!(key, "relative_attention_max_distance");
        assert!(expected.contains("(16)"), "{expected}");
        assert_eq!(found, "16");
        let config = parse(
            r#"{"relative_attention_num_buckets": 32, "relative_attention_max_distance": 17}"#,
        );
        assert_eq!(config.unwrap().relative_attention_max_distance, 17);
    }

    #[test]
    fn an_eos_token_id_outside_the_vocabulary_is_refused() {
        let (key, expected, found) = refusal(r#"{"vocab_size": 100, "eos_token_id": 100}"#);
        assert_eq!(
            (key.as_str(), expected.as_str(), found.as_str()),
            ("eos_token_id", "a token id below vocab_size (100)", "100")
        );
    }

    #[test]
    fn a_decoder_start_token_id_outside_the_vocabulary_is_refused() {
        let (key, _, found) = refusal(r#"{"vocab_size": 100, "decoder_start_token_id": 4000}"#);
        assert_eq!(
            (key.as_str(), found.as_str()),
            ("decoder_start_token_id", "4000")
        );
    }

    #[test]
    fn a_pad_token_id_outside_the_vocabulary_is_refused() {
        let (key, _, _) = refusal(r#"{"vocab_size": 100, "pad_token_id": 100, "eos_token_id": 1}"#);
        assert_eq!(key, "pad_token_id");
    }

    #[test]
    fn a_head_width_whose_product_wraps_is_refused() {
        // 4 × (2^62 + 32) wraps to 128 in usize arithmetic.
        let (key, _, found) = refusal(r#"{"num_heads": 4, "d_kv": 4611686018427387936}"#);
        assert_eq!(key, "num_heads × d_kv");
        assert_eq!(found, "\"4 × 4611686018427387936\"");
    }

    #[test]
    fn an_embedding_beyond_the_allocation_limit_is_refused() {
        let (key, expected, _) = refusal(r#"{"vocab_size": 4294967296, "d_model": 4294967296}"#);
        assert_eq!(key, "vocab_size × d_model");
        assert!(expected.contains("isize::MAX"), "{expected}");
    }

    #[test]
    fn a_model_beyond_the_allocation_limit_is_refused() {
        // Every product fits; the sum over 2^26 layers of each stack does not.
        let (key, expected, _) = refusal(
            r#"{"d_model": 65536, "d_ff": 65536, "num_heads": 1, "d_kv": 65536, "num_layers": 67108864}"#,
        );
        assert_eq!(key, "<root>");
        assert!(expected.contains("parameters"), "{expected}");
    }

    #[test]
    fn the_parameter_count_equals_the_built_model() {
        use burn::module::Module;
        type B = burn::backend::NdArray;
        for (gated, tied) in [(false, None), (true, Some(false))] {
            let config = T5Config {
                vocab_size: 17,
                d_model: 8,
                d_kv: 3,
                num_heads: 2,
                d_ff: 5,
                num_layers: 2,
                num_decoder_layers: 3,
                relative_attention_num_buckets: 6,
                feed_forward: if gated {
                    FeedForwardKind::GATED_GELU
                } else {
                    FeedForwardKind::RELU
                },
                tie_word_embeddings: tied,
                ..T5Config::default()
            };
            let model = crate::T5ForConditionalGeneration::<B>::new(&config, &Default::default());
            assert_eq!(config.parameter_count(), Some(model.num_params()));
        }
    }

    #[test]
    fn a_key_written_twice_is_refused_not_read_last_wins() {
        let err = parse(r#"{"d_model": 8, "d_model": 16}"#).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("duplicate") && text.contains("d_model"),
            "{text}"
        );
    }

    #[test]
    fn a_document_that_is_not_an_object_is_refused() {
        let (key, expected, _) = refusal("[]");
        assert_eq!(
            (key.as_str(), expected.as_str()),
            ("<root>", "a JSON object")
        );
    }

    #[test]
    fn text_after_the_object_is_refused() {
        let err = parse("{\"d_model\": 8}\n[]").unwrap_err();
        assert!(
            matches!(err, T5Error::File(HfFileError::Json { line: 2, .. })),
            "{err}"
        );
    }

    #[test]
    fn invalid_json_names_line_and_column() {
        let err = parse("{\n  \"d_model\": 8,\n}").unwrap_err();
        assert!(
            matches!(err, T5Error::File(HfFileError::Json { line: 3, .. })),
            "{err}"
        );
    }
}
