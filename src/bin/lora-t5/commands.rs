//! The general subcommands: train, generate, eval, merge, inspect, sweep.

use std::path::PathBuf;

use burn::module::AutodiffModule;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use clap::Args;
use lora_burn::backend::{InferenceBackend, TrainBackend};
use lora_burn::lora_core::{
    count_parameters, int8_quantizer, quantize_base_weights, LoraBias, LoraConfig, LoraModelOps,
    LoraModule,
};
use lora_burn::lora_hf::StagedDir;
use lora_burn::lora_peft_io::{inject_adapter, load_adapter, AdapterConfig, ModuleSelector};
use lora_burn::lora_t5::{
    Seq2SeqInput, T5ForConditionalGeneration, T5Tokenizer, GENERATION_CONFIG_FILE,
};
use lora_burn::lora_train::data::{train_valid_split, Seq2SeqCollator};
use lora_burn::lora_train::metrics::EvalReport;
use lora_burn::lora_train::{
    ConcurrentTrainer, DecayKind, TrainEvent, Trainer, TrainerConfig, TrainingMode,
};
use serde_json::Value;

use crate::common::{
    evaluate, existing, generate_texts, plot_losses, read_pairs, read_prompts_with_adapters,
    tokenize, tokenizer, train_with_display, CliResult, DecodingArgs,
};
use crate::config_file::write_effective_config;
use crate::evaluation::MetricArgs;
use crate::flags;

#[derive(Args, Debug, Clone)]
pub struct TrainArgs {
    /// Hugging Face T5 / FLAN-T5 directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    model: PathBuf,
    /// Training JSONL (`instruction`, `output_json_minified`).
    #[arg(long)]
    train: PathBuf,
    /// Validation JSONL; without it, `--valid-ratio` of the training file is held out.
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Share of the training file used for validation when `--valid` is absent.
    #[arg(long, default_value_t = 0.05, value_parser = flags::probability())]
    valid_ratio: f64,
    /// Skip bad JSONL records (reported) instead of stopping.
    #[arg(long)]
    skip_bad_records: bool,
    /// A JSON file of flags under these names (`{"lora_alpha": 32, "target_modules": ["q",
    /// "v"]}`), such as the `training_config.json` a run writes; flags on the command line win.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output directory (checkpoints, best/, final/, metrics.jsonl, loss.png,
    /// training_config.json).
    #[arg(long, visible_alias = "out")]
    output_dir: PathBuf,
    /// LoRA rank (PEFT's `r`).
    #[arg(long, visible_alias = "lora-r", default_value_t = 8, value_parser = flags::count(1..=flags::MAX_RANK))]
    r: usize,
    /// LoRA alpha (the update is scaled by alpha / r).
    #[arg(long, visible_alias = "alpha", default_value_t = 16.0, value_parser = flags::finite())]
    lora_alpha: f64,
    /// Dropout on the LoRA branch's input.
    #[arg(long, visible_alias = "dropout", default_value_t = 0.05, value_parser = flags::probability())]
    lora_dropout: f64,
    /// rsLoRA scaling (alpha / sqrt(r)).
    #[arg(long, visible_alias = "rslora")]
    use_rslora: bool,
    /// Target modules, comma separated.
    #[arg(long, visible_alias = "targets", default_value = "q,v")]
    target_modules: String,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3, value_parser = flags::positive())]
    learning_rate: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.01, value_parser = flags::non_negative())]
    weight_decay: f64,
    /// AdamW epsilon.
    #[arg(long, default_value_t = 1e-8, value_parser = flags::positive())]
    adam_epsilon: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 0)]
    warmup_steps: usize,
    /// Decay after warm-up: linear, cosine, constant or constant_with_warmup.
    #[arg(long, visible_alias = "schedule", default_value = "linear")]
    lr_scheduler_type: String,
    /// Examples per micro-batch.
    #[arg(long, visible_alias = "batch-size", default_value_t = 8, value_parser = flags::count(1..=flags::MAX_COUNT))]
    per_device_train_batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, visible_alias = "grad-accum", default_value_t = 1, value_parser = flags::count(1..=flags::MAX_COUNT))]
    gradient_accumulation_steps: usize,
    /// Clip the global gradient norm (0: off).
    #[arg(long, default_value_t = 1.0, value_parser = flags::non_negative())]
    max_grad_norm: f64,
    /// Epochs.
    #[arg(long, visible_alias = "epochs", default_value_t = 3, value_parser = flags::count(1..=flags::MAX_COUNT))]
    num_train_epochs: usize,
    /// Stop after this many steps.
    #[arg(long, value_parser = flags::count(1..=u64::MAX))]
    max_steps: Option<usize>,
    /// Evaluate every N steps (0: each epoch).
    #[arg(long, visible_alias = "eval-every", default_value_t = 0)]
    eval_steps: usize,
    /// Checkpoint every N steps (0: never).
    #[arg(long, visible_alias = "save-every", default_value_t = 0)]
    save_steps: usize,
    /// Log (progress display and metrics.jsonl) every N steps.
    #[arg(long, default_value_t = 10, value_parser = flags::count(1..=u64::MAX))]
    logging_steps: usize,
    /// Stop after this many evaluations without a better validation loss.
    #[arg(long, visible_alias = "patience", value_parser = flags::count(1..=u64::MAX))]
    early_stopping_patience: Option<usize>,
    /// Maximum source tokens.
    #[arg(long, default_value_t = 256, value_parser = flags::count(1..=flags::MAX_SEQUENCE_LEN))]
    max_source_len: usize,
    /// Maximum target tokens.
    #[arg(long, default_value_t = 256, value_parser = flags::count(1..=flags::MAX_SEQUENCE_LEN))]
    max_target_len: usize,
    /// Seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Resume from the latest checkpoint in `--out` (with the same settings and data).
    #[arg(long)]
    resume: bool,
    /// Start afresh in an `--out` that holds an earlier run, deleting its checkpoints,
    /// `best/`, `final/` and `metrics.jsonl` (without it such an `--out` is refused).
    #[arg(long, conflicts_with = "resume")]
    overwrite_output_dir: bool,
}

