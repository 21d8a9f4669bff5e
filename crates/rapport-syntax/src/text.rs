//! String literals: escapes, `"""` dedenting, and `{tokens}` in text meant for a person.

use crate::ast::{Text, TextPart, Token};
use crate::diagnostic::{Code, Diagnostic, Span};

/// The characters of a string literal after escapes and dedenting, each with the byte
/// offset (absolute) of the source character it came from.
pub(crate) struct Cooked {
    chars: Vec<(usize, char)>,
}

impl Cooked {
    pub(crate) fn into_string(self) -> String {
        self.chars.into_iter().map(|(_, c)| c).collect()
    }
}

/// Cooks the literal `raw` (quotes included) found at absolute offset `base`.
pub(crate) fn cook(raw: &str, base: usize, diags: &mut Vec<Diagnostic>) -> Cooked {
    if raw.starts_with("\"\"\"") && raw.len() >= 6 {
        cook_triple(&raw[3..raw.len() - 3], base + 3, diags)
    } else {
        let inner = raw
            .strip_prefix('"')
            .and_then(|r| r.strip_suffix('"'))
            .unwrap_or(raw);
        let mut chars = Vec::with_capacity(inner.len());
        unescape(inner, base + 1, &mut chars, diags);
        Cooked { chars }
    }
}

fn unescape(src: &str, base: usize, out: &mut Vec<(usize, char)>, diags: &mut Vec<Diagnostic>) {
    let mut it = src.char_indices().peekable();
    while let Some((i, c)) = it.next() {
        if c != '\\' {
            out.push((base + i, c));
            continue;
        }
        match it.next() {
            Some((_, '"')) => out.push((base + i, '"')),
            Some((_, '\\')) => out.push((base + i, '\\')),
            Some((_, 'n')) => out.push((base + i, '\n')),
            Some((_, 't')) => out.push((base + i, '\t')),
            Some((j, other)) => {
                diags.push(
                    Diagnostic::error(
                        Code::BadEscape,
                        format!("unknown escape `\\{other}` in a string"),
                    )
                    .label(
                        Span::new(base + i, base + j + other.len_utf8()),
                        "not an escape",
                    )
                    .help("the escapes are \\\" \\\\ \\n and \\t; write \\\\ for a backslash"),
                );
                out.push((base + j, other));
            }
            None => out.push((base + i, '\\')),
        }
    }
}

/// `"""` strings: the first and last line break and the common indentation are removed.
fn cook_triple(content: &str, base: usize, diags: &mut Vec<Diagnostic>) -> Cooked {
    let mut start = 0;
    let mut end = content.len();
    // Drop the first line break when the opening quotes end their line.
    let leading = content.len() - content.trim_start_matches([' ', '\t', '\r']).len();
    if content[leading..].starts_with('\n') {
        start = leading + 1;
    }
    // Drop the last line break when the closing quotes start their own line.
    let body = &content[start..];
    let trailing = body.len() - body.trim_end_matches([' ', '\t']).len();
    let before_ws = &body[..body.len() - trailing];
    if let Some(stripped) = before_ws.strip_suffix('\n') {
        end = start + stripped.trim_end_matches('\r').len();
    }
    let body = if start <= end {
        &content[start..end]
    } else {
        ""
    };

    let indent = body
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start_matches([' ', '\t']).len())
        .min()
        .unwrap_or(0);

    let mut chars = Vec::with_capacity(body.len());
    let mut offset = base + start;
    for (n, line) in body.split('\n').enumerate() {
        if n > 0 {
            chars.push((offset - 1, '\n'));
        }
        let line_no_cr = line.strip_suffix('\r').unwrap_or(line);
        let cut = indent.min(line_no_cr.len() - line_no_cr.trim_start_matches([' ', '\t']).len());
        unescape(&line_no_cr[cut..], offset + cut, &mut chars, diags);
        offset += line.len() + 1;
    }
    Cooked { chars }
}

