//! Patterns, conditions, answers and token rendering: the parts of a step that look at
//! text. Regexes are compiled once per bundle.

use std::collections::HashMap;

use rapport_bundle::{
    contains_phrase, normalize_keyword, CompareOp, Condition, Expect, Literal, Pattern, Text,
    TextPart,
};
use serde_json::{Map, Value};

/// Every regex of a bundle, compiled, by source and case sensitivity.
#[derive(Debug, Default)]
pub(crate) struct Regexes(HashMap<(String, bool), regex::Regex>);

impl Regexes {
    pub(crate) fn add(&mut self, r: &rapport_bundle::Regex) {
        let key = (r.source.clone(), r.case_insensitive);
        if self.0.contains_key(&key) {
            return;
        }
        // The checker validated every regex; one that still fails never matches.
        if let Ok(re) = regex::RegexBuilder::new(&r.source)
            .case_insensitive(r.case_insensitive)
            .build()
        {
            self.0.insert(key, re);
        }
    }

    pub(crate) fn is_match(&self, r: &rapport_bundle::Regex, text: &str) -> bool {
        self.0
            .get(&(r.source.clone(), r.case_insensitive))
            .is_some_and(|re| re.is_match(text))
    }
}

/// What a message or comment offers to a pattern.
pub(crate) struct Inbound<'a> {
    pub(crate) text: &'a str,
    /// `normalize_keyword(text)`, computed once.
    pub(crate) normal: &'a str,
    pub(crate) intent: Option<&'a str>,
    pub(crate) sentiment: Option<f64>,
}

pub(crate) fn pattern_matches(p: &Pattern, input: &Inbound<'_>, regexes: &Regexes) -> bool {
    match p {
        Pattern::Exact { texts } => texts.iter().any(|t| t == input.normal),
        Pattern::Contains { phrases } => phrases.iter().any(|ph| contains_phrase(input.text, ph)),
        Pattern::Matches { regex } => regexes.is_match(regex, input.text),
        Pattern::Intent { name } => input.intent == Some(name.as_str()),
        Pattern::Sentiment { op, value } => {
            input.sentiment.is_some_and(|s| compare_f64(s, *op, *value))
        }
        Pattern::Any => true,
    }
}

fn compare_f64(a: f64, op: CompareOp, b: f64) -> bool {
    match op {
        CompareOp::Eq => a == b,
        CompareOp::Ne => a != b,
        CompareOp::Lt => a < b,
        CompareOp::Le => a <= b,
        CompareOp::Gt => a > b,
        CompareOp::Ge => a >= b,
    }
}

/// Evaluates a condition; `lookup` resolves a token to its value (`None`: missing). A
/// comparison with a missing value is false.
pub(crate) fn condition_holds(c: &Condition, lookup: &dyn Fn(&str) -> Option<Value>) -> bool {
    match c {
        Condition::Or { all } => all.iter().any(|x| condition_holds(x, lookup)),
        Condition::And { all } => all.iter().all(|x| condition_holds(x, lookup)),
        Condition::Not { inner } => !condition_holds(inner, lookup),
        Condition::Has { token } => lookup(token).is_some_and(|v| !is_empty(&v)),
        Condition::Compare { token, op, value } => {
            let Some(actual) = lookup(token).filter(|v| !is_empty(v)) else {
                return false;
            };
            match value {
                Literal::Number(n) => number_of(&actual).is_some_and(|a| compare_f64(a, *op, *n)),
                Literal::String(s) => {
                    let a = string_of(&actual);
                    match op {
                        CompareOp::Eq => a.eq_ignore_ascii_case(s),
                        CompareOp::Ne => !a.eq_ignore_ascii_case(s),
                        CompareOp::Lt => a.as_str() < s.as_str(),
                        CompareOp::Le => a.as_str() <= s.as_str(),
                        CompareOp::Gt => a.as_str() > s.as_str(),
                        CompareOp::Ge => a.as_str() >= s.as_str(),
                    }
                }
            }
        }
    }
}

fn number_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A value as text, the way JSON writes it (`120`, `49.5`); strings as they are.
pub(crate) fn string_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

pub(crate) fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// The value an answer gives its slot, or `None` when it is not valid (docs/language.md,
/// `ask`).
pub(crate) fn answer(expect: &Expect, text: &str, regexes: &Regexes) -> Option<Value> {
    let trimmed = text.trim();
    match expect {
        Expect::Text => (!trimmed.is_empty()).then(|| Value::String(trimmed.to_string())),
        // Valid when it reads as a number; the slot holds the trimmed text.
        Expect::Number => trimmed
            .replace(',', ".")
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite())
            .map(|_| Value::String(trimmed.to_string())),
        Expect::Email => {
            let (local, domain) = trimmed.split_once('@')?;
            let ok = !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !trimmed.contains(char::is_whitespace);
            ok.then(|| Value::String(trimmed.to_string()))
        }
        Expect::Phone => {
            let digits = trimmed.chars().filter(char::is_ascii_digit).count();
            let allowed = trimmed
                .chars()
                .all(|c| c.is_ascii_digit() || " +-().".contains(c));
            (allowed && (7..=15).contains(&digits)).then(|| Value::String(trimmed.to_string()))
        }
        Expect::Regex { regex } => regexes
            .is_match(regex, trimmed)
            .then(|| Value::String(trimmed.to_string())),
        Expect::Choice { choices } => {
            let normal = normalize_keyword(trimmed);
            choices
                .iter()
                .find(|(k, _)| *k == normal)
                .map(|(_, v)| Value::String(v.clone()))
        }
    }
}

/// Renders text with tokens. Returns the text and the tokens that were missing (and had
/// no fallback), for audit warnings.
pub(crate) fn render(text: &Text, lookup: &dyn Fn(&str) -> Option<Value>) -> (String, Vec<String>) {
    let mut out = String::new();
    let missing = render_into(&mut out, text, lookup);
    (out, missing)
}

/// [`render`], appending to `out`; returns the tokens that had no value and no fallback.
pub(crate) fn render_into(
    out: &mut String,
    text: &Text,
    lookup: &dyn Fn(&str) -> Option<Value>,
) -> Vec<String> {
    let mut missing = Vec::new();
    let literal: usize = text
        .parts
        .iter()
        .map(|p| match p {
            TextPart::Literal(s) => s.len(),
            TextPart::Token { .. } => 16,
        })
        .sum();
    out.reserve(literal);
    for part in &text.parts {
        match part {
            TextPart::Literal(s) => out.push_str(s),
            TextPart::Token { token, fallback } => match lookup(token).filter(|v| !is_empty(v)) {
                Some(Value::String(s)) => out.push_str(&s),
                Some(v) => out.push_str(&string_of(&v)),
                None => match fallback {
                    Some(f) => out.push_str(f),
                    None => missing.push(token.clone()),
                },
            },
        }
    }
    missing
}

/// Template parameters from the text's tokens, keyed by name without `event.`; a token
/// with no value gives its fallback, else the empty string.
pub(crate) fn params_from_tokens(
    text: &Text,
    lookup: &dyn Fn(&str) -> Option<Value>,
) -> Map<String, Value> {
    let mut params = Map::new();
    for part in &text.parts {
        if let TextPart::Token { token, fallback } = part {
            let key = token.strip_prefix("event.").unwrap_or(token).to_string();
            let value = lookup(token)
                .filter(|v| !is_empty(v))
                .map(|v| Value::String(string_of(&v)))
                .or_else(|| fallback.clone().map(Value::String))
                .unwrap_or_else(|| Value::String(String::new()));
            params.insert(key, value);
        }
    }
    params
}
