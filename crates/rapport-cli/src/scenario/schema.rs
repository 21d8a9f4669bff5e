//! The shape of a `*.test.yaml` file, checked before any of its cases runs. A misspelt
//! key (`expects:`) would otherwise check nothing and pass, so every key must be one
//! `rapport test` knows, at every level; each problem is reported with its line.
//!
//! serde_yaml's `Value` keeps no positions, so a problem is found on the value tree and
//! then located by walking the text again with a seed that fails at that node: serde_yaml
//! gives the failure the line and column of the node it was reading.

use std::fmt;

use rapport_syntax::did_you_mean;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_yaml::{Mapping, Value as Yaml};

/// One step of the way from the document to a node.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Seg {
    Key(String),
    Index(usize),
}

/// Something wrong at a place in the file.
#[derive(Debug)]
pub(super) struct Problem {
    pub(super) path: Vec<Seg>,
    /// The problem is the last key of `path` itself (an unknown key), not its value.
    pub(super) at_key: bool,
    pub(super) message: String,
    pub(super) help: Option<String>,
}

impl Problem {
    pub(super) fn at(path: &[Seg], message: impl Into<String>) -> Self {
        Problem {
            path: path.to_vec(),
            at_key: false,
            message: message.into(),
            help: None,
        }
    }
}

const FILE: &[&str] = &["flow", "start", "contact", "cases"];
const CONTACT: &[&str] = &["id", "channel", "profile"];
const CASE: &[&str] = &["name", "steps"];
/// What a step does: exactly one of these.
pub(super) const STEP_KINDS: &[&str] = &[
    "message", "comment", "event", "consent", "agent", "operator", "tick", "wait",
];
/// Keys every step may have.
const STEP_ANY: &[&str] = &["at", "after", "channel", "expect", "audit"];
const CONSENT: &[&str] = &["purpose", "granted", "source", "wording"];
const OPERATOR: &[&str] = &["action", "flow"];
/// The types an expected action names (`send: "…"`), then the fields of an action.
pub(super) const EXPECTED_ACTION: &[&str] = &[
    "send",
    "template",
    "handoff",
    "handoff_closed",
    "reply",
    "hide",
    "review",
    "tag",
    "emit",
    "alert",
    "draft",
    "draft_closed",
    "id",
    "at",
    "contact",
    "channel",
    "type",
    "text",
    "params",
    "policy",
    "comment",
    "queue",
    "summary",
    "reason",
    "label",
    "name",
    "data",
    "kind",
    "flow",
    "version",
    "variant",
    "state",
    "cause",
];

/// The keys a step of this kind may have besides `STEP_ANY`.
fn step_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "message" => &["profile", "intent", "sentiment", "suggestion"],
        "agent" => &["draft", "text"],
        "comment" => &["id", "post", "author", "intent", "sentiment"],
        "event" => &["data"],
        _ => &[],
    }
}

/// Every key problem of the document, and each step (with its path) that has a kind, for
/// the caller to validate its event.
pub(super) fn check_keys(doc: &Yaml) -> (Vec<Problem>, Vec<(Vec<Seg>, &Yaml)>) {
    let mut problems = Vec::new();
    let mut steps = Vec::new();
    let Some(file) = doc.as_mapping() else {
        problems.push(Problem::at(
            &[],
            "a scenario file is a mapping with `cases:`",
        ));
        return (problems, steps);
    };
    keys(file, FILE, &[], "the file", &mut problems);
    if let Some(contact) = doc.get("contact").and_then(Yaml::as_mapping) {
        let path = [key("contact")];
        keys(contact, CONTACT, &path, "`contact`", &mut problems);
    }
    let Some(cases) = doc.get("cases").and_then(Yaml::as_sequence) else {
        problems.push(Problem {
            help: Some("write `cases:` followed by a list of cases with `name` and `steps`".into()),
            ..Problem::at(&[], "a scenario needs `cases:`, a list of cases")
        });
        return (problems, steps);
    };
    for (i, case) in cases.iter().enumerate() {
        let path = vec![key("cases"), Seg::Index(i)];
        let Some(map) = case.as_mapping() else {
            problems.push(Problem::at(
                &path,
                "a case is a mapping with `name` and `steps`",
            ));
            continue;
        };
        keys(map, CASE, &path, "a case", &mut problems);
        let Some(list) = case.get("steps").and_then(Yaml::as_sequence) else {
            if case.get("steps").is_some() {
                let mut p = path.clone();
                p.push(key("steps"));
                problems.push(Problem::at(&p, "`steps` is a list of steps"));
            }
            continue;
        };
        for (j, step) in list.iter().enumerate() {
            let mut path = path.clone();
            path.extend([key("steps"), Seg::Index(j)]);
            if let Some(kind) = check_step(step, &path, &mut problems) {
                if kind != "wait" {
                    steps.push((path, step));
                }
            }
        }
    }
    (problems, steps)
}

