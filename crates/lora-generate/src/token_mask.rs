//! Masks over `[rows, vocab]` scores built from short host lists of `(row, token)` pairs: the
//! list travels to the device, the mask is made there.

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, IndexingUpdateOp, Tensor};

use crate::HostTraffic;

/// The mask of `scores`' shape that is true at the given `(row, token)` pairs, or `None` when
/// there are none.
pub(crate) fn token_mask<B: Backend>(
    scores: &Tensor<B, 2>,
    pairs: impl IntoIterator<Item = (usize, u32)>,
    traffic: &HostTraffic,
) -> Option<Tensor<B, 2, Bool>> {
    let [rows, vocab] = scores.dims();
    let flat: Vec<i64> = pairs
        .into_iter()
        .filter(|(row, token)| *row < rows && (*token as usize) < vocab)
        .map(|(row, token)| (row * vocab + token as usize) as i64)
        .collect();
    if flat.is_empty() {
        return None;
    }
    let device = scores.device();
    let count = flat.len();
    let indices = traffic.int_tensor::<B, 1>(flat, [count], &device);
    let marks = Tensor::<B, 1>::zeros([rows * vocab], &device).select_assign(
        0,
        indices,
        Tensor::ones([count], &device),
        IndexingUpdateOp::Add,
    );
    Some(marks.reshape([rows, vocab]).greater_elem(0.5))
}

/// `scores` with `-inf` at the given pairs.
pub(crate) fn ban<B: Backend>(
    scores: Tensor<B, 2>,
    pairs: impl IntoIterator<Item = (usize, u32)>,
    traffic: &HostTraffic,
) -> Tensor<B, 2> {
    match token_mask(&scores, pairs, traffic) {
        Some(mask) => scores.mask_fill(mask, f32::NEG_INFINITY),
        None => scores,
    }
}

/// The pairs of `tokens` in every one of `rows` rows.
pub(crate) fn every_row(rows: usize, tokens: &[u32]) -> impl Iterator<Item = (usize, u32)> + '_ {
    (0..rows).flat_map(move |row| tokens.iter().map(move |t| (row, *t)))
}

/// Scores that force one of `tokens`: `0` there, `-inf` everywhere else (transformers' forced
/// BOS / EOS).
pub(crate) fn force<B: Backend>(
    scores: Tensor<B, 2>,
    tokens: &[u32],
    traffic: &HostTraffic,
) -> Tensor<B, 2> {
    let [rows, vocab] = scores.dims();
    let forced = Tensor::<B, 2>::full([rows, vocab], f32::NEG_INFINITY, &scores.device());
    match token_mask(&scores, every_row(rows, tokens), traffic) {
        Some(mask) => forced.mask_fill(mask, 0.0),
        None => scores,
    }
}

/// `values` `[rows]` broadcast over the columns of a `[rows, columns]` tensor.
pub(crate) fn per_row<B: Backend>(values: Tensor<B, 2>, columns: usize) -> Tensor<B, 2> {
    let [rows, _] = values.dims();
    values.expand([rows, columns])
}
