//! Several adapters trained in one batch on one base (`ConcurrentTrainer`) against the same
//! runs made one by one with `Trainer`: without dropout the losses, learning rates, gradient
//! norms, evaluations and trained adapters agree within 1e-4 (relative).
#![cfg(feature = "t5")]

use std::path::PathBuf;

use burn::backend::{Autodiff, NdArray};
use lora_core::{LoraConfig, LoraModule};
use lora_peft_io::{inject_adapter, AdapterConfig, ModuleSelector};
use lora_t5::{FeedForwardKind, T5Config, T5ForConditionalGeneration};
use lora_train::data::{Seq2SeqCollator, TokenizedExample};
use lora_train::{
    ConcurrentTrainer, DecayKind, TrainError, TrainOutcome, Trainer, TrainerConfig, TrainingMode,
};

type Train = Autodiff<NdArray<f32>>;
type Model = T5ForConditionalGeneration<Train>;

/// Relative tolerance of the comparisons: the same sums, in another order.
const TOLERANCE: f64 = 1e-4;

/// The backend's random generator is process-wide: the tests that build models take turns.
fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One run of the comparison.
struct Spec {
    name: &'static str,
    lora: LoraConfig,
    targets: &'static [&'static str],
    config: TrainerConfig,
}

fn specs() -> Vec<Spec> {
    vec![
        Spec {
            name: "small",
            lora: LoraConfig::new(2, 4.0),
            targets: &["q", "v"],
            config: TrainerConfig {
                learning_rate: 2e-2,
                warmup_steps: 1,
                batch_size: 2,
                max_steps: Some(6),
                eval_every: 2,
                log_every: 1,
                seed: 5,
                ..TrainerConfig::default()
            },
        },
        Spec {
            name: "large",
            lora: LoraConfig::new(4, 8.0),
            targets: &["q", "v", "wi_0"],
            config: TrainerConfig {
                learning_rate: 1e-2,
                decay: DecayKind::Cosine,
                batch_size: 3,
                gradient_accumulation_steps: 2,
                max_grad_norm: Some(0.05),
                weight_decay: 0.1,
                epochs: 2,
                log_every: 1,
                seed: 9,
                ..TrainerConfig::default()
            },
        },
        Spec {
            name: "dora",
            lora: LoraConfig::new(2, 2.0).with_use_dora(true),
            targets: &["k", "o"],
            config: TrainerConfig {
                learning_rate: 1e-2,
                batch_size: 4,
                max_steps: Some(5),
                eval_every: 1,
                patience: Some(1),
                log_every: 1,
                seed: 3,
                ..TrainerConfig::default()
            },
        },
    ]
}

fn adapter_config(spec: &Spec) -> AdapterConfig {
    let targets = ModuleSelector::Names(spec.targets.iter().map(|t| t.to_string()).collect());
    AdapterConfig::from_lora_config(&spec.lora, targets).expect("valid adapter config")
}

fn collator() -> Seq2SeqCollator {
    Seq2SeqCollator {
        max_source_len: 16,
        max_target_len: 16,
        pad_id: 0,
    }
}

/// A tiny T5 without dropout holding every spec's adapter, initialised from one seed in spec
/// order (so each build is the same).
fn model_with(specs: &[Spec]) -> Model {
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
        dropout_rate: 0.0,
        ..T5Config::default()
    };
    let device = Default::default();
    <Train as burn::tensor::backend::Backend>::seed(&device, 11);
    let mut model = T5ForConditionalGeneration::new(&config, &device);
    for spec in specs {
        inject_adapter(&mut model, &adapter_config(spec), spec.name).expect("inject");
    }
    // Random weights are initialised lazily: materialise them all now, from this seed.
    let _ = burn::module::AutodiffModule::valid(&model);
    model
}

/// Reversal task with sources and targets of 2 to 6 tokens, so batches pad differently.
fn data(count: u32, offset: u32) -> Vec<TokenizedExample> {
    (0..count)
        .map(|i| {
            let length = 2 + (i * 3 + offset) % 5;
            let body: Vec<u32> = (0..length)
                .map(|j| 2 + (i * 7 + j * 3 + offset) % 28)
                .collect();
            let mut source = body.clone();
            source.push(1);
            let mut target: Vec<u32> = body.into_iter().rev().collect();
            target.push(1);
            TokenizedExample { source, target }
        })
        .collect()
}

/// The folder a test writes under.
fn scratch(test: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "lora-train-concurrent-{test}-{}",
        std::process::id()
    ))
}

fn output_dir(test: &str, kind: &str, name: &str) -> PathBuf {
    scratch(test).join(kind).join(name)
}

fn trainer(spec: &Spec, output_dir: PathBuf) -> Trainer {
    Trainer {
        config: TrainerConfig {
            overwrite_output_dir: true,
            ..spec.config.clone()
        },
        output_dir,
        mode: TrainingMode::Adapter {
            name: spec.name.into(),
            config: adapter_config(spec),
        },
        collator: collator(),
    }
}

/// Every value of adapter `name`'s tensors, layer by layer.
fn adapter_values(model: &Model, name: &str) -> Vec<f32> {
    let mut values = Vec::new();
    model.visit_lora("", &mut |_, layer| {
        if let Some(adapter) = layer.adapter(name) {
            values.extend(adapter.lora_a.val().into_data().to_vec::<f32>().unwrap());
            values.extend(adapter.lora_b.val().into_data().to_vec::<f32>().unwrap());
            if let Some(m) = &adapter.magnitude {
                values.extend(m.val().into_data().to_vec::<f32>().unwrap());
            }
        }
    });
    values
}

