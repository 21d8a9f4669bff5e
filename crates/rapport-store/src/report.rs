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
    /// The index of the run's flow version and variant in [`ReportData::counts`].
    pub group: usize,
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

    /// Contacts a person must look at, with their state as JSON: those with an open
    /// handoff, oldest first, and those that may have a draft waiting; at most `limit` of
    /// each (a contact can be in both).
    pub fn attention(&self, limit: usize) -> Result<Vec<(String, String)>, StoreError> {
        // Both read the partial index of the contacts marked `attention`.
        let mut out: Vec<(String, String)> = Vec::new();
        for sql in [
            "SELECT id, state FROM contacts WHERE attention
             AND json_extract(state, '$.handoff') IS NOT NULL
             ORDER BY json_extract(state, '$.handoff.opened'), id LIMIT ?1",
            "SELECT id, state FROM contacts WHERE attention
             AND instr(state, '\"drafts\":[') > 0 ORDER BY id LIMIT ?1",
        ] {
            let mut q = self.conn.prepare_cached(sql)?;
            let rows = q.query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
            for row in rows {
                let (id, state): (String, String) = row?;
                if !out.iter().any(|(seen, _)| *seen == id) {
                    out.push((id, state));
                }
            }
        }
        Ok(out)
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
            // One pass over the period's runs, in the order of the covering index
            // `runs_report`, grouped here: far faster than SQL's grouping on text keys.
            let mut q = tx.prepare(
                "SELECT flow, version, variant, started, responded, ended, handoff, error,
                     opted_out, goal_deadline, converted
                 FROM runs WHERE started >= ?1 AND started < ?2 AND (?3 IS NULL OR flow = ?3)",
            )?;
            let mut rows = q.query(params![from, to, flow])?;
            let mut days: std::collections::BTreeMap<(usize, i64), Day> = Default::default();
            let mut flows: Vec<String> = Vec::new();
            while let Some(r) = rows.next()? {
                let text = |i: usize| -> Result<Option<&str>, StoreError> {
                    Ok(r.get_ref(i)?
                        .as_str_or_null()
                        .map_err(rusqlite::Error::from)?)
                };
                let (f, v, variant) = (text(0)?.unwrap_or(""), text(1)?.unwrap_or(""), text(2)?);
                let group =
                    match data.counts.iter().position(|c| {
                        c.flow == f && c.version == v && c.variant.as_deref() == variant
                    }) {
                        Some(g) => g,
                        None => {
                            data.counts.push(RunCounts {
                                flow: f.to_string(),
                                version: v.to_string(),
                                variant: variant.map(str::to_string),
                                ..RunCounts::default()
                            });
                            data.counts.len() - 1
                        }
                    };
                let flow_ix = match flows.iter().position(|x| x == f) {
                    Some(i) => i,
                    None => {
                        flows.push(f.to_string());
                        flows.len() - 1
                    }
                };
                let started: i64 = r.get(3)?;
                let responded: Option<i64> = r.get(4)?;
                let ended: Option<i64> = r.get(5)?;
                let handoff: bool = r.get(6)?;
                let error: bool = r.get(7)?;
                let opted_out: bool = r.get(8)?;
                let deadline: Option<i64> = r.get(9)?;
                let converted: Option<i64> = r.get(10)?;
                let c = &mut data.counts[group];
                c.enrolled += 1;
                if ended.is_some() {
                    c.finished += 1;
                    c.handoffs += u64::from(handoff);
                    c.errors += u64::from(error);
                    c.automated += u64::from(!handoff);
                }
                c.opted_out += u64::from(opted_out);
                c.converted += u64::from(converted.is_some());
                if let Some(d) = deadline {
                    c.with_goal += 1;
                    c.goal_open += u64::from(converted.is_none() && d > to);
                }
                let day = started.div_euclid(DAY);
                if let Some(at) = responded {
                    data.responses.push(Response {
                        group,
                        day,
                        delay: (at - started).max(0),
                    });
                }
                let d = days.entry((flow_ix, day)).or_insert_with(|| Day {
                    flow: f.to_string(),
                    day,
                    started: 0,
                    converted: 0,
                    opted_out: 0,
                    handoffs: 0,
                });
                d.started += 1;
                d.converted += u64::from(converted.is_some());
                d.opted_out += u64::from(opted_out);
                d.handoffs += u64::from(handoff);
            }
            drop(rows);
            // Flows by name, their versions in the order of their first run.
            let mut order: Vec<usize> = (0..data.counts.len()).collect();
            order.sort_by(|&a, &b| {
                data.counts[a]
                    .flow
                    .cmp(&data.counts[b].flow)
                    .then(a.cmp(&b))
            });
            let mut moved = vec![0; order.len()];
            for (new, &old) in order.iter().enumerate() {
                moved[old] = new;
            }
            let counts = std::mem::take(&mut data.counts);
            let mut slots: Vec<Option<RunCounts>> = counts.into_iter().map(Some).collect();
            data.counts = order.iter().filter_map(|&i| slots[i].take()).collect();
            for r in &mut data.responses {
                r.group = moved[r.group];
            }
            let mut days: Vec<Day> = days.into_values().collect();
            days.sort_by(|a, b| a.flow.cmp(&b.flow).then(a.day.cmp(&b.day)));
            data.days = days;
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
