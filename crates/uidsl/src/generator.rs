//! A seeded generator of UI-DSL training records: a Chinese instruction and the minified JSON
//! of the page it describes.

use std::collections::HashSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::lexicon::{self as lx, PageKind};
use crate::phrasing::instruction;
use crate::rng::SplitMix64;
use crate::schema::{
    ButtonAction, CardKind, FooterLink, FormField, ListItem, Page, Section, SectionType, TabItem,
    Theme, UiDsl,
};
use crate::UiDslError;

/// Fewest and most sections of a generated page.
pub const SECTIONS_PER_PAGE: std::ops::RangeInclusive<usize> = 2..=4;

/// One training record, as a line of a JSONL file.
///
/// ```
/// use uidsl::Record;
///
/// let record = Record { instruction: "顶部搜索".into(), output_json_minified: "{}".into() };
/// assert_eq!(
///     serde_json::to_string(&record).unwrap(),
///     r#"{"instruction":"顶部搜索","output_json_minified":"{}"}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The Chinese instruction.
    pub instruction: String,
    /// The UI-DSL page it describes, as minified JSON.
    pub output_json_minified: String,
}

/// What [`generate`] produces: how many records from which seed, with which themes and
/// section types.
///
/// `themes` and `section_types` bound what may appear at all. When `focus_themes` or
/// `focus_section_types` is non-empty, every record uses a focus theme, contains a focus
/// section type, or both (each case about equally often), which is how a held-out corpus is
/// made: the base corpus leaves the focus values out of `themes` / `section_types`, the
/// held-out corpus names them as focus.
///
/// ```
/// use uidsl::{GeneratorConfig, SectionType, Theme};
///
/// let base = GeneratorConfig::all(1, 10)
///     .without_themes(&[Theme::SakuraPink])
///     .without_section_types(&[SectionType::Carousel]);
/// assert!(!base.themes.contains(&Theme::SakuraPink));
/// let heldout = GeneratorConfig { focus_themes: vec![Theme::SakuraPink], ..GeneratorConfig::all(2, 10) };
/// assert_eq!(heldout.focus_themes, [Theme::SakuraPink]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeneratorConfig {
    /// Seed of the [`SplitMix64`] generator.
    pub seed: u64,
    /// Number of records (all with distinct instructions).
    pub count: usize,
    /// Themes that may appear.
    pub themes: Vec<Theme>,
    /// Section types that may appear (at least two).
    pub section_types: Vec<SectionType>,
    /// Themes of which every record uses one (unless it has a focus section type instead).
    pub focus_themes: Vec<Theme>,
    /// Section types of which every record has one (unless it uses a focus theme instead).
    pub focus_section_types: Vec<SectionType>,
}

impl GeneratorConfig {
    /// `count` records from `seed`, with every theme and section type and no focus.
    pub fn all(seed: u64, count: usize) -> Self {
        Self {
            seed,
            count,
            themes: Theme::ALL.to_vec(),
            section_types: SectionType::ALL.to_vec(),
            focus_themes: Vec::new(),
            focus_section_types: Vec::new(),
        }
    }

    /// The same configuration without `themes`.
    pub fn without_themes(mut self, themes: &[Theme]) -> Self {
        self.themes.retain(|t| !themes.contains(t));
        self
    }

    /// The same configuration without `section_types`.
    pub fn without_section_types(mut self, section_types: &[SectionType]) -> Self {
        self.section_types.retain(|s| !section_types.contains(s));
        self
    }

    fn check(&self) -> Result<(), UiDslError> {
        let invalid = |reason: String| Err(UiDslError::InvalidConfig { reason });
        if self.themes.is_empty() {
            return invalid("the generator has no theme to use".into());
        }
        if self.section_types.len() < *SECTIONS_PER_PAGE.start() {
            return invalid(format!(
                "the generator needs at least {} section types, has {}",
                SECTIONS_PER_PAGE.start(),
                self.section_types.len()
            ));
        }
        if let Some(t) = self.focus_themes.iter().find(|t| !self.themes.contains(t)) {
            return invalid(format!("focus theme {t} is not among the themes"));
        }
        if let Some(s) = self
            .focus_section_types
            .iter()
            .find(|s| !self.section_types.contains(s))
        {
            return invalid(format!(
                "focus section type {s} is not among the section types"
            ));
        }
        Ok(())
    }
}

