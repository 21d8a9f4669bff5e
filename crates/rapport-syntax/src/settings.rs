//! `rapport.yaml`: project settings and policies (docs/language.md), read with serde_yaml
//! into typed settings with every default applied. Unknown keys and wrong types become
//! diagnostics that point at the YAML line and column.

pub mod depth;
mod raw;

use std::collections::BTreeMap;

use crate::ast::Duration;
use crate::diagnostic::{did_you_mean, Code, Diagnostic, Span};

/// The project's settings with every default applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub brand: String,
    /// Project variables, usable as `{name}` tokens.
    pub vars: BTreeMap<String, String>,
    pub channels: BTreeMap<String, Channel>,
    /// Approved templates; `None` parameters when declared as a plain list (no check).
    pub templates: BTreeMap<String, Option<Vec<String>>>,
    pub queues: Vec<String>,
    pub profile: BTreeMap<String, FieldType>,
    pub events: BTreeMap<String, BTreeMap<String, FieldType>>,
    pub disclosure: String,
    pub opt_out: OptOut,
    pub rate_limit: Option<RateLimit>,
    pub quiet_hours: Option<QuietHours>,
    pub escalation: Option<Escalation>,
    pub retention: Retention,
    pub dedupe_window: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// Free-form sends only within this long after the contact's last message.
    pub window: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    String,
    Number,
    Boolean,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptOut {
    pub keywords: Vec<String>,
    pub confirm: String,
    pub resubscribe: Vec<String>,
    pub resubscribe_confirm: String,
    pub help: Vec<String>,
    pub help_reply: String,
    pub footer: String,
    pub ambiguous: Vec<String>,
    pub clarify: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub max: u32,
    pub per: Duration,
}

/// A local time of day in minutes after midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ClockTime {
    pub minutes: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuietHours {
    pub from: ClockTime,
    pub to: ClockTime,
    /// IANA time zone name, e.g. `Europe/Bucharest`.
    pub zone: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Escalation {
    pub keywords: Vec<String>,
    pub sentiment_below: Option<f64>,
    pub queue: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub transcripts: Duration,
    pub transactional: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        raw::RawSettings::default().resolve()
    }
}

/// What reading `rapport.yaml` produced: the settings (defaults where the file could not
/// be read) and every problem found.
#[derive(Debug, Clone)]
pub struct ParsedSettings {
    pub settings: Settings,
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads the text of a `rapport.yaml`. An empty file is a project of defaults.
pub fn parse_settings(source: &str) -> ParsedSettings {
    let mut diagnostics = Vec::new();
    if let Some(at) = depth::too_deep(source, depth::MAX_YAML_DEPTH) {
        let end = source[at..]
            .char_indices()
            .nth(1)
            .map_or(source.len(), |(i, _)| at + i);
        diagnostics.push(
            Diagnostic::error(
                Code::YamlSyntax,
                format!(
                    "rapport.yaml nests more than {} levels deep",
                    depth::MAX_YAML_DEPTH
                ),
            )
            .label(Span::new(at, end), "too deep from here")
            .help("settings need a few levels (a key, a list, a mapping); look for a `[` or `{` that is never closed, or flatten the structure"),
        );
        return ParsedSettings {
            settings: Settings::default(),
            diagnostics,
        };
    }
    // First as plain YAML, so syntax errors and type errors get different codes.
    let settings = match serde_yaml::from_str::<serde_yaml::Value>(source) {
        Err(e) => {
            diagnostics.push(yaml_error(source, &e, Code::YamlSyntax));
            Settings::default()
        }
        Ok(serde_yaml::Value::Null) => Settings::default(),
        Ok(_) => match serde_yaml::from_str::<raw::RawSettings>(source) {
            Ok(raw) => {
                raw.validate(source, &mut diagnostics);
                raw.resolve()
            }
            Err(e) => {
                let code = if e.to_string().contains("unknown field") {
                    Code::YamlUnknownKey
                } else {
                    Code::YamlBadValue
                };
                diagnostics.push(yaml_error(source, &e, code));
                Settings::default()
            }
        },
    };
    ParsedSettings {
        settings,
        diagnostics,
    }
}

/// A serde_yaml error as a diagnostic at its line and column.
fn yaml_error(source: &str, error: &serde_yaml::Error, code: Code) -> Diagnostic {
    let full = error.to_string();
    // serde_yaml appends " at line L column C"; the span says that instead.
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full.clone(),
    };
    let span = error
        .location()
        .map(|l| span_at(source, l.line(), l.column()))
        .unwrap_or_default();
    let message = plain_types(&message);
    let (message, label, mut help) = explain(&message, code);
    // A missing key is reported by serde at a sibling; point at the mapping that lacks it.
    let span = match message.split('`').nth(1) {
        Some(parent) if message.ends_with("is missing a required key") => {
            let path: Vec<&str> = parent.split('.').collect();
            let s = key_span(source, &path);
            if s == Span::default() {
                span
            } else {
                s
            }
        }
        _ => span,
    };
    if code == Code::YamlSyntax
        && source
            .lines()
            .any(|l| l.starts_with('\t') || l.trim_start_matches(' ').starts_with('\t'))
    {
        help = Some("YAML does not allow tabs for indentation: indent with spaces".into());
    }
    let mut d = Diagnostic::error(code, message).label(span, label);
    if let Some(h) = help {
        d = d.help(h);
    }
    d
}

