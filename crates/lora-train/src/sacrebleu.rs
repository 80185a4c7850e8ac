//! Corpus BLEU computed exactly as [sacreBLEU](https://github.com/mjpost/sacrebleu)
//! [`SACREBLEU_VERSION`] computes it (`sacrebleu.corpus_bleu` / `BLEU.corpus_score`), so that
//! scores can be compared with published ones: the same tokenizers, the same n-gram
//! statistics, the same smoothing, the same 0–100 score and the same signature string.
//!
//! - [`BleuTokenizer::Tok13a`] is sacreBLEU's `13a` (`tokenizer_13a.py` and
//!   `tokenizer_re.py`, the mteval-v13a tokenization used by WMT); [`BleuTokenizer::Zh`] its
//!   `zh` (`tokenizer_zh.py`: every character of [`is_sacrebleu_chinese_char`] between spaces,
//!   then the rules of `tokenizer_re.py`); [`BleuTokenizer::None`] its `none` (whitespace
//!   splitting only).
//! - [`corpus_bleu`] takes one reference per hypothesis with sacreBLEU's defaults
//!   (`smooth_method='exp'`, `max_ngram_order=4`, `lowercase=False`, `effective_order=False`);
//!   [`corpus_bleu_with`] takes [`BleuOptions`] (`floor`, `add-k` and `none` smoothing,
//!   lowercasing, effective order, another maximum order).
//! - [`BleuScore::signature`] is `BLEU.get_signature()` as sacreBLEU prints it, such as
//!   `nrefs:1|case:mixed|eff:no|tok:zh|smooth:exp|version:2.6.0`.
//!
//! "Whitespace" below means Python's `str.isspace()`, which sacreBLEU splits and strips on:
//! Unicode's `White_Space` characters plus the separators U+001C–U+001F.
//! `crates/lora-train/tests/text_metrics_parity.rs` checks scores, statistics, tokenizations
//! and signatures against values the real sacreBLEU wrote
//! (`scripts/gen_text_metric_fixtures.py`).
//!
//! ```
//! use lora_train::sacrebleu::{corpus_bleu, BleuTokenizer};
//!
//! let hyps = ["今天天气很好。", "我们去公园散步吧"];
//! let refs = ["今天天气很好。", "我们一起去公园散步吧"];
//! let bleu = corpus_bleu(&hyps, &refs, BleuTokenizer::Zh).unwrap();
//! assert_eq!(bleu.sys_len, 15);
//! assert_eq!(bleu.ref_len, 17);
//! assert!((bleu.score - 76.61783593912499).abs() < 1e-9);
//! assert_eq!(bleu.signature(), "nrefs:1|case:mixed|eff:no|tok:zh|smooth:exp|version:2.6.0");
//! ```

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use crate::metrics::check_pairs;
use crate::TrainError;

/// The sacreBLEU release whose tokenizations, scores and signature this module reproduces
/// (and which its signature names, as `version:2.6.0`).
///
/// ```
/// assert_eq!(lora_train::sacrebleu::SACREBLEU_VERSION, "2.6.0");
/// ```
pub const SACREBLEU_VERSION: &str = "2.6.0";

/// A sacreBLEU tokenizer (its `tokenize` argument).
///
/// ```
/// use lora_train::sacrebleu::BleuTokenizer;
///
/// assert_eq!(BleuTokenizer::Tok13a.tokenize("It costs $1,000.50."), ["It", "costs", "$", "1,000.50", "."]);
/// assert_eq!(BleuTokenizer::Zh.tokenize("我有3个苹果。"), ["我", "有", "3", "个", "苹", "果", "。"]);
/// assert_eq!(BleuTokenizer::None.tokenize(" a,b  c "), ["a,b", "c"]);
/// assert_eq!("zh".parse::<BleuTokenizer>().unwrap(), BleuTokenizer::Zh);
/// assert_eq!(BleuTokenizer::default(), BleuTokenizer::Tok13a);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum BleuTokenizer {
    /// `13a`, sacreBLEU's default: the mteval-v13a tokenization. Removes `<skipped>` and
    /// `-` + newline, turns newlines into spaces, unescapes `&quot;`, `&amp;`, `&lt;` and
    /// `&gt;`, then applies the rules of `tokenizer_re.py` to the line between two spaces:
    /// ASCII punctuation other than `'`, `,`, `-` and `.` becomes its own token; `.` and
    /// `,` are split off unless between digits (`1,000.5` stays one token); `-` is split off
    /// after a digit.
    #[default]
    Tok13a,
    /// `zh`: strips the line, puts every character of [`is_sacrebleu_chinese_char`] between
    /// spaces and applies the rules of `tokenizer_re.py` (without `13a`'s unescaping, and
    /// without the two surrounding spaces, so that a leading `.5` stays one token).
    Zh,
    /// `none`: whitespace splitting only.
    None,
}

