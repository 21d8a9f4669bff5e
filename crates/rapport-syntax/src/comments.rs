//! Comments, and the blank lines around them, placed for the printer: `rapport fmt`
//! prints the canonical form of a file and keeps every comment.
//!
//! A comment belongs to the place it was written:
//!
//! - after something on the same line (`send "Hi"  # greeting`): a **trailing** comment of
//!   the last statement that starts on that line; the printer puts it back at the end of
//!   that statement's first line;
//! - on lines of its own: a **leading** comment of the next statement (the flow, a header
//!   clause, a transition, a state, an action, or the `}` that closes a state or a flow);
//!   the printer writes it on the lines just above that statement, at its indentation;
//! - after the last flow: printed at the end of the file.
//!
//! A blank line (one or more) before a leading comment, or between the last comment and
//! its statement, or before a statement inside a block, is kept as one blank line. The
//! first line inside a block and the blank lines the canonical form already has are not
//! doubled.

use std::collections::{HashMap, HashSet};

use pest::Parser as _;

use crate::ast::FlowFile;
use crate::parser::{FlowParser, Rule};

/// One comment: its text from `#`, and whether a blank line came before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub text: String,
    pub blank_before: bool,
}

/// The comments of a source, by the offset of the statement they belong to.
#[derive(Debug, Clone, Default)]
pub struct Notes {
    pub(crate) leading: HashMap<usize, Vec<Note>>,
    pub(crate) trailing: HashMap<usize, Vec<String>>,
    /// Statements with a blank line just above them (or above their comments' last line).
    pub(crate) blank_before: HashSet<usize>,
    /// Comments after the last flow.
    pub(crate) end: Vec<Note>,
    /// Every comment, in source order (for tests: none may be lost).
    pub all: Vec<String>,
}

