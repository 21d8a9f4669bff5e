//! The durable store of a runtime host (docs/runtime.md): contact state and runs,
//! timers, the processed event ids, the audit trail, transcripts, the salted hashes of
//! erased contacts who opted out, and an outbox of actions not yet released.
//!
//! [`Store`] is the one narrow interface the host uses; [`SqliteStore`] implements it on
//! an embedded SQLite database (WAL, one transaction per batch of events, a versioned
//! schema). A batch's actions go into the outbox in the same transaction as the state
//! change that produced them, and leave it only after the host released them, so a crash
//! never loses an action and redelivers only the few that were in flight.

use std::path::{Path, PathBuf};

mod deploy;
mod inbox;
mod lock;
pub mod report;
pub use inbox::{DeliveryRow, HostAudit, Live, LiveBatch, LiveReader, Mark, Written, INBOX_SOURCE};
pub use lock::HostLock;

use rapport_bundle::Retention;
use rapport_engine::{Changes, Loaded, Millis};
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The schema this build writes; stores of a later schema are refused.
pub const SCHEMA: i64 = 3;
/// `PRAGMA application_id` of a Rapport store ("RPRT").
const APPLICATION_ID: i64 = 0x5250_5254;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store `{path}`: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("`{path}` is not a Rapport store ({detail}); give a path where no file exists for a new store, or a store written by `rapport run --store`")]
    NotAStore { path: PathBuf, detail: String },
    #[error("the store `{path}` is in use by another rapport process{}: one store serves one host at a time; stop that process or wait for it to finish", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    InUse { path: PathBuf, pid: Option<u32> },
    #[error(
        "there is no store at `{path}`; a store is made by `rapport run --store sqlite:{path}`"
    )]
    Missing { path: PathBuf },
    #[error("cannot take the lock `{path}` of the store: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the store `{path}` has schema version {found}, newer than this rapport reads ({SCHEMA}); upgrade rapport to use it")]
    Newer { path: PathBuf, found: i64 },
    #[error("the store is damaged: {0}")]
    Damaged(String),
    #[error("store: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// Where reading the input got to: the next line to read after a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The input file, as given (canonical path).
    pub source: String,
    /// Bytes of the file read and committed.
    pub offset: u64,
    /// Lines read and committed.
    pub line: u64,
    /// A fingerprint of the bytes read, to notice a different file at the same path.
    pub fingerprint: u64,
}

/// An action waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub seq: i64,
    pub line: String,
}

/// What a host needs to carry on after a restart.
#[derive(Debug, Default)]
pub struct Resume {
    /// The engine-wide state, if anything was ever committed.
    pub global: Option<String>,
    /// Every pending timer, as the engine saved it.
    pub timers: Vec<String>,
    /// Event ids processed since the given time.
    pub seen: Vec<(u64, u32, Millis)>,
    pub checkpoint: Option<Checkpoint>,
    /// Actions committed but not released: the host releases them first.
    pub outbox: Vec<Pending>,
    /// Audit lines of the same batches, for an audit file (when the host keeps one).
    pub outbox_audit: Vec<String>,
}

/// Audit records to keep: those one event (or timer) produced for one contact.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub at: Millis,
    pub contact: Option<String>,
    /// The records as JSON lines, one per line.
    pub records: String,
}

/// A message in or out, for the transcript.
#[derive(Debug, Clone)]
pub struct TranscriptEntry {
    pub at: Millis,
    pub contact: String,
    /// `in` or `out`.
    pub direction: &'static str,
    pub channel: Option<String>,
    /// The purpose of the flow that sent it (`marketing`, `transactional`); `None` for
    /// inbound messages and policy replies.
    pub purpose: Option<String>,
    pub text: String,
}

/// An action to put in the outbox.
#[derive(Debug, Clone)]
pub struct OutboxEntry {
    pub contact: Option<String>,
    pub action_id: String,
    /// The action as a JSON line.
    pub line: String,
}

/// Everything one batch of events changed, committed in one transaction.
#[derive(Debug, Default)]
pub struct Batch {
    pub changes: Changes,
    pub outbox: Vec<OutboxEntry>,
    pub audit: Vec<AuditEntry>,
    pub transcript: Vec<TranscriptEntry>,
    pub checkpoint: Option<Checkpoint>,
    /// Keep the batch's audit lines with its actions in the outbox, so an audit file is
    /// released after a crash as the actions are.
    pub audit_in_outbox: bool,
    /// Outbox entries up to this sequence number were released: drop them.
    pub released_up_to: Option<i64>,
    /// Forget processed event ids older than this.
    pub forget_ids_before: Option<Millis>,
    /// Sends and moderation actions counted by flow version and hour, for the report.
    pub activity: Vec<Activity>,
    /// Comments a flow hid, and comments a person put back (by comment id, when): the
    /// report's moderation false positives.
    pub hidden: Vec<Hidden>,
    pub restored: Vec<(String, Millis)>,
}

/// A comment a flow version hid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hidden {
    pub comment: String,
    pub contact: Option<String>,
    pub flow: String,
    pub version: String,
    pub at: Millis,
}

/// A count of one kind of thing a flow version did within one hour: `sent`, `reply`,
/// `hide`, `review`, `suppressed:REASON`; a live host adds `delivered` and `failed:CODE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activity {
    pub flow: String,
    pub version: String,
    /// Hours since the epoch.
    pub hour: i64,
    pub kind: String,
    pub n: u64,
}