/// Splits cooked text into literal pieces and `{tokens}`; `{{` and `}}` are braces.
pub(crate) fn parse_text(cooked: Cooked, span: Span, diags: &mut Vec<Diagnostic>) -> Text {
    let chars = &cooked.chars;
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        match c {
            '{' if chars.get(i + 1).map(|x| x.1) == Some('{') => {
                literal.push('{');
                i += 2;
            }
            '}' if chars.get(i + 1).map(|x| x.1) == Some('}') => {
                literal.push('}');
                i += 2;
            }
            '}' => {
                diags.push(
                    Diagnostic::error(Code::BadToken, "a `}` with no `{` before it")
                        .label(Span::new(at, at + 1), "lone brace")
                        .help("write `}}` for a literal brace in message text"),
                );
                literal.push('}');
                i += 1;
            }
            '{' => {
                let close = chars[i + 1..]
                    .iter()
                    .position(|&(_, c)| c == '}' || c == '{' || c == '\n')
                    .map(|p| p + i + 1)
                    .filter(|&p| chars[p].1 == '}');
                let Some(close) = close else {
                    diags.push(
                        Diagnostic::error(
                            Code::BadToken,
                            "this `{` starts a token that is never closed",
                        )
                        .label(Span::new(at, at + 1), "token starts here")
                        .help("close the token with `}`, or write `{{` for a literal brace"),
                    );
                    literal.push('{');
                    i += 1;
                    continue;
                };
                let end_at = chars[close].0 + 1;
                let token_span = Span::new(at, end_at);
                let inner: String = chars[i + 1..close].iter().map(|x| x.1).collect();
                if let Some(token) = parse_token(&inner, token_span, diags) {
                    if !literal.is_empty() {
                        parts.push(TextPart::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(TextPart::Token(token));
                }
                i = close + 1;
            }
            _ => {
                literal.push(c);
                i += 1;
            }
        }
    }
    if !literal.is_empty() {
        parts.push(TextPart::Literal(literal));
    }
    Text { span, parts }
}

fn parse_token(inner: &str, span: Span, diags: &mut Vec<Diagnostic>) -> Option<Token> {
    let (path, fallback) = match inner.split_once('|') {
        Some((p, f)) => (p, Some(f)),
        None => (inner, None),
    };
    if let Some(f) = fallback {
        if f.contains('|') {
            diags.push(
                Diagnostic::error(Code::BadToken, "a token's fallback may not contain `|`")
                    .label(span, "two `|` in one token")
                    .help("write the fallback without `|`, e.g. {first_name|there}"),
            );
            return None;
        }
    }
    if !is_token_path(path) {
        let suggestion = path.trim().to_ascii_lowercase().replace([' ', '-'], "_");
        let mut d = Diagnostic::error(
            Code::BadToken,
            format!("`{{{inner}}}` is not a valid token"),
        )
        .label(
            span,
            "token names are lower case words joined by `_`, like {first_name}",
        );
        d = if is_token_path(&suggestion) {
            d.help(format!(
                "did you mean {{{suggestion}}}? Write `{{{{` and `}}}}` for literal braces"
            ))
        } else {
            d.help("use a name like {first_name} or {event.product_name}; write `{{` and `}}` for literal braces")
        };
        diags.push(d);
        return None;
    }
    Some(Token {
        span,
        path: path.to_string(),
        fallback: fallback.map(str::to_string),
    })
}

/// `[a-z][a-z0-9_]*` joined by dots.
pub(crate) fn is_token_path(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_identifier)
}

/// `[a-z][a-z0-9_]*`.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(src: &str) -> (Text, Vec<Diagnostic>) {
        let mut d = Vec::new();
        let cooked = cook(src, 0, &mut d);
        let t = parse_text(cooked, Span::new(0, src.len()), &mut d);
        (t, d)
    }

    #[test]
    fn tokens_and_braces() {
        let (t, d) = text(r#""Hi {first_name|there}, {{literal}} {event.cart_url}""#);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(t.tokens().count(), 2);
        assert_eq!(t.parts[0], TextPart::Literal("Hi ".into()));
        assert_eq!(t.parts[2], TextPart::Literal(", {literal} ".into()));
        let first = t.tokens().next().map(|t| t.span);
        assert_eq!(first, Some(Span::new(4, 22)));
    }

    #[test]
    fn triple_strings_dedent() {
        let src = "\"\"\"\n    Hello\n      there\n    \"\"\"";
        let mut d = Vec::new();
        assert_eq!(cook(src, 0, &mut d).into_string(), "Hello\n  there");
        assert!(d.is_empty());
    }

    #[test]
    fn escapes() {
        let mut d = Vec::new();
        assert_eq!(
            cook(r#""a\"b\\c\nd""#, 0, &mut d).into_string(),
            "a\"b\\c\nd"
        );
        cook(r#""bad \q""#, 0, &mut d);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].span(), Some(Span::new(5, 7)));
    }
}
