//! The report as a table for a terminal, CSV, a self-contained HTML page, and the SVG
//! charts the page and the console draw.

use std::fmt::Write as _;

use askama::Template;

use crate::{FlowReport, Report, SMALL_SAMPLE};

/// A rate as a percentage (one decimal), `—` when there is none, or `too few runs (N)`
/// when fewer than [`SMALL_SAMPLE`] runs stand behind it.
pub fn percent(v: Option<f64>, n: u64) -> String {
    match v {
        None => "—".into(),
        Some(_) if n < SMALL_SAMPLE => format!("too few runs ({n})"),
        Some(v) => format!("{:.1}%", v * 100.0),
    }
}

fn interval(ci: Option<[f64; 2]>, n: u64) -> String {
    match ci {
        Some([lo, hi]) if n >= SMALL_SAMPLE => {
            format!("{:.1}%–{:.1}%", lo * 100.0, hi * 100.0)
        }
        _ => "—".into(),
    }
}

/// Seconds as a short duration (`2.5 s`, `4.0 min`, `1.2 h`), `—` for none.
pub fn seconds(v: Option<f64>) -> String {
    match v {
        None => "—".into(),
        Some(s) if s < 60.0 => format!("{s:.1} s"),
        Some(s) if s < 3600.0 => format!("{:.1} min", s / 60.0),
        Some(s) => format!("{:.1} h", s / 3600.0),
    }
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".into();
    }
    map.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The guard metrics and sends of a flow version, as short labelled texts.
fn summary(f: &FlowReport) -> Vec<(&'static str, String)> {
    let n = f.finished;
    let mut lines = vec![
        ("enrolled", f.enrolled.to_string()),
        ("finished", f.finished.to_string()),
        ("goal window open", f.open.to_string()),
        ("converted", f.converted.to_string()),
        ("conversion", percent(f.conversion_rate, f.enrolled)),
        ("95% interval", interval(f.conversion_ci95, f.enrolled)),
        ("opt-out rate", percent(f.opt_out_rate, n)),
        ("handoff rate", percent(f.handoff_rate, n)),
        ("error rate", percent(f.error_rate, n)),
        ("automated", percent(f.automation_share, n)),
        (
            "first response",
            format!(
                "median {}, p90 {}",
                seconds(f.first_response_s.median),
                seconds(f.first_response_s.p90)
            ),
        ),
        (
            "sends",
            format!(
                "sent {}, delivered {}",
                f.sends.sent,
                f.sends
                    .delivered
                    .map_or("unknown (no live host)".into(), |d| d.to_string())
            ),
        ),
        ("suppressed", counts(&f.sends.suppressed)),
        ("failed", counts(&f.sends.failed)),
    ];
    let c = &f.comments;
    if c.replies + c.hidden + c.reviewed + c.restored > 0 {
        lines.push((
            "comments",
            format!(
                "replies {}, hidden {}, reviewed {}, restored by a person {}{}",
                c.replies,
                c.hidden,
                c.reviewed,
                c.restored,
                match c.false_positive_rate {
                    Some(r) if c.hidden >= SMALL_SAMPLE => {
                        format!(" ({:.1}% of hidden)", r * 100.0)
                    }
                    _ => String::new(),
                }
            ),
        ));
    }
    lines
}

fn variant_cells(f: &FlowReport) -> Vec<[String; 7]> {
    f.variants
        .iter()
        .map(|v| {
            [
                v.variant.clone(),
                v.enrolled.to_string(),
                v.converted.to_string(),
                percent(v.conversion_rate, v.enrolled),
                interval(v.conversion_ci95, v.enrolled),
                match v.uplift {
                    Some(u) => format!("{:+.1}%", u * 100.0),
                    None => "—".into(),
                },
                match v.chance_to_beat_first {
                    Some(p) if !v.small_sample => format!("{:.1}%", p * 100.0),
                    Some(_) => "too few runs".into(),
                    None => "—".into(),
                },
            ]
        })
        .collect()
}

const VARIANT_HEADER: [&str; 7] = [
    "variant",
    "enrolled",
    "converted",
    "conversion",
    "95% interval",
    "uplift",
    "chance to beat first",
];