/// `config.count` records with distinct instructions, the same for the same configuration.
///
/// ```
/// use uidsl::{generate, validate_uidsl, GeneratorConfig};
///
/// let records = generate(&GeneratorConfig::all(42, 5)).unwrap();
/// assert_eq!(records.len(), 5);
/// assert_eq!(records, generate(&GeneratorConfig::all(42, 5)).unwrap());
/// for r in &records {
///     let value: serde_json::Value = serde_json::from_str(&r.output_json_minified).unwrap();
///     assert!(validate_uidsl(&value).is_ok());
/// }
/// ```
///
/// # Errors
/// [`UiDslError::InvalidConfig`] for a configuration without a theme, with too few section
/// types, with a focus theme or section type it does not include, or that cannot yield
/// `count` distinct instructions.
pub fn generate(config: &GeneratorConfig) -> Result<Vec<Record>, UiDslError> {
    generate_avoiding(config, &HashSet::new())
}

/// Like [`generate`], but never produces an instruction in `avoid` (used to keep validation
/// and test corpora disjoint from training corpora).
///
/// ```
/// use std::collections::HashSet;
/// use uidsl::{generate, generate_avoiding, GeneratorConfig};
///
/// let train = generate(&GeneratorConfig::all(1, 20)).unwrap();
/// let seen: HashSet<String> = train.iter().map(|r| r.instruction.clone()).collect();
/// let valid = generate_avoiding(&GeneratorConfig::all(1, 20), &seen).unwrap();
/// assert!(valid.iter().all(|r| !seen.contains(&r.instruction)));
/// ```
///
/// # Errors
/// As [`generate`]; the instructions to avoid count against the distinct ones it can draw.
pub fn generate_avoiding(
    config: &GeneratorConfig,
    avoid: &HashSet<String>,
) -> Result<Vec<Record>, UiDslError> {
    config.check()?;
    let mut rng = SplitMix64::new(config.seed);
    let mut seen: HashSet<String> = HashSet::new();
    let mut records = Vec::with_capacity(config.count);
    let max_attempts = config.count.saturating_mul(100).max(1000);
    for _ in 0..max_attempts {
        if records.len() == config.count {
            break;
        }
        let (kind, page) = sample_page(config, &mut rng);
        let text = instruction(kind, &page, &mut rng);
        if avoid.contains(&text) || !seen.insert(text.clone()) {
            continue;
        }
        records.push(Record {
            instruction: text,
            output_json_minified: UiDsl { page }.to_json_minified(),
        });
    }
    if records.len() < config.count {
        return Err(UiDslError::InvalidConfig {
            reason: format!(
                "only {} distinct instructions could be generated, {} were asked for",
                records.len(),
                config.count
            ),
        });
    }
    Ok(records)
}

/// The records as JSONL: one compact JSON object per line, each line ending in `\n`.
///
/// ```
/// use uidsl::{to_jsonl, Record};
///
/// let r = Record { instruction: "a".into(), output_json_minified: "{}".into() };
/// assert_eq!(to_jsonl(&[r]), "{\"instruction\":\"a\",\"output_json_minified\":\"{}\"}\n");
/// ```
pub fn to_jsonl(records: &[Record]) -> String {
    let mut text = String::new();
    for record in records {
        // A record holds only strings: serialising it cannot fail.
        text.push_str(&serde_json::to_string(record).unwrap_or_default());
        text.push('\n');
    }
    text
}

/// Writes the records as JSONL ([`to_jsonl`]) to `path`, atomically: a temporary file beside
/// it is written, synced and renamed over `path`, so readers never see a partial file.
///
/// ```
/// use uidsl::{generate, write_jsonl, GeneratorConfig};
///
/// let dir = std::env::temp_dir().join(format!("uidsl-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// let path = dir.join("train.jsonl");
/// write_jsonl(&path, &generate(&GeneratorConfig::all(3, 4)).unwrap()).unwrap();
/// assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 4);
/// std::fs::remove_dir_all(&dir).unwrap();
/// ```
///
/// # Errors
/// [`UiDslError::File`] naming the file when it cannot be written (a previous file stays).
pub fn write_jsonl(path: &Path, records: &[Record]) -> Result<(), UiDslError> {
    Ok(lora_hf::write_atomic(path, to_jsonl(records).as_bytes())?)
}

#[derive(Clone, Copy)]
enum Focus {
    None,
    Theme,
    Section,
    Both,
}

fn choose_focus(config: &GeneratorConfig, rng: &mut SplitMix64) -> Focus {
    match (
        config.focus_themes.is_empty(),
        config.focus_section_types.is_empty(),
    ) {
        (true, true) => Focus::None,
        (false, true) => Focus::Theme,
        (true, false) => Focus::Section,
        (false, false) => [Focus::Theme, Focus::Section, Focus::Both][rng.below(3)],
    }
}

