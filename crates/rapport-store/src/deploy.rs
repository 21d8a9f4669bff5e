//! A deploy's part in the store: reading every stored state for the plan, then
//! rewriting it, the engine-wide state and the stored bundle in one transaction, so a
//! crash leaves either the old deployment or the new one, never half of each.

use rusqlite::params;

use crate::{Rewrite, SqliteStore, StateKind, StoreError};

impl SqliteStore {
    pub(crate) fn stored_bundle_json(&self) -> Result<Option<String>, StoreError> {
        self.meta("bundle")
    }

    pub(crate) fn scan(
        &mut self,
        visit: &mut dyn FnMut(StateKind, &str) -> Result<(), String>,
    ) -> Result<(), StoreError> {
        for (kind, sql) in [
            (StateKind::Contact, "SELECT state FROM contacts"),
            (StateKind::Timer, "SELECT state FROM timers"),
        ] {
            let mut q = self.conn.prepare(sql)?;
            let mut rows = q.query([])?;
            while let Some(row) = rows.next()? {
                let state: String = row.get(0)?;
                visit(kind, &state).map_err(StoreError::Damaged)?;
            }
        }
        Ok(())
    }

    pub(crate) fn rewrite(
        &mut self,
        rewrite: Option<&Rewrite<'_>>,
        global: Option<&str>,
        bundle: &str,
    ) -> Result<(), StoreError> {
        // IMMEDIATE: the write lock is taken (waiting for it) at the start, so a read
        // inside never has to be upgraded while another connection writes.
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        if let Some(rewrite) = rewrite {
            for (kind, select, update) in [
                (
                    StateKind::Contact,
                    "SELECT rowid, state FROM contacts",
                    "UPDATE contacts SET state = ?2 WHERE rowid = ?1",
                ),
                (
                    StateKind::Timer,
                    "SELECT key, state FROM timers",
                    "UPDATE timers SET state = ?2 WHERE key = ?1",
                ),
            ] {
                let rows: Vec<(i64, String)> = {
                    let mut q = tx.prepare(select)?;
                    let r = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
                    r.collect::<Result<_, _>>()?
                };
                let mut put = tx.prepare(update)?;
                for (key, state) in rows {
                    let new = rewrite(kind, &state).map_err(StoreError::Damaged)?;
                    if new != state {
                        put.execute(params![key, new])?;
                    }
                }
            }
        }
        if let Some(g) = global {
            tx.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('global', ?1)",
                [g],
            )?;
        }
        tx.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('bundle', ?1)",
            [bundle],
        )?;
        tx.commit()?;
        Ok(())
    }
}
