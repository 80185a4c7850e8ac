//! Repetition penalties (transformers' `RepetitionPenaltyLogitsProcessor` and
//! `EncoderRepetitionPenaltyLogitsProcessor`).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::token_mask::token_mask;
use crate::{GenerationError, LogitsProcessor, StepContext};

/// `scores` where `mask`'s tokens are penalised: divided by `penalty` when positive,
/// multiplied when negative.
fn penalise<B: Backend>(
    scores: Tensor<B, 2>,
    tokens: impl IntoIterator<Item = (usize, u32)>,
    penalty: f32,
    context: &StepContext<'_>,
) -> Tensor<B, 2> {
    let Some(mask) = token_mask(&scores, tokens, context.traffic) else {
        return scores;
    };
    let negative = scores.clone().lower_elem(0.0);
    let penalised = scores
        .clone()
        .div_scalar(penalty)
        .mask_where(negative, scores.clone().mul_scalar(penalty));
    scores.mask_where(mask, penalised)
}

/// Makes the tokens already in a row's decoder sequence (the start token included, as in
/// transformers) less likely: scores divided by `penalty` when positive, multiplied when
/// negative.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_generate::{HostTraffic, LogitsProcessor, RepetitionPenalty, StepContext};
///
/// let traffic = HostTraffic::default();
/// let (sequences, encoder_ids) = (vec![vec![0, 2]], vec![vec![]]);
/// let context = StepContext { sequences: &sequences, encoder_ids: &encoder_ids, new_tokens: 1, max_new_tokens: 5, traffic: &traffic };
/// let scores = Tensor::<NdArray, 2>::from_floats([[1.0, 1.0, -1.0, 1.0]], &Default::default());
/// let out = RepetitionPenalty::new(2.0).process(&context, scores).unwrap();
/// assert_eq!(out.into_data().to_vec::<f32>().unwrap(), vec![0.5, 1.0, -2.0, 1.0]);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RepetitionPenalty {
    penalty: f32,
}

impl RepetitionPenalty {
    /// A penalty `> 0` (above 1 discourages repetition).
    pub fn new(penalty: f32) -> Self {
        Self { penalty }
    }
}

impl<B: Backend> LogitsProcessor<B> for RepetitionPenalty {
    fn process(
        &self,
        context: &StepContext<'_>,
        scores: Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>, GenerationError> {
        let tokens = context
            .sequences
            .iter()
            .enumerate()
            .flat_map(|(row, s)| s.iter().map(move |t| (row, *t)));
        Ok(penalise(scores, tokens, self.penalty, context))
    }
}

/// Makes the tokens of a row's encoder input more likely (transformers' hallucination
/// penalty): the repetition penalty with `1 / penalty`.
///
/// ```
/// let penalty = lora_generate::EncoderRepetitionPenalty::new(1.5);
/// # let _ = penalty;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct EncoderRepetitionPenalty {
    inverse: f32,
}

impl EncoderRepetitionPenalty {
    /// A penalty `> 0` (above 1 favours the encoder's tokens).
    pub fn new(penalty: f32) -> Self {
        Self {
            inverse: 1.0 / penalty,
        }
    }
}

impl<B: Backend> LogitsProcessor<B> for EncoderRepetitionPenalty {
    fn process(
        &self,
        context: &StepContext<'_>,
        scores: Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>, GenerationError> {
        let tokens = context
            .encoder_ids
            .iter()
            .enumerate()
            .flat_map(|(row, s)| s.iter().map(move |t| (row, *t)));
        Ok(penalise(scores, tokens, self.inverse, context))
    }
}
