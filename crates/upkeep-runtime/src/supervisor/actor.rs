//! One actor per service: feeds events to `machine::step`, hands the actions
//! to its [`Executor`], and publishes the snapshot and the adoption record.
//! It decides nothing: every decision is the machine's.

use super::*;
use crate::executor::{Done, Executor, ExitFuture, ProbeStart, TaggedReport};
use upkeep_core::machine::{Adopted, Gen, Policy};
use upkeep_spec::KillMode;

/// A small xorshift RNG for backoff jitter (no crate needed for this).
struct Jitter(u64);

impl Jitter {
    fn new() -> Self {
        let t = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        Jitter(t ^ (u64::from(std::process::id()) << 32) | 1)
    }

    fn sample(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The live main process of an actor.
struct Proc {
    gen: Gen,
    pid: u32,
    started_wall: SystemTime,
    started: tokio::time::Instant,
    start_time: u64,
    cgroup: Option<String>,
    /// The hashes of the spec it was started from (a record describes the
    /// process that runs, not the spec that is wanted).
    spec_hash: String,
    exec_hash: String,
    /// The memory cgroup's OOM kill count before it started (OOMKilled).
    oom_kills: Option<u64>,
}

/// How an actor begins.
pub(super) enum Initial {
    /// Start it (after its dependencies are ready).
    Start,
    /// A process from an earlier upkeep runs it: watch it.
    Adopt(ServiceRecord),
}

/// The supervision policy of `spec`, as the machine sees it.
pub(super) fn policy_of(spec: &ServiceSpec) -> Policy {
    let is_pod = matches!(spec.origin, Origin::StaticPod { .. });
    Policy {
        restart: spec.restart,
        backoff: spec.backoff,
        stop_signal: spawn::signal_number(&spec.stop_signal).unwrap_or(libc::SIGTERM),
        grace: spec.stop_grace,
        liveness_grace: spec
            .probes
            .liveness
            .as_ref()
            .and_then(|p| p.termination_grace),
        startup_grace: spec
            .probes
            .startup
            .as_ref()
            .and_then(|p| p.termination_grace),
        // The kubelet gives the stop signal at least 2 s after a preStop hook.
        min_signal_grace: if is_pod {
            Duration::from_secs(2)
        } else {
            Duration::ZERO
        },
        pre_stop: spec.pre_stop.is_some(),
        kill_mode: if is_pod {
            KillMode::ControlGroup
        } else {
            spec.kill_mode
        },
        has_startup_probe: spec.probes.startup.is_some(),
        // Set by `rollout::policy` when the cluster coordinates planned changes.
        gated: false,
    }
}

/// Futures the actor waits on besides its inbox.
#[derive(Default)]
struct Pending {
    exit: Option<(Gen, ExitFuture)>,
    drain: Option<(Gen, Done)>,
    pre_stop: Option<(Gen, Done)>,
}

/// A future tagged with the generation it is about.
type Tagged<T> = Option<(Gen, Pin<Box<dyn Future<Output = T> + Send>>)>;

async fn poll_opt<T>(f: &mut Tagged<T>) -> (Gen, T) {
    match f.as_mut() {
        Some((g, fut)) => {
            let g = *g;
            let v = fut.await;
            (g, v)
        }
        None => std::future::pending().await,
    }
}

pub(super) struct Actor {
    spec: ServiceSpec,
    state: ServiceState,
    ctx: Arc<Ctx>,
    exec: Box<dyn Executor>,
    proc: Option<Proc>,
    pending: Pending,
    probe_tx: mpsc::UnboundedSender<TaggedReport>,
    probe_rx: Option<mpsc::UnboundedReceiver<TaggedReport>>,
    crashlog: CrashLog,
    jitter: Jitter,
    exits: BTreeMap<String, u64>,
    probe_failures: BTreeMap<String, u64>,
    probe_durations: BTreeMap<String, upkeep_core::snapshot::Histogram>,
    live: bool,
    /// Failed spawns since the last "start failed" log line.
    spawn_failures: u32,
    /// When "start failed" was last logged.
    spawn_failure_logged: Option<tokio::time::Instant>,
    /// The kubelet's reason for the last exit (`OOMKilled`, `Error`...).
    last_exit_reason: Option<String>,
    /// A planned change waiting for the cluster (issue #16): the spec it
    /// brings; `spec` stays what runs until the step is granted.
    next: Option<ServiceSpec>,
    /// The spec before the last granted step, for a rollback.
    last_good: Option<ServiceSpec>,
    /// While `update` feeds a spec change: the spec that ran before it.
    replacing: Option<ServiceSpec>,
    /// Answers of the rollout coordinator.
    step_tx: mpsc::UnboundedSender<rollout::StepCmd>,
    step_rx: Option<mpsc::UnboundedReceiver<rollout::StepCmd>>,
}

fn now_std() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Actor {
    pub(super) fn new(spec: ServiceSpec, ctx: Arc<Ctx>, exec: Box<dyn Executor>) -> Self {
        let state = ServiceState::new(rollout::policy(&ctx, &spec), now_std());
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        let (step_tx, step_rx) = mpsc::unbounded_channel();
        Actor {
            spec,
            state,
            ctx,
            exec,
            proc: None,
            pending: Pending::default(),
            probe_tx,
            probe_rx: Some(probe_rx),
            crashlog: CrashLog::new(Duration::from_secs(600), Duration::from_secs(60)),
            jitter: Jitter::new(),
            exits: BTreeMap::new(),
            probe_failures: BTreeMap::new(),
            probe_durations: BTreeMap::new(),
            live: true,
            spawn_failures: 0,
            spawn_failure_logged: None,
            last_exit_reason: None,
            next: None,
            last_good: None,
            replacing: None,
            step_tx,
            step_rx: Some(step_rx),
        }
    }

    fn name(&self) -> &str {
        &self.spec.name
    }

    /// The dependencies that are not ready now.
    fn waiting_for(&self) -> Vec<String> {
        self.ctx.not_ready(&self.spec.after)
    }

    fn feed_dependencies(&mut self) {
        let w = self.waiting_for();
        if w != self.state.waiting_for {
            self.feed(Event::Dependencies { waiting_for: w });
        }
    }

    /// Runs the actor until it is removed, shut down or detached.
    pub(super) async fn run(
        mut self,
        initial: Initial,
        mut inbox: mpsc::UnboundedReceiver<Cmd>,
        wait_for: Option<JoinHandle<()>>,
    ) {
        // Never two generations: a previous actor of the same name must be gone first.
        if let Some(prev) = wait_for {
            let _ = prev.await;
        }
        let mut probe_rx = self.probe_rx.take().unwrap_or_else(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            self.probe_tx = tx;
            rx
        });
        let mut ready_rx = self.ctx.ready_tx.subscribe();
        let mut step_rx = self
            .step_rx
            .take()
            .unwrap_or_else(|| mpsc::unbounded_channel().1);
        let mut ending = false;
        let mut inbox_closed = false;
        let mut shutdown_reply: Option<oneshot::Sender<()>> = None;

        self.state.waiting_for = self.waiting_for();
        if self.ctx.is_held(&self.spec.name) {
            // `upkeep stop` outlives upkeep: held until `upkeep start`.
            self.feed(Event::Hold);
        }
        let adopted = match initial {
            Initial::Start => {
                self.feed(Event::Start);
                None
            }
            Initial::Adopt(rec) => self.adopt(&rec),
        };
        self.resume_step(adopted);
        self.publish();

        loop {
            if ending && self.state.is_quiet() && self.proc.is_none() {
                self.finish(true);
                if let Some(r) = shutdown_reply.take() {
                    let _ = r.send(());
                }
                return;
            }
            let deadline = self.state.deadline();
            tokio::select! {
                cmd = inbox.recv(), if !inbox_closed => {
                    let Some(cmd) = cmd else {
                        if ending {
                            inbox_closed = true;
                            continue;
                        }
                        // The supervisor is gone without a word: leave the process alone.
                        self.finish(false);
                        return;
                    };
                    match cmd {
                        Cmd::Event(Event::StepGranted) => {
                            warn!(service = self.name(), "operator: applying the pending change without the rollout lock");
                            self.on_step(rollout::StepCmd::Grant);
                        }
                        Cmd::Event(ev) => {
                            self.operator_event(&ev);
                            self.feed(ev)
                        }
                        Cmd::Update(spec) => self.update(*spec),
                        Cmd::Remove => {
                            ending = true;
                            self.feed(Event::Stop);
                        }
                        Cmd::Shutdown(reply) => {
                            ending = true;
                            shutdown_reply = Some(reply);
                            self.feed(Event::Stop);
                        }
                        Cmd::Detach(reply) => {
                            self.finish(false);
                            let _ = reply.send(());
                            return;
                        }
                    }
                }
                (gen, status) = poll_opt(&mut self.pending.exit) => {
                    self.pending.exit = None;
                    self.on_exit(gen, status);
                }
                (gen, ()) = poll_opt(&mut self.pending.drain) => {
                    self.pending.drain = None;
                    self.feed(Event::GroupEmpty { gen });
                }
                (gen, ()) = poll_opt(&mut self.pending.pre_stop) => {
                    self.pending.pre_stop = None;
                    self.feed(Event::PreStopDone { gen });
                }
                Some((gen, report)) = probe_rx.recv() => self.on_probe(gen, report),
                Some(cmd) = step_rx.recv() => self.on_step(cmd),
                _ = sleep_until(deadline), if deadline.is_some() => self.feed(Event::Timer),
                _ = ready_rx.changed(), if !self.spec.after.is_empty() => self.feed_dependencies(),
            }
        }
    }

    /// Applies an event and performs the resulting actions.
    fn feed(&mut self, ev: Event) {
        let mut events = VecDeque::from([ev]);
        while let Some(ev) = events.pop_front() {
            let was_ready = self.state.ready;
            let was_pending = self.state.pending.is_some();
            let sample = self.jitter.sample();
            let (next, actions) = machine::step(self.state.clone(), ev, now_std(), sample);
            self.state = next;
            if was_ready != self.state.ready {
                self.ctx.bump_ready();
            }
            if was_pending && self.state.pending.is_none() {
                self.withdraw();
            }
            for a in actions {
                if let Some(ev) = self.perform(a) {
                    events.push_back(ev);
                }
            }
        }
        self.publish();
    }

    fn perform(&mut self, action: Action) -> Option<Event> {
        match action {
            Action::Spawn { gen } => Some(self.spawn(gen)),
            Action::StartProbes {
                gen,
                started,
                ready,
            } => {
                if let Some(p) = &self.proc {
                    self.exec.start_probes(
                        &self.spec,
                        gen,
                        p.started_wall,
                        ProbeStart { started, ready },
                        self.probe_tx.clone(),
                    );
                }
                None
            }
            Action::StopProbes => {
                self.exec.stop_probes();
                self.live = true;
                None
            }
            Action::RunPreStop { gen, timeout } => {
                self.pending.pre_stop = Some((gen, self.exec.pre_stop(&self.spec, gen, timeout)));
                None
            }
            Action::Signal {
                gen,
                target,
                signal,
            } => {
                debug!(service = self.name(), gen, ?target, signal, "stop signal");
                self.exec.signal(gen, target, signal);
                None
            }
            Action::Kill { gen, target } => {
                self.exec.kill(gen, target);
                None
            }
            Action::KillGroup { gen } => {
                self.pending.drain = Some((gen, self.exec.kill_group(gen)));
                None
            }
            Action::Release { gen } => {
                self.exec.release(gen);
                None
            }
            Action::Alarm(text) => {
                error!(service = self.name(), "{text}");
                None
            }
            Action::RequestStep { planned } => self.request_step(planned),
        }
    }

    /// Starts generation `gen` from the current spec.
    fn spawn(&mut self, gen: Gen) -> Event {
        // A memory cgroup made by this spawn has counted no OOM kill yet.
        let oom_kills = Some(self.oom_kills().unwrap_or(0));
        match self.exec.spawn(&self.spec, gen) {
            Ok(started) => {
                let pid = started.pid;
                self.pending.exit = Some((gen, started.exit));
                self.proc = Some(Proc {
                    gen,
                    pid,
                    started_wall: started.started_wall,
                    started: tokio::time::Instant::now(),
                    start_time: started.start_time,
                    cgroup: started.cgroup,
                    spec_hash: self.spec.hash.clone(),
                    exec_hash: upkeep_spec::hash::exec_hash(&self.spec),
                    oom_kills,
                });
                if let Some((status, _)) = &self.state.last_exit {
                    if let Some(line) = self.crashlog.on_restart(now_std(), status) {
                        warn!(service = self.name(), "{} {line}", self.spec.name);
                    }
                }
                debug!(service = self.name(), pid, gen, "started");
                self.event("Started", &format!("started, pid {pid}"), false);
                Event::Spawned { gen, pid }
            }
            Err(error) => {
                // Rate-limited: a missing binary with a short backoff must not
                // flood the journal (one line a minute, with the count).
                let now = tokio::time::Instant::now();
                self.spawn_failures += 1;
                let due = self
                    .spawn_failure_logged
                    .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(60));
                if due {
                    if self.spawn_failures > 1 {
                        warn!(
                            service = self.name(),
                            "start failed ({} times since the last report): {error}",
                            self.spawn_failures
                        );
                    } else {
                        warn!(service = self.name(), "start failed: {error}");
                    }
                    self.spawn_failure_logged = Some(now);
                    self.spawn_failures = 0;
                }
                self.event("FailedStart", &format!("start failed: {error}"), false);
                Event::SpawnFailed {
                    gen,
                    error: error.to_string(),
                }
            }
        }
    }

