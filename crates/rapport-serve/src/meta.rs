//! Instagram and Messenger (with the Page's Facebook comments), through Meta's Graph API:
//! webhook payloads into the runtime's events, and actions into the calls that deliver
//! them (docs/channels.md).

use serde_json::{json, Value};

use crate::config::{Meta, MetaPlatform};
use crate::whatsapp::{Normalised, Status, Unsendable};

/// The longest text Messenger and Instagram send, in characters.
pub(crate) const MAX_TEXT: usize = 2000;

/// A time in milliseconds from a Meta timestamp: Messenger gives milliseconds, comment
/// webhooks seconds; a time no clock can show is `None`.
fn millis(v: Option<&Value>) -> Option<i64> {
    let n = match v? {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.parse::<i64>().ok()?,
        _ => return None,
    };
    let ms = if n.abs() >= 100_000_000_000 {
        n
    } else {
        n.checked_mul(1000)?
    };
    jiff::Timestamp::from_millisecond(ms).ok()?;
    Some(ms)
}

fn text_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl MetaPlatform {
    /// The `object` of this platform's webhooks.
    pub(crate) fn object(self) -> &'static str {
        match self {
            MetaPlatform::Instagram => "instagram",
            MetaPlatform::Messenger => "page",
        }
    }

    /// The prefix of event ids from this platform's messages.
    fn message_prefix(self) -> &'static str {
        match self {
            MetaPlatform::Instagram => "ig",
            MetaPlatform::Messenger => "fb",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            MetaPlatform::Instagram => "Instagram",
            MetaPlatform::Messenger => "Messenger",
        }
    }
}

/// Normalises the entries of an `instagram` or `page` payload addressed to the account
/// or Page of `meta`, for the channel named `channel`.
pub(crate) fn normalise(payload: &Value, meta: &Meta, channel: &str) -> Normalised {
    let mut out = Normalised::default();
    let entries = payload.get("entry").and_then(Value::as_array);
    for entry in entries.into_iter().flatten() {
        if text_of(entry.get("id")).as_deref() != Some(meta.id.as_str()) {
            continue;
        }
        for item in entry
            .get("messaging")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            messaging(item, meta, channel, &mut out);
        }
        if let Some(standby) = entry.get("standby").and_then(Value::as_array) {
            out.ignored.push((
                None,
                format!(
                    "{} standby message(s): another app owns these conversations (the handover protocol)",
                    standby.len()
                ),
            ));
        }
        for change in entry
            .get("changes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let field = change.get("field").and_then(Value::as_str).unwrap_or("");
            let value = change.get("value").unwrap_or(&Value::Null);
            match (meta.platform, field) {
                (MetaPlatform::Instagram, "comments" | "live_comments") => {
                    instagram_comment(value, entry.get("time"), meta, channel, &mut out)
                }
                // The dashboard's test button sends DMs in this form.
                (_, "messages") => messaging(value, meta, channel, &mut out),
                (MetaPlatform::Messenger, "feed") => facebook_feed(value, meta, channel, &mut out),
                _ => out.ignored.push((
                    None,
                    format!("a {} change of field `{field}`", meta.platform.name()),
                )),
            }
        }
    }
    out
}

