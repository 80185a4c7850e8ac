//! Loading Hugging Face checkpoints: `config.json` plus `model.safetensors` or a sharded
//! `model.safetensors.index.json`, in F32, F16 or BF16.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{Embedding, Linear};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use lora_core::LoraLinear;
use lora_hf::HostTensor;

use crate::attention::T5Attention;
use crate::block::{T5AttentionLayer, T5FeedForwardLayer};
use crate::{T5Config, T5Error, T5ForConditionalGeneration, T5LayerNorm, T5Stack};

/// The tensors of a checkpoint, by key, each remembering its file.
struct Checkpoint {
    tensors: BTreeMap<String, (PathBuf, HostTensor)>,
    source: PathBuf,
}

impl Checkpoint {
    fn read(dir: &Path) -> Result<Self, T5Error> {
        let weights = lora_hf::read_model_weights(dir)?;
        Ok(Self {
            tensors: weights.tensors,
            source: weights.source,
        })
    }

    /// The tensor `key` (the first of `keys` present), checked against `shape`.
    fn take(&mut self, keys: &[&str], shape: &[usize]) -> Result<HostTensor, T5Error> {
        let Some(key) = keys.iter().find(|k| self.tensors.contains_key(**k)) else {
            return Err(T5Error::MissingTensor {
                path: self.source.clone(),
                key: keys[0].to_string(),
            });
        };
        let (file, tensor) = self.tensors.get(*key).cloned().expect("key was found");
        if tensor.shape != shape {
            return Err(T5Error::ShapeMismatch {
                path: file,
                key: key.to_string(),
                expected: shape.to_vec(),
                found: tensor.shape,
            });
        }
        Ok(tensor)
    }
}

impl<B: Backend> T5ForConditionalGeneration<B> {
    /// Loads a Hugging Face T5 / FLAN-T5 directory (`config.json` and `model.safetensors`, or
    /// `model.safetensors.index.json` with its shards). Half-precision weights are converted
    /// to the backend's float type. The head is `lm_head.weight` when the file has it, else
    /// the shared embedding, as transformers resolves it; the embedding falls back to
    /// `encoder.embed_tokens.weight` and `decoder.embed_tokens.weight`. Every parameter is
    /// frozen: add LoRA adapters to train.
    pub fn from_pretrained(dir: &Path, device: &B::Device) -> Result<Self, T5Error> {
        let config = T5Config::read(&dir.join("config.json"))?;
        let mut checkpoint = Checkpoint::read(dir)?;
        let loader = Loader {
            config: &config,
            device,
        };
        let shared = loader.embedding(
            &mut checkpoint,
            &[
                "shared.weight",
                "encoder.embed_tokens.weight",
                "decoder.embed_tokens.weight",
            ],
            [config.vocab_size, config.d_model],
        )?;
        let encoder = loader.stack(&mut checkpoint, "encoder", config.num_layers, false)?;
        let decoder = loader.stack(&mut checkpoint, "decoder", config.num_decoder_layers, true)?;
        let lm_head = if checkpoint.tensors.contains_key("lm_head.weight") {
            Some(loader.linear(
                &mut checkpoint,
                "lm_head",
                config.d_model,
                config.vocab_size,
            )?)
        } else {
            None
        };
        let mut model = Self {
            shared,
            encoder,
            decoder,
            lm_head,
            config: config.clone(),
        };
        // transformers 5 uses `lm_head.weight` whenever the file has it, whatever the config's
        // `tie_word_embeddings` says; without it the head is the shared embedding.
        model.config.tie_word_embeddings = Some(model.lm_head.is_none());
        Ok(model.frozen())
    }

    /// Freezes the embedding and layer norms (the LoRA layers keep their own settings).
    fn frozen(self) -> Self {
        lora_core::mark_only_lora_as_trainable(self, lora_core::LoraBias::None)
    }

    /// The Hugging Face module paths of the LoRA-capable layers.
    pub fn linear_paths(&self) -> Vec<String> {
        lora_core::lora_layer_paths(self, "")
    }
}

struct Loader<'a, B: Backend> {
    config: &'a T5Config,
    device: &'a B::Device,
}

