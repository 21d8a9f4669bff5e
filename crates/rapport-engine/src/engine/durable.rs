//! What a durable host needs from the engine: the changes of a batch of steps (contacts,
//! timers, event ids, the engine-wide state) to commit to a store, a way to load a
//! contact from the store the first time a step needs it, and a restore on restart.
//!
//! The engine stays pure: the loader is the host's, called only at the two places where
//! a step starts on a contact (an input from it, or one of its timers), and what it
//! loads is what an earlier step committed.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::*;

/// What the store holds for a contact the engine has not seen in this process.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    /// The contact's state, as [`Changes::contacts`] gave it.
    Saved(String),
    /// An erased contact who had opted out (kept as a salted hash): it starts opted out.
    OptedOut,
    /// Nothing: a new contact.
    New,
}

/// Loads a contact's state from the host's store.
pub type Loader = Box<dyn FnMut(&str) -> Result<Loaded, String> + Send>;

/// One timer to save (`state` is `Some`) or delete.
#[derive(Debug, Clone, PartialEq)]
pub struct TimerChange {
    pub key: u64,
    pub due: Millis,
    pub contact: Option<String>,
    /// The timer as JSON, for [`Engine::restore_timer`]; `None`: it fired or was cancelled.
    pub state: Option<String>,
}

/// Everything a batch of steps changed, to commit in one transaction.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Changes {
    /// Contacts touched, with their whole state as JSON.
    pub contacts: Vec<(String, String)>,
    pub timers: Vec<TimerChange>,
    /// Event ids processed: the id's 96-bit key (two parts) and the clock then.
    pub seen: Vec<(u64, u32, Millis)>,
    /// The engine-wide state (clock, counters, per-version stats), as JSON.
    pub global: String,
    /// What happened to runs, in order, for the KPI report.
    pub runs: Vec<RunFact>,
    /// The contacts of `contacts` a person must look at: a handoff open, or a draft
    /// waiting (the console lists them).
    pub attention: HashSet<String, foldhash::fast::RandomState>,
}

/// One fact about a run, kept for the KPI report (`rapport report`): a run started,
/// answered for the first time, ended, converted, or had an opt-out charged to it.
#[derive(Debug, Clone, PartialEq)]
pub enum RunFact {
    Started {
        run: u64,
        contact: String,
        flow: String,
        version: String,
        variant: Option<String>,
        channel: String,
        at: Millis,
        /// When the goal window closes (`None`: the flow has no goal).
        goal_deadline: Option<Millis>,
    },
    /// The run's first message to the contact left (`at`: when it was released).
    Responded { run: u64, at: Millis },
    Ended {
        run: u64,
        at: Millis,
        /// Why: `end`, `expired`, `opted_out`, `released`, …
        outcome: String,
        handoff: bool,
        error: bool,
    },
    /// An opt-out was charged to the run (it sent last), as `opt_out_rate` counts it.
    OptedOut { run: u64 },
    /// The run's goal event came within its window.
    Converted { run: u64, at: Millis },
}

/// The engine-wide state that is not a contact's.
#[derive(Serialize, Deserialize)]
struct Global {
    clock: Millis,
    timer_seq: u64,
    run_seq: u64,
    seen_base: Option<Millis>,
    /// Flow name and version of each entry of `stats`, to check a restore is for the
    /// same bundle.
    versions: Vec<(String, String)>,
    stats: Vec<VersionStats>,
}

/// The change log of a durable engine.
#[derive(Default)]
pub(crate) struct Journal {
    contacts: HashSet<String, foldhash::fast::RandomState>,
    seen: Vec<(u64, u32, Millis)>,
    runs: Vec<RunFact>,
}

/// The live timers by key; with a journal, every key set or removed is noted.
#[derive(Default)]
pub(crate) struct TimerTable {
    map: super::FastMap<u64, Box<Timer>>,
    log: Option<Vec<u64>>,
}

impl TimerTable {
    pub(crate) fn insert(&mut self, key: u64, timer: Box<Timer>) {
        if let Some(log) = self.log.as_mut() {
            log.push(key);
        }
        self.map.insert(key, timer);
    }

    pub(crate) fn remove(&mut self, key: &u64) -> Option<Box<Timer>> {
        let t = self.map.remove(key);
        if let (Some(log), Some(_)) = (self.log.as_mut(), t.as_ref()) {
            log.push(*key);
        }
        t
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &Timer)> {
        self.map.iter().map(|(k, t)| (*k, &**t))
    }

    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Timer) -> bool) {
        let log = &mut self.log;
        self.map.retain(|k, t| {
            let kept = keep(t);
            if !kept {
                if let Some(log) = log.as_mut() {
                    log.push(*k);
                }
            }
            kept
        });
    }
}

