//! Fine-tuning for [Burn](https://burn.dev) models with LoRA adapters.
//!
//! - [`Trainer`]: AdamW with warm-up and decay, gradient accumulation, global-norm clipping,
//!   evaluation, PEFT checkpoints with exact resume, best-adapter keeping and early stopping;
//!   [`TrainingMode::Full`] trains every parameter instead (pretraining). It reports its
//!   progress as [`TrainEvent`]s and writes `metrics.jsonl`.
//! - [`ConcurrentTrainer`]: several adapters of one model trained in one batch on the shared
//!   base, each with its own optimizer, schedule, evaluation and outputs.
//! - [`Seq2SeqModel`]: what the trainer needs of a model (a loss on a padded batch). T5
//!   implements it with the `t5` feature (on by default).
//! - [`data`]: JSONL reading with bad-record reports, a seeded train/validation split and a
//!   padding collator.
//! - [`metrics`]: exact match, BLEU, ROUGE-L and JSON validity of generated text, over
//!   this crate's JSON tokens.
//! - [`sacrebleu`]: corpus BLEU identical to sacreBLEU's (`13a`, `zh` and `none` tokenizers,
//!   smoothing, signature), for scores comparable with published ones.
//! - [`rouge`]: ROUGE-L identical to Google's `rouge_score`, with a tokenisation for Chinese.
//! - [`field_accuracy`]: per-key-path accuracy of predicted JSON documents.

mod concurrent;
pub mod data;
mod error;
mod events;
pub mod field_accuracy;
pub mod metrics;
mod model;
pub mod rouge;
mod run_settings;
pub mod sacrebleu;
mod schedule;
mod shuffle;
mod state;
mod trainer;

mod clip;

pub use clip::clip_global_norm;
pub use concurrent::ConcurrentTrainer;
pub use error::TrainError;
pub use events::TrainEvent;
pub use model::Seq2SeqModel;
pub use schedule::{DecayKind, LrSchedule};
pub use shuffle::epoch_order;
pub use state::{LogEntry, LogWindow, TrainerState};
pub use trainer::{evaluate_loss, TrainOutcome, Trainer, TrainerConfig, TrainingMode};
