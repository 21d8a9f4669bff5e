//! Any bytes that are UTF-8 text: parsing must not panic, and every diagnostic must point
//! inside the source at character boundaries.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(source) = std::str::from_utf8(data) {
        let parsed = rapport_syntax::parse(source);
        for d in &parsed.diagnostics {
            for l in &d.labels {
                assert!(l.span.start <= l.span.end && l.span.end <= source.len());
                assert!(source.is_char_boundary(l.span.start) && source.is_char_boundary(l.span.end));
            }
        }
    }
});
