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

/// Asserts that `got` matches `expected` element by element within `tolerance` times the largest
/// magnitude in `expected` (a relative tolerance on the whole tensor), naming `what`.
#[allow(dead_code)]
#[track_caller]
pub fn assert_close_relative(got: &[f32], expected: &[f32], tolerance: f32, what: &str) {
    assert_eq!(got.len(), expected.len(), "{what}");
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(expected).enumerate() {
        assert!(
            (a - b).abs() <= tolerance * scale,
            "{what}[{i}]: {a} vs {b}"
        );
    }
}
