//! PEFT adapters on T5's embedding-like layers: the head (tied to `shared` or not) and the
//! stacks' `embed_tokens` lookups, against the real PEFT.
//!
//! Fixture: `scripts/gen_tied_layer_fixtures.py` writes PEFT 0.21.2 adapters for the tiny
//! `t5_v1_0` (tied head) and `t5_v1_1` (untied head) models, targeting `lm_head` (PEFT then
//! writes the head's full base weight, `lm_head.base_layer.weight`), `embed_tokens` (PEFT's
//! `lora_embedding_A` / `_B`), both with rsLoRA, a head whose carried base weight differs
//! from the model's, and `modules_to_save` copies of the head (tied and untied) and of the
//! lookups; and the logits `PeftModel.from_pretrained` computes with each. Loading
//! each here must give those logits within 1e-4 relative to the largest magnitude, on ndarray
//! and flex, and saving it back must write PEFT's tensors and config again.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::backend::{Flex, NdArray};
use burn::tensor::backend::Backend;
use lora_core::{lora_layer_paths, LoraModelOps, LoraModule};
use lora_peft_io::{
    inject_adapter, load_adapter, save_adapter, AdapterConfig, PeftIoError, SaveEmbeddingLayers,
    SaveOptions,
};
use lora_t5::{Seq2SeqInput, T5Error, T5ForConditionalGeneration};
use serde_json::Value;

const TOLERANCE: f32 = 1e-4;

fn fixtures() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"))
}

fn case_dir(case: &str) -> PathBuf {
    fixtures().join("peft_tied_layers").join(case)
}

fn expected() -> &'static Value {
    static EXPECTED: OnceLock<Value> = OnceLock::new();
    EXPECTED.get_or_init(|| {
        let path = fixtures().join("peft_tied_layers/expected.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    })
}

/// The fixture model an adapter case was trained on (`base_model_name_or_path`).
fn base_of(case: &str) -> String {
    let config = AdapterConfig::read(&case_dir(case).join("adapter_config.json")).unwrap();
    config
        .get("base_model_name_or_path")
        .and_then(Value::as_str)
        .unwrap()
        .to_string()
}

fn base<B: Backend>(case: &str) -> T5ForConditionalGeneration<B> {
    T5ForConditionalGeneration::from_pretrained(
        &fixtures().join(base_of(case)),
        &Default::default(),
    )
    .unwrap()
}

fn logits<B: Backend>(model: &T5ForConditionalGeneration<B>) -> Vec<f32> {
    let e = expected();
    let input = Seq2SeqInput::new(
        common::int_matrix(&e["input_ids"]),
        common::int_matrix(&e["decoder_input_ids"]),
    )
    .attention_mask(common::int_matrix(&e["attention_mask"]));
    model
        .forward(input)
        .logits
        .into_data()
        .convert::<f32>()
        .to_vec()
        .unwrap()
}

fn floats(value: &Value) -> Vec<f32> {
    match value {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        v => vec![v.as_f64().unwrap() as f32],
    }
}

#[track_caller]
fn assert_close(got: &[f32], expected: &[f32], what: &str) {
    common::assert_close_relative(got, expected, TOLERANCE, what);
}

fn loaded<B: Backend>(case: &str) -> T5ForConditionalGeneration<B> {
    let mut model = base::<B>(case);
    load_adapter(&mut model, &case_dir(case), "default").unwrap();
    model
}

fn loads_and_gives_peft_logits<B: Backend>(case: &str) {
    let model = loaded::<B>(case);
    assert_close(&logits(&model), &floats(&expected()["logits"][case]), case);
}

/// A directory of its own under the system's temporary directory, emptied first.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("lora-t5-tied-layers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn saves_back_what_peft_wrote(case: &str) {
    let mut model = base::<NdArray>(case);
    let config = load_adapter(&mut model, &case_dir(case), "default").unwrap();
    let out = scratch(case);
    save_adapter(&model, &out, "default", &config, SaveOptions::default()).unwrap();
    let read = |dir: &Path, file: &str| std::fs::read(dir.join(file)).unwrap();
    let tensors = |bytes: &[u8]| lora_hf::parse_safetensors(bytes, "file".as_ref()).unwrap();
    let original = read(&case_dir(case), "adapter_model.safetensors");
    let saved = read(&out, "adapter_model.safetensors");
    assert_eq!(tensors(&saved), tensors(&original), "{case}: tensors");
    assert_eq!(saved, original, "{case}: bytes");
    assert_eq!(
        read(&out, "adapter_config.json"),
        read(&case_dir(case), "adapter_config.json"),
        "{case}: config"
    );
    std::fs::remove_dir_all(out).unwrap();
}

macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        mod ndarray {
            $(#[test]
            fn $case() {
                super::loads_and_gives_peft_logits::<super::NdArray>(stringify!($case));
            })*
        }
        mod flex {
            $(#[test]
            fn $case() {
                super::loads_and_gives_peft_logits::<super::Flex>(stringify!($case));
            })*
        }
        mod round_trip {
            $(#[test]
            fn $case() {
                super::saves_back_what_peft_wrote(stringify!($case));
            })*
        }
    };
}

