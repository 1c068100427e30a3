//! Building the `std::process::Command` for a service: clean environment,
//! program resolved against the service's own `PATH`, own session and process
//! group, default signal state, optional uid/gid drop, cgroup joined before
//! `exec`, stdin from `/dev/null`, stdout/stderr straight to the log file,
//! and the soft open-files limit upkeep started with (it raises its own:
//! [`crate::nofile`]; [`restore_nofile_before_exec`] does the same for every
//! other command spawned through the reaper).
//!
//! Spawning itself goes through [`crate::reaper::Reaper`]; see
//! [`SpawnRequest::spawn`]. Services never get `PR_SET_PDEATHSIG`: they must
//! outlive upkeep (design.md section 6).
//!
//! A pod that needs a private mount namespace gets it in the one child
//! routine ([`child_setup`], both spawn paths): `unshare(CLONE_NEWNS)`, the
//! whole tree made a recursive slave of the host's (nothing mounted inside
//! reaches the host; the host's later mounts still arrive), then each bind of
//! the [`MountPlan`] prepared by [`crate::volumes`] before the clone.
//!
//! Also here: process-group signalling ([`signal_group`], [`group_alive`]).

use crate::cgroup::Cgroup;
use crate::reaper::{Reaper, Spawned};
use crate::volumes::MountPlan;
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// `PATH` used to resolve a bare program name when the service's environment
/// has none (the value container runtimes default to).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where a service's stdout or stderr goes.
#[derive(Debug, Clone, Copy)]
pub enum Output<'a> {
    /// upkeep's own stdout/stderr (journald under systemd).
    Inherit,
    /// `/dev/null`.
    Null,
    /// A file descriptor (normally the service's log file, opened `O_APPEND`);
    /// it is duplicated for the child.
    Fd(BorrowedFd<'a>),
}

impl Output<'_> {
    fn stdio(&self) -> io::Result<Stdio> {
        Ok(match self {
            Output::Inherit => Stdio::inherit(),
            Output::Null => Stdio::null(),
            Output::Fd(fd) => Stdio::from(fd.try_clone_to_owned()?),
        })
    }
}

/// Everything needed to start one service process.
#[derive(Debug, Clone)]
pub struct SpawnRequest<'a> {
    /// Program and arguments; `argv[0]` without a `/` is looked up in the
    /// `PATH` of `env` (not upkeep's own).
    pub argv: &'a [String],
    /// The complete environment of the child (upkeep's own is not inherited).
    pub env: &'a BTreeMap<String, String>,
    /// Working directory; `None` keeps upkeep's.
    pub working_dir: Option<&'a Path>,
    /// Run as this uid (needs root).
    pub uid: Option<u32>,
    /// Run as this gid; with only `uid` set, the user's primary group from
    /// the passwd database (or 0) is used.
    pub gid: Option<u32>,
    /// Where stdout goes.
    pub stdout: Output<'a>,
    /// Where stderr goes.
    pub stderr: Output<'a>,
    /// cgroup to join before `exec`.
    pub cgroup: Option<&'a Cgroup>,
    /// Binds to make in a private mount namespace before `exec`; `None`
    /// keeps the host's mount namespace.
    pub mounts: Option<&'a MountPlan>,
}

impl<'a> SpawnRequest<'a> {
    /// A request with no uid/gid change, upkeep's working directory, output to
    /// `/dev/null` and no cgroup.
    pub fn new(argv: &'a [String], env: &'a BTreeMap<String, String>) -> Self {
        SpawnRequest {
            argv,
            env,
            working_dir: None,
            uid: None,
            gid: None,
            stdout: Output::Null,
            stderr: Output::Null,
            cgroup: None,
            mounts: None,
        }
    }

    /// The program name for messages.
    fn program(&self) -> &str {
        self.argv.first().map(String::as_str).unwrap_or("")
    }

    /// Builds the command. Fails if `argv` is empty, the program is not found
    /// in the service's `PATH`, or an fd cannot be duplicated.
    pub fn build(&self) -> io::Result<Command> {
        self.build_reporting(None)
    }

