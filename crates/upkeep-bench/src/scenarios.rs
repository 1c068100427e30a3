//! The scenarios. Each runs every supervisor in turn, in its own directory
//! under the run's temp root, with free loopback ports, bounded waits and
//! hard deadlines, and kills what it started when done ([`Running`]'s drop
//! and [`procfs::sweep`]).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::http;
use crate::peers::{which, Liveness, Peer, Running, Service, Setup};
use crate::procfs;
use crate::report::{Cell, Figure, Report};
use crate::stamp::{self, now_ns};
use crate::stats::{ns_to_ms, summarize};

/// The scenario names, in the order `all` runs them.
pub const SCENARIOS: [&str; 7] = [
    "restart", "sigkill", "etcd", "liveness", "manifest", "http", "idle",
];

/// Options of a bench run.
#[derive(Debug, Clone)]
pub struct Opts {
    /// Samples per latency figure.
    pub runs: usize,
    /// The upkeep binary, or why there is none.
    pub upkeep: Result<PathBuf, String>,
    /// The other supervisors to compare with.
    pub peers: Vec<Peer>,
    /// Idle measurement window, seconds.
    pub idle_secs: u64,
    /// Service counts for the idle and start figures.
    pub sizes: Vec<usize>,
    /// Duration of each endpoint load test, seconds.
    pub http_secs: u64,
    /// Lifetime of the crash-loop workload, ms.
    pub exit_after_ms: u64,
    /// Minimum uptime before a SIGKILL (runsv adds 1 s to a run shorter than 1 s), ms.
    pub settle_ms: u64,
    /// This binary (the workloads are its `stamp` and `http-server` commands).
    pub exe: PathBuf,
    /// The run's temp root.
    pub root: PathBuf,
}

impl Opts {
    /// upkeep first, then the peers.
    pub fn supervisors(&self) -> Vec<Peer> {
        let mut v = vec![Peer::Upkeep];
        v.extend(self.peers.iter().copied().filter(|p| *p != Peer::Upkeep));
        v
    }

    fn exe(&self) -> String {
        self.exe.to_string_lossy().into_owned()
    }

