//! pest pairs to AST nodes. Also reports what the lenient grammar lets through but the
//! language forbids: repeated header clauses, actions out of order, bad durations, words
//! that are not allowed values, upper-case names.

use pest::iterators::Pair;

use super::Rule;
use crate::ast::*;
use crate::diagnostic::{did_you_mean, Code, Diagnostic, Span};
use crate::text;

pub(crate) struct Builder<'d> {
    /// Absolute offset of the text pest parsed (pieces parsed on their own during recovery).
    base: usize,
    diags: &'d mut Vec<Diagnostic>,
}

/// The first child of a pair; the grammar guarantees it exists wherever this is called.
fn first(pair: Pair<'_, Rule>) -> Option<Pair<'_, Rule>> {
    pair.into_inner().next()
}

/// Children that are not keywords or punctuation: the values a clause carries.
fn values(pair: Pair<'_, Rule>) -> impl Iterator<Item = Pair<'_, Rule>> {
    pair.into_inner().filter(|p| !is_noise(p.as_rule()))
}

/// Keywords and punctuation: they shape a clause but carry no value.
fn is_noise(rule: Rule) -> bool {
    use Rule::*;
    matches!(
        rule,
        arrow
            | open_brace
            | close_brace
            | open_paren
            | close_paren
            | equals
            | colon
            | comma
            | kw_flow
            | kw_state
            | kw_title
            | kw_version
            | kw_reentry
            | kw_purpose
            | kw_channels
            | kw_start
            | kw_priority
            | kw_expire
            | kw_rollout
            | kw_halt
            | kw_goal
            | kw_on
            | kw_after
            | kw_every
            | kw_within
            | kw_when
            | kw_runs
            | kw_message
            | kw_comment
            | kw_event
            | kw_reply
            | kw_agent
            | kw_send
            | kw_one
            | kw_of
            | kw_template
            | kw_with
            | kw_hide
            | kw_review
            | kw_ask
            | kw_expect
            | kw_retry
            | kw_then
            | kw_else
            | kw_set
            | kw_tag
            | kw_emit
            | kw_handoff
            | kw_summary
            | kw_sla
            | kw_end
            | kw_contains
            | kw_matches
            | kw_intent
            | kw_sentiment
            | kw_any
            | kw_and
            | kw_or
            | kw_not
            | kw_has
            | kw_choice
    )
}

impl<'d> Builder<'d> {
    pub(crate) fn new(base: usize, _source: &str, diags: &'d mut Vec<Diagnostic>) -> Self {
        Builder { base, diags }
    }

    /// The pair's span without the white space and comments pest keeps at the end of a
    /// rule whose optional tail did not match (`send "x"` followed by a comment).
    fn span(&self, pair: &Pair<'_, Rule>) -> Span {
        let s = pair.as_span();
        let text = s.as_str();
        let mut kept = text.trim_end();
        if kept.len() < text.len() && kept.contains('#') {
            kept = strip_trailing_comments(kept);
        }
        Span::new(s.start() + self.base, s.start() + kept.len() + self.base)
    }

    fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    // ------------------------------------------------------------------ flows

    pub(crate) fn flow(&mut self, pair: Pair<'_, Rule>) -> Flow {
        let span = self.span(&pair);
        let mut items = values(pair);
        let name = match items.next() {
            Some(p) => self.name(p),
            None => Spanned::new(String::new(), span),
        };
        let mut flow = Flow {
            name,
            span,
            title: None,
            version: None,
            reentry: None,
            purpose: None,
            channels: None,
            triggers: Vec::new(),
            priority: None,
            expire_after: None,
            rollout: None,
            halt: None,
            goal: None,
            transitions: Vec::new(),
            states: Vec::new(),
            recovered: false,
        };
        let errors_before = self.diags.len();
        for item in items {
            self.flow_item(&mut flow, item);
        }
        self.check_rollout(&flow);
        self.check_end_targets(&flow);
        // A value error (a bad duration, an unknown agent event) drops the clause it was
        // in: graph checks on this flow would report the hole, not the mistake.
        flow.recovered |= self.diags.len() > errors_before;
        flow
    }

    /// Stages must grow and end at 100%.
    fn check_rollout(&mut self, flow: &Flow) {
        let Some(rollout) = &flow.rollout else { return };
        for pair in rollout.stages.windows(2) {
            if pair[1].value <= pair[0].value {
                self.error(
                    Diagnostic::error(
                        Code::BadPercent,
                        "rollout stages must grow from one to the next",
                    )
                    .label(
                        pair[1].span,
                        format!("not more than {}%", pair[0].value.as_f64()),
                    )
                    .label(pair[0].span, "the stage before")
                    .help("list the stages from smallest to largest, e.g. `5% -> 25% -> 100%`"),
                );
            }
        }
        if let Some(last) = rollout.stages.last() {
            if last.value.basis_points != 10_000 {
                self.error(
                    Diagnostic::error(Code::BadPercent, "the last rollout stage must be 100%")
                        .label(last.span, "the rollout stops here")
                        .help("end the stages with `-> 100%` so the version reaches every contact"),
                );
            }
        }
    }

    /// `-> end` is only valid when a state is named `end`; the action `end` finishes a run.
    fn check_end_targets(&mut self, flow: &Flow) {
        if flow.states.iter().any(|s| s.name.value == "end") {
            return;
        }
        let ask_targets = flow
            .states
            .iter()
            .flat_map(|s| s.actions.iter())
            .flat_map(|a| match &a.kind {
                ActionKind::Ask(ask) => vec![&ask.then]
                    .into_iter()
                    .chain(ask.otherwise.as_ref())
                    .collect(),
                ActionKind::Goto(t) => vec![t],
                _ => Vec::new(),
            });
        let transition_targets = flow
            .transitions
            .iter()
            .chain(flow.states.iter().flat_map(|s| s.transitions.iter()))
            .map(|t| &t.target);
        let bad: Vec<Span> = ask_targets
            .chain(transition_targets)
            .filter(|t| t.value == "end")
            .map(|t| t.span)
            .collect();
        for span in bad {
            self.error(
                Diagnostic::error(Code::UnknownWord, "`-> end` goes to a state named `end`, and this flow has none")
                    .label(span, "no state is called `end`")
                    .help("to finish the run, write the action `end` in a state (e.g. `state done { end }` and `-> done`)"),
            );
        }
    }

    fn flow_item(&mut self, flow: &mut Flow, item: Pair<'_, Rule>) {
        let span = self.span(&item);
        match item.as_rule() {
            Rule::state_decl => {
                let state = self.state(item);
                flow.states.push(state);
            }
            Rule::title_clause => {
                if let Some(s) = values(item).next() {
                    let v = self.literal(s);
                    self.set_once(&mut flow.title, Spanned::new(v, span), "title");
                }
            }
            Rule::version_clause => {
                if let Some(v) = values(item).next().and_then(|p| self.integer(p)) {
                    self.set_once(&mut flow.version, Spanned::new(v, span), "version");
                }
            }
            Rule::reentry_clause => {
                if let Some(v) = values(item).next().and_then(|p| self.reentry(p)) {
                    self.set_once(&mut flow.reentry, Spanned::new(v, span), "reentry");
                }
            }
            Rule::purpose_clause => {
                if let Some(p) = values(item).next() {
                    let word = self.name(p);
                    let purpose = match word.value.as_str() {
                        "marketing" => Some(Purpose::Marketing),
                        "transactional" => Some(Purpose::Transactional),
                        _ => {
                            self.unknown_word(&word, "purpose", &["marketing", "transactional"]);
                            None
                        }
                    };
                    if let Some(v) = purpose {
                        self.set_once(&mut flow.purpose, Spanned::new(v, span), "purpose");
                    }
                }
            }
            Rule::channels_clause => {
                let names = values(item).map(|p| self.name(p)).collect();
                self.set_once(&mut flow.channels, Spanned::new(names, span), "channels");
            }
            Rule::priority_clause => {
                if let Some(v) = values(item).next().and_then(|p| self.integer(p)) {
                    self.set_once(&mut flow.priority, Spanned::new(v, span), "priority");
                }
            }
            Rule::expire_clause => {
                if let Some(d) = values(item).next().and_then(|p| self.duration(p)) {
                    self.set_once(
                        &mut flow.expire_after,
                        Spanned::new(d.value, span),
                        "expire after",
                    );
                }
            }
            Rule::rollout_clause => {
                let rollout = self.rollout(item);
                self.set_once(&mut flow.rollout, rollout, "rollout");
            }
            Rule::halt_clause => {
                let halt = self.halt(item);
                self.set_once(&mut flow.halt, halt, "halt when");
            }
            Rule::goal_clause => {
                let mut v = values(item);
                let event = v.next().map(|p| self.name(p));
                let within = v.next().and_then(|p| self.duration(p));
                if let (Some(event), Some(within)) = (event, within) {
                    self.set_once(
                        &mut flow.goal,
                        Goal {
                            span,
                            event,
                            within,
                        },
                        "goal",
                    );
                }
            }
            Rule::start_clause => {
                if let Some(trigger) = values(item).next().and_then(|p| self.trigger(p)) {
                    flow.triggers.push(trigger);
                }
            }
            _ => {
                if let Some(t) = self.transition(item) {
                    if matches!(t.kind, TransitionKind::After(_)) {
                        self.error(
                            Diagnostic::error(
                                Code::MisplacedTransition,
                                "`after` transitions belong inside a state",
                            )
                            .label(t.span, "flow-wide transitions can only be `on ...`")
                            .help("move this line into the state that should wait, or use `expire after` for the whole flow"),
                        );
                    } else {
                        flow.transitions.push(t);
                    }
                }
            }
        }
    }

    /// Keeps the first of a clause that may appear once, and reports the repeat.
    fn set_once<T: HasSpan>(&mut self, slot: &mut Option<T>, value: T, what: &str) {
        match slot {
            Some(existing) => {
                let d = Diagnostic::error(
                    Code::DuplicateClause,
                    format!("`{what}` is given twice in this flow"),
                )
                .label(value.span_of(), "second one here")
                .label(existing.span_of(), "first one here")
                .help(format!("keep one `{what}` line and delete the other"));
                self.error(d);
            }
            None => *slot = Some(value),
        }
    }

    fn unknown_word(&mut self, word: &Name, what: &str, allowed: &[&str]) {
        let list = allowed
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let help = match did_you_mean(&word.value, allowed.iter().copied()) {
            Some(s) => format!("did you mean `{s}`? {what} can be {list}"),
            None => format!("{what} can be {list}"),
        };
        self.error(
            Diagnostic::error(
                Code::UnknownWord,
                format!("`{}` is not a valid {what}", word.value),
            )
            .label(word.span, format!("unknown {what}"))
            .help(help),
        );
    }

    fn reentry(&mut self, pair: Pair<'_, Rule>) -> Option<Reentry> {
        let inner = values(pair).next()?;
        if inner.as_rule() == Rule::duration {
            return self.duration(inner).map(|d| Reentry::After(d.value));
        }
        let word = self.name(inner);
        match word.value.as_str() {
            "always" => Some(Reentry::Always),
            "never" => Some(Reentry::Never),
            _ => {
                self.unknown_word(&word, "reentry", &["always", "never", "after DURATION"]);
                None
            }
        }
    }

    fn trigger(&mut self, pair: Pair<'_, Rule>) -> Option<Trigger> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let mut pattern = None;
        let mut event = None;
        let mut when = None;
        for p in values(pair) {
            match p.as_rule() {
                Rule::pattern => pattern = self.pattern(p),
                Rule::event_name => event = Some(self.name(p)),
                Rule::when_clause => when = first_value(p).and_then(|c| self.condition(c)),
                _ => {}
            }
        }
        let kind = match rule {
            Rule::message_trigger => TriggerKind::Message(pattern),
            Rule::comment_trigger => TriggerKind::Comment(pattern),
            _ => TriggerKind::Event(event?),
        };
        Some(Trigger { span, kind, when })
    }

    fn rollout(&mut self, pair: Pair<'_, Rule>) -> Rollout {
        let span = self.span(&pair);
        let mut stages = Vec::new();
        let mut every = None;
        let mut bad_stage = false;
        for p in values(pair) {
            match p.as_rule() {
                Rule::percent => match self.percent(p, 1) {
                    Some(pc) => stages.push(pc),
                    None => bad_stage = true,
                },
                Rule::duration => every = self.duration(p),
                _ => {}
            }
        }
        if bad_stage {
            // Reported already; checking the order of the rest would only repeat it.
            stages.clear();
        }
        Rollout {
            span,
            stages,
            every,
        }
    }

    fn halt(&mut self, pair: Pair<'_, Rule>) -> Halt {
        let span = self.span(&pair);
        let mut guards = Vec::new();
        let mut after_runs = None;
        for p in values(pair) {
            match p.as_rule() {
                Rule::guard => {
                    let gspan = self.span(&p);
                    let mut v = p.into_inner();
                    let metric = v.next().map(|p| self.name(p));
                    let op = v.next().map(|p| compare_op(p.as_str()));
                    let threshold = v.next().and_then(|p| self.percent(p, 0));
                    if let (Some(metric), Some(op), Some(threshold)) = (metric, op, threshold) {
                        guards.push(Guard {
                            span: gspan,
                            metric,
                            op,
                            threshold,
                        });
                    }
                }
                Rule::integer => {
                    let s = self.span(&p);
                    after_runs = self.integer(p).map(|n| Spanned::new(n, s));
                }
                _ => {}
            }
        }
        Halt {
            span,
            guards,
            after_runs,
        }
    }

    // ------------------------------------------------------------------ states

    pub(crate) fn state(&mut self, pair: Pair<'_, Rule>) -> State {
        let span = self.span(&pair);
        let mut items = values(pair);
        let name = match items.next() {
            Some(p) => self.name(p),
            None => Spanned::new(String::new(), span),
        };
        let mut state = State {
            name,
            span,
            actions: Vec::new(),
            transitions: Vec::new(),
        };
        // The action after which nothing may follow (`ask`, `->`, `end`).
        let mut last: Option<Action> = None;
        for item in items {
            if let Some(t) = self.transition(item.clone()) {
                state.transitions.push(t);
                continue;
            }
            let Some(action) = self.action(item) else {
                continue;
            };
            if let Some(t) = state.transitions.first() {
                let d = Diagnostic::error(
                    Code::ActionAfterTransition,
                    format!("`{}` is written after a transition", action.kind.keyword()),
                )
                .label(action.span, "entry action here")
                .label(t.span, "the state's transitions start here")
                .help("write a state's actions first and its transitions (`on ...`, `after ...`) last");
                self.error(d);
            } else if let Some(prev) = last.as_ref().filter(|prev| {
                // Branches are tried in order: more branches, or a default `->`, may follow.
                !(matches!(prev.kind, ActionKind::Branch { .. })
                    && matches!(action.kind, ActionKind::Branch { .. } | ActionKind::Goto(_)))
            }) {
                let (msg, help) = if matches!(prev.kind, ActionKind::Ask(_))
                    && matches!(action.kind, ActionKind::Ask(_))
                {
                    (
                        "a state can ask only one question".to_string(),
                        "move the second `ask` into a state of its own, reached by the first one's `then ->`".to_string(),
                    )
                } else if matches!(action.kind, ActionKind::Branch { .. }) {
                    (
                        format!(
                            "a branch comes after `{}`, so it would never be tried",
                            prev.kind.keyword()
                        ),
                        if matches!(prev.kind, ActionKind::Goto(_)) {
                            "branches are tried in order and `-> STATE` without `when` is taken at once: write it last, as the default".to_string()
                        } else {
                            format!(
                                "a state's branches come last: after `{}` nothing runs; move the branches to a state of their own",
                                prev.kind.keyword()
                            )
                        },
                    )
                } else {
                    (
                        format!(
                            "`{}` comes after `{}`, so it would never run",
                            action.kind.keyword(),
                            prev.kind.keyword()
                        ),
                        format!(
                            "`{}` must be the last action of a state: move `{}` before it",
                            prev.kind.keyword(),
                            action.kind.keyword()
                        ),
                    )
                };
                let d = Diagnostic::error(Code::ActionAfterLast, msg)
                    .label(action.span, "this never runs")
                    .label(prev.span, format!("`{}` is last", prev.kind.keyword()))
                    .help(help);
                self.error(d);
            }
            let branch_chain = matches!(
                (&last, &action.kind),
                (
                    Some(Action {
                        kind: ActionKind::Branch { .. },
                        ..
                    }),
                    ActionKind::Goto(_)
                )
            );
            if matches!(
                action.kind,
                ActionKind::Ask(_)
                    | ActionKind::Goto(_)
                    | ActionKind::End
                    | ActionKind::Branch { .. }
            ) && (last.is_none() || branch_chain)
            {
                last = Some(action.clone());
            }
            state.actions.push(action);
        }
        state
    }

    fn action(&mut self, pair: Pair<'_, Rule>) -> Option<Action> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let kind = match rule {
            Rule::send_action => {
                let mut v = values(pair);
                let body = v.next()?;
                if body.as_rule() == Rule::variants {
                    let variants = values(body)
                        .filter_map(|variant| {
                            let mut parts = values(variant);
                            let key = self.name(parts.next()?);
                            let text = self.text(parts.next()?);
                            Some((key, text))
                        })
                        .collect();
                    ActionKind::SendOneOf { variants }
                } else {
                    let text = self.text(body);
                    let mut template = None;
                    let mut approve = None;
                    for p in v {
                        match p.as_rule() {
                            Rule::or_template => template = self.template_fallback(p),
                            Rule::approve_clause => approve = self.approve(p),
                            _ => {}
                        }
                    }
                    ActionKind::Send {
                        text,
                        template,
                        approve,
                    }
                }
            }
            Rule::reply_action => ActionKind::Reply(self.text(first_value(pair)?)),
            Rule::hide_action => ActionKind::Hide,
            Rule::review_action => ActionKind::Review(self.text(first_value(pair)?)),
            Rule::ask_action => ActionKind::Ask(Box::new(self.ask(pair)?)),
            Rule::set_action => {
                let mut v = values(pair);
                let slot = self.name(v.next()?);
                let value = self.text(v.next()?);
                ActionKind::Set { slot, value }
            }
            Rule::tag_action => {
                let p = first_value(pair)?;
                let s = self.span(&p);
                ActionKind::Tag(Spanned::new(self.literal(p), s))
            }
            Rule::emit_action => {
                let mut v = values(pair);
                let event = self.name(v.next()?);
                let with = v.next().map(|w| self.with_pairs(w)).unwrap_or_default();
                ActionKind::Emit { event, with }
            }
            Rule::handoff_action => {
                let mut queue = None;
                let mut summary = None;
                let mut sla = None;
                for p in values(pair) {
                    match p.as_rule() {
                        Rule::queue => queue = Some(self.name(p)),
                        Rule::string => summary = Some(self.text(p)),
                        Rule::duration => sla = self.duration(p),
                        _ => {}
                    }
                }
                ActionKind::Handoff {
                    queue: queue?,
                    summary,
                    sla,
                }
            }
            Rule::end_action => ActionKind::End,
            Rule::goto_action => {
                let mut v = values(pair);
                let target = self.target(v.next()?);
                match v
                    .next()
                    .and_then(first_value)
                    .and_then(|c| self.condition(c))
                {
                    Some(when) => ActionKind::Branch { target, when },
                    None => ActionKind::Goto(target),
                }
            }
            _ => return None,
        };
        Some(Action { span, kind })
    }

    fn approve(&mut self, pair: Pair<'_, Rule>) -> Option<Approve> {
        let span = self.span(&pair);
        let mut queue = None;
        let mut within = None;
        for p in values(pair) {
            match p.as_rule() {
                Rule::queue => queue = Some(self.name(p)),
                Rule::duration => within = self.duration(p),
                _ => {}
            }
        }
        Some(Approve {
            span,
            queue: queue?,
            within,
        })
    }

    fn template_fallback(&mut self, pair: Pair<'_, Rule>) -> Option<TemplateFallback> {
        let mut v = values(pair);
        let name = self.name(v.next()?);
        let with = v.next().map(|w| self.with_pairs(w)).unwrap_or_default();
        Some(TemplateFallback { name, with })
    }

    fn with_pairs(&mut self, pair: Pair<'_, Rule>) -> Vec<(Name, Text)> {
        values(pair)
            .filter_map(|kv| {
                let mut parts = values(kv);
                let key = self.name(parts.next()?);
                let value = self.text(parts.next()?);
                Some((key, value))
            })
            .collect()
    }

    fn ask(&mut self, pair: Pair<'_, Rule>) -> Option<Ask> {
        let mut v = values(pair);
        let slot = self.name(v.next()?);
        let question = self.text(v.next()?);
        let mut expect = None;
        let mut retry = None;
        let mut template = None;
        let mut targets = Vec::new();
        for p in v {
            match p.as_rule() {
                Rule::or_template => template = self.template_fallback(p),
                Rule::expect_clause => expect = first_value(p).and_then(|e| self.expect(e)),
                Rule::retry_clause => {
                    let span = self.span(&p);
                    let mut r = values(p);
                    let times_pair = r.next()?;
                    let times_span = self.span(&times_pair);
                    let times = self.integer(times_pair)?;
                    let reprompt = self.text(r.next()?);
                    retry = Some(Retry {
                        span,
                        times: Spanned::new(times, times_span),
                        reprompt,
                    });
                }
                Rule::target => targets.push(self.target(p)),
                _ => {}
            }
        }
        let mut targets = targets.into_iter();
        Some(Ask {
            slot,
            question,
            template,
            expect,
            retry,
            then: targets.next()?,
            otherwise: targets.next(),
        })
    }

    fn expect(&mut self, pair: Pair<'_, Rule>) -> Option<Spanned<Expect>> {
        let span = self.span(&pair);
        let expect = match pair.as_rule() {
            Rule::regex => Expect::Regex(self.regex(pair)),
            Rule::choice_form => {
                let choices = values(pair)
                    .filter_map(|c| {
                        let mut parts = values(c);
                        let k = parts.next()?;
                        let v = parts.next()?;
                        let (ks, vs) = (self.span(&k), self.span(&v));
                        Some((
                            Spanned::new(self.literal(k), ks),
                            Spanned::new(self.literal(v), vs),
                        ))
                    })
                    .collect();
                Expect::Choice(choices)
            }
            _ => {
                let word = self.name(pair);
                match word.value.as_str() {
                    "text" => Expect::Text,
                    "number" => Expect::Number,
                    "email" => Expect::Email,
                    "phone" => Expect::Phone,
                    _ => {
                        self.unknown_word(
                            &word,
                            "answer type",
                            &["text", "number", "email", "phone", "choice"],
                        );
                        return None;
                    }
                }
            }
        };
        Some(Spanned::new(expect, span))
    }

    // ------------------------------------------------------------------ transitions

    /// Builds a transition, or returns `None` when `pair` is not one.
    fn transition(&mut self, pair: Pair<'_, Rule>) -> Option<Transition> {
        let rule = pair.as_rule();
        if !matches!(rule, Rule::on_transition | Rule::after_transition) {
            return None;
        }
        let span = self.span(&pair);
        let mut kind = None;
        let mut when = None;
        let mut target = None;
        for p in values(pair) {
            match p.as_rule() {
                Rule::when_clause => when = first_value(p).and_then(|c| self.condition(c)),
                Rule::target => target = Some(self.target(p)),
                Rule::duration => kind = self.duration(p).map(TransitionKind::After),
                Rule::reply_subject => {
                    kind = first_value(p)
                        .and_then(|x| self.pattern(x))
                        .map(TransitionKind::Reply)
                }
                Rule::comment_subject => {
                    kind = first_value(p)
                        .and_then(|x| self.pattern(x))
                        .map(TransitionKind::Comment)
                }
                Rule::event_subject => {
                    kind = first_value(p).map(|x| TransitionKind::Event(self.name(x)))
                }
                Rule::agent_subject => {
                    let word = self.name(first_value(p)?);
                    kind = match word.value.as_str() {
                        "released" => Some(AgentEvent::Released),
                        "replied" => Some(AgentEvent::Replied),
                        "approved" => Some(AgentEvent::Approved),
                        "rejected" => Some(AgentEvent::Rejected),
                        _ => {
                            self.unknown_word(
                                &word,
                                "agent event",
                                &["released", "replied", "approved", "rejected"],
                            );
                            None
                        }
                    }
                    .map(|e| TransitionKind::Agent(Spanned::new(e, word.span)));
                }
                _ => {}
            }
        }
        if let (Some(TransitionKind::Agent(_)), Some(c)) = (&kind, &when) {
            self.error(
                Diagnostic::error(
                    Code::Syntax,
                    "`on agent` transitions cannot have a `when` condition",
                )
                .label(c.span, "not allowed here")
                .help("agent events carry no fields to test; remove the `when` part"),
            );
        }
        Some(Transition {
            span,
            kind: kind?,
            when,
            target: target?,
        })
    }

    fn target(&mut self, pair: Pair<'_, Rule>) -> Name {
        match first(pair.clone()) {
            Some(p) => self.name(p),
            None => self.name(pair),
        }
    }

    fn pattern(&mut self, pair: Pair<'_, Rule>) -> Option<Pattern> {
        let span = self.span(&pair);
        let inner = first(pair)?;
        let kind = match inner.as_rule() {
            Rule::exact_pattern => PatternKind::Exact(self.literals(inner)),
            Rule::contains_pattern => PatternKind::Contains(self.literals(inner)),
            Rule::matches_pattern => PatternKind::Matches(self.regex(first_value(inner)?)),
            Rule::intent_pattern => PatternKind::Intent(self.name(first_value(inner)?)),
            Rule::sentiment_pattern => {
                let mut v = values(inner);
                let op = compare_op(v.next()?.as_str());
                let value = self.number(v.next()?)?;
                PatternKind::Sentiment { op, value }
            }
            _ => PatternKind::Any,
        };
        Some(Pattern { span, kind })
    }

    fn literals(&mut self, pair: Pair<'_, Rule>) -> Vec<Spanned<String>> {
        values(pair)
            .map(|s| {
                let span = self.span(&s);
                Spanned::new(self.literal(s), span)
            })
            .collect()
    }

    fn condition(&mut self, pair: Pair<'_, Rule>) -> Option<Condition> {
        let span = self.span(&pair);
        let rule = pair.as_rule();
        let kind = match rule {
            Rule::condition | Rule::and_cond => {
                let mut parts: Vec<Condition> =
                    values(pair).filter_map(|p| self.condition(p)).collect();
                if parts.len() == 1 {
                    return parts.pop();
                }
                if rule == Rule::condition {
                    ConditionKind::Or(parts)
                } else {
                    ConditionKind::And(parts)
                }
            }
            Rule::not_cond => {
                let mut inner = pair
                    .into_inner()
                    .filter(|p| !matches!(p.as_rule(), Rule::open_paren | Rule::close_paren));
                let head = inner.next()?;
                if head.as_rule() != Rule::kw_not {
                    return self.condition(head);
                }
                ConditionKind::Not(Box::new(self.condition(inner.next()?)?))
            }
            Rule::has_cond => ConditionKind::Has(self.name(first_value(pair)?)),
            Rule::comparison => {
                let mut v = values(pair);
                let token = self.name(v.next()?);
                let op = compare_op(v.next()?.as_str());
                let value_pair = v.next()?;
                let value = if value_pair.as_rule() == Rule::string {
                    Literal::String(self.literal(value_pair))
                } else {
                    Literal::Number(self.number(value_pair)?)
                };
                ConditionKind::Compare { token, op, value }
            }
            _ => return None,
        };
        Some(Condition { span, kind })
    }

    // ------------------------------------------------------------------ leaves

    /// A name; upper-case letters are reported and folded so later stages see one spelling.
    fn name(&mut self, pair: Pair<'_, Rule>) -> Name {
        let span = self.span(&pair);
        let raw = pair.as_str();
        if raw.bytes().any(|b| b.is_ascii_uppercase()) {
            let lower = raw.to_ascii_lowercase();
            self.error(
                Diagnostic::error(Code::NameCase, format!("`{raw}` has upper-case letters"))
                    .label(span, "names are lower case")
                    .help(format!(
                        "write `{lower}`: names use a-z, 0-9 and `_`, starting with a letter"
                    )),
            );
            return Spanned::new(lower, span);
        }
        Spanned::new(raw.to_string(), span)
    }

    /// A string whose content is taken as written (titles, patterns, choices, tags).
    fn literal(&mut self, pair: Pair<'_, Rule>) -> String {
        let span = self.span(&pair);
        text::cook(pair.as_str(), span.start, self.diags).into_string()
    }

    /// A string carrying text to a person, with `{tokens}`.
    fn text(&mut self, pair: Pair<'_, Rule>) -> Text {
        let span = self.span(&pair);
        let cooked = text::cook(pair.as_str(), span.start, self.diags);
        text::parse_text(cooked, span, self.diags)
    }

    fn regex(&mut self, pair: Pair<'_, Rule>) -> Regex {
        let span = self.span(&pair);
        let raw = pair.as_str();
        let inner = &raw[1..raw.len().saturating_sub(1).max(1)];
        let source = inner.replace("\\/", "/");
        if let Err(e) = regex_syntax::Parser::new().parse(&source) {
            let reason = e.to_string();
            let last = reason.lines().last().unwrap_or("").trim().to_string();
            self.error(
                Diagnostic::error(Code::BadRegex, "this regular expression is not valid")
                    .label(span, last.trim_start_matches("error: ").to_string())
                    .help(
                        "fix the pattern; it uses the Rust `regex` syntax (https://docs.rs/regex)",
                    ),
            );
        }
        Regex { source, span }
    }

    fn integer(&mut self, pair: Pair<'_, Rule>) -> Option<i64> {
        let span = self.span(&pair);
        match pair.as_str().parse::<i64>() {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(
                    Diagnostic::error(Code::Syntax, "this number is too large")
                        .label(span, "too large")
                        .help("use a whole number below 9223372036854775807"),
                );
                None
            }
        }
    }

    fn number(&mut self, pair: Pair<'_, Rule>) -> Option<f64> {
        pair.as_str().parse::<f64>().ok()
    }

    fn duration(&mut self, pair: Pair<'_, Rule>) -> Option<Spanned<Duration>> {
        let span = self.span(&pair);
        match parse_duration(pair.as_str()) {
            Ok(d) => Some(Spanned::new(d, span)),
            Err(problem) => {
                self.error(
                    Diagnostic::error(
                        Code::BadDuration,
                        format!("`{}` is not a duration", pair.as_str()),
                    )
                    .label(span, problem.label())
                    .help(problem.help(pair.as_str())),
                );
                None
            }
        }
    }

    /// A percentage; `min` is the smallest value allowed (1 for rollout stages).
    fn percent(&mut self, pair: Pair<'_, Rule>, min: u32) -> Option<Spanned<Percent>> {
        let span = self.span(&pair);
        let digits = pair.as_str().trim_end_matches('%');
        let value: f64 = digits.parse().ok()?;
        let basis_points = (value * 100.0).round();
        if basis_points > 10_000.0 || basis_points < f64::from(min) * 100.0 {
            self.error(
                Diagnostic::error(
                    Code::BadPercent,
                    format!("`{}` is outside {min}%–100%", pair.as_str()),
                )
                .label(span, "out of range")
                .help(format!("a percentage here is from {min}% to 100%")),
            );
            return None;
        }
        // In range, so the cast cannot truncate.
        Some(Spanned::new(
            Percent {
                basis_points: basis_points as u32,
            },
            span,
        ))
    }
}

