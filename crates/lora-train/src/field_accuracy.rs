//! Field-level accuracy of predicted JSON documents: which parts of a reference document a
//! prediction gets right, path by path.
//!
//! Each document is flattened to its leaves ([`flatten_leaves`]): the scalars (strings,
//! numbers, booleans, `null`) and the empty objects and arrays, each at its key path — object
//! keys joined by `.`, array elements as `[i]`, such as `page.sections[1].position`. A key
//! that is empty or holds `.`, `[`, `]` or `"` is written as a quoted JSON string in
//! brackets (`a["x.y"]`), so that two leaves never share a path; a document that is a
//! scalar has one leaf, at the empty path.
//!
//! A reference leaf is matched when the prediction has the same value at the same path
//! (numbers compare as numbers: `1` matches `1.0`; array indices are kept, so a dropped
//! array element shifts and misses the ones after it). A prediction that is not valid JSON
//! matches nothing. [`field_accuracy`] counts, per path over the corpus, the references
//! that have the path and the predictions that match there, and the overall (micro)
//! accuracy over all reference leaves. Leaves that only the prediction has are not counted.
//!
//! With a grouping key (`group_arrays_by: Some("type")`), the same counts are also
//! aggregated per group: an array element that is an object with that key holding a scalar
//! is written `[type=form]` instead of `[2]` (the value as is, quoted like a key when it
//! needs it), so that the sections of every document that have the same `type` add up
//! together: `page.sections[type=form].fields[0]`. Elements without the key keep their
//! index. The grouping only changes how matches are summed, never what matches.
//!
//! ```
//! use lora_train::field_accuracy::field_accuracy;
//!
//! let reference = r#"{"page":{"theme":"sakura-pink","sections":[{"type":"banner","position":"top"}]}}"#;
//! let prediction = r#"{"page":{"theme":"ocean-blue","sections":[{"type":"banner","position":"top"}]}}"#;
//! let report = field_accuracy(&[prediction], &[reference], Some("type")).unwrap();
//! assert_eq!(report.overall(), 2.0 / 3.0);
//! assert_eq!(report.per_path["page.theme"].matches, 0);
//! let groups = report.per_group.as_ref().unwrap();
//! assert_eq!(groups["page.sections[type=banner].position"].accuracy(), 1.0);
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde_json::Value;

use crate::metrics::check_pairs;
use crate::TrainError;

/// How many references have a path and how many predictions match them there.
///
/// ```
/// use lora_train::field_accuracy::FieldCount;
///
/// assert_eq!(FieldCount { references: 4, matches: 3 }.accuracy(), 0.75);
/// assert_eq!(FieldCount::default().accuracy(), 0.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FieldCount {
    /// Reference leaves at the path.
    pub references: usize,
    /// Those the prediction matched.
    pub matches: usize,
}

impl FieldCount {
    /// `matches / references`; 0 without references.
    ///
    /// ```
    /// use lora_train::field_accuracy::FieldCount;
    /// assert_eq!(FieldCount { references: 2, matches: 1 }.accuracy(), 0.5);
    /// ```
    pub fn accuracy(&self) -> f64 {
        if self.references == 0 {
            0.0
        } else {
            self.matches as f64 / self.references as f64
        }
    }

    fn add(&mut self, matched: bool) {
        self.references += 1;
        self.matches += usize::from(matched);
    }
}

/// The field accuracy of a corpus ([`field_accuracy`]). Its [`fmt::Display`] is a
/// Markdown table of the overall accuracy and each path (and each group).
///
/// ```
/// use lora_train::field_accuracy::field_accuracy;
///
/// let report = field_accuracy(&["{\"a\":1,\"b\":[true]}", "not json"], &["{\"a\":1,\"b\":[false]}", "{\"a\":1}"], None).unwrap();
/// assert_eq!((report.pairs, report.unparsable_predictions), (2, 1));
/// assert_eq!((report.reference_leaves, report.matched_leaves), (3, 1));
/// assert_eq!(report.per_path["a"].accuracy(), 0.5);
/// assert_eq!(report.per_path["b[0]"].accuracy(), 0.0);
/// assert!(report.per_group.is_none());
/// assert!(report.to_string().contains("| b[0] |"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldAccuracy {
    /// Prediction/reference pairs.
    pub pairs: usize,
    /// Predictions that are not valid JSON (they match nothing).
    pub unparsable_predictions: usize,
    /// Reference leaves over the corpus.
    pub reference_leaves: usize,
    /// Reference leaves the predictions matched.
    pub matched_leaves: usize,
    /// Counts per key path, array indices kept.
    pub per_path: BTreeMap<String, FieldCount>,
    /// Counts per grouped path (array elements named by the grouping key's value); `None`
    /// without a grouping key.
    pub per_group: Option<BTreeMap<String, FieldCount>>,
}