impl BleuTokenizer {
    /// sacreBLEU's name of the tokenizer, as in the signature's `tok:` (`13a`, `zh`, `none`).
    ///
    /// ```
    /// assert_eq!(lora_train::sacrebleu::BleuTokenizer::Tok13a.name(), "13a");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::Tok13a => "13a",
            Self::Zh => "zh",
            Self::None => "none",
        }
    }

    /// The tokens sacreBLEU's tokenizer makes of `line` (its output split on whitespace).
    /// Lowercasing and the right-strip that BLEU applies before tokenizing are not part of
    /// it ([`corpus_bleu_with`] applies them).
    ///
    /// ```
    /// use lora_train::sacrebleu::BleuTokenizer;
    ///
    /// let tokens = BleuTokenizer::Tok13a.tokenize("&quot;Hi&quot;, said the e-mail (v2.0).");
    /// assert_eq!(tokens, ["\"", "Hi", "\"", ",", "said", "the", "e-mail", "(", "v2.0", ")", "."]);
    /// ```
    pub fn tokenize(self, line: &str) -> Vec<String> {
        match self {
            Self::Tok13a => tokenize_13a(line),
            Self::Zh => tokenize_zh(line),
            Self::None => py_split(line).map(str::to_owned).collect(),
        }
    }
}

impl fmt::Display for BleuTokenizer {
    /// [`BleuTokenizer::name`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BleuTokenizer {
    type Err = TrainError;

    /// sacreBLEU's name: `13a`, `zh` or `none`.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        match name {
            "13a" => Ok(Self::Tok13a),
            "zh" => Ok(Self::Zh),
            "none" => Ok(Self::None),
            other => Err(TrainError::InvalidInput {
                reason: format!("unknown BLEU tokenizer `{other}` (expected 13a, zh or none)"),
            }),
        }
    }
}

/// Whether sacreBLEU's `zh` tokenizer treats `c` as a Chinese character (`_is_chinese_char`
/// of `tokenizer_zh.py`), and so puts it between spaces.
///
/// sacreBLEU lists its ranges as Python strings compared with `<=`; two of them are written
/// with five hex digits after `\u` (`'\u20000'`, `'\u2f800'`), which Python reads as a
/// four-digit escape followed by a digit. The ranges they really test are
/// U+2001–U+2A6D (general punctuation, currency, arrows, mathematical and technical symbols,
/// …) and U+2F81–U+2FA1, and CJK Extension B (U+20000 and above) is *not* split. This
/// function reproduces that behaviour: U+3400–U+4DB5, U+4E00–U+9FBB, U+F900–U+FA2D,
/// U+FA30–U+FA6A, U+FA70–U+FAD9, U+2001–U+2A6D, U+2F81–U+2FA1, U+FF00–U+FFEF, U+2E80–U+2EFF,
/// U+3000–U+303F, U+31C0–U+31EF, U+2F00–U+2FDF, U+2FF0–U+2FFF, U+3100–U+312F, U+31A0–U+31BF,
/// U+FE10–U+FE1F, U+FE30–U+FE4F, U+2600–U+26FF, U+2700–U+27BF, U+3200–U+32FF and
/// U+3300–U+33FF.
///
/// ```
/// use lora_train::sacrebleu::is_sacrebleu_chinese_char;
///
/// assert!(is_sacrebleu_chinese_char('中'));
/// assert!(is_sacrebleu_chinese_char('，'));
/// assert!(is_sacrebleu_chinese_char('—')); // U+2014, through the U+2001–U+2A6D range
/// assert!(!is_sacrebleu_chinese_char('\u{2000}'));
/// assert!(!is_sacrebleu_chinese_char('𠀀')); // U+20000
/// assert!(!is_sacrebleu_chinese_char('a'));
/// ```
pub fn is_sacrebleu_chinese_char(c: char) -> bool {
    // sacreBLEU's `_UCODE_RANGES`, in its order, with the two five-digit escapes as Python
    // evaluates them.
    const RANGES: [(u32, u32); 22] = [
        (0x3400, 0x4DB5),
        (0x4E00, 0x9FA5),
        (0x9FA6, 0x9FBB),
        (0xF900, 0xFA2D),
        (0xFA30, 0xFA6A),
        (0xFA70, 0xFAD9),
        // '\u20000' <= c <= '\u2a6d6': c > U+2000 and c <= U+2A6D.
        (0x2001, 0x2A6D),
        // '\u2f800' <= c <= '\u2fa1d': c > U+2F80 and c <= U+2FA1.
        (0x2F81, 0x2FA1),
        (0xFF00, 0xFFEF),
        (0x2E80, 0x2EFF),
        (0x3000, 0x303F),
        (0x31C0, 0x31EF),
        (0x2F00, 0x2FDF),
        (0x2FF0, 0x2FFF),
        (0x3100, 0x312F),
        (0x31A0, 0x31BF),
        (0xFE10, 0xFE1F),
        (0xFE30, 0xFE4F),
        (0x2600, 0x26FF),
        (0x2700, 0x27BF),
        (0x3200, 0x32FF),
        (0x3300, 0x33FF),
    ];
    let c = c as u32;
    RANGES.iter().any(|&(start, end)| start <= c && c <= end)
}

