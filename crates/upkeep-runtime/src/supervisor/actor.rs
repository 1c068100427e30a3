//! One actor per service: drives `machine::step` and performs its actions
//! (spawn, terminate, probes), publishes the snapshot and the adoption record.

use super::*;

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

type ExitFuture = Pin<Box<dyn Future<Output = ExitStatus> + Send>>;

/// The live process of an actor.
struct Proc {
    pid: u32,
    pidfd: Arc<OwnedFd>,
    started_wall: SystemTime,
    start_time: u64,
}

/// How an actor begins.
pub(super) enum Initial {
    /// Start it (after its dependencies are ready).
    Start,
    /// A process from an earlier upkeep runs it: watch it.
    Adopt(ServiceRecord),
}

pub(super) struct Actor {
    spec: ServiceSpec,
    state: ServiceState,
    ctx: Arc<Ctx>,
    proc: Option<Proc>,
    worker: Option<ProbeWorker>,
    terminate: Option<JoinHandle<()>>,
    cgroup: Option<Cgroup>,
    log: ServiceLog,
    operator_stopped: bool,
    crashlog: CrashLog,
    jitter: Jitter,
    exits: BTreeMap<String, u64>,
    probe_failures: BTreeMap<String, u64>,
    probe_durations: BTreeMap<String, upkeep_core::snapshot::Histogram>,
    live: bool,
    /// Waiting for dependencies before a start.
    start_pending: bool,
    /// Failed spawns since the last "start failed" log line.
    spawn_failures: u32,
    /// When "start failed" was last logged.
    spawn_failure_logged: Option<Instant>,
    /// Adopted processes keep their probe state from the record.
    adopted_probe_state: Option<(bool, bool)>,
}

/// Outcome of an actor's main loop.
enum ActorEnd {
    Stopped,
    Detached,
}

impl Actor {
    pub(super) fn new(spec: ServiceSpec, ctx: Arc<Ctx>) -> Self {
        let state = ServiceState::new(spec.restart, spec.backoff, Instant::now());
        let log = ctx.logs.service(&spec.name, spec.log);
        Actor {
            log,
            spec,
            state,
            ctx,
            proc: None,
            worker: None,
            terminate: None,
            cgroup: None,
            operator_stopped: false,
            crashlog: CrashLog::new(Duration::from_secs(600), Duration::from_secs(60)),
            jitter: Jitter::new(),
            exits: BTreeMap::new(),
            probe_failures: BTreeMap::new(),
            probe_durations: BTreeMap::new(),
            live: true,
            start_pending: false,
            spawn_failures: 0,
            spawn_failure_logged: None,
            adopted_probe_state: None,
        }
    }

