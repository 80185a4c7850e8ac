//! The project's standard UI-DSL corpora: a base task without one theme and one section type,
//! and a held-out task built around them (the files under `data/uidsl/`).

use std::collections::HashSet;
use std::path::Path;

use crate::generator::{generate_avoiding, write_jsonl, GeneratorConfig, Record};
use crate::schema::{SectionType, Theme};
use crate::UiDslError;

/// The theme the base corpora never use.
pub const HELDOUT_THEME: Theme = Theme::SakuraPink;
/// The section type the base corpora never use.
pub const HELDOUT_SECTION_TYPE: SectionType = SectionType::Carousel;

/// The seed of [`StandardCorpora::base_train_supplement`].
pub const BASE_SUPPLEMENT_SEED: u64 = 20_240_100;

/// Generator configurations of the five standard corpora.
///
/// `base_*` exclude [`HELDOUT_THEME`] and [`HELDOUT_SECTION_TYPE`]; every `heldout_*` record
/// uses the held-out theme (樱花粉), has a carousel (轮播图), or both.
///
/// ```
/// use uidsl::{standard_corpora, Theme};
///
/// let corpora = standard_corpora();
/// assert_eq!(corpora.base_train.count, 3000);
/// assert!(!corpora.base_train.themes.contains(&Theme::SakuraPink));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandardCorpora {
    /// Base training corpus (3000 records).
    pub base_train: GeneratorConfig,
    /// Base validation corpus (200 records).
    pub base_valid: GeneratorConfig,
    /// Held-out training corpus (400 records).
    pub heldout_train: GeneratorConfig,
    /// Held-out validation corpus (100 records).
    pub heldout_valid: GeneratorConfig,
    /// Held-out test corpus (100 records).
    pub heldout_test: GeneratorConfig,
}

/// A generated corpus and the file name it is stored under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedCorpus {
    /// `base_train`, `base_valid`, `heldout_train`, `heldout_valid` or `heldout_test`.
    pub name: &'static str,
    /// The records.
    pub records: Vec<Record>,
}

impl NamedCorpus {
    /// `<name>.jsonl`.
    ///
    /// ```
    /// let c = uidsl::NamedCorpus { name: "base_train", records: vec![] };
    /// assert_eq!(c.file_name(), "base_train.jsonl");
    /// ```
    pub fn file_name(&self) -> String {
        format!("{}.jsonl", self.name)
    }
}

/// The standard corpora's configurations.
///
/// ```
/// let corpora = uidsl::standard_corpora();
/// assert_eq!(corpora.heldout_test.count, 100);
/// ```
pub fn standard_corpora() -> StandardCorpora {
    let base = |seed, count| {
        GeneratorConfig::all(seed, count)
            .without_themes(&[HELDOUT_THEME])
            .without_section_types(&[HELDOUT_SECTION_TYPE])
    };
    let heldout = |seed, count| GeneratorConfig {
        focus_themes: vec![HELDOUT_THEME],
        focus_section_types: vec![HELDOUT_SECTION_TYPE],
        ..GeneratorConfig::all(seed, count)
    };
    StandardCorpora {
        base_train: base(20_240_101, 3000),
        base_valid: base(20_240_102, 200),
        heldout_train: heldout(20_240_201, 400),
        heldout_valid: heldout(20_240_202, 100),
        heldout_test: heldout(20_240_203, 100),
    }
}

impl StandardCorpora {
    /// Generates the five corpora in the order base_train, base_valid, heldout_train,
    /// heldout_valid, heldout_test. No instruction appears twice across them: each corpus
    /// avoids the instructions of those before it.
    ///
    /// # Errors
    /// [`UiDslError::InvalidConfig`] when a corpus's generator configuration cannot produce its
    /// records.
    pub fn generate(&self) -> Result<Vec<NamedCorpus>, UiDslError> {
        let plan = [
            ("base_train", &self.base_train),
            ("base_valid", &self.base_valid),
            ("heldout_train", &self.heldout_train),
            ("heldout_valid", &self.heldout_valid),
            ("heldout_test", &self.heldout_test),
        ];
        let mut seen: HashSet<String> = HashSet::new();
        let mut corpora = Vec::with_capacity(plan.len());
        for (name, config) in plan {
            let records = generate_avoiding(config, &seen)?;
            seen.extend(records.iter().map(|r| r.instruction.clone()));
            corpora.push(NamedCorpus { name, records });
        }
        Ok(corpora)
    }

    /// `count` more records of the base task (the distribution of `base_train`, from the seed
    /// [`BASE_SUPPLEMENT_SEED`]) whose instructions appear in none of the five corpora: extra
    /// training data for a base model, generated rather than stored.
    ///
    /// ```
    /// let corpora = uidsl::standard_corpora();
    /// let extra = corpora.base_train_supplement(50).unwrap();
    /// let files = corpora.generate().unwrap();
    /// assert_eq!(extra.len(), 50);
    /// assert!(files.iter().all(|c| c.records.iter().all(|r| !extra.contains(r))));
    /// ```
    ///
    /// # Errors
    /// As [`generate`](Self::generate), and [`UiDslError::InvalidConfig`] when the base task has
    /// fewer than `count` instructions left to give.
    pub fn base_train_supplement(&self, count: usize) -> Result<Vec<Record>, UiDslError> {
        let seen: HashSet<String> = self
            .generate()?
            .into_iter()
            .flat_map(|corpus| corpus.records)
            .map(|record| record.instruction)
            .collect();
        let config = GeneratorConfig {
            seed: BASE_SUPPLEMENT_SEED,
            count,
            ..self.base_train.clone()
        };
        generate_avoiding(&config, &seen)
    }

    /// Generates the corpora and writes each as `<dir>/<name>.jsonl` (atomically per file).
    ///
    /// # Errors
    /// As [`generate`](Self::generate), and [`UiDslError::File`] naming a file that could not be
    /// written.
    pub fn write_to(&self, dir: &Path) -> Result<Vec<NamedCorpus>, UiDslError> {
        let corpora = self.generate()?;
        for corpus in &corpora {
            write_jsonl(&dir.join(corpus.file_name()), &corpus.records)?;
        }
        Ok(corpora)
    }
}
