//! The search loops on toy models whose next-token scores are known: sampling, stopping,
//! streaming, returned sequences, refusals and what travels between device and host.

use std::cell::Cell;
use std::time::Duration;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};
use lora_generate::{
    generate, EncoderDecoderModel, GenerateOptions, GenerationConfig, GenerationError, NextTokens,
    SpecialTokens, StoppingCriterion,
};

type B = NdArray;

/// Scores that depend only on the last token: row `t` of `table` after token `t` (or, with
/// `hashed`, pseudo-random scores of `(t, token)`).
struct Table {
    table: Vec<Vec<f32>>,
    hashed: Option<usize>,
    pause: Duration,
    steps: Cell<usize>,
    /// How `step_most_likely` answers: `None` with logits (the default), `Some(offset)` with
    /// the most likely tokens plus `offset` (0: the right ones).
    picks: Option<u32>,
    picked: Cell<usize>,
}

impl Table {
    fn new(table: Vec<Vec<f32>>) -> Self {
        Self {
            table,
            hashed: None,
            pause: Duration::ZERO,
            steps: Cell::new(0),
            picks: None,
            picked: Cell::new(0),
        }
    }

    /// The same model, picking greedy search's tokens itself (plus `offset`).
    fn picking(self, offset: u32) -> Self {
        Self {
            picks: Some(offset),
            ..self
        }
    }

    /// Distinct pseudo-random scores in `[0, 10)` after every last token, as a model's are.
    fn hashed(vocab: usize) -> Self {
        Self {
            hashed: Some(vocab),
            ..Self::new(Vec::new())
        }
    }

    fn row(&self, last: u32) -> Vec<f32> {
        match self.hashed {
            None => self.table[last as usize].clone(),
            Some(vocab) => (0..vocab as u64)
                .map(|c| {
                    let mut x = (u64::from(last) << 32 | c).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                    x ^= x >> 29;
                    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
                    (x >> 40) as f32 / (1u64 << 24) as f32 * 10.0
                })
                .collect(),
        }
    }

    /// After every token the same scores.
    fn constant(scores: Vec<f32>) -> Self {
        let vocab = scores.len();
        Self::new(vec![scores; vocab])
    }

    /// After token `t`, token `t + 1` is the most likely (EOS = 1 after the last one).
    fn counting(vocab: usize) -> Self {
        let table = (0..vocab)
            .map(|t| {
                let next = if t + 1 < vocab { t + 1 } else { 1 };
                (0..vocab)
                    .map(|c| if c == next { 5.0 } else { -(c as f32) * 0.01 })
                    .collect()
            })
            .collect();
        Self::new(table)
    }
}

impl EncoderDecoderModel<B> for Table {
    type State = ();

    fn vocab_size(&self) -> usize {
        self.hashed.unwrap_or_else(|| self.table[0].len())
    }

    fn special_tokens(&self) -> SpecialTokens {
        SpecialTokens {
            decoder_start: 0,
            eos: vec![1],
            pad: 0,
        }
    }

    fn encode(&self, _: Tensor<B, 2, Int>, _: Tensor<B, 2, Int>) {}

    fn step(&self, tokens: Tensor<B, 2, Int>, _: &mut ()) -> Tensor<B, 2> {
        std::thread::sleep(self.pause);
        self.steps.set(self.steps.get() + 1);
        let last = tokens.into_data().convert::<i64>().to_vec::<i64>().unwrap();
        let vocab = self.vocab_size();
        let flat: Vec<f32> = last.iter().flat_map(|t| self.row(*t as u32)).collect();
        Tensor::from_data(
            TensorData::new(flat, [last.len(), vocab]),
            &Default::default(),
        )
    }

    fn step_most_likely(
        &self,
        tokens: Tensor<B, 2, Int>,
        state: &mut (),
        banned: &[(usize, u32)],
    ) -> NextTokens<B> {
        let Some(offset) = self.picks else {
            return NextTokens::Logits(self.step(tokens, state));
        };
        self.picked.set(self.picked.get() + 1);
        let last = tokens.into_data().convert::<i64>().to_vec::<i64>().unwrap();
        let picked = last
            .iter()
            .enumerate()
            .map(|(r, t)| {
                let mut scores = self.row(*t as u32);
                for &(row, token) in banned {
                    if row == r && (token as usize) < scores.len() {
                        scores[token as usize] = f32::NEG_INFINITY;
                    }
                }
                let best = scores.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
                scores.iter().position(|v| *v == best).unwrap() as u32 + offset
            })
            .collect();
        NextTokens::MostLikely(picked)
    }

    fn reorder(&self, _: (), _: Tensor<B, 1, Int>) {}
}

