//! What the engine remembers: per contact (profile, consent ledger, opt-out, handoff,
//! runs, timers, recent sends) and per flow version (rollout stage and metrics).

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thin_vec::ThinVec;

use crate::event::Millis;

/// A name the bundle knows (channel, flow, slot, field, purpose), shared by every contact
/// that holds it rather than copied into each (see [`Names`]). One pointer wide (an
/// `Arc<str>` is two): a contact's lists hold a name in every entry.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Name(Arc<String>);

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Self {
        Name(Arc::new(s.to_string()))
    }
}

impl From<String> for Name {
    fn from(s: String) -> Self {
        Name(Arc::new(s))
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self)
    }
}

impl Serialize for Name {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Name::from)
    }
}

/// The bundle's names, made once per engine: a contact's state points at these.
/// Names the bundle does not know (a profile field only the events carry) get a copy of
/// their own, so the table never grows with the input.
#[derive(Debug, Default)]
pub(crate) struct Names(std::collections::HashSet<Name, foldhash::fast::RandomState>);

impl Names {
    pub(crate) fn add(&mut self, name: &str) {
        if !self.0.contains(name) {
            self.0.insert(Name::from(name));
        }
    }

    pub(crate) fn get(&self, name: &str) -> Name {
        match self.0.get(name) {
            Some(n) => n.clone(),
            None => Name::from(name),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConsentRecord {
    pub(crate) at: Millis,
    pub(crate) purpose: Name,
    pub(crate) granted: bool,
}

/// An open handoff: automation is paused for the contact until it closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OpenHandoff {
    pub(crate) queue: String,
    /// The run in its handoff state; `None` for an escalation.
    pub(crate) run: Option<u64>,
    pub(crate) flow: Option<String>,
    pub(crate) sla_timer: Option<u64>,
    /// When it opened (0 in a state stored before this was kept).
    #[serde(default)]
    pub(crate) opened: Millis,
    /// What the person taking it is told, and on which channel the contact is (for the
    /// console's list of open handoffs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) channel: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Run {
    pub(crate) id: u64,
    /// Index into the engine's flow versions (32 bits, like the state and variant: a run
    /// is kept for every contact, so its size counts).
    pub(crate) flow: u32,
    pub(crate) state: u32,
    pub(crate) channel: Name,
    pub(crate) started: Millis,
    /// The starting event's fields (`event.x`) that the bundle reads, or the
    /// comment's/message's; never changed after the start. Empty costs no allocation.
    pub(crate) event: SmallMap<Value>,
    pub(crate) slots: SmallMap<Value>,
    pub(crate) last_send: Since,
    pub(crate) last_activity: Millis,
    pub(crate) disclosed: bool,
    pub(crate) footered: bool,
    /// Retries of the current `ask` left (a count above 65,535 is kept as 65,535, also
    /// when read from a store).
    #[serde(deserialize_with = "saturating_u16")]
    pub(crate) retries_left: u16,
    /// The comment that started the run: its first send is a private reply.
    /// Boxed: few runs start from a comment.
    pub(crate) comment: Option<Box<(String, Millis)>>,
    pub(crate) private_reply_used: bool,
    pub(crate) variant: Option<u32>,
    pub(crate) reached_handoff: bool,
    pub(crate) error: bool,
    /// Timers owned by the current state (`after`, deferred sends), cancelled on leaving.
    pub(crate) state_timers: ThinVec<u64>,
    /// The run's expiry timer, cancelled when the run ends (timer keys start at 1).
    pub(crate) expire_timer: Option<NonZeroU64>,
    /// Drafts of the current state waiting for a person (`send ... approve by QUEUE`);
    /// dropped when the run leaves the state.
    #[serde(default, skip_serializing_if = "ThinVec::is_empty")]
    pub(crate) drafts: ThinVec<Draft>,
}

/// A draft waiting for a person's decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Draft {
    /// The `draft` action's id: what `approved` and `rejected` name.
    pub(crate) id: Box<str>,
    /// The index of the action that made it, in the run's state.
    pub(crate) action: u32,
    /// The queue deciding on it (told when the draft is dropped).
    pub(crate) queue: Box<str>,
    /// The rendered text (no disclosure or footer: those are decided when it is sent).
    pub(crate) text: Box<str>,
}

/// What a timer does (indexes in 32 bits: a timer is kept for every run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum TimerKind {
    /// An `after` transition of the state: the index of the transition in the state.
    After {
        run: u64,
        state: u32,
        transition: u32,
    },
    /// A send deferred by quiet hours: the action's index in the state.
    /// (`reprompt`: the `ask`'s reprompt rather than its question.)
    Deferred {
        run: u64,
        state: u32,
        action: u32,
        reprompt: bool,
    },
    Expire {
        run: u64,
    },
    /// An undecided draft runs out (`approve by QUEUE within DURATION`): the draft's
    /// action index in the state.
    DraftExpire {
        run: u64,
        state: u32,
        action: u32,
    },
    Sla,
    /// A goal window closes: count the run as not converted.
    GoalClosed {
        flow: u32,
        run: u64,
    },
    /// A rollout stage advance of a flow version.
    RolloutAdvance {
        flow: u32,
    },
}

