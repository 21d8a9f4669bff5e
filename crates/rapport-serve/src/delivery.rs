//! Delivery: from a released action to the platform or the sink.
//!
//! - A contact's actions go out in order: its next one waits for the previous one's
//!   outcome. Contacts do not wait for each other (one task per contact with work).
//! - Each action is marked `in_flight` (on disk) before its call and `delivered` or
//!   `failed` after it, with the platform's message id or error; the outcome goes back to
//!   the engine as a `delivery` event through the inbox.
//! - 429, 5xx, network errors and the platforms' throttling codes are retried with
//!   exponential backoff and jitter, honouring `Retry-After`, up to `max_attempts`; any
//!   other error fails the action at once.
//! - A crash between the platform's 2xx and the `delivered` mark resends the action at
//!   the next start (it is still `in_flight`); such resends are counted.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rapport_store::{DeliveryRow, Mark};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Connector, HostConfig};
use crate::metrics::Metrics;
use crate::writer::Request;

/// One action to deliver.
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub(crate) row: DeliveryRow,
    /// When the engine released it (for the delivery latency).
    pub(crate) released: Instant,
    /// Its place in release order (set when queued).
    pub(crate) seq: u64,
}

/// How a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waited {
    Done,
    /// The host is stopping: leave the action for the next start.
    Stopping,
    /// The contact said STOP after this message was released: it must not go out.
    OptedOut,
}

/// What the delivery side shares.
pub(crate) struct Delivery {
    pub(crate) config: Arc<HostConfig>,
    pub(crate) templates: Mutex<std::collections::BTreeMap<String, Option<Vec<String>>>>,
    pub(crate) writer: std::sync::mpsc::Sender<Request>,
    pub(crate) client: reqwest::Client,
    pub(crate) metrics: Arc<Metrics>,
    /// Per contact (or per action, for actions of no contact): actions waiting.
    queues: Mutex<HashMap<String, VecDeque<Job>>>,
    /// Per channel: the platform's rate limit.
    buckets: HashMap<String, tokio::sync::Mutex<Bucket>>,
    /// Set on stop: no new call starts.
    pub(crate) draining: AtomicBool,
    /// Calls and waits in progress.
    active: tokio::sync::watch::Sender<usize>,
    /// Inbound messages waiting for their first automated answer, by contact.
    pub(crate) waiting_answer: Mutex<HashMap<String, Instant>>,
    /// When each recipient was last sent to (the per-recipient spacing).
    last_sent: Mutex<HashMap<String, Instant>>,
    /// Release order of queued jobs.
    next_seq: std::sync::atomic::AtomicU64,
    /// Contacts whose opt-out confirmation was released, with its place in release
    /// order: a message released before it must not go out any more.
    stopped: Mutex<HashMap<String, (u64, Instant)>>,
    now: fn() -> i64,
}

/// A token bucket: `rate` tokens a second, at most `burst` kept.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        Bucket {
            rate,
            burst,
            tokens: burst,
            at: Instant::now(),
        }
    }

    /// Takes a token; returns how long to wait before using it.
    pub(crate) fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Accepted; the platform's message id when it gives one.
    Ok(Option<String>),
    /// Try again, after at least this long when the platform said so.
    Retry {
        code: String,
        detail: String,
        after: Option<Duration>,
    },
    Failed {
        code: String,
        detail: String,
    },
}