    /// Takes over a live process left by an earlier upkeep.
    /// Adopts the process of `rec`; returns whether it runs the current
    /// spec, or `None` when it could not be adopted (a new one is started).
    fn adopt(&mut self, rec: &ServiceRecord) -> Option<bool> {
        let gen = self.state.gen + 1;
        match self.exec.adopt(&self.spec, rec, gen) {
            Ok(started) => {
                self.pending.exit = Some((gen, started.exit));
                let age = Duration::from_millis(unix_ms().saturating_sub(rec.started_at_unix_ms));
                let now = tokio::time::Instant::now();
                let started_i = now.checked_sub(age).unwrap_or(now);
                let current = if rec.exec_hash.is_empty() {
                    rec.spec_hash == self.spec.hash
                } else {
                    upkeep_spec::hash::exec_hash_matches(&rec.exec_hash, &self.spec)
                };
                self.proc = Some(Proc {
                    gen,
                    pid: rec.pid,
                    started_wall: started.started_wall,
                    started: started_i,
                    start_time: rec.start_time,
                    cgroup: started.cgroup,
                    spec_hash: rec.spec_hash.clone(),
                    exec_hash: rec.exec_hash.clone(),
                    oom_kills: self.oom_kills(),
                });
                info!(
                    service = self.name(),
                    pid = rec.pid,
                    "adopted running process"
                );
                self.event(
                    "Adopted",
                    &format!("adopted pid {} left running by an earlier upkeep", rec.pid),
                    false,
                );
                if !current {
                    info!(
                        service = self.name(),
                        "spec changed while upkeep was away: restarting with the new spec"
                    );
                }
                self.feed(Event::Adopt(Adopted {
                    pid: rec.pid,
                    started_at: started_i.into_std(),
                    restarts: rec.restarts,
                    started: rec.started,
                    ready: rec.ready,
                    current,
                }));
                Some(current)
            }
            Err(e) => {
                warn!(service = self.name(), "{e}; starting a new process");
                self.feed(Event::Start);
                None
            }
        }
    }

