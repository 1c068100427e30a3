//! Black-box test harness: runs the real `upkeep` binary in a temp dir with a
//! free port, talks to it over HTTP, and kills everything it started by pid.
//!
//! A test finds its processes through its own daemon: the pids `/health`
//! names, the processes in the daemon's cgroups (`cgroup.procs` under its
//! `upkeep-<hash of the state dir>` prefix) and the process tree under the
//! daemon's pid. Never by scanning /proc for an argument: another run of the
//! suite on the same machine has processes with the same arguments.

#![allow(dead_code)]

use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Path of the built binary.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_upkeep")
}

/// The manifest fixtures in the repository (`tests/fixtures/manifests`).
pub fn fixtures() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/manifests");
    assert!(
        p.is_dir(),
        "fixtures missing at {} (they are part of the repository)",
        p.display()
    );
    p
}

#[path = "../../../../tests/support/ports.rs"]
mod ports;
pub use ports::free_port;

/// Polls `f` until it returns Some or the deadline passes (then panics with `what`).
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A minimal HTTP GET; returns (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Chunked bodies: keep it simple by decoding if needed.
    let body = if text
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(&body)
    } else {
        body
    };
    Some((status, body))
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n..];
        rest = rest.strip_prefix("\r\n").unwrap_or(rest);
    }
    out
}

/// A running upkeep in a temp dir.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub child: Option<Child>,
    pub config: PathBuf,
    pub manifests: PathBuf,
    pub state: PathBuf,
    pub logs: PathBuf,
    seen_pids: std::collections::BTreeSet<u32>,
    barriers: u32,
}

