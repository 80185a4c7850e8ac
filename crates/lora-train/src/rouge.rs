//! ROUGE-L computed exactly as Google's [`rouge_score`](https://pypi.org/project/rouge-score/)
//! package ([`ROUGE_SCORE_VERSION`]) computes it with `RougeScorer(['rougeL'])`: the
//! precision, recall and F-measure of the longest common subsequence of each
//! prediction/reference pair, and their means over a corpus.
//!
//! - [`RougeTokenizer::Default`] is `rouge_score`'s default tokenizer without stemming:
//!   lowercase, replace every run of characters other than `[a-z0-9]` by a space, split.
//!   Porter stemming (`use_stemmer=True`) is not provided. This tokenizer deletes every
//!   Chinese character, so that Chinese text scores 0 or nothing at all.
//! - [`RougeTokenizer::Chinese`] is **the tokenisation for Chinese**: the text is lowercased
//!   (Python's `str.lower`), then each CJK ideograph is a token of its own and each maximal
//!   run of `[a-z0-9]` is a token, as the default tokenizer makes it; every other character
//!   (whitespace, ASCII and full-width punctuation, kana, hangul, …) only separates tokens.
//!   The CJK ideographs are the code points U+3400–U+4DBF (Extension A), U+4E00–U+9FFF
//!   (Unified Ideographs), U+F900–U+FAFF (Compatibility Ideographs) and U+20000–U+3FFFF
//!   (Extensions B and later, Compatibility Supplement). With `rouge_score`, pass it as
//!   `RougeScorer(['rougeL'], tokenizer=ChineseTokenizer())` where
//!
//!   ```python
//!   class ChineseTokenizer:
//!       PATTERN = re.compile(
//!           "[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]|[a-z0-9]+")
//!
//!       def tokenize(self, text):
//!           return self.PATTERN.findall(text.lower())
//!   ```
//!
//!   (`scripts/gen_text_metric_fixtures.py` uses this class.)
//!
//! Scores follow `rouge_score`'s `_score_lcs`: with `l` the length of the longest common
//! subsequence, precision `l / |prediction|`, recall `l / |reference|`, F-measure
//! `2PR / (P + R)` (0 when `P + R` is 0); a pair where either side has no token scores 0 on
//! all three (also when both are empty — unlike [`crate::metrics::rouge_l`], which compares
//! other tokens and gives 1 there). `rouge_score` has no corpus score other than bootstrap
//! resampling; [`corpus_rouge_l`] reports the plain means, summed in order as Python's
//! `sum(scores) / len(scores)`.
//!
//! ```
//! use lora_train::rouge::{corpus_rouge_l, RougeTokenizer};
//!
//! let rouge = corpus_rouge_l(&["我们去公园散步"], &["我们一起去公园散步吧"], RougeTokenizer::Chinese).unwrap();
//! assert!((rouge.mean_fmeasure - 14.0 / 17.0).abs() < 1e-12);
//! let rouge = corpus_rouge_l(&["我们去公园散步"], &["我们一起去公园散步吧"], RougeTokenizer::Default).unwrap();
//! assert_eq!(rouge.mean_fmeasure, 0.0);
//! ```

use crate::metrics::{check_pairs, lcs_len};
use crate::TrainError;

/// The `rouge_score` release whose ROUGE-L and default tokenizer this module reproduces.
///
/// ```
/// assert_eq!(lora_train::rouge::ROUGE_SCORE_VERSION, "0.1.2");
/// ```
pub const ROUGE_SCORE_VERSION: &str = "0.1.2";