/// The hour (since the epoch) an instant in milliseconds falls in.
pub fn hour_of(at: Millis) -> i64 {
    at.div_euclid(3_600_000)
}

/// What `forget` erased.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Forgotten {
    pub found: bool,
    /// Another process had the store open, so older copies may stay in its write-ahead
    /// log until that process closes it.
    pub wal_busy: bool,
    pub opted_out_kept_as_hash: bool,
    pub timers: usize,
    pub transcript: usize,
    pub audit: usize,
    pub outbox: usize,
}

/// What `purge` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Purged {
    /// The store's clock the retention was counted from.
    pub now: Option<Millis>,
    pub transcript: usize,
}

/// Loads contacts from a store.
pub trait ContactReader: Send {
    /// A contact's saved state (or that it is an erased contact who opted out).
    fn load_contact(&mut self, contact: &str) -> Result<Loaded, StoreError>;
}

/// The store a durable host runs on.
pub trait Store: ContactReader {
    /// What was committed: engine state, timers, the event ids processed within
    /// `dedupe_window` (milliseconds) of the committed clock, the input checkpoint and
    /// the outbox.
    fn resume(&mut self, dedupe_window: Millis) -> Result<Resume, StoreError>;
    /// A second handle that only loads contacts, for loading while a commit runs on
    /// this one (it sees committed state only).
    fn reader(&self) -> Result<Box<dyn ContactReader>, StoreError>;
    /// Commits a batch; returns the sequence number of its last outbox entry.
    fn commit(&mut self, batch: Batch) -> Result<Option<i64>, StoreError>;
    /// Everything held about a contact, as JSON; `None` when nothing is held.
    fn export_contact(&mut self, contact: &str) -> Result<Option<Value>, StoreError>;
    /// Erases a contact; an opted-out contact stays on the opt-out list as a salted hash.
    fn forget(&mut self, contact: &str) -> Result<Forgotten, StoreError>;
    /// Removes transcripts older than `retention`, counted back from the store's clock.
    fn purge(&mut self, retention: &Retention) -> Result<Purged, StoreError>;
    /// The bundle the store last ran (as JSON), with the versions it keeps for runs.
    fn stored_bundle(&self) -> Result<Option<String>, StoreError>;
    /// The engine-wide state as last committed, as JSON.
    fn global_state(&self) -> Result<Option<String>, StoreError>;
    /// Calls `visit` with every stored contact and timer state (for a deploy's plan).
    fn scan_state(
        &mut self,
        visit: &mut dyn FnMut(StateKind, &str) -> Result<(), String>,
    ) -> Result<(), StoreError>;
    /// In one transaction: rewrites every stored contact and timer state with `rewrite`
    /// (when given), the engine-wide state with `global`, and saves `bundle` as the
    /// store's bundle.
    fn deploy(
        &mut self,
        rewrite: Option<&Rewrite<'_>>,
        global: Option<&str>,
        bundle: &str,
    ) -> Result<(), StoreError>;
}

/// Rewrites one stored state (a deploy renumbering flow versions).
pub type Rewrite<'a> = dyn Fn(StateKind, &str) -> Result<String, String> + 'a;

/// A kind of stored state, for [`Store::scan_state`] and [`Store::deploy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateKind {
    Contact,
    Timer,
}

