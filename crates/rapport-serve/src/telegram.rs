//! The Telegram Bot API: updates into the runtime's events, and sends into `sendMessage`
//! calls (docs/channels.md, "Telegram").

use serde_json::{json, Value};

use crate::config::Telegram;
use crate::whatsapp::Unsendable;

/// What one update holds: an event (JSON line), or what could not be understood.
#[derive(Debug, PartialEq)]
pub(crate) enum Update {
    Event {
        line: String,
        contact: String,
    },
    Ignored {
        contact: Option<String>,
        what: String,
    },
}

/// Normalises an update for the channel named `channel`.
pub(crate) fn normalise(update: &Value, channel: &str) -> Update {
    let Some(update_id) = update.get("update_id").and_then(Value::as_i64) else {
        return Update::Ignored {
            contact: None,
            what: "a Telegram update without update_id".into(),
        };
    };
    let Some(message) = update.get("message") else {
        let kind = update
            .as_object()
            .and_then(|o| o.keys().find(|k| *k != "update_id").cloned())
            .unwrap_or_else(|| "nothing".into());
        return Update::Ignored {
            contact: None,
            what: format!("a Telegram update of kind `{kind}` (update {update_id})"),
        };
    };
    let chat = message.pointer("/chat/id").and_then(Value::as_i64);
    let at = message
        .get("date")
        .and_then(Value::as_i64)
        .filter(|d| jiff::Timestamp::from_second(*d).is_ok())
        .and_then(|d| d.checked_mul(1000));
    let (Some(chat), Some(at)) = (chat, at) else {
        return Update::Ignored {
            contact: None,
            what: format!("a Telegram message without chat or date (update {update_id})"),
        };
    };
    let contact = format!("{channel}:{chat}");
    let Some(text) = message.get("text").and_then(Value::as_str) else {
        return Update::Ignored {
            contact: Some(contact),
            what: format!("a Telegram message with no text (update {update_id})"),
        };
    };
    let mut event = json!({
        "id": format!("tg:{update_id}"),
        "at": rapport_engine::format_time(at),
        "contact": contact,
        "channel": channel,
        "type": "message",
        "text": text,
    });
    if let Some(first) = message
        .pointer("/from/first_name")
        .and_then(Value::as_str)
        .filter(|f| !f.is_empty())
    {
        event["profile"] = json!({ "first_name": first });
    }
    Update::Event {
        line: event.to_string(),
        contact,
    }
}

/// The longest text Telegram sends, in characters.
const MAX_TEXT: usize = 4096;

/// The URL and JSON body of the `sendMessage` call for a `send` action.
pub(crate) fn send_request(
    tg: &Telegram,
    action: &Value,
    channel: &str,
) -> Result<(String, Value), Unsendable> {
    let contact = action.get("contact").and_then(Value::as_str).unwrap_or("");
    let chat = contact
        .strip_prefix(channel)
        .and_then(|r| r.strip_prefix(':'))
        .and_then(|c| c.parse::<i64>().ok())
        .ok_or_else(|| Unsendable {
            code: "no_recipient",
            detail: format!("`{contact}` is not a Telegram chat of channel `{channel}`"),
        })?;
    // Telegram has no templates and no messaging window: the text goes as it is.
    let Some(text) = action.get("text").and_then(Value::as_str) else {
        return Err(Unsendable {
            code: "unsupported",
            detail: "a send with no text (Telegram has no templates)".into(),
        });
    };
    if text.chars().count() > MAX_TEXT {
        return Err(Unsendable {
            code: "too_long",
            detail: format!(
                "{} characters; Telegram sends at most {MAX_TEXT}",
                text.chars().count()
            ),
        });
    }
    Ok((
        format!("{}/bot{}/sendMessage", tg.api_base, tg.bot_token),
        json!({"chat_id": chat, "text": text}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_message_becomes_a_message_event_and_a_sticker_is_ignored() {
        let update = json!({"update_id": 10001, "message": {"message_id": 7,
            "from": {"id": 42, "is_bot": false, "first_name": "Ana", "language_code": "en"},
            "chat": {"id": 42, "first_name": "Ana", "type": "private"},
            "date": 1764583200, "text": "hi"}});
        let Update::Event { line, contact } = normalise(&update, "telegram") else {
            panic!("an event");
        };
        assert_eq!(contact, "telegram:42");
        assert_eq!(
            serde_json::from_str::<Value>(&line).unwrap_or_default(),
            json!({"id": "tg:10001", "at": "2025-12-01T10:00:00.000Z", "contact": "telegram:42",
                "channel": "telegram", "type": "message", "text": "hi", "profile": {"first_name": "Ana"}})
        );
        let sticker = json!({"update_id": 10002, "message": {"message_id": 8, "chat": {"id": 42},
            "date": 1764583201, "sticker": {"file_id": "x"}}});
        assert!(matches!(
            normalise(&sticker, "telegram"),
            Update::Ignored {
                contact: Some(_),
                ..
            }
        ));
        let edited = json!({"update_id": 10003, "edited_message": {}});
        let Update::Ignored { what, .. } = normalise(&edited, "telegram") else {
            panic!("ignored");
        };
        assert!(what.contains("edited_message"), "{what}");
    }
}
