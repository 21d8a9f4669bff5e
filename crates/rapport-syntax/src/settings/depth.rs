//! How deep a YAML text nests, found by one pass over the raw text before any YAML
//! parser sees it. libyaml (under serde_yaml) reads the whole document before serde's
//! recursion limit applies, and it slows down with the square of the nesting: 200 KB of
//! `[[[[…` took a minute. Settings and scenarios need a handful of levels.

/// The deepest nesting allowed in `rapport.yaml` and `*.test.yaml` files.
pub const MAX_YAML_DEPTH: usize = 64;

/// The byte offset where `source` first nests deeper than `limit`, if it does.
///
/// Levels are counted from indentation (each deeper indentation of a block mapping or
/// list, each `- ` that starts a nested node on a line) and from `[`/`{` that open a flow
/// collection (outside quotes and comments). The count is an estimate that errs high by
/// at most one level per line (`- x` counts the scalar as a level), never by more, so a
/// file of real settings is never refused; a file that passes is parsed by serde_yaml,
/// whose own recursion limit is 128.
pub fn too_deep(source: &str, limit: usize) -> Option<usize> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    let mut quote: Option<u8> = None;
    // The indentation of a line ending in `|` or `>`: more-indented lines below it are
    // the literal text of a block scalar.
    let mut block_scalar: Option<usize> = None;
    let mut offset = 0usize;
    for line in source.split_inclusive('\n') {
        let start = offset;
        offset += line.len();
        let bytes = line.as_bytes();
        let mut i = 0;
        let mut value_start = true;
        if quote.is_none() && flow == 0 {
            let indent = bytes.iter().take_while(|&&b| b == b' ').count();
            let rest = line[indent..].trim_end();
            if rest.is_empty() || rest.starts_with('#') {
                continue;
            }
            if let Some(b) = block_scalar {
                if indent > b {
                    continue;
                }
                block_scalar = None;
            }
            while indents.last().is_some_and(|&top| top > indent) {
                indents.pop();
            }
            if indents.last() != Some(&indent) {
                indents.push(indent);
            }
            i = indent;
            // `- - a: b`: each dash opens a node one level deeper.
            while bytes.get(i) == Some(&b'-')
                && bytes.get(i + 1).is_none_or(|b| b.is_ascii_whitespace())
            {
                i += 2;
                while bytes.get(i) == Some(&b' ') {
                    i += 1;
                }
                if bytes.get(i).is_some_and(|b| !b.is_ascii_whitespace()) {
                    indents.push(i);
                }
            }
            if indents.len() > limit {
                return Some(start + i.min(line.len()));
            }
            if ends_with_block_scalar(line) {
                block_scalar = Some(indent);
            }
        }
        while i < bytes.len() {
            let c = bytes[i];
            match quote {
                Some(b'\'') => {
                    if c == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            i += 1;
                        } else {
                            quote = None;
                            value_start = false;
                        }
                    }
                }
                Some(_) => {
                    if c == b'\\' {
                        i += 1;
                    } else if c == b'"' {
                        quote = None;
                        value_start = false;
                    }
                }
                None => match c {
                    b'#' if i == 0 || bytes[i - 1].is_ascii_whitespace() => break,
                    b'"' | b'\'' if value_start => quote = Some(c),
                    b'[' | b'{' if value_start || flow > 0 => {
                        flow += 1;
                        if indents.len() + flow > limit {
                            return Some(start + i);
                        }
                        value_start = true;
                    }
                    b']' | b'}' if flow > 0 => {
                        flow -= 1;
                        value_start = false;
                    }
                    b',' if flow > 0 => value_start = true,
                    b':' | b'-' | b'?'
                        if flow > 0 || bytes.get(i + 1).is_none_or(|b| b.is_ascii_whitespace()) =>
                    {
                        value_start = true
                    }
                    b' ' | b'\t' | b'\r' | b'\n' => {}
                    _ => value_start = false,
                },
            }
            i += 1;
        }
    }
    None
}

/// Whether a line's value is `|` or `>` (with chomping or indentation indicators): the
/// lines below it, indented more, are text.
fn ends_with_block_scalar(line: &str) -> bool {
    let code = match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    };
    let code = code.trim_end();
    let head = code.trim_end_matches(|c: char| c == '+' || c == '-' || c.is_ascii_digit());
    (head.ends_with(" |") || head.ends_with(" >") || head == "|" || head == ">")
        && (head.len() == 1 || head[..head.len() - 1].trim_end().ends_with([':', '-']))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, limit: usize) -> bool {
        too_deep(text, limit).is_none()
    }

    #[test]
    fn real_settings_are_shallow() {
        let text = "brand: Acme\nchannels:\n  whatsapp: { window: 24h }\n  sms: {}\nqueues: [a, b]\nopt_out:\n  keywords:\n    - stop\n    - 'it''s [not'\n  confirm: \"x [ { \\\" y\"\n";
        assert!(depth_ok(text, 4), "{:?}", too_deep(text, 4));
        assert!(!depth_ok(text, 2));
    }

    #[test]
    fn flow_brackets_count() {
        let text = format!("brand: {}{}\n", "[".repeat(70), "]".repeat(70));
        assert_eq!(too_deep(&text, 64), Some(7 + 63));
        assert!(depth_ok(
            &format!("a: {}{}\n", "[".repeat(60), "]".repeat(60)),
            64
        ));
    }

    #[test]
    fn block_nesting_counts() {
        let deep: String = (0..70).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
        assert!(too_deep(&deep, 64).is_some());
        let dashes = format!("x:\n{}a\n", "- ".repeat(70));
        assert!(too_deep(&dashes, 64).is_some());
    }

    #[test]
    fn brackets_inside_text_do_not_count() {
        let text = format!(
            "a: \"{}\"\nb: '{}'\nc: x{}\n# {}\nd: |\n  {}\n",
            "[".repeat(100),
            "{".repeat(100),
            "[".repeat(100),
            "[".repeat(100),
            "[".repeat(100)
        );
        assert!(depth_ok(&text, 4), "{:?}", too_deep(&text, 4));
    }
}
