//! The web console at `/console`: server-rendered pages (askama templates compiled into
//! the binary, htmx and styles vendored beside them) over what the store committed.
//!
//! - **Sign-in** with the host's `api_token` and a name for the audit trail gives a
//!   session cookie (`HttpOnly`, `SameSite=Strict`, `Secure` unless host.yaml turns it
//!   off); a request with the token as a bearer token is let in too, so scripts can fetch
//!   pages.
//! - **Every form that changes something** carries the session's CSRF token (a bearer
//!   request needs none: a browser never sends one by itself).
//! - **Every button is an event**, the same as the API takes: `operator` (promote, halt,
//!   resume) or `agent` (release, approve, reject) with the signed-in name as its actor,
//!   appended to the inbox and audited by the engine like any other. The page that follows
//!   waits (a few seconds at most) until the engine has processed it, so it shows the
//!   result.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::engine::Control;
use crate::http::{App, Shared};

const COOKIE: &str = "rapport_session";

/// Signed-in sessions, in memory: a restart signs everyone out.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

struct Session {
    actor: String,
    csrf: String,
    expires: Instant,
    /// What the last button did (or why it did nothing), shown once on the next page.
    /// Kept here, not in the address, so no link can make the console say something.
    flash: Option<Flash>,
}

struct Flash {
    ok: bool,
    text: String,
}

/// At most this many sessions are kept; the oldest goes first.
const MAX_SESSIONS: usize = 10_000;

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| format!("no random numbers: {e}"))?;
    Ok(crate::signature::hex(&buf))
}

impl Sessions {
    fn create(&self, actor: &str, lifetime: Duration) -> Result<(String, String), String> {
        let (id, csrf) = (random_hex(32)?, random_hex(32)?);
        let mut map = self.map.lock().map_err(|_| "sessions unavailable")?;
        let now = Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            id.clone(),
            Session {
                actor: actor.to_string(),
                csrf: csrf.clone(),
                expires: now + lifetime,
                flash: None,
            },
        );
        Ok((id, csrf))
    }

    fn get(&self, id: &str) -> Option<(String, String)> {
        let map = self.map.lock().ok()?;
        let s = map.get(id)?;
        (s.expires > Instant::now()).then(|| (s.actor.clone(), s.csrf.clone()))
    }

    fn set_flash(&self, id: &str, ok: bool, text: String) {
        if let Ok(mut map) = self.map.lock() {
            if let Some(s) = map.get_mut(id) {
                s.flash = Some(Flash { ok, text });
            }
        }
    }

    fn take_flash(&self, id: &str) -> Option<Flash> {
        self.map.lock().ok()?.get_mut(id)?.flash.take()
    }

    fn remove(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(id);
        }
    }
}

/// Who is asking: the signed-in name, and the session's CSRF token (`None` for a bearer
/// token, which needs none).
struct Who {
    actor: String,
    csrf: Option<String>,
    session: Option<String>,
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn who(app: &App, headers: &HeaderMap) -> Option<Who> {
    if headers.contains_key(header::AUTHORIZATION) {
        return app.unauthorised(headers).is_none().then(|| Who {
            actor: "api-token".into(),
            csrf: None,
            session: None,
        });
    }
    let id = cookie(headers, COOKIE)?;
    let (actor, csrf) = app.sessions.get(&id)?;
    Some(Who {
        actor,
        csrf: Some(csrf),
        session: Some(id),
    })
}

fn see_other(to: &str) -> Response {
    (
        StatusCode::SEE_OTHER,
        [(
            header::LOCATION,
            HeaderValue::from_str(to).unwrap_or(HeaderValue::from_static("/console/overview")),
        )],
    )
        .into_response()
}

/// A page for someone not signed in: the sign-in form, then back here.
fn sign_in_first(path_and_query: &str) -> Response {
    let next: String = url_encode(path_and_query);
    see_other(&format!("/console/login?next={next}"))
}

fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn html(page: impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                (header::CACHE_CONTROL, "no-store"),
                // Nothing but the console's own files, and never inside another site's frame.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; \
                     frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
                ),
                (header::X_FRAME_OPTIONS, "DENY"),
                (header::REFERRER_POLICY, "same-origin"),
            ],
            body,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the page could not be drawn: {e}"),
        )
            .into_response(),
    }
}

