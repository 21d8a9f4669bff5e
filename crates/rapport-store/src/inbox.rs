//! A live host's two tables beside the engine's state, each used through a connection
//! of its own so a webhook's commit never waits for the engine's batch:
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
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.busy_timeout(Duration::from_secs(10))?;
    Ok(conn)
}

/// The inbox of a store opened by its host (open the store with
/// [`crate::SqliteStore::open`] first: that creates or migrates it).
pub struct Inbox {
    conn: Connection,
}

impl Inbox {
    pub fn open(path: &Path) -> Result<Inbox, StoreError> {
        Ok(Inbox {
            conn: connect(path)?,
        })
    }

    /// Appends event lines in one transaction; returns the sequence number of each.
    /// When this returns, they are on disk.
    pub fn append(&mut self, lines: &[String]) -> Result<Vec<u64>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut seqs = Vec::with_capacity(lines.len());
        {
            let mut put = tx.prepare_cached("INSERT INTO inbox (line) VALUES (?1)")?;
            for line in lines {
                put.execute([line])?;
                seqs.push(tx.last_insert_rowid() as u64);
            }
        }
        tx.commit()?;
        Ok(seqs)
    }

    /// Up to `limit` events after sequence number `after`, in order.
    pub fn after(&self, after: u64, limit: usize) -> Result<Vec<(u64, String)>, StoreError> {
        let mut q = self
            .conn
            .prepare_cached("SELECT seq, line FROM inbox WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let rows = q.query_map(params![after as i64, limit as i64], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Events waiting to be processed.
    pub fn waiting(&self) -> Result<u64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM inbox", [], |r| r.get::<_, i64>(0))?
            .max(0) as u64)
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

/// The deliveries of a store opened by its host.
pub struct Deliveries {
    conn: Connection,
}

impl Deliveries {
    pub fn open(path: &Path) -> Result<Deliveries, StoreError> {
        Ok(Deliveries {
            conn: connect(path)?,
        })
    }

    /// Records released actions as `pending`, in one transaction; returns which of them
    /// are new (an action released again after a restart is already there).
    pub fn release(&mut self, rows: &[DeliveryRow], now: i64) -> Result<Vec<bool>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut new = Vec::with_capacity(rows.len());
        {
            let mut put = tx.prepare_cached(
                "INSERT OR IGNORE INTO deliveries (action, contact, channel, line, status, updated)
                 VALUES (?1, ?2, ?3, ?4, 'pending', ?5)",
            )?;
            for r in rows {
                new.push(put.execute(params![r.action, r.contact, r.channel, r.line, now])? > 0);
            }
        }
        tx.commit()?;
        Ok(new)
    }

    /// Sets an action's status (and the attempts made, the platform's code and text).
    pub fn mark(
        &mut self,
        action: &str,
        status: &str,
        attempts: u32,
        code: Option<&str>,
        detail: Option<&str>,
        now: i64,
    ) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "UPDATE deliveries SET status = ?2, attempts = ?3, code = ?4, detail = ?5, updated = ?6
                 WHERE action = ?1",
            )?
            .execute(params![action, status, attempts, code, detail, now])?;
        Ok(())
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

    /// An action's status, if it was released.
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

    /// The action and contact of a platform message id (the `detail` of a delivered
    /// send), for status webhooks.
    pub fn by_detail(&self, detail: &str) -> Result<Option<(String, Option<String>)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT action, contact FROM deliveries WHERE detail = ?1 LIMIT 1",
                [detail],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Forgets finished deliveries last changed before `before` (milliseconds).
    pub fn prune(&mut self, before: i64) -> Result<usize, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM deliveries WHERE status IN ('delivered', 'failed') AND updated < ?1",
            [before],
        )?)
    }
}
