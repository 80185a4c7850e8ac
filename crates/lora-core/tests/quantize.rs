//! Int8 base weights: outputs within the quantization error, adapters exact, merges refused.

use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor};
use lora_core::{
    int8_quantizer, merge_and_unload_quantized, quantize_base_weights, LoraConfig, LoraError,
    LoraInit, LoraLinear,
};

type Cpu = NdArray<f32>;
type Train = Autodiff<Cpu>;

/// The tests draw from Burn's global RNG after seeding it: they must not interleave.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

const D_IN: usize = 96;
const D_OUT: usize = 64;

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f64> {
    t.into_data().convert::<f64>().to_vec::<f64>().unwrap()
}

/// A layer with a random base and a random (non-zero) adapter, so both paths are exercised.
fn layer<B: Backend>(seed: u64) -> LoraLinear<B> {
    let device = Default::default();
    B::seed(&device, seed);
    let base: Linear<B> = LinearConfig::new(D_IN, D_OUT).init(&device);
    let config = LoraConfig::new(8, 16.0).with_init_lora_weights(LoraInit::Random);
    let layer = LoraLinear::from_linear(base, &config).unwrap();
    // Parameters are created lazily: materialise them before anything else draws numbers.
    let _ = (
        layer.base.weight.val(),
        layer.base.bias.as_ref().map(|b| b.val()),
    );
    layer
}

