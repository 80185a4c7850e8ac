//! `lora_peft_io::hotswap_adapter` on T5 against PEFT's own `hotswap_adapter`.
//!
//! Fixture: `scripts/gen_hotswap_fixtures.py` writes PEFT 0.21.2 adapters for the tiny
//! `t5_v1_1` model and the logits PEFT computes after loading adapter `a` and hot-swapping a
//! smaller-rank adapter on fewer modules (`smaller`) or a larger-rank one (`larger`) over it.
//! The same swaps here must give those logits within 1e-4 relative to the largest magnitude;
//! the adapters PEFT refuses (another `use_rslora`; a target `a` leaves out) are refused and
//! leave the model as it was.

mod common;

use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor};
use lora_core::LoraModule;
use lora_peft_io::{hotswap_adapter, load_adapter, PeftIoError};
use lora_t5::{Seq2SeqInput, T5ForConditionalGeneration};
use serde_json::Value;

type B = NdArray;
const TOLERANCE: f32 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixtures().join("hotswap/expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ints(value: &Value) -> Tensor<B, 2, Int> {
    common::int_matrix(value)
}

fn floats(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        v => vec![v.as_f64().unwrap() as f32],
    }
}

/// The model with adapter `a` loaded as `default`.
fn model_with_a() -> T5ForConditionalGeneration<B> {
    let mut model = T5ForConditionalGeneration::from_pretrained(
        &fixtures().join("t5_v1_1"),
        &Default::default(),
    )
    .unwrap();
    load_adapter(&mut model, &fixtures().join("hotswap/a"), "default").unwrap();
    model
}

fn logits(model: &T5ForConditionalGeneration<B>) -> Vec<f32> {
    let e = expected();
    let input = Seq2SeqInput::new(ints(&e["input_ids"]), ints(&e["decoder_input_ids"]))
        .attention_mask(ints(&e["attention_mask"]));
    model
        .forward(input)
        .logits
        .into_data()
        .to_vec::<f32>()
        .unwrap()
}

#[track_caller]
fn assert_close(got: &[f32], expected: &[f32], what: &str) {
    common::assert_close_relative(got, expected, TOLERANCE, what);
}

fn swap_gives_peft_logits(name: &str) {
    let mut model = model_with_a();
    hotswap_adapter(
        &mut model,
        &fixtures().join("hotswap").join(name),
        "default",
    )
    .unwrap();
    assert_close(&logits(&model), &floats(&expected()["logits"][name]), name);
    let mut active = Vec::new();
    model.visit_lora("", &mut |_, layer| {
        active.extend(layer.active_adapters().to_vec())
    });
    assert!(
        !active.is_empty() && active.iter().all(|a| a == "default"),
        "{active:?}"
    );
}

#[test]
fn a_smaller_rank_on_fewer_modules_gives_peft_logits() {
    swap_gives_peft_logits("smaller");
}

#[test]
fn a_larger_rank_gives_peft_logits() {
    swap_gives_peft_logits("larger");
}

fn refused(name: &str, mentions: &[&str]) {
    let mut model = model_with_a();
    let before = logits(&model);
    let err = hotswap_adapter(
        &mut model,
        &fixtures().join("hotswap").join(name),
        "default",
    )
    .unwrap_err();
    assert!(
        matches!(err, PeftIoError::HotswapIncompatible { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    for mention in mentions {
        assert!(message.contains(mention), "{message}");
    }
    assert_eq!(logits(&model), before, "a refused swap changes nothing");
}

#[test]
fn another_use_rslora_is_refused_as_peft_refuses_it() {
    refused("rslora", &["use_rslora", "false", "true"]);
}

#[test]
fn a_target_the_loaded_adapter_leaves_out_is_refused_as_peft_refuses_it() {
    refused("extra_target", &["SelfAttention.k", "does not hold it"]);
}

#[test]
fn swapping_an_adapter_that_is_not_loaded_is_refused() {
    let mut model = T5ForConditionalGeneration::<B>::from_pretrained(
        &fixtures().join("t5_v1_1"),
        &Default::default(),
    )
    .unwrap();
    let err =
        hotswap_adapter(&mut model, &fixtures().join("hotswap/larger"), "default").unwrap_err();
    assert!(err.to_string().contains("load it first"), "{err}");
}

#[test]
fn swapping_a_merged_adapter_is_refused() {
    let mut model = model_with_a();
    model.visit_lora_mut("", &mut |_, layer| {
        if layer.adapter("default").is_some() {
            layer.merge_active().unwrap();
        }
    });
    let err =
        hotswap_adapter(&mut model, &fixtures().join("hotswap/larger"), "default").unwrap_err();
    assert!(err.to_string().contains("merged"), "{err}");
}