/// sacreBLEU's smoothing of zero n-gram precisions (`smooth_method` and `smooth_value`).
///
/// ```
/// use lora_train::sacrebleu::SmoothMethod;
///
/// assert_eq!(SmoothMethod::default(), SmoothMethod::Exp);
/// assert_eq!(SmoothMethod::floor_default(), SmoothMethod::Floor(0.1));
/// assert_eq!(SmoothMethod::Floor(0.1).signature(), "floor[0.10]");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum SmoothMethod {
    /// `none`: a zero precision makes the score 0.
    None,
    /// `floor`: a zero count `c_n` of matching n-grams counts as the value (sacreBLEU's
    /// default 0.1, [`SmoothMethod::floor_default`]).
    Floor(f64),
    /// `add-k`: the value is added to the matching and total counts of every order above 1
    /// (sacreBLEU's default 1, [`SmoothMethod::add_k_default`]).
    AddK(f64),
    /// `exp`, sacreBLEU's default (mteval-v13a's, NIST's): the `k`-th zero precision becomes
    /// `1 / (2^k · total_n)`.
    #[default]
    Exp,
}

impl SmoothMethod {
    /// `floor` with sacreBLEU's default value, 0.1.
    ///
    /// ```
    /// assert_eq!(lora_train::sacrebleu::SmoothMethod::floor_default().value(), Some(0.1));
    /// ```
    pub fn floor_default() -> Self {
        Self::Floor(0.1)
    }

    /// `add-k` with sacreBLEU's default value, 1.
    ///
    /// ```
    /// assert_eq!(lora_train::sacrebleu::SmoothMethod::add_k_default().value(), Some(1.0));
    /// ```
    pub fn add_k_default() -> Self {
        Self::AddK(1.0)
    }

    /// sacreBLEU's name of the method: `none`, `floor`, `add-k` or `exp`.
    ///
    /// ```
    /// assert_eq!(lora_train::sacrebleu::SmoothMethod::AddK(1.0).name(), "add-k");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Floor(_) => "floor",
            Self::AddK(_) => "add-k",
            Self::Exp => "exp",
        }
    }

    /// The value of `floor` and `add-k`; `None` for the methods without one.
    ///
    /// ```
    /// assert_eq!(lora_train::sacrebleu::SmoothMethod::Exp.value(), None);
    /// ```
    pub fn value(self) -> Option<f64> {
        match self {
            Self::Floor(value) | Self::AddK(value) => Some(value),
            Self::None | Self::Exp => None,
        }
    }

    /// The signature's `smooth:` value: the name, with the value to two decimals in brackets
    /// for `floor` and `add-k` (`floor[0.10]`, `add-k[1.00]`).
    ///
    /// ```
    /// assert_eq!(lora_train::sacrebleu::SmoothMethod::AddK(1.0).signature(), "add-k[1.00]");
    /// ```
    pub fn signature(self) -> String {
        match self.value() {
            Some(value) => format!("{}[{value:.2}]", self.name()),
            None => self.name().to_owned(),
        }
    }
}

