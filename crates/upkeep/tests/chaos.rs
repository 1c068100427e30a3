//! The chaos test of issue #11 ("What upkeep knows survives upkeep"): a real
//! daemon with host services and static pods, and a seeded random walk of
//! hostile steps (manifest edits, breaks, fixes, deletions, SIGHUP with a
//! policy or a command change, `upkeep stop|start|restart`, SIGTERM and
//! SIGKILL of upkeep at random moments, a deleted state file). A model says
//! what should run; after each step, once things settle, the invariants of
//! the issue are checked:
//!
//! - at most one process per service (session leaders in the service's
//!   cgroup leaves, found from the pid in `/health` and `/proc/PID/cgroup`);
//! - each running process runs the current good spec, or the last good one
//!   while the current file is broken (`/proc/PID/cmdline` against the model);
//! - held services stay stopped;
//! - a step that only restarted upkeep or changed policy restarted nothing
//!   (pids unchanged), and no step restarts a service it did not touch;
//! - every process upkeep ever reported and no longer reports is gone;
//! - no zombie child of upkeep, and no child of upkeep outside a service.
//!
//! Reproducible: a fixed seed always runs, plus one random seed per run. On
//! failure the seed and the step list are printed. Replay or lengthen with
//! `UPKEEP_CHAOS_SEED=<seed>` and `UPKEEP_CHAOS_STEPS=<n>` (default 200).
//! Processes are found through the daemon, never by a /proc-wide scan, and
//! only what the test started is killed, by pid, at the end.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The seed that always runs.
const FIXED_SEED: u64 = 0x11_c4a0_5eed;
/// Default number of steps per seed.
const DEFAULT_STEPS: usize = 200;
/// `settle` in the test config (a changed manifest is applied once stable this long).
const SETTLE: Duration = Duration::from_millis(200);
/// `debounce` in the test config (set by the harness).
const DEBOUNCE: Duration = Duration::from_millis(50);
/// How long the expected state must hold, unchanged, to count as settled.
const QUIET: Duration = Duration::from_millis(250);
/// Deadline for settling after one step (stops of TERM-ignoring services
/// take their full grace; a busy 2-core machine is slow).
const SETTLE_DEADLINE: Duration = Duration::from_secs(40);

/// A small deterministic RNG (splitmix64): the whole walk follows the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Host service or static pod.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Host,
    Pod,
}

/// The state of a pod's manifest file.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum File {
    /// No file: the pod must not run.
    Absent,
    /// A valid file.
    Good,
    /// A broken file whose last good version keeps running.
    Broken,
}

/// What the model knows of one service.
#[derive(Clone, Debug)]
struct Svc {
    name: &'static str,
    idx: usize,
    kind: Kind,
    /// Ignores SIGTERM (its stops take the full grace).
    ignores_term: bool,
    /// Version of the current good spec: what must run.
    version: u32,
    /// Policy knob (grace of a pod, stop_timeout of a host service).
    policy: u32,
    file: File,
    held: bool,
}

impl Svc {
    /// The argv marker of `version` (fixed width, unique per service).
    fn token(&self) -> String {
        format!("9{}{:06}", self.idx, self.version)
    }

    fn script(&self) -> String {
        if self.ignores_term {
            format!("trap '' TERM; exec sleep {}", self.token())
        } else {
            format!("exec sleep {}", self.token())
        }
    }

    /// Listed in /health.
    fn listed(&self) -> bool {
        self.kind == Kind::Host || self.file != File::Absent
    }

    fn manifest(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {n}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: {g}\n  containers:\n  - name: {n}\n    image: x/{n}:1\n    command: [\"/bin/sh\", \"-c\", \"{s}\"]\n",
            n = self.name,
            g = 2 + self.policy,
            s = self.script()
        )
    }
}

/// The model: what should be.
struct Model {
    svcs: Vec<Svc>,
    /// `[defaults.backoff] max` variant (policy).
    backoff_max: u32,
}