/// How ROUGE-L splits text into the tokens it compares (see the module documentation).
///
/// ```
/// use lora_train::rouge::RougeTokenizer;
///
/// assert_eq!(RougeTokenizer::Default.tokenize("The cat's 2nd mat-ish, $1,000.5!"), ["the", "cat", "s", "2nd", "mat", "ish", "1", "000", "5"]);
/// assert_eq!(RougeTokenizer::Default.tokenize("页面顶部 Nav_Bar"), ["nav", "bar"]);
/// assert_eq!(RougeTokenizer::Chinese.tokenize("页面顶部 Nav_Bar，3列"), ["页", "面", "顶", "部", "nav", "bar", "3", "列"]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RougeTokenizer {
    /// `rouge_score`'s default tokenizer, without stemming: the lowercased runs of
    /// `[a-z0-9]`.
    #[default]
    Default,
    /// The tokenisation for Chinese: each CJK ideograph, and each lowercased run of
    /// `[a-z0-9]`.
    Chinese,
}

impl RougeTokenizer {
    /// The tokens of `text`.
    ///
    /// ```
    /// use lora_train::rouge::RougeTokenizer;
    ///
    /// // The Kelvin sign lowercases to an ASCII `k`, as with Python's `str.lower`.
    /// assert_eq!(RougeTokenizer::Default.tokenize("5\u{212A}m"), ["5km"]);
    /// ```
    pub fn tokenize(self, text: &str) -> Vec<String> {
        let mut tokens = Vec::new();
        let mut run = String::new();
        for c in text.chars().flat_map(char::to_lowercase) {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                run.push(c);
                continue;
            }
            if !run.is_empty() {
                tokens.push(std::mem::take(&mut run));
            }
            if self == Self::Chinese && is_cjk_ideograph(c) {
                tokens.push(c.to_string());
            }
        }
        if !run.is_empty() {
            tokens.push(run);
        }
        tokens
    }
}

/// Whether `c` is a CJK ideograph of [`RougeTokenizer::Chinese`]: U+3400–U+4DBF,
/// U+4E00–U+9FFF, U+F900–U+FAFF or U+20000–U+3FFFF.
///
/// ```
/// use lora_train::rouge::is_cjk_ideograph;
///
/// assert!(is_cjk_ideograph('中') && is_cjk_ideograph('𠀀'));
/// assert!(!is_cjk_ideograph('，') && !is_cjk_ideograph('カ') && !is_cjk_ideograph('a'));
/// ```
pub fn is_cjk_ideograph(c: char) -> bool {
    matches!(
        c as u32,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3FFFF
    )
}

/// The ROUGE-L scores of one pair (`rouge_score`'s `Score`), each in `[0, 1]`.
///
/// ```
/// use lora_train::rouge::{rouge_l_pair, RougeTokenizer};
///
/// // Tokens a b c d (reference) and a c d (prediction): LCS 3.
/// let score = rouge_l_pair("a c d", "a b c d", RougeTokenizer::Default);
/// assert_eq!((score.precision, score.recall), (1.0, 0.75));
/// assert!((score.fmeasure - 6.0 / 7.0).abs() < 1e-15);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RougeScore {
    /// LCS length over the prediction's tokens.
    pub precision: f64,
    /// LCS length over the reference's tokens.
    pub recall: f64,
    /// `2PR / (P + R)`, 0 when `P + R` is 0.
    pub fmeasure: f64,
}

/// ROUGE-L of one pair: `RougeScorer(['rougeL']).score(reference, prediction)['rougeL']`
/// (note `rouge_score`'s order, target first).
///
/// ```
/// use lora_train::rouge::{rouge_l_pair, RougeTokenizer};
///
/// let score = rouge_l_pair("", "anything", RougeTokenizer::Default);
/// assert_eq!(score.fmeasure, 0.0);
/// ```
pub fn rouge_l_pair(prediction: &str, reference: &str, tokenizer: RougeTokenizer) -> RougeScore {
    let prediction = tokenizer.tokenize(prediction);
    let reference = tokenizer.tokenize(reference);
    if prediction.is_empty() || reference.is_empty() {
        return RougeScore {
            precision: 0.0,
            recall: 0.0,
            fmeasure: 0.0,
        };
    }
    let lcs = lcs_len(&reference, &prediction) as f64;
    let precision = lcs / prediction.len() as f64;
    let recall = lcs / reference.len() as f64;
    let fmeasure = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    RougeScore {
        precision,
        recall,
        fmeasure,
    }
}

