//! Token bans computed from the sequences on the host (transformers'
//! `NoRepeatNGramLogitsProcessor`, `EncoderNoRepeatNGramLogitsProcessor`,
//! `NoBadWordsLogitsProcessor`): only the banned `(row, token)` pairs travel.

use crate::{StepContext, TokenBans};

/// The tokens that follow, somewhere in `source`, the `n − 1` last tokens of `sequence`.
fn continuations(source: &[u32], sequence: &[u32], n: usize) -> Vec<u32> {
    let prefix_len = n - 1;
    if sequence.len() < prefix_len || source.len() < n {
        return Vec::new();
    }
    let prefix = &sequence[sequence.len() - prefix_len..];
    source
        .windows(n)
        .filter(|w| &w[..prefix_len] == prefix)
        .map(|w| w[prefix_len])
        .collect()
}

/// No n-gram of size `n` appears twice in a decoder sequence.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_generate::{HostTraffic, LogitsProcessor, NoRepeatNGram, StepContext};
///
/// let traffic = HostTraffic::default();
/// // "3 4" was seen followed by 5, and the sequence ends with 3 4 again.
/// let (sequences, encoder_ids) = (vec![vec![0, 3, 4, 5, 3, 4]], vec![vec![]]);
/// let context = StepContext { sequences: &sequences, encoder_ids: &encoder_ids, new_tokens: 5, max_new_tokens: 9, traffic: &traffic };
/// let scores = Tensor::<NdArray, 2>::zeros([1, 6], &Default::default());
/// let out = NoRepeatNGram::new(3).process(&context, scores).unwrap().into_data().to_vec::<f32>().unwrap();
/// assert_eq!(out[5], f32::NEG_INFINITY);
/// assert_eq!(out.iter().filter(|v| v.is_infinite()).count(), 1);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct NoRepeatNGram {
    n: usize,
}

impl NoRepeatNGram {
    /// The n-gram size, at least 1.
    pub fn new(n: usize) -> Self {
        Self { n: n.max(1) }
    }
}

impl TokenBans for NoRepeatNGram {
    /// Each row's tokens that would repeat one of its n-grams.
    fn banned(&self, context: &StepContext<'_>) -> Vec<(usize, u32)> {
        let rows = context.sequences.iter().enumerate();
        rows.flat_map(|(row, s)| {
            continuations(s, s, self.n)
                .into_iter()
                .map(move |t| (row, t))
        })
        .collect()
    }
}

/// No n-gram of size `n` of a row's encoder input appears in its decoder sequence.
///
/// ```
/// let processor = lora_generate::EncoderNoRepeatNGram::new(2);
/// # let _ = processor;
/// ```
#[derive(Debug, Clone, Copy)]
pub struct EncoderNoRepeatNGram {
    n: usize,
}

impl EncoderNoRepeatNGram {
    /// The n-gram size, at least 1.
    pub fn new(n: usize) -> Self {
        Self { n: n.max(1) }
    }
}

impl TokenBans for EncoderNoRepeatNGram {
    /// Each row's tokens that would repeat an n-gram of its encoder input.
    fn banned(&self, context: &StepContext<'_>) -> Vec<(usize, u32)> {
        context
            .sequences
            .iter()
            .zip(context.encoder_ids)
            .enumerate()
            .flat_map(|(row, (s, encoder))| {
                continuations(encoder, s, self.n)
                    .into_iter()
                    .map(move |t| (row, t))
            })
            .collect()
    }
}

/// Token sequences that are never generated: a one-token sequence is always banned, a longer
/// one's last token when the row ends with the others. Sequences that are one
/// end-of-sequence id are dropped, as transformers does.
///
/// ```
/// let processor = lora_generate::NoBadWords::new(vec![vec![7], vec![3, 4]], &[1]);
/// # let _ = processor;
/// ```
#[derive(Debug, Clone)]
pub struct NoBadWords {
    sequences: Vec<Vec<u32>>,
}

impl NoBadWords {
    /// The banned sequences, none empty; `eos` are the end-of-sequence ids.
    pub fn new(sequences: Vec<Vec<u32>>, eos: &[u32]) -> Self {
        let sequences = sequences
            .into_iter()
            .filter(|s| !(s.is_empty() || s.len() == 1 && eos.contains(&s[0])))
            .collect();
        Self { sequences }
    }
}

impl TokenBans for NoBadWords {
    /// Each row's tokens that would complete a banned sequence.
    fn banned(&self, context: &StepContext<'_>) -> Vec<(usize, u32)> {
        let mut banned = Vec::new();
        for (row, sequence) in context.sequences.iter().enumerate() {
            for bad in &self.sequences {
                let (prefix, last) = bad.split_at(bad.len() - 1);
                if sequence.ends_with(prefix) {
                    banned.push((row, last[0]));
                }
            }
        }
        banned
    }
}

#[cfg(test)]
mod tests {
    use super::continuations;

    #[test]
    fn continuations_of_the_last_tokens() {
        assert_eq!(
            continuations(&[1, 2, 3, 1, 2], &[1, 2, 3, 1, 2], 3),
            vec![3]
        );
        assert_eq!(continuations(&[5, 6, 5, 7], &[9, 5], 2), vec![6, 7]);
        assert_eq!(continuations(&[5, 6], &[9, 5], 1), vec![5, 6]);
        assert!(continuations(&[5, 6, 7], &[5], 3).is_empty());
    }
}
