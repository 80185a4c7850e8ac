//! What the trainer reports while it runs.

use std::path::Path;

use crate::LogEntry;

/// A moment of a training run, passed to the observer of
/// [`Trainer::train_observed`](crate::Trainer::train_observed). Progress displays and loss
/// pictures are built from these; the trainer itself prints nothing.
///
/// ```
/// use lora_train::TrainEvent;
///
/// let mut last_step = 0;
/// let mut observer = |event: &TrainEvent| {
///     if let TrainEvent::Logged { entry, .. } = event {
///         last_step = entry.step;
///     }
/// };
/// observer(&TrainEvent::Started { total_steps: 10, start_step: 0 });
/// ```
#[derive(Debug, Clone, Copy)]
pub enum TrainEvent<'a> {
    /// The run begins (or resumes) at `start_step` of `total_steps` optimizer steps.
    Started {
        /// Optimizer steps of the whole run.
        total_steps: usize,
        /// Steps already done (non-zero after a resume).
        start_step: usize,
    },
    /// A line was appended to `metrics.jsonl`.
    Logged {
        /// The new line.
        entry: &'a LogEntry,
        /// Every line so far, `entry` last.
        history: &'a [LogEntry],
    },
    /// A checkpoint, the best adapter or the final adapter was written.
    Saved {
        /// Its directory.
        dir: &'a Path,
    },
    /// The run ended (by steps, by early stopping, or already finished on resume).
    Finished,
}
