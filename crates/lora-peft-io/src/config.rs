//! `adapter_config.json`: PEFT's LoRA configuration, read and written without loss.

use std::fmt;
use std::path::Path;

use lora_core::{LoraBias, LoraConfig, LoraInit};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use lora_hf::HfFileError;

use crate::PeftIoError;

/// `target_modules` / `exclude_modules`: a list of names, or one regular expression that must
/// match the whole module path.
#[derive(Debug, Clone, PartialEq)]
pub enum ModuleSelector {
    /// A path matches an entry `t` when it equals `t` or ends with `.t`.
    Names(Vec<String>),
    /// A path matches when the expression matches all of it (Python's `re.fullmatch`).
    Regex(String),
}

/// PEFT's `init_lora_weights`: `true`, `false`, or a method name.
#[derive(Debug, Clone, PartialEq)]
pub enum InitLoraWeights {
    /// `true` or `false`.
    Bool(bool),
    /// A named method, e.g. `"gaussian"`, `"pissa"`.
    Method(String),
}

/// The whole `adapter_config.json` of a PEFT LoRA adapter.
///
/// Every key of the file is kept (unknown ones included) and written back unchanged; the
/// LoRA-relevant keys are checked when the file is read and exposed as typed values with PEFT's
/// defaults for absent keys. Written as PEFT writes it: sorted keys, 2-space indent.
///
/// ```
/// use lora_peft_io::{AdapterConfig, ModuleSelector};
///
/// let text = r#"{"peft_type": "LORA", "target_modules": ["q", "v"]}"#;
/// let config = AdapterConfig::from_json_str(text, "adapter_config.json".as_ref()).unwrap();
/// assert_eq!(config.r(), 8);
/// assert_eq!(config.lora_alpha(), 8.0);
/// assert_eq!(config.target_modules(), Some(&ModuleSelector::Names(vec!["q".into(), "v".into()])));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterConfig {
    values: Map<String, Value>,
    settings: Settings,
}

/// The typed view of the keys that decide how the adapter is applied.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    r: usize,
    lora_alpha: f64,
    lora_dropout: f64,
    use_rslora: bool,
    use_dora: bool,
    bias: LoraBias,
    init_lora_weights: InitLoraWeights,
    target_modules: Option<ModuleSelector>,
    exclude_modules: Option<ModuleSelector>,
    layers_to_transform: Option<Vec<usize>>,
    layers_pattern: Vec<String>,
    rank_pattern: Vec<(String, usize)>,
    alpha_pattern: Vec<(String, f64)>,
    modules_to_save: Vec<String>,
}

/// The keys PEFT 0.21.2 writes (but `auto_mapping`, which names a Python class), with its defaults (`r`, `lora_alpha` and `target_modules` are set
/// by [`AdapterConfig::from_lora_config`]).
const PEFT_DEFAULTS: &str = include_str!("peft_config_defaults.json");

impl AdapterConfig {
    /// Reads `adapter_config.json`.
    ///
    /// # Errors
    /// [`HfFileError::Io`] (in [`PeftIoError::File`]) when the file cannot be read, and every error of
    /// [`from_json_str`](Self::from_json_str).
    pub fn read(path: &Path) -> Result<Self, PeftIoError> {
        let text = std::fs::read_to_string(path).map_err(|source| HfFileError::io(path, source))?;
        Self::from_json_str(&text, path)
    }

    /// Parses the text of an `adapter_config.json`; `path` names the file in errors.
    ///
    /// # Errors
    /// [`PeftIoError::File`] holding [`HfFileError::Json`] with line and column for invalid JSON
    /// or [`HfFileError::InvalidValue`] naming the key and the expected value,
    /// [`PeftIoError::MissingConfigKey`], and [`PeftIoError::InvalidPattern`] for a regex that does not compile.
    pub fn from_json_str(text: &str, path: &Path) -> Result<Self, PeftIoError> {
        let json_error = |e: serde_json::Error| PeftIoError::from(HfFileError::json(path, &e));
        let value: Value = serde_json::from_str(text).map_err(json_error)?;
        let Value::Object(values) = value else {
            return Err(invalid(path, "<root>", "a JSON object", &value));
        };
        for key in ["rank_pattern", "alpha_pattern"] {
            if let Some(v) = optional(&values, key).filter(|v| !v.is_object()) {
                return Err(invalid(
                    path,
                    key,
                    "an object mapping patterns to values",
                    v,
                ));
            }
        }
        // Pattern dictionaries are matched in file order, which a JSON map does not keep.
        let ordered: OrderedPatterns = serde_json::from_str(text).map_err(json_error)?;
        let settings = Settings::parse(&values, ordered, path)?;
        Ok(Self { values, settings })
    }

