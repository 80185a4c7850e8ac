//! Reading source/target pairs from JSONL files, reporting every bad record with its file
//! and line.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::TrainError;

/// The names of the source and target fields of a record.
///
/// ```
/// let fields = lora_train::data::JsonlFields::default();
/// assert_eq!((fields.source.as_str(), fields.target.as_str()), ("instruction", "output_json_minified"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonlFields {
    /// The field holding the model input.
    pub source: String,
    /// The field holding the expected output.
    pub target: String,
}

impl Default for JsonlFields {
    fn default() -> Self {
        Self {
            source: "instruction".into(),
            target: "output_json_minified".into(),
        }
    }
}

/// What to do with a record that cannot be used.
///
/// ```
/// assert_eq!(lora_train::data::JsonlOptions::default().policy, lora_train::data::BadRecordPolicy::Fail);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadRecordPolicy {
    /// Leave it out and report it in [`JsonlData::skipped`].
    Skip,
    /// Stop with [`TrainError::BadRecord`].
    Fail,
}

/// How [`read_jsonl`] reads a file.
///
/// ```
/// use lora_train::data::{BadRecordPolicy, JsonlFields, JsonlOptions};
///
/// let options = JsonlOptions {
///     fields: JsonlFields { source: "input".into(), target: "output".into() },
///     policy: BadRecordPolicy::Skip,
///     target_must_be_json: false,
///     target_required: true,
/// };
/// assert_eq!(options.fields.source, "input");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonlOptions {
    /// Field names (default `instruction` / `output_json_minified`).
    pub fields: JsonlFields,
    /// Skip or fail on bad records (default [`BadRecordPolicy::Fail`]).
    pub policy: BadRecordPolicy,
    /// Whether a target that does not parse as JSON is a bad record (default `true`).
    pub target_must_be_json: bool,
    /// Whether a record without the target field is a bad record (default `true`); when
    /// `false` (prompts to generate from), such a record reads with an empty target.
    pub target_required: bool,
}

impl Default for JsonlOptions {
    fn default() -> Self {
        Self {
            fields: JsonlFields::default(),
            policy: BadRecordPolicy::Fail,
            target_must_be_json: true,
            target_required: true,
        }
    }
}

/// Why a record cannot be used.
///
/// ```
/// use lora_train::data::BadRecordKind;
///
/// let kind = BadRecordKind::MissingField { field: "instruction".into() };
/// assert_eq!(kind.to_string(), "missing field `instruction`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRecordKind {
    /// The line is not UTF-8.
    InvalidUtf8,
    /// The line is not valid JSON.
    InvalidJson {
        /// The parser's message.
        message: String,
    },
    /// The line is JSON but not an object.
    NotAnObject,
    /// The object lacks a field.
    MissingField {
        /// The field.
        field: String,
    },
    /// A field is not a string.
    NotAString {
        /// The field.
        field: String,
    },
    /// The target is not valid JSON (with [`JsonlOptions::target_must_be_json`]).
    TargetNotJson {
        /// The target field.
        field: String,
        /// The parser's message.
        message: String,
    },
}

impl fmt::Display for BadRecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUtf8 => write!(f, "the line is not valid UTF-8"),
            Self::InvalidJson { message } => write!(f, "invalid JSON: {message}"),
            Self::NotAnObject => write!(f, "the record is not a JSON object"),
            Self::MissingField { field } => write!(f, "missing field `{field}`"),
            Self::NotAString { field } => write!(f, "field `{field}` is not a string"),
            Self::TargetNotJson { field, message } => {
                write!(f, "field `{field}` does not hold valid JSON: {message}")
            }
        }
    }
}

/// A record that cannot be used, with where it is.
///
/// ```
/// use lora_train::data::{BadRecord, BadRecordKind};
///
/// let bad = BadRecord { path: "train.jsonl".into(), line: 3, kind: BadRecordKind::NotAnObject };
/// assert_eq!(bad.to_string(), "train.jsonl:3: the record is not a JSON object");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRecord {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub kind: BadRecordKind,
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.kind)
    }
}

impl From<BadRecord> for TrainError {
    fn from(bad: BadRecord) -> Self {
        TrainError::BadRecord {
            path: bad.path,
            line: bad.line,
            reason: bad.kind.to_string(),
        }
    }
}

/// One usable record: its source and target text and its line.
///
/// ```
/// let e = lora_train::data::TextExample { source: "s".into(), target: "{}".into(), line: 1 };
/// assert_eq!(e.line, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextExample {
    /// The source text.
    pub source: String,
    /// The target text.
    pub target: String,
    /// 1-based line in its file.
    pub line: usize,
}

