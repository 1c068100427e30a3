//! Per-service resource usage on `/metrics`, under the kubelet's
//! `/metrics/resource` and cAdvisor names and labels (design §8), so that
//! existing dashboards and alerts work unchanged. Read at scrape time
//! through the snapshot's [`UsageReader`]; docs/metrics.md lists the sources.

use crate::metrics::{counter, descs, family, gauge, unix_seconds, Def};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{MetricFamily, MetricType};
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
            kind: MetricType::$kind,
            labels: LABELS,
        };
    };
}

def!(CPU, "container_cpu_usage_seconds_total", COUNTER,
    "Cumulative CPU time consumed by the container's current process (and its children) in seconds.");
def!(
    WORKING_SET,
    "container_memory_working_set_bytes",
    GAUGE,
    "Current working set of the container in bytes (memory usage minus inactive file cache)."
);
def!(
    RSS,
    "container_memory_rss",
    GAUGE,
    "Size of RSS (anonymous memory) of the container in bytes."
);
def!(
    OOM,
    "container_oom_events_total",
    COUNTER,
    "Count of out of memory events observed for the container (OOM kills in its memory cgroup)."
);
def!(
    START,
    "container_start_time_seconds",
    GAUGE,
    "Start time of the container's current process since unix epoch in seconds."
);
def!(
    FS_READS,
    "container_fs_reads_bytes_total",
    COUNTER,
    "Cumulative count of bytes read."
);
def!(
    FS_WRITES,
    "container_fs_writes_bytes_total",
    COUNTER,
    "Cumulative count of bytes written."
);
def!(
    CPU_WAIT,
    "container_pressure_cpu_waiting_seconds_total",
    COUNTER,
    "Total time duration tasks in the container have waited due to CPU congestion."
);
def!(
    CPU_STALL,
    "container_pressure_cpu_stalled_seconds_total",
    COUNTER,
    "Total time duration no tasks in the container could make progress due to CPU congestion."
);
def!(
    MEM_WAIT,
    "container_pressure_memory_waiting_seconds_total",
    COUNTER,
    "Total time duration tasks in the container have waited due to memory congestion."
);
def!(
    MEM_STALL,
    "container_pressure_memory_stalled_seconds_total",
    COUNTER,
    "Total time duration no tasks in the container could make progress due to memory congestion."
);
def!(
    IO_WAIT,
    "container_pressure_io_waiting_seconds_total",
    COUNTER,
    "Total time duration tasks in the container have waited due to IO congestion."
);
def!(
    IO_STALL,
    "container_pressure_io_stalled_seconds_total",
    COUNTER,
    "Total time duration no tasks in the container could make progress due to IO congestion."
);

const DEFS: [&Def; 13] = [
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

/// Builds the `container_*` families from usages already read (pure).
#[allow(clippy::cast_precision_loss)]
pub fn usage_families(rows: &[(Target, Usage)], node_name: &str) -> Vec<MetricFamily> {
    let mut out: Vec<Vec<prometheus::proto::Metric>> = vec![Vec::new(); DEFS.len()];
    for (t, u) in rows {
        let v = label_values(t, node_name);
        let l: Vec<(&str, &str)> = LABELS
            .iter()
            .copied()
            .zip(v.iter().map(String::as_str))
            .collect();
        let mut push = |i: usize, value: Option<f64>| {
            if let Some(x) = value {
                let m = if DEFS[i].kind == MetricType::COUNTER {
                    counter(&l, x)
                } else {
                    gauge(&l, x)
                };
                out[i].push(m);
            }
        };
        push(0, u.cpu_seconds);
        push(1, u.memory_working_set_bytes.map(|b| b as f64));
        push(2, u.memory_rss_bytes.map(|b| b as f64));
        push(3, u.oom_events.map(|b| b as f64));
        push(4, t.start_time.map(unix_seconds));
        push(5, u.fs_read_bytes.map(|b| b as f64));
        push(6, u.fs_write_bytes.map(|b| b as f64));
        let psi = |p: Option<Pressure>| (p.map(|p| p.waiting), p.map(|p| p.stalled));
        let (w, s) = psi(u.pressure_cpu);
        push(7, w);
        push(8, s);
        let (w, s) = psi(u.pressure_memory);
        push(9, w);
        push(10, s);
        let (w, s) = psi(u.pressure_io);
        push(11, w);
        push(12, s);
    }
    DEFS.iter()
        .zip(out)
        .filter(|(_, m)| !m.is_empty())
        .map(|(d, m)| family(d, m))
        .collect()
}

/// Scrapes this close together share one read of the usage files.
pub const MAX_AGE: Duration = Duration::from_millis(250);

/// What one read gave: each live service with its usage.
type Rows = Vec<(Target, Usage)>;

/// Reads every running service's usage at scrape time (a scrape within
/// [`MAX_AGE`] of the last read reuses it).
pub struct UsageCollector {
    shared: Arc<Shared>,
    descs: Vec<Desc>,
    /// The last read (what was read, not the families built from it: a
    /// fresh read then builds the families once and copies nothing).
    last: Mutex<Option<(Instant, Rows)>>,
}

impl UsageCollector {
    /// A collector over `shared` (empty until a usage reader is installed).
    pub fn new(shared: Arc<Shared>) -> Self {
        UsageCollector {
            shared,
            descs: descs(&DEFS),
            last: Mutex::new(None),
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

/// Reads the usage of `t` with `reader`.
pub fn read_usage(reader: &dyn UsageReader, t: &Target) -> Usage {
    reader.read(&t.service, t.cgroup.as_deref(), Some(t.pid))
}

impl Collector for UsageCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(reader) = self.shared.usage.get() else {
            return Vec::new();
        };
        // Held while reading: concurrent scrapes wait for one read.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, rows)) = last.as_ref() {
            if at.elapsed() < MAX_AGE {
                return usage_families(rows, reader.node_name());
            }
        }
        let rows: Vec<(Target, Usage)> = targets(&self.shared)
            .into_iter()
            .map(|t| {
                let u = read_usage(reader.as_ref(), &t);
                (t, u)
            })
            .collect();
        let live: Vec<&str> = rows.iter().map(|(t, _)| t.service.as_str()).collect();
        reader.retain(&live);
        let fams = usage_families(&rows, reader.node_name());
        *last = Some((Instant::now(), rows));
        fams
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_are_valid() {
        assert_eq!(descs(&DEFS).len(), DEFS.len());
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
        let fams = usage_families(&[(t, u)], "n");
        let names: Vec<&str> = fams.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "container_cpu_usage_seconds_total",
                "container_memory_working_set_bytes"
            ]
        );
        assert!((fams[0].get_metric()[0].get_counter().get_value() - 1.5).abs() < 1e-9);
    }
}
