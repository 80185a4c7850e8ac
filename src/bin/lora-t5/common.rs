//! Pieces shared by the subcommands: loading, data, batched generation, evaluation.

use std::error::Error;
use std::path::{Path, PathBuf};

use burn::tensor::backend::AutodiffBackend;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use clap::Args;
use lora_burn::lora_t5::{
    generated_tokens, EarlyStopping, GenerationConfig, T5ForConditionalGeneration, T5Tokenizer,
};
use lora_burn::lora_train::data::{
    read_jsonl, BadRecordPolicy, JsonlOptions, Seq2SeqCollator, TokenizedExample,
};
use lora_burn::lora_train::metrics::EvalReport;
use lora_burn::lora_train::{LogEntry, TrainEvent, TrainOutcome, Trainer};

use crate::flags;
use crate::plot::{write_curves_png, Curve};
use crate::progress::Progress;

pub type CliResult<T = ()> = Result<T, Box<dyn Error>>;

/// Decoding options shared by `generate`, `eval` and `demo`.
#[derive(Args, Debug, Clone)]
pub struct DecodingArgs {
    /// Beams (1: greedy or sampling).
    #[arg(long, default_value_t = 1, value_parser = flags::count(1..=flags::MAX_BEAMS))]
    pub num_beams: usize,
    /// Most new tokens.
    #[arg(long, default_value_t = 96, value_parser = flags::count(1..=flags::MAX_NEW_TOKENS))]
    pub max_new_tokens: usize,
    /// Fewest new tokens.
    #[arg(long, default_value_t = 0, value_parser = flags::count(0..=flags::MAX_NEW_TOKENS))]
    pub min_new_tokens: usize,
    /// Beam length penalty.
    #[arg(long, default_value_t = 1.0, value_parser = flags::finite_f32())]
    pub length_penalty: f32,
    /// Stop beam search once `num_beams` hypotheses are finished.
    #[arg(long)]
    pub early_stopping: bool,
    /// Sample instead of greedy / beam decoding.
    #[arg(long)]
    pub do_sample: bool,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0, value_parser = flags::positive_f32())]
    pub temperature: f32,
    /// Sampling top-k (0: off).
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
    /// Sampling top-p.
    #[arg(long, default_value_t = 1.0, value_parser = flags::share_f32())]
    pub top_p: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prompts per generation batch.
    #[arg(long, default_value_t = 25, value_parser = flags::count(1..=flags::MAX_COUNT))]
    pub generation_batch_size: usize,
    /// Most prompt tokens (`</s>` included); a longer prompt is an error unless
    /// `--truncate-source`.
    #[arg(long, default_value_t = DecodingArgs::DEFAULT_MAX_SOURCE_LEN, value_parser = flags::count(1..=flags::MAX_SEQUENCE_LEN))]
    pub max_source_len: usize,
    /// Cut prompts longer than `--max-source-len` to their first tokens and `</s>`.
    #[arg(long)]
    pub truncate_source: bool,
}

impl DecodingArgs {
    /// T5's `model_max_length`.
    pub const DEFAULT_MAX_SOURCE_LEN: usize = 512;

    /// The ids of prompt number `index` (0-based), within `--max-source-len`.
    fn prompt_ids(
        &self,
        tokenizer: &T5Tokenizer,
        prompt: &str,
        index: usize,
    ) -> CliResult<Vec<u32>> {
        let (mut ids, cut) = tokenizer.encode_bounded(prompt, self.max_source_len)?;
        if !cut && ids.len() <= self.max_source_len {
            return Ok(ids);
        }
        if !self.truncate_source {
            return Err(format!(
                "prompt {} has more than --max-source-len {} tokens ({}); raise the limit or pass --truncate-source",
                index + 1,
                self.max_source_len,
                if cut { "its first characters alone".to_string() } else { format!("{} tokens", ids.len()) }
            )
            .into());
        }
        let last = ids.pop();
        ids.truncate(self.max_source_len - 1);
        ids.extend(last);
        Ok(ids)
    }

    pub fn config(&self) -> GenerationConfig {
        GenerationConfig {
            max_new_tokens: self.max_new_tokens,
            min_new_tokens: self.min_new_tokens,
            num_beams: self.num_beams,
            length_penalty: self.length_penalty,
            early_stopping: if self.early_stopping {
                EarlyStopping::Immediate
            } else {
                EarlyStopping::Heuristic
            },
            do_sample: self.do_sample,
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            seed: self.seed,
            ..GenerationConfig::default()
        }
    }
}

/// The tokenizer of a model directory.
pub fn tokenizer(model_dir: &Path) -> CliResult<T5Tokenizer> {
    Ok(T5Tokenizer::from_file(&model_dir.join("tokenizer.json"))?)
}

/// Reads a JSONL file of instruction → output pairs (bad records are fatal unless `skip`).
pub fn read_pairs(path: &Path, skip_bad: bool) -> CliResult<Vec<(String, String)>> {
    let options = JsonlOptions {
        policy: if skip_bad {
            BadRecordPolicy::Skip
        } else {
            BadRecordPolicy::Fail
        },
        ..JsonlOptions::default()
    };
    let data = read_jsonl(path, &options)?;
    for bad in &data.skipped {
        eprintln!("skipped {bad}");
    }
    Ok(data
        .examples
        .into_iter()
        .map(|e| (e.source, e.target))
        .collect())
}

