//! The resolved service model: what the supervisor runs, after every default,
//! expansion and lookup has been applied. `upkeep render` prints these.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::duration::{serde_opt_str, serde_str};

/// The longest stop grace upkeep accepts (1 hour): `stop_timeout` above it
/// is a config error, and a manifest's `terminationGracePeriodSeconds` (pod or
/// probe) above it is clamped to it with a warning (the kubelet has no such
/// limit, and a manifest it accepts should still run). Any longer would hold
/// a stop, a restart or upkeep's own shutdown for longer than an operator
/// would wait, and `9223372036854775807` overflows a deadline.
pub const MAX_STOP_GRACE: Duration = Duration::from_secs(3600);

/// One supervised process: a host service from the config or one container of
/// a static Pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Unique name: the config table name, the pod name for a one-container
    /// pod, or `<pod>/<container>`.
    pub name: String,
    /// The file this spec came from (config file or manifest).
    pub source: PathBuf,
    /// Whether this is a host service or a static Pod container.
    pub origin: Origin,
    /// Exact argv to exec, after `$(VAR)` expansion. `argv[0]` may be a bare
    /// name, resolved against `PATH` from `env` at spawn time.
    pub argv: Vec<String>,
    /// The complete environment of the process (nothing is inherited).
    pub env: BTreeMap<String, String>,
    /// Working directory (`/` unless set).
    pub working_dir: PathBuf,
    /// Numeric uid to run as; `None` keeps upkeep's own.
    pub uid: Option<u32>,
    /// Numeric gid to run as; `None` keeps upkeep's own (or the user's primary group).
    pub gid: Option<u32>,
    /// When an exited process is started again.
    pub restart: RestartPolicy,
    /// Restart delays.
    pub backoff: BackoffSpec,
    /// Signal name sent to the process group to stop it, e.g. `"SIGTERM"`.
    pub stop_signal: String,
    /// Grace period between the stop signal and SIGKILL.
    #[serde(with = "serde_str")]
    pub stop_grace: Duration,
    /// What the stop signal and the final SIGKILL reach (systemd's
    /// KillMode). Always [`KillMode::ControlGroup`] for static pods. Left
    /// out of the serialized form (and so of the hash) when it is the
    /// default, so that upgrading upkeep does not change the hash of every
    /// existing service and restart it.
    #[serde(default, skip_serializing_if = "KillMode::is_default")]
    pub kill_mode: KillMode,
    /// preStop exec hook, run inside the grace period before the stop signal.
    pub pre_stop: Option<Vec<String>>,
    /// Health probes.
    pub probes: Probes,
    /// Services that must be ready before this one starts.
    pub after: Vec<String>,
    /// Where the output goes.
    pub log: LogMode,
    /// hostPath volumes to prepare or check before each start.
    pub volumes: Vec<HostPathVolume>,
    /// Resource limits (cgroups) if any.
    pub resources: Resources,
    /// How planned changes roll across masters when `[cluster]` is set
    /// (issue #16). Left out of the serialized form when it is the default
    /// (serial), like `kill_mode`; supervision policy, never a restart.
    #[serde(default, skip_serializing_if = "RolloutMode::is_default")]
    pub rollout: RolloutMode,
    /// Hex content hash of everything above: equal hashes mean nothing to restart.
    pub hash: String,
}

/// Where a service came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Origin {
    /// A `[services.NAME]` table of the config file.
    HostService,
    /// A container of a static Pod manifest.
    StaticPod {
        /// `metadata.name` as written in the file.
        pod: String,
        /// `metadata.namespace` (default `default`).
        namespace: String,
        /// The container's name.
        container: String,
    },
}

/// Restart policy (kubelet semantics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Restart after any exit, 0 included.
    #[default]
    Always,
    /// Restart only after a non-zero exit or a signal.
    OnFailure,
    /// Never restart.
    Never,
}

/// How a planned change (a spec change, `upkeep restart`) of a service is
/// applied when the config has a `[cluster]` table: a host service's
/// `rollout` key, a static pod's `upkeep.io/rollout` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RolloutMode {
    /// One master at a time, through the cluster lock (the default).
    #[default]
    Serial,
    /// At once, without the lock (as without `[cluster]`).
    Immediate,
}

