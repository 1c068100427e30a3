//! Per-service resource usage on `/metrics`, under the kubelet's
//! `/metrics/resource` and cAdvisor names and labels (design §8), so that
//! existing dashboards and alerts work unchanged. Read at scrape time
//! through the snapshot's [`UsageReader`]; docs/metrics.md lists the sources.

use crate::expo::{Def, Kind, Text};
use crate::metrics::unix_seconds;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};
use upkeep_core::cadence::{Cadence, LEAD};
use upkeep_core::snapshot::Shared;
use upkeep_core::usage::{PodLabels, Pressure, Usage, UsageReader};

/// The labels of every `container_*` sample.
const LABELS: &[&str] = &["container", "pod", "namespace", "service"];

macro_rules! def {
    ($id:ident, $name:literal, $kind:ident, $help:literal) => {
        const $id: Def = Def {
            name: $name,
            help: $help,
            kind: Kind::$kind,
            labels: LABELS,
        };
    };
}

def!(CPU, "container_cpu_usage_seconds_total", Counter,
    "Cumulative CPU time consumed by the container's current process (and its children) in seconds.");
def!(
    WORKING_SET,
    "container_memory_working_set_bytes",
    Gauge,
    "Current working set of the container in bytes (memory usage minus inactive file cache)."
);
def!(
    RSS,
    "container_memory_rss",
    Gauge,
    "Size of RSS (anonymous memory) of the container in bytes."
);
def!(
    OOM,
    "container_oom_events_total",
    Counter,
    "Count of out of memory events observed for the container (OOM kills in its memory cgroup)."
);
def!(
    START,
    "container_start_time_seconds",
    Gauge,
    "Start time of the container's current process since unix epoch in seconds."
);
def!(
    FS_READS,
    "container_fs_reads_bytes_total",
    Counter,
    "Cumulative count of bytes read."
);
def!(
    FS_WRITES,
    "container_fs_writes_bytes_total",
    Counter,
    "Cumulative count of bytes written."
);
def!(
    CPU_WAIT,
    "container_pressure_cpu_waiting_seconds_total",
    Counter,
    "Total time duration tasks in the container have waited due to CPU congestion."
);
def!(
    CPU_STALL,
    "container_pressure_cpu_stalled_seconds_total",
    Counter,
    "Total time duration no tasks in the container could make progress due to CPU congestion."
);
def!(
    MEM_WAIT,
    "container_pressure_memory_waiting_seconds_total",
    Counter,
    "Total time duration tasks in the container have waited due to memory congestion."
);
def!(
    MEM_STALL,
    "container_pressure_memory_stalled_seconds_total",
    Counter,
    "Total time duration no tasks in the container could make progress due to memory congestion."
);
def!(
    IO_WAIT,
    "container_pressure_io_waiting_seconds_total",
    Counter,
    "Total time duration tasks in the container have waited due to IO congestion."
);
def!(
    IO_STALL,
    "container_pressure_io_stalled_seconds_total",
    Counter,
    "Total time duration no tasks in the container could make progress due to IO congestion."
);

pub(crate) const DEFS: [&Def; 13] = [
    &CPU,
    &WORKING_SET,
    &RSS,
    &OOM,
    &START,
    &FS_READS,
    &FS_WRITES,
    &CPU_WAIT,
    &CPU_STALL,
    &MEM_WAIT,
    &MEM_STALL,
    &IO_WAIT,
    &IO_STALL,
];

/// What the collector copies out of the snapshot for one live service.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// upkeep's service name.
    pub service: String,
    /// The static pod's labels (`None` for a host service).
    pub pod: Option<PodLabels>,
    /// Current cgroup leaf, relative to the cgroup2 root.
    pub cgroup: Option<String>,
    /// Main process.
    pub pid: u32,
    /// Start of the current process.
    pub start_time: Option<SystemTime>,
}

/// The `container`, `pod`, `namespace`, `service` label values the kubelet
/// would set: a static pod's container is `container` of pod
/// `<name>-<node_name>`; a host service is a container named after itself,
/// with no pod or namespace (empty labels, which Prometheus drops).
pub fn label_values(t: &Target, node_name: &str) -> [String; 4] {
    match &t.pod {
        Some(p) => [
            p.container.clone(),
            format!("{}-{}", p.pod, node_name.to_lowercase()),
            p.namespace.clone(),
            t.service.clone(),
        ],
        None => [
            t.service.clone(),
            String::new(),
            String::new(),
            t.service.clone(),
        ],
    }
}

