//! Inputs from a contact: messages (keywords, escalation, routing), comments, consent,
//! external events and agent events.

use super::*;

impl Engine {
    pub(super) fn contact_event(
        &mut self,
        contact: &str,
        event: &Event,
        now: Millis,
        cause: &mut Cause,
    ) {
        self.ensure_contact(contact);
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
                let purpose_name = self.names.get(purpose);
                // `ensure_contact` above made sure the contact is held.
                if let Some(c) = self.contacts.get_mut(contact) {
                    let pos = c.consent.partition_point(|r| r.at <= event.at);
                    c.consent.reserve_exact(1);
                    c.consent.insert(
                        pos,
                        ConsentRecord {
                            at: event.at,
                            purpose: purpose_name,
                            granted: *granted,
                        },
                    );
                }
                // Described only when audit records are built; the record itself always
                // goes through `audit` (which keeps the tallies).
                let detail = self.record_audit.then(|| {
                    format!(
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
                    )
                });
                self.audit(cause, Some(contact), None, "consent", None, detail);
            }
            Body::External { name, data } => self.external(contact, event, name, data, now, cause),
            Body::Agent { released, agent } => {
                self.agent(contact, *released, agent.as_deref(), cause)
            }
            Body::Restored { comment, agent } => {
                // Nothing changes for the contact: the record says which comment a person
                // put back (`detail`), and who (`actor`), for the moderation figures.
                if self.record_audit {
                    self.out.audit.push(Audit {
                        at: cause.at,
                        contact: Some(contact.to_string()),
                        actor: agent.clone().unwrap_or_else(|| "agent".into()),
                        kind: "restored",
                        flow: None,
                        version: None,
                        state: None,
                        reason: None,
                        detail: Some(comment.clone()),
                        cause: Some(cause.field.to_string()),
                    });
                }
            }
            Body::Decision {
                approved,
                draft,
                text,
                agent,
            } => self.decision(
                contact,
                *approved,
                draft,
                text.as_deref(),
                agent.as_deref(),
                cause,
            ),
            Body::Delivery {
                effect: Some(effect),
                code,
                ..
            } => self.platform_effect(contact, *effect, code.as_deref(), event, cause),
            Body::Tick | Body::Operator { .. } | Body::Delivery { .. } => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn message(
        &mut self,
        contact: &str,
        event: &Event,
        text: &str,
        profile: &[(String, Value)],
        intent: Option<&str>,
        sentiment: Option<f64>,
        now: Millis,
        cause: &mut Cause,
    ) {
        let settings = &self.bundle.settings;
        let channel = event.channel.as_deref().map(|ch| self.names.get(ch));
        let names = &self.names;
        // `ensure_contact` made sure the contact is held.
        if let Some(c) = self.contacts.get_mut(contact) {
            c.profile.merge(profile, |k| names.get(k));
            // `{suggested_reply}` is the latest message's suggestion, or nothing.
            if !profile
                .iter()
                .any(|(k, _)| k == crate::event::SUGGESTED_REPLY)
            {
                c.profile.remove(crate::event::SUGGESTED_REPLY);
            }
            if let Some(ch) = &channel {
                let last = event
                    .at
                    .max(c.last_inbound.get(ch).copied().unwrap_or(i64::MIN));
                c.last_inbound.insert(ch.clone(), last);
                c.latest_channel = Some(ch.clone());
            }
            c.last_reply = Some(Box::from(text));
        }
        let normal = normalize_keyword(text);
        let reply_channel: Option<String> = channel.as_deref().map(str::to_string).or_else(|| {
            self.contacts
                .get(contact)
                .and_then(|c| c.latest_channel.as_deref().map(str::to_string))
        });

        // STOP, START, HELP: before anything else, in the keyword form (NFKC, invisible
        // characters dropped, surrounding symbols stripped, a repeated keyword once).
        let keyword = rapport_bundle::normalize_opt_keyword(text);
        if settings.opt_out.keywords.contains(&keyword) {
            self.opt_out(contact, reply_channel.as_deref(), cause);
            return;
        }
        if settings.opt_out.resubscribe.contains(&keyword) {
            // A START sent before the latest STOP (arriving late, out of order) does not
            // undo it: an opt-out is only lifted by a later opt-in.
            let stale = self
                .contacts
                .get(contact)
                .is_some_and(|c| c.opted_out && event.at < Millis::from(c.opted_out_at) * 1000);
            if stale {
                self.audit(
                    cause,
                    Some(contact),
                    None,
                    "opt_in",
                    Some("older_than_opt_out"),
                    None,
                );
                return;
            }
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
        if settings.opt_out.help.contains(&keyword) {
            let text = self.bundle.settings.opt_out.help_reply.clone();
            self.policy_send(contact, reply_channel.as_deref(), text, "help", cause);
            return;
        }
        let opted_out = self.contacts.get(contact).is_some_and(|c| c.opted_out);
        // Ambiguous opt-out: a keyword inside a longer message, or an opt-out keyword in
        // look-alike letters or spelled out letter by letter.
        let resembles =
            !opted_out && rapport_bundle::resembles_keyword(&keyword, &settings.opt_out.keywords);
        if !opted_out
            && (resembles
                || settings
                    .opt_out
                    .ambiguous
                    .iter()
                    .any(|k| rapport_bundle::contains_phrase(&keyword, k)))
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
            // A look-alike or spelled-out STOP was meant as STOP: it waits for the answer
            // and reaches no flow (a keyword inside a longer message goes on to routing).
            if resembles {
                return;
            }
        }
        // Escalation: a person should see it, opted out or not.
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
                a.channel = reply_channel.as_deref().map(|ch| self.names.get(ch));
                a.queue = Some(esc.queue.clone());
                a.summary = Some(text.to_string());
                a.cause = Some(cause.field.clone());
                self.out.actions.push(a);
                if let Some(c) = self.contacts.get_mut(contact) {
                    c.handoff = Some(Box::new(OpenHandoff {
                        queue: esc.queue.clone(),
                        run: None,
                        flow: None,
                        sla_timer: None,
                        opened: cause.at.max(self.clock),
                        summary: Some(text.to_string()),
                        channel: reply_channel.clone(),
                    }));
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

    /// A platform's answer about the contact: the person blocked the bot (an opt-out,
    /// with no confirmation: it could not be delivered), or stopped marketing messages (a
    /// marketing consent withdrawal, source `platform`).
    fn platform_effect(
        &mut self,
        contact: &str,
        effect: crate::DeliveryEffect,
        code: Option<&str>,
        event: &Event,
        cause: &mut Cause,
    ) {
        match effect {
            crate::DeliveryEffect::OptedOut => {
                if self.contacts.get(contact).is_some_and(|c| c.opted_out) {
                    return;
                }
                self.record_opt_out(contact, cause);
                self.audit(
                    cause,
                    Some(contact),
                    None,
                    "opt_out",
                    Some("platform"),
                    code.map(|c| format!("the platform answered {c}")),
                );
            }
            crate::DeliveryEffect::MarketingWithdrawn => {
                let purpose = self.names.get("marketing");
                if let Some(c) = self.contacts.get_mut(contact) {
                    let pos = c.consent.partition_point(|r| r.at <= event.at);
                    c.consent.reserve_exact(1);
                    c.consent.insert(
                        pos,
                        ConsentRecord {
                            at: event.at,
                            purpose,
                            granted: false,
                        },
                    );
                }
                let detail = format!(
                    "marketing withdrawn via platform{}",
                    code.map(|c| format!(" ({c})")).unwrap_or_default()
                );
                self.audit(cause, Some(contact), None, "consent", None, Some(detail));
            }
        }
    }

    pub(super) fn opt_out(&mut self, contact: &str, channel: Option<&str>, cause: &mut Cause) {
        self.record_opt_out(contact, cause);
        self.audit(cause, Some(contact), None, "opt_out", None, None);
        let text = self.bundle.settings.opt_out.confirm.clone();
        self.policy_send(contact, channel, text, "opt_out_confirm", cause);
    }

    /// Marks the contact opted out: its runs end, an open handoff closes.
    fn record_opt_out(&mut self, contact: &str, cause: &mut Cause) {
        let runs: Vec<u64> = self
            .contacts
            .get(contact)
            .map(|c| c.runs.iter().map(|r| r.id).collect())
            .unwrap_or_default();
        // The opt-out is charged to the run that sent last (for `opt_out_rate`).
        if let Some((flow, run)) = self.contacts.get(contact).and_then(|c| c.last_sender) {
            if runs.contains(&run.get()) {
                self.stats[flow as usize].opted_out += 1;
                self.journal_run(|| crate::engine::RunFact::OptedOut { run: run.get() });
            }
        }
        let sent = u32::try_from((cause.at.max(0) + 999) / 1000).unwrap_or(u32::MAX);
        let handoff = self.contacts.get_mut(contact).and_then(|c| {
            c.opted_out = true;
            c.opted_out_at = c.opted_out_at.max(sent);
            c.ambiguous_pending = false;
            c.handoff.take()
        });
        if let Some(h) = handoff {
            self.close_handoff_action(contact, &h, "opted_out", cause);
        }
        for run in runs {
            self.end_run(contact, run, "opted_out", cause);
        }
    }

    pub(super) fn close_handoff_action(
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
        a.flow = h.flow.as_deref().map(Arc::from);
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
    pub(super) fn policy_send(
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
        a.channel = channel.map(|ch| self.names.get(ch));
        a.text = Some(text);
        a.policy = Some(policy);
        a.cause = Some(cause.field.clone());
        self.out.actions.push(a);
    }

    /// Runs in routing order: most recent send first, then runs that never
    /// sent, newest first.
    pub(super) fn run_order(&self, contact: &str) -> smallvec::SmallVec<[u64; 4]> {
        let Some(c) = self.contacts.get(contact) else {
            return smallvec::SmallVec::new();
        };
        let mut runs: smallvec::SmallVec<[(Option<Millis>, u64); 4]> =
            c.runs.iter().map(|r| (r.last_send.get(), r.id)).collect();
        runs.sort_by(|(a_send, a_id), (b_send, b_id)| match (a_send, b_send) {
            (Some(x), Some(y)) => y.cmp(x).then(b_id.cmp(a_id)),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => b_id.cmp(a_id),
        });
        runs.iter().map(|(_, id)| *id).collect()
    }

    /// Offers a message (or comment) to the active runs; true when one took it.
    pub(super) fn offer_to_runs(
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
                let flow = &self.versions[run.flow as usize];
                let state = &flow.states[run.state as usize];
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
                let has_ask = state.actions.iter().any(|a| matches!(a, BAction::Ask(_)));
                (
                    matched,
                    has_ask,
                    (run.flow as usize, run.state as usize, run.retries_left),
                )
            };
            // Read in place from the shared flow versions while the contact changes.
            let versions = Arc::clone(&self.versions);
            let ask = ask
                .then(|| {
                    versions[run_flow].states[run_state]
                        .actions
                        .iter()
                        .find_map(|a| match a {
                            BAction::Ask(ask) => Some(&**ask),
                            _ => None,
                        })
                })
                .flatten();
            if let Some(target) = matched {
                self.touch(contact, run_id, cause.at);
                self.transition(contact, run_id, target, cause);
                return true;
            }
            if comment {
                continue;
            }
            // A run waiting in an `ask` takes every reply.
            if let Some(ask) = ask {
                self.touch(contact, run_id, cause.at);
                match answer(&ask.expect, input.text, &self.regexes) {
                    Some(value) => {
                        if let Some(r) = self
                            .contacts
                            .get_mut(contact)
                            .and_then(|c| c.run_mut(run_id))
                        {
                            r.slots.insert(self.names.get(&ask.slot), value);
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

    pub(super) fn touch(&mut self, contact: &str, run: u64, at: Millis) {
        if let Some(r) = self.contacts.get_mut(contact).and_then(|c| c.run_mut(run)) {
            r.last_activity = r.last_activity.max(at);
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn comment(
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

    pub(super) fn external(
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
                    if &*g.event == name && event.at <= g.deadline {
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
        for (flow, run) in converted {
            self.stats[flow].converted += 1;
            self.journal_run(|| crate::engine::RunFact::Converted { run, at: event.at });
        }
        // Every active run with a matching `on event`, in routing order.
        for run_id in self.run_order(contact) {
            let target = {
                let Some(run) = self.contacts.get(contact).and_then(|c| c.run(run_id)) else {
                    continue;
                };
                let flow = &self.versions[run.flow as usize];
                let state = &flow.states[run.state as usize];
                let lookup = self.lookup(contact, run, Some(data));
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

    pub(super) fn agent(
        &mut self,
        contact: &str,
        released: bool,
        agent: Option<&str>,
        cause: &mut Cause,
    ) {
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
        let Some(run) = self.run_copy(contact, run_id) else {
            if let Some(c) = self.contacts.get_mut(contact) {
                c.handoff = None;
            }
            return;
        };
        let flow = &self.versions[run.flow as usize];
        let state = &flow.states[run.state as usize];
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
                Some((run.flow as usize, Some(run.state as usize))),
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
}
