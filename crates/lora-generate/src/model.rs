//! What generation needs of a model.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

/// The special token ids of a model, which a [`GenerationConfig`](crate::GenerationConfig) may
/// override.
///
/// ```
/// let t5 = lora_generate::SpecialTokens { decoder_start: 0, eos: vec![1], pad: 0 };
/// assert_eq!(t5.eos, [1]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecialTokens {
    /// The first decoder input of every sequence.
    pub decoder_start: u32,
    /// The end-of-sequence ids (any of them ends a sequence).
    pub eos: Vec<u32>,
    /// The id written after a sequence has ended.
    pub pad: u32,
}

/// An encoder-decoder model that [`generate`](crate::generate) can decode: encode the prompts
/// once, then decode one token per row and step on a key/value cache that beam search
/// reorders.
///
/// See the crate documentation for an implementation.
pub trait EncoderDecoderModel<B: Backend> {
    /// Everything the decoder keeps between steps: the encoder output or the cross-attention
    /// keys and values, and the self-attention cache.
    type State;

    /// The number of scores per row of [`step`](Self::step).
    fn vocab_size(&self) -> usize;

    /// The model's own special token ids.
    fn special_tokens(&self) -> SpecialTokens;

    /// Encodes the prompts and gives the state for decoding their rows.
    ///
    /// # Shapes
    /// - `input_ids`, `attention_mask`: `[batch, source_len]`, ids checked by the caller
    fn encode(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Self::State;

    /// Decodes the next token of every row after everything in `state`, which it extends.
    ///
    /// # Shapes
    /// - `tokens`: `[rows, 1]`, the last token of each row
    /// - output: `[rows, vocab_size]` logits
    fn step(&self, tokens: Tensor<B, 2, Int>, state: &mut Self::State) -> Tensor<B, 2>;

    /// Decodes like [`step`](Self::step), for greedy search: each row's most likely next token
    /// where the model can find it without computing every logit, else the logits.
    ///
    /// [`NextTokens::MostLikely`] must hold, for each row, the index greedy search would take
    /// from `step`'s logits with the `(row, token)` pairs of `banned` set to `-inf`: the first
    /// of the largest. It may be given only when those logits are finite and their spread does
    /// not overflow (the checks [`generate`](crate::generate) makes on logits); in every other
    /// case give [`NextTokens::Logits`], as the default does, and generation carries on from
    /// them as after `step`.
    ///
    /// # Shapes
    /// - `tokens`: `[rows, 1]`, the last token of each row
    fn step_most_likely(
        &self,
        tokens: Tensor<B, 2, Int>,
        state: &mut Self::State,
        banned: &[(usize, u32)],
    ) -> NextTokens<B> {
        let _ = banned;
        NextTokens::Logits(self.step(tokens, state))
    }

    /// The state whose row `i` is row `rows[i]` of `state` (beam search's reordering, and the
    /// expansion of each prompt to its beams or returned sequences).
    fn reorder(&self, state: Self::State, rows: Tensor<B, 1, Int>) -> Self::State;
}

/// What [`EncoderDecoderModel::step_most_likely`] gives.
///
/// ```
/// use burn::backend::NdArray;
/// use lora_generate::NextTokens;
///
/// let picked = NextTokens::<NdArray>::MostLikely(vec![7]);
/// assert!(matches!(picked, NextTokens::MostLikely(ref t) if t == &[7]));
/// ```
#[derive(Debug, Clone)]
pub enum NextTokens<B: Backend> {
    /// Each row's most likely next token.
    MostLikely(Vec<u32>),
    /// The logits `[rows, vocab_size]`, as [`step`](EncoderDecoderModel::step) gives them.
    Logits(Tensor<B, 2>),
}
