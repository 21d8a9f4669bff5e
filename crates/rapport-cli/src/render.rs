//! Diagnostics at the edge: human (miette), JSON, and GitHub Actions annotations.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};
use rapport_syntax::{Diagnostic, Severity};
use serde::Serialize;

use crate::cap::{cap, note, Omitted};

/// A source file with the diagnostics found in it.
pub(crate) struct FileReport {
    /// The path as the user should see it.
    pub path: String,
    /// The text shown, without the file's byte-order mark if it had one.
    pub source: String,
    /// Whether the file starts with a byte-order mark: JSON byte offsets count it.
    pub bom: bool,
    /// The diagnostics shown (see `cap`).
    pub diagnostics: Vec<Diagnostic>,
    /// Those left out, counted by code.
    pub omitted: Vec<Omitted>,
}

impl FileReport {
    /// A report of `diagnostics`, capped (`cap::cap`).
    pub(crate) fn new(
        path: String,
        source: String,
        bom: bool,
        mut diagnostics: Vec<Diagnostic>,
    ) -> Self {
        let omitted = cap(&mut diagnostics);
        FileReport {
            path,
            source,
            bom,
            diagnostics,
            omitted,
        }
    }
}

/// Errors and warnings in `reports`, shown or not.
pub(crate) fn count(reports: &[FileReport]) -> (usize, usize) {
    let (mut errors, mut warnings) = (0, 0);
    for r in reports {
        let shown = r.diagnostics.iter().map(|d| (d.severity, 1));
        let left_out = r.omitted.iter().map(|o| (o.severity, o.count));
        for (severity, n) in shown.chain(left_out) {
            match severity {
                Severity::Error => errors += n,
                Severity::Warning => warnings += n,
            }
        }
    }
    (errors, warnings)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Source snippets with labelled spans, for people.
    Human,
    /// One JSON document, for tools.
    Json,
    /// GitHub Actions workflow commands, shown as annotations on pull requests.
    Github,
}

/// Renders every report in `format`. `color` applies to `human` only.
pub(crate) fn render(reports: &[FileReport], format: Format, color: bool) -> String {
    match format {
        Format::Human => human(reports, color),
        Format::Json => json(reports),
        Format::Github => github(reports),
    }
}

fn human(reports: &[FileReport], color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme).with_links(false);
    let mut out = String::new();
    for r in reports {
        if r.diagnostics.is_empty() && r.omitted.is_empty() {
            continue;
        }
        let named = NamedSource::new(&r.path, r.source.clone());
        for d in &r.diagnostics {
            let drawn = drawable(&r.source, d)
                .then(|| draw(&handler, &Shown { d, source: &named }))
                .flatten();
            match drawn {
                Some(text) => out.push_str(&text),
                None => out.push_str(&plain(r, d)),
            }
            out.push('\n');
        }
        for o in &r.omitted {
            out.push_str(&format!("note: {} in {}\n\n", note(o), r.path));
        }
    }
    out
}

/// Lines longer than this are not drawn as snippets: miette cannot pad past column
/// 65,535 (it panics), and a snippet that wide helps nobody anyway.
const WIDEST_SNIPPET_LINE: usize = 4096;

/// Whether every labelled line is narrow enough to draw.
fn drawable(source: &str, d: &Diagnostic) -> bool {
    d.labels.iter().all(|l| {
        [l.span.start, l.span.end].iter().all(|&at| {
            let at = at.min(source.len());
            let start = source
                .get(..at)
                .and_then(|s| s.rfind('\n'))
                .map_or(0, |i| i + 1);
            let end = source
                .get(at..)
                .and_then(|s| s.find('\n'))
                .map_or(source.len(), |i| at + i);
            end - start <= WIDEST_SNIPPET_LINE
        })
    })
}

/// The diagnostic drawn by miette; `None` when the renderer fails or panics (a case
/// `drawable` did not foresee), so the caller falls back to the plain form.
fn draw(handler: &GraphicalReportHandler, shown: &Shown<'_>) -> Option<String> {
    let mut text = String::new();
    // The default hook would print the panic message on stderr; the user gets the plain
    // form of the diagnostic instead. Rendering runs on the main thread only.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        handler.render_report(&mut text, shown)
    }));
    std::panic::set_hook(hook);
    match result {
        Ok(Ok(())) => Some(text),
        _ => None,
    }
}

/// `file:line:col: CODE message`, then the help: what a diagnostic says without its
/// snippet.
fn plain(r: &FileReport, d: &Diagnostic) -> String {
    let (line, col) = line_col(&r.source, d.span().unwrap_or_default().start);
    let mut text = format!("{}:{line}:{col}: {} {}\n", r.path, d.code, d.message);
    if let Some(l) = d.labels.first() {
        text.push_str(&format!("  {}\n", l.text));
    }
    if let Some(h) = &d.help {
        text.push_str(&format!("  help: {h}\n"));
    }
    text
}

