//! Trains a LoRA adapter inside a small user-defined Burn module.
//!
//! A two-layer regressor with "pretrained" frozen weights is adapted to a new target that
//! differs from what it computes by a low-rank change. Only the adapter (and nothing else)
//! trains; the loss falls and the trainable-parameter summary is printed.
//!
//! ```sh
//! cargo run --release --example lora_layer
//! ```

use burn::module::Module;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{backend::Backend, Distribution, Tensor};
use lora_burn::backend::TrainBackend;
use lora_burn::lora_core::{
    count_parameters, mark_only_lora_as_trainable, LoraBias, LoraConfig, LoraLinear,
};

/// The user's own module: one LoRA-wrapped layer, one plain layer.
#[derive(Module, Debug)]
struct Regressor<B: Backend> {
    hidden: LoraLinear<B>,
    activation: Relu,
    head: Linear<B>,
}

impl<B: Backend> Regressor<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.head
            .forward(self.activation.forward(self.hidden.forward(x)))
    }
}

fn main() {
    type B = TrainBackend;
    let device = Default::default();
    B::seed(&device, 42);
    let (d_in, d_hidden, d_out, batch) = (64, 128, 8, 256);

    // The "pretrained" layers and a target that needs a rank-4 change of the hidden layer.
    let hidden = LinearConfig::new(d_in, d_hidden).init::<B>(&device);
    let head = LinearConfig::new(d_hidden, d_out).init::<B>(&device);
    let shift_a = Tensor::<B, 2>::random([d_in, 4], Distribution::Normal(0.0, 0.3), &device);
    let shift_b = Tensor::<B, 2>::random([4, d_hidden], Distribution::Normal(0.0, 0.3), &device);
    let target_hidden = Linear {
        weight: burn::module::Param::from_tensor(
            (hidden.weight.val() + shift_a.matmul(shift_b)).detach(),
        ),
        bias: hidden.bias.clone(),
    };
    let teacher = Regressor {
        hidden: LoraLinear::new(target_hidden),
        activation: Relu::new(),
        head: head.clone(),
    };

    let config = LoraConfig::new(8, 16.0);
    let model = Regressor {
        hidden: LoraLinear::from_linear(hidden, &config).expect("valid LoRA config"),
        activation: Relu::new(),
        head,
    };
    let mut model = mark_only_lora_as_trainable(model, LoraBias::None);
    println!("{}", count_parameters(&model));

    let mut optimizer = AdamWConfig::new().with_weight_decay(0.0).init();
    for step in 0..=300 {
        let x = Tensor::<B, 2>::random([batch, d_in], Distribution::Normal(0.0, 1.0), &device);
        let y = teacher.forward(x.clone()).detach();
        let loss = (model.forward(x) - y).square().mean();
        if step % 30 == 0 {
            println!("step {step:>3}  loss {:.6}", loss.clone().into_scalar());
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(3e-3, model, grads);
    }
}