impl Daemon {
    /// Lays out a temp dir with `extra_config` appended to the base config and
    /// the given manifests, but does not start upkeep.
    pub fn prepare(extra_config: &str, manifests: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = free_port();
        let manifests_dir = dir.path().join("manifests");
        std::fs::create_dir(&manifests_dir).unwrap();
        std::fs::set_permissions(&manifests_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let state = dir.path().join("state");
        let logs = dir.path().join("log");
        let config = dir.path().join("upkeep.toml");
        // The kubelet config is one of the test's own (absent unless a test
        // writes it), never the machine's.
        let kubelet_config = dir.path().join("kubelet-config.yaml");
        let base = format!(
            "manifests = {:?}\nlisten = \"127.0.0.1:{port}\"\nstate_dir = {:?}\nlog_dir = {:?}\nkubelet_config = {:?}\nnode_name = \"test-node\"\non_exit = \"stop\"\ndebounce = \"50ms\"\nrelist_period = \"1s\"\n",
            manifests_dir, state, logs, kubelet_config
        );
        // Tables in `extra_config` must come after the top-level keys.
        std::fs::write(&config, format!("{base}{extra_config}")).unwrap();
        let d = Daemon {
            dir,
            port,
            child: None,
            config,
            manifests: manifests_dir,
            state,
            logs,
            seen_pids: Default::default(),
            barriers: 0,
        };
        for (name, text) in manifests {
            d.write_manifest(name, text);
        }
        d
    }

    /// Prepares and starts, waiting until /health answers.
    pub fn start(extra_config: &str, manifests: &[(&str, &str)]) -> Daemon {
        let mut d = Daemon::prepare(extra_config, manifests);
        d.spawn();
        d
    }

    /// Starts the binary and waits for /health to answer. The port was free
    /// when it was picked, but another test run may take it before upkeep
    /// binds it: then upkeep is started again on a new port.
    pub fn spawn(&mut self) {
        for _ in 0..5 {
            let child = Command::new(bin())
                .args(["run", "--config"])
                .arg(&self.config)
                .env("RUST_LOG", "debug")
                .env("UPKEEP_TEST_SECRET_ENV", "leaked-from-upkeep")
                .stdout(Stdio::null())
                .stderr(Stdio::from(
                    std::fs::File::create(self.dir.path().join("upkeep.stderr")).unwrap(),
                ))
                .spawn()
                .unwrap();
            self.child = Some(child);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                // Past start-up: every service adopted or started once.
                if http_get(self.port, "/health")
                    .is_some_and(|(_, body)| !body.contains("\"status\":\"starting\""))
                {
                    return;
                }
                let exited = self
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if let Some(st) = exited {
                    self.child = None;
                    let err = self.stderr();
                    if err.contains("binding") && err.contains("in use") {
                        self.move_to_a_free_port();
                        break;
                    }
                    panic!("upkeep exited early: {st}\n{err}");
                }
                if Instant::now() > deadline {
                    panic!(
                        "timed out after 30s waiting for upkeep to answer /health\n{}",
                        self.stderr()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("upkeep found its port taken 5 times in a row");
    }

    /// Picks a new free port and writes it into the config.
    fn move_to_a_free_port(&mut self) {
        let old = format!("listen = \"127.0.0.1:{}\"", self.port);
        self.port = free_port();
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(
            text.contains(&old),
            "the config lost its listen line: {text}"
        );
        let new = format!("listen = \"127.0.0.1:{}\"", self.port);
        std::fs::write(&self.config, text.replace(&old, &new)).unwrap();
    }

    /// upkeep's stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("upkeep.stderr")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn write_manifest(&self, name: &str, text: &str) {
        let p = self.manifests.join(name);
        // Write + rename, as editors and kubeadm do.
        let tmp = self.manifests.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
    }

    /// GET /health as JSON.
    pub fn health(&mut self) -> (u16, Value) {
        let (code, body) = http_get(self.port, "/health").expect("/health answers");
        let v: Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("bad /health JSON {e}: {body}"));
        for s in v["services"].as_array().into_iter().flatten() {
            if let Some(p) = s["pid"].as_u64() {
                self.seen_pids.insert(p as u32);
            }
        }
        (code, v)
    }

    /// The /health object of one service, if listed.
    pub fn service(&mut self, name: &str) -> Option<Value> {
        let (_, v) = self.health();
        v["services"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
    }

    /// Waits until `name` has a pid that satisfies `pred`, returns it.
    pub fn wait_pid(&mut self, name: &str, timeout: Duration, pred: impl Fn(u32) -> bool) -> u32 {
        let what = format!("{name} to have a matching pid");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(p) = self
                .service(name)
                .and_then(|s| s["pid"].as_u64())
                .map(|p| p as u32)
            {
                if pred(p) && pid_alive(p) {
                    return p;
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; health: {}\nstderr:\n{}",
                    self.health().1,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `name`'s /health object satisfies `pred`.
    pub fn wait_service(
        &mut self,
        name: &str,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.service(name);
            if let Some(s) = &s {
                if pred(s) {
                    return s.clone();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {name}: {what}; last: {s:?}\nstderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal to upkeep itself.
    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// Waits for upkeep to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return st.code();
            }
            if Instant::now() > deadline {
                panic!("upkeep did not exit within {timeout:?}\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Runs an upkeep client subcommand against this daemon.
    pub fn client(&self, args: &[&str]) -> std::process::Output {
        Command::new(bin())
            .args(args)
            .arg("--config")
            .arg(&self.config)
            .output()
            .unwrap()
    }

    /// Remembers a pid to kill at the end.
    pub fn track(&mut self, pid: u32) {
        self.seen_pids.insert(pid);
    }

    /// The cgroup directories of this daemon (its prefix in every mounted
    /// hierarchy that has one).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        cgroup_roots(&self.state)
    }

    /// Live pids in this daemon's cgroups (every service cgroup under its prefix).
    pub fn cgroup_pids(&self) -> Vec<u32> {
        let mut out = std::collections::BTreeSet::new();
        for root in self.cgroup_dirs() {
            collect_cgroup_procs(&root, &mut out);
        }
        out.into_iter().filter(|p| pid_alive(*p)).collect()
    }

    /// Every live process of this daemon's services: those in its cgroups
    /// (adopted services too, which are no longer upkeep's descendants) and
    /// the descendants of the running upkeep. Not upkeep itself. A pid
    /// `/health` once named is not enough: it may have been reused since.
    pub fn processes(&self) -> Vec<u32> {
        let mut all: std::collections::BTreeSet<u32> = self.cgroup_pids().into_iter().collect();
        if let Some(c) = &self.child {
            all.extend(descendants(c.id()));
            all.remove(&c.id());
        }
        all.into_iter().filter(|p| pid_alive(*p)).collect()
    }

    /// This daemon's live service processes whose argv contains `needle`.
    pub fn pids_with_arg(&self, needle: &str) -> Vec<u32> {
        self.processes()
            .into_iter()
            .filter(|p| cmdline(*p).contains(needle))
            .collect()
    }

    /// This daemon's live service main processes (process group leaders:
    /// every service is its own group) whose argv contains `needle`. A child
    /// a shell forked has the shell's argv until it execs: not counted.
    pub fn services_with_arg(&self, needle: &str) -> Vec<u32> {
        self.pids_with_arg(needle)
            .into_iter()
            .filter(|p| pgid(*p) == Some(*p))
            .collect()
    }

    /// A value of `/metrics`: the sample called `name` that has every label
    /// of `labels` (e.g. `("upkeep_probe_failures_total", &[("service", "a")])`).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let (_, body) = http_get(self.port, "/metrics")?;
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
            .find(|l| {
                labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse().ok())
    }

    /// Waits until the metric reaches at least `min`; returns its value.
    pub fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        min: f64,
        timeout: Duration,
    ) -> f64 {
        wait_for(&format!("{name}{labels:?} >= {min}"), timeout, || {
            self.metric(name, labels).filter(|v| *v >= min)
        })
    }

    /// Waits until the state file records `pid` for a service, so a kill of
    /// upkeep right after cannot lose it.
    pub fn wait_state_saved(&self, pid: u32) {
        let file = self.state.join("state.json");
        let needle = format!("\"pid\":{pid},");
        let needle_spaced = format!("\"pid\": {pid},");
        wait_for(
            &format!("pid {pid} in {}", file.display()),
            Duration::from_secs(10),
            || {
                let t = std::fs::read_to_string(&file).ok()?;
                (t.contains(&needle) || t.contains(&needle_spaced)).then_some(())
            },
        );
    }

    /// Waits until the daemon has acted on every manifest change made before
    /// the call: writes a new pod file, waits for its service in `/health`,
    /// then removes it and waits for it to go. Events are handled in order, so
    /// anything written before has been seen by then.
    pub fn sync_manifests(&mut self) {
        self.barriers += 1;
        let name = format!("barrier-{}", self.barriers);
        let file = format!("{name}.yaml");
        self.write_manifest(
            &file,
            &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: {name}\n    image: x/barrier:1\n    command: [\"/bin/sleep\", \"1000\"]\n"),
        );
        wait_for(
            &format!("{name} in /health"),
            Duration::from_secs(20),
            || self.service(&name).map(|_| ()),
        );
        std::fs::remove_file(self.manifests.join(&file)).unwrap();
        wait_for(
            &format!("{name} gone from /health"),
            Duration::from_secs(20),
            || self.service(&name).is_none().then_some(()),
        );
    }
}

/// Keeps checking `check` for `window` (a claim that something does *not*
/// happen needs an observation window; it panics at the first violation).
pub fn hold_for(what: &str, window: Duration, mut check: impl FnMut() -> Result<(), String>) {
    let end = Instant::now() + window;
    loop {
        if let Err(e) = check() {
            panic!("{what}: {e}");
        }
        if Instant::now() >= end {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The process group of a process.
pub fn pgid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// The argv of a process, NULs as spaces ("" once it is gone).
pub fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Every descendant of `pid` (children, their children, ...), from the
/// kernel's per-thread `children` lists.
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let path = t.path().join("children");
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for c in text
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok())
            {
                if !out.contains(&c) {
                    out.push(c);
                    todo.push(c);
                }
            }
        }
    }
    out
}

fn collect_cgroup_procs(dir: &Path, out: &mut std::collections::BTreeSet<u32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
        out.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok()),
        );
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_cgroup_procs(&e.path(), out);
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // Everything this daemon runs, found through the daemon, before it goes
        // (its descendants are reparented away once it is dead).
        let mut victims = self.processes();
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
        // Service process groups (of pids still ours), then every process
        // left in its cgroups.
        for p in self.seen_pids.iter().filter(|p| victims.contains(p)) {
            unsafe { libc::kill(-(*p as i32), libc::SIGKILL) };
        }
        victims.extend(self.cgroup_pids());
        for p in victims {
            unsafe { libc::kill(p as i32, libc::SIGKILL) };
        }
        remove_cgroups(&self.state);
    }
}

/// The cgroup directories of the upkeep that uses `state_dir` (the daemon
/// names its cgroup root `upkeep-<hash of the state dir>`), in every
/// hierarchy where it exists.
fn cgroup_roots(state_dir: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::canonicalize(state_dir) else {
        return Vec::new();
    };
    let hash = upkeep_spec::hash::fnv1a_128_hex(dir.as_os_str().as_encoded_bytes());
    let prefix = format!("upkeep-{}", &hash[..12]);
    let mut roots = vec![Path::new("/sys/fs/cgroup").join(&prefix)];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        roots.extend(entries.flatten().map(|e| e.path().join(&prefix)));
    }
    roots.into_iter().filter(|r| r.is_dir()).collect()
}

/// Removes the cgroups of the upkeep that used `state_dir`, so tests leave
/// nothing behind in the cgroup hierarchies.
fn remove_cgroups(state_dir: &Path) {
    for root in cgroup_roots(state_dir) {
        // Killed processes leave their cgroup when they are reaped, which
        // takes a while on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if remove_tree(&root) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Removes the empty cgroup `dir` and every cgroup below it, deepest first
/// (a service's generations sit two or three levels down); true if `dir`
/// is gone.
fn remove_tree(dir: &Path) -> bool {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                remove_tree(&p);
            }
        }
    }
    std::fs::remove_dir(dir).is_ok() || !dir.exists()
}

/// True if the pid exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, r)| !r.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// Zombie children of `parent`.
pub fn zombies_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            if let Some((_, r)) = s.rsplit_once(')') {
                let f: Vec<&str> = r.split_whitespace().collect();
                if f.first() == Some(&"Z")
                    && f.get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent)
                {
                    out.push(pid);
                }
            }
        }
    }
    out
}

