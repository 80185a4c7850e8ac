//! Learning-rate schedules: linear warm-up, then cosine, linear or constant.

/// The shape of the learning rate after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecayKind {
    /// Half a cosine from the peak to zero (transformers' `cosine`).
    Cosine,
    /// A straight line from the peak to zero (transformers' `linear`).
    Linear,
    /// Stay at the peak.
    Constant,
}

/// The learning rate at each optimizer step, as transformers' schedulers compute it.
///
/// ```
/// use lora_train::{DecayKind, LrSchedule};
///
/// let schedule = LrSchedule { peak: 1e-3, warmup_steps: 10, total_steps: 110, decay: DecayKind::Linear };
/// assert_eq!(schedule.at(0), 0.0);
/// assert!((schedule.at(5) - 5e-4).abs() < 1e-12);
/// assert!((schedule.at(60) - 5e-4).abs() < 1e-12);
/// assert_eq!(schedule.at(110), 0.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LrSchedule {
    /// The rate reached at the end of warm-up.
    pub peak: f64,
    /// Steps of linear warm-up from 0.
    pub warmup_steps: usize,
    /// All optimizer steps of the run.
    pub total_steps: usize,
    /// The decay after warm-up.
    pub decay: DecayKind,
}

impl LrSchedule {
    /// The rate for optimizer step `step` (0-based).
    pub fn at(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak * step as f64 / self.warmup_steps.max(1) as f64;
        }
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1) as f64;
        let progress = ((step - self.warmup_steps) as f64 / span).min(1.0);
        match self.decay {
            DecayKind::Constant => self.peak,
            DecayKind::Linear => self.peak * (1.0 - progress),
            DecayKind::Cosine => self.peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
        }
    }
}
