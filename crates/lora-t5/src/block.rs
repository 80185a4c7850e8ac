//! One T5 block: self-attention, cross-attention (decoder only) and feed-forward, each with
//! a pre-norm and a residual connection.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use lora_core::Dropout;

use crate::attention::{KeyValue, T5Attention};
use crate::{T5Config, T5FeedForward, T5LayerNorm};

/// A sub-layer: `x + dropout(inner(layer_norm(x)))`.
#[derive(Module, Debug)]
pub struct T5AttentionLayer<B: Backend> {
    /// The attention.
    pub attention: T5Attention<B>,
    /// The pre-norm.
    pub layer_norm: T5LayerNorm<B>,
    /// Dropout before the residual.
    pub dropout: Dropout,
}

/// The feed-forward sub-layer.
#[derive(Module, Debug)]
pub struct T5FeedForwardLayer<B: Backend> {
    /// `DenseReluDense`.
    pub dense: T5FeedForward<B>,
    /// The pre-norm.
    pub layer_norm: T5LayerNorm<B>,
    /// Dropout before the residual.
    pub dropout: Dropout,
}

/// `encoder.block.N` or `decoder.block.N`.
#[derive(Module, Debug)]
pub struct T5Block<B: Backend> {
    /// `layer.0`: self-attention.
    pub self_attention: T5AttentionLayer<B>,
    /// `layer.1` of decoder blocks: attention over the encoder output.
    pub cross_attention: Option<T5AttentionLayer<B>>,
    /// The last layer: feed-forward.
    pub feed_forward: T5FeedForwardLayer<B>,
}

impl<B: Backend> T5Block<B> {
    /// A randomly initialised block; `first` blocks own the relative position bias.
    pub fn new(config: &T5Config, is_decoder: bool, first: bool, device: &B::Device) -> Self {
        let norm = || T5LayerNorm::new(config.d_model, config.layer_norm_epsilon, device);
        let dropout = || Dropout::new(config.dropout_rate);
        Self {
            self_attention: T5AttentionLayer {
                attention: T5Attention::new(config, first, !is_decoder, device),
                layer_norm: norm(),
                dropout: dropout(),
            },
            cross_attention: is_decoder.then(|| T5AttentionLayer {
                attention: T5Attention::new(config, false, true, device),
                layer_norm: norm(),
                dropout: dropout(),
            }),
            feed_forward: T5FeedForwardLayer {
                dense: T5FeedForward::new(config, device),
                layer_norm: norm(),
                dropout: dropout(),
            },
        }
    }

    /// Runs the block. `self_bias` is the position bias plus the self-attention mask; with
    /// `past` (the keys and values of earlier positions) the new ones are appended, and the
    /// full self-attention keys and values are returned for the cache.
    pub fn forward(
        &self,
        hidden: Tensor<B, 3>,
        self_bias: Tensor<B, 4>,
        past: Option<&KeyValue<B>>,
        cross: Option<(&KeyValue<B>, Tensor<B, 4>)>,
    ) -> (Tensor<B, 3>, KeyValue<B>) {
        let layer = &self.self_attention;
        let normed = layer.layer_norm.forward(hidden.clone());
        let mut key_value = layer.attention.key_value(normed.clone());
        if let Some(past) = past {
            key_value = KeyValue {
                key: Tensor::cat(vec![past.key.clone(), key_value.key], 2),
                value: Tensor::cat(vec![past.value.clone(), key_value.value], 2),
            };
        }
        let attended = layer.attention.attend(normed, &key_value, self_bias);
        let mut hidden = hidden + layer.dropout.forward(attended);
        if let (Some(layer), Some((encoder_kv, cross_bias))) = (&self.cross_attention, cross) {
            let normed = layer.layer_norm.forward(hidden.clone());
            let attended = layer.attention.attend(normed, encoder_kv, cross_bias);
            hidden = hidden + layer.dropout.forward(attended);
        }
        let layer = &self.feed_forward;
        let transformed = layer
            .dense
            .forward(layer.layer_norm.forward(hidden.clone()));
        (hidden + layer.dropout.forward(transformed), key_value)
    }
}
