//! A live host's two tables beside the engine's state. They are written through one
//! connection ([`Live`]), apart from the engine's, so a webhook's commit never waits for
//! the engine's batch, and read through others ([`LiveReader`]):
//!
//! - the **inbox**: events a platform was told were received (answered 200). A webhook
//!   is acknowledged only after its events are committed here; the engine consumes them
//!   in order, and the commit that holds their state change removes them (the checkpoint
//!   of source [`INBOX_SOURCE`]).
//! - the **deliveries**: every released action and what became of it (`pending`,
//!   `in_flight` while a call is out, `delivered`, `failed`), so a restart carries on
//!   with what was not delivered and counts what was in flight.

use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::StoreError;

/// The checkpoint source of a live host's inbox: its offset is the last inbox sequence
/// number processed.
pub const INBOX_SOURCE: &str = "inbox";

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

/// A live host's tables: one connection, and one transaction for everything written
/// together ([`Live::write`]), so webhooks, releases and delivery outcomes arriving at
/// once share one sync to disk. Open the store with [`crate::SqliteStore::open`] first:
/// that creates or migrates it.
pub struct Live {
    conn: Connection,
}

/// A delivery's new status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub action: String,
    /// `in_flight`, `pending` (waiting to retry), `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
    pub code: Option<String>,
    /// The platform's message id (delivered) or error text (failed).
    pub detail: Option<String>,
    /// The action to deliver from now on, when it changes (a send resent in another
    /// form, such as its template after the platform found the window closed).
    pub line: Option<String>,
    /// Applies only when the delivery's status is this one now (a status webhook that
    /// resends a delivered message must find it still delivered: the same status twice
    /// resends it once).
    pub only_from: Option<String>,
}

/// An audit record that no engine step wrote (a webhook with a bad signature, a part of
/// a payload that could not be understood).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAudit {
    pub at: i64,
    pub contact: Option<String>,
    /// The record as JSON.
    pub record: String,
}

/// What to write in one transaction.
#[derive(Debug, Clone, Default)]
pub struct LiveBatch {
    /// Event lines for the inbox.
    pub events: Vec<String>,
    pub audit: Vec<HostAudit>,
    /// Actions released by the engine.
    pub released: Vec<DeliveryRow>,
    /// New statuses, each with the event that reports it (appended to the inbox only
    /// when the delivery is still recorded: an erasure removes a contact's).
    pub marks: Vec<(Mark, Option<String>)>,
}

/// What [`Live::write`] did.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// The inbox sequence number of each event.
    pub seqs: Vec<u64>,
    /// Per released action: whether it is new (one released again after a restart is
    /// already there).
    pub new: Vec<bool>,
    /// Per mark: whether the delivery was there to mark (an erasure removes a contact's).
    pub marked: Vec<bool>,
    /// Per mark: the inbox sequence number of its event, when one was appended.
    pub outcome_seqs: Vec<Option<u64>>,
}

impl Live {
    pub fn open(path: &Path) -> Result<Live, StoreError> {
        Ok(Live {
            conn: connect(path)?,
        })
    }

    /// Writes `batch` in one transaction; when this returns, it is on disk.
    pub fn write(&mut self, batch: &LiveBatch, now: i64) -> Result<Written, StoreError> {
        // IMMEDIATE: the write lock is taken (waiting for it) at the start, so a read
        // inside never has to be upgraded while another connection writes.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut out = Written::default();
        {
            let mut put = tx.prepare_cached("INSERT INTO inbox (line) VALUES (?1)")?;
            for line in &batch.events {
                put.execute([line])?;
                out.seqs.push(tx.last_insert_rowid() as u64);
            }
            let mut put =
                tx.prepare_cached("INSERT INTO audit (at, contact, records) VALUES (?1, ?2, ?3)")?;
            for a in &batch.audit {
                put.execute(params![a.at, a.contact, a.record])?;
            }
            let mut put = tx.prepare_cached(
                "INSERT OR IGNORE INTO deliveries (action, contact, channel, line, status, updated)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
            )?;
            for r in &batch.released {
                out.new
                    .push(put.execute(params![r.action, r.contact, r.channel, r.line, now])? > 0);
            }
            let mut put = tx.prepare_cached(
                "UPDATE deliveries SET status = ?2, attempts = ?3, code = ?4, detail = ?5, updated = ?6,
                 line = COALESCE(?7, line) WHERE action = ?1 AND (?8 IS NULL OR status = ?8)",
            )?;
            let mut append = tx.prepare_cached("INSERT INTO inbox (line) VALUES (?1)")?;
            // A flow's send that reaches an end (the platform took it, or it failed) is
            // counted for the report, by flow version and hour.
            let mut count = tx.prepare_cached(
                "INSERT INTO activity (flow, version, hour, kind, n)
                 SELECT json_extract(line, '$.flow'), json_extract(line, '$.version'), ?2, ?3, 1
                 FROM deliveries WHERE action = ?1 AND json_extract(line, '$.type') = 'send'
                     AND json_extract(line, '$.flow') IS NOT NULL
                     AND json_extract(line, '$.version') IS NOT NULL
                 ON CONFLICT (flow, version, hour, kind) DO UPDATE SET n = n + 1",
            )?;
            for (m, event) in &batch.marks {
                let n = put.execute(params![
                    m.action,
                    m.status,
                    m.attempts,
                    m.code,
                    m.detail,
                    now,
                    m.line,
                    m.only_from
                ])?;
                out.marked.push(n > 0);
                let kind = match m.status.as_str() {
                    "delivered" => Some("delivered".to_string()),
                    "failed" => Some(format!("failed:{}", m.code.as_deref().unwrap_or("unknown"))),
                    _ => None,
                };
                if let (Some(kind), true) = (kind, n > 0) {
                    count.execute(params![m.action, crate::hour_of(now), kind])?;
                }
                out.outcome_seqs.push(match event {
                    Some(line) if n > 0 => {
                        append.execute([line])?;
                        Some(tx.last_insert_rowid() as u64)
                    }
                    _ => None,
                });
            }
        }
        tx.commit()?;
        Ok(out)
    }

