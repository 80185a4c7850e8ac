//! `adapter_config.json`: PEFT's LoRA configuration, read and written without loss.

use std::fmt;
use std::path::Path;

use lora_core::{LoraBias, LoraConfig, LoraInit};
use serde::de::{Deserializer, Error, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use lora_hf::{checked, json_config_from_value, parse_json_config, parse_json_object, HfFileError};

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
        let values = parse_json_object(text, path)?;
        check_peft_type(&values, path)?;
        let settings = Settings::from_file(parse_json_config(text, path)?, path)?;
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
        let settings = Settings::from_values(&values, path)?;
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
        let path = Path::new("<set_metadata>");
        let refuse = || -> PeftIoError {
            HfFileError::InvalidValue {
                path: path.to_path_buf(),
                key: key.to_string(),
                expected: "a key that leaves the adapter's behaviour unchanged".into(),
                found: "a key that changes it".into(),
            }
            .into()
        };
        // A `Value` keeps no order of its entries, and pattern order decides which one applies.
        if ["rank_pattern", "alpha_pattern"].contains(&key) {
            return Err(refuse());
        }
        let mut values = self.values.clone();
        values.insert(key.to_string(), value);
        let mut settings = Settings::from_values(&values, path)?;
        settings
            .rank_pattern
            .clone_from(&self.settings.rank_pattern);
        settings
            .alpha_pattern
            .clone_from(&self.settings.alpha_pattern);
        if settings != self.settings {
            return Err(refuse());
        }
        self.values = values;
        Ok(())
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

fn invalid(path: &Path, key: &str, expected: &str, found: &Value) -> PeftIoError {
    HfFileError::invalid_value(path, key, expected, found).into()
}

/// `peft_type` must be there and be `"LORA"`.
fn check_peft_type(values: &Map<String, Value>, path: &Path) -> Result<(), PeftIoError> {
    match values.get("peft_type") {
        None => Err(PeftIoError::MissingConfigKey {
            path: path.to_path_buf(),
            key: "peft_type".into(),
        }),
        Some(v) if v.as_str() == Some("LORA") => Ok(()),
        Some(v) => Err(invalid(path, "peft_type", "\"LORA\"", v)),
    }
}

/// The keys of `adapter_config.json` that decide how the adapter is applied, as written (absent
/// or `null`: `None`); `rank_pattern` and `alpha_pattern` in file order.
#[derive(Deserialize)]
struct SettingsFile {
    #[serde(default, deserialize_with = "checked::positive_count")]
    r: Option<usize>,
    #[serde(default, deserialize_with = "alpha")]
    lora_alpha: Option<f64>,
    #[serde(default, deserialize_with = "checked::dropout_probability")]
    lora_dropout: Option<f64>,
    #[serde(default, deserialize_with = "checked::flag")]
    use_rslora: Option<bool>,
    #[serde(default, deserialize_with = "checked::flag")]
    use_dora: Option<bool>,
    #[serde(default, deserialize_with = "bias")]
    bias: Option<LoraBias>,
    #[serde(default, deserialize_with = "init_lora_weights")]
    init_lora_weights: Option<InitLoraWeights>,
    #[serde(default, deserialize_with = "module_selector")]
    target_modules: Option<ModuleSelector>,
    #[serde(default, deserialize_with = "module_selector")]
    exclude_modules: Option<ModuleSelector>,
    #[serde(default, deserialize_with = "layer_indices")]
    layers_to_transform: Option<Vec<usize>>,
    #[serde(default, deserialize_with = "checked::one_or_more_strings")]
    layers_pattern: Option<Vec<String>>,
    #[serde(default, deserialize_with = "checked::string_list")]
    modules_to_save: Option<Vec<String>>,
    #[serde(default, deserialize_with = "ordered_patterns")]
    rank_pattern: Option<Vec<(String, Rank)>>,
    #[serde(default, deserialize_with = "ordered_patterns")]
    alpha_pattern: Option<Vec<(String, Alpha)>>,
}

fn bias<'de, D: Deserializer<'de>>(d: D) -> Result<Option<LoraBias>, D::Error> {
    checked::value(d, "\"none\", \"all\" or \"lora_only\"", |v| {
        Some(match v.as_str()? {
            "none" => LoraBias::None,
            "all" => LoraBias::All,
            "lora_only" => LoraBias::LoraOnly,
            _ => return None,
        })
    })
}

fn init_lora_weights<'de, D: Deserializer<'de>>(d: D) -> Result<Option<InitLoraWeights>, D::Error> {
    checked::value(d, "a bool or a string", |v| match v {
        Value::Bool(b) => Some(InitLoraWeights::Bool(*b)),
        Value::String(s) => Some(InitLoraWeights::Method(s.clone())),
        _ => None,
    })
}

fn module_selector<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ModuleSelector>, D::Error> {
    checked::value(d, "a list of strings or a string", |v| match v {
        Value::String(s) => Some(ModuleSelector::Regex(s.clone())),
        v => Some(ModuleSelector::Names(
            v.as_array()?
                .iter()
                .map(|x| x.as_str().map(str::to_string))
                .collect::<Option<_>>()?,
        )),
    })
}

fn layer_indices<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<usize>>, D::Error> {
    let index = |v: &Value| v.as_u64().and_then(|n| usize::try_from(n).ok());
    checked::value(d, "an integer or a list of integers", |v| match v {
        Value::Array(items) => items.iter().map(index).collect(),
        v => index(v).map(|n| vec![n]),
    })
}

/// A `rank_pattern` value.
struct Rank(usize);

impl<'de> Deserialize<'de> for Rank {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked::required(d, "a positive integer", |v| {
            v.as_u64()
                .filter(|n| *n >= 1)
                .and_then(|n| usize::try_from(n).ok())
        })
        .map(Rank)
    }
}