/// A pending timer; its key is the engine's table key, so it is not repeated here (see
/// [`StoredTimer`] for the form a store keeps, which has it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Timer {
    /// The timer's id (`EVENT~K`, for the actions it causes), then, when the timer is a
    /// contact's, the byte 0xFF and the contact id: one allocation for both, and 0xFF
    /// never occurs in UTF-8, so the split is unambiguous.
    text: Box<[u8]>,
    pub(crate) due: Millis,
    pub(crate) kind: TimerKind,
}

/// Separates a timer's id from its contact in [`Timer::text`].
const TIMER_SPLIT: u8 = 0xFF;

impl Timer {
    /// Takes over `id`'s buffer (grown by the contact, if any).
    pub(crate) fn new(id: String, due: Millis, contact: Option<&str>, kind: TimerKind) -> Self {
        let mut text = id.into_bytes();
        if let Some(c) = contact {
            text.reserve_exact(c.len() + 1);
            text.push(TIMER_SPLIT);
            text.extend_from_slice(c.as_bytes());
        }
        Timer {
            text: text.into_boxed_slice(),
            due,
            kind,
        }
    }

    fn parts(&self) -> (&[u8], Option<&[u8]>) {
        match self.text.iter().position(|&b| b == TIMER_SPLIT) {
            Some(i) => (&self.text[..i], Some(&self.text[i + 1..])),
            None => (&self.text, None),
        }
    }

    /// The timer's id for the actions it causes (`EVENT~K`).
    pub(crate) fn id(&self) -> &str {
        // Both parts were whole strings when the timer was made.
        std::str::from_utf8(self.parts().0).unwrap_or_default()
    }

    /// The contact whose timer it is (none for a flow's rollout timers).
    pub(crate) fn contact(&self) -> Option<&str> {
        self.parts()
            .1
            .map(|c| std::str::from_utf8(c).unwrap_or_default())
    }
}

/// A timer as a store keeps it: `{"key", "id", "due", "contact", "kind"}`.
#[derive(Serialize)]
pub(crate) struct StoredTimer<'a> {
    pub(crate) key: u64,
    pub(crate) id: &'a str,
    pub(crate) due: Millis,
    pub(crate) contact: Option<&'a str>,
    pub(crate) kind: &'a TimerKind,
}

impl<'a> StoredTimer<'a> {
    pub(crate) fn of(key: u64, t: &'a Timer) -> Self {
        StoredTimer {
            key,
            id: t.id(),
            due: t.due,
            contact: t.contact(),
            kind: &t.kind,
        }
    }
}

