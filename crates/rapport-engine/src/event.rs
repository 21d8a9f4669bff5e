//! Input events (design section 6.1): one JSON object per line, validated into typed
//! events. A line that does not validate is rejected with a reason (Appendix A.18).

use serde::Deserialize;
use serde_json::{Map, Value};

use rapport_bundle::Settings;

/// Milliseconds since the Unix epoch: the engine's clock is the events' `at`.
pub type Millis = i64;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub at: Millis,
    pub contact: Option<String>,
    pub channel: Option<String>,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Message {
        text: String,
        profile: Map<String, Value>,
        intent: Option<String>,
        sentiment: Option<f64>,
    },
    Comment {
        comment: String,
        text: String,
        post: Option<String>,
        author: Option<String>,
        intent: Option<String>,
        sentiment: Option<f64>,
    },
    Consent {
        purpose: String,
        granted: bool,
        source: Option<String>,
        wording: Option<String>,
    },
    External {
        name: String,
        data: Map<String, Value>,
    },
    Agent {
        released: bool,
        agent: Option<String>,
    },
    Tick,
    Operator {
        action: OperatorAction,
        flow: String,
        actor: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAction {
    Promote,
    Halt,
    Resume,
}

/// The line as written, before validation.
#[derive(Deserialize)]
struct Raw {
    id: Option<Value>,
    at: Option<String>,
    contact: Option<String>,
    channel: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    profile: Option<Map<String, Value>>,
    intent: Option<String>,
    sentiment: Option<f64>,
    comment: Option<Value>,
    post: Option<String>,
    author: Option<String>,
    purpose: Option<String>,
    granted: Option<bool>,
    source: Option<String>,
    wording: Option<String>,
    name: Option<String>,
    data: Option<Map<String, Value>>,
    action: Option<String>,
    agent: Option<String>,
    flow: Option<String>,
    actor: Option<String>,
}

/// Why a line was rejected, in words for stderr and the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub reason: String,
    /// The event id, when the line had one.
    pub id: Option<String>,
    pub contact: Option<String>,
}

fn reject(raw_id: Option<&str>, contact: Option<&str>, reason: impl Into<String>) -> Rejected {
    Rejected {
        reason: reason.into(),
        id: raw_id.map(str::to_string),
        contact: contact.map(str::to_string),
    }
}

/// Parses an RFC 3339 time to milliseconds.
pub fn parse_time(text: &str) -> Option<Millis> {
    let ts: jiff::Timestamp = text.parse().ok()?;
    Some(ts.as_millisecond())
}

/// `2026-11-24T10:00:00.000Z`.
pub fn format_time(at: Millis) -> String {
    match jiff::Timestamp::from_millisecond(at) {
        Ok(ts) => format!("{ts:.3}"),
        Err(_) => String::from("1970-01-01T00:00:00.000Z"),
    }
}

