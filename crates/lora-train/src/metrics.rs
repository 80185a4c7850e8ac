//! Evaluation metrics for generated JSON: exact match, corpus BLEU-4, ROUGE-L, and the share
//! of predictions that are valid JSON and valid under a task's schema (a validator the caller
//! gives, such as `uidsl::validate_uidsl`). Every value lies in `[0, 1]`.
//!
//! BLEU and ROUGE-L compare [`json_tokens`]: the references are minified JSON, so each of
//! `{ } [ ] : , "` (and any other ASCII punctuation) is its own token, runs of ASCII letters,
//! digits, `_`, `-` and `.` form one token (`product_grid`, `obsidian-gold`, `2`), and every
//! non-ASCII character (a CJK character in a string value) is its own token. Whitespace only
//! separates tokens. This makes structural mistakes (a missing brace or comma) and value
//! mistakes (a wrong theme) both count, without depending on any model tokenizer.

use std::collections::HashMap;
use std::fmt;

use crate::TrainError;

/// Splits `text` into the tokens BLEU and ROUGE-L compare (see the module documentation).
///
/// ```
/// use lora_train::metrics::json_tokens;
///
/// assert_eq!(
///     json_tokens(r#"{"theme":"obsidian-gold","n":12} 中文"#),
///     ["{", "\"", "theme", "\"", ":", "\"", "obsidian-gold", "\"", ",", "\"", "n", "\"", ":", "12", "}", "中", "文"]
/// );
/// ```
pub fn json_tokens(text: &str) -> Vec<&str> {
    let is_word = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    let mut tokens = Vec::new();
    let mut word_start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if is_word(c) {
            word_start.get_or_insert(i);
            continue;
        }
        if let Some(start) = word_start.take() {
            tokens.push(&text[start..i]);
        }
        if !c.is_whitespace() {
            tokens.push(&text[i..i + c.len_utf8()]);
        }
    }
    if let Some(start) = word_start {
        tokens.push(&text[start..]);
    }
    tokens
}

/// Share of predictions equal to their reference (after trimming surrounding whitespace).
///
/// ```
/// use lora_train::metrics::exact_match;
/// assert_eq!(exact_match(&["{}", "[1]"], &["{}", "[2]"]).unwrap(), 0.5);
/// ```
///
/// # Errors
/// [`TrainError::InvalidInput`] for empty or differently long slices.
pub fn exact_match<P: AsRef<str>, R: AsRef<str>>(
    predictions: &[P],
    references: &[R],
) -> Result<f64, TrainError> {
    check_pairs(predictions.len(), references.len())?;
    let hits = predictions
        .iter()
        .zip(references)
        .filter(|(p, r)| p.as_ref().trim() == r.as_ref().trim())
        .count();
    Ok(hits as f64 / predictions.len() as f64)
}

/// Corpus BLEU-4 over [`json_tokens`], one reference per prediction: the geometric mean of
/// the clipped 1- to 4-gram precisions (counts summed over the corpus) times the brevity
/// penalty `exp(1 − r / c)` when the predictions are shorter in total (`c`) than the
/// references (`r`). No smoothing: a corpus without a single matching 4-gram scores 0.
///
/// This is a JSON-token BLEU in `[0, 1]`, not sacreBLEU: its numbers are not comparable with
/// published BLEU scores. For sacreBLEU's scores (0–100, `13a` or `zh` tokenization, `exp`
/// smoothing, with its signature) use [`crate::sacrebleu::corpus_bleu`].
///
/// ```
/// use lora_train::metrics::bleu;
///
/// let reference = r#"{"page":{"name":"home_page"}}"#;
/// assert_eq!(bleu(&[reference], &[reference]).unwrap(), 1.0);
/// assert_eq!(bleu(&["[1]"], &[reference]).unwrap(), 0.0);
/// ```
///
/// # Errors
/// [`TrainError::InvalidInput`] for empty or differently long slices.
pub fn bleu<P: AsRef<str>, R: AsRef<str>>(
    predictions: &[P],
    references: &[R],
) -> Result<f64, TrainError> {
    check_pairs(predictions.len(), references.len())?;
    let mut matches = [0usize; 4];
    let mut totals = [0usize; 4];
    let (mut candidate_len, mut reference_len) = (0usize, 0usize);
    for (p, r) in predictions.iter().zip(references) {
        let p = json_tokens(p.as_ref());
        let r = json_tokens(r.as_ref());
        candidate_len += p.len();
        reference_len += r.len();
        for n in 1..=4 {
            let reference_counts = ngram_counts(&r, n);
            for (gram, count) in ngram_counts(&p, n) {
                matches[n - 1] += count.min(reference_counts.get(gram).copied().unwrap_or(0));
                totals[n - 1] += count;
            }
        }
    }
    if candidate_len == 0 || matches.contains(&0) {
        return Ok(0.0);
    }
    let log_precision: f64 = matches
        .iter()
        .zip(&totals)
        .map(|(&m, &t)| (m as f64 / t as f64).ln())
        .sum::<f64>()
        / 4.0;
    let brevity = if candidate_len < reference_len {
        (1.0 - reference_len as f64 / candidate_len as f64).exp()
    } else {
        1.0
    };
    Ok((brevity * log_precision.exp()).clamp(0.0, 1.0))
}

