//! The reaper: the only code in upkeep that calls `wait*` (design.md section 6,
//! deps.md section 4 "Recommendation").
//!
//! upkeep is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so every orphan
//! below it is re-parented to it and must be reaped by it. A `waitpid(-1)`
//! loop steals exit statuses from anything else that waits (`tokio::process`,
//! `Child::wait`, and std's own internal wait after a failed `exec`), so:
//!
//! - exactly one task waits: it wakes on `SIGCHLD`, takes the *write* half of a
//!   gate and drains `waitpid(-1, WNOHANG | __WALL)` until nothing is left,
//!   routing each status to the channel registered for that pid; statuses of
//!   unregistered pids are orphans and are only counted;
//! - every spawn goes through [`Reaper::spawn`], which holds the *read* half of
//!   the gate across `fork/exec` + `pidfd_open` + registration, so no status can
//!   be reaped before its channel exists and std's internal wait after a failed
//!   `exec` cannot lose the race;
//! - signals go through the pidfd ([`pidfd_signal`]), so a recycled pid is
//!   never hit.
//!
//! The waiting state is process-global (there is only one `waitpid(-1)` per
//! process that can be correct), so [`Reaper::start`] is idempotent: it
//! returns the one [`Reaper`] and (re)starts its task on the current runtime
//! if the runtime that ran it before has gone away.
//!
//! `SIGCHLD` reaches the task through a socket of its own (signal-hook's
//! pipe), not through tokio's signal handling: tokio wakes *every* runtime
//! in the process on every signal it handles, and under a crash loop the
//! HTTP thread's runtime would wake at each child's exit for nothing. The
//! threads that only serve requests also block the signals the supervisor
//! handles ([`block_supervisor_signals`]), so their handlers never run
//! there. (tokio still wakes the HTTP runtime for the rare SIGTERM, SIGINT
//! and SIGHUP, which the supervisor takes through it.)

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{ChildStderr, ChildStdin, ChildStdout, Command};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use tokio::sync::oneshot;
use upkeep_core::ExitStatus;

/// Owns all waiting for children. There is one per process; get it with
/// [`Reaper::start`].
pub struct Reaper {
    /// Read: a spawn (or adoption) is between fork and registration.
    /// Write: a drain pass is calling `waitpid(-1)`.
    gate: RwLock<()>,
    /// pid -> where its status goes.
    waiters: Mutex<HashMap<u32, oneshot::Sender<ExitStatus>>>,
    /// Statuses of pids nobody registered.
    orphans: AtomicU64,
    /// Every status reaped, registered or not.
    reaped: AtomicU64,
    /// The SIGCHLD task is alive on some runtime.
    task_alive: AtomicBool,
}

/// A child spawned through the reaper.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid.
    pub pid: u32,
    /// A pidfd for signalling without pid-reuse races.
    pub pidfd: OwnedFd,
    /// Resolves with the exit status once the reaper has reaped it.
    pub exit: oneshot::Receiver<ExitStatus>,
}

/// The pipes of a child spawned with [`Reaper::spawn_with_pipes`]; each is
/// `Some` only if the command asked for `Stdio::piped()` there. Wrap them with
/// `tokio::process::ChildStdout::from_std` and friends for async reads.
#[derive(Debug, Default)]
pub struct Pipes {
    /// The child's stdin.
    pub stdin: Option<ChildStdin>,
    /// The child's stdout.
    pub stdout: Option<ChildStdout>,
    /// The child's stderr.
    pub stderr: Option<ChildStderr>,
}

static REAPER: OnceLock<Arc<Reaper>> = OnceLock::new();

/// The read end of the socket `SIGCHLD` writes a byte to. The signal
/// handler is installed once per process, with the first
/// [`Reaper::start`]; each start reads a duplicate on its own runtime.
static SIGCHLD_SOCKET: Mutex<Option<UnixStream>> = Mutex::new(None);

/// A duplicate of the read end of the `SIGCHLD` socket, installing the
/// handler the first time. Registered before the reaper's first pass, so a
/// child that exits in between leaves a byte behind.
fn sigchld_socket() -> io::Result<UnixStream> {
    let mut slot = SIGCHLD_SOCKET.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(read) = slot.as_ref() {
        return read.try_clone();
    }
    let (read, write) = UnixStream::pair()?;
    read.set_nonblocking(true)?;
    // Everything that can fail first: the handler is installed once, and
    // only with its reader kept.
    let dup = read.try_clone()?;
    // The handler sends a byte without blocking (a full socket already
    // has one waiting, which is all the task needs).
    signal_hook::low_level::pipe::register(libc::SIGCHLD, write)?;
    *slot = Some(read);
    Ok(dup)
}

