//! The supervisor: one actor per service driving the pure state machine of
//! `upkeep_core::machine`, and the reconcile loop that turns the config and the
//! manifests directory into the set of actors.
//!
//! Data flows one way: files -> `ServiceSpec` -> desired set -> reconcile ->
//! per-service actor -> `machine::step` -> actions -> executor -> events. The
//! status snapshot is written after every step; `/health` and `/metrics` only
//! read it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::executor::real::{Env, RealExecutor};
use upkeep_core::control::{ControlReply, ControlRequest};
use upkeep_core::crashlog::CrashLog;
use upkeep_core::exit::signal_name;
use upkeep_core::machine::{self, Action, Event, Phase, ProbeKill, ServiceState};
use upkeep_core::probe::ProbeResult;
use upkeep_core::snapshot::{rfc3339, LastExit, ManifestError, ServiceStatus, Shared};
use upkeep_core::ExitStatus;
use upkeep_spec::config::{self, Config, Overrides};
use upkeep_spec::manifest::{self, ManifestTracker};
use upkeep_spec::{OnExit, Origin, ServiceSpec};

use crate::cgroup::{Cgroup, CgroupRoot};
use crate::logs::Logs;
use crate::probe::{ProbeKind, ProbeReport};
use crate::reaper::{self, Reaper};
use crate::spawn;
use crate::state::{self, ServiceRecord, StateFile};

/// A control request with its reply channel.
pub type ControlMsg = (ControlRequest, oneshot::Sender<ControlReply>);

/// Everything the supervisor needs from the binary.
pub struct Options {
    /// The loaded config (already validated).
    pub config: Config,
    /// Where the config came from and the command-line overrides, for SIGHUP.
    pub config_path: Option<PathBuf>,
    /// Command-line overrides, re-applied on SIGHUP.
    pub overrides: Overrides,
    /// Status shared with the HTTP server.
    pub shared: Arc<Shared>,
    /// The reaper (started by the caller inside the runtime).
    pub reaper: Arc<Reaper>,
    /// Control socket requests.
    pub control: mpsc::Receiver<ControlMsg>,
    /// Called once the initial services have been started (sd_notify READY=1).
    pub on_started: Option<oneshot::Sender<()>>,
    /// Prefix of the per-service cgroups (`upkeep` in production; tests use a unique one).
    pub cgroup_prefix: String,
    /// How often the loop stamps `Shared::heartbeat_ms` (/livez, watchdog).
    /// `None`: only at each re-list (no extra wake-ups when idle).
    pub heartbeat: Option<Duration>,
}

/// How the supervisor ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Services were stopped.
    Stopped,
    /// Services were left running for the next upkeep to adopt.
    LeftRunning,
}

/// Commands from the supervisor to a service actor.
enum Cmd {
    /// A state machine event (Restart, Hold, Release).
    Event(Event),
    /// The spec changed: the actor tells the machine what changed (policy
    /// applies live; a change of what is executed replaces the process).
    Update(Box<ServiceSpec>),
    /// The service is gone: stop it, then end the actor.
    Remove,
    /// upkeep exits: stop the service, then end the actor.
    Shutdown(oneshot::Sender<()>),
    /// upkeep exits leaving the service running: end the actor, touch nothing.
    Detach(oneshot::Sender<()>),
}

struct ActorHandle {
    tx: mpsc::UnboundedSender<Cmd>,
    hash: String,
    after: Vec<String>,
    join: JoinHandle<()>,
}

/// State shared by all actors.
struct Ctx {
    shared: Arc<Shared>,
    /// Bumped whenever any service's readiness changes (for `after`).
    ready_tx: watch::Sender<u64>,
    /// Adoption records by service name; saved by the state saver.
    records: Mutex<BTreeMap<String, ServiceRecord>>,
    /// Wakes the state saver.
    save: tokio::sync::Notify,
    /// Records changed since the last write.
    dirty: std::sync::atomic::AtomicBool,
    state_dir: PathBuf,
    /// Services held by the operator; saved with the records.
    holds: Mutex<std::collections::BTreeSet<String>>,
    /// One writer of the state file at a time (the saver and the final
    /// write at exit never overlap).
    write_lock: Mutex<()>,
}

impl Ctx {
    /// Records an operator hold (or its end) for the state file.
    fn set_hold(&self, name: &str, held: bool) {
        let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        let changed = if held {
            holds.insert(name.to_string())
        } else {
            holds.remove(name)
        };
        drop(holds);
        if changed {
            self.dirty.store(true, std::sync::atomic::Ordering::Release);
            self.save.notify_one();
        }
    }

