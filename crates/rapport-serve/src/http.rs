//! The HTTP endpoints (docs/deploy.md, "Endpoints").

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rapport_bundle::Bundle;
use rapport_store::{DeliveryRow, HostAudit, LiveReader};
use serde_json::{json, Value};
use tokio::sync::oneshot;

use crate::config::{Connector, HostConfig};
use crate::delivery::Delivery;
use crate::engine::Control;
use crate::feed::Feed;
use crate::metrics::{Endpoint, Metrics};
use crate::writer::Request;

/// Bodies over this size get 413.
pub(crate) const MAX_BODY: usize = 3 * 1024 * 1024;

/// Events in one `POST /v1/events`, at most.
const MAX_EVENTS: usize = 10_000;

pub(crate) struct App {
    pub(crate) config: Arc<HostConfig>,
    pub(crate) writer: std::sync::mpsc::Sender<Request>,
    pub(crate) reader: Mutex<LiveReader>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) delivery: Arc<Delivery>,
    pub(crate) control: std::sync::mpsc::Sender<Control>,
    pub(crate) feed: std::sync::mpsc::Sender<Feed>,
    pub(crate) bundle: Arc<RwLock<Arc<Bundle>>>,
    pub(crate) store_path: PathBuf,
    pub(crate) draining: Arc<AtomicBool>,
    pub(crate) engine_running: Arc<AtomicBool>,
    pub(crate) now: fn() -> i64,
    /// When open handoffs were last counted from the store.
    pub(crate) handoffs_counted: Mutex<Option<Instant>>,
    /// How many rejected webhooks were audited this minute.
    pub(crate) forged_audit: PerMinute,
    /// The console's signed-in sessions.
    pub(crate) sessions: crate::console::Sessions,
    /// Console sign-ins with a wrong token this minute (guessing is slowed down).
    pub(crate) sign_ins: PerMinute,
    /// The last KPI report computed (the console and `GET /v1/report`).
    pub(crate) report_cache: crate::console::ReportCache,
    /// The connection reports read the store through (opened at the first report).
    pub(crate) report_store: Arc<Mutex<Option<rapport_store::SqliteStore>>>,
}

/// At most `limit` a minute.
pub(crate) struct PerMinute {
    limit: u32,
    window: Mutex<(Instant, u32)>,
}

impl PerMinute {
    pub(crate) fn new(limit: u32) -> Self {
        PerMinute {
            limit,
            window: Mutex::new((Instant::now(), 0)),
        }
    }

    pub(crate) fn allow(&self) -> bool {
        let Ok(mut w) = self.window.lock() else {
            return false;
        };
        if w.0.elapsed().as_secs() >= 60 {
            *w = (Instant::now(), 0);
        }
        w.1 = w.1.saturating_add(1);
        w.1 <= self.limit
    }
}

pub(crate) type Shared = Arc<App>;

pub(crate) fn router(app: Shared) -> Router {
    Router::new()
        .route("/webhooks/meta", get(meta_handshake).post(meta_webhook))
        .route("/webhooks/telegram", post(telegram_webhook))
        .route("/v1/events", post(post_events))
        .route("/v1/bundle", post(post_bundle))
        .route("/v1/rollouts", get(get_rollouts))
        .route("/v1/report", get(get_report))
        .route("/v1/contacts/{id}", get(get_contact).delete(delete_contact))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(crate::console::routes())
        // 413 for a body over the limit, before it is read; 408 for a request that takes
        // longer than a platform would wait (a client trickling bytes holds nothing long).
        .layer(DefaultBodyLimit::disable())
        .layer(tower_http::limit::RequestBodyLimitLayer::new(MAX_BODY))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            std::time::Duration::from_secs(30),
        ))
        .with_state(app)
}

