//! What the KPI report reads: the runs of a period, grouped by flow version and variant,
//! their first-answer delays, their days, and the counts of sends and moderation actions.

use rusqlite::{params, OptionalExtension};

use crate::{SqliteStore, StoreError};
use rapport_engine::event::Millis;

/// Which runs a report covers: those started in `[from, to)`, of one flow or all.
#[derive(Debug, Clone)]
pub struct Period<'a> {
    pub from: Millis,
    pub to: Millis,
    pub flow: Option<&'a str>,
}

/// The runs of one flow version and variant started in the period.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunCounts {
    pub flow: String,
    pub version: String,
    pub variant: Option<String>,
    pub enrolled: u64,
    pub finished: u64,
    pub handoffs: u64,
    pub errors: u64,
    pub opted_out: u64,
    pub converted: u64,
    /// Runs of a flow with a goal.
    pub with_goal: u64,
    /// Runs whose goal window is still open at the period's end, not converted yet.
    pub goal_open: u64,
    /// Finished runs that never reached a handoff.
    pub automated: u64,
}

/// A run's first answer: how long after its start (milliseconds), and its day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub flow: String,
    pub version: String,
    pub day: i64,
    pub delay: Millis,
}

/// One flow's runs of one day (days since the epoch, UTC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Day {
    pub flow: String,
    pub day: i64,
    pub started: u64,
    pub converted: u64,
    pub opted_out: u64,
    pub handoffs: u64,
}

/// Counts of one kind of activity of a flow version over the period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivityTotal {
    pub flow: String,
    pub version: String,
    pub kind: String,
    pub n: u64,
}

/// Everything the report reads, read in one transaction so the parts agree.
#[derive(Debug, Clone, Default)]
pub struct ReportData {
    pub counts: Vec<RunCounts>,
    pub responses: Vec<Response>,
    pub days: Vec<Day>,
    pub activity: Vec<ActivityTotal>,
    /// Whether a live host ever recorded a delivery outcome (else `delivered` is unknown).
    pub live_deliveries: bool,
}

const DAY: Millis = 86_400_000;

