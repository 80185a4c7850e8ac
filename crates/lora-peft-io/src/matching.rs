//! PEFT's rules for which modules an adapter targets, and which pattern sets their rank.

use regex::Regex;

use crate::{AdapterConfig, ModuleSelector, PeftIoError};

/// `re.fullmatch(pattern, path)` as a Rust regex.
pub(crate) fn full_match_regex(pattern: &str) -> String {
    format!("^(?:{pattern})$")
}

/// PEFT's `re.match(rf"(.*\.)?({key})$", path)` for `rank_pattern` / `alpha_pattern` keys.
pub(crate) fn pattern_key_regex(key: &str) -> String {
    format!(r"^(?:.*\.)?(?:{key})$")
}

/// PEFT's `re.match(rf"(?:^|.*?\.){pattern}\.(?P<idx>\d+)\.", path)` for `layers_pattern`.
pub(crate) fn layer_index_regex(pattern: &str) -> String {
    format!(r"^(?:.*?\.)?(?:{pattern})\.(\d+)\.")
}

/// PEFT's default when `layers_pattern` is empty: the first `name.<index>.` segment.
const ANY_LAYER_INDEX: &str = r"^.*?\.[^.]*\.(\d+)\.";

fn matches(regex: &str, text: &str) -> bool {
    Regex::new(regex).is_ok_and(|r| r.is_match(text))
}

/// The value of the first key (in order) whose pattern matches `path`.
pub(crate) fn first_pattern_match<T: Copy>(patterns: &[(String, T)], path: &str) -> Option<T> {
    patterns
        .iter()
        .find(|(key, _)| matches(&pattern_key_regex(key), path))
        .map(|(_, value)| *value)
}

pub(crate) fn selector_matches(selector: &ModuleSelector, path: &str) -> bool {
    match selector {
        ModuleSelector::Regex(pattern) => matches(&full_match_regex(pattern), path),
        ModuleSelector::Names(names) => names
            .iter()
            .any(|n| path == n || path.ends_with(&format!(".{n}"))),
    }
}

/// The index of the layer (e.g. `2` in `encoder.block.2.layer.0.SelfAttention.q`) as PEFT finds
/// it for `layers_to_transform`.
fn layer_index(path: &str, layers_pattern: &[String]) -> Option<usize> {
    let capture = |regex: &str| {
        Regex::new(regex)
            .ok()?
            .captures(path)?
            .get(1)?
            .as_str()
            .parse()
            .ok()
    };
    if layers_pattern.is_empty() {
        capture(ANY_LAYER_INDEX)
    } else {
        layers_pattern
            .iter()
            .find_map(|p| capture(&layer_index_regex(p)))
    }
}

/// Whether PEFT would put this adapter on the module at `path` (`check_target_module_exists`).
///
/// `target_modules` of `None` uses `default_targets` (the architecture's default); the string
/// `"all-linear"` selects every layer but `lm_head`.
///
/// ```
/// use lora_peft_io::{is_target, AdapterConfig};
///
/// let text = r#"{"peft_type": "LORA", "target_modules": ["q", "v"], "exclude_modules": ["decoder.block.0.layer.0.SelfAttention.v"]}"#;
/// let config = AdapterConfig::from_json_str(text, "adapter_config.json".as_ref()).unwrap();
/// assert!(is_target(&config, "encoder.block.0.layer.0.SelfAttention.q", None));
/// assert!(!is_target(&config, "encoder.block.0.layer.0.SelfAttention.k", None));
/// assert!(!is_target(&config, "decoder.block.0.layer.0.SelfAttention.v", None));
/// ```
pub fn is_target(config: &AdapterConfig, path: &str, default_targets: Option<&[&str]>) -> bool {
    if let Some(exclude) = config.exclude_modules() {
        if selector_matches(exclude, path) {
            return false;
        }
    }
    if config
        .modules_to_save()
        .iter()
        .any(|m| matches(&format!(r"^(?:|.*\.)(?:{m})(?:$|\..*)"), path))
    {
        return false;
    }
    let defaults;
    let targets = match config.target_modules() {
        Some(ModuleSelector::Regex(p)) if p == "all-linear" => return !is_output_layer(path),
        Some(t) => t,
        None => match default_targets {
            Some(names) => {
                defaults = ModuleSelector::Names(names.iter().map(|n| n.to_string()).collect());
                &defaults
            }
            None => return false,
        },
    };
    match targets {
        ModuleSelector::Regex(_) => selector_matches(targets, path),
        ModuleSelector::Names(names) => {
            if names.iter().any(|n| n == path) {
                return true;
            }
            if !selector_matches(targets, path) {
                return false;
            }
            match config.layers_to_transform() {
                None | Some([]) => true,
                Some(indices) => {
                    layer_index(path, config.layers_pattern()).is_some_and(|i| indices.contains(&i))
                }
            }
        }
    }
}

fn is_output_layer(path: &str) -> bool {
    path == "lm_head" || path.ends_with(".lm_head")
}

/// The paths among `layer_paths` that the adapter targets. Every entry of a `target_modules`
/// list, and a `target_modules` regex, must match at least one layer: otherwise
/// [`PeftIoError::TargetNotFound`] names it.
///
/// # Errors
/// [`PeftIoError::TargetNotFound`] for a `target_modules` entry or regex that matches no layer,
/// or a `null` `target_modules` on a model without default targets.
pub fn select_targets(
    config: &AdapterConfig,
    layer_paths: &[String],
    default_targets: Option<&[&str]>,
) -> Result<Vec<String>, PeftIoError> {
    let selected: Vec<String> = layer_paths
        .iter()
        .filter(|p| is_target(config, p, default_targets))
        .cloned()
        .collect();
    let not_found = |target: &str| PeftIoError::TargetNotFound {
        target: target.to_string(),
        available: summarize(layer_paths),
    };
    match config.target_modules() {
        Some(ModuleSelector::Names(names)) => {
            for name in names {
                let single = ModuleSelector::Names(vec![name.clone()]);
                if !layer_paths.iter().any(|p| selector_matches(&single, p)) {
                    return Err(not_found(name));
                }
            }
        }
        Some(ModuleSelector::Regex(pattern)) if selected.is_empty() => {
            return Err(not_found(pattern))
        }
        None if default_targets.is_none() => {
            return Err(not_found(
                "<null: the architecture's default, which this model does not define>",
            ))
        }
        _ => {}
    }
    Ok(selected)
}

fn summarize(paths: &[String]) -> String {
    const SHOWN: usize = 6;
    let mut text = paths
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if paths.len() > SHOWN {
        text.push_str(&format!(", … {} in all", paths.len()));
    }
    if text.is_empty() {
        text.push_str("none");
    }
    text
}
