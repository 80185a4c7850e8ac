//! `T5Tokenizer::from_json_str` on an arbitrary `tokenizer.json`: an error or a tokenizer, never a panic; a
//! tokenizer that loads encodes (bounded and not) and decodes a fixed text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lora_t5::T5Tokenizer;

/// libfuzzer-sys aborts on every panic, caught or not. `T5Tokenizer::from_json_str` catches
/// the panics of the tokenizers crate (0.22 panics on some malformed files) and reports them
/// as errors: let those unwind to it, and keep aborting on every other panic.
fn let_tokenizers_panics_unwind() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let abort = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let inside_tokenizers = info
                .location()
                .is_some_and(|l| l.file().contains("/tokenizers-"));
            if !inside_tokenizers {
                abort(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    let_tokenizers_panics_unwind();
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