cases!(
    tied_head,
    untied_head,
    embed_tokens,
    embeddings_rslora,
    changed_head_base,
    saved_head,
    saved_tied_head,
    saved_lookups,
);

#[test]
fn every_fixture_case_has_a_test() {
    assert_eq!(expected()["logits"].as_object().unwrap().len(), 8);
}

#[test]
fn the_adapters_change_the_logits() {
    for case in [
        "tied_head",
        "embed_tokens",
        "changed_head_base",
        "saved_tied_head",
        "saved_lookups",
    ] {
        let plain = logits(&base::<NdArray>(case));
        let adapted = floats(&expected()["logits"][case]);
        let moved = plain
            .iter()
            .zip(&adapted)
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(moved > 1e-2, "{case}: {moved}");
    }
}

#[test]
fn the_tied_layers_are_wrapped_only_when_targeted() {
    let plain = base::<NdArray>("tied_head");
    assert!(plain.lm_head.is_none());
    assert!(!lora_layer_paths(&plain, "")
        .iter()
        .any(|p| p.ends_with("embed_tokens")));
    assert_eq!(
        plain.wrappable_lora_paths(),
        ["lm_head", "encoder.embed_tokens", "decoder.embed_tokens"]
    );
    let head = loaded::<NdArray>("tied_head");
    assert!(lora_layer_paths(&head, "").contains(&"lm_head".to_string()));
    assert!(head.encoder.embed_tokens.is_none());
    let lookups = loaded::<NdArray>("embed_tokens");
    assert!(lookups.lm_head.is_none());
    let paths = lora_layer_paths(&lookups, "");
    assert!(paths.contains(&"encoder.embed_tokens".to_string()));
    assert!(paths.contains(&"decoder.embed_tokens".to_string()));
}

#[test]
fn fresh_adapters_on_the_tied_layers_start_as_the_base() {
    let mut model = base::<NdArray>("tied_head");
    let before = logits(&model);
    let text = r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4,
        "target_modules": ["lm_head", "embed_tokens", "q"]}"#;
    let config = AdapterConfig::from_json_str(text, "adapter_config.json".as_ref()).unwrap();
    let targets = inject_adapter(&mut model, &config, "default").unwrap();
    assert!(targets.iter().any(|t| t == "lm_head"));
    assert!(targets.iter().any(|t| t == "encoder.embed_tokens"));
    // PEFT's embedding initialisation: A zeros, B standard normal.
    let lookup = model.encoder.embed_tokens.as_ref().unwrap();
    let adapter = lookup.adapter("default").unwrap();
    let a: Vec<f32> = adapter.lora_a.val().into_data().to_vec().unwrap();
    let b: Vec<f32> = adapter.lora_b.val().into_data().to_vec().unwrap();
    assert!(a.iter().all(|v| *v == 0.0));
    assert!(b.iter().any(|v| *v != 0.0));
    assert_close(&logits(&model), &before, "fresh adapters");
}

