//! Any bytes as the event stream of `rapport run`: each line is read as the hosts read it
//! (bytes that are not UTF-8 replaced), decoded and validated, held to the clock-jump
//! rule, and stepped through the engine on the funnel project's flows. Nothing may panic,
//! and an opted-out contact is never sent a flow's message.
#![no_main]

use std::collections::HashSet;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rapport_bundle::Bundle;
use rapport_engine::{decode, line_text, ActionKind, Engine};

/// The funnel project (bench/funnel), compiled once.
fn bundle() -> &'static Bundle {
    static BUNDLE: OnceLock<Bundle> = OnceLock::new();
    BUNDLE.get_or_init(|| {
        let settings = rapport_syntax::parse_settings(include_str!("../../bench/funnel/rapport.yaml"));
        let sources = [
            ("welcome.flow", include_str!("../../bench/funnel/welcome.flow")),
            ("cart_recovery.flow", include_str!("../../bench/funnel/cart_recovery.flow")),
        ];
        let parsed: Vec<_> = sources.iter().map(|(_, s)| rapport_syntax::parse(s)).collect();
        let files: Vec<rapport_check::SourceFile> = sources
            .iter()
            .zip(&parsed)
            .map(|((path, source), p)| rapport_check::SourceFile { path, source, ast: &p.file })
            .collect();
        let checked = rapport_check::check(&settings.settings, &files);
        rapport_check::compile(&settings.settings, &files, &checked)
    })
}

fuzz_target!(|data: &[u8]| {
    let bundle = bundle();
    let mut engine = Engine::new(bundle.clone());
    let mut clock = None;
    let mut opted_out: HashSet<String> = HashSet::new();
    for raw in data.split(|b| *b == b'\n') {
        let text = line_text(raw);
        let Ok(event) = decode(&text, &bundle.settings) else { continue };
        // The file host's rule, from a fixed start so the run is reproducible.
        if rapport_host::check_clock_jump(event.at, clock, 1_764_000_000_000, 31 * 86_400_000).is_err() {
            continue;
        }
        let out = engine.step(&event);
        clock = Some(clock.map_or(event.at, |c: i64| c.max(event.at)));
        for a in &out.actions {
            let Some(contact) = a.contact.as_deref() else { continue };
            match a.policy {
                Some("opt_out_confirm") => {
                    opted_out.insert(contact.to_string());
                }
                Some("resubscribe_confirm") => {
                    opted_out.remove(contact);
                }
                Some(_) => {}
                None if a.kind == ActionKind::Send => assert!(
                    !opted_out.contains(contact),
                    "a flow messaged {contact}, who opted out: {a:?}"
                ),
                None => {}
            }
        }
    }
});
