//! The per-process probe worker (kubelet `pkg/kubelet/prober/worker.go`,
//! kubelet-semantics.md §3.2).
//!
//! One task per configured probe type, so a slow probe never delays another
//! probe (or another service). Timing, as the kubelet:
//!
//! - Each task ticks every `period` from the moment the worker is spawned,
//!   the first tick at once (a tick falls due again at once after an attempt
//!   that overran, then the schedule stays aligned: Go's ticker).
//! - A tick is skipped while less than `initial_delay` has passed since
//!   `started_at` (the process start), so the first real attempt lands on the
//!   first tick at or after `started_at + initial_delay`, up to one period
//!   late. For whole-second delays this equals the kubelet's truncated
//!   `int(secondsSince(start)) < initialDelaySeconds` check.
//! - Startup gates liveness and readiness: their ticks are skipped until the
//!   startup probe has succeeded (their initial delay still counts from the
//!   process start, as in the kubelet's code). When startup succeeds,
//!   readiness runs once at once (the kubelet triggers it on the status
//!   update that follows); liveness waits for its next tick.
//! - An attempt whose result is an error is tried up to [`MAX_TRIES`] times;
//!   if it still errors it counts neither way (it is still reported).
//! - After a liveness failure flip, or any startup flip, that task stops
//!   (the kubelet's `onHold`); readiness probes until the worker is stopped.
//! - Initial results: liveness success, readiness failure, startup unknown.
//!   Without a startup probe a synthetic startup success is reported at
//!   once; without a readiness probe a synthetic readiness success is
//!   reported as soon as startup has passed.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use upkeep_core::probe::{ProbeResult, ProbeTracker};
use upkeep_spec::{Probe, Probes};

use super::{run_once, ExecContext, MAX_TRIES};

/// Which probe of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProbeKind {
    /// Failing it kills the process.
    Liveness,
    /// Failing it marks the process not ready.
    Readiness,
    /// Gates the other two; failing it kills the process.
    Startup,
}

impl ProbeKind {
    /// Lower-case name, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
            ProbeKind::Startup => "startup",
        }
    }

    /// The stored result before any attempt (kubelet: liveness success,
    /// readiness failure, startup unknown).
    pub fn initial(self) -> Option<bool> {
        match self {
            ProbeKind::Liveness => Some(true),
            ProbeKind::Readiness => Some(false),
            ProbeKind::Startup => None,
        }
    }
}

impl std::fmt::Display for ProbeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a worker's trackers start, for a process adopted from an earlier
/// upkeep (a fresh process uses `Initial::default()`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Initial {
    /// The process was ready: readiness starts as success instead of
    /// failure, so an adopted ready service does not drop out of ready while
    /// its first attempts run.
    pub ready: bool,
}

/// One probe attempt, as the worker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// Which probe ran.
    pub kind: ProbeKind,
    /// Its result (after the retries of an error).
    pub result: ProbeResult,
    /// How long the attempt took, retries included (zero for synthetic reports).
    pub duration: Duration,
    /// `Some(new)` when this attempt flipped the stored result.
    pub flip: Option<bool>,
}

/// Handle to the probe tasks of one process. Dropping it (or calling
/// [`ProbeWorker::stop`]) aborts them all; an exec probe in flight has its
/// process group killed.
#[derive(Debug)]
pub struct ProbeWorker {
    tasks: Vec<JoinHandle<()>>,
}

impl ProbeWorker {
    /// Stops every probe task.
    pub fn stop(self) {
        drop(self);
    }

    /// True when no probe task is running any more (each stopped after its
    /// final flip, or the report channel closed).
    pub fn is_finished(&self) -> bool {
        self.tasks.iter().all(JoinHandle::is_finished)
    }
}

impl Drop for ProbeWorker {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

struct Shared {
    started_at: Instant,
    ctx: ExecContext,
    tx: mpsc::UnboundedSender<ProbeReport>,
    initial: Initial,
}

impl Shared {
    /// Sends a synthetic success flip (no probe of that kind).
    fn synthetic(&self, kind: ProbeKind) -> bool {
        self.tx
            .send(ProbeReport {
                kind,
                result: ProbeResult::Success,
                duration: Duration::ZERO,
                flip: Some(true),
            })
            .is_ok()
    }

