//! LoRA on the layers T5 ties to its shared embedding: the language-model head of a tied model
//! (`lm_head`, whose weight transformers ties to `shared`) and the stacks' token lookups
//! (`encoder.embed_tokens`, `decoder.embed_tokens`, separate modules in transformers whose
//! weight is `shared`'s). PEFT wraps each when an adapter targets it, so this model wraps them
//! on demand too ([`LoraModule::wrap_lora_layer`](lora_core::LoraModule::wrap_lora_layer)):
//! the wrapped layer starts from a frozen copy of `shared`, so it computes what the tied one
//! did, and its adapters (and merges) change that layer alone. `shared` itself is never wrapped:
//! transformers' T5 never calls it in the forward pass, so PEFT's LoRA on `shared` changes no
//! output.

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use lora_core::LoraLinear;

use crate::{T5ForConditionalGeneration, T5Stack};

/// The paths of the layers [`T5ForConditionalGeneration`] wraps on demand.
const HEAD: &str = "lm_head";
const ENCODER_LOOKUP: &str = "encoder.embed_tokens";
const DECODER_LOOKUP: &str = "decoder.embed_tokens";

impl<B: Backend> T5ForConditionalGeneration<B> {
    /// The token embeddings `[batch, length, d_model]` of `ids` for `stack`: its wrapped
    /// lookup with the adapters, or `shared`.
    pub(crate) fn look_up(&self, stack: &T5Stack<B>, ids: Tensor<B, 2, Int>) -> Tensor<B, 3> {
        match &stack.embed_tokens {
            Some(layer) => layer.forward_embedding(ids),
            None => self.shared.forward(ids),
        }
    }

    /// The tied layers not wrapped yet.
    pub(crate) fn tied_layer_paths(&self) -> Vec<String> {
        let mut paths = Vec::new();
        if self.lm_head.is_none() {
            paths.push(HEAD.to_string());
        }
        for (path, stack) in [
            (ENCODER_LOOKUP, &self.encoder),
            (DECODER_LOOKUP, &self.decoder),
        ] {
            if stack.embed_tokens.is_none() {
                paths.push(path.to_string());
            }
        }
        paths
    }

    /// Wraps the tied layer at `path` around a frozen copy of `shared`.
    pub(crate) fn wrap_tied_layer(&mut self, path: &str) -> bool {
        let table = self.shared.weight.val();
        match path {
            HEAD if self.lm_head.is_none() => {
                // Burn's linear layout is `[d_model, vocab]`: the table transposed, copied so
                // the head multiplies a contiguous weight.
                let device = table.device();
                let weight = Tensor::from_data(table.transpose().into_data(), &device);
                self.lm_head = Some(LoraLinear::new(Linear {
                    weight: Param::from_tensor(weight),
                    bias: None,
                }));
                self.head_wrapped_from_tie = true;
                true
            }
            ENCODER_LOOKUP | DECODER_LOOKUP => {
                let stack = if path == ENCODER_LOOKUP {
                    &mut self.encoder
                } else {
                    &mut self.decoder
                };
                if stack.embed_tokens.is_some() {
                    return false;
                }
                stack.embed_tokens = Some(LoraLinear::from_embedding(Embedding {
                    weight: Param::from_tensor(table),
                }));
                true
            }
            _ => false,
        }
    }

    /// Undoes [`wrap_tied_layer`](Self::wrap_tied_layer) for a layer without adapters.
    pub(crate) fn unwrap_tied_layer(&mut self, path: &str) -> bool {
        let unused =
            |layer: &Option<LoraLinear<B>>| layer.as_ref().is_some_and(|l| l.adapters.is_empty());
        match path {
            HEAD if self.head_wrapped_from_tie && unused(&self.lm_head) => {
                self.lm_head = None;
                self.head_wrapped_from_tie = false;
                true
            }
            ENCODER_LOOKUP if unused(&self.encoder.embed_tokens) => {
                self.encoder.embed_tokens = None;
                true
            }
            DECODER_LOOKUP if unused(&self.decoder.embed_tokens) => {
                self.decoder.embed_tokens = None;
                true
            }
            _ => false,
        }
    }

    /// Whether the head is a wrapped tied head whose base weight still equals `shared`, so
    /// that a checkpoint can keep it tied.
    pub(crate) fn head_still_tied(&self) -> bool {
        match &self.lm_head {
            Some(head) if self.head_wrapped_from_tie => {
                let weight = head.base.weight.val().dequantize().transpose();
                same_values(weight, self.shared.weight.val())
            }
            _ => false,
        }
    }
}

/// Whether two tensors of one shape hold the same values.
pub(crate) fn same_values<B: Backend>(a: Tensor<B, 2>, b: Tensor<B, 2>) -> bool {
    let same = a.equal(b).all().into_scalar();
    burn::tensor::ElementConversion::elem::<bool>(same)
}
