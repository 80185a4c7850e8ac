//! Data for sequence-to-sequence fine-tuning: JSONL reading with bad-record reports, a
//! deterministic train/validation split and a padding collator; and, re-exported from the
//! [`uidsl`] crate, the UI-DSL task's schema, validator, generator and corpora.

mod collator;
mod jsonl;
mod split;

pub use collator::{Seq2SeqBatch, Seq2SeqCollator, TokenizedExample};
pub use jsonl::{
    parse_jsonl, read_jsonl, BadRecord, BadRecordKind, BadRecordPolicy, JsonlData, JsonlFields,
    JsonlOptions, TextExample,
};
pub use split::train_valid_split;
pub use uidsl::SplitMix64;
pub use uidsl::{
    generate, generate_avoiding, to_jsonl, write_jsonl, GeneratorConfig, Record, SECTIONS_PER_PAGE,
};
pub use uidsl::{
    standard_corpora, NamedCorpus, StandardCorpora, HELDOUT_SECTION_TYPE, HELDOUT_THEME,
};
pub use uidsl::{
    validate_uidsl, ButtonAction, CardKind, FooterLink, FormField, ListItem, Page, Position,
    Section, SectionType, TabItem, Theme, UiDsl, CAROUSEL_SLIDES, FOOTER_LINKS, FORM_FIELDS,
    GRID_COLUMNS, MAX_NAME_LEN, MAX_SECTIONS, TAB_ITEMS,
};
