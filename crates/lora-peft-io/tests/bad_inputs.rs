//! Broken adapter directories, files and configs. Every one must give a typed [`PeftIoError`]
//! that names the file, the key and what was expected (never a panic), and a failed load must
//! leave the model unchanged. Each test breaks a scratch copy of a fixture directory.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{base_model, copy_dir, fixtures, scratch_dir, write_tensors};
use lora_core::LoraModule;
use lora_peft_io::{
    inject_adapter, load_adapter, parse_torch_bytes, save_adapter, AdapterConfig, HfFileError,
    HostTensor, PeftIoError, SaveOptions, CONFIG_FILE, LEGACY_WEIGHTS_FILE, WEIGHTS_FILE,
};
use serde_json::{json, Map, Value};

/// safetensors parsing as adapter loading reports it: `lora_hf`'s error as `PeftIoError`.
fn parse_safetensors(
    bytes: &[u8],
    path: &Path,
) -> Result<std::collections::BTreeMap<String, HostTensor>, PeftIoError> {
    Ok(lora_hf::parse_safetensors(bytes, path)?)
}

fn read_safetensors(
    path: &Path,
) -> Result<std::collections::BTreeMap<String, HostTensor>, PeftIoError> {
    Ok(lora_hf::read_safetensors(path)?)
}

const Q0: &str = "encoder.block.0.layer.0.SelfAttention.q";
const K0: &str = "encoder.block.0.layer.0.SelfAttention.k";

/// The file key of tensor `suffix` of module `module`.
fn key(module: &str, suffix: &str) -> String {
    format!("base_model.model.{module}.{suffix}")
}

/// A scratch directory removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        Self(scratch_dir(&format!("bad-{test}")))
    }

    /// A copy of fixture directory `case` (its files only), named `name`.
    fn copy(&self, case: &str, name: &str) -> PathBuf {
        let dir = self.0.join(name);
        copy_dir(&fixtures().join(case), &dir);
        dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads `dir` into the base model, which must fail and leave the model unchanged.
#[track_caller]
fn load_error(dir: &Path) -> PeftIoError {
    let mut model = base_model();
    let err = load_adapter(&mut model, dir, "default")
        .map(|_| ())
        .expect_err("the load must fail");
    let mut untouched = true;
    model.visit_lora("", &mut |_, layer| {
        untouched &= layer.adapters.is_empty() && layer.copies.is_empty()
    });
    assert!(untouched, "a failed load changed the model: {err}");
    err
}

/// Checks that the message of `err` holds every one of `parts`.
#[track_caller]
fn assert_mentions(err: &PeftIoError, parts: &[&str]) {
    let text = err.to_string();
    for part in parts {
        assert!(text.contains(part), "`{text}` does not mention `{part}`");
    }
}

fn read_tensors(dir: &Path) -> BTreeMap<String, HostTensor> {
    read_safetensors(&dir.join(WEIGHTS_FILE)).unwrap()
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut Map<String, Value>)) {
    let path = dir.join(CONFIG_FILE);
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(config.as_object_mut().unwrap());
    std::fs::write(&path, serde_json::to_string_pretty(&config).unwrap()).unwrap();
}

fn host(shape: &[usize], value: f32) -> HostTensor {
    HostTensor {
        values: vec![value; shape.iter().product()],
        shape: shape.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// Files that are missing or cannot be read
// ---------------------------------------------------------------------------------------------

#[test]
fn a_directory_without_config_is_an_io_error_naming_the_config_file() {
    let scratch = Scratch::new("no-config");
    let dir = scratch.copy("list_qv", "adapter");
    std::fs::remove_file(dir.join(CONFIG_FILE)).unwrap();
    let err = load_error(&dir);
    let PeftIoError::File(HfFileError::Io { path, source }) = &err else {
        panic!("expected Io, got {err}");
    };
    assert_eq!(path, &dir.join(CONFIG_FILE));
    assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    assert_mentions(&err, &[CONFIG_FILE]);
}

#[test]
fn a_config_that_cannot_be_read_is_an_io_error() {
    let scratch = Scratch::new("unreadable-config");
    let dir = scratch.copy("list_qv", "adapter");
    std::fs::remove_file(dir.join(CONFIG_FILE)).unwrap();
    std::fs::create_dir(dir.join(CONFIG_FILE)).unwrap();
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::File(HfFileError::Io { path, .. }) if path == &dir.join(CONFIG_FILE)),
        "{err}"
    );
    // Not UTF-8.
    std::fs::remove_dir(dir.join(CONFIG_FILE)).unwrap();
    std::fs::write(dir.join(CONFIG_FILE), b"{\"peft_type\": \"\xff\"}").unwrap();
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::File(HfFileError::Io { path, .. }) if path == &dir.join(CONFIG_FILE)),
        "{err}"
    );
}

#[test]
fn a_directory_without_weights_is_no_weights() {
    let scratch = Scratch::new("no-weights");
    let dir = scratch.copy("list_qv", "adapter");
    std::fs::remove_file(dir.join(WEIGHTS_FILE)).unwrap();
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::NoWeights { dir: d } if d == &dir),
        "{err}"
    );
    assert_mentions(&err, &[WEIGHTS_FILE, LEGACY_WEIGHTS_FILE]);
}

#[test]
fn a_weights_file_that_cannot_be_read_is_an_io_error_naming_it() {
    let scratch = Scratch::new("unreadable-weights");
    for (case, file) in [("list_qv", WEIGHTS_FILE), ("old_peft", LEGACY_WEIGHTS_FILE)] {
        let dir = scratch.copy(case, case);
        std::fs::remove_file(dir.join(file)).unwrap();
        std::fs::create_dir(dir.join(file)).unwrap();
        let err = load_error(&dir);
        assert!(
            matches!(&err, PeftIoError::File(HfFileError::Io { path, .. }) if path == &dir.join(file)),
            "{case}: {err}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Malformed safetensors files
// ---------------------------------------------------------------------------------------------

/// A safetensors file with this header (as JSON text) and data.
fn safetensors_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    bytes
}

/// A safetensors file holding one tensor.
fn one_tensor(key: &str, dtype: &str, shape: &[u64], data: &[u8]) -> Vec<u8> {
    let header = json!({key: {"dtype": dtype, "shape": shape, "data_offsets": [0, data.len()]}});
    safetensors_file(&header.to_string(), data)
}

/// The message of the [`HfFileError::Safetensors`] error that `bytes` give.
#[track_caller]
fn safetensors_message(bytes: &[u8]) -> String {
    let path = Path::new("dir/adapter_model.safetensors");
    match parse_safetensors(bytes, path) {
        Err(PeftIoError::File(HfFileError::Safetensors { path: p, message })) => {
            assert_eq!(p, path);
            message
        }
        Err(other) => panic!("expected a Safetensors error, got {other}"),
        Ok(tensors) => panic!("expected an error, read {} tensors", tensors.len()),
    }
}

#[track_caller]
fn assert_contains(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "`{text}` does not mention `{part}`");
    }
}

