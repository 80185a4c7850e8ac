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
mod config_file;
mod demo;
mod evaluation;
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
    /// Threads of the CPU backend (default: every core; `RAYON_NUM_THREADS` also sets it).
    #[arg(long, global = true, value_parser = flags::count(1..=4096))]
    threads: Option<usize>,
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

/// The command line, with `--config` files expanded.
fn command_line(command: &clap::Command) -> Vec<std::ffi::OsString> {
    match config_file::expand_config_files(std::env::args_os().collect(), command) {
        Ok(args) => args,
        Err(error) => {
            eprintln!("error: {error}");
            std::process::exit(2);
        }
    }
}

/// The value of the last `--threads N` / `--threads=N` of `args`, when it is a number.
fn threads_flag(args: &[std::ffi::OsString]) -> Option<usize> {
    let mut threads = None;
    let mut args = args.iter().filter_map(|arg| arg.to_str());
    while let Some(arg) = args.next() {
        if arg == "--threads" {
            threads = args.next().and_then(|n| n.parse().ok());
        } else if let Some(n) = arg.strip_prefix("--threads=") {
            threads = n.parse().ok();
        }
    }
    threads
}

fn main() {
    // The thread count must be set before anything starts the pool, and the version line
    // (which reports it) does.
    let mut unversioned = Cli::command().args_override_self(true);
    unversioned.build();
    let args = command_line(&unversioned);
    if let Some(threads) = threads_flag(&args) {
        if let Err(error) = lora_burn::backend::use_threads(threads) {
            eprintln!("error: --threads: {error}");
            std::process::exit(2);
        }
    }
    let version = version_line();
    let mut command = unversioned.version(version).long_version(version);
    command.build();
    let matches = command.clone().get_matches_from(args);
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    // Set before parsing (above); the same call confirms the pool has that size (on ndarray,
    // matrixmultiply's own cap and on CUDA the absence of a CPU pool make `BackendInfo`'s
    // thread count differ, so it is not the thing to compare).
    if let Some(threads) = cli.threads {
        if let Err(error) = lora_burn::backend::use_threads(threads) {
            eprintln!("error: --threads: {error}");
            std::process::exit(2);
        }
    }
    // What `train`, `sweep` and `demo` write next to their adapters.
    let written = matches.subcommand().and_then(|(name, sub_matches)| {
        let keep = (name == "sweep")
            .then(|| command.find_subcommand("train"))
            .flatten();
        command
            .find_subcommand(name)
            .map(|sub| config_file::effective_config(sub_matches, sub, keep))
    });
    let written = written.unwrap_or_default();
    let result = match cli.command {
        Command::Demo(args) => demo::run(args, &written),
        Command::Train(args) => commands::train(args, &written),
        Command::Generate(args) => commands::generate(args),
        Command::Eval(args) => commands::eval(args),
        Command::Merge(args) => commands::merge(args),
        Command::Inspect(args) => commands::inspect(args),
        Command::Sweep(args) => commands::sweep(args, &written),
        Command::Pretrain(args) => pretrain::run(args),
    };
    if let Err(error) = result {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}
