//! What a run was started with, recorded in every checkpoint, so that a resume with other
//! settings or other data is refused instead of mixing two runs.

use serde_json::{json, Value};

use crate::data::TokenizedExample;
use crate::{Trainer, TrainingMode};

/// The settings of `trainer` on this data as one JSON object: the trainer config (without
/// `overwrite_output_dir`, which only says how the run started), the collator, what trains
/// (the adapter's name and full `adapter_config.json`), and the number and a fingerprint of
/// the training and validation examples.
pub(crate) fn run_settings(
    trainer: &Trainer,
    train: &[TokenizedExample],
    valid: &[TokenizedExample],
) -> Value {
    let mut config = serde_json::to_value(&trainer.config).expect("the trainer config serialises");
    if let Value::Object(fields) = &mut config {
        fields.remove("overwrite_output_dir");
    }
    let mode = match &trainer.mode {
        TrainingMode::Adapter { name, config } => json!({
            "adapter": name,
            "adapter_config": serde_json::from_str::<Value>(&config.to_json_string())
                .expect("adapter_config.json is JSON"),
        }),
        TrainingMode::Full => json!("full"),
    };
    let c = &trainer.collator;
    json!({
        "trainer": config,
        "collator": {
            "max_source_len": c.max_source_len,
            "max_target_len": c.max_target_len,
            "pad_id": c.pad_id,
        },
        "mode": mode,
        "train_examples": train.len(),
        "valid_examples": valid.len(),
        "train_fingerprint": fingerprint(train),
        "valid_fingerprint": fingerprint(valid),
    })
}

/// FNV-1a (64-bit) over the token ids, with each sequence's length: a cheap, stable identity
/// of the data (not a cryptographic one), written in hexadecimal.
fn fingerprint(examples: &[TokenizedExample]) -> String {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    let mut eat = |value: u64| {
        for byte in value.to_le_bytes() {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
    };
    for example in examples {
        for side in [&example.source, &example.target] {
            eat(side.len() as u64);
            side.iter().for_each(|id| eat(u64::from(*id)));
        }
    }
    format!("{hash:016x}")
}

/// The dotted paths at which `saved` and `now` differ, each with both values
/// (`trainer.learning_rate: 0.001 in the checkpoint, 0.002 now`).
pub(crate) fn differences(saved: &Value, now: &Value) -> Vec<String> {
    let mut found = Vec::new();
    walk("", saved, now, &mut found);
    found
}

fn walk(path: &str, saved: &Value, now: &Value, found: &mut Vec<String>) {
    match (saved, now) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for key in keys {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                let missing = Value::Null;
                walk(
                    &child,
                    a.get(key).unwrap_or(&missing),
                    b.get(key).unwrap_or(&missing),
                    found,
                );
            }
        }
        (a, b) if a != b => found.push(format!("{path}: {a} in the checkpoint, {b} now")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_each_changed_leaf_with_both_values() {
        let saved = json!({"trainer": {"learning_rate": 0.001, "seed": 1}, "mode": "full"});
        let now = json!({"trainer": {"learning_rate": 0.002, "seed": 1}, "mode": "full", "x": 3});
        assert_eq!(
            differences(&saved, &now),
            [
                "trainer.learning_rate: 0.001 in the checkpoint, 0.002 now",
                "x: null in the checkpoint, 3 now"
            ]
        );
        assert!(differences(&saved, &saved).is_empty());
    }

    #[test]
    fn the_fingerprint_tells_apart_data_that_only_moves_a_token() {
        let example = |source: Vec<u32>, target: Vec<u32>| TokenizedExample { source, target };
        let a = [example(vec![5, 6], vec![7, 1])];
        let b = [example(vec![5], vec![6, 7, 1])];
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
    }
}
