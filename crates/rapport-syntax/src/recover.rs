//! Error recovery. pest stops at the first error, so a file that fails is split at its
//! top-level `flow` blocks and, inside a broken flow, at its `state` blocks (brace matching
//! that respects strings, regexes and comments), and each piece is parsed on its own. One
//! broken state then hides neither the other states nor the other flows.

use pest::error::Error;

use crate::ast::{Flow, FlowFile};
use crate::diagnostic::{Code, Diagnostic, Span};
use crate::errors;
use crate::parser::{parse_piece, Builder, Rule};

/// A `{ ... }` block: the offsets of its braces (`close` is `None` if never closed).
#[derive(Debug, Clone, Copy)]
struct Block {
    open: usize,
    close: Option<usize>,
    /// Where the block's text stops: after its `}`, or where an unclosed block was cut off.
    end: usize,
}

pub(crate) fn parse_in_pieces(
    source: &str,
    whole_error: &Error<Rule>,
    diags: &mut Vec<Diagnostic>,
) -> FlowFile {
    let scan = scan(source, 0);
    let before = diags.len();
    let strays: Vec<usize> = scan
        .problems
        .iter()
        .filter(|(_, p)| matches!(p, Problem::StrayClose))
        .map(|(at, _)| *at)
        .collect();
    for &(at, problem) in &scan.problems {
        if !matches!(problem, Problem::StrayClose) {
            diags.push(problem.diagnostic(at));
        }
    }
    let mut flows = Vec::new();
    let mut piece_start = 0;
    for block in scan.top_blocks() {
        let piece_end = block.end.max(piece_start);
        let piece = &source[piece_start..piece_end];
        if let Some(flow) = parse_flow_piece(source, piece, piece_start, block, diags) {
            flows.push(flow);
        }
        piece_start = piece_end;
    }
    // Whatever follows the last block must be comments or white space. Stray `}` are
    // blanked so they are reported once, below.
    let mut tail = source[piece_start..].to_string();
    for &at in strays.iter().filter(|&&at| at >= piece_start) {
        tail.replace_range(at - piece_start..=at - piece_start, " ");
    }
    parse_piece(Rule::file, &tail, piece_start, source, diags);
    // A stray `}` after an earlier error is usually that error's echo (a missing `{`):
    // report it only when it is the first problem in the file.
    if let Some(&at) = strays.first() {
        let earlier = diags[before..]
            .iter()
            .any(|d| d.span().is_some_and(|s| s.start < at));
        if !earlier {
            diags.push(Problem::StrayClose.diagnostic(at));
        }
    }
    if diags.len() == before {
        // Nothing found piecewise (should not happen): report pest's own error.
        diags.push(errors::from_pest(whole_error, 0, source));
    }
    FlowFile { flows }
}

