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

/// The form of a message, and of a keyword of `opt_out` (`keywords`, `resubscribe`,
/// `help`), that STOP, START and HELP are matched in, so that a keyword is recognised as
/// phones and people type it:
///
/// 1. Unicode NFKC: fullwidth `ＳＴＯＰ` and styled letters become plain `STOP`, and so do
///    letters in squares and circles (`🆂🆃🅾🅿`);
/// 2. default-ignorable characters are dropped (zero-width space and joiners, word
///    joiner, byte-order mark, soft hyphen, direction marks, variation selectors);
/// 3. [`normalize_keyword`]: trimmed, runs of spaces and hyphens folded, lower-cased;
/// 4. punctuation and symbols around the words are stripped (`"STOP"`, `(stop)`,
///    `STOP…`, `¡stop!`, `stop 🛑`);
/// 5. a keyword said more than once, between any spaces, punctuation or symbols, is said
///    once (`STOP STOP`, `stop, stop` and `Stop!Stop!` are `stop`).
pub fn normalize_opt_keyword(text: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let plain: std::borrow::Cow<'_, str> = if text.is_ascii() {
        std::borrow::Cow::Borrowed(text)
    } else {
        std::borrow::Cow::Owned(
            text.nfkc()
                .filter(|c| !is_default_ignorable(*c))
                .map(unboxed)
                .collect(),
        )
    };
    let folded = normalize_keyword(&plain);
    let core = folded.trim_matches(|c: char| !c.is_alphanumeric()).trim();
    if core.chars().all(char::is_alphanumeric) {
        // One word, the common case: no repeat to look for.
        return if core.len() == folded.len() {
            folded
        } else {
            core.to_string()
        };
    }
    // A keyword said n times (`STOP STOP`, `stop, stop`, `Stop!Stop!`): the words,
    // between any punctuation, symbols or spaces, are n copies of their first 1/n.
    let words: Vec<&str> = core
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    for unit in 1..words.len() {
        if words.len().is_multiple_of(unit) && words.chunks(unit).all(|c| c == &words[..unit]) {
            return words[..unit].join(" ");
        }
    }
    core.to_string()
}

/// Whether a message in [`normalize_opt_keyword`] form could be meant as one of
/// `keywords` without matching it: spelled with look-alike letters of another script
/// (Cyrillic `ЅТОР`, Greek `ΣΤΟΠ` does not count, `SΤΟP` with Greek T and O does), or
/// letter by letter (`S T O P`, `s.t.o.p`). Such a message gets the ambiguous opt-out
/// clarification rather than being ignored.
pub fn resembles_keyword(normal: &str, keywords: &[String]) -> bool {
    if normal.is_empty() || keywords.iter().any(|k| k == normal) {
        return false;
    }
    // Only letters outside ASCII have look-alikes; only several words can be letters
    // spelled out. Most messages are neither, and cost no allocation here.
    let spaced = normal.contains(|c: char| !c.is_alphanumeric());
    if normal.is_ascii() && !spaced {
        return false;
    }
    let skeleton: String = normal.chars().map(latin_look_alike).collect();
    if skeleton != normal && keywords.contains(&skeleton) {
        return true;
    }
    // Letter-spaced: every word one character, separated by spaces or punctuation.
    let letters: Vec<char> = skeleton
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .flat_map(|w| {
            let mut cs = w.chars();
            match (cs.next(), cs.next()) {
                (Some(c), None) => Some(c),
                // A word longer than one letter: not spelled out; stop here.
                _ => Some('\u{0}'),
            }
        })
        .collect();
    if letters.len() < 2 || letters.contains(&'\u{0}') {
        return false;
    }
    let joined: String = letters.into_iter().collect();
    keywords.iter().any(|k| k.replace(' ', "") == joined)
}

