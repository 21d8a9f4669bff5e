//! Deterministic choices: rollout buckets and A/B variants (Unleash-compatible
//! murmur3), and quiet hours in a contact's time zone.

use std::io::Cursor;

use crate::event::Millis;

/// murmur3_x86_32 of the UTF-8 bytes of `key`.
fn murmur(key: &str, seed: u32) -> u32 {
    // Reading from an in-memory cursor cannot fail.
    murmur3::murmur3_32(&mut Cursor::new(key.as_bytes()), seed).unwrap_or(0)
}

/// A contact's rollout bucket for a flow, 1–100: Unleash's normalized hash
/// of `"FLOW:CONTACT"` with seed 0.
pub fn bucket(group: &str, id: &str) -> u8 {
    // The modulus keeps the value under 100, so it fits.
    (murmur(&format!("{group}:{id}"), 0) % 100 + 1) as u8
}

/// Unleash's variant seed.
const VARIANT_SEED: u32 = 86_028_157;

/// The variant index (0-based) of a contact in a flow with `n` variants (`send one of`).
pub fn variant(flow: &str, contact: &str, n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    (murmur(&format!("{flow}:{contact}"), VARIANT_SEED) as usize) % n
}

/// A guard's metric for a version's stats, in hundredths of a percent, as the rollout
/// guards compute it; `None` when no run counted toward it yet (it crosses nothing then).
pub fn guard_value(metric: rapport_bundle::Metric, st: &crate::VersionStats) -> Option<f64> {
    use rapport_bundle::Metric;
    let rate = |n: u64, d: u64| (d > 0).then(|| n as f64 * 10_000.0 / d as f64);
    match metric {
        Metric::OptOutRate => rate(st.opted_out, st.finished),
        Metric::HandoffRate => rate(st.handoffs, st.finished),
        Metric::ErrorRate => rate(st.errors, st.finished),
        Metric::ConversionRate => rate(st.converted, st.converted + st.not_converted),
    }
}

/// Whether a guard's metric `value` crosses its threshold.
pub fn guard_crossed(guard: &rapport_bundle::Guard, value: f64) -> bool {
    use rapport_bundle::CompareOp;
    let t = f64::from(guard.threshold);
    match guard.op {
        CompareOp::Gt => value > t,
        CompareOp::Ge => value >= t,
        CompareOp::Lt => value < t,
        CompareOp::Le => value <= t,
        CompareOp::Eq => (value - t).abs() < f64::EPSILON,
        CompareOp::Ne => (value - t).abs() >= f64::EPSILON,
    }
}

/// When `now` falls inside quiet hours `[from, to)` (minutes after local midnight), the
/// instant they end; `None` outside them. Local time is in the first of `zones` that is a
/// known time zone (the contact's, then the project's), else UTC.
pub(crate) fn quiet_until(now: Millis, zones: &[&str], from: u16, to: u16) -> Option<Millis> {
    let tz = zones
        .iter()
        .find_map(|z| jiff::tz::TimeZone::get(z).ok())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let ts = jiff::Timestamp::from_millisecond(now).ok()?;
    let local = ts.to_zoned(tz.clone());
    let minute = (local.hour() as i32 * 60 + local.minute() as i32) as u16;
    let inside = if from <= to {
        minute >= from && minute < to
    } else {
        minute >= from || minute < to
    };
    if !inside {
        return None;
    }
    let date = if from > to && minute >= from {
        local.date().tomorrow().ok()?
    } else {
        local.date()
    };
    let end = date
        .at((to / 60) as i8, (to % 60) as i8, 0, 0)
        .to_zoned(tz)
        .ok()?;
    Some(end.timestamp().as_millisecond())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::parse_time;

    #[test]
    fn buckets_are_stable_and_in_range() {
        for i in 0..1000 {
            let b = bucket("cart_recovery", &format!("c{i}"));
            assert!((1..=100).contains(&b));
            assert_eq!(b, bucket("cart_recovery", &format!("c{i}")));
        }
    }

    #[test]
    fn quiet_hours_across_midnight_in_the_contacts_zone() {
        let at = |s: &str| parse_time(s).unwrap_or_default();
        // 22:30 in Bucharest (UTC+2 in November) is inside 21:00–08:00: deferred to 08:00.
        let until = quiet_until(
            at("2026-11-24T20:30:00Z"),
            &["Europe/Bucharest"],
            21 * 60,
            8 * 60,
        );
        assert_eq!(until, Some(at("2026-11-25T06:00:00Z")));
        // 07:00 local is inside too, until 08:00 the same day.
        let until = quiet_until(
            at("2026-11-25T05:00:00Z"),
            &["Europe/Bucharest"],
            21 * 60,
            8 * 60,
        );
        assert_eq!(until, Some(at("2026-11-25T06:00:00Z")));
        // A contact's unknown zone falls back to the project's.
        let until = quiet_until(
            at("2026-11-24T20:30:00Z"),
            &["Mars/Olympus", "Europe/Bucharest"],
            21 * 60,
            8 * 60,
        );
        assert_eq!(until, Some(at("2026-11-25T06:00:00Z")));
        // Noon is outside.
        assert_eq!(
            quiet_until(
                at("2026-11-25T10:00:00Z"),
                &["Europe/Bucharest"],
                21 * 60,
                8 * 60
            ),
            None
        );
    }
}
