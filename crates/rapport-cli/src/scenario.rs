//! `rapport test`: the `*.test.yaml` scenarios (docs/testing.md), run against the
//! compiled flows in the engine, each case from a fresh contact, with a readable diff on
//! failure and the states and transitions no case reached.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rapport_bundle::{Action as BAction, Bundle, On};
use rapport_engine::{format_time, parse_time, Action, ActionKind, Audit, Body, Engine, Millis};
use serde_json::{Map, Value};
use serde_yaml::Value as Yaml;

use crate::files::{is_symlink, read_project_file, report_refused};
use crate::load::load_or_report;
use crate::TestArgs;

mod schema;
mod step;

use schema::{Problem, Seg};

/// A scenario file, read into what the runner needs.
struct Scenario {
    path: String,
    flow: Option<String>,
    start: Millis,
    contact: String,
    channel: Option<String>,
    profile: Map<String, Value>,
    cases: Vec<Case>,
}

struct Case {
    name: String,
    steps: Vec<Yaml>,
}

pub(crate) fn run(args: TestArgs) -> ExitCode {
    let loaded = match load_or_report(&args.paths) {
        Ok(l) => l,
        Err(code) => return code,
    };
    if loaded.io_failed {
        return ExitCode::from(2);
    }
    let mut failed = 0usize;
    let mut passed = 0usize;
    let mut broken_files = 0usize;
    let mut io_failed = false;
    for project in &loaded.projects {
        let sources = project.sources();
        let checked = project.check(&sources);
        let Some(checked) = checked.filter(|c| !c.has_errors()) else {
            let reports = project.reports(None);
            eprint!(
                "{}",
                crate::render::render(&reports, crate::render::Format::Human, false)
            );
            eprintln!(
                "error: the project has errors; run `rapport check` and fix them before testing"
            );
            return ExitCode::from(1);
        };
        let bundle = rapport_check::compile(&project.settings.settings, &sources, &checked);
        let root = Path::new(&project.settings_path)
            .parent()
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let mut files = Vec::new();
        collect_tests(&root, &mut files);
        files.sort();
        if files.is_empty() {
            eprintln!("note: no *.test.yaml files under `{}`", root.display());
        }
        let mut coverage = Coverage::new(&bundle);
        for file in files {
            let text = match read_project_file(&file, &root) {
                Ok(t) => t,
                Err(why) => {
                    io_failed |= report_refused(&file, &why, false);
                    continue;
                }
            };
            let scenario = match read_scenario(&file, &text, &bundle.settings) {
                Ok(s) => s,
                Err(problems) => {
                    out!("{problems}");
                    broken_files += 1;
                    continue;
                }
            };
            if let Some(flow) = &scenario.flow {
                if !bundle.flows.iter().any(|f| &f.name == flow) {
                    outln!(
                        "{}: `flow: {flow}` is not a flow of this project",
                        scenario.path
                    );
                    broken_files += 1;
                    continue;
                }
            }
            for case in &scenario.cases {
                match run_case(&bundle, &scenario, case, &mut coverage) {
                    Ok(()) => {
                        passed += 1;
                        outln!("ok      {} › {}", scenario.path, case.name);
                    }
                    Err(report) => {
                        failed += 1;
                        outln!("FAILED  {} › {}\n{report}", scenario.path, case.name);
                    }
                }
            }
        }
        out!("{}", coverage.report(&bundle));
    }
    outln!("\ntest result: {passed} passed, {failed} failed");
    if io_failed {
        ExitCode::from(2)
    } else if failed > 0 || broken_files > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn collect_tests(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if is_symlink(&path) {
                crate::project::warn_linked_folder(&path);
                continue;
            }
            collect_tests(&path, out);
        } else if name.ends_with(".test.yaml") {
            out.push(path);
        }
    }
}

