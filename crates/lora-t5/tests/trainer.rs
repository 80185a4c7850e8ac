//! The trainer end to end on a tiny model: the loss falls, checkpoints resume exactly, the
//! saved adapter loads back, and merging changes nothing.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Int, Tensor, TensorData};
use lora_core::{LoraConfig, LoraModule};
use lora_peft_io::{inject_adapter, AdapterConfig, ModuleSelector};
use lora_t5::data::{Seq2SeqCollator, TokenizedExample};
use lora_t5::{
    DecayKind, FeedForwardKind, T5Config, T5ForConditionalGeneration, Trainer, TrainerConfig,
};

type Train = Autodiff<NdArray<f32>>;

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
        std::env::temp_dir().join(format!("lora-t5-trainer-{dir}-{}", std::process::id()));
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
            progress: false,
            ..TrainerConfig::default()
        },
        output_dir,
        adapter_name: "default".into(),
        adapter_config: adapter_config(),
        collator: Seq2SeqCollator {
            max_source_len: 64,
            max_target_len: 64,
            pad_id: 0,
        },
    }
}

fn with_adapter() -> T5ForConditionalGeneration<Train> {
    let mut model = model();
    inject_adapter(&mut model, &adapter_config(), "default", None).unwrap();
    model
}

#[test]
fn loss_falls_checkpoints_resume_exactly_and_adapters_round_trip() {
    let (train, valid) = (data(24, 0), data(8, 5));

    // Uninterrupted: 12 steps.
    let full = trainer("full", 12);
    let outcome = full.train(with_adapter(), &train, &valid, false).unwrap();
    let history = &outcome.state.history;
    let first = history.first().unwrap().loss;
    let last = history.last().unwrap().loss;
    assert!(last < first * 0.9, "loss did not fall: {first} → {last}");
    assert!(full.output_dir.join("loss.png").is_file());
    assert!(full.output_dir.join("metrics.jsonl").is_file());
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
    let a: Vec<(usize, f64)> = history.iter().map(|e| (e.step, e.loss)).collect();
    let b: Vec<(usize, f64)> = outcome_resumed
        .state
        .history
        .iter()
        .map(|e| (e.step, e.loss))
        .collect();
    assert_eq!(a.len(), b.len());
    for ((sa, la), (sb, lb)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert!(
            (la - lb).abs() < 1e-5,
            "step {sa}: {la} uninterrupted, {lb} resumed"
        );
    }

    // The saved final adapter loads back into a fresh model and gives the same outputs; the
    // merged model agrees with the unmerged one.
    let trained = outcome.model;
    let mut reloaded = model();
    lora_peft_io::load_adapter(
        &mut reloaded,
        &full.output_dir.join("final"),
        "default",
        None,
    )
    .unwrap();
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
                ids.clone().inner(),
                mask.clone().inner(),
                dec.clone().inner(),
            )
            .unwrap()
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

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
