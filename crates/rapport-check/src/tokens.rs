//! Tokens: every `{name}` must resolve (slot, profile field, project variable,
//! `last_reply`, or a field of the starting event), and a slot must be set on every path
//! from the start to where it is used — a forward "must be defined" dataflow over the
//! flow's graph. The diagnostic shows one concrete path on which it is missing.

use std::collections::{HashMap, VecDeque};

use fixedbitset::FixedBitSet;
use rapport_syntax::ast::{
    Action, ActionKind, Condition, ConditionKind, Flow, Text, Token, TransitionKind, TriggerKind,
};
use rapport_syntax::{did_you_mean, Code, Diagnostic, Settings, Span};

use crate::graph::{EdgeKind, FlowGraph};

/// Fields every comment and message carries, usable as `{event.x}` in runs they start.
const COMMENT_FIELDS: [&str; 4] = ["text", "author", "post", "comment"];
const MESSAGE_FIELDS: [&str; 1] = ["text"];

struct Names<'a> {
    slots: HashMap<&'a str, usize>,
    settings: &'a Settings,
    /// Fields of the starting event(s): (every trigger has it, some trigger has it).
    event_fields: (Vec<&'a str>, Vec<&'a str>),
    /// The events that start the flow, for messages.
    starters: Vec<&'a str>,
    /// A start event is not declared (reported elsewhere): its fields are unknown.
    undeclared_starter: bool,
}

impl<'a> Names<'a> {
    fn new(settings: &'a Settings, flow: &'a Flow) -> Self {
        let mut slots = HashMap::new();
        for state in &flow.states {
            for action in &state.actions {
                let slot = match &action.kind {
                    ActionKind::Ask(ask) => &ask.slot.value,
                    ActionKind::Set { slot, .. } => &slot.value,
                    _ => continue,
                };
                let next = slots.len();
                slots.entry(slot.as_str()).or_insert(next);
            }
        }
        let mut per_trigger: Vec<Vec<&str>> = Vec::new();
        let mut starters = Vec::new();
        let mut undeclared_starter = false;
        for t in &flow.triggers {
            match &t.kind {
                TriggerKind::Event(e) => {
                    starters.push(e.value.as_str());
                    // An undeclared event is reported by `resolve`; its fields are unknown.
                    match settings.events.get(&e.value) {
                        Some(fields) => {
                            per_trigger.push(fields.keys().map(String::as_str).collect())
                        }
                        None => undeclared_starter = true,
                    }
                }
                TriggerKind::Comment(_) => {
                    starters.push("a comment");
                    per_trigger.push(COMMENT_FIELDS.to_vec());
                }
                TriggerKind::Message(_) => {
                    starters.push("a message");
                    per_trigger.push(MESSAGE_FIELDS.to_vec());
                }
            }
        }
        let mut some: Vec<&str> = per_trigger.iter().flatten().copied().collect();
        some.sort_unstable();
        some.dedup();
        let every = some
            .iter()
            .copied()
            .filter(|f| per_trigger.iter().all(|fields| fields.contains(f)))
            .collect();
        Names {
            slots,
            settings,
            event_fields: (every, some),
            starters,
            undeclared_starter,
        }
    }

    /// Whether a plain (non-`event.`) name is a profile field, project variable or
    /// `last_reply`: always resolvable, so never "missing".
    fn is_ambient(&self, name: &str) -> bool {
        name == "last_reply"
            || name == "suggested_reply"
            || self.settings.profile.contains_key(name)
            || self.settings.vars.contains_key(name)
    }

    fn candidates(&self) -> Vec<&str> {
        let mut c: Vec<&str> = self.slots.keys().copied().collect();
        c.extend(self.settings.profile.keys().map(String::as_str));
        c.extend(self.settings.vars.keys().map(String::as_str));
        c.push("last_reply");
        c.push("suggested_reply");
        c
    }

