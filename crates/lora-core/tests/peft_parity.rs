//! `LoraLinear` against numbers produced by Hugging Face PEFT itself.
//!
//! The fixtures come from `scripts/gen_lora_core_fixtures.py` (real `peft` and `torch`); see
//! `tests/fixtures/README.md`. Weights there are in PyTorch layout (`[out, in]`) and are
//! transposed into Burn's layout here. Tolerance: 1e-5 of the largest magnitude (f32).

use std::collections::HashMap;

use burn::backend::{Autodiff, NdArray};
use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use lora_core::{
    count_parameters, mark_only_lora_as_trainable, LoraAdapter, LoraBias, LoraConfig, LoraLinear,
    MajoritySign, WeightedCombination,
};
use safetensors::SafeTensors;
use serde_json::Value;

type Cpu = NdArray<f32>;
const TOLERANCE: f64 = 1e-5;

struct Fixtures {
    tensors: HashMap<String, (Vec<f32>, Vec<usize>)>,
    json: Value,
}

fn fixtures() -> Fixtures {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let bytes = std::fs::read(format!("{dir}/peft_layer.safetensors")).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    let tensors = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let values = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            (name, (values, view.shape().to_vec()))
        })
        .collect();
    let json =
        serde_json::from_str(&std::fs::read_to_string(format!("{dir}/peft_layer.json")).unwrap())
            .unwrap();
    Fixtures { tensors, json }
}

impl Fixtures {
    fn raw(&self, name: &str) -> &(Vec<f32>, Vec<usize>) {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("fixture tensor {name}"))
    }

    fn tensor<const D: usize>(&self, name: &str) -> Tensor<Cpu, D> {
        let (values, shape) = self.raw(name);
        Tensor::from_data(
            TensorData::new(values.clone(), shape.clone()),
            &Default::default(),
        )
    }

    /// A PyTorch `[out, in]` matrix as Burn's `[in, out]`.
    fn transposed(&self, name: &str) -> Tensor<Cpu, 2> {
        self.tensor::<2>(name).transpose()
    }

    fn base(&self, case: &str) -> Linear<Cpu> {
        Linear {
            weight: Param::from_tensor(self.transposed(&format!("{case}.base_weight"))),
            bias: Some(Param::from_tensor(
                self.tensor(&format!("{case}.base_bias")),
            )),
        }
    }

    fn config(&self, entry: &Value) -> LoraConfig {
        LoraConfig::new(
            entry["r"].as_u64().unwrap() as usize,
            entry["lora_alpha"].as_f64().unwrap(),
        )
        .with_use_rslora(entry["use_rslora"].as_bool().unwrap())
        .with_use_dora(entry["use_dora"].as_bool().unwrap())
    }

    /// The layer of `case` with every adapter of the fixture, in file order, loaded.
    fn layer(&self, case: &str) -> LoraLinear<Cpu> {
        let mut layer = LoraLinear::new(self.base(case));
        let adapters = self.json[case]["adapters"].as_object().unwrap();
        for (name, entry) in adapters {
            let config = self.config(entry);
            assert_eq!(config.scaling(), entry["scaling"].as_f64().unwrap());
            let magnitude_key = format!("{case}.{name}.magnitude");
            let magnitude = self
                .tensors
                .contains_key(&magnitude_key)
                .then(|| self.tensor::<1>(&magnitude_key));
            let adapter = LoraAdapter::from_weights(
                name,
                &config,
                self.transposed(&format!("{case}.{name}.lora_A")),
                self.transposed(&format!("{case}.{name}.lora_B")),
                magnitude,
            )
            .unwrap();
            layer.insert_adapter(adapter).unwrap();
        }
        layer
    }
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().unwrap()
}

#[track_caller]
fn assert_close<const D: usize>(got: Tensor<Cpu, D>, expected: Tensor<Cpu, D>, what: &str) {
    assert_eq!(got.dims(), expected.dims(), "{what}: shape");
    let (got, expected) = (values(got), values(expected));
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        worst <= TOLERANCE * scale,
        "{what}: max abs error {worst:e} exceeds {TOLERANCE:e} × {scale}"
    );
}

#[test]
fn forward_and_merge_match_peft_for_lora() {
    forward_and_merge_match_peft("default");
}

