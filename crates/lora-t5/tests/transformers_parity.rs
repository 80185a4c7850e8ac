//! T5 against numbers computed by Hugging Face transformers itself.
//!
//! Fixtures: `scripts/gen_t5_fixtures.py` (see `tests/fixtures/README.md`): tiny random T5
//! models in the v1.0 and v1.1 styles, configs written by transformers 4.x and 5.x, BF16 and
//! sharded weights, and a PEFT adapter. Logits must match within 1e-4 relative to the largest
//! magnitude (f32); greedy and beam-search token ids must be identical.
//!
//! Each numeric case runs on ndarray and on flex, whose inference fast paths (`lora-core`'s
//! `flex` feature: the one-pass tied head, the accumulated LoRA update) must keep the same
//! numbers.

use std::path::{Path, PathBuf};

use burn::backend::{Flex, NdArray};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use lora_t5::{EarlyStopping, GenerationConfig, Seq2SeqInput, T5ForConditionalGeneration};
use safetensors::tensor::Dtype;
use safetensors::SafeTensors;
use serde_json::Value;

type Cpu = NdArray<f32>;
const TOLERANCE: f64 = 1e-4;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Expected {
    bytes: Vec<u8>,
    json: Value,
}

impl Expected {
    fn read(case: &str) -> Self {
        let dir = fixtures().join(case);
        Self {
            bytes: std::fs::read(dir.join("expected.safetensors")).unwrap(),
            json: serde_json::from_str(
                &std::fs::read_to_string(dir.join("expected.json")).unwrap(),
            )
            .unwrap(),
        }
    }

    fn floats(&self, name: &str) -> (Vec<f32>, Vec<usize>) {
        let file = SafeTensors::deserialize(&self.bytes).unwrap();
        let view = file.tensor(name).unwrap();
        assert_eq!(view.dtype(), Dtype::F32, "{name}");
        let values = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (values, view.shape().to_vec())
    }

    fn ints(&self, name: &str) -> (Vec<i64>, Vec<usize>) {
        let file = SafeTensors::deserialize(&self.bytes).unwrap();
        let view = file.tensor(name).unwrap();
        assert_eq!(view.dtype(), Dtype::I64, "{name}");
        let values = view
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        (values, view.shape().to_vec())
    }

    fn int_tensor<B: Backend>(&self, name: &str) -> Tensor<B, 2, Int> {
        let (values, shape) = self.ints(name);
        Tensor::from_data(TensorData::new(values, shape), &Default::default())
    }

    fn rows(&self, name: &str) -> Vec<Vec<u32>> {
        let (values, shape) = self.ints(name);
        values
            .chunks(shape[1])
            .map(|r| r.iter().map(|v| *v as u32).collect())
            .collect()
    }
}

#[track_caller]
fn assert_close(got: Vec<f32>, (expected, _): (Vec<f32>, Vec<usize>), what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}: size");
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs() as f64));
    let worst = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= TOLERANCE * scale,
        "{what}: max abs error {worst:e} > {TOLERANCE:e} × {scale}"
    );
}

fn floats<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

fn load<B: Backend>(case: &str) -> T5ForConditionalGeneration<B> {
    T5ForConditionalGeneration::from_pretrained(&fixtures().join(case), &Default::default())
        .unwrap_or_else(|e| panic!("{case}: {e}"))
}

/// One module per fixture model, each with its own tests, so a failing case hides no other:
/// `cargo test --test transformers_parity t5_bf16::` runs one.
macro_rules! model_cases {
    ($($case:ident),* $(,)?) => {$(
        mod $case {
            use super::*;

            #[test]
            fn logits_encoder_states_and_loss_match_transformers() {
                logits_encoder_states_and_loss::<Cpu>(stringify!($case));
            }

            #[test]
            fn logits_encoder_states_and_loss_match_transformers_on_flex() {
                logits_encoder_states_and_loss::<Flex>(stringify!($case));
            }

            #[test]
            fn greedy_and_beam_search_ids_match_transformers() {
                greedy_and_beam_search_ids::<Cpu>(stringify!($case));
            }

            #[test]
            fn greedy_and_beam_search_ids_match_transformers_on_flex() {
                greedy_and_beam_search_ids::<Flex>(stringify!($case));
            }
        }
    )*};
}

model_cases!(
    t5_v1_0,
    t5_v1_1,
    t5_gated_silu,
    t5_gelu,
    t5_v1_0_cfg4x,
    t5_untied_cfg4x,
    t5_bf16,
    t5_sharded,
);