/// Blocks, in the calling thread and the threads it starts afterwards, the
/// signals the supervisor handles (`SIGCHLD`, `SIGTERM`, `SIGINT`,
/// `SIGHUP`): the kernel hands each one to a thread that takes it, so a
/// thread that only serves requests (the HTTP thread) is not interrupted
/// at every child's exit. Never call it on the supervisor's own threads.
pub fn block_supervisor_signals() -> io::Result<()> {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
    ] {
        set.add(s);
    }
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(io::Error::from)
}

/// Reads every byte waiting on the `SIGCHLD` socket (one per signal, or
/// fewer: signals coalesce), leaving it empty.
fn empty(socket: &tokio::net::UnixStream) -> io::Result<()> {
    let mut buf = [0u8; 256];
    loop {
        match socket.try_read(&mut buf) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Clears `task_alive` when the SIGCHLD task is dropped (its runtime shut down).
struct AliveGuard(Arc<Reaper>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.task_alive.store(false, Ordering::SeqCst);
    }
}

impl Reaper {
    /// Makes upkeep a child subreaper and starts the SIGCHLD task. Must be called
    /// inside a tokio runtime (a `current_thread` one is fine) with the I/O
    /// driver enabled.
    ///
    /// Idempotent: every call returns the same process-wide reaper. If the task
    /// died with an earlier runtime, it is restarted on the current one.
    pub fn start() -> io::Result<Arc<Reaper>> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "Reaper::start must be called inside a tokio runtime",
            ));
        }
        rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
            .map_err(|e| io::Error::new(e.kind(), format!("PR_SET_CHILD_SUBREAPER: {e}")))?;
        let reaper = REAPER
            .get_or_init(|| {
                Arc::new(Reaper {
                    gate: RwLock::new(()),
                    waiters: Mutex::new(HashMap::new()),
                    orphans: AtomicU64::new(0),
                    reaped: AtomicU64::new(0),
                    task_alive: AtomicBool::new(false),
                })
            })
            .clone();
        if reaper
            .task_alive
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            // From here on, any way out (an error, a panic, the task's end)
            // clears `task_alive`, so that the next start tries again.
            let guard = AliveGuard(reaper.clone());
            // Register for SIGCHLD before the first pass so nothing that exits
            // in between is missed.
            let sigchld = sigchld_socket()
                .and_then(tokio::net::UnixStream::from_std)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen for SIGCHLD: {e}")))?;
            reaper.drain();
            tokio::spawn(async move {
                let guard = guard;
                let e = loop {
                    if let Err(e) = sigchld.readable().await {
                        break e;
                    }
                    // Take every byte first, then drain: a child that exits
                    // during the pass leaves a byte for the next one.
                    match empty(&sigchld) {
                        Ok(()) => guard.0.drain(),
                        Err(e) => break e,
                    }
                };
                tracing::error!("SIGCHLD socket failed ({e}); the reaper stopped");
            });
        }
        Ok(reaper)
    }

    /// True while the reaping task runs. It ending (a panic, a failed SIGCHLD
    /// socket) is a bug that must be noticed: see [`Reaper::start`], which
    /// restarts it.
    pub fn task_alive(&self) -> bool {
        self.task_alive.load(Ordering::SeqCst)
    }

    /// Spawns `cmd` under the reaper's lock, opens a pidfd and registers the pid.
    /// Never use `Child::wait`: the returned `Spawned::exit` is the only way to
    /// learn the status. Any pipes the command asked for are closed; use
    /// [`Reaper::spawn_with_pipes`] to keep them.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Spawned> {
        self.spawn_with_pipes(cmd).map(|(spawned, _pipes)| spawned)
    }

    /// Like [`Reaper::spawn`], but also hands back the child's pipes (for exec
    /// probes that read the output).
    ///
    /// The child gets upkeep's original soft open-files limit back if
    /// upkeep raised its own ([`crate::spawn::restore_nofile_before_exec`]).
    pub fn spawn_with_pipes(&self, cmd: &mut Command) -> io::Result<(Spawned, Pipes)> {
        crate::spawn::restore_nofile_before_exec(cmd);
        let _read = self.gate.read().unwrap_or_else(|e| e.into_inner());
        // A failed exec is reaped by std itself, inside spawn(), while we hold
        // the read gate: the reaper cannot steal that status.
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let pipes = Pipes {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
        };
        // Dropping a std Child never waits for it; the reaper does.
        drop(child);
        let (tx, rx) = oneshot::channel();
        // Register before anything can fail so the status is routed (and not
        // counted as an orphan) whatever happens below.
        self.lock_waiters().insert(pid, tx);
        let pidfd = match open_pidfd(pid) {
            Ok(fd) => fd,
            Err(e) => {
                // Not reaped yet (we hold the gate), so the pid is still ours.
                crate::spawn::kill_unreaped_child(pid);
                return Err(io::Error::new(
                    e.kind(),
                    format!("pidfd_open({pid}) after spawn failed (child killed): {e}"),
                ));
            }
        };
        Ok((
            Spawned {
                pid,
                pidfd,
                exit: rx,
            },
            pipes,
        ))
    }

    /// Spawns through a caller-provided function (the `clone3` path of
    /// [`crate::spawn`]) under the reaper's gate. `f` returns the new pid and
    /// its pidfd, or an error after which it guarantees no child is left
    /// unregistered: on an exec failure it returns `Err((Some(pid), e))` and
    /// the exit status is routed here and dropped.
    pub fn spawn_raw(
        &self,
        f: impl FnOnce() -> Result<(u32, OwnedFd), (Option<u32>, io::Error)>,
    ) -> io::Result<Spawned> {
        let _read = self.gate.read().unwrap_or_else(|e| e.into_inner());
        match f() {
            Ok((pid, pidfd)) => {
                let (tx, rx) = oneshot::channel();
                self.lock_waiters().insert(pid, tx);
                Ok(Spawned {
                    pid,
                    pidfd,
                    exit: rx,
                })
            }
            Err((pid, e)) => {
                if let Some(pid) = pid {
                    // The failed child exits at once; make sure of it on every
                    // error path (it is unreaped: we hold the gate, so the pid
                    // is still ours), and route its status nowhere (not
                    // counted as an orphan).
                    crate::spawn::kill_unreaped_child(pid);
                    let (tx, _rx) = oneshot::channel();
                    self.lock_waiters().insert(pid, tx);
                }
                Err(e)
            }
        }
    }

    /// Watches a process that upkeep did not spawn in this run (adoption of a
    /// service started by an earlier upkeep). Returns a pidfd for signalling
    /// it and a future that resolves when it exits.
    ///
    /// If the process is (now) our child, typically an orphan re-parented to
    /// us as subreaper, its real exit status is routed like a spawned child's.
    /// Otherwise only its parent can learn the status: the future resolves
    /// with [`ExitStatus::Unknown`] when the pidfd becomes readable (the
    /// process exited). Must be called inside a tokio runtime.
    ///
    /// Errors with `NotFound` if the process is already gone.
    pub fn watch_pid(
        &self,
        pid: u32,
    ) -> io::Result<(OwnedFd, impl Future<Output = ExitStatus> + Send + 'static)> {
        let handle = tokio::runtime::Handle::try_current().map_err(|_| {
            io::Error::other("Reaper::watch_pid must be called inside a tokio runtime")
        })?;
        let _read = self.gate.read().unwrap_or_else(|e| e.into_inner());
        let pidfd = open_pidfd(pid).map_err(|e| {
            if e.raw_os_error() == Some(libc::ESRCH) {
                io::Error::new(io::ErrorKind::NotFound, format!("process {pid} is gone"))
            } else {
                e
            }
        })?;
        let (tx, rx) = oneshot::channel();
        let ours = process_stat(pid)
            .map(|s| s.ppid == std::process::id())
            .unwrap_or(false);
        if ours {
            self.lock_waiters().insert(pid, tx);
        } else {
            let _entered = handle.enter();
            // The AsyncFd owns this duplicate for its whole lifetime.
            let watch = crate::spawn::async_pidfd(pidfd.try_clone()?)?;
            handle.spawn(async move {
                let mut tx = tx;
                tokio::select! {
                    r = watch.readable() => {
                        if r.is_ok() {
                            let _ = tx.send(ExitStatus::Unknown);
                        }
                    }
                    _ = tx.closed() => {}
                }
            });
        }
        Ok((
            pidfd,
            async move { rx.await.unwrap_or(ExitStatus::Unknown) },
        ))
    }

    /// Number of exit statuses of unregistered pids (orphans) reaped so far.
    pub fn orphans_reaped(&self) -> u64 {
        self.orphans.load(Ordering::Relaxed)
    }

    /// Number of exit statuses reaped so far, registered or not.
    pub fn total_reaped(&self) -> u64 {
        self.reaped.load(Ordering::Relaxed)
    }

    /// Number of pids whose status is still awaited.
    pub fn pending(&self) -> usize {
        self.lock_waiters().len()
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, HashMap<u32, oneshot::Sender<ExitStatus>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One pass: reap everything that has exited.
    fn drain(&self) {
        let _write = self.gate.write().unwrap_or_else(|e| e.into_inner());
        loop {
            let (pid, raw) = crate::spawn::waitpid_any_nohang();
            if pid == 0 {
                return;
            }
            if pid < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    Some(libc::ECHILD) => return,
                    _ => {
                        tracing::warn!("waitpid(-1) failed: {err}");
                        return;
                    }
                }
            }
            let Some(status) = decode_wait_status(raw) else {
                continue;
            };
            self.reaped.fetch_add(1, Ordering::Relaxed);
            let waiter = self.lock_waiters().remove(&(pid as u32));
            match waiter {
                Some(tx) => {
                    // The receiver may be gone (nobody cares any more): fine.
                    let _ = tx.send(status);
                }
                None => {
                    self.orphans.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(pid, %status, "reaped orphan");
                }
            }
        }
    }
}