/// One `messaging[]` item: a message, a postback, a delivery receipt, or something
/// Rapport does not act on.
fn messaging(item: &Value, meta: &Meta, channel: &str, out: &mut Normalised) {
    let sender = text_of(item.pointer("/sender/id"));
    let at = millis(item.get("timestamp"));
    let platform = meta.platform.name();
    if let Some(message) = item.get("message") {
        // The Page's or account's own messages come back as echoes.
        if message.get("is_echo").and_then(Value::as_bool) == Some(true)
            || sender.as_deref() == Some(meta.id.as_str())
        {
            return;
        }
        if message.get("is_deleted").and_then(Value::as_bool) == Some(true) {
            return;
        }
        let mid = message.get("mid").and_then(Value::as_str);
        let (Some(sender), Some(mid), Some(at)) = (sender, mid, at) else {
            out.ignored.push((
                None,
                format!("a {platform} message without sender, mid or timestamp"),
            ));
            return;
        };
        let contact = format!("{channel}:{sender}");
        let Some(text) = message.get("text").and_then(Value::as_str) else {
            out.ignored.push((
                Some(contact),
                format!(
                    "a {platform} message with no text (an attachment or a sticker; mid {mid})"
                ),
            ));
            return;
        };
        let id = format!("{}:{mid}", meta.platform.message_prefix());
        let payload = message.pointer("/quick_reply/payload");
        out.events
            .push(message_event(id, at, contact, channel, text, payload));
    } else if let Some(postback) = item.get("postback") {
        // A button the person tapped: the button's title is what they said.
        let title = postback.get("title").and_then(Value::as_str);
        let (Some(sender), Some(at), Some(title)) = (sender, at, title) else {
            out.ignored.push((
                None,
                format!("a {platform} postback without sender, timestamp or title"),
            ));
            return;
        };
        let id = match postback.get("mid").and_then(Value::as_str) {
            Some(mid) => format!("{}:{mid}", meta.platform.message_prefix()),
            None => format!("{}:postback:{sender}:{at}", meta.platform.message_prefix()),
        };
        let contact = format!("{channel}:{sender}");
        let payload = postback.get("payload");
        out.events
            .push(message_event(id, at, contact, channel, title, payload));
    } else if let Some(delivery) = item.get("delivery") {
        // Messenger's delivery receipts name the messages delivered.
        let at = at.or_else(|| millis(delivery.get("watermark")));
        let Some(at) = at else {
            return;
        };
        for mid in delivery
            .get("mids")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            out.statuses.push(Status {
                message_id: mid.to_string(),
                status: "delivered".into(),
                code: None,
                detail: None,
                at,
            });
        }
    } else if item.get("read").is_some() {
        // A read receipt names no message, only a time: the KPIs take reads from
        // WhatsApp's statuses.
    } else {
        let kind = item
            .as_object()
            .and_then(|o| {
                o.keys()
                    .find(|k| !matches!(k.as_str(), "sender" | "recipient" | "timestamp"))
                    .cloned()
            })
            .unwrap_or_else(|| "nothing".into());
        let contact = sender.map(|s| format!("{channel}:{s}"));
        out.ignored
            .push((contact, format!("a {platform} `{kind}` event")));
    }
}

/// An Instagram comment (`comments` or `live_comments`).
fn instagram_comment(
    value: &Value,
    entry_time: Option<&Value>,
    meta: &Meta,
    channel: &str,
    out: &mut Normalised,
) {
    let from = text_of(value.pointer("/from/id"));
    // The account's own replies come back as comments too.
    if from.as_deref() == Some(meta.id.as_str()) {
        return;
    }
    let id = text_of(value.get("id"));
    let text = value.get("text").and_then(Value::as_str);
    let at = millis(value.get("timestamp")).or_else(|| millis(entry_time));
    let (Some(from), Some(id), Some(text), Some(at)) = (from, id, text, at) else {
        out.ignored.push((
            None,
            "an Instagram comment without id, text, from or time".into(),
        ));
        return;
    };
    out.events.push(comment_event(
        "igc",
        &id,
        at,
        &format!("{channel}:{from}"),
        channel,
        text,
        value.pointer("/from/username").and_then(Value::as_str),
        text_of(value.pointer("/media/id")),
    ));
}

