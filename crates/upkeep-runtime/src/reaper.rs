//! The reaper: the only code in upkeep that calls `wait*` (design.md section 6).

use std::io;
use std::os::fd::OwnedFd;
use std::process::Command;
use std::sync::Arc;
use tokio::sync::oneshot;
use upkeep_core::ExitStatus;

/// Owns all waiting for children.
pub struct Reaper {
    _private: (),
}

/// A child spawned through the reaper.
pub struct Spawned {
    /// Its pid.
    pub pid: u32,
    /// A pidfd for signalling without pid-reuse races.
    pub pidfd: OwnedFd,
    /// Resolves with the exit status once the reaper has reaped it.
    pub exit: oneshot::Receiver<ExitStatus>,
}

impl Reaper {
    /// Makes upkeep a child subreaper and starts the SIGCHLD task. Must be called
    /// inside a tokio runtime.
    pub fn start() -> io::Result<Arc<Reaper>> {
        todo!("reaper")
    }

    /// Spawns `cmd` under the reaper's lock, opens a pidfd and registers the pid.
    /// Never use `Child::wait`: the returned `Spawned::exit` is the only way to
    /// learn the status.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Spawned> {
        let _ = cmd;
        todo!("spawn")
    }

    /// Number of exit statuses of unregistered pids (orphans) reaped so far.
    pub fn orphans_reaped(&self) -> u64 {
        todo!()
    }
}

/// Sends `signal` through a pidfd; `Ok(false)` when the process is already gone (ESRCH).
pub fn pidfd_signal(pidfd: &OwnedFd, signal: i32) -> io::Result<bool> {
    let _ = (pidfd, signal);
    todo!()
}
