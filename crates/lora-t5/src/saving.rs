//! Writing a model as a Hugging Face checkpoint directory that transformers loads.

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use lora_generate::GENERATION_CONFIG_FILE;
use lora_hf::{commit, serialize_safetensors, stage, HostTensor, WeightDtype};
use serde_json::{json, Value};

use crate::hf_layout::HfTensor;
use crate::tied_layers::same_values;
use crate::{Activation, HfFileError, T5Config, T5Error, T5ForConditionalGeneration};

impl T5Config {
    /// The `config.json` transformers writes for this configuration.
    pub fn to_hf_json(&self) -> Value {
        let k = self.feed_forward;
        let act = match k.activation {
            Activation::Relu => "relu",
            Activation::Gelu => "gelu",
            Activation::GeluTanh => "gelu_new",
            Activation::Silu => "silu",
        };
        let proj = match (k.activation, k.gated) {
            (Activation::GeluTanh, true) => "gated-gelu".to_string(),
            (_, true) => format!("gated-{act}"),
            (_, false) => act.to_string(),
        };
        let tied = self.tie_word_embeddings.unwrap_or(true);
        json!({
            "architectures": ["T5ForConditionalGeneration"],
            "model_type": "t5",
            "is_encoder_decoder": true,
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "d_kv": self.d_kv,
            "d_ff": self.d_ff,
            "num_layers": self.num_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "num_heads": self.num_heads,
            "relative_attention_num_buckets": self.relative_attention_num_buckets,
            "relative_attention_max_distance": self.relative_attention_max_distance,
            "dropout_rate": self.dropout_rate,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "initializer_factor": 1.0,
            "feed_forward_proj": proj,
            "dense_act_fn": act,
            "is_gated_act": k.gated,
            "tie_word_embeddings": tied,
            "scale_decoder_outputs": self.scale_decoder_outputs,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "decoder_start_token_id": self.decoder_start_token_id,
            "use_cache": true,
        })
    }
}

impl<B: Backend> T5ForConditionalGeneration<B> {
    /// Writes `config.json`, `model.safetensors` (F32, PyTorch layout, transformers' key
    /// names) and `generation_config.json` (the special tokens, as transformers writes it for a
    /// model without generation settings) into `dir`. Only base weights are written: merge adapters first
    /// (`LoraLinear::merge_active`) to include them; int8 base weights are written dequantized.
    /// Files are written to temporary names and renamed into place.
    ///
    /// A tied head wrapped for LoRA (see `LoraModule::wrap_lora_layer`) is written tied while
    /// its weight still equals `shared`, and as an untied `lm_head.weight` once a merge changed
    /// it. The stacks' wrapped lookups are not checkpoint tensors (transformers ties them to
    /// `shared`): a lookup whose table a merge changed is refused.
    ///
    /// # Errors
    /// [`HfFileError::Io`] (in [`T5Error::File`]) naming the directory or file that could not be written (the directory keeps
    /// its previous files), and [`T5Error::InvalidInput`] when a weight cannot be read back from
    /// the device or a wrapped lookup holds a merged adapter.
    pub fn save_pretrained(&self, dir: &Path) -> Result<(), T5Error> {
        self.save_pretrained_as(dir, WeightDtype::F32)
    }

