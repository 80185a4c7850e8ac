//! `from_pretrained` on broken model directories: each fault reaches the caller as the
//! `T5Error` variant that names it (the file-level errors come from `lora_hf`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use lora_hf::{read_safetensors, serialize_safetensors, write_atomic, WeightDtype};
use lora_t5::{HfFileError, T5Error, T5ForConditionalGeneration};

type Cpu = NdArray<f32>;

fn fixture(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(case)
}

/// A scratch directory holding the config of the `t5_v1_1` fixture.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lora-t5-loading-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture("t5_v1_1").join("config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    dir
}

fn load(dir: &Path) -> Result<T5ForConditionalGeneration<Cpu>, T5Error> {
    T5ForConditionalGeneration::from_pretrained(dir, &Default::default())
}

#[test]
fn a_directory_without_weights_is_no_weights() {
    let dir = scratch("none");
    let err = load(&dir).map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, T5Error::File(HfFileError::NoWeights { dir: d }) if *d == dir),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_non_finite_weight_is_non_finite_with_its_key() {
    let dir = scratch("nan");
    let mut tensors = read_safetensors(&fixture("t5_v1_1").join("model.safetensors")).unwrap();
    tensors.get_mut("shared.weight").unwrap().values[3] = f32::NAN;
    let bytes = serialize_safetensors(&tensors, WeightDtype::F32).unwrap();
    write_atomic(&dir.join("model.safetensors"), &bytes).unwrap();
    let err = load(&dir).map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, T5Error::File(HfFileError::NonFinite { key, .. }) if key == "shared.weight"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_index_naming_a_file_outside_the_directory_is_an_invalid_config() {
    let dir = scratch("traversal");
    let index = r#"{"weight_map": {"shared.weight": "../model.safetensors"}}"#;
    write_atomic(&dir.join("model.safetensors.index.json"), index.as_bytes()).unwrap();
    let err = load(&dir).map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, T5Error::File(HfFileError::InvalidValue { key, .. }) if key == "weight_map.shared.weight"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_config_that_is_not_json_is_a_json_error_with_its_line() {
    let dir = scratch("json");
    std::fs::write(dir.join("config.json"), "{\n  \"d_model\": 8,\n}").unwrap();
    let err = load(&dir).map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, T5Error::File(HfFileError::Json { line: 3, .. })),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn save_pretrained_leaves_no_temporary_files() {
    let model = load(&fixture("t5_v1_1")).unwrap();
    let dir = scratch("save");
    model.save_pretrained(&dir).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["config.json", "generation_config.json", "model.safetensors"]
    );
    let saved: BTreeMap<_, _> = read_safetensors(&dir.join("model.safetensors")).unwrap();
    assert!(saved.contains_key("shared.weight"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tokenizer_json_that_makes_tokenizers_panic_is_a_tokenizer_error() {
    // A syntax error inside `decoder` reaches an `expect` in tokenizers 0.22's deserializer
    // (found by the `tokenizer_json` fuzz target).
    let embedded =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/uidsl-t5-small/tokenizer.json");
    let text = std::fs::read_to_string(embedded).unwrap();
    let cut = text.find("\"decoder\":{\"type\":\"Metaspace\",").unwrap() + 30;
    let broken = format!("{}]", &text[..cut]);
    let path = Path::new("tokenizer.json");
    match lora_t5::T5Tokenizer::from_json_str(&broken, path) {
        Err(T5Error::Tokenizer { path: p, message }) => {
            assert_eq!(p, path);
            assert!(message.contains("not a valid tokenizer"), "{message}");
        }
        other => panic!("expected a Tokenizer error, got {other:?}"),
    }
}

#[test]
fn a_template_naming_an_undefined_special_token_fails_to_encode_without_a_panic() {
    // tokenizers 0.22 loads it, then panics in `encode` ("no entry found for key"); found by
    // the `tokenizer_json` fuzz target.
    let embedded =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/uidsl-t5-small/tokenizer.json");
    let mut json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(embedded).unwrap()).unwrap();
    json["post_processor"]["special_tokens"] = serde_json::json!({});
    let path = Path::new("tokenizer.json");
    let tokenizer = lora_t5::T5Tokenizer::from_json_str(&json.to_string(), path).unwrap();
    match tokenizer.encode("顶部搜索") {
        Err(T5Error::Tokenizer { path: p, message }) => {
            assert_eq!(p, path);
            assert!(message.contains("cannot handle"), "{message}");
        }
        other => panic!("expected a Tokenizer error, got {other:?}"),
    }
}
