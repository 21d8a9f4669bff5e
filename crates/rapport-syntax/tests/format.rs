//! The canonical printer (`rapport fmt`, and what a flow's default version hashes): it keeps
//! everything the syntax tree holds, it is idempotent, and comments and layout do not
//! change its output.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use rapport_syntax::ast::FlowFile;
use rapport_syntax::comments::notes;
use rapport_syntax::format::{format_file, format_file_with, format_flow};
use rapport_syntax::parse;

/// Every construct of the language, written out of canonical order, with comments and odd
/// layout, so the round trip has something to lose.
const RICH: &str = r#"
# Header clauses in reverse order, with comments between them.
flow everything {
  goal order.placed within 7d          # conversion
  halt when opt_out_rate > 2% or handoff_rate >= 30.5% or bounce_rate < 0.5% or spam_rate <= 0.05% or x == 12.34% after 200 runs
  rollout 1% -> 25% -> 100% every 86400s
  expire after 3600s
  reentry after 90m
  priority -3
  start on event cart.abandoned
    when event.total > 100 and not has coupon
      or (channel == "sms" and not (tier != "b\"c\\d" or score <= -0.25))
  start on message
  start on message "hi", "hello \"you\"" when visits >= 3.5
  start on comment contains "price", "cost"
  start on comment matches /https?:\/\/[a-z]+\/x\\/
  start on comment
  start on message intent greeting
  start on message sentiment < -0.6
  start on message any when a == 1 or (b == 2 or c == 3) or ((d == 4 and e == 5) and f == 6)
  channels whatsapp, instagram,
           messenger
  purpose marketing
  version 7
  title "Every \"construct\" \\ here\tand a\nline break"

  state first {
    send "Hi {first_name|there}, {{literal}} }} {{{event.cart_url}}} {a.b.c|x y: \"z\"}"
      or template cart_v2 with url = "{event.cart_url}", b = "x"
    send "plain" or template plain_v1
    send ""
    send one of { a: "A {x}", b: """
      Line one "quoted" and ""double"" and \"\"\"\"quadruple\"\"\"\"
        indented line
      back\\slash {y|fallback here}, tab\there

      after a blank line
    """ }
    reply "public reply"
    review "reason: {event.text}"
    set slot = "value {x}"
    tag "a-tag"
    emit crm.lead
    emit crm.lead with a = "b", c = """
      multi
      line
    """, d = "{d}"
    -> second
  }

  on reply "agent" -> handoff            # flow-wide transitions after a state
  on comment intent abuse when not (a == 1 and b == 2) -> done
  on event order.placed when event.total >= 10.5 -> done
  on reply contains "stop", "quit" -> done
  on reply matches /^no+$/ -> done
  on reply sentiment > 0.5 -> done
  on reply any -> done

  state second {
    ask size "Size?" expect /^\d+(\/\d+)?$/ retry 2 "Numbers only" then -> third else -> handoff
    on reply "skip" -> third
    on comment "x" when has y and not (not has z) -> third
    on event size.known when event.size == "42" -> third
    after 30s -> third
    after 120s -> third
    after 5400s -> third
    after 48h -> third
  }
  state third { ask a "A?" then -> fourth }
  state fourth { ask b "B?" expect text then -> fifth }
  state fifth { ask c "C?" expect number retry 1 "{c|?}" then -> sixth }
  state sixth { ask d "D?" expect email then -> seventh else -> done }
  state seventh { ask e "E?" expect phone then -> eighth }
  state eighth {
    ask f """
      Pick:
      1 One
      2 Two
    """ expect choice { "1" = "one", "2" = "two", "\"3\"" = "thr\\ee", } retry 3 """
      Just 1
      or 2
    """ then -> ninth
  }
  state ninth { hide }
  state tenth { hide  review "x" }
  state handoff { handoff support summary "Cart {event.product_name}" sla 1h on agent released -> done on agent replied -> ninth }
  state h2 { handoff support sla 15m }
  state h3 { handoff support summary "only summary" }
  state h4 { handoff support -> done }
  state empty {}
  state lines {
    send "  every line\n  indented: one line"
    send "one line not indented\n  keeps a block"
    send "trailing  \nspaces: one line"
    send "\nstarts with a line break"
    send "ends with a line break\n"
    send "\n"
    send "só ünïcode 👟\n✓"
  }
  state done { end }
}

