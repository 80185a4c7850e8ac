//! The LoRA-wrapped linear layer: frozen base, named adapters, forward pass.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::tensor_util::linear_flat;
use crate::{BaseTerms, LoraAdapter, LoraConfig, LoraError, ModuleCopy};

/// The name PEFT gives the first adapter.
pub const DEFAULT_ADAPTER_NAME: &str = "default";

/// In a mixed-batch forward, the name that selects the base layer alone for a sample (PEFT's
/// `"__base__"`).
pub const BASE_ONLY: &str = "__base__";

/// Which adapters are active, disabled or merged; not persisted with the weights.
#[derive(Clone, Debug, Default)]
pub(crate) struct AdapterState {
    pub(crate) active: Vec<String>,
    pub(crate) merged: Vec<String>,
    pub(crate) disabled: bool,
    /// One adapter name per sample (`set_sample_adapters`), for every later forward.
    pub(crate) sample_adapters: Option<Vec<String>>,
}

/// What a [`LoraLinear`]'s base weight is: a linear layer's, or an embedding table looked up
/// by token ids ([`LoraLinear::from_embedding`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum LayerKind {
    #[default]
    Linear,
    Embedding,
}

/// A linear layer with a frozen base weight and named low-rank adapters (PEFT's `lora.Linear`).
///
/// The output is `base(x) + Σ_active s · B(A(dropout(x)))`, computed in factored form (the
/// update `A · B` is never materialised per call). Dropout acts only on the adapter branch and
/// only while training (on an autodiff backend, like [`burn::nn::Dropout`]).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::LinearConfig;
/// use lora_core::{LoraConfig, LoraLinear};
///
/// let device = Default::default();
/// let base = LinearConfig::new(8, 4).init::<NdArray>(&device);
/// let mut layer = LoraLinear::from_linear(base, &LoraConfig::new(2, 4.0)).unwrap();
/// layer.add_adapter("style", &LoraConfig::new(4, 4.0)).unwrap();
/// layer.set_active_adapters(&["default", "style"]).unwrap();
/// assert_eq!(layer.active_adapters(), ["default", "style"]);
/// ```
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    /// The frozen base layer (Burn layout: weight `[d_input, d_output]`).
    pub base: Linear<B>,
    /// The adapters, in the order they were added.
    pub adapters: Vec<LoraAdapter<B>>,
    /// Full copies of the base per adapter (PEFT's `modules_to_save`), in the order they were
    /// added; a layer holds copies or LoRA adapters, not both.
    pub copies: Vec<ModuleCopy<B>>,
    #[module(skip)]
    pub(crate) state: AdapterState,
    #[module(skip)]
    pub(crate) kind: LayerKind,
}

impl<B: Backend> LoraLinear<B> {
    /// Wraps `base` without any adapter, freezing its weight and bias.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::LinearConfig;
    /// use lora_core::LoraLinear;
    ///
    /// let layer = LoraLinear::new(LinearConfig::new(3, 2).init::<NdArray>(&Default::default()));
    /// assert!(layer.adapter_names().is_empty());
    /// ```
    pub fn new(base: Linear<B>) -> Self {
        let base = Linear {
            weight: base.weight.set_require_grad(false),
            bias: base.bias.map(|b| b.set_require_grad(false)),
        };
        Self {
            base,
            adapters: Vec::new(),
            copies: Vec::new(),
            state: AdapterState::default(),
            kind: LayerKind::Linear,
        }
    }

    /// A layer without adapters around `base`, of this layer's kind (linear or embedding
    /// table).
    pub(crate) fn rewrapped(&self, base: Linear<B>) -> Self {
        let mut layer = Self::new(base);
        layer.kind = self.kind;
        layer
    }

    /// Wraps `base` and adds one adapter named [`DEFAULT_ADAPTER_NAME`], as PEFT's
    /// `get_peft_model` does.
    ///
    /// # Errors
    /// An invalid `config` (as [`LoraConfig::validate`](crate::LoraConfig::validate)).
    pub fn from_linear(base: Linear<B>, config: &LoraConfig) -> Result<Self, LoraError> {
        let mut layer = Self::new(base);
        layer.add_adapter(DEFAULT_ADAPTER_NAME, config)?;
        Ok(layer)
    }

