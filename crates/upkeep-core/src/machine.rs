//! The per-service supervision state machine:
//! `step(state, event, now, jitter) -> (state, actions)`.
//!
//! Every exit and every liveness failure goes through one path: stop (if still
//! running) -> backoff -> start. The first start and every restart are the same
//! code. The executor performs the [`Action`]s and feeds back [`Event`]s; it
//! sleeps until [`ServiceState::deadline`] and then sends [`Event::Timer`].

use std::time::{Duration, Instant};
use upkeep_spec::{BackoffSpec, RestartPolicy};

use crate::exit::ExitStatus;

/// Where a service is.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// No process and none wanted (initial, stopped by the operator, removed).
    Stopped,
    /// A spawn was requested; waiting for `Spawned` or `SpawnFailed`.
    Starting,
    /// A process runs.
    Running {
        /// Its pid.
        pid: u32,
    },
    /// A stop was requested (the executor runs preStop, the stop signal, then
    /// SIGKILL after the grace); waiting for `Exited`.
    Stopping {
        /// The pid being stopped.
        pid: u32,
        /// What to do once it is gone.
        then: AfterStop,
    },
    /// Waiting before the next start.
    Backoff {
        /// When to start.
        until: Instant,
    },
    /// The restart policy says not to start again (Never, or OnFailure after exit 0).
    Completed {
        /// The last run failed (non-zero exit or signal).
        failed: bool,
    },
}

/// What follows a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// Stay stopped.
    Stay,
    /// Restart through the backoff path, counting a failure (liveness/startup failure).
    Restart,
    /// Start again at once, no failure counted (operator restart).
    RestartNow,
}

/// Why a probe killed the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKill {
    /// Liveness failed `failure_threshold` times.
    Liveness,
    /// Startup failed `failure_threshold` times.
    Startup,
}

/// Something that happened to a service.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Run it (first start, operator start).
    Start,
    /// Stop it and keep it stopped (file removed, operator stop, shutdown).
    Stop,
    /// Stop it (full grace) and start it again at once (operator restart).
    Restart,
    /// The spawn succeeded.
    Spawned {
        /// pid of the new process.
        pid: u32,
    },
    /// The spawn failed (missing binary, permission, bad interpreter, hostPath check).
    SpawnFailed {
        /// The OS error, in words.
        error: String,
    },
    /// The process exited (and its group was cleaned up).
    Exited {
        /// How.
        status: ExitStatus,
    },
    /// A liveness or startup probe reached its failure threshold.
    ProbeFailed {
        /// Which probe.
        probe: ProbeKill,
    },
    /// The startup probe passed (or there is none): liveness/readiness may run.
    StartupPassed,
    /// Readiness flipped.
    Readiness {
        /// New value.
        ready: bool,
    },
    /// `deadline()` was reached.
    Timer,
}

/// Something the executor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Spawn a new process from the current spec; reply `Spawned`/`SpawnFailed`.
    Spawn,
    /// Stop the running process: preStop, stop signal to the group, SIGKILL to
    /// the group after the grace. Reply `Exited` once the group is empty.
    Terminate {
        /// The probe whose failure caused this, if any (its grace applies).
        probe: Option<ProbeKill>,
    },
    /// Begin probing the new process (startup first).
    StartProbes,
    /// Stop probing.
    StopProbes,
}

/// The state of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceState {
    /// Where it is.
    pub phase: Phase,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Backoff parameters.
    pub backoff: BackoffSpec,
    /// Starts after the first one.
    pub restarts: u64,
    /// Consecutive failed runs, for the backoff.
    pub failures: u32,
    /// When the current (or last) process started.
    pub started_at: Option<Instant>,
    /// When the phase last changed.
    pub since: Instant,
    /// The last exit and when it happened.
    pub last_exit: Option<(ExitStatus, Instant)>,
    /// Startup probe passed (or none).
    pub started: bool,
    /// Readiness (true when there is no readiness probe, once started).
    pub ready: bool,
    /// A human-readable note on the last notable event (spawn error, probe kill).
    pub message: String,
}

impl ServiceState {
    /// A new, stopped service.
    pub fn new(restart: RestartPolicy, backoff: BackoffSpec, now: Instant) -> Self {
        ServiceState {
            phase: Phase::Stopped,
            restart,
            backoff,
            restarts: 0,
            failures: 0,
            started_at: None,
            since: now,
            last_exit: None,
            started: false,
            ready: false,
            message: String::new(),
        }
    }

    /// When the executor must send [`Event::Timer`], if at all.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Backoff { until } => Some(until),
            _ => None,
        }
    }

    /// The pid of the live process, if any.
    pub fn pid(&self) -> Option<u32> {
        match self.phase {
            Phase::Running { pid } | Phase::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// The `/health` state name: running, starting, backoff, stopping, stopped or failed.
    pub fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Stopped => "stopped",
            Phase::Starting => "starting",
            Phase::Running { .. } if !self.started => "starting",
            Phase::Running { .. } => "running",
            Phase::Stopping { .. } => "stopping",
            Phase::Backoff { .. } => "backoff",
            Phase::Completed { failed: false } => "stopped",
            Phase::Completed { failed: true } => "failed",
        }
    }
}

/// Applies one event. `jitter` is a sample in `[0, 1)` for the backoff.
pub fn step(state: ServiceState, event: Event, now: Instant, jitter: f64) -> (ServiceState, Vec<Action>) {
    let _ = (&state, &event, now, jitter, Duration::ZERO);
    todo!("state machine")
}
