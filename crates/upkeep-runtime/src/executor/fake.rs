//! A recording executor for tests: no processes, no root.
//!
//! Every call is appended to a shared log of [`Call`]s. Exits, preStop ends
//! and "group empty" are in the test's hands through [`FakeWorld`]: a spawned
//! generation runs until the test calls [`FakeWorld::exit`], or until a
//! signal the test declared fatal arrives (by default the stop signal and
//! SIGKILL end the main process, like a well-behaved service).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use upkeep_core::machine::{Gen, Target};
use upkeep_core::ExitStatus;
use upkeep_spec::ServiceSpec;

use super::{Done, ExecError, Executor, ProbeStart, Started, TaggedReport};
use crate::state::ServiceRecord;

/// One call the actor made.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// `spawn(gen)`; the spec's argv is recorded.
    Spawn(Gen, Vec<String>),
    /// `adopt(gen)` of a recorded pid.
    Adopt(Gen, u32),
    /// `signal(gen, target, sig)`.
    Signal(Gen, Target, i32),
    /// `kill(gen, target)`.
    Kill(Gen, Target),
    /// `kill_group(gen)`.
    KillGroup(Gen),
    /// `release(gen)`.
    Release(Gen),
    /// `pre_stop(gen, timeout)`.
    PreStop(Gen, Duration),
    /// `start_probes(gen, initial)`.
    StartProbes(Gen, ProbeStart),
    /// `stop_probes()`.
    StopProbes,
    /// `set_limits()`.
    SetLimits,
    /// `finish()`.
    Finish,
}

/// How the fake processes behave, and the handles to act on them.
#[derive(Default)]
struct World {
    calls: Vec<Call>,
    exits: HashMap<Gen, oneshot::Sender<ExitStatus>>,
    /// Signals that do NOT end the main process (a TERM-ignoring service).
    ignored: Vec<i32>,
    /// Spawns that fail, with the error text.
    fail_spawns: Vec<String>,
    /// Run the real hostPath preparation (filesystem only) before a spawn.
    prepare_volumes: bool,
    /// How many binds the last successful spawn would have made (0: the
    /// host's mount namespace).
    last_binds: usize,
    /// Generations whose group never empties until released by the test.
    stuck: HashMap<Gen, watch::Sender<bool>>,
    /// Whether kill_group should hang (leftovers that do not die).
    hang_groups: bool,
    probes: Option<mpsc::UnboundedSender<TaggedReport>>,
    pre_stops: HashMap<Gen, oneshot::Sender<()>>,
    hang_pre_stop: bool,
    next_pid: u32,
}

/// The test's side of a [`FakeExecutor`]: inspect calls, end processes,
/// send probe reports.
#[derive(Clone, Default)]
pub struct FakeWorld(Arc<Mutex<World>>);

impl FakeWorld {
    fn lock(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new world and an executor acting in it.
    pub fn new() -> (FakeWorld, FakeExecutor) {
        let w = FakeWorld::default();
        w.lock().next_pid = 1000;
        (w.clone(), FakeExecutor { world: w })
    }

    /// Every call so far.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls matching `f`.
    pub fn count(&self, f: impl Fn(&Call) -> bool) -> usize {
        self.lock().calls.iter().filter(|c| f(c)).count()
    }

    /// Ends the main process of `gen` with `status` (false if it is not running).
    pub fn exit(&self, gen: Gen, status: ExitStatus) -> bool {
        match self.lock().exits.remove(&gen) {
            Some(tx) => tx.send(status).is_ok(),
            None => false,
        }
    }

    /// The live generations (spawned or adopted, not yet exited).
    pub fn live(&self) -> Vec<Gen> {
        let mut v: Vec<Gen> = self.lock().exits.keys().copied().collect();
        v.sort();
        v
    }

    /// Makes the processes ignore `sig` (SIGKILL cannot be ignored).
    pub fn ignore_signal(&self, sig: i32) {
        self.lock().ignored.push(sig);
    }

    /// The next spawn fails with `error`.
    pub fn fail_next_spawn(&self, error: &str) {
        self.lock().fail_spawns.push(error.to_string());
    }

    /// Spawns run the real hostPath preparation of the spec first
    /// ([`crate::volumes::prepare_volumes`]: create, check, resolve, mount
    /// points; no mount), so its errors reach the actor as they would from
    /// the real executor.
    pub fn prepare_volumes(&self, on: bool) {
        self.lock().prepare_volumes = on;
    }

    /// The number of binds the last successful spawn would have made in its
    /// private mount namespace (0: none, the host's namespace).
    pub fn last_binds(&self) -> usize {
        self.lock().last_binds
    }

    /// Leftovers of every generation survive SIGKILL until [`FakeWorld::unstick`].
    pub fn hang_groups(&self, on: bool) {
        self.lock().hang_groups = on;
        if !on {
            for (_, tx) in self.lock().stuck.drain() {
                let _ = tx.send(true);
            }
        }
    }

    /// preStop hooks run until [`FakeWorld::finish_pre_stop`].
    pub fn hang_pre_stop(&self, on: bool) {
        self.lock().hang_pre_stop = on;
    }

    /// Ends the preStop hook of `gen`.
    pub fn finish_pre_stop(&self, gen: Gen) -> bool {
        match self.lock().pre_stops.remove(&gen) {
            Some(tx) => tx.send(()).is_ok(),
            None => false,
        }
    }

    /// Sends a probe report as the worker of `gen` would.
    pub fn probe(&self, gen: Gen, report: crate::probe::ProbeReport) -> bool {
        match &self.lock().probes {
            Some(tx) => tx.send((gen, report)).is_ok(),
            None => false,
        }
    }
}

/// The recording executor. See the module docs.
pub struct FakeExecutor {
    world: FakeWorld,
}

impl FakeExecutor {
    fn started(&self, gen: Gen, pid: u32) -> Started {
        let (tx, rx) = oneshot::channel();
        self.world.lock().exits.insert(gen, tx);
        Started {
            pid,
            exit: Box::pin(async move { rx.await.unwrap_or(ExitStatus::Unknown) }),
            started_wall: SystemTime::now(),
            start_time: u64::from(pid),
            cgroup: Some(format!("/fake/gen-{gen}")),
        }
    }