fn problem(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

impl App {
    /// A webhook's answer, its time observed in the webhook histogram.
    async fn timed(&self, answer: impl std::future::Future<Output = Response>) -> Response {
        let started = Instant::now();
        let response = answer.await;
        self.metrics
            .webhook_seconds
            .observe(started.elapsed().as_secs_f64());
        response
    }

    pub(crate) fn draining(&self) -> Option<Response> {
        self.draining.load(Ordering::Relaxed).then(|| {
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the host is stopping; send it again later",
            )
        })
    }

    /// `None` when the bearer token is right, else the 401 to answer.
    pub(crate) fn unauthorised(&self, headers: &HeaderMap) -> Option<Response> {
        // The scheme is case-insensitive (RFC 9110): `bearer` works as `Bearer` does.
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token);
        match given {
            Some(t) if crate::signature::same_token(t.trim(), &self.config.api_token) => None,
            _ => Some(problem(
                StatusCode::UNAUTHORIZED,
                "a bearer token (host.yaml api_token) is needed: Authorization: Bearer <token>",
            )),
        }
    }

    /// Each flow version's rollout stage and run counts as the engine last committed them
    /// (none before its first commit).
    pub(crate) fn committed_stats(
        &self,
    ) -> Result<HashMap<(String, String), rapport_engine::VersionStats>, String> {
        let global = self
            .reader
            .lock()
            .map_err(|_| "the store's reader is unavailable".to_string())?
            .meta("global")
            .map_err(|e| e.to_string())?;
        let global: Value = global
            .and_then(|g| serde_json::from_str(&g).ok())
            .unwrap_or(Value::Null);
        let mut stats = HashMap::new();
        if let (Some(v), Some(s)) = (
            global.get("versions").and_then(Value::as_array),
            global.get("stats").and_then(Value::as_array),
        ) {
            for (name, stat) in v.iter().zip(s) {
                if let (Some(n), Some(ver)) = (
                    name.get(0).and_then(Value::as_str),
                    name.get(1).and_then(Value::as_str),
                ) {
                    let stat = serde_json::from_value(stat.clone()).unwrap_or_default();
                    stats.insert((n.to_string(), ver.to_string()), stat);
                }
            }
        }
        Ok(stats)
    }

    /// Appends to the inbox and waits until it is on disk.
    pub(crate) async fn append(
        &self,
        events: Vec<String>,
        audit: Vec<HostAudit>,
    ) -> Result<Vec<u64>, String> {
        let (done, rx) = oneshot::channel();
        self.writer
            .send(Request::Append {
                events,
                audit,
                done,
            })
            .map_err(|_| "the store's writer stopped".to_string())?;
        rx.await
            .map_err(|_| "the store's writer stopped".to_string())?
    }

    /// A webhook whose signature (or secret token) is bad or missing: counted, audited
    /// at most 60 times a minute (a flood of forged requests must not fill the disk), 401.
    async fn forged(&self, endpoint: &str, header: &str, missing: bool) -> Response {
        self.metrics
            .signature_failures
            .get_or_create(&Endpoint {
                endpoint: endpoint.into(),
            })
            .inc();
        if self.forged_audit.allow() {
            let why = if missing { "missing" } else { "does not match" };
            let record = self.audit_record(
                "rejected",
                None,
                "bad_signature",
                format!("POST /webhooks/{endpoint}: {header} {why}"),
            );
            let _ = self.append(Vec::new(), vec![record]).await;
        }
        problem(StatusCode::UNAUTHORIZED, format!("bad or missing {header}"))
    }

    /// A signed body that is not JSON: answered 200, so the platform does not retry it
    /// for days, and recorded.
    async fn unreadable(&self, what: &str, e: serde_json::Error) -> Response {
        let record = self.audit_record(
            "ignored",
            None,
            "unreadable",
            format!("{what} that is not JSON: {e}"),
        );
        let _ = self.append(Vec::new(), vec![record]).await;
        self.metrics.ignored_parts.inc();
        (StatusCode::OK, "ok").into_response()
    }

    /// A message from `contact` on `channel` came in: counted, and timed until the
    /// first automated answer.
    fn message_in(&self, channel: &str, contact: String) {
        self.metrics.received("message", channel);
        if let Ok(mut w) = self.delivery.waiting_answer.lock() {
            if w.len() > 100_000 {
                w.retain(|_, t| t.elapsed().as_secs() < 3600);
            }
            w.entry(contact).or_insert_with(Instant::now);
        }
    }

    /// Commits a webhook's events and records, then answers 200; 500 (the platform
    /// retries) when the inbox cannot be written.
    async fn acknowledge(&self, events: Vec<String>, audit: Vec<HostAudit>) -> Response {
        if events.is_empty() && audit.is_empty() {
            return (StatusCode::OK, "ok").into_response();
        }
        match self.append(events, audit).await {
            // Acknowledged only now: the events are on disk.
            Ok(_) => (StatusCode::OK, "ok").into_response(),
            Err(e) => {
                tracing::error!("cannot commit a webhook to the inbox: {e}");
                problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the inbox could not be written; send it again",
                )
            }
        }
    }

    /// A platform's status of a message Rapport sent, as a `delivery` event; `None` for
    /// `sent` (recorded when the API accepted the message) and for messages the store
    /// does not know. A WhatsApp `failed` 131047 of a send that offered a template comes
    /// with that send in its template form, to deliver again.
    fn status_event(
        &self,
        channel: &str,
        s: crate::whatsapp::Status,
    ) -> Option<(String, Option<DeliveryRow>)> {
        if s.status == "sent" {
            return None;
        }
        let row = self
            .reader
            .lock()
            .ok()
            .and_then(|r| r.by_message_id(&s.message_id).ok().flatten())?;
        let mut e = json!({"id": format!("was:{}:{}", s.message_id, s.status),
            "at": rapport_engine::format_time(s.at), "type": "delivery",
            "action": row.action, "status": s.status, "channel": channel});
        if let Some(c) = &row.contact {
            e["contact"] = Value::String(c.clone());
        }
        let connector = self.config.channels.get(channel);
        let mut resend = None;
        if let Some(c) = s.code {
            if let Some(effect) = crate::delivery::effect_of(connector, &c) {
                e["effect"] = Value::String(effect.into());
            }
            if c == crate::whatsapp::OUTSIDE_WINDOW
                && matches!(connector, Some(Connector::WhatsApp(_)))
            {
                resend = serde_json::from_str::<Value>(&row.line)
                    .ok()
                    .and_then(|a| crate::whatsapp::as_template(&a));
            }
            e["code"] = Value::String(c);
        }
        let detail = match (&s.detail, &resend) {
            (d, Some(r)) => Some(format!(
                "{}resent once as template {}",
                d.as_ref().map(|d| format!("{d}; ")).unwrap_or_default(),
                r.get("template").and_then(Value::as_str).unwrap_or("")
            )),
            (d, None) => d.clone(),
        };
        if let Some(d) = detail {
            e["detail"] = Value::String(d);
        }
        self.metrics.received("delivery", channel);
        let kind = serde_json::from_str::<Value>(&row.line)
            .ok()
            .and_then(|a| a.get("type").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_default();
        if let Some(id) = e["id"].as_str() {
            self.metrics.expect_status(id, channel, &kind, &s.status);
        }
        let resend = resend.map(|r| DeliveryRow {
            line: r.to_string(),
            status: "pending".into(),
            ..row
        });
        Some((e.to_string(), resend))
    }

    /// Records a status event together with its send's template form and queues the
    /// resend once that is on disk.
    async fn resend(&self, event: String, row: DeliveryRow) -> Result<(), String> {
        let (done, rx) = oneshot::channel();
        let mark = rapport_store::Mark {
            action: row.action.clone(),
            status: "pending".into(),
            attempts: row.attempts,
            code: Some(crate::whatsapp::OUTSIDE_WINDOW.into()),
            detail: Some("resent as its template after 131047".into()),
            line: Some(row.line.clone()),
            only_from: Some("delivered".into()),
        };
        self.writer
            .send(Request::Mark {
                mark,
                event: Some(event),
                done,
            })
            .map_err(|_| "the store's writer stopped".to_string())?;
        if rx
            .await
            .map_err(|_| "the store's writer stopped".to_string())??
        {
            self.delivery.enqueue_resend(crate::delivery::Job {
                row,
                released: Instant::now(),
                seq: 0,
            });
        }
        Ok(())
    }

    fn audit_record(
        &self,
        kind: &str,
        contact: Option<String>,
        reason: &str,
        detail: String,
    ) -> HostAudit {
        let at = (self.now)();
        let mut record = json!({"at": rapport_engine::format_time(at), "actor": "system",
            "kind": kind, "reason": reason, "detail": detail});
        if let Some(c) = &contact {
            record["contact"] = Value::String(c.clone());
        }
        HostAudit {
            at,
            contact,
            record: record.to_string(),
        }
    }
}

