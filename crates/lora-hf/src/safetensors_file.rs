//! safetensors files as `f32` host tensors: reading with every header field checked against the
//! file, and writing in F32, F16 or BF16 with PyTorch's `{"format": "pt"}` metadata.

use std::collections::BTreeMap;
use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::{SafeTensorError, SafeTensors};

use crate::dtype::{bf16_to_f32, f16_to_f32, f32_to_bf16, f32_to_f16, WeightDtype};
use crate::HfFileError;

/// A tensor of a Hugging Face file, as `f32` in row-major order (PyTorch layout).
///
/// ```
/// let tensor = lora_hf::HostTensor { values: vec![1.0, 2.0], shape: vec![1, 2] };
/// assert_eq!(tensor.values.len(), tensor.shape.iter().product::<usize>());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// The values.
    pub values: Vec<f32>,
    /// The shape.
    pub shape: Vec<usize>,
}

/// Rows and columns of the square tiles [`HostTensor::transposed`] copies at a time, so that
/// both the reads and the writes of a tile stay in the cache.
const TRANSPOSE_TILE: usize = 32;

impl HostTensor {
    /// The `[cols, rows]` transpose of a `[rows, cols]` matrix, as contiguous row-major values:
    /// a PyTorch `nn.Linear` weight (`[out, in]`) in the layout of Burn's `Linear` (`[in, out]`).
    /// A transposed view would leave the weight strided in memory, which the backends'
    /// products either copy at every call or multiply by slower paths. `None` unless the tensor
    /// is 2-D with as many values as its shape holds.
    ///
    /// ```
    /// let weight = lora_hf::HostTensor { values: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], shape: vec![2, 3] };
    /// let t = weight.transposed().unwrap();
    /// assert_eq!(t.shape, vec![3, 2]);
    /// assert_eq!(t.values, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    /// ```
    pub fn transposed(&self) -> Option<HostTensor> {
        let [rows, cols] = self.shape[..] else {
            return None;
        };
        if rows.checked_mul(cols) != Some(self.values.len()) {
            return None;
        }
        let mut values = vec![0f32; self.values.len()];
        for row_start in (0..rows).step_by(TRANSPOSE_TILE) {
            let row_end = (row_start + TRANSPOSE_TILE).min(rows);
            for col_start in (0..cols).step_by(TRANSPOSE_TILE) {
                let col_end = (col_start + TRANSPOSE_TILE).min(cols);
                for row in row_start..row_end {
                    for col in col_start..col_end {
                        values[col * rows + row] = self.values[row * cols + col];
                    }
                }
            }
        }
        Some(HostTensor {
            values,
            shape: vec![cols, rows],
        })
    }
}

