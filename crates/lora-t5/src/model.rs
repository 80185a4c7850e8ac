//! `T5ForConditionalGeneration`: shared embedding, encoder, decoder and language-model head.

use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{IndexingUpdateOp, Int, Tensor};
use lora_core::{few_rows_times_transposed, linear_cross_entropy, HeadLayout, LoraLinear};

use crate::{DecoderState, T5Config, T5Error, T5Stack};

pub use lora_core::IGNORE_INDEX;

/// T5 / FLAN-T5 for sequence-to-sequence generation, with every linear layer a [`LoraLinear`]
/// addressable by its Hugging Face module path (`encoder.block.0.layer.0.SelfAttention.q`,
/// ..., `lm_head`).
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::{Int, Tensor};
/// use lora_t5::{T5Config, T5ForConditionalGeneration};
///
/// let config = T5Config { vocab_size: 50, d_model: 16, d_kv: 4, num_heads: 4, d_ff: 32,
///     num_layers: 1, num_decoder_layers: 1, ..T5Config::default() };
/// let device = Default::default();
/// let model = T5ForConditionalGeneration::<NdArray>::new(&config, &device);
/// let ids = Tensor::<NdArray, 2, Int>::from_ints([[5, 6, 7, 1]], &device);
/// let mask = Tensor::<NdArray, 2, Int>::ones([1, 4], &device);
/// let decoder = Tensor::<NdArray, 2, Int>::from_ints([[0, 9]], &device);
/// let logits = model.forward(ids, mask, decoder).unwrap();
/// assert_eq!(logits.dims(), [1, 2, 50]);
/// ```
#[derive(Module, Debug)]
pub struct T5ForConditionalGeneration<B: Backend> {
    /// The token embedding shared by encoder and decoder (`shared`).
    pub shared: Embedding<B>,
    /// The encoder stack.
    pub encoder: T5Stack<B>,
    /// The decoder stack.
    pub decoder: T5Stack<B>,
    /// The language-model head when it is not tied to `shared`.
    pub lm_head: Option<LoraLinear<B>>,
    /// The configuration.
    #[module(skip)]
    pub config: T5Config,
}

/// The modules a LoRA adapter targets on T5 when its `target_modules` is unset: the attention
/// query and value projections, as PEFT's `TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`
/// has it for `t5` and `mt5`.
///
/// ```
/// assert_eq!(lora_t5::T5_DEFAULT_TARGET_MODULES, ["q", "v"]);
/// ```
pub const T5_DEFAULT_TARGET_MODULES: &[&str] = &["q", "v"];

