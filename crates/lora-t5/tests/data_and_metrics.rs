//! UI-DSL data and evaluation: schema validation, the generator and its hold-out split, the
//! committed corpora, JSONL reading, the train/validation split, the collator and the metrics.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor};
use lora_t5::data::{
    generate, parse_jsonl, read_jsonl, standard_corpora, to_jsonl, train_valid_split,
    validate_uidsl, BadRecordKind, BadRecordPolicy, GeneratorConfig, JsonlFields, JsonlOptions,
    Record, Section, SectionType, Seq2SeqCollator, Theme, TokenizedExample, UiDsl,
    HELDOUT_SECTION_TYPE, HELDOUT_THEME,
};
use lora_t5::metrics::{
    bleu, exact_match, json_tokens, json_valid_rate, rouge_l, schema_valid_rate, EvalReport,
};
use lora_t5::{T5Config, T5Error, T5ForConditionalGeneration, IGNORE_INDEX};
use serde_json::{json, Value};

type Cpu = NdArray<f32>;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/uidsl")
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lora-t5-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn parse(record: &Record) -> UiDsl {
    let value: Value = serde_json::from_str(&record.output_json_minified).unwrap();
    UiDsl::from_value(&value).unwrap()
}

fn ints(t: Tensor<Cpu, 2, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().to_vec::<i64>().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Schema

fn good_page() -> Value {
    json!({"page": {"name": "home_page", "theme": "obsidian-gold", "sections": [
        {"type": "nav_bar", "back": false},
        {"type": "search_bar", "position": "top"},
        {"type": "carousel", "position": "top", "slides": 3},
        {"type": "product_grid", "position": "middle", "columns": 2, "card": "product_card"},
        {"type": "form", "position": "middle", "fields": ["username", "password"]},
        {"type": "button", "position": "bottom", "action": "checkout"},
        {"type": "tab_bar", "items": ["home", "category", "cart", "me"]}
    ]}})
}

#[test]
fn schema_accepts_a_full_page_and_every_generated_output() {
    assert_eq!(validate_uidsl(&good_page()), Ok(()));
    let records = generate(&GeneratorConfig::all(99, 500)).unwrap();
    for record in &records {
        let value: Value = serde_json::from_str(&record.output_json_minified).unwrap();
        assert_eq!(
            validate_uidsl(&value),
            Ok(()),
            "{}",
            record.output_json_minified
        );
        let doc = UiDsl::from_value(&value).unwrap();
        assert_eq!(doc.to_json_minified(), record.output_json_minified);
    }
}

#[test]
fn schema_rejects_broken_documents_with_json_paths() {
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut v = good_page();
        edit(&mut v);
        v
    };
    cases.push((json!([1]), "$: expected an object"));
    cases.push((json!({}), "$: missing field \"page\""));
    cases.push((with(&|v| v["extra"] = json!(1)), "$.extra: unknown field"));
    cases.push((
        with(&|v| v["page"]["name"] = json!("Home Page")),
        "$.page.name: expected a snake_case name",
    ));
    cases.push((
        with(&|v| v["page"]["name"] = json!(3)),
        "$.page.name: expected a string",
    ));
    cases.push((
        with(&|v| v["page"]["theme"] = json!("pink")),
        "$.page.theme: expected one of obsidian-gold",
    ));
    cases.push((
        with(&|v| v["page"]["sections"] = json!([])),
        "$.page.sections: expected 1 to 8 sections",
    ));
    cases.push((
        with(&|v| v["page"]["sections"] = json!({})),
        "$.page.sections: expected an array",
    ));
    cases.push((
        with(&|v| v["page"]["sections"][1]["type"] = json!("sidebar")),
        "$.page.sections[1].type: expected one of nav_bar",
    ));
    cases.push((
        with(&|v| v["page"]["sections"][3]["columns"] = json!(5)),
        "$.page.sections[3].columns: expected an integer from 1 to 4, found 5",
    ));
    cases.push((
        with(&|v| v["page"]["sections"][3]["card"] = json!("big_card")),
        "$.page.sections[3].card: expected one of product_card",
    ));
    cases.push((
        with(&|v| v["page"]["sections"][2]["slides"] = json!("3")),
        "$.page.sections[2].slides: expected an integer from 2 to 6, found \"3\"",
    ));
    cases.push((
        with(&|v| {
            v["page"]["sections"][1]
                .as_object_mut()
                .unwrap()
                .remove("position");
        }),
        "$.page.sections[1]: missing field \"position\" of a search_bar section",
    ));
    cases.push((
        with(&|v| v["page"]["sections"][0]["position"] = json!("top")),
        "$.page.sections[0].position: unknown field (a nav_bar is always at the top",
    ));
    cases.push((
        with(&|v| v["page"]["sections"][0]["back"] = json!("yes")),
        "$.page.sections[0].back: expected true or false",
    ));
    cases.push((
        with(&|v| v["page"]["sections"][4]["fields"] = json!(["username", "username"])),
        "$.page.sections[4].fields[1]: duplicate entry \"username\"",
    ));
    cases.push((
        with(&|v| v["page"]["sections"][6]["items"] = json!(["home"])),
        "$.page.sections[6].items: expected 2 to 5 entries, found 1",
    ));
    cases.push((
        with(&|v| v["page"]["sections"][6]["items"][0] = json!("shop")),
        "$.page.sections[6].items[0]: expected one of home",
    ));
    cases.push((
        with(&|v| v["page"]["sections"][5]["position"] = json!("top")),
        "$.page.sections[5]: a top section after a middle one",
    ));
    cases.push((
        with(&|v| v["page"]["sections"][3] = json!("grid")),
        "$.page.sections[3]: expected an object, found \"grid\"",
    ));
    for (value, expected) in cases {
        let errors = validate_uidsl(&value).unwrap_err();
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "expected `{expected}` in {errors:#?}"
        );
    }
}

