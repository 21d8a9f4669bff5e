//! `rapport test` reads `*.test.yaml` strictly (docs/language.md, "Limits"): unknown keys
//! are errors with their line, a step's event is validated as `rapport run` validates an
//! event line, and a failure after a refused enrolment says why.

use std::path::Path;
use std::process::{Command, Output};

const SETTINGS: &str = "brand: Acme Shoes
channels:
  whatsapp: { window: 24h }
events:
  cart.abandoned: { cart_url: string, cart_total: number }
";

const CART: &str = "flow cart_recovery {
  purpose marketing
  start on event cart.abandoned
  state remind { send \"Your cart is waiting: {event.cart_url}\" end }
}
";

fn project(test_yaml: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a scratch folder");
    let write = |name: &str, text: &str| {
        std::fs::write(dir.path().join(name), text).expect("the scratch folder is writable")
    };
    write("rapport.yaml", SETTINGS);
    write("cart_recovery.flow", CART);
    write("cart_recovery.test.yaml", test_yaml);
    dir
}

fn rapport_test(dir: &Path) -> (Option<i32>, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["test", "."])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("the rapport binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn a_misspelt_expect_is_an_error_with_its_line() {
    let dir = project(
        "flow: cart_recovery
contact: { id: c1, channel: whatsapp }
cases:
  - name: the reminder goes out
    steps:
      - consent: { purpose: marketing, granted: true }
      - event: cart.abandoned
        data: { cart_url: \"https://acme.example/c/1\", cart_total: 10 }
        expects:
          - send: \"this text is wrong, and nothing would check it\"
",
    );
    let (code, out) = rapport_test(dir.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("./cart_recovery.test.yaml:9:9: unknown key `expects` in an `event` step"),
        "{out}"
    );
    assert!(out.contains("help: did you mean `expect`?"), "{out}");
    assert!(out.contains("test result: 0 passed, 0 failed"), "{out}");
}

#[test]
fn unknown_keys_are_found_at_every_level() {
    let dir = project(
        "flow: cart_recovery
contact: { id: c1, chanel: whatsapp }
cases:
  - name: the reminder goes out
    step:
      - message: hi
  - name: an expectation with a typo
    steps:
      - consent: { purpose: marketing, grantd: true }
      - event: cart.abandoned
        data: { cart_url: \"https://acme.example/c/1\", cart_total: 10 }
        expect: [ { sned: \"Your cart is waiting: https://acme.example/c/1\" } ]
",
    );
    let (code, out) = rapport_test(dir.path());
    assert_eq!(code, Some(1), "{out}");
    for line in [
        ":2:20: unknown key `chanel` in `contact`",
        ":5:5: unknown key `step` in a case",
        ":9:40: unknown key `grantd` in `consent`",
        ":12:21: unknown key `sned` in an expected action",
        "did you mean `send`?",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
}

#[test]
fn a_step_with_an_event_rapport_run_would_reject_is_an_error() {
    let dir = project(
        "flow: cart_recovery
contact: { id: c1, channel: whatsapp }
cases:
  - name: the reminder goes out
    steps:
      - consent: { purpose: marketing, granted: true }
      - event: cart.abandoned
        data: { cart_total: 10 }
        expect: []
",
    );
    let (code, out) = rapport_test(dir.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("./cart_recovery.test.yaml:7:9: `rapport run` would reject this event: `cart.abandoned` needs the field `cart_url`"),
        "{out}"
    );
}

#[test]
fn a_failure_after_a_refused_enrolment_says_why() {
    let dir = project(
        "flow: cart_recovery
contact: { id: c1, channel: whatsapp }
cases:
  - name: the reminder goes out
    steps:
      - event: cart.abandoned
        data: { cart_url: \"https://acme.example/c/1\", cart_total: 10 }
        expect: [ { send: \"Your cart is waiting: https://acme.example/c/1\" } ]
",
    );
    let (code, out) = rapport_test(dir.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("FAILED"), "{out}");
    assert!(
        out.contains("note: the contact was not enrolled in `cart_recovery`: no_consent"),
        "{out}"
    );
}

#[test]
fn a_correct_file_passes() {
    let dir = project(
        "flow: cart_recovery
contact: { id: c1, channel: whatsapp }
cases:
  - name: the reminder goes out
    steps:
      - consent: { purpose: marketing, granted: true }
      - message: \"hi\"
      - event: cart.abandoned
        data: { cart_url: \"https://acme.example/c/1\", cart_total: 10 }
        expect: [ { send: \"/Your cart is waiting: https:..acme.example.c.1/\" } ]
",
    );
    let (code, out) = rapport_test(dir.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("test result: 1 passed, 0 failed"), "{out}");
}