#[test]
fn a_truncated_safetensors_file_is_reported_not_read() {
    let scratch = Scratch::new("truncated-safetensors");
    let dir = scratch.copy("list_qv", "adapter");
    let bytes = std::fs::read(dir.join(WEIGHTS_FILE)).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    // Cut inside the length, inside the header, and inside the data of the last tensor.
    assert_contains(&safetensors_message(&bytes[..0]), &["8-byte header length"]);
    assert_contains(&safetensors_message(&bytes[..5]), &["8-byte header length"]);
    assert_contains(
        &safetensors_message(&bytes[..8 + header_len / 2]),
        &[&format!("header length {header_len}"), "exceeds"],
    );
    let message = safetensors_message(&bytes[..bytes.len() - 10]);
    assert_contains(&message, &["tensor `base_model.model.", "data_offsets"]);
    // The same through the directory, naming the file.
    std::fs::write(dir.join(WEIGHTS_FILE), &bytes[..bytes.len() - 10]).unwrap();
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::File(HfFileError::Safetensors { path, .. }) if path == &dir.join(WEIGHTS_FILE)),
        "{err}"
    );
    assert_mentions(&err, &[WEIGHTS_FILE]);
    // Empty file.
    std::fs::write(dir.join(WEIGHTS_FILE), b"").unwrap();
    assert!(matches!(
        load_error(&dir),
        PeftIoError::File(HfFileError::Safetensors { .. })
    ));
}

#[test]
fn a_header_over_the_safetensors_limit_is_refused_before_it_is_parsed() {
    // 100 MB and one byte of one JSON object: parsed first, a header of many small entries
    // would take many times its size in memory.
    let mut header = String::with_capacity(100_000_001);
    header.push('{');
    header.push_str(&" ".repeat(100_000_001 - 2));
    header.push('}');
    let message = safetensors_message(&safetensors_file(&header, &[]));
    assert_contains(
        &message,
        &["100000001", "safetensors limit of 100000000 bytes"],
    );
}

#[test]
fn an_absurd_header_length_is_reported() {
    for length in [1u64 << 60, u64::MAX, 100] {
        let mut bytes = length.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        let message = safetensors_message(&bytes);
        assert_contains(&message, &[&format!("header length {length}"), "exceeds"]);
    }
}

#[test]
fn tensor_offsets_beyond_the_data_are_reported_with_the_tensor() {
    let header = r#"{"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                     "x": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}"#;
    let message = safetensors_message(&safetensors_file(header, &[0; 12]));
    assert_contains(&message, &["tensor `x`", "[8, 24]", "12"]);
    // An end offset so large that adding the header size to it overflows.
    let header = format!(
        r#"{{"w": {{"dtype": "U8", "shape": [{max}], "data_offsets": [0, {max}]}}}}"#,
        max = u64::MAX
    );
    let message = safetensors_message(&safetensors_file(&header, &[0; 4]));
    assert_contains(&message, &["tensor `w`", "data_offsets"]);
    // Start after end.
    let header = r#"{"w": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}}"#;
    let message = safetensors_message(&safetensors_file(header, &[0; 4]));
    assert_contains(&message, &["tensor `w`", "[4, 0]"]);
}

#[test]
fn tensor_sizes_that_do_not_match_dtype_and_shape_are_reported() {
    let header = r#"{"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}}"#;
    let message = safetensors_message(&safetensors_file(header, &[0; 12]));
    assert_contains(&message, &["tensor `w`", "F32", "[2, 2]", "16 bytes", "12"]);
    // A shape whose element count overflows.
    for shape in [
        "[4294967296, 4294967296, 4294967296]",
        "[18446744073709551615, 2]",
    ] {
        let header =
            format!(r#"{{"w": {{"dtype": "F32", "shape": {shape}, "data_offsets": [0, 4]}}}}"#);
        let message = safetensors_message(&safetensors_file(&header, &[0; 4]));
        assert_contains(&message, &["tensor `w`", "overflows"]);
    }
}

#[test]
fn tensors_that_leave_gaps_or_overlap_are_reported() {
    // A gap between two tensors.
    let header = r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                     "b": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}}"#;
    let message = safetensors_message(&safetensors_file(header, &[0; 12]));
    assert_contains(&message, &["`b`"]);
    // Two tensors sharing bytes.
    let header = r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
                     "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#;
    safetensors_message(&safetensors_file(header, &[0; 4]));
    // Bytes left over after the last tensor.
    let header = r#"{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}"#;
    let message = safetensors_message(&safetensors_file(header, &[0; 8]));
    assert_contains(&message, &["8 data bytes"]);
}

#[test]
fn a_header_that_is_not_a_json_object_is_reported() {
    let message = safetensors_message(&safetensors_file("{\"w\": {\n\"dtype\": }", &[]));
    assert_contains(&message, &["JSON", "line 2"]);
    let mut bytes = 2u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"\xff\xfe");
    assert_contains(&safetensors_message(&bytes), &["UTF-8"]);
    assert_contains(
        &safetensors_message(&safetensors_file("[1, 2]", &[])),
        &["JSON object"],
    );
    for info in [
        r#"{"w": 1}"#,
        r#"{"w": {"shape": [1], "data_offsets": [0, 4]}}"#,
        r#"{"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}"#,
        r#"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0]}}"#,
        r#"{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, -4]}}"#,
    ] {
        let message = safetensors_message(&safetensors_file(info, &[0; 4]));
        assert_contains(&message, &["tensor `w`"]);
    }
    // `__metadata__` must map strings to strings.
    let header = r#"{"__metadata__": {"format": 1}}"#;
    safetensors_message(&safetensors_file(header, &[]));
}

// ---------------------------------------------------------------------------------------------
// Element types and values
// ---------------------------------------------------------------------------------------------

#[test]
fn integer_f64_and_unknown_dtypes_are_unsupported() {
    let cases: [(&str, &[u8]); 6] = [
        ("I32", &[0; 4]),
        ("F64", &[0; 8]),
        ("I64", &[0; 8]),
        ("BOOL", &[0; 1]),
        ("U8", &[0; 1]),
        ("F8_E4M3", &[0; 1]),
    ];
    for (dtype, data) in cases {
        let err =
            parse_safetensors(&one_tensor("w", dtype, &[1], data), "f".as_ref()).expect_err(dtype);
        assert!(
            matches!(&err, PeftIoError::File(HfFileError::UnsupportedDtype { key, dtype: d, .. }) if key == "w" && d == dtype),
            "{err}"
        );
        assert_mentions(&err, &["`w`", dtype, "F32, F16 or BF16"]);
    }
    // A dtype newer than the safetensors format the reader knows.
    let err = parse_safetensors(&one_tensor("w", "F4", &[2], &[0; 1]), "f".as_ref()).unwrap_err();
    assert!(
        matches!(&err, PeftIoError::File(HfFileError::UnsupportedDtype { key, dtype, .. }) if key == "w" && dtype == "F4"),
        "{err}"
    );
    // Through a directory: an I32 lora_A of a targeted module.
    let scratch = Scratch::new("dtype");
    let dir = scratch.copy("list_qv", "adapter");
    let a = key(Q0, "lora_A.weight");
    std::fs::write(
        dir.join(WEIGHTS_FILE),
        one_tensor(&a, "I32", &[4, 8], &[0; 128]),
    )
    .unwrap();
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::File(HfFileError::UnsupportedDtype { path, key, dtype }) if path == &dir.join(WEIGHTS_FILE) && key == &a && dtype == "I32"),
        "{err}"
    );
}