fn sample_page(config: &GeneratorConfig, rng: &mut SplitMix64) -> (&'static PageKind, Page) {
    let focus = choose_focus(config, rng);
    let theme_focus = matches!(focus, Focus::Theme | Focus::Both);
    let section_focus = matches!(focus, Focus::Section | Focus::Both);

    let other_themes: Vec<Theme> = config
        .themes
        .iter()
        .copied()
        .filter(|t| !config.focus_themes.contains(t))
        .collect();
    let theme_pool = if theme_focus || other_themes.is_empty() {
        &config.focus_themes
    } else {
        &other_themes
    };
    let theme = rng
        .pick(theme_pool)
        .or_else(|| rng.pick(&config.themes))
        .copied()
        .unwrap_or(Theme::MinimalWhite);

    let mut chosen: Vec<SectionType> = Vec::new();
    if section_focus {
        if let Some(s) = rng.pick(&config.focus_section_types) {
            chosen.push(*s);
        }
    }
    // A page kind that usually has the forced section, when there is one.
    let fitting: Vec<&'static PageKind> = lx::PAGE_KINDS
        .iter()
        .filter(|k| chosen.iter().all(|s| k.pool.contains(s)))
        .collect();
    let kind = rng.pick(&fitting).copied().unwrap_or(&lx::PAGE_KINDS[0]);
    let allowed: Vec<SectionType> = config
        .section_types
        .iter()
        .copied()
        .filter(|s| section_focus || !config.focus_section_types.contains(s))
        .collect();
    let wanted = rng.in_range(SECTIONS_PER_PAGE);
    let in_pool: Vec<SectionType> = allowed
        .iter()
        .copied()
        .filter(|s| kind.pool.contains(s))
        .collect();
    fill(&mut chosen, &in_pool, wanted, rng);
    fill(&mut chosen, &allowed, wanted, rng);

    let mut sections: Vec<Section> = chosen.into_iter().map(|s| section(s, rng)).collect();
    sections.sort_by_key(|s| (s.position(), s.section_type()));
    let page = Page {
        name: kind.name.to_string(),
        theme,
        sections,
    };
    (kind, page)
}

/// Adds random types from `pool` to `chosen` until it has `wanted`, never repeating a type and
/// never putting a footer and a tab bar on one page.
fn fill(chosen: &mut Vec<SectionType>, pool: &[SectionType], wanted: usize, rng: &mut SplitMix64) {
    let mut candidates = pool.to_vec();
    rng.shuffle(&mut candidates);
    for candidate in candidates {
        if chosen.len() >= wanted {
            break;
        }
        let clash = match candidate {
            SectionType::Footer => chosen.contains(&SectionType::TabBar),
            SectionType::TabBar => chosen.contains(&SectionType::Footer),
            _ => false,
        };
        if !clash && !chosen.contains(&candidate) {
            chosen.push(candidate);
        }
    }
}

fn section(kind: SectionType, rng: &mut SplitMix64) -> Section {
    let position = rng
        .pick(lx::positions_of(kind))
        .copied()
        .unwrap_or(crate::schema::Position::Middle);
    match kind {
        SectionType::NavBar => Section::NavBar {
            back: rng.chance(0.5),
        },
        SectionType::SearchBar => Section::SearchBar { position },
        SectionType::Banner => Section::Banner { position },
        SectionType::Carousel => Section::Carousel {
            position,
            slides: rng.in_range(2..=5) as u8,
        },
        SectionType::ProductGrid => Section::ProductGrid {
            position,
            columns: rng.in_range(1..=4) as u8,
            card: CardKind::ProductCard,
        },
        SectionType::List => Section::List {
            position,
            item: *rng.pick(ListItem::ALL).unwrap_or(&ListItem::Product),
        },
        SectionType::Form => Section::Form {
            position,
            fields: distinct(FormField::ALL, 2..=3, rng),
        },
        SectionType::Button => Section::Button {
            position,
            action: *rng.pick(ButtonAction::ALL).unwrap_or(&ButtonAction::Submit),
        },
        SectionType::Footer => Section::Footer {
            links: distinct(FooterLink::ALL, 2..=3, rng),
        },
        SectionType::TabBar => Section::TabBar {
            items: distinct(TabItem::ALL, 3..=4, rng),
        },
    }
}

/// `count` distinct members of `all`, chosen at random, kept in declaration order.
fn distinct<T: Copy>(
    all: &[T],
    count: std::ops::RangeInclusive<usize>,
    rng: &mut SplitMix64,
) -> Vec<T> {
    let mut indices: Vec<usize> = (0..all.len()).collect();
    rng.shuffle(&mut indices);
    indices.truncate(rng.in_range(count));
    indices.sort_unstable();
    indices.into_iter().map(|i| all[i]).collect()
}
