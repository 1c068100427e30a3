//! The log rotation thread: keeps every service log file within
//! `(max_files + 1) × max_size` plus a small slack, off the supervision thread.
//!
//! One dedicated OS thread (`upkeep-logs`) owns all rotation. It learns of
//! writes through one inotify watch on the log directory (`IN_MODIFY`, via the
//! notify crate), so an idle node costs no wake-ups; where inotify is not
//! available it polls every [`POLL_INTERVAL`]. When a registered file has
//! reached `max_size` it is rotated by [`copy_truncate`]: `.N-1` -> `.N`, the
//! newest `max_size` bytes copied to `.1`, the live file truncated in place
//! (services write with `O_APPEND` and carry on at offset 0). When the copy is
//! impossible (full disk), the live file is truncated anyway: old output is
//! dropped, never the service, and the drop is counted
//! (`upkeep_log_dropped_bytes_total{service}`) and logged once.
//!
//! The supervision thread only sends messages (register, unregister) over a
//! channel and never waits for this thread.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};
use upkeep_core::snapshot::Shared;

/// How often files are checked when inotify cannot watch the log directory.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Copy unit: between two chunks the copy checks whether the live file has
/// outgrown twice `max_size`, and if so gives up copying and truncates.
pub const COPY_CHUNK: u64 = 1024 * 1024;
/// At most one "cannot keep rotated output" warning per service this often.
pub const WARN_INTERVAL: Duration = Duration::from_secs(3600);
/// Messages handled before the pending checks run (a flood of inotify events
/// must not delay the checks themselves).
const MAX_BATCH: usize = 4096;

/// What one [`copy_truncate`] did.
#[derive(Debug, Default)]
pub struct Rotation {
    /// Bytes kept in the new `.1`.
    pub kept: u64,
    /// Bytes of output that are in no file any more: the part beyond the
    /// newest `max_size` bytes, what was written between the end of the copy
    /// and the truncation, and everything when the copy failed. Output
    /// written in the instant between the last size check and the truncation
    /// is lost without being counted (no syscall truncates and reports the
    /// size it cut).
    pub dropped: u64,
    /// Why nothing (or only part) could be kept, if so.
    pub copy_error: Option<io::Error>,
}

/// Rotates the log at `path` now: shifts `.1`.. `.max_files-1` up by one
/// (dropping `.max_files`), copies the newest `max_size` bytes of the live
/// file to `.1` (no fsync: rotated output is not worth stalling a disk for)
/// and truncates the live file in place. The copy is abandoned, keeping what
/// was copied, once the live file grows past `2 × max_size` during it. A
/// failed copy (full disk) removes the partial `.1` and still truncates.
/// An error is returned only when the live file cannot be opened or truncated.
pub fn copy_truncate(path: &Path, max_size: u64, max_files: u32) -> io::Result<Rotation> {
    let live = OpenOptions::new().read(true).write(true).open(path)?;
    let len0 = live.metadata()?.len();
    let mut out = Rotation::default();
    if max_files > 0 {
        let dest = rotated_path(path, 1);
        let copied =
            shift_rotated(path, max_files).and_then(|()| copy_newest(&live, len0, max_size, &dest));
        match copied {
            Ok(n) => out.kept = n,
            Err(e) => {
                let _ = fs::remove_file(&dest);
                out.copy_error = Some(e);
            }
        }
    }
    let before = live.metadata()?.len();
    live.set_len(0)?;
    out.dropped = before.saturating_sub(out.kept);
    Ok(out)
}

/// Copies the newest `max_size` bytes of the first `len` bytes of `live` to a
/// fresh `dest`, in [`COPY_CHUNK`] pieces (`copy_file_range` under `io::copy`).
fn copy_newest(live: &File, len: u64, max_size: u64, dest: &Path) -> io::Result<u64> {
    let start = len.saturating_sub(max_size);
    let mut src = live;
    src.seek(SeekFrom::Start(start))?;
    let mut out = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(dest)?;
    let mut copied = 0u64;
    while start + copied < len {
        let want = (len - start - copied).min(COPY_CHUNK);
        let n = io::copy(&mut src.take(want), &mut out)?;
        if n == 0 {
            break; // truncated behind our back
        }
        copied += n;
        if live.metadata()?.len() > max_size.saturating_mul(2) {
            break; // the writer outruns the copy: keep the bound, not the copy
        }
    }
    Ok(copied)
}