/// The report for a terminal.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Runs started from {} to {}", r.from, r.to);
    if r.flows.is_empty() {
        let _ = writeln!(out, "\nNo run started in this period.");
    }
    for f in &r.flows {
        let _ = writeln!(
            out,
            "\n{} {}{}",
            f.flow,
            f.version,
            f.purpose.map(|p| format!(" ({p})")).unwrap_or_default()
        );
        for (label, value) in summary(f) {
            let _ = writeln!(out, "  {label:<17} {value}");
        }
        if !f.variants.is_empty() {
            let rows = variant_cells(f);
            let mut widths = VARIANT_HEADER.map(|h| h.chars().count());
            for row in &rows {
                for (w, c) in widths.iter_mut().zip(row) {
                    *w = (*w).max(c.chars().count());
                }
            }
            let line = |cells: &[String]| {
                let mut l = String::from("  ");
                for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
                    let pad = w.saturating_sub(c.chars().count());
                    if i == 0 {
                        l.push_str(c);
                        l.push_str(&" ".repeat(pad));
                    } else {
                        l.push_str("  ");
                        l.push_str(&" ".repeat(pad));
                        l.push_str(c);
                    }
                }
                l.trim_end().to_string()
            };
            let header: Vec<String> = VARIANT_HEADER.iter().map(|h| h.to_string()).collect();
            let _ = writeln!(out, "{}", line(&header));
            for row in &rows {
                let _ = writeln!(out, "{}", line(row));
            }
        }
    }
    out
}

/// A CSV field, quoted when it must be (RFC 4180).
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn num(v: Option<f64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The report as CSV: a row per flow version (empty `variant`) and one per variant.
pub fn to_csv(r: &Report) -> String {
    let mut out = String::from(
        "from,to,flow,version,variant,purpose,enrolled,finished,open,converted,conversion_rate,\
         ci95_low,ci95_high,uplift,chance_to_beat_first,opt_out_rate,handoff_rate,error_rate,\
         automation_share,sent,delivered,first_response_median_s,first_response_p90_s,small_sample\n",
    );
    for f in &r.flows {
        let ci = |c: Option<[f64; 2]>| (num(c.map(|c| c[0])), num(c.map(|c| c[1])));
        let (lo, hi) = ci(f.conversion_ci95);
        let cells = [
            field(&r.from),
            field(&r.to),
            field(&f.flow),
            field(&f.version),
            String::new(),
            f.purpose.unwrap_or_default().to_string(),
            f.enrolled.to_string(),
            f.finished.to_string(),
            f.open.to_string(),
            f.converted.to_string(),
            num(f.conversion_rate),
            lo,
            hi,
            String::new(),
            String::new(),
            num(f.opt_out_rate),
            num(f.handoff_rate),
            num(f.error_rate),
            num(f.automation_share),
            f.sends.sent.to_string(),
            f.sends.delivered.map(|d| d.to_string()).unwrap_or_default(),
            num(f.first_response_s.median),
            num(f.first_response_s.p90),
            f.small_sample.to_string(),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
        for v in &f.variants {
            let (lo, hi) = ci(v.conversion_ci95);
            let cells = [
                field(&r.from),
                field(&r.to),
                field(&f.flow),
                field(&f.version),
                field(&v.variant),
                f.purpose.unwrap_or_default().to_string(),
                v.enrolled.to_string(),
                String::new(),
                String::new(),
                v.converted.to_string(),
                num(v.conversion_rate),
                lo,
                hi,
                num(v.uplift),
                num(v.chance_to_beat_first),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                v.small_sample.to_string(),
            ];
            out.push_str(&cells.join(","));
            out.push('\n');
        }
    }
    out
}

/// One line of a chart: a name and a value per x position (`None`: no value there).
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
}

/// Text for SVG or HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

const COLOURS: [&str; 12] = [
    "#2563eb", "#db2777", "#16a34a", "#ea580c", "#7c3aed", "#0891b2", "#65a30d", "#9f1239",
    "#ca8a04", "#475569", "#c026d3", "#0d9488",
];

const LEGEND_PER_ROW: usize = 4;

/// A line chart as inline SVG: one line per series over the labels (days), with the
/// axis' top value and a legend. Needs no script and no network.
pub fn chart_svg(title: &str, labels: &[String], series: &[Series], unit: &str) -> String {
    // The legend takes rows of four under the plot.
    let legend_rows = series.len().div_ceil(LEGEND_PER_ROW).max(1);
    let extra = 14.0 * (legend_rows - 1) as f64;
    let (w, h, left, right, top, bottom) = (640.0, 220.0 + extra, 48.0, 28.0, 28.0, 40.0 + extra);
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().flatten())
        .fold(0.0_f64, |m, v| m.max(*v));
    let max = if max <= 0.0 { 1.0 } else { max * 1.1 };
    let n = labels.len().max(1);
    let x = |i: usize| {
        if n == 1 {
            left + (w - left - right) / 2.0
        } else {
            left + (w - left - right) * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: f64| top + (h - top - bottom) * (1.0 - v / max);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {w} {h}\" role=\"img\" \
         aria-label=\"{t}\" class=\"chart\"><title>{t}</title>\
         <text x=\"{left}\" y=\"16\" class=\"chart-title\">{t}</text>",
        t = esc(title)
    );
    let _ = write!(
        svg,
        "<line x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/>\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{b}\" stroke=\"#999\"/>\
         <text x=\"{lx}\" y=\"{ty}\" text-anchor=\"end\" class=\"axis\">{m}{u}</text>\
         <text x=\"{lx}\" y=\"{b}\" text-anchor=\"end\" class=\"axis\">0</text>",
        b = h - bottom,
        r = w - right,
        lx = left - 4.0,
        ty = top + 4.0,
        m = short(max / 1.1),
        u = esc(unit),
    );
    // At most 8 labels on the axis.
    let step = n.div_ceil(8).max(1);
    for (i, l) in labels.iter().enumerate() {
        if i % step == 0 || i + 1 == n {
            let _ = write!(
                svg,
                "<text x=\"{:.1}\" y=\"{}\" text-anchor=\"middle\" class=\"axis\">{}</text>",
                x(i),
                h - bottom + 14.0,
                esc(l.get(5..).unwrap_or(l))
            );
        }
    }
    for (k, s) in series.iter().enumerate() {
        let colour = COLOURS[k % COLOURS.len()];
        let mut points = String::new();
        for (i, v) in s.values.iter().enumerate() {
            if let Some(v) = v {
                let _ = write!(points, "{:.1},{:.1} ", x(i), y(*v));
            }
        }
        let _ = write!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            points.trim_end()
        );
        for (i, v) in s.values.iter().enumerate() {
            if let Some(v) = v {
                let _ = write!(
                    svg,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{colour}\"><title>{}: {}{}</title></circle>",
                    x(i),
                    y(*v),
                    esc(&s.name),
                    short(*v),
                    esc(unit)
                );
            }
        }
        let (col, row) = ((k % LEGEND_PER_ROW) as f64, (k / LEGEND_PER_ROW) as f64);
        let _ = write!(
            svg,
            "<rect x=\"{lx:.1}\" y=\"{ly:.1}\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{tx:.1}\" y=\"{ty:.1}\" class=\"legend\">{}</text>",
            esc(&s.name),
            lx = left + 145.0 * col,
            ly = h - bottom + 24.0 + 14.0 * row,
            tx = left + 14.0 + 145.0 * col,
            ty = h - bottom + 33.0 + 14.0 * row,
        );
    }
    svg.push_str("</svg>");
    svg
}