    fn on_probe(&mut self, gen: Gen, r: ProbeReport) {
        if gen != self.state.gen || self.proc.as_ref().is_none_or(|p| p.gen != gen) {
            return; // a late report about an earlier generation
        }
        let kind = match r.kind {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
            ProbeKind::Startup => "startup",
        };
        if !r.duration.is_zero() || !matches!(r.result, ProbeResult::Success) {
            self.probe_durations
                .entry(kind.into())
                .or_default()
                .observe(r.duration.as_secs_f64());
        }
        let why = match &r.result {
            ProbeResult::Failure(w) | ProbeResult::Error(w) => w.clone(),
            ProbeResult::Success => String::new(),
        };
        if let ProbeResult::Failure(w) = &r.result {
            *self.probe_failures.entry(kind.into()).or_default() += 1;
            debug!(service = self.name(), probe = kind, "probe failed: {w}");
        }
        match (r.kind, r.flip) {
            (ProbeKind::Startup, Some(true)) => self.feed(Event::StartupPassed { gen }),
            (ProbeKind::Startup, Some(false)) => {
                warn!(
                    service = self.name(),
                    "startup probe failed: {why}; restarting"
                );
                self.event(
                    "Unhealthy",
                    &format!("startup probe failed: {why}; restarting"),
                    false,
                );
                self.feed(Event::ProbeFailed {
                    gen,
                    probe: ProbeKill::Startup,
                    why,
                })
            }
            (ProbeKind::Liveness, Some(false)) => {
                self.live = false;
                warn!(
                    service = self.name(),
                    "liveness probe failed: {why}; restarting"
                );
                self.event(
                    "Unhealthy",
                    &format!("liveness probe failed: {why}; restarting"),
                    false,
                );
                self.feed(Event::ProbeFailed {
                    gen,
                    probe: ProbeKill::Liveness,
                    why,
                });
            }
            (ProbeKind::Liveness, Some(true)) => self.live = true,
            (ProbeKind::Readiness, Some(ready)) => {
                // Once per transition, like the kubelet's probe events.
                if ready {
                    if self.spec.probes.readiness.is_some() {
                        info!(service = self.name(), "readiness probe passed: ready");
                        self.event("Ready", "readiness probe passed", false);
                    } else {
                        self.event("Ready", "started (no readiness probe)", false);
                    }
                } else {
                    warn!(service = self.name(), "readiness probe failed: {why}");
                    self.event("NotReady", &format!("readiness probe failed: {why}"), false);
                }
                self.feed(Event::Readiness { gen, ready, why })
            }
            _ => {}
        }
        self.publish();
    }

