//! `/metrics`: Prometheus collectors that build metric families at scrape
//! time, from the status snapshot ([`SnapshotCollector`]) and from
//! `/proc/self` ([`ProcessCollector`]). Names are a contract (design §8);
//! `docs/metrics.md` describes each one.
//!
//! Nothing here keeps state between scrapes: counters are the executor's
//! counters, copied out of the snapshot under its read lock.

use prometheus::core::{Collector, Desc};
use prometheus::proto::{
    Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType,
};
use prometheus::{Encoder, Registry, TextEncoder};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;
use upkeep_core::snapshot::{Histogram as ProbeHistogram, Shared, Snapshot, PROBE_BUCKETS};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The states a service can be in, for `upkeep_service_state`.
pub const STATES: [&str; 6] = [
    "running", "starting", "backoff", "stopping", "stopped", "failed",
];

/// A metric family's fixed metadata.
pub(crate) struct Def {
    pub(crate) name: &'static str,
    pub(crate) help: &'static str,
    pub(crate) kind: MetricType,
    pub(crate) labels: &'static [&'static str],
}

const SERVICE_UP: Def = Def {
    name: "upkeep_service_up",
    help: "1 if the service has a running process, else 0.",
    kind: MetricType::GAUGE,
    labels: &["service"],
};
const SERVICE_READY: Def = Def {
    name: "upkeep_service_ready",
    help: "1 if the service is ready (readiness probe passing, or none and started), else 0.",
    kind: MetricType::GAUGE,
    labels: &["service"],
};
const SERVICE_STATE: Def = Def {
    name: "upkeep_service_state",
    help: "1 for the state the service is in (running, starting, backoff, stopping, stopped, failed), 0 for the others.",
    kind: MetricType::GAUGE,
    labels: &["service", "state"],
};
const SERVICE_RESTARTS: Def = Def {
    name: "upkeep_service_restarts_total",
    help: "Starts of the service after its first start.",
    kind: MetricType::COUNTER,
    labels: &["service"],
};
const SERVICE_EXITS: Def = Def {
    name: "upkeep_service_exits_total",
    help: "Exits of the service's main process, by reason (exit code class or signal name).",
    kind: MetricType::COUNTER,
    labels: &["service", "reason"],
};
const SERVICE_START_TIME: Def = Def {
    name: "upkeep_service_start_time_seconds",
    help: "Unix time the service's current process started; absent while no process runs.",
    kind: MetricType::GAUGE,
    labels: &["service"],
};
const SERVICE_BACKOFF: Def = Def {
    name: "upkeep_service_backoff_seconds",
    help: "Seconds left before the service's next start while it waits in backoff, 0 if none.",
    kind: MetricType::GAUGE,
    labels: &["service"],
};
const PROBE_FAILURES: Def = Def {
    name: "upkeep_probe_failures_total",
    help: "Failed probe runs, by probe (liveness, readiness, startup).",
    kind: MetricType::COUNTER,
    labels: &["service", "probe"],
};
const PROBE_DURATION: Def = Def {
    name: "upkeep_probe_duration_seconds",
    help: "Duration of probe runs in seconds, by probe (liveness, readiness, startup).",
    kind: MetricType::HISTOGRAM,
    labels: &["service", "probe"],
};
const MANIFEST_ERRORS: Def = Def {
    name: "upkeep_manifest_errors",
    help: "Manifest files that currently fail to parse or validate (their last good version keeps running).",
    kind: MetricType::GAUGE,
    labels: &[],
};
const SERVICE_STUCK: Def = Def {
    name: "upkeep_service_stuck_seconds",
    help: "Seconds that processes left by the service's last process have resisted SIGKILL (no new process starts meanwhile); 0 normally.",
    kind: MetricType::GAUGE,
    labels: &["service"],
};
const INTERNAL_ERRORS: Def = Def {
    name: "upkeep_internal_errors_total",
    help: "Bugs upkeep caught and survived, by kind (scan_panic: a manifest scan failed and nothing was changed; actor_panic: a service's actor ended and was replaced; reaper_stopped: the reaping task ended and was restarted).",
    kind: MetricType::COUNTER,
    labels: &["kind"],
};
const LOG_DROPPED: Def = Def {
    name: "upkeep_log_dropped_bytes_total",
    help: "Bytes of the service's output dropped to keep its log files within their size bound (full disk, or written faster than rotation could keep).",
    kind: MetricType::COUNTER,
    labels: &["service"],
};
const ROLLOUT_PENDING: Def = Def {
    name: "upkeep_rollout_pending",
    help: "1 while a planned change of the service waits for the cluster's rollout lock or gate, else 0 (only with [cluster]).",
    kind: MetricType::GAUGE,
    labels: &["service"],
};
const ROLLOUT_HALTED: Def = Def {
    name: "upkeep_rollout_halted",
    help: "1 when this node rolled back a change of the service and halted its rollout, else 0 (only with [cluster]).",
    kind: MetricType::GAUGE,
    labels: &["service"],
};
const ROLLOUT_LOCK_HELD: Def = Def {
    name: "upkeep_rollout_lock_held",
    help: "1 while this node holds the cluster's rollout lock (a planned step is under way), else 0 (only with [cluster]).",
    kind: MetricType::GAUGE,
    labels: &[],
};
const ROLLOUT_WAIT: Def = Def {
    name: "upkeep_rollout_wait_seconds",
    help: "Seconds the oldest pending planned change of this node has waited, 0 if none (only with [cluster]).",
    kind: MetricType::GAUGE,
    labels: &[],
};
const BUILD_INFO: Def = Def {
    name: "upkeep_build_info",
    help: "Always 1; the version label is the running upkeep's version.",
    kind: MetricType::GAUGE,
    labels: &["version"],
};

