//! The KPI report of a store: per flow, version and variant, what the automation did and
//! earned over a period. `rapport report`, `GET /v1/report` and the console's overview
//! all read it from here, so they show the same numbers.
//!
//! Every number is computed from the store's `runs` table (one row per run: its start,
//! variant, first answer, end, handoff, charged opt-out and conversion) and its
//! `activity` counts (sends, suppressions, replies, hides, reviews, delivery outcomes).
//! The JSON form ([`Report`]) is a contract other tools read: fields are only added.

mod render;
pub mod stats;

use std::collections::BTreeMap;

use rapport_bundle::{Bundle, Purpose};
use rapport_engine::event::Millis;
use rapport_store::report::{Period, ReportData};
use serde::Serialize;

pub use render::{chart_svg, charts, html, percent, seconds, table, to_csv, Series};

/// Below this many runs a rate means little: the report says so instead of showing it.
pub const SMALL_SAMPLE: u64 = 30;

/// The report of one period.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub flows: Vec<FlowReport>,
    /// Every flow together: the console's tiles.
    pub totals: Totals,
    /// Per flow and day (UTC): runs started, conversions, opt-outs, handoffs and the
    /// median first answer, for charts over time.
    pub days: Vec<FlowDays>,
}

/// Every flow version of the period together.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    pub enrolled: u64,
    pub finished: u64,
    pub converted: u64,
    /// Runs of flows with a goal: what `conversion_rate` is over.
    pub enrolled_with_goal: u64,
    /// converted / enrolled over the flows with a goal.
    pub conversion_rate: Option<f64>,
    pub opt_out_rate: Option<f64>,
    pub handoff_rate: Option<f64>,
    pub automation_share: Option<f64>,
    pub sent: u64,
    pub delivered: Option<u64>,
    pub first_response_s: FirstResponse,
}

/// One flow version's KPIs.
#[derive(Debug, Clone, Serialize)]
pub struct FlowReport {
    pub flow: String,
    pub version: String,
    /// `marketing` or `transactional` (`null` for a version the store's bundle no longer
    /// names).
    pub purpose: Option<&'static str>,
    pub enrolled: u64,
    pub finished: u64,
    /// Runs whose goal window is still open (not converted yet: they may still).
    pub open: u64,
    /// Runs not finished at the end of the period.
    pub active: u64,
    pub converted: u64,
    /// converted / enrolled (`null` for a flow with no goal, or no run).
    pub conversion_rate: Option<f64>,
    pub conversion_ci95: Option<[f64; 2]>,
    /// Finished runs charged with an opt-out, that reached a handoff, that hit an error.
    pub opted_out: u64,
    pub handoffs: u64,
    pub errors: u64,
    /// The guard metrics, over finished runs, as the rollout guards compute them.
    pub opt_out_rate: Option<f64>,
    pub handoff_rate: Option<f64>,
    pub error_rate: Option<f64>,
    /// Finished runs that ended without a handoff.
    pub automation_share: Option<f64>,
    /// Fewer runs than [`SMALL_SAMPLE`]: the rates mean little yet.
    pub small_sample: bool,
    pub sends: Sends,
    pub comments: Comments,
    pub first_response_s: FirstResponse,
    pub variants: Vec<VariantReport>,
}

/// What became of the flow version's sends in the period (by the hour they happened).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sends {
    /// Released by the engine to the channel.
    pub sent: u64,
    /// Accepted by the platform (`null`: no live host delivered anything from this
    /// store, as with `rapport run`, whose output is delivered by whatever reads it).
    pub delivered: Option<u64>,
    /// Not sent, by reason (`no_consent`, `outside_window`, `rate_limited`, …).
    pub suppressed: BTreeMap<String, u64>,
    /// Refused by the platform, by its error code.
    pub failed: BTreeMap<String, u64>,
}

/// A comment flow's moderation: public replies, hidden comments, comments sent to review,
/// and hidden comments a person put back (`agent` event `restored`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Comments {
    pub replies: u64,
    pub hidden: u64,
    pub reviewed: u64,
    pub restored: u64,
    /// restored / hidden: the share of hides a person undid (`null` with nothing hidden).
    pub false_positive_rate: Option<f64>,
}

