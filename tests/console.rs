//! The web console in a real browser: `rapport serve` on the example project (every
//! platform a mock on 127.0.0.1), a handoff and a draft made through the API, then
//! tests/console/console.test.mjs drives Debian's Chromium through Playwright: sign in,
//! KPI tiles and charts, halt and resume a rollout, release the handoff, approve the
//! draft, look the contact up, export it, refuse a forged form, forget. Screenshots of
//! every page are kept in target/console-screenshots. Afterwards the store must hold each
//! button as an event with the signed-in actor, and the mock the approved reply.
//!
//! Needs Node.js with npm (the first run installs Playwright's npm package, no browser)
//! and Chromium at /usr/bin/chromium (Debian's `chromium`), or where CHROMIUM says;
//! `.ci/run` installs both.

mod common;
#[path = "serve/harness.rs"]
mod harness;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use harness::*;
use reqwest::Method;
use serde_json::{json, Value};

fn yaml(mock: &str) -> String {
    format!(
        "listen: 127.0.0.1:0
api_token: ${{RAPPORT_API_TOKEN}}
tick: 200ms
console: {{ secure_cookies: false }}
channels:
  whatsapp:  {{ connector: whatsapp_cloud, phone_number_id: \"{PHONE_NUMBER_ID}\", access_token: ${{WA_ACCESS_TOKEN}}, app_secret: ${{META_APP_SECRET}}, verify_token: ${{META_VERIFY_TOKEN}}, api_base: \"{mock}\" }}
  instagram: {{ connector: instagram, account_id: \"17841400000000000\", access_token: ${{WA_ACCESS_TOKEN}}, app_secret: ${{META_APP_SECRET}}, verify_token: ${{META_VERIFY_TOKEN}}, api_base: \"{mock}\" }}
  messenger: {{ connector: messenger, page_id: \"102938475610293\", access_token: ${{WA_ACCESS_TOKEN}}, app_secret: ${{META_APP_SECRET}}, verify_token: ${{META_VERIFY_TOKEN}}, api_base: \"{mock}\" }}
  sms:       {{ connector: webhook, url: \"{mock}/sms\", secret: ${{SINK_SECRET}} }}
  tiktok:    {{ connector: webhook, url: \"{mock}/tiktok\", secret: ${{SINK_SECRET}} }}
sinks:
  handoff: {{ url: \"{mock}/hooks/handoff\", secret: ${{SINK_SECRET}} }}
  emit:    {{ url: \"{mock}/hooks/emit\", secret: ${{SINK_SECRET}} }}
  tag:     {{ url: \"{mock}/hooks/tag\", secret: ${{SINK_SECRET}} }}
  review:  {{ url: \"{mock}/hooks/review\", secret: ${{SINK_SECRET}} }}
  alert:   {{ url: \"{mock}/hooks/alert\", secret: ${{SINK_SECRET}} }}
delivery: {{ max_attempts: 3, backoff: {{ first: 100ms, max: 1s }}, timeout: 5s }}
grace: 2s
"
    )
}

fn at(seconds_ago: i64) -> String {
    jiff::Timestamp::from_second(unix_now() - seconds_ago)
        .expect("in range")
        .to_string()
}

/// A few days of conversations, an open handoff and a waiting draft, through the API.
fn traffic() -> Vec<Value> {
    let mut events = Vec::new();
    for i in 0..36 {
        let ago = 3 * 86_400 - i * 7_000;
        events.push(json!({"id": format!("w{i}"), "at": at(ago), "contact": format!("instagram:{}", 1000 + i),
            "channel": "instagram", "type": "message", "text": "hi", "profile": {"first_name": "Eva"}}));
    }
    events.push(
        json!({"id": "a1", "at": at(600), "contact": "whatsapp:40700000001", "channel": "whatsapp",
        "type": "message", "text": "hi", "profile": {"first_name": "Ana"}}),
    );
    events.push(
        json!({"id": "a2", "at": at(540), "contact": "whatsapp:40700000001", "channel": "whatsapp",
        "type": "message", "text": "3"}),
    );
    events.push(
        json!({"id": "b1", "at": at(300), "contact": "instagram:555001", "channel": "instagram",
        "type": "message", "text": "how much are the Trail Runner 2?", "intent": "price_question",
        "suggestion": "The Trail Runner 2 is 89 EUR this week.", "profile": {"first_name": "Bob"}}),
    );
    for (id, contact) in [("c1", "instagram:555002"), ("d1", "instagram:555003")] {
        events.push(
            json!({"id": id, "at": at(240), "contact": contact, "channel": "instagram",
            "type": "message", "text": "price of the City Sneaker?", "intent": "price_question",
            "suggestion": "The City Sneaker is 69 EUR.", "profile": {"first_name": "Cleo"}}),
        );
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_works_in_a_real_browser() {
    let root = common::repo_root();
    let modules = root.join("tests/console/node_modules/playwright-core");
    if !modules.is_dir() {
        // The first run installs Playwright (the version of package-lock.json; it
        // downloads no browser).
        let npm = Command::new("npm")
            .args(["ci", "--prefix", "tests/console", "--no-audit", "--no-fund"])
            .current_dir(root)
            .status();
        assert!(
            matches!(npm, Ok(s) if s.success()),
            "the browser test needs Node.js and npm to install Playwright (Debian: `apt-get install nodejs npm`): {npm:?}"
        );
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "the browser test needs Chromium at {chromium} (Debian: `apt-get install chromium`; or set CHROMIUM)"
    );
    let dir = common::temp_dir("console", "browser");
    let bundle = common::build("flows", &dir);
    let mock = rapport_mock::Mock::start().await.expect("mock");
    let mut host = Host::start(&dir, &bundle, &yaml(&mock.url()));
    let body: String = traffic().iter().map(|e| format!("{e}\n")).collect();
    let (status, answer) = api(Method::POST, &format!("{}/v1/events", host.url), Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    // The drafts are waiting once the engine has processed the events (the last is
    // 555003's).
    let mut waiting = false;
    for _ in 0..100 {
        let (_, c) = contact_export(&host.url, "instagram:555003").await;
        if c.to_string().contains("\"drafts\"") {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(waiting, "the draft waits: {}", host.log());

    let shots = root.join("target/console-screenshots");
    let out = tokio::task::spawn_blocking({
        let url = host.url.clone();
        let shots = shots.clone();
        move || {
            Command::new("node")
                .arg("tests/console/console.test.mjs")
                .current_dir(common::repo_root())
                .env("RAPPORT_URL", url)
                .env("RAPPORT_TOKEN", API_TOKEN)
                .env("SHOTS", &shots)
                .env("HANDOFF_CONTACT", "whatsapp:40700000001")
                .env("DRAFT_CONTACT", "instagram:555001")
                .env("EDIT_CONTACT", "instagram:555002")
                .env("REJECT_CONTACT", "instagram:555003")
                .env("ROLLOUT_FLOW", "cart_recovery")
                .env("CHROMIUM", chromium)
                .output()
                .expect("node runs (install Node.js)")
        }
    })
    .await
    .expect("joined");
    let log = host.log();
    assert!(
        out.status.success(),
        "the browser test failed:\n{}\n{}\nhost log:\n{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for page in ["login", "overview", "flows", "handoffs", "contact"] {
        assert!(
            shots.join(format!("{page}.png")).is_file(),
            "{page}.png kept"
        );
    }

    // Each button was an event with the signed-in actor, in the audit trail.
    let db = rusqlite::Connection::open(&host.store).expect("store");
    let records: Vec<String> = db
        .prepare("SELECT records FROM audit")
        .expect("query")
        .query_map([], |r| r.get::<_, String>(0))
        .expect("rows")
        .filter_map(Result::ok)
        .flat_map(|r| r.lines().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let by_console = |kind: &str, what: &str| {
        records.iter().any(|r| {
            let v: Value = serde_json::from_str(r).unwrap_or(Value::Null);
            v["kind"] == kind && r.contains("console:Test Operator") && r.contains(what)
        })
    };
    assert!(
        by_console("operator", "halt"),
        "the halt is audited with the actor"
    );
    assert!(
        by_console("operator", "resume"),
        "the resume is audited with the actor"
    );
    assert!(
        by_console("handoff", "\"reason\":\"released\""),
        "the release is audited with the actor"
    );
    // The approved draft went out to the contact on Instagram.
    let calls = mock.wait_calls(1, Duration::from_secs(5)).await;
    let _ = calls;
    let sent = mock
        .calls()
        .iter()
        .any(|c| c.raw.contains("89 EUR this week") && c.path.contains("/messages"));
    assert!(sent, "the approved reply was sent");
    let edited = mock.calls().iter().any(|c| {
        c.path.contains("/messages")
            && c.raw.contains("69 EUR, and free delivery")
            && c.raw.contains("555002")
    });
    assert!(edited, "the edited reply was sent as written");
    // (The queue's helpdesk got the draft to decide on; the contact got nothing.)
    let rejected = mock.calls().iter().any(|c| {
        c.path.contains("/messages")
            && c.raw.contains("555003")
            && c.raw.contains("City Sneaker is 69 EUR")
    });
    assert!(!rejected, "the rejected draft was not sent");
    assert_eq!(host.term().code(), Some(0));
}

/// `rapport demo` started as README says (on a free port), read until it serves.
struct Demo {
    child: std::process::Child,
    url: String,
    token: String,
}

impl Drop for Demo {
    /// A failed test leaves no demo running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_demo(dir: &Path) -> Demo {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args([
            "demo",
            "--contacts",
            "300",
            "--listen",
            "127.0.0.1:0",
            "--dir",
        ])
        .arg(dir)
        .current_dir(common::repo_root())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("rapport demo starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (mut url, mut token) = (None, None);
        let mut seen = String::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            seen.push_str(&line);
            seen.push('\n');
            if let Some(t) = line.split("Sign in with any name and the token").nth(1) {
                token = Some(t.trim().to_string());
            }
            if let Some(u) = line.strip_prefix("rapport serve: listening on ") {
                url = Some(u.to_string());
            }
            if let (Some(u), Some(t)) = (&url, &token) {
                let _ = tx.send(Ok((u.clone(), t.clone())));
                url = None;
            }
        }
        let _ = tx.send(Err(seen));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok((url, token))) => Demo { child, url, token },
        Ok(Err(log)) => {
            let _ = child.kill();
            panic!("the demo stopped: {log}")
        }
        Err(_) => {
            let _ = child.kill();
            panic!("the demo did not start within a minute")
        }
    }
}

async fn get(url: &str, token: Option<&str>) -> (u16, String, Option<String>) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("answered");
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (status, r.text().await.unwrap_or_default(), location)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_serves_a_week_whose_report_the_api_and_the_command_agree_on() {
    let dir = common::temp_dir("console", "demo");
    let demo_dir = dir.join("demo");
    let mut demo = start_demo(&demo_dir);
    let base = demo.url.clone();

    // Pages ask for sign-in; the bearer token is let in.
    let (status, _, location) = get(&format!("{base}/console/overview"), None).await;
    assert_eq!(status, 303);
    assert_eq!(
        location.as_deref(),
        Some("/console/login?next=/console/overview")
    );
    let (status, page, _) = get(&format!("{base}/console/overview"), Some(&demo.token)).await;
    assert_eq!(status, 200);
    assert!(
        page.contains("data-kpi=\"runs\"") && page.contains("<svg"),
        "{page}"
    );
    let (status, _, _) = get(&format!("{base}/console/flows"), Some("wrong-token")).await;
    assert_eq!(status, 303, "a wrong bearer token is not let in");

    // The API's report and the command's agree on the week's runs.
    // From a fixed start: the period's end moves with the clock of the running host.
    let (status, body, _) = get(
        &format!("{base}/v1/report?since=2000-01-01"),
        Some(&demo.token),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let api: Value = serde_json::from_str(&body).expect("JSON");
    let o = common::rapport(&[
        "report",
        "--store",
        &format!("sqlite:{}", common::s(&demo_dir.join("demo.db"))),
        "--format",
        "json",
        "--since",
        "2000-01-01",
    ]);
    assert!(o.status.success(), "{}", common::text(&o.stderr));
    let cli: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    let runs = |r: &Value| -> Vec<(String, u64)> {
        r["flows"]
            .as_array()
            .expect("flows")
            .iter()
            .map(|f| {
                (
                    format!(
                        "{}@{}",
                        f["flow"].as_str().unwrap_or(""),
                        f["version"].as_str().unwrap_or("")
                    ),
                    f["enrolled"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    assert_eq!(runs(&api), runs(&cli));
    assert!(
        api["totals"]["enrolled"].as_u64().unwrap_or(0) > 100,
        "{api}"
    );
    let (status, body, _) = get(&format!("{base}/v1/report?flow=nope"), Some(&demo.token)).await;
    assert_eq!(status, 400);
    assert!(body.contains("has no flow `nope`"), "{body}");

    // A live send the mock platform accepts is counted as delivered.
    let hello = json!({"id": "live-1", "at": at(0), "contact": "instagram:990001",
        "channel": "instagram", "type": "message", "text": "hello there"});
    let answer = reqwest::Client::new()
        .post(format!("{base}/v1/events"))
        .bearer_auth(&demo.token)
        .body(hello.to_string())
        .send()
        .await
        .expect("answered");
    assert_eq!(answer.status().as_u16(), 200);
    let mut delivered = 0;
    for _ in 0..80 {
        let (_, body, _) = get(
            &format!("{base}/v1/report?since=1h&flow=welcome"),
            Some(&demo.token),
        )
        .await;
        let r: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        delivered = r["flows"][0]["sends"]["delivered"].as_u64().unwrap_or(0);
        if delivered > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(delivered > 0, "the welcome reply counts as delivered");

    let _ = Command::new("kill")
        .args(["-TERM", &demo.child.id().to_string()])
        .status();
    let status = demo.child.wait().expect("the demo stops");
    assert_eq!(status.code(), Some(0));

    // A folder the demo did not make is not written in.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).expect("folder");
    std::fs::write(other.join("notes.txt"), "mine").expect("file");
    let o = common::rapport(&[
        "demo",
        "--dir",
        common::s(&other),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(common::text(&o.stderr).contains("holds files the demo did not write"));
    assert_eq!(
        std::fs::read_dir(&other).expect("read").count(),
        1,
        "nothing written"
    );
}
