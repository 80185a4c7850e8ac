//! Behaviour of `LoraLinear`: initialisation, freezing, gradients, dropout, adapters, merging.

use approx::assert_relative_eq;
use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Param};
use burn::nn::{Linear, LinearConfig};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorData};
use lora_core::{
    count_parameters, LoraBias, LoraConfig, LoraError, LoraInit, LoraLinear, BASE_ONLY,
};

type Cpu = NdArray<f32>;
type Train = Autodiff<Cpu>;

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().unwrap()
}

/// Largest |a - b| relative to the largest |b|.
fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-30);
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
        / scale
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
fn default_init_is_a_no_op_and_shapes_follow_the_input_rank() {
    let device = Default::default();
    let base: Linear<Cpu> = LinearConfig::new(12, 7).init(&device);
    // Parameters are initialised lazily: materialise them so the clone shares their values.
    let _ = (base.weight.val(), base.bias.as_ref().map(|b| b.val()));
    let layer = LoraLinear::from_linear(base.clone(), &LoraConfig::new(4, 8.0)).unwrap();
    for_each_rank(&layer, &base);
    let b = values(layer.adapters[0].lora_b.val());
    assert!(b.iter().all(|v| *v == 0.0));
    let a = values(layer.adapters[0].lora_a.val());
    let bound = 1.0 / 12f64.sqrt();
    assert!(a.iter().all(|v| v.abs() <= bound) && a.iter().any(|v| *v != 0.0));
}

fn for_each_rank(layer: &LoraLinear<Cpu>, base: &Linear<Cpu>) {
    let device = Default::default();
    let x2 = Tensor::<Cpu, 2>::random([5, 12], Distribution::Default, &device);
    assert_eq!(values(layer.forward(x2.clone())), values(base.forward(x2)));
    let x4 = Tensor::<Cpu, 4>::random([2, 3, 5, 12], Distribution::Default, &device);
    let y4 = layer.forward(x4.clone());
    assert_eq!(y4.dims(), [2, 3, 5, 7]);
    assert_eq!(values(y4), values(base.forward(x4)));
    let x1 = Tensor::<Cpu, 1>::random([12], Distribution::Default, &device);
    assert_eq!(layer.forward(x1).dims(), [7]);
}

#[test]
fn gaussian_and_random_inits_follow_peft() {
    let device = Default::default();
    Cpu::seed(&device, 3);
    let base: Linear<Cpu> = LinearConfig::new(512, 64).init(&device);
    let gaussian = LoraConfig::new(8, 8.0).with_init_lora_weights(LoraInit::Gaussian);
    let layer = LoraLinear::from_linear(base.clone(), &gaussian).unwrap();
    let a = values(layer.adapters[0].lora_a.val());
    let std = (a.iter().map(|v| v * v).sum::<f64>() / a.len() as f64).sqrt();
    assert_relative_eq!(std, 1.0 / 8.0, max_relative = 0.05);
    assert!(values(layer.adapters[0].lora_b.val())
        .iter()
        .all(|v| *v == 0.0));

    let random = LoraConfig::new(8, 8.0).with_init_lora_weights(LoraInit::Random);
    let layer = LoraLinear::from_linear(base, &random).unwrap();
    let b = values(layer.adapters[0].lora_b.val());
    let bound = 1.0 / 8f64.sqrt();
    assert!(b.iter().all(|v| v.abs() <= bound) && b.iter().any(|v| *v != 0.0));
}