/// Parses one flow; when it fails, its header and each state on their own.
fn parse_flow_piece(
    source: &str,
    piece: &str,
    base: usize,
    block: Block,
    diags: &mut Vec<Diagnostic>,
) -> Option<Flow> {
    if let Ok(mut pairs) =
        <crate::parser::FlowParser as pest::Parser<Rule>>::parse(Rule::flow_only, piece)
    {
        let pair = pairs.next()?.into_inner().next()?;
        return Some(Builder::new(base, source, diags).flow(pair));
    }
    let Some(close) = block.close else {
        // An unclosed flow was reported by the scan; parsing it would only repeat that.
        return None;
    };
    // The states inside this flow, found by scanning the flow's body.
    let body_start = block.open + 1;
    let inner = scan(&source[body_start..close], body_start);
    let states: Vec<Block> = inner.top_blocks().collect();

    // The header: the flow with every state's body blanked out (offsets stay the same).
    let mut blanked = piece.as_bytes().to_vec();
    for s in &states {
        if let Some(c) = s.close {
            for b in &mut blanked[s.open + 1 - base..c - base] {
                if *b != b'\n' {
                    *b = b' ';
                }
            }
        }
    }
    // Only ASCII bytes were replaced by ASCII spaces, at char boundaries of whole blocks.
    let blanked = String::from_utf8(blanked).ok()?;
    let mut flow = parse_piece(Rule::flow_only, &blanked, base, source, diags)
        .and_then(|p| p.into_inner().next())
        .map(|pair| Builder::new(base, source, diags).flow(pair));

    // Each state from the `state` keyword before its `{` to its `}`.
    let mut state_start = body_start;
    for (i, s) in states.iter().enumerate() {
        let Some(c) = s.close else { continue };
        let head_from = source[state_start..s.open]
            .rfind("state")
            .map(|at| state_start + at)
            .unwrap_or(state_start);
        let text = &source[head_from..=c];
        if let Some(pair) = parse_piece(Rule::state_only, text, head_from, source, diags)
            .and_then(|p| p.into_inner().next())
        {
            let state = Builder::new(head_from, source, diags).state(pair);
            if let Some(f) = flow.as_mut() {
                if let Some(slot) = f.states.get_mut(i) {
                    *slot = state;
                }
            }
        }
        state_start = c + 1;
    }
    if let Some(f) = flow.as_mut() {
        f.recovered = true;
    }
    flow
}

#[derive(Debug, Clone, Copy)]
enum Problem {
    /// A `{` that is never closed.
    Unclosed,
    /// A `}` with nothing to close.
    StrayClose,
    /// A `{` still open when the next `flow` starts at the beginning of a line.
    UnclosedBeforeFlow,
}

impl Problem {
    fn diagnostic(self, at: usize) -> Diagnostic {
        let span = Span::new(at, at + 1);
        match self {
            Problem::Unclosed => Diagnostic::error(Code::Unclosed, "this `{` is never closed")
                .label(span, "opened here")
                .help("add the matching `}` where the block ends"),
            Problem::UnclosedBeforeFlow => Diagnostic::error(
                Code::Unclosed,
                "this `{` is still open where the next flow starts",
            )
            .label(span, "opened here")
            .help("add the matching `}` before the next `flow`"),
            Problem::StrayClose => Diagnostic::error(Code::Unclosed, "this `}` closes nothing")
                .label(span, "no `{` is open here")
                .help("delete it, or add the `{` it was meant to close"),
        }
    }
}

struct Scan {
    /// Blocks at depth 0 of the scanned text, in order.
    blocks: Vec<Block>,
    problems: Vec<(usize, Problem)>,
}

impl Scan {
    fn top_blocks(&self) -> impl Iterator<Item = Block> + '_ {
        self.blocks.iter().copied()
    }
}

/// Finds the outermost `{ ... }` blocks of `text` (found at absolute offset `base`),
/// skipping strings, `"""` strings, regexes and comments.
fn scan(text: &str, base: usize) -> Scan {
    let bytes = text.as_bytes();
    let mut blocks = Vec::new();
    let mut problems = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    // Opening braces whose `}` stands at another indentation: when a block is left open,
    // the first of these inside it is most likely the one missing its `}`.
    let mut misindented: Vec<usize> = Vec::new();
    let mut i = 0;
    let mut line_start = true;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'#' | b'"' | b'/' => {
                i = skip_literal(text, i);
                line_start = false;
                continue;
            }
            b'{' => stack.push(i),
            b'}' => match stack.pop() {
                Some(open) => {
                    if let (Some(close_indent), Some(open_indent)) =
                        (indent_if_first(text, i), line_indent(text, open))
                    {
                        if close_indent != open_indent {
                            misindented.push(open);
                        }
                    }
                    if stack.is_empty() {
                        blocks.push(Block {
                            open: base + open,
                            close: Some(base + i),
                            end: base + i + 1,
                        });
                    }
                }
                None => problems.push((base + i, Problem::StrayClose)),
            },
            b'f' if line_start && !stack.is_empty() && is_word_at(text, i, "flow") => {
                // A flow starting at the left margin while a block is open: the block
                // was not closed. Close everything so the new flow parses on its own.
                if let Some(&outer) = stack.first() {
                    let culprit = likely_unclosed(&stack, &misindented, outer);
                    problems.push((base + culprit, Problem::UnclosedBeforeFlow));
                }
                if let Some(&outer) = stack.first() {
                    blocks.push(Block {
                        open: base + outer,
                        close: None,
                        end: base + i,
                    });
                }
                stack.clear();
                continue_after_flow_word(&mut i);
                line_start = false;
                continue;
            }
            _ => {}
        }
        line_start = b == b'\n';
        i += 1;
    }
    if let Some(&outer) = stack.first() {
        let culprit = likely_unclosed(&stack, &misindented, outer);
        problems.push((base + culprit, Problem::Unclosed));
        blocks.push(Block {
            open: base + outer,
            close: None,
            end: base + text.len(),
        });
    }
    Scan { blocks, problems }
}

