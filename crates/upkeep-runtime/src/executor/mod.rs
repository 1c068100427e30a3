//! The executor seam: everything a service actor does to the kernel goes
//! through [`Executor`]. The actor (`supervisor::actor`) only feeds events to
//! `upkeep_core::machine::step` and hands the resulting actions to an
//! executor; it makes no decision of its own.
//!
//! - [`real::RealExecutor`] spawns into a fresh cgroup leaf per generation,
//!   signals through pidfds, kills through `cgroup.kill`, runs preStop hooks
//!   and exec probes inside the service's cgroup.
//! - [`fake::FakeExecutor`] records every call and lets a test decide what
//!   happens (exits, probe results, a group that never empties), so the actor
//!   is tested on tokio's paused clock without root and without forks.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use upkeep_core::machine::{Gen, Target};
use upkeep_core::ExitStatus;
use upkeep_spec::ServiceSpec;

use crate::probe::ProbeReport;
use crate::state::ServiceRecord;

pub mod fake;
pub mod real;

/// Resolves with the exit status of a main process.
pub type ExitFuture = Pin<Box<dyn Future<Output = ExitStatus> + Send>>;

/// Resolves when something is done (a preStop hook ended, a group is empty).
pub type Done = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A probe report tagged with the generation it is about.
pub type TaggedReport = (Gen, ProbeReport);

/// A main process that runs (spawned or adopted).
pub struct Started {
    /// Its pid.
    pub pid: u32,
    /// Resolves when it has exited (and was reaped).
    pub exit: ExitFuture,
    /// When it started (wall clock).
    pub started_wall: SystemTime,
    /// Its start time in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// Its cgroup, relative to the v2 hierarchy, if any.
    pub cgroup: Option<String>,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("pid", &self.pid)
            .field("start_time", &self.start_time)
            .field("cgroup", &self.cgroup)
            .finish_non_exhaustive()
    }
}

/// Why a process could not be started or adopted.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// A hostPath volume could not be prepared.
    #[error(transparent)]
    Volumes(#[from] crate::volumes::VolumesError),
    /// The spawn failed (the message names the program and the cause).
    #[error(transparent)]
    Spawn(std::io::Error),
    /// The process to adopt is gone or is not the recorded one.
    #[error("cannot adopt pid {pid}: {why}")]
    Adopt {
        /// The recorded pid.
        pid: u32,
        /// Why not.
        why: String,
    },
}

/// Everything that touches the kernel on behalf of one service.
///
/// Calls never block for long (a spawn blocks until the child has exec'd);
/// anything that takes time returns a future the actor awaits.
pub trait Executor: Send {
    /// Spawns generation `gen` of `spec` (fresh cgroup leaf, volumes, log).
    fn spawn(&mut self, spec: &ServiceSpec, gen: Gen) -> Result<Started, ExecError>;
    /// Takes over the live process of `rec` as generation `gen`.
    fn adopt(
        &mut self,
        spec: &ServiceSpec,
        rec: &ServiceRecord,
        gen: Gen,
    ) -> Result<Started, ExecError>;
    /// Sends `signal` once to `target` of generation `gen`.
    fn signal(&mut self, gen: Gen, target: Target, signal: i32);
    /// SIGKILLs `target` of generation `gen`.
    fn kill(&mut self, gen: Gen, target: Target);
    /// SIGKILLs what is left of generation `gen`; the future resolves once
    /// nothing is (it never gives up: the machine decides what to say).
    fn kill_group(&mut self, gen: Gen) -> Done;
    /// Generation `gen` is over: release what it held (its cgroup leaf once
    /// empty).
    fn release(&mut self, gen: Gen);
    /// Runs the preStop hook of `spec` for generation `gen`, at most `timeout`.
    fn pre_stop(&mut self, spec: &ServiceSpec, gen: Gen, timeout: Duration) -> Done;
    /// Starts probing generation `gen`; reports go to `tx` tagged with `gen`.
    fn start_probes(
        &mut self,
        spec: &ServiceSpec,
        gen: Gen,
        started_wall: SystemTime,
        initial: ProbeStart,
        tx: mpsc::UnboundedSender<TaggedReport>,
    );
    /// Stops probing (in-flight exec probes are killed).
    fn stop_probes(&mut self);
    /// Applies the resource limits of `spec` to the running service.
    fn set_limits(&mut self, spec: &ServiceSpec);
    /// The service is gone for good: remove its cgroups (once empty).
    fn finish(&mut self);
}

/// Initial probe results of a new probe worker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProbeStart {
    /// The startup probe already passed (adopted process).
    pub started: bool,
    /// Readiness starts as passed (adopted ready process).
    pub ready: bool,
}