impl SqliteStore {
    /// A contact's runs, oldest first, as the report records them.
    pub fn contact_runs(&self, contact: &str) -> Result<Vec<serde_json::Value>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT run, flow, version, variant, channel, started, responded, ended, outcome,
                 handoff, opted_out, converted FROM runs WHERE contact = ?1 ORDER BY run",
        )?;
        let time = |v: Option<i64>| v.map(rapport_engine::format_time);
        let rows = q.query_map([contact], |r| {
            Ok(serde_json::json!({
                "run": r.get::<_, i64>(0)?,
                "flow": r.get::<_, String>(1)?,
                "version": r.get::<_, String>(2)?,
                "variant": r.get::<_, Option<String>>(3)?,
                "channel": r.get::<_, Option<String>>(4)?,
                "started": time(r.get(5)?),
                "first_response": time(r.get(6)?),
                "ended": time(r.get(7)?),
                "outcome": r.get::<_, Option<String>>(8)?,
                "handoff": r.get::<_, bool>(9)?,
                "opted_out": r.get::<_, bool>(10)?,
                "converted": time(r.get(11)?),
            }))
        })?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Contacts a person must look at (an open handoff, or maybe a draft waiting), with
    /// their state as JSON, and the due time of each open handoff's SLA timer.
    pub fn attention(&self, limit: usize) -> Result<Vec<(String, String)>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT id, state FROM contacts
             WHERE json_extract(state, '$.handoff') IS NOT NULL OR instr(state, '\"drafts\":') > 0
             LIMIT ?1",
        )?;
        let rows = q.query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// When a timer is due (`None`: it fired or was cancelled).
    pub fn timer_due(&self, key: u64) -> Result<Option<Millis>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT due FROM timers WHERE key = ?1")?
            .query_row([key as i64], |r| r.get(0))
            .optional()?)
    }

    /// Reads what the KPI report of `period` needs.
    pub fn report_data(&mut self, period: &Period<'_>) -> Result<ReportData, StoreError> {
        let tx = self.conn.transaction()?;
        let mut data = ReportData::default();
        let (from, to, flow) = (period.from, period.to, period.flow);
        {
            let mut q = tx.prepare(
                "SELECT flow, version, variant, count(*), count(ended),
                     sum(ended IS NOT NULL AND handoff), sum(ended IS NOT NULL AND error),
                     sum(opted_out), count(converted), count(goal_deadline),
                     sum(goal_deadline IS NOT NULL AND converted IS NULL AND goal_deadline > ?2),
                     sum(ended IS NOT NULL AND NOT handoff)
                 FROM runs WHERE started >= ?1 AND started < ?2 AND (?3 IS NULL OR flow = ?3)
                 GROUP BY flow, version, variant ORDER BY flow, min(started), variant",
            )?;
            let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
            let rows = q.query_map(params![from, to, flow], |r| {
                Ok(RunCounts {
                    flow: r.get(0)?,
                    version: r.get(1)?,
                    variant: r.get(2)?,
                    enrolled: n(r.get(3)?),
                    finished: n(r.get(4)?),
                    handoffs: n(r.get(5)?),
                    errors: n(r.get(6)?),
                    opted_out: n(r.get(7)?),
                    converted: n(r.get(8)?),
                    with_goal: n(r.get(9)?),
                    goal_open: n(r.get(10)?),
                    automated: n(r.get(11)?),
                })
            })?;
            for row in rows {
                data.counts.push(row?);
            }
            let mut q = tx.prepare(
                "SELECT flow, version, started, responded - started FROM runs
                 WHERE started >= ?1 AND started < ?2 AND (?3 IS NULL OR flow = ?3)
                     AND responded IS NOT NULL",
            )?;
            let rows = q.query_map(params![from, to, flow], |r| {
                let started: i64 = r.get(2)?;
                Ok(Response {
                    flow: r.get(0)?,
                    version: r.get(1)?,
                    day: started.div_euclid(DAY),
                    delay: r.get::<_, i64>(3)?.max(0),
                })
            })?;
            for row in rows {
                data.responses.push(row?);
            }
            let mut q = tx.prepare(
                "SELECT flow, started / 86400000 - (started < 0 AND started % 86400000 != 0) AS day,
                     count(*), count(converted), sum(opted_out), sum(handoff)
                 FROM runs WHERE started >= ?1 AND started < ?2 AND (?3 IS NULL OR flow = ?3)
                 GROUP BY flow, day ORDER BY flow, day",
            )?;
            let rows = q.query_map(params![from, to, flow], |r| {
                let n = |v: Option<i64>| v.unwrap_or(0).max(0) as u64;
                Ok(Day {
                    flow: r.get(0)?,
                    day: r.get(1)?,
                    started: n(r.get(2)?),
                    converted: n(r.get(3)?),
                    opted_out: n(r.get(4)?),
                    handoffs: n(r.get(5)?),
                })
            })?;
            for row in rows {
                data.days.push(row?);
            }
            let mut q = tx.prepare(
                "SELECT flow, version, kind, sum(n) FROM activity
                 WHERE hour >= ?1 AND hour < ?2 AND (?3 IS NULL OR flow = ?3)
                 GROUP BY flow, version, kind ORDER BY flow, version, kind",
            )?;
            let first_hour = crate::hour_of(from);
            let end_hour = crate::hour_of(to.saturating_sub(1)) + 1;
            let rows = q.query_map(params![first_hour, end_hour, flow], |r| {
                Ok(ActivityTotal {
                    flow: r.get(0)?,
                    version: r.get(1)?,
                    kind: r.get(2)?,
                    n: r.get::<_, i64>(3)?.max(0) as u64,
                })
            })?;
            for row in rows {
                data.activity.push(row?);
            }
            data.live_deliveries = tx
                .query_row(
                    "SELECT 1 FROM activity WHERE kind = 'delivered' OR kind LIKE 'failed:%' LIMIT 1",
                    [],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
        }
        tx.commit()?;
        Ok(data)
    }
}
