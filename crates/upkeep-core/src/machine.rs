//! The per-service supervision state machine:
//! `step(state, event, now, jitter) -> (state, actions)`.
//!
//! Every lifecycle decision of a service is made here and nowhere else: the
//! first start and the dependency wait, adoption of a process left by an
//! earlier upkeep, spec changes, the operator hold, the stop sequence (preStop,
//! the stop signal to the right processes for the kill mode, the deadline and
//! the SIGKILL escalation), clearing what the main process left behind, the
//! restart decision and its backoff, and the generation check that drops
//! stale reports. The status `message` is written here too.
//!
//! The executor (`upkeep_runtime::executor`) performs the [`Action`]s and
//! feeds back [`Event`]s; it sleeps until [`ServiceState::deadline`] and then
//! sends [`Event::Timer`]. No clock, no processes, no I/O here: `now` is an
//! argument and `jitter` a sample in `[0, 1)`.
//!
//! Generations: every process (spawned or adopted) gets a new generation
//! number. Every report about a process (spawn result, exit, probe result,
//! preStop end, group empty) carries the generation it is about; a report
//! about another generation is stale and ignored, so a late probe result of
//! the previous process can never act on the new one.
//!
//! The table in `docs/architecture.md` ("Transition table") is generated
//! from this function by `tests/machine.rs`, which fails when they differ.

use std::time::{Duration, Instant};
use upkeep_spec::{BackoffSpec, KillMode, RestartPolicy};

use crate::exit::ExitStatus;

/// A process generation: 0 before the first process, then +1 per process.
pub type Gen = u64;

/// Where a service is.
#[derive(Debug, Clone, PartialEq)]
pub enum Phase {
    /// No process and none wanted (initial, held by the operator, removed).
    Stopped,
    /// Wanted, but a service named in `after` is not ready yet.
    Waiting,
    /// A spawn was requested; waiting for `Spawned` or `SpawnFailed`.
    Starting,
    /// A process runs.
    Running {
        /// Its pid.
        pid: u32,
    },
    /// A stop was requested; waiting for the main process to exit.
    Stopping {
        /// The pid being stopped.
        pid: u32,
        /// What to do once everything of it is gone.
        then: AfterStop,
        /// How far the stop sequence got.
        stage: StopStage,
        /// When SIGKILL is due (the grace ends).
        kill_at: Instant,
    },
    /// The main process has exited; what it left behind is being killed.
    /// No new generation starts before the group is empty.
    Draining {
        /// How the main process ended.
        status: ExitStatus,
        /// `Some` when the exit was requested (a stop), with what follows.
        then: Option<AfterStop>,
        /// When the group was last killed (retried every [`DRAIN_RETRY`]).
        last_kill: Instant,
        /// When draining began.
        began: Instant,
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

/// How far a stop got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopStage {
    /// The preStop hook runs; the stop signal follows when it ends.
    PreStop,
    /// The stop signal was sent (exactly once); SIGKILL at `kill_at`.
    Signalled,
    /// SIGKILL was sent.
    Killed,
}

/// What follows a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterStop {
    /// Stay stopped.
    Stay,
    /// Restart through the backoff path, counting a failure (liveness/startup failure).
    Restart,
    /// Start again at once, no failure counted (operator restart, spec change).
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

/// Which processes a signal goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The main process only (through its pidfd).
    Main,
    /// Every process of the generation (its cgroup, or its process group
    /// without cgroups), each exactly once, through pidfds.
    Group,
}

/// The supervision policy of a service: everything of its spec the machine
/// needs. It can change at any time without restarting the process.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Backoff parameters.
    pub backoff: BackoffSpec,
    /// The stop signal number.
    pub stop_signal: i32,
    /// Grace between the stop signal (or the preStop hook) and SIGKILL.
    pub grace: Duration,
    /// The liveness probe's own grace, if it sets one.
    pub liveness_grace: Option<Duration>,
    /// The startup probe's own grace, if it sets one.
    pub startup_grace: Option<Duration>,
    /// The least time between the stop signal and SIGKILL, even after a
    /// preStop hook used the whole grace (the kubelet gives 2 s; 0 for host
    /// services).
    pub min_signal_grace: Duration,
    /// Whether a preStop hook runs before the stop signal.
    pub pre_stop: bool,
    /// Which processes a stop signals.
    pub kill_mode: KillMode,
    /// A startup probe is configured: `started` waits for it.
    pub has_startup_probe: bool,
    /// Planned changes wait for the cluster (issue #16): a serial service
    /// with a `[cluster]` table. A spec change or an operator restart of a
    /// running process is then recorded as [`ServiceState::pending`] and
    /// asked for with [`Action::RequestStep`]; the old process keeps
    /// running until [`Event::StepGranted`]. False: applied at once.
    pub gated: bool,
}

/// A planned change waiting for the cluster's permission.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Planned {
    /// An operator restart (`upkeep restart`).
    Restart,
    /// What is executed changed (a manifest or config edit, or an adopted
    /// process that runs an older spec). Wins over a pending restart.
    SpecChanged,
}

