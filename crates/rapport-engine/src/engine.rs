//! The step function: an event in, actions and audit records out, with the contact's state
//! updated. Event time is the clock; there is no I/O, no wall clock and no randomness.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Arc;

use rapport_bundle::{
    normalize_keyword, Action as BAction, Bundle, Flow, On, Pattern, Purpose, Reentry, Text,
    TriggerKind,
};
use serde_json::{Map, Value};

use crate::event::{Body, Event, Millis, OperatorAction};
use crate::matching::{
    answer, condition_holds, params_from_tokens, pattern_matches, render, Inbound, Regexes,
};
use crate::output::{Action, ActionKind, Audit};
use crate::state::{
    ConsentRecord, Contact, GoalWatch, OpenHandoff, Run, Timer, TimerKind, VersionStats,
};

/// A private reply to a comment needs no window within this long of the comment.
const PRIVATE_REPLY_WINDOW: Millis = 7 * 86_400_000;
/// `->` chains longer than this stop (the checker rejects instant loops; this is a guard).
const MAX_CHAIN: usize = 64;

/// What one step produced.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Output {
    pub actions: Vec<Action>,
    pub audit: Vec<Audit>,
}

/// The runtime core for one bundle and a set of contacts.
pub struct Engine {
    bundle: Bundle,
    /// Every flow version: the bundle's flows, then their previous versions. Shared so a
    /// step can read a flow while it updates the contact.
    versions: Arc<Vec<Flow>>,
    /// Flow name → (current version index, previous version index).
    by_name: HashMap<String, (usize, Option<usize>)>,
    regexes: Regexes,
    contacts: HashMap<String, Contact>,
    clock: Millis,
    seen: HashMap<String, Millis>,
    timers: BinaryHeap<Reverse<(Millis, u64, String)>>,
    live_timers: HashMap<String, Timer>,
    timer_seq: u64,
    run_seq: u64,
    stats: Vec<VersionStats>,
    out: Output,
    /// Build audit records (off when nobody reads them; the tallies are kept anyway).
    record_audit: bool,
    /// Suppressions and refused enrolments by reason.
    tallies: BTreeMap<(&'static str, String), u64>,
}

/// The cause of the actions being produced: an event or a timer.
struct Cause {
    /// The event id, or the timer id.
    id: String,
    /// `e1` for an event, `timer` for a timer.
    field: String,
    at: Millis,
    actions: u32,
    timers: u32,
}

impl Cause {
    fn next_action_id(&mut self) -> String {
        let id = format!("{}.{}", self.id, self.actions);
        self.actions += 1;
        id
    }

    fn next_timer_id(&mut self) -> String {
        let id = format!("{}~{}", self.id, self.timers);
        self.timers += 1;
        id
    }
}

impl Engine {
    pub fn new(bundle: Bundle) -> Self {
        let mut versions: Vec<Flow> = bundle.flows.clone();
        let mut by_name = HashMap::new();
        for (i, f) in bundle.flows.iter().enumerate() {
            let previous = f.previous.as_ref().map(|p| {
                versions.push((**p).clone());
                versions.len() - 1
            });
            by_name.insert(f.name.clone(), (i, previous));
        }
        let mut regexes = Regexes::default();
        for f in &versions {
            collect_regexes(f, &mut regexes);
        }
        let stats = vec![VersionStats::default(); versions.len()];
        let versions = Arc::new(versions);
        Engine {
            bundle,
            versions,
            by_name,
            regexes,
            contacts: HashMap::new(),
            clock: i64::MIN,
            seen: HashMap::new(),
            timers: BinaryHeap::new(),
            live_timers: HashMap::new(),
            timer_seq: 0,
            run_seq: 0,
            stats,
            out: Output::default(),
            record_audit: true,
            tallies: BTreeMap::new(),
        }
    }

    /// Whether to build audit records (on by default). Off, a step still keeps the tallies
    /// of suppressions and refused enrolments, and runs faster.
    pub fn record_audit(&mut self, on: bool) {
        self.record_audit = on;
    }