impl Model {
    fn new() -> Model {
        let mk = |idx: usize, name: &'static str, kind: Kind, ignores_term: bool| Svc {
            name,
            idx,
            kind,
            ignores_term,
            version: 1,
            policy: 0,
            file: if kind == Kind::Pod {
                File::Good
            } else {
                File::Absent
            },
            held: false,
        };
        Model {
            svcs: vec![
                mk(0, "h0", Kind::Host, false),
                mk(1, "h1", Kind::Host, true),
                mk(2, "h2", Kind::Host, false),
                mk(3, "p0", Kind::Pod, false),
                mk(4, "p1", Kind::Pod, false),
                mk(5, "p2", Kind::Pod, true),
            ],
            backoff_max: 0,
        }
    }

    fn get(&self, name: &str) -> &Svc {
        self.svcs.iter().find(|s| s.name == name).unwrap()
    }

    fn get_mut(&mut self, name: &str) -> &mut Svc {
        self.svcs.iter_mut().find(|s| s.name == name).unwrap()
    }

    /// The host services and settings after the harness's base config.
    fn config_tail(&self) -> String {
        let mut c = format!(
            "settle = \"{}ms\"\n[defaults.backoff]\ninitial = \"0s\"\nmax = \"{}ms\"\nfactor = 2.0\nreset_after = \"10m\"\njitter = 0.0\n",
            SETTLE.as_millis(),
            200 + 100 * self.backoff_max
        );
        for s in self.svcs.iter().filter(|s| s.kind == Kind::Host) {
            c.push_str(&format!(
                "[services.{}]\ncommand = [\"/bin/sh\", \"-c\", \"{}\"]\nstop_timeout = \"{}ms\"\nrestart = \"{}\"\n",
                s.name,
                s.script(),
                1000 + 200 * s.policy,
                if s.policy % 2 == 0 { "always" } else { "on-failure" }
            ));
        }
        c
    }

    fn names_where(&self, f: impl Fn(&Svc) -> bool) -> Vec<&'static str> {
        self.svcs.iter().filter(|s| f(s)).map(|s| s.name).collect()
    }
}

/// One observed process: pid and start time (pids are reused).
type ProcId = (u32, u64);

fn start_time(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.first() == Some(&"Z") {
        return None;
    }
    f.get(19)?.parse().ok()
}

fn session_of(pid: u32) -> Option<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    rest.split_whitespace().nth(3)?.parse().ok()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

fn cmdline(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default())
        .replace('\0', " ")
}

/// The cgroup2 mount point.
fn cgroup2_mount() -> PathBuf {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mi.lines() {
        if let Some((pre, post)) = line.split_once(" - ") {
            if post.starts_with("cgroup2 ") {
                if let Some(mp) = pre.split_whitespace().nth(4) {
                    return PathBuf::from(mp);
                }
            }
        }
    }
    panic!("no cgroup2 mount: the chaos test needs cgroup v2 (upkeep finds processes through it)");
}

/// The v2 cgroup path of a process (`0::/...`), relative to the mount.
fn cgroup_of(pid: u32) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// Children of a process, from `/proc/PID/task/*/children` (no /proc scan).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// One settled observation.
#[derive(Default, Debug)]
struct Seen {
    /// Running pid per listed service.
    pids: BTreeMap<String, u32>,
}

struct Chaos {
    d: Daemon,
    rng: Rng,
    seed: u64,
    model: Model,
    base_config: String,
    /// upkeep's cgroup (v2), learned from the cgroup of a process /health
    /// reports: `<root>/<service>/gen-N-<hash>`.
    cg_root: Option<PathBuf>,
    /// Every process upkeep ever reported.
    ever: BTreeSet<ProcId>,
    /// The steps so far (shared with the failure report).
    steps: Arc<Mutex<Vec<String>>>,
    last: Seen,
}

