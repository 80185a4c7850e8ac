//! Hugging Face file plumbing for Burn models, knowing nothing of LoRA or of any model:
//!
//! - safetensors files as `f32` [`HostTensor`]s, read with every header field checked against
//!   the file ([`read_safetensors`], [`parse_safetensors`]) and written in F32, F16 or BF16
//!   ([`serialize_safetensors`], [`WeightDtype`]);
//! - a model directory's weights, single-file or sharded by `model.safetensors.index.json`
//!   ([`read_model_weights`]);
//! - writes that never leave a half-written file: one file ([`write_atomic`]) or several
//!   replaced together ([`stage`], [`commit`]);
//! - JSON configs read by `serde` derive, each refused value named by its key path
//!   ([`parse_json_config`], [`checked`]);
//! - one typed error, [`HfFileError`], naming the file, the key and what was expected.
//!
//! ```
//! use std::collections::BTreeMap;
//! use lora_hf::{read_model_weights, serialize_safetensors, write_atomic, HostTensor, WeightDtype};
//!
//! let dir = std::env::temp_dir().join(format!("lora-hf-crate-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir).unwrap();
//! let weights = BTreeMap::from([("lm_head.weight".to_string(), HostTensor { values: vec![0.25; 6], shape: vec![3, 2] })]);
//! let bytes = serialize_safetensors(&weights, WeightDtype::F16).unwrap();
//! write_atomic(&dir.join("model.safetensors"), &bytes).unwrap();
//! assert_eq!(read_model_weights(&dir).unwrap().tensors["lm_head.weight"].1, weights["lm_head.weight"]);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

mod atomic;
mod dtype;
mod error;
mod json_config;
mod leftovers;
mod model_weights;
mod safetensors_file;
mod staged_dir;

pub use atomic::{commit, stage, write_atomic, PendingFile};
pub use dtype::{bf16_to_f32, f16_to_f32, WeightDtype};
pub use error::HfFileError;
pub use json_config::{
    checked, json_config_from_value, parse_json_config, parse_json_object, ROOT_KEY,
};
pub use model_weights::{read_model_weights, ModelWeights, SHARD_INDEX_FILE, SINGLE_WEIGHTS_FILE};
pub use safetensors_file::{
    parse_safetensors, read_safetensors, serialize_safetensors, HostTensor,
};
pub use staged_dir::StagedDir;
