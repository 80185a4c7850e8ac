//! The shape shared by this crate's one-input operations recorded on autodiff over flex (crate
//! feature `flex`): an operation names how the gradient of its output becomes the gradient of
//! its input, and [`record_unary`] records it through Burn 0.21's autodiff `Backward` API.

use std::fmt::Debug;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::tensor::backend::BackendTypes;
use burn_flex::{Flex, FlexTensor};

use crate::flex_tensor::AutodiffFlex;

/// A float tensor of the autodiff backend over flex: its value and its node in the graph.
pub(crate) type AutodiffPrimitive = <AutodiffFlex as BackendTypes>::FloatTensorPrimitive;

/// A recorded one-input operation's backward pass.
pub(crate) trait UnaryGradient: Debug + Send + Sized + 'static {
    /// What the backward pass keeps from the forward pass.
    type State: Clone + Send + Debug + 'static;

    /// The input's gradient from the output's.
    fn input_gradient(self, state: &Self::State, grad: FlexTensor) -> FlexTensor;
}

/// `output`, computed from `x` by `op`, as a tensor of the graph with `x` as its one parent;
/// `state` is kept for the backward pass only when `x` is tracked.
pub(crate) fn record_unary<Op: UnaryGradient>(
    op: Op,
    x: &AutodiffPrimitive,
    state: Op::State,
    output: FlexTensor,
) -> AutodiffPrimitive {
    match Recorded(op)
        .prepare::<NoCheckpointing>([x.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

/// The `Backward` step of a [`UnaryGradient`].
#[derive(Debug)]
struct Recorded<Op>(Op);

impl<Op: UnaryGradient> Backward<Flex, 1> for Recorded<Op> {
    type State = Op::State;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        _checkpointer: &mut Checkpointer,
    ) {
        let [Some(parent)] = ops.parents else {
            return;
        };
        let grad = grads.consume::<Flex>(&ops.node);
        grads.register::<Flex>(parent.id, self.0.input_gradient(&ops.state, grad));
    }
}
