//! A scenario step as the event `rapport run` would read: the step is written out as the
//! JSON line it stands for and decoded by the engine's own `decode`, so a step passes
//! exactly when the same event would pass `rapport run` (a missing declared field, a
//! field of the wrong type, a consent without `purpose` are rejected alike).

use rapport_engine::{format_time, Event, Millis};
use serde_json::{Map, Value};
use serde_yaml::Value as Yaml;

use super::{yaml_str, Scenario};

/// The event of a step (any step but `wait`), numbered `n` (its id is `sN`), at `at`.
/// `last_draft` is the id of the latest draft action of the case so far, which an
/// `agent` step's `draft: last` names.
pub(super) fn step_event(
    step: &Yaml,
    s: &Scenario,
    n: usize,
    at: Millis,
    settings: &rapport_bundle::Settings,
    last_draft: Option<&str>,
) -> Result<Event, String> {
    let mut line = step_json(step, s, n, at)?;
    if line.get("draft").and_then(Value::as_str) == Some("last") {
        let id =
            last_draft.ok_or("`draft: last` names the latest draft, and no step made one yet")?;
        line.insert("draft".into(), id.into());
    }
    rapport_engine::decode(&Value::Object(line).to_string(), settings)
        .map_err(|r| format!("`rapport run` would reject this event: {}", r.reason))
}

/// The JSON object of the event line the step describes.
fn step_json(
    step: &Yaml,
    s: &Scenario,
    n: usize,
    at: Millis,
) -> Result<Map<String, Value>, String> {
    let mut line = Map::new();
    line.insert("id".into(), format!("s{n}").into());
    line.insert("at".into(), format_time(at).into());
    line.insert("contact".into(), s.contact.clone().into());
    let channel = step
        .get("channel")
        .and_then(yaml_str)
        .or_else(|| s.channel.clone());
    if let Some(c) = channel {
        line.insert("channel".into(), c.into());
    }
    // Copies a key of the step (or of one of its mappings) into the line as it is, for
    // `decode` to judge its type.
    let copy =
        |line: &mut Map<String, Value>, from: &Yaml, key: &str, to: &str| -> Result<(), String> {
            if let Some(v) = from.get(key) {
                let v = serde_json::to_value(v).map_err(|e| format!("`{key}`: {e}"))?;
                line.insert(to.into(), v);
            }
            Ok(())
        };
    if let Some(text) = step.get("message") {
        line.insert("type".into(), "message".into());
        line.insert(
            "text".into(),
            yaml_str(text).ok_or("`message` needs text")?.into(),
        );
        for key in ["profile", "intent", "sentiment", "suggestion"] {
            copy(&mut line, step, key, key)?;
        }
    } else if let Some(text) = step.get("comment") {
        line.insert("type".into(), "comment".into());
        line.insert(
            "text".into(),
            yaml_str(text).ok_or("`comment` needs text")?.into(),
        );
        line.insert("comment".into(), "comment1".into());
        copy(&mut line, step, "id", "comment")?;
        for key in ["post", "author", "intent", "sentiment"] {
            copy(&mut line, step, key, key)?;
        }
    } else if let Some(name) = step.get("event") {
        line.insert("type".into(), "event".into());
        line.insert(
            "name".into(),
            yaml_str(name).ok_or("`event` needs a name")?.into(),
        );
        copy(&mut line, step, "data", "data")?;
    } else if let Some(c) = step.get("consent") {
        line.insert("type".into(), "consent".into());
        if !matches!(c, Yaml::Mapping(_) | Yaml::Null) {
            return Err(
                "`consent` is a mapping such as `{ purpose: marketing, granted: true }`".into(),
            );
        }
        line.insert("purpose".into(), "marketing".into());
        line.insert("granted".into(), true.into());
        for key in ["purpose", "granted", "source", "wording"] {
            copy(&mut line, c, key, key)?;
        }
    } else if step.get("agent").is_some() {
        line.insert("type".into(), "agent".into());
        line.insert("agent".into(), "agent".into());
        copy(&mut line, step, "agent", "action")?;
        copy(&mut line, step, "draft", "draft")?;
        copy(&mut line, step, "text", "text")?;
    } else if let Some(o) = step.get("operator") {
        line.insert("type".into(), "operator".into());
        line.insert("actor".into(), "test".into());
        if let Some(flow) = &s.flow {
            line.insert("flow".into(), flow.clone().into());
        }
        copy(&mut line, o, "action", "action")?;
        copy(&mut line, o, "flow", "flow")?;
    } else if step.get("tick").is_some() {
        line.insert("type".into(), "tick".into());
    } else {
        return Err(
            "a step is one of message, comment, event, consent, agent, operator, tick or wait"
                .into(),
        );
    }
    Ok(line)
}