    /// True if the operator holds `name` stopped.
    fn is_held(&self, name: &str) -> bool {
        self.holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    fn record(&self, name: &str, rec: Option<ServiceRecord>) {
        let mut recs = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let changed = match rec {
            Some(r) => recs.insert(name.to_string(), r.clone()).as_ref() != Some(&r),
            None => recs.remove(name).is_some(),
        };
        drop(recs);
        // Only real changes cost a write (and its fsyncs).
        if changed {
            self.dirty.store(true, std::sync::atomic::Ordering::Release);
            self.save.notify_one();
        }
    }

    /// Counts a bug upkeep caught and survived (`upkeep_internal_errors_total`).
    fn internal_error(&self, kind: &str) {
        let mut snap = self
            .shared
            .snapshot
            .write()
            .unwrap_or_else(|p| p.into_inner());
        *snap.internal_errors.entry(kind.to_string()).or_default() += 1;
    }

    fn bump_ready(&self) {
        self.ready_tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The services of `after` that are not ready now.
    fn not_ready(&self, after: &[String]) -> Vec<String> {
        if after.is_empty() {
            return Vec::new();
        }
        let snap = self
            .shared
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner());
        after
            .iter()
            .filter(|d| !snap.services.get(*d).is_some_and(|s| s.healthy()))
            .cloned()
            .collect()
    }
}

mod actor;
#[cfg(test)]
mod actor_tests;
mod watcher;

use actor::{Actor, Initial};
use watcher::ManifestWatcher;

fn earliest(
    a: Option<tokio::time::Instant>,
    b: Option<tokio::time::Instant>,
) -> Option<tokio::time::Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// The reconcile loop and the set of actors.
pub struct Supervisor {
    cfg: Config,
    config_path: Option<PathBuf>,
    overrides: Overrides,
    ctx: Arc<Ctx>,
    env: Env,
    actors: HashMap<String, ActorHandle>,
    draining: HashMap<String, JoinHandle<()>>,
    tracker: ManifestTracker,
    control: mpsc::Receiver<ControlMsg>,
    on_started: Option<oneshot::Sender<()>>,
    heartbeat: Option<Duration>,
    /// When to scan again because a manifest was still settling.
    settle_rescan: Option<tokio::time::Instant>,
    /// The last good manifests as last saved.
    saved_last_good: BTreeMap<PathBuf, String>,
    /// The specs an earlier upkeep ran, from its saved last good manifests:
    /// how to stop a pod whose file went away while upkeep was down (its
    /// stop signal and grace, not the host-service default).
    seeded: BTreeMap<String, ServiceSpec>,
    /// Live processes of an earlier upkeep that no service claimed at
    /// start-up while some manifest was broken or settling (it may be
    /// theirs): adopted if their service comes back, stopped once the
    /// manifests load cleanly and still nothing claims them.
    unclaimed: BTreeMap<String, ServiceRecord>,
}

impl Supervisor {
    /// Builds the supervisor; call [`Supervisor::run`] inside the runtime.
    pub fn new(opts: Options) -> Self {
        let (ready_tx, _) = watch::channel(0u64);
        opts.shared
            .snapshot
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .starting = true;
        let env = Env {
            reaper: opts.reaper,
            logs: Logs::new(
                &opts.config.log_dir,
                opts.config.log_max_size,
                opts.config.log_max_files,
                Some(opts.shared.clone()),
            ),
            cgroup_root: match CgroupRoot::detect(&opts.cgroup_prefix) {
                Ok(r) => Some(r),
                Err(e) => {
                    warn!(
                        "running without cgroups ({e}): services are tracked by process group only"
                    );
                    None
                }
            },
        };
        let ctx = Arc::new(Ctx {
            shared: opts.shared,
            ready_tx,
            records: Mutex::new(BTreeMap::new()),
            save: tokio::sync::Notify::new(),
            dirty: std::sync::atomic::AtomicBool::new(false),
            state_dir: opts.config.state_dir.clone(),
            holds: Mutex::new(Default::default()),
            write_lock: Mutex::new(()),
        });
        Supervisor {
            cfg: opts.config,
            config_path: opts.config_path,
            overrides: opts.overrides,
            ctx,
            env,
            actors: HashMap::new(),
            draining: HashMap::new(),
            tracker: ManifestTracker::new(),
            control: opts.control,
            on_started: opts.on_started,
            heartbeat: opts.heartbeat,
            settle_rescan: None,
            saved_last_good: BTreeMap::new(),
            seeded: BTreeMap::new(),
            unclaimed: BTreeMap::new(),
        }
    }