const SNAPSHOT_DEFS: [&Def; 18] = [
    &ROLLOUT_PENDING,
    &ROLLOUT_HALTED,
    &ROLLOUT_LOCK_HELD,
    &ROLLOUT_WAIT,
    &SERVICE_STUCK,
    &INTERNAL_ERRORS,
    &SERVICE_UP,
    &SERVICE_READY,
    &SERVICE_STATE,
    &SERVICE_RESTARTS,
    &SERVICE_EXITS,
    &SERVICE_START_TIME,
    &SERVICE_BACKOFF,
    &PROBE_FAILURES,
    &PROBE_DURATION,
    &MANIFEST_ERRORS,
    &LOG_DROPPED,
    &BUILD_INFO,
];

const CPU_SECONDS: Def = Def {
    name: "process_cpu_seconds_total",
    help: "Total user and system CPU time spent by upkeep in seconds.",
    kind: MetricType::COUNTER,
    labels: &[],
};
const RESIDENT_MEMORY: Def = Def {
    name: "process_resident_memory_bytes",
    help: "Resident memory size of upkeep in bytes.",
    kind: MetricType::GAUGE,
    labels: &[],
};
const VIRTUAL_MEMORY: Def = Def {
    name: "process_virtual_memory_bytes",
    help: "Virtual memory size of upkeep in bytes.",
    kind: MetricType::GAUGE,
    labels: &[],
};
const OPEN_FDS: Def = Def {
    name: "process_open_fds",
    help: "Number of open file descriptors of upkeep.",
    kind: MetricType::GAUGE,
    labels: &[],
};
const MAX_FDS: Def = Def {
    name: "process_max_fds",
    help: "Maximum number of open file descriptors of upkeep (soft limit).",
    kind: MetricType::GAUGE,
    labels: &[],
};
const START_TIME: Def = Def {
    name: "process_start_time_seconds",
    help: "Start time of upkeep since unix epoch in seconds.",
    kind: MetricType::GAUGE,
    labels: &[],
};

const PROCESS_DEFS: [&Def; 6] = [
    &CPU_SECONDS,
    &RESIDENT_MEMORY,
    &VIRTUAL_MEMORY,
    &OPEN_FDS,
    &MAX_FDS,
    &START_TIME,
];

pub(crate) fn descs(defs: &[&Def]) -> Vec<Desc> {
    defs.iter()
        .filter_map(|d| {
            let labels = d.labels.iter().map(|l| (*l).to_string()).collect();
            match Desc::new(d.name.into(), d.help.into(), labels, HashMap::new()) {
                Ok(desc) => Some(desc),
                Err(e) => {
                    // Names are constants checked by tests; this cannot happen at run time.
                    tracing::error!(metric = d.name, "invalid metric descriptor: {e}");
                    None
                }
            }
        })
        .collect()
}

pub(crate) fn family(def: &Def, metrics: Vec<Metric>) -> MetricFamily {
    let mut mf = MetricFamily::default();
    mf.set_name(def.name.into());
    mf.set_help(def.help.into());
    mf.set_field_type(def.kind);
    mf.set_metric(metrics);
    mf
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(k, v)| {
            let mut lp = LabelPair::default();
            lp.set_name((*k).into());
            lp.set_value((*v).into());
            lp
        })
        .collect()
}

pub(crate) fn gauge(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut g = Gauge::default();
    g.set_value(value);
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_gauge(g);
    m
}

pub(crate) fn counter(pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut c = Counter::default();
    c.set_value(value);
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_counter(c);
    m
}