#[test]
fn nan_and_infinite_values_are_rejected_with_the_tensor() {
    let cases: [(&str, Vec<u8>); 5] = [
        ("F32", f32::NAN.to_le_bytes().to_vec()),
        ("F32", f32::NEG_INFINITY.to_le_bytes().to_vec()),
        ("F16", 0x7c00u16.to_le_bytes().to_vec()),
        ("F16", 0x7e00u16.to_le_bytes().to_vec()),
        ("BF16", 0x7fc0u16.to_le_bytes().to_vec()),
    ];
    for (dtype, value) in cases {
        let mut data = vec![0u8; value.len() * 3];
        data.extend_from_slice(&value);
        let err = parse_safetensors(&one_tensor("w", dtype, &[2, 2], &data), "f".as_ref())
            .expect_err(dtype);
        assert!(
            matches!(&err, PeftIoError::File(HfFileError::NonFinite { key, .. }) if key == "w"),
            "{dtype}: {err}"
        );
        assert_mentions(&err, &["`w`", "non-finite"]);
    }
    let scratch = Scratch::new("non-finite");
    let dir = scratch.copy("list_qv", "adapter");
    let mut tensors = read_tensors(&dir);
    let b = key(Q0, "lora_B.weight");
    tensors.get_mut(&b).unwrap().values[3] = f32::INFINITY;
    write_tensors(&dir, &tensors);
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::File(HfFileError::NonFinite { path, key }) if path == &dir.join(WEIGHTS_FILE) && key == &b),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// adapter_config.json
// ---------------------------------------------------------------------------------------------

fn config_error(text: &str) -> PeftIoError {
    AdapterConfig::from_json_str(text, CONFIG_FILE.as_ref()).expect_err(text)
}

/// A minimal valid config with `key` set to `value`.
fn config_with(key: &str, value: Value) -> String {
    let mut config = json!({"peft_type": "LORA", "target_modules": ["q", "v"]});
    config[key] = value;
    config.to_string()
}

#[test]
fn invalid_json_reports_the_line_and_column() {
    let cases = [
        ("{\n  \"peft_type\": \"LORA\",\n  \"r\": 8 8\n}", 3, 10),
        ("{\n  \"peft_type\": \"LORA\",\n  \"r\": 8,\n}", 4, 1),
        ("{\"peft_type\": \"LORA\", \"r\": 8,}", 1, 30),
        ("{\n  \"peft_type\": \"LO", 2, 18),
        ("", 1, 0),
    ];
    for (text, line, column) in cases {
        let err = config_error(text);
        assert!(
            matches!(&err, PeftIoError::File(HfFileError::Json { line: l, column: c, .. }) if (*l, *c) == (line, column)),
            "{text:?}: {err}"
        );
        assert_mentions(
            &err,
            &[CONFIG_FILE, &format!("line {line}, column {column}")],
        );
    }
    let scratch = Scratch::new("json");
    let dir = scratch.copy("list_qv", "adapter");
    let text = std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap();
    // Drop the comma after `"lora_alpha": 8`: the next line is reported.
    let (line, _) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.trim() == "\"lora_alpha\": 8,")
        .unwrap();
    std::fs::write(
        dir.join(CONFIG_FILE),
        text.replace("\"lora_alpha\": 8,", "\"lora_alpha\": 8"),
    )
    .unwrap();
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::File(HfFileError::Json { path, line: l, column: 3, .. }) if path == &dir.join(CONFIG_FILE) && *l == line + 2),
        "{err}"
    );
}

#[test]
fn config_values_of_the_wrong_kind_name_the_key_and_what_was_expected() {
    let cases = [
        ("r", json!("eight"), "r", "a positive integer", "\"eight\""),
        ("r", json!(-2), "r", "a positive integer", "-2"),
        ("r", json!(0), "r", "a positive integer", "0"),
        ("r", json!(2.5), "r", "a positive integer", "2.5"),
        (
            "lora_alpha",
            json!("16"),
            "lora_alpha",
            "a finite number",
            "\"16\"",
        ),
        ("lora_dropout", json!(1.5), "lora_dropout", "[0, 1)", "1.5"),
        (
            "lora_dropout",
            json!(-0.1),
            "lora_dropout",
            "[0, 1)",
            "-0.1",
        ),
        ("bias", json!("some"), "bias", "\"lora_only\"", "\"some\""),
        ("bias", json!(true), "bias", "\"lora_only\"", "true"),
        (
            "use_dora",
            json!("yes"),
            "use_dora",
            "true or false",
            "\"yes\"",
        ),
        ("use_rslora", json!(1), "use_rslora", "true or false", "1"),
        (
            "init_lora_weights",
            json!(3),
            "init_lora_weights",
            "a bool or a string",
            "3",
        ),
        (
            "target_modules",
            json!(5),
            "target_modules",
            "a list of strings",
            "5",
        ),
        (
            "target_modules",
            json!(["q", 1]),
            "target_modules",
            "a list of strings",
            "[\"q\",1]",
        ),
        (
            "exclude_modules",
            json!({"k": 1}),
            "exclude_modules",
            "a list of strings",
            "{\"k\":1}",
        ),
        (
            "layers_to_transform",
            json!([-1]),
            "layers_to_transform",
            "a list of integers",
            "[-1]",
        ),
        (
            "layers_to_transform",
            json!("1"),
            "layers_to_transform",
            "an integer",
            "\"1\"",
        ),
        (
            "layers_pattern",
            json!(3),
            "layers_pattern",
            "a string or a list of strings",
            "3",
        ),
        (
            "modules_to_save",
            json!("lm_head"),
            "modules_to_save",
            "a list of strings",
            "\"lm_head\"",
        ),
        ("rank_pattern", json!(5), "rank_pattern", "an object", "5"),
        (
            "rank_pattern",
            json!(["q"]),
            "rank_pattern",
            "an object",
            "[\"q\"]",
        ),
        (
            "rank_pattern",
            json!({"q": 0}),
            "rank_pattern.q",
            "a positive integer",
            "0",
        ),
        (
            "rank_pattern",
            json!({"q": "2"}),
            "rank_pattern.q",
            "a positive integer",
            "\"2\"",
        ),
        (
            "alpha_pattern",
            json!("v"),
            "alpha_pattern",
            "an object",
            "\"v\"",
        ),
        (
            "alpha_pattern",
            json!({"v": "x"}),
            "alpha_pattern.v",
            "a finite number",
            "\"x\"",
        ),
        (
            "peft_type",
            json!("LOHA"),
            "peft_type",
            "\"LORA\"",
            "\"LOHA\"",
        ),
        ("peft_type", json!(null), "peft_type", "\"LORA\"", "null"),
    ];
    for (key, value, reported, expected, found) in cases {
        let text = config_with(key, value);
        let err = config_error(&text);
        assert!(
            matches!(&err, PeftIoError::File(HfFileError::InvalidValue { path, key: k, expected: e, found: f })
                if path == Path::new(CONFIG_FILE) && k == reported && e.contains(expected) && f == found),
            "{text}: {err}"
        );
        assert_mentions(&err, &[CONFIG_FILE, &format!("`{reported}`")]);
    }
    // A root that is not an object.
    let err = config_error("[1, 2]");
    assert!(
        matches!(&err, PeftIoError::File(HfFileError::InvalidValue { key, .. }) if key == "<root>"),
        "{err}"
    );
    // Through a directory: `"r": "eight"` in PEFT's own file.
    let scratch = Scratch::new("config-values");
    let dir = scratch.copy("list_qv", "adapter");
    edit_config(&dir, |c| {
        c.insert("r".into(), json!("eight"));
    });
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::File(HfFileError::InvalidValue { path, key, .. }) if path == &dir.join(CONFIG_FILE) && key == "r"),
        "{err}"
    );
}

