//! The compiled bundle: flows as state tables with pre-compiled patterns, the project's
//! settings, each flow's version and content hash, and source spans for runtime messages.
//!
//! This is the only contract between the compiler (`rapport build`) and runtime hosts: a
//! host loads a bundle and never sees `.flow` sources. Every type here is serialised;
//! `FORMAT` changes whenever a change would make an older host misread a bundle.

mod normalize;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use normalize::{contains_phrase, normalize_keyword, normalize_opt_keyword, resembles_keyword};

/// The bundle format this crate reads and writes.
pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Bundle format; a host refuses a format it does not know.
    pub format: u32,
    pub settings: Settings,
    /// Sorted by name.
    pub flows: Vec<Flow>,
    /// Versions that runs in a store still use but that are neither a flow of this
    /// bundle nor its previous version: they run on and enrol no one. A host adds them
    /// when it deploys a bundle onto a store; `rapport build` never writes any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<Flow>,
}

/// `rapport.yaml` with every default applied; durations in seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub brand: String,
    pub vars: BTreeMap<String, String>,
    /// Channel name → messaging window in seconds (`None`: no window).
    pub channels: BTreeMap<String, Option<u64>>,
    /// Template name → its parameters in order (`None`: not declared).
    pub templates: BTreeMap<String, Option<Vec<String>>>,
    pub queues: Vec<String>,
    /// Profile field → type (`string`, `number`, `boolean`).
    pub profile: BTreeMap<String, String>,
    /// Event name → field → type.
    pub events: BTreeMap<String, BTreeMap<String, String>>,
    pub disclosure: String,
    pub opt_out: OptOut,
    pub rate_limit: Option<RateLimit>,
    pub quiet_hours: Option<QuietHours>,
    pub escalation: Option<Escalation>,
    pub retention: Retention,
    pub dedupe_window: u64,
}

