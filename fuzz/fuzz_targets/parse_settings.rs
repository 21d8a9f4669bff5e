//! Any UTF-8 text as rapport.yaml: reading it must not panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(source) = std::str::from_utf8(data) {
        let parsed = rapport_syntax::parse_settings(source);
        for d in &parsed.diagnostics {
            for l in &d.labels {
                assert!(l.span.end <= source.len());
                assert!(source.is_char_boundary(l.span.start) && source.is_char_boundary(l.span.end));
            }
        }
    }
});
