//! What a checkpoint records besides the adapter, so that a run resumes exactly.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::TrainError;

/// One line of the metrics log (`metrics.jsonl`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Optimizer steps done.
    pub step: usize,
    /// Epoch (0-based) of the last batch.
    pub epoch: usize,
    /// Mean training loss since the previous entry.
    pub loss: f64,
    /// Learning rate of the last step.
    pub learning_rate: f64,
    /// Gradient norm before clipping at the last step.
    pub grad_norm: f64,
    /// Training tokens (source + target) per second since the previous entry.
    pub tokens_per_second: f64,
    /// Validation loss, when evaluated at this step.
    pub eval_loss: Option<f64>,
}

/// The trainer's position and bookkeeping, saved as `trainer_state.json` in each checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainerState {
    /// Optimizer steps done.
    pub step: usize,
    /// Current epoch.
    pub epoch: usize,
    /// Micro-batches of the current epoch already consumed.
    pub batch_in_epoch: usize,
    /// Micro-batches consumed since the start of the run (seeds dropout).
    pub micro_batches: usize,
    /// Best validation loss so far and its step.
    pub best: Option<(f64, usize)>,
    /// Evaluations since the best one.
    pub evals_without_improvement: usize,
    /// Parameter ids of the adapter tensors by module path, so that the optimizer state
    /// (keyed by id) reattaches after the adapter is read back from its PEFT files.
    pub param_ids: BTreeMap<String, Vec<u64>>,
    /// The metrics log so far.
    pub history: Vec<LogEntry>,
    /// The training losses since the last log line, so that the first line after a resume
    /// averages the same micro-batches as without the interruption.
    #[serde(default)]
    pub window: LogWindow,
    /// The settings and data the run started with (compared on resume; absent in checkpoints
    /// of older versions, which are then resumed unchecked).
    #[serde(default)]
    pub settings: Option<serde_json::Value>,
}

/// The open window of the metrics log: what the next [`LogEntry`] averages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct LogWindow {
    /// Sum of the micro-batch losses since the last entry.
    pub loss_sum: f64,
    /// Micro-batches since the last entry.
    pub batches: usize,
    /// Training tokens (source + target) since the last entry.
    pub tokens: usize,
}

impl TrainerState {
    /// Reads `trainer_state.json`.
    ///
    /// # Errors
    /// [`TrainError::Io`] when the file cannot be read, and [`TrainError::File`] for invalid
    /// JSON or a value of the wrong type, with line and column.
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(serde_json::from_str(&text).map_err(|e| lora_hf::HfFileError::json(path, &e))?)
    }

    /// Writes `trainer_state.json` atomically.
    ///
    /// # Errors
    /// [`TrainError::File`] naming the file when it cannot be written (the previous one stays).
    pub fn write(&self, path: &Path) -> Result<(), TrainError> {
        let text = serde_json::to_string_pretty(self).expect("the trainer state serialises");
        Ok(lora_hf::write_atomic(path, text.as_bytes())?)
    }
}