/// Where comments can belong: every statement of `file`, and the `}` of every state and
/// flow, as (the offset the printer knows it by, the keyword it starts with when that
/// offset is not the statement's first token). A header clause is known by its value
/// (`title "x"` by `"x"`) but starts at its keyword, which is what its line is.
fn anchors(file: &FlowFile) -> Vec<(usize, Option<&'static str>)> {
    let mut at: Vec<(usize, Option<&'static str>)> = Vec::new();
    for flow in &file.flows {
        at.push((flow.span.start, None));
        at.push((flow.span.end.saturating_sub(1), None));
        let clauses = [
            (flow.title.as_ref().map(|x| x.span), "title"),
            (flow.version.as_ref().map(|x| x.span), "version"),
            (flow.reentry.as_ref().map(|x| x.span), "reentry"),
            (flow.purpose.as_ref().map(|x| x.span), "purpose"),
            (flow.channels.as_ref().map(|x| x.span), "channels"),
            (flow.priority.as_ref().map(|x| x.span), "priority"),
            (flow.expire_after.as_ref().map(|x| x.span), "expire"),
            (flow.rollout.as_ref().map(|x| x.span), "rollout"),
            (flow.halt.as_ref().map(|x| x.span), "halt"),
            (flow.goal.as_ref().map(|x| x.span), "goal"),
        ];
        for (span, keyword) in clauses {
            if let Some(span) = span {
                at.push((span.start, Some(keyword)));
            }
        }
        at.extend(flow.triggers.iter().map(|t| (t.span.start, Some("start"))));
        at.extend(flow.transitions.iter().map(|t| (t.span.start, None)));
        for state in &flow.states {
            at.push((state.span.start, None));
            at.push((state.span.end.saturating_sub(1), None));
            at.extend(state.actions.iter().map(|a| (a.span.start, None)));
            at.extend(state.transitions.iter().map(|t| (t.span.start, None)));
        }
    }
    at
}

/// The tokens and the comments of `source` as `(start, end)` byte ranges, comments found
/// between the grammar's tokens (so a `#` inside a string or a regex is never one).
/// `None` when the source does not parse whole.
/// Byte ranges `(start, end)` of a source.
type Ranges = Vec<(usize, usize)>;

fn ranges(source: &str) -> Option<(Ranges, Ranges)> {
    let pairs = FlowParser::parse(Rule::file, source).ok()?;
    let mut tokens: Vec<(usize, usize)> = pairs
        .flatten()
        .filter(|p| p.clone().into_inner().next().is_none())
        .map(|p| (p.as_span().start(), p.as_span().end()))
        .filter(|(s, e)| e > s)
        .collect();
    tokens.sort_unstable();
    let mut comments = Vec::new();
    let bytes = source.as_bytes();
    let mut scan = |from: usize, to: usize| {
        let mut i = from;
        while i < to {
            if bytes[i] == b'#' {
                let end = source[i..to].find('\n').map_or(to, |n| i + n);
                comments.push((i, end));
                i = end;
            } else {
                i += 1;
            }
        }
    };
    let mut gap_start = 0;
    for &(start, end) in &tokens {
        if start > gap_start {
            scan(gap_start, start);
        }
        gap_start = gap_start.max(end);
    }
    scan(gap_start, source.len());
    Some((tokens, comments))
}

/// Whether the white space between two things holds a blank line.
fn has_blank_line(text: &str) -> bool {
    text.matches('\n').count() >= 2
}

/// Places the comments of `source` (whose syntax tree is `file`) for the printer. `None`
/// when the source does not parse whole: only a file without syntax errors is formatted.
pub fn notes(source: &str, file: &FlowFile) -> Option<Notes> {
    let (tokens, comments) = ranges(source)?;
    // Each anchor at the first token of its statement: (where its line is, its key).
    let mut anchors: Vec<(usize, usize)> = anchors(file)
        .into_iter()
        .map(|(key, keyword)| {
            let start = keyword
                .and_then(|k| {
                    let i = tokens.partition_point(|&(s, _)| s <= key);
                    tokens[..i]
                        .iter()
                        .rev()
                        .take(4)
                        .find(|&&(s, e)| &source[s..e] == k)
                        .map(|&(s, _)| s)
                })
                .unwrap_or(key);
            (start, key)
        })
        .collect();
    anchors.sort_unstable();
    anchors.dedup();
    let key_at: HashMap<usize, usize> = anchors.iter().copied().collect();
    let mut things: Vec<(usize, usize)> = tokens.iter().chain(&comments).copied().collect();
    things.sort_unstable();
    // The end of the last token or comment that ends at or before `at`. Tokens and
    // comments do not overlap, so in start order their ends are in order too: a binary
    // search, not a scan (a file can hold hundreds of thousands of tokens).
    let prev_end = |at: usize| -> usize {
        let i = things.partition_point(|&(s, _)| s < at);
        things[..i]
            .iter()
            .rev()
            .map(|&(_, e)| e)
            .find(|&e| e <= at)
            .unwrap_or(0)
    };
    let blank_above =
        |at: usize| has_blank_line(&source[prev_end(at).min(at)..at]) && prev_end(at) > 0;
    let line_start = |at: usize| source[..at].rfind('\n').map_or(0, |n| n + 1);
    let mut notes = Notes::default();
    let mut events: Vec<(usize, bool)> = anchors.iter().map(|&(a, _)| (a, true)).collect();
    events.extend(comments.iter().map(|&(s, _)| (s, false)));
    events.sort_unstable();
    let ends: HashMap<usize, usize> = comments.iter().copied().collect();
    let mut pending: Vec<Note> = Vec::new();
    let mut last_anchor: Option<(usize, usize)> = None;
    for (at, is_anchor) in events {
        if is_anchor {
            let key = key_at.get(&at).copied().unwrap_or(at);
            if blank_above(at) {
                notes.blank_before.insert(key);
            }
            if !pending.is_empty() {
                notes.leading.entry(key).or_default().append(&mut pending);
            }
            last_anchor = Some((at, key));
            continue;
        }
        let end = ends.get(&at).copied().unwrap_or(at);
        let text = source[at..end].trim_end().to_string();
        notes.all.push(text.clone());
        match last_anchor {
            Some((start, key)) if pending.is_empty() && line_start(start) == line_start(at) => {
                notes.trailing.entry(key).or_default().push(text);
            }
            _ => pending.push(Note {
                text,
                blank_before: blank_above(at),
            }),
        }
    }
    notes.end = pending;
    Some(notes)
}