    /// [`SpawnRequest::build`]; a child that fails on a step of the mount
    /// plan writes the step number (4 bytes) to `step_w` first.
    fn build_reporting(&self, step_w: Option<&OwnedFd>) -> io::Result<Command> {
        let program = self
            .argv
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command line"))?;
        let resolved = resolve_program(program, self.env)?;
        let mut cmd = Command::new(&resolved);
        cmd.arg0(program)
            .args(&self.argv[1..])
            .env_clear()
            .envs(self.env)
            .stdin(Stdio::null())
            .stdout(self.stdout.stdio()?)
            .stderr(self.stderr.stdio()?);
        // std changes directory before the pre_exec closure runs: with
        // binds, the closure does it after them (the directory may be a
        // mountPath).
        let mut late_cwd = None;
        if let Some(dir) = self.working_dir {
            if self.mounts.is_some() {
                late_cwd = Some(
                    std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "a NUL byte in the working directory",
                        )
                    })?,
                );
            } else {
                cmd.current_dir(dir);
            }
        }
        let ids = match (self.uid, self.gid) {
            (None, None) => None,
            (uid, Some(gid)) => Some((uid, gid)),
            (Some(uid), None) => Some((Some(uid), primary_gid(uid))),
        };
        // Opened now (CLOEXEC), written in the child: the service is in its
        // cgroup before its first instruction, and a failure is not fatal.
        let cgroup_fds: Vec<OwnedFd> = match self.cgroup {
            Some(cg) => cg.join_fds(),
            None => Vec::new(),
        };
        let mounts = self.mounts.cloned();
        let nofile = crate::nofile::restore_target();
        let step_w = step_w.map(|fd| fd.as_raw_fd());
        // SAFETY: the closure only makes async-signal-safe syscalls on data
        // prepared before the fork and does not allocate.
        unsafe {
            cmd.pre_exec(move || {
                let failed = |f: ChildFailure| {
                    if let Some(fd) = step_w {
                        let b = f.step.to_ne_bytes();
                        libc::write(fd, b.as_ptr().cast(), 4);
                    }
                    io::Error::from_raw_os_error(f.errno)
                };
                child_setup(&cgroup_fds, ids, mounts.as_ref(), nofile).map_err(failed)?;
                if let Some(dir) = &late_cwd {
                    if libc::chdir(dir.as_ptr()) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Builds the command and spawns it through the reaper. Errors name the
    /// program and say why (missing binary, not executable, bad `#!`
    /// interpreter, missing working directory). If the child could not join
    /// the cgroup, a move after the spawn is attempted and a warning logged.
    pub fn spawn(&self, reaper: &Reaper) -> io::Result<Spawned> {
        if let Some(cg) = self.cgroup {
            match self.spawn_into_cgroup(reaper, cg) {
                Ok(spawned) => return Ok(spawned),
                Err(Clone3Error::Unsupported(why)) => {
                    tracing::debug!("clone3(CLONE_INTO_CGROUP) unavailable ({why}); joining the cgroup before exec instead");
                }
                Err(Clone3Error::Failed(e)) => return Err(e),
            }
        }
        let steps = match self.mounts {
            Some(_) => Some(pipe_cloexec(libc::O_NONBLOCK).map_err(|e| self.explain(e, None))?),
            None => None,
        };
        let mut cmd = self
            .build_reporting(steps.as_ref().map(|(_, w)| w))
            .map_err(|e| self.explain(e, None))?;
        let resolved = PathBuf::from(cmd.get_program());
        let spawned = reaper.spawn(&mut cmd).map_err(|e| {
            match steps.as_ref().and_then(|(r, _)| read_step(r)) {
                Some(step) => self.explain_step(e, step),
                None => self.explain(e, Some(&resolved)),
            }
        })?;
        if let Some(cg) = self.cgroup {
            if !cg.contains(spawned.pid) {
                if let Err(e) = cg.add_pid(spawned.pid) {
                    tracing::warn!(
                        pid = spawned.pid,
                        "{}: running outside its cgroup: {e}",
                        self.program()
                    );
                }
            }
        }
        Ok(spawned)
    }

    /// Spawns with `clone3(CLONE_INTO_CGROUP | CLONE_PIDFD)`: the child is
    /// born in the service's cgroup, so no cgroup migration (several ms of
    /// `cgroup_threadgroup_rwsem` on the restart path) and no window outside
    /// the cgroup. Everything the child needs is prepared before the clone;
    /// the child only makes async-signal-safe syscalls.
    fn spawn_into_cgroup(&self, reaper: &Reaper, cg: &Cgroup) -> Result<Spawned, Clone3Error> {
        use std::ffi::CString;
        let fail = |e: io::Error| Clone3Error::Failed(self.explain(e, None));
        let program = self.argv.first().ok_or_else(|| {
            fail(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty command line",
            ))
        })?;
        let resolved = resolve_program(program, self.env).map_err(fail)?;
        let cstr = |s: &[u8]| {
            CString::new(s).map_err(|_| {
                fail(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a NUL byte in argv, env or path",
                ))
            })
        };
        let prog_c = cstr(resolved.as_os_str().as_encoded_bytes())?;
        let argv_c: Vec<CString> = self
            .argv
            .iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<Result<_, _>>()?;
        let env_c: Vec<CString> = self
            .env
            .iter()
            .map(|(k, v)| cstr(format!("{k}={v}").as_bytes()))
            .collect::<Result<_, _>>()?;
        let mut argv_p: Vec<*const libc::c_char> = argv_c.iter().map(|c| c.as_ptr()).collect();
        argv_p.push(std::ptr::null());
        let mut env_p: Vec<*const libc::c_char> = env_c.iter().map(|c| c.as_ptr()).collect();
        env_p.push(std::ptr::null());
        let cwd_c = match self.working_dir {
            Some(d) => Some(cstr(d.as_os_str().as_encoded_bytes())?),
            None => None,
        };
        let out_fd = |o: &Output<'_>| -> io::Result<Option<OwnedFd>> {
            Ok(match o {
                Output::Inherit => None,
                Output::Null => Some(OwnedFd::from(
                    fs::OpenOptions::new().write(true).open("/dev/null")?,
                )),
                Output::Fd(fd) => Some(fd.try_clone_to_owned()?),
            })
        };
        let stdout = out_fd(&self.stdout).map_err(fail)?;
        let stderr = out_fd(&self.stderr).map_err(fail)?;
        let stdin = OwnedFd::from(fs::File::open("/dev/null").map_err(fail)?);
        let ids = match (self.uid, self.gid) {
            (None, None) => None,
            (uid, Some(gid)) => Some((uid, gid)),
            (Some(uid), None) => Some((Some(uid), primary_gid(uid))),
        };
        // v1 limit groups (hybrid hosts) are still joined by writing "0".
        let v1_fds: Vec<OwnedFd> = cg
            .v1_dirs()
            .into_iter()
            .filter_map(|(_, d)| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("cgroup.procs"))
                    .map(OwnedFd::from)
                    .ok()
            })
            .collect();
        let cg_dir = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
            .open(cg.path())
            .map_err(|e| Clone3Error::Unsupported(format!("open {}: {e}", cg.path().display())))?;
        let (err_r, err_w) = pipe_cloexec(0).map_err(fail)?;
        let mounts = self.mounts;
        let nofile = crate::nofile::restore_target();

        let mut unsupported: Option<String> = None;
        let mut failed_step = STEP_EXEC;
        let result = reaper.spawn_raw(|| {
            let mut pidfd: libc::c_int = -1;
            let child = ChildArgs {
                stdin: &stdin,
                stdout: stdout.as_ref(),
                stderr: stderr.as_ref(),
                v1_fds: &v1_fds,
                ids,
                mounts,
                nofile,
                cwd: cwd_c.as_ref(),
                prog: &prog_c,
                argv: &argv_p,
                envp: &env_p,
                err_w: err_w.as_raw_fd(),
            };
            let pid = clone_into_cgroup(&child, cg_dir.as_raw_fd(), &mut pidfd);
            if pid < 0 {
                let e = io::Error::last_os_error();
                // Only "this kernel or this cgroup cannot do clone3 into a
                // cgroup" falls back to fork + join; EAGAIN (pids limit),
                // ENOMEM and the like are real spawn failures.
                if clone3_unsupported(e.raw_os_error()) {
                    unsupported = Some(e.to_string());
                }
                return Err((None, e));
            }
            let pid = pid as u32;
            // SAFETY: clone3 stored a new pidfd that we now own.
            let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd) };
            drop(err_w);
            // EOF = exec succeeded (the CLOEXEC write end closed); 8 bytes =
            // errno and the step that failed (see ChildFailure).
            let mut buf = [0u8; 8];
            let mut got = 0;
            let mut file = fs::File::from(err_r);
            while got < 8 {
                match file.read(&mut buf[got..]) {
                    Ok(0) => break,
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err((Some(pid), e)),
                }
            }
            if got >= 4 {
                let errno = i32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
                if got == 8 {
                    failed_step = u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
                }
                return Err((Some(pid), io::Error::from_raw_os_error(errno)));
            }
            Ok((pid, pidfd))
        });
        match result {
            Ok(s) => Ok(s),
            Err(e) => match unsupported {
                Some(why) => Err(Clone3Error::Unsupported(why)),
                None if failed_step != STEP_EXEC => {
                    Err(Clone3Error::Failed(self.explain_step(e, failed_step)))
                }
                None => Err(Clone3Error::Failed(self.explain(e, Some(&resolved)))),
            },
        }
    }

    /// The error of a child that failed on step `step` of its setup (see
    /// [`ChildFailure`]): names the program and the bind.
    fn explain_step(&self, err: io::Error, step: u32) -> io::Error {
        let what = match (step, self.mounts) {
            (STEP_NAMESPACE, _) => "creating its private mount namespace".to_string(),
            (STEP_EXEC, _) | (_, None) => return self.explain(err, None),
            (i, Some(plan)) => plan.describe(i as usize - 1),
        };
        io::Error::new(
            err.kind(),
            format!("cannot start {:?}: {what}: {err}", self.program()),
        )
    }

    /// Turns a spawn error into one that names the program and the cause.
    fn explain(&self, err: io::Error, resolved: Option<&Path>) -> io::Error {
        let prog = self.program();
        let kind = err.kind();
        if let Some(dir) = self.working_dir {
            if err.raw_os_error().is_some() && !dir.is_dir() {
                return io::Error::new(
                    kind,
                    format!(
                        "cannot start {prog:?}: working directory {} does not exist or is not a directory",
                        dir.display()
                    ),
                );
            }
        }
        let Some(path) = resolved else {
            return io::Error::new(kind, format!("cannot start {prog:?}: {err}"));
        };
        let shown = path.display();
        let why = match err.raw_os_error() {
            Some(libc::ENOENT) if path.exists() => match interpreter(path) {
                Some(interp) => format!("bad interpreter {interp:?} in its #! line: {err}"),
                None => format!("{err} (a shared library or loader it needs is missing?)"),
            },
            Some(libc::ENOENT) => format!("{shown} does not exist"),
            Some(libc::EACCES) => format!(
                "permission denied: {shown} is not executable or a directory on its path is not searchable"
            ),
            Some(libc::ENOEXEC) => {
                format!("exec format error: {shown} is neither a binary for this machine nor a #! script")
            }
            Some(libc::ENOTDIR) => format!("a component of {shown} is not a directory"),
            _ => err.to_string(),
        };
        io::Error::new(kind, format!("cannot start {prog:?}: {why}"))
    }
}

