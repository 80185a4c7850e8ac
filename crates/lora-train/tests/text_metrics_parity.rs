//! Parity of `lora_train::sacrebleu` and `lora_train::rouge` with the real sacreBLEU 2.6.0
//! and rouge-score 0.1.2, on the fixtures `scripts/gen_text_metric_fixtures.py` wrote under
//! `tests/fixtures/text_metrics/` (Chinese, UI-DSL JSON, English and short English pairs):
//! one test per BLEU case (score, precisions, brevity penalty, counts, totals, lengths,
//! signature and the printed line) and per ROUGE-L case (each pair's precision, recall and
//! F-measure, and their means), the token lists of every tokenizer on every fixture text,
//! and field accuracy on the JSON pairs' known edits.
//!
//! Tolerance: 1e-6 absolute on the 0–100 BLEU score, its precisions and brevity penalty, and
//! on ROUGE-L's precision, recall and F-measure; integer statistics, token lists and
//! signature strings must be equal.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use lora_train::field_accuracy::field_accuracy;
use lora_train::rouge::{corpus_rouge_l, RougeTokenizer};
use lora_train::sacrebleu::{
    corpus_bleu, corpus_bleu_with, BleuOptions, BleuTokenizer, SmoothMethod,
};
use serde_json::Value;

/// Absolute tolerance on BLEU (0–100) and on ROUGE-L's scores (0–1).
const TOLERANCE: f64 = 1e-6;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/text_metrics")
}

fn expected() -> &'static Value {
    static EXPECTED: OnceLock<Value> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures().join("expected.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

/// The records of `pairs_{set}.jsonl`.
fn records(set: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join(format!("pairs_{set}.jsonl"))).unwrap();
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Predictions and references of `pairs_{set}.jsonl`.
fn pairs(set: &str) -> (Vec<String>, Vec<String>) {
    records(set)
        .into_iter()
        .map(|r| {
            (
                r["prediction"].as_str().unwrap().to_owned(),
                r["reference"].as_str().unwrap().to_owned(),
            )
        })
        .unzip()
}

fn case<'a>(kind: &str, name: &str) -> &'a Value {
    expected()[kind]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} case {name} in the fixture"))
}

