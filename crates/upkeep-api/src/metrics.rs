//! `/metrics`: the families written at scrape time from the status
//! snapshot ([`write_snapshot`]), from `/proc/self` ([`ProcessCollector`])
//! and from the services' cgroups ([`crate::usage_metrics`]), straight into
//! the text format ([`crate::expo`]). Names are a contract (design §8);
//! `docs/metrics.md` describes each one.
//!
//! Nothing here keeps state between scrapes: counters are the executor's
//! counters, read out of the snapshot under its read lock.

use crate::expo::{Def, Kind, Text};
use crate::usage_metrics::UsageCollector;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::SystemTime;
use upkeep_core::snapshot::{Histogram as ProbeHistogram, Shared, Snapshot, PROBE_BUCKETS};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The states a service can be in, for `upkeep_service_state`.
pub const STATES: [&str; 6] = [
    "running", "starting", "backoff", "stopping", "stopped", "failed",
];

const SERVICE_UP: Def = Def {
    name: "upkeep_service_up",
    help: "1 if the service has a running process, else 0.",
    kind: Kind::Gauge,
    labels: &["service"],
};
const SERVICE_READY: Def = Def {
    name: "upkeep_service_ready",
    help: "1 if the service is ready (readiness probe passing, or none and started), else 0.",
    kind: Kind::Gauge,
    labels: &["service"],
};
const SERVICE_STATE: Def = Def {
    name: "upkeep_service_state",
    help: "1 for the state the service is in (running, starting, backoff, stopping, stopped, failed), 0 for the others.",
    kind: Kind::Gauge,
    labels: &["service", "state"],
};
const SERVICE_RESTARTS: Def = Def {
    name: "upkeep_service_restarts_total",
    help: "Starts of the service after its first start.",
    kind: Kind::Counter,
    labels: &["service"],
};
const SERVICE_EXITS: Def = Def {
    name: "upkeep_service_exits_total",
    help: "Exits of the service's main process, by reason (exit code class or signal name).",
    kind: Kind::Counter,
    labels: &["service", "reason"],
};
const SERVICE_START_TIME: Def = Def {
    name: "upkeep_service_start_time_seconds",
    help: "Unix time the service's current process started; absent while no process runs.",
    kind: Kind::Gauge,
    labels: &["service"],
};
const SERVICE_BACKOFF: Def = Def {
    name: "upkeep_service_backoff_seconds",
    help: "Seconds left before the service's next start while it waits in backoff, 0 if none.",
    kind: Kind::Gauge,
    labels: &["service"],
};
const PROBE_FAILURES: Def = Def {
    name: "upkeep_probe_failures_total",
    help: "Failed probe runs, by probe (liveness, readiness, startup).",
    kind: Kind::Counter,
    labels: &["service", "probe"],
};
const PROBE_DURATION: Def = Def {
    name: "upkeep_probe_duration_seconds",
    help: "Duration of probe runs in seconds, by probe (liveness, readiness, startup).",
    kind: Kind::Histogram,
    labels: &["service", "probe"],
};
const MANIFEST_ERRORS: Def = Def {
    name: "upkeep_manifest_errors",
    help: "Manifest files that currently fail to parse or validate (their last good version keeps running).",
    kind: Kind::Gauge,
    labels: &[],
};
const SERVICE_STUCK: Def = Def {
    name: "upkeep_service_stuck_seconds",
    help: "Seconds that processes left by the service's last process have resisted SIGKILL (no new process starts meanwhile); 0 normally.",
    kind: Kind::Gauge,
    labels: &["service"],
};
const INTERNAL_ERRORS: Def = Def {
    name: "upkeep_internal_errors_total",
    help: "Bugs upkeep caught and survived, by kind (scan_panic: a manifest scan failed and nothing was changed; actor_panic: a service's actor ended and was replaced; reaper_stopped: the reaping task ended and was restarted).",
    kind: Kind::Counter,
    labels: &["kind"],
};
const LOG_DROPPED: Def = Def {
    name: "upkeep_log_dropped_bytes_total",
    help: "Bytes of the service's output dropped to keep its log files within their size bound (full disk, or written faster than rotation could keep).",
    kind: Kind::Counter,
    labels: &["service"],
};
const ROLLOUT_PENDING: Def = Def {
    name: "upkeep_rollout_pending",
    help: "1 while a planned change of the service waits for the cluster's rollout lock or gate, else 0 (only with [cluster]).",
    kind: Kind::Gauge,
    labels: &["service"],
};
const ROLLOUT_HALTED: Def = Def {
    name: "upkeep_rollout_halted",
    help: "1 when this node rolled back a change of the service and halted its rollout, else 0 (only with [cluster]).",
    kind: Kind::Gauge,
    labels: &["service"],
};
const ROLLOUT_LOCK_HELD: Def = Def {
    name: "upkeep_rollout_lock_held",
    help: "1 while this node holds the cluster's rollout lock (a planned step is under way), else 0 (only with [cluster]).",
    kind: Kind::Gauge,
    labels: &[],
};
const ROLLOUT_WAIT: Def = Def {
    name: "upkeep_rollout_wait_seconds",
    help: "Seconds the oldest pending planned change of this node has waited, 0 if none (only with [cluster]).",
    kind: Kind::Gauge,
    labels: &[],
};
const BUILD_INFO: Def = Def {
    name: "upkeep_build_info",
    help: "Always 1; the version label is the running upkeep's version.",
    kind: Kind::Gauge,
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
    kind: Kind::Counter,
    labels: &[],
};
const RESIDENT_MEMORY: Def = Def {
    name: "process_resident_memory_bytes",
    help: "Resident memory size of upkeep in bytes.",
    kind: Kind::Gauge,
    labels: &[],
};
const VIRTUAL_MEMORY: Def = Def {
    name: "process_virtual_memory_bytes",
    help: "Virtual memory size of upkeep in bytes.",
    kind: Kind::Gauge,
    labels: &[],
};
const OPEN_FDS: Def = Def {
    name: "process_open_fds",
    help: "Number of open file descriptors of upkeep.",
    kind: Kind::Gauge,
    labels: &[],
};
const MAX_FDS: Def = Def {
    name: "process_max_fds",
    help: "Maximum number of open file descriptors of upkeep (soft limit).",
    kind: Kind::Gauge,
    labels: &[],
};
const START_TIME: Def = Def {
    name: "process_start_time_seconds",
    help: "Start time of upkeep since unix epoch in seconds.",
    kind: Kind::Gauge,
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

/// Every family `/metrics` can show (docs/metrics.md documents each one).
pub fn definitions() -> Vec<&'static Def> {
    SNAPSHOT_DEFS
        .iter()
        .chain(PROCESS_DEFS.iter())
        .chain(crate::usage_metrics::DEFS.iter())
        .chain(crate::usage_metrics::COLLECTOR_DEFS.iter())
        .copied()
        .collect()
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

/// Writes one probe-duration histogram: cumulative buckets, `+Inf` from
/// the count (never below the finite buckets), the sum.
fn histogram(t: &mut Text, values: &[&str], h: &ProbeHistogram) {
    let mut cumulative = 0u64;
    let mut buckets = [(0.0, 0u64); PROBE_BUCKETS.len()];
    for (slot, (bound, n)) in buckets
        .iter_mut()
        .zip(PROBE_BUCKETS.iter().zip(h.counts.iter()))
    {
        cumulative = cumulative.saturating_add(*n);
        *slot = (*bound, cumulative);
    }
    let count = h.count.max(cumulative.saturating_add(h.overflow));
    let sum = if h.sum.is_finite() { h.sum } else { 0.0 };
    t.histogram(values, &buckets, sum, count);
}

/// Writes the snapshot's `upkeep_*` families at `now` (pure: no clock, no
/// I/O). Families with no samples (e.g. no exits yet) are left out, as the
/// text format has no way to say "none".
#[allow(clippy::cast_precision_loss)] // counters as f64 are what the format carries
pub fn write_snapshot(t: &mut Text, snapshot: &Snapshot, version: &str, now: SystemTime) {
    let services = || snapshot.services.values();
    if let Some(r) = &snapshot.rollout {
        t.family(&ROLLOUT_PENDING);
        for name in snapshot.services.keys() {
            t.sample(&[name], bool_value(r.pending.contains_key(name)));
        }
        t.family(&ROLLOUT_HALTED);
        for name in snapshot.services.keys() {
            t.sample(&[name], bool_value(r.halted.contains_key(name)));
        }
        t.family(&ROLLOUT_LOCK_HELD);
        t.sample(&[], bool_value(r.lock_held));
        t.family(&ROLLOUT_WAIT);
        t.sample(&[], r.wait_seconds);
    }
    t.family(&SERVICE_UP);
    for s in services() {
        t.sample(&[&s.name], bool_value(s.pid.is_some()));
    }
    t.family(&SERVICE_READY);
    for s in services() {
        t.sample(&[&s.name], bool_value(s.ready));
    }
    t.family(&SERVICE_STATE);
    for s in services() {
        for st in STATES {
            t.sample(&[&s.name, st], bool_value(s.state == st));
        }
        if !STATES.contains(&s.state.as_str()) {
            t.sample(&[&s.name, &s.state], 1.0);
        }
    }
    t.family(&SERVICE_RESTARTS);
    for s in services() {
        t.sample(&[&s.name], s.restarts as f64);
    }
    t.family(&SERVICE_EXITS);
    for s in services() {
        for (reason, n) in &s.exits {
            t.sample(&[&s.name, reason], *n as f64);
        }
    }
    t.family(&SERVICE_START_TIME);
    for s in services() {
        if let (Some(at), Some(_)) = (s.start_time, s.pid) {
            t.sample(&[&s.name], unix_seconds(at));
        }
    }
    t.family(&SERVICE_BACKOFF);
    for s in services() {
        let wait = match s.next_start_at {
            Some(at) => at
                .duration_since(now)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            None => s.next_start_in_ms.map_or(0.0, |ms| ms as f64 / 1000.0),
        };
        t.sample(&[&s.name], wait);
    }
    t.family(&PROBE_FAILURES);
    for s in services() {
        for (probe, n) in &s.probe_failures {
            t.sample(&[&s.name, probe], *n as f64);
        }
    }
    t.family(&PROBE_DURATION);
    for s in services() {
        for (probe, h) in &s.probe_durations {
            histogram(t, &[&s.name, probe], h);
        }
    }
    t.family(&MANIFEST_ERRORS);
    t.sample(&[], snapshot.manifest_errors.len() as f64);
    t.family(&SERVICE_STUCK);
    for s in services() {
        let stuck_for = s
            .stuck_since
            .and_then(|at| now.duration_since(at).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        t.sample(&[&s.name], stuck_for);
    }
    t.family(&INTERNAL_ERRORS);
    for kind in ["scan_panic", "actor_panic", "reaper_stopped"] {
        let n = snapshot.internal_errors.get(kind).copied().unwrap_or(0);
        t.sample(&[kind], n as f64);
    }
    t.family(&LOG_DROPPED);
    for s in services() {
        let lost = snapshot
            .log_dropped_bytes
            .get(&s.name)
            .copied()
            .unwrap_or(0);
        t.sample(&[&s.name], lost as f64);
    }
    t.family(&BUILD_INFO);
    t.sample(&[version], 1.0);
}

/// [`write_snapshot`] into a body of its own (tests, benchmarks).
pub fn snapshot_text(snapshot: &Snapshot, version: &str, now: SystemTime) -> String {
    let mut t = Text::with_capacity(64 * 1024);
    write_snapshot(&mut t, snapshot, version, now);
    t.into_string()
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

/// Reads `/proc/<pid>/statm`: the virtual size and the resident set, in
/// pages (its first two fields).
pub fn statm_size_resident(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_ascii_whitespace().map(str::parse::<u64>);
    Some((fields.next()?.ok()?, fields.next()?.ok()?))
}

/// Reads the boot time (`btime`, unix seconds) from `/proc/stat`.
pub fn parse_btime(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// Collects `process_*` for upkeep itself: CPU, memory, file descriptors
/// and start time. A scrape asks the kernel for what changes with as little
/// printing as it can (`getrusage`, `/proc/self/statm`, the size of
/// `/proc/self/fd`, `getrlimit`); the start time is read once. A value that
/// cannot be read is left out of the scrape (and logged at debug level),
/// never an error.
pub struct ProcessCollector {
    page_size: u64,
    /// Unix time upkeep started, from `/proc/self/stat` and `/proc/stat`.
    start_time: Option<f64>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessCollector {
    /// A collector for the calling process.
    pub fn new() -> Self {
        use nix::unistd::{sysconf, SysconfVar};
        #[allow(clippy::cast_precision_loss)]
        let ticks_per_second = match sysconf(SysconfVar::CLK_TCK) {
            Ok(Some(t)) if t > 0 => t as f64,
            // USER_HZ has been 100 on every Linux architecture for decades.
            _ => 100.0,
        };
        let page_size = match sysconf(SysconfVar::PAGE_SIZE) {
            Ok(Some(p)) if p > 0 => p.unsigned_abs(),
            _ => 4096,
        };
        let boot_time = read_proc("/proc/stat").as_deref().and_then(parse_btime);
        let started = read_proc("/proc/self/stat").as_deref().and_then(parse_stat);
        #[allow(clippy::cast_precision_loss)]
        let start_time = boot_time
            .zip(started)
            .map(|(boot, stat)| boot as f64 + stat.starttime as f64 / ticks_per_second);
        ProcessCollector {
            page_size,
            start_time,
        }
    }
}

fn read_proc(path: &str) -> Option<String> {
    use std::io::Read;
    // procfs files report size 0, so `fs::read_to_string` would start with
    // a 32-byte read and double it; these files are small: one read and
    // the one that returns 0.
    let mut text = String::with_capacity(1024);
    match std::fs::File::open(path).and_then(|mut f| f.read_to_string(&mut text)) {
        Ok(_) => Some(text),
        Err(e) => {
            tracing::debug!("metrics: reading {path}: {e}");
            None
        }
    }
}

impl ProcessCollector {
    /// Writes the `process_*` families of the calling process.
    #[allow(clippy::cast_precision_loss)]
    pub fn write(&self, t: &mut Text) {
        use nix::sys::resource::{getrlimit, getrusage, Resource, UsageWho, RLIM_INFINITY};
        match getrusage(UsageWho::RUSAGE_SELF) {
            Ok(u) => {
                let seconds = |tv: nix::sys::time::TimeVal| {
                    tv.tv_sec() as f64 + f64::from(u32::try_from(tv.tv_usec()).unwrap_or(0)) / 1e6
                };
                t.family(&CPU_SECONDS);
                t.sample(&[], seconds(u.user_time()) + seconds(u.system_time()));
            }
            Err(e) => tracing::debug!("metrics: getrusage: {e}"),
        }
        if let Some(start) = self.start_time {
            t.family(&START_TIME);
            t.sample(&[], start);
        }
        if let Some((size, resident)) = read_proc("/proc/self/statm")
            .as_deref()
            .and_then(statm_size_resident)
        {
            t.family(&RESIDENT_MEMORY);
            t.sample(&[], resident.saturating_mul(self.page_size) as f64);
            t.family(&VIRTUAL_MEMORY);
            t.sample(&[], size.saturating_mul(self.page_size) as f64);
        }
        match open_fds() {
            Ok(n) => {
                t.family(&OPEN_FDS);
                t.sample(&[], n as f64);
            }
            Err(e) => tracing::debug!("metrics: listing /proc/self/fd: {e}"),
        }
        match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, _)) if soft != RLIM_INFINITY => {
                t.family(&MAX_FDS);
                t.sample(&[], soft as f64);
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("metrics: getrlimit: {e}"),
        }
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

/// Everything `/metrics` shows: the snapshot's `upkeep_*` families,
/// `process_*` for upkeep itself and the services' `container_*` usage,
/// written straight into the text format ([`crate::expo`]).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    version: String,
    process: ProcessCollector,
    usage: UsageCollector,
    /// The size of the last body, to allocate the next one at once.
    last_len: AtomicUsize,
}

impl Metrics {
    /// `/metrics` over `shared`, with `version` for `upkeep_build_info`.
    pub fn new(shared: Arc<Shared>, version: &str) -> Self {
        Metrics {
            inner: Arc::new(Inner {
                usage: UsageCollector::new(shared.clone()),
                shared,
                version: version.into(),
                process: ProcessCollector::new(),
                last_len: AtomicUsize::new(16 * 1024),
            }),
        }
    }

    /// The whole `/metrics` body now.
    pub fn render(&self) -> Vec<u8> {
        let i = &*self.inner;
        let mut t = Text::with_capacity(i.last_len.load(Ordering::Relaxed) + 4096);
        {
            // A writer that panicked leaves the last snapshot it wrote: still worth showing.
            let snap = i
                .shared
                .snapshot
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            write_snapshot(&mut t, &snap, &i.version, SystemTime::now());
        }
        i.process.write(&mut t);
        i.usage.write(&mut t);
        let body = t.into_bytes();
        i.last_len.store(body.len(), Ordering::Relaxed);
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use upkeep_core::snapshot::ServiceStatus;

    #[test]
    fn every_definition_is_valid_and_named_once() {
        let mut names = std::collections::BTreeSet::new();
        for d in definitions() {
            assert!(d.is_valid(), "{}", d.name);
            assert!(names.insert(d.name), "{} twice", d.name);
        }
    }

    /// The value of the sample line that starts with `series` (name and
    /// labels exactly as written).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
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
    fn parse_statm_and_btime() {
        assert_eq!(
            statm_size_resident("2560 512 300 10 0 400 0\n"),
            Some((2560, 512))
        );
        assert_eq!(statm_size_resident("2560"), None);
        assert_eq!(statm_size_resident("x 1"), None);
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1795464715\nprocesses 5\n"),
            Some(1_795_464_715)
        );
    }

    #[test]
    fn process_families_agree_with_proc() {
        let status = || std::fs::read_to_string("/proc/self/status").unwrap();
        let kb = |status: &str, key: &str| -> f64 {
            let line = status.lines().find(|l| l.starts_with(key)).unwrap();
            let n: f64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            n * 1024.0
        };
        #[allow(clippy::cast_precision_loss)]
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .unwrap()
            .unwrap() as f64;
        #[allow(clippy::cast_precision_loss)]
        let ticks = || {
            let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").unwrap()).unwrap();
            (stat.utime + stat.stime) as f64 / hz
        };
        // Spend some CPU first, so that a unit mistake shows.
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert_ne!(x, 1);
        let (vsz_before, cpu_before) = (kb(&status(), "VmSize:"), ticks());
        let mut t = Text::default();
        ProcessCollector::new().write(&mut t);
        let (vsz_after, cpu_after) = (kb(&status(), "VmSize:"), ticks());
        let text = t.into_string();
        // Other tests' threads map and unmap meanwhile (a new malloc arena
        // is 64 MiB): between the two readings, with room for that.
        let vsz = value(&text, "process_virtual_memory_bytes").unwrap();
        let (lo, hi) = (vsz_before.min(vsz_after), vsz_before.max(vsz_after));
        assert!(vsz >= lo / 1.5 && vsz <= hi * 1.5, "{vsz} vs {lo}..{hi}");
        assert!(value(&text, "process_resident_memory_bytes").unwrap() > 0.0);
        // /proc counts clock ticks, getrusage microseconds.
        let cpu = value(&text, "process_cpu_seconds_total").unwrap();
        assert!(
            cpu >= cpu_before - 2.0 / hz && cpu <= cpu_after + 2.0 / hz,
            "{cpu} vs /proc {cpu_before}..{cpu_after}"
        );
        assert!(cpu > 0.0, "{cpu}");
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
        let soft = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap();
        match soft.parse::<f64>() {
            Ok(n) => assert_eq!(value(&text, "process_max_fds"), Some(n), "{text}"),
            Err(_) => assert!(!text.contains("process_max_fds "), "{text}"),
        }
        let start = value(&text, "process_start_time_seconds").unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        // This test binary started within the last hour, not before boot.
        assert!(start <= now + 1.0 && start > now - 3_600.0, "{start}");
    }

    #[test]
    fn histogram_is_cumulative_with_inf_equal_to_count() {
        let mut h = ProbeHistogram::default();
        for v in [0.0005, 0.002, 0.002, 0.3, 100.0] {
            h.observe(v);
        }
        let mut t = Text::default();
        t.family(&PROBE_DURATION);
        histogram(&mut t, &["a", "liveness"], &h);
        let counts: Vec<u64> = t
            .as_str()
            .lines()
            .filter(|l| l.starts_with("upkeep_probe_duration_seconds_bucket{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        // The overflow only shows in +Inf and _count.
        assert_eq!(counts, [1, 3, 3, 3, 3, 3, 3, 3, 4, 4, 4, 4, 5]);
        let text = t.as_str();
        assert!(
            text.contains("{service=\"a\",probe=\"liveness\",le=\"+Inf\"} 5\n"),
            "{text}"
        );
        let count = value(
            text,
            "upkeep_probe_duration_seconds_count{service=\"a\",probe=\"liveness\"}",
        );
        assert_eq!(count, Some(5.0));
    }

    #[test]
    fn backoff_seconds_are_computed_from_next_start_at() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut snap = Snapshot::default();
        let mut s = ServiceStatus::new("etcd", "/m/etcd.yaml", now);
        s.next_start_at = Some(now + Duration::from_millis(2500));
        snap.services.insert("etcd".into(), s);
        let text = snapshot_text(&snap, "1.0", now);
        let backoff = value(&text, "upkeep_service_backoff_seconds{service=\"etcd\"}");
        assert!((backoff.unwrap() - 2.5).abs() < 1e-9, "{text}");
        // No process: no start time sample, so the family is left out entirely.
        assert!(
            !text.contains("upkeep_service_start_time_seconds"),
            "{text}"
        );
        let ones: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("upkeep_service_state{") && l.ends_with(" 1"))
            .collect();
        assert_eq!(
            ones,
            ["upkeep_service_state{service=\"etcd\",state=\"stopped\"} 1"]
        );
        // No rollout section without [cluster]; the build info is there.
        assert!(!text.contains("upkeep_rollout"), "{text}");
        assert_eq!(
            value(&text, "upkeep_build_info{version=\"1.0\"}"),
            Some(1.0)
        );
    }

    #[test]
    fn render_has_every_part_and_passes_the_format_rules() {
        let now = SystemTime::now();
        let shared = Arc::new(Shared::default());
        {
            let mut snap = shared.snapshot.write().unwrap();
            let mut s = ServiceStatus::new("a\"b", "/x", now);
            s.pid = Some(1);
            s.start_time = Some(now);
            snap.services.insert(s.name.clone(), s);
        }
        let body = String::from_utf8(Metrics::new(shared, "v").render()).unwrap();
        assert!(
            body.contains("upkeep_service_up{service=\"a\\\"b\"} 1\n"),
            "{body}"
        );
        assert!(body.contains("\nprocess_cpu_seconds_total "), "{body}");
        // Every family's samples follow its TYPE line, each family once.
        let mut seen = std::collections::BTreeSet::new();
        let mut current = String::new();
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                current = rest.split(' ').next().unwrap().to_string();
                assert!(seen.insert(current.clone()), "{current} twice");
            } else if !line.starts_with('#') {
                assert!(line.starts_with(&current), "{line} outside {current}");
            }
        }
    }
}