#[test]
fn optimizer_step_moves_only_the_adapter_and_keeps_no_state_for_the_base() {
    let layer: LoraLinear<Train> = random_layer(&LoraConfig::new(4, 8.0), 5);
    let device = Default::default();
    let weight_before = layer.base.weight.val().into_data();
    let bias_before = layer.base.bias.as_ref().unwrap().val().into_data();
    let a_before = values(layer.adapters[0].lora_a.val());
    let mut optimizer = AdamWConfig::new().init::<Train, LoraLinear<Train>>();
    let x = Tensor::<Train, 2>::random([8, 12], Distribution::Default, &device);
    let loss = layer.forward(x).square().mean();
    let grads = GradientsParams::from_grads(loss.backward(), &layer);
    assert_eq!(grads.len(), 2, "gradients exist for A and B only");
    let layer = optimizer.step(1e-2, layer, grads);
    assert_eq!(layer.base.weight.val().into_data(), weight_before);
    assert_eq!(
        layer.base.bias.as_ref().unwrap().val().into_data(),
        bias_before
    );
    assert_ne!(values(layer.adapters[0].lora_a.val()), a_before);
    assert_eq!(
        optimizer.to_record().len(),
        2,
        "optimizer state for A and B only"
    );
    let count = count_parameters(&layer);
    assert_eq!(count.trainable, 12 * 4 + 4 * 7);
    assert_eq!(count.total, 12 * 7 + 7 + 12 * 4 + 4 * 7);
}

#[test]
fn bias_modes_unfreeze_the_base_bias() {
    let device = Default::default();
    let base: Linear<Train> = LinearConfig::new(6, 5).init(&device);
    let config = LoraConfig::new(2, 4.0).with_bias(LoraBias::LoraOnly);
    let layer = LoraLinear::from_linear(base, &config).unwrap();
    let x = Tensor::<Train, 2>::ones([3, 6], &device);
    let grads = layer.forward(x).sum().backward();
    assert!(layer
        .base
        .bias
        .as_ref()
        .unwrap()
        .val()
        .grad(&grads)
        .is_some());
    assert!(layer.base.weight.val().grad(&grads).is_none());
    assert_eq!(count_parameters(&layer).trainable, 5 + 12 + 10);

    let mut layer = layer;
    let second = LoraConfig::new(2, 4.0).with_bias(LoraBias::All);
    assert!(matches!(
        layer.add_adapter("second", &second),
        Err(LoraError::MultipleBiasAdapters { .. })
    ));
    layer.delete_adapter("default").unwrap();
    assert_eq!(count_parameters(&layer).trainable, 0);
}

#[test]
fn dropout_acts_on_the_branch_only_while_training() {
    let config = LoraConfig::new(4, 8.0).with_lora_dropout(0.5);
    let layer: LoraLinear<Train> = random_layer(&config, 9);
    let device = Default::default();
    let x = Tensor::<Train, 2>::random([16, 12], Distribution::Default, &device);
    let first = values(layer.forward(x.clone()));
    let second = values(layer.forward(x.clone()));
    assert_ne!(first, second, "training forward must drop out");

    let eval = layer.valid();
    let xe = x.inner();
    let y = values(eval.forward(xe.clone()));
    assert_eq!(y, values(eval.forward(xe.clone())));
    let no_dropout: LoraLinear<Cpu> = {
        let mut l = eval.clone();
        l.adapters[0].dropout.prob = 0.0;
        l
    };
    assert_eq!(y, values(no_dropout.forward(xe)));
}

#[test]
fn merge_unmerge_round_trip_and_agreement() {
    for config in [
        LoraConfig::new(4, 8.0),
        LoraConfig::new(4, 8.0).with_use_rslora(true),
        LoraConfig::new(3, 5.0).with_use_dora(true),
    ] {
        let mut layer: LoraLinear<Cpu> = random_layer(&config, 21);
        if config.use_dora {
            // Move the magnitude away from its initial value so DoRA really rescales.
            let m = layer.adapters[0].magnitude.take().unwrap().val();
            layer.adapters[0].magnitude = Some(Param::from_tensor(m * 1.3 + 0.1));
        }
        let device = Default::default();
        let x = Tensor::<Cpu, 3>::random([2, 5, 12], Distribution::Default, &device);
        let original = values(layer.base.weight.val());
        let unmerged = values(layer.forward(x.clone()));
        layer.merge(&["default"]).unwrap();
        assert!(layer.is_merged());
        assert_ne!(values(layer.base.weight.val()), original);
        let merged = values(layer.forward(x.clone()));
        assert!(relative_error(&merged, &unmerged) < 1e-5, "{config:?}");
        layer.unmerge().unwrap();
        assert!(relative_error(&values(layer.base.weight.val()), &original) < 1e-6);
        assert!(relative_error(&values(layer.forward(x)), &unmerged) < 1e-5);
    }
}

