//! The store refuses what it cannot read with an error that says why, and keeps what a
//! commit gave it.

use rapport_engine::{Changes, Loaded, TimerChange};
use rapport_store::{Batch, ContactReader, OutboxEntry, SqliteStore, Store, StoreError};

fn dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn a_newer_schema_is_refused_not_misread() {
    let d = dir();
    let path = d.path().join("s.db");
    drop(SqliteStore::open(&path).expect("a new store"));
    {
        let c = rusqlite::Connection::open(&path).expect("sqlite");
        c.pragma_update(None, "user_version", 7)
            .expect("set version");
    }
    match SqliteStore::open(&path) {
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
    let e = SqliteStore::open(&other).err().expect("refused");
    assert!(e.to_string().contains("not a Rapport store"), "{e}");
    let junk = d.path().join("junk.db");
    std::fs::write(&junk, vec![0x42u8; 8192]).expect("write");
    let e = SqliteStore::open(&junk).err().expect("refused");
    assert!(e.to_string().contains("not a Rapport store"), "{e}");
    // Neither file was changed by the attempt.
    assert_eq!(std::fs::read(&junk).expect("read"), vec![0x42u8; 8192]);
}

#[test]
fn a_commit_is_kept_across_reopening_and_released_actions_leave_the_outbox() {
    let d = dir();
    let path = d.path().join("s.db");
    let mut s = SqliteStore::open(&path).expect("store");
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
    let mut s = SqliteStore::open(&path).expect("reopen");
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