impl Planned {
    /// The event that applies it.
    fn event(self) -> Event {
        match self {
            Planned::Restart => Event::Restart,
            Planned::SpecChanged => Event::SpecChanged,
        }
    }

    /// In words, for `message` and `/health`.
    pub fn as_str(self) -> &'static str {
        match self {
            Planned::Restart => "restart requested",
            Planned::SpecChanged => "spec changed",
        }
    }
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            restart: RestartPolicy::Always,
            backoff: BackoffSpec::default(),
            stop_signal: 15,
            grace: Duration::from_secs(30),
            liveness_grace: None,
            startup_grace: None,
            min_signal_grace: Duration::ZERO,
            pre_stop: false,
            kill_mode: KillMode::ControlGroup,
            has_startup_probe: false,
            gated: false,
        }
    }
}

/// What an earlier upkeep knew about a process that is adopted.
#[derive(Debug, Clone, PartialEq)]
pub struct Adopted {
    /// Its pid (a pidfd is already open on it).
    pub pid: u32,
    /// When it started.
    pub started_at: Instant,
    /// Restarts counted so far.
    pub restarts: u64,
    /// Startup probe had passed.
    pub started: bool,
    /// It was ready.
    pub ready: bool,
    /// It runs the current spec (what is executed has not changed since).
    pub current: bool,
}

/// Something that happened to a service.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Run it (first start, re-added).
    Start,
    /// Stop it and keep it stopped (file removed, shutdown).
    Stop,
    /// Stop it (full grace) and start it again at once (operator restart).
    Restart,
    /// Operator stop: stop and hold until [`Event::Release`].
    Hold,
    /// Operator start: clear the hold and start.
    Release,
    /// What is executed changed: replace the process (stop fully, then start
    /// the new spec), unless held or not running.
    SpecChanged,
    /// The supervision policy changed: applied live, no restart.
    Policy(Box<Policy>),
    /// Which dependencies (`after`) are not ready; empty = all ready.
    Dependencies {
        /// Names of the services not ready yet.
        waiting_for: Vec<String>,
    },
    /// A live process from an earlier upkeep was found.
    Adopt(Adopted),
    /// The spawn of generation `gen` succeeded.
    Spawned {
        /// Generation it was requested for.
        gen: Gen,
        /// pid of the new process.
        pid: u32,
    },
    /// The spawn of generation `gen` failed.
    SpawnFailed {
        /// Generation it was requested for.
        gen: Gen,
        /// The error, in words.
        error: String,
    },
    /// The main process of generation `gen` exited.
    Exited {
        /// Its generation.
        gen: Gen,
        /// How.
        status: ExitStatus,
        /// The run was this long (for the "killed at birth" check).
        ran: Duration,
    },
    /// Nothing of generation `gen` is left (after a [`Action::KillGroup`]).
    GroupEmpty {
        /// Its generation.
        gen: Gen,
    },
    /// The preStop hook of generation `gen` ended (whatever its result).
    PreStopDone {
        /// Its generation.
        gen: Gen,
    },
    /// A liveness or startup probe reached its failure threshold.
    ProbeFailed {
        /// Generation probed.
        gen: Gen,
        /// Which probe.
        probe: ProbeKill,
        /// The last failure, in words.
        why: String,
    },
    /// The startup probe passed (or there is none).
    StartupPassed {
        /// Generation probed.
        gen: Gen,
    },
    /// Readiness flipped.
    Readiness {
        /// Generation probed.
        gen: Gen,
        /// New value.
        ready: bool,
        /// Why it is not ready (the last failure), empty when ready.
        why: String,
    },
    /// `deadline()` was reached.
    Timer,
    /// The cluster allows the pending planned change now (this node holds
    /// the rollout lock and the gate said go): apply it as if it had just
    /// arrived, without waiting. Ignored when nothing is pending.
    StepGranted,
    /// The pending change is no longer wanted (the spec went back to what
    /// runs): forget it. Ignored when nothing is pending.
    StepCancelled,
    /// Why the pending change still waits, for `message`. Ignored when
    /// nothing is pending.
    StepWaiting {
        /// The cluster's reason, e.g. "master m2 holds the rollout lock".
        why: String,
    },
    /// The change just applied failed (not ready within `ready_timeout`):
    /// replace the process at once with the last good spec (the executor
    /// already holds it again), whatever the phase, and say why.
    RollBack {
        /// Why, e.g. "not ready within 5m".
        why: String,
    },
}

