//! Health probes: HTTP(S), unix-socket HTTP, TCP and exec handlers, and the
//! per-process probe worker.
//!
//! The behaviour follows the kubelet (`shared/kubelet-semantics.md` §3):
//!
//! - [`run_once`] runs one attempt of one handler and classifies it as a
//!   [`ProbeResult`]: `Success`, `Failure` (the target's fault: bad status,
//!   refused, timeout, non-zero exit) or `Error` (the probe could not be run
//!   at all; it counts neither way).
//! - [`spawn_worker`] starts one independent task per probe type of a
//!   process. Each task reports every attempt as a [`ProbeReport`], with the
//!   threshold flip (if any) computed by [`upkeep_core::probe::ProbeTracker`].
//!
//! Module layout: [`http`](self) (HTTP, HTTPS, unix-socket HTTP, redirects),
//! `exec` (commands spawned through the [`Reaper`]), `worker` (timing,
//! gating, thresholds). TCP is small enough to live here.

mod exec;
mod http;
mod worker;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use upkeep_core::probe::ProbeResult;
use upkeep_spec::ProbeHandler;

use crate::reaper::Reaper;

pub use worker::{spawn_worker, Initial, ProbeKind, ProbeReport, ProbeWorker};

/// `User-Agent` sent by HTTP probes unless the probe sets its own, in the
/// kubelet's `kube-probe/<major>.<minor>` form.
pub const USER_AGENT: &str = "kube-probe/1.29";

/// At most this much of an HTTP body or of an exec probe's output is read
/// (the kubelet's 10 KiB cap).
pub const MAX_OUTPUT: usize = 10 * 1024;

/// How many times an attempt that ends in [`ProbeResult::Error`] is tried
/// before its result is discarded (the kubelet's `maxProbeRetries`).
pub const MAX_TRIES: u32 = 3;

/// What an exec probe runs with: the service's environment, directory and
/// user, and the reaper that owns all waiting for children.
#[derive(Clone)]
pub struct ExecContext {
    /// The reaper every exec probe is spawned through.
    pub reaper: Arc<Reaper>,
    /// The complete environment of the probe command (nothing is inherited).
    pub env: BTreeMap<String, String>,
    /// Working directory of the probe command.
    pub working_dir: PathBuf,
    /// uid to run the command as; `None` keeps upkeep's own.
    pub uid: Option<u32>,
    /// gid to run the command as; `None` keeps upkeep's own.
    pub gid: Option<u32>,
    /// The service's cgroup: exec probes and hooks run inside it, as the
    /// kubelet runs them inside the container, so what they leave behind
    /// is cleaned up with the service.
    pub cgroup: Option<crate::cgroup::Cgroup>,
    /// The main process of a service that runs in a private mount namespace:
    /// exec probes and hooks enter its namespace (they see its mounts, as
    /// the kubelet runs them inside the container). `None`: the host's.
    pub mount_ns: Option<MountNsOf>,
}

/// A process whose mount namespace exec probes and hooks enter.
#[derive(Clone, Debug)]
pub struct MountNsOf {
    /// Its pid.
    pub pid: u32,
    /// Its pidfd: proves that `/proc/<pid>/ns/mnt`, opened while it is
    /// alive, is its namespace and not a later process's.
    pub pidfd: Arc<std::os::fd::OwnedFd>,
}

impl std::fmt::Debug for ExecContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecContext")
            .field("env", &self.env)
            .field("working_dir", &self.working_dir)
            .field("uid", &self.uid)
            .field("gid", &self.gid)
            .finish_non_exhaustive()
    }
}

/// Runs one attempt of `handler`, bounded by `timeout`.
///
/// - HTTP/HTTPS: a GET as the kubelet sends it (see the `http` module);
///   200-399 is success, a redirect to another host is not followed and
///   counts as success, anything else (status, transport error, more than
///   10 redirects, timeout) is a failure. An unusable path or header is an
///   error.
/// - HttpUnix: the same GET over a unix socket with `Host: localhost`;
///   redirects are not followed (a 3xx counts as success).
/// - Tcp: a connect within `timeout` is success.
/// - Exec: exit 0 is success; a non-zero exit, a command that cannot be
///   started, or the timeout (the process group is killed and reaped) is a
///   failure.
/// - Unresolved: an error, which counts neither way.
///
/// A timeout is reported as `Failure("timeout after <timeout>")`.
pub async fn run_once(handler: &ProbeHandler, timeout: Duration, ctx: &ExecContext) -> ProbeResult {
    match handler {
        ProbeHandler::Http {
            scheme,
            host,
            port,
            path,
            headers,
        } => {
            bounded(
                timeout,
                http::probe_http(*scheme, host, *port, path, headers),
            )
            .await
        }
        ProbeHandler::HttpUnix { socket, path } => {
            bounded(timeout, http::probe_unix(socket, path)).await
        }
        ProbeHandler::Tcp { host, port } => bounded(timeout, probe_tcp(host, *port)).await,
        ProbeHandler::Exec { argv } => exec::probe_exec(argv, timeout, ctx).await,
        ProbeHandler::Unresolved { reason } => ProbeResult::Error(reason.clone()),
    }
}

/// The failure message of an attempt that ran out of time.
pub(crate) fn timeout_message(timeout: Duration) -> String {
    format!("timeout after {timeout:?}")
}

async fn bounded(
    timeout: Duration,
    fut: impl std::future::Future<Output = ProbeResult>,
) -> ProbeResult {
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => ProbeResult::Failure(timeout_message(timeout)),
    }
}

/// Strips the brackets of an IPv6 literal (`[::1]` → `::1`).
pub(crate) fn bare_host(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// `host:port`, with brackets around an IPv6 literal.
pub(crate) fn join_host_port(host: &str, port: u16) -> String {
    let host = bare_host(host);
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Connects to `host:port`: an IP literal directly, a name through the
/// resolver (every address is tried in order).
pub(crate) async fn connect_tcp(host: &str, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let host = bare_host(host);
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => tokio::net::TcpStream::connect((ip, port)).await,
        Err(_) => tokio::net::TcpStream::connect((host, port)).await,
    }
}

/// TCP probe: connecting is success; the connection is closed at once.
async fn probe_tcp(host: &str, port: u16) -> ProbeResult {
    match connect_tcp(host, port).await {
        Ok(stream) => {
            drop(stream);
            ProbeResult::Success
        }
        Err(e) => ProbeResult::Failure(format!("dial tcp {}: {e}", join_host_port(host, port))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_joining() {
        assert_eq!(join_host_port("127.0.0.1", 80), "127.0.0.1:80");
        assert_eq!(join_host_port("::1", 8443), "[::1]:8443");
        assert_eq!(join_host_port("[::1]", 8443), "[::1]:8443");
        assert_eq!(join_host_port("localhost", 1), "localhost:1");
        assert_eq!(bare_host("[fe80::1]"), "fe80::1");
    }

    #[test]
    fn timeout_message_names_the_timeout() {
        assert_eq!(timeout_message(Duration::from_secs(1)), "timeout after 1s");
        assert_eq!(
            timeout_message(Duration::from_millis(1500)),
            "timeout after 1.5s"
        );
    }
}
