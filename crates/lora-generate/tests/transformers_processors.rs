//! Each logits processor and sampling warper against transformers' own, on the same scores.
//!
//! Fixture: `scripts/gen_generation_fixtures.py` runs the `LogitsProcessorList` that
//! transformers' `_get_logits_processor` builds from each case's settings on fixed scores
//! `[4, 3000]` (wide enough that the blocked candidate selection is used) and stores the
//! changes. Here the same settings, read as a `generation_config.json`, go through
//! [`LogitsProcessorList::from_config`]. The filtered tokens must be the same; processed
//! scores must agree within 1e-5 relative; after sampling warpers (whose temperature is
//! applied to scores shifted by their maximum), the probability distributions within 1e-5.

use std::path::Path;
use std::sync::OnceLock;

use burn::backend::{Flex, NdArray};
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use lora_generate::{
    GenerationConfig, HostTraffic, LogitsProcessorList, SpecialTokens, StepContext,
};
use serde_json::Value;

const TOLERANCE: f32 = 1e-5;

fn fixture() -> &'static Value {
    static FIXTURE: OnceLock<Value> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/processors.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    })
}

fn matrix(value: &Value) -> Vec<Vec<f32>> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().map_or(f32::NEG_INFINITY, |v| v as f32))
                .collect()
        })
        .collect()
}

fn id_rows(value: &Value) -> Vec<Vec<u32>> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

/// transformers' output: the input scores with the case's changes.
fn expected_scores(input: &[Vec<f32>], changes: &Value) -> Vec<Vec<f32>> {
    input
        .iter()
        .zip(changes.as_array().unwrap())
        .map(|(row, change)| {
            let mut row = row.clone();
            if let Some(banned) = change.get("neg_inf") {
                for c in banned.as_array().unwrap() {
                    row[c.as_u64().unwrap() as usize] = f32::NEG_INFINITY;
                }
            }
            if let Some(finite) = change.get("finite_only") {
                let keep: Vec<usize> = finite
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_u64().unwrap() as usize)
                    .collect();
                for (c, v) in row.iter_mut().enumerate() {
                    if !keep.contains(&c) {
                        *v = f32::NEG_INFINITY;
                    }
                }
            }
            for pair in change["changed"].as_array().unwrap() {
                row[pair[0].as_u64().unwrap() as usize] = pair[1].as_f64().unwrap() as f32;
            }
            row
        })
        .collect()
}

fn tensor<B: Backend>(rows: &[Vec<f32>]) -> Tensor<B, 2> {
    let width = rows[0].len();
    let flat: Vec<f32> = rows.iter().flatten().copied().collect();
    Tensor::from_data(
        TensorData::new(flat, [rows.len(), width]),
        &Default::default(),
    )
}

fn host<B: Backend>(t: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [_, width] = t.dims();
    let values = t.into_data().to_vec::<f32>().unwrap();
    values.chunks(width).map(<[f32]>::to_vec).collect()
}

fn check_case<B: Backend>(name: &str) {
    let fixture = fixture();
    let case = &fixture["cases"][name];
    let input = matrix(&fixture["scores"]);
    let length = case["decoder_length"].as_u64().unwrap() as usize;
    let sequences: Vec<Vec<u32>> = id_rows(&fixture["decoder_ids"])
        .into_iter()
        .map(|r| r[..length].to_vec())
        .collect();
    let encoder_ids = id_rows(&fixture["encoder_ids"]);
    let config =
        GenerationConfig::from_json_str(&case["kwargs"].to_string(), Path::new("kwargs.json"))
            .unwrap();
    let special = SpecialTokens {
        decoder_start: 0,
        eos: vec![1],
        pad: 0,
    };
    let processors = LogitsProcessorList::<B>::from_config(&config, &special);
    assert_eq!(
        processors.len(),
        case["processors"].as_array().unwrap().len(),
        "{name}: transformers runs {}",
        case["processors"]
    );
    let traffic = HostTraffic::default();
    let context = StepContext {
        sequences: &sequences,
        encoder_ids: &encoder_ids,
        new_tokens: length - 1,
        max_new_tokens: config.max_new_tokens,
        traffic: &traffic,
    };
    let got = processors.process(&context, tensor::<B>(&input)).unwrap();
    let expected = expected_scores(&input, &case["changes"]);
    let got_host = host(got.clone());
    for (row, (g, e)) in got_host.iter().zip(&expected).enumerate() {
        let filtered = |r: &[f32]| -> Vec<usize> {
            r.iter()
                .enumerate()
                .filter(|(_, v)| v.is_infinite())
                .map(|(c, _)| c)
                .collect()
        };
        assert_eq!(
            filtered(g),
            filtered(e),
            "{name}: row {row}: filtered tokens"
        );
    }
    if config.do_sample {
        let (g, e) = (
            host(softmax(got, 1)),
            host(softmax(tensor::<B>(&expected), 1)),
        );
        for (row, (g, e)) in g.iter().zip(&e).enumerate() {
            for (c, (a, b)) in g.iter().zip(e).enumerate() {
                assert!(
                    (a - b).abs() <= TOLERANCE,
                    "{name}: row {row}, token {c}: p {a} vs {b}"
                );
            }
        }
    } else {
        for (row, (g, e)) in got_host.iter().zip(&expected).enumerate() {
            let scale = e
                .iter()
                .filter(|v| v.is_finite())
                .fold(1f32, |m, v| m.max(v.abs()));
            for (c, (a, b)) in g.iter().zip(e).enumerate() {
                if b.is_finite() {
                    assert!(
                        (a - b).abs() <= TOLERANCE * scale,
                        "{name}: row {row}, token {c}: {a} vs {b}"
                    );
                }
            }
        }
    }
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        mod ndarray {
            $(#[test]
            fn $name() {
                super::check_case::<super::NdArray>(stringify!($name));
            })*
        }
        mod flex {
            $(#[test]
            fn $name() {
                super::check_case::<super::Flex>(stringify!($name));
            })*
        }
    };
}

cases!(
    repetition_penalty,
    encoder_repetition_penalty,
    no_repeat_ngram_size,
    encoder_no_repeat_ngram_size,
    bad_words_ids,
    min_new_tokens,
    min_length,
    forced_bos_token_id,
    forced_eos_token_id,
    suppress_tokens,
    begin_suppress_tokens,
    begin_suppress_tokens_after_forced_bos,
    top_k,
    top_p,
    top_p_small,
    top_k_top_p_temperature,
    min_p,
    typical_p,
    epsilon_cutoff,
    eta_cutoff,
    everything,
);

#[test]
fn every_fixture_case_has_a_test() {
    let names: Vec<&String> = fixture()["cases"].as_object().unwrap().keys().collect();
    assert_eq!(names.len(), 21, "{names:?}");
}