    /// A config for adapters made with `config` on the modules selected by `target_modules`,
    /// with every other key at PEFT 0.21's default. An invalid `config` or a target regex that
    /// does not compile is refused with the error reading such a file would give.
    ///
    /// ```
    /// use lora_core::LoraConfig;
    /// use lora_peft_io::{AdapterConfig, ModuleSelector};
    ///
    /// let targets = ModuleSelector::Names(vec!["q".into(), "v".into()]);
    /// let config = AdapterConfig::from_lora_config(&LoraConfig::new(16, 32.0), targets).unwrap();
    /// assert_eq!(config.r(), 16);
    /// assert!(config.to_json_string().contains("\"lora_alpha\": 32"));
    /// ```
    ///
    /// # Errors
    /// [`HfFileError::InvalidValue`] for a `config` value PEFT would refuse, and
    /// [`PeftIoError::InvalidPattern`] for a `target_modules` regex that does not compile.
    pub fn from_lora_config(
        config: &LoraConfig,
        target_modules: ModuleSelector,
    ) -> Result<Self, PeftIoError> {
        let Ok(Value::Object(mut values)) = serde_json::from_str::<Value>(PEFT_DEFAULTS) else {
            unreachable!("the embedded PEFT defaults are a JSON object");
        };
        let number = |v: f64| {
            if v.fract() == 0.0 && v.abs() < 1e15 {
                Value::from(v as i64)
            } else {
                Value::from(v)
            }
        };
        values.insert("r".into(), Value::from(config.r));
        values.insert("lora_alpha".into(), number(config.lora_alpha));
        values.insert("lora_dropout".into(), Value::from(config.lora_dropout));
        values.insert("use_rslora".into(), Value::from(config.use_rslora));
        values.insert("use_dora".into(), Value::from(config.use_dora));
        values.insert("bias".into(), Value::from(config.bias.as_peft_str()));
        let init = match config.init_lora_weights {
            LoraInit::Default => Value::from(true),
            LoraInit::Gaussian => Value::from("gaussian"),
            LoraInit::Random => Value::from(false),
        };
        values.insert("init_lora_weights".into(), init);
        values.insert(
            "target_modules".into(),
            match target_modules {
                ModuleSelector::Names(names) => Value::from(names),
                ModuleSelector::Regex(pattern) => Value::from(pattern),
            },
        );
        let path = Path::new("<generated>");
        let settings = Settings::parse(&values, OrderedPatterns::default(), path)?;
        Ok(Self { values, settings })
    }

    /// The JSON text PEFT would write: sorted keys, 2-space indent, no trailing newline.
    pub fn to_json_string(&self) -> String {
        serde_json::to_string_pretty(&Value::Object(self.values.clone()))
            .expect("JSON values always serialise")
    }

