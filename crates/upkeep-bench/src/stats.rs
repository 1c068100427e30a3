//! Percentiles and summaries of latency samples (pure).

use serde_json::{json, Value};

/// A summary of samples, all in the samples' unit (milliseconds in this crate).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Smallest sample.
    pub min: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 90th percentile (nearest rank).
    pub p90: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Largest sample.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Summary {
    /// The summary as a JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "n": self.n, "min": self.min, "p50": self.p50, "p90": self.p90,
            "p99": self.p99, "max": self.max, "mean": self.mean,
        })
    }
}

/// The `p`-th percentile (0..=100) of `sorted` (ascending) by the nearest-rank
/// method: the smallest sample such that at least `p`% of samples are ≤ it.
/// `None` for no samples or a `p` outside 0..=100.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let n = sorted.len();
    // Ranks are small (sample counts), so the float round trip is exact.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// Summarizes `values`, ignoring NaN and infinities. `None` when nothing is left.
pub fn summarize(values: &[f64]) -> Option<Summary> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    #[allow(clippy::cast_precision_loss)]
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    Some(Summary {
        n: v.len(),
        min: v[0],
        p50: percentile(&v, 50.0)?,
        p90: percentile(&v, 90.0)?,
        p99: percentile(&v, 99.0)?,
        max: v[v.len() - 1],
        mean,
    })
}

/// `peer / upkeep`, when both are meaningful (upkeep's value must be > 0).
pub fn ratio(peer: f64, upkeep: f64) -> Option<f64> {
    (upkeep > 0.0 && peer.is_finite() && upkeep.is_finite()).then(|| peer / upkeep)
}

/// Nanoseconds to milliseconds.
#[allow(clippy::cast_precision_loss)]
pub fn ns_to_ms(ns: i128) -> f64 {
    ns as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 90.0), Some(90.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        let small = [1.0, 2.0, 3.0];
        assert_eq!(percentile(&small, 50.0), Some(2.0));
        assert_eq!(percentile(&small, 99.0), Some(3.0));
        assert_eq!(percentile(&[7.0], 50.0), Some(7.0));
    }

    #[test]
    fn percentile_rejects_bad_input() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1.0], 101.0), None);
        assert_eq!(percentile(&[1.0], -1.0), None);
        assert_eq!(percentile(&[1.0], f64::NAN), None);
    }

    #[test]
    fn summary_sorts_and_skips_non_finite() {
        let s = summarize(&[5.0, f64::NAN, 1.0, 3.0, f64::INFINITY, 2.0, 4.0]).unwrap();
        assert_eq!(s.n, 5);
        assert_eq!(s.min, 1.0);
        assert_eq!(s.max, 5.0);
        assert_eq!(s.p50, 3.0);
        assert_eq!(s.p99, 5.0);
        assert!((s.mean - 3.0).abs() < 1e-12);
        assert!(summarize(&[]).is_none());
        assert!(summarize(&[f64::NAN]).is_none());
        assert_eq!(s.to_json()["p50"], 3.0);
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(10.0, 2.0), Some(5.0));
        assert_eq!(ratio(10.0, 0.0), None);
        assert_eq!(ratio(f64::NAN, 1.0), None);
        assert_eq!(ns_to_ms(1_500_000), 1.5);
        assert_eq!(ns_to_ms(-2_000_000), -2.0);
    }
}
