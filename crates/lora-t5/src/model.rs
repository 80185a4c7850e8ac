//! `T5ForConditionalGeneration`: shared embedding, encoder, decoder and language-model head.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor, TensorData};
use lora_core::{
    few_rows_times_transposed, linear_cross_entropy_grouped, HeadLayout, LoraLinear, LossGroups,
};

use crate::{
    DecoderState, Seq2SeqInput, Seq2SeqLossOutput, Seq2SeqOutput, T5Config, T5Error, T5Stack,
};

pub use lora_core::IGNORE_INDEX;

/// T5 / FLAN-T5 for sequence-to-sequence generation, with every linear layer a [`LoraLinear`]
/// addressable by its Hugging Face module path (`encoder.block.0.layer.0.SelfAttention.q`,
/// ..., `lm_head`).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Int, Tensor};
/// use lora_t5::{Seq2SeqInput, T5Config, T5ForConditionalGeneration};
///
/// let config = T5Config { vocab_size: 50, d_model: 16, d_kv: 4, num_heads: 4, d_ff: 32,
///     num_layers: 1, num_decoder_layers: 1, ..T5Config::default() };
/// let device = Default::default();
/// let model = T5ForConditionalGeneration::<NdArray>::new(&config, &device);
/// let ids = Tensor::<NdArray, 2, Int>::from_ints([[5, 6, 7, 1]], &device);
/// let decoder = Tensor::<NdArray, 2, Int>::from_ints([[0, 9]], &device);
/// let input = Seq2SeqInput::new(ids, decoder);
/// model.check_input(&input).unwrap(); // where ids come from outside
/// let output = model.forward(input);
/// assert_eq!(output.logits.dims(), [1, 2, 50]);
/// assert_eq!(output.encoder_last_hidden_state.dims(), [1, 4, 16]);
/// ```
#[derive(Module, Debug)]
pub struct T5ForConditionalGeneration<B: Backend> {
    /// The token embedding shared by encoder and decoder (`shared`).
    pub shared: Embedding<B>,
    /// The encoder stack.
    pub encoder: T5Stack<B>,
    /// The decoder stack.
    pub decoder: T5Stack<B>,
    /// The language-model head when it is not tied to `shared`, or a tied head wrapped for
    /// LoRA (holding a frozen copy of `shared`).
    pub lm_head: Option<LoraLinear<B>>,
    /// The configuration.
    #[module(skip)]
    pub config: T5Config,
    /// Whether `lm_head` is a tied head wrapped for LoRA (saved tied while it equals `shared`).
    #[module(skip)]
    pub(crate) head_wrapped_from_tie: bool,
}

/// The modules a LoRA adapter targets on T5 when its `target_modules` is unset: the attention
/// query and value projections, as PEFT's `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`
/// has it for `t5` and `mt5`.
///
/// ```
/// assert_eq!(lora_t5::T5_DEFAULT_TARGET_MODULES, ["q", "v"]);
/// ```
pub const T5_DEFAULT_TARGET_MODULES: &[&str] = &["q", "v"];

impl<B: Backend> T5ForConditionalGeneration<B> {
    /// A randomly initialised model (weights normally come from
    /// [`from_pretrained`](Self::from_pretrained)). The head is tied to the embedding unless
    /// `config.tie_word_embeddings` is `Some(false)`.
    pub fn new(config: &T5Config, device: &B::Device) -> Self {
        let untied = config.tie_word_embeddings == Some(false);
        Self {
            shared: EmbeddingConfig::new(config.vocab_size, config.d_model).init(device),
            encoder: T5Stack::new(config, false, config.num_layers, device),
            decoder: T5Stack::new(config, true, config.num_decoder_layers, device),
            lm_head: untied.then(|| {
                LoraLinear::new(
                    burn::nn::LinearConfig::new(config.d_model, config.vocab_size)
                        .with_bias(false)
                        .init(device),
                )
            }),
            config: config.clone(),
            head_wrapped_from_tie: false,
        }
    }

