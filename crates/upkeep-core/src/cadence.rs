//! When the next `/metrics` scrape is due, from the pace of the last ones,
//! so that the services' usage can be read just before it arrives instead
//! of while it waits (docs/metrics.md, "When usage is read").
//!
//! Prometheus scrapes a target at a fixed interval, each target at its own
//! fixed offset within it; an HA pair of Prometheus servers (or a server
//! and an agent) scrapes at the same interval from two offsets. So the gaps
//! between scrapes repeat: every gap is the one before it (one scraper),
//! or the one `k` gaps before it (`k` scrapers at one interval, whatever
//! their offsets). When the last gaps repeat with some `k` up to
//! [`SCRAPERS`], the next gap is predicted to be the one `k` back. A read
//! made [`LEAD`] before that moment is younger than the age a scrape
//! accepts (the collector's sharing window, larger than [`LEAD`]) when the
//! scrape comes on time; a scrape that comes too early or too late reads
//! afresh, as without a prediction. Irregular scrapes (an operator's
//! `curl`) mostly predict nothing; gaps at random repeat within the
//! tolerance now and then (about two times in five for gaps of 300-700
//! ms), and such a read ahead serves the next scrape only if it happens to
//! come on time. Each arrival plans at most one read: at most one read
//! ahead per scrape.
//!
//! Pure: time comes in as an argument.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How long before an expected scrape its usage is read: enough for a read
/// of hundreds of services on a busy machine, and well inside the window
/// in which a scrape accepts an earlier read.
pub const LEAD: Duration = Duration::from_millis(100);

/// The longest pace read ahead for (Prometheus intervals are seconds to
/// a few minutes).
pub const MAX_PACE: Duration = Duration::from_secs(600);

/// The most scrapers at one interval whose interleaved scrapes are
/// followed (the gaps repeat every `SCRAPERS` gaps at most).
pub const SCRAPERS: usize = 4;

/// Two gaps agree when they differ by at most this fraction (1/`AGREE`) of
/// the longer one: far more than Prometheus's own jitter (its interval is
/// a timer), and room for a client that sleeps after each response on a
/// busy machine (tens of ms late at a pace of a few hundred ms).
const AGREE: u32 = 8;

/// The pace of the scrapes seen so far.
#[derive(Debug, Clone)]
pub struct Cadence {
    /// Arrivals closer than this to the last one are the same scrape
    /// (they share its read) and do not count as a gap.
    same_within: Duration,
    /// The last arrival counted.
    last: Option<Instant>,
    /// The gaps between the last arrivals counted, oldest first (at most
    /// `2 × SCRAPERS`: a repeat of `k` gaps is seen in `2k`).
    gaps: VecDeque<Duration>,
}

impl Cadence {
    /// A cadence in which arrivals within `same_within` of the last one
    /// are one scrape. `same_within` must be longer than [`LEAD`] (else a
    /// read ahead would be too old for the scrape it was made for).
    pub fn new(same_within: Duration) -> Self {
        Cadence {
            same_within,
            last: None,
            gaps: VecDeque::with_capacity(2 * SCRAPERS),
        }
    }

    /// A scrape arrived at `now`. Returns when to read ahead of the next
    /// one: `Some` once the last gaps repeat (see the module's text) and
    /// the gap predicted is no longer than [`MAX_PACE`]; `None` otherwise
    /// (also for an arrival that is part of the last scrape).
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
        if self.gaps.len() == 2 * SCRAPERS {
            self.gaps.pop_front();
        }
        self.gaps.push_back(gap);
        let next = next_gap(&self.gaps)?;
        if next > MAX_PACE || next <= LEAD {
            return None;
        }
        Some(now + (next - LEAD))
    }
}