fn histogram(pairs: &[(&str, &str)], h: &ProbeHistogram) -> Metric {
    let mut cumulative = 0u64;
    let buckets: Vec<Bucket> = PROBE_BUCKETS
        .iter()
        .zip(h.counts.iter())
        .map(|(bound, n)| {
            cumulative = cumulative.saturating_add(*n);
            let mut b = Bucket::default();
            b.set_upper_bound(*bound);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    // The encoder writes the +Inf bucket from _count, which must be >= every
    // finite bucket (it is, unless the writer's counts disagree).
    let count = h.count.max(cumulative.saturating_add(h.overflow));
    let mut ph = Histogram::default();
    ph.set_bucket(buckets);
    ph.set_sample_count(count);
    ph.set_sample_sum(if h.sum.is_finite() { h.sum } else { 0.0 });
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    m.set_histogram(ph);
    m
}

pub(crate) fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn bool_value(b: bool) -> f64 {
    if b {
        1.0
    } else {
        0.0
    }
}

/// Builds the snapshot's metric families at `now` (pure: no clock, no I/O).
/// Families with no samples (e.g. no exits yet) are left out, as the text
/// format has no way to say "none".
#[allow(clippy::cast_precision_loss)] // counters as f64 are what the format carries
pub fn snapshot_families(snapshot: &Snapshot, version: &str, now: SystemTime) -> Vec<MetricFamily> {
    let (mut up, mut ready, mut state, mut restarts, mut exits) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut start, mut backoff, mut failures, mut durations) = (vec![], vec![], vec![], vec![]);
    let mut stuck = vec![];
    let mut dropped = vec![];
    let (mut rollout_pending, mut rollout_halted, mut rollout_lock, mut rollout_wait) =
        (vec![], vec![], vec![], vec![]);
    if let Some(r) = &snapshot.rollout {
        for name in snapshot.services.keys() {
            let svc = [("service", name.as_str())];
            rollout_pending.push(gauge(&svc, bool_value(r.pending.contains_key(name))));
            rollout_halted.push(gauge(&svc, bool_value(r.halted.contains_key(name))));
        }
        rollout_lock.push(gauge(&[], bool_value(r.lock_held)));
        rollout_wait.push(gauge(&[], r.wait_seconds));
    }
    for s in snapshot.services.values() {
        let svc = [("service", s.name.as_str())];
        up.push(gauge(&svc, bool_value(s.pid.is_some())));
        ready.push(gauge(&svc, bool_value(s.ready)));
        for st in STATES {
            state.push(gauge(
                &[("service", &s.name), ("state", st)],
                bool_value(s.state == st),
            ));
        }
        if !STATES.contains(&s.state.as_str()) {
            state.push(gauge(&[("service", &s.name), ("state", &s.state)], 1.0));
        }
        restarts.push(counter(&svc, s.restarts as f64));
        let lost = snapshot
            .log_dropped_bytes
            .get(&s.name)
            .copied()
            .unwrap_or(0);
        dropped.push(counter(&svc, lost as f64));
        for (reason, n) in &s.exits {
            exits.push(counter(
                &[("service", &s.name), ("reason", reason)],
                *n as f64,
            ));
        }
        if let (Some(t), Some(_)) = (s.start_time, s.pid) {
            start.push(gauge(&svc, unix_seconds(t)));
        }
        let wait = match s.next_start_at {
            Some(at) => at
                .duration_since(now)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            None => s.next_start_in_ms.map_or(0.0, |ms| ms as f64 / 1000.0),
        };
        backoff.push(gauge(&svc, wait));
        let stuck_for = s
            .stuck_since
            .and_then(|t| now.duration_since(t).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        stuck.push(gauge(&svc, stuck_for));
        for (probe, n) in &s.probe_failures {
            failures.push(counter(
                &[("service", &s.name), ("probe", probe)],
                *n as f64,
            ));
        }
        for (probe, h) in &s.probe_durations {
            durations.push(histogram(&[("service", &s.name), ("probe", probe)], h));
        }
    }
    let families = vec![
        family(&SERVICE_UP, up),
        family(&SERVICE_READY, ready),
        family(&SERVICE_STATE, state),
        family(&SERVICE_RESTARTS, restarts),
        family(&SERVICE_EXITS, exits),
        family(&SERVICE_START_TIME, start),
        family(&SERVICE_BACKOFF, backoff),
        family(&PROBE_FAILURES, failures),
        family(&PROBE_DURATION, durations),
        family(
            &MANIFEST_ERRORS,
            vec![gauge(&[], snapshot.manifest_errors.len() as f64)],
        ),
        family(&SERVICE_STUCK, stuck),
        family(
            &INTERNAL_ERRORS,
            ["scan_panic", "actor_panic", "reaper_stopped"]
                .iter()
                .map(|k| {
                    let n = snapshot.internal_errors.get(*k).copied().unwrap_or(0);
                    counter(&[("kind", k)], n as f64)
                })
                .collect(),
        ),
        family(&LOG_DROPPED, dropped),
        family(&ROLLOUT_PENDING, rollout_pending),
        family(&ROLLOUT_HALTED, rollout_halted),
        family(&ROLLOUT_LOCK_HELD, rollout_lock),
        family(&ROLLOUT_WAIT, rollout_wait),
        family(&BUILD_INFO, vec![gauge(&[("version", version)], 1.0)]),
    ];
    families
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect()
}

/// Collects the `upkeep_*` families from the shared snapshot at scrape time.
pub struct SnapshotCollector {
    shared: Arc<Shared>,
    version: String,
    descs: Vec<Desc>,
}

impl SnapshotCollector {
    /// A collector over `shared`, labelling `upkeep_build_info` with `version`.
    pub fn new(shared: Arc<Shared>, version: &str) -> Self {
        SnapshotCollector {
            shared,
            version: version.into(),
            descs: descs(&SNAPSHOT_DEFS),
        }
    }
}

impl Collector for SnapshotCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let now = SystemTime::now();
        // A writer that panicked leaves the last snapshot it wrote: still worth showing.
        let snap = self
            .shared
            .snapshot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        snapshot_families(&snap, &self.version, now)
    }
}