/// The settings of sacreBLEU's `BLEU` metric. [`BleuOptions::default`] is sacreBLEU's
/// default: `13a`, `exp` smoothing, order 4, case kept, no effective order.
///
/// ```
/// use lora_train::sacrebleu::{BleuOptions, BleuTokenizer, SmoothMethod};
///
/// let options = BleuOptions { tokenizer: BleuTokenizer::Zh, smooth: SmoothMethod::floor_default(), ..BleuOptions::default() };
/// assert_eq!(options.signature(), "nrefs:1|case:mixed|eff:no|tok:zh|smooth:floor[0.10]|version:2.6.0");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BleuOptions {
    /// The tokenizer (`tokenize`).
    pub tokenizer: BleuTokenizer,
    /// The smoothing (`smooth_method`, `smooth_value`).
    pub smooth: SmoothMethod,
    /// Lowercase hypotheses and references before tokenizing (`lowercase`), with Rust's
    /// [`str::to_lowercase`] (Python's `str.lower` may differ on characters added to Unicode
    /// after one of the two's tables).
    pub lowercase: bool,
    /// Average the precisions only up to the highest order with any n-gram in the
    /// hypotheses (`effective_order`, for sentence-level BLEU).
    pub effective_order: bool,
    /// The highest n-gram order (`max_ngram_order`), at least 1. sacreBLEU's signature does
    /// not record it, and neither does [`BleuOptions::signature`].
    pub max_ngram_order: usize,
}

impl Default for BleuOptions {
    fn default() -> Self {
        Self {
            tokenizer: BleuTokenizer::Tok13a,
            smooth: SmoothMethod::Exp,
            lowercase: false,
            effective_order: false,
            max_ngram_order: 4,
        }
    }
}

impl BleuOptions {
    /// sacreBLEU's signature of these settings with one reference per hypothesis,
    /// `BLEU.get_signature()` formatted as sacreBLEU prints it:
    /// `nrefs:1|case:{mixed|lc}|eff:{no|yes}|tok:{13a|zh|none}|smooth:{…}|version:2.6.0`.
    ///
    /// ```
    /// use lora_train::sacrebleu::BleuOptions;
    ///
    /// let options = BleuOptions { lowercase: true, ..BleuOptions::default() };
    /// assert_eq!(options.signature(), "nrefs:1|case:lc|eff:no|tok:13a|smooth:exp|version:2.6.0");
    /// ```
    pub fn signature(&self) -> String {
        format!(
            "nrefs:1|case:{}|eff:{}|tok:{}|smooth:{}|version:{SACREBLEU_VERSION}",
            if self.lowercase { "lc" } else { "mixed" },
            if self.effective_order { "yes" } else { "no" },
            self.tokenizer.name(),
            self.smooth.signature(),
        )
    }
}

/// A corpus BLEU score with sacreBLEU's statistics (its `BLEUScore`).
///
/// ```
/// use lora_train::sacrebleu::{corpus_bleu, BleuTokenizer};
///
/// let bleu = corpus_bleu(&["the cat sat on the mat"], &["the cat sat on the mat"], BleuTokenizer::Tok13a).unwrap();
/// // exp(ln 100), as sacreBLEU computes it: 100.00000000000004 there too.
/// assert_eq!(bleu.score, 100.00000000000004);
/// assert_eq!(bleu.counts, [6, 5, 4, 3]);
/// assert_eq!(
///     bleu.to_string(),
///     "BLEU = 100.00 100.0/100.0/100.0/100.0 (BP = 1.000 ratio = 1.000 hyp_len = 6 ref_len = 6)"
/// );
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct BleuScore {
    /// The score, 0–100 (`score`).
    pub score: f64,
    /// Matching n-grams of each order, clipped by the reference's counts, summed over the
    /// corpus (`counts`). With `add-k` these are the counts before smoothing, where
    /// sacreBLEU's `counts` (from order 2) hold them plus `k`.
    pub counts: Vec<usize>,
    /// The hypotheses' n-grams of each order (`totals`; before smoothing, as `counts`).
    pub totals: Vec<usize>,
    /// The (smoothed) precision of each order, 0–100 (`precisions`).
    pub precisions: Vec<f64>,
    /// The brevity penalty (`bp`).
    pub bp: f64,
    /// The hypotheses' tokens (`sys_len`).
    pub sys_len: usize,
    /// The references' tokens (`ref_len`).
    pub ref_len: usize,
    /// The settings that computed it.
    pub options: BleuOptions,
}