fn input<B: Backend>() -> Tensor<B, 2> {
    let device = Default::default();
    B::seed(&device, 99);
    Tensor::random([5, D_IN], Distribution::Uniform(-1.0, 1.0), &device)
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// Largest |quantized - float| over the outputs, and the worst-case bound for per-tensor
/// symmetric int8: each weight is off by at most half a step, `max|W| / 127 / 2`, so output `j`
/// is off by at most `Σ_i |x_i| · step / 2`.
fn error_and_bound(block: Option<u8>) -> (f64, f64) {
    let float = layer::<Cpu>(7);
    let weights = values(float.base.weight.val());
    let step = weights.iter().fold(0.0f64, |m, w| m.max(w.abs())) / 127.0;
    let x = input::<Cpu>();
    let row_sum = values(x.clone().abs().sum_dim(1))
        .into_iter()
        .fold(0.0f64, f64::max);
    let expected = values(float.forward(x.clone()));

    let mut quantized = layer::<Cpu>(7);
    quantized
        .quantize_base(&mut int8_quantizer::<Cpu>(block))
        .unwrap();
    assert!(quantized.is_base_quantized());
    let got = values(quantized.forward(x));
    let error = max_abs_diff(&got, &expected);
    // f32 rounding of the products adds a little on top of the quantization bound.
    (error, row_sum * step / 2.0 * 1.001 + 1e-5)
}

#[test]
fn int8_outputs_stay_within_the_quantization_bound() {
    let _rng = rng_lock();
    let (per_tensor, bound) = error_and_bound(None);
    assert!(per_tensor > 0.0, "the weight was not quantized");
    assert!(
        per_tensor <= bound,
        "error {per_tensor} above bound {bound}"
    );
    let (per_block, bound) = error_and_bound(Some(32));
    assert!(per_block > 0.0 && per_block <= bound);
    // One scale per 32 weights tracks the local range: clearly more accurate than one scale.
    assert!(
        per_block < per_tensor,
        "block error {per_block} not below tensor error {per_tensor}"
    );
}

#[test]
fn int8_base_stores_a_quarter_of_the_bytes() {
    let _rng = rng_lock();
    let mut layer = layer::<Cpu>(3);
    let float_bytes = layer.base.weight.val().into_data().bytes.len();
    layer
        .quantize_base(&mut int8_quantizer::<Cpu>(Some(32)))
        .unwrap();
    let int8_bytes = layer.base.weight.val().into_data().bytes.len();
    assert_eq!(float_bytes, D_IN * D_OUT * 4);
    // One byte per weight plus one f32 scale per block of 32.
    assert!(
        int8_bytes <= D_IN * D_OUT + D_IN * D_OUT / 32 * 4 + 64,
        "{int8_bytes} bytes"
    );
}

#[test]
fn int8_is_refused_on_an_autodiff_backend_and_works_on_its_inner_backend() {
    let _rng = rng_lock();
    let mut layer = layer::<Train>(11);
    assert_eq!(
        layer.quantize_base(&mut int8_quantizer::<Train>(None)),
        Err(LoraError::QuantizedTraining)
    );
    assert!(!layer.is_base_quantized());
    let mut inference = layer.valid();
    inference
        .quantize_base(&mut int8_quantizer::<Cpu>(None))
        .unwrap();
    assert_eq!(inference.forward(input::<Cpu>()).dims(), [5, D_OUT]);
}

#[test]
fn merging_into_an_int8_base_and_quantizing_a_merged_layer_are_refused() {
    let _rng = rng_lock();
    let mut quantized = layer::<Cpu>(5);
    quantized
        .quantize_base(&mut int8_quantizer::<Cpu>(None))
        .unwrap();
    assert_eq!(
        quantized.merge_active(),
        Err(LoraError::QuantizedBase {
            operation: "merging an adapter"
        })
    );
    assert!(matches!(
        quantized.clone().merge_and_unload(),
        Err(LoraError::QuantizedBase { .. })
    ));

    let mut merged = layer::<Cpu>(5);
    merged.merge_active().unwrap();
    assert!(matches!(
        merged.quantize_base(&mut int8_quantizer::<Cpu>(None)),
        Err(LoraError::MergedLayer { .. })
    ));
    assert!(!merged.is_base_quantized());

    let mut odd = layer::<Cpu>(5);
    assert_eq!(
        odd.quantize_base(&mut int8_quantizer::<Cpu>(Some(48))),
        Err(LoraError::QuantizationBlock {
            block: 48,
            d_output: D_OUT
        })
    );
    assert!(!odd.is_base_quantized());
}

#[test]
fn every_layer_of_a_module_is_quantized_once() {
    let _rng = rng_lock();
    let mut layers: Vec<LoraLinear<Cpu>> = (0..3).map(layer).collect();
    let count = quantize_base_weights(&mut layers, &mut int8_quantizer::<Cpu>(Some(32)));
    assert_eq!(count, Ok(3));
    assert!(layers.iter().all(|l| l.is_base_quantized()));
    // A second pass leaves the layers as they are.
    let before = values(layers[0].forward(input::<Cpu>()));
    let count = quantize_base_weights(&mut layers, &mut int8_quantizer::<Cpu>(None));
    assert_eq!(count, Ok(3));
    assert_eq!(values(layers[0].forward(input::<Cpu>())), before);
}

#[test]
fn adapters_are_added_switched_and_deleted_on_an_int8_base() {
    let _rng = rng_lock();
    let dora = LoraConfig::new(4, 8.0)
        .with_use_dora(true)
        .with_init_lora_weights(LoraInit::Random);
    let mut float = layer::<Cpu>(21);
    let mut int8 = layer::<Cpu>(21);
    int8.quantize_base(&mut int8_quantizer::<Cpu>(Some(32)))
        .unwrap();
    for layer in [&mut float, &mut int8] {
        let device = Default::default();
        Cpu::seed(&device, 5);
        layer.add_adapter("dora", &dora).unwrap();
        layer.set_active_adapters(&["default", "dora"]).unwrap();
    }
    let expected = values(float.forward(input::<Cpu>()));
    let got = values(int8.forward(input::<Cpu>()));
    let scale = expected.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = max_abs_diff(&got, &expected);
    assert!(worst / scale < 0.02, "DoRA on int8: {worst} of {scale}");

    int8.delete_adapter("dora").unwrap();
    assert_eq!(int8.adapter_names(), ["default"]);
    assert!(int8.is_base_quantized());
}

/// The layer merged in float, then its weight quantized as `merge_and_unload_quantized` does.
fn float_merged(seed: u64) -> Vec<f64> {
    let mut float = layer::<Cpu>(seed);
    float.merge_active().unwrap();
    values(float.base.weight.val())
}

#[test]
fn merging_into_an_int8_base_requantizes_and_reports_the_rounding() {
    let _rng = rng_lock();
    let mut quantized = layer::<Cpu>(11);
    let dequantized_before = {
        let mut q = layer::<Cpu>(11);
        q.quantize_base(&mut int8_quantizer::<Cpu>(Some(32)))
            .unwrap();
        values(q.base.weight.val().dequantize())
    };
    quantized
        .quantize_base(&mut int8_quantizer::<Cpu>(Some(32)))
        .unwrap();
    let report = quantized.merge_and_unload_quantized().unwrap();
    assert!(
        quantized.is_base_quantized(),
        "the merged weight is int8 again"
    );
    assert!(quantized.adapters.is_empty());
    assert_eq!((report.layers, report.weights), (1, D_IN * D_OUT));
    // The exact merge is the dequantized base plus the float update.
    let update: Vec<f64> = float_merged(11)
        .iter()
        .zip(values(layer::<Cpu>(11).base.weight.val()))
        .map(|(merged, base)| merged - base)
        .collect();
    let exact: Vec<f64> = dequantized_before
        .iter()
        .zip(&update)
        .map(|(w, u)| w + u)
        .collect();
    let got = values(quantized.base.weight.val().dequantize());
    let measured = max_abs_diff(&got, &exact);
    assert!(measured > 0.0, "the requantization rounds");
    assert!(
        (report.max_abs_error - measured).abs() <= 1e-6,
        "{report:?} vs {measured}"
    );
    let largest_update = update.iter().fold(0.0f64, |m, u| m.max(u.abs()));
    assert!((report.max_abs_update - largest_update).abs() <= 1e-6);
    // Half a step of the coarsest block bounds the rounding.
    let step = exact.iter().fold(0.0f64, |m, w| m.max(w.abs())) / 127.0;
    assert!(report.max_abs_error <= step / 2.0 * 1.001, "{report:?}");
    assert!(report.mean_abs_error > 0.0 && report.mean_abs_error <= report.max_abs_error);
}

#[test]
fn an_update_beyond_the_int8_range_shows_in_the_report() {
    let _rng = rng_lock();
    // One scale for the whole tensor: a large update widens the range, and every small
    // weight loses its precision.
    let device = Default::default();
    Cpu::seed(&device, 3);
    let base: Linear<Cpu> = LinearConfig::new(D_IN, D_OUT).init(&device);
    let config = LoraConfig::new(8, 4000.0).with_init_lora_weights(LoraInit::Random);
    let mut loud = LoraLinear::from_linear(base.clone(), &config).unwrap();
    loud.quantize_base(&mut int8_quantizer::<Cpu>(None))
        .unwrap();
    let loud = loud.merge_and_unload_quantized().unwrap();
    let quiet_config = LoraConfig::new(8, 0.5).with_init_lora_weights(LoraInit::Random);
    let mut quiet = LoraLinear::from_linear(base, &quiet_config).unwrap();
    quiet
        .quantize_base(&mut int8_quantizer::<Cpu>(None))
        .unwrap();
    let quiet = quiet.merge_and_unload_quantized().unwrap();
    assert!(
        loud.max_abs_error > 100.0 * quiet.max_abs_error,
        "{loud:?} vs {quiet:?}"
    );
}

#[test]
fn merging_a_float_base_this_way_is_exact() {
    let _rng = rng_lock();
    let mut float = layer::<Cpu>(13);
    let report = float.merge_and_unload_quantized().unwrap();
    assert_eq!(report.max_abs_error, 0.0);
    assert!(!float.is_base_quantized() && float.adapters.is_empty());
    assert_eq!(values(float.base.weight.val()), float_merged(13));
}

#[test]
fn a_module_reports_every_merged_layer() {
    let _rng = rng_lock();
    let mut layers: Vec<LoraLinear<Cpu>> = (0..3).map(|i| layer::<Cpu>(20 + i)).collect();
    layers.push(LoraLinear::new(layer::<Cpu>(30).base));
    quantize_base_weights(&mut layers, &mut int8_quantizer::<Cpu>(None)).unwrap();
    let report = merge_and_unload_quantized(&mut layers).unwrap();
    assert_eq!(report.layers, 3, "the layer without adapters is left alone");
    assert_eq!(report.weights, 3 * D_IN * D_OUT);
    assert!(layers
        .iter()
        .all(|l| l.adapters.is_empty() && l.is_base_quantized()));
}