#[test]
fn safe_merge_refuses_non_finite_weights_without_touching_the_base() {
    let mut layer: LoraLinear<Cpu> = random_layer(&LoraConfig::new(2, 4.0), 2);
    let device = Default::default();
    let mut b = values(layer.adapters[0].lora_b.val());
    b[3] = f64::NAN;
    layer.adapters[0].lora_b = Param::from_tensor(Tensor::from_data(
        TensorData::new(b.iter().map(|v| *v as f32).collect(), [2, 7]),
        &device,
    ));
    let before = layer.base.weight.val().into_data();
    let err = layer.safe_merge(&["default"]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "NaNs detected in the merged weights. The adapter `default` seems to be broken"
    );
    assert_eq!(layer.base.weight.val().into_data(), before);
    assert!(!layer.is_merged());
    assert!(layer.clone().merge_and_unload().is_err());
}

#[test]
fn merge_and_unload_returns_the_merged_plain_linear() {
    let layer: LoraLinear<Cpu> = random_layer(&LoraConfig::new(4, 8.0), 8);
    let device = Default::default();
    let x = Tensor::<Cpu, 2>::random([3, 12], Distribution::Default, &device);
    let expected = values(layer.forward(x.clone()));
    let plain = layer.clone().merge_and_unload().unwrap();
    assert!(relative_error(&values(plain.forward(x.clone())), &expected) < 1e-5);
    let original = layer.unload().unwrap();
    assert_ne!(values(original.forward(x)), expected);
}

#[test]
fn named_adapters_can_be_added_listed_activated_disabled_and_deleted() {
    let mut layer: LoraLinear<Cpu> = random_layer(&LoraConfig::new(2, 4.0), 4);
    let random = LoraConfig::new(3, 3.0).with_init_lora_weights(LoraInit::Random);
    layer.add_adapter("second", &random).unwrap();
    assert_eq!(layer.adapter_names(), ["default", "second"]);
    assert_eq!(layer.active_adapters(), ["default"]);
    let device = Default::default();
    let x = Tensor::<Cpu, 2>::random([4, 12], Distribution::Default, &device);
    let base = values(layer.base.forward(x.clone()));
    let only_default = values(layer.forward(x.clone()));
    layer.set_active_adapters(&["second"]).unwrap();
    let only_second = values(layer.forward(x.clone()));
    layer.set_active_adapters(&["default", "second"]).unwrap();
    let both = values(layer.forward(x.clone()));
    let summed: Vec<f64> = (0..base.len())
        .map(|i| only_default[i] + only_second[i] - base[i])
        .collect();
    assert!(relative_error(&both, &summed) < 1e-5);

    layer.disable_adapters().unwrap();
    assert_eq!(values(layer.forward(x.clone())), base);
    layer.enable_adapters();
    assert!(relative_error(&values(layer.forward(x.clone())), &both) < 1e-6);

    layer.merge(&["second"]).unwrap();
    assert!(matches!(
        layer.delete_adapter("second"),
        Err(LoraError::AdapterMerged { .. })
    ));
    layer.disable_adapters().unwrap();
    assert!(!layer.is_merged(), "disabling unmerges, as PEFT does");
    layer.enable_adapters();
    layer.delete_adapter("second").unwrap();
    assert_eq!(layer.adapter_names(), ["default"]);
    assert_eq!(layer.active_adapters(), ["default"]);
}

