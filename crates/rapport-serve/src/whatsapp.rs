//! The WhatsApp Cloud API: webhook payloads into the runtime's events, and actions into
//! the calls that send them (docs/channels.md, "WhatsApp").

use serde_json::{json, Map, Value};

use crate::config::WhatsApp;

/// What one webhook payload holds for a channel.
#[derive(Debug, Default)]
pub(crate) struct Normalised {
    /// Runtime events as JSON lines (`rapport run`'s format).
    pub(crate) events: Vec<String>,
    /// Parts that could not be understood (a sticker, a reaction): recorded, never
    /// retried. Each is (contact if known, what it was).
    pub(crate) ignored: Vec<(Option<String>, String)>,
    /// Status updates: (platform message id, status, error code, error text, time).
    pub statuses: Vec<Status>,
}

/// A status webhook of a message Rapport sent.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Status {
    pub message_id: String,
    pub status: String,
    pub code: Option<String>,
    pub detail: Option<String>,
    pub at: i64,
}

fn time(ts: Option<&Value>) -> Option<i64> {
    let secs = match ts? {
        Value::String(s) => s.parse::<i64>().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    // A time a clock can show (a timestamp in milliseconds sent as seconds is not).
    jiff::Timestamp::from_second(secs).ok()?;
    secs.checked_mul(1000)
}

/// The first word of a WhatsApp profile name.
fn first_name(name: &str) -> Option<String> {
    name.split_whitespace().next().map(str::to_string)
}

/// Normalises the `value` objects of a `whatsapp_business_account` payload addressed to
/// `phone_number_id`, for the channel named `channel`.
pub(crate) fn normalise(payload: &Value, phone_number_id: &str, channel: &str) -> Normalised {
    let mut out = Normalised::default();
    let entries = payload.get("entry").and_then(Value::as_array);
    for entry in entries.into_iter().flatten() {
        let changes = entry.get("changes").and_then(Value::as_array);
        for change in changes.into_iter().flatten() {
            let Some(value) = change.get("value") else {
                continue;
            };
            let pnid = value
                .pointer("/metadata/phone_number_id")
                .and_then(Value::as_str);
            if pnid != Some(phone_number_id) {
                continue;
            }
            value_into(value, channel, &mut out);
        }
    }
    out
}

fn value_into(value: &Value, channel: &str, out: &mut Normalised) {
    // Profile names by WhatsApp id.
    let mut names: Map<String, Value> = Map::new();
    for c in value
        .get("contacts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let (Some(id), Some(name)) = (
            c.get("wa_id").and_then(Value::as_str),
            c.pointer("/profile/name").and_then(Value::as_str),
        ) {
            if let Some(first) = first_name(name) {
                names.insert(id.to_string(), Value::String(first));
            }
        }
    }
    for m in value
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let from = m
            .get("from")
            .and_then(Value::as_str)
            .filter(|f| !f.is_empty());
        let id = m
            .get("id")
            .and_then(Value::as_str)
            .filter(|i| !i.is_empty());
        let at = time(m.get("timestamp"));
        let (Some(from), Some(id), Some(at)) = (from, id, at) else {
            out.ignored
                .push((None, "a message without from, id or timestamp".into()));
            continue;
        };
        let contact = format!("{channel}:{from}");
        let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
        let (text, payload) = match kind {
            "text" => (m.pointer("/text/body").and_then(Value::as_str), None),
            "interactive" => {
                let reply = m
                    .pointer("/interactive/button_reply")
                    .or_else(|| m.pointer("/interactive/list_reply"));
                (
                    reply.and_then(|r| r.get("title")).and_then(Value::as_str),
                    reply.and_then(|r| r.get("id")).and_then(Value::as_str),
                )
            }
            "button" => (
                m.pointer("/button/text").and_then(Value::as_str),
                m.pointer("/button/payload").and_then(Value::as_str),
            ),
            _ => (None, None),
        };
        let Some(text) = text else {
            out.ignored.push((
                Some(contact),
                format!("a WhatsApp message of type `{kind}` (id {id})"),
            ));
            continue;
        };
        let mut event = json!({
            "id": format!("wa:{id}"),
            "at": rapport_engine::format_time(at),
            "contact": contact,
            "channel": channel,
            "type": "message",
            "text": text,
        });
        if let Some(first) = names.get(from) {
            event["profile"] = json!({ "first_name": first });
        }
        if let Some(p) = payload {
            event["payload"] = Value::String(p.to_string());
        }
        out.events.push(event.to_string());
    }
    for s in value
        .get("statuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(status), Some(at)) = (
            s.get("id").and_then(Value::as_str),
            s.get("status").and_then(Value::as_str),
            time(s.get("timestamp")),
        ) else {
            out.ignored
                .push((None, "a status without id, status or timestamp".into()));
            continue;
        };
        if !matches!(status, "sent" | "delivered" | "read" | "failed") {
            out.ignored
                .push((None, format!("a status `{status}` of message {id}")));
            continue;
        }
        let error = s.pointer("/errors/0");
        out.statuses.push(Status {
            message_id: id.to_string(),
            status: status.to_string(),
            code: error.and_then(|e| e.get("code")).map(|c| match c {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            }),
            detail: error
                .and_then(|e| e.get("title").or_else(|| e.get("message")))
                .and_then(Value::as_str)
                .map(str::to_string),
            at,
        });
    }
}

