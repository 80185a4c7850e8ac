//! Greedy search on flex picks each token from the head's int8 screen
//! (`lora_core::ArgmaxScreen`), tied or untied: the tokens must be those of the full `f32` head, which greedy
//! search computes when it keeps the scores (`output_scores`), also between tokens whose
//! embeddings differ by less than the int8 rounding.

use burn::backend::Flex;
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use lora_core::{LoraConfig, LoraInit};
use lora_t5::{GenerateOptions, GenerationConfig, T5Config, T5ForConditionalGeneration};

type B = Flex;

fn model(tied: bool) -> T5ForConditionalGeneration<B> {
    let config = T5Config {
        vocab_size: 700,
        d_model: 64,
        d_kv: 16,
        num_heads: 4,
        d_ff: 128,
        num_layers: 2,
        num_decoder_layers: 2,
        tie_word_embeddings: Some(tied),
        ..T5Config::default()
    };
    let device = Default::default();
    let mut model = T5ForConditionalGeneration::<B>::new(&config, &device);
    // Embeddings in pairs of near twins: each odd row is the row before it plus noise far
    // below the int8 step (about 0.3 here), so that the screen's estimates cannot order a pair
    // and the exact recomputation must.
    let even = Tensor::<B, 2>::random([350, 64], Distribution::Normal(0.0, 10.0), &device);
    let odd = even.clone() + Tensor::random([350, 64], Distribution::Normal(0.0, 0.02), &device);
    let pairs = Tensor::stack::<3>(vec![even.clone(), odd.clone()], 1).reshape([700, 64]);
    model.shared.weight = model.shared.weight.map(|_| pairs);
    if let Some(head) = model.lm_head.as_mut() {
        // The untied head's weight `[d_model, vocab]` has the twins as neighbouring columns.
        let columns = Tensor::stack::<3>(vec![even.transpose(), odd.transpose()], 2);
        let columns = columns.reshape([64, 700]);
        head.base.weight = head.base.weight.clone().map(|_| columns);
    }
    model
}

/// Sequences and bytes read back to the host per row and step, beyond the prompts' ids.
fn generate(
    model: &T5ForConditionalGeneration<B>,
    config: &GenerationConfig,
) -> (Vec<Vec<u32>>, u64) {
    let device = Default::default();
    let ids: Vec<i64> = (0..24).map(|i| 2 + (i * 97 % 690)).collect();
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [3, 8]), &device);
    let mask = Tensor::<B, 2, Int>::ones([3, 8], &device);
    let prompt_bytes = ids.clone().into_data().bytes.len() as u64;
    let out = model
        .generate_with(ids, mask, config, GenerateOptions::default())
        .unwrap();
    let bytes = out.traffic.to_host() - prompt_bytes;
    assert_eq!(bytes % (3 * out.traffic.steps()), 0, "{bytes} bytes");
    let per_row_step = bytes / 3 / out.traffic.steps();
    (out.sequences, per_row_step)
}

/// Greedy search's sequences as generated, the bytes a row and step that took, and the
/// sequences of the full head.
struct Compared {
    screened: Vec<Vec<u32>>,
    bytes: u64,
    full: Vec<Vec<u32>>,
}

fn screened_and_full(model: T5ForConditionalGeneration<B>, config: GenerationConfig) -> Compared {
    let (screened, bytes) = generate(&model, &config);
    let full = GenerationConfig {
        output_scores: true,
        ..config
    };
    Compared {
        screened,
        bytes,
        full: generate(&model, &full).0,
    }
}

/// Checks that the screen picked every token (one `u32` a row and step to the host) and that
/// they are the full head's; returns them.
fn assert_screened(
    model: T5ForConditionalGeneration<B>,
    config: GenerationConfig,
) -> Vec<Vec<u32>> {
    let Compared {
        screened,
        bytes,
        full,
    } = screened_and_full(model, config);
    assert_eq!(screened, full);
    assert_eq!(bytes, 4);
    screened
}

#[test]
fn a_tied_head_gives_the_full_heads_tokens_from_its_screen() {
    let config = GenerationConfig {
        max_new_tokens: 24,
        ..GenerationConfig::default()
    };
    assert_screened(model(true), config);
}

#[test]
fn banned_tokens_stay_banned_on_the_screen() {
    let config = GenerationConfig {
        max_new_tokens: 24,
        min_new_tokens: 20,
        no_repeat_ngram_size: 1,
        bad_words_ids: vec![vec![5], vec![9, 10]],
        suppress_tokens: vec![3, 4],
        ..GenerationConfig::default()
    };
    let screened = assert_screened(model(true), config);
    // No token repeats within a row: the bans reached the screen.
    for row in &screened {
        let mut seen = row[1..].to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), row.len() - 1, "{row:?}");
    }
}

#[test]
fn an_untied_head_gives_the_full_heads_tokens_from_its_screen() {
    let config = GenerationConfig {
        max_new_tokens: 24,
        min_new_tokens: 20,
        no_repeat_ngram_size: 1,
        ..GenerationConfig::default()
    };
    assert_screened(model(false), config);
}

#[test]
fn a_head_with_an_adapter_computes_every_logit() {
    let mut model = model(false);
    let head = model.lm_head.as_mut().unwrap();
    let lora = LoraConfig::new(4, 8.0).with_init_lora_weights(LoraInit::Random);
    head.add_adapter("default", &lora).unwrap();
    let config = GenerationConfig {
        max_new_tokens: 6,
        ..GenerationConfig::default()
    };
    let Compared {
        screened,
        bytes,
        full,
    } = screened_and_full(model, config);
    assert_eq!(screened, full);
    assert!(bytes > 4, "{bytes} bytes a row and step");
}