impl RolloutMode {
    /// True for the default, `Serial`.
    pub fn is_default(&self) -> bool {
        *self == RolloutMode::Serial
    }

    /// The mode written as `name` (`"serial"`, `"immediate"`), if any.
    pub fn from_name(name: &str) -> Option<RolloutMode> {
        match name {
            "serial" => Some(RolloutMode::Serial),
            "immediate" => Some(RolloutMode::Immediate),
            _ => None,
        }
    }
}

/// What a stop reaches, as systemd's `KillMode=` (a host service's
/// `kill_mode`). Written as the operator writes it: `"control-group"`,
/// `"process"`, `"mixed"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum KillMode {
    /// The stop signal goes to the whole group, and everything left in the
    /// service's cgroup after the grace is killed with it (the default, and
    /// always the case for static pods).
    #[default]
    ControlGroup,
    /// Only the main process is signalled; whatever it leaves behind
    /// survives the service (containerd and its shims).
    Process,
    /// The stop signal goes to the main process only; after the grace,
    /// SIGKILL goes to everything left in the cgroup.
    Mixed,
}

impl KillMode {
    /// True for the default, `ControlGroup`.
    pub fn is_default(&self) -> bool {
        *self == KillMode::ControlGroup
    }

    /// Every mode, in documentation order.
    pub const ALL: [KillMode; 3] = [KillMode::ControlGroup, KillMode::Process, KillMode::Mixed];

    /// The name as written in the config (`"control-group"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            KillMode::ControlGroup => "control-group",
            KillMode::Process => "process",
            KillMode::Mixed => "mixed",
        }
    }

    /// The mode written as `name`, if any (exact, as in the config).
    pub fn from_name(name: &str) -> Option<KillMode> {
        Self::ALL.into_iter().find(|m| m.as_str() == name)
    }
}

impl std::fmt::Display for KillMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Backoff parameters (design.md section 6).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BackoffSpec {
    /// Delay before the second consecutive restart (the first after a healthy run is immediate).
    #[serde(with = "serde_str")]
    pub initial: Duration,
    /// Upper bound of the delay.
    #[serde(with = "serde_str")]
    pub max: Duration,
    /// Growth factor per consecutive failure.
    pub factor: f64,
    /// A run at least this long resets the backoff.
    #[serde(with = "serde_str")]
    pub reset_after: Duration,
    /// Relative jitter, 0.0..=1.0 (0.1 = up to +10%).
    pub jitter: f64,
}

impl Default for BackoffSpec {
    fn default() -> Self {
        BackoffSpec {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            factor: 2.0,
            reset_after: Duration::from_secs(600),
            jitter: 0.1,
        }
    }
}

/// The three probe slots of a service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Probes {
    /// Failing it kills and restarts the service.
    pub liveness: Option<Probe>,
    /// Failing it marks the service not ready.
    pub readiness: Option<Probe>,
    /// Until it succeeds, liveness and readiness are not run.
    pub startup: Option<Probe>,
}

/// One probe with all defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// What to check.
    pub handler: ProbeHandler,
    /// Time after the process start before the first probe counts.
    #[serde(with = "serde_str")]
    pub initial_delay: Duration,
    /// Time between probes.
    #[serde(with = "serde_str")]
    pub period: Duration,
    /// Time a probe may take before it counts as a failure.
    #[serde(with = "serde_str")]
    pub timeout: Duration,
    /// Consecutive successes to flip to success.
    pub success_threshold: u32,
    /// Consecutive failures to flip to failure.
    pub failure_threshold: u32,
    /// Grace used when this probe's failure kills the service (liveness/startup only).
    #[serde(with = "serde_opt_str")]
    pub termination_grace: Option<Duration>,
}

/// HTTP scheme of an HTTP probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// Plain HTTP.
    Http,
    /// HTTPS without certificate verification (as the kubelet).
    Https,
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProbeHandler {
    /// HTTP(S) GET; 200..=399 is success.
    Http {
        /// http or https.
        scheme: Scheme,
        /// Host to connect to (IP or name).
        host: String,
        /// TCP port.
        port: u16,
        /// Path including any query string, starting with `/`.
        path: String,
        /// Extra request headers, in order.
        headers: Vec<(String, String)>,
    },
    /// HTTP GET over a unix socket (docker's `/_ping`).
    HttpUnix {
        /// Socket path.
        socket: PathBuf,
        /// Request path.
        path: String,
    },
    /// TCP connect.
    Tcp {
        /// Host to connect to.
        host: String,
        /// Port.
        port: u16,
    },
    /// Run a command; exit 0 is success. Runs with the service's env, cwd and user.
    Exec {
        /// argv (already expanded for manifests, with the kubelet's static rules).
        argv: Vec<String>,
    },
    /// A probe that cannot be run (e.g. an unknown named port). Like the kubelet,
    /// its results are errors and count neither way.
    Unresolved {
        /// Why it cannot run.
        reason: String,
    },
}

