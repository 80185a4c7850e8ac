//! Freezing everything in a model but its LoRA layers (PEFT's `mark_only_lora_as_trainable`),
//! and unfreezing everything for full training.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::LoraBias;

/// The container name Burn's `Module` derive reports for fields of [`LoraLinear`](crate::LoraLinear).
const LORA_LINEAR_CONTAINER: &str = "Struct:LoraLinear";

/// Freezes every parameter of `module` outside its [`LoraLinear`](crate::LoraLinear) layers, as
/// PEFT's `get_peft_model` does; with [`LoraBias::All`] every bias stays trainable. The LoRA
/// layers keep their own settings: frozen base weight, trainable active adapters, and their bias
/// as their adapters' `bias` mode says.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::module::Module;
/// use burn::nn::{Linear, LinearConfig};
/// use burn::tensor::backend::Backend;
/// use lora_core::{count_parameters, mark_only_lora_as_trainable, LoraBias, LoraConfig, LoraLinear};
///
/// #[derive(Module, Debug)]
/// struct Model<B: Backend> {
///     embed: Linear<B>,
///     attn: LoraLinear<B>,
/// }
///
/// let device = Default::default();
/// let model = Model::<Autodiff<NdArray>> {
///     embed: LinearConfig::new(4, 8).init(&device),
///     attn: LoraLinear::from_linear(LinearConfig::new(8, 8).init(&device), &LoraConfig::new(2, 4.0))
///         .unwrap(),
/// };
/// let model = mark_only_lora_as_trainable(model, LoraBias::None);
/// assert_eq!(count_parameters(&model).trainable, 2 * 8 + 2 * 8);
/// ```
pub fn mark_only_lora_as_trainable<B: Backend, M: Module<B>>(module: M, bias: LoraBias) -> M {
    module.map(&mut Freezer {
        path: Vec::new(),
        bias,
    })
}

/// Makes every parameter of `module` trainable, frozen LoRA base weights included: full
/// fine-tuning or pretraining of a model built on [`LoraLinear`](crate::LoraLinear) layers.
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::LinearConfig;
/// use lora_core::{count_parameters, mark_all_as_trainable, LoraConfig, LoraLinear};
///
/// let device = Default::default();
/// let layer = LoraLinear::<Autodiff<NdArray>>::from_linear(
///     LinearConfig::new(8, 8).init(&device),
///     &LoraConfig::new(2, 4.0),
/// )
/// .unwrap();
/// assert!(count_parameters(&layer).trainable < count_parameters(&layer).total);
/// let layer = mark_all_as_trainable(layer);
/// assert_eq!(count_parameters(&layer).trainable, count_parameters(&layer).total);
/// ```
pub fn mark_all_as_trainable<B: Backend, M: Module<B>>(module: M) -> M {
    module.map(&mut Unfreezer)
}

struct Unfreezer;

impl<B: Backend> ModuleMapper<B> for Unfreezer {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        param.set_require_grad(true)
    }
}

struct Freezer {
    path: Vec<(String, String)>,
    bias: LoraBias,
}

impl<B: Backend> ModuleMapper<B> for Freezer {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if self.path.iter().any(|(_, c)| c == LORA_LINEAR_CONTAINER) {
            return param;
        }
        let is_bias = self.path.last().is_some_and(|(name, _)| name == "bias");
        param.set_require_grad(is_bias && self.bias == LoraBias::All)
    }
}
