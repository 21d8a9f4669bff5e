//! How much of a report is shown. A small project can produce a huge report: 800 flows
//! starting on the same message made 320,000 overlap errors (148 MB), a 55 KB line of
//! unknown tokens 874 MB of snippets. Past a few of one kind in one file, more of the same
//! teaches nothing, so each file shows at most `PER_CODE` diagnostics of each code and
//! counts the rest; every format shows the same ones and the same counts.

use rapport_syntax::{Code, Diagnostic, Label, Severity};

/// Diagnostics of one code shown for one file.
pub(crate) const PER_CODE: usize = 5;

/// Labels drawn for one diagnostic; the rest are named in the last one's text.
const LABELS: usize = 8;

/// The longest message or help shown, in characters.
const TEXT: usize = 2_000;

/// Diagnostics of one code left out of one file's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Omitted {
    pub code: Code,
    pub severity: Severity,
    pub count: usize,
}

/// Keeps the first `PER_CODE` diagnostics of each code (in the order given: by place),
/// trims each kept one to a readable size, and returns what was left out, by code.
pub(crate) fn cap(diagnostics: &mut Vec<Diagnostic>) -> Vec<Omitted> {
    let mut shown: Vec<(Code, usize)> = Vec::new();
    let mut omitted: Vec<Omitted> = Vec::new();
    diagnostics.retain(|d| {
        let i = match shown.iter().position(|(c, _)| *c == d.code) {
            Some(i) => i,
            None => {
                shown.push((d.code, 0));
                shown.len() - 1
            }
        };
        shown[i].1 += 1;
        if shown[i].1 <= PER_CODE {
            return true;
        }
        match omitted
            .iter_mut()
            .find(|o| o.code == d.code && o.severity == d.severity)
        {
            Some(o) => o.count += 1,
            None => omitted.push(Omitted {
                code: d.code,
                severity: d.severity,
                count: 1,
            }),
        }
        false
    });
    for d in diagnostics.iter_mut() {
        trim(d);
    }
    omitted.sort_by_key(|o| o.code);
    omitted
}

/// One diagnostic at a readable size: at most `LABELS` labels and `TEXT` characters of
/// message and help. The checker keeps its own lists short; this is the backstop.
fn trim(d: &mut Diagnostic) {
    if d.labels.len() > LABELS {
        let more = d.labels.len() - (LABELS - 1);
        d.labels.truncate(LABELS);
        if let Some(Label { text, .. }) = d.labels.last_mut() {
            *text = format!("{text} (and {more} more places like this one)");
        }
    }
    shorten(&mut d.message);
    if let Some(h) = &mut d.help {
        shorten(h);
    }
}

fn shorten(text: &mut String) {
    if let Some((cut, _)) = text.char_indices().nth(TEXT) {
        let more = text[cut..].chars().count();
        text.truncate(cut);
        text.push_str(&format!("… ({more} more characters)"));
    }
}

/// The note that stands for what was left out: `and 795 more like this (RP0211)`.
pub(crate) fn note(o: &Omitted) -> String {
    format!("and {} more like this ({})", o.count, o.code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rapport_syntax::Span;

    #[test]
    fn five_of_each_code_are_kept_in_order() {
        let mut ds: Vec<Diagnostic> = (0..12)
            .map(|i| {
                let code = if i % 3 == 0 {
                    Code::Syntax
                } else {
                    Code::UnknownName
                };
                Diagnostic::error(code, format!("d{i}")).label(Span::new(i, i + 1), "here")
            })
            .collect();
        let omitted = cap(&mut ds);
        let kept: Vec<&str> = ds.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(kept, ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7", "d9"]);
        assert_eq!(
            omitted,
            [Omitted {
                code: Code::UnknownName,
                severity: Severity::Error,
                count: 3
            }]
        );
    }

    #[test]
    fn a_huge_diagnostic_is_trimmed() {
        let mut d = Diagnostic::error(Code::InstantLoop, "é".repeat(5000)).help("h");
        for i in 0..100 {
            d = d.label(Span::new(i, i + 1), "goes on at once");
        }
        let mut ds = vec![d];
        cap(&mut ds);
        assert_eq!(ds[0].labels.len(), LABELS);
        assert!(ds[0].labels[LABELS - 1]
            .text
            .ends_with("(and 93 more places like this one)"));
        assert!(ds[0].message.ends_with("… (3000 more characters)"));
    }
}
