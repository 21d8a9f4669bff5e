//! The one diagnostic type every stage produces. Rendering (miette, JSON, GitHub
//! annotations) happens only at the edge, in the CLI.

use std::fmt;

/// A byte range in one source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The span shifted right by `offset` bytes (pieces parsed on their own during recovery).
    pub fn shift(self, offset: usize) -> Self {
        Span::new(self.start + offset, self.end + offset)
    }

    pub fn len(self) -> usize {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    Error,
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        })
    }
}

/// A labelled place in the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    pub span: Span,
    pub text: String,
}

/// A problem found in a source file, in words a marketer can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Stable code, documented in `docs/diagnostics/CODE.md`.
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    /// The first label is the primary one.
    pub labels: Vec<Label>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: Severity::Error,
            message: message.into(),
            labels: Vec::new(),
            help: None,
        }
    }

    pub fn warning(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    pub fn label(mut self, span: Span, text: impl Into<String>) -> Self {
        self.labels.push(Label {
            span,
            text: text.into(),
        });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// The primary span, if the diagnostic points anywhere.
    pub fn span(&self) -> Option<Span> {
        self.labels.first().map(|l| l.span)
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Stable diagnostic codes. Never renumber: CI configurations and docs refer to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// The parser expected something else here.
    Syntax,
    /// A string is not closed before the end of its line or the file.
    UnterminatedString,
    /// An unknown escape sequence in a string.
    BadEscape,
    /// A malformed token in message text (`{...}`).
    BadToken,
    /// A malformed duration such as `1w` or `0h`.
    BadDuration,
    /// A malformed percentage such as `150%` in a place that needs 0–100.
    BadPercent,
    /// A name with upper-case letters, or a keyword written in upper case.
    NameCase,
    /// A header clause given twice.
    DuplicateClause,
    /// An entry action written after a transition.
    ActionAfterTransition,
    /// An entry action after `ask`, `->` or `end`, or a second `ask`.
    ActionAfterLast,
    /// A word that is not one of the allowed values (`purpose`, `reentry`, `expect`, ...).
    UnknownWord,
    /// A `{` without its `}`, or a block that never closes.
    Unclosed,
    /// A transition that cannot stand at flow level.
    MisplacedTransition,
    /// A regular expression that does not compile.
    BadRegex,
    /// A name that does not resolve: state, queue, template, event, channel, metric.
    UnknownName,
    /// A token that is not a slot, profile field, project variable or event field.
    UnknownToken,
    /// Two states, or two flows, with the same name.
    DuplicateName,
    /// A state no path from the first state reaches (warning).
    Unreachable,
    /// A state that can never be left and does not end the run.
    DeadEnd,
    /// A cycle of `->` with no waiting state on it.
    InstantLoop,
    /// A token used where some path from the start does not define it.
    TokenMaybeMissing,
    /// A marketing send that can fall outside the channel's window without a template.
    OutsideWindow,
    /// A flow handles a reserved keyword (STOP, START, HELP, ...).
    ReservedKeyword,
    /// A flow handles an escalation keyword (warning).
    EscalationKeyword,
    /// Two flows with the same priority whose triggers overlap.
    OverlappingTriggers,
    /// An `ask` with `retry` but no `else` (warning).
    RetryWithoutElse,
    /// `send one of` blocks in one flow with different keys.
    VariantKeys,
    /// `with` pairs that do not match the template's parameters.
    TemplateParams,
    /// More automated sends than the rate limit allows within its window (warning).
    MessageBudget,
    /// A state left only by flow-wide transitions, which holds a run (warning).
    FlowWideExitOnly,
    /// A send's text can be longer than a channel of the flow sends (warning).
    TextTooLong,
    /// A draft its state leaves at once, or `on agent approved|rejected` where nothing is
    /// drafted.
    DraftMisplaced,
    /// `rapport.yaml` is not valid YAML.
    YamlSyntax,
    /// An unknown key in `rapport.yaml`.
    YamlUnknownKey,
    /// A value of the wrong type or form in `rapport.yaml`.
    YamlBadValue,
}

impl Code {
    /// Every code, in documentation order.
    pub const ALL: [Code; 35] = [
        Code::Syntax,
        Code::UnterminatedString,
        Code::BadEscape,
        Code::BadToken,
        Code::BadDuration,
        Code::BadPercent,
        Code::NameCase,
        Code::DuplicateClause,
        Code::ActionAfterTransition,
        Code::ActionAfterLast,
        Code::UnknownWord,
        Code::Unclosed,
        Code::MisplacedTransition,
        Code::BadRegex,
        Code::YamlSyntax,
        Code::YamlUnknownKey,
        Code::YamlBadValue,
        Code::UnknownName,
        Code::UnknownToken,
        Code::DuplicateName,
        Code::Unreachable,
        Code::DeadEnd,
        Code::InstantLoop,
        Code::TokenMaybeMissing,
        Code::OutsideWindow,
        Code::ReservedKeyword,
        Code::EscalationKeyword,
        Code::OverlappingTriggers,
        Code::RetryWithoutElse,
        Code::VariantKeys,
        Code::TemplateParams,
        Code::MessageBudget,
        Code::FlowWideExitOnly,
        Code::TextTooLong,
        Code::DraftMisplaced,
    ];

    /// The code as users see it, e.g. `RP0001`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Syntax => "RP0001",
            Code::UnterminatedString => "RP0002",
            Code::BadEscape => "RP0003",
            Code::BadToken => "RP0004",
            Code::BadDuration => "RP0005",
            Code::BadPercent => "RP0006",
            Code::NameCase => "RP0007",
            Code::DuplicateClause => "RP0008",
            Code::ActionAfterTransition => "RP0009",
            Code::ActionAfterLast => "RP0010",
            Code::UnknownWord => "RP0011",
            Code::Unclosed => "RP0012",
            Code::MisplacedTransition => "RP0013",
            Code::BadRegex => "RP0014",
            Code::YamlSyntax => "RP0101",
            Code::YamlUnknownKey => "RP0102",
            Code::YamlBadValue => "RP0103",
            Code::UnknownName => "RP0201",
            Code::UnknownToken => "RP0202",
            Code::DuplicateName => "RP0203",
            Code::Unreachable => "RP0204",
            Code::DeadEnd => "RP0205",
            Code::InstantLoop => "RP0206",
            Code::TokenMaybeMissing => "RP0207",
            Code::OutsideWindow => "RP0208",
            Code::ReservedKeyword => "RP0209",
            Code::EscalationKeyword => "RP0210",
            Code::OverlappingTriggers => "RP0211",
            Code::RetryWithoutElse => "RP0212",
            Code::VariantKeys => "RP0213",
            Code::TemplateParams => "RP0214",
            Code::MessageBudget => "RP0215",
            Code::FlowWideExitOnly => "RP0216",
            Code::TextTooLong => "RP0217",
            Code::DraftMisplaced => "RP0218",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The closest candidate to `word` by edit distance, if it is close enough to be a
/// plausible typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let mut best: Option<(usize, &str)> = None;
    for candidate in candidates {
        let mut distance = strsim::damerau_levenshtein(&lower, candidate);
        // `confirmation` for `confirm`, `chan` for `channels`: a prefix is a likely slip.
        if lower.len() >= 4
            && candidate.len() >= 4
            && (lower.starts_with(candidate) || candidate.starts_with(lower.as_str()))
        {
            distance = distance.min(1);
        }
        let limit = (candidate.len().max(word.len()) / 3).max(1);
        if distance <= limit && best.is_none_or(|(d, _)| distance < d) {
            best = Some((distance, candidate));
        }
    }
    best.map(|(_, c)| c)
}