impl Delivery {
    pub(crate) fn new(
        config: Arc<HostConfig>,
        templates: std::collections::BTreeMap<String, Option<Vec<String>>>,
        writer: std::sync::mpsc::Sender<Request>,
        metrics: Arc<Metrics>,
        now: fn() -> i64,
    ) -> Result<Arc<Delivery>, String> {
        let client = reqwest::Client::builder()
            .timeout(config.delivery.timeout)
            .user_agent(concat!("rapport/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot make the HTTP client: {e}"))?;
        let buckets = config
            .channels
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    tokio::sync::Mutex::new(Bucket::new(c.rate(), c.rate().max(1.0))),
                )
            })
            .collect();
        Ok(Arc::new(Delivery {
            config,
            templates: Mutex::new(templates),
            writer,
            client,
            metrics,
            queues: Mutex::new(HashMap::new()),
            buckets,
            draining: AtomicBool::new(false),
            active: tokio::sync::watch::channel(0).0,
            waiting_answer: Mutex::new(HashMap::new()),
            last_sent: Mutex::new(HashMap::new()),
            // 0 is a resend's (`enqueue_resend`).
            next_seq: std::sync::atomic::AtomicU64::new(1),
            stopped: Mutex::new(HashMap::new()),
            now,
        }))
    }

    /// Takes jobs from `rx` until it closes, each contact's in order.
    pub(crate) async fn run(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Job>) {
        while let Some(job) = rx.recv().await {
            self.enqueue(job);
        }
    }

    /// Queues a job behind its contact's earlier ones; starts the contact's task if idle.
    pub(crate) fn enqueue(self: &Arc<Self>, mut job: Job) {
        job.seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.queue(job);
    }

    /// Queues a send again in another form (a template after WhatsApp's 131047). It
    /// counts as released before everything else, so any STOP the contact said in the
    /// meantime cancels it.
    pub(crate) fn enqueue_resend(self: &Arc<Self>, mut job: Job) {
        job.seq = 0;
        self.queue(job);
    }

    fn queue(self: &Arc<Self>, job: Job) {
        // An opt-out confirmation: what was released to the contact before it and has
        // not gone out yet stays unsent.
        if job.row.line.contains("\"opt_out_confirm\"") {
            let policy = serde_json::from_str::<Value>(&job.row.line)
                .ok()
                .and_then(|a| a.get("policy").and_then(Value::as_str).map(str::to_string));
            if let (Some("opt_out_confirm"), Some(c)) = (policy.as_deref(), &job.row.contact) {
                if let Ok(mut stopped) = self.stopped.lock() {
                    if stopped.len() > 100_000 {
                        // Nothing waits a day: retries give up well before.
                        stopped.retain(|_, (_, at)| at.elapsed().as_secs() < 86_400);
                    }
                    stopped.insert(c.clone(), (job.seq, Instant::now()));
                }
            }
        }
        let key = job
            .row
            .contact
            .clone()
            .unwrap_or_else(|| format!("action:{}", job.row.action));
        self.metrics.outbox_depth.inc();
        let start = {
            let Ok(mut queues) = self.queues.lock() else {
                return;
            };
            match queues.get_mut(&key) {
                Some(q) => {
                    q.push_back(job);
                    false
                }
                None => {
                    queues.insert(key.clone(), VecDeque::from([job]));
                    true
                }
            }
        };
        if start {
            self.active.send_modify(|n| *n += 1);
            let me = Arc::clone(self);
            tokio::spawn(async move {
                me.contact_task(key).await;
                me.active.send_modify(|n| *n = n.saturating_sub(1));
            });
        }
    }

    async fn contact_task(self: &Arc<Self>, key: String) {
        loop {
            if self.draining.load(Ordering::Relaxed) {
                // What was not started stays `pending` in the store for the next start.
                if let Ok(mut q) = self.queues.lock() {
                    if let Some(left) = q.remove(&key) {
                        self.metrics.outbox_depth.dec_by(left.len() as i64);
                    }
                }
                return;
            }
            let job = {
                let Ok(mut queues) = self.queues.lock() else {
                    return;
                };
                match queues.get_mut(&key).and_then(VecDeque::pop_front) {
                    Some(j) => j,
                    None => {
                        queues.remove(&key);
                        return;
                    }
                }
            };
            self.deliver(job).await;
            self.metrics.outbox_depth.dec();
        }
    }

    /// Records a delivery's new status (with its `delivery` event for the inbox, in the
    /// same transaction); `false` when the delivery is no longer recorded (its contact
    /// was erased), and then the event is dropped too.
    async fn mark(&self, mark: Mark, event: Option<String>) -> Result<bool, String> {
        let (done, rx) = oneshot::channel();
        self.writer
            .send(Request::Mark { mark, event, done })
            .map_err(|_| "the writer stopped".to_string())?;
        rx.await.map_err(|_| "the writer stopped".to_string())?
    }

    async fn deliver(&self, job: Job) {
        let mut action: Value = serde_json::from_str(&job.row.line).unwrap_or(Value::Null);
        let kind = action
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let channel = job.row.channel.clone().unwrap_or_default();
        let metric_channel = if matches!(kind.as_str(), "send" | "reply" | "hide") {
            channel.clone()
        } else {
            format!("sink:{}", sink_name(&kind))
        };
        if job.row.status == "in_flight" {
            // It was out when the host stopped: the platform may have it already.
            self.metrics.resends_after_crash.inc();
        }
        let mut attempts = job.row.attempts;
        let max = self.config.delivery.max_attempts;
        // A message to the person (not a policy reply: the STOP confirmation itself, HELP)
        // is dropped if the contact says STOP before it goes out.
        let cancellable = matches!(kind.as_str(), "send" | "reply")
            && action.get("policy").is_none_or(Value::is_null);
        let opted_out = || cancellable && self.opted_out_since(&job);
        let outcome = loop {
            // The platform's limits, waited for before the action is marked in flight
            // (a stop during the wait leaves it pending).
            let pace = self
                .pacing(&kind, &channel, job.row.contact.as_deref())
                .await;
            match self.wait(pace, &opted_out).await {
                Waited::Done => {}
                Waited::Stopping => return,
                Waited::OptedOut => break opted_out_outcome(),
            }
            attempts += 1;
            let in_flight = Mark {
                action: job.row.action.clone(),
                status: "in_flight".into(),
                attempts,
                code: None,
                detail: None,
                line: None,
                only_from: None,
            };
            match self.mark(in_flight, None).await {
                Ok(true) => {}
                // The contact was erased since the action was released: nothing goes out.
                Ok(false) => return,
                Err(e) => {
                    tracing::error!("cannot record a delivery: {e}; it stays pending");
                    return;
                }
            }
            let outcome = self
                .call(&kind, &channel, &action, job.row.contact.as_deref())
                .await;
            let label = match &outcome {
                Outcome::Ok(_) => "ok",
                Outcome::Retry { .. } => "retry",
                Outcome::Failed { .. } => "failed",
            };
            self.metrics.delivery_attempt(&metric_channel, label);
            match outcome {
                Outcome::Retry {
                    code,
                    detail,
                    after,
                } if attempts < max => {
                    let wait = backoff(&self.config, attempts, &job.row.action)
                        .max(after.unwrap_or_default());
                    tracing::warn!(
                        "delivery of {} failed ({code}: {detail}); attempt {attempts} of {max}, retrying in {:.1}s",
                        job.row.action,
                        wait.as_secs_f64()
                    );
                    let pending = Mark {
                        action: job.row.action.clone(),
                        status: "pending".into(),
                        attempts,
                        code: Some(code),
                        detail: Some(detail),
                        line: None,
                        only_from: None,
                    };
                    if !matches!(self.mark(pending, None).await, Ok(true)) {
                        return;
                    }
                    match self.wait(wait, &opted_out).await {
                        Waited::Done => {}
                        Waited::Stopping => return,
                        Waited::OptedOut => break opted_out_outcome(),
                    }
                }
                Outcome::Retry { code, detail, .. } => {
                    break Outcome::Failed {
                        code,
                        detail: format!("{detail} (after {attempts} attempts)"),
                    }
                }
                // WhatsApp found the window closed: the send goes once more as the
                // template its statement offered (recorded first, so a restart resends
                // the template, not the text).
                Outcome::Failed { code, detail }
                    if code == crate::whatsapp::OUTSIDE_WINDOW
                        && matches!(
                            self.config.channels.get(&channel),
                            Some(Connector::WhatsApp(_))
                        ) =>
                {
                    let Some(resend) = crate::whatsapp::as_template(&action) else {
                        break Outcome::Failed { code, detail };
                    };
                    tracing::info!(
                        "{} was refused as outside WhatsApp's window; resending it as its template",
                        job.row.action
                    );
                    // The refusal is recorded as the send's outcome; the template's own
                    // outcome follows as `dlv:<action>:resent`.
                    let template = resend.get("template").and_then(Value::as_str).unwrap_or("");
                    let mut refused = json!({
                        "id": format!("dlv:{}", job.row.action),
                        "at": rapport_engine::format_time((self.now)()),
                        "type": "delivery",
                        "action": job.row.action,
                        "status": "failed",
                        "code": code,
                        "detail": format!("{detail}; resent once as template {template}"),
                        "channel": channel,
                    });
                    if let Some(c) = &job.row.contact {
                        refused["contact"] = Value::String(c.clone());
                    }
                    self.metrics.expect_status(
                        &format!("dlv:{}", job.row.action),
                        &metric_channel,
                        &kind,
                        "failed",
                    );
                    let pending = Mark {
                        action: job.row.action.clone(),
                        status: "pending".into(),
                        attempts,
                        code: Some(code),
                        detail: Some(detail),
                        line: Some(resend.to_string()),
                        only_from: None,
                    };
                    if !matches!(
                        self.mark(pending, Some(refused.to_string())).await,
                        Ok(true)
                    ) {
                        return;
                    }
                    action = resend;
                }
                other => break other,
            }
        };
        let now = (self.now)();
        let at = rapport_engine::format_time(now);
        let (mark, status, code, detail) = match &outcome {
            Outcome::Ok(id) => {
                self.metrics
                    .delivery_latency
                    .observe(job.released.elapsed().as_secs_f64());
                if kind == "send" {
                    if let Some(contact) = &job.row.contact {
                        let first = self
                            .waiting_answer
                            .lock()
                            .ok()
                            .and_then(|mut w| w.remove(contact));
                        if let Some(t) = first {
                            self.metrics
                                .first_response
                                .observe(t.elapsed().as_secs_f64());
                        }
                    }
                }
                // A platform's 2xx means accepted (its status webhooks say delivered and
                // read later); a sink's means delivered.
                let status = if matches!(kind.as_str(), "send" | "reply" | "hide") {
                    "sent"
                } else {
                    "delivered"
                };
                ("delivered", status, None, id.clone())
            }
            Outcome::Failed { code, detail } => {
                tracing::warn!("delivery of {} failed: {code}: {detail}", job.row.action);
                ("failed", "failed", Some(code.clone()), Some(detail.clone()))
            }
            Outcome::Retry { .. } => return,
        };
        // A resend's outcome is an event of its own.
        let resent = action.get("resent_after").is_some();
        let mut event = json!({
            "id": if resent {
                format!("dlv:{}:resent", job.row.action)
            } else {
                format!("dlv:{}", job.row.action)
            },
            "at": at,
            "type": "delivery",
            "action": job.row.action,
            "status": status,
        });
        if let Some(c) = &job.row.contact {
            event["contact"] = Value::String(c.clone());
        }
        if !channel.is_empty() {
            event["channel"] = Value::String(channel.clone());
        }
        if let Some(c) = &code {
            event["code"] = Value::String(c.clone());
            if let Some(effect) = effect_of(self.config.channels.get(&channel), c) {
                event["effect"] = Value::String(effect.into());
            }
        }
        if let Some(d) = &detail {
            event["detail"] = Value::String(d.clone());
        }
        if let Some(id) = event["id"].as_str() {
            self.metrics
                .expect_status(id, &metric_channel, &kind, status);
        }
        let mark = Mark {
            action: job.row.action.clone(),
            status: mark.into(),
            attempts,
            code,
            detail,
            line: None,
            only_from: None,
        };
        if let Err(e) = self.mark(mark, Some(event.to_string())).await {
            tracing::error!("cannot record the outcome of {}: {e}", job.row.action);
        }
    }

    /// How long a message must wait for the platform's limits: the channel's rate (a
    /// token taken now), then the time since the last message to the same person.
    async fn pacing(&self, kind: &str, channel: &str, contact: Option<&str>) -> Duration {
        if kind != "send" {
            return Duration::ZERO;
        }
        let Some(connector) = self.config.channels.get(channel) else {
            return Duration::ZERO;
        };
        let mut wait = match self.buckets.get(channel) {
            Some(b) => b.lock().await.take(Instant::now()),
            None => Duration::ZERO,
        };
        // A contact's actions go out one at a time, so nothing else sends to this
        // recipient between this look and the call.
        if let Some(c) = contact {
            let last = self.last_sent.lock().ok().and_then(|m| m.get(c).copied());
            if let Some(gap) = last.map(|l| l.elapsed()) {
                wait = wait.max(connector.per_recipient().saturating_sub(gap));
            }
        }
        wait
    }

    /// Sleeps `wait`, looking every 100 ms whether the host is stopping or the contact
    /// opted out.
    async fn wait(&self, wait: Duration, opted_out: &(dyn Fn() -> bool + Sync)) -> Waited {
        let end = Instant::now() + wait;
        loop {
            if self.draining.load(Ordering::Relaxed) {
                return Waited::Stopping;
            }
            if opted_out() {
                return Waited::OptedOut;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Waited::Done;
            }
            tokio::time::sleep(left.min(Duration::from_millis(100))).await;
        }
    }

    /// Notes a message the platform took, for the per-recipient spacing.
    fn note_sent(&self, outcome: &Outcome, contact: Option<&str>, connector: &Connector) {
        if let (Outcome::Ok(_), Some(c)) = (outcome, contact) {
            if let Ok(mut m) = self.last_sent.lock() {
                if m.len() > 100_000 {
                    let keep = connector.per_recipient();
                    m.retain(|_, t| t.elapsed() < keep);
                }
                m.insert(c.to_string(), Instant::now());
            }
        }
    }

    /// Whether the contact's opt-out confirmation was released after `job`.
    fn opted_out_since(&self, job: &Job) -> bool {
        let Some(c) = &job.row.contact else {
            return false;
        };
        self.stopped
            .lock()
            .ok()
            .and_then(|s| s.get(c).map(|(seq, _)| *seq > job.seq))
            .unwrap_or(false)
    }

    async fn call(
        &self,
        kind: &str,
        channel: &str,
        action: &Value,
        contact: Option<&str>,
    ) -> Outcome {
        match kind {
            "send" | "reply" | "hide" => {
                let Some(connector) = self.config.channels.get(channel) else {
                    return Outcome::Failed {
                        code: "no_connector".into(),
                        detail: format!("host.yaml connects no channel `{channel}`"),
                    };
                };
                let call = self.platform_call(connector, kind, channel, action);
                let (request, platform) = match call {
                    Ok(c) => c,
                    Err(u) => {
                        return Outcome::Failed {
                            code: u.code.into(),
                            detail: u.detail,
                        }
                    }
                };
                let outcome = outcome(request.send().await, platform).await;
                self.note_sent(&outcome, contact, connector);
                outcome
            }
            other => {
                let name = sink_name(other);
                let Some(sink) = self.config.sinks.get(name) else {
                    return Outcome::Failed {
                        code: "no_sink".into(),
                        detail: format!("host.yaml has no `{name}` sink"),
                    };
                };
                let request = self.signed_post(&sink.url, &sink.secret, action);
                outcome(request.send().await, Platform::Sink).await
            }
        }
    }

    /// The call that delivers a `send`, `reply` or `hide` on a channel, and who answers it.
    fn platform_call(
        &self,
        connector: &Connector,
        kind: &str,
        channel: &str,
        action: &Value,
    ) -> Result<(reqwest::RequestBuilder, Platform), crate::whatsapp::Unsendable> {
        use crate::whatsapp::Unsendable;
        let no_comments = |platform: &str| Unsendable {
            code: "unsupported",
            detail: format!("{platform} has no `{kind}` of comments"),
        };
        match connector {
            Connector::WhatsApp(wa) => {
                if kind != "send" {
                    return Err(no_comments("WhatsApp"));
                }
                let templates = match self.templates.lock() {
                    Ok(t) => t.clone(),
                    Err(_) => Default::default(),
                };
                let (url, body) = crate::whatsapp::send_request(wa, action, channel, &templates)?;
                let request = self
                    .client
                    .post(url)
                    .bearer_auth(&wa.access_token)
                    .json(&body);
                Ok((request, Platform::WhatsApp))
            }
            Connector::Meta(meta) => {
                let (url, body) = crate::meta::request(meta, kind, action, channel)?;
                let request = self
                    .client
                    .post(url)
                    .bearer_auth(&meta.access_token)
                    .json(&body);
                Ok((request, Platform::Meta))
            }
            Connector::Telegram(tg) => {
                if kind != "send" {
                    return Err(no_comments("Telegram"));
                }
                let (url, body) = crate::telegram::send_request(tg, action, channel)?;
                Ok((self.client.post(url).json(&body), Platform::Telegram))
            }
            Connector::Webhook(hook) => {
                if kind != "send" {
                    return Err(no_comments(&format!("The webhook channel `{channel}`")));
                }
                Ok((
                    self.signed_post(&hook.url, &hook.secret, action),
                    Platform::Gateway,
                ))
            }
        }
    }

    /// A POST of the action's JSON, signed with `secret` (`X-Rapport-Signature`), with
    /// the action id as `Idempotency-Key`.
    fn signed_post(&self, url: &str, secret: &str, action: &Value) -> reqwest::RequestBuilder {
        let body = action.to_string();
        let unix = (self.now)() / 1000;
        let signature = crate::signature::rapport_header(secret, unix, body.as_bytes());
        let id = action.get("id").and_then(Value::as_str).unwrap_or("");
        self.client
            .post(url)
            .header("content-type", "application/json")
            .header("x-rapport-signature", signature)
            .header("idempotency-key", id)
            .body(body)
    }

    /// Waits until no contact task is working, or `grace` passed.
    pub(crate) async fn drain(&self, grace: Duration) -> bool {
        self.draining.store(true, Ordering::Relaxed);
        let mut rx = self.active.subscribe();
        let done = tokio::time::timeout(grace, rx.wait_for(|n| *n == 0)).await;
        done.is_ok()
    }
}