#[test]
fn mixed_batch_equals_per_sample_forwards() {
    let mut layer: LoraLinear<Cpu> = random_layer(&LoraConfig::new(2, 4.0), 6);
    let random = LoraConfig::new(3, 3.0).with_init_lora_weights(LoraInit::Random);
    layer.add_adapter("second", &random).unwrap();
    let device = Default::default();
    let x = Tensor::<Cpu, 3>::random([3, 4, 12], Distribution::Default, &device);
    let names = ["second", BASE_ONLY, "default"];
    let mixed = layer.forward_mixed(x.clone(), &names).unwrap();
    for (i, name) in names.iter().enumerate() {
        let sample = x.clone().narrow(0, i, 1);
        let expected = if *name == BASE_ONLY {
            layer.base.forward(sample)
        } else {
            let mut single = layer.clone();
            single.set_active_adapters(&[*name]).unwrap();
            single.forward(sample)
        };
        let got = mixed.clone().narrow(0, i, 1);
        assert!(relative_error(&values(got), &values(expected)) < 1e-6);
    }
    assert!(matches!(
        layer.forward_mixed(x.clone(), &["default"]),
        Err(LoraError::BatchSizeMismatch { batch: 3, names: 1 })
    ));
    assert!(matches!(
        layer.forward_mixed(x.clone(), &["default", "nope", BASE_ONLY]),
        Err(LoraError::UnknownAdapter { .. })
    ));
    layer.merge(&["default"]).unwrap();
    assert!(matches!(
        layer.forward_mixed(x, &names),
        Err(LoraError::MergedLayer { .. })
    ));
}

#[test]
fn invalid_inputs_reach_their_typed_errors() {
    let device = Default::default();
    let base: Linear<Cpu> = LinearConfig::new(6, 5).init(&device);
    let cases = [
        (LoraConfig::new(0, 8.0), LoraError::InvalidRank { r: 0 }),
        (
            LoraConfig::new(2, 8.0).with_lora_dropout(-0.1),
            LoraError::InvalidDropout { dropout: -0.1 },
        ),
        (
            LoraConfig::new(2, f64::INFINITY),
            LoraError::InvalidAlpha {
                alpha: f64::INFINITY,
            },
        ),
    ];
    for (config, expected) in cases {
        assert_eq!(
            LoraLinear::from_linear(base.clone(), &config).unwrap_err(),
            expected
        );
    }
    let mut layer = LoraLinear::from_linear(base, &LoraConfig::new(2, 4.0)).unwrap();
    assert!(matches!(
        layer.add_adapter("default", &LoraConfig::new(2, 4.0)),
        Err(LoraError::DuplicateAdapter { .. })
    ));
    assert!(matches!(
        layer.add_adapter(BASE_ONLY, &LoraConfig::new(2, 4.0)),
        Err(LoraError::ReservedAdapterName { .. })
    ));
    assert!(matches!(
        layer.set_active_adapters(&["missing"]),
        Err(LoraError::UnknownAdapter { .. })
    ));
    assert!(matches!(
        layer.merge(&["missing"]),
        Err(LoraError::UnknownAdapter { .. })
    ));
    assert!(matches!(
        layer.delete_adapter("missing"),
        Err(LoraError::UnknownAdapter { .. })
    ));
    let wrong =
        lora_core::LoraAdapter::<Cpu>::new("wrong", 7, 5, &LoraConfig::new(2, 4.0), &device)
            .unwrap();
    assert!(matches!(
        layer.insert_adapter(wrong),
        Err(LoraError::ShapeMismatch { .. })
    ));
    let a = Tensor::<Cpu, 2>::zeros([6, 3], &device);
    let b = Tensor::<Cpu, 2>::zeros([2, 5], &device);
    assert!(matches!(
        lora_core::LoraAdapter::from_weights("x", &LoraConfig::new(2, 4.0), a, b, None),
        Err(LoraError::ShapeMismatch { .. })
    ));
}

