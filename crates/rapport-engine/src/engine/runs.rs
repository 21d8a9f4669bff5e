//! Enrolment, runs entering states and their entry actions, handoffs, and runs ending.

use super::*;

impl Engine {
    // ------------------------------------------------------------------ enrolment

    /// Starts at most one run: the highest-priority flow whose trigger matches and whose
    /// enrolment succeeds. True when a run started.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn try_start(
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

    /// Enrolment: may the contact start flow `f`? Gives the version to run and the
    /// run's channel.
    pub(super) fn enrol(
        &mut self,
        contact: &str,
        f: usize,
        channel: Option<&str>,
        now: Millis,
        cause: &mut Cause,
    ) -> Result<(usize, crate::state::Name), &'static str> {
        let empty = Contact::default();
        let versions = Arc::clone(&self.versions);
        let c = self.contacts.get(contact).map_or(&empty, |c| &**c);
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
        let Some(channel) = channel
            .map(|ch| self.names.get(ch))
            .or(c.latest_channel.clone())
        else {
            return Err("no_channel");
        };
        if !flow.channels.iter().any(|ch| **ch == *channel) {
            return Err("channel_not_in_flow");
        }
        let by_comment = flow.triggers.iter().all(|t| t.on == TriggerKind::Comment);
        if !by_comment
            && c.runs
                .iter()
                .any(|r| versions[r.flow as usize].name == flow.name)
        {
            return Err("already_active");
        }
        match flow.reentry {
            Reentry::Always => {}
            Reentry::Never => {
                if c.reentry.ever_ran(&flow.name) {
                    return Err("reentry");
                }
            }
            Reentry::After(secs) => {
                if c.reentry
                    .last_end(&flow.name)
                    .is_some_and(|end| now - end < secs as Millis * 1000)
                {
                    return Err("reentry");
                }
            }
        }
        // Staged rollout.
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
    pub(super) fn start_run(
        &mut self,
        contact: &str,
        f: usize,
        channel: crate::state::Name,
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
        // Built only when a journal keeps it (a store), not on a plain run.
        let fact = self
            .journal
            .is_some()
            .then(|| crate::engine::RunFact::Started {
                run: id,
                contact: contact.to_string(),
                flow: flow.name.clone(),
                version: flow.version.clone(),
                variant: variant.and_then(|v| flow.variants.get(v).cloned()),
                channel: channel.to_string(),
                at: now,
                goal_deadline: flow.goal.as_ref().map(|g| now + g.within as Millis * 1000),
            });
        let run = Run {
            id,
            flow: f as u32,
            state: 0,
            channel,
            started: now,
            event: data
                .into_iter()
                .filter(|(k, _)| {
                    self.event_fields
                        .as_ref()
                        .is_none_or(|fields| fields.contains(k.as_str()))
                })
                .map(|(k, v)| (self.names.get(&k), v))
                .collect(),
            slots: crate::state::SmallMap::default(),
            last_send: crate::state::Since::NEVER,
            last_activity: now,
            disclosed: false,
            footered: false,
            retries_left: 0,
            comment: comment.map(Box::new),
            private_reply_used: false,
            variant: variant.map(|v| v as u32),
            reached_handoff: false,
            error: false,
            state_timers: thin_vec::ThinVec::new(),
            expire_timer: None,
            drafts: thin_vec::ThinVec::new(),
        };
        let name = self.labels[f].name.clone();
        let goal = flow.goal.clone();
        let expire = flow.expire_after as Millis * 1000;
        if let Some(c) = self.contacts.get_mut(contact) {
            crate::state::push_exact(&mut c.runs, run);
            c.reentry.started(name);
        }
        let deadline = goal.as_ref().map(|g| now + g.within as Millis * 1000);
        if let Some(fact) = fact {
            self.journal_run(|| fact);
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
        // The first state's timers are set first, then the goal's and the run's expiry
        // (so a first state's `after` timer is `EVENT~0`, the id docs/runtime.md gives it).
        if let (Some(g), Some(deadline)) = (&goal, deadline) {
            if let Some(c) = self.contacts.get_mut(contact) {
                crate::state::push_exact(
                    &mut c.goals,
                    GoalWatch {
                        flow: f,
                        run: id,
                        event: self.names.get(&g.event),
                        deadline,
                    },
                );
            }
        }
        self.enter(contact, id, 0, 0, cause);
        if let Some(deadline) = deadline {
            self.set_timer(
                cause,
                deadline,
                Some(contact),
                TimerKind::GoalClosed {
                    flow: f as u32,
                    run: id,
                },
            );
        }
        // A run that ended on entering needs no expiry.
        if self.contacts.get(contact).and_then(|c| c.run(id)).is_some() {
            let key = self.set_timer(
                cause,
                now + expire,
                Some(contact),
                TimerKind::Expire { run: id },
            );
            if let Some(r) = self.contacts.get_mut(contact).and_then(|c| c.run_mut(id)) {
                r.expire_timer = NonZeroU64::new(key);
            }
        }
    }

    // ------------------------------------------------------------------ runs

    pub(super) fn transition(&mut self, contact: &str, run: u64, target: usize, cause: &mut Cause) {
        self.enter(contact, run, target, 0, cause);
    }

    /// Leaves the run's state (cancelling its timers) and enters `target`.
    pub(super) fn enter(
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
        let leaving_handoff = run.opened_handoff();
        for t in std::mem::take(&mut run.state_timers) {
            self.live_timers.remove(&t);
        }
        // A draft belongs to its state.
        let dropped = std::mem::take(&mut run.drafts);
        let from = run.state as usize;
        run.state = target as u32;
        let flow_idx = run.flow as usize;
        let run_channel = run.channel.clone();
        for d in &dropped {
            self.draft_closed(contact, run_id, &run_channel, d, "state_left", cause);
        }
        // A run leaving its handoff state lifts the pause.
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
                BAction::Send {
                    text,
                    approve: Some(approve),
                    ..
                } => self.draft(contact, run_id, target, i, text, approve, cause),
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
                        r.retries_left = u16::try_from(ask.retries).unwrap_or(u16::MAX);
                    }
                    self.deliver_text(
                        contact,
                        run_id,
                        &ask.question,
                        ask.template.as_ref(),
                        Some((target, i, false)),
                        cause,
                    );
                    break;
                }
                BAction::Set { slot, value } => {
                    let Some(run) = self.run_copy(contact, run_id) else {
                        return;
                    };
                    let (text, missing) = render(value, &self.lookup(contact, &run, None));
                    self.warn_missing(contact, run_id, missing, cause);
                    if let Some(r) = self
                        .contacts
                        .get_mut(contact)
                        .and_then(|c| c.run_mut(run_id))
                    {
                        r.slots.insert(self.names.get(slot), Value::String(text));
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
                    let Some(run) = self.run_copy(contact, run_id) else {
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
                // Branches are tried in order; the first whose condition holds is taken
                // at once. None taken (and no default): the run waits in this state.
                BAction::Branch { state, when } => {
                    let Some(run) = self.run_copy(contact, run_id) else {
                        return;
                    };
                    let lookup = self.lookup(contact, &run, None);
                    let holds = crate::matching::condition_holds(when, &lookup);
                    drop(lookup);
                    if holds {
                        self.enter(contact, run_id, *state, depth + 1, cause);
                        return;
                    }
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
                    state: target as u32,
                    transition: i as u32,
                },
            );
            if let Some(r) = self
                .contacts
                .get_mut(contact)
                .and_then(|c| c.run_mut(run_id))
            {
                crate::state::push_exact(&mut r.state_timers, id);
            }
        }
    }