#[derive(serde::Deserialize)]
struct Handshake {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

async fn meta_handshake(State(app): State<Shared>, Query(q): Query<Handshake>) -> Response {
    let token = q.verify_token.unwrap_or_default();
    let known = app.config.channels.values().any(|c| {
        c.meta_secrets()
            .is_some_and(|(_, verify)| crate::signature::same_token(&token, verify))
    });
    match (q.mode.as_deref(), q.challenge) {
        (Some("subscribe"), Some(challenge)) if known => challenge.into_response(),
        _ => problem(
            StatusCode::FORBIDDEN,
            "the verify token does not match host.yaml",
        ),
    }
}

async fn meta_webhook(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    app.timed(meta_webhook_inner(&app, &headers, &body)).await
}

async fn meta_webhook_inner(app: &App, headers: &HeaderMap, body: &Bytes) -> Response {
    if let Some(r) = app.draining() {
        return r;
    }
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok());
    // Checked on the raw bytes, once with each app secret host.yaml knows (there are few;
    // channels of one Meta app share theirs); a payload is read only for the channels
    // whose secret signed it.
    let mut verdicts: Vec<(&str, bool)> = Vec::new();
    let signed: Vec<(&String, &Connector)> = app
        .config
        .channels
        .iter()
        .filter(|(_, c)| {
            c.meta_secrets().is_some_and(|(secret, _)| {
                match verdicts.iter().find(|(s, _)| *s == secret) {
                    Some(&(_, valid)) => valid,
                    None => {
                        let valid = crate::signature::meta_valid(secret, body, signature);
                        verdicts.push((secret, valid));
                        valid
                    }
                }
            })
        })
        .collect();
    if signed.is_empty() {
        return app
            .forged("meta", "X-Hub-Signature-256", signature.is_none())
            .await;
    }
    let payload: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return app.unreadable("a signed webhook", e).await,
    };
    let object = payload.get("object").and_then(Value::as_str);
    let mut events = Vec::new();
    let mut audit = Vec::new();
    let mut taken = false;
    let mut resends = Vec::new();
    for &(name, connector) in &signed {
        // Each channel reads the payloads of its platform addressed to its number, Page
        // or account; a payload for none of them is recorded as not understood.
        let n = match connector {
            Connector::WhatsApp(wa) if object == Some("whatsapp_business_account") => {
                crate::whatsapp::normalise(&payload, &wa.phone_number_id, name)
            }
            Connector::Meta(meta) if object == Some(meta.platform.object()) => {
                crate::meta::normalise(&payload, meta, name)
            }
            _ => continue,
        };
        taken = true;
        for (contact, what) in n.ignored {
            app.metrics.ignored_parts.inc();
            audit.push(app.audit_record("ignored", contact, "not_understood", what));
        }
        for e in &n.events {
            let Ok(v) = serde_json::from_str::<Value>(e) else {
                continue;
            };
            let contact = v.get("contact").and_then(Value::as_str).map(str::to_string);
            match (v.get("type").and_then(Value::as_str), contact) {
                (Some("message"), Some(contact)) => app.message_in(name, contact),
                (Some(kind), _) => app.metrics.received(kind, name),
                _ => {}
            }
        }
        events.extend(n.events);
        for s in n.statuses {
            match app.status_event(name, s) {
                Some((e, None)) => events.push(e),
                Some((e, Some(row))) => resends.push((e, row)),
                None => {}
            }
        }
    }
    for (event, row) in resends {
        if let Err(e) = app.resend(event, row).await {
            tracing::error!("cannot record a resend: {e}");
            return problem(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the store could not be written; send it again",
            );
        }
    }
    if !taken {
        app.metrics.ignored_parts.inc();
        audit.push(app.audit_record(
            "ignored",
            None,
            "not_understood",
            format!(
                "a webhook for object `{}`, which no channel of host.yaml takes",
                object.unwrap_or("(none)")
            ),
        ));
    }
    app.acknowledge(events, audit).await
}