/// A stored timer read back: its key and the timer.
#[derive(Deserialize)]
pub(crate) struct StoredTimerOwned {
    pub(crate) key: u64,
    pub(crate) id: Box<str>,
    pub(crate) due: Millis,
    pub(crate) contact: Option<Box<str>>,
    pub(crate) kind: TimerKind,
}

impl StoredTimerOwned {
    pub(crate) fn into_parts(self) -> (u64, Timer) {
        let timer = Timer::new(
            self.id.into_string(),
            self.due,
            self.contact.as_deref(),
            self.kind,
        );
        (self.key, timer)
    }
}

/// A whole number, kept as at most `u16::MAX`.
fn saturating_u16<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u16, D::Error> {
    u64::deserialize(d).map(|n| u16::try_from(n).unwrap_or(u16::MAX))
}

/// A time that may not have happened yet, in 8 bytes rather than an `Option`'s 16: the
/// earliest `Millis` stands for "never" (decoded event times cannot be that early: they
/// are within years -9999 to 9999). Written as an
/// `Option`, so the state's JSON form is that of `Option<Millis>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Since(Millis);

impl Since {
    pub(crate) const NEVER: Since = Since(Millis::MIN);

    pub(crate) fn at(at: Millis) -> Self {
        Since(at)
    }

    pub(crate) fn get(self) -> Option<Millis> {
        (self.0 != Millis::MIN).then_some(self.0)
    }
}

impl Serialize for Since {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.get().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Since {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Option::<Millis>::deserialize(d)?.map_or(Since::NEVER, Since))
    }
}

/// The flows (by name) a contact ever ran, each with when its last run ended: one list
/// serves both `reentry never` and `reentry after`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct FlowsRan(SmallMap<Since>);

impl FlowsRan {
    pub(crate) fn ever_ran(&self, flow: &str) -> bool {
        self.0.contains_key(flow)
    }

    pub(crate) fn last_end(&self, flow: &str) -> Option<Millis> {
        self.0.get(flow).and_then(|s| s.get())
    }

    /// A run of `flow` started (a flow that ran before keeps its last end).
    pub(crate) fn started(&mut self, flow: Name) {
        if !self.0.contains_key(&flow) {
            push_exact(&mut self.0 .0, (flow, Since::NEVER));
        }
    }

    pub(crate) fn ended(&mut self, flow: Name, at: Millis) {
        self.0.insert(flow, Since::at(at));
    }
}

/// Written as the contact's `last_end` (`[[flow, time], ...]`) and `ever_ran`
/// (`[[flow, true], ...]`) fields, as before the two were one list; both list flows in
/// the order they first ran (`last_end` used to list them in the order they first
/// ended), which a reader of either form takes the same way.
impl Serialize for FlowsRan {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let pairs = &self.0 .0;
        let last_end: Vec<(&str, Millis)> = pairs
            .iter()
            .filter_map(|(k, v)| v.get().map(|t| (&**k, t)))
            .collect();
        let ever_ran: Vec<(&str, bool)> = pairs.iter().map(|(k, _)| (&**k, true)).collect();
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("last_end", &last_end)?;
        m.serialize_entry("ever_ran", &ever_ran)?;
        m.end()
    }
}

impl<'de> Deserialize<'de> for FlowsRan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = FlowsRan;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the fields last_end and ever_ran")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<FlowsRan, A::Error> {
                let mut last_end: Vec<(String, Millis)> = Vec::new();
                let mut ever_ran: Vec<(String, bool)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "last_end" => last_end = map.next_value()?,
                        "ever_ran" => ever_ran = map.next_value()?,
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                    }
                }
                let mut flows = FlowsRan::default();
                for (flow, ran) in ever_ran {
                    if ran {
                        flows.started(Name::from(flow));
                    }
                }
                for (flow, at) in last_end {
                    flows.ended(Name::from(flow), at);
                }
                Ok(flows)
            }
        }
        d.deserialize_map(Fields)
    }
}

/// A goal being watched for a run (it converts when the event comes in time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct GoalWatch {
    pub(crate) flow: usize,
    pub(crate) run: u64,
    pub(crate) event: Name,
    pub(crate) deadline: Millis,
}

