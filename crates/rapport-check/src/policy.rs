//! Policy proofs: reserved and escalation keywords, overlapping triggers, window safety
//! for marketing sends, the message budget against the rate limit, and texts too long
//! for a channel.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use rapport_bundle::{contains_phrase, normalize_keyword, normalize_opt_keyword};
use rapport_syntax::ast::{
    ActionKind, Expect, Flow, Pattern, PatternKind, Purpose, Spanned, TransitionKind, Trigger,
    TriggerKind,
};
use rapport_syntax::{Code, Diagnostic, Settings, Span};

use crate::graph::{duration, Edge, EdgeKind, FlowGraph};
use crate::{line_col, CheckedFlow, FileDiagnostic, SourceFile};

/// Checks that look at one flow.
pub(crate) fn in_flow(
    settings: &Settings,
    flow: &Flow,
    g: &FlowGraph,
    diags: &mut Vec<Diagnostic>,
) {
    keywords(settings, flow, diags);
    if flow.purpose.as_ref().map(|p| p.value) == Some(Purpose::Marketing) {
        window(settings, flow, g, diags);
    }
    budget(settings, flow, g, diags);
    text_length(settings, flow, diags);
}

// ---------------------------------------------------------------- keywords

fn keywords(settings: &Settings, flow: &Flow, diags: &mut Vec<Diagnostic>) {
    let normalized = |list: &[String]| {
        list.iter()
            .map(|k| normalize_opt_keyword(k))
            .collect::<Vec<_>>()
    };
    let lists: [(&str, Vec<String>); 3] = [
        (
            "an opt-out keyword (`opt_out.keywords`)",
            normalized(&settings.opt_out.keywords),
        ),
        (
            "a resubscribe keyword (`opt_out.resubscribe`)",
            normalized(&settings.opt_out.resubscribe),
        ),
        (
            "a help keyword (`opt_out.help`)",
            normalized(&settings.opt_out.help),
        ),
    ];
    let reserved = |normal: &str| {
        lists
            .iter()
            .find(|(_, list)| list.iter().any(|k| k == normal))
            .map(|(what, _)| *what)
    };
    let escalation: Vec<String> = settings
        .escalation
        .iter()
        .flat_map(|e| e.keywords.iter())
        .map(|k| k.to_lowercase())
        .collect();

    // Only messages are intercepted: STOP/START/HELP when the whole message equals the
    // keyword, escalation keywords anywhere in it. Comments reach flows unchanged.
    let mut whole: Vec<&Spanned<String>> = Vec::new();
    let mut phrases: Vec<&Spanned<String>> = Vec::new();
    fn collect<'f>(
        p: &'f Pattern,
        whole: &mut Vec<&'f Spanned<String>>,
        phrases: &mut Vec<&'f Spanned<String>>,
    ) {
        match &p.kind {
            PatternKind::Exact(v) => whole.extend(v.iter()),
            PatternKind::Contains(v) => phrases.extend(v.iter()),
            _ => {}
        }
    }
    for t in &flow.triggers {
        if let TriggerKind::Message(Some(p)) = &t.kind {
            collect(p, &mut whole, &mut phrases);
        }
    }
    for t in flow
        .transitions
        .iter()
        .chain(flow.states.iter().flat_map(|s| s.transitions.iter()))
    {
        if let TransitionKind::Reply(p) = &t.kind {
            collect(p, &mut whole, &mut phrases);
        }
    }
    for state in &flow.states {
        for action in &state.actions {
            if let ActionKind::Ask(ask) = &action.kind {
                if let Some(Spanned {
                    value: Expect::Choice(choices),
                    ..
                }) = &ask.expect
                {
                    whole.extend(choices.iter().map(|(k, _)| k));
                }
            }
        }
    }
    for text in &whole {
        if let Some(what) = reserved(&normalize_opt_keyword(&text.value)) {
            diags.push(
                Diagnostic::error(Code::ReservedKeyword, format!("`{}` is {what}", text.value))
                    .label(text.span, "Rapport answers this itself; a flow never sees it")
                    .help("the runtime opts the contact out, back in, or sends the help reply for every flow (rapport.yaml `opt_out:`, or its defaults). Remove it here"),
            );
        }
    }
    for text in whole.iter().chain(&phrases) {
        let normal = normalize_keyword(&text.value);
        if reserved(&normal).is_some() {
            continue;
        }
        if let Some(k) = escalation.iter().find(|k| contains_phrase(&normal, k)) {
            let message = if normal == *k {
                format!("`{}` is an escalation keyword", text.value)
            } else {
                format!("`{}` contains the escalation keyword `{k}`", text.value)
            };
            diags.push(
                Diagnostic::warning(Code::EscalationKeyword, message)
                    .label(text.span, "a message with it goes straight to a person")
                    .help("messages with an escalation keyword open a handoff to the escalation queue before any flow sees them (rapport.yaml `escalation:`), so this never matches them"),
            );
        }
    }
}