pub fn train(args: TrainArgs, written: &Value) -> CliResult {
    let run = run_training(&args, written)?;
    println!(
        "best validation loss {:.4} at step {}; adapter in {}",
        run.best_loss,
        run.best_step,
        args.output_dir.join("final").display()
    );
    Ok(())
}

/// What a finished `train` run reports.
struct TrainingRun {
    /// The best validation loss (NaN without validation data).
    best_loss: f64,
    /// The step it was reached at.
    best_step: usize,
    /// The validation pairs the run used.
    valid: Vec<(String, String)>,
    /// The model with the best adapter (what `final/` holds), for inference.
    model: T5ForConditionalGeneration<InferenceBackend>,
}

/// What the runs of a `train` or `sweep` share: the base model, its tokenizer and the data.
struct TrainingInputs {
    model: T5ForConditionalGeneration<TrainBackend>,
    tokenizer: T5Tokenizer,
    train: Vec<(String, String)>,
    valid: Vec<(String, String)>,
}

/// Reads the model, the tokenizer and the training and validation pairs `args` name.
fn training_inputs(args: &TrainArgs) -> CliResult<TrainingInputs> {
    let device = Default::default();
    let model_dir = existing(&args.model, "model directory")?;
    let tokenizer = tokenizer(&model_dir)?;
    let model = T5ForConditionalGeneration::<TrainBackend>::from_pretrained(&model_dir, &device)?;
    let pairs = read_pairs(&args.train, args.skip_bad_records)?;
    let (train, valid) = match &args.valid {
        Some(path) => (pairs, read_pairs(path, args.skip_bad_records)?),
        None => train_valid_split(pairs, args.valid_ratio, args.seed)?,
    };
    Ok(TrainingInputs {
        model,
        tokenizer,
        train,
        valid,
    })
}