/// What an alpha must be: its scaling (`alpha / r`, `alpha / √r`, at most `|alpha|`) multiplies
/// the update in `f32`, so a larger one (`1e308`) would turn every output into infinities.
const ALPHA_EXPECTED: &str = "a finite number within f32's range (|alpha| ≤ 3.4028235e38)";

fn as_alpha(v: &serde_json::Value) -> Option<f64> {
    v.as_f64().filter(|n| n.abs() <= f64::from(f32::MAX))
}

/// `lora_alpha`: see [`ALPHA_EXPECTED`].
fn alpha<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    checked::value(d, ALPHA_EXPECTED, as_alpha)
}

/// An `alpha_pattern` value.
struct Alpha(f64);

impl<'de> Deserialize<'de> for Alpha {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked::required(d, ALPHA_EXPECTED, as_alpha).map(Alpha)
    }
}

impl Settings {
    fn from_file(file: SettingsFile, path: &Path) -> Result<Self, PeftIoError> {
        let settings = Self {
            r: file.r.unwrap_or(8),
            lora_alpha: file.lora_alpha.unwrap_or(8.0),
            lora_dropout: file.lora_dropout.unwrap_or(0.0),
            use_rslora: file.use_rslora.unwrap_or(false),
            use_dora: file.use_dora.unwrap_or(false),
            bias: file.bias.unwrap_or(LoraBias::None),
            init_lora_weights: file
                .init_lora_weights
                .unwrap_or(InitLoraWeights::Bool(true)),
            target_modules: file.target_modules,
            exclude_modules: file.exclude_modules,
            layers_to_transform: file.layers_to_transform,
            layers_pattern: file.layers_pattern.unwrap_or_default(),
            rank_pattern: (file.rank_pattern.unwrap_or_default().into_iter())
                .map(|(k, Rank(r))| (k, r))
                .collect(),
            alpha_pattern: (file.alpha_pattern.unwrap_or_default().into_iter())
                .map(|(k, Alpha(a))| (k, a))
                .collect(),
            modules_to_save: file.modules_to_save.unwrap_or_default(),
        };
        settings.check_patterns(path)?;
        Ok(settings)
    }