    /// Reports a token that resolves to nothing, or an event field that only some
    /// starting events have (unless the token has a fallback).
    fn resolve(&self, path: &str, span: Span, place: Place<'_>, diags: &mut Vec<Diagnostic>) {
        let in_condition = !matches!(place, Place::Text { .. });
        let show = |name: &str| {
            if in_condition {
                format!("`{name}`")
            } else {
                format!("`{{{name}}}`")
            }
        };
        if let Some(field) = path.strip_prefix("event.") {
            if self.undeclared_starter {
                // The start event itself is unknown (reported); its fields cannot be.
                return;
            }
            let (every, some, whose) = match place {
                Place::EventCondition { event, fields } => {
                    (fields, fields, format!("the event `{event}`"))
                }
                _ => (
                    &self.event_fields.0[..],
                    &self.event_fields.1[..],
                    "the event that starts this run".to_string(),
                ),
            };
            if every.contains(&field) {
                return;
            }
            if some.contains(&field) {
                if matches!(place, Place::Text { fallback: true }) || in_condition {
                    return;
                }
                diags.push(
                    Diagnostic::error(Code::TokenMaybeMissing, format!("`{{{path}}}` may be missing"))
                        .label(span, "not every event that starts this flow has this field")
                        .help(format!(
                            "this flow starts on {}; add a fallback, e.g. {{{path}|...}}, or declare the field for every one of them",
                            crate::join_capped(&self.starters, ", ")
                        )),
                );
                return;
            }
            let by_message_only = matches!(place, Place::Text { .. } | Place::Condition)
                && !self.starters.is_empty()
                && self
                    .starters
                    .iter()
                    .all(|s| *s == "a message" || *s == "a comment");
            let d = Diagnostic::error(Code::UnknownToken, format!("unknown token {}", show(path)))
                .label(span, format!("{whose} has no such field"));
            diags.push(match did_you_mean(field, some.iter().copied()) {
                Some(s) => d.help(format!("did you mean {}?", show(&format!("event.{s}")))),
                None if by_message_only => d.help(format!(
                    "a run started by {} has only {}",
                    crate::join_capped(&self.starters, " or "),
                    crate::join_capped(&some.iter().map(|f| show(&format!("event.{f}"))).collect::<Vec<_>>(), ", ")
                )),
                None if some.is_empty() => d.help("this flow is not started by an event with declared fields; declare them under `events:` in rapport.yaml"),
                None => d.help(format!("the fields are {}; declare new ones under `events:` in rapport.yaml", crate::join_capped(some, ", "))),
            });
            return;
        }
        if path == "channel" || self.slots.contains_key(path) || self.is_ambient(path) {
            return;
        }
        let d = Diagnostic::error(Code::UnknownToken, format!("unknown token {}", show(path)))
            .label(span, "not a slot, profile field or project variable");
        diags.push(match did_you_mean(path, self.candidates()) {
            Some(s) => d.help(format!("did you mean {}?", show(s))),
            None => d.help("set it in this flow with `ask` or `set`, or declare it under `profile:` or `vars:` in rapport.yaml"),
        });
    }
}

/// Where a token is used, which decides what "missing" means and how to say it.
#[derive(Clone, Copy)]
enum Place<'a> {
    /// Message text; a fallback covers a missing value.
    Text { fallback: bool },
    /// A `when` of a message or comment transition or trigger.
    Condition,
    /// A `when` of `on event X` / `start on event X`: `event.x` is a field of X.
    EventCondition {
        event: &'a str,
        fields: &'a [&'a str],
    },
}

