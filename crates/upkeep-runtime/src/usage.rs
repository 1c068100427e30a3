//! Reads what a service uses, at the moment it is asked (scrape time), from
//! the best source the host has (docs/metrics.md, "Resource usage"):
//!
//! - CPU and pressure (PSI): the generation leaf's cgroup2 `cpu.stat` and
//!   `{cpu,memory,io}.pressure`, which cgroup2 keeps whether or not a
//!   controller is enabled;
//! - memory and OOM kills: the service's cgroup2 `memory.*` files where the
//!   memory controller is enabled there, else its v1 `memory` group (hybrid
//!   hosts, when it has a memory limit), else the sum over its processes of
//!   `/proc/PID/status`;
//! - storage I/O: cgroup2 `io.stat` where the io controller is enabled, else
//!   the sum over its processes of `/proc/PID/io`.
//!
//! Every read is a few small files; a file that cannot be read leaves its
//! figure out (`None`), it is never an error.
//!
//! A scrape reads about 8 files for each of up to hundreds of services, so
//! each file costs as few system calls as the kernel allows (docs/benchmarks.md,
//! "/metrics with per-service resource usage"): the reader keeps, per
//! service and process generation, the directories it reads from open
//! (`O_PATH`: the generation leaf, the service's cgroup where it has memory
//! or io files, its v1 `memory` group, `/proc/PID` of the main process), so
//! a file is one `openat` of a single name, one `read` into a reused buffer
//! and a `close`; what a generation has
//! (which memory and I/O source, PSI files) is found once, when its
//! directories are opened, not at every scrape. The values are still read
//! from the kernel at every call.

use crate::cgroup::{cgroup_dir_name, CgroupRoot};
use rustix::fs::{Access, AtFlags, Mode, OFlags};
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
    /// Directories kept open per service, and the read buffer.
    cache: Arc<Mutex<Cache>>,
}

/// What [`HostUsage`] keeps between reads.
#[derive(Default)]
struct Cache {
    services: HashMap<String, Dirs>,
    buf: Vec<u8>,
    path: String,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("services", &self.services.len())
            .finish_non_exhaustive()
    }
}

/// The open directories of one process generation of a service, and what
/// they hold (found when they were opened).
struct Dirs {
    /// The generation they were opened for (cgroup leaf, main process).
    cgroup: Option<String>,
    pid: Option<u32>,
    /// The generation's cgroup2 leaf.
    leaf: Option<OwnedFd>,
    /// The leaf has PSI files (`cpu.pressure`...).
    psi: bool,
    /// The service's cgroup2 directory, kept if it has `memory.*` (memory
    /// controller) or `io.stat` (io controller) files.
    service: Option<OwnedFd>,
    memory_v2: bool,
    io_v2: bool,
    /// The service's v1 `memory` group (hybrid hosts, without `memory_v2`).
    v1_memory: Option<OwnedFd>,
    /// `/proc/PID` of the main process.
    proc_dir: Option<OwnedFd>,
}

impl Dirs {
    fn is_for(&self, cgroup: Option<&str>, pid: Option<u32>) -> bool {
        self.cgroup.as_deref() == cgroup && self.pid == pid
    }
}

fn open_dir(path: &Path) -> Option<OwnedFd> {
    rustix::fs::open(
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
}

fn has(dir: BorrowedFd<'_>, name: &str) -> bool {
    rustix::fs::accessat(dir, name, Access::EXISTS, AtFlags::empty()).is_ok()
}

/// Reads `name` (relative to `dir`) whole into `buf`: one `openat`, then
/// one `read` into the reused buffer. `None` if it cannot be opened or read,
/// or is not text.
///
/// Every file read here but `cgroup.procs` is printed by the kernel in one
/// piece (a single `seq_file` record, which the first read at offset 0
/// produces whole), so a read that does not fill the buffer has it all and
/// the `read` that would return 0 is saved. `cgroup.procs` (one record per
/// process, returned a page at a time) is read until a read returns 0.
fn read_at<'b>(dir: BorrowedFd<'_>, name: &str, buf: &'b mut Vec<u8>) -> Option<&'b str> {
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    if buf.len() < 4096 {
        buf.resize(4096, 0);
    }
    let one_record = name != "cgroup.procs";
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match rustix::io::read(&fd, &mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if one_record && len < buf.len() {
                    break;
                }
            }
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return None,
        }
    }
    std::str::from_utf8(&buf[..len]).ok()
}

impl HostUsage {
    /// A reader over the cgroups of `root` (or `/proc` alone without one).
    pub fn new(root: Option<&CgroupRoot>, node_name: &str) -> Self {
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
            cache: Arc::default(),
        }
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