/// True for the clone3 errors that mean "not available here" (old kernel,
/// seccomp filter, a cgroup that cannot take processes directly), as
/// opposed to a spawn that failed.
fn clone3_unsupported(errno: Option<i32>) -> bool {
    matches!(
        errno,
        Some(
            libc::ENOSYS
                | libc::EINVAL
                | libc::E2BIG
                | libc::EPERM
                | libc::EOPNOTSUPP
                | libc::EBUSY
                | libc::EBADF
        )
    )
}

/// Same as [`SpawnRequest::build`].
pub fn build_command(req: &SpawnRequest<'_>) -> io::Result<Command> {
    req.build()
}

/// Signal number for a name (`SIGTERM`, `TERM`, `sigterm`, `SIGRTMIN+3`) or a
/// number (`15`); `None` if unknown or out of range.
pub fn signal_number(name: &str) -> Option<i32> {
    let name = name.trim();
    if let Ok(n) = name.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(rest) = bare.strip_prefix("RTMIN") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('+')?.parse().ok()?
        };
        let n = libc::SIGRTMIN() + off;
        return (n <= libc::SIGRTMAX()).then_some(n);
    }
    if let Some(rest) = bare.strip_prefix("RTMAX") {
        let off: i32 = if rest.is_empty() {
            0
        } else {
            rest.strip_prefix('-')?.parse().ok()?
        };
        let n = libc::SIGRTMAX() - off;
        return (n >= libc::SIGRTMIN()).then_some(n);
    }
    let n = match bare {
        "IOT" => libc::SIGABRT,
        "POLL" => libc::SIGIO,
        "CLD" => libc::SIGCHLD,
        _ => (1..32).find(|&n| upkeep_core::exit::signal_name(n) == format!("SIG{bare}"))?,
    };
    Some(n)
}