    fn name(&self) -> &str {
        &self.spec.name
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
        let (probe_tx, mut probe_rx) = mpsc::unbounded_channel::<ProbeReport>();
        let mut exit: Option<ExitFuture> = None;
        let mut ready_rx = self.ctx.ready_tx.subscribe();
        let mut removing = false;
        let mut inbox_closed = false;
        let mut shutdown_reply: Option<oneshot::Sender<()>> = None;

        match initial {
            Initial::Start => {
                self.start_pending = true;
            }
            Initial::Adopt(rec) => match self.adopt(&rec) {
                Ok(fut) => {
                    exit = Some(fut);
                    self.start_probes(&probe_tx);
                    self.publish();
                    if rec.spec_hash != self.spec.hash {
                        info!(
                            service = self.name(),
                            "spec changed while upkeep was away: restarting with the new spec"
                        );
                        self.feed(Event::Restart, &mut exit, &probe_tx);
                    }
                }
                Err(e) => {
                    warn!(
                        service = self.name(),
                        "cannot adopt pid {}: {e}; starting a new process", rec.pid
                    );
                    self.start_pending = true;
                }
            },
        }
        self.publish();

        loop {
            if self.start_pending && !self.operator_stopped && !removing && shutdown_reply.is_none()
            {
                if self.ctx.dependencies_ready(&self.spec.after) {
                    self.start_pending = false;
                    self.feed(Event::Start, &mut exit, &probe_tx);
                } else if self.state.message.is_empty() {
                    self.state.message =
                        format!("waiting for {} to be ready", self.spec.after.join(", "));
                    self.publish();
                }
            }
            // Done?
            if (removing || shutdown_reply.is_some())
                && self.proc.is_none()
                && !matches!(self.state.phase, Phase::Starting)
            {
                self.finish(ActorEnd::Stopped);
                if let Some(r) = shutdown_reply.take() {
                    let _ = r.send(());
                }
                return;
            }
            let deadline = self.state.deadline();
            tokio::select! {
                cmd = inbox.recv(), if !inbox_closed => {
                    let Some(cmd) = cmd else {
                        if removing || shutdown_reply.is_some() {
                            // Removed: the supervisor dropped its sender; finish the stop.
                            inbox_closed = true;
                            continue;
                        }
                        // The supervisor is gone without a word: leave the process alone.
                        self.finish(ActorEnd::Detached);
                        return;
                    };
                    match cmd {
                        Cmd::Event(ev) => self.feed(ev, &mut exit, &probe_tx),
                        Cmd::OperatorStop => {
                            self.operator_stopped = true;
                            self.start_pending = false;
                            self.state.message = "stopped by operator".into();
                            self.feed(Event::Stop, &mut exit, &probe_tx);
                        }
                        Cmd::OperatorStart => {
                            self.operator_stopped = false;
                            self.state.message.clear();
                            if self.proc.is_none() {
                                self.start_pending = true;
                            }
                        }
                        Cmd::Update(spec) => self.update(*spec, &mut exit, &probe_tx),
                        Cmd::Remove => {
                            removing = true;
                            self.start_pending = false;
                            self.feed(Event::Stop, &mut exit, &probe_tx);
                        }
                        Cmd::Shutdown(reply) => {
                            shutdown_reply = Some(reply);
                            self.start_pending = false;
                            self.feed(Event::Stop, &mut exit, &probe_tx);
                        }
                        Cmd::Detach(reply) => {
                            self.finish(ActorEnd::Detached);
                            let _ = reply.send(());
                            return;
                        }
                    }
                }
                status = async { match exit.as_mut() { Some(f) => f.await, None => std::future::pending().await } } => {
                    exit = None;
                    self.on_exit(status, &mut exit, &probe_tx).await;
                }
                Some(report) = probe_rx.recv() => self.on_probe(report, &mut exit, &probe_tx),
                _ = sleep_until(deadline), if deadline.is_some() => self.feed(Event::Timer, &mut exit, &probe_tx),
                _ = ready_rx.changed(), if self.start_pending => {}
            }
        }
    }

    /// Applies an event and performs the resulting actions (which may produce
    /// further events, e.g. Spawned).
    fn feed(
        &mut self,
        ev: Event,
        exit: &mut Option<ExitFuture>,
        probe_tx: &mpsc::UnboundedSender<ProbeReport>,
    ) {
        let mut events = VecDeque::from([ev]);
        while let Some(ev) = events.pop_front() {
            let was_ready = self.state.ready;
            let sample = self.jitter.sample();
            let (next, actions) = machine::step(self.state.clone(), ev, Instant::now(), sample);
            self.state = next;
            if was_ready != self.state.ready {
                self.ctx.bump_ready();
            }
            for a in actions {
                if let Some(ev) = self.perform(a, exit, probe_tx) {
                    events.push_back(ev);
                }
            }
        }
        self.publish();
    }

