//! Several adapters trained in one batch on one resident base: each sample trains its own
//! run's adapter, and each run keeps its own optimizer, learning rate, schedule, shuffling,
//! evaluation, best adapter and early stopping.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use lora_core::{on_compute_threads, LoraBias, LoraModelOps, LoraModule};

use crate::data::TokenizedExample;
use crate::trainer::{check_token_ids, StepEnd};
use crate::{
    clip_global_norm, epoch_order, LrSchedule, Seq2SeqModel, TrainError, TrainEvent, TrainOutcome,
    Trainer, TrainerState, TrainingMode,
};

/// Trains several LoRA adapters of one model at once: every step puts the next micro-batch
/// of each run into one batch, routes each sample to its run's adapter
/// ([`LoraModelOps::set_sample_adapters`], one gathered product per layer), and takes one
/// mean loss per run ([`Seq2SeqModel::seq2seq_group_losses`]), so that one forward and one
/// backward pass over the shared frozen base train every adapter. Each run then accumulates,
/// clips and steps its own adapter with its own AdamW state, learning rate and schedule,
/// evaluates (all due runs in one pass), keeps its best adapter and stops early on its own;
/// a finished run leaves the batch.
///
/// Every run is a [`Trainer`] in [`TrainingMode::Adapter`] naming its own adapter of the
/// model, with its own output directory, where it writes what a run of its own writes:
/// `metrics.jsonl`, `best/` and `final/`. Without dropout the results equal separate runs
/// with the same settings within rounding (the sums go in another order); with dropout each
/// micro-batch draws its masks from the first run's seed, so the masks differ from a separate
/// run's. Runs may differ in learning rate, schedule, AdamW settings, batch size, gradient
/// accumulation, steps, evaluation and seed, and their adapters in rank, alpha, dropout and
/// targets; they share the data and the collator.
///
/// Not supported (refused): checkpoints (`save_every`, hence no resume), bias training and
/// full-model runs.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use lora_peft_io::{inject_adapter, AdapterConfig, ModuleSelector};
/// use lora_train::data::{Seq2SeqCollator, TokenizedExample};
/// use lora_train::{ConcurrentTrainer, Trainer, TrainerConfig, TrainingMode};
///
/// type B = Autodiff<NdArray>;
/// let t5 = lora_t5::T5Config { vocab_size: 16, d_model: 8, d_kv: 4, num_heads: 2, d_ff: 16,
///     num_layers: 1, num_decoder_layers: 1, ..Default::default() };
/// let mut model = lora_t5::T5ForConditionalGeneration::<B>::new(&t5, &Default::default());
/// let out = std::env::temp_dir().join(format!("lora-train-concurrent-doc-{}", std::process::id()));
/// let mut runs = Vec::new();
/// for (name, rank, learning_rate) in [("small", 2, 1e-3), ("large", 4, 3e-3)] {
///     let targets = ModuleSelector::Names(vec!["q".into(), "v".into()]);
///     let adapter = AdapterConfig::from_lora_config(&lora_core::LoraConfig::new(rank, 8.0), targets).unwrap();
///     inject_adapter(&mut model, &adapter, name).unwrap();
///     runs.push(Trainer {
///         config: TrainerConfig { max_steps: Some(2), batch_size: 2, learning_rate, ..Default::default() },
///         output_dir: out.join(name),
///         mode: TrainingMode::Adapter { name: name.into(), config: adapter },
///         collator: Seq2SeqCollator { max_source_len: 8, max_target_len: 8, pad_id: 0 },
///     });
/// }
/// let data = vec![TokenizedExample { source: vec![4, 5, 1], target: vec![5, 4, 1] }; 4];
/// let outcomes = ConcurrentTrainer { runs }.train(model, &data, &data[..2]).unwrap();
/// assert_eq!(outcomes.len(), 2);
/// assert!(out.join("large/final/adapter_model.safetensors").is_file());
/// # std::fs::remove_dir_all(&out).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct ConcurrentTrainer {
    /// The runs, each training its own adapter of the model.
    pub runs: Vec<Trainer>,
}

/// Where a run stands.
struct RunProgress<M> {
    state: TrainerState,
    total: usize,
    schedule: LrSchedule,
    accumulator: GradientsAccumulator<M>,
    best_model: Option<M>,
    window_start: Instant,
    order: Vec<usize>,
    batches_per_epoch: usize,
    stopped: bool,
}

/// A step a run took in this round, waiting for the round's evaluations.
struct TakenStep {
    run: usize,
    learning_rate: f64,
    grad_norm: f64,
    eval_due: bool,
    end_of_epoch: bool,
}