/// The `instruction` of every record of a JSONL file, whatever else it holds; a record without
/// one is an error naming its line, and a file without records is an error.
pub fn read_prompts(path: &Path) -> CliResult<Vec<String>> {
    let options = JsonlOptions {
        target_must_be_json: false,
        target_required: false,
        ..JsonlOptions::default()
    };
    let prompts: Vec<String> = read_jsonl(path, &options)?
        .examples
        .into_iter()
        .map(|e| e.source)
        .collect();
    if prompts.is_empty() {
        return Err(format!("{}: no records", path.display()).into());
    }
    Ok(prompts)
}

/// Tokenizes pairs for `collator`'s batches (each text cut at what its token limit covers).
pub fn tokenize(
    tokenizer: &T5Tokenizer,
    pairs: &[(String, String)],
    collator: &Seq2SeqCollator,
) -> CliResult<Vec<TokenizedExample>> {
    pairs
        .iter()
        .map(|(source, target)| {
            Ok(TokenizedExample::encode_for(
                tokenizer, source, target, collator,
            )?)
        })
        .collect()
}

/// Runs `trainer` with a progress line on standard error and `loss.png` in its output
/// directory, redrawn at every log line.
pub fn train_with_display<B: AutodiffBackend>(
    trainer: &Trainer,
    model: T5ForConditionalGeneration<B>,
    train: &[TokenizedExample],
    valid: &[TokenizedExample],
    resume: bool,
) -> CliResult<TrainOutcome<T5ForConditionalGeneration<B>>> {
    let mut progress = None;
    let mut plot_error = None;
    let picture = trainer.output_dir.join("loss.png");
    let outcome =
        trainer.train_observed(model, train, valid, resume, &mut |event| match event {
            TrainEvent::Started {
                total_steps,
                start_step,
            } => progress = Some(Progress::new(*total_steps, *start_step, true)),
            TrainEvent::Logged { entry, history } => {
                if let Some(progress) = &progress {
                    progress.show(
                        entry.step,
                        entry.loss,
                        entry.learning_rate,
                        entry.tokens_per_second,
                    );
                }
                if let Err(error) = plot_losses(&picture, history) {
                    plot_error.get_or_insert(error);
                }
            }
            TrainEvent::Saved { .. } => {}
            TrainEvent::Finished => {
                if let Some(progress) = &progress {
                    progress.finish();
                }
            }
        })?;
    match plot_error {
        Some(error) => Err(error),
        None => Ok(outcome),
    }
}

/// The training loss (red) and validation loss (blue) by step.
fn plot_losses(path: &Path, history: &[LogEntry]) -> CliResult {
    let train = Curve {
        points: history.iter().map(|e| (e.step as f64, e.loss)).collect(),
        rgb: [200, 40, 40],
    };
    let eval = Curve {
        points: history
            .iter()
            .filter_map(|e| e.eval_loss.map(|l| (e.step as f64, l)))
            .collect(),
        rgb: [40, 80, 200],
    };
    write_curves_png(path, &[train, eval], 640, 400)
}

/// Generates for every prompt, in batches, and decodes the outputs.
pub fn generate_texts<B: Backend>(
    model: &T5ForConditionalGeneration<B>,
    tokenizer: &T5Tokenizer,
    prompts: &[String],
    decoding: &DecodingArgs,
) -> CliResult<Vec<String>> {
    let device = model.shared.weight.device();
    let config = decoding.config();
    let mut outputs = Vec::with_capacity(prompts.len());
    let batch = decoding.generation_batch_size.max(1);
    for (number, chunk) in prompts.chunks(batch).enumerate() {
        let encoded: Vec<Vec<u32>> = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| decoding.prompt_ids(tokenizer, p, number * batch + i))
            .collect::<CliResult<_>>()?;
        let width = encoded.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut ids = Vec::with_capacity(chunk.len() * width);
        let mut mask = Vec::with_capacity(chunk.len() * width);
        for sequence in &encoded {
            for i in 0..width {
                ids.push(
                    sequence
                        .get(i)
                        .map_or(model.config.pad_token_id as i64, |t| *t as i64),
                );
                mask.push(i64::from(i < sequence.len()));
            }
        }
        let shape = [chunk.len(), width];
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, shape), &device);
        let mask = Tensor::<B, 2, Int>::from_data(TensorData::new(mask, shape), &device);
        for sequence in model.generate(ids, mask, &config)? {
            let tokens = generated_tokens(
                &sequence,
                model.config.decoder_start_token_id,
                model.config.eos_token_id,
            );
            outputs.push(tokenizer.decode(&tokens)?);
        }
    }
    Ok(outputs)
}

/// Generates for every source of `pairs` and scores the outputs against the targets.
pub fn evaluate<B: Backend>(
    model: &T5ForConditionalGeneration<B>,
    tokenizer: &T5Tokenizer,
    pairs: &[(String, String)],
    decoding: &DecodingArgs,
) -> CliResult<(EvalReport, Vec<String>)> {
    let prompts: Vec<String> = pairs.iter().map(|(s, _)| s.clone()).collect();
    let references: Vec<&str> = pairs.iter().map(|(_, t)| t.as_str()).collect();
    let predictions = generate_texts(model, tokenizer, &prompts, decoding)?;
    let report = EvalReport::compute(&predictions, &references)?
        .with_schema(&predictions, |v| {
            lora_burn::uidsl::validate_uidsl(v).is_ok()
        })?;
    Ok((report, predictions))
}

/// `dir` if it exists, else an error naming it.
pub fn existing(dir: &Path, what: &str) -> CliResult<PathBuf> {
    if dir.exists() {
        Ok(dir.to_path_buf())
    } else {
        Err(format!("{what} `{}` does not exist", dir.display()).into())
    }
}