/// Mean ROUGE-L F1 over [`json_tokens`]: for each pair, with `l` the length of the longest
/// common subsequence, precision `l / |prediction|`, recall `l / |reference|` and
/// `F = 2PR / (P + R)` (1 when both are empty, 0 when only one is).
///
/// ```
/// use lora_train::metrics::rouge_l;
///
/// // Tokens a b c d vs a c d: LCS 3, P = 1, R = 3/4, F = 6/7.
/// let f = rouge_l(&["a c d"], &["a b c d"]).unwrap();
/// assert!((f - 6.0 / 7.0).abs() < 1e-12);
/// ```
///
/// # Errors
/// [`TrainError::InvalidInput`] for empty or differently long slices.
pub fn rouge_l<P: AsRef<str>, R: AsRef<str>>(
    predictions: &[P],
    references: &[R],
) -> Result<f64, TrainError> {
    check_pairs(predictions.len(), references.len())?;
    let total: f64 = predictions
        .iter()
        .zip(references)
        .map(|(p, r)| {
            let p = json_tokens(p.as_ref());
            let r = json_tokens(r.as_ref());
            match (p.is_empty(), r.is_empty()) {
                (true, true) => 1.0,
                (true, false) | (false, true) => 0.0,
                (false, false) => {
                    let lcs = lcs_len(&p, &r) as f64;
                    if lcs == 0.0 {
                        0.0
                    } else {
                        let precision = lcs / p.len() as f64;
                        let recall = lcs / r.len() as f64;
                        2.0 * precision * recall / (precision + recall)
                    }
                }
            }
        })
        .sum();
    Ok(total / predictions.len() as f64)
}

/// Share of predictions that parse as JSON.
///
/// ```
/// assert_eq!(lora_train::metrics::json_valid_rate(&["{}", "{", "[1]", "x"]).unwrap(), 0.5);
/// ```
///
/// # Errors
/// [`TrainError::InvalidInput`] for no predictions.
pub fn json_valid_rate<P: AsRef<str>>(predictions: &[P]) -> Result<f64, TrainError> {
    rate(predictions, |p| {
        serde_json::from_str::<serde_json::Value>(p).is_ok()
    })
}

/// Share of predictions that parse as JSON and pass the task's `is_valid` check.
///
/// ```
/// let has_page = |v: &serde_json::Value| v.get("page").is_some();
/// let rate = lora_train::metrics::schema_valid_rate(&[r#"{"page":1}"#, "{}"], has_page);
/// assert_eq!(rate.unwrap(), 0.5);
/// ```
///
/// # Errors
/// [`TrainError::InvalidInput`] for no predictions.
pub fn schema_valid_rate<P: AsRef<str>>(
    predictions: &[P],
    is_valid: impl Fn(&serde_json::Value) -> bool,
) -> Result<f64, TrainError> {
    rate(predictions, |p| {
        serde_json::from_str::<serde_json::Value>(p).is_ok_and(|v| is_valid(&v))
    })
}

/// Every metric of this module over one set of predictions.
///
/// ```
/// use lora_train::metrics::EvalReport;
///
/// let reference = r#"{"page":{"name":"p"}}"#;
/// let report = EvalReport::compute(&[reference, "oops"], &[reference, reference]).unwrap();
/// assert_eq!(report.count, 2);
/// assert_eq!(report.exact_match, 0.5);
/// assert_eq!(report.schema_valid_rate, None);
/// let has_page = |v: &serde_json::Value| v.get("page").is_some();
/// let report = report.with_schema(&[reference, "oops"], has_page).unwrap();
/// assert_eq!(report.schema_valid_rate, Some(0.5));
/// assert!(report.to_string().contains("schema_valid_rate"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalReport {
    /// Number of prediction/reference pairs.
    pub count: usize,
    /// [`exact_match`].
    pub exact_match: f64,
    /// [`bleu`].
    pub bleu: f64,
    /// [`rouge_l`].
    pub rouge_l: f64,
    /// [`json_valid_rate`].
    pub json_valid_rate: f64,
    /// [`schema_valid_rate`], when a schema was given ([`EvalReport::with_schema`]).
    pub schema_valid_rate: Option<f64>,
}

