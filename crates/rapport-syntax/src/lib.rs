//! Rapport's front end: `.flow` source text to a typed syntax tree with spans, and
//! `rapport.yaml` to typed settings, each with diagnostics in plain words.
//!
//! Pure: no I/O, no clock. Parsing never panics and never stops at the first error.

pub mod ast;
pub mod comments;
pub mod diagnostic;
mod errors;
pub mod format;
mod parser;
mod recover;
pub mod settings;
mod text;

pub use diagnostic::{did_you_mean, Code, Diagnostic, Label, Severity, Span};
pub use format::format_condition;
pub use parser::build::{parse_duration, DurationProblem};
pub use parser::{parse, Parsed};
pub use settings::depth::{too_deep as yaml_too_deep, MAX_YAML_DEPTH};
pub use settings::{parse_settings, ParsedSettings, Settings};
