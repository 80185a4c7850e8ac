//! The training loop: AdamW, warm-up and decay, gradient accumulation, global-norm clipping,
//! evaluation, checkpoints with exact resume, best-model keeping and early stopping, for the
//! LoRA adapters of a model or for all its parameters.

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::record::{BinFileRecorder, FullPrecisionSettings, Recorder};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::Tensor;
use lora_core::{on_compute_threads, LoraModelOps, LoraModule};
use lora_peft_io::{AdapterConfig, SaveOptions};

use crate::data::{Seq2SeqCollator, TokenizedExample};
use crate::run_settings::{differences, run_settings};
use crate::{
    clip_global_norm, epoch_order, DecayKind, LogEntry, LogWindow, LrSchedule, Seq2SeqModel,
    TrainError, TrainEvent, TrainerState,
};

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
    /// Start afresh in an `output_dir` that holds an earlier run's outputs, deleting them
    /// (`metrics.jsonl`, `best/`, `final/`, `checkpoint-*/`); without it such a directory is
    /// refused unless the run resumes.
    #[serde(default)]
    pub overwrite_output_dir: bool,
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
            overwrite_output_dir: false,
        }
    }
}

impl TrainerConfig {
    /// AdamW with this run's decay, ε and β.
    pub(crate) fn adamw(&self) -> AdamWConfig {
        AdamWConfig::new()
            .with_weight_decay(self.weight_decay as f32)
            .with_epsilon(self.adam_epsilon as f32)
            .with_beta_1(self.adam_beta1 as f32)
            .with_beta_2(self.adam_beta2 as f32)
    }

    /// The learning rate of each step of a run of `total` steps.
    pub(crate) fn schedule(&self, total: usize) -> LrSchedule {
        LrSchedule {
            peak: self.learning_rate,
            warmup_steps: self.warmup_steps,
            total_steps: total,
            decay: self.decay,
        }
    }
}

/// What a run trains and what its saved directories hold.
// One value per run: the size of the adapter config does not matter, and boxing it would only
// make the variant awkward to build.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum TrainingMode {
    /// The LoRA adapter `name`, everything else frozen (PEFT's `get_peft_model`); the run
    /// makes it the model's only active adapter, as PEFT trains the active one. `best/`,
    /// `final/` and every `checkpoint-<step>/` hold it as a PEFT adapter directory with
    /// `config` as its `adapter_config.json`, under the default adapter name.
    Adapter {
        /// The adapter in the model that trains.
        name: String,
        /// Written with every saved adapter.
        config: AdapterConfig,
    },
    /// Every parameter, frozen LoRA bases included: pretraining or full fine-tuning.
    /// Checkpoints hold the whole model as a Burn record (`model.bin`); the best model is
    /// returned in [`TrainOutcome::model`] for the caller to save in its own format (for T5,
    /// `save_pretrained`), and no `best/` or `final/` directory is written.
    Full,
}

/// What a finished run returns.
#[derive(Debug)]
pub struct TrainOutcome<M> {
    /// The model with the best weights (by validation loss) when there was an evaluation,
    /// else the last ones.
    pub model: M,
    /// The final trainer state, with the metrics history.
    pub state: TrainerState,
}

/// What an optimizer step hands to [`Trainer::finish_step`].
pub(crate) struct StepEnd {
    /// The step's learning rate.
    pub(crate) learning_rate: f64,
    /// The global gradient norm before clipping.
    pub(crate) grad_norm: f64,
    /// Whether an evaluation was due (a log line is, then).
    pub(crate) eval_due: bool,
    /// The validation loss, when there was an evaluation.
    pub(crate) eval_loss: Option<f64>,
    /// All optimizer steps of the run.
    pub(crate) total_steps: usize,
}

