//! Where a service's stdout/stderr go, per its `log` mode, and reading them
//! back (`upkeep logs -n`, `upkeep logs -f`).
//!
//! - `file`: services write **directly** to `<dir>/<name>.log` (opened
//!   `O_APPEND`, mode 0640): never through a pipe to upkeep, because services
//!   must survive upkeep's exit and a broken pipe would SIGPIPE them. The
//!   [`rotator`] thread keeps each file within `(max_files + 1) × max_size`
//!   plus a small slack, off the supervision thread.
//! - `journal`: a stream connection to journald ([`journal`]); falls back to
//!   `file` with a warning where journald's socket is missing.
//! - `inherit`: upkeep's own stderr.
//!
//! A full disk or an unwritable log directory never stops supervision:
//! [`ServiceLog::output`] falls back to `/dev/null` and returns the reason
//! for the caller to log.

pub mod journal;
pub mod rotator;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use upkeep_spec::LogMode;

pub use rotator::{copy_truncate, Registration, Rotation, Rotator};

/// Maps a service name to its log file name with
/// [`upkeep_spec::names::path_component`] plus `.log`: `pod/container`
/// becomes `pod_container.log`, a host service `x_y` becomes `x@5fy.log`;
/// two services never share a file, and the name never leaves the log
/// directory.
pub fn log_file_name(service: &str) -> String {
    let mut name = upkeep_spec::names::path_component(service);
    name.push_str(".log");
    name
}

/// `<dir>/<log_file_name(service)>`.
pub fn log_path(dir: &Path, service: &str) -> PathBuf {
    dir.join(log_file_name(service))
}

/// An open service log file.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    file: File,
    max_size: u64,
    max_files: u32,
}

impl LogFile {
    /// Opens (creating 0640 if missing) `<dir>/<name>.log` for appending.
    /// `max_size` is the rotation threshold in bytes (0 = never rotate);
    /// `max_files` is how many rotated files (`.1` .. `.max_files`) are kept
    /// (0 = none: rotation just empties the live file).
    pub fn open(dir: &Path, service: &str, max_size: u64, max_files: u32) -> io::Result<LogFile> {
        let path = log_path(dir, service);
        let file = open_append(&path)?;
        Ok(LogFile {
            path,
            file,
            max_size,
            max_files,
        })
    }

    /// The live file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new descriptor of the log file for a child's stdout/stderr.
    pub fn fd(&self) -> io::Result<OwnedFd> {
        Ok(OwnedFd::from(self.file.try_clone()?))
    }

    /// Current size of the live file.
    pub fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    /// Reopens the file if it was deleted or replaced behind our back.
    pub fn reopen_if_replaced(&mut self) -> io::Result<()> {
        let on_disk = fs::metadata(&self.path).ok();
        let ours = self.file.metadata()?;
        let replaced = match &on_disk {
            Some(m) => m.ino() != ours.ino() || m.dev() != ours.dev(),
            None => true,
        };
        if replaced {
            self.file = open_append(&self.path)?;
        }
        Ok(())
    }

    /// For a log without a [`Rotator`], before each spawn: reopens the file
    /// if it was replaced, and if it is over `max_size`, shifts `name.log.N`
    /// to `.N+1` (dropping the oldest), renames the live file to `.1` and
    /// opens a fresh one. Returns whether it rotated.
    pub fn rotate_if_needed(&mut self) -> io::Result<bool> {
        self.reopen_if_replaced()?;
        if self.max_size == 0 || self.size()? <= self.max_size {
            return Ok(false);
        }
        if self.max_files == 0 {
            self.file.set_len(0)?;
            return Ok(true);
        }
        self.shift_rotated()?;
        fs::rename(&self.path, self.rotated(1))?;
        self.file = open_append(&self.path)?;
        Ok(true)
    }

    /// For a process that runs for a long time: if the live file has reached
    /// `max_size`, [`copy_truncate`]s it (the running process keeps its
    /// descriptor). Returns whether it rotated. A failed copy (full disk)
    /// still truncates; only a failure to truncate is an error.
    pub fn truncate_rotate(&mut self) -> io::Result<bool> {
        if self.max_size == 0 || self.size()? < self.max_size {
            return Ok(false);
        }
        copy_truncate(&self.path, self.max_size, self.max_files)?;
        Ok(true)
    }