flow always_again { reentry always purpose transactional start on event x state s { end } }
flow never_again { reentry never state s { -> t } state t { end } }
flow bare {}
"#;

/// A file and the same file in canonical form, to pin the layout rules.
const SPEC_EXAMPLE: &str = r#"
flow cart_recovery {
  title    "Abandoned cart recovery"
  purpose  marketing                    # marketing | transactional (default)
  channels whatsapp, instagram, messenger
  start on event cart.abandoned         # the trigger
  priority 10                           # higher wins when several triggers match
  rollout  5% -> 25% -> 100% every 24h
  halt when opt_out_rate > 2% or handoff_rate > 30% after 200 runs
  goal     order.placed within 7d       # conversion, for the KPIs

  # flow-wide transitions: checked in every state before the state's own
  on reply "agent", "human" -> handoff
  on event order.placed -> converted

  state waiting {                       # the first state is the initial state
    after 1h -> remind
  }

  state remind {
    send "Hi {first_name|there}, we saved your cart with {event.product_name}. Use code SAVE10 within 24h: {event.cart_url}"
      or template cart_reminder_v2     # used outside the channel's messaging window
    after 24h -> expired
  }

  state handoff {
    handoff support summary "Cart {event.product_name}; last message: {last_reply}" sla 1h
    on agent released -> done
  }

  state converted { tag "recovered"  end }
  state expired   { end }
  state done      { end }
}
flow second { start on message state ask { ask q """
  Which one?
    - "A"
    - "B"
""" expect choice { "a" = "A" } then -> ask } }
"#;

const SPEC_EXAMPLE_CANONICAL: &str = r#"flow cart_recovery {
  title "Abandoned cart recovery"
  purpose marketing
  channels whatsapp, instagram, messenger
  start on event cart.abandoned
  priority 10
  rollout 5% -> 25% -> 100% every 1d
  halt when opt_out_rate > 2% or handoff_rate > 30% after 200 runs
  goal order.placed within 7d

  on reply "agent", "human" -> handoff
  on event order.placed -> converted

  state waiting {
    after 1h -> remind
  }

  state remind {
    send "Hi {first_name|there}, we saved your cart with {event.product_name}. Use code SAVE10 within 24h: {event.cart_url}"
      or template cart_reminder_v2
    after 1d -> expired
  }

  state handoff {
    handoff support
      summary "Cart {event.product_name}; last message: {last_reply}"
      sla 1h
    on agent released -> done
  }

  state converted {
    tag "recovered"
    end
  }

  state expired { end }

  state done { end }
}

flow second {
  start on message

  state ask {
    ask q """
      Which one?
        - "A"
        - "B"
    """
      expect choice { "a" = "A" }
      then -> ask
  }
}
"#;

// ---------------------------------------------------------------------- helpers

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows")
}

/// The example project's flows, by file name, and the rich flow above.
fn sources() -> &'static [(String, String)] {
    static SOURCES: OnceLock<Vec<(String, String)>> = OnceLock::new();
    SOURCES.get_or_init(|| {
        let mut sources: Vec<(String, String)> = std::fs::read_dir(examples_dir())
            .expect("flows/ is readable")
            .map(|entry| entry.expect("flows/ lists").path())
            .filter(|path| path.extension().is_some_and(|e| e == "flow"))
            .map(|path| {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
                let source = std::fs::read_to_string(&path).expect("example flow is readable");
                (name.unwrap_or_default(), source)
            })
            .collect();
        sources.sort();
        assert!(sources.len() >= 7, "the example flows are missing");
        sources.push(("RICH".to_string(), RICH.to_string()));
        sources
    })
}

fn parse_clean(source: &str, what: &str) -> FlowFile {
    let parsed = parse(source);
    assert!(
        parsed.diagnostics.is_empty(),
        "{what} does not parse clean: {:#?}\n{source}",
        parsed.diagnostics
    );
    parsed.file
}

fn canonical(source: &str, what: &str) -> String {
    format_file(&parse_clean(source, what))
}

