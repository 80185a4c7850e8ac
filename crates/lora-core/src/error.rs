//! Typed errors of the LoRA layer.

/// Everything that can go wrong when configuring, editing or merging a LoRA layer.
///
/// ```
/// use lora_core::{LoraConfig, LoraError};
///
/// let err = LoraConfig::new(0, 8.0).validate().unwrap_err();
/// assert!(matches!(err, LoraError::InvalidRank { r: 0 }));
/// ```
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LoraError {
    /// The rank `r` must be at least 1.
    #[error("invalid LoRA config: `r` must be at least 1, got {r}")]
    InvalidRank {
        /// The rank that was given.
        r: usize,
    },
    /// `lora_dropout` must lie in `[0, 1)`.
    #[error("invalid LoRA config: `lora_dropout` must be in [0, 1), got {dropout}")]
    InvalidDropout {
        /// The dropout probability that was given.
        dropout: f64,
    },
    /// `lora_alpha` must be a finite number whose scaling (`lora_alpha / r`, or `/ √r` with
    /// rsLoRA) is a finite `f32`, the type the update is multiplied in.
    #[error(
        "invalid LoRA config: `lora_alpha` must be finite and give a scaling within f32, got {alpha}"
    )]
    InvalidAlpha {
        /// The alpha that was given.
        alpha: f64,
    },
    /// An adapter with this name already exists in the layer.
    #[error("an adapter named `{name}` already exists in this layer")]
    DuplicateAdapter {
        /// The name that is already taken.
        name: String,
    },
    /// The reserved name for "base model only" cannot name an adapter.
    #[error("`{name}` is reserved for the base model and cannot name an adapter")]
    ReservedAdapterName {
        /// The reserved name.
        name: String,
    },
    /// No adapter with this name exists in the layer.
    #[error("no adapter named `{name}` in this layer (available: {available:?})")]
    UnknownAdapter {
        /// The name that was asked for.
        name: String,
        /// The adapters the layer has.
        available: Vec<String>,
    },
    /// The adapter is merged into the base weight; unmerge first.
    #[error("adapter `{name}` is merged into the base weight: unmerge it first")]
    AdapterMerged {
        /// The merged adapter.
        name: String,
    },
    /// Merging would put non-finite values into the base weight.
    #[error("NaNs detected in the merged weights. The adapter `{name}` seems to be broken")]
    NonFiniteMerge {
        /// The adapter whose merge was refused.
        name: String,
    },
    /// Only one adapter per layer may train the base bias.
    #[error(
        "adapter `{name}` asks for bias mode `{bias}`, but adapter `{other}` already trains the bias; only one adapter per layer may"
    )]
    MultipleBiasAdapters {
        /// The adapter being added.
        name: String,
        /// Its bias mode.
        bias: String,
        /// The adapter that already trains the bias.
        other: String,
    },
    /// A mixed-batch forward needs exactly one adapter name per sample.
    #[error("mixed-batch forward needs one adapter name per sample: batch size {batch}, got {names} names")]
    BatchSizeMismatch {
        /// The batch size (first dimension of the input).
        batch: usize,
        /// How many names were given.
        names: usize,
    },
    /// The operation is not possible while adapters are merged.
    #[error("{operation} is not possible while adapters are merged ({merged:?}): unmerge first")]
    MergedLayer {
        /// What was attempted.
        operation: &'static str,
        /// The merged adapters.
        merged: Vec<String>,
    },
    /// The operation is not possible while samples are routed to adapters
    /// (`set_sample_adapters`).
    #[error(
        "{operation} is not possible while samples are routed to adapters: clear the routing first"
    )]
    RoutedLayer {
        /// What was attempted.
        operation: &'static str,
    },
    /// The operation is not supported for adapters of a variant (such as DoRA).
    #[error("{operation} is not supported for the {variant} adapter `{name}`")]
    UnsupportedVariant {
        /// What was attempted.
        operation: &'static str,
        /// The variant's name.
        variant: &'static str,
        /// The adapter.
        name: String,
    },
    /// A layer holds module copies (PEFT's `modules_to_save`) and LoRA adapters at once.
    #[error("adapter `{name}` cannot join this layer: it holds `{other}` of the other kind (a layer saved whole by `modules_to_save` is not a LoRA target, and a LoRA target is not saved whole)")]
    MixedModuleCopy {
        /// The adapter being added.
        name: String,
        /// An adapter of the other kind the layer holds.
        other: String,
    },
    /// The operation is not possible on a layer holding module copies (`modules_to_save`).
    #[error("{operation} is not supported on a layer holding module copies (`modules_to_save`)")]
    ModuleCopyUnsupported {
        /// What was attempted.
        operation: &'static str,
    },
    /// An adapter was given a DoRA magnitude although its config does not have `use_dora`.
    #[error("adapter `{name}` has a DoRA magnitude but its config has `use_dora: false`")]
    UnexpectedMagnitude {
        /// The adapter.
        name: String,
    },
    /// The weighted combination was given no adapters, or weights that do not match them.
    #[error("weighted adapter: {reason}")]
    InvalidWeightedAdapter {
        /// What is wrong.
        reason: String,
    },
    /// Rows grouped for per-group mean losses ([`LossGroups`](crate::LossGroups)) that do not
    /// fit their labels.
    #[error("loss groups: {reason}")]
    InvalidLossGroups {
        /// What does not fit.
        reason: String,
    },
    /// A checked merge changed the model's outputs more than allowed, or gave non-finite ones.
    #[error("merge check failed: {reason}")]
    MergeCheckFailed {
        /// The differences found and the limit.
        reason: String,
    },
    /// The operation needs a floating-point base weight, but it is stored quantized.
    #[error("{operation} is not possible: the base weight is quantized (keep a float copy of the model to merge)")]
    QuantizedBase {
        /// What was attempted.
        operation: &'static str,
    },
    /// Quantized base weights are for inference: Burn's autodiff backend cannot differentiate
    /// through quantized tensors.
    #[error("int8 base weights are for inference only: quantize the inference model (`model.valid()`), not the autodiff one")]
    QuantizedTraining,
    /// The quantization block size does not divide the layer's output dimension.
    #[error("quantization block size {block} does not divide the output dimension {d_output}")]
    QuantizationBlock {
        /// The block size that was asked for.
        block: usize,
        /// The layer's output features.
        d_output: usize,
    },
    /// A tensor has the wrong shape.
    #[error("{what}: expected shape {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// Which tensor.
        what: String,
        /// The expected shape.
        expected: Vec<usize>,
        /// The shape that was found.
        found: Vec<usize>,
    },
    /// A model-wide operation failed in one layer.
    #[error("{path}: {source}")]
    InLayer {
        /// The layer's module path.
        path: String,
        /// The layer's error.
        source: Box<LoraError>,
    },
    /// A tensor's values could not be read back from the device.
    #[error("could not read tensor data: {reason}")]
    TensorData {
        /// The backend's message.
        reason: String,
    },
}
