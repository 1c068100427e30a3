//! Helpers shared by the `proc_*` integration tests.
//!
//! There is one reaper per process; it runs here on a dedicated thread with
//! a `current_thread` runtime (like the daemon's), so each `#[tokio::test]`
//! runtime can come and go while the reaper keeps working.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};
use upkeep_core::ExitStatus;
use upkeep_runtime::reaper::{Reaper, Spawned};

/// Hard deadline for anything a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// The process-wide reaper, on its own `current_thread` runtime thread.
pub fn reaper() -> Arc<Reaper> {
    static R: OnceLock<Arc<Reaper>> = OnceLock::new();
    R.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("test-reaper".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async move {
                    tx.send(Reaper::start().expect("reaper start")).unwrap();
                    std::future::pending::<()>().await
                })
            })
            .expect("thread");
        rx.recv_timeout(DEADLINE).expect("reaper started")
    })
    .clone()
}

/// Fails loudly (never skips) when not root.
pub fn require_root() {
    assert_eq!(
        rustix::process::geteuid().as_raw(),
        0,
        "this test needs root (cgroups, uid changes); run it as root"
    );
}

/// Awaits `fut` or panics after [`DEADLINE`].
pub async fn deadline<T>(what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, fut).await {
        Ok(v) => v,
        Err(_) => panic!("deadline of {DEADLINE:?} exceeded waiting for {what}"),
    }
}

/// Waits for the exit status of a spawned child (hard deadline; kills it
/// on timeout).
pub async fn exit_of(sp: Spawned) -> ExitStatus {
    let pid = sp.pid;
    match tokio::time::timeout(DEADLINE, sp.exit).await {
        Ok(Ok(st)) => st,
        Ok(Err(_)) => panic!("reaper dropped the exit channel of pid {pid}"),
        Err(_) => {
            kill(pid);
            panic!("pid {pid} did not exit within {DEADLINE:?} (killed)")
        }
    }
}

/// Polls `cond` every 10 ms until true or panics after [`DEADLINE`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > DEADLINE {
            panic!("deadline of {DEADLINE:?} exceeded waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// SIGKILL by pid (cleanup).
pub fn kill(pid: u32) {
    // SAFETY: kill(2) on a pid this test started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// Kills the listed pids / process groups when dropped (also on panic).
#[derive(Default)]
pub struct Cleanup {
    /// Pids to SIGKILL.
    pub pids: Vec<u32>,
    /// Process groups to SIGKILL.
    pub groups: Vec<u32>,
}

impl Cleanup {
    /// Kills these pids on drop.
    pub fn pids(pids: Vec<u32>) -> Cleanup {
        Cleanup {
            pids,
            groups: Vec::new(),
        }
    }

    /// Kills these process groups on drop.
    pub fn groups(groups: Vec<u32>) -> Cleanup {
        Cleanup {
            pids: Vec::new(),
            groups,
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for &g in &self.groups {
            let _ = upkeep_runtime::spawn::signal_group(g, libc::SIGKILL);
        }
        for &p in &self.pids {
            kill(p);
        }
    }
}

/// `sh -c script` as argv.
pub fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// An environment with just a standard PATH.
pub fn std_env() -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into());
    env
}

/// Pids of our children that are zombies (state `Z`, ppid = us).
pub fn our_zombies() -> Vec<u32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(st) = upkeep_runtime::reaper::process_stat(pid) {
            if st.state == 'Z' && st.ppid == me {
                out.push(pid);
            }
        }
    }
    out
}

/// Number of open fds of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// True while `/proc/PID` exists (alive or an unreaped zombie).
pub fn proc_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Reads a file to a string ("" if missing).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A test's cgroup `svc` under a prefix of its own, both removed when
/// dropped (what is left in the cgroup is killed first). Needs root.
pub struct CgroupGuard {
    /// The prefix, `upkeep-test-<tag>-<pid>.slice`.
    pub prefix: String,
    pub root: upkeep_runtime::cgroup::CgroupRoot,
    pub cg: upkeep_runtime::cgroup::Cgroup,
}

impl CgroupGuard {
    /// Creates the prefix and `svc` in it.
    pub fn new(tag: &str) -> Self {
        let prefix = format!("upkeep-test-{tag}-{}.slice", std::process::id());
        let root =
            upkeep_runtime::cgroup::CgroupRoot::detect(&prefix).expect("cgroup2 is mounted here");
        let cg = upkeep_runtime::cgroup::Cgroup::create(&root, "svc").unwrap_or_else(|e| {
            let _ = root.remove();
            panic!("cannot create {prefix}/svc: {e}")
        });
        CgroupGuard { prefix, root, cg }
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        let _ = self.cg.kill();
        for _ in 0..200 {
            if !self.cg.populated() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.cg.remove();
        let _ = self.root.remove();
    }
}

/// Blocks SIGUSR1 in the calling thread and ignores SIGUSR2 (and SIGPIPE)
/// process-wide: a state a spawned child must not inherit. Callers restore
/// SIGUSR2 with [`default_sigusr2`].
pub fn block_usr1_ignore_usr2() {
    // SAFETY: changes this thread's mask and process-wide dispositions of
    // signals the test binaries do not otherwise use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGUSR2, libc::SIG_IGN);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// SIGUSR2 back to its default disposition.
pub fn default_sigusr2() {
    // SAFETY: restores a default disposition.
    unsafe { libc::signal(libc::SIGUSR2, libc::SIG_DFL) };
}

/// A field of `/proc/PID/status` (`"SigBlk:"`), trimmed.
pub fn status_field(pid: u32, name: &str) -> String {
    let status = read(Path::new(&format!("/proc/{pid}/status")));
    status
        .lines()
        .find_map(|l| l.strip_prefix(name))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{status}"))
}
