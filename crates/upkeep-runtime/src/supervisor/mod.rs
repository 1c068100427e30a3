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

mod actor;
#[cfg(test)]
mod actor_tests;
mod ctx;
mod reconcile;
mod rollout;
mod saver;
mod shutdown;
#[cfg(test)]
mod volume_tests;
mod watcher;

use ctx::Ctx;
use saver::{state_saver, write_state};

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
    /// How the manifests are scanned (tests inject failures).
    scan_fn: fn(&Config) -> manifest::DirScan,
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
            holds: Mutex::new(Default::default()),
            write_lock: Mutex::new(()),
            rollout: rollout::Link::new(&opts.config),
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
            scan_fn: manifest::scan,
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
        // Planned changes across masters (issue #16), with `[cluster]` only.
        let _rollout = rollout::start(&self.ctx);

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
        self.discover_unclaimed();
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

    fn control_request(&mut self, req: ControlRequest) -> ControlReply {
        let (name, cmd, verb) = match req {
            ControlRequest::Restart(n) => (n, Cmd::Event(Event::Restart), "restarting"),
            ControlRequest::Stop(n) => (n, Cmd::Event(Event::Hold), "stopping"),
            ControlRequest::Start(n) => (n, Cmd::Event(Event::Release), "starting"),
            ControlRequest::Apply(n) => (
                n,
                Cmd::Event(Event::StepGranted),
                "applying the pending change (if any) without the rollout lock",
            ),
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
        rollout: upkeep_spec::RolloutMode::Serial,
        hash: String::new(),
    }
}
