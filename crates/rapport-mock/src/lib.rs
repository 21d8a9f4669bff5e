//! A mock of the platforms' APIs and of a sink: a real HTTP server on 127.0.0.1 that
//! records every call (path, headers, body, when) and answers each with the next
//! scripted reply, or with the platform's success (WhatsApp, Messenger and Instagram and
//! their comment APIs, Telegram) carrying a fresh id.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// One call the mock received.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    /// The body as received.
    pub raw: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub body: Value,
    pub at: Instant,
    /// What the mock answered.
    pub status: u16,
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    /// Wait this long before answering.
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
            delay: Duration::ZERO,
        }
    }

    /// A WhatsApp Cloud API error (`{"error": {"code": ..}}`).
    pub fn whatsapp_error(status: u16, code: i64, message: &str) -> Reply {
        Reply::status(
            status,
            json!({"error": {"message": message, "type": "OAuthException", "code": code,
                "fbtrace_id": "mock"}}),
        )
    }

    /// A Telegram Bot API error (`{"ok": false, "error_code": ..}`), with
    /// `parameters.retry_after` when given.
    pub fn telegram_error(status: u16, description: &str, retry_after: Option<u64>) -> Reply {
        let mut body = json!({"ok": false, "error_code": status, "description": description});
        if let Some(s) = retry_after {
            body["parameters"] = json!({ "retry_after": s });
        }
        Reply::status(status, body)
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

#[derive(Default)]
struct Inner {
    calls: Mutex<Vec<Call>>,
    script: Mutex<VecDeque<Reply>>,
    next_id: AtomicU64,
    /// Calls not recorded (a benchmark keeps only counts and times).
    keep: bool,
    times: Mutex<Vec<(String, Instant)>>,
}

/// The running mock; it stops when dropped.
pub struct Mock {
    pub addr: SocketAddr,
    inner: Arc<Inner>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Mock {
    /// Starts a mock that records every call.
    pub async fn start() -> std::io::Result<Mock> {
        Self::start_with(true).await
    }

    /// Starts a mock that keeps only each call's recipient and time (for load).
    pub async fn start_light() -> std::io::Result<Mock> {
        Self::start_with(false).await
    }

    async fn start_with(keep: bool) -> std::io::Result<Mock> {
        let inner = Arc::new(Inner {
            keep,
            ..Inner::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = axum::Router::new()
            .fallback(answer)
            .with_state(Arc::clone(&inner));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Mock {
            addr,
            inner,
            _stop: stop,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next call with `reply` (replies are used in the order pushed).
    pub fn push(&self, reply: Reply) {
        if let Ok(mut s) = self.inner.script.lock() {
            s.push_back(reply);
        }
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.inner
            .calls
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Recipients (`to`, `chat_id` or `recipient.id`) and times of the calls, for load.
    pub fn times(&self) -> Vec<(String, Instant)> {
        self.inner
            .times
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    /// Waits until at least `n` calls came (or `timeout` passed); returns them all.
    pub async fn wait_calls(&self, n: usize, timeout: Duration) -> Vec<Call> {
        let end = Instant::now() + timeout;
        loop {
            let calls = self.calls();
            if calls.len() >= n || Instant::now() >= end {
                return calls;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn answer(
    State(inner): State<Arc<Inner>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let at = Instant::now();
    let reply = inner.script.lock().ok().and_then(|mut s| s.pop_front());
    let raw = String::from_utf8_lossy(&body).into_owned();
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = reply.unwrap_or_else(|| {
        let n = inner.next_id.fetch_add(1, Ordering::Relaxed);
        if uri.path().ends_with("/sendMessage") {
            // Telegram's Bot API.
            let chat = json.get("chat_id").cloned().unwrap_or(Value::Null);
            return Reply::status(
                200,
                json!({"ok": true, "result": {"message_id": n, "chat": {"id": chat}}}),
            );
        }
        if let Some(recipient) = json.get("recipient") {
            // Messenger's and Instagram's Send API.
            let id = recipient
                .get("id")
                .or_else(|| recipient.get("comment_id"))
                .cloned()
                .unwrap_or(Value::Null);
            return Reply::status(
                200,
                json!({"recipient_id": id, "message_id": format!("m_MOCK{n}")}),
            );
        }
        let path = uri.path();
        if path.ends_with("/replies") || path.ends_with("/comments") {
            // A public reply to a comment: the new comment's id.
            return Reply::status(200, json!({ "id": format!("MOCKC{n}") }));
        }
        if uri.query().is_some_and(|q| q.contains("hide")) {
            return Reply::status(200, json!({"success": true}));
        }
        let to = json.get("to").cloned().unwrap_or(Value::Null);
        Reply::status(
            200,
            json!({"messaging_product": "whatsapp", "contacts": [{"input": to, "wa_id": to}],
                "messages": [{"id": format!("wamid.MOCK{n}")}]}),
        )
    });
    if inner.keep {
        let headers = headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        if let Ok(mut c) = inner.calls.lock() {
            c.push(Call {
                path: uri.to_string(),
                headers,
                raw,
                body: json.clone(),
                at,
                status: reply.status,
            });
        }
    }
    let to = json
        .get("to")
        .or_else(|| json.get("chat_id"))
        .or_else(|| json.pointer("/recipient/id"))
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .unwrap_or_default();
    if let Ok(mut t) = inner.times.lock() {
        t.push((to, at));
    }
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(reply.body)).into_response();
    for (k, v) in reply.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(&v),
        ) {
            response.headers_mut().insert(k, v);
        }
    }
    response
}