impl ConcurrentTrainer {
    /// Trains every run on `train`, evaluating on `valid`; returns each run's outcome in the
    /// order of [`runs`](Self::runs), whose model holds that run's adapter at its best (by
    /// validation loss, else its last) as its only active adapter.
    ///
    /// # Errors
    /// No runs, a run that is not an adapter run, two runs of one adapter, an adapter the
    /// model lacks, runs with different collators, `save_every`, a bias that trains, and
    /// everything [`Trainer::train`] refuses; a run's diverging loss stops all of them.
    pub fn train<B, M>(
        &self,
        model: M,
        train: &[TokenizedExample],
        valid: &[TokenizedExample],
    ) -> Result<Vec<TrainOutcome<M>>, TrainError>
    where
        B: AutodiffBackend,
        M: Seq2SeqModel<B> + AutodiffModule<B>,
        M::InnerModule: Seq2SeqModel<B::InnerBackend>,
    {
        self.train_observed(model, train, valid, &mut |_, _| {})
    }

    /// [`train`](Self::train), reporting each run's [`TrainEvent`]s with the run's index.
    ///
    /// # Errors
    /// As [`train`](Self::train).
    pub fn train_observed<B, M>(
        &self,
        model: M,
        train: &[TokenizedExample],
        valid: &[TokenizedExample],
        observer: &mut dyn FnMut(usize, &TrainEvent),
    ) -> Result<Vec<TrainOutcome<M>>, TrainError>
    where
        B: AutodiffBackend,
        M: Seq2SeqModel<B> + AutodiffModule<B>,
        M::InnerModule: Seq2SeqModel<B::InnerBackend>,
    {
        let names = self.check(&model, train)?;
        check_token_ids(train, model.vocab_size(), "training")?;
        check_token_ids(valid, model.vocab_size(), "validation")?;
        let collator = self.runs[0].collator;
        let device = model.device();
        for run in &self.runs {
            std::fs::create_dir_all(&run.output_dir).map_err(|source| TrainError::Io {
                path: run.output_dir.clone(),
                source,
            })?;
            run.clear_outputs(run.config.overwrite_output_dir)?;
        }
        // Every run's adapter active, hence trainable (an added adapter is not, as in PEFT);
        // each forward pass routes the samples, so the active set computes nothing itself.
        let mut model = model;
        model.set_adapter(&names)?;
        let mut model = lora_core::mark_only_lora_as_trainable(model, LoraBias::None);
        let mut optimizers: Vec<_> = self
            .runs
            .iter()
            .map(|run| run.config.adamw().init::<B, M>())
            .collect();
        let mut progress: Vec<RunProgress<M>> = self
            .runs
            .iter()
            .map(|run| {
                let total = run.total_steps(train.len());
                RunProgress {
                    state: TrainerState::default(),
                    total,
                    schedule: run.config.schedule(total),
                    accumulator: GradientsAccumulator::new(),
                    best_model: None,
                    window_start: Instant::now(),
                    order: Vec::new(),
                    batches_per_epoch: train.len().div_ceil(run.config.batch_size),
                    stopped: total == 0,
                }
            })
            .collect();
        for (index, run) in progress.iter().enumerate() {
            observer(
                index,
                &TrainEvent::Started {
                    total_steps: run.total,
                    start_step: 0,
                },
            );
        }
        loop {
            let active: Vec<usize> = (0..progress.len())
                .filter(|k| !progress[*k].stopped)
                .collect();
            let Some(&first) = active.first() else { break };
            // Each active run's next micro-batch, one loss group per run.
            let mut examples = Vec::new();
            let mut groups = Vec::new();
            let mut sample_names = Vec::new();
            for (group, &k) in active.iter().enumerate() {
                let run = &mut progress[k];
                let config = &self.runs[k].config;
                if run.state.batch_in_epoch == 0 {
                    run.order = epoch_order(train.len(), config.seed, run.state.epoch);
                }
                let start = run.state.batch_in_epoch * config.batch_size;
                let end = (start + config.batch_size).min(train.len());
                for &i in &run.order[start..end] {
                    let example = &train[i];
                    run.state.window.tokens += example.source.len() + example.target.len();
                    examples.push(example.clone());
                    groups.push(group);
                    sample_names.push(names[k].as_str());
                }
            }
            let seed = self.runs[first].config.seed;
            B::seed(
                &device,
                seed.wrapping_add(progress[first].state.micro_batches as u64),
            );
            model.set_sample_adapters(Some(sample_names.as_slice()))?;
            let batch = collator.collate::<B>(&examples, &device)?;
            let losses = on_compute_threads(|| model.seq2seq_group_losses(batch, &groups));
            model.set_sample_adapters(None::<&[&str]>)?;
            let losses = losses?;
            let per_run: Vec<f32> = active
                .iter()
                .map(|k| 1.0 / self.runs[*k].config.gradient_accumulation_steps as f32)
                .collect();
            let per_run =
                Tensor::<B, 1>::from_data(TensorData::new(per_run, [active.len()]), &device);
            let values = group_values(losses.clone())?;
            for (&k, value) in active.iter().zip(&values) {
                if !value.is_finite() {
                    return Err(TrainError::NonFiniteLoss {
                        what: "training",
                        step: progress[k].state.step + 1,
                        loss: *value,
                    });
                }
            }
            let mut grads = on_compute_threads(|| {
                GradientsParams::from_grads((losses * per_run).sum().backward(), &model)
            });

            let mut taken = Vec::new();
            for (&k, value) in active.iter().zip(&values) {
                let own = take_adapter_grads::<B, M>(&model, &names[k], &mut grads);
                let config = &self.runs[k].config;
                let run = &mut progress[k];
                run.state.window.loss_sum += value;
                run.state.window.batches += 1;
                run.accumulator.accumulate(&model, own);
                run.state.batch_in_epoch += 1;
                run.state.micro_batches += 1;
                let end_of_epoch = run.state.batch_in_epoch == run.batches_per_epoch;
                if !run
                    .state
                    .micro_batches
                    .is_multiple_of(config.gradient_accumulation_steps)
                    && !end_of_epoch
                {
                    continue;
                }
                let mut step_grads = run.accumulator.grads();
                let grad_norm = clip_global_norm(
                    &model,
                    &mut step_grads,
                    config.max_grad_norm.unwrap_or(f64::INFINITY),
                );
                let learning_rate = run.schedule.at(run.state.step);
                model = optimizers[k].step(learning_rate, model, step_grads);
                run.state.step += 1;
                taken.push(TakenStep {
                    run: k,
                    learning_rate,
                    grad_norm,
                    eval_due: self.runs[k].eval_due(&run.state, end_of_epoch, run.total),
                    end_of_epoch,
                });
            }

            // Every run due an evaluation, in one pass over the validation data.
            let due: Vec<usize> = taken
                .iter()
                .filter(|t| t.eval_due && !valid.is_empty())
                .map(|t| t.run)
                .collect();
            let eval_losses = if due.is_empty() {
                Vec::new()
            } else {
                let due_names: Vec<&str> = due.iter().map(|k| names[*k].as_str()).collect();
                let batch_size = due
                    .iter()
                    .map(|k| self.runs[*k].config.batch_size)
                    .min()
                    .unwrap_or(1);
                evaluate_losses(&model.valid(), &due_names, valid, batch_size, &collator)?
            };
            for step in taken {
                let k = step.run;
                let eval_loss = due.iter().position(|d| *d == k).map(|i| eval_losses[i]);
                let end = StepEnd {
                    learning_rate: step.learning_rate,
                    grad_norm: step.grad_norm,
                    eval_due: step.eval_due,
                    eval_loss,
                    total_steps: progress[k].total,
                };
                let run = &mut progress[k];
                run.stopped = self.runs[k].finish_step(
                    &mut run.state,
                    &end,
                    &model,
                    &mut run.best_model,
                    &mut run.window_start,
                    &mut |event: &TrainEvent| observer(k, event),
                )?;
                if step.end_of_epoch && !run.stopped {
                    run.state.epoch += 1;
                    run.state.batch_in_epoch = 0;
                }
            }
        }

        let mut outcomes = Vec::with_capacity(progress.len());
        for (k, run) in progress.into_iter().enumerate() {
            let mut trained = run.best_model.unwrap_or_else(|| model.clone());
            // The run's own adapter alone active: the outcome serves as that run's model.
            trained.set_adapter(&[&names[k]])?;
            let dir = self.runs[k].output_dir.join("final");
            if self.runs[k].save_adapter(&trained, &dir)? {
                observer(k, &TrainEvent::Saved { dir: &dir });
            }
            observer(k, &TrainEvent::Finished);
            outcomes.push(TrainOutcome {
                model: trained,
                state: run.state,
            });
        }
        Ok(outcomes)
    }

