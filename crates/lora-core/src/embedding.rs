//! LoRA on an embedding table (PEFT's `lora.Embedding`), as a [`LoraLinear`] whose input is a
//! one-hot token: the table `[num_embeddings, dim]` is the weight of a `num_embeddings → dim`
//! linear layer in Burn's layout, so adapters, merging, weighted combinations and saving are
//! the linear layer's, and only the forward pass looks rows up instead of multiplying.

use burn::nn::{Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::module::embedding;
use burn::tensor::{Distribution, Int, Tensor, TensorData};

use crate::linear::LayerKind;
use crate::sample_routing::routed_rows;
use crate::{LoraAdapter, LoraConfig, LoraError, LoraInit, LoraLinear, BASE_ONLY};

impl<B: Backend> LoraLinear<B> {
    /// Wraps an embedding table as a LoRA layer without adapters, freezing it. Its adapters are
    /// PEFT's `lora_embedding_A` `[r, num_embeddings]` (Burn's `lora_a`, transposed) and
    /// `lora_embedding_B` `[dim, r]`; [`forward_embedding`](Self::forward_embedding) looks
    /// tokens up in `table + s · A · B` without forming it.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::nn::EmbeddingConfig;
    /// use burn::tensor::{Int, Tensor};
    /// use lora_core::{LoraConfig, LoraLinear};
    ///
    /// let device = Default::default();
    /// let table = EmbeddingConfig::new(10, 4).init::<NdArray>(&device);
    /// let mut layer = LoraLinear::from_embedding(table);
    /// layer.add_adapter("default", &LoraConfig::new(2, 4.0)).unwrap();
    /// assert!(layer.is_embedding());
    /// let ids = Tensor::<NdArray, 2, Int>::from_ints([[1, 9, 3]], &device);
    /// assert_eq!(layer.forward_embedding(ids).dims(), [1, 3, 4]);
    /// ```
    pub fn from_embedding(table: Embedding<B>) -> Self {
        let mut layer = Self::new(Linear {
            weight: table.weight,
            bias: None,
        });
        layer.kind = LayerKind::Embedding;
        layer
    }

    /// Whether this layer is an embedding table ([`from_embedding`](Self::from_embedding)).
    pub fn is_embedding(&self) -> bool {
        self.kind == LayerKind::Embedding
    }

    /// Looks `ids` up in the table and adds every active adapter's rows,
    /// `s · A[id] · B`, as PEFT's `lora.Embedding` does: without dropout (PEFT applies none to
    /// embeddings), the base alone when adapters are disabled or merged, and per sample under
    /// [`set_sample_adapters`](Self::set_sample_adapters).
    ///
    /// # Shapes
    /// - `ids`: `[batch, length]`
    /// - output: `[batch, length, dim]`
    ///
    /// # Panics
    /// For ids outside the table, as Burn's `Embedding` does, and under a routing that does
    /// not divide the batch.
    pub fn forward_embedding(&self, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        if let Some(copy) = self.active_copy() {
            return embedding(copy.weight.val(), ids);
        }
        let base = embedding(self.base.weight.val().dequantize(), ids.clone());
        if let Some(names) = &self.state.sample_adapters {
            return self.routed_embedding(base, ids, names);
        }
        if self.runs_base_only() {
            return base;
        }
        self.active_adapter_iter().fold(base, |out, adapter| {
            out + adapter_rows(adapter, ids.clone())
        })
    }

    /// [`forward_embedding`](Self::forward_embedding) with each sample's adapter: every
    /// distinct adapter's rows, kept only for its samples.
    fn routed_embedding(
        &self,
        base: Tensor<B, 3>,
        ids: Tensor<B, 2, Int>,
        names: &[String],
    ) -> Tensor<B, 3> {
        let [batch, _] = ids.dims();
        let rows = routed_rows(batch, names);
        let device = ids.device();
        let mut out = base;
        let mut seen: Vec<&str> = Vec::new();
        for &name in &rows {
            if name == BASE_ONLY || seen.contains(&name) {
                continue;
            }
            seen.push(name);
            let adapter = self
                .adapter(name)
                .unwrap_or_else(|| panic!("routed forward: no adapter `{name}` in this layer"));
            let keep: Vec<f32> = rows.iter().map(|n| f32::from(*n == name)).collect();
            let keep = Tensor::<B, 1>::from_data(TensorData::new(keep, [batch]), &device)
                .reshape([batch, 1, 1]);
            out = out + adapter_rows(adapter, ids.clone()) * keep;
        }
        out
    }

    /// A fresh adapter for this embedding table, initialised as PEFT initialises
    /// `lora_embedding_A` / `_B`: A zeros and B standard normal (so the update starts at zero),
    /// or both standard normal for `init_lora_weights: false`.
    pub(crate) fn new_embedding_adapter(
        &self,
        name: &str,
        config: &LoraConfig,
    ) -> Result<LoraAdapter<B>, LoraError> {
        config.validate()?;
        let device = self.base.weight.device();
        let (rows, dim, r) = (self.d_input(), self.d_output(), config.r);
        let normal = Distribution::Normal(0.0, 1.0);
        let lora_a = match config.init_lora_weights {
            LoraInit::Random => Tensor::random([rows, r], normal, &device),
            LoraInit::Default | LoraInit::Gaussian => Tensor::zeros([rows, r], &device),
        };
        let lora_b = Tensor::random([r, dim], normal, &device);
        LoraAdapter::from_weights(name, config, lora_a, lora_b, None)
    }

    /// Refuses what an embedding table cannot hold: DoRA adapters (an adapter's bias setting
    /// finds no bias here and changes nothing, as in PEFT).
    pub(crate) fn check_embedding_adapter(
        &self,
        adapter: &LoraAdapter<B>,
    ) -> Result<(), LoraError> {
        if self.is_embedding() && adapter.is_dora() {
            return Err(LoraError::UnsupportedVariant {
                operation: "LoRA on an embedding table",
                variant: "DoRA",
                name: adapter.name.clone(),
            });
        }
        Ok(())
    }
}

/// `s · A[ids] · B`: the adapter's rows for `ids`, `[batch, length, dim]`.
fn adapter_rows<B: Backend>(adapter: &LoraAdapter<B>, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
    let rows = embedding(adapter.lora_a.val(), ids);
    let [batch, length, r] = rows.dims();
    let up = adapter.lora_b.val();
    let dim = up.dims()[1];
    rows.reshape([batch * length, r])
        .matmul(up)
        .mul_scalar(adapter.scaling())
        .reshape([batch, length, dim])
}