/// What [`read_jsonl`] read: the usable records and, under [`BadRecordPolicy::Skip`], the
/// skipped ones.
///
/// ```
/// let data = lora_train::data::JsonlData::default();
/// assert!(data.examples.is_empty() && data.skipped.is_empty());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonlData {
    /// Usable records, in file order.
    pub examples: Vec<TextExample>,
    /// Bad records that were left out, in file order.
    pub skipped: Vec<BadRecord>,
}

/// Reads the JSONL file at `path`: one JSON object per line, blank lines ignored.
///
/// ```
/// use lora_train::data::{read_jsonl, BadRecordPolicy, JsonlOptions};
///
/// let path = std::env::temp_dir().join(format!("jsonl-doc-{}.jsonl", std::process::id()));
/// std::fs::write(&path, "{\"instruction\":\"a\",\"output_json_minified\":\"{}\"}\nnot json\n").unwrap();
/// let options = JsonlOptions { policy: BadRecordPolicy::Skip, ..JsonlOptions::default() };
/// let data = read_jsonl(&path, &options).unwrap();
/// assert_eq!(data.examples.len(), 1);
/// assert_eq!(data.skipped[0].line, 2);
/// assert!(read_jsonl(&path, &JsonlOptions::default()).is_err());
/// std::fs::remove_file(&path).unwrap();
/// ```
///
/// # Errors
/// [`TrainError::Io`] when the file cannot be read, and every error of [`parse_jsonl`].
pub fn read_jsonl(path: &Path, options: &JsonlOptions) -> Result<JsonlData, TrainError> {
    let bytes = std::fs::read(path).map_err(|source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_jsonl(&bytes, path, options)
}

/// Parses JSONL text already in memory; `path` names it in reports.
///
/// ```
/// use lora_train::data::{parse_jsonl, JsonlOptions};
///
/// let text = b"{\"instruction\":\"a\",\"output_json_minified\":\"[1]\"}\n\n";
/// let data = parse_jsonl(text, "mem.jsonl".as_ref(), &JsonlOptions::default()).unwrap();
/// assert_eq!(data.examples[0].target, "[1]");
/// ```
///
/// # Errors
/// [`TrainError::BadRecord`] with the file and line of the first unusable record under
/// [`BadRecordPolicy::Fail`] (under `Skip` such records are reported in
/// [`JsonlData::skipped`] instead).
pub fn parse_jsonl(
    bytes: &[u8],
    path: &Path,
    options: &JsonlOptions,
) -> Result<JsonlData, TrainError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut data = JsonlData::default();
    for (index, line) in bytes.split(|b| *b == b'\n').enumerate() {
        let line_number = index + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_record(line, line_number, options) {
            Ok(example) => data.examples.push(example),
            Err(kind) => {
                let bad = BadRecord {
                    path: path.to_path_buf(),
                    line: line_number,
                    kind,
                };
                match options.policy {
                    BadRecordPolicy::Skip => data.skipped.push(bad),
                    BadRecordPolicy::Fail => return Err(bad.into()),
                }
            }
        }
    }
    Ok(data)
}

fn parse_record(
    line: &[u8],
    line_number: usize,
    options: &JsonlOptions,
) -> Result<TextExample, BadRecordKind> {
    let text = std::str::from_utf8(line).map_err(|_| BadRecordKind::InvalidUtf8)?;
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| BadRecordKind::InvalidJson {
            message: e.to_string(),
        })?;
    let object = value.as_object().ok_or(BadRecordKind::NotAnObject)?;
    let field = |name: &str| -> Result<String, BadRecordKind> {
        match object.get(name) {
            None => Err(BadRecordKind::MissingField { field: name.into() }),
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(BadRecordKind::NotAString { field: name.into() }),
        }
    };
    let source = field(&options.fields.source)?;
    let target = match field(&options.fields.target) {
        Err(BadRecordKind::MissingField { .. }) if !options.target_required => {
            return Ok(TextExample {
                source,
                target: String::new(),
                line: line_number,
            })
        }
        target => target?,
    };
    if options.target_must_be_json {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(&target) {
            return Err(BadRecordKind::TargetNotJson {
                field: options.fields.target.clone(),
                message: e.to_string(),
            });
        }
    }
    Ok(TextExample {
        source,
        target,
        line: line_number,
    })
}