/// The schema, one entry per version: entry N-1 migrates version N-1 to N.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
     CREATE TABLE contacts (id TEXT PRIMARY KEY, state TEXT NOT NULL);
     CREATE TABLE timers (key INTEGER PRIMARY KEY, due INTEGER NOT NULL, contact TEXT, state TEXT NOT NULL);
     CREATE INDEX timers_contact ON timers (contact);
     CREATE TABLE seen (seq INTEGER PRIMARY KEY, newest INTEGER NOT NULL, keys BLOB NOT NULL);
     CREATE TABLE outbox (seq INTEGER PRIMARY KEY, lines TEXT NOT NULL, audit TEXT NOT NULL);
     CREATE TABLE audit (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, contact TEXT, records TEXT NOT NULL);
     CREATE INDEX audit_contact ON audit (contact);
     CREATE TABLE transcript (seq INTEGER PRIMARY KEY, at INTEGER NOT NULL, contact TEXT NOT NULL, transactional INTEGER NOT NULL, n INTEGER NOT NULL, lines TEXT NOT NULL);
     CREATE INDEX transcript_contact ON transcript (contact);
     CREATE TABLE forgotten_opt_outs (hash TEXT PRIMARY KEY) WITHOUT ROWID;
     INSERT INTO meta (key, value) VALUES ('salt', lower(hex(randomblob(16))));",
    // 2: a live host's inbox (events acknowledged to a platform, not yet processed) and
    // its deliveries (released actions and what became of them).
    "CREATE TABLE inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, line TEXT NOT NULL);
     CREATE TABLE deliveries (seq INTEGER PRIMARY KEY AUTOINCREMENT, action TEXT NOT NULL UNIQUE,
         contact TEXT, channel TEXT, line TEXT NOT NULL, status TEXT NOT NULL,
         attempts INTEGER NOT NULL DEFAULT 0, code TEXT, detail TEXT, updated INTEGER NOT NULL);
     CREATE INDEX deliveries_open ON deliveries (status) WHERE status IN ('pending', 'in_flight');
     CREATE INDEX deliveries_detail ON deliveries (detail);",
    // 3: what the KPI report reads: one row per run (started, first answer, end,
    // conversion), counts of sends by flow version and hour, and an index of the
    // contacts a person must look at (an open handoff, a draft waiting), which the engine
    // marks as it writes them.
    "CREATE TABLE runs (run INTEGER PRIMARY KEY, contact TEXT, flow TEXT NOT NULL,
         version TEXT NOT NULL, variant TEXT, channel TEXT, started INTEGER NOT NULL,
         responded INTEGER, ended INTEGER, outcome TEXT, handoff INTEGER NOT NULL DEFAULT 0,
         error INTEGER NOT NULL DEFAULT 0, opted_out INTEGER NOT NULL DEFAULT 0,
         goal_deadline INTEGER, converted INTEGER);
     CREATE INDEX runs_report ON runs (started, flow, version, variant, responded, ended,
         handoff, error, opted_out, goal_deadline, converted);
     CREATE INDEX runs_contact ON runs (contact);
     CREATE TABLE activity (flow TEXT NOT NULL, version TEXT NOT NULL, hour INTEGER NOT NULL,
         kind TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (flow, version, hour, kind))
         WITHOUT ROWID;
     CREATE INDEX deliveries_contact ON deliveries (contact);
     ALTER TABLE contacts ADD COLUMN attention INTEGER NOT NULL DEFAULT 0;
     UPDATE contacts SET attention = 1 WHERE json_extract(state, '$.handoff') IS NOT NULL
         OR instr(state, '\"drafts\":[') > 0;
     CREATE INDEX contacts_attention ON contacts (id) WHERE attention;
     CREATE TABLE hidden (comment TEXT PRIMARY KEY, contact TEXT, flow TEXT NOT NULL,
         version TEXT NOT NULL, at INTEGER NOT NULL, restored INTEGER NOT NULL DEFAULT 0)
         WITHOUT ROWID;
     CREATE INDEX hidden_contact ON hidden (contact);",
];

/// The store on SQLite.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    salt: String,
    /// Whether any erased contact is kept on the opt-out list (when none is, a new
    /// contact needs no hash and no lookup).
    any_erased: bool,
}

impl SqliteStore {
    /// Opens the store at `path` for its host, creating it only when no file exists there,
    /// and migrates an older schema. Anything else that is not a Rapport store of a schema
    /// this build reads (an empty file, another program's database, a newer schema, a
    /// folder or a pipe) is refused with the reason: starting afresh over it would forget
    /// every opt-out and consent it held.
    pub fn open(path: &Path, lock: &HostLock) -> Result<Self, StoreError> {
        if lock.store != path {
            return Err(StoreError::Damaged(format!(
                "the lock held is for `{}`, not `{}`",
                lock.store.display(),
                path.display()
            )));
        }
        // Only a path where nothing exists makes a new store (a dangling symlink is not
        // followed to create one).
        let create = matches!(std::fs::symlink_metadata(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound);
        Self::open_as(path, create)
    }

    /// The schema version of the store at `path`, read without changing anything (`None`
    /// when it is not a Rapport store).
    pub fn schema_of(path: &Path) -> Result<Option<i64>, StoreError> {
        use rusqlite::OpenFlags;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        if app != APPLICATION_ID {
            return Ok(None);
        }
        Ok(Some(
            conn.query_row("PRAGMA user_version", [], |r| r.get(0))?,
        ))
    }

    /// Opens an existing store without taking the host's lock: for reading what a host
    /// committed (`rapport audit export`, `rapport rollout status`) while it runs.
    pub fn open_existing(path: &Path) -> Result<Self, StoreError> {
        Self::open_as(path, false)
    }

    fn open_as(path: &Path, create: bool) -> Result<Self, StoreError> {
        use rusqlite::OpenFlags;
        let not_a_store = |detail: String| StoreError::NotAStore {
            path: path.to_path_buf(),
            detail,
        };
        if !create {
            match std::fs::metadata(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(StoreError::Missing {
                        path: path.to_path_buf(),
                    })
                }
                Err(_) => {}
                Ok(m) if !m.is_file() => {
                    return Err(not_a_store("not a regular file".into()));
                }
                Ok(m) if m.len() == 0 => {
                    return Err(not_a_store(
                        "an empty file: if it was a store, restore it from a backup; \
                         to start a new store on purpose, delete the file"
                            .into(),
                    ));
                }
                Ok(_) => {}
            }
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = Connection::open_with_flags(path, flags).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        // The first read fails on a file that is not an SQLite database.
        let app: i64 = conn
            .query_row("PRAGMA application_id", [], |r| r.get(0))
            .map_err(|e| not_a_store(e.to_string()))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if !create && app != APPLICATION_ID {
            return Err(not_a_store(
                "an SQLite database written by another program".into(),
            ));
        }
        if !create && version == 0 {
            return Err(StoreError::Damaged(format!(
                "`{}` is marked as a Rapport store but has no schema",
                path.display()
            )));
        }
        if version > SCHEMA {
            return Err(StoreError::Newer {
                path: path.to_path_buf(),
                found: version,
            });
        }
        // First: a live host's other connections may be writing, and even switching to
        // WAL (a no-op on a store already in WAL) waits for their locks.
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk when it returns, so a released action's state change
        // survives a power cut too, not only a crash of the process.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let mut store = SqliteStore {
            conn,
            path: path.to_path_buf(),
            salt: String::new(),
            any_erased: false,
        };
        store.migrate(version)?;
        store.salt = store
            .meta("salt")?
            .ok_or_else(|| StoreError::Damaged("the salt of erased contacts is missing".into()))?;
        store.any_erased = store
            .conn
            .query_row("SELECT 1 FROM forgotten_opt_outs LIMIT 1", [], |_| Ok(()))
            .optional()?
            .is_some();
        Ok(store)
    }

