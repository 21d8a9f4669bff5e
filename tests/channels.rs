//! Every channel through `rapport serve`: the platforms' documented payloads (under
//! tests/channels/fixtures) posted over HTTP to the binary, a mock of each platform's API
//! on 127.0.0.1, and the JSON of every call the host makes pinned.

mod common;
#[path = "serve/harness.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::*;
use rapport_mock::{Call, Mock, Reply};
use reqwest::Method;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(15);
const IG_ACCOUNT: &str = "17841400000000000";
const PAGE: &str = "102938475610293";
const TG_SECRET: &str = "tg-secret_token-for-tests";
/// The time the fixtures are written around (2025-12-01T10:00:00Z).
const FIXTURE_TIME: i64 = 1_764_583_200;

fn temp_dir(name: &str) -> PathBuf {
    common::temp_dir("channels", name)
}

fn bundle(dir: &Path) -> PathBuf {
    common::build("tests/channels/project", dir)
}

/// host.yaml connecting every channel of the test project to `mock`.
fn channels_yaml(mock: &str) -> String {
    let channels = format!(
        "  instagram: {{ connector: instagram, account_id: \"{IG_ACCOUNT}\", access_token: ig-token, app_secret: ${{META_APP_SECRET}}, verify_token: ${{META_VERIFY_TOKEN}}, api_base: {mock}/v23.0 }}
  messenger: {{ connector: messenger, page_id: \"{PAGE}\", access_token: page-token, app_secret: ${{META_APP_SECRET}}, verify_token: ${{META_VERIFY_TOKEN}}, api_base: {mock}/v23.0 }}
  telegram: {{ connector: telegram, bot_token: \"123456:ABC-test\", secret_token: {TG_SECRET}, api_base: {mock}, per_recipient: 1ms }}
  sms: {{ connector: webhook, url: {mock}/sms/send, secret: ${{SINK_SECRET}} }}
sinks:
"
    );
    host_yaml(mock, "").replacen("sinks:\n", &channels, 1)
}

async fn serving(name: &str) -> (PathBuf, Mock, Host) {
    let dir = temp_dir(name);
    let mock = Mock::start().await.expect("mock");
    let host = Host::start(&dir, &bundle(&dir), &channels_yaml(&mock.url()));
    (dir, mock, host)
}

/// A fixture with its times moved to now (the offset kept), and `MESSAGE_ID` replaced.
fn fixture(name: &str, message_id: &str) -> Value {
    let path = common::repo_root()
        .join("tests/channels/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).expect("fixture");
    let mut v: Value =
        serde_json::from_str(&text.replace("MESSAGE_ID", message_id)).expect("fixture JSON");
    rebase(&mut v, unix_now() - FIXTURE_TIME);
    v
}

fn rebase(v: &mut Value, delta: i64) {
    const TIMES: [&str; 6] = [
        "timestamp",
        "time",
        "created_time",
        "date",
        "edit_date",
        "watermark",
    ];
    let shift = |n: i64| {
        if n >= 100_000_000_000 {
            n + delta * 1000
        } else {
            n + delta
        }
    };
    match v {
        Value::Object(map) => {
            for (k, x) in map.iter_mut() {
                if TIMES.contains(&k.as_str()) {
                    match x {
                        Value::Number(n) => {
                            if let Some(n) = n.as_i64() {
                                *x = json!(shift(n));
                            }
                        }
                        Value::String(s) => {
                            if let Ok(n) = s.parse::<i64>() {
                                *x = Value::String(shift(n).to_string());
                            }
                        }
                        _ => {}
                    }
                } else {
                    rebase(x, delta);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|x| rebase(x, delta)),
        _ => {}
    }
}

/// The calls to the platforms (not to the sinks), as (path, body).
fn platform_calls(calls: &[Call]) -> Vec<(String, Value)> {
    calls
        .iter()
        .filter(|c| !c.path.starts_with("/hooks/"))
        .map(|c| (c.path.clone(), c.body.clone()))
        .collect()
}

/// Waits until the mock took `n` calls to the platforms; returns them.
async fn wait_platform(mock: &Mock, n: usize) -> Vec<(String, Value)> {
    let end = std::time::Instant::now() + WAIT;
    loop {
        let calls = platform_calls(&mock.calls());
        if calls.len() >= n || std::time::Instant::now() > end {
            return calls;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the mock took a call to `path`; returns its body.
async fn wait_path(mock: &Mock, path: &str) -> Option<Value> {
    let end = std::time::Instant::now() + WAIT;
    loop {
        if let Some(c) = mock.calls().iter().find(|c| c.path == path) {
            return Some(c.body.clone());
        }
        if std::time::Instant::now() > end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The contact's audit records, from the access-request endpoint.
async fn audit(host: &str, contact: &str) -> Vec<Value> {
    let (status, body) = contact_export(host, contact).await;
    assert_eq!(status, 200, "{body}");
    body["audit_trail"].as_array().cloned().unwrap_or_default()
}

/// Waits until the contact's audit has a record of `kind` with `reason`.
async fn wait_audit(host: &str, contact: &str, kind: &str, reason: &str) -> Vec<Value> {
    let end = std::time::Instant::now() + WAIT;
    loop {
        let records = audit(host, contact).await;
        if records
            .iter()
            .any(|r| r["kind"] == kind && r["reason"] == reason)
            || std::time::Instant::now() > end
        {
            return records;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn has(records: &[Value], kind: &str, reason: &str) -> bool {
    records
        .iter()
        .any(|r| r["kind"] == kind && r["reason"] == reason)
}

fn duplicates(records: &[Value]) -> usize {
    records.iter().filter(|r| r["kind"] == "duplicate").count()
}

const GREETING: &str = "Automated reply: Hi there! Welcome to Acme Shoes. Reply 1 for sizes, or write agent for a person.";

fn dm(to: &str, text: &str) -> Value {
    json!({"recipient": {"id": to}, "messaging_type": "RESPONSE", "message": {"text": text}})
}

#[tokio::test(flavor = "multi_thread")]
async fn instagram_dms_in_a_batch_start_one_conversation_without_echoes_or_other_accounts() {
    let (_dir, mock, host) = serving("ig-dms").await;
    let (status, _) = webhook(&host.url, &fixture("instagram_dms.json", "")).await;
    assert_eq!(status, 200);
    let calls = wait_platform(&mock, 2).await;
    let messages = format!("/v23.0/{IG_ACCOUNT}/messages");
    // The text and its duplicate give one greeting; the echo and the other account's
    // message give nothing; the quick reply "1" gets the question.
    assert_eq!(
        calls,
        vec![
            (messages.clone(), dm("1122334455", GREETING)),
            (
                messages.clone(),
                dm("1122334455", "Which sizes do you wear? A) 36-40 B) 41-46")
            ),
        ],
        "{}",
        host.log()
    );
    let records = audit(&host.url, "instagram:1122334455").await;
    assert_eq!(duplicates(&records), 1, "{records:?}");
    assert!(has(&records, "ignored", "not_understood"), "{records:?}");
    // The dashboard's test button sends a DM in `changes[]` form: it is a DM too.
    let (status, _) = webhook(&host.url, &fixture("instagram_test_button.json", "")).await;
    assert_eq!(status, 200);
    let calls = wait_platform(&mock, 3).await;
    assert_eq!(calls.get(2), Some(&(messages, dm("5566778899", GREETING))));
    // The calls carry the account's token.
    let first = &mock.calls()[0];
    assert_eq!(
        first.headers.get("authorization").map(String::as_str),
        Some("Bearer ig-token")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instagram_comment_is_answered_publicly_and_privately_and_an_abusive_one_hidden() {
    let (_dir, mock, host) = serving("ig-comments").await;
    let (status, _) = webhook(&host.url, &fixture("instagram_comments.json", "")).await;
    assert_eq!(status, 200);
    let mut calls = wait_platform(&mock, 3).await;
    calls.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        calls,
        vec![
            // The private reply goes to the comment, within its 7 days.
            (
                format!("/v23.0/{IG_ACCOUNT}/messages"),
                json!({"recipient": {"comment_id": "17895695668004550"}, "message": {"text":
                    "Automated reply: Thanks for asking! Our shoes start at 59 EUR: https://acme.example/shop. Reply YES for a stylist."}})
            ),
            (
                "/v23.0/17895695668004550/replies".to_string(),
                json!({"message": "Hi @ana.k! We've sent you a DM with prices."})
            ),
            ("/v23.0/17895695668009999?hide=true".to_string(), json!({})),
        ],
        "{}",
        host.log()
    );
    // The abusive comment also reached the moderators' sink.
    let review = wait_path(&mock, "/hooks/review").await.expect("a review");
    assert_eq!(review["comment"], "17895695668009999");
    assert_eq!(
        review["reason"],
        "Abusive comment by @troll99 on 18012345678901234: \"this shop is a scam\""
    );
    // Our own reply coming back as a comment started nothing: the store knows nothing
    // of our account as a contact.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(platform_calls(&mock.calls()).len(), 3);
    let (status, _) = contact_export(&host.url, &format!("instagram:{IG_ACCOUNT}")).await;
    assert_eq!(status, 404);
    // The person answers the private reply by DM: the run goes on to a person.
    let yes = json!({"object": "instagram", "entry": [{"id": IG_ACCOUNT, "time": unix_now() * 1000,
        "messaging": [{"sender": {"id": "2233445566"}, "recipient": {"id": IG_ACCOUNT},
            "timestamp": unix_now() * 1000, "message": {"mid": "ig-yes-1", "text": "yes"}}]}]});
    assert_eq!(webhook(&host.url, &yes).await.0, 200);
    let handoff = wait_path(&mock, "/hooks/handoff").await.expect("a handoff");
    assert_eq!(handoff["queue"], "sales");
    assert_eq!(handoff["contact"], "instagram:2233445566");
}

#[tokio::test(flavor = "multi_thread")]
async fn facebook_page_comments_are_answered_on_their_comments_edge_and_hidden_with_is_hidden() {
    let (_dir, mock, host) = serving("fb-feed").await;
    let (status, _) = webhook(&host.url, &fixture("facebook_feed.json", "")).await;
    assert_eq!(status, 200);
    let mut calls = wait_platform(&mock, 3).await;
    calls.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        calls,
        vec![
            (
                format!("/v23.0/{PAGE}/messages"),
                json!({"recipient": {"comment_id": "555_1001"}, "message": {"text":
                    "Automated reply: Thanks for asking! Our shoes start at 59 EUR: https://acme.example/shop. Reply YES for a stylist."}})
            ),
            (
                "/v23.0/555_1001/comments".to_string(),
                json!({"message": "Hi @Ana Lopez! We've sent you a DM with prices."})
            ),
            ("/v23.0/555_1003?is_hidden=true".to_string(), json!({})),
        ],
        "{}",
        host.log()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The reaction, the edit and the Page's own comment start nothing.
    assert_eq!(platform_calls(&mock.calls()).len(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_messenger_conversation_goes_through_a_handoff_and_its_receipts_reach_the_audit() {
    let (_dir, mock, host) = serving("messenger").await;
    let steps = fixture("messenger_conversation.json", "");
    let steps = steps.as_array().cloned().unwrap_or_default();
    let contact = "messenger:6677889900112233";
    let messages = format!("/v23.0/{PAGE}/messages");
    // "Hello": the greeting; "1": the question.
    for (i, step) in steps.iter().take(2).enumerate() {
        assert_eq!(webhook(&host.url, step).await.0, 200);
        wait_platform(&mock, i + 1).await;
    }
    assert_eq!(
        platform_calls(&mock.calls()),
        vec![
            (messages.clone(), dm("6677889900112233", GREETING)),
            (
                messages.clone(),
                dm(
                    "6677889900112233",
                    "Which sizes do you wear? A) 36-40 B) 41-46"
                )
            ),
        ],
        "{}",
        host.log()
    );
    // A button that is no answer: the run hands the person to the support queue.
    assert_eq!(webhook(&host.url, &steps[2]).await.0, 200);
    let handoff = wait_path(&mock, "/hooks/handoff").await.expect("a handoff");
    assert_eq!(handoff["queue"], "support");
    assert_eq!(handoff["contact"], contact);
    assert_eq!(
        handoff["summary"],
        "Contact asked for a person. Last message: C"
    );
    // The agent releases the conversation; the person's next message starts afresh.
    let released = json!({"id": "agent-1", "at": rapport_engine::format_time(unix_now() * 1000),
        "contact": contact, "type": "agent", "action": "released", "agent": "mia"});
    let (status, body) = api(
        Method::POST,
        &format!("{}/v1/events", host.url),
        Some(released.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    wait_path(&mock, "/hooks/handoff").await;
    // Messenger's delivery receipt for the greeting reaches the audit trail.
    let greeting_id = "m_MOCK0";
    let (status, _) = webhook(&host.url, &fixture("messenger_delivery.json", greeting_id)).await;
    assert_eq!(status, 200);
    let records = wait_audit(&host.url, contact, "delivery", "delivered").await;
    assert!(has(&records, "delivery", "delivered"), "{records:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_text_too_long_for_messenger_is_not_sent_and_is_recorded_as_too_long() {
    let (_dir, mock, host) = serving("too-long").await;
    let contact = "messenger:6677889900112233";
    let steps = fixture("messenger_conversation.json", "");
    assert_eq!(webhook(&host.url, &steps[0]).await.0, 200);
    wait_platform(&mock, 1).await;
    // A cart event whose product name makes the reminder 2,100 characters long.
    let cart = json!({"id": "cart-1", "at": rapport_engine::format_time(unix_now() * 1000),
        "contact": contact, "channel": "messenger", "type": "event", "name": "cart.abandoned",
        "data": {"product_name": "x".repeat(2100), "cart_url": "https://acme.example/c/1"}});
    let (status, body) = api(
        Method::POST,
        &format!("{}/v1/events", host.url),
        Some(cart.to_string()),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let records = wait_audit(&host.url, contact, "delivery_failed", "too_long").await;
    assert!(has(&records, "delivery_failed", "too_long"), "{records:?}");
    assert_eq!(platform_calls(&mock.calls()).len(), 1, "nothing more sent");
}

#[tokio::test(flavor = "multi_thread")]
async fn whatsapp_buttons_and_lists_answer_questions_and_out_of_order_statuses_are_all_kept() {
    let (_dir, mock, host) = serving("wa-interactive").await;
    let (status, _) = webhook(&host.url, &fixture("whatsapp_interactive.json", "")).await;
    assert_eq!(status, 200);
    // "hi" → greeting; button "1" (twice in the batch) → the question; list "B" → the
    // answer; the template's button "Stop promotions" → the question whether they meant
    // STOP, and a new greeting; the reaction → nothing.
    let calls = wait_platform(&mock, 5).await;
    let wa = |text: &str| json!({"messaging_product": "whatsapp", "to": "40799000111", "type": "text", "text": {"body": text}});
    let path = format!("/v23.0/{PHONE_NUMBER_ID}/messages");
    assert_eq!(
        calls,
        vec![
            (path.clone(), wa(&GREETING.replace("there", "Dan"))),
            (
                path.clone(),
                wa("Which sizes do you wear? A) 36-40 B) 41-46")
            ),
            (
                path.clone(),
                wa("Our large sizes are in stock: https://acme.example/shop/large")
            ),
            (
                path.clone(),
                wa("Did you mean to stop our automated offers? Reply STOP to confirm, or START to keep them.")
            ),
            (path.clone(), wa(&GREETING.replace("there", "Dan"))),
        ],
        "{}",
        host.log()
    );
    let contact = "whatsapp:40799000111";
    let records = audit(&host.url, contact).await;
    assert_eq!(duplicates(&records), 1, "{records:?}");
    assert!(has(&records, "ignored", "not_understood"), "{records:?}");
    // Statuses of the greeting, read before delivered and sent last: both kept.
    let (status, _) = webhook(&host.url, &fixture("whatsapp_statuses.json", "wamid.MOCK0")).await;
    assert_eq!(status, 200);
    let records = wait_audit(&host.url, contact, "delivery", "delivered").await;
    assert!(has(&records, "delivery", "read"), "{records:?}");
    assert!(has(&records, "delivery", "delivered"), "{records:?}");
    // Meta redelivers the same statuses: duplicates, counted once below.
    let (status, _) = webhook(&host.url, &fixture("whatsapp_statuses.json", "wamid.MOCK0")).await;
    assert_eq!(status, 200);
    let end = std::time::Instant::now() + WAIT;
    while duplicates(&audit(&host.url, contact).await) < 3 && std::time::Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And in the metrics, by channel and action type, for the delivered and read rates.
    let metrics = metrics_text(&host.url).await;
    for (status, n) in [("sent", 5), ("delivered", 1), ("read", 1)] {
        let line = format!(
            "rapport_delivery_statuses_total{{channel=\"whatsapp\",type=\"send\",status=\"{status}\"}} {n}"
        );
        assert!(metrics.contains(&line), "{line}\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_send_whatsapp_finds_outside_its_window_is_resent_once_as_its_template() {
    let (_dir, mock, host) = serving("wa-131047").await;
    let hi = wa_messages(&[("wamid.IN1", "40799000111", "hi")]);
    assert_eq!(webhook(&host.url, &hi).await.0, 200);
    wait_platform(&mock, 1).await;
    let cart = |id: &str| {
        json!({"id": id, "at": rapport_engine::format_time(unix_now() * 1000),
            "contact": "whatsapp:40799000111", "channel": "whatsapp", "type": "event",
            "name": "cart.abandoned",
            "data": {"product_name": "Trail Runner", "cart_url": "https://acme.example/c/9"}})
    };
    let events = format!("{}/v1/events", host.url);
    // WhatsApp answers the free-form reminder with 131047 at once: the template goes.
    mock.push(Reply::whatsapp_error(400, 131047, "Re-engagement message"));
    let (status, _) = api(Method::POST, &events, Some(cart("cart-1").to_string())).await;
    assert_eq!(status, 200);
    let calls = wait_platform(&mock, 3).await;
    let path = format!("/v23.0/{PHONE_NUMBER_ID}/messages");
    let template = json!({"messaging_product": "whatsapp", "to": "40799000111", "type": "template",
        "template": {"name": "cart_reminder_v2", "language": {"code": "en"}, "components": [
            {"type": "body", "parameters": [{"type": "text", "text": "Trail Runner"},
                {"type": "text", "text": "https://acme.example/c/9"}]}]}});
    assert_eq!(
        calls[1].1["text"]["body"],
        "Automated reply: Your Trail Runner is waiting: https://acme.example/c/9"
    );
    assert_eq!(
        calls.get(2),
        Some(&(path.clone(), template.clone())),
        "{}",
        host.log()
    );
    // Or later, as a failed status after the 200: the template goes too, once.
    let (status, _) = api(Method::POST, &events, Some(cart("cart-2").to_string())).await;
    assert_eq!(status, 200);
    let calls = wait_platform(&mock, 4).await;
    assert_eq!(calls[3].1["type"], "text");
    let sent = mock
        .calls()
        .iter()
        .rev()
        .find(|c| c.body["type"] == "text")
        .map(|c| c.path.clone());
    assert_eq!(sent.as_deref(), Some(path.as_str()));
    // The platform's id of that message, from the contact's record of deliveries.
    let end = std::time::Instant::now() + WAIT;
    let message_id = loop {
        let (_, export) = contact_export(&host.url, "whatsapp:40799000111").await;
        let found = export["deliveries"].as_array().and_then(|d| {
            d.iter()
                .find(|x| x["action"]["cause"] == "cart-2" && x["status"] == "delivered")
                .and_then(|x| x["detail"].as_str().map(str::to_string))
        });
        match found {
            Some(id) => break id,
            None if std::time::Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            None => panic!("no delivered reminder: {export}"),
        }
    };
    // The status twice in one payload: one template.
    let mut failed = fixture("whatsapp_failed_131047.json", &message_id);
    let twice = failed["entry"][0]["changes"][0]["value"]["statuses"][0].clone();
    if let Some(list) = failed["entry"][0]["changes"][0]["value"]["statuses"].as_array_mut() {
        list.push(twice);
    }
    assert_eq!(webhook(&host.url, &failed).await.0, 200);
    let calls = wait_platform(&mock, 5).await;
    assert_eq!(
        calls.get(4),
        Some(&(path.clone(), template)),
        "{}",
        host.log()
    );
    // The same status again changes nothing: the template went once.
    assert_eq!(webhook(&host.url, &failed).await.0, 200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(platform_calls(&mock.calls()).len(), 5);
    let records = audit(&host.url, "whatsapp:40799000111").await;
    let failures = records
        .iter()
        .filter(|r| r["kind"] == "delivery_failed" && r["reason"] == "131047")
        .count();
    // Both refusals are on record: the API's answer and the later status.
    assert_eq!(failures, 2, "{records:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn telegram_updates_are_answered_and_what_is_not_a_text_is_recorded() {
    let (_dir, mock, host) = serving("telegram-fixtures").await;
    let updates = fixture("telegram_updates.json", "");
    for update in updates.as_array().cloned().unwrap_or_default() {
        let status = client()
            .post(format!("{}/webhooks/telegram", host.url))
            .header("x-telegram-bot-api-secret-token", TG_SECRET)
            .json(&update)
            .send()
            .await
            .map_or(0, |r| r.status().as_u16());
        assert_eq!(status, 200);
    }
    let calls = wait_platform(&mock, 2).await;
    let path = "/bot123456:ABC-test/sendMessage".to_string();
    assert_eq!(
        calls,
        vec![
            (
                path.clone(),
                json!({"chat_id": 424242, "text": GREETING.replace("there", "Ana")})
            ),
            (
                path,
                json!({"chat_id": 424242, "text": "Which sizes do you wear? A) 36-40 B) 41-46"})
            ),
        ],
        "{}",
        host.log()
    );
    let records = audit(&host.url, "telegram:424242").await;
    let ignored = records.iter().filter(|r| r["kind"] == "ignored").count();
    // The sticker names its chat; the edit and the callback query do not.
    assert_eq!(ignored, 1, "{records:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_sms_gateway_gets_the_signed_action_and_its_unsubscribed_answer_opts_out() {
    let (_dir, mock, host) = serving("sms").await;
    let events = format!("{}/v1/events", host.url);
    let message = |id: &str, text: &str| {
        json!({"id": id, "at": rapport_engine::format_time(unix_now() * 1000),
            "contact": "sms:+40712000111", "channel": "sms", "type": "message", "text": text})
        .to_string()
    };
    let (status, _) = api(Method::POST, &events, Some(message("sms-1", "hi"))).await;
    assert_eq!(status, 200);
    let body = wait_path(&mock, "/sms/send").await.expect("a call");
    assert_eq!(body["type"], "send");
    assert_eq!(body["contact"], "sms:+40712000111");
    assert_eq!(body["channel"], "sms");
    assert_eq!(body["text"], GREETING);
    let call = mock
        .calls()
        .into_iter()
        .find(|c| c.path == "/sms/send")
        .expect("the call");
    let signature = call
        .headers
        .get("x-rapport-signature")
        .cloned()
        .unwrap_or_default();
    let t: i64 = signature
        .split(',')
        .find_map(|p| p.strip_prefix("t="))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    assert_eq!(
        signature,
        rapport_serve::signature::rapport_header(SINK_SECRET, t, call.raw.as_bytes())
    );
    assert_eq!(
        call.headers.get("idempotency-key"),
        body["id"].as_str().map(str::to_string).as_ref()
    );
    // The gateway says the number unsubscribed at the carrier (Twilio's 21610).
    mock.push(Reply::status(
        400,
        json!({"code": 21610, "message": "Attempt to send to unsubscribed recipient"}),
    ));
    let (status, _) = api(Method::POST, &events, Some(message("sms-2", "1"))).await;
    assert_eq!(status, 200);
    let records = wait_audit(&host.url, "sms:+40712000111", "opt_out", "platform").await;
    assert!(has(&records, "opt_out", "platform"), "{records:?}");
    // Opted out: nothing more goes to the gateway.
    let (status, _) = api(Method::POST, &events, Some(message("sms-3", "agent"))).await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let to_gateway = mock
        .calls()
        .iter()
        .filter(|c| c.path == "/sms/send")
        .count();
    assert_eq!(to_gateway, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_before_whatsapps_131047_status_cancels_the_template_resend() {
    let (_dir, mock, host) = serving("wa-131047-stop").await;
    let who = "40799000222";
    let contact = format!("whatsapp:{who}");
    assert_eq!(
        webhook(&host.url, &wa_messages(&[("wamid.S1", who, "hi")]))
            .await
            .0,
        200
    );
    wait_platform(&mock, 1).await;
    let cart = json!({"id": "cart-9", "at": rapport_engine::format_time(unix_now() * 1000),
        "contact": contact, "channel": "whatsapp", "type": "event", "name": "cart.abandoned",
        "data": {"product_name": "Trail Runner", "cart_url": "https://acme.example/c/9"}});
    let (status, _) = api(
        Method::POST,
        &format!("{}/v1/events", host.url),
        Some(cart.to_string()),
    )
    .await;
    assert_eq!(status, 200);
    wait_platform(&mock, 2).await;
    // The reminder was accepted; the contact says STOP and gets the confirmation.
    assert_eq!(
        webhook(&host.url, &wa_messages(&[("wamid.S2", who, "STOP")]))
            .await
            .0,
        200
    );
    let calls = wait_platform(&mock, 3).await;
    assert!(
        calls[2].1["text"]["body"]
            .as_str()
            .is_some_and(|t| t.starts_with("You're unsubscribed")),
        "{calls:?}"
    );
    // Then WhatsApp says the reminder failed as outside the window: no template now.
    let (_, export) = contact_export(&host.url, &contact).await;
    let message_id = export["deliveries"]
        .as_array()
        .and_then(|d| {
            d.iter()
                .find(|x| x["action"]["cause"] == "cart-9")
                .and_then(|x| x["detail"].as_str().map(str::to_string))
        })
        .expect("the reminder's message id");
    let failed = fixture("whatsapp_failed_131047.json", &message_id);
    let failed = serde_json::from_str::<Value>(&failed.to_string().replace("40799000111", who))
        .expect("JSON");
    assert_eq!(webhook(&host.url, &failed).await.0, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(platform_calls(&mock.calls()).len(), 3, "{}", host.log());
    let records = wait_audit(&host.url, &contact, "delivery_failed", "cancelled_by_stop").await;
    assert!(
        has(&records, "delivery_failed", "cancelled_by_stop"),
        "{records:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_draft_goes_to_the_helpdesk_and_out_on_the_channel_once_approved() {
    let (_dir, mock, host) = serving("draft").await;
    let events = format!("{}/v1/events", host.url);
    let now = || rapport_engine::format_time(unix_now() * 1000);
    let question = json!({"id": "m1", "at": now(), "contact": "sms:+40712000222", "channel": "sms",
        "type": "message", "text": "how much are the boots?", "intent": "price_question",
        "suggestion": "The Alpine Boot is 149 EUR."});
    let (status, body) = api(Method::POST, &events, Some(question.to_string())).await;
    assert_eq!(status, 200, "{body}");
    // The draft reaches the people's queue through the handoff sink, signed; nothing goes
    // to the contact yet.
    let draft = wait_path(&mock, "/hooks/handoff").await.expect("a draft");
    assert_eq!(draft["type"], "draft");
    assert_eq!(draft["text"], "The Alpine Boot is 149 EUR.");
    assert_eq!(draft["queue"], "sales");
    assert!(mock.calls().iter().all(|c| c.path != "/sms/send"));
    // A person edits and approves it.
    let id = draft["id"].as_str().expect("the draft's id").to_string();
    let approved = json!({"id": "a1", "at": now(), "contact": "sms:+40712000222", "type": "agent",
        "action": "approved", "draft": id, "text": "The Alpine Boot is 129 EUR this week.",
        "agent": "mia"});
    let (status, body) = api(Method::POST, &events, Some(approved.to_string())).await;
    assert_eq!(status, 200, "{body}");
    let sent = wait_path(&mock, "/sms/send")
        .await
        .expect("the approved answer");
    assert_eq!(
        sent["text"],
        "Automated reply: The Alpine Boot is 129 EUR this week."
    );
    assert_eq!(sent["draft"], id.as_str());
}