    fn rotated(&self, n: u32) -> PathBuf {
        rotator::rotated_path(&self.path, n)
    }

    fn shift_rotated(&self) -> io::Result<()> {
        rotator::shift_rotated(&self.path, self.max_files)
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("log file {}: {e}", path.display())))
}

/// The stdout/stderr descriptor for a spawn, and why it is `/dev/null` if it is.
#[derive(Debug, Default)]
pub struct SpawnOutput {
    /// The log file or journal stream, to hand to the child as stdout and
    /// stderr; `None` means `/dev/null` (or upkeep's own, with `inherit`).
    pub fd: Option<OwnedFd>,
    /// `log = "inherit"`: the child shares upkeep's stdout and stderr.
    pub inherit: bool,
    /// Set when something went wrong (the caller logs it at warning level).
    pub warning: Option<String>,
}

impl SpawnOutput {
    /// As a [`crate::spawn::Output`] for a [`crate::spawn::SpawnRequest`].
    pub fn as_output(&self) -> crate::spawn::Output<'_> {
        match &self.fd {
            Some(fd) => crate::spawn::Output::Fd(std::os::fd::AsFd::as_fd(fd)),
            None if self.inherit => crate::spawn::Output::Inherit,
            None => crate::spawn::Output::Null,
        }
    }
}

/// What every service log shares: the directory, the size limits and the
/// rotation thread.
#[derive(Debug, Clone)]
pub struct Logs {
    dir: PathBuf,
    max_size: u64,
    max_files: u32,
    rotator: Option<Rotator>,
    journal_socket: PathBuf,
}

impl Logs {
    /// Starts the rotation thread for `dir` (without it, files are rotated
    /// only at spawn, with a warning). Dropped bytes are published in `shared`.
    pub fn new(
        dir: &Path,
        max_size: u64,
        max_files: u32,
        shared: Option<std::sync::Arc<upkeep_core::snapshot::Shared>>,
    ) -> Logs {
        let rotator = match Rotator::start(dir, shared) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!("log rotation thread not started ({e}): logs are rotated only when a service restarts");
                None
            }
        };
        Logs {
            dir: dir.to_path_buf(),
            max_size,
            max_files,
            rotator,
            journal_socket: PathBuf::from(journal::STDOUT_SOCKET),
        }
    }

    /// Uses `socket` instead of journald's usual stream socket (tests).
    pub fn with_journal_socket(mut self, socket: &Path) -> Logs {
        self.journal_socket = socket.to_path_buf();
        self
    }

    /// The log of `service` in `mode`.
    pub fn service(&self, service: &str, mode: LogMode) -> ServiceLog {
        let mut log = ServiceLog::new(&self.dir, service, self.max_size, self.max_files);
        log.mode = mode;
        log.rotator = self.rotator.clone();
        log.journal_socket = self.journal_socket.clone();
        if mode == LogMode::File {
            log.watch();
        }
        log
    }

    /// Asks the rotation thread to check every file now.
    pub fn check_all(&self) {
        if let Some(r) = &self.rotator {
            r.check_all();
        }
    }
}

/// A service's log as the supervisor holds it: never fails, retries opening
/// the file (or the journal stream) at each spawn.
#[derive(Debug)]
pub struct ServiceLog {
    dir: PathBuf,
    service: String,
    max_size: u64,
    max_files: u32,
    mode: LogMode,
    file: Option<LogFile>,
    rotator: Option<Rotator>,
    registration: Option<Registration>,
    journal_socket: PathBuf,
    /// The journal was unavailable at the last spawn (warned once).
    journal_failed: bool,
}

impl ServiceLog {
    /// A `file` log without a rotation thread (rotated by rename at spawn);
    /// nothing is opened yet. See [`Logs::service`] for the supervisor's.
    pub fn new(dir: &Path, service: &str, max_size: u64, max_files: u32) -> ServiceLog {
        ServiceLog {
            dir: dir.to_path_buf(),
            service: service.to_string(),
            max_size,
            max_files,
            mode: LogMode::File,
            file: None,
            rotator: None,
            registration: None,
            journal_socket: PathBuf::from(journal::STDOUT_SOCKET),
            journal_failed: false,
        }
    }