/// How long after a run started its first message left, in seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FirstResponse {
    pub median: Option<f64>,
    pub p90: Option<f64>,
    /// Runs that answered.
    pub n: u64,
}

/// One variant of a flow version with `send one of`.
#[derive(Debug, Clone, Serialize)]
pub struct VariantReport {
    pub variant: String,
    pub enrolled: u64,
    pub converted: u64,
    pub conversion_rate: Option<f64>,
    pub conversion_ci95: Option<[f64; 2]>,
    /// The relative change of the conversion rate against the first variant
    /// (0.64: 64% higher); `null` for the first and when the first converted nobody.
    pub uplift: Option<f64>,
    /// P(this variant's rate > the first's), under Beta(1 + x, 1 + n − x) posteriors;
    /// `null` for the first variant.
    pub chance_to_beat_first: Option<f64>,
    pub small_sample: bool,
}

/// One flow's days.
#[derive(Debug, Clone, Serialize)]
pub struct FlowDays {
    pub flow: String,
    pub days: Vec<DayPoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DayPoint {
    /// The day, `YYYY-MM-DD` (UTC).
    pub day: String,
    pub started: u64,
    pub converted: u64,
    pub opted_out: u64,
    pub handoffs: u64,
    pub first_response_median_s: Option<f64>,
}

impl FlowReport {
    fn empty(flow: &str, version: &str) -> FlowReport {
        FlowReport {
            flow: flow.to_string(),
            version: version.to_string(),
            purpose: None,
            enrolled: 0,
            finished: 0,
            open: 0,
            active: 0,
            converted: 0,
            conversion_rate: None,
            conversion_ci95: None,
            opted_out: 0,
            handoffs: 0,
            errors: 0,
            opt_out_rate: None,
            handoff_rate: None,
            error_rate: None,
            automation_share: None,
            small_sample: false,
            sends: Sends::default(),
            comments: Comments::default(),
            first_response_s: FirstResponse::default(),
            variants: Vec::new(),
        }
    }
}

/// Rounds a rate to 4 decimals, as the report shows it.
fn round4(v: f64) -> f64 {
    (v * 10_000.0).round() / 10_000.0
}

fn rate(x: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| round4(x as f64 / n as f64))
}

fn ci(x: u64, n: u64) -> Option<[f64; 2]> {
    stats::wilson(x, n).map(|(lo, hi)| [round4(lo), round4(hi)])
}

const DAY: Millis = 86_400_000;