/// ROUGE-L of every pair of a corpus and the means.
///
/// ```
/// use lora_train::rouge::{corpus_rouge_l, RougeTokenizer};
///
/// let rouge = corpus_rouge_l(&["a b", "x"], &["a b", "y"], RougeTokenizer::Default).unwrap();
/// assert_eq!(rouge.scores.len(), 2);
/// assert_eq!(rouge.mean_fmeasure, 0.5);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RougeLCorpus {
    /// Each pair's scores, in the order of the inputs.
    pub scores: Vec<RougeScore>,
    /// Mean precision.
    pub mean_precision: f64,
    /// Mean recall.
    pub mean_recall: f64,
    /// Mean F-measure (the corpus ROUGE-L usually reported).
    pub mean_fmeasure: f64,
}

/// ROUGE-L of each prediction against its reference ([`rouge_l_pair`]) and the means over
/// the corpus.
///
/// ```
/// use lora_train::rouge::{corpus_rouge_l, RougeTokenizer};
///
/// let rouge = corpus_rouge_l(&["The cat sat."], &["the cat sat on the mat"], RougeTokenizer::Default).unwrap();
/// assert_eq!(rouge.mean_recall, 0.5);
/// ```
///
/// # Errors
/// [`TrainError::InvalidInput`] for empty or differently long slices.
pub fn corpus_rouge_l<P: AsRef<str>, R: AsRef<str>>(
    predictions: &[P],
    references: &[R],
    tokenizer: RougeTokenizer,
) -> Result<RougeLCorpus, TrainError> {
    check_pairs(predictions.len(), references.len())?;
    let scores: Vec<RougeScore> = predictions
        .iter()
        .zip(references)
        .map(|(p, r)| rouge_l_pair(p.as_ref(), r.as_ref(), tokenizer))
        .collect();
    let mean = |field: fn(&RougeScore) -> f64| {
        scores.iter().fold(0.0, |sum, s| sum + field(s)) / scores.len() as f64
    };
    Ok(RougeLCorpus {
        mean_precision: mean(|s| s.precision),
        mean_recall: mean(|s| s.recall),
        mean_fmeasure: mean(|s| s.fmeasure),
        scores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Token lists `rouge_score`'s `DefaultTokenizer().tokenize` printed.
    #[test]
    fn default_tokenizer_matches_rouge_score() {
        let t = RougeTokenizer::Default;
        assert_eq!(
            t.tokenize("Hello, World! It's 1,000.5 -- e-mail_me@X.com ÉTÉ"),
            ["hello", "world", "it", "s", "1", "000", "5", "e", "mail", "me", "x", "com", "t"]
        );
        assert_eq!(t.tokenize("中文，测试。"), Vec::<String>::new());
        assert_eq!(t.tokenize("İstanbul"), ["i", "stanbul"]);
    }

    #[test]
    fn chinese_tokenizer() {
        let t = RougeTokenizer::Chinese;
        assert_eq!(
            t.tokenize("我在2024年买了iPhone 15，花了5,999元！"),
            [
                "我", "在", "2024", "年", "买", "了", "iphone", "15", "花", "了", "5", "999", "元"
            ]
        );
        assert_eq!(t.tokenize("カタカナ한국어"), Vec::<String>::new());
    }

    #[test]
    fn both_empty_scores_zero() {
        let score = rouge_l_pair("", "", RougeTokenizer::Default);
        assert_eq!(score.fmeasure, 0.0);
        let none: [&str; 0] = [];
        assert!(matches!(
            corpus_rouge_l(&none, &none, RougeTokenizer::Default),
            Err(TrainError::InvalidInput { .. })
        ));
        assert!(corpus_rouge_l(&["a"], &none, RougeTokenizer::Default).is_err());
    }
}