impl BleuScore {
    /// sacreBLEU's signature of the settings ([`BleuOptions::signature`]).
    ///
    /// ```
    /// use lora_train::sacrebleu::{corpus_bleu, BleuTokenizer};
    ///
    /// let bleu = corpus_bleu(&["a b"], &["a b"], BleuTokenizer::Tok13a).unwrap();
    /// assert_eq!(bleu.signature(), "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0");
    /// ```
    pub fn signature(&self) -> String {
        self.options.signature()
    }

    /// `sys_len / ref_len`, 0 without reference tokens (`ratio`).
    ///
    /// ```
    /// use lora_train::sacrebleu::{corpus_bleu, BleuTokenizer};
    ///
    /// let bleu = corpus_bleu(&["a b"], &["a b c d"], BleuTokenizer::Tok13a).unwrap();
    /// assert_eq!(bleu.ratio(), 0.5);
    /// ```
    pub fn ratio(&self) -> f64 {
        if self.ref_len == 0 {
            0.0
        } else {
            self.sys_len as f64 / self.ref_len as f64
        }
    }

    /// The line sacreBLEU prints with the signature,
    /// `score.format(signature=str(bleu.get_signature()))`:
    /// `BLEU|nrefs:1|…|version:2.6.0 = 12.34 45.6/…`.
    ///
    /// ```
    /// use lora_train::sacrebleu::{corpus_bleu, BleuTokenizer};
    ///
    /// let bleu = corpus_bleu(&["a b"], &["a b"], BleuTokenizer::None).unwrap();
    /// assert!(bleu.format_with_signature().starts_with("BLEU|nrefs:1|case:mixed|eff:no|tok:none|smooth:exp|version:2.6.0 = "));
    /// ```
    pub fn format_with_signature(&self) -> String {
        format!("BLEU|{} = {}", self.signature(), self.verbose())
    }

    fn verbose(&self) -> String {
        let precisions: Vec<String> = self.precisions.iter().map(|p| format!("{p:.1}")).collect();
        format!(
            "{:.2} {} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            self.score,
            precisions.join("/"),
            self.bp,
            self.ratio(),
            self.sys_len,
            self.ref_len
        )
    }
}

impl fmt::Display for BleuScore {
    /// What sacreBLEU prints for the score without its signature (`str(score)`):
    /// `BLEU = 12.34 45.6/20.1/10.0/5.2 (BP = 1.000 ratio = 1.020 hyp_len = 51 ref_len = 50)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BLEU = {}", self.verbose())
    }
}

/// Corpus BLEU with sacreBLEU's defaults and the given tokenizer, one reference per
/// hypothesis: `sacrebleu.corpus_bleu(hypotheses, [references], tokenize=…)`.
///
/// ```
/// use lora_train::sacrebleu::{corpus_bleu, BleuTokenizer};
///
/// let bleu = corpus_bleu(&["The cat sat on a mat."], &["The cat sat on the mat."], BleuTokenizer::Tok13a).unwrap();
/// assert_eq!((bleu.counts.as_slice(), bleu.totals.as_slice()), (&[6, 4, 2, 1][..], &[7, 6, 5, 4][..]));
/// assert!((bleu.score - 48.892302243490086).abs() < 1e-9);
/// ```
///
/// # Errors
/// [`TrainError::InvalidInput`] for empty or differently long slices.
pub fn corpus_bleu<H: AsRef<str>, R: AsRef<str>>(
    hypotheses: &[H],
    references: &[R],
    tokenizer: BleuTokenizer,
) -> Result<BleuScore, TrainError> {
    let options = BleuOptions {
        tokenizer,
        ..BleuOptions::default()
    };
    corpus_bleu_with(hypotheses, references, &options)
}