#[test]
fn an_alpha_whose_scaling_overflows_f32_is_refused() {
    let scratch = Scratch::new("huge-alpha");
    let dir = scratch.copy("list_qv", "adapter");
    edit_config(&dir, |c| {
        c.insert("lora_alpha".into(), json!(1e308));
    });
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::File(HfFileError::InvalidValue { path, key, .. }) if path == &dir.join(CONFIG_FILE) && key == "lora_alpha"),
        "{err}"
    );
    assert_mentions(&err, &["f32"]);
    // The same for a pattern's alpha.
    let err = config_error(&config_with("alpha_pattern", json!({"v": 1e39})));
    assert!(
        matches!(&err, PeftIoError::File(HfFileError::InvalidValue { key, .. }) if key == "alpha_pattern.v"),
        "{err}"
    );
}

#[test]
fn null_values_take_peft_defaults() {
    // PEFT writes `null` for unset optional keys; a null `r` or `lora_alpha` reads as absent.
    let text = json!({
        "peft_type": "LORA",
        "target_modules": ["q"],
        "r": null,
        "lora_alpha": null,
        "lora_dropout": null,
        "bias": null,
        "rank_pattern": null,
        "alpha_pattern": null,
    })
    .to_string();
    let config = AdapterConfig::from_json_str(&text, CONFIG_FILE.as_ref()).unwrap();
    assert_eq!(config.r(), 8);
    assert_eq!(config.lora_alpha(), 8.0);
    assert_eq!(config.lora_dropout(), 0.0);
    assert!(config.rank_pattern().is_empty());
}

#[test]
fn a_missing_peft_type_is_a_missing_key() {
    let err = config_error(r#"{"r": 8, "target_modules": ["q"]}"#);
    assert!(
        matches!(&err, PeftIoError::MissingConfigKey { path, key } if path == Path::new(CONFIG_FILE) && key == "peft_type"),
        "{err}"
    );
    assert_mentions(&err, &[CONFIG_FILE, "`peft_type`"]);
    let scratch = Scratch::new("peft-type");
    let dir = scratch.copy("list_qv", "adapter");
    edit_config(&dir, |c| {
        c.insert("peft_type".into(), json!("IA3"));
    });
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::File(HfFileError::InvalidValue { key, found, .. }) if key == "peft_type" && found == "\"IA3\""),
        "{err}"
    );
}

#[test]
fn invalid_regular_expressions_name_the_key_and_the_pattern() {
    let cases = [
        ("target_modules", json!("(q|v"), "target_modules", "(q|v"),
        ("exclude_modules", json!("["), "exclude_modules", "["),
        (
            "layers_pattern",
            json!("(block"),
            "layers_pattern",
            "(block",
        ),
        (
            "layers_pattern",
            json!(["block", "h)"]),
            "layers_pattern",
            "h)",
        ),
        (
            "rank_pattern",
            json!({"q": 2, "v(": 3}),
            "rank_pattern",
            "v(",
        ),
        ("alpha_pattern", json!({"*v": 2}), "alpha_pattern", "*v"),
    ];
    for (key, value, reported, pattern) in cases {
        let text = config_with(key, value);
        let err = config_error(&text);
        assert!(
            matches!(&err, PeftIoError::InvalidPattern { path, key: k, pattern: p, .. }
                if path == Path::new(CONFIG_FILE) && k == reported && p == pattern),
            "{text}: {err}"
        );
        assert_mentions(&err, &[CONFIG_FILE, reported, pattern]);
    }
    let scratch = Scratch::new("regex");
    let dir = scratch.copy("regex", "adapter");
    edit_config(&dir, |c| {
        c.insert("target_modules".into(), json!(".*decoder.*\\.(k|wi"));
    });
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::InvalidPattern { path, key, .. } if path == &dir.join(CONFIG_FILE) && key == "target_modules"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Tensors that do not fit the model or the config
// ---------------------------------------------------------------------------------------------

#[test]
fn a_missing_lora_a_or_lora_b_is_a_missing_tensor() {
    let scratch = Scratch::new("missing");
    for suffix in ["lora_A.weight", "lora_B.weight"] {
        let dir = scratch.copy("list_qv", suffix);
        let mut tensors = read_tensors(&dir);
        tensors.remove(&key(Q0, suffix)).unwrap();
        write_tensors(&dir, &tensors);
        let err = load_error(&dir);
        assert!(
            matches!(&err, PeftIoError::MissingTensor { path, module, key: k }
                if path == &dir.join(WEIGHTS_FILE) && module == Q0 && k == &key(Q0, suffix)),
            "{err}"
        );
        assert_mentions(&err, &[WEIGHTS_FILE, Q0, suffix]);
    }
    // A targeted module with no tensor at all.
    let dir = scratch.copy("list_qv", "both");
    let mut tensors = read_tensors(&dir);
    tensors.retain(|k, _| !k.contains(Q0));
    write_tensors(&dir, &tensors);
    assert!(matches!(
        load_error(&dir),
        PeftIoError::MissingTensor { module, .. } if module == Q0
    ));
}

#[test]
fn tensors_that_do_not_fit_the_base_layer_are_shape_mismatches() {
    let scratch = Scratch::new("shape");
    // list_qv: r = 4, q is Linear(8, 8): A [4, 8], B [8, 4].
    let cases = [
        ("lora_A.weight", vec![4, 7], vec![4, 8]),
        ("lora_A.weight", vec![8, 4], vec![4, 8]),
        ("lora_A.weight", vec![32], vec![4, 8]),
        ("lora_B.weight", vec![9, 4], vec![8, 4]),
        ("lora_B.weight", vec![8, 4, 1], vec![8, 4]),
    ];
    for (i, (suffix, shape, expected)) in cases.into_iter().enumerate() {
        let dir = scratch.copy("list_qv", &format!("case{i}"));
        let mut tensors = read_tensors(&dir);
        tensors.insert(key(Q0, suffix), host(&shape, 0.5));
        write_tensors(&dir, &tensors);
        let err = load_error(&dir);
        assert!(
            matches!(&err, PeftIoError::ShapeMismatch { path, key: k, expected: e, found }
                if path == &dir.join(WEIGHTS_FILE) && k == &key(Q0, suffix) && e == &expected && found == &shape),
            "{err}"
        );
        assert_mentions(&err, &[WEIGHTS_FILE, &key(Q0, suffix)]);
    }
}

#[test]
fn a_file_rank_other_than_the_config_rank_is_a_shape_mismatch() {
    let scratch = Scratch::new("rank");
    // The file has r = 4; the config says 2.
    let dir = scratch.copy("list_qv", "r");
    edit_config(&dir, |c| {
        c.insert("r".into(), json!(2));
    });
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::ShapeMismatch { key: k, expected, found, .. }
            if k == &key(Q0, "lora_A.weight") && expected == &[2, 8] && found == &[4, 8]),
        "{err}"
    );
    // A rank_pattern entry that does not match the file.
    let dir = scratch.copy("list_qv", "rank_pattern");
    let v1 = "decoder.block.1.layer.0.SelfAttention.v";
    edit_config(&dir, |c| {
        c.insert("rank_pattern".into(), json!({ v1: 3 }));
    });
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::ShapeMismatch { key: k, expected, found, .. }
            if k == &key(v1, "lora_A.weight") && expected == &[3, 8] && found == &[4, 8]),
        "{err}"
    );
}