fn failure(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

/// What every page's frame shows.
struct Frame {
    title: &'static str,
    here: &'static str,
    actor: String,
    csrf: String,
    flash: Option<String>,
    error: Option<String>,
}

impl Frame {
    fn new(app: &App, title: &'static str, here: &'static str, who: &Who) -> Frame {
        let flash = who
            .session
            .as_deref()
            .and_then(|id| app.sessions.take_flash(id));
        let (ok, error) = match flash {
            Some(f) if f.ok => (Some(f.text), None),
            Some(f) => (None, Some(f.text)),
            None => (None, None),
        };
        Frame {
            title,
            here,
            actor: who.actor.clone(),
            csrf: who.csrf.clone().unwrap_or_default(),
            flash: ok,
            error,
        }
    }
}

/// After a button: what it did, kept for the page the browser is sent to.
fn after(app: &App, who: &Who, page: &str, ok: bool, text: String) -> Response {
    if let Some(id) = &who.session {
        app.sessions.set_flash(id, ok, text);
    }
    see_other(page)
}

pub(crate) fn routes() -> Router<Shared> {
    Router::new()
        .route("/console", get(|| async { see_other("/console/overview") }))
        .route(
            "/console/",
            get(|| async { see_other("/console/overview") }),
        )
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/overview", get(overview))
        .route("/console/flows", get(flows))
        .route("/console/flows/{op}", post(flow_action))
        .route("/console/handoffs", get(handoffs))
        .route("/console/handoffs/release", post(release))
        .route("/console/drafts/decide", post(decide))
        .route("/console/contacts", get(contact))
        .route("/console/contacts/export", get(export))
        .route("/console/contacts/forget", post(forget))
        .route("/console/assets/htmx.min.js", get(htmx))
        .route("/console/assets/console.css", get(css))
}

async fn htmx() -> Response {
    asset(
        include_str!("../assets/htmx.min.js"),
        "text/javascript; charset=utf-8",
    )
}

async fn css() -> Response {
    asset(
        include_str!("../assets/console.css"),
        "text/css; charset=utf-8",
    )
}

fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

// ------------------------------------------------------------------ sign-in

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    error: Option<String>,
    name: String,
    next: String,
}

#[derive(Deserialize)]
struct Next {
    next: Option<String>,
}

/// Only a console page is a place to go back to (never another site).
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n)
            if n.starts_with("/console/") && !n.starts_with("/console//") && !n.contains('\\') =>
        {
            n.to_string()
        }
        _ => "/console/overview".into(),
    }
}

async fn login_page(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<Next>,
) -> Response {
    let next = safe_next(q.next.as_deref());
    if who(&app, &headers).is_some() {
        return see_other(&next);
    }
    html(LoginPage {
        error: None,
        name: String::new(),
        next,
    })
}

#[derive(Deserialize)]
struct LoginForm {
    name: String,
    token: String,
    next: Option<String>,
}

async fn login(State(app): State<Shared>, Form(f): Form<LoginForm>) -> Response {
    let next = safe_next(f.next.as_deref());
    let name = f.name.trim().to_string();
    let again = |status: StatusCode, error: &str| {
        let mut r = html(LoginPage {
            error: Some(error.to_string()),
            name: name.clone(),
            next: next.clone(),
        });
        *r.status_mut() = status;
        r
    };
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        return again(
            StatusCode::BAD_REQUEST,
            "Give your name (up to 64 characters): it is written in the audit trail with everything you do.",
        );
    }
    if !crate::signature::same_token(f.token.trim(), &app.config.api_token) {
        // Wrong tokens are slowed down; the right one is never refused.
        if !app.sign_ins.allow() {
            return again(
                StatusCode::TOO_MANY_REQUESTS,
                "Too many wrong tokens this minute; wait a minute and try again.",
            );
        }
        return again(
            StatusCode::UNAUTHORIZED,
            "That is not the host's API token (host.yaml api_token).",
        );
    }
    let lifetime = app.config.console.session;
    let (id, _) = match app.sessions.create(&format!("console:{name}"), lifetime) {
        Ok(s) => s,
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let secure = if app.config.console.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let cookie = format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        lifetime.as_secs()
    );
    let mut r = see_other(&next);
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

#[derive(Deserialize)]
struct CsrfOnly {
    csrf: Option<String>,
}

/// The form's CSRF token matches the session's (a bearer request needs none).
fn csrf_ok(who: &Who, given: Option<&str>) -> bool {
    match &who.csrf {
        None => true,
        Some(expected) => given.is_some_and(|g| crate::signature::same_token(g, expected)),
    }
}

fn forbidden() -> Response {
    failure(
        StatusCode::FORBIDDEN,
        "this form is stale or came from another site (CSRF token missing or wrong); reload the page and try again",
    )
}

async fn logout(
    State(app): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<CsrfOnly>,
) -> Response {
    let Some(who) = who(&app, &headers) else {
        return see_other("/console/login");
    };
    if !csrf_ok(&who, f.csrf.as_deref()) {
        return forbidden();
    }
    if let Some(id) = &who.session {
        app.sessions.remove(id);
    }
    let mut r = see_other("/console/login");
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "rapport_session=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    r
}

// ------------------------------------------------------------------ overview

struct Tile {
    key: &'static str,
    label: &'static str,
    value: String,
    note: String,
}

struct Row {
    flow: String,
    version: String,
    enrolled: u64,
    converted: u64,
    conversion: String,
    opt_out: String,
    handoff: String,
    automated: String,
    first_response: String,
    sent: u64,
    variants: Vec<VariantRow>,
}

