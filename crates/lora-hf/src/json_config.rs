//! JSON configuration files (`config.json`, `adapter_config.json`, …) read by `serde` derive, with
//! every error naming the file, the key path and what was expected.
//!
//! A config type derives [`serde::Deserialize`] with `#[serde(default)]` fields; the fields whose
//! values need a check (a positive count, a finite number, a token id) name one of the
//! [`checked`] functions in `deserialize_with`. [`parse_json_config`] runs the derive through
//! `serde_path_to_error`, so a bad value comes back as [`HfFileError::InvalidValue`] with the
//! dotted key path (`rank_pattern.q`), the expected value and the JSON text found.

use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::HfFileError;

/// The key reported for an error in the document itself rather than under a key.
pub const ROOT_KEY: &str = "<root>";

/// Parses the text of a JSON file into `T` (a derived config); `path` names the file in errors.
///
/// ```
/// use lora_hf::{checked, parse_json_config, HfFileError};
///
/// #[derive(serde::Deserialize)]
/// struct Config {
///     #[serde(default, deserialize_with = "checked::positive_count")]
///     d_model: Option<usize>,
/// }
///
/// let config: Config = parse_json_config(r#"{"d_model": 768, "other": 1}"#, "config.json".as_ref()).unwrap();
/// assert_eq!(config.d_model, Some(768));
/// let err = parse_json_config::<Config>(r#"{"d_model": 0}"#, "config.json".as_ref()).err().unwrap();
/// assert_eq!(err.to_string(), "config.json: key `d_model`: expected a positive integer, found 0");
/// ```
///
/// # Errors
/// [`HfFileError::Json`] with line and column for text that is not JSON, and
/// [`HfFileError::InvalidValue`] naming the key path for a value `T` refuses (key
/// [`ROOT_KEY`] when the document is not a JSON object).
pub fn parse_json_config<T: DeserializeOwned>(text: &str, path: &Path) -> Result<T, HfFileError> {
    // A derived struct also reads from a JSON array: anything but an object is refused first.
    if !text.trim_start().starts_with('{') {
        parse_json_object(text, path)?;
    }
    // From the text rather than from a parsed `Value`, so that a field may see its object's
    // entries in file order (a `serde_json::Map` sorts them), and in one pass.
    let mut deserializer = serde_json::Deserializer::from_str(text);
    match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(config) => {
            deserializer
                .end()
                .map_err(|e| HfFileError::json(path, &e))?;
            Ok(config)
        }
        Err(err) => {
            // Text that is not JSON, or not an object, is reported as such (with line and
            // column, or the value found), whatever a field met first.
            parse_json_object(text, path)?;
            Err(refusal(err, path))
        }
    }
}

/// Parses the text of a JSON file that must hold one object.
///
/// ```
/// let map = lora_hf::parse_json_object(r#"{"r": 8}"#, "adapter_config.json".as_ref()).unwrap();
/// assert_eq!(map["r"], 8);
/// let err = lora_hf::parse_json_object("[1]", "adapter_config.json".as_ref()).unwrap_err();
/// assert_eq!(err.to_string(), "adapter_config.json: key `<root>`: expected a JSON object, found [1]");
/// ```
///
/// # Errors
/// [`HfFileError::Json`] with line and column for text that is not JSON, and
/// [`HfFileError::InvalidValue`] under [`ROOT_KEY`] for a document that is not an object.
pub fn parse_json_object(text: &str, path: &Path) -> Result<Map<String, Value>, HfFileError> {
    match serde_json::from_str(text).map_err(|e| HfFileError::json(path, &e))? {
        Value::Object(map) => Ok(map),
        other => Err(HfFileError::invalid_value(
            path,
            ROOT_KEY,
            "a JSON object",
            &other,
        )),
    }
}