    /// Encodes `input_ids` (`[batch, source_len]`) with `attention_mask` (1 for tokens, 0 for
    /// padding), giving `[batch, source_len, d_model]`.
    ///
    /// # Shapes
    /// - `input_ids`, `attention_mask`: `[batch, source_len]`
    /// - output: `[batch, source_len, d_model]`
    ///
    /// # Panics
    /// For ids outside the vocabulary or a mask of another shape, as Burn's modules do: check
    /// ids from outside once with [`check_source`](Self::check_source).
    pub fn encode(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Tensor<B, 3> {
        let embeddings = self.look_up(&self.encoder, input_ids);
        self.encoder.encode(embeddings, mask_bias(attention_mask))
    }

    /// The decoder state for generating from `encoder_output`: cross-attention keys and values
    /// of every decoder block, computed once.
    pub fn start_decoding(
        &self,
        encoder_output: Tensor<B, 3>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> DecoderState<B> {
        DecoderState {
            self_key_values: vec![None; self.decoder.block.len()],
            cross_key_values: self
                .decoder
                .block
                .iter()
                .map(|block| {
                    let cross = block
                        .cross_attention
                        .as_ref()
                        .expect("decoder blocks have cross-attention");
                    cross.attention.key_value(encoder_output.clone())
                })
                .collect(),
            cross_bias: mask_bias(attention_mask),
            length: 0,
            cross_run: 1,
        }
    }

    /// Decodes the next tokens `decoder_ids` (`[batch, new]`) after everything in `state`,
    /// giving logits `[batch, new, vocab]`.
    pub fn decode(
        &self,
        decoder_ids: Tensor<B, 2, Int>,
        state: &mut DecoderState<B>,
    ) -> Tensor<B, 3> {
        let hidden = self.decode_hidden(decoder_ids, state);
        self.lm_logits(hidden)
    }

    /// The decoder's output `[batch, new, d_model]` for `decoder_ids` after everything in
    /// `state`, before the head (what [`decode`](Self::decode) applies the head to).
    pub(crate) fn decode_hidden(
        &self,
        decoder_ids: Tensor<B, 2, Int>,
        state: &mut DecoderState<B>,
    ) -> Tensor<B, 3> {
        self.decoder
            .decode(self.look_up(&self.decoder, decoder_ids), state)
    }

    /// The language-model head on decoder output, scaled by `d_model^-0.5` when
    /// `config.scale_decoder_outputs`.
    pub fn lm_logits(&self, hidden: Tensor<B, 3>) -> Tensor<B, 3> {
        let hidden = self.scaled_for_head(hidden);
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => {
                // One 2-D product `hidden · Eᵀ`. Decoding (up to `FEW_ROWS_MAX` rows) reads
                // the embedding once for all its rows where the backend allows it
                // (`lora_core::few_rows_times_transposed`). Over many rows (training, scoring)
                // the product is written in `[rows, vocab]` order, so that the softmax over the
                // vocabulary reads contiguous rows (1024 rows: 146 ms against 252 ms for a
                // transposed result). In between, `(E · hiddenᵀ)ᵀ` multiplies up to 3× faster
                // on flex, which outweighs the strided softmax (`examples/kernel_shapes.rs`;
                // the two are even at about 256 rows).
                let [batch, length, d_model] = hidden.dims();
                let rows = hidden.reshape([batch * length, d_model]);
                let embedding = self.shared.weight.val();
                let few_rows = if B::ad_enabled(&rows.device()) {
                    None
                } else {
                    few_rows_times_transposed(&rows, &embedding)
                };
                let logits = if let Some(logits) = few_rows {
                    logits
                } else if batch * length >= CONTIGUOUS_LOGITS_ROWS {
                    rows.matmul(embedding.transpose())
                } else {
                    embedding.matmul(rows.transpose()).transpose()
                };
                logits.reshape([batch, length, self.config.vocab_size])
            }
        }
    }

    /// The logits for `input.decoder_input_ids` given the source, and the encoder's output.
    ///
    /// Infallible like Burn's modules: ids are not read back here. Check ids that come from
    /// outside once with [`check_input`](Self::check_input).
    ///
    /// # Shapes
    /// - `input.input_ids`, `input.attention_mask`: `[batch, source_len]`
    /// - `input.decoder_input_ids`: `[batch, target_len]`
    /// - output: logits `[batch, target_len, vocab_size]`, encoder output
    ///   `[batch, source_len, d_model]`
    ///
    /// # Panics
    /// For ids outside the vocabulary or a mask of another shape than `input_ids`.
    pub fn forward(&self, input: Seq2SeqInput<B>) -> Seq2SeqOutput<B> {
        let (hidden, encoder_last_hidden_state) = self.decoder_output(input);
        Seq2SeqOutput {
            logits: self.lm_logits(hidden),
            encoder_last_hidden_state,
        }
    }

    /// The decoder's output `[batch, target_len, d_model]` before the head, and the encoder's.
    fn decoder_output(&self, input: Seq2SeqInput<B>) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let encoded = self.encode(input.input_ids, input.attention_mask.clone());
        let mut state = self.start_decoding(encoded.clone(), input.attention_mask);
        let embeddings = self.look_up(&self.decoder, input.decoder_input_ids);
        (self.decoder.decode(embeddings, &mut state), encoded)
    }

