//! Folding adapters into the base weight and taking them out again.

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::{LoraError, LoraLinear};

impl<B: Backend> LoraLinear<B> {
    /// Folds `s · A · B` of each named adapter into the base weight (an adapter with a variant
    /// through its [`merge`](crate::LoraVariant::merge) hook; DoRA: PEFT's
    /// `W' = m / ‖W + ΔW‖ · (W + ΔW)`) and records them as merged. Adapters already merged are
    /// skipped. The forward pass then uses the base weight alone.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::LinearConfig;
    /// use lora_core::{LoraConfig, LoraInit, LoraLinear};
    ///
    /// let device = Default::default();
    /// let base = LinearConfig::new(4, 3).init::<NdArray>(&device);
    /// let config = LoraConfig::new(2, 2.0).with_init_lora_weights(LoraInit::Random);
    /// let mut layer = LoraLinear::from_linear(base, &config).unwrap();
    /// layer.merge(&["default"]).unwrap();
    /// assert_eq!(layer.merged_adapters(), ["default"]);
    /// layer.unmerge().unwrap();
    /// assert!(layer.merged_adapters().is_empty());
    /// ```
    ///
    /// # Errors
    /// [`LoraError::UnknownAdapter`] (nothing is merged then), [`LoraError::QuantizedBase`] for
    /// an int8 base weight, and [`LoraError::TensorData`] when a DoRA factor cannot be read
    /// back. Adapters merged already are skipped.
    pub fn merge<S: AsRef<str>>(&mut self, names: &[S]) -> Result<(), LoraError> {
        self.merge_checked(names, false)
    }

    /// Like [`merge`](Self::merge), but first checks that every merged weight is finite; on a
    /// non-finite value it refuses with [`LoraError::NonFiniteMerge`] and leaves the weight as
    /// it was.
    ///
    /// # Errors
    /// As [`merge`](Self::merge), and [`LoraError::NonFiniteMerge`] when the merged weight would
    /// hold NaN or infinite values.
    pub fn safe_merge<S: AsRef<str>>(&mut self, names: &[S]) -> Result<(), LoraError> {
        self.merge_checked(names, true)
    }

    /// Merges the active adapters.
    ///
    /// # Errors
    /// As [`merge`](Self::merge) for the active adapters.
    pub fn merge_active(&mut self) -> Result<(), LoraError> {
        let active = self.state.active.clone();
        self.merge(&active)
    }

    fn merge_checked<S: AsRef<str>>(&mut self, names: &[S], safe: bool) -> Result<(), LoraError> {
        if self.state.sample_adapters.is_some() && !names.is_empty() {
            return Err(LoraError::RoutedLayer {
                operation: "merging an adapter",
            });
        }
        if self.is_base_quantized() && !names.is_empty() {
            return Err(LoraError::QuantizedBase {
                operation: "merging an adapter",
            });
        }
        // Module copies are not merged: the layer computes the active one anyway (PEFT).
        let names: Vec<&str> = names
            .iter()
            .map(AsRef::as_ref)
            .filter(|n| self.module_copy(n).is_none())
            .collect();
        for name in &names {
            self.require_adapter(name)?;
        }
        for &name in &names {
            if self.state.merged.iter().any(|m| m == name) {
                continue;
            }
            let index = self.require_adapter(name)?;
            let adapter = &self.adapters[index];
            let weight = self.base.weight.val().detach();
            let (merged, cache) = match adapter.variant() {
                None => (weight + adapter.delta_weight().detach(), None),
                Some(variant) => {
                    let merge = variant.merge(adapter, weight)?;
                    (merge.weight, Some(merge.cache))
                }
            };
            if safe && !all_finite(merged.clone()) {
                return Err(LoraError::NonFiniteMerge {
                    name: name.to_string(),
                });
            }
            self.adapters[index].merge_cache = cache;
            self.set_base_weight(merged);
            self.state.merged.push(name.to_string());
        }
        Ok(())
    }

    /// Takes every merged adapter out of the base weight again, in reverse merge order.
    ///
    /// # Errors
    /// None in practice: a merged adapter cannot be deleted, so its weights are there to take
    /// out ([`LoraError::UnknownAdapter`] otherwise).
    pub fn unmerge(&mut self) -> Result<(), LoraError> {
        while let Some(name) = self.state.merged.pop() {
            let index = self.require_adapter(&name)?;
            let adapter = &self.adapters[index];
            let merged = self.base.weight.val().detach();
            let original = match adapter.variant() {
                Some(variant) => {
                    let cache = adapter.merge_cache.as_deref().unwrap_or_default();
                    variant.unmerge(adapter, merged, cache)
                }
                None => merged - adapter.delta_weight().detach(),
            };
            self.adapters[index].merge_cache = None;
            self.set_base_weight(original);
        }
        Ok(())
    }

    /// The merged adapters, in merge order.
    pub fn merged_adapters(&self) -> &[String] {
        &self.state.merged
    }

    /// Whether any adapter is merged.
    pub fn is_merged(&self) -> bool {
        !self.state.merged.is_empty()
    }

    /// Merges the active adapters (checking for non-finite values) and returns the plain base
    /// layer. Its parameters stay frozen, as PEFT leaves them; call
    /// `Param::set_require_grad(true)` to train it further.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::LinearConfig;
    /// use lora_core::{LoraConfig, LoraLinear};
    ///
    /// let device = Default::default();
    /// let base = LinearConfig::new(4, 3).init::<NdArray>(&device);
    /// let layer = LoraLinear::from_linear(base, &LoraConfig::new(2, 2.0)).unwrap();
    /// let plain: burn::nn::Linear<NdArray> = layer.merge_and_unload().unwrap();
    /// assert_eq!(plain.weight.dims(), [4, 3]);
    /// ```
    ///
    /// # Errors
    /// The refusals of [`safe_merge`](Self::safe_merge) for the active adapters (a non-finite
    /// result, a quantized base).
    pub fn merge_and_unload(mut self) -> Result<Linear<B>, LoraError> {
        // A module copy replaces the layer, as PEFT's `merge_and_unload` puts the active
        // `modules_to_save` copy in the module's place.
        if let Some(copy) = self.active_copy() {
            return Ok(Linear {
                weight: copy.weight.clone().set_require_grad(false),
                bias: copy.bias.clone().map(|b| b.set_require_grad(false)),
            });
        }
        if !self.state.disabled {
            let active = self.state.active.clone();
            self.safe_merge(&active)?;
        }
        Ok(self.base)
    }

    /// Returns the base layer with every adapter taken out (merged ones unmerged first).
    ///
    /// # Errors
    /// A merged adapter that cannot be unmerged (see [`unmerge`](Self::unmerge)).
    pub fn unload(mut self) -> Result<Linear<B>, LoraError> {
        self.unmerge()?;
        Ok(self.base)
    }

    fn set_base_weight(&mut self, weight: Tensor<B, 2>) {
        let id = self.base.weight.id;
        self.base.weight = Param::initialized(id, weight.detach().set_require_grad(false));
    }
}

fn all_finite<B: Backend>(tensor: Tensor<B, 2>) -> bool {
    let bad = tensor.is_finite().bool_not().any().into_scalar();
    !burn::tensor::ElementConversion::elem::<bool>(bad)
}
