//! Rapport's checker: syntax trees and settings in, checked state graphs, diagnostics and
//! the compiled bundle out (docs/language.md, "What `rapport check` proves").
//!
//! Pure: no I/O, no clock. Every check runs on every flow, so one run reports everything.

mod compile;
pub mod graph;
mod policy;
mod resolve;
mod tokens;

use std::collections::HashMap;

use rapport_syntax::ast::{Flow, FlowFile};
use rapport_syntax::{Code, Diagnostic, Settings};

pub use compile::{canonical_hash, compile};
pub use graph::{FlowGraph, GraphFormat};

/// One parsed `.flow` file given to the checker.
#[derive(Debug, Clone, Copy)]
pub struct SourceFile<'a> {
    /// The path as users see it, used in messages that point at another file.
    pub path: &'a str,
    pub source: &'a str,
    pub ast: &'a FlowFile,
}

/// A diagnostic and the index of the file it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct FileDiagnostic {
    pub file: usize,
    pub diagnostic: Diagnostic,
}

/// A flow that was checked, with its state graph.
#[derive(Debug)]
pub struct CheckedFlow<'a> {
    pub file: usize,
    pub flow: &'a Flow,
    pub graph: FlowGraph,
}

/// Everything the checker found.
#[derive(Debug)]
pub struct Checked<'a> {
    pub flows: Vec<CheckedFlow<'a>>,
    pub diagnostics: Vec<FileDiagnostic>,
}

impl Checked<'_> {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.diagnostic.is_error())
    }

    /// The checked flow with this name.
    pub fn flow(&self, name: &str) -> Option<&CheckedFlow<'_>> {
        self.flows.iter().find(|f| f.flow.name.value == name)
    }
}

/// Checks every flow of a project against its settings.
pub fn check<'a>(settings: &Settings, files: &[SourceFile<'a>]) -> Checked<'a> {
    let mut diagnostics = Vec::new();
    let mut flows = Vec::new();
    let mut first_seen: HashMap<&str, (usize, &Flow)> = HashMap::new();

    for (file, source) in files.iter().enumerate() {
        for flow in &source.ast.flows {
            let name = flow.name.value.as_str();
            if let Some((other_file, other)) = first_seen.get(name) {
                let (line, _) = line_col(files[*other_file].source, other.name.span.start);
                diagnostics.push(FileDiagnostic {
                    file,
                    diagnostic: Diagnostic::error(
                        Code::DuplicateName,
                        format!("a flow named `{name}` already exists"),
                    )
                    .label(flow.name.span, "second flow with this name")
                    .help(format!(
                        "the first is in {} at line {line}; flow names must be unique in a project, so rename one",
                        files[*other_file].path
                    )),
                });
                continue;
            }
            first_seen.insert(name, (file, flow));
            let mut diags = Vec::new();
            let graph = check_flow(settings, flow, &mut diags);
            diagnostics.extend(
                diags
                    .into_iter()
                    .map(|diagnostic| FileDiagnostic { file, diagnostic }),
            );
            flows.push(CheckedFlow { file, flow, graph });
        }
    }
    policy::across_flows(settings, files, &flows, &mut diagnostics);
    diagnostics.sort_by_key(|d| (d.file, d.diagnostic.span().map(|s| s.start).unwrap_or(0)));
    Checked { flows, diagnostics }
}

/// Every check that looks at one flow on its own.
fn check_flow(settings: &Settings, flow: &Flow, diags: &mut Vec<Diagnostic>) -> FlowGraph {
    let states = resolve::states(flow, diags);
    resolve::names(settings, flow, &states, diags);
    let graph = graph::build(flow, &states);
    if flow.recovered || !resolve::graph_is_whole(flow, &states) {
        // Parts of this flow did not parse, or it goes to states that do not exist:
        // graph checks would report what those errors already explain (states with
        // empty bodies look like dead ends, states behind a broken `->` unreachable).
        return graph;
    }
    graph::structure(flow, &graph, diags);
    tokens::check(settings, flow, &graph, diags);
    policy::in_flow(settings, flow, &graph, diags);
    graph
}

/// Line starts of a source, for many offset → line lookups (bundles record one per state).
pub(crate) struct LineIndex<'a> {
    source: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(source: &'a str) -> Self {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { source, starts }
    }

    /// 1-based line and column (characters) of a byte offset.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts[line - 1];
        let column = self
            .source
            .get(start..offset)
            .map_or(0, |t| t.chars().count());
        (line, column + 1)
    }
}

/// Items of a list shown in a message; a longer list shows these and counts the rest.
const LIST_SHOWN: usize = 10;

/// `items` joined with `sep`, the first `LIST_SHOWN` of them and `and N more`: a list
/// drawn from the project (events, fields, starts) can be as long as the project.
pub(crate) fn join_capped<S: AsRef<str>>(items: &[S], sep: &str) -> String {
    let shown: Vec<&str> = items.iter().take(LIST_SHOWN).map(AsRef::as_ref).collect();
    let mut text = shown.join(sep);
    if items.len() > LIST_SHOWN {
        text.push_str(&format!(" and {} more", items.len() - LIST_SHOWN));
    }
    text
}

/// 1-based line and column (characters) of a byte offset.
pub(crate) fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_agrees_with_a_scan() {
        let src = "ab\ncdé\n\nf";
        let index = LineIndex::new(src);
        for offset in [0, 1, 2, 3, 5, 7, 8, 9, 10, 99] {
            assert_eq!(
                index.line_col(offset),
                line_col(src, offset),
                "offset {offset}"
            );
        }
    }
}
