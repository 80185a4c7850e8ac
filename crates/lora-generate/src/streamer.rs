//! Receiving tokens as they are generated (transformers' `BaseStreamer`).

/// Receives the new token of every row after each step of greedy search or sampling (rows
/// already finished get the padding id), then [`end`](Self::end) once.
///
/// Any `FnMut(&[u32])` is a streamer.
///
/// ```
/// use lora_generate::TokenStreamer;
///
/// let mut seen = Vec::new();
/// let mut streamer = |tokens: &[u32]| seen.push(tokens[0]);
/// streamer.put(&[7]);
/// streamer.end();
/// assert_eq!(seen, vec![7]);
/// ```
pub trait TokenStreamer {
    /// The tokens of one step, one per row.
    fn put(&mut self, tokens: &[u32]);

    /// Generation is over.
    fn end(&mut self) {}
}

impl<F: FnMut(&[u32])> TokenStreamer for F {
    fn put(&mut self, tokens: &[u32]) {
        self(tokens)
    }
}
