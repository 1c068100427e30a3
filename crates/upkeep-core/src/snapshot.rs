//! The status snapshot: what `/health`, `/metrics` and `upkeep status` show.
//! The executor writes it; the HTTP server only reads it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::SystemTime;

/// Upper bounds (seconds) of the probe duration histogram buckets.
pub const PROBE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 15.0,
];

/// A fixed-bucket histogram of durations in seconds.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Histogram {
    /// Count per bucket of [`PROBE_BUCKETS`] (not cumulative).
    pub counts: [u64; PROBE_BUCKETS.len()],
    /// Observations above the last bound.
    pub overflow: u64,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&mut self, seconds: f64) {
        self.sum += seconds;
        self.count += 1;
        match PROBE_BUCKETS.iter().position(|b| seconds <= *b) {
            Some(i) => self.counts[i] += 1,
            None => self.overflow += 1,
        }
    }
}

/// The last exit of a service, as `/health` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastExit {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal name, if killed by one.
    pub signal: Option<String>,
    /// Why, in the kubelet's words: `Completed` (exit 0), `Error`,
    /// `OOMKilled` (killed by the kernel for its memory limit), or `None`
    /// when unknown (a process adopted from an earlier upkeep).
    #[serde(default)]
    pub reason: Option<String>,
    /// When (RFC 3339).
    pub at: String,
}

/// One service in the snapshot. Holds nothing from the spec but its name and
/// source: argv and env carry secrets and never leave the executor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Service name.
    pub name: String,
    /// Config or manifest file.
    pub source: String,
    /// running | starting | backoff | stopping | stopped | failed
    pub state: String,
    /// Live process.
    pub pid: Option<u32>,
    /// Readiness passing (or no readiness probe) and started.
    pub ready: bool,
    /// Liveness passing (or none).
    pub live: bool,
    /// Starts after the first.
    pub restarts: u64,
    /// When the state last changed (RFC 3339).
    pub since: String,
    /// The last exit.
    pub last_exit: Option<LastExit>,
    /// Milliseconds until the next start while in backoff.
    pub next_start_in_ms: Option<u64>,
    /// Last notable event, in words.
    pub message: String,
    /// Internal: the wall-clock time of the next start (for `next_start_in_ms`).
    #[serde(skip)]
    pub next_start_at: Option<SystemTime>,
    /// Internal: the start time of the current process (metrics).
    #[serde(skip)]
    pub start_time: Option<SystemTime>,
    /// Internal: exits by reason label (metrics).
    #[serde(skip)]
    pub exits: BTreeMap<String, u64>,
    /// Internal: probe failures by probe (liveness/readiness/startup) (metrics).
    #[serde(skip)]
    pub probe_failures: BTreeMap<String, u64>,
    /// Internal: probe durations by probe (metrics).
    #[serde(skip)]
    pub probe_durations: BTreeMap<String, Histogram>,
    /// Internal: since when what the last process left behind resists
    /// SIGKILL (no new process starts meanwhile); `None` normally (metrics).
    #[serde(skip)]
    pub stuck_since: Option<SystemTime>,
    /// Internal: the cgroup of the current process generation, relative to
    /// the cgroup2 root (usage, `describe`).
    #[serde(skip)]
    pub cgroup: Option<String>,
    /// Internal: the kubelet's labels for a static pod's container; `None`
    /// for a host service (metrics).
    #[serde(skip)]
    pub pod_labels: Option<crate::usage::PodLabels>,
}

impl ServiceStatus {
    /// A fresh entry for a service that has not started yet.
    pub fn new(name: &str, source: &str, now: SystemTime) -> Self {
        ServiceStatus {
            name: name.into(),
            source: source.into(),
            state: "stopped".into(),
            pid: None,
            ready: false,
            live: true,
            restarts: 0,
            since: rfc3339(now),
            last_exit: None,
            next_start_in_ms: None,
            message: String::new(),
            next_start_at: None,
            stuck_since: None,
            cgroup: None,
            pod_labels: None,
            start_time: None,
            exits: BTreeMap::new(),
            probe_failures: BTreeMap::new(),
            probe_durations: BTreeMap::new(),
        }
    }

