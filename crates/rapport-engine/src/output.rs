//! What the engine emits: actions for the channel adapters and audit records for the
//! trail. Both are written as JSON lines by the host.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::event::{write_time, Millis};

/// An action (docs/runtime.md). Fields that do not apply are left out. Names the
/// engine repeats on many actions (channel, flow, version, state, cause) are shared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    pub id: String,
    #[serde(serialize_with = "ser_time")]
    pub at: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<crate::state::Name>,
    #[serde(rename = "type")]
    pub kind: ActionKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Map<String, Value>>,
    /// On a free-form send the statement offered `or template` for: that template, for
    /// a platform that refuses the send as outside its window (its view of the window
    /// and the engine's can differ) to have it resent once in that form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub or_template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub or_params: Option<Map<String, Value>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<Map<String, Value>>,
    #[serde(rename = "kind", skip_serializing_if = "Option::is_none")]
    pub alert: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<Arc<str>>,
    /// On a send a person approved: the draft's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Send,
    Reply,
    Hide,
    Review,
    Tag,
    Emit,
    Handoff,
    HandoffClosed,
    Alert,
    /// A send waiting for a person's approval (`send ... approve by QUEUE`).
    Draft,
    /// A draft dropped undecided (it ran out, its state was left or its run ended): the
    /// queue can take it off its list.
    DraftClosed,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Send => "send",
            ActionKind::Reply => "reply",
            ActionKind::Hide => "hide",
            ActionKind::Review => "review",
            ActionKind::Tag => "tag",
            ActionKind::Emit => "emit",
            ActionKind::Handoff => "handoff",
            ActionKind::HandoffClosed => "handoff_closed",
            ActionKind::Alert => "alert",
            ActionKind::Draft => "draft",
            ActionKind::DraftClosed => "draft_closed",
        }
    }
}

impl Action {
    pub(crate) fn new(id: String, at: Millis, contact: Option<&str>, kind: ActionKind) -> Self {
        Action {
            id,
            at,
            contact: contact.map(str::to_string),
            channel: None,
            kind,
            text: None,
            template: None,
            params: None,
            or_template: None,
            or_params: None,
            policy: None,
            comment: None,
            queue: None,
            summary: None,
            reason: None,
            label: None,
            name: None,
            data: None,
            alert: None,
            flow: None,
            version: None,
            variant: None,
            state: None,
            cause: None,
            draft: None,
        }
    }
}

impl Action {
    /// The action as one line of JSON (no newline), byte for byte what `serde_json`
    /// writes for it (a test compares the two), appended to `out`. Every action goes
    /// through here, and strings that need no escaping (nearly all) are copied as they are
    /// rather than looked at byte by byte by the serializer.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // Destructured in full, so a field added to `Action` must be added here too.
        let Action {
            id,
            at,
            contact,
            channel,
            kind,
            text,
            template,
            params,
            or_template,
            or_params,
            policy,
            comment,
            queue,
            summary,
            reason,
            label,
            name,
            data,
            alert,
            flow,
            version,
            variant,
            state,
            cause,
            draft,
        } = self;
        out.extend_from_slice(b"{\"id\":");
        json_str(out, id);
        out.extend_from_slice(b",\"at\":\"");
        write_time(*at, out);
        out.push(b'"');
        opt_str(out, "contact", contact.as_deref());
        opt_str(out, "channel", channel.as_deref());
        opt_str(out, "type", Some(kind.as_str()));
        opt_str(out, "text", text.as_deref());
        opt_str(out, "template", template.as_deref());
        opt_map(out, "params", params.as_ref());
        opt_str(out, "or_template", or_template.as_deref());
        opt_map(out, "or_params", or_params.as_ref());
        opt_str(out, "policy", *policy);
        opt_str(out, "comment", comment.as_deref());
        opt_str(out, "queue", queue.as_deref());
        opt_str(out, "summary", summary.as_deref());
        opt_str(out, "reason", reason.as_deref());
        opt_str(out, "label", label.as_deref());
        opt_str(out, "name", name.as_deref());
        opt_map(out, "data", data.as_ref());
        opt_str(out, "kind", *alert);
        opt_str(out, "flow", flow.as_deref());
        opt_str(out, "version", version.as_deref());
        opt_str(out, "variant", variant.as_deref());
        opt_str(out, "state", state.as_deref());
        opt_str(out, "cause", cause.as_deref());
        opt_str(out, "draft", draft.as_deref());
        out.push(b'}');
    }
}

/// Whether `bytes` may hold a byte that JSON escapes (below 0x20, `"` or `\\`), eight
/// bytes at a time. It never misses one; a rare false alarm only sends the string the slow
/// way, through `serde_json`.
fn may_need_escaping(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Some byte of `x` is below `n` (n <= 128): the classic bit trick, exact on existence.
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH != 0;
    let zero = |x: u64| below(x, 1);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let Ok(eight) = <[u8; 8]>::try_from(chunk) else {
            return true;
        };
        let x = u64::from_le_bytes(eight);
        if below(x, 0x20)
            || zero(x ^ (ONES * u64::from(b'"')))
            || zero(x ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// `,"key":"value"` when there is a value (`key` needs no escaping).
fn opt_str(out: &mut Vec<u8>, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        field(out, key);
        json_str(out, v);
    }
}

fn opt_map(out: &mut Vec<u8>, key: &str, value: Option<&Map<String, Value>>) {
    if let Some(v) = value {
        field(out, key);
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, v);
    }
}

