//! Name resolution: states, channels, queues, templates, events, guard metrics; `one of`
//! keys; `with` pairs against template parameters; `retry` without `else`.

use std::collections::HashMap;

use rapport_syntax::ast::{ActionKind, Flow, Name, Text, TransitionKind, TriggerKind};
use rapport_syntax::{did_you_mean, Code, Diagnostic, Settings};

/// The guard metrics a rollout's `halt when` may name (docs/language.md, `halt when`).
pub(crate) const METRICS: [&str; 4] = [
    "opt_out_rate",
    "handoff_rate",
    "error_rate",
    "conversion_rate",
];

/// State name → index, reporting duplicates (the first one wins).
pub(crate) fn states<'f>(flow: &'f Flow, diags: &mut Vec<Diagnostic>) -> HashMap<&'f str, usize> {
    let mut index = HashMap::with_capacity(flow.states.len());
    for (i, state) in flow.states.iter().enumerate() {
        let name = state.name.value.as_str();
        if let Some(&first) = index.get(name) {
            let first: &rapport_syntax::ast::State = &flow.states[first];
            diags.push(
                Diagnostic::error(
                    Code::DuplicateName,
                    format!("state `{name}` is defined twice"),
                )
                .label(state.name.span, "second definition")
                .label(first.name.span, "first definition")
                .help("rename one of them; transitions go to the first"),
            );
        } else {
            index.insert(name, i);
        }
    }
    index
}

fn unknown(what: &str, name: &Name, known: &[&str], where_: &str) -> Diagnostic {
    let d = Diagnostic::error(
        Code::UnknownName,
        format!("unknown {what} `{}`", name.value),
    )
    .label(name.span, format!("no {what} has this name"));
    match did_you_mean(&name.value, known.iter().copied()) {
        Some(s) => d.help(format!("did you mean `{s}`?")),
        None if known.is_empty() => d.help(format!("declare it {where_}")),
        None => {
            let mut list: Vec<&str> = known.to_vec();
            list.sort_unstable();
            list.truncate(12);
            d.help(format!(
                "the known names are {}; or declare it {where_}",
                list.join(", ")
            ))
        }
    }
}

/// Whether every state a flow goes to exists and state names are unique: otherwise the
/// graph has holes, and graph checks would report them rather than the mistake.
pub(crate) fn graph_is_whole(flow: &Flow, states: &HashMap<&str, usize>) -> bool {
    if states.len() != flow.states.len() {
        return false;
    }
    let known = |t: &Name| states.contains_key(t.value.as_str());
    let transitions = flow
        .transitions
        .iter()
        .chain(flow.states.iter().flat_map(|s| s.transitions.iter()));
    transitions.map(|t| &t.target).all(known)
        && flow
            .states
            .iter()
            .flat_map(|s| s.actions.iter())
            .all(|a| match &a.kind {
                ActionKind::Goto(t) | ActionKind::Branch { target: t, .. } => known(t),
                ActionKind::Ask(ask) => {
                    known(&ask.then) && ask.otherwise.as_ref().is_none_or(known)
                }
                _ => true,
            })
}

