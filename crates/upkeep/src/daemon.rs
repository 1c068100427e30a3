//! `upkeep run`: wires the loader, the supervisor, the HTTP server, the control
//! socket and systemd notification together on one single-threaded runtime.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};
use upkeep_core::snapshot::{HostWarning, Shared};
use upkeep_runtime::lock::StateLock;
use upkeep_runtime::reaper::Reaper;
use upkeep_runtime::supervisor::{Ended, Options, Supervisor};

use crate::cli::Paths;
use crate::load::{config_only, overrides};

/// The HTTP thread's scheduler slice (`upkeep_runtime::spawn::
/// set_thread_latency`): a /health answer takes about 0.1 ms of CPU, a
/// /metrics one with 100 services about 0.5 ms.
const HTTP_SLICE: Duration = Duration::from_micros(500);

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(paths: &Paths) -> anyhow::Result<()> {
    let (cfg, diags) = config_only(paths)?;
    for d in &diags {
        warn!("{d}");
    }
    create_dir(&cfg.state_dir, STATE_DIR_MODE)
        .with_context(|| format!("creating the state directory {}", cfg.state_dir.display()))?;
    let _lock = StateLock::acquire(&cfg.state_dir)?;
    if let Err(e) = create_dir(&cfg.log_dir, LOG_DIR_MODE) {
        warn!(
            "cannot create the log directory {}: {e}; service output will be discarded",
            cfg.log_dir.display()
        );
    }

    // Soft open-files limit up to the hard limit before anything is
    // spawned; every child gets the original back (docs/operations.md).
    upkeep_runtime::nofile::raise_soft_limit();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    rt.block_on(async move {
        let reaper = Reaper::start().context("starting the reaper (child subreaper + SIGCHLD)")?;
        let shared = Arc::new(Shared::default());
        shared.heartbeat_ms.store(unix_ms(), Ordering::Relaxed);
        // Checked once, at start: the kubelet's config changes with `kubeadm
        // upgrade`, which is followed by a restart of upkeep in docs/kubeadm.md.
        if let Some(d) = crate::preflight::kubelet_static_pods(&cfg) {
            warn!("{d}");
            let mut snap = shared.snapshot.write().unwrap_or_else(|p| p.into_inner());
            snap.warnings.push(HostWarning {
                file: d.file.display().to_string(),
                warning: match &d.field {
                    Some(f) => format!("{f}: {}", d.message),
                    None => d.message.clone(),
                },
            });
        }

        let addr: std::net::SocketAddr = cfg.listen.parse().with_context(|| format!("listen address {:?}", cfg.listen))?;
        if !addr.ip().is_loopback() {
            warn!("listening on {addr}, which is not a loopback address: /health and /metrics are reachable from the network");
        }
        let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
        listener.set_nonblocking(true).context("listener")?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let http_shared = shared.clone();
        let mut http_stop = stop_rx.clone();
        // The HTTP side starts answering once the initial services are in the
        // snapshot (adopted ones with their pid and readiness): before, a
        // /health answered right after a restart could list no service at
        // all, and say "ok". Until then connections wait in the backlog.
        let (serve_tx, mut serve_rx) = watch::channel(false);
        // The loop stamps its heartbeat at every re-list (and, under a systemd
        // watchdog, at a quarter of its period): no extra wake-ups when idle.
        let watchdog = sd_notify::watchdog_enabled();
        let heartbeat = watchdog.map(|w| (w / 4).min(Duration::from_secs(5)));
        let beat_period = heartbeat.unwrap_or(cfg.relist_period);
        let http_config = upkeep_api::HttpConfig {
            livez_stale_after: (beat_period * 3).max(Duration::from_secs(10)),
            ..upkeep_api::HttpConfig::from(env!("CARGO_PKG_VERSION"))
        };
        // The HTTP side runs on a thread of its own: /health and /metrics only
        // read the snapshot, and must answer within milliseconds even while the
        // supervision thread is busy spawning a crash loop.
        let http_thread = std::thread::Builder::new()
            .name("upkeep-http".into())
            .spawn(move || {
                // Like the log rotation thread, a little above the services
                // (nice -5, as root): a scrape is a few ms of CPU every few
                // seconds, and when a crash loop or a busy control plane
                // saturates the cores, /health and /metrics would otherwise
                // wait for a CPU for longer than they take (the threads a
                // scrape starts to read usage files inherit it).
                // A short slice too, so that a request preempts a busy
                // service as soon as it arrives (without it the kernel lets
                // the running task finish its slice: waits of 3-4 ms were
                // measured under the bench's crash loop).
                upkeep_runtime::spawn::set_thread_latency(-5, HTTP_SLICE);
                // Child exits and stop signals are the supervisor's: without
                // this, a crash loop interrupts this thread's waits at
                // random (the kernel picks any thread that takes a signal).
                if let Err(e) = upkeep_runtime::reaper::block_supervisor_signals() {
                    tracing::debug!("HTTP thread: signals not blocked ({e})");
                }
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!("cannot start the HTTP runtime: {e}");
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(l) => l,
                        Err(e) => {
                            tracing::error!("HTTP listener: {e}");
                            return;
                        }
                    };
                    // Err: the supervisor ended before its first snapshot.
                    if serve_rx.wait_for(|v| *v).await.is_err() {
                        return;
                    }
                    let shutdown = async move {
                        let _ = http_stop.wait_for(|v| *v).await;
                    };
                    upkeep_api::serve_http(listener, http_shared, http_config, shutdown).await;
                });
            })
            .context("starting the HTTP thread")?;

        let (control_tx, control_rx) = mpsc::channel(16);
        let socket = cfg.state_dir.join("upkeep.sock");
        let mut control_stop = stop_rx.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = control_stop.wait_for(|v| *v).await;
            };
            if let Err(e) = upkeep_api::control::serve_control(&socket, control_tx, shutdown).await {
                warn!("control socket {}: {e}", socket.display());
            }
        });

        let (started_tx, started_rx) = oneshot::channel();
        let (notify_tx, notify_rx) = oneshot::channel();
        tokio::spawn(async move {
            if started_rx.await.is_ok() {
                // This runs after the service tasks of the initial set have
                // published their first status: they were spawned before
                // `started` fired, and tasks run in the order they are woken.
                let _ = serve_tx.send(true);
                let _ = notify_tx.send(());
            }
        });
        tokio::spawn(notifier(shared.clone(), notify_rx, watchdog));

        let supervisor = Supervisor::new(Options {
            config: cfg.clone(),
            config_path: paths.config.clone(),
            overrides: overrides(paths),
            shared: shared.clone(),
            reaper,
            control: control_rx,
            on_started: Some(started_tx),
            cgroup_prefix: cgroup_prefix(&cfg.state_dir),
            heartbeat,
        });
        info!(listen = %addr, manifests = %cfg.manifests.display(), state_dir = %cfg.state_dir.display(), "upkeep {} starting", env!("CARGO_PKG_VERSION"));
        let ended = supervisor.run().await.context("supervisor")?;
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        let _ = stop_tx.send(true);
        let _ = tokio::task::spawn_blocking(move || http_thread.join()).await;
        match ended {
            Ended::Stopped => info!("all services stopped; exiting"),
            Ended::LeftRunning => info!("services left running for the next upkeep; exiting"),
        }
        anyhow::Ok(())
    })
}