/// Decodes a raw `waitpid` status; `None` for stop/continue notifications.
pub fn decode_wait_status(raw: i32) -> Option<ExitStatus> {
    if libc::WIFEXITED(raw) {
        Some(ExitStatus::Exited(libc::WEXITSTATUS(raw)))
    } else if libc::WIFSIGNALED(raw) {
        Some(ExitStatus::Signaled {
            signal: libc::WTERMSIG(raw),
            core: libc::WCOREDUMP(raw),
        })
    } else {
        None
    }
}

pub(crate) fn open_pidfd(pid: u32) -> io::Result<OwnedFd> {
    let p = rustix::process::Pid::from_raw(pid as i32)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "pid 0 has no pidfd"))?;
    rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).map_err(io::Error::from)
}

/// Sends `signal` through a pidfd; `Ok(false)` when the process is already gone (ESRCH).
/// `signal` 0 only checks that the process still exists (unreaped).
pub fn pidfd_signal(pidfd: &OwnedFd, signal: i32) -> io::Result<bool> {
    let result = match rustix::process::Signal::from_named_raw(signal) {
        Some(sig) => rustix::process::pidfd_send_signal(pidfd, sig).map_err(io::Error::from),
        None => {
            // Signal 0 and real-time signals are not named in rustix.
            crate::spawn::pidfd_send_signal_raw(pidfd, signal)
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(false),
        Err(e) => Err(io::Error::new(
            e.kind(),
            format!("pidfd_send_signal({signal}): {e}"),
        )),
    }
}

/// Wall-clock start of a process from its start time in clock ticks since
/// boot (`/proc/PID/stat` field 22) and the boot time in `/proc/stat`.
pub fn started_unix_ms(start_ticks: u64) -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    };
    Some(btime * 1000 + start_ticks * 1000 / hz)
}

