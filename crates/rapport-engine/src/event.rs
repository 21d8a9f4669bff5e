//! Input events (docs/runtime.md): one JSON object per line, validated into typed
//! events. A line that does not validate is rejected with a reason.

use serde::Deserialize;
use serde_json::{Map, Value};

use rapport_bundle::Settings;

/// Milliseconds since the Unix epoch: the engine's clock is the events' `at`.
pub type Millis = i64;

/// The token a message's `suggestion` (a reply drafted upstream) is read by, until the
/// contact's next message.
pub const SUGGESTED_REPLY: &str = "suggested_reply";

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
        /// The profile fields sent with the message, in the order written.
        profile: Vec<(String, Value)>,
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
    /// A person put back a comment the automation hid (`restored`): the hide was a
    /// false positive, counted by the report.
    Restored {
        comment: String,
        agent: Option<String>,
    },
    /// A person's decision on a draft: `approved` (sent, as `text` when they edited it)
    /// or `rejected`.
    Decision {
        approved: bool,
        draft: String,
        text: Option<String>,
        agent: Option<String>,
    },
    Tick,
    Operator {
        action: OperatorAction,
        flow: String,
        actor: Option<String>,
    },
    /// What a platform or sink said about an action the engine released: the outcome of
    /// the host's call, or a status webhook (`sent`, `delivered`, `read`, `failed`).
    Delivery {
        /// The action's id.
        action: String,
        status: DeliveryStatus,
        /// The platform's error code (`131047`, `429`, `too_long`…), for `failed`.
        code: Option<String>,
        /// The platform's message id or error text.
        detail: Option<String>,
        /// What the outcome means for the contact, as the host read the platform's code.
        effect: Option<DeliveryEffect>,
    },
}

/// What a platform's answer means for the contact (the host maps platform codes to it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryEffect {
    /// The person cannot or will not be messaged (blocked the bot): recorded as an
    /// opt-out, with no confirmation (it could not be delivered).
    OptedOut,
    /// The person stopped marketing messages on the platform: a marketing consent
    /// withdrawal, source `platform`.
    MarketingWithdrawn,
}

impl Body {
    /// The event's `type`, as written in JSON.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Message { .. } => "message",
            Body::Comment { .. } => "comment",
            Body::Consent { .. } => "consent",
            Body::External { .. } => "event",
            Body::Agent { .. } | Body::Decision { .. } | Body::Restored { .. } => "agent",
            Body::Tick => "tick",
            Body::Operator { .. } => "operator",
            Body::Delivery { .. } => "delivery",
        }
    }
}

/// The outcome of delivering an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Accepted by the platform (its API answered 2xx).
    Sent,
    Delivered,
    Read,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Read => "read",
            DeliveryStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorAction {
    Promote,
    Halt,
    Resume,
}

/// A JSON object's fields as pairs, in order: a message carries a profile field or two, and
/// a tree map would cost an allocation of several hundred bytes for each message.
struct Pairs(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = Pairs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Pairs, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0).min(16));
                while let Some(field) = map.next_entry()? {
                    fields.push(field);
                }
                Ok(Pairs(fields))
            }
        }
        d.deserialize_map(Fields)
    }
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
    profile: Option<Pairs>,
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
    status: Option<String>,
    code: Option<Value>,
    detail: Option<String>,
    effect: Option<String>,
    draft: Option<String>,
    suggestion: Option<String>,
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

/// [`format_time`] as bytes into `out`, for every action and audit record: the date part comes from
/// jiff once per day (kept per thread), the time of day is plain arithmetic.
pub(crate) fn write_time(at: Millis, out: &mut Vec<u8>) {
    const DAY: Millis = 86_400_000;
    if jiff::Timestamp::from_millisecond(at).is_err() {
        out.extend_from_slice(format_time(at).as_bytes());
        return;
    }
    thread_local! {
        static DATE: std::cell::RefCell<(Millis, String)> =
            const { std::cell::RefCell::new((Millis::MIN, String::new())) };
    }
    let day = at.div_euclid(DAY);
    let rem = at.rem_euclid(DAY);
    DATE.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != day {
            // The day's date as `at` itself prints it (the day's midnight can be out of
            // range on the first day there is).
            let full = format_time(at);
            let prefix = full.find('T').map_or(full.as_str(), |t| &full[..=t]);
            *cached = (day, prefix.to_string());
        }
        out.extend_from_slice(cached.1.as_bytes());
    });
    let fields = [
        (rem / 3_600_000, 2),
        (rem / 60_000 % 60, 2),
        (rem / 1000 % 60, 2),
        (rem % 1000, 3),
    ];
    for (i, (value, width)) in fields.into_iter().enumerate() {
        if i > 0 {
            out.push(if i == 3 { b'.' } else { b':' });
        }
        let mut div = if width == 3 { 100 } else { 10 };
        while div > 0 {
            out.push(b'0' + (value / div % 10) as u8);
            div /= 10;
        }
    }
    out.push(b'Z');
}