/// Corpus BLEU with the given settings, one reference per hypothesis:
/// `sacrebleu.metrics.BLEU(…).corpus_score(hypotheses, [references])`.
///
/// Each line is lowercased (with [`BleuOptions::lowercase`]), right-stripped of whitespace
/// and tokenized; the n-grams of orders 1 to [`BleuOptions::max_ngram_order`] of each
/// hypothesis match those of its reference up to the reference's count; counts, totals and
/// lengths are summed over the corpus. Without any match the score is 0. Otherwise the
/// precision of order `n` is `100 · counts / totals` (smoothed when zero), and the score is
/// the brevity penalty (`exp(1 − ref_len / sys_len)` when `sys_len < ref_len`, else 1) times
/// the geometric mean of the precisions, a zero precision counting as `exp(−9999999999)`.
///
/// ```
/// use lora_train::sacrebleu::{corpus_bleu_with, BleuOptions, SmoothMethod};
///
/// let options = BleuOptions { smooth: SmoothMethod::None, ..BleuOptions::default() };
/// let bleu = corpus_bleu_with(&["a b c e"], &["a b c d"], &options).unwrap();
/// assert_eq!(bleu.score, 0.0); // no matching 4-gram
/// let options = BleuOptions { smooth: SmoothMethod::floor_default(), ..BleuOptions::default() };
/// let bleu = corpus_bleu_with(&["a b c e"], &["a b c d"], &options).unwrap();
/// assert!(bleu.score > 0.0);
/// ```
///
/// # Errors
/// [`TrainError::InvalidInput`] for empty or differently long slices, a maximum order of 0,
/// or a negative or non-finite smoothing value.
pub fn corpus_bleu_with<H: AsRef<str>, R: AsRef<str>>(
    hypotheses: &[H],
    references: &[R],
    options: &BleuOptions,
) -> Result<BleuScore, TrainError> {
    check_pairs(hypotheses.len(), references.len())?;
    if options.max_ngram_order == 0 {
        return Err(TrainError::InvalidInput {
            reason: "the maximum n-gram order of BLEU must be at least 1".into(),
        });
    }
    if let Some(value) = options.smooth.value() {
        if !(value.is_finite() && value >= 0.0) {
            return Err(TrainError::InvalidInput {
                reason: format!(
                    "the `{}` smoothing value must be finite and not negative, not {value}",
                    options.smooth.name()
                ),
            });
        }
    }
    let order = options.max_ngram_order;
    let mut counts = vec![0usize; order];
    let mut totals = vec![0usize; order];
    let (mut sys_len, mut ref_len) = (0usize, 0usize);
    for (hypothesis, reference) in hypotheses.iter().zip(references) {
        let hypothesis = preprocess(hypothesis.as_ref(), options);
        let reference = preprocess(reference.as_ref(), options);
        sys_len += hypothesis.len();
        ref_len += reference.len();
        let reference_ngrams = ngram_counts(&reference, order);
        for (gram, count) in ngram_counts(&hypothesis, order) {
            let n = gram.len() - 1;
            totals[n] += count;
            if let Some(&in_reference) = reference_ngrams.get(gram) {
                counts[n] += count.min(in_reference);
            }
        }
    }
    let (score, precisions, bp) = compute_bleu(&counts, &totals, sys_len, ref_len, options);
    Ok(BleuScore {
        score,
        counts,
        totals,
        precisions,
        bp,
        sys_len,
        ref_len,
        options: *options,
    })
}

/// sacreBLEU's `BLEU.compute_bleu`: the score, the precisions and the brevity penalty.
fn compute_bleu(
    counts: &[usize],
    totals: &[usize],
    sys_len: usize,
    ref_len: usize,
    options: &BleuOptions,
) -> (f64, Vec<f64>, f64) {
    let mut bp = 1.0;
    if sys_len < ref_len {
        bp = if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        };
    }
    let order = counts.len();
    let mut precisions = vec![0.0; order];
    if counts.iter().all(|&c| c == 0) {
        return (0.0, precisions, bp);
    }
    let mut smooth_mteval = 1.0;
    let mut effective_order = order;
    for n in 1..=order {
        let (mut correct, mut total) = (counts[n - 1] as f64, totals[n - 1] as f64);
        if let SmoothMethod::AddK(k) = options.smooth {
            if n > 1 {
                correct += k;
                total += k;
            }
        }
        if total == 0.0 {
            break;
        }
        if options.effective_order {
            effective_order = n;
        }
        precisions[n - 1] = if correct == 0.0 {
            match options.smooth {
                SmoothMethod::Exp => {
                    smooth_mteval *= 2.0;
                    100.0 / (smooth_mteval * total)
                }
                SmoothMethod::Floor(value) => 100.0 * value / total,
                SmoothMethod::None | SmoothMethod::AddK(_) => 0.0,
            }
        } else {
            100.0 * correct / total
        };
    }
    let log_sum = precisions[..effective_order]
        .iter()
        .fold(0.0, |sum, &p| sum + floored_log(p));
    let score = bp * (log_sum / effective_order as f64).exp();
    (score, precisions, bp)
}

