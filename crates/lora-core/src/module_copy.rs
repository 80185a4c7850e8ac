//! PEFT's `modules_to_save`: a full, trainable copy of a layer per adapter, computed in place
//! of the layer while that adapter is the active one (PEFT's `ModulesToSaveWrapper`).

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::backend::Backend;

use crate::{LoraError, LoraLinear, BASE_ONLY};

/// A full copy of a layer's base, owned by one adapter (PEFT's `modules_to_save`): trainable
/// while its adapter is active, frozen otherwise.
#[derive(Module, Debug)]
pub struct ModuleCopy<B: Backend> {
    /// The copy, in the base's layout (weight `[d_input, d_output]`, the table for an
    /// embedding).
    pub layer: Linear<B>,
    /// The adapter it belongs to.
    #[module(skip)]
    pub name: String,
}

impl<B: Backend> ModuleCopy<B> {
    fn set_trainable(self, trainable: bool) -> Self {
        Self {
            layer: Linear {
                weight: self.layer.weight.set_require_grad(trainable),
                bias: self.layer.bias.map(|b| b.set_require_grad(trainable)),
            },
            name: self.name,
        }
    }
}

impl<B: Backend> LoraLinear<B> {
    /// Adds a full copy of the base layer for adapter `name` (PEFT's `modules_to_save`): while
    /// `name` is the active adapter, the layer computes the copy instead of its base, and the
    /// copy trains. A layer holds either module copies or LoRA adapters, as in PEFT, where a
    /// module saved whole is not a LoRA target. The first entry of a layer becomes active.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::LinearConfig;
    /// use burn::tensor::Tensor;
    /// use lora_core::LoraLinear;
    ///
    /// let device = Default::default();
    /// let mut head = LoraLinear::new(LinearConfig::new(4, 3).init::<NdArray>(&device));
    /// head.add_module_copy("default").unwrap();
    /// assert!(head.module_copy("default").is_some());
    /// assert_eq!(head.adapter_names(), ["default"]);
    /// let x = Tensor::<NdArray, 2>::ones([2, 4], &device);
    /// assert_eq!(head.forward(x).dims(), [2, 3]);
    /// ```
    ///
    /// # Errors
    /// The refusals of [`insert_module_copy`](Self::insert_module_copy).
    pub fn add_module_copy(&mut self, name: &str) -> Result<(), LoraError> {
        let copy = self.base_copy();
        self.insert_module_copy(name, copy)
    }

    /// A fresh float copy of the base layer (fresh parameters, dequantized), as
    /// [`add_module_copy`](Self::add_module_copy) adds it.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::LinearConfig;
    /// use lora_core::LoraLinear;
    ///
    /// let layer = LoraLinear::new(LinearConfig::new(4, 3).init::<NdArray>(&Default::default()));
    /// let copy = layer.base_copy();
    /// assert_ne!(copy.weight.id, layer.base.weight.id);
    /// assert_eq!(copy.weight.dims(), [4, 3]);
    /// ```
    pub fn base_copy(&self) -> Linear<B> {
        Linear {
            weight: Param::from_tensor(self.base.weight.val().dequantize().detach()),
            bias: self
                .base
                .bias
                .as_ref()
                .map(|b| Param::from_tensor(b.val().detach())),
        }
    }

    /// Adds `layer` as adapter `name`'s copy of this layer (for example read from a file); see
    /// [`add_module_copy`](Self::add_module_copy).
    ///
    /// # Errors
    /// [`LoraError::ReservedAdapterName`], [`LoraError::DuplicateAdapter`] for a name the layer
    /// has, [`LoraError::ShapeMismatch`] for a copy of another shape or without the base's
    /// bias (or with one it lacks), [`LoraError::MixedModuleCopy`] on a layer with LoRA
    /// adapters, and [`LoraError::MergedLayer`] while adapters are merged.
    pub fn insert_module_copy(&mut self, name: &str, layer: Linear<B>) -> Result<(), LoraError> {
        self.check_module_copy(name, &layer)?;
        let first = self.copies.is_empty();
        self.copies.push(
            ModuleCopy {
                layer,
                name: name.to_string(),
            }
            .set_trainable(first),
        );
        if first {
            self.state.active = vec![name.to_string()];
        }
        Ok(())
    }