/// The text of one input line as read (with or without its line break): as it is when it
/// is UTF-8 (checked with the fast validator), else with U+FFFD for the bytes that are not,
/// so a damaged line is judged, and rejected, like any other.
pub fn line_text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    const BREAK: [char; 2] = ['\n', '\r'];
    match std::str::from_utf8(bytes) {
        Ok(text) => std::borrow::Cow::Borrowed(text.trim_end_matches(BREAK)),
        Err(_) => std::borrow::Cow::Owned(
            String::from_utf8_lossy(bytes)
                .trim_end_matches(BREAK)
                .into(),
        ),
    }
}

/// Decodes and validates one line.
pub fn decode(line: &str, settings: &Settings) -> Result<Event, Rejected> {
    let mut raw: Raw = serde_json::from_str(line)
        .map_err(|e| reject(None, None, format!("not a JSON event: {e}")))?;
    // Ids are strings: the number 42 and the string "42" would otherwise be one id.
    let id = match &mut raw.id {
        Some(Value::String(s)) if !s.is_empty() => std::mem::take(s),
        Some(Value::Number(n)) => {
            return Err(reject(
                None,
                raw.contact.as_deref(),
                format!("`id` must be a string: write \"{n}\", not {n}"),
            ))
        }
        None | Some(Value::Null) => {
            return Err(reject(None, raw.contact.as_deref(), "missing `id`"))
        }
        Some(_) => {
            return Err(reject(
                None,
                raw.contact.as_deref(),
                "`id` must be a non-empty string",
            ))
        }
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
                profile: {
                    let mut profile = raw.profile.take().map(|p| p.0).unwrap_or_default();
                    // A reply drafted upstream: `{suggested_reply}` until the next message.
                    if let Some(s) = raw.suggestion.take() {
                        profile.push((SUGGESTED_REPLY.to_string(), Value::String(s)));
                    }
                    profile
                },
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
            match raw.action.as_deref() {
                Some(what @ ("released" | "replied")) => Body::Agent {
                    released: what == "released",
                    agent: raw.agent.take(),
                },
                Some("restored") => {
                    let comment = match &mut raw.comment {
                        Some(Value::String(s)) if !s.is_empty() => std::mem::take(s),
                        Some(Value::Number(n)) => n.to_string(),
                        _ => {
                            return Err(reject(
                                rid,
                                contact,
                                "an `agent` event `restored` needs `comment`: the id of the comment put back",
                            ))
                        }
                    };
                    Body::Restored {
                        comment,
                        agent: raw.agent.take(),
                    }
                }
                Some(decision @ ("approved" | "rejected")) => {
                    let approved = decision == "approved";
                    let draft = raw.draft.take().filter(|d| !d.is_empty()).ok_or_else(|| {
                        reject(
                            rid,
                            contact,
                            format!(
                                "an `agent` event `{decision}` needs `draft`: the id of the draft action"
                            ),
                        )
                    })?;
                    let text = if approved { raw.text.take() } else { None };
                    if text.as_deref().is_some_and(|t| t.trim().is_empty()) {
                        return Err(reject(
                            rid,
                            contact,
                            "an `approved` event's `text` is empty: leave `text` out to send the draft as it is",
                        ));
                    }
                    Body::Decision {
                        approved,
                        draft,
                        text,
                        agent: raw.agent.take(),
                    }
                }
                _ => {
                    return Err(reject(
                        rid,
                        contact,
                        "an `agent` event needs `action`: released, replied, approved, rejected or restored",
                    ))
                }
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
        "delivery" => {
            let status = match raw.status.as_deref() {
                Some("sent") => DeliveryStatus::Sent,
                Some("delivered") => DeliveryStatus::Delivered,
                Some("read") => DeliveryStatus::Read,
                Some("failed") => DeliveryStatus::Failed,
                _ => {
                    return Err(reject(
                        rid,
                        contact,
                        "a `delivery` event needs `status`: sent, delivered, read or failed",
                    ))
                }
            };
            let code = match raw.code.take() {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(_) => {
                    return Err(reject(
                        rid,
                        contact,
                        "a `delivery` event's `code` must be a string or a number",
                    ))
                }
            };
            let effect = match raw.effect.as_deref() {
                None => None,
                Some("opted_out") => Some(DeliveryEffect::OptedOut),
                Some("marketing_withdrawn") => Some(DeliveryEffect::MarketingWithdrawn),
                Some(other) => {
                    return Err(reject(
                        rid,
                        contact,
                        format!(
                            "a `delivery` event's `effect` is opted_out or marketing_withdrawn, not `{other}`"
                        ),
                    ))
                }
            };
            if effect.is_some() && contact.is_none_or(str::is_empty) {
                return Err(reject(
                    rid,
                    contact,
                    "a `delivery` event with an `effect` needs `contact`",
                ));
            }
            Body::Delivery {
                effect,
                action: raw.action.take().filter(|a| !a.is_empty()).ok_or_else(|| {
                    reject(
                        rid,
                        contact,
                        "a `delivery` event needs `action` (the action id)",
                    )
                })?,
                status,
                code,
                detail: raw.detail.take(),
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
    // Ticks and operator events belong to no contact, whatever the line says: they reach
    // every worker of a sharded host, and their ids are deduplicated as no contact's.
    let contact = match body {
        Body::Tick | Body::Operator { .. } => None,
        _ => raw.contact,
    };
    Ok(Event {
        id,
        at,
        contact,
        channel: raw.channel,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        let bundle: rapport_bundle::Bundle = serde_json::from_value(serde_json::json!({
            "format": 1, "flows": [], "settings": {"brand": "b", "vars": {}, "channels": {},
            "templates": {}, "queues": [], "profile": {}, "events": {}, "disclosure": "",
            "opt_out": {"keywords": [], "confirm": "", "resubscribe": [], "resubscribe_confirm": "",
                "help": [], "help_reply": "", "footer": "", "ambiguous": [], "clarify": ""},
            "rate_limit": null, "quiet_hours": null, "escalation": null,
            "retention": {"transcripts": 1, "transactional": 1}, "dedupe_window": 60}}))
        .expect("a bundle");
        bundle.settings
    }

    #[test]
    fn a_delivery_event_names_its_action_and_status_and_keeps_its_contact() {
        let line = r#"{"id":"dlv:a1","at":"2026-12-01T10:00:00Z","type":"delivery","contact":"whatsapp:1","action":"a1","status":"failed","code":131047,"detail":"Re-engagement message"}"#;
        let e = decode(line, &settings()).expect("valid");
        assert_eq!(e.contact.as_deref(), Some("whatsapp:1"));
        assert_eq!(
            e.body,
            Body::Delivery {
                action: "a1".into(),
                status: DeliveryStatus::Failed,
                code: Some("131047".into()),
                detail: Some("Re-engagement message".into()),
                effect: None,
            }
        );
        for (bad, why) in [
            (
                r#"{"id":"x","at":"2026-12-01T10:00:00Z","type":"delivery","action":"a1","status":"lost"}"#,
                "needs `status`",
            ),
            (
                r#"{"id":"x","at":"2026-12-01T10:00:00Z","type":"delivery","status":"sent"}"#,
                "needs `action`",
            ),
            (
                r#"{"id":"x","at":"2026-12-01T10:00:00Z","type":"delivery","action":"a","status":"sent","code":[1]}"#,
                "`code` must be",
            ),
        ] {
            let r = decode(bad, &settings()).expect_err("invalid");
            assert!(r.reason.contains(why), "{}", r.reason);
        }
    }

    #[test]
    fn written_times_match_the_full_formatter() {
        let mut samples = vec![0, 1, 999, 86_399_999, 86_400_000, -1, -86_400_001];
        // Around today, leap days, far past and far future, with odd milliseconds.
        let mut t: Millis = -62_135_596_800_000; // 0001-01-01
        while t < 253_402_300_799_000 {
            samples.push(t);
            t += 7_777_777_777 + 13;
        }
        samples.push(1_764_000_000_123);
        samples.push(Millis::MAX);
        samples.push(Millis::MIN);
        // The first and last days jiff has, whose midnights are out of range.
        let first = jiff::Timestamp::MIN.as_millisecond();
        let last = jiff::Timestamp::MAX.as_millisecond();
        samples.extend([first, first + 1, first + 3_600_000, last, last - 1]);
        samples.push(951_782_400_000 + 86_399_999); // 2000-02-29T23:59:59.999Z
        for at in samples {
            let mut out = Vec::new();
            write_time(at, &mut out);
            assert_eq!(String::from_utf8_lossy(&out), format_time(at), "at {at}");
        }
    }
}