    fn dir(&self, scenario: &str, peer: Peer) -> Result<PathBuf, String> {
        let d = self.root.join(format!("{scenario}-{}", peer.name()));
        std::fs::create_dir_all(&d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        Ok(d)
    }

    fn launch(&self, peer: Peer, setup: &Setup) -> Result<Running, String> {
        let upkeep = match (peer, &self.upkeep) {
            (Peer::Upkeep, Err(e)) => return Err(e.clone()),
            (Peer::Upkeep, Ok(p)) => Some(p.as_path()),
            _ => None,
        };
        log(&format!(
            "  {}: starting in {}",
            peer.name(),
            setup.dir.display()
        ));
        Running::start(peer, setup, upkeep)
    }
}

fn log(msg: &str) {
    eprintln!("[upkeep-bench] {msg}");
}

/// A free TCP port on 127.0.0.1 (bound and released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// Polls `f` every `poll` until it returns `Some`, the supervisor dies, or `deadline`.
fn wait_for<T>(
    run: &mut Running,
    deadline: Instant,
    poll: Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, String> {
    loop {
        if let Some(t) = f() {
            return Ok(t);
        }
        run.alive()?;
        if Instant::now() >= deadline {
            return Err(format!(
                "timed out waiting for {what}; supervisor output tail:\n{}",
                run.output_tail(10)
            ));
        }
        std::thread::sleep(poll);
    }
}

/// Samples (ms) and a caveat, from one supervisor in one scenario.
struct Outcome {
    samples: Vec<f64>,
    note: Option<String>,
    extra: serde_json::Value,
}

fn outcome(samples: Vec<f64>) -> Outcome {
    Outcome {
        samples,
        note: None,
        extra: serde_json::Value::Null,
    }
}

/// Adds p50 and p99 figures (and the full summary as detail) for a latency scenario.
#[allow(clippy::too_many_arguments)]
fn latency_figures(
    rep: &mut Report,
    o: &Opts,
    id: &str,
    title: &str,
    target50: Option<&str>,
    target99: Option<&str>,
    applies: impl Fn(Peer) -> Option<String>,
    mut one: impl FnMut(Peer) -> Result<Outcome, String>,
) {
    let mut f50 = Figure::new(
        &format!("{id}_p50"),
        &format!("{title}, p50"),
        "ms",
        target50,
    );
    let mut f99 = Figure::new(
        &format!("{id}_p99"),
        &format!("{title}, p99"),
        "ms",
        target99,
    );
    for peer in o.supervisors() {
        if let Some(why) = applies(peer) {
            f50.cells.insert(peer, Cell::missing(format!("n/a: {why}")));
            f99.cells.insert(peer, Cell::missing(format!("n/a: {why}")));
            continue;
        }
        let res = one(peer);
        let (c50, c99) = match res {
            Ok(out) => match summarize(&out.samples) {
                Some(s) => {
                    let mut detail = s.to_json();
                    detail["samples_ms"] = json!(out.samples);
                    detail["extra"] = out.extra.clone();
                    log(&format!(
                        "  {}: n={} p50={:.2} p99={:.2} min={:.2} max={:.2} ms",
                        peer.name(),
                        s.n,
                        s.p50,
                        s.p99,
                        s.min,
                        s.max
                    ));
                    (
                        Cell::with_detail(s.p50, detail.clone()).noted(out.note.clone()),
                        Cell::with_detail(s.p99, detail).noted(out.note),
                    )
                }
                None => {
                    let why = format!("failed: no samples; {}", out.note.unwrap_or_default());
                    (Cell::missing(why.clone()), Cell::missing(why))
                }
            },
            Err(e) => {
                log(&format!("  {}: FAILED: {e}", peer.name()));
                (
                    Cell::missing(format!("failed: {e}")),
                    Cell::missing(format!("failed: {e}")),
                )
            }
        };
        f50.cells.insert(peer, c50);
        f99.cells.insert(peer, c99);
    }
    rep.figures.push(f50);
    rep.figures.push(f99);
}

fn stamp_service(o: &Opts, name: &str, file: &Path, extra: &[&str]) -> Service {
    let mut argv = vec![o.exe(), "stamp".into(), file.to_string_lossy().into_owned()];
    argv.extend(extra.iter().map(|s| (*s).to_string()));
    Service::new(name, argv)
}

fn setup(dir: PathBuf, services: Vec<Service>) -> Setup {
    Setup {
        dir,
        services,
        listen_port: free_port(),
        debounce_ms: 100,
    }
}

fn ms_between(later_ns: u64, earlier_ns: u64) -> f64 {
    ns_to_ms(i128::from(later_ns) - i128::from(earlier_ns))
}

/// Sleeps until `at_ns` (CLOCK_REALTIME) while the supervisor stays alive.
fn sleep_until_ns(at_ns: u64) {
    let now = now_ns();
    if at_ns > now {
        std::thread::sleep(Duration::from_nanos(at_ns - now));
    }
}

/// Runs one named scenario, adding its figures to `rep`.
pub fn run(name: &str, o: &Opts, rep: &mut Report) -> Result<(), String> {
    log(&format!("scenario {name}"));
    match name {
        "restart" => restart(o, rep),
        "sigkill" => sigkill(o, rep),
        "etcd" => etcd(o, rep),
        "liveness" => liveness(o, rep),
        "idle" => idle(o, rep),
        "manifest" => manifest(o, rep),
        "http" => http_endpoints(o, rep),
        other => {
            return Err(format!(
                "unknown scenario {other:?} (known: all, {})",
                SCENARIOS.join(", ")
            ))
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- restart

fn restart(o: &Opts, rep: &mut Report) {
    latency_figures(
        rep,
        o,
        "restart",
        &format!(
            "crash -> restart, zero backoff (workload lives {} ms)",
            o.exit_after_ms
        ),
        Some("<= 2 ms"),
        None,
        |_| None,
        |peer| restart_one(o, peer, PodKind::NotAPod),
    );
    // upkeep only: the same from a static Pod, in the host's mount namespace
    // and in a private one (a hostPath mounted elsewhere).
    let upkeep_only = |p: Peer| (p != Peer::Upkeep).then(|| "upkeep only".to_string());
    latency_figures(
        rep,
        o,
        "restart_pod",
        "crash -> restart of a static Pod, host mount namespace",
        None,
        None,
        upkeep_only,
        |peer| restart_one(o, peer, PodKind::HostNamespace),
    );
    latency_figures(
        rep,
        o,
        "restart_pod_mountns",
        "crash -> restart of a static Pod, private mount namespace (one bind)",
        None,
        None,
        upkeep_only,
        |peer| restart_one(o, peer, PodKind::PrivateNamespace),
    );
}

/// How the `restart` workload is declared to upkeep.
#[derive(Clone, Copy, PartialEq, Eq)]
enum PodKind {
    /// A `[services]` entry (and the peers' equivalent).
    NotAPod,
    /// A static Pod whose mounts need no namespace (it has none).
    HostNamespace,
    /// A static Pod with a hostPath mounted elsewhere: a private mount
    /// namespace per start.
    PrivateNamespace,
}

fn restart_one(o: &Opts, peer: Peer, kind: PodKind) -> Result<Outcome, String> {
    let tag = match kind {
        PodKind::NotAPod => "restart",
        PodKind::HostNamespace => "restart-pod",
        PodKind::PrivateNamespace => "restart-pod-mountns",
    };
    let dir = o.dir(tag, peer)?;
    let file = dir.join("crash.stamp");
    let life = o.exit_after_ms.to_string();
    let mut svc = stamp_service(o, "crash", &file, &["--exit-after-ms", &life]);
    svc.as_pod = kind != PodKind::NotAPod;
    if kind == PodKind::PrivateNamespace {
        svc.bind = Some((dir.join("bind-src"), dir.join("bind-at")));
    }
    let s = setup(dir, vec![svc]);
    let mut run = o.launch(peer, &s)?;
    let per_run = Duration::from_millis(o.exit_after_ms + 4000);
    let deadline = Instant::now()
        + Duration::from_secs(30)
        + per_run * u32::try_from(o.runs).unwrap_or(u32::MAX);
    let res = wait_for(
        &mut run,
        deadline,
        Duration::from_millis(50),
        "restarts",
        || {
            let g = stamp::exit_to_start(&stamp::read(&file));
            (g.len() >= o.runs).then_some(g)
        },
    );
    run.stop(Duration::from_secs(5));
    let to_ms = |g: &[i128]| {
        g.iter()
            .take(o.runs)
            .map(|&ns| ns_to_ms(ns))
            .collect::<Vec<_>>()
    };
    match res {
        Ok(g) => Ok(outcome(to_ms(&g))),
        Err(e) => {
            let g = stamp::exit_to_start(&stamp::read(&file));
            if g.is_empty() {
                return Err(e);
            }
            let mut out = outcome(to_ms(&g));
            out.note = Some(format!(
                "only {}/{} restarts: {}",
                g.len(),
                o.runs,
                first_line(&e)
            ));
            Ok(out)
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or_default()
}

// ---------------------------------------------------------------- sigkill

fn sigkill(o: &Opts, rep: &mut Report) {
    latency_figures(
        rep,
        o,
        "sigkill",
        "SIGKILL -> new process running",
        Some("<= 1.5 ms"),
        None,
        |_| None,
        |peer| sigkill_one(o, peer),
    );
}

fn kill(pid: u32, sig: i32) -> Result<(), String> {
    let p = i32::try_from(pid).map_err(|_| format!("bad pid {pid}"))?;
    // SAFETY: kill(2) on a specific pid that the caller just verified is a workload of this run.
    if unsafe { libc::kill(p, sig) } != 0 {
        return Err(format!(
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn sigkill_one(o: &Opts, peer: Peer) -> Result<Outcome, String> {
    let dir = o.dir("sigkill", peer)?;
    let file = dir.join("sleeper.stamp");
    let s = setup(dir, vec![stamp_service(o, "sleeper", &file, &["--sleep"])]);
    let mut run = o.launch(peer, &s)?;
    let mut last = wait_for(
        &mut run,
        Instant::now() + Duration::from_secs(60),
        Duration::from_millis(5),
        "first start",
        || stamp::starts(&stamp::read(&file)).last().copied(),
    )?;
    let needle = file.to_string_lossy().into_owned();
    let mut samples = Vec::new();
    let mut note = None;
    for i in 0..o.runs {
        sleep_until_ns(last.0 + o.settle_ms * 1_000_000);
        let (_, pid) = last;
        if !procfs::cmdline(pid).is_some_and(|c| c.contains(&needle)) {
            note = Some(format!(
                "run {i}: workload pid {pid} is gone before the kill"
            ));
            break;
        }
        let t0 = now_ns();
        kill(pid, libc::SIGKILL)?;
        match wait_for(
            &mut run,
            Instant::now() + Duration::from_secs(15),
            Duration::from_millis(2),
            "restart",
            || stamp::first_start_after(&stamp::read(&file), t0, pid),
        ) {
            Ok(next) => {
                samples.push(ms_between(next.0, t0));
                last = next;
            }
            Err(e) => {
                note = Some(format!("run {i}: {}", first_line(&e)));
                break;
            }
        }
    }
    run.stop(Duration::from_secs(5));
    Ok(Outcome {
        samples,
        note,
        extra: serde_json::Value::Null,
    })
}

// ---------------------------------------------------------------- etcd

fn etcd(o: &Opts, rep: &mut Report) {
    let runs = o.runs.min(10);
    latency_figures(
        rep,
        o,
        "etcd",
        &format!("SIGKILL etcd -> /health true ({runs} runs, 5 ms poll)"),
        None,
        None,
        |_| None,
        |peer| etcd_one(o, peer, runs),
    );
}

fn etcd_one(o: &Opts, peer: Peer, runs: usize) -> Result<Outcome, String> {
    let etcd = which("etcd").ok_or("etcd is not installed (Debian: etcd-server)")?;
    let dir = o.dir("etcd", peer)?;
    let (cport, pport) = (free_port(), free_port());
    let data = dir.join("etcd-data");
    let client = format!("http://127.0.0.1:{cport}");
    let peer_url = format!("http://127.0.0.1:{pport}");
    let mut svc = Service::new(
        "etcd",
        vec![
            etcd.to_string_lossy().into_owned(),
            "--name=bench".into(),
            format!("--data-dir={}", data.display()),
            format!("--listen-client-urls={client}"),
            format!("--advertise-client-urls={client}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=bench={peer_url}"),
        ],
    );
    svc.as_pod = true;
    let s = setup(dir, vec![svc]);
    let mut run = o.launch(peer, &s)?;
    let healthy = || {
        http::get(cport, "/health", Duration::from_millis(100))
            .is_ok_and(|r| r.status == 200 && r.body.contains("\"health\":\"true\""))
    };
    wait_for(
        &mut run,
        Instant::now() + Duration::from_secs(60),
        Duration::from_millis(20),
        "etcd healthy",
        || healthy().then_some(()),
    )?;
    let needle = data.to_string_lossy().into_owned();
    let mut samples = Vec::new();
    let mut note = None;
    for i in 0..runs {
        std::thread::sleep(Duration::from_millis(o.settle_ms));
        let Some(pid) = procfs::find_process(&needle, "etcd") else {
            note = Some(format!("run {i}: etcd process not found"));
            break;
        };
        let t0 = Instant::now();
        kill(pid, libc::SIGKILL)?;
        let back = wait_for(
            &mut run,
            t0 + Duration::from_secs(60),
            Duration::from_millis(5),
            "etcd healthy again",
            || {
                (procfs::find_process(&needle, "etcd").is_some_and(|p| p != pid) && healthy())
                    .then_some(())
            },
        );
        match back {
            Ok(()) => samples.push(t0.elapsed().as_secs_f64() * 1e3),
            Err(e) => {
                note = Some(format!("run {i}: {}", first_line(&e)));
                break;
            }
        }
    }
    run.stop(Duration::from_secs(10));
    Ok(Outcome {
        samples,
        note,
        extra: serde_json::Value::Null,
    })
}

// ---------------------------------------------------------------- liveness

const HANG_AFTER_MS: u64 = 1500;
const PROBE: (u64, u64, u32) = (1, 1, 1); // period s, timeout s, threshold

fn liveness(o: &Opts, rep: &mut Report) {
    let runs = o.runs.min(10);
    let bound_ms = u64::from(PROBE.2) * PROBE.0 * 1000 + PROBE.1 * 1000;
    latency_figures(
        rep,
        o,
        "liveness",
        &format!(
            "hung HTTP server -> restarted (period {}s, timeout {}s, threshold {}; bound {bound_ms} ms)",
            PROBE.0, PROBE.1, PROBE.2
        ),
        Some(&format!("<= {} ms every time", bound_ms + 20)),
        Some(&format!("<= {} ms", bound_ms + 20)),
        |p| (!p.has_http_probes()).then(|| format!("{} has no HTTP health checks", p.name())),
        |peer| liveness_one(o, peer, runs, bound_ms),
    );
}

fn liveness_one(o: &Opts, peer: Peer, runs: usize, bound_ms: u64) -> Result<Outcome, String> {
    let dir = o.dir("liveness", peer)?;
    let file = dir.join("web.stamp");
    let port = free_port();
    let mut svc = Service::new(
        "web",
        vec![
            o.exe(),
            "http-server".into(),
            port.to_string(),
            "--hang-after-ms".into(),
            HANG_AFTER_MS.to_string(),
            "--stamp".into(),
            file.to_string_lossy().into_owned(),
        ],
    );
    svc.liveness = Some(Liveness {
        port,
        period_s: PROBE.0,
        timeout_s: PROBE.1,
        threshold: PROBE.2,
    });
    let s = setup(dir, vec![svc]);
    let mut run = o.launch(peer, &s)?;
    let per = Duration::from_millis(HANG_AFTER_MS + 10_000);
    let deadline =
        Instant::now() + Duration::from_secs(30) + per * u32::try_from(runs).unwrap_or(u32::MAX);
    let res = wait_for(
        &mut run,
        deadline,
        Duration::from_millis(50),
        "liveness restarts",
        || {
            let g = stamp::hang_to_start(&stamp::read(&file));
            (g.len() >= runs).then_some(g)
        },
    );
    run.stop(Duration::from_secs(5));
    let g = stamp::hang_to_start(&stamp::read(&file));
    let samples: Vec<f64> = g.iter().take(runs).map(|&ns| ns_to_ms(ns)).collect();
    #[allow(clippy::cast_precision_loss)]
    let over = samples
        .iter()
        .filter(|&&ms| ms > (bound_ms + 20) as f64)
        .count();
    let mut note =
        (over > 0).then(|| format!("{over}/{} restarts beyond the bound + 20 ms", samples.len()));
    if let Err(e) = res {
        if samples.is_empty() {
            return Err(e);
        }
        note = Some(format!(
            "only {}/{runs} restarts: {}; {}",
            samples.len(),
            first_line(&e),
            note.unwrap_or_default()
        ));
    }
    Ok(Outcome {
        samples,
        note,
        extra: json!({"bound_ms": bound_ms, "over_bound_plus_20ms": over}),
    })
}

// ---------------------------------------------------------------- manifest

fn manifest(o: &Opts, rep: &mut Report) {
    let mut debounce = 100;
    latency_figures(
        rep,
        o,
        "manifest",
        "manifest edit -> new process running (raw, incl. 100 ms debounce)",
        Some("<= debounce + 150 ms"),
        None,
        |p| (p != Peer::Upkeep).then(|| "no static Pod manifests (no equivalent)".to_string()),
        |peer| {
            let out = manifest_one(o, peer);
            if let Ok(o) = &out {
                debounce = o.extra["debounce_ms"].as_u64().unwrap_or(100);
            }
            out
        },
    );
    // The same samples minus the configured debounce.
    let base = rep.figures.len() - 2;
    let mut minus = Figure::new(
        "manifest_minus_debounce_p50",
        "manifest edit -> new process running, minus debounce, p50",
        "ms",
        Some("<= 150 ms"),
    );
    #[allow(clippy::cast_precision_loss)]
    for (peer, cell) in &rep.figures[base].cells {
        let c = match cell.value {
            Some(v) => Cell::with_detail(v - debounce as f64, json!({"debounce_ms": debounce}))
                .noted(cell.note.clone()),
            None => cell.clone(),
        };
        minus.cells.insert(*peer, c);
    }
    rep.figures.push(minus);
}

fn manifest_one(o: &Opts, peer: Peer) -> Result<Outcome, String> {
    let dir = o.dir("manifest", peer)?;
    let file = dir.join("edit.stamp");
    let gen = |k: usize| {
        let mut s = stamp_service(o, "edit", &file, &["--sleep", "--tag", &format!("gen-{k}")]);
        s.as_pod = true;
        s
    };
    let s = setup(dir, vec![gen(0)]);
    let mut run = o.launch(peer, &s)?;
    let mut last = wait_for(
        &mut run,
        Instant::now() + Duration::from_secs(60),
        Duration::from_millis(5),
        "first start",
        || stamp::starts(&stamp::read(&file)).last().copied(),
    )?;
    let mdir = s.manifests_dir();
    let mut samples = Vec::new();
    let mut note = None;
    for k in 1..=o.runs {
        std::thread::sleep(Duration::from_millis(300));
        let tmp = mdir.join(".edit.yaml.tmp");
        std::fs::write(&tmp, crate::peers::pod_manifest(&gen(k)))
            .map_err(|e| format!("writing {}: {e}", tmp.display()))?;
        let t0 = now_ns();
        std::fs::rename(&tmp, mdir.join("edit.yaml")).map_err(|e| format!("rename: {e}"))?;
        match wait_for(
            &mut run,
            Instant::now() + Duration::from_secs(15),
            Duration::from_millis(2),
            "restart after edit",
            || stamp::first_start_after(&stamp::read(&file), t0, last.1),
        ) {
            Ok(next) => {
                samples.push(ms_between(next.0, t0));
                last = next;
            }
            Err(e) => {
                note = Some(format!("edit {k}: {}", first_line(&e)));
                break;
            }
        }
    }
    run.stop(Duration::from_secs(5));
    Ok(Outcome {
        samples,
        note,
        extra: json!({"debounce_ms": s.debounce_ms}),
    })
}

// ---------------------------------------------------------------- http

fn http_endpoints(o: &Opts, rep: &mut Report) {
    let sups = o.supervisors();
    let mut figs: Vec<Figure> = Vec::new();
    for (path, id) in [("/health", "health"), ("/metrics", "metrics")] {
        for (client, cid) in [("closed loop, 1 conn", "own"), ("wrk -t1 -c4", "wrk")] {
            for (stat, target) in [("p50", None), ("p99", Some("<= 5 ms"))] {
                figs.push(Figure::new(
                    &format!("{id}_{cid}_{stat}"),
                    &format!("GET {path}, 100 svcs + 5 crash-looping, {client}, {stat}"),
                    "ms",
                    target,
                ));
            }
        }
    }
    // Requests further apart than the usage metrics' sharing window, so
    // that each one gets usage read for it (see `Spaced`).
    for sp in SPACED {
        for (stat, target) in [("p50", None), ("p99", sp.target)] {
            figs.push(Figure::new(
                &format!("{}_{stat}", sp.id),
                &format!("{}, {stat}", sp.label),
                "ms",
                target,
            ));
        }
    }
    for &peer in &sups {
        if peer != Peer::Upkeep {
            for f in &mut figs {
                f.cells
                    .insert(peer, Cell::missing("n/a: no HTTP status endpoint"));
            }
            continue;
        }
        match http_one(o, peer) {
            Ok(cells) => {
                for (f, c) in figs.iter_mut().zip(cells) {
                    f.cells.insert(peer, c);
                }
            }
            Err(e) => {
                log(&format!("  {}: FAILED: {e}", peer.name()));
                for f in &mut figs {
                    f.cells.insert(peer, Cell::missing(format!("failed: {e}")));
                }
            }
        }
    }
    rep.figures.extend(figs);
}

/// A series of requests spaced further apart than the 250 ms for which
/// scrapes share one read of the usage files
/// (`upkeep_api::usage_metrics::MAX_AGE`), 10 per `--http-secs`.
struct Spaced {
    id: &'static str,
    label: &'static str,
    path: &'static str,
    pace: Pace,
    target: Option<&'static str>,
}

/// How the requests of a [`Spaced`] series are spaced (the gap after each
/// response).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pace {
    /// All [`PACE_MS`] apart: one Prometheus.
    Steady,
    /// 300 and 400 ms apart in turn: two Prometheus servers at one
    /// interval from different offsets (an HA pair).
    Pair,
    /// 300-700 ms apart at random, never repeating the way scrapers do
    /// (see [`random_gaps`]): upkeep sees no pace and reads at each scrape.
    Random,
}

/// The pace of the steady series (after each response).
const PACE_MS: u64 = 300;

const SPACED: [Spaced; 4] = [
    Spaced {
        id: "metrics_paced",
        label: "GET /metrics, 100 svcs + 5 crash-looping, one every 300 ms like a Prometheus scrape (usage read ahead of each)",
        path: "/metrics",
        pace: Pace::Steady,
        target: Some("<= 5 ms"),
    },
    Spaced {
        id: "metrics_pair",
        label: "GET /metrics, 100 svcs + 5 crash-looping, 300 and 400 ms apart in turn like an HA pair of Prometheus servers (usage read ahead of each)",
        path: "/metrics",
        pace: Pace::Pair,
        target: Some("<= 5 ms"),
    },
    Spaced {
        id: "metrics_fresh",
        label: "GET /metrics, 100 svcs + 5 crash-looping, 300-700 ms apart at random (usage read at each scrape)",
        path: "/metrics",
        pace: Pace::Random,
        target: Some("<= 5 ms"),
    },
    Spaced {
        id: "health_paced",
        label: "GET /health, 100 svcs + 5 crash-looping, one every 300 ms (this machine's floor for a spaced request)",
        path: "/health",
        pace: Pace::Steady,
        target: None,
    },
];

/// The gaps of a series of `n` requests.
fn spaced_gaps(sp: &Spaced, n: u64) -> Vec<Duration> {
    match sp.pace {
        Pace::Steady => vec![Duration::from_millis(PACE_MS); n as usize],
        Pace::Pair => (0..n)
            .map(|i| Duration::from_millis(if i % 2 == 0 { 300 } else { 400 }))
            .collect(),
        Pace::Random => random_gaps(n),
    }
}

/// `n` gaps of 300-700 ms from a fixed xorshift sequence in which the last
/// gaps never repeat the way upkeep follows scrapers
/// (`upkeep_core::cadence`: the last `k` gaps, for `k` up to 4, each
/// within an eighth of the one `k` before it), with 20 ms to spare for the
/// response time that adds to each gap: upkeep sees no pace and reads at
/// each scrape. (If no draw in 1,000 fits, the next is taken as it is; the
/// bench's count of reads made ahead would show it.)
fn random_gaps(n: u64) -> Vec<Duration> {
    let close = |a: u64, b: u64| a.abs_diff(b) <= a.max(b) / 8 + 20;
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut gaps: Vec<u64> = Vec::new();
    let mut draws = 0;
    while (gaps.len() as u64) < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        gaps.push(300 + x % 400);
        let m = gaps.len();
        let repeats = (1..=4)
            .filter(|k| m >= 2 * k)
            .any(|k| (1..=k).all(|i| close(gaps[m - i], gaps[m - i - k])));
        draws += 1;
        if repeats && draws <= 1_000 {
            gaps.pop();
        } else {
            draws = 0;
        }
    }
    gaps.into_iter().map(Duration::from_millis).collect()
}

/// The calling thread's nice value and scheduler slice, set back to the
/// defaults on drop.
struct ThreadNice;

impl ThreadNice {
    /// Sets them to `nice` and `slice_ns` (best effort: a negative nice
    /// value needs root; a slice needs Linux 6.12, older kernels ignore it).
    fn set(nice: i32, slice_ns: u64) -> ThreadNice {
        set_thread_scheduling(nice, slice_ns);
        ThreadNice
    }
}

impl Drop for ThreadNice {
    fn drop(&mut self) {
        set_thread_scheduling(0, 0);
    }
}

/// `sched_setattr` of the calling thread (as upkeep's HTTP thread does).
fn set_thread_scheduling(nice: i32, slice_ns: u64) {
    let attr = libc::sched_attr {
        size: std::mem::size_of::<libc::sched_attr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: nice,
        sched_priority: 0,
        sched_runtime: slice_ns,
        sched_deadline: 0,
        sched_period: 0,
    };
    // SAFETY: sched_setattr(2) on the calling thread (pid 0) with a fully
    // initialised struct whose `size` is its size; the kernel only reads it.
    unsafe {
        libc::syscall(libc::SYS_sched_setattr, 0, std::ptr::from_ref(&attr), 0);
    }
}

/// upkeep's `upkeep_usage_reads_total` samples: (at scrape, ahead).
fn usage_reads(port: u16) -> Option<(u64, u64)> {
    let body = http::get(port, "/metrics", Duration::from_secs(2))
        .ok()?
        .body;
    let value = |trigger: &str| -> Option<u64> {
        let key = format!("upkeep_usage_reads_total{{trigger=\"{trigger}\"}} ");
        body.lines()
            .find_map(|l| l.strip_prefix(key.as_str()))?
            .trim()
            .parse()
            .ok()
    };
    Some((value("scrape")?, value("ahead")?))
}

fn http_one(o: &Opts, peer: Peer) -> Result<Vec<Cell>, String> {
    let dir = o.dir("http", peer)?;
    let starts = dir.join("sleepers.stamp");
    let crashes = dir.join("crashers.stamp");
    let mut services: Vec<Service> = (0..100)
        .map(|i| {
            stamp_service(
                o,
                &format!("s{i:03}"),
                &starts,
                &["--sleep", "--tag", &format!("s{i:03}")],
            )
        })
        .collect();
    for i in 0..5 {
        services.push(stamp_service(
            o,
            &format!("crash{i}"),
            &crashes,
            &["--exit-after-ms", "50", "--tag", &format!("c{i}")],
        ));
    }
    let s = setup(dir, services);
    let port = s.listen_port;
    let mut run = o.launch(peer, &s)?;
    wait_for(
        &mut run,
        Instant::now() + Duration::from_secs(60),
        Duration::from_millis(20),
        "100 services and /health",
        || {
            (distinct_pids(&starts) >= 100
                && http::get(port, "/health", Duration::from_secs(1)).is_ok())
            .then_some(())
        },
    )?;
    std::thread::sleep(Duration::from_secs(2));
    // The client measures at the daemon's HTTP priority (nice -5 and a
    // 0.5 ms slice, as root): otherwise its own waits for a CPU behind the
    // crash loop, when the response arrives, count as upkeep's latency.
    let _client_priority = ThreadNice::set(-5, 500_000);
    let exits_before = count_exits(&crashes);
    let t_start = Instant::now();
    let mut cells = Vec::new();
    for path in ["/health", "/metrics"] {
        // Own closed-loop client: one request at a time, a new connection each.
        let mut lat = Vec::new();
        let mut errors = 0u64;
        let until = Instant::now() + Duration::from_secs(o.http_secs);
        while Instant::now() < until && lat.len() < 200_000 {
            let t = Instant::now();
            match http::get(port, path, Duration::from_secs(2)) {
                Ok(r) if r.status == 200 || r.status == 503 => {
                    lat.push(t.elapsed().as_secs_f64() * 1e3)
                }
                _ => errors += 1,
            }
        }
        run.alive()?;
        let summary =
            summarize(&lat).ok_or_else(|| format!("no successful GET {path} ({errors} errors)"))?;
        log(&format!(
            "  {} {path}: {} requests, p50 {:.3} ms, p99 {:.3} ms, {errors} errors",
            peer.name(),
            summary.n,
            summary.p50,
            summary.p99
        ));
        let mut detail = summary.to_json();
        detail["errors"] = json!(errors);
        let note = (errors > 0).then(|| format!("{errors} failed requests"));
        cells.push(Cell::with_detail(summary.p50, detail.clone()).noted(note.clone()));
        cells.push(Cell::with_detail(summary.p99, detail).noted(note));
        // wrk, when installed.
        match run_wrk(port, path, o.http_secs) {
            Ok(w) => {
                let detail = json!({"p50": w.p50_ms, "p99": w.p99_ms, "rps": w.rps});
                log(&format!(
                    "  {} {path} wrk: p50 {:.3} ms, p99 {:.3} ms, {:.0} req/s",
                    peer.name(),
                    w.p50_ms,
                    w.p99_ms,
                    w.rps
                ));
                cells.push(Cell::with_detail(w.p50_ms, detail.clone()));
                cells.push(Cell::with_detail(w.p99_ms, detail));
            }
            Err(e) => {
                cells.push(Cell::missing(format!("n/a: {e}")));
                cells.push(Cell::missing(format!("n/a: {e}")));
            }
        }
    }
    for sp in &SPACED {
        let n = o.http_secs.saturating_mul(10).max(30);
        let mut lat = Vec::new();
        let mut errors = 0u64;
        // A pause longer than any gap first: the series starts a pace of its own.
        std::thread::sleep(Duration::from_secs(1));
        let reads_before = usage_reads(port);
        for gap in spaced_gaps(sp, n) {
            std::thread::sleep(gap);
            let t = Instant::now();
            match http::get(port, sp.path, Duration::from_secs(2)) {
                Ok(r) if r.status == 200 || r.status == 503 => {
                    lat.push(t.elapsed().as_secs_f64() * 1e3)
                }
                _ => errors += 1,
            }
        }
        run.alive()?;
        let summary = summarize(&lat)
            .ok_or_else(|| format!("no successful spaced GET {} ({errors} errors)", sp.path))?;
        let reads = match (reads_before, usage_reads(port)) {
            (Some((s0, a0)), Some((s1, a1))) if sp.path == "/metrics" => {
                format!(
                    ", usage read at {} scrapes and ahead of {}",
                    s1 - s0,
                    a1 - a0
                )
            }
            _ => String::new(),
        };
        log(&format!(
            "  {} {} {}: {} requests, p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms, {errors} errors{reads}",
            peer.name(),
            sp.path,
            match sp.pace {
                Pace::Steady => "paced",
                Pace::Pair => "paced as a pair",
                Pace::Random => "at random gaps",
            },
            summary.n,
            summary.p50,
            summary.p99,
            summary.max
        ));
        let mut detail = summary.to_json();
        detail["errors"] = json!(errors);
        if !reads.is_empty() {
            detail["usage_reads"] = json!(reads.trim_start_matches(", "));
        }
        let note = (errors > 0).then(|| format!("{errors} failed requests"));
        cells.push(Cell::with_detail(summary.p50, detail.clone()).noted(note.clone()));
        cells.push(Cell::with_detail(summary.p99, detail).noted(note));
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = (count_exits(&crashes) - exits_before) as f64 / t_start.elapsed().as_secs_f64();
    log(&format!(
        "  crash-loopers restarted {rate:.1} times/s during the load"
    ));
    for c in &mut cells {
        if c.value.is_some() {
            c.detail["crash_restarts_per_s"] = json!(rate);
        }
    }
    run.stop(Duration::from_secs(10));
    Ok(cells)
}

fn run_wrk(port: u16, path: &str, secs: u64) -> Result<http::WrkResult, String> {
    let wrk = which("wrk").ok_or("wrk is not installed")?;
    let mut child = Command::new(wrk)
        .args([
            "-t1",
            "-c4",
            &format!("-d{secs}s"),
            "--latency",
            &format!("http://127.0.0.1:{port}{path}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("wrk: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(secs + 15);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err("wrk did not finish in time".into());
            }
        }
    }
    let mut out = String::new();
    if let Some(mut so) = child.stdout.take() {
        use std::io::Read;
        let _ = so.read_to_string(&mut out);
    }
    http::parse_wrk(&out).ok_or_else(|| format!("cannot parse wrk output: {}", out.trim()))
}

fn distinct_pids(file: &Path) -> usize {
    stamp::starts(&stamp::read(file))
        .into_iter()
        .map(|(_, p)| p)
        .collect::<HashSet<_>>()
        .len()
}

fn count_exits(file: &Path) -> usize {
    stamp::read(file)
        .iter()
        .filter(|s| matches!(s, stamp::Stamp::Exit { .. }))
        .count()
}

// ---------------------------------------------------------------- idle + start

fn idle(o: &Opts, rep: &mut Report) {
    for &n in &o.sizes {
        let t100 = n == 100;
        let mut start = Figure::new(
            &format!("start_{n}"),
            &format!("start {n} services (launch -> all stamped)"),
            "ms",
            t100.then_some("<= 100 ms"),
        );
        let mut pss = Figure::new(
            &format!("idle_{n}_pss"),
            &format!("idle, {n} services: PSS"),
            "MiB",
            t100.then_some("<= 4 MiB"),
        );
        let mut rss = Figure::new(
            &format!("idle_{n}_rss"),
            &format!("idle, {n} services: RSS"),
            "MiB",
            None,
        );
        let mut cpu = Figure::new(
            &format!("idle_{n}_cpu"),
            &format!("idle, {n} services: CPU"),
            "ms/min",
            t100.then_some("~0"),
        );
        let mut wake = Figure::new(
            &format!("idle_{n}_wakeups"),
            &format!("idle, {n} services: context switches"),
            "1/s",
            t100.then_some("0"),
        );
        for peer in o.supervisors() {
            match idle_one(o, peer, n) {
                Ok(r) => {
                    let d = json!({"procs": r.procs, "window_s": r.window_s});
                    start.cells.insert(peer, Cell::value(r.start_ms));
                    match r.usage {
                        Some((p, rs, c, w)) => {
                            pss.cells.insert(peer, Cell::with_detail(p, d.clone()));
                            rss.cells.insert(peer, Cell::with_detail(rs, d.clone()));
                            cpu.cells.insert(peer, Cell::with_detail(c, d.clone()));
                            wake.cells.insert(peer, Cell::with_detail(w, d));
                        }
                        None => {
                            for f in [&mut pss, &mut rss, &mut cpu, &mut wake] {
                                f.cells.insert(
                                    peer,
                                    Cell::missing("failed: supervisor died during the window"),
                                );
                            }
                        }
                    }
                }
                Err(e) => {
                    log(&format!("  {}: FAILED: {e}", peer.name()));
                    for f in [&mut start, &mut pss, &mut rss, &mut cpu, &mut wake] {
                        f.cells.insert(peer, Cell::missing(format!("failed: {e}")));
                    }
                }
            }
        }
        rep.figures.extend([start, pss, rss, cpu, wake]);
    }
}

struct IdleResult {
    start_ms: f64,
    /// (PSS MiB, RSS MiB, CPU ms/min, context switches/s)
    usage: Option<(f64, f64, f64, f64)>,
    procs: usize,
    window_s: f64,
}

fn idle_one(o: &Opts, peer: Peer, n: usize) -> Result<IdleResult, String> {
    let dir = o.dir(&format!("idle{n}"), peer)?;
    let file = dir.join("starts.stamp");
    let services: Vec<Service> = (0..n)
        .map(|i| {
            stamp_service(
                o,
                &format!("s{i:04}"),
                &file,
                &["--sleep", "--tag", &format!("s{i:04}")],
            )
        })
        .collect();
    let s = setup(dir, services);
    let mut run = o.launch(peer, &s)?;
    let startup = Duration::from_millis(u64::try_from(n).unwrap_or(u64::MAX).saturating_mul(100))
        .clamp(Duration::from_secs(30), Duration::from_secs(120));
    let started = wait_for(
        &mut run,
        Instant::now() + startup,
        Duration::from_millis(2),
        &format!("{n} starts"),
        || {
            let st = stamp::starts(&stamp::read(&file));
            let pids: HashSet<u32> = st.iter().map(|&(_, p)| p).collect();
            (pids.len() >= n).then(|| st.iter().map(|&(ns, _)| ns).max().unwrap_or(0))
        },
    );
    let last_start = match started {
        Ok(t) => t,
        Err(e) => {
            let k = distinct_pids(&file);
            return Err(format!(
                "only {k}/{n} services started within {} s: {}",
                startup.as_secs(),
                first_line(&e)
            ));
        }
    };
    let start_ms = ms_between(last_start, run.launch_ns);
    log(&format!(
        "  {}: {n} services started in {start_ms:.1} ms",
        peer.name()
    ));
    std::thread::sleep(Duration::from_secs(if o.idle_secs >= 30 { 5 } else { 1 }));
    let pids = run.own_pids();
    let a = procfs::usage(&pids);
    let t_a = Instant::now();
    let end = t_a + Duration::from_secs(o.idle_secs);
    while Instant::now() < end {
        std::thread::sleep(
            Duration::from_millis(200).min(end.saturating_duration_since(Instant::now())),
        );
        if run.alive().is_err() {
            return Ok(IdleResult {
                start_ms,
                usage: None,
                procs: pids.len(),
                window_s: 0.0,
            });
        }
    }
    let b = procfs::usage(&pids);
    let window = t_a.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let (cpu_ms, sw) = (
        (b.cpu_ticks.saturating_sub(a.cpu_ticks)) as f64 * 1000.0 / procfs::clk_tck() as f64,
        b.ctxsw.saturating_sub(a.ctxsw) as f64,
    );
    #[allow(clippy::cast_precision_loss)]
    let usage = (
        b.pss_kib as f64 / 1024.0,
        b.rss_kib as f64 / 1024.0,
        cpu_ms * 60.0 / window,
        sw / window,
    );
    log(&format!(
        "  {}: {} procs, PSS {:.2} MiB, RSS {:.2} MiB, CPU {:.1} ms/min, {:.2} switches/s",
        peer.name(),
        b.procs,
        usage.0,
        usage.1,
        usage.2,
        usage.3
    ));
    run.stop(Duration::from_secs(10));
    Ok(IdleResult {
        start_ms,
        usage: Some(usage),
        procs: b.procs,
        window_s: window,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use upkeep_core::cadence::Cadence;

    /// How many of the arrivals after `gaps` (each 1 ms longer, for the
    /// response) upkeep's cadence predicts.
    fn predicted(gaps: &[Duration]) -> usize {
        let mut c = Cadence::new(Duration::from_millis(250));
        let mut at = Instant::now();
        gaps.iter()
            .filter(|g| {
                at += **g + Duration::from_millis(1);
                c.scraped(at).is_some()
            })
            .count()
    }

    #[test]
    fn the_random_series_never_looks_like_scrapers_and_the_paced_ones_do() {
        let spaced = |pace| SPACED.iter().find(|s| s.pace == pace).unwrap();
        let random = spaced_gaps(spaced(Pace::Random), 300);
        assert_eq!(random.len(), 300);
        assert!(random.iter().all(|g| (300..700).contains(&g.as_millis())));
        assert_eq!(predicted(&random), 0);
        // One pace from the third arrival, a pair from the fifth.
        assert_eq!(predicted(&spaced_gaps(spaced(Pace::Steady), 300)), 298);
        assert_eq!(predicted(&spaced_gaps(spaced(Pace::Pair), 300)), 296);
    }
}
