//! Progress bars (`indicatif`) on standard error: training and pretraining (step, loss,
//! learning rate, tokens/s, ETA), and generation over a file's prompts (`eval`, `generate
//! --input`, the demo's evaluations). Where standard error is not a terminal (a log file, CI),
//! the bars are hidden and training prints one plain line per logged step instead.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Whether the bars are drawn: standard error is a terminal.
fn drawn() -> bool {
    std::io::stderr().is_terminal()
}

/// A bar of `total` units on standard error (hidden when it is not a terminal).
fn bar(total: usize, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(total as u64),
        if drawn() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        },
    );
    // The templates are constants of this file, tested below.
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

const TRAINING_TEMPLATE: &str =
    "{prefix} [{elapsed_precise}] [{bar:30}] {pos}/{len} steps | {msg} | ETA {eta}";
const ITEMS_TEMPLATE: &str =
    "{prefix} [{elapsed_precise}] [{bar:30}] {pos}/{len} {msg} | ETA {eta}";

/// The progress of a training run.
#[derive(Debug)]
pub struct TrainingProgress {
    bar: ProgressBar,
}

impl TrainingProgress {
    /// A bar for a run of `total` optimizer steps, `start_step` of them done (a resumed run),
    /// labelled `label` (`train`, `pretrain`).
    pub fn new(label: &str, total: usize, start_step: usize) -> Self {
        let bar = bar(total, TRAINING_TEMPLATE);
        bar.set_prefix(label.to_string());
        bar.set_position(start_step as u64);
        // The ETA counts from here, not from step 0 of a resumed run.
        bar.reset_eta();
        Self { bar }
    }

    /// Shows the state after `step` optimizer steps.
    pub fn show(&self, step: usize, loss: f64, lr: f64, tokens_per_second: f64) {
        let message = format!("loss {loss:.4} | lr {lr:.2e} | {tokens_per_second:.0} tok/s");
        if self.bar.is_hidden() {
            eprintln!(
                "{} step {step}/{} | {message}",
                self.bar.prefix(),
                self.bar.length().unwrap_or_default()
            );
        }
        self.bar.set_position(step as u64);
        self.bar.set_message(message);
    }

    /// Shows an evaluation's result above the bar.
    pub fn evaluated(&self, step: usize, eval_loss: f64) {
        let line = format!("step {step}: eval loss {eval_loss:.4}");
        if self.bar.is_hidden() {
            eprintln!("{} {line}", self.bar.prefix());
        } else {
            self.bar.println(line);
        }
    }

    /// Leaves the bar at its last state.
    pub fn finish(&self) {
        self.bar.abandon();
    }
}

/// A bar over `total` items (prompts) labelled `label`, or `None` for a single item.
pub fn items(label: &str, total: usize, unit: &str) -> Option<ProgressBar> {
    (total > 1).then(|| {
        let bar = bar(total, ITEMS_TEMPLATE);
        bar.set_prefix(label.to_string());
        bar.set_message(unit.to_string());
        bar
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_are_valid() {
        for template in [TRAINING_TEMPLATE, ITEMS_TEMPLATE] {
            assert!(ProgressStyle::with_template(template).is_ok(), "{template}");
        }
    }

    #[test]
    fn a_bar_follows_the_steps() {
        let progress = TrainingProgress::new("train", 10, 2);
        assert_eq!(progress.bar.position(), 2);
        progress.show(7, 1.5, 1e-3, 100.0);
        assert_eq!(progress.bar.position(), 7);
        assert_eq!(
            progress.bar.message(),
            "loss 1.5000 | lr 1.00e-3 | 100 tok/s"
        );
        progress.finish();
        assert!(items("eval", 1, "prompts").is_none());
        let bar = items("eval", 5, "prompts").expect("a bar");
        bar.inc(2);
        assert_eq!((bar.position(), bar.length()), (2, Some(5)));
    }
}