#[test]
fn schema_reports_every_problem_at_once() {
    let mut value = good_page();
    value["page"]["theme"] = json!("pink");
    value["page"]["sections"][3]["columns"] = json!(0);
    value["page"]["sections"][5]["action"] = json!("fly");
    let errors = validate_uidsl(&value).unwrap_err();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(UiDsl::from_value(&value).is_err());
}

// ---------------------------------------------------------------------------------------------
// Generator and hold-out

fn theme_of(record: &Record) -> Theme {
    parse(record).page.theme
}

fn types_of(record: &Record) -> Vec<SectionType> {
    parse(record)
        .page
        .sections
        .iter()
        .map(Section::section_type)
        .collect()
}

#[test]
fn generator_is_deterministic_and_seed_dependent() {
    let config = GeneratorConfig::all(5, 200);
    let a = generate(&config).unwrap();
    assert_eq!(a, generate(&config).unwrap());
    assert_eq!(a.len(), 200);
    let b = generate(&GeneratorConfig::all(6, 200)).unwrap();
    assert_ne!(a, b);
    let distinct: HashSet<&str> = a.iter().map(|r| r.instruction.as_str()).collect();
    assert_eq!(distinct.len(), a.len());
}

#[test]
fn generated_pages_are_short_and_mention_their_theme() {
    let theme_words: &[(Theme, &[&str])] = &[
        (Theme::ObsidianGold, &["黑金"]),
        (Theme::OceanBlue, &["海洋蓝", "海蓝"]),
        (Theme::ForestGreen, &["森林绿"]),
        (Theme::SunsetOrange, &["日落橙", "落日橙"]),
        (Theme::MinimalWhite, &["极简白", "简约白"]),
        (Theme::NightPurple, &["暗夜紫", "夜空紫"]),
        (Theme::GraphiteGray, &["石墨灰"]),
        (Theme::SakuraPink, &["樱花粉"]),
    ];
    for record in generate(&GeneratorConfig::all(8, 400)).unwrap() {
        let doc = parse(&record);
        assert!((2..=4).contains(&doc.page.sections.len()));
        let words = theme_words
            .iter()
            .find(|(t, _)| *t == doc.page.theme)
            .unwrap()
            .1;
        assert!(
            words.iter().any(|w| record.instruction.contains(w)),
            "{}",
            record.instruction
        );
        let has_carousel = types_of(&record).contains(&SectionType::Carousel);
        assert_eq!(record.instruction.contains("轮播"), has_carousel);
        assert!(record.output_json_minified.len() < 400);
    }
}

#[test]
fn base_corpus_never_holds_the_heldout_theme_or_section() {
    let corpora = standard_corpora();
    for config in [&corpora.base_train, &corpora.base_valid] {
        for record in generate(config).unwrap() {
            assert_ne!(theme_of(&record), HELDOUT_THEME);
            assert!(!types_of(&record).contains(&HELDOUT_SECTION_TYPE));
            assert!(!record.instruction.contains("樱花粉"));
            assert!(!record.instruction.contains("轮播"));
            assert!(!record.output_json_minified.contains("sakura-pink"));
            assert!(!record.output_json_minified.contains("carousel"));
        }
    }
}

#[test]
fn heldout_corpus_always_uses_the_heldout_theme_or_section() {
    let records = generate(&standard_corpora().heldout_train).unwrap();
    let (mut theme_only, mut section_only, mut both) = (0, 0, 0);
    for record in &records {
        let theme = theme_of(record) == HELDOUT_THEME;
        let section = types_of(record).contains(&HELDOUT_SECTION_TYPE);
        assert_eq!(record.instruction.contains("樱花粉"), theme);
        assert_eq!(record.instruction.contains("轮播"), section);
        match (theme, section) {
            (true, false) => theme_only += 1,
            (false, true) => section_only += 1,
            (true, true) => both += 1,
            (false, false) => panic!("not held out: {}", record.instruction),
        }
    }
    for share in [theme_only, section_only, both] {
        assert!(
            share > records.len() / 5,
            "{theme_only} {section_only} {both}"
        );
    }
}