    fn perform(
        &mut self,
        action: Action,
        exit: &mut Option<ExitFuture>,
        probe_tx: &mpsc::UnboundedSender<ProbeReport>,
    ) -> Option<Event> {
        match action {
            Action::Spawn => Some(match self.spawn() {
                Ok((proc, fut)) => {
                    let pid = proc.pid;
                    self.proc = Some(proc);
                    *exit = Some(fut);
                    if let Some((status, _)) = &self.state.last_exit {
                        if let Some(line) = self.crashlog.on_restart(Instant::now(), status) {
                            warn!(service = self.name(), "{} {line}", self.spec.name);
                        }
                    }
                    debug!(service = self.name(), pid, "started");
                    Event::Spawned { pid }
                }
                Err(error) => {
                    // Rate-limited: a missing binary with a short backoff must not
                    // flood the journal (one line a minute, with the count).
                    let now = Instant::now();
                    self.spawn_failures += 1;
                    let due = self.spawn_failure_logged.is_none_or(|t| {
                        now.saturating_duration_since(t) >= Duration::from_secs(60)
                    });
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
                    Event::SpawnFailed { error }
                }
            }),
            Action::Terminate { probe } => {
                self.terminate(probe);
                None
            }
            Action::StartProbes => {
                self.start_probes(probe_tx);
                None
            }
            Action::StopProbes => {
                if let Some(w) = self.worker.take() {
                    w.stop();
                }
                self.live = true;
                None
            }
        }
    }

    /// Starts a new process from the current spec.
    fn spawn(&mut self) -> Result<(Proc, ExitFuture), String> {
        spawn::prepare_volumes(&self.spec.volumes)?;
        if self.cgroup.is_none() {
            if let Some(root) = &self.ctx.cgroup_root {
                match Cgroup::create(root, &self.spec.name) {
                    Ok(cg) => {
                        if let Err(e) = cg.set_limits(&self.spec.resources) {
                            warn!(service = self.name(), "resource limits not applied: {e}");
                        }
                        self.cgroup = Some(cg);
                    }
                    Err(e) => debug!(service = self.name(), "no cgroup: {e}"),
                }
            }
        }
        let out = self.log.output();
        if let Some(w) = &out.warning {
            warn!(service = self.name(), "{w}");
        }
        let output = out.as_output();
        let mut req = spawn::SpawnRequest::new(&self.spec.argv, &self.spec.env);
        req.working_dir = Some(&self.spec.working_dir);
        req.uid = self.spec.uid;
        req.gid = self.spec.gid;
        req.stdout = output;
        req.stderr = output;
        req.cgroup = self.cgroup.as_ref();
        let child = req.spawn(&self.ctx.reaper).map_err(|e| e.to_string())?;
        let started_wall = SystemTime::now();
        let start_time = reaper::process_start_time(child.pid).unwrap_or(0);
        let exit_rx = child.exit;
        let fut: ExitFuture = Box::pin(async move { exit_rx.await.unwrap_or(ExitStatus::Unknown) });
        let proc = Proc {
            pid: child.pid,
            pidfd: Arc::new(child.pidfd),
            started_wall,
            start_time,
        };
        Ok((proc, fut))
    }

    /// Takes over a live process left by an earlier upkeep.
    fn adopt(&mut self, rec: &ServiceRecord) -> Result<ExitFuture, String> {
        let (pidfd, fut) = self
            .ctx
            .reaper
            .watch_pid(rec.pid)
            .map_err(|e| e.to_string())?;
        let fut: ExitFuture = Box::pin(fut);
        if let Some(root) = &self.ctx.cgroup_root {
            self.cgroup = Cgroup::find_existing(root, &rec.name);
        }
        let age = Duration::from_millis(unix_ms().saturating_sub(rec.started_at_unix_ms));
        let now = Instant::now();
        let started_at = now.checked_sub(age).unwrap_or(now);
        self.state.phase = Phase::Running { pid: rec.pid };
        self.state.started_at = Some(started_at);
        self.state.since = started_at;
        self.state.restarts = rec.restarts;
        self.state.started = rec.started;
        self.state.ready = rec.ready;
        self.state.message = format!("adopted pid {} from a previous upkeep", rec.pid);
        self.adopted_probe_state = Some((rec.started, rec.ready));
        self.proc = Some(Proc {
            pid: rec.pid,
            pidfd: Arc::new(pidfd),
            started_wall: SystemTime::UNIX_EPOCH + Duration::from_millis(rec.started_at_unix_ms),
            start_time: rec.start_time,
        });
        info!(
            service = self.name(),
            pid = rec.pid,
            "adopted running process"
        );
        Ok(fut)
    }

