//! LoRA operations on a whole model (PEFT's `PeftModel` / `BaseTuner` methods), for any
//! [`LoraModule`]: each applies the layer operation of the same name to every LoRA layer and
//! reports the first layer that refuses, by its module path.

use burn::tensor::backend::Backend;

use crate::{LoraError, LoraLinear, LoraModule, WeightedCombination};

/// Model-wide adapter operations, implemented for every [`LoraModule`] (a whole model, a block,
/// a `Vec` of layers).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::nn::LinearConfig;
/// use lora_core::{LoraConfig, LoraLinear, LoraModelOps};
///
/// let device = Default::default();
/// let mut layers: Vec<LoraLinear<NdArray>> = (0..2)
///     .map(|_| LoraLinear::from_linear(LinearConfig::new(4, 4).init(&device), &LoraConfig::new(2, 4.0)).unwrap())
///     .collect();
/// layers[0].add_adapter("other", &LoraConfig::new(2, 2.0)).unwrap();
/// assert_eq!(layers.adapter_names(), ["default", "other"]);
/// layers.set_adapter(&["other"]).unwrap();
/// assert_eq!(layers[0].active_adapters(), ["other"]);
/// assert!(layers[1].active_adapters().is_empty()); // this layer has no `other`
/// assert_eq!(layers.delete_adapter("other").unwrap(), 1);
/// assert!(layers.delete_adapter("other").is_err());
/// layers.set_adapter(&["default"]).unwrap();
/// assert_eq!(layers.merge_and_unload().unwrap(), 2);
/// assert!(layers.adapter_names().is_empty());
/// ```
pub trait LoraModelOps<B: Backend>: LoraModule<B> {
    /// Calls `visit` on every LoRA layer with its path until one fails; the layers after it
    /// are not visited. The operations of this trait name the failing layer with
    /// [`LoraError::InLayer`] ([`in_layer`]).
    ///
    /// # Errors
    /// The first error `visit` returns.
    fn try_visit_lora_mut<E>(
        &mut self,
        mut visit: impl FnMut(&str, &mut LoraLinear<B>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut failure = None;
        self.visit_lora_mut("", &mut |path, layer| {
            if failure.is_none() {
                failure = visit(path, layer).err();
            }
        });
        failure.map_or(Ok(()), Err)
    }

    /// Calls `visit` on every LoRA layer with its path until one fails, as
    /// [`try_visit_lora_mut`](Self::try_visit_lora_mut) without changing the layers.
    ///
    /// # Errors
    /// The first error `visit` returns.
    fn try_visit_lora<E>(
        &self,
        mut visit: impl FnMut(&str, &LoraLinear<B>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut failure = None;
        self.visit_lora("", &mut |path, layer| {
            if failure.is_none() {
                failure = visit(path, layer).err();
            }
        });
        failure.map_or(Ok(()), Err)
    }

    /// Every adapter name in the model, in the order the layers first show them.
    fn adapter_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        self.visit_lora("", &mut |_, layer| {
            for name in layer.adapter_names() {
                if !names.iter().any(|n| n == name) {
                    names.push(name.to_string());
                }
            }
        });
        names
    }

    /// Makes `names` the active (and only trainable) adapters of every layer; a layer that
    /// lacks some of them activates those it has, as in PEFT, where such a layer contributes
    /// nothing for the missing ones.
    ///
    /// # Errors
    /// [`LoraError::UnknownAdapter`] for a name that no layer has.
    fn set_adapter<S: AsRef<str>>(&mut self, names: &[S]) -> Result<(), LoraError> {
        require_in_model(self, names)?;
        self.try_visit_lora_mut(|path, layer| {
            let present: Vec<&str> = names
                .iter()
                .map(AsRef::as_ref)
                .filter(|n| layer.has_adapter(n))
                .collect();
            in_layer(path, layer.set_active_adapters(&present))
        })
    }

    /// Routes every later forward of every layer per sample (PEFT's `adapter_names`): see
    /// [`LoraLinear::set_sample_adapters`]; [`BASE_ONLY`](crate::BASE_ONLY) for the base alone.
    /// `None` ends the routing.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::LinearConfig;
    /// use lora_core::{LoraConfig, LoraLinear, LoraModelOps, BASE_ONLY};
    ///
    /// let device = Default::default();
    /// let mut layers: Vec<LoraLinear<NdArray>> = (0..2)
    ///     .map(|_| LoraLinear::from_linear(LinearConfig::new(4, 4).init(&device), &LoraConfig::new(2, 4.0)).unwrap())
    ///     .collect();
    /// layers.set_sample_adapters(Some(&["default", BASE_ONLY])).unwrap();
    /// assert_eq!(layers[1].sample_adapters().unwrap(), ["default", BASE_ONLY]);
    /// assert!(layers.set_sample_adapters(Some(&["nope"])).is_err());
    /// ```
    ///
    /// # Errors
    /// [`LoraError::UnknownAdapter`] for a name that no layer has, a layer's
    /// [`LoraError::MergedLayer`]; on error no layer changes.
    fn set_sample_adapters<S: AsRef<str>>(&mut self, names: Option<&[S]>) -> Result<(), LoraError> {
        if let Some(names) = names {
            let named: Vec<&str> = names
                .iter()
                .map(AsRef::as_ref)
                .filter(|n| *n != crate::BASE_ONLY)
                .collect();
            require_in_model(self, &named)?;
            self.try_visit_lora(|path, layer| {
                if layer.is_merged() {
                    in_layer(
                        path,
                        Err(LoraError::MergedLayer {
                            operation: "routing samples to adapters",
                            merged: layer.merged_adapters().to_vec(),
                        }),
                    )
                } else {
                    Ok(())
                }
            })?;
        }
        self.try_visit_lora_mut(|path, layer| in_layer(path, layer.set_sample_adapters(names)))
    }

    /// Turns every adapter off in every layer (merged ones are unmerged first).
    ///
    /// # Errors
    /// A layer whose merged adapters cannot be unmerged.
    fn disable_adapters(&mut self) -> Result<(), LoraError> {
        self.try_visit_lora_mut(|path, layer| in_layer(path, layer.disable_adapters()))
    }

    /// Turns the active adapters back on in every layer.
    fn enable_adapters(&mut self) {
        self.visit_lora_mut("", &mut |_, layer| layer.enable_adapters());
    }

    /// Removes adapter `name` from every layer that has it; returns how many had it.
    ///
    /// # Errors
    /// [`LoraError::UnknownAdapter`] when no layer has it; a layer where it is merged.
    fn delete_adapter(&mut self, name: &str) -> Result<usize, LoraError> {
        require_in_model(self, &[name])?;
        let mut count = 0;
        self.try_visit_lora_mut(|path, layer| {
            if layer.module_copy(name).is_some() {
                in_layer(path, layer.delete_module_copy(name))?;
                count += 1;
            } else if layer.adapter(name).is_some() {
                in_layer(path, layer.delete_adapter(name))?;
                count += 1;
            }
            Ok(())
        })?;
        Ok(count)
    }

    /// Renames adapter `from` to `to` in every layer that has it (its active and merged state
    /// follow); returns how many had it.
    ///
    /// # Errors
    /// [`LoraError::UnknownAdapter`] when no layer has `from`; [`LoraError::DuplicateAdapter`]
    /// when a layer already has `to`.
    fn rename_adapter(&mut self, from: &str, to: &str) -> Result<usize, LoraError> {
        require_in_model(self, &[from])?;
        let mut count = 0;
        self.try_visit_lora_mut(|path, layer| {
            if layer.has_adapter(from) {
                in_layer(path, layer.rename_adapter(from, to))?;
                count += 1;
            }
            Ok(())
        })?;
        Ok(count)
    }

    /// Merges the active adapters of every layer into its base weight (with PEFT's NaN check)
    /// and removes all its adapters, so the model computes as a plain one; returns how many
    /// layers had adapters. Disabled adapters are removed without being merged.
    ///
    /// # Errors
    /// A layer whose merge is refused (non-finite result, quantized base); the layers before
    /// it are already merged.
    fn merge_and_unload(&mut self) -> Result<usize, LoraError> {
        unload_each(self, LoraLinear::merge_and_unload)
    }

    /// [`merge_and_unload`](Self::merge_and_unload), verified: runs `probe` (the model's outputs
    /// on inputs of the caller's choice, such as logits for a few prompts) before and after
    /// merging a copy, and keeps the merged model only when no output moved by more than
    /// `max_abs_diff` (`None`: any finite difference). PEFT merges without looking; a merge
    /// that changes outputs (a scaling that overflows, a quantized or half-precision base) is
    /// caught here.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::LinearConfig;
    /// use burn::tensor::Tensor;
    /// use lora_core::{LoraConfig, LoraInit, LoraLinear, LoraModelOps};
    ///
    /// let device = Default::default();
    /// let config = LoraConfig::new(2, 4.0).with_init_lora_weights(LoraInit::Random);
    /// let mut layer = LoraLinear::from_linear(LinearConfig::new(6, 5).init::<NdArray>(&device), &config).unwrap();
    /// let x = Tensor::<NdArray, 2>::ones([3, 6], &device);
    /// let check = layer.merge_and_unload_checked(|m| m.forward(x.clone()), Some(1e-4)).unwrap();
    /// assert_eq!(check.layers, 1);
    /// assert!(check.max_abs_diff < 1e-5 && layer.adapters.is_empty());
    /// ```
    ///
    /// # Errors
    /// [`LoraError::MergeCheckFailed`] (the model left unmerged) when an output moves by more
    /// than `max_abs_diff` or becomes non-finite, and the errors of `merge_and_unload` (then
    /// too the model is left unmerged: the merge ran on a copy).
    fn merge_and_unload_checked<const D: usize>(
        &mut self,
        probe: impl Fn(&Self) -> burn::tensor::Tensor<B, D>,
        max_abs_diff: Option<f64>,
    ) -> Result<crate::MergeCheck, LoraError>
    where
        Self: Sized + Clone,
    {
        crate::merge_check::merge_and_unload_checked(self, probe, max_abs_diff)
    }

    /// Removes every adapter of every layer without merging (merged ones are unmerged first),
    /// giving back the base model; returns how many layers had adapters.
    ///
    /// # Errors
    /// A layer whose merged adapters cannot be unmerged.
    fn unload(&mut self) -> Result<usize, LoraError> {
        unload_each(self, LoraLinear::unload)
    }

    /// Adds adapter `name` to every layer as a weighted combination of `adapters`
    /// ([`LoraLinear::add_weighted_adapter`]); a layer that has only some of them combines
    /// those with their weights, as PEFT skips the missing ones. Returns how many layers got
    /// the new adapter. An `…Svd` method without a rank takes the largest rank of the sources
    /// over the whole model, as PEFT takes it from their configurations.
    ///
    /// # Errors
    /// [`LoraError::UnknownAdapter`] for a source no layer has; [`LoraError::InvalidWeightedAdapter`]
    /// for mismatched lengths; a layer that refuses the combination.
    fn add_weighted_adapter<S: AsRef<str>>(
        &mut self,
        adapters: &[S],
        weights: &[f64],
        name: &str,
        combination: WeightedCombination,
    ) -> Result<usize, LoraError> {
        if adapters.len() != weights.len() {
            return Err(LoraError::InvalidWeightedAdapter {
                reason: format!("{} adapters but {} weights", adapters.len(), weights.len()),
            });
        }
        require_in_model(self, adapters)?;
        // PEFT's default SVD rank is model-wide: the largest rank any source has anywhere.
        let combination = if combination.needs_default_rank() {
            let mut largest = 0;
            self.visit_lora("", &mut |_, layer| {
                for adapter in &layer.adapters {
                    if adapters.iter().any(|a| a.as_ref() == adapter.name) {
                        largest = largest.max(adapter.rank());
                    }
                }
            });
            combination.with_default_rank(largest)
        } else {
            combination
        };
        let mut count = 0;
        self.try_visit_lora_mut(|path, layer| {
            let (present, present_weights): (Vec<&str>, Vec<f64>) = adapters
                .iter()
                .zip(weights)
                .filter(|(a, _)| layer.adapter(a.as_ref()).is_some())
                .map(|(a, w)| (a.as_ref(), *w))
                .unzip();
            if present.is_empty() {
                return Ok(());
            }
            in_layer(
                path,
                layer.add_weighted_adapter(&present, &present_weights, name, combination),
            )?;
            count += 1;
            Ok(())
        })?;
        Ok(count)
    }
}

impl<B: Backend, M: LoraModule<B> + ?Sized> LoraModelOps<B> for M {}

/// A layer operation's error as [`LoraError::InLayer`], naming the layer at `path`.
///
/// ```
/// use lora_core::{in_layer, LoraError};
///
/// let err = in_layer::<()>("encoder.q", Err(LoraError::InvalidRank { r: 0 })).unwrap_err();
/// assert_eq!(err.to_string(), "encoder.q: invalid LoRA config: `r` must be at least 1, got 0");
/// ```
///
/// # Errors
/// `result`'s error, wrapped in [`LoraError::InLayer`].
pub fn in_layer<T>(path: &str, result: Result<T, LoraError>) -> Result<T, LoraError> {
    result.map_err(|source| LoraError::InLayer {
        path: path.to_string(),
        source: Box::new(source),
    })
}

/// Fails with [`LoraError::UnknownAdapter`] for the first of `names` that no layer has.
fn require_in_model<B: Backend, M: LoraModule<B> + ?Sized, S: AsRef<str>>(
    model: &M,
    names: &[S],
) -> Result<(), LoraError> {
    let available = model.adapter_names();
    match names
        .iter()
        .find(|n| !available.iter().any(|a| a == n.as_ref()))
    {
        Some(missing) => Err(LoraError::UnknownAdapter {
            name: missing.as_ref().to_string(),
            available,
        }),
        None => Ok(()),
    }
}

/// Replaces every layer that has adapters by a plain LoRA layer over `take`'s base.
fn unload_each<B: Backend, M: LoraModule<B> + ?Sized>(
    model: &mut M,
    take: fn(LoraLinear<B>) -> Result<burn::nn::Linear<B>, LoraError>,
) -> Result<usize, LoraError> {
    let mut count = 0;
    model.try_visit_lora_mut(|path, layer| {
        if layer.adapters.is_empty() && layer.copies.is_empty() {
            return Ok(());
        }
        *layer = layer.rewrapped(in_layer(path, take(layer.clone()))?);
        count += 1;
        Ok(())
    })?;
    Ok(count)
}
