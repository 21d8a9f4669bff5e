//! `rapport run` under input a platform, a bug or an attacker can send: duplicate ids
//! across contacts, numeric ids, timestamps far in the future, streams out of order, and
//! outputs that fail. Each case is driven through the binary as a user meets it.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{build, rapport, repo_root, s, text};

fn dir(name: &str) -> PathBuf {
    common::temp_dir("hostile", name)
}

fn write_lines(path: &Path, lines: &[String]) {
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(path, body).expect("write events");
}

fn message(id: &str, at: &str, contact: &str, text: &str) -> String {
    serde_json::json!({"id": id, "at": at, "contact": contact, "channel": "whatsapp",
        "type": "message", "text": text})
    .to_string()
}

/// `rapport run` on an events file, in memory with `shards` workers or with a store.
fn run(bundle: &Path, events: &Path, audit: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "run",
        "--bundle",
        s(bundle),
        "--events",
        s(events),
        "--audit",
        s(audit),
    ];
    args.extend_from_slice(extra);
    rapport(&args)
}

fn audit_records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("audit file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("an audit record is JSON"))
        .collect()
}

/// Action lines of one contact, in output order.
fn of_contact(stdout: &[u8], contact: &str) -> Vec<String> {
    text(stdout)
        .lines()
        .filter(|l| l.contains(&format!("\"contact\":\"{contact}\"")))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_duplicate_id_from_another_contact_does_not_drop_its_stop() {
    let d = dir("dup");
    let bundle = build("bench/funnel", &d);
    let events = d.join("events.jsonl");
    write_lines(
        &events,
        &[
            message("m1", "2026-11-24T10:00:00Z", "ana", "hi"),
            // Another contact's event with the same id: its own event, a STOP.
            message("m1", "2026-11-24T10:01:00Z", "bob", "STOP"),
            // The platform redelivers ana's message: a duplicate, counted and audited.
            message("m1", "2026-11-24T10:02:00Z", "ana", "hi"),
            message("m2", "2026-11-24T10:03:00Z", "bob", "hi"),
        ],
    );
    let store = format!("sqlite:{}", s(&d.join("store.db")));
    for extra in [
        vec!["--shards", "1"],
        vec!["--shards", "3"],
        vec!["--store", store.as_str()],
    ] {
        let audit = d.join("audit.jsonl");
        let _ = std::fs::remove_file(&audit);
        let o = run(&bundle, &events, &audit, &extra);
        assert!(o.status.success(), "{extra:?}: {}", text(&o.stderr));
        let bob = of_contact(&o.stdout, "bob");
        assert_eq!(bob.len(), 1, "{extra:?}: bob's actions: {bob:?}");
        assert!(bob[0].contains("unsubscribed"), "{extra:?}: {bob:?}");
        assert_eq!(
            of_contact(&o.stdout, "ana").len(),
            1,
            "{extra:?}: one welcome for ana"
        );
        let err = text(&o.stderr);
        assert!(err.contains("0 rejected, 1 duplicates"), "{extra:?}: {err}");
        let dups: Vec<_> = audit_records(&audit)
            .into_iter()
            .filter(|r| r["kind"] == "duplicate")
            .collect();
        assert_eq!(dups.len(), 1, "{extra:?}: {dups:?}");
        assert_eq!(dups[0]["contact"], "ana");
        assert_eq!(dups[0]["cause"], "m1");
    }
}

#[test]
fn a_numeric_id_is_rejected_not_confused_with_the_string() {
    let d = dir("numeric");
    let bundle = build("bench/funnel", &d);
    let events = d.join("events.jsonl");
    std::fs::write(
        &events,
        concat!(
            r#"{"id":42,"at":"2026-11-24T10:00:00Z","contact":"ana","channel":"whatsapp","type":"message","text":"hi"}"#,
            "\n",
            r#"{"id":"42","at":"2026-11-24T10:01:00Z","contact":"ana","channel":"whatsapp","type":"message","text":"hi"}"#,
            "\n"
        ),
    )
    .expect("write");
    let audit = d.join("audit.jsonl");
    let o = run(&bundle, &events, &audit, &[]);
    assert!(o.status.success());
    let err = text(&o.stderr);
    assert!(
        err.contains("line 1: rejected: `id` must be a string: write \"42\", not 42"),
        "{err}"
    );
    assert!(err.contains("1 rejected, 0 duplicates"), "{err}");
    assert_eq!(of_contact(&o.stdout, "ana").len(), 1);
}

#[test]
fn one_event_far_in_the_future_moves_no_clock() {
    let d = dir("future");
    let bundle = build("bench/funnel", &d);
    let good: Vec<String> =
        std::fs::read_to_string(repo_root().join("bench/funnel/events-200.jsonl"))
            .expect("events")
            .lines()
            .map(str::to_string)
            .collect();
    let clean = d.join("clean.jsonl");
    write_lines(&clean, &good);
    // The same stream with one event from the year 9000 in the middle.
    let mut bad = good.clone();
    bad.insert(
        300,
        message("evil", "9000-01-01T00:00:00Z", "mallory", "hi"),
    );
    let poisoned = d.join("poisoned.jsonl");
    write_lines(&poisoned, &bad);
    for extra in [vec!["--shards", "2"], vec!["--store", "STORE"]] {
        let mut outs = Vec::new();
        for (name, events) in [("clean", &clean), ("poisoned", &poisoned)] {
            let store = format!("sqlite:{}", s(&d.join(format!("{name}.db"))));
            let extra: Vec<&str> = extra
                .iter()
                .map(|a| if *a == "STORE" { store.as_str() } else { a })
                .collect();
            let o = run(&bundle, events, &d.join("audit.jsonl"), &extra);
            assert!(o.status.success(), "{}", text(&o.stderr));
            outs.push(o);
        }
        let err = text(&outs[1].stderr);
        assert!(
            err.contains("line 301: rejected: `at` 9000-01-01T00:00:00.000Z is more than 31d ahead of the clock"),
            "{extra:?}: {err}"
        );
        let mut clean_actions: Vec<_> = text(&outs[0].stdout).lines().map(str::to_string).collect();
        let mut poisoned_actions: Vec<_> =
            text(&outs[1].stdout).lines().map(str::to_string).collect();
        clean_actions.sort();
        poisoned_actions.sort();
        assert!(clean_actions.len() > 500);
        assert!(
            clean_actions == poisoned_actions,
            "{extra:?}: one far-future event changed the actions"
        );
    }
    // The limit is the user's to set; before the first event it counts from the wall
    // clock (so a stream of live events an hour and then over three hours ahead of now).
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let iso = |secs: u64| {
        let o = Command::new("date")
            .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .expect("date");
        text(&o.stdout).trim().to_string()
    };
    let (first, second) = (iso(now + 3600), iso(now + 3 * 3600 + 120));
    let events = d.join("jump.jsonl");
    write_lines(
        &events,
        &[
            message("j1", &first, "ana", "hi"),
            message("j2", &second, "bob", "hi"),
        ],
    );
    let o = run(
        &bundle,
        &events,
        &d.join("audit.jsonl"),
        &["--max-clock-jump", "2h"],
    );
    assert!(o.status.success());
    let err = text(&o.stderr);
    assert!(
        !err.contains("line 1:")
            && err.contains(&format!("line 2: rejected: `at` {}", &second[..19])),
        "{err}"
    );
    assert!(err.contains("is more than 2h ahead"), "{err}");
    let o = rapport(&["run", "--bundle", s(&bundle), "--max-clock-jump", "soon"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("is not a duration"),
        "{}",
        text(&o.stderr)
    );
}

/// Action lines grouped by contact, in order within each contact.
fn per_contact(stdout: &[u8]) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text(stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("action JSON");
        let contact = v["contact"].as_str().unwrap_or("").to_string();
        map.entry(contact).or_default().push(line.to_string());
    }
    map
}

#[test]
fn any_number_of_shards_gives_the_same_actions_on_an_out_of_order_stream() {
    let d = dir("shuffled");
    let bundle = build("bench/funnel", &d);
    // The funnel stream with every time moved back by up to 90 minutes, drawn from a
    // fixed generator: events arrive out of order, across contacts and within one.
    let mut seed: u64 = 0x5eed;
    let mut shuffled = Vec::new();
    let mut backwards = 0;
    let mut previous = i64::MIN;
    for line in std::fs::read_to_string(repo_root().join("bench/funnel/events-200.jsonl"))
        .expect("events")
        .lines()
    {
        let mut v: serde_json::Value = serde_json::from_str(line).expect("JSON");
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let back = ((seed >> 33) % (90 * 60)) as i64;
        let at = v["at"].as_str().expect("at");
        let ts: i64 = Command::new("date")
            .args(["-u", "-d", at, "+%s"])
            .output()
            .ok()
            .and_then(|o| text(&o.stdout).trim().parse().ok())
            .expect("date parses the time");
        let moved = ts - back;
        if moved < previous {
            backwards += 1;
        }
        previous = moved;
        let out = Command::new("date")
            .args(["-u", "-d", &format!("@{moved}"), "+%Y-%m-%dT%H:%M:%SZ"])
            .output()
            .expect("date");
        v["at"] = serde_json::Value::String(text(&out.stdout).trim().to_string());
        shuffled.push(v.to_string());
    }
    assert!(
        backwards > 300,
        "the stream is not out of order enough ({backwards})"
    );
    let events = d.join("shuffled.jsonl");
    write_lines(&events, &shuffled);
    let mut results = Vec::new();
    for shards in ["1", "2", "3", "5"] {
        let o = rapport(&[
            "run",
            "--bundle",
            s(&bundle),
            "--events",
            s(&events),
            "--shards",
            shards,
        ]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        results.push((shards, per_contact(&o.stdout)));
    }
    let (_, one) = &results[0];
    assert!(one.len() > 100);
    for (shards, other) in &results[1..] {
        for (contact, actions) in one {
            assert_eq!(
                Some(actions),
                other.get(contact),
                "contact {contact}: one worker and {shards} differ"
            );
        }
        assert_eq!(one.len(), other.len());
    }
}

#[test]
fn shards_are_capped_with_a_clear_message() {
    let o = rapport(&["run", "--bundle", "x.json", "--shards", "100000"]);
    assert_eq!(o.status.code(), Some(2));
    let err = text(&o.stderr);
    assert!(err.contains("100000 workers is more than the 256"), "{err}");
}

#[test]
fn a_write_error_ends_the_run_with_the_error_and_exit_2() {
    let d = dir("write");
    let bundle = build("bench/funnel", &d);
    // A full disk.
    let o = rapport(&[
        "run",
        "--bundle",
        s(&bundle),
        "--events",
        "bench/funnel/events-200.jsonl",
        "--actions",
        "/dev/full",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("writing actions"),
        "{}",
        text(&o.stderr)
    );
    // A reader that stops after the first line (`rapport run | head -n 1`).
    let mut child = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args([
            "run",
            "--bundle",
            s(&bundle),
            "--events",
            "bench/funnel/events-200.jsonl",
        ])
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let mut first = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut first)
        .expect("a first line");
    assert!(first.contains("\"type\""));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "rapport run hung after its reader went away"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(2));
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert!(err.contains("writing actions"), "{err}");
}

#[test]
fn operator_events_are_audited_with_the_operator_and_rejected_ones_counted() {
    let d = dir("operator");
    let bundle = build("flows", &d);
    let events = d.join("events.jsonl");
    write_lines(
        &events,
        &[
            r#"{"id":"o1","at":"2026-11-24T10:00:00Z","type":"operator","action":"halt","flow":"cart_recovery","actor":"maria@acme"}"#.into(),
            r#"{"id":"o2","at":"2026-11-24T10:01:00Z","type":"operator","action":"halt","flow":"cart_recovery","actor":"maria@acme"}"#.into(),
            r#"{"id":"o3","at":"2026-11-24T10:02:00Z","type":"operator","action":"promote","flow":"no_such_flow","actor":"ion@acme"}"#.into(),
        ],
    );
    let audit = d.join("audit.jsonl");
    let o = run(&bundle, &events, &audit, &["--shards", "2"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("1 rejected"),
        "{}",
        text(&o.stderr)
    );
    let records = audit_records(&audit);
    let operator: Vec<_> = records.iter().filter(|r| r["kind"] == "operator").collect();
    assert_eq!(operator.len(), 2, "{records:?}");
    assert_eq!(operator[0]["actor"], "maria@acme");
    assert_eq!(operator[0]["reason"], "halt");
    assert!(operator[0].get("detail").is_none());
    assert_eq!(operator[1]["detail"], "no change");
    let rejected: Vec<_> = records.iter().filter(|r| r["kind"] == "rejected").collect();
    assert_eq!(rejected.len(), 1, "{records:?}");
    assert_eq!(rejected[0]["actor"], "ion@acme");
    let _ = std::io::stdout().flush();
}

#[test]
fn stop_as_phones_type_it_opts_out_and_look_alikes_get_the_clarification() {
    let d = dir("stop-forms");
    let bundle = build("bench/funnel", &d);
    let opt_out = [
        "ＳＴＯＰ",
        "S\u{200B}TOP",
        "\u{FEFF}Stop",
        "ST\u{00AD}OP",
        "S\u{2060}TOP",
        "\"STOP\"",
        "(stop)",
        "STOP…",
        "stop 🛑",
        "STOP STOP",
        "𝐒𝐓𝐎𝐏",
    ];
    let clarify = ["ЅТОР", "S T O P", "s.t.o.p"];
    let mut lines = Vec::new();
    for (i, text) in opt_out.iter().chain(clarify.iter()).enumerate() {
        lines.push(message(
            &format!("m{i}"),
            "2026-11-24T10:00:00Z",
            &format!("c{i}"),
            text,
        ));
    }
    let events = d.join("events.jsonl");
    write_lines(&events, &lines);
    let o = run(&bundle, &events, &d.join("audit.jsonl"), &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    for (i, typed) in opt_out.iter().chain(clarify.iter()).enumerate() {
        let actions = of_contact(&o.stdout, &format!("c{i}"));
        let want = if i < opt_out.len() {
            "\"policy\":\"opt_out_confirm\""
        } else {
            "\"policy\":\"opt_out_clarify\""
        };
        // The only reply: a look-alike STOP waits for its answer and reaches no flow.
        assert!(
            actions.len() == 1 && actions[0].contains(want),
            "{typed:?} should get {want} alone: {actions:?}"
        );
    }
}

#[test]
fn a_huge_line_is_rejected_with_its_number_and_a_huge_profile_is_merged_in_linear_time() {
    let d = dir("huge");
    let bundle = build("bench/funnel", &d);
    // A message whose profile has 200,000 fields, the one the flow greets with last.
    let mut profile = serde_json::Map::new();
    for i in 0..200_000 {
        profile.insert(format!("field_{i}"), serde_json::Value::from(i));
    }
    profile.insert("first_name".into(), "Ana".into());
    let big = serde_json::json!({"id": "big", "at": "2026-11-24T10:00:00Z", "contact": "ana",
        "channel": "whatsapp", "type": "message", "text": "hi", "profile": profile})
    .to_string();
    assert!(big.len() > 1 << 20);
    let events = d.join("events.jsonl");
    write_lines(
        &events,
        &[
            message("m1", "2026-11-24T09:00:00Z", "bob", "hi"),
            big.clone(),
        ],
    );
    // Over the default 1 MiB: rejected with its line number, the rest goes on.
    let o = run(&bundle, &events, &d.join("audit.jsonl"), &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("line 2: rejected: the line is longer than 1024 KiB"),
        "{err}"
    );
    assert_eq!(of_contact(&o.stdout, "bob").len(), 1);
    // With the cap raised, the fields are merged (this took minutes when each field was
    // looked up among all the others), in memory and with a store.
    let store = format!("sqlite:{}", s(&d.join("store.db")));
    for extra in [
        vec!["--max-line", "8M"],
        vec!["--max-line", "8M", "--store", &store],
    ] {
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_rapport"))
            .args(["run", "--bundle", s(&bundle), "--events", s(&events)])
            .args(&extra)
            .current_dir(repo_root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start");
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            // A guard against the quadratic merge coming back, not a speed test: the
            // run takes about a second.
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                panic!("{extra:?}: a 200,000-field profile did not finish in 60 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = child.wait_with_output().expect("output");
        assert!(status.success(), "{}", text(&out.stderr));
        let ana = of_contact(&out.stdout, "ana");
        assert!(
            ana.len() == 1 && ana[0].contains("Hi Ana!"),
            "{extra:?}: {ana:?}"
        );
    }
}

/// Consent, a greeting and an abandoned cart for `c1`, then `stop`, then what follows:
/// whether the cart reminder an hour later goes out.
fn cart_reminder_after(
    d: &Path,
    name: &str,
    middle: &[String],
) -> (Output, Vec<serde_json::Value>) {
    let bundle = build("bench/funnel", d);
    let mut lines = vec![
        r#"{"id":"k1","at":"2026-11-24T09:00:00Z","contact":"c1","channel":"whatsapp","type":"consent","purpose":"marketing","granted":true,"source":"form"}"#.to_string(),
        message("k2", "2026-11-24T09:00:01Z", "c1", "hi"),
        r#"{"id":"k3","at":"2026-11-24T09:00:02Z","contact":"c1","channel":"whatsapp","type":"event","name":"cart.abandoned","data":{"product_name":"Boots","cart_url":"u"}}"#.to_string(),
    ];
    lines.extend_from_slice(middle);
    lines.push(r#"{"id":"k9","at":"2026-11-24T12:00:00Z","type":"tick"}"#.to_string());
    let events = d.join(format!("{name}.jsonl"));
    write_lines(&events, &lines);
    let audit = d.join(format!("{name}.audit.jsonl"));
    let o = run(&bundle, &events, &audit, &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    (o, audit_records(&audit))
}

#[test]
fn a_stop_with_a_bad_timestamp_is_applied_at_the_clock_not_dropped() {
    let d = dir("stop-future");
    let (o, _) = cart_reminder_after(
        &d,
        "future",
        &[message("k4", "9000-01-01T00:00:00Z", "c1", "STOP")],
    );
    let err = text(&o.stderr);
    assert!(
        err.contains("line 4: `at` 9000-01-01T00:00:00.000Z is more than 31d ahead"),
        "{err}"
    );
    assert!(
        err.contains("it is an opt-out, so it is applied at the clock"),
        "{err}"
    );
    let c1 = of_contact(&o.stdout, "c1");
    assert!(c1.iter().any(|a| a.contains("opt_out_confirm")), "{c1:?}");
    assert!(
        !c1.iter().any(|a| a.contains("is waiting")),
        "reminded after STOP: {c1:?}"
    );
}

#[test]
fn a_start_sent_before_a_stop_and_delivered_late_does_not_undo_it() {
    let d = dir("late-start");
    let (o, audit) = cart_reminder_after(
        &d,
        "late",
        &[
            message("k4", "2026-11-24T09:30:00Z", "c1", "STOP"),
            message("k5", "2026-11-24T09:10:00Z", "c1", "START"),
        ],
    );
    let c1 = of_contact(&o.stdout, "c1");
    assert!(
        !c1.iter().any(|a| a.contains("resubscribe_confirm")),
        "{c1:?}"
    );
    assert!(
        !c1.iter().any(|a| a.contains("is waiting")),
        "reminded after STOP: {c1:?}"
    );
    assert!(
        audit
            .iter()
            .any(|r| r["kind"] == "opt_in" && r["reason"] == "older_than_opt_out"),
        "{audit:?}"
    );
    // A START sent after the STOP still resubscribes.
    let (o, _) = cart_reminder_after(
        &d,
        "later",
        &[
            message("k4", "2026-11-24T09:30:00Z", "c1", "STOP"),
            message("k5", "2026-11-24T09:40:00Z", "c1", "START"),
        ],
    );
    assert!(of_contact(&o.stdout, "c1")
        .iter()
        .any(|a| a.contains("resubscribe_confirm")));
}

#[test]
fn events_cannot_walk_the_clock_past_the_wall_clock_and_crlf_lines_get_the_full_cap() {
    let d = dir("walk");
    let bundle = build("bench/funnel", &d);
    // Ticks 30 days apart, each within 31 days of the one before: accepted only while
    // they stay within 31 days of the wall clock.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut lines = Vec::new();
    for i in 0..6u64 {
        let out = Command::new("date")
            .args([
                "-u",
                "-d",
                &format!("@{}", now + i * 30 * 86_400),
                "+%Y-%m-%dT%H:%M:%SZ",
            ])
            .output()
            .expect("date");
        lines.push(format!(
            r#"{{"id":"t{i}","at":"{}","type":"tick"}}"#,
            text(&out.stdout).trim()
        ));
    }
    let events = d.join("walk.jsonl");
    write_lines(&events, &lines);
    let o = run(&bundle, &events, &d.join("audit.jsonl"), &[]);
    let err = text(&o.stderr);
    assert!(
        !err.contains("line 2:") && err.contains("line 3: rejected"),
        "{err}"
    );
    assert!(err.contains("ahead of the wall clock"), "{err}");
    assert!(err.contains("4 rejected"), "{err}");
    // A line of exactly the cap is accepted whether it ends in \n or \r\n.
    let base = message("x1", "2026-11-24T10:00:00Z", "ana", "hi");
    let pad = 4096 - base.len() - r#","pad":"""#.len();
    let line = format!(
        r#"{},"pad":"{}"}}"#,
        &base[..base.len() - 1],
        "x".repeat(pad)
    );
    assert_eq!(line.len(), 4096);
    for (name, end) in [("lf", "\n"), ("crlf", "\r\n")] {
        let events = d.join(format!("{name}.jsonl"));
        std::fs::write(&events, format!("{line}{end}")).expect("write");
        let o = run(
            &bundle,
            &events,
            &d.join("audit.jsonl"),
            &["--max-line", "4K"],
        );
        let err = text(&o.stderr);
        assert!(err.contains("0 rejected"), "{name}: {err}");
        assert_eq!(of_contact(&o.stdout, "ana").len(), 1, "{name}");
    }
}