    /// The raw value of any key, known or not.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.values.get(key)
    }

    /// Sets a key that does not change how the adapter is applied (e.g.
    /// `base_model_name_or_path`, `task_type`, `revision`). Keys that do are refused with
    /// [`HfFileError::InvalidValue`]; build a new config for those.
    ///
    /// # Errors
    /// [`HfFileError::InvalidValue`] for a key that changes how the adapter is applied.
    pub fn set_metadata(&mut self, key: &str, value: Value) -> Result<(), PeftIoError> {
        let mut values = self.values.clone();
        values.insert(key.to_string(), value);
        let path = Path::new("<set_metadata>");
        let settings = Settings::parse(&values, self.ordered_patterns(), path)?;
        if settings != self.settings {
            return Err(HfFileError::InvalidValue {
                path: path.to_path_buf(),
                key: key.to_string(),
                expected: "a key that leaves the adapter's behaviour unchanged".into(),
                found: "a key that changes it".into(),
            }
            .into());
        }
        self.values = values;
        Ok(())
    }

    fn ordered_patterns(&self) -> OrderedPatterns {
        OrderedPatterns {
            rank_pattern: Some(
                self.settings
                    .rank_pattern
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(*v)))
                    .collect(),
            ),
            alpha_pattern: Some(
                self.settings
                    .alpha_pattern
                    .iter()
                    .map(|(k, v)| (k.clone(), Value::from(*v)))
                    .collect(),
            ),
        }
    }

    /// `peft_type` (always `"LORA"` once read).
    pub fn peft_type(&self) -> &str {
        self.values
            .get("peft_type")
            .and_then(Value::as_str)
            .unwrap_or("LORA")
    }

    /// The default rank `r` (PEFT default 8).
    pub fn r(&self) -> usize {
        self.settings.r
    }

    /// The default `lora_alpha` (PEFT default 8).
    pub fn lora_alpha(&self) -> f64 {
        self.settings.lora_alpha
    }

    /// `lora_dropout` (default 0).
    pub fn lora_dropout(&self) -> f64 {
        self.settings.lora_dropout
    }

    /// `use_rslora`.
    pub fn use_rslora(&self) -> bool {
        self.settings.use_rslora
    }

    /// `use_dora`.
    pub fn use_dora(&self) -> bool {
        self.settings.use_dora
    }

    /// `bias`.
    pub fn bias(&self) -> LoraBias {
        self.settings.bias
    }

    /// `init_lora_weights`.
    pub fn init_lora_weights(&self) -> &InitLoraWeights {
        &self.settings.init_lora_weights
    }

    /// `target_modules` (`None`: the architecture's default).
    pub fn target_modules(&self) -> Option<&ModuleSelector> {
        self.settings.target_modules.as_ref()
    }

    /// `exclude_modules`.
    pub fn exclude_modules(&self) -> Option<&ModuleSelector> {
        self.settings.exclude_modules.as_ref()
    }

    /// `layers_to_transform` as a list of layer indices.
    pub fn layers_to_transform(&self) -> Option<&[usize]> {
        self.settings.layers_to_transform.as_deref()
    }

    /// `layers_pattern` as a list (empty: any layer pattern).
    pub fn layers_pattern(&self) -> &[String] {
        &self.settings.layers_pattern
    }

    /// `rank_pattern` in file order.
    pub fn rank_pattern(&self) -> &[(String, usize)] {
        &self.settings.rank_pattern
    }

    /// `alpha_pattern` in file order.
    pub fn alpha_pattern(&self) -> &[(String, f64)] {
        &self.settings.alpha_pattern
    }

    /// `modules_to_save` (empty when absent).
    pub fn modules_to_save(&self) -> &[String] {
        &self.settings.modules_to_save
    }

    /// The layer configuration PEFT would use for the module at `path`: `r` and `lora_alpha`
    /// from the first matching `rank_pattern` / `alpha_pattern` key, else the defaults.
    ///
    /// ```
    /// use lora_peft_io::AdapterConfig;
    ///
    /// let text = r#"{"peft_type": "LORA", "r": 8, "rank_pattern": {"q": 4}, "target_modules": ["q", "v"]}"#;
    /// let config = AdapterConfig::from_json_str(text, "adapter_config.json".as_ref()).unwrap();
    /// assert_eq!(config.lora_config_for("encoder.block.0.layer.0.SelfAttention.q").r, 4);
    /// assert_eq!(config.lora_config_for("encoder.block.0.layer.0.SelfAttention.v").r, 8);
    /// ```
    pub fn lora_config_for(&self, path: &str) -> LoraConfig {
        let s = &self.settings;
        let r = crate::matching::first_pattern_match(&s.rank_pattern, path).unwrap_or(s.r);
        let alpha =
            crate::matching::first_pattern_match(&s.alpha_pattern, path).unwrap_or(s.lora_alpha);
        let init = match &s.init_lora_weights {
            InitLoraWeights::Bool(false) => LoraInit::Random,
            InitLoraWeights::Method(m) if m == "gaussian" => LoraInit::Gaussian,
            _ => LoraInit::Default,
        };
        LoraConfig::new(r, alpha)
            .with_lora_dropout(s.lora_dropout)
            .with_use_rslora(s.use_rslora)
            .with_use_dora(s.use_dora)
            .with_bias(s.bias)
            .with_init_lora_weights(init)
    }
}