impl Engine {
    /// Keeps a journal of what steps change, for [`Engine::take_changes`].
    pub fn track_changes(&mut self) {
        self.journal = Some(Journal::default());
        self.live_timers.log = Some(Vec::new());
    }

    /// Where to load contacts this engine has not seen yet from.
    pub fn set_loader(&mut self, loader: Loader) {
        self.loader = Some(loader);
    }

    /// The first error of the loader since the last call. A step that met one ran on an
    /// empty contact: the host must stop without committing.
    pub fn take_load_error(&mut self) -> Option<String> {
        self.load_error.take()
    }

    /// Makes sure `contact` is in memory (loading it if need be) and notes it as changed.
    pub(crate) fn ensure_contact(&mut self, contact: &str) {
        if let Some(j) = self.journal.as_mut() {
            if !j.contacts.contains(contact) {
                j.contacts.insert(contact.to_string());
            }
        }
        if self.contacts.contains_key(contact) {
            return;
        }
        let loaded = match self.loader.as_mut() {
            Some(load) => load(contact),
            None => Ok(Loaded::New),
        };
        let state = match loaded {
            Ok(Loaded::New) => Contact::default(),
            Ok(Loaded::OptedOut) => Contact {
                opted_out: true,
                ..Contact::default()
            },
            Ok(Loaded::Saved(json)) => match self.decode_contact(&json) {
                Ok(c) => c,
                Err(e) => {
                    self.note_load_error(format!("contact `{contact}`: {e}"));
                    Contact::default()
                }
            },
            Err(e) => {
                self.note_load_error(format!("contact `{contact}`: {e}"));
                Contact::default()
            }
        };
        self.contacts
            .insert(compact_str::CompactString::from(contact), Box::new(state));
    }

    fn note_load_error(&mut self, e: String) {
        if self.load_error.is_none() {
            self.load_error = Some(e);
        }
    }

    /// A contact's state from JSON, checked against this bundle's flows.
    fn decode_contact(&self, json: &str) -> Result<Contact, String> {
        let c: Contact =
            serde_json::from_str(json).map_err(|e| format!("unreadable state: {e}"))?;
        for r in &c.runs {
            let ok = self
                .versions
                .get(r.flow as usize)
                .is_some_and(|f| (r.state as usize) < f.states.len());
            if !ok {
                return Err(format!(
                    "run {} is in flow #{} state #{}, which this bundle does not have",
                    r.id, r.flow as usize, r.state as usize
                ));
            }
        }
        if c.goals.iter().any(|g| g.flow >= self.versions.len())
            || c.last_sender
                .is_some_and(|(f, _)| f as usize >= self.versions.len())
        {
            return Err("it names a flow this bundle does not have".into());
        }
        Ok(c)
    }

    /// Notes an event id as processed (the journal's part of [`Engine::step`]).
    pub(crate) fn journal_seen(&mut self, key: IdKey, at: Millis) {
        if let Some(j) = self.journal.as_mut() {
            j.seen.push((key.first(), key.second(), at));
        }
    }

    /// Notes a fact about a run (the journal's part of the KPI report).
    pub(crate) fn journal_run(&mut self, fact: impl FnOnce() -> RunFact) {
        if let Some(j) = self.journal.as_mut() {
            j.runs.push(fact());
        }
    }

