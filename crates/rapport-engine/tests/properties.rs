//! Property tests over random event sequences on the example flows (`flows/`) and the
//! funnel workload (`bench/funnel/`): the promises users rely on hold whatever happens.

use std::collections::HashMap;
use std::path::Path;

use proptest::prelude::*;
use rapport_bundle::Bundle;
use rapport_engine::{parse_time, Action, ActionKind, Body, Engine, Event};
use serde_json::{json, Map, Value};

fn bundle_of(dir: &str) -> Bundle {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(dir);
    let settings_src = std::fs::read_to_string(root.join("rapport.yaml")).expect("rapport.yaml");
    let settings = rapport_syntax::parse_settings(&settings_src).settings;
    let mut files: Vec<(String, String)> = std::fs::read_dir(&root)
        .expect("project folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "flow"))
        .map(|p| {
            (
                p.display().to_string(),
                std::fs::read_to_string(&p).expect("flow file"),
            )
        })
        .collect();
    files.sort();
    let parsed: Vec<_> = files
        .iter()
        .map(|(_, s)| rapport_syntax::parse(s))
        .collect();
    let sources: Vec<rapport_check::SourceFile<'_>> = files
        .iter()
        .zip(&parsed)
        .map(|((path, source), p)| rapport_check::SourceFile {
            path,
            source,
            ast: &p.file,
        })
        .collect();
    let checked = rapport_check::check(&settings, &sources);
    assert!(!checked.has_errors(), "{dir} must check clean");
    rapport_check::compile(&settings, &sources, &checked)
}

/// One step of a random conversation.
#[derive(Debug, Clone)]
enum Step {
    Message(usize, &'static str),
    Consent(usize, bool),
    Event(usize, &'static str),
    Agent(usize, bool),
    Comment(usize, &'static str),
    Tick,
    /// Seconds to move the clock on.
    Wait(i64),
    /// Deliver an earlier event again.
    Duplicate(usize),
}

const TEXTS: &[&str] = &[
    "hi",
    "1",
    "2",
    "3",
    "a",
    "B",
    "a.",
    "yes",
    "no",
    "agent",
    "human",
    "STOP",
    "stop!",
    "opt-out",
    "START",
    "HELP",
    "please stop messaging me",
    "refund please",
    "12345",
    "1234567",
    "under 100",
    "42",
    "ana@example.com",
    "size",
    "i have a question",
    "cancel",
    "what's the price?",
    "ok",
];
const EVENTS: &[&str] = &[
    "cart.abandoned",
    "order.placed",
    "live.scheduled",
    "live.ended",
    "live.cancelled",
];
const COMMENTS: &[&str] = &[
    "how much?",
    "price?",
    "follow for follow http://spam.example",
    "you are terrible",
    "love it",
];

fn step() -> impl Strategy<Value = Step> {
    let contact = 0usize..3;
    prop_oneof![
        6 => (contact.clone(), prop::sample::select(TEXTS)).prop_map(|(c, t)| Step::Message(c, t)),
        1 => (contact.clone(), any::<bool>()).prop_map(|(c, g)| Step::Consent(c, g)),
        2 => (contact.clone(), prop::sample::select(EVENTS)).prop_map(|(c, e)| Step::Event(c, e)),
        1 => (contact.clone(), any::<bool>()).prop_map(|(c, r)| Step::Agent(c, r)),
        1 => (contact.clone(), prop::sample::select(COMMENTS)).prop_map(|(c, t)| Step::Comment(c, t)),
        1 => Just(Step::Tick),
        3 => prop_oneof![1i64..120, 600i64..7200, 3600i64..200_000].prop_map(Step::Wait),
        1 => (0usize..40).prop_map(Step::Duplicate),
    ]
}

fn event_data(name: &str, contact: usize) -> Map<String, Value> {
    let v = match name {
        "cart.abandoned" => {
            json!({"product_name": "Trail Runner 2", "cart_url": format!("https://acme.example/c/{contact}"), "cart_total": 120, "item_count": 2})
        }
        "order.placed" => json!({"order_id": "55555", "total": 120}),
        "live.scheduled" => {
            json!({"live_id": "l1", "title": "Winter boots", "starts_at": "Friday 18:00", "live_url": "https://acme.example/live", "offer_code": "LIVE10"})
        }
        "live.ended" => {
            json!({"live_id": "l1", "duration_minutes": 45, "replay_url": "https://acme.example/replay"})
        }
        _ => json!({"live_id": "l1", "reason": "host ill"}),
    };
    v.as_object().cloned().unwrap_or_default()
}

/// Turns steps into events with increasing ids and times.
fn events(steps: &[Step]) -> Vec<Event> {
    let channels = ["instagram", "whatsapp", "messenger"];
    let mut at = parse_time("2026-11-24T10:00:00Z").unwrap_or(0);
    let mut out: Vec<Event> = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let id = format!("e{i}");
        let mk = |c: usize, body: Body| Event {
            id: id.clone(),
            at,
            contact: Some(format!("c{c}")),
            channel: Some(channels[c % 3].to_string()),
            body,
        };
        let e = match s {
            Step::Wait(secs) => {
                at += secs * 1000;
                continue;
            }
            Step::Duplicate(k) => match out.get(*k) {
                Some(e) => e.clone(),
                None => continue,
            },
            Step::Message(c, t) => mk(
                *c,
                Body::Message {
                    text: t.to_string(),
                    profile: vec![
                        ("first_name".into(), json!("Ana")),
                        ("timezone".into(), json!("Europe/Bucharest")),
                    ],
                    intent: None,
                    sentiment: None,
                },
            ),
            Step::Consent(c, g) => mk(
                *c,
                Body::Consent {
                    purpose: "marketing".into(),
                    granted: *g,
                    source: None,
                    wording: None,
                },
            ),
            Step::Event(c, name) => mk(
                *c,
                Body::External {
                    name: name.to_string(),
                    data: event_data(name, *c),
                },
            ),
            Step::Agent(c, r) => mk(
                *c,
                Body::Agent {
                    released: *r,
                    agent: Some("a1".into()),
                },
            ),
            Step::Comment(c, t) => mk(
                *c,
                Body::Comment {
                    comment: format!("cm{i}"),
                    text: t.to_string(),
                    post: Some("p1".into()),
                    author: Some("ana".into()),
                    intent: None,
                    sentiment: None,
                },
            ),
            Step::Tick => Event {
                id: id.clone(),
                at,
                contact: None,
                channel: None,
                body: Body::Tick,
            },
        };
        out.push(e);
        at += 1000;
    }
    out
}

fn run(bundle: &Bundle, events: &[Event]) -> Vec<(Event, Vec<Action>)> {
    let mut engine = Engine::new(bundle.clone());
    events
        .iter()
        .map(|e| (e.clone(), engine.step(e).actions))
        .collect()
}

fn is_flow_send(a: &Action) -> bool {
    a.kind == ActionKind::Send && a.policy.is_none()
}

/// Checks every promise over one run of a stream.
fn check_promises(bundle: &Bundle, trace: &[(Event, Vec<Action>)]) {
    let marketing: Vec<&str> = bundle
        .flows
        .iter()
        .filter(|f| f.purpose == rapport_bundle::Purpose::Marketing)
        .map(|f| f.name.as_str())
        .collect();
    let limit = bundle.settings.rate_limit;
    let mut opted_out: HashMap<String, bool> = HashMap::new();
    let mut consent: HashMap<String, bool> = HashMap::new();
    let mut in_handoff: HashMap<String, bool> = HashMap::new();
    let mut sends: HashMap<String, Vec<i64>> = HashMap::new();
    let mut seen_ids = std::collections::HashSet::new();
    for (event, all) in trace {
        // A sentinel after the last action applies the event when it caused no action.
        let actions: Vec<Option<&Action>> =
            all.iter().map(Some).chain(std::iter::once(None)).collect();
        let first_time = seen_ids.insert(event.id.clone());
        if !first_time {
            assert!(
                all.is_empty(),
                "a duplicate event id produced actions: {all:?}"
            );
            continue;
        }
        let contact = event.contact.clone().unwrap_or_default();
        // Timers due at or before the event fire before it is applied: their actions
        // come first and see the state before the event.
        let fired = all
            .iter()
            .take_while(|a| a.cause.as_deref() == Some("timer"))
            .count();
        for (i, a) in actions.iter().enumerate() {
            if i == fired {
                if let Body::Consent { granted, .. } = &event.body {
                    consent.insert(contact.clone(), *granted);
                }
                if let Body::Agent { released: true, .. } = &event.body {
                    in_handoff.insert(contact.clone(), false);
                }
            }
            let Some(a) = *a else { continue };
            let who = a.contact.clone().unwrap_or_default();
            match a.policy {
                Some("opt_out_confirm") => {
                    opted_out.insert(who.clone(), true);
                }
                Some("resubscribe_confirm") => {
                    opted_out.insert(who.clone(), false);
                }
                _ => {}
            }
            if a.kind == ActionKind::Handoff {
                in_handoff.insert(who.clone(), true);
            }
            if a.kind == ActionKind::HandoffClosed {
                in_handoff.insert(who.clone(), false);
            }
            if !is_flow_send(a) {
                continue;
            }
            assert!(
                !opted_out.get(&who).copied().unwrap_or(false),
                "a send after STOP: {a:?}"
            );
            assert!(
                !in_handoff.get(&who).copied().unwrap_or(false),
                "a send during a handoff: {a:?}"
            );
            if a.flow.as_deref().is_some_and(|f| marketing.contains(&f)) {
                assert!(
                    consent.get(&who).copied().unwrap_or(false),
                    "a marketing send without consent: {a:?}"
                );
            }
            if let Some(l) = limit {
                let times = sends.entry(who.clone()).or_default();
                times.push(a.at);
                let window = l.per as i64 * 1000;
                let in_window = times.iter().filter(|&&t| t > a.at - window).count();
                assert!(
                    in_window <= l.max as usize,
                    "more than {} sends within {}s: {a:?}",
                    l.max,
                    l.per
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn promises_hold_on_the_example_flows(steps in proptest::collection::vec(step(), 1..60)) {
        let bundle = bundle_of("flows");
        let evs = events(&steps);
        let trace = run(&bundle, &evs);
        check_promises(&bundle, &trace);
        // The same events replayed give the same actions.
        let again = run(&bundle, &evs);
        prop_assert_eq!(trace, again);
    }

    #[test]
    fn promises_hold_on_the_funnel_flows(steps in proptest::collection::vec(step(), 1..60)) {
        let bundle = bundle_of("bench/funnel");
        let trace = run(&bundle, &events(&steps));
        check_promises(&bundle, &trace);
    }
}

/// The promises above are not vacuous: a fixed stream that gets a marketing send, then
/// STOP, then more events, is checked the same way and does contain the sends.
#[test]
fn the_promises_are_checked_on_real_sends() {
    let bundle = bundle_of("bench/funnel");
    let steps = vec![
        Step::Consent(0, true),
        Step::Message(0, "hi"),
        Step::Event(0, "cart.abandoned"),
        Step::Wait(3700),
        Step::Tick,
        Step::Message(0, "STOP"),
        Step::Event(0, "cart.abandoned"),
        Step::Wait(90_000),
        Step::Tick,
    ];
    let trace = run(&bundle, &events(&steps));
    let all: Vec<&Action> = trace.iter().flat_map(|(_, a)| a).collect();
    assert!(
        all.iter()
            .any(|a| is_flow_send(a) && a.flow.as_deref() == Some("cart_recovery")),
        "the cart reminder went out: {all:#?}"
    );
    assert!(all.iter().any(|a| a.policy == Some("opt_out_confirm")));
    check_promises(&bundle, &trace);
}

/// A store as a durable host keeps it: what `take_changes` gave, applied in order.
#[derive(Default, Clone)]
struct SimStore {
    contacts: HashMap<String, String>,
    timers: std::collections::BTreeMap<u64, String>,
    seen: Vec<(u64, u32, i64)>,
    global: Option<String>,
}

impl SimStore {
    fn commit(&mut self, c: rapport_engine::Changes) {
        self.contacts.extend(c.contacts);
        for t in c.timers {
            match t.state {
                Some(s) => self.timers.insert(t.key, s),
                None => self.timers.remove(&t.key),
            };
        }
        self.seen.extend(c.seen);
        self.global = Some(c.global);
    }
}

/// A durable engine as a host runs it: contacts loaded from the store on demand, the
/// changes committed after every batch, every contact evicted after each commit.
fn durable_engine(bundle: &Bundle, store: &std::sync::Arc<std::sync::Mutex<SimStore>>) -> Engine {
    let mut engine = Engine::new(bundle.clone());
    engine.track_changes();
    let snapshot = store.lock().map(|s| s.clone()).unwrap_or_default();
    if let Some(g) = &snapshot.global {
        engine.restore_global(g).expect("same bundle");
    }
    for t in snapshot.timers.values() {
        engine.restore_timer(t).expect("timer");
    }
    for (a, b, at) in &snapshot.seen {
        engine.restore_seen(*a, *b, *at);
    }
    let from = store.clone();
    engine.set_loader(Box::new(move |id| {
        let s = from.lock().map_err(|e| e.to_string())?;
        Ok(match s.contacts.get(id) {
            Some(json) => rapport_engine::Loaded::Saved(json.clone()),
            None => rapport_engine::Loaded::New,
        })
    }));
    engine
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Stopping after any batch and starting a new engine from the store gives the same
    /// actions as never stopping (state, timers and event ids all survive), and the
    /// durable engine never loads a contact wrongly.
    #[test]
    fn a_restarted_engine_carries_on_exactly(
        steps in proptest::collection::vec(step(), 1..60),
        batch in 1usize..6,
        restarts in proptest::collection::vec(any::<bool>(), 12),
    ) {
        let bundle = bundle_of("flows");
        let evs = events(&steps);
        let expected = run(&bundle, &evs);
        let store = std::sync::Arc::new(std::sync::Mutex::new(SimStore::default()));
        let mut engine = durable_engine(&bundle, &store);
        let mut got = Vec::new();
        for (i, chunk) in evs.chunks(batch).enumerate() {
            for e in chunk {
                got.push((e.clone(), engine.step(e).actions));
            }
            prop_assert_eq!(engine.take_load_error(), None);
            let changes = engine.take_changes().expect("journal");
            store.lock().expect("store").commit(changes);
            engine.evict(0);
            if restarts.get(i % 12).copied().unwrap_or(false) {
                engine = durable_engine(&bundle, &store);
            }
        }
        prop_assert_eq!(expected, got);
    }
}

/// A stored contact that names a flow or state this bundle lacks is a load error, not a
/// panic and not a silent fresh start.
#[test]
fn a_stored_contact_from_another_bundle_is_an_error() {
    let bundle = bundle_of("flows");
    let store = std::sync::Arc::new(std::sync::Mutex::new(SimStore::default()));
    if let Ok(mut s) = store.lock() {
        s.contacts.insert(
            "c0".into(),
            r#"{"profile":[],"last_inbound":[],"latest_channel":null,"last_reply":null,"consent":[],"opted_out":false,"ambiguous_pending":false,"clarify_sent":false,"handoff":null,"runs":[{"id":1,"flow":999,"state":0,"channel":"instagram","started":0,"event":[],"slots":[],"last_send":null,"last_activity":0,"disclosed":false,"footered":false,"retries_left":0,"comment":null,"private_reply_used":false,"variant":null,"reached_handoff":false,"error":false,"state_timers":[],"expire_timer":null}],"last_end":[],"ever_ran":[],"sends":[],"goals":[],"last_sender":null}"#.into(),
        );
        s.contacts.insert("c1".into(), "{not json".into());
    }
    let mut engine = durable_engine(&bundle, &store);
    let evs = events(&[Step::Message(0, "hi")]);
    engine.step(&evs[0]);
    let e = engine.take_load_error().expect("a load error");
    assert!(e.contains("c0") && e.contains("flow #999"), "{e}");
    let evs = events(&[Step::Wait(1), Step::Message(1, "hi")]);
    engine.step(&evs[0]);
    let e = engine.take_load_error().expect("a load error");
    assert!(e.contains("c1") && e.contains("unreadable"), "{e}");
}
