//! The keys of `adapter_model.safetensors`: module paths and the role of each tensor.

/// The prefix PEFT puts before every module path in adapter files.
pub const PEFT_KEY_PREFIX: &str = "base_model.model.";

/// What a tensor of an adapter file is for, parsed from its key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum TensorRole {
    /// `lora_A.weight`, `[r, in]`.
    LoraA,
    /// `lora_B.weight`, `[out, r]`.
    LoraB,
    /// DoRA's `lora_magnitude_vector`, `[out]`.
    Magnitude,
    /// `lora_B.bias` (PEFT's `lora_bias`).
    LoraBBias,
    /// The base layer's bias (`bias = "all"` / `"lora_only"`).
    BaseBias,
    /// `lora_embedding_A`, `[r, num_embeddings]` (LoRA on an embedding table).
    EmbeddingA,
    /// `lora_embedding_B`, `[dim, r]`.
    EmbeddingB,
    /// The base layer's weight (`base_layer.weight`), which PEFT writes for targeted
    /// embedding-like layers (`embed_tokens`, `lm_head`) under `save_embedding_layers`.
    BaseWeight,
    /// The full weight of a module saved whole (`modules_to_save`), `<path>.weight`.
    ModuleWeight,
    /// Its bias, `<path>.bias`.
    ModuleBias,
    /// Anything else: an unknown key.
    Other,
}

/// Splits a file key into the module path and the tensor's role, accepting keys with or
/// without the `base_model.model.` prefix and with an adapter name left in
/// (`lora_A.default.weight`).
///
/// ```
/// use lora_peft_io::{split_key, TensorRole};
///
/// let key = "base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight";
/// assert_eq!(split_key(key, "default"), ("encoder.block.0.layer.0.SelfAttention.q".into(), TensorRole::LoraA));
/// assert_eq!(split_key("q.lora_B.default.weight", "default"), ("q".into(), TensorRole::LoraB));
/// let head = "base_model.model.lm_head.base_layer.weight";
/// assert_eq!(split_key(head, "default"), ("lm_head".into(), TensorRole::BaseWeight));
/// ```
pub fn split_key(key: &str, adapter_name: &str) -> (String, TensorRole) {
    let key = key.strip_prefix(PEFT_KEY_PREFIX).unwrap_or(key);
    let named = |suffix: &str| -> [String; 2] {
        // `lora_A.weight` or `lora_A.<adapter>.weight`
        match suffix.split_once('.') {
            Some((head, tail)) => [
                format!(".{suffix}"),
                format!(".{head}.{adapter_name}.{tail}"),
            ],
            None => [format!(".{suffix}"), format!(".{suffix}.{adapter_name}")],
        }
    };
    let roles = [
        ("lora_A.weight", TensorRole::LoraA),
        ("lora_B.weight", TensorRole::LoraB),
        ("lora_B.bias", TensorRole::LoraBBias),
        ("lora_magnitude_vector", TensorRole::Magnitude),
        ("lora_magnitude_vector.weight", TensorRole::Magnitude),
        ("lora_embedding_A", TensorRole::EmbeddingA),
        ("lora_embedding_B", TensorRole::EmbeddingB),
        ("base_layer.bias", TensorRole::BaseBias),
        ("base_layer.weight", TensorRole::BaseWeight),
    ];
    for (suffix, role) in roles {
        for candidate in named(suffix) {
            if let Some(module) = key.strip_suffix(&candidate) {
                return (module.to_string(), role);
            }
        }
    }
    (key.to_string(), TensorRole::Other)
}