/// What a platform's error code means for the contact, as a `delivery` event's `effect`:
/// WhatsApp 131050 (the person stopped marketing messages) withdraws marketing consent;
/// a Telegram 403 (the person blocked the bot, or left) is an opt-out; so is a gateway's
/// `21610` (Twilio: the number replied STOP to the carrier) or `opted_out`.
pub(crate) fn effect_of(connector: Option<&Connector>, code: &str) -> Option<&'static str> {
    match (connector, code) {
        (Some(Connector::WhatsApp(_)), "131050") => Some("marketing_withdrawn"),
        (Some(Connector::Telegram(_)), "403") => Some("opted_out"),
        (Some(Connector::Webhook(_)), "21610" | "opted_out") => Some("opted_out"),
        _ => None,
    }
}

/// A message the contact's STOP overtook: never sent, recorded as failed.
fn opted_out_outcome() -> Outcome {
    Outcome::Failed {
        code: "cancelled_by_stop".into(),
        detail: "the contact said STOP before it went out; not sent".into(),
    }
}

/// The sink of an action type (`handoff_closed`, `draft` and `draft_closed` go where
/// `handoff` goes: the people's queues).
fn sink_name(kind: &str) -> &str {
    match kind {
        "handoff_closed" | "draft" | "draft_closed" => "handoff",
        other => other,
    }
}