struct VariantRow {
    name: String,
    enrolled: u64,
    converted: u64,
    conversion: String,
    uplift: String,
    chance: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    frame: Frame,
    periods: Vec<(&'static str, &'static str, bool)>,
    since: String,
    from: String,
    to: String,
    tiles: Vec<Tile>,
    charts: Vec<String>,
    rows: Vec<Row>,
}

const PERIODS: [(&str, &str); 4] = [
    ("1d", "day"),
    ("7d", "7 days"),
    ("30d", "30 days"),
    ("90d", "90 days"),
];

#[derive(Deserialize)]
struct OverviewQuery {
    since: Option<String>,
}

/// The last report computed, for [`report`].
pub(crate) type ReportCache =
    tokio::sync::Mutex<Option<(String, Instant, Arc<rapport_report::Report>)>>;

/// How long a computed report is served again (the console's pages and `GET /v1/report`
/// ask for the same one; a week of a large store takes tens of milliseconds to read).
const REPORT_FRESH: Duration = Duration::from_secs(5);

/// The report of the store, read on a blocking thread: one at a time (a burst of requests
/// waits for the first and gets its result), and again only after [`REPORT_FRESH`].
pub(crate) async fn report(
    app: &App,
    since: rapport_report::Since,
    flow: Option<String>,
) -> Result<Arc<rapport_report::Report>, String> {
    let key = format!("{since:?}|{flow:?}");
    let mut cached = app.report_cache.lock().await;
    if let Some((k, at, r)) = cached.as_ref() {
        if *k == key && at.elapsed() < REPORT_FRESH {
            return Ok(Arc::clone(r));
        }
    }
    let path = app.store_path.clone();
    let wall = (app.now)();
    let reader = Arc::clone(&app.report_store);
    let r = tokio::task::spawn_blocking(move || {
        // One connection kept for reports: its page cache stays warm between them.
        let mut slot = reader
            .lock()
            .map_err(|_| "the report's store connection is unavailable".to_string())?;
        if slot.is_none() {
            *slot =
                Some(rapport_store::SqliteStore::open_existing(&path).map_err(|e| e.to_string())?);
        }
        let store = slot.as_mut().ok_or("no store connection")?;
        let r = rapport_report::of_store(store, since, flow.as_deref(), wall);
        if r.is_err() {
            // A connection that failed is not kept: the next report opens a new one.
            *slot = None;
        }
        r
    })
    .await
    .map_err(|e| e.to_string())??;
    let r = Arc::new(r);
    *cached = Some((key, Instant::now(), Arc::clone(&r)));
    Ok(r)
}

