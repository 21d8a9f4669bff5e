//! `rapport serve` end to end: the binary on 127.0.0.1, a mock WhatsApp Cloud API and
//! sinks on 127.0.0.1, signed webhooks over real HTTP.

mod common;
#[path = "serve/harness.rs"]
mod harness;

use std::time::Duration;

use harness::*;
use rapport_mock::{Mock, Reply};
use reqwest::Method;
use serde_json::{json, Value};

fn temp_dir(name: &str) -> std::path::PathBuf {
    common::temp_dir("serve", name)
}

const WAIT: Duration = Duration::from_secs(15);

/// A mock platform and a host on the test project, its store in a scratch folder.
async fn serving(name: &str) -> (std::path::PathBuf, Mock, Host) {
    let dir = temp_dir(name);
    let mock = Mock::start().await.expect("mock");
    let host = Host::start(&dir, &bundle(&dir), &host_yaml(&mock.url(), ""));
    (dir, mock, host)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_webhook_is_answered_at_the_platform_with_the_exact_json() {
    let (_dir, mock, host) = serving("reply").await;
    let (status, _) = webhook(
        &host.url,
        &wa_messages(&[("wamid.IN1", "40712345678", "hi")]),
    )
    .await;
    assert_eq!(status, 200);
    let calls = mock.wait_calls(1, WAIT).await;
    assert_eq!(calls.len(), 1, "{}", host.log());
    let call = &calls[0];
    assert_eq!(call.path, format!("/v23.0/{PHONE_NUMBER_ID}/messages"));
    assert_eq!(call.headers["authorization"], "Bearer wa-access-token");
    assert_eq!(
        call.body,
        json!({"messaging_product": "whatsapp", "to": "40712345678", "type": "text",
            "text": {"body": "Automated reply: Hi Ana! Welcome to Acme Shoes. Reply 1 for products, 2 for order help."}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_webhook_and_a_duplicate_in_one_batch_give_one_reply() {
    let (_dir, mock, host) = serving("redelivery").await;
    // The same message twice in one payload, and the payload delivered three times.
    let payload = wa_messages(&[
        ("wamid.DUP", "40700000001", "hi"),
        ("wamid.DUP", "40700000001", "hi"),
    ]);
    for _ in 0..3 {
        assert_eq!(webhook(&host.url, &payload).await.0, 200);
    }
    mock.wait_calls(1, WAIT).await;
    // Give the engine time to (wrongly) answer again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(sends(&mock.calls()).len(), 1, "{}", host.log());
    let metrics = metrics_text(&host.url).await;
    assert!(
        metrics.contains("rapport_duplicate_events_total 5"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_and_missing_signatures_get_401_and_nothing_is_sent() {
    let (dir, mock, host) = serving("signature").await;
    let payload = wa_messages(&[("wamid.FORGED", "40700000002", "hi")]);
    let raw = payload.to_string();
    let (status, _) = post_raw(&host.url, &raw, None).await;
    assert_eq!(status, 401);
    let forged = rapport_serve::signature::meta_header("not-the-secret", raw.as_bytes());
    assert_eq!(post_raw(&host.url, &raw, Some(&forged)).await.0, 401);
    // Signed, then re-serialised with other spacing: the signature no longer matches.
    let good = rapport_serve::signature::meta_header(APP_SECRET, raw.as_bytes());
    let respaced = serde_json::to_string_pretty(&payload).expect("json");
    assert_eq!(post_raw(&host.url, &respaced, Some(&good)).await.0, 401);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        mock.calls().is_empty(),
        "nothing may be sent for a forged webhook"
    );
    let metrics = metrics_text(&host.url).await;
    assert!(
        metrics.contains("rapport_webhook_signature_failures_total{endpoint=\"meta\"} 3"),
        "{metrics}"
    );
    // The rejections are in the store's audit trail.
    drop(host);
    assert_eq!(audit_records(&dir, "bad_signature"), 3);
}

/// The store's audit records that contain `needle`.
fn audit_records(dir: &std::path::Path, needle: &str) -> usize {
    let conn = rusqlite::Connection::open(dir.join("store.db")).expect("store");
    conn.query_row(
        "SELECT count(*) FROM audit WHERE instr(records, ?1) > 0",
        [needle],
        |r| r.get::<_, i64>(0),
    )
    .expect("count") as usize
}

#[tokio::test(flavor = "multi_thread")]
async fn the_verify_handshake_answers_the_challenge_only_for_the_right_token() {
    let (_dir, _mock, host) = serving("handshake").await;
    let get = |token: &str| {
        let url = format!(
            "{}/webhooks/meta?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444",
            host.url
        );
        async move {
            let r = client().get(url).send().await.expect("answer");
            (r.status().as_u16(), r.text().await.unwrap_or_default())
        }
    };
    assert_eq!(get("verify-me").await, (200, "1158201444".to_string()));
    assert_eq!(get("wrong").await.0, 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_is_confirmed_then_nothing_more_is_sent() {
    let (_dir, mock, host) = serving("stop").await;
    let who = "40700000003";
    webhook(&host.url, &wa_messages(&[("wamid.S1", who, "hi")])).await;
    mock.wait_calls(1, WAIT).await;
    webhook(&host.url, &wa_messages(&[("wamid.S2", who, "STOP")])).await;
    mock.wait_calls(2, WAIT).await;
    webhook(&host.url, &wa_messages(&[("wamid.S3", who, "1")])).await;
    // An event for the contact from the brand's systems: no flow may message them.
    let cart = json!({"id": "cart-1", "at": rapport_engine_now(), "contact": format!("whatsapp:{who}"),
        "channel": "whatsapp", "type": "event", "name": "cart.abandoned",
        "data": {"product_name": "Trail Runner", "cart_url": "https://acme.example/c/1"}});
    let (status, body) = api(
        Method::POST,
        &format!("{}/v1/events", host.url),
        Some(cart.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let sent = sends(&mock.calls());
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[1].1.starts_with("You're unsubscribed"), "{sent:?}");
}

fn rapport_engine_now() -> String {
    let ms = unix_now() * 1000;
    jiff_like(ms)
}

/// RFC 3339 of a time in milliseconds (through the engine's own formatter).
fn jiff_like(ms: i64) -> String {
    rapport_engine::format_time(ms)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_500_is_retried_and_a_429_waits_for_its_retry_after() {
    let dir = temp_dir("retry");
    let mock = Mock::start().await.expect("mock");
    mock.push(Reply::whatsapp_error(
        500,
        2,
        "Service temporarily unavailable",
    ));
    mock.push(Reply::whatsapp_error(429, 130429, "Rate limit hit").header("retry-after", "2"));
    // WhatsApp's throughput limit, answered as a 400: retried too.
    mock.push(Reply::whatsapp_error(400, 130429, "Rate limit hit"));
    let host = Host::start(&dir, &bundle(&dir), &host_yaml(&mock.url(), ""));
    webhook(
        &host.url,
        &wa_messages(&[("wamid.R1", "40700000004", "hi")]),
    )
    .await;
    let calls = mock.wait_calls(4, WAIT).await;
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        [500, 429, 400, 200],
        "{}",
        host.log()
    );
    // The same message each time.
    assert_eq!(calls[0].body, calls[3].body);
    let waited = calls[2].at.duration_since(calls[1].at);
    assert!(
        waited >= Duration::from_secs(2),
        "Retry-After: 2 was not honoured: {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_error_fails_the_send_at_once_and_is_recorded() {
    let dir = temp_dir("permanent");
    let mock = Mock::start().await.expect("mock");
    mock.push(Reply::whatsapp_error(400, 131047, "Re-engagement message"));
    let host = Host::start(&dir, &bundle(&dir), &host_yaml(&mock.url(), ""));
    webhook(
        &host.url,
        &wa_messages(&[("wamid.P1", "40700000005", "hi")]),
    )
    .await;
    mock.wait_calls(1, WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(mock.calls().len(), 1, "not retried");
    // The outcome came back to the engine as a `delivery` event and is audited.
    let (status, export) = contact_export(&host.url, "whatsapp:40700000005").await;
    assert_eq!(status, 200);
    let text = export.to_string();
    assert!(
        text.contains("delivery_failed") && text.contains("131047"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handoff_goes_to_its_sink_signed_with_an_idempotency_key() {
    let (_dir, mock, host) = serving("handoff").await;
    let who = "40700000006";
    webhook(&host.url, &wa_messages(&[("wamid.H1", who, "hi")])).await;
    mock.wait_calls(1, WAIT).await;
    webhook(&host.url, &wa_messages(&[("wamid.H2", who, "agent")])).await;
    let end = std::time::Instant::now() + WAIT;
    let hook = loop {
        if let Some(c) = mock
            .calls()
            .into_iter()
            .find(|c| c.path == "/hooks/handoff")
        {
            break c;
        }
        assert!(
            std::time::Instant::now() < end,
            "no handoff: {}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(hook.body["type"], "handoff");
    assert_eq!(hook.body["queue"], "support");
    assert_eq!(
        hook.headers["idempotency-key"],
        hook.body["id"].as_str().unwrap_or("?")
    );
    // X-Rapport-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>.
    let sig = &hook.headers["x-rapport-signature"];
    let t: i64 = sig
        .strip_prefix("t=")
        .and_then(|r| r.split(',').next())
        .and_then(|t| t.parse().ok())
        .expect("t=");
    assert_eq!(
        sig,
        &rapport_serve::signature::rapport_header(SINK_SECRET, t, hook.raw.as_bytes())
    );
    // The open handoff is counted, with its age.
    let metrics = metrics_text(&host.url).await;
    assert!(metrics.contains("rapport_open_handoffs 1"), "{metrics}");
    assert!(
        metrics.contains("rapport_oldest_open_handoff_seconds "),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn timers_fire_on_the_wall_clock_and_a_closed_window_gets_the_template() {
    let (_dir, mock, host) = serving("template").await;
    // The contact never wrote: the messaging window is closed, so the reminder goes out
    // as the approved template, two seconds later, with no event to wake the engine.
    let cart = json!({"id": "cart-2", "at": rapport_engine_now(), "contact": "whatsapp:40700000007",
        "channel": "whatsapp", "type": "event", "name": "cart.abandoned",
        "data": {"product_name": "Trail Runner", "cart_url": "https://acme.example/c/2"}});
    let (status, body) = api(
        Method::POST,
        &format!("{}/v1/events", host.url),
        Some(cart.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let calls = mock.wait_calls(1, WAIT).await;
    assert_eq!(calls.len(), 1, "{}", host.log());
    assert_eq!(
        calls[0].body,
        json!({"messaging_product": "whatsapp", "to": "40700000007", "type": "template",
            "template": {"name": "cart_reminder_v2", "language": {"code": "en"},
                "components": [{"type": "body", "parameters": [
                    {"type": "text", "text": "Trail Runner"},
                    {"type": "text", "text": "https://acme.example/c/2"}]}]}})
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_events_api_checks_every_line_before_accepting_any() {
    let (_dir, _mock, host) = serving("events-api").await;
    let url = format!("{}/v1/events", host.url);
    let good = json!({"id": "e1", "at": rapport_engine_now(), "contact": "whatsapp:1",
        "channel": "whatsapp", "type": "consent", "purpose": "marketing", "granted": true});
    let bad = json!({"id": "e2", "at": "yesterday", "contact": "whatsapp:1", "type": "message", "text": "x"});
    let (status, body) = api(Method::POST, &url, Some(format!("{good}\n{bad}\n"))).await;
    assert_eq!(status, 400);
    assert_eq!(body["events"][0]["line"], 2, "{body}");
    assert!(
        body["events"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("RFC 3339"),
        "{body}"
    );
    // No token: refused.
    let r = client()
        .post(&url)
        .body(good.to_string())
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 401);
    let (status, body) = api(Method::POST, &url, Some(good.to_string())).await;
    assert_eq!((status, &body["accepted"]), (200, &Value::from(1)));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_exits_0_and_nothing_acknowledged_is_lost() {
    let dir = temp_dir("sigterm");
    let mock = Mock::start().await.expect("mock");
    let bundle = bundle(&dir);
    let yaml = host_yaml(&mock.url(), "");
    let mut host = Host::start(&dir, &bundle, &yaml);
    let mut acknowledged = Vec::new();
    for i in 0..30 {
        let who = format!("4071000{i:04}");
        let id = format!("wamid.T{i}");
        if webhook(&host.url, &wa_messages(&[(&id, &who, "hi")]))
            .await
            .0
            == 200
        {
            acknowledged.push(who);
        }
    }
    let status = host.term();
    assert!(status.success(), "{status:?}\n{}", host.log());
    assert!(host
        .log()
        .contains("stopped; everything acknowledged is committed"));
    // Whatever the first host did not deliver, the next one does.
    let host = Host::start(&dir, &bundle, &yaml);
    mock.wait_calls(acknowledged.len(), WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = sends(&mock.calls());
    for who in &acknowledged {
        assert!(
            sent.iter().any(|(to, _)| to == who),
            "{who} was not answered\n{}",
            host.log()
        );
    }
    assert_eq!(
        sent.len(),
        acknowledged.len(),
        "no message twice after a clean stop"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_keeps_waiting_runs_on_their_version_and_opt_outs() {
    let dir = temp_dir("deploy");
    let mock = Mock::start().await.expect("mock");
    let v1 = bundle(&dir);
    let host = Host::start(&dir, &v1, &host_yaml(&mock.url(), ""));
    let (waiting, stopped) = ("40755555555", "40766666666");
    webhook(
        &host.url,
        &wa_messages(&[("wamid.D1", waiting, "hi"), ("wamid.D2", stopped, "hi")]),
    )
    .await;
    mock.wait_calls(2, WAIT).await;
    webhook(
        &host.url,
        &wa_messages(&[("wamid.D3", waiting, "1"), ("wamid.D4", stopped, "STOP")]),
    )
    .await;
    mock.wait_calls(4, WAIT).await;

    // Version 2 asks in other words and rolls out to half of the contacts first.
    let v2 = common::build_variant("tests/serve/project", &dir, "v2", |_, text| {
        text.replace(
            "Which category: A) Footwear B) Outerwear?",
            "Footwear (A) or outerwear (B)?",
        )
        .replace("Our best {category} picks", "New {category} picks")
        .replace(
            "  start on message\n",
            "  start on message\n  rollout 50% -> 100% every 24h\n",
        )
    });
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_rapport"))
        .args(["deploy", common::s(&v2), "--host", &host.url])
        .env("RAPPORT_API_TOKEN", API_TOKEN)
        .output()
        .expect("deploy runs");
    let out = common::text(&o.stdout);
    assert!(o.status.success(), "{}{}", out, common::text(&o.stderr));
    assert!(
        out.contains("welcome: new version") && out.contains("entering its rollout at 50%"),
        "{out}"
    );
    assert!(out.contains("cart_recovery: unchanged"), "{out}");

    // The waiting run finishes on version 1.
    webhook(&host.url, &wa_messages(&[("wamid.D5", waiting, "A")])).await;
    // Bucket 2 of 100 starts on version 2; bucket 89 on version 1 (the previous version).
    let (new_v2, new_v1) = ("40744444444", "40722222222");
    webhook(
        &host.url,
        &wa_messages(&[("wamid.D6", new_v2, "hi"), ("wamid.D7", new_v1, "hi")]),
    )
    .await;
    webhook(&host.url, &wa_messages(&[("wamid.D8", stopped, "hi")])).await;
    mock.wait_calls(7, WAIT).await;
    webhook(
        &host.url,
        &wa_messages(&[("wamid.D9", new_v2, "1"), ("wamid.D10", new_v1, "1")]),
    )
    .await;
    mock.wait_calls(9, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = sends(&mock.calls());
    let to = |who: &str| -> Vec<String> {
        sent.iter()
            .filter(|(t, _)| t == who)
            .map(|(_, w)| w.clone())
            .collect()
    };
    assert_eq!(
        to(waiting).last().map(String::as_str),
        Some("Our best footwear picks: https://acme.example/footwear"),
        "{sent:?}"
    );
    assert_eq!(
        to(new_v2).last().map(String::as_str),
        Some("Footwear (A) or outerwear (B)?"),
        "{sent:?}"
    );
    assert_eq!(
        to(new_v1).last().map(String::as_str),
        Some("Which category: A) Footwear B) Outerwear?"),
        "{sent:?}"
    );
    // The opt-out survived the deploy: only the greeting and the confirmation.
    assert_eq!(to(stopped).len(), 2, "{sent:?}");

    let (status, rollouts) = api(Method::GET, &format!("{}/v1/rollouts", host.url), None).await;
    assert_eq!(status, 200);
    let welcome: Vec<&Value> = rollouts["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["flow"] == "welcome")
        .collect();
    assert_eq!(welcome.len(), 2, "{rollouts}");
    assert_eq!(
        (&welcome[0]["role"], &welcome[0]["rollout_percent"]),
        (&json!("current"), &json!(50.0))
    );
    assert_eq!(welcome[1]["role"], "previous");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_request_forgets_the_contact_but_keeps_the_opt_out() {
    let (_dir, mock, host) = serving("forget").await;
    let who = "40777777777";
    webhook(&host.url, &wa_messages(&[("wamid.F1", who, "hi")])).await;
    mock.wait_calls(1, WAIT).await;
    webhook(&host.url, &wa_messages(&[("wamid.F2", who, "STOP")])).await;
    mock.wait_calls(2, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = format!("{}/v1/contacts/whatsapp:{who}", host.url);
    let (status, export) = api(Method::GET, &url, None).await;
    assert_eq!(status, 200);
    assert!(
        export.to_string().contains("Welcome to Acme Shoes"),
        "{export}"
    );
    let (status, gone) = api(Method::DELETE, &url, None).await;
    assert_eq!(status, 200, "{gone}");
    assert_eq!(gone["opted_out_kept_as_hash"], true, "{gone}");
    // Only the fact that this contact opted out is held, as a salted hash.
    let (status, after) = api(Method::GET, &url, None).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["erased_but_opted_out"], true, "{after}");
    assert_eq!(after["transcript"], json!([]), "{after}");
    assert_eq!(after["profile"], Value::Null, "{after}");
    // Erased, and still opted out.
    webhook(&host.url, &wa_messages(&[("wamid.F3", who, "hi")])).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sends(&mock.calls()).len(), 2, "{}", host.log());
}

#[test]
fn check_config_names_every_missing_variable_and_every_unconnected_channel() {
    let dir = temp_dir("check-config");
    let bundle = bundle(&dir);
    let config = dir.join("host.yaml");
    std::fs::write(&config, host_yaml("http://127.0.0.1:9", "")).expect("write");
    let run = |envs: &[(&str, &str)]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rapport"));
        cmd.args([
            "serve",
            "--bundle",
            common::s(&bundle),
            "--config",
            common::s(&config),
            "--check-config",
        ])
        .env_clear();
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().expect("runs")
    };
    let o = run(&[("RAPPORT_API_TOKEN", API_TOKEN)]);
    assert_eq!(o.status.code(), Some(2));
    let err = common::text(&o.stderr);
    for var in [
        "WA_ACCESS_TOKEN",
        "META_APP_SECRET",
        "META_VERIFY_TOKEN",
        "SINK_SECRET",
    ] {
        assert!(err.contains(&format!("`{var}` is not set")), "{var}: {err}");
    }
    assert!(err.contains("channels.whatsapp.app_secret"), "{err}");
    let all = [
        ("RAPPORT_API_TOKEN", API_TOKEN),
        ("WA_ACCESS_TOKEN", "t"),
        ("META_APP_SECRET", "s"),
        ("META_VERIFY_TOKEN", "v"),
        ("SINK_SECRET", "k"),
    ];
    let o = run(&all);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
    // The example project also uses Instagram, Messenger, TikTok and SMS, which this
    // host.yaml does not connect.
    std::fs::create_dir_all(dir.join("example")).expect("dir");
    let example = common::build("flows", &dir.join("example"));
    let check = |bundle: &std::path::Path, config: &std::path::Path, env: &[(&str, &str)]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rapport"))
            .args(["serve", "--bundle", common::s(bundle), "--config"])
            .arg(config)
            .arg("--check-config")
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .expect("runs")
    };
    let o = check(&example, &config, &all);
    assert_eq!(o.status.code(), Some(2));
    let err = common::text(&o.stderr);
    assert!(
        err.contains("the bundle uses channel `instagram`, which host.yaml does not connect"),
        "{err}"
    );
    assert!(err.contains("the bundle uses channel `messenger`"), "{err}");
    // The example host.yaml of the docs connects every channel of the example project.
    let docs = common::repo_root().join("docs/host.example.yaml");
    let mut everything = all.to_vec();
    everything.extend([("PAGE_ACCESS_TOKEN", "p"), ("GATEWAY_SECRET", "g")]);
    let o = check(&example, &docs, &everything);
    assert_eq!(o.status.code(), Some(0), "{}", common::text(&o.stderr));
    // Without its new variables, each is named.
    let o = check(&example, &docs, &all);
    assert_eq!(o.status.code(), Some(2));
    let err = common::text(&o.stderr);
    assert!(err.contains("`PAGE_ACCESS_TOKEN` is not set"), "{err}");
    assert!(err.contains("`GATEWAY_SECRET` is not set"), "{err}");
}

/// A small deterministic generator for the kill times (seeded from the clock, printed so
/// a failure can be replayed by hand).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % below.max(1)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_at_random_moments_loses_no_acknowledged_message() {
    let dir = temp_dir("sigkill");
    let mock = Mock::start().await.expect("mock");
    let bundle = bundle(&dir);
    let yaml = host_yaml(&mock.url(), "");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    println!("seed {seed}");
    let mut rng = Lcg(seed);
    let url = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut host = Host::start(&dir, &bundle, &yaml);
    *url.lock().expect("url") = host.url.clone();
    // A client that, as Meta does, sends each message again until it gets a 200.
    let contacts: Vec<String> = (0..120).map(|i| format!("4072000{i:04}")).collect();
    let client_url = std::sync::Arc::clone(&url);
    let sent_all = contacts.clone();
    let client = tokio::spawn(async move {
        let mut deliveries = 0u32;
        for (i, who) in sent_all.iter().enumerate() {
            let payload = wa_messages(&[(&format!("wamid.K{i}"), who, "hi")]);
            let give_up = std::time::Instant::now() + Duration::from_secs(60);
            loop {
                deliveries += 1;
                let target = client_url.lock().map(|u| u.clone()).unwrap_or_default();
                let (status, body) = webhook(&target, &payload).await;
                if status == 200 {
                    break;
                }
                if std::time::Instant::now() > give_up {
                    return Err(format!("{who}: no 200 in 60 s (last: {status} {body})"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Paced, so the kills land while messages are on their way.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Ok(deliveries)
    });
    let mut logs = String::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100 + rng.next(500))).await;
        host.kill();
        logs.push_str(&host.log());
        host = Host::start(&dir, &bundle, &yaml);
        *url.lock().expect("url") = host.url.clone();
    }
    let attempts = match client.await.expect("client") {
        Ok(n) => n,
        Err(e) => panic!("{e}\n{logs}{}", host.log()),
    };
    // Every acknowledged message is answered.
    let end = std::time::Instant::now() + Duration::from_secs(30);
    let answered = loop {
        let sent = sends(&mock.calls());
        let missing: Vec<&String> = contacts
            .iter()
            .filter(|c| !sent.iter().any(|(to, _)| to == *c))
            .collect();
        if missing.is_empty() {
            break sent;
        }
        assert!(
            std::time::Instant::now() < end,
            "not answered: {missing:?}\n{logs}{}",
            host.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    logs.push_str(&host.log());
    // A message answered twice is one that was in flight at a kill: the host says so at
    // the next start, and no more than that may happen.
    let twice = answered.len() - contacts.len();
    let in_flight: usize = logs
        .lines()
        .filter_map(|l| {
            l.split(" were in flight")
                .next()?
                .rsplit('(')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .sum();
    println!(
        "{} messages, {attempts} webhook deliveries, {} replies, {twice} sent twice, {in_flight} reported in flight at a kill",
        contacts.len(),
        answered.len()
    );
    assert!(
        twice <= in_flight,
        "{twice} duplicates, {in_flight} reported\n{logs}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_webhooks_reach_the_audit_trail_and_stickers_are_acknowledged_not_retried() {
    let (_dir, mock, host) = serving("statuses").await;
    let who = "40788888888";
    webhook(&host.url, &wa_messages(&[("wamid.ST1", who, "hi")])).await;
    mock.wait_calls(1, WAIT).await;
    // The mock answered the send with the message id wamid.MOCK0; WhatsApp then reports
    // it delivered and read (out of order, and one of them twice).
    let status = |s: &str| {
        json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
            "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": PHONE_NUMBER_ID},
                "statuses": [{"id": "wamid.MOCK0", "status": s, "timestamp": unix_now().to_string(),
                    "recipient_id": who}]}}]}]})
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    for s in ["read", "delivered", "read"] {
        assert_eq!(webhook(&host.url, &status(s)).await.0, 200);
    }
    let sticker = json!({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages",
        "value": {"messaging_product": "whatsapp", "metadata": {"phone_number_id": PHONE_NUMBER_ID},
            "messages": [{"from": who, "id": "wamid.STICKER", "timestamp": unix_now().to_string(),
                "type": "sticker", "sticker": {"id": "123", "mime_type": "image/webp"}}]}}]}]});
    assert_eq!(webhook(&host.url, &sticker).await.0, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (_, export) = contact_export(&host.url, &format!("whatsapp:{who}")).await;
    let kinds: Vec<(String, String)> = export["audit_trail"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|a| a["kind"] == "delivery" || a["kind"] == "ignored")
        .map(|a| {
            (
                a["kind"].as_str().unwrap_or("").to_string(),
                a["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let count = |k: &str, r: &str| kinds.iter().filter(|(a, b)| a == k && b == r).count();
    // The send's own outcome (sent), then each status once: the repeated `read` is a
    // duplicate.
    assert_eq!(count("delivery", "sent"), 1, "{kinds:?}");
    assert_eq!(count("delivery", "delivered"), 1, "{kinds:?}");
    assert_eq!(count("delivery", "read"), 1, "{kinds:?}");
    assert_eq!(count("ignored", "not_understood"), 1, "{kinds:?}");
    // Nothing answers a sticker.
    assert_eq!(sends(&mock.calls()).len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_contacts_next_message_waits_for_the_previous_ones_outcome() {
    let dir = temp_dir("order");
    let mock = Mock::start().await.expect("mock");
    // The greeting fails once; the answer to "1", released meanwhile, must not pass it.
    mock.push(Reply::whatsapp_error(
        503,
        2,
        "Service temporarily unavailable",
    ));
    let host = Host::start(&dir, &bundle(&dir), &host_yaml(&mock.url(), ""));
    let who = "40799999999";
    webhook(
        &host.url,
        &wa_messages(&[("wamid.O1", who, "hi"), ("wamid.O2", who, "1")]),
    )
    .await;
    let calls = mock.wait_calls(3, WAIT).await;
    let order: Vec<(u16, String)> = calls
        .iter()
        .map(|c| {
            (
                c.status,
                c.body["text"]["body"]
                    .as_str()
                    .unwrap_or("")
                    .chars()
                    .take(19)
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            (503, "Automated reply: Hi".to_string()),
            (200, "Automated reply: Hi".to_string()),
            (200, "Which category: A) ".to_string())
        ],
        "{}",
        host.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_3_mb_gets_413_and_a_restart_keeps_the_last_deploy() {
    let dir = temp_dir("limits");
    let mock = Mock::start().await.expect("mock");
    let v1 = bundle(&dir);
    let yaml = host_yaml(&mock.url(), "");
    let mut host = Host::start(&dir, &v1, &yaml);
    let big = format!("{{\"object\":\"{}\"}}", "x".repeat(3 * 1024 * 1024));
    let sig = rapport_serve::signature::meta_header(APP_SECRET, big.as_bytes());
    assert_eq!(post_raw(&host.url, &big, Some(&sig)).await.0, 413);

    // Deploy a new greeting, then restart with the same --bundle file as before: the
    // deployed bundle stays.
    let v2 = common::build_variant("tests/serve/project", &dir, "v2", |_, text| {
        text.replace("Welcome to {brand}.", "Welcome back to {brand}.")
    });
    let body = std::fs::read_to_string(&v2).expect("bundle");
    let (status, out) = api(Method::POST, &format!("{}/v1/bundle", host.url), Some(body)).await;
    assert_eq!(status, 200, "{out}");
    assert!(host.term().success());
    let host = Host::start(&dir, &v1, &yaml);
    let (status, _) = webhook(
        &host.url,
        &wa_messages(&[("wamid.L1", "40712121212", "hi")]),
    )
    .await;
    assert_eq!(status, 200, "{}", host.log());
    let calls = mock.wait_calls(1, WAIT).await;
    assert_eq!(calls.len(), 1, "{}", host.log());
    let text = calls[0].body["text"]["body"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        text.contains("Welcome back to Acme Shoes"),
        "{text}\n{}",
        host.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_waiting_to_be_retried_is_dropped_when_the_contact_says_stop() {
    let dir = temp_dir("stop-overtakes");
    let mock = Mock::start().await.expect("mock");
    // The greeting meets WhatsApp's rate limit and must wait 5 s to be retried.
    mock.push(Reply::whatsapp_error(429, 130429, "Rate limit hit").header("retry-after", "5"));
    let host = Host::start(&dir, &bundle(&dir), &host_yaml(&mock.url(), ""));
    let who = "40711112222";
    webhook(&host.url, &wa_messages(&[("wamid.SO1", who, "hi")])).await;
    mock.wait_calls(1, WAIT).await;
    webhook(&host.url, &wa_messages(&[("wamid.SO2", who, "STOP")])).await;
    let calls = mock.wait_calls(2, WAIT).await;
    // The confirmation goes out at once, not after the retry wait, and the greeting never.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let calls_after = mock.calls();
    assert_eq!(calls_after.len(), 2, "{}", host.log());
    assert!(calls[1].at.duration_since(calls[0].at) < Duration::from_secs(4));
    let confirm = calls_after[1].body["text"]["body"].as_str().unwrap_or("");
    assert!(confirm.starts_with("You're unsubscribed"), "{confirm}");
    let (_, export) = contact_export(&host.url, &format!("whatsapp:{who}")).await;
    let text = export.to_string();
    assert!(
        text.contains("\"reason\":\"cancelled_by_stop\"") && text.contains("delivery_failed"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn damaged_bundles_and_foreign_channels_are_refused_at_the_door() {
    let dir = temp_dir("refused");
    let mock = Mock::start().await.expect("mock");
    let v1 = bundle(&dir);
    let host = Host::start(&dir, &v1, &host_yaml(&mock.url(), ""));
    // A bundle whose transition names a state the flow lacks would stop the engine.
    let mut damaged: Value =
        serde_json::from_str(&std::fs::read_to_string(&v1).expect("read")).expect("json");
    damaged["flows"][1]["states"][0]["transitions"][0]["target"] = json!(99);
    let (status, body) = api(
        Method::POST,
        &format!("{}/v1/bundle", host.url),
        Some(damaged.to_string()),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("names state #99"),
        "{body}"
    );
    // An event on a channel the bundle does not have; more events than one request takes.
    let url = format!("{}/v1/events", host.url);
    let odd = json!({"id": "x1", "at": rapport_engine_now(), "contact": "c", "channel": "zz\"} 1\nfake 9\n#",
        "type": "consent", "purpose": "marketing", "granted": true});
    let (status, body) = api(Method::POST, &url, Some(odd.to_string())).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["events"][0]["error"]
            .as_str()
            .unwrap_or("")
            .contains("not a channel of the bundle"),
        "{body}"
    );
    let many: String = (0..10_001)
        .map(|i| format!("{{\"id\":\"m{i}\"}}\n"))
        .collect();
    let (status, _) = api(Method::POST, &url, Some(many)).await;
    assert_eq!(status, 413);
    // The bearer scheme is case-insensitive.
    let r = client()
        .get(format!("{}/v1/rollouts", host.url))
        .header("authorization", format!("bearer {API_TOKEN}"))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_the_store_refuses_stops_the_start_every_time() {
    let dir = temp_dir("refused-start");
    let mock = Mock::start().await.expect("mock");
    let v1 = bundle(&dir);
    let yaml = host_yaml(&mock.url(), "");
    let mut host = Host::start(&dir, &v1, &yaml);
    assert!(host.term().success());
    // The same declared version with other content.
    let declared = common::build_variant("tests/serve/project", &dir, "declared", |_, text| {
        text.replace("flow welcome {", "flow welcome {\n  version 1")
    });
    let mut host = Host::start(&dir, &declared, &yaml);
    assert!(host.term().success());
    let changed = common::build_variant("tests/serve/project", &dir, "changed", |_, text| {
        text.replace("flow welcome {", "flow welcome {\n  version 1")
            .replace("Reply 1 for products", "Reply 1 for our products")
    });
    for _ in 0..2 {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rapport"));
        let o = env(&mut cmd)
            .args([
                "serve",
                "--bundle",
                common::s(&changed),
                "--config",
                common::s(&dir.join("host.yaml")),
                "--store",
            ])
            .arg(format!("sqlite:{}", common::s(&dir.join("store.db"))))
            .output()
            .expect("runs");
        let err = common::text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("declares version 1 as the store's does"),
            "{err}"
        );
        assert!(!err.contains("listening on"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_during_a_call_leaves_nothing_of_the_contact_behind() {
    let dir = temp_dir("erase-inflight");
    let mock = Mock::start().await.expect("mock");
    let mut slow = Reply::status(200, json!({"messages": [{"id": "wamid.SLOW"}]}));
    slow.delay = Duration::from_secs(2);
    mock.push(slow);
    let host = Host::start(&dir, &bundle(&dir), &host_yaml(&mock.url(), ""));
    let who = "40733333333";
    webhook(&host.url, &wa_messages(&[("wamid.E1", who, "hi")])).await;
    mock.wait_calls(1, WAIT).await;
    let url = format!("{}/v1/contacts/whatsapp:{who}", host.url);
    let (status, _) = api(Method::DELETE, &url, None).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let (status, left) = api(Method::GET, &url, None).await;
    assert_eq!(status, 404, "{left}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_trickling_its_headers_does_not_hold_up_a_stop() {
    use tokio::io::AsyncWriteExt;
    let (_dir, _mock, mut host) = serving("trickle").await;
    let addr = host.url.trim_start_matches("http://").to_string();
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(b"POST /webhooks/meta HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    let trickle = tokio::spawn(async move {
        for _ in 0..60 {
            if slow.write_all(b"X").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let status = tokio::task::spawn_blocking(move || host.term())
        .await
        .expect("join");
    assert!(status.success(), "{status:?}");
    // The test host's grace period is 5 s.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "{:?}",
        started.elapsed()
    );
    trickle.abort();
}

/// The test project with a Telegram channel beside WhatsApp, built into `dir`.
fn telegram_bundle(dir: &std::path::Path) -> std::path::PathBuf {
    common::build_variant("tests/serve/project", dir, "with-telegram", |_, text| {
        text.replace(
            "channels: { whatsapp: { window: 24h } }",
            "channels: { whatsapp: { window: 24h }, telegram: {} }",
        )
        .replace(
            "  channels whatsapp\n  start on message",
            "  channels whatsapp, telegram\n  start on message",
        )
    })
}

const TG_SECRET: &str = "tg-secret_token-for-tests";

fn telegram_yaml(mock: &str) -> String {
    let telegram = format!(
        "  telegram:\n    connector: telegram\n    bot_token: \"123456:ABC-test\"\n    secret_token: {TG_SECRET}\n    api_base: {mock}\n    per_recipient: 1ms\nsinks:\n"
    );
    host_yaml(mock, "").replacen("sinks:\n", &telegram, 1)
}

async fn telegram_update(host: &str, secret: Option<&str>, update: &Value) -> u16 {
    let mut r = client()
        .post(format!("{host}/webhooks/telegram"))
        .header("content-type", "application/json")
        .body(update.to_string());
    if let Some(s) = secret {
        r = r.header("x-telegram-bot-api-secret-token", s);
    }
    r.send().await.map_or(0, |r| r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread")]
async fn telegram_updates_with_the_secret_token_are_answered_through_send_message() {
    let dir = temp_dir("telegram");
    let mock = Mock::start().await.expect("mock");
    let yaml = telegram_yaml(&mock.url());
    let host = Host::start(&dir, &telegram_bundle(&dir), &yaml);
    let update = |id: i64, text: &str| {
        json!({"update_id": id, "message": {"message_id": id, "date": unix_now(),
            "from": {"id": 4242, "is_bot": false, "first_name": "Ana"},
            "chat": {"id": 4242, "type": "private"}, "text": text}})
    };
    // A wrong or missing secret token: refused, nothing sent.
    assert_eq!(
        telegram_update(&host.url, Some("wrong"), &update(1, "hi")).await,
        401
    );
    assert_eq!(
        telegram_update(&host.url, None, &update(1, "hi")).await,
        401
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(mock.calls().is_empty());
    // Telegram's rate limit first: 429 with parameters.retry_after, then the reply.
    mock.push(Reply::telegram_error(
        429,
        "Too Many Requests: retry after 2",
        Some(2),
    ));
    assert_eq!(
        telegram_update(&host.url, Some(TG_SECRET), &update(2, "hi")).await,
        200
    );
    // Redelivered by Telegram: one reply.
    assert_eq!(
        telegram_update(&host.url, Some(TG_SECRET), &update(2, "hi")).await,
        200
    );
    let calls = mock.wait_calls(2, WAIT).await;
    assert_eq!(calls.len(), 2, "{}", host.log());
    assert_eq!(calls[1].path, "/bot123456:ABC-test/sendMessage");
    assert_eq!(
        calls[1].body,
        json!({"chat_id": 4242, "text": "Automated reply: Hi Ana! Welcome to Acme Shoes. Reply 1 for products, 2 for order help."})
    );
    assert!(calls[1].at.duration_since(calls[0].at) >= Duration::from_secs(2));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.calls().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn what_platforms_say_back_changes_consent_and_opt_out() {
    let dir = temp_dir("platform-says");
    let mock = Mock::start().await.expect("mock");
    // WhatsApp: the person stopped marketing messages (131050).
    mock.push(Reply::whatsapp_error(
        400,
        131050,
        "User has stopped marketing messages",
    ));
    // Telegram: the person blocked the bot.
    mock.push(Reply::telegram_error(
        403,
        "Forbidden: bot was blocked by the user",
        None,
    ));
    let host = Host::start(&dir, &telegram_bundle(&dir), &telegram_yaml(&mock.url()));
    webhook(
        &host.url,
        &wa_messages(&[("wamid.PS1", "40755500011", "hi")]),
    )
    .await;
    mock.wait_calls(1, WAIT).await;
    let update = json!({"update_id": 77, "message": {"message_id": 1, "date": unix_now(),
        "from": {"id": 5150, "first_name": "Bo"}, "chat": {"id": 5150, "type": "private"}, "text": "hi"}});
    assert_eq!(
        telegram_update(&host.url, Some(TG_SECRET), &update).await,
        200
    );
    mock.wait_calls(2, WAIT).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (_, wa) = contact_export(&host.url, "whatsapp:40755500011").await;
    let ledger = wa["consent_ledger"].to_string();
    assert!(
        ledger.contains("marketing") && ledger.contains("false"),
        "{wa}"
    );
    assert_eq!(wa["opted_out"], false, "{wa}");
    let (_, tg) = contact_export(&host.url, "telegram:5150").await;
    assert_eq!(tg["opted_out"], true, "{tg}");
    // No confirmation can reach someone who blocked the bot, and none is attempted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(mock.calls().len(), 2, "{}", host.log());
}