async fn telegram_webhook(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    app.timed(telegram_webhook_inner(&app, &headers, &body))
        .await
}

async fn telegram_webhook_inner(app: &App, headers: &HeaderMap, body: &Bytes) -> Response {
    if let Some(r) = app.draining() {
        return r;
    }
    let given = headers
        .get("x-telegram-bot-api-secret-token")
        .and_then(|v| v.to_str().ok());
    // The channel is the one whose secret token came (compared in constant time).
    let channel = app
        .config
        .channels
        .iter()
        .find_map(|(name, c)| match (c, given) {
            (Connector::Telegram(tg), Some(g))
                if crate::signature::same_token(g, &tg.secret_token) =>
            {
                Some(name)
            }
            _ => None,
        });
    let Some(channel) = channel else {
        return app
            .forged(
                "telegram",
                "X-Telegram-Bot-Api-Secret-Token",
                given.is_none(),
            )
            .await;
    };
    let update: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return app.unreadable("a Telegram update", e).await,
    };
    let (events, audit) = match crate::telegram::normalise(&update, channel) {
        crate::telegram::Update::Event { line, contact } => {
            app.message_in(channel, contact);
            (vec![line], Vec::new())
        }
        crate::telegram::Update::Ignored { contact, what } => {
            app.metrics.ignored_parts.inc();
            (
                Vec::new(),
                vec![app.audit_record("ignored", contact, "not_understood", what)],
            )
        }
    };
    app.acknowledge(events, audit).await
}