/// The few fields of `/proc/PID/stat` upkeep needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 3: state (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Field 4: parent pid.
    pub ppid: u32,
    /// Field 5: process group id.
    pub pgrp: u32,
    /// Field 6: session id.
    pub session: u32,
    /// Field 22: start time in clock ticks since boot. With the pid, it
    /// identifies a process across pid reuse.
    pub start_time: u64,
}

/// Parses the text of `/proc/PID/stat`. The command name (field 2) may
/// contain spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // fields[0] is field 3.
    let field = |n: usize| fields.get(n - 3).copied();
    Some(ProcStat {
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgrp: field(5)?.parse().ok()?,
        session: field(6)?.parse().ok()?,
        start_time: field(22)?.parse().ok()?,
    })
}

/// Reads and parses `/proc/PID/stat`.
pub fn process_stat(pid: u32) -> io::Result<ProcStat> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path)?;
    parse_proc_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{path}: unexpected format"),
        )
    })
}

/// Start time of `pid` (field 22 of `/proc/PID/stat`, clock ticks since boot).
pub fn process_start_time(pid: u32) -> io::Result<u64> {
    process_stat(pid).map(|s| s.start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing_handles_hostile_comm() {
        let text =
            "1234 (a) b) (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let s = parse_proc_stat(text).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.ppid, 1);
        assert_eq!(s.pgrp, 1234);
        assert_eq!(s.session, 1234);
        assert_eq!(s.start_time, 987654);
        assert_eq!(parse_proc_stat("garbage"), None);
        assert_eq!(parse_proc_stat("1 (x) S 1 2"), None);
    }

    #[test]
    fn decode_statuses() {
        assert_eq!(decode_wait_status(3 << 8), Some(ExitStatus::Exited(3)));
        assert_eq!(
            decode_wait_status(9),
            Some(ExitStatus::Signaled {
                signal: 9,
                core: false
            })
        );
        assert_eq!(
            decode_wait_status(11 | 0x80),
            Some(ExitStatus::Signaled {
                signal: 11,
                core: true
            })
        );
        // Stopped by SIGSTOP: not an exit.
        assert_eq!(decode_wait_status((19 << 8) | 0x7f), None);
    }
}
