//! The state-directory lock: one upkeep per state directory (design.md
//! section 11, "a second upkeep on the same node refuses").
//!
//! Two locks, both taken without waiting:
//!
//! 1. An **abstract unix socket** bound and listening under a name derived
//!    from the canonical state directory (`upkeep-state-<FNV-1a 128 of the
//!    path>`). An abstract name is not a file: nobody can delete it, and a
//!    second bind fails with `EADDRINUSE` for as long as the first upkeep's
//!    socket is open. A contender connects to it and reads the owner's pid
//!    with `SO_PEERCRED`, so the error names the pid even when the lock file
//!    is gone. (Abstract names are per network namespace: upkeep runs in the
//!    host's.)
//! 2. `flock(LOCK_EX | LOCK_NB)` on `<state_dir>/upkeep.lock`, which then
//!    holds the owner's pid (for operators, and for the error message when
//!    the socket cannot tell it). On its own it was not enough: once someone
//!    deleted the file, a second upkeep locked a new file of the same name,
//!    and both adopted the same services and killed each other's processes.
//!
//! Both live as long as their open file descriptions: they die with upkeep
//! (even on SIGKILL) and are never inherited by services (the descriptors
//! are close-on-exec).
//!
//! One moment excepted: a child forked by upkeep holds both (the socket and
//! the flock) until it execs, so right after upkeep is killed the locks may
//! outlive it for a few milliseconds (longer on a busy machine); a contender
//! whose recorded holder is dead waits up to [`DEAD_HOLDER_WAIT`], in all,
//! for them to go.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

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
        /// The holder's pid: from the abstract socket (`SO_PEERCRED`), else as
        /// written in the lock file, if either could be read.
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
    /// The listening abstract socket (never accepted from; only its name matters).
    _socket: OwnedFd,
    name: String,
}

/// The abstract socket name for a canonical state directory.
fn abstract_name(canonical: &Path) -> String {
    let hash = upkeep_spec::hash::fnv1a_128_hex(canonical.as_os_str().as_bytes());
    format!("upkeep-state-{hash}")
}

/// Binds and listens on the abstract socket `name`; `Ok(None)` when another
/// socket holds the name.
fn bind_abstract(name: &str) -> io::Result<Option<OwnedFd>> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let addr = SocketAddrUnix::new_abstract_name(name.as_bytes())?;
    match rustix::net::bind(&fd, &addr) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::ADDRINUSE => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    // Contenders connect only to learn our pid (SO_PEERCRED) and close at once.
    rustix::net::listen(&fd, 8)?;
    Ok(Some(fd))
}

/// Who holds the abstract socket, as far as a connection tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SocketOwner {
    /// The process that called listen() (`SO_PEERCRED`) still exists.
    Pid(u32),
    /// That process is gone (the kernel reports pid 0): the socket is only
    /// held by a child of it that has not exec'd yet.
    Gone,
    /// Could not connect or ask.
    Unknown,
}

/// Who listens on the abstract socket `name`, learned without waiting.
fn abstract_owner(name: &str) -> SocketOwner {
    let ask = || -> Option<i32> {
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .ok()?;
        let addr = SocketAddrUnix::new_abstract_name(name.as_bytes()).ok()?;
        // Fails with EAGAIN once the backlog is full of our own earlier
        // looks (nobody accepts): then the lock file tells.
        rustix::net::connect(&fd, &addr).ok()?;
        // nix's ucred keeps pid as a plain integer: it is 0 once the
        // listening process has exited, which rustix's non-zero Pid cannot hold.
        let cred =
            nix::sys::socket::getsockopt(&fd, nix::sys::socket::sockopt::PeerCredentials).ok()?;
        Some(cred.pid())
    };
    match ask() {
        Some(0) => SocketOwner::Gone,
        Some(pid) => u32::try_from(pid).map_or(SocketOwner::Unknown, SocketOwner::Pid),
        None => SocketOwner::Unknown,
    }
}

/// The pid written in the lock file at `path`, if readable.
fn pid_in_file(path: &Path) -> Option<u32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl StateLock {
    /// Creates `state_dir` (0700) if missing, then takes both locks without
    /// waiting (first the abstract socket named after the canonical
    /// directory, then the lock file) and writes our pid into the lock file.
    /// A refused attempt leaves the lock file as it found it.
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
        // First the name nobody can delete, before touching the lock file.
        let canonical = fs::canonicalize(state_dir).map_err(io)?;
        let name = abstract_name(&canonical);
        let deadline = std::time::Instant::now() + DEAD_HOLDER_WAIT;
        let socket = loop {
            if let Some(socket) = bind_abstract(&name).map_err(io)? {
                break socket;
            }
            // SO_PEERCRED names the process that called listen(): when it is
            // dead, the socket is only held by a child of it that had not
            // exec'd yet, as for the lock file below.
            let (pid, holder_dead) = match abstract_owner(&name) {
                SocketOwner::Pid(p) => (Some(p), known_dead(Some(p))),
                SocketOwner::Gone => (pid_in_file(&path), true),
                SocketOwner::Unknown => {
                    let p = pid_in_file(&path);
                    (p, known_dead(p))
                }
            };
            held_unless_dead(pid, holder_dead, deadline, state_dir)?;
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    let mut text = String::new();
                    let _ = file.seek(SeekFrom::Start(0));
                    let _ = file.read_to_string(&mut text);
                    let pid: Option<u32> = text.trim().parse().ok();
                    held_unless_dead(pid, known_dead(pid), deadline, state_dir)?;
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
        Ok(StateLock {
            file,
            path,
            _socket: socket,
            name,
        })
    }

    /// The abstract socket name held (without the leading NUL), e.g. for
    /// `ss -xlp | grep upkeep-state-`.
    pub fn socket_name(&self) -> &str {
        &self.name
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

/// True if `pid` is known and that process is gone.
fn known_dead(pid: Option<u32>) -> bool {
    pid.is_some_and(|p| !process_alive(p))
}

/// After a refused attempt on one of the two locks: `Err(Held)` naming
/// `pid`, unless its holder is dead (a child of the dead upkeep that has not
/// exec'd yet still holds it) and `deadline` has not passed; then it waits a
/// moment for the next attempt.
fn held_unless_dead(
    pid: Option<u32>,
    holder_dead: bool,
    deadline: std::time::Instant,
    dir: &Path,
) -> Result<(), LockError> {
    if !holder_dead || std::time::Instant::now() >= deadline {
        return Err(LockError::Held {
            pid,
            dir: dir.to_path_buf(),
        });
    }
    std::thread::sleep(std::time::Duration::from_millis(20));
    Ok(())
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
