//! Reads what a service uses, at the moment it is asked (scrape time), from
//! the best source the host has (docs/metrics.md, "Resource usage"):
//!
//! - CPU and pressure (PSI): the generation leaf's cgroup2 `cpu.stat` and
//!   `{cpu,memory,io}.pressure`, which cgroup2 keeps whether or not a
//!   controller is enabled;
//! - memory and OOM kills: the service's cgroup2 `memory.*` files where the
//!   memory controller is enabled there, else its v1 `memory` group (hybrid
//!   hosts, when it has a memory limit), else the sum over its processes of
//!   `/proc/PID/statm`;
//! - storage I/O: cgroup2 `io.stat` where the io controller is enabled, else
//!   the sum over its processes of `/proc/PID/io`.
//!
//! Every read is a few small files; a file that cannot be read leaves its
//! figure out (`None`), it is never an error.
//!
//! A scrape reads about 7 files for each of up to hundreds of services, so
//! each file costs as few system calls as the kernel allows (docs/benchmarks.md,
//! "/metrics with per-service resource usage"). Opening a cgroup file is
//! the expensive part (kernfs: a path walk that cannot stay lockless, and an
//! open file plus a page of buffer to set up and tear down), so the reader
//! opens the files of a process generation once, at its first read, and
//! keeps them: each later read of one is a single `pread` at offset 0, which
//! makes the kernel print the file afresh. That covers the generation's
//! cgroup files and `/proc/PID/{statm,io,stat}` of its main process (they
//! stay bound to that process: a reused pid is never read by mistake); other
//! processes of the service are read by path. What a generation has (which
//! memory and I/O source, PSI files) is found at that first read too. The
//! values are still read from the kernel at every call.
//!
//! Kept descriptors are bounded by a budget: at most a quarter of the soft
//! open-files limit in force ([`Budget`]), so the reader can never starve a
//! spawn (or anything else) of descriptors. upkeep raises its soft limit to
//! the hard limit at start-up ([`crate::nofile`]), under which every service
//! fits; a generation that does not fit is read by opening each file by
//! path, as before, and keeps nothing. A generation's descriptors are
//! released when its process is replaced or its service stops
//! ([`UsageReader::retain`] after each scrape), and the budget follows the
//! soft limit at every scrape.

use crate::cgroup::{cgroup_dir_name, CgroupRoot};
use rustix::fs::{Mode, OFlags};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use upkeep_core::usage::{Pressure, Usage, UsageReader};

/// The host's usage reader: cgroups where there are some, `/proc` otherwise.
#[derive(Debug, Clone)]
pub struct HostUsage {
    /// cgroup2 mount point.
    v2_mount: Option<PathBuf>,
    /// `<v2 mount>/<prefix>`: the service cgroups' parent.
    v2_dir: Option<PathBuf>,
    /// `<v1 memory mount>/<prefix>`, on hybrid hosts.
    v1_memory_dir: Option<PathBuf>,
    node_name: String,
    ticks_per_second: f64,
    page_size: u64,
    /// The soft open-files limit in force (the budget's base; tests inject
    /// their own).
    soft_limit: fn() -> Option<u64>,
    /// Files kept open per service, the budget, and the read buffer.
    cache: Arc<Mutex<Cache>>,
}

thread_local! {
    /// Each reading thread's buffer and path scratch.
    static SCRATCH: std::cell::RefCell<(Vec<u8>, String)> = std::cell::RefCell::default();
}

/// What [`HostUsage`] keeps between reads.
#[derive(Default)]
struct Cache {
    /// Shared with reads under way, which read outside the lock.
    services: HashMap<String, Arc<Gen>>,
    budget: Budget,
}

impl Cache {
    /// Removes `service`'s generation from the map and gives its
    /// descriptors back to the budget. The caller drops it once the lock is
    /// released, which closes them (unless a read under way still holds it).
    fn forget(&mut self, service: &str) -> Option<Arc<Gen>> {
        let g = self.services.remove(service)?;
        self.budget.give_back(g.kept_count());
        Some(g)
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("services", &self.services.len())
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// How many descriptors the reader may keep open: a fraction of the soft
/// open-files limit in force, so that it never holds more than a quarter
/// of what upkeep may open (with a 1024 limit: 256, the other 768 stay for
/// log files, pidfds, probes, spawns). Pure bookkeeping, no I/O.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Budget {
    /// Descriptors it may keep.
    limit: usize,
    /// Descriptors kept now.
    kept: usize,
}

impl Budget {
    /// The share of the soft limit that kept descriptors may take: 1/4.
    const DIVISOR: u64 = 4;

