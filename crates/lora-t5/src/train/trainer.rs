//! LoRA fine-tuning of T5: AdamW, warm-up and decay, gradient accumulation, global-norm
//! clipping, evaluation, PEFT checkpoints with exact resume, best-adapter keeping and early
//! stopping.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use lora_core::LoraModule;
use lora_peft_io::{AdapterConfig, SaveOptions};

use crate::data::{Seq2SeqCollator, TokenizedExample};
use crate::train::clip::clip_global_norm;
use crate::train::plot::{write_curves_png, Curve};
use crate::train::progress::Progress;
use crate::train::schedule::{DecayKind, LrSchedule};
use crate::train::state::{LogEntry, TrainerState};
use crate::{T5Error, T5ForConditionalGeneration};

/// Hyper-parameters of a run (transformers' `TrainingArguments` names where they exist).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainerConfig {
    /// Peak learning rate.
    pub learning_rate: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// AdamW ε.
    pub adam_epsilon: f64,
    /// AdamW β₁.
    pub adam_beta1: f64,
    /// AdamW β₂.
    pub adam_beta2: f64,
    /// Linear warm-up steps.
    pub warmup_steps: usize,
    /// Decay after warm-up.
    pub decay: DecayKind,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub gradient_accumulation_steps: usize,
    /// Clip the global gradient norm to this (None: no clipping).
    pub max_grad_norm: Option<f64>,
    /// Passes over the training data.
    pub epochs: usize,
    /// Stop after this many optimizer steps (overrides `epochs`).
    pub max_steps: Option<usize>,
    /// Evaluate every this many steps (0: at the end of each epoch).
    pub eval_every: usize,
    /// Save a checkpoint every this many steps (0: never).
    pub save_every: usize,
    /// Log every this many steps.
    pub log_every: usize,
    /// Stop after this many evaluations without improvement (None: never).
    pub patience: Option<usize>,
    /// Seed of shuffling and dropout.
    pub seed: u64,
    /// Show a progress line on standard error.
    pub progress: bool,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            learning_rate: 1e-3,
            weight_decay: 0.01,
            adam_epsilon: 1e-8,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            warmup_steps: 0,
            decay: DecayKind::Linear,
            batch_size: 8,
            gradient_accumulation_steps: 1,
            max_grad_norm: Some(1.0),
            epochs: 1,
            max_steps: None,
            eval_every: 0,
            save_every: 0,
            log_every: 10,
            patience: None,
            seed: 42,
            progress: true,
        }
    }
}

/// What a finished run returns.
#[derive(Debug)]
pub struct TrainOutcome<B: AutodiffBackend> {
    /// The model with the best adapter (by validation loss) when there was an evaluation,
    /// else the last one.
    pub model: T5ForConditionalGeneration<B>,
    /// The final trainer state, with the metrics history.
    pub state: TrainerState,
}

/// Trains adapter `adapter_name` of a T5 model and writes everything under `output_dir`:
/// `metrics.jsonl`, `loss.png`, `checkpoint-<step>/` (PEFT adapter + `trainer_state.json` +
/// `optimizer.bin`), `best/` and `final/` (PEFT adapters).
#[derive(Debug, Clone)]
pub struct Trainer {
    /// Hyper-parameters.
    pub config: TrainerConfig,
    /// Where outputs go.
    pub output_dir: PathBuf,
    /// The adapter being trained.
    pub adapter_name: String,
    /// Written with every saved adapter.
    pub adapter_config: AdapterConfig,
    /// Batches the examples (padding, truncation to the maximum lengths).
    pub collator: Seq2SeqCollator,
}

impl Trainer {
    /// The number of optimizer steps the run will make for `examples` training examples.
    pub fn total_steps(&self, examples: usize) -> usize {
        let c = &self.config;
        let micro = examples.div_ceil(c.batch_size.max(1));
        let per_epoch = micro.div_ceil(c.gradient_accumulation_steps.max(1)).max(1);
        c.max_steps.unwrap_or(per_epoch * c.epochs)
    }

    fn validate(&self, train: &[TokenizedExample]) -> Result<(), T5Error> {
        let c = &self.config;
        let bad = |reason: String| Err(T5Error::InvalidInput { reason });
        if train.is_empty() {
            return bad("no training examples".into());
        }
        if c.batch_size == 0 || c.gradient_accumulation_steps == 0 {
            return bad("batch_size and gradient_accumulation_steps must be at least 1".into());
        }
        if !(c.learning_rate > 0.0 && c.learning_rate.is_finite()) {
            return bad(format!(
                "learning_rate must be positive, got {}",
                c.learning_rate
            ));
        }
        if c.max_grad_norm.is_some_and(|n| n.is_nan() || n <= 0.0) {
            return bad("max_grad_norm must be positive".into());
        }
        if let Some(empty) = train
            .iter()
            .position(|p| p.source.is_empty() || p.target.is_empty())
        {
            return bad(format!(
                "training example {empty} has an empty source or target"
            ));
        }
        Ok(())
    }

