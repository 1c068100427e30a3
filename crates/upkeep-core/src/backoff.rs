//! The restart delay as a pure function (design.md section 6).
//!
//! This module owns the arithmetic only: no clock, no RNG, no state. The
//! machine ([`crate::machine`]) decides *when* the failure count grows or
//! resets; the caller supplies the random jitter sample.
//!
//! The function is total: any [`BackoffSpec`] (even one that validation would
//! reject, such as a NaN factor) and any `failures` give a finite delay, with
//! no panic and no overflow.

use std::time::Duration;
use upkeep_spec::BackoffSpec;

/// Delay before the next start.
///
/// `failures` is the number of consecutive failed runs *before* this one
/// (0 after a healthy run or a reset). `jitter_sample` is a number in `[0, 1)`
/// from the caller's RNG (tests pass fixed values).
///
/// failures == 0 gives zero (the first restart after a healthy run is
/// immediate); then `initial`, `initial*factor`, ... capped at `max`, then
/// multiplied by `1 + jitter * jitter_sample`.
///
/// Out-of-range inputs are clamped rather than rejected, so the result is
/// always finite and monotone in `failures`:
/// - `factor` below 1 or NaN counts as 1 (no growth); +inf jumps to `max`;
/// - `jitter` and `jitter_sample` are clamped to `[0, 1]`, NaN counts as 0;
/// - `max < initial` means every non-zero delay is `max` (before jitter);
/// - a huge `failures` saturates at `max`; the jittered result saturates at
///   [`Duration::MAX`].
pub fn delay(spec: &BackoffSpec, failures: u32, jitter_sample: f64) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let capped = base(spec, failures);
    let extra_fraction = unit(spec.jitter) * unit(jitter_sample);
    if extra_fraction == 0.0 || capped.is_zero() {
        return capped;
    }
    // `capped` and the fraction are finite and non-negative, so the product is
    // too (at most 2^64 s, which `try_from_secs_f64` rejects: saturate).
    let extra =
        Duration::try_from_secs_f64(capped.as_secs_f64() * extra_fraction).unwrap_or(Duration::MAX);
    capped.saturating_add(extra)
}

/// `min(initial * factor^(failures-1), max)` for `failures >= 1`, exact at the ends:
/// the first delay is `initial` (or `max` if smaller) to the nanosecond, and
/// anything at or past the cap is `max` to the nanosecond.
fn base(spec: &BackoffSpec, failures: u32) -> Duration {
    let (initial, max) = (spec.initial, spec.max);
    if initial >= max {
        return max;
    }
    if failures <= 1 || initial.is_zero() {
        return initial;
    }
    // NaN fails the comparison and counts as 1; +inf grows straight to `max`.
    let factor = if spec.factor > 1.0 { spec.factor } else { 1.0 };
    // factor >= 1 and the exponent is >= 1, so `grown` is >= 1 or +inf, never NaN.
    let grown = factor.powf(f64::from(failures - 1));
    let secs = initial.as_secs_f64() * grown;
    if !secs.is_finite() || secs >= max.as_secs_f64() {
        return max;
    }
    // The float may round a hair below `initial`; the true value is >= initial.
    Duration::try_from_secs_f64(secs)
        .unwrap_or(max)
        .clamp(initial, max)
}

