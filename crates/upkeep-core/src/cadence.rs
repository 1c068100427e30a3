//! When the next `/metrics` scrape is due, from the pace of the last ones,
//! so that the services' usage can be read just before it arrives instead
//! of while it waits (docs/metrics.md, "When usage is read").
//!
//! Prometheus scrapes a target at a fixed interval (each target at its own
//! fixed offset within it), so two gaps in a row that agree predict the
//! next arrival well. A read made [`LEAD`] before that moment is younger
//! than the age a scrape accepts (the collector's sharing window, larger
//! than [`LEAD`]) when the scrape comes on time; a scrape that comes too
//! early or too late reads afresh, as without a prediction. Irregular
//! scrapes (an operator's `curl`, two scrapers at different offsets)
//! predict nothing, so a read ahead is never made for a scrape that is
//! not coming: at most one read per expected scrape, as before.
//!
//! Pure: time comes in as an argument.

use std::time::{Duration, Instant};

/// How long before an expected scrape its usage is read: enough for a read
/// of hundreds of services on a busy machine, and well inside the window
/// in which a scrape accepts an earlier read.
pub const LEAD: Duration = Duration::from_millis(100);

/// The longest pace read ahead for (Prometheus intervals are seconds to
/// a few minutes).
pub const MAX_PACE: Duration = Duration::from_secs(600);

/// Two gaps agree when they differ by at most this fraction (1/`AGREE`)
/// of the longer one.
const AGREE: u32 = 4;

/// The pace of the scrapes seen so far.
#[derive(Debug, Clone)]
pub struct Cadence {
    /// Arrivals closer than this to the last one are the same scrape
    /// (they share its read) and do not count as a gap.
    same_within: Duration,
    /// The last arrival counted.
    last: Option<Instant>,
    /// The gap before it.
    gap: Option<Duration>,
}

impl Cadence {
    /// A cadence in which arrivals within `same_within` of the last one
    /// are one scrape. `same_within` must be longer than [`LEAD`] (else a
    /// read ahead would be too old for the scrape it was made for).
    pub fn new(same_within: Duration) -> Self {
        Cadence {
            same_within,
            last: None,
            gap: None,
        }
    }

    /// A scrape arrived at `now`. Returns when to read ahead of the next
    /// one: `Some` once the last two gaps agree (within a quarter of the
    /// longer) and are no longer than [`MAX_PACE`], `None` otherwise (also
    /// for an arrival that is part of the last scrape).
    pub fn scraped(&mut self, now: Instant) -> Option<Instant> {
        let Some(last) = self.last else {
            self.last = Some(now);
            return None;
        };
        let gap = now.saturating_duration_since(last);
        if gap < self.same_within {
            return None;
        }
        self.last = Some(now);
        let steady = self.gap.is_some_and(|g| agree(g, gap));
        self.gap = Some(gap);
        if !steady || gap > MAX_PACE || gap <= LEAD {
            return None;
        }
        Some(now + (gap - LEAD))
    }
}

/// Whether two gaps are the same pace.
fn agree(a: Duration, b: Duration) -> bool {
    a.abs_diff(b) <= a.max(b) / AGREE
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAME: Duration = Duration::from_millis(250);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_steady_pace_predicts_the_next_scrape_less_the_lead() {
        let t0 = Instant::now();
        let mut c = Cadence::new(SAME);
        assert_eq!(c.scraped(t0), None, "one arrival is no pace");
        assert_eq!(c.scraped(t0 + ms(15_000)), None, "one gap is no pace");
        let at = t0 + ms(30_010);
        assert_eq!(c.scraped(at), Some(at + ms(15_010) - LEAD));
        let at = t0 + ms(45_000);
        assert_eq!(c.scraped(at), Some(at + ms(14_990) - LEAD));
    }

    #[test]
    fn irregular_arrivals_predict_nothing() {
        let t0 = Instant::now();
        let mut c = Cadence::new(SAME);
        for at in [0, 1_000, 5_000, 5_600, 9_000, 9_400, 20_000] {
            assert_eq!(c.scraped(t0 + ms(at)), None, "at {at} ms");
        }
    }

    #[test]
    fn arrivals_within_the_sharing_window_are_one_scrape() {
        let t0 = Instant::now();
        let mut c = Cadence::new(SAME);
        c.scraped(t0);
        c.scraped(t0 + ms(1_000));
        // A second scraper (or a retry) right after: not a gap of its own.
        assert_eq!(c.scraped(t0 + ms(1_040)), None);
        let at = t0 + ms(2_000);
        assert_eq!(c.scraped(at), Some(at + ms(1_000) - LEAD));
    }

    #[test]
    fn a_pace_change_is_followed_after_two_gaps() {
        let t0 = Instant::now();
        let mut c = Cadence::new(SAME);
        for at in [0, 1_000, 2_000] {
            c.scraped(t0 + ms(at));
        }
        // Now every 5 s: the first 5 s gap disagrees with 1 s.
        assert_eq!(c.scraped(t0 + ms(7_000)), None);
        let at = t0 + ms(12_000);
        assert_eq!(c.scraped(at), Some(at + ms(5_000) - LEAD));
    }

    #[test]
    fn gaps_agree_within_a_quarter_of_the_longer() {
        assert!(agree(ms(400), ms(300)));
        assert!(!agree(ms(401), ms(300)));
        assert!(agree(ms(15_000), ms(15_000)));
    }

    #[test]
    fn paces_beyond_the_bound_are_not_read_ahead() {
        let t0 = Instant::now();
        let mut c = Cadence::new(SAME);
        let gap = MAX_PACE + ms(1);
        c.scraped(t0);
        c.scraped(t0 + gap);
        assert_eq!(c.scraped(t0 + gap * 2), None);
    }

    #[test]
    fn a_clock_that_goes_nowhere_is_one_scrape() {
        let t0 = Instant::now();
        let mut c = Cadence::new(SAME);
        c.scraped(t0 + ms(5));
        assert_eq!(c.scraped(t0), None, "an earlier instant is gap 0");
    }
}