    fn deliver(&self, gen: Gen, sig: i32) {
        let mut w = self.world.lock();
        if sig != 9 && w.ignored.contains(&sig) {
            return;
        }
        if let Some(tx) = w.exits.remove(&gen) {
            let _ = tx.send(ExitStatus::Signaled {
                signal: sig,
                core: false,
            });
        }
    }
}

impl Executor for FakeExecutor {
    fn spawn(&mut self, spec: &ServiceSpec, gen: Gen) -> Result<Started, ExecError> {
        let pid = {
            let mut w = self.world.lock();
            w.calls.push(Call::Spawn(gen, spec.argv.clone()));
            if !w.fail_spawns.is_empty() {
                let e = w.fail_spawns.remove(0);
                return Err(ExecError::Spawn(std::io::Error::other(e)));
            }
            if w.prepare_volumes {
                let plan = crate::volumes::prepare_volumes(&spec.volumes)?;
                w.last_binds = plan.map_or(0, |p| p.len());
            }
            w.next_pid += 1;
            w.next_pid
        };
        Ok(self.started(gen, pid))
    }

    fn adopt(
        &mut self,
        _spec: &ServiceSpec,
        rec: &ServiceRecord,
        gen: Gen,
    ) -> Result<Started, ExecError> {
        self.world.lock().calls.push(Call::Adopt(gen, rec.pid));
        Ok(self.started(gen, rec.pid))
    }

    fn signal(&mut self, gen: Gen, target: Target, signal: i32) {
        self.world
            .lock()
            .calls
            .push(Call::Signal(gen, target, signal));
        self.deliver(gen, signal);
    }

    fn kill(&mut self, gen: Gen, target: Target) {
        self.world.lock().calls.push(Call::Kill(gen, target));
        self.deliver(gen, 9);
    }

    fn kill_group(&mut self, gen: Gen) -> Done {
        let mut w = self.world.lock();
        w.calls.push(Call::KillGroup(gen));
        if !w.hang_groups {
            return Box::pin(async {});
        }
        let mut rx = match w.stuck.get(&gen) {
            Some(tx) => tx.subscribe(),
            None => {
                let (tx, rx) = watch::channel(false);
                w.stuck.insert(gen, tx);
                rx
            }
        };
        Box::pin(async move {
            let _ = rx.wait_for(|v| *v).await;
        })
    }

    fn release(&mut self, gen: Gen) {
        self.world.lock().calls.push(Call::Release(gen));
    }

    fn pre_stop(&mut self, _spec: &ServiceSpec, gen: Gen, timeout: Duration) -> Done {
        let mut w = self.world.lock();
        w.calls.push(Call::PreStop(gen, timeout));
        if !w.hang_pre_stop {
            return Box::pin(async {});
        }
        let (tx, rx) = oneshot::channel();
        w.pre_stops.insert(gen, tx);
        Box::pin(async move {
            let _ = tokio::time::timeout(timeout, rx).await;
        })
    }

    fn start_probes(
        &mut self,
        _spec: &ServiceSpec,
        gen: Gen,
        _started_wall: SystemTime,
        initial: ProbeStart,
        tx: mpsc::UnboundedSender<TaggedReport>,
    ) {
        let mut w = self.world.lock();
        w.calls.push(Call::StartProbes(gen, initial));
        w.probes = Some(tx);
    }

    fn stop_probes(&mut self) {
        self.world.lock().calls.push(Call::StopProbes);
    }

    fn set_limits(&mut self, _spec: &ServiceSpec) {
        self.world.lock().calls.push(Call::SetLimits);
    }

    fn finish(&mut self) {
        self.world.lock().calls.push(Call::Finish);
    }
}
