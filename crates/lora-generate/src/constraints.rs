//! Length and token constraints (transformers' `MinNewTokensLengthLogitsProcessor`,
//! `ForcedBOSTokenLogitsProcessor`, `ForcedEOSTokenLogitsProcessor`,
//! `SuppressTokensLogitsProcessor`, `SuppressTokensAtBeginLogitsProcessor`).

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::token_mask::{every_row, force};
use crate::{GenerationError, LogitsProcessor, StepContext, TokenBans};

/// End-of-sequence is forbidden before `min_new_tokens` new tokens.
///
/// ```
/// let processor = lora_generate::MinNewTokens::new(4, vec![1]);
/// # let _ = processor;
/// ```
#[derive(Debug, Clone)]
pub struct MinNewTokens {
    min_new_tokens: usize,
    eos: Vec<u32>,
}

impl MinNewTokens {
    /// At least `min_new_tokens` before any of `eos`.
    pub fn new(min_new_tokens: usize, eos: Vec<u32>) -> Self {
        Self {
            min_new_tokens,
            eos,
        }
    }
}

impl TokenBans for MinNewTokens {
    /// The end-of-sequence ids in every row while too few tokens are out.
    fn banned(&self, context: &StepContext<'_>) -> Vec<(usize, u32)> {
        if context.new_tokens >= self.min_new_tokens {
            return Vec::new();
        }
        every_row(context.rows(), &self.eos).collect()
    }
}

/// Forces one of its tokens as the first new token (forced BOS) or as the last one the length
/// allows (forced EOS).
///
/// ```
/// use lora_generate::ForcedTokens;
///
/// let bos = ForcedTokens::first(250_004);
/// let eos = ForcedTokens::last(vec![1]);
/// # let _ = (bos, eos);
/// ```
#[derive(Debug, Clone)]
pub struct ForcedTokens {
    tokens: Vec<u32>,
    at_last: bool,
}

impl ForcedTokens {
    /// `token` as the first new token.
    pub fn first(token: u32) -> Self {
        Self {
            tokens: vec![token],
            at_last: false,
        }
    }

    /// One of `tokens` as the last new token `max_new_tokens` allows.
    pub fn last(tokens: Vec<u32>) -> Self {
        Self {
            tokens,
            at_last: true,
        }
    }
}

impl<B: Backend> LogitsProcessor<B> for ForcedTokens {
    fn process(
        &self,
        context: &StepContext<'_>,
        scores: Tensor<B, 2>,
    ) -> Result<Tensor<B, 2>, GenerationError> {
        if context.new_tokens != self.step(context) {
            return Ok(scores);
        }
        Ok(force(scores, &self.tokens, context.traffic))
    }

    fn bans(&self, context: &StepContext<'_>) -> Option<Vec<(usize, u32)>> {
        (context.new_tokens != self.step(context)).then(Vec::new)
    }
}

impl ForcedTokens {
    /// The new token this processor forces.
    fn step(&self, context: &StepContext<'_>) -> usize {
        if self.at_last {
            context.max_new_tokens - 1
        } else {
            0
        }
    }
}

/// Tokens never generated.
///
/// ```
/// let processor = lora_generate::SuppressTokens::new(vec![2, 3]);
/// # let _ = processor;
/// ```
#[derive(Debug, Clone)]
pub struct SuppressTokens {
    tokens: Vec<u32>,
}

impl SuppressTokens {
    /// Suppresses `tokens` at every step.
    pub fn new(tokens: Vec<u32>) -> Self {
        Self { tokens }
    }
}

impl TokenBans for SuppressTokens {
    /// The suppressed tokens in every row.
    fn banned(&self, context: &StepContext<'_>) -> Vec<(usize, u32)> {
        every_row(context.rows(), &self.tokens).collect()
    }
}

/// Tokens not generated as new token number `at` (from 0).
///
/// ```
/// let processor = lora_generate::SuppressTokensAtBegin::new(vec![1], 0);
/// # let _ = processor;
/// ```
#[derive(Debug, Clone)]
pub struct SuppressTokensAtBegin {
    tokens: Vec<u32>,
    at: usize,
}

impl SuppressTokensAtBegin {
    /// Suppresses `tokens` at new token `at`.
    pub fn new(tokens: Vec<u32>, at: usize) -> Self {
        Self { tokens, at }
    }
}

impl TokenBans for SuppressTokensAtBegin {
    /// The suppressed tokens in every row at new token `at`.
    fn banned(&self, context: &StepContext<'_>) -> Vec<(usize, u32)> {
        if context.new_tokens != self.at {
            return Vec::new();
        }
        every_row(context.rows(), &self.tokens).collect()
    }
}