impl FieldAccuracy {
    /// The micro-averaged accuracy: `matched_leaves / reference_leaves`.
    ///
    /// ```
    /// use lora_train::field_accuracy::field_accuracy;
    ///
    /// let report = field_accuracy(&["[1,2,4]"], &["[1,2,3]"], None).unwrap();
    /// assert_eq!(report.overall(), 2.0 / 3.0);
    /// ```
    pub fn overall(&self) -> f64 {
        if self.reference_leaves == 0 {
            0.0
        } else {
            self.matched_leaves as f64 / self.reference_leaves as f64
        }
    }
}

impl fmt::Display for FieldAccuracy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "field accuracy {:.4} ({} of {} reference fields, {} pairs, {} unparsable predictions)",
            self.overall(),
            self.matched_leaves,
            self.reference_leaves,
            self.pairs,
            self.unparsable_predictions
        )?;
        let mut tables = vec![("path", &self.per_path)];
        if let Some(groups) = &self.per_group {
            tables.push(("group", groups));
        }
        for (title, counts) in tables {
            writeln!(f)?;
            writeln!(f, "| {title} | references | matches | accuracy |")?;
            writeln!(f, "|---|---:|---:|---:|")?;
            for (path, count) in counts {
                writeln!(
                    f,
                    "| {path} | {} | {} | {:.4} |",
                    count.references,
                    count.matches,
                    count.accuracy()
                )?;
            }
        }
        Ok(())
    }
}

/// The leaves of a JSON document with their key paths (see the module documentation), object
/// keys in sorted order and array elements in theirs.
///
/// ```
/// use lora_train::field_accuracy::flatten_leaves;
/// use serde_json::json;
///
/// let doc = json!({"page": {"sections": [{"type": "list", "items": []}], "x.y": null}});
/// let leaves: Vec<(String, String)> =
///     flatten_leaves(&doc).into_iter().map(|(path, v)| (path, v.to_string())).collect();
/// assert_eq!(leaves, [
///     ("page.sections[0].items".to_string(), "[]".to_string()),
///     ("page.sections[0].type".to_string(), "\"list\"".to_string()),
///     ("page[\"x.y\"]".to_string(), "null".to_string()),
/// ]);
/// ```
pub fn flatten_leaves(value: &Value) -> Vec<(String, &Value)> {
    let mut leaves = Vec::new();
    walk(value, String::new(), None, None, &mut |leaf| {
        leaves.push((leaf.path, leaf.value));
    });
    leaves
}

/// Field accuracy of each prediction against its reference, aggregated over the corpus by
/// key path and, with `group_arrays_by`, by grouped path (see the module documentation).
///
/// ```
/// use lora_train::field_accuracy::field_accuracy;
///
/// let reference = r#"{"s":[{"type":"nav"},{"type":"form","n":2}]}"#;
/// // The first section dropped: the form moves to index 0 and no longer matches.
/// let prediction = r#"{"s":[{"type":"form","n":2}]}"#;
/// let report = field_accuracy(&[prediction], &[reference], Some("type")).unwrap();
/// assert_eq!(report.per_path["s[0].type"], lora_train::field_accuracy::FieldCount { references: 1, matches: 0 });
/// assert_eq!(report.per_group.unwrap()["s[type=form].n"].matches, 0);
/// ```
///
/// # Errors
/// [`TrainError::InvalidInput`] for empty or differently long slices, or a reference that
/// is not valid JSON.
pub fn field_accuracy<P: AsRef<str>, R: AsRef<str>>(
    predictions: &[P],
    references: &[R],
    group_arrays_by: Option<&str>,
) -> Result<FieldAccuracy, TrainError> {
    check_pairs(predictions.len(), references.len())?;
    let mut report = FieldAccuracy {
        pairs: predictions.len(),
        unparsable_predictions: 0,
        reference_leaves: 0,
        matched_leaves: 0,
        per_path: BTreeMap::new(),
        per_group: group_arrays_by.map(|_| BTreeMap::new()),
    };
    for (index, (prediction, reference)) in predictions.iter().zip(references).enumerate() {
        let reference: Value =
            serde_json::from_str(reference.as_ref()).map_err(|e| TrainError::InvalidInput {
                reason: format!("reference {index} is not valid JSON: {e}"),
            })?;
        let prediction = serde_json::from_str::<Value>(prediction.as_ref()).ok();
        if prediction.is_none() {
            report.unparsable_predictions += 1;
        }
        let predicted: HashMap<String, &Value> = prediction
            .as_ref()
            .map(flatten_leaves)
            .unwrap_or_default()
            .into_iter()
            .collect();
        walk(
            &reference,
            String::new(),
            group_arrays_by.map(|_| String::new()),
            group_arrays_by,
            &mut |leaf| {
                let matched = predicted
                    .get(&leaf.path)
                    .is_some_and(|p| same_leaf(p, leaf.value));
                report.reference_leaves += 1;
                report.matched_leaves += usize::from(matched);
                report.per_path.entry(leaf.path).or_default().add(matched);
                if let (Some(groups), Some(grouped)) = (report.per_group.as_mut(), leaf.grouped) {
                    groups.entry(grouped).or_default().add(matched);
                }
            },
        );
    }
    Ok(report)
}

