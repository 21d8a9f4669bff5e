//! `rapport report` against the truth: a generated stream of offers whose variants the
//! test assigns by the bucket hash (its own murmur3) and whose conversions, opt-outs and
//! handoffs it draws with a seeded generator, run through `rapport run --store`. The
//! report's counts must be the generator's, and its intervals and chances to beat must
//! agree with computations made here by other methods (a score-test root found by
//! bisection, a numerical integral of the Beta posteriors).

use std::path::Path;

mod common;
use common::{rapport, s, text};

/// murmur3_x86_32, written from the reference algorithm (not the engine's crate).
fn murmur3(key: &[u8], seed: u32) -> u32 {
    let (c1, c2) = (0xcc9e_2d51_u32, 0x1b87_3593_u32);
    let mut h = seed;
    let chunks = key.chunks_exact(4);
    let tail = chunks.remainder();
    for c in chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(c1).rotate_left(15).wrapping_mul(c2);
        h ^= k;
        h = h.rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64);
    }
    let mut k = 0u32;
    for (i, b) in tail.iter().enumerate() {
        k ^= u32::from(*b) << (8 * i);
    }
    if !tail.is_empty() {
        h ^= k.wrapping_mul(c1).rotate_left(15).wrapping_mul(c2);
    }
    h ^= key.len() as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Unleash's variant of a contact in a flow with two variants.
fn variant_of(flow: &str, contact: &str) -> usize {
    (murmur3(format!("{flow}:{contact}").as_bytes(), 86_028_157) % 2) as usize
}

