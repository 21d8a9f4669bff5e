//! The step function: an event in, actions and audit records out, with the contact's state
//! updated. Event time is the clock; there is no I/O, no wall clock and no randomness.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::num::NonZeroU64;
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
mod durable;
pub use durable::{Changes, Loaded, Loader, RunFact, TimerChange};
mod seen;
pub use seen::SeenEvents;
pub(crate) use seen::{seen_seconds, IdKey};
mod inbound;
mod runs;
mod sends;
mod timers;

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
    /// The event was a duplicate of one processed within the dedupe window (1), or not.
    pub duplicates: u32,
    /// Operator events refused (an unknown flow).
    pub rejected: u32,
}

/// The runtime core for one bundle and a set of contacts.
pub struct Engine {
    bundle: Bundle,
    /// Every flow version: the bundle's flows, then their previous versions. Shared so a
    /// step can read a flow while it updates the contact.
    versions: Arc<Vec<Flow>>,
    /// Flow name → (current version index, previous version index).
    by_name: FastMap<String, (usize, Option<usize>)>,
    regexes: Regexes,
    /// The bundle's names, shared by every contact's state.
    names: crate::state::Names,
    /// Per flow version: its name, version and state names, shared by the actions.
    labels: Vec<Labels>,
    /// The fields `X` of every `{event.X}` token in the bundle: a run keeps only these of
    /// its starting event (`lookup` is the only reader of a run's event data). `None`:
    /// keep every field.
    event_fields: Option<std::collections::HashSet<String, foldhash::fast::RandomState>>,
    /// Boxed, so the map's spare buckets cost a pointer, not a whole contact.
    contacts: FastMap<compact_str::CompactString, Box<Contact>>,
    clock: Millis,
    /// Event ids processed within the dedupe window, by a 96-bit hash of the id (a false
    /// duplicate needs about 2^48 ids within one window), with the clock when each was seen
    /// in seconds after `seen_base`: 16 bytes an id, plus the table's spare buckets.
    seen: SeenEvents,
    /// Off when the host dedupes events before they reach the engine (a sharded host,
    /// whose reader must know a duplicate to keep it from moving the clock).
    dedupe: bool,
    /// Due time and key of every timer set; a key no longer in `live_timers` was cancelled.
    timers: BinaryHeap<Reverse<(Millis, u64)>>,
    /// Boxed for the same reason as contacts.
    live_timers: durable::TimerTable,
    timer_seq: u64,
    run_seq: u64,
    stats: Vec<VersionStats>,
    out: Output,
    /// Build audit records (off when nobody reads them; the tallies are kept anyway).
    record_audit: bool,
    /// Suppressions and refused enrolments by reason.
    tallies: BTreeMap<(&'static str, String), u64>,
    /// What steps changed, for a durable host (off by default).
    journal: Option<durable::Journal>,
    /// Where contacts not in memory are loaded from (a durable host's store).
    loader: Option<durable::Loader>,
    load_error: Option<String>,
}

/// The engine's maps keyed by contact id, flow name or timer key, hashed with foldhash
/// seeded per process: fast on short keys. It is not meant to resist keys crafted to
/// collide; contact ids come from the messaging platforms, not from the contacts.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The cause of the actions being produced: an event or a timer.
struct Cause {
    /// The event id, or the timer id.
    id: Arc<str>,
    /// `e1` for an event, `timer` for a timer.
    field: Arc<str>,
    at: Millis,
    actions: u32,
    timers: u32,
}

impl Cause {
    /// `EVENT.K`: the id of the cause's next action.
    fn next_action_id(&mut self) -> String {
        let id = numbered(&self.id, '.', self.actions);
        self.actions += 1;
        id
    }