impl fmt::Display for AdapterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_json_string())
    }
}

fn describe(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn invalid(path: &Path, key: &str, expected: &str, found: &Value) -> PeftIoError {
    HfFileError::InvalidValue {
        path: path.to_path_buf(),
        key: key.to_string(),
        expected: expected.to_string(),
        found: describe(found),
    }
    .into()
}

/// Reads one optional key, treating `null` as absent.
fn optional<'a>(values: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    values.get(key).filter(|v| !v.is_null())
}

impl Settings {
    fn parse(
        values: &Map<String, Value>,
        ordered: OrderedPatterns,
        path: &Path,
    ) -> Result<Self, PeftIoError> {
        let peft_type = values
            .get("peft_type")
            .ok_or_else(|| PeftIoError::MissingConfigKey {
                path: path.to_path_buf(),
                key: "peft_type".into(),
            })?;
        if peft_type.as_str() != Some("LORA") {
            return Err(invalid(path, "peft_type", "\"LORA\"", peft_type));
        }
        let count = |key: &str, default: usize| -> Result<usize, PeftIoError> {
            match optional(values, key) {
                None => Ok(default),
                Some(v) => v
                    .as_u64()
                    .filter(|n| *n >= 1)
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| invalid(path, key, "a positive integer", v)),
            }
        };
        let number = |key: &str, default: f64| -> Result<f64, PeftIoError> {
            match optional(values, key) {
                None => Ok(default),
                Some(v) => v
                    .as_f64()
                    .filter(|n| n.is_finite())
                    .ok_or_else(|| invalid(path, key, "a finite number", v)),
            }
        };
        let flag = |key: &str| -> Result<bool, PeftIoError> {
            match optional(values, key) {
                None => Ok(false),
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| invalid(path, key, "true or false", v)),
            }
        };
        let lora_dropout = number("lora_dropout", 0.0)?;
        if !(0.0..1.0).contains(&lora_dropout) {
            return Err(invalid(
                path,
                "lora_dropout",
                "a number in [0, 1)",
                &Value::from(lora_dropout),
            ));
        }
        let bias = match optional(values, "bias") {
            None => LoraBias::None,
            Some(v) => match v.as_str() {
                Some("none") => LoraBias::None,
                Some("all") => LoraBias::All,
                Some("lora_only") => LoraBias::LoraOnly,
                _ => {
                    return Err(invalid(
                        path,
                        "bias",
                        "\"none\", \"all\" or \"lora_only\"",
                        v,
                    ))
                }
            },
        };
        let init_lora_weights = match optional(values, "init_lora_weights") {
            None => InitLoraWeights::Bool(true),
            Some(Value::Bool(b)) => InitLoraWeights::Bool(*b),
            Some(Value::String(s)) => InitLoraWeights::Method(s.clone()),
            Some(v) => return Err(invalid(path, "init_lora_weights", "a bool or a string", v)),
        };
        let selector = |key: &str| -> Result<Option<ModuleSelector>, PeftIoError> {
            match optional(values, key) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(ModuleSelector::Regex(s.clone()))),
                Some(v) => string_list(v)
                    .map(|names| Some(ModuleSelector::Names(names)))
                    .ok_or_else(|| invalid(path, key, "a list of strings or a string", v)),
            }
        };
        let layers_to_transform = match optional(values, "layers_to_transform") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .map(|n| vec![n as usize])
                    .or_else(|| {
                        v.as_array()?
                            .iter()
                            .map(|x| x.as_u64().map(|n| n as usize))
                            .collect()
                    })
                    .ok_or_else(|| {
                        invalid(
                            path,
                            "layers_to_transform",
                            "an integer or a list of integers",
                            v,
                        )
                    })?,
            ),
        };
        let layers_pattern = match optional(values, "layers_pattern") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(v) => string_list(v).ok_or_else(|| {
                invalid(path, "layers_pattern", "a string or a list of strings", v)
            })?,
        };
        let modules_to_save = match optional(values, "modules_to_save") {
            None => Vec::new(),
            Some(v) => string_list(v)
                .ok_or_else(|| invalid(path, "modules_to_save", "a list of strings", v))?,
        };
        let rank_pattern = ordered
            .rank_pattern
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| match v.as_u64().filter(|n| *n >= 1) {
                Some(n) => Ok((k, n as usize)),
                None => Err(invalid(
                    path,
                    &format!("rank_pattern.{k}"),
                    "a positive integer",
                    &v,
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let alpha_pattern = ordered
            .alpha_pattern
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| match v.as_f64().filter(|n| n.is_finite()) {
                Some(n) => Ok((k, n)),
                None => Err(invalid(
                    path,
                    &format!("alpha_pattern.{k}"),
                    "a finite number",
                    &v,
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let settings = Self {
            r: count("r", 8)?,
            lora_alpha: number("lora_alpha", 8.0)?,
            lora_dropout,
            use_rslora: flag("use_rslora")?,
            use_dora: flag("use_dora")?,
            bias,
            init_lora_weights,
            target_modules: selector("target_modules")?,
            exclude_modules: selector("exclude_modules")?,
            layers_to_transform,
            layers_pattern,
            rank_pattern,
            alpha_pattern,
            modules_to_save,
        };
        settings.check_patterns(path)?;
        Ok(settings)
    }

    /// Compiles every regular expression once, so that a bad one is reported when the file is
    /// read rather than when it is applied.
    fn check_patterns(&self, path: &Path) -> Result<(), PeftIoError> {
        let compile = |key: &str, pattern: &str, regex: String| {
            regex::Regex::new(&regex)
                .map(|_| ())
                .map_err(|e| PeftIoError::InvalidPattern {
                    path: path.to_path_buf(),
                    key: key.to_string(),
                    pattern: pattern.to_string(),
                    message: e.to_string(),
                })
        };
        for (key, selector) in [
            ("target_modules", &self.target_modules),
            ("exclude_modules", &self.exclude_modules),
        ] {
            if let Some(ModuleSelector::Regex(p)) = selector {
                compile(key, p, crate::matching::full_match_regex(p))?;
            }
        }
        for p in &self.layers_pattern {
            compile("layers_pattern", p, crate::matching::layer_index_regex(p))?;
        }
        let pattern_keys = self.rank_pattern.iter().map(|(k, _)| ("rank_pattern", k));
        let alpha_keys = self.alpha_pattern.iter().map(|(k, _)| ("alpha_pattern", k));
        for (key, p) in pattern_keys.chain(alpha_keys) {
            compile(key, p, crate::matching::pattern_key_regex(p))?;
        }
        Ok(())
    }
}

fn string_list(value: &Value) -> Option<Vec<String>> {
    value
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// `rank_pattern` and `alpha_pattern` with their entries in file order.
#[derive(Debug, Default, Deserialize)]
struct OrderedPatterns {
    #[serde(default, deserialize_with = "ordered_map")]
    rank_pattern: Option<Vec<(String, Value)>>,
    #[serde(default, deserialize_with = "ordered_map")]
    alpha_pattern: Option<Vec<(String, Value)>>,
}

fn ordered_map<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<(String, Value)>>, D::Error> {
    struct Entries;
    impl<'de> Visitor<'de> for Entries {
        type Value = Option<Vec<(String, Value)>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object or null")
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::new();
            while let Some((key, value)) = map.next_entry::<String, Value>()? {
                entries.push((key, value));
            }
            Ok(Some(entries))
        }
    }
    deserializer.deserialize_any(Entries)
}