/// Adapts a diagnostic to miette's trait for rendering.
struct Shown<'a> {
    d: &'a Diagnostic,
    source: &'a NamedSource<String>,
}

impl fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
    }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.d.message)
    }
}

impl std::error::Error for Shown<'_> {}

impl miette::Diagnostic for Shown<'_> {
    fn code<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        Some(Box::new(self.d.code))
    }

    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.d.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.d
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(self.source)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.d.labels.iter().enumerate().map(|(i, l)| {
            let span = (l.span.start, l.span.len());
            if i == 0 {
                LabeledSpan::new_primary_with_span(Some(l.text.clone()), span)
            } else {
                LabeledSpan::new_with_span(Some(l.text.clone()), span)
            }
        })))
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

#[derive(Serialize)]
struct JsonReport<'a> {
    /// Every error, shown or left out.
    errors: usize,
    warnings: usize,
    diagnostics: Vec<JsonDiagnostic<'a>>,
    /// Diagnostics left out (more than `cap::PER_CODE` of one code in one file).
    omitted: Vec<JsonOmitted<'a>>,
}

#[derive(Serialize)]
struct JsonOmitted<'a> {
    file: &'a str,
    code: &'static str,
    severity: String,
    count: usize,
}

#[derive(Serialize)]
struct JsonDiagnostic<'a> {
    file: &'a str,
    code: &'static str,
    severity: String,
    message: &'a str,
    line: usize,
    column: usize,
    end_line: usize,
    end_column: usize,
    labels: Vec<JsonLabel<'a>>,
    help: Option<&'a str>,
}

#[derive(Serialize)]
struct JsonLabel<'a> {
    text: &'a str,
    line: usize,
    column: usize,
    start: usize,
    end: usize,
}

fn json(reports: &[FileReport]) -> String {
    let (errors, warnings) = count(reports);
    let mut doc = JsonReport {
        errors,
        warnings,
        diagnostics: Vec::new(),
        omitted: Vec::new(),
    };
    for r in reports {
        let base = if r.bom { '\u{feff}'.len_utf8() } else { 0 };
        doc.omitted.extend(r.omitted.iter().map(|o| JsonOmitted {
            file: &r.path,
            code: o.code.as_str(),
            severity: o.severity.to_string(),
            count: o.count,
        }));
        for d in &r.diagnostics {
            let span = d.span().unwrap_or_default();
            let (line, column) = line_col(&r.source, span.start);
            let (end_line, end_column) = line_col(&r.source, span.end);
            doc.diagnostics.push(JsonDiagnostic {
                file: &r.path,
                code: d.code.as_str(),
                severity: d.severity.to_string(),
                message: &d.message,
                line,
                column,
                end_line,
                end_column,
                labels: d
                    .labels
                    .iter()
                    .map(|l| {
                        let (line, column) = line_col(&r.source, l.span.start);
                        JsonLabel {
                            text: &l.text,
                            line,
                            column,
                            start: base + l.span.start,
                            end: base + l.span.end,
                        }
                    })
                    .collect(),
                help: d.help.as_deref(),
            });
        }
    }
    let mut s = serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into());
    s.push('\n');
    s
}

/// GitHub Actions workflow commands: `::error file=…,line=…,col=…,title=…::message`.
fn github(reports: &[FileReport]) -> String {
    let mut out = String::new();
    for r in reports {
        for d in &r.diagnostics {
            let span = d.span().unwrap_or_default();
            let (line, col) = line_col(&r.source, span.start);
            let (end_line, end_col) = line_col(&r.source, span.end);
            let level = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            let mut message = d.message.clone();
            if let Some(l) = d.labels.first() {
                message.push_str(&format!(" ({})", l.text));
            }
            if let Some(h) = &d.help {
                message.push_str(&format!("\nhelp: {h}"));
            }
            out.push_str(&format!(
                "::{level} file={},line={line},col={col},endLine={end_line},endColumn={end_col},title={}::{}\n",
                escape_property(&r.path),
                escape_property(&format!("{} {}", d.code, d.severity)),
                escape_data(&message)
            ));
        }
        for o in &r.omitted {
            out.push_str(&format!(
                "::notice file={},title={}::{}\n",
                escape_property(&r.path),
                escape_property(&format!("{} {}", o.code, o.severity)),
                escape_data(&format!("{} in this file", note(o)))
            ));
        }
    }
    out
}

fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        let src = "ab\ncdé\nf";
        assert_eq!(line_col(src, 0), (1, 1));
        assert_eq!(line_col(src, 3), (2, 1));
        assert_eq!(line_col(src, 8), (3, 1));
        assert_eq!(line_col(src, 7), (2, 4));
    }

    #[test]
    fn github_escapes() {
        assert_eq!(escape_property("a,b:c%"), "a%2Cb%3Ac%25");
        assert_eq!(escape_data("x\ny"), "x%0Ay");
    }
}