/// A step's keys and expectations; its kind when it has exactly one.
fn check_step(step: &Yaml, path: &[Seg], problems: &mut Vec<Problem>) -> Option<&'static str> {
    let Some(map) = step.as_mapping() else {
        problems.push(Problem::at(
            path,
            "a step is a mapping such as `{ message: \"hi\" }`",
        ));
        return None;
    };
    let kinds: Vec<&'static str> = STEP_KINDS
        .iter()
        .copied()
        .filter(|k| step.get(k).is_some())
        .collect();
    let kind = match kinds.as_slice() {
        [kind] => Some(*kind),
        [] => {
            problems.push(Problem {
                help: Some(format!("give it one of {}", list(STEP_KINDS))),
                ..Problem::at(path, "this step does nothing")
            });
            None
        }
        [..] => {
            problems.push(Problem {
                help: Some("split it into one step for each".into()),
                ..Problem::at(
                    path,
                    format!("a step does one thing, this one {}", list(&kinds)),
                )
            });
            None
        }
    };
    let allowed: Vec<&str> = STEP_ANY
        .iter()
        .chain(STEP_KINDS)
        .chain(kind.map(step_keys).unwrap_or_default())
        .copied()
        .collect();
    let what = match kind {
        Some(k @ ("event" | "agent" | "operator")) => format!("an `{k}` step"),
        Some(k) => format!("a `{k}` step"),
        None => "a step".to_string(),
    };
    keys(map, &allowed, path, &what, problems);
    for (sub, allowed) in [("consent", CONSENT), ("operator", OPERATOR)] {
        if let Some(m) = step.get(sub).and_then(Yaml::as_mapping) {
            let mut p = path.to_vec();
            p.push(key(sub));
            keys(m, allowed, &p, &format!("`{sub}`"), problems);
        }
    }
    for field in ["expect", "audit"] {
        let Some(v) = step.get(field) else { continue };
        let mut p = path.to_vec();
        p.push(key(field));
        let Some(items) = v.as_sequence() else {
            problems.push(Problem {
                help: Some(format!(
                    "write `{field}: []` for none, or a list of mappings"
                )),
                ..Problem::at(&p, format!("`{field}` is a list"))
            });
            continue;
        };
        for (k, item) in items.iter().enumerate() {
            let mut p = p.clone();
            p.push(Seg::Index(k));
            match item.as_mapping() {
                None => problems.push(Problem::at(
                    &p,
                    "an expectation is a mapping such as `{ send: \"Hi\" }`",
                )),
                Some(m) if field == "expect" => {
                    keys(m, EXPECTED_ACTION, &p, "an expected action", problems);
                }
                Some(_) => {}
            }
        }
    }
    kind
}

/// Reports every key of `map` not in `allowed`, with a "did you mean".
fn keys(map: &Mapping, allowed: &[&str], path: &[Seg], what: &str, problems: &mut Vec<Problem>) {
    for k in map.keys() {
        let name = match k {
            Yaml::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        if allowed.contains(&name.as_str()) {
            continue;
        }
        let help = match did_you_mean(&name, allowed.iter().copied()) {
            Some(s) => format!(
                "did you mean `{s}`? The keys of {what} are {}",
                list(allowed)
            ),
            None => format!("the keys of {what} are {}", list(allowed)),
        };
        let mut p = path.to_vec();
        p.push(Seg::Key(name.clone()));
        problems.push(Problem {
            path: p,
            at_key: true,
            message: format!("unknown key `{name}` in {what}"),
            help: Some(help),
        });
    }
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

fn list(items: &[&str]) -> String {
    items
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `file:line:col: message`, then the help, for each problem, in the order of the file.
pub(super) fn render(file: &str, text: &str, problems: &[Problem]) -> String {
    let mut located: Vec<(Option<(usize, usize)>, &Problem)> = problems
        .iter()
        .map(|p| (locate(text, &p.path, p.at_key), p))
        .collect();
    located.sort_by_key(|(at, _)| *at);
    let mut out = String::new();
    for (at, p) in located {
        match at {
            Some((line, col)) => out.push_str(&format!("{file}:{line}:{col}: {}\n", p.message)),
            None => out.push_str(&format!("{file}: {}\n", p.message)),
        }
        if let Some(h) = &p.help {
            out.push_str(&format!("  help: {h}\n"));
        }
    }
    out
}

/// The 1-based line and column of the node at `path` (of its key, with `at_key`).
pub(super) fn locate(text: &str, path: &[Seg], at_key: bool) -> Option<(usize, usize)> {
    let probe = Probe { path, at_key };
    match probe.deserialize(serde_yaml::Deserializer::from_str(text)) {
        Err(e) if e.to_string().contains(FOUND) => e.location().map(|l| (l.line(), l.column())),
        _ => None,
    }
}

/// The error a probe raises where it arrives (serde_yaml puts the path before it).
const FOUND: &str = "rapport: found";

#[derive(Clone, Copy)]
struct Probe<'p> {
    path: &'p [Seg],
    at_key: bool,
}

impl<'de> DeserializeSeed<'de> for Probe<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Probe<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML node")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let Seg::Key(wanted) = first else {
            return Err(de::Error::custom("not here"));
        };
        let here = self.at_key && rest.is_empty();
        while let Some(k) = map.next_key_seed(KeyProbe { wanted, fail: here })? {
            if k {
                return map.next_value_seed(Probe {
                    path: rest,
                    at_key: self.at_key,
                });
            }
            map.next_value::<IgnoredAny>()?;
        }
        Err(de::Error::custom("not here"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let Some((first, rest)) = self.path.split_first() else {
            return Err(de::Error::custom(FOUND));
        };
        let Seg::Index(wanted) = first else {
            return Err(de::Error::custom("not here"));
        };
        for _ in 0..*wanted {
            if seq.next_element::<IgnoredAny>()?.is_none() {
                return Err(de::Error::custom("not here"));
            }
        }
        let next = Probe {
            path: rest,
            at_key: self.at_key,
        };
        seq.next_element_seed(next)?;
        Err(de::Error::custom("not here"))
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.scalar()
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.scalar()
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.scalar()
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.scalar()
    }
}

impl Probe<'_> {
    /// A scalar is the node looked for only at the end of the path.
    fn scalar<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom(if self.path.is_empty() {
            FOUND
        } else {
            "not here"
        }))
    }
}