pub(crate) fn check(settings: &Settings, flow: &Flow, g: &FlowGraph, diags: &mut Vec<Diagnostic>) {
    let names = Names::new(settings, flow);

    // Conditions: names must resolve; a missing value only makes the comparison false.
    let event_fields = |e: &str| -> Vec<&str> {
        settings
            .events
            .get(e)
            .map(|f| f.keys().map(String::as_str).collect())
            .unwrap_or_default()
    };
    let mut check_when = |c: &Condition, event: Option<&str>| {
        let fields = event.map(event_fields).unwrap_or_default();
        let place = match event {
            Some(event) => Place::EventCondition {
                event,
                fields: &fields,
            },
            None => Place::Condition,
        };
        condition_tokens(c, &mut |path, span| names.resolve(path, span, place, diags));
    };
    for t in &flow.triggers {
        if let Some(c) = &t.when {
            let event = match &t.kind {
                TriggerKind::Event(e) => Some(e.value.as_str()),
                _ => None,
            };
            check_when(c, event);
        }
    }
    let transitions = flow
        .transitions
        .iter()
        .chain(flow.states.iter().flat_map(|s| s.transitions.iter()));
    for t in transitions {
        if let Some(c) = &t.when {
            let event = match &t.kind {
                TransitionKind::Event(e) => Some(e.value.as_str()),
                _ => None,
            };
            check_when(c, event);
        }
    }
    for action in flow.states.iter().flat_map(|s| s.actions.iter()) {
        if let ActionKind::Branch { when, .. } = &action.kind {
            check_when(when, None);
        }
    }

    let defined_in = must_defined(flow, g, &names);
    for (v, state) in flow.states.iter().enumerate() {
        let Some(mut defined) = defined_in[v].clone() else {
            // Unreachable: reported as such; nothing flows into it.
            for action in &state.actions {
                for token in action_tokens(action) {
                    let place = Place::Text {
                        fallback: token.fallback.is_some(),
                    };
                    names.resolve(&token.path, token.span, place, diags);
                }
            }
            continue;
        };
        for action in &state.actions {
            for token in action_tokens(action) {
                let place = Place::Text {
                    fallback: token.fallback.is_some(),
                };
                names.resolve(&token.path, token.span, place, diags);
                if token.path == "suggested_reply" && token.fallback.is_none() {
                    diags.push(
                        Diagnostic::error(
                            Code::TokenMaybeMissing,
                            "`{suggested_reply}` may be missing",
                        )
                        .label(token.span, "used here without a fallback")
                        .help("a message may carry no `suggestion`: add a fallback, e.g. {suggested_reply|Let me check that for you.}"),
                    );
                }
                let Some(&slot) = names.slots.get(token.path.as_str()) else {
                    continue;
                };
                if defined.contains(slot)
                    || token.fallback.is_some()
                    || names.is_ambient(&token.path)
                {
                    continue;
                }
                let set_later = state.actions.iter().any(
                    |a| matches!(&a.kind, ActionKind::Set { slot, .. } if slot.value == token.path),
                );
                if set_later {
                    diags.push(
                        Diagnostic::error(
                            Code::TokenMaybeMissing,
                            format!("`{{{}}}` is used before it is set", token.path),
                        )
                        .label(token.span, "used here")
                        .help(format!(
                            "`set {}` comes later in this state: move it above this line",
                            token.path
                        )),
                    );
                    continue;
                }
                let path = missing_path(flow, g, &token.path, slot, &names, v);
                diags.push(
                    Diagnostic::error(Code::TokenMaybeMissing, format!("`{{{}}}` may be missing here", token.path))
                        .label(token.span, "used here")
                        .help(format!(
                            "on this path it is never set: {path}. Set it on every path (`ask` or `set`), or add a fallback: {{{}|...}}",
                            token.path
                        )),
                );
            }
            if let ActionKind::Set { slot, .. } = &action.kind {
                if let Some(&i) = names.slots.get(slot.value.as_str()) {
                    defined.insert(i);
                }
            }
        }
    }
}

/// The tokens in an action's texts, in order.
fn action_tokens(action: &Action) -> Vec<&Token> {
    let mut texts: Vec<&Text> = Vec::new();
    match &action.kind {
        ActionKind::Send { text, template, .. } => {
            texts.push(text);
            if let Some(t) = template {
                texts.extend(t.with.iter().map(|(_, v)| v));
            }
        }
        ActionKind::SendOneOf { variants } => texts.extend(variants.iter().map(|(_, t)| t)),
        ActionKind::Reply(t) | ActionKind::Review(t) => texts.push(t),
        ActionKind::Ask(ask) => {
            texts.push(&ask.question);
            if let Some(t) = &ask.template {
                texts.extend(t.with.iter().map(|(_, v)| v));
            }
            if let Some(r) = &ask.retry {
                texts.push(&r.reprompt);
            }
        }
        ActionKind::Set { value, .. } => texts.push(value),
        ActionKind::Emit { with, .. } => texts.extend(with.iter().map(|(_, v)| v)),
        ActionKind::Handoff {
            summary: Some(s), ..
        } => texts.push(s),
        _ => {}
    }
    texts.into_iter().flat_map(Text::tokens).collect()
}

