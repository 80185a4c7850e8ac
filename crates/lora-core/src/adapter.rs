//! One named low-rank adapter: the trainable A and B matrices of a LoRA layer.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};

use crate::tensor_util::linear_flat;
use crate::Dropout;
use crate::{Dora, LoraConfig, LoraError, LoraInit, LoraVariant};

/// One named adapter of a [`LoraLinear`](crate::LoraLinear): `ΔW = s · A · B`.
///
/// Weights are stored in Burn's layout (`x · W`), the transpose of PyTorch's:
/// `lora_a` is `[d_input, r]` (PEFT's `lora_A.weight` is `[r, d_input]`) and `lora_b` is
/// `[r, d_output]` (PEFT's `lora_B.weight` is `[d_output, r]`).
///
/// ```
/// use burn::backend::NdArray;
/// use lora_core::{LoraAdapter, LoraConfig};
///
/// let device = Default::default();
/// let adapter =
///     LoraAdapter::<NdArray>::new("default", 6, 5, &LoraConfig::new(2, 4.0), &device).unwrap();
/// assert_eq!(adapter.lora_a.dims(), [6, 2]);
/// assert_eq!(adapter.lora_b.dims(), [2, 5]);
/// assert_eq!(adapter.scaling(), 2.0);
/// ```
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// Down projection `A`, `[d_input, r]`.
    pub lora_a: Param<Tensor<B, 2>>,
    /// Up projection `B`, `[r, d_output]`.
    pub lora_b: Param<Tensor<B, 2>>,
    /// DoRA's magnitude per output feature, `[d_output]` (only with `use_dora`).
    pub magnitude: Option<Param<Tensor<B, 1>>>,
    /// Dropout on the adapter's input (active only while training).
    pub dropout: Dropout,
    /// The adapter's name.
    #[module(skip)]
    pub name: String,
    /// The configuration the adapter was made with.
    #[module(skip)]
    pub config: LoraConfig,
    /// What the variant's last merge kept to unmerge exactly (DoRA: `m / ‖W + ΔW‖`).
    #[module(skip)]
    pub(crate) merge_cache: Option<Vec<f32>>,
}

impl<B: Backend> LoraAdapter<B> {
    /// Creates an adapter for a `d_input → d_output` layer, initialised as `config` says.
    ///
    /// A DoRA magnitude is not created here: [`LoraLinear`](crate::LoraLinear) sets it from the
    /// base weight when the adapter is added.
    ///
    /// # Errors
    /// [`LoraError::InvalidRank`], [`LoraError::InvalidAlpha`] or [`LoraError::InvalidDropout`]
    /// for a `config` that [`LoraConfig::validate`](crate::LoraConfig::validate) refuses.
    pub fn new(
        name: &str,
        d_input: usize,
        d_output: usize,
        config: &LoraConfig,
        device: &B::Device,
    ) -> Result<Self, LoraError> {
        config.validate()?;
        let r = config.r;
        let bound_a = 1.0 / (d_input as f64).sqrt();
        let lora_a = match config.init_lora_weights {
            LoraInit::Gaussian => Tensor::random(
                [d_input, r],
                Distribution::Normal(0.0, 1.0 / r as f64),
                device,
            ),
            LoraInit::Default | LoraInit::Random => Tensor::random(
                [d_input, r],
                Distribution::Uniform(-bound_a, bound_a),
                device,
            ),
        };
        let lora_b = match config.init_lora_weights {
            LoraInit::Random => {
                let bound_b = 1.0 / (r as f64).sqrt();
                Tensor::random(
                    [r, d_output],
                    Distribution::Uniform(-bound_b, bound_b),
                    device,
                )
            }
            LoraInit::Default | LoraInit::Gaussian => Tensor::zeros([r, d_output], device),
        };
        Self::from_weights(name, config, lora_a, lora_b, None)
    }

