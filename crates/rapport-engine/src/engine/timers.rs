//! Timers (due in order, from the clock), ticks, operator events and rollout stages.

use super::*;

impl Engine {
    // ------------------------------------------------------------------ timers

    pub(super) fn set_timer(
        &mut self,
        cause: &mut Cause,
        due: Millis,
        contact: Option<&str>,
        kind: TimerKind,
    ) -> u64 {
        let id = cause.next_timer_id();
        self.timer_seq += 1;
        let key = self.timer_seq;
        self.timers.push(Reverse((due, key)));
        self.live_timers
            .insert(key, Box::new(Timer::new(id, due, contact, kind)));
        self.compact_timers();
        key
    }

    /// A cancelled timer's entry stays in the due-order heap until it comes due (removing
    /// it there would cost a search); when such entries outnumber the live timers, the heap
    /// is rebuilt from the live ones. Between two rebuilds it grows by at least as many
    /// entries as it holds live timers, so the cost per timer set stays constant.
    fn compact_timers(&mut self) {
        let live = self.live_timers.len();
        if self.timers.len() > 2 * live + 4096 {
            self.timers = self
                .live_timers
                .iter()
                .map(|(key, t)| Reverse((t.due, key)))
                .collect();
        }
    }

    pub(super) fn fire_due(&mut self, until: Millis) {
        self.fire_due_some(until, usize::MAX);
    }

    /// Fires at most `max` of the timers due up to `until`, in due order; returns whether
    /// more are due.
    pub(super) fn fire_due_some(&mut self, until: Millis, max: usize) -> bool {
        let mut fired = 0;
        while let Some(&Reverse((due, key))) = self.timers.peek() {
            if due > until {
                break;
            }
            if fired == max {
                return true;
            }
            self.timers.pop();
            let Some(timer) = self.live_timers.remove(&key) else {
                continue; // cancelled
            };
            fired += 1;
            self.clock = self.clock.max(due);
            let mut cause = Cause {
                id: Arc::from(timer.id()),
                field: Arc::from("timer"),
                at: due,
                actions: 0,
                timers: 0,
            };
            self.fire(key, *timer, &mut cause);
        }
        false
    }