/// Something the executor must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Spawn generation `gen` from the current spec (in a fresh cgroup);
    /// reply `Spawned`/`SpawnFailed` with the same `gen`.
    Spawn {
        /// The new generation.
        gen: Gen,
    },
    /// Begin probing generation `gen` (startup first). `ready`/`started`
    /// give the initial results (an adopted process keeps its own).
    StartProbes {
        /// Generation to probe.
        gen: Gen,
        /// Start with the startup probe passed.
        started: bool,
        /// Start with readiness passed.
        ready: bool,
    },
    /// Stop probing.
    StopProbes,
    /// Run the preStop hook of generation `gen`, for at most `timeout`;
    /// reply `PreStopDone`.
    RunPreStop {
        /// Generation being stopped.
        gen: Gen,
        /// How long it may run.
        timeout: Duration,
    },
    /// Send `signal` to `target` of generation `gen`, once.
    Signal {
        /// Generation.
        gen: Gen,
        /// Who gets it.
        target: Target,
        /// Signal number.
        signal: i32,
    },
    /// SIGKILL `target` of generation `gen` (`cgroup.kill` for a group).
    Kill {
        /// Generation.
        gen: Gen,
        /// Who gets it.
        target: Target,
    },
    /// SIGKILL whatever is left of generation `gen` and reply `GroupEmpty`
    /// once nothing is (at once if nothing is left).
    KillGroup {
        /// Generation.
        gen: Gen,
    },
    /// Generation `gen` is over as far as supervision goes: the executor may
    /// release its resources (remove its cgroup once empty).
    Release {
        /// Generation.
        gen: Gen,
    },
    /// Something is wrong that an operator must see (logged at error level).
    Alarm(String),
    /// A planned change is pending (see [`Policy::gated`]): ask the cluster
    /// coordinator for a step; it answers [`Event::StepGranted`] (or
    /// [`Event::StepWaiting`] meanwhile). Emitted again on every new change.
    RequestStep {
        /// What is pending.
        planned: Planned,
    },
}

/// How long draining waits between two kills of what is left.
pub const DRAIN_RETRY: Duration = Duration::from_secs(1);

/// After this long in `Draining`, the message says that the old generation
/// cannot be cleared.
pub const DRAIN_WARN_AFTER: Duration = Duration::from_secs(5);

/// A SIGKILL this soon after the spawn that upkeep did not send is reported
/// as an alarm (a killed cgroup, an OOM at birth, a hostile neighbour).
pub const KILLED_AT_BIRTH: Duration = Duration::from_millis(100);

/// The shortest wait before retrying a spawn that failed (missing binary,
/// permission, bad interpreter), whatever the backoff says.
pub const SPAWN_FAILURE_MIN_DELAY: Duration = Duration::from_millis(100);

/// The state of one service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceState {
    /// Where it is.
    pub phase: Phase,
    /// The supervision policy.
    pub policy: Policy,
    /// The current (or last) generation.
    pub gen: Gen,
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
    /// Held by the operator (`upkeep stop`): nothing starts it but `Release`.
    pub held: bool,
    /// Dependencies not ready yet (from the last `Dependencies` event).
    pub waiting_for: Vec<String>,
    /// Why the service is where it is, for `/health` and `upkeep status`.
    pub message: String,
    /// A `Stop` arrived while `Starting`: the process is stopped as soon as
    /// `Spawned` reports it (or not started at all on `SpawnFailed`).
    pub stop_pending: bool,
    /// A restart or spec change arrived while `Starting`: the new process is
    /// replaced as soon as `Spawned` reports it. Always false outside `Starting`.
    pub restart_after_spawn: bool,
    /// Whether upkeep sent SIGKILL to the current generation (so a
    /// SIGKILL exit is not a surprise).
    pub killed: bool,
    /// A planned change waiting for [`Event::StepGranted`] (only ever set
    /// when [`Policy::gated`]). Kept across crashes: a crash restart starts
    /// what ran before, and the change still waits.
    pub pending: Option<Planned>,
}

impl ServiceState {
    /// A new, stopped service.
    pub fn new(policy: Policy, now: Instant) -> Self {
        ServiceState {
            phase: Phase::Stopped,
            policy,
            gen: 0,
            restarts: 0,
            failures: 0,
            started_at: None,
            since: now,
            last_exit: None,
            started: false,
            ready: false,
            held: false,
            waiting_for: Vec::new(),
            message: String::new(),
            stop_pending: false,
            restart_after_spawn: false,
            killed: false,
            pending: None,
        }
    }