/// `path` with `.n` appended.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// `.N-1` -> `.N`, ..., `.1` -> `.2`; the file at `.max_files` is replaced.
pub(super) fn shift_rotated(path: &Path, max_files: u32) -> io::Result<()> {
    for n in (1..max_files).rev() {
        match fs::rename(rotated_path(path, n), rotated_path(path, n + 1)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

enum Msg {
    Register {
        id: u64,
        path: PathBuf,
        service: String,
        max_size: u64,
        max_files: u32,
    },
    Unregister(u64),
    Changed(PathBuf),
    CheckAll,
    Stop,
}

/// A handle on the rotation thread; cheap to clone. The thread ends when the
/// last handle is dropped.
#[derive(Clone, Debug)]
pub struct Rotator {
    inner: Arc<Handle>,
}

#[derive(Debug)]
struct Handle {
    tx: mpsc::Sender<Msg>,
    next_id: AtomicU64,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let _ = self.tx.send(Msg::Stop);
    }
}

/// A file under watch; dropping it stops the watch (the file stays).
#[derive(Debug)]
pub struct Registration {
    id: u64,
    rotator: Rotator,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let _ = self.rotator.inner.tx.send(Msg::Unregister(self.id));
    }
}

impl Rotator {
    /// Starts the rotation thread watching `dir`. Dropped bytes are published
    /// in `shared`'s snapshot (`log_dropped_bytes`) when given.
    pub fn start(dir: &Path, shared: Option<Arc<Shared>>) -> io::Result<Rotator> {
        let (tx, rx) = mpsc::channel();
        let worker = Worker {
            dir: dir.to_path_buf(),
            tx: tx.clone(),
            shared,
            files: HashMap::new(),
            ids: HashMap::new(),
            dropped: BTreeMap::new(),
            watcher: None,
        };
        std::thread::Builder::new()
            .name("upkeep-logs".into())
            .spawn(move || worker.run(rx))?;
        Ok(Rotator {
            inner: Arc::new(Handle {
                tx,
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// Keeps the file at `path` (the log of `service`) within its bound until
    /// the returned registration is dropped. The file need not exist yet.
    pub fn register(
        &self,
        service: &str,
        path: &Path,
        max_size: u64,
        max_files: u32,
    ) -> Registration {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let _ = self.inner.tx.send(Msg::Register {
            id,
            path: path.to_path_buf(),
            service: service.to_string(),
            max_size,
            max_files,
        });
        Registration {
            id,
            rotator: self.clone(),
        }
    }

    /// Asks for a check of every registered file (as a safety net).
    pub fn check_all(&self) {
        let _ = self.inner.tx.send(Msg::CheckAll);
    }
}

struct Watched {
    service: String,
    max_size: u64,
    max_files: u32,
    ids: Vec<u64>,
    last_warning: Option<Instant>,
}

struct Worker {
    dir: PathBuf,
    tx: mpsc::Sender<Msg>,
    shared: Option<Arc<Shared>>,
    files: HashMap<PathBuf, Watched>,
    ids: HashMap<u64, PathBuf>,
    dropped: BTreeMap<String, u64>,
    watcher: Option<notify::RecommendedWatcher>,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Msg>) {
        raise_priority();
        self.watch();
        let mut dirty: HashSet<PathBuf> = HashSet::new();
        loop {
            let first = if self.watcher.is_some() {
                rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected)
            } else {
                rx.recv_timeout(POLL_INTERVAL)
            };
            match first {
                Ok(m) => {
                    if !self.handle(m, &mut dirty) {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    self.watch();
                    dirty.extend(self.files.keys().cloned());
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            for _ in 0..MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => {
                        if !self.handle(m, &mut dirty) {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            for path in dirty.drain() {
                self.check(&path);
            }
        }
    }

    /// Places the directory watch; without it the loop polls.
    fn watch(&mut self) {
        use notify::Watcher;
        if self.watcher.is_some() {
            return;
        }
        let tx = self.tx.clone();
        let handler = move |res: notify::Result<notify::Event>| match res {
            Ok(ev) if ev.need_rescan() => {
                let _ = tx.send(Msg::CheckAll);
            }
            Ok(ev) if !ev.kind.is_access() => {
                for p in ev.paths {
                    let _ = tx.send(Msg::Changed(p));
                }
            }
            Ok(_) => {}
            Err(_) => {
                let _ = tx.send(Msg::CheckAll);
            }
        };
        match notify::recommended_watcher(handler) {
            Ok(mut w) => match w.watch(&self.dir, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watcher = Some(w);
                    // Writes before the watch existed went unseen.
                    let _ = self.tx.send(Msg::CheckAll);
                }
                Err(e) => debug!(
                    "cannot watch {}: {e}; checking log sizes every {:?}",
                    self.dir.display(),
                    POLL_INTERVAL
                ),
            },
            Err(e) => {
                debug!("inotify unavailable: {e}; checking log sizes every {POLL_INTERVAL:?}")
            }
        }
    }

    /// Returns false on `Stop`.
    fn handle(&mut self, m: Msg, dirty: &mut HashSet<PathBuf>) -> bool {
        match m {
            Msg::Register {
                id,
                path,
                service,
                max_size,
                max_files,
            } => {
                let w = self.files.entry(path.clone()).or_insert_with(|| Watched {
                    service: service.clone(),
                    max_size,
                    max_files,
                    ids: Vec::new(),
                    last_warning: None,
                });
                w.service = service;
                w.max_size = max_size;
                w.max_files = max_files;
                w.ids.push(id);
                self.ids.insert(id, path.clone());
                dirty.insert(path);
            }
            Msg::Unregister(id) => {
                if let Some(path) = self.ids.remove(&id) {
                    if let Some(w) = self.files.get_mut(&path) {
                        w.ids.retain(|i| *i != id);
                        if w.ids.is_empty() {
                            self.files.remove(&path);
                        }
                    }
                }
            }
            Msg::Changed(p) => {
                if self.files.contains_key(&p) {
                    dirty.insert(p);
                }
            }
            Msg::CheckAll => dirty.extend(self.files.keys().cloned()),
            Msg::Stop => return false,
        }
        true
    }

    fn check(&mut self, path: &Path) {
        let Some(w) = self.files.get_mut(path) else {
            return;
        };
        let len = match fs::metadata(path) {
            Ok(m) if m.is_file() => m.len(),
            _ => return,
        };
        if w.max_size == 0 || len < w.max_size {
            return;
        }
        let t0 = Instant::now();
        let r = match copy_truncate(path, w.max_size, w.max_files) {
            Ok(r) => r,
            Err(e) => {
                if w.last_warning.is_none_or(|t| t.elapsed() >= WARN_INTERVAL) {
                    w.last_warning = Some(Instant::now());
                    warn!(service = %w.service, "log {}: cannot rotate: {e}", path.display());
                }
                return;
            }
        };
        debug!(
            service = %w.service,
            kept = r.kept,
            dropped = r.dropped,
            "rotated {} in {:?}",
            path.display(),
            t0.elapsed()
        );
        if let Some(e) = &r.copy_error {
            if w.last_warning.is_none_or(|t| t.elapsed() >= WARN_INTERVAL) {
                w.last_warning = Some(Instant::now());
                warn!(
                    service = %w.service,
                    "log {}: cannot keep rotated output ({e}): dropping old output to keep the log \
                     within its size bound (counted in upkeep_log_dropped_bytes_total; \
                     said at most once an hour)",
                    path.display()
                );
            }
        }
        if r.dropped > 0 {
            let service = w.service.clone();
            let total = self.dropped.entry(service.clone()).or_default();
            *total += r.dropped;
            let total = *total;
            if let Some(shared) = &self.shared {
                let mut snap = shared.snapshot.write().unwrap_or_else(|p| p.into_inner());
                snap.log_dropped_bytes.insert(service, total);
            }
        }
    }
}

/// Rotation runs at a slightly higher priority than the services (whose
/// write rate it must keep up with); failing to get it changes nothing else.
fn raise_priority() {
    crate::spawn::set_thread_priority(-5);
}