/// sacreBLEU's `my_log`: the natural logarithm, with 0 mapped to −9999999999.
fn floored_log(x: f64) -> f64 {
    if x == 0.0 {
        -9_999_999_999.0
    } else {
        x.ln()
    }
}

/// `BLEU._preprocess_segment`: optional lowercasing, right-strip, tokenization.
fn preprocess(line: &str, options: &BleuOptions) -> Vec<String> {
    if options.lowercase {
        options.tokenizer.tokenize(py_rstrip(&line.to_lowercase()))
    } else {
        options.tokenizer.tokenize(py_rstrip(line))
    }
}

/// All n-grams of orders 1 to `max_order` with their counts (`extract_all_word_ngrams`).
fn ngram_counts(tokens: &[String], max_order: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for n in 1..=max_order {
        for gram in tokens.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    counts
}

/// Python's `str.isspace` (what `str.split()` and `str.strip()` use): Unicode `White_Space`
/// plus the information separators U+001C–U+001F.
fn is_py_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `str.split()`.
fn py_split(line: &str) -> impl Iterator<Item = &str> {
    line.split(is_py_space).filter(|token| !token.is_empty())
}

/// Python's `str.rstrip()`.
fn py_rstrip(line: &str) -> &str {
    line.trim_end_matches(is_py_space)
}

/// `Tokenizer13a.__call__`.
fn tokenize_13a(line: &str) -> Vec<String> {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    tokenize_re(&format!(" {line} "))
}

/// `TokenizerZh.__call__`.
fn tokenize_zh(line: &str) -> Vec<String> {
    let mut spaced = String::with_capacity(line.len() * 2);
    for c in line.trim_matches(is_py_space).chars() {
        if is_sacrebleu_chinese_char(c) {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        } else {
            spaced.push(c);
        }
    }
    tokenize_re(&spaced)
}

/// `TokenizerRegexp.__call__`: four `re.sub` rules, then whitespace splitting.
fn tokenize_re(line: &str) -> Vec<String> {
    let is_digit = |c: char| c.is_ascii_digit();
    let is_period_comma = |c: char| c == '.' || c == ',';
    // ([\{-\~\[-\` -\&\(-\+\:-\@\/]) -> ' \1 ': ASCII punctuation but ' , - . (and space).
    let mut chars = Vec::with_capacity(line.len() * 2);
    for c in line.chars() {
        if matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/') {
            chars.extend([' ', c, ' ']);
        } else {
            chars.push(c);
        }
    }
    // ([^0-9])([\.,]) -> '\1 \2 '
    let chars = substitute_pairs(
        &chars,
        |a| !is_digit(a),
        is_period_comma,
        |a, b| vec![a, ' ', b, ' '],
    );
    // ([\.,])([^0-9]) -> ' \1 \2'
    let chars = substitute_pairs(
        &chars,
        is_period_comma,
        |b| !is_digit(b),
        |a, b| vec![' ', a, ' ', b],
    );
    // ([0-9])(-) -> '\1 \2 '
    let chars = substitute_pairs(&chars, is_digit, |b| b == '-', |a, b| vec![a, ' ', b, ' ']);
    let line: String = chars.into_iter().collect();
    py_split(&line).map(str::to_owned).collect()
}

