//! The trainer end to end on a tiny T5: the loss falls, checkpoints resume exactly, the saved
//! adapter loads back, merging changes nothing, and full training resumes exactly too.
#![cfg(feature = "t5")]

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Int, Tensor, TensorData};
use lora_core::{LoraConfig, LoraModule};
use lora_peft_io::{inject_adapter, AdapterConfig, ModuleSelector};
use lora_t5::{FeedForwardKind, Seq2SeqInput, T5Config, T5ForConditionalGeneration};
use lora_train::data::{Seq2SeqCollator, TokenizedExample};
use lora_train::{
    DecayKind, TrainError, TrainEvent, Trainer, TrainerConfig, TrainerState, TrainingMode,
};

type Train = Autodiff<NdArray<f32>>;

/// The backend's random generator is process-wide (`Backend::seed`): the tests that depend on
/// seeded dropout take turns.
fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn model() -> T5ForConditionalGeneration<Train> {
    let config = T5Config {
        vocab_size: 32,
        d_model: 16,
        d_kv: 4,
        num_heads: 2,
        d_ff: 32,
        num_layers: 1,
        num_decoder_layers: 1,
        relative_attention_num_buckets: 8,
        relative_attention_max_distance: 16,
        feed_forward: FeedForwardKind::GATED_GELU,
        dropout_rate: 0.1,
        ..T5Config::default()
    };
    let device = Default::default();
    <Train as burn::tensor::backend::Backend>::seed(&device, 7);
    let model = T5ForConditionalGeneration::new(&config, &device);
    // Random weights are initialised lazily: materialise them all now, from this seed.
    let _ = burn::module::AutodiffModule::valid(&model);
    model
}

/// Copy task: the target repeats the source reversed.
fn data(count: usize, offset: u32) -> Vec<TokenizedExample> {
    (0..count as u32)
        .map(|i| {
            let body: Vec<u32> = (0..4).map(|j| 2 + (i * 7 + j * 3 + offset) % 28).collect();
            let mut source = body.clone();
            source.push(1);
            let mut target: Vec<u32> = body.into_iter().rev().collect();
            target.push(1);
            TokenizedExample { source, target }
        })
        .collect()
}

fn adapter_config() -> AdapterConfig {
    AdapterConfig::from_lora_config(
        &LoraConfig::new(4, 8.0).with_lora_dropout(0.1),
        ModuleSelector::Names(vec!["q".into(), "v".into(), "wi_0".into()]),
    )
    .unwrap()
}

