//! Value parsers of the command-line flags: every number is checked where it enters, so that
//! no NaN, infinity or out-of-range count reaches a config, an allocation or a file.

use std::ops::RangeInclusive;

use clap::builder::{RangedU64ValueParser, StringValueParser, TypedValueParser, ValueParser};

/// The most a LoRA rank flag may ask for (PEFT allows a rank above a layer's width; this keeps
/// the adapter of one layer within `65536 × (in + out)` values).
pub const MAX_RANK: u64 = 65_536;
/// The most examples per batch, epochs or other counts a flag may ask for where no closer
/// bound applies.
pub const MAX_COUNT: u64 = 1 << 20;
/// The most tokens of a source or target sequence (attention costs `heads × length²` scores per
/// example: 8192 tokens and 8 heads are 2 GiB per example).
pub const MAX_SEQUENCE_LEN: u64 = 8192;
/// The most beams (`GenerationConfig::MAX_NUM_BEAMS`).
pub const MAX_BEAMS: u64 = 1024;
/// The most new tokens (`GenerationConfig::MAX_NEW_TOKENS`).
pub const MAX_NEW_TOKENS: u64 = 65_536;

/// A whole number in `range`.
pub fn count(range: RangeInclusive<u64>) -> ValueParser {
    RangedU64ValueParser::<usize>::new().range(range).into()
}

/// A finite number in `[low, high]` (`open_low` / `open_high` exclude the bound), converted by
/// `convert` (to `f32` for the decoding flags: `high` is then at most `f32::MAX`); `expected`
/// says what is wanted in the refusal.
fn number<T: Clone + Send + Sync + 'static>(
    (low, high): (f64, f64),
    (open_low, open_high): (bool, bool),
    expected: &'static str,
    convert: fn(f64) -> T,
) -> ValueParser {
    StringValueParser::new()
        .try_map(move |text: String| {
            let value: f64 = text
                .trim()
                .parse()
                .map_err(|_| format!("`{text}` is not a number: expected {expected}"))?;
            let above = if open_low { value > low } else { value >= low };
            let below = if open_high {
                value < high
            } else {
                value <= high
            };
            if value.is_finite() && above && below {
                Ok(convert(value))
            } else {
                Err(format!("`{text}`: expected {expected}"))
            }
        })
        .into()
}

fn to_f32(value: f64) -> f32 {
    value as f32
}

/// Any finite number.
pub fn finite() -> ValueParser {
    number(
        (f64::MIN, f64::MAX),
        (false, false),
        "a finite number",
        f64::from,
    )
}

/// A finite number above 0.
pub fn positive() -> ValueParser {
    let expected = "a finite number in (0, ∞)";
    number((0.0, f64::MAX), (true, false), expected, f64::from)
}

/// A finite number ≥ 0.
pub fn non_negative() -> ValueParser {
    let expected = "a finite number in [0, ∞)";
    number((0.0, f64::MAX), (false, false), expected, f64::from)
}

/// A probability in `[0, 1)` (dropout, a validation share).
pub fn probability() -> ValueParser {
    number((0.0, 1.0), (false, true), "a number in [0, 1)", f64::from)
}

/// Any `f32` (a length penalty).
pub fn finite_f32() -> ValueParser {
    let range = (f64::from(f32::MIN), f64::from(f32::MAX));
    number(range, (false, false), "a finite 32-bit number", to_f32)
}

/// An `f32` above 0 (a temperature; the smallest ones sample greedily).
pub fn positive_f32() -> ValueParser {
    let range = (0.0, f64::from(f32::MAX));
    number(
        range,
        (true, false),
        "a finite 32-bit number in (0, ∞)",
        to_f32,
    )
}

/// A probability in `[0, 1)` as `f32` (epsilon and eta cutoffs).
pub fn probability_f32() -> ValueParser {
    number((0.0, 1.0), (false, true), "a number in [0, 1)", to_f32)
}

/// A fraction in `[0, 1]` as `f32` (min-p).
pub fn fraction_f32() -> ValueParser {
    number((0.0, 1.0), (false, false), "a number in [0, 1]", to_f32)
}

/// A share in `(0, 1]` as `f32` (top-p).
pub fn share_f32() -> ValueParser {
    number((0.0, 1.0), (true, false), "a number in (0, 1]", to_f32)
}

/// An adapter to load: its name and directory (`--adapter NAME=DIR`, or `DIR` for `default`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterSpec {
    /// The adapter name.
    pub name: String,
    /// The PEFT adapter directory.
    pub dir: std::path::PathBuf,
}

/// `NAME=DIR` (a name of letters, digits, `_`, `-` and `.`) or `DIR`, named `default`.
pub fn adapter_spec() -> ValueParser {
    StringValueParser::new()
        .try_map(|text: String| -> Result<AdapterSpec, String> {
            if let Some((name, dir)) = text.split_once('=') {
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_alphanumeric() || "_-.".contains(c));
                if valid && !std::path::Path::new(&text).exists() {
                    if dir.is_empty() {
                        return Err(format!("`{text}`: expected NAME=DIR with a directory"));
                    }
                    if name == "__base__" {
                        return Err(format!("`{text}`: `__base__` is the base model's name"));
                    }
                    return Ok(AdapterSpec {
                        name: name.to_string(),
                        dir: dir.into(),
                    });
                }
            }
            Ok(AdapterSpec {
                name: "default".to_string(),
                dir: text.into(),
            })
        })
        .into()
}
