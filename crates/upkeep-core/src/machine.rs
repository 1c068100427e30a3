//! The per-service supervision state machine:
//! `step(state, event, now, jitter) -> (state, actions)`.
//!
//! Every exit and every liveness failure goes through one path: stop (if still
//! running) -> backoff -> start. The first start and every restart are the same
//! code. The executor performs the [`Action`]s and feeds back [`Event`]s; it
//! sleeps until [`ServiceState::deadline`] and then sends [`Event::Timer`].
//!
//! This module owns the decisions only: no clock, no processes, no I/O.
//! The state diagram and the full (phase, event) table are in
//! `docs/architecture.md` ("Supervision state machine"); `tests/machine.rs`
//! checks the code against the same table.
//!
//! Notes for the executor:
//! - Adopting a live process from an earlier upkeep is `Start` followed by
//!   `Spawned { pid }` without actually spawning (it is not counted as a restart).
//! - `Start`/`Restart` on a `Stopped` or `Completed` service is a fresh start
//!   (the failure count is forgotten), so do not send `Start` on a manifest
//!   re-list to a service that completed under `Never`/`OnFailure`.
//! - `Spawned` must only be sent for a requested `Spawn`: in any other phase it
//!   is ignored, and the process it names would be untracked.

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
    /// `step` writes it only for events nobody asked for (exits, spawn
    /// failures, probe kills, `Completed`), appending the restart decision
    /// (`"exit code 1; restarting in 4s"`); requested stops and restarts leave
    /// it to the caller.
    pub message: String,
    /// A `Stop` arrived while `Starting`: the process is terminated as soon as
    /// `Spawned` reports it (or not started at all on `SpawnFailed`). Always
    /// false outside `Starting`.
    pub stop_pending: bool,
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
            stop_pending: false,
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
///
/// Total: every (phase, event) pair is defined, and a pair that makes no sense
/// (an `Exited` while in backoff, a `Spawned` nobody asked for, a stale
/// `Timer`) returns the state unchanged with no actions. Never panics.
///
/// Invariants the executor can rely on (tested as properties):
/// - [`Action::Spawn`] is only emitted when entering `Starting` from a phase
///   with no live process and no spawn outstanding: never two generations.
/// - [`Action::Terminate`] is only emitted when entering `Stopping`.
/// - `ready` is false outside `Running`; `started` is false without a pid;
///   `stop_pending` is false outside `Starting`.
/// - `since` is `now` whenever the phase kind changed or a Spawn was emitted.
pub fn step(
    state: ServiceState,
    event: Event,
    now: Instant,
    jitter: f64,
) -> (ServiceState, Vec<Action>) {
    let mut s = state;
    let mut actions = Vec::new();
    let before = std::mem::discriminant(&s.phase);

    match (s.phase.clone(), event) {
        // === operator / manifest intent ===
        (Phase::Stopped | Phase::Completed { .. }, Event::Start | Event::Restart) => {
            // A deliberate fresh start forgets the old crash loop.
            s.failures = 0;
            begin_start(&mut s, &mut actions);
        }
        (Phase::Backoff { .. }, Event::Start | Event::Restart) => {
            // Skip the wait, but keep the failure count: a crash loop stays one.
            begin_start(&mut s, &mut actions);
        }
        (Phase::Starting, Event::Start | Event::Restart) => s.stop_pending = false,
        (
            Phase::Stopping {
                pid,
                then: AfterStop::Stay,
            },
            Event::Start,
        ) => {
            s.phase = Phase::Stopping {
                pid,
                then: AfterStop::RestartNow,
            };
        }
        (Phase::Stopping { pid, .. }, Event::Restart) => {
            s.phase = Phase::Stopping {
                pid,
                then: AfterStop::RestartNow,
            };
        }
        (Phase::Running { pid }, Event::Restart) => {
            begin_stop(&mut s, pid, AfterStop::RestartNow, None, &mut actions);
        }
        (Phase::Running { pid }, Event::Stop) => {
            begin_stop(&mut s, pid, AfterStop::Stay, None, &mut actions);
        }
        (Phase::Starting, Event::Stop) => s.stop_pending = true,
        (Phase::Stopping { pid, .. }, Event::Stop) => {
            s.phase = Phase::Stopping {
                pid,
                then: AfterStop::Stay,
            };
        }
        (Phase::Backoff { .. } | Phase::Completed { .. }, Event::Stop) => {
            s.phase = Phase::Stopped;
        }

        // === spawn results ===
        (Phase::Starting, Event::Spawned { pid }) => {
            if s.started_at.is_some() {
                s.restarts = s.restarts.saturating_add(1);
            }
            s.started_at = Some(now);
            s.started = false;
            s.ready = false;
            if s.stop_pending {
                begin_stop(&mut s, pid, AfterStop::Stay, None, &mut actions);
            } else {
                s.phase = Phase::Running { pid };
                actions.push(Action::StartProbes);
            }
        }
        (Phase::Starting, Event::SpawnFailed { error }) => {
            s.message = error;
            if s.stop_pending {
                s.phase = Phase::Stopped;
            } else {
                after_run(&mut s, Run::SpawnFailed, now, jitter, &mut actions);
            }
        }

        // === exits ===
        (Phase::Running { .. }, Event::Exited { status }) => {
            s.last_exit = Some((status, now));
            actions.push(Action::StopProbes);
            s.message = status.to_string();
            after_run(&mut s, Run::Exited(status), now, jitter, &mut actions);
        }
        (Phase::Stopping { then, .. }, Event::Exited { status }) => {
            s.last_exit = Some((status, now));
            match then {
                // Requested stops: the requester (operator, file removal,
                // shutdown) owns `message`; the status is in `last_exit`.
                AfterStop::Stay => s.phase = Phase::Stopped,
                AfterStop::RestartNow => {
                    reset_if_healthy(&mut s, now);
                    begin_start(&mut s, &mut actions);
                }
                AfterStop::Restart => {
                    // The message names the probe (set by ProbeFailed).
                    s.message = format!("{}; {status}", s.message);
                    after_run(&mut s, Run::ProbeKilled, now, jitter, &mut actions);
                }
            }
        }

        // === probes ===
        (Phase::Running { pid }, Event::ProbeFailed { probe }) => {
            s.message = match probe {
                ProbeKill::Liveness => "liveness probe failed",
                ProbeKill::Startup => "startup probe failed",
            }
            .into();
            begin_stop(&mut s, pid, AfterStop::Restart, Some(probe), &mut actions);
        }
        (Phase::Running { .. }, Event::StartupPassed) => s.started = true,
        (Phase::Running { .. }, Event::Readiness { ready }) => s.ready = ready,

        // === timer ===
        (Phase::Backoff { until }, Event::Timer) if now >= until => {
            begin_start(&mut s, &mut actions)
        }

        // Everything else is meaningless in this phase: a late or duplicate
        // report, a stale timer, a request already satisfied. Ignore it.
        (_, _) => {}
    }

    // A new spawn attempt is a new `Starting`, even straight after a failed one.
    if std::mem::discriminant(&s.phase) != before || actions.contains(&Action::Spawn) {
        s.since = now;
    }
    if !matches!(s.phase, Phase::Running { .. }) {
        s.ready = false;
    }
    if s.pid().is_none() {
        s.started = false;
    }
    if s.phase != Phase::Starting {
        s.stop_pending = false;
    }
    (s, actions)
}

