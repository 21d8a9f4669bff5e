//! Rollout buckets agree with Unleash: every percentage-rollout case of the Unleash
//! client specification kept in `tests/unleash/` (see its README) is checked
//! against `rapport_engine::rollout::bucket`. Cases that need strategies Rapport does not
//! have (other strategies, constraints, random stickiness between 0% and 100%) are
//! skipped and counted.

use std::path::PathBuf;

use rapport_engine::rollout::bucket;
use serde_json::Value;

fn conformance_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/unleash")
}

/// `Some(enabled)` for a case Rapport's bucketing can decide, `None` to skip.
fn decide(strategies: &[Value], context: &Value) -> Option<bool> {
    let [strategy] = strategies else { return None };
    if strategy["constraints"]
        .as_array()
        .is_some_and(|c| !c.is_empty())
    {
        return None;
    }
    let params = &strategy["parameters"];
    let (percent, stickiness) = match strategy["name"].as_str()? {
        "gradualRolloutUserId" => (params["percentage"].as_str()?, "userId"),
        "flexibleRollout" => (
            params["rollout"].as_str()?,
            params["stickiness"].as_str().unwrap_or("default"),
        ),
        _ => return None,
    };
    let percent: u32 = percent.parse().ok()?;
    let group = params["groupId"].as_str()?;
    let id = match stickiness {
        "default" => context["userId"]
            .as_str()
            .or_else(|| context["sessionId"].as_str()),
        "userId" | "sessionId" => context[stickiness].as_str(),
        custom => context["properties"][custom].as_str(),
    };
    match id {
        Some(id) => Some(percent > 0 && u32::from(bucket(group, id)) <= percent),
        // No id: default stickiness falls back to random, decidable only at 0% and 100%.
        None if stickiness == "default" && percent == 100 => Some(true),
        None if stickiness == "default" && percent == 0 => Some(false),
        None if stickiness == "default" => None,
        None => Some(false),
    }
}

#[test]
fn percentage_rollouts_match_the_unleash_specification() {
    let dir = conformance_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "the Unleash conformance files should be in {}: {e}",
                dir.display()
            )
        })
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let (mut ran, mut skipped, mut failed) = (0, 0, Vec::new());
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable spec file");
        let spec: Value = serde_json::from_str(&text).expect("spec file is JSON");
        let features = spec["state"]["features"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for case in spec["tests"].as_array().cloned().unwrap_or_default() {
            let name = case["toggleName"].as_str().unwrap_or("");
            let Some(feature) = features.iter().find(|f| f["name"] == name) else {
                skipped += 1;
                continue;
            };
            let strategies = feature["strategies"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            match decide(&strategies, &case["context"]) {
                Some(enabled) => {
                    ran += 1;
                    if Some(enabled) != case["expectedResult"].as_bool() {
                        failed.push(format!("{}: {}", file.display(), case["description"]));
                    }
                }
                None => skipped += 1,
            }
        }
    }
    println!(
        "Unleash conformance: {ran} cases ran, {skipped} skipped, {} failed",
        failed.len()
    );
    assert!(ran >= 15, "too few cases ran ({ran}); are the files there?");
    assert!(
        failed.is_empty(),
        "cases that disagree with Unleash:\n{}",
        failed.join("\n")
    );
}