/// A time as RFC 3339 (UTC, seconds).
pub fn format_time(at: Millis) -> String {
    jiff::Timestamp::from_millisecond(at)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

fn format_day(day: i64) -> String {
    jiff::Timestamp::from_millisecond(day.saturating_mul(DAY))
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// The purpose of every flow version the bundle names (current, previous and retired).
fn purposes(bundle: Option<&Bundle>) -> BTreeMap<(String, String), &'static str> {
    let mut out = BTreeMap::new();
    let Some(b) = bundle else { return out };
    let all = b
        .flows
        .iter()
        .flat_map(|f| std::iter::once(f).chain(f.previous.as_deref()))
        .chain(&b.retired);
    for f in all {
        let p = match f.purpose {
            Purpose::Marketing => "marketing",
            Purpose::Transactional => "transactional",
        };
        out.insert((f.name.clone(), f.version.clone()), p);
    }
    out
}

/// The declared variants of every flow version the bundle names, in order.
fn variant_orders(bundle: Option<&Bundle>) -> BTreeMap<(String, String), Vec<String>> {
    let mut out = BTreeMap::new();
    let Some(b) = bundle else { return out };
    for f in b
        .flows
        .iter()
        .flat_map(|f| std::iter::once(f).chain(f.previous.as_deref()))
        .chain(&b.retired)
    {
        out.insert((f.name.clone(), f.version.clone()), f.variants.clone());
    }
    out
}

/// Computes the report of `period` from what the store read.
pub fn compute(period: &Period<'_>, data: &ReportData, bundle: Option<&Bundle>) -> Report {
    let purposes = purposes(bundle);
    let variant_order = variant_orders(bundle);
    // Flow versions in the order the store gave them (by flow, then first run).
    let mut flows: Vec<FlowReport> = Vec::new();
    let mut variant_rows: BTreeMap<(String, String), Vec<&rapport_store::report::RunCounts>> =
        BTreeMap::new();
    for c in &data.counts {
        let key = (c.flow.clone(), c.version.clone());
        if !flows
            .iter()
            .any(|f| f.flow == c.flow && f.version == c.version)
        {
            flows.push(FlowReport {
                purpose: purposes.get(&key).copied(),
                ..FlowReport::empty(&c.flow, &c.version)
            });
        }
        variant_rows.entry(key).or_default().push(c);
    }
    let (mut goal_runs, mut automated_all) = (0u64, 0u64);
    for f in &mut flows {
        let rows = variant_rows
            .get(&(f.flow.clone(), f.version.clone()))
            .cloned()
            .unwrap_or_default();
        let (mut handoffs, mut errors, mut opted_out, mut with_goal, mut automated) =
            (0, 0, 0, 0, 0);
        for r in &rows {
            f.enrolled += r.enrolled;
            f.finished += r.finished;
            f.open += r.goal_open;
            f.converted += r.converted;
            handoffs += r.handoffs;
            errors += r.errors;
            opted_out += r.opted_out;
            with_goal += r.with_goal;
            automated += r.automated;
        }
        f.active = f.enrolled - f.finished.min(f.enrolled);
        (f.opted_out, f.handoffs, f.errors) = (opted_out, handoffs, errors);
        if with_goal > 0 {
            goal_runs += f.enrolled;
        }
        automated_all += automated;
        if with_goal > 0 {
            f.conversion_rate = rate(f.converted, f.enrolled);
            f.conversion_ci95 = ci(f.converted, f.enrolled);
        }
        f.opt_out_rate = rate(opted_out, f.finished);
        f.handoff_rate = rate(handoffs, f.finished);
        f.error_rate = rate(errors, f.finished);
        f.automation_share = rate(automated, f.finished);
        f.small_sample = f.enrolled < SMALL_SAMPLE;
        // Variants in the order the flow declares them (the first is the baseline), then
        // any the bundle no longer names, by name.
        let declared = variant_order.get(&(f.flow.clone(), f.version.clone()));
        let rank = |name: &str| {
            declared
                .and_then(|d| d.iter().position(|v| v == name))
                .unwrap_or(usize::MAX)
        };
        let mut variants: Vec<_> = rows.iter().filter(|r| r.variant.is_some()).collect();
        variants.sort_by(|a, b| {
            let (a, b) = (
                a.variant.as_deref().unwrap_or_default(),
                b.variant.as_deref().unwrap_or_default(),
            );
            rank(a).cmp(&rank(b)).then(a.cmp(b))
        });
        let first = variants.first().map(|r| (r.converted, r.enrolled));
        for (i, r) in variants.iter().enumerate() {
            let conversion_rate = (with_goal > 0)
                .then(|| rate(r.converted, r.enrolled))
                .flatten();
            let (uplift, chance) = match (i, first) {
                (0, _) | (_, None) => (None, None),
                (_, Some((x0, n0))) => {
                    // Against the exact rates, not the rounded ones.
                    let up = match conversion_rate {
                        Some(_) if x0 > 0 && n0 > 0 => Some(round4(
                            (r.converted as f64 / r.enrolled as f64) / (x0 as f64 / n0 as f64)
                                - 1.0,
                        )),
                        _ => None,
                    };
                    let chance = (with_goal > 0 && n0 > 0 && r.enrolled > 0)
                        .then(|| round4(stats::chance_to_beat(x0, n0, r.converted, r.enrolled)));
                    (up, chance)
                }
            };
            f.variants.push(VariantReport {
                variant: r.variant.clone().unwrap_or_default(),
                enrolled: r.enrolled,
                converted: r.converted,
                conversion_rate,
                conversion_ci95: (with_goal > 0)
                    .then(|| ci(r.converted, r.enrolled))
                    .flatten(),
                uplift,
                chance_to_beat_first: chance,
                small_sample: r.enrolled < SMALL_SAMPLE,
            });
        }
    }
    // Sends and moderation. A flow version that sent in the period but started no run in
    // it (its runs started before) is listed too, with its sends and no runs.
    for a in &data.activity {
        if !flows
            .iter()
            .any(|f| f.flow == a.flow && f.version == a.version)
        {
            flows.push(FlowReport {
                purpose: purposes.get(&(a.flow.clone(), a.version.clone())).copied(),
                small_sample: true,
                ..FlowReport::empty(&a.flow, &a.version)
            });
        }
        let Some(f) = flows
            .iter_mut()
            .find(|f| f.flow == a.flow && f.version == a.version)
        else {
            continue;
        };
        match a.kind.as_str() {
            "sent" => f.sends.sent += a.n,
            "delivered" => *f.sends.delivered.get_or_insert(0) += a.n,
            "reply" => f.comments.replies += a.n,
            "hide" => f.comments.hidden += a.n,
            "review" => f.comments.reviewed += a.n,
            "restored" => f.comments.restored += a.n,
            k => {
                if let Some(reason) = k.strip_prefix("suppressed:") {
                    *f.sends.suppressed.entry(reason.to_string()).or_default() += a.n;
                } else if let Some(code) = k.strip_prefix("failed:") {
                    *f.sends.failed.entry(code.to_string()).or_default() += a.n;
                }
            }
        }
    }
    for f in &mut flows {
        f.comments.false_positive_rate = rate(f.comments.restored, f.comments.hidden);
    }
    if data.live_deliveries {
        for f in &mut flows {
            f.sends.delivered.get_or_insert(0);
        }
    }
    // First answers.
    let mut delays: BTreeMap<(&str, &str), Vec<i64>> = BTreeMap::new();
    let mut by_day: BTreeMap<(&str, i64), Vec<i64>> = BTreeMap::new();
    for r in &data.responses {
        let Some(c) = data.counts.get(r.group) else {
            continue;
        };
        delays
            .entry((c.flow.as_str(), c.version.as_str()))
            .or_default()
            .push(r.delay);
        by_day
            .entry((c.flow.as_str(), r.day))
            .or_default()
            .push(r.delay);
    }
    let seconds = |ms: Option<i64>| ms.map(|v| round4(v as f64 / 1000.0));
    let mut all: Vec<i64> = data.responses.iter().map(|r| r.delay).collect();
    all.sort_unstable();
    let sum = |pick: fn(&FlowReport) -> u64| flows.iter().map(pick).sum::<u64>();
    let (finished, goal_converted) = (
        sum(|f| f.finished),
        flows
            .iter()
            .filter(|f| f.conversion_rate.is_some())
            .map(|f| f.converted)
            .sum::<u64>(),
    );
    let totals = Totals {
        enrolled: sum(|f| f.enrolled),
        finished,
        converted: sum(|f| f.converted),
        enrolled_with_goal: goal_runs,
        conversion_rate: rate(goal_converted, goal_runs),
        opt_out_rate: rate(sum(|f| f.opted_out), finished),
        handoff_rate: rate(sum(|f| f.handoffs), finished),
        automation_share: rate(automated_all, finished),
        sent: sum(|f| f.sends.sent),
        delivered: flows
            .iter()
            .filter_map(|f| f.sends.delivered)
            .reduce(|a, b| a + b)
            .or(data.live_deliveries.then_some(0)),
        first_response_s: FirstResponse {
            median: seconds(stats::quantile(&all, 0.5)),
            p90: seconds(stats::quantile(&all, 0.9)),
            n: all.len() as u64,
        },
    };
    for f in &mut flows {
        if let Some(v) = delays.get_mut(&(f.flow.as_str(), f.version.as_str())) {
            v.sort_unstable();
            f.first_response_s = FirstResponse {
                median: seconds(stats::quantile(v, 0.5)),
                p90: seconds(stats::quantile(v, 0.9)),
                n: v.len() as u64,
            };
        }
    }
    let mut days: Vec<FlowDays> = Vec::new();
    for d in &data.days {
        if days.last().is_none_or(|f| f.flow != d.flow) {
            days.push(FlowDays {
                flow: d.flow.clone(),
                days: Vec::new(),
            });
        }
        let median = by_day.get_mut(&(d.flow.as_str(), d.day)).and_then(|v| {
            v.sort_unstable();
            stats::quantile(v, 0.5)
        });
        if let Some(f) = days.last_mut() {
            f.days.push(DayPoint {
                day: format_day(d.day),
                started: d.started,
                converted: d.converted,
                opted_out: d.opted_out,
                handoffs: d.handoffs,
                first_response_median_s: seconds(median),
            });
        }
    }
    Report {
        from: format_time(period.from),
        to: format_time(period.to),
        flows,
        totals,
        days,
    }
}

/// Where a report's period starts: a span back from its end, or an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    Ago(Millis),
    At(Millis),
}

