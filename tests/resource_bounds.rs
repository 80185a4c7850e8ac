//! Hostile sizes under a memory cap: each command runs with its address space limited to 2 GiB
//! (`ulimit -v`; a normal run of the embedded model needs well under 1 GiB) and must end with a
//! typed error or its normal output, never an allocation abort or a signal.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{first_records, model_dir, scratch, LORA_T5};

/// The cap, in KiB.
const ADDRESS_SPACE_KIB: u64 = 2 * 1024 * 1024;

/// Runs `lora-t5 args` with the address space capped.
fn capped(args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {ADDRESS_SPACE_KIB} && exec \"$0\" \"$@\""
        ))
        .arg(LORA_T5)
        .args(args)
        .output()
        .expect("sh runs")
}

/// The command ended by itself (no signal, no abort) with a refusal mentioning `parts`.
#[track_caller]
fn assert_refused(output: &Output, parts: &[&str]) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "not a typed refusal:\n{stderr}"
    );
    for part in parts {
        assert!(stderr.contains(part), "`{part}` not in:\n{stderr}");
    }
}

/// A copy of the embedded model in `dir/model` with its `config.json` edited by `edit`.
fn model_copy(
    dir: &Path,
    edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
) -> PathBuf {
    let from = PathBuf::from(model_dir());
    let to = dir.join("model");
    std::fs::create_dir_all(&to).unwrap();
    for file in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(from.join(file), to.join(file)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(from.join("config.json")).unwrap()).unwrap();
    edit(config.as_object_mut().unwrap());
    std::fs::write(to.join("config.json"), config.to_string()).unwrap();
    to
}

#[test]
fn the_capped_commands_run_normally_on_normal_inputs() {
    let output = capped(&["inspect", "--model", &model_dir()]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_head_width_whose_product_wraps_is_refused() {
    // 4 heads × (2^62 + 64) wraps to 4 · 64 = 256 = d_model, the embedded model's own width:
    // unchecked, it loaded and then crashed inside the product kernels.
    let dir = scratch("wrapping-heads");
    let model = model_copy(&dir, |c| {
        c.insert("d_kv".into(), serde_json::json!(4611686018427387968u64));
    });
    let output = capped(&["inspect", "--model", &model.display().to_string()]);
    assert_refused(&output, &["config.json", "num_heads × d_kv"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_safetensors_header_over_the_limit_is_refused_before_it_is_parsed() {
    // 200 MB of header holding 100 million numbers: as a JSON value, several GiB.
    let dir = scratch("huge-header");
    let model = model_copy(&dir, |_| {});
    let mut header = b"{\"x\":[".to_vec();
    header.extend(std::iter::repeat_n(*b"0,", 100_000_000).flatten());
    header.extend_from_slice(b"0]}");
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&header);
    drop(header);
    std::fs::write(model.join("model.safetensors"), bytes).unwrap();
    let output = capped(&["inspect", "--model", &model.display().to_string()]);
    assert_refused(&output, &["model.safetensors", "safetensors limit"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_ten_thousand_character_prompt_is_refused_not_allocated() {
    let prompt = "顶部搜索，底部导航，".repeat(1_000);
    let output = capped(&["generate", "--model", &model_dir(), "--prompt", &prompt]);
    assert_refused(&output, &["prompt 1", "--max-source-len"]);
}

#[test]
fn a_150_mb_training_line_is_cut_before_tokenization() {
    let dir = scratch("huge-line");
    let train = PathBuf::from(first_records("heldout_train.jsonl", 4, &dir));
    let huge = serde_json::json!({
        "instruction": "顶部搜索，底部导航，".repeat(5_000_000),
        "output_json_minified": "{}",
    });
    let mut text = std::fs::read_to_string(&train).unwrap();
    text.push_str(&huge.to_string());
    text.push('\n');
    drop(huge);
    std::fs::write(&train, text).unwrap();
    let out = dir.join("run").display().to_string();
    let output = capped(&[
        "train",
        "--model",
        &model_dir(),
        "--train",
        &train.display().to_string(),
        "--valid",
        &first_records("heldout_valid.jsonl", 2, &dir),
        "--out",
        &out,
        "--max-steps",
        "1",
        "--r",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
