//! LoRA (low-rank adaptation) layers for the [Burn](https://burn.dev) deep-learning framework.
//!
//! [`LoraLinear`] wraps a frozen [`burn::nn::Linear`] and adds named, trainable low-rank adapters
//! with the semantics of Hugging Face PEFT's `LoraLayer`: `y = W x + b + Σ s · B A dropout(x)`,
//! with `s = lora_alpha / r` (or `lora_alpha / √r` with rsLoRA), DoRA, merging, mixed-adapter
//! batches, weighted combinations of adapters and int8 storage of the frozen base weight for
//! inference ([`int8_quantizer`]).
//!
//! ```
//! use burn::backend::{Autodiff, NdArray};
//! use burn::nn::LinearConfig;
//! use burn::tensor::Tensor;
//! use lora_core::{LoraConfig, LoraLinear};
//!
//! type B = Autodiff<NdArray>;
//! let device = Default::default();
//! let base = LinearConfig::new(16, 8).init::<B>(&device);
//! let layer = LoraLinear::from_linear(base, &LoraConfig::new(4, 8.0)).unwrap();
//! let y = layer.forward(Tensor::<B, 3>::ones([2, 5, 16], &device));
//! assert_eq!(y.dims(), [2, 5, 8]);
//! ```

/// The Burn version this crate is built on, re-exported for [`lora_module!`].
pub use burn;

mod adapter;
mod argmax_screen;
mod compute_threads;
mod config;
mod dora;
mod dropout;
mod embedding;
mod error;
mod few_rows_product;
#[cfg(feature = "flex")]
mod flex_tensor;
#[cfg(feature = "flex")]
mod frozen_linear;
#[cfg(feature = "flex")]
mod int8_product;
mod linalg;
mod linear;
mod linear_cross_entropy;
#[cfg(feature = "flex")]
mod lora_branch;
mod lora_module;
mod loss_groups;
#[cfg(feature = "flex")]
mod low_rank_accumulate;
mod merge;
mod merge_check;
mod mixed_batch;
mod model_ops;
mod module_copy;
mod param_count;
mod quantize;
mod quantized_merge;
#[cfg(feature = "flex")]
mod recorded_op;
mod rms_norm;
#[cfg(feature = "flex")]
mod row_exp;
mod sample_routing;
mod sigmoid_activation;
mod softmax;
#[cfg(feature = "flex")]
mod streamed_product;
mod swap_middle_dims;
mod task_merge;
mod tensor_util;
#[cfg(all(test, feature = "flex"))]
mod test_util;
mod trainable;
mod variant;
mod weighted;

pub use adapter::LoraAdapter;
pub use argmax_screen::ArgmaxScreen;
pub use compute_threads::on_compute_threads;
pub use config::{LoraBias, LoraConfig, LoraInit};
pub use dora::Dora;
pub use dropout::Dropout;
pub use error::LoraError;
pub use few_rows_product::{few_rows_times_transposed, FEW_ROWS_MAX};
pub use linear::{LoraLinear, BASE_ONLY, DEFAULT_ADAPTER_NAME};
pub use linear_cross_entropy::{
    linear_cross_entropy, linear_cross_entropy_grouped, HeadLayout, IGNORE_INDEX,
};
pub use lora_module::{join_module_path, lora_layer_paths, LoraModule, EMBEDDING_LAYER_NAMES};
pub use loss_groups::LossGroups;
pub use merge_check::MergeCheck;
pub use model_ops::{in_layer, LoraModelOps};
pub use module_copy::ModuleCopy;
pub use param_count::{count_parameters, ParameterCount};
pub use quantize::{int8_quantizer, quantize_base_weights};
pub use quantized_merge::{merge_and_unload_quantized, RequantizationError};
pub use rms_norm::rms_norm;
pub use sigmoid_activation::{gated_gelu_tanh, gated_silu, gelu_tanh, silu};
pub use softmax::{softmax_last_dim, softmax_last_dim_with_bias};
pub use swap_middle_dims::swap_middle_dims;
pub use task_merge::MajoritySign;
pub use trainable::{mark_all_as_trainable, mark_only_lora_as_trainable};
pub use variant::{BaseTerms, LoraVariant, VariantMerge};
pub use weighted::WeightedCombination;
