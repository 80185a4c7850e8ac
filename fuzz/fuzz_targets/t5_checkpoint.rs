//! `T5ForConditionalGeneration::from_pretrained` on a model directory whose weights come from
//! the input: the first byte chooses a single `model.safetensors` (the rest of the input) or a
//! sharded checkpoint (the rest is `model.safetensors.index.json`, with a valid shard beside
//! it). An error or a model, never a panic, and a loaded model runs a forward pass.

#![no_main]

use std::path::PathBuf;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor};
use libfuzzer_sys::fuzz_target;
use lora_t5::{Seq2SeqInput, T5Config, T5ForConditionalGeneration};

/// A tiny model's directory with its `config.json` and, for the shard case, its weights in
/// `model-00001-of-00001.safetensors`; made once per process.
fn directory() -> &'static (PathBuf, Vec<u8>) {
    static DIR: std::sync::OnceLock<(PathBuf, Vec<u8>)> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let config = T5Config {
            vocab_size: 12,
            d_model: 4,
            d_kv: 2,
            num_heads: 2,
            d_ff: 6,
            num_layers: 1,
            num_decoder_layers: 1,
            relative_attention_num_buckets: 4,
            relative_attention_max_distance: 8,
            ..T5Config::default()
        };
        let dir = std::env::temp_dir().join(format!("t5-checkpoint-fuzz-{}", std::process::id()));
        let model = T5ForConditionalGeneration::<NdArray>::new(&config, &Default::default());
        model.save_pretrained(&dir).expect("the seed model saves");
        let weights = std::fs::read(dir.join("model.safetensors")).expect("saved weights");
        std::fs::rename(
            dir.join("model.safetensors"),
            dir.join("model-00001-of-00001.safetensors"),
        )
        .expect("the shard is in place");
        (dir, weights)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let (dir, _) = directory();
    let single = dir.join("model.safetensors");
    let index = dir.join("model.safetensors.index.json");
    let _ = std::fs::remove_file(&single);
    let _ = std::fs::remove_file(&index);
    if mode % 2 == 0 {
        std::fs::write(&single, rest).expect("the input is written");
    } else {
        std::fs::write(&index, rest).expect("the input is written");
    }
    let device = Default::default();
    let Ok(model) = T5ForConditionalGeneration::<NdArray>::from_pretrained(dir, &device) else {
        return;
    };
    let ids = Tensor::<NdArray, 2, Int>::from_ints([[3, 4, 1]], &device);
    let decoder = Tensor::<NdArray, 2, Int>::from_ints([[0, 5]], &device);
    let input = Seq2SeqInput::new(ids, decoder);
    model
        .check_input(&input)
        .expect("ids within the vocabulary");
    let logits = model.forward(input).logits;
    assert_eq!(logits.dims(), [1, 2, 12]);
});
