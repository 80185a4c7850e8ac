//! The flagship task of this workspace: a Chinese instruction → a UI-DSL JSON page
//! description. It knows no model and no Burn:
//!
//! - the schema ([`UiDsl`], [`Page`], [`Section`] and their named enums) and its validator
//!   ([`validate_uidsl`]), which reports every violation with its JSON path;
//! - a seeded generator of instruction → page records ([`generate`], [`GeneratorConfig`]) on a
//!   frozen, documented pseudo-random stream ([`SplitMix64`]), so the committed corpora
//!   regenerate byte for byte;
//! - the standard corpora of the demo ([`standard_corpora`]), with a held-out theme and section
//!   type.
//!
//! ```
//! use uidsl::{generate, validate_uidsl, GeneratorConfig};
//!
//! let records = generate(&GeneratorConfig::all(7, 3)).unwrap();
//! for record in &records {
//!     let page: serde_json::Value = serde_json::from_str(&record.output_json_minified).unwrap();
//!     assert_eq!(validate_uidsl(&page), Ok(()));
//! }
//! ```

mod corpora;
mod error;
mod generator;
mod lexicon;
mod names;
mod phrasing;
mod rng;
mod schema;

pub use corpora::{
    standard_corpora, NamedCorpus, StandardCorpora, BASE_SUPPLEMENT_SEED, HELDOUT_SECTION_TYPE,
    HELDOUT_THEME,
};
pub use error::UiDslError;
pub use generator::{
    generate, generate_avoiding, to_jsonl, write_jsonl, GeneratorConfig, Record, SECTIONS_PER_PAGE,
};
pub use rng::SplitMix64;
pub use schema::{
    validate_uidsl, ButtonAction, CardKind, FooterLink, FormField, ListItem, Page, Position,
    Section, SectionType, TabItem, Theme, UiDsl, CAROUSEL_SLIDES, FOOTER_LINKS, FORM_FIELDS,
    GRID_COLUMNS, MAX_NAME_LEN, MAX_SECTIONS, TAB_ITEMS,
};