/// Adds a fresh adapter `name` as `args` configure it to `model`, its random initialisation
/// drawn from `--seed`, and returns the trainer of that adapter.
fn add_trained_adapter(
    args: &TrainArgs,
    model: &mut T5ForConditionalGeneration<TrainBackend>,
    name: &str,
) -> CliResult<Trainer> {
    let targets: Vec<String> = args
        .target_modules
        .split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    let lora = LoraConfig::new(args.r, args.lora_alpha)
        .with_lora_dropout(args.lora_dropout)
        .with_use_rslora(args.use_rslora);
    let adapter_config = AdapterConfig::from_lora_config(&lora, ModuleSelector::Names(targets))?;
    // On resume the trainer replaces this fresh adapter with the checkpoint's. The random
    // initialisation draws from the backend RNG: seed it for a reproducible run.
    TrainBackend::seed(&Default::default(), args.seed);
    inject_adapter(model, &adapter_config, name)?;
    let decay = match args.lr_scheduler_type.as_str() {
        "cosine" => DecayKind::Cosine,
        "linear" => DecayKind::Linear,
        // transformers' `constant` has no warm-up; here `--warmup-steps` (0 by default) applies
        // to every schedule, so both names mean a constant rate after the warm-up.
        "constant" | "constant_with_warmup" => DecayKind::Constant,
        other => {
            return Err(format!(
                "--lr-scheduler-type must be linear, cosine, constant or \
                 constant_with_warmup, not `{other}`"
            )
            .into())
        }
    };
    Ok(Trainer {
        config: TrainerConfig {
            learning_rate: args.learning_rate,
            weight_decay: args.weight_decay,
            adam_epsilon: args.adam_epsilon,
            warmup_steps: args.warmup_steps,
            decay,
            batch_size: args.per_device_train_batch_size,
            gradient_accumulation_steps: args.gradient_accumulation_steps,
            max_grad_norm: (args.max_grad_norm > 0.0).then_some(args.max_grad_norm),
            epochs: args.num_train_epochs,
            max_steps: args.max_steps,
            eval_every: args.eval_steps,
            save_every: args.save_steps,
            log_every: args.logging_steps,
            patience: args.early_stopping_patience,
            seed: args.seed,
            overwrite_output_dir: args.overwrite_output_dir,
            ..TrainerConfig::default()
        },
        output_dir: args.output_dir.clone(),
        mode: TrainingMode::Adapter {
            name: name.into(),
            config: adapter_config,
        },
        collator: Seq2SeqCollator {
            max_source_len: args.max_source_len,
            max_target_len: args.max_target_len,
            pad_id: model.config.pad_token_id,
        },
    })
}

/// `written` (the effective configuration of the command line) with the values of one run of
/// it: a sweep's runs differ in these.
fn run_config(written: &Value, args: &TrainArgs) -> Value {
    let mut config = written.clone();
    if let Some(object) = config.as_object_mut() {
        object.insert("r".into(), args.r.into());
        object.insert("lora_alpha".into(), args.lora_alpha.into());
        object.insert("lora_dropout".into(), args.lora_dropout.into());
        object.insert("learning_rate".into(), args.learning_rate.into());
        object.insert(
            "output_dir".into(),
            args.output_dir.to_string_lossy().as_ref().into(),
        );
    }
    config
}

/// Trains as `args` says and writes the run's configuration (`written` with the run's own
/// values) next to its adapter.
fn run_training(args: &TrainArgs, written: &Value) -> CliResult<TrainingRun> {
    let TrainingInputs {
        mut model,
        tokenizer,
        train,
        valid,
    } = training_inputs(args)?;
    let trainer = add_trained_adapter(args, &mut model, "default")?;
    println!(
        "{}",
        count_parameters(&lora_burn::lora_core::mark_only_lora_as_trainable(
            model.clone(),
            LoraBias::None
        ))
    );
    let outcome = train_with_display(
        &trainer,
        model,
        &tokenize(&tokenizer, &train, &trainer.collator)?,
        &tokenize(&tokenizer, &valid, &trainer.collator)?,
        args.resume,
    )?;
    write_effective_config(&args.output_dir, &run_config(written, args))?;
    let (best_loss, best_step) = outcome.state.best.unwrap_or((f64::NAN, outcome.state.step));
    Ok(TrainingRun {
        best_loss,
        best_step,
        valid,
        model: outcome.model.valid(),
    })
}

/// A model directory with an optional adapter.
#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Hugging Face T5 / FLAN-T5 directory.
    #[arg(long)]
    model: PathBuf,
    /// A PEFT adapter directory to apply, as `DIR` (named `default`) or `NAME=DIR`;
    /// repeatable (the first is active; `generate` routes prompts to the others).
    #[arg(long, value_parser = flags::adapter_spec())]
    adapter: Vec<flags::AdapterSpec>,
}

/// Int8 storage of the frozen base weights for inference.
#[derive(Args, Debug, Clone)]
pub struct QuantArgs {
    /// Store the frozen base weights of every linear layer in int8 (symmetric, per block);
    /// adapters, embeddings and norms stay in f32.
    #[arg(long)]
    int8: bool,
    /// Weights per int8 scale along the output dimension (0: one scale per tensor).
    #[arg(long, default_value_t = 32, requires = "int8")]
    int8_block: u8,
}

