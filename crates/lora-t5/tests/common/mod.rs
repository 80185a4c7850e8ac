//! Helpers the fixture tests share.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use serde_json::Value;

/// A fixture's `[[id, …], …]` as a `[rows, width]` integer tensor.
///
/// # Panics
/// When the value is not a non-empty array of equally long arrays of integers.
pub fn int_matrix<B: Backend>(value: &Value) -> Tensor<B, 2, Int> {
    let rows = value.as_array().expect("an array of rows");
    let width = rows[0].as_array().expect("a row").len();
    let flat: Vec<i64> = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .expect("a row")
                .iter()
                .map(|v| v.as_i64().expect("an id"))
        })
        .collect();
    Tensor::from_data(
        TensorData::new(flat, [rows.len(), width]),
        &Default::default(),
    )
}