/// A leaf met by [`walk`]: its indexed path, its grouped path (with a grouping key) and
/// its value.
struct Leaf<'a> {
    path: String,
    grouped: Option<String>,
    value: &'a Value,
}

/// Visits the leaves of `value` in the order of [`flatten_leaves`], building both paths.
fn walk<'a>(
    value: &'a Value,
    path: String,
    grouped: Option<String>,
    group_key: Option<&str>,
    visit: &mut dyn FnMut(Leaf<'a>),
) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            // Sorted keys, whatever order serde_json's map keeps (`preserve_order`).
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (key, child) in entries {
                let segment = key_segment(key, path.is_empty());
                let grouped = grouped.as_ref().map(|g| {
                    let segment = key_segment(key, g.is_empty());
                    format!("{g}{segment}")
                });
                walk(child, format!("{path}{segment}"), grouped, group_key, visit);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, child) in items.iter().enumerate() {
                let grouped = grouped.as_ref().map(|g| {
                    let label = group_key.and_then(|key| {
                        let value = child.as_object()?.get(key)?;
                        let value = match value {
                            Value::String(s) => s.clone(),
                            Value::Object(_) | Value::Array(_) => return None,
                            scalar => scalar.to_string(),
                        };
                        Some(format!("[{}={}]", label_text(key), label_text(&value)))
                    });
                    format!("{g}{}", label.unwrap_or_else(|| format!("[{i}]")))
                });
                walk(child, format!("{path}[{i}]"), grouped, group_key, visit);
            }
        }
        leaf => visit(Leaf {
            path,
            grouped,
            value: leaf,
        }),
    }
}

/// Whether a key or group value can be written as is in a path.
fn is_plain(text: &str) -> bool {
    !text.is_empty() && !text.contains(['.', '[', ']', '"', '='])
}

/// `.key` (`key` at the root), or `["key"]` for a key that is not plain.
fn key_segment(key: &str, at_root: bool) -> String {
    if is_plain(key) {
        if at_root {
            key.to_owned()
        } else {
            format!(".{key}")
        }
    } else {
        format!("[{}]", Value::from(key))
    }
}

/// A grouping key or value as is, or as a quoted JSON string when it is not plain.
fn label_text(text: &str) -> String {
    if is_plain(text) {
        text.to_owned()
    } else {
        Value::from(text).to_string()
    }
}

