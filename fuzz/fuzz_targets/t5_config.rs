//! `T5Config::from_json_str` on arbitrary UTF-8 text: an error or a config, never a panic. A
//! config that parses has a parameter count within the allocation limit, and the `config.json`
//! it writes reads back as the same config (an absent `tie_word_embeddings` as `true`).

#![no_main]

use libfuzzer_sys::fuzz_target;
use lora_t5::T5Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = "config.json".as_ref();
    let Ok(config) = T5Config::from_json_str(text, path) else {
        return;
    };
    let count = config
        .parameter_count()
        .expect("a checked config counts its parameters");
    assert!(
        count <= isize::MAX as usize / 4,
        "{count} parameters passed the check"
    );
    let _ = config.inner_dim();
    let written = config.to_hf_json().to_string();
    // An absent `tie_word_embeddings` means tied, and is written as `true`.
    let expected = T5Config {
        tie_word_embeddings: Some(config.tie_word_embeddings.unwrap_or(true)),
        ..config
    };
    match T5Config::from_json_str(&written, path) {
        Ok(again) => assert_eq!(again, expected, "{written}"),
        Err(e) => panic!("a parsed config writes JSON that does not parse: {e}\n{written}"),
    }
});
