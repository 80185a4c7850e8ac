//! T5 multi-head attention: unscaled dot products plus a relative position bias.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use lora_core::LoraLinear;
use lora_core::{softmax_last_dim_with_bias, swap_middle_dims, Dropout};

use crate::position_bias::bucket_grid;
use crate::T5Config;

/// Keys and values of one attention layer, `[batch, heads, length, d_kv]` each.
#[derive(Debug, Clone)]
pub struct KeyValue<B: Backend> {
    /// Keys.
    pub key: Tensor<B, 4>,
    /// Values.
    pub value: Tensor<B, 4>,
}

impl<B: Backend> KeyValue<B> {
    /// Keeps the batch entries at `indices` (beam search reorders its beams this way).
    pub fn select(&self, indices: Tensor<B, 1, Int>) -> Self {
        Self {
            key: self.key.clone().select(0, indices.clone()),
            value: self.value.clone().select(0, indices),
        }
    }
}

/// One T5 attention layer (`SelfAttention` or `EncDecAttention`): `q`, `k`, `v`, `o` are
/// [`LoraLinear`] layers; the first layer of each stack also owns the relative position bias
/// shared by all its layers.
#[derive(Module, Debug)]
pub struct T5Attention<B: Backend> {
    /// Query projection, `d_model → heads · d_kv`.
    pub q: LoraLinear<B>,
    /// Key projection.
    pub k: LoraLinear<B>,
    /// Value projection.
    pub v: LoraLinear<B>,
    /// Output projection, `heads · d_kv → d_model`.
    pub o: LoraLinear<B>,
    /// `relative_attention_bias`, `[buckets, heads]` (first layer of a stack only).
    pub relative_attention_bias: Option<Embedding<B>>,
    /// Dropout on the attention weights.
    pub dropout: Dropout,
    /// Number of heads.
    pub num_heads: usize,
    /// Size of each head.
    pub d_kv: usize,
    /// Whether position buckets are bidirectional (encoder) or causal (decoder).
    pub bidirectional: bool,
    /// Relative position buckets.
    pub num_buckets: usize,
    /// Largest distance with its own bucket range.
    pub max_distance: usize,
}

impl<B: Backend> T5Attention<B> {
    /// A randomly initialised layer (weights are normally loaded from a checkpoint).
    pub fn new(config: &T5Config, has_bias: bool, bidirectional: bool, device: &B::Device) -> Self {
        let inner = config.inner_dim();
        let linear = |i, o| LoraLinear::new(LinearConfig::new(i, o).with_bias(false).init(device));
        Self {
            q: linear(config.d_model, inner),
            k: linear(config.d_model, inner),
            v: linear(config.d_model, inner),
            o: linear(inner, config.d_model),
            relative_attention_bias: has_bias.then(|| {
                EmbeddingConfig::new(config.relative_attention_num_buckets, config.num_heads)
                    .init(device)
            }),
            dropout: Dropout::new(config.dropout_rate),
            num_heads: config.num_heads,
            d_kv: config.d_kv,
            bidirectional,
            num_buckets: config.relative_attention_num_buckets,
            max_distance: config.relative_attention_max_distance,
        }
    }

    /// The position bias `[1, heads, query_len, key_len]` for queries at positions
    /// `query_offset..query_offset + query_len`. Zeros for a layer without a bias table.
    pub fn position_bias(
        &self,
        query_len: usize,
        key_len: usize,
        query_offset: usize,
        device: &B::Device,
    ) -> Tensor<B, 4> {
        let Some(table) = &self.relative_attention_bias else {
            return Tensor::zeros([1, self.num_heads, query_len, key_len], device);
        };
        let buckets = bucket_grid(
            query_len,
            key_len,
            query_offset,
            self.bidirectional,
            self.num_buckets,
            self.max_distance,
        );
        let buckets =
            Tensor::<B, 2, Int>::from_data(TensorData::new(buckets, [query_len, key_len]), device);
        // [query, key, heads] → [1, heads, query, key]
        table.forward(buckets).permute([2, 0, 1]).unsqueeze_dim(0)
    }

    /// Splits `[batch, length, heads · d_kv]` into `[batch, heads, length, d_kv]`.
    fn split_heads(&self, x: Tensor<B, 3>) -> Tensor<B, 4> {
        let [batch, length, _] = x.dims();
        swap_middle_dims(x.reshape([batch, length, self.num_heads, self.d_kv]))
    }

    /// Keys and values of `source` (`[batch, length, d_model]`).
    pub fn key_value(&self, source: Tensor<B, 3>) -> KeyValue<B> {
        KeyValue {
            key: self.split_heads(self.k.forward(source.clone())),
            value: self.split_heads(self.v.forward(source)),
        }
    }

    /// Attends from `hidden` (`[batch, query, d_model]`) over `key_value`, adding `bias`
    /// (position bias plus mask, broadcastable to `[batch, heads, query, key]`).
    pub fn attend(
        &self,
        hidden: Tensor<B, 3>,
        key_value: &KeyValue<B>,
        bias: Tensor<B, 4>,
    ) -> Tensor<B, 3> {
        let [batch, query, _] = hidden.dims();
        let q = self.split_heads(self.q.forward(hidden));
        // T5 does not scale the scores by 1/sqrt(d_kv).
        let scores = q.matmul(key_value.key.clone().swap_dims(2, 3));
        let weights = self
            .dropout
            .forward(softmax_last_dim_with_bias(scores, bias));
        let context = swap_middle_dims(weights.matmul(key_value.value.clone())).reshape([
            batch,
            query,
            self.num_heads * self.d_kv,
        ]);
        self.o.forward(context)
    }
}
