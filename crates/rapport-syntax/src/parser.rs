//! Flow source text to the typed syntax tree.
//!
//! pest stops at its first error, so a file that does not parse whole is parsed again in
//! pieces (see `recover`): every flow on its own, and inside a broken flow its header and
//! every state on their own. One run reports every broken flow and state.

pub(crate) mod build;

use pest::Parser as _;

use crate::ast::FlowFile;
use crate::diagnostic::Diagnostic;
use crate::{errors, recover};

#[derive(pest_derive::Parser)]
#[grammar = "../../grammar/flow.pest"]
pub(crate) struct FlowParser;

/// What parsing produced: everything that could be built, and every problem found.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub file: FlowFile,
    pub diagnostics: Vec<Diagnostic>,
}

impl Parsed {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
}

/// Parses one `.flow` file. Never panics and never gives up early: the result holds every
/// flow and state that parsed, and a diagnostic for each that did not.
pub fn parse(source: &str) -> Parsed {
    // A byte-order mark (editors on Windows write one) is not text: it is read as three
    // spaces, the length of its UTF-8 encoding, so every span stays a byte offset into
    // the file as it is on disk.
    match source.strip_prefix('\u{feff}') {
        Some(rest) => parse_text(&format!("   {rest}")),
        None => parse_text(source),
    }
}

fn parse_text(source: &str) -> Parsed {
    let mut diagnostics = Vec::new();
    if let Some(d) = recover::too_deep(source) {
        return Parsed {
            file: FlowFile::default(),
            diagnostics: vec![d],
        };
    }
    let file = match FlowParser::parse(Rule::file, source) {
        Ok(mut pairs) => {
            let mut b = build::Builder::new(0, source, &mut diagnostics);
            let flows = pairs
                .next()
                .map(|file| {
                    file.into_inner()
                        .filter(|p| p.as_rule() == Rule::flow_decl)
                        .map(|p| b.flow(p))
                        .collect()
                })
                .unwrap_or_default();
            FlowFile { flows }
        }
        Err(error) => recover::parse_in_pieces(source, &error, &mut diagnostics),
    };
    diagnostics.sort_by_key(|d| d.span().map(|s| s.start).unwrap_or(0));
    // Recovery can meet the same problem twice (a broken state head is seen both by the
    // flow's header parse and by the state's own parse): keep one per place and kind.
    diagnostics.dedup_by(|a, b| a.code == b.code && a.span() == b.span());
    Parsed { file, diagnostics }
}

/// Parses `text` (found at absolute offset `base` of `source`) with `rule`, converting a
/// failure into a diagnostic.
pub(crate) fn parse_piece<'i>(
    rule: Rule,
    text: &'i str,
    base: usize,
    source: &str,
    diagnostics: &mut Vec<Diagnostic>,
) -> Option<pest::iterators::Pair<'i, Rule>> {
    match FlowParser::parse(rule, text) {
        Ok(mut pairs) => pairs.next(),
        Err(error) => {
            diagnostics.push(errors::from_pest(&error, base, source));
            None
        }
    }
}

pub(crate) use build::Builder;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_byte_order_mark_is_skipped_and_spans_count_its_bytes() {
        let text = "flow Welcome {\n  start on message \"hi\"\n  state a { end }\n}\n";
        let with_bom = parse(&format!("\u{feff}{text}"));
        let without = parse(text);
        assert_eq!(with_bom.file.flows.len(), 1);
        assert_eq!(with_bom.diagnostics.len(), 1, "{:?}", with_bom.diagnostics);
        let shifted = without.diagnostics[0].span().map(|s| s.shift(3));
        assert_eq!(with_bom.diagnostics[0].span(), shifted);
    }
}