// ---------------------------------------------------------------- overlapping triggers

/// Triggers of different flows with the same priority that can match the same input.
pub(crate) fn across_flows(
    settings: &Settings,
    files: &[SourceFile<'_>],
    flows: &[CheckedFlow<'_>],
    diags: &mut Vec<FileDiagnostic>,
) {
    // Only flows of equal priority compete; group them first so a project of many flows
    // does not compare every pair.
    let mut by_priority: HashMap<i64, Vec<(&CheckedFlow<'_>, Vec<&str>)>> = HashMap::new();
    for f in flows {
        let priority = f.flow.priority.as_ref().map(|p| p.value).unwrap_or(0);
        let channels: Vec<&str> = match &f.flow.channels {
            Some(c) => c.value.iter().map(|n| n.value.as_str()).collect(),
            None => settings.channels.keys().map(String::as_str).collect(),
        };
        by_priority.entry(priority).or_default().push((f, channels));
    }
    for (priority, group) in &by_priority {
        for (i, (a, a_channels)) in group.iter().enumerate() {
            // For each trigger of `a`, the earlier flows one of whose triggers it overlaps
            // (each such flow once, at the first trigger of `a` that overlaps it).
            let mut found: Vec<(usize, Vec<(&CheckedFlow<'_>, &Trigger)>)> = Vec::new();
            for (b, b_channels) in &group[..i] {
                // An input comes on one channel: flows with none in common never compete.
                if !a_channels.iter().any(|c| b_channels.contains(c)) {
                    continue;
                }
                let hit = a.flow.triggers.iter().enumerate().find_map(|(k, ta)| {
                    b.flow
                        .triggers
                        .iter()
                        .find(|tb| overlap(ta, tb))
                        .map(|tb| (k, tb))
                });
                if let Some((k, tb)) = hit {
                    match found.iter_mut().find(|(t, _)| *t == k) {
                        Some((_, others)) => others.push((b, tb)),
                        None => found.push((k, vec![(b, tb)])),
                    }
                }
            }
            found.sort_by_key(|(k, _)| *k);
            for (k, others) in found {
                let ta = &a.flow.triggers[k];
                let place = |(b, tb): &(&CheckedFlow<'_>, &Trigger)| {
                    let (line, _) = line_col(files[b.file].source, tb.span.start);
                    format!(
                        "`{}` ({}, line {line})",
                        b.flow.name.value, files[b.file].path
                    )
                };
                let message = match others.as_slice() {
                    [(b, _)] => format!(
                        "flows `{}` and `{}` start on the same input with the same priority",
                        a.flow.name.value, b.flow.name.value
                    ),
                    _ => format!(
                        "flow `{}` starts on the same input as {} other flows with the same priority",
                        a.flow.name.value,
                        others.len()
                    ),
                };
                let shown: Vec<String> = others.iter().take(OTHERS_SHOWN).map(place).collect();
                let more = others.len().saturating_sub(OTHERS_SHOWN);
                let mut label = format!("also matched by {}", shown.join(", "));
                if more > 0 {
                    label.push_str(&format!(" and {more} more"));
                }
                let help = if others.len() == 1 {
                    format!("give one of them a higher `priority` (both are {priority}), or make the triggers different")
                } else {
                    format!("give them different `priority` values (all are {priority}), or make the triggers different")
                };
                diags.push(FileDiagnostic {
                    file: a.file,
                    diagnostic: Diagnostic::error(Code::OverlappingTriggers, message)
                        .label(ta.span, label)
                        .help(help),
                });
            }
        }
    }
}

/// Flows named in one overlap diagnostic; the rest are counted.
const OTHERS_SHOWN: usize = 3;

/// Whether two triggers can match the same input. When both have a `when` condition
/// they may exclude each other, which the checker cannot decide: not reported. One
/// condition alone only narrows one trigger, whose inputs the other still matches.
fn overlap(a: &Trigger, b: &Trigger) -> bool {
    if a.when.is_some() && b.when.is_some() {
        return false;
    }
    match (&a.kind, &b.kind) {
        (TriggerKind::Event(x), TriggerKind::Event(y)) => x.value == y.value,
        (TriggerKind::Message(x), TriggerKind::Message(y))
        | (TriggerKind::Comment(x), TriggerKind::Comment(y)) => {
            patterns_overlap(x.as_ref().map(|p| &p.kind), y.as_ref().map(|p| &p.kind))
        }
        _ => false,
    }
}

fn patterns_overlap(a: Option<&PatternKind>, b: Option<&PatternKind>) -> bool {
    use PatternKind::*;
    let (a, b) = match (a, b) {
        (None, _) | (_, None) | (Some(Any), _) | (_, Some(Any)) => return true,
        (Some(a), Some(b)) => (a, b),
    };
    let norm = |v: &[Spanned<String>]| {
        v.iter()
            .map(|s| normalize_keyword(&s.value))
            .collect::<Vec<_>>()
    };
    let lower =
        |v: &[Spanned<String>]| v.iter().map(|s| s.value.to_lowercase()).collect::<Vec<_>>();
    match (a, b) {
        (Exact(x), Exact(y)) => norm(x).iter().any(|t| norm(y).contains(t)),
        (Contains(x), Contains(y)) => lower(x).iter().any(|t| lower(y).contains(t)),
        (Exact(x), Contains(y)) | (Contains(y), Exact(x)) => norm(x)
            .iter()
            .any(|t| lower(y).iter().any(|p| contains_phrase(t, p))),
        (Intent(x), Intent(y)) => x.value == y.value,
        (Matches(x), Matches(y)) => x.source == y.source,
        // A regex against texts: does it find any of them (as the runtime would)?
        (Matches(r), Exact(v))
        | (Exact(v), Matches(r))
        | (Matches(r), Contains(v))
        | (Contains(v), Matches(r)) => regex::RegexBuilder::new(&r.source)
            .case_insensitive(!r.source.starts_with("(?-i)"))
            .build()
            .is_ok_and(|re| v.iter().any(|t| re.is_match(&t.value))),
        (Sentiment { op: o1, value: v1 }, Sentiment { op: o2, value: v2 }) => o1 == o2 && v1 == v2,
        _ => false,
    }
}

// ---------------------------------------------------------------- window safety

/// Marketing sends that can go out more than the channel's window after the contact's
/// last message, with no `or template` to fall back on.
fn window(settings: &Settings, flow: &Flow, g: &FlowGraph, diags: &mut Vec<Diagnostic>) {
    let channels: Vec<&String> = match &flow.channels {
        Some(c) => c.value.iter().map(|n| &n.value).collect(),
        None => settings.channels.keys().collect(),
    };
    let Some((window, channel)) = channels
        .iter()
        .filter_map(|c| {
            settings
                .channels
                .get(*c)
                .and_then(|ch| ch.window)
                .map(|w| (w.seconds, c.as_str()))
        })
        .min()
    else {
        return;
    };
    let late = window + 1;
    let n = flow.states.len();
    if n == 0 {
        return;
    }
    let by_message = !flow.triggers.is_empty()
        && flow
            .triggers
            .iter()
            .all(|t| matches!(t.kind, TriggerKind::Message(_)));
    let by_comment = flow
        .triggers
        .iter()
        .any(|t| matches!(t.kind, TriggerKind::Comment(_)));
    // Longest time since the contact's last message on entering each state, capped at
    // "later than the window"; `None`: not reached.
    let mut since: Vec<Option<u64>> = vec![None; n];
    let mut why: Vec<Option<(usize, &Edge)>> = vec![None; n];
    since[0] = Some(if by_message { 0 } else { late });
    for _ in 0..=n {
        let mut changed = false;
        for u in 0..n {
            let Some(t) = since[u] else { continue };
            for (v, edge) in g.edges_from(u) {
                let next = match &edge.kind {
                    k if k.needs_contact() => 0,
                    EdgeKind::After(d) => (t + d).min(late),
                    EdgeKind::Immediate | EdgeKind::Branch { .. } => t,
                    // Events and agents can come at any time later.
                    _ => late,
                };
                if since[v].is_none_or(|cur| next > cur) {
                    since[v] = Some(next);
                    why[v] = Some((u, edge));
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    for (v, state) in flow.states.iter().enumerate() {
        if since[v].is_none_or(|t| t <= window) {
            continue;
        }
        let mut first_send = v == 0;
        for action in &state.actions {
            let is_send = matches!(
                action.kind,
                ActionKind::Send { .. } | ActionKind::SendOneOf { .. } | ActionKind::Ask(_)
            );
            // A run started by a comment answers it privately first: no window applies.
            if by_comment && first_send && is_send {
                first_send = false;
                continue;
            }
            let what = match &action.kind {
                // A draft goes out when a person approves it, not when the state is
                // entered.
                ActionKind::Send {
                    template: None,
                    approve: None,
                    ..
                } => "this message",
                ActionKind::SendOneOf { .. } => "this `one of` message",
                ActionKind::Ask(ask) if ask.template.is_none() => "this question",
                _ => continue,
            };
            let path = witness(flow, &why, v, !by_message);
            let help = match &action.kind {
                ActionKind::Send { .. } => "add `or template NAME` with an approved template, used when the window has closed",
                ActionKind::Ask(_) => "add `or template NAME` after the question, with an approved template that asks it, used when the window has closed",
                _ => "`one of` cannot have a template: send it after a reply from the contact, or send a templated message first and go on once they answer",
            };
            diags.push(
                Diagnostic::warning(
                    Code::OutsideWindow,
                    format!(
                        "{what} can go out more than {} after the contact's last message",
                        duration(window)
                    ),
                )
                .label(
                    action.span,
                    format!("outside the {channel} window, it would be suppressed"),
                )
                .help(format!("{help}. For example: {path}")),
            );
        }
    }
}

/// The path that made a state late, from the start, as text.
fn witness(
    flow: &Flow,
    why: &[Option<(usize, &Edge)>],
    target: usize,
    started_late: bool,
) -> String {
    let mut steps = vec![format!("`{}`", flow.states[target].name.value)];
    let mut current = target;
    let mut seen = vec![false; flow.states.len()];
    while let Some((u, label)) = &why[current] {
        if seen[current] {
            break;
        }
        seen[current] = true;
        steps.push(format!(
            "`{}` —{}→",
            flow.states[*u].name.value,
            label.kind.label()
        ));
        current = *u;
    }
    let start = if current == 0 && started_late {
        "a run started by an event or comment: "
    } else {
        ""
    };
    steps.reverse();
    crate::graph::elide(&mut steps);
    format!("{start}{}", steps.join(" "))
}

// ---------------------------------------------------------------- text length

/// The longest text a channel's platform sends, in characters, by the channel's name:
/// Messenger and Instagram 2,000; WhatsApp and Telegram 4,096; SMS 1,600 (ten segments,
/// what gateways such as Twilio concatenate at most).
pub(crate) fn max_text(channel: &str) -> Option<usize> {
    match channel {
        "messenger" | "instagram" => Some(2000),
        "whatsapp" | "telegram" => Some(4096),
        "sms" => Some(1600),
        _ => None,
    }
}

/// The longest public reply to a comment: Instagram 2,200 characters, a Facebook comment
/// (on the `messenger` channel's Page) 8,000.
pub(crate) fn max_reply(channel: &str) -> Option<usize> {
    match channel {
        "instagram" => Some(2200),
        "messenger" => Some(8000),
        _ => None,
    }
}

/// Sends, questions and public replies whose text can be longer than a channel of the
/// flow allows. A text counts its fixed characters and the project variables it uses;
/// the first send of the first state (which every run makes first) also counts the
/// disclosure prefix and, in a marketing flow, the opt-out footer. Other tokens count
/// nothing, so a warning is certain to be right for some run: their values can only
/// make a text longer.
fn text_length(settings: &Settings, flow: &Flow, diags: &mut Vec<Diagnostic>) {
    let names: Vec<&str> = match &flow.channels {
        Some(c) => c.value.iter().map(|n| n.value.as_str()).collect(),
        None => settings.channels.keys().map(String::as_str).collect(),
    };
    let limits = |of: fn(&str) -> Option<usize>| -> Vec<(&str, usize)> {
        let mut l: Vec<(&str, usize)> = names
            .iter()
            .filter_map(|c| of(c).map(|m| (*c, m)))
            .collect();
        l.sort_by_key(|(_, m)| *m);
        l
    };
    let (sends, replies) = (limits(max_text), limits(max_reply));
    let marketing = flow.purpose.as_ref().map(|p| p.value) == Some(Purpose::Marketing);
    let first_extra = settings.disclosure.chars().count()
        + 1
        + if marketing {
            settings.opt_out.footer.chars().count() + 1
        } else {
            0
        };
    let length = |text: &rapport_syntax::ast::Text| -> (usize, usize) {
        let mut n = 0;
        let mut unknown = 0;
        for part in &text.parts {
            match part {
                rapport_syntax::ast::TextPart::Literal(l) => n += l.chars().count(),
                rapport_syntax::ast::TextPart::Token(t) => match settings.vars.get(&t.path) {
                    Some(v) => n += v.chars().count(),
                    None => unknown += 1,
                },
            }
        }
        (n, unknown)
    };
    let mut check = |text: &rapport_syntax::ast::Text, limits: &[(&str, usize)], extra: usize| {
        let Some(&(channel, limit)) = limits.first() else {
            return;
        };
        let (fixed, unknown) = length(text);
        let most = fixed + extra;
        if most <= limit {
            return;
        }
        let tokens = if unknown > 0 {
            format!(" before the values of its {unknown} token(s)")
        } else {
            String::new()
        };
        let also: Vec<&str> = limits
            .iter()
            .filter(|(c, m)| *c != channel && most > *m)
            .map(|(c, _)| *c)
            .collect();
        let also = if also.is_empty() {
            String::new()
        } else {
            format!(" (and {})", also.join(", "))
        };
        let added = if extra == 0 {
            String::new()
        } else if marketing {
            format!(", with {extra} added (disclosure, opt-out footer)")
        } else {
            format!(", with {extra} added (disclosure)")
        };
        diags.push(
            Diagnostic::warning(
                Code::TextTooLong,
                format!(
                    "this message can be {most} characters long{tokens}; {channel}{also} sends at most {limit}"
                ),
            )
            // The text's opening quote: a long text underlined in full hides the message.
            .label(
                Span {
                    start: text.span.start,
                    end: (text.span.start + 1).min(text.span.end),
                },
                format!("{fixed} characters here{added}"),
            )
            .help("shorten it, or split it into two sends; the platform would refuse it and the contact would get nothing (delivery_failed, too_long)".to_string()),
        );
    };
    for (i, state) in flow.states.iter().enumerate() {
        let mut first = i == 0;
        for action in &state.actions {
            let texts: Vec<&rapport_syntax::ast::Text> = match &action.kind {
                ActionKind::Send { text, .. } => vec![text],
                ActionKind::SendOneOf { variants } => variants.iter().map(|(_, t)| t).collect(),
                ActionKind::Ask(ask) => vec![&ask.question],
                ActionKind::Reply(text) => {
                    check(text, &replies, 0);
                    continue;
                }
                _ => continue,
            };
            let extra = if first { first_extra } else { 0 };
            first = false;
            for text in texts {
                check(text, &sends, extra);
            }
        }
    }
}

// ---------------------------------------------------------------- message budget

/// The most automated sends a contact can get within `rate_limit.per` without writing
/// anything, against `rate_limit.max`.
fn budget(settings: &Settings, flow: &Flow, g: &FlowGraph, diags: &mut Vec<Diagnostic>) {
    let Some(limit) = settings.rate_limit else {
        return;
    };
    let n = flow.states.len();
    let cap = limit.max as usize + 1;
    let sends = |v: usize| {
        flow.states[v]
            .actions
            .iter()
            .filter(|a| {
                matches!(
                    a.kind,
                    ActionKind::Send { approve: None, .. }
                        | ActionKind::SendOneOf { .. }
                        | ActionKind::Ask(_)
                )
            })
            .count()
    };
    // Dijkstra over (state, sends so far, flow-wide events used): the least time from the
    // first send of a window to having sent `c` messages on entering `v`. Each flow-wide
    // event is taken at most once per window: the same outside event arriving again and
    // again within the hour is not a flow's doing.
    let wide_events: Vec<&str> = flow
        .transitions
        .iter()
        .filter_map(|t| match &t.kind {
            TransitionKind::Event(e) => Some(e.value.as_str()),
            _ => None,
        })
        .collect();
    let event_bit = |name: &str| {
        wide_events
            .iter()
            .position(|e| *e == name)
            .filter(|&i| i < 64)
            .map(|i| 1u64 << i)
    };
    type Key = (usize, usize, u64);
    let mut best: HashMap<Key, u64> = HashMap::new();
    let mut parent: HashMap<Key, (Key, &Edge)> = HashMap::new();
    let mut heap = BinaryHeap::new();
    for v in 0..n {
        let s = sends(v).min(cap);
        if s > 0 {
            best.insert((v, s, 0), 0);
            heap.push(Reverse((0u64, v, s, 0u64)));
        }
    }
    let mut exceeded = None;
    while let Some(Reverse((t, u, c, used))) = heap.pop() {
        if best.get(&(u, c, used)).is_some_and(|&b| t > b) {
            continue;
        }
        if c >= cap {
            exceeded = Some(((u, c, used), t));
            break;
        }
        for (v, edge) in g.edges_from(u) {
            let mut used2 = used;
            let dt = match &edge.kind {
                k if k.needs_contact() => continue,
                EdgeKind::After(d) => *d,
                EdgeKind::Event(name) if edge.flow_wide => match event_bit(name) {
                    Some(bit) if used & bit != 0 => continue,
                    Some(bit) => {
                        used2 |= bit;
                        0
                    }
                    None => continue,
                },
                _ => 0,
            };
            let t2 = t.saturating_add(dt);
            if t2 >= limit.per.seconds {
                continue;
            }
            let c2 = (c + sends(v)).min(cap);
            let key = (v, c2, used2);
            if best.get(&key).is_none_or(|&b| t2 < b) {
                best.insert(key, t2);
                parent.insert(key, ((u, c, used), edge));
                heap.push(Reverse((t2, v, c2, used2)));
            }
        }
    }
    let Some((last, t)) = exceeded else { return };
    let v = last.0;
    let mut steps = vec![format!("`{}`", flow.states[v].name.value)];
    let mut key = last;
    for _ in 0..parent.len() {
        match parent.get(&key) {
            Some((from, label)) => {
                steps.push(format!(
                    "`{}` —{}→",
                    flow.states[from.0].name.value,
                    label.kind.label()
                ));
                key = *from;
            }
            None => break,
        }
    }
    steps.reverse();
    crate::graph::elide(&mut steps);
    let span: Span = flow.states[v].name.span;
    diags.push(
        Diagnostic::warning(
            Code::MessageBudget,
            format!(
                "this flow can send more than {} messages within {} without the contact replying",
                limit.max,
                duration(limit.per.seconds)
            ),
        )
        .label(
            span,
            if t == 0 {
                "the message over the limit, at the same moment as the first".to_string()
            } else {
                format!("the message over the limit, {} after the first", duration(t))
            },
        )
        .help(format!(
            "the rate limit would suppress it: {}. Space the messages out with longer `after` waits, send fewer, or raise `rate_limit` in rapport.yaml",
            steps.join(" ")
        )),
    );
}
