//! `rapport run` through its front door, on the funnel workload of `bench/funnel/`
//! (a fixed stream of 200 contacts from `shared/bench/gen_events.py --contacts 200
//! --seed 7`, kept in the repository).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn repo_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn rapport(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the rapport binary runs");
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).expect("write stdin");
    }
    child.wait_with_output().expect("rapport finishes")
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rapport-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join(name)
}

fn funnel_bundle() -> PathBuf {
    let out = temp("funnel.json");
    let o = rapport(
        &["build", "bench/funnel", "-o", out.to_str().expect("utf-8")],
        None,
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// The count lines printed at the end, without the timing.
fn counts(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with("processed "))
        .filter(|l| !l.starts_with("line "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_funnel_workload_counts_are_pinned() {
    let bundle = funnel_bundle();
    let o = rapport(
        &[
            "run",
            "--bundle",
            bundle.to_str().expect("utf-8"),
            "--events",
            "bench/funnel/events-200.jsonl",
        ],
        None,
    );
    assert_eq!(o.status.code(), Some(0));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("processed 1050 events"), "{err}");
    insta::assert_snapshot!("funnel_200_counts", counts(&err));
}

#[test]
fn replaying_the_same_events_gives_the_same_actions() {
    let bundle = funnel_bundle();
    let b = bundle.to_str().expect("utf-8");
    let first = rapport(
        &[
            "run",
            "--bundle",
            b,
            "--events",
            "bench/funnel/events-200.jsonl",
        ],
        None,
    );
    let second = rapport(
        &[
            "run",
            "--bundle",
            b,
            "--events",
            "bench/funnel/events-200.jsonl",
        ],
        None,
    );
    assert!(!first.stdout.is_empty());
    assert_eq!(
        first.stdout, second.stdout,
        "actions differ between two runs of the same stream"
    );
}

#[test]
fn a_redelivered_event_changes_nothing() {
    let bundle = funnel_bundle();
    let b = bundle.to_str().expect("utf-8");
    let events =
        std::fs::read_to_string(repo_root().join("bench/funnel/events-200.jsonl")).expect("events");
    // Every line delivered twice, the copy right after the original.
    let doubled: String = events.lines().flat_map(|l| [l, "\n", l, "\n"]).collect();
    let once = rapport(&["run", "--bundle", b], Some(&events));
    let twice = rapport(&["run", "--bundle", b], Some(&doubled));
    assert_eq!(once.stdout, twice.stdout);
}

#[test]
fn bad_lines_are_reported_with_their_number_and_skipped() {
    let bundle = funnel_bundle();
    let b = bundle.to_str().expect("utf-8");
    let input = [
        r#"{"id":"e1","at":"2026-11-24T10:00:00Z","contact":"c1","channel":"instagram","type":"message","text":"hi"}"#,
        "this is not json",
        r#"{"id":"e2","at":"yesterday","contact":"c1","type":"message","text":"1"}"#,
        r#"{"id":"e3","at":"2026-11-24T10:01:00Z","contact":"c1","type":"event","name":"cart.abandoned","data":{"product_name":"X"}}"#,
        r#"{"at":"2026-11-24T10:02:00Z","contact":"c1","type":"message","text":"1"}"#,
        r#"{"id":"e4","at":"2026-11-24T10:03:00Z","contact":"c1","channel":"instagram","type":"message","text":"1"}"#,
    ]
    .join("\n");
    let o = rapport(&["run", "--bundle", b], Some(&input));
    assert_eq!(
        o.status.code(),
        Some(0),
        "rejected lines do not change the exit status"
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("line 2: rejected: not a JSON event"), "{err}");
    assert!(
        err.contains("line 3: rejected: `at` is not an RFC 3339 time"),
        "{err}"
    );
    assert!(
        err.contains("line 4: rejected: `cart.abandoned` needs the field `cart_url`"),
        "{err}"
    );
    assert!(err.contains("line 5: rejected: missing `id`"), "{err}");
    assert!(err.contains("4 rejected"), "{err}");
    let out = String::from_utf8_lossy(&o.stdout);
    // The lines around the bad ones were processed: the welcome, then the category question.
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("Which category"), "{out}");
}
