//! `parse_jsonl` on arbitrary bytes, under both bad-record policies and with the target
//! optional: reports or records, never a panic; `Skip` accounts for every non-blank line that
//! `Fail` would refuse.

#![no_main]

use libfuzzer_sys::fuzz_target;
use lora_train::data::{parse_jsonl, BadRecordPolicy, JsonlOptions};

fuzz_target!(|data: &[u8]| {
    let path = "data.jsonl".as_ref();
    let skip = JsonlOptions {
        policy: BadRecordPolicy::Skip,
        ..JsonlOptions::default()
    };
    let skipped = parse_jsonl(data, path, &skip).expect("Skip never fails");
    let strict = parse_jsonl(data, path, &JsonlOptions::default());
    assert_eq!(strict.is_ok(), skipped.skipped.is_empty());
    if let Ok(strict) = strict {
        assert_eq!(strict.examples, skipped.examples);
    }
    let prompts = JsonlOptions {
        policy: BadRecordPolicy::Skip,
        target_required: false,
        target_must_be_json: false,
        ..JsonlOptions::default()
    };
    let loose = parse_jsonl(data, path, &prompts).expect("Skip never fails");
    assert!(loose.examples.len() >= skipped.examples.len());
});