#[test]
fn a_target_that_matches_no_layer_is_target_not_found() {
    let scratch = Scratch::new("target");
    let dir = scratch.copy("list_qv", "names");
    edit_config(&dir, |c| {
        c.insert("target_modules".into(), json!(["q", "query", "v"]));
    });
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::TargetNotFound { target, available } if target == "query" && available.contains(Q0)),
        "{err}"
    );
    assert_mentions(&err, &["`query`", "25 in all"]);
    let dir = scratch.copy("regex", "regex");
    edit_config(&dir, |c| {
        c.insert("target_modules".into(), json!(".*attn\\.(q|v)"));
    });
    assert!(matches!(
        load_error(&dir),
        PeftIoError::TargetNotFound { target, .. } if target == ".*attn\\.(q|v)"
    ));
    // inject_adapter checks the same.
    let config = AdapterConfig::from_json_str(
        r#"{"peft_type": "LORA", "target_modules": ["q_proj"]}"#,
        CONFIG_FILE.as_ref(),
    )
    .unwrap();
    let mut model = base_model();
    let err = inject_adapter(&mut model, &config, "default").unwrap_err();
    assert!(matches!(&err, PeftIoError::TargetNotFound { target, .. } if target == "q_proj"));
    // No target_modules and no architecture default.
    let config =
        AdapterConfig::from_json_str(r#"{"peft_type": "LORA"}"#, CONFIG_FILE.as_ref()).unwrap();
    let err = inject_adapter(&mut model, &config, "default").unwrap_err();
    assert!(matches!(&err, PeftIoError::TargetNotFound { .. }), "{err}");
}

#[test]
fn tensors_for_modules_that_are_not_targets_are_unexpected() {
    let scratch = Scratch::new("unexpected");
    let dir = scratch.copy("list_qv", "not-a-target");
    let mut tensors = read_tensors(&dir);
    tensors.insert(key(K0, "lora_A.weight"), host(&[4, 8], 0.1));
    tensors.insert(key(K0, "lora_B.weight"), host(&[8, 4], 0.1));
    write_tensors(&dir, &tensors);
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::UnexpectedTensor { path, key: k, reason }
            if path == &dir.join(WEIGHTS_FILE) && k == &key(K0, "lora_A.weight") && reason.contains("not a target")),
        "{err}"
    );
    assert_mentions(&err, &[WEIGHTS_FILE, K0]);
    // A key that is no LoRA tensor at all (a base weight).
    let dir = scratch.copy("list_qv", "base-weight");
    let mut tensors = read_tensors(&dir);
    tensors.insert(key(Q0, "weight"), host(&[8, 8], 0.1));
    write_tensors(&dir, &tensors);
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::UnexpectedTensor { key: k, reason, .. }
            if k == &key(Q0, "weight") && reason.contains("not a LoRA tensor")),
        "{err}"
    );
    // A base-layer bias for a layer without bias.
    let dir = scratch.copy("list_qv", "bias");
    let mut tensors = read_tensors(&dir);
    tensors.insert(key(Q0, "base_layer.bias"), host(&[8], 0.1));
    write_tensors(&dir, &tensors);
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::UnexpectedTensor { key: k, reason, .. }
            if k == &key(Q0, "base_layer.bias") && reason.contains("has no bias")),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------------
// Adapter features the reader does not support
// ---------------------------------------------------------------------------------------------

#[test]
fn init_methods_that_change_the_base_model_are_unsupported() {
    let scratch = Scratch::new("init");
    for method in ["pissa", "pissa_niter_4", "olora", "loftq", "corda"] {
        let dir = scratch.copy("list_qv", method);
        edit_config(&dir, |c| {
            c.insert("init_lora_weights".into(), json!(method));
        });
        let err = load_error(&dir);
        assert!(
            matches!(&err, PeftIoError::Unsupported { path, feature } if path == &dir.join(CONFIG_FILE) && feature.contains(method)),
            "{err}"
        );
        // Injecting a fresh adapter with such a config is refused as well.
        let config = AdapterConfig::read(&dir.join(CONFIG_FILE)).unwrap();
        let mut model = base_model();
        let err = inject_adapter(&mut model, &config, "default").unwrap_err();
        assert!(matches!(&err, PeftIoError::Unsupported { .. }), "{err}");
    }
}

