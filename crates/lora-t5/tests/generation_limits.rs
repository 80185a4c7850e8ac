//! `generate` refuses configurations whose cost has no bound, and reports non-finite model
//! outputs instead of decoding them.

use burn::backend::NdArray;
use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData};
use lora_t5::{GenerationConfig, T5Config, T5Error, T5ForConditionalGeneration};

type Cpu = NdArray<f32>;

fn model() -> T5ForConditionalGeneration<Cpu> {
    let config = T5Config {
        vocab_size: 30,
        d_model: 8,
        d_kv: 4,
        num_heads: 2,
        d_ff: 16,
        num_layers: 1,
        num_decoder_layers: 1,
        ..T5Config::default()
    };
    T5ForConditionalGeneration::new(&config, &Default::default())
}

fn prompt() -> (Tensor<Cpu, 2, Int>, Tensor<Cpu, 2, Int>) {
    let device = Default::default();
    let ids = Tensor::from_data(TensorData::new(vec![5i64, 6, 1], [1, 3]), &device);
    (ids, Tensor::ones([1, 3], &device))
}

fn refusal(generation: &GenerationConfig) -> String {
    let (ids, mask) = prompt();
    match model().generate(ids, mask, generation) {
        Err(T5Error::InvalidInput { reason }) => reason,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[test]
fn more_beams_than_the_limit_are_refused_before_any_allocation() {
    let reason = refusal(&GenerationConfig {
        num_beams: usize::MAX - 1,
        ..GenerationConfig::default()
    });
    assert!(
        reason.contains("num_beams") && reason.contains("1024"),
        "{reason}"
    );
}

#[test]
fn more_new_tokens_than_the_limit_are_refused() {
    let reason = refusal(&GenerationConfig {
        max_new_tokens: 1 << 40,
        ..GenerationConfig::default()
    });
    assert!(
        reason.contains("max_new_tokens") && reason.contains("65536"),
        "{reason}"
    );
}

#[test]
fn min_new_tokens_above_max_new_tokens_is_refused() {
    let reason = refusal(&GenerationConfig {
        max_new_tokens: 4,
        min_new_tokens: 5,
        ..GenerationConfig::default()
    });
    assert!(reason.contains("min_new_tokens"), "{reason}");
}

#[test]
fn the_smallest_temperature_samples_the_greedy_tokens() {
    let (ids, mask) = prompt();
    let model = model();
    let greedy = GenerationConfig {
        max_new_tokens: 6,
        ..GenerationConfig::default()
    };
    let expected = model.generate(ids.clone(), mask.clone(), &greedy).unwrap();
    let coldest = greedy.clone().sampling(1e-45, 0, 1.0, 3);
    assert_eq!(model.generate(ids, mask, &coldest).unwrap(), expected);
}

#[test]
fn overflowing_weights_give_a_non_finite_error_not_tokens() {
    // Every block normalises its input, so only a scale after the last norm overflows the
    // logits: a decoder output of about 1e38 times the embedding.
    let mut model = model();
    let norm = &mut model.decoder.final_layer_norm;
    norm.weight = Param::from_tensor(norm.weight.val() * 1e38);
    let (ids, mask) = prompt();
    let result = model.generate(ids, mask, &GenerationConfig::default());
    assert!(
        matches!(result, Err(T5Error::NonFinite { step: 0, .. })),
        "{result:?}"
    );
}