impl Drop for Chaos {
    /// However the test ends: upkeep first (else it restarts what is killed
    /// next), then every process the test saw (pid and start time, so a
    /// reused pid is never hit) and whatever is left in this upkeep's
    /// service cgroups; the Daemon guard then removes the cgroups.
    fn drop(&mut self) {
        if let Some(mut c) = self.d.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
        let mut left: Vec<u32> = Vec::new();
        for m in &self.model.svcs {
            left.extend(self.leaders(m.name));
        }
        for &(pid, st) in &self.ever {
            if start_time(pid) == Some(st) {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        for pid in left {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
        // Wait until they are gone, so the cgroups can be removed.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline
            && self
                .model
                .svcs
                .iter()
                .any(|m| !self.leaders(m.name).is_empty())
        {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Chaos {
    fn new(seed: u64, steps: Arc<Mutex<Vec<String>>>) -> Chaos {
        let model = Model::new();
        let pods: Vec<(String, String)> = model
            .svcs
            .iter()
            .filter(|s| s.kind == Kind::Pod)
            .map(|s| (format!("{}.yaml", s.name), s.manifest()))
            .collect();
        let refs: Vec<(&str, &str)> = pods.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let d = Daemon::prepare("", &refs);
        let base_config = std::fs::read_to_string(&d.config)
            .unwrap()
            .replace("on_exit = \"stop\"", "on_exit = \"keep\"");
        let mut c = Chaos {
            d,
            rng: Rng(seed),
            seed,
            model,
            base_config,
            cg_root: None,
            ever: BTreeSet::new(),
            steps,
            last: Seen::default(),
        };
        c.write_config();
        c.d.spawn();
        c
    }

    fn write_config(&self) {
        let text = format!("{}{}", self.base_config, self.model.config_tail());
        std::fs::write(&self.d.config, text).unwrap();
    }

    fn write_pod(&self, name: &str) {
        let s = self.model.get(name);
        self.d
            .write_manifest(&format!("{name}.yaml"), &s.manifest());
    }

    fn pod_path(&self, name: &str) -> PathBuf {
        self.d.manifests.join(format!("{name}.yaml"))
    }

    /// Breaks a manifest in place, as the issue does (`echo "  oops: [" >> etcd.yaml`).
    fn break_pod(&self, name: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.pod_path(name))
            .unwrap();
        f.write_all(b"  oops: [\n").unwrap();
    }

    fn fail(&mut self, why: &str) -> ! {
        let (_, h) = self.d.health();
        panic!(
            "chaos invariant broken (seed {:#x}) at step {}: {why}\n/health: {h}\nupkeep stderr (tail):\n{}",
            self.seed,
            self.steps.lock().unwrap_or_else(|p| p.into_inner()).len(),
            tail(&self.d.stderr(), 60)
        );
    }

    /// Stops upkeep with `sig` and waits for it to exit.
    fn stop_upkeep(&mut self, sig: i32) {
        self.d.signal(sig);
        self.d.wait_exit(Duration::from_secs(30));
    }

    fn count_hups(&self) -> usize {
        self.d
            .stderr()
            .matches("SIGHUP: reloading the configuration")
            .count()
    }

    /// Sends SIGHUP and waits until upkeep has read the new config.
    fn hup(&mut self) {
        // upkeep's stderr file starts afresh with each upkeep.
        let want = self.count_hups() + 1;
        self.d.signal(libc::SIGHUP);
        wait_for("upkeep to reload", Duration::from_secs(15), || {
            (self.count_hups() >= want).then_some(())
        });
    }

    fn client(&mut self, verb: &str, name: &str) {
        let out = self.d.client(&[verb, name]);
        if !out.status.success() {
            self.fail(&format!(
                "upkeep {verb} {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }

    /// The leaders (session leaders) in every generation leaf of a service.
    fn leaders(&self, name: &str) -> Vec<u32> {
        let Some(root) = &self.cg_root else {
            return Vec::new();
        };
        let dir = root.join(upkeep_spec::names::path_component(name));
        let mut out = Vec::new();
        let mut dirs = vec![dir.clone()];
        if let Ok(rd) = std::fs::read_dir(&dir) {
            dirs.extend(rd.flatten().map(|e| e.path()).filter(|p| p.is_dir()));
        }
        for d in dirs {
            if let Ok(s) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for pid in s.split_whitespace().filter_map(|p| p.parse::<u32>().ok()) {
                    if session_of(pid) == Some(pid) && !is_zombie(pid) {
                        out.push(pid);
                    }
                }
            }
        }
        out
    }

    /// One look at the daemon. Hard invariants (they must hold at every
    /// instant) fail at once; `Err` says what does not match the model yet.
    fn observe(&mut self) -> Result<Seen, String> {
        let (_, h) = self.d.health();
        let mut seen = Seen::default();
        let mut problems = Vec::new();
        if h["status"] == "starting" {
            problems.push("upkeep is starting".to_string());
        }
        let listed: BTreeMap<String, serde_json::Value> = h["services"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s["name"].as_str().unwrap_or("").to_string(), s))
            .collect();
        for (name, s) in &listed {
            if let Some(pid) = s["pid"].as_u64() {
                if self.cg_root.is_none() {
                    // `<root>/<service>/<leaf>`: the leaf of a service process.
                    let leaf = cgroup_of(pid as u32).map(PathBuf::from);
                    if let Some(root) = leaf.as_ref().and_then(|l| l.parent()?.parent()) {
                        let rel = root.strip_prefix("/").unwrap_or(root);
                        self.cg_root = Some(cgroup2_mount().join(rel));
                    }
                }
                if let Some(st) = start_time(pid as u32) {
                    self.ever.insert((pid as u32, st));
                }
            }
            if !self.model.svcs.iter().any(|m| m.name == name) {
                problems.push(format!("{name}: listed, but no such service"));
            }
        }
        let model = self.model.svcs.clone();
        for m in &model {
            // At most one process per service, at every instant.
            let leaders = self.leaders(m.name);
            if leaders.len() > 1 {
                let detail: Vec<String> = leaders
                    .iter()
                    .map(|p| format!("{p}: {} in {:?}", cmdline(*p), cgroup_of(*p)))
                    .collect();
                self.fail(&format!(
                    "{}: {} processes at once: {detail:?}",
                    m.name,
                    leaders.len()
                ));
            }
            let s = listed.get(m.name);
            match (m.listed(), s) {
                (false, None) => {
                    if let Some(p) = leaders.first() {
                        problems.push(format!(
                            "{}: removed, but pid {p} still runs in its cgroup ({})",
                            m.name,
                            cmdline(*p)
                        ));
                    }
                }
                (false, Some(_)) => problems.push(format!("{}: removed, but still listed", m.name)),
                (true, None) => problems.push(format!("{}: not listed", m.name)),
                (true, Some(s)) => {
                    let state = s["state"].as_str().unwrap_or("?");
                    let pid = s["pid"].as_u64().map(|p| p as u32);
                    if m.held {
                        if state != "stopped" || pid.is_some() {
                            problems
                                .push(format!("{}: held, but {state} with pid {pid:?}", m.name));
                        }
                        if let Some(p) = leaders.first() {
                            problems.push(format!("{}: held, but pid {p} runs", m.name));
                        }
                    } else {
                        match pid {
                            Some(p) if state == "running" && pid_alive(p) => {
                                let cmd = cmdline(p);
                                if !cmd.contains(&m.token()) {
                                    problems.push(format!(
                                        "{}: pid {p} runs {cmd:?}, the model wants version {}",
                                        m.name,
                                        m.token()
                                    ));
                                }
                                if leaders != [p] {
                                    problems.push(format!(
                                        "{}: /health says pid {p}, its cgroup holds {leaders:?}",
                                        m.name
                                    ));
                                }
                                seen.pids.insert(m.name.to_string(), p);
                            }
                            _ => problems.push(format!("{}: {state} with pid {pid:?}", m.name)),
                        }
                    }
                }
            }
        }
        // The manifest errors are exactly the broken files.
        let mut errs: BTreeSet<String> = BTreeSet::new();
        for e in h["manifest_errors"].as_array().into_iter().flatten() {
            let f = e["file"].as_str().unwrap_or("");
            errs.insert(
                Path::new(f)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| f.to_string()),
            );
        }
        let broken: BTreeSet<String> = self
            .model
            .svcs
            .iter()
            .filter(|s| s.file == File::Broken)
            .map(|s| format!("{}.yaml", s.name))
            .collect();
        if errs != broken {
            problems.push(format!(
                "manifest errors {errs:?}, the model has broken {broken:?}"
            ));
        }
        // Every process upkeep ever reported and no longer runs a service is gone.
        let current: BTreeSet<u32> = seen.pids.values().copied().collect();
        for &(pid, st) in &self.ever {
            if !current.contains(&pid) && start_time(pid) == Some(st) {
                problems.push(format!(
                    "pid {pid} ({}) was a service process and still runs",
                    cmdline(pid)
                ));
            }
        }
        // upkeep's children: no zombie, none outside a running service.
        if let Some(c) = self.d.child.as_ref() {
            let upkeep = c.id();
            for child in children_of(upkeep) {
                if is_zombie(child) {
                    problems.push(format!("zombie child {child} of upkeep"));
                } else if !current.contains(&child) {
                    problems.push(format!(
                        "child {child} of upkeep ({}, cgroup {:?}) is no running service",
                        cmdline(child),
                        cgroup_of(child)
                    ));
                }
            }
        }
        if problems.is_empty() {
            Ok(seen)
        } else {
            Err(problems.join("; "))
        }
    }

    /// Waits until the daemon matches the model, unchanged for [`QUIET`],
    /// and not before `not_before`; then checks that no service outside
    /// `touched` changed its process.
    fn settle(&mut self, not_before: Instant, touched: &BTreeSet<&'static str>) {
        let deadline = Instant::now() + SETTLE_DEADLINE;
        let mut stable: Option<(Instant, BTreeMap<String, u32>)> = None;
        let seen = loop {
            let now = Instant::now();
            match self.observe() {
                Ok(seen) => {
                    let same = stable.as_ref().is_some_and(|(_, p)| *p == seen.pids);
                    if !same {
                        stable = Some((now, seen.pids.clone()));
                    }
                    let since = stable.as_ref().unwrap().0;
                    if now >= not_before && now.duration_since(since) >= QUIET {
                        break seen;
                    }
                }
                Err(why) => {
                    stable = None;
                    if now > deadline {
                        self.fail(&format!("not settled after {SETTLE_DEADLINE:?}: {why}"));
                    }
                }
            }
            if now > deadline + QUIET {
                self.fail("flapping: never stable");
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        for (name, pid) in &self.last.pids {
            if touched.contains(name.as_str()) {
                continue;
            }
            if let Some(now) = seen.pids.get(name) {
                if now != pid {
                    let name = name.clone();
                    let (pid, now) = (*pid, *now);
                    self.fail(&format!(
                        "{name} was restarted (pid {pid} -> {now}) by a step that must not restart it"
                    ));
                }
            }
        }
        self.last = seen;
    }

    fn pods(&self, f: impl Fn(&Svc) -> bool) -> Vec<&'static str> {
        self.model.names_where(|s| s.kind == Kind::Pod && f(s))
    }

    /// A change of a manifest or the config, applied now; returns the services
    /// it may restart and when it is applied at the earliest.
    /// `files_only`: only manifest changes (upkeep is down: nobody to signal).
    fn change(&mut self, files_only: bool) -> (String, BTreeSet<&'static str>, Instant) {
        let file_wait = SETTLE + DEBOUNCE + Duration::from_millis(150);
        loop {
            match self.rng.below(if files_only { 7 } else { 9 }) {
                0 | 1 => {
                    // Edit a manifest: argv change.
                    let c = self.pods(|s| s.file != File::Absent);
                    if c.is_empty() {
                        continue;
                    }
                    let n = *self.rng.pick(&c);
                    let s = self.model.get_mut(n);
                    s.version += 1;
                    s.file = File::Good;
                    let t = s.token();
                    self.write_pod(n);
                    return (
                        format!("edit {n}.yaml: argv -> {t}"),
                        [n].into(),
                        Instant::now() + file_wait,
                    );
                }
                2 => {
                    let c = self.pods(|s| s.file == File::Good);
                    if c.is_empty() {
                        continue;
                    }
                    let n = *self.rng.pick(&c);
                    self.model.get_mut(n).file = File::Broken;
                    self.break_pod(n);
                    return (
                        format!("break {n}.yaml"),
                        BTreeSet::new(),
                        Instant::now() + file_wait,
                    );
                }
                3 => {
                    let c = self.pods(|s| s.file == File::Broken);
                    if c.is_empty() {
                        continue;
                    }
                    let n = *self.rng.pick(&c);
                    let new = self.rng.chance(50);
                    let s = self.model.get_mut(n);
                    s.file = File::Good;
                    if new {
                        s.version += 1;
                    }
                    let t = s.token();
                    self.write_pod(n);
                    let touched = if new { [n].into() } else { BTreeSet::new() };
                    return (
                        format!(
                            "fix {n}.yaml ({})",
                            if new { t } else { "same spec".into() }
                        ),
                        touched,
                        Instant::now() + file_wait,
                    );
                }
                4 => {
                    let c = self.pods(|s| s.file != File::Absent);
                    if c.is_empty() {
                        continue;
                    }
                    let n = *self.rng.pick(&c);
                    self.model.get_mut(n).file = File::Absent;
                    std::fs::remove_file(self.pod_path(n)).unwrap();
                    return (
                        format!("delete {n}.yaml"),
                        [n].into(),
                        Instant::now() + file_wait,
                    );
                }
                5 => {
                    let c = self.pods(|s| s.file == File::Absent);
                    if c.is_empty() {
                        continue;
                    }
                    let n = *self.rng.pick(&c);
                    let s = self.model.get_mut(n);
                    s.version += 1;
                    s.file = File::Good;
                    let t = s.token();
                    self.write_pod(n);
                    return (
                        format!("re-add {n}.yaml ({t})"),
                        [n].into(),
                        Instant::now() + file_wait,
                    );
                }
                6 => {
                    // A manifest policy change (grace): applies live.
                    let c = self.pods(|s| s.file == File::Good);
                    if c.is_empty() {
                        continue;
                    }
                    let n = *self.rng.pick(&c);
                    let s = self.model.get_mut(n);
                    s.policy = 1 - s.policy;
                    let g = 2 + s.policy;
                    self.write_pod(n);
                    return (
                        format!("policy {n}.yaml: grace {g}s"),
                        BTreeSet::new(),
                        Instant::now() + file_wait,
                    );
                }
                7 => {
                    // SIGHUP with a policy change (backoff, stop_timeout, restart).
                    let hosts = self.model.names_where(|s| s.kind == Kind::Host);
                    let n = *self.rng.pick(&hosts);
                    self.model.backoff_max = 1 - self.model.backoff_max;
                    let s = self.model.get_mut(n);
                    s.policy = (s.policy + 1) % 4;
                    self.write_config();
                    self.hup();
                    return (
                        format!("SIGHUP, policy: backoff max, {n} stop_timeout and restart"),
                        BTreeSet::new(),
                        Instant::now() + Duration::from_millis(100),
                    );
                }
                _ => {
                    // SIGHUP with a command change.
                    let hosts = self.model.names_where(|s| s.kind == Kind::Host);
                    let n = *self.rng.pick(&hosts);
                    let s = self.model.get_mut(n);
                    s.version += 1;
                    let t = s.token();
                    self.write_config();
                    self.hup();
                    return (
                        format!("SIGHUP, command of {n} -> {t}"),
                        [n].into(),
                        Instant::now() + Duration::from_millis(100),
                    );
                }
            }
        }
    }

    /// An operator command over the control socket.
    fn control(&mut self) -> (String, BTreeSet<&'static str>, Instant) {
        let listed = self.model.names_where(|s| s.listed());
        let n = *self.rng.pick(&listed);
        let verb = *self.rng.pick(&["stop", "start", "restart"]);
        self.client(verb, n);
        match verb {
            "stop" => self.model.get_mut(n).held = true,
            "start" => self.model.get_mut(n).held = false,
            _ => {}
        }
        (
            format!("upkeep {verb} {n}"),
            [n].into(),
            Instant::now() + Duration::from_millis(100),
        )
    }

    /// One random step, then settling and the checks.
    fn step(&mut self) {
        let started = Instant::now();
        let (desc, touched, not_before) = match self.rng.below(16) {
            0..=4 => self.change(false),
            5..=7 => self.control(),
            8 | 9 => {
                // SIGTERM (on_exit = "keep") and start again.
                self.stop_upkeep(libc::SIGTERM);
                self.d.spawn();
                (
                    "SIGTERM upkeep, start".into(),
                    BTreeSet::new(),
                    Instant::now(),
                )
            }
            10 => {
                // SIGKILL at a quiet moment.
                self.stop_upkeep(libc::SIGKILL);
                self.d.spawn();
                (
                    "SIGKILL upkeep, start".into(),
                    BTreeSet::new(),
                    Instant::now(),
                )
            }
            11 | 12 => {
                // SIGKILL right after a change, often while stops are in progress.
                let (what, touched, not_before) = if self.rng.chance(50) {
                    self.change(false)
                } else {
                    self.control()
                };
                let ms = self.rng.below(600) as u64;
                std::thread::sleep(Duration::from_millis(ms));
                self.stop_upkeep(libc::SIGKILL);
                self.d.spawn();
                (
                    format!("{what}; SIGKILL upkeep {ms} ms later, start"),
                    touched,
                    not_before.max(Instant::now()),
                )
            }
            13 => {
                // A change while upkeep is down.
                let sig = *self.rng.pick(&[libc::SIGTERM, libc::SIGKILL]);
                self.stop_upkeep(sig);
                let (what, touched, _) = self.change(true);
                self.d.spawn();
                (
                    format!("{} upkeep; {what}; start", signame(sig)),
                    touched,
                    Instant::now() + SETTLE + DEBOUNCE + Duration::from_millis(150),
                )
            }
            14 => {
                // Delete the state file while upkeep is down.
                let sig = *self.rng.pick(&[libc::SIGTERM, libc::SIGKILL]);
                self.stop_upkeep(sig);
                let _ = std::fs::remove_file(self.d.state.join("state.json"));
                self.d.spawn();
                (
                    format!("{} upkeep; delete state.json; start", signame(sig)),
                    BTreeSet::new(),
                    Instant::now(),
                )
            }
            _ => {
                // Delete the state file while upkeep runs.
                let _ = std::fs::remove_file(self.d.state.join("state.json"));
                (
                    "delete state.json (upkeep running)".into(),
                    BTreeSet::new(),
                    Instant::now(),
                )
            }
        };
        let n = {
            let mut steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
            let n = steps.len();
            steps.push(format!("#{n} {desc}"));
            steps.len() - 1
        };
        self.settle(not_before, &touched);
        let mut steps = self.steps.lock().unwrap_or_else(|p| p.into_inner());
        steps[n].push_str(&format!(" ({} ms)", started.elapsed().as_millis()));
    }
}

fn signame(sig: i32) -> &'static str {
    if sig == libc::SIGKILL {
        "SIGKILL"
    } else {
        "SIGTERM"
    }
}

/// The last `n` lines of upkeep's log, without the warnings every re-list
/// repeats.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s
        .lines()
        .filter(|l| !l.contains(" DEBUG warning: "))
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn steps_from_env() -> usize {
    std::env::var("UPKEEP_CHAOS_STEPS")
        .ok()
        .map(|v| v.parse().expect("UPKEEP_CHAOS_STEPS is a number of steps"))
        .unwrap_or(DEFAULT_STEPS)
}

/// Runs `steps` random steps from `seed`; on failure prints the seed, the
/// step list and how to replay it.
fn run(seed: u64, steps: usize) {
    require_root();
    let started = Instant::now();
    let log: Arc<Mutex<Vec<String>>> = Default::default();
    let log2 = log.clone();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let mut c = Chaos::new(seed, log2);
        c.settle(Instant::now(), &BTreeSet::new());
        for _ in 0..steps {
            c.step();
        }
        // Dropping `c` kills what the test started, by pid.
        drop(c);
    }));
    let elapsed = started.elapsed();
    if let Err(e) = result {
        let steps = log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        eprintln!(
            "chaos FAILED: seed {seed:#x} at step {} after {elapsed:?}\nreplay: UPKEEP_CHAOS_SEED={seed:#x} UPKEEP_CHAOS_STEPS={} cargo test -p upkeep --test chaos chaos_random_seed\nsteps:\n{}",
            steps.len().saturating_sub(1),
            steps.len(),
            steps.join("\n"),
        );
        std::panic::resume_unwind(e);
    }
    let steps_done = log.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
    eprintln!(
        "chaos: seed {seed:#x}, {steps} steps passed in {:.1}s\n{steps_done}",
        elapsed.as_secs_f64()
    );
}

fn parse_seed(s: &str) -> u64 {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16),
        None => s.parse(),
    }
    .expect("UPKEEP_CHAOS_SEED is a number (decimal or 0x-hex)")
}

/// The fixed seed: the same walk on every run.
#[test]
fn chaos_fixed_seed() {
    run(FIXED_SEED, steps_from_env());
}

/// A new seed per run (or `UPKEEP_CHAOS_SEED` to replay one).
#[test]
fn chaos_random_seed() {
    let seed = match std::env::var("UPKEEP_CHAOS_SEED") {
        Ok(s) => parse_seed(&s),
        Err(_) => {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64;
            t ^ (u64::from(std::process::id()) << 32)
        }
    };
    eprintln!("chaos: random seed {seed:#x} (replay: UPKEEP_CHAOS_SEED={seed:#x})");
    run(seed, steps_from_env());
}

// Regressions the chaos walk found, each reduced to its few steps.

const FAST: &str = "settle = \"200ms\"\n[defaults.backoff]\ninitial = \"0s\"\nmax = \"200ms\"\nfactor = 2.0\nreset_after = \"10m\"\njitter = 0.0\n";

fn pod(name: &str, script: &str, grace: u32) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: {grace}\n  containers:\n  - name: {name}\n    image: x/{name}:1\n    command: [\"/bin/sh\", \"-c\", \"{script}\"]\n"
    )
}