#[test]
fn lora_bias_is_unsupported() {
    let scratch = Scratch::new("lora-bias");
    let dir = scratch.copy("list_qv", "config");
    edit_config(&dir, |c| {
        c.insert("lora_bias".into(), json!(true));
    });
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::Unsupported { path, feature } if path == &dir.join(CONFIG_FILE) && feature.contains("lora_bias")),
        "{err}"
    );
    // A lora_B bias in the file although the config does not ask for one.
    let dir = scratch.copy("list_qv", "tensor");
    let mut tensors = read_tensors(&dir);
    tensors.insert(key(Q0, "lora_B.bias"), host(&[8], 0.1));
    write_tensors(&dir, &tensors);
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::Unsupported { path, feature }
            if path == &dir.join(WEIGHTS_FILE) && feature.contains(&key(Q0, "lora_B.bias"))),
        "{err}"
    );
}

#[test]
fn embedding_factors_on_a_linear_layer_are_refused() {
    let scratch = Scratch::new("embedding");
    let dir = scratch.copy("list_qv", "adapter");
    let mut tensors = read_tensors(&dir);
    let embedding = key(Q0, "lora_embedding_A");
    tensors.insert(embedding.clone(), host(&[4, 8], 0.1));
    write_tensors(&dir, &tensors);
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::UnexpectedTensor { path, key, reason }
            if path == &dir.join(WEIGHTS_FILE) && key == &embedding && reason.contains("a linear layer")),
        "{err}"
    );
}

#[test]
fn embedding_factors_for_a_module_outside_the_targets_are_refused() {
    let scratch = Scratch::new("embedding_module");
    let dir = scratch.copy("list_qv", "adapter");
    let mut tensors = read_tensors(&dir);
    let embedding = key("shared", "lora_embedding_A");
    tensors.insert(embedding.clone(), host(&[4, 32], 0.1));
    write_tensors(&dir, &tensors);
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::UnexpectedTensor { path, key, reason }
            if path == &dir.join(WEIGHTS_FILE) && key == &embedding && reason.contains("`shared`")),
        "{err}"
    );
}

/// `list_qv` saving `lm_head` whole, with `edit` applied to its weights.
fn saving_the_head(
    name: &str,
    edit: impl FnOnce(&mut BTreeMap<String, HostTensor>),
) -> (Scratch, PathBuf) {
    let scratch = Scratch::new(name);
    let dir = scratch.copy("list_qv", "adapter");
    edit_config(&dir, |c| {
        c.insert("modules_to_save".into(), json!(["lm_head"]));
    });
    let mut tensors = read_tensors(&dir);
    tensors.insert(key("lm_head", "weight"), host(&[12, 8], 0.1));
    edit(&mut tensors);
    write_tensors(&dir, &tensors);
    (scratch, dir)
}

#[test]
fn a_module_saved_whole_loads_as_a_copy() {
    let (_scratch, dir) = saving_the_head("modules-to-save", |_| {});
    let mut model = base_model();
    load_adapter(&mut model, &dir, "default").unwrap();
    let copy = model
        .lm_head
        .module_copy("default")
        .expect("a copy of lm_head");
    assert_eq!(copy.layer.weight.dims(), [8, 12]);
    assert!(model.lm_head.adapters.is_empty());
}

#[test]
fn a_module_saved_whole_without_its_weight_is_refused() {
    let (_scratch, dir) = saving_the_head("modules-to-save-missing", |t| {
        t.remove(&key("lm_head", "weight"));
    });
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::MissingTensor { key: k, .. } if k == &key("lm_head", "weight")),
        "{err}"
    );
}

#[test]
fn a_module_saved_whole_of_another_shape_is_refused() {
    let (_scratch, dir) = saving_the_head("modules-to-save-shape", |t| {
        t.insert(key("lm_head", "weight"), host(&[8, 12], 0.1));
    });
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::ShapeMismatch { key: k, expected, .. }
            if k == &key("lm_head", "weight") && expected == &[12, 8]),
        "{err}"
    );
}

#[test]
fn modules_to_save_naming_no_layer_is_refused_by_name() {
    let scratch = Scratch::new("modules-to-save-norm");
    let dir = scratch.copy("list_qv", "adapter");
    edit_config(&dir, |c| {
        c.insert("modules_to_save".into(), json!(["final_layer_norm"]));
    });
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::Unsupported { feature, .. }
            if feature.contains("modules_to_save") && feature.contains("`final_layer_norm`")),
        "{err}"
    );
}

#[test]
fn dora_magnitudes_must_match_use_dora() {
    let scratch = Scratch::new("dora");
    // A magnitude although `use_dora` is false.
    let dir = scratch.copy("list_qv", "magnitude-without-dora");
    let mut tensors = read_tensors(&dir);
    tensors.insert(key(Q0, "lora_magnitude_vector"), host(&[8], 1.0));
    write_tensors(&dir, &tensors);
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::UnexpectedTensor { key: k, reason, .. }
            if k == &key(Q0, "lora_magnitude_vector") && reason.contains("use_dora")),
        "{err}"
    );
    // `use_dora` without magnitudes.
    let dir = scratch.copy("list_qv", "dora-without-magnitude");
    edit_config(&dir, |c| {
        c.insert("use_dora".into(), json!(true));
    });
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::MissingTensor { module, key: k, .. }
            if module == Q0 && k == &key(Q0, "lora_magnitude_vector")),
        "{err}"
    );
    // One magnitude missing from the DoRA fixture.
    let dir = scratch.copy("dora", "one-missing");
    let mut tensors = read_tensors(&dir);
    tensors.remove(&key(Q0, "lora_magnitude_vector")).unwrap();
    write_tensors(&dir, &tensors);
    assert!(matches!(
        load_error(&dir),
        PeftIoError::MissingTensor { module, .. } if module == Q0
    ));
    // A magnitude of the wrong length.
    let dir = scratch.copy("dora", "wrong-length");
    let mut tensors = read_tensors(&dir);
    tensors.insert(key(Q0, "lora_magnitude_vector"), host(&[7], 1.0));
    write_tensors(&dir, &tensors);
    assert!(matches!(
        load_error(&dir),
        PeftIoError::ShapeMismatch { expected, found, .. } if expected == [8] && found == [7]
    ));
}

// ---------------------------------------------------------------------------------------------
// Corrupt legacy adapter_model.bin
// ---------------------------------------------------------------------------------------------

/// A zip archive of stored entries, laid out as `torch.save` writes it (CRCs are left zero:
/// the reader does not check them). `method` is the compression method of every entry.
fn zip(entries: &[(&str, &[u8])], method: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let mut directory = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let common = |out: &mut Vec<u8>| {
            out.extend_from_slice(&20u16.to_le_bytes()); // version needed
            out.extend_from_slice(&0u16.to_le_bytes()); // flags
            out.extend_from_slice(&method.to_le_bytes());
            out.extend_from_slice(&[0; 4]); // time, date
            out.extend_from_slice(&[0; 4]); // crc
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes()); // extra
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        directory.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        directory.extend_from_slice(&20u16.to_le_bytes()); // version made by
        common(&mut directory);
        directory.extend_from_slice(&[0; 10]); // comment length, disk, attributes
        directory.extend_from_slice(&offset.to_le_bytes());
        directory.extend_from_slice(name.as_bytes());
    }
    let start = out.len() as u32;
    out.extend_from_slice(&directory);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]); // disk numbers
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(directory.len() as u32).to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment
    out
}