    /// The live file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(log_file_name(&self.service))
    }

    /// The descriptor(s) to give the child for this spawn, per the log mode.
    /// `journal` connects a new stream (one per process, as systemd does) and
    /// falls back to the file with a warning, once, when journald is not
    /// there. `file` opens the file if needed. Any failure yields `/dev/null`
    /// plus a warning.
    pub fn output(&mut self) -> SpawnOutput {
        match self.mode {
            LogMode::Inherit => SpawnOutput {
                inherit: true,
                ..SpawnOutput::default()
            },
            LogMode::Journal => {
                match journal::connect_at(&self.journal_socket, &self.service) {
                    Ok(fd) => {
                        self.journal_failed = false;
                        SpawnOutput {
                            fd: Some(fd),
                            ..SpawnOutput::default()
                        }
                    }
                    Err(e) => {
                        let first = !self.journal_failed;
                        self.journal_failed = true;
                        let mut out = self.file_output();
                        if first {
                            let to = if out.fd.is_some() {
                                self.path().display().to_string()
                            } else {
                                "/dev/null".to_string()
                            };
                            let w = format!("log = \"journal\": {e}; output goes to {to} until journald is back");
                            out.warning = Some(match out.warning {
                                Some(more) => format!("{w} ({more})"),
                                None => w,
                            });
                        }
                        out
                    }
                }
            }
            LogMode::File => self.file_output(),
        }
    }

    fn file_output(&mut self) -> SpawnOutput {
        let mut warning = None;
        if self.file.is_none() {
            match LogFile::open(&self.dir, &self.service, self.max_size, self.max_files) {
                Ok(f) => self.file = Some(f),
                Err(e) => warning = Some(format!("{e}; output goes to /dev/null")),
            }
        }
        if let Some(file) = &mut self.file {
            match &self.rotator {
                // The rotation thread owns rotation; the file may have been
                // replaced (logrotate, an operator) since the last spawn.
                Some(r) => {
                    if self.registration.is_none() {
                        self.registration = Some(r.register(
                            &self.service,
                            file.path(),
                            self.max_size,
                            self.max_files,
                        ));
                    }
                    if let Err(e) = file.reopen_if_replaced() {
                        warning = Some(format!("reopening {}: {e}", file.path().display()));
                    }
                }
                None => {
                    if let Err(e) = file.rotate_if_needed() {
                        warning = Some(format!("rotating {}: {e}", file.path().display()));
                    }
                }
            }
            match file.fd() {
                Ok(fd) => {
                    return SpawnOutput {
                        fd: Some(fd),
                        inherit: false,
                        warning,
                    }
                }
                Err(e) => {
                    warning = Some(format!(
                        "log file {}: {e}; output goes to /dev/null",
                        file.path().display()
                    ));
                    self.file = None;
                }
            }
        }
        SpawnOutput {
            fd: None,
            inherit: false,
            warning,
        }
    }

    /// Keeps the file within its bound from now on, before any spawn (an
    /// adopted process keeps writing to it). No-op without a rotation thread
    /// or outside `file` mode.
    pub fn watch(&mut self) {
        if self.registration.is_some() || self.mode == LogMode::Inherit {
            return;
        }
        if let Some(r) = &self.rotator {
            self.registration =
                Some(r.register(&self.service, &self.path(), self.max_size, self.max_files));
        }
    }

    /// [`LogFile::truncate_rotate`] on the open file (no-op if none is open).
    pub fn truncate_rotate(&mut self) -> io::Result<bool> {
        match &mut self.file {
            Some(f) => f.truncate_rotate(),
            None => Ok(false),
        }
    }
}

/// `/dev/null` opened for writing.
pub fn null_output() -> io::Result<OwnedFd> {
    Ok(OwnedFd::from(
        OpenOptions::new().write(true).open("/dev/null")?,
    ))
}