/// Reads and checks a scenario file: its nesting, its YAML, every key, every time and
/// duration, and the event of every step (as `rapport run` would decode it). `Err` holds
/// every problem, one `file:line:col: message` each, with its help.
fn read_scenario(
    path: &Path,
    text: &str,
    settings: &rapport_bundle::Settings,
) -> Result<Scenario, String> {
    let file = path.display().to_string();
    if let Some(at) = rapport_syntax::yaml_too_deep(text, rapport_syntax::MAX_YAML_DEPTH) {
        let line = text[..at].matches('\n').count() + 1;
        return Err(format!(
            "{file}:{line}: nests more than {} levels deep\n  help: a scenario needs a few levels (cases, steps, expectations); look for a `[` or `{{` that is never closed\n",
            rapport_syntax::MAX_YAML_DEPTH
        ));
    }
    let doc: Yaml = serde_yaml::from_str(text).map_err(|e| match e.location() {
        Some(l) => format!("{file}:{}:{}: not valid YAML: {e}\n", l.line(), l.column()),
        None => format!("{file}: not valid YAML: {e}\n"),
    })?;
    let (mut problems, steps) = schema::check_keys(&doc);
    let start = match doc.get("start") {
        None => parse_time("2026-11-24T10:00:00Z").unwrap_or(0),
        Some(v) => match yaml_str(v).and_then(|t| parse_time(&t)) {
            Some(t) => t,
            None => {
                problems.push(Problem::at(
                    &[Seg::Key("start".into())],
                    "`start` must be an RFC 3339 time such as 2026-11-24T10:00:00Z",
                ));
                0
            }
        },
    };
    let contact = doc.get("contact");
    let cases = doc
        .get("cases")
        .and_then(Yaml::as_sequence)
        .map(|cases| {
            cases
                .iter()
                .enumerate()
                .map(|(i, c)| Case {
                    name: c
                        .get("name")
                        .and_then(yaml_str)
                        .unwrap_or_else(|| format!("case {}", i + 1)),
                    steps: c
                        .get("steps")
                        .and_then(Yaml::as_sequence)
                        .cloned()
                        .unwrap_or_default(),
                })
                .collect()
        })
        .unwrap_or_default();
    let scenario = Scenario {
        path: file.clone(),
        flow: doc.get("flow").and_then(yaml_str),
        start,
        contact: contact
            .and_then(|c| c.get("id"))
            .and_then(yaml_str)
            .unwrap_or_else(|| "c1".into()),
        channel: contact.and_then(|c| c.get("channel")).and_then(yaml_str),
        profile: contact
            .and_then(|c| c.get("profile"))
            .and_then(|p| serde_json::to_value(p).ok())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default(),
        cases,
    };
    for (path, step) in steps {
        let n = match path.last() {
            Some(Seg::Index(j)) => j + 1,
            _ => 0,
        };
        if let Err(why) = step::step_event(step, &scenario, n, scenario.start, settings, Some("d"))
        {
            problems.push(Problem::at(&path, why));
        }
    }
    // Times and durations, for every step (a `wait` step included).
    for (i, case) in scenario.cases.iter().enumerate() {
        for (j, step) in case.steps.iter().enumerate() {
            let path = || {
                vec![
                    Seg::Key("cases".into()),
                    Seg::Index(i),
                    Seg::Key("steps".into()),
                    Seg::Index(j),
                ]
            };
            if let Some(at) = step.get("at") {
                if yaml_str(at).and_then(|t| parse_time(&t)).is_none() {
                    let mut p = path();
                    p.push(Seg::Key("at".into()));
                    problems.push(Problem::at(
                        &p,
                        "`at` must be an RFC 3339 time such as 2026-11-24T10:00:00Z",
                    ));
                }
            }
            for key in ["after", "wait"] {
                if let Some(Err(why)) = step.get(key).map(duration_ms) {
                    let mut p = path();
                    p.push(Seg::Key(key.into()));
                    problems.push(Problem::at(&p, format!("`{key}`: {why}")));
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(scenario)
    } else {
        Err(schema::render(&file, text, &problems))
    }
}

fn yaml_str(v: &Yaml) -> Option<String> {
    match v {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn duration_ms(v: &Yaml) -> Result<Millis, String> {
    let s = yaml_str(v).ok_or("a duration such as `25h`")?;
    rapport_syntax::parse_duration(s.trim())
        .map(|d| d.seconds as Millis * 1000)
        .map_err(|_| format!("`{s}` is not a duration (write e.g. 30m, 25h, 2d)"))
}

/// Runs one case from a fresh engine; `Err` carries the readable failure.
fn run_case(
    bundle: &Bundle,
    s: &Scenario,
    case: &Case,
    coverage: &mut Coverage,
) -> Result<(), String> {
    let mut engine = Engine::new(bundle.clone());
    let mut now = s.start;
    let mut first_message = true;
    let mut last_draft: Option<String> = None;
    let mut not_enrolled: Vec<String> = Vec::new();
    for (i, step) in case.steps.iter().enumerate() {
        let n = i + 1;
        let fail = |msg: String| format!("    step {n}: {msg}");
        // `at` places the step in time; an `at` before the clock is an old event, which
        // keeps its own time while the clock stays (clocks never go back).
        let mut placed = None;
        if let Some(at) = step.get("at") {
            let t = yaml_str(at)
                .and_then(|t| parse_time(&t))
                .ok_or_else(|| fail("`at` must be an RFC 3339 time".into()))?;
            placed = Some(t);
            now = now.max(t);
        }
        if let Some(after) = step.get("after") {
            now += duration_ms(after).map_err(fail)?;
        }
        let out = if let Some(wait) = step.get("wait") {
            now += duration_ms(wait).map_err(fail)?;
            engine.advance(now)
        } else {
            let at = placed.unwrap_or(now);
            let mut event =
                step::step_event(step, s, n, at, &bundle.settings, last_draft.as_deref())
                    .map_err(fail)?;
            if let Body::Message { profile, .. } = &mut event.body {
                if first_message {
                    for (k, v) in &s.profile {
                        if !profile.iter().any(|(field, _)| field == k) {
                            profile.push((k.clone(), v.clone()));
                        }
                    }
                    first_message = false;
                }
            }
            if matches!(event.body, Body::Operator { .. } | Body::Tick) {
                event.contact = None;
            }
            engine.step(&event)
        };
        coverage.observe(&out.audit);
        if let Some(d) = out
            .actions
            .iter()
            .rev()
            .find(|a| a.kind == ActionKind::Draft)
        {
            last_draft = Some(d.id.clone());
        }
        for a in out.audit.iter().filter(|a| a.kind == "not_enrolled") {
            let why = format!(
                "the contact was not enrolled in `{}`: {}",
                a.flow.as_deref().unwrap_or("?"),
                a.reason.as_deref().unwrap_or("no reason given")
            );
            if !not_enrolled.contains(&why) {
                not_enrolled.push(why);
            }
        }
        // A failure after a refused enrolment is usually explained by it: say so.
        let failure = |d: String| {
            let mut text = format!("    step {n} ({}):\n{d}", describe_step(step));
            for why in &not_enrolled {
                text.push_str(&format!("      note: {why}\n"));
            }
            text
        };
        if let Some(expect) = step.get("expect") {
            let expected = expect.as_sequence().cloned().unwrap_or_default();
            compare_actions(&expected, &out.actions).map_err(failure)?;
        }
        if let Some(audit) = step.get("audit") {
            let expected = audit.as_sequence().cloned().unwrap_or_default();
            compare_audit(&expected, &out.audit).map_err(failure)?;
        }
    }
    Ok(())
}

fn describe_step(step: &Yaml) -> String {
    for key in [
        "message", "comment", "event", "consent", "agent", "operator", "wait", "tick",
    ] {
        if let Some(v) = step.get(key) {
            return match yaml_str(v) {
                Some(s) => format!("{key} {s:?}"),
                None => key.to_string(),
            };
        }
    }
    "step".into()
}

/// The type an expected action names, and the action field its main value is.
const TYPES: [(&str, &str); 12] = [
    ("send", "text"),
    ("template", "template"),
    ("handoff", "queue"),
    ("handoff_closed", "reason"),
    ("reply", "text"),
    ("hide", "comment"),
    ("review", "reason"),
    ("tag", "label"),
    ("emit", "name"),
    ("alert", "kind"),
    ("draft", "text"),
    ("draft_closed", "reason"),
];

fn action_type(a: &Action) -> &'static str {
    match a.kind {
        ActionKind::Send if a.template.is_some() => "template",
        k => k.as_str(),
    }
}

fn value_matches(expected: &Yaml, actual: Option<&Value>) -> bool {
    let Some(actual) = actual else {
        return matches!(expected, Yaml::Null);
    };
    let actual_text = match actual {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match expected {
        Yaml::String(e) if e.len() >= 2 && e.starts_with('/') && e.ends_with('/') => {
            regex::Regex::new(&e[1..e.len() - 1]).is_ok_and(|re| re.is_match(&actual_text))
        }
        Yaml::Mapping(_) => serde_json::to_value(expected).is_ok_and(|e| &e == actual),
        other => yaml_str(other).is_some_and(|e| e == actual_text),
    }
}

fn matches_action(expected: &Yaml, a: &Action) -> bool {
    let Some(map) = expected.as_mapping() else {
        return false;
    };
    let actual = serde_json::to_value(a).unwrap_or(Value::Null);
    let ty = action_type(a);
    for (k, v) in map {
        let Some(key) = yaml_str(k) else { return false };
        if let Some((_, field)) = TYPES.iter().find(|(t, _)| *t == key) {
            if key != ty || !value_matches(v, actual.get(*field)) {
                return false;
            }
        } else if !value_matches(v, actual.get(&key)) {
            return false;
        }
    }
    map.keys()
        .filter_map(yaml_str)
        .any(|k| TYPES.iter().any(|(t, _)| *t == k))
}

fn show_action(a: &Action) -> String {
    let ty = action_type(a);
    let main = TYPES
        .iter()
        .find(|(t, _)| *t == ty)
        .and_then(|(_, field)| serde_json::to_value(a).ok()?.get(*field).cloned())
        .map(|v| match v {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        })
        .unwrap_or_default();
    let mut extra = Vec::new();
    if let Some(p) = a.policy {
        extra.push(format!("policy: {p}"));
    }
    if let Some(c) = &a.comment {
        if ty != "hide" {
            extra.push(format!("comment: {c}"));
        }
    }
    extra.push(format!("at {}", format_time(a.at)));
    format!("{ty}: {main}  ({})", extra.join(", "))
}

fn show_expected(e: &Yaml) -> String {
    serde_json::to_string(e).unwrap_or_else(|_| "?".into())
}

/// Expected actions are the exact, ordered list: a diff shows both sides.
fn compare_actions(expected: &[Yaml], actual: &[Action]) -> Result<(), String> {
    let ok = expected.len() == actual.len()
        && expected
            .iter()
            .zip(actual)
            .all(|(e, a)| matches_action(e, a));
    if ok {
        return Ok(());
    }
    let mut out = String::from("      expected:\n");
    for (i, e) in expected.iter().enumerate() {
        let mark = if actual.get(i).is_some_and(|a| matches_action(e, a)) {
            " "
        } else {
            "-"
        };
        out.push_str(&format!("      {mark} {}\n", show_expected(e)));
    }
    if expected.is_empty() {
        out.push_str("        (no actions)\n");
    }
    out.push_str("      actual:\n");
    for (i, a) in actual.iter().enumerate() {
        let mark = if expected.get(i).is_some_and(|e| matches_action(e, a)) {
            " "
        } else {
            "+"
        };
        out.push_str(&format!("      {mark} {}\n", show_action(a)));
    }
    if actual.is_empty() {
        out.push_str("        (no actions)\n");
    }
    Err(out)
}

/// Expected audit records must appear in this order among the step's records.
fn compare_audit(expected: &[Yaml], actual: &[Audit]) -> Result<(), String> {
    let mut from = 0;
    for e in expected {
        let Some(map) = e.as_mapping() else { continue };
        let found = actual[from..].iter().position(|a| {
            map.iter().all(|(k, v)| {
                let key = yaml_str(k).unwrap_or_default();
                if key == a.kind {
                    return a
                        .reason
                        .as_deref()
                        .map(|r| value_matches(v, Some(&Value::String(r.into()))))
                        .unwrap_or(false);
                }
                let json = serde_json::to_value(a).unwrap_or(Value::Null);
                json.get(&key).is_some() && value_matches(v, json.get(&key))
            })
        });
        match found {
            Some(p) => from += p + 1,
            None => {
                let have: Vec<String> = actual
                    .iter()
                    .map(|a| format!("{}: {}", a.kind, a.reason.clone().unwrap_or_default()))
                    .collect();
                return Err(format!(
                    "      expected audit {} not found; the step's audit records: {}\n",
                    show_expected(e),
                    have.join(", ")
                ));
            }
        }
    }
    Ok(())
}

/// Which states and transitions the cases reached.
struct Coverage {
    /// (flow, state) entered.
    states: BTreeSet<(String, String)>,
    /// (flow, from, to) taken.
    edges: BTreeSet<(String, String, String)>,
    /// The state each flow's run of the current case was last in.
    current: BTreeMap<String, String>,
}

impl Coverage {
    fn new(_bundle: &Bundle) -> Self {
        Coverage {
            states: BTreeSet::new(),
            edges: BTreeSet::new(),
            current: BTreeMap::new(),
        }
    }

    fn observe(&mut self, audit: &[Audit]) {
        for a in audit {
            let Some(flow) = &a.flow else { continue };
            match a.kind {
                "enrolled" => {
                    self.current.remove(flow);
                }
                "transition" => {
                    if let Some(state) = &a.state {
                        if let Some(from) = self.current.get(flow) {
                            self.edges
                                .insert((flow.clone(), from.clone(), state.clone()));
                        }
                        self.states.insert((flow.clone(), state.clone()));
                        self.current.insert(flow.clone(), state.clone());
                    }
                }
                _ => {}
            }
        }
    }

    fn report(&self, bundle: &Bundle) -> String {
        let mut out = String::from("\ncoverage:\n");
        for flow in &bundle.flows {
            let names: Vec<&str> = flow.states.iter().map(|s| s.name.as_str()).collect();
            let mut edges: BTreeSet<(usize, usize)> = BTreeSet::new();
            for (i, s) in flow.states.iter().enumerate() {
                for t in &s.transitions {
                    edges.insert((i, t.target));
                }
                for a in &s.actions {
                    match a {
                        BAction::Goto { state } | BAction::Branch { state, .. } => {
                            edges.insert((i, *state));
                        }
                        BAction::Ask(ask) => {
                            edges.insert((i, ask.then));
                            if let Some(o) = ask.otherwise {
                                edges.insert((i, o));
                            }
                        }
                        _ => {}
                    }
                }
            }
            let missed_states: Vec<&str> = names
                .iter()
                .filter(|n| !self.states.contains(&(flow.name.clone(), n.to_string())))
                .copied()
                .collect();
            let missed_edges: Vec<String> = edges
                .iter()
                .filter(|(f, t)| {
                    !self.edges.contains(&(
                        flow.name.clone(),
                        names[*f].to_string(),
                        names[*t].to_string(),
                    ))
                })
                .map(|(f, t)| format!("{} → {}", names[*f], names[*t]))
                .collect();
            let wide: Vec<String> = flow
                .transitions
                .iter()
                .filter(|t| !matches!(t.on, On::After { .. }))
                .filter(|t| {
                    !self
                        .edges
                        .iter()
                        .any(|(fl, _, to)| fl == &flow.name && to == names[t.target])
                })
                .map(|t| format!("any → {}", names[t.target]))
                .collect();
            let total_states = names.len();
            let total_edges = edges.len() + flow.transitions.len();
            let reached_states = total_states - missed_states.len();
            let reached_edges = total_edges - missed_edges.len() - wide.len();
            out.push_str(&format!(
                "  {:<24} states {reached_states}/{total_states}, transitions {reached_edges}/{total_edges}",
                flow.name
            ));
            if missed_states.is_empty() && missed_edges.is_empty() && wide.is_empty() {
                out.push('\n');
                continue;
            }
            out.push_str("; never reached:");
            if !missed_states.is_empty() {
                out.push_str(&format!(" states {}", missed_states.join(", ")));
            }
            let all: Vec<String> = missed_edges.into_iter().chain(wide).collect();
            if !all.is_empty() {
                out.push_str(&format!(" transitions {}", all.join(", ")));
            }
            out.push('\n');
        }
        out
    }
}
