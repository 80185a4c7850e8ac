//! `--config FILE`: a run's flags as a JSON object under the flags' own names
//! (`{"lora_alpha": 32, "target_modules": ["q", "v"], "num_train_epochs": 3}`, the names of
//! PEFT's `LoraConfig` and transformers' `TrainingArguments`), and the effective configuration a
//! run writes next to its adapter in the same format, so that `--config` repeats a run.
//!
//! The file's values come first and the command line's flags after them, so a flag given on the
//! command line wins.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{ArgAction, ArgMatches, Command};
use serde_json::{Map, Value};

/// The file a run writes its effective configuration to, in its output folder.
pub const EFFECTIVE_CONFIG_FILE: &str = "training_config.json";

/// Flags that say how a run is started rather than what it is, left out of the written
/// configuration.
const NOT_CONFIGURATION: [&str; 5] = [
    "config",
    "resume",
    "overwrite_output_dir",
    "help",
    "version",
];

/// A `--config` file that cannot be used, naming the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file could not be read.
    #[error("{path}: cannot read the --config file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a JSON object.
    #[error("{path}: expected a JSON object of flag names and values ({message})")]
    NotAnObject { path: PathBuf, message: String },
    /// A key that names no flag of the command.
    #[error("{path}: `{key}` is not a flag of `lora-t5 {command}` (expected one of: {expected})")]
    UnknownKey {
        path: PathBuf,
        key: String,
        command: String,
        expected: String,
    },
    /// A value of the wrong kind.
    #[error("{path}: `{key}`: expected {expected}, found {found}")]
    BadValue {
        path: PathBuf,
        key: String,
        expected: &'static str,
        found: String,
    },
    /// `--config` without a file name.
    #[error("--config needs a file name")]
    MissingPath,
}

/// `args` (the program's arguments, the program name first) with the flags of every
/// `--config FILE` of the subcommand inserted right after the subcommand's name, so that the
/// command line's own flags, which follow, override them. Arguments without a subcommand or
/// without `--config` come back unchanged (clap then reports what is wrong with them).
pub fn expand_config_files(
    args: Vec<OsString>,
    command: &Command,
) -> Result<Vec<OsString>, ConfigFileError> {
    let Some((position, subcommand)) = args.iter().enumerate().skip(1).find_map(|(i, arg)| {
        let name = arg.to_str()?;
        command.find_subcommand(name).map(|sub| (i, sub))
    }) else {
        return Ok(args);
    };
    let mut inserted = Vec::new();
    let mut rest = args[position + 1..].iter();
    while let Some(arg) = rest.next() {
        let path = match arg.to_str() {
            Some("--config") => rest.next().ok_or(ConfigFileError::MissingPath)?.into(),
            Some(flag) => match flag.strip_prefix("--config=") {
                Some(path) => PathBuf::from(path),
                None => continue,
            },
            None => continue,
        };
        inserted.extend(flags_of_file(&path, subcommand)?);
    }
    let mut expanded = args[..=position].to_vec();
    expanded.extend(inserted);
    expanded.extend_from_slice(&args[position + 1..]);
    Ok(expanded)
}

/// The command-line flags a `--config` file stands for.
fn flags_of_file(path: &Path, command: &Command) -> Result<Vec<OsString>, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let object: Map<String, Value> =
        serde_json::from_str(&text).map_err(|e| ConfigFileError::NotAnObject {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let mut flags = Vec::new();
    for (key, value) in &object {
        let normalized = key.replace('-', "_");
        let arg = command
            .get_arguments()
            .filter(|arg| !NOT_CONFIGURATION.contains(&arg.get_id().as_str()))
            .find(|arg| {
                arg.get_long().is_some()
                    && (arg.get_id().as_str() == normalized
                        || arg.get_long().map(|l| l.replace('-', "_")) == Some(normalized.clone())
                        || arg
                            .get_all_aliases()
                            .into_iter()
                            .flatten()
                            .any(|alias| alias.replace('-', "_") == normalized))
            })
            .ok_or_else(|| ConfigFileError::UnknownKey {
                path: path.to_path_buf(),
                key: key.clone(),
                command: command.get_name().to_string(),
                expected: configuration_ids(command).join(", "),
            })?;
        let long = format!("--{}", arg.get_long().unwrap_or_default());
        let bad = |expected: &'static str| ConfigFileError::BadValue {
            path: path.to_path_buf(),
            key: key.clone(),
            expected,
            found: value.to_string(),
        };
        match (arg.get_action(), value) {
            (_, Value::Null) => {}
            (ArgAction::SetTrue, Value::Bool(true)) => flags.push(long.into()),
            (ArgAction::SetTrue, Value::Bool(false)) => {}
            (ArgAction::SetTrue, _) => return Err(bad("true or false")),
            (_, Value::Array(items)) => {
                let items = items
                    .iter()
                    .map(scalar_text)
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad("a list of numbers or strings"))?;
                match arg.get_value_delimiter() {
                    Some(delimiter) => {
                        flags.push(format!("{long}={}", items.join(&delimiter.to_string())).into())
                    }
                    None if matches!(arg.get_action(), ArgAction::Append) => {
                        flags.extend(items.iter().map(|item| format!("{long}={item}").into()))
                    }
                    // A comma-separated flag such as `--target-modules q,v`.
                    None => flags.push(format!("{long}={}", items.join(",")).into()),
                }
            }
            (_, value) => {
                let text = scalar_text(value).ok_or_else(|| bad("a number or a string"))?;
                flags.push(format!("{long}={text}").into());
            }
        }
    }
    Ok(flags)
}