    fn migrate(&mut self, from: i64) -> Result<(), StoreError> {
        if from >= SCHEMA {
            return Ok(());
        }
        // IMMEDIATE: the write lock is taken (waiting for it) at the start, so a read
        // inside never has to be upgraded while another connection writes.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for (i, sql) in MIGRATIONS.iter().enumerate() {
            if (i as i64) >= from {
                tx.execute_batch(sql)?;
            }
        }
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.pragma_update(None, "user_version", SCHEMA)?;
        tx.commit()?;
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// The salted hash under which an erased contact who opted out is kept.
    fn erased_hash(&self, contact: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.salt.as_bytes());
        h.update([0u8]);
        h.update(contact.as_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The engine-wide state as last committed (clock, per-version metrics and rollout
    /// stages), as JSON.
    pub fn engine_state(&self) -> Result<Option<String>, StoreError> {
        self.meta("global")
    }

    /// A host's own bookkeeping value, kept with the store (`serve` notes which bundle
    /// file it last started with).
    pub fn host_note(&self, key: &str) -> Result<Option<String>, StoreError> {
        self.meta(&format!("host.{key}"))
    }

    /// Sets a host's bookkeeping value.
    pub fn set_host_note(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            params![format!("host.{key}"), value],
        )?;
        Ok(())
    }

    /// The engine's clock as last committed.
    pub fn clock(&self) -> Result<Option<Millis>, StoreError> {
        let Some(g) = self.meta("global")? else {
            return Ok(None);
        };
        let v: Value = serde_json::from_str(&g)
            .map_err(|e| StoreError::Damaged(format!("unreadable engine state: {e}")))?;
        Ok(v.get("clock").and_then(Value::as_i64))
    }

    /// Remembers the retention of the bundle being run, for a later `rapport purge`.
    pub fn save_retention(&mut self, r: &Retention) -> Result<(), StoreError> {
        let v = json!({"transcripts": r.transcripts, "transactional": r.transactional});
        self.conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('retention', ?1)",
            [v.to_string()],
        )?;
        Ok(())
    }

    /// The retention saved by the last run.
    pub fn saved_retention(&self) -> Result<Option<Retention>, StoreError> {
        let Some(text) = self.meta("retention")? else {
            return Ok(None);
        };
        let v: Value = serde_json::from_str(&text).map_err(damaged("saved retention"))?;
        Ok(
            match (v["transcripts"].as_u64(), v["transactional"].as_u64()) {
                (Some(transcripts), Some(transactional)) => Some(Retention {
                    transcripts,
                    transactional,
                }),
                _ => None,
            },
        )
    }

    /// The actions in the outbox, parsed.
    fn outbox_lines(&self) -> Result<Vec<Value>, StoreError> {
        let mut q = self.conn.prepare("SELECT lines FROM outbox ORDER BY seq")?;
        let mut out = Vec::new();
        for lines in q.query_map([], |r| r.get::<_, String>(0))? {
            for line in lines?.lines() {
                out.push(serde_json::from_str(line).map_err(damaged("outbox"))?);
            }
        }
        Ok(out)
    }

    /// How many contacts the store holds.
    pub fn contacts(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM contacts", [], |r| r.get::<_, i64>(0))?
            .max(0) as u64)
    }
}

fn damaged(what: &str) -> impl Fn(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::Damaged(format!("{what}: {e}"))
}

impl ContactReader for SqliteStore {
    fn load_contact(&mut self, contact: &str) -> Result<Loaded, StoreError> {
        let state: Option<String> = self
            .conn
            .prepare_cached("SELECT state FROM contacts WHERE id = ?1")?
            .query_row([contact], |r| r.get(0))
            .optional()?;
        if let Some(s) = state {
            return Ok(Loaded::Saved(s));
        }
        if !self.any_erased {
            return Ok(Loaded::New);
        }
        let erased: Option<i64> = self
            .conn
            .prepare_cached("SELECT 1 FROM forgotten_opt_outs WHERE hash = ?1")?
            .query_row([self.erased_hash(contact)], |r| r.get(0))
            .optional()?;
        Ok(if erased.is_some() {
            Loaded::OptedOut
        } else {
            Loaded::New
        })
    }
}

impl Store for SqliteStore {
    fn stored_bundle(&self) -> Result<Option<String>, StoreError> {
        self.stored_bundle_json()
    }

    fn global_state(&self) -> Result<Option<String>, StoreError> {
        self.meta("global")
    }

    fn scan_state(
        &mut self,
        visit: &mut dyn FnMut(StateKind, &str) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        self.scan(visit)
    }

