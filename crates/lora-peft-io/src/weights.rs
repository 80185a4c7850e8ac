//! `adapter_model.safetensors`: the adapter tensors, keyed by module path.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::{SafeTensorError, SafeTensors};

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
    check_header(bytes, path)?;
    let file = SafeTensors::deserialize(bytes).map_err(|e| PeftIoError::Safetensors {
        path: path.to_path_buf(),
        message: match e {
            SafeTensorError::InvalidOffset(key) => format!(
                "tensor `{key}`: data_offsets do not start where the previous tensor ends \
                 (tensors must be stored one after the other from offset 0)"
            ),
            SafeTensorError::MetadataIncompleteBuffer => format!(
                "the tensors do not cover the {} data bytes after the header exactly",
                bytes.len() - 8 - header_length(bytes)
            ),
            other => other.to_string(),
        },
    })?;
    let mut tensors = BTreeMap::new();
    let mut views = file.tensors();
    views.sort_by(|(a, _), (b, _)| a.cmp(b));
    for (key, view) in views {
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

/// The header length a file starts with (call only after [`check_header`]).
fn header_length(bytes: &[u8]) -> usize {
    let mut length = [0; 8];
    length.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(length) as usize
}

/// Checks what the header says about each tensor against the file before the `safetensors`
/// crate reads it, so that a header that lies (sizes, offsets, overflowing shapes) is reported
/// with the tensor it concerns and what was expected. The order of the tensors and the exact
/// coverage of the data are left to `safetensors`.
fn check_header(bytes: &[u8], path: &Path) -> Result<(), PeftIoError> {
    let fail = |message: String| PeftIoError::Safetensors {
        path: path.to_path_buf(),
        message,
    };
    if bytes.len() < 8 {
        return Err(fail(format!(
            "the file is {} bytes long; expected at least the 8-byte header length",
            bytes.len()
        )));
    }
    let (length, rest) = bytes.split_at(8);
    let length = u64::from_le_bytes(length.try_into().expect("8 bytes"));
    if length > rest.len() as u64 {
        return Err(fail(format!(
            "the header length {length} exceeds the {} bytes after it",
            rest.len()
        )));
    }
    let (header, data) = rest.split_at(length as usize);
    let header =
        std::str::from_utf8(header).map_err(|e| fail(format!("the header is not UTF-8: {e}")))?;
    let header: serde_json::Value = serde_json::from_str(header)
        .map_err(|e| fail(format!("the header is not valid JSON: {e}")))?;
    let serde_json::Value::Object(entries) = header else {
        return Err(fail("the header is not a JSON object".into()));
    };
    for (key, info) in &entries {
        if key == "__metadata__" {
            continue;
        }
        let tensor = |what: String| fail(format!("tensor `{key}`: {what}"));
        let dtype = info
            .get("dtype")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| tensor("expected a `dtype` string".into()))?;
        let width: u64 = match dtype {
            "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" => 1,
            "I16" | "U16" | "F16" | "BF16" => 2,
            "I32" | "U32" | "F32" => 4,
            "I64" | "U64" | "F64" => 8,
            _ => {
                return Err(PeftIoError::UnsupportedDtype {
                    path: path.to_path_buf(),
                    key: key.clone(),
                    dtype: dtype.to_string(),
                })
            }
        };
        let shape: Vec<u64> = info
            .get("shape")
            .and_then(serde_json::Value::as_array)
            .and_then(|dims| dims.iter().map(serde_json::Value::as_u64).collect())
            .ok_or_else(|| tensor("expected `shape`, a list of non-negative integers".into()))?;
        let (start, end) = info
            .get("data_offsets")
            .and_then(serde_json::Value::as_array)
            .and_then(|offsets| match offsets.as_slice() {
                [start, end] => Some((start.as_u64()?, end.as_u64()?)),
                _ => None,
            })
            .ok_or_else(|| {
                tensor("expected `data_offsets`, two non-negative integers [start, end]".into())
            })?;
        if start > end || end > data.len() as u64 {
            return Err(tensor(format!(
                "data_offsets [{start}, {end}] do not lie within the {} data bytes after the header",
                data.len()
            )));
        }
        let needed = shape.iter().try_fold(width, |n, d| n.checked_mul(*d));
        match needed {
            None => {
                return Err(tensor(format!(
                    "the size of dtype {dtype} × shape {shape:?} overflows"
                )))
            }
            Some(needed) if needed != end - start => {
                return Err(tensor(format!(
                    "dtype {dtype} × shape {shape:?} needs {needed} bytes, but data_offsets \
                     [{start}, {end}] hold {}",
                    end - start
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
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
