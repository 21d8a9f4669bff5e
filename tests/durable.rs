//! `rapport run --store` through its front door: a host killed at random points and
//! restarted on the same input releases exactly the actions of a run that never
//! crashed; and the privacy commands (`audit export`, `forget`, `purge`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod common;
use common::{rapport, repo_root, s};

fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn temp_dir(name: &str) -> PathBuf {
    common::temp_dir("durable", name)
}

/// `rapport audit export CONTACT` on a store, which must succeed, as JSON.
fn export(contact: &str, store: &str) -> serde_json::Value {
    let out = ok(&rapport(&["audit", "export", contact, "--store", store]));
    serde_json::from_str(&out).expect("the export is JSON")
}

/// The URL of a store in `dir`.
fn store_in(dir: &Path) -> String {
    format!("sqlite:{}", s(&dir.join("store.db")))
}

/// Whether the store's files (database and write-ahead log) hold `needle` anywhere.
fn store_files_contain(dir: &Path, needle: &str) -> bool {
    let mut bytes = std::fs::read(dir.join("store.db")).expect("store file");
    bytes.extend(std::fs::read(dir.join("store.db-wal")).unwrap_or_default());
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn build_funnel(dir: &Path) -> PathBuf {
    let bundle = dir.join("funnel.json");
    ok(&rapport(&["build", "bench/funnel", "-o", s(&bundle)]));
    bundle
}

/// Action lines by id; every line of one id must be the same.
fn by_id(path: &Path) -> (BTreeMap<String, String>, usize) {
    let text = std::fs::read_to_string(path).expect("actions file");
    let mut map: BTreeMap<String, String> = BTreeMap::new();
    let mut repeats = 0;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("a released action is not whole JSON ({e}): {line}"));
        let id = v["id"]
            .as_str()
            .expect("every action has an id")
            .to_string();
        if let Some(before) = map.insert(id.clone(), line.to_string()) {
            assert_eq!(
                before, line,
                "action {id} was released twice with different content"
            );
            repeats += 1;
        }
    }
    (map, repeats)
}