/// Reads `--since`: a span (`7d`, `24h`, `90m`), a date (`2026-11-01`, UTC midnight) or
/// an RFC 3339 instant (`2026-11-01T09:00:00Z`).
pub fn parse_since(text: &str) -> Result<Since, String> {
    let t = text.trim();
    let help = "give a span such as `7d`, `24h` or `90m`, a date such as `2026-11-01`, or an instant such as `2026-11-01T09:00:00Z`";
    if let Some(split) = t.find(|c: char| !c.is_ascii_digit()).filter(|&i| i > 0) {
        let (n, unit) = t.split_at(split);
        let unit_ms: Option<Millis> = match unit {
            "d" => Some(86_400_000),
            "h" => Some(3_600_000),
            "m" => Some(60_000),
            "s" => Some(1000),
            _ => None,
        };
        if let Some(unit_ms) = unit_ms {
            let n: Millis = n
                .parse()
                .map_err(|_| format!("`{t}` is too long a span; {help}"))?;
            return Ok(Since::Ago(n.saturating_mul(unit_ms)));
        }
    }
    if let Ok(ts) = t.parse::<jiff::Timestamp>() {
        return Ok(Since::At(ts.as_millisecond()));
    }
    if let Ok(d) = t.parse::<jiff::civil::Date>() {
        if let Ok(z) = d.to_zoned(jiff::tz::TimeZone::UTC) {
            return Ok(Since::At(z.timestamp().as_millisecond()));
        }
    }
    Err(format!("`{t}` is not a period start; {help}"))
}

/// The latest instant the report can name (jiff's range ends in year 9999).
const MAX_TIME: Millis = 253_402_300_799_000;

/// Reads and computes the report of a store: runs started from `since` up to the store's
/// clock (the latest event time it processed; the wall clock when it processed none).
pub fn of_store(
    store: &mut rapport_store::SqliteStore,
    since: Since,
    flow: Option<&str>,
    wall: Millis,
) -> Result<Report, String> {
    use rapport_store::Store;
    let clock = store.clock().map_err(|e| e.to_string())?.unwrap_or(wall);
    let to = clock.clamp(-MAX_TIME, MAX_TIME - 1) + 1;
    let from = match since {
        Since::Ago(span) => to.saturating_sub(span),
        Since::At(at) => at,
    }
    .clamp(-MAX_TIME, to);
    let bundle: Option<Bundle> = store
        .stored_bundle()
        .map_err(|e| e.to_string())?
        .and_then(|text| serde_json::from_str(&text).ok());
    let period = Period { from, to, flow };
    let data = store.report_data(&period).map_err(|e| e.to_string())?;
    Ok(compute(&period, &data, bundle.as_ref()))
}