/// `re.sub` of a two-character pattern `(first)(second)`: matches left to right without
/// overlapping, as Python's regular-expression engine finds them.
fn substitute_pairs(
    chars: &[char],
    first: impl Fn(char) -> bool,
    second: impl Fn(char) -> bool,
    replace: impl Fn(char, char) -> Vec<char>,
) -> Vec<char> {
    let mut out = Vec::with_capacity(chars.len() + chars.len() / 2);
    let mut i = 0;
    while i < chars.len() {
        if i + 1 < chars.len() && first(chars[i]) && second(chars[i + 1]) {
            out.extend(replace(chars[i], chars[i + 1]));
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(tokenizer: BleuTokenizer, line: &str) -> Vec<String> {
        tokenizer.tokenize(line)
    }

    /// Token lists sacreBLEU 2.6.0 printed (`Tokenizer13a()(line).split()`).
    #[test]
    fn tok13a_matches_sacrebleu() {
        let t = BleuTokenizer::Tok13a;
        assert_eq!(
            tokens(
                t,
                "Hello, world! It's 1,000.5 dollars ($) -- e.g. 3-4 U.S.A."
            ),
            [
                "Hello", ",", "world", "!", "It's", "1,000.5", "dollars", "(", "$", ")", "--", "e",
                ".", "g", ".", "3", "-", "4", "U", ".", "S", ".", "A", "."
            ]
        );
        assert_eq!(
            tokens(t, ".5 and 5. and ,x"),
            [".", "5", "and", "5", ".", "and", ",", "x"]
        );
        assert_eq!(
            tokens(t, "a<skipped>b &amp;lt; &amp;quot; x-\ny\nz"),
            ["ab", "<", "&", "quot", ";", "xy", "z"]
        );
        assert_eq!(tokens(t, "product_grid"), ["product", "_", "grid"]);
        assert_eq!(tokens(t, "中文，测试。"), ["中文，测试。"]);
        assert_eq!(tokens(t, "a\u{1c}b\u{a0}c"), ["a", "b", "c"]);
    }

    /// Token lists sacreBLEU 2.6.0 printed (`TokenizerZh()(line).split()`).
    #[test]
    fn zh_matches_sacrebleu() {
        let t = BleuTokenizer::Zh;
        assert_eq!(
            tokens(t, "我在2024年买了iPhone 15，花了5,999.00元！"),
            [
                "我", "在", "2024", "年", "买", "了", "iPhone", "15", "，", "花", "了", "5,999.00",
                "元", "！"
            ]
        );
        // No surrounding spaces: a leading `.5` stays one token (13a splits it).
        assert_eq!(tokens(t, ".5 a."), [".5", "a", "."]);
        // U+2014 and U+2026 go through sacreBLEU's U+2001–U+2A6D range; U+20000 does not.
        assert_eq!(tokens(t, "好—的…𠀀x"), ["好", "—", "的", "…", "𠀀x"]);
        // No unescaping in `zh`.
        assert_eq!(tokens(t, "&amp;"), ["&", "amp", ";"]);
    }

    #[test]
    fn signatures() {
        let options = BleuOptions {
            smooth: SmoothMethod::AddK(1.0),
            lowercase: true,
            effective_order: true,
            ..BleuOptions::default()
        };
        assert_eq!(
            options.signature(),
            "nrefs:1|case:lc|eff:yes|tok:13a|smooth:add-k[1.00]|version:2.6.0"
        );
    }

    #[test]
    fn errors_are_typed() {
        let none: [&str; 0] = [];
        assert!(matches!(
            corpus_bleu(&none, &none, BleuTokenizer::Tok13a),
            Err(TrainError::InvalidInput { .. })
        ));
        assert!(matches!(
            corpus_bleu(&["a"], &["a", "b"], BleuTokenizer::Tok13a),
            Err(TrainError::InvalidInput { .. })
        ));
        let options = BleuOptions {
            max_ngram_order: 0,
            ..BleuOptions::default()
        };
        assert!(corpus_bleu_with(&["a"], &["a"], &options).is_err());
        let options = BleuOptions {
            smooth: SmoothMethod::Floor(-0.1),
            ..BleuOptions::default()
        };
        assert!(corpus_bleu_with(&["a"], &["a"], &options).is_err());
        assert!("intl".parse::<BleuTokenizer>().is_err());
    }

    #[test]
    fn empty_hypotheses_score_zero() {
        let bleu = corpus_bleu(&["", ""], &["a b", "c"], BleuTokenizer::Tok13a).unwrap();
        assert_eq!(
            (bleu.score, bleu.bp, bleu.sys_len, bleu.ref_len),
            (0.0, 0.0, 0, 3)
        );
    }
}