impl EvalReport {
    /// Computes every metric; fails when the slices are empty or differ in length.
    ///
    /// # Errors
    /// [`TrainError::InvalidInput`] for empty or differently long slices.
    pub fn compute<P: AsRef<str>, R: AsRef<str>>(
        predictions: &[P],
        references: &[R],
    ) -> Result<Self, TrainError> {
        Ok(Self {
            count: predictions.len(),
            exact_match: exact_match(predictions, references)?,
            bleu: bleu(predictions, references)?,
            rouge_l: rouge_l(predictions, references)?,
            json_valid_rate: json_valid_rate(predictions)?,
            schema_valid_rate: None,
        })
    }

    /// The same report with [`schema_valid_rate`] of the same `predictions` under `is_valid`.
    ///
    /// # Errors
    /// [`TrainError::InvalidInput`] when `predictions` is not the report's set (another length).
    pub fn with_schema<P: AsRef<str>>(
        self,
        predictions: &[P],
        is_valid: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<Self, TrainError> {
        if predictions.len() != self.count {
            return Err(TrainError::InvalidInput {
                reason: format!(
                    "{} predictions for a report of {}",
                    predictions.len(),
                    self.count
                ),
            });
        }
        Ok(Self {
            schema_valid_rate: Some(schema_valid_rate(predictions, is_valid)?),
            ..self
        })
    }
}

impl fmt::Display for EvalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_metric_table(
            f,
            self.count,
            &[
                ("exact_match", Some(self.exact_match)),
                ("bleu", Some(self.bleu)),
                ("rouge_l", Some(self.rouge_l)),
                ("json_valid_rate", Some(self.json_valid_rate)),
                ("schema_valid_rate", self.schema_valid_rate),
            ],
        )
    }
}

/// Writes a `| metric | value |` Markdown table, aligned as plain text too: a `count` row, then
/// one row per metric that has a value, to four decimals (rows whose value is `None` are left
/// out). The columns are as wide as their longest entry.
///
/// ```
/// use lora_train::metrics::write_metric_table;
///
/// let mut table = String::new();
/// write_metric_table(&mut table, 4, &[("exact_match", Some(0.25)), ("bleu", None)]).unwrap();
/// assert_eq!(
///     table,
///     "| metric      |  value |\n|-------------|-------:|\n| count       |      4 |\n\
///      | exact_match | 0.2500 |\n"
/// );
/// ```
///
/// # Errors
/// When the writer fails.
pub fn write_metric_table(
    f: &mut impl fmt::Write,
    count: usize,
    rows: &[(&str, Option<f64>)],
) -> fmt::Result {
    let values: Vec<(&str, String)> = rows
        .iter()
        .filter_map(|(name, value)| value.map(|v| (*name, format!("{v:.4}"))))
        .collect();
    let count = count.to_string();
    let name_width = values
        .iter()
        .map(|(name, _)| name.len())
        .chain(["metric".len(), "count".len()])
        .max()
        .unwrap_or(0);
    let value_width = values
        .iter()
        .map(|(_, value)| value.len())
        .chain(["value".len(), count.len()])
        .max()
        .unwrap_or(0);
    writeln!(
        f,
        "| {:<name_width$} | {:>value_width$} |",
        "metric", "value"
    )?;
    writeln!(
        f,
        "|{}|{}:|",
        "-".repeat(name_width + 2),
        "-".repeat(value_width + 1)
    )?;
    writeln!(f, "| {:<name_width$} | {count:>value_width$} |", "count")?;
    for (name, value) in values {
        writeln!(f, "| {name:<name_width$} | {value:>value_width$} |")?;
    }
    Ok(())
}

/// An error unless there are as many predictions as references, and at least one.
pub(crate) fn check_pairs(predictions: usize, references: usize) -> Result<(), TrainError> {
    if predictions != references {
        return Err(TrainError::InvalidInput {
            reason: format!("{predictions} predictions but {references} references"),
        });
    }
    if predictions == 0 {
        return Err(TrainError::InvalidInput {
            reason: "no predictions to evaluate".into(),
        });
    }
    Ok(())
}

fn rate<P: AsRef<str>>(predictions: &[P], ok: impl Fn(&str) -> bool) -> Result<f64, TrainError> {
    check_pairs(predictions.len(), predictions.len())?;
    let hits = predictions.iter().filter(|p| ok(p.as_ref())).count();
    Ok(hits as f64 / predictions.len() as f64)
}

fn ngram_counts<'a>(tokens: &'a [&'a str], n: usize) -> HashMap<&'a [&'a str], usize> {
    let mut counts = HashMap::new();
    for gram in tokens.windows(n) {
        *counts.entry(gram).or_insert(0) += 1;
    }
    counts
}

/// Length of the longest common subsequence of `a` and `b` (two rows of the table).
pub(crate) fn lcs_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut previous = vec![0usize; b.len() + 1];
    let mut current = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            current[j + 1] = if x == y {
                previous[j] + 1
            } else {
                previous[j + 1].max(current[j])
            };
        }
        std::mem::swap(&mut previous, &mut current);
    }
    previous[b.len()]
}
