//! What `eval` and `demo` report for a set of predictions: exact match, field-level accuracy,
//! sacreBLEU's corpus BLEU (with its signature), rouge-score's ROUGE-L, the JSON-token BLEU and
//! ROUGE-L, and the shares of valid JSON and valid UI-DSL.

use std::fmt;

use clap::{Args, ValueEnum};
use lora_burn::lora_train::field_accuracy::{field_accuracy, FieldAccuracy};
use lora_burn::lora_train::metrics::{write_metric_table, EvalReport};
use lora_burn::lora_train::rouge::{corpus_rouge_l, RougeLCorpus, RougeTokenizer};
use lora_burn::lora_train::sacrebleu::{corpus_bleu, BleuScore, BleuTokenizer};

use crate::common::CliResult;

/// sacreBLEU's tokenizers (`--tokenize` there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum BleuTokenize {
    /// `13a`, sacreBLEU's default (mteval-v13a).
    #[default]
    #[value(name = "13a")]
    Tok13a,
    /// `zh`: every Chinese character a token, the rest as `13a`.
    Zh,
    /// `none`: split on spaces only.
    None,
}

/// rouge-score's tokenisation, or the one for Chinese (`lora_train::rouge`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum RougeTokenize {
    /// rouge-score's default: lowercase, runs of `[a-z0-9]` (drops every Chinese character).
    #[default]
    Default,
    /// Each CJK ideograph a token, plus rouge-score's default tokens.
    Chinese,
}

/// How the text metrics tokenise, with the names of sacreBLEU and rouge-score.
#[derive(Args, Debug, Clone, Default)]
pub struct MetricArgs {
    /// sacreBLEU's tokenizer for BLEU (`zh` for Chinese targets).
    #[arg(long, value_enum, default_value_t = BleuTokenize::Tok13a)]
    pub bleu_tokenize: BleuTokenize,
    /// ROUGE-L's tokenisation (`chinese` for Chinese targets).
    #[arg(long, value_enum, default_value_t = RougeTokenize::Default)]
    pub rouge_tokenizer: RougeTokenize,
    /// Also print the field accuracy of every key path and of every section type.
    #[arg(long)]
    pub field_report: bool,
}

/// The metrics of one set of predictions against their references.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Exact match, JSON-token BLEU and ROUGE-L, valid JSON and UI-DSL shares.
    pub report: EvalReport,
    /// sacreBLEU's corpus BLEU.
    pub bleu: BleuScore,
    /// rouge-score's ROUGE-L (mean F over the pairs).
    pub rouge_l: RougeLCorpus,
    /// Field-level accuracy, with sections grouped by their `type`.
    pub fields: FieldAccuracy,
    /// The tokenisation of [`rouge_l`](Self::rouge_l).
    pub rouge_tokenizer: RougeTokenize,
    /// Whether `Display` prints the per-path and per-section tables.
    pub field_report: bool,
}

impl Evaluation {
    /// Scores `predictions` against `references`; `report` holds the other metrics.
    pub fn compute(
        report: EvalReport,
        predictions: &[String],
        references: &[&str],
        metrics: &MetricArgs,
    ) -> CliResult<Self> {
        let bleu_tokenizer = match metrics.bleu_tokenize {
            BleuTokenize::Tok13a => BleuTokenizer::Tok13a,
            BleuTokenize::Zh => BleuTokenizer::Zh,
            BleuTokenize::None => BleuTokenizer::None,
        };
        let rouge_tokenizer = match metrics.rouge_tokenizer {
            RougeTokenize::Default => RougeTokenizer::Default,
            RougeTokenize::Chinese => RougeTokenizer::Chinese,
        };
        Ok(Self {
            report,
            bleu: corpus_bleu(predictions, references, bleu_tokenizer)?,
            rouge_l: corpus_rouge_l(predictions, references, rouge_tokenizer)?,
            fields: field_accuracy(predictions, references, Some("type"))?,
            rouge_tokenizer: metrics.rouge_tokenizer,
            field_report: metrics.field_report,
        })
    }
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let report = &self.report;
        write_metric_table(
            f,
            report.count,
            &[
                ("exact_match", Some(report.exact_match)),
                ("field_accuracy", Some(self.fields.overall())),
                ("sacrebleu", Some(self.bleu.score)),
                ("rouge_l", Some(self.rouge_l.mean_fmeasure)),
                ("json_token_bleu", Some(report.bleu)),
                ("json_token_rouge_l", Some(report.rouge_l)),
                ("json_valid_rate", Some(report.json_valid_rate)),
                ("schema_valid_rate", report.schema_valid_rate),
            ],
        )?;
        writeln!(f, "{}", self.bleu.format_with_signature())?;
        write!(
            f,
            "ROUGE-L: rouge-score {} rougeL F, {} tokenizer, mean over {} pairs",
            lora_burn::lora_train::rouge::ROUGE_SCORE_VERSION,
            match self.rouge_tokenizer {
                RougeTokenize::Default => "its default",
                RougeTokenize::Chinese => "the Chinese",
            },
            report.count
        )?;
        if self.field_report {
            write!(f, "\n\n{}", self.fields)?;
        }
        Ok(())
    }
}