/// Reads a mapping key: whether it is the one wanted, or, with `fail`, an error at it.
struct KeyProbe<'p> {
    wanted: &'p str,
    fail: bool,
}

impl<'de> DeserializeSeed<'de> for KeyProbe<'_> {
    type Value = bool;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeyProbe<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, k: &str) -> Result<bool, E> {
        self.key(k)
    }
    fn visit_bool<E: de::Error>(self, k: bool) -> Result<bool, E> {
        self.key(&k.to_string())
    }
    fn visit_i64<E: de::Error>(self, k: i64) -> Result<bool, E> {
        self.key(&k.to_string())
    }
    fn visit_u64<E: de::Error>(self, k: u64) -> Result<bool, E> {
        self.key(&k.to_string())
    }
    fn visit_f64<E: de::Error>(self, k: f64) -> Result<bool, E> {
        self.key(&k.to_string())
    }
    fn visit_unit<E: de::Error>(self) -> Result<bool, E> {
        self.key("~")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(false)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(false)
    }
}

impl KeyProbe<'_> {
    fn key<E: de::Error>(&self, k: &str) -> Result<bool, E> {
        let hit = k == self.wanted;
        if hit && self.fail {
            return Err(E::custom(FOUND));
        }
        Ok(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "flow: welcome\ncases:\n  - name: one\n    steps:\n      - message: hi\n        expects: []\n      - { wait: 1h, expect: [ { send: x } ] }\n";

    #[test]
    fn nodes_and_keys_are_located() {
        let step = |j| vec![key("cases"), Seg::Index(0), key("steps"), Seg::Index(j)];
        assert_eq!(locate(TEXT, &step(0), false), Some((5, 9)));
        let mut expects = step(0);
        expects.push(key("expects"));
        assert_eq!(locate(TEXT, &expects, true), Some((6, 9)));
        let mut send = step(1);
        send.extend([key("expect"), Seg::Index(0), key("send")]);
        assert_eq!(locate(TEXT, &send, true), Some((7, 33)));
        assert_eq!(locate(TEXT, &[key("flow")], false), Some((1, 7)));
        assert_eq!(locate(TEXT, &[key("nothing")], true), None);
    }

    #[test]
    fn unknown_keys_at_every_level() {
        let text = "flw: a\ncontact: { idd: c1 }\ncases:\n  - nme: x\n    steps:\n      - message: hi\n        expects: []\n        post: p\n        expect: [ { sendd: x } ]\n      - consent: { purpos: marketing }\n";
        let doc: Yaml = serde_yaml::from_str(text).expect("YAML");
        let (problems, _) = check_keys(&doc);
        let shown = render("t.test.yaml", text, &problems);
        for line in [
            "t.test.yaml:1:1: unknown key `flw` in the file",
            "t.test.yaml:2:12: unknown key `idd` in `contact`",
            "t.test.yaml:4:5: unknown key `nme` in a case",
            "t.test.yaml:7:9: unknown key `expects` in a `message` step",
            "help: did you mean `expect`?",
            "t.test.yaml:8:9: unknown key `post` in a `message` step",
            "t.test.yaml:9:21: unknown key `sendd` in an expected action",
            "t.test.yaml:10:20: unknown key `purpos` in `consent`",
        ] {
            assert!(shown.contains(line), "{line}\n{shown}");
        }
    }
}
