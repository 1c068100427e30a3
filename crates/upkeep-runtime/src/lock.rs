//! The state-directory lock: one upkeep per state directory (design.md
//! section 11, "a second upkeep on the same node refuses").
//!
//! `flock(LOCK_EX | LOCK_NB)` on `<state_dir>/upkeep.lock`, which then holds
//! the owner's pid for the error message of the next contender. The lock
//! lives as long as the open file description: it dies with upkeep (even on
//! SIGKILL) and is never inherited by services (the descriptor is
//! close-on-exec). One moment excepted: a child forked by upkeep holds it
//! until it execs, so right after upkeep is killed the lock may outlive it
//! for a few milliseconds; a contender whose recorded holder is dead waits
//! up to [`DEAD_HOLDER_WAIT`] for it to go.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Name of the lock file inside the state directory.
pub const LOCK_FILE: &str = "upkeep.lock";

/// How long `acquire` waits when the pid in the lock file is dead but the
/// lock is still held (by a child of that upkeep that has not exec'd yet).
pub const DEAD_HOLDER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why the lock was not acquired.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("another upkeep ({}) is already running with state directory {}", match .pid { Some(p) => format!("pid {p}"), None => "pid unknown".to_string() }, .dir.display())]
    Held {
        /// The holder's pid, as written in the lock file (if readable).
        pid: Option<u32>,
        /// The state directory.
        dir: PathBuf,
    },
    /// The directory or file could not be created/opened/locked.
    #[error("cannot lock state directory {}: {source}", .dir.display())]
    Io {
        /// The state directory.
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// Held while upkeep runs; dropping it releases the lock.
#[derive(Debug)]
pub struct StateLock {
    file: File,
    path: PathBuf,
}

impl StateLock {
    /// Creates `state_dir` (0700) if missing, then takes the lock without
    /// waiting and writes our pid into the lock file.
    pub fn acquire(state_dir: &Path) -> Result<StateLock, LockError> {
        let io = |source: io::Error| LockError::Io {
            dir: state_dir.to_path_buf(),
            source,
        };
        if !state_dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(state_dir)
                .map_err(io)?;
        }
        let path = state_dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let deadline = std::time::Instant::now() + DEAD_HOLDER_WAIT;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    let mut text = String::new();
                    let _ = file.seek(SeekFrom::Start(0));
                    let _ = file.read_to_string(&mut text);
                    let pid: Option<u32> = text.trim().parse().ok();
                    let holder_dead = pid.is_some_and(|p| !process_alive(p));
                    if !holder_dead || std::time::Instant::now() >= deadline {
                        return Err(LockError::Held {
                            pid,
                            dir: state_dir.to_path_buf(),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(e) => return Err(io(e.into())),
            }
        }
        let write_pid = |file: &mut File| -> io::Result<()> {
            file.set_len(0)?;
            file.seek(SeekFrom::Start(0))?;
            writeln!(file, "{}", std::process::id())?;
            file.flush()
        };
        write_pid(&mut file).map_err(io)?;
        Ok(StateLock { file, path })
    }

    /// Path of the lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The locked file (kept open for the lock's lifetime).
    pub fn file(&self) -> &File {
        &self.file
    }
}

/// True if `pid` exists and is not a zombie.
fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