    /// `EVENT~K`: the id of the cause's next timer.
    fn next_timer_id(&mut self) -> String {
        let id = numbered(&self.id, '~', self.timers);
        self.timers += 1;
        id
    }
}

/// `base`, `sep` and `n` in decimal, in one allocation (ids are made for every action and
/// timer, so this skips the formatting machinery).
fn numbered(base: &str, sep: char, n: u32) -> String {
    let mut digits = [0u8; 10];
    let mut i = digits.len();
    let mut rest = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut id = String::with_capacity(base.len() + 1 + digits.len() - i);
    id.push_str(base);
    id.push(sep);
    for &d in &digits[i..] {
        id.push(char::from(d));
    }
    id
}

impl Engine {
    pub fn new(bundle: Bundle) -> Self {
        let versions: Vec<Flow> = crate::deploy::layout(&bundle)
            .into_iter()
            .cloned()
            .collect();
        let mut by_name = FastMap::default();
        let mut next_previous = bundle.flows.len();
        for (i, f) in bundle.flows.iter().enumerate() {
            let previous = f.previous.as_ref().map(|_| {
                next_previous += 1;
                next_previous - 1
            });
            by_name.insert(f.name.clone(), (i, previous));
        }
        let mut regexes = Regexes::default();
        for f in &versions {
            collect_regexes(f, &mut regexes);
        }
        let stats = vec![VersionStats::default(); versions.len()];
        let names = bundle_names(&bundle, &versions);
        let event_fields = event_fields(&bundle);
        let labels = versions
            .iter()
            .map(|f| Labels {
                name: names.get(&f.name),
                flow: Arc::from(f.name.as_str()),
                version: Arc::from(f.version.as_str()),
                states: f
                    .states
                    .iter()
                    .map(|s| Arc::from(s.name.as_str()))
                    .collect(),
            })
            .collect();
        let versions = Arc::new(versions);
        Engine {
            bundle,
            versions,
            by_name,
            regexes,
            names,
            labels,
            event_fields,
            contacts: FastMap::default(),
            clock: i64::MIN,
            seen: SeenEvents::default(),
            dedupe: true,
            timers: BinaryHeap::new(),
            live_timers: durable::TimerTable::default(),
            timer_seq: 0,
            run_seq: 0,
            stats,
            out: Output::default(),
            record_audit: true,
            tallies: BTreeMap::new(),
            journal: None,
            loader: None,
            load_error: None,
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
        self.step_at(event, event.at)
    }

    /// [`Engine::step`] at the clock `clock` as it stood after this event in input order:
    /// a sharded host passes the clock of the whole stream, so an event takes the same
    /// "now" on whichever worker, and with however many workers, it runs (an event older
    /// than the clock keeps its own `at` on its actions; its timers count from the clock).
    pub fn step_at(&mut self, event: &Event, clock: Millis) -> Output {
        let now = event.at.max(clock).max(self.clock);
        if self.dedupe {
            let key = IdKey::of(event.contact.as_deref(), &event.id);
            if !self.seen.insert(key, now) {
                // A duplicate changes nothing, not even the clock; it is counted and
                // audited.
                self.out.duplicates += 1;
                if self.record_audit {
                    self.out.audit.push(Audit::duplicate(event));
                }
                return std::mem::take(&mut self.out);
            }
            self.journal_seen(key, now);
            let window = self.bundle.settings.dedupe_window as Millis * 1000;
            self.seen.sweep(now, window);
        }
        self.fire_due(now);
        self.clock = now;
        let id: Arc<str> = Arc::from(event.id.as_str());
        let mut cause = Cause {
            id: Arc::clone(&id),
            field: id,
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
            // An outcome is recorded, never a reason to create a contact.
            Body::Delivery {
                action,
                status,
                code,
                detail,
                effect,
            } => {
                let detail = match detail {
                    Some(d) => format!("{action}: {d}"),
                    None => action.clone(),
                };
                let contact = event.contact.as_deref();
                let kind = if *status == crate::DeliveryStatus::Failed {
                    "delivery_failed"
                } else {
                    "delivery"
                };
                let reason = code.as_deref().unwrap_or(status.as_str());
                self.audit(&cause, contact, None, kind, Some(reason), Some(detail));
                // What the platform said changes what the engine knows of the contact.
                if let (Some(_), Some(contact)) = (effect, contact) {
                    self.contact_event(contact, event, now, &mut cause);
                }
            }
            _ => {
                if let Some(contact) = event.contact.as_deref() {
                    self.contact_event(contact, event, now, &mut cause);
                }
            }
        }
        std::mem::take(&mut self.out)
    }

    /// Hands back a step's output once it has been written, so the next step reuses its
    /// memory instead of allocating afresh.
    pub fn recycle(&mut self, mut used: Output) {
        // A burst (a tick firing thousands of timers) is not worth keeping memory for.
        let small = used.actions.capacity() <= 256 && used.audit.capacity() <= 256;
        if small && self.out.actions.capacity() == 0 && self.out.audit.capacity() == 0 {
            used.actions.clear();
            used.audit.clear();
            used.duplicates = 0;
            used.rejected = 0;
            self.out = used;
        }
    }

    /// Fires every timer due up to `until` (a live host's wall-clock tick).
    pub fn advance(&mut self, until: Millis) -> Output {
        if until > self.clock {
            self.fire_due(until);
            self.clock = until;
        }
        std::mem::take(&mut self.out)
    }

    /// A live host's wall-clock tick at `at`, after it fired the timers due (with
    /// [`Engine::advance_some`]): evaluates the rollout guards as a `tick` event does, but
    /// is no event, so it takes no place among the processed event ids.
    pub fn wall_tick(&mut self, at: Millis) -> Output {
        if at > self.clock {
            self.fire_due(at);
            self.clock = at;
        }
        let id: Arc<str> = Arc::from(format!("tick:{at}"));
        let mut cause = Cause {
            id: Arc::clone(&id),
            field: id,
            at,
            actions: 0,
            timers: 0,
        };
        self.tick(&mut cause);
        std::mem::take(&mut self.out)
    }

    /// Fires at most `max` of the timers due up to `until` (a durable host fires a burst
    /// of due timers in slices, committing between them). The clock moves to `until` once
    /// none is left. Returns the output and whether more timers are due.
    pub fn advance_some(&mut self, until: Millis, max: usize) -> (Output, bool) {
        let more = self.fire_due_some(until, max);
        if !more && until > self.clock {
            self.clock = until;
        }
        (std::mem::take(&mut self.out), more)
    }

    /// How many contacts are held.
    pub fn contacts(&self) -> usize {
        self.contacts.len()
    }

    /// Leaves deduplication to the host: it keeps its own [`SeenEvents`] and steps only
    /// first deliveries (their clock then never includes a duplicate's time).
    pub fn leave_dedupe_to_host(&mut self) {
        self.dedupe = false;
    }

    // ------------------------------------------------------------------ contacts

    fn contact_ref(&self, id: &str) -> Option<&Contact> {
        self.contacts.get(id).map(|c| &**c)
    }

    /// A copy of a contact's run, to read while the contact changes.
    fn run_copy(&self, contact: &str, run_id: u64) -> Option<Run> {
        self.contacts.get(contact)?.run(run_id).cloned()
    }

    fn run_state(&self, contact: &str, run: u64, state: usize) -> Option<(usize, usize)> {
        let r = self.contacts.get(contact)?.run(run)?;
        (r.state as usize == state).then_some((r.flow as usize, r.state as usize))
    }

    // ------------------------------------------------------------------ tokens and audit

    /// Token values for a run, looked up in order: slot, profile field, project variable,
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
                return match event_data {
                    Some(data) => data.get(field).cloned(),
                    None => run.event.get(field).cloned(),
                };
            }
            if token == "channel" {
                return Some(Value::String(run.channel.to_string()));
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
                return c
                    .and_then(|c| c.last_reply.as_deref())
                    .map(|r| Value::String(r.to_string()));
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
            cause: Some(cause.field.to_string()),
        });
    }
}

