//! LoRA on an embedding table: lookups, routing per sample, merging, and what a table refuses.

use burn::backend::NdArray;
use burn::nn::EmbeddingConfig;
use burn::tensor::{Int, Tensor};
use lora_core::{LoraConfig, LoraError, LoraInit, LoraLinear, BASE_ONLY};

type Cpu = NdArray<f32>;

fn values(t: Tensor<Cpu, 3>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

/// A table with one adapter whose update is not zero (both factors random).
fn table() -> LoraLinear<Cpu> {
    let device = Default::default();
    let mut layer = LoraLinear::from_embedding(EmbeddingConfig::new(12, 5).init::<Cpu>(&device));
    let config = LoraConfig::new(3, 6.0).with_init_lora_weights(LoraInit::Random);
    layer.add_adapter("default", &config).unwrap();
    layer
}

fn ids() -> Tensor<Cpu, 2, Int> {
    Tensor::from_ints([[1, 4, 11], [7, 0, 4]], &Default::default())
}

#[track_caller]
fn assert_close(got: &[f32], expected: &[f32]) {
    assert_eq!(got.len(), expected.len());
    for (a, b) in got.iter().zip(expected) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
    }
}

#[test]
fn a_lookup_adds_the_rows_of_the_update() {
    let layer = table();
    let adapter = layer.adapter("default").unwrap();
    // The table with the update added, looked up row by row.
    let merged = layer.base.weight.val() + adapter.delta_weight();
    let expected = burn::tensor::module::embedding(merged, ids());
    assert_close(&values(layer.forward_embedding(ids())), &values(expected));
    let base = burn::tensor::module::embedding(layer.base.weight.val(), ids());
    assert_ne!(values(layer.forward_embedding(ids())), values(base));
}

#[test]
fn merging_and_unmerging_keep_the_lookups() {
    let mut layer = table();
    let adapted = values(layer.forward_embedding(ids()));
    let base = values(burn::tensor::module::embedding(
        layer.base.weight.val(),
        ids(),
    ));
    layer.merge_active().unwrap();
    assert_close(&values(layer.forward_embedding(ids())), &adapted);
    layer.unmerge().unwrap();
    assert_close(&values(layer.forward_embedding(ids())), &adapted);
    layer.disable_adapters().unwrap();
    assert_close(&values(layer.forward_embedding(ids())), &base);
}

#[test]
fn routed_lookups_give_each_sample_its_adapter() {
    let mut layer = table();
    let adapted = values(layer.forward_embedding(ids()));
    let base = values(burn::tensor::module::embedding(
        layer.base.weight.val(),
        ids(),
    ));
    layer
        .set_sample_adapters(Some(&["default", BASE_ONLY]))
        .unwrap();
    let routed = values(layer.forward_embedding(ids()));
    let row = 3 * 5;
    assert_close(&routed[..row], &adapted[..row]);
    assert_close(&routed[row..], &base[row..]);
}

#[test]
fn a_table_refuses_dora_adapters() {
    let mut layer = table();
    let dora = LoraConfig::new(2, 4.0).with_use_dora(true);
    assert!(matches!(
        layer.add_adapter("dora", &dora),
        Err(LoraError::UnsupportedVariant { ref name, .. }) if name == "dora"
    ));
    assert_eq!(layer.adapter_names(), ["default"]);
}

#[test]
fn unloading_keeps_the_layer_a_table() {
    let mut layers = vec![table()];
    lora_core::LoraModelOps::merge_and_unload(&mut layers).unwrap();
    assert!(layers[0].is_embedding() && layers[0].adapters.is_empty());
    // A fresh adapter is a table's again: A zeros, B standard normal.
    layers[0]
        .add_adapter("next", &LoraConfig::new(2, 4.0))
        .unwrap();
    let a: Vec<f32> = layers[0]
        .adapter("next")
        .unwrap()
        .lora_a
        .val()
        .into_data()
        .to_vec()
        .unwrap();
    assert!(a.iter().all(|v| *v == 0.0));
}
