//! `lora-t5 demo`: the main job on the embedded defaults. The small base model in
//! `models/uidsl-t5-small` never saw the held-out theme (樱花粉 / sakura-pink) or section
//! type (轮播图 / carousel); a LoRA adapter learns them from `heldout_train.jsonl`, and the
//! metrics on `heldout_test.jsonl` are printed before and after.

use std::path::PathBuf;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Args;
use lora_burn::backend::TrainBackend;
use lora_burn::lora_core::{count_parameters, LoraConfig};
use lora_burn::lora_peft_io::{inject_adapter, AdapterConfig, ModuleSelector};
use lora_burn::lora_t5::T5ForConditionalGeneration;
use lora_burn::lora_train::data::Seq2SeqCollator;
use lora_burn::lora_train::{DecayKind, Trainer, TrainerConfig, TrainingMode};
use serde_json::Value;

use crate::common::{
    evaluate, read_pairs, tokenize, tokenizer, train_with_display, CliResult, DecodingArgs,
};
use crate::config_file::write_effective_config;
use crate::evaluation::MetricArgs;
use crate::flags;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// The base model directory.
    #[arg(long, default_value = "models/uidsl-t5-small")]
    model: PathBuf,
    /// Folder with heldout_train.jsonl, heldout_valid.jsonl and heldout_test.jsonl.
    #[arg(long, default_value = "data/uidsl")]
    data: PathBuf,
    /// A JSON file of flags under these names, such as the `training_config.json` a demo run
    /// writes; flags on the command line win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the run's adapter, metrics, loss curve and configuration go (replacing an earlier
    /// demo's).
    #[arg(long, visible_alias = "out", default_value = "runs/demo")]
    output_dir: PathBuf,
    /// LoRA rank (PEFT's `r`).
    #[arg(long, visible_alias = "lora-r", default_value_t = 16, value_parser = flags::count(1..=flags::MAX_RANK))]
    r: usize,
    /// LoRA alpha (the update is scaled by alpha / r).
    #[arg(long, visible_alias = "alpha", default_value_t = 32.0, value_parser = flags::finite())]
    lora_alpha: f64,
    /// Dropout on the LoRA branch's input.
    #[arg(long, visible_alias = "dropout", default_value_t = 0.05, value_parser = flags::probability())]
    lora_dropout: f64,
    /// Optimizer steps.
    #[arg(long, visible_alias = "steps", default_value_t = 300, value_parser = flags::count(1..=flags::MAX_COUNT))]
    max_steps: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-3, value_parser = flags::positive())]
    learning_rate: f64,
    /// Examples per step.
    #[arg(long, visible_alias = "batch-size", default_value_t = 16, value_parser = flags::count(1..=flags::MAX_COUNT))]
    per_device_train_batch_size: usize,
    /// Records of the base task (the first of `base_train.jsonl`) replayed among the held-out
    /// training records, so that the adapter also learns where the new names do not belong.
    #[arg(long, default_value_t = 400, value_parser = flags::count(0..=flags::MAX_COUNT))]
    replay_records: usize,
    #[command(flatten)]
    metrics: MetricArgs,
    #[command(flatten)]
    decoding: DecodingArgs,
}