/// `text` without comments at the end of its last lines (a `#` outside strings).
fn strip_trailing_comments(mut text: &str) -> &str {
    loop {
        let line_start = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
        match crate::errors::comment_start(&text[line_start..]) {
            Some(c) => text = text[..line_start + c].trim_end(),
            None => return text,
        }
    }
}

fn first_value(pair: Pair<'_, Rule>) -> Option<Pair<'_, Rule>> {
    values(pair).next()
}

fn compare_op(s: &str) -> CompareOp {
    match s {
        "==" => CompareOp::Eq,
        "!=" => CompareOp::Ne,
        "<=" => CompareOp::Le,
        ">=" => CompareOp::Ge,
        "<" => CompareOp::Lt,
        _ => CompareOp::Gt,
    }
}

/// Why a word is not a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationProblem {
    NoUnit,
    UnknownUnit,
    Fraction,
    Zero,
    TooLong,
}

impl DurationProblem {
    fn label(self) -> &'static str {
        match self {
            DurationProblem::NoUnit => "no unit",
            DurationProblem::UnknownUnit => "unknown unit",
            DurationProblem::Fraction => "not a whole number",
            DurationProblem::Zero => "must be more than zero",
            DurationProblem::TooLong => "too long",
        }
    }

    fn help(self, word: &str) -> String {
        let digits: String = word.chars().take_while(|c| c.is_ascii_digit()).collect();
        match self {
            DurationProblem::NoUnit => {
                format!("add a unit: `{digits}s`, `{digits}m`, `{digits}h` or `{digits}d`")
            }
            DurationProblem::UnknownUnit if word.ends_with('w') => {
                let weeks: u64 = digits.parse().unwrap_or(1);
                format!("weeks are written in days: `{}d`", weeks.saturating_mul(7))
            }
            DurationProblem::UnknownUnit => {
                "the units are s (seconds), m (minutes), h (hours) and d (days), e.g. `30m`".into()
            }
            DurationProblem::Fraction => {
                "durations are whole numbers: write `90m` rather than `1.5h`".into()
            }
            DurationProblem::Zero => "use a positive duration such as `1m`".into(),
            DurationProblem::TooLong => "use a duration under about 290 billion years".into(),
        }
    }
}

