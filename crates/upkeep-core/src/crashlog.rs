//! upkeep's own log lines about a service's exits and restarts, rate-limited
//! (design.md section 6, peers #9, issue #13) so that a crash loop of any
//! number of services never floods the journal:
//!
//! - the crash-loop line `"restarted 37 times in 10m, last exit code 1"`, at
//!   most once per `min_interval` per service ([`CrashLog::on_restart`]);
//! - the exit line (`"exit code 1"`, `"stopped (killed by SIGTERM)"`), at most
//!   once per `min_interval` per service, the next one carrying the count of
//!   the exits not logged in between ([`CrashLog::on_exit`]).
//!
//! `min_interval` is the *restart log period*: 60 s in the daemon
//! ([`DEFAULT_MIN_INTERVAL`]), so a crash-looping service costs at most two
//! lines a minute.
//!
//! Pure: time comes in as an argument; the caller logs the returned line
//! (prefixed with the service name) and owns one [`CrashLog`] per service.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::exit::ExitStatus;

/// Default counting window: 10 minutes (the kubelet's backoff reset).
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(600);
/// Default minimum time between two lines: 60 seconds.
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(60);
/// Restarts remembered at most; beyond this the line says `"N+"`. Bounds the
/// memory of a service that restarts with no delay at all.
pub const MAX_TRACKED: usize = 4096;

/// Counts restarts in a sliding window and decides when to say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrashLog {
    window: Duration,
    min_interval: Duration,
    /// Restart times inside the window, oldest first, at most [`MAX_TRACKED`].
    recent: VecDeque<Instant>,
    /// Some restarts were forgotten because of [`MAX_TRACKED`].
    overflowed: bool,
    /// When the last line was returned.
    last_line: Option<Instant>,
    /// When the last exit line was returned.
    last_exit_line: Option<Instant>,
    /// Exits not logged since then.
    exits_unlogged: u64,
    /// Whether one of them was a failure.
    unlogged_failure: bool,
}

/// An exit line to log, with its level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitLine {
    /// Log at warning level (a failure is in it), else info.
    pub warn: bool,
    /// The line, without the service name.
    pub text: String,
}

impl Default for CrashLog {
    /// [`DEFAULT_WINDOW`] and [`DEFAULT_MIN_INTERVAL`].
    fn default() -> Self {
        CrashLog::new(DEFAULT_WINDOW, DEFAULT_MIN_INTERVAL)
    }
}

impl CrashLog {
    /// Counts restarts over `window` and returns at most one line per `min_interval`.
    pub fn new(window: Duration, min_interval: Duration) -> Self {
        CrashLog {
            window,
            min_interval,
            recent: VecDeque::new(),
            overflowed: false,
            last_line: None,
            last_exit_line: None,
            exits_unlogged: 0,
            unlogged_failure: false,
        }
    }

    /// Records a restart at `now` after `last_exit`. Returns the line to log,
    /// unless one was returned less than `min_interval` ago. The line has no
    /// service name; the caller adds it: `"etcd restarted 37 times in 10m, last exit code 1"`.
    pub fn on_restart(&mut self, now: Instant, last_exit: &ExitStatus) -> Option<String> {
        self.prune(now);
        if self.recent.len() >= MAX_TRACKED {
            self.recent.pop_front();
            self.overflowed = true;
        }
        self.recent.push_back(now);
        if let Some(last) = self.last_line {
            // A `now` earlier than the last line (a caller bug) also stays quiet.
            if last
                .checked_add(self.min_interval)
                .is_none_or(|next| now < next)
            {
                return None;
            }
        }
        self.last_line = Some(now);
        let n = self.recent.len();
        let count = if self.overflowed {
            format!("{n}+ times")
        } else if n == 1 {
            "1 time".into()
        } else {
            format!("{n} times")
        };
        Some(format!(
            "restarted {count} in {}, last {last_exit}",
            human_duration(self.window)
        ))
    }

    /// Records an exit at `now`; `requested` when upkeep stopped it. Returns
    /// the line to log, at most one per `min_interval`; a line after a quiet
    /// spell says how many exits it did not log (`"exit code 1; 312 more exits
    /// in the last 1m not logged"`). Any failure among them makes it a warning.
    pub fn on_exit(
        &mut self,
        now: Instant,
        status: &ExitStatus,
        requested: bool,
    ) -> Option<ExitLine> {
        let (failure, mut text) = match status {
            _ if requested => (false, format!("stopped ({status})")),
            ExitStatus::Exited(0) => (false, "exited with code 0".to_string()),
            ExitStatus::Unknown => (false, "adopted process exited (status unknown)".to_string()),
            _ => (true, status.to_string()),
        };
        if let Some(last) = self.last_exit_line {
            if last
                .checked_add(self.min_interval)
                .is_none_or(|next| now < next)
            {
                self.exits_unlogged += 1;
                self.unlogged_failure |= failure;
                return None;
            }
            if self.exits_unlogged > 0 {
                let n = self.exits_unlogged;
                let exits = if n == 1 { "exit" } else { "exits" };
                text.push_str(&format!(
                    "; {n} more {exits} in the last {} not logged",
                    human_duration(now.saturating_duration_since(last))
                ));
            }
        }
        let warn = failure || self.unlogged_failure;
        self.last_exit_line = Some(now);
        self.exits_unlogged = 0;
        self.unlogged_failure = false;
        Some(ExitLine { warn, text })
    }