fn keep_on_exit(d: &Daemon) {
    let text = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("on_exit = \"stop\"", "on_exit = \"keep\"");
    std::fs::write(&d.config, text).unwrap();
}

fn sigterm_upkeep(d: &mut Daemon) {
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(15));
}

fn break_file(path: &Path) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(b"  oops: [\n").unwrap();
}

/// Two pods a and b with upkeep stopped (SIGTERM, on_exit = "keep") after
/// b.yaml was deleted and a.yaml broken; returns (upkeep, a's pid, b's pid
/// and start time).
fn two_pods_b_removed_a_broken_while_down(forget_last_good: bool) -> (Daemon, u32, u32, u64) {
    let mut d = Daemon::prepare(
        FAST,
        &[
            ("a.yaml", &pod("a", "exec sleep 3101", 2)),
            ("b.yaml", &pod("b", "exec sleep 3102", 2)),
        ],
    );
    keep_on_exit(&d);
    d.spawn();
    let a = d.wait_pid("a", Duration::from_secs(15), |_| true);
    let b = d.wait_pid("b", Duration::from_secs(15), |_| true);
    let b_start = start_time(b).unwrap();
    sigterm_upkeep(&mut d);
    std::fs::remove_file(d.manifests.join("b.yaml")).unwrap();
    break_file(&d.manifests.join("a.yaml"));
    if forget_last_good {
        std::fs::remove_file(d.state.join("last-good-manifests.json")).unwrap();
    }
    d.spawn();
    (d, a, b, b_start)
}

