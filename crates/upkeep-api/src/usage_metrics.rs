//! Per-service resource usage on `/metrics`, under the kubelet's
//! `/metrics/resource` and cAdvisor names and labels (design §8), so that
//! existing dashboards and alerts work unchanged. Read at scrape time
//! through the snapshot's [`UsageReader`]; docs/metrics.md lists the sources.

use crate::expo::{Def, Kind, Text};
use crate::metrics::unix_seconds;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};
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

/// [`write_usage`] into a body of its own (tests, benchmarks).
pub fn usage_text(rows: &[Row]) -> String {
    let mut t = Text::default();
    write_usage(&mut t, rows);
    t.into_string()
}

/// Scrapes this close together share one read of the usage files.
pub const MAX_AGE: Duration = Duration::from_millis(250);

/// Reads every running service's usage at scrape time (a scrape within
/// [`MAX_AGE`] of the last read reuses it).
pub struct UsageCollector {
    shared: Arc<Shared>,
    /// The last read and when it was made.
    last: Mutex<Option<(Instant, Vec<Row>)>>,
}

impl UsageCollector {
    /// A collector over `shared` (empty until a usage reader is installed).
    pub fn new(shared: Arc<Shared>) -> Self {
        UsageCollector {
            shared,
            last: Mutex::new(None),
        }
    }

    /// Writes the `container_*` families, reading the files afresh unless
    /// the last read is younger than [`MAX_AGE`].
    pub fn write(&self, t: &mut Text) {
        let Some(reader) = self.shared.usage.get() else {
            return;
        };
        // Held while reading: concurrent scrapes wait for one read.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, rows)) = last.as_ref() {
            if at.elapsed() < MAX_AGE {
                write_usage(t, rows);
                return;
            }
        }
        let targets = targets(&self.shared);
        let rows = read_rows(reader.as_ref(), &targets);
        let live: Vec<&str> = targets.iter().map(|t| t.service.as_str()).collect();
        reader.retain(&live);
        write_usage(t, &rows);
        *last = Some((Instant::now(), rows));
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

/// Reads the usage of every target with `reader`, in their order.
pub fn read_rows(reader: &dyn UsageReader, targets: &[Target]) -> Vec<Row> {
    let node = reader.node_name();
    let read = |ts: &[Target]| -> Vec<Row> {
        ts.iter()
            .map(|t| Row::new(t, node, read_usage(reader, t)))
            .collect()
    };
    if targets.len() < SPLIT_FROM {
        return read(targets);
    }
    let (first, second) = targets.split_at(targets.len() / 2);
    std::thread::scope(|s| {
        let other = std::thread::Builder::new()
            .name("upkeep-usage".into())
            .spawn_scoped(s, || read(second));
        let mut rows = read(first);
        match other.map(|h| h.join()) {
            Ok(Ok(more)) => rows.extend(more),
            Ok(Err(_)) => {
                // A reader bug: the panic was printed; the other half is
                // left out of this scrape rather than failing it.
                tracing::error!("usage: reading half of the services panicked");
            }
            Err(e) => {
                tracing::debug!("usage: no second reading thread ({e}); reading on one");
                rows.extend(read(second));
            }
        }
        rows
    })
}

/// Reads the usage of `t` with `reader`.
pub fn read_usage(reader: &dyn UsageReader, t: &Target) -> Usage {
    reader.read(&t.service, t.cgroup.as_deref(), Some(t.pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_valid() {
        assert!(DEFS.iter().all(|d| d.is_valid()));
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
}
