//! Probe result counting with the kubelet's thresholds (pure).

/// The outcome of one probe attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// Passed (HTTP 200-399, a foreign redirect, TCP connect, exit 0).
    Success,
    /// Failed (bad status, refused, timeout, non-zero exit), with why.
    Failure(String),
    /// Could not be run at all (e.g. unresolvable named port): counts neither way.
    Error(String),
}

/// Counts consecutive results and reports flips, as the kubelet's prober worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTracker {
    success_threshold: u32,
    failure_threshold: u32,
    /// The current stored result (`None` = unknown).
    current: Option<bool>,
    last: Option<bool>,
    run: u32,
}

impl ProbeTracker {
    /// A tracker with these thresholds and an initial result
    /// (liveness: `Some(true)`, readiness: `Some(false)`, startup: `None`).
    pub fn new(success_threshold: u32, failure_threshold: u32, initial: Option<bool>) -> Self {
        ProbeTracker {
            success_threshold: success_threshold.max(1),
            failure_threshold: failure_threshold.max(1),
            current: initial,
            last: None,
            run: 0,
        }
    }

    /// The stored result.
    pub fn current(&self) -> Option<bool> {
        self.current
    }

    /// Records one attempt. Returns `Some(new)` when the stored result flips.
    pub fn record(&mut self, result: &ProbeResult) -> Option<bool> {
        let ok = match result {
            ProbeResult::Success => true,
            ProbeResult::Failure(_) => false,
            ProbeResult::Error(_) => return None,
        };
        if self.last == Some(ok) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(ok);
            self.run = 1;
        }
        let threshold = if ok {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if self.run >= threshold && self.current != Some(ok) {
            self.current = Some(ok);
            return Some(ok);
        }
        None
    }

    /// Forgets the run (after a kill, for the next process).
    pub fn reset(&mut self, initial: Option<bool>) {
        self.current = initial;
        self.last = None;
        self.run = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn liveness_flips_after_threshold() {
        let mut t = ProbeTracker::new(1, 3, Some(true));
        let f = ProbeResult::Failure("x".into());
        assert_eq!(t.record(&f), None);
        assert_eq!(t.record(&f), None);
        assert_eq!(t.record(&f), Some(false));
        assert_eq!(t.record(&f), None);
        assert_eq!(t.record(&ProbeResult::Success), Some(true));
    }

    #[test]
    fn errors_count_neither_way() {
        let mut t = ProbeTracker::new(1, 2, Some(true));
        let f = ProbeResult::Failure("x".into());
        assert_eq!(t.record(&f), None);
        assert_eq!(t.record(&ProbeResult::Error("e".into())), None);
        assert_eq!(t.record(&f), Some(false));
    }

    #[test]
    fn readiness_needs_success_threshold() {
        let mut t = ProbeTracker::new(2, 3, Some(false));
        assert_eq!(t.record(&ProbeResult::Success), None);
        assert_eq!(t.record(&ProbeResult::Success), Some(true));
        let mut s = ProbeTracker::new(1, 3, None);
        assert_eq!(s.record(&ProbeResult::Success), Some(true));
    }
}
