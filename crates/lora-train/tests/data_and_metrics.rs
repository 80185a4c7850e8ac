//! Fine-tuning data and evaluation: JSONL reading with bad-record reports, the
//! train/validation split, the collator (feeding T5) and the text metrics.
#![cfg(feature = "t5")]

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor};
use lora_t5::{T5Config, T5ForConditionalGeneration, IGNORE_INDEX};
use lora_train::data::{
    parse_jsonl, read_jsonl, train_valid_split, BadRecordKind, BadRecordPolicy, JsonlFields,
    JsonlOptions, Seq2SeqCollator, TokenizedExample,
};
use lora_train::metrics::{
    bleu, exact_match, json_tokens, json_valid_rate, rouge_l, schema_valid_rate, EvalReport,
};
use lora_train::TrainError;
use serde_json::Value;

type Cpu = NdArray<f32>;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lora-train-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn ints(t: Tensor<Cpu, 2, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().to_vec::<i64>().unwrap()
}

// ---------------------------------------------------------------------------------------------
// JSONL

const GOOD: &str = r#"{"instruction":"顶部搜索","output_json_minified":"{\"a\":1}"}"#;

/// A bad line and a check of the kind it must be reported as.
type BadLine = (Vec<u8>, fn(&BadRecordKind) -> bool);

fn bad_lines() -> Vec<BadLine> {
    vec![
        (b"{not json".to_vec(), |k| {
            matches!(k, BadRecordKind::InvalidJson { .. })
        }),
        (b"[1, 2]".to_vec(), |k| *k == BadRecordKind::NotAnObject),
        (br#"{"instruction":"x"}"#.to_vec(), |k| {
            *k == BadRecordKind::MissingField {
                field: "output_json_minified".into(),
            }
        }),
        (
            br#"{"instruction":3,"output_json_minified":"{}"}"#.to_vec(),
            |k| {
                *k == BadRecordKind::NotAString {
                    field: "instruction".into(),
                }
            },
        ),
        (
            br#"{"instruction":"x","output_json_minified":"{\"a\":"}"#.to_vec(),
            |k| matches!(k, BadRecordKind::TargetNotJson { .. }),
        ),
        (b"{\"instruction\":\"\xff\"}".to_vec(), |k| {
            *k == BadRecordKind::InvalidUtf8
        }),
    ]
}

