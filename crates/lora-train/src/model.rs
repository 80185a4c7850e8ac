//! What the trainer needs of a model.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use lora_core::LoraModule;

use crate::data::Seq2SeqBatch;
use crate::TrainError;

/// A sequence-to-sequence model the [`Trainer`](crate::Trainer) can fine-tune: a Burn module
/// with LoRA layers and a mean token loss on a padded batch. It is `Sync`, so that the trainer
/// can run its forward and backward passes on the CPU backend's compute threads
/// ([`lora_core::on_compute_threads`]).
///
/// The `t5` feature implements it for [`lora_t5::T5ForConditionalGeneration`]; another model
/// implements it the same way:
///
/// ```
/// # #[cfg(feature = "t5")] {
/// use burn::backend::NdArray;
/// use lora_train::data::{Seq2SeqCollator, TokenizedExample};
/// use lora_train::Seq2SeqModel;
///
/// let config = lora_t5::T5Config { vocab_size: 16, d_model: 8, d_kv: 4, num_heads: 2, d_ff: 16,
///     num_layers: 1, num_decoder_layers: 1, ..Default::default() };
/// let model = lora_t5::T5ForConditionalGeneration::<NdArray>::new(&config, &Default::default());
/// let collator = Seq2SeqCollator { max_source_len: 8, max_target_len: 8, pad_id: 0 };
/// let example = TokenizedExample { source: vec![4, 5, 1], target: vec![6, 1] };
/// let batch = collator.collate(&[example], &model.device()).unwrap();
/// assert!(model.seq2seq_loss(batch).unwrap().into_scalar() > 0.0);
/// assert_eq!(model.vocab_size(), 16);
/// # }
/// ```
pub trait Seq2SeqModel<B: Backend>: Module<B> + LoraModule<B> + Sync {
    /// The device the model's parameters live on (where batches are built).
    fn device(&self) -> B::Device;

    /// The number of token ids the model knows: the trainer refuses examples holding an id
    /// at or above it before the first step, so the loss never sees one.
    fn vocab_size(&self) -> usize;

    /// The mean cross-entropy over the batch's labels that are not
    /// [`IGNORE_INDEX`](lora_core::IGNORE_INDEX).
    ///
    /// # Shapes
    /// The batch's `[batch, source_len]` ids and mask and `[batch, target_len]` labels; returns
    /// `[1]`.
    ///
    /// # Errors
    /// The model's own refusal of the batch (labels it cannot score), as
    /// [`TrainError::Model`].
    fn seq2seq_loss(&self, batch: Seq2SeqBatch<B>) -> Result<Tensor<B, 1>, TrainError>;

    /// One mean cross-entropy per group of samples (`[groups]`): sample `i` belongs to group
    /// `sample_groups[i]`, the groups are `0..=max`, and group `g`'s value is the mean over its
    /// own kept labels, with a gradient that reaches only its own samples. The
    /// [`ConcurrentTrainer`](crate::ConcurrentTrainer) trains one adapter per group this way.
    ///
    /// # Errors
    /// As [`seq2seq_loss`](Self::seq2seq_loss), and a refusal of groups that do not match the
    /// batch (one per sample, each group holding a kept label).
    fn seq2seq_group_losses(
        &self,
        batch: Seq2SeqBatch<B>,
        sample_groups: &[usize],
    ) -> Result<Tensor<B, 1>, TrainError>;
}

#[cfg(feature = "t5")]
impl<B: Backend> Seq2SeqModel<B> for lora_t5::T5ForConditionalGeneration<B> {
    fn device(&self) -> B::Device {
        self.shared.weight.device()
    }

    fn vocab_size(&self) -> usize {
        self.config.vocab_size
    }

    fn seq2seq_loss(&self, batch: Seq2SeqBatch<B>) -> Result<Tensor<B, 1>, TrainError> {
        Ok(self.loss(batch.input_ids, batch.attention_mask, batch.labels)?)
    }

    fn seq2seq_group_losses(
        &self,
        batch: Seq2SeqBatch<B>,
        sample_groups: &[usize],
    ) -> Result<Tensor<B, 1>, TrainError> {
        Ok(self.group_losses(
            batch.input_ids,
            batch.attention_mask,
            batch.labels,
            sample_groups,
        )?)
    }
}
