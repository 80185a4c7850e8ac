//! `T5Tokenizer::from_json_str` on an arbitrary `tokenizer.json`: an error or a tokenizer, never a panic; a
//! tokenizer that loads encodes (bounded and not) and decodes a fixed text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lora_t5::T5Tokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(tokenizer) = T5Tokenizer::from_json_str(text, "tokenizer.json".as_ref()) else {
        return;
    };
    let sample = "顶部搜索，底部导航 two columns";
    if let Ok(ids) = tokenizer.encode(sample) {
        let _ = tokenizer.decode(&ids);
    }
    let _ = tokenizer.encode_bounded(&sample.repeat(50), 4);
    let _ = tokenizer.vocab_size();
});