    /// Input features.
    pub fn d_input(&self) -> usize {
        self.base.weight.dims()[0]
    }

    /// Output features.
    pub fn d_output(&self) -> usize {
        self.base.weight.dims()[1]
    }

    /// Adds a freshly initialised adapter. The first adapter becomes active; later ones are
    /// added inactive (and frozen) until [`set_active_adapters`](Self::set_active_adapters)
    /// selects them, as in PEFT.
    ///
    /// # Errors
    /// An invalid `config`, and the refusals of [`insert_adapter`](Self::insert_adapter).
    pub fn add_adapter(&mut self, name: &str, config: &LoraConfig) -> Result<(), LoraError> {
        let adapter = self.new_adapter(name, config)?;
        self.insert_adapter(adapter)
    }

    /// A freshly initialised adapter of this layer's shape, not yet added: PEFT's
    /// initialisation for a linear layer ([`LoraAdapter::new`]) or for an embedding table (A
    /// zeros, B standard normal).
    ///
    /// # Errors
    /// An invalid `config` (as [`LoraConfig::validate`](crate::LoraConfig::validate)).
    pub fn new_adapter(
        &self,
        name: &str,
        config: &LoraConfig,
    ) -> Result<LoraAdapter<B>, LoraError> {
        if self.is_embedding() {
            return self.new_embedding_adapter(name, config);
        }
        let device = self.base.weight.device();
        LoraAdapter::new(name, self.d_input(), self.d_output(), config, &device)
    }

    /// Adds an adapter built elsewhere (for example read from a file). Its shapes must match the
    /// layer; an adapter with a variant is completed by its
    /// [`init`](crate::LoraVariant::init) hook (a DoRA adapter without a magnitude gets PEFT's
    /// initial one, `‖W + s·A·B‖`).
    ///
    /// # Errors
    /// [`LoraError::ReservedAdapterName`], [`LoraError::DuplicateAdapter`],
    /// [`LoraError::ShapeMismatch`] for an adapter of another layer's size,
    /// [`LoraError::MultipleBiasAdapters`] for a second adapter that trains the bias, and
    /// [`LoraError::UnsupportedVariant`] for a DoRA adapter on an embedding table.
    pub fn insert_adapter(&mut self, adapter: LoraAdapter<B>) -> Result<(), LoraError> {
        self.check_insertable(&adapter)?;
        let name = adapter.name.clone();
        if adapter.config.bias.trains_bias() {
            self.base.bias = self.base.bias.take().map(|b| b.set_require_grad(true));
        }
        let mut adapter = adapter;
        if let Some(variant) = adapter.variant() {
            variant.init(&mut adapter, self.base.weight.val().dequantize());
        }
        let first = self.adapters.is_empty();
        self.adapters.push(adapter.set_trainable(first));
        if first {
            self.state.active = vec![name];
        }
        Ok(())
    }

    /// Checks what [`insert_adapter`](Self::insert_adapter) would refuse, without changing the
    /// layer.
    ///
    /// # Errors
    /// As [`insert_adapter`](Self::insert_adapter).
    pub fn check_insertable(&self, adapter: &LoraAdapter<B>) -> Result<(), LoraError> {
        let name = adapter.name.clone();
        if name == BASE_ONLY {
            return Err(LoraError::ReservedAdapterName { name });
        }
        if self.has_adapter(&name) {
            return Err(LoraError::DuplicateAdapter { name });
        }
        if let Some(copy) = self.copies.first() {
            return Err(LoraError::MixedModuleCopy {
                name,
                other: copy.name.clone(),
            });
        }
        self.check_fits(adapter)
    }

    /// The adapter called `name`.
    pub fn adapter(&self, name: &str) -> Option<&LoraAdapter<B>> {
        self.adapters.iter().find(|a| a.name == name)
    }

    /// The names of all adapters (LoRA adapters, then module copies), in the order they were
    /// added.
    pub fn adapter_names(&self) -> Vec<&str> {
        let copies = self.copies.iter().map(|c| c.name.as_str());
        self.adapters
            .iter()
            .map(|a| a.name.as_str())
            .chain(copies)
            .collect()
    }

    /// The active adapters, in the order they are applied.
    pub fn active_adapters(&self) -> &[String] {
        &self.state.active
    }