/// Values read from `/proc/self/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// User CPU time in clock ticks.
    pub utime: u64,
    /// System CPU time in clock ticks.
    pub stime: u64,
    /// Start time after boot in clock ticks.
    pub starttime: u64,
}

/// Parses `/proc/<pid>/stat`. The command name (field 2) may contain spaces
/// and parentheses, so fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts at field 3 (state): field N is at index N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(ProcStat {
        utime: field(14)?,
        stime: field(15)?,
        starttime: field(22)?,
    })
}

/// Reads a `kB` line such as `VmRSS:  1234 kB` from `/proc/<pid>/status`, in bytes.
pub fn parse_status_bytes(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split(':').next() == Some(key))?;
    let mut words = line.split(':').nth(1)?.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        None => Some(n),
        Some(_) => None,
    }
}

/// Reads the soft limit of `Max open files` from `/proc/<pid>/limits`
/// (`None` when unlimited or unreadable).
pub fn parse_max_open_files(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Reads the boot time (`btime`, unix seconds) from `/proc/stat`.
pub fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Collects `process_*` for upkeep itself from `/proc/self`: CPU, memory,
/// file descriptors and start time. A value that cannot be read is left out
/// of the scrape (and logged at debug level), never an error.
pub struct ProcessCollector {
    descs: Vec<Desc>,
    ticks_per_second: f64,
    boot_time: Option<u64>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessCollector {
    /// A collector for the calling process.
    pub fn new() -> Self {
        #[allow(clippy::cast_precision_loss)]
        let ticks_per_second = match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
            Ok(Some(t)) if t > 0 => t as f64,
            // USER_HZ has been 100 on every Linux architecture for decades.
            _ => 100.0,
        };
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(parse_btime);
        ProcessCollector {
            descs: descs(&PROCESS_DEFS),
            ticks_per_second,
            boot_time,
        }
    }
}

fn read_proc(path: &str) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::debug!("metrics: reading {path}: {e}");
            None
        }
    }
}

impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    #[allow(clippy::cast_precision_loss)]
    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        if let Some(stat) = read_proc("/proc/self/stat").as_deref().and_then(parse_stat) {
            let cpu = (stat.utime + stat.stime) as f64 / self.ticks_per_second;
            out.push(family(&CPU_SECONDS, vec![counter(&[], cpu)]));
            if let Some(boot) = self.boot_time {
                let start = boot as f64 + stat.starttime as f64 / self.ticks_per_second;
                out.push(family(&START_TIME, vec![gauge(&[], start)]));
            }
        }
        if let Some(status) = read_proc("/proc/self/status") {
            if let Some(rss) = parse_status_bytes(&status, "VmRSS") {
                out.push(family(&RESIDENT_MEMORY, vec![gauge(&[], rss as f64)]));
            }
            if let Some(vsz) = parse_status_bytes(&status, "VmSize") {
                out.push(family(&VIRTUAL_MEMORY, vec![gauge(&[], vsz as f64)]));
            }
        }
        match open_fds() {
            Ok(n) => out.push(family(&OPEN_FDS, vec![gauge(&[], n as f64)])),
            Err(e) => tracing::debug!("metrics: listing /proc/self/fd: {e}"),
        }
        if let Some(max) = read_proc("/proc/self/limits")
            .as_deref()
            .and_then(parse_max_open_files)
        {
            out.push(family(&MAX_FDS, vec![gauge(&[], max as f64)]));
        }
        out
    }
}