/// Deserializes `T` from an already parsed JSON value; `path` names the file in errors.
///
/// ```
/// #[derive(serde::Deserialize)]
/// struct Config {
///     #[serde(default, deserialize_with = "lora_hf::checked::flag")]
///     use_dora: Option<bool>,
/// }
///
/// let value = serde_json::json!({"use_dora": "yes"});
/// let err = lora_hf::json_config_from_value::<Config>(&value, "adapter_config.json".as_ref()).err().unwrap();
/// assert_eq!(err.to_string(), "adapter_config.json: key `use_dora`: expected true or false, found \"yes\"");
/// ```
///
/// # Errors
/// [`HfFileError::InvalidValue`] naming the key path for a value `T` refuses.
pub fn json_config_from_value<T: DeserializeOwned>(
    value: &Value,
    path: &Path,
) -> Result<T, HfFileError> {
    serde_path_to_error::deserialize(value).map_err(|err| refusal(err, path))
}

/// The [`HfFileError::InvalidValue`] for a value refused while deserializing `path`.
fn refusal(err: serde_path_to_error::Error<serde_json::Error>, path: &Path) -> HfFileError {
    let key = match err.path().to_string() {
        dot if dot == "." => ROOT_KEY.to_string(),
        key => key,
    };
    let inner = err.into_inner();
    let message = inner.to_string();
    // Errors met while reading text end with their position, which the key path replaces.
    let position = format!(" at line {} column {}", inner.line(), inner.column());
    let message = message.strip_suffix(&position).unwrap_or(&message);
    let (expected, found) = split_message(message);
    HfFileError::InvalidValue {
        path: path.to_path_buf(),
        key,
        expected,
        found,
    }
}

/// Splits an error message into what was expected and what was found: the [`checked`] functions
/// write `expected …, found …`; serde's own errors read `invalid type: …, expected …`.
fn split_message(message: &str) -> (String, String) {
    if let Some((expected, found)) = message
        .strip_prefix("expected ")
        .and_then(|rest| rest.split_once(", found "))
    {
        return (expected.to_string(), found.to_string());
    }
    let serde_form = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))
        .and_then(|rest| rest.split_once(", expected "));
    match serde_form {
        Some((found, expected)) => (expected.to_string(), found.to_string()),
        None => ("a valid value".to_string(), message.to_string()),
    }
}

/// The JSON text of `value`, cut after 60 characters so that an error never repeats a large
/// value whole.
pub(crate) fn describe(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(60) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// A value refused by a check: shown as `expected …, found …`, the form
/// [`parse_json_config`] turns back into [`HfFileError::InvalidValue`].
struct Mismatch<'a> {
    expected: &'a str,
    found: &'a Value,
}

impl fmt::Display for Mismatch<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected {}, found {}",
            self.expected,
            describe(self.found)
        )
    }
}

/// `deserialize_with` functions for `#[serde(default)] Option<_>` fields of a config: each reads
/// the value of its key (`null` counts as absent, as transformers and PEFT read it), checks it and
/// names what it expected when it refuses.
pub mod checked {
    use serde::de::{Deserialize, Deserializer, Error};
    use serde_json::Value;

    use super::Mismatch;

    /// Reads the value of a key as JSON and converts it with `convert`, refusing it as not being
    /// `expected` when `convert` gives `None`. The building block of the other functions, and of a
    /// config's own checks.
    ///
    /// ```
    /// use serde_json::Value;
    ///
    /// fn bias<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    ///     lora_hf::checked::value(d, "\"none\" or \"all\"", |v: &Value| {
    ///         v.as_str().filter(|s| ["none", "all"].contains(s)).map(str::to_string)
    ///     })
    /// }
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Config {
    ///     #[serde(default, deserialize_with = "bias")]
    ///     bias: Option<String>,
    /// }
    ///
    /// let err = lora_hf::parse_json_config::<Config>(r#"{"bias": "some"}"#, "c.json".as_ref()).err().unwrap();
    /// assert_eq!(err.to_string(), "c.json: key `bias`: expected \"none\" or \"all\", found \"some\"");
    /// ```
    ///
    /// # Errors
    /// A deserializer error in the `expected …, found …` form.
    pub fn value<'de, D, T>(
        deserializer: D,
        expected: &str,
        convert: impl FnOnce(&Value) -> Option<T>,
    ) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
    {
        let found = Value::deserialize(deserializer)?;
        if found.is_null() {
            return Ok(None);
        }
        convert(&found)
            .map(Some)
            .ok_or_else(|| refused(expected, &found))
    }

