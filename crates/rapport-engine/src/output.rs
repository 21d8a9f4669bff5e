//! What the engine emits: actions for the channel adapters and audit records for the
//! trail. Both are written as JSON lines by the host.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::event::{write_time, Millis};

/// An action, as in design section 6.1. Fields that do not apply are left out. Names the
/// engine repeats on many actions (channel, flow, version, state, cause) are shared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Action {
    pub id: String,
    #[serde(serialize_with = "ser_time")]
    pub at: Millis,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<Arc<str>>,
    #[serde(rename = "type")]
    pub kind: ActionKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<Map<String, Value>>,
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
        }
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

fn ser_time<S: serde::Serializer>(at: &Millis, s: S) -> Result<S::Ok, S::Error> {
    let mut text = String::with_capacity(24);
    write_time(*at, &mut text);
    s.serialize_str(&text)
}