    /// [`save_pretrained`](Self::save_pretrained) with the weights stored as `dtype`: `BF16`
    /// or `F16` halve the file (each value rounded to the nearest one of that type), and the
    /// loaders here and in transformers read them back as `f32`.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use lora_hf::WeightDtype;
    /// use lora_t5::{T5Config, T5ForConditionalGeneration};
    ///
    /// let config = T5Config { vocab_size: 40, d_model: 16, d_kv: 4, d_ff: 32, num_layers: 1,
    ///     num_heads: 2, ..T5Config::default() };
    /// let device = Default::default();
    /// let model = T5ForConditionalGeneration::<NdArray>::new(&config, &device);
    /// let dir = std::env::temp_dir().join(format!("t5-bf16-{}", std::process::id()));
    /// model.save_pretrained_as(&dir, WeightDtype::BF16).unwrap();
    /// let size = |d: &std::path::Path| std::fs::metadata(d.join("model.safetensors")).unwrap().len();
    /// let bf16 = size(&dir);
    /// model.save_pretrained(&dir).unwrap();
    /// assert!(bf16 < size(&dir)); // two bytes a weight instead of four, the same header
    /// let loaded = T5ForConditionalGeneration::<NdArray>::from_pretrained(&dir, &device).unwrap();
    /// assert_eq!(loaded.config.d_model, 16);
    /// std::fs::remove_dir_all(dir).unwrap();
    /// ```
    ///
    /// # Errors
    /// As [`save_pretrained`](Self::save_pretrained).
    pub fn save_pretrained_as(&self, dir: &Path, dtype: WeightDtype) -> Result<(), T5Error> {
        std::fs::create_dir_all(dir).map_err(|source| HfFileError::io(dir, source))?;
        let mut tensors = BTreeMap::new();
        let mut failure = None;
        let tied = self.lm_head.is_none() || self.head_still_tied();
        let shared = self.shared.weight.val();
        self.visit_hf("", &mut |key, tensor| {
            if failure.is_some() {
                return;
            }
            let written = match tensor {
                // A wrapped tied head that still equals `shared` stays tied in the file.
                HfTensor::Linear(_) if tied && key == "lm_head" => Ok(()),
                // transformers ties the stacks' lookups to `shared`: a lookup that a merge
                // changed cannot be written.
                HfTensor::TiedEmbedding(layer) => {
                    let table = layer.base.weight.val().dequantize();
                    if same_values(table, shared.clone()) {
                        Ok(())
                    } else {
                        Err(T5Error::InvalidInput {
                            reason: format!(
                                "`{key}` holds a merged adapter, and a transformers T5 checkpoint ties it to `shared`: unmerge it (or merge into the head and keep the lookups unmerged) before saving"
                            ),
                        })
                    }
                }
                // An int8 base weight (`quantize_base`) is written as the f32 values it stands
                // for, dequantized before the transpose (its block scales follow the stored
                // layout); PyTorch's layout is [out, in].
                HfTensor::Linear(layer) => put(
                    &mut tensors,
                    &format!("{key}.weight"),
                    layer.base.weight.val().dequantize().transpose(),
                ),
                HfTensor::Vector(param) => put(&mut tensors, key, param.val()),
                HfTensor::Matrix(param) => put(&mut tensors, key, param.val()),
            };
            failure = written.err();
        });
        if let Some(error) = failure {
            return Err(error);
        }
        let bytes = serialize_safetensors(&tensors, dtype)?;
        let mut config = self.config.to_hf_json();
        config["tie_word_embeddings"] = Value::Bool(tied);
        let text = serde_json::to_string_pretty(&config).expect("config serialises");
        // What transformers writes for a model without generation settings of its own.
        let generation = json!({
            "_from_model_config": true,
            "decoder_start_token_id": self.config.decoder_start_token_id,
            "eos_token_id": self.config.eos_token_id,
            "pad_token_id": self.config.pad_token_id,
        });
        let generation = serde_json::to_string_pretty(&generation).expect("config serialises");
        // The files replaced together: a failure leaves the directory as it was.
        let weights = stage(&dir.join("model.safetensors"), &bytes)?;
        let config = stage(&dir.join("config.json"), text.as_bytes())?;
        let generation = stage(&dir.join(GENERATION_CONFIG_FILE), generation.as_bytes())?;
        Ok(commit(vec![weights, config, generation])?)
    }
}

fn put<B: Backend, const D: usize>(
    out: &mut BTreeMap<String, HostTensor>,
    key: &str,
    tensor: Tensor<B, D>,
) -> Result<(), T5Error> {
    let shape = tensor.dims().to_vec();
    let values = tensor
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| T5Error::InvalidInput {
            reason: format!("could not read `{key}`: {e:?}"),
        })?;
    out.insert(key.to_string(), HostTensor { values, shape });
    Ok(())
}