    /// Checks ids that come from outside before [`forward`](Self::forward): none empty, every
    /// id inside the vocabulary, a mask of the ids' shape. It reads the ids back once; call it
    /// where ids enter (generation and the trainer do), not on every step.
    ///
    /// # Errors
    /// [`T5Error::InvalidInput`] naming the tensor and what is wrong.
    pub fn check_input(&self, input: &Seq2SeqInput<B>) -> Result<(), T5Error> {
        self.check_source(&input.input_ids, &input.attention_mask)?;
        self.check_ids(&input.decoder_input_ids, "decoder_input_ids")
    }

    /// Checks source ids and their mask as [`check_input`](Self::check_input) does, before
    /// [`encode`](Self::encode).
    ///
    /// # Errors
    /// [`T5Error::InvalidInput`] for empty ids, ids outside the vocabulary, an attention mask
    /// whose shape differs from `input_ids`, or a batch other than the number of
    /// [`with_adapter_names`](Self::with_adapter_names) names.
    pub fn check_source(
        &self,
        input_ids: &Tensor<B, 2, Int>,
        attention_mask: &Tensor<B, 2, Int>,
    ) -> Result<(), T5Error> {
        self.check_ids(input_ids, "input_ids")?;
        check_same_shape(input_ids, attention_mask)?;
        self.check_routed_batch(input_ids.dims()[0])
    }

    /// `hidden · d_model^-0.5` when `config.scale_decoder_outputs`, as the tied head wants it.
    pub(crate) fn scaled_for_head<const D: usize>(&self, hidden: Tensor<B, D>) -> Tensor<B, D> {
        if self.config.scale_decoder_outputs {
            hidden * (self.config.d_model as f64).powf(-0.5)
        } else {
            hidden
        }
    }

    /// The loss for `labels` (`[batch, target_len]`, [`IGNORE_INDEX`] where no loss is wanted),
    /// decoding the labels shifted right as transformers does.
    ///
    /// # Shapes
    /// - `input_ids`, `attention_mask`: `[batch, source_len]`
    /// - `labels`: `[batch, target_len]`
    /// - output: logits `[batch, target_len, vocab_size]` and the mean loss `[1]`
    ///
    /// # Errors
    /// [`T5Error::InvalidInput`] for empty labels, labels outside the vocabulary that are not
    /// [`IGNORE_INDEX`], or labels that are all ignored. The labels are read back once (the
    /// mean needs their count); the source ids are not (see [`forward`](Self::forward)).
    ///
    /// # Panics
    /// As [`forward`](Self::forward), for source ids outside the vocabulary.
    pub fn forward_with_labels(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        labels: Tensor<B, 2, Int>,
    ) -> Result<Seq2SeqLossOutput<B>, T5Error> {
        let values = self.checked_labels(&labels)?;
        let decoder_input_ids = self.shift_right(labels.clone());
        let input = Seq2SeqInput::new(input_ids, decoder_input_ids).attention_mask(attention_mask);
        let logits = self.forward(input).logits;
        let loss = cross_entropy_with_labels(logits.clone(), labels, &values);
        Ok(Seq2SeqLossOutput { loss, logits })
    }