fn logits_encoder_states_and_loss<B: Backend>(case: &str) {
    let model = load::<B>(case);
    let expected = Expected::read(case);
    let (ids, mask) = (
        expected.int_tensor("input_ids"),
        expected.int_tensor("attention_mask"),
    );
    let encoded = model.encode(ids.clone(), mask.clone());
    assert_close(
        floats(encoded),
        expected.floats("encoder_last_hidden_state"),
        case,
    );
    let logits = model
        .forward(
            Seq2SeqInput::new(ids.clone(), expected.int_tensor("decoder_input_ids"))
                .attention_mask(mask.clone()),
        )
        .logits;
    assert_close(floats(logits), expected.floats("logits"), case);
    let labels = expected.int_tensor("labels");
    let out = model
        .forward_with_labels(ids.clone(), mask.clone(), labels.clone())
        .unwrap();
    assert_close(
        floats(out.loss),
        expected.floats("loss"),
        &format!("{case} loss"),
    );
    // Without the logits: on flex, the head and the cross-entropy fused.
    assert_close(
        floats(model.loss(ids, mask, labels).unwrap()),
        expected.floats("loss"),
        &format!("{case} loss without logits"),
    );
}

fn generation_config(kwargs: &Value) -> GenerationConfig {
    let get = |k: &str| kwargs.get(k);
    GenerationConfig {
        max_new_tokens: get("max_new_tokens").and_then(Value::as_u64).unwrap() as usize,
        min_new_tokens: get("min_new_tokens").and_then(Value::as_u64).unwrap_or(0) as usize,
        num_beams: get("num_beams").and_then(Value::as_u64).unwrap_or(1) as usize,
        length_penalty: get("length_penalty").and_then(Value::as_f64).unwrap_or(1.0) as f32,
        early_stopping: match get("early_stopping") {
            Some(Value::Bool(true)) => EarlyStopping::Immediate,
            Some(Value::String(s)) if s == "never" => EarlyStopping::Never,
            _ => EarlyStopping::Heuristic,
        },
        ..GenerationConfig::default()
    }
}

fn greedy_and_beam_search_ids<B: Backend>(case: &str) {
    let model = load::<B>(case);
    let expected = Expected::read(case);
    let (ids, mask) = (
        expected.int_tensor("input_ids"),
        expected.int_tensor("attention_mask"),
    );
    let runs = expected.json["generation"].as_object().unwrap();
    for (name, run) in runs {
        let config = generation_config(&run["kwargs"]);
        let got = model.generate(ids.clone(), mask.clone(), &config).unwrap();
        assert_eq!(got, expected.rows(name), "{case} {name} {config:?}");
    }
}

#[test]
fn a_peft_adapter_gives_transformers_logits_and_the_same_after_merging() {
    peft_adapter_logits::<Cpu>();
}

#[test]
fn a_peft_adapter_gives_transformers_logits_and_the_same_after_merging_on_flex() {
    peft_adapter_logits::<Flex>();
}

fn peft_adapter_logits<B: Backend>() {
    let mut model = load::<B>("t5_v1_1");
    let expected = Expected::read("t5_v1_1_lora");
    let adapter = fixtures().join("t5_v1_1_lora/adapter");
    lora_peft_io::load_adapter(&mut model, &adapter, "default").unwrap();
    let (ids, mask) = (
        expected.int_tensor("input_ids"),
        expected.int_tensor("attention_mask"),
    );
    let decoder = expected.int_tensor("decoder_input_ids");
    let logits = model
        .forward(Seq2SeqInput::new(ids.clone(), decoder.clone()).attention_mask(mask.clone()))
        .logits;
    assert_close(
        floats(logits.clone()),
        expected.floats("logits"),
        "with adapter",
    );
    lora_core::LoraModelOps::try_visit_lora_mut(&mut model, |_, layer| {
        if layer.adapters.is_empty() {
            return Ok(());
        }
        layer.merge(&["default"])
    })
    .unwrap();
    let merged = model
        .forward(Seq2SeqInput::new(ids, decoder).attention_mask(mask))
        .logits;
    assert_close(floats(merged), expected.floats("logits_merged"), "merged");
}

#[test]
fn save_pretrained_writes_a_v1_0_checkpoint_that_loads_back_identically() {
    save_pretrained_round_trip("t5_v1_0");
}

#[test]
fn save_pretrained_writes_a_v1_1_checkpoint_that_loads_back_identically() {
    save_pretrained_round_trip("t5_v1_1");
}

fn save_pretrained_round_trip(case: &str) {
    let model = load::<Cpu>(case);
    let dir = std::env::temp_dir().join(format!("lora-t5-save-{case}-{}", std::process::id()));
    model.save_pretrained(&dir).unwrap();
    let again =
        T5ForConditionalGeneration::<Cpu>::from_pretrained(&dir, &Default::default()).unwrap();
    let expected = Expected::read(case);
    let (ids, mask) = (
        expected.int_tensor("input_ids"),
        expected.int_tensor("attention_mask"),
    );
    let decoder = expected.int_tensor("decoder_input_ids");
    let logits = again
        .forward(Seq2SeqInput::new(ids, decoder).attention_mask(mask))
        .logits;
    assert_close(floats(logits), expected.floats("logits"), case);
    // The special tokens, as transformers' own `generation_config.json` of the fixture has them.
    let written = GenerationConfig::from_file(&dir.join("generation_config.json")).unwrap();
    let original =
        GenerationConfig::from_file(&fixtures().join(case).join("generation_config.json")).unwrap();
    assert_eq!(written, original);
    std::fs::remove_dir_all(dir).unwrap();
}
