//! Routing every later forward pass of a layer per sample (PEFT's `adapter_names` argument of
//! `forward` and `generate`), so that a whole model serves several adapters in one batch
//! without its modules passing names around.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::{LoraError, LoraLinear, BASE_ONLY};

impl<B: Backend> LoraLinear<B> {
    /// Makes every later [`forward`](Self::forward) a [`forward_mixed`](Self::forward_mixed)
    /// with one name per sample: for a batch of `k × names.len()` rows, row `i` uses
    /// `names[i / k]`, so that the rows a search expands each prompt into (beams, returned
    /// sequences, next to each other) keep their prompt's adapter. A name the layer does not
    /// have means the base alone here (the model's other layers may have it); `None` ends the
    /// routing.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::LinearConfig;
    /// use burn::tensor::Tensor;
    /// use lora_core::{LoraConfig, LoraInit, LoraLinear, BASE_ONLY};
    ///
    /// let device = Default::default();
    /// let base = LinearConfig::new(4, 3).init::<NdArray>(&device);
    /// let config = LoraConfig::new(2, 2.0).with_init_lora_weights(LoraInit::Random);
    /// let mut layer = LoraLinear::from_linear(base, &config).unwrap();
    /// let x = Tensor::<NdArray, 2>::ones([4, 4], &device);
    /// let expected = layer.forward_mixed(x.clone(), &["default", "default", BASE_ONLY, BASE_ONLY]).unwrap();
    /// layer.set_sample_adapters(Some(&["default", BASE_ONLY])).unwrap();
    /// assert_eq!(layer.forward(x).into_data(), expected.into_data());
    /// ```
    ///
    /// # Errors
    /// [`LoraError::MergedLayer`] while adapters are merged (nothing changes).
    pub fn set_sample_adapters<S: AsRef<str>>(
        &mut self,
        names: Option<&[S]>,
    ) -> Result<(), LoraError> {
        let Some(names) = names else {
            self.state.sample_adapters = None;
            return Ok(());
        };
        if !self.copies.is_empty() {
            return Err(LoraError::ModuleCopyUnsupported {
                operation: "routing samples to adapters",
            });
        }
        if self.is_merged() {
            return Err(LoraError::MergedLayer {
                operation: "routing samples to adapters",
                merged: self.state.merged.clone(),
            });
        }
        let names = names
            .iter()
            .map(|n| match self.adapter(n.as_ref()) {
                Some(_) => n.as_ref().to_string(),
                None => BASE_ONLY.to_string(),
            })
            .collect();
        self.state.sample_adapters = Some(names);
        Ok(())
    }

    /// The per-sample routing [`set_sample_adapters`](Self::set_sample_adapters) set, if any.
    pub fn sample_adapters(&self) -> Option<&[String]> {
        self.state.sample_adapters.as_deref()
    }

    /// The forward pass under a per-sample routing.
    ///
    /// # Panics
    /// When the batch is not a multiple of the routing's names, or when an adapter of the
    /// routing was deleted or merged after it was set.
    pub(crate) fn forward_routed<const D: usize>(
        &self,
        x: Tensor<B, D>,
        names: &[String],
    ) -> Tensor<B, D> {
        let rows = routed_rows(x.dims()[0], names);
        self.forward_mixed(x, &rows)
            .unwrap_or_else(|e| panic!("routed forward: {e} (clear the routing first)"))
    }
}

/// The adapter name of each of `batch` rows under a routing of `names` (each name covers
/// `batch / names.len()` consecutive rows: a sample's beams or returned sequences).
///
/// # Panics
/// When the batch is not a multiple of the routing's names.
pub(crate) fn routed_rows(batch: usize, names: &[String]) -> Vec<&str> {
    assert!(
        !names.is_empty() && batch.is_multiple_of(names.len()),
        "a batch of {batch} rows cannot be routed to {} sample adapters",
        names.len()
    );
    let per_name = batch / names.len();
    names
        .iter()
        .flat_map(|n| std::iter::repeat_n(n.as_str(), per_name))
        .collect()
}