    /// Makes exactly these adapters active and trainable; all others are frozen.
    ///
    /// # Errors
    /// [`LoraError::UnknownAdapter`] for a name the layer does not have, and
    /// [`LoraError::ModuleCopyUnsupported`] for more than one name on a layer with module copies
    /// (PEFT activates one `modules_to_save` copy at a time); nothing changes then.
    pub fn set_active_adapters<S: AsRef<str>>(&mut self, names: &[S]) -> Result<(), LoraError> {
        for name in names {
            if self.module_copy(name.as_ref()).is_none() {
                self.require_adapter(name.as_ref())?;
            }
        }
        if !self.copies.is_empty() && names.len() > 1 {
            return Err(LoraError::ModuleCopyUnsupported {
                operation: "activating several adapters at once",
            });
        }
        let active: Vec<String> = names.iter().map(|n| n.as_ref().to_string()).collect();
        self.adapters = std::mem::take(&mut self.adapters)
            .into_iter()
            .map(|a| {
                let trainable = active.contains(&a.name);
                a.set_trainable(trainable)
            })
            .collect();
        self.state.active = active;
        self.set_copies_trainable();
        Ok(())
    }

    /// Turns every adapter off: the layer computes its base alone. Merged adapters are unmerged
    /// first, as PEFT does.
    ///
    /// # Errors
    /// A merged adapter that cannot be unmerged (see [`unmerge`](Self::unmerge)).
    pub fn disable_adapters(&mut self) -> Result<(), LoraError> {
        if !self.state.merged.is_empty() {
            self.unmerge()?;
        }
        self.state.disabled = true;
        Ok(())
    }

    /// Turns the active adapters back on after [`disable_adapters`](Self::disable_adapters).
    pub fn enable_adapters(&mut self) {
        self.state.disabled = false;
    }

    /// Whether adapters are applied (not disabled).
    pub fn adapters_enabled(&self) -> bool {
        !self.state.disabled
    }

    /// Removes an adapter and returns it. Refused while it is merged.
    ///
    /// # Errors
    /// [`LoraError::UnknownAdapter`], or [`LoraError::AdapterMerged`] while it is merged.
    pub fn delete_adapter(&mut self, name: &str) -> Result<LoraAdapter<B>, LoraError> {
        let index = self.require_adapter(name)?;
        if self.state.merged.iter().any(|m| m == name) {
            return Err(LoraError::AdapterMerged {
                name: name.to_string(),
            });
        }
        let removed = self.adapters.remove(index);
        self.state.active.retain(|a| a != name);
        if removed.config.bias.trains_bias() {
            self.base.bias = self.base.bias.take().map(|b| b.set_require_grad(false));
        }
        Ok(removed)
    }

    /// Replaces the weights and settings of adapter `adapter.name` with `adapter`'s, keeping
    /// its place, its active state and its trainability (PEFT's hot-swap of one layer). The
    /// rank may change. Returns the adapter it replaced.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::LinearConfig;
    /// use lora_core::{LoraAdapter, LoraConfig, LoraLinear};
    ///
    /// let device = Default::default();
    /// let base = LinearConfig::new(4, 4).init::<NdArray>(&device);
    /// let mut layer = LoraLinear::from_linear(base, &LoraConfig::new(2, 4.0)).unwrap();
    /// let other = LoraAdapter::new("default", 4, 4, &LoraConfig::new(3, 6.0), &device).unwrap();
    /// let old = layer.replace_adapter(other).unwrap();
    /// assert_eq!((old.rank(), layer.adapter("default").unwrap().rank()), (2, 3));
    /// assert_eq!(layer.active_adapters(), ["default"]);
    /// ```
    ///
    /// # Errors
    /// [`LoraError::UnknownAdapter`] when the layer has no adapter of that name,
    /// [`LoraError::AdapterMerged`] while it is merged, [`LoraError::ShapeMismatch`] for an
    /// adapter of another layer's size and [`LoraError::MultipleBiasAdapters`] when it trains
    /// the bias and another adapter already does.
    pub fn replace_adapter(
        &mut self,
        adapter: LoraAdapter<B>,
    ) -> Result<LoraAdapter<B>, LoraError> {
        let name = adapter.name.clone();
        let index = self.require_adapter(&name)?;
        if self.state.merged.contains(&name) {
            return Err(LoraError::AdapterMerged { name });
        }
        self.check_fits(&adapter)?;
        let mut adapter = adapter;
        if let Some(variant) = adapter.variant() {
            variant.init(&mut adapter, self.base.weight.val().dequantize());
        }
        let trains_bias = adapter.config.bias.trains_bias();
        let trainable = self.state.active.contains(&name);
        let old = std::mem::replace(&mut self.adapters[index], adapter.set_trainable(trainable));
        if trains_bias != old.config.bias.trains_bias() {
            self.base.bias = self
                .base
                .bias
                .take()
                .map(|b| b.set_require_grad(trains_bias));
        }
        Ok(old)
    }