/// serde's type names in the words a YAML author uses; positions are dropped (the span
/// shows them).
fn plain_types(message: &str) -> String {
    let mut m = message
        .replace("expected u32", "expected a whole number (0 or more)")
        .replace("expected u64", "expected a whole number (0 or more)")
        .replace("expected i64", "expected a whole number")
        .replace("expected f64", "expected a number")
        .replace("a sequence", "a list such as [a, b]")
        .replace("expected a map", "expected keys and values (key: value)")
        .replace(
            "expected struct RawSettings",
            "expected the settings as keys and values (key: value)",
        );
    // Other internal struct names: `expected struct RawRateLimit`.
    while let Some(i) = m.find("struct Raw") {
        let end = m[i..]
            .find(|c: char| !c.is_alphanumeric() && c != ' ')
            .map(|e| i + e)
            .unwrap_or(m.len());
        m.replace_range(i..end, "keys and values (key: value)");
    }
    while let Some(i) = m.find(" at line ") {
        let rest = &m[i + 1..];
        let end = rest.find(',').map(|e| i + 1 + e).unwrap_or(m.len());
        m.replace_range(i..end, "");
    }
    m
}

/// Plain words for serde_yaml's messages.
fn explain(message: &str, code: Code) -> (String, String, Option<String>) {
    // "path.to: unknown field `x`, expected one of `a`, `b`"
    let (path, rest) = match message.split_once(": ") {
        Some((p, r)) if !p.contains(' ') => (Some(p), r),
        _ => (None, message),
    };
    let place = path.map(|p| format!(" in `{p}`")).unwrap_or_default();
    let quoted: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    match code {
        Code::YamlUnknownKey => {
            let key = quoted.first().copied().unwrap_or("?");
            let allowed = &quoted[1.min(quoted.len())..];
            let list = allowed
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let help = match did_you_mean(key, allowed.iter().copied()) {
                Some(s) => format!("did you mean `{s}`? The keys here are {list}"),
                None => format!("the keys here are {list}"),
            };
            (
                format!("unknown key `{key}`{place}"),
                "not a setting Rapport knows".into(),
                Some(help),
            )
        }
        Code::YamlSyntax if rest.starts_with("duplicate entry") => (
            format!(
                "a key is given twice: {}",
                rest.replace("duplicate entry with key ", "")
            ),
            "given again here, or above".into(),
            Some("keep one of the two entries; YAML keys must be unique in a mapping".into()),
        ),
        Code::YamlSyntax => (
            "rapport.yaml is not valid YAML".into(),
            rest.to_string(),
            Some(
                "check the indentation and the `key: value` layout on this line and the one above"
                    .into(),
            ),
        ),
        _ => {
            if rest.starts_with("missing field") {
                let key = quoted.first().copied().unwrap_or("?");
                let (message, help) = match path {
                    Some(p) => (
                        format!("`{p}` is missing a required key"),
                        format!("add `{key}:` to `{p}`"),
                    ),
                    None => (
                        "rapport.yaml is missing a required key".to_string(),
                        format!("add `{key}:`"),
                    ),
                };
                return (message, format!("`{key}` is missing here"), Some(help));
            }
            if let Some(variant) = rest.strip_prefix("unknown variant ") {
                let word = variant.split('`').nth(1).unwrap_or("");
                let allowed: Vec<&str> = quoted.iter().skip(1).copied().collect();
                let list = allowed
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let help = match did_you_mean(word, allowed.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`? The choices are {list}"),
                    None => format!("the choices are {list}"),
                };
                return (
                    format!("`{word}` is not one of the allowed values{place}"),
                    "not allowed here".into(),
                    Some(help),
                );
            }
            let help = if let Some(variant) = rest.strip_prefix("unknown variant ") {
                let word = variant.split('`').nth(1).unwrap_or("");
                let allowed: Vec<&str> = quoted.iter().skip(1).copied().collect();
                let list = allowed
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                Some(match did_you_mean(word, allowed.iter().copied()) {
                    Some(s) => format!("did you mean `{s}`? The choices are {list}"),
                    None => format!("the choices are {list}"),
                })
            } else {
                Some("see the rapport.yaml reference in docs/language.md for the form of each setting".into())
            };
            let message = format!(
                "wrong value{place}: {}",
                rest.replace("invalid type: ", "found ")
            );
            (message, "this value".into(), help)
        }
    }
}

/// The byte span of the word at 1-based `line` and `column` (characters).
pub(crate) fn span_at(source: &str, line: usize, column: usize) -> Span {
    let line_start = source
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum::<usize>();
    let line_text = source[line_start..].lines().next().unwrap_or("");
    let col = line_text
        .char_indices()
        .nth(column.saturating_sub(1))
        .map(|(i, _)| i)
        .unwrap_or(line_text.len());
    let start = line_start + col;
    let word = line_text[col..]
        .find([':', ',', '}', ']', '#'])
        .map(|e| line_text[col..col + e].trim_end().len())
        .unwrap_or(line_text[col..].trim_end().len());
    let start = start.min(source.len());
    let mut end = (start + word.max(1)).min(source.len());
    // Never end inside a character (a span on U+2028, say, which YAML counts as a line
    // break and `str::lines` does not).
    while !source.is_char_boundary(end) {
        end += 1;
    }
    Span::new(start, end)
}

/// The span of `key:` for a dotted path (`rate_limit.per`), each key searched after the
/// one before it; used for problems found after deserialising, which serde_yaml does not
/// locate. Block and flow style both work.
pub(crate) fn key_span(source: &str, path: &[&str]) -> Span {
    let mut offset = 0;
    let mut found = Span::default();
    for key in path {
        let needle = format!("{key}:");
        let mut from = offset;
        let hit = loop {
            let Some(i) = source[from..].find(&needle).map(|i| i + from) else {
                break None;
            };
            let before = source[..i].chars().next_back();
            if before.is_none_or(|c| c.is_whitespace() || c == '{' || c == ',') {
                break Some(i);
            }
            from = i + needle.len();
        };
        match hit {
            Some(i) => {
                found = Span::new(i, i + key.len());
                offset = i + needle.len();
            }
            None => break,
        }
    }
    found
}