/// One service's row of a read: its labels (worked out once per read) and
/// its usage.
#[derive(Debug, Clone)]
pub struct Row {
    /// `container`, `pod`, `namespace`, `service` ([`label_values`]).
    pub labels: [String; 4],
    /// Start of the current process.
    pub start_time: Option<SystemTime>,
    /// What was read.
    pub usage: Usage,
}

impl Row {
    /// The row of `t` on node `node_name` with usage `usage`.
    pub fn new(t: &Target, node_name: &str, usage: Usage) -> Self {
        Row {
            labels: label_values(t, node_name),
            start_time: t.start_time,
            usage,
        }
    }
}

/// Writes the `container_*` families of usages already read (pure). What
/// a host cannot tell is left out, never written as zero.
#[allow(clippy::cast_precision_loss)]
pub fn write_usage(t: &mut Text, rows: &[Row]) {
    let each = |t: &mut Text, def: &'static Def, value: &dyn Fn(&Row) -> Option<f64>| {
        t.family(def);
        for r in rows {
            if let Some(v) = value(r) {
                let [c, p, n, s] = &r.labels;
                t.sample(&[c, p, n, s], v);
            }
        }
    };
    let bytes = |b: Option<u64>| b.map(|b| b as f64);
    each(t, &CPU, &|r| r.usage.cpu_seconds);
    each(t, &WORKING_SET, &|r| {
        bytes(r.usage.memory_working_set_bytes)
    });
    each(t, &RSS, &|r| bytes(r.usage.memory_rss_bytes));
    each(t, &OOM, &|r| bytes(r.usage.oom_events));
    each(t, &START, &|r| r.start_time.map(unix_seconds));
    each(t, &FS_READS, &|r| bytes(r.usage.fs_read_bytes));
    each(t, &FS_WRITES, &|r| bytes(r.usage.fs_write_bytes));
    let waiting = |p: Option<Pressure>| p.map(|p| p.waiting);
    let stalled = |p: Option<Pressure>| p.map(|p| p.stalled);
    each(t, &CPU_WAIT, &|r| waiting(r.usage.pressure_cpu));
    each(t, &CPU_STALL, &|r| stalled(r.usage.pressure_cpu));
    each(t, &MEM_WAIT, &|r| waiting(r.usage.pressure_memory));
    each(t, &MEM_STALL, &|r| stalled(r.usage.pressure_memory));
    each(t, &IO_WAIT, &|r| waiting(r.usage.pressure_io));
    each(t, &IO_STALL, &|r| stalled(r.usage.pressure_io));
}

/// [`write_usage`] into a body of its own (what a read keeps for the
/// scrapes it serves; tests, benchmarks).
pub fn usage_text(rows: &[Row]) -> String {
    // About 110 bytes per sample, 13 families.
    let mut t = Text::with_capacity(rows.len() * 13 * 112);
    write_usage(&mut t, rows);
    t.into_string()
}

/// Scrapes this close together share one read of the usage files; a read
/// made ahead of a scrape is served to it if it is no older than this.
pub const MAX_AGE: Duration = Duration::from_millis(250);

const READS: Def = Def {
    name: "upkeep_usage_reads_total",
    help: "Reads of every running service's usage files, by what made them: a scrape that found no read younger than 250ms (scrape), or a scrape expected at a steady pace (ahead).",
    kind: Kind::Counter,
    labels: &["trigger"],
};

/// The collector's own families.
pub(crate) const COLLECTOR_DEFS: [&Def; 1] = [&READS];

/// Reads every running service's usage for the scrapes: at scrape time, or
/// just before a scrape that is expected at a steady pace
/// ([`upkeep_core::cadence`]); a scrape within [`MAX_AGE`] of the last read
/// serves that one.
pub struct UsageCollector {
    inner: Arc<Collector>,
}

/// What the collector shares with its read-ahead thread.
struct Collector {
    shared: Arc<Shared>,
    /// When the last read was made and its `container_*` families, written
    /// once per read (a scrape served from it copies them); held while
    /// reading, so that concurrent scrapes (and a read ahead) wait for one.
    last: Mutex<Option<(Instant, String)>>,
    ahead: Mutex<Ahead>,
    /// Wakes the read-ahead thread (a new due time, or the end).
    wake: Condvar,
    reads_at_scrape: AtomicU64,
    reads_ahead: AtomicU64,
}

/// The read-ahead schedule.
struct Ahead {
    cadence: Cadence,
    /// When to read next, if a scrape is expected.
    due: Option<Instant>,
    /// Whether the read-ahead thread runs.
    started: bool,
    /// The collector is gone: the thread ends.
    closed: bool,
}