fn assert_close(found: f64, expected: f64, what: &str) {
    assert!(
        (found - expected).abs() <= TOLERANCE * expected.abs().max(1e-6),
        "{what}: {found} against {expected}"
    );
}

fn compare(name: &str, concurrent: &TrainOutcome<Model>, separate: &TrainOutcome<Model>) {
    let (c, s) = (&concurrent.state, &separate.state);
    assert_eq!(c.step, s.step, "{name}: steps");
    assert_eq!(c.history.len(), s.history.len(), "{name}: log lines");
    for (found, expected) in c.history.iter().zip(&s.history) {
        let at = format!("{name}, step {}", expected.step);
        assert_eq!(found.step, expected.step, "{at}");
        assert_eq!(found.epoch, expected.epoch, "{at}: epoch");
        assert_close(found.loss, expected.loss, &format!("{at}: loss"));
        assert_close(
            found.learning_rate,
            expected.learning_rate,
            &format!("{at}: lr"),
        );
        assert_close(
            found.grad_norm,
            expected.grad_norm,
            &format!("{at}: grad norm"),
        );
        match (found.eval_loss, expected.eval_loss) {
            (Some(f), Some(e)) => assert_close(f, e, &format!("{at}: eval loss")),
            (f, e) => assert_eq!(f.is_some(), e.is_some(), "{at}: evaluated"),
        }
    }
    assert_eq!(
        c.best.map(|(_, step)| step),
        s.best.map(|(_, step)| step),
        "{name}: best step"
    );
    let found = adapter_values(&concurrent.model, name);
    let expected = adapter_values(&separate.model, name);
    assert_eq!(found.len(), expected.len(), "{name}: adapter size");
    let largest = expected.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    for (i, (f, e)) in found.iter().zip(&expected).enumerate() {
        assert!(
            ((f - e) as f64).abs() <= TOLERANCE * largest,
            "{name}: adapter value {i}: {f} against {e}"
        );
    }
}

#[test]
fn concurrent_runs_equal_separate_runs() {
    let _rng = rng_lock();
    let specs = specs();
    let (train, valid) = (data(10, 0), data(4, 3));

    let runs: Vec<Trainer> = specs
        .iter()
        .map(|spec| trainer(spec, output_dir("equal", "concurrent", spec.name)))
        .collect();
    let mut events = vec![0usize; specs.len()];
    let concurrent = ConcurrentTrainer { runs }
        .train_observed(model_with(&specs), &train, &valid, &mut |run, _| {
            events[run] += 1
        })
        .expect("concurrent training");
    assert!(
        events.iter().all(|e| *e > 0),
        "every run reports: {events:?}"
    );
    // The DoRA run stops early (patience 1) or at its last step; the others run to the end.
    assert_eq!(concurrent[0].state.step, 6);
    assert_eq!(
        concurrent[1].state.step, 4,
        "2 epochs of 4 micro-batches, 2 per step"
    );

    for (spec, found) in specs.iter().zip(&concurrent) {
        // The same model, all adapters in it: the trainer activates (and trains) its own.
        let model = model_with(&specs);
        let separate = trainer(spec, output_dir("equal", "separate", spec.name))
            .train(model, &train, &valid, false)
            .expect("separate training");
        compare(spec.name, found, &separate);
        // Each outcome serves as its run's model: its adapter alone is active.
        found.model.visit_lora("", &mut |path, layer| {
            if layer.adapter(spec.name).is_some() {
                assert_eq!(layer.active_adapters(), [spec.name], "{path}");
            }
        });
        let dir = output_dir("equal", "concurrent", spec.name);
        assert!(dir.join("final/adapter_model.safetensors").is_file());
        assert!(dir.join("metrics.jsonl").is_file());
    }
    let _ = std::fs::remove_dir_all(scratch("equal"));
}

fn refusal(specs: &[Spec], runs: Vec<Trainer>) -> String {
    let data = data(4, 0);
    let trainer = ConcurrentTrainer { runs };
    match trainer.train(model_with(specs), &data, &data) {
        Err(TrainError::InvalidInput { reason }) => reason,
        other => panic!("expected a refusal, got {:?}", other.map(|o| o.len())),
    }
}

#[test]
fn a_run_whose_adapter_the_model_lacks_is_refused() {
    let _rng = rng_lock();
    let specs = specs();
    let runs = vec![trainer(&specs[0], output_dir("lacks", "c", "small"))];
    let reason = refusal(&specs[1..], runs);
    assert!(reason.contains("no adapter `small`"), "{reason}");
}

#[test]
fn checkpoints_are_refused() {
    let _rng = rng_lock();
    let specs = specs();
    let mut run = trainer(&specs[0], output_dir("checkpoints", "c", "small"));
    run.config.save_every = 2;
    let reason = refusal(&specs, vec![run]);
    assert!(reason.contains("save_every 2"), "{reason}");
}

#[test]
fn runs_with_different_collators_are_refused() {
    let _rng = rng_lock();
    let specs = specs();
    let first = trainer(&specs[0], output_dir("collators", "c", "small"));
    let mut second = trainer(&specs[1], output_dir("collators", "c", "large"));
    second.collator.max_target_len = 8;
    let reason = refusal(&specs, vec![first, second]);
    assert!(reason.contains("share one collator"), "{reason}");
}

#[test]
fn two_runs_of_one_adapter_are_refused() {
    let _rng = rng_lock();
    let specs = specs();
    let first = trainer(&specs[0], output_dir("twice", "c", "a"));
    let second = trainer(&specs[0], output_dir("twice", "c", "b"));
    let reason = refusal(&specs, vec![first, second]);
    assert!(reason.contains("both train adapter `small`"), "{reason}");
}
