//! The named inputs and outputs of a T5 forward pass (burn-nn's `MhaInput` / `MhaOutput` idea).

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// The inputs of [`T5ForConditionalGeneration::forward`](crate::T5ForConditionalGeneration::forward):
/// transformers' `input_ids`, `attention_mask` and `decoder_input_ids`.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Int, Tensor};
/// use lora_t5::Seq2SeqInput;
///
/// let device = Default::default();
/// let ids = Tensor::<NdArray, 2, Int>::from_ints([[5, 6, 0]], &device);
/// let decoder = Tensor::<NdArray, 2, Int>::from_ints([[0, 9]], &device);
/// let input = Seq2SeqInput::new(ids, decoder)
///     .attention_mask(Tensor::from_ints([[1, 1, 0]], &device));
/// assert_eq!(input.attention_mask.dims(), [1, 3]);
/// ```
#[derive(Debug, Clone)]
pub struct Seq2SeqInput<B: Backend> {
    /// Source token ids, `[batch, source_len]`.
    pub input_ids: Tensor<B, 2, Int>,
    /// 1 for a source token, 0 for padding, `[batch, source_len]`.
    pub attention_mask: Tensor<B, 2, Int>,
    /// The decoder's input ids, `[batch, target_len]` (for training, the labels shifted right:
    /// [`shift_right`](crate::T5ForConditionalGeneration::shift_right)).
    pub decoder_input_ids: Tensor<B, 2, Int>,
}

impl<B: Backend> Seq2SeqInput<B> {
    /// Inputs that attend to every source token.
    pub fn new(input_ids: Tensor<B, 2, Int>, decoder_input_ids: Tensor<B, 2, Int>) -> Self {
        let attention_mask = Tensor::ones(input_ids.shape(), &input_ids.device());
        Self {
            input_ids,
            attention_mask,
            decoder_input_ids,
        }
    }

    /// Sets the attention mask (1 for tokens, 0 for padding), `[batch, source_len]`.
    pub fn attention_mask(mut self, attention_mask: Tensor<B, 2, Int>) -> Self {
        self.attention_mask = attention_mask;
        self
    }
}

/// What [`T5ForConditionalGeneration::forward`](crate::T5ForConditionalGeneration::forward)
/// gives (transformers' `Seq2SeqLMOutput` without a loss).
#[derive(Debug, Clone)]
pub struct Seq2SeqOutput<B: Backend> {
    /// Next-token logits, `[batch, target_len, vocab_size]`.
    pub logits: Tensor<B, 3>,
    /// The encoder's output, `[batch, source_len, d_model]`.
    pub encoder_last_hidden_state: Tensor<B, 3>,
}

/// The loss and logits of
/// [`forward_with_labels`](crate::T5ForConditionalGeneration::forward_with_labels).
#[derive(Debug, Clone)]
pub struct Seq2SeqLossOutput<B: Backend> {
    /// Mean cross-entropy over the labels that are not [`IGNORE_INDEX`](crate::IGNORE_INDEX),
    /// `[1]`.
    pub loss: Tensor<B, 1>,
    /// `[batch, target_len, vocab_size]`.
    pub logits: Tensor<B, 3>,
}