async fn post_events(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = app.unauthorised(&headers) {
        return r;
    }
    if let Some(r) = app.draining() {
        return r;
    }
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(_) => return problem(StatusCode::BAD_REQUEST, "the body is not UTF-8"),
    };
    let bundle = app.bundle.read().map(|b| Arc::clone(&b)).ok();
    let Some(bundle) = bundle else {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "no bundle loaded");
    };
    // One JSON event, or one per line; all are checked before any is accepted.
    let trimmed = text.trim();
    let lines: Vec<String> = if trimmed.starts_with('{') && !trimmed.contains('\n') {
        vec![trimmed.to_string()]
    } else {
        trimmed
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().to_string())
            .collect()
    };
    if lines.is_empty() {
        return problem(StatusCode::BAD_REQUEST, "no event in the body");
    }
    if lines.len() > MAX_EVENTS {
        return problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} events in one request; send at most {MAX_EVENTS} per request",
                lines.len()
            ),
        );
    }
    let mut errors = Vec::new();
    let mut invalid = 0usize;
    let mut kinds = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let decoded = rapport_engine::decode(line, &bundle.settings).and_then(|e| {
            match &e.channel {
                // Only the bundle's channels: a channel is a label of the metrics too.
                Some(c) if !bundle.settings.channels.contains_key(c) => {
                    Err(rapport_engine::Rejected {
                        reason: format!(
                            "channel {c:?} is not a channel of the bundle ({})",
                            bundle
                                .settings
                                .channels
                                .keys()
                                .cloned()
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        id: Some(e.id.clone()),
                        contact: e.contact.clone(),
                    })
                }
                _ => Ok(e),
            }
        });
        match decoded {
            Ok(e) => kinds.push((e.body.kind(), e.channel.unwrap_or_default())),
            Err(r) => {
                invalid += 1;
                // The first ones say enough; a body of nothing but bad lines must not make
                // an answer as large as itself.
                if errors.len() < 100 {
                    errors.push(json!({"line": i + 1, "id": r.id, "error": r.reason}));
                }
            }
        }
    }
    if invalid > 0 {
        let error = format!(
            "{invalid} of {} events are not valid; none was accepted",
            lines.len()
        );
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": error, "events": errors})),
        )
            .into_response();
    }
    match app.append(lines, Vec::new()).await {
        Ok(seqs) => {
            for (kind, channel) in kinds {
                app.metrics.received(kind, &channel);
            }
            Json(json!({"accepted": seqs.len()})).into_response()
        }
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

/// Asks the engine's thread something between two commits: stops its loop, which
/// handles the request and starts again.
pub(crate) async fn ask_engine<T>(
    app: &App,
    control: Control,
    rx: oneshot::Receiver<Result<T, String>>,
) -> Result<T, String> {
    app.control
        .send(control)
        .map_err(|_| "the engine stopped".to_string())?;
    app.feed
        .send(Feed::Stop)
        .map_err(|_| "the engine stopped".to_string())?;
    rx.await.map_err(|_| "the engine stopped".to_string())?
}

async fn post_bundle(State(app): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = app.unauthorised(&headers) {
        return r;
    }
    if let Some(r) = app.draining() {
        return r;
    }
    let bundle: Bundle = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                format!("not a bundle written by `rapport build`: {e}"),
            )
        }
    };
    if let Err(e) = bundle.validate() {
        return problem(
            StatusCode::BAD_REQUEST,
            format!("the bundle is damaged: {e}; rebuild it with `rapport build`"),
        );
    }
    let problems: Vec<String> = crate::config::against_bundle(&app.config, &bundle)
        .into_iter()
        .filter(|p| p.error)
        .map(|p| p.to_string())
        .collect();
    if !problems.is_empty() {
        return (
            StatusCode::CONFLICT,
            Json(json!({"error": "the bundle does not fit host.yaml; nothing was deployed", "problems": problems})),
        )
            .into_response();
    }
    let (done, rx) = oneshot::channel();
    match ask_engine(
        &app,
        Control::Deploy {
            bundle: Box::new(bundle),
            done,
        },
        rx,
    )
    .await
    {
        Ok(changes) => {
            let flows: Vec<Value> = changes.iter().map(change_json).collect();
            Json(json!({"deployed": true, "flows": flows})).into_response()
        }
        Err(e) => problem(StatusCode::CONFLICT, e),
    }
}