#[test]
fn forward_and_merge_match_peft_for_rslora() {
    forward_and_merge_match_peft("rslora");
}

fn forward_and_merge_match_peft(case: &str) {
    let f = fixtures();

    let mut layer = f.layer(case);
    let x = f.tensor::<3>(&format!("{case}.x"));
    assert_close(
        layer.forward(x.clone()),
        f.tensor(&format!("{case}.y")),
        case,
    );
    layer.merge(&["default"]).unwrap();
    assert_close(
        layer.base.weight.val(),
        f.transposed(&format!("{case}.merged_weight")),
        "merged weight",
    );
    assert_close(
        layer.forward(x),
        f.tensor(&format!("{case}.y")),
        "merged forward",
    );
}

#[test]
fn dora_forward_merge_and_initial_magnitude_match_peft() {
    let f = fixtures();
    let mut layer = f.layer("dora");
    let x = f.tensor::<3>("dora.x");
    assert_close(layer.forward(x.clone()), f.tensor("dora.y"), "dora forward");
    layer.merge(&["default"]).unwrap();
    assert_close(
        layer.base.weight.val(),
        f.transposed("dora.merged_weight"),
        "dora merged weight",
    );
    assert_close(
        layer.forward(x),
        f.tensor("dora.y_merged"),
        "dora merged forward",
    );

    // Without a stored magnitude, the layer computes PEFT's initial one.
    let mut layer = LoraLinear::new(f.base("dora_init"));
    let config = f.config(&f.json["dora_init"]["adapters"]["default"]);
    let adapter = LoraAdapter::from_weights(
        "default",
        &config,
        f.transposed("dora_init.default.lora_A"),
        f.transposed("dora_init.default.lora_B"),
        None,
    )
    .unwrap();
    layer.insert_adapter(adapter).unwrap();
    let magnitude = layer.adapters[0].magnitude.as_ref().unwrap().val();
    assert_close(
        magnitude,
        f.tensor("dora_init.default.magnitude"),
        "initial magnitude",
    );
    assert_close(
        layer.forward(f.tensor::<3>("dora_init.x")),
        f.tensor("dora_init.y"),
        "init",
    );
}

