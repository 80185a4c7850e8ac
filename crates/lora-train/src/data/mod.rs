//! Data for sequence-to-sequence fine-tuning: JSONL reading with bad-record reports, a
//! deterministic train/validation split and a padding collator.

mod collator;
mod jsonl;
mod split;

pub use collator::{Seq2SeqBatch, Seq2SeqCollator, TokenizedExample};
pub use jsonl::{
    parse_jsonl, read_jsonl, BadRecord, BadRecordKind, BadRecordPolicy, JsonlData, JsonlFields,
    JsonlOptions, TextExample,
};
pub use split::train_valid_split;
