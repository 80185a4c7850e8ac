//! Turning a UI-DSL page into a Chinese instruction, with synonyms, varied separators and
//! varied clause order.

use crate::lexicon::{self as lx, PageKind};
use crate::rng::SplitMix64;
use crate::schema::{Page, Section};

/// A Chinese instruction describing `page` (of kind `kind`); every detail of the page is
/// stated, so the page can be recovered from the text.
pub(crate) fn instruction(kind: &PageKind, page: &Page, rng: &mut SplitMix64) -> String {
    let sep = pick(rng, lx::CLAUSE_SEPARATORS);
    let theme = pick(rng, lx::theme_words(page.theme));
    let page_word = pick(rng, kind.words);
    let opener = pick(rng, lx::OPENERS);

    let mut clauses: Vec<String> = page
        .sections
        .iter()
        .map(|s| section_clause(s, rng))
        .collect();
    if rng.chance(0.5) {
        rng.shuffle(&mut clauses);
    }
    let mut parts: Vec<String> = Vec::with_capacity(clauses.len() + 2);
    match rng.below(4) {
        0 => {
            parts.push(format!("{opener}{}的{page_word}", adjective_of(rng, theme)));
            parts.extend(clauses);
        }
        1 => {
            parts.push(format!("{opener}{page_word}"));
            parts.extend(clauses);
            parts.push(pick(rng, lx::THEME_CLAUSES).replace("{t}", theme));
        }
        2 => {
            parts.push(format!("{opener}{page_word}"));
            parts.push(pick(rng, lx::THEME_CLAUSES).replace("{t}", theme));
            parts.extend(clauses);
        }
        _ => {
            parts.extend(clauses);
            parts.push(format!("{}的{page_word}", adjective_of(rng, theme)));
        }
    }
    let mut text = parts.join(sep);
    if rng.chance(0.2) {
        text.push('。');
    }
    text
}

fn adjective_of(rng: &mut SplitMix64, theme: &str) -> String {
    pick(rng, lx::THEME_ADJECTIVES).replace("{t}", theme)
}

fn pick<'a>(rng: &mut SplitMix64, items: &[&'a str]) -> &'a str {
    rng.pick(items).copied().unwrap_or_default()
}

/// A parenthesised list of words, one chosen synonym per entry.
fn word_list<T: Copy>(
    rng: &mut SplitMix64,
    entries: &[T],
    words: fn(T) -> &'static [&'static str],
) -> String {
    let sep = pick(rng, lx::LIST_SEPARATORS);
    let (open, close) = rng.pick(lx::PARENTHESES).copied().unwrap_or(("（", "）"));
    let inner: Vec<&str> = entries.iter().map(|e| pick(rng, words(*e))).collect();
    format!("{open}{}{close}", inner.join(sep))
}

fn section_clause(section: &Section, rng: &mut SplitMix64) -> String {
    let noun = match section {
        Section::NavBar { back } => {
            let noun = pick(rng, lx::NAV_NOUNS);
            return if *back {
                pick(rng, lx::NAV_WITH_BACK).replace("{n}", noun)
            } else {
                noun.to_string()
            };
        }
        Section::TabBar { items } => {
            let noun = pick(rng, lx::TAB_NOUNS);
            return format!("{noun}{}", word_list(rng, items, lx::tab_words));
        }
        Section::Footer { links } => {
            let noun = pick(rng, lx::FOOTER_NOUNS);
            return format!("{noun}{}", word_list(rng, links, lx::link_words));
        }
        Section::SearchBar { .. } => pick(rng, lx::SEARCH_NOUNS).to_string(),
        Section::Banner { .. } => pick(rng, lx::BANNER_NOUNS).to_string(),
        Section::Carousel { slides, .. } => {
            let count = pick(rng, lx::count_words(*slides));
            pick(rng, lx::CAROUSEL_NOUNS).replace("{k}", count)
        }
        Section::ProductGrid { columns, .. } => {
            let columns = pick(rng, lx::column_words(*columns));
            let card = pick(rng, lx::CARD_WORDS);
            pick(rng, lx::GRID_NOUNS)
                .replace("{c}", columns)
                .replace("{g}", card)
        }
        Section::List { item, .. } => {
            let item = pick(rng, lx::list_item_words(*item));
            pick(rng, lx::LIST_NOUNS).replace("{i}", item)
        }
        Section::Form { fields, .. } => {
            let fields = word_list(rng, fields, lx::field_words);
            pick(rng, lx::FORM_NOUNS).replace("{f}", &fields)
        }
        Section::Button { action, .. } => {
            let action = pick(rng, lx::action_words(*action));
            pick(rng, lx::BUTTON_NOUNS).replace("{a}", action)
        }
    };
    let position = pick(rng, lx::position_words(section.position()));
    pick(rng, lx::PLACED_TEMPLATES)
        .replace("{p}", position)
        .replace("{n}", &noun)
}
