//! Internal consistency of the T5 implementation: cached decoding equals full decoding, the
//! loss ignores -100, shift_right follows transformers.

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use lora_t5::{
    FeedForwardKind, GenerationConfig, Seq2SeqInput, T5Config, T5ForConditionalGeneration,
};

type Cpu = NdArray<f32>;

fn config() -> T5Config {
    T5Config {
        vocab_size: 40,
        d_model: 16,
        d_kv: 6,
        num_heads: 3,
        d_ff: 24,
        num_layers: 2,
        num_decoder_layers: 3,
        relative_attention_num_buckets: 8,
        relative_attention_max_distance: 12,
        feed_forward: FeedForwardKind::GATED_GELU,
        tie_word_embeddings: Some(false),
        scale_decoder_outputs: false,
        ..T5Config::default()
    }
}

fn ints(values: Vec<i64>, shape: [usize; 2]) -> Tensor<Cpu, 2, Int> {
    Tensor::from_data(TensorData::new(values, shape), &Default::default())
}

fn values(t: Tensor<Cpu, 3>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

#[test]
fn cached_step_by_step_decoding_equals_one_full_pass() {
    let model = T5ForConditionalGeneration::<Cpu>::new(&config(), &Default::default());
    let input = ints(vec![3, 4, 5, 6, 7, 1, 8, 9, 1, 0, 0, 0], [2, 6]);
    let mask = ints(vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], [2, 6]);
    let target: Vec<i64> = vec![0, 11, 12, 13, 14, 15, 16, 17, 0, 21, 22, 23, 24, 25, 26, 27];
    let decoder_ids = ints(target.clone(), [2, 8]);
    let full = values(
        model
            .forward(Seq2SeqInput::new(input.clone(), decoder_ids).attention_mask(mask.clone()))
            .logits,
    );

    let encoded = model.encode(input, mask.clone());
    let mut state = model.start_decoding(encoded, mask);
    let mut stepped = [Vec::new(), Vec::new()];
    for position in 0..8 {
        let step = ints(vec![target[position], target[8 + position]], [2, 1]);
        let logits = values(model.decode(step, &mut state));
        for (row, out) in stepped.iter_mut().enumerate() {
            out.extend_from_slice(&logits[row * 40..(row + 1) * 40]);
        }
    }
    let stepped: Vec<f32> = stepped.concat();
    let worst = full
        .iter()
        .zip(&stepped)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-5, "cached decoding differs by {worst}");
}

#[test]
fn padding_does_not_change_the_unpadded_sequence() {
    let model = T5ForConditionalGeneration::<Cpu>::new(&config(), &Default::default());
    let decoder = ints(vec![0, 5, 6], [1, 3]);
    let alone = values(
        model
            .forward(
                Seq2SeqInput::new(ints(vec![8, 9, 1], [1, 3]), decoder.clone())
                    .attention_mask(ints(vec![1, 1, 1], [1, 3])),
            )
            .logits,
    );
    let padded = values(
        model
            .forward(
                Seq2SeqInput::new(ints(vec![8, 9, 1, 0, 0], [1, 5]), decoder)
                    .attention_mask(ints(vec![1, 1, 1, 0, 0], [1, 5])),
            )
            .logits,
    );
    let worst = alone
        .iter()
        .zip(&padded)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-5, "padding changed logits by {worst}");
}

#[test]
fn shift_right_and_ignored_labels() {
    let model = T5ForConditionalGeneration::<Cpu>::new(&config(), &Default::default());
    let labels = ints(vec![5, 6, -100, -100], [1, 4]);
    let shifted = model.shift_right(labels.clone());
    assert_eq!(
        shifted.into_data().to_vec::<i64>().unwrap(),
        vec![0, 5, 6, 0]
    );
    let input = ints(vec![3, 4, 1], [1, 3]);
    let mask = ints(vec![1, 1, 1], [1, 3]);
    let out = model
        .forward_with_labels(input.clone(), mask.clone(), labels)
        .unwrap();
    // The loss over [5, 6, -100, -100] equals the loss over the two real labels.
    let short = model
        .forward_with_labels(input.clone(), mask.clone(), ints(vec![5, 6], [1, 2]))
        .unwrap();
    let (a, b) = (out.loss.into_scalar(), short.loss.into_scalar());
    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    assert!(model
        .forward_with_labels(input, mask, ints(vec![-100, -100], [1, 2]))
        .is_err());
}