/// Clamps to `[0, 1]`; NaN becomes 0.
fn unit(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(initial: Duration, max: Duration, factor: f64, jitter: f64) -> BackoffSpec {
        BackoffSpec {
            initial,
            max,
            factor,
            reset_after: Duration::from_secs(600),
            jitter,
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn default_sequence_without_jitter() {
        let s = spec(secs(1), secs(60), 2.0, 0.1);
        let got: Vec<u64> = (0..10).map(|n| delay(&s, n, 0.0).as_secs()).collect();
        assert_eq!(got, vec![0, 1, 2, 4, 8, 16, 32, 60, 60, 60]);
    }

    #[test]
    fn kubelet_sequence() {
        let s = spec(secs(10), secs(300), 2.0, 0.0);
        let got: Vec<u64> = (0..9).map(|n| delay(&s, n, 0.9).as_secs()).collect();
        assert_eq!(got, vec![0, 10, 20, 40, 80, 160, 300, 300, 300]);
    }

    #[test]
    fn jitter_scales_the_capped_delay() {
        let s = spec(secs(1), secs(60), 2.0, 0.5);
        assert_eq!(delay(&s, 1, 0.5), Duration::from_millis(1250));
        assert_eq!(delay(&s, 20, 0.5), Duration::from_secs(75));
        // A sample of 1.0 (outside the documented range) is still bounded.
        assert_eq!(delay(&s, 20, 1.0), Duration::from_secs(90));
    }

    #[test]
    fn huge_failure_counts_saturate_at_max() {
        let s = spec(secs(1), secs(60), 2.0, 0.0);
        assert_eq!(delay(&s, u32::MAX, 0.0), secs(60));
        let s = spec(Duration::from_nanos(1), Duration::MAX, 10.0, 1.0);
        assert_eq!(delay(&s, u32::MAX, 0.0), Duration::MAX);
        assert_eq!(delay(&s, u32::MAX, 0.99), Duration::MAX);
    }

    #[test]
    fn degenerate_specs_do_not_panic() {
        // factor 1: constant delay.
        let s = spec(secs(3), secs(60), 1.0, 0.0);
        assert!((1..50).all(|n| delay(&s, n, 0.0) == secs(3)));
        // initial 0: always zero, even with an infinite factor.
        let s = spec(Duration::ZERO, secs(60), f64::INFINITY, 1.0);
        assert!((0..50).all(|n| delay(&s, n, 0.7).is_zero()));
        // max below initial: max.
        let s = spec(secs(10), secs(5), 2.0, 0.0);
        assert_eq!(delay(&s, 1, 0.0), secs(5));
        // NaN / negative / infinite inputs.
        for factor in [f64::NAN, -3.0, 0.5, f64::NEG_INFINITY] {
            let s = spec(secs(2), secs(60), factor, f64::NAN);
            assert_eq!(delay(&s, 7, f64::NAN), secs(2), "factor {factor}");
        }
        let s = spec(secs(2), secs(60), f64::INFINITY, -1.0);
        assert_eq!(delay(&s, 2, 0.5), secs(60));
        let s = spec(secs(2), secs(60), 2.0, f64::INFINITY);
        assert_eq!(delay(&s, 1, f64::INFINITY), secs(4));
        assert_eq!(delay(&s, 1, -5.0), secs(2));
    }

    fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (0u64..=120, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            (0u64..=u64::MAX, 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            Just(Duration::ZERO),
            Just(Duration::MAX),
        ]
    }

    fn any_spec() -> impl Strategy<Value = BackoffSpec> {
        (any_duration(), any_duration(), 1.0f64..=16.0, 0.0f64..=1.0)
            .prop_map(|(initial, max, factor, jitter)| spec(initial, max, factor, jitter))
    }

    proptest! {
        #[test]
        fn zero_failures_is_zero(s in any_spec(), sample in 0.0f64..1.0) {
            prop_assert_eq!(delay(&s, 0, sample), Duration::ZERO);
        }

        #[test]
        fn monotone_in_failures(s in any_spec(), a in any::<u32>(), b in any::<u32>(), sample in 0.0f64..1.0) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(delay(&s, lo, sample) <= delay(&s, hi, sample));
        }

        #[test]
        fn consecutive_failures_never_shrink(s in any_spec(), n in 0u32..200, sample in 0.0f64..1.0) {
            prop_assert!(delay(&s, n, sample) <= delay(&s, n + 1, sample));
        }

        #[test]
        fn bounded_by_max_with_jitter(s in any_spec(), n in any::<u32>(), sample in 0.0f64..1.0) {
            let d = delay(&s, n, sample);
            let bound = s.max.as_secs_f64() * (1.0 + s.jitter);
            // Relative slack for the f64 round trip.
            prop_assert!(d.as_secs_f64() <= bound * (1.0 + 1e-12) + 1e-9, "{:?} > {}", d, bound);
        }

        #[test]
        fn at_least_the_first_delay(s in any_spec(), n in 1u32..=u32::MAX, sample in 0.0f64..1.0) {
            prop_assert!(delay(&s, n, sample) >= s.initial.min(s.max));
        }

        #[test]
        fn without_jitter_never_above_max(s in any_spec(), n in any::<u32>()) {
            prop_assert!(delay(&s, n, 0.0) <= s.max);
        }

        #[test]
        fn arbitrary_floats_never_panic(
            initial in any_duration(), max in any_duration(),
            factor in any::<f64>(), jitter in any::<f64>(), sample in any::<f64>(), n in any::<u32>(),
        ) {
            let s = spec(initial, max, factor, jitter);
            let d = delay(&s, n, sample);
            if n == 0 { prop_assert_eq!(d, Duration::ZERO); } else { prop_assert!(d >= initial.min(max)); }
        }
    }
}