/// A pod whose file was deleted while upkeep was down is stopped at
/// start-up even while another manifest is broken: its last good version
/// says which file it came from, and that file is gone.
#[test]
fn a_pod_removed_while_upkeep_was_down_is_stopped_while_another_is_broken() {
    require_root();
    let (mut d, a, b, b_start) = two_pods_b_removed_a_broken_while_down(false);
    wait_for("b's process to be stopped", Duration::from_secs(15), || {
        (start_time(b) != Some(b_start)).then_some(())
    });
    assert_eq!(d.wait_pid("a", Duration::from_secs(15), |_| true), a);
    assert!(d.service("b").is_none(), "b is not configured");
}

/// Without the last good manifests (a lost state directory), a process
/// nobody claims at a start-up with a broken manifest is left running (the
/// broken file may be its own) and decided once the manifests load: adopted
/// if its file is back, else stopped. It used to be forgotten and run
/// forever, unsupervised.
#[test]
fn unclaimed_processes_are_decided_once_the_manifests_load() {
    require_root();
    let (mut d, a, b, b_start) = two_pods_b_removed_a_broken_while_down(true);
    wait_for("a's manifest error", Duration::from_secs(15), || {
        let (_, h) = d.health();
        (!h["manifest_errors"].as_array().unwrap().is_empty()).then_some(())
    });
    assert!(pid_alive(a), "a was stopped for a broken file");
    assert_eq!(
        start_time(b),
        Some(b_start),
        "b was stopped while a manifest was broken"
    );
    d.write_manifest("a.yaml", &pod("a", "exec sleep 3101", 2));
    wait_for("b's process to be stopped", Duration::from_secs(15), || {
        (start_time(b) != Some(b_start)).then_some(())
    });
    assert_eq!(
        d.wait_pid("a", Duration::from_secs(15), |_| true),
        a,
        "a was not adopted"
    );
    assert!(d.service("b").is_none(), "b is not configured");
}

