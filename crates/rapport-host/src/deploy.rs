//! Taking a bundle onto a store (docs/runtime.md, "Deploying a new bundle"): the first
//! bundle is saved as the store's; a later one is planned against it and the stored
//! state renumbered in one transaction, so contacts, consent, opt-outs, audit and
//! running runs all carry over.

use rapport_bundle::Bundle;
use rapport_engine::deploy::{plan, FlowChange, Usage};
use rapport_store::{Rewrite, StateKind, Store, StoreError};

/// What a deploy did.
#[derive(Debug, Clone)]
pub struct Deployed {
    /// The bundle to run: the new flows, their previous versions as the store has them,
    /// and the retired versions runs still use.
    pub bundle: Bundle,
    /// Per flow, what changed (empty for the store's first bundle).
    pub changes: Vec<FlowChange>,
    /// Whether anything changed.
    pub changed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the deploy is refused: {0}")]
    Refused(#[from] rapport_engine::deploy::DeployError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store's bundle is unreadable: {0}")]
    Unreadable(String),
}

/// Takes `bundle` onto `store`; see the module's documentation.
pub fn deploy<S: Store + ?Sized>(store: &mut S, bundle: Bundle) -> Result<Deployed, DeployError> {
    let encode =
        |b: &Bundle| serde_json::to_string(b).map_err(|e| DeployError::Unreadable(e.to_string()));
    let Some(stored) = store.stored_bundle()? else {
        // The store's first bundle (or a store written before bundles were kept: the
        // engine's own check refuses it if it held other flows).
        store.deploy(None, None, &encode(&bundle)?)?;
        return Ok(Deployed {
            changes: Vec::new(),
            changed: true,
            bundle,
        });
    };
    let stored: Bundle =
        serde_json::from_str(&stored).map_err(|e| DeployError::Unreadable(e.to_string()))?;
    stored.validate().map_err(DeployError::Unreadable)?;
    // The store's own flows and settings (a restart): nothing to plan, and no need to
    // read every contact to find out.
    let same = |a: &Bundle, b: &Bundle| {
        a.settings == b.settings
            && a.flows.len() == b.flows.len()
            && a.flows.iter().zip(&b.flows).all(|(x, y)| {
                (&x.name, &x.version, &x.content_hash) == (&y.name, &y.version, &y.content_hash)
            })
    };
    if same(&stored, &bundle) {
        let changes = stored
            .flows
            .iter()
            .map(|f| FlowChange::Unchanged {
                flow: f.name.clone(),
                version: f.version.clone(),
            })
            .collect();
        return Ok(Deployed {
            bundle: stored,
            changes,
            changed: false,
        });
    }
    let mut usage = Usage::default();
    store.scan_state(&mut |kind, json| match kind {
        StateKind::Contact => usage.contact(json),
        StateKind::Timer => usage.timer(json),
    })?;
    let plan = plan(&stored, bundle, &usage)?;
    if plan.bundle == stored {
        return Ok(Deployed {
            bundle: plan.bundle,
            changes: plan.changes,
            changed: false,
        });
    }
    let global = match store.global_state()? {
        Some(g) => Some(plan.remap_global(&g)?),
        None => None,
    };
    let remap = |kind: StateKind, json: &str| match kind {
        StateKind::Contact => plan.remap_contact(json).map_err(|e| e.to_string()),
        StateKind::Timer => plan.remap_timer(json).map_err(|e| e.to_string()),
    };
    let rewrite: Option<&Rewrite<'_>> = plan.moves_anything().then_some(&remap);
    store.deploy(rewrite, global.as_deref(), &encode(&plan.bundle)?)?;
    Ok(Deployed {
        bundle: plan.bundle,
        changes: plan.changes,
        changed: true,
    })
}

/// One line per flow, for a person: what the deploy did to it.
pub fn describe(change: &FlowChange) -> String {
    match change {
        FlowChange::Unchanged { flow, version } => format!("{flow}: unchanged ({version})"),
        FlowChange::NewVersion {
            flow,
            version,
            previous,
            stage,
        } => {
            let against = previous.as_deref().unwrap_or("nothing");
            match stage {
                Some(p) => format!(
                    "{flow}: new version {version}, entering its rollout at {p}% (the rest stay on {against})"
                ),
                None => format!("{flow}: new version {version} for every new run (replaces {against})"),
            }
        }
        FlowChange::Added { flow, version } => format!("{flow}: added ({version})"),
        FlowChange::Removed {
            flow,
            version,
            runs,
        } => {
            if *runs {
                format!("{flow}: removed ({version}); enrols no one, its running runs finish")
            } else {
                format!("{flow}: removed ({version})")
            }
        }
    }
}