    fn deploy(
        &mut self,
        rewrite: Option<&Rewrite<'_>>,
        global: Option<&str>,
        bundle: &str,
    ) -> Result<(), StoreError> {
        self.rewrite(rewrite, global, bundle)
    }

    fn resume(&mut self, dedupe_window: Millis) -> Result<Resume, StoreError> {
        let seen_since = self.clock()?.map(|c| c.saturating_sub(dedupe_window));
        let mut r = Resume {
            global: self.meta("global")?,
            ..Resume::default()
        };
        let mut q = self.conn.prepare("SELECT state FROM timers ORDER BY key")?;
        r.timers = q
            .query_map([], |row| row.get(0))?
            .collect::<Result<_, _>>()?;
        // Each row holds the ids of one batch, 12 bytes each, and the batch's newest time.
        let mut q = self
            .conn
            .prepare("SELECT newest, keys FROM seen WHERE newest >= ?1 ORDER BY seq")?;
        let rows = q.query_map([seen_since.unwrap_or(i64::MIN)], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
        })?;
        for row in rows {
            let (newest, keys) = row?;
            for k in keys.chunks_exact(12) {
                let mut a = [0u8; 8];
                a.copy_from_slice(&k[..8]);
                let mut b = [0u8; 4];
                b.copy_from_slice(&k[8..]);
                r.seen
                    .push((u64::from_le_bytes(a), u32::from_le_bytes(b), newest));
            }
        }
        drop(q);
        if let Some(c) = self.meta("checkpoint")? {
            let v: Value = serde_json::from_str(&c).map_err(damaged("input checkpoint"))?;
            r.checkpoint = Some(Checkpoint {
                source: v["source"].as_str().unwrap_or_default().to_string(),
                offset: v["offset"].as_u64().unwrap_or(0),
                line: v["line"].as_u64().unwrap_or(0),
                fingerprint: v["fingerprint"].as_u64().unwrap_or(0),
            });
        }
        let mut q = self
            .conn
            .prepare("SELECT seq, lines, audit FROM outbox ORDER BY seq")?;
        let rows = q.query_map([], |row| {
            Ok((
                row.get::<_, i64>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
            ))
        })?;
        for row in rows {
            let (seq, lines, audit) = row?;
            r.outbox.extend(lines.lines().map(|l| Pending {
                seq,
                line: l.to_string(),
            }));
            r.outbox_audit.extend(audit.lines().map(str::to_string));
        }
        drop(q);
        Ok(r)
    }

    fn reader(&self) -> Result<Box<dyn ContactReader>, StoreError> {
        Ok(Box::new(SqliteStore::open_existing(&self.path)?))
    }

    fn commit(&mut self, batch: Batch) -> Result<Option<i64>, StoreError> {
        // IMMEDIATE: the write lock is taken (waiting for it) at the start, so a read
        // inside never has to be upgraded while another connection writes.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut last = None;
        {
            let mut put = tx.prepare_cached(
                "INSERT INTO contacts (id, state, attention) VALUES (?1, ?2, ?3)
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state,
                     attention = excluded.attention",
            )?;
            for (id, state) in &batch.changes.contacts {
                let attention = batch.changes.attention.contains(id);
                put.execute(params![id, state, attention])?;
            }
            let mut put = tx.prepare_cached(
                "INSERT OR REPLACE INTO timers (key, due, contact, state) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut drop = tx.prepare_cached("DELETE FROM timers WHERE key = ?1")?;
            for t in &batch.changes.timers {
                match &t.state {
                    Some(s) => put.execute(params![t.key as i64, t.due, t.contact, s])?,
                    None => drop.execute([t.key as i64])?,
                };
            }
            if let Some(newest) = batch.changes.seen.iter().map(|s| s.2).max() {
                let mut keys = Vec::with_capacity(batch.changes.seen.len() * 12);
                for (a, b, _) in &batch.changes.seen {
                    keys.extend_from_slice(&a.to_le_bytes());
                    keys.extend_from_slice(&b.to_le_bytes());
                }
                tx.prepare_cached("INSERT INTO seen (newest, keys) VALUES (?1, ?2)")?
                    .execute(params![newest, keys])?;
            }
            if let Some(before) = batch.forget_ids_before {
                tx.execute("DELETE FROM seen WHERE newest < ?1", [before])?;
            }
            let mut put =
                tx.prepare_cached("INSERT INTO audit (at, contact, records) VALUES (?1, ?2, ?3)")?;
            for a in &batch.audit {
                put.execute(params![a.at, a.contact, a.records])?;
            }
            // Consecutive lines of one contact and one retention go in one row.
            let mut put = tx.prepare_cached(
                "INSERT INTO transcript (at, contact, transactional, n, lines) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut i = 0;
            while let Some(first) = batch.transcript.get(i) {
                let transactional = first.purpose.as_deref() == Some("transactional");
                let mut lines = String::new();
                let mut at = first.at;
                let mut n = 0;
                while let Some(t) = batch.transcript.get(i) {
                    if t.contact != first.contact
                        || (t.purpose.as_deref() == Some("transactional")) != transactional
                    {
                        break;
                    }
                    let line = json!({
                        "at": rapport_engine::format_time(t.at),
                        "direction": t.direction,
                        "channel": t.channel,
                        "purpose": t.purpose,
                        "text": t.text,
                    });
                    if n > 0 {
                        lines.push('\n');
                    }
                    lines.push_str(&line.to_string());
                    at = at.max(t.at);
                    n += 1;
                    i += 1;
                }
                put.execute(params![at, first.contact, transactional, n, lines])?;
            }
            if let Some(up_to) = batch.released_up_to {
                tx.execute("DELETE FROM outbox WHERE seq <= ?1", [up_to])?;
            }
            let mut audit_lines = String::new();
            if batch.audit_in_outbox {
                for a in &batch.audit {
                    if !audit_lines.is_empty() {
                        audit_lines.push('\n');
                    }
                    audit_lines.push_str(&a.records);
                }
            }
            if !batch.outbox.is_empty() || !audit_lines.is_empty() {
                let mut lines = String::new();
                for (k, o) in batch.outbox.iter().enumerate() {
                    if k > 0 {
                        lines.push('\n');
                    }
                    lines.push_str(&o.line);
                }
                tx.prepare_cached("INSERT INTO outbox (lines, audit) VALUES (?1, ?2)")?
                    .execute([lines, audit_lines])?;
                last = Some(tx.last_insert_rowid());
            }
            write_runs(&tx, &batch.changes.runs)?;
            let mut put = tx.prepare_cached(
                "INSERT INTO activity (flow, version, hour, kind, n) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (flow, version, hour, kind) DO UPDATE SET n = n + excluded.n",
            )?;
            for a in &batch.activity {
                put.execute(params![a.flow, a.version, a.hour, a.kind, a.n as i64])?;
            }
            let mut put = tx.prepare_cached(
                "INSERT OR IGNORE INTO hidden (comment, contact, flow, version, at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            for h in &batch.hidden {
                put.execute(params![h.comment, h.contact, h.flow, h.version, h.at])?;
            }
            // A comment put back counts once, for the flow version that hid it.
            let mut mark = tx.prepare_cached(
                "UPDATE hidden SET restored = 1 WHERE comment = ?1 AND restored = 0",
            )?;
            let mut count = tx.prepare_cached(
                "INSERT INTO activity (flow, version, hour, kind, n)
                 SELECT flow, version, ?2, 'restored', 1 FROM hidden WHERE comment = ?1
                 ON CONFLICT (flow, version, hour, kind) DO UPDATE SET n = n + 1",
            )?;
            for (comment, at) in &batch.restored {
                if mark.execute([comment])? > 0 {
                    count.execute(params![comment, hour_of(*at)])?;
                }
            }
            let mut meta =
                tx.prepare_cached("INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)")?;
            meta.execute(params!["global", batch.changes.global])?;
            if let Some(c) = &batch.checkpoint {
                let v = json!({"source": c.source, "offset": c.offset, "line": c.line,
                    "fingerprint": c.fingerprint});
                meta.execute(params!["checkpoint", v.to_string()])?;
                // The inbox's events up to the checkpoint are processed: their state
                // change is in this transaction.
                if c.source == INBOX_SOURCE {
                    tx.prepare_cached("DELETE FROM inbox WHERE seq <= ?1")?
                        .execute([c.offset as i64])?;
                }
            }
        }
        tx.commit()?;
        Ok(last)
    }

    fn export_contact(&mut self, contact: &str) -> Result<Option<Value>, StoreError> {
        let state: Option<String> = self
            .conn
            .query_row("SELECT state FROM contacts WHERE id = ?1", [contact], |r| {
                r.get(0)
            })
            .optional()?;
        let state: Option<Value> = match state {
            Some(s) => Some(serde_json::from_str(&s).map_err(damaged("contact state"))?),
            None => None,
        };
        let rows = |sql: &str| -> Result<Vec<Value>, StoreError> {
            let mut q = self.conn.prepare(sql)?;
            let out = q
                .query_map([contact], |r| r.get::<_, String>(0))?
                .collect::<Result<Vec<_>, _>>()?;
            out.iter()
                .map(|s| serde_json::from_str(s).map_err(damaged("stored record")))
                .collect()
        };
        let mut audit: Vec<Value> = Vec::new();
        let mut q = self
            .conn
            .prepare("SELECT records FROM audit WHERE contact = ?1 ORDER BY seq")?;
        for records in q.query_map([contact], |r| r.get::<_, String>(0))? {
            for line in records?.lines() {
                audit.push(serde_json::from_str(line).map_err(damaged("audit record"))?);
            }
        }
        drop(q);
        let timers = rows("SELECT state FROM timers WHERE contact = ?1 ORDER BY key")?;
        let outbox: Vec<Value> = self
            .outbox_lines()?
            .into_iter()
            .filter(|v| v.get("contact").and_then(Value::as_str) == Some(contact))
            .collect();
        let mut transcript: Vec<Value> = Vec::new();
        let mut q = self
            .conn
            .prepare("SELECT lines FROM transcript WHERE contact = ?1 ORDER BY seq")?;
        for lines in q.query_map([contact], |r| r.get::<_, String>(0))? {
            for line in lines?.lines() {
                transcript.push(serde_json::from_str(line).map_err(damaged("transcript"))?);
            }
        }
        drop(q);
        let erased_opt_out = matches!(self.load_contact(contact)?, Loaded::OptedOut);
        if state.is_none()
            && audit.is_empty()
            && transcript.is_empty()
            && timers.is_empty()
            && !erased_opt_out
        {
            return Ok(None);
        }
        let s = state.unwrap_or(Value::Null);
        // Small maps are stored as lists of pairs; show them as objects.
        let as_object = |v: &Value| -> Value {
            match v.as_array() {
                Some(pairs) => Value::Object(
                    pairs
                        .iter()
                        .filter_map(|p| Some((p.get(0)?.as_str()?.to_string(), p.get(1)?.clone())))
                        .collect(),
                ),
                None => Value::Null,
            }
        };
        let opt_out_records: Vec<Value> = audit
            .iter()
            .filter(|a| {
                matches!(
                    a.get("kind").and_then(Value::as_str),
                    Some("opt_out" | "opt_in" | "opt_out_pending")
                )
            })
            .cloned()
            .collect();
        // A live host's record of what was sent to the contact and what became of it.
        let deliveries: Vec<Value> = {
            let mut q = self.conn.prepare(
                "SELECT line, status, attempts, code, detail FROM deliveries WHERE contact = ?1 ORDER BY seq",
            )?;
            let rows = q
                .query_map([contact], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, i64>(2)?,
                        r.get::<_, Option<String>>(3)?,
                        r.get::<_, Option<String>>(4)?,
                    ))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter()
                .map(|(line, status, attempts, code, detail)| {
                    json!({"action": serde_json::from_str::<Value>(&line).unwrap_or(Value::Null),
                        "status": status, "attempts": attempts, "code": code, "detail": detail})
                })
                .collect()
        };
        let run_history = self.contact_runs(contact)?;
        Ok(Some(json!({
            "contact": contact,
            "run_history": run_history,
            "deliveries": deliveries,
            "profile": as_object(&s["profile"]),
            "consent_ledger": s["consent"],
            "opted_out": s["opted_out"].as_bool().unwrap_or(erased_opt_out),
            "opt_out_records": opt_out_records,
            "erased_but_opted_out": erased_opt_out && s.is_null(),
            "handoff": s["handoff"],
            "runs": s["runs"],
            "last_inbound": as_object(&s["last_inbound"]),
            "timers": timers,
            "transcript": transcript,
            "audit_trail": audit,
            "unreleased_actions": outbox,
        })))
    }

    fn forget(&mut self, contact: &str) -> Result<Forgotten, StoreError> {
        let hash = self.erased_hash(contact);
        // Erased rows are overwritten with zeros, not only unlinked.
        self.conn.pragma_update(None, "secure_delete", "ON")?;
        // IMMEDIATE: the write lock is taken (waiting for it) at the start, so a read
        // inside never has to be upgraded while another connection writes.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let state: Option<String> = tx
            .query_row("SELECT state FROM contacts WHERE id = ?1", [contact], |r| {
                r.get(0)
            })
            .optional()?;
        let opted_out = match &state {
            Some(s) => serde_json::from_str::<Value>(s)
                .map_err(damaged("contact state"))?
                .get("opted_out")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            None => false,
        };
        let mut f = Forgotten {
            found: state.is_some(),
            ..Forgotten::default()
        };
        tx.execute("DELETE FROM contacts WHERE id = ?1", [contact])?;
        f.timers = tx.execute("DELETE FROM timers WHERE contact = ?1", [contact])?;
        f.transcript = tx
            .query_row(
                "SELECT coalesce(sum(n), 0) FROM transcript WHERE contact = ?1",
                [contact],
                |r| r.get::<_, i64>(0),
            )?
            .max(0) as usize;
        tx.execute("DELETE FROM transcript WHERE contact = ?1", [contact])?;
        f.audit = tx.execute("DELETE FROM audit WHERE contact = ?1", [contact])?;
        // The report's run rows stay, without the contact: counts, not a person.
        tx.execute(
            "UPDATE runs SET contact = NULL WHERE contact = ?1",
            [contact],
        )?;
        tx.execute("DELETE FROM hidden WHERE contact = ?1", [contact])?;
        // Unreleased actions (and audit lines) for the contact: rewrite each outbox row
        // without them.
        let rows: Vec<(i64, String, String)> = {
            let mut q = tx.prepare("SELECT seq, lines, audit FROM outbox")?;
            let rows = q
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            rows
        };
        let theirs = |l: &&str| {
            serde_json::from_str::<Value>(l)
                .ok()
                .and_then(|v| {
                    v.get("contact")
                        .and_then(Value::as_str)
                        .map(|c| c == contact)
                })
                .unwrap_or(false)
        };
        for (seq, lines, audit) in rows {
            let (gone, kept): (Vec<&str>, Vec<&str>) = lines.lines().partition(theirs);
            let (gone_audit, kept_audit): (Vec<&str>, Vec<&str>) = audit.lines().partition(theirs);
            if !gone.is_empty() || !gone_audit.is_empty() {
                f.outbox += gone.len();
                tx.execute(
                    "UPDATE outbox SET lines = ?1, audit = ?2 WHERE seq = ?3",
                    params![kept.join("\n"), kept_audit.join("\n"), seq],
                )?;
            }
        }
        // A live host's record of the contact's deliveries holds the texts sent.
        f.outbox += tx.execute("DELETE FROM deliveries WHERE contact = ?1", [contact])?;
        f.found |= f.timers + f.transcript + f.audit + f.outbox > 0;
        if opted_out {
            tx.execute(
                "INSERT OR IGNORE INTO forgotten_opt_outs (hash) VALUES (?1)",
                [&hash],
            )?;
            f.opted_out_kept_as_hash = true;
        } else if state.is_some() {
            // Erased before, came back and is not opted out now: the old hash goes.
            tx.execute("DELETE FROM forgotten_opt_outs WHERE hash = ?1", [&hash])?;
        } else {
            let kept: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM forgotten_opt_outs WHERE hash = ?1",
                    [&hash],
                    |r| r.get(0),
                )
                .optional()?;
            f.opted_out_kept_as_hash = kept.is_some();
        }
        tx.commit()?;
        self.any_erased |= opted_out;
        // Older copies of the contact's pages (earlier versions of its rows, the WAL)
        // would still hold its data: rewrite the database without them.
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        self.conn.execute_batch("VACUUM")?;
        let busy: i64 = self
            .conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        f.wal_busy = busy != 0;
        Ok(f)
    }

    fn purge(&mut self, retention: &Retention) -> Result<Purged, StoreError> {
        let Some(now) = self.clock()? else {
            return Ok(Purged::default());
        };
        let cutoff = |secs: u64| {
            now.saturating_sub(i64::try_from(secs).unwrap_or(i64::MAX).saturating_mul(1000))
        };
        let which = "FROM transcript WHERE
               (transactional = 1 AND at < ?1) OR (transactional = 0 AND at < ?2)";
        let limits = params![
            cutoff(retention.transactional),
            cutoff(retention.transcripts)
        ];
        // IMMEDIATE: the write lock is taken (waiting for it) at the start, so a read
        // inside never has to be upgraded while another connection writes.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let removed: i64 = tx.query_row(
            &format!("SELECT coalesce(sum(n), 0) {which}"),
            limits,
            |r| r.get(0),
        )?;
        tx.execute(&format!("DELETE {which}"), limits)?;
        tx.commit()?;
        let removed = removed.max(0) as usize;
        Ok(Purged {
            now: Some(now),
            transcript: removed,
        })
    }
}