    pub(super) fn handoff(
        &mut self,
        contact: &str,
        run_id: u64,
        queue: &str,
        summary: Option<&Text>,
        sla: Option<u64>,
        cause: &mut Cause,
    ) {
        let Some(run) = self.run_copy(contact, run_id) else {
            return;
        };
        let (text, missing) = self.render_optional(contact, &run, summary);
        self.warn_missing(contact, run_id, missing, cause);
        let mut a = Action::new(
            cause.next_action_id(),
            cause.at,
            Some(contact),
            ActionKind::Handoff,
        );
        a.channel = Some(run.channel.clone());
        a.queue = Some(queue.to_string());
        a.summary = text.clone();
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
        let flow_name = self.versions[run.flow as usize].name.clone();
        if let Some(c) = self.contacts.get_mut(contact) {
            c.handoff = Some(Box::new(OpenHandoff {
                queue: queue.to_string(),
                run: Some(run_id),
                flow: Some(flow_name),
                sla_timer,
                opened: cause.at.max(self.clock),
                summary: text,
                channel: Some(run.channel.to_string()),
            }));
            if let Some(r) = c.run_mut(run_id) {
                r.reached_handoff = true;
            }
        }
        self.audit(
            cause,
            Some(contact),
            Some((run.flow as usize, Some(run.state as usize))),
            "handoff",
            None,
            Some(queue.to_string()),
        );
    }