/// A change of the Page's feed: a new comment is a `comment`; posts, likes, edits and
/// removals are not acted on.
fn facebook_feed(value: &Value, meta: &Meta, channel: &str, out: &mut Normalised) {
    let item = value.get("item").and_then(Value::as_str).unwrap_or("");
    let verb = value.get("verb").and_then(Value::as_str).unwrap_or("");
    if item != "comment" || verb != "add" {
        out.ignored
            .push((None, format!("a Facebook feed change ({item} {verb})")));
        return;
    }
    let from = text_of(value.pointer("/from/id"));
    if from.as_deref() == Some(meta.id.as_str()) {
        return;
    }
    let id = text_of(value.get("comment_id"));
    let text = value.get("message").and_then(Value::as_str);
    let at = millis(value.get("created_time"));
    let (Some(from), Some(id), Some(text), Some(at)) = (from, id, text, at) else {
        out.ignored.push((
            None,
            "a Facebook comment without comment_id, message, from or created_time".into(),
        ));
        return;
    };
    out.events.push(comment_event(
        "fbc",
        &id,
        at,
        &format!("{channel}:{from}"),
        channel,
        text,
        value.pointer("/from/name").and_then(Value::as_str),
        text_of(value.get("post_id")),
    ));
}

/// A `message` event as a JSON line (`payload`: a quick reply's or a button's).
fn message_event(
    id: String,
    at: i64,
    contact: String,
    channel: &str,
    text: &str,
    payload: Option<&Value>,
) -> String {
    let mut event = json!({
        "id": id,
        "at": rapport_engine::format_time(at),
        "contact": contact,
        "channel": channel,
        "type": "message",
        "text": text,
    });
    if let Some(p) = payload.and_then(Value::as_str) {
        event["payload"] = Value::String(p.to_string());
    }
    event.to_string()
}

/// A `comment` event as a JSON line; its id is `PREFIX:<comment id>`.
#[allow(clippy::too_many_arguments)]
fn comment_event(
    prefix: &str,
    id: &str,
    at: i64,
    contact: &str,
    channel: &str,
    text: &str,
    author: Option<&str>,
    post: Option<String>,
) -> String {
    let mut event = json!({
        "id": format!("{prefix}:{id}"),
        "at": rapport_engine::format_time(at),
        "contact": contact,
        "channel": channel,
        "type": "comment",
        "comment": id,
        "text": text,
    });
    if let Some(a) = author {
        event["author"] = Value::String(a.to_string());
    }
    if let Some(p) = post {
        event["post"] = Value::String(p);
    }
    event.to_string()
}

/// The URL and JSON body of the call that delivers a `send`, `reply` or `hide`.
pub(crate) fn request(
    meta: &Meta,
    kind: &str,
    action: &Value,
    channel: &str,
) -> Result<(String, Value), Unsendable> {
    let text = action.get("text").and_then(Value::as_str);
    let comment = action.get("comment").and_then(Value::as_str);
    // A message; a public reply (an Instagram comment takes 2,200 characters, a
    // Facebook comment 8,000).
    let too_long = |t: &str, max: usize| {
        let n = t.chars().count();
        (n > max).then(|| Unsendable {
            code: "too_long",
            detail: format!(
                "{n} characters; {} takes at most {max}",
                meta.platform.name()
            ),
        })
    };
    let max_reply = match meta.platform {
        MetaPlatform::Instagram => 2200,
        MetaPlatform::Messenger => 8000,
    };
    let need_comment = || {
        comment.ok_or_else(|| Unsendable {
            code: "no_comment",
            detail: format!("a `{kind}` with no comment id"),
        })
    };
    match kind {
        "send" => {
            if action.get("template").is_some() {
                return Err(Unsendable {
                    code: "unsupported",
                    detail: format!(
                        "{} has no message templates; give this channel no window in rapport.yaml, or no `or template`",
                        meta.platform.name()
                    ),
                });
            }
            let text = text.unwrap_or("");
            if let Some(e) = too_long(text, MAX_TEXT) {
                return Err(e);
            }
            let url = format!("{}/{}/messages", meta.api_base, meta.id);
            // A private reply goes to the comment, not to a person.
            if let Some(c) = comment {
                return Ok((
                    url,
                    json!({"recipient": {"comment_id": c}, "message": {"text": text}}),
                ));
            }
            let contact = action.get("contact").and_then(Value::as_str).unwrap_or("");
            let to = contact
                .strip_prefix(channel)
                .and_then(|r| r.strip_prefix(':'))
                .filter(|t| !t.is_empty())
                .ok_or_else(|| Unsendable {
                    code: "no_recipient",
                    detail: format!("`{contact}` is not a contact of channel `{channel}`"),
                })?;
            Ok((
                url,
                json!({"recipient": {"id": to}, "messaging_type": "RESPONSE", "message": {"text": text}}),
            ))
        }
        "reply" => {
            let c = need_comment()?;
            let text = text.unwrap_or("");
            if let Some(e) = too_long(text, max_reply) {
                return Err(e);
            }
            let edge = match meta.platform {
                MetaPlatform::Instagram => "replies",
                MetaPlatform::Messenger => "comments",
            };
            Ok((
                format!("{}/{c}/{edge}", meta.api_base),
                json!({ "message": text }),
            ))
        }
        "hide" => {
            let c = need_comment()?;
            let query = match meta.platform {
                MetaPlatform::Instagram => "hide=true",
                MetaPlatform::Messenger => "is_hidden=true",
            };
            Ok((format!("{}/{c}?{query}", meta.api_base), json!({})))
        }
        other => Err(Unsendable {
            code: "unsupported",
            detail: format!("{} has no `{other}`", meta.platform.name()),
        }),
    }
}

