//! `config.json` of a Hugging Face T5 / FLAN-T5 checkpoint.

use std::path::Path;

use serde_json::{Map, Value};

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
    /// # Errors
    /// [`T5Error::File`] holding [`HfFileError::Json`] with line and column for invalid JSON, or
    /// [`HfFileError::InvalidValue`] naming the key, the expected value and the value found.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, T5Error> {
        let value: Value = serde_json::from_str(text).map_err(|e| HfFileError::json(path, &e))?;
        let Value::Object(map) = value else {
            return Err(invalid(path, "<root>", "a JSON object", &value));
        };
        let reader = Reader { map: &map, path };
        let defaults = Self::default();
        let num_layers = reader.count("num_layers", defaults.num_layers)?;
        let tie_word_embeddings = reader.optional_bool("tie_word_embeddings")?;
        let scale_decoder_outputs = reader
            .optional_bool("scale_decoder_outputs")?
            .or(tie_word_embeddings)
            .unwrap_or(true);
        let mut feed_forward = match map.get("feed_forward_proj") {
            None | Some(Value::Null) => FeedForwardKind::RELU,
            Some(Value::String(s)) => {
                let (gated, name) = match s.strip_prefix("gated-") {
                    Some(name) => (true, name),
                    None => (false, s.as_str()),
                };
                // transformers maps `gated-gelu` to the tanh GELU (`gelu_new`).
                let name = if gated && name == "gelu" {
                    "gelu_new"
                } else {
                    name
                };
                let activation = Activation::from_name(name).ok_or_else(|| {
                    invalid(
                        path,
                        "feed_forward_proj",
                        "relu, gelu, gated-gelu, gated-silu or gated-relu",
                        &Value::String(s.clone()),
                    )
                })?;
                FeedForwardKind { activation, gated }
            }
            Some(v) => return Err(invalid(path, "feed_forward_proj", "a string", v)),
        };
        match map.get("dense_act_fn") {
            None | Some(Value::Null) => {}
            Some(Value::String(name)) => {
                feed_forward.activation = Activation::from_name(name).ok_or_else(|| {
                    invalid(
                        path,
                        "dense_act_fn",
                        "relu, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, silu or swish",
                        &Value::String(name.clone()),
                    )
                })?
            }
            Some(v) => return Err(invalid(path, "dense_act_fn", "a string", v)),
        }
        if let Some(gated) = reader.optional_bool("is_gated_act")? {
            feed_forward.gated = gated;
        }
        let token = |key: &str, default: u32| -> Result<u32, T5Error> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| invalid(path, key, "a token id", v)),
            }
        };
        let dropout_rate = reader.number("dropout_rate", defaults.dropout_rate)?;
        if !(0.0..1.0).contains(&dropout_rate) {
            return Err(invalid(
                path,
                "dropout_rate",
                "a number in [0, 1)",
                &Value::from(dropout_rate),
            ));
        }
        let config = Self {
            vocab_size: reader.count("vocab_size", defaults.vocab_size)?,
            d_model: reader.count("d_model", defaults.d_model)?,
            d_kv: reader.count("d_kv", defaults.d_kv)?,
            d_ff: reader.count("d_ff", defaults.d_ff)?,
            num_layers,
            num_decoder_layers: reader.count("num_decoder_layers", num_layers)?,
            num_heads: reader.count("num_heads", defaults.num_heads)?,
            relative_attention_num_buckets: reader.count(
                "relative_attention_num_buckets",
                defaults.relative_attention_num_buckets,
            )?,
            relative_attention_max_distance: reader.count(
                "relative_attention_max_distance",
                defaults.relative_attention_max_distance,
            )?,
            dropout_rate,
            layer_norm_epsilon: reader.number("layer_norm_epsilon", defaults.layer_norm_epsilon)?,
            feed_forward,
            scale_decoder_outputs,
            tie_word_embeddings,
            pad_token_id: token("pad_token_id", 0)?,
            eos_token_id: eos_token(&map, path)?,
            decoder_start_token_id: token("decoder_start_token_id", 0)?,
        };
        if config.relative_attention_num_buckets < 4 {
            return Err(invalid(
                path,
                "relative_attention_num_buckets",
                "at least 4",
                &Value::from(config.relative_attention_num_buckets),
            ));
        }
        Ok(config)
    }

    /// `num_heads · d_kv`, the width of the attention projections.
    pub fn inner_dim(&self) -> usize {
        self.num_heads * self.d_kv
    }
}

/// `eos_token_id` may be a list in generation-style configs: the first entry is used.
fn eos_token(map: &Map<String, Value>, path: &Path) -> Result<u32, T5Error> {
    match map.get("eos_token_id") {
        None | Some(Value::Null) => Ok(1),
        Some(Value::Array(items)) if !items.is_empty() => items[0]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| invalid(path, "eos_token_id", "a token id", &items[0])),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| invalid(path, "eos_token_id", "a token id", v)),
    }
}

struct Reader<'a> {
    map: &'a Map<String, Value>,
    path: &'a Path,
}

impl Reader<'_> {
    fn count(&self, key: &str, default: usize) -> Result<usize, T5Error> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_u64()
                .filter(|n| *n >= 1)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| invalid(self.path, key, "a positive integer", v)),
        }
    }

    fn number(&self, key: &str, default: f64) -> Result<f64, T5Error> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| invalid(self.path, key, "a finite non-negative number", v)),
        }
    }

    fn optional_bool(&self, key: &str) -> Result<Option<bool>, T5Error> {
        match self.map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(invalid(self.path, key, "true or false", v)),
        }
    }
}

fn invalid(path: &Path, key: &str, expected: &str, found: &Value) -> T5Error {
    HfFileError::invalid_value(path, key, expected, found).into()
}