    /// Checks what [`insert_module_copy`](Self::insert_module_copy) would refuse, without
    /// changing the layer.
    ///
    /// # Errors
    /// As [`insert_module_copy`](Self::insert_module_copy).
    pub fn check_module_copy(&self, name: &str, layer: &Linear<B>) -> Result<(), LoraError> {
        if name == BASE_ONLY {
            return Err(LoraError::ReservedAdapterName {
                name: name.to_string(),
            });
        }
        if self.has_adapter(name) {
            return Err(LoraError::DuplicateAdapter {
                name: name.to_string(),
            });
        }
        if let Some(adapter) = self.adapters.first() {
            return Err(LoraError::MixedModuleCopy {
                name: name.to_string(),
                other: adapter.name.clone(),
            });
        }
        if self.is_merged() {
            return Err(LoraError::MergedLayer {
                operation: "adding a module copy",
                merged: self.state.merged.clone(),
            });
        }
        let expected = self.base.weight.dims();
        let found = layer.weight.dims();
        if found != expected {
            return Err(LoraError::ShapeMismatch {
                what: format!("module copy `{name}` weight"),
                expected: expected.to_vec(),
                found: found.to_vec(),
            });
        }
        let bias = |b: &Option<Param<burn::tensor::Tensor<B, 1>>>| {
            b.as_ref().map_or(vec![], |b| b.dims().to_vec())
        };
        if bias(&layer.bias) != bias(&self.base.bias) {
            return Err(LoraError::ShapeMismatch {
                what: format!("module copy `{name}` bias"),
                expected: bias(&self.base.bias),
                found: bias(&layer.bias),
            });
        }
        Ok(())
    }

    /// Adapter `name`'s copy of this layer, if it has one.
    pub fn module_copy(&self, name: &str) -> Option<&ModuleCopy<B>> {
        self.copies.iter().find(|c| c.name == name)
    }

    /// Whether the layer has `name`, as a LoRA adapter or a module copy.
    pub fn has_adapter(&self, name: &str) -> bool {
        self.adapter(name).is_some() || self.module_copy(name).is_some()
    }

    /// Removes adapter `name`'s copy and returns it.
    ///
    /// # Errors
    /// [`LoraError::UnknownAdapter`] when the layer has no copy for `name`.
    pub fn delete_module_copy(&mut self, name: &str) -> Result<ModuleCopy<B>, LoraError> {
        let index = self
            .copies
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| LoraError::UnknownAdapter {
                name: name.to_string(),
                available: self.adapter_names().iter().map(|n| n.to_string()).collect(),
            })?;
        self.state.active.retain(|a| a != name);
        Ok(self.copies.remove(index))
    }

    /// The copy the layer computes instead of its base: the active adapter's, unless adapters
    /// are disabled (PEFT's wrapper uses its copy only when every active adapter has one).
    pub(crate) fn active_copy(&self) -> Option<&Linear<B>> {
        if self.state.disabled || self.copies.is_empty() || self.state.active.is_empty() {
            return None;
        }
        let mut copies = self.state.active.iter().map(|name| self.module_copy(name));
        let first = copies.next().flatten()?;
        copies.all(|c| c.is_some()).then_some(&first.layer)
    }

    /// Makes the copy of the active adapter (and no other) trainable.
    pub(crate) fn set_copies_trainable(&mut self) {
        let active = self.state.active.clone();
        self.copies = std::mem::take(&mut self.copies)
            .into_iter()
            .map(|c| {
                let trainable = active.contains(&c.name);
                c.set_trainable(trainable)
            })
            .collect();
    }
}