#[test]
fn jsonl_skip_policy_reports_each_bad_record_with_file_and_line() {
    let dir = temp_dir("jsonl-skip");
    let path = dir.join("mixed.jsonl");
    let mut bytes = format!("{GOOD}\n\n").into_bytes();
    let bad = bad_lines();
    for (line, _) in &bad {
        bytes.extend_from_slice(line);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(GOOD.as_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let options = JsonlOptions {
        policy: BadRecordPolicy::Skip,
        ..JsonlOptions::default()
    };
    let data = read_jsonl(&path, &options).unwrap();
    assert_eq!(data.examples.len(), 2);
    assert_eq!(data.examples[0].source, "顶部搜索");
    assert_eq!(data.examples[0].target, "{\"a\":1}");
    assert_eq!(
        data.examples.iter().map(|e| e.line).collect::<Vec<_>>(),
        [1, 3 + bad.len()]
    );
    assert_eq!(data.skipped.len(), bad.len());
    for (i, (skipped, (_, is_kind))) in data.skipped.iter().zip(&bad).enumerate() {
        assert_eq!(skipped.path, path);
        assert_eq!(skipped.line, i + 3);
        assert!(
            is_kind(&skipped.kind),
            "line {}: {:?}",
            skipped.line,
            skipped.kind
        );
        assert!(skipped
            .to_string()
            .starts_with(&format!("{}:{}: ", path.display(), i + 3)));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn jsonl_fail_policy_stops_at_the_first_bad_record() {
    for (line, is_kind) in bad_lines() {
        let mut bytes = format!("{GOOD}\n{GOOD}\n").into_bytes();
        bytes.extend_from_slice(&line);
        bytes.extend_from_slice(format!("\n{GOOD}\n").as_bytes());
        let skipped = parse_jsonl(
            &bytes,
            "t.jsonl".as_ref(),
            &JsonlOptions {
                policy: BadRecordPolicy::Skip,
                ..JsonlOptions::default()
            },
        )
        .unwrap()
        .skipped;
        assert!(is_kind(&skipped[0].kind));
        match parse_jsonl(&bytes, "t.jsonl".as_ref(), &JsonlOptions::default()) {
            Err(TrainError::BadRecord { path, line, reason }) => {
                assert_eq!((path.as_path(), line), (Path::new("t.jsonl"), 3));
                assert_eq!(reason, skipped[0].kind.to_string());
            }
            other => panic!("expected a bad-record error, got {other:?}"),
        }
    }
}

#[test]
fn jsonl_reads_every_committed_corpus_without_a_bad_record() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/uidsl");
    for corpus in uidsl::standard_corpora().generate().unwrap() {
        let path = dir.join(corpus.file_name());
        let options = JsonlOptions {
            policy: BadRecordPolicy::Fail,
            ..JsonlOptions::default()
        };
        let data = read_jsonl(&path, &options).unwrap();
        assert_eq!(
            data.examples.len(),
            corpus.records.len(),
            "{}",
            path.display()
        );
        assert!(data.skipped.is_empty());
    }
}

#[test]
fn jsonl_reads_custom_fields_and_missing_files_fail_typed() {
    let text = br#"{"input":"a","output":"plain text"}"#;
    let options = JsonlOptions {
        fields: JsonlFields {
            source: "input".into(),
            target: "output".into(),
        },
        policy: BadRecordPolicy::Fail,
        target_must_be_json: false,
        target_required: true,
    };
    let data = parse_jsonl(text, "c.jsonl".as_ref(), &options).unwrap();
    assert_eq!(data.examples[0].target, "plain text");
    let strict = JsonlOptions {
        target_must_be_json: true,
        ..options
    };
    assert!(parse_jsonl(text, "c.jsonl".as_ref(), &strict).is_err());
    let missing = read_jsonl(Path::new("/nonexistent/x.jsonl"), &JsonlOptions::default());
    assert!(matches!(missing, Err(TrainError::Io { .. })));
}

#[test]
fn split_is_deterministic_complete_and_checked() {
    let items: Vec<u32> = (0..101).collect();
    let (train, valid) = train_valid_split(items.clone(), 0.1, 3).unwrap();
    assert_eq!((train.len(), valid.len()), (91, 10));
    assert_eq!(
        train_valid_split(items.clone(), 0.1, 3).unwrap(),
        (train.clone(), valid.clone())
    );
    assert_ne!(train_valid_split(items.clone(), 0.1, 4).unwrap().1, valid);
    let mut all: Vec<u32> = train.iter().chain(&valid).copied().collect();
    all.sort();
    assert_eq!(all, items);
    assert!(train.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(train_valid_split(items.clone(), 0.0, 3).unwrap().1.len(), 0);
    assert_eq!(train_valid_split(items.clone(), 1.0, 3).unwrap().0.len(), 0);
    for ratio in [-0.1, 1.1, f64::NAN] {
        assert!(matches!(
            train_valid_split(items.clone(), ratio, 3),
            Err(TrainError::InvalidDataConfig { .. })
        ));
    }
}

// ---------------------------------------------------------------------------------------------
// Collator

fn example(source: &[u32], target: &[u32]) -> TokenizedExample {
    TokenizedExample {
        source: source.to_vec(),
        target: target.to_vec(),
    }
}

#[test]
fn collator_pads_dynamically_and_masks_labels() {
    let collator = Seq2SeqCollator {
        max_source_len: 16,
        max_target_len: 16,
        pad_id: 0,
    };
    let batch = collator
        .collate::<Cpu>(
            &[
                example(&[4, 5, 1], &[7, 1]),
                example(&[6, 1], &[8, 9, 10, 1]),
            ],
            &Default::default(),
        )
        .unwrap();
    assert_eq!(batch.input_ids.dims(), [2, 3]);
    assert_eq!(ints(batch.input_ids), [4, 5, 1, 6, 1, 0]);
    assert_eq!(ints(batch.attention_mask), [1, 1, 1, 1, 1, 0]);
    assert_eq!(
        ints(batch.labels),
        [7, 1, IGNORE_INDEX, IGNORE_INDEX, 8, 9, 10, 1]
    );
    assert_eq!(
        (
            batch.truncated_sources,
            batch.truncated_targets,
            batch.truncated_examples
        ),
        (0, 0, 0)
    );
}

#[test]
fn collator_truncation_keeps_eos_and_is_counted() {
    let collator = Seq2SeqCollator {
        max_source_len: 4,
        max_target_len: 3,
        pad_id: 0,
    };
    let batch = collator
        .collate::<Cpu>(
            &[
                example(&[2, 3, 4, 5, 6, 1], &[7, 8, 9, 10, 1]),
                example(&[2, 3, 4, 1], &[7, 1]),
                example(&[2, 1], &[7, 8, 9, 1]),
            ],
            &Default::default(),
        )
        .unwrap();
    assert_eq!(ints(batch.input_ids), [2, 3, 4, 1, 2, 3, 4, 1, 2, 1, 0, 0]);
    assert_eq!(ints(batch.labels), [7, 8, 1, 7, 1, IGNORE_INDEX, 7, 8, 1]);
    assert_eq!(batch.truncated_sources, 1);
    assert_eq!(batch.truncated_targets, 2);
    assert_eq!(batch.truncated_examples, 2);
}

#[test]
fn collator_rejects_empty_input_and_zero_lengths() {
    let device = Default::default();
    let ok = Seq2SeqCollator {
        max_source_len: 4,
        max_target_len: 4,
        pad_id: 0,
    };
    assert!(ok.collate::<Cpu>(&[], &device).is_err());
    assert!(ok.collate::<Cpu>(&[example(&[], &[1])], &device).is_err());
    let zero = Seq2SeqCollator {
        max_source_len: 0,
        ..ok
    };
    assert!(matches!(
        zero.collate::<Cpu>(&[example(&[1], &[1])], &device),
        Err(TrainError::InvalidDataConfig { .. })
    ));
    let one = Seq2SeqCollator {
        max_target_len: 1,
        ..ok
    };
    let batch = one
        .collate::<Cpu>(&[example(&[3, 1], &[5, 6, 1])], &device)
        .unwrap();
    assert_eq!(ints(batch.labels), [1]);
}

#[test]
fn collated_batch_feeds_forward_with_labels() {
    let config = T5Config {
        vocab_size: 20,
        d_model: 8,
        d_kv: 4,
        num_heads: 2,
        d_ff: 16,
        num_layers: 1,
        num_decoder_layers: 1,
        ..T5Config::default()
    };
    let device = Default::default();
    let model = T5ForConditionalGeneration::<Cpu>::new(&config, &device);
    let batch = Seq2SeqCollator {
        max_source_len: 8,
        max_target_len: 8,
        pad_id: 0,
    }
    .collate::<Cpu>(
        &[
            example(&[4, 5, 6, 1], &[7, 1]),
            example(&[8, 1], &[9, 10, 11, 1]),
        ],
        &device,
    )
    .unwrap();
    let output = model
        .forward_with_labels(batch.input_ids, batch.attention_mask, batch.labels)
        .unwrap();
    let loss = output.loss.into_data().to_vec::<f32>().unwrap()[0];
    assert!(loss.is_finite() && loss > 0.0);
}

// ---------------------------------------------------------------------------------------------
// Metrics

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn bleu_matches_hand_computed_values() {
    let reference = GOOD_PAGE.to_string();
    assert!(close(bleu(&[&reference], &[&reference]).unwrap(), 1.0));
    // p1 = 4/5, p2 = 3/4, p3 = 2/3, p4 = 1/2, equal lengths: BLEU = 0.2^(1/4).
    assert!(close(
        bleu(&["a b c d e"], &["a b c d f"]).unwrap(),
        0.2f64.powf(0.25)
    ));
    // All precisions 1, 4 tokens against 6: brevity penalty exp(1 - 6/4).
    assert!(close(
        bleu(&["a b c d"], &["a b c d e f"]).unwrap(),
        (-0.5f64).exp()
    ));
    // Counts are summed over the corpus before dividing.
    let corpus = bleu(&["a b c d e", "a b c d"], &["a b c d f", "a b c d"]).unwrap();
    let expected = (8.0 / 9.0 * 6.0 / 7.0 * 4.0 / 5.0 * 2.0 / 3.0f64).powf(0.25);
    assert!(close(corpus, expected), "{corpus} vs {expected}");
    // Clipping: a repeated token counts only as often as the reference has it.
    assert_eq!(bleu(&["a a a a a"], &["a b c d e"]).unwrap(), 0.0);
    // Punctuation is tokenised: a missing brace lowers the score.
    let truncated = &reference[..reference.len() - 1];
    let score = bleu(&[truncated], &[&reference]).unwrap();
    assert!(score > 0.9 && score < 1.0);
}

#[test]
fn rouge_l_matches_hand_computed_values() {
    assert!(close(rouge_l(&["a b c"], &["a b c"]).unwrap(), 1.0));
    // LCS of a x b y c / a b c: 3; P = 3/5, R = 1, F = 0.75.
    assert!(close(rouge_l(&["a x b y c"], &["a b c"]).unwrap(), 0.75));
    // Averaged over pairs: (0.75 + 0) / 2.
    assert!(close(
        rouge_l(&["a x b y c", "q"], &["a b c", "r"]).unwrap(),
        0.375
    ));
    assert!(close(rouge_l(&[""], &[""]).unwrap(), 1.0));
    assert!(close(rouge_l(&[""], &["a"]).unwrap(), 0.0));
    // JSON tokens: {"a":1} vs {"a":2} share 6 of 7 tokens.
    assert!(close(
        rouge_l(&[r#"{"a":1}"#], &[r#"{"a":2}"#]).unwrap(),
        6.0 / 7.0
    ));
}

/// A UI-DSL page that `uidsl::validate_uidsl` accepts.
const GOOD_PAGE: &str = r#"{"page":{"name":"home_page","theme":"obsidian-gold","sections":[{"type":"search_bar","position":"top"},{"type":"button","position":"bottom","action":"checkout"}]}}"#;

fn is_uidsl(value: &Value) -> bool {
    uidsl::validate_uidsl(value).is_ok()
}

#[test]
fn rates_exact_match_and_report() {
    let good = GOOD_PAGE.to_string();
    let valid_json_bad_schema = r#"{"page":{}}"#;
    let predictions = [good.as_str(), valid_json_bad_schema, "{\"page\":", "  "];
    let references = [good.as_str(), good.as_str(), good.as_str(), good.as_str()];
    assert!(close(json_valid_rate(&predictions).unwrap(), 0.5));
    assert!(close(
        schema_valid_rate(&predictions, is_uidsl).unwrap(),
        0.25
    ));
    assert!(close(exact_match(&[" x\n"], &["x"]).unwrap(), 1.0));
    assert!(close(exact_match(&predictions, &references).unwrap(), 0.25));

    let report = EvalReport::compute(&predictions, &references).unwrap();
    assert_eq!(report.schema_valid_rate, None);
    assert!(!report.to_string().contains("schema_valid_rate"));
    let report = report.with_schema(&predictions, is_uidsl).unwrap();
    assert!(report.with_schema(&predictions[..2], is_uidsl).is_err());
    assert_eq!(report.count, 4);
    for value in [
        report.exact_match,
        report.bleu,
        report.rouge_l,
        report.json_valid_rate,
        report.schema_valid_rate.unwrap(),
    ] {
        assert!((0.0..=1.0).contains(&value));
    }
    let table = report.to_string();
    for row in [
        "| count             |      4 |",
        "| exact_match       | 0.2500 |",
        "| json_valid_rate   | 0.5000 |",
        "| schema_valid_rate | 0.2500 |",
    ] {
        assert!(table.contains(row), "{table}");
    }
}

#[test]
fn metrics_reject_mismatched_or_empty_input() {
    let empty: [&str; 0] = [];
    assert!(bleu(&["a"], &["a", "b"]).is_err());
    assert!(rouge_l(&empty, &empty).is_err());
    assert!(exact_match(&empty, &empty).is_err());
    assert!(json_valid_rate(&empty).is_err());
    assert!(EvalReport::compute(&["a"], &empty).is_err());
}

#[test]
fn json_tokens_split_punctuation_words_and_cjk() {
    assert_eq!(
        json_tokens("{\"columns\":2,\"t\":\"黑金\"}"),
        [
            "{", "\"", "columns", "\"", ":", "2", ",", "\"", "t", "\"", ":", "\"", "黑", "金",
            "\"", "}"
        ]
    );
    assert!(json_tokens(" \n\t").is_empty());
}