    /// Healthy: running and ready.
    pub fn healthy(&self) -> bool {
        self.state == "running" && self.ready
    }
}

/// A manifest file that currently fails to parse or validate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestError {
    /// The file.
    pub file: String,
    /// Why.
    pub error: String,
}

/// A problem found on the host rather than in a manifest (for example the
/// kubelet also running upkeep's manifests); it does not change `status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostWarning {
    /// The file concerned.
    pub file: String,
    /// What is wrong and what to do, in words.
    pub warning: String,
}

/// Everything the status endpoints show.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Snapshot {
    /// Services by name.
    pub services: BTreeMap<String, ServiceStatus>,
    /// Current manifest problems.
    pub manifest_errors: Vec<ManifestError>,
    /// upkeep is starting: the first reconcile (adopting or starting every
    /// service) has not published yet, so the service list is incomplete.
    #[serde(skip)]
    pub starting: bool,
    /// Internal: bugs upkeep caught and survived, by kind (`scan_panic`,
    /// `actor_panic`, `reaper_stopped`) (metrics).
    #[serde(skip)]
    pub internal_errors: BTreeMap<String, u64>,
    /// Bytes of service output dropped to keep each log file within its
    /// bound, by service (written by the log rotation thread; for
    /// `upkeep_log_dropped_bytes_total`, not part of `/health`).
    #[serde(skip)]
    pub log_dropped_bytes: BTreeMap<String, u64>,
    /// Host problems found at start.
    #[serde(default)]
    pub warnings: Vec<HostWarning>,
    /// The cluster rollout (issue #16), written by the rollout coordinator;
    /// `None` without a `[cluster]` table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
}

/// This node's part in cluster rollouts (issue #16).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct RolloutStatus {
    /// This node's name (`node_name`).
    pub node: String,
    /// This node holds the cluster's rollout lock (a step is under way).
    pub lock_held: bool,
    /// How long the oldest pending change of this node has waited.
    pub wait_seconds: f64,
    /// Services with a planned change waiting for the lock, with why they wait.
    pub pending: BTreeMap<String, String>,
    /// Services whose change this node rolled back and halted, with why.
    pub halted: BTreeMap<String, String>,
}

impl Snapshot {
    /// True when every service is running and ready (never while upkeep
    /// is still taking over its services at start-up).
    pub fn healthy(&self) -> bool {
        !self.starting && self.services.values().all(ServiceStatus::healthy)
    }
}

/// Formats a wall-clock time as RFC 3339 UTC with millisecond precision
/// (`2026-11-23T20:11:55.123Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let millis = d.subsec_millis();
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_464_715_123);
        assert_eq!(rfc3339(t), "2026-11-23T20:11:55.123Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn histogram_buckets() {
        let mut h = Histogram::default();
        h.observe(0.0005);
        h.observe(0.3);
        h.observe(100.0);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[8], 1);
        assert_eq!(h.overflow, 1);
        assert_eq!(h.count, 3);
    }
}

/// The snapshot shared between the executor (writer) and the HTTP server (reader),
/// plus the supervision loop's heartbeat for `/livez` and the systemd watchdog.
#[derive(Debug, Default)]
pub struct Shared {
    /// Current status. Writers hold the lock only to copy values in.
    pub snapshot: std::sync::RwLock<Snapshot>,
    /// Unix time in milliseconds of the supervision loop's last tick.
    pub heartbeat_ms: std::sync::atomic::AtomicU64,
    /// Reads services' resource usage at scrape time (set once by the
    /// supervisor; unset in tests that build snapshots by hand).
    pub usage: std::sync::OnceLock<std::sync::Arc<dyn crate::usage::UsageReader>>,
    /// Records services' events (set once by the supervisor; unset in tests
    /// that build snapshots by hand).
    pub events: std::sync::OnceLock<std::sync::Arc<dyn crate::events::EventSink>>,
}
