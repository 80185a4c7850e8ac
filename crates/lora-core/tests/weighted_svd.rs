//! PEFT's SVD combinations with the default rank and with `svd_clamp`.
//!
//! Fixture: `scripts/gen_weighted_svd_fixtures.py` runs PEFT 0.21.2's `add_weighted_adapter` on
//! one linear layer with two adapters of ranks 2 and 3. Without `svd_rank` PEFT keeps the
//! largest source rank; with `svd_clamp` it clamps both factors to that quantile of their
//! entries. Singular vectors have a sign per pair: the script drew the layer so that LAPACK's
//! orientation is the one this crate uses (largest-magnitude entry of each output-side vector
//! positive), so the clamped factors must agree too. Tolerance: 1e-5 of the largest magnitude.

use burn::backend::NdArray;
use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::{Tensor, TensorData};
use lora_core::{
    LoraAdapter, LoraConfig, LoraError, LoraLinear, LoraModelOps, MajoritySign, WeightedCombination,
};
use serde_json::Value;

type Cpu = NdArray<f32>;
const TOLERANCE: f32 = 1e-5;

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/weighted_svd.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A `[rows, cols]` fixture matrix (PyTorch layout) as a Burn tensor `[cols, rows]`.
fn transposed(value: &Value) -> Tensor<Cpu, 2> {
    let rows: Vec<Vec<f32>> = value
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    let (n, m) = (rows.len(), rows[0].len());
    let flat: Vec<f32> = rows.into_iter().flatten().collect();
    Tensor::<Cpu, 2>::from_data(TensorData::new(flat, [n, m]), &Default::default()).transpose()
}

fn layer(f: &Value) -> LoraLinear<Cpu> {
    let mut layer = LoraLinear::new(Linear {
        weight: Param::from_tensor(transposed(&f["base"])),
        bias: None,
    });
    for name in ["one", "two"] {
        let source = &f["sources"][name];
        let config = LoraConfig::new(
            source["r"].as_u64().unwrap() as usize,
            source["lora_alpha"].as_f64().unwrap(),
        );
        let adapter = LoraAdapter::from_weights(
            name,
            &config,
            transposed(&source["lora_A"]),
            transposed(&source["lora_B"]),
            None,
        )
        .unwrap();
        layer.insert_adapter(adapter).unwrap();
    }
    layer
}

fn weights(f: &Value) -> Vec<f64> {
    f["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[track_caller]
fn assert_close(got: Tensor<Cpu, 2>, expected: Tensor<Cpu, 2>, what: &str) {
    assert_eq!(got.dims(), expected.dims(), "{what}");
    let got: Vec<f32> = got.into_data().to_vec().unwrap();
    let expected: Vec<f32> = expected.into_data().to_vec().unwrap();
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (a, b)) in got.iter().zip(&expected).enumerate() {
        assert!(
            (a - b).abs() <= TOLERANCE * scale,
            "{what}[{i}]: {a} vs {b}"
        );
    }
}

fn combination(case: &Value) -> WeightedCombination {
    let rank = case["svd_rank"].as_u64().map(|r| r as usize);
    let clamp = case["svd_clamp"].as_f64();
    let density = case["density"].as_f64().unwrap_or(1.0);
    match case["combination_type"].as_str().unwrap() {
        "svd" => WeightedCombination::Svd { rank, clamp },
        "ties_svd" => WeightedCombination::TiesSvd {
            rank,
            clamp,
            density,
            majority_sign: MajoritySign::Total,
        },
        "magnitude_prune_svd" => WeightedCombination::MagnitudePruneSvd {
            rank,
            clamp,
            density,
        },
        other => panic!("unknown combination_type {other}"),
    }
}

fn matches_peft(name: &str) {
    let f = fixture();
    let case = &f["cases"][name];
    let mut layer = layer(&f);
    layer
        .add_weighted_adapter(&["one", "two"], &weights(&f), name, combination(case))
        .unwrap();
    let adapter = layer.adapter(name).unwrap();
    assert_eq!(
        adapter.rank(),
        case["r"].as_u64().unwrap() as usize,
        "{name}: rank"
    );
    assert_close(adapter.delta_weight(), transposed(&case["delta"]), name);
    // With a clamp, the factors themselves (the clamp acts on them, in the orientation the
    // fixture shares); without one they are defined up to a sign per pair.
    if case["svd_clamp"].is_f64() {
        assert_close(adapter.lora_a.val(), transposed(&case["lora_A"]), name);
        assert_close(adapter.lora_b.val(), transposed(&case["lora_B"]), name);
    }
}

#[test]
fn svd_without_a_rank_keeps_the_largest_source_rank() {
    matches_peft("svd_default_rank");
}

#[test]
fn ties_svd_without_a_rank_keeps_the_largest_source_rank() {
    matches_peft("ties_svd_default_rank");
}

#[test]
fn svd_clamp_clamps_the_factors_to_the_quantile() {
    matches_peft("svd_clamp");
}

#[test]
fn magnitude_prune_svd_with_clamp_matches_peft() {
    matches_peft("magnitude_prune_svd_clamp");
}

#[test]
fn the_clamp_changes_the_result() {
    let f = fixture();
    let mut layer = layer(&f);
    let unclamped = WeightedCombination::Svd {
        rank: Some(2),
        clamp: None,
    };
    layer
        .add_weighted_adapter(&["one", "two"], &weights(&f), "plain", unclamped)
        .unwrap();
    let plain: Vec<f32> = layer
        .adapter("plain")
        .unwrap()
        .delta_weight()
        .into_data()
        .to_vec()
        .unwrap();
    let clamped: Vec<f32> = transposed(&f["cases"]["svd_clamp"]["delta"])
        .into_data()
        .to_vec()
        .unwrap();
    let moved = plain
        .iter()
        .zip(&clamped)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(moved > 1e-2, "{moved}");
}

#[test]
fn a_clamp_outside_zero_to_one_is_refused() {
    let f = fixture();
    for clamp in [-0.1, 1.5, f64::NAN] {
        let mut layer = layer(&f);
        let method = WeightedCombination::Svd {
            rank: None,
            clamp: Some(clamp),
        };
        let err = layer
            .add_weighted_adapter(&["one", "two"], &weights(&f), "mix", method)
            .unwrap_err();
        assert!(
            matches!(err, LoraError::InvalidWeightedAdapter { .. }),
            "{clamp}: {err:?}"
        );
        assert!(err.to_string().contains("svd_clamp"), "{err}");
    }
}

#[test]
fn the_model_default_rank_is_the_largest_over_every_layer() {
    // Two layers: the second holds `two` at rank 1 only; the model-wide default is still 3,
    // as PEFT takes it from the adapters' configs.
    let f = fixture();
    let first = layer(&f);
    let mut second = LoraLinear::new(first.base.clone());
    second.add_adapter("one", &LoraConfig::new(2, 4.0)).unwrap();
    second.add_adapter("two", &LoraConfig::new(1, 3.0)).unwrap();
    let mut model = vec![first, second];
    let method = WeightedCombination::Svd {
        rank: None,
        clamp: None,
    };
    model
        .add_weighted_adapter(&["one", "two"], &weights(&f), "mix", method)
        .unwrap();
    assert_eq!(model[0].adapter("mix").unwrap().rank(), 3);
    assert_eq!(model[1].adapter("mix").unwrap().rank(), 3);
}
