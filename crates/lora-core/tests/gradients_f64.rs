//! Gradients of A and B against central finite differences, in f64.
//!
//! Kept in its own test binary: Burn 0.21 stores the default float dtype per device type, and
//! `NdArray<f32>` and `NdArray<f64>` share a device type, so they must not run in one process.

use approx::assert_relative_eq;
use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use lora_core::{LoraConfig, LoraInit, LoraLinear};

type Cpu64 = NdArray<f64>;
type Train64 = Autodiff<Cpu64>;

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().unwrap()
}

fn random_layer<B: Backend>(config: &LoraConfig, seed: u64) -> LoraLinear<B> {
    let device = Default::default();
    B::seed(&device, seed);
    let base: Linear<B> = LinearConfig::new(12, 7).init(&device);
    LoraLinear::from_linear(
        base,
        &config.clone().with_init_lora_weights(LoraInit::Random),
    )
    .unwrap()
}

#[test]
fn gradients_of_a_and_b_match_finite_differences() {
    let rslora = LoraConfig::new(3, 6.0).with_use_rslora(true);
    check_gradients(&rslora, &[Tensor2::A, Tensor2::B]);
    check_gradients(&LoraConfig::new(2, 4.0), &[Tensor2::A, Tensor2::B]);
}

#[test]
fn dora_magnitude_gradient_matches_finite_differences() {
    // DoRA treats the weight norm as a constant (PEFT detaches it), so only the magnitude's
    // gradient is the true derivative of the output.
    check_gradients(
        &LoraConfig::new(2, 4.0).with_use_dora(true),
        &[Tensor2::Magnitude],
    );
}

#[derive(Clone, Copy, Debug)]
enum Tensor2 {
    A,
    B,
    Magnitude,
}

fn read(layer: &LoraLinear<Cpu64>, which: Tensor2) -> (Vec<f64>, Vec<usize>) {
    let adapter = &layer.adapters[0];
    match which {
        Tensor2::A => (values(adapter.lora_a.val()), adapter.lora_a.dims().to_vec()),
        Tensor2::B => (values(adapter.lora_b.val()), adapter.lora_b.dims().to_vec()),
        Tensor2::Magnitude => {
            let m = adapter.magnitude.as_ref().unwrap().val();
            (values(m.clone()), m.dims().to_vec())
        }
    }
}

fn write(layer: &mut LoraLinear<Cpu64>, which: Tensor2, v: Vec<f64>, dims: &[usize]) {
    let device = Default::default();
    let adapter = &mut layer.adapters[0];
    match which {
        Tensor2::A => {
            adapter.lora_a = Param::from_tensor(Tensor::from_data(
                TensorData::new(v, dims.to_vec()),
                &device,
            ))
        }
        Tensor2::B => {
            adapter.lora_b = Param::from_tensor(Tensor::from_data(
                TensorData::new(v, dims.to_vec()),
                &device,
            ))
        }
        Tensor2::Magnitude => {
            adapter.magnitude = Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(v, dims.to_vec()),
                &device,
            )))
        }
    }
}

fn check_gradients(config: &LoraConfig, checked: &[Tensor2]) {
    let layer: LoraLinear<Train64> = random_layer(config, 11);
    let device = Default::default();
    let x = Tensor::<Train64, 3>::random([2, 4, 12], Distribution::Default, &device);
    let weights = Tensor::<Train64, 3>::random([2, 4, 7], Distribution::Default, &device);
    let loss = (layer.forward(x.clone()) * weights.clone()).sum();
    let grads = loss.backward();
    assert!(
        layer.base.weight.val().grad(&grads).is_none(),
        "base weight must get no gradient"
    );
    assert!(layer
        .base
        .bias
        .as_ref()
        .unwrap()
        .val()
        .grad(&grads)
        .is_none());
    let adapter = &layer.adapters[0];

    let inner = layer.valid();
    let (x, weights) = (x.inner(), weights.inner());
    let loss_of = |layer: &LoraLinear<Cpu64>| -> f64 {
        (layer.forward(x.clone()) * weights.clone())
            .sum()
            .into_scalar()
    };
    let eps = 1e-6;
    for &which in checked {
        let analytic = match which {
            Tensor2::A => values(adapter.lora_a.val().grad(&grads).unwrap()),
            Tensor2::B => values(adapter.lora_b.val().grad(&grads).unwrap()),
            Tensor2::Magnitude => values(
                adapter
                    .magnitude
                    .as_ref()
                    .unwrap()
                    .val()
                    .grad(&grads)
                    .unwrap(),
            ),
        };
        let (flat, dims) = read(&inner, which);
        for (i, expected) in analytic.iter().enumerate() {
            let with = |delta: f64| {
                let mut shifted = flat.clone();
                shifted[i] += delta;
                let mut l = inner.clone();
                write(&mut l, which, shifted, &dims);
                loss_of(&l)
            };
            let numeric = (with(eps) - with(-eps)) / (2.0 * eps);
            assert_relative_eq!(*expected, numeric, epsilon = 1e-7, max_relative = 1e-6);
        }
    }
}
