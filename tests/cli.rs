//! The `lora-t5` command-line tool end to end on the embedded base model: train a few steps,
//! generate and evaluate with the adapter (also with int8 base weights), merge, sweep, inspect,
//! and a typed error for a missing file.

mod common;

use std::path::{Path, PathBuf};

use common::{data, first_records, lora_t5, model_dir, repository, run_ok, scratch};

#[test]
fn train_generate_eval_int8_merge_and_inspect() {
    let dir = scratch("train");
    let out = dir.join("run");
    let out_arg = out.display().to_string();
    let model = model_dir();
    let train = first_records("heldout_train.jsonl", 32, &dir);
    let valid = first_records("heldout_valid.jsonl", 8, &dir);
    let train_args = |out: &str| {
        run_ok(&[
            "train",
            "--model",
            &model,
            "--train",
            &train,
            "--valid",
            &valid,
            "--out",
            out,
            "--max-steps",
            "3",
            "--r",
            "4",
        ])
    };
    let stdout = train_args(&out_arg);
    assert!(stdout.contains("trainable params: "), "{stdout}");
    // The same `--out` again would mix two runs: refused, naming what is there.
    let refused = lora_t5(&[
        "train",
        "--model",
        &model,
        "--train",
        &train,
        "--out",
        &out_arg,
        "--max-steps",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success(),
        "a second run into {out_arg} was accepted"
    );
    assert!(
        stderr.contains("earlier run") && stderr.contains("overwrite_output_dir"),
        "{stderr}"
    );
    // The run is seeded (adapter initialisation, shuffling, dropout): a second run writes the
    // same adapter, byte for byte.
    let again = dir.join("again");
    train_args(&again.display().to_string());
    let weights = |run: &Path| std::fs::read(run.join("final/adapter_model.safetensors")).unwrap();
    assert_eq!(weights(&out), weights(&again), "two seeded runs differ");
    assert!(stdout.contains("best validation loss"), "{stdout}");
    let adapter = out.join("final");
    assert!(adapter.join("adapter_config.json").is_file());
    assert!(adapter.join("adapter_model.safetensors").is_file());
    assert!(out.join("metrics.jsonl").is_file() && out.join("loss.png").is_file());
    let adapter_arg = adapter.display().to_string();

    let generated = run_ok(&[
        "generate",
        "--model",
        &model,
        "--adapter",
        &adapter_arg,
        "--prompt",
        "做一个首页，顶部搜索，底部导航，风格用樱花粉",
        "--max-new-tokens",
        "24",
    ]);
    assert_eq!(generated.lines().count(), 1, "{generated}");
    assert!(!generated.trim().is_empty());

    let test = first_records("heldout_test.jsonl", 4, &dir);
    let eval_args = [
        "eval",
        "--model",
        &model,
        "--adapter",
        &adapter_arg,
        "--data",
        &test,
    ];
    let float = run_ok(&eval_args);
    let int8_output = lora_t5(&[&eval_args[..], &["--int8"]].concat());
    assert!(int8_output.status.success());
    let int8 = String::from_utf8_lossy(&int8_output.stdout);
    let note = String::from_utf8_lossy(&int8_output.stderr);
    for report in [float.as_str(), &int8] {
        for metric in [
            "exact_match",
            "bleu",
            "rouge_l",
            "json_valid_rate",
            "schema_valid_rate",
        ] {
            assert!(report.contains(metric), "{metric} missing:\n{report}");
        }
    }
    assert!(
        note.contains("int8: base weights of 54 linear layers quantized"),
        "{note}"
    );

    let merged = dir.join("merged");
    let merged_arg = merged.display().to_string();
    // A file of an earlier merge does not survive into the new one.
    std::fs::create_dir_all(&merged).unwrap();
    std::fs::write(merged.join("pytorch_model.bin"), b"stale").unwrap();
    let merge_report = run_ok(&[
        "merge",
        "--model",
        &model,
        "--adapter",
        &adapter_arg,
        "--out",
        &merged_arg,
    ]);
    // The merge checks itself on probe prompts before it writes anything.
    assert!(
        merge_report.contains("merged 18 layers") && merge_report.contains("differ by at most"),
        "{merge_report}"
    );
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(merged.join(file).is_file(), "{file} missing");
    }
    assert!(!merged.join("pytorch_model.bin").exists());
    assert_eq!(
        std::fs::read(merged.join("tokenizer.json")).unwrap(),
        std::fs::read(repository("models/uidsl-t5-small/tokenizer.json")).unwrap()
    );
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // The merged checkpoint generates what the base model with the adapter generates.
    let from_merged = run_ok(&[
        "generate",
        "--model",
        &merged_arg,
        "--prompt",
        "做一个首页，顶部搜索，底部导航，风格用樱花粉",
        "--max-new-tokens",
        "24",
    ]);
    assert_eq!(from_merged, generated);

    let inspected = run_ok(&["inspect", "--model", &model, "--adapter", &adapter_arg]);
    assert!(inspected.contains("\"d_model\": 256"), "{inspected}");
    assert!(inspected.contains("LoRA layers: 18 of 54"), "{inspected}");
    assert!(inspected.contains("trainable params: "), "{inspected}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sweep_prints_one_row_of_loss_and_metrics_per_run() {
    let dir = scratch("sweep");
    let train = first_records("heldout_train.jsonl", 16, &dir);
    let valid = first_records("heldout_valid.jsonl", 4, &dir);
    let out = dir.join("sweep").display().to_string();
    let stdout = run_ok(&[
        "sweep",
        "--model",
        &model_dir(),
        "--train",
        &train,
        "--valid",
        &valid,
        "--out",
        &out,
        "--max-steps",
        "1",
        "--ranks",
        "2,4",
        "--eval-limit",
        "2",
        "--eval-max-new-tokens",
        "16",
    ]);
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 3, "header and two runs:\n{stdout}");
    assert!(rows[0].contains("best eval loss") && rows[0].contains("BLEU"));
    for (row, r) in rows[1..].iter().zip(["2", "4"]) {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 11, "{row}");
        assert_eq!(cells[0], r);
        for cell in &cells[4..] {
            assert!(
                cell.parse::<f64>().is_ok(),
                "not a number: `{cell}` in {row}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn sweep_concurrent_trains_every_configuration_in_one_run() {
    let dir = scratch("sweep-concurrent");
    let train = first_records("heldout_train.jsonl", 16, &dir);
    let valid = first_records("heldout_valid.jsonl", 4, &dir);
    let out = dir.join("sweep");
    let out_text = out.display().to_string();
    let stdout = run_ok(&[
        "sweep",
        "--concurrent",
        "--model",
        &model_dir(),
        "--train",
        &train,
        "--valid",
        &valid,
        "--out",
        &out_text,
        "--max-steps",
        "2",
        "--ranks",
        "2,4",
        "--learning-rates",
        "1e-3,5e-3",
        "--eval-limit",
        "2",
        "--eval-max-new-tokens",
        "16",
    ]);
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ")).collect();
    assert_eq!(rows.len(), 5, "header and four runs:\n{stdout}");
    for (row, (r, lr)) in
        rows[1..]
            .iter()
            .zip([("2", "1e-3"), ("2", "5e-3"), ("4", "1e-3"), ("4", "5e-3")])
    {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!((cells[0], cells[3]), (r, lr), "{row}");
        assert_eq!(cells[5], "2", "best at the last step: {row}");
        assert!(cells[4].parse::<f64>().is_ok_and(f64::is_finite), "{row}");
    }
    // Each run logs its own lines and writes its own outputs.
    for run in ["run0", "run1", "run2", "run3"] {
        assert!(stdout.contains(&format!("{run}: step 2")), "{stdout}");
    }
    for folder in ["r2-a16-d0.05-lr0.001", "r4-a16-d0.05-lr0.005"] {
        let run = out.join(folder);
        for file in [
            "final/adapter_model.safetensors",
            "best/adapter_config.json",
            "metrics.jsonl",
            "loss.png",
        ] {
            assert!(run.join(file).is_file(), "{}", run.join(file).display());
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_missing_data_file_is_an_error_naming_it() {
    let missing = repository("data/uidsl/no-such-file.jsonl")
        .display()
        .to_string();
    let output = lora_t5(&["eval", "--model", &model_dir(), "--data", &missing]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with("error: ") && stderr.contains("no-such-file.jsonl"),
        "{stderr}"
    );
}

/// A data folder for `pretrain` with the first records of the three files it reads.
fn pretrain_data(dir: &Path) -> PathBuf {
    let folder = dir.join("data");
    std::fs::create_dir_all(&folder).unwrap();
    for (file, count) in [
        ("base_train.jsonl", 24),
        ("base_valid.jsonl", 4),
        ("heldout_train.jsonl", 8),
    ] {
        let text = std::fs::read_to_string(data(file)).unwrap();
        let lines: Vec<&str> = text.lines().take(count).collect();
        std::fs::write(folder.join(file), lines.join("\n") + "\n").unwrap();
    }
    folder
}

#[test]
fn pretrain_writes_a_loadable_model_and_the_same_one_for_the_same_seed() {
    let dir = scratch("pretrain");
    let folder = pretrain_data(&dir);
    let pretrain = |name: &str| {
        let out = dir.join(name);
        let stdout = run_ok(&[
            "pretrain",
            "--data",
            &folder.display().to_string(),
            "--out",
            &out.display().to_string(),
            "--run-dir",
            &dir.join(format!("{name}-run")).display().to_string(),
            "--vocab-size",
            "400",
            "--d-model",
            "16",
            "--heads",
            "2",
            "--d-ff",
            "32",
            "--layers",
            "1",
            "--epochs",
            "1",
            "--batch-size",
            "8",
            "--generated-train",
            "0",
        ]);
        assert!(stdout.contains("saved "), "{stdout}");
        out
    };
    let first = pretrain("first");
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        assert!(first.join(file).is_file(), "{file} missing");
    }
    let second = pretrain("second");
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        let same =
            std::fs::read(first.join(file)).unwrap() == std::fs::read(second.join(file)).unwrap();
        assert!(same, "{file} differs between two runs with the same seed");
    }
    // The written directory loads and evaluates through the same tool.
    let valid = folder.join("base_valid.jsonl").display().to_string();
    let report = run_ok(&[
        "eval",
        "--model",
        &first.display().to_string(),
        "--data",
        &valid,
        "--limit",
        "2",
        "--max-new-tokens",
        "8",
    ]);
    assert!(
        report.contains("| count              |      2 |"),
        "{report}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `lora-t5 args` and expects a refusal whose message mentions every part of `mentions`.
#[track_caller]
fn assert_refused(args: &[&str], mentions: &[&str]) {
    let output = lora_t5(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "lora-t5 {args:?} was accepted");
    assert!(!stderr.contains("panicked"), "{stderr}");
    for part in mentions {
        assert!(stderr.contains(part), "`{part}` not in:\n{stderr}");
    }
}

/// `train` with `extra` flags on paths that are never read (flags are checked first).
fn train_flags(extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["train", "--model", "m", "--train", "t.jsonl", "--out", "o"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn refused_train(extra: &[&str], mentions: &[&str]) {
    let args = train_flags(extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_refused(&args, mentions);
}

#[test]
fn an_alpha_of_nan_is_refused() {
    refused_train(&["--alpha", "NaN"], &["--lora-alpha", "NaN", "finite"]);
}

#[test]
fn a_max_grad_norm_of_nan_is_refused_not_read_as_no_clipping() {
    refused_train(&["--max-grad-norm", "NaN"], &["--max-grad-norm", "NaN"]);
}

#[test]
fn a_rank_beyond_the_bound_is_refused() {
    refused_train(&["--r", "1000000"], &["--r", "1000000", "65536"]);
}

#[test]
fn a_dropout_of_one_is_refused() {
    refused_train(&["--dropout", "1"], &["--lora-dropout", "[0, 1)"]);
}

#[test]
fn a_num_beams_near_usize_max_is_refused() {
    assert_refused(
        &[
            "generate",
            "--model",
            "m",
            "--prompt",
            "p",
            "--num-beams",
            "18446744073709551615",
        ],
        &["--num-beams", "1024"],
    );
}

#[test]
fn a_max_new_tokens_beyond_the_bound_is_refused() {
    assert_refused(
        &[
            "generate",
            "--model",
            "m",
            "--prompt",
            "p",
            "--max-new-tokens",
            "100000000",
        ],
        &["--max-new-tokens", "65536"],
    );
}

#[test]
fn a_temperature_of_zero_is_refused() {
    assert_refused(
        &[
            "generate",
            "--model",
            "m",
            "--prompt",
            "p",
            "--do-sample",
            "--temperature",
            "0",
        ],
        &["--temperature", "(0,"],
    );
}

#[test]
fn pretrain_with_zero_heads_is_refused() {
    assert_refused(&["pretrain", "--heads", "0"], &["--heads", "0"]);
}

#[test]
fn pretrain_with_a_batch_size_of_zero_is_refused() {
    assert_refused(
        &["pretrain", "--batch-size", "0"],
        &["--per-device-train-batch-size", "0"],
    );
}

#[test]
fn a_sweep_list_holding_nan_is_refused() {
    assert_refused(
        &[
            "sweep", "--model", "m", "--train", "t", "--out", "o", "--alphas", "16,NaN",
        ],
        &["--alphas", "NaN"],
    );
}

#[test]
fn training_with_a_max_target_len_of_one_runs() {
    let dir = scratch("target-len-one");
    let train = first_records("heldout_train.jsonl", 4, &dir);
    let valid = first_records("heldout_valid.jsonl", 2, &dir);
    let out = dir.join("run").display().to_string();
    let stdout = run_ok(&[
        "train",
        "--model",
        &model_dir(),
        "--train",
        &train,
        "--valid",
        &valid,
        "--out",
        &out,
        "--max-steps",
        "1",
        "--r",
        "2",
        "--max-target-len",
        "1",
    ]);
    assert!(stdout.contains("adapter in"), "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn generate_reads_prompt_only_jsonl_one_line_per_record() {
    let dir = scratch("prompts");
    let input = dir.join("prompts.jsonl");
    std::fs::write(
        &input,
        "{\"instruction\": \"顶部搜索，底部导航\"}\n{\"instruction\": \"两列商品卡\", \"id\": 7}\n",
    )
    .unwrap();
    let input = input.display().to_string();
    let stdout = run_ok(&[
        "generate",
        "--model",
        &model_dir(),
        "--input",
        &input,
        "--max-new-tokens",
        "8",
    ]);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_prompt_longer_than_max_source_len_is_refused_unless_truncated() {
    let prompt = "顶部搜索，底部导航，".repeat(2_000);
    let model = model_dir();
    let args = [
        "generate",
        "--model",
        &model,
        "--prompt",
        &prompt,
        "--max-new-tokens",
        "4",
    ];
    assert_refused(
        &args,
        &["prompt 1", "--max-source-len 512", "--truncate-source"],
    );
    let cut = run_ok(&[&args[..], &["--truncate-source"]].concat());
    assert_eq!(cut.lines().count(), 1, "{cut}");
}

/// The embedded model's files in a scratch directory, with `generation_config` as its
/// `generation_config.json`.
fn model_with_generation_config(name: &str, generation_config: &str) -> PathBuf {
    let dir = scratch(name);
    for file in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(Path::new(&model_dir()).join(file), dir.join(file)).unwrap();
    }
    std::fs::write(dir.join("generation_config.json"), generation_config).unwrap();
    dir
}

const PROMPT: &str = "顶部搜索，两列商品卡，底部导航";

#[test]
fn generate_streams_the_text_it_would_print() {
    let model = model_dir();
    let args = [
        "generate",
        "--model",
        &model,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "24",
    ];
    let printed = run_ok(&args);
    let streamed = run_ok(&[&args[..], &["--stream"]].concat());
    assert_eq!(streamed, printed);
    assert!(printed.trim().len() > 8, "{printed}");
}

#[test]
fn generate_prints_each_returned_sequence() {
    let model = model_dir();
    let stdout = run_ok(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "12",
        "--num-beams",
        "3",
        "--num-return-sequences",
        "2",
    ]);
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert_refused(
        &[
            "generate",
            "--model",
            &model,
            "--prompt",
            PROMPT,
            "--num-return-sequences",
            "2",
        ],
        &["greedy", "num_return_sequences"],
    );
}

#[test]
fn the_model_generation_config_json_gives_the_defaults_and_flags_override_it() {
    let dir = model_with_generation_config(
        "generation-config",
        r#"{"max_new_tokens": 5, "num_beams": 2, "eos_token_id": 1}"#,
    );
    let with_file = dir.display().to_string();
    let model = model_dir();
    let explicit = run_ok(&[
        "generate",
        "--model",
        &model,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "5",
        "--num-beams",
        "2",
    ]);
    assert_eq!(
        run_ok(&["generate", "--model", &with_file, "--prompt", PROMPT]),
        explicit
    );
    let longer = run_ok(&[
        "generate",
        "--model",
        &with_file,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "20",
    ]);
    assert_eq!(
        longer,
        run_ok(&[
            "generate",
            "--model",
            &model,
            "--prompt",
            PROMPT,
            "--max-new-tokens",
            "20",
            "--num-beams",
            "2"
        ])
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_unimplemented_option_in_generation_config_json_is_refused_naming_it() {
    let dir = model_with_generation_config("generation-config-bad", r#"{"num_beam_groups": 2}"#);
    let path = dir.display().to_string();
    assert_refused(
        &["generate", "--model", &path, "--prompt", PROMPT],
        &[
            "generation_config.json",
            "num_beam_groups",
            "not implemented",
        ],
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_stop_string_ends_the_output_at_the_token_that_completes_it() {
    let model = model_dir();
    let args = [
        "generate",
        "--model",
        &model,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "40",
    ];
    let plain = run_ok(&args);
    let stop = plain
        .chars()
        .filter(|c| c.is_ascii_punctuation())
        .nth(2)
        .expect("punctuation");
    let stop = stop.to_string();
    let stopped = run_ok(&[&args[..], &["--stop-string", &stop]].concat());
    let stopped = stopped.trim_end();
    assert!(
        stopped.len() < plain.trim_end().len(),
        "{stopped} of {plain}"
    );
    assert!(plain.starts_with(stopped), "{stopped} of {plain}");
    assert!(stopped.contains(&stop), "{stopped}");
}

#[test]
fn bad_words_are_not_generated() {
    let model = model_dir();
    let args = [
        "generate",
        "--model",
        &model,
        "--prompt",
        PROMPT,
        "--max-new-tokens",
        "40",
    ];
    let plain = run_ok(&args);
    // The output's first pieces: at the start of a text they tokenize as they do alone.
    let banned = "{\"page\":{\"name\":\"";
    assert!(plain.starts_with(banned), "{plain}");
    let without = run_ok(&[&args[..], &["--bad-words", banned]].concat());
    assert!(!without.starts_with(banned), "{banned}: {without}");
    assert_ne!(without, plain);
}

/// Trains a small adapter into `dir/<name>` and returns its `final/` directory.
fn small_adapter(dir: &Path, name: &str, rank: &str, seed: &str) -> String {
    let train = first_records("heldout_train.jsonl", 16, dir);
    let out = dir.join(name).display().to_string();
    run_ok(&[
        "train",
        "--model",
        &model_dir(),
        "--train",
        &train,
        "--out",
        &out,
        "--max-steps",
        "6",
        "--r",
        rank,
        "--seed",
        seed,
        "--learning-rate",
        "0.05",
    ]);
    dir.join(name).join("final").display().to_string()
}

#[test]
fn generate_routes_each_record_to_its_adapter() {
    let dir = scratch("routed");
    let (a, b) = (
        small_adapter(&dir, "a", "2", "1"),
        small_adapter(&dir, "b", "4", "2"),
    );
    let prompts = [
        "顶部搜索，两列商品卡",
        "底部导航，四个标签",
        "轮播图，商品列表",
    ];
    let input = dir.join("prompts.jsonl");
    std::fs::write(
        &input,
        format!(
            "{{\"instruction\": \"{}\", \"adapter\": \"a\"}}\n{{\"instruction\": \"{}\", \"adapter\": \"__base__\"}}\n{{\"instruction\": \"{}\"}}\n",
            prompts[0], prompts[1], prompts[2]
        ),
    )
    .unwrap();
    let model = model_dir();
    let (named_a, named_b) = (format!("a={a}"), format!("b={b}"));
    let input = input.display().to_string();
    let routed = run_ok(&[
        "generate",
        "--model",
        &model,
        "--adapter",
        &named_a,
        "--adapter",
        &named_b,
        "--input",
        &input,
        "--adapter-name",
        "b",
        "--max-new-tokens",
        "24",
    ]);
    let alone = |prompt: &str, adapter: Option<&str>| {
        let mut args = vec![
            "generate",
            "--model",
            &model,
            "--prompt",
            prompt,
            "--max-new-tokens",
            "24",
        ];
        if let Some(adapter) = adapter {
            args.extend(["--adapter", adapter]);
        }
        run_ok(&args)
    };
    let expected = [
        alone(prompts[0], Some(&a)),
        alone(prompts[1], None),
        alone(prompts[2], Some(&b)),
    ];
    assert_eq!(
        routed.lines().collect::<Vec<_>>(),
        expected.iter().map(|s| s.trim_end()).collect::<Vec<_>>()
    );
    assert_refused(
        &[
            "generate",
            "--model",
            &model,
            "--adapter",
            &named_a,
            "--prompt",
            "x",
            "--adapter-name",
            "nope",
        ],
        &["nope"],
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn train_reads_a_config_file_takes_the_short_aliases_and_writes_its_effective_configuration() {
    let dir = scratch("config");
    let model = model_dir();
    let train = first_records("heldout_train.jsonl", 16, &dir);
    let valid = first_records("heldout_valid.jsonl", 4, &dir);
    let config = dir.join("config.json");
    std::fs::write(
        &config,
        r#"{"r": 4, "lora_alpha": 8, "target_modules": ["q", "v"], "max_steps": 2,
            "per_device_train_batch_size": 4, "logging_steps": 1,
            "lr_scheduler_type": "cosine"}"#,
    )
    .unwrap();
    let out = |name: &str| dir.join(name).display().to_string();
    let common = [
        "train", "--model", &model, "--train", &train, "--valid", &valid,
    ];
    // From the file, with one value overridden on the command line.
    let first = out("first");
    let config_arg = config.display().to_string();
    run_ok(
        &[
            &common[..],
            &[
                "--config",
                &config_arg,
                "--output-dir",
                &first,
                "--lora-alpha",
                "16",
            ],
        ]
        .concat(),
    );
    let written = |run: &str| -> serde_json::Value {
        let path = Path::new(run).join("training_config.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let effective = written(&first);
    assert_eq!(effective["r"], 4);
    assert_eq!(
        effective["lora_alpha"].as_f64(),
        Some(16.0),
        "the command line wins"
    );
    assert_eq!(effective["target_modules"], "q,v");
    assert_eq!(effective["max_steps"], 2);
    assert_eq!(effective["per_device_train_batch_size"], 4);
    assert_eq!(effective["lr_scheduler_type"], "cosine");
    assert_eq!(effective["num_train_epochs"], 3, "defaults are written too");
    assert_eq!(effective["output_dir"], first.as_str());
    assert!(effective.get("config").is_none() && effective.get("resume").is_none());
    // The written configuration repeats the run.
    let again = out("again");
    let first_config = Path::new(&first).join("training_config.json");
    run_ok(
        &[
            &common[..],
            &[
                "--config",
                &first_config.display().to_string(),
                "--out",
                &again,
            ],
        ]
        .concat(),
    );
    // The short forms set the same fields.
    let aliased = out("aliased");
    run_ok(
        &[
            &common[..],
            &[
                "--out",
                &aliased,
                "--r",
                "4",
                "--alpha",
                "16",
                "--targets",
                "q,v",
                "--max-steps",
                "2",
                "--batch-size",
                "4",
                "--logging-steps",
                "1",
                "--schedule",
                "cosine",
            ],
        ]
        .concat(),
    );
    let weights =
        |run: &str| std::fs::read(Path::new(run).join("final/adapter_model.safetensors")).unwrap();
    for run in [&again, &aliased] {
        let mut config = written(run);
        assert_eq!(config["output_dir"], run.as_str());
        config["output_dir"] = effective["output_dir"].clone();
        assert_eq!(config, effective, "{run}");
        assert_eq!(weights(run), weights(&first), "{run}");
    }
    // A key that is no flag is refused, naming the file and the key.
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"lora_alhpa": 8}"#).unwrap();
    assert_refused(
        &[
            &common[..],
            &["--config", &bad.display().to_string(), "--out", &out("bad")],
        ]
        .concat(),
        &["bad.json", "`lora_alhpa`", "lora_alpha"],
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn threads_sizes_the_backend_pool() {
    let version = run_ok(&["--threads", "1", "--version"]);
    assert!(version.contains(" 1 thread "), "{version}");
    assert_refused(
        &["--threads", "0", "inspect", "--model", "m"],
        &["--threads", "0"],
    );
}
