//! The parser never panics, whatever the input, and every diagnostic points inside the
//! source at character boundaries (so rendering it cannot fail either).

use proptest::prelude::*;
use rapport_syntax::{parse, parse_settings, Diagnostic};

const VALID: &str = r#"
flow cart_recovery {
  title    "Abandoned cart recovery"
  purpose  marketing
  channels whatsapp, instagram
  start on event cart.abandoned when event.total > 100 and not has coupon
  priority 10
  rollout  5% -> 25% -> 100% every 24h
  halt when opt_out_rate > 2% or handoff_rate > 30% after 200 runs
  goal     order.placed within 7d
  on reply "agent", "human" -> handoff
  state waiting { after 1h -> remind }
  state remind {
    send "Hi {first_name|there}, {{code}} {event.cart_url}" or template cart_v2 with url = "{event.cart_url}"
    send one of { a: "A", b: """
      B
    """ }
    ask size "Size?" expect /^\d+$/ retry 2 "Numbers only" then -> done else -> handoff
  }
  state handoff { handoff support summary "x" sla 1h  on agent released -> done }
  state done { tag "x" emit crm.lead with a = "b" end }
}
"#;

/// Words and symbols of the language, to build inputs that get deep into the grammar.
const VOCABULARY: &[&str] = &[
    "flow",
    "state",
    "x",
    "{",
    "}",
    "send",
    "\"hi\"",
    "\"{a|b}\"",
    "->",
    "on",
    "reply",
    "event",
    "after",
    "1h",
    "0h",
    "2w",
    "ask",
    "then",
    "else",
    "expect",
    "choice",
    "=",
    "/re/",
    "/(/",
    "or",
    "and",
    "not",
    "(",
    ")",
    "has",
    "==",
    "5%",
    "150%",
    "rollout",
    "halt",
    "when",
    "start",
    "message",
    "comment",
    "\"\"\"",
    "#",
    "\n",
    " ",
    ",",
    ":",
    "end",
    "handoff",
    "summary",
    "sla",
    "one",
    "of",
    "template",
    "with",
    "\\",
    "é",
    "\"",
];

fn assert_sound(source: &str, diagnostics: &[Diagnostic]) {
    for d in diagnostics {
        for l in &d.labels {
            assert!(l.span.start <= l.span.end, "{d:?}");
            assert!(l.span.end <= source.len(), "span past the end: {d:?}");
            assert!(source.is_char_boundary(l.span.start), "{d:?}");
            assert!(source.is_char_boundary(l.span.end), "{d:?}");
        }
        assert!(!d.message.is_empty());
    }
}

fn mutate(source: &str, at: usize, len: usize, insert: &str) -> String {
    let mut at = at % (source.len() + 1);
    while !source.is_char_boundary(at) {
        at -= 1;
    }
    let mut end = (at + len).min(source.len());
    while !source.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{}{}", &source[..at], insert, &source[end..])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_text(source in "\\PC{0,200}") {
        let parsed = parse(&source);
        assert_sound(&source, &parsed.diagnostics);
    }

    #[test]
    fn soups_of_language_words(words in proptest::collection::vec(proptest::sample::select(VOCABULARY), 0..60)) {
        let source = words.join(" ");
        let parsed = parse(&source);
        assert_sound(&source, &parsed.diagnostics);
    }

    #[test]
    fn mutated_valid_flows(at in 0usize..2000, len in 0usize..12, insert in proptest::sample::select(VOCABULARY)) {
        let source = mutate(VALID, at, len, insert);
        let parsed = parse(&source);
        assert_sound(&source, &parsed.diagnostics);
    }

    #[test]
    fn arbitrary_settings(source in "[a-z_:{}\\[\\], \\n\"0-9#-]{0,120}") {
        let parsed = parse_settings(&source);
        assert_sound(&source, &parsed.diagnostics);
    }
}

#[test]
fn the_valid_flow_parses_clean() {
    let parsed = parse(VALID);
    assert!(parsed.diagnostics.is_empty(), "{:#?}", parsed.diagnostics);
    assert_eq!(parsed.file.flows.len(), 1);
    assert_eq!(parsed.file.flows[0].states.len(), 4);
}

#[test]
fn deep_nesting_is_a_diagnostic_not_a_stack_overflow() {
    for depth in [33, 10_000, 200_000] {
        let source = format!(
            "flow f {{ start on message when {}channel == \"x\"{} state s {{ end }} }}",
            "(".repeat(depth),
            ")".repeat(depth)
        );
        let parsed = parse(&source);
        assert!(parsed.has_errors());
        assert!(parsed.diagnostics[0].message.contains("nest too deeply"));
    }
    let ok = "flow f { start on message when ((channel == \"x\")) state s { end } }";
    assert!(!parse(ok).has_errors());
    let nots = format!(
        "flow f {{ start on message when {} has x state s {{ end }} }}",
        "not ".repeat(100_000)
    );
    assert!(parse(&nots).has_errors());
}

/// Found by the fuzzer: a block left open where the next flow starts, followed by more
/// flows, made recovery slice the source backwards.
#[test]
fn unclosed_block_before_later_flows() {
    let sources = [
        "flow a {\n  state s {\n    send \"x\"\nflow b {\n  state t { end }\n}\nflow c { state u { end } }\n",
        "# c\nflow a {\n  on reply \"x\" -> s\n  state s {\nflow b {\nflow c {\n  state t { end }\n}\n",
        "flow a { state s { end }\nflow b { state t { end } }\n}\n}\n",
    ];
    for source in sources {
        let parsed = parse(source);
        assert!(parsed.has_errors(), "{source}");
        assert_sound(source, &parsed.diagnostics);
    }
    let crash = include_str!("fuzz_regressions/unclosed_block_before_flow.flow");
    assert_sound(crash, &parse(crash).diagnostics);
}

/// Found by the fuzzer: YAML counts U+2028 as a line break, `str::lines` does not.
#[test]
fn settings_spans_stay_on_character_boundaries() {
    for source in [
        "%fffffffffffaoky\u{2028}",
        "brand: x\u{2028}y: [",
        "a\u{2028}: b\u{85}c",
    ] {
        assert_sound(source, &parse_settings(source).diagnostics);
    }
}

/// Found by the proptest: the word before an error ended just after a wide character.
#[test]
fn the_word_before_an_error_may_follow_a_wide_character() {
    for source in [
        "{/\u{1FADF}A#/}\u{0A13}",
        "flow \u{1FAE0}a {",
        "state é\u{1FAE0}x -> {",
    ] {
        let parsed = parse(source);
        assert_sound(source, &parsed.diagnostics);
    }
}