    /// The loss of [`forward_with_labels`](Self::forward_with_labels) without the logits, for
    /// training and evaluation.
    ///
    /// Where `lora_core::linear_cross_entropy` applies (the flex backend and autodiff over it,
    /// with a frozen head that has no adapter), the head and the cross-entropy are fused: the
    /// `[batch, target_len, vocab]` logits never become a tensor, and the gradient reaches the
    /// decoder's output when the forward pass ends. Over t5-small's 1024 target tokens of a
    /// training step, head and loss forward and backward take 0.36 s instead of 0.52 s
    /// (`examples/kernel_shapes.rs`), and the step's peak memory falls from 1322 to 1078 MiB.
    /// Elsewhere it is `forward_with_labels(..).loss`. The two agree within 1e-5 (relative).
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::tensor::{Int, Tensor, TensorData};
    /// use lora_t5::{T5Config, T5ForConditionalGeneration};
    ///
    /// let config = T5Config { vocab_size: 40, d_model: 16, d_kv: 4, d_ff: 32, num_layers: 1,
    ///     num_heads: 2, ..T5Config::default() };
    /// let device = Default::default();
    /// let model = T5ForConditionalGeneration::<NdArray>::new(&config, &device);
    /// let ids = |v: Vec<i64>| Tensor::<NdArray, 2, Int>::from_data(TensorData::new(v, [1, 3]), &device);
    /// let (input, mask, labels) = (ids(vec![5, 6, 1]), ids(vec![1, 1, 1]), ids(vec![7, 8, 1]));
    /// let loss = model.loss(input.clone(), mask.clone(), labels.clone()).unwrap();
    /// // Labels are checked (their count is read for the mean anyway): all ignored is refused.
    /// assert!(model.loss(input.clone(), mask.clone(), ids(vec![-100, -100, -100])).is_err());
    /// let with_logits = model.forward_with_labels(input, mask, labels).unwrap();
    /// assert!((loss.into_scalar() - with_logits.loss.into_scalar()).abs() < 1e-5);
    /// ```
    ///
    /// # Shapes
    /// - `input_ids`, `attention_mask`: `[batch, source_len]`
    /// - `labels`: `[batch, target_len]`
    /// - output: the mean loss, `[1]`
    ///
    /// # Errors
    /// As [`forward_with_labels`](Self::forward_with_labels).
    ///
    /// # Panics
    /// As [`forward`](Self::forward), for source ids outside the vocabulary.
    pub fn loss(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        labels: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 1>, T5Error> {
        let values = self.checked_labels(&labels)?;
        self.loss_with(input_ids, attention_mask, labels, &values)
    }

    /// [`loss`](Self::loss) with one mean per group of samples: sample `i` of the batch
    /// belongs to group `sample_groups[i]`, the groups are `0..=max`, and the output's value
    /// `g` is the mean loss over group `g`'s target tokens (`[groups]`), whose gradient reaches
    /// only that group's samples. When each group is an adapter's samples under
    /// [`with_adapter_names`](Self::with_adapter_names), the sum of the values trains every
    /// adapter as a batch of its own samples would: several adapters train in one batch on
    /// one resident base.
    ///
    /// ```
    /// use burn::backend::NdArray;
    /// use burn::tensor::{Int, Tensor};
    /// use lora_t5::{T5Config, T5ForConditionalGeneration};
    ///
    /// let config = T5Config { vocab_size: 40, d_model: 16, d_kv: 4, d_ff: 32, num_layers: 1,
    ///     num_heads: 2, ..T5Config::default() };
    /// let device = Default::default();
    /// let model = T5ForConditionalGeneration::<NdArray>::new(&config, &device);
    /// let input = Tensor::<NdArray, 2, Int>::from_ints([[5, 6, 1], [7, 8, 1]], &device);
    /// let mask = Tensor::<NdArray, 2, Int>::ones([2, 3], &device);
    /// let labels = Tensor::<NdArray, 2, Int>::from_ints([[9, 1], [3, 1]], &device);
    /// let means = model.group_losses(input.clone(), mask.clone(), labels.clone(), &[0, 1]).unwrap();
    /// let first = model.loss(input.clone().slice([0..1]), mask.clone().slice([0..1]), labels.clone().slice([0..1])).unwrap();
    /// let found = means.into_data().to_vec::<f32>().unwrap();
    /// assert!((found[0] - first.into_scalar()).abs() < 1e-5);
    /// // A group without a sample has no mean.
    /// assert!(model.group_losses(input, mask, labels, &[0, 2]).is_err());
    /// ```
    ///
    /// # Shapes
    /// - `input_ids`, `attention_mask`: `[batch, source_len]`
    /// - `labels`: `[batch, target_len]`
    /// - `sample_groups`: `batch` values
    /// - output: `[groups]`
    ///
    /// # Errors
    /// As [`forward_with_labels`](Self::forward_with_labels), and [`T5Error::InvalidInput`] /
    /// [`T5Error::Lora`] when `sample_groups` does not hold one group per sample or a group in
    /// `0..=max` has no target token.
    pub fn group_losses(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        labels: Tensor<B, 2, Int>,
        sample_groups: &[usize],
    ) -> Result<Tensor<B, 1>, T5Error> {
        let length = labels.dims()[1];
        let values = self
            .checked_labels(&labels)?
            .grouped(sample_groups, length)?;
        self.loss_with(input_ids, attention_mask, labels, &values)
    }

    fn loss_with(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        labels: Tensor<B, 2, Int>,
        values: &CheckedLabels,
    ) -> Result<Tensor<B, 1>, T5Error> {
        let decoder_input_ids = self.shift_right(labels.clone());
        let input = Seq2SeqInput::new(input_ids, decoder_input_ids).attention_mask(attention_mask);
        let (hidden, _) = self.decoder_output(input);
        if let Some(loss) = self.fused_head_loss(&hidden, values) {
            return Ok(loss);
        }
        Ok(cross_entropy_with_labels(
            self.lm_logits(hidden),
            labels,
            values,
        ))
    }

    /// The labels read back once, checked: not empty, inside the vocabulary or
    /// [`IGNORE_INDEX`], and not all ignored.
    fn checked_labels(&self, labels: &Tensor<B, 2, Int>) -> Result<CheckedLabels, T5Error> {
        let [batch, length] = labels.dims();
        if batch == 0 || length == 0 {
            return Err(T5Error::InvalidInput {
                reason: format!("labels are empty ({batch}×{length})"),
            });
        }
        CheckedLabels::new(int_values(labels.clone())?, self.config.vocab_size)
    }

    /// The head and the loss in one (`lora_core::linear_cross_entropy`), where it applies.
    fn fused_head_loss(
        &self,
        hidden: &Tensor<B, 3>,
        labels: &CheckedLabels,
    ) -> Option<Tensor<B, 1>> {
        let [batch, length, d_model] = hidden.dims();
        let (weight, layout) = match &self.lm_head {
            None => (self.shared.weight.val(), HeadLayout::VocabRows),
            // A head with adapters or module copies computes more than its base weight.
            Some(head)
                if head.adapters.is_empty()
                    && head.copies.is_empty()
                    && head.base.bias.is_none() =>
            {
                (head.base.weight.val(), HeadLayout::VocabColumns)
            }
            Some(_) => return None,
        };
        let hidden = self.scaled_for_head(hidden.clone().reshape([batch * length, d_model]));
        linear_cross_entropy_grouped(
            hidden,
            &weight,
            layout,
            &labels.values,
            IGNORE_INDEX,
            &labels.groups,
        )
    }

    /// transformers' `_shift_right`: prepend the decoder start token, drop the last label, and
    /// replace [`IGNORE_INDEX`] by the pad token.
    pub fn shift_right(&self, labels: Tensor<B, 2, Int>) -> Tensor<B, 2, Int> {
        let [batch, length] = labels.dims();
        let device = labels.device();
        let start = Tensor::<B, 2, Int>::full(
            [batch, 1],
            self.config.decoder_start_token_id as i64,
            &device,
        );
        // Burn cannot narrow to length 0: a single label shifts to the start token alone.
        let shifted = if length > 1 {
            Tensor::cat(vec![start, labels.narrow(1, 0, length - 1)], 1)
        } else {
            start
        };
        let ignored = shifted.clone().equal_elem(IGNORE_INDEX);
        shifted.mask_fill(ignored, self.config.pad_token_id as i64)
    }

    fn check_ids(&self, ids: &Tensor<B, 2, Int>, what: &str) -> Result<(), T5Error> {
        let [batch, length] = ids.dims();
        if batch == 0 || length == 0 {
            return Err(T5Error::InvalidInput {
                reason: format!("{what} is empty ({batch}×{length})"),
            });
        }
        let values = int_values(ids.clone())?;
        let vocab = self.config.vocab_size as i64;
        if let Some(bad) = values.iter().find(|v| **v < 0 || **v >= vocab) {
            return Err(T5Error::InvalidInput {
                reason: format!("{what} holds token id {bad}, outside the vocabulary of {vocab}"),
            });
        }
        Ok(())
    }
}

fn check_same_shape<B: Backend>(
    ids: &Tensor<B, 2, Int>,
    mask: &Tensor<B, 2, Int>,
) -> Result<(), T5Error> {
    if ids.dims() != mask.dims() {
        return Err(T5Error::InvalidInput {
            reason: format!(
                "attention_mask has shape {:?} but input_ids has {:?}",
                mask.dims(),
                ids.dims()
            ),
        });
    }
    Ok(())
}

/// Reads an integer tensor back to the host.
pub(crate) fn int_values<B: Backend, const D: usize>(
    t: Tensor<B, D, Int>,
) -> Result<Vec<i64>, T5Error> {
    t.into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .map_err(|e| T5Error::InvalidInput {
            reason: format!("could not read token ids: {e:?}"),
        })
}

/// From this many rows on, the tied head writes its logits in `[rows, vocab]` order.
const CONTIGUOUS_LOGITS_ROWS: usize = 256;

/// `(1 − mask) · float_min` as `[batch, 1, 1, length]`, transformers' additive padding mask.
pub(crate) fn mask_bias<B: Backend>(attention_mask: Tensor<B, 2, Int>) -> Tensor<B, 4> {
    let mask = attention_mask.float();
    let bias = (mask.neg() + 1.0) * f32::MIN as f64;
    bias.unsqueeze_dims(&[1, 2])
}

/// Mean cross-entropy of `logits` against `labels`, skipping [`IGNORE_INDEX`] labels.
///
/// # Errors
/// [`T5Error::InvalidInput`] when the logits and labels disagree in shape, or a label is
/// outside the vocabulary and not [`IGNORE_INDEX`].
pub fn cross_entropy_ignoring<B: Backend>(
    logits: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
) -> Result<Tensor<B, 1>, T5Error> {
    let [batch, length, vocab] = logits.dims();
    if labels.dims() != [batch, length] {
        return Err(T5Error::InvalidInput {
            reason: format!(
                "labels have shape {:?}, logits {:?}",
                labels.dims(),
                logits.dims()
            ),
        });
    }
    let checked = CheckedLabels::new(int_values(labels.clone())?, vocab)?;
    Ok(cross_entropy_with_labels(logits, labels, &checked))
}

/// Labels read back to the host and checked: each inside the vocabulary or [`IGNORE_INDEX`],
/// with the groups their means are taken over (one for the batch's mean loss), each holding a
/// kept label.
struct CheckedLabels {
    values: Vec<i64>,
    groups: LossGroups,
}

impl CheckedLabels {
    fn new(values: Vec<i64>, vocab: usize) -> Result<Self, T5Error> {
        let vocab = vocab as i64;
        if let Some(bad) = values
            .iter()
            .find(|v| **v != IGNORE_INDEX && !(0..vocab).contains(*v))
        {
            return Err(T5Error::InvalidInput {
                reason: format!("labels hold token id {bad}, outside the vocabulary of {vocab}"),
            });
        }
        let groups =
            LossGroups::single(&values, IGNORE_INDEX).map_err(|_| T5Error::InvalidInput {
                reason: "every label is ignored (-100): there is nothing to compute a loss on"
                    .into(),
            })?;
        Ok(Self { values, groups })
    }