#[test]
fn standard_corpora_share_no_instruction() {
    let corpora = standard_corpora().generate().unwrap();
    let sizes: Vec<(&str, usize)> = corpora.iter().map(|c| (c.name, c.records.len())).collect();
    assert_eq!(
        sizes,
        [
            ("base_train", 3000),
            ("base_valid", 200),
            ("heldout_train", 400),
            ("heldout_valid", 100),
            ("heldout_test", 100)
        ]
    );
    let mut seen = HashSet::new();
    for corpus in &corpora {
        for record in &corpus.records {
            assert!(
                seen.insert(record.instruction.clone()),
                "{}",
                record.instruction
            );
        }
    }
}

#[test]
fn generator_rejects_unusable_configs() {
    let no_themes = GeneratorConfig {
        themes: vec![],
        ..GeneratorConfig::all(1, 1)
    };
    let one_section = GeneratorConfig {
        section_types: vec![SectionType::Banner],
        ..GeneratorConfig::all(1, 1)
    };
    let stray_focus = GeneratorConfig {
        focus_themes: vec![Theme::SakuraPink],
        ..GeneratorConfig::all(1, 1).without_themes(&[Theme::SakuraPink])
    };
    for config in [no_themes, one_section, stray_focus] {
        let result = generate(&config).map(|r| r.len());
        assert!(
            matches!(result, Err(uidsl::UiDslError::InvalidConfig { .. })),
            "{result:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Committed data files

#[test]
fn committed_data_files_equal_the_generator_output() {
    let dir = data_dir();
    let mut total = 0;
    for corpus in standard_corpora().generate().unwrap() {
        let path = dir.join(corpus.file_name());
        let committed =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        total += committed.len();
        assert!(
            committed == to_jsonl(&corpus.records),
            "{} differs from the generator; run `cargo test -p lora-t5 --test data_and_metrics \
             -- --ignored regenerate_data_files`",
            path.display()
        );
        let data = read_jsonl(&path, &JsonlOptions::default()).unwrap();
        assert_eq!(data.examples.len(), corpus.records.len());
    }
    assert!(total < 2_000_000, "data files take {total} bytes");
}

#[test]
#[ignore = "writes data/uidsl/*.jsonl; run with --ignored after changing the generator"]
fn regenerate_data_files() {
    let dir = data_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for corpus in standard_corpora().write_to(&dir).unwrap() {
        println!("{}: {} records", corpus.file_name(), corpus.records.len());
    }
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
            Err(T5Error::BadRecord { path, line, reason }) => {
                assert_eq!((path.as_path(), line), (Path::new("t.jsonl"), 3));
                assert_eq!(reason, skipped[0].kind.to_string());
            }
            other => panic!("expected a bad-record error, got {other:?}"),
        }
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
    };
    let data = parse_jsonl(text, "c.jsonl".as_ref(), &options).unwrap();
    assert_eq!(data.examples[0].target, "plain text");
    let strict = JsonlOptions {
        target_must_be_json: true,
        ..options
    };
    assert!(parse_jsonl(text, "c.jsonl".as_ref(), &strict).is_err());
    let missing = read_jsonl(Path::new("/nonexistent/x.jsonl"), &JsonlOptions::default());
    assert!(matches!(missing, Err(T5Error::Io { .. })));
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
            Err(T5Error::InvalidDataConfig { .. })
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
        Err(T5Error::InvalidDataConfig { .. })
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
    let reference = good_page().to_string();
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

#[test]
fn rates_exact_match_and_report() {
    let good = good_page().to_string();
    let valid_json_bad_schema = r#"{"page":{}}"#;
    let predictions = [good.as_str(), valid_json_bad_schema, "{\"page\":", "  "];
    let references = [good.as_str(), good.as_str(), good.as_str(), good.as_str()];
    assert!(close(json_valid_rate(&predictions).unwrap(), 0.5));
    assert!(close(schema_valid_rate(&predictions).unwrap(), 0.25));
    assert!(close(exact_match(&[" x\n"], &["x"]).unwrap(), 1.0));
    assert!(close(exact_match(&predictions, &references).unwrap(), 0.25));

    let report = EvalReport::compute(&predictions, &references).unwrap();
    assert_eq!(report.count, 4);
    for value in [
        report.exact_match,
        report.bleu,
        report.rouge_l,
        report.json_valid_rate,
        report.schema_valid_rate,
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