/// `,"key":`.
fn field(out: &mut Vec<u8>, key: &str) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// A JSON string: copied as it is when nothing in it needs escaping (what `serde_json`
/// escapes: control characters, `"` and `\`), else written by `serde_json`.
fn json_str(out: &mut Vec<u8>, s: &str) {
    if may_need_escaping(s.as_bytes()) {
        let _ = serde_json::to_writer(&mut *out, s);
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    }
}

/// One decision of the engine, for the audit trail.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Audit {
    #[serde(serialize_with = "ser_time")]
    pub at: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    /// `system`, `flow@version`, an agent id or an operator.
    pub actor: String,
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

impl Audit {
    /// The record of an event whose contact and id were already processed.
    pub fn duplicate(event: &crate::Event) -> Audit {
        Audit {
            at: event.at,
            contact: event.contact.clone(),
            actor: "system".into(),
            kind: "duplicate",
            flow: None,
            version: None,
            state: None,
            reason: None,
            detail: None,
            cause: Some(event.id.clone()),
        }
    }
}

fn ser_time<S: serde::Serializer>(at: &Millis, s: S) -> Result<S::Ok, S::Error> {
    let mut text = Vec::with_capacity(24);
    write_time(*at, &mut text);
    // The time is ASCII: digits, signs and separators.
    s.serialize_str(std::str::from_utf8(&text).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn full(text: &str) -> Action {
        let mut map = Map::new();
        map.insert("k\"ey".into(), Value::String(text.into()));
        map.insert("n".into(), serde_json::json!(1.5));
        Action {
            id: format!("e1.{text}"),
            at: 1_764_000_000_123,
            contact: Some(text.into()),
            channel: Some(crate::state::Name::from(text)),
            kind: ActionKind::HandoffClosed,
            text: Some(text.into()),
            template: Some(text.into()),
            params: Some(map.clone()),
            or_template: Some(text.into()),
            or_params: Some(map.clone()),
            policy: Some("stop"),
            comment: Some(text.into()),
            queue: Some(text.into()),
            summary: Some(text.into()),
            reason: Some(text.into()),
            label: Some(text.into()),
            name: Some(text.into()),
            data: Some(map),
            alert: Some("sla"),
            flow: Some(Arc::from(text)),
            version: Some(Arc::from(text)),
            variant: Some(text.into()),
            state: Some(Arc::from(text)),
            cause: Some(Arc::from(text)),
            draft: Some(text.into()),
        }
    }

    fn same(a: &Action) {
        let mut ours = Vec::new();
        a.write_json(&mut ours);
        let serde = serde_json::to_vec(a).expect("serialises");
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&serde)
        );
    }

    #[test]
    fn actions_are_written_as_serde_writes_them() {
        for text in [
            "plain",
            "quote \" and \\ slash",
            "tab\tnew\nline\u{1}",
            "naïve ✓ 😀",
            "",
            "\u{7f}",
        ] {
            same(&full(text));
        }
        for kind in [
            ActionKind::Send,
            ActionKind::Reply,
            ActionKind::Hide,
            ActionKind::Review,
            ActionKind::Tag,
            ActionKind::Emit,
            ActionKind::Handoff,
            ActionKind::HandoffClosed,
            ActionKind::Alert,
        ] {
            same(&Action::new("e2.0".into(), -1, None, kind));
        }
    }

    #[test]
    fn the_escape_check_never_misses_a_byte_to_escape() {
        for len in 0..20 {
            for at in 0..len {
                for bad in [0u8, 0x1f, b'"', b'\\', b'\n'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = bad;
                    assert!(may_need_escaping(&bytes), "{bytes:?}");
                }
            }
            assert!(!may_need_escaping(&vec![b'a'; len]));
        }
        assert!(!may_need_escaping(
            "naïve ✓ 😀 ~!#$%&'()*+,-./ 0123456789 []^_`{|}".as_bytes()
        ));
    }

    proptest! {
        #[test]
        fn any_text_is_written_as_serde_writes_it(
            // Any characters, control characters included (`any::<String>()` leaves them out).
            chars in prop::collection::vec(any::<char>(), 0..48),
            at in jiff::Timestamp::MIN.as_millisecond()..=jiff::Timestamp::MAX.as_millisecond(),
        ) {
            let text: String = chars.into_iter().collect();
            let mut a = Action::new(format!("{text}.0"), at, Some(&text), ActionKind::Send);
            a.text = Some(text.clone());
            a.cause = Some(Arc::from(text.as_str()));
            same(&a);
        }
    }
}