    /// The settings of an already parsed file (pattern entries in the map's order).
    fn from_values(values: &Map<String, Value>, path: &Path) -> Result<Self, PeftIoError> {
        check_peft_type(values, path)?;
        let file = json_config_from_value(&Value::Object(values.clone()), path)?;
        Self::from_file(file, path)
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

/// `rank_pattern` / `alpha_pattern`: an object whose entries are kept in file order, as PEFT
/// matches them in that order.
fn ordered_patterns<'de, D, V>(deserializer: D) -> Result<Option<Vec<(String, V)>>, D::Error>
where
    D: Deserializer<'de>,
    V: Deserialize<'de>,
{
    const EXPECTED: &str = "an object mapping patterns to values";
    struct Entries<V>(std::marker::PhantomData<V>);
    impl<'de, V: Deserialize<'de>> Visitor<'de> for Entries<V> {
        type Value = Option<Vec<(String, V)>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(EXPECTED)
        }

        fn visit_bool<E: Error>(self, v: bool) -> Result<Self::Value, E> {
            Err(checked::refused(EXPECTED, &Value::from(v)))
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<Self::Value, E> {
            Err(checked::refused(EXPECTED, &Value::from(v)))
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<Self::Value, E> {
            Err(checked::refused(EXPECTED, &Value::from(v)))
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<Self::Value, E> {
            Err(checked::refused(EXPECTED, &Value::from(v)))
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<Self::Value, E> {
            Err(checked::refused(EXPECTED, &Value::from(v)))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element::<Value>()? {
                items.push(item);
            }
            Err(checked::refused(EXPECTED, &Value::Array(items)))
        }

        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut entries = Vec::new();
            while let Some((key, value)) = map.next_entry::<String, V>()? {
                entries.push((key, value));
            }
            Ok(Some(entries))
        }
    }
    deserializer.deserialize_any(Entries(std::marker::PhantomData))
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "adapter_config.json";

    fn config(text: &str) -> AdapterConfig {
        AdapterConfig::from_json_str(text, FILE.as_ref()).unwrap()
    }

    #[test]
    fn pattern_entries_keep_their_file_order() {
        let config = config(
            r#"{"peft_type": "LORA", "rank_pattern": {"v": 2, "q": 4}, "alpha_pattern": {"z": 1, "a": 3}}"#,
        );
        assert_eq!(config.rank_pattern(), [("v".into(), 2), ("q".into(), 4)]);
        assert_eq!(
            config.alpha_pattern(),
            [("z".into(), 1.0), ("a".into(), 3.0)]
        );
    }

    #[test]
    fn a_null_pattern_entry_is_refused_under_its_key() {
        let err = AdapterConfig::from_json_str(
            r#"{"peft_type": "LORA", "rank_pattern": {"q": null}}"#,
            FILE.as_ref(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "adapter_config.json: key `rank_pattern.q`: expected a positive integer, found null"
        );
    }

    #[test]
    fn metadata_keys_can_be_set() {
        let mut config =
            config(r#"{"peft_type": "LORA", "r": 4, "rank_pattern": {"v": 2, "q": 4}}"#);
        config
            .set_metadata("base_model_name_or_path", Value::from("t5-small"))
            .unwrap();
        assert_eq!(
            config.get("base_model_name_or_path"),
            Some(&Value::from("t5-small"))
        );
        assert_eq!(config.rank_pattern(), [("v".into(), 2), ("q".into(), 4)]);
    }

    #[test]
    fn a_key_set_to_the_value_it_has_is_accepted() {
        let mut config = config(r#"{"peft_type": "LORA", "r": 4}"#);
        config.set_metadata("r", Value::from(4)).unwrap();
    }

    #[test]
    fn a_key_that_changes_the_adapter_is_refused_and_leaves_the_config_unchanged() {
        let mut config = config(r#"{"peft_type": "LORA", "r": 4}"#);
        let before = config.clone();
        let err = config.set_metadata("r", Value::from(8)).unwrap_err();
        assert!(
            matches!(&err, PeftIoError::File(HfFileError::InvalidValue { key, .. }) if key == "r"),
            "{err}"
        );
        assert_eq!(config, before);
    }

    #[test]
    fn pattern_keys_cannot_be_set() {
        let mut config = config(r#"{"peft_type": "LORA", "rank_pattern": {"q": 2}}"#);
        let pattern = serde_json::json!({"q": 2});
        assert!(config.set_metadata("rank_pattern", pattern).is_err());
    }

    #[test]
    fn an_invalid_metadata_value_for_a_known_key_is_refused() {
        let mut config = config(r#"{"peft_type": "LORA"}"#);
        let err = config
            .set_metadata("use_dora", Value::from("yes"))
            .unwrap_err();
        assert!(
            matches!(&err, PeftIoError::File(HfFileError::InvalidValue { key, .. }) if key == "use_dora"),
            "{err}"
        );
    }
}