/// The Latin letter a lower-case letter of another script is drawn like, or the letter
/// itself: the Cyrillic and Greek letters that pass for Latin ones in most fonts.
fn latin_look_alike(c: char) -> char {
    match c {
        'а' | 'α' => 'a',
        'в' | 'β' => 'b',
        'с' | 'ϲ' => 'c',
        'ԁ' => 'd',
        'е' | 'ε' => 'e',
        'һ' | 'н' | 'η' => 'h',
        'і' | 'ι' | 'ӏ' => 'i',
        'ј' => 'j',
        'к' | 'κ' => 'k',
        'м' | 'μ' => 'm',
        'ո' => 'n',
        'о' | 'ο' | 'օ' | 'σ' => 'o',
        'р' | 'ρ' => 'p',
        'ԛ' => 'q',
        'ѕ' => 's',
        'т' | 'τ' => 't',
        'υ' | 'ս' => 'u',
        'ν' | 'ѵ' => 'v',
        'ԝ' | 'ѡ' => 'w',
        'х' | 'χ' => 'x',
        'у' | 'ү' | 'γ' => 'y',
        'ζ' => 'z',
        // Small capitals, as "fancy text" generators write them.
        'ᴀ' => 'a',
        'ʙ' => 'b',
        'ᴄ' => 'c',
        'ᴅ' => 'd',
        'ᴇ' => 'e',
        'ꜰ' => 'f',
        'ɢ' => 'g',
        'ʜ' => 'h',
        'ɪ' => 'i',
        'ᴊ' => 'j',
        'ᴋ' => 'k',
        'ʟ' => 'l',
        'ᴍ' => 'm',
        'ɴ' => 'n',
        'ᴏ' => 'o',
        'ᴘ' => 'p',
        'ǫ' => 'q',
        'ʀ' => 'r',
        'ꜱ' => 's',
        'ᴛ' => 't',
        'ᴜ' => 'u',
        'ᴠ' => 'v',
        'ᴡ' => 'w',
        'ʏ' => 'y',
        'ᴢ' => 'z',
        other => other,
    }
}

/// Latin letters drawn in squares or circles, and regional indicators (🆂🆃🅾🅿, 🅢🅣🅞🅟,
/// 🇸🇹🇴🇵): plain letters, as NFKC does for other styled letters.
fn unboxed(c: char) -> char {
    match c {
        '\u{1F130}'..='\u{1F149}' => letter(c as u32 - 0x1F130),
        '\u{1F150}'..='\u{1F169}' => letter(c as u32 - 0x1F150),
        '\u{1F170}'..='\u{1F189}' => letter(c as u32 - 0x1F170),
        '\u{1F1E6}'..='\u{1F1FF}' => letter(c as u32 - 0x1F1E6),
        other => other,
    }
}

/// The `n`th lower-case Latin letter (0 is `a`).
fn letter(n: u32) -> char {
    char::from_u32(u32::from(b'a') + n.min(25)).unwrap_or('a')
}

/// Unicode's Default_Ignorable_Code_Point property: characters with no visible form
/// that a keyboard, a copy and paste or a platform can slip into a message.
fn is_default_ignorable(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
        | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}'
        | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0000}'..='\u{E0FFF}')
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
    fn stop_is_recognised_as_phones_type_it() {
        for typed in [
            "STOP",
            " stop ",
            "Stop.",
            "ＳＴＯＰ",
            "S\u{200B}TOP",
            "ST\u{00AD}OP",
            "\u{FEFF}STOP",
            "S\u{2060}T\u{200D}O\u{200C}P",
            "\"STOP\"",
            "«stop»",
            "(STOP)",
            "[stop]",
            "STOP…",
            "¡stop!",
            "stop 🛑",
            "STOP STOP",
            "stop stop stop",
            "stop, stop",
            "Stop!Stop!",
            "STOP 🛑 STOP",
            "🆂🆃🅾🅿",
            "🅢🅣🅞🅟",
            "𝐒𝐓𝐎𝐏",
        ] {
            assert_eq!(normalize_opt_keyword(typed), "stop", "{typed:?}");
        }
        assert_eq!(normalize_opt_keyword("Opt-out, opt out!"), "opt out");
        assert_eq!(normalize_opt_keyword("opt out opt out"), "opt out");
        // Not the keyword: more words, or a keyword inside a word.
        assert_eq!(normalize_opt_keyword("stop it"), "stop it");
        assert_eq!(normalize_opt_keyword("STOPPED"), "stopped");
        assert_eq!(normalize_opt_keyword("stop stop it"), "stop stop it");
        assert_eq!(normalize_opt_keyword("🛑"), "");
    }

    #[test]
    fn look_alikes_and_spelled_out_keywords_resemble_them() {
        let keywords = vec!["stop".to_string(), "opt out".to_string()];
        for typed in [
            "ЅТОР",
            "SТОP",
            "S T O P",
            "s.t.o.p",
            "s-t-o-p",
            "O P T O U T",
        ] {
            let normal = normalize_opt_keyword(typed);
            assert!(
                resembles_keyword(&normal, &keywords),
                "{typed:?} → {normal:?}"
            );
        }
        for typed in ["STOP", "stop it", "s t o", "hello", "a b", "τοπ"] {
            let normal = normalize_opt_keyword(typed);
            assert!(
                !resembles_keyword(&normal, &keywords),
                "{typed:?} → {normal:?}"
            );
        }
    }

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