    /// The limit for a soft open-files limit of `soft` (`None`: unlimited,
    /// which Linux does not allow for open files; then its default
    /// ceiling, `fs.nr_open` = 1048576, is assumed).
    fn limit_for(soft: Option<u64>) -> usize {
        let soft = soft.unwrap_or(1 << 20);
        usize::try_from(soft / Self::DIVISOR).unwrap_or(usize::MAX)
    }

    /// Follows a new soft limit. Descriptors kept beyond the new limit are
    /// [`Budget::excess`] until given back.
    fn set_soft_limit(&mut self, soft: Option<u64>) {
        self.limit = Self::limit_for(soft);
    }

    /// True if `n` more descriptors may be kept.
    fn fits(&self, n: usize) -> bool {
        self.kept.saturating_add(n) <= self.limit
    }

    /// Counts `n` more kept descriptors; callers check [`Budget::fits`]
    /// first.
    fn take(&mut self, n: usize) {
        self.kept = self.kept.saturating_add(n);
    }

    /// Counts `n` descriptors closed.
    fn give_back(&mut self, n: usize) {
        self.kept = self.kept.saturating_sub(n);
    }

    /// Descriptors kept beyond the limit (after the soft limit went down).
    fn excess(&self) -> usize {
        self.kept.saturating_sub(self.limit)
    }
}

/// The directories a generation's files live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// The generation's cgroup2 leaf.
    Leaf,
    /// The service's cgroup2 directory (memory and io controller files).
    Service,
    /// The service's v1 `memory` group (hybrid hosts).
    V1Memory,
    /// `/proc/PID` of the main process.
    Proc,
}

/// Every file the reader may read for a generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum File {
    CpuStat,
    Procs,
    CpuPressure,
    MemoryPressure,
    IoPressure,
    MemoryCurrent,
    MemoryStat,
    MemoryEvents,
    IoStat,
    V1Usage,
    V1Stat,
    V1OomControl,
    Stat,
    Statm,
    Io,
}

/// How many [`File`]s there are.
const FILES: usize = 15;

impl File {
    fn dir(self) -> Dir {
        match self {
            File::CpuStat
            | File::Procs
            | File::CpuPressure
            | File::MemoryPressure
            | File::IoPressure => Dir::Leaf,
            File::MemoryCurrent | File::MemoryStat | File::MemoryEvents | File::IoStat => {
                Dir::Service
            }
            File::V1Usage | File::V1Stat | File::V1OomControl => Dir::V1Memory,
            File::Stat | File::Statm | File::Io => Dir::Proc,
        }
    }

    fn name(self) -> &'static str {
        match self {
            File::CpuStat => "cpu.stat",
            File::Procs => "cgroup.procs",
            File::CpuPressure => "cpu.pressure",
            File::MemoryPressure => "memory.pressure",
            File::IoPressure => "io.pressure",
            File::MemoryCurrent => "memory.current",
            File::MemoryStat | File::V1Stat => "memory.stat",
            File::MemoryEvents => "memory.events",
            File::IoStat => "io.stat",
            File::V1Usage => "memory.usage_in_bytes",
            File::V1OomControl => "memory.oom_control",
            File::Stat => "stat",
            File::Statm => "statm",
            File::Io => "io",
        }
    }

    fn bit(self) -> u32 {
        1 << self as u32
    }

    /// The kernel prints the file in one piece (one `seq_file` record,
    /// which the first read at offset 0 returns whole): every file here
    /// but `cgroup.procs` (one record per process, a page at a time).
    fn one_record(self) -> bool {
        self != File::Procs
    }
}

/// One process generation of a service: where its files are, which it
/// has, and their descriptors while they fit in the budget.
struct Gen {
    /// The generation (cgroup leaf, main process).
    cgroup: Option<String>,
    pid: Option<u32>,
    /// The paths of its directories, by [`Dir`] (`None`: it has none).
    dirs: [Option<String>; 4],
    /// The files it has ([`File::bit`]), found at its first read.
    has: u32,
    /// Its files' descriptors (by [`File`]), all of them or none.
    kept: Option<Box<[Option<OwnedFd>; FILES]>>,
}

impl Gen {
    fn is_for(&self, cgroup: Option<&str>, pid: Option<u32>) -> bool {
        self.cgroup.as_deref() == cgroup && self.pid == pid
    }

    fn has(&self, f: File) -> bool {
        self.has & f.bit() != 0
    }