fn trainer(dir: &str, max_steps: usize) -> Trainer {
    let output_dir =
        std::env::temp_dir().join(format!("lora-train-trainer-{dir}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&output_dir);
    Trainer {
        config: TrainerConfig {
            learning_rate: 3e-2,
            warmup_steps: 2,
            decay: DecayKind::Cosine,
            batch_size: 4,
            gradient_accumulation_steps: 2,
            max_grad_norm: Some(1.0),
            epochs: 100,
            max_steps: Some(max_steps),
            eval_every: 4,
            save_every: 4,
            log_every: 2,
            seed: 3,
            ..TrainerConfig::default()
        },
        output_dir,
        mode: TrainingMode::Adapter {
            name: "default".into(),
            config: adapter_config(),
        },
        collator: Seq2SeqCollator {
            max_source_len: 64,
            max_target_len: 64,
            pad_id: 0,
        },
    }
}

fn with_adapter() -> T5ForConditionalGeneration<Train> {
    let mut model = model();
    inject_adapter(&mut model, &adapter_config(), "default").unwrap();
    model
}

#[test]
fn loss_falls_checkpoints_resume_exactly_and_adapters_round_trip() {
    let _rng = rng_lock();
    let (train, valid) = (data(24, 0), data(8, 5));

    // Uninterrupted: 12 steps.
    let full = trainer("full", 12);
    let (mut logged, mut saved, mut bounds) = (Vec::new(), Vec::new(), Vec::new());
    let outcome = full
        .train_observed(
            with_adapter(),
            &train,
            &valid,
            false,
            &mut |event| match event {
                TrainEvent::Started {
                    total_steps,
                    start_step,
                } => bounds.push((*total_steps, *start_step)),
                TrainEvent::Logged { entry, history } => {
                    assert_eq!(history.last(), Some(*entry));
                    logged.push(entry.step);
                }
                TrainEvent::Saved { dir } => saved.push(dir.file_name().unwrap().to_owned()),
                TrainEvent::Finished => bounds.push((0, 0)),
            },
        )
        .unwrap();
    let history = &outcome.state.history;
    let first = history.first().unwrap().loss;
    let last = history.last().unwrap().loss;
    assert!(last < first * 0.9, "loss did not fall: {first} → {last}");
    assert_eq!(bounds, [(12, 0), (0, 0)]);
    assert_eq!(logged, history.iter().map(|e| e.step).collect::<Vec<_>>());
    for dir in [
        "checkpoint-4",
        "checkpoint-8",
        "checkpoint-12",
        "best",
        "final",
    ] {
        assert!(
            saved.iter().any(|s| s == dir),
            "{dir} not reported: {saved:?}"
        );
    }
    let lines = std::fs::read_to_string(full.output_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), history.len());
    assert!(full
        .output_dir
        .join("best/adapter_model.safetensors")
        .is_file());

    // Interrupted after 8 steps: only checkpoint-8 of the same run survives; a fresh model
    // resumes from it to step 12.
    let resumed = trainer("resumed", 12);
    copy_dir(
        &full.output_dir.join("checkpoint-8"),
        &resumed.output_dir.join("checkpoint-8"),
    );
    let outcome_resumed = resumed.train(with_adapter(), &train, &valid, true).unwrap();
    assert_same_losses(&outcome.state, &outcome_resumed.state);

    // The saved final adapter loads back into a fresh model and gives the same outputs; the
    // merged model agrees with the unmerged one.
    let trained = outcome.model;
    let mut reloaded = model();
    lora_peft_io::load_adapter(&mut reloaded, &full.output_dir.join("final"), "default").unwrap();
    let device = Default::default();
    let ids =
        Tensor::<Train, 2, Int>::from_data(TensorData::new(vec![3i64, 4, 5, 1], [1, 4]), &device);
    let mask = Tensor::<Train, 2, Int>::ones([1, 4], &device);
    let dec =
        Tensor::<Train, 2, Int>::from_data(TensorData::new(vec![0i64, 5, 4], [1, 3]), &device);
    let values = |m: &T5ForConditionalGeneration<Train>| {
        use burn::module::AutodiffModule;
        let inner = m.valid();
        inner
            .forward(
                Seq2SeqInput::new(ids.clone().inner(), dec.clone().inner())
                    .attention_mask(mask.clone().inner()),
            )
            .logits
            .into_data()
            .to_vec::<f32>()
            .unwrap()
    };
    let expected = values(&trained);
    let close = |got: Vec<f32>, what: &str| {
        let worst = got
            .iter()
            .zip(&expected)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(worst < 1e-4, "{what}: {worst}");
    };
    close(values(&reloaded), "reloaded");
    let mut merged = reloaded;
    merged.visit_lora_mut("", &mut |_, layer| {
        if !layer.adapters.is_empty() {
            layer.merge(&["default"]).unwrap();
        }
    });
    close(values(&merged), "merged");

    // `scripts/gen_t5_fixtures.py --check-trained-adapter DIR` loads what this writes with
    // transformers + PEFT and compares PEFT's logits with these.
    if let Some(dir) = std::env::var_os("LORA_T5_EXPORT_TRAINED_ADAPTER") {
        let dir = std::path::PathBuf::from(dir);
        burn::module::AutodiffModule::valid(&model())
            .save_pretrained(&dir.join("base"))
            .unwrap();
        copy_dir(&full.output_dir.join("final"), &dir.join("adapter"));
        let expected_json = serde_json::json!({
            "input_ids": [[3, 4, 5, 1]],
            "attention_mask": [[1, 1, 1, 1]],
            "decoder_input_ids": [[0, 5, 4]],
            "logits_shape": [1, 3, 32],
            "logits": expected,
        });
        std::fs::write(dir.join("expected.json"), expected_json.to_string()).unwrap();
    }
    for dir in [full.output_dir, resumed.output_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The resumed run logged the same steps with the same losses (within 1e-5) as the
/// uninterrupted one.
#[track_caller]
fn assert_same_losses(uninterrupted: &TrainerState, resumed: &TrainerState) {
    let losses = |state: &TrainerState| -> Vec<(usize, f64)> {
        state.history.iter().map(|e| (e.step, e.loss)).collect()
    };
    let (a, b) = (losses(uninterrupted), losses(resumed));
    assert_eq!(a.len(), b.len());
    for ((sa, la), (sb, lb)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert!(
            (la - lb).abs() < 1e-5,
            "step {sa}: {la} uninterrupted, {lb} resumed"
        );
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The log lines of `dir`'s `metrics.jsonl` without their timing (`tokens_per_second`).
fn logged_without_timing(dir: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|line| {
            let mut entry: serde_json::Value = serde_json::from_str(line).unwrap();
            entry.as_object_mut().unwrap().remove("tokens_per_second");
            entry
        })
        .collect()
}

/// A run whose validation loss is best early: a learning rate that overshoots after the
/// first evaluations, checkpoints every 3 steps and log lines every 2 (so a checkpoint falls
/// inside a log window).
fn overshooting(dir: &str) -> Trainer {
    let mut trainer = trainer(dir, 12);
    trainer.config.learning_rate = 0.5;
    trainer.config.warmup_steps = 0;
    trainer.config.decay = DecayKind::Constant;
    trainer.config.eval_every = 2;
    trainer.config.save_every = 3;
    trainer.config.log_every = 2;
    trainer
}

#[test]
fn a_resume_keeps_the_best_adapter_and_writes_the_uninterrupted_logs() {
    let _rng = rng_lock();
    let (train, valid) = (data(24, 0), data(8, 5));
    let full = overshooting("best-full");
    let outcome = full.train(with_adapter(), &train, &valid, false).unwrap();
    let (_, best_step) = outcome.state.best.unwrap();
    assert!(
        best_step < 9,
        "the scenario needs the best evaluation before checkpoint-9, got step {best_step}"
    );

    // Killed after checkpoint-9 was written and metrics.jsonl had reached step 10.
    let resumed = overshooting("best-resumed");
    copy_dir(
        &full.output_dir.join("checkpoint-9"),
        &resumed.output_dir.join("checkpoint-9"),
    );
    let lines = std::fs::read_to_string(full.output_dir.join("metrics.jsonl")).unwrap();
    let upto_10: String = lines.lines().take(5).map(|l| format!("{l}\n")).collect();
    std::fs::write(resumed.output_dir.join("metrics.jsonl"), upto_10).unwrap();
    let again = resumed.train(with_adapter(), &train, &valid, true).unwrap();

    assert_eq!(again.state.best, outcome.state.best);
    for file in ["adapter_model.safetensors", "adapter_config.json"] {
        for dir in ["final", "best"] {
            assert_eq!(
                std::fs::read(resumed.output_dir.join(dir).join(file)).unwrap(),
                std::fs::read(full.output_dir.join(dir).join(file)).unwrap(),
                "{dir}/{file} differs from the uninterrupted run's"
            );
        }
    }
    // The same lines, no step twice, and the line after the checkpoint averages the same
    // micro-batches.
    assert_eq!(
        logged_without_timing(&resumed.output_dir),
        logged_without_timing(&full.output_dir)
    );
    let clean = |state: &TrainerState| {
        let mut state = state.clone();
        state
            .history
            .iter_mut()
            .for_each(|e| e.tokens_per_second = 0.0);
        state
    };
    assert_eq!(clean(&again.state), clean(&outcome.state));

    // Resuming the finished run again changes nothing it wrote.
    let final_bytes = std::fs::read(resumed.output_dir.join("final/adapter_model.safetensors"));
    resumed.train(with_adapter(), &train, &valid, true).unwrap();
    assert_eq!(
        std::fs::read(resumed.output_dir.join("final/adapter_model.safetensors")).unwrap(),
        final_bytes.unwrap()
    );
    for dir in [full.output_dir, resumed.output_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn a_resume_with_another_rank_or_learning_rate_is_refused_naming_them() {
    let _rng = rng_lock();
    let (train, valid) = (data(24, 0), data(8, 5));
    let first = trainer("mismatch", 4);
    first.train(with_adapter(), &train, &valid, false).unwrap();
    let mut other = first.clone();
    other.config.learning_rate = 1e-2;
    let adapter = AdapterConfig::from_lora_config(
        &LoraConfig::new(8, 8.0).with_lora_dropout(0.1),
        ModuleSelector::Names(vec!["q".into(), "v".into(), "wi_0".into()]),
    )
    .unwrap();
    other.mode = TrainingMode::Adapter {
        name: "default".into(),
        config: adapter,
    };
    match other.train(with_adapter(), &train, &valid, true) {
        Err(TrainError::ResumeMismatch { path, differences }) => {
            assert!(path.ends_with("checkpoint-4"), "{path:?}");
            let text = differences.join("; ");
            assert!(text.contains("trainer.learning_rate: 0.03"), "{text}");
            assert!(
                text.contains("mode.adapter_config.r: 4 in the checkpoint, 8 now"),
                "{text}"
            );
        }
        other => panic!("expected ResumeMismatch, got {other:?}"),
    }
    // Other data is another run too.
    match first.train(with_adapter(), &data(24, 1), &valid, true) {
        Err(TrainError::ResumeMismatch { differences, .. }) => {
            assert!(
                differences
                    .iter()
                    .any(|d| d.starts_with("train_fingerprint")),
                "{differences:?}"
            );
        }
        other => panic!("expected ResumeMismatch, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&first.output_dir);
}

#[test]
fn an_output_dir_holding_a_run_is_refused_unless_resumed_or_overwritten() {
    let _rng = rng_lock();
    let (train, valid) = (data(24, 0), data(8, 5));
    let first = trainer("in-use", 8);
    first.train(with_adapter(), &train, &valid, false).unwrap();
    match first.train(with_adapter(), &train, &valid, false) {
        Err(TrainError::OutputDirInUse { path, found }) => {
            assert_eq!(path, first.output_dir);
            assert!(
                found.contains("checkpoint-4") && found.contains("metrics.jsonl"),
                "{found}"
            );
        }
        other => panic!("expected OutputDirInUse, got {other:?}"),
    }
    // Overwriting a longer run with a shorter one leaves none of the old run behind.
    let mut shorter = first.clone();
    shorter.config.max_steps = Some(4);
    shorter.config.overwrite_output_dir = true;
    let user_file = first.output_dir.join("notes.txt");
    std::fs::write(&user_file, b"mine").unwrap();
    let outcome = shorter
        .train(with_adapter(), &train, &valid, false)
        .unwrap();
    assert_eq!(outcome.state.step, 4);
    assert!(!first.output_dir.join("checkpoint-8").exists());
    let lines = std::fs::read_to_string(first.output_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), outcome.state.history.len());
    assert!(user_file.is_file(), "files the trainer did not write stay");
    let _ = std::fs::remove_dir_all(&first.output_dir);
}

fn full_trainer(dir: &str, max_steps: usize) -> Trainer {
    let mut trainer = trainer(dir, max_steps);
    trainer.mode = TrainingMode::Full;
    trainer.config.learning_rate = 1e-2;
    trainer
}

fn base_values(model: &T5ForConditionalGeneration<Train>) -> Vec<f32> {
    let model = burn::module::AutodiffModule::valid(model);
    model
        .shared
        .weight
        .val()
        .into_data()
        .to_vec::<f32>()
        .unwrap()
}

#[test]
fn full_training_updates_every_weight_and_resumes_exactly() {
    let _rng = rng_lock();
    // No validation data: both runs return their last weights (the best one after a resume
    // is the subject of the adapter test above).
    let (train, valid) = (data(24, 0), Vec::new());
    let before = base_values(&model());

    let full = full_trainer("all-full", 8);
    let outcome = full.train(model(), &train, &valid, false).unwrap();
    assert_ne!(
        base_values(&outcome.model),
        before,
        "the embedding did not train"
    );
    assert!(full.output_dir.join("checkpoint-4/model.bin").is_file());
    assert!(!full.output_dir.join("final").exists());

    let resumed = full_trainer("all-resumed", 8);
    copy_dir(
        &full.output_dir.join("checkpoint-4"),
        &resumed.output_dir.join("checkpoint-4"),
    );
    let outcome_resumed = resumed.train(model(), &train, &valid, true).unwrap();
    assert_same_losses(&outcome.state, &outcome_resumed.state);
    let (x, y) = (
        base_values(&outcome.model),
        base_values(&outcome_resumed.model),
    );
    let worst = x
        .iter()
        .zip(&y)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-5, "resumed weights differ by {worst}");
    for dir in [full.output_dir, resumed.output_dir] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn an_example_with_a_token_id_outside_the_vocabulary_is_refused_before_training() {
    let _rng = rng_lock();
    let trainer = trainer("out-of-vocab", 4);
    let mut train = data(8, 0);
    train[3].target[1] = 32; // the model's vocabulary is 0..32
    let reason = match trainer.train(with_adapter(), &train, &data(2, 1), false) {
        Err(TrainError::InvalidInput { reason }) => reason,
        Err(other) => panic!("expected InvalidInput, got {other:?}"),
        Ok(_) => panic!("an out-of-vocabulary example trained"),
    };
    assert!(
        reason.contains("training example 3") && reason.contains("target token id 32"),
        "{reason}"
    );
    assert!(!trainer.output_dir.exists(), "nothing is written");
}

#[test]
fn a_diverging_run_stops_with_a_non_finite_loss_error_before_saving_its_weights() {
    let _rng = rng_lock();
    let mut trainer = trainer("diverge", 40);
    trainer.config.learning_rate = 1e30;
    trainer.config.max_grad_norm = None;
    trainer.config.warmup_steps = 0;
    trainer.config.save_every = 0;
    match trainer.train(with_adapter(), &data(24, 0), &data(8, 5), false) {
        Err(TrainError::NonFiniteLoss { step, loss, .. }) => {
            assert!(step >= 1 && !loss.is_finite(), "step {step}, loss {loss}");
        }
        other => panic!("expected NonFiniteLoss, got {other:?}"),
    }
    assert!(!trainer.output_dir.join("final").exists());
    let _ = std::fs::remove_dir_all(&trainer.output_dir);
}

#[test]
fn a_resume_of_a_finished_run_without_checkpoints_is_refused_not_started_over() {
    let _rng = rng_lock();
    let (train, valid) = (data(24, 0), data(8, 5));
    let mut first = trainer("no-checkpoints", 4);
    first.config.save_every = 0;
    first.train(with_adapter(), &train, &valid, false).unwrap();
    let final_adapter = first.output_dir.join("final/adapter_model.safetensors");
    let written = std::fs::read(&final_adapter).unwrap();
    match first.train(with_adapter(), &data(24, 1), &valid, true) {
        Err(TrainError::OutputDirInUse { found, .. }) => {
            assert!(found.contains("final"), "{found}")
        }
        other => panic!("expected OutputDirInUse, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&final_adapter).unwrap(),
        written,
        "final/ kept"
    );
    // Interrupted before its first checkpoint (no final/), the same resume starts over.
    std::fs::remove_dir_all(first.output_dir.join("final")).unwrap();
    let outcome = first.train(with_adapter(), &train, &valid, true).unwrap();
    assert_eq!(outcome.state.step, 4);
    let _ = std::fs::remove_dir_all(&first.output_dir);
}
