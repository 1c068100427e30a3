//! Events: what happened to a service (started, exited, OOMKilled, probe
//! transitions, restarts and why, adoption, operator actions), like the
//! kubelet's Pod events. The runtime keeps them in a bounded ring per
//! service in the state directory; `upkeep events` and `upkeep describe`
//! print them.

use serde::{Deserialize, Serialize};

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// The service.
    pub service: String,
    /// A short CamelCase reason, as the kubelet's (`Started`, `Exited`,
    /// `OOMKilled`, `Unhealthy`, `Ready`, `NotReady`, `Killing`, `Adopted`,
    /// `Operator`, `FailedStart`).
    pub reason: String,
    /// What happened, in words. Never argv or env.
    pub message: String,
    /// For an exit: the tail of the service's output at that moment (last
    /// 20 lines, at most 4 KiB). Only in the root-only state directory and
    /// over the control socket, never over HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// Where the actors record events (installed once by the supervisor).
pub trait EventSink: std::fmt::Debug + Send + Sync {
    /// Records one event of `service`; `with_output` asks to attach the
    /// tail of the service's output (exits).
    fn record(&self, service: &str, reason: &str, message: &str, with_output: bool);
}
