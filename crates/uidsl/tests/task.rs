//! The UI-DSL task: schema validation, the generator and its hold-out split, and the committed
//! corpora regenerating byte for byte.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use uidsl::{
    generate, standard_corpora, to_jsonl, validate_uidsl, GeneratorConfig, Record, Section,
    SectionType, Theme, UiDsl, HELDOUT_SECTION_TYPE, HELDOUT_THEME,
};

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/uidsl")
}

fn parse(record: &Record) -> UiDsl {
    let value: Value = serde_json::from_str(&record.output_json_minified).unwrap();
    UiDsl::from_value(&value).unwrap()
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
            "{} differs from the generator; run `cargo test --workspace --test task \
             -- --ignored regenerate_data_files`",
            path.display()
        );
        assert_eq!(committed.lines().count(), corpus.records.len());
    }
    assert!(total < 2_000_000, "data files take {total} bytes");
}

#[test]
fn no_test_or_validation_instruction_is_in_any_training_data() {
    // What trains: the committed training files, and the generated supplement `pretrain` adds
    // (its default size, 29 000 records).
    let dir = data_dir();
    let instructions = |file: &str| -> HashSet<String> {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        text.lines()
            .map(|line| {
                let record: serde_json::Value = serde_json::from_str(line).unwrap();
                record["instruction"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let mut training = instructions("base_train.jsonl");
    training.extend(instructions("heldout_train.jsonl"));
    let supplement = standard_corpora().base_train_supplement(29_000).unwrap();
    assert_eq!(supplement.len(), 29_000);
    training.extend(supplement.into_iter().map(|r| r.instruction));
    for held_out in [
        "heldout_test.jsonl",
        "heldout_valid.jsonl",
        "base_valid.jsonl",
    ] {
        let leaked: Vec<String> = instructions(held_out)
            .intersection(&training)
            .cloned()
            .collect();
        assert!(leaked.is_empty(), "{held_out}: {leaked:?}");
    }
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