/// The workload of the crash test: the funnel stream of 1,000 contacts (about 5,000
/// events, with `after` timers and cart reminders firing as the clock moves).
fn funnel_events(dir: &Path) -> PathBuf {
    let gen = repo_root().join("bench/gen_events.py");
    let out = Command::new("python3")
        .arg(&gen)
        .args(["--contacts", "1000", "--seed", "7"])
        .output()
        .unwrap_or_else(|e| panic!("python3 {} runs: {e}", gen.display()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join("events.jsonl");
    std::fs::write(&path, &out.stdout).expect("write events");
    path
}

#[test]
fn killed_at_random_points_the_host_releases_every_action_exactly() {
    let dir = temp_dir("crash");
    let bundle = build_funnel(&dir);
    let events = funnel_events(&dir);

    // The reference: one durable run that never crashes, and the in-memory run.
    let clean_actions = dir.join("clean.jsonl");
    let clean_store = format!("sqlite:{}", s(&dir.join("clean.db")));
    ok(&rapport(&[
        "run",
        "--bundle",
        s(&bundle),
        "--events",
        s(&events),
        "--actions",
        s(&clean_actions),
        "--store",
        &clean_store,
    ]));
    let (expected, repeats) = by_id(&clean_actions);
    assert_eq!(repeats, 0);
    let memory_actions = dir.join("memory.jsonl");
    ok(&rapport(&[
        "run",
        "--bundle",
        s(&bundle),
        "--events",
        s(&events),
        "--actions",
        s(&memory_actions),
    ]));
    assert_eq!(
        by_id(&memory_actions).0,
        expected,
        "the store changes no action"
    );
    assert!(
        expected.values().any(|l| l.contains("\"cause\":\"timer\"")),
        "the stream makes timers fire"
    );

    // The same input, killed with SIGKILL at pseudo-random points (a fixed seed), then
    // restarted, until 20 kills have landed while the host was working.
    let actions = dir.join("crashed.jsonl");
    let store = format!("sqlite:{}", s(&dir.join("crashed.db")));
    let args = [
        "run",
        "--bundle",
        s(&bundle),
        "--events",
        s(&events),
        "--actions",
        s(&actions),
        "--store",
        &store,
        "--commit-every",
        "2",
        // A small cache: contacts leave memory and are loaded again, and bursts of due
        // timers are committed in slices, all under the kills.
        "--cache",
        "50",
    ];
    let mut seed: u64 = 0x2545_F491_4F6C_DD1D;
    let mut kills = 0;
    let mut starts = 0;
    let mut redelivered = 0u64;
    let count_redelivered = |stderr: &[u8]| -> u64 {
        String::from_utf8_lossy(stderr)
            .lines()
            .filter_map(|l| {
                l.strip_prefix("redelivering ")?
                    .split_whitespace()
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    loop {
        starts += 1;
        let mut child = Command::new(env!("CARGO_BIN_EXE_rapport"))
            .args(args)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the host");
        if kills < 20 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            std::thread::sleep(Duration::from_millis(5 + seed % 60));
            if child.try_wait().expect("poll").is_none() {
                child.kill().expect("SIGKILL");
                let out = child.wait_with_output().expect("the killed host is reaped");
                redelivered += count_redelivered(&out.stderr);
                kills += 1;
                continue;
            }
        }
        let out = child.wait_with_output().expect("the host ends");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        redelivered += count_redelivered(&out.stderr);
        break;
    }
    assert!(
        kills >= 20,
        "the host finished the input after {kills} kills; the test needs 20 kills while it works"
    );
    let (got, repeats) = by_id(&actions);
    eprintln!(
        "{kills} kills, {starts} starts: {} actions, {repeats} released more than once (same id and content), {redelivered} redelivered from the outbox",
        got.len()
    );
    assert!(
        repeats as u64 <= redelivered,
        "every action released twice came from the outbox of a crashed run"
    );
    let lost: Vec<&String> = expected.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !expected.contains_key(*k)).collect();
    assert!(
        lost.is_empty(),
        "{} actions lost, first: {:?}",
        lost.len(),
        lost.first()
    );
    assert!(
        extra.is_empty(),
        "{} actions extra, first: {:?}",
        extra.len(),
        extra.first()
    );
    assert_eq!(
        got, expected,
        "every action has the content of the crash-free run"
    );
}

/// Runs `events` (JSON lines) on the funnel bundle with a store.
fn run_lines(
    dir: &Path,
    bundle: &Path,
    store: &str,
    name: &str,
    events: &[serde_json::Value],
) -> String {
    let path = dir.join(format!("{name}.jsonl"));
    let text: String = events.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&path, text).expect("write events");
    let actions = dir.join(format!("{name}.actions.jsonl"));
    ok(&rapport(&[
        "run",
        "--bundle",
        s(bundle),
        "--events",
        s(&path),
        "--actions",
        s(&actions),
        "--store",
        store,
    ]));
    std::fs::read_to_string(&actions).expect("actions")
}

fn message(id: &str, at: &str, contact: &str, text: &str) -> serde_json::Value {
    serde_json::json!({"id": id, "at": at, "contact": contact, "channel": "whatsapp",
        "type": "message", "text": text, "profile": {"first_name": "Ana"}})
}

#[test]
fn export_shows_everything_held_and_forget_erases_it_but_keeps_the_opt_out() {
    let dir = temp_dir("privacy");
    let bundle = build_funnel(&dir);
    let store = store_in(&dir);
    let stayed = "ana-4471";
    let left = "bob-9310";
    run_lines(
        &dir,
        &bundle,
        &store,
        "first",
        &[
            serde_json::json!({"id": "p1", "at": "2026-11-24T10:00:00Z", "contact": stayed, "channel": "whatsapp",
            "type": "consent", "purpose": "marketing", "granted": true, "source": "form", "wording": "Offers by DM"}),
            message("p2", "2026-11-24T10:00:01Z", stayed, "hi"),
            message("p3", "2026-11-24T10:00:02Z", left, "hi"),
            message("p4", "2026-11-24T10:00:03Z", left, "STOP"),
        ],
    );

    // Access request: everything about the contact.
    let v = export(stayed, &store);
    assert_eq!(v["contact"], stayed);
    assert_eq!(v["profile"]["first_name"], "Ana");
    assert_eq!(v["consent_ledger"][0]["purpose"], "marketing");
    assert_eq!(v["consent_ledger"][0]["granted"], true);
    assert!(v["runs"].as_array().is_some_and(|r| !r.is_empty()), "{v:#}");
    let transcript = v["transcript"].as_array().expect("transcript");
    assert!(transcript
        .iter()
        .any(|t| t["direction"] == "in" && t["text"] == "hi"));
    assert!(transcript.iter().any(|t| t["direction"] == "out"
        && t["text"]
            .as_str()
            .is_some_and(|x| x.contains("Welcome to Acme Shoes"))));
    assert!(v["audit_trail"]
        .as_array()
        .is_some_and(|a| a.iter().any(|r| r["kind"] == "consent")));
    let v = export(left, &store);
    assert_eq!(v["opted_out"], true);
    assert!(v["opt_out_records"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));

    // Erasure: both contacts.
    let said = ok(&rapport(&["forget", stayed, "--store", &store]));
    assert!(
        said.contains("erased contact") && !said.contains("opt-out list"),
        "{said}"
    );
    let said = ok(&rapport(&["forget", left, "--store", &store]));
    assert!(said.contains("salted hash"), "{said}");
    for who in [stayed, left] {
        let out = rapport(&["audit", "export", who, "--store", &store]);
        if who == stayed {
            assert_eq!(out.status.code(), Some(1), "nothing is held about {who}");
        } else {
            // Only the fact that the erased contact opted out is kept, under a hash.
            let v: serde_json::Value = serde_json::from_str(&ok(&out)).expect("JSON");
            assert_eq!(v["erased_but_opted_out"], true);
            assert_eq!(v["profile"], serde_json::Value::Null);
            assert!(v["transcript"].as_array().is_some_and(Vec::is_empty));
            assert!(v["audit_trail"].as_array().is_some_and(Vec::is_empty));
        }
    }
    // Nothing in the store files names either contact any more (erased rows are
    // overwritten, not only unlinked).
    for who in [stayed, left] {
        assert!(
            !store_files_contain(&dir, who),
            "{who} is still in the store files"
        );
    }

    // They come back: the one who opted out is never messaged; the other starts afresh.
    let actions = run_lines(
        &dir,
        &bundle,
        &store,
        "second",
        &[
            message("q1", "2026-11-25T10:00:00Z", left, "hi"),
            message("q2", "2026-11-25T10:00:01Z", stayed, "hi"),
        ],
    );
    assert!(
        !actions.contains(left),
        "an erased contact who opted out got: {actions}"
    );
    assert!(
        actions.contains(stayed) && actions.contains("Welcome to Acme Shoes"),
        "{actions}"
    );
}

#[test]
fn purge_removes_transcripts_past_their_retention_and_keeps_the_consent_ledger() {
    let dir = temp_dir("purge");
    let bundle = build_funnel(&dir);
    let store = store_in(&dir);
    run_lines(
        &dir,
        &bundle,
        &store,
        "old",
        &[
            serde_json::json!({"id": "o1", "at": "2026-01-01T10:00:00Z", "contact": "old-1", "channel": "whatsapp",
            "type": "consent", "purpose": "marketing", "granted": true, "source": "form", "wording": "Offers"}),
            message("o2", "2026-01-01T10:00:01Z", "old-1", "hi"),
        ],
    );
    // 200 days later (the funnel keeps transcripts for the default 180 days).
    run_lines(
        &dir,
        &bundle,
        &store,
        "new",
        &[message("n1", "2026-07-20T10:00:00Z", "new-1", "hi")],
    );
    let said = ok(&rapport(&["purge", "--store", &store]));
    // The inbound "hi" goes (180 days); the welcome flow's reply is transactional and
    // stays for `retention.transactional` (365 days).
    assert!(said.starts_with("purged 1 transcript lines"), "{said}");
    let v = export("old-1", &store);
    let kept = v["transcript"].as_array().cloned().unwrap_or_default();
    assert_eq!(kept.len(), 1, "{v:#}");
    assert_eq!(kept[0]["direction"], "out");
    assert_eq!(kept[0]["purpose"], "transactional");
    assert_eq!(
        v["consent_ledger"][0]["granted"], true,
        "the consent ledger is kept"
    );
    let v = export("new-1", &store);
    assert_eq!(
        v["transcript"].as_array().map(Vec::len),
        Some(2),
        "recent transcripts stay"
    );
}

#[test]
fn a_file_that_is_not_a_store_is_refused_clearly() {
    let dir = temp_dir("bad");
    let bundle = build_funnel(&dir);
    let junk = dir.join("junk.db");
    std::fs::write(
        &junk,
        "this is not a database, it is a shopping list\n".repeat(200),
    )
    .expect("write");
    let o = rapport(&[
        "run",
        "--bundle",
        s(&bundle),
        "--events",
        "bench/funnel/events-200.jsonl",
        "--actions",
        "-",
        "--store",
        &format!("sqlite:{}", s(&junk)),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("is not a Rapport store"), "{err}");
    let o = rapport(&["run", "--bundle", s(&bundle), "--store", "postgres://x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("give `sqlite:PATH`"));
}

#[test]
fn rollout_status_reads_the_stage_of_each_flow_from_the_store() {
    let dir = temp_dir("rollout");
    let bundle = dir.join("flows.json");
    ok(&rapport(&["build", "flows", "-o", s(&bundle)]));
    let store = store_in(&dir);
    let o = rapport(&[
        "rollout",
        "status",
        "--bundle",
        s(&bundle),
        "--store",
        &store,
    ]);
    // A mistyped path is an error, not a store at its first stage.
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("there is no store at"));
    run_lines(
        &dir,
        &bundle,
        &store,
        "one",
        &[message("r1", "2026-11-24T10:00:00Z", "c1", "hi")],
    );
    let table = ok(&rapport(&[
        "rollout",
        "status",
        "--bundle",
        s(&bundle),
        "--store",
        &store,
    ]));
    let line = |flow: &str| {
        table
            .lines()
            .find(|l| l.starts_with(flow))
            .unwrap_or_else(|| panic!("no line for {flow} in:\n{table}"))
            .to_string()
    };
    assert!(line("cart_recovery").contains("5% (1/3)"), "{table}");
    let welcome = line("welcome");
    assert!(welcome.contains("100% (no rollout)"), "{table}");
    // The greeting enrolled one contact in the welcome flow.
    assert!(welcome.split_whitespace().any(|w| w == "1"), "{table}");
}

#[test]
fn a_burst_of_due_timers_is_committed_in_slices_and_gives_the_same_results() {
    let dir = temp_dir("burst");
    let bundle = build_funnel(&dir);
    // The 200-contact stream, then a tick a week later: every pending timer of every
    // contact comes due before that one tick.
    let mut events = std::fs::read_to_string(repo_root().join("bench/funnel/events-200.jsonl"))
        .expect("events-200");
    events.push_str("{\"id\":\"late\",\"at\":\"2026-12-01T00:00:00Z\",\"type\":\"tick\"}\n");
    let path = dir.join("events.jsonl");
    std::fs::write(&path, events).expect("write");
    let run = |name: &str, extra: &[&str]| -> (String, Vec<String>, String) {
        let actions = dir.join(format!("{name}.actions.jsonl"));
        let audit = dir.join(format!("{name}.audit.jsonl"));
        let mut args = vec![
            "run",
            "--bundle",
            s(&bundle),
            "--events",
            s(&path),
            "--actions",
            s(&actions),
            "--audit",
            s(&audit),
        ];
        args.extend_from_slice(extra);
        let o = rapport(&args);
        ok(&o);
        let mut audit: Vec<String> = std::fs::read_to_string(&audit)
            .expect("audit")
            .lines()
            .map(str::to_string)
            .collect();
        audit.sort();
        (
            std::fs::read_to_string(&actions).expect("actions"),
            audit,
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (mem_actions, mem_audit, _) = run("memory", &["--shards", "1"]);
    let store = store_in(&dir);
    let (actions, audit, err) = run("durable", &["--store", &store, "--cache", "10"]);
    let commits: u64 = err
        .lines()
        .find_map(|l| {
            l.strip_prefix("store: ")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("the commit count");
    // 1,051 lines make two batches of 1,024; slicing the burst adds commits.
    assert!(commits > 10, "the burst was not sliced: {err}");
    let late = mem_audit
        .iter()
        .filter(|l| l.contains("\"at\":\"2026-12-01T00:00:00.000Z\"") || l.contains("\"expired\""))
        .count();
    assert!(late > 20, "the late tick makes many timers fire ({late})");
    assert_eq!(audit, mem_audit, "the same decisions, committed in slices");
    let mut a: Vec<&str> = actions.lines().collect();
    let mut b: Vec<&str> = mem_actions.lines().collect();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
}

#[test]
fn on_stdin_each_reply_is_released_before_the_next_event_arrives() {
    use std::io::{BufRead, BufReader, Write};
    let dir = temp_dir("live");
    let bundle = build_funnel(&dir);
    let store = store_in(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["run", "--bundle", s(&bundle), "--store", &store])
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the host");
    let mut input = child.stdin.take().expect("stdin");
    let line = message("live-1", "2026-11-24T10:00:00Z", "c1", "hi").to_string();
    writeln!(input, "{line}").expect("write an event");
    input.flush().expect("flush");
    // The reply comes while stdin stays open (the reader gives up after 20 s).
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        let mut first = String::new();
        let _ = BufReader::new(stdout).read_line(&mut first);
        let _ = tx.send(first);
    });
    let reply = rx.recv_timeout(Duration::from_secs(20));
    drop(input);
    let _ = child.wait();
    let reply = reply.expect("the reply was released while the stream stayed open");
    assert!(
        reply.contains("\"id\":\"live-1.0\"") && reply.contains("Welcome"),
        "{reply}"
    );
}

/// Copies the funnel project into `dir/name`, with `edit` applied to its welcome flow.
fn funnel_variant(dir: &Path, name: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    common::build_variant("bench/funnel", dir, name, |file, text| {
        if file == "welcome.flow" {
            edit(&text)
        } else {
            text
        }
    })
}

fn texts_to(path: &Path, contact: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .expect("actions")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|a| a["contact"] == contact && a["type"] == "send")
        .map(|a| a["text"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_new_bundle_on_a_store_keeps_opt_outs_and_running_runs_on_their_version() {
    let dir = temp_dir("deploy");
    let v1 = funnel_variant(&dir, "v1", |t| t.to_string());
    let store = store_in(&dir);
    run_lines(
        &dir,
        &v1,
        &store,
        "a",
        &[
            message("a1", "2026-11-24T10:00:00Z", "running", "hi"),
            message("a2", "2026-11-24T10:00:01Z", "stopped", "hi"),
            message("a3", "2026-11-24T10:00:02Z", "stopped", "STOP"),
        ],
    );
    // The new version asks for the category in other words.
    let v2 = funnel_variant(&dir, "v2", |t| {
        t.replace(
            "Which category: A) Footwear B) Outerwear?",
            "Pick one: A) Footwear B) Outerwear",
        )
    });
    let events = dir.join("b.jsonl");
    let lines = [
        message("b1", "2026-11-24T10:05:00Z", "running", "1"),
        message("b2", "2026-11-24T10:05:01Z", "stopped", "hi"),
        message("b3", "2026-11-24T10:05:02Z", "newcomer", "hi"),
        message("b4", "2026-11-24T10:05:03Z", "newcomer", "1"),
    ];
    let text: String = lines.iter().map(|e| format!("{e}\n")).collect();
    std::fs::write(&events, text).expect("events");
    let actions = dir.join("b.actions.jsonl");
    let o = rapport(&[
        "run",
        "--bundle",
        s(&v2),
        "--events",
        s(&events),
        "--actions",
        s(&actions),
        "--store",
        &store,
    ]);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("deployed: welcome: new version"), "{err}");
    assert!(err.contains("deployed: cart_recovery: unchanged"), "{err}");
    // The run started on the first version finishes on it.
    assert_eq!(
        texts_to(&actions, "running"),
        ["Which category: A) Footwear B) Outerwear?"]
    );
    // A new run starts on the new version.
    assert_eq!(
        texts_to(&actions, "newcomer").last().map(String::as_str),
        Some("Pick one: A) Footwear B) Outerwear")
    );
    // The opt-out survived the deploy.
    assert!(texts_to(&actions, "stopped").is_empty());

    // Running the same bundle again deploys nothing.
    let o = rapport(&[
        "run",
        "--bundle",
        s(&v2),
        "--events",
        s(&events),
        "--actions",
        "-",
        "--store",
        &store,
    ]);
    let err = String::from_utf8_lossy(&ok_output(&o)).into_owned();
    assert!(!err.contains("deployed:"), "{err}");

    // A third version: the first one is neither current nor previous any more, but the
    // run still waiting on it keeps it loaded and finishes on it.
    let v3 = funnel_variant(&dir, "v3", |t| {
        t.replace("What's your budget?", "Your budget?").replace(
            "Which category: A) Footwear B) Outerwear?",
            "Pick one: A) Footwear B) Outerwear",
        )
    });
    let events = dir.join("c.jsonl");
    let line = message("c1", "2026-11-24T10:10:00Z", "running", "A");
    std::fs::write(&events, format!("{line}\n")).expect("events");
    let actions = dir.join("c.actions.jsonl");
    let o = rapport(&[
        "run",
        "--bundle",
        s(&v3),
        "--events",
        s(&events),
        "--actions",
        s(&actions),
        "--store",
        &store,
    ]);
    let err = String::from_utf8_lossy(&ok_output(&o)).into_owned();
    assert!(err.contains("deployed: welcome: new version"), "{err}");
    assert_eq!(texts_to(&actions, "running"), ["What's your budget?"]);
}

fn ok_output(o: &Output) -> Vec<u8> {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    o.stderr.clone()
}

#[test]
fn a_deploy_that_would_strand_runs_is_refused_and_changes_nothing() {
    let dir = temp_dir("deploy-refused");
    let v1 = funnel_variant(&dir, "v1", |t| t.to_string());
    let store = store_in(&dir);
    run_lines(
        &dir,
        &v1,
        &store,
        "a",
        &[message("a1", "2026-11-24T10:00:00Z", "c1", "hi")],
    );
    // The same version number with other content would put the waiting run in a
    // state that may no longer mean the same thing.
    let same_version = funnel_variant(&dir, "v1b", |t| {
        t.replace("flow welcome {", "flow welcome {\n  version 1")
    });
    run_lines(&dir, &same_version, &store, "b", &[]);
    let before = std::fs::read(dir.join("store.db")).expect("store");
    let declared = funnel_variant(&dir, "v1c", |t| {
        t.replace("flow welcome {", "flow welcome {\n  version 1")
            .replace("Reply 1 for products", "Reply 1 for our products")
    });
    let o = rapport(&[
        "run",
        "--bundle",
        s(&declared),
        "--events",
        "bench/funnel/events-200.jsonl",
        "--actions",
        "-",
        "--store",
        &store,
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("declares version 1 as the store's does, but its content changed"),
        "{err}"
    );
    assert_eq!(
        std::fs::read(dir.join("store.db")).expect("store"),
        before,
        "the store is unchanged"
    );
}

#[test]
fn another_file_at_the_same_path_is_read_from_the_start() {
    let dir = temp_dir("replaced");
    let bundle = build_funnel(&dir);
    let store = store_in(&dir);
    let events = dir.join("events.jsonl");
    let actions = dir.join("actions.jsonl");
    let write = |lines: &[serde_json::Value]| {
        let text: String = lines.iter().map(|e| format!("{e}\n")).collect();
        std::fs::write(&events, text).expect("write events");
    };
    let run = || {
        let o = rapport(&[
            "run",
            "--bundle",
            s(&bundle),
            "--events",
            s(&events),
            "--actions",
            s(&actions),
            "--store",
            &store,
        ]);
        ok(&o);
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    write(&[
        message("f1", "2026-11-24T10:00:00Z", "c1", "hi"),
        message("f2", "2026-11-24T10:00:01Z", "c2", "hi"),
        message("f3", "2026-11-24T10:00:02Z", "c3", "hi"),
    ]);
    run();
    // Same path, new content, longer than what was read: not resumed in the middle.
    write(&[
        message("g1", "2026-11-24T11:00:00Z", "c7", "hi"),
        message("g2", "2026-11-24T11:00:01Z", "c8", "hi"),
        message("g3", "2026-11-24T11:00:02Z", "c9", "hi"),
        message("g4", "2026-11-24T11:00:03Z", "c10", "hi"),
    ]);
    let err = run();
    assert!(err.contains("is not the file an earlier run read"), "{err}");
    let text = std::fs::read_to_string(&actions).expect("actions");
    for id in ["g1.0", "g2.0", "g3.0", "g4.0"] {
        assert!(
            text.contains(&format!("\"id\":\"{id}\"")),
            "{id} missing: {text}"
        );
    }
    // The same file again: resumed at its end, nothing new.
    let err = run();
    assert!(
        err.contains("resumed after line 4") && err.contains("processed 0 events"),
        "{err}"
    );
}

#[test]
fn forget_also_erases_the_rejected_lines_of_a_contact() {
    let dir = temp_dir("forget-rejected");
    let bundle = build_funnel(&dir);
    let store = store_in(&dir);
    run_lines(
        &dir,
        &bundle,
        &store,
        "a",
        &[
            message("h1", "2026-11-24T10:00:00Z", "40712345678", "hi"),
            // The contact as a number: the line is rejected, the record still names it.
            serde_json::json!({"id": "h2", "at": "2026-11-24T10:00:01Z", "contact": 40712345678u64,
            "channel": "whatsapp", "type": "message", "text": "hello"}),
        ],
    );
    let v = export("40712345678", &store);
    assert!(
        v["audit_trail"]
            .as_array()
            .is_some_and(|a| a.iter().any(|r| r["kind"] == "rejected")),
        "{v:#}"
    );
    ok(&rapport(&["forget", "40712345678", "--store", &store]));
    assert!(
        !store_files_contain(&dir, "40712345678"),
        "the number is still in the store"
    );
}

#[test]
fn actions_can_go_to_a_device_with_a_store() {
    let dir = temp_dir("devnull");
    let bundle = build_funnel(&dir);
    let store = store_in(&dir);
    ok(&rapport(&[
        "run",
        "--bundle",
        s(&bundle),
        "--events",
        "bench/funnel/events-200.jsonl",
        "--actions",
        "/dev/null",
        "--audit",
        "/dev/null",
        "--store",
        &store,
    ]));
}
