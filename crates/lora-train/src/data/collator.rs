//! Batching tokenized source/target pairs for sequence-to-sequence training.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use lora_core::IGNORE_INDEX;

use crate::TrainError;

/// A tokenized training pair; both sequences end in the end-of-sequence id, as a T5
/// tokenizer's `encode` leaves them.
///
/// ```
/// let example = lora_train::data::TokenizedExample { source: vec![5, 6, 1], target: vec![7, 1] };
/// assert_eq!(example.target.last(), Some(&1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedExample {
    /// Encoder token ids.
    pub source: Vec<u32>,
    /// Label token ids.
    pub target: Vec<u32>,
}

#[cfg(feature = "t5")]
impl TokenizedExample {
    /// Encodes `source` and `target` with a T5 tokenizer (each gets its `</s>`).
    ///
    /// # Errors
    /// The tokenizer's failure on either text, as [`TrainError::Model`].
    pub fn encode(
        tokenizer: &lora_t5::T5Tokenizer,
        source: &str,
        target: &str,
    ) -> Result<Self, TrainError> {
        Ok(Self {
            source: tokenizer.encode(source)?,
            target: tokenizer.encode(target)?,
        })
    }

    /// [`encode`](Self::encode) for batches of `collator`: each text is cut before tokenization
    /// at what its maximum length of tokens can cover
    /// ([`T5Tokenizer::encode_bounded`](lora_t5::T5Tokenizer::encode_bounded)), so a huge record
    /// costs what a short one does, and the collator's truncation gives what it gives for the
    /// whole text.
    ///
    /// # Errors
    /// As [`encode`](Self::encode).
    pub fn encode_for(
        tokenizer: &lora_t5::T5Tokenizer,
        source: &str,
        target: &str,
        collator: &Seq2SeqCollator,
    ) -> Result<Self, TrainError> {
        Ok(Self {
            source: tokenizer.encode_bounded(source, collator.max_source_len)?.0,
            target: tokenizer.encode_bounded(target, collator.max_target_len)?.0,
        })
    }
}

/// Turns [`TokenizedExample`]s into a padded batch.
///
/// Padding is dynamic: every batch is as long as its longest (truncated) sequence. Sequences
/// longer than the maximum keep their first `max − 1` tokens and their last token (the
/// `</s>`), and the batch counts how many were cut, so the caller can report it.
///
/// ```
/// use burn::backend::NdArray;
/// use lora_train::data::{Seq2SeqCollator, TokenizedExample};
///
/// let collator = Seq2SeqCollator { max_source_len: 3, max_target_len: 8, pad_id: 0 };
/// let batch = collator
///     .collate::<NdArray>(
///         &[
///             TokenizedExample { source: vec![5, 6, 7, 8, 1], target: vec![9, 1] },
///             TokenizedExample { source: vec![5, 1], target: vec![9, 10, 11, 1] },
///         ],
///         &Default::default(),
///     )
///     .unwrap();
/// let ids = batch.input_ids.into_data().convert::<i64>().to_vec::<i64>().unwrap();
/// assert_eq!(ids, [5, 6, 1, 5, 1, 0]);
/// let labels = batch.labels.into_data().convert::<i64>().to_vec::<i64>().unwrap();
/// assert_eq!(labels, [9, 1, -100, -100, 9, 10, 11, 1]);
/// assert_eq!(batch.truncated_sources, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seq2SeqCollator {
    /// Longest encoder input, `</s>` included (at least 1).
    pub max_source_len: usize,
    /// Longest label sequence, `</s>` included (at least 1).
    pub max_target_len: usize,
    /// Token id padding `input_ids` (T5: 0).
    pub pad_id: u32,
}

/// A padded batch from [`Seq2SeqCollator::collate`].
#[derive(Debug, Clone)]
pub struct Seq2SeqBatch<B: Backend> {
    /// `[batch, source_len]` encoder ids, padded with `pad_id`.
    pub input_ids: Tensor<B, 2, Int>,
    /// `[batch, source_len]`: 1 on tokens, 0 on padding.
    pub attention_mask: Tensor<B, 2, Int>,
    /// `[batch, target_len]` label ids, padded with [`IGNORE_INDEX`].
    pub labels: Tensor<B, 2, Int>,
    /// Examples whose source was truncated.
    pub truncated_sources: usize,
    /// Examples whose target was truncated.
    pub truncated_targets: usize,
    /// Examples with the source, the target or both truncated.
    pub truncated_examples: usize,
}

