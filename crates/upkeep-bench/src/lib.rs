//! upkeep-bench: measures upkeep against monit, supervisord and runit on the
//! same machine in the same run (design.md section 10), and provides the
//! workloads the measurements use.
//!
//! - [`stamp`]: the `stamp` and `http-server` workloads and the stamp-file format.
//! - [`peers`]: config generation for each supervisor and running it.
//! - [`scenarios`]: restart, SIGKILL, etcd, liveness, manifest, endpoints, idle/start.
//! - [`stats`], [`procfs`], [`http`], [`report`]: percentiles, /proc, a tiny
//!   HTTP client, the table and JSON.
//!
//! Nothing here is a test assertion on timing: benchmarks never fail CI.

#![warn(missing_docs)]

pub mod http;
pub mod peers;
pub mod procfs;
pub mod report;
pub mod scenarios;
pub mod stamp;
pub mod stats;

use serde_json::{json, Map, Value};
use std::path::Path;
use std::process::{Command, Stdio};

/// First line of `cmd args...` output (stdout, else stderr), if it ran.
pub fn version_of(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

/// The machine and the versions of everything measured.
pub fn machine_info(upkeep: Option<&Path>) -> Map<String, Value> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let mem_kib = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| {
            v.split_ascii_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        });
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string());
    let dpkg = |pkg: &str| version_of("dpkg-query", &["-W", "-f", "${Version}", pkg]);
    let mut m = Map::new();
    m.insert(
        "nproc".into(),
        json!(std::thread::available_parallelism()
            .map(std::num::NonZero::get)
            .unwrap_or(0)),
    );
    m.insert("cpu".into(), json!(cpu));
    m.insert(
        "mem_gib".into(),
        json!(mem_kib.map(|k| (k as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0)),
    );
    m.insert(
        "kernel".into(),
        json!(read("/proc/sys/kernel/osrelease").trim()),
    );
    m.insert(
        "upkeep".into(),
        json!(upkeep.and_then(|p| version_of(&p.to_string_lossy(), &["--version"]))),
    );
    m.insert("monit".into(), json!(version_of("monit", &["-V"])));
    m.insert(
        "supervisord".into(),
        json!(version_of("supervisord", &["-v"])),
    );
    m.insert("runit".into(), json!(dpkg("runit")));
    m.insert("etcd".into(), json!(version_of("etcd", &["--version"])));
    m.insert("wrk".into(), json!(version_of("wrk", &["-v"])));
    m
}
