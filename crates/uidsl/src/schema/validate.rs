//! Checking a JSON value against the UI-DSL schema, reporting every problem with its JSON path.

use serde_json::{Map, Value};

use super::{
    ButtonAction, CardKind, FooterLink, FormField, ListItem, Position, SectionType, TabItem, Theme,
    CAROUSEL_SLIDES, FOOTER_LINKS, FORM_FIELDS, GRID_COLUMNS, MAX_NAME_LEN, MAX_SECTIONS,
    TAB_ITEMS,
};

/// Checks `value` against the UI-DSL schema. On failure, returns one message per problem,
/// each starting with the JSON path of the offending value (`$.page.sections[1].columns: ...`).
///
/// Beyond types and allowed values, it checks that the page name is snake_case, that list
/// fields hold distinct names, that no unknown key appears and that sections are ordered top,
/// middle, bottom.
///
/// ```
/// use uidsl::validate_uidsl;
/// use serde_json::json;
///
/// let good = json!({"page": {"name": "home_page", "theme": "obsidian-gold", "sections": [
///     {"type": "search_bar", "position": "top"},
///     {"type": "product_grid", "position": "middle", "columns": 2, "card": "product_card"},
///     {"type": "tab_bar", "items": ["home", "category", "cart", "me"]}]}});
/// assert!(validate_uidsl(&good).is_ok());
///
/// let bad = json!({"page": {"name": "Home", "theme": "obsidian-gold", "sections": [
///     {"type": "product_grid", "position": "middle", "columns": 9, "card": "product_card"}]}});
/// let errors = validate_uidsl(&bad).unwrap_err();
/// assert!(errors[0].starts_with("$.page.name:"));
/// assert!(errors[1].starts_with("$.page.sections[0].columns:"));
/// ```
///
/// # Errors
/// Every problem at once, one message per problem with its JSON path.
pub fn validate_uidsl(value: &Value) -> Result<(), Vec<String>> {
    let mut errors = Vec::new();
    if let Some(root) = object(value, "$", &mut errors) {
        unknown_keys(root, &["page"], "$", "", &mut errors);
        match root.get("page") {
            None => errors.push("$: missing field \"page\"".into()),
            Some(page) => check_page(page, &mut errors),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// What a section field must hold.
enum Kind {
    Position,
    Bool,
    Int(i64, i64),
    Name(fn() -> Vec<&'static str>),
    Names(fn() -> Vec<&'static str>, usize, usize),
}

fn section_fields(kind: SectionType) -> Vec<(&'static str, Kind)> {
    let range = |r: std::ops::RangeInclusive<u8>| Kind::Int(*r.start() as i64, *r.end() as i64);
    let names = |f: fn() -> Vec<&'static str>, r: std::ops::RangeInclusive<usize>| {
        Kind::Names(f, *r.start(), *r.end())
    };
    match kind {
        SectionType::NavBar => vec![("back", Kind::Bool)],
        SectionType::SearchBar | SectionType::Banner => vec![("position", Kind::Position)],
        SectionType::Carousel => vec![
            ("position", Kind::Position),
            ("slides", range(CAROUSEL_SLIDES)),
        ],
        SectionType::ProductGrid => vec![
            ("position", Kind::Position),
            ("columns", range(GRID_COLUMNS)),
            ("card", Kind::Name(CardKind::names)),
        ],
        SectionType::List => vec![
            ("position", Kind::Position),
            ("item", Kind::Name(ListItem::names)),
        ],
        SectionType::Form => vec![
            ("position", Kind::Position),
            ("fields", names(FormField::names, FORM_FIELDS)),
        ],
        SectionType::Button => vec![
            ("position", Kind::Position),
            ("action", Kind::Name(ButtonAction::names)),
        ],
        SectionType::Footer => vec![("links", names(FooterLink::names, FOOTER_LINKS))],
        SectionType::TabBar => vec![("items", names(TabItem::names, TAB_ITEMS))],
    }
}

fn check_page(page: &Value, errors: &mut Vec<String>) {
    let path = "$.page";
    let Some(page) = object(page, path, errors) else {
        return;
    };
    unknown_keys(page, &["name", "theme", "sections"], path, "", errors);
    match page.get("name") {
        None => errors.push(format!("{path}: missing field \"name\"")),
        Some(name) => check_name(name, &format!("{path}.name"), errors),
    }
    match page.get("theme") {
        None => errors.push(format!("{path}: missing field \"theme\"")),
        Some(theme) => check_member(theme, Theme::names, &format!("{path}.theme"), errors),
    }
    match page.get("sections") {
        None => errors.push(format!("{path}: missing field \"sections\"")),
        Some(sections) => check_sections(sections, errors),
    }
}

fn check_name(name: &Value, path: &str, errors: &mut Vec<String>) {
    match name.as_str() {
        None => errors.push(format!("{path}: expected a string, found {}", found(name))),
        Some(s) if !is_snake_case(s) || s.len() > MAX_NAME_LEN => errors.push(format!(
            "{path}: expected a snake_case name of at most {MAX_NAME_LEN} bytes \
             (like \"home_page\"), found {}",
            found(name)
        )),
        Some(_) => {}
    }
}

fn is_snake_case(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.split('_').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

fn check_sections(sections: &Value, errors: &mut Vec<String>) {
    let path = "$.page.sections";
    let Some(sections) = sections.as_array() else {
        errors.push(format!(
            "{path}: expected an array, found {}",
            found(sections)
        ));
        return;
    };
    if sections.is_empty() || sections.len() > MAX_SECTIONS {
        errors.push(format!(
            "{path}: expected 1 to {MAX_SECTIONS} sections, found {}",
            sections.len()
        ));
    }
    let mut lowest: Option<Position> = None;
    for (i, section) in sections.iter().enumerate() {
        let path = format!("{path}[{i}]");
        let Some(position) = check_section(section, &path, errors) else {
            continue;
        };
        if let Some(previous) = lowest.filter(|p| position < *p) {
            errors.push(format!(
                "{path}: a {position} section after a {previous} one; sections are ordered \
                 top, middle, bottom"
            ));
        }
        lowest = lowest.max(Some(position));
    }
}

/// Checks one section and returns where it sits, when that is known.
fn check_section(section: &Value, path: &str, errors: &mut Vec<String>) -> Option<Position> {
    let section = object(section, path, errors)?;
    let kind = match section.get("type") {
        None => {
            errors.push(format!("{path}: missing field \"type\""));
            return None;
        }
        Some(kind) => {
            check_member(kind, SectionType::names, &format!("{path}.type"), errors);
            SectionType::from_name(kind.as_str()?)?
        }
    };
    let fields = section_fields(kind);
    let allowed: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
    let note = match kind.fixed_position() {
        Some(fixed) => format!(" (a {kind} is always at the {fixed} and has no position)"),
        None => String::new(),
    };
    let mut allowed_with_type = allowed.clone();
    allowed_with_type.push("type");
    unknown_keys(section, &allowed_with_type, path, &note, errors);
    let mut position = kind.fixed_position();
    for (name, field_kind) in &fields {
        let field_path = format!("{path}.{name}");
        let Some(value) = section.get(*name) else {
            errors.push(format!(
                "{path}: missing field \"{name}\" of a {kind} section"
            ));
            continue;
        };
        match field_kind {
            Kind::Position => {
                check_member(value, Position::names, &field_path, errors);
                position = value.as_str().and_then(Position::from_name);
            }
            Kind::Bool => {
                if !value.is_boolean() {
                    errors.push(format!(
                        "{field_path}: expected true or false, found {}",
                        found(value)
                    ));
                }
            }
            Kind::Int(min, max) => {
                if !value.as_i64().is_some_and(|v| (*min..=*max).contains(&v)) {
                    errors.push(format!(
                        "{field_path}: expected an integer from {min} to {max}, found {}",
                        found(value)
                    ));
                }
            }
            Kind::Name(names) => check_member(value, *names, &field_path, errors),
            Kind::Names(names, min, max) => {
                check_member_list(value, *names, (*min, *max), &field_path, errors)
            }
        }
    }
    position
}

fn check_member_list(
    value: &Value,
    names: fn() -> Vec<&'static str>,
    (min, max): (usize, usize),
    path: &str,
    errors: &mut Vec<String>,
) {
    let Some(items) = value.as_array() else {
        errors.push(format!("{path}: expected an array, found {}", found(value)));
        return;
    };
    if items.len() < min || items.len() > max {
        errors.push(format!(
            "{path}: expected {min} to {max} entries, found {}",
            items.len()
        ));
    }
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{i}]");
        check_member(item, names, &item_path, errors);
        if items[..i].contains(item) {
            errors.push(format!("{item_path}: duplicate entry {}", found(item)));
        }
    }
}

fn check_member(
    value: &Value,
    names: fn() -> Vec<&'static str>,
    path: &str,
    errors: &mut Vec<String>,
) {
    let names = names();
    if !value.as_str().is_some_and(|s| names.contains(&s)) {
        errors.push(format!(
            "{path}: expected one of {}, found {}",
            names.join(", "),
            found(value)
        ));
    }
}

fn object<'a>(
    value: &'a Value,
    path: &str,
    errors: &mut Vec<String>,
) -> Option<&'a Map<String, Value>> {
    let map = value.as_object();
    if map.is_none() {
        errors.push(format!(
            "{path}: expected an object, found {}",
            found(value)
        ));
    }
    map
}

fn unknown_keys(
    map: &Map<String, Value>,
    allowed: &[&str],
    path: &str,
    note: &str,
    errors: &mut Vec<String>,
) {
    for key in map.keys().filter(|k| !allowed.contains(&k.as_str())) {
        errors.push(format!("{path}.{key}: unknown field{note}"));
    }
}

/// A short rendering of `value` for messages.
fn found(value: &Value) -> String {
    let text = match value {
        Value::Array(_) => return "an array".into(),
        Value::Object(_) => return "an object".into(),
        other => other.to_string(),
    };
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}