    /// As [`value`], for a value that must be there: `null` is refused too. For the entries of a
    /// map or a list, read through a newtype.
    ///
    /// ```
    /// struct Rank(usize);
    ///
    /// impl<'de> serde::Deserialize<'de> for Rank {
    ///     fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
    ///         lora_hf::checked::required(d, "a positive integer", |v| v.as_u64().filter(|n| *n > 0))
    ///             .map(|n| Rank(n as usize))
    ///     }
    /// }
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Config {
    ///     ranks: std::collections::BTreeMap<String, Rank>,
    /// }
    ///
    /// let err = lora_hf::parse_json_config::<Config>(r#"{"ranks": {"q": null}}"#, "c.json".as_ref()).err().unwrap();
    /// assert_eq!(err.to_string(), "c.json: key `ranks.q`: expected a positive integer, found null");
    /// ```
    ///
    /// # Errors
    /// A deserializer error in the `expected …, found …` form.
    pub fn required<'de, D, T>(
        deserializer: D,
        expected: &str,
        convert: impl FnOnce(&Value) -> Option<T>,
    ) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
    {
        let found = Value::deserialize(deserializer)?;
        convert(&found).ok_or_else(|| refused(expected, &found))
    }

    /// The deserializer error refusing `found` as not being `expected`, in the
    /// `expected …, found …` form that the config readers turn into
    /// [`HfFileError::InvalidValue`](crate::HfFileError::InvalidValue).
    ///
    /// ```
    /// let err: serde_json::Error = lora_hf::checked::refused("an object", &serde_json::json!(5));
    /// assert_eq!(err.to_string(), "expected an object, found 5");
    /// ```
    pub fn refused<E: Error>(expected: &str, found: &Value) -> E {
        E::custom(Mismatch { expected, found })
    }