/// Exponential backoff with full jitter: a random wait up to `first * 2^(n-1)`, capped
/// at `max`, and never less than half of it, so retries of many actions spread out.
fn backoff(config: &HostConfig, attempt: u32, action: &str) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let first = config.delivery.first.as_secs_f64();
    let cap = config.delivery.max.as_secs_f64();
    let ceiling = (first * 2f64.powi(attempt.saturating_sub(1).min(30) as i32)).min(cap);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write(action.as_bytes());
    h.write_u32(attempt);
    let unit = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    Duration::from_secs_f64(ceiling * (0.5 + unit / 2.0))
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    // Seconds; an HTTP date is rare from these APIs and taken as a minute.
    match v.trim().parse::<u64>() {
        Ok(s) => Some(Duration::from_secs(s.min(3600))),
        Err(_) => Some(Duration::from_secs(60)),
    }
}

/// Who answered a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Platform {
    WhatsApp,
    /// Instagram and Messenger (the Graph API, as WhatsApp, with its own codes).
    Meta,
    Telegram,
    /// A `webhook` channel's gateway: its status, and `id` or `code` in a JSON answer.
    Gateway,
    Sink,
}

/// An answer's body, at most 64 KiB of it: enough for any platform's JSON, and a
/// misbehaving gateway cannot make the host hold more.
async fn capped_body(mut r: reqwest::Response) -> Vec<u8> {
    const CAP: usize = 64 * 1024;
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = r.chunk().await {
        let room = CAP - out.len();
        out.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if out.len() >= CAP {
            break;
        }
    }
    out
}