/// Where a service's stdout/stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogMode {
    /// `<log_dir>/<name>.log` with size-based rotation.
    #[default]
    File,
    /// journald's stream socket, with `SYSLOG_IDENTIFIER` = the service name
    /// (the file where journald is not running).
    Journal,
    /// upkeep's own stderr (journald under systemd).
    Inherit,
}

/// One `volumeMounts[]` entry of a hostPath volume.
///
/// The fields after `kind` are left out of the serialized spec when they
/// have their default (mounted at its own path, writable, private), so the
/// hash of a service whose mounts are all at their own path is the one it
/// had before upkeep could mount elsewhere: an upgrade restarts nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPathVolume {
    /// Host path.
    pub path: PathBuf,
    /// What must exist or be created there.
    pub kind: HostPathType,
    /// Where the process sees it (normalized: no trailing `/`, no `.` or
    /// empty components); `None` = at `path` itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount_path: Option<PathBuf>,
    /// `readOnly: true`: a read-only bind (writes fail with `EROFS`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// `mountPropagation`.
    #[serde(default, skip_serializing_if = "Propagation::is_private")]
    pub propagation: Propagation,
}

impl HostPathVolume {
    /// A writable mount of `path` at its own path.
    pub fn at_own_path(path: PathBuf, kind: HostPathType) -> Self {
        HostPathVolume {
            path,
            kind,
            mount_path: None,
            read_only: false,
            propagation: Propagation::None,
        }
    }

    /// Where the process sees the volume.
    pub fn target(&self) -> &Path {
        self.mount_path.as_deref().unwrap_or(&self.path)
    }

    /// True if this mount needs a bind in a private mount namespace: it is
    /// mounted somewhere else than its own path, or read-only.
    pub fn needs_bind(&self) -> bool {
        self.mount_path.is_some() || self.read_only
    }
}

/// True if a service with these mounts runs in a private mount namespace
/// (at least one mount is elsewhere than its own path, or read-only); a
/// service whose mounts are all at their own path and writable runs in the
/// host's mount namespace, at no cost.
pub fn needs_mount_namespace(volumes: &[HostPathVolume]) -> bool {
    volumes.iter().any(HostPathVolume::needs_bind)
}

/// `volumeMounts[].mountPropagation`, with the kubelet's meaning.
/// `Bidirectional` is refused at parse time (a pod's mounts never reach
/// the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Propagation {
    /// `None` (the default): a private bind; mounts made on the host under
    /// the source after the start are not seen by the process.
    #[default]
    None,
    /// `HostToContainer`: a slave bind; mounts made on the host under the
    /// source later appear in the process's view.
    HostToContainer,
}

impl Propagation {
    fn is_private(&self) -> bool {
        *self == Propagation::None
    }
}

/// Kubernetes hostPath `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostPathType {
    /// `""`: no check.
    Unchecked,
    /// Create the directory (0755) if missing.
    DirectoryOrCreate,
    /// Must be a directory.
    Directory,
    /// Create an empty file (0644) if missing.
    FileOrCreate,
    /// Must be a file.
    File,
    /// Must be a unix socket.
    Socket,
    /// Must be a char device.
    CharDevice,
    /// Must be a block device.
    BlockDevice,
}

/// cgroup limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Resources {
    /// memory limit in bytes.
    pub memory_max: Option<u64>,
    /// CPU limit in millicores.
    pub cpu_max_millis: Option<u64>,
}

/// What upkeep does with its services when it exits on SIGTERM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnExit {
    /// Leave services running, to be adopted by the next upkeep.
    #[default]
    Keep,
    /// Stop every service (reverse dependency order) before exiting.
    Stop,
}