/// The gap expected next, if the last `k` gaps repeat the `k` before them
/// for some `k` in `1..=SCRAPERS` (each pair agreeing): the gap `k` back.
/// Of several such `k`, the one that fits all the gaps kept best (the
/// largest difference between a gap and the one `k` before it, over every
/// such pair kept; the fewest scrapers on a tie): one scraper's gaps also
/// repeat every 2, a pair whose gaps merely alternate closely (offsets
/// near half the interval) repeats far better every 2 than every 1, and
/// three scrapers whose gaps run 4, 4, 7 s repeat every 1 only where the
/// two 4 s gaps meet.
fn next_gap(gaps: &VecDeque<Duration>) -> Option<Duration> {
    let n = gaps.len();
    let mut best: Option<(Duration, Duration)> = None;
    for k in 1..=SCRAPERS {
        if n < 2 * k {
            break;
        }
        let repeats = (1..=k).all(|i| agree(gaps[n - i], gaps[n - i - k]));
        if !repeats {
            continue;
        }
        let fit = (k..n)
            .map(|i| gaps[i].abs_diff(gaps[i - k]))
            .max()
            .unwrap_or_default();
        if best.is_none_or(|(least, _)| fit < least) {
            best = Some((fit, gaps[n - k]));
        }
    }
    best.map(|(_, next)| next)
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
    fn gaps_agree_within_an_eighth_of_the_longer() {
        assert!(agree(ms(320), ms(280)));
        assert!(!agree(ms(321), ms(280)));
        assert!(agree(ms(15_000), ms(15_000)));
    }

    /// Feeds arrivals at `at` (ms after `t0`) and returns the last answer.
    fn feed(c: &mut Cadence, t0: Instant, at: &[u64]) -> Option<Instant> {
        at.iter().map(|&a| c.scraped(t0 + ms(a))).last().flatten()
    }

    #[test]
    fn two_scrapers_at_one_interval_are_followed() {
        // An HA pair of Prometheus servers, every 15 s, 4 s apart.
        let t0 = Instant::now();
        let mut c = Cadence::new(SAME);
        assert_eq!(feed(&mut c, t0, &[0, 4_000, 15_000, 19_000]), None);
        // Gaps 4, 11, 4, 11: the next is 4 s after this one.
        assert_eq!(c.scraped(t0 + ms(30_000)), Some(t0 + ms(34_000) - LEAD));
        assert_eq!(c.scraped(t0 + ms(34_000)), Some(t0 + ms(45_000) - LEAD));
        assert_eq!(c.scraped(t0 + ms(45_000)), Some(t0 + ms(49_000) - LEAD));
    }

    #[test]
    fn two_scrapers_nearly_half_an_interval_apart_are_not_taken_for_one() {
        // Gaps 7.4 s and 7.6 s agree as one pace would (within 1/8), but
        // repeat exactly every two gaps: the pair is what is followed.
        let t0 = Instant::now();
        let mut c = Cadence::new(SAME);
        let at = feed(&mut c, t0, &[0, 7_400, 15_000, 22_400, 30_000]);
        assert_eq!(at, Some(t0 + ms(37_400) - LEAD));
        assert_eq!(c.scraped(t0 + ms(37_400)), Some(t0 + ms(45_000) - LEAD));
    }

    #[test]
    fn three_scrapers_at_one_interval_are_followed() {
        let t0 = Instant::now();
        let mut c = Cadence::new(SAME);
        // Every 10 s at offsets 0, 2 and 7 s: gaps 2, 5, 3, 2, 5, 3.
        let at = feed(
            &mut c,
            t0,
            &[0, 2_000, 7_000, 10_000, 12_000, 17_000, 20_000],
        );
        assert_eq!(at, Some(t0 + ms(22_000) - LEAD));
        assert_eq!(c.scraped(t0 + ms(22_000)), Some(t0 + ms(27_000) - LEAD));
    }

    #[test]
    fn three_scrapers_with_two_equal_gaps_are_not_taken_for_one() {
        // Every 15 s at offsets 0, 4 and 8 s: gaps 4, 4, 7. Where two 4 s
        // gaps meet they repeat every 1, but over what is kept only every 3
        // fits: after 4, 4 comes 7.
        let t0 = Instant::now();
        let mut c = Cadence::new(SAME);
        let at = feed(
            &mut c,
            t0,
            &[
                0, 4_000, 8_000, 15_000, 19_000, 23_000, 30_000, 34_000, 38_000,
            ],
        );
        assert_eq!(at, Some(t0 + ms(45_000) - LEAD));
        assert_eq!(c.scraped(t0 + ms(45_000)), Some(t0 + ms(49_000) - LEAD));
    }

    #[test]
    fn an_operators_curl_breaks_the_pace_for_a_while_only() {
        let t0 = Instant::now();
        let mut c = Cadence::new(SAME);
        assert!(feed(&mut c, t0, &[0, 15_000, 30_000]).is_some());
        // A curl at 37.2 s: nothing planned from it; the scrapes at 45 and
        // 60 s leave gaps 7.8, 7.8 (taken for a pace: a read at 52.7 s that
        // serves nobody), then 15, 15 pick the interval up again.
        assert_eq!(c.scraped(t0 + ms(37_200)), None);
        assert_eq!(c.scraped(t0 + ms(45_000)), Some(t0 + ms(52_800) - LEAD));
        assert_eq!(c.scraped(t0 + ms(60_000)), None);
        assert_eq!(c.scraped(t0 + ms(75_000)), Some(t0 + ms(90_000) - LEAD));
    }

    #[test]
    fn one_scraper_with_jitter_predicts_its_interval() {
        let t0 = Instant::now();
        let mut c = Cadence::new(SAME);
        let mut at = 0;
        for (i, jitter) in [0, 3, 0, 2, 1, 4, 0, 3, 2, 0, 1].into_iter().enumerate() {
            at += 1_000 + jitter;
            let next = c.scraped(t0 + ms(at));
            if i >= 2 {
                let next = next.unwrap_or_else(|| panic!("arrival {i} predicts nothing"));
                let gap = next + LEAD - (t0 + ms(at));
                assert!(gap >= ms(1_000) && gap <= ms(1_004), "arrival {i}: {gap:?}");
            }
        }
    }

    #[test]
    fn random_gaps_seldom_predict() {
        // Gaps drawn evenly from 300-700 ms (a fixed xorshift sequence):
        // the last gaps repeat within 1/8 by chance about two times in five.
        let t0 = Instant::now();
        let mut c = Cadence::new(SAME);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let (mut at, mut predicted) = (0, 0);
        for _ in 0..1_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            at += 300 + x % 400;
            predicted += usize::from(c.scraped(t0 + ms(at)).is_some());
        }
        assert!(
            predicted < 450,
            "{predicted} of 1000 random arrivals predicted"
        );
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