    pub(super) fn fire(&mut self, key: u64, timer: Timer, cause: &mut Cause) {
        let contact_id = timer.contact().unwrap_or_default().to_string();
        if timer.contact().is_some() {
            self.ensure_contact(&contact_id);
        }
        match timer.kind {
            TimerKind::After {
                run,
                state,
                transition,
            } => {
                let (state, transition) = (state as usize, transition as usize);
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
                let (state, action) = (state as usize, action as usize);
                if self.run_state(&contact_id, run, state).is_some() {
                    self.run_send(&contact_id, run, state, action, reprompt, cause);
                }
            }
            TimerKind::Expire { run } => {
                let Some((flow, last)) = self
                    .contact_ref(&contact_id)
                    .and_then(|c| c.run(run))
                    .map(|r| (r.flow as usize, r.last_activity))
                else {
                    return;
                };
                let expire = self.versions[flow].expire_after as Millis * 1000;
                if last + expire > cause.at {
                    let due = last + expire;
                    let key =
                        self.set_timer(cause, due, Some(&contact_id), TimerKind::Expire { run });
                    if let Some(r) = self
                        .contacts
                        .get_mut(contact_id.as_str())
                        .and_then(|c| c.run_mut(run))
                    {
                        r.expire_timer = std::num::NonZeroU64::new(key);
                    }
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
            TimerKind::DraftExpire { run, state, action } => {
                if self.run_state(&contact_id, run, state as usize).is_none() {
                    return;
                }
                // The draft this timer was set for: made by the state's action `action`.
                let Some(r) = self
                    .contacts
                    .get_mut(contact_id.as_str())
                    .and_then(|c| c.run_mut(run))
                else {
                    return;
                };
                let flow = r.flow as usize;
                let channel = r.channel.clone();
                let expired = r
                    .drafts
                    .iter()
                    .position(|d| d.action == action)
                    .map(|i| r.drafts.remove(i));
                if let Some(d) = expired {
                    self.draft_closed(&contact_id, run, &channel, &d, "expired", cause);
                    self.audit(
                        cause,
                        Some(&contact_id),
                        Some((flow, Some(state as usize))),
                        "draft_expired",
                        None,
                        Some(d.id.to_string()),
                    );
                }
            }
            TimerKind::Sla => {
                let Some(h) = self
                    .contact_ref(&contact_id)
                    .and_then(|c| c.handoff.clone())
                else {
                    return;
                };
                if h.sla_timer != Some(key) {
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
                a.flow = h.flow.as_deref().map(Arc::from);
                a.cause = Some(cause.field.clone());
                self.out.actions.push(a);
            }
            TimerKind::GoalClosed { flow, run } => {
                let flow = flow as usize;
                if let Some(c) = self.contacts.get_mut(contact_id.as_str()) {
                    let before = c.goals.len();
                    c.goals.retain(|g| !(g.flow == flow && g.run == run));
                    if c.goals.len() < before {
                        self.stats[flow].not_converted += 1;
                    }
                }
            }
            TimerKind::RolloutAdvance { flow } => {
                let flow = flow as usize;
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

    pub(super) fn schedule_advance(&mut self, flow: usize, cause: &mut Cause) {
        let Some(r) = &self.versions[flow].rollout else {
            return;
        };
        let Some(every) = r.every else { return };
        if self.stats[flow].stage + 1 >= r.stages.len() {
            return;
        }
        let due = cause.at.max(self.clock) + every as Millis * 1000;
        self.set_timer(
            cause,
            due,
            None,
            TimerKind::RolloutAdvance { flow: flow as u32 },
        );
    }

    pub(super) fn rollout_alert(&mut self, flow: usize, kind: &'static str, cause: &mut Cause) {
        let mut a = Action::new(cause.next_action_id(), cause.at, None, ActionKind::Alert);
        a.alert = Some(kind);
        a.flow = Some(Arc::clone(&self.labels[flow].flow));
        a.version = Some(Arc::clone(&self.labels[flow].version));
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
            cause: Some(cause.field.to_string()),
        });
    }

    // ------------------------------------------------------------------ ticks and operators

    /// Guards are evaluated at ticks, once `after N runs` runs have finished.
    pub(super) fn tick(&mut self, cause: &mut Cause) {
        for flow in 0..self.bundle.flows.len() {
            let Some(halt) = self.versions[flow].halt.clone() else {
                continue;
            };
            let st = &self.stats[flow];
            if st.halted || st.finished < halt.after_runs {
                continue;
            }
            // A metric with no run counted yet has no value and crosses nothing.
            let crossed = halt.guards.iter().any(|g| {
                crate::rollout::guard_value(g.metric, st)
                    .is_some_and(|v| crate::rollout::guard_crossed(g, v))
            });
            if crossed {
                self.stats[flow].halted = true;
                self.rollout_alert(flow, "rollout_halted", cause);
            }
        }
    }

    pub(super) fn operator(
        &mut self,
        action: OperatorAction,
        flow: &str,
        actor: Option<&str>,
        cause: &mut Cause,
    ) {
        let actor = actor.unwrap_or("operator");
        let Some(&(idx, _)) = self.by_name.get(flow) else {
            self.out.rejected += 1;
            if self.record_audit {
                self.out.audit.push(Audit {
                    at: cause.at,
                    contact: None,
                    actor: actor.into(),
                    kind: "rejected",
                    flow: Some(flow.into()),
                    version: None,
                    state: None,
                    reason: Some("unknown_flow".into()),
                    detail: None,
                    cause: Some(cause.field.to_string()),
                });
            }
            return;
        };
        let stages = self.versions[idx]
            .rollout
            .as_ref()
            .map(|r| r.stages.len())
            .unwrap_or(0);
        let before = (self.stats[idx].stage, self.stats[idx].halted);
        let name = match action {
            OperatorAction::Promote => {
                if self.stats[idx].stage + 1 < stages {
                    self.stats[idx].stage += 1;
                    self.rollout_alert(idx, "rollout_advanced", cause);
                    // A promote restarts the count to the next advance.
                    self.cancel_rollout_timers(idx);
                    self.schedule_advance(idx, cause);
                }
                "promote"
            }
            OperatorAction::Halt => {
                if !self.stats[idx].halted {
                    self.stats[idx].halted = true;
                    self.rollout_alert(idx, "rollout_halted", cause);
                }
                "halt"
            }
            OperatorAction::Resume => {
                self.stats[idx].halted = false;
                "resume"
            }
        };
        // Every operator event is audited with the operator as the actor, also when it
        // changed nothing (a promote at the last stage, a halt of a halted flow).
        if self.record_audit {
            let changed = before != (self.stats[idx].stage, self.stats[idx].halted);
            self.out.audit.push(Audit {
                at: cause.at,
                contact: None,
                actor: actor.into(),
                kind: "operator",
                flow: Some(flow.into()),
                version: Some(self.versions[idx].version.clone()),
                state: None,
                reason: Some(name.into()),
                detail: (!changed).then(|| "no change".to_string()),
                cause: Some(cause.field.to_string()),
            });
        }
    }

    pub(super) fn cancel_rollout_timers(&mut self, flow: usize) {
        self.live_timers.retain(
            |t| !matches!(t.kind, TimerKind::RolloutAdvance { flow: f } if f as usize == flow),
        );
    }
}