    /// The same labels (`[batch, length]` row-major) with one mean per group of samples:
    /// sample `i` in group `sample_groups[i]`, groups `0..=max`.
    fn grouped(self, sample_groups: &[usize], length: usize) -> Result<Self, T5Error> {
        let batch = self.values.len() / length.max(1);
        if sample_groups.len() != batch {
            return Err(T5Error::InvalidInput {
                reason: format!(
                    "{} sample groups for a batch of {batch} samples",
                    sample_groups.len()
                ),
            });
        }
        let count = sample_groups.iter().max().map_or(0, |g| g + 1);
        let of_row = sample_groups
            .iter()
            .flat_map(|g| std::iter::repeat_n(*g, length))
            .collect();
        let groups = LossGroups::new(of_row, count, &self.values, IGNORE_INDEX)?;
        Ok(Self {
            values: self.values,
            groups,
        })
    }
}

/// [`cross_entropy_ignoring`] for labels of the logits' shape, already checked.
fn cross_entropy_with_labels<B: Backend>(
    logits: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
    checked: &CheckedLabels,
) -> Tensor<B, 1> {
    let [batch, length, vocab] = logits.dims();
    let keep = labels.clone().not_equal_elem(IGNORE_INDEX);
    let rows = batch * length;
    let safe_labels = labels.mask_fill(keep.bool_not(), 0).reshape([rows, 1]);
    // Each row's weight in its group's mean: 1 / (its group's kept labels), 0 for the ignored.
    let device = logits.device();
    let weights = Tensor::<B, 2>::from_data(
        TensorData::new(checked.groups.weights_f32(), [rows, 1]),
        &device,
    );

    // The value and the gradient are computed apart from the autodiff graph, on `logits`
    // detached: `loss = Σ w·(m + ln Σ exp(z − m) − z_label)` with `m` the row maximum, and its
    // gradient `∂loss/∂z = w·(softmax(z) − onehot(label))`. The graph then only records
    // `Σ z·g`, whose gradient is that `g`: two recorded passes over the `[rows, vocab]`
    // logits instead of the dozen of a recorded `log_softmax` + `gather`.
    let z = logits.reshape([rows, vocab]);
    let detached = z.clone().detach();
    let max = detached.clone().max_dim(1);
    let exp = (detached.clone() - max.clone()).exp();
    let sum = exp.clone().sum_dim(1);
    let picked = detached.gather(1, safe_labels.clone());
    let groups = &checked.groups;
    let value = groups.sum_rows((max + sum.clone().log() - picked) * weights.clone());
    if !B::ad_enabled(&z.device()) {
        // No autodiff backend, no gradient to carry (inference, evaluation): only the value.
        return value;
    }
    let gradient = (exp * (weights.clone() / sum)).scatter(
        1,
        safe_labels,
        weights.neg(),
        IndexingUpdateOp::Add,
    );
    let surrogate = groups.sum_rows((z * gradient).sum_dim(1));
    surrogate.clone() - surrogate.detach() + value
}
