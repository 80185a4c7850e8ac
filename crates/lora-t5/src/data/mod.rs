//! Data for sequence-to-sequence fine-tuning: the UI-DSL schema and its validator, a seeded
//! generator of Chinese-instruction → UI-DSL records, JSONL reading with bad-record reports,
//! a deterministic train/validation split and a padding collator.

mod collator;
mod corpora;
mod generator;
mod jsonl;
mod lexicon;
mod names;
mod phrasing;
mod rng;
mod split;
mod uidsl;

pub use collator::{Seq2SeqBatch, Seq2SeqCollator, TokenizedExample};
pub use corpora::{
    standard_corpora, NamedCorpus, StandardCorpora, HELDOUT_SECTION_TYPE, HELDOUT_THEME,
};
pub use generator::{
    generate, generate_avoiding, to_jsonl, write_jsonl, GeneratorConfig, Record, SECTIONS_PER_PAGE,
};
pub use jsonl::{
    parse_jsonl, read_jsonl, BadRecord, BadRecordKind, BadRecordPolicy, JsonlData, JsonlFields,
    JsonlOptions, TextExample,
};
pub use rng::SplitMix64;
pub use split::train_valid_split;
pub use uidsl::{
    validate_uidsl, ButtonAction, CardKind, FooterLink, FormField, ListItem, Page, Position,
    Section, SectionType, TabItem, Theme, UiDsl, CAROUSEL_SLIDES, FOOTER_LINKS, FORM_FIELDS,
    GRID_COLUMNS, MAX_NAME_LEN, MAX_SECTIONS, TAB_ITEMS,
};
