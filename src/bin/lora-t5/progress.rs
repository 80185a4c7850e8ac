//! A one-line progress display for training.

use std::io::Write;
use std::time::Instant;

/// Prints `step 40/300 | loss 1.2345 | lr 3.00e-4 | 812 tok/s | ETA 2m13s` on one line of
/// standard error, rewritten in place.
#[derive(Debug)]
pub struct Progress {
    total: usize,
    started: Instant,
    start_step: usize,
    enabled: bool,
}

impl Progress {
    /// A display for a run of `total` steps starting at `start_step`; `enabled: false` prints
    /// nothing.
    pub fn new(total: usize, start_step: usize, enabled: bool) -> Self {
        Self {
            total,
            started: Instant::now(),
            start_step,
            enabled,
        }
    }

    /// Shows the state after `step` optimizer steps.
    pub fn show(&self, step: usize, loss: f64, lr: f64, tokens_per_second: f64) {
        if !self.enabled {
            return;
        }
        let done = step.saturating_sub(self.start_step).max(1) as f64;
        let per_step = self.started.elapsed().as_secs_f64() / done;
        let eta = (per_step * self.total.saturating_sub(step) as f64) as u64;
        let mut err = std::io::stderr();
        let _ = write!(
            err,
            "\rstep {step}/{} | loss {loss:.4} | lr {lr:.2e} | {tokens_per_second:.0} tok/s | ETA {}m{:02}s   ",
            self.total,
            eta / 60,
            eta % 60
        );
        let _ = err.flush();
    }

    /// Ends the line.
    pub fn finish(&self) {
        if self.enabled {
            eprintln!();
        }
    }
}