    /// When the executor must send [`Event::Timer`], if at all.
    pub fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Backoff { until } => Some(*until),
            Phase::Stopping {
                stage: StopStage::PreStop | StopStage::Signalled,
                kill_at,
                ..
            } => Some(*kill_at),
            // Killed but not gone: SIGKILL again every DRAIN_RETRY (a process
            // in uninterruptible sleep dies only once it leaves it).
            Phase::Stopping {
                stage: StopStage::Killed,
                kill_at,
                ..
            } => Some(*kill_at + DRAIN_RETRY),
            Phase::Draining { last_kill, .. } => Some(*last_kill + DRAIN_RETRY),
            _ => None,
        }
    }

    /// The pid of the live main process, if any.
    pub fn pid(&self) -> Option<u32> {
        match self.phase {
            Phase::Running { pid } | Phase::Stopping { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// True when nothing of the service runs and nothing is under way: an
    /// actor that is being removed may end.
    pub fn is_quiet(&self) -> bool {
        matches!(
            self.phase,
            Phase::Stopped | Phase::Waiting | Phase::Backoff { .. } | Phase::Completed { .. }
        )
    }

    /// The `/health` state name: running, starting, backoff, stopping,
    /// stopped or failed.
    pub fn state_name(&self) -> &'static str {
        match self.phase {
            Phase::Stopped => "stopped",
            Phase::Waiting | Phase::Starting => "starting",
            Phase::Running { .. } if !self.started => "starting",
            Phase::Running { .. } => "running",
            Phase::Stopping { .. } => "stopping",
            Phase::Draining { then: Some(_), .. } => "stopping",
            Phase::Draining { then: None, .. } => "stopping",
            Phase::Backoff { .. } => "backoff",
            Phase::Completed { failed: false } => "stopped",
            Phase::Completed { failed: true } => "failed",
        }
    }
}

/// Applies one event. `jitter` is a sample in `[0, 1)` for the backoff.
///
/// Total: every (phase, event) pair is defined, and a pair that makes no sense
/// (an `Exited` of another generation, a `Spawned` nobody asked for, a stale
/// `Timer`) returns the state unchanged with no actions. Never panics.
///
/// Invariants the executor can rely on (tested as properties):
/// - [`Action::Spawn`] is only emitted when entering `Starting` from a phase
///   with no live process, no outstanding spawn and nothing left of the
///   previous generation: never two generations.
/// - The stop signal is sent at most once per generation.
/// - `ready` is false outside `Running`; `started` is false without a pid;
///   `stop_pending` is false outside `Starting`.
pub fn step(
    state: ServiceState,
    event: Event,
    now: Instant,
    jitter: f64,
) -> (ServiceState, Vec<Action>) {
    let mut s = state;
    // === planned changes under the cluster (issue #16) ===
    // Only a running process waits: a first start, a crash restart, a
    // liveness kill and anything not running never do.
    let running = matches!(s.phase, Phase::Running { .. });
    match event {
        Event::Restart | Event::SpecChanged if s.policy.gated && running && !s.held => {
            let planned = if event == Event::Restart {
                Planned::Restart
            } else {
                Planned::SpecChanged
            };
            let planned = s.pending.map_or(planned, |p| p.max(planned));
            s.pending = Some(planned);
            s.message = format!(
                "pending: {}: waiting for the rollout lock",
                planned.as_str()
            );
            (s, vec![Action::RequestStep { planned }])
        }
        Event::Adopt(ad)
            if s.policy.gated && !ad.current && !s.held && s.phase == Phase::Stopped =>
        {
            // Take the process over as current, then let the change wait.
            let pid = ad.pid;
            let (mut s, mut a) = step_now(
                s,
                Event::Adopt(Adopted {
                    current: true,
                    ..ad
                }),
                now,
                jitter,
            );
            s.pending = Some(Planned::SpecChanged);
            s.message = format!(
                "pending: adopted pid {pid}: the spec changed while upkeep was away: waiting for the rollout lock"
            );
            a.push(Action::RequestStep {
                planned: Planned::SpecChanged,
            });
            (s, a)
        }
        Event::StepGranted => {
            let Some(planned) = s.pending.take() else {
                return (s, Vec::new());
            };
            if s.message.starts_with("pending: ") {
                s.message.clear();
            }
            step_now(s, planned.event(), now, jitter)
        }
        Event::StepCancelled => {
            if s.pending.take().is_some() && s.message.starts_with("pending: ") {
                s.message.clear();
            }
            (s, Vec::new())
        }
        Event::StepWaiting { why } => {
            if let Some(p) = s.pending {
                s.message = format!("pending: {}: {why}", p.as_str());
            }
            (s, Vec::new())
        }
        Event::RollBack { why } => {
            s.pending = None;
            let (mut s, a) = step_now(s, Event::SpecChanged, now, jitter);
            s.message = format!("rollout halted: {why}; rolled back to the last good spec");
            (s, a)
        }
        Event::SpecChanged => {
            // Applied at once (not gated, held, or not running): nothing
            // waits any more.
            s.pending = None;
            step_now(s, Event::SpecChanged, now, jitter)
        }
        Event::Restart => {
            if s.pending == Some(Planned::Restart) {
                s.pending = None;
            }
            step_now(s, Event::Restart, now, jitter)
        }
        event => step_now(s, event, now, jitter),
    }
}

/// [`step`] without the cluster's wait: every event applies at once.
fn step_now(
    state: ServiceState,
    event: Event,
    now: Instant,
    jitter: f64,
) -> (ServiceState, Vec<Action>) {
    let mut s = state;
    let mut a = Vec::new();
    let before = std::mem::discriminant(&s.phase);
    let gen = s.gen;

    match (s.phase.clone(), event) {
        // === policy and dependencies: never change the phase on their own ===
        (_, Event::Policy(p)) => {
            s.policy = *p;
        }
        (phase, Event::Dependencies { waiting_for }) => {
            s.waiting_for = waiting_for;
            if phase == Phase::Waiting {
                if s.waiting_for.is_empty() {
                    s.message.clear();
                    begin_start(&mut s, &mut a);
                } else {
                    s.message = waiting_message(&s.waiting_for);
                }
            }
        }

        // === operator hold ===
        (phase, Event::Hold) => {
            s.held = true;
            s.message = "stopped by operator".into();
            request_stop(&mut s, phase, now, &mut a);
        }
        (phase, Event::Release) => {
            s.held = false;
            s.message.clear();
            match phase {
                Phase::Stopped | Phase::Completed { .. } => {
                    s.failures = 0;
                    start_or_wait(&mut s, &mut a);
                }
                Phase::Starting => s.stop_pending = false,
                Phase::Stopping {
                    then: AfterStop::Stay,
                    ..
                } => set_then(&mut s, AfterStop::RestartNow),
                Phase::Draining {
                    then: Some(AfterStop::Stay),
                    ..
                } => set_then(&mut s, AfterStop::RestartNow),
                _ => {}
            }
        }
        (_, Event::Start | Event::Restart | Event::SpecChanged) if s.held => {}

        // === intent ===
        (Phase::Stopped | Phase::Completed { .. }, Event::Start | Event::Restart) => {
            // A deliberate fresh start forgets the old crash loop.
            s.failures = 0;
            start_or_wait(&mut s, &mut a);
        }
        (Phase::Completed { .. }, Event::SpecChanged) => {
            s.failures = 0;
            s.message = "spec changed: starting the new spec".into();
            start_or_wait(&mut s, &mut a);
        }
        (Phase::Backoff { .. }, Event::Start | Event::Restart) => {
            // Skip the wait, but keep the failure count: a crash loop stays one.
            begin_start(&mut s, &mut a);
        }
        (Phase::Backoff { .. }, Event::SpecChanged) => {
            // A new spec deserves a fresh chance.
            s.failures = 0;
            s.message = "spec changed: starting the new spec".into();
            begin_start(&mut s, &mut a);
        }
        (Phase::Starting, Event::Start) => s.stop_pending = false,
        // A new spec does not undo a stop (removal, shutdown): the next
        // start uses it.
        (Phase::Starting, Event::SpecChanged) if s.stop_pending => {}
        (
            Phase::Stopping {
                then: AfterStop::Stay,
                ..
            }
            | Phase::Draining {
                then: Some(AfterStop::Stay),
                ..
            },
            Event::SpecChanged,
        ) => {}
        (Phase::Starting, Event::Restart | Event::SpecChanged) => {
            // The spawn under way uses the old spec: replace it once it reports.
            s.stop_pending = false;
            s.message = "spec changed: replacing the process being started".into();
            s.restart_after_spawn = true;
        }
        (Phase::Running { .. }, Event::Restart) => {
            s.message = "restart requested".into();
            begin_stop(&mut s, AfterStop::RestartNow, None, now, &mut a);
        }
        (Phase::Running { .. }, Event::SpecChanged) => {
            s.message = "spec changed: replacing the process".into();
            begin_stop(&mut s, AfterStop::RestartNow, None, now, &mut a);
        }
        (Phase::Stopping { .. } | Phase::Draining { .. }, Event::Start) => {
            if matches!(
                s.phase,
                Phase::Stopping {
                    then: AfterStop::Stay,
                    ..
                } | Phase::Draining {
                    then: Some(AfterStop::Stay),
                    ..
                }
            ) {
                set_then(&mut s, AfterStop::RestartNow);
            }
        }
        (Phase::Stopping { .. } | Phase::Draining { .. }, Event::Restart | Event::SpecChanged) => {
            set_then(&mut s, AfterStop::RestartNow);
        }
        (phase, Event::Stop) => request_stop(&mut s, phase, now, &mut a),
        (Phase::Waiting, Event::Restart | Event::SpecChanged) => {}

        // === adoption ===
        (Phase::Stopped, Event::Adopt(ad)) => {
            s.gen += 1;
            s.phase = Phase::Running { pid: ad.pid };
            s.started_at = Some(ad.started_at);
            s.restarts = ad.restarts;
            s.started = ad.started;
            s.ready = ad.ready;
            s.killed = false;
            s.message = format!("adopted pid {} from a previous upkeep", ad.pid);
            a.push(Action::StartProbes {
                gen: s.gen,
                started: ad.started,
                ready: ad.ready,
            });
            if s.held {
                s.message = format!(
                    "adopted pid {} while held by the operator: stopping it",
                    ad.pid
                );
                begin_stop(&mut s, AfterStop::Stay, None, now, &mut a);
            } else if !ad.current {
                s.message = format!(
                    "adopted pid {}: the spec changed while upkeep was away: replacing it",
                    ad.pid
                );
                begin_stop(&mut s, AfterStop::RestartNow, None, now, &mut a);
            }
        }

        // === spawn results ===
        (Phase::Starting, Event::Spawned { gen: g, pid }) if g == gen => {
            if s.started_at.is_some() {
                s.restarts = s.restarts.saturating_add(1);
            }
            s.started_at = Some(now);
            // Without a startup probe the process counts as started at once.
            s.started = !s.policy.has_startup_probe;
            s.ready = false;
            s.killed = false;
            s.phase = Phase::Running { pid };
            if s.stop_pending {
                begin_stop(&mut s, AfterStop::Stay, None, now, &mut a);
            } else if std::mem::take(&mut s.restart_after_spawn) {
                begin_stop(&mut s, AfterStop::RestartNow, None, now, &mut a);
            } else {
                // The cause of the wait (the last exit and the restart
                // decision, a failed start) is gone: `last_exit` keeps the
                // exit, the event log the story. A rollout halt stays: it
                // lasts until the operator resumes or a new change comes.
                if !s.message.starts_with("rollout halted") {
                    s.message.clear();
                }
                a.push(Action::StartProbes {
                    gen,
                    started: false,
                    ready: false,
                });
            }
        }
        (Phase::Starting, Event::SpawnFailed { gen: g, error }) if g == gen => {
            s.message = error;
            a.push(Action::Release { gen });
            if s.stop_pending {
                s.phase = Phase::Stopped;
            } else if std::mem::take(&mut s.restart_after_spawn) {
                // The replacement is a start, as after a stop (RestartNow).
                start_or_wait(&mut s, &mut a);
            } else {
                after_run(&mut s, Run::SpawnFailed, now, jitter, &mut a);
            }
        }

        // === exits ===
        (
            Phase::Running { .. },
            Event::Exited {
                gen: g,
                status,
                ran,
            },
        ) if g == gen => {
            s.last_exit = Some((status, now));
            a.push(Action::StopProbes);
            s.message = status.to_string();
            if let Some(text) = killed_at_birth(&s, status, ran) {
                s.message = text.clone();
                a.push(Action::Alarm(text));
            }
            main_gone(&mut s, status, None, now, jitter, &mut a);
        }
        (
            Phase::Stopping { then, .. },
            Event::Exited {
                gen: g,
                status,
                ran,
            },
        ) if g == gen => {
            s.last_exit = Some((status, now));
            // A stop under way hides no SIGKILL upkeep did not send; the
            // requester keeps the message.
            if let Some(text) = killed_at_birth(&s, status, ran) {
                a.push(Action::Alarm(text));
            }
            main_gone(&mut s, status, Some(then), now, jitter, &mut a);
        }
        (Phase::Draining { status, then, .. }, Event::GroupEmpty { gen: g }) if g == gen => {
            group_gone(&mut s, status, then, now, jitter, &mut a);
        }

        // === the stop sequence ===
        (
            Phase::Stopping {
                stage: StopStage::PreStop,
                ..
            },
            Event::PreStopDone { gen: g },
        ) if g == gen => send_stop_signal(&mut s, now, &mut a),
        (
            Phase::Stopping {
                stage: StopStage::PreStop,
                kill_at,
                ..
            },
            Event::Timer,
        ) if now >= kill_at => {
            // The hook used the whole grace: signal now, SIGKILL after the minimum.
            send_stop_signal(&mut s, now, &mut a)
        }
        (
            Phase::Stopping {
                stage: StopStage::Signalled,
                kill_at,
                pid,
                then,
            },
            Event::Timer,
        ) if now >= kill_at => {
            s.killed = true;
            s.phase = Phase::Stopping {
                pid,
                then,
                stage: StopStage::Killed,
                // From now on: when SIGKILL was last sent.
                kill_at: now.max(kill_at),
            };
            a.push(Action::Kill {
                gen,
                target: kill_target(s.policy.kill_mode),
            });
        }
        (
            Phase::Stopping {
                stage: StopStage::Killed,
                kill_at,
                pid,
                then,
            },
            Event::Timer,
        ) if now >= kill_at + DRAIN_RETRY => {
            // Still there after SIGKILL: kill again, and say so (the state
            // stays `stopping`; nothing new starts meanwhile).
            s.phase = Phase::Stopping {
                pid,
                then,
                stage: StopStage::Killed,
                kill_at: now,
            };
            let note = format!(
                "pid {pid} has not exited after SIGKILL (uninterruptible sleep?): killing again"
            );
            if !s.message.contains("has not exited after SIGKILL") {
                s.message = if s.message.is_empty() {
                    note
                } else {
                    format!("{}; {note}", s.message)
                };
            }
            a.push(Action::Kill {
                gen,
                target: kill_target(s.policy.kill_mode),
            });
        }
        (
            Phase::Draining {
                began,
                status,
                then,
                ..
            },
            Event::Timer,
        ) if s.deadline().is_some_and(|d| now >= d) => {
            s.phase = Phase::Draining {
                status,
                then,
                last_kill: now,
                began,
            };
            let waited = now.saturating_duration_since(began);
            if waited >= DRAIN_WARN_AFTER {
                // Appended, so the cause (exit status, probe, requester) stays.
                let cause = without_drain_note(&s.message);
                let note = format!(
                    "{DRAIN_NOTE} {} after SIGKILL: not starting a new one until they are gone",
                    crate::crashlog::human_duration(waited)
                );
                s.message = if cause.is_empty() {
                    note
                } else {
                    format!("{cause}; {note}")
                };
            }
            a.push(Action::KillGroup { gen });
        }

        // === probes ===
        (Phase::Running { .. }, Event::ProbeFailed { gen: g, probe, why }) if g == gen => {
            s.message = match probe {
                ProbeKill::Liveness => format!("liveness probe failed: {why}"),
                ProbeKill::Startup => format!("startup probe failed: {why}"),
            };
            begin_stop(&mut s, AfterStop::Restart, Some(probe), now, &mut a);
        }
        (Phase::Running { .. }, Event::StartupPassed { gen: g }) if g == gen => s.started = true,
        (Phase::Running { .. }, Event::Readiness { gen: g, ready, why }) if g == gen => {
            s.ready = ready;
            if !ready {
                s.message = format!("readiness probe failed: {why}");
            } else if s.message.starts_with("readiness probe failed") {
                s.message.clear();
            }
        }

        // === timer ===
        (Phase::Backoff { until }, Event::Timer) if now >= until => begin_start(&mut s, &mut a),

        // Everything else is meaningless in this phase: a late or stale
        // report, a stale timer, a request already satisfied. Ignore it.
        (_, _) => {}
    }

    // A new spawn attempt is a new `Starting`, even straight after a failed one.
    let spawned = a.iter().any(|x| matches!(x, Action::Spawn { .. }));
    if std::mem::discriminant(&s.phase) != before || spawned {
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
        s.restart_after_spawn = false;
    }
    (s, a)
}

/// The start of the note that draining adds to `message` after
/// [`DRAIN_WARN_AFTER`].
const DRAIN_NOTE: &str = "processes of the old generation are still present";

/// `message` without the draining note (and the `"; "` before it).
fn without_drain_note(message: &str) -> &str {
    match message.find(DRAIN_NOTE) {
        Some(i) => {
            let cause = &message[..i];
            cause.strip_suffix("; ").unwrap_or(cause)
        }
        None => message,
    }
}

/// The alarm text for a SIGKILL exit within [`KILLED_AT_BIRTH`] of the start
/// that upkeep did not send, if this exit is one.
fn killed_at_birth(s: &ServiceState, status: ExitStatus, ran: Duration) -> Option<String> {
    (status.signal() == Some(9) && !s.killed && ran < KILLED_AT_BIRTH).then(|| {
        format!(
            "killed by SIGKILL {} ms after start, not by upkeep (a killed cgroup, the OOM killer, or another process)",
            ran.as_millis()
        )
    })
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

fn waiting_message(names: &[String]) -> String {
    format!("waiting for {} to be ready", names.join(", "))
}

/// Starts now, or waits for the dependencies.
fn start_or_wait(s: &mut ServiceState, a: &mut Vec<Action>) {
    if s.waiting_for.is_empty() {
        begin_start(s, a);
    } else {
        s.phase = Phase::Waiting;
        s.message = waiting_message(&s.waiting_for);
    }
}

/// `Starting` + [`Action::Spawn`] of a new generation. Callers only reach it
/// from phases with nothing of the service left.
fn begin_start(s: &mut ServiceState, a: &mut Vec<Action>) {
    s.gen += 1;
    s.phase = Phase::Starting;
    a.push(Action::Spawn { gen: s.gen });
}

/// A stop in any phase (operator hold, removal, shutdown).
fn request_stop(s: &mut ServiceState, phase: Phase, now: Instant, a: &mut Vec<Action>) {
    match phase {
        Phase::Running { .. } => begin_stop(s, AfterStop::Stay, None, now, a),
        Phase::Starting => s.stop_pending = true,
        Phase::Stopping { .. } | Phase::Draining { then: Some(_), .. } => {
            set_then(s, AfterStop::Stay)
        }
        Phase::Draining {
            status,
            last_kill,
            began,
            then: None,
        } => {
            s.phase = Phase::Draining {
                status,
                then: Some(AfterStop::Stay),
                last_kill,
                began,
            }
        }
        Phase::Backoff { .. } | Phase::Completed { .. } | Phase::Waiting => {
            s.phase = Phase::Stopped
        }
        Phase::Stopped => {}
    }
}

/// Changes what follows the stop under way.
fn set_then(s: &mut ServiceState, new: AfterStop) {
    match &mut s.phase {
        Phase::Stopping { then, .. } => *then = new,
        Phase::Draining { then, .. } => *then = Some(new),
        _ => {}
    }
}

/// `Running` -> `Stopping`: stop probing, then preStop or the stop signal.
fn begin_stop(
    s: &mut ServiceState,
    then: AfterStop,
    probe: Option<ProbeKill>,
    now: Instant,
    a: &mut Vec<Action>,
) {
    let Phase::Running { pid } = s.phase else {
        return;
    };
    a.push(Action::StopProbes);
    let grace = match probe {
        Some(ProbeKill::Liveness) => s.policy.liveness_grace.unwrap_or(s.policy.grace),
        Some(ProbeKill::Startup) => s.policy.startup_grace.unwrap_or(s.policy.grace),
        None => s.policy.grace,
    };
    let kill_at = add_saturating(now, grace);
    if s.policy.pre_stop && !grace.is_zero() {
        s.phase = Phase::Stopping {
            pid,
            then,
            stage: StopStage::PreStop,
            kill_at,
        };
        a.push(Action::RunPreStop {
            gen: s.gen,
            timeout: grace,
        });
    } else {
        s.phase = Phase::Stopping {
            pid,
            then,
            stage: StopStage::PreStop,
            kill_at,
        };
        send_stop_signal(s, now, a);
    }
}

/// Who SIGKILL reaches at the end of the grace: only the main process under
/// `process`, every process of the generation otherwise.
fn kill_target(mode: KillMode) -> Target {
    match mode {
        KillMode::Process => Target::Main,
        KillMode::ControlGroup | KillMode::Mixed => Target::Group,
    }
}

/// The one stop signal of this generation; SIGKILL is due at the end of the
/// grace, and never sooner than `min_signal_grace` from now.
fn send_stop_signal(s: &mut ServiceState, now: Instant, a: &mut Vec<Action>) {
    let Phase::Stopping {
        pid, then, kill_at, ..
    } = s.phase
    else {
        return;
    };
    let kill_at = kill_at.max(add_saturating(now, s.policy.min_signal_grace));
    // SIGKILL as the stop signal is upkeep's own SIGKILL.
    s.killed |= s.policy.stop_signal == 9;
    s.phase = Phase::Stopping {
        pid,
        then,
        stage: StopStage::Signalled,
        kill_at,
    };
    let target = match s.policy.kill_mode {
        KillMode::ControlGroup => Target::Group,
        KillMode::Process | KillMode::Mixed => Target::Main,
    };
    a.push(Action::Signal {
        gen: s.gen,
        target,
        signal: s.policy.stop_signal,
    });
}

/// The main process of the current generation is gone.
fn main_gone(
    s: &mut ServiceState,
    status: ExitStatus,
    then: Option<AfterStop>,
    now: Instant,
    jitter: f64,
    a: &mut Vec<Action>,
) {
    match s.policy.kill_mode {
        KillMode::Process => group_gone(s, status, then, now, jitter, a),
        KillMode::ControlGroup | KillMode::Mixed => {
            // A container ends with its main process: what it left is killed,
            // and nothing new starts before it is gone.
            s.phase = Phase::Draining {
                status,
                then,
                last_kill: now,
                began: now,
            };
            a.push(Action::KillGroup { gen: s.gen });
        }
    }
}

/// Nothing of the current generation is left (or, under `KillMode::Process`,
/// the main process is gone): release it and decide what follows.
fn group_gone(
    s: &mut ServiceState,
    status: ExitStatus,
    then: Option<AfterStop>,
    now: Instant,
    jitter: f64,
    a: &mut Vec<Action>,
) {
    a.push(Action::Release { gen: s.gen });
    s.message = without_drain_note(&s.message).to_string();
    match then {
        None => after_run(s, Run::Exited(status), now, jitter, a),
        // Requested stops: the requester owns `message`; the status is in `last_exit`.
        Some(AfterStop::Stay) => s.phase = Phase::Stopped,
        Some(AfterStop::RestartNow) => {
            reset_if_healthy(s, now);
            if s.message.starts_with("spec changed")
                || s.message.starts_with("restart requested")
                || s.message.starts_with("adopted pid")
            {
                s.message.clear();
            }
            // A start like any other: it waits for the dependencies.
            start_or_wait(s, a);
        }
        Some(AfterStop::Restart) => {
            // The message names the probe (set by ProbeFailed).
            s.message = format!("{}; {status}", s.message);
            after_run(s, Run::ProbeKilled, now, jitter, a);
        }
    }
}

/// A run that lasted at least `reset_after` forgets earlier failures.
fn reset_if_healthy(s: &mut ServiceState, now: Instant) {
    if let Some(started) = s.started_at {
        if now.saturating_duration_since(started) >= s.policy.backoff.reset_after {
            s.failures = 0;
        }
    }
}

/// The restart decision after a run ended (or never began); appends the
/// outcome to `message`.
fn after_run(s: &mut ServiceState, run: Run, now: Instant, jitter: f64, a: &mut Vec<Action>) {
    let failed = match run {
        Run::Exited(status) => !status.success(),
        Run::SpawnFailed | Run::ProbeKilled => true,
    };
    let restart = match s.policy.restart {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => failed,
        RestartPolicy::Never => false,
    };
    if !restart {
        let policy = match s.policy.restart {
            RestartPolicy::Always => "Always",
            RestartPolicy::OnFailure => "OnFailure",
            RestartPolicy::Never => "Never",
        };
        s.message = format!("{}; not restarting (restart policy {policy})", s.message);
        s.phase = Phase::Completed { failed };
        return;
    }
    if !matches!(run, Run::SpawnFailed) {
        reset_if_healthy(s, now);
    }
    let mut delay = crate::backoff::delay(&s.policy.backoff, s.failures, jitter);
    if matches!(run, Run::SpawnFailed) {
        // A failed exec fails again at once: never retry it in a tight loop,
        // even with a zero backoff (the executor would spin).
        delay = delay.max(SPAWN_FAILURE_MIN_DELAY);
    }
    s.failures = s.failures.saturating_add(1);
    if delay.is_zero() {
        s.message = format!("{}; restarting", s.message);
        begin_start(s, a);
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
pub fn add_saturating(now: Instant, d: Duration) -> Instant {
    let mut d = d;
    loop {
        if let Some(t) = now.checked_add(d) {
            return t;
        }
        d /= 2;
    }
}
