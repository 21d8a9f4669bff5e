//! Deploying a new bundle onto a store that holds another one, without losing anything.
//!
//! An engine numbers its flow versions in one list (its *layout*): the bundle's flows,
//! then their previous versions, then the retired versions (still running, enrolling no
//! one). Stored state names versions by their place in that list, so a new bundle needs
//! three things: a bundle whose layout keeps every version stored runs still use
//! ([`plan`]), the old places mapped to the new ones, and the stored state rewritten
//! with that map ([`Plan::remap_contact`], [`Plan::remap_timer`], [`Plan::remap_global`]).
//!
//! The rules (docs/runtime.md, "Deploying a new bundle"): a flow whose version is the one
//! in the store keeps its rollout and its previous version; a flow whose version changed
//! enters its rollout against the version in the store, which becomes its previous
//! version; a version that is neither current nor previous any more stays loaded, as
//! retired, while a run, goal or timer uses it; a flow removed from the bundle enrols no
//! one new while its runs finish.

use std::collections::{BTreeMap, BTreeSet};

use rapport_bundle::{Bundle, Flow};
use serde_json::Value;

use crate::state::Contact;

/// The engine's flow versions, in the order stored state numbers them.
pub fn layout(bundle: &Bundle) -> Vec<&Flow> {
    let mut versions: Vec<&Flow> = bundle.flows.iter().collect();
    versions.extend(bundle.flows.iter().filter_map(|f| f.previous.as_deref()));
    versions.extend(bundle.retired.iter());
    versions
}

/// What the stored state uses: flow versions (places in the stored layout) and channels.
#[derive(Debug, Default, Clone)]
pub struct Usage {
    pub versions: BTreeSet<u32>,
    /// Channel → how many runs are on it.
    pub channels: BTreeMap<String, u64>,
}

impl Usage {
    /// Notes what a stored contact uses.
    pub fn contact(&mut self, json: &str) -> Result<(), String> {
        let c: Contact =
            serde_json::from_str(json).map_err(|e| format!("unreadable contact: {e}"))?;
        for r in &c.runs {
            self.versions.insert(r.flow);
            *self.channels.entry(r.channel.to_string()).or_default() += 1;
        }
        for g in &c.goals {
            self.versions.insert(g.flow as u32);
        }
        if let Some((f, _)) = c.last_sender {
            self.versions.insert(f);
        }
        Ok(())
    }

    /// Notes what a stored timer uses.
    pub fn timer(&mut self, json: &str) -> Result<(), String> {
        let v: Value = serde_json::from_str(json).map_err(|e| format!("unreadable timer: {e}"))?;
        if let Some(f) = timer_flow(&v) {
            self.versions.insert(f);
        }
        Ok(())
    }
}

/// The place a stored timer names, if its kind names one.
fn timer_flow(v: &Value) -> Option<u32> {
    let kind = v.get("kind")?;
    ["GoalClosed", "RolloutAdvance"]
        .iter()
        .find_map(|k| kind.get(k)?.get("flow")?.as_u64())
        .and_then(|f| u32::try_from(f).ok())
}

/// What a deploy does to one flow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowChange {
    /// The version in the store: its rollout carries on.
    Unchanged { flow: String, version: String },
    /// A new version: it enters its rollout at `stage` per cent against `previous` (the
    /// version in the store), or takes everyone when it has no rollout.
    NewVersion {
        flow: String,
        version: String,
        previous: Option<String>,
        stage: Option<u32>,
    },
    /// A flow the store did not have.
    Added { flow: String, version: String },
    /// In the store, not in the bundle: enrols no one new; `runs` of it are still going.
    Removed {
        flow: String,
        version: String,
        runs: bool,
    },
}

/// A deploy worked out: the bundle to run, and how stored places map to its layout.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The bundle to run: the new flows with their previous versions from the store, and
    /// the retired versions stored state still uses.
    pub bundle: Bundle,
    /// Per flow, what changes.
    pub changes: Vec<FlowChange>,
    /// Stored place → place in the new layout.
    map: Vec<Option<u32>>,
    /// (name, version) of each place in the new layout.
    names: Vec<(String, String)>,
}

/// Why a deploy cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployError {
    #[error("flow `{flow}` declares version {version} as the store's does, but its content changed; raise its `version` so the runs on the stored one keep their states")]
    SameVersionOtherContent { flow: String, version: String },
    #[error("the bundle removes channel `{channel}`, which {runs} running run(s) still use; keep the channel until they finish")]
    ChannelInUse { channel: String, runs: u64 },
    #[error("the store is damaged: {0}")]
    Damaged(String),
}

fn key(f: &Flow) -> (&str, &str) {
    (f.name.as_str(), f.version.as_str())
}

