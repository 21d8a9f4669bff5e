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
    // The draft is waiting once the engine has processed the events.
    let mut waiting = false;
    for _ in 0..100 {
        let (_, c) = contact_export(&host.url, "instagram:555001").await;
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
    assert_eq!(host.term().code(), Some(0));
}
