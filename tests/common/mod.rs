//! What the command-line tests share: the repository's paths, scratch directories, and
//! running the `lora-t5` binary.

// Each test binary uses its own part of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A path inside the repository.
pub fn repository(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// The embedded base model.
pub fn model_dir() -> String {
    repository("models/uidsl-t5-small").display().to_string()
}

/// A file of the committed UI-DSL corpora.
pub fn data(file: &str) -> String {
    repository("data/uidsl").join(file).display().to_string()
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lora-t5-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The `lora-t5` binary cargo built for these tests.
pub const LORA_T5: &str = env!("CARGO_BIN_EXE_lora-t5");

/// Runs `lora-t5 args` to its end.
pub fn lora_t5(args: &[&str]) -> Output {
    Command::new(LORA_T5)
        .args(args)
        .output()
        .expect("the lora-t5 binary runs")
}

/// Runs `lora-t5 args` and returns its standard output; fails the test on a non-zero exit.
pub fn run_ok(args: &[&str]) -> String {
    let output = lora_t5(args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "lora-t5 {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    stdout
}

/// A JSONL file with the first `count` records of `file`.
pub fn first_records(file: &str, count: usize, dir: &Path) -> String {
    let text = std::fs::read_to_string(data(file)).unwrap();
    let path = dir.join(format!("first-{count}-{file}"));
    let lines: Vec<&str> = text.lines().take(count).collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path.display().to_string()
}