/// Parses `30s 15m 1h 24h 7d`.
pub fn parse_duration(word: &str) -> Result<Duration, DurationProblem> {
    let split = word
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(word.len());
    let (digits, unit) = word.split_at(split);
    if unit.starts_with('.') {
        return Err(DurationProblem::Fraction);
    }
    if digits.is_empty() {
        return Err(DurationProblem::UnknownUnit);
    }
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "" => return Err(DurationProblem::NoUnit),
        _ => return Err(DurationProblem::UnknownUnit),
    };
    let n: u64 = digits.parse().map_err(|_| DurationProblem::TooLong)?;
    if n == 0 {
        return Err(DurationProblem::Zero);
    }
    n.checked_mul(factor)
        .map(|seconds| Duration { seconds })
        .ok_or(DurationProblem::TooLong)
}

/// Something with a span, for `set_once`.
trait HasSpan {
    fn span_of(&self) -> Span;
}

impl<T> HasSpan for Spanned<T> {
    fn span_of(&self) -> Span {
        self.span
    }
}

impl HasSpan for Rollout {
    fn span_of(&self) -> Span {
        self.span
    }
}

impl HasSpan for Halt {
    fn span_of(&self) -> Span {
        self.span
    }
}

impl HasSpan for Goal {
    fn span_of(&self) -> Span {
        self.span
    }
}