/// The loss and logits of a forward pass with labels.
#[derive(Debug, Clone)]
pub struct Seq2SeqOutput<B: Backend> {
    /// Mean cross-entropy over the labels that are not [`IGNORE_INDEX`].
    pub loss: Tensor<B, 1>,
    /// `[batch, target_len, vocab]`.
    pub logits: Tensor<B, 3>,
}

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
        }
    }

    /// Encodes `input_ids` (`[batch, source_len]`) with `attention_mask` (1 for tokens, 0 for
    /// padding), giving `[batch, source_len, d_model]`.
    ///
    /// # Shapes
    /// - `input_ids`, `attention_mask`: `[batch, source_len]`
    /// - output: `[batch, source_len, d_model]`
    ///
    /// # Errors
    /// [`T5Error::InvalidInput`] for empty ids, ids outside the vocabulary, or an attention mask
    /// whose shape differs from `input_ids`.
    pub fn encode(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 3>, T5Error> {
        self.check_ids(&input_ids, "input_ids")?;
        check_same_shape(&input_ids, &attention_mask)?;
        let embeddings = self.shared.forward(input_ids);
        Ok(self.encoder.encode(embeddings, mask_bias(attention_mask)))
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
        }
    }

    /// Decodes the next tokens `decoder_ids` (`[batch, new]`) after everything in `state`,
    /// giving logits `[batch, new, vocab]`.
    pub fn decode(
        &self,
        decoder_ids: Tensor<B, 2, Int>,
        state: &mut DecoderState<B>,
    ) -> Tensor<B, 3> {
        let hidden = self.decoder.decode(self.shared.forward(decoder_ids), state);
        self.lm_logits(hidden)
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

    /// Logits `[batch, target_len, vocab]` for `decoder_input_ids` given the source.
    ///
    /// # Shapes
    /// - `input_ids`, `attention_mask`: `[batch, source_len]`
    /// - `decoder_input_ids`: `[batch, target_len]`
    /// - output: `[batch, target_len, vocab_size]`
    ///
    /// # Errors
    /// [`T5Error::InvalidInput`] for empty ids, ids outside the vocabulary, or an attention mask
    /// whose shape differs from `input_ids`.
    pub fn forward(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        decoder_input_ids: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 3>, T5Error> {
        let hidden = self.decoder_output(input_ids, attention_mask, decoder_input_ids)?;
        Ok(self.lm_logits(hidden))
    }

    /// The decoder's output `[batch, target_len, d_model]` before the head.
    fn decoder_output(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        decoder_input_ids: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 3>, T5Error> {
        self.check_ids(&decoder_input_ids, "decoder_input_ids")?;
        let encoded = self.encode(input_ids, attention_mask.clone())?;
        let mut state = self.start_decoding(encoded, attention_mask);
        Ok(self
            .decoder
            .decode(self.shared.forward(decoder_input_ids), &mut state))
    }

    /// `hidden · d_model^-0.5` when `config.scale_decoder_outputs`, as the tied head wants it.
    fn scaled_for_head<const D: usize>(&self, hidden: Tensor<B, D>) -> Tensor<B, D> {
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
    /// As [`forward`](Self::forward), and [`T5Error::InvalidInput`] for labels outside the
    /// vocabulary that are not [`IGNORE_INDEX`].
    pub fn forward_with_labels(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        labels: Tensor<B, 2, Int>,
    ) -> Result<Seq2SeqOutput<B>, T5Error> {
        let decoder_input_ids = self.shift_right(labels.clone());
        let logits = self.forward(input_ids, attention_mask, decoder_input_ids)?;
        let loss = cross_entropy_ignoring(logits.clone(), labels)?;
        Ok(Seq2SeqOutput { loss, logits })
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
    pub fn loss(
        &self,
        input_ids: Tensor<B, 2, Int>,
        attention_mask: Tensor<B, 2, Int>,
        labels: Tensor<B, 2, Int>,
    ) -> Result<Tensor<B, 1>, T5Error> {
        let decoder_input_ids = self.shift_right(labels.clone());
        let hidden = self.decoder_output(input_ids, attention_mask, decoder_input_ids)?;
        if let Some(loss) = self.fused_head_loss(&hidden, &labels)? {
            return Ok(loss);
        }
        cross_entropy_ignoring(self.lm_logits(hidden), labels)
    }

    /// The head and the loss in one (`lora_core::linear_cross_entropy`), where it applies.
    fn fused_head_loss(
        &self,
        hidden: &Tensor<B, 3>,
        labels: &Tensor<B, 2, Int>,
    ) -> Result<Option<Tensor<B, 1>>, T5Error> {
        let [batch, length, d_model] = hidden.dims();
        if labels.dims() != [batch, length] {
            return Ok(None);
        }
        let (weight, layout) = match &self.lm_head {
            None => (self.shared.weight.val(), HeadLayout::VocabRows),
            Some(head) if head.adapters.is_empty() && head.base.bias.is_none() => {
                (head.base.weight.val(), HeadLayout::VocabColumns)
            }
            Some(_) => return Ok(None),
        };
        let labels = int_values(labels.clone())?;
        let hidden = self.scaled_for_head(hidden.clone().reshape([batch * length, d_model]));
        Ok(linear_cross_entropy(
            hidden,
            &weight,
            layout,
            &labels,
            IGNORE_INDEX,
        ))
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
        let shifted = Tensor::cat(
            vec![start, labels.narrow(1, 0, length.saturating_sub(1))],
            1,
        );
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
    let keep = labels.clone().not_equal_elem(IGNORE_INDEX);
    let count = int_values(keep.clone().int().sum())?[0];
    if count == 0 {
        return Err(T5Error::InvalidInput {
            reason: "every label is ignored (-100): there is nothing to compute a loss on".into(),
        });
    }
    let rows = batch * length;
    let safe_labels = labels
        .mask_fill(keep.clone().bool_not(), 0)
        .reshape([rows, 1]);
    // Each row's weight in the mean: 1 / count for the kept labels, 0 for the ignored ones.
    let weights = keep.float().reshape([rows, 1]) / (count as f64);

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
    let value = ((max + sum.clone().log() - picked) * weights.clone()).sum();
    if !B::ad_enabled(&z.device()) {
        // No autodiff backend, no gradient to carry (inference, evaluation): only the value.
        return Ok(value);
    }
    let gradient = (exp * (weights.clone() / sum)).scatter(
        1,
        safe_labels,
        weights.neg(),
        IndexingUpdateOp::Add,
    );
    let surrogate = (z * gradient).sum();
    let loss = surrogate.clone() - surrogate.detach() + value;
    Ok(loss)
}