impl QuantArgs {
    /// Quantizes `model` when `--int8` is given and reports what it did on stderr.
    fn apply<B: Backend>(&self, model: &mut T5ForConditionalGeneration<B>) -> CliResult {
        if !self.int8 {
            return Ok(());
        }
        let block = (self.int8_block > 0).then_some(self.int8_block);
        let layers = quantize_base_weights(model, &mut int8_quantizer::<B>(block))?;
        eprintln!(
            "int8: base weights of {layers} linear layers quantized ({})",
            match block {
                Some(size) => format!("one scale per {size} weights"),
                None => "one scale per tensor".to_string(),
            }
        );
        Ok(())
    }
}

fn load_model<B: Backend>(args: &ModelArgs) -> CliResult<T5ForConditionalGeneration<B>> {
    let device = Default::default();
    let mut model = T5ForConditionalGeneration::<B>::from_pretrained(
        &existing(&args.model, "model directory")?,
        &device,
    )?;
    for (i, spec) in args.adapter.iter().enumerate() {
        if args.adapter[..i].iter().any(|s| s.name == spec.name) {
            return Err(format!("--adapter: the name `{}` is given twice", spec.name).into());
        }
        load_adapter(&mut model, &spec.dir, &spec.name)?;
    }
    Ok(model)
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// One prompt.
    #[arg(long, conflicts_with = "input")]
    prompt: Option<String>,
    /// A JSONL file whose `instruction` fields are the prompts.
    #[arg(long)]
    input: Option<PathBuf>,
    /// Print each output as it is generated (prompts one at a time).
    #[arg(long)]
    stream: bool,
    /// The adapter of every prompt that names none (`__base__`: the base alone); records of
    /// `--input` name theirs in an `adapter` field.
    #[arg(long)]
    adapter_name: Option<String>,
    #[command(flatten)]
    decoding: DecodingArgs,
    #[command(flatten)]
    quant: QuantArgs,
}