/// The longest text WhatsApp sends, in characters.
pub(crate) const MAX_TEXT: usize = 4096;

/// Why an action cannot become a WhatsApp call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unsendable {
    pub(crate) code: &'static str,
    pub(crate) detail: String,
}

/// The URL and JSON body of the call that delivers a `send` action.
pub(crate) fn send_request(
    wa: &WhatsApp,
    action: &Value,
    channel: &str,
    templates: &std::collections::BTreeMap<String, Option<Vec<String>>>,
) -> Result<(String, Value), Unsendable> {
    let contact = action.get("contact").and_then(Value::as_str).unwrap_or("");
    let to = contact
        .strip_prefix(channel)
        .and_then(|r| r.strip_prefix(':'))
        .unwrap_or(contact);
    if to.is_empty() {
        return Err(Unsendable {
            code: "no_recipient",
            detail: "the action has no contact".into(),
        });
    }
    let url = format!("{}/{}/messages", wa.api_base, wa.phone_number_id);
    if let Some(name) = action.get("template").and_then(Value::as_str) {
        let params = action.get("params").and_then(Value::as_object);
        // In the order rapport.yaml declares them; else in the order the action has.
        let ordered: Vec<&Value> = match (templates.get(name).cloned().flatten(), params) {
            (Some(order), Some(p)) => order.iter().filter_map(|k| p.get(k)).collect(),
            (None, Some(p)) => p.values().collect(),
            _ => Vec::new(),
        };
        let mut template = json!({"name": name, "language": {"code": wa.template_language}});
        if !ordered.is_empty() {
            let parameters: Vec<Value> = ordered
                .iter()
                .map(|v| {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    json!({"type": "text", "text": text})
                })
                .collect();
            template["components"] = json!([{"type": "body", "parameters": parameters}]);
        }
        return Ok((
            url,
            json!({"messaging_product": "whatsapp", "to": to, "type": "template", "template": template}),
        ));
    }
    let text = action.get("text").and_then(Value::as_str).unwrap_or("");
    if text.chars().count() > MAX_TEXT {
        return Err(Unsendable {
            code: "too_long",
            detail: format!(
                "{} characters; WhatsApp sends at most {MAX_TEXT}",
                text.chars().count()
            ),
        });
    }
    Ok((
        url,
        json!({"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": text}}),
    ))
}

/// WhatsApp's code for a free-form message outside the 24-hour window.
pub(crate) const OUTSIDE_WINDOW: &str = "131047";

/// A free-form send that offered a template (`or_template`), as that template: what is
/// resent once when WhatsApp finds the window closed. `None` when it offered none, or is
/// already a resend.
pub(crate) fn as_template(action: &Value) -> Option<Value> {
    let template = action.get("or_template")?.as_str()?;
    if action.get("resent_after").is_some() || action.get("type")?.as_str()? != "send" {
        return None;
    }
    let mut resend = action.as_object()?.clone();
    for key in ["text", "or_template", "or_params", "comment"] {
        resend.remove(key);
    }
    resend.insert("template".into(), Value::String(template.to_string()));
    resend.insert(
        "params".into(),
        action
            .get("or_params")
            .cloned()
            .unwrap_or_else(|| json!({})),
    );
    resend.insert(
        "resent_after".into(),
        Value::String(OUTSIDE_WINDOW.to_string()),
    );
    Some(Value::Object(resend))
}