fn change_json(c: &rapport_engine::deploy::FlowChange) -> Value {
    use rapport_engine::deploy::FlowChange;
    let text = rapport_host::deploy::describe(c);
    match c {
        FlowChange::Unchanged { flow, version } => {
            json!({"flow": flow, "version": version, "change": "unchanged", "summary": text})
        }
        FlowChange::NewVersion {
            flow,
            version,
            previous,
            stage,
        } => json!({"flow": flow,
            "version": version, "change": "new_version", "previous": previous,
            "rollout_percent": stage, "summary": text}),
        FlowChange::Added { flow, version } => {
            json!({"flow": flow, "version": version, "change": "added", "summary": text})
        }
        FlowChange::Removed {
            flow,
            version,
            runs,
        } => json!({"flow": flow, "version": version,
            "change": "removed", "runs_continue": runs, "summary": text}),
    }
}

async fn get_rollouts(State(app): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(r) = app.unauthorised(&headers) {
        return r;
    }
    let stats = match app.committed_stats() {
        Ok(s) => s,
        Err(e) => return problem(StatusCode::INTERNAL_SERVER_ERROR, e),
    };
    let Ok(bundle) = app.bundle.read().map(|b| Arc::clone(&b)) else {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "no bundle loaded");
    };
    let describe = |f: &rapport_bundle::Flow, role: &str| {
        let st = stats
            .get(&(f.name.clone(), f.version.clone()))
            .cloned()
            .unwrap_or_default();
        let percent = f
            .rollout
            .as_ref()
            .map(|r| r.stages.get(st.stage).copied().unwrap_or(10_000) as f64 / 100.0);
        json!({"flow": f.name, "version": f.version, "role": role,
            "rollout_percent": percent, "halted": st.halted,
            "enrolled": st.enrolled, "finished": st.finished, "opted_out": st.opted_out,
            "handoffs": st.handoffs, "errors": st.errors, "converted": st.converted})
    };
    let mut out = Vec::new();
    for f in &bundle.flows {
        out.push(describe(f, "current"));
        if let Some(p) = &f.previous {
            out.push(describe(p, "previous"));
        }
    }
    for f in &bundle.retired {
        out.push(describe(f, "retired"));
    }
    Json(json!({"versions": out})).into_response()
}