/// How a run ended, for the restart decision.
#[derive(Debug, Clone, Copy)]
enum Run {
    /// The process exited on its own.
    Exited(ExitStatus),
    /// The spawn failed: no process ran.
    SpawnFailed,
    /// A liveness/startup probe killed it (kubelet: restarted under OnFailure
    /// whatever the exit status; not restarted under Never).
    ProbeKilled,
}

/// `Starting` + [`Action::Spawn`]. Callers only reach it from pid-less phases.
fn begin_start(s: &mut ServiceState, actions: &mut Vec<Action>) {
    s.phase = Phase::Starting;
    actions.push(Action::Spawn);
}

/// `Stopping{pid, then}` + (from `Running`) [`Action::StopProbes`] + [`Action::Terminate`].
fn begin_stop(
    s: &mut ServiceState,
    pid: u32,
    then: AfterStop,
    probe: Option<ProbeKill>,
    actions: &mut Vec<Action>,
) {
    if matches!(s.phase, Phase::Running { .. }) {
        actions.push(Action::StopProbes);
    }
    s.phase = Phase::Stopping { pid, then };
    actions.push(Action::Terminate { probe });
}

/// A run that lasted at least `reset_after` forgets earlier failures.
fn reset_if_healthy(s: &mut ServiceState, now: Instant) {
    if let Some(started) = s.started_at {
        if now.saturating_duration_since(started) >= s.backoff.reset_after {
            s.failures = 0;
        }
    }
}

/// The shortest wait before retrying a spawn that failed (missing binary,
/// permission, bad interpreter), whatever the backoff says.
pub const SPAWN_FAILURE_MIN_DELAY: Duration = Duration::from_millis(100);

/// The restart decision after a run ended (or never began); appends the
/// outcome to `message`.
fn after_run(s: &mut ServiceState, run: Run, now: Instant, jitter: f64, actions: &mut Vec<Action>) {
    let failed = match run {
        Run::Exited(status) => !status.success(),
        Run::SpawnFailed | Run::ProbeKilled => true,
    };
    let restart = match s.restart {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => failed,
        RestartPolicy::Never => false,
    };
    if !restart {
        s.message = format!(
            "{}; not restarting (restart policy {:?})",
            s.message, s.restart
        );
        s.phase = Phase::Completed { failed };
        return;
    }
    if !matches!(run, Run::SpawnFailed) {
        reset_if_healthy(s, now);
    }
    let mut delay = crate::backoff::delay(&s.backoff, s.failures, jitter);
    if matches!(run, Run::SpawnFailed) {
        // A failed exec fails again at once: never retry it in a tight loop,
        // even with a zero backoff (the executor would spin).
        delay = delay.max(SPAWN_FAILURE_MIN_DELAY);
    }
    s.failures = s.failures.saturating_add(1);
    if delay.is_zero() {
        s.message = format!("{}; restarting", s.message);
        begin_start(s, actions);
    } else {
        s.message = format!(
            "{}; restarting in {}",
            s.message,
            crate::crashlog::human_duration(delay)
        );
        s.phase = Phase::Backoff {
            until: add_saturating(now, delay),
        };
    }
}

/// `now + d`, or the latest representable instant on the way there (a delay
/// of centuries is as good as forever, and must not panic).
fn add_saturating(now: Instant, d: Duration) -> Instant {
    let mut d = d;
    loop {
        if let Some(t) = now.checked_add(d) {
            return t;
        }
        d /= 2;
    }
}