impl UsageCollector {
    /// A collector over `shared` (empty until a usage reader is installed).
    pub fn new(shared: Arc<Shared>) -> Self {
        UsageCollector {
            inner: Arc::new(Collector {
                shared,
                last: Mutex::new(None),
                ahead: Mutex::new(Ahead {
                    cadence: Cadence::new(MAX_AGE),
                    due: None,
                    started: false,
                    closed: false,
                }),
                wake: Condvar::new(),
                reads_at_scrape: AtomicU64::new(0),
                reads_ahead: AtomicU64::new(0),
            }),
        }
    }

    /// Writes the `container_*` families, from the last read if it is
    /// younger than [`MAX_AGE`] (made for a scrape within that window or
    /// ahead of this one), else reading the files afresh; and
    /// `upkeep_usage_reads_total`.
    pub fn write(&self, t: &mut Text) {
        let c = &self.inner;
        let Some(reader) = c.shared.usage.get() else {
            return;
        };
        c.expect_next(Instant::now());
        {
            let mut last = lock(&c.last);
            match last.as_ref() {
                Some((at, text)) if at.elapsed() < MAX_AGE => t.append(text),
                _ => {
                    let text = c.read(reader.as_ref());
                    c.reads_at_scrape.fetch_add(1, Ordering::Relaxed);
                    t.append(&text);
                    *last = Some((Instant::now(), text));
                }
            }
        }
        #[allow(clippy::cast_precision_loss)]
        {
            t.family(&READS);
            let scrape = c.reads_at_scrape.load(Ordering::Relaxed) as f64;
            t.sample(&["scrape"], scrape);
            t.sample(&["ahead"], c.reads_ahead.load(Ordering::Relaxed) as f64);
        }
    }
}