/// Graph API error codes that mean "slow down and try again": 4 (app), 17 (user),
/// 32 (page), 613 (calls to this API), 80002 to 80006 (Instagram and Messenger
/// platform limits), and 1 and 2 (a temporary problem on Meta's side).
pub(crate) fn throttled(code: i64) -> bool {
    matches!(code, 1 | 2 | 4 | 17 | 32 | 613 | 80002..=80006)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Limits;

    fn meta(platform: MetaPlatform) -> Meta {
        Meta {
            platform,
            id: "1784".into(),
            access_token: "t".into(),
            app_secret: "s".into(),
            verify_token: "v".into(),
            api_base: "http://127.0.0.1:1/v23.0".into(),
            limits: Limits {
                rate: 100.0,
                per_recipient: std::time::Duration::ZERO,
            },
        }
    }

    fn events(n: &Normalised) -> Vec<Value> {
        n.events
            .iter()
            .map(|e| serde_json::from_str(e).unwrap_or_default())
            .collect()
    }

    #[test]
    fn echoes_and_other_accounts_are_skipped_and_a_postback_is_a_message() {
        let payload = json!({"object": "instagram", "entry": [
            {"id": "1784", "time": 1764583200000i64, "messaging": [
                {"sender": {"id": "555"}, "recipient": {"id": "1784"}, "timestamp": 1764583200000i64,
                 "message": {"mid": "m1", "text": "hi", "quick_reply": {"payload": "P"}}},
                {"sender": {"id": "1784"}, "recipient": {"id": "555"}, "timestamp": 1764583201000i64,
                 "message": {"mid": "m2", "text": "our reply", "is_echo": true}},
                {"sender": {"id": "555"}, "recipient": {"id": "1784"}, "timestamp": 1764583202000i64,
                 "postback": {"mid": "m3", "title": "Sizes", "payload": "SIZES"}}
            ]},
            {"id": "9999", "messaging": [
                {"sender": {"id": "1"}, "timestamp": 1764583200000i64, "message": {"mid": "x", "text": "not ours"}}
            ]}
        ]});
        let n = normalise(&payload, &meta(MetaPlatform::Instagram), "instagram");
        let e = events(&n);
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            e[0],
            json!({"id": "ig:m1", "at": "2025-12-01T10:00:00.000Z", "contact": "instagram:555",
                "channel": "instagram", "type": "message", "text": "hi", "payload": "P"})
        );
        assert_eq!(e[1]["text"], "Sizes");
        assert_eq!(e[1]["payload"], "SIZES");
        assert!(n.ignored.is_empty(), "{:?}", n.ignored);
    }

    #[test]
    fn comments_on_both_platforms_use_their_own_field_names() {
        let ig = json!({"object": "instagram", "entry": [{"id": "1784", "time": 1764583200,
            "changes": [{"field": "comments", "value": {"id": "179", "text": "price?",
                "from": {"id": "555", "username": "ana.k"}, "media": {"id": "m-9", "media_product_type": "FEED"}}},
                {"field": "comments", "value": {"id": "180", "text": "our own reply",
                "from": {"id": "1784", "username": "acme"}, "media": {"id": "m-9"}}}]}]});
        let e = events(&normalise(&ig, &meta(MetaPlatform::Instagram), "instagram"));
        assert_eq!(
            e,
            vec![
                json!({"id": "igc:179", "at": "2025-12-01T10:00:00.000Z", "contact": "instagram:555",
                "channel": "instagram", "type": "comment", "comment": "179", "text": "price?",
                "author": "ana.k", "post": "m-9"})
            ]
        );
        let fb = json!({"object": "page", "entry": [{"id": "1784", "time": 1764583200,
            "changes": [{"field": "feed", "value": {"item": "comment", "verb": "add",
                "comment_id": "p_1", "post_id": "1784_2", "from": {"id": "777", "name": "Ana Lopez"},
                "message": "price?", "created_time": 1764583200}},
                {"field": "feed", "value": {"item": "reaction", "verb": "add", "from": {"id": "777"}}}]}]});
        let n = normalise(&fb, &meta(MetaPlatform::Messenger), "messenger");
        assert_eq!(
            events(&n),
            vec![
                json!({"id": "fbc:p_1", "at": "2025-12-01T10:00:00.000Z", "contact": "messenger:777",
                "channel": "messenger", "type": "comment", "comment": "p_1", "text": "price?",
                "author": "Ana Lopez", "post": "1784_2"})
            ]
        );
        assert_eq!(n.ignored.len(), 1);
    }

    #[test]
    fn each_action_becomes_the_platform_call() {
        let ig = meta(MetaPlatform::Instagram);
        let fb = meta(MetaPlatform::Messenger);
        let send = json!({"type": "send", "contact": "instagram:555", "text": "hi"});
        assert_eq!(
            request(&ig, "send", &send, "instagram").map_err(|e| e.code),
            Ok((
                "http://127.0.0.1:1/v23.0/1784/messages".to_string(),
                json!({"recipient": {"id": "555"}, "messaging_type": "RESPONSE", "message": {"text": "hi"}})
            ))
        );
        let private =
            json!({"type": "send", "contact": "instagram:555", "text": "hi", "comment": "179"});
        assert_eq!(
            request(&ig, "send", &private, "instagram").map(|r| r.1),
            Ok(json!({"recipient": {"comment_id": "179"}, "message": {"text": "hi"}}))
        );
        let reply = json!({"type": "reply", "comment": "179", "text": "see DMs"});
        assert_eq!(
            request(&ig, "reply", &reply, "instagram").map(|r| r.0),
            Ok("http://127.0.0.1:1/v23.0/179/replies".to_string())
        );
        assert_eq!(
            request(&fb, "reply", &reply, "messenger").map(|r| r.0),
            Ok("http://127.0.0.1:1/v23.0/179/comments".to_string())
        );
        let hide = json!({"type": "hide", "comment": "179"});
        assert_eq!(
            request(&ig, "hide", &hide, "instagram").map(|r| r.0),
            Ok("http://127.0.0.1:1/v23.0/179?hide=true".to_string())
        );
        assert_eq!(
            request(&fb, "hide", &hide, "messenger").map(|r| r.0),
            Ok("http://127.0.0.1:1/v23.0/179?is_hidden=true".to_string())
        );
        let long = json!({"type": "send", "contact": "messenger:1", "text": "x".repeat(2001)});
        assert_eq!(
            request(&fb, "send", &long, "messenger").map_err(|e| e.code),
            Err("too_long")
        );
    }
}