/// Descriptors open in this process. Linux 6.2 and later give the count
/// as the size of `/proc/self/fd` (one `stat`, however many are open);
/// older kernels say 0 there, and the entries are counted.
fn open_fds() -> std::io::Result<u64> {
    let size = std::fs::metadata("/proc/self/fd")?.len();
    if size > 0 {
        return Ok(size);
    }
    // The directory handle used to list it is one of the entries; leave it out.
    let n = std::fs::read_dir("/proc/self/fd")?
        .count()
        .saturating_sub(1);
    Ok(n as u64)
}

/// The `/metrics` registry: the snapshot collector plus the process collector.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    /// Registers both collectors for `shared`, with `version` for `upkeep_build_info`.
    pub fn new(shared: Arc<Shared>, version: &str) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        registry.register(Box::new(SnapshotCollector::new(shared.clone(), version)))?;
        registry.register(Box::new(ProcessCollector::new()))?;
        registry.register(Box::new(crate::usage_metrics::UsageCollector::new(
            shared.clone(),
        )))?;
        Ok(Metrics { registry })
    }

    /// Gathers and encodes every family in the text format.
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let families = self.registry.gather();
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&families, &mut buf)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use upkeep_core::snapshot::ServiceStatus;

    #[test]
    fn every_descriptor_is_valid() {
        assert_eq!(descs(&SNAPSHOT_DEFS).len(), SNAPSHOT_DEFS.len());
        assert_eq!(descs(&PROCESS_DEFS).len(), PROCESS_DEFS.len());
    }

    #[test]
    fn parse_stat_handles_parens_and_spaces_in_comm() {
        let line = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 3 0 123456 10000000 500 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            s,
            ProcStat {
                utime: 250,
                stime: 75,
                starttime: 123_456
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn parse_status_limits_and_btime() {
        let status = "Name:\tupkeep\nVmSize:\t  10240 kB\nVmRSS:\t    2048 kB\n";
        assert_eq!(parse_status_bytes(status, "VmRSS"), Some(2048 * 1024));
        assert_eq!(parse_status_bytes(status, "VmSize"), Some(10240 * 1024));
        assert_eq!(parse_status_bytes(status, "VmSwap"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files     \n";
        assert_eq!(parse_max_open_files(unlimited), None);
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1795464715\nprocesses 5\n"),
            Some(1_795_464_715)
        );
    }

    #[test]
    fn histogram_is_cumulative_with_inf_equal_to_count() {
        let mut h = ProbeHistogram::default();
        for v in [0.0005, 0.002, 0.002, 0.3, 100.0] {
            h.observe(v);
        }
        let m = histogram(&[("service", "a"), ("probe", "liveness")], &h);
        let ph = m.get_histogram();
        let counts: Vec<u64> = ph
            .get_bucket()
            .iter()
            .map(Bucket::cumulative_count)
            .collect();
        assert_eq!(counts, [1, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4]);
        // The overflow only shows in _count (the encoder's +Inf bucket).
        assert_eq!(ph.get_sample_count(), 5);
    }

    #[test]
    fn backoff_seconds_are_computed_from_next_start_at() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut snap = Snapshot::default();
        let mut s = ServiceStatus::new("etcd", "/m/etcd.yaml", now);
        s.next_start_at = Some(now + Duration::from_millis(2500));
        snap.services.insert("etcd".into(), s);
        let fams = snapshot_families(&snap, "1.0", now);
        let backoff = fams
            .iter()
            .find(|f| f.name() == "upkeep_service_backoff_seconds")
            .unwrap();
        assert!((backoff.get_metric()[0].get_gauge().get_value() - 2.5).abs() < 1e-9);
        // No process: no start time sample, so the family is left out entirely.
        assert!(fams
            .iter()
            .all(|f| f.name() != "upkeep_service_start_time_seconds"));
        let state = fams
            .iter()
            .find(|f| f.name() == "upkeep_service_state")
            .unwrap();
        let ones: Vec<&str> = state
            .get_metric()
            .iter()
            .filter(|m| m.get_gauge().get_value() == 1.0)
            .map(|m| m.get_label()[1].value())
            .collect();
        assert_eq!(ones, ["stopped"]);
    }
}
