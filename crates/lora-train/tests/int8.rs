//! Int8 base weights on the embedded UI-DSL model: teacher-forced logits stay close to f32 and
//! the predicted tokens agree (batched by this crate's collator from the committed corpus).
#![cfg(feature = "t5")]

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::Tensor;
use lora_core::{int8_quantizer, quantize_base_weights};
use lora_t5::{Seq2SeqInput, T5ForConditionalGeneration, T5Tokenizer};
use lora_train::data::{read_jsonl, JsonlOptions, Seq2SeqCollator, TokenizedExample};

type Cpu = NdArray<f32>;

fn repository_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(relative)
}

fn values(t: Tensor<Cpu, 3>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// Teacher-forced logits of the first 8 held-out test records.
fn logits(model: &T5ForConditionalGeneration<Cpu>, examples: &[TokenizedExample]) -> Vec<f32> {
    let collator = Seq2SeqCollator {
        max_source_len: 128,
        max_target_len: 160,
        pad_id: 0,
    };
    let batch = collator
        .collate::<Cpu>(examples, &Default::default())
        .unwrap();
    let decoder_ids = model.shift_right(batch.labels.clone());
    values(
        model
            .forward(
                Seq2SeqInput::new(batch.input_ids, decoder_ids)
                    .attention_mask(batch.attention_mask),
            )
            .logits,
    )
}

fn argmax_rows(logits: &[f32], vocab: usize) -> Vec<usize> {
    logits
        .chunks(vocab)
        .map(|row| {
            (0..vocab)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap()
        })
        .collect()
}

#[test]
fn int8_logits_stay_close_to_f32_on_the_embedded_model() {
    let dir = repository_path("models/uidsl-t5-small");
    let device = Default::default();
    let tokenizer = T5Tokenizer::from_file(&dir.join("tokenizer.json")).unwrap();
    let records = read_jsonl(
        &repository_path("data/uidsl/heldout_test.jsonl"),
        &JsonlOptions::default(),
    )
    .unwrap();
    let examples: Vec<TokenizedExample> = records
        .examples
        .iter()
        .take(8)
        .map(|r| TokenizedExample::encode(&tokenizer, &r.source, &r.target).unwrap())
        .collect();

    let float = T5ForConditionalGeneration::<Cpu>::from_pretrained(&dir, &device).unwrap();
    let expected = logits(&float, &examples);
    let mut int8 = float.clone();
    let layers = quantize_base_weights(&mut int8, &mut int8_quantizer::<Cpu>(Some(32))).unwrap();
    assert_eq!(layers, float.linear_paths().len());
    let got = logits(&int8, &examples);

    let scale = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    // Measured: 4.3% of the largest logit (0.81 of 18.8); 8% leaves room for other CPUs'
    // rounding.
    assert!(
        worst / scale < 0.08,
        "int8 logits off by {worst} (scale {scale})"
    );
    assert!(worst > 0.0, "the base weights were not quantized");

    let vocab = float.config.vocab_size;
    let (a, b) = (argmax_rows(&expected, vocab), argmax_rows(&got, vocab));
    let agree = a.iter().zip(&b).filter(|(x, y)| x == y).count();
    // Measured: 359 of the 360 positions agree (padded positions included).
    assert!(
        agree as f64 >= 0.99 * a.len() as f64,
        "{agree} of {} predicted tokens agree",
        a.len()
    );

    // `save_pretrained` writes the dequantized weights: reloading gives the int8 model's logits.
    let saved = std::env::temp_dir().join(format!("lora-t5-int8-save-{}", std::process::id()));
    int8.save_pretrained(&saved).unwrap();
    let reloaded = T5ForConditionalGeneration::<Cpu>::from_pretrained(&saved, &device).unwrap();
    let again = logits(&reloaded, &examples);
    let worst = again
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst / scale < 1e-5, "saved int8 model off by {worst}");
    let _ = std::fs::remove_dir_all(saved);
}
