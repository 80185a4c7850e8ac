//! `lora-t5 train` killed (SIGKILL) in the middle, then resumed with `--resume`, writes what
//! the uninterrupted run writes: the same `final/` and `best/` adapters byte for byte, the same
//! `metrics.jsonl` lines (but their timing) with no step twice, and the same trainer state.
//!
//! Two ways of killing: at each rename the uninterrupted run makes (every file the trainer
//! commits, inside each save), with strace's syscall fault injection where strace can trace;
//! and at moments spread over the run's wall time, everywhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::{first_records, run_ok, scratch, LORA_T5};

/// The training command into `out`: 6 steps, a checkpoint and an evaluation every 2.
fn train_args(dir: &Path, out: &Path) -> Vec<String> {
    let train = first_records("heldout_train.jsonl", 24, dir);
    let valid = first_records("heldout_valid.jsonl", 4, dir);
    [
        "train",
        "--model",
        &common::model_dir(),
        "--train",
        &train,
        "--valid",
        &valid,
        "--out",
        &out.display().to_string(),
        "--max-steps",
        "6",
        "--save-every",
        "2",
        "--eval-every",
        "2",
        "--batch-size",
        "4",
        "--r",
        "2",
        "--learning-rate",
        "3e-2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// What a run leaves that must not depend on an interruption.
#[derive(Debug, PartialEq)]
struct Outputs {
    final_adapter: Vec<u8>,
    best_adapter: Vec<u8>,
    adapter_config: Vec<u8>,
    /// `metrics.jsonl` without `tokens_per_second`.
    metrics: Vec<serde_json::Value>,
    /// The last checkpoint's `trainer_state.json` without timing and parameter ids.
    state: serde_json::Value,
}

fn without_timing(mut entry: serde_json::Value) -> serde_json::Value {
    if let Some(fields) = entry.as_object_mut() {
        fields.remove("tokens_per_second");
    }
    entry
}

fn outputs(out: &Path) -> Outputs {
    let read = |path: PathBuf| std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let metrics = String::from_utf8(read(out.join("metrics.jsonl"))).unwrap();
    let mut state: serde_json::Value =
        serde_json::from_slice(&read(out.join("checkpoint-6/trainer_state.json"))).unwrap();
    let history = state["history"].as_array().cloned().unwrap_or_default();
    state["history"] = history.into_iter().map(without_timing).collect();
    // Burn draws parameter ids at random in each process; the checkpoint maps them to module
    // paths only to reattach the optimizer state.
    state["param_ids"] = serde_json::Value::Null;
    Outputs {
        final_adapter: read(out.join("final/adapter_model.safetensors")),
        best_adapter: read(out.join("best/adapter_model.safetensors")),
        adapter_config: read(out.join("final/adapter_config.json")),
        metrics: metrics
            .lines()
            .map(|l| without_timing(serde_json::from_str(l).unwrap()))
            .collect(),
        state,
    }
}

/// The uninterrupted run's outputs, in `dir/reference`.
fn reference(dir: &Path) -> Outputs {
    let out = dir.join("reference");
    let args = train_args(dir, &out);
    run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    outputs(&out)
}

/// Resumes the killed run in `out` to its end and checks it wrote what `expected` holds.
#[track_caller]
fn assert_resumes_to(dir: &Path, out: &Path, expected: &Outputs, killed_at: &str) {
    let mut args = train_args(dir, out);
    args.push("--resume".into());
    run_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let got = outputs(out);
    assert_eq!(
        got.final_adapter, expected.final_adapter,
        "final/ after a kill {killed_at}"
    );
    assert_eq!(
        got.best_adapter, expected.best_adapter,
        "best/ after a kill {killed_at}"
    );
    assert_eq!(got.adapter_config, expected.adapter_config, "{killed_at}");
    assert_eq!(
        got.metrics, expected.metrics,
        "metrics.jsonl after a kill {killed_at}"
    );
    assert_eq!(
        got.state, expected.state,
        "trainer state after a kill {killed_at}"
    );
}

/// Whether strace can trace a child here (it is absent, or ptrace is not allowed, in some
/// containers).
fn strace_works() -> bool {
    Command::new("strace")
        .args(["-f", "-o", "/dev/null", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

const RENAMES: &str = "rename,renameat,renameat2";

#[test]
fn training_killed_at_each_rename_resumes_to_the_uninterrupted_outputs() {
    if !strace_works() {
        eprintln!("strace cannot trace here: the kills at spread-out moments still run");
        return;
    }
    let dir = scratch("crash-renames");
    let expected = reference(&dir);
    // How many renames the uninterrupted run makes (all on its main thread).
    let counted = dir.join("counted");
    let trace = dir.join("renames.txt");
    let status = Command::new("strace")
        .args([
            "-f",
            "-o",
            &trace.display().to_string(),
            "-e",
            &format!("trace={RENAMES}"),
        ])
        .arg(LORA_T5)
        .args(train_args(&dir, &counted))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let renames = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .filter(|l| l.contains("rename") && !l.contains("resumed>"))
        .count();
    assert!(renames >= 10, "only {renames} renames traced");
    for n in 1..=renames {
        let out = dir.join(format!("killed-{n}"));
        let status = Command::new("strace")
            .args(["-f", "-o", "/dev/null", "-e", &format!("trace={RENAMES}")])
            .args(["-e", &format!("inject={RENAMES}:signal=KILL:when={n}")])
            .arg(LORA_T5)
            .args(train_args(&dir, &out))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(!status.success(), "the run was not killed at rename {n}");
        assert_resumes_to(
            &dir,
            &out,
            &expected,
            &format!("at rename {n} of {renames}"),
        );
        let _ = std::fs::remove_dir_all(&out);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn training_killed_at_spread_out_moments_resumes_to_the_uninterrupted_outputs() {
    let dir = scratch("crash-moments");
    let started = Instant::now();
    let expected = reference(&dir);
    let wall = started.elapsed();
    for k in 1..=5u32 {
        let out = dir.join(format!("killed-{k}"));
        let mut child = Command::new(LORA_T5)
            .args(train_args(&dir, &out))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(wall * k / 6);
        let _ = child.kill();
        let _ = child.wait();
        let moment = format!("at {:?} of {wall:?}", wall * k / 6);
        assert_resumes_to(&dir, &out, &expected, &moment);
        let _ = std::fs::remove_dir_all(&out);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