fn short(v: f64) -> String {
    if v.fract().abs() < 1e-9 {
        format!("{v:.0}")
    } else if v < 10.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.1}")
    }
}

/// The charts over time of a report: per flow, runs started, conversions, opt-outs and
/// the median first answer, per day.
pub fn charts(r: &Report) -> Vec<String> {
    let mut labels: Vec<String> = r
        .days
        .iter()
        .flat_map(|f| f.days.iter().map(|d| d.day.clone()))
        .collect();
    labels.sort();
    labels.dedup();
    let series = |pick: &dyn Fn(&crate::DayPoint) -> Option<f64>| -> Vec<Series> {
        r.days
            .iter()
            .map(|f| Series {
                name: f.flow.clone(),
                values: labels
                    .iter()
                    .map(|l| f.days.iter().find(|d| &d.day == l).and_then(pick))
                    .collect(),
            })
            .collect()
    };
    vec![
        chart_svg(
            "Runs started per day",
            &labels,
            &series(&|d| Some(d.started as f64)),
            "",
        ),
        chart_svg(
            "Conversions per day (by the day the run started)",
            &labels,
            &series(&|d| Some(d.converted as f64)),
            "",
        ),
        chart_svg(
            "Median first response (seconds)",
            &labels,
            &series(&|d| d.first_response_median_s),
            " s",
        ),
        chart_svg(
            "Opt-outs per day",
            &labels,
            &series(&|d| Some(d.opted_out as f64)),
            "",
        ),
    ]
}

#[derive(Template)]
#[template(path = "report.html")]
struct Page<'a> {
    report: &'a Report,
    charts: Vec<String>,
    flows: Vec<PageFlow<'a>>,
    variant_header: [&'static str; 7],
}

struct PageFlow<'a> {
    flow: &'a FlowReport,
    summary: Vec<(&'static str, String)>,
    variants: Vec<[String; 7]>,
}

/// The report as one self-contained HTML page (inline styles and SVG charts: it opens
/// from disk with no network).
pub fn html(r: &Report) -> Result<String, String> {
    Page {
        report: r,
        charts: charts(r),
        flows: r
            .flows
            .iter()
            .map(|f| PageFlow {
                flow: f,
                summary: summary(f),
                variants: variant_cells(f),
            })
            .collect(),
        variant_header: VARIANT_HEADER,
    }
    .render()
    .map_err(|e| e.to_string())
}