fn floats(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

fn assert_close(what: &str, actual: f64, expected: f64) {
    assert!(
        (actual - expected).abs() <= TOLERANCE,
        "{what}: {actual} vs sacreBLEU/rouge-score {expected}"
    );
}

fn check_bleu(name: &str) {
    let case = case("bleu", name);
    let (hypotheses, references) = pairs(case["pairs"].as_str().unwrap());
    let tokenizer: BleuTokenizer = case["tokenize"].as_str().unwrap().parse().unwrap();
    let value = case["smooth_value"].as_f64();
    let smooth = match case["smooth_method"].as_str().unwrap() {
        "exp" => SmoothMethod::Exp,
        "none" => SmoothMethod::None,
        "floor" => SmoothMethod::Floor(value.unwrap_or(0.1)),
        "add-k" => SmoothMethod::AddK(value.unwrap_or(1.0)),
        other => panic!("smooth_method {other}"),
    };
    let options = BleuOptions {
        tokenizer,
        smooth,
        lowercase: case["lowercase"].as_bool().unwrap(),
        effective_order: case["effective_order"].as_bool().unwrap(),
        ..BleuOptions::default()
    };
    let bleu = if options
        == (BleuOptions {
            tokenizer,
            ..BleuOptions::default()
        }) {
        corpus_bleu(&hypotheses, &references, tokenizer).unwrap()
    } else {
        corpus_bleu_with(&hypotheses, &references, &options).unwrap()
    };

    assert_eq!(
        bleu.sys_len as u64,
        case["sys_len"].as_u64().unwrap(),
        "sys_len"
    );
    assert_eq!(
        bleu.ref_len as u64,
        case["ref_len"].as_u64().unwrap(),
        "ref_len"
    );
    // sacreBLEU's add-k adds k to its reported counts and totals from order 2 on.
    let added = |n: usize| match smooth {
        SmoothMethod::AddK(k) if n > 0 => k,
        _ => 0.0,
    };
    let counts: Vec<f64> = (0..4).map(|n| bleu.counts[n] as f64 + added(n)).collect();
    let totals: Vec<f64> = (0..4).map(|n| bleu.totals[n] as f64 + added(n)).collect();
    assert_eq!(counts, floats(&case["counts"]), "counts");
    assert_eq!(totals, floats(&case["totals"]), "totals");
    for (n, (&p, q)) in bleu
        .precisions
        .iter()
        .zip(floats(&case["precisions"]))
        .enumerate()
    {
        assert_close(&format!("precision {}", n + 1), p, q);
    }
    assert_close("bp", bleu.bp, case["bp"].as_f64().unwrap());
    assert_close("score", bleu.score, case["score"].as_f64().unwrap());
    assert_eq!(bleu.signature(), case["signature"].as_str().unwrap());
    assert_eq!(bleu.to_string(), case["printed"].as_str().unwrap());
    assert_eq!(
        bleu.format_with_signature(),
        case["printed_with_signature"].as_str().unwrap()
    );
}

fn check_rouge(name: &str) {
    let case = case("rouge_l", name);
    let (predictions, references) = pairs(case["pairs"].as_str().unwrap());
    let tokenizer = match case["tokenizer"].as_str().unwrap() {
        "default" => RougeTokenizer::Default,
        "chinese" => RougeTokenizer::Chinese,
        other => panic!("tokenizer {other}"),
    };
    let rouge = corpus_rouge_l(&predictions, &references, tokenizer).unwrap();
    let expected = [
        floats(&case["precision"]),
        floats(&case["recall"]),
        floats(&case["fmeasure"]),
    ];
    assert_eq!(rouge.scores.len(), expected[2].len());
    for (i, score) in rouge.scores.iter().enumerate() {
        assert_close(
            &format!("pair {i} precision"),
            score.precision,
            expected[0][i],
        );
        assert_close(&format!("pair {i} recall"), score.recall, expected[1][i]);
        assert_close(&format!("pair {i} F"), score.fmeasure, expected[2][i]);
    }
    assert_close(
        "mean precision",
        rouge.mean_precision,
        case["mean_precision"].as_f64().unwrap(),
    );
    assert_close(
        "mean recall",
        rouge.mean_recall,
        case["mean_recall"].as_f64().unwrap(),
    );
    assert_close(
        "mean F",
        rouge.mean_fmeasure,
        case["mean_fmeasure"].as_f64().unwrap(),
    );
}

/// One `#[test]` per fixture case, and the list of the cases they cover.
macro_rules! cases {
    ($list:ident, $check:ident, { $($test:ident => $name:literal,)* }) => {
        const $list: &[&str] = &[$($name),*];
        $(
            #[test]
            fn $test() {
                $check($name);
            }
        )*
    };
}

cases!(BLEU_CASES, check_bleu, {
    bleu_zh_13a_exp => "zh/13a/exp",
    bleu_zh_zh_exp => "zh/zh/exp",
    bleu_json_13a_exp => "json/13a/exp",
    bleu_json_zh_exp => "json/zh/exp",
    bleu_en_13a_exp => "en/13a/exp",
    bleu_en_zh_exp => "en/zh/exp",
    bleu_zh_zh_floor => "zh/zh/floor",
    bleu_zh_zh_none => "zh/zh/none",
    bleu_json_zh_floor => "json/zh/floor",
    bleu_json_zh_none => "json/zh/none",
    bleu_zh_zh_add_k => "zh/zh/add-k",
    bleu_en_13a_floor => "en/13a/floor",
    bleu_en_13a_exp_lowercase => "en/13a/exp/lowercase",
    bleu_en_none_exp => "en/none/exp",
    bleu_sparse_13a_exp => "sparse/13a/exp",
    bleu_sparse_13a_floor => "sparse/13a/floor",
    bleu_sparse_13a_floor_025 => "sparse/13a/floor-0.25",
    bleu_sparse_13a_none => "sparse/13a/none",
    bleu_sparse_13a_add_k => "sparse/13a/add-k",
    bleu_sparse_13a_exp_lowercase => "sparse/13a/exp/lowercase",
    bleu_short_13a_exp => "short/13a/exp",
    bleu_short_13a_none_effective => "short/13a/none/effective",
    bleu_short_13a_exp_effective => "short/13a/exp/effective",
});

cases!(ROUGE_CASES, check_rouge, {
    rouge_l_en_default => "en/default",
    rouge_l_en_chinese => "en/chinese",
    rouge_l_zh_chinese => "zh/chinese",
    rouge_l_zh_default => "zh/default",
    rouge_l_json_chinese => "json/chinese",
    rouge_l_json_default => "json/default",
});

/// A case added to the fixture without a test here would go unchecked.
#[test]
fn every_fixture_case_has_a_test() {
    for (kind, tested) in [("bleu", BLEU_CASES), ("rouge_l", ROUGE_CASES)] {
        let mut names: Vec<&str> = expected()[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        let mut tested = tested.to_vec();
        names.sort_unstable();
        tested.sort_unstable();
        assert_eq!(names, tested, "{kind} cases");
    }
}

/// Each fixture text's tokens by `tokenize`, against the list the Python tokenizer gave.
fn check_tokens(key: &str, tokenize: impl Fn(&str) -> Vec<String>) {
    let texts = expected()["tokenizations"].as_array().unwrap();
    assert!(texts.len() > 80);
    for entry in texts {
        let text = entry["text"].as_str().unwrap();
        let want: Vec<&str> = entry[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert_eq!(tokenize(text), want, "{key} tokens of {text:?}");
    }
}

#[test]
fn tokens_13a() {
    check_tokens("13a", |t| BleuTokenizer::Tok13a.tokenize(t));
}

#[test]
fn tokens_zh() {
    check_tokens("zh", |t| BleuTokenizer::Zh.tokenize(t));
}

#[test]
fn tokens_none() {
    check_tokens("none", |t| BleuTokenizer::None.tokenize(t));
}

#[test]
fn tokens_rouge_default() {
    check_tokens("rouge_default", |t| RougeTokenizer::Default.tokenize(t));
}

#[test]
fn tokens_rouge_chinese() {
    check_tokens("rouge_chinese", |t| RougeTokenizer::Chinese.tokenize(t));
}

/// Field accuracy of each JSON pair, against what its edit must do.
#[test]
fn field_accuracy_of_the_json_edits() {
    let mut seen = std::collections::BTreeSet::new();
    for record in records("json") {
        let prediction = record["prediction"].as_str().unwrap();
        let reference = record["reference"].as_str().unwrap();
        let edit = record["edit"].as_str().unwrap();
        seen.insert(edit.to_owned());
        let report = field_accuracy(&[prediction], &[reference], Some("type")).unwrap();
        let missed: Vec<&str> = report
            .per_path
            .iter()
            .filter(|(_, c)| c.matches < c.references)
            .map(|(path, _)| path.as_str())
            .collect();
        match edit {
            "identical" => assert_eq!(report.overall(), 1.0),
            "wrong_theme" => assert_eq!(missed, ["page.theme"]),
            "truncated" => {
                assert_eq!(report.unparsable_predictions, 1);
                assert_eq!(report.matched_leaves, 0);
            }
            "swapped_position" => {
                assert!(!missed.is_empty() && missed.len() <= 2, "{missed:?}");
                assert!(
                    missed.iter().all(|p| p.ends_with(".position")),
                    "{missed:?}"
                );
            }
            "changed_number" | "changed_name" | "shorter_list" => {
                assert_eq!(missed.len(), 1, "{missed:?}");
            }
            "dropped_section" | "reversed_sections" => {
                assert!(report.overall() < 1.0);
                assert!(missed.iter().all(|p| p.starts_with("page.sections[")));
            }
            other => panic!("edit {other}"),
        }
        assert_eq!(report.reference_leaves, report.per_path.len());
        let groups = report.per_group.unwrap();
        let grouped: usize = groups.values().map(|c| c.references).sum();
        assert_eq!(grouped, report.reference_leaves);
    }
    assert!(seen.len() >= 6, "{seen:?}");
}