/// What one batch said about one run, merged: a run started and answered in the same
/// batch (most are) is one row written once, not a row written and then updated.
#[derive(Default)]
struct RunRow<'a> {
    started: Option<&'a rapport_engine::RunFact>,
    responded: Option<Millis>,
    ended: Option<(Millis, &'a str, bool, bool)>,
    opted_out: bool,
    converted: Option<Millis>,
}

/// Applies what happened to runs to the report's `runs` table.
fn write_runs(
    tx: &rusqlite::Transaction<'_>,
    facts: &[rapport_engine::RunFact],
) -> Result<(), StoreError> {
    use rapport_engine::RunFact;
    let mut order: Vec<u64> = Vec::new();
    let mut rows: std::collections::HashMap<u64, RunRow<'_>> = std::collections::HashMap::new();
    for f in facts {
        let run = match f {
            RunFact::Started { run, .. }
            | RunFact::Responded { run, .. }
            | RunFact::Ended { run, .. }
            | RunFact::OptedOut { run }
            | RunFact::Converted { run, .. } => *run,
        };
        let row = rows.entry(run).or_insert_with(|| {
            order.push(run);
            RunRow::default()
        });
        match f {
            RunFact::Started { .. } => row.started = Some(f),
            // The first answer and the first conversion count; later ones change nothing.
            RunFact::Responded { at, .. } => {
                row.responded.get_or_insert(*at);
            }
            RunFact::Converted { at, .. } => {
                row.converted.get_or_insert(*at);
            }
            RunFact::Ended {
                at,
                outcome,
                handoff,
                error,
                ..
            } => row.ended = Some((*at, outcome.as_str(), *handoff, *error)),
            RunFact::OptedOut { .. } => row.opted_out = true,
        }
    }
    for run in order {
        let Some(row) = rows.get(&run) else { continue };
        let (ended, outcome, handoff, error) = match row.ended {
            Some((at, outcome, handoff, error)) => (Some(at), Some(outcome), handoff, error),
            None => (None, None, false, false),
        };
        if let Some(RunFact::Started {
            contact,
            flow,
            version,
            variant,
            channel,
            at,
            goal_deadline,
            ..
        }) = row.started
        {
            tx.prepare_cached(
                "INSERT OR REPLACE INTO runs (run, contact, flow, version, variant, channel,
                 started, goal_deadline, responded, ended, outcome, handoff, error, opted_out,
                 converted) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )?
            .execute(params![
                run as i64,
                contact,
                flow,
                version,
                variant,
                channel,
                at,
                goal_deadline,
                row.responded,
                ended,
                outcome,
                handoff,
                error,
                row.opted_out,
                row.converted
            ])?;
        } else {
            tx.prepare_cached(
                "UPDATE runs SET responded = coalesce(responded, ?2),
                     ended = coalesce(?3, ended), outcome = coalesce(?4, outcome),
                     handoff = CASE WHEN ?3 IS NULL THEN handoff ELSE ?5 END,
                     error = CASE WHEN ?3 IS NULL THEN error ELSE ?6 END,
                     opted_out = max(opted_out, ?7), converted = coalesce(converted, ?8)
                 WHERE run = ?1",
            )?
            .execute(params![
                run as i64,
                row.responded,
                ended,
                outcome,
                handoff,
                error,
                row.opted_out,
                row.converted
            ])?;
        }
    }
    Ok(())
}
