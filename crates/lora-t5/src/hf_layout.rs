//! T5's Hugging Face key layout, written once. Each module names its own tensors under its
//! parent's prefix (candle's `vb.pp("q")` idea), and one walk drives loading
//! (`from_pretrained`), saving (`save_pretrained`) and the LoRA module paths (`LoraModule`),
//! so the three cannot disagree.
//!
//! ```text
//! shared.weight                                              [vocab, d_model]
//! {encoder,decoder}.block.{i}.layer.0.SelfAttention.{q,k,v,o}.weight
//! {encoder,decoder}.block.0.layer.0.SelfAttention.relative_attention_bias.weight
//! {encoder,decoder}.block.{i}.layer.0.layer_norm.weight
//! decoder.block.{i}.layer.1.EncDecAttention.{q,k,v,o}.weight
//! decoder.block.{i}.layer.1.layer_norm.weight
//! {encoder,decoder}.block.{i}.layer.{1|2}.DenseReluDense.{wi|wi_0,wi_1,wo}.weight
//! {encoder,decoder}.block.{i}.layer.{1|2}.layer_norm.weight
//! {encoder,decoder}.final_layer_norm.weight
//! lm_head.weight                                             (untied heads only)
//! ```
//!
//! LoRA on `{encoder,decoder}.embed_tokens` (transformers' names for the stacks' lookups of
//! `shared`) is visited as a LoRA layer but is not a checkpoint tensor: transformers ties both
//! to `shared`.

use burn::module::Param;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use lora_core::{join_module_path, LoraLinear, LoraModule};

use crate::{T5Attention, T5Block, T5FeedForward, T5ForConditionalGeneration, T5Stack};

/// Keys older checkpoints store the shared embedding under, tried in order after
/// `shared.weight` (transformers resolves them the same way).
pub(crate) const SHARED_EMBEDDING_KEYS: [&str; 3] = [
    "shared.weight",
    "encoder.embed_tokens.weight",
    "decoder.embed_tokens.weight",
];

