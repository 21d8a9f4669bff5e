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

#[tokio::test(flavor = "multi_thread")]
async fn a_signed_webhook_is_answered_at_the_platform_with_the_exact_json() {
    let dir = temp_dir("reply");
    let mock = Mock::start().await.expect("mock");
    let host = Host::start(&dir, &bundle(&dir), &host_yaml(&mock.url(), ""));
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
    let dir = temp_dir("redelivery");
    let mock = Mock::start().await.expect("mock");
    let host = Host::start(&dir, &bundle(&dir), &host_yaml(&mock.url(), ""));
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
    let metrics = client()
        .get(format!("{}/metrics", host.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("rapport_duplicate_events_total 5"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_and_missing_signatures_get_401_and_nothing_is_sent() {
    let dir = temp_dir("signature");
    let mock = Mock::start().await.expect("mock");
    let host = Host::start(&dir, &bundle(&dir), &host_yaml(&mock.url(), ""));
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
    let metrics = client()
        .get(format!("{}/metrics", host.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
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
    let dir = temp_dir("handshake");
    let mock = Mock::start().await.expect("mock");
    let host = Host::start(&dir, &bundle(&dir), &host_yaml(&mock.url(), ""));
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
    let dir = temp_dir("stop");
    let mock = Mock::start().await.expect("mock");
    let host = Host::start(&dir, &bundle(&dir), &host_yaml(&mock.url(), ""));
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
    let host = Host::start(&dir, &bundle(&dir), &host_yaml(&mock.url(), ""));
    webhook(
        &host.url,
        &wa_messages(&[("wamid.R1", "40700000004", "hi")]),
    )
    .await;
    let calls = mock.wait_calls(3, WAIT).await;
    assert_eq!(
        calls.iter().map(|c| c.status).collect::<Vec<_>>(),
        [500, 429, 200],
        "{}",
        host.log()
    );
    // The same message each time.
    assert_eq!(calls[0].body, calls[2].body);
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
    let (status, export) = api(
        Method::GET,
        &format!("{}/v1/contacts/whatsapp:40700000005", host.url),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let text = export.to_string();
    assert!(
        text.contains("delivery_failed") && text.contains("131047"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_handoff_goes_to_its_sink_signed_with_an_idempotency_key() {
    let dir = temp_dir("handoff");
    let mock = Mock::start().await.expect("mock");
    let host = Host::start(&dir, &bundle(&dir), &host_yaml(&mock.url(), ""));
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
}

#[tokio::test(flavor = "multi_thread")]
async fn timers_fire_on_the_wall_clock_and_a_closed_window_gets_the_template() {
    let dir = temp_dir("template");
    let mock = Mock::start().await.expect("mock");
    let host = Host::start(&dir, &bundle(&dir), &host_yaml(&mock.url(), ""));
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
    let dir = temp_dir("events-api");
    let mock = Mock::start().await.expect("mock");
    let host = Host::start(&dir, &bundle(&dir), &host_yaml(&mock.url(), ""));
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