pub fn run(args: DemoArgs, written: &Value) -> CliResult {
    type B = TrainBackend;
    let started = Instant::now();
    let device = Default::default();
    let tokenizer = tokenizer(&args.model)?;
    let model = T5ForConditionalGeneration::<B>::from_pretrained(&args.model, &device)?;
    let mut train = read_pairs(&args.data.join("heldout_train.jsonl"), false)?;
    let held_out_records = train.len();
    let mut replay = read_pairs(&args.data.join("base_train.jsonl"), false)?;
    replay.truncate(args.replay_records);
    train.extend(replay);
    let valid = read_pairs(&args.data.join("heldout_valid.jsonl"), false)?;
    let test = read_pairs(&args.data.join("heldout_test.jsonl"), false)?;

    println!(
        "base model on the held-out task ({} test examples):",
        test.len()
    );
    let config = args.decoding.config(&args.model, &tokenizer)?;
    let score = |model: &T5ForConditionalGeneration<<B as AutodiffBackend>::InnerBackend>| {
        evaluate(
            model,
            &tokenizer,
            &test,
            &args.decoding,
            &config,
            &args.metrics,
        )
    };
    let (before, predictions_before) = score(&model.valid())?;
    println!("{before}");
    println!(
        "training on {held_out_records} held-out records and {} replayed base records",
        train.len() - held_out_records
    );

    let targets = ["q", "k", "v", "o", "wi_0", "wi_1", "wo"];
    let adapter_config = AdapterConfig::from_lora_config(
        &LoraConfig::new(args.r, args.lora_alpha).with_lora_dropout(args.lora_dropout),
        ModuleSelector::Names(targets.iter().map(|t| t.to_string()).collect()),
    )?;
    let mut model = model;
    // The adapter's random initialisation draws from the backend RNG: seed it for a
    // reproducible run.
    B::seed(&device, DEMO_SEED);
    inject_adapter(&mut model, &adapter_config, "default")?;
    let model = lora_burn::lora_core::mark_only_lora_as_trainable(model, adapter_config.bias());
    println!("{}", count_parameters(&model));

    let trainer = Trainer {
        config: TrainerConfig {
            learning_rate: args.learning_rate,
            warmup_steps: args.max_steps / 10,
            decay: DecayKind::Cosine,
            batch_size: args.per_device_train_batch_size,
            max_steps: Some(args.max_steps),
            epochs: usize::MAX,
            eval_every: (args.max_steps / 5).max(1),
            save_every: 0,
            log_every: 10,
            seed: DEMO_SEED,
            // `--out` is the demo's own folder: each demo run replaces the last one.
            overwrite_output_dir: true,
            ..TrainerConfig::default()
        },
        output_dir: args.output_dir.clone(),
        mode: TrainingMode::Adapter {
            name: "default".into(),
            config: adapter_config,
        },
        collator: Seq2SeqCollator {
            max_source_len: 128,
            max_target_len: 128,
            pad_id: model.config.pad_token_id,
        },
    };
    let outcome = train_with_display(
        &trainer,
        model,
        &tokenize(&tokenizer, &train, &trainer.collator)?,
        &tokenize(&tokenizer, &valid, &trainer.collator)?,
        false,
    )?;
    write_effective_config(&args.output_dir, written)?;
    println!("after LoRA fine-tuning ({} steps):", outcome.state.step);
    let (after, predictions) = score(&outcome.model.valid())?;
    println!("{after}");
    println!("\nthe held-out task, base model → after LoRA:");
    println!("| metric | base model | after LoRA |");
    println!("| --- | ---: | ---: |");
    let rows = [
        (
            "exact match",
            before.report.exact_match,
            after.report.exact_match,
        ),
        (
            "field accuracy",
            before.fields.overall(),
            after.fields.overall(),
        ),
        ("sacreBLEU", before.bleu.score, after.bleu.score),
        (
            "ROUGE-L",
            before.rouge_l.mean_fmeasure,
            after.rouge_l.mean_fmeasure,
        ),
        (
            "valid UI-DSL",
            before.report.schema_valid_rate.unwrap_or(f64::NAN),
            after.report.schema_valid_rate.unwrap_or(f64::NAN),
        ),
    ];
    for (name, before, after) in rows {
        println!("| {name} | {before:.4} | {after:.4} |");
    }
    for ((name, before), (_, after)) in held_out_names(&predictions_before, &test)
        .into_iter()
        .zip(held_out_names(&predictions, &test))
    {
        println!("| {name} | {before} | {after} |");
    }
    if let (Some((source, _)), Some(prediction)) = (test.first(), predictions.first()) {
        println!("example: {source}\n  → {prediction}");
    }
    println!(
        "adapter: {} (PEFT format), metrics: {}, loss curve: {}; wall time {:.0} s",
        args.output_dir.join("final").display(),
        args.output_dir.join("metrics.jsonl").display(),
        args.output_dir.join("loss.png").display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Seeds the adapter initialisation and the trainer.
const DEMO_SEED: u64 = 42;

/// The names the base model never saw, as they appear in minified UI-DSL.
const HELD_OUT_NAMES: [(&str, &str); 2] = [
    ("theme sakura-pink", "\"theme\":\"sakura-pink\""),
    ("section carousel", "\"type\":\"carousel\""),
];

/// For each held-out name: how many predictions contain it out of the references that do, and
/// how many contain it out of the references that do not (the wrong uses).
fn held_out_names(
    predictions: &[String],
    test: &[(String, String)],
) -> Vec<(&'static str, String)> {
    HELD_OUT_NAMES
        .iter()
        .map(|(name, needle)| {
            let predicted = |i: usize| predictions.get(i).is_some_and(|p| p.contains(needle));
            let (needed, not_needed): (Vec<usize>, Vec<usize>) =
                (0..test.len()).partition(|&i| test[i].1.contains(needle));
            let found = needed.iter().filter(|&&i| predicted(i)).count();
            let wrong = not_needed.iter().filter(|&&i| predicted(i)).count();
            (
                *name,
                format!(
                    "{found}/{} where needed, {wrong}/{} where not",
                    needed.len(),
                    not_needed.len()
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::held_out_names;

    #[test]
    fn held_out_names_count_hits_where_needed_and_uses_where_not() {
        let record = |theme: &str, section: &str| {
            format!(r#"{{"page":{{"theme":"{theme}","sections":[{{"type":"{section}"}}]}}}}"#)
        };
        let test: Vec<(String, String)> = [
            ("sakura-pink", "carousel"),
            ("sakura-pink", "banner"),
            ("ocean-blue", "carousel"),
        ]
        .iter()
        .map(|(theme, section)| (String::new(), record(theme, section)))
        .collect();
        let predictions = vec![
            record("sakura-pink", "banner"),
            record("ocean-blue", "banner"),
            record("sakura-pink", "carousel"),
        ];
        assert_eq!(
            held_out_names(&predictions, &test),
            [
                (
                    "theme sakura-pink",
                    "1/2 where needed, 1/1 where not".to_string()
                ),
                (
                    "section carousel",
                    "1/2 where needed, 0/1 where not".to_string()
                ),
            ]
        );
    }
}
