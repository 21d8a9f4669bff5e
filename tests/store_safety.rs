//! Nothing can lose an opt-out held in a store: one host per store, and a file that is
//! not a Rapport store is never started afresh. Driven through `rapport` as a user meets
//! it.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

mod common;
use common::{rapport, repo_root, s};

fn temp_dir(name: &str) -> PathBuf {
    common::temp_dir("safety", name)
}

fn build_funnel(dir: &Path) -> PathBuf {
    common::build("bench/funnel", dir)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A `rapport run --store` on `store` with `events` as its input file.
fn run_file(bundle: &Path, store: &str, events: &Path) -> Output {
    rapport(&[
        "run",
        "--bundle",
        s(bundle),
        "--events",
        s(events),
        "--actions",
        "-",
        "--store",
        store,
    ])
}

#[test]
fn a_second_host_on_a_store_is_refused_while_the_first_is_idle() {
    let dir = temp_dir("two-hosts");
    let bundle = build_funnel(&dir);
    let store = format!("sqlite:{}", s(&dir.join("store.db")));
    // The first host reads a stream that stays open: it is idle, waiting for events.
    let mut first = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["run", "--bundle", s(&bundle), "--store", &store])
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the first host");
    let mut input = first.stdin.take().expect("stdin");
    let hello = r#"{"id":"m1","at":"2026-11-24T10:00:00Z","contact":"c1","channel":"whatsapp","type":"message","text":"hi"}"#;
    writeln!(input, "{hello}").expect("write");
    input.flush().expect("flush");
    // Its first reply shows it has the store open.
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = first.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let reply = rx.recv_timeout(Duration::from_secs(20));

    // A second host with a STOP for the same contact is refused at once, naming the pid.
    let stop = dir.join("stop.jsonl");
    std::fs::write(
        &stop,
        r#"{"id":"m2","at":"2026-11-24T10:01:00Z","contact":"c1","channel":"whatsapp","type":"message","text":"STOP"}"#,
    )
    .expect("write");
    let second = run_file(&bundle, &store, &stop);
    let forget = rapport(&["forget", "c1", "--store", &store]);
    let purge = rapport(&["purge", "--store", &store]);
    // Reading what the host committed stays possible.
    let export = rapport(&["audit", "export", "c1", "--store", &store]);
    drop(input);
    let _ = first.wait();
    reply.expect("the first host answered while its stream stayed open");

    let pid = format!("pid {}", first.id());
    for (what, o) in [("run", &second), ("forget", &forget), ("purge", &purge)] {
        assert_eq!(o.status.code(), Some(2), "{what}: {}", stderr(o));
        let err = stderr(o);
        assert!(
            err.contains("in use by another rapport process") && err.contains(&pid),
            "{what}: {err}"
        );
    }
    assert_eq!(export.status.code(), Some(0), "{}", stderr(&export));

    // Once the first host is gone the STOP is taken, and a later hello gets no reply.
    let o = run_file(&bundle, &store, &stop);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("unsubscribed"));
    let later = dir.join("later.jsonl");
    std::fs::write(
        &later,
        r#"{"id":"m3","at":"2026-11-24T10:02:00Z","contact":"c1","channel":"whatsapp","type":"message","text":"hi again"}"#,
    )
    .expect("write");
    let o = run_file(&bundle, &store, &later);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "",
        "an opted-out contact was messaged"
    );
}

#[test]
fn an_emptied_or_foreign_store_file_is_refused_not_started_afresh() {
    let dir = temp_dir("foreign");
    let bundle = build_funnel(&dir);
    let events = repo_root().join("bench/funnel/events-200.jsonl");

    let empty = dir.join("empty.db");
    std::fs::write(&empty, b"").expect("write");
    let o = run_file(&bundle, &format!("sqlite:{}", s(&empty)), &events);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is not a Rapport store (an empty file"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::metadata(&empty).expect("kept").len(), 0);

    // Another program's SQLite database, even one with no tables yet.
    let other = dir.join("other.db");
    let made = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA user_version=4'); c.commit()",
            s(&other),
        ])
        .status()
        .expect("python3 runs");
    assert!(made.success());
    let before = std::fs::read(&other).expect("read");
    let o = run_file(&bundle, &format!("sqlite:{}", s(&other)), &events);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("written by another program"),
        "{}",
        stderr(&o)
    );
    assert_eq!(std::fs::read(&other).expect("read"), before);

    // A store of a newer schema.
    let store = dir.join("store.db");
    let o = run_file(&bundle, &format!("sqlite:{}", s(&store)), &events);
    assert!(o.status.success(), "{}", stderr(&o));
    let bumped = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('PRAGMA user_version=99'); c.commit()",
            s(&store),
        ])
        .status()
        .expect("python3 runs");
    assert!(bumped.success());
    let o = run_file(&bundle, &format!("sqlite:{}", s(&store)), &events);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("schema version 99"), "{}", stderr(&o));

    // forget and purge on a path with nothing there make no store.
    let none = dir.join("none.db");
    let o = rapport(&["forget", "c1", "--store", &format!("sqlite:{}", s(&none))]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("there is no store"), "{}", stderr(&o));
    assert!(!none.exists());
}
