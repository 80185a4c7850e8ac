//! `lora-t5`: LoRA fine-tuning, generation, evaluation and merging for T5 / FLAN-T5.
//!
//! ```sh
//! lora-t5 demo                                   # the main job on the embedded defaults
//! lora-t5 train --model DIR --train FILE --valid FILE --out DIR
//! lora-t5 generate --model DIR --adapter DIR --prompt "顶部搜索，底部导航"
//! lora-t5 eval --model DIR --adapter DIR --data FILE
//! lora-t5 merge --model DIR --adapter DIR --out DIR
//! lora-t5 inspect --model DIR --adapter DIR
//! lora-t5 pretrain --out models/uidsl-t5-small   # rebuilds the embedded base model
//! ```

mod commands;
mod common;
mod demo;
mod flags;
mod plot;
mod pretrain;
mod progress;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use lora_burn::backend::BackendInfo;

/// LoRA for T5 / FLAN-T5 on Burn.
#[derive(Parser, Debug)]
#[command(name = "lora-t5", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Fine-tune a LoRA adapter on the held-out UI-DSL task and print before/after metrics.
    Demo(demo::DemoArgs),
    /// Fine-tune a LoRA adapter on JSONL instruction → output pairs.
    Train(commands::TrainArgs),
    /// Generate from a prompt or a JSONL file.
    Generate(commands::GenerateArgs),
    /// Evaluate generation on a JSONL file (exact match, BLEU, ROUGE-L, JSON and schema validity).
    Eval(commands::EvalArgs),
    /// Merge an adapter into the base model and save a full checkpoint.
    Merge(commands::MergeArgs),
    /// Show a model's config, LoRA targets and trainable-parameter summary.
    Inspect(commands::InspectArgs),
    /// Grid search over r, alpha, dropout and learning rate.
    Sweep(commands::SweepArgs),
    /// Train the small embedded UI-DSL base model (tokenizer and T5) from scratch.
    Pretrain(pretrain::PretrainArgs),
}

/// The version line with the backend this build runs on, e.g.
/// `0.1.0 (flex, 2 threads (rayon; set by RAYON_NUM_THREADS), AVX-512)`.
fn version_line() -> &'static str {
    let line = format!("{} ({})", env!("CARGO_PKG_VERSION"), BackendInfo::current());
    Box::leak(line.into_boxed_str())
}

fn main() {
    let version = version_line();
    let matches = Cli::command()
        .version(version)
        .long_version(version)
        .get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    let result = match cli.command {
        Command::Demo(args) => demo::run(args),
        Command::Train(args) => commands::train(args),
        Command::Generate(args) => commands::generate(args),
        Command::Eval(args) => commands::eval(args),
        Command::Merge(args) => commands::merge(args),
        Command::Inspect(args) => commands::inspect(args),
        Command::Sweep(args) => commands::sweep(args),
        Command::Pretrain(args) => pretrain::run(args),
    };
    if let Err(error) = result {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