    /// Runs training from scratch, or from the latest checkpoint in `output_dir` when `resume`
    /// is set (same data, same config). Everything but the LoRA adapters is frozen first.
    pub fn train<B: AutodiffBackend>(
        &self,
        model: T5ForConditionalGeneration<B>,
        train: &[TokenizedExample],
        valid: &[TokenizedExample],
        resume: bool,
    ) -> Result<TrainOutcome<B>, T5Error> {
        self.validate(train)?;
        let c = &self.config;
        std::fs::create_dir_all(&self.output_dir).map_err(|source| T5Error::Io {
            path: self.output_dir.clone(),
            source,
        })?;
        let device = model.shared.weight.device();
        // Only the adapters train, as with PEFT's get_peft_model.
        let mut model = lora_core::mark_only_lora_as_trainable(model, self.adapter_config.bias());
        let mut optimizer = AdamWConfig::new()
            .with_weight_decay(c.weight_decay as f32)
            .with_epsilon(c.adam_epsilon as f32)
            .with_beta_1(c.adam_beta1 as f32)
            .with_beta_2(c.adam_beta2 as f32)
            .init::<B, T5ForConditionalGeneration<B>>();
        let mut state = TrainerState::default();
        if resume {
            if let Some(checkpoint) = self.latest_checkpoint()? {
                state = TrainerState::read(&checkpoint.join("trainer_state.json"))?;
                model = self.restore_adapter(model, &checkpoint, &state)?;
                let record = BinFileRecorder::<FullPrecisionSettings>::new()
                    .load(checkpoint.join("optimizer"), &device)
                    .map_err(|e| T5Error::InvalidInput {
                        reason: format!("{}: optimizer state: {e}", checkpoint.display()),
                    })?;
                optimizer = optimizer.load_record(record);
            }
        }
        let total = self.total_steps(train.len());
        let schedule = LrSchedule {
            peak: c.learning_rate,
            warmup_steps: c.warmup_steps,
            total_steps: total,
            decay: c.decay,
        };
        let progress = Progress::new(total, state.step, c.progress);
        let mut accumulator = GradientsAccumulator::<T5ForConditionalGeneration<B>>::new();
        let mut best_model = None;
        let (mut window_loss, mut window_batches, mut window_tokens) = (0.0, 0usize, 0usize);
        let mut window_start = Instant::now();
        let mut stop = state.step >= total;
        'epochs: while !stop {
            let order = epoch_order(train.len(), c.seed, state.epoch);
            let batches: Vec<&[usize]> = order.chunks(c.batch_size).collect();
            while state.batch_in_epoch < batches.len() {
                let indices = batches[state.batch_in_epoch];
                B::seed(&device, c.seed.wrapping_add(state.micro_batches as u64));
                let examples: Vec<TokenizedExample> =
                    indices.iter().map(|i| train[*i].clone()).collect();
                let batch = self.collator.collate::<B>(&examples, &device)?;
                window_tokens += examples
                    .iter()
                    .map(|p| p.source.len() + p.target.len())
                    .sum::<usize>();
                let loss = model.loss(batch.input_ids, batch.attention_mask, batch.labels)?;
                let loss = loss / c.gradient_accumulation_steps as f64;
                window_loss += scalar(loss.clone()) * c.gradient_accumulation_steps as f64;
                window_batches += 1;
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                accumulator.accumulate(&model, grads);
                state.batch_in_epoch += 1;
                state.micro_batches += 1;
                let end_of_epoch = state.batch_in_epoch == batches.len();
                if state.micro_batches % c.gradient_accumulation_steps != 0 && !end_of_epoch {
                    continue;
                }
                let mut grads = accumulator.grads();
                let grad_norm = match c.max_grad_norm {
                    Some(max) => clip_global_norm(&model, &mut grads, max),
                    None => clip_global_norm(&model, &mut grads, f64::INFINITY),
                };
                let lr = schedule.at(state.step);
                model = optimizer.step(lr, model, grads);
                state.step += 1;
                let eval_now = (c.eval_every > 0 && state.step % c.eval_every == 0)
                    || (c.eval_every == 0 && end_of_epoch)
                    || state.step == total;
                let log_now = state.step % c.log_every.max(1) == 0 || eval_now;
                let mut entry = None;
                if log_now {
                    let seconds = window_start.elapsed().as_secs_f64().max(1e-9);
                    let loss = window_loss / window_batches.max(1) as f64;
                    let tokens_per_second = window_tokens as f64 / seconds;
                    progress.show(state.step, loss, lr, tokens_per_second);
                    entry = Some(LogEntry {
                        step: state.step,
                        epoch: state.epoch,
                        loss,
                        learning_rate: lr,
                        grad_norm,
                        tokens_per_second,
                        eval_loss: None,
                    });
                    (window_loss, window_batches, window_tokens) = (0.0, 0, 0);
                    window_start = Instant::now();
                }
                if eval_now && !valid.is_empty() {
                    let eval_loss =
                        evaluate_loss(&model.valid(), valid, c.batch_size, &self.collator)?;
                    if let Some(e) = entry.as_mut() {
                        e.eval_loss = Some(eval_loss);
                    }
                    let improved = state.best.is_none_or(|(best, _)| eval_loss < best);
                    if improved {
                        state.best = Some((eval_loss, state.step));
                        state.evals_without_improvement = 0;
                        best_model = Some(model.clone());
                        self.save_adapter(&model, &self.output_dir.join("best"))?;
                    } else {
                        state.evals_without_improvement += 1;
                    }
                    if c.patience
                        .is_some_and(|p| state.evals_without_improvement >= p)
                    {
                        stop = true;
                    }
                }
                if let Some(entry) = entry {
                    self.append_log(&entry)?;
                    state.history.push(entry);
                    self.plot(&state)?;
                }
                if c.save_every > 0 && state.step % c.save_every == 0 {
                    self.checkpoint(&model, &optimizer, &state)?;
                }
                if state.step >= total {
                    stop = true;
                }
                if stop {
                    break 'epochs;
                }
            }
            state.epoch += 1;
            state.batch_in_epoch = 0;
        }
        progress.finish();
        let model = match best_model {
            Some(best) => best,
            None => model,
        };
        self.save_adapter(&model, &self.output_dir.join("final"))?;
        Ok(TrainOutcome { model, state })
    }

    fn save_adapter<B: Backend>(
        &self,
        model: &T5ForConditionalGeneration<B>,
        dir: &Path,
    ) -> Result<(), T5Error> {
        // Saved as the default adapter of `dir`, whatever its name in the model.
        let mut copy = model.clone();
        if self.adapter_name != lora_core::DEFAULT_ADAPTER_NAME {
            copy.visit_lora_mut("", &mut |_, layer| {
                for adapter in layer.adapters.iter_mut() {
                    if adapter.name == self.adapter_name {
                        adapter.name = lora_core::DEFAULT_ADAPTER_NAME.to_string();
                    }
                }
            });
        }
        lora_peft_io::save_adapter(
            &copy,
            dir,
            lora_core::DEFAULT_ADAPTER_NAME,
            &self.adapter_config,
            SaveOptions::default(),
        )?;
        Ok(())
    }

    fn checkpoint<B: AutodiffBackend, O: Optimizer<T5ForConditionalGeneration<B>, B>>(
        &self,
        model: &T5ForConditionalGeneration<B>,
        optimizer: &O,
        state: &TrainerState,
    ) -> Result<(), T5Error> {
        let dir = self.output_dir.join(format!("checkpoint-{}", state.step));
        self.save_adapter(model, &dir)?;
        let mut state = state.clone();
        state.param_ids = adapter_param_ids(model, &self.adapter_name);
        BinFileRecorder::<FullPrecisionSettings>::new()
            .record(optimizer.to_record(), dir.join("optimizer"))
            .map_err(|e| T5Error::InvalidInput {
                reason: format!("{}: could not save the optimizer state: {e}", dir.display()),
            })?;
        // The state is written last: a checkpoint without it is incomplete and ignored.
        state.write(&dir.join("trainer_state.json"))
    }

    /// The checkpoint with the highest step that has a `trainer_state.json`.
    pub fn latest_checkpoint(&self) -> Result<Option<PathBuf>, T5Error> {
        let entries = match std::fs::read_dir(&self.output_dir) {
            Ok(entries) => entries,
            Err(_) => return Ok(None),
        };
        let mut best: Option<(usize, PathBuf)> = None;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(step) = name
                .strip_prefix("checkpoint-")
                .and_then(|s| s.parse::<usize>().ok())
            else {
                continue;
            };
            if entry.path().join("trainer_state.json").is_file()
                && best.as_ref().is_none_or(|(s, _)| step > *s)
            {
                best = Some((step, entry.path()));
            }
        }
        Ok(best.map(|(_, path)| path))
    }

    fn restore_adapter<B: AutodiffBackend>(
        &self,
        mut model: T5ForConditionalGeneration<B>,
        checkpoint: &Path,
        state: &TrainerState,
    ) -> Result<T5ForConditionalGeneration<B>, T5Error> {
        let name = &self.adapter_name;
        model.visit_lora_mut("", &mut |_, layer| {
            let _ = layer.delete_adapter(name);
        });
        lora_peft_io::load_adapter(&mut model, checkpoint, name, None)?;
        model.visit_lora_mut("", &mut |path, layer| {
            let Some(ids) = state.param_ids.get(path) else {
                return;
            };
            let Some(index) = layer.adapters.iter().position(|a| &a.name == name) else {
                return;
            };
            let adapter = &mut layer.adapters[index];
            adapter.lora_a = with_id(&adapter.lora_a, ids[0]);
            adapter.lora_b = with_id(&adapter.lora_b, ids[1]);
            if let (Some(m), Some(id)) = (adapter.magnitude.as_ref(), ids.get(2)) {
                adapter.magnitude = Some(with_id(m, *id));
            }
            let _ = layer.set_active_adapters(&[name.as_str()]);
        });
        Ok(model)
    }

    fn append_log(&self, entry: &LogEntry) -> Result<(), T5Error> {
        use std::io::Write;
        let path = self.output_dir.join("metrics.jsonl");
        let line = serde_json::to_string(entry).expect("log entries serialise");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| T5Error::Io {
                path: path.clone(),
                source,
            })?;
        writeln!(file, "{line}").map_err(|source| T5Error::Io { path, source })
    }

    fn plot(&self, state: &TrainerState) -> Result<(), T5Error> {
        let train = Curve {
            points: state
                .history
                .iter()
                .map(|e| (e.step as f64, e.loss))
                .collect(),
            rgb: [200, 40, 40],
        };
        let eval = Curve {
            points: state
                .history
                .iter()
                .filter_map(|e| e.eval_loss.map(|l| (e.step as f64, l)))
                .collect(),
            rgb: [40, 80, 200],
        };
        let path = self.output_dir.join("loss.png");
        write_curves_png(&path, &[train, eval], 640, 400)
    }
}

