//! Module copies (PEFT's `modules_to_save`): a full copy of a layer per adapter, computed in
//! place of the layer while its adapter is active.

use burn::backend::{Autodiff, NdArray};
use burn::module::Param;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Distribution, Tensor};
use lora_core::{LoraConfig, LoraError, LoraLinear, LoraModelOps};

// Autodiff, so that trainability (`require_grad`) is observable.
type Cpu = Autodiff<NdArray<f32>>;

fn values(t: Tensor<Cpu, 2>) -> Vec<f32> {
    t.into_data().to_vec().unwrap()
}

fn head() -> LoraLinear<Cpu> {
    LoraLinear::new(LinearConfig::new(6, 4).init::<Cpu>(&Default::default()))
}

/// A copy of `layer`'s base with every weight moved, as training would.
fn trained_copy(layer: &LoraLinear<Cpu>) -> Linear<Cpu> {
    let device = Default::default();
    let shift = Tensor::<Cpu, 2>::random([6, 4], Distribution::Uniform(0.5, 1.0), &device);
    Linear {
        weight: Param::from_tensor(layer.base.weight.val() + shift),
        bias: layer
            .base
            .bias
            .as_ref()
            .map(|b| Param::from_tensor(b.val().add_scalar(1.0))),
    }
}

fn input() -> Tensor<Cpu, 2> {
    Tensor::random(
        [3, 6],
        Distribution::Uniform(-1.0, 1.0),
        &Default::default(),
    )
}

#[test]
fn the_active_copy_replaces_the_layer_and_trains() {
    let mut layer = head();
    let x = input();
    let base = values(layer.forward(x.clone()));
    let copy = trained_copy(&layer);
    let expected = values(copy.forward(x.clone()));
    layer.insert_module_copy("default", copy).unwrap();
    assert_eq!(layer.active_adapters(), ["default"]);
    assert_eq!(values(layer.forward(x.clone())), expected);
    assert!(layer
        .module_copy("default")
        .unwrap()
        .layer
        .weight
        .is_require_grad());
    assert!(!layer.base.weight.is_require_grad());

    layer.disable_adapters().unwrap();
    assert_eq!(
        values(layer.forward(x.clone())),
        base,
        "disabled: the original layer"
    );
    layer.enable_adapters();
    layer.set_active_adapters::<&str>(&[]).unwrap();
    assert_eq!(
        values(layer.forward(x)),
        base,
        "no active adapter: the original layer"
    );
    assert!(!layer
        .module_copy("default")
        .unwrap()
        .layer
        .weight
        .is_require_grad());
}

#[test]
fn each_adapter_has_its_own_copy() {
    let mut layer = head();
    let x = input();
    let (first, second) = (trained_copy(&layer), trained_copy(&layer));
    let (want_first, want_second) = (
        values(first.forward(x.clone())),
        values(second.forward(x.clone())),
    );
    layer.insert_module_copy("a", first).unwrap();
    layer.insert_module_copy("b", second).unwrap();
    assert_eq!(values(layer.forward(x.clone())), want_first);
    layer.set_active_adapters(&["b"]).unwrap();
    assert_eq!(values(layer.forward(x.clone())), want_second);
    assert!(!layer
        .module_copy("a")
        .unwrap()
        .layer
        .weight
        .is_require_grad());
    assert_eq!(
        layer.set_active_adapters(&["a", "b"]),
        Err(LoraError::ModuleCopyUnsupported {
            operation: "activating several adapters at once"
        })
    );
    assert_eq!(layer.active_adapters(), ["b"], "a refusal changes nothing");
}

#[test]
fn merge_and_unload_puts_the_active_copy_in_place() {
    let mut layer = head();
    let x = input();
    let copy = trained_copy(&layer);
    let expected = values(copy.forward(x.clone()));
    layer.insert_module_copy("default", copy).unwrap();
    let mut model = vec![layer];
    assert_eq!(model.merge_and_unload().unwrap(), 1);
    assert!(model[0].copies.is_empty() && model[0].adapters.is_empty());
    assert_eq!(values(model[0].forward(x)), expected);
}

#[test]
fn a_layer_holds_copies_or_lora_adapters_not_both() {
    let mut copied = head();
    copied.add_module_copy("saved").unwrap();
    assert!(matches!(
        copied.add_adapter("lora", &LoraConfig::new(2, 4.0)),
        Err(LoraError::MixedModuleCopy { ref name, ref other }) if name == "lora" && other == "saved"
    ));
    let mut adapted = LoraLinear::from_linear(head().base, &LoraConfig::new(2, 4.0)).unwrap();
    assert!(matches!(
        adapted.add_module_copy("saved"),
        Err(LoraError::MixedModuleCopy { .. })
    ));
    assert!(matches!(
        copied.add_module_copy("saved"),
        Err(LoraError::DuplicateAdapter { .. })
    ));
}

#[test]
fn a_copy_of_another_shape_or_without_the_bias_is_refused() {
    let mut layer = head();
    let device = Default::default();
    let wide = LinearConfig::new(6, 5).init::<Cpu>(&device);
    assert!(matches!(
        layer.insert_module_copy("wide", wide),
        Err(LoraError::ShapeMismatch { .. })
    ));
    let unbiased = LinearConfig::new(6, 4)
        .with_bias(false)
        .init::<Cpu>(&device);
    assert!(matches!(
        layer.insert_module_copy("unbiased", unbiased),
        Err(LoraError::ShapeMismatch { ref what, .. }) if what.contains("bias")
    ));
    assert!(layer.copies.is_empty());
}

#[test]
fn model_operations_rename_switch_and_delete_copies() {
    let mut model = vec![head(), head()];
    model[0].add_module_copy("default").unwrap();
    model[1]
        .add_adapter("default", &LoraConfig::new(2, 4.0))
        .unwrap();
    assert_eq!(model.adapter_names(), ["default"]);
    assert_eq!(model.rename_adapter("default", "task").unwrap(), 2);
    assert!(model[0].module_copy("task").is_some());
    model.set_adapter(&["task"]).unwrap();
    assert_eq!(model[0].active_adapters(), ["task"]);
    assert_eq!(model.delete_adapter("task").unwrap(), 2);
    assert!(model[0].copies.is_empty() && model[1].adapters.is_empty());
    assert!(model.adapter_names().is_empty());
}

#[test]
fn routing_samples_through_a_copied_layer_is_refused() {
    let mut layer = head();
    layer.add_module_copy("default").unwrap();
    assert_eq!(
        layer.set_sample_adapters(Some(&["default"])),
        Err(LoraError::ModuleCopyUnsupported {
            operation: "routing samples to adapters"
        })
    );
}

#[test]
fn every_forward_path_computes_the_active_copy() {
    let mut layer = head();
    let x = input();
    let copy = trained_copy(&layer);
    let expected = values(copy.forward(x.clone()));
    layer.insert_module_copy("default", copy).unwrap();
    assert_eq!(values(layer.forward_factored(x.clone())), expected);
    assert_eq!(values(layer.forward_materialized(x)), expected);
}
