//! T5 generation with transformers' controls against transformers' own `generate()`.
//!
//! Fixture: `scripts/gen_generation_fixtures.py` runs `generate()` on the tiny `t5_v1_1`
//! model for two padded prompts with each run's keyword arguments (repetition and encoder
//! repetition penalties, no-repeat n-grams, bad words, forced BOS / EOS, suppressed tokens,
//! `min_length`, `max_length`, two end-of-sequence ids, `num_return_sequences`, scores), in
//! float32 and float64 with the same ids. Here the same arguments, read as a
//! `generation_config.json`, must give identical ids; returned scores must agree within 1e-4
//! relative to the largest magnitude.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use burn::backend::{Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use lora_t5::{GenerateOptions, GenerationConfig, T5ForConditionalGeneration};
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> &'static Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures"))
}

fn fixture() -> &'static Value {
    static FIXTURE: OnceLock<Value> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let text = std::fs::read_to_string(fixtures().join("generation_controls.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    })
}

fn ints<B: Backend>(value: &Value) -> Tensor<B, 2, Int> {
    common::int_matrix(value)
}

fn assert_close(got: &[f32], expected: &[f32], what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: lengths");
    let scale = expected
        .iter()
        .filter(|v| v.is_finite())
        .fold(1f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(expected).enumerate() {
        if b.is_finite() {
            assert!(
                (a - b).abs() <= TOLERANCE * scale,
                "{what}[{i}]: {a} vs {b}"
            );
        } else {
            assert_eq!(a, b, "{what}[{i}]");
        }
    }
}

fn floats(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        Value::Null => vec![f32::NEG_INFINITY],
        v => vec![v.as_f64().unwrap() as f32],
    }
}

fn check_run<B: Backend>(name: &str) {
    let model = T5ForConditionalGeneration::<B>::from_pretrained(
        &fixtures().join("t5_v1_1"),
        &Default::default(),
    )
    .unwrap();
    let run = &fixture()["runs"][name];
    let config =
        GenerationConfig::from_json_str(&run["kwargs"].to_string(), Path::new("kwargs.json"))
            .unwrap();
    let out = model
        .generate_with(
            ints(&fixture()["input_ids"]),
            ints(&fixture()["attention_mask"]),
            &config,
            GenerateOptions::default(),
        )
        .unwrap();
    let expected: Vec<Vec<u32>> = run["sequences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect();
    assert_eq!(out.sequences, expected, "{name}: {config:?}");
    if let Some(scores) = run.get("sequences_scores") {
        assert_close(
            &out.sequences_scores,
            &floats(scores),
            &format!("{name} sequences_scores"),
        );
    }
    if let Some(scores) = run.get("scores") {
        let steps = scores.as_array().unwrap();
        assert_eq!(out.scores.len(), steps.len(), "{name}: steps with scores");
        for (step, (got, expected)) in out.scores.iter().zip(steps).enumerate() {
            let got = got.clone().into_data().to_vec::<f32>().unwrap();
            assert_close(
                &got,
                &floats(expected),
                &format!("{name} scores of step {step}"),
            );
        }
    }
}

macro_rules! runs {
    ($($name:ident),* $(,)?) => {
        mod ndarray {
            $(#[test]
            fn $name() {
                super::check_run::<super::NdArray>(stringify!($name));
            })*
        }
        mod flex {
            $(#[test]
            fn $name() {
                super::check_run::<super::Flex>(stringify!($name));
            })*
        }
    };
}

runs!(
    greedy_plain,
    greedy_repetition_penalty,
    greedy_encoder_repetition_penalty,
    greedy_no_repeat_ngram_size,
    greedy_encoder_no_repeat_ngram_size,
    greedy_bad_words_ids,
    greedy_forced_bos_and_eos,
    greedy_suppress_tokens,
    greedy_min_length,
    greedy_max_length,
    greedy_two_eos,
    greedy_output_scores,
    beam_penalties,
    beam_num_return_sequences,
    beam_bad_words_forced_eos,
    beam_two_eos,
);

#[test]
fn every_fixture_run_has_a_test() {
    assert_eq!(fixture()["runs"].as_object().unwrap().len(), 16);
}