    /// Restarts recorded within the window ending at `now` (capped at [`MAX_TRACKED`]).
    pub fn count(&self, now: Instant) -> usize {
        self.recent.iter().filter(|t| self.inside(**t, now)).count()
    }

    fn inside(&self, t: Instant, now: Instant) -> bool {
        now.saturating_duration_since(t) < self.window
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&t) = self.recent.front() {
            if self.inside(t, now) {
                break;
            }
            self.recent.pop_front();
        }
        if self.recent.is_empty() {
            self.overflowed = false;
        }
    }
}

/// Short human form of a duration: `"10m"`, `"1h"`, `"90s"` → `"1m30s"`,
/// `"1.5s"`, `"250ms"`. Sub-second parts are shown to 0.1 s under a minute
/// and dropped above it.
pub(crate) fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    if secs < 60 {
        if nanos == 0 {
            return format!("{secs}s");
        }
        let tenths = (u64::from(nanos) / 100_000_000).min(9);
        return if tenths == 0 {
            format!("{secs}s")
        } else {
            format!("{secs}.{tenths}s")
        };
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE1: ExitStatus = ExitStatus::Exited(1);

    fn at(base: Instant, secs: u64) -> Instant {
        base + Duration::from_secs(secs)
    }

    #[test]
    fn first_restart_is_logged_then_quiet_for_a_minute() {
        let base = Instant::now();
        let mut log = CrashLog::default();
        assert_eq!(
            log.on_restart(base, &CODE1).as_deref(),
            Some("restarted 1 time in 10m, last exit code 1")
        );
        for s in [1, 2, 4, 8, 16, 32, 59] {
            assert_eq!(log.on_restart(at(base, s), &CODE1), None, "at {s}s");
        }
        assert_eq!(
            log.on_restart(at(base, 60), &CODE1).as_deref(),
            Some("restarted 9 times in 10m, last exit code 1")
        );
        assert_eq!(log.count(at(base, 60)), 9);
    }

    #[test]
    fn crash_loop_at_the_cap_logs_once_a_minute() {
        // The backoff cap is 60s: one restart a minute for an hour gives one
        // line per restart, and the count settles at the restarts in 10 minutes.
        let base = Instant::now();
        let mut log = CrashLog::default();
        let mut lines = Vec::new();
        for i in 0..60 {
            if let Some(l) = log.on_restart(at(base, i * 60), &CODE1) {
                lines.push(l);
            }
        }
        assert_eq!(lines.len(), 60);
        assert_eq!(lines[0], "restarted 1 time in 10m, last exit code 1");
        assert_eq!(lines[9], "restarted 10 times in 10m, last exit code 1");
        // t=600 drops t=0: a window is half-open.
        assert_eq!(lines[10], "restarted 10 times in 10m, last exit code 1");
        assert_eq!(lines[59], "restarted 10 times in 10m, last exit code 1");
    }

    #[test]
    fn fast_loop_is_rate_limited() {
        // A restart every second for 10 minutes: 10 lines, not 600.
        let base = Instant::now();
        let mut log = CrashLog::default();
        let lines: Vec<String> = (0..600)
            .filter_map(|i| log.on_restart(at(base, i), &CODE1))
            .collect();
        assert_eq!(lines.len(), 10);
        assert_eq!(lines[1], "restarted 61 times in 10m, last exit code 1");
        assert_eq!(lines[9], "restarted 541 times in 10m, last exit code 1");
    }

    #[test]
    fn signal_and_unknown_exits_read_well() {
        let base = Instant::now();
        let mut log = CrashLog::new(Duration::from_secs(3600), Duration::ZERO);
        let kill = ExitStatus::Signaled {
            signal: 9,
            core: false,
        };
        assert_eq!(
            log.on_restart(base, &kill).as_deref(),
            Some("restarted 1 time in 1h, last killed by SIGKILL")
        );
        let segv = ExitStatus::Signaled {
            signal: 11,
            core: true,
        };
        assert_eq!(
            log.on_restart(base, &segv).as_deref(),
            Some("restarted 2 times in 1h, last killed by SIGSEGV (core dumped)")
        );
        assert_eq!(
            log.on_restart(base, &ExitStatus::Unknown).as_deref(),
            Some("restarted 3 times in 1h, last exit status unknown (adopted process)")
        );
    }

    #[test]
    fn old_restarts_leave_the_window() {
        let base = Instant::now();
        let mut log = CrashLog::new(Duration::from_secs(600), Duration::from_secs(60));
        for i in 0..5 {
            log.on_restart(at(base, i), &CODE1);
        }
        assert_eq!(log.count(at(base, 10)), 5);
        assert_eq!(log.count(at(base, 603)), 1);
        assert_eq!(log.count(at(base, 604)), 0);
        assert_eq!(log.count(at(base, 3600)), 0);
        assert_eq!(
            log.on_restart(at(base, 3600), &CODE1).as_deref(),
            Some("restarted 1 time in 10m, last exit code 1")
        );
    }

    #[test]
    fn memory_is_bounded_and_says_so() {
        let base = Instant::now();
        let mut log = CrashLog::new(Duration::from_secs(600), Duration::from_secs(600));
        for i in 0..(MAX_TRACKED as u64 + 100) {
            log.on_restart(base + Duration::from_millis(i), &CODE1);
        }
        assert_eq!(log.recent.len(), MAX_TRACKED);
        let line = log.on_restart(at(base, 600), &CODE1);
        assert_eq!(
            line,
            Some(format!(
                "restarted {MAX_TRACKED}+ times in 10m, last exit code 1"
            ))
        );
        // Once everything has aged out, the count is exact again.
        assert_eq!(
            log.on_restart(at(base, 5000), &CODE1).as_deref(),
            Some("restarted 1 time in 10m, last exit code 1")
        );
        assert_eq!(log.count(at(base, 5000)), 1);
    }

    #[test]
    fn time_going_backwards_does_not_panic_or_spam() {
        let base = at(Instant::now(), 100);
        let mut log = CrashLog::default();
        assert!(log.on_restart(base, &CODE1).is_some());
        assert_eq!(log.on_restart(base - Duration::from_secs(50), &CODE1), None);
        assert_eq!(log.count(base), 2);
        let mut huge = CrashLog::new(Duration::MAX, Duration::MAX);
        assert!(huge.on_restart(base, &CODE1).is_some());
        assert_eq!(huge.on_restart(at(base, 1), &CODE1), None);
    }

    fn exit(log: &mut CrashLog, t: Instant, s: &ExitStatus) -> Option<(bool, String)> {
        log.on_exit(t, s, false).map(|l| (l.warn, l.text))
    }

    #[test]
    fn exit_lines_once_a_period_then_a_count() {
        let base = Instant::now();
        let mut log = CrashLog::default();
        assert_eq!(
            exit(&mut log, base, &CODE1),
            Some((true, "exit code 1".into()))
        );
        // A zero-backoff loop: 1000 exits a second stay quiet for a minute.
        for i in 1..60_000u64 {
            let t = base + Duration::from_millis(i);
            assert_eq!(exit(&mut log, t, &CODE1), None, "at {i}ms");
        }
        assert_eq!(
            exit(&mut log, at(base, 60), &ExitStatus::Exited(0)),
            Some((
                true,
                "exited with code 0; 59999 more exits in the last 1m not logged".into()
            )),
            "a warning: failures were among the unlogged exits"
        );
        // A quiet minute after: a plain line again, at info.
        assert_eq!(
            exit(&mut log, at(base, 130), &ExitStatus::Exited(0)),
            Some((false, "exited with code 0".into()))
        );
        assert_eq!(exit(&mut log, at(base, 131), &CODE1), None);
        assert_eq!(
            exit(&mut log, at(base, 200), &CODE1),
            Some((
                true,
                "exit code 1; 1 more exit in the last 1m10s not logged".into()
            ))
        );
    }

    #[test]
    fn exit_lines_for_stops_and_adopted_processes() {
        let base = Instant::now();
        let mut log = CrashLog::new(DEFAULT_WINDOW, Duration::ZERO);
        let term = ExitStatus::Signaled {
            signal: 15,
            core: false,
        };
        assert_eq!(
            log.on_exit(base, &term, true),
            Some(ExitLine {
                warn: false,
                text: "stopped (killed by SIGTERM)".into()
            })
        );
        assert_eq!(
            exit(&mut log, base, &term),
            Some((true, "killed by SIGTERM".into()))
        );
        assert_eq!(
            exit(&mut log, base, &ExitStatus::Unknown),
            Some((false, "adopted process exited (status unknown)".into()))
        );
        // Time going backwards stays quiet rather than panicking.
        let mut slow = CrashLog::default();
        assert!(exit(&mut slow, at(base, 100), &CODE1).is_some());
        assert_eq!(exit(&mut slow, at(base, 10), &CODE1), None);
    }

    #[test]
    fn human_durations() {
        let cases = [
            (Duration::ZERO, "0ms"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_millis(1050), "1s"),
            (Duration::from_secs(4), "4s"),
            (Duration::from_secs(60), "1m"),
            (Duration::from_secs(90), "1m30s"),
            (Duration::from_millis(66_600), "1m6s"),
            (Duration::from_secs(600), "10m"),
            (Duration::from_secs(3600), "1h"),
            (Duration::from_secs(3661), "1h1m1s"),
        ];
        for (d, want) in cases {
            assert_eq!(human_duration(d), want, "{d:?}");
        }
        assert!(!human_duration(Duration::MAX).is_empty());
    }
}