/// Reads every tensor of a safetensors file as `f32`, checking dtypes and finiteness.
///
/// ```
/// use std::collections::BTreeMap;
/// use lora_hf::{read_safetensors, serialize_safetensors, write_atomic, HostTensor, WeightDtype};
///
/// let tensors = BTreeMap::from([("w".to_string(), HostTensor { values: vec![0.5; 6], shape: vec![2, 3] })]);
/// let path = std::env::temp_dir().join(format!("lora-hf-doc-{}.safetensors", std::process::id()));
/// write_atomic(&path, &serialize_safetensors(&tensors, WeightDtype::BF16).unwrap()).unwrap();
/// assert_eq!(read_safetensors(&path).unwrap(), tensors);
/// # std::fs::remove_file(&path).unwrap();
/// ```
///
/// # Errors
/// [`HfFileError::Io`] when the file cannot be read, and every error of
/// [`parse_safetensors`].
pub fn read_safetensors(path: &Path) -> Result<BTreeMap<String, HostTensor>, HfFileError> {
    let bytes = std::fs::read(path).map_err(|source| HfFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_safetensors(&bytes, path)
}

/// Parses the bytes of a safetensors file; `path` names it in errors.
///
/// ```
/// let err = lora_hf::parse_safetensors(b"tiny", "x.safetensors".as_ref()).unwrap_err();
/// assert!(matches!(err, lora_hf::HfFileError::Safetensors { .. }));
/// ```
///
/// # Errors
/// [`HfFileError::Safetensors`] for a malformed header or data section (every offset, shape
/// and length is checked), [`HfFileError::UnsupportedDtype`] for a dtype other than F32, F16 or
/// BF16, and [`HfFileError::NonFinite`] for a tensor holding NaN or infinity, naming `path`
/// and the tensor.
pub fn parse_safetensors(
    bytes: &[u8],
    path: &Path,
) -> Result<BTreeMap<String, HostTensor>, HfFileError> {
    check_header(bytes, path)?;
    let file = SafeTensors::deserialize(bytes).map_err(|e| HfFileError::Safetensors {
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
            return Err(HfFileError::NonFinite {
                path: path.to_path_buf(),
                key,
            });
        }
        tensors.insert(key, tensor);
    }
    Ok(tensors)
}

/// The longest header the `safetensors` format allows (its `MAX_HEADER_SIZE`), checked before
/// the header is parsed.
const MAX_HEADER_LEN: u64 = 100_000_000;

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
fn check_header(bytes: &[u8], path: &Path) -> Result<(), HfFileError> {
    let fail = |message: String| HfFileError::Safetensors {
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
    // Before the header is parsed: a JSON value takes many times its text's size in memory.
    if length > MAX_HEADER_LEN {
        return Err(fail(format!(
            "the header length {length} exceeds the safetensors limit of {MAX_HEADER_LEN} bytes"
        )));
    }
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
                return Err(HfFileError::UnsupportedDtype {
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

fn to_f32(key: &str, view: &TensorView<'_>, path: &Path) -> Result<HostTensor, HfFileError> {
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
            return Err(HfFileError::UnsupportedDtype {
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

/// Serialises tensors to safetensors bytes with PyTorch's metadata `{"format": "pt"}`, in
/// `dtype` (rounded to nearest even for the half-precision types).
///
/// ```
/// use std::collections::BTreeMap;
/// use lora_hf::{parse_safetensors, serialize_safetensors, HostTensor, WeightDtype};
///
/// let tensors = BTreeMap::from([("b".to_string(), HostTensor { values: vec![1.5, -2.0], shape: vec![2] })]);
/// let bytes = serialize_safetensors(&tensors, WeightDtype::F16).unwrap();
/// assert_eq!(parse_safetensors(&bytes, "b.safetensors".as_ref()).unwrap(), tensors);
/// ```
///
/// # Errors
/// [`HfFileError::Safetensors`] for a tensor whose values do not match its shape.
pub fn serialize_safetensors(
    tensors: &BTreeMap<String, HostTensor>,
    dtype: WeightDtype,
) -> Result<Vec<u8>, HfFileError> {
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
        .map_err(|e| HfFileError::Safetensors {
            path: "<in memory>".into(),
            message: e.to_string(),
        })?;
    let metadata = Some(
        [("format".to_string(), "pt".to_string())]
            .into_iter()
            .collect(),
    );
    safetensors::serialize(views, &metadata).map_err(|e| HfFileError::Safetensors {
        path: "<in memory>".into(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::HostTensor;

    /// Shapes smaller than, equal to and across several tiles, with partial tiles on both sides.
    #[test]
    fn transposed_moves_every_value_to_its_mirrored_place() {
        for (rows, cols) in [(1, 1), (1, 7), (7, 1), (32, 32), (70, 45), (33, 100)] {
            let values: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let matrix = HostTensor {
                values: values.clone(),
                shape: vec![rows, cols],
            };
            let t = matrix.transposed().expect("a 2-D tensor");
            assert_eq!(t.shape, vec![cols, rows]);
            for row in 0..rows {
                for col in 0..cols {
                    assert_eq!(t.values[col * rows + row], values[row * cols + col]);
                }
            }
        }
    }

    #[test]
    fn transposed_declines_what_is_not_a_whole_matrix() {
        let vector = HostTensor {
            values: vec![1.0; 3],
            shape: vec![3],
        };
        assert!(vector.transposed().is_none());
        let short = HostTensor {
            values: vec![1.0; 5],
            shape: vec![2, 3],
        };
        assert!(short.transposed().is_none());
    }
}