/// A few named values: a contact has a handful of profile fields and channels, and a
/// vector of pairs costs far less memory than a tree or hash map for so few.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SmallMap<V>(ThinVec<(Name, V)>);

impl<V> Default for SmallMap<V> {
    fn default() -> Self {
        SmallMap(ThinVec::new())
    }
}

impl<V> FromIterator<(Name, V)> for SmallMap<V> {
    /// Holds exactly the pairs given: a filtered iterator does not know its length, and
    /// collecting it leaves spare room that every run would keep.
    fn from_iter<I: IntoIterator<Item = (Name, V)>>(iter: I) -> Self {
        let mut pairs: ThinVec<(Name, V)> = iter.into_iter().collect();
        pairs.shrink_to_fit();
        SmallMap(pairs)
    }
}

impl<V> SmallMap<V> {
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| &**k == key).map(|(_, v)| v)
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn insert(&mut self, key: Name, value: V) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = value,
            None => push_exact(&mut self.0, (key, value)),
        }
    }

    pub(crate) fn remove(&mut self, key: &str) {
        if let Some(i) = self.0.iter().position(|(k, _)| &**k == key) {
            self.0.remove(i);
        }
    }
}

impl<V: PartialEq + Clone> SmallMap<V> {
    /// Sets every pair of `pairs` (a later pair of the same key wins), in time linear in
    /// the pairs: a message's `profile` can carry any number of fields, and setting them
    /// one [`SmallMap::insert`] at a time would take time quadratic in their number.
    pub(crate) fn merge(&mut self, pairs: &[(String, V)], name: impl Fn(&str) -> Name) {
        if pairs.len() <= 8 {
            for (k, v) in pairs {
                if self.get(k) != Some(v) {
                    self.insert(name(k), v.clone());
                }
            }
            return;
        }
        let mut at: std::collections::HashMap<Name, usize, foldhash::fast::RandomState> = self
            .0
            .iter()
            .enumerate()
            .map(|(i, (k, _))| (k.clone(), i))
            .collect();
        let mut all: Vec<(Name, V)> = std::mem::take(&mut self.0).into_iter().collect();
        for (k, v) in pairs {
            let key = name(k);
            match at.get(&key) {
                Some(&i) => all[i].1 = v.clone(),
                None => {
                    at.insert(key.clone(), all.len());
                    all.push((key, v.clone()));
                }
            }
        }
        self.0 = all.into_iter().collect();
        self.0.shrink_to_fit();
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Pushes without the usual doubling: a contact's vectors hold a handful of entries, and
/// with a hundred thousand contacts the spare capacity would cost more than the entries.
pub(crate) fn push_exact<T>(v: &mut ThinVec<T>, item: T) {
    v.reserve_exact(1);
    v.push(item);
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Contact {
    pub(crate) profile: SmallMap<Value>,
    pub(crate) last_inbound: SmallMap<Millis>,
    pub(crate) latest_channel: Option<Name>,
    pub(crate) last_reply: Option<Box<str>>,
    pub(crate) consent: ThinVec<ConsentRecord>,
    pub(crate) opted_out: bool,
    pub(crate) ambiguous_pending: bool,
    pub(crate) clarify_sent: bool,
    /// When the latest STOP was sent, in whole seconds since the epoch rounded up (0: no
    /// STOP): a START sent before it, arriving late, does not undo it. Seconds in 32 bits
    /// fill the room the flags leave, so a contact stays 128 bytes.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub(crate) opted_out_at: u32,
    /// Boxed: few contacts are in a handoff, and the contact map stores contacts inline.
    pub(crate) handoff: Option<Box<OpenHandoff>>,
    pub(crate) runs: ThinVec<Run>,
    /// The flows the contact ever ran and when its last run of each ended, for
    /// `reentry`; written as the two fields `last_end` and `ever_ran`.
    #[serde(flatten)]
    pub(crate) reentry: FlowsRan,
    /// Times of delivered flow sends, for the rate limit.
    pub(crate) sends: ThinVec<Millis>,
    pub(crate) goals: ThinVec<GoalWatch>,
    /// The run that sent last (flow version, run id), for charging an opt-out.
    pub(crate) last_sender: Option<(u32, NonZeroU64)>,
}

impl Contact {
    /// Whether the latest marketing consent record grants it.
    pub(crate) fn marketing_consent(&self) -> bool {
        self.consent
            .iter()
            .filter(|c| &*c.purpose == "marketing")
            .max_by_key(|c| c.at)
            .is_some_and(|c| c.granted)
    }

    pub(crate) fn run_mut(&mut self, id: u64) -> Option<&mut Run> {
        self.runs.iter_mut().find(|r| r.id == id)
    }

    pub(crate) fn run(&self, id: u64) -> Option<&Run> {
        self.runs.iter().find(|r| r.id == id)
    }
}

/// Per flow version: where its rollout stands and what its finished runs did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionStats {
    pub enrolled: u64,
    pub finished: u64,
    pub opted_out: u64,
    pub handoffs: u64,
    pub errors: u64,
    pub converted: u64,
    /// Runs whose goal window closed without the goal.
    pub not_converted: u64,
    /// Per variant index: enrolled runs.
    pub variants: BTreeMap<usize, u64>,
    pub stage: usize,
    pub halted: bool,
    pub first_attempt: Option<Millis>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_many_profile_fields_gives_what_inserting_them_one_by_one_gives() {
        let name = |k: &str| Name(Arc::new(k.to_string()));
        let pairs: Vec<(String, Value)> = (0..40)
            .map(|i| (format!("f{}", i % 25), Value::from(i)))
            .collect();
        for split in [0, 3, 20] {
            let mut merged: SmallMap<Value> = SmallMap::default();
            let mut one_by_one: SmallMap<Value> = SmallMap::default();
            merged.merge(&pairs[..split], name);
            merged.merge(&pairs[split..], name);
            for (k, v) in &pairs {
                one_by_one.insert(name(k), v.clone());
            }
            assert_eq!(merged, one_by_one, "split at {split}");
            assert_eq!(merged.get("f3"), Some(&Value::from(28)));
        }
    }

    #[test]
    fn a_collected_small_map_keeps_no_spare_room() {
        let names: Vec<Name> = ["a", "b", "c", "d", "e"]
            .into_iter()
            .map(Name::from)
            .collect();
        let kept: SmallMap<u32> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 2 == 0)
            .map(|(i, n)| (n.clone(), i as u32))
            .collect();
        assert_eq!(kept.0.len(), 3);
        assert_eq!(kept.0.capacity(), 3);
        assert_eq!(kept.get("c"), Some(&2));
    }

    #[test]
    fn a_time_not_yet_reached_is_written_as_null() {
        assert_eq!(
            serde_json::to_string(&Since::NEVER).ok().as_deref(),
            Some("null")
        );
        assert_eq!(
            serde_json::to_string(&Since::at(1_700_000_000_000))
                .ok()
                .as_deref(),
            Some("1700000000000")
        );
        assert_eq!(
            serde_json::from_str::<Since>("null").ok(),
            Some(Since::NEVER)
        );
        assert_eq!(
            serde_json::from_str::<Since>("42").ok(),
            Some(Since::at(42))
        );
        assert_eq!(Since::NEVER.get(), None);
        assert_eq!(Since::at(-5).get(), Some(-5));
    }

    #[test]
    fn a_contact_is_written_as_before_the_reentry_lists_were_one() {
        // A stored contact of the earlier form reads back and writes out unchanged (with
        // one flow; with several, `last_end` follows the order they first ran).
        let stored = r#"{"profile":[["first_name","Ana"]],"last_inbound":[["whatsapp",5000]],"latest_channel":"whatsapp","last_reply":"1","consent":[],"opted_out":false,"ambiguous_pending":false,"clarify_sent":false,"handoff":null,"runs":[],"last_end":[["welcome",4000]],"ever_ran":[["welcome",true],["cart_recovery",true]],"sends":[3000],"goals":[],"last_sender":[0,7]}"#;
        let contact: Contact = serde_json::from_str(stored).expect("a stored contact reads");
        assert!(contact.reentry.ever_ran("cart_recovery"));
        assert_eq!(contact.reentry.last_end("welcome"), Some(4000));
        assert_eq!(contact.reentry.last_end("cart_recovery"), None);
        assert!(!contact.reentry.ever_ran("other"));
        assert_eq!(
            serde_json::to_string(&contact).ok().as_deref(),
            Some(stored)
        );
    }

    #[test]
    fn a_flow_that_ran_again_keeps_its_last_end_until_the_next() {
        let mut flows = FlowsRan::default();
        flows.started(Name::from("welcome"));
        assert!(flows.ever_ran("welcome"));
        assert_eq!(flows.last_end("welcome"), None);
        flows.ended(Name::from("welcome"), 10);
        flows.started(Name::from("welcome"));
        assert_eq!(flows.last_end("welcome"), Some(10));
        flows.ended(Name::from("welcome"), 20);
        assert_eq!(flows.last_end("welcome"), Some(20));
        assert_eq!(flows.0 .0.len(), 1);
    }

    #[test]
    fn a_stored_timer_reads_back_and_writes_out_unchanged() {
        for stored in [
            r#"{"key":7,"id":"e804~0","due":3600000,"contact":"c1","kind":{"After":{"run":3,"state":0,"transition":1}}}"#,
            r#"{"key":9,"id":"e9~1","due":5,"contact":null,"kind":{"RolloutAdvance":{"flow":2}}}"#,
            r#"{"key":12,"id":"e12~0","due":8,"contact":"c2","kind":"Sla"}"#,
            r#"{"key":13,"id":"ü~0","due":8,"contact":"","kind":"Sla"}"#,
            r#"{"key":14,"id":"","due":8,"contact":"ünï ~ c","kind":"Sla"}"#,
        ] {
            let read: StoredTimerOwned =
                serde_json::from_str(stored).expect("a stored timer reads");
            let (key, timer) = read.into_parts();
            let written = serde_json::to_string(&StoredTimer::of(key, &timer)).ok();
            assert_eq!(written.as_deref(), Some(stored));
        }
    }

    #[test]
    fn flows_that_ended_in_another_order_than_they_started_read_back_the_same() {
        let stored =
            r#"{"last_end":[["b",5],["a",9]],"ever_ran":[["a",true],["b",true],["c",true]]}"#;
        let flows: FlowsRan = serde_json::from_str(stored).expect("reads");
        assert_eq!(flows.last_end("a"), Some(9));
        assert_eq!(flows.last_end("b"), Some(5));
        assert_eq!(flows.last_end("c"), None);
        assert!(flows.ever_ran("c"));
        let written = serde_json::to_string(&flows).expect("writes");
        assert_eq!(
            written,
            r#"{"last_end":[["a",9],["b",5]],"ever_ran":[["a",true],["b",true],["c",true]]}"#
        );
        let again: FlowsRan = serde_json::from_str(&written).expect("reads again");
        assert_eq!(again, flows);
    }

    #[test]
    fn a_stored_retry_count_beyond_65535_is_kept_as_65535() {
        let run = r#"{"id":1,"flow":0,"state":0,"channel":"instagram","started":0,"event":[],"slots":[],"last_send":null,"last_activity":0,"disclosed":false,"footered":false,"retries_left":70000,"comment":null,"private_reply_used":false,"variant":null,"reached_handoff":false,"error":false,"state_timers":[],"expire_timer":null}"#;
        let run: Run = serde_json::from_str(run).expect("a stored run reads");
        assert_eq!(run.retries_left, u16::MAX);
    }
}
