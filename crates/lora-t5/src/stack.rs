//! The encoder and decoder stacks, and the decoder's incremental state.

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};
use lora_core::{Dropout, LoraLinear};

use crate::attention::KeyValue;
use crate::{T5Block, T5Config, T5LayerNorm};

/// `encoder` or `decoder`: blocks, a final layer norm and dropout.
#[derive(Module, Debug)]
pub struct T5Stack<B: Backend> {
    /// The blocks; the first owns the relative position bias.
    pub block: Vec<T5Block<B>>,
    /// `final_layer_norm`.
    pub final_layer_norm: T5LayerNorm<B>,
    /// Dropout on the embeddings and the output.
    pub dropout: Dropout,
    /// The stack's own LoRA-wrapped lookup of the shared embedding (`embed_tokens`), present
    /// only once an adapter targets it; `None` looks tokens up in `shared`.
    pub embed_tokens: Option<LoraLinear<B>>,
}

/// What the decoder keeps between generation steps: the self-attention keys and values of
/// every generated position, the cross-attention keys and values of the encoder output
/// (computed once per prompt), and the encoder mask.
#[derive(Debug, Clone)]
pub struct DecoderState<B: Backend> {
    /// Self-attention keys and values per block (`None` before the first step).
    pub self_key_values: Vec<Option<KeyValue<B>>>,
    /// Cross-attention keys and values per block.
    pub cross_key_values: Vec<KeyValue<B>>,
    /// The encoder padding mask as an additive bias, `[batch, 1, 1, source_len]`.
    pub cross_bias: Tensor<B, 4>,
    /// Decoder positions processed so far.
    pub length: usize,
    /// The cross-attention keys, values and bias come in runs of this many equal batch
    /// entries (the beams of one prompt after [`select`](Self::select) expanded it).
    pub(crate) cross_run: usize,
}

impl<B: Backend> DecoderState<B> {
    /// Keeps the batch entries at `indices`, in that order (for beam search).
    ///
    /// Beam search first repeats each prompt's entry once per beam, then reorders the beams of
    /// each prompt among themselves at every step. The cross-attention keys and values, which
    /// depend on the prompt alone, are then equal within each run of beams, so a reorder that
    /// keeps every entry within its run leaves them as they are instead of copying them.
    pub fn select(&self, indices: Tensor<B, 1, Int>) -> Self {
        let rows: Vec<i64> = indices.to_data().iter::<i64>().collect();
        let batch = self.cross_bias.dims()[0];
        let run = self.cross_run.max(1);
        let within_runs = rows.len() == batch
            && rows
                .iter()
                .enumerate()
                .all(|(r, &i)| usize::try_from(i).is_ok_and(|i| i / run == r / run));
        let self_key_values = self
            .self_key_values
            .iter()
            .map(|kv| kv.as_ref().map(|kv| kv.select(indices.clone())))
            .collect();
        if within_runs {
            return Self {
                self_key_values,
                cross_key_values: self.cross_key_values.clone(),
                cross_bias: self.cross_bias.clone(),
                length: self.length,
                cross_run: run,
            };
        }
        // Each entry repeated `repeat` times, in order: the runs are `repeat` long.
        let repeat = rows.len() / batch.max(1);
        let expands = run == 1
            && repeat > 1
            && rows.len() == batch * repeat
            && rows
                .iter()
                .enumerate()
                .all(|(r, &i)| usize::try_from(i).is_ok_and(|i| i == r / repeat));
        Self {
            self_key_values,
            cross_key_values: self
                .cross_key_values
                .iter()
                .map(|kv| kv.select(indices.clone()))
                .collect(),
            cross_bias: self.cross_bias.clone().select(0, indices),
            length: self.length,
            cross_run: if expands { repeat } else { 1 },
        }
    }
}

impl<B: Backend> T5Stack<B> {
    /// A randomly initialised stack of `layers` blocks.
    pub fn new(config: &T5Config, is_decoder: bool, layers: usize, device: &B::Device) -> Self {
        Self {
            block: (0..layers)
                .map(|i| T5Block::new(config, is_decoder, i == 0, device))
                .collect(),
            final_layer_norm: T5LayerNorm::new(config.d_model, config.layer_norm_epsilon, device),
            dropout: Dropout::new(config.dropout_rate),
            embed_tokens: None,
        }
    }

    /// Runs the encoder over embeddings `[batch, length, d_model]` with the padding mask as an
    /// additive bias `[batch, 1, 1, length]`.
    pub fn encode(&self, embeddings: Tensor<B, 3>, mask_bias: Tensor<B, 4>) -> Tensor<B, 3> {
        let [_, length, _] = embeddings.dims();
        let device = embeddings.device();
        let bias = self.position_bias(length, length, 0, &device) + mask_bias;
        let mut hidden = self.dropout.forward(embeddings);
        for block in &self.block {
            hidden = block.forward(hidden, bias.clone(), None, None).0;
        }
        self.dropout.forward(self.final_layer_norm.forward(hidden))
    }

    /// Runs the decoder over the embeddings of the next positions `[batch, new, d_model]`,
    /// attending to everything in `state` and updating it.
    pub fn decode(&self, embeddings: Tensor<B, 3>, state: &mut DecoderState<B>) -> Tensor<B, 3> {
        let [_, new, _] = embeddings.dims();
        let device = embeddings.device();
        let offset = state.length;
        let total = offset + new;
        let bias = self.position_bias(new, total, offset, &device)
            + causal_bias(new, total, offset, &device);
        let mut hidden = self.dropout.forward(embeddings);
        for (i, block) in self.block.iter().enumerate() {
            let cross = (&state.cross_key_values[i], state.cross_bias.clone());
            let (next, key_value) = block.forward(
                hidden,
                bias.clone(),
                state.self_key_values[i].as_ref(),
                Some(cross),
            );
            state.self_key_values[i] = Some(key_value);
            hidden = next;
        }
        state.length = total;
        self.dropout.forward(self.final_layer_norm.forward(hidden))
    }

    fn position_bias(
        &self,
        query: usize,
        key: usize,
        offset: usize,
        device: &B::Device,
    ) -> Tensor<B, 4> {
        self.block[0]
            .self_attention
            .attention
            .position_bias(query, key, offset, device)
    }
}

/// `0` where query `offset + i` may see key `j` (`j ≤ offset + i`), the float minimum where it
/// may not, as transformers masks; `[1, 1, new, total]`.
fn causal_bias<B: Backend>(
    new: usize,
    total: usize,
    offset: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let values: Vec<f32> = (0..new)
        .flat_map(|i| (0..total).map(move |j| if j > offset + i { f32::MIN } else { 0.0 }))
        .collect();
    Tensor::<B, 4>::from_data(
        burn::tensor::TensorData::new(values, [1, 1, new, total]),
        device,
    )
}