/// A number, string or boolean as the text a flag takes.
fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(flag) => Some(flag.to_string()),
        _ => None,
    }
}

/// The names under which `command`'s configuration is written and read.
fn configuration_ids(command: &Command) -> Vec<String> {
    command
        .get_arguments()
        .filter(|arg| arg.get_long().is_some())
        .map(|arg| arg.get_id().to_string())
        .filter(|id| !NOT_CONFIGURATION.contains(&id.as_str()))
        .collect()
}

/// The effective configuration of a run of `command` parsed into `matches`, defaults included:
/// every flag but those of [`NOT_CONFIGURATION`] under its field name, numbers as JSON numbers,
/// switches as booleans, lists as arrays, flags left unset as `null`. Restricted to the flags
/// `keep` names when it is given (a sweep writes each run's `train` configuration).
pub fn effective_config(matches: &ArgMatches, command: &Command, keep: Option<&Command>) -> Value {
    let kept = keep.map(configuration_ids);
    let mut object = Map::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        if arg.get_long().is_none()
            || NOT_CONFIGURATION.contains(&id)
            || kept
                .as_ref()
                .is_some_and(|ids| !ids.iter().any(|k| k == id))
        {
            continue;
        }
        let value = match arg.get_action() {
            ArgAction::SetTrue | ArgAction::SetFalse => Value::Bool(matches.get_flag(id)),
            _ => match matches.get_raw(id) {
                None => Value::Null,
                Some(raw) => {
                    let items: Vec<Value> = raw
                        .map(|text| json_scalar(&text.to_string_lossy()))
                        .collect();
                    let delimited = arg.get_value_delimiter().is_some();
                    if delimited || matches!(arg.get_action(), ArgAction::Append) {
                        Value::Array(
                            items
                                .into_iter()
                                .flat_map(|item| split_delimited(item, arg.get_value_delimiter()))
                                .collect(),
                        )
                    } else {
                        items.into_iter().next().unwrap_or(Value::Null)
                    }
                }
            },
        };
        object.insert(id.to_string(), value);
    }
    Value::Object(object)
}

/// A delimited raw value (clap keeps `4,8` as one raw value) as its items.
fn split_delimited(item: Value, delimiter: Option<char>) -> Vec<Value> {
    match (item, delimiter) {
        (Value::String(text), Some(delimiter)) => text.split(delimiter).map(json_scalar).collect(),
        (item, _) => vec![item],
    }
}

/// A flag's text as a JSON number when it is one (finite), else as a string.
fn json_scalar(text: &str) -> Value {
    if let Ok(whole) = text.parse::<i64>() {
        return Value::from(whole);
    }
    match text.parse::<f64>() {
        Ok(number) if number.is_finite() && !text.trim().is_empty() => Value::from(number),
        _ => Value::String(text.to_string()),
    }
}