/// The interpreter named in a file's `#!` line, if it has one.
fn interpreter(path: &Path) -> Option<String> {
    let mut buf = [0u8; 256];
    let n = fs::File::open(path).ok()?.read(&mut buf).ok()?;
    let head = &buf[..n];
    let line = head.strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|&b| b == b'\n').unwrap_or(line.len())];
    let text = String::from_utf8_lossy(line);
    text.split_whitespace().next().map(str::to_owned)
}

/// Primary gid of `uid` from the passwd database, or 0 (what container
/// runtimes do for a uid without a passwd entry).
fn primary_gid(uid: u32) -> u32 {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.gid.as_raw())
        .unwrap_or(0)
}

/// Resolves `program` like `execvp` would, but against the `PATH` in `env`
/// (or [`DEFAULT_PATH`]). Names containing `/` are returned unchanged.
pub fn resolve_program(program: &str, env: &BTreeMap<String, String>) -> io::Result<PathBuf> {
    if program.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "empty program name",
        ));
    }
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    let path_var = env.get("PATH").map(String::as_str).unwrap_or(DEFAULT_PATH);
    let mut not_executable = None;
    for dir in path_var.split(':') {
        // An empty PATH element means the current directory.
        let candidate = Path::new(if dir.is_empty() { "." } else { dir }).join(program);
        if let Ok(meta) = fs::metadata(&candidate) {
            if !meta.is_file() {
                continue;
            }
            if meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
            not_executable.get_or_insert(candidate);
        }
    }
    // Let exec report EACCES on the first non-executable match, as execvp does.
    not_executable.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("cannot start {program:?}: not found in PATH={path_var}"),
        )
    })
}

/// Why the `clone3` path did not produce a child.
enum Clone3Error {
    /// clone3 or CLONE_INTO_CGROUP is not available here: use the fork path.
    Unsupported(String),
    /// The service could not be started (its error, explained).
    Failed(io::Error),
}