    /// Opens the directories of a generation and finds what they hold.
    fn open(&self, service: &str, cgroup: Option<&str>, pid: Option<u32>) -> Dirs {
        let leaf = self.leaf_dir(cgroup).and_then(|p| open_dir(&p));
        let psi = leaf
            .as_ref()
            .is_some_and(|l| has(l.as_fd(), "cpu.pressure"));
        let service_dir = self
            .v2_dir
            .as_ref()
            .and_then(|d| open_dir(&d.join(cgroup_dir_name(service))));
        let memory_v2 = service_dir
            .as_ref()
            .is_some_and(|d| has(d.as_fd(), "memory.current"));
        let io_v2 = service_dir
            .as_ref()
            .is_some_and(|d| has(d.as_fd(), "io.stat"));
        let v1_memory = if memory_v2 {
            None
        } else {
            self.v1_memory_dir
                .as_ref()
                .and_then(|m| open_dir(&m.join(cgroup_dir_name(service))))
        };
        Dirs {
            cgroup: cgroup.map(str::to_string),
            pid,
            leaf,
            psi,
            service: service_dir.filter(|_| memory_v2 || io_v2),
            memory_v2,
            io_v2,
            v1_memory,
            proc_dir: pid.and_then(|p| open_dir(Path::new(&format!("/proc/{p}")))),
        }
    }
}

/// Reads `name` of process `p`: through the kept `/proc/PID` of the main
/// process, else by its path.
fn read_proc<'b>(
    p: u32,
    name: &str,
    main: Option<(u32, BorrowedFd<'_>)>,
    path: &mut String,
    buf: &'b mut Vec<u8>,
) -> Option<&'b str> {
    match main {
        Some((m, dir)) if m == p => read_at(dir, name, buf),
        _ => {
            path.clear();
            let _ = write!(path, "/proc/{p}/{name}");
            read_at(rustix::fs::CWD, path, buf)
        }
    }
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

/// A v1 limit of "no limit" reads as a huge number (page-rounded `i64::MAX`).
fn v1_limit(v: u64) -> Option<u64> {
    (v < (1u64 << 62)).then_some(v)
}

