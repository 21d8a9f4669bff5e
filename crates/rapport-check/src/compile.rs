//! Checked flows to the bundle: state tables with pre-compiled patterns and resolved
//! state indexes, every send marked marketing or transactional, the settings with
//! defaults applied, and each flow's version and content hash. Deterministic: the same
//! sources give the same bundle, byte for byte.

use std::collections::HashMap;

use rapport_bundle as b;
use rapport_syntax::ast::{
    self, ActionKind, ConditionKind, Expect, PatternKind, Purpose, Reentry, TransitionKind,
    TriggerKind,
};
use rapport_syntax::{format::format_flow, Settings};
use sha2::{Digest, Sha256};

use crate::{Checked, LineIndex, SourceFile};

/// Default `expire after`: 7 days.
const DEFAULT_EXPIRE: u64 = 7 * 86_400;
/// Default `after N runs` of `halt when`.
const DEFAULT_HALT_AFTER: u64 = 100;

/// SHA-256 of the flow's canonical form, in hex: comments and layout do not change it.
pub fn canonical_hash(flow: &ast::Flow) -> String {
    let digest = Sha256::digest(format_flow(flow).as_bytes());
    digest.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The bundle of a checked project. Call only when `checked` has no errors: unresolved
/// names are left out rather than reported here.
pub fn compile(settings: &Settings, files: &[SourceFile<'_>], checked: &Checked<'_>) -> b::Bundle {
    let lines: Vec<LineIndex<'_>> = files.iter().map(|f| LineIndex::new(f.source)).collect();
    let mut flows: Vec<b::Flow> = checked
        .flows
        .iter()
        .map(|cf| flow(settings, &files[cf.file], &lines[cf.file], cf.flow))
        .collect();
    flows.sort_by(|x, y| x.name.cmp(&y.name));
    b::Bundle {
        format: b::FORMAT,
        settings: bundle_settings(settings),
        flows,
        retired: Vec::new(),
    }
}

fn bundle_settings(s: &Settings) -> b::Settings {
    let field = |t: &rapport_syntax::settings::FieldType| {
        match t {
            rapport_syntax::settings::FieldType::String => "string",
            rapport_syntax::settings::FieldType::Number => "number",
            rapport_syntax::settings::FieldType::Boolean => "boolean",
        }
        .to_string()
    };
    // STOP, START and HELP lists in the form messages are matched in at run time.
    let keywords = |v: &[String]| {
        v.iter()
            .map(|k| rapport_bundle::normalize_opt_keyword(k))
            .collect()
    };
    b::Settings {
        brand: s.brand.clone(),
        vars: s.vars.clone(),
        channels: s
            .channels
            .iter()
            .map(|(k, c)| (k.clone(), c.window.map(|w| w.seconds)))
            .collect(),
        templates: s.templates.clone(),
        queues: s.queues.clone(),
        profile: s
            .profile
            .iter()
            .map(|(k, t)| (k.clone(), field(t)))
            .collect(),
        events: s
            .events
            .iter()
            .map(|(e, fields)| {
                (
                    e.clone(),
                    fields.iter().map(|(k, t)| (k.clone(), field(t))).collect(),
                )
            })
            .collect(),
        disclosure: s.disclosure.clone(),
        opt_out: b::OptOut {
            keywords: keywords(&s.opt_out.keywords),
            confirm: s.opt_out.confirm.clone(),
            resubscribe: keywords(&s.opt_out.resubscribe),
            resubscribe_confirm: s.opt_out.resubscribe_confirm.clone(),
            help: keywords(&s.opt_out.help),
            help_reply: s.opt_out.help_reply.clone(),
            footer: s.opt_out.footer.clone(),
            ambiguous: keywords(&s.opt_out.ambiguous),
            clarify: s.opt_out.clarify.clone(),
        },
        rate_limit: s.rate_limit.map(|r| b::RateLimit {
            max: r.max,
            per: r.per.seconds,
        }),
        quiet_hours: s.quiet_hours.as_ref().map(|q| b::QuietHours {
            from: q.from.minutes,
            to: q.to.minutes,
            zone: q.zone.clone(),
        }),
        escalation: s.escalation.as_ref().map(|e| b::Escalation {
            keywords: e.keywords.iter().map(|k| k.to_lowercase()).collect(),
            sentiment_below: e.sentiment_below,
            queue: e.queue.clone(),
        }),
        retention: b::Retention {
            transcripts: s.retention.transcripts.seconds,
            transactional: s.retention.transactional.seconds,
        },
        dedupe_window: s.dedupe_window.seconds,
    }
}

fn source_ref(file: &SourceFile<'_>, lines: &LineIndex<'_>, offset: usize) -> b::SourceRef {
    let (line, column) = lines.line_col(offset);
    b::SourceRef {
        file: file.path.to_string(),
        line: u32::try_from(line).unwrap_or(u32::MAX),
        column: u32::try_from(column).unwrap_or(u32::MAX),
    }
}

fn flow(
    settings: &Settings,
    file: &SourceFile<'_>,
    lines: &LineIndex<'_>,
    f: &ast::Flow,
) -> b::Flow {
    let hash = canonical_hash(f);
    let version = match &f.version {
        Some(v) => v.value.to_string(),
        None => hash[..12].to_string(),
    };
    let marketing = f.purpose.as_ref().map(|p| p.value) == Some(Purpose::Marketing);
    let index: HashMap<&str, usize> = f
        .states
        .iter()
        .enumerate()
        .rev()
        .map(|(i, s)| (s.name.value.as_str(), i))
        .collect();
    let target = |name: &str| index.get(name).copied().unwrap_or(0);
    let variants: Vec<String> = f
        .states
        .iter()
        .flat_map(|s| s.actions.iter())
        .find_map(|a| match &a.kind {
            ActionKind::SendOneOf { variants } => {
                Some(variants.iter().map(|(k, _)| k.value.clone()).collect())
            }
            _ => None,
        })
        .unwrap_or_default();
    let channels = match &f.channels {
        Some(c) => c.value.iter().map(|n| n.value.clone()).collect(),
        None => settings.channels.keys().cloned().collect(),
    };
    b::Flow {
        name: f.name.value.clone(),
        title: f.title.as_ref().map(|t| t.value.clone()),
        version,
        content_hash: hash,
        purpose: if marketing {
            b::Purpose::Marketing
        } else {
            b::Purpose::Transactional
        },
        channels,
        triggers: f.triggers.iter().map(trigger).collect(),
        priority: f.priority.as_ref().map(|p| p.value).unwrap_or(0),
        reentry: match f.reentry.as_ref().map(|r| r.value) {
            None | Some(Reentry::Always) => b::Reentry::Always,
            Some(Reentry::Never) => b::Reentry::Never,
            Some(Reentry::After(d)) => b::Reentry::After(d.seconds),
        },
        expire_after: f
            .expire_after
            .as_ref()
            .map(|d| d.value.seconds)
            .unwrap_or(DEFAULT_EXPIRE),
        rollout: f.rollout.as_ref().map(|r| b::Rollout {
            stages: r.stages.iter().map(|s| s.value.basis_points).collect(),
            every: r.every.as_ref().map(|d| d.value.seconds),
        }),
        halt: f.halt.as_ref().map(|h| b::Halt {
            guards: h
                .guards
                .iter()
                .filter_map(|g| {
                    Some(b::Guard {
                        metric: match g.metric.value.as_str() {
                            "opt_out_rate" => b::Metric::OptOutRate,
                            "handoff_rate" => b::Metric::HandoffRate,
                            "error_rate" => b::Metric::ErrorRate,
                            "conversion_rate" => b::Metric::ConversionRate,
                            _ => return None,
                        },
                        op: op(g.op),
                        threshold: g.threshold.value.basis_points,
                    })
                })
                .collect(),
            after_runs: h
                .after_runs
                .as_ref()
                .and_then(|n| u64::try_from(n.value).ok())
                .unwrap_or(DEFAULT_HALT_AFTER),
        }),
        goal: f.goal.as_ref().map(|g| b::Goal {
            event: g.event.value.clone(),
            within: g.within.value.seconds,
        }),
        variants,
        transitions: f
            .transitions
            .iter()
            .map(|t| transition(t, &target))
            .collect(),
        states: f
            .states
            .iter()
            .map(|s| b::State {
                name: s.name.value.clone(),
                actions: s
                    .actions
                    .iter()
                    .map(|a| action(&a.kind, marketing, &target))
                    .collect(),
                transitions: s
                    .transitions
                    .iter()
                    .map(|t| transition(t, &target))
                    .collect(),
                handoff: s
                    .actions
                    .iter()
                    .any(|a| matches!(a.kind, ActionKind::Handoff { .. })),
                source: source_ref(file, lines, s.span.start),
            })
            .collect(),
        source: source_ref(file, lines, f.span.start),
        previous: None,
    }
}

fn trigger(t: &ast::Trigger) -> b::Trigger {
    let (on, pattern, event) = match &t.kind {
        TriggerKind::Message(p) => (b::TriggerKind::Message, p.as_ref().map(pattern), None),
        TriggerKind::Comment(p) => (b::TriggerKind::Comment, p.as_ref().map(pattern), None),
        TriggerKind::Event(e) => (b::TriggerKind::Event, None, Some(e.value.clone())),
    };
    b::Trigger {
        on,
        pattern,
        event,
        when: t.when.as_ref().map(condition),
    }
}

fn transition(t: &ast::Transition, target: &impl Fn(&str) -> usize) -> b::Transition {
    b::Transition {
        on: match &t.kind {
            TransitionKind::Reply(p) => b::On::Reply {
                pattern: pattern(p),
            },
            TransitionKind::Comment(p) => b::On::Comment {
                pattern: pattern(p),
            },
            TransitionKind::Event(e) => b::On::Event {
                name: e.value.clone(),
            },
            TransitionKind::Agent(a) => match a.value {
                ast::AgentEvent::Released => b::On::AgentReleased,
                ast::AgentEvent::Replied => b::On::AgentReplied,
                ast::AgentEvent::Approved => b::On::AgentApproved,
                ast::AgentEvent::Rejected => b::On::AgentRejected,
            },
            TransitionKind::After(d) => b::On::After {
                seconds: d.value.seconds,
            },
        },
        when: t.when.as_ref().map(condition),
        target: target(&t.target.value),
    }
}

fn pattern(p: &ast::Pattern) -> b::Pattern {
    match &p.kind {
        PatternKind::Exact(v) => b::Pattern::Exact {
            texts: v
                .iter()
                .map(|s| rapport_bundle::normalize_keyword(&s.value))
                .collect(),
        },
        PatternKind::Contains(v) => b::Pattern::Contains {
            phrases: v.iter().map(|s| s.value.trim().to_lowercase()).collect(),
        },
        PatternKind::Matches(r) => b::Pattern::Matches { regex: regex(r) },
        PatternKind::Intent(n) => b::Pattern::Intent {
            name: n.value.clone(),
        },
        PatternKind::Sentiment { op: o, value } => b::Pattern::Sentiment {
            op: op(*o),
            value: *value,
        },
        PatternKind::Any => b::Pattern::Any,
    }
}

fn regex(r: &ast::Regex) -> b::Regex {
    b::Regex {
        case_insensitive: !r.source.starts_with("(?-i)"),
        source: r.source.clone(),
    }
}

fn op(o: ast::CompareOp) -> b::CompareOp {
    match o {
        ast::CompareOp::Eq => b::CompareOp::Eq,
        ast::CompareOp::Ne => b::CompareOp::Ne,
        ast::CompareOp::Lt => b::CompareOp::Lt,
        ast::CompareOp::Le => b::CompareOp::Le,
        ast::CompareOp::Gt => b::CompareOp::Gt,
        ast::CompareOp::Ge => b::CompareOp::Ge,
    }
}

fn condition(c: &ast::Condition) -> b::Condition {
    match &c.kind {
        ConditionKind::Or(all) => b::Condition::Or {
            all: all.iter().map(condition).collect(),
        },
        ConditionKind::And(all) => b::Condition::And {
            all: all.iter().map(condition).collect(),
        },
        ConditionKind::Not(inner) => b::Condition::Not {
            inner: Box::new(condition(inner)),
        },
        ConditionKind::Has(n) => b::Condition::Has {
            token: n.value.clone(),
        },
        ConditionKind::Compare {
            token,
            op: o,
            value,
        } => b::Condition::Compare {
            token: token.value.clone(),
            op: op(*o),
            value: match value {
                ast::Literal::String(s) => b::Literal::String(s.clone()),
                ast::Literal::Number(n) => b::Literal::Number(*n),
            },
        },
    }
}

fn text(t: &ast::Text) -> b::Text {
    b::Text {
        parts: t
            .parts
            .iter()
            .map(|p| match p {
                ast::TextPart::Literal(s) => b::TextPart::Literal(s.clone()),
                ast::TextPart::Token(tok) => b::TextPart::Token {
                    token: tok.path.clone(),
                    fallback: tok.fallback.clone(),
                },
            })
            .collect(),
    }
}

fn pairs(with: &[(ast::Name, ast::Text)]) -> Vec<(String, b::Text)> {
    with.iter()
        .map(|(k, v)| (k.value.clone(), text(v)))
        .collect()
}

fn action(kind: &ActionKind, marketing: bool, target: &impl Fn(&str) -> usize) -> b::Action {
    match kind {
        ActionKind::Send {
            text: t,
            template,
            approve,
        } => b::Action::Send {
            approve: approve.as_ref().map(|a| b::Approve {
                queue: a.queue.value.clone(),
                within: a.within.as_ref().map(|w| w.value.seconds),
            }),
            text: text(t),
            marketing,
            template: template.as_ref().map(|tf| b::TemplateSend {
                name: tf.name.value.clone(),
                params: pairs(&tf.with),
            }),
        },
        ActionKind::SendOneOf { variants } => b::Action::SendVariant {
            texts: variants.iter().map(|(_, t)| text(t)).collect(),
            marketing,
        },
        ActionKind::Reply(t) => b::Action::Reply { text: text(t) },
        ActionKind::Hide => b::Action::Hide,
        ActionKind::Review(t) => b::Action::Review { reason: text(t) },
        ActionKind::Ask(ask) => b::Action::Ask(Box::new(b::Ask {
            slot: ask.slot.value.clone(),
            question: text(&ask.question),
            template: ask.template.as_ref().map(|tf| b::TemplateSend {
                name: tf.name.value.clone(),
                params: pairs(&tf.with),
            }),
            marketing,
            expect: match ask.expect.as_ref().map(|e| &e.value) {
                None | Some(Expect::Text) => b::Expect::Text,
                Some(Expect::Number) => b::Expect::Number,
                Some(Expect::Email) => b::Expect::Email,
                Some(Expect::Phone) => b::Expect::Phone,
                Some(Expect::Regex(r)) => b::Expect::Regex { regex: regex(r) },
                Some(Expect::Choice(c)) => b::Expect::Choice {
                    choices: c
                        .iter()
                        .map(|(k, v)| {
                            (rapport_bundle::normalize_keyword(&k.value), v.value.clone())
                        })
                        .collect(),
                },
            },
            retries: ask
                .retry
                .as_ref()
                .and_then(|r| u32::try_from(r.times.value).ok())
                .unwrap_or(0),
            reprompt: ask.retry.as_ref().map(|r| text(&r.reprompt)),
            then: target(&ask.then.value),
            otherwise: ask.otherwise.as_ref().map(|o| target(&o.value)),
        })),
        ActionKind::Set { slot, value } => b::Action::Set {
            slot: slot.value.clone(),
            value: text(value),
        },
        ActionKind::Tag(label) => b::Action::Tag {
            label: label.value.clone(),
        },
        ActionKind::Emit { event, with } => b::Action::Emit {
            name: event.value.clone(),
            data: pairs(with),
        },
        ActionKind::Handoff {
            queue,
            summary,
            sla,
        } => b::Action::Handoff {
            queue: queue.value.clone(),
            summary: summary.as_ref().map(text),
            sla: sla.as_ref().map(|d| d.value.seconds),
        },
        ActionKind::End => b::Action::End,
        ActionKind::Goto(t) => b::Action::Goto {
            state: target(&t.value),
        },
        ActionKind::Branch { target: t, when } => b::Action::Branch {
            state: target(&t.value),
            when: condition(when),
        },
    }
}