/// Keyword lists are stored normalised (see [`normalize_keyword`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptOut {
    pub keywords: Vec<String>,
    pub confirm: String,
    pub resubscribe: Vec<String>,
    pub resubscribe_confirm: String,
    pub help: Vec<String>,
    pub help_reply: String,
    pub footer: String,
    pub ambiguous: Vec<String>,
    pub clarify: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub max: u32,
    pub per: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuietHours {
    /// Minutes after local midnight.
    pub from: u16,
    pub to: u16,
    pub zone: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Escalation {
    /// Lower-cased phrases, matched as whole words.
    pub keywords: Vec<String>,
    pub sentiment_below: Option<f64>,
    pub queue: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    pub transcripts: u64,
    pub transactional: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Purpose {
    Marketing,
    Transactional,
}

/// Where something was written, for runtime messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceRef {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flow {
    pub name: String,
    pub title: Option<String>,
    /// The declared `version N`, or the first 12 hex digits of the SHA-256 of the
    /// flow's canonical form.
    pub version: String,
    /// SHA-256 of the canonical form, in hex.
    pub content_hash: String,
    pub purpose: Purpose,
    pub channels: Vec<String>,
    pub triggers: Vec<Trigger>,
    pub priority: i64,
    pub reentry: Reentry,
    /// Seconds.
    pub expire_after: u64,
    pub rollout: Option<Rollout>,
    pub halt: Option<Halt>,
    pub goal: Option<Goal>,
    /// Variant keys of `send one of`, in order; empty when the flow has none.
    pub variants: Vec<String>,
    /// Flow-wide transitions, checked before the state's own.
    pub transitions: Vec<Transition>,
    /// The first state is the initial one.
    pub states: Vec<State>,
    pub source: SourceRef,
    /// The version contacts outside the current rollout stage still start on: the
    /// earlier version carried over by `rapport build --baseline`.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub previous: Option<Box<Flow>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    pub on: TriggerKind,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pattern: Option<Pattern>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub event: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub when: Option<Condition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TriggerKind {
    Message,
    Comment,
    Event,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind", content = "seconds")]
pub enum Reentry {
    Always,
    Never,
    After(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    /// Stages in hundredths of a percent (`2500` is 25%).
    pub stages: Vec<u32>,
    /// Seconds between automatic advances.
    pub every: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Halt {
    pub guards: Vec<Guard>,
    pub after_runs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    OptOutRate,
    HandoffRate,
    ErrorRate,
    ConversionRate,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    pub metric: Metric,
    pub op: CompareOp,
    /// Hundredths of a percent.
    pub threshold: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Goal {
    pub event: String,
    pub within: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub name: String,
    pub actions: Vec<Action>,
    pub transitions: Vec<Transition>,
    /// `handoff` is among the actions: the run waits for an agent.
    pub handoff: bool,
    pub source: SourceRef,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Action {
    Send {
        text: Text,
        /// Consent is re-checked at every marketing send, whatever the flow claims.
        marketing: bool,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        template: Option<TemplateSend>,
        /// A draft: it goes to a person's queue, and out when they approve it.
        #[serde(skip_serializing_if = "Option::is_none", default)]
        approve: Option<Approve>,
    },
    SendVariant {
        /// One text per variant key, in the flow's variant order.
        texts: Vec<Text>,
        marketing: bool,
    },
    Reply {
        text: Text,
    },
    Hide,
    Review {
        reason: Text,
    },
    Ask(Box<Ask>),
    Set {
        slot: String,
        value: Text,
    },
    Tag {
        label: String,
    },
    Emit {
        name: String,
        data: Vec<(String, Text)>,
    },
    Handoff {
        queue: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        summary: Option<Text>,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        sla: Option<u64>,
    },
    End,
    /// Go on at once to the state with this index.
    Goto {
        state: usize,
    },
    /// Go on at once to the state with this index when the condition holds; else try
    /// the next action.
    Branch {
        state: usize,
        when: Condition,
    },
}

/// Who approves a draft, and for how long it waits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approve {
    pub queue: String,
    /// Seconds; an undecided draft is dropped after them.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub within: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSend {
    pub name: String,
    /// Explicit `with` pairs; empty means the text's tokens, keyed by name.
    pub params: Vec<(String, Text)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ask {
    pub slot: String,
    pub question: Text,
    /// How the question is asked outside the messaging window.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub template: Option<TemplateSend>,
    pub marketing: bool,
    pub expect: Expect,
    pub retries: u32,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reprompt: Option<Text>,
    pub then: usize,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub otherwise: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Expect {
    Text,
    Number,
    Email,
    Phone,
    Regex {
        regex: Regex,
    },
    /// Normalised keys (see [`normalize_keyword`]) and the values the slot gets.
    Choice {
        choices: Vec<(String, String)>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transition {
    pub on: On,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub when: Option<Condition>,
    pub target: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum On {
    Reply {
        pattern: Pattern,
    },
    Comment {
        pattern: Pattern,
    },
    Event {
        name: String,
    },
    AgentReleased,
    AgentReplied,
    /// A person approved a draft of the state.
    AgentApproved,
    /// A person rejected a draft of the state.
    AgentRejected,
    /// Seconds after the state was entered.
    After {
        seconds: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Pattern {
    /// Normalised texts; the whole normalised message must equal one.
    Exact {
        texts: Vec<String>,
    },
    /// Lower-cased phrases, found as whole words.
    Contains {
        phrases: Vec<String>,
    },
    Matches {
        regex: Regex,
    },
    Intent {
        name: String,
    },
    Sentiment {
        op: CompareOp,
        value: f64,
    },
    Any,
}

/// A regex as the `regex` crate compiles it: unanchored, case-insensitive unless the
/// source starts with `(?-i)` (then `case_insensitive` is false).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Regex {
    pub source: String,
    pub case_insensitive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CompareOp {
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Condition {
    Or {
        all: Vec<Condition>,
    },
    And {
        all: Vec<Condition>,
    },
    Not {
        inner: Box<Condition>,
    },
    Has {
        token: String,
    },
    Compare {
        token: String,
        op: CompareOp,
        value: Literal,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    Number(f64),
    String(String),
}

/// Text for a person: literal pieces and tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Text {
    pub parts: Vec<TextPart>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TextPart {
    Literal(String),
    Token {
        token: String,
        #[serde(skip_serializing_if = "Option::is_none", default)]
        fallback: Option<String>,
    },
}

impl Bundle {
    /// The names of its flows, current and retired, sorted, each once.
    pub fn flow_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .flows
            .iter()
            .chain(&self.retired)
            .map(|f| f.name.as_str())
            .collect();
        names.sort_unstable();
        names.dedup();
        names
    }

    /// Carries each flow's previous version over from `baseline` (the bundle in
    /// production): a flow whose version changed gets the baseline's flow as its previous
    /// version; an unchanged one keeps the baseline's previous version.
    pub fn carry_previous(&mut self, baseline: &Bundle) {
        for flow in &mut self.flows {
            let Some(old) = baseline.flows.iter().find(|o| o.name == flow.name) else {
                continue;
            };
            flow.previous = if old.version == flow.version {
                old.previous.clone()
            } else {
                let mut prev = old.clone();
                prev.previous = None;
                Some(Box::new(prev))
            };
        }
    }
}

impl Bundle {
    /// Checks what a host relies on and serde cannot: every state index inside the flow
    /// it belongs to, at least one state per flow, the format this build runs. `rapport
    /// build` always writes bundles that pass; a hand-edited or damaged file may not, and
    /// a host refuses it before running anything. `Err` says what and where.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FORMAT {
            return Err(format!(
                "bundle format {} is not the format this build runs ({FORMAT}); rebuild it with this version of `rapport build`",
                self.format
            ));
        }
        let mut all: Vec<(&Flow, &str)> = Vec::new();
        for f in &self.flows {
            all.push((f, "flow"));
            if let Some(p) = &f.previous {
                all.push((p, "previous version of flow"));
            }
        }
        all.extend(self.retired.iter().map(|f| (f, "retired version of flow")));
        for (flow, what) in all {
            let at =
                |detail: String| format!("{what} `{}` ({}): {detail}", flow.name, flow.version);
            let n = flow.states.len();
            if n == 0 {
                return Err(at("it has no state".into()));
            }
            if n > u32::MAX as usize {
                return Err(at("it has too many states".into()));
            }
            let check = |i: usize, place: &str| -> Result<(), String> {
                if i < n {
                    Ok(())
                } else {
                    Err(at(format!(
                        "{place} names state #{i}, and the flow has {n}"
                    )))
                }
            };
            for t in &flow.transitions {
                check(t.target, "a flow-wide transition")?;
            }
            for s in &flow.states {
                for t in &s.transitions {
                    check(t.target, &format!("a transition of state `{}`", s.name))?;
                }
                for a in &s.actions {
                    match a {
                        Action::Goto { state } | Action::Branch { state, .. } => {
                            check(*state, &format!("a goto in state `{}`", s.name))?
                        }
                        Action::Ask(ask) => {
                            check(ask.then, &format!("the ask of state `{}`", s.name))?;
                            if let Some(o) = ask.otherwise {
                                check(o, &format!("the ask of state `{}`", s.name))?;
                            }
                        }
                        Action::SendVariant { texts, .. }
                            if texts.len() != flow.variants.len() || texts.is_empty() =>
                        {
                            return Err(at(format!(
                                "a `send one of` in state `{}` has {} texts for {} variants",
                                s.name,
                                texts.len(),
                                flow.variants.len()
                            )));
                        }
                        _ => {}
                    }
                }
            }
            if let Some(r) = &flow.rollout {
                if r.stages.is_empty() || r.stages.iter().any(|s| *s > 10_000) {
                    return Err(at("its rollout stages are not between 0% and 100%".into()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod validate_tests {
    use super::*;

    fn bundle() -> Bundle {
        serde_json::from_value(serde_json::json!({
            "format": 1, "settings": {"brand": "b", "vars": {}, "channels": {}, "templates": {},
                "queues": [], "profile": {}, "events": {}, "disclosure": "",
                "opt_out": {"keywords": [], "confirm": "", "resubscribe": [], "resubscribe_confirm": "",
                    "help": [], "help_reply": "", "footer": "", "ambiguous": [], "clarify": ""},
                "rate_limit": null, "quiet_hours": null, "escalation": null,
                "retention": {"transcripts": 1, "transactional": 1}, "dedupe_window": 60},
            "flows": [{"name": "f", "title": null, "version": "1", "content_hash": "x",
                "purpose": "transactional", "channels": [], "triggers": [], "priority": 0,
                "reentry": {"kind": "always"}, "expire_after": 60, "rollout": null, "halt": null, "goal": null,
                "variants": [], "transitions": [],
                "states": [{"name": "a", "actions": [{"type": "end"}], "handoff": false,
                    "transitions": [{"on": {"kind": "after", "seconds": 1}, "target": 0}],
                    "source": {"file": "f.flow", "line": 1, "column": 1}}],
                "source": {"file": "f.flow", "line": 1, "column": 1}}]
        }))
        .expect("a bundle")
    }

    #[test]
    fn a_state_index_outside_the_flow_or_a_flow_without_states_is_refused() {
        assert_eq!(bundle().validate(), Ok(()));
        let mut b = bundle();
        b.flows[0].states[0].transitions[0].target = 99;
        let e = b.validate().expect_err("refused");
        assert!(e.contains("names state #99, and the flow has 1"), "{e}");
        let mut b = bundle();
        b.flows[0].states.clear();
        assert!(b.validate().expect_err("refused").contains("no state"));
        let mut b = bundle();
        b.format = 99;
        assert!(b.validate().expect_err("refused").contains("format 99"));
    }
}