#[cfg(test)]
mod tests {
    use crate::ast::{ActionKind, Expect, TextPart};

    fn literal_text(t: &crate::ast::Text) -> String {
        t.parts
            .iter()
            .map(|p| match p {
                TextPart::Literal(s) => s.clone(),
                TextPart::Token(t) => format!("{{{}}}", t.path),
            })
            .collect()
    }

    /// `a: "x"`, `k = "x"` and `"k" = "x"` pairs take the string, not the `:` or `=`.
    #[test]
    fn pairs_keep_their_values() {
        let parsed = crate::parse(
            r#"flow f { state s {
                 send "x" or template t with a = "A {b}"
                 send one of { a: "one", b: "two" }
                 emit crm.lead with k = "v"
                 ask q "?" expect choice { "1" = "first" } then -> s
               } }"#,
        );
        assert!(parsed.diagnostics.is_empty(), "{:#?}", parsed.diagnostics);
        let actions = &parsed.file.flows[0].states[0].actions;
        let mut seen = Vec::new();
        for action in actions {
            match &action.kind {
                ActionKind::Send {
                    template: Some(t), ..
                } => seen.push(literal_text(&t.with[0].1)),
                ActionKind::SendOneOf { variants } => {
                    seen.extend(variants.iter().map(|(_, t)| literal_text(t)));
                }
                ActionKind::Emit { with, .. } => seen.push(literal_text(&with[0].1)),
                ActionKind::Ask(ask) => {
                    if let Some(Expect::Choice(c)) = ask.expect.as_ref().map(|e| &e.value) {
                        seen.push(c[0].1.value.clone());
                    }
                }
                _ => {}
            }
        }
        assert_eq!(seen, ["A {b}", "one", "two", "v", "first"]);
    }
}
