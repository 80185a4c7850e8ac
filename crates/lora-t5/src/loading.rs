//! Loading Hugging Face checkpoints: `config.json` plus `model.safetensors` or a sharded
//! `model.safetensors.index.json`, in F32, F16 or BF16.

use std::path::Path;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use lora_core::LoraLinear;
use lora_hf::{HostTensor, ModelWeights};

use crate::hf_layout::{HfTensorMut, SHARED_EMBEDDING_KEYS};
use crate::{T5Config, T5Error, T5ForConditionalGeneration};

/// The tensor under `key` (the first of `keys` present), checked against `shape`.
fn take<'w>(
    weights: &'w ModelWeights,
    keys: &[&str],
    shape: &[usize],
) -> Result<&'w HostTensor, T5Error> {
    let Some((key, (file, tensor))) = keys
        .iter()
        .find_map(|k| weights.tensors.get(*k).map(|entry| (*k, entry)))
    else {
        return Err(T5Error::MissingTensor {
            path: weights.source.clone(),
            key: keys[0].to_string(),
        });
    };
    if tensor.shape != shape {
        return Err(T5Error::ShapeMismatch {
            path: file.clone(),
            key: key.to_string(),
            expected: shape.to_vec(),
            found: tensor.shape.clone(),
        });
    }
    Ok(tensor)
}

/// Replaces the tensor the layout walk met under `key` by the checkpoint's, shape-checked
/// against the model built from the config (without initialising it).
fn load_tensor<B: Backend>(
    weights: &ModelWeights,
    key: &str,
    tensor: HfTensorMut<'_, B>,
    device: &B::Device,
) -> Result<(), T5Error> {
    let to_device = |host: HostTensor| TensorData::new(host.values, host.shape);
    match tensor {
        HfTensorMut::Linear(layer) => {
            let [d_in, d_out] = layer.base.weight.lazy_shape().dims::<2>();
            let weight_key = format!("{key}.weight");
            let weight = take(weights, &[&weight_key], &[d_out, d_in])?;
            // PyTorch stores [out, in]; Burn's Linear computes x · W with W [in, out]. Transposed
            // on the host from the checkpoint's values (one copy), so that the weight is
            // contiguous for every product that reads it.
            let weight = weight.transposed().ok_or_else(|| T5Error::ShapeMismatch {
                path: weights.source.clone(),
                key: weight_key,
                expected: vec![d_out, d_in],
                found: weight.shape.clone(),
            })?;
            let weight = Tensor::<B, 2>::from_data(to_device(weight), device);
            *layer = LoraLinear::new(Linear {
                weight: Param::from_tensor(weight),
                bias: None,
            });
        }
        // Not a checkpoint tensor: a fresh model has no wrapped lookups.
        HfTensorMut::TiedEmbedding(_) => {}
        HfTensorMut::Vector(param) => {
            let host = take(weights, &[key], &param.lazy_shape().to_vec())?.clone();
            *param = Param::from_tensor(Tensor::from_data(to_device(host), device));
        }
        HfTensorMut::Matrix(param) => {
            let keys: &[&str] = if key == SHARED_EMBEDDING_KEYS[0] {
                &SHARED_EMBEDDING_KEYS
            } else {
                &[key]
            };
            let host = take(weights, keys, &param.lazy_shape().to_vec())?.clone();
            *param = Param::from_tensor(Tensor::from_data(to_device(host), device));
        }
    }
    Ok(())
}

impl<B: Backend> T5ForConditionalGeneration<B> {
    /// Loads a Hugging Face T5 / FLAN-T5 directory (`config.json` and `model.safetensors`, or
    /// `model.safetensors.index.json` with its shards). Half-precision weights are converted
    /// to the backend's float type. The head is `lm_head.weight` when the file has it, else
    /// the shared embedding, as transformers resolves it; the embedding falls back to
    /// `encoder.embed_tokens.weight` and `decoder.embed_tokens.weight`. Every parameter is
    /// frozen: add LoRA adapters to train.
    ///
    /// # Errors
    /// An unreadable or invalid `config.json` ([`HfFileError::InvalidValue`](crate::HfFileError::InvalidValue) names the key), no
    /// weights file ([`HfFileError::NoWeights`](crate::HfFileError::NoWeights)), an invalid safetensors file or shard index, and a
    /// tensor that is missing, of the wrong shape, of an unsupported dtype or not finite, naming
    /// the file and key.
    pub fn from_pretrained(dir: &Path, device: &B::Device) -> Result<Self, T5Error> {
        let mut config = T5Config::read(&dir.join("config.json"))?;
        let weights = lora_hf::read_model_weights(dir)?;
        // transformers 5 uses `lm_head.weight` whenever the file has it, whatever the config's
        // `tie_word_embeddings` says; without it the head is the shared embedding.
        config.tie_word_embeddings = Some(!weights.tensors.contains_key("lm_head.weight"));
        // The model the config describes, its weights not yet initialised, filled tensor by
        // tensor along the key layout.
        let mut model = Self::new(&config, device);
        let mut failure = None;
        model.visit_hf_mut("", &mut |key, tensor| {
            if failure.is_none() {
                failure = load_tensor(&weights, key, tensor, device).err();
            }
        });
        match failure {
            Some(error) => Err(error),
            None => Ok(model.frozen()),
        }
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
