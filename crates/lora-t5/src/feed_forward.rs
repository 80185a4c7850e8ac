//! T5's feed-forward block, plain or gated.

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::activation::{gelu, relu};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use lora_core::LoraLinear;
use lora_core::{gated_gelu_tanh, gated_silu, gelu_tanh, silu, Dropout};

use crate::{Activation, FeedForwardKind, T5Config};

/// `DenseReluDense`: `wo(act(wi(x)))`, or gated `wo(act(wi_0(x)) · wi_1(x))`.
#[derive(Module, Debug)]
pub struct T5FeedForward<B: Backend> {
    /// Input projection of the plain block.
    pub wi: Option<LoraLinear<B>>,
    /// Activated input projection of the gated block.
    pub wi_0: Option<LoraLinear<B>>,
    /// Linear input projection of the gated block.
    pub wi_1: Option<LoraLinear<B>>,
    /// Output projection.
    pub wo: LoraLinear<B>,
    /// Dropout after the activation.
    pub dropout: Dropout,
    /// Which block this is.
    #[module(skip)]
    pub kind: FeedForwardKind,
}

impl<B: Backend> T5FeedForward<B> {
    /// A randomly initialised block (weights are normally loaded from a checkpoint).
    pub fn new(config: &T5Config, device: &B::Device) -> Self {
        let linear = |i, o| LoraLinear::new(LinearConfig::new(i, o).with_bias(false).init(device));
        let gated = config.feed_forward.is_gated();
        Self {
            wi: (!gated).then(|| linear(config.d_model, config.d_ff)),
            wi_0: gated.then(|| linear(config.d_model, config.d_ff)),
            wi_1: gated.then(|| linear(config.d_model, config.d_ff)),
            wo: linear(config.d_ff, config.d_model),
            dropout: Dropout::new(config.dropout_rate),
            kind: config.feed_forward,
        }
    }

    /// Applies the block to `[batch, length, d_model]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = match (&self.wi, &self.wi_0, &self.wi_1) {
            (Some(wi), _, _) => self.activate(wi.forward(x)),
            (None, Some(wi_0), Some(wi_1)) => {
                let gate = wi_0.forward(x.clone());
                // One pass (one recorded operation when training) instead of Burn's
                // activation and product.
                match self.kind.activation {
                    Activation::GeluTanh => gated_gelu_tanh(gate, wi_1.forward(x)),
                    Activation::Silu => gated_silu(gate, wi_1.forward(x)),
                    _ => self.activate(gate) * wi_1.forward(x),
                }
            }
            _ => unreachable!("a feed-forward block has `wi` or both `wi_0` and `wi_1`"),
        };
        self.wo.forward(self.dropout.forward(hidden))
    }

    fn activate(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        match self.kind.activation {
            Activation::Relu => relu(x),
            Activation::Gelu => gelu(x),
            Activation::GeluTanh => gelu_tanh(x),
            Activation::Silu => silu(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::tensor::activation::{gelu_approximate, silu as burn_silu};
    use burn::tensor::{Distribution, Tensor};
    use lora_core::{gated_gelu_tanh, gated_silu};

    use super::T5FeedForward;
    use crate::{FeedForwardKind, T5Config};

    type Gated = fn(Tensor<Flex, 3>, Tensor<Flex, 3>) -> Tensor<Flex, 3>;

    /// The gated block runs `lora_core`'s fused activation, bit for bit, and not Burn's
    /// operations, whose rounding differs somewhere among the block's values.
    fn check(kind: FeedForwardKind, fused: Gated, burn_s: Gated) {
        let device = Default::default();
        let config = T5Config {
            d_model: 32,
            d_ff: 48,
            feed_forward: kind,
            ..T5Config::default()
        };
        let block = T5FeedForward::<Flex>::new(&config, &device);
        let x = Tensor::<Flex, 3>::random([2, 7, 32], Distribution::Default, &device);
        let (wi_0, wi_1) = (block.wi_0.as_ref().unwrap(), block.wi_1.as_ref().unwrap());
        let (gate, up) = (wi_0.forward(x.clone()), wi_1.forward(x.clone()));
        let found = block.forward(x).into_data();
        let expected = block
            .wo
            .forward(fused(gate.clone(), up.clone()))
            .into_data();
        assert_eq!(found, expected);
        assert_ne!(found, block.wo.forward(burn_s(gate, up)).into_data());
    }

    #[test]
    fn the_gated_gelu_block_runs_the_fused_activation() {
        check(FeedForwardKind::GATED_GELU, gated_gelu_tanh, |g, u| {
            gelu_approximate(g) * u
        });
    }

    #[test]
    fn the_gated_silu_block_runs_the_fused_activation() {
        check(FeedForwardKind::GATED_SILU, gated_silu, |g, u| {
            burn_silu(g) * u
        });
    }
}