/// splitmix64: a seeded stream of uniform numbers in [0, 1).
struct Draws(u64);
impl Draws {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The lower and upper bounds of the 95% Wilson interval, as the roots of the score test
/// |x/n − p| = z·sqrt(p(1 − p)/n), found by bisection.
fn wilson_by_bisection(x: u64, n: u64) -> (f64, f64) {
    let z = 1.959_963_984_540_054;
    let phat = x as f64 / n as f64;
    let score = |p: f64| (phat - p).abs() - z * (p * (1.0 - p) / n as f64).sqrt();
    let root = |mut inside: f64, mut outside: f64| {
        for _ in 0..200 {
            let mid = (inside + outside) / 2.0;
            if score(mid) <= 0.0 {
                inside = mid;
            } else {
                outside = mid;
            }
        }
        inside
    };
    (root(phat, 0.0), root(phat, 1.0))
}

/// P(p_b > p_a) under Beta(1 + x, 1 + n − x) posteriors, by integrating f_b(p)·F_a(p) on
/// a fine grid (densities normalised on the grid: no special function is used).
fn chance_by_integration(xa: u64, na: u64, xb: u64, nb: u64) -> f64 {
    let steps = 200_000;
    let h = 1.0 / steps as f64;
    let log_density = |x: u64, n: u64, p: f64| x as f64 * p.ln() + (n - x) as f64 * (1.0 - p).ln();
    let grid: Vec<f64> = (0..steps).map(|i| (i as f64 + 0.5) * h).collect();
    let dens = |x: u64, n: u64| {
        let logs: Vec<f64> = grid.iter().map(|&p| log_density(x, n, p)).collect();
        let max = logs.iter().cloned().fold(f64::MIN, f64::max);
        let v: Vec<f64> = logs.iter().map(|l| (l - max).exp()).collect();
        let total: f64 = v.iter().sum();
        v.into_iter().map(|d| d / total).collect::<Vec<f64>>()
    };
    let (fa, fb) = (dens(xa, na), dens(xb, nb));
    let mut cdf_a = 0.0;
    let mut p = 0.0;
    for i in 0..steps {
        // Half of a's mass in this cell is below b's point, on average.
        p += fb[i] * (cdf_a + fa[i] / 2.0);
        cdf_a += fa[i];
    }
    p
}

const T0: i64 = 1_793_577_600; // 2026-11-02T00:00:00Z

fn at(seconds: i64) -> String {
    jiff::Timestamp::from_second(T0 + seconds)
        .expect("in range")
        .to_string()
}

#[derive(Default, Debug)]
struct Truth {
    enrolled: [u64; 2],
    converted: [u64; 2],
    stopped: u64,
    released: u64,
    in_handoff: u64,
}

/// The events of `contacts` offers, and what the report must find.
fn generate(contacts: usize, seed: u64) -> (String, Truth) {
    let p = [0.08, 0.12];
    let mut draws = Draws(seed);
    let mut truth = Truth::default();
    let mut events: Vec<(i64, String)> = Vec::new();
    let mut push = |t: i64, v: serde_json::Value| events.push((t, v.to_string()));
    for i in 0..contacts {
        let c = format!("c{i}");
        let start = i as i64 * 100;
        let v = variant_of("offer", &c);
        truth.enrolled[v] += 1;
        push(
            start,
            serde_json::json!({"id": format!("{c}-promo"), "at": at(start), "contact": c,
                "channel": "sms", "type": "event", "name": "promo.sent", "data": {"code": "SAVE10"}}),
        );
        let u = draws.next();
        if u < 0.02 {
            truth.stopped += 1;
            push(
                start + 1800,
                serde_json::json!({"id": format!("{c}-stop"), "at": at(start + 1800), "contact": c,
                    "channel": "sms", "type": "message", "text": "STOP"}),
            );
            continue;
        }
        if u < 0.05 {
            push(
                start + 600,
                serde_json::json!({"id": format!("{c}-agent"), "at": at(start + 600), "contact": c,
                    "channel": "sms", "type": "message", "text": "agent"}),
            );
            if draws.next() < 0.5 {
                truth.released += 1;
                push(
                    start + 3600,
                    serde_json::json!({"id": format!("{c}-rel"), "at": at(start + 3600), "contact": c,
                        "type": "agent", "action": "released", "agent": "a1"}),
                );
            } else {
                truth.in_handoff += 1;
            }
        }
        if draws.next() < p[v] {
            truth.converted[v] += 1;
            let later = start + 3600 + (draws.next() * 160.0 * 3600.0) as i64;
            push(
                later,
                serde_json::json!({"id": format!("{c}-order"), "at": at(later), "contact": c,
                    "type": "event", "name": "order.placed", "data": {"order_id": format!("o{i}")}}),
            );
        } else if draws.next() < 0.05 {
            // Bought, but after the goal window: not a conversion.
            let late = start + 8 * 86_400;
            push(
                late,
                serde_json::json!({"id": format!("{c}-late"), "at": at(late), "contact": c,
                    "type": "event", "name": "order.placed", "data": {"order_id": format!("late{i}")}}),
            );
        }
    }
    // Every goal window and `after 2d` closes before the end.
    let end = contacts as i64 * 100 + 20 * 86_400;
    push(
        end,
        serde_json::json!({"id": "tick-end", "at": at(end), "type": "tick"}),
    );
    events.sort_by_key(|e| e.0);
    let mut out = String::new();
    for (_, line) in events {
        out.push_str(&line);
        out.push('\n');
    }
    (out, truth)
}

/// `project` run on `events` into a store in `dir`: the store URL and what the run said.
fn run_into_store(dir: &Path, project: &str, events: &str) -> (String, std::process::Output) {
    let bundle = common::build(project, dir);
    let events_path = dir.join("events.jsonl");
    std::fs::write(&events_path, events).expect("events written");
    let store = format!("sqlite:{}", s(&dir.join("store.db")));
    let o = rapport(&[
        "run",
        "--bundle",
        s(&bundle),
        "--events",
        s(&events_path),
        "--actions",
        s(&dir.join("actions.jsonl")),
        "--store",
        &store,
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    (store, o)
}

/// The test project run on `events` into a store in `dir`; returns the store URL.
fn store_with(dir: &Path, events: &str) -> String {
    run_into_store(dir, "tests/report/project", events).0
}

fn report(store: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["report", "--store", store];
    args.extend_from_slice(extra);
    rapport(&args)
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol
}

#[test]
fn the_report_counts_what_the_generator_drew_and_its_statistics_agree_with_other_methods() {
    let dir = common::temp_dir("report", "truth");
    let (events, truth) = generate(4000, 20261205);
    let store = store_with(&dir, &events);
    let o = report(&store, &["--since", "2026-11-01", "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let flows = r["flows"].as_array().expect("flows");
    let offer = flows
        .iter()
        .find(|f| f["flow"] == "offer")
        .expect("the offer is reported");
    let enrolled = truth.enrolled[0] + truth.enrolled[1];
    let converted = truth.converted[0] + truth.converted[1];
    assert_eq!(offer["enrolled"], enrolled);
    assert_eq!(offer["converted"], converted);
    assert_eq!(offer["open"], 0, "every goal window closed");
    assert_eq!(offer["purpose"], "transactional");
    // Runs left with a person expire by the end (the default `expire after`): all finish.
    let finished = enrolled;
    assert_eq!(offer["finished"], finished);
    let handoffs = truth.released + truth.in_handoff;
    let rate = |x: u64, n: u64| ((x as f64 / n as f64) * 10_000.0).round() / 10_000.0;
    assert_eq!(offer["opt_out_rate"], rate(truth.stopped, finished));
    assert_eq!(offer["handoff_rate"], rate(handoffs, finished));
    assert_eq!(offer["error_rate"], 0.0);
    assert_eq!(
        offer["automation_share"],
        rate(finished - handoffs, finished)
    );
    assert_eq!(offer["conversion_rate"], rate(converted, enrolled));
    assert_eq!(offer["first_response_s"]["median"], 0.0);
    assert_eq!(offer["small_sample"], false);
    // Every promo was sent; the stops were confirmed by a policy reply, not a flow send.
    assert_eq!(offer["sends"]["sent"], enrolled);
    assert_eq!(offer["sends"]["delivered"], serde_json::Value::Null);

    let variants = offer["variants"].as_array().expect("variants");
    assert_eq!(variants.len(), 2);
    let names: Vec<&str> = variants
        .iter()
        .map(|v| v["variant"].as_str().unwrap_or(""))
        .collect();
    for (k, v) in variants.iter().enumerate() {
        let ix = if names[k] == "a" { 0 } else { 1 };
        assert_eq!(v["enrolled"], truth.enrolled[ix], "{v}");
        assert_eq!(v["converted"], truth.converted[ix], "{v}");
        let (lo, hi) = wilson_by_bisection(truth.converted[ix], truth.enrolled[ix]);
        let ci = &v["conversion_ci95"];
        let (rlo, rhi) = (ci[0].as_f64().expect("lo"), ci[1].as_f64().expect("hi"));
        assert!(
            close(rlo, lo, 6e-5) && close(rhi, hi, 6e-5),
            "{v}: {lo} {hi}"
        );
    }
    // The first variant is the baseline: no uplift, no chance against itself.
    assert_eq!(variants[0]["uplift"], serde_json::Value::Null);
    assert_eq!(variants[0]["chance_to_beat_first"], serde_json::Value::Null);
    let (ia, ib) = if names[0] == "a" { (0, 1) } else { (1, 0) };
    let expected = chance_by_integration(
        truth.converted[ia],
        truth.enrolled[ia],
        truth.converted[ib],
        truth.enrolled[ib],
    );
    let got = variants[1]["chance_to_beat_first"]
        .as_f64()
        .expect("a chance");
    assert!(
        close(got, expected, 2e-4),
        "report {got}, integral {expected}"
    );
    let uplift = (truth.converted[ib] as f64 / truth.enrolled[ib] as f64)
        / (truth.converted[ia] as f64 / truth.enrolled[ia] as f64)
        - 1.0;
    let got = variants[1]["uplift"].as_f64().expect("an uplift");
    assert!(close(got, uplift, 6e-5), "report {got}, truth {uplift}");

    // The same numbers as CSV: a row for the version and one per variant.
    let o = report(
        &store,
        &[
            "--since",
            "2026-11-01",
            "--format",
            "csv",
            "--flow",
            "offer",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let csv = text(&o.stdout);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 4, "{csv}");
    assert!(lines[0].starts_with("from,to,flow,version,variant,"));
    let row: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(row[2], "offer");
    assert_eq!(row[6], enrolled.to_string());
    assert_eq!(row[9], converted.to_string());
}

#[test]
fn small_samples_say_so_and_the_period_and_flow_are_chosen_by_the_user() {
    let dir = common::temp_dir("report", "small");
    let (events, truth) = generate(12, 7);
    let store = store_with(&dir, &events);
    let o = report(&store, &["--since", "2026-11-01"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let table = text(&o.stdout);
    assert!(
        table.contains("Runs started from 2026-11-01T00:00:00Z"),
        "{table}"
    );
    assert!(table.contains("offer "), "{table}");
    assert!(table.contains("too few runs (12)"), "{table}");
    assert!(
        table.contains("  conversion        too few runs (12)\n"),
        "the rate is not shown as a percentage: {table}"
    );
    let json: serde_json::Value = serde_json::from_slice(
        &report(&store, &["--since", "2026-11-01", "--format", "json"]).stdout,
    )
    .expect("JSON");
    assert_eq!(json["flows"][0]["small_sample"], true);
    assert_eq!(
        json["flows"][0]["enrolled"],
        truth.enrolled[0] + truth.enrolled[1]
    );

    // The default period is the 7 days up to the store's latest event: these runs
    // started three weeks before it.
    let o = report(&store, &[]);
    assert!(o.status.success());
    assert!(
        text(&o.stdout).contains("No run started in this period."),
        "{}",
        text(&o.stdout)
    );

    // A flow the store never ran is a typo: named, with the flows there are.
    let o = report(&store, &["--flow", "ofer"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("has no flow `ofer`; its flows: offer, welcome"),
        "{}",
        text(&o.stderr)
    );
    // A period start that is neither a span nor a date.
    let o = report(&store, &["--since", "last week"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--since: `last week` is not a period start"));
    // A store that is not there is not created.
    let missing = dir.join("missing.db");
    let o = report(&format!("sqlite:{}", s(&missing)), &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!missing.exists());
}

#[test]
fn the_html_report_is_one_page_with_charts_that_needs_no_network() {
    let dir = common::temp_dir("report", "html");
    let (events, _) = generate(300, 11);
    let store = store_with(&dir, &events);
    let page = dir.join("report.html");
    let o = report(
        &store,
        &["--since", "2026-11-01", "--format", "html", "-o", s(&page)],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let html = std::fs::read_to_string(&page).expect("written");
    assert!(html.starts_with("<!doctype html>"));
    assert!(html.matches("<svg").count() >= 4, "a chart per measure");
    assert!(html.contains("Runs started per day"));
    assert!(html.contains("chance to beat first"));
    // Nothing is fetched: no script, stylesheet or image from elsewhere.
    for needle in ["<script", "<link", "src=", "@import", "url("] {
        assert!(!html.contains(needle), "{needle} in the page");
    }
}

#[test]
fn a_store_of_an_older_schema_is_explained_and_left_as_it_is() {
    let dir = common::temp_dir("report", "older");
    let (events, _) = generate(5, 3);
    let store = store_with(&dir, &events);
    let path = dir.join("store.db");
    {
        let db = rusqlite::Connection::open(&path).expect("open");
        db.pragma_update(None, "user_version", 2).expect("set");
    }
    let o = report(&store, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o.stderr).contains("was last written by an older rapport (schema 2)"),
        "{}",
        text(&o.stderr)
    );
    let db = rusqlite::Connection::open(&path).expect("open");
    let v: i64 = db
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("read");
    assert_eq!(v, 2, "reading a report upgrades nothing");
}

#[test]
fn hidden_comments_a_person_puts_back_are_the_moderation_false_positives() {
    let dir = common::temp_dir("report", "restored");
    let spam = |id: &str, contact: &str, comment: &str, at: &str| {
        serde_json::json!({"id": id, "at": at, "contact": contact, "channel": "instagram",
            "type": "comment", "comment": comment, "post": "p1", "author": "someone",
            "text": "check out my page www.cheap-sneakers.example"})
        .to_string()
    };
    let restored = |id: &str, contact: &str, comment: &str, at: &str| {
        serde_json::json!({"id": id, "at": at, "contact": contact, "type": "agent",
            "action": "restored", "comment": comment, "agent": "mod-1"})
        .to_string()
    };
    let lines = [
        spam("s1", "instagram:1", "1001", "2026-11-02T10:00:00Z"),
        spam("s2", "instagram:2", "1002", "2026-11-02T10:05:00Z"),
        spam("s3", "instagram:3", "1003", "2026-11-02T10:10:00Z"),
        // Put back, then put back again (a retry): one false positive.
        restored("r1", "instagram:1", "1001", "2026-11-02T11:00:00Z"),
        restored("r2", "instagram:1", "1001", "2026-11-02T11:01:00Z"),
        // A comment no flow hid is not the automation's mistake.
        restored("r3", "instagram:9", "4242", "2026-11-02T11:02:00Z"),
        // Without the comment's id the line is refused.
        serde_json::json!({"id": "r4", "at": "2026-11-02T11:03:00Z", "contact": "instagram:2",
            "type": "agent", "action": "restored"})
        .to_string(),
    ];
    let (store, o) = run_into_store(&dir, "flows", &(lines.join("\n") + "\n"));
    assert!(
        text(&o.stderr).contains("line 7: rejected: an `agent` event `restored` needs `comment`"),
        "{}",
        text(&o.stderr)
    );
    let o = report(
        &store,
        &[
            "--since",
            "2026-11-01",
            "--format",
            "json",
            "--flow",
            "comment_spam",
        ],
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let comments = &r["flows"][0]["comments"];
    assert_eq!(comments["hidden"], 3, "{r}");
    assert_eq!(comments["restored"], 1, "{r}");
    assert_eq!(comments["false_positive_rate"], 0.3333, "{r}");
    let table = text(&report(&store, &["--since", "2026-11-01", "--flow", "comment_spam"]).stdout);
    assert!(
        table.contains("hidden 3, reviewed 0, restored by a person 1"),
        "{table}"
    );
}