/// Number of open fds of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Resident set size of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Writes an executable script into `dir`.
pub fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

/// Asserts we run as root (tests that need it fail loudly otherwise).
pub fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test needs root (run the suite as root: bash scripts/test.sh)"
    );
}

/// Runs `etcdctl` (v3 API) against a loopback client port.
pub fn etcdctl(client: u16, args: &[&str]) -> std::process::Output {
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=http://127.0.0.1:{client}"))
        .arg("--command-timeout=5s")
        .args(args)
        .output()
        .expect("etcdctl is installed (Debian etcd-client; scripts/test.sh installs it)")
}

impl Daemon {
    /// Like [`Daemon::spawn`], with upkeep run under `wrapper` (for example
    /// `unshare -m ... sh -c '...; exec "$@"' sh`), which must exec upkeep
    /// so that the child's pid is upkeep's.
    pub fn spawn_wrapped(&mut self, wrapper: &[&str]) {
        let child = Command::new(wrapper[0])
            .args(&wrapper[1..])
            .arg(bin())
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.path().join("upkeep.stderr")).unwrap(),
            ))
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        wait_for("upkeep to answer /health", Duration::from_secs(20), || {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!("upkeep exited early: {st}\n{}", self.stderr());
                }
            }
            // Past start-up: every service adopted or started once.
            http_get(port, "/health").filter(|(_, body)| !body.contains("\"status\":\"starting\""))
        });
    }
}