#[test]
fn materialized_and_factored_forwards_agree() {
    let mut layer: LoraLinear<Cpu> = random_layer(&LoraConfig::new(4, 8.0), 12);
    let random = LoraConfig::new(2, 3.0).with_init_lora_weights(LoraInit::Random);
    layer.add_adapter("second", &random).unwrap();
    layer.set_active_adapters(&["default", "second"]).unwrap();
    let device = Default::default();
    for tokens in [1, 700] {
        let x = Tensor::<Cpu, 3>::random([1, tokens, 12], Distribution::Default, &device);
        let factored = values(layer.forward_factored(x.clone()));
        let materialized = values(layer.forward_materialized(x.clone()));
        assert!(relative_error(&materialized, &factored) < 1e-5);
        assert!(relative_error(&values(layer.forward(x)), &factored) < 1e-5);
    }
}

#[test]
fn a_magnitude_without_use_dora_is_refused() {
    let device = Default::default();
    let a = Tensor::<Cpu, 2>::ones([4, 2], &device);
    let b = Tensor::<Cpu, 2>::ones([2, 3], &device);
    let magnitude = Tensor::<Cpu, 1>::ones([3], &device);
    let result =
        lora_core::LoraAdapter::from_weights("m", &LoraConfig::new(2, 2.0), a, b, Some(magnitude));
    assert!(
        matches!(result, Err(LoraError::UnexpectedMagnitude { ref name }) if name == "m"),
        "{result:?}"
    );
}

#[test]
fn a_mixed_batch_with_dora_plain_and_base_samples_equals_per_sample_forwards() {
    let dora = LoraConfig {
        use_dora: true,
        ..LoraConfig::new(2, 4.0).with_init_lora_weights(LoraInit::Random)
    };
    let mut layer: LoraLinear<Cpu> = random_layer(&dora, 6);
    let device = Default::default();
    // A trained magnitude (at initialisation DoRA's scale is exactly 1).
    layer.adapters[0].magnitude = Some(burn::module::Param::from_tensor(Tensor::random(
        [7],
        Distribution::Uniform(0.5, 2.0),
        &device,
    )));
    let plain = LoraConfig::new(5, 3.0).with_init_lora_weights(LoraInit::Random);
    layer.add_adapter("plain", &plain).unwrap();
    let x = Tensor::<Cpu, 3>::random([4, 3, 12], Distribution::Default, &device);
    let names = ["plain", "default", BASE_ONLY, "default"];
    let mixed = layer.forward_mixed(x.clone(), &names).unwrap();
    for (i, name) in names.iter().enumerate() {
        let sample = x.clone().narrow(0, i, 1);
        let expected = if *name == BASE_ONLY {
            layer.base.forward(sample)
        } else {
            let mut single = layer.clone();
            single.set_active_adapters(&[*name]).unwrap();
            single.forward(sample)
        };
        let got = mixed.clone().narrow(0, i, 1);
        assert!(
            relative_error(&values(got), &values(expected)) < 1e-5,
            "sample {i} ({name})"
        );
    }
}

#[test]
fn a_dora_adapter_is_refused_by_the_operations_its_variant_does_not_support() {
    let device = Default::default();
    let base = LinearConfig::new(4, 3).init::<Cpu>(&device);
    let dora = LoraConfig {
        use_dora: true,
        ..LoraConfig::new(2, 2.0)
    };
    let mut layer = LoraLinear::from_linear(base, &dora).unwrap();
    let weighted = layer.add_weighted_adapter(
        &["default"],
        &[1.0],
        "w",
        lora_core::WeightedCombination::Linear,
    );
    assert!(
        matches!(
            weighted,
            Err(LoraError::UnsupportedVariant {
                variant: "DoRA",
                ..
            })
        ),
        "{weighted:?}"
    );
}
