//! Per-sequence stopping criteria (transformers' `StoppingCriteria`); the length, the
//! end-of-sequence ids and `max_time` are the search loops' own.

/// Decides after each step whether a sequence is finished.
///
/// ```
/// use lora_generate::StoppingCriterion;
///
/// /// Stops a sequence at its first token 9.
/// struct AtNine;
///
/// impl StoppingCriterion for AtNine {
///     fn is_done(&self, sequence: &[u32]) -> bool {
///         sequence.last() == Some(&9)
///     }
/// }
/// assert!(AtNine.is_done(&[0, 4, 9]));
/// ```
pub trait StoppingCriterion {
    /// Whether `sequence` (the decoder start token first, the step's token last) is finished.
    fn is_done(&self, sequence: &[u32]) -> bool;
}

/// Stops a sequence when its text comes to hold one of the stop strings in a part that the
/// last token wrote (transformers' `StopStringCriteria`: a stop string already present one
/// token earlier does not stop it again). `decode` turns the new tokens (the decoder start
/// token left out) into text.
///
/// ```
/// use lora_generate::{StopStrings, StoppingCriterion};
///
/// let vocabulary = ["<pad>", "</s>", "{", "}", "\"a\""];
/// let decode = |ids: &[u32]| ids.iter().map(|t| vocabulary[*t as usize]).collect::<String>();
/// let stop = StopStrings::new(vec!["}".into()], decode);
/// assert!(stop.is_done(&[0, 2, 4, 3]));
/// assert!(!stop.is_done(&[0, 2, 4]));
/// assert!(!stop.is_done(&[0, 2, 3, 4]));
/// ```
pub struct StopStrings<F> {
    strings: Vec<String>,
    decode: F,
}

impl<F: Fn(&[u32]) -> String> StopStrings<F> {
    /// Stops at any of `strings`, reading tokens with `decode`.
    pub fn new(strings: Vec<String>, decode: F) -> Self {
        Self { strings, decode }
    }
}

impl<F: Fn(&[u32]) -> String> StoppingCriterion for StopStrings<F> {
    fn is_done(&self, sequence: &[u32]) -> bool {
        let Some((_, new)) = sequence.split_first() else {
            return false;
        };
        if new.is_empty() {
            return false;
        }
        let text = (self.decode)(new);
        let before = (self.decode)(&new[..new.len() - 1]);
        // The text up to the last token, when decoding the shorter sequence gives a prefix of
        // the longer one (otherwise the last token changed earlier text: look at all of it).
        let settled = if text.starts_with(&before) {
            before.len()
        } else {
            0
        };
        self.strings.iter().any(|stop| {
            // An occurrence ending after `settled` overlaps the last token's text.
            let mut from = settled.saturating_sub(stop.len().saturating_sub(1));
            while !text.is_char_boundary(from) {
                from -= 1;
            }
            text[from..].contains(stop.as_str())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers' own examples for the stop string "stop" (`StopStringCriteria`'s
    /// documentation), one token string per id.
    fn stops(tokens: &[&str]) -> bool {
        let vocabulary: Vec<String> = std::iter::once(String::new())
            .chain(tokens.iter().map(|t| t.to_string()))
            .collect();
        let decode = |ids: &[u32]| {
            ids.iter()
                .map(|t| vocabulary[*t as usize].as_str())
                .collect()
        };
        let sequence: Vec<u32> = (0..=tokens.len() as u32).collect();
        StopStrings::new(vec!["stop".into()], decode).is_done(&sequence)
    }

    #[test]
    fn the_stop_string_overlapping_the_last_token_stops() {
        for tokens in [
            &["st", "op"][..],
            &["stop"],
            &["st", "opera"],
            &["sto", "pper"],
            &["las", "topper"],
            &["s", "to", "pped"],
        ] {
            assert!(stops(tokens), "{tokens:?}");
        }
    }

    #[test]
    fn a_stop_string_before_the_last_token_does_not_stop_again() {
        for tokens in [
            &["stop", "at"][..],
            &["st", "op", "at"],
            &["st", "opera", "tion"],
        ] {
            assert!(!stops(tokens), "{tokens:?}");
        }
    }
}