/// Leaf equality: JSON equality, numbers compared as numbers (`1` equals `1.0`).
fn same_leaf(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            x.as_f64() == y.as_f64()
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-computed: two documents, a wrong value, a dropped array element, an extra
    /// field, a number written as a float.
    #[test]
    fn counts_by_path_and_overall() {
        let references = [
            r#"{"page":{"name":"p","theme":"t","sections":[{"type":"a","x":1},{"type":"b","y":[1,2]}]}}"#,
            r#"{"page":{"name":"q","theme":"t","sections":[{"type":"b","y":[3]}]}}"#,
        ];
        let predictions = [
            // name wrong; sections[0].x = 1.0 matches 1; sections[1].y[1] missing; extra key.
            r#"{"page":{"name":"P","theme":"t","extra":true,"sections":[{"type":"a","x":1.0},{"type":"b","y":[1]}]}}"#,
            r#"{"page":{"name":"q","theme":"u","sections":[{"type":"b","y":[3]}]}}"#,
        ];
        let report = field_accuracy(&predictions, &references, None).unwrap();
        // Reference leaves: 7 + 4 = 11. Matches: theme, s0.type, s0.x, s1.type, s1.y[0]
        // (5) + name, s0.type, s0.y[0] (3) = 8.
        assert_eq!((report.reference_leaves, report.matched_leaves), (11, 8));
        assert_eq!(report.overall(), 8.0 / 11.0);
        let count = |path: &str| report.per_path[path];
        assert_eq!(
            count("page.name"),
            FieldCount {
                references: 2,
                matches: 1
            }
        );
        assert_eq!(
            count("page.theme"),
            FieldCount {
                references: 2,
                matches: 1
            }
        );
        assert_eq!(
            count("page.sections[0].type"),
            FieldCount {
                references: 2,
                matches: 2
            }
        );
        assert_eq!(
            count("page.sections[0].x"),
            FieldCount {
                references: 1,
                matches: 1
            }
        );
        assert_eq!(
            count("page.sections[0].y[0]"),
            FieldCount {
                references: 1,
                matches: 1
            }
        );
        assert_eq!(
            count("page.sections[1].y[1]"),
            FieldCount {
                references: 1,
                matches: 0
            }
        );
        assert!(!report.per_path.contains_key("page.extra"));
        let paths: Vec<&str> = report.per_path.keys().map(String::as_str).collect();
        assert_eq!(
            paths,
            [
                "page.name",
                "page.sections[0].type",
                "page.sections[0].x",
                "page.sections[0].y[0]",
                "page.sections[1].type",
                "page.sections[1].y[0]",
                "page.sections[1].y[1]",
                "page.theme"
            ]
        );
    }

    /// Hand-computed grouping: the `b` sections of both documents add up, wherever they are.
    #[test]
    fn groups_by_type() {
        let references = [
            r#"{"s":[{"type":"a","x":1},{"type":"b","y":2}]}"#,
            r#"{"s":[{"type":"b","y":3},{"z":0}]}"#,
        ];
        let predictions = [
            r#"{"s":[{"type":"a","x":1},{"type":"b","y":5}]}"#,
            r#"{"s":[{"type":"b","y":3},{"z":0}]}"#,
        ];
        let report = field_accuracy(&predictions, &references, Some("type")).unwrap();
        let groups = report.per_group.unwrap();
        let keys: Vec<&str> = groups.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "s[1].z",
                "s[type=a].type",
                "s[type=a].x",
                "s[type=b].type",
                "s[type=b].y"
            ]
        );
        assert_eq!(
            groups["s[type=b].y"],
            FieldCount {
                references: 2,
                matches: 1
            }
        );
        assert_eq!(
            groups["s[type=b].type"],
            FieldCount {
                references: 2,
                matches: 2
            }
        );
        assert_eq!(
            groups["s[1].z"],
            FieldCount {
                references: 1,
                matches: 1
            }
        );
        // Per path, indices are kept: s[0].y exists only in the second document.
        assert_eq!(
            report.per_path["s[0].y"],
            FieldCount {
                references: 1,
                matches: 1
            }
        );
        assert_eq!(
            report.per_path["s[1].y"],
            FieldCount {
                references: 1,
                matches: 0
            }
        );
    }

    #[test]
    fn unparsable_predictions_match_nothing() {
        let reference = r#"{"a":{"b":"c"},"d":[]}"#;
        let report = field_accuracy(&[r#"{"a":{"b":"c""#], &[reference], None).unwrap();
        assert_eq!(report.unparsable_predictions, 1);
        assert_eq!((report.reference_leaves, report.matched_leaves), (2, 0));
        let report = field_accuracy(&[reference], &[reference], Some("type")).unwrap();
        assert_eq!(report.overall(), 1.0);
        assert_eq!(
            report.per_path["d"],
            FieldCount {
                references: 1,
                matches: 1
            }
        );
    }

    #[test]
    fn unusual_keys_and_scalars() {
        let doc: Value =
            serde_json::from_str(r#"{"":1,"a.b":{"c":2},"[":[{"type":"x.y","v":3}]}"#).unwrap();
        let paths: Vec<String> = flatten_leaves(&doc).into_iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            ["[\"\"]", "[\"[\"][0].type", "[\"[\"][0].v", "[\"a.b\"].c"]
        );
        let report = field_accuracy(&["3"], &["3.0"], Some("type")).unwrap();
        assert_eq!(
            report.per_path[""],
            FieldCount {
                references: 1,
                matches: 1
            }
        );
        let json = r#"[{"type":"x.y","v":3}]"#;
        let report = field_accuracy(&[json], &[json], Some("type")).unwrap();
        assert!(report.per_group.unwrap().contains_key("[type=\"x.y\"].v"));
    }

    #[test]
    fn errors_are_typed() {
        let none: [&str; 0] = [];
        assert!(matches!(
            field_accuracy(&none, &none, None),
            Err(TrainError::InvalidInput { .. })
        ));
        assert!(field_accuracy(&["{}"], &["{}", "{}"], None).is_err());
        assert!(matches!(
            field_accuracy(&["{}"], &["{"], None),
            Err(TrainError::InvalidInput { .. })
        ));
    }
}