/// One checkpoint tensor as the walk meets it, read-only.
pub(crate) enum HfTensor<'a, B: Backend> {
    /// A linear layer at a module path; its weight is `{path}.weight`, `[out, in]` in the file.
    Linear(&'a LoraLinear<B>),
    /// A vector stored as is under its key (layer-norm weights).
    Vector(&'a Param<Tensor<B, 1>>),
    /// A matrix stored as is under its key (embeddings, the relative attention bias).
    Matrix(&'a Param<Tensor<B, 2>>),
    /// A stack's LoRA-wrapped lookup of `shared` (`encoder.embed_tokens`), not stored.
    TiedEmbedding(&'a LoraLinear<B>),
}

/// One checkpoint tensor as the walk meets it, to be replaced.
pub(crate) enum HfTensorMut<'a, B: Backend> {
    /// See [`HfTensor::Linear`].
    Linear(&'a mut LoraLinear<B>),
    /// See [`HfTensor::Vector`].
    Vector(&'a mut Param<Tensor<B, 1>>),
    /// See [`HfTensor::Matrix`].
    Matrix(&'a mut Param<Tensor<B, 2>>),
    /// See [`HfTensor::TiedEmbedding`].
    TiedEmbedding(&'a mut LoraLinear<B>),
}

/// The layout, once, for both walks: `$walk` visits with `$Item`, borrowing with `& $($m)?`.
macro_rules! hf_layout {
    ($walk:ident, $Item:ident $(, $m:tt)?) => {
        impl<B: Backend> T5Attention<B> {
            /// Visits this attention's tensors under `prefix` (`…SelfAttention`).
            pub(crate) fn $walk(& $($m)? self, prefix: &str, visit: &mut dyn FnMut(&str, $Item<'_, B>)) {
                let T5Attention { q, k, v, o, relative_attention_bias, .. } = self;
                for (name, layer) in [("q", q), ("k", k), ("v", v), ("o", o)] {
                    visit(&join_module_path(prefix, name), $Item::Linear(layer));
                }
                if let Some(bias) = relative_attention_bias {
                    let key = join_module_path(prefix, "relative_attention_bias.weight");
                    visit(&key, $Item::Matrix(& $($m)? bias.weight));
                }
            }
        }

        impl<B: Backend> T5FeedForward<B> {
            /// Visits this feed-forward block's linear layers under `prefix` (`…DenseReluDense`).
            pub(crate) fn $walk(& $($m)? self, prefix: &str, visit: &mut dyn FnMut(&str, $Item<'_, B>)) {
                let T5FeedForward { wi, wi_0, wi_1, wo, .. } = self;
                for (name, layer) in [("wi", wi), ("wi_0", wi_0), ("wi_1", wi_1)] {
                    if let Some(layer) = layer {
                        visit(&join_module_path(prefix, name), $Item::Linear(layer));
                    }
                }
                visit(&join_module_path(prefix, "wo"), $Item::Linear(wo));
            }
        }

        impl<B: Backend> T5Block<B> {
            /// Visits this block's tensors under `prefix` (`encoder.block.3`): the self-attention
            /// sub-layer is `layer.0`, the decoder's cross-attention `layer.1`, and the
            /// feed-forward sub-layer comes last.
            pub(crate) fn $walk(& $($m)? self, prefix: &str, visit: &mut dyn FnMut(&str, $Item<'_, B>)) {
                let layer = |i: usize, name: &str| join_module_path(prefix, &format!("layer.{i}.{name}"));
                let T5Block { self_attention, cross_attention, feed_forward, .. } = self;
                self_attention.attention.$walk(&layer(0, "SelfAttention"), visit);
                visit(&layer(0, "layer_norm.weight"), $Item::Vector(& $($m)? self_attention.layer_norm.weight));
                let mut next = 1;
                if let Some(cross) = cross_attention {
                    cross.attention.$walk(&layer(1, "EncDecAttention"), visit);
                    visit(&layer(1, "layer_norm.weight"), $Item::Vector(& $($m)? cross.layer_norm.weight));
                    next = 2;
                }
                feed_forward.dense.$walk(&layer(next, "DenseReluDense"), visit);
                visit(&layer(next, "layer_norm.weight"), $Item::Vector(& $($m)? feed_forward.layer_norm.weight));
            }
        }

        impl<B: Backend> T5Stack<B> {
            /// Visits the stack's tensors under `prefix` (`encoder` or `decoder`).
            pub(crate) fn $walk(& $($m)? self, prefix: &str, visit: &mut dyn FnMut(&str, $Item<'_, B>)) {
                let T5Stack { block, final_layer_norm, embed_tokens, .. } = self;
                if let Some(layer) = embed_tokens {
                    visit(&join_module_path(prefix, "embed_tokens"), $Item::TiedEmbedding(layer));
                }
                for (i, block) in block.into_iter().enumerate() {
                    block.$walk(&join_module_path(prefix, &format!("block.{i}")), visit);
                }
                let key = join_module_path(prefix, "final_layer_norm.weight");
                visit(&key, $Item::Vector(& $($m)? final_layer_norm.weight));
            }
        }

        impl<B: Backend> T5ForConditionalGeneration<B> {
            /// Visits every tensor of the checkpoint with its Hugging Face key (a module path for
            /// linear layers), in file order.
            pub(crate) fn $walk(& $($m)? self, prefix: &str, visit: &mut dyn FnMut(&str, $Item<'_, B>)) {
                let T5ForConditionalGeneration { shared, encoder, decoder, lm_head, .. } = self;
                visit(&join_module_path(prefix, SHARED_EMBEDDING_KEYS[0]), $Item::Matrix(& $($m)? shared.weight));
                encoder.$walk(&join_module_path(prefix, "encoder"), visit);
                decoder.$walk(&join_module_path(prefix, "decoder"), visit);
                if let Some(head) = lm_head {
                    visit(&join_module_path(prefix, "lm_head"), $Item::Linear(head));
                }
            }
        }
    };
}

hf_layout!(visit_hf, HfTensor);
hf_layout!(visit_hf_mut, HfTensorMut, mut);

/// [`LoraModule`] from the layout: the linear layers and wrapped lookups, by the paths the
/// layout gives them; `{ … }` after a type adds its own methods (the whole model's wrapping).
macro_rules! lora_module_from_layout {
    ($($ty:ident $({ $($extra:tt)* })?),*) => {$(
        impl<B: Backend> LoraModule<B> for $ty<B> {
            fn visit_lora(&self, prefix: &str, visit: &mut dyn FnMut(&str, &LoraLinear<B>)) {
                self.visit_hf(prefix, &mut |path, tensor| match tensor {
                    HfTensor::Linear(layer) | HfTensor::TiedEmbedding(layer) => visit(path, layer),
                    HfTensor::Vector(_) | HfTensor::Matrix(_) => {}
                });
            }

            fn visit_lora_mut(&mut self, prefix: &str, visit: &mut dyn FnMut(&str, &mut LoraLinear<B>)) {
                self.visit_hf_mut(prefix, &mut |path, tensor| match tensor {
                    HfTensorMut::Linear(layer) | HfTensorMut::TiedEmbedding(layer) => visit(path, layer),
                    HfTensorMut::Vector(_) | HfTensorMut::Matrix(_) => {}
                });
            }

            fn default_target_modules(&self) -> Option<&'static [&'static str]> {
                Some(crate::T5_DEFAULT_TARGET_MODULES)
            }

            $($($extra)*)?
        }
    )*};
}

lora_module_from_layout!(
    T5Attention,
    T5FeedForward,
    T5Block,
    T5Stack,
    T5ForConditionalGeneration {
        fn embedding_layer_paths(&self) -> Vec<String> {
            // transformers' input embedding is `shared`, never wrapped; the output one the head.
            self.lm_head.iter().map(|_| "lm_head".to_string()).collect()
        }

        fn wrappable_lora_paths(&self) -> Vec<String> {
            self.tied_layer_paths()
        }

        fn wrap_lora_layer(&mut self, path: &str) -> bool {
            self.wrap_tied_layer(path)
        }

        fn unwrap_lora_layer(&mut self, path: &str) -> bool {
            self.unwrap_tied_layer(path)
        }
    }
);