    /// How exec probes and hooks of this service run: its env, cwd and user.
    fn exec_context(&self) -> ExecContext {
        ExecContext {
            reaper: self.ctx.reaper.clone(),
            env: self.spec.env.clone(),
            working_dir: self.spec.working_dir.clone(),
            uid: self.spec.uid,
            gid: self.spec.gid,
        }
    }

    fn start_probes(&mut self, probe_tx: &mpsc::UnboundedSender<ProbeReport>) {
        let Some(proc) = &self.proc else { return };
        let age = SystemTime::now()
            .duration_since(proc.started_wall)
            .unwrap_or_default();
        let now = tokio::time::Instant::now();
        let started_at = now.checked_sub(age).unwrap_or(now);
        let ctx = self.exec_context();
        let mut probes: Probes = self.spec.probes.clone();
        let mut initial = probe::Initial::default();
        if let Some((started, ready)) = self.adopted_probe_state.take() {
            if started {
                probes.startup = None;
            }
            initial.ready = ready;
        }
        self.worker = Some(probe::spawn_worker(
            probes,
            started_at,
            ctx,
            initial,
            probe_tx.clone(),
        ));
    }

    fn on_probe(
        &mut self,
        r: ProbeReport,
        exit: &mut Option<ExitFuture>,
        probe_tx: &mpsc::UnboundedSender<ProbeReport>,
    ) {
        if self.worker.is_none() {
            return; // a report from a worker that was stopped
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
        if let ProbeResult::Failure(why) = &r.result {
            *self.probe_failures.entry(kind.into()).or_default() += 1;
            debug!(service = self.name(), probe = kind, "probe failed: {why}");
        }
        match (r.kind, r.flip) {
            (ProbeKind::Startup, Some(true)) => self.feed(Event::StartupPassed, exit, probe_tx),
            (ProbeKind::Startup, Some(false)) => {
                warn!(
                    service = self.name(),
                    "startup probe failed {} times: restarting",
                    self.spec
                        .probes
                        .startup
                        .as_ref()
                        .map_or(0, |p| p.failure_threshold)
                );
                self.feed(
                    Event::ProbeFailed {
                        probe: ProbeKill::Startup,
                    },
                    exit,
                    probe_tx,
                )
            }
            (ProbeKind::Liveness, Some(false)) => {
                self.live = false;
                let why = match &r.result {
                    ProbeResult::Failure(w) => w.clone(),
                    _ => String::new(),
                };
                warn!(
                    service = self.name(),
                    "liveness probe failed: {why}; restarting"
                );
                self.feed(
                    Event::ProbeFailed {
                        probe: ProbeKill::Liveness,
                    },
                    exit,
                    probe_tx,
                );
                self.state.message = format!("liveness probe failed: {why}");
            }
            (ProbeKind::Liveness, Some(true)) => self.live = true,
            (ProbeKind::Readiness, Some(ready)) => {
                if !ready {
                    if let ProbeResult::Failure(w) = &r.result {
                        self.state.message = format!("readiness probe failed: {w}");
                    }
                } else if self.state.message.starts_with("readiness probe failed") {
                    self.state.message.clear();
                }
                self.feed(Event::Readiness { ready }, exit, probe_tx)
            }
            _ => {}
        }
        self.publish();
    }

    /// The main process exited: clean up its group, then tell the machine.
    async fn on_exit(
        &mut self,
        status: ExitStatus,
        exit: &mut Option<ExitFuture>,
        probe_tx: &mpsc::UnboundedSender<ProbeReport>,
    ) {
        if let Some(t) = self.terminate.take() {
            t.abort();
        }
        if let Some(proc) = self.proc.take() {
            // A container ends with its main process: whatever it left behind in
            // its group (or cgroup) is killed, and the service is stopped only
            // once nothing of it is left.
            clear_group(proc.pid, self.cgroup.as_ref()).await;
        }
        *self.exits.entry(status.reason()).or_default() += 1;
        let requested = matches!(self.state.phase, Phase::Stopping { .. });
        match self.crashlog.on_exit(Instant::now(), &status, requested) {
            Some(l) if l.warn => warn!(service = self.name(), "{}", l.text),
            Some(l) => info!(service = self.name(), "{}", l.text),
            None => {}
        }
        self.ctx.record(&self.spec.name, None);
        self.feed(Event::Exited { status }, exit, probe_tx);
    }

    /// Stops the current process: preStop, stop signal to the group, SIGKILL after the grace.
    fn terminate(&mut self, probe: Option<ProbeKill>) {
        let Some(proc) = &self.proc else { return };
        let mut grace = self.spec.stop_grace;
        if let Some(kind) = probe {
            let p = match kind {
                ProbeKill::Liveness => &self.spec.probes.liveness,
                ProbeKill::Startup => &self.spec.probes.startup,
            };
            if let Some(g) = p.as_ref().and_then(|p| p.termination_grace) {
                grace = g;
            }
        }
        let is_pod = matches!(self.spec.origin, Origin::StaticPod { .. });
        let sig = spawn::signal_number(&self.spec.stop_signal).unwrap_or(libc::SIGTERM);
        let pid = proc.pid;
        let pidfd = proc.pidfd.clone();
        let pre_stop = self.spec.pre_stop.clone();
        let ctx = self.exec_context();
        let cgroup_kill = self.cgroup.clone();
        let name = self.spec.name.clone();
        debug!(
            service = self.name(),
            pid, "stopping: {} then SIGKILL after {:?}", self.spec.stop_signal, grace
        );
        self.terminate = Some(tokio::spawn(async move {
            let begin = tokio::time::Instant::now();
            if let Some(argv) = pre_stop {
                if !grace.is_zero() {
                    let handler = upkeep_spec::ProbeHandler::Exec { argv };
                    let r = probe::run_once(&handler, grace, &ctx).await;
                    if let ProbeResult::Failure(w) | ProbeResult::Error(w) = r {
                        warn!(service = %name, "preStop hook failed: {w}");
                    }
                }
            }
            let mut remaining = grace.saturating_sub(begin.elapsed());
            if is_pod {
                remaining = remaining.max(Duration::from_secs(2));
            }
            // The group id is the main pid: signal the group only while the main
            // process is not yet reaped (the pidfd says so), so a reused pid is
            // never hit. The reaper runs on this thread and cannot reap in between.
            if reaper::pidfd_signal(&pidfd, sig).unwrap_or(false) {
                let _ = spawn::signal_group(pid, sig);
            }
            tokio::time::sleep(remaining).await;
            warn!(service = %name, "did not stop within {:?}: sending SIGKILL", grace);
            if reaper::pidfd_signal(&pidfd, libc::SIGKILL).unwrap_or(false) {
                let _ = spawn::signal_group(pid, libc::SIGKILL);
            }
            if let Some(cg) = cgroup_kill {
                let _ = cg.kill();
            }
        }));
    }

    fn update(
        &mut self,
        spec: ServiceSpec,
        exit: &mut Option<ExitFuture>,
        probe_tx: &mpsc::UnboundedSender<ProbeReport>,
    ) {
        info!(
            service = self.name(),
            "spec changed: restarting with the new spec"
        );
        self.state.restart = spec.restart;
        self.state.backoff = spec.backoff;
        self.state.failures = 0;
        let resources_changed = spec.resources != self.spec.resources;
        self.spec = spec;
        if resources_changed {
            if let Some(cg) = &self.cgroup {
                if let Err(e) = cg.set_limits(&self.spec.resources) {
                    warn!(service = self.name(), "resource limits not applied: {e}");
                }
            }
        }
        if self.operator_stopped {
            self.publish();
            return;
        }
        if self.start_pending {
            return;
        }
        // Stop the old generation fully, then start the new one (or start now
        // from backoff/stopped): the machine's Restart does exactly that.
        self.feed(Event::Restart, exit, probe_tx);
    }

    fn finish(&mut self, how: ActorEnd) {
        if let Some(w) = self.worker.take() {
            w.stop();
        }
        match how {
            ActorEnd::Stopped => {
                if let Some(t) = self.terminate.take() {
                    t.abort();
                }
                if let Some(cg) = self.cgroup.take() {
                    let _ = cg.remove();
                }
                self.ctx.record(&self.spec.name, None);
                let mut snap = self
                    .ctx
                    .shared
                    .snapshot
                    .write()
                    .unwrap_or_else(|p| p.into_inner());
                snap.services.remove(&self.spec.name);
            }
            ActorEnd::Detached => {
                // Leave the process running; the record stays for the next upkeep.
                if let Some(t) = self.terminate.take() {
                    t.abort();
                }
                self.save_record();
            }
        }
    }

    fn save_record(&self) {
        let rec = self.proc.as_ref().map(|p| ServiceRecord {
            name: self.spec.name.clone(),
            pid: p.pid,
            start_time: p.start_time,
            spec_hash: self.spec.hash.clone(),
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
            cgroup: self.cgroup.as_ref().map(|c| c.relative_path()),
        });
        self.ctx.record(&self.spec.name, rec);
    }

    /// Copies the state into the shared snapshot (and the adoption record).
    fn publish(&mut self) {
        let now_i = Instant::now();
        let now_w = SystemTime::now();
        let to_wall = |i: Instant| {
            now_w
                .checked_sub(now_i.saturating_duration_since(i))
                .unwrap_or(now_w)
        };
        let mut st = ServiceStatus::new(
            &self.spec.name,
            &self.spec.source.display().to_string(),
            now_w,
        );
        st.state = self.state.state_name().to_string();
        if self.start_pending && self.proc.is_none() && !self.operator_stopped {
            st.state = "starting".into();
        }
        st.pid = self.state.pid();
        st.ready = self.state.ready && matches!(self.state.phase, Phase::Running { .. });
        st.live = self.live;
        st.restarts = self.state.restarts;
        st.since = rfc3339(to_wall(self.state.since));
        st.last_exit = self.state.last_exit.as_ref().map(|(s, at)| LastExit {
            code: s.code(),
            signal: s.signal().map(|n| signal_name(n).to_string()),
            at: rfc3339(to_wall(*at)),
        });
        st.next_start_at = self.state.deadline().map(to_wall);
        st.message = self.state.message.clone();
        st.start_time = self.proc.as_ref().map(|p| p.started_wall);
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

/// Kills what is left of a service after its main process ended, and waits
/// (bounded) until nothing is left.
///
/// With a cgroup this is exact (`cgroup.kill`, then wait for "populated 0").
/// Without one, the process group is used; its id is the main pid, which is
/// already reaped, so the group is signalled only while it still has members
/// (a pgid with live members cannot be reused by the kernel).
async fn clear_group(pgid: u32, cgroup: Option<&Cgroup>) {
    let alive = match cgroup {
        Some(cg) => {
            let populated = cg.populated();
            if populated {
                let _ = cg.kill();
            }
            populated
        }
        None => {
            spawn::group_alive(pgid) && spawn::signal_group(pgid, libc::SIGKILL).unwrap_or(false)
        }
    };
    if !alive {
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut wait = Duration::from_micros(200);
    loop {
        let left = match cgroup {
            Some(cg) => cg.populated(),
            None => spawn::group_alive(pgid),
        };
        if !left {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            warn!(
                pgid,
                "processes of the service are still present 5s after SIGKILL"
            );
            return;
        }
        match cgroup {
            Some(cg) => {
                let _ = cg.kill();
            }
            None => {
                let _ = spawn::signal_group(pgid, libc::SIGKILL);
            }
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_millis(50));
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => std::future::pending().await,
    }
}