/// The repo's own copy of the fixture manifests (`tests/fixtures/manifests`).
pub fn repo_fixtures() -> PathBuf {
    fixtures()
}

/// Removes, when dropped, the directories of `paths` that did not exist
/// when it was made (deepest first, only if empty): for tests whose pods
/// create mount points or `""`-typed sources on the host.
pub struct CreatedDirs(Vec<PathBuf>);

impl CreatedDirs {
    /// Remembers which of `paths` (and their parents) do not exist yet.
    pub fn watch(paths: &[&str]) -> CreatedDirs {
        let mut missing = Vec::new();
        for p in paths {
            let mut cur = Some(Path::new(p));
            while let Some(c) = cur {
                if c.exists() || missing.iter().any(|m: &PathBuf| m == c) {
                    break;
                }
                missing.push(c.to_path_buf());
                cur = c.parent();
            }
        }
        missing.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        CreatedDirs(missing)
    }
}

impl Drop for CreatedDirs {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_dir(p);
        }
    }
}

/// Switches a prepared daemon's config to `on_exit = "keep"` (the tests'
/// base config says "stop"; a second key would be a duplicate).
pub fn set_keep(d: &Daemon) {
    let text = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("on_exit = \"stop\"", "on_exit = \"keep\"");
    std::fs::write(&d.config, text).unwrap();
}