/// A pod removed while upkeep was down stops with its own grace, not the
/// 30 s default of host services.
#[test]
fn a_pod_removed_while_upkeep_was_down_stops_with_its_own_grace() {
    require_root();
    let mut d = Daemon::prepare(
        FAST,
        &[("c.yaml", &pod("c", "trap '' TERM; exec sleep 3103", 2))],
    );
    keep_on_exit(&d);
    d.spawn();
    let c = d.wait_pid("c", Duration::from_secs(15), |_| true);
    let c_start = start_time(c).unwrap();
    sigterm_upkeep(&mut d);
    std::fs::remove_file(d.manifests.join("c.yaml")).unwrap();
    let t = Instant::now();
    d.spawn();
    wait_for("c's process to be stopped", Duration::from_secs(20), || {
        (start_time(c) != Some(c_start)).then_some(())
    });
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "stopped after {:?}: not with its 2 s grace",
        t.elapsed()
    );
}

/// `upkeep stop NAME` outlives a lost state file: the hold is operator
/// intent, kept apart from the state file (a cache).
#[test]
fn a_hold_survives_a_lost_state_file() {
    require_root();
    let mut d = Daemon::prepare(
        &format!("{FAST}[services.h]\ncommand = [\"/bin/sh\", \"-c\", \"exec sleep 3104\"]\n"),
        &[],
    );
    keep_on_exit(&d);
    d.spawn();
    let h = d.wait_pid("h", Duration::from_secs(15), |_| true);
    let out = d.client(&["stop", "h"]);
    assert!(out.status.success(), "{out:?}");
    wait_for("h stopped", Duration::from_secs(15), || {
        (!pid_alive(h)).then_some(())
    });
    for sig in [libc::SIGKILL, libc::SIGTERM] {
        d.signal(sig);
        d.wait_exit(Duration::from_secs(15));
        std::fs::remove_file(d.state.join("state.json")).unwrap();
        d.spawn();
        let s = d.wait_service("h", Duration::from_secs(5), "stopped", |s| {
            s["state"] == "stopped"
        });
        assert!(s["pid"].is_null(), "the hold was forgotten: {s}");
    }
}
