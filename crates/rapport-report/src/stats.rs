//! The statistics of the report: Wilson score intervals for a rate, and the exact chance
//! that one variant's rate beats another's under Beta(1 + x, 1 + n − x) posteriors.

/// The normal quantile of a two-sided 95% interval.
const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval (95%) of `x` successes in `n` trials; `None` when `n` is 0.
pub fn wilson(x: u64, n: u64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let (x, n) = (x.min(n) as f64, n as f64);
    let p = x / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

fn ln_beta(a: f64, b: f64) -> f64 {
    libm::lgamma(a) + libm::lgamma(b) - libm::lgamma(a + b)
}

/// P(p_b > p_a) where p_a ~ Beta(1 + xa, 1 + na − xa) and p_b ~ Beta(1 + xb, 1 + nb − xb):
/// the chance that variant b's conversion rate is above variant a's, given what was seen.
///
/// Exact, by the closed form for integer Beta parameters (a sum of `1 + xb` terms, each
/// computed in log space):
/// P = Σ_{i=0}^{αb−1} B(αa + i, βa + βb) / ((βb + i) · B(1 + i, βb) · B(αa, βa)).
/// When b has more successes than a, the complement of P(p_a > p_b) is summed instead, so
/// the number of terms is that of the smaller count.
pub fn chance_to_beat(xa: u64, na: u64, xb: u64, nb: u64) -> f64 {
    let (xa, xb) = (xa.min(na), xb.min(nb));
    if xb > xa {
        // P(b > a) = 1 − P(a > b): ties have probability zero.
        return 1.0 - chance_to_beat(xb, nb, xa, na);
    }
    let (aa, ba) = (1.0 + xa as f64, 1.0 + (na - xa) as f64);
    let bb = 1.0 + (nb - xb) as f64;
    let base = ln_beta(aa, ba);
    let mut total = 0.0;
    for i in 0..(xb + 1) {
        let i = i as f64;
        total += (ln_beta(aa + i, ba + bb) - (bb + i).ln() - ln_beta(1.0 + i, bb) - base).exp();
    }
    total.clamp(0.0, 1.0)
}

/// The value at quantile `q` (0–1) of sorted values, by the nearest rank; `None` when empty.
pub fn quantile(sorted: &[i64], q: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_the_published_example() {
        // 31 of 244 and 52 of 249: the example of the report's JSON form.
        let (lo, hi) = wilson(31, 244).expect("n > 0");
        assert!(
            (lo - 0.0910).abs() < 5e-4 && (hi - 0.1747).abs() < 5e-4,
            "{lo} {hi}"
        );
        let (lo, hi) = wilson(52, 249).expect("n > 0");
        assert!(
            (lo - 0.1630).abs() < 5e-4 && (hi - 0.2636).abs() < 5e-4,
            "{lo} {hi}"
        );
        assert_eq!(wilson(0, 0), None);
        let (lo, hi) = wilson(0, 10).expect("n > 0");
        assert!(lo == 0.0 && hi > 0.25 && hi < 0.35);
        let (lo, hi) = wilson(10, 10).expect("n > 0");
        assert!(
            (hi - 1.0).abs() < 1e-12 && lo > 0.65 && lo < 0.75,
            "{lo} {hi}"
        );
    }

    #[test]
    fn chance_to_beat_matches_the_published_example_and_is_symmetric() {
        let p = chance_to_beat(31, 244, 52, 249);
        assert!((p - 0.9923).abs() < 1e-4, "{p}");
        let q = chance_to_beat(52, 249, 31, 244);
        assert!((p + q - 1.0).abs() < 1e-9, "{p} {q}");
        // Equal evidence: a coin toss.
        assert!((chance_to_beat(10, 100, 10, 100) - 0.5).abs() < 1e-9);
        // Nothing seen: a coin toss too.
        assert!((chance_to_beat(0, 0, 0, 0) - 0.5).abs() < 1e-9);
    }

    #[test]
    fn chance_to_beat_stays_finite_for_large_counts() {
        let p = chance_to_beat(4_000, 100_000, 4_300, 100_000);
        assert!(p > 0.99 && p <= 1.0, "{p}");
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let v = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
        assert_eq!(quantile(&v, 0.5), Some(5));
        assert_eq!(quantile(&v, 0.9), Some(9));
        assert_eq!(quantile(&[7], 0.9), Some(7));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