    /// An integer ≥ 1 (sizes, counts, ranks): "a positive integer".
    ///
    /// # Errors
    /// Zero, a negative, fractional or non-numeric value.
    pub fn positive_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        value(d, "a positive integer", |v| {
            v.as_u64()
                .filter(|n| *n >= 1)
                .and_then(|n| usize::try_from(n).ok())
        })
    }

    /// Any finite number: "a finite number".
    ///
    /// # Errors
    /// A non-numeric value or one outside `f64`'s range.
    pub fn finite_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        value(d, "a finite number", |v| {
            v.as_f64().filter(|n| n.is_finite())
        })
    }

    /// A finite number ≥ 0 (epsilons, scales): "a finite non-negative number".
    ///
    /// # Errors
    /// A negative or non-numeric value.
    pub fn non_negative_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        value(d, "a finite non-negative number", |v| {
            v.as_f64().filter(|n| n.is_finite() && *n >= 0.0)
        })
    }

    /// A probability of dropping a value, in `[0, 1)`: "a number in [0, 1)".
    ///
    /// # Errors
    /// A value outside `[0, 1)` or a non-numeric one.
    pub fn dropout_probability<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        value(d, "a number in [0, 1)", |v| {
            v.as_f64().filter(|n| (0.0..1.0).contains(n))
        })
    }

    /// `true` or `false`.
    ///
    /// # Errors
    /// Any other value.
    pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
        value(d, "true or false", Value::as_bool)
    }

    /// A token id (an integer that fits `u32`): "a token id".
    ///
    /// # Errors
    /// A negative, fractional, too large or non-numeric value.
    pub fn token_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        value(d, "a token id", as_token_id)
    }

    /// A token id, or a non-empty list of them of which the first is used (`eos_token_id` in
    /// generation-style configs).
    ///
    /// # Errors
    /// Anything but a token id or a non-empty list starting with one.
    pub fn first_token_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        value(
            d,
            "a token id or a non-empty list of token ids",
            |v| match v {
                Value::Array(items) => items.first().and_then(as_token_id),
                v => as_token_id(v),
            },
        )
    }

    /// A list of strings.
    ///
    /// # Errors
    /// Anything but a list whose items are all strings.
    pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
        value(d, "a list of strings", strings)
    }

    /// A string or a list of strings, read as a list.
    ///
    /// # Errors
    /// Anything but a string or a list whose items are all strings.
    pub fn one_or_more_strings<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<String>>, D::Error> {
        value(d, "a string or a list of strings", |v| match v {
            Value::String(s) => Some(vec![s.clone()]),
            v => strings(v),
        })
    }

    /// The strings of a JSON list whose items are all strings.
    pub(crate) fn strings(value: &Value) -> Option<Vec<String>> {
        value
            .as_array()?
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect()
    }

    fn as_token_id(value: &Value) -> Option<u32> {
        value.as_u64().and_then(|n| u32::try_from(n).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    struct Sample {
        #[serde(default, deserialize_with = "checked::positive_count")]
        count: Option<usize>,
        #[serde(default)]
        nested: Option<Nested>,
        #[serde(default)]
        name: Option<String>,
    }

    #[derive(Debug, serde::Deserialize)]
    struct Nested {
        #[serde(default, deserialize_with = "checked::first_token_id")]
        eos: Option<u32>,
    }

    fn parse(text: &str) -> Result<Sample, HfFileError> {
        parse_json_config(text, "c.json".as_ref())
    }

    fn invalid(err: HfFileError) -> (String, String, String) {
        match err {
            HfFileError::InvalidValue {
                key,
                expected,
                found,
                ..
            } => (key, expected, found),
            other => panic!("expected InvalidValue, got {other}"),
        }
    }

    #[test]
    fn absent_and_null_keys_read_as_none_and_unknown_keys_are_ignored() {
        let sample = parse(r#"{"count": null, "other": [1, 2]}"#).unwrap();
        assert_eq!(sample.count, None);
        assert!(sample.nested.is_none() && sample.name.is_none());
    }

    #[test]
    fn nested_keys_are_reported_with_their_dotted_path() {
        let (key, expected, found) = invalid(parse(r#"{"nested": {"eos": [-1]}}"#).unwrap_err());
        assert_eq!(key, "nested.eos");
        assert_eq!(expected, "a token id or a non-empty list of token ids");
        assert_eq!(found, "[-1]");
        let sample = parse(r#"{"nested": {"eos": [5, 6]}}"#).unwrap();
        assert_eq!(sample.nested.unwrap().eos, Some(5));
    }

    #[test]
    fn serdes_own_type_errors_keep_the_key_and_both_sides() {
        let (key, expected, found) = invalid(parse(r#"{"name": 3}"#).unwrap_err());
        assert_eq!(key, "name");
        assert_eq!(expected, "a string");
        assert_eq!(found, "integer `3`");
    }

    #[test]
    fn a_document_that_is_not_an_object_is_refused_at_the_root() {
        let (key, expected, found) = invalid(parse("[1, 2]").unwrap_err());
        assert_eq!(
            (key.as_str(), expected.as_str(), found.as_str()),
            (ROOT_KEY, "a JSON object", "[1,2]")
        );
    }

    #[test]
    fn invalid_json_reports_line_and_column() {
        let err = parse("{\n  \"count\": 1,\n}").unwrap_err();
        assert!(
            matches!(
                err,
                HfFileError::Json {
                    line: 3,
                    column: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_long_value_is_cut_in_the_error() {
        let long = format!(r#"{{"count": "{}"}}"#, "x".repeat(500));
        let (_, _, found) = invalid(parse(&long).unwrap_err());
        assert_eq!(found.chars().count(), 61);
        assert!(found.ends_with('…'));
    }
}