/// Every name a flow uses, against the flow's states and the project's settings.
pub(crate) fn names(
    settings: &Settings,
    flow: &Flow,
    states: &HashMap<&str, usize>,
    diags: &mut Vec<Diagnostic>,
) {
    let state_names: Vec<&str> = flow.states.iter().map(|s| s.name.value.as_str()).collect();
    let channels: Vec<&str> = settings.channels.keys().map(String::as_str).collect();
    let queues: Vec<&str> = settings.queues.iter().map(String::as_str).collect();
    let templates: Vec<&str> = settings.templates.keys().map(String::as_str).collect();
    let events: Vec<&str> = settings.events.keys().map(String::as_str).collect();

    let target = |t: &Name, diags: &mut Vec<Diagnostic>| {
        // `-> end` without a state named `end` is reported by the parser.
        if !states.contains_key(t.value.as_str()) && t.value != "end" {
            diags.push(unknown(
                "state",
                t,
                &state_names,
                "with `state NAME { ... }` in this flow",
            ));
        }
    };
    let event = |e: &Name, diags: &mut Vec<Diagnostic>| {
        if !settings.events.contains_key(&e.value) {
            diags.push(unknown(
                "event",
                e,
                &events,
                "under `events:` in rapport.yaml with its fields",
            ));
        }
    };

    if let Some(chs) = &flow.channels {
        for c in &chs.value {
            if !settings.channels.contains_key(&c.value) {
                diags.push(unknown(
                    "channel",
                    c,
                    &channels,
                    "under `channels:` in rapport.yaml",
                ));
            }
        }
    }
    for trigger in &flow.triggers {
        if let TriggerKind::Event(e) = &trigger.kind {
            event(e, diags);
        }
    }
    if let Some(goal) = &flow.goal {
        event(&goal.event, diags);
    }
    if let Some(halt) = &flow.halt {
        for guard in &halt.guards {
            if !METRICS.contains(&guard.metric.value.as_str()) {
                let d = Diagnostic::error(
                    Code::UnknownName,
                    format!("unknown guard metric `{}`", guard.metric.value),
                )
                .label(guard.metric.span, "not a metric Rapport measures");
                diags.push(match did_you_mean(&guard.metric.value, METRICS) {
                    Some(s) => d.help(format!(
                        "did you mean `{s}`? The metrics are {}",
                        METRICS.join(", ")
                    )),
                    None => d.help(format!("the metrics are {}", METRICS.join(", "))),
                });
            }
        }
    }

    let mut variant_keys: Option<(Vec<&str>, rapport_syntax::Span)> = None;
    let transitions = flow
        .transitions
        .iter()
        .chain(flow.states.iter().flat_map(|s| s.transitions.iter()));
    for t in transitions {
        target(&t.target, diags);
        if let TransitionKind::Event(e) = &t.kind {
            event(e, diags);
        }
    }
    for state in &flow.states {
        for action in &state.actions {
            if let ActionKind::Send {
                approve: Some(a), ..
            } = &action.kind
            {
                if !settings.queues.contains(&a.queue.value) {
                    diags.push(unknown(
                        "queue",
                        &a.queue,
                        &queues,
                        "under `queues:` in rapport.yaml",
                    ));
                }
            }
            match &action.kind {
                ActionKind::Goto(t) | ActionKind::Branch { target: t, .. } => target(t, diags),
                ActionKind::Ask(ask) => {
                    target(&ask.then, diags);
                    if let Some(o) = &ask.otherwise {
                        target(o, diags);
                    }
                    if let Some(t) = &ask.template {
                        match settings.templates.get(&t.name.value) {
                            None => diags.push(unknown(
                                "template",
                                &t.name,
                                &templates,
                                "under `templates:` in rapport.yaml",
                            )),
                            Some(Some(params)) => {
                                template_params(&t.name, params, &t.with, &ask.question, diags)
                            }
                            Some(None) => {}
                        }
                    }
                    if let (Some(retry), None) = (&ask.retry, &ask.otherwise) {
                        diags.push(
                            Diagnostic::warning(Code::RetryWithoutElse, "`retry` without `else`: after the last retry the run waits silently")
                                .label(retry.span, "retries here")
                                .help("add `else -> STATE` to say what happens when the answers stay invalid"),
                        );
                    }
                }
                ActionKind::Handoff { queue, .. } if !settings.queues.contains(&queue.value) => {
                    diags.push(unknown(
                        "queue",
                        queue,
                        &queues,
                        "under `queues:` in rapport.yaml",
                    ));
                }
                ActionKind::Send {
                    text,
                    template: Some(t),
                    ..
                } => match settings.templates.get(&t.name.value) {
                    None => diags.push(unknown(
                        "template",
                        &t.name,
                        &templates,
                        "under `templates:` in rapport.yaml",
                    )),
                    Some(Some(params)) => template_params(&t.name, params, &t.with, text, diags),
                    Some(None) => {}
                },
                ActionKind::SendOneOf { variants } => {
                    let keys: Vec<&str> = variants.iter().map(|(k, _)| k.value.as_str()).collect();
                    match &variant_keys {
                        None => variant_keys = Some((keys, action.span)),
                        Some((first, first_span)) if *first != keys => {
                            diags.push(
                                Diagnostic::error(Code::VariantKeys, "every `one of` in a flow must list the same variants")
                                    .label(action.span, format!("variants {}", crate::join_capped(&keys, ", ")))
                                    .label(*first_span, format!("variants {}", crate::join_capped(first, ", ")))
                                    .help("a contact sees one variant across the whole flow: use the same keys, in the same order, in every `one of`"),
                            );
                        }
                        Some(_) => {}
                    }
                }
                _ => {}
            }
        }
    }
}

