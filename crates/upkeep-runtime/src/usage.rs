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

use crate::cgroup::{cgroup_dir_name, CgroupRoot};
use std::fs;
use std::path::{Path, PathBuf};
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

    fn procs(leaf: Option<&Path>, pid: Option<u32>) -> Vec<u32> {
        match leaf.and_then(|l| fs::read_to_string(l.join("cgroup.procs")).ok()) {
            Some(s) => s.lines().filter_map(|l| l.trim().parse().ok()).collect(),
            None => pid.into_iter().collect(),
        }
    }
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
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

impl UsageReader for HostUsage {
    #[allow(clippy::cast_precision_loss)]
    fn read(&self, service: &str, cgroup: Option<&str>, pid: Option<u32>) -> Usage {
        let mut u = Usage::default();
        let leaf = self.leaf_dir(cgroup);
        let leaf = leaf.as_deref();
        let mut procs: Option<Vec<u32>> = None;
        let mut procs = || procs.get_or_insert_with(|| Self::procs(leaf, pid)).clone();

        // CPU: cgroup2 keeps cpu.stat for every cgroup.
        if let Some(us) = leaf
            .and_then(|l| read(&l.join("cpu.stat")))
            .and_then(|t| flat_value(&t, "usage_usec"))
        {
            u.cpu_seconds = Some(us as f64 / 1e6);
            u.sources.push("cpu: cgroup v2 cpu.stat".into());
        } else {
            let ticks: u64 = procs()
                .iter()
                .filter_map(|p| read(Path::new(&format!("/proc/{p}/stat"))))
                .filter_map(|s| proc_cpu_ticks(&s))
                .sum();
            if pid.is_some() {
                u.cpu_seconds = Some(ticks as f64 / self.ticks_per_second);
                u.sources
                    .push("cpu: /proc/PID/stat of its processes".into());
            }
        }

        // Memory and OOM kills.
        if let Some(dir) = self.v2_memory(service) {
            let current = read(&dir.join("memory.current")).and_then(|t| t.trim().parse().ok());
            let stat = read(&dir.join("memory.stat")).unwrap_or_default();
            let inactive = flat_value(&stat, "inactive_file").unwrap_or(0);
            u.memory_working_set_bytes = current.map(|c: u64| c.saturating_sub(inactive));
            u.memory_rss_bytes = flat_value(&stat, "anon");
            u.memory_limit_bytes =
                read(&dir.join("memory.max")).and_then(|t| t.trim().parse().ok());
            u.oom_events =
                read(&dir.join("memory.events")).and_then(|t| flat_value(&t, "oom_kill"));
            u.sources.push("memory: cgroup v2 memory controller".into());
        } else if let Some(dir) = self.v1_memory(service) {
            let usage =
                read(&dir.join("memory.usage_in_bytes")).and_then(|t| t.trim().parse().ok());
            let stat = read(&dir.join("memory.stat")).unwrap_or_default();
            let inactive = flat_value(&stat, "total_inactive_file").unwrap_or(0);
            u.memory_working_set_bytes = usage.map(|c: u64| c.saturating_sub(inactive));
            u.memory_rss_bytes = flat_value(&stat, "total_rss");
            u.memory_limit_bytes = read(&dir.join("memory.limit_in_bytes"))
                .and_then(|t| t.trim().parse().ok())
                .and_then(v1_limit);
            u.oom_events =
                read(&dir.join("memory.oom_control")).and_then(|t| flat_value(&t, "oom_kill"));
            u.sources.push("memory: cgroup v1 memory controller".into());
        } else if pid.is_some() {
            let (mut ws, mut rss) = (0u64, 0u64);
            for p in procs() {
                // statm: far cheaper for the kernel to print than status.
                if let Some((res, shared)) =
                    read(Path::new(&format!("/proc/{p}/statm"))).and_then(|s| parse_statm(&s))
                {
                    ws = ws.saturating_add(res.saturating_mul(self.page_size));
                    rss = rss
                        .saturating_add(res.saturating_sub(shared).saturating_mul(self.page_size));
                }
            }
            u.memory_working_set_bytes = Some(ws);
            u.memory_rss_bytes = Some(rss);
            u.sources.push(
                "memory: /proc/PID/statm of its processes (resident, resident - shared)".into(),
            );
        }

        // Storage I/O.
        let io_stat = self
            .v2_dir
            .as_ref()
            .map(|d| d.join(cgroup_dir_name(service)).join("io.stat"))
            .and_then(|p| read(&p));
        if let Some(t) = io_stat {
            let (r, w) = parse_io_stat(&t);
            u.fs_read_bytes = Some(r);
            u.fs_write_bytes = Some(w);
            u.sources.push("io: cgroup v2 io.stat".into());
        } else if pid.is_some() {
            let (mut r, mut w) = (0u64, 0u64);
            for p in procs() {
                if let Some(s) = read(Path::new(&format!("/proc/{p}/io"))) {
                    r = r.saturating_add(proc_value(&s, "read_bytes").unwrap_or(0));
                    w = w.saturating_add(proc_value(&s, "write_bytes").unwrap_or(0));
                }
            }
            u.fs_read_bytes = Some(r);
            u.fs_write_bytes = Some(w);
            u.sources.push("io: /proc/PID/io of its processes".into());
        }

        // Pressure (PSI), where the kernel has it.
        if let Some(l) = leaf {
            u.pressure_cpu = read(&l.join("cpu.pressure")).and_then(|t| parse_pressure(&t));
            u.pressure_memory = read(&l.join("memory.pressure")).and_then(|t| parse_pressure(&t));
            u.pressure_io = read(&l.join("io.pressure")).and_then(|t| parse_pressure(&t));
        }
        u
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
