//! `cross_entropy_ignoring` computes its value and gradient off the autodiff graph: both must
//! equal those of the textbook `-mean(log_softmax(z)[label])` over the kept labels, as
//! recorded by Burn's autodiff.

use burn::backend::{Autodiff, NdArray};
use burn::tensor::activation::log_softmax;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use lora_t5::{cross_entropy_ignoring, IGNORE_INDEX};

type B = Autodiff<NdArray<f32>>;

/// The textbook loss, recorded op by op.
fn reference(logits: Tensor<B, 3>, labels: &[i64], shape: [usize; 3]) -> Tensor<B, 1> {
    let [batch, length, vocab] = shape;
    let device = logits.device();
    let rows = batch * length;
    let kept: Vec<f32> = labels
        .iter()
        .map(|&l| (l != IGNORE_INDEX) as u8 as f32)
        .collect();
    let count: f32 = kept.iter().sum();
    let safe: Vec<i64> = labels.iter().map(|&l| l.max(0)).collect();
    let safe = Tensor::<B, 2, Int>::from_data(TensorData::new(safe, [rows, 1]), &device);
    let kept = Tensor::<B, 1>::from_data(TensorData::new(kept, [rows]), &device);
    let picked = log_softmax(logits.reshape([rows, vocab]), 1)
        .gather(1, safe)
        .reshape([rows]);
    (picked * kept).sum().neg() / count as f64
}

fn values<const D: usize>(t: Tensor<NdArray<f32>, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn value_and_gradient_equal_the_recorded_log_softmax() {
    let device = Default::default();
    let shape = [3, 5, 37];
    let [batch, length, vocab] = shape;
    // Logits up to ±8, so that some probabilities are tiny and the max shift matters.
    let base = Tensor::<B, 3>::random(shape, Distribution::Uniform(-8.0, 8.0), &device);
    let labels: Vec<i64> = (0..batch * length)
        .map(|i| {
            if i % 4 == 3 {
                IGNORE_INDEX
            } else {
                ((i * 7) % vocab) as i64
            }
        })
        .collect();
    let label_tensor =
        Tensor::<B, 2, Int>::from_data(TensorData::new(labels.clone(), [batch, length]), &device);

    let z = base.clone().detach().require_grad();
    let loss = cross_entropy_ignoring(z.clone() * 1.0, label_tensor).unwrap();
    let grads = loss.backward();
    let got_grad = values(z.grad(&grads).unwrap());
    let got_loss = values(loss.inner())[0];

    let z_ref = base.detach().require_grad();
    let expected = reference(z_ref.clone() * 1.0, &labels, shape);
    let grads = expected.backward();
    let want_grad = values(z_ref.grad(&grads).unwrap());
    let want_loss = values(expected.inner())[0];

    assert!(
        (got_loss - want_loss).abs() <= 1e-5 * want_loss.abs(),
        "loss {got_loss} against {want_loss}"
    );
    let scale = want_grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
    let worst = got_grad
        .iter()
        .zip(&want_grad)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-5 * scale,
        "gradient off by {worst} (scale {scale})"
    );
    // Rows with an ignored label get no gradient at all.
    for (row, label) in labels.iter().enumerate() {
        if *label == IGNORE_INDEX {
            let grad_row = &got_grad[row * vocab..(row + 1) * vocab];
            assert!(grad_row.iter().all(|g| *g == 0.0), "row {row}");
        }
    }
}
