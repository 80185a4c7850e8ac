//! `adapter_model.safetensors`: the adapter tensors, keyed by module path.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::dtype::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, WeightDtype};
use crate::PeftIoError;

/// The prefix PEFT puts before every module path in adapter files.
pub const PEFT_KEY_PREFIX: &str = "base_model.model.";

/// A tensor read from an adapter file, as `f32` in row-major order (PyTorch layout).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// The values.
    pub values: Vec<f32>,
    /// The shape.
    pub shape: Vec<usize>,
}

/// What a tensor of an adapter file is for, parsed from its key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TensorRole {
    /// `lora_A.weight`, `[r, in]`.
    LoraA,
    /// `lora_B.weight`, `[out, r]`.
    LoraB,
    /// DoRA's `lora_magnitude_vector`, `[out]`.
    Magnitude,
    /// `lora_B.bias` (PEFT's `lora_bias`).
    LoraBBias,
    /// The base layer's bias (`bias = "all"` / `"lora_only"`).
    BaseBias,
    /// `lora_embedding_A` / `lora_embedding_B` (LoRA on embeddings).
    Embedding,
    /// Anything else: a `modules_to_save` weight or an unknown key.
    Other,
}

/// Splits a file key into the module path and the tensor's role, accepting keys with or
/// without the `base_model.model.` prefix and with an adapter name left in
/// (`lora_A.default.weight`).
///
/// ```
/// use lora_peft_io::{split_key, TensorRole};
///
/// let key = "base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight";
/// assert_eq!(split_key(key, "default"), ("encoder.block.0.layer.0.SelfAttention.q".into(), TensorRole::LoraA));
/// assert_eq!(split_key("q.lora_B.default.weight", "default"), ("q".into(), TensorRole::LoraB));
/// ```
pub fn split_key(key: &str, adapter_name: &str) -> (String, TensorRole) {
    let key = key.strip_prefix(PEFT_KEY_PREFIX).unwrap_or(key);
    let named = |suffix: &str| -> [String; 2] {
        // `lora_A.weight` or `lora_A.<adapter>.weight`
        match suffix.split_once('.') {
            Some((head, tail)) => [
                format!(".{suffix}"),
                format!(".{head}.{adapter_name}.{tail}"),
            ],
            None => [format!(".{suffix}"), format!(".{suffix}.{adapter_name}")],
        }
    };
    let roles = [
        ("lora_A.weight", TensorRole::LoraA),
        ("lora_B.weight", TensorRole::LoraB),
        ("lora_B.bias", TensorRole::LoraBBias),
        ("lora_magnitude_vector", TensorRole::Magnitude),
        ("lora_magnitude_vector.weight", TensorRole::Magnitude),
        ("lora_embedding_A", TensorRole::Embedding),
        ("lora_embedding_B", TensorRole::Embedding),
        ("base_layer.bias", TensorRole::BaseBias),
    ];
    for (suffix, role) in roles {
        for candidate in named(suffix) {
            if let Some(module) = key.strip_suffix(&candidate) {
                return (module.to_string(), role);
            }
        }
    }
    (key.to_string(), TensorRole::Other)
}

/// Reads every tensor of a safetensors file as `f32`, checking dtypes and finiteness.
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>, PeftIoError> {
    let bytes = std::fs::read(path).map_err(|source| PeftIoError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_safetensors(&bytes, path)
}

/// Parses the bytes of a safetensors file; `path` names it in errors.
pub fn parse_safetensors(
    bytes: &[u8],
    path: &Path,
) -> Result<BTreeMap<String, HostTensor>, PeftIoError> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| PeftIoError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut tensors = BTreeMap::new();
    for (key, view) in file.tensors() {
        let tensor = to_f32(&key, &view, path)?;
        if tensor.values.iter().any(|v| !v.is_finite()) {
            return Err(PeftIoError::NonFinite {
                path: path.to_path_buf(),
                key,
            });
        }
        tensors.insert(key, tensor);
    }
    Ok(tensors)
}

fn to_f32(key: &str, view: &TensorView<'_>, path: &Path) -> Result<HostTensor, PeftIoError> {
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| bf16_to_f32(u16::from_le_bytes([b[0], b[1]])))
            .collect(),
        other => {
            return Err(PeftIoError::UnsupportedDtype {
                path: path.to_path_buf(),
                key: key.to_string(),
                dtype: format!("{other:?}"),
            })
        }
    };
    Ok(HostTensor {
        values,
        shape: view.shape().to_vec(),
    })
}

/// Serialises tensors to safetensors bytes with PEFT's metadata `{"format": "pt"}`.
pub fn serialize_safetensors(
    tensors: &BTreeMap<String, HostTensor>,
    dtype: WeightDtype,
) -> Result<Vec<u8>, PeftIoError> {
    let encoded: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(key, t)| {
            let bytes = match dtype {
                WeightDtype::F32 => t.values.iter().flat_map(|v| v.to_le_bytes()).collect(),
                WeightDtype::F16 => t
                    .values
                    .iter()
                    .flat_map(|v| f32_to_f16(*v).to_le_bytes())
                    .collect(),
                WeightDtype::BF16 => t
                    .values
                    .iter()
                    .flat_map(|v| f32_to_bf16(*v).to_le_bytes())
                    .collect(),
            };
            (key.clone(), bytes, t.shape.clone())
        })
        .collect();
    let st_dtype = match dtype {
        WeightDtype::F32 => Dtype::F32,
        WeightDtype::F16 => Dtype::F16,
        WeightDtype::BF16 => Dtype::BF16,
    };
    let views = encoded
        .iter()
        .map(|(key, bytes, shape)| {
            TensorView::new(st_dtype, shape.clone(), bytes).map(|view| (key.clone(), view))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PeftIoError::Safetensors {
            path: "<in memory>".into(),
            message: e.to_string(),
        })?;
    let metadata = Some(
        [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect(),
    );
    safetensors::serialize(views, &metadata).map_err(|e| PeftIoError::Safetensors {
        path: "<in memory>".into(),
        message: e.to_string(),
    })
}