    /// Forgets finished deliveries last changed before `before` (milliseconds).
    pub fn prune(&mut self, before: i64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM deliveries WHERE status IN ('delivered', 'failed') AND updated < ?1",
            [before],
        )?)
    }
}

/// Reads a live host's tables (a connection of its own: reading never waits for a write).
pub struct LiveReader {
    conn: Connection,
}

impl LiveReader {
    pub fn open(path: &Path) -> Result<LiveReader, StoreError> {
        Ok(LiveReader {
            conn: connect(path)?,
        })
    }

    /// Up to `limit` inbox events after sequence number `after`, in order.
    pub fn inbox_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        let mut q = self
            .conn
            .prepare_cached("SELECT seq, line FROM inbox WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = q.query_map(params![after as i64, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A value of the store's meta table (`global`: the engine-wide state as committed).
    pub fn meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Contacts with a handoff open, as committed, and when the oldest opened
    /// (milliseconds; `None` when none is open or its time was not kept).
    pub fn open_handoffs(&self) -> Result<(u64, Option<i64>), StoreError> {
        let (n, oldest): (i64, Option<i64>) = self.conn.query_row(
            "SELECT count(*), min(nullif(json_extract(state, '$.handoff.opened'), 0))
             FROM contacts WHERE attention AND json_extract(state, '$.handoff') IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        Ok((n.max(0) as u64, oldest))
    }

    /// Inbox events waiting to be processed.
    pub fn inbox_waiting(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM inbox", [], |r| r.get::<_, i64>(0))?
            .max(0) as u64)
    }

    /// The actions not delivered yet (`pending` or `in_flight`), in release order.
    pub fn unfinished(&self) -> Result<Vec<DeliveryRow>, StoreError> {
        let mut q = self.conn.prepare(
            "SELECT action, contact, channel, line, status, attempts FROM deliveries
             WHERE status IN ('pending', 'in_flight') ORDER BY seq",
        )?;
        let rows = q.query_map([], |r| {
            Ok(DeliveryRow {
                action: r.get(0)?,
                contact: r.get(1)?,
                channel: r.get(2)?,
                line: r.get(3)?,
                status: r.get(4)?,
                attempts: r.get::<_, i64>(5)?.clamp(0, i64::from(u32::MAX)) as u32,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// An action's status and attempts, if it was released.
    pub fn status(&self, action: &str) -> Result<Option<(String, u32)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT status, attempts FROM deliveries WHERE action = ?1",
                [action],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get::<_, i64>(1)?.clamp(0, i64::from(u32::MAX)) as u32,
                    ))
                },
            )
            .optional()?)
    }

    /// The delivered message whose platform message id is `id`.
    pub fn by_message_id(&self, id: &str) -> Result<Option<DeliveryRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT action, contact, channel, line, status, attempts FROM deliveries
                 WHERE detail = ?1 AND status = 'delivered' LIMIT 1",
                [id],
                |r| {
                    Ok(DeliveryRow {
                        action: r.get(0)?,
                        contact: r.get(1)?,
                        channel: r.get(2)?,
                        line: r.get(3)?,
                        status: r.get(4)?,
                        attempts: r.get::<_, i64>(5)?.clamp(0, i64::from(u32::MAX)) as u32,
                    })
                },
            )
            .optional()?)
    }
}

/// One released action and where its delivery stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRow {
    pub action: String,
    pub contact: Option<String>,
    pub channel: Option<String>,
    /// The action as JSON.
    pub line: String,
    /// `pending`, `in_flight`, `delivered` or `failed`.
    pub status: String,
    pub attempts: u32,
}