    /// Renames adapter `from` to `to`; its active and merged state follow it.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::LinearConfig;
    /// use lora_core::{LoraConfig, LoraLinear};
    ///
    /// let base = LinearConfig::new(4, 4).init::<NdArray>(&Default::default());
    /// let mut layer = LoraLinear::from_linear(base, &LoraConfig::new(2, 4.0)).unwrap();
    /// layer.rename_adapter("default", "style").unwrap();
    /// assert_eq!(layer.active_adapters(), ["style"]);
    /// assert!(layer.rename_adapter("default", "x").is_err());
    /// ```
    ///
    /// # Errors
    /// [`LoraError::UnknownAdapter`] for `from`, [`LoraError::ReservedAdapterName`] or
    /// [`LoraError::DuplicateAdapter`] for `to`.
    pub fn rename_adapter(&mut self, from: &str, to: &str) -> Result<(), LoraError> {
        let copy = self.copies.iter().position(|c| c.name == from);
        let index = match copy {
            Some(_) => None,
            None => Some(self.require_adapter(from)?),
        };
        if from == to {
            return Ok(());
        }
        if to == BASE_ONLY {
            return Err(LoraError::ReservedAdapterName { name: to.into() });
        }
        if self.has_adapter(to) {
            return Err(LoraError::DuplicateAdapter { name: to.into() });
        }
        match (index, copy) {
            (Some(index), _) => self.adapters[index].name = to.to_string(),
            (None, Some(copy)) => self.copies[copy].name = to.to_string(),
            (None, None) => unreachable!("`from` was found above"),
        }
        for name in self
            .state
            .active
            .iter_mut()
            .chain(self.state.merged.iter_mut())
        {
            if name == from {
                *name = to.to_string();
            }
        }
        Ok(())
    }