/// Trains a [`Seq2SeqModel`] and writes everything under `output_dir`: `metrics.jsonl`,
/// `checkpoint-<step>/` (the trained weights, `trainer_state.json` and `optimizer.bin`), and
/// for [`TrainingMode::Adapter`] `best/` and `final/` (PEFT adapters).
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use lora_peft_io::{inject_adapter, AdapterConfig, ModuleSelector};
/// use lora_train::data::{Seq2SeqCollator, TokenizedExample};
/// use lora_train::{Trainer, TrainerConfig, TrainingMode};
///
/// type B = Autodiff<NdArray>;
/// let t5 = lora_t5::T5Config { vocab_size: 16, d_model: 8, d_kv: 4, num_heads: 2, d_ff: 16,
///     num_layers: 1, num_decoder_layers: 1, ..Default::default() };
/// let mut model = lora_t5::T5ForConditionalGeneration::<B>::new(&t5, &Default::default());
/// let targets = ModuleSelector::Names(vec!["q".into(), "v".into()]);
/// let adapter = AdapterConfig::from_lora_config(&lora_core::LoraConfig::new(2, 4.0), targets).unwrap();
/// inject_adapter(&mut model, &adapter, "default").unwrap();
/// let trainer = Trainer {
///     config: TrainerConfig { max_steps: Some(2), batch_size: 2, ..Default::default() },
///     output_dir: std::env::temp_dir().join(format!("lora-train-doc-{}", std::process::id())),
///     mode: TrainingMode::Adapter { name: "default".into(), config: adapter },
///     collator: Seq2SeqCollator { max_source_len: 8, max_target_len: 8, pad_id: 0 },
/// };
/// let data = vec![TokenizedExample { source: vec![4, 5, 1], target: vec![5, 4, 1] }; 4];
/// let outcome = trainer.train(model, &data, &data[..2], false).unwrap();
/// assert_eq!(outcome.state.step, 2);
/// assert!(trainer.output_dir.join("final/adapter_model.safetensors").is_file());
/// # std::fs::remove_dir_all(&trainer.output_dir).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Trainer {
    /// Hyper-parameters.
    pub config: TrainerConfig,
    /// Where outputs go.
    pub output_dir: PathBuf,
    /// The adapter or the whole model.
    pub mode: TrainingMode,
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

    pub(crate) fn validate(&self, train: &[TokenizedExample]) -> Result<(), TrainError> {
        let c = &self.config;
        let bad = |reason: String| Err(TrainError::InvalidInput { reason });
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
    /// is set (same data, same config). What trains is set by [`Trainer::mode`].
    ///
    /// A resumed run writes what the uninterrupted one writes: each checkpoint records the
    /// run's settings and data fingerprint, the open log window and (when it is not the
    /// checkpoint's own weights) the best model so far, so `best/`, `final/`, `metrics.jsonl`
    /// and the returned state come out the same. A resume without a complete checkpoint starts
    /// the run over, deleting its earlier outputs, unless the run had finished (`final/`
    /// written): that is refused as another run would be.
    ///
    /// # Errors
    /// A bad configuration, empty data or a token id outside the model's vocabulary
    /// ([`TrainError::InvalidInput`]); an `output_dir` holding another run's outputs without
    /// `resume` or [`TrainerConfig::overwrite_output_dir`] ([`TrainError::OutputDirInUse`]); a
    /// resume with other settings or data than the checkpoint's ([`TrainError::ResumeMismatch`],
    /// naming each difference); the model's refusal of a batch, and any failure to write or
    /// read back the outputs, naming the file.
    pub fn train<B, M>(
        &self,
        model: M,
        train: &[TokenizedExample],
        valid: &[TokenizedExample],
        resume: bool,
    ) -> Result<TrainOutcome<M>, TrainError>
    where
        B: AutodiffBackend,
        M: Seq2SeqModel<B> + AutodiffModule<B>,
        M::InnerModule: Seq2SeqModel<B::InnerBackend>,
    {
        self.train_observed(model, train, valid, resume, &mut |_| {})
    }

    /// [`Trainer::train`], reporting each [`TrainEvent`] to `observer` as it happens.
    ///
    /// # Errors
    /// As [`Trainer::train`].
    pub fn train_observed<B, M>(
        &self,
        model: M,
        train: &[TokenizedExample],
        valid: &[TokenizedExample],
        resume: bool,
        observer: &mut dyn FnMut(&TrainEvent),
    ) -> Result<TrainOutcome<M>, TrainError>
    where
        B: AutodiffBackend,
        M: Seq2SeqModel<B> + AutodiffModule<B>,
        M::InnerModule: Seq2SeqModel<B::InnerBackend>,
    {
        self.validate(train)?;
        check_token_ids(train, model.vocab_size(), "training")?;
        check_token_ids(valid, model.vocab_size(), "validation")?;
        let c = &self.config;
        std::fs::create_dir_all(&self.output_dir).map_err(|source| TrainError::Io {
            path: self.output_dir.clone(),
            source,
        })?;
        let device = model.device();
        let mut model = match &self.mode {
            // Only the adapters train, as with PEFT's get_peft_model.
            // The adapter becomes the active one: an adapter that is not active is frozen.
            TrainingMode::Adapter { name, config } => {
                let mut model = model;
                model.set_adapter(&[name])?;
                lora_core::mark_only_lora_as_trainable(model, config.bias())
            }
            TrainingMode::Full => lora_core::mark_all_as_trainable(model),
        };
        let mut optimizer = c.adamw().init::<B, M>();
        let settings = run_settings(self, train, valid);
        let mut state = TrainerState::default();
        let mut best_model = None;
        let checkpoint = if resume {
            self.latest_checkpoint()?
        } else {
            None
        };
        match checkpoint {
            Some(checkpoint) => {
                state = TrainerState::read(&checkpoint.join("trainer_state.json"))?;
                if let Some(saved) = &state.settings {
                    let differences = differences(saved, &settings);
                    if !differences.is_empty() {
                        return Err(TrainError::ResumeMismatch {
                            path: checkpoint,
                            differences,
                        });
                    }
                }
                model = self.restore(model, &checkpoint, &state, &device)?;
                let path = checkpoint.join("optimizer");
                let record = BinFileRecorder::<FullPrecisionSettings>::new()
                    .load(path.clone(), &device)
                    .map_err(|e| TrainError::Checkpoint {
                        path,
                        reason: format!("optimizer state: {e}"),
                    })?;
                optimizer = optimizer.load_record(record);
                best_model = self.restore_best(&model, &checkpoint, &state, &device)?;
                // Only the checkpoint needs them; each checkpoint writes them anew.
                state.param_ids.clear();
                // What the run wrote after this checkpoint is written again as it replays.
                self.write_log(&state.history)?;
                if let Some(best) = &best_model {
                    self.save_adapter(best, &self.output_dir.join("best"))?;
                }
            }
            None => {
                // A resume without a checkpoint starts over a run that was interrupted before
                // its first one; a finished run (`final/`) is not deleted that way.
                let interrupted = resume && !self.output_dir.join("final").exists();
                self.clear_outputs(interrupted || c.overwrite_output_dir)?
            }
        }
        state.settings = Some(settings);
        let total = self.total_steps(train.len());
        let schedule = c.schedule(total);
        observer(&TrainEvent::Started {
            total_steps: total,
            start_step: state.step,
        });
        let mut accumulator = GradientsAccumulator::<M>::new();
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
                state.window.tokens += examples
                    .iter()
                    .map(|p| p.source.len() + p.target.len())
                    .sum::<usize>();
                let step = state.step + 1;
                // The forward and backward passes, on the compute threads.
                let (value, grads) = on_compute_threads(|| {
                    let loss = model.seq2seq_loss(batch)?;
                    let loss = loss / c.gradient_accumulation_steps as f64;
                    let value = scalar(loss.clone()) * c.gradient_accumulation_steps as f64;
                    if !value.is_finite() {
                        return Err(TrainError::NonFiniteLoss {
                            what: "training",
                            step,
                            loss: value,
                        });
                    }
                    Ok((value, GradientsParams::from_grads(loss.backward(), &model)))
                })?;
                state.window.loss_sum += value;
                state.window.batches += 1;
                accumulator.accumulate(&model, grads);
                state.batch_in_epoch += 1;
                state.micro_batches += 1;
                let end_of_epoch = state.batch_in_epoch == batches.len();
                if state.micro_batches % c.gradient_accumulation_steps != 0 && !end_of_epoch {
                    continue;
                }
                let mut grads = accumulator.grads();
                let grad_norm =
                    clip_global_norm(&model, &mut grads, c.max_grad_norm.unwrap_or(f64::INFINITY));
                let lr = schedule.at(state.step);
                model = optimizer.step(lr, model, grads);
                state.step += 1;
                let eval_now = self.eval_due(&state, end_of_epoch, total);
                let eval_loss = if eval_now && !valid.is_empty() {
                    Some(evaluate_loss(
                        &model.valid(),
                        valid,
                        c.batch_size,
                        &self.collator,
                    )?)
                } else {
                    None
                };
                let step = StepEnd {
                    learning_rate: lr,
                    grad_norm,
                    eval_due: eval_now,
                    eval_loss,
                    total_steps: total,
                };
                stop = self.finish_step(
                    &mut state,
                    &step,
                    &model,
                    &mut best_model,
                    &mut window_start,
                    observer,
                )?;
                if c.save_every > 0 && state.step % c.save_every == 0 {
                    let dir = self.checkpoint(&model, best_model.as_ref(), &optimizer, &state)?;
                    observer(&TrainEvent::Saved { dir: &dir });
                }
                if stop {
                    break 'epochs;
                }
            }
            state.epoch += 1;
            state.batch_in_epoch = 0;
        }
        let model = best_model.unwrap_or(model);
        let dir = self.output_dir.join("final");
        if self.save_adapter(&model, &dir)? {
            observer(&TrainEvent::Saved { dir: &dir });
        }
        observer(&TrainEvent::Finished);
        Ok(TrainOutcome { model, state })
    }

    /// Whether optimizer step `state.step` (just taken) ends with an evaluation: every
    /// `eval_every` steps, else at the end of each epoch, and at the last step.
    pub(crate) fn eval_due(&self, state: &TrainerState, end_of_epoch: bool, total: usize) -> bool {
        let c = &self.config;
        (c.eval_every > 0 && state.step.is_multiple_of(c.eval_every))
            || (c.eval_every == 0 && end_of_epoch)
            || state.step == total
    }

    /// The bookkeeping after optimizer step `state.step`: the log line when one is due (with
    /// the validation loss when there was an evaluation), the best model and `best/` when it
    /// improved, early stopping. Returns whether the run stops (patience or the last step).
    ///
    /// # Errors
    /// A non-finite validation loss, and failures to write `best/` or `metrics.jsonl`.
    pub(crate) fn finish_step<B: Backend, M: LoraModule<B> + Clone>(
        &self,
        state: &mut TrainerState,
        step: &StepEnd,
        model: &M,
        best_model: &mut Option<M>,
        window_start: &mut Instant,
        observer: &mut dyn FnMut(&TrainEvent),
    ) -> Result<bool, TrainError> {
        let c = &self.config;
        let mut stop = false;
        let log_now = state.step.is_multiple_of(c.log_every.max(1)) || step.eval_due;
        let mut entry = None;
        if log_now {
            let seconds = window_start.elapsed().as_secs_f64().max(1e-9);
            entry = Some(LogEntry {
                step: state.step,
                epoch: state.epoch,
                loss: state.window.loss_sum / state.window.batches.max(1) as f64,
                learning_rate: step.learning_rate,
                grad_norm: step.grad_norm,
                tokens_per_second: state.window.tokens as f64 / seconds,
                eval_loss: None,
            });
            state.window = LogWindow::default();
            *window_start = Instant::now();
        }
        if let Some(eval_loss) = step.eval_loss {
            if !eval_loss.is_finite() {
                return Err(TrainError::NonFiniteLoss {
                    what: "validation",
                    step: state.step,
                    loss: eval_loss,
                });
            }
            if let Some(e) = entry.as_mut() {
                e.eval_loss = Some(eval_loss);
            }
            let improved = state.best.is_none_or(|(best, _)| eval_loss < best);
            if improved {
                state.best = Some((eval_loss, state.step));
                state.evals_without_improvement = 0;
                *best_model = Some(model.clone());
                let dir = self.output_dir.join("best");
                if self.save_adapter(model, &dir)? {
                    observer(&TrainEvent::Saved { dir: &dir });
                }
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
            if let Some(entry) = state.history.last() {
                observer(&TrainEvent::Logged {
                    entry,
                    history: &state.history,
                });
            }
        }
        Ok(stop || state.step >= step.total_steps)
    }

    /// Writes the trained adapter to `dir` as the default adapter of a PEFT directory, whatever
    /// its name in the model; `false` (nothing written) when the whole model trains.
    pub(crate) fn save_adapter<B: Backend, M: LoraModule<B> + Clone>(
        &self,
        model: &M,
        dir: &Path,
    ) -> Result<bool, TrainError> {
        let TrainingMode::Adapter { name, config } = &self.mode else {
            return Ok(false);
        };
        let mut copy = model.clone();
        if name != lora_core::DEFAULT_ADAPTER_NAME {
            // Another adapter of the model may hold the name (concurrent runs).
            if copy
                .adapter_names()
                .iter()
                .any(|n| n == lora_core::DEFAULT_ADAPTER_NAME)
            {
                copy.delete_adapter(lora_core::DEFAULT_ADAPTER_NAME)?;
            }
            copy.rename_adapter(name, lora_core::DEFAULT_ADAPTER_NAME)?;
        }
        lora_peft_io::save_adapter(
            &copy,
            dir,
            lora_core::DEFAULT_ADAPTER_NAME,
            config,
            SaveOptions::default(),
        )?;
        Ok(true)
    }

    /// Writes `checkpoint-<step>/`: the trained weights, the best model when it is not those
    /// (`best/` or `best_model.bin`), the optimizer state, and `trainer_state.json` last.
    fn checkpoint<
        B: AutodiffBackend,
        M: Seq2SeqModel<B> + AutodiffModule<B>,
        O: Optimizer<M, B>,
    >(
        &self,
        model: &M,
        best_model: Option<&M>,
        optimizer: &O,
        state: &TrainerState,
    ) -> Result<PathBuf, TrainError> {
        let dir = self.output_dir.join(format!("checkpoint-{}", state.step));
        // An incomplete checkpoint of the same step from an interrupted attempt goes first.
        remove_if_present(&dir)?;
        std::fs::create_dir_all(&dir).map_err(|source| TrainError::Io {
            path: dir.clone(),
            source,
        })?;
        let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
        let mut state = state.clone();
        let best_elsewhere =
            best_model.filter(|_| state.best.is_some_and(|(_, s)| s != state.step));
        match &self.mode {
            TrainingMode::Adapter { name, .. } => {
                self.save_adapter(model, &dir)?;
                state.param_ids = adapter_param_ids(model, name);
                if let Some(best) = best_elsewhere {
                    self.save_adapter(best, &dir.join("best"))?;
                }
            }
            TrainingMode::Full => {
                let models = std::iter::once((model, "model"))
                    .chain(best_elsewhere.map(|b| (b, "best_model")));
                for (weights, file) in models {
                    let path = dir.join(file);
                    weights
                        .clone()
                        .save_file(path.clone(), &recorder)
                        .map_err(|e| TrainError::Checkpoint {
                            path,
                            reason: format!("could not save the model: {e}"),
                        })?;
                }
            }
        }
        let path = dir.join("optimizer");
        recorder
            .record(optimizer.to_record(), path.clone())
            .map_err(|e| TrainError::Checkpoint {
                path,
                reason: format!("could not save the optimizer state: {e}"),
            })?;
        // The state is written last: a checkpoint without it is incomplete and ignored.
        state.write(&dir.join("trainer_state.json"))?;
        Ok(dir)
    }

    /// The checkpoint with the highest step that has a `trainer_state.json`.
    ///
    /// # Errors
    /// None today (a missing or unreadable output directory has no checkpoint); kept fallible
    /// for checks of the checkpoints' contents.
    pub fn latest_checkpoint(&self) -> Result<Option<PathBuf>, TrainError> {
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

    /// The model with the trained weights of `checkpoint`, their parameter ids as the
    /// optimizer state knows them.
    fn restore<B: AutodiffBackend, M: Seq2SeqModel<B> + AutodiffModule<B>>(
        &self,
        mut model: M,
        checkpoint: &Path,
        state: &TrainerState,
        device: &B::Device,
    ) -> Result<M, TrainError> {
        let name = match &self.mode {
            TrainingMode::Adapter { name, .. } => name,
            TrainingMode::Full => {
                let model = load_record(model, &checkpoint.join("model"), "model state", device)?;
                return Ok(lora_core::mark_all_as_trainable(model));
            }
        };
        model.delete_adapter(name)?;
        lora_peft_io::load_adapter(&mut model, checkpoint, name)?;
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
        });
        model.set_adapter(&[name.as_str()])?;
        Ok(model)
    }

    /// The best model recorded by `checkpoint` (restored as `model` already is): `model` itself
    /// when the best evaluation was at the checkpoint's step, else the checkpoint's `best/`
    /// adapter or `best_model.bin`; `None` before any evaluation.
    fn restore_best<B: AutodiffBackend, M: Seq2SeqModel<B> + AutodiffModule<B>>(
        &self,
        model: &M,
        checkpoint: &Path,
        state: &TrainerState,
        device: &B::Device,
    ) -> Result<Option<M>, TrainError> {
        let Some((_, best_step)) = state.best else {
            return Ok(None);
        };
        if best_step == state.step {
            return Ok(Some(model.clone()));
        }
        let mut best = model.clone();
        match &self.mode {
            TrainingMode::Adapter { name, .. } => {
                best.delete_adapter(name)?;
                lora_peft_io::load_adapter(&mut best, &checkpoint.join("best"), name)?;
                best.set_adapter(&[name.as_str()])?;
                Ok(Some(best))
            }
            TrainingMode::Full => {
                let path = checkpoint.join("best_model");
                Ok(Some(load_record(best, &path, "best model", device)?))
            }
        }
    }

    /// Before a run that starts from step 0: deletes the outputs of an earlier run in
    /// `output_dir` when `allowed` (a resume of a run interrupted before its first checkpoint,
    /// or `overwrite_output_dir`), else refuses them.
    pub(crate) fn clear_outputs(&self, allowed: bool) -> Result<(), TrainError> {
        let entries = std::fs::read_dir(&self.output_dir).map_err(|source| TrainError::Io {
            path: self.output_dir.clone(),
            source,
        })?;
        let mut outputs: Vec<PathBuf> = entries
            .flatten()
            .filter(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                matches!(name.as_str(), "metrics.jsonl" | "best" | "final")
                    || name.starts_with("checkpoint-")
            })
            .map(|entry| entry.path())
            .collect();
        outputs.sort();
        if outputs.is_empty() {
            return Ok(());
        }
        if !allowed {
            let names: Vec<String> = outputs
                .iter()
                .filter_map(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .collect();
            return Err(TrainError::OutputDirInUse {
                path: self.output_dir.clone(),
                found: names.join(", "),
            });
        }
        outputs.iter().try_for_each(|path| remove_if_present(path))
    }

    /// Replaces `metrics.jsonl` with `history`, atomically.
    fn write_log(&self, history: &[LogEntry]) -> Result<(), TrainError> {
        let mut text = String::new();
        for entry in history {
            text.push_str(&serde_json::to_string(entry).expect("log entries serialise"));
            text.push('\n');
        }
        Ok(lora_hf::write_atomic(
            &self.output_dir.join("metrics.jsonl"),
            text.as_bytes(),
        )?)
    }

    pub(crate) fn append_log(&self, entry: &LogEntry) -> Result<(), TrainError> {
        use std::io::Write;
        let path = self.output_dir.join("metrics.jsonl");
        let line = serde_json::to_string(entry).expect("log entries serialise");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| TrainError::Io {
                path: path.clone(),
                source,
            })?;
        writeln!(file, "{line}").map_err(|source| TrainError::Io { path, source })
    }
}