async fn overview(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<OverviewQuery>,
) -> Response {
    let Some(who) = who(&app, &headers) else {
        return sign_in_first("/console/overview");
    };
    let since = q
        .since
        .filter(|s| PERIODS.iter().any(|(v, _)| v == s))
        .unwrap_or_else(|| "7d".into());
    let span = match rapport_report::parse_since(&since) {
        Ok(s) => s,
        Err(e) => return failure(StatusCode::BAD_REQUEST, &e),
    };
    let r = match report(&app, span, None).await {
        Ok(r) => r,
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    use rapport_report::{percent, seconds};
    let t = &r.totals;
    let tiles = vec![
        Tile {
            key: "runs",
            label: "Conversations started",
            value: t.enrolled.to_string(),
            note: format!("{} finished", t.finished),
        },
        Tile {
            key: "conversion",
            label: "Conversion",
            value: percent(t.conversion_rate, t.enrolled_with_goal),
            note: format!("{} converted (flows with a goal)", t.converted),
        },
        Tile {
            key: "automated",
            label: "Resolved without a person",
            value: percent(t.automation_share, t.finished),
            note: format!("handoffs {}", percent(t.handoff_rate, t.finished)),
        },
        Tile {
            key: "opt_out",
            label: "Opt-out rate",
            value: percent(t.opt_out_rate, t.finished),
            note: "of finished conversations".into(),
        },
        Tile {
            key: "first_response",
            label: "First response (median)",
            value: seconds(t.first_response_s.median),
            note: format!("p90 {}", seconds(t.first_response_s.p90)),
        },
        Tile {
            key: "sent",
            label: "Messages sent",
            value: t.sent.to_string(),
            note: match t.delivered {
                Some(d) => format!("{d} accepted by the platforms"),
                None => "no platform delivery recorded".into(),
            },
        },
    ];
    let rows = r
        .flows
        .iter()
        .map(|f| Row {
            flow: f.flow.clone(),
            version: f.version.clone(),
            enrolled: f.enrolled,
            converted: f.converted,
            conversion: match f.conversion_ci95 {
                Some([lo, hi]) if !f.small_sample => format!(
                    "{} ({:.1}–{:.1}%)",
                    percent(f.conversion_rate, f.enrolled),
                    lo * 100.0,
                    hi * 100.0
                ),
                _ => percent(f.conversion_rate, f.enrolled),
            },
            opt_out: percent(f.opt_out_rate, f.finished),
            handoff: percent(f.handoff_rate, f.finished),
            automated: percent(f.automation_share, f.finished),
            first_response: seconds(f.first_response_s.median),
            sent: f.sends.sent,
            variants: f
                .variants
                .iter()
                .map(|v| VariantRow {
                    name: v.variant.clone(),
                    enrolled: v.enrolled,
                    converted: v.converted,
                    conversion: percent(v.conversion_rate, v.enrolled),
                    uplift: v
                        .uplift
                        .map_or("—".into(), |u| format!("{:+.1}%", u * 100.0)),
                    chance: match v.chance_to_beat_first {
                        Some(p) if !v.small_sample => format!("{:.1}%", p * 100.0),
                        Some(_) => "too few runs".into(),
                        None => "—".into(),
                    },
                })
                .collect(),
        })
        .collect();
    html(OverviewPage {
        frame: Frame::new(&app, "Overview", "overview", &who),
        periods: PERIODS.iter().map(|(v, l)| (*v, *l, *v == since)).collect(),
        since,
        from: r.from.clone(),
        to: r.to.clone(),
        tiles,
        charts: rapport_report::charts(&r),
        rows,
    })
}

// ------------------------------------------------------------------ flows

struct VersionLine {
    version: String,
    role: &'static str,
    stage: String,
    enrolled: u64,
    finished: u64,
    opted_out: u64,
    handoffs: u64,
    errors: u64,
    converted: u64,
}

struct GuardLine {
    metric: &'static str,
    op: &'static str,
    threshold: String,
    value: String,
    crossed: bool,
}

struct FlowCard {
    name: String,
    title: Option<String>,
    purpose: &'static str,
    rollout: String,
    has_rollout: bool,
    halted: bool,
    halt_reason: Option<String>,
    can_promote: bool,
    after_runs: u64,
    finished: u64,
    guards: Vec<GuardLine>,
    versions: Vec<VersionLine>,
}

#[derive(Template)]
#[template(path = "flows.html")]
struct FlowsPage {
    frame: Frame,
    flows: Vec<FlowCard>,
}

fn pct_bp(bp: f64) -> String {
    format!("{:.1}%", bp / 100.0)
}

async fn flows(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let Some(who) = who(&app, &headers) else {
        return sign_in_first("/console/flows");
    };
    let stats = match app.committed_stats() {
        Ok(s) => s,
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let Ok(bundle) = app.bundle.read().map(|b| Arc::clone(&b)) else {
        return failure(StatusCode::SERVICE_UNAVAILABLE, "no bundle loaded");
    };
    let get = |f: &rapport_bundle::Flow| {
        stats
            .get(&(f.name.clone(), f.version.clone()))
            .cloned()
            .unwrap_or_default()
    };
    let stage_text = |f: &rapport_bundle::Flow, st: &rapport_engine::VersionStats| match &f.rollout
    {
        Some(r) if r.stages.len() > 1 => {
            let pct = r.stages.get(st.stage).copied().unwrap_or(10_000);
            format!(
                "{}% (stage {} of {})",
                f64::from(pct) / 100.0,
                st.stage + 1,
                r.stages.len()
            )
        }
        _ => "100% (no rollout)".into(),
    };
    let line = |f: &rapport_bundle::Flow, role: &'static str| {
        let st = get(f);
        VersionLine {
            version: f.version.clone(),
            role,
            stage: if role == "current" {
                stage_text(f, &st)
            } else {
                "contacts outside the stage".into()
            },
            enrolled: st.enrolled,
            finished: st.finished,
            opted_out: st.opted_out,
            handoffs: st.handoffs,
            errors: st.errors,
            converted: st.converted,
        }
    };
    let mut cards = Vec::new();
    for f in &bundle.flows {
        let st = get(f);
        let stages = f.rollout.as_ref().map_or(0, |r| r.stages.len());
        let mut guards = Vec::new();
        let mut crossed_any = Vec::new();
        if let Some(h) = &f.halt {
            for g in &h.guards {
                use rapport_bundle::{CompareOp, Metric};
                let metric = match g.metric {
                    Metric::OptOutRate => "opt_out_rate",
                    Metric::HandoffRate => "handoff_rate",
                    Metric::ErrorRate => "error_rate",
                    Metric::ConversionRate => "conversion_rate",
                };
                let op = match g.op {
                    CompareOp::Gt => ">",
                    CompareOp::Ge => ">=",
                    CompareOp::Lt => "<",
                    CompareOp::Le => "<=",
                    CompareOp::Eq => "==",
                    CompareOp::Ne => "!=",
                };
                // As the guards judge it: the metric, once `after N runs` have finished.
                let value = rapport_engine::rollout::guard_value(g.metric, &st);
                let crossed = st.finished >= h.after_runs
                    && value.is_some_and(|v| rapport_engine::rollout::guard_crossed(g, v));
                if crossed {
                    crossed_any.push(metric);
                }
                guards.push(GuardLine {
                    metric,
                    op,
                    threshold: pct_bp(f64::from(g.threshold)),
                    value: value.map_or("no finished run yet".into(), pct_bp),
                    crossed,
                });
            }
        }
        let mut versions = vec![line(f, "current")];
        if let Some(p) = &f.previous {
            versions.push(line(p, "previous"));
        }
        cards.push(FlowCard {
            name: f.name.clone(),
            title: f.title.clone(),
            purpose: match f.purpose {
                rapport_bundle::Purpose::Marketing => "marketing",
                rapport_bundle::Purpose::Transactional => "transactional",
            },
            rollout: stage_text(f, &st),
            has_rollout: stages > 1,
            halted: st.halted,
            halt_reason: (st.halted && !crossed_any.is_empty())
                .then(|| format!("guard crossed: {}", crossed_any.join(", "))),
            can_promote: !st.halted && st.stage + 1 < stages,
            after_runs: f.halt.as_ref().map_or(0, |h| h.after_runs),
            finished: st.finished,
            guards,
            versions,
        });
    }
    html(FlowsPage {
        frame: Frame::new(&app, "Flows", "flows", &who),
        flows: cards,
    })
}

#[derive(Deserialize)]
struct FlowForm {
    csrf: Option<String>,
    flow: String,
}

async fn flow_action(
    State(app): State<Shared>,
    headers: HeaderMap,
    axum::extract::Path(op): axum::extract::Path<String>,
    Form(f): Form<FlowForm>,
) -> Response {
    let Some(who) = who(&app, &headers) else {
        return failure(StatusCode::UNAUTHORIZED, "sign in first");
    };
    if !csrf_ok(&who, f.csrf.as_deref()) {
        return forbidden();
    }
    if !matches!(op.as_str(), "promote" | "halt" | "resume") {
        return failure(
            StatusCode::NOT_FOUND,
            "the buttons are promote, halt and resume",
        );
    }
    let known = app
        .bundle
        .read()
        .map(|b| b.flows.iter().any(|x| x.name == f.flow))
        .unwrap_or(false);
    if !known {
        let text = format!("Nothing done: the running bundle has no flow `{}`.", f.flow);
        return after(&app, &who, "/console/flows", false, text);
    }
    let event = json!({"type": "operator", "action": op, "flow": f.flow, "actor": who.actor});
    let done = match op.as_str() {
        "promote" => format!("Promoted the rollout of {}.", f.flow),
        "halt" => format!("Halted {}.", f.flow),
        _ => format!("Resumed {}.", f.flow),
    };
    submit(&app, &who, event, "/console/flows", done).await
}

/// Appends one event made by a button to the inbox, waits (a few seconds at most) for the
/// engine to process it, and sends the browser to `page` with what happened.
async fn submit(app: &App, who: &Who, mut event: Value, page: &str, done: String) -> Response {
    if let Some(r) = app.draining() {
        return r;
    }
    let id = match random_hex(12) {
        Ok(h) => format!("console-{h}"),
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    event["id"] = Value::from(id);
    event["at"] = Value::from(rapport_engine::format_time((app.now)()));
    let line = event.to_string();
    let checked = app
        .bundle
        .read()
        .map_err(|_| "no bundle loaded".to_string())
        .and_then(|b| rapport_engine::decode(&line, &b.settings).map_err(|r| r.reason));
    if let Err(e) = checked {
        return after(app, who, page, false, format!("Nothing done: {e}."));
    }
    let seqs = match app.append(vec![line], Vec::new()).await {
        Ok(s) => s,
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, &e),
    };
    let last = seqs.last().copied().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if processed(app) >= last {
            return after(app, who, page, true, done);
        }
        if Instant::now() >= deadline {
            let text = format!("Accepted, not processed yet (reload in a moment): {done}");
            return after(app, who, page, true, text);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The last inbox sequence number the engine committed.
fn processed(app: &App) -> u64 {
    let Ok(r) = app.reader.lock() else { return 0 };
    r.meta("checkpoint")
        .ok()
        .flatten()
        .and_then(|c| serde_json::from_str::<Value>(&c).ok())
        .filter(|c| c.get("source").and_then(Value::as_str) == Some(rapport_store::INBOX_SOURCE))
        .and_then(|c| c.get("offset").and_then(Value::as_u64))
        .unwrap_or(0)
}

// ------------------------------------------------------------------ handoffs

struct HandoffLine {
    contact: String,
    contact_q: String,
    channel: String,
    queue: String,
    flow: String,
    summary: String,
    age: String,
    sla: String,
    breached: bool,
    opened: i64,
}

struct DraftLine {
    id: String,
    contact: String,
    contact_q: String,
    queue: String,
    flow: String,
    text: String,
}

#[derive(Template)]
#[template(path = "handoffs.html")]
struct HandoffsPage {
    frame: Frame,
    handoffs: Vec<HandoffLine>,
    drafts: Vec<DraftLine>,
}

fn age(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// The most handoffs and drafts the page lists.
const MAX_LISTED: usize = 500;

async fn handoffs(State(app): State<Shared>, headers: HeaderMap) -> Response {
    let Some(who) = who(&app, &headers) else {
        return sign_in_first("/console/handoffs");
    };
    let path = app.store_path.clone();
    let now = (app.now)();
    let bundle = app.bundle.read().map(|b| Arc::clone(&b)).ok();
    let read = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let store = rapport_store::SqliteStore::open_existing(&path).map_err(|e| e.to_string())?;
        let rows = store.attention(MAX_LISTED).map_err(|e| e.to_string())?;
        let mut handoffs = Vec::new();
        let mut drafts = Vec::new();
        for (contact, state) in rows {
            let Ok(s) = serde_json::from_str::<Value>(&state) else {
                continue;
            };
            let contact_q = url_encode(&contact);
            if let Some(h) = s.get("handoff").filter(|h| h.is_object()) {
                let opened = h.get("opened").and_then(Value::as_i64).unwrap_or(0);
                let due = match h.get("sla_timer").and_then(Value::as_u64) {
                    Some(key) => Some(store.timer_due(key).map_err(|e| e.to_string())?),
                    None => None,
                };
                let (sla, breached) = match due {
                    None => ("no SLA".to_string(), false),
                    // The SLA timer fired: the breach was alerted.
                    Some(None) => (String::new(), true),
                    Some(Some(d)) if d <= now => (String::new(), true),
                    Some(Some(d)) => (format!("due in {}", age(d - now)), false),
                };
                let text = |k: &str| h.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                handoffs.push(HandoffLine {
                    contact: contact.clone(),
                    contact_q: contact_q.clone(),
                    channel: text("channel"),
                    queue: text("queue"),
                    flow: {
                        let f = text("flow");
                        if f.is_empty() {
                            "escalation".into()
                        } else {
                            f
                        }
                    },
                    summary: text("summary"),
                    age: if opened > 0 {
                        age(now - opened)
                    } else {
                        "—".into()
                    },
                    sla,
                    breached,
                    opened,
                });
            }
            for run in s
                .get("runs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let flow_ix = run.get("flow").and_then(Value::as_u64).unwrap_or(u64::MAX);
                for d in run
                    .get("drafts")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let text = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                    drafts.push(DraftLine {
                        id: text("id"),
                        contact: contact.clone(),
                        contact_q: contact_q.clone(),
                        queue: text("queue"),
                        flow: flow_name(bundle.as_deref(), flow_ix),
                        text: text("text"),
                    });
                }
            }
        }
        handoffs.sort_by_key(|h| (h.opened, h.contact.clone()));
        handoffs.truncate(MAX_LISTED);
        drafts.truncate(MAX_LISTED);
        Ok((handoffs, drafts))
    })
    .await;
    let (handoffs, drafts) = match read {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return failure(StatusCode::INTERNAL_SERVER_ERROR, &e),
        Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    html(HandoffsPage {
        frame: Frame::new(&app, "Handoffs", "handoffs", &who),
        handoffs,
        drafts,
    })
}

/// The name of the flow version a stored run points at (its index in the bundle's
/// versions: the flows, then their previous versions, then the retired ones).
fn flow_name(bundle: Option<&rapport_bundle::Bundle>, ix: u64) -> String {
    let Some(b) = bundle else {
        return String::new();
    };
    let ix = ix as usize;
    let previous: Vec<&rapport_bundle::Flow> = b
        .flows
        .iter()
        .filter_map(|f| f.previous.as_deref())
        .collect();
    b.flows
        .get(ix)
        .or_else(|| previous.get(ix.wrapping_sub(b.flows.len())).copied())
        .or_else(|| {
            b.retired
                .get(ix.wrapping_sub(b.flows.len() + previous.len()))
        })
        .map(|f| f.name.clone())
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct ReleaseForm {
    csrf: Option<String>,
    contact: String,
}

async fn release(
    State(app): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<ReleaseForm>,
) -> Response {
    let Some(who) = who(&app, &headers) else {
        return failure(StatusCode::UNAUTHORIZED, "sign in first");
    };
    if !csrf_ok(&who, f.csrf.as_deref()) {
        return forbidden();
    }
    let event =
        json!({"type": "agent", "action": "released", "contact": f.contact, "agent": who.actor});
    let done = format!("Released the handoff of {}.", f.contact);
    submit(&app, &who, event, "/console/handoffs", done).await
}

#[derive(Deserialize)]
struct DecideForm {
    csrf: Option<String>,
    contact: String,
    draft: String,
    decision: String,
    text: Option<String>,
}

async fn decide(
    State(app): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<DecideForm>,
) -> Response {
    let Some(who) = who(&app, &headers) else {
        return failure(StatusCode::UNAUTHORIZED, "sign in first");
    };
    if !csrf_ok(&who, f.csrf.as_deref()) {
        return forbidden();
    }
    let mut event =
        json!({"type": "agent", "contact": f.contact, "draft": f.draft, "agent": who.actor});
    match f.decision.as_str() {
        "approved" => event["action"] = Value::from("approved"),
        "rejected" => event["action"] = Value::from("rejected"),
        "edited" => {
            let text = f.text.as_deref().unwrap_or("").trim();
            if text.is_empty() {
                let t =
                    "Nothing sent: the edited text is empty; write the reply, or reject the draft.";
                return after(&app, &who, "/console/handoffs", false, t.into());
            }
            if text.chars().count() > 4096 {
                let t = "Nothing sent: the edited text is longer than 4,096 characters.";
                return after(&app, &who, "/console/handoffs", false, t.into());
            }
            event["action"] = Value::from("approved");
            event["text"] = Value::from(text);
        }
        _ => {
            return failure(
                StatusCode::BAD_REQUEST,
                "decide with approved, edited or rejected",
            )
        }
    }
    let done = match f.decision.as_str() {
        "approved" => format!("Approved the draft for {}.", f.contact),
        "edited" => format!("Sent the edited draft to {}.", f.contact),
        _ => format!("Rejected the draft for {}.", f.contact),
    };
    submit(&app, &who, event, "/console/handoffs", done).await
}

// ------------------------------------------------------------------ contact

struct ConsentLine {
    at: String,
    purpose: String,
    granted: String,
    source: String,
    wording: String,
}

struct RunLine {
    flow: String,
    version: String,
    variant: String,
    started: String,
    ended: String,
    outcome: String,
    converted: String,
}

struct TranscriptLine {
    at: String,
    direction: String,
    channel: String,
    text: String,
}

struct AuditLine {
    at: String,
    actor: String,
    kind: String,
    detail: String,
}

struct ContactView {
    opted_out: bool,
    profile: Vec<(String, String)>,
    consent: Vec<ConsentLine>,
    runs: Vec<RunLine>,
    transcript: Vec<TranscriptLine>,
    audit: Vec<AuditLine>,
    audit_total: usize,
}

#[derive(Template)]
#[template(path = "contact.html")]
struct ContactPage {
    frame: Frame,
    id: String,
    id_q: String,
    contact: Option<ContactView>,
}

#[derive(Deserialize)]
struct ContactQuery {
    id: Option<String>,
}

/// The most audit records the page shows (the newest); Export has them all.
const AUDIT_SHOWN: usize = 200;

fn text_of(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn view(export: &Value) -> ContactView {
    let s = |v: &Value, k: &str| text_of(v.get(k).unwrap_or(&Value::Null));
    let list = |k: &str| {
        export
            .get(k)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    let audit = list("audit_trail");
    let audit_total = audit.len();
    ContactView {
        opted_out: export
            .get("opted_out")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        profile: export
            .get("profile")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), text_of(v))).collect())
            .unwrap_or_default(),
        consent: list("consent_ledger")
            .iter()
            .map(|c| ConsentLine {
                at: match c.get("at").and_then(Value::as_i64) {
                    Some(ms) => rapport_engine::format_time(ms),
                    None => s(c, "at"),
                },
                purpose: s(c, "purpose"),
                granted: s(c, "granted"),
                source: s(c, "source"),
                wording: s(c, "wording"),
            })
            .collect(),
        runs: list("run_history")
            .iter()
            .map(|r| RunLine {
                flow: s(r, "flow"),
                version: s(r, "version"),
                variant: s(r, "variant"),
                started: s(r, "started"),
                ended: s(r, "ended"),
                outcome: s(r, "outcome"),
                converted: s(r, "converted"),
            })
            .collect(),
        transcript: list("transcript")
            .iter()
            .map(|t| TranscriptLine {
                at: s(t, "at"),
                direction: s(t, "direction"),
                channel: s(t, "channel"),
                text: s(t, "text"),
            })
            .collect(),
        audit: audit
            .iter()
            .rev()
            .take(AUDIT_SHOWN)
            .map(|a| AuditLine {
                at: s(a, "at"),
                actor: s(a, "actor"),
                kind: [s(a, "kind"), s(a, "reason")]
                    .into_iter()
                    .filter(|x| !x.is_empty())
                    .collect::<Vec<_>>()
                    .join(": "),
                detail: [s(a, "flow"), s(a, "state"), s(a, "detail")]
                    .into_iter()
                    .filter(|x| !x.is_empty())
                    .collect::<Vec<_>>()
                    .join(" · "),
            })
            .collect(),
        audit_total,
    }
}

async fn read_contact(app: &App, id: String) -> Result<Option<Value>, String> {
    let path = app.store_path.clone();
    tokio::task::spawn_blocking(move || {
        use rapport_store::Store;
        let mut store =
            rapport_store::SqliteStore::open_existing(&path).map_err(|e| e.to_string())?;
        store.export_contact(&id).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn contact(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ContactQuery>,
) -> Response {
    let id = q.id.clone().unwrap_or_default().trim().to_string();
    let Some(who) = who(&app, &headers) else {
        return sign_in_first(&format!("/console/contacts?id={}", url_encode(&id)));
    };
    let contact = if id.is_empty() {
        None
    } else {
        match read_contact(&app, id.clone()).await {
            Ok(v) => v.as_ref().map(view),
            Err(e) => return failure(StatusCode::INTERNAL_SERVER_ERROR, &e),
        }
    };
    html(ContactPage {
        frame: Frame::new(&app, "Contact", "contacts", &who),
        id_q: url_encode(&id),
        id,
        contact,
    })
}

#[derive(Deserialize)]
struct IdQuery {
    id: String,
}

async fn export(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<IdQuery>,
) -> Response {
    if who(&app, &headers).is_none() {
        return sign_in_first(&format!("/console/contacts?id={}", url_encode(&q.id)));
    }
    match read_contact(&app, q.id.clone()).await {
        Ok(Some(v)) => {
            let body = serde_json::to_string_pretty(&v).unwrap_or_default();
            // The file name keeps only characters safe in a header.
            let name: String =
                q.id.chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .take(64)
                    .collect();
            let disposition = format!("attachment; filename=\"rapport-contact-{name}.json\"");
            let mut r = (
                [
                    (header::CONTENT_TYPE, "application/json"),
                    (header::CACHE_CONTROL, "no-store"),
                ],
                body,
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&disposition) {
                r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
            }
            r
        }
        Ok(None) => failure(
            StatusCode::NOT_FOUND,
            "the store holds nothing about this contact",
        ),
        Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

#[derive(Deserialize)]
struct ForgetForm {
    csrf: Option<String>,
    id: String,
    confirm: Option<String>,
}

async fn forget(
    State(app): State<Shared>,
    headers: HeaderMap,
    Form(f): Form<ForgetForm>,
) -> Response {
    let Some(who) = who(&app, &headers) else {
        return failure(StatusCode::UNAUTHORIZED, "sign in first");
    };
    if !csrf_ok(&who, f.csrf.as_deref()) {
        return forbidden();
    }
    let page = format!("/console/contacts?id={}", url_encode(&f.id));
    if f.confirm.as_deref().map(str::trim) != Some(f.id.as_str()) {
        let t = "Nothing was erased: type the contact id exactly to confirm.";
        return after(&app, &who, &page, false, t.into());
    }
    if let Some(r) = app.draining() {
        return r;
    }
    let (done, rx) = tokio::sync::oneshot::channel();
    match crate::http::ask_engine(
        &app,
        Control::Forget {
            contact: f.id.clone(),
            done,
        },
        rx,
    )
    .await
    {
        Ok(_) => {
            // The erasure is audited: who and when, not whom (that is what was erased).
            let at = (app.now)();
            let record = json!({"at": rapport_engine::format_time(at), "actor": who.actor,
                "kind": "erased", "detail": "a contact was erased from the console"});
            let audit = rapport_store::HostAudit {
                at,
                contact: None,
                record: record.to_string(),
            };
            if let Err(e) = app.append(Vec::new(), vec![audit]).await {
                tracing::warn!("the erasure could not be audited: {e}");
            }
            let text = format!("Erased everything held about {}.", f.id);
            after(&app, &who, "/console/contacts", true, text)
        }
        Err(e) => failure(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_pages_are_places_to_go_back_to() {
        assert_eq!(safe_next(Some("/console/flows")), "/console/flows");
        assert_eq!(
            safe_next(Some("/console/contacts?id=a%3Ab")),
            "/console/contacts?id=a%3Ab"
        );
        for bad in [
            None,
            Some("https://evil.example/console/"),
            Some("//evil.example/console/"),
            Some("/console//evil.example"),
            Some("/console/\\evil"),
            Some("/v1/events"),
            Some(""),
        ] {
            assert_eq!(safe_next(bad), "/console/overview", "{bad:?}");
        }
    }

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; rapport_session=abc; b=2"),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("x_rapport_session=no"),
        );
        assert_eq!(cookie(&h, COOKIE), None);
    }

    #[test]
    fn addresses_keep_only_safe_characters() {
        assert_eq!(
            url_encode("whatsapp:407 &x=\"y\"\r\n"),
            "whatsapp%3A407%20%26x%3D%22y%22%0D%0A"
        );
        assert_eq!(url_encode("/console/a-b_c.d~"), "/console/a-b_c.d~");
    }

    #[test]
    fn a_session_expires_and_its_message_is_shown_once() {
        let s = Sessions::default();
        let (id, csrf) = s
            .create("console:ana", Duration::from_secs(60))
            .expect("made");
        assert_eq!(s.get(&id), Some(("console:ana".to_string(), csrf)));
        s.set_flash(&id, true, "Halted offer.".into());
        assert_eq!(
            s.take_flash(&id).map(|f| f.text).as_deref(),
            Some("Halted offer.")
        );
        assert!(s.take_flash(&id).is_none(), "once");
        assert_eq!(s.get("not-a-session"), None);
        let (old, _) = s.create("console:bo", Duration::ZERO).expect("made");
        assert_eq!(s.get(&old), None, "expired");
        s.remove(&id);
        assert_eq!(s.get(&id), None);
    }
}