#[derive(serde::Deserialize)]
struct ReportQuery {
    since: Option<String>,
    flow: Option<String>,
}

/// The KPI report as JSON: the same document as `rapport report --format json`.
async fn get_report(
    State(app): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ReportQuery>,
) -> Response {
    if let Some(r) = app.unauthorised(&headers) {
        return r;
    }
    let since = match rapport_report::parse_since(q.since.as_deref().unwrap_or("7d")) {
        Ok(s) => s,
        Err(e) => return problem(StatusCode::BAD_REQUEST, format!("since: {e}")),
    };
    if let Some(name) = &q.flow {
        let Ok(bundle) = app.bundle.read().map(|b| Arc::clone(&b)) else {
            return problem(StatusCode::SERVICE_UNAVAILABLE, "no bundle loaded");
        };
        let names = bundle.flow_names();
        if !names.contains(&name.as_str()) {
            return problem(
                StatusCode::BAD_REQUEST,
                format!(
                    "flow: the running bundle has no flow `{name}`; its flows: {}",
                    names.join(", ")
                ),
            );
        }
    }
    match crate::console::report(&app, since, q.flow).await {
        Ok(r) => Json(&*r).into_response(),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn get_contact(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = app.unauthorised(&headers) {
        return r;
    }
    let path = app.store_path.clone();
    let result = tokio::task::spawn_blocking(move || {
        use rapport_store::Store;
        let mut store =
            rapport_store::SqliteStore::open_existing(&path).map_err(|e| e.to_string())?;
        store.export_contact(&id).map_err(|e| e.to_string())
    })
    .await;
    match result {
        Ok(Ok(Some(v))) => Json(v).into_response(),
        Ok(Ok(None)) => problem(
            StatusCode::NOT_FOUND,
            "the store holds nothing about this contact",
        ),
        Ok(Err(e)) => problem(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn delete_contact(
    State(app): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Some(r) = app.unauthorised(&headers) {
        return r;
    }
    if let Some(r) = app.draining() {
        return r;
    }
    let (done, rx) = oneshot::channel();
    match ask_engine(&app, Control::Forget { contact: id, done }, rx).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => problem(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn metrics(State(app): State<Shared>) -> Response {
    if let Ok(r) = app.reader.lock() {
        if let Ok(n) = r.inbox_waiting() {
            app.metrics.inbox_lag.set(n as i64);
        }
        // Counting open handoffs reads every contact: at most every 10 seconds.
        if let Ok(mut last) = app.handoffs_counted.lock() {
            if last.is_none_or(|t| t.elapsed().as_secs() >= 10) {
                if let Ok((n, oldest)) = r.open_handoffs() {
                    app.metrics.open_handoffs.set(n as i64);
                    let age = oldest.map_or(0, |t| ((app.now)() - t).max(0) / 1000);
                    app.metrics.oldest_open_handoff.set(age);
                }
                *last = Some(Instant::now());
            }
        }
    }
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
        .into_response()
}

async fn readyz(State(app): State<Shared>) -> Response {
    if app.draining.load(Ordering::Relaxed) {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "stopping");
    }
    if !app.engine_running.load(Ordering::Relaxed) {
        return problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the engine is not running (starting, or deploying)",
        );
    }
    (StatusCode::OK, "ready\n").into_response()
}