/// The processes of the generation: its leaf's `cgroup.procs`, else the
/// main process alone.
fn procs(leaf: Option<BorrowedFd<'_>>, pid: Option<u32>, buf: &mut Vec<u8>) -> Vec<u32> {
    match leaf.and_then(|l| read_at(l, "cgroup.procs", buf)) {
        Some(s) => s.lines().filter_map(|l| l.trim().parse().ok()).collect(),
        None => pid.into_iter().collect(),
    }
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

fn parsed(text: Option<&str>) -> Option<u64> {
    text?.trim().parse().ok()
}

impl HostUsage {
    /// Reads the usage of one generation through its open directories.
    #[allow(clippy::cast_precision_loss)]
    fn read_dirs(&self, d: &Dirs, pid: Option<u32>, buf: &mut Vec<u8>, path: &mut String) -> Usage {
        let mut u = Usage::default();
        let leaf = d.leaf.as_ref().map(AsFd::as_fd);
        let main = pid.zip(d.proc_dir.as_ref().map(AsFd::as_fd));
        // cgroup.procs, read at most once per call.
        let mut procs_read: Option<Vec<u32>> = None;

        // CPU: cgroup2 keeps cpu.stat for every cgroup.
        if let Some(us) = leaf
            .and_then(|l| read_at(l, "cpu.stat", buf))
            .and_then(|t| flat_value(t, "usage_usec"))
        {
            u.cpu_seconds = Some(us as f64 / 1e6);
            u.sources.push("cpu: cgroup v2 cpu.stat".into());
        } else {
            let ps = procs_read.take().unwrap_or_else(|| procs(leaf, pid, buf));
            let ticks: u64 = ps
                .iter()
                .filter_map(|&p| read_proc(p, "stat", main, path, buf).and_then(proc_cpu_ticks))
                .sum();
            procs_read = Some(ps);
            if pid.is_some() {
                u.cpu_seconds = Some(ticks as f64 / self.ticks_per_second);
                u.sources
                    .push("cpu: /proc/PID/stat of its processes".into());
            }
        }

        // Memory and OOM kills.
        if let (true, Some(dir)) = (d.memory_v2, d.service.as_ref().map(AsFd::as_fd)) {
            let current = parsed(read_at(dir, "memory.current", buf));
            let (inactive, anon) = read_at(dir, "memory.stat", buf).map_or((0, None), |s| {
                (
                    flat_value(s, "inactive_file").unwrap_or(0),
                    flat_value(s, "anon"),
                )
            });
            u.memory_working_set_bytes = current.map(|c: u64| c.saturating_sub(inactive));
            u.memory_rss_bytes = anon;
            u.memory_limit_bytes = parsed(read_at(dir, "memory.max", buf));
            u.oom_events =
                read_at(dir, "memory.events", buf).and_then(|t| flat_value(t, "oom_kill"));
            u.sources.push("memory: cgroup v2 memory controller".into());
        } else if let Some(dir) = d.v1_memory.as_ref().map(AsFd::as_fd) {
            let usage = parsed(read_at(dir, "memory.usage_in_bytes", buf));
            let (inactive, rss) = read_at(dir, "memory.stat", buf).map_or((0, None), |s| {
                (
                    flat_value(s, "total_inactive_file").unwrap_or(0),
                    flat_value(s, "total_rss"),
                )
            });
            u.memory_working_set_bytes = usage.map(|c: u64| c.saturating_sub(inactive));
            u.memory_rss_bytes = rss;
            u.memory_limit_bytes =
                parsed(read_at(dir, "memory.limit_in_bytes", buf)).and_then(v1_limit);
            u.oom_events =
                read_at(dir, "memory.oom_control", buf).and_then(|t| flat_value(t, "oom_kill"));
            u.sources.push("memory: cgroup v1 memory controller".into());
        } else if pid.is_some() {
            let ps = procs_read.take().unwrap_or_else(|| procs(leaf, pid, buf));
            let (mut ws, mut rss) = (0u64, 0u64);
            for &p in &ps {
                // statm: far cheaper for the kernel to print than status.
                if let Some((res, shared)) =
                    read_proc(p, "statm", main, path, buf).and_then(parse_statm)
                {
                    ws = ws.saturating_add(res.saturating_mul(self.page_size));
                    rss = rss
                        .saturating_add(res.saturating_sub(shared).saturating_mul(self.page_size));
                }
            }
            procs_read = Some(ps);
            u.memory_working_set_bytes = Some(ws);
            u.memory_rss_bytes = Some(rss);
            u.sources.push(
                "memory: /proc/PID/statm of its processes (resident, resident - shared)".into(),
            );
        }

        // Storage I/O.
        let io_stat = match (d.io_v2, d.service.as_ref()) {
            (true, Some(dir)) => read_at(dir.as_fd(), "io.stat", buf).map(parse_io_stat),
            _ => None,
        };
        if let Some((r, w)) = io_stat {
            u.fs_read_bytes = Some(r);
            u.fs_write_bytes = Some(w);
            u.sources.push("io: cgroup v2 io.stat".into());
        } else if pid.is_some() {
            let ps = procs_read.take().unwrap_or_else(|| procs(leaf, pid, buf));
            let (mut r, mut w) = (0u64, 0u64);
            for &p in &ps {
                if let Some(s) = read_proc(p, "io", main, path, buf) {
                    r = r.saturating_add(proc_value(s, "read_bytes").unwrap_or(0));
                    w = w.saturating_add(proc_value(s, "write_bytes").unwrap_or(0));
                }
            }
            u.fs_read_bytes = Some(r);
            u.fs_write_bytes = Some(w);
            u.sources.push("io: /proc/PID/io of its processes".into());
        }

        // Pressure (PSI), where the kernel has it.
        if let (true, Some(l)) = (d.psi, leaf) {
            u.pressure_cpu = read_at(l, "cpu.pressure", buf).and_then(parse_pressure);
            u.pressure_memory = read_at(l, "memory.pressure", buf).and_then(parse_pressure);
            u.pressure_io = read_at(l, "io.pressure", buf).and_then(parse_pressure);
        }
        u
    }
}

impl UsageReader for HostUsage {
    fn read(&self, service: &str, cgroup: Option<&str>, pid: Option<u32>) -> Usage {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        let Cache {
            services,
            buf,
            path,
        } = &mut *cache;
        if !services.get(service).is_some_and(|d| d.is_for(cgroup, pid)) {
            // A new generation (or a first read): open its directories.
            services.insert(service.to_string(), self.open(service, cgroup, pid));
        }
        match services.get(service) {
            Some(d) => self.read_dirs(d, pid, buf, path),
            None => Usage::default(),
        }
    }

    fn retain(&self, services: &[&str]) {
        let live: std::collections::HashSet<&str> = services.iter().copied().collect();
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        cache
            .services
            .retain(|name, _| live.contains(name.as_str()));
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
    fn v1_unlimited_is_none() {
        assert_eq!(v1_limit(9_223_372_036_854_771_712), None);
        assert_eq!(v1_limit(50 << 20), Some(50 << 20));
    }
}