fn with_id<B: Backend, const D: usize>(
    param: &Param<Tensor<B, D>>,
    id: u64,
) -> Param<Tensor<B, D>> {
    Param::initialized(ParamId::from(id), param.val())
}

fn adapter_param_ids<B: Backend>(
    model: &T5ForConditionalGeneration<B>,
    name: &str,
) -> std::collections::BTreeMap<String, Vec<u64>> {
    let mut ids = std::collections::BTreeMap::new();
    model.visit_lora("", &mut |path, layer| {
        if let Some(adapter) = layer.adapter(name) {
            let mut list = vec![adapter.lora_a.id.val(), adapter.lora_b.id.val()];
            if let Some(m) = &adapter.magnitude {
                list.push(m.id.val());
            }
            ids.insert(path.to_string(), list);
        }
    });
    ids
}

/// The example order of `epoch`: a seeded shuffle, the same whenever it is recomputed.
fn epoch_order(count: usize, seed: u64, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..count).collect();
    let mut state =
        seed ^ (epoch as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ 0x5851_f42d_4c95_7f2d;
    for i in (1..order.len()).rev() {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        order.swap(i, (z % (i as u64 + 1)) as usize);
    }
    order
}

/// The mean validation loss per target token.
pub fn evaluate_loss<B: Backend>(
    model: &T5ForConditionalGeneration<B>,
    examples: &[TokenizedExample],
    batch_size: usize,
    collator: &Seq2SeqCollator,
) -> Result<f64, T5Error> {
    let device = model.shared.weight.device();
    let (mut total, mut tokens) = (0.0, 0usize);
    for chunk in examples.chunks(batch_size.max(1)) {
        let batch = collator.collate::<B>(chunk, &device)?;
        let count: usize = chunk
            .iter()
            .map(|p| p.target.len().min(collator.max_target_len))
            .sum();
        let loss = model.loss(batch.input_ids, batch.attention_mask, batch.labels)?;
        total += scalar(loss) * count as f64;
        tokens += count;
    }
    Ok(total / tokens.max(1) as f64)
}

fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    burn::tensor::ElementConversion::elem::<f64>(t.into_scalar())
}