const CLONE_PIDFD: u64 = 0x1000;
/// `CLONE_VM`: the child shares the parent's memory.
#[cfg(target_arch = "x86_64")]
const CLONE_VM: u64 = 0x100;
/// `CLONE_VFORK`: the parent's thread waits for the child's exec or exit.
#[cfg(target_arch = "x86_64")]
const CLONE_VFORK: u64 = 0x4000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` of clone3(2) (version 2, with `cgroup`).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What [`child_exec`] needs, prepared by the parent before the clone.
struct ChildArgs<'a> {
    stdin: &'a OwnedFd,
    stdout: Option<&'a OwnedFd>,
    stderr: Option<&'a OwnedFd>,
    v1_fds: &'a [OwnedFd],
    ids: Option<(Option<u32>, u32)>,
    mounts: Option<&'a MountPlan>,
    nofile: Option<u64>,
    cwd: Option<&'a std::ffi::CString>,
    prog: &'a std::ffi::CString,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    err_w: libc::c_int,
}

/// Runs [`child_exec`] on `arg` in a freshly cloned child; never returns.
///
/// # Safety
/// Only as the entry of a child made by [`clone_into_cgroup`], with `arg`
/// pointing to a [`ChildArgs`] that outlives the child's exec.
#[cfg(target_arch = "x86_64")]
unsafe extern "C" fn child_entry(arg: *const ChildArgs<'_>) -> ! {
    // SAFETY: per the contract above.
    unsafe { child_exec(&*arg) }
}

/// Size of the stack a vfork-style child runs on (it calls [`child_exec`]
/// and nothing else: a few KiB at most), plus one guard page below it.
#[cfg(target_arch = "x86_64")]
const CHILD_STACK: usize = 128 * 1024;

/// A stack for vfork-style children, mapped once per spawning thread and
/// reused (the parent is suspended until its child execs or exits, so one
/// child at a time uses it).
#[cfg(target_arch = "x86_64")]
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

#[cfg(target_arch = "x86_64")]
impl ChildStack {
    fn map() -> io::Result<ChildStack> {
        let page = 4096;
        let len = CHILD_STACK + page;
        // SAFETY: a fresh private anonymous mapping; its lowest page is made
        // inaccessible so that an overflow faults instead of writing into
        // whatever lies below.
        unsafe {
            let base = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            if libc::mprotect(base, page, libc::PROT_NONE) < 0 {
                let e = io::Error::last_os_error();
                libc::munmap(base, len);
                return Err(e);
            }
            Ok(ChildStack { base, len })
        }
    }

    /// The highest address (the stack grows down), 16-byte aligned.
    fn top(&self) -> u64 {
        self.base as u64 + self.len as u64
    }
}

#[cfg(target_arch = "x86_64")]
impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; no child uses it any
        // more (each one has exec'd or exited before its clone returned).
        unsafe {
            libc::munmap(self.base, self.len);
        }
    }
}

#[cfg(target_arch = "x86_64")]
thread_local! {
    static CHILD_STACK_OF_THREAD: std::cell::RefCell<Option<ChildStack>> =
        const { std::cell::RefCell::new(None) };
}

/// Clones a child that runs [`child_exec`] on `child` and is born in the
/// cgroup open as `cgroup_fd`; stores its pidfd in `pidfd`. Returns the
/// child's pid to the parent, or -1 with errno set.
///
/// On x86_64 the child shares upkeep's memory and upkeep's calling thread
/// waits until it has exec'd or exited (`CLONE_VM | CLONE_VFORK`, as
/// glibc's `posix_spawn` does): no copy of upkeep's page tables and no
/// write-protection of all its memory at every spawn. A fork did both,
/// holding upkeep's memory-map lock meanwhile, so every other upkeep thread
/// that touched memory (a `/metrics` scrape) waited for each restart of a
/// crash loop, and each of its writes afterwards took a copy-on-write
/// fault. All signals are blocked around the clone so that no upkeep
/// signal handler ever runs in the child on the shared memory;
/// [`child_setup`] resets every disposition before it unblocks them.
/// Elsewhere, and when no stack can be mapped, the child is a plain fork.
fn clone_into_cgroup(
    child: &ChildArgs<'_>,
    cgroup_fd: libc::c_int,
    pidfd: &mut libc::c_int,
) -> i64 {
    let mut args = CloneArgs {
        flags: CLONE_PIDFD | CLONE_INTO_CGROUP,
        pidfd: std::ptr::from_mut(pidfd) as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup_fd as u64,
    };
    #[cfg(target_arch = "x86_64")]
    {
        // `try_with`: a thread being torn down has no stack left; it forks.
        let shared = CHILD_STACK_OF_THREAD.try_with(|cell| {
            let mut slot = cell.borrow_mut();
            if slot.is_none() {
                match ChildStack::map() {
                    Ok(st) => *slot = Some(st),
                    Err(e) => {
                        tracing::debug!("no stack for a vfork-style child ({e}); forking");
                        return None;
                    }
                }
            }
            let top = slot.as_ref()?.top();
            args.flags |= CLONE_VM | CLONE_VFORK;
            args.stack = top - CHILD_STACK as u64;
            args.stack_size = CHILD_STACK as u64;
            // SAFETY: see clone3_vfork; the child runs child_entry on the
            // thread's own stack mapping, reads `child` (alive until the
            // clone returns, which is after the child's exec or exit) and
            // never returns.
            Some(unsafe { clone3_vfork(&args, child) })
        });
        if let Ok(Some(pid)) = shared {
            return pid;
        }
    }
    // SAFETY: clone3 without CLONE_VM is a fork; the child branch only
    // makes async-signal-safe calls on data prepared before the clone and
    // never returns.
    unsafe {
        let pid = libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        );
        if pid == 0 {
            child_exec(child);
        }
        pid
    }
}

/// `clone3(args)` with `CLONE_VM | CLONE_VFORK` and a stack in `args`: the
/// child starts on that stack and calls [`child_entry`]`(child)`; the
/// parent gets the pid (or -1, errno set) once the child has exec'd or
/// exited. All signals are blocked in the calling thread around the call
/// (the child inherits that mask and unblocks only after resetting every
/// disposition).
///
/// # Safety
/// `args` must describe a valid stack nobody else uses, and `child` must
/// stay valid until this returns.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_vfork(args: &CloneArgs, child: &ChildArgs<'_>) -> i64 {
    // SAFETY: (the whole function) sigprocmask on the calling thread with
    // valid sets; the raw clone3 below returns in the parent like any
    // syscall (rcx and r11 clobbered) and in the child switches to the new
    // stack, where it only calls child_entry, which never returns.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let ret: i64;
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            // The child, on its own stack (rsp = the stack's top, 16-byte
            // aligned): no frame to return to.
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") std::ptr::from_ref(args),
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") std::ptr::from_ref(child),
            in("r13") child_entry as *const () as usize,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
        let errno_saved = if ret < 0 { -ret as i32 } else { 0 };
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if ret < 0 {
            // The raw syscall returns -errno; callers read errno.
            *libc::__errno_location() = errno_saved;
            return -1;
        }
        ret
    }
}

/// The child side of the clone3 path: stdio, [`child_setup`], cwd, execve;
/// on any failure the errno and the step go to `err_w` (8 bytes) and the
/// child exits 127.
///
/// # Safety
/// Only to be called in a freshly cloned child; uses nothing but
/// async-signal-safe syscalls on memory prepared before the clone.
// The whole body runs in the cloned child under the contract above.
#[allow(unsafe_op_in_unsafe_fn)]
unsafe fn child_exec(a: &ChildArgs<'_>) -> ! {
    let ChildArgs {
        stdin,
        stdout,
        stderr,
        v1_fds,
        ids,
        mounts,
        nofile,
        cwd,
        prog,
        argv,
        envp,
        err_w,
    } = *a;
    let report_step = |errno: i32, step: u32| -> ! {
        let mut b = [0u8; 8];
        b[..4].copy_from_slice(&errno.to_ne_bytes());
        b[4..].copy_from_slice(&step.to_ne_bytes());
        libc::write(err_w, b.as_ptr().cast(), 8);
        libc::_exit(127)
    };
    let report = |errno: i32| -> ! { report_step(errno, STEP_EXEC) };
    let errno = || {
        std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    if libc::dup2(stdin.as_raw_fd(), 0) < 0 {
        report(errno());
    }
    if let Some(fd) = stdout {
        if libc::dup2(fd.as_raw_fd(), 1) < 0 {
            report(errno());
        }
    }
    if let Some(fd) = stderr {
        if libc::dup2(fd.as_raw_fd(), 2) < 0 {
            report(errno());
        }
    }
    if let Err(f) = child_setup(v1_fds, ids, mounts, nofile) {
        report_step(f.errno, f.step);
    }
    if let Some(dir) = cwd {
        if libc::chdir(dir.as_ptr()) < 0 {
            report(errno());
        }
    }
    libc::execve(prog.as_ptr(), argv.as_ptr(), envp.as_ptr());
    report(errno())
}

/// Step of the child's setup that failed, reported with the errno: not a
/// mount step (the errno speaks for itself: setsid, ids, chdir, exec).
const STEP_EXEC: u32 = 0;
/// Step: `unshare(CLONE_NEWNS)` or making the tree a slave.
const STEP_NAMESPACE: u32 = u32::MAX;

/// Why the child's setup failed: `errno`, and `step` = [`STEP_EXEC`],
/// [`STEP_NAMESPACE`], or `i + 1` for bind `i` of the mount plan.
#[derive(Debug, Clone, Copy)]
struct ChildFailure {
    errno: i32,
    step: u32,
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Runs in the child between fork and exec. Async-signal-safe only.
///
/// `nofile`: the soft `RLIMIT_NOFILE` to set back (upkeep raised its own,
/// see [`crate::nofile`]), from [`crate::nofile::restore_target`] read
/// before the fork.
fn child_setup(
    cgroup_fds: &[OwnedFd],
    ids: Option<(Option<u32>, u32)>,
    mounts: Option<&MountPlan>,
    nofile: Option<u64>,
) -> Result<(), ChildFailure> {
    let fail = |step: u32| ChildFailure {
        errno: errno(),
        step,
    };
    // SAFETY: (the whole function) raw syscalls on valid arguments; nothing
    // here allocates or takes locks.
    unsafe {
        for fd in cgroup_fds {
            // "0" = the writing process. A failure leaves the service outside
            // the cgroup; the parent notices and retries (see SpawnRequest::spawn).
            let _ = libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1);
        }
        if libc::setsid() < 0 {
            return Err(fail(STEP_EXEC));
        }
        // Before the uid drop: mounting needs CAP_SYS_ADMIN.
        if let Some(plan) = mounts {
            child_mounts(plan)?;
        }
        // Every disposition back to default, including the real-time signals
        // glibc's signal() refuses to touch (32, 33): the raw syscall with an
        // all-zero kernel sigaction (= SIG_DFL, no flags, empty mask). The
        // buffer is larger than the kernel's struct on every architecture.
        let dfl = [0u64; 8];
        // 64 = the highest signal number on Linux (NSIG - 1).
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    dfl.as_ptr(),
                    std::ptr::null_mut::<libc::c_void>(),
                    8usize,
                );
            }
        }
        // Only now unblocked (a vfork-style child starts with every signal
        // blocked): no handler of upkeep's can run here any more.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        // Descriptors upkeep inherited without close-on-exec (from whoever
        // started it) must not reach services: mark all of them close-on-exec.
        // Closing them here would also close std's exec-error pipe.
        if libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) < 0
        {
            // Kernels before 5.11: one fcntl per possible descriptor.
            let mut lim: libc::rlimit = std::mem::zeroed();
            let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur.min(65536) as libc::c_int
            } else {
                1024
            };
            for fd in 3..max {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
                }
            }
        }
        // After the loop above, which is bounded by the (raised) limit.
        if let Some(soft) = nofile {
            set_nofile_soft(soft).map_err(|errno| ChildFailure {
                errno,
                step: STEP_EXEC,
            })?;
        }
        if let Some((uid, gid)) = ids {
            // Raw syscalls, never glibc's wrappers: after a raw clone3 from
            // a multi-threaded upkeep, glibc still believes the parent's
            // threads exist and would broadcast the id change to them
            // (tgkill + wait), which can hang the child for ever. The child
            // has exactly one thread, so the per-thread syscall is the
            // whole process.
            let groups = [gid as libc::gid_t];
            if libc::syscall(libc::SYS_setgroups, 1usize, groups.as_ptr()) < 0 {
                return Err(fail(STEP_EXEC));
            }
            if libc::syscall(libc::SYS_setresgid, gid, gid, gid) < 0 {
                return Err(fail(STEP_EXEC));
            }
            if let Some(uid) = uid {
                if libc::syscall(libc::SYS_setresuid, uid, uid, uid) < 0 {
                    return Err(fail(STEP_EXEC));
                }
            }
        }
    }
    Ok(())
}

/// The child's private mount namespace: `unshare(CLONE_NEWNS)`, `/` made a
/// recursive slave (the host's later mounts arrive, none of ours leave),
/// then for each bind: `MS_BIND | MS_REC`, its propagation (`MS_PRIVATE` or
/// `MS_SLAVE`, recursive), and for `readOnly` a read-only remount of the
/// bind. Raw syscalls on C strings prepared before the clone.
fn child_mounts(plan: &MountPlan) -> Result<(), ChildFailure> {
    let fail = |step: u32| ChildFailure {
        errno: errno(),
        step,
    };
    let null = std::ptr::null::<libc::c_char>();
    let mount =
        |src: *const libc::c_char, dst: *const libc::c_char, flags: libc::c_ulong| -> bool {
            // SAFETY: mount(2) with NUL-terminated strings (or NULL) that
            // outlive the call and no data argument.
            unsafe {
                libc::syscall(
                    libc::SYS_mount,
                    src,
                    dst,
                    null,
                    flags,
                    std::ptr::null::<libc::c_void>(),
                ) == 0
            }
        };
    // SAFETY: unshare(2) of the mount namespace of this single-threaded child.
    if unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS) } < 0 {
        return Err(fail(STEP_NAMESPACE));
    }
    if !mount(null, c"/".as_ptr(), libc::MS_REC | libc::MS_SLAVE) {
        return Err(fail(STEP_NAMESPACE));
    }
    for (i, b) in plan.binds.iter().enumerate() {
        let step = i as u32 + 1;
        if !mount(
            b.source.as_ptr(),
            b.target.as_ptr(),
            libc::MS_BIND | libc::MS_REC,
        ) {
            return Err(fail(step));
        }
        if !mount(null, b.target.as_ptr(), libc::MS_REC | b.propagation) {
            return Err(fail(step));
        }
        if let Some(flags) = b.read_only {
            if !mount(null, b.target.as_ptr(), flags) {
                return Err(fail(step));
            }
        }
    }
    Ok(())
}

/// A pipe, both ends close-on-exec, plus `extra` flags (`O_NONBLOCK`):
/// (read end, write end).
fn pipe_cloexec(extra: libc::c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut pipe = [0 as libc::c_int; 2];
    // SAFETY: pipe2 with a valid 2-element array.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC | extra) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned here.
    unsafe {
        Ok((
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pipe[0]),
            <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pipe[1]),
        ))
    }
}

/// The step a failed fork-path child wrote to its (non-blocking) step pipe.
fn read_step(r: &OwnedFd) -> Option<u32> {
    let mut b = [0u8; 4];
    let mut f = fs::File::from(r.try_clone().ok()?);
    (f.read(&mut b).ok()? == 4).then(|| u32::from_ne_bytes(b))
}

/// SIGKILLs a child of ours that is not reaped yet (so its pid cannot have
/// been reused): the error paths of a spawn.
pub(crate) fn kill_unreaped_child(pid: u32) {
    // SAFETY: kill(2) with a pid we own (unreaped) and a valid signal.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
}

/// `waitpid(-1, WNOHANG | __WALL)`: (pid, raw status); pid 0 = nothing to
/// reap, negative = error (see `errno`).
pub(crate) fn waitpid_any_nohang() -> (libc::pid_t, libc::c_int) {
    let mut raw: libc::c_int = 0;
    // SAFETY: plain syscall with a valid out pointer.
    let pid = unsafe { libc::waitpid(-1, &mut raw, libc::WNOHANG | libc::__WALL) };
    (pid, raw)
}

/// `pidfd_send_signal(2)` with a raw signal number (real-time signals and
/// signal 0, which rustix does not name).
pub(crate) fn pidfd_send_signal_raw(pidfd: &OwnedFd, signal: i32) -> io::Result<()> {
    // SAFETY: pidfd_send_signal(2) with a valid fd and NULL info.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Registers a pidfd with tokio's reactor, readable once the process exits.
pub(crate) fn async_pidfd(pidfd: OwnedFd) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns this descriptor for its whole lifetime and
    // nothing else closes it.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE)
            .map_err(|e| e.into_parts().1)
    }
}

/// Best-effort `SO_SNDBUF` on a socket.
pub(crate) fn set_send_buffer(fd: BorrowedFd<'_>, bytes: libc::c_int) {
    // SAFETY: a valid socket fd and a pointer to a c_int of the given size.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            std::ptr::from_ref(&bytes).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Best-effort nice value of the calling thread (threads it starts
/// afterwards inherit it). A negative value needs `CAP_SYS_NICE` or
/// `RLIMIT_NICE`; without them the thread keeps its priority.
pub fn set_thread_priority(nice: libc::c_int) {
    // SAFETY: setpriority on our own thread id; no memory is involved.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice);
    }
}

/// Best-effort nice value and scheduler slice of the calling thread
/// (threads it starts afterwards inherit both), for a thread that must
/// answer quickly while services keep the cores busy: the nice value gives
/// it a larger share, the short slice lets it preempt a running service at
/// once when it wakes (Linux 6.12 and later, `sched_attr.sched_runtime` of
/// a fair-class thread; the kernel clamps it to 0.1-100 ms, and older
/// kernels ignore it). Without the privilege for a negative nice value
/// (`CAP_SYS_NICE` or `RLIMIT_NICE`) the thread keeps nice 0 and still gets
/// the slice; where `sched_setattr` is refused altogether, only the nice
/// value is tried ([`set_thread_priority`]).
pub fn set_thread_latency(nice: libc::c_int, slice: std::time::Duration) {
    let runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    let attr = |nice: libc::c_int| libc::sched_attr {
        size: std::mem::size_of::<libc::sched_attr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_flags: 0,
        sched_nice: nice,
        sched_priority: 0,
        sched_runtime: runtime,
        sched_deadline: 0,
        sched_period: 0,
    };
    let set = |a: &libc::sched_attr| {
        // SAFETY: sched_setattr(2) on our own thread (pid 0) with a fully
        // initialised struct whose `size` field is its size; the kernel
        // only reads it.
        unsafe { libc::syscall(libc::SYS_sched_setattr, 0, std::ptr::from_ref(a), 0) == 0 }
    };
    if set(&attr(nice)) {
        return;
    }
    // Refused: the nice value without the privilege for it, or no
    // sched_setattr (filtered). The slice alone, then the nice value alone.
    let _ = set(&attr(0));
    set_thread_priority(nice);
}

/// Sets the calling process's soft `RLIMIT_NOFILE` to `soft`, capped at
/// its hard limit, which stays as it is: two raw `prlimit64` calls (read,
/// then set) on stack memory, async-signal-safe and allocation-free, for a
/// child between fork (or clone3) and exec. Lowering the soft limit needs
/// no privilege, so this fails only where the syscall is filtered. `Err`:
/// the errno.
fn set_nofile_soft(soft: u64) -> Result<(), i32> {
    // struct rlimit64 { __u64 rlim_cur; __u64 rlim_max; }
    let mut lim = [0u64; 2];
    // SAFETY: prlimit64(2) on ourselves (pid 0) with no new limit and a
    // valid out pointer to a struct rlimit64.
    let got = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_NOFILE,
            std::ptr::null::<u64>(),
            lim.as_mut_ptr(),
        )
    };
    if got < 0 {
        return Err(errno());
    }
    lim[0] = soft.min(lim[1]);
    // SAFETY: prlimit64(2) on ourselves with a valid struct rlimit64 and no
    // out pointer.
    let set = unsafe {
        libc::syscall(
            libc::SYS_prlimit64,
            0,
            libc::RLIMIT_NOFILE,
            lim.as_ptr(),
            std::ptr::null_mut::<u64>(),
        )
    };
    if set < 0 {
        return Err(errno());
    }
    Ok(())
}

/// Gives `cmd`'s child the soft open-files limit upkeep started with, if
/// upkeep raised its own ([`crate::nofile`]); does nothing otherwise. The
/// [`Reaper`] calls it for every command it spawns (exec probes, `preStop`
/// hooks, anything else upkeep runs); services get the same from
/// [`child_setup`] on both spawn paths. Runs after std's own pre-exec steps
/// (uid drop included: lowering a soft limit needs no privilege).
pub fn restore_nofile_before_exec(cmd: &mut Command) {
    let Some(soft) = crate::nofile::restore_target() else {
        return;
    };
    // SAFETY: the closure only makes raw syscalls on stack memory
    // (async-signal-safe) and does not allocate on success; an error is
    // built from a raw errno (no allocation either).
    unsafe {
        cmd.pre_exec(move || set_nofile_soft(soft).map_err(io::Error::from_raw_os_error));
    }
}

/// Makes `cmd`'s child join the cgroups behind `fds` (their `cgroup.procs`
/// files, opened for writing) between fork and exec. A failure leaves the
/// child where it is.
pub fn join_cgroup_before_exec(cmd: &mut Command, fds: Vec<OwnedFd>) {
    // SAFETY: the closure only writes to descriptors opened before the fork
    // (async-signal-safe) and does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &fds {
                let _ = libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1);
            }
            Ok(())
        });
    }
}

/// Makes `cmd`'s child enter the mount namespace of `of` (a service's main
/// process), then change to `working_dir` and drop to `uid`/`gid` (as
/// [`SpawnRequest`] does), all between fork and exec: how exec probes and
/// hooks of a service with a private mount namespace see its mounts.
/// Fails if the process is gone.
pub fn enter_mount_ns_before_exec(
    cmd: &mut Command,
    of: &crate::probe::MountNsOf,
    working_dir: &Path,
    uid: Option<u32>,
    gid: Option<u32>,
) -> io::Result<()> {
    let ns = OwnedFd::from(
        fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(format!("/proc/{}/ns/mnt", of.pid))?,
    );
    // Alive after the open: the pid was its all along, so is the namespace.
    pidfd_send_signal_raw(&of.pidfd, 0)?;
    let cwd = std::ffi::CString::new(working_dir.as_os_str().as_encoded_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a NUL byte in the working directory",
        )
    })?;
    let ids = match (uid, gid) {
        (None, None) => None,
        (uid, Some(gid)) => Some((uid, gid)),
        (Some(uid), None) => Some((Some(uid), primary_gid(uid))),
    };
    // SAFETY: the closure only makes raw syscalls on data prepared before
    // the fork and does not allocate.
    unsafe {
        cmd.pre_exec(move || {
            if libc::syscall(libc::SYS_setns, ns.as_raw_fd(), libc::CLONE_NEWNS) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::chdir(cwd.as_ptr()) < 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some((uid, gid)) = ids {
                let groups = [gid as libc::gid_t];
                if libc::syscall(libc::SYS_setgroups, 1usize, groups.as_ptr()) < 0
                    || libc::syscall(libc::SYS_setresgid, gid, gid, gid) < 0
                {
                    return Err(io::Error::last_os_error());
                }
                if let Some(uid) = uid {
                    if libc::syscall(libc::SYS_setresuid, uid, uid, uid) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// Sends `sig` to every process in process group `pgid`; `Ok(false)` if the
/// group is empty (ESRCH). Refuses `pgid` 0 and 1 (our own group / init).
pub fn signal_group(pgid: u32, sig: i32) -> io::Result<bool> {
    if pgid <= 1 || pgid > i32::MAX as u32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to signal process group {pgid}"),
        ));
    }
    // SAFETY: kill(2) with a negative pid = a process group.
    if unsafe { libc::kill(-(pgid as libc::pid_t), sig) } == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(false)
    } else {
        Err(io::Error::new(
            err.kind(),
            format!("kill(-{pgid}, {sig}): {err}"),
        ))
    }
}

/// True while process group `pgid` has a member (zombies count until reaped).
pub fn group_alive(pgid: u32) -> bool {
    if pgid <= 1 || pgid > i32::MAX as u32 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence.
    if unsafe { libc::kill(-(pgid as libc::pid_t), 0) } == 0 {
        return true;
    }
    io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_against_the_given_path_only() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("only-here");
        fs::write(&bin, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let mut env = BTreeMap::new();
        env.insert(
            "PATH".into(),
            format!("/nonexistent:{}", dir.path().display()),
        );
        assert_eq!(resolve_program("only-here", &env).unwrap(), bin);
        // `sh` is in upkeep's PATH but not in the service's.
        let err = resolve_program("sh", &env).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("\"sh\""), "{err}");
        assert_eq!(resolve_program("./x", &env).unwrap(), PathBuf::from("./x"));
        assert!(resolve_program("", &env).is_err());
        // Non-executable match is returned so exec reports EACCES.
        let plain = dir.path().join("plain");
        fs::write(&plain, "x").unwrap();
        fs::set_permissions(&plain, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(resolve_program("plain", &env).unwrap(), plain);
    }

    #[test]
    fn default_path_when_env_has_none() {
        let env = BTreeMap::new();
        let sh = resolve_program("sh", &env).unwrap();
        assert!(sh.is_absolute(), "{}", sh.display());
    }

    #[test]
    fn interpreter_of_script() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        fs::write(&p, "#! /no/such/interp -x\necho\n").unwrap();
        assert_eq!(interpreter(&p).as_deref(), Some("/no/such/interp"));
        fs::write(&p, "\x7fELF").unwrap();
        assert_eq!(interpreter(&p), None);
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_number("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(signal_number("term"), Some(libc::SIGTERM));
        assert_eq!(signal_number("SIGKILL"), Some(9));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGQUIT"), Some(libc::SIGQUIT));
        assert_eq!(signal_number("SIGWINCH"), Some(libc::SIGWINCH));
        assert_eq!(signal_number("SIGRTMIN+2"), Some(libc::SIGRTMIN() + 2));
        assert_eq!(signal_number("SIGRTMAX"), Some(libc::SIGRTMAX()));
        assert_eq!(signal_number("SIGNOPE"), None);
        assert_eq!(signal_number("0"), None);
        assert_eq!(signal_number("99"), None);
        assert_eq!(signal_number("SIG0"), None);
        assert_eq!(signal_number("SIGRTMIN+99"), None);
    }

    #[test]
    fn group_signalling_refuses_dangerous_targets() {
        assert!(signal_group(0, 0).is_err());
        assert!(signal_group(1, 0).is_err());
        assert!(!group_alive(0));
        assert!(!group_alive(1));
    }
}
