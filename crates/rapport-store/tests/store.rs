//! The store refuses what it cannot read with an error that says why, and keeps what a
//! commit gave it.

use rapport_engine::{Changes, Loaded, TimerChange};
use rapport_store::{Batch, ContactReader, HostLock, OutboxEntry, SqliteStore, Store, StoreError};

/// Opens a store as its host does (the lock is let go at once: one host per test).
fn open(path: &std::path::Path) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(path, &HostLock::acquire(path)?)
}

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn a_newer_schema_is_refused_not_misread() {
    let d = dir();
    let path = d.path().join("s.db");
    drop(open(&path).expect("a new store"));
    {
        let c = rusqlite::Connection::open(&path).expect("sqlite");
        c.pragma_update(None, "user_version", 7)
            .expect("set version");
    }
    match open(&path) {
        Err(e @ StoreError::Newer { found: 7, .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("schema version 7") && text.contains("upgrade rapport"),
                "{text}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a store of schema 7 was opened"),
    }
}

#[test]
fn another_programs_database_and_garbage_are_refused() {
    let d = dir();
    let other = d.path().join("other.db");
    {
        let c = rusqlite::Connection::open(&other).expect("sqlite");
        c.execute_batch("CREATE TABLE orders (id INTEGER)")
            .expect("table");
    }
    let e = open(&other).err().expect("refused");
    assert!(e.to_string().contains("not a Rapport store"), "{e}");
    let junk = d.path().join("junk.db");
    std::fs::write(&junk, vec![0x42u8; 8192]).expect("write");
    let e = open(&junk).err().expect("refused");
    assert!(e.to_string().contains("not a Rapport store"), "{e}");
    // Neither file was changed by the attempt.
    assert_eq!(std::fs::read(&junk).expect("read"), vec![0x42u8; 8192]);
}

#[test]
fn a_commit_is_kept_across_reopening_and_released_actions_leave_the_outbox() {
    let d = dir();
    let path = d.path().join("s.db");
    let mut s = open(&path).expect("store");
    let changes = Changes {
        contacts: vec![("c1".into(), "{\"x\":1}".into())],
        timers: vec![TimerChange {
            key: 3,
            due: 5000,
            contact: Some("c1".into()),
            state: Some("{\"t\":3}".into()),
        }],
        seen: vec![(u64::MAX, 7, 1000)],
        global: "{\"clock\":1000}".into(),
        runs: Vec::new(),
        attention: Default::default(),
    };
    let outbox = vec![
        OutboxEntry {
            contact: Some("c1".into()),
            action_id: "e1.0".into(),
            line: "{\"id\":\"e1.0\"}".into(),
        },
        OutboxEntry {
            contact: Some("c1".into()),
            action_id: "e1.1".into(),
            line: "{\"id\":\"e1.1\"}".into(),
        },
    ];
    let last = s
        .commit(Batch {
            changes,
            outbox,
            ..Batch::default()
        })
        .expect("commit");
    drop(s);
    let mut s = open(&path).expect("reopen");
    let r = s.resume(i64::MAX).expect("resume");
    assert_eq!(r.global.as_deref(), Some("{\"clock\":1000}"));
    assert_eq!(r.timers, vec!["{\"t\":3}".to_string()]);
    assert_eq!(
        r.seen,
        vec![(u64::MAX, 7, 1000)],
        "a 64-bit key survives the signed column"
    );
    assert_eq!(r.outbox.len(), 2);
    assert_eq!(
        s.load_contact("c1").expect("load"),
        Loaded::Saved("{\"x\":1}".into())
    );
    assert_eq!(s.load_contact("c2").expect("load"), Loaded::New);
    // Released: the next commit drops them; the timer fired: it goes too.
    let changes = Changes {
        timers: vec![TimerChange {
            key: 3,
            due: 0,
            contact: None,
            state: None,
        }],
        global: "{\"clock\":6000}".into(),
        ..Changes::default()
    };
    s.commit(Batch {
        changes,
        released_up_to: last,
        ..Batch::default()
    })
    .expect("commit");
    let r = s.resume(i64::MAX).expect("resume");
    assert!(r.outbox.is_empty() && r.timers.is_empty());
}

#[test]
fn only_a_path_where_nothing_exists_makes_a_store() {
    let d = dir();
    // An emptied store file, and an SQLite database of another program with no tables.
    let empty = d.path().join("empty.db");
    std::fs::write(&empty, b"").expect("write");
    let e = open(&empty).err().expect("an empty file is refused");
    assert!(e.to_string().contains("an empty file"), "{e}");
    assert_eq!(std::fs::metadata(&empty).expect("still there").len(), 0);
    let blank = d.path().join("blank.db");
    rusqlite::Connection::open(&blank)
        .and_then(|c| c.pragma_update(None, "user_version", 3))
        .expect("sqlite");
    let e = open(&blank)
        .err()
        .expect("another program's database is refused");
    assert!(e.to_string().contains("another program"), "{e}");
    // A folder, and a dangling symlink (not followed to create a file).
    let e = open(d.path()).err().expect("a folder is refused");
    assert!(e.to_string().contains("not a Rapport store"), "{e}");
    let link = d.path().join("link.db");
    std::os::unix::fs::symlink(d.path().join("missing/x.db"), &link).expect("symlink");
    assert!(open(&link).is_err());
    assert!(!d.path().join("missing").exists());
    // A path with nothing there makes a new store, which opens again.
    let new = d.path().join("new.db");
    drop(open(&new).expect("a new store"));
    drop(open(&new).expect("reopened"));
}

#[test]
fn a_second_host_on_one_store_is_refused_with_the_holders_pid() {
    let d = dir();
    let path = d.path().join("s.db");
    let lock = HostLock::acquire(&path).expect("first host");
    let store = SqliteStore::open(&path, &lock).expect("store");
    match HostLock::acquire(&path) {
        Err(e @ StoreError::InUse { pid: Some(p), .. }) => {
            assert_eq!(p, std::process::id());
            assert!(
                e.to_string().contains("in use by another rapport process"),
                "{e}"
            );
        }
        other => panic!("a second host was not refused: {other:?}"),
    }
    // Another spelling of the same store, or a link to it, is the same store.
    let link = d.path().join("link.db");
    std::os::unix::fs::symlink(&path, &link).expect("symlink");
    let dotted = d.path().join(".").join("s.db");
    for other in [&link, &dotted] {
        assert!(
            matches!(HostLock::acquire(other), Err(StoreError::InUse { .. })),
            "{} was not seen as the same store",
            other.display()
        );
    }
    // Readers of committed state are not hosts.
    drop(SqliteStore::open_existing(&path).expect("a reader"));
    drop(store);
    drop(lock);
    drop(HostLock::acquire(&path).expect("free again once the first host is gone"));
}

#[test]
fn run_facts_become_report_rows_and_forgetting_a_contact_keeps_them_without_it() {
    use rapport_engine::RunFact;
    use rapport_store::report::Period;
    let d = dir();
    let mut s = open(&d.path().join("s.db")).expect("store");
    let started = |run: u64, contact: &str, variant: &str, at: i64| RunFact::Started {
        run,
        contact: contact.into(),
        flow: "offer".into(),
        version: "v1".into(),
        variant: Some(variant.into()),
        channel: "sms".into(),
        at,
        goal_deadline: Some(at + 10_000),
    };
    let runs = vec![
        started(1, "c1", "a", 1000),
        started(2, "c2", "b", 2000),
        started(3, "c3", "b", 3000),
        RunFact::Responded { run: 1, at: 1500 },
        RunFact::Responded { run: 1, at: 1900 },
        RunFact::Responded { run: 2, at: 4000 },
        RunFact::Converted { run: 2, at: 5000 },
        RunFact::Converted { run: 2, at: 6000 },
        RunFact::OptedOut { run: 3 },
        RunFact::Ended {
            run: 3,
            at: 3500,
            outcome: "opted_out".into(),
            handoff: false,
            error: false,
        },
        RunFact::Ended {
            run: 1,
            at: 9000,
            outcome: "end".into(),
            handoff: true,
            error: false,
        },
    ];
    s.commit(Batch {
        changes: Changes {
            global: "{\"clock\":9000}".into(),
            runs,
            ..Changes::default()
        },
        activity: vec![rapport_store::Activity {
            flow: "offer".into(),
            version: "v1".into(),
            hour: 0,
            kind: "sent".into(),
            n: 3,
        }],
        ..Batch::default()
    })
    .expect("commit");
    let data = s
        .report_data(&Period {
            from: 0,
            to: 9001,
            flow: None,
        })
        .expect("read");
    let a = data
        .counts
        .iter()
        .find(|c| c.variant.as_deref() == Some("a"))
        .expect("a");
    let b = data
        .counts
        .iter()
        .find(|c| c.variant.as_deref() == Some("b"))
        .expect("b");
    assert_eq!(
        (a.enrolled, a.finished, a.handoffs, a.converted),
        (1, 1, 1, 0)
    );
    assert_eq!(
        (b.enrolled, b.finished, b.opted_out, b.converted),
        (2, 1, 1, 1)
    );
    // Run 1 and run 3's goal windows closed at 11,000 and 13,000: still open at 9,001.
    assert_eq!(a.goal_open + b.goal_open, 2);
    // The first answer counts once: the later one leaves it as it was.
    let mut delays: Vec<i64> = data.responses.iter().map(|r| r.delay).collect();
    delays.sort_unstable();
    assert_eq!(delays, vec![500, 2000]);
    assert_eq!(data.activity.len(), 1);
    assert!(!data.live_deliveries);
    // A period that ends before run 3 started leaves it out.
    let early = s
        .report_data(&Period {
            from: 0,
            to: 2500,
            flow: Some("offer"),
        })
        .expect("read");
    assert_eq!(early.counts.iter().map(|c| c.enrolled).sum::<u64>(), 2);
    // Erasure keeps the counts, not the person.
    assert_eq!(s.contact_runs("c2").expect("runs").len(), 1);
    s.forget("c2").expect("forget");
    assert!(s.contact_runs("c2").expect("runs").is_empty());
    let after = s
        .report_data(&Period {
            from: 0,
            to: 9001,
            flow: None,
        })
        .expect("read");
    assert_eq!(after.counts.iter().map(|c| c.enrolled).sum::<u64>(), 3);
}