    /// The runs' adapter names, after the checks of [`train`](Self::train).
    fn check<B: Backend, M: LoraModule<B>>(
        &self,
        model: &M,
        train: &[TokenizedExample],
    ) -> Result<Vec<String>, TrainError> {
        let bad = |reason: String| Err(TrainError::InvalidInput { reason });
        let Some(first) = self.runs.first() else {
            return bad("a concurrent training needs at least one run".into());
        };
        let present = model.adapter_names();
        let mut names: Vec<String> = Vec::with_capacity(self.runs.len());
        for (index, run) in self.runs.iter().enumerate() {
            run.validate(train)?;
            let TrainingMode::Adapter { name, config } = &run.mode else {
                return bad(format!(
                    "run {index} trains the whole model: concurrent runs train adapters"
                ));
            };
            if names.contains(name) {
                return bad(format!(
                    "runs {index} and another both train adapter `{name}`"
                ));
            }
            if !present.contains(name) {
                return bad(format!(
                    "run {index}: the model has no adapter `{name}` (it has {present:?})"
                ));
            }
            if config.bias() != LoraBias::None {
                return bad(format!(
                    "run {index}: bias `{:?}` would train the base's biases, which every run \
                     shares; concurrent runs train adapters only",
                    config.bias()
                ));
            }
            if run.config.save_every > 0 {
                return bad(format!(
                    "run {index}: concurrent runs write no checkpoints (save_every {}); set it \
                     to 0",
                    run.config.save_every
                ));
            }
            if run.collator != first.collator {
                return bad(format!(
                    "run {index} batches with {:?}, run 0 with {:?}: concurrent runs share one \
                     collator",
                    run.collator, first.collator
                ));
            }
            if self
                .runs
                .iter()
                .take(index)
                .any(|other| other.output_dir == run.output_dir)
            {
                return bad(format!(
                    "run {index} writes to {}, as an earlier run does",
                    run.output_dir.display()
                ));
            }
            names.push(name.clone());
        }
        Ok(names)
    }
}