#[test]
fn greedy_generation_equals_argmax_of_full_passes_and_beams_return_a_sequence() {
    let model = T5ForConditionalGeneration::<Cpu>::new(&config(), &Default::default());
    let input = ints(vec![3, 4, 5, 1], [1, 4]);
    let mask = ints(vec![1, 1, 1, 1], [1, 4]);
    let generation = GenerationConfig {
        max_new_tokens: 6,
        ..GenerationConfig::default()
    };
    let greedy = model
        .generate(input.clone(), mask.clone(), &generation)
        .unwrap();
    // Recompute each step without the cache.
    let mut tokens: Vec<i64> = vec![0];
    for _ in 0..greedy[0].len() - 1 {
        let logits = values(
            model
                .forward(
                    Seq2SeqInput::new(input.clone(), ints(tokens.clone(), [1, tokens.len()]))
                        .attention_mask(mask.clone()),
                )
                .logits,
        );
        let last = &logits[(tokens.len() - 1) * 40..tokens.len() * 40];
        let best = (0..40).fold(0, |b, i| if last[i] > last[b] { i } else { b });
        tokens.push(best as i64);
        if best == 1 {
            break;
        }
    }
    let expected: Vec<u32> = tokens.iter().map(|t| *t as u32).collect();
    assert_eq!(greedy[0][..expected.len()], expected[..]);

    let beams = GenerationConfig {
        num_beams: 3,
        max_new_tokens: 5,
        ..GenerationConfig::default()
    };
    let out = model.generate(input.clone(), mask.clone(), &beams).unwrap();
    assert_eq!(out.len(), 1);
    assert!(out[0].len() >= 2 && out[0].len() <= 6);
    let sampled = GenerationConfig::default().sampling(0.8, 10, 0.9, 7);
    let a = model
        .generate(input.clone(), mask.clone(), &sampled)
        .unwrap();
    let b = model.generate(input, mask, &sampled).unwrap();
    assert_eq!(a, b, "a seeded sample is reproducible");
}

/// The values of every key and value in `key_values`, then of `bias`.
fn entries(key_values: Vec<lora_t5::KeyValue<Cpu>>, bias: Tensor<Cpu, 4>) -> Vec<Vec<f32>> {
    key_values
        .into_iter()
        .flat_map(|kv| [kv.key, kv.value])
        .chain([bias])
        .map(|t| t.into_data().to_vec::<f32>().unwrap())
        .collect()
}

/// The values of every cross-attention key and value of `state`, and its encoder bias.
fn cross_values(state: &lora_t5::DecoderState<Cpu>) -> Vec<Vec<f32>> {
    entries(state.cross_key_values.clone(), state.cross_bias.clone())
}

/// `state`'s cross-attention entries at `rows`, copied one by one.
fn cross_values_at(state: &lora_t5::DecoderState<Cpu>, rows: &[i64]) -> Vec<Vec<f32>> {
    let indices = Tensor::<Cpu, 1, Int>::from_data(
        TensorData::new(rows.to_vec(), [rows.len()]),
        &Default::default(),
    );
    let key_values = state
        .cross_key_values
        .iter()
        .map(|kv| kv.select(indices.clone()))
        .collect();
    entries(key_values, state.cross_bias.clone().select(0, indices))
}

#[test]
fn reordering_beams_within_and_across_prompts_keeps_the_right_cross_attention_entries() {
    let model = T5ForConditionalGeneration::<Cpu>::new(&config(), &Default::default());
    let input = ints(vec![3, 4, 5, 6, 7, 1, 8, 9, 1, 0, 0, 0], [2, 6]);
    let mask = ints(vec![1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], [2, 6]);
    let encoded = model.encode(input, mask.clone());
    let state = model.start_decoding(encoded, mask);
    let select = |state: &lora_t5::DecoderState<Cpu>, rows: &[i64]| {
        state.select(Tensor::from_data(
            TensorData::new(rows.to_vec(), [rows.len()]),
            &Default::default(),
        ))
    };
    // Three beams per prompt, one step, then a reorder within each prompt's beams.
    let expansion = [0, 0, 0, 1, 1, 1];
    let mut beams = select(&state, &expansion);
    assert_eq!(cross_values(&beams), cross_values_at(&state, &expansion));
    model.decode(ints(vec![0; 6], [6, 1]), &mut beams);
    let within = [2, 0, 1, 5, 5, 3];
    let reordered = select(&beams, &within);
    assert_eq!(cross_values(&reordered), cross_values_at(&beams, &within));
    // Entries moved across prompts are copied.
    let across = [3, 3, 0, 1, 2, 0];
    let moved = select(&reordered, &across);
    assert_eq!(cross_values(&moved), cross_values_at(&reordered, &across));
    // The next step sees the reordered self-attention cache: row 0 continues beam 2.
    let mut reordered = reordered;
    let mut plain = beams.clone();
    let logits = values(model.decode(ints(vec![7; 6], [6, 1]), &mut reordered));
    let plain_logits = values(model.decode(ints(vec![7; 6], [6, 1]), &mut plain));
    assert_eq!(logits[..40], plain_logits[2 * 40..3 * 40]);
    assert_eq!(logits[4 * 40..5 * 40], plain_logits[5 * 40..6 * 40]);
}