    /// The descriptors it would keep.
    fn wants(&self) -> usize {
        self.has.count_ones() as usize
    }

    /// The descriptors it keeps.
    fn kept_count(&self) -> usize {
        self.kept
            .as_ref()
            .map_or(0, |k| k.iter().filter(|f| f.is_some()).count())
    }

    fn dir_path(&self, d: Dir) -> Option<&str> {
        self.dirs[d as usize].as_deref()
    }

    /// Opens file `f` by its path.
    fn open(&self, f: File, path: &mut String) -> Option<OwnedFd> {
        path.clear();
        let _ = write!(path, "{}/{}", self.dir_path(f.dir())?, f.name());
        open_file(path)
    }
}

fn open_file(path: &str) -> Option<OwnedFd> {
    rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()
}

/// Reads an open file whole into `buf`, from offset 0 (`pread`: a kept
/// file's `seq_file` prints its content again). `Err` if it cannot be read,
/// `Ok(None)` if it is not text.
///
/// With `one_record` (see [`File::one_record`]) a read that does not fill
/// the buffer has it all, and the read that would return 0 is saved;
/// otherwise it reads until a read returns 0.
fn read_fd<'b>(
    fd: BorrowedFd<'_>,
    one_record: bool,
    buf: &'b mut Vec<u8>,
) -> Result<Option<&'b str>, rustix::io::Errno> {
    if buf.len() < 4096 {
        buf.resize(4096, 0);
    }
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match rustix::io::pread(fd, &mut buf[len..], len as u64) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if one_record && len < buf.len() {
                    break;
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(std::str::from_utf8(&buf[..len]).ok())
}

/// Reads the file at `path` whole into `buf`: one `open`, then reads into
/// the reused buffer as [`read_fd`] does.
fn read_path<'b>(path: &str, one_record: bool, buf: &'b mut Vec<u8>) -> Option<&'b str> {
    let fd = open_file(path)?;
    read_fd(fd.as_fd(), one_record, buf).ok().flatten()
}

/// Reads file `f` of generation `g`: its kept descriptor, else by path.
/// A kept descriptor that cannot be read (its cgroup was removed, its
/// process is gone) sets `stale`: the generation is opened again at its
/// next read.
fn read_file<'b>(
    g: &Gen,
    f: File,
    stale: &mut bool,
    path: &mut String,
    buf: &'b mut Vec<u8>,
) -> Option<&'b str> {
    if !g.has(f) {
        return None;
    }
    match &g.kept {
        Some(kept) => {
            let fd = kept[f as usize].as_ref()?;
            match read_fd(fd.as_fd(), f.one_record(), buf) {
                Ok(text) => text,
                Err(_) => {
                    *stale = true;
                    None
                }
            }
        }
        None => {
            let fd = g.open(f, path)?;
            read_fd(fd.as_fd(), f.one_record(), buf).ok().flatten()
        }
    }
}

impl HostUsage {
    /// A reader over the cgroups of `root` (or `/proc` alone without one).
    pub fn new(root: Option<&CgroupRoot>, node_name: &str) -> Self {
        Self::with_soft_limit(root, node_name, crate::nofile::soft_limit)
    }

