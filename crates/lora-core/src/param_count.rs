//! Trainable and total parameter counts of any Burn module, with PEFT's summary line.

use std::collections::HashSet;
use std::fmt;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Parameter counts of a module: trainable (receiving gradients) and total, each shared
/// parameter counted once.
///
/// Its `Display` is PEFT's `print_trainable_parameters` line.
///
/// ```
/// let count = lora_core::ParameterCount { trainable: 884_736, total: 248_462_592 };
/// assert_eq!(
///     count.to_string(),
///     "trainable params: 884,736 || all params: 248,462,592 || trainable%: 0.3561"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ParameterCount {
    /// Elements of the parameters that receive gradients.
    pub trainable: usize,
    /// Elements of all parameters.
    pub total: usize,
}

impl ParameterCount {
    /// The trainable share in percent (0 for a module without parameters).
    pub fn trainable_percent(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            100.0 * self.trainable as f64 / self.total as f64
        }
    }
}

impl fmt::Display for ParameterCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "trainable params: {} || all params: {} || trainable%: {:.4}",
            group_thousands(self.trainable),
            group_thousands(self.total),
            self.trainable_percent()
        )
    }
}

/// Counts the parameters of `module`: a parameter is trainable when it is tracked by autodiff,
/// so count on the autodiff backend you train with (on a plain backend nothing is trainable).
///
/// ```
/// use burn::backend::{Autodiff, NdArray};
/// use burn::nn::LinearConfig;
/// use lora_core::{count_parameters, LoraConfig, LoraLinear};
///
/// let device = Default::default();
/// let base = LinearConfig::new(8, 8).init::<Autodiff<NdArray>>(&device);
/// let layer = LoraLinear::from_linear(base, &LoraConfig::new(2, 4.0)).unwrap();
/// let count = count_parameters(&layer);
/// assert_eq!(count.trainable, 2 * 8 + 2 * 8);
/// assert_eq!(count.total, 8 * 8 + 8 + 32);
/// ```
pub fn count_parameters<B: Backend, M: Module<B>>(module: &M) -> ParameterCount {
    let mut counter = Counter {
        seen: HashSet::new(),
        count: ParameterCount::default(),
    };
    module.visit(&mut counter);
    counter.count
}

struct Counter {
    seen: HashSet<ParamId>,
    count: ParameterCount,
}

impl<B: Backend> ModuleVisitor<B> for Counter {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if !self.seen.insert(param.id) {
            return;
        }
        let tensor = param.val();
        let elements = tensor.shape().num_elements();
        self.count.total += elements;
        if tensor.is_require_grad() {
            self.count.trainable += elements;
        }
    }

    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, burn::tensor::Int>>) {
        if self.seen.insert(param.id) {
            self.count.total += param.val().shape().num_elements();
        }
    }

    fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, burn::tensor::Bool>>) {
        if self.seen.insert(param.id) {
            self.count.total += param.val().shape().num_elements();
        }
    }
}

fn group_thousands(value: usize) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::group_thousands;

    #[test]
    fn thousands_are_grouped_like_python() {
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1000), "1,000");
        assert_eq!(group_thousands(248_462_592), "248,462,592");
    }
}
