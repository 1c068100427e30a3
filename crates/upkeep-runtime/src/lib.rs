//! The executor: everything in upkeep that touches processes, files and the
//! network on behalf of the pure core.
//!
//! - [`reaper`]: the one place that waits for children (subreaper, SIGCHLD,
//!   `waitpid(-1)`), spawning under its lock, pidfds.
//! - [`cgroup`]: per-service cgroups (v2 for tracking and kill, v1 for limits).
//! - [`logs`]: per-service log files with size-based rotation.
//! - [`probe`]: HTTP(S), unix-socket HTTP, TCP and exec probes, and the
//!   per-process probe worker.
//! - [`supervisor`]: per-service actors driving `upkeep_core::machine`, the
//!   reconcile loop, the manifest watcher.
//! - [`spawn`]: building service commands (env, PATH, session, uid/gid,
//!   cgroup), process-group signals, hostPath volumes.
//! - [`lock`] and [`state`]: the state directory.
//! - [`nofile`]: upkeep's open-files limit, raised at start-up; the one
//!   its children get back.
//! - [`usage`]: what services use (cgroup and `/proc` files), for `/metrics`.

#![warn(missing_docs)]
// All the unsafe code of the runtime lives in `spawn` (the one audited module:
// clone3 and its child routine, pre-exec hooks, waitpid, raw signals).
#![deny(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod cgroup;
pub mod events;
pub mod executor;
pub mod lock;
pub mod logs;
pub mod nofile;
pub mod probe;
pub mod reaper;
pub mod signal;
#[allow(unsafe_code)]
pub mod spawn;
pub mod state;
pub mod supervisor;
pub mod usage;
pub mod volumes;