    /// Suppressed sends (`suppressed`) and refused enrolments (`not_enrolled`) by reason,
    /// since the engine started.
    pub fn tallies(&self) -> impl Iterator<Item = (&str, &str, u64)> {
        self.tallies.iter().map(|((k, r), n)| (*k, r.as_str(), *n))
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// Per flow version: name, version and what its runs did.
    pub fn stats(&self) -> impl Iterator<Item = (&str, &str, &VersionStats)> {
        self.versions
            .iter()
            .zip(&self.stats)
            .map(|(f, s)| (f.name.as_str(), f.version.as_str(), s))
    }

    /// Applies one event: fires the timers due before it, then the event itself.
    pub fn step(&mut self, event: &Event) -> Output {
        if self.seen.contains_key(&event.id) {
            // Appendix A.17: a duplicate changes nothing, not even the clock.
            return Output::default();
        }
        let now = event.at.max(self.clock);
        self.fire_due(now);
        self.clock = now;
        self.seen.insert(event.id.clone(), now);
        self.forget_old_ids(now);
        let mut cause = Cause {
            id: event.id.clone(),
            field: event.id.clone(),
            at: event.at,
            actions: 0,
            timers: 0,
        };
        match &event.body {
            Body::Tick => self.tick(&mut cause),
            Body::Operator {
                action,
                flow,
                actor,
            } => self.operator(*action, flow, actor.as_deref(), &mut cause),
            _ => {
                if let Some(contact) = event.contact.as_deref() {
                    self.contact_event(contact, event, now, &mut cause);
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Fires every timer due up to `until` (a live host's wall-clock tick).
    pub fn advance(&mut self, until: Millis) -> Output {
        if until > self.clock {
            self.fire_due(until);
            self.clock = until;
        }
        std::mem::take(&mut self.out)
    }

    /// How many contacts are held.
    pub fn contacts(&self) -> usize {
        self.contacts.len()
    }

    fn forget_old_ids(&mut self, now: Millis) {
        // Sweep rarely: the set is bounded by the events of one dedupe window.
        if self.seen.len().is_multiple_of(65_536) {
            let keep = self.bundle.settings.dedupe_window as Millis * 1000;
            self.seen.retain(|_, at| now - *at <= keep);
        }
    }

    // ------------------------------------------------------------------ timers

    fn set_timer(
        &mut self,
        cause: &mut Cause,
        due: Millis,
        contact: Option<&str>,
        kind: TimerKind,
    ) -> String {
        let id = cause.next_timer_id();
        self.timer_seq += 1;
        self.timers.push(Reverse((due, self.timer_seq, id.clone())));
        self.live_timers.insert(
            id.clone(),
            Timer {
                id: id.clone(),
                due,
                contact: contact.map(str::to_string),
                kind,
            },
        );
        id
    }

    fn fire_due(&mut self, until: Millis) {
        while let Some(Reverse((due, _, id))) = self.timers.peek().cloned() {
            if due > until {
                break;
            }
            self.timers.pop();
            let Some(timer) = self.live_timers.remove(&id) else {
                continue; // cancelled
            };
            self.clock = self.clock.max(due);
            let mut cause = Cause {
                id: timer.id.clone(),
                field: "timer".into(),
                at: due,
                actions: 0,
                timers: 0,
            };
            self.fire(timer, &mut cause);
        }
    }

    fn fire(&mut self, timer: Timer, cause: &mut Cause) {
        let contact_id = timer.contact.clone().unwrap_or_default();
        match timer.kind {
            TimerKind::After {
                run,
                state,
                transition,
            } => {
                let Some(target) = self.run_state(&contact_id, run, state).and_then(|(f, s)| {
                    self.versions[f].states[s]
                        .transitions
                        .get(transition)
                        .map(|t| t.target)
                }) else {
                    return;
                };
                self.transition(&contact_id, run, target, cause);
            }
            TimerKind::Deferred {
                run,
                state,
                action,
                reprompt,
            } => {
                if self.run_state(&contact_id, run, state).is_some() {
                    self.run_send(&contact_id, run, state, action, reprompt, cause);
                }
            }
            TimerKind::Expire { run } => {
                let Some((flow, last)) = self
                    .contact_ref(&contact_id)
                    .and_then(|c| c.run(run))
                    .map(|r| (r.flow, r.last_activity))
                else {
                    return;
                };
                let expire = self.versions[flow].expire_after as Millis * 1000;
                if last + expire > cause.at {
                    let due = last + expire;
                    self.set_timer(cause, due, Some(&contact_id), TimerKind::Expire { run });
                    return;
                }
                self.audit(
                    cause,
                    Some(&contact_id),
                    Some((flow, None)),
                    "expired",
                    None,
                    None,
                );
                self.end_run(&contact_id, run, "expired", cause);
            }
            TimerKind::Sla => {
                let Some(h) = self
                    .contact_ref(&contact_id)
                    .and_then(|c| c.handoff.clone())
                else {
                    return;
                };
                if h.sla_timer.as_deref() != Some(timer.id.as_str()) {
                    return;
                }
                let mut a = Action::new(
                    cause.next_action_id(),
                    cause.at,
                    Some(&contact_id),
                    ActionKind::Alert,
                );
                a.alert = Some("sla_breach");
                a.queue = Some(h.queue.clone());
                a.flow = h.flow.clone();
                a.cause = Some(cause.field.clone());
                self.out.actions.push(a);
            }
            TimerKind::GoalClosed { flow, run } => {
                if let Some(c) = self.contacts.get_mut(&contact_id) {
                    let before = c.goals.len();
                    c.goals.retain(|g| !(g.flow == flow && g.run == run));
                    if c.goals.len() < before {
                        self.stats[flow].not_converted += 1;
                    }
                }
            }
            TimerKind::RolloutAdvance { flow } => {
                let stages = self.versions[flow]
                    .rollout
                    .as_ref()
                    .map(|r| r.stages.len())
                    .unwrap_or(0);
                let st = &mut self.stats[flow];
                if st.halted || st.stage + 1 >= stages {
                    return;
                }
                st.stage += 1;
                self.rollout_alert(flow, "rollout_advanced", cause);
                self.schedule_advance(flow, cause);
            }
        }
    }

    fn schedule_advance(&mut self, flow: usize, cause: &mut Cause) {
        let Some(r) = &self.versions[flow].rollout else {
            return;
        };
        let Some(every) = r.every else { return };
        if self.stats[flow].stage + 1 >= r.stages.len() {
            return;
        }
        let due = cause.at.max(self.clock) + every as Millis * 1000;
        self.set_timer(cause, due, None, TimerKind::RolloutAdvance { flow });
    }

    fn rollout_alert(&mut self, flow: usize, kind: &'static str, cause: &mut Cause) {
        let mut a = Action::new(cause.next_action_id(), cause.at, None, ActionKind::Alert);
        a.alert = Some(kind);
        a.flow = Some(self.versions[flow].name.clone());
        a.version = Some(self.versions[flow].version.clone());
        a.cause = Some(cause.field.clone());
        self.out.actions.push(a);
        let (name, version) = (
            self.versions[flow].name.clone(),
            self.versions[flow].version.clone(),
        );
        self.out.audit.push(Audit {
            at: cause.at,
            contact: None,
            actor: "system".into(),
            kind: "rollout",
            flow: Some(name),
            version: Some(version),
            state: None,
            reason: Some(kind.into()),
            detail: None,
            cause: Some(cause.field.clone()),
        });
    }

    // ------------------------------------------------------------------ ticks and operators

    /// Guards are evaluated at ticks, once `after N runs` runs have finished.
    fn tick(&mut self, cause: &mut Cause) {
        for flow in 0..self.bundle.flows.len() {
            let Some(halt) = self.versions[flow].halt.clone() else {
                continue;
            };
            let st = &self.stats[flow];
            if st.halted || st.finished < halt.after_runs {
                continue;
            }
            // A metric with no run counted yet has no value and crosses nothing.
            let rate = |n: u64, d: u64| (d > 0).then(|| n as f64 * 10_000.0 / d as f64);
            let crossed = halt.guards.iter().any(|g| {
                let value = match g.metric {
                    rapport_bundle::Metric::OptOutRate => rate(st.opted_out, st.finished),
                    rapport_bundle::Metric::HandoffRate => rate(st.handoffs, st.finished),
                    rapport_bundle::Metric::ErrorRate => rate(st.errors, st.finished),
                    rapport_bundle::Metric::ConversionRate => {
                        rate(st.converted, st.converted + st.not_converted)
                    }
                };
                let Some(value) = value else { return false };
                let t = f64::from(g.threshold);
                match g.op {
                    rapport_bundle::CompareOp::Gt => value > t,
                    rapport_bundle::CompareOp::Ge => value >= t,
                    rapport_bundle::CompareOp::Lt => value < t,
                    rapport_bundle::CompareOp::Le => value <= t,
                    rapport_bundle::CompareOp::Eq => (value - t).abs() < f64::EPSILON,
                    rapport_bundle::CompareOp::Ne => (value - t).abs() >= f64::EPSILON,
                }
            });
            if crossed {
                self.stats[flow].halted = true;
                self.rollout_alert(flow, "rollout_halted", cause);
            }
        }
    }

    fn operator(
        &mut self,
        action: OperatorAction,
        flow: &str,
        actor: Option<&str>,
        cause: &mut Cause,
    ) {
        let Some(&(idx, _)) = self.by_name.get(flow) else {
            self.out.audit.push(Audit {
                at: cause.at,
                contact: None,
                actor: actor.unwrap_or("operator").into(),
                kind: "rejected",
                flow: Some(flow.into()),
                version: None,
                state: None,
                reason: Some("unknown_flow".into()),
                detail: None,
                cause: Some(cause.field.clone()),
            });
            return;
        };
        let stages = self.versions[idx]
            .rollout
            .as_ref()
            .map(|r| r.stages.len())
            .unwrap_or(0);
        match action {
            OperatorAction::Promote => {
                if self.stats[idx].stage + 1 < stages {
                    self.stats[idx].stage += 1;
                    self.rollout_alert(idx, "rollout_advanced", cause);
                    // A promote restarts the count to the next advance.
                    self.cancel_rollout_timers(idx);
                    self.schedule_advance(idx, cause);
                }
            }
            OperatorAction::Halt => {
                if !self.stats[idx].halted {
                    self.stats[idx].halted = true;
                    self.rollout_alert(idx, "rollout_halted", cause);
                }
            }
            OperatorAction::Resume => {
                self.stats[idx].halted = false;
                self.out.audit.push(Audit {
                    at: cause.at,
                    contact: None,
                    actor: actor.unwrap_or("operator").into(),
                    kind: "rollout",
                    flow: Some(flow.into()),
                    version: Some(self.versions[idx].version.clone()),
                    state: None,
                    reason: Some("resumed".into()),
                    detail: None,
                    cause: Some(cause.field.clone()),
                });
            }
        }
    }

    fn cancel_rollout_timers(&mut self, flow: usize) {
        self.live_timers
            .retain(|_, t| !matches!(t.kind, TimerKind::RolloutAdvance { flow: f } if f == flow));
    }

    // ------------------------------------------------------------------ contacts

    fn contact_ref(&self, id: &str) -> Option<&Contact> {
        self.contacts.get(id)
    }

    fn run_state(&self, contact: &str, run: u64, state: usize) -> Option<(usize, usize)> {
        let r = self.contacts.get(contact)?.run(run)?;
        (r.state == state).then_some((r.flow, r.state))
    }

    fn contact_event(&mut self, contact: &str, event: &Event, now: Millis, cause: &mut Cause) {
        self.contacts.entry(contact.to_string()).or_default();
        match &event.body {
            Body::Message {
                text,
                profile,
                intent,
                sentiment,
            } => self.message(
                contact,
                event,
                text,
                profile,
                intent.as_deref(),
                *sentiment,
                now,
                cause,
            ),
            Body::Comment {
                comment,
                text,
                post,
                author,
                intent,
                sentiment,
            } => {
                let mut data = Map::new();
                data.insert("text".into(), Value::String(text.clone()));
                data.insert("comment".into(), Value::String(comment.clone()));
                if let Some(p) = post {
                    data.insert("post".into(), Value::String(p.clone()));
                }
                if let Some(a) = author {
                    data.insert("author".into(), Value::String(a.clone()));
                }
                let normal = normalize_keyword(text);
                let input = Inbound {
                    text,
                    normal: &normal,
                    intent: intent.as_deref(),
                    sentiment: *sentiment,
                };
                self.comment(contact, event, comment, &input, data, now, cause);
            }
            Body::Consent {
                purpose,
                granted,
                source,
                wording,
            } => {
                let c = self.contacts.entry(contact.to_string()).or_default();
                let pos = c.consent.partition_point(|r| r.at <= event.at);
                c.consent.insert(
                    pos,
                    ConsentRecord {
                        at: event.at,
                        purpose: purpose.clone(),
                        granted: *granted,
                    },
                );
                let detail = format!(
                    "{} {}{}{}",
                    purpose,
                    if *granted { "granted" } else { "withdrawn" },
                    source
                        .as_ref()
                        .map(|s| format!(" via {s}"))
                        .unwrap_or_default(),
                    wording
                        .as_ref()
                        .map(|w| format!(": {w:?}"))
                        .unwrap_or_default()
                );
                self.audit(cause, Some(contact), None, "consent", None, Some(detail));
            }
            Body::External { name, data } => self.external(contact, event, name, data, now, cause),
            Body::Agent { released, agent } => {
                self.agent(contact, *released, agent.as_deref(), cause)
            }
            Body::Tick | Body::Operator { .. } => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn message(
        &mut self,
        contact: &str,
        event: &Event,
        text: &str,
        profile: &Map<String, Value>,
        intent: Option<&str>,
        sentiment: Option<f64>,
        now: Millis,
        cause: &mut Cause,
    ) {
        let settings = &self.bundle.settings;
        let channel = event.channel.clone();
        {
            let c = self.contacts.entry(contact.to_string()).or_default();
            for (k, v) in profile {
                c.profile.insert(k.clone(), v.clone());
            }
            if let Some(ch) = &channel {
                c.last_inbound.insert(
                    ch.clone(),
                    event
                        .at
                        .max(c.last_inbound.get(ch).copied().unwrap_or(i64::MIN)),
                );
                c.latest_channel = Some(ch.clone());
            }
            c.last_reply = Some(text.to_string());
        }
        let normal = normalize_keyword(text);
        let reply_channel = channel.clone().or_else(|| {
            self.contacts
                .get(contact)
                .and_then(|c| c.latest_channel.clone())
        });

        // STOP, START, HELP (section 6.3, Appendix A.13): before anything else.
        if settings.opt_out.keywords.contains(&normal) {
            self.opt_out(contact, reply_channel.as_deref(), cause);
            return;
        }
        if settings.opt_out.resubscribe.contains(&normal) {
            if let Some(c) = self.contacts.get_mut(contact) {
                c.opted_out = false;
                c.ambiguous_pending = false;
                c.clarify_sent = false;
            }
            self.audit(cause, Some(contact), None, "opt_in", None, None);
            let text = self.bundle.settings.opt_out.resubscribe_confirm.clone();
            self.policy_send(
                contact,
                reply_channel.as_deref(),
                text,
                "resubscribe_confirm",
                cause,
            );
            return;
        }
        if settings.opt_out.help.contains(&normal) {
            let text = self.bundle.settings.opt_out.help_reply.clone();
            self.policy_send(contact, reply_channel.as_deref(), text, "help", cause);
            return;
        }
        let opted_out = self.contacts.get(contact).is_some_and(|c| c.opted_out);
        // Ambiguous opt-out: a keyword inside a longer message.
        if !opted_out
            && settings
                .opt_out
                .ambiguous
                .iter()
                .any(|k| rapport_bundle::contains_phrase(&normal, k))
        {
            let first = self.contacts.get(contact).is_some_and(|c| !c.clarify_sent);
            if let Some(c) = self.contacts.get_mut(contact) {
                c.ambiguous_pending = true;
                c.clarify_sent = true;
            }
            self.audit(
                cause,
                Some(contact),
                None,
                "opt_out_pending",
                None,
                Some(text.to_string()),
            );
            if first {
                let text = self.bundle.settings.opt_out.clarify.clone();
                self.policy_send(
                    contact,
                    reply_channel.as_deref(),
                    text,
                    "opt_out_clarify",
                    cause,
                );
            }
        }
        // Escalation (section 6.1b): a person should see it, opted out or not.
        if let Some(esc) = self.bundle.settings.escalation.clone() {
            let by_word = esc.keywords.iter().any(|k| {
                rapport_bundle::contains_phrase(text, k)
                    || rapport_bundle::contains_phrase(&normal, k)
            });
            let by_mood = matches!((sentiment, esc.sentiment_below), (Some(s), Some(t)) if s < t);
            if by_word || by_mood {
                let already = self
                    .contacts
                    .get(contact)
                    .is_some_and(|c| c.handoff.is_some());
                if already {
                    self.audit(
                        cause,
                        Some(contact),
                        None,
                        "escalated",
                        Some("handoff_open"),
                        Some(text.to_string()),
                    );
                    return;
                }
                let mut a = Action::new(
                    cause.next_action_id(),
                    cause.at,
                    Some(contact),
                    ActionKind::Handoff,
                );
                a.channel = reply_channel.clone();
                a.queue = Some(esc.queue.clone());
                a.summary = Some(text.to_string());
                a.cause = Some(cause.field.clone());
                self.out.actions.push(a);
                if let Some(c) = self.contacts.get_mut(contact) {
                    c.handoff = Some(OpenHandoff {
                        queue: esc.queue.clone(),
                        run: None,
                        flow: None,
                        sla_timer: None,
                    });
                }
                self.audit(
                    cause,
                    Some(contact),
                    None,
                    "escalated",
                    Some(if by_word { "keyword" } else { "sentiment" }),
                    Some(text.to_string()),
                );
                return;
            }
        }
        if self
            .contacts
            .get(contact)
            .is_some_and(|c| c.handoff.is_some())
        {
            self.audit(
                cause,
                Some(contact),
                None,
                "unmatched",
                Some("in_handoff"),
                Some(text.to_string()),
            );
            return;
        }
        let input = Inbound {
            text,
            normal: &normal,
            intent,
            sentiment,
        };
        if self.offer_to_runs(contact, &input, false, cause) {
            return;
        }
        let mut data = Map::new();
        data.insert("text".into(), Value::String(text.to_string()));
        if !self.try_start(
            contact,
            TriggerKind::Message,
            Some(&input),
            None,
            data,
            channel.as_deref(),
            None,
            now,
            cause,
        ) {
            self.audit(
                cause,
                Some(contact),
                None,
                "unmatched",
                None,
                Some(text.to_string()),
            );
        }
    }

    fn opt_out(&mut self, contact: &str, channel: Option<&str>, cause: &mut Cause) {
        let runs: Vec<u64> = self
            .contacts
            .get(contact)
            .map(|c| c.runs.iter().map(|r| r.id).collect())
            .unwrap_or_default();
        // The opt-out is charged to the run that sent last (section 6.6).
        if let Some((flow, run)) = self.contacts.get(contact).and_then(|c| c.last_sender) {
            if runs.contains(&run) {
                self.stats[flow].opted_out += 1;
            }
        }
        let handoff = self.contacts.get_mut(contact).and_then(|c| {
            c.opted_out = true;
            c.ambiguous_pending = false;
            c.handoff.take()
        });
        if let Some(h) = handoff {
            self.close_handoff_action(contact, &h, "opted_out", cause);
        }
        for run in runs {
            self.end_run(contact, run, "opted_out", cause);
        }
        self.audit(cause, Some(contact), None, "opt_out", None, None);
        let text = self.bundle.settings.opt_out.confirm.clone();
        self.policy_send(contact, channel, text, "opt_out_confirm", cause);
    }

    fn close_handoff_action(
        &mut self,
        contact: &str,
        h: &OpenHandoff,
        reason: &str,
        cause: &mut Cause,
    ) {
        if let Some(t) = &h.sla_timer {
            self.live_timers.remove(t);
        }
        let mut a = Action::new(
            cause.next_action_id(),
            cause.at,
            Some(contact),
            ActionKind::HandoffClosed,
        );
        a.queue = Some(h.queue.clone());
        a.reason = Some(reason.into());
        a.flow = h.flow.clone();
        a.cause = Some(cause.field.clone());
        self.out.actions.push(a);
        self.audit(
            cause,
            Some(contact),
            None,
            "handoff_closed",
            Some(reason),
            None,
        );
    }

    /// A policy reply: no flow, no disclosure, not counted against the rate limit.
    fn policy_send(
        &mut self,
        contact: &str,
        channel: Option<&str>,
        text: String,
        policy: &'static str,
        cause: &mut Cause,
    ) {
        let mut a = Action::new(
            cause.next_action_id(),
            cause.at,
            Some(contact),
            ActionKind::Send,
        );
        a.channel = channel.map(str::to_string);
        a.text = Some(text);
        a.policy = Some(policy);
        a.cause = Some(cause.field.clone());
        self.out.actions.push(a);
    }

    /// Runs in the order of Appendix A.2: most recent send first, then runs that never
    /// sent, newest first.
    fn run_order(&self, contact: &str) -> Vec<u64> {
        let Some(c) = self.contacts.get(contact) else {
            return Vec::new();
        };
        let mut runs: Vec<&Run> = c.runs.iter().collect();
        runs.sort_by(|a, b| match (a.last_send, b.last_send) {
            (Some(x), Some(y)) => y.cmp(&x).then(b.id.cmp(&a.id)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => b.id.cmp(&a.id),
        });
        runs.iter().map(|r| r.id).collect()
    }

    /// Offers a message (or comment) to the active runs; true when one took it.
    fn offer_to_runs(
        &mut self,
        contact: &str,
        input: &Inbound<'_>,
        comment: bool,
        cause: &mut Cause,
    ) -> bool {
        for run_id in self.run_order(contact) {
            let (matched, ask, (run_flow, run_state, retries_left)) = {
                let Some(run) = self.contacts.get(contact).and_then(|c| c.run(run_id)) else {
                    continue;
                };
                let flow = &self.versions[run.flow];
                let state = &flow.states[run.state];
                let lookup = self.lookup(contact, run, None);
                let matched = flow
                    .transitions
                    .iter()
                    .chain(&state.transitions)
                    .find(|t| {
                        let pattern: Option<&Pattern> = match (&t.on, comment) {
                            (On::Reply { pattern }, false) => Some(pattern),
                            (On::Comment { pattern }, true) => Some(pattern),
                            _ => None,
                        };
                        pattern.is_some_and(|p| pattern_matches(p, input, &self.regexes))
                            && t.when.as_ref().is_none_or(|w| condition_holds(w, &lookup))
                    })
                    .map(|t| t.target);
                let ask = state.actions.iter().find_map(|a| match a {
                    BAction::Ask(ask) => Some(ask.clone()),
                    _ => None,
                });
                (matched, ask, (run.flow, run.state, run.retries_left))
            };
            if let Some(target) = matched {
                self.touch(contact, run_id, cause.at);
                self.transition(contact, run_id, target, cause);
                return true;
            }
            if comment {
                continue;
            }
            // A run waiting in an `ask` takes every reply (Appendix A.3).
            if let Some(ask) = ask {
                self.touch(contact, run_id, cause.at);
                match answer(&ask.expect, input.text, &self.regexes) {
                    Some(value) => {
                        if let Some(r) = self
                            .contacts
                            .get_mut(contact)
                            .and_then(|c| c.run_mut(run_id))
                        {
                            r.slots.insert(ask.slot.clone(), value);
                        }
                        self.transition(contact, run_id, ask.then, cause);
                    }
                    None => {
                        if retries_left > 0 {
                            if let Some(r) = self
                                .contacts
                                .get_mut(contact)
                                .and_then(|c| c.run_mut(run_id))
                            {
                                r.retries_left -= 1;
                            }
                            if let Some(reprompt) = &ask.reprompt {
                                let at = self.versions[run_flow].states[run_state]
                                    .actions
                                    .iter()
                                    .position(|a| matches!(a, BAction::Ask(_)))
                                    .unwrap_or(0);
                                self.deliver_text(
                                    contact,
                                    run_id,
                                    reprompt,
                                    None,
                                    Some((run_state, at, true)),
                                    cause,
                                );
                            }
                        } else if let Some(otherwise) = ask.otherwise {
                            self.transition(contact, run_id, otherwise, cause);
                        } else {
                            let (f, s) = (run_flow, run_state);
                            self.audit(
                                cause,
                                Some(contact),
                                Some((f, Some(s))),
                                "unmatched",
                                Some("invalid_answer"),
                                Some(input.text.to_string()),
                            );
                        }
                    }
                }
                return true;
            }
        }
        false
    }

    fn touch(&mut self, contact: &str, run: u64, at: Millis) {
        if let Some(r) = self.contacts.get_mut(contact).and_then(|c| c.run_mut(run)) {
            r.last_activity = r.last_activity.max(at);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn comment(
        &mut self,
        contact: &str,
        event: &Event,
        comment: &str,
        input: &Inbound<'_>,
        data: Map<String, Value>,
        now: Millis,
        cause: &mut Cause,
    ) {
        if self.offer_to_runs(contact, input, true, cause) {
            return;
        }
        let started = self.try_start(
            contact,
            TriggerKind::Comment,
            Some(input),
            None,
            data,
            event.channel.as_deref(),
            Some((comment.to_string(), event.at)),
            now,
            cause,
        );
        if !started {
            self.audit(
                cause,
                Some(contact),
                None,
                "unmatched",
                Some("comment"),
                Some(input.text.to_string()),
            );
        }
    }

    fn external(
        &mut self,
        contact: &str,
        event: &Event,
        name: &str,
        data: &Map<String, Value>,
        now: Millis,
        cause: &mut Cause,
    ) {
        // Goals first: a run converts when its goal event comes within the window.
        let converted: Vec<(usize, u64)> = match self.contacts.get_mut(contact) {
            Some(c) => {
                let mut hits = Vec::new();
                c.goals.retain(|g| {
                    if g.event == name && event.at <= g.deadline {
                        hits.push((g.flow, g.run));
                        false
                    } else {
                        true
                    }
                });
                hits
            }
            None => Vec::new(),
        };
        for (flow, _) in converted {
            self.stats[flow].converted += 1;
        }
        // Every active run with a matching `on event`, in the order of A.2.
        for run_id in self.run_order(contact) {
            let Some(run) = self
                .contacts
                .get(contact)
                .and_then(|c| c.run(run_id))
                .cloned()
            else {
                continue;
            };
            let target = {
                let flow = &self.versions[run.flow];
                let state = &flow.states[run.state];
                let lookup = self.lookup(contact, &run, Some(data));
                flow.transitions
                    .iter()
                    .chain(&state.transitions)
                    .find_map(|t| match &t.on {
                        On::Event { name: n }
                            if n == name
                                && t.when.as_ref().is_none_or(|w| condition_holds(w, &lookup)) =>
                        {
                            Some(t.target)
                        }
                        _ => None,
                    })
            };
            if let Some(target) = target {
                self.transition(contact, run_id, target, cause);
            }
        }
        let mut fields = data.clone();
        if !fields.contains_key("name") {
            fields.insert("name".into(), Value::String(name.to_string()));
        }
        self.try_start(
            contact,
            TriggerKind::Event,
            None,
            Some((name, data)),
            fields,
            event.channel.as_deref(),
            None,
            now,
            cause,
        );
    }

    fn agent(&mut self, contact: &str, released: bool, agent: Option<&str>, cause: &mut Cause) {
        let Some(h) = self.contacts.get(contact).and_then(|c| c.handoff.clone()) else {
            self.audit(
                cause,
                Some(contact),
                None,
                "unmatched",
                Some("no_handoff"),
                agent.map(str::to_string),
            );
            return;
        };
        // Any agent event stops the SLA clock.
        if let Some(t) = &h.sla_timer {
            self.live_timers.remove(t);
        }
        if let Some(c) = self.contacts.get_mut(contact) {
            if let Some(open) = c.handoff.as_mut() {
                open.sla_timer = None;
            }
        }
        let Some(run_id) = h.run else {
            // An escalation: released closes it; paused runs go on where they were.
            if released {
                if let Some(c) = self.contacts.get_mut(contact) {
                    c.handoff = None;
                }
                self.audit(
                    cause,
                    Some(contact),
                    None,
                    "handoff",
                    Some("released"),
                    agent.map(str::to_string),
                );
            }
            return;
        };
        let Some(run) = self
            .contacts
            .get(contact)
            .and_then(|c| c.run(run_id))
            .cloned()
        else {
            if let Some(c) = self.contacts.get_mut(contact) {
                c.handoff = None;
            }
            return;
        };
        let flow = &self.versions[run.flow];
        let state = &flow.states[run.state];
        let wanted = |on: &On| {
            if released {
                matches!(on, On::AgentReleased)
            } else {
                matches!(on, On::AgentReplied)
            }
        };
        let target = flow
            .transitions
            .iter()
            .chain(&state.transitions)
            .find(|t| wanted(&t.on))
            .map(|t| t.target);
        if released {
            if let Some(c) = self.contacts.get_mut(contact) {
                c.handoff = None;
            }
            self.audit(
                cause,
                Some(contact),
                Some((run.flow, Some(run.state))),
                "handoff",
                Some("released"),
                agent.map(str::to_string),
            );
            match target {
                Some(t) => self.transition(contact, run_id, t, cause),
                None => self.end_run(contact, run_id, "released", cause),
            }
        } else if let Some(t) = target {
            self.transition(contact, run_id, t, cause);
        }
    }

    // ------------------------------------------------------------------ enrolment

    /// Starts at most one run: the highest-priority flow whose trigger matches and whose
    /// enrolment succeeds (section 6.1a). True when a run started.
    #[allow(clippy::too_many_arguments)]
    fn try_start(
        &mut self,
        contact: &str,
        kind: TriggerKind,
        input: Option<&Inbound<'_>>,
        event: Option<(&str, &Map<String, Value>)>,
        data: Map<String, Value>,
        channel: Option<&str>,
        comment: Option<(String, Millis)>,
        now: Millis,
        cause: &mut Cause,
    ) -> bool {
        let mut candidates: Vec<usize> = (0..self.bundle.flows.len())
            .filter(|&f| {
                let flow = &self.versions[f];
                flow.triggers.iter().any(|t| {
                    if t.on != kind {
                        return false;
                    }
                    let pattern_ok = match (&t.pattern, input) {
                        (None, _) => true,
                        (Some(p), Some(i)) => pattern_matches(p, i, &self.regexes),
                        (Some(_), None) => false,
                    };
                    let event_ok = match (&t.event, event) {
                        (Some(n), Some((name, _))) => n == name,
                        (None, _) => kind != TriggerKind::Event,
                        _ => false,
                    };
                    let when_ok = t.when.as_ref().is_none_or(|w| {
                        let c = self.contacts.get(contact);
                        let lookup = |token: &str| -> Option<Value> {
                            if token == "channel" {
                                return channel.map(|c| Value::String(c.to_string()));
                            }
                            if let Some(field) = token.strip_prefix("event.") {
                                return data.get(field).cloned();
                            }
                            c.and_then(|c| c.profile.get(token).cloned()).or_else(|| {
                                self.bundle
                                    .settings
                                    .vars
                                    .get(token)
                                    .map(|v| Value::String(v.clone()))
                            })
                        };
                        condition_holds(w, &lookup)
                    });
                    pattern_ok && event_ok && when_ok
                })
            })
            .collect();
        candidates.sort_by_key(|&f| (Reverse(self.versions[f].priority), f));
        for f in candidates {
            match self.enrol(contact, f, channel, now, cause) {
                Ok((version, channel)) => {
                    self.start_run(contact, version, channel, data, comment, now, cause);
                    return true;
                }
                Err(reason) => {
                    self.audit(
                        cause,
                        Some(contact),
                        Some((f, None)),
                        "not_enrolled",
                        Some(reason),
                        None,
                    );
                }
            }
        }
        false
    }

    /// Appendix A.5: may the contact start flow `f`? Gives the version to run and the
    /// run's channel.
    fn enrol(
        &mut self,
        contact: &str,
        f: usize,
        channel: Option<&str>,
        now: Millis,
        cause: &mut Cause,
    ) -> Result<(usize, String), &'static str> {
        let empty = Contact::default();
        let versions = Arc::clone(&self.versions);
        let c = self.contacts.get(contact).unwrap_or(&empty);
        let flow = &versions[f];
        let marketing = flow.purpose == Purpose::Marketing;
        if c.opted_out {
            return Err("opted_out");
        }
        if c.handoff.is_some() {
            return Err("in_handoff");
        }
        if marketing && !c.marketing_consent() {
            return Err("no_consent");
        }
        if marketing && c.ambiguous_pending {
            return Err("opt_out_pending");
        }
        let Some(channel) = channel.map(str::to_string).or(c.latest_channel.clone()) else {
            return Err("no_channel");
        };
        if !flow.channels.contains(&channel) {
            return Err("channel_not_in_flow");
        }
        let by_comment = flow.triggers.iter().all(|t| t.on == TriggerKind::Comment);
        if !by_comment && c.runs.iter().any(|r| versions[r.flow].name == flow.name) {
            return Err("already_active");
        }
        match flow.reentry {
            Reentry::Always => {}
            Reentry::Never => {
                if c.ever_ran.contains_key(&flow.name) {
                    return Err("reentry");
                }
            }
            Reentry::After(secs) => {
                if c.last_end
                    .get(&flow.name)
                    .is_some_and(|end| now - end < secs as Millis * 1000)
                {
                    return Err("reentry");
                }
            }
        }
        // Staged rollout (section 6.6).
        let name = flow.name.clone();
        let Some(rollout) = flow.rollout.clone() else {
            return Ok((f, channel));
        };
        if self.stats[f].first_attempt.is_none() {
            self.stats[f].first_attempt = Some(now);
            self.schedule_advance(f, cause);
        }
        let stage = rollout
            .stages
            .get(self.stats[f].stage)
            .copied()
            .unwrap_or(10_000);
        let share = if self.stats[f].halted { 0 } else { stage };
        let bucket = crate::rollout::bucket(&name, contact);
        if u32::from(bucket) * 100 <= share {
            return Ok((f, channel));
        }
        match self.by_name.get(&name).and_then(|(_, prev)| *prev) {
            Some(previous) => Ok((previous, channel)),
            None => Err("rollout_excluded"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn start_run(
        &mut self,
        contact: &str,
        f: usize,
        channel: String,
        data: Map<String, Value>,
        comment: Option<(String, Millis)>,
        now: Millis,
        cause: &mut Cause,
    ) {
        self.run_seq += 1;
        let id = self.run_seq;
        let flow = &self.versions[f];
        let variant = (!flow.variants.is_empty())
            .then(|| crate::rollout::variant(&flow.name, contact, flow.variants.len()));
        let run = Run {
            id,
            flow: f,
            state: 0,
            channel,
            started: now,
            event: Arc::new(data),
            slots: Map::new(),
            last_send: None,
            last_activity: now,
            disclosed: false,
            footered: false,
            retries_left: 0,
            comment,
            private_reply_used: false,
            variant,
            reached_handoff: false,
            error: false,
            state_timers: Vec::new(),
        };
        let name = flow.name.clone();
        let goal = flow.goal.clone();
        let expire = flow.expire_after as Millis * 1000;
        if let Some(c) = self.contacts.get_mut(contact) {
            c.runs.push(run);
            c.ever_ran.insert(name, true);
        }
        self.stats[f].enrolled += 1;
        if let Some(v) = variant {
            *self.stats[f].variants.entry(v).or_default() += 1;
        }
        self.audit(
            cause,
            Some(contact),
            Some((f, None)),
            "enrolled",
            None,
            None,
        );
        if let Some(g) = goal {
            let deadline = now + g.within as Millis * 1000;
            if let Some(c) = self.contacts.get_mut(contact) {
                c.goals.push(GoalWatch {
                    flow: f,
                    run: id,
                    event: g.event.clone(),
                    deadline,
                });
            }
            self.set_timer(
                cause,
                deadline,
                Some(contact),
                TimerKind::GoalClosed { flow: f, run: id },
            );
        }
        self.set_timer(
            cause,
            now + expire,
            Some(contact),
            TimerKind::Expire { run: id },
        );
        self.enter(contact, id, 0, 0, cause);
    }

    // ------------------------------------------------------------------ runs

    fn transition(&mut self, contact: &str, run: u64, target: usize, cause: &mut Cause) {
        self.enter(contact, run, target, 0, cause);
    }

    /// Leaves the run's state (cancelling its timers) and enters `target`.
    fn enter(
        &mut self,
        contact: &str,
        run_id: u64,
        target: usize,
        depth: usize,
        cause: &mut Cause,
    ) {
        if depth > MAX_CHAIN {
            return;
        }
        let Some(run) = self
            .contacts
            .get_mut(contact)
            .and_then(|c| c.run_mut(run_id))
        else {
            return;
        };
        let leaving_handoff = run.depth_guard_state_handoff();
        for t in std::mem::take(&mut run.state_timers) {
            self.live_timers.remove(&t);
        }
        let from = run.state;
        run.state = target;
        let flow_idx = run.flow;
        // A run leaving its handoff state lifts the pause (Appendix A.15).
        if leaving_handoff && from != target {
            let h = self.contacts.get_mut(contact).and_then(|c| {
                if c.handoff.as_ref().is_some_and(|h| h.run == Some(run_id)) {
                    c.handoff.take()
                } else {
                    None
                }
            });
            if let Some(h) = h {
                self.close_handoff_action(contact, &h, "left_state", cause);
            }
        }
        self.audit(
            cause,
            Some(contact),
            Some((flow_idx, Some(target))),
            "transition",
            None,
            None,
        );
        let versions = Arc::clone(&self.versions);
        let state = &versions[flow_idx].states[target];
        for (i, action) in state.actions.iter().enumerate() {
            match action {
                BAction::Send { .. } | BAction::SendVariant { .. } => {
                    self.run_send(contact, run_id, target, i, false, cause)
                }
                BAction::Reply { text } => {
                    self.comment_action(contact, run_id, ActionKind::Reply, Some(text), cause)
                }
                BAction::Hide => {
                    self.comment_action(contact, run_id, ActionKind::Hide, None, cause)
                }
                BAction::Review { reason } => {
                    self.comment_action(contact, run_id, ActionKind::Review, Some(reason), cause)
                }
                BAction::Ask(ask) => {
                    if let Some(r) = self
                        .contacts
                        .get_mut(contact)
                        .and_then(|c| c.run_mut(run_id))
                    {
                        r.retries_left = ask.retries;
                    }
                    self.deliver_text(
                        contact,
                        run_id,
                        &ask.question,
                        None,
                        Some((target, i, false)),
                        cause,
                    );
                    break;
                }
                BAction::Set { slot, value } => {
                    let Some(run) = self
                        .contacts
                        .get(contact)
                        .and_then(|c| c.run(run_id))
                        .cloned()
                    else {
                        return;
                    };
                    let (text, missing) = render(value, &self.lookup(contact, &run, None));
                    self.warn_missing(contact, run_id, missing, cause);
                    if let Some(r) = self
                        .contacts
                        .get_mut(contact)
                        .and_then(|c| c.run_mut(run_id))
                    {
                        r.slots.insert(slot.clone(), Value::String(text));
                    }
                }
                BAction::Tag { label } => {
                    let mut a = Action::new(
                        cause.next_action_id(),
                        cause.at,
                        Some(contact),
                        ActionKind::Tag,
                    );
                    a.label = Some(label.clone());
                    self.flow_fields(&mut a, contact, run_id);
                    a.cause = Some(cause.field.clone());
                    self.out.actions.push(a);
                }
                BAction::Emit { name, data } => {
                    let Some(run) = self
                        .contacts
                        .get(contact)
                        .and_then(|c| c.run(run_id))
                        .cloned()
                    else {
                        return;
                    };
                    let lookup = self.lookup(contact, &run, None);
                    let mut map = Map::new();
                    let mut missing = Vec::new();
                    for (k, v) in data {
                        let (text, gaps) = render(v, &lookup);
                        missing.extend(gaps);
                        map.insert(k.clone(), Value::String(text));
                    }
                    drop(lookup);
                    self.warn_missing(contact, run_id, missing, cause);
                    let mut a = Action::new(
                        cause.next_action_id(),
                        cause.at,
                        Some(contact),
                        ActionKind::Emit,
                    );
                    a.name = Some(name.clone());
                    a.data = Some(map);
                    self.flow_fields(&mut a, contact, run_id);
                    a.cause = Some(cause.field.clone());
                    self.out.actions.push(a);
                }
                BAction::Handoff {
                    queue,
                    summary,
                    sla,
                } => {
                    self.handoff(contact, run_id, queue, summary.as_ref(), *sla, cause);
                }
                BAction::End => {
                    self.end_run(contact, run_id, "ended", cause);
                    return;
                }
                BAction::Goto { state } => {
                    self.enter(contact, run_id, *state, depth + 1, cause);
                    return;
                }
            }
            // A send can end the run (no consent): stop there.
            if self
                .contacts
                .get(contact)
                .and_then(|c| c.run(run_id))
                .is_none()
            {
                return;
            }
        }
        // Timers of the state's `after` transitions.
        let flow = &self.versions[flow_idx];
        let afters: Vec<(usize, u64)> = flow.states[target]
            .transitions
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match t.on {
                On::After { seconds } => Some((i, seconds)),
                _ => None,
            })
            .collect();
        for (i, seconds) in afters {
            let due = cause.at.max(self.clock) + seconds as Millis * 1000;
            let id = self.set_timer(
                cause,
                due,
                Some(contact),
                TimerKind::After {
                    run: run_id,
                    state: target,
                    transition: i,
                },
            );
            if let Some(r) = self
                .contacts
                .get_mut(contact)
                .and_then(|c| c.run_mut(run_id))
            {
                r.state_timers.push(id);
            }
        }
    }

    fn handoff(
        &mut self,
        contact: &str,
        run_id: u64,
        queue: &str,
        summary: Option<&Text>,
        sla: Option<u64>,
        cause: &mut Cause,
    ) {
        let Some(run) = self
            .contacts
            .get(contact)
            .and_then(|c| c.run(run_id))
            .cloned()
        else {
            return;
        };
        let (text, missing) = match summary {
            Some(s) => {
                let (t, m) = render(s, &self.lookup(contact, &run, None));
                (Some(t), m)
            }
            None => (None, Vec::new()),
        };
        self.warn_missing(contact, run_id, missing, cause);
        let mut a = Action::new(
            cause.next_action_id(),
            cause.at,
            Some(contact),
            ActionKind::Handoff,
        );
        a.channel = Some(run.channel.clone());
        a.queue = Some(queue.to_string());
        a.summary = text;
        self.flow_fields(&mut a, contact, run_id);
        a.cause = Some(cause.field.clone());
        self.out.actions.push(a);
        let sla_timer = sla.map(|secs| {
            self.set_timer(
                cause,
                cause.at.max(self.clock) + secs as Millis * 1000,
                Some(contact),
                TimerKind::Sla,
            )
        });
        let flow_name = self.versions[run.flow].name.clone();
        if let Some(c) = self.contacts.get_mut(contact) {
            c.handoff = Some(OpenHandoff {
                queue: queue.to_string(),
                run: Some(run_id),
                flow: Some(flow_name),
                sla_timer,
            });
            if let Some(r) = c.run_mut(run_id) {
                r.reached_handoff = true;
            }
        }
        self.audit(
            cause,
            Some(contact),
            Some((run.flow, Some(run.state))),
            "handoff",
            None,
            Some(queue.to_string()),
        );
    }

    fn comment_action(
        &mut self,
        contact: &str,
        run_id: u64,
        kind: ActionKind,
        text: Option<&Text>,
        cause: &mut Cause,
    ) {
        let Some(run) = self
            .contacts
            .get(contact)
            .and_then(|c| c.run(run_id))
            .cloned()
        else {
            return;
        };
        let Some((comment, _)) = run.comment.clone() else {
            self.audit(
                cause,
                Some(contact),
                Some((run.flow, Some(run.state))),
                "warning",
                Some("no_comment"),
                Some(kind.as_str().into()),
            );
            return;
        };
        let (rendered, missing) = match text {
            Some(t) => {
                let (r, m) = render(t, &self.lookup(contact, &run, None));
                (Some(r), m)
            }
            None => (None, Vec::new()),
        };
        self.warn_missing(contact, run_id, missing, cause);
        let mut a = Action::new(cause.next_action_id(), cause.at, Some(contact), kind);
        a.channel = Some(run.channel.clone());
        a.comment = Some(comment);
        match kind {
            ActionKind::Review => a.reason = rendered,
            _ => a.text = rendered,
        }
        self.flow_fields(&mut a, contact, run_id);
        a.cause = Some(cause.field.clone());
        self.out.actions.push(a);
    }

    /// Appendix A.12: a token with no value and no fallback renders empty, with an audit
    /// warning; the run counts towards `error_rate`.
    fn warn_missing(
        &mut self,
        contact: &str,
        run_id: u64,
        missing: Vec<String>,
        cause: &mut Cause,
    ) {
        if missing.is_empty() {
            return;
        }
        let at = self
            .contacts
            .get_mut(contact)
            .and_then(|c| c.run_mut(run_id))
            .map(|r| {
                r.error = true;
                (r.flow, Some(r.state))
            });
        self.audit(
            cause,
            Some(contact),
            at,
            "warning",
            Some("missing_token"),
            Some(missing.join(", ")),
        );
    }

    fn flow_fields(&self, a: &mut Action, contact: &str, run_id: u64) {
        if let Some(run) = self.contacts.get(contact).and_then(|c| c.run(run_id)) {
            let flow = &self.versions[run.flow];
            a.flow = Some(flow.name.clone());
            a.version = Some(flow.version.clone());
            a.state = Some(flow.states[run.state].name.clone());
        }
    }

    fn end_run(&mut self, contact: &str, run_id: u64, reason: &str, cause: &mut Cause) {
        let Some(c) = self.contacts.get_mut(contact) else {
            return;
        };
        let Some(pos) = c.runs.iter().position(|r| r.id == run_id) else {
            return;
        };
        let run = c.runs.remove(pos);
        let name = self.versions[run.flow].name.clone();
        c.last_end.insert(name, cause.at);
        let mut closed = None;
        if c.handoff.as_ref().is_some_and(|h| h.run == Some(run_id)) {
            closed = c.handoff.take();
        }
        for t in &run.state_timers {
            self.live_timers.remove(t);
        }
        // The run's expire timer stays queued: when it comes due it finds no run and does
        // nothing (cheaper than searching every pending timer now).
        if let Some(h) = closed {
            // Released by an agent: no `handoff_closed` (Appendix A.15).
            if reason != "released" {
                self.close_handoff_action(contact, &h, reason, cause);
            } else if let Some(t) = &h.sla_timer {
                self.live_timers.remove(t);
            }
        }
        let st = &mut self.stats[run.flow];
        st.finished += 1;
        if run.reached_handoff {
            st.handoffs += 1;
        }
        if run.error {
            st.errors += 1;
        }
        self.audit(
            cause,
            Some(contact),
            Some((run.flow, Some(run.state))),
            "run_ended",
            Some(reason),
            None,
        );
    }

    // ------------------------------------------------------------------ sends

    /// Runs the send at `action` of the run's state through every check (Appendix A.7).
    fn run_send(
        &mut self,
        contact: &str,
        run_id: u64,
        state: usize,
        action: usize,
        reprompt: bool,
        cause: &mut Cause,
    ) {
        let Some(run) = self
            .contacts
            .get(contact)
            .and_then(|c| c.run(run_id))
            .cloned()
        else {
            return;
        };
        let flow = &self.versions[run.flow];
        let (text, template) = match flow.states[state].actions.get(action) {
            Some(BAction::Send { text, template, .. }) => (text.clone(), template.clone()),
            Some(BAction::SendVariant { texts, .. }) => {
                let v = run.variant.unwrap_or(0).min(texts.len().saturating_sub(1));
                match texts.get(v) {
                    Some(t) => (t.clone(), None),
                    None => return,
                }
            }
            Some(BAction::Ask(ask)) if reprompt => match &ask.reprompt {
                Some(t) => (t.clone(), None),
                None => return,
            },
            Some(BAction::Ask(ask)) => (ask.question.clone(), None),
            _ => return,
        };
        self.deliver_text(
            contact,
            run_id,
            &text,
            template.as_ref(),
            Some((state, action, reprompt)),
            cause,
        );
    }

    /// The checks of Appendix A.7, then the send itself.
    fn deliver_text(
        &mut self,
        contact: &str,
        run_id: u64,
        text: &Text,
        template: Option<&rapport_bundle::TemplateSend>,
        deferrable: Option<(usize, usize, bool)>,
        cause: &mut Cause,
    ) {
        // What the checks need, read without copying the contact.
        let rate = self.bundle.settings.rate_limit;
        let Some((c, run)) = self.contacts.get(contact).and_then(|c| {
            let run = c.run(run_id)?;
            let recent = rate.map_or(0, |l| {
                let per = l.per as Millis * 1000;
                c.sends
                    .iter()
                    .filter(|&&t| t > cause.at - per && t <= cause.at)
                    .count()
            });
            Some((
                SendView {
                    opted_out: c.opted_out,
                    in_handoff: c.handoff.is_some(),
                    consent: c.marketing_consent(),
                    ambiguous: c.ambiguous_pending,
                    last_inbound: c.last_inbound.get(&run.channel).copied(),
                    recent_sends: recent,
                    timezone: c
                        .profile
                        .get("timezone")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                },
                RunView {
                    flow: run.flow,
                    state: run.state,
                    channel: run.channel.clone(),
                    comment: run.comment.clone(),
                    private_reply_used: run.private_reply_used,
                    disclosed: run.disclosed,
                    footered: run.footered,
                    variant: run.variant,
                },
            ))
        }) else {
            return;
        };
        let flow = &self.versions[run.flow];
        let marketing = flow.purpose == Purpose::Marketing;
        let now = cause.at;
        let at_state = Some((run.flow, Some(run.state)));
        if c.opted_out {
            self.audit(
                cause,
                Some(contact),
                at_state,
                "suppressed",
                Some("opted_out"),
                None,
            );
            return;
        }
        if c.in_handoff {
            self.audit(
                cause,
                Some(contact),
                at_state,
                "suppressed",
                Some("in_handoff"),
                None,
            );
            return;
        }
        if marketing && !c.consent {
            self.audit(
                cause,
                Some(contact),
                at_state,
                "suppressed",
                Some("no_consent"),
                None,
            );
            if let Some(r) = self
                .contacts
                .get_mut(contact)
                .and_then(|c| c.run_mut(run_id))
            {
                r.error = true;
            }
            self.end_run(contact, run_id, "no_consent", cause);
            return;
        }
        if marketing && c.ambiguous {
            self.audit(
                cause,
                Some(contact),
                at_state,
                "suppressed",
                Some("opt_out_pending"),
                None,
            );
            return;
        }
        // The window (Appendix A.9), with the private-reply exception for comments.
        let private_reply = run
            .comment
            .as_ref()
            .filter(|(_, at)| !run.private_reply_used && now - at <= PRIVATE_REPLY_WINDOW)
            .map(|(id, _)| id.clone());
        let window = self
            .bundle
            .settings
            .channels
            .get(&run.channel)
            .copied()
            .flatten();
        let in_window = match window {
            None => true,
            Some(w) => c
                .last_inbound
                .is_some_and(|last| now - last <= w as Millis * 1000),
        };
        let use_template = private_reply.is_none() && !in_window;
        if use_template && template.is_none() {
            self.audit(
                cause,
                Some(contact),
                at_state,
                "suppressed",
                Some("outside_window"),
                None,
            );
            return;
        }
        if let Some(limit) = self.bundle.settings.rate_limit {
            if c.recent_sends >= limit.max as usize {
                self.audit(
                    cause,
                    Some(contact),
                    at_state,
                    "suppressed",
                    Some("rate_limited"),
                    None,
                );
                return;
            }
        }
        if marketing {
            if let (Some(q), Some((state, action, reprompt))) =
                (&self.bundle.settings.quiet_hours, deferrable)
            {
                let own = c.timezone.as_str();
                let zones = [own, q.zone.as_str()];
                let base = now.max(self.clock);
                if let Some(until) = crate::rollout::quiet_until(base, &zones, q.from, q.to) {
                    let id = self.set_timer(
                        cause,
                        until,
                        Some(contact),
                        TimerKind::Deferred {
                            run: run_id,
                            state,
                            action,
                            reprompt,
                        },
                    );
                    if let Some(r) = self
                        .contacts
                        .get_mut(contact)
                        .and_then(|c| c.run_mut(run_id))
                    {
                        r.state_timers.push(id);
                    }
                    self.audit(
                        cause,
                        Some(contact),
                        at_state,
                        "deferred",
                        Some("quiet_hours"),
                        None,
                    );
                    return;
                }
            }
        }
        // Delivered.
        let Some(full_run) = self.contacts.get(contact).and_then(|c| c.run(run_id)) else {
            return;
        };
        let lookup = self.lookup(contact, full_run, None);
        let mut a = Action::new(cause.next_action_id(), now, Some(contact), ActionKind::Send);
        a.channel = Some(run.channel.clone());
        let mut warnings = Vec::new();
        if use_template {
            let t = template.cloned().unwrap_or(rapport_bundle::TemplateSend {
                name: String::new(),
                params: Vec::new(),
            });
            let params = if t.params.is_empty() {
                params_from_tokens(text, &lookup)
            } else {
                t.params
                    .iter()
                    .map(|(k, v)| {
                        let (s, missing) = render(v, &lookup);
                        warnings.extend(missing);
                        (k.clone(), Value::String(s))
                    })
                    .collect()
            };
            a.template = Some(t.name.clone());
            a.params = Some(params);
        } else {
            let (mut body, missing) = render(text, &lookup);
            warnings.extend(missing);
            if !run.disclosed {
                body = format!("{} {body}", self.bundle.settings.disclosure);
            }
            if marketing && !run.footered {
                body = format!("{body} {}", self.bundle.settings.opt_out.footer);
            }
            a.text = Some(body);
            if let Some(comment) = &private_reply {
                a.comment = Some(comment.clone());
            }
        }
        drop(lookup);
        self.flow_fields(&mut a, contact, run_id);
        if let Some(v) = run.variant {
            if self.versions[run.flow].states[run.state]
                .actions
                .iter()
                .any(|x| matches!(x, BAction::SendVariant { .. }))
            {
                a.variant = self.versions[run.flow].variants.get(v).cloned();
            }
        }
        a.cause = Some(cause.field.clone());
        self.out.actions.push(a);
        if !warnings.is_empty() {
            if let Some(r) = self
                .contacts
                .get_mut(contact)
                .and_then(|c| c.run_mut(run_id))
            {
                r.error = true;
            }
            self.audit(
                cause,
                Some(contact),
                at_state,
                "warning",
                Some("missing_token"),
                Some(warnings.join(", ")),
            );
        }
        let rate_window = self
            .bundle
            .settings
            .rate_limit
            .map(|r| r.per as Millis * 1000);
        if let Some(c) = self.contacts.get_mut(contact) {
            c.sends.push_back(now);
            if let Some(per) = rate_window {
                while c.sends.front().is_some_and(|&t| t <= now - per) {
                    c.sends.pop_front();
                }
            }
            c.last_sender = Some((run.flow, run_id));
            if let Some(r) = c.run_mut(run_id) {
                r.last_send = Some(now);
                r.last_activity = now;
                if !use_template {
                    r.disclosed = true;
                    if marketing {
                        r.footered = true;
                    }
                }
                if private_reply.is_some() {
                    r.private_reply_used = true;
                }
            }
        }
        self.audit(cause, Some(contact), at_state, "sent", None, None);
    }

    // ------------------------------------------------------------------ tokens and audit

    /// Token values for a run (Appendix A.12): slot, profile field, project variable,
    /// `last_reply`; `event.x` from `event_data` when given (an `on event` being
    /// matched), else the run's starting event; `channel` is the run's channel.
    fn lookup<'s>(
        &'s self,
        contact: &'s str,
        run: &'s Run,
        event_data: Option<&'s Map<String, Value>>,
    ) -> impl Fn(&str) -> Option<Value> + 's {
        let c = self.contacts.get(contact);
        move |token: &str| {
            if let Some(field) = token.strip_prefix("event.") {
                return event_data.unwrap_or(&run.event).get(field).cloned();
            }
            if token == "channel" {
                return Some(Value::String(run.channel.clone()));
            }
            if let Some(v) = run.slots.get(token) {
                return Some(v.clone());
            }
            if let Some(v) = c.and_then(|c| c.profile.get(token)) {
                return Some(v.clone());
            }
            if let Some(v) = self.bundle.settings.vars.get(token) {
                return Some(Value::String(v.clone()));
            }
            if token == "last_reply" {
                return c.and_then(|c| c.last_reply.clone()).map(Value::String);
            }
            None
        }
    }

    fn audit(
        &mut self,
        cause: &Cause,
        contact: Option<&str>,
        at: Option<(usize, Option<usize>)>,
        kind: &'static str,
        reason: Option<&str>,
        detail: Option<String>,
    ) {
        if kind == "suppressed" || kind == "not_enrolled" {
            *self
                .tallies
                .entry((kind, reason.unwrap_or_default().to_string()))
                .or_default() += 1;
        }
        if !self.record_audit {
            return;
        }
        let (actor, flow, version, state) = match at {
            Some((f, s)) => {
                let flow = &self.versions[f];
                (
                    format!("{}@{}", flow.name, flow.version),
                    Some(flow.name.clone()),
                    Some(flow.version.clone()),
                    s.and_then(|s| flow.states.get(s)).map(|s| s.name.clone()),
                )
            }
            None => ("system".to_string(), None, None, None),
        };
        self.out.audit.push(Audit {
            at: cause.at,
            contact: contact.map(str::to_string),
            actor,
            kind,
            flow,
            version,
            state,
            reason: reason.map(str::to_string),
            detail,
            cause: Some(cause.field.clone()),
        });
    }
}

/// What the send checks read of a contact.
struct SendView {
    opted_out: bool,
    in_handoff: bool,
    consent: bool,
    ambiguous: bool,
    /// The contact's latest inbound message on the run's channel.
    last_inbound: Option<Millis>,
    /// Delivered flow sends within the rate limit's window.
    recent_sends: usize,
    timezone: String,
}

/// What the send reads of a run.
struct RunView {
    flow: usize,
    state: usize,
    channel: String,
    comment: Option<(String, Millis)>,
    private_reply_used: bool,
    disclosed: bool,
    footered: bool,
    variant: Option<usize>,
}

impl Run {
    /// Whether the run is in a state that opened the contact's handoff.
    fn depth_guard_state_handoff(&self) -> bool {
        self.reached_handoff
    }
}

fn collect_regexes(flow: &Flow, regexes: &mut Regexes) {
    let mut pattern = |p: &Pattern| {
        if let Pattern::Matches { regex } = p {
            regexes.add(regex);
        }
    };
    for t in &flow.triggers {
        if let Some(p) = &t.pattern {
            pattern(p);
        }
    }
    for t in flow
        .transitions
        .iter()
        .chain(flow.states.iter().flat_map(|s| s.transitions.iter()))
    {
        if let On::Reply { pattern: p } | On::Comment { pattern: p } = &t.on {
            pattern(p);
        }
    }
    for s in &flow.states {
        for a in &s.actions {
            if let BAction::Ask(ask) = a {
                if let rapport_bundle::Expect::Regex { regex } = &ask.expect {
                    regexes.add(regex);
                }
            }
        }
    }
}