    /// What the steps since the last call changed. Call it after every batch, then
    /// commit the changes before releasing the batch's actions.
    pub fn take_changes(&mut self) -> Result<Changes, String> {
        let Some(journal) = self.journal.as_mut() else {
            return Err("this engine keeps no journal (track_changes was not called)".into());
        };
        let touched = std::mem::take(&mut journal.contacts);
        let seen = std::mem::take(&mut journal.seen);
        let runs = std::mem::take(&mut journal.runs);
        let mut timer_keys = self.live_timers.log.replace(Vec::new()).unwrap_or_default();
        timer_keys.sort_unstable();
        timer_keys.dedup();
        let mut contacts: Vec<(String, String)> = Vec::with_capacity(touched.len());
        let mut attention = HashSet::default();
        for id in touched {
            if let Some(c) = self.contacts.get(id.as_str()) {
                let json = serde_json::to_string(c).map_err(|e| e.to_string())?;
                if c.handoff.is_some() || c.runs.iter().any(|r| !r.drafts.is_empty()) {
                    attention.insert(id.clone());
                }
                contacts.push((id, json));
            }
        }
        contacts.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut timers = Vec::with_capacity(timer_keys.len());
        for key in timer_keys {
            timers.push(match self.live_timers.map.get(&key) {
                Some(t) => TimerChange {
                    key,
                    due: t.due,
                    contact: t.contact().map(str::to_string),
                    state: Some(
                        serde_json::to_string(&crate::state::StoredTimer::of(key, t))
                            .map_err(|e| e.to_string())?,
                    ),
                },
                None => TimerChange {
                    key,
                    due: 0,
                    contact: None,
                    state: None,
                },
            });
        }
        let global = Global {
            clock: self.clock,
            timer_seq: self.timer_seq,
            run_seq: self.run_seq,
            seen_base: self.seen.base,
            versions: self.version_names(),
            stats: self.stats.clone(),
        };
        Ok(Changes {
            contacts,
            timers,
            seen,
            global: serde_json::to_string(&global).map_err(|e| e.to_string())?,
            runs,
            attention,
        })
    }

    fn version_names(&self) -> Vec<(String, String)> {
        self.versions
            .iter()
            .map(|f| (f.name.clone(), f.version.clone()))
            .collect()
    }

    /// Restores the engine-wide state saved by [`Engine::take_changes`]. Fails when it
    /// was saved by a bundle with other flows or versions.
    pub fn restore_global(&mut self, json: &str) -> Result<(), String> {
        let g: Global =
            serde_json::from_str(json).map_err(|e| format!("unreadable engine state: {e}"))?;
        let ours = self.version_names();
        if g.stats.len() != g.versions.len() {
            return Err(
                "the store is damaged: the engine state's metrics do not match its flows".into(),
            );
        }
        if g.versions != ours {
            let list = |v: &[(String, String)]| {
                v.iter()
                    .map(|(n, ver)| format!("{n}@{ver}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(format!(
                "the store holds the state of another bundle (flows {}); this bundle has {}",
                list(&g.versions),
                list(&ours)
            ));
        }
        self.clock = g.clock;
        self.timer_seq = g.timer_seq;
        self.run_seq = g.run_seq;
        self.seen.base = g.seen_base;
        self.stats = g.stats;
        Ok(())
    }

    /// Restores a pending timer saved by [`Engine::take_changes`].
    pub fn restore_timer(&mut self, json: &str) -> Result<(), String> {
        let stored: crate::state::StoredTimerOwned =
            serde_json::from_str(json).map_err(|e| format!("unreadable timer: {e}"))?;
        let (key, t) = stored.into_parts();
        let flow_ok = |f: u32| (f as usize) < self.versions.len();
        let ok = match &t.kind {
            TimerKind::GoalClosed { flow, .. } | TimerKind::RolloutAdvance { flow } => {
                flow_ok(*flow)
            }
            _ => true,
        };
        if !ok {
            return Err(format!(
                "timer {} names a flow this bundle does not have",
                t.id()
            ));
        }
        self.timers.push(Reverse((t.due, key)));
        self.live_timers.map.insert(key, Box::new(t));
        Ok(())
    }

    /// Restores a processed event id (its key and the clock then).
    pub fn restore_seen(&mut self, k0: u64, k1: u32, at: Millis) {
        let base = *self.seen.base.get_or_insert(at);
        self.seen
            .ids
            .insert(IdKey::from_parts(k0, k1), seen_seconds(base, at));
    }

    /// Whether an event with this contact and id was processed within the dedupe window
    /// (a step would only count and audit it).
    pub fn is_duplicate(&self, event: &crate::Event) -> bool {
        self.seen
            .ids
            .contains(&IdKey::of(event.contact.as_deref(), &event.id))
    }

    /// Drops contacts from memory down to `keep` (their state is in the store and is
    /// loaded again when needed). Call it only right after a commit.
    pub fn evict(&mut self, keep: usize) {
        if self.contacts.len() <= keep || self.loader.is_none() {
            return;
        }
        let mut over = self.contacts.len() - keep;
        self.contacts.retain(|_, _| {
            if over > 0 {
                over -= 1;
                false
            } else {
                true
            }
        });
    }

    /// The engine's clock: the latest event time (or tick) it has seen.
    pub fn clock(&self) -> Option<Millis> {
        (self.clock != i64::MIN).then_some(self.clock)
    }
}