#[test]
fn a_failed_load_unwraps_the_layers_it_wrapped() {
    let scratch = scratch("failed_load");
    for file in ["adapter_config.json", "adapter_model.safetensors"] {
        std::fs::copy(case_dir("tied_head").join(file), scratch.join(file)).unwrap();
    }
    // A file that holds `q` and `v` but not the head's factors.
    let path = scratch.join("adapter_model.safetensors");
    let mut tensors = lora_hf::read_safetensors(&path).unwrap();
    tensors.retain(|key, _| !key.contains("lm_head.lora_B"));
    let bytes = lora_hf::serialize_safetensors(&tensors, lora_hf::WeightDtype::F32).unwrap();
    std::fs::write(&path, bytes).unwrap();
    let mut model = base::<NdArray>("tied_head");
    let err = load_adapter(&mut model, &scratch, "default").unwrap_err();
    assert!(
        matches!(err, PeftIoError::MissingTensor { ref key, .. } if key.contains("lm_head.lora_B")),
        "{err:?}"
    );
    assert!(model.lm_head.is_none(), "the tied head is tied again");
    assert!(model.adapter_names().is_empty());
    std::fs::remove_dir_all(scratch).unwrap();
}

#[test]
fn a_tied_head_saves_tied_until_merged_then_untied_with_the_same_logits() {
    let out = scratch("merged_head");
    let mut model = loaded::<NdArray>("tied_head");
    let adapted = logits(&model);
    model.save_pretrained(&out.join("unmerged")).unwrap();
    let config = std::fs::read_to_string(out.join("unmerged/config.json")).unwrap();
    assert!(config.contains("\"tie_word_embeddings\": true"), "{config}");
    let weights = lora_hf::read_safetensors(&out.join("unmerged/model.safetensors")).unwrap();
    assert!(!weights.contains_key("lm_head.weight"));

    model.merge_and_unload().unwrap();
    assert_close(&logits(&model), &adapted, "merged");
    model.save_pretrained(&out.join("merged")).unwrap();
    let config = std::fs::read_to_string(out.join("merged/config.json")).unwrap();
    assert!(
        config.contains("\"tie_word_embeddings\": false"),
        "{config}"
    );
    let reloaded = T5ForConditionalGeneration::<NdArray>::from_pretrained(
        &out.join("merged"),
        &Default::default(),
    )
    .unwrap();
    assert_close(&logits(&reloaded), &adapted, "merged, saved and reloaded");
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn merged_lookups_keep_the_logits_but_cannot_be_saved_tied() {
    let out = scratch("merged_lookups");
    let mut model = loaded::<NdArray>("embed_tokens");
    let adapted = logits(&model);
    model.merge_and_unload().unwrap();
    assert_close(&logits(&model), &adapted, "merged");
    let err = model.save_pretrained(&out).unwrap_err();
    assert!(
        matches!(err, T5Error::InvalidInput { ref reason } if reason.contains("encoder.embed_tokens")),
        "{err:?}"
    );
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn save_embedding_layers_no_leaves_the_base_weight_out() {
    let mut model = base::<NdArray>("untied_head");
    let config = load_adapter(&mut model, &case_dir("untied_head"), "default").unwrap();
    let out = scratch("no_base_weight");
    let options = SaveOptions {
        save_embedding_layers: SaveEmbeddingLayers::No,
        ..SaveOptions::default()
    };
    save_adapter(&model, &out, "default", &config, options).unwrap();
    let tensors = lora_hf::read_safetensors(&out.join("adapter_model.safetensors")).unwrap();
    assert!(!tensors.keys().any(|k| k.contains("base_layer")));
    assert!(tensors.contains_key("base_model.model.lm_head.lora_A.weight"));
    // Without the base weight the adapter still loads, on the model's own head.
    let mut again = base::<NdArray>("untied_head");
    load_adapter(&mut again, &out, "default").unwrap();
    assert_close(
        &logits(&again),
        &floats(&expected()["logits"]["untied_head"]),
        "reloaded",
    );
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn a_carried_base_weight_of_the_wrong_shape_is_refused() {
    let scratch = scratch("wrong_base_shape");
    std::fs::copy(
        case_dir("untied_head").join("adapter_config.json"),
        scratch.join("adapter_config.json"),
    )
    .unwrap();
    let path = case_dir("untied_head").join("adapter_model.safetensors");
    let mut tensors = lora_hf::read_safetensors(&path).unwrap();
    let key = "base_model.model.lm_head.base_layer.weight";
    let head = tensors.get_mut(key).unwrap();
    head.shape = vec![head.shape[1], head.shape[0]];
    let bytes = lora_hf::serialize_safetensors(&tensors, lora_hf::WeightDtype::F32).unwrap();
    std::fs::write(scratch.join("adapter_model.safetensors"), bytes).unwrap();
    let mut model = base::<NdArray>("untied_head");
    let err = load_adapter(&mut model, &scratch, "default").unwrap_err();
    assert!(
        matches!(err, PeftIoError::ShapeMismatch { key: ref k, .. } if k == key),
        "{err:?}"
    );
    assert!(model.adapter_names().is_empty());
    std::fs::remove_dir_all(scratch).unwrap();
}

#[test]
fn ensure_weight_tying_is_refused_by_name() {
    let text = r#"{"peft_type": "LORA", "target_modules": ["lm_head", "embed_tokens"],
        "ensure_weight_tying": true}"#;
    let config = AdapterConfig::from_json_str(text, "adapter_config.json".as_ref()).unwrap();
    let mut model = base::<NdArray>("tied_head");
    let err = inject_adapter(&mut model, &config, "default").unwrap_err();
    assert!(err.to_string().contains("ensure_weight_tying"), "{err}");
}

/// Writes every case back out, for `scripts/gen_tied_layer_fixtures.py --check-rust-output
/// DIR` to load with PEFT. Run with `LORA_T5_EXPORT_DIR=DIR cargo test -p lora-t5 --test
/// peft_tied_layers -- --ignored`.
#[test]
#[ignore = "writes files for the Python-side check"]
fn export_adapters_for_the_peft_check() {
    let root = PathBuf::from(std::env::var("LORA_T5_EXPORT_DIR").expect("LORA_T5_EXPORT_DIR"));
    for case in expected()["logits"].as_object().unwrap().keys() {
        let mut model = base::<NdArray>(case);
        let config = load_adapter(&mut model, &case_dir(case), "default").unwrap();
        save_adapter(
            &model,
            &root.join(case),
            "default",
            &config,
            SaveOptions::default(),
        )
        .unwrap();
    }
}

#[test]
fn a_saved_head_is_a_copy_used_only_while_its_adapter_is_active() {
    let mut model = loaded::<NdArray>("saved_tied_head");
    let head = model
        .lm_head
        .as_ref()
        .expect("the tied head is wrapped for its copy");
    assert!(head.module_copy("default").is_some() && head.adapters.is_empty());
    let adapted = logits(&model);
    // Another adapter on `q` alone: the head computes the original weights again, as PEFT's
    // wrapper does for an adapter it does not hold.
    let text = r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q"]}"#;
    let config = AdapterConfig::from_json_str(text, "adapter_config.json".as_ref()).unwrap();
    inject_adapter(&mut model, &config, "other").unwrap();
    model.set_adapter(&["other"]).unwrap();
    let other = logits(&model);
    let plain = logits(&base::<NdArray>("saved_tied_head"));
    assert_close(&other, &plain, "the other adapter starts as the base");
    model.set_adapter(&["default"]).unwrap();
    assert_close(&logits(&model), &adapted, "back to the saved head");
}

#[test]
fn merging_a_saved_head_puts_the_copy_in_place_and_saves_untied() {
    let out = scratch("merged_saved_head");
    let mut model = loaded::<NdArray>("saved_tied_head");
    let adapted = logits(&model);
    model.merge_and_unload().unwrap();
    assert_close(&logits(&model), &adapted, "merged");
    model.save_pretrained(&out).unwrap();
    let config = std::fs::read_to_string(out.join("config.json")).unwrap();
    assert!(
        config.contains("\"tie_word_embeddings\": false"),
        "{config}"
    );
    let reloaded =
        T5ForConditionalGeneration::<NdArray>::from_pretrained(&out, &Default::default()).unwrap();
    assert_close(&logits(&reloaded), &adapted, "merged, saved and reloaded");
    std::fs::remove_dir_all(out).unwrap();
}

#[test]
fn fresh_copies_start_as_the_modules_they_save() {
    let mut model = base::<NdArray>("saved_tied_head");
    let before = logits(&model);
    let text = r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q"],
        "modules_to_save": ["lm_head", "embed_tokens"]}"#;
    let config = AdapterConfig::from_json_str(text, "adapter_config.json".as_ref()).unwrap();
    let paths = inject_adapter(&mut model, &config, "default").unwrap();
    for saved in ["lm_head", "encoder.embed_tokens", "decoder.embed_tokens"] {
        assert!(paths.iter().any(|p| p == saved), "{saved}: {paths:?}");
    }
    assert!(model
        .decoder
        .embed_tokens
        .as_ref()
        .unwrap()
        .module_copy("default")
        .is_some());
    assert_close(&logits(&model), &before, "fresh copies");
}

/// The mean cross-entropy of `labels` from the model's own logits, decoding the labels shifted
/// right (T5's decoder start is 0).
fn loss_from_logits<B: Backend>(model: &T5ForConditionalGeneration<B>) -> f32 {
    use burn::tensor::{activation::log_softmax, Int, Tensor};
    let e = expected();
    let labels: Tensor<B, 2, Int> = common::int_matrix(&e["decoder_input_ids"]);
    let [batch, length] = labels.dims();
    let start = Tensor::<B, 2, Int>::zeros([batch, 1], &Default::default());
    let shifted = Tensor::cat(vec![start, labels.clone().narrow(1, 0, length - 1)], 1);
    let input = Seq2SeqInput::new(common::int_matrix(&e["input_ids"]), shifted)
        .attention_mask(common::int_matrix(&e["attention_mask"]));
    let log_probs = log_softmax(model.forward(input).logits, 2);
    let picked = log_probs.gather(2, labels.unsqueeze_dim(2));
    -burn::tensor::ElementConversion::elem::<f32>(picked.mean().into_scalar())
}

fn loss<B: Backend>(model: &T5ForConditionalGeneration<B>) -> f32 {
    use burn::tensor::ElementConversion;
    let e = expected();
    model
        .loss(
            common::int_matrix(&e["input_ids"]),
            common::int_matrix(&e["attention_mask"]),
            common::int_matrix(&e["decoder_input_ids"]),
        )
        .unwrap()
        .into_scalar()
        .elem::<f32>()
}

#[test]
fn the_loss_goes_through_the_saved_and_adapted_heads() {
    // On flex, whose fused head and loss must not take the base weight for these heads.
    for case in ["saved_head", "saved_tied_head", "tied_head"] {
        let model = loaded::<Flex>(case);
        let (got, want) = (loss(&model), loss_from_logits(&model));
        assert!(
            (got - want).abs() <= 1e-5 * want.abs(),
            "{case}: {got} vs {want}"
        );
        let plain = loss(&base::<Flex>(case));
        assert!(
            (got - plain).abs() > 1e-3,
            "{case}: the head changes the loss"
        );
    }
}

#[test]
fn all_linear_with_a_saved_tied_head_copies_the_head_and_adapts_the_rest() {
    let mut model = base::<NdArray>("saved_tied_head");
    let text = r#"{"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": "all-linear",
        "modules_to_save": ["lm_head"]}"#;
    let config = AdapterConfig::from_json_str(text, "adapter_config.json".as_ref()).unwrap();
    let paths = inject_adapter(&mut model, &config, "default").unwrap();
    let head = model
        .lm_head
        .as_ref()
        .expect("the tied head is wrapped for its copy");
    assert!(head.module_copy("default").is_some() && head.adapters.is_empty());
    assert!(paths.iter().any(|p| p.ends_with("SelfAttention.q")));
    assert!(
        model.encoder.embed_tokens.is_none(),
        "all-linear wraps no lookup"
    );
}

#[test]
fn hot_swapping_in_an_adapter_that_carries_a_base_weight_is_refused() {
    let mut model = loaded::<NdArray>("untied_head");
    let before = logits(&model);
    let err = lora_peft_io::hotswap_adapter(&mut model, &case_dir("changed_head_base"), "default")
        .unwrap_err();
    assert!(
        matches!(err, PeftIoError::HotswapIncompatible { .. })
            && err.to_string().contains("base weight"),
        "{err}"
    );
    assert_close(&logits(&model), &before, "unchanged");
}