pub fn generate(args: GenerateArgs) -> CliResult {
    let mut model = load_model::<InferenceBackend>(&args.model)?;
    args.quant.apply(&mut model)?;
    let tokenizer = tokenizer(&args.model.model)?;
    let (prompts, record_adapters): (Vec<String>, Vec<Option<String>>) =
        match (&args.prompt, &args.input) {
            (Some(prompt), _) => (vec![prompt.clone()], vec![None]),
            (None, Some(path)) => read_prompts_with_adapters(path)?.into_iter().unzip(),
            (None, None) => return Err("give --prompt or --input".into()),
        };
    // One adapter per prompt when a record or `--adapter-name` asks for one; the others get
    // `--adapter-name`, else the first (active) adapter, else the base alone.
    let routing = (args.adapter_name.is_some() || record_adapters.iter().any(Option::is_some))
        .then(|| {
            let fallback = args
                .adapter_name
                .clone()
                .or_else(|| args.model.adapter.first().map(|s| s.name.clone()))
                .unwrap_or_else(|| lora_burn::lora_core::BASE_ONLY.to_string());
            record_adapters
                .iter()
                .map(|a| a.clone().unwrap_or_else(|| fallback.clone()))
                .collect::<Vec<String>>()
        });
    let config = args.decoding.config(&args.model.model, &tokenizer)?;
    if args.stream {
        let mut print = |piece: &str| {
            print!("{piece}");
            // A closed stdout shows when the line ends.
            let _ = std::io::Write::flush(&mut std::io::stdout());
        };
        for (index, prompt) in prompts.iter().enumerate() {
            generate_texts(
                &model,
                &tokenizer,
                std::slice::from_ref(prompt),
                routing.as_ref().map(|r| &r[index..index + 1]),
                &args.decoding,
                &config,
                Some(&mut print),
            )?;
            println!();
        }
        return Ok(());
    }
    let outputs = generate_texts(
        &model,
        &tokenizer,
        &prompts,
        routing.as_deref(),
        &args.decoding,
        &config,
        None,
    )?;
    for output in outputs {
        println!("{output}");
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// JSONL with `instruction` and `output_json_minified`.
    #[arg(long)]
    data: PathBuf,
    /// Evaluate only the first N records.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    decoding: DecodingArgs,
    #[command(flatten)]
    quant: QuantArgs,
    #[command(flatten)]
    metrics: MetricArgs,
}

pub fn eval(args: EvalArgs) -> CliResult {
    let mut model = load_model::<InferenceBackend>(&args.model)?;
    args.quant.apply(&mut model)?;
    let tokenizer = tokenizer(&args.model.model)?;
    let mut pairs = read_pairs(&args.data, false)?;
    if let Some(limit) = args.limit {
        pairs.truncate(limit);
    }
    let config = args.decoding.config(&args.model.model, &tokenizer)?;
    let (evaluation, _) = evaluate(
        &model,
        &tokenizer,
        &pairs,
        &args.decoding,
        &config,
        &args.metrics,
    )?;
    println!("{evaluation}");
    Ok(())
}

#[derive(Args, Debug)]
pub struct MergeArgs {
    #[command(flatten)]
    model: ModelArgs,
    /// Output directory for the merged checkpoint (transformers loads it).
    #[arg(long)]
    out: PathBuf,
    /// Refuse the merge when a logit on the probe prompts moves by more than this.
    #[arg(long, default_value_t = 1e-3, value_parser = flags::positive())]
    max_merge_diff: f64,
}

/// Prompts whose logits, before and after merging, check the merge: the model's own task,
/// and English ones for checkpoints of other tasks.
const MERGE_PROBES: [&str; 3] = [
    "做一个首页，顶部搜索，底部导航，风格用樱花粉",
    "translate English to German: The house is wonderful.",
    "summarize: Studies have shown that owning a dog is good for you.",
];

/// The probe batch of a merge check: [`MERGE_PROBES`] as sources, each also read as the
/// decoder input after the start token (8 positions), padded.
fn merge_probe<B: Backend>(
    model: &T5ForConditionalGeneration<B>,
    tokenizer: &T5Tokenizer,
) -> CliResult<Seq2SeqInput<B>> {
    let device = model.shared.weight.device();
    let (pad, start) = (
        model.config.pad_token_id,
        model.config.decoder_start_token_id,
    );
    let encoded: Vec<Vec<u32>> = MERGE_PROBES
        .iter()
        .map(|p| tokenizer.encode_bounded(p, 64).map(|(ids, _)| ids))
        .collect::<Result<_, _>>()?;
    let width = encoded.iter().map(Vec::len).max().unwrap_or(1);
    let rows = |len: usize, row: &dyn Fn(&[u32]) -> Vec<i64>| -> Tensor<B, 2, Int> {
        let values: Vec<i64> = encoded.iter().flat_map(|e| row(e)).collect();
        Tensor::from_data(TensorData::new(values, [encoded.len(), len]), &device)
    };
    let padded = |e: &[u32]| {
        (0..width)
            .map(|i| e.get(i).map_or(pad, |t| *t) as i64)
            .collect()
    };
    let mask = |e: &[u32]| (0..width).map(|i| i64::from(i < e.len())).collect();
    let decoder = |e: &[u32]| {
        std::iter::once(start)
            .chain(e.iter().copied().chain(std::iter::repeat(pad)))
            .take(8)
            .map(i64::from)
            .collect()
    };
    let input = Seq2SeqInput::new(rows(width, &padded), rows(8, &decoder))
        .attention_mask(rows(width, &mask));
    model.check_input(&input)?;
    Ok(input)
}

pub fn merge(args: MergeArgs) -> CliResult {
    if args.model.adapter.len() != 1 {
        return Err("merge needs one --adapter".into());
    }
    let mut model = load_model::<InferenceBackend>(&args.model)?;
    let tokenizer = tokenizer(&args.model.model)?;
    let probe = merge_probe(&model, &tokenizer)?;
    let check = model.merge_and_unload_checked(
        |m| m.forward(probe.clone()).logits,
        Some(args.max_merge_diff),
    )?;
    println!("{check}");
    // The whole directory is written aside and swapped in: an interrupted merge leaves the
    // previous `--out` as it was, and no file of it survives into the new one.
    let staged = StagedDir::new(&args.out)?;
    model.save_pretrained(staged.path())?;
    // The base's tokenizer and generation defaults, byte for byte (over the special-token
    // defaults `save_pretrained` writes); `commit` syncs them with the other files.
    for file in ["tokenizer.json", GENERATION_CONFIG_FILE] {
        let source = args.model.model.join(file);
        if source.is_file() {
            std::fs::copy(&source, staged.path().join(file))?;
        }
    }
    staged.commit()?;
    println!("merged checkpoint written to {}", args.out.display());
    Ok(())
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
}

pub fn inspect(args: InspectArgs) -> CliResult {
    let model = load_model::<TrainBackend>(&args.model)?;
    println!("backend: {}", lora_burn::backend::BackendInfo::current());
    println!(
        "{}",
        serde_json::to_string_pretty(&model.config.to_hf_json())?
    );
    let mut targets = Vec::new();
    let shown = args
        .model
        .adapter
        .first()
        .map_or(lora_burn::lora_core::DEFAULT_ADAPTER_NAME, |s| {
            s.name.as_str()
        });
    model.visit_lora("", &mut |path, layer| {
        if let Some(adapter) = layer.adapter(shown) {
            targets.push(format!(
                "{path} (r={}, scaling={})",
                adapter.rank(),
                adapter.scaling()
            ));
        }
    });
    println!(
        "LoRA layers: {} of {}",
        targets.len(),
        model.linear_paths().len()
    );
    for target in targets {
        println!("  {target}");
    }
    println!("{}", count_parameters(&model));
    let _ = model.valid();
    Ok(())
}

#[derive(Args, Debug)]
pub struct SweepArgs {
    #[command(flatten)]
    train: TrainArgs,
    /// Ranks to try, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "4,8", value_parser = flags::count(1..=flags::MAX_RANK))]
    ranks: Vec<usize>,
    /// Alphas to try.
    #[arg(long, value_delimiter = ',', default_value = "16", value_parser = flags::finite())]
    alphas: Vec<f64>,
    /// Dropouts to try.
    #[arg(long, value_delimiter = ',', default_value = "0.05", value_parser = flags::probability())]
    dropouts: Vec<f64>,
    /// Learning rates to try.
    #[arg(long, value_delimiter = ',', default_value = "1e-3", value_parser = flags::positive())]
    learning_rates: Vec<f64>,
    /// Validation records generated per run for the metrics (0: none).
    #[arg(long, default_value_t = 50)]
    eval_limit: usize,
    /// Beams for those generations (1: greedy).
    #[arg(long, default_value_t = 1, value_parser = flags::count(1..=flags::MAX_BEAMS))]
    eval_num_beams: usize,
    /// Most new tokens per generation.
    #[arg(long, default_value_t = 96, value_parser = flags::count(1..=flags::MAX_NEW_TOKENS))]
    eval_max_new_tokens: usize,
    /// Train every configuration at once on one resident base model: each step batches every
    /// run's samples, each routed to its own adapter, in one forward and backward pass
    /// (`lora_train::ConcurrentTrainer`); each run keeps its own optimizer, schedule,
    /// evaluation and outputs. No checkpoints (`--save-every` is refused).
    #[arg(long, conflicts_with = "resume")]
    concurrent: bool,
}

/// One configuration of a sweep's grid.
#[derive(Debug, Clone, Copy)]
struct SweepPoint {
    r: usize,
    alpha: f64,
    dropout: f64,
    learning_rate: f64,
}

impl SweepArgs {
    /// Every combination of the grid, ranks outermost.
    fn grid(&self) -> Vec<SweepPoint> {
        let mut points = Vec::new();
        for &r in &self.ranks {
            for &alpha in &self.alphas {
                for &dropout in &self.dropouts {
                    for &learning_rate in &self.learning_rates {
                        points.push(SweepPoint {
                            r,
                            alpha,
                            dropout,
                            learning_rate,
                        });
                    }
                }
            }
        }
        points
    }

    /// The training arguments of one configuration, writing under its own folder of `--out`.
    fn run_args(&self, point: &SweepPoint) -> TrainArgs {
        let mut run = self.train.clone();
        run.r = point.r;
        run.lora_alpha = point.alpha;
        run.lora_dropout = point.dropout;
        run.learning_rate = point.learning_rate;
        run.output_dir = self.train.output_dir.join(format!(
            "r{}-a{}-d{}-lr{}",
            point.r, point.alpha, point.dropout, point.learning_rate
        ));
        run.resume = false;
        run
    }
}

/// Trains every configuration of the grid at once (`sweep --concurrent`).
fn sweep_concurrently(args: &SweepArgs, written: &Value) -> CliResult<Vec<TrainingRun>> {
    let TrainingInputs {
        mut model,
        tokenizer,
        train,
        valid,
    } = training_inputs(&args.train)?;
    let grid = args.grid();
    let mut runs = Vec::with_capacity(grid.len());
    let mut names = Vec::with_capacity(grid.len());
    for (index, point) in grid.iter().enumerate() {
        let name = format!("run{index}");
        runs.push(add_trained_adapter(
            &args.run_args(point),
            &mut model,
            &name,
        )?);
        names.push(name);
    }
    let collator = runs[0].collator;
    let trainer = ConcurrentTrainer { runs };
    let train = tokenize(&tokenizer, &train, &collator)?;
    let valid_ids = tokenize(&tokenizer, &valid, &collator)?;
    let mut plot_error = None;
    let outcomes = trainer.train_observed(model, &train, &valid_ids, &mut |run, event| {
        if let TrainEvent::Logged { entry, history } = event {
            let eval = entry
                .eval_loss
                .map(|l| format!(", eval loss {l:.4}"))
                .unwrap_or_default();
            println!(
                "{}: step {}, loss {:.4}, lr {:.2e}{eval}",
                names[run], entry.step, entry.loss, entry.learning_rate
            );
            let output_dir = &trainer.runs[run].output_dir;
            let title = format!("LoRA fine-tuning: {}", output_dir.display());
            if let Err(error) = plot_losses(&output_dir.join("loss.png"), &title, history) {
                plot_error.get_or_insert(error);
            }
        }
    })?;
    if let Some(error) = plot_error {
        return Err(error);
    }
    for point in &grid {
        let run = args.run_args(point);
        write_effective_config(&run.output_dir, &run_config(written, &run))?;
    }
    Ok(outcomes
        .into_iter()
        .map(|outcome| {
            let (best_loss, best_step) =
                outcome.state.best.unwrap_or((f64::NAN, outcome.state.step));
            TrainingRun {
                best_loss,
                best_step,
                valid: valid.clone(),
                model: outcome.model.valid(),
            }
        })
        .collect())
}

pub fn sweep(args: SweepArgs, written: &Value) -> CliResult {
    let tokenizer = tokenizer(&existing(&args.train.model, "model directory")?)?;
    let grid = args.grid();
    let results = if args.concurrent {
        sweep_concurrently(&args, written)?
    } else {
        grid.iter()
            .map(|point| run_training(&args.run_args(point), written))
            .collect::<CliResult<Vec<_>>>()?
    };
    let mut rows = Vec::new();
    for (point, result) in grid.iter().zip(&results) {
        let report = sweep_metrics(result, &tokenizer, &args)?;
        rows.push((
            point.r,
            point.alpha,
            point.dropout,
            point.learning_rate,
            result.best_loss,
            result.best_step,
            report,
        ));
    }
    println!(
        "| r | alpha | dropout | lr | best eval loss | step | exact match | JSON-token BLEU | JSON-token ROUGE-L | valid JSON | schema-valid |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (r, alpha, dropout, lr, loss, step, report) in rows {
        let metrics = match report {
            Some(m) => format!(
                "{:.3} | {:.3} | {:.3} | {:.3} | {:.3}",
                m.exact_match,
                m.bleu,
                m.rouge_l,
                m.json_valid_rate,
                m.schema_valid_rate.unwrap_or(f64::NAN)
            ),
            None => "– | – | – | – | –".to_string(),
        };
        println!("| {r} | {alpha} | {dropout} | {lr:e} | {loss:.4} | {step} | {metrics} |");
    }
    Ok(())
}

/// Generation metrics of a sweep run's best adapter on the first `--eval-limit` validation
/// records.
fn sweep_metrics(
    run: &TrainingRun,
    tokenizer: &T5Tokenizer,
    args: &SweepArgs,
) -> CliResult<Option<EvalReport>> {
    let pairs = &run.valid[..run.valid.len().min(args.eval_limit)];
    if pairs.is_empty() {
        return Ok(None);
    }
    let decoding = DecodingArgs {
        num_beams: Some(args.eval_num_beams),
        max_new_tokens: Some(args.eval_max_new_tokens),
        generation_batch_size: 25,
        max_source_len: DecodingArgs::DEFAULT_MAX_SOURCE_LEN,
        ..DecodingArgs::default()
    };
    let config = decoding.config(&args.train.model, tokenizer)?;
    let metrics = MetricArgs::default();
    let (evaluation, _) = evaluate(&run.model, tokenizer, pairs, &decoding, &config, &metrics)?;
    Ok(Some(evaluation.report))
}
