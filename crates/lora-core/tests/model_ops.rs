//! Model-wide LoRA operations (`LoraModelOps`) on a module of several layers, some of which
//! lack an adapter: each operation reaches every layer that has it, refuses names no layer has,
//! and names the layer that fails.

use burn::backend::NdArray;
use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use lora_core::{
    int8_quantizer, lora_module, LoraConfig, LoraError, LoraInit, LoraLinear, LoraModelOps,
    WeightedCombination,
};

type Cpu = NdArray<f32>;

#[derive(Module, Debug)]
struct Pair<B: Backend> {
    q: LoraLinear<B>,
    v: LoraLinear<B>,
}
lora_module!(Pair { q, v });

/// `q` has adapters `default` and `style`; `v` only `default`. Random B, so updates are non-zero.
fn model() -> Pair<Cpu> {
    let device = Default::default();
    let config = LoraConfig::new(2, 4.0).with_init_lora_weights(LoraInit::Random);
    let layer = || LoraLinear::from_linear(LinearConfig::new(4, 4).init(&device), &config).unwrap();
    let mut model = Pair {
        q: layer(),
        v: layer(),
    };
    model.q.add_adapter("style", &config).unwrap();
    model
}

fn values(layer: &LoraLinear<Cpu>) -> Vec<f32> {
    let x = Tensor::<Cpu, 2>::ones([1, 4], &Default::default());
    layer.forward(x).into_data().to_vec::<f32>().unwrap()
}

fn base_values(layer: &LoraLinear<Cpu>) -> Vec<f32> {
    let x = Tensor::<Cpu, 2>::ones([1, 4], &Default::default());
    layer.base.forward(x).into_data().to_vec::<f32>().unwrap()
}

#[test]
fn rename_reaches_every_layer_and_keeps_the_active_state() {
    let mut model = model();
    assert_eq!(model.rename_adapter("default", "main"), Ok(2));
    assert_eq!(model.q.active_adapters(), ["main"]);
    assert_eq!(model.v.active_adapters(), ["main"]);
    assert!(matches!(
        model.rename_adapter("default", "x"),
        Err(LoraError::UnknownAdapter { .. })
    ));
    assert!(matches!(
        model.rename_adapter("style", "main"),
        Err(LoraError::InLayer { path, source }) if path == "q"
            && matches!(*source, LoraError::DuplicateAdapter { .. })
    ));
}

#[test]
fn disable_and_enable_switch_every_layer() {
    let mut model = model();
    let with = (values(&model.q), values(&model.v));
    model.disable_adapters().unwrap();
    assert_eq!(values(&model.q), base_values(&model.q));
    assert_eq!(values(&model.v), base_values(&model.v));
    model.enable_adapters();
    assert_eq!((values(&model.q), values(&model.v)), with);
}

#[test]
fn unload_gives_back_the_base_and_merge_and_unload_keeps_the_output() {
    let mut unloaded = model();
    let bases = (base_values(&unloaded.q), base_values(&unloaded.v));
    assert_eq!(unloaded.unload(), Ok(2));
    assert!(unloaded.adapter_names().is_empty());
    assert_eq!((values(&unloaded.q), values(&unloaded.v)), bases);

    let mut merged = model();
    let with = (values(&merged.q), values(&merged.v));
    assert_eq!(merged.merge_and_unload(), Ok(2));
    assert!(merged.adapter_names().is_empty());
    let (q, v) = (values(&merged.q), values(&merged.v));
    for (got, want) in q.iter().chain(&v).zip(with.0.iter().chain(&with.1)) {
        assert!((got - want).abs() < 1e-5, "{got} vs {want}");
    }
}

#[test]
fn weighted_adapters_combine_what_each_layer_has() {
    let mut model = model();
    let count = model
        .add_weighted_adapter(
            &["default", "style"],
            &[0.5, 0.5],
            "mix",
            WeightedCombination::Cat,
        )
        .unwrap();
    assert_eq!(count, 2);
    // `q` concatenates both rank-2 adapters; `v` has only `default`.
    assert_eq!(model.q.adapter("mix").unwrap().rank(), 4);
    assert_eq!(model.v.adapter("mix").unwrap().rank(), 2);
    assert!(matches!(
        model.add_weighted_adapter(&["nope"], &[1.0], "x", WeightedCombination::Cat),
        Err(LoraError::UnknownAdapter { .. })
    ));
}

#[test]
fn a_refusing_layer_is_named_and_stops_the_walk() {
    let mut model = model();
    model
        .q
        .quantize_base(&mut int8_quantizer::<Cpu>(None))
        .unwrap();
    let err = model.merge_and_unload().unwrap_err();
    assert!(
        matches!(&err, LoraError::InLayer { path, source } if path == "q"
            && matches!(**source, LoraError::QuantizedBase { .. })),
        "{err}"
    );
    // `v` comes after `q`: it was not reached, and keeps its adapter.
    assert_eq!(model.v.adapter_names(), ["default"]);
}

/// The two layers applied one after the other to a row of ones.
fn pair_output(model: &Pair<Cpu>) -> Tensor<Cpu, 2> {
    let x = Tensor::<Cpu, 2>::ones([1, 4], &Default::default());
    model.v.forward(model.q.forward(x))
}

#[test]
fn a_checked_merge_reports_its_error_and_keeps_the_merged_model() {
    let mut model = model();
    model.set_adapter(&["default"]).unwrap();
    let expected = pair_output(&model).into_data().to_vec::<f32>().unwrap();
    let check = model
        .merge_and_unload_checked(pair_output, Some(1e-4))
        .unwrap();
    assert_eq!(check.layers, 2);
    assert!(
        check.max_abs_diff < 1e-5 && check.max_abs_output > 0.0,
        "{check}"
    );
    assert!(model.q.adapters.is_empty() && model.v.adapters.is_empty());
    let merged = pair_output(&model).into_data().to_vec::<f32>().unwrap();
    for (a, b) in merged.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-5);
    }
}

#[test]
fn a_merge_that_loses_the_update_in_rounding_is_refused_and_undone() {
    // With a base weight of 1e8 the outputs are near 1e9, where f32 steps by 64: merging the
    // update into the weight rounds otherwise than adding it to the output.
    let mut model = model();
    let device = Default::default();
    let huge = Tensor::<Cpu, 2>::full([4, 4], 1e8, &device);
    model.q.base.weight = burn::module::Param::from_tensor(huge);
    model.disable_adapters().unwrap();
    model.enable_adapters();
    model.set_adapter(&["default"]).unwrap();
    match model.merge_and_unload_checked(pair_output, Some(1e-3)) {
        Err(LoraError::MergeCheckFailed { reason }) => {
            assert!(reason.contains("left unmerged"), "{reason}")
        }
        other => panic!("expected MergeCheckFailed, got {other:?}"),
    }
    assert_eq!(model.q.adapters.len(), 2, "the model keeps its adapters");
}