impl Drop for UsageCollector {
    fn drop(&mut self) {
        lock(&self.inner.ahead).closed = true;
        self.inner.wake.notify_all();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Collector {
    /// One read of every running service's usage, as `container_*`
    /// families (the caller holds `last`).
    fn read(&self, reader: &dyn UsageReader) -> String {
        let targets = targets(&self.shared);
        let rows = read_rows(reader, &targets);
        let live: Vec<&str> = targets.iter().map(|t| t.service.as_str()).collect();
        reader.retain(&live);
        usage_text(&rows)
    }

    /// Records a scrape arriving at `now` and schedules a read ahead of the
    /// next one when they come at a steady pace (starting the read-ahead
    /// thread the first time). An arrival that predicts nothing leaves a
    /// read still planned for later as it is, and drops one whose time has
    /// come but that the thread has not taken yet (this scrape reads for
    /// itself, if the last read is too old).
    fn expect_next(self: &Arc<Self>, now: Instant) {
        let mut a = lock(&self.ahead);
        let due = a.cadence.scraped(now);
        if due.is_none() && a.due.is_some_and(|d| d > now) {
            // Part of the scrape that planned it, or an arrival off the
            // pace (an operator's curl): the planned read is still for the
            // next scrape at the pace.
            return;
        }
        a.due = due;
        if due.is_some() && !a.started {
            let me = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name("upkeep-usage-ahead".into())
                .spawn(move || me.run_ahead());
            match spawned {
                Ok(_) => a.started = true,
                Err(e) => {
                    tracing::debug!("usage: no read-ahead thread ({e}); reading at scrape time");
                    a.due = None;
                }
            }
        }
        drop(a);
        self.wake.notify_all();
    }

    /// The read-ahead thread: sleeps until a read is due (indefinitely when
    /// none is: no wake-ups without scrapes), reads, and waits again.
    fn run_ahead(&self) {
        let mut a = lock(&self.ahead);
        loop {
            if a.closed {
                return;
            }
            let Some(due) = a.due else {
                a = self
                    .wake
                    .wait(a)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                continue;
            };
            let now = Instant::now();
            if now < due {
                a = self
                    .wake
                    .wait_timeout(a, due - now)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
                continue;
            }
            a.due = None;
            drop(a);
            if let Some(reader) = self.shared.usage.get() {
                let mut last = lock(&self.last);
                // A scrape that came early read for itself meanwhile (this
                // thread waited for it): that read serves the next one.
                let fresh = last.as_ref().is_some_and(|(at, _)| at.elapsed() < LEAD);
                if !fresh {
                    let text = self.read(reader.as_ref());
                    self.reads_ahead.fetch_add(1, Ordering::Relaxed);
                    *last = Some((Instant::now(), text));
                }
            }
            a = lock(&self.ahead);
        }
    }
}

/// The services that have a process now, copied out of the snapshot (the
/// read lock is not held while files are read).
pub fn targets(shared: &Shared) -> Vec<Target> {
    let snap = shared
        .snapshot
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    snap.services
        .values()
        .filter_map(|s| {
            Some(Target {
                service: s.name.clone(),
                pod: s.pod_labels.clone(),
                cgroup: s.cgroup.clone(),
                pid: s.pid?,
                start_time: s.start_time,
            })
        })
        .collect()
}

/// From this many services on, a read is split between two threads: the
/// kernel printing the files is most of a read, and a master has two
/// cores or more (on one, the split costs one thread start, about 30 µs).
const SPLIT_FROM: usize = 16;

/// Reads the usage of every target with `reader`, in their order. From
/// [`SPLIT_FROM`] targets on, two threads share the work: each takes the
/// next target nobody has taken, so neither waits for a fixed half of the
/// other's when that one is slow to get a CPU (on a busy machine the
/// second thread may start late; the calling thread then reads more).
pub fn read_rows(reader: &dyn UsageReader, targets: &[Target]) -> Vec<Row> {
    let node = reader.node_name();
    let next = AtomicUsize::new(0);
    let take = || {
        let mut rows = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(t) = targets.get(i) else {
                return rows;
            };
            rows.push((i, Row::new(t, node, read_usage(reader, t))));
        }
    };
    if targets.len() < SPLIT_FROM {
        // One thread takes them all, in order.
        return take().into_iter().map(|(_, row)| row).collect();
    }
    let mut rows = std::thread::scope(|s| {
        let other = std::thread::Builder::new()
            .name("upkeep-usage".into())
            .spawn_scoped(s, take);
        let mut rows = take();
        match other.map(|h| h.join()) {
            Ok(Ok(more)) => rows.extend(more),
            Ok(Err(_)) => {
                // A reader bug: the panic was printed; the services that
                // thread took are left out of this scrape rather than
                // failing it.
                tracing::error!("usage: a thread reading services' usage panicked");
            }
            Err(e) => {
                // This thread has taken every target meanwhile.
                tracing::debug!("usage: no second reading thread ({e}); read on one");
            }
        }
        rows
    });
    rows.sort_unstable_by_key(|(i, _)| *i);
    rows.into_iter().map(|(_, row)| row).collect()
}

/// Reads the usage of `t` with `reader`.
pub fn read_usage(reader: &dyn UsageReader, t: &Target) -> Usage {
    reader.read(&t.service, t.cgroup.as_deref(), Some(t.pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that counts its passes (`retain` is called once per read).
    #[derive(Debug, Default)]
    struct Counting {
        passes: AtomicU64,
    }

    impl UsageReader for Counting {
        fn read(&self, _: &str, _: Option<&str>, _: Option<u32>) -> Usage {
            Usage {
                cpu_seconds: Some(1.0),
                ..Usage::default()
            }
        }
        fn retain(&self, _: &[&str]) {
            self.passes.fetch_add(1, Ordering::Relaxed);
        }
        fn oom_kills(&self, _: &str) -> Option<u64> {
            None
        }
        fn node_name(&self) -> &str {
            "n"
        }
    }

    fn collector() -> (UsageCollector, Arc<Counting>) {
        let shared = Arc::new(Shared::default());
        {
            let mut snap = shared.snapshot.write().unwrap();
            let mut s = upkeep_core::snapshot::ServiceStatus::new("a", "/x", SystemTime::now());
            s.pid = Some(1);
            snap.services.insert(s.name.clone(), s);
        }
        let reader = Arc::new(Counting::default());
        let dynamic: Arc<dyn UsageReader> = reader.clone();
        shared.usage.set(dynamic).unwrap();
        (UsageCollector::new(shared), reader)
    }

    fn scrape(c: &UsageCollector) -> String {
        let mut t = Text::default();
        c.write(&mut t);
        t.into_string()
    }

    #[test]
    fn scrapes_at_a_steady_pace_are_read_for_ahead_of_time() {
        let (c, reader) = collector();
        let pace = Duration::from_millis(400);
        let scrapes: u64 = 8;
        for _ in 0..scrapes {
            let body = scrape(&c);
            assert!(
                body.contains("container_cpu_usage_seconds_total{"),
                "{body}"
            );
            std::thread::sleep(pace);
        }
        let ahead = c.inner.reads_ahead.load(Ordering::Relaxed);
        let at_scrape = c.inner.reads_at_scrape.load(Ordering::Relaxed);
        // The third scrape is the first with two gaps; it plans the read for
        // the fourth. On a machine so busy that a sleep overshoots by 50 ms
        // (an eighth of the pace) the pace is lost for three scrapes, not
        // the test's point: a few must have been served.
        assert!(
            ahead >= 2,
            "{ahead} reads ahead, {at_scrape} at scrape time"
        );
        // Reads ahead replace reads at scrape time: at most one per scrape,
        // plus the one planned for the scrape that did not come.
        assert!(
            ahead + at_scrape <= scrapes + 1,
            "{ahead} ahead + {at_scrape} at scrape time for {scrapes} scrapes"
        );
        assert_eq!(reader.passes.load(Ordering::Relaxed), ahead + at_scrape);
        let body = scrape(&c);
        assert!(
            body.contains(&format!(
                "upkeep_usage_reads_total{{trigger=\"ahead\"}} {ahead}\n"
            )),
            "{body}"
        );
    }

    #[test]
    fn without_a_steady_pace_nothing_is_read_ahead() {
        let (c, reader) = collector();
        for gap in [10, 300, 700, 40, 1200] {
            scrape(&c);
            std::thread::sleep(Duration::from_millis(gap));
        }
        assert!(!lock(&c.inner.ahead).started, "no read-ahead thread");
        assert_eq!(c.inner.reads_ahead.load(Ordering::Relaxed), 0);
        // 10 ms and 40 ms after a read: shared.
        assert_eq!(reader.passes.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn definitions_are_valid() {
        assert!(DEFS.iter().all(|d| d.is_valid()));
        assert!(COLLECTOR_DEFS.iter().all(|d| d.is_valid()));
    }

    #[test]
    fn static_pod_and_host_labels() {
        let mut t = Target {
            service: "kube-system_etcd_etcd".into(),
            pod: Some(PodLabels {
                pod: "etcd".into(),
                namespace: "kube-system".into(),
                container: "etcd".into(),
            }),
            cgroup: None,
            pid: 1,
            start_time: None,
        };
        assert_eq!(
            label_values(&t, "Master-1"),
            [
                "etcd",
                "etcd-master-1",
                "kube-system",
                "kube-system_etcd_etcd"
            ]
        );
        t.pod = None;
        t.service = "haproxy".into();
        assert_eq!(label_values(&t, "m"), ["haproxy", "", "", "haproxy"]);
    }

    #[test]
    fn families_leave_out_what_is_unknown() {
        let t = Target {
            service: "a".into(),
            pod: None,
            cgroup: None,
            pid: 1,
            start_time: None,
        };
        let u = Usage {
            cpu_seconds: Some(1.5),
            memory_working_set_bytes: Some(100),
            ..Usage::default()
        };
        let text = usage_text(&[Row::new(&t, "n", u)]);
        let types: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .collect();
        assert_eq!(
            types,
            [
                "container_cpu_usage_seconds_total counter",
                "container_memory_working_set_bytes gauge"
            ]
        );
        assert!(text.contains(
            "container_cpu_usage_seconds_total{container=\"a\",pod=\"\",namespace=\"\",service=\"a\"} 1.5\n"
        ));
    }

    /// A reader whose CPU figure is the pid, slow for every seventh.
    #[derive(Debug)]
    struct ByPid;

    impl UsageReader for ByPid {
        fn read(&self, _: &str, _: Option<&str>, pid: Option<u32>) -> Usage {
            let pid = pid.unwrap_or(0);
            if pid % 7 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
            Usage {
                cpu_seconds: Some(f64::from(pid)),
                ..Usage::default()
            }
        }
        fn oom_kills(&self, _: &str) -> Option<u64> {
            None
        }
        fn node_name(&self) -> &str {
            "n"
        }
    }

    #[test]
    fn rows_shared_between_two_threads_come_back_whole_and_in_order() {
        for n in [SPLIT_FROM - 1, SPLIT_FROM, 101] {
            let targets: Vec<Target> = (0..n)
                .map(|i| Target {
                    service: format!("s{i:03}"),
                    pod: None,
                    cgroup: None,
                    pid: u32::try_from(i).unwrap(),
                    start_time: None,
                })
                .collect();
            let rows = read_rows(&ByPid, &targets);
            let got: Vec<(String, Option<f64>)> = rows
                .iter()
                .map(|r| (r.labels[3].clone(), r.usage.cpu_seconds))
                .collect();
            let want: Vec<(String, Option<f64>)> = targets
                .iter()
                .map(|t| (t.service.clone(), Some(f64::from(t.pid))))
                .collect();
            assert_eq!(got, want, "{n} targets");
        }
    }
}