    /// The main process of `gen` exited.
    fn on_exit(&mut self, gen: Gen, status: ExitStatus) {
        let ran = self
            .proc
            .as_ref()
            .filter(|p| p.gen == gen)
            .map(|p| p.started.elapsed())
            .unwrap_or(Duration::MAX);
        let oom_before = self
            .proc
            .as_ref()
            .filter(|p| p.gen == gen)
            .and_then(|p| p.oom_kills);
        if self.proc.as_ref().is_some_and(|p| p.gen == gen) {
            self.proc = None;
            self.ctx.record(&self.spec.name, None);
        }
        let oom = status.may_be_oom_kill()
            && matches!((oom_before, self.oom_kills()), (Some(a), Some(b)) if b > a);
        self.last_exit_reason = if oom {
            warn!(
                service = self.name(),
                "killed by the kernel for its memory limit (OOMKilled)"
            );
            Some(upkeep_core::exit::OOM_KILLED.to_string())
        } else {
            status.kubelet_reason().map(str::to_string)
        };
        let label = if oom {
            upkeep_core::exit::OOM_KILLED.to_string()
        } else {
            status.reason()
        };
        *self.exits.entry(label).or_default() += 1;
        let requested = matches!(self.state.phase, Phase::Stopping { .. });
        match self.crashlog.on_exit(now_std(), &status, requested) {
            Some(l) if l.warn => warn!(service = self.name(), "{}", l.text),
            Some(l) => info!(service = self.name(), "{}", l.text),
            None => {}
        }
        self.feed(Event::Exited { gen, status, ran });
        let what = if self.state.message.is_empty() {
            status.to_string()
        } else {
            self.state.message.clone()
        };
        let reason = if oom { "OOMKilled" } else { "Exited" };
        self.event(reason, &what, true);
    }

