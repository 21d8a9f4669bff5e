//! `rapport run` through its front door, on the funnel workload of `bench/funnel/`
//! (a fixed stream of 200 contacts from `bench/gen_events.py --contacts 200
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

/// The funnel bundle, built once for all the tests of this file (they run in parallel).
fn funnel_bundle() -> PathBuf {
    static BUNDLE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUNDLE
        .get_or_init(|| {
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
        })
        .clone()
}

/// Action lines grouped by contact, each contact's in output order: across contacts the
/// interleaving is not specified (contacts run on several workers).
fn per_contact(stdout: &[u8]) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut map: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for line in String::from_utf8_lossy(stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("an action is JSON");
        let contact = v["contact"].as_str().unwrap_or("").to_string();
        map.entry(contact).or_default().push(line.to_string());
    }
    map
}

#[test]
fn sharded_runs_give_each_contact_the_same_actions_as_one_worker() {
    let bundle = funnel_bundle();
    let b = bundle.to_str().expect("utf-8");
    let events = "bench/funnel/events-200.jsonl";
    let one = rapport(
        &["run", "--bundle", b, "--events", events, "--shards", "1"],
        None,
    );
    let four = rapport(
        &["run", "--bundle", b, "--events", events, "--shards", "4"],
        None,
    );
    let (one, four) = (per_contact(&one.stdout), per_contact(&four.stdout));
    assert!(one.len() > 100, "{} contacts", one.len());
    assert!(
        one == four,
        "a contact's actions differ between one worker and four"
    );
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
    assert!(
        per_contact(&first.stdout) == per_contact(&second.stdout),
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
    assert_eq!(per_contact(&once.stdout), per_contact(&twice.stdout));
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

#[test]
fn a_line_that_is_not_utf8_is_rejected_and_the_run_goes_on() {
    let bundle = funnel_bundle();
    let events = temp("not-utf8.jsonl");
    let mut bytes = br#"{"id":"e1","at":"2026-11-24T10:00:00Z","contact":"c1","channel":"instagram","type":"message","text":"hi"}"#.to_vec();
    bytes.extend_from_slice(b"\n\xff\xfe{\"id\":\"e2\"}\n");
    bytes.extend_from_slice(br#"{"id":"e3","at":"2026-11-24T10:01:00Z","contact":"c1","channel":"instagram","type":"message","text":"1"}"#);
    bytes.push(b'\n');
    std::fs::write(&events, bytes).expect("write events");
    let args = [
        "run",
        "--bundle",
        path_str(&bundle),
        "--events",
        path_str(&events),
    ];
    for extra in [&[][..], &["--shards", "1"][..]] {
        let o = rapport(&[&args[..], extra].concat(), None);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{err}");
        assert!(err.contains("line 2: rejected: not a JSON event"), "{err}");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains("Which category"),
            "the line after it was processed: {out}"
        );
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// The scenario suites: the example project (every state and transition covered), the
/// rule-by-rule project of the runtime's rules, and the funnel workload.
#[test]
fn scenario_suites_pass_with_full_coverage_of_the_examples() {
    for dir in ["flows", "tests/scenarios", "bench/funnel"] {
        let o = rapport(&["test", dir], None);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(0),
            "rapport test {dir}:\n{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(out.contains(" passed, 0 failed"), "{out}");
        if dir == "flows" {
            for line in out.lines().filter(|l| l.contains(" states ")) {
                assert!(
                    !line.contains("never reached"),
                    "example coverage is incomplete: {line}"
                );
            }
        }
    }
}

/// `expected` (a partial object; `/.../` strings are regexes) matches `actual`.
fn partial_match(expected: &serde_json::Value, actual: &serde_json::Value) -> bool {
    use serde_json::Value;
    match expected {
        Value::Object(map) => actual.as_object().is_some_and(|a| {
            map.iter().all(|(k, v)| match v {
                Value::Null => a.get(k).is_none_or(Value::is_null),
                _ => a.get(k).is_some_and(|x| partial_match(v, x)),
            })
        }),
        Value::String(s) if s.len() >= 2 && s.starts_with('/') && s.ends_with('/') => {
            let text = match actual {
                Value::String(t) => t.clone(),
                other => other.to_string(),
            };
            regex::Regex::new(&s[1..s.len() - 1]).is_ok_and(|re| re.is_match(&text))
        }
        Value::Number(n) => actual.as_f64().is_some_and(|a| Some(a) == n.as_f64()),
        Value::String(s) => match actual {
            Value::String(a) => a == s,
            other => &other.to_string() == s,
        },
        other => other == actual,
    }
}

/// The rules `*.test.yaml` cannot express (duplicate ids, rejected lines, events older
/// than the clock, the consent ledger's order), through `rapport run` on JSONL:
/// `tests/scenarios/run/cases.yaml`.
#[test]
fn jsonl_rule_cases() {
    use serde_json::Value;
    let text = std::fs::read_to_string(repo_root().join("tests/scenarios/run/cases.yaml"))
        .expect("cases.yaml");
    let doc: Value = serde_yaml::from_str(&text).expect("cases.yaml is YAML");
    let out = temp("scenarios.json");
    let o = rapport(
        &[
            "build",
            "tests/scenarios",
            "-o",
            out.to_str().expect("utf-8"),
        ],
        None,
    );
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mut failures = Vec::new();
    let cases = doc["cases"].as_array().cloned().unwrap_or_default();
    assert!(cases.len() >= 8, "the cases are there");
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?").to_string();
        let lines: Vec<String> = case["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| match e {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        let audit_path = temp(&format!(
            "audit-{}.jsonl",
            name.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
        ));
        let o = rapport(
            &[
                "run",
                "--bundle",
                out.to_str().expect("utf-8"),
                "--audit",
                audit_path.to_str().expect("utf-8"),
            ],
            Some(&(lines.join("\n") + "\n")),
        );
        let actions: Vec<Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let audit: Vec<Value> = std::fs::read_to_string(&audit_path)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
        let expected = case["expect"].as_array().cloned().unwrap_or_default();
        if o.status.code() != Some(case["exit"].as_i64().unwrap_or(0) as i32) {
            failures.push(format!("{name}: exit status {:?}", o.status.code()));
        }
        if expected.len() != actions.len()
            || !expected
                .iter()
                .zip(&actions)
                .all(|(e, a)| partial_match(e, a))
        {
            failures.push(format!(
                "{name}: actions differ\n  expected {expected:?}\n  actual {actions:?}"
            ));
        }
        let mut from = 0;
        for e in case["audit"].as_array().cloned().unwrap_or_default() {
            match audit[from..].iter().position(|a| partial_match(&e, a)) {
                Some(p) => from += p + 1,
                None => {
                    failures.push(format!("{name}: audit record {e} not found in order"));
                    break;
                }
            }
        }
        let mut pos = 0;
        for s in case["stderr"].as_array().cloned().unwrap_or_default() {
            let s = s.as_str().unwrap_or("");
            match stderr[pos..].find(s) {
                Some(i) => pos += i + s.len(),
                None => {
                    failures.push(format!("{name}: stderr lacks {s:?}:\n{stderr}"));
                    break;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Ctrl-C stops reading; what was read is processed and written before the exit.
#[test]
fn ctrl_c_drains_and_flushes() {
    let bundle = funnel_bundle();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["run", "--bundle", bundle.to_str().expect("utf-8")])
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rapport runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let line = r#"{"id":"e1","at":"2026-11-24T10:00:00Z","contact":"c1","channel":"instagram","type":"message","text":"hi"}"#;
    writeln!(stdin, "{line}").expect("write");
    stdin.flush().expect("flush");
    // Give the reader time to take the line, then interrupt with stdin still open.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let out = child.wait_with_output().expect("rapport exits");
    drop(stdin);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(
        stdout.contains("Welcome to Acme Shoes"),
        "the action of the line read was written: {stdout}"
    );
}