/// Mode of a state directory upkeep creates: it holds the control socket and
/// the adoption records, root's business only.
const STATE_DIR_MODE: u32 = 0o700;
/// Mode of a log directory upkeep creates: readable by the group (adm on
/// Debian, as the package sets it), not by others (services log secrets).
const LOG_DIR_MODE: u32 = 0o750;

/// Creates `dir` (and missing parents) with `mode`; an existing directory is
/// left as the operator set it.
fn create_dir(dir: &std::path::Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
}

/// Tells systemd READY=1 once the initial services are started, keeps STATUS=
/// current, and pings the watchdog only while the supervision loop is alive.
async fn notifier(shared: Arc<Shared>, started: oneshot::Receiver<()>, watchdog: Option<Duration>) {
    if started.await.is_err() {
        return;
    }
    let status = |shared: &Shared| {
        let snap = shared.snapshot.read().unwrap_or_else(|p| p.into_inner());
        let n = snap.services.len();
        let ready = snap.services.values().filter(|s| s.healthy()).count();
        let mut s = format!("{n} services, {ready} ready");
        if !snap.manifest_errors.is_empty() {
            s.push_str(&format!(
                ", {} manifest error(s)",
                snap.manifest_errors.len()
            ));
        }
        s
    };
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&status(&shared)),
    ]);
    let Some(wd) = watchdog else {
        return;
    };
    let period = wd / 2;
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_status = String::new();
    loop {
        tick.tick().await;
        let age = unix_ms().saturating_sub(shared.heartbeat_ms.load(Ordering::Relaxed));
        if u128::from(age) > period.as_millis() {
            warn!("supervision loop heartbeat is {age} ms old: withholding the watchdog ping");
            continue;
        }
        let s = status(&shared);
        if s != last_status {
            let _ = sd_notify::notify(&[
                sd_notify::NotifyState::Watchdog,
                sd_notify::NotifyState::Status(&s),
            ]);
            last_status = s;
        } else {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
    }
}

/// The cgroup directory of this upkeep instance: `upkeep` for the default state
/// directory, `upkeep-<hash>` for any other, so several upkeeps on one machine
/// (tests, the three-masters example) never share (or kill) each other's cgroups.
fn cgroup_prefix(state_dir: &std::path::Path) -> String {
    let default = std::path::Path::new(upkeep_spec::config::DEFAULT_STATE_DIR);
    let dir = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_path_buf());
    if dir == default {
        return "upkeep".into();
    }
    let hash = upkeep_spec::hash::fnv1a_128_hex(dir.as_os_str().as_encoded_bytes());
    format!("upkeep-{}", &hash[..12])
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}