/// The tree with every span left out: equal when two trees differ only in where things
/// were written. Every other field is in the `Debug` output, so a printer that drops or
/// changes anything makes the shapes differ.
fn shape(file: &FlowFile) -> String {
    let debug = format!("{file:?}");
    let mut out = String::with_capacity(debug.len());
    let mut rest = debug.as_str();
    while let Some(at) = rest.find("Span { start: ") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        match span_len(after) {
            Some(len) => rest = &after[len..],
            None => {
                out.push_str("Span");
                rest = &after["Span".len()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The length of `Span { start: N, end: M }` at the start of `s`.
fn span_len(s: &str) -> Option<usize> {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let mut at = "Span { start: ".len();
    let n = digits(&s[at..]);
    at += n;
    let m = digits(s[at..].strip_prefix(", end: ")?);
    at += ", end: ".len() + m;
    (n > 0 && m > 0 && s[at..].starts_with(" }")).then_some(at + " }".len())
}

/// How a source is cut up for editing its layout: strings and regexes are kept whole (their
/// white space is content), comments and white space between tokens may change.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Piece {
    Code,
    Literal,
    Comment,
    Space,
}

fn pieces(source: &str) -> Vec<(Piece, &str)> {
    let mut out: Vec<(Piece, &str)> = Vec::new();
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let rest = &source[i..];
        let (piece, len) = if let Some(block) = rest.strip_prefix("\"\"\"") {
            let end = block.find("\"\"\"").map_or(rest.len(), |e| e + 6);
            (Piece::Literal, end)
        } else if rest.starts_with('"') || rest.starts_with('/') {
            (Piece::Literal, quoted_len(rest))
        } else if rest.starts_with('#') {
            (Piece::Comment, rest.find('\n').unwrap_or(rest.len()))
        } else if rest.starts_with([' ', '\t', '\n', '\r']) {
            let len = rest
                .find(|c: char| !matches!(c, ' ' | '\t' | '\n' | '\r'))
                .unwrap_or(rest.len());
            (Piece::Space, len)
        } else {
            let len = rest
                .find(['"', '/', '#', ' ', '\t', '\n', '\r'])
                .unwrap_or(rest.len());
            (Piece::Code, len)
        };
        out.push((piece, &rest[..len]));
        i += len;
    }
    out
}

/// The length of a `"..."` string or `/.../` regex at the start of `s`, escapes included.
fn quoted_len(s: &str) -> usize {
    let quote = s.as_bytes()[0];
    let bytes = s.as_bytes();
    let mut i = 1;
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

/// The source on one line: no comments, one space wherever there was white space.
fn squashed(source: &str) -> String {
    let mut out = String::new();
    for (piece, text) in pieces(source) {
        match piece {
            Piece::Comment => {}
            Piece::Space => {
                if !out.ends_with(' ') {
                    out.push(' ');
                }
            }
            Piece::Code | Piece::Literal => out.push_str(text),
        }
    }
    out
}

/// The source with every comment's words replaced.
fn comments_replaced(source: &str, with: &str) -> String {
    pieces(source)
        .into_iter()
        .map(|(piece, text)| if piece == Piece::Comment { with } else { text })
        .collect()
}

/// The source with every run of white space replaced.
fn spaces_replaced(source: &str, with: &str) -> String {
    pieces(source)
        .into_iter()
        .map(|(piece, text)| if piece == Piece::Space { with } else { text })
        .collect()
}

/// One change of layout, applied before a run of white space.
#[derive(Clone, Debug)]
enum Edit {
    Spaces(usize),
    Tab,
    BlankLines(usize),
    LineBreak {
        indent: usize,
    },
    Comment(String),
    CommentLine {
        indent: usize,
        words: String,
    },
    /// The run becomes one space (unless it ends a comment).
    Collapse,
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (1usize..6).prop_map(Edit::Spaces),
        Just(Edit::Tab),
        (1usize..4).prop_map(Edit::BlankLines),
        (0usize..12).prop_map(|indent| Edit::LineBreak { indent }),
        "\\PC{0,20}".prop_map(Edit::Comment),
        ((0usize..12), "\\PC{0,20}")
            .prop_map(|(indent, words)| Edit::CommentLine { indent, words }),
        Just(Edit::Collapse),
    ]
}

/// `source` with `edits` applied to its runs of white space (edit `i` to run `at + i`,
/// round the file), plus a comment at the very end.
fn relaid(source: &str, at: usize, edits: &[Edit], last_comment: &str) -> String {
    let pieces = pieces(source);
    let spaces: Vec<usize> = (0..pieces.len())
        .filter(|&i| pieces[i].0 == Piece::Space)
        .collect();
    let mut edit_of = vec![None; pieces.len()];
    if !spaces.is_empty() {
        for (n, e) in edits.iter().enumerate() {
            edit_of[spaces[(at + n) % spaces.len()]] = Some(e);
        }
    }
    let mut out = String::new();
    for (i, (_, text)) in pieces.iter().enumerate() {
        let after_comment = i > 0 && pieces[i - 1].0 == Piece::Comment;
        match edit_of[i] {
            None => out.push_str(text),
            Some(Edit::Spaces(n)) => out.push_str(&format!("{}{text}", " ".repeat(*n))),
            Some(Edit::Tab) => out.push_str(&format!("\t{text}")),
            Some(Edit::BlankLines(n)) => out.push_str(&format!("{}{text}", "\n".repeat(*n))),
            Some(Edit::LineBreak { indent }) => {
                out.push_str(&format!("\n{}{text}", " ".repeat(*indent)));
            }
            Some(Edit::Comment(words)) => out.push_str(&format!(" #{words}\n{text}")),
            Some(Edit::CommentLine { indent, words }) => {
                out.push_str(&format!("\n{}# {words}\n{text}", " ".repeat(*indent)));
            }
            Some(Edit::Collapse) if after_comment => out.push_str(text),
            Some(Edit::Collapse) => out.push(' '),
        }
    }
    out.push_str(&format!("\n# {last_comment}"));
    out
}

// ---------------------------------------------------------------------- tests

#[test]
fn the_shape_ignores_spans_and_nothing_else() {
    let a = parse_clean("flow f { state s { send \"a\" end } }", "a");
    let b = parse_clean(
        "flow f {\n  # x\n  state s {\n    send \"a\"\n    end\n  }\n}",
        "b",
    );
    let c = parse_clean("flow f { state s { send \"b\" end } }", "c");
    let d = parse_clean("flow f { state s { send \"a\" } }", "d");
    assert_ne!(format!("{a:?}"), format!("{b:?}"), "the spans differ");
    assert_eq!(shape(&a), shape(&b));
    assert_ne!(shape(&a), shape(&c));
    assert_ne!(shape(&a), shape(&d));
    assert!(!shape(&a).contains("start:"), "{}", shape(&a));
}

#[test]
fn the_rich_flow_parses_clean_and_uses_every_construct() {
    let file = parse_clean(RICH, "RICH");
    let debug = format!("{file:?}");
    for construct in [
        "Send {",
        "template: Some",
        "SendOneOf",
        "Reply(",
        "Hide",
        "Review(",
        "Ask(",
        "Set {",
        "Tag(",
        "Emit {",
        "Handoff {",
        "End",
        "Goto(",
        "value: Text,",
        "value: Number,",
        "value: Email,",
        "value: Phone,",
        "value: Regex(Regex",
        "value: Choice(",
        "Exact(",
        "Contains(",
        "Matches(",
        "Intent(",
        "Sentiment {",
        "Any",
        "Or(",
        "And(",
        "Not(",
        "Has(",
        "Compare {",
        "Number(",
        "String(",
        "Released",
        "Replied",
        "After(",
        "Message(None",
        "Comment(None",
        "Message(Some",
        "Comment(Some",
        "Event(Spanned",
        "Always",
        "Never",
        "After(Duration",
        "Marketing",
        "Transactional",
        "fallback: Some",
    ] {
        assert!(debug.contains(construct), "RICH has no {construct}");
    }
}

#[test]
fn printing_keeps_the_whole_tree() {
    for (name, source) in sources() {
        let file = parse_clean(source, name);
        let printed = format_file(&file);
        let reparsed = parse_clean(&printed, &format!("{name}, printed"));
        assert_eq!(
            shape(&file),
            shape(&reparsed),
            "{name}: printing changed the tree. Printed:\n{printed}"
        );
        assert_eq!(file.flows.len(), reparsed.flows.len());
    }
}

#[test]
fn printing_is_idempotent() {
    for (name, source) in sources() {
        let once = canonical(source, name);
        let twice = canonical(&once, &format!("{name}, printed"));
        assert_eq!(once, twice, "{name}");
    }
}

#[test]
fn a_file_is_its_flows_one_blank_line_apart() {
    let file = parse_clean(RICH, "RICH");
    let flows: Vec<String> = file.flows.iter().map(format_flow).collect();
    assert_eq!(format_file(&file), flows.join("\n"));
    assert!(flows
        .iter()
        .all(|f| f.ends_with("}\n") && !f.ends_with("\n\n")));
    assert_eq!(format_file(&FlowFile::default()), "");
}

#[test]
fn the_canonical_form_of_the_design_example() {
    let printed = canonical(SPEC_EXAMPLE, "SPEC_EXAMPLE");
    assert_eq!(printed, SPEC_EXAMPLE_CANONICAL, "printed:\n{printed}");
}

#[test]
fn leaves_print_in_canonical_form() {
    let printed = canonical(RICH, "RICH");
    for line in [
        "  rollout 1% -> 25% -> 100% every 1d",
        "  expire after 1h",
        "  reentry after 90m",
        "  halt when opt_out_rate > 2% or handoff_rate >= 30.5% or bounce_rate < 0.5% or spam_rate <= 0.05% or x == 12.34% after 200 runs",
        "  title \"Every \\\"construct\\\" \\\\ here\\tand a\\nline break\"",
        "  start on comment matches /https?:\\/\\/[a-z]+\\/x\\\\/",
        "  start on message \"hi\", \"hello \\\"you\\\"\" when visits >= 3.5",
        "  start on message sentiment < -0.6",
        "  start on message any when a == 1 or (b == 2 or c == 3) or (d == 4 and e == 5) and f == 6",
        "  start on event cart.abandoned when event.total > 100 and not has coupon or channel == \"sms\" and not (tier != \"b\\\"c\\\\d\" or score <= -0.25)",
        "    send \"Hi {first_name|there}, {{literal}} }} {{{event.cart_url}}} {a.b.c|x y: \\\"z\\\"}\"",
        "        Line one \"quoted\" and \"\\\"double\"\\\" and \"\\\"\\\"\\\"quadruple\"\\\"\\\"\\\"",
        "          indented line",
        "        back\\\\slash {y|fallback here}, tab\\there",
        "    emit crm.lead with a = \"b\", c = \"\"\"",
        "    \"\"\", d = \"{d}\"",
        "      expect /^\\d+(\\/\\d+)?$/",
        "      expect choice { \"1\" = \"one\", \"2\" = \"two\", \"\\\"3\\\"\" = \"thr\\\\ee\" }",
        "    after 30s -> third",
        "    after 2m -> third",
        "    after 90m -> third",
        "    after 2d -> third",
        "  state ninth { hide }",
        "  state empty {}",
        "    send \"  every line\\n  indented: one line\"",
        "    send \"trailing  \\nspaces: one line\"",
        "    send \"\\n\"",
        "    send \"\"",
        "flow bare {}",
        "flow never_again {",
    ] {
        assert!(
            printed.lines().any(|l| l == line),
            "no line `{line}` in:\n{printed}"
        );
    }
    for block in [
        "    send \"\"\"\n      one line not indented\n        keeps a block\n    \"\"\"\n",
        "    send \"\"\"\n\n      starts with a line break\n    \"\"\"\n",
        "    send \"\"\"\n      ends with a line break\n\n    \"\"\"\n",
    ] {
        assert!(printed.contains(block), "no\n{block}in:\n{printed}");
    }
    assert!(printed.contains("    send \"\"\"\n      só ünïcode 👟\n      ✓\n    \"\"\"\n"));
    assert!(!printed.contains('#'), "comments are gone:\n{printed}");
}

#[test]
fn a_carriage_return_keeps_text_on_one_line() {
    let source = "flow f { state s {\r\n send \"a carriage return\r\\nstays\"\r\n end } }";
    let printed = canonical(source, "CR");
    assert!(
        printed.contains("    send \"a carriage return\r\\nstays\"\n"),
        "{printed:?}"
    );
    assert_eq!(
        shape(&parse_clean(source, "CR")),
        shape(&parse_clean(&printed, "CR, printed"))
    );
}

#[test]
fn comments_and_layout_do_not_change_the_output() {
    for (name, source) in sources() {
        let want = canonical(source, name);
        let edited = comments_replaced(source, "# edited: a different comment");
        assert_ne!(&edited, source, "{name} has comments to edit");
        assert_eq!(canonical(&edited, name), want, "{name}: comments edited");
        let uncommented = comments_replaced(source, "");
        assert_eq!(
            canonical(&uncommented, name),
            want,
            "{name}: comments removed"
        );
        let one_line = squashed(source);
        assert_eq!(canonical(&one_line, name), want, "{name}: on one line");
        let spread = spaces_replaced(&one_line, "\n\n   # a comment\n\t ");
        assert_eq!(canonical(&spread, name), want, "{name}: one token a line");
    }
}

#[test]
fn editing_a_string_does_change_the_output() {
    let (name, source) = &sources()[0];
    let want = canonical(source, name);
    let edited = source.replacen("\"Hi ", "\"Hello ", 1);
    assert_ne!(&edited, source);
    assert_ne!(canonical(&edited, name), want);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn relaid_flows_print_the_same(
        which in 0usize..64,
        at in 0usize..10_000,
        edits in proptest::collection::vec(edit(), 1..40),
        last_comment in "\\PC{0,20}",
    ) {
        let (name, source) = &sources()[which % sources().len()];
        let relaid = relaid(source, at, &edits, &last_comment);
        let parsed = parse(&relaid);
        prop_assert!(parsed.diagnostics.is_empty(), "{name}: {:#?}\n{relaid}", parsed.diagnostics);
        prop_assert_eq!(format_file(&parsed.file), canonical(source, name), "{}:\n{}", name, relaid);
    }
}

/// What `rapport fmt` writes for `source`.
fn formatted(source: &str) -> (String, FlowFile, Vec<String>) {
    let parsed = parse(source);
    let placed = notes(source, &parsed.file).expect("parses whole");
    let mut comments = placed.all.clone();
    comments.sort();
    (
        format_file_with(&parsed.file, &placed),
        parsed.file,
        comments,
    )
}

#[test]
fn formatting_the_examples_keeps_their_comments_and_meaning_and_is_stable() {
    for (name, source) in sources() {
        let (once, tree, comments) = formatted(source);
        let (twice, again, comments_again) = formatted(&once);
        assert_eq!(twice, once, "{name}: formatting twice changes it");
        assert_eq!(
            shape(&again),
            shape(&tree),
            "{name}: the formatted text says something else"
        );
        assert_eq!(comments_again, comments, "{name}: comments changed");
        assert_eq!(
            format_file(&again),
            format_file(&tree),
            "{name}: the version would change"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any layout of any example, with comments anywhere: `rapport fmt` keeps every
    /// comment, says the same, and gives text it would leave as it is.
    #[test]
    fn formatting_keeps_every_comment_and_is_idempotent(
        which in 0usize..64,
        at in 0usize..10_000,
        edits in proptest::collection::vec(edit(), 1..40),
        last_comment in "\\PC{0,20}",
    ) {
        let (name, source) = &sources()[which % sources().len()];
        let relaid = relaid(source, at, &edits, &last_comment);
        let (once, tree, comments) = formatted(&relaid);
        let reparsed = parse(&once);
        prop_assert!(reparsed.diagnostics.is_empty(), "{name}: {:#?}\n{once}", reparsed.diagnostics);
        let (twice, again, comments_again) = formatted(&once);
        prop_assert_eq!(shape(&again), shape(&tree), "{}: says something else:\n{}", name, once);
        prop_assert_eq!(comments_again, comments, "{}: comments changed:\n{}\n---\n{}", name, relaid, once);
        prop_assert_eq!(twice, once.clone(), "{}: not stable:\n{}\n--- from ---\n{}", name, once, relaid);
    }
}
