//! Configuration of one LoRA adapter.

use burn::config::Config;

use crate::LoraError;

/// How the adapter's A and B matrices are initialised (PEFT's `init_lora_weights`).
///
/// ```
/// use lora_core::{LoraConfig, LoraInit};
///
/// let config = LoraConfig::new(8, 16.0).with_init_lora_weights(LoraInit::Gaussian);
/// assert_eq!(config.init_lora_weights, LoraInit::Gaussian);
/// ```
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum LoraInit {
    /// PEFT's default (`true`): A ~ kaiming-uniform(a = √5), i.e. U(±1/√in), and B = 0, so the
    /// adapter starts as a no-op.
    Default,
    /// PEFT's `"gaussian"`: A ~ N(0, (1/r)²) and B = 0.
    Gaussian,
    /// PEFT's `false`: A ~ U(±1/√in) and B ~ U(±1/√r); the adapter is not a no-op.
    Random,
}

/// Which biases the adapter trains (PEFT's `bias`).
///
/// ```
/// use lora_core::LoraBias;
///
/// assert!(LoraBias::LoraOnly.trains_bias());
/// assert!(!LoraBias::None.trains_bias());
/// ```
#[derive(Config, Debug, PartialEq, Eq, Copy)]
pub enum LoraBias {
    /// No bias is trained.
    None,
    /// Every bias of the model is trained. A layer can only unfreeze its own bias: unfreeze the
    /// biases of the other modules of your model yourself.
    All,
    /// The biases of the LoRA-wrapped layers are trained.
    LoraOnly,
}

impl LoraBias {
    /// Whether the base bias of a LoRA layer is trained in this mode.
    pub fn trains_bias(self) -> bool {
        !matches!(self, LoraBias::None)
    }

    /// PEFT's spelling of the mode (`"none"`, `"all"`, `"lora_only"`).
    ///
    /// ```
    /// assert_eq!(lora_core::LoraBias::LoraOnly.as_peft_str(), "lora_only");
    /// ```
    pub fn as_peft_str(self) -> &'static str {
        match self {
            LoraBias::None => "none",
            LoraBias::All => "all",
            LoraBias::LoraOnly => "lora_only",
        }
    }
}

/// Configuration of one LoRA adapter, with PEFT's names and defaults.
///
/// ```
/// use lora_core::LoraConfig;
///
/// let config = LoraConfig::new(16, 32.0).with_lora_dropout(0.05).with_use_rslora(true);
/// config.validate().unwrap();
/// assert_eq!(config.scaling(), 32.0 / 4.0);
/// ```
#[derive(Config, Debug, PartialEq)]
pub struct LoraConfig {
    /// The rank of the update (`r`).
    pub r: usize,
    /// The scaling numerator (`lora_alpha`).
    pub lora_alpha: f64,
    /// Dropout probability on the adapter's input, applied only while training.
    #[config(default = 0.0)]
    pub lora_dropout: f64,
    /// Scale by `lora_alpha / √r` (rsLoRA) instead of `lora_alpha / r`.
    #[config(default = false)]
    pub use_rslora: bool,
    /// How A and B are initialised.
    #[config(default = "LoraInit::Default")]
    pub init_lora_weights: LoraInit,
    /// Which biases are trained.
    #[config(default = "LoraBias::None")]
    pub bias: LoraBias,
    /// Weight-decomposed LoRA (DoRA): a trainable magnitude per output feature.
    #[config(default = false)]
    pub use_dora: bool,
}

impl LoraConfig {
    /// Checks the values: `r ≥ 1`, `lora_dropout` in `[0, 1)`, finite `lora_alpha`.
    ///
    /// ```
    /// use lora_core::{LoraConfig, LoraError};
    ///
    /// let err = LoraConfig::new(4, 8.0).with_lora_dropout(1.0).validate().unwrap_err();
    /// assert!(matches!(err, LoraError::InvalidDropout { .. }));
    /// ```
    ///
    /// # Errors
    /// [`LoraError::InvalidRank`] for `r == 0`, [`LoraError::InvalidAlpha`] for a non-finite
    /// `lora_alpha` or one whose [`scaling`](Self::scaling) overflows `f32` (`1e308` would turn
    /// every output into infinities), [`LoraError::InvalidDropout`] for a dropout outside
    /// `[0, 1)`.
    pub fn validate(&self) -> Result<(), LoraError> {
        if self.r == 0 {
            return Err(LoraError::InvalidRank { r: self.r });
        }
        if !(0.0..1.0).contains(&self.lora_dropout) {
            return Err(LoraError::InvalidDropout {
                dropout: self.lora_dropout,
            });
        }
        if !self.lora_alpha.is_finite() || !(self.scaling() as f32).is_finite() {
            return Err(LoraError::InvalidAlpha {
                alpha: self.lora_alpha,
            });
        }
        Ok(())
    }

    /// The factor the update is multiplied by: `lora_alpha / r`, or `lora_alpha / √r` with rsLoRA.
    ///
    /// ```
    /// assert_eq!(lora_core::LoraConfig::new(8, 16.0).scaling(), 2.0);
    /// ```
    pub fn scaling(&self) -> f64 {
        let r = self.r as f64;
        if self.use_rslora {
            self.lora_alpha / r.sqrt()
        } else {
            self.lora_alpha / r
        }
    }
}
