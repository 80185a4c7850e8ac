//! Hugging Face PEFT LoRA adapter directories for Burn models, both ways.
//!
//! A PEFT adapter directory holds `adapter_config.json` ([`AdapterConfig`]) and
//! `adapter_model.safetensors` (or the legacy `adapter_model.bin`). Any model whose
//! [`LoraLinear`](lora_core::LoraLinear) layers are reachable by their module paths
//! ([`LoraModule`](lora_core::LoraModule)) can [`inject_adapter`] (PEFT's `get_peft_model`),
//! [`load_adapter`] and [`save_adapter`], with PEFT's target-matching rules.
//!
//! ```
//! use burn::backend::NdArray;
//! use burn::module::Module;
//! use burn::nn::LinearConfig;
//! use burn::tensor::backend::Backend;
//! use lora_core::{lora_module, LoraConfig, LoraLinear};
//! use lora_peft_io::{inject_adapter, load_adapter, save_adapter, AdapterConfig, ModuleSelector, SaveOptions};
//!
//! #[derive(Module, Debug)]
//! struct Attention<B: Backend> {
//!     q: LoraLinear<B>,
//!     v: LoraLinear<B>,
//! }
//! lora_module!(Attention { q, v });
//!
//! let device = Default::default();
//! let layer = || LoraLinear::<NdArray>::new(LinearConfig::new(8, 8).init(&device));
//! let mut model = Attention { q: layer(), v: layer() };
//! let config = AdapterConfig::from_lora_config(
//!     &LoraConfig::new(4, 8.0),
//!     ModuleSelector::Names(vec!["q".into()]),
//! ).unwrap();
//! assert_eq!(inject_adapter(&mut model, &config, "default").unwrap(), ["q"]);
//!
//! let dir = std::env::temp_dir().join(format!("lora-peft-io-doc-{}", std::process::id()));
//! save_adapter(&model, &dir, "default", &config, SaveOptions::default()).unwrap();
//! let mut fresh = Attention { q: layer(), v: layer() };
//! load_adapter(&mut fresh, &dir, "default").unwrap();
//! assert_eq!(fresh.q.adapter_names(), ["default"]);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```

mod adapter_dir;
mod config;
mod error;
mod hotswap;
mod matching;
mod pickle;
mod weights;

pub use adapter_dir::{
    adapter_dir, inject_adapter, load_adapter, save_adapter, SaveEmbeddingLayers, SaveOptions,
    CONFIG_FILE, LEGACY_WEIGHTS_FILE, WEIGHTS_FILE,
};
pub use config::{AdapterConfig, InitLoraWeights, ModuleSelector};
pub use error::PeftIoError;
pub use hotswap::hotswap_adapter;
pub use matching::{is_target, select_targets};
pub use pickle::parse_torch_bytes;
pub use weights::{split_key, TensorRole, PEFT_KEY_PREFIX};

/// The file-level types of this crate's API, from [`lora_hf`]: the tensors adapter files hold
/// and the element type [`SaveOptions`] writes.
pub use lora_core::EMBEDDING_LAYER_NAMES;
pub use lora_hf::{HfFileError, HostTensor, WeightDtype};