fn prompts(batch: usize) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let device = Default::default();
    let ids =
        Tensor::<B, 2, Int>::from_data(TensorData::new(vec![3i64; batch * 2], [batch, 2]), &device);
    (ids, Tensor::ones([batch, 2], &device))
}

fn run(model: &Table, batch: usize, config: &GenerationConfig) -> Vec<Vec<u32>> {
    let (ids, mask) = prompts(batch);
    generate(model, ids, mask, config, GenerateOptions::default())
        .unwrap()
        .sequences
}

fn refusal(model: &Table, config: &GenerationConfig, options: GenerateOptions<'_, B>) -> String {
    let (ids, mask) = prompts(1);
    match generate(model, ids, mask, config, options) {
        Err(GenerationError::InvalidInput { reason }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn greedy_search_follows_the_most_likely_tokens_and_pads_after_eos() {
    let model = Table::counting(6);
    let config = GenerationConfig {
        max_new_tokens: 8,
        ..GenerationConfig::default()
    };
    assert_eq!(run(&model, 2, &config), vec![vec![0, 1]; 2]);
    let model = Table::new({
        let mut table = Table::counting(6).table;
        table[0][1] = -9.0; // after the start token, 1 (EOS) is unlikely: 2 ... 5 then EOS
        table[0][2] = 6.0;
        table
    });
    assert_eq!(run(&model, 1, &config), vec![vec![0, 2, 3, 4, 5, 1]]);
}

#[test]
fn sampling_with_top_k_1_is_greedy_search() {
    let scores: Vec<f32> = (0..40).map(|i| ((i * 7919) % 41) as f32 * 0.3).collect();
    let model = Table::constant(scores);
    let greedy = GenerationConfig {
        max_new_tokens: 6,
        ..GenerationConfig::default()
    };
    let sampled = greedy.clone().sampling(1.0, 1, 1.0, 3);
    assert_eq!(run(&model, 3, &sampled), run(&model, 3, &greedy));
}

#[test]
fn a_seed_repeats_its_samples_and_another_seed_draws_others() {
    let model = Table::constant(vec![0.0; 50]);
    let config = GenerationConfig {
        max_new_tokens: 10,
        ..GenerationConfig::default()
    }
    .sampling(1.0, 0, 1.0, 11);
    let first = run(&model, 4, &config);
    assert_eq!(run(&model, 4, &config), first);
    let other = GenerationConfig { seed: 12, ..config };
    assert_ne!(run(&model, 4, &other), first);
}

#[test]
fn samples_follow_the_filtered_distribution() {
    // p = 0.5, 0.3, 0.15, 0.05 over tokens 2..=5; top_p 0.7 keeps tokens 2 and 3 (0.625, 0.375).
    let mut scores = vec![f32::NEG_INFINITY; 8];
    for (token, p) in [(2, 0.5f32), (3, 0.3), (4, 0.15), (5, 0.05)] {
        scores[token] = p.ln();
    }
    let model = Table::constant(scores);
    let config = GenerationConfig {
        max_new_tokens: 1,
        num_return_sequences: 1000,
        ..GenerationConfig::default()
    }
    .sampling(1.0, 0, 0.7, 5);
    let (ids, mask) = prompts(4);
    let out = generate(&model, ids, mask, &config, GenerateOptions::default()).unwrap();
    assert_eq!(out.sequences.len(), 4000);
    let mut counts = [0usize; 8];
    for sequence in &out.sequences {
        counts[sequence[1] as usize] += 1;
    }
    assert_eq!(
        counts[2] + counts[3],
        4000,
        "only the nucleus is drawn: {counts:?}"
    );
    // Binomial(4000, 0.625): standard deviation about 31; allow four of them.
    assert!((counts[2] as f64 - 2500.0).abs() < 4.0 * 31.0, "{counts:?}");
}

#[test]
fn a_stop_string_ends_its_sequence_at_the_token_that_completes_it() {
    let model = Table::counting(8);
    let model = Table::new({
        let mut table = model.table;
        table[0][1] = -9.0;
        table[0][2] = 6.0;
        table
    });
    let letters = |ids: &[u32]| {
        ids.iter()
            .map(|t| char::from(b'a' + *t as u8))
            .collect::<String>()
    };
    let config = GenerationConfig {
        max_new_tokens: 10,
        stop_strings: vec!["de".into()],
        ..GenerationConfig::default()
    };
    let (ids, mask) = prompts(1);
    let options = GenerateOptions::default().decoder(&letters);
    let out = generate(&model, ids, mask, &config, options).unwrap();
    // c d e: "cde" holds "de" once e is generated.
    assert_eq!(out.sequences, vec![vec![0, 2, 3, 4]]);
    let reason = refusal(&model, &config, GenerateOptions::default());
    assert!(reason.contains("stop_strings"), "{reason}");
}

#[test]
fn a_stopping_criterion_of_the_call_ends_a_sequence() {
    struct AtThree;
    impl StoppingCriterion for AtThree {
        fn is_done(&self, sequence: &[u32]) -> bool {
            sequence.last() == Some(&3)
        }
    }
    let mut table = Table::counting(8).table;
    table[0][1] = -9.0;
    table[0][2] = 6.0;
    let model = Table::new(table);
    let config = GenerationConfig {
        max_new_tokens: 10,
        ..GenerationConfig::default()
    };
    let (ids, mask) = prompts(1);
    let out = generate(
        &model,
        ids,
        mask,
        &config,
        GenerateOptions::default().stopping(AtThree),
    );
    assert_eq!(out.unwrap().sequences, vec![vec![0, 2, 3]]);
}

#[test]
fn max_time_stops_after_the_step_that_runs_out() {
    let mut model = Table::constant(vec![0.0, -5.0, 1.0, 0.5]);
    model.pause = Duration::from_millis(30);
    let config = GenerationConfig {
        max_new_tokens: 50,
        max_time: Some(0.04),
        ..GenerationConfig::default()
    };
    // Each step takes at least 30 ms, so the 40 ms run out after the second step (after the
    // first on a loaded machine): nowhere near the 50 allowed.
    let out = run(&model, 1, &config);
    let steps = out[0].len() - 1;
    assert!((1..=2).contains(&steps), "{out:?}");
    let beams = GenerationConfig {
        num_beams: 2,
        ..config
    };
    model.steps.set(0);
    run(&model, 1, &beams);
    assert!(
        (1..=2).contains(&model.steps.get()),
        "{} steps",
        model.steps.get()
    );
}

#[test]
fn the_streamer_sees_each_step_then_the_end() {
    let model = Table::constant(vec![0.0, -5.0, 1.0, 0.5]);
    let config = GenerationConfig {
        max_new_tokens: 4,
        ..GenerationConfig::default()
    };
    let mut seen: Vec<Vec<u32>> = Vec::new();
    let mut stream = |tokens: &[u32]| seen.push(tokens.to_vec());
    let (ids, mask) = prompts(2);
    let out = generate(
        &model,
        ids,
        mask,
        &config,
        GenerateOptions::default().streamer(&mut stream),
    )
    .unwrap();
    assert_eq!(seen, vec![vec![2, 2]; 4]);
    assert_eq!(out.sequences, vec![vec![0, 2, 2, 2, 2]; 2]);
    let beams = GenerationConfig {
        num_beams: 2,
        ..config
    };
    let mut ignore = |_: &[u32]| {};
    let reason = refusal(
        &model,
        &beams,
        GenerateOptions::default().streamer(&mut ignore),
    );
    assert!(reason.contains("streamer"), "{reason}");
}

#[test]
fn output_scores_give_one_processed_matrix_per_step() {
    let model = Table::constant(vec![0.0, -5.0, 1.0, 0.5]);
    let config = GenerationConfig {
        max_new_tokens: 3,
        output_scores: true,
        repetition_penalty: 2.0,
        ..GenerationConfig::default()
    };
    let (ids, mask) = prompts(1);
    let out = generate(&model, ids, mask, &config, GenerateOptions::default()).unwrap();
    assert_eq!(out.scores.len(), 3);
    // The start token 0 was seen: its score 0 stays 0; after step one, token 2's score 1 halves.
    let last = out.scores[2].clone().into_data().to_vec::<f32>().unwrap();
    assert_eq!(last, vec![0.0, -5.0, 0.5, 0.5]);
}

#[test]
fn settings_that_cannot_run_are_refused_naming_the_option() {
    let model = Table::counting(8);
    let cases = [
        (
            GenerationConfig {
                forced_bos_token_id: Some(8),
                ..GenerationConfig::default()
            },
            "forced_bos_token_id 8",
        ),
        (
            GenerationConfig {
                eos_token_id: Some(vec![1, 99]),
                ..GenerationConfig::default()
            },
            "eos_token_id 99",
        ),
        (
            GenerationConfig {
                bad_words_ids: vec![vec![3, 12]],
                ..GenerationConfig::default()
            },
            "bad_words_ids 12",
        ),
        (
            GenerationConfig {
                num_return_sequences: 2,
                ..GenerationConfig::default()
            },
            "greedy",
        ),
    ];
    for (config, expected) in cases {
        let reason = refusal(&model, &config, GenerateOptions::default());
        assert!(reason.contains(expected), "{reason}");
    }
}

#[test]
fn a_non_finite_logit_is_an_error_naming_step_and_row() {
    let mut table = Table::counting(6).table;
    table[0][1] = -9.0;
    table[0][2] = 6.0;
    table[2][4] = f32::NAN;
    let model = Table::new(table);
    let (ids, mask) = prompts(1);
    let config = GenerationConfig {
        max_new_tokens: 5,
        ..GenerationConfig::default()
    };
    match generate(&model, ids, mask, &config, GenerateOptions::default()) {
        Err(GenerationError::NonFinite {
            step: 1,
            row: 0,
            value,
        }) => assert!(value.is_nan()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn greedy_and_beam_steps_read_back_a_few_values_a_row_not_the_vocabulary() {
    let vocab = 32_128;
    let model = Table::hashed(vocab);
    let (rows, full_matrix_bytes) = (4u64, 4 * vocab as u64 * 4);
    let greedy = GenerationConfig {
        max_new_tokens: 5,
        ..GenerationConfig::default()
    };
    let (ids, mask) = prompts(rows as usize);
    let out = generate(&model, ids, mask, &greedy, GenerateOptions::default()).unwrap();
    let per_step = out.traffic.to_host() / out.traffic.steps();
    eprintln!("greedy, {rows} rows: {per_step} bytes to the host a step");
    assert!(per_step <= rows * 24, "greedy: {per_step} bytes a step");
    let beam = GenerationConfig {
        num_beams: 4,
        ..greedy
    };
    let (ids, mask) = prompts(1);
    let out = generate(&model, ids, mask, &beam, GenerateOptions::default()).unwrap();
    let per_step = out.traffic.to_host() / out.traffic.steps();
    eprintln!("4 beams: {per_step} bytes to the host a step, of {full_matrix_bytes} in the scores");
    assert!(
        per_step * 10 < full_matrix_bytes,
        "beam: {per_step} of {full_matrix_bytes} bytes a step"
    );
}

#[test]
fn a_model_may_mask_tokens_with_minus_infinity() {
    let mut table = Table::counting(6).table;
    for row in &mut table {
        row[4] = f32::NEG_INFINITY;
    }
    table[0][1] = -9.0;
    table[0][2] = 6.0;
    let model = Table::new(table);
    let config = GenerationConfig {
        max_new_tokens: 6,
        ..GenerationConfig::default()
    };
    // After 3, token 4 would be the most likely; masked, the next best is 0 (score -0).
    assert_eq!(run(&model, 1, &config), vec![vec![0, 2, 3, 0, 2, 3, 0]]);
}

#[test]
fn a_model_that_picks_its_own_tokens_gives_greedy_searchs_tokens() {
    let bans = GenerationConfig {
        max_new_tokens: 12,
        min_new_tokens: 8,
        no_repeat_ngram_size: 2,
        bad_words_ids: vec![vec![7], vec![3, 9]],
        suppress_tokens: vec![11],
        begin_suppress_tokens: vec![5],
        ..GenerationConfig::default()
    };
    for config in [GenerationConfig::default(), bans] {
        let expected = run(&Table::hashed(40), 3, &config);
        let picking = Table::hashed(40).picking(0);
        assert_eq!(run(&picking, 3, &config), expected);
        assert_eq!(picking.picked.get(), expected[0].len() - 1);
        assert_eq!(picking.steps.get(), 0);
    }
}

#[test]
fn every_score_is_computed_when_a_processor_does_more_than_ban_tokens() {
    let base = GenerationConfig {
        max_new_tokens: 5,
        ..GenerationConfig::default()
    };
    let configs = [
        GenerationConfig {
            repetition_penalty: 1.3,
            ..base.clone()
        },
        GenerationConfig {
            output_scores: true,
            ..base.clone()
        },
        GenerationConfig {
            forced_bos_token_id: Some(4),
            ..base.clone()
        },
        base.clone().sampling(0.8, 5, 1.0, 3),
    ];
    for config in configs {
        let picking = Table::hashed(40).picking(0);
        let expected = run(&Table::hashed(40), 2, &config);
        assert_eq!(run(&picking, 2, &config), expected);
        if config.forced_bos_token_id.is_some() {
            // Only the forced step needs the scores.
            assert_eq!((picking.steps.get(), picking.picked.get()), (1, 4));
        } else {
            assert_eq!(picking.picked.get(), 0);
        }
    }
}

#[test]
fn a_model_that_picks_a_token_outside_the_vocabulary_is_an_error() {
    let picking = Table::hashed(40).picking(40);
    let config = GenerationConfig {
        max_new_tokens: 3,
        ..GenerationConfig::default()
    };
    let reason = refusal(&picking, &config, GenerateOptions::default());
    assert!(reason.contains("vocabulary of 40"), "{reason}");
}