/// The brace most likely missing its `}`: the first misindented block inside the open
/// one, else the innermost open block.
fn likely_unclosed(stack: &[usize], misindented: &[usize], outer: usize) -> usize {
    misindented
        .iter()
        .copied()
        .find(|&o| o > outer)
        .or_else(|| stack.last().copied())
        .unwrap_or(outer)
}

/// The indentation of the line holding `at`.
fn line_indent(text: &str, at: usize) -> Option<usize> {
    let line_start = text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line = &text[line_start..];
    Some(line.len() - line.trim_start_matches([' ', '\t']).len())
}

/// The indentation before `at` when only white space precedes it on its line.
fn indent_if_first(text: &str, at: usize) -> Option<usize> {
    let line_start = text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let before = &text[line_start..at];
    before.trim().is_empty().then_some(before.len())
}

fn continue_after_flow_word(i: &mut usize) {
    *i += "flow".len();
}

fn is_word_at(text: &str, i: usize, word: &str) -> bool {
    text[i..].starts_with(word)
        && !text[i + word.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Skips the comment, `"""` string, string or regex starting at `i` (a `#`, `"` or `/`),
/// giving the index just after it. An unclosed `"""` skips only its quotes (it is
/// reported where it opens, and the braces after it still count); an unclosed string or
/// regex stops at the line end.
fn skip_literal(text: &str, i: usize) -> usize {
    let bytes = text.as_bytes();
    match bytes[i] {
        b'#' => text[i..].find('\n').map_or(bytes.len(), |e| i + e),
        b'"' if text[i..].starts_with("\"\"\"") => text[i + 3..]
            .find("\"\"\"")
            .map_or(i + 3, |e| i + 3 + e + 3),
        quote => skip_quoted(bytes, i, quote),
    }
}

/// Skips a `"..."` string or `/.../` regex starting at `i`; stops at the line end if the
/// literal is never closed.
fn skip_quoted(bytes: &[u8], mut i: usize, quote: u8) -> usize {
    i += 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'\n' => return i,
            b if b == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The deepest nesting of parentheses the parser accepts. Conditions are the grammar's only
/// recursion; bounding them keeps the parser's stack use bounded whatever the input.
pub(crate) const MAX_PAREN_DEPTH: usize = 32;

/// A diagnostic when parentheses outside strings, regexes and comments nest deeper than
/// [`MAX_PAREN_DEPTH`].
pub(crate) fn too_deep(text: &str) -> Option<Diagnostic> {
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' | b'"' | b'/' => {
                i = skip_literal(text, i);
                continue;
            }
            b'(' => {
                depth += 1;
                if depth > MAX_PAREN_DEPTH {
                    return Some(
                        Diagnostic::error(Code::Syntax, "parentheses nest too deeply")
                            .label(
                                Span::new(i, i + 1),
                                format!("more than {MAX_PAREN_DEPTH} levels deep"),
                            )
                            .help("split the condition, or remove parentheses that group nothing"),
                    );
                }
            }
            b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}