/// `model` with the Burn record at `path` (`what` names it in the error).
fn load_record<B: Backend, M: burn::module::Module<B>>(
    model: M,
    path: &Path,
    what: &str,
    device: &B::Device,
) -> Result<M, TrainError> {
    let recorder = BinFileRecorder::<FullPrecisionSettings>::new();
    model
        .load_file(path.to_path_buf(), &recorder, device)
        .map_err(|e| TrainError::Checkpoint {
            path: path.to_path_buf(),
            reason: format!("{what}: {e}"),
        })
}

/// Deletes a file or directory tree; nothing to do when it is absent.
fn remove_if_present(path: &Path) -> Result<(), TrainError> {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    match result {
        Err(source) if source.kind() != std::io::ErrorKind::NotFound => Err(TrainError::Io {
            path: path.to_path_buf(),
            source,
        }),
        _ => Ok(()),
    }
}

fn with_id<B: Backend, const D: usize>(
    param: &Param<Tensor<B, D>>,
    id: u64,
) -> Param<Tensor<B, D>> {
    Param::initialized(ParamId::from(id), param.val())
}

fn adapter_param_ids<B: Backend, M: LoraModule<B>>(
    model: &M,
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

/// The mean validation loss per target token of `model` over `examples`, in batches of
/// `batch_size`.
///
/// # Errors
/// [`TrainError::InvalidInput`] for a token id outside the model's vocabulary, and a batch the
/// collator or the model refuses.
pub fn evaluate_loss<B: Backend, M: Seq2SeqModel<B>>(
    model: &M,
    examples: &[TokenizedExample],
    batch_size: usize,
    collator: &Seq2SeqCollator,
) -> Result<f64, TrainError> {
    check_token_ids(examples, model.vocab_size(), "evaluation")?;
    let device = model.device();
    let (mut total, mut tokens) = (0.0, 0usize);
    for chunk in examples.chunks(batch_size.max(1)) {
        let batch = collator.collate::<B>(chunk, &device)?;
        let count: usize = chunk
            .iter()
            .map(|p| p.target.len().min(collator.max_target_len))
            .sum();
        total += on_compute_threads(|| model.seq2seq_loss(batch).map(scalar))? * count as f64;
        tokens += count;
    }
    Ok(total / tokens.max(1) as f64)
}

/// Refuses an example holding a token id the model does not know, before any batch is built
/// (the model's forward pass does not read ids back).
pub(crate) fn check_token_ids(
    examples: &[TokenizedExample],
    vocab_size: usize,
    what: &str,
) -> Result<(), TrainError> {
    for (index, example) in examples.iter().enumerate() {
        for (side, ids) in [("source", &example.source), ("target", &example.target)] {
            if let Some(bad) = ids.iter().find(|id| **id as usize >= vocab_size) {
                return Err(TrainError::InvalidInput {
                    reason: format!(
                        "{what} example {index}: {side} token id {bad} is outside the model's \
                         vocabulary of {vocab_size}"
                    ),
                });
            }
        }
    }
    Ok(())
}

pub(crate) fn scalar<B: Backend>(t: Tensor<B, 1>) -> f64 {
    burn::tensor::ElementConversion::elem::<f64>(t.into_scalar())
}