impl<B: Backend> Loader<'_, B> {
    fn tensor<const D: usize>(&self, host: HostTensor) -> Tensor<B, D> {
        Tensor::from_data(TensorData::new(host.values, host.shape), self.device)
    }

    fn linear(
        &self,
        checkpoint: &mut Checkpoint,
        path: &str,
        d_in: usize,
        d_out: usize,
    ) -> Result<LoraLinear<B>, T5Error> {
        let weight = checkpoint.take(&[&format!("{path}.weight")], &[d_out, d_in])?;
        // PyTorch stores [out, in]; Burn's Linear computes x · W with W [in, out].
        let weight = self.tensor::<2>(weight).transpose();
        Ok(LoraLinear::new(Linear {
            weight: Param::from_tensor(weight),
            bias: None,
        }))
    }

    fn embedding(
        &self,
        checkpoint: &mut Checkpoint,
        keys: &[&str],
        shape: [usize; 2],
    ) -> Result<Embedding<B>, T5Error> {
        let weight = checkpoint.take(keys, &shape)?;
        Ok(Embedding {
            weight: Param::from_tensor(self.tensor(weight)),
        })
    }

    fn norm(&self, checkpoint: &mut Checkpoint, path: &str) -> Result<T5LayerNorm<B>, T5Error> {
        let weight = checkpoint.take(&[&format!("{path}.weight")], &[self.config.d_model])?;
        Ok(T5LayerNorm {
            weight: Param::from_tensor(self.tensor(weight)),
            epsilon: self.config.layer_norm_epsilon,
        })
    }

    fn attention(
        &self,
        checkpoint: &mut Checkpoint,
        path: &str,
        first: bool,
        bidirectional: bool,
    ) -> Result<T5Attention<B>, T5Error> {
        let c = self.config;
        let inner = c.inner_dim();
        let mut attention = T5Attention::new(c, false, bidirectional, self.device);
        attention.q = self.linear(checkpoint, &format!("{path}.q"), c.d_model, inner)?;
        attention.k = self.linear(checkpoint, &format!("{path}.k"), c.d_model, inner)?;
        attention.v = self.linear(checkpoint, &format!("{path}.v"), c.d_model, inner)?;
        attention.o = self.linear(checkpoint, &format!("{path}.o"), inner, c.d_model)?;
        if first {
            attention.relative_attention_bias = Some(self.embedding(
                checkpoint,
                &[&format!("{path}.relative_attention_bias.weight")],
                [c.relative_attention_num_buckets, c.num_heads],
            )?);
        }
        Ok(attention)
    }

    fn stack(
        &self,
        checkpoint: &mut Checkpoint,
        name: &str,
        layers: usize,
        is_decoder: bool,
    ) -> Result<T5Stack<B>, T5Error> {
        let c = self.config;
        let mut stack = T5Stack::new(c, is_decoder, 0, self.device);
        for i in 0..layers {
            let prefix = format!("{name}.block.{i}.layer");
            let mut block = crate::T5Block::new(c, is_decoder, false, self.device);
            block.self_attention = T5AttentionLayer {
                attention: self.attention(
                    checkpoint,
                    &format!("{prefix}.0.SelfAttention"),
                    i == 0,
                    !is_decoder,
                )?,
                layer_norm: self.norm(checkpoint, &format!("{prefix}.0.layer_norm"))?,
                dropout: block.self_attention.dropout.clone(),
            };
            if let Some(cross) = block.cross_attention.take() {
                block.cross_attention = Some(T5AttentionLayer {
                    attention: self.attention(
                        checkpoint,
                        &format!("{prefix}.1.EncDecAttention"),
                        false,
                        true,
                    )?,
                    layer_norm: self.norm(checkpoint, &format!("{prefix}.1.layer_norm"))?,
                    dropout: cross.dropout,
                });
            }
            let ff = if is_decoder { 2 } else { 1 };
            let dense_path = format!("{prefix}.{ff}.DenseReluDense");
            let mut dense = block.feed_forward.dense.clone();
            if c.feed_forward.is_gated() {
                dense.wi_0 = Some(self.linear(
                    checkpoint,
                    &format!("{dense_path}.wi_0"),
                    c.d_model,
                    c.d_ff,
                )?);
                dense.wi_1 = Some(self.linear(
                    checkpoint,
                    &format!("{dense_path}.wi_1"),
                    c.d_model,
                    c.d_ff,
                )?);
            } else {
                dense.wi = Some(self.linear(
                    checkpoint,
                    &format!("{dense_path}.wi"),
                    c.d_model,
                    c.d_ff,
                )?);
            }
            dense.wo = self.linear(checkpoint, &format!("{dense_path}.wo"), c.d_ff, c.d_model)?;
            block.feed_forward = T5FeedForwardLayer {
                dense,
                layer_norm: self.norm(checkpoint, &format!("{prefix}.{ff}.layer_norm"))?,
                dropout: block.feed_forward.dropout.clone(),
            };
            stack.block.push(block);
        }
        stack.final_layer_norm = self.norm(checkpoint, &format!("{name}.final_layer_norm"))?;
        Ok(stack)
    }
}