    /// Records an event of this service (no-op without an event log).
    fn event(&self, reason: &str, message: &str, with_output: bool) {
        if let Some(log) = self.ctx.shared.events.get() {
            log.record(&self.spec.name, reason, message, with_output);
        }
    }

    /// Records an operator's command from the control socket.
    fn operator_event(&self, ev: &Event) {
        let what = match ev {
            Event::Restart => "restart requested by the operator",
            Event::Hold => "stop requested by the operator",
            Event::Release => "start requested by the operator",
            _ => return,
        };
        self.event("Operator", what, false);
    }

    /// The OOM kill count of the service's memory cgroup, if it has one.
    fn oom_kills(&self) -> Option<u64> {
        self.ctx.shared.usage.get()?.oom_kills(&self.spec.name)
    }

    fn update(&mut self, spec: ServiceSpec) {
        let exec_changed =
            upkeep_spec::hash::exec_hash(&spec) != upkeep_spec::hash::exec_hash(&self.spec);
        let limits_changed = spec.resources != self.spec.resources;
        let policy = rollout::policy(&self.ctx, &spec);
        let running = std::mem::replace(&mut self.spec, spec);
        if limits_changed {
            self.exec.set_limits(&self.spec);
        }
        if policy != self.state.policy {
            info!(
                service = self.name(),
                "supervision policy changed: applied to the running process"
            );
            self.feed(Event::Policy(Box::new(policy)));
        }
        self.feed_dependencies();
        if exec_changed {
            info!(
                service = self.name(),
                "spec changed: replacing the process with the new spec"
            );
            self.event(
                "SpecChanged",
                "spec changed: replacing the process with the new spec",
                false,
            );
            // A step requested during this feed journals `running` as the
            // spec to roll back to.
            self.replacing = Some(running.clone());
            self.feed(Event::SpecChanged);
            self.replacing = None;
            // Waiting for the cluster: the running spec stays, for a crash
            // restart; the change is applied when the step is granted.
            self.next = match self.state.pending {
                Some(_) => Some(std::mem::replace(&mut self.spec, running)),
                None => None,
            };
        } else if self.next.take().is_some() {
            info!(
                service = self.name(),
                "the pending change was undone: nothing to apply"
            );
            self.feed(Event::StepCancelled);
        }
    }