/// The last `n` lines of `path` (without their newlines; invalid UTF-8
/// replaced). Reads backwards from the end, so a huge file costs little.
pub fn tail(path: &Path, n: usize) -> io::Result<Vec<String>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    if n == 0 || len == 0 {
        return Ok(Vec::new());
    }
    const CHUNK: u64 = 64 * 1024;
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = len;
    loop {
        let start = pos.saturating_sub(CHUNK);
        let mut chunk = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
        pos = start;
        let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if pos == 0 || body.iter().filter(|&&b| b == b'\n').count() >= n {
            break;
        }
    }
    let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
    let mut lines: Vec<String> = body
        .rsplit(|&b| b == b'\n')
        .take(n)
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    // With at least n newlines in `body`, the last n pieces are whole lines.
    lines.reverse();
    Ok(lines)
}

/// Follows a log file like `tail -F`: [`Follower::poll`] returns the complete
/// lines appended since the last call, starting over when the file is
/// truncated and switching to the new file when it is rotated (inode change)
/// after draining the old one.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    ino: u64,
    pos: u64,
    partial: Vec<u8>,
}

impl Follower {
    /// Starts at the current end of the file (a missing file is waited for).
    pub fn from_end(path: &Path) -> io::Result<Follower> {
        let mut f = Follower {
            path: path.to_path_buf(),
            file: None,
            ino: 0,
            pos: 0,
            partial: Vec::new(),
        };
        if let Ok(file) = File::open(path) {
            let meta = file.metadata()?;
            f.ino = meta.ino();
            f.pos = meta.len();
            f.file = Some(file);
        }
        Ok(f)
    }

    /// Starts at the beginning of the file.
    pub fn from_start(path: &Path) -> io::Result<Follower> {
        let mut f = Self::from_end(path)?;
        f.pos = 0;
        Ok(f)
    }

    /// New complete lines since the last call. Call it periodically (the CLI
    /// polls every 200 ms or so).
    pub fn poll(&mut self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        if self.file.is_some() {
            self.read_new(&mut out)?;
        }
        // Rotated away (new inode at the path) or deleted and recreated?
        if let Ok(meta) = fs::metadata(&self.path) {
            if self.file.is_none() || meta.ino() != self.ino {
                if let Ok(file) = File::open(&self.path) {
                    // The old file is drained above; a partial line from it
                    // is finished by nothing, so flush it.
                    if !self.partial.is_empty() {
                        out.push(String::from_utf8_lossy(&self.partial).into_owned());
                        self.partial.clear();
                    }
                    self.ino = file.metadata()?.ino();
                    self.pos = 0;
                    self.file = Some(file);
                    self.read_new(&mut out)?;
                }
            }
        }
        Ok(out)
    }

    fn read_new(&mut self, out: &mut Vec<String>) -> io::Result<()> {
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        let len = file.metadata()?.len();
        if len < self.pos {
            // Truncated (copytruncate rotation): start over.
            self.pos = 0;
            self.partial.clear();
        }
        if len == self.pos {
            return Ok(());
        }
        file.seek(SeekFrom::Start(self.pos))?;
        let mut data = Vec::new();
        file.take(len - self.pos).read_to_end(&mut data)?;
        self.pos += data.len() as u64;
        self.partial.extend_from_slice(&data);
        if let Some(last_nl) = self.partial.iter().rposition(|&b| b == b'\n') {
            let rest = self.partial.split_off(last_nl + 1);
            for line in self.partial[..last_nl].split(|&b| b == b'\n') {
                out.push(String::from_utf8_lossy(line).into_owned());
            }
            self.partial = rest;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_stay_in_the_directory() {
        assert_eq!(log_file_name("etcd-node1/etcd"), "etcd-node1_etcd.log");
        assert_eq!(log_file_name("kubelet"), "kubelet.log");
        assert_eq!(log_file_name("../../etc/passwd"), "@2e._.._etc_passwd.log");
        assert_eq!(log_file_name(".hidden"), "@2ehidden.log");
        assert_eq!(log_file_name(""), "@.log");
        // A host service `x_y` and container `y` of pod `x` never share a file.
        assert_eq!(log_file_name("x_y"), "x@5fy.log");
        assert_ne!(log_file_name("x_y"), log_file_name("x/y"));
    }
}