    /// [`HostUsage::new`] with the source of the soft open-files limit
    /// (tests inject their own); the budget follows it from the start and
    /// again at every [`UsageReader::retain`].
    fn with_soft_limit(
        root: Option<&CgroupRoot>,
        node_name: &str,
        soft_limit: fn() -> Option<u64>,
    ) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let ticks_per_second = match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
            Ok(Some(t)) if t > 0 => t as f64,
            _ => 100.0,
        };
        let v2_mount = root.and_then(|r| r.layout().v2.clone());
        let v2_dir = root.map(|r| r.v2_dir().to_path_buf());
        let prefix = match (&v2_mount, &v2_dir) {
            (Some(m), Some(d)) => d.strip_prefix(m).ok().map(Path::to_path_buf),
            _ => None,
        };
        let v1_memory_dir = match (root, &prefix) {
            (Some(r), Some(p)) => r.layout().v1.get("memory").map(|m| m.join(p)),
            _ => None,
        };
        let page_size = match nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE) {
            Ok(Some(p)) if p > 0 => p as u64,
            _ => 4096,
        };
        HostUsage {
            page_size,
            v2_mount,
            v2_dir,
            v1_memory_dir,
            node_name: node_name.to_string(),
            ticks_per_second,
            soft_limit,
            cache: Arc::new(Mutex::new(Cache {
                budget: Budget {
                    limit: Budget::limit_for(soft_limit()),
                    kept: 0,
                },
                ..Cache::default()
            })),
        }
    }

    /// How many descriptors the reader keeps open now (at most a quarter
    /// of the soft open-files limit).
    pub fn kept_descriptors(&self) -> usize {
        self.lock().budget.kept
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The kept generation of `service` if it is the one asked for and
    /// needs nothing opened (a generation read by path for want of budget
    /// is opened again once there is room for it).
    fn current(&self, service: &str, cgroup: Option<&str>, pid: Option<u32>) -> Option<Arc<Gen>> {
        let cache = self.lock();
        let g = cache.services.get(service)?;
        if !g.is_for(cgroup, pid) || (g.kept.is_none() && cache.budget.fits(g.wants())) {
            return None;
        }
        Some(Arc::clone(g))
    }

    /// Opens the generation asked for (outside the lock), then puts it in
    /// the map in place of the last one, keeping its descriptors if they
    /// fit in the budget. The descriptors given up are closed after the
    /// lock is released.
    fn replace(
        &self,
        service: &str,
        cgroup: Option<&str>,
        pid: Option<u32>,
        path: &mut String,
    ) -> Arc<Gen> {
        let mut g = self.open(service, cgroup, pid, path);
        let mut closing: Vec<Arc<Gen>> = Vec::new();
        let mut unkept = None;
        let g = {
            let mut cache = self.lock();
            match cache.services.get(service) {
                // Another read put it there meanwhile: use that one.
                Some(cur) if cur.is_for(cgroup, pid) && cur.kept.is_some() => {
                    unkept = g.kept.take();
                    Arc::clone(cur)
                }
                _ => {
                    closing.extend(cache.forget(service));
                    let n = g.kept_count();
                    if cache.budget.fits(n) {
                        cache.budget.take(n);
                    } else {
                        unkept = g.kept.take();
                    }
                    let g = Arc::new(g);
                    cache.services.insert(service.to_string(), Arc::clone(&g));
                    g
                }
            }
        };
        drop(unkept);
        drop(closing);
        g
    }

    fn leaf_dir(&self, cgroup: Option<&str>) -> Option<PathBuf> {
        let rel = cgroup?.trim_start_matches('/');
        Some(self.v2_mount.as_ref()?.join(rel))
    }

    /// The service's v2 directory if its memory controller is enabled.
    fn v2_memory(&self, service: &str) -> Option<PathBuf> {
        let dir = self.v2_dir.as_ref()?.join(cgroup_dir_name(service));
        dir.join("memory.current").exists().then_some(dir)
    }

    fn v1_memory(&self, service: &str) -> Option<PathBuf> {
        let dir = self.v1_memory_dir.as_ref()?.join(cgroup_dir_name(service));
        dir.is_dir().then_some(dir)
    }

    /// Finds what a generation has by opening its files, and holds their
    /// descriptors (the caller keeps them if they fit in the budget).
    fn open(
        &self,
        service: &str,
        cgroup: Option<&str>,
        pid: Option<u32>,
        path: &mut String,
    ) -> Gen {
        let text = |p: PathBuf| p.into_os_string().into_string().ok();
        let mut g = Gen {
            cgroup: cgroup.map(str::to_string),
            pid,
            dirs: [
                self.leaf_dir(cgroup).and_then(text),
                self.v2_dir
                    .as_ref()
                    .map(|d| d.join(cgroup_dir_name(service)))
                    .and_then(text),
                self.v1_memory_dir
                    .as_ref()
                    .map(|d| d.join(cgroup_dir_name(service)))
                    .and_then(text),
                pid.map(|p| format!("/proc/{p}")),
            ],
            has: 0,
            kept: None,
        };
        let mut fds: Box<[Option<OwnedFd>; FILES]> = Box::default();
        let mut try_open = |g: &mut Gen, f: File| -> bool {
            match g.open(f, path) {
                Some(fd) => {
                    fds[f as usize] = Some(fd);
                    g.has |= f.bit();
                    true
                }
                None => false,
            }
        };
        let cpu_v2 = try_open(&mut g, File::CpuStat);
        try_open(&mut g, File::Procs);
        for f in [File::CpuPressure, File::MemoryPressure, File::IoPressure] {
            try_open(&mut g, f);
        }
        let memory_cgroup = if try_open(&mut g, File::MemoryCurrent) {
            for f in [File::MemoryStat, File::MemoryEvents] {
                try_open(&mut g, f);
            }
            true
        } else if try_open(&mut g, File::V1Usage) {
            for f in [File::V1Stat, File::V1OomControl] {
                try_open(&mut g, f);
            }
            true
        } else {
            false
        };
        let io_v2 = try_open(&mut g, File::IoStat);
        // The main process's own files, for what no cgroup file gives.
        if !cpu_v2 {
            try_open(&mut g, File::Stat);
        }
        if !memory_cgroup {
            try_open(&mut g, File::Statm);
        }
        if !io_v2 {
            try_open(&mut g, File::Io);
        }
        g.kept = Some(fds);
        g
    }
}

