//! Text normalisation shared by the compiler (patterns are stored normalised) and the
//! runtime (messages are normalised the same way before matching), so the two agree.

/// Keyword and exact-reply matching (docs/runtime.md): trims, drops trailing
/// punctuation, folds runs of spaces and hyphens to one space, and lower-cases.
/// `"Opt-out!"` and `"OPT  OUT"` both give `"opt out"`.
pub fn normalize_keyword(text: &str) -> String {
    let trimmed = text
        .trim()
        .trim_end_matches(|c: char| c.is_ascii_punctuation() && c != '-' || c.is_whitespace());
    let mut out = String::with_capacity(trimmed.len());
    let mut pending_space = false;
    for c in trimmed.chars() {
        if c.is_whitespace() || c == '-' {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Whether `phrase` (already lower-case, as the compiler makes every phrase) occurs in
/// `text` as whole words, ignoring case.
pub fn contains_phrase(text: &str, phrase: &str) -> bool {
    if phrase.is_empty() {
        return false;
    }
    if text.is_ascii() && phrase.is_ascii() {
        // Most messages: compare bytes in place rather than lower-casing a copy.
        let (t, p) = (text.as_bytes(), phrase.as_bytes());
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        return (0..(t.len() + 1).saturating_sub(p.len())).any(|start| {
            let end = start + p.len();
            t[start..end].eq_ignore_ascii_case(p)
                && (start == 0 || !is_word(t[start - 1]))
                && (end == t.len() || !is_word(t[end]))
        });
    }
    contains_phrase_any(text, phrase)
}

/// [`contains_phrase`] for any text: lower-cases a copy, then searches it.
fn contains_phrase_any(text: &str, phrase: &str) -> bool {
    let lower = text.to_lowercase();
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(i) = lower[from..].find(phrase) {
        let start = from + i;
        let end = start + phrase.len();
        let before_ok = lower[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !is_word(c));
        let after_ok = lower[end..].chars().next().is_none_or(|c| !is_word(c));
        if before_ok && after_ok {
            return true;
        }
        from = start + lower[start..].chars().next().map_or(1, char::len_utf8);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ascii_phrase_search_agrees_with_the_general_one() {
        let texts = [
            "agent",
            "Agent please",
            "I want an AGENT.",
            "agents",
            "reagent",
            "an_agent",
            "talk to a human",
            "human-ish",
            "",
            "a",
            "x agent",
            "agent x",
            "agent_",
            "Order 12345 agent",
            "ag",
            "agen t",
            "  agent  ",
            "AgEnT!",
        ];
        let phrases = [
            "agent",
            "human",
            "talk to",
            "a",
            "order 12345",
            "t",
            "agent x",
        ];
        for t in texts {
            for p in phrases {
                assert_eq!(
                    contains_phrase(t, p),
                    contains_phrase_any(t, p),
                    "{t:?} / {p:?}"
                );
            }
        }
        assert!(contains_phrase("I want an AGENT.", "agent"));
        assert!(!contains_phrase("reagent", "agent"));
    }

    #[test]
    fn keywords_fold_case_spaces_hyphens_and_trailing_punctuation() {
        assert_eq!(normalize_keyword("  Stop! "), "stop");
        assert_eq!(normalize_keyword("opt-out"), "opt out");
        assert_eq!(normalize_keyword("OPT  OUT"), "opt out");
        assert_eq!(normalize_keyword("OPTOUT"), "optout");
        assert_eq!(normalize_keyword("a."), "a");
        assert_eq!(normalize_keyword("?"), "");
    }

    #[test]
    fn phrases_match_whole_words_only() {
        assert!(contains_phrase("Please STOP messaging me", "stop"));
        assert!(contains_phrase(
            "it was the wrong item, sorry",
            "wrong item"
        ));
        assert!(!contains_phrase("unstoppable", "stop"));
        assert!(!contains_phrase("stopped", "stop"));
        assert!(contains_phrase("stop.", "stop"));
    }
}
