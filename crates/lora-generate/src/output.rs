//! What generation returns.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::HostTraffic;

/// The result of [`generate`](crate::generate).
#[derive(Debug)]
pub struct GenerateOutput<B: Backend> {
    /// `batch × num_return_sequences` sequences (the returned sequences of a prompt next to
    /// each other), each starting with the decoder start token, padded to one length as
    /// transformers pads them (greedy and sampling: the padding id after EOS; beam search:
    /// the padding id, or EOS when the padding id is 0).
    pub sequences: Vec<Vec<u32>>,
    /// With `output_scores`: the processed scores of every step, `[rows, vocab]` on the device
    /// (beam search: the processed log-probabilities of every beam, `batch × num_beams` rows).
    pub scores: Vec<Tensor<B, 2>>,
    /// Beam search: the score of each returned sequence (its log-probability sum over
    /// `length^length_penalty`).
    pub sequences_scores: Vec<f32>,
    /// What this call moved between the device and the host.
    pub traffic: HostTraffic,
}

/// Drops the decoder start token, everything from the first EOS on, and padding: the tokens a
/// tokenizer should decode.
///
/// ```
/// assert_eq!(lora_generate::generated_tokens(&[0, 7, 8, 1, 0], 0, 1), vec![7, 8]);
/// ```
pub fn generated_tokens(sequence: &[u32], decoder_start: u32, eos: u32) -> Vec<u32> {
    let body = match sequence.first() {
        Some(first) if *first == decoder_start => &sequence[1..],
        _ => sequence,
    };
    body.iter().take_while(|t| **t != eos).copied().collect()
}