fn condition_tokens(c: &Condition, f: &mut impl FnMut(&str, Span)) {
    match &c.kind {
        ConditionKind::Or(all) | ConditionKind::And(all) => {
            all.iter().for_each(|x| condition_tokens(x, f))
        }
        ConditionKind::Not(inner) => condition_tokens(inner, f),
        ConditionKind::Has(name) => f(&name.value, name.span),
        ConditionKind::Compare { token, .. } => f(&token.value, token.span),
    }
}

/// Slots `set` by a state's entry actions.
fn sets_in(flow: &Flow, v: usize, names: &Names<'_>) -> FixedBitSet {
    let mut gen = FixedBitSet::with_capacity(names.slots.len());
    for action in &flow.states[v].actions {
        if let ActionKind::Set { slot, .. } = &action.kind {
            if let Some(&i) = names.slots.get(slot.value.as_str()) {
                gen.insert(i);
            }
        }
    }
    gen
}

/// For each state, the slots defined on every path to it (`None`: unreachable).
fn must_defined(flow: &Flow, g: &FlowGraph, names: &Names<'_>) -> Vec<Option<FixedBitSet>> {
    let n = flow.states.len();
    let m = names.slots.len();
    let gens: Vec<FixedBitSet> = (0..n).map(|v| sets_in(flow, v, names)).collect();
    let mut ins: Vec<Option<FixedBitSet>> = vec![None; n];
    if n == 0 {
        return ins;
    }
    ins[0] = Some(FixedBitSet::with_capacity(m));
    let mut queue: VecDeque<usize> = VecDeque::from([0]);
    let mut queued = vec![false; n];
    queued[0] = true;
    while let Some(u) = queue.pop_front() {
        queued[u] = false;
        let Some(mut out) = ins[u].clone() else {
            continue;
        };
        out.union_with(&gens[u]);
        for (v, edge) in g.edges_from(u) {
            let mut along = out.clone();
            match &edge.kind {
                EdgeKind::AskThen(slot) => {
                    if let Some(&i) = names.slots.get(slot.as_str()) {
                        along.insert(i);
                    }
                }
                // `-> S when has x`: along this branch, `x` has a value.
                EdgeKind::Branch { defines, .. } => {
                    for name in defines {
                        if let Some(&i) = names.slots.get(name.as_str()) {
                            along.insert(i);
                        }
                    }
                }
                _ => {}
            }
            let changed = match &mut ins[v] {
                slot @ None => {
                    *slot = Some(if v == 0 {
                        FixedBitSet::with_capacity(m)
                    } else {
                        along
                    });
                    true
                }
                Some(existing) => {
                    let before = existing.count_ones(..);
                    existing.intersect_with(&along);
                    existing.count_ones(..) != before
                }
            };
            if changed && !queued[v] {
                queued[v] = true;
                queue.push_back(v);
            }
        }
    }
    ins
}

/// A shortest path from the start to `target` on which `slot` is never set, as text.
fn missing_path(
    flow: &Flow,
    g: &FlowGraph,
    name: &str,
    slot: usize,
    names: &Names<'_>,
    target: usize,
) -> String {
    let n = flow.states.len();
    let mut parent: Vec<Option<(usize, String)>> = vec![None; n];
    let mut seen = vec![false; n];
    let mut queue = VecDeque::from([0]);
    seen[0] = true;
    while let Some(u) = queue.pop_front() {
        if u == target {
            break;
        }
        if u != 0 && sets_in(flow, u, names).contains(slot) {
            continue;
        }
        if u == 0 && sets_in(flow, 0, names).contains(slot) {
            continue;
        }
        for (v, edge) in g.edges_from(u) {
            let defines = match &edge.kind {
                EdgeKind::AskThen(s) => s == name,
                EdgeKind::Branch { defines, .. } => defines.iter().any(|d| d == name),
                _ => false,
            };
            if seen[v] || defines {
                continue;
            }
            seen[v] = true;
            parent[v] = Some((u, edge.kind.label()));
            queue.push_back(v);
        }
    }
    let mut steps = vec![format!("`{}`", flow.states[target].name.value)];
    let mut current = target;
    for _ in 0..n {
        match &parent[current] {
            Some((u, label)) => {
                steps.push(format!("`{}` —{label}→", flow.states[*u].name.value));
                current = *u;
            }
            None => break,
        }
    }
    steps.reverse();
    crate::graph::elide(&mut steps);
    steps.join(" ")
}