impl Seq2SeqCollator {
    /// Pads and truncates `examples` into a batch on `device`. Fails on an empty batch, an
    /// empty sequence or a maximum length of 0.
    ///
    /// # Errors
    /// [`TrainError::InvalidDataConfig`] for a maximum length of 0, and
    /// [`TrainError::InvalidInput`] for an empty batch or an empty source or target.
    pub fn collate<B: Backend>(
        &self,
        examples: &[TokenizedExample],
        device: &B::Device,
    ) -> Result<Seq2SeqBatch<B>, TrainError> {
        if self.max_source_len == 0 || self.max_target_len == 0 {
            return Err(TrainError::InvalidDataConfig {
                reason: format!(
                    "maximum lengths must be at least 1 (source {}, target {})",
                    self.max_source_len, self.max_target_len
                ),
            });
        }
        if examples.is_empty() {
            return Err(TrainError::InvalidInput {
                reason: "cannot collate an empty batch".into(),
            });
        }
        let mut sources = Vec::with_capacity(examples.len());
        let mut targets = Vec::with_capacity(examples.len());
        let (mut truncated_sources, mut truncated_targets, mut truncated_examples) = (0, 0, 0);
        for (i, example) in examples.iter().enumerate() {
            if example.source.is_empty() || example.target.is_empty() {
                return Err(TrainError::InvalidInput {
                    reason: format!("example {i} has an empty source or target"),
                });
            }
            let (source, cut_source) = truncate_keeping_last(&example.source, self.max_source_len);
            let (target, cut_target) = truncate_keeping_last(&example.target, self.max_target_len);
            truncated_sources += usize::from(cut_source);
            truncated_targets += usize::from(cut_target);
            truncated_examples += usize::from(cut_source || cut_target);
            sources.push(source);
            targets.push(target);
        }
        let (input_ids, attention_mask) = pad(&sources, self.pad_id as i64, true);
        let (labels, _) = pad(&targets, IGNORE_INDEX, false);
        let batch = examples.len();
        let tensor = |values: Vec<i64>| {
            let length = values.len() / batch;
            Tensor::<B, 2, Int>::from_data(TensorData::new(values, [batch, length]), device)
        };
        Ok(Seq2SeqBatch {
            input_ids: tensor(input_ids),
            attention_mask: tensor(attention_mask),
            labels: tensor(labels),
            truncated_sources,
            truncated_targets,
            truncated_examples,
        })
    }
}

/// The first `max − 1` ids and the last one, when `ids` is longer than `max`.
fn truncate_keeping_last(ids: &[u32], max: usize) -> (Vec<u32>, bool) {
    match ids.split_last() {
        Some((last, head)) if ids.len() > max => {
            let mut kept = head[..max - 1].to_vec();
            kept.push(*last);
            (kept, true)
        }
        _ => (ids.to_vec(), false),
    }
}

/// Row-major values padded to the longest sequence with `fill`, and the 0/1 mask when asked.
fn pad(sequences: &[Vec<u32>], fill: i64, with_mask: bool) -> (Vec<i64>, Vec<i64>) {
    let length = sequences.iter().map(Vec::len).max().unwrap_or(0);
    let mut values = Vec::with_capacity(sequences.len() * length);
    let mut mask = Vec::with_capacity(if with_mask { values.capacity() } else { 0 });
    for sequence in sequences {
        values.extend(sequence.iter().map(|&id| id as i64));
        values.extend(std::iter::repeat_n(fill, length - sequence.len()));
        if with_mask {
            mask.extend(std::iter::repeat_n(1, sequence.len()));
            mask.extend(std::iter::repeat_n(0, length - sequence.len()));
        }
    }
    (values, mask)
}