    /// Ends the actor: `stopped` removes everything of the service; otherwise
    /// the process is left running and its record kept for the next upkeep.
    fn finish(&mut self, stopped: bool) {
        self.exec.stop_probes();
        self.withdraw();
        if stopped {
            self.exec.finish();
            self.ctx.record(&self.spec.name, None);
            let mut snap = self
                .ctx
                .shared
                .snapshot
                .write()
                .unwrap_or_else(|p| p.into_inner());
            snap.services.remove(&self.spec.name);
        } else {
            self.save_record();
        }
    }

    fn save_record(&self) {
        let rec = self.proc.as_ref().map(|p| ServiceRecord {
            name: self.spec.name.clone(),
            pid: p.pid,
            start_time: p.start_time,
            spec_hash: p.spec_hash.clone(),
            exec_hash: p.exec_hash.clone(),
            pgid: p.pid,
            started_at_unix_ms: p
                .started_wall
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as u64,
            restarts: self.state.restarts,
            ready: self.state.ready,
            started: self.state.started,
            last_exit: self.state.last_exit.map(|(s, _)| s),
            cgroup: p.cgroup.clone(),
        });
        self.ctx.record(&self.spec.name, rec);
    }

    /// Copies the state into the shared snapshot (and the adoption record).
    fn publish(&mut self) {
        let now_i = now_std();
        let now_w = SystemTime::now();
        // Past and future instants alike (a backoff deadline is in the future).
        let to_wall = |i: Instant| {
            if i >= now_i {
                now_w + (i - now_i)
            } else {
                now_w.checked_sub(now_i - i).unwrap_or(now_w)
            }
        };
        let mut st = ServiceStatus::new(
            &self.spec.name,
            &self.spec.source.display().to_string(),
            now_w,
        );
        st.state = self.state.state_name().to_string();
        st.pid = self.state.pid();
        st.ready = self.state.ready && matches!(self.state.phase, Phase::Running { .. });
        st.live = self.live;
        st.restarts = self.state.restarts;
        st.since = rfc3339(to_wall(self.state.since));
        st.last_exit = self.state.last_exit.as_ref().map(|(s, at)| LastExit {
            code: s.code(),
            signal: s.signal().map(|n| signal_name(n).to_string()),
            reason: self
                .last_exit_reason
                .clone()
                .or_else(|| s.kubelet_reason().map(str::to_string)),
            at: rfc3339(to_wall(*at)),
        });
        st.next_start_at = match self.state.phase {
            Phase::Backoff { until } => Some(to_wall(until)),
            _ => None,
        };
        st.next_start_in_ms = match self.state.phase {
            Phase::Backoff { until } => {
                Some(until.saturating_duration_since(now_i).as_millis() as u64)
            }
            _ => None,
        };
        st.message = self.state.message.clone();
        st.stuck_since = match self.state.phase {
            Phase::Draining { began, .. }
                if now_i.saturating_duration_since(began) >= machine::DRAIN_WARN_AFTER =>
            {
                Some(to_wall(began))
            }
            _ => None,
        };
        st.start_time = self.proc.as_ref().map(|p| p.started_wall);
        st.cgroup = self.proc.as_ref().and_then(|p| p.cgroup.clone());
        st.pod_labels = match &self.spec.origin {
            Origin::StaticPod {
                pod,
                namespace,
                container,
            } => Some(upkeep_core::usage::PodLabels {
                pod: pod.clone(),
                namespace: namespace.clone(),
                container: container.clone(),
            }),
            Origin::HostService => None,
        };
        st.exits = self.exits.clone();
        st.probe_failures = self.probe_failures.clone();
        st.probe_durations = self.probe_durations.clone();
        {
            let mut snap = self
                .ctx
                .shared
                .snapshot
                .write()
                .unwrap_or_else(|p| p.into_inner());
            snap.services.insert(self.spec.name.clone(), st);
        }
        if self.proc.is_some() {
            self.save_record();
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}

/// Planned changes under the cluster (issue #16); see `rollout.rs`.
impl Actor {
    /// Asks the coordinator for a step; granted at once without one.
    fn request_step(&mut self, planned: machine::Planned) -> Option<Event> {
        let Some(link) = self.ctx.rollout.as_ref() else {
            return Some(Event::StepGranted);
        };
        // The change, and the spec that runs until it is applied.
        let (spec, from) = match (&self.next, &self.replacing) {
            (Some(next), _) => (next, &self.spec),
            (None, Some(running)) => (&self.spec, running),
            (None, None) => (&self.spec, &self.spec),
        };
        link.send(rollout::Msg::Request {
            name: self.spec.name.clone(),
            planned,
            hash: spec.hash.clone(),
            from: Box::new(from.clone()),
            after: spec.after.clone(),
            reply: self.step_tx.clone(),
        });
        None
    }

    /// Takes over the rollout step an earlier upkeep was killed in, if
    /// it left one for this service ([`upkeep_core::step::resume`] decides):
    /// the coordinator finishes it, or the rollback it had ordered is done
    /// now. `adopted`: whether an adopted process runs the current spec.
    fn resume_step(&mut self, adopted: Option<bool>) {
        use upkeep_core::step::Resume;
        let Some(link) = self.ctx.rollout.as_ref() else {
            return;
        };
        let Some(entry) = link.take_inherited(&self.spec.name) else {
            return;
        };
        match upkeep_core::step::resume(&entry, &self.spec.hash, adopted) {
            Resume::Drop => {
                info!(
                    service = self.name(),
                    "the previous upkeep's rollout step is moot here (the change was not applied, or the spec changed since)"
                );
            }
            Resume::Continue => {
                self.last_good = Some(entry.from.clone());
                link.send(rollout::Msg::Resume {
                    name: self.spec.name.clone(),
                    entry: Box::new(entry),
                    after: self.spec.after.clone(),
                    reply: self.step_tx.clone(),
                });
            }
            Resume::RollBack { why } => {
                let why = format!("{} on {}: {why}", self.spec.name, link.node());
                self.last_good = Some(entry.from);
                self.on_step(rollout::StepCmd::RollBack(why));
            }
        }
    }

    fn withdraw(&self) {
        if let Some(link) = self.ctx.rollout.as_ref() {
            link.send(rollout::Msg::Withdraw {
                name: self.spec.name.clone(),
            });
        }
    }

    fn on_step(&mut self, cmd: rollout::StepCmd) {
        match cmd {
            rollout::StepCmd::Grant => {
                let good = match self.next.take() {
                    Some(next) => std::mem::replace(&mut self.spec, next),
                    None => self.spec.clone(),
                };
                self.last_good = Some(good);
                self.feed(Event::StepGranted);
            }
            rollout::StepCmd::Waiting(why) => self.feed(Event::StepWaiting { why }),
            rollout::StepCmd::RollBack(why) => {
                let Some(good) = self.last_good.take() else {
                    return;
                };
                warn!(
                    service = self.name(),
                    "rolling back to the last good spec: {why}"
                );
                self.next = None;
                self.spec = good;
                let policy = rollout::policy(&self.ctx, &self.spec);
                if policy != self.state.policy {
                    self.feed(Event::Policy(Box::new(policy)));
                }
                self.feed(Event::RollBack { why });
            }
        }
    }
}
