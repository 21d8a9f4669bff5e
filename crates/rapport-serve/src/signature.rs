//! Signatures: Meta's `X-Hub-Signature-256` on webhooks (HMAC-SHA256 of the raw body
//! with the app secret, checked on the bytes as received, never on a re-serialised
//! body) and Rapport's own `X-Rapport-Signature` on what it posts to the sinks.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC takes a key of any length.
    let mut m = match HmacSha256::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return [0; 32],
    };
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether `header` (`sha256=<hex>`) is the signature of `body` with `secret`. The
/// comparison takes the same time wherever the bytes differ.
pub fn meta_valid(secret: &str, body: &[u8], header: Option<&str>) -> bool {
    // A signature with an empty key proves nothing: anyone can make it.
    if secret.is_empty() {
        return false;
    }
    let Some(given) = header
        .and_then(|h| h.trim().strip_prefix("sha256="))
        .and_then(|h| unhex(&h.to_ascii_lowercase()))
    else {
        return false;
    };
    let expected = mac(secret.as_bytes(), &[body]);
    given.len() == expected.len() && bool::from(given.as_slice().ct_eq(&expected))
}

/// `sha256=<hex>`: what Meta sends for `body` (the mock platform and tests sign with it).
pub fn meta_header(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex(&mac(secret.as_bytes(), &[body])))
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, for a sink to check
/// (and to refuse replays older than it accepts).
pub fn rapport_header(secret: &str, unix: i64, body: &[u8]) -> String {
    let t = unix.to_string();
    let sig = mac(secret.as_bytes(), &[t.as_bytes(), b".", body]);
    format!("t={t},v1={}", hex(&sig))
}

/// Whether two tokens are equal, in time that does not depend on where they differ.
pub fn same_token(a: &str, b: &str) -> bool {
    // An empty token matches nothing (host.yaml refuses empty secrets; this is the
    // second lock).
    !b.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_signatures_are_checked_on_the_raw_bytes() {
        // From Meta's documentation of X-Hub-Signature-256: the same JSON with other
        // whitespace has another signature.
        let body = br#"{"object":"whatsapp_business_account","entry":[]}"#;
        let header = meta_header("s3cret", body);
        assert!(meta_valid("s3cret", body, Some(&header)));
        assert!(meta_valid(
            "s3cret",
            body,
            Some(&header.to_uppercase().replace("SHA256=", "sha256="))
        ));
        let spaced = br#"{"object": "whatsapp_business_account", "entry": []}"#;
        assert!(!meta_valid("s3cret", spaced, Some(&header)));
        assert!(!meta_valid("other", body, Some(&header)));
        assert!(!meta_valid("s3cret", body, None));
        assert!(!meta_valid("s3cret", body, Some("sha256=")));
        assert!(!meta_valid("s3cret", body, Some("sha1=abcd")));
        assert!(!meta_valid(
            "s3cret",
            body,
            Some(&header[..header.len() - 2])
        ));
    }

    #[test]
    fn the_sink_signature_covers_the_time_and_the_body() {
        // RFC 4231 test case 2 gives HMAC-SHA256("Jefe", "what do ya want for nothing?").
        assert_eq!(
            hex(&mac(b"Jefe", &[b"what do ya want ", b"for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let h = rapport_header("k", 1_700_000_000, b"{}");
        assert!(h.starts_with("t=1700000000,v1="));
        assert_ne!(h, rapport_header("k", 1_700_000_001, b"{}"));
    }
}