/// Reads `f` (a `/proc/PID` file) of process `p`: through the generation
/// when `p` is its main process and it has the file, else by path.
fn read_proc<'b>(
    p: u32,
    f: File,
    g: &Gen,
    stale: &mut bool,
    path: &mut String,
    buf: &'b mut Vec<u8>,
) -> Option<&'b str> {
    if g.pid == Some(p) && g.has(f) {
        return read_file(g, f, stale, path, buf);
    }
    path.clear();
    let _ = write!(path, "/proc/{p}/{}", f.name());
    read_path(path, true, buf)
}

/// The value of `key` in a flat-keyed cgroup file (`usage_usec 123`).
pub fn flat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some(key)).then(|| w.next()?.parse().ok())?
    })
}

/// The `total=` values (microseconds) of a PSI file, as seconds. A file
/// without a `full` line (cpu on older kernels) reads as 0 stalled.
#[allow(clippy::cast_precision_loss)]
pub fn parse_pressure(text: &str) -> Option<Pressure> {
    let total = |kind: &str| {
        text.lines()
            .find(|l| l.starts_with(kind))?
            .split_whitespace()
            .find_map(|w| w.strip_prefix("total="))?
            .parse::<u64>()
            .ok()
    };
    Some(Pressure {
        waiting: total("some ")? as f64 / 1e6,
        stalled: total("full ").unwrap_or(0) as f64 / 1e6,
    })
}

/// Sums `rbytes=` and `wbytes=` over the devices of a cgroup2 `io.stat`.
pub fn parse_io_stat(text: &str) -> (u64, u64) {
    let mut r = 0u64;
    let mut w = 0u64;
    for word in text.split_whitespace() {
        if let Some(v) = word.strip_prefix("rbytes=") {
            r = r.saturating_add(v.parse().unwrap_or(0));
        } else if let Some(v) = word.strip_prefix("wbytes=") {
            w = w.saturating_add(v.parse().unwrap_or(0));
        }
    }
    (r, w)
}

/// A `Key:   N kB` line of `/proc/PID/status`, in bytes (or a plain
/// `key: N` line of `/proc/PID/io`).
pub fn proc_value(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split(':').next() == Some(key))?;
    let mut words = line.split(':').nth(1)?.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    match words.next() {
        Some("kB") => n.checked_mul(1024),
        _ => Some(n),
    }
}

/// `(resident, shared)` pages from `/proc/PID/statm`.
pub fn parse_statm(text: &str) -> Option<(u64, u64)> {
    let mut w = text.split_whitespace().skip(1);
    Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
}