/// Pickle `LONG1` of 8 bytes.
fn long(n: i64) -> Vec<u8> {
    let mut bytes = vec![0x8a, 8];
    bytes.extend_from_slice(&n.to_le_bytes());
    bytes
}

/// Pickle `BINUNICODE`.
fn unicode(text: &str) -> Vec<u8> {
    let mut bytes = vec![b'X'];
    bytes.extend_from_slice(&(text.len() as u32).to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    bytes
}

/// The pickle `torch.save({key: tensor})` writes for a tensor on storage `"0"`.
fn tensor_pickle(
    key: &str,
    storage_type: &str,
    offset: i64,
    size: &[i64],
    stride: &[i64],
) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'('];
    p.extend(unicode(key));
    p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((");
    p.extend(unicode("storage"));
    p.extend_from_slice(format!("ctorch\n{storage_type}\n").as_bytes());
    p.extend(unicode("0"));
    p.extend(unicode("cpu"));
    p.extend(long(4));
    p.extend_from_slice(b"tQ");
    p.extend(long(offset));
    for dims in [size, stride] {
        p.push(b'(');
        for d in dims {
            p.extend(long(*d));
        }
        p.push(b't');
    }
    p.push(0x89); // requires_grad = False
    p.extend_from_slice(b"ccollections\nOrderedDict\n)Rt");
    p.extend_from_slice(b"Ru.");
    p
}

/// A `torch.save` archive with `pickle` and storage `"0"`.
fn torch_archive(pickle: &[u8], storage: &[u8]) -> Vec<u8> {
    zip(
        &[("archive/data.pkl", pickle), ("archive/data/0", storage)],
        0,
    )
}

#[track_caller]
fn torch_error(bytes: &[u8]) -> String {
    match parse_torch_bytes(bytes) {
        Err(message) => message,
        Ok(tensors) => panic!("expected an error, read {:?}", tensors.keys()),
    }
}

#[test]
fn the_handmade_archives_are_read() {
    // The builders above make archives the reader accepts, so the errors below are about what
    // each test breaks.
    let storage: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let bytes = torch_archive(
        &tensor_pickle("w", "FloatStorage", 0, &[2, 2], &[1, 2]),
        &storage,
    );
    let tensors = parse_torch_bytes(&bytes).unwrap();
    assert_eq!(tensors["w"].shape, [2, 2]);
    assert_eq!(tensors["w"].values, [1.0, 3.0, 2.0, 4.0]);
}

#[test]
fn a_truncated_adapter_model_bin_is_a_pickle_error_naming_the_file() {
    let scratch = Scratch::new("truncated-bin");
    let dir = scratch.copy("old_peft", "adapter");
    let bytes = std::fs::read(dir.join(LEGACY_WEIGHTS_FILE)).unwrap();
    for cut in [
        0,
        10,
        21,
        bytes.len() / 2,
        bytes.len() - 30,
        bytes.len() - 1,
    ] {
        std::fs::write(dir.join(LEGACY_WEIGHTS_FILE), &bytes[..cut]).unwrap();
        let err = load_error(&dir);
        assert!(
            matches!(&err, PeftIoError::Pickle { path, .. } if path == &dir.join(LEGACY_WEIGHTS_FILE)),
            "cut at {cut}: {err}"
        );
        assert_mentions(&err, &[LEGACY_WEIGHTS_FILE]);
    }
    // The central directory survives, the data before it does not: entries run past the end.
    let end = bytes.len() - 22;
    let directory = u32::from_le_bytes(bytes[end + 16..end + 20].try_into().unwrap()) as usize;
    let mut shifted = bytes[directory..].to_vec();
    let at = shifted.len() - 22 + 16;
    shifted[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    torch_error(&shifted);
}

#[test]
fn a_bin_holding_the_wrong_pickle_is_a_pickle_error() {
    let storage = [0u8; 16];
    let float = tensor_pickle("w", "FloatStorage", 0, &[2, 2], &[2, 1]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // A list instead of a dict.
        (b"\x80\x02]q\x00.".to_vec(), "does not hold a dict"),
        // An unknown opcode.
        (b"\x80\x02}\xff.".to_vec(), "opcode 0xff"),
        // No STOP.
        (b"\x80\x02}(".to_vec(), "truncated pickle"),
        // Cut in the middle.
        (float[..float.len() / 2].to_vec(), "truncated"),
        // STOP on an empty stack.
        (b"\x80\x02.".to_vec(), "stack underflow"),
        // SETITEMS without a mark.
        (b"\x80\x02}u.".to_vec(), "mark"),
        // A key that is not a string.
        (b"\x80\x02}K\x01K\x02s.".to_vec(), "not a string"),
        // A value that is not a tensor.
        (b"\x80\x02}X\x01\x00\x00\x00wK\x02s.".to_vec(), "tensor `w`"),
        // A tensor of another storage type.
        (
            tensor_pickle("w", "LongStorage", 0, &[2], &[1]),
            "LongStorage",
        ),
        // A non-UTF-8 string.
        (b"\x80\x02}X\x01\x00\x00\x00\xffK\x02s.".to_vec(), "UTF-8"),
    ];
    for (pickle, expected) in cases {
        let message = torch_error(&torch_archive(&pickle, &storage));
        assert!(message.contains(expected), "{expected}: {message}");
    }
    // An archive without data.pkl, or with a compressed entry, or a missing storage.
    let message = torch_error(&zip(&[("archive/data/0", &storage)], 0));
    assert!(message.contains("data.pkl"), "{message}");
    let message = torch_error(&zip(&[("archive/data.pkl", &float)], 8));
    assert!(message.contains("compressed"), "{message}");
    let message = torch_error(&zip(&[("archive/data.pkl", &float)], 0));
    assert!(message.contains("archive/data/0"), "{message}");
    // Through the directory.
    let scratch = Scratch::new("wrong-pickle");
    let dir = scratch.copy("old_peft", "adapter");
    std::fs::write(
        dir.join(LEGACY_WEIGHTS_FILE),
        torch_archive(b"\x80\x02]q\x00.", &storage),
    )
    .unwrap();
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::Pickle { path, message } if path == &dir.join(LEGACY_WEIGHTS_FILE) && message.contains("dict")),
        "{err}"
    );
}