    fn delay_passed(&self, probe: &Probe) -> bool {
        self.started_at.elapsed() >= probe.initial_delay
    }
}

/// Starts the probes of one process that started at `started_at`, with the
/// trackers set up from `initial`; every attempt is sent on `tx`. Must be
/// called inside a tokio runtime.
pub fn spawn_worker(
    probes: Probes,
    started_at: Instant,
    ctx: ExecContext,
    initial: Initial,
    tx: mpsc::UnboundedSender<ProbeReport>,
) -> ProbeWorker {
    let shared = Arc::new(Shared {
        started_at,
        ctx,
        tx,
        initial,
    });
    let mut tasks = Vec::new();
    let has_readiness = probes.readiness.is_some();
    let (started_tx, started_rx) = watch::channel(false);
    match probes.startup {
        Some(probe) => {
            tasks.push(tokio::spawn(run_startup(
                probe,
                shared.clone(),
                started_tx,
                !has_readiness,
            )));
        }
        None => {
            shared.synthetic(ProbeKind::Startup);
            if !has_readiness {
                shared.synthetic(ProbeKind::Readiness);
            }
            started_tx.send_replace(true);
        }
    }
    if let Some(probe) = probes.liveness {
        tasks.push(tokio::spawn(run_gated(
            ProbeKind::Liveness,
            probe,
            shared.clone(),
            started_rx.clone(),
        )));
    }
    if let Some(probe) = probes.readiness {
        tasks.push(tokio::spawn(run_gated(
            ProbeKind::Readiness,
            probe,
            shared,
            started_rx,
        )));
    }
    ProbeWorker { tasks }
}

fn ticker(period: Duration) -> tokio::time::Interval {
    // A zero period is rejected by the spec; never spin if one slips through.
    let mut ticker = tokio::time::interval(period.max(Duration::from_millis(1)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    ticker
}

/// Runs one attempt (errors tried up to [`MAX_TRIES`] times), records it and
/// reports it. `None` when nobody listens any more.
async fn attempt(
    kind: ProbeKind,
    probe: &Probe,
    tracker: &mut ProbeTracker,
    shared: &Shared,
) -> Option<Option<bool>> {
    let begin = Instant::now();
    let mut result = run_once(&probe.handler, probe.timeout, &shared.ctx).await;
    for _ in 1..MAX_TRIES {
        if !matches!(result, ProbeResult::Error(_)) {
            break;
        }
        result = run_once(&probe.handler, probe.timeout, &shared.ctx).await;
    }
    let duration = begin.elapsed();
    let flip = tracker.record(&result);
    if let Some(state) = flip {
        tracing::debug!(
            probe = kind.as_str(),
            state,
            ?result,
            "probe result flipped"
        );
    }
    shared
        .tx
        .send(ProbeReport {
            kind,
            result,
            duration,
            flip,
        })
        .ok()?;
    Some(flip)
}

async fn run_startup(
    probe: Probe,
    shared: Arc<Shared>,
    started: watch::Sender<bool>,
    synth_readiness: bool,
) {
    let kind = ProbeKind::Startup;
    let mut tracker = ProbeTracker::new(
        probe.success_threshold,
        probe.failure_threshold,
        kind.initial(),
    );
    let mut ticker = ticker(probe.period);
    loop {
        ticker.tick().await;
        if !shared.delay_passed(&probe) {
            continue;
        }
        match attempt(kind, &probe, &mut tracker, &shared).await {
            None => return,
            Some(Some(true)) => {
                if synth_readiness {
                    shared.synthetic(ProbeKind::Readiness);
                }
                started.send_replace(true);
                return;
            }
            // Failed: the supervisor kills the process; this worker is done.
            Some(Some(false)) => return,
            Some(None) => {}
        }
    }
}

async fn run_gated(
    kind: ProbeKind,
    probe: Probe,
    shared: Arc<Shared>,
    mut started: watch::Receiver<bool>,
) {
    let initial = match kind {
        ProbeKind::Readiness if shared.initial.ready => Some(true),
        _ => kind.initial(),
    };
    let mut tracker = ProbeTracker::new(probe.success_threshold, probe.failure_threshold, initial);
    let mut ticker = ticker(probe.period);
    let mut waiting = !*started.borrow_and_update();
    loop {
        tokio::select! {
            biased;
            _ = ticker.tick() => {}
            changed = started.changed(), if waiting => {
                waiting = false;
                let now_started = *started.borrow_and_update();
                if changed.is_err() && !now_started {
                    // Startup failed and its task is gone: nothing to gate on.
                    return;
                }
                if kind != ProbeKind::Readiness || !now_started {
                    continue;
                }
            }
        }
        if !shared.delay_passed(&probe) || !*started.borrow() {
            continue;
        }
        match attempt(kind, &probe, &mut tracker, &shared).await {
            None => return,
            Some(Some(false)) if kind == ProbeKind::Liveness => return,
            Some(_) => {}
        }
    }
}