/// How a call ended. WhatsApp answers with a message id or an error code in JSON;
/// Telegram with `ok`, `result.message_id` or `error_code`, `description` and, for 429,
/// `parameters.retry_after`; a sink only with its status and text.
async fn outcome(response: reqwest::Result<reqwest::Response>, platform: Platform) -> Outcome {
    let r = match response {
        Ok(r) => r,
        Err(e) => {
            return Outcome::Retry {
                code: "network".into(),
                detail: e.to_string(),
                after: None,
            }
        }
    };
    let status = r.status();
    let mut after = retry_after(r.headers());
    let transient = matches!(status.as_u16(), 408 | 429) || status.is_server_error();
    let raw = capped_body(r).await;
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let (code, detail, throttled) = match platform {
        Platform::WhatsApp | Platform::Meta => {
            if status.is_success() {
                // A send's message id (WhatsApp, then Messenger); a comment reply's id.
                let id = body
                    .pointer("/messages/0/id")
                    .or_else(|| body.get("message_id"))
                    .or_else(|| body.get("id"))
                    .and_then(Value::as_str);
                return Outcome::Ok(id.map(str::to_string));
            }
            let error = body.get("error");
            let code = error.and_then(|e| e.get("code")).and_then(Value::as_i64);
            let detail = error
                .and_then(|e| e.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            (
                code.map_or_else(|| status.as_u16().to_string(), |c| c.to_string()),
                detail,
                code.is_some_and(if platform == Platform::Meta {
                    crate::meta::throttled
                } else {
                    crate::whatsapp::throttled
                }),
            )
        }
        Platform::Telegram => {
            if status.is_success() && body.get("ok").and_then(Value::as_bool) != Some(false) {
                let id = body.pointer("/result/message_id").map(Value::to_string);
                return Outcome::Ok(id);
            }
            if let Some(secs) = body
                .pointer("/parameters/retry_after")
                .and_then(Value::as_u64)
            {
                after = Some(Duration::from_secs(secs.min(3600)));
            }
            let code = body
                .get("error_code")
                .and_then(Value::as_i64)
                .map_or_else(|| status.as_u16().to_string(), |c| c.to_string());
            let detail = body
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            (code, detail, false)
        }
        Platform::Gateway => {
            let text = |k: &str| {
                body.get(k).and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
            };
            if status.is_success() {
                return Outcome::Ok(text("id").or_else(|| text("message_id")));
            }
            let code = text("code").unwrap_or_else(|| status.as_u16().to_string());
            let detail = text("message")
                .or_else(|| text("error"))
                .unwrap_or_default();
            (code, detail, false)
        }
        Platform::Sink => {
            let text = String::from_utf8_lossy(&raw).into_owned();
            if status.is_success() {
                return Outcome::Ok(None);
            }
            (status.as_u16().to_string(), text, false)
        }
    };
    // What a platform says is kept in the store and the audit trail: a few lines of it.
    let code: String = code.chars().take(64).collect();
    let detail: String = detail.chars().take(500).collect();
    if transient || throttled {
        Outcome::Retry {
            code,
            detail,
            after,
        }
    } else {
        Outcome::Failed { code, detail }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_a_burst_through_then_spaces_calls_at_its_rate() {
        let start = Instant::now();
        let mut b = Bucket::new(2.0, 2.0);
        assert_eq!(b.take(start), Duration::ZERO);
        assert_eq!(b.take(start), Duration::ZERO);
        let wait = b.take(start);
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // A second later two more tokens came, one of them owed.
        assert_eq!(b.take(start + Duration::from_secs(1)), Duration::ZERO);
    }
}