#[test]
fn hostile_tensor_shapes_in_a_bin_are_rejected() {
    // Storage "0" holds 4 floats.
    let storage = [0u8; 16];
    let cases: [(i64, &[i64], &[i64], &str); 7] = [
        // The element count overflows.
        (0, &[1 << 62, 4], &[4, 1], "overflow"),
        (0, &[1 << 40, 1 << 40], &[0, 0], "overflow"),
        // Far more elements than the storage holds, all on one element (stride 0).
        (0, &[1 << 40], &[0], "storage"),
        // Strides that reach past the storage, or overflow.
        (0, &[2, 2], &[1 << 62, 1], "storage"),
        (0, &[3], &[i64::MAX], "storage"),
        (i64::MAX, &[1], &[1], "storage"),
        // Negative sizes.
        (0, &[-1], &[1], "negative"),
    ];
    for (offset, size, stride, expected) in cases {
        let pickle = tensor_pickle("w", "FloatStorage", offset, size, stride);
        let message = torch_error(&torch_archive(&pickle, &storage));
        assert!(
            message.contains("tensor `w`") && message.contains(expected),
            "{size:?} {stride:?}: {message}"
        );
    }
}

#[test]
fn pickle_bombs_are_rejected() {
    let storage = [0u8; 16];
    // 200 000 nested one-element tuples.
    let mut deep = b"\x80\x02)".to_vec();
    deep.extend(std::iter::repeat_n(0x85u8, 200_000));
    deep.push(b'.');
    let message = torch_error(&torch_archive(&deep, &storage));
    assert!(message.contains("nest"), "{message}");
    // A value that doubles in size with every memo copy: 2^64 nodes.
    let mut doubling = b"\x80\x02]q\x00".to_vec();
    for _ in 0..64 {
        doubling.extend_from_slice(b"h\x00h\x00\x86q\x00");
    }
    doubling.push(b'.');
    let message = torch_error(&torch_archive(&doubling, &storage));
    assert!(message.contains("memo"), "{message}");
}

// ---------------------------------------------------------------------------------------------
// Saving
// ---------------------------------------------------------------------------------------------

fn file_names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The base model with list_qv's adapter, and its config.
fn model_with_adapter() -> (common::Tiny<common::Cpu>, AdapterConfig) {
    let mut model = base_model();
    let config = load_adapter(&mut model, &fixtures().join("list_qv"), "default").unwrap();
    (model, config)
}

#[test]
fn a_save_that_fails_midway_keeps_the_previous_adapter() {
    let scratch = Scratch::new("save-fails");
    let (model, config) = model_with_adapter();
    let target = scratch.copy("regex", "adapter");
    let previous_weights = std::fs::read(target.join(WEIGHTS_FILE)).unwrap();
    // The weights are renamed into place first; the config's place is taken by a non-empty
    // directory, so its rename fails after the weights were replaced.
    std::fs::remove_file(target.join(CONFIG_FILE)).unwrap();
    std::fs::create_dir(target.join(CONFIG_FILE)).unwrap();
    std::fs::write(target.join(CONFIG_FILE).join("keep"), b"x").unwrap();
    let names = file_names(&target);
    let err = save_adapter(&model, &target, "default", &config, SaveOptions::default())
        .expect_err("the config cannot replace a directory");
    assert!(
        matches!(&err, PeftIoError::File(HfFileError::Io { path, .. }) if path == &target.join(CONFIG_FILE)),
        "{err}"
    );
    assert_eq!(
        std::fs::read(target.join(WEIGHTS_FILE)).unwrap(),
        previous_weights,
        "the previous weights must be restored"
    );
    assert_eq!(file_names(&target), names, "no temporary file may remain");
    assert_eq!(
        std::fs::read(target.join(CONFIG_FILE).join("keep")).unwrap(),
        b"x"
    );

    // The weights' place taken by a directory: nothing is replaced.
    let target = scratch.copy("regex", "weights-blocked");
    let previous_config = std::fs::read(target.join(CONFIG_FILE)).unwrap();
    std::fs::remove_file(target.join(WEIGHTS_FILE)).unwrap();
    std::fs::create_dir(target.join(WEIGHTS_FILE)).unwrap();
    std::fs::write(target.join(WEIGHTS_FILE).join("keep"), b"x").unwrap();
    let names = file_names(&target);
    let err = save_adapter(&model, &target, "default", &config, SaveOptions::default())
        .expect_err("the weights cannot replace a directory");
    assert!(
        matches!(&err, PeftIoError::File(HfFileError::Io { path, .. }) if path == &target.join(WEIGHTS_FILE)),
        "{err}"
    );
    assert_eq!(
        std::fs::read(target.join(CONFIG_FILE)).unwrap(),
        previous_config
    );
    assert_eq!(file_names(&target), names, "no temporary file may remain");

    // A directory that cannot be created: a file stands at its place.
    let blocked = scratch.0.join("a-file");
    std::fs::write(&blocked, b"x").unwrap();
    let err =
        save_adapter(&model, &blocked, "default", &config, SaveOptions::default()).unwrap_err();
    assert!(
        matches!(&err, PeftIoError::File(HfFileError::Io { path, .. }) if path == &blocked),
        "{err}"
    );
    // An adapter the model does not have.
    let err = save_adapter(&model, &target, "other", &config, SaveOptions::default()).unwrap_err();
    assert!(matches!(&err, PeftIoError::Layer { .. }), "{err}");
    assert!(!target.join("other").exists());
}

#[test]
fn a_successful_save_leaves_no_temporary_files() {
    let scratch = Scratch::new("save-succeeds");
    let (model, config) = model_with_adapter();
    // Into a new directory.
    let fresh = scratch.0.join("fresh");
    save_adapter(&model, &fresh, "default", &config, SaveOptions::default()).unwrap();
    assert_eq!(
        file_names(&fresh),
        BTreeSet::from([CONFIG_FILE.to_string(), WEIGHTS_FILE.to_string()])
    );
    // Over an existing adapter: replaced, nothing else added.
    let target = scratch.copy("regex", "existing");
    let names = file_names(&target);
    save_adapter(&model, &target, "default", &config, SaveOptions::default()).unwrap();
    assert_eq!(file_names(&target), names);
    assert_eq!(
        std::fs::read(target.join(WEIGHTS_FILE)).unwrap(),
        std::fs::read(fresh.join(WEIGHTS_FILE)).unwrap()
    );
    assert_eq!(
        std::fs::read(target.join(CONFIG_FILE)).unwrap(),
        std::fs::read(fresh.join(CONFIG_FILE)).unwrap()
    );
    // Twice in a row.
    save_adapter(&model, &target, "default", &config, SaveOptions::default()).unwrap();
    assert_eq!(file_names(&target), names);
}

#[test]
fn trainable_token_indices_are_refused_by_name() {
    let scratch = Scratch::new("trainable-tokens");
    let dir = scratch.copy("list_qv", "adapter");
    edit_config(&dir, |c| {
        c.insert("trainable_token_indices".into(), json!([3, 5, 7]));
    });
    let err = load_error(&dir);
    assert!(
        matches!(&err, PeftIoError::Unsupported { feature, .. } if feature.contains("trainable_token_indices")),
        "{err}"
    );
}