    /// Builds an adapter from existing weights in Burn's layout (`A: [d_input, r]`,
    /// `B: [r, d_output]`, magnitude `[d_output]`), checking their shapes against `config.r`.
    /// The tensors are detached from any autodiff graph and become fresh trainable parameters.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::tensor::Tensor;
    /// use lora_core::{LoraAdapter, LoraConfig};
    ///
    /// let device = Default::default();
    /// let a = Tensor::<NdArray, 2>::ones([6, 2], &device);
    /// let b = Tensor::<NdArray, 2>::ones([2, 5], &device);
    /// let adapter = LoraAdapter::from_weights("x", &LoraConfig::new(2, 2.0), a, b, None).unwrap();
    /// assert_eq!(adapter.d_output(), 5);
    /// ```
    ///
    /// # Errors
    /// An invalid `config` (as [`LoraConfig::validate`](crate::LoraConfig::validate)), and
    /// [`LoraError::ShapeMismatch`] when `A`, `B` or the magnitude disagree with `config.r` or with
    /// each other, and [`LoraError::UnexpectedMagnitude`] for a magnitude without `use_dora`.
    pub fn from_weights(
        name: &str,
        config: &LoraConfig,
        lora_a: Tensor<B, 2>,
        lora_b: Tensor<B, 2>,
        magnitude: Option<Tensor<B, 1>>,
    ) -> Result<Self, LoraError> {
        config.validate()?;
        let [d_input, r_a] = lora_a.dims();
        let [r_b, d_output] = lora_b.dims();
        if r_a != config.r {
            return Err(shape_error(
                name,
                "lora_a",
                &[d_input, config.r],
                &[d_input, r_a],
            ));
        }
        if r_b != config.r {
            return Err(shape_error(
                name,
                "lora_b",
                &[config.r, d_output],
                &[r_b, d_output],
            ));
        }
        if magnitude.is_some() && !config.use_dora {
            return Err(LoraError::UnexpectedMagnitude {
                name: name.to_string(),
            });
        }
        if let Some(m) = &magnitude {
            let [len] = m.dims();
            if len != d_output {
                return Err(shape_error(name, "magnitude", &[d_output], &[len]));
            }
        }
        Ok(Self {
            lora_a: Param::from_tensor(lora_a.detach()),
            lora_b: Param::from_tensor(lora_b.detach()),
            magnitude: magnitude.map(|m| Param::from_tensor(m.detach())),
            dropout: Dropout::new(config.lora_dropout),
            name: name.to_string(),
            config: config.clone(),
            merge_cache: None,
        })
    }

    /// The rank `r`.
    pub fn rank(&self) -> usize {
        self.config.r
    }

    /// Input features.
    pub fn d_input(&self) -> usize {
        self.lora_a.dims()[0]
    }

    /// Output features.
    pub fn d_output(&self) -> usize {
        self.lora_b.dims()[1]
    }

    /// The factor `s` (`lora_alpha / r`, or `lora_alpha / √r` with rsLoRA).
    pub fn scaling(&self) -> f64 {
        self.config.scaling()
    }

    /// Whether this is a DoRA adapter (its config has `use_dora`).
    pub fn is_dora(&self) -> bool {
        self.config.use_dora
    }

    /// The variant this adapter follows, chosen by its config (`use_dora`: [`Dora`]); `None`
    /// for plain LoRA.
    pub fn variant(&self) -> Option<&'static dyn LoraVariant<B>> {
        if self.config.use_dora {
            Some(&Dora)
        } else {
            None
        }
    }

    /// The update `s · A · B` in Burn's layout, `[d_input, d_output]`.
    pub fn delta_weight(&self) -> Tensor<B, 2> {
        self.lora_a
            .val()
            .matmul(self.lora_b.val())
            .mul_scalar(self.scaling())
    }

    /// The factored branch `s · B(A(x))` on an input that already went through dropout.
    ///
    /// The scale is applied to the rank-`r` intermediate, the cheapest place.
    pub(crate) fn branch<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        // On autodiff over flex, one recorded operation with a direct backward pass.
        #[cfg(feature = "flex")]
        if let Some(y) = crate::lora_branch::lora_branch(
            &x,
            &self.lora_a.val(),
            &self.lora_b.val(),
            self.scaling(),
        ) {
            return y;
        }
        let hidden = linear_flat(x, self.lora_a.val(), None).mul_scalar(self.scaling());
        linear_flat(hidden, self.lora_b.val(), None)
    }

    /// Sets whether A, B (and the DoRA magnitude) receive gradients.
    pub(crate) fn set_trainable(self, trainable: bool) -> Self {
        Self {
            lora_a: self.lora_a.set_require_grad(trainable),
            lora_b: self.lora_b.set_require_grad(trainable),
            magnitude: self.magnitude.map(|m| m.set_require_grad(trainable)),
            ..self
        }
    }
}

fn shape_error(name: &str, tensor: &str, expected: &[usize], found: &[usize]) -> LoraError {
    LoraError::ShapeMismatch {
        what: format!("adapter `{name}` {tensor}"),
        expected: expected.to_vec(),
        found: found.to_vec(),
    }
}
