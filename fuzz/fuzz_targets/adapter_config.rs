//! `AdapterConfig::from_json_str` on arbitrary UTF-8 text: an error or a config, never a panic.
//! A config that parses must write JSON that parses again.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lora_peft_io::{is_target, AdapterConfig};

const PATHS: [&str; 3] = [
    "encoder.block.0.layer.0.SelfAttention.q",
    "decoder.block.1.layer.1.DenseReluDense.wo",
    "lm_head",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = "adapter_config.json".as_ref();
    let Ok(config) = AdapterConfig::from_json_str(text, path) else {
        return;
    };
    for module in PATHS {
        let _ = config.lora_config_for(module);
        let _ = is_target(&config, module, Some(&["q", "v"]));
    }
    let written = config.to_json_string();
    if let Err(e) = AdapterConfig::from_json_str(&written, path) {
        panic!("a parsed config writes JSON that does not parse: {e}\n{written}");
    }
});