/// WhatsApp's error codes that mean "slow down and try again".
pub(crate) fn throttled(code: i64) -> bool {
    matches!(code, 130429 | 131056 | 131000 | 131016 | 4 | 80007)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wa() -> WhatsApp {
        WhatsApp {
            phone_number_id: "106540352242922".into(),
            access_token: "t".into(),
            app_secret: "s".into(),
            verify_token: "v".into(),
            api_base: "http://127.0.0.1:1/v23.0".into(),
            template_language: "en".into(),
            limits: crate::config::Limits {
                rate: 80.0,
                per_recipient: std::time::Duration::from_secs(6),
            },
        }
    }

    #[test]
    fn a_batched_payload_gives_every_message_and_status_for_our_number_only() {
        let payload = json!({"object": "whatsapp_business_account", "entry": [
            {"id": "1", "changes": [{"field": "messages", "value": {
                "messaging_product": "whatsapp",
                "metadata": {"display_phone_number": "15550001", "phone_number_id": "106540352242922"},
                "contacts": [{"profile": {"name": "Ana Lopez"}, "wa_id": "40712345678"}],
                "messages": [
                    {"from": "40712345678", "id": "wamid.A", "timestamp": "1764583200", "type": "text", "text": {"body": "hi"}},
                    {"from": "40712345678", "id": "wamid.B", "timestamp": "1764583201", "type": "interactive",
                     "interactive": {"type": "button_reply", "button_reply": {"id": "size_help", "title": "Yes"}}},
                    {"from": "40712345678", "id": "wamid.C", "timestamp": "1764583202", "type": "sticker", "sticker": {"id": "x"}}
                ],
                "statuses": [{"id": "wamid.OUT", "status": "failed", "timestamp": "1764583203", "recipient_id": "40712345678",
                    "errors": [{"code": 131047, "title": "Re-engagement message"}]}]
            }}]},
            {"id": "2", "changes": [{"field": "messages", "value": {
                "metadata": {"phone_number_id": "999"},
                "messages": [{"from": "1", "id": "wamid.OTHER", "timestamp": "1764583200", "type": "text", "text": {"body": "not ours"}}]
            }}]}
        ]});
        let n = normalise(&payload, "106540352242922", "whatsapp");
        let events: Vec<Value> = n
            .events
            .iter()
            .map(|e| serde_json::from_str(e).unwrap_or_default())
            .collect();
        assert_eq!(
            events[0],
            json!({"id": "wa:wamid.A", "at": "2025-12-01T10:00:00.000Z", "contact": "whatsapp:40712345678",
                "channel": "whatsapp", "type": "message", "text": "hi", "profile": {"first_name": "Ana"}})
        );
        assert_eq!(events[1]["text"], "Yes");
        assert_eq!(events[1]["payload"], "size_help");
        assert_eq!(events.len(), 2);
        assert_eq!(n.ignored.len(), 1);
        assert!(n.ignored[0].1.contains("sticker"));
        assert_eq!(n.statuses[0].code.as_deref(), Some("131047"));
        assert_eq!(n.statuses[0].status, "failed");
    }

    #[test]
    fn a_template_send_lists_its_parameters_in_the_declared_order() {
        let mut templates = std::collections::BTreeMap::new();
        templates.insert(
            "cart_reminder".to_string(),
            Some(vec!["name".to_string(), "url".to_string()]),
        );
        let action = json!({"id": "x", "contact": "whatsapp:407", "type": "send",
            "template": "cart_reminder", "params": {"url": "https://a.example/c", "name": "Ana"}});
        let (url, body) = send_request(&wa(), &action, "whatsapp", &templates).expect("sendable");
        assert_eq!(url, "http://127.0.0.1:1/v23.0/106540352242922/messages");
        assert_eq!(
            body,
            json!({"messaging_product": "whatsapp", "to": "407", "type": "template", "template": {
                "name": "cart_reminder", "language": {"code": "en"},
                "components": [{"type": "body", "parameters": [
                    {"type": "text", "text": "Ana"}, {"type": "text", "text": "https://a.example/c"}]}]}})
        );
        let long =
            json!({"id": "y", "contact": "whatsapp:407", "type": "send", "text": "é".repeat(4097)});
        assert_eq!(
            send_request(&wa(), &long, "whatsapp", &templates).map_err(|e| e.code),
            Err("too_long")
        );
    }
}
