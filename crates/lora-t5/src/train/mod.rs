//! Training: the trainer, its schedule, clipping, state, progress display and loss plot.

pub(crate) mod clip;
pub(crate) mod plot;
pub(crate) mod progress;
pub(crate) mod schedule;
pub(crate) mod state;
pub(crate) mod trainer;
