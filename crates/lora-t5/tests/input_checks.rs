//! Ids from outside are checked where they enter (`check_input`, `check_source`, `generate`,
//! the labels of `loss`), with typed errors, so that `forward` can stay infallible; `generate`
//! also refuses configurations whose cost has no bound, and reports non-finite model outputs
//! instead of decoding them.

use burn::backend::NdArray;
use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData};
use lora_t5::{GenerationConfig, Seq2SeqInput, T5Config, T5Error, T5ForConditionalGeneration};

type Cpu = NdArray<f32>;

const VOCAB: usize = 30;

fn model() -> T5ForConditionalGeneration<Cpu> {
    let config = T5Config {
        vocab_size: VOCAB,
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

fn ints(values: Vec<i64>, shape: [usize; 2]) -> Tensor<Cpu, 2, Int> {
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

fn invalid_input_reason(result: Result<impl std::fmt::Debug, T5Error>) -> String {
    match result {
        Err(T5Error::InvalidInput { reason }) => reason,
        other => panic!("expected InvalidInput, got {other:?}"),
    }
}

#[test]
fn valid_ids_pass_and_forward_returns_logits_and_encoder_output() {
    let model = model();
    let input = Seq2SeqInput::new(ints(vec![5, 6, 1], [1, 3]), ints(vec![0, 7], [1, 2]));
    model.check_input(&input).unwrap();
    let encoded = model.encode(input.input_ids.clone(), input.attention_mask.clone());
    let output = model.forward(input);
    assert_eq!(output.logits.dims(), [1, 2, VOCAB]);
    let worst = (output.encoder_last_hidden_state - encoded)
        .abs()
        .max()
        .into_scalar();
    assert!(worst < 1e-6, "encoder output differs by {worst}");
}

#[test]
fn a_source_id_outside_the_vocabulary_is_refused() {
    let input = Seq2SeqInput::new(ints(vec![5, 30, 1], [1, 3]), ints(vec![0], [1, 1]));
    let reason = invalid_input_reason(model().check_input(&input));
    assert!(
        reason.contains("input_ids") && reason.contains("30"),
        "{reason}"
    );
}

#[test]
fn a_negative_decoder_id_is_refused() {
    let input = Seq2SeqInput::new(ints(vec![5, 1], [1, 2]), ints(vec![0, -3], [1, 2]));
    let reason = invalid_input_reason(model().check_input(&input));
    assert!(
        reason.contains("decoder_input_ids") && reason.contains("-3"),
        "{reason}"
    );
}

#[test]
fn a_mask_of_another_shape_is_refused() {
    let input = Seq2SeqInput::new(ints(vec![5, 6, 1], [1, 3]), ints(vec![0], [1, 1]))
        .attention_mask(ints(vec![1, 1], [1, 2]));
    let reason = invalid_input_reason(model().check_input(&input));
    assert!(reason.contains("attention_mask"), "{reason}");
}

#[test]
fn empty_ids_are_refused() {
    let input = Seq2SeqInput::new(ints(vec![], [1, 0]), ints(vec![0], [1, 1]));
    let reason = invalid_input_reason(model().check_input(&input));
    assert!(reason.contains("empty"), "{reason}");
}

#[test]
fn generate_refuses_a_source_id_outside_the_vocabulary() {
    let ids = ints(vec![5, 99, 1], [1, 3]);
    let mask = ints(vec![1, 1, 1], [1, 3]);
    let reason = invalid_input_reason(model().generate(ids, mask, &GenerationConfig::default()));
    assert!(reason.contains("99"), "{reason}");
}

#[test]
fn a_label_outside_the_vocabulary_is_refused_by_the_loss() {
    let model = model();
    let (ids, mask) = (ints(vec![5, 1], [1, 2]), ints(vec![1, 1], [1, 2]));
    let reason = invalid_input_reason(model.loss(ids, mask, ints(vec![7, 30], [1, 2])));
    assert!(
        reason.contains("labels") && reason.contains("30"),
        "{reason}"
    );
}

#[test]
fn a_label_outside_the_vocabulary_is_refused_by_forward_with_labels() {
    let model = model();
    let (ids, mask) = (ints(vec![5, 1], [1, 2]), ints(vec![1, 1], [1, 2]));
    let result = model.forward_with_labels(ids, mask, ints(vec![-5, 1], [1, 2]));
    let reason = invalid_input_reason(result.map(|out| out.loss));
    assert!(reason.contains("-5"), "{reason}");
}

/// The documented `# Panics` of the infallible forward: an unchecked id outside the vocabulary
/// stops the program (on ndarray, at the embedding's gather) rather than giving logits.
#[test]
#[should_panic]
fn forward_on_an_unchecked_id_outside_the_vocabulary_panics() {
    let input = Seq2SeqInput::new(ints(vec![5, 30, 1], [1, 3]), ints(vec![0], [1, 1]));
    let _ = model().forward(input);
}

#[test]
fn a_single_label_shifts_to_the_start_token_and_gives_a_loss() {
    let model = model();
    let decoder_input = model.shift_right(ints(vec![7, 1], [2, 1]));
    let ids = decoder_input
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .unwrap();
    assert_eq!(ids, [0, 0]);
    let loss = model
        .forward_with_labels(
            ints(vec![5, 6, 1, 5, 1, 0], [2, 3]),
            ints(vec![1; 6], [2, 3]),
            ints(vec![7, 1], [2, 1]),
        )
        .unwrap()
        .loss
        .into_scalar();
    assert!(loss.is_finite() && loss > 0.0, "{loss}");
}

fn prompt() -> (Tensor<Cpu, 2, Int>, Tensor<Cpu, 2, Int>) {
    (
        ints(vec![5, 6, 1], [1, 3]),
        Tensor::ones([1, 3], &Default::default()),
    )
}

fn refusal(generation: &GenerationConfig) -> String {
    let (ids, mask) = prompt();
    invalid_input_reason(model().generate(ids, mask, generation))
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
    // logits. The largest finite scale: a normalised row has a component of magnitude at least
    // 1, which overflows, so about half the logits are `+inf` whatever the random weights (a
    // scale of 1e38 left every logit finite in some draws, and the test passed or failed by
    // chance).
    let mut model = model();
    let norm = &mut model.decoder.final_layer_norm;
    norm.weight = Param::from_tensor(norm.weight.val().ones_like() * f32::MAX);
    let (ids, mask) = prompt();
    let result = model.generate(ids, mask, &GenerationConfig::default());
    assert!(
        matches!(result, Err(T5Error::NonFinite { .. })),
        "{result:?}"
    );
}