/// utime + stime (clock ticks) from `/proc/PID/stat` (fields counted from
/// the last `)`, as the command name may hold spaces).
pub fn proc_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The processes of the generation: its leaf's `cgroup.procs`, else the
/// main process alone.
fn procs(g: &Gen, stale: &mut bool, path: &mut String, buf: &mut Vec<u8>) -> Vec<u32> {
    match read_file(g, File::Procs, stale, path, buf) {
        Some(s) => s.lines().filter_map(|l| l.trim().parse().ok()).collect(),
        None => g.pid.into_iter().collect(),
    }
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn parsed(text: Option<&str>) -> Option<u64> {
    text?.trim().parse().ok()
}

impl HostUsage {
    /// Reads the usage of one generation; `stale` is set if a kept file
    /// could not be read.
    #[allow(clippy::cast_precision_loss)]
    fn read_gen(&self, g: &Gen, stale: &mut bool, buf: &mut Vec<u8>, path: &mut String) -> Usage {
        let mut u = Usage::default();
        let pid = g.pid;
        // cgroup.procs, read at most once per call.
        let mut procs_read: Option<Vec<u32>> = None;

        // CPU: cgroup2 keeps cpu.stat for every cgroup.
        if let Some(us) =
            read_file(g, File::CpuStat, stale, path, buf).and_then(|t| flat_value(t, "usage_usec"))
        {
            u.cpu_seconds = Some(us as f64 / 1e6);
        } else {
            let ps = procs_read
                .take()
                .unwrap_or_else(|| procs(g, stale, path, buf));
            let ticks: u64 = ps
                .iter()
                .filter_map(|&p| {
                    read_proc(p, File::Stat, g, stale, path, buf).and_then(proc_cpu_ticks)
                })
                .sum();
            procs_read = Some(ps);
            if pid.is_some() {
                u.cpu_seconds = Some(ticks as f64 / self.ticks_per_second);
            }
        }

        // Memory and OOM kills.
        if g.has(File::MemoryCurrent) {
            let current = parsed(read_file(g, File::MemoryCurrent, stale, path, buf));
            let (inactive, anon) =
                read_file(g, File::MemoryStat, stale, path, buf).map_or((0, None), |s| {
                    (
                        flat_value(s, "inactive_file").unwrap_or(0),
                        flat_value(s, "anon"),
                    )
                });
            u.memory_working_set_bytes = current.map(|c: u64| c.saturating_sub(inactive));
            u.memory_rss_bytes = anon;
            u.oom_events = read_file(g, File::MemoryEvents, stale, path, buf)
                .and_then(|t| flat_value(t, "oom_kill"));
        } else if g.has(File::V1Usage) {
            let usage = parsed(read_file(g, File::V1Usage, stale, path, buf));
            let (inactive, rss) =
                read_file(g, File::V1Stat, stale, path, buf).map_or((0, None), |s| {
                    (
                        flat_value(s, "total_inactive_file").unwrap_or(0),
                        flat_value(s, "total_rss"),
                    )
                });
            u.memory_working_set_bytes = usage.map(|c: u64| c.saturating_sub(inactive));
            u.memory_rss_bytes = rss;
            u.oom_events = read_file(g, File::V1OomControl, stale, path, buf)
                .and_then(|t| flat_value(t, "oom_kill"));
        } else if pid.is_some() {
            let ps = procs_read
                .take()
                .unwrap_or_else(|| procs(g, stale, path, buf));
            let (mut ws, mut rss) = (0u64, 0u64);
            for &p in &ps {
                // statm: far cheaper for the kernel to print than status.
                if let Some((res, shared)) =
                    read_proc(p, File::Statm, g, stale, path, buf).and_then(parse_statm)
                {
                    ws = ws.saturating_add(res.saturating_mul(self.page_size));
                    rss = rss
                        .saturating_add(res.saturating_sub(shared).saturating_mul(self.page_size));
                }
            }
            procs_read = Some(ps);
            u.memory_working_set_bytes = Some(ws);
            u.memory_rss_bytes = Some(rss);
        }

        // Storage I/O.
        if let Some((r, w)) = read_file(g, File::IoStat, stale, path, buf).map(parse_io_stat) {
            u.fs_read_bytes = Some(r);
            u.fs_write_bytes = Some(w);
        } else if pid.is_some() {
            let ps = procs_read
                .take()
                .unwrap_or_else(|| procs(g, stale, path, buf));
            let (mut r, mut w) = (0u64, 0u64);
            for &p in &ps {
                if let Some(s) = read_proc(p, File::Io, g, stale, path, buf) {
                    r = r.saturating_add(proc_value(s, "read_bytes").unwrap_or(0));
                    w = w.saturating_add(proc_value(s, "write_bytes").unwrap_or(0));
                }
            }
            u.fs_read_bytes = Some(r);
            u.fs_write_bytes = Some(w);
        }

        // Pressure (PSI), where the kernel has it.
        u.pressure_cpu = read_file(g, File::CpuPressure, stale, path, buf).and_then(parse_pressure);
        u.pressure_memory =
            read_file(g, File::MemoryPressure, stale, path, buf).and_then(parse_pressure);
        u.pressure_io = read_file(g, File::IoPressure, stale, path, buf).and_then(parse_pressure);
        u
    }
}

impl UsageReader for HostUsage {
    fn read(&self, service: &str, cgroup: Option<&str>, pid: Option<u32>) -> Usage {
        // No system call is made under the lock (files are opened, read and
        // closed outside it), so that the two threads of a scrape
        // (`UsageCollector` splits the services between them) never wait
        // for each other: the lock only guards the map and the budget.
        SCRATCH.with(|s| {
            let mut s = s.borrow_mut();
            let (buf, path) = &mut *s;
            let g = match self.current(service, cgroup, pid) {
                Some(g) => g,
                None => self.replace(service, cgroup, pid, path),
            };
            let mut stale = false;
            let u = self.read_gen(&g, &mut stale, buf, path);
            if stale {
                // Opened again at the next read.
                let old = {
                    let mut cache = self.lock();
                    let current = cache
                        .services
                        .get(service)
                        .is_some_and(|cur| Arc::ptr_eq(cur, &g));
                    if current {
                        cache.forget(service)
                    } else {
                        None
                    }
                };
                // Its descriptors are closed here, outside the lock.
                drop(old);
            }
            u
        })
    }

    fn retain(&self, services: &[&str]) {
        let live: std::collections::HashSet<&str> = services.iter().copied().collect();
        let soft = (self.soft_limit)();
        // Closed after the lock is released.
        let mut closing: Vec<Arc<Gen>> = Vec::new();
        {
            let mut cache = self.lock();
            let gone: Vec<String> = cache
                .services
                .keys()
                .filter(|name| !live.contains(name.as_str()))
                .cloned()
                .collect();
            for name in gone {
                closing.extend(cache.forget(&name));
            }
            // The budget follows the soft limit; what no longer fits is read
            // by path from now on.
            cache.budget.set_soft_limit(soft);
            if cache.budget.excess() > 0 {
                // Forgotten, so opened again (by path, or kept if there is
                // room) at their next read.
                let drop: Vec<String> = cache
                    .services
                    .iter()
                    .filter(|(_, g)| g.kept.is_some())
                    .scan(cache.budget.excess(), |left, (name, g)| {
                        (*left > 0).then(|| {
                            *left = left.saturating_sub(g.kept_count());
                            name.clone()
                        })
                    })
                    .collect();
                for name in drop {
                    closing.extend(cache.forget(&name));
                }
            }
        }
        drop(closing);
    }

    fn oom_kills(&self, service: &str) -> Option<u64> {
        if let Some(dir) = self.v2_memory(service) {
            return read(&dir.join("memory.events")).and_then(|t| flat_value(&t, "oom_kill"));
        }
        let dir = self.v1_memory(service)?;
        read(&dir.join("memory.oom_control")).and_then(|t| flat_value(&t, "oom_kill"))
    }

    fn node_name(&self) -> &str {
        &self.node_name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_keyed_values() {
        let cpu = "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\n";
        assert_eq!(flat_value(cpu, "usage_usec"), Some(1_500_000));
        assert_eq!(flat_value(cpu, "usage"), None);
        let oom = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(flat_value(oom, "oom_kill"), Some(2));
    }

    #[test]
    fn pressure_totals_in_seconds() {
        let p = "some avg10=0.00 avg60=0.00 avg300=0.00 total=2500000\n\
                 full avg10=0.00 avg60=0.00 avg300=0.00 total=1000000\n";
        assert_eq!(
            parse_pressure(p),
            Some(Pressure {
                waiting: 2.5,
                stalled: 1.0
            })
        );
        let no_full = "some avg10=0.00 avg60=0.00 avg300=0.00 total=10\n";
        assert_eq!(parse_pressure(no_full).map(|p| p.stalled), Some(0.0));
        assert_eq!(parse_pressure(""), None);
    }

    #[test]
    fn io_stat_sums_devices() {
        let t = "8:0 rbytes=100 wbytes=20 rios=1 wios=1 dbytes=0 dios=0\n\
                 8:16 rbytes=5 wbytes=7 rios=1 wios=1 dbytes=0 dios=0\n";
        assert_eq!(parse_io_stat(t), (105, 27));
    }

    #[test]
    fn proc_files() {
        let status = "Name:\tx\nVmRSS:\t    2048 kB\nRssAnon:\t    1024 kB\n";
        assert_eq!(proc_value(status, "VmRSS"), Some(2048 * 1024));
        assert_eq!(proc_value(status, "RssAnon"), Some(1024 * 1024));
        let io = "rchar: 1\nwchar: 2\nread_bytes: 4096\nwrite_bytes: 8192\n";
        assert_eq!(proc_value(io, "read_bytes"), Some(4096));
        assert_eq!(proc_value(io, "write_bytes"), Some(8192));
        assert_eq!(parse_statm("2000 300 100 10 0 500 0\n"), Some((300, 100)));
        let stat = "42 (a (b) c) R 1 42 42 0 -1 0 0 0 0 0 250 75 0 0 20 0 1 0 100 0 0";
        assert_eq!(proc_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn the_budget_is_a_quarter_of_the_soft_limit() {
        assert_eq!(Budget::limit_for(Some(1024)), 256);
        assert_eq!(Budget::limit_for(Some(256)), 64);
        assert_eq!(Budget::limit_for(Some(3)), 0);
        assert_eq!(Budget::limit_for(None), 1 << 18);

        // 1024 (the raise failed, or hard = soft = 1024): 7 descriptors per
        // service (a hybrid host, no memory cgroup), 36 services keep
        // theirs, the others are read by path; at least 768 stay free.
        let mut b = Budget::default();
        b.set_soft_limit(Some(1024));
        let mut kept_services = 0;
        for _ in 0..100 {
            if b.fits(7) {
                b.take(7);
                kept_services += 1;
            }
        }
        assert_eq!(kept_services, 36);
        assert_eq!(b.kept, 252);
        assert!(1024 - b.kept >= 768);
        assert!(!b.fits(7));
        assert!(b.fits(4), "a smaller generation still fits");

        // A service stops: its descriptors make room for another.
        b.give_back(7);
        assert!(b.fits(7));

        // The raised limit (systemd's default hard limit): every one of 100
        // services keeps its files, even with a memory cgroup (11 each, more than a generation keeps).
        let mut b = Budget::default();
        b.set_soft_limit(Some(524_288));
        for _ in 0..100 {
            assert!(b.fits(11));
            b.take(11);
        }
        assert_eq!(b.excess(), 0);

        // The soft limit goes down under what is kept: the excess is what
        // must be closed.
        b.set_soft_limit(Some(1024));
        assert_eq!(b.excess(), 1100 - 256);
        b.give_back(1100 - 256);
        assert_eq!(b.excess(), 0);
        assert!(!b.fits(1));
        // Never below zero.
        b.give_back(10_000);
        assert_eq!(b.kept, 0);
    }

    #[test]
    fn files_are_kept_within_the_budget_and_read_by_path_beyond_it() {
        // /proc only (no cgroups): the main process's stat, statm and io,
        // here this test process's own.
        let me = std::process::id();
        // Soft limit 8: a budget of 2, the generation's 3 files do not fit.
        let mut r = HostUsage::with_soft_limit(None, "node", || Some(8));
        let by_path = r.read("svc", None, Some(me));
        assert_eq!(r.kept_descriptors(), 0);
        assert!(by_path.cpu_seconds.is_some(), "{by_path:?}");
        assert!(
            by_path.memory_working_set_bytes.unwrap_or(0) > 0,
            "{by_path:?}"
        );
        assert!(by_path.fs_read_bytes.is_some(), "{by_path:?}");

        // Soft limit 12: a budget of 3, kept from the next read on (the
        // budget follows the limit at each scrape's retain).
        r.soft_limit = || Some(12);
        r.retain(&["svc"]);
        let kept = r.read("svc", None, Some(me));
        assert_eq!(r.kept_descriptors(), 3);
        // The same figures known either way.
        let known = |u: &Usage| {
            [
                u.cpu_seconds.is_some(),
                u.memory_working_set_bytes.is_some(),
                u.memory_rss_bytes.is_some(),
                u.fs_read_bytes.is_some(),
                u.fs_write_bytes.is_some(),
            ]
        };
        assert_eq!(known(&kept), known(&by_path));
        assert!(kept.memory_working_set_bytes.unwrap_or(0) > 0, "{kept:?}");
        // Read again through the kept files: fresh values.
        let again = r.read("svc", None, Some(me));
        assert!(again.cpu_seconds >= kept.cpu_seconds, "{again:?}");
        assert_eq!(r.kept_descriptors(), 3);

        // The limit goes down: the excess is closed at the next retain.
        r.soft_limit = || Some(8);
        r.retain(&["svc"]);
        assert_eq!(r.kept_descriptors(), 0);
        assert!(r.read("svc", None, Some(me)).cpu_seconds.is_some());
        assert_eq!(r.kept_descriptors(), 0);

        // A new generation releases the last one's files; a stopped
        // service releases its own.
        r.soft_limit = || Some(1024);
        r.retain(&["svc"]);
        r.read("svc", None, Some(me));
        r.read("other", None, Some(me));
        assert_eq!(r.kept_descriptors(), 6);
        assert_eq!(r.read("svc", None, None), Usage::default());
        assert_eq!(r.kept_descriptors(), 3);
        r.retain(&["svc"]);
        assert_eq!(r.kept_descriptors(), 0);
    }
}