/// Writes `config` as `<dir>/training_config.json`, atomically.
pub fn write_effective_config(
    dir: &Path,
    config: &Value,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut text = serde_json::to_string_pretty(config)?;
    text.push('\n');
    lora_burn::lora_hf::write_atomic(&dir.join(EFFECTIVE_CONFIG_FILE), text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: Sub,
    }

    #[derive(Subcommand, Debug)]
    enum Sub {
        Train(TrainLike),
    }

    #[derive(Args, Debug)]
    struct TrainLike {
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long, alias = "alpha", default_value_t = 16.0)]
        lora_alpha: f64,
        #[arg(long, alias = "targets", default_value = "q,v")]
        target_modules: String,
        #[arg(long, alias = "rslora")]
        use_rslora: bool,
        #[arg(long, value_delimiter = ',', default_value = "4,8")]
        ranks: Vec<usize>,
        #[arg(long)]
        max_steps: Option<usize>,
    }

    fn parse(args: &[&str]) -> Result<(TrainLike, Value), Box<dyn std::error::Error>> {
        let command = Cli::command().args_override_self(true);
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        let matches = command
            .clone()
            .try_get_matches_from(expand_config_files(args, &command)?)?;
        let Sub::Train(train) = Cli::from_arg_matches(&matches)?.command;
        let (_, sub) = matches.subcommand().ok_or("no subcommand")?;
        let sub_command = command.find_subcommand("train").ok_or("no train")?;
        Ok((train, effective_config(sub, sub_command, None)))
    }

    fn config_file(text: &str) -> tempfile_path::TempFile {
        tempfile_path::TempFile::with(text)
    }

    /// A file under the system's temporary folder, removed when dropped.
    mod tempfile_path {
        pub struct TempFile(pub std::path::PathBuf);
        impl TempFile {
            pub fn with(text: &str) -> Self {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static NEXT: AtomicUsize = AtomicUsize::new(0);
                let path = std::env::temp_dir().join(format!(
                    "lora-t5-config-{}-{}.json",
                    std::process::id(),
                    NEXT.fetch_add(1, Ordering::Relaxed)
                ));
                std::fs::write(&path, text).expect("temporary file");
                Self(path)
            }
            pub fn arg(&self) -> &str {
                self.0.to_str().expect("utf-8 temporary path")
            }
        }
        impl Drop for TempFile {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn file_values_apply_and_the_command_line_overrides_them() {
        let file = config_file(
            r#"{"lora_alpha": 32, "target-modules": ["q", "k", "v"], "use_rslora": true,
                "ranks": [2, 3], "max_steps": null}"#,
        );
        let (train, _) = parse(&["lora-t5", "train", "--config", file.arg()]).unwrap();
        assert_eq!(train.lora_alpha, 32.0);
        assert_eq!(train.target_modules, "q,k,v");
        assert!(train.use_rslora);
        assert_eq!(train.ranks, [2, 3]);
        assert_eq!(train.max_steps, None);
        let (train, _) =
            parse(&["lora-t5", "train", "--alpha", "8", "--config", file.arg()]).unwrap();
        assert_eq!(train.lora_alpha, 8.0, "the command line wins");
    }

    #[test]
    fn aliases_are_accepted_as_keys() {
        let file = config_file(r#"{"alpha": 4, "targets": "o"}"#);
        let (train, _) = parse(&["lora-t5", "train", &format!("--config={}", file.arg())]).unwrap();
        assert_eq!(
            (train.lora_alpha, train.target_modules.as_str()),
            (4.0, "o")
        );
    }

    #[test]
    fn the_written_configuration_reads_back_to_the_same_run() {
        let (first, written) = parse(&[
            "lora-t5", "train", "--alpha", "24", "--ranks", "1,5", "--rslora",
        ])
        .unwrap();
        assert_eq!(written["lora_alpha"], 24);
        assert_eq!(written["ranks"], serde_json::json!([1, 5]));
        assert_eq!(written["use_rslora"], true);
        assert_eq!(written["max_steps"], Value::Null);
        assert!(written.get("config").is_none());
        let file = config_file(&written.to_string());
        let (again, rewritten) = parse(&["lora-t5", "train", "--config", file.arg()]).unwrap();
        assert_eq!(written, rewritten);
        assert_eq!(
            (again.lora_alpha, again.ranks, again.use_rslora),
            (first.lora_alpha, first.ranks, first.use_rslora)
        );
    }

    #[test]
    fn an_unknown_key_names_the_file_and_the_key() {
        let file = config_file(r#"{"lora_alhpa": 4}"#);
        let error = parse(&["lora-t5", "train", "--config", file.arg()]).unwrap_err();
        let message = error.to_string();
        assert!(message.contains(file.arg()), "{message}");
        assert!(message.contains("`lora_alhpa`"), "{message}");
        assert!(message.contains("lora_alpha"), "{message}");
    }

    #[test]
    fn bad_values_and_files_are_typed_errors() {
        let cases = [
            (r#"{"use_rslora": 1}"#, "expected true or false"),
            (
                r#"{"lora_alpha": {"x": 1}}"#,
                "expected a number or a string",
            ),
            (
                r#"{"ranks": [[1]]}"#,
                "expected a list of numbers or strings",
            ),
            (r#"[1, 2]"#, "expected a JSON object"),
            (r#"{"config": "other.json"}"#, "is not a flag"),
        ];
        for (text, expected) in cases {
            let file = config_file(text);
            let message = parse(&["lora-t5", "train", "--config", file.arg()])
                .unwrap_err()
                .to_string();
            assert!(message.contains(expected), "{text}: {message}");
        }
        let message = parse(&["lora-t5", "train", "--config", "/nonexistent/c.json"])
            .unwrap_err()
            .to_string();
        assert!(message.contains("/nonexistent/c.json"), "{message}");
        assert!(matches!(
            expand_config_files(
                ["lora-t5", "train", "--config"]
                    .map(OsString::from)
                    .to_vec(),
                &Cli::command()
            ),
            Err(ConfigFileError::MissingPath)
        ));
    }
}
