//! The test model shared by the integration tests: a T5-shaped tree of linear layers with the
//! weights of `fixtures/base_model.safetensors` (see `fixtures/README.md`), and helpers to make
//! scratch copies of fixture directories.

// Each test file uses its own subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::backend::NdArray;
use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{activation::relu, Tensor, TensorData};
use lora_core::{lora_module, LoraLinear};
use lora_hf::{read_safetensors, HostTensor, WeightDtype};

pub type Cpu = NdArray<f32>;

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q: LoraLinear<B>,
    pub k: LoraLinear<B>,
    pub v: LoraLinear<B>,
    pub o: LoraLinear<B>,
}
lora_module!(Attention { q, k, v, o });

#[derive(Module, Debug)]
pub struct FeedForward<B: Backend> {
    pub wi: LoraLinear<B>,
    pub wo: LoraLinear<B>,
}
lora_module!(FeedForward { wi, wo });

#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub attention: Attention<B>,
    pub feed_forward: FeedForward<B>,
}
lora_module!(Block {
    attention as "layer.0.SelfAttention",
    feed_forward as "layer.1.DenseReluDense",
});

#[derive(Module, Debug)]
pub struct Stack<B: Backend> {
    pub block: Vec<Block<B>>,
}
lora_module!(Stack { block });

#[derive(Module, Debug)]
pub struct Tiny<B: Backend> {
    pub encoder: Stack<B>,
    pub decoder: Stack<B>,
    pub lm_head: LoraLinear<B>,
}
lora_module!(Tiny {
    encoder,
    decoder,
    lm_head
});

impl<B: Backend> Tiny<B> {
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let mut h = x;
        for stack in [&self.encoder, &self.decoder] {
            for block in &stack.block {
                let a = &block.attention;
                let mixed =
                    a.q.forward(h.clone()) + a.k.forward(h.clone()) + a.v.forward(h.clone());
                h = h.clone() + a.o.forward(mixed);
                let f = &block.feed_forward;
                h = h.clone() + f.wo.forward(relu(f.wi.forward(h)));
            }
        }
        self.lm_head.forward(h)
    }
}

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub fn tensor<const D: usize>(t: &HostTensor) -> Tensor<Cpu, D> {
    Tensor::from_data(
        TensorData::new(t.values.clone(), t.shape.clone()),
        &Default::default(),
    )
}

/// The base model with the weights of `base_model.safetensors`.
pub fn base_model() -> Tiny<Cpu> {
    let weights = read_safetensors(&fixtures().join("base_model.safetensors")).unwrap();
    let linear = |path: &str| {
        let w = &weights[&format!("{path}.weight")];
        LoraLinear::new(Linear {
            weight: Param::from_tensor(tensor::<2>(w).transpose()),
            bias: None,
        })
    };
    let stack = |name: &str| Stack {
        block: (0..2)
            .map(|i| {
                let p = format!("{name}.block.{i}.layer");
                Block {
                    attention: Attention {
                        q: linear(&format!("{p}.0.SelfAttention.q")),
                        k: linear(&format!("{p}.0.SelfAttention.k")),
                        v: linear(&format!("{p}.0.SelfAttention.v")),
                        o: linear(&format!("{p}.0.SelfAttention.o")),
                    },
                    feed_forward: FeedForward {
                        wi: linear(&format!("{p}.1.DenseReluDense.wi")),
                        wo: linear(&format!("{p}.1.DenseReluDense.wo")),
                    },
                }
            })
            .collect(),
    };
    Tiny {
        encoder: stack("encoder"),
        decoder: stack("decoder"),
        lm_head: linear("lm_head"),
    }
}

/// An empty directory under the system's temporary directory, unique to this process and
/// `name`.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lora-peft-io-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Copies the plain files of `from` (not its subdirectories) into `to`.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// Replaces `dir/adapter_model.safetensors` with `tensors` (F32).
pub fn write_tensors(dir: &Path, tensors: &BTreeMap<String, HostTensor>) {
    let bytes = lora_hf::serialize_safetensors(tensors, WeightDtype::F32).unwrap();
    std::fs::write(dir.join("adapter_model.safetensors"), bytes).unwrap();
}
