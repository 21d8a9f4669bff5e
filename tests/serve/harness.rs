//! What `rapport serve`'s tests share: the host as a child process on 127.0.0.1, its
//! host.yaml pointed at a mock platform, signed webhooks, and waiting for what the mock
//! receives.
#![allow(dead_code)] // each test uses some of these

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{repo_root, s};

pub(crate) const APP_SECRET: &str = "meta-app-secret-for-tests";
pub(crate) const API_TOKEN: &str = "api-token-for-tests-0123456789";
pub(crate) const SINK_SECRET: &str = "sink-secret-for-tests";
pub(crate) const PHONE_NUMBER_ID: &str = "106540352242922";

/// The test project's bundle, built once per test into `dir`.
pub(crate) fn bundle(dir: &Path) -> PathBuf {
    crate::common::build("tests/serve/project", dir)
}

/// host.yaml for a host whose WhatsApp API and sinks are `mock`.
pub(crate) fn host_yaml(mock: &str, extra: &str) -> String {
    format!(
        "listen: 127.0.0.1:0
api_token: ${{RAPPORT_API_TOKEN}}
tick: 200ms
channels:
  whatsapp:
    connector: whatsapp_cloud
    phone_number_id: \"{PHONE_NUMBER_ID}\"
    access_token: ${{WA_ACCESS_TOKEN}}
    app_secret: ${{META_APP_SECRET}}
    verify_token: ${{META_VERIFY_TOKEN}}
    api_base: {mock}/v23.0
    per_recipient: 1ms
sinks:
  handoff: {{ url: {mock}/hooks/handoff, secret: ${{SINK_SECRET}} }}
  emit: {{ url: {mock}/hooks/emit, secret: ${{SINK_SECRET}} }}
  alert: {{ url: {mock}/hooks/alert, secret: ${{SINK_SECRET}} }}
  tag: {{ url: {mock}/hooks/tag, secret: ${{SINK_SECRET}} }}
  review: {{ url: {mock}/hooks/review, secret: ${{SINK_SECRET}} }}
delivery: {{ max_attempts: 4, backoff: {{ first: 100ms, max: 2s }}, timeout: 5s }}
grace: 5s
{extra}"
    )
}

/// The environment host.yaml reads.
pub(crate) fn env(cmd: &mut Command) -> &mut Command {
    cmd.env("RAPPORT_API_TOKEN", API_TOKEN)
        .env("WA_ACCESS_TOKEN", "wa-access-token")
        .env("META_APP_SECRET", APP_SECRET)
        .env("META_VERIFY_TOKEN", "verify-me")
        .env("SINK_SECRET", SINK_SECRET)
        .env("RUST_LOG", "info")
}

/// A running `rapport serve`.
pub(crate) struct Host {
    child: Option<Child>,
    pub(crate) url: String,
    pub(crate) log: Arc<Mutex<String>>,
    pub(crate) store: PathBuf,
}

impl Host {
    /// Starts `rapport serve` on `bundle` and the store in `dir`, with `yaml` as host.yaml;
    /// returns once it listens.
    pub(crate) fn start(dir: &Path, bundle: &Path, yaml: &str) -> Host {
        let config = dir.join("host.yaml");
        std::fs::write(&config, yaml).expect("host.yaml");
        let store = dir.join("store.db");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rapport"));
        env(&mut cmd)
            .args([
                "serve",
                "--bundle",
                s(bundle),
                "--config",
                s(&config),
                "--store",
            ])
            .arg(format!("sqlite:{}", s(&store)))
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("rapport serve starts");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("rapport serve: listening on ") {
                    if let Some(t) = tx.take() {
                        let _ = t.send(addr.to_string());
                    }
                }
                if let Ok(mut l) = sink.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "rapport serve did not start: {}",
                    log.lock().map(|l| l.clone()).unwrap_or_default()
                );
            }
        };
        Host {
            child: Some(child),
            url,
            log,
            store,
        }
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit.
    pub(crate) fn term(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status;
            }
            if Instant::now() > end {
                let _ = child.kill();
                panic!("rapport serve did not stop on SIGTERM:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
    }
}

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// POSTs a webhook body signed with the app secret; returns the status and body.
pub(crate) async fn webhook(host: &str, body: &Value) -> (u16, String) {
    let raw = body.to_string();
    let sig = rapport_serve::signature::meta_header(APP_SECRET, raw.as_bytes());
    post_raw(host, &raw, Some(&sig)).await
}

pub(crate) async fn post_raw(host: &str, raw: &str, signature: Option<&str>) -> (u16, String) {
    let mut r = client()
        .post(format!("{host}/webhooks/meta"))
        .header("content-type", "application/json")
        .body(raw.to_string());
    if let Some(s) = signature {
        r = r.header("x-hub-signature-256", s);
    }
    match r.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            (status, resp.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// An authorised request to the host's API.
pub(crate) async fn api(method: reqwest::Method, url: &str, body: Option<String>) -> (u16, Value) {
    let mut r = client().request(method, url).bearer_auth(API_TOKEN);
    if let Some(b) = body {
        r = r.body(b);
    }
    let resp = r.send().await.expect("the host answers");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// What the host holds about a contact (`GET /v1/contacts/{contact}`): the status and
/// the export.
pub(crate) async fn contact_export(host: &str, contact: &str) -> (u16, Value) {
    api(
        reqwest::Method::GET,
        &format!("{host}/v1/contacts/{contact}"),
        None,
    )
    .await
}

/// What `/metrics` shows.
pub(crate) async fn metrics_text(host: &str) -> String {
    client()
        .get(format!("{host}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Now, in whole seconds (WhatsApp's timestamps).
pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A WhatsApp webhook payload with text messages: (wamid, from, text).
pub(crate) fn wa_messages(messages: &[(&str, &str, &str)]) -> Value {
    let now = unix_now();
    let msgs: Vec<Value> = messages
        .iter()
        .map(|(id, from, text)| {
            json!({"from": from, "id": id, "timestamp": now.to_string(), "type": "text",
                "text": {"body": text}})
        })
        .collect();
    let contacts: Vec<Value> = messages
        .iter()
        .map(|(_, from, _)| json!({"profile": {"name": "Ana Lopez"}, "wa_id": from}))
        .collect();
    json!({"object": "whatsapp_business_account", "entry": [{"id": "102290129340398",
        "changes": [{"field": "messages", "value": {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
            "contacts": contacts, "messages": msgs}}]}]})
}

/// The WhatsApp sends the mock received, as (to, text or template name).
pub(crate) fn sends(calls: &[rapport_mock::Call]) -> Vec<(String, String)> {
    calls
        .iter()
        .filter(|c| c.path.ends_with("/messages") && c.status < 300)
        .map(|c| {
            let to = c.body["to"].as_str().unwrap_or_default().to_string();
            let what = c.body["text"]["body"]
                .as_str()
                .or_else(|| c.body["template"]["name"].as_str())
                .unwrap_or_default()
                .to_string();
            (to, what)
        })
        .collect()
}
