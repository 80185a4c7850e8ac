//! Helpers shared by the unit tests of the flex paths.

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// A tensor's `f32` values in row-major order.
pub(crate) fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().expect("f32 values")
}

/// Asserts that `found` equals `expected` element by element within `relative` times the largest
/// magnitude of `expected`.
pub(crate) fn assert_close(found: &[f32], expected: &[f32], relative: f32, what: &str) {
    assert_eq!(found.len(), expected.len(), "{what}: lengths");
    let largest = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (f, e)) in found.iter().zip(expected).enumerate() {
        assert!(
            (f - e).abs() <= relative * largest,
            "{what} {i}: {f} against {e} (largest {largest})"
        );
    }
}