/// The values of a `[groups]` loss tensor.
fn group_values<B: Backend>(losses: Tensor<B, 1>) -> Result<Vec<f64>, TrainError> {
    let values = losses
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| TrainError::InvalidInput {
            reason: format!("the loss could not be read back: {e:?}"),
        })?;
    Ok(values.into_iter().map(f64::from).collect())
}

/// Moves the gradients of adapter `name`'s parameters out of `grads` into their own set.
fn take_adapter_grads<B: AutodiffBackend, M: LoraModule<B>>(
    model: &M,
    name: &str,
    grads: &mut GradientsParams,
) -> GradientsParams {
    let mut own = GradientsParams::new();
    model.visit_lora("", &mut |_, layer| {
        let Some(adapter) = layer.adapter(name) else {
            return;
        };
        for id in [adapter.lora_a.id, adapter.lora_b.id] {
            if let Some(grad) = grads.remove::<B::InnerBackend, 2>(id) {
                own.register(id, grad);
            }
        }
        if let Some(magnitude) = &adapter.magnitude {
            if let Some(grad) = grads.remove::<B::InnerBackend, 1>(magnitude.id) {
                own.register(magnitude.id, grad);
            }
        }
    });
    own
}

/// The mean validation loss per target token of each adapter in `names` over `examples`
/// (as [`evaluate_loss`](crate::evaluate_loss) gives for each alone), every adapter's copy of
/// a chunk of `batch_size` examples in one routed batch.
fn evaluate_losses<B: Backend, M: Seq2SeqModel<B>>(
    model: &M,
    names: &[&str],
    examples: &[TokenizedExample],
    batch_size: usize,
    collator: &crate::data::Seq2SeqCollator,
) -> Result<Vec<f64>, TrainError> {
    let device = model.device();
    let mut model = model.clone();
    let mut totals = vec![0.0; names.len()];
    let mut tokens = 0usize;
    for chunk in examples.chunks(batch_size.max(1)) {
        let mut batch_examples = Vec::with_capacity(chunk.len() * names.len());
        let mut groups = Vec::with_capacity(batch_examples.capacity());
        let mut sample_names = Vec::with_capacity(batch_examples.capacity());
        for (group, name) in names.iter().enumerate() {
            batch_examples.extend(chunk.iter().cloned());
            groups.extend(std::iter::repeat_n(group, chunk.len()));
            sample_names.extend(std::iter::repeat_n(*name, chunk.len()));
        }
        model.set_sample_adapters(Some(sample_names.as_slice()))?;
        let batch = collator.collate::<B>(&batch_examples, &device)?;
        let means = group_values(model.seq2seq_group_losses(batch, &groups)?)?;
        let count: usize = chunk
            .iter()
            .map(|p| p.target.len().min(collator.max_target_len))
            .sum();
        for (total, mean) in totals.iter_mut().zip(means) {
            *total += mean * count as f64;
        }
        tokens += count;
    }
    Ok(totals
        .into_iter()
        .map(|t| t / tokens.max(1) as f64)
        .collect())
}
