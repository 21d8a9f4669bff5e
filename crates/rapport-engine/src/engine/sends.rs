//! Flow sends through every check, in order (docs/runtime.md, "Sends"), then delivery.

use super::*;

impl Engine {
    // ------------------------------------------------------------------ sends

    /// Runs the send at `action` of the run's state through every check.
    pub(super) fn run_send(
        &mut self,
        contact: &str,
        run_id: u64,
        state: usize,
        action: usize,
        reprompt: bool,
        cause: &mut Cause,
    ) {
        let Some((flow, variant)) = self
            .contacts
            .get(contact)
            .and_then(|c| c.run(run_id))
            .map(|r| (r.flow as usize, r.variant.map(|v| v as usize)))
        else {
            return;
        };
        // The flow versions are shared: the text is read in place while the contact changes.
        let versions = Arc::clone(&self.versions);
        let (text, template) = match versions[flow].states[state].actions.get(action) {
            Some(BAction::Send { text, template, .. }) => (text, template.as_ref()),
            Some(BAction::SendVariant { texts, .. }) => {
                let v = variant.unwrap_or(0).min(texts.len().saturating_sub(1));
                match texts.get(v) {
                    Some(t) => (t, None),
                    None => return,
                }
            }
            Some(BAction::Ask(ask)) if reprompt => match &ask.reprompt {
                Some(t) => (t, None),
                None => return,
            },
            // Outside the window, the question is asked with its template.
            Some(BAction::Ask(ask)) => (&ask.question, ask.template.as_ref()),
            _ => return,
        };
        self.deliver_text(
            contact,
            run_id,
            text,
            template,
            Some((state, action, reprompt)),
            cause,
        );
    }

    /// The send checks, in order (docs/runtime.md, "Sends"), then the send itself.
    pub(super) fn deliver_text(
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
        // The contact's time zone is read only when quiet hours can defer the send.
        let quiet = self.bundle.settings.quiet_hours.is_some() && deferrable.is_some();
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
                    timezone: if quiet {
                        c.profile
                            .get("timezone")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string()
                    } else {
                        String::new()
                    },
                },
                RunView {
                    flow: run.flow as usize,
                    state: run.state as usize,
                    channel: run.channel.clone(),
                    comment: run.comment.as_deref().cloned(),
                    private_reply_used: run.private_reply_used,
                    disclosed: run.disclosed,
                    footered: run.footered,
                    variant: run.variant.map(|v| v as usize),
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
        // The messaging window, with the private-reply exception for comments.
        let private_reply = run
            .comment
            .as_ref()
            .filter(|(_, at)| !run.private_reply_used && now - at <= PRIVATE_REPLY_WINDOW)
            .map(|(id, _)| id.clone());
        let window = self
            .bundle
            .settings
            .channels
            .get(&*run.channel)
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
                            state: state as u32,
                            action: action as u32,
                            reprompt,
                        },
                    );
                    if let Some(r) = self
                        .contacts
                        .get_mut(contact)
                        .and_then(|c| c.run_mut(run_id))
                    {
                        crate::state::push_exact(&mut r.state_timers, id);
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
        let template_params = |t: &rapport_bundle::TemplateSend, warnings: &mut Vec<_>| {
            if t.params.is_empty() {
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
            }
        };
        if use_template {
            let t = template.cloned().unwrap_or(rapport_bundle::TemplateSend {
                name: String::new(),
                params: Vec::new(),
            });
            a.params = Some(template_params(&t, &mut warnings));
            a.template = Some(t.name.clone());
        } else {
            // The template offered, should the platform find the window closed.
            if let (Some(t), Some(_), None) = (template, window, &private_reply) {
                a.or_params = Some(template_params(t, &mut Vec::new()));
                a.or_template = Some(t.name.clone());
            }
            let settings = &self.bundle.settings;
            let mut body = String::new();
            if !run.disclosed {
                body.push_str(&settings.disclosure);
                body.push(' ');
            }
            warnings.extend(crate::matching::render_into(&mut body, text, &lookup));
            if marketing && !run.footered {
                body.push(' ');
                body.push_str(&settings.opt_out.footer);
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
            crate::state::push_exact(&mut c.sends, now);
            if let Some(per) = rate_window {
                // Only the oldest entries leave (events may come out of order).
                let stale = c.sends.iter().take_while(|&&t| t <= now - per).count();
                c.sends.drain(..stale);
            }
            c.last_sender = std::num::NonZeroU64::new(run_id).map(|id| (run.flow as u32, id));
            let mut first = false;
            if let Some(r) = c.run_mut(run_id) {
                first = r.last_send == crate::state::Since::NEVER;
                r.last_send = crate::state::Since::at(now);
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
            if first {
                self.journal_run(|| crate::engine::RunFact::Responded {
                    run: run_id,
                    at: now,
                });
            }
        }
        self.audit(cause, Some(contact), at_state, "sent", None, None);
    }
}