/// Decodes and validates one line.
pub fn decode(line: &str, settings: &Settings) -> Result<Event, Rejected> {
    let mut raw: Raw = serde_json::from_str(line)
        .map_err(|e| reject(None, None, format!("not a JSON event: {e}")))?;
    let id = match &mut raw.id {
        Some(Value::String(s)) if !s.is_empty() => std::mem::take(s),
        Some(Value::Number(n)) => n.to_string(),
        _ => return Err(reject(None, raw.contact.as_deref(), "missing `id`")),
    };
    let rid = Some(id.as_str());
    let contact = raw.contact.as_deref();
    let at_text = raw
        .at
        .as_deref()
        .ok_or_else(|| reject(rid, contact, "missing `at`"))?;
    let at = parse_time(at_text).ok_or_else(|| {
        reject(
            rid,
            contact,
            format!("`at` is not an RFC 3339 time: {at_text:?}"),
        )
    })?;
    let kind = raw
        .kind
        .as_deref()
        .ok_or_else(|| reject(rid, contact, "missing `type`"))?;
    let need_contact = |what: &str| -> Result<(), Rejected> {
        match contact {
            Some(c) if !c.is_empty() => Ok(()),
            _ => Err(reject(
                rid,
                contact,
                format!("a `{what}` event needs `contact`"),
            )),
        }
    };
    let body = match kind {
        "message" => {
            need_contact("message")?;
            Body::Message {
                text: raw
                    .text
                    .take()
                    .ok_or_else(|| reject(rid, contact, "a `message` event needs `text`"))?,
                profile: raw.profile.take().unwrap_or_default(),
                intent: raw.intent.take(),
                sentiment: raw.sentiment,
            }
        }
        "comment" => {
            need_contact("comment")?;
            let comment = match &mut raw.comment {
                Some(Value::String(s)) => std::mem::take(s),
                Some(Value::Number(n)) => n.to_string(),
                _ => {
                    return Err(reject(
                        rid,
                        contact,
                        "a `comment` event needs `comment` (the comment id)",
                    ))
                }
            };
            Body::Comment {
                comment,
                text: raw
                    .text
                    .take()
                    .ok_or_else(|| reject(rid, contact, "a `comment` event needs `text`"))?,
                post: raw.post.take(),
                author: raw.author.take(),
                intent: raw.intent.take(),
                sentiment: raw.sentiment,
            }
        }
        "consent" => {
            need_contact("consent")?;
            Body::Consent {
                purpose: raw
                    .purpose
                    .take()
                    .ok_or_else(|| reject(rid, contact, "a `consent` event needs `purpose`"))?,
                granted: raw
                    .granted
                    .ok_or_else(|| reject(rid, contact, "a `consent` event needs `granted`"))?,
                source: raw.source.take(),
                wording: raw.wording.take(),
            }
        }
        "event" => {
            need_contact("event")?;
            let name = raw
                .name
                .take()
                .ok_or_else(|| reject(rid, contact, "an `event` event needs `name`"))?;
            let data = raw.data.take().unwrap_or_default();
            if let Some(fields) = settings.events.get(&name) {
                for (field, ty) in fields {
                    let ok = match (data.get(field), ty.as_str()) {
                        (None, _) | (Some(Value::Null), _) => {
                            return Err(reject(
                                rid,
                                contact,
                                format!("`{name}` needs the field `{field}`"),
                            ))
                        }
                        (Some(Value::String(_)), "string") => true,
                        (Some(Value::Number(_)), "number") => true,
                        (Some(Value::Bool(_)), "boolean") => true,
                        _ => false,
                    };
                    if !ok {
                        return Err(reject(
                            rid,
                            contact,
                            format!("`{name}` field `{field}` must be a {ty}"),
                        ));
                    }
                }
            }
            Body::External { name, data }
        }
        "agent" => {
            need_contact("agent")?;
            let released = match raw.action.as_deref() {
                Some("released") => true,
                Some("replied") => false,
                _ => {
                    return Err(reject(
                        rid,
                        contact,
                        "an `agent` event needs `action`: released or replied",
                    ))
                }
            };
            Body::Agent {
                released,
                agent: raw.agent.take(),
            }
        }
        "tick" => Body::Tick,
        "operator" => {
            let action = match raw.action.as_deref() {
                Some("promote") => OperatorAction::Promote,
                Some("halt") => OperatorAction::Halt,
                Some("resume") => OperatorAction::Resume,
                _ => {
                    return Err(reject(
                        rid,
                        contact,
                        "an `operator` event needs `action`: promote, halt or resume",
                    ))
                }
            };
            Body::Operator {
                action,
                flow: raw
                    .flow
                    .take()
                    .ok_or_else(|| reject(rid, contact, "an `operator` event needs `flow`"))?,
                actor: raw.actor.take(),
            }
        }
        other => {
            return Err(reject(
                rid,
                contact,
                format!("unknown event type `{other}`"),
            ))
        }
    };
    Ok(Event {
        id,
        at,
        contact: raw.contact,
        channel: raw.channel,
        body,
    })
}
