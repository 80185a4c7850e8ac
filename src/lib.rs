//! LoRA for the [Burn](https://burn.dev) deep-learning framework.
//!
//! This umbrella crate re-exports the workspace's libraries and picks a concrete backend from
//! the cargo features, for the examples, benchmarks and binaries:
//!
//! - [`lora_core`]: the [`LoraLinear`](lora_core::LoraLinear) layer and its tools;
//! - [`lora_t5`]: T5 / FLAN-T5 built on `LoraLinear`;
//! - [`lora_peft_io`]: PEFT adapter directories, both ways;
//! - [`lora_hf`]: Hugging Face files (safetensors, sharded indexes, atomic writes).
//!
//! ```
//! use lora_burn::backend::{Backend, TrainBackend};
//! use lora_burn::lora_core::{LoraConfig, LoraLinear};
//! use burn::nn::LinearConfig;
//!
//! let device = Default::default();
//! let base = LinearConfig::new(8, 8).init::<TrainBackend>(&device);
//! let layer = LoraLinear::from_linear(base, &LoraConfig::new(4, 8.0)).unwrap();
//! assert_eq!(layer.d_output(), 8);
//! ```

pub use lora_core;
pub use lora_hf;
pub use lora_peft_io;
pub use lora_t5;
pub use lora_train;
pub use uidsl;

pub mod backend;

#[cfg(feature = "mimalloc")]
mod allocator;

/// With the `mimalloc` feature (on by default), every binary, example, bench and test linking
/// this crate allocates with mimalloc set to keep freed memory for reuse
/// ([`allocator::RetainingMiMalloc`]).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL_ALLOCATOR: allocator::RetainingMiMalloc = allocator::RetainingMiMalloc;