/// `with` pairs (or, without them, the text's tokens) against the declared parameters.
fn template_params(
    name: &Name,
    params: &[String],
    with: &[(Name, Text)],
    text: &Text,
    diags: &mut Vec<Diagnostic>,
) {
    if with.is_empty() {
        // No `with`: the text's tokens, keyed by name without `event.`.
        let given: Vec<String> = text
            .tokens()
            .map(|t| t.path.strip_prefix("event.").unwrap_or(&t.path).to_string())
            .collect();
        let missing: Vec<&str> = params
            .iter()
            .filter(|p| !given.contains(p))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            diags.push(
                Diagnostic::error(
                    Code::TemplateParams,
                    format!(
                        "template `{}` needs {} but the text does not provide it",
                        name.value,
                        backticked(&missing)
                    ),
                )
                .label(name.span, format!("parameters: {}", crate::join_capped(params, ", ")))
                .help(format!(
                    "add `with {}` after the template name (with `with`, every parameter is given there)",
                    params
                        .iter()
                        .map(|m| format!("{m} = \"...\""))
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            );
        }
        return;
    }
    let given: Vec<&str> = with.iter().map(|(k, _)| k.value.as_str()).collect();
    let mut missing: Vec<&str> = params
        .iter()
        .map(String::as_str)
        .filter(|p| !given.contains(p))
        .collect();
    for (key, _) in with {
        if !params.contains(&key.value) {
            // A misspelt key stands for a missing parameter: one error, with the fix.
            let unknown_keys = with
                .iter()
                .filter(|(k, _)| !params.contains(&k.value))
                .count();
            let meant = did_you_mean(&key.value, missing.iter().copied())
                .or_else(|| (unknown_keys == 1 && missing.len() == 1).then(|| missing[0]));
            if let Some(meant) = meant {
                diags.push(
                    Diagnostic::error(
                        Code::TemplateParams,
                        format!("template `{}` has no parameter `{}`", name.value, key.value),
                    )
                    .label(key.span, format!("did you mean `{meant}`?"))
                    .help(format!(
                        "rename it to `{meant}`; the parameters are {}",
                        crate::join_capped(params, ", ")
                    )),
                );
                missing.retain(|m| *m != meant);
                continue;
            }
            let d = Diagnostic::error(
                Code::TemplateParams,
                format!("template `{}` has no parameter `{}`", name.value, key.value),
            )
            .label(key.span, "not a parameter of this template");
            diags.push(
                match did_you_mean(&key.value, params.iter().map(String::as_str)) {
                    Some(s) => d.help(format!(
                        "did you mean `{s}`? Its parameters are {}",
                        crate::join_capped(params, ", ")
                    )),
                    None => d.help(format!(
                        "its parameters are {}",
                        crate::join_capped(params, ", ")
                    )),
                },
            );
        }
    }
    if !missing.is_empty() {
        diags.push(
            Diagnostic::error(
                Code::TemplateParams,
                format!(
                    "template `{}` also needs {}",
                    name.value,
                    backticked(&missing)
                ),
            )
            .label(
                name.span,
                format!("parameters: {}", crate::join_capped(params, ", ")),
            )
            .help(format!(
                "add {} to the `with` list",
                missing
                    .iter()
                    .map(|m| format!("{m} = \"...\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        );
    }
}

fn backticked(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    crate::join_capped(&quoted, ", ")
}
