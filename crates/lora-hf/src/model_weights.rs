//! The weights of a Hugging Face model directory: `model.safetensors`, or the shards that
//! `model.safetensors.index.json` lists.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{read_safetensors, HfFileError, HostTensor};

/// The single-file weights of a model directory.
pub const SINGLE_WEIGHTS_FILE: &str = "model.safetensors";
/// The index of a sharded model directory.
pub const SHARD_INDEX_FILE: &str = "model.safetensors.index.json";

/// Every tensor of a model directory, by key, each with the file it came from.
///
/// ```
/// use std::collections::BTreeMap;
/// use lora_hf::{read_model_weights, serialize_safetensors, write_atomic, HostTensor, WeightDtype};
///
/// let dir = std::env::temp_dir().join(format!("lora-hf-weights-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let tensors = BTreeMap::from([("shared.weight".to_string(), HostTensor { values: vec![0.0; 4], shape: vec![2, 2] })]);
/// write_atomic(&dir.join("model.safetensors"), &serialize_safetensors(&tensors, WeightDtype::F32).unwrap()).unwrap();
/// let weights = read_model_weights(&dir).unwrap();
/// assert_eq!(weights.tensors["shared.weight"].1.shape, [2, 2]);
/// assert_eq!(weights.source, dir.join("model.safetensors"));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct ModelWeights {
    /// The tensors by key, each with its file.
    pub tensors: BTreeMap<String, (PathBuf, HostTensor)>,
    /// `model.safetensors` or the index: the file to name when a tensor is missing.
    pub source: PathBuf,
}

/// Reads `dir/model.safetensors`, or else every shard `dir/model.safetensors.index.json` lists
/// (shard names must be plain file names inside `dir`).
///
/// # Errors
/// [`HfFileError::NoWeights`] when neither file exists; the index's and each shard's reading
/// errors otherwise. See [`ModelWeights`] for an example.
pub fn read_model_weights(dir: &Path) -> Result<ModelWeights, HfFileError> {
    let single = dir.join(SINGLE_WEIGHTS_FILE);
    let index = dir.join(SHARD_INDEX_FILE);
    let (files, source) = if single.is_file() {
        (vec![single.clone()], single)
    } else if index.is_file() {
        (shard_files(&index)?, index)
    } else {
        return Err(HfFileError::NoWeights {
            dir: dir.to_path_buf(),
        });
    };
    let mut tensors = BTreeMap::new();
    for file in files {
        for (key, tensor) in read_safetensors(&file)? {
            tensors.insert(key, (file.clone(), tensor));
        }
    }
    Ok(ModelWeights { tensors, source })
}

/// The shard files an index names, in the order of their first mention.
fn shard_files(index: &Path) -> Result<Vec<PathBuf>, HfFileError> {
    let text = std::fs::read_to_string(index).map_err(|source| HfFileError::Io {
        path: index.to_path_buf(),
        source,
    })?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| HfFileError::json(index, &e))?;
    let invalid = |key: String, expected: &str, found: String| HfFileError::InvalidValue {
        path: index.to_path_buf(),
        key,
        expected: expected.into(),
        found,
    };
    let map = value
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| {
            invalid(
                "weight_map".into(),
                "an object of tensor names to shard files",
                "nothing of that kind".into(),
            )
        })?;
    let mut files: Vec<PathBuf> = Vec::new();
    for (key, file) in map {
        let key = format!("weight_map.{key}");
        let name = file
            .as_str()
            .ok_or_else(|| invalid(key.clone(), "a file name", file.to_string()))?;
        if name.contains('/') || name.contains('\\') || name.starts_with('.') {
            return Err(invalid(
                key,
                "a file name inside the model directory",
                name.to_string(),
            ));
        }
        let path = index.with_file_name(name);
        if !files.contains(&path) {
            files.push(path);
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{serialize_safetensors, write_atomic, WeightDtype};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lora-hf-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write_tensor(path: &Path, key: &str, values: Vec<f32>) {
        let shape = vec![values.len()];
        let tensors = BTreeMap::from([(key.to_string(), HostTensor { values, shape })]);
        let bytes = serialize_safetensors(&tensors, WeightDtype::F32).unwrap();
        write_atomic(path, &bytes).unwrap();
    }

    #[test]
    fn shards_are_read_with_their_files() {
        let dir = scratch("shards");
        write_tensor(&dir.join("a.safetensors"), "x", vec![1.0, 2.0]);
        write_tensor(&dir.join("b.safetensors"), "y", vec![3.0]);
        let index = r#"{"weight_map": {"x": "a.safetensors", "y": "b.safetensors"}}"#;
        write_atomic(&dir.join(SHARD_INDEX_FILE), index.as_bytes()).unwrap();
        let weights = read_model_weights(&dir).unwrap();
        assert_eq!(weights.source, dir.join(SHARD_INDEX_FILE));
        assert_eq!(weights.tensors["x"].0, dir.join("a.safetensors"));
        assert_eq!(weights.tensors["y"].1.values, [3.0]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_index_naming_a_file_outside_the_directory_is_refused() {
        let dir = scratch("traversal");
        let index = r#"{"weight_map": {"x": "../a.safetensors"}}"#;
        write_atomic(&dir.join(SHARD_INDEX_FILE), index.as_bytes()).unwrap();
        let err = read_model_weights(&dir).unwrap_err();
        assert!(
            matches!(&err, HfFileError::InvalidValue { key, .. } if key == "weight_map.x"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_index_without_a_weight_map_is_refused() {
        let dir = scratch("no-map");
        write_atomic(&dir.join(SHARD_INDEX_FILE), b"{}").unwrap();
        let err = read_model_weights(&dir).unwrap_err();
        assert!(
            matches!(&err, HfFileError::InvalidValue { key, .. } if key == "weight_map"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
