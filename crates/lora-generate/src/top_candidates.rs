//! The exact top-k of each row of a device tensor, reading back only what can be selected.

use std::cmp::Ordering;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use crate::{GenerationError, HostTraffic};

/// One selected entry of a row: its value and its column.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The value.
    pub value: f32,
    /// The column in the row.
    pub index: usize,
}

/// Rows at most this wide are read back whole: blocks would not save anything.
const READ_WHOLE_BELOW: usize = 2048;

/// The `k` largest values of each row of `scores`, largest first, equal values in column
/// order (`torch.topk`'s order on CPU, which beam search relies on).
///
/// Rows are split into blocks of about `√(columns / k)` columns. The `k` largest values lie in
/// the blocks whose maximum is at least the `k`-th largest block maximum, so only the block
/// maxima and those blocks travel to the host: about `2·√(k · columns)` values a row instead of
/// `columns`, and no sort of the whole row anywhere.
///
/// ```
/// use burn::backend::NdArray;
/// use burn::tensor::Tensor;
/// use lora_generate::{top_candidates, HostTraffic};
///
/// let scores = Tensor::<NdArray, 2>::from_floats([[0.5, 2.0, -1.0, 2.0]], &Default::default());
/// let top = top_candidates(scores, 3, &HostTraffic::default()).unwrap();
/// let columns: Vec<usize> = top[0].iter().map(|c| c.index).collect();
/// assert_eq!(columns, vec![1, 3, 0]);
/// ```
///
/// # Errors
/// [`GenerationError::InvalidInput`] when the scores cannot be read back.
pub fn top_candidates<B: Backend>(
    scores: Tensor<B, 2>,
    k: usize,
    traffic: &HostTraffic,
) -> Result<Vec<Vec<Candidate>>, GenerationError> {
    let [rows, columns] = scores.dims();
    let k = k.min(columns);
    if k == 0 {
        return Ok(vec![Vec::new(); rows]);
    }
    let block = ((columns as f64 / k as f64).sqrt().ceil() as usize).max(16);
    if columns < READ_WHOLE_BELOW || block * k * 2 >= columns {
        let values = traffic.floats(scores)?;
        return Ok(values
            .chunks(columns)
            .map(|row| best(row.iter().copied().enumerate(), k))
            .collect());
    }
    let blocks = columns.div_ceil(block);
    let device = scores.device();
    let padding = blocks * block - columns;
    let padded = if padding > 0 {
        Tensor::cat(
            vec![
                scores.clone(),
                Tensor::full([rows, padding], f32::NEG_INFINITY, &device),
            ],
            1,
        )
    } else {
        scores.clone()
    };
    let maxima = traffic.floats(padded.reshape([rows, blocks, block]).max_dim(2))?;
    // Per row, the columns of every block that can hold one of the k largest values.
    let mut chosen: Vec<Vec<usize>> = Vec::with_capacity(rows);
    for row in maxima.chunks(blocks) {
        let kth = best(row.iter().copied().enumerate(), k)
            .last()
            .map_or(f32::NEG_INFINITY, |c| c.value);
        let columns_of_row: Vec<usize> = (0..blocks)
            .filter(|b| row[*b] >= kth)
            .flat_map(|b| b * block..((b + 1) * block).min(columns))
            .collect();
        chosen.push(columns_of_row);
    }
    let width = chosen.iter().map(Vec::len).max().unwrap_or(0);
    let mut indices = Vec::with_capacity(rows * width);
    for row in &chosen {
        let last = row.last().copied().unwrap_or(0);
        indices.extend(row.iter().map(|c| *c as i64));
        indices.extend(std::iter::repeat_n(last as i64, width - row.len()));
    }
    let indices = traffic.int_tensor::<B, 2>(indices, [rows, width], &device);
    let gathered = traffic.floats(scores.gather(1, indices))?;
    Ok(chosen
        .iter()
        .zip(gathered.chunks(width.max(1)))
        .map(|(columns_of_row, values)| {
            best(
                columns_of_row.iter().copied().zip(values.iter().copied()),
                k,
            )
        })
        .collect())
}

/// The `k` largest of `(column, value)` pairs, largest first, ties in column order.
fn best(entries: impl Iterator<Item = (usize, f32)>, k: usize) -> Vec<Candidate> {
    let mut all: Vec<Candidate> = entries
        .map(|(index, value)| Candidate { value, index })
        .collect();
    let order = |a: &Candidate, b: &Candidate| -> Ordering {
        b.value.total_cmp(&a.value).then(a.index.cmp(&b.index))
    };
    if all.len() > k {
        all.select_nth_unstable_by(k - 1, order);
        all.truncate(k);
    }
    all.sort_by(order);
    all
}

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;
    use burn::tensor::{Tensor, TensorData};

    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                // Few distinct values, so that ties are common.
                ((x >> 33) % 997) as f32 / 10.0
            })
            .collect()
    }

    #[test]
    fn blocked_selection_equals_a_full_sort_with_ties_in_column_order() {
        for (columns, k) in [(5000, 1), (5000, 8), (32_128, 50), (9001, 64), (3000, 200)] {
            let values = pseudo_random(3 * columns, columns as u64 + k as u64);
            let scores = Tensor::<NdArray, 2>::from_data(
                TensorData::new(values.clone(), [3, columns]),
                &Default::default(),
            );
            let traffic = HostTraffic::default();
            let got = top_candidates(scores, k, &traffic).unwrap();
            for (row, got) in got.iter().enumerate() {
                let row_values = &values[row * columns..(row + 1) * columns];
                let expected = best(row_values.iter().copied().enumerate(), k);
                assert_eq!(got, &expected, "{columns} columns, k = {k}, row {row}");
            }
            if k <= 64 && columns >= 5000 {
                assert!(
                    traffic.to_host() < (3 * columns * 4) as u64,
                    "{columns} columns, k = {k}: read back {} bytes",
                    traffic.to_host()
                );
            }
        }
    }

    #[test]
    fn a_row_of_minus_infinity_gives_its_first_columns() {
        let scores = Tensor::<NdArray, 2>::full([1, 4096], f32::NEG_INFINITY, &Default::default());
        let got = top_candidates(scores, 2, &HostTraffic::default()).unwrap();
        let columns: Vec<usize> = got[0].iter().map(|c| c.index).collect();
        assert_eq!(columns, vec![0, 1]);
    }
}
