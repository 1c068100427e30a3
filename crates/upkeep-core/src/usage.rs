//! Resource usage of one service, as `/metrics`, `upkeep status` and
//! `upkeep describe` show it. The values are read at the moment they are
//! asked for (scrape time) by a [`UsageReader`] the runtime installs in
//! [`crate::snapshot::Shared`]; nothing here does I/O.

use serde::{Deserialize, Serialize};

/// One PSI ("pressure stall information") total, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Pressure {
    /// `some` total: time at least one task waited for the resource.
    pub waiting: f64,
    /// `full` total: time all non-idle tasks were stalled on it.
    pub stalled: f64,
}

/// What a service uses now. `None` means "not available on this host"
/// (and the metric is left out), never zero.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Usage {
    /// CPU time of the current process generation (and its children), seconds.
    pub cpu_seconds: Option<f64>,
    /// Memory usage minus inactive file cache, bytes (cAdvisor's working set).
    pub memory_working_set_bytes: Option<u64>,
    /// Anonymous memory (cAdvisor's `rss`), bytes.
    pub memory_rss_bytes: Option<u64>,
    /// OOM kills in the service's memory cgroup since it was created.
    pub oom_events: Option<u64>,
    /// Bytes read from storage.
    pub fs_read_bytes: Option<u64>,
    /// Bytes written to storage.
    pub fs_write_bytes: Option<u64>,
    /// CPU pressure.
    pub pressure_cpu: Option<Pressure>,
    /// Memory pressure.
    pub pressure_memory: Option<Pressure>,
    /// I/O pressure.
    pub pressure_io: Option<Pressure>,
}

/// Reads a service's usage from the host (cgroups, `/proc`). Installed once
/// by the supervisor; `/metrics` and the control socket call it.
pub trait UsageReader: std::fmt::Debug + Send + Sync {
    /// Usage of service `service` whose current process generation runs in
    /// the cgroup `cgroup` (path relative to the cgroup2 root, as in
    /// `/proc/PID/cgroup`) with main process `pid`.
    fn read(&self, service: &str, cgroup: Option<&str>, pid: Option<u32>) -> Usage;

    /// Called after a pass over every service that has a process (one
    /// `/metrics` scrape), with their names: a reader that keeps something
    /// per service between reads (open directories) drops it for the
    /// others. Does nothing by default.
    fn retain(&self, _services: &[&str]) {}

    /// OOM kills counted so far by the service's memory cgroup, if the host
    /// has one for it (v2 `memory.events`, v1 `memory.oom_control`).
    fn oom_kills(&self, service: &str) -> Option<u64>;

    /// This node's name (static pods' `pod` label is `<name>-<node_name>`).
    fn node_name(&self) -> &str;
}

/// The kubelet's labels of a static pod's container, for metrics.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PodLabels {
    /// `metadata.name` of the manifest (without the node name).
    pub pod: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// The container's name.
    pub container: String,
}