#[test]
fn several_active_adapters_and_mixed_batches_match_peft() {
    let f = fixtures();
    let mut layer = f.layer("multi");
    let x = f.tensor::<3>("multi.x");
    layer.set_active_adapters(&["a"]).unwrap();
    assert_close(layer.forward(x.clone()), f.tensor("multi.y_a"), "a");
    layer.set_active_adapters(&["b"]).unwrap();
    assert_close(layer.forward(x.clone()), f.tensor("multi.y_b"), "b");
    layer.set_active_adapters(&["a", "b"]).unwrap();
    assert_close(layer.forward(x.clone()), f.tensor("multi.y_ab"), "a+b");
    for (key, output) in [
        ("mixed_adapter_names", "multi.y_mixed"),
        ("mixed2_adapter_names", "multi.y_mixed2"),
    ] {
        let names: Vec<&str> = f.json["multi"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let got = layer.forward_mixed(x.clone(), &names).unwrap();
        assert_close(got, f.tensor(output), output);
    }
}

/// The weighted-combination fixture's layer (adapters `a`, `b`, ...) and its weights.
fn weighted_layer(f: &Fixtures) -> (LoraLinear<Cpu>, Vec<f64>) {
    let layer = f.layer("weighted");
    let weights: Vec<f64> = f.json["weighted"]["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    (layer, weights)
}

/// `add_weighted_adapter` as PEFT's fixture `case` did it; returns the layer with the result.
fn weighted_adapter_matches_peft(case: &str) -> LoraLinear<Cpu> {
    let f = fixtures();
    let (mut layer, weights) = weighted_layer(&f);
    let x = f.tensor::<3>("weighted.x");
    let entry = &f.json[case];
    let sources: Vec<&str> = entry["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let rank = entry["svd_rank"].as_u64().map(|r| r as usize);
    let density = entry["density"].as_f64();
    let majority_sign = match entry["majority_sign_method"].as_str() {
        Some("frequency") => MajoritySign::Frequency,
        _ => MajoritySign::Total,
    };
    let combination_type = entry["combination_type"].as_str().unwrap();
    let (rank, density) = (|| rank.unwrap(), || density.unwrap());
    // DARE's masks are random: at density 1 PEFT (and this crate) prune nothing.
    let seed = 0;
    let method = match combination_type {
        "cat" => WeightedCombination::Cat,
        "linear" => WeightedCombination::Linear,
        "svd" => WeightedCombination::Svd {
            rank: Some(rank()),
            clamp: None,
        },
        "ties" => WeightedCombination::Ties {
            density: density(),
            majority_sign,
        },
        "magnitude_prune" => WeightedCombination::MagnitudePrune { density: density() },
        "dare_linear" => WeightedCombination::DareLinear {
            density: density(),
            seed,
        },
        "dare_ties" => WeightedCombination::DareTies {
            density: density(),
            majority_sign,
            seed,
        },
        "ties_svd" => WeightedCombination::TiesSvd {
            rank: Some(rank()),
            clamp: None,
            density: density(),
            majority_sign,
        },
        "magnitude_prune_svd" => WeightedCombination::MagnitudePruneSvd {
            rank: Some(rank()),
            clamp: None,
            density: density(),
        },
        "dare_linear_svd" => WeightedCombination::DareLinearSvd {
            rank: Some(rank()),
            clamp: None,
            density: density(),
            seed,
        },
        "dare_ties_svd" => WeightedCombination::DareTiesSvd {
            rank: Some(rank()),
            clamp: None,
            density: density(),
            majority_sign,
            seed,
        },
        other => panic!("unknown combination_type {other}"),
    };
    layer
        .add_weighted_adapter(&sources, &weights, case, method)
        .unwrap();
    let adapter = layer.adapter(case).unwrap();
    assert_eq!(
        adapter.rank(),
        entry["r"].as_u64().unwrap() as usize,
        "{case}"
    );
    assert_eq!(
        adapter.config.lora_alpha,
        entry["lora_alpha"].as_f64().unwrap()
    );
    assert_eq!(adapter.scaling(), entry["scaling"].as_f64().unwrap());
    if !combination_type.ends_with("svd") {
        assert_close(
            adapter.lora_a.val(),
            f.transposed(&format!("{case}.lora_A")),
            case,
        );
        assert_close(
            adapter.lora_b.val(),
            f.transposed(&format!("{case}.lora_B")),
            case,
        );
    } else {
        // Singular vectors are defined up to sign: compare the update itself.
        assert_close(
            adapter.delta_weight(),
            f.transposed(&format!("{case}.delta")),
            case,
        );
    }
    let mut single = layer.clone();
    single.set_active_adapters(&[case]).unwrap();
    assert_close(
        single.forward(x.clone()),
        f.tensor(&format!("{case}.y")),
        case,
    );
    layer
}

#[test]
fn weighted_ties_matches_peft() {
    weighted_adapter_matches_peft("weighted_ties");
}

#[test]
fn weighted_ties_with_the_frequency_sign_matches_peft() {
    weighted_adapter_matches_peft("weighted_ties_frequency");
}

#[test]
fn weighted_magnitude_prune_matches_peft() {
    weighted_adapter_matches_peft("weighted_magnitude_prune");
}

#[test]
fn weighted_dare_linear_at_density_one_matches_peft() {
    weighted_adapter_matches_peft("weighted_dare_linear");
}

#[test]
fn weighted_dare_ties_at_density_one_matches_peft() {
    weighted_adapter_matches_peft("weighted_dare_ties");
}

#[test]
fn weighted_ties_svd_matches_peft() {
    weighted_adapter_matches_peft("weighted_ties_svd");
}

#[test]
fn weighted_magnitude_prune_svd_matches_peft() {
    weighted_adapter_matches_peft("weighted_magnitude_prune_svd");
}

#[test]
fn weighted_dare_linear_svd_at_density_one_matches_peft() {
    weighted_adapter_matches_peft("weighted_dare_linear_svd");
}

#[test]
fn weighted_dare_ties_svd_at_density_one_matches_peft() {
    weighted_adapter_matches_peft("weighted_dare_ties_svd");
}

#[test]
fn dare_repeats_its_masks_for_a_seed_and_a_single_source_combines_linearly() {
    let f = fixtures();
    let (mut layer, weights) = weighted_layer(&f);
    let dare = |seed| WeightedCombination::DareLinear { density: 0.5, seed };
    layer
        .add_weighted_adapter(&["a", "b2"], &weights, "d1", dare(7))
        .unwrap();
    layer
        .add_weighted_adapter(&["a", "b2"], &weights, "d2", dare(7))
        .unwrap();
    layer
        .add_weighted_adapter(&["a", "b2"], &weights, "d3", dare(8))
        .unwrap();
    let values = |layer: &LoraLinear<Cpu>, name: &str| {
        let adapter = layer.adapter(name).unwrap();
        adapter.lora_a.val().into_data().to_vec::<f32>().unwrap()
    };
    assert_eq!(
        values(&layer, "d1"),
        values(&layer, "d2"),
        "one seed, one mask"
    );
    assert_ne!(
        values(&layer, "d1"),
        values(&layer, "d3"),
        "another seed, another mask"
    );
    // With one source the mask is irrelevant: PEFT combines a single adapter linearly.
    layer
        .add_weighted_adapter(&["a"], &[1.0], "single", dare(7))
        .unwrap();
    layer
        .add_weighted_adapter(&["a"], &[1.0], "single_linear", WeightedCombination::Linear)
        .unwrap();
    assert_eq!(values(&layer, "single"), values(&layer, "single_linear"));
}

#[test]
fn a_negative_density_is_refused() {
    let f = fixtures();
    let (mut layer, weights) = weighted_layer(&f);
    let err = layer
        .add_weighted_adapter(
            &["a", "b2"],
            &weights,
            "bad",
            WeightedCombination::MagnitudePrune { density: -0.1 },
        )
        .unwrap_err();
    assert!(err.to_string().contains("density"), "{err}");
}

#[test]
fn weighted_cat_matches_peft() {
    weighted_adapter_matches_peft("weighted_cat");
}

#[test]
fn weighted_linear_matches_peft() {
    weighted_adapter_matches_peft("weighted_linear");
}

#[test]
fn weighted_svd_matches_peft() {
    weighted_adapter_matches_peft("weighted_svd");
}

#[test]
fn weighted_full_rank_svd_matches_peft_and_is_exact() {
    let layer = weighted_adapter_matches_peft("weighted_svd_full");
    assert_close(
        layer.adapter("weighted_svd_full").unwrap().delta_weight(),
        fixtures().transposed("weighted_svd_full.exact"),
        "full-rank svd is exact",
    );
}

#[test]
fn weighted_linear_refuses_unequal_ranks_as_peft() {
    let f = fixtures();
    let (mut layer, weights) = weighted_layer(&f);
    let err = layer
        .add_weighted_adapter(&["a", "b"], &weights, "bad", WeightedCombination::Linear)
        .unwrap_err();
    assert!(err.to_string().contains("equal ranks"), "{err}");
}

#[derive(Module, Debug)]
struct Tiny<B: Backend> {
    proj_in: Linear<B>,
    q: LoraLinear<B>,
    out: LoraLinear<B>,
}

#[test]
fn parameter_counts_and_summary_line_match_peft() {
    type Train = Autodiff<Cpu>;
    let f = fixtures();
    let device = Default::default();
    for (case, bias) in [
        ("param_count", LoraBias::None),
        ("param_count_bias_all", LoraBias::All),
        ("param_count_bias_lora_only", LoraBias::LoraOnly),
    ] {
        let config = LoraConfig::new(2, 4.0).with_bias(bias);
        let q = LinearConfig::new(8, 8).with_bias(false).init(&device);
        let model = Tiny {
            proj_in: LinearConfig::new(6, 8).init::<Train>(&device),
            q: LoraLinear::from_linear(q, &config).unwrap(),
            out: LoraLinear::from_linear(LinearConfig::new(8, 4).init(&device), &config).unwrap(),
        };
        let model = mark_only_lora_as_trainable(model, bias);
        let count = count_parameters(&model);
        let expected = &f.json[case];
        assert_eq!(
            count.trainable as u64,
            expected["trainable"].as_u64().unwrap()
        );
        assert_eq!(count.total as u64, expected["total"].as_u64().unwrap());
        assert_eq!(
            count.to_string(),
            expected["printed"].as_str().unwrap().trim()
        );
    }
}