    /// Applies the layer to `x` of shape `[..., d_input]`, giving `[..., d_output]`.
    ///
    /// With adapters disabled, or with any adapter merged, this is the base layer alone (merged
    /// adapters live in its weight), as in PEFT; while the active adapter has a module copy
    /// (`modules_to_save`), it is that copy. Otherwise the update is applied in factored form
    /// ([`forward_factored`](Self::forward_factored)), except for inference (no autodiff) over
    /// many tokens, where adding `s·A·B` to the weight once costs fewer operations than the two
    /// thin products per token ([`forward_materialized`](Self::forward_materialized)); both give
    /// the same result.
    ///
    /// # Shapes
    /// - `x`: `[..., d_input]` (any number of leading dimensions)
    /// - output: `[..., d_output]`
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if let Some(names) = &self.state.sample_adapters {
            return self.forward_routed(x, names);
        }
        if let Some(y) = self.copy_forward(&x) {
            return y;
        }
        if self.runs_base_only() {
            return self.base_forward(x);
        }
        let tokens = x.dims()[..D - 1].iter().product::<usize>();
        let inference = !B::ad_enabled(&x.device());
        if inference
            && !self.has_active_variant()
            && !self.is_base_quantized()
            && self.materializing_pays_off(tokens)
        {
            self.forward_materialized(x)
        } else {
            self.forward_factored(x)
        }
    }

    /// The forward pass computing each active update as `s · (x·A)·B`, never forming `A·B`.
    ///
    /// # Shapes
    /// - `x`: `[..., d_input]` (any number of leading dimensions)
    /// - output: `[..., d_output]`
    pub fn forward_factored<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if let Some(y) = self.copy_forward(&x) {
            return y;
        }
        if self.runs_base_only() {
            return self.base_forward(x);
        }
        if !self.has_active_variant() {
            let mut output = self.base_forward(x.clone());
            #[cfg(feature = "flex")]
            let inference = !B::ad_enabled(&x.device());
            for adapter in self.active_adapter_iter() {
                // On flex, inference adds the up-projection inside its GEMM.
                #[cfg(feature = "flex")]
                if inference {
                    match crate::low_rank_accumulate::add_low_rank_update(output, &x, adapter) {
                        Ok(updated) => {
                            output = updated;
                            continue;
                        }
                        Err(unchanged) => output = unchanged,
                    }
                }
                output = output + adapter.branch(adapter.dropout.forward(x.clone()));
            }
            return output;
        }
        // A variant (DoRA) reuses the base weight and the product without bias: computed
        // once, over the input flattened to `[tokens, d_input]`.
        let mut dims = x.dims();
        let tokens = dims[..D - 1].iter().product::<usize>();
        let x = x.reshape([tokens, self.d_input()]);
        let weight = self.base.weight.val().dequantize();
        let base = BaseTerms {
            product: linear_flat(x.clone(), weight.clone(), None),
            weight,
        };
        let mut output = match &self.base.bias {
            Some(bias) => base.product.clone() + bias.val().unsqueeze_dim(0),
            None => base.product.clone(),
        };
        for adapter in self.active_adapter_iter() {
            output = match adapter.variant() {
                None => output + adapter.branch(adapter.dropout.forward(x.clone())),
                Some(variant) => variant.forward(adapter, &base, x.clone(), output),
            };
        }
        dims[D - 1] = self.d_output();
        output.reshape(dims)
    }

    /// The forward pass with the active updates added to the weight first:
    /// `x · (W + Σ s·A·B) + b`. Without dropout; adapters with a variant (DoRA) fall back to
    /// [`forward_factored`](Self::forward_factored).
    ///
    /// # Shapes
    /// - `x`: `[..., d_input]` (any number of leading dimensions)
    /// - output: `[..., d_output]`
    pub fn forward_materialized<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        if let Some(y) = self.copy_forward(&x) {
            return y;
        }
        if self.runs_base_only() {
            return self.base_forward(x);
        }
        if self.has_active_variant() {
            return self.forward_factored(x);
        }
        let bias = self.base.bias.as_ref().map(|b| b.val());
        #[cfg(feature = "flex")]
        if !B::ad_enabled(&x.device()) {
            let adapters = self.active_adapter_iter();
            let weight =
                crate::low_rank_accumulate::merged_weight(&self.base.weight.val(), adapters);
            if let Some(weight) = weight {
                return linear_flat(x, weight, bias);
            }
        }
        let weight = self
            .active_adapter_iter()
            .fold(self.base.weight.val().dequantize(), |w, adapter| {
                w + adapter.delta_weight()
            });
        linear_flat(x, weight, bias)
    }

    /// Whether forming `W + s·A·B` once costs fewer multiply-adds than the factored products for
    /// `tokens` rows: `T·(r·(I+O) + O)` against `1.5·I·O·(r+1)`, over the active adapters.
    fn materializing_pays_off(&self, tokens: usize) -> bool {
        let (i, o) = (self.d_input(), self.d_output());
        let r: usize = self.active_adapter_iter().map(|a| a.rank()).sum();
        // The materialised path runs a thin product and a full-size add at lower efficiency than
        // the big product: it needs a 3/2 margin (measured in `benches/lora_linear.rs`).
        2 * tokens * (r * (i + o) + o) > 3 * i * o * (r + 1)
    }

    /// The active module copy applied to `x`, when one replaces the layer.
    fn copy_forward<const D: usize>(&self, x: &Tensor<B, D>) -> Option<Tensor<B, D>> {
        let copy = self.active_copy()?;
        let bias = copy.bias.as_ref().map(|b| b.val());
        Some(linear_flat(x.clone(), copy.weight.val(), bias))
    }

    /// An [`ArgmaxScreen`](crate::ArgmaxScreen) of this layer's output, whose
    /// [`argmax_rows`](crate::ArgmaxScreen::argmax_rows) gives the index of the largest output
    /// of each of a few input rows exactly as [`forward`](Self::forward) computes them, reading
    /// an int8 copy of the weight (greedy decoding through an untied language-model head).
    ///
    /// `None` unless the forward pass is the base product alone: no active adapter, module
    /// copy or per-sample routing (or the adapters merged), no bias, an `f32` base weight on the
    /// flex backend. The screen holds the weight as it is now; build another after changing the
    /// layer.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::LinearConfig;
    /// use lora_core::{LoraConfig, LoraLinear};
    ///
    /// let device = Default::default();
    /// let base = LinearConfig::new(16, 40).with_bias(false).init::<NdArray>(&device);
    /// let layer = LoraLinear::from_linear(base, &LoraConfig::new(4, 8.0)).unwrap();
    /// // An active adapter (and, here, a backend other than flex): no screen.
    /// assert!(layer.output_screen().is_none());
    /// ```
    pub fn output_screen(&self) -> Option<crate::ArgmaxScreen<B>> {
        let base_alone = self.runs_base_only()
            && self.state.sample_adapters.is_none()
            && self.active_copy().is_none();
        if !base_alone || self.base.bias.is_some() || self.is_base_quantized() {
            return None;
        }
        crate::ArgmaxScreen::for_linear_weight(self.base.weight.val())
    }

    /// The frozen base layer alone.
    pub(crate) fn base_forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        #[cfg(feature = "flex")]
        if self.is_base_quantized() {
            let bias = self.base.bias.as_ref().map(|b| b.val());
            let weight = self.base.weight.val();
            if let Some(y) = crate::int8_product::try_flex_linear(&x, &weight, bias.as_ref()) {
                return y;
            }
        }
        // On flex, a decoding step's few rows stream the weight once.
        #[cfg(feature = "flex")]
        {
            let bias = self.base.bias.as_ref().map(|b| b.val());
            let weight = self.base.weight.val();
            if let Some(y) = crate::streamed_product::try_flex_linear(&x, &weight, bias.as_ref()) {
                return y;
            }
        }
        // On flex (and autodiff over it), one GEMM into a buffer of its own.
        #[cfg(feature = "flex")]
        let x = {
            let bias = self.base.bias.as_ref().map(|b| b.val());
            match crate::frozen_linear::frozen_linear(x, &self.base.weight.val(), bias.as_ref()) {
                Ok(y) => return y,
                Err(x) => x,
            }
        };
        linear_flat(
            x,
            self.base.weight.val(),
            self.base.bias.as_ref().map(|b| b.val()),
        )
    }

    pub(crate) fn runs_base_only(&self) -> bool {
        self.state.disabled || !self.state.merged.is_empty() || self.state.active.is_empty()
    }

    fn has_active_variant(&self) -> bool {
        self.active_adapter_iter().any(|a| a.variant().is_some())
    }

    pub(crate) fn active_adapter_iter(&self) -> impl Iterator<Item = &LoraAdapter<B>> {
        self.state
            .active
            .iter()
            .filter_map(|name| self.adapters.iter().find(|a| &a.name == name))
    }

    /// Refuses an adapter of another layer's size, or one that trains the bias while another
    /// adapter (not of its name) already does.
    fn check_fits(&self, adapter: &LoraAdapter<B>) -> Result<(), LoraError> {
        self.check_embedding_adapter(adapter)?;
        let name = &adapter.name;
        for (what, expected, found) in [
            ("lora_a rows", self.d_input(), adapter.d_input()),
            ("lora_b columns", self.d_output(), adapter.d_output()),
        ] {
            if expected != found {
                return Err(LoraError::ShapeMismatch {
                    what: format!("adapter `{name}` {what}"),
                    expected: vec![expected],
                    found: vec![found],
                });
            }
        }
        if adapter.config.bias.trains_bias() {
            if let Some(other) = self
                .adapters
                .iter()
                .find(|a| &a.name != name && a.config.bias.trains_bias())
            {
                return Err(LoraError::MultipleBiasAdapters {
                    name: name.clone(),
                    bias: adapter.config.bias.as_peft_str().to_string(),
                    other: other.name.clone(),
                });
            }
        }
        Ok(())
    }

    pub(crate) fn require_adapter(&self, name: &str) -> Result<usize, LoraError> {
        self.adapters
            .iter()
            .position(|a| a.name == name)
            .ok_or_else(|| LoraError::UnknownAdapter {
                name: name.to_string(),
                available: self.adapters.iter().map(|a| a.name.clone()).collect(),
            })
    }
}
