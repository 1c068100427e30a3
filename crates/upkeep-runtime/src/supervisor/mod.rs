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
use crate::events;
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
}

impl Ctx {
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
}

impl Supervisor {
    /// Builds the supervisor; call [`Supervisor::run`] inside the runtime.
    pub fn new(opts: Options) -> Self {
        let (ready_tx, _) = watch::channel(0u64);
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
        // The event ring in the state directory (issue 14).
        let _ = opts
            .shared
            .events
            .set(Arc::new(crate::events::EventLog::new(
                &opts.config.state_dir,
                &opts.config.log_dir,
            )));
        // Resource usage for /metrics and the control socket (issue 14).
        let _ = opts.shared.usage.set(Arc::new(crate::usage::HostUsage::new(
            env.cgroup_root.as_ref(),
            &opts.config.node_name,
        )));
        let ctx = Arc::new(Ctx {
            shared: opts.shared,
            ready_tx,
            records: Mutex::new(BTreeMap::new()),
            save: tokio::sync::Notify::new(),
            dirty: std::sync::atomic::AtomicBool::new(false),
            state_dir: opts.config.state_dir.clone(),
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
            Ok(Some(f)) => f.services,
            Ok(None) => BTreeMap::new(),
            Err(e) => {
                warn!("ignoring the state file: {e}");
                BTreeMap::new()
            }
        };

        // Initial desired set.
        let (watch_tx, mut watch_rx) = mpsc::unbounded_channel::<()>();
        let mut watcher = ManifestWatcher::new(&self.cfg.manifests, watch_tx.clone());
        let desired = self.rescan().await;
        self.apply(desired, &mut records);
        // Records of services that are no longer wanted: stop their processes.
        for (name, rec) in std::mem::take(&mut records) {
            self.stop_unconfigured(&name, &rec);
        }
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
                _ = async { match rescan_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => {
                    rescan_at = None;
                    let desired = self.rescan().await;
                    self.apply(desired, &mut BTreeMap::new());
                }
                _ = relist.tick() => {
                    self.beat();
                    self.env.logs.check_all();
                    if !watcher.is_active() {
                        watcher = ManifestWatcher::new(&self.cfg.manifests, watch_tx.clone());
                    }
                    let desired = self.rescan().await;
                    self.apply(desired, &mut BTreeMap::new());
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
        let scan = match tokio::task::spawn_blocking(move || manifest::scan(&cfg)).await {
            Ok(scan) => scan,
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
        let mut manifest_events = Vec::new();
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
                manifest_events = events::manifest_changes(&snap.manifest_errors, &errors);
                snap.manifest_errors = errors;
            }
        }
        if let Some(log) = self.ctx.shared.events.get() {
            for (file, reason, message) in manifest_events {
                log.record(&file, reason, &message, false);
            }
        }
        let mut all = self.cfg.services.clone();
        all.extend(desired.services);
        Some(all)
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

    /// Stops the process of a record whose service is no longer configured:
    /// adopted through a pidfd (identity checked), the stop signal once to
    /// its group, SIGKILL after the grace, then whatever is left.
    fn stop_unconfigured(&self, name: &str, rec: &ServiceRecord) {
        if !rec.still_alive() {
            return;
        }
        warn!(service = %name, pid = rec.pid, "process from a previous upkeep is no longer configured: stopping it");
        let grace = self.cfg.default_stop_timeout;
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
            exec.signal(1, machine::Target::Group, libc::SIGTERM);
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
        warn!(service = %name, pid = leader, "found a running process in the service's cgroup with no state record: adopting it, then restarting it with the current spec");
        Some(ServiceRecord {
            name: name.to_string(),
            pid: leader,
            start_time: st.start_time,
            spec_hash: String::new(),
            exec_hash: String::new(),
            pgid: leader,
            started_at_unix_ms: unix_ms(),
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
                self.apply(desired, &mut BTreeMap::new());
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
        // Say what is true: `stop` on a stopped service stops nothing.
        let state = {
            let snap = self
                .ctx
                .shared
                .snapshot
                .read()
                .unwrap_or_else(|p| p.into_inner());
            snap.services.get(&name).map(|s| s.state.clone())
        };
        let verb = match (verb, state.as_deref()) {
            ("stopping", Some("stopped")) => "already stopped",
            ("starting", Some("running")) => "already running",
            _ => verb,
        };
        match self.actors.get(&name) {
            Some(h) => {
                info!(service = %name, "control: {verb}");
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
    let services = ctx
        .records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let file = StateFile::new(services);
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