/// A flow version's names as actions carry them, and its name as contacts' state holds it.
struct Labels {
    name: crate::state::Name,
    flow: Arc<str>,
    version: Arc<str>,
    states: Vec<Arc<str>>,
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
    channel: crate::state::Name,
    comment: Option<(String, Millis)>,
    private_reply_used: bool,
    disclosed: bool,
    footered: bool,
    variant: Option<usize>,
}

impl Run {
    /// Whether the run has opened a handoff (leaving its state then lifts the pause, if
    /// that handoff is still the contact's open one).
    fn opened_handoff(&self) -> bool {
        self.reached_handoff
    }
}

/// The `X` of every `event.X` the bundle holds, wherever it is (texts, conditions, template
/// parameters, summaries): found in the bundle's JSON form, so no place that can hold a
/// token is missed. A literal text that reads like a token only keeps a field more.
fn event_fields(
    bundle: &Bundle,
) -> Option<std::collections::HashSet<String, foldhash::fast::RandomState>> {
    fn walk(v: &Value, out: &mut std::collections::HashSet<String, foldhash::fast::RandomState>) {
        match v {
            Value::String(s) => {
                if let Some(field) = s.strip_prefix("event.") {
                    out.insert(field.to_string());
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => map.values().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let json = serde_json::to_value(bundle).ok()?;
    let mut out = std::collections::HashSet::default();
    walk(&json, &mut out);
    Some(out)
}

/// Every name a contact's state can hold that the bundle knows in advance.
fn bundle_names(bundle: &Bundle, versions: &[Flow]) -> crate::state::Names {
    let mut names = crate::state::Names::default();
    let settings = &bundle.settings;
    for n in [
        "marketing",
        "transactional",
        "text",
        "comment",
        "post",
        "author",
        "timezone",
    ] {
        names.add(n);
    }
    for n in settings.channels.keys().chain(settings.profile.keys()) {
        names.add(n);
    }
    for fields in settings.events.values() {
        for n in fields.keys() {
            names.add(n);
        }
    }
    for f in versions {
        names.add(&f.name);
        for c in &f.channels {
            names.add(c);
        }
        if let Some(g) = &f.goal {
            names.add(&g.event);
        }
        for s in &f.states {
            for a in &s.actions {
                match a {
                    BAction::Ask(ask) => names.add(&ask.slot),
                    BAction::Set { slot, .. } => names.add(slot),
                    _ => {}
                }
            }
        }
    }
    names
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_contact_and_a_run_fit_their_allocation_classes() {
        // Every contact is one allocation and its runs another: at 128 bytes each they
        // fill an allocator class exactly (144 would take 160, wasting a tenth).
        assert!(std::mem::size_of::<Contact>() <= 128);
        // A pending timer fills a 48-byte class (its key is the table's, not repeated;
        // its id and contact share one allocation).
        assert_eq!(std::mem::size_of::<crate::state::Timer>(), 48);
        // A name in a contact's lists is one pointer.
        assert_eq!(std::mem::size_of::<crate::state::Name>(), 8);
        // A run fits 112 so that a contact's list of one run (16 bytes of header) is 128.
        assert!(std::mem::size_of::<Run>() <= 112);
    }
}
