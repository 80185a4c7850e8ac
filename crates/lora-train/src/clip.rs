//! Global gradient-norm clipping (PyTorch's `clip_grad_norm_`), which Burn's per-parameter
//! clipping does not do.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;

/// Scales every gradient of `module` in `grads` by `max_norm / total_norm` when the L2 norm
/// over all of them exceeds `max_norm`. Returns the norm before clipping.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) -> f64 {
    let mut squares = SquareSum::<B> { grads, total: None };
    module.visit(&mut squares);
    let norm = squares
        .total
        .map(|t| t.into_scalar())
        .map(|v| burn::tensor::ElementConversion::elem::<f64>(v).sqrt())
        .unwrap_or(0.0);
    if norm > max_norm && norm.is_finite() {
        let factor = max_norm / (norm + 1e-6);
        module.visit(&mut Scale::<B> {
            grads,
            factor,
            _b: std::marker::PhantomData,
        });
    }
    norm
}

struct SquareSum<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquareSum<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let sum = grad.square().sum();
            self.total = Some(match self.total.take() {
                Some(total) => total + sum,
                None => sum,
            });
        }
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    _b: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads
                .register::<B::InnerBackend, D>(param.id, grad.mul_scalar(self.factor));
        }
    }
}