    /// Runs until SIGTERM/SIGINT, then stops or leaves the services per `on_exit`.
    pub async fn run(mut self) -> std::io::Result<Ended> {
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sighup = signal(SignalKind::hangup())?;

        // The state saver writes adoption records off the critical path.
        let saver = tokio::spawn(state_saver(self.ctx.clone()));

        // Adoption records left by an earlier upkeep.
        let mut records = match state::load(&self.cfg.state_dir) {
            Ok(Some(f)) => {
                *self.ctx.holds.lock().unwrap_or_else(|p| p.into_inner()) = f.held.clone();
                let now = state::boot_id();
                if !f.boot_id.is_empty() && !now.is_empty() && f.boot_id != now {
                    info!(
                        "the state file is from another boot: its process records are not adopted"
                    );
                    BTreeMap::new()
                } else {
                    f.services
                }
            }
            Ok(None) => BTreeMap::new(),
            Err(e) => {
                warn!("ignoring the state file: {e}");
                BTreeMap::new()
            }
        };
        // The holds file outlives a lost state file; without one (an older
        // upkeep), the holds in the state file count.
        let (holds, problem) = state::load_holds(&self.cfg.state_dir);
        if let Some(p) = problem {
            warn!("{p}");
        }
        if let Some(h) = holds {
            *self.ctx.holds.lock().unwrap_or_else(|p| p.into_inner()) = h;
        }
        {
            let held = self.ctx.holds.lock().unwrap_or_else(|p| p.into_inner());
            if !held.is_empty() {
                info!(
                    "held by the operator (upkeep stop), kept stopped until upkeep start: {}",
                    held.iter().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        self.seed_last_good();

        // Initial desired set.
        let (watch_tx, mut watch_rx) = mpsc::unbounded_channel::<()>();
        let mut watcher = ManifestWatcher::new(&self.cfg.manifests, watch_tx.clone());
        let desired = self.rescan().await;
        self.apply(desired, &mut records);
        // Records of services that are no longer wanted: stop their
        // processes, unless a manifest is broken or settling (then later).
        self.unclaimed = std::mem::take(&mut records);
        self.settle_unclaimed(true);
        // /health says "starting" until every service has been adopted or
        // started once: a half-filled list must not read as healthy.
        self.wait_initial_publish().await;
        if let Some(tx) = self.on_started.take() {
            let _ = tx.send(());
        }
        info!(services = self.actors.len(), "supervising");

        let mut relist = tokio::time::interval(self.cfg.relist_period);
        relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        relist.reset();
        let mut heartbeat = self.heartbeat.map(|p| {
            let mut i = tokio::time::interval(p);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        let mut rescan_at: Option<tokio::time::Instant> = None;

        let ended = loop {
            tokio::select! {
                _ = sigterm.recv() => break self.shutdown("SIGTERM").await,
                _ = sigint.recv() => break self.shutdown("SIGINT").await,
                _ = sighup.recv() => {
                    let period = self.cfg.relist_period;
                    self.reload().await;
                    watcher = ManifestWatcher::new(&self.cfg.manifests, watch_tx.clone());
                    if self.cfg.relist_period != period {
                        relist = tokio::time::interval(self.cfg.relist_period);
                        relist.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                        relist.reset();
                    }
                }
                Some(()) = watch_rx.recv() => {
                    if rescan_at.is_none() {
                        rescan_at = Some(tokio::time::Instant::now() + self.cfg.debounce);
                    }
                }
                _ = async { match earliest(rescan_at, self.settle_rescan) { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                    rescan_at = None;
                    self.settle_rescan = None;
                    let desired = self.rescan().await;
                    self.apply_claiming(desired);
                }
                _ = relist.tick() => {
                    self.beat();
                    self.env.logs.check_all();
                    if !watcher.is_active() {
                        watcher = ManifestWatcher::new(&self.cfg.manifests, watch_tx.clone());
                    }
                    let desired = self.rescan().await;
                    self.apply_claiming(desired);
                }
                Some((req, reply)) = self.control.recv() => {
                    let r = self.control_request(req);
                    let _ = reply.send(r);
                }
                _ = async { match heartbeat.as_mut() { Some(h) => { h.tick().await; } None => std::future::pending().await } } => self.beat(),
            }
        };
        drop(watcher);
        if ended == Ended::Stopped {
            if let Some(root) = &self.env.cgroup_root {
                // Empty once every service is stopped; harmless if not.
                let _ = root.remove();
            }
        }
        // Final state write.
        self.ctx.save.notify_one();
        tokio::task::yield_now().await;
        saver.abort();
        write_state(&self.ctx);
        Ok(ended)
    }

    /// Loads the manifests (in a blocking task) and returns the desired set;
    /// `None` when the scan failed unexpectedly (then nothing may change).
    async fn rescan(&mut self) -> Option<Vec<ServiceSpec>> {
        let cfg = self.cfg.clone();
        let scan = match tokio::task::spawn_blocking(move || {
            let mut scan = manifest::scan(&cfg);
            let wait = hold_unsettled(&mut scan, cfg.settle, SystemTime::now());
            (scan, wait)
        })
        .await
        {
            Ok((scan, wait)) => {
                // Look again once the newest change has settled.
                self.settle_rescan = wait.map(|w| tokio::time::Instant::now() + w);
                scan
            }
            Err(e) => {
                // A bug, not an empty directory: keep every service as it is.
                error!(
                    "the manifest scan failed unexpectedly ({e}): keeping every service as it is"
                );
                self.ctx.internal_error("scan_panic");
                return None;
            }
        };
        let desired = self.tracker.update(scan, &self.cfg.services);
        self.save_last_good();
        for w in &desired.warnings {
            debug!("{w}");
        }
        let errors: Vec<ManifestError> = desired
            .errors
            .iter()
            .map(|d| ManifestError {
                file: d.file.display().to_string(),
                error: match &d.field {
                    Some(f) => format!("{f}: {}", d.message),
                    None => d.message.clone(),
                },
            })
            .collect();
        {
            let mut snap = self
                .ctx
                .shared
                .snapshot
                .write()
                .unwrap_or_else(|p| p.into_inner());
            if snap.manifest_errors != errors {
                for e in &errors {
                    if !snap.manifest_errors.contains(e) {
                        error!(
                            "manifest {}: {} (the last good version, if any, keeps running)",
                            e.file, e.error
                        );
                    }
                }
                snap.manifest_errors = errors;
            }
        }
        let mut all = self.cfg.services.clone();
        all.extend(desired.services);
        Some(all)
    }

    /// Lets the new actors run until each has published its first status
    /// (bounded), then clears the snapshot's `starting` flag.
    async fn wait_initial_publish(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let all = {
                let snap = self
                    .ctx
                    .shared
                    .snapshot
                    .read()
                    .unwrap_or_else(|p| p.into_inner());
                self.actors.keys().all(|n| snap.services.contains_key(n))
            };
            if all || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.ctx
            .shared
            .snapshot
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .starting = false;
    }

    /// Seeds the manifest tracker with the last good manifests an earlier
    /// upkeep saved, parsed again with the current config: a file that is
    /// broken, unreadable or gone with its directory now keeps running the
    /// version that ran before upkeep restarted.
    fn seed_last_good(&mut self) {
        let (texts, problem) = state::load_last_good(&self.cfg.state_dir);
        if let Some(p) = problem {
            warn!("{p}");
        }
        let root = self.cfg.manifests.clone();
        let mut pods = Vec::new();
        for (path, text) in &texts {
            let ours = path == &root || path.parent() == Some(root.as_path());
            if !ours {
                continue;
            }
            match manifest::parse(text.as_bytes(), path, &self.cfg) {
                manifest::FileOutcome::Pod(pod) => {
                    for s in &pod.services {
                        self.seeded.insert(s.name.clone(), s.clone());
                    }
                    pods.push(pod)
                }
                _ => warn!(
                    "the saved last good version of {} no longer loads: not kept",
                    path.display()
                ),
            }
        }
        self.saved_last_good = texts;
        self.tracker.seed(pods);
    }

    /// Saves the last good text of every manifest when it changed.
    fn save_last_good(&mut self) {
        let now: BTreeMap<PathBuf, String> = self
            .tracker
            .pods()
            .map(|p| (p.file.clone(), p.text.to_string()))
            .collect();
        if now == self.saved_last_good {
            return;
        }
        if let Err(e) = state::save_last_good(&self.cfg.state_dir, &now) {
            warn!("cannot save the last good manifests: {e}");
            return;
        }
        self.saved_last_good = now;
    }

    /// Diffs the desired set against the actors.
    fn apply(
        &mut self,
        desired: Option<Vec<ServiceSpec>>,
        records: &mut BTreeMap<String, ServiceRecord>,
    ) {
        let Some(desired) = desired else { return };
        self.replace_dead_actors(records);
        let mut wanted: HashMap<String, ServiceSpec> = HashMap::new();
        for s in desired {
            wanted.insert(s.name.clone(), s);
        }
        let gone: Vec<String> = self
            .actors
            .keys()
            .filter(|n| !wanted.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            if let Some(h) = self.actors.remove(&name) {
                info!(service = %name, "removed: stopping");
                let _ = h.tx.send(Cmd::Remove);
                self.draining.insert(name, h.join);
            }
        }
        let mut names: Vec<&String> = wanted.keys().collect();
        names.sort();
        for name in names {
            let spec = &wanted[name];
            match self.actors.get_mut(name) {
                Some(h) if h.hash == spec.hash => {}
                Some(h) => {
                    h.hash = spec.hash.clone();
                    h.after = spec.after.clone();
                    let _ = h.tx.send(Cmd::Update(Box::new(spec.clone())));
                }
                None => {
                    let initial = match records.remove(name) {
                        Some(rec) if rec.still_alive() => Initial::Adopt(rec),
                        _ => match self.discover(name) {
                            Some(rec) => Initial::Adopt(rec),
                            None => Initial::Start,
                        },
                    };
                    let (tx, rx) = mpsc::unbounded_channel();
                    let exec = Box::new(RealExecutor::new(self.env.clone(), name));
                    let actor = Actor::new(spec.clone(), self.ctx.clone(), exec);
                    let wait_for = self.draining.remove(name);
                    let join = tokio::spawn(actor.run(initial, rx, wait_for));
                    self.actors.insert(
                        name.clone(),
                        ActorHandle {
                            tx,
                            hash: spec.hash.clone(),
                            after: spec.after.clone(),
                            join,
                        },
                    );
                }
            }
        }
    }

    /// [`Supervisor::apply`] after the start-up: a process left unclaimed
    /// at start-up is adopted if its service is wanted again.
    fn apply_claiming(&mut self, desired: Option<Vec<ServiceSpec>>) {
        let mut records = std::mem::take(&mut self.unclaimed);
        self.apply(desired, &mut records);
        self.unclaimed = records;
        self.settle_unclaimed(false);
    }

    /// Decides the unclaimed processes: while some manifest is broken or
    /// settling they are left running (the broken file may be theirs: never
    /// stop a process for that); once every manifest loads, no service
    /// wants them, so they are stopped.
    fn settle_unclaimed(&mut self, first: bool) {
        self.unclaimed.retain(|_, rec| rec.still_alive());
        if self.unclaimed.is_empty() {
            return;
        }
        let manifests_broken = !self
            .ctx
            .shared
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .manifest_errors
            .is_empty()
            || self.settle_rescan.is_some();
        // A pod whose last good file is gone from a listable directory was
        // removed, whatever else is broken: stopped as the kubelet would.
        let removed: Vec<String> = self
            .unclaimed
            .keys()
            .filter(|n| {
                self.seeded
                    .get(*n)
                    .is_some_and(|s| source_removed(&s.source))
            })
            .cloned()
            .collect();
        for name in removed {
            if let Some(rec) = self.unclaimed.remove(&name) {
                self.stop_unconfigured(&name, &rec);
            }
        }
        if manifests_broken {
            if first {
                for (name, rec) in &self.unclaimed {
                    warn!(service = %name, pid = rec.pid, "process from a previous upkeep is not in the current set, but the manifests have errors or are changing: left running, unsupervised, until they load");
                }
            }
            return;
        }
        for (name, rec) in std::mem::take(&mut self.unclaimed) {
            self.stop_unconfigured(&name, &rec);
        }
    }

    /// Stops the process of a record whose service is no longer configured:
    /// adopted through a pidfd (identity checked), the stop signal once to
    /// its group, SIGKILL after the grace, then whatever is left.
    fn stop_unconfigured(&self, name: &str, rec: &ServiceRecord) {
        if !rec.still_alive() {
            return;
        }
        warn!(service = %name, pid = rec.pid, "process from a previous upkeep is no longer configured: stopping it");
        // A pod removed while upkeep was down stops as it would have while
        // upkeep ran: its own stop signal and grace (design.md section 5).
        let (signal, grace) = match self.seeded.get(name) {
            Some(spec) => (
                spawn::signal_number(&spec.stop_signal).unwrap_or(libc::SIGTERM),
                spec.stop_grace,
            ),
            None => (libc::SIGTERM, self.cfg.default_stop_timeout),
        };
        let mut exec = RealExecutor::new(self.env.clone(), name);
        let rec = rec.clone();
        let name = name.to_string();
        tokio::spawn(async move {
            use crate::executor::Executor;
            // A placeholder spec: only the name and the cgroup matter here.
            let spec = ServiceSpec {
                name: name.clone(),
                ..placeholder_spec()
            };
            let started = match exec.adopt(&spec, &rec, 1) {
                Ok(s) => s,
                Err(e) => {
                    debug!(service = %name, "{e}");
                    return;
                }
            };
            exec.signal(1, machine::Target::Group, signal);
            if tokio::time::timeout(grace, started.exit).await.is_err() {
                exec.kill(1, machine::Target::Group);
            }
            exec.kill_group(1).await;
            exec.release(1);
            exec.finish();
        });
    }

    /// An actor that ended while still wanted panicked (a bug): say so loudly
    /// and let `apply` create a new one, which adopts the process from the
    /// actor's last record instead of starting a second one.
    fn replace_dead_actors(&mut self, records: &mut BTreeMap<String, ServiceRecord>) {
        let dead: Vec<String> = self
            .actors
            .iter()
            .filter(|(_, h)| h.join.is_finished())
            .map(|(n, _)| n.clone())
            .collect();
        for name in dead {
            self.actors.remove(&name);
            error!(service = %name, "the service's actor ended unexpectedly (a bug): replacing it; its process is adopted, not restarted");
            self.ctx.internal_error("reaper_stopped");
            let rec = self
                .ctx
                .records
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&name)
                .cloned();
            if let Some(rec) = rec {
                records.insert(name, rec);
            }
        }
    }

    /// True when systemd says the machine is going down
    /// (`systemctl is-system-running` prints `stopping`). Bounded to 2 s; any
    /// doubt (no systemd, no answer) means no.
    async fn system_is_shutting_down(&self) -> bool {
        if !Path::new("/run/systemd/system").is_dir() {
            return false;
        }
        let ctx = crate::probe::ExecContext {
            cgroup: None,
            reaper: self.env.reaper.clone(),
            env: BTreeMap::from([(
                "PATH".to_string(),
                upkeep_spec::config::DEFAULT_PATH.to_string(),
            )]),
            working_dir: PathBuf::from("/"),
            uid: None,
            gid: None,
        };
        let argv = vec!["systemctl".to_string(), "is-system-running".to_string()];
        let r = crate::probe::run_once(
            &upkeep_spec::ProbeHandler::Exec { argv },
            Duration::from_secs(2),
            &ctx,
        )
        .await;
        system_state_is_stopping(&r)
    }

    /// Finds a live process of `name` in its cgroup when there is no usable
    /// record (upkeep was killed before it wrote one, or the state file was
    /// lost): the cgroup is the record that costs no write. Its spec is unknown,
    /// so the adopted process is restarted with the current spec, never duplicated.
    fn discover(&self, name: &str) -> Option<ServiceRecord> {
        let root = self.env.cgroup_root.as_ref()?;
        let svc = Cgroup::find_existing(root, name)?;
        // The newest generation leaf with a session leader in it (or, from an
        // upkeep before leaves, the service cgroup itself).
        let mut candidates = svc.leaves();
        candidates.reverse();
        candidates.push(svc);
        let (cg, leader) = candidates.into_iter().find_map(|cg| {
            let leader = cg.procs().into_iter().find(|&pid| {
                reaper::process_stat(pid).is_ok_and(|st| st.session == pid && st.state != 'Z')
            })?;
            Some((cg, leader))
        })?;
        let st = reaper::process_stat(leader).ok()?;
        // The leaf's name says what the generation executes.
        let exec_hash = crate::executor::real::leaf_identity(&cg.dir_name())
            .and_then(|(_, h)| h.map(str::to_string))
            .unwrap_or_default();
        if exec_hash.is_empty() {
            warn!(service = %name, pid = leader, "found a running process in the service's cgroup with no state record and no recorded identity: adopting it, then restarting it with the current spec");
        } else {
            info!(service = %name, pid = leader, "found a running process in the service's cgroup with no state record: adopting it by the identity of its cgroup");
        }
        Some(ServiceRecord {
            name: name.to_string(),
            pid: leader,
            start_time: st.start_time,
            // Unknown: the exec hash (from the cgroup) decides.
            spec_hash: "unknown".into(),
            exec_hash,
            pgid: leader,
            started_at_unix_ms: reaper::started_unix_ms(st.start_time).unwrap_or_else(unix_ms),
            restarts: 0,
            ready: false,
            started: false,
            last_exit: None,
            cgroup: Some(cg.relative_path()),
        })
    }

    async fn reload(&mut self) {
        info!("SIGHUP: reloading the configuration");
        let (cfg, diags) = config::load(self.config_path.as_deref(), &self.overrides);
        for d in &diags {
            warn!("{d}");
        }
        match cfg {
            Some(mut cfg) => {
                // Keys bound to resources opened at start-up need a restart
                // of upkeep; say which, and keep the running values.
                let mut fixed = Vec::new();
                if cfg.listen != self.cfg.listen {
                    fixed.push("listen");
                    cfg.listen = self.cfg.listen.clone();
                }
                if cfg.state_dir != self.cfg.state_dir {
                    fixed.push("state_dir");
                    cfg.state_dir = self.cfg.state_dir.clone();
                }
                if cfg.log_dir != self.cfg.log_dir {
                    fixed.push("log_dir");
                    cfg.log_dir = self.cfg.log_dir.clone();
                }
                if cfg.log_max_size != self.cfg.log_max_size {
                    fixed.push("logs.max_size");
                    cfg.log_max_size = self.cfg.log_max_size;
                }
                if cfg.log_max_files != self.cfg.log_max_files {
                    fixed.push("logs.max_files");
                    cfg.log_max_files = self.cfg.log_max_files;
                }
                if !fixed.is_empty() {
                    warn!(
                        "SIGHUP: {} changed; these take effect only when upkeep restarts (the running values are kept)",
                        fixed.join(", ")
                    );
                }
                self.cfg = cfg;
                let desired = self.rescan().await;
                self.apply_claiming(desired);
            }
            None => error!("the new configuration is invalid: keeping the running one"),
        }
    }

    fn control_request(&mut self, req: ControlRequest) -> ControlReply {
        let (name, cmd, verb) = match req {
            ControlRequest::Restart(n) => (n, Cmd::Event(Event::Restart), "restarting"),
            ControlRequest::Stop(n) => (n, Cmd::Event(Event::Hold), "stopping"),
            ControlRequest::Start(n) => (n, Cmd::Event(Event::Release), "starting"),
        };
        match self.actors.get(&name) {
            Some(h) => {
                info!(service = %name, "control: {verb}");
                let hold = match &cmd {
                    Cmd::Event(Event::Hold) => Some(true),
                    Cmd::Event(Event::Release) => Some(false),
                    _ => None,
                };
                if let Some(held) = hold {
                    // Durable before the reply: an upkeep crash right after
                    // `upkeep stop` or `upkeep start` must not undo it.
                    self.ctx.set_hold(&name, held);
                    write_state(&self.ctx);
                    let holds = self
                        .ctx
                        .holds
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    if let Err(e) = state::save_holds(&self.cfg.state_dir, &holds) {
                        error!("cannot save the operator's holds: {e}");
                    }
                }
                let _ = h.tx.send(cmd);
                ControlReply {
                    ok: true,
                    message: format!("{name}: {verb}"),
                }
            }
            None => ControlReply {
                ok: false,
                message: format!("no service named {name:?}"),
            },
        }
    }

    /// Stamps the heartbeat (/livez, watchdog) and forgets finished actors.
    fn beat(&mut self) {
        if !self.env.reaper.task_alive() {
            error!("the reaper task ended unexpectedly (a bug): restarting it");
            self.ctx.internal_error("reaper_stopped");
            if let Err(e) = Reaper::start() {
                error!("cannot restart the reaper: {e}");
            }
        }
        self.ctx
            .shared
            .heartbeat_ms
            .store(unix_ms(), std::sync::atomic::Ordering::Relaxed);
        self.draining.retain(|_, j| !j.is_finished());
    }

    async fn shutdown(&mut self, why: &str) -> Ended {
        let mut on_exit = self.cfg.on_exit;
        if on_exit == OnExit::Keep && self.system_is_shutting_down().await {
            // Everything left running now would die in systemd's final kill,
            // unordered: stop it in order, each with its grace, instead.
            info!("{why} during system shutdown: stopping services in order despite on_exit = \"keep\"");
            on_exit = OnExit::Stop;
        }
        match on_exit {
            OnExit::Keep => {
                info!(
                    "{why}: exiting and leaving {} service(s) running (on_exit = \"keep\")",
                    self.actors.len()
                );
                let mut waits = Vec::new();
                for h in self.actors.values() {
                    let (tx, rx) = oneshot::channel();
                    if h.tx.send(Cmd::Detach(tx)).is_ok() {
                        waits.push(rx);
                    }
                }
                for w in waits {
                    let _ = w.await;
                }
                Ended::LeftRunning
            }
            OnExit::Stop => {
                info!(
                    "{why}: stopping {} service(s) in reverse dependency order",
                    self.actors.len()
                );
                let mut remaining: Vec<String> = self.actors.keys().cloned().collect();
                while !remaining.is_empty() {
                    let mut batch: Vec<String> = remaining
                        .iter()
                        .filter(|n| {
                            !remaining
                                .iter()
                                .any(|o| self.actors.get(o).is_some_and(|h| h.after.contains(n)))
                        })
                        .cloned()
                        .collect();
                    if batch.is_empty() {
                        batch = remaining.clone();
                    }
                    let mut waits = Vec::new();
                    for n in &batch {
                        if let Some(h) = self.actors.get(n) {
                            let (tx, rx) = oneshot::channel();
                            if h.tx.send(Cmd::Shutdown(tx)).is_ok() {
                                waits.push(rx);
                            }
                        }
                    }
                    for w in waits {
                        let _ = w.await;
                    }
                    remaining.retain(|n| !batch.contains(n));
                }
                for (_, j) in self.draining.drain() {
                    let _ = j.await;
                }
                Ended::Stopped
            }
        }
    }
}

/// Marks every manifest changed less than `settle` ago as settling (not
/// applied yet: it may be half written) and returns how long until the
/// newest of them has settled.
fn hold_unsettled(
    scan: &mut manifest::DirScan,
    settle: Duration,
    now: SystemTime,
) -> Option<Duration> {
    if settle.is_zero() {
        return None;
    }
    let mut wait: Option<Duration> = None;
    for (path, outcome) in scan.files.iter_mut() {
        if !matches!(
            outcome,
            manifest::FileOutcome::Pod(_) | manifest::FileOutcome::Invalid(_)
        ) {
            continue;
        }
        let Ok(modified) = std::fs::metadata(path).and_then(|m| m.modified()) else {
            continue;
        };
        // A time in the future (clock step) counts as just changed.
        let age = now.duration_since(modified).unwrap_or(Duration::ZERO);
        if age < settle {
            *outcome = manifest::FileOutcome::Settling;
            let left = settle - age + Duration::from_millis(10);
            wait = Some(wait.map_or(left, |w| w.max(left)));
        }
    }
    wait
}

/// True when a manifest file no longer exists in a directory that can be
/// listed: its pod was removed (not hidden by an unreadable directory).
fn source_removed(file: &Path) -> bool {
    let listable = file
        .parent()
        .is_some_and(|dir| std::fs::read_dir(dir).is_ok());
    listable
        && std::fs::symlink_metadata(file).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// A spec that runs nothing, for acting on a process whose spec is gone.
fn placeholder_spec() -> ServiceSpec {
    ServiceSpec {
        name: String::new(),
        source: PathBuf::new(),
        origin: Origin::HostService,
        argv: Vec::new(),
        env: BTreeMap::new(),
        working_dir: PathBuf::from("/"),
        uid: None,
        gid: None,
        restart: upkeep_spec::RestartPolicy::Never,
        backoff: upkeep_spec::BackoffSpec::default(),
        stop_signal: "SIGTERM".into(),
        stop_grace: Duration::from_secs(30),
        pre_stop: None,
        probes: upkeep_spec::Probes::default(),
        after: Vec::new(),
        log: upkeep_spec::LogMode::Inherit,
        volumes: Vec::new(),
        resources: upkeep_spec::Resources::default(),
        kill_mode: upkeep_spec::KillMode::ControlGroup,
        hash: String::new(),
    }
}

/// Reads the outcome of `systemctl is-system-running`: it exits non-zero for
/// every state but `running` and prints the state, which the exec probe puts
/// after the exit code (`exit code 1: stopping`).
fn system_state_is_stopping(r: &ProbeResult) -> bool {
    match r {
        ProbeResult::Failure(msg) => msg
            .rsplit(": ")
            .next()
            .is_some_and(|state| state.trim() == "stopping"),
        _ => false,
    }
}

async fn state_saver(ctx: Arc<Ctx>) {
    loop {
        ctx.save.notified().await;
        // Coalesce bursts (a restart storm, the first start of every service)
        // into one write. Until it lands, the service's cgroup is the record.
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A change during the sleep left a stored wake-up; the flag makes sure
        // it does not cost a second, identical write.
        if !ctx.dirty.swap(false, std::sync::atomic::Ordering::AcqRel) {
            continue;
        }
        let ctx2 = ctx.clone();
        let _ = tokio::task::spawn_blocking(move || write_state(&ctx2)).await;
    }
}

fn write_state(ctx: &Ctx) {
    let _one_writer = ctx.write_lock.lock().unwrap_or_else(|p| p.into_inner());
    let services = ctx
        .records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut file = StateFile::new(services);
    file.held = ctx.holds.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Err(e) = state::save(&ctx.state_dir, &file) {
        warn!("cannot write the state file: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognizes_a_stopping_system() {
        assert!(system_state_is_stopping(&ProbeResult::Failure(
            "exit code 1: stopping".into()
        )));
        assert!(!system_state_is_stopping(&ProbeResult::Failure(
            "exit code 1: degraded".into()
        )));
        assert!(!system_state_is_stopping(&ProbeResult::Failure(
            "timeout after 2s".into()
        )));
        assert!(!system_state_is_stopping(&ProbeResult::Success));
        assert!(!system_state_is_stopping(&ProbeResult::Error(
            "cannot start".into()
        )));
    }
}