/// Works out the deploy of `new` over `stored`, the bundle the store last ran, given
/// what its state uses.
pub fn plan(stored: &Bundle, new: Bundle, usage: &Usage) -> Result<Plan, DeployError> {
    let mut bundle = new;
    for (channel, runs) in &usage.channels {
        if !bundle.settings.channels.contains_key(channel) {
            return Err(DeployError::ChannelInUse {
                channel: channel.clone(),
                runs: *runs,
            });
        }
    }
    let mut changes = Vec::new();
    for flow in &mut bundle.flows {
        let Some(old) = stored.flows.iter().find(|o| o.name == flow.name) else {
            changes.push(FlowChange::Added {
                flow: flow.name.clone(),
                version: flow.version.clone(),
            });
            continue;
        };
        if old.version == flow.version {
            if old.content_hash != flow.content_hash {
                return Err(DeployError::SameVersionOtherContent {
                    flow: flow.name.clone(),
                    version: flow.version.clone(),
                });
            }
            flow.previous = old.previous.clone();
            changes.push(FlowChange::Unchanged {
                flow: flow.name.clone(),
                version: flow.version.clone(),
            });
        } else {
            let mut prev = old.clone();
            prev.previous = None;
            flow.previous = Some(Box::new(prev));
            changes.push(FlowChange::NewVersion {
                flow: flow.name.clone(),
                version: flow.version.clone(),
                previous: Some(old.version.clone()),
                stage: flow
                    .rollout
                    .as_ref()
                    .and_then(|r| r.stages.first().copied())
                    .map(|s| s / 100),
            });
        }
    }
    for old in &stored.flows {
        if !bundle.flows.iter().any(|f| f.name == old.name) {
            let place = layout(stored)
                .iter()
                .position(|f| key(f) == key(old))
                .and_then(|p| u32::try_from(p).ok());
            changes.push(FlowChange::Removed {
                flow: old.name.clone(),
                version: old.version.clone(),
                runs: place.is_some_and(|p| usage.versions.contains(&p)),
            });
        }
    }
    // Versions stored state uses that the new layout would drop stay loaded as retired.
    let stored_layout = layout(stored);
    bundle.retired.clear();
    for (place, f) in stored_layout.iter().enumerate() {
        let used = u32::try_from(place).is_ok_and(|p| usage.versions.contains(&p));
        if used && !layout(&bundle).iter().any(|n| key(n) == key(f)) {
            let mut retired = (*f).clone();
            retired.previous = None;
            bundle.retired.push(retired);
        }
    }
    let new_layout = layout(&bundle);
    let names: Vec<(String, String)> = new_layout
        .iter()
        .map(|f| (f.name.clone(), f.version.clone()))
        .collect();
    let map = stored_layout
        .iter()
        .map(|f| {
            new_layout
                .iter()
                .position(|n| key(n) == key(f))
                .and_then(|p| u32::try_from(p).ok())
        })
        .collect();
    Ok(Plan {
        bundle,
        changes,
        map,
        names,
    })
}

impl Plan {
    /// Whether stored state must be rewritten (some version moved).
    pub fn moves_anything(&self) -> bool {
        self.map
            .iter()
            .enumerate()
            .any(|(i, m)| *m != u32::try_from(i).ok())
    }

    fn place(&self, old: u32) -> Result<u32, DeployError> {
        self.map
            .get(old as usize)
            .copied()
            .flatten()
            .ok_or_else(|| {
                DeployError::Damaged(format!(
                    "stored state names flow version #{old}, which the stored bundle does not have"
                ))
            })
    }

    /// A stored contact with its versions renumbered.
    pub fn remap_contact(&self, json: &str) -> Result<String, DeployError> {
        let mut c: Contact = serde_json::from_str(json)
            .map_err(|e| DeployError::Damaged(format!("unreadable contact: {e}")))?;
        for r in c.runs.iter_mut() {
            r.flow = self.place(r.flow)?;
        }
        for g in c.goals.iter_mut() {
            g.flow = self.place(g.flow as u32)? as usize;
        }
        if let Some((f, run)) = c.last_sender {
            c.last_sender = Some((self.place(f)?, run));
        }
        serde_json::to_string(&c).map_err(|e| DeployError::Damaged(e.to_string()))
    }

    /// A stored timer with its version renumbered.
    pub fn remap_timer(&self, json: &str) -> Result<String, DeployError> {
        let mut v: Value = serde_json::from_str(json)
            .map_err(|e| DeployError::Damaged(format!("unreadable timer: {e}")))?;
        if let Some(old) = timer_flow(&v) {
            let new = self.place(old)?;
            if let Some(kind) = v.get_mut("kind").and_then(Value::as_object_mut) {
                for inner in kind.values_mut() {
                    if let Some(f) = inner.get_mut("flow") {
                        *f = Value::from(new);
                    }
                }
            }
        }
        Ok(v.to_string())
    }

    /// The engine-wide state with its per-version metrics in the new layout (a version
    /// new to the store starts with none: its rollout begins at its first stage).
    pub fn remap_global(&self, json: &str) -> Result<String, DeployError> {
        let mut v: Value = serde_json::from_str(json)
            .map_err(|e| DeployError::Damaged(format!("unreadable engine state: {e}")))?;
        let old_stats = v
            .get("stats")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut stats = vec![
            serde_json::to_value(crate::VersionStats::default())
                .map_err(|e| DeployError::Damaged(e.to_string()))?;
            self.names.len()
        ];
        for (old, new) in self.map.iter().enumerate() {
            if let (Some(new), Some(s)) = (new, old_stats.get(old)) {
                stats[*new as usize] = s.clone();
            }
        }
        v["stats"] = Value::from(stats);
        v["versions"] =
            serde_json::to_value(&self.names).map_err(|e| DeployError::Damaged(e.to_string()))?;
        Ok(v.to_string())
    }
}