    pub(super) fn comment_action(
        &mut self,
        contact: &str,
        run_id: u64,
        kind: ActionKind,
        text: Option<&Text>,
        cause: &mut Cause,
    ) {
        let Some(run) = self.run_copy(contact, run_id) else {
            return;
        };
        let Some(comment) = run.comment.as_ref().map(|c| c.0.clone()) else {
            self.audit(
                cause,
                Some(contact),
                Some((run.flow as usize, Some(run.state as usize))),
                "warning",
                Some("no_comment"),
                Some(kind.as_str().into()),
            );
            return;
        };
        let (rendered, missing) = self.render_optional(contact, &run, text);
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

    /// Renders an optional text of a run (a handoff summary, a comment reply): the text
    /// and its missing tokens.
    pub(super) fn render_optional(
        &self,
        contact: &str,
        run: &Run,
        text: Option<&Text>,
    ) -> (Option<String>, Vec<String>) {
        match text {
            Some(t) => {
                let (r, m) = render(t, &self.lookup(contact, run, None));
                (Some(r), m)
            }
            None => (None, Vec::new()),
        }
    }

    /// A token with no value and no fallback renders empty, with an audit
    /// warning; the run counts towards `error_rate`.
    /// A send a person approves first: the `draft` action goes to the queue, and the run
    /// keeps the draft until it is approved, rejected, runs out or the state is left.
    #[allow(clippy::too_many_arguments)]
    fn draft(
        &mut self,
        contact: &str,
        run_id: u64,
        state: usize,
        action: usize,
        text: &rapport_bundle::Text,
        approve: &rapport_bundle::Approve,
        cause: &mut Cause,
    ) {
        let Some(run) = self.run_copy(contact, run_id) else {
            return;
        };
        let lookup = self.lookup(contact, &run, None);
        let (rendered, missing) = render(text, &lookup);
        drop(lookup);
        self.warn_missing(contact, run_id, missing, cause);
        let id = cause.next_action_id();
        let mut a = Action::new(id.clone(), cause.at, Some(contact), ActionKind::Draft);
        a.channel = Some(run.channel.clone());
        a.text = Some(rendered.clone());
        a.queue = Some(approve.queue.clone());
        self.flow_fields(&mut a, contact, run_id);
        a.cause = Some(cause.field.clone());
        self.out.actions.push(a);
        let expiry = approve.within.map(|w| {
            let due = cause.at.max(self.clock) + w as Millis * 1000;
            self.set_timer(
                cause,
                due,
                Some(contact),
                TimerKind::DraftExpire {
                    run: run_id,
                    state: state as u32,
                    action: action as u32,
                },
            )
        });
        if let Some(r) = self
            .contacts
            .get_mut(contact)
            .and_then(|c| c.run_mut(run_id))
        {
            crate::state::push_exact(
                &mut r.drafts,
                crate::state::Draft {
                    id: id.into(),
                    action: action as u32,
                    queue: approve.queue.as_str().into(),
                    text: rendered.into(),
                },
            );
            if let Some(t) = expiry {
                crate::state::push_exact(&mut r.state_timers, t);
            }
        }
        self.audit(
            cause,
            Some(contact),
            Some((run.flow as usize, Some(state))),
            "draft",
            Some("pending"),
            Some(approve.queue.clone()),
        );
    }

    /// Tells the draft's queue that it was dropped undecided (`reason`: `expired`,
    /// `state_left`, or why the run ended).
    pub(super) fn draft_closed(
        &mut self,
        contact: &str,
        run_id: u64,
        channel: &crate::state::Name,
        d: &crate::state::Draft,
        reason: &str,
        cause: &mut Cause,
    ) {
        let mut a = Action::new(
            cause.next_action_id(),
            cause.at,
            Some(contact),
            ActionKind::DraftClosed,
        );
        a.channel = Some(channel.clone());
        a.queue = Some(d.queue.to_string());
        a.reason = Some(reason.to_string());
        a.draft = Some(d.id.to_string());
        self.flow_fields(&mut a, contact, run_id);
        a.cause = Some(cause.field.clone());
        self.out.actions.push(a);
    }

    /// A person's decision on a draft, routed by the draft's id to the run that holds it.
    /// An approval sends the text (or the person's edit, as written) through every send
    /// check at this moment; then `on agent approved|rejected` fires.
    pub(super) fn decision(
        &mut self,
        contact: &str,
        approved: bool,
        draft: &str,
        edited: Option<&str>,
        agent: Option<&str>,
        cause: &mut Cause,
    ) {
        let holder = self.contacts.get(contact).and_then(|c| {
            c.runs.iter().find_map(|r| {
                r.drafts
                    .iter()
                    .position(|d| &*d.id == draft)
                    .map(|i| (r.id, i))
            })
        });
        let Some((run_id, index)) = holder else {
            self.audit(
                cause,
                Some(contact),
                None,
                "unmatched",
                Some("no_pending_draft"),
                Some(draft.to_string()),
            );
            return;
        };
        let Some((taken, flow, state)) = self
            .contacts
            .get_mut(contact)
            .and_then(|c| c.run_mut(run_id))
            .map(|r| (r.drafts.remove(index), r.flow as usize, r.state as usize))
        else {
            return;
        };
        self.audit(
            cause,
            Some(contact),
            Some((flow, Some(state))),
            "draft",
            Some(if approved { "approved" } else { "rejected" }),
            Some(match agent {
                Some(a) => format!("{draft} by {a}"),
                None => draft.to_string(),
            }),
        );
        if approved {
            let body = edited.map_or_else(|| taken.text.to_string(), str::to_string);
            let text = rapport_bundle::Text {
                parts: vec![rapport_bundle::TextPart::Literal(body)],
            };
            // Outside the window the draft's approved template goes, as for any send; a
            // person's own wording has none.
            let versions = Arc::clone(&self.versions);
            let template = match versions[flow].states[state]
                .actions
                .get(taken.action as usize)
            {
                Some(BAction::Send { template, .. }) if edited.is_none() => template.as_ref(),
                _ => None,
            };
            let before = self.out.actions.len();
            self.deliver_text(contact, run_id, &text, template, None, cause);
            if self.out.actions.len() > before {
                if let Some(a) = self.out.actions.last_mut() {
                    a.draft = Some(draft.to_string());
                }
            }
        }
        // The send can end the run (no consent): then nothing more.
        let Some(run) = self.contacts.get(contact).and_then(|c| c.run(run_id)) else {
            return;
        };
        let flow = &self.versions[run.flow as usize];
        let target = flow
            .transitions
            .iter()
            .chain(&flow.states[run.state as usize].transitions)
            .find(|t| {
                if approved {
                    matches!(t.on, On::AgentApproved)
                } else {
                    matches!(t.on, On::AgentRejected)
                }
            })
            .map(|t| t.target);
        if let Some(t) = target {
            self.transition(contact, run_id, t, cause);
        }
    }

    pub(super) fn warn_missing(
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
                (r.flow as usize, Some(r.state as usize))
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

    pub(super) fn flow_fields(&self, a: &mut Action, contact: &str, run_id: u64) {
        if let Some(run) = self.contacts.get(contact).and_then(|c| c.run(run_id)) {
            let labels = &self.labels[run.flow as usize];
            a.flow = Some(Arc::clone(&labels.flow));
            a.version = Some(Arc::clone(&labels.version));
            a.state = labels.states.get(run.state as usize).cloned();
        }
    }

    pub(super) fn end_run(&mut self, contact: &str, run_id: u64, reason: &str, cause: &mut Cause) {
        let Some(c) = self.contacts.get_mut(contact) else {
            return;
        };
        let Some(pos) = c.runs.iter().position(|r| r.id == run_id) else {
            return;
        };
        let run = c.runs.remove(pos);
        let name = self.labels[run.flow as usize].name.clone();
        let drafts = run.drafts.clone();
        c.reentry.ended(name, cause.at);
        let mut closed = None;
        if c.handoff.as_ref().is_some_and(|h| h.run == Some(run_id)) {
            closed = c.handoff.take();
        }
        for t in &run.state_timers {
            self.live_timers.remove(t);
        }
        if let Some(key) = run.expire_timer {
            self.live_timers.remove(&key.get());
        }
        for d in &drafts {
            // The run's fields are gone with it: the action names the draft.
            let mut a = Action::new(
                cause.next_action_id(),
                cause.at,
                Some(contact),
                ActionKind::DraftClosed,
            );
            a.channel = Some(run.channel.clone());
            a.queue = Some(d.queue.to_string());
            a.reason = Some(reason.to_string());
            a.draft = Some(d.id.to_string());
            a.cause = Some(cause.field.clone());
            self.out.actions.push(a);
        }
        if let Some(h) = closed {
            // Released by an agent: no `handoff_closed`.
            if reason != "released" {
                self.close_handoff_action(contact, &h, reason, cause);
            } else if let Some(t) = &h.sla_timer {
                self.live_timers.remove(t);
            }
        }
        self.journal_run(|| crate::engine::RunFact::Ended {
            run: run.id,
            at: cause.at,
            outcome: reason.to_string(),
            handoff: run.reached_handoff,
            error: run.error,
        });
        let st = &mut self.stats[run.flow as usize];
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
            Some((run.flow as usize, Some(run.state as usize))),
            "run_ended",
            Some(reason),
            None,
        );
    }
}
