//! Logs that can never fill a disk or stall supervision (issue #13), with the
//! real binary, real writers and, for `log = "journal"`, the real
//! systemd-journald in a private mount namespace of the test's own.
//!
//! Durations are shorter than the (20 s instead of 60 s, 15 s instead
//! of 30 s): the bound is checked at each 100 ms sample and the writer rotates
//! about 15 times a second, so 20 s is still some 300 rotations; a longer run
//! adds minutes to CI, not force. Timing assertions are on what a busy CI
//! machine cannot move: rotated files are cut at `max_size` (structural),
//! the live file's slack is allowed 50 ms of reaction, and supervision
//! latency is asserted at a high percentile with a hard ceiling far below
//! the stalls of the old design (minutes of copy on the supervision thread,
//! 1.6 s restart gaps). SIGTERM is one sample, allowed 250 ms (the issue's
//! 100 ms plus a scheduling margin).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// The tests that load the machine (a fast writer, a crash loop) run one at
/// a time, so that none measures another's load.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts `d`'s upkeep (optionally under `prefix`, e.g. `nsenter`) with
/// `RUST_LOG=rust_log`, and waits for /health to answer.
fn spawn_with(d: &mut Daemon, prefix: &[&str], rust_log: &str) {
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    let child = cmd
        .args(["run", "--config"])
        .arg(&d.config)
        .env("RUST_LOG", rust_log)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(d.dir.path().join("upkeep.stderr"))
                .unwrap(),
        ))
        .spawn()
        .unwrap();
    d.child = Some(child);
    let port = d.port;
    wait_for("upkeep to answer /health", Duration::from_secs(20), || {
        if let Some(c) = d.child.as_mut() {
            if let Ok(Some(st)) = c.try_wait() {
                panic!("upkeep exited early: {st}\n{}", d.stderr());
            }
        }
        http_get(port, "/health")
    });
}

fn rotated(p: &Path, n: u32) -> PathBuf {
    PathBuf::from(format!("{}.{n}", p.display()))
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// The live file and its rotated copies, summed.
fn total(live: &Path, max_files: u32) -> u64 {
    (1..=max_files)
        .map(|n| size(&rotated(live, n)))
        .sum::<u64>()
        + size(live)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// `upkeep_log_dropped_bytes_total{service="NAME"}` from /metrics.
fn dropped_bytes(port: u16, service: &str) -> u64 {
    let (_, text) = http_get(port, "/metrics").expect("/metrics answers");
    let prefix = format!("upkeep_log_dropped_bytes_total{{service=\"{service}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {prefix} in /metrics:\n{text}"))
        .trim()
        .parse::<f64>()
        .unwrap() as u64
}

/// A writer of 2 MiB of output every 10 ms (at most 200 MiB/s; 100 MiB/s or
/// so here, the rest is its fork/exec), which writes how many MiB it has
/// written to `count` every 16 MiB.
fn paced_writer(count: &Path) -> String {
    format!(
        "[services.writer]\ncommand = [\"/bin/sh\", \"-c\", {:?}]\n",
        format!(
            "i=0; while :; do i=$((i+2)); head -c 2097152 /dev/zero; \
             if [ $((i % 16)) = 0 ]; then echo $i > {}; fi; sleep 0.01; done",
            count.display()
        )
    )
}

/// A zero-backoff crash loop that stamps each start into `starts`.
fn crasher(starts: &Path) -> String {
    format!(
        "[services.crasher]\ncommand = [\"/bin/bash\", \"-c\", {:?}]\nbackoff = {{ initial = \"0s\", max = \"0s\", factor = 1.0, jitter = 0.0 }}\n",
        format!("echo $EPOCHREALTIME >> {}; exit 1", starts.display())
    )
}

#[test]
fn bound_holds_under_a_fast_writer_and_supervision_keeps_time() {
    let _heavy = heavy();
    const MAX_SIZE: u64 = 5 * MIB;
    const MAX_FILES: u32 = 2;
    const RUN: Duration = Duration::from_secs(20);
    let tmp = tempfile::tempdir().unwrap();
    let count = tmp.path().join("count");
    let starts = tmp.path().join("starts");
    let cfg = format!(
        "[logs]\nmax_size = \"5MiB\"\nmax_files = {MAX_FILES}\n\n{}\n{}",
        paced_writer(&count),
        crasher(&starts)
    );
    let mut d = Daemon::prepare(&cfg, &[]);
    spawn_with(&mut d, &[], "info");
    let writer = d.wait_pid("writer", Duration::from_secs(10), |_| true);
    let live = d.logs.join("writer.log");

    // The documented bound and slack (docs/architecture.md, "Logs"): one
    // max_size (the live file may reach 2 × max_size while a copy runs) plus
    // the write rate × the rotation thread's reaction time, taken here as
    // 50 ms: 5 MiB at 100 MiB/s.
    let bound = u64::from(MAX_FILES + 1) * MAX_SIZE;
    let slack = MAX_SIZE + 5 * MIB;
    let t0 = Instant::now();
    let (mut max_total, mut samples, mut livez_ms) = (0u64, 0u32, Vec::new());
    while t0.elapsed() < RUN {
        let tick = Instant::now();
        let t = total(&live, MAX_FILES);
        max_total = max_total.max(t);
        samples += 1;
        assert!(
            t <= bound + slack,
            "log files of writer sum to {t} bytes > bound {bound} + slack {slack} at {:?}",
            t0.elapsed()
        );
        assert!(
            !rotated(&live, MAX_FILES + 1).exists(),
            "only max_files kept"
        );
        let q = Instant::now();
        let (code, _) = http_get(d.port, "/livez").expect("/livez answers");
        livez_ms.push(q.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(code, 200, "/livez at {:?}", t0.elapsed());
        std::thread::sleep(Duration::from_millis(100).saturating_sub(tick.elapsed()));
    }
    let elapsed = t0.elapsed();
    let written_mib: u64 = std::fs::read_to_string(&count)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0);
    let rate = written_mib as f64 / elapsed.as_secs_f64();

    // Supervision did not wait for logs: the crash loop kept its cadence.
    let stamps: Vec<f64> = std::fs::read_to_string(&starts)
        .unwrap()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let mut gaps: Vec<f64> = stamps.windows(2).map(|w| (w[1] - w[0]) * 1000.0).collect();
    gaps.sort_by(f64::total_cmp);
    livez_ms.sort_by(f64::total_cmp);
    let dropped = dropped_bytes(d.port, "writer");
    eprintln!(
        "writer: {rate:.0} MiB/s for {elapsed:?}; max sum of log files {max_total} bytes \
         (bound {bound} + slack {slack}) over {samples} samples; dropped {dropped} bytes; \
         crasher: {} starts, gap p50 {:.1} ms p99 {:.1} ms max {:.1} ms; \
         /livez p50 {:.1} ms p95 {:.1} ms p99 {:.1} ms max {:.1} ms",
        stamps.len(),
        percentile(&gaps, 0.5),
        percentile(&gaps, 0.99),
        gaps[gaps.len() - 1],
        percentile(&livez_ms, 0.5),
        percentile(&livez_ms, 0.95),
        percentile(&livez_ms, 0.99),
        livez_ms[livez_ms.len() - 1],
    );
    assert!(
        written_mib >= 100,
        "the writer wrote only {written_mib} MiB: not a test of rotation"
    );
    // (`.1` may be mid-copy right now; `.2` is replaced by a rename.)
    assert!(size(&rotated(&live, 2)) > 0, "rotated at least twice");
    assert!(
        size(&rotated(&live, 1)) <= MAX_SIZE,
        "rotated files are cut at max_size"
    );
    assert!(
        size(&rotated(&live, 2)) <= MAX_SIZE,
        "rotated files are cut at max_size"
    );
    assert!(stamps.len() >= 200, "only {} crasher starts", stamps.len());
    assert!(
        percentile(&gaps, 0.99) <= 100.0,
        "crasher restart gaps p99 {:.1} ms > 0 backoff + 100 ms",
        percentile(&gaps, 0.99)
    );
    assert!(
        gaps[gaps.len() - 1] <= 1000.0,
        "a restart waited {:.0} ms",
        gaps[gaps.len() - 1]
    );
    // The test's own client shares two cores with the writer, the crash loop
    // and CI: 95% within 50 ms, none slower than a second, every one 200.
    assert!(
        percentile(&livez_ms, 0.95) <= 50.0,
        "/livez p95 {:.1} ms",
        percentile(&livez_ms, 0.95)
    );
    assert!(livez_ms[livez_ms.len() - 1] <= 1000.0);
    // The writer was never restarted for its logs.
    let w = d.service("writer").unwrap();
    assert_eq!(w["pid"].as_u64(), Some(u64::from(writer)), "{w}");
    assert_eq!(w["restarts"], 0, "{w}");

    // SIGTERM is handled at once, rotation and crash loop notwithstanding:
    // the time from the signal to upkeep's line saying it stops.
    let sent = seconds_of_day(std::time::SystemTime::now());
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(30));
    let log = d.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("SIGTERM: stopping"))
        .unwrap_or_else(|| panic!("no SIGTERM line:\n{log}"));
    let handled = line_seconds_of_day(line) - sent;
    let handled_ms = (handled.rem_euclid(86_400.0)) * 1000.0;
    eprintln!("SIGTERM handled after {handled_ms:.1} ms");
    assert!(
        handled_ms <= 250.0,
        "SIGTERM handled after {handled_ms:.1} ms: {line}"
    );
}

/// Seconds since midnight UTC.
fn seconds_of_day(t: std::time::SystemTime) -> f64 {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap();
    (d.as_secs() % 86_400) as f64 + f64::from(d.subsec_micros()) / 1e6
}

/// Seconds since midnight UTC of a log line stamped `2026-11-29T13:49:45.331308Z ...`.
fn line_seconds_of_day(line: &str) -> f64 {
    let stamp = line.split_whitespace().next().unwrap();
    let time = stamp.split_once('T').unwrap().1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next().unwrap().parse().unwrap();
    let m: f64 = parts.next().unwrap().parse().unwrap();
    let s: f64 = parts.next().unwrap().parse().unwrap();
    h * 3600.0 + m * 60.0 + s
}

/// A small tmpfs mounted on a fresh directory, unmounted on drop.
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    fn mount(size: &str) -> SmallTmpfs {
        let dir = tempfile::tempdir().unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(dir.path())
            .status()
            .expect("mount(8)");
        assert!(st.success(), "mounting a tmpfs needs root");
        SmallTmpfs { dir }
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("--lazy")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn full_small_tmpfs_drops_old_output_never_the_service() {
    let _heavy = heavy();
    const MAX_SIZE: u64 = 5 * MIB;
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test mounts a tmpfs: run it as root"
    );
    // 8 MiB of disk: a 5 MiB file can never be copied beside a 5 MiB live
    // file, so every rotation is a truncation.
    let disk = SmallTmpfs::mount("8m");
    let tmp = tempfile::tempdir().unwrap();
    let count = tmp.path().join("count");
    let mut d = Daemon::prepare(
        &format!(
            "[logs]\nmax_size = \"5MiB\"\nmax_files = 2\n\n{}",
            paced_writer(&count)
        ),
        &[],
    );
    let config = std::fs::read_to_string(&d.config).unwrap();
    let config = config.replace(
        &format!("log_dir = {:?}", d.logs),
        &format!("log_dir = {:?}", disk.dir.path()),
    );
    std::fs::write(&d.config, config).unwrap();
    spawn_with(&mut d, &[], "info");
    let writer = d.wait_pid("writer", Duration::from_secs(10), |_| true);
    let live = disk.dir.path().join("writer.log");

    let t0 = Instant::now();
    let mut last_dropped = 0;
    let mut grew = 0;
    while t0.elapsed() < Duration::from_secs(10) {
        let t = total(&live, 2);
        assert!(t <= 3 * MAX_SIZE + MAX_SIZE, "sum {t}");
        let dropped = dropped_bytes(d.port, "writer");
        assert!(dropped >= last_dropped, "a counter never goes down");
        if dropped > last_dropped {
            grew += 1;
        }
        last_dropped = dropped;
        std::thread::sleep(Duration::from_millis(200));
    }
    let warnings = d
        .stderr()
        .lines()
        .filter(|l| l.contains("cannot keep rotated output"))
        .count();
    eprintln!(
        "full tmpfs: dropped {last_dropped} bytes, counter grew at {grew} samples, {warnings} warning(s)"
    );
    assert!(
        last_dropped >= 2 * MAX_SIZE,
        "dropped {last_dropped}\n{}",
        d.stderr()
    );
    assert!(grew >= 2, "the counter keeps growing ({grew})");
    assert_eq!(warnings, 1, "exactly one warning:\n{}", d.stderr());
    assert!(!rotated(&live, 1).exists() || size(&rotated(&live, 1)) <= MAX_SIZE);
    // The service kept running and its output keeps landing.
    let w = d.service("writer").unwrap();
    assert_eq!(w["pid"].as_u64(), Some(u64::from(writer)), "{w}");
    assert_eq!(w["restarts"], 0, "{w}");
    let before = size(&live);
    wait_for(
        "new output in the live file",
        Duration::from_secs(10),
        || (size(&live) != before).then_some(()),
    );
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(10));
    unsafe { libc::kill(-(writer as i32), libc::SIGKILL) };
    // The tmpfs is unmounted once nothing writes to it any more.
    wait_for("the writer to be gone", Duration::from_secs(10), || {
        (!pid_alive(writer)).then_some(())
    });
}

#[test]
fn exit_flood_is_rate_limited_and_names_every_service() {
    let _heavy = heavy();
    const N: usize = 20;
    let mut cfg = String::new();
    for i in 0..N {
        cfg.push_str(&format!(
            "[services.flood-{i:02}]\ncommand = [\"/bin/true\"]\nbackoff = {{ initial = \"0s\", max = \"0s\", factor = 1.0, jitter = 0.0 }}\n\n"
        ));
    }
    let mut d = Daemon::prepare(&cfg, &[]);
    spawn_with(&mut d, &[], "info");
    std::thread::sleep(Duration::from_secs(15));
    let (_, h) = d.health();
    let restarts: Vec<u64> = h["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["restarts"].as_u64().unwrap_or(0))
        .collect();
    let log = d.stderr();
    let lines = log.lines().count();
    eprintln!(
        "exit flood: {} restarts in total, upkeep's own log {lines} lines",
        restarts.iter().sum::<u64>()
    );
    assert_eq!(restarts.len(), N);
    assert!(
        restarts.iter().all(|r| *r >= 50),
        "every service crash-looped: {restarts:?}"
    );
    assert!(lines <= 300, "upkeep logged {lines} lines:\n{log}");
    for i in 0..N {
        let name = format!("flood-{i:02}");
        assert!(
            log.lines()
                .any(|l| l.contains(&name) && l.contains("exited with code 0")),
            "no exit line names {name}:\n{log}"
        );
    }
}

/// A private mount namespace (tmpfs over /run and /var/log/journal) held by
/// a `sleep`, with a stand-alone systemd-journald in it.
struct Journald {
    holder: Child,
    journald: Child,
}

impl Journald {
    fn start() -> Journald {
        assert_eq!(
            unsafe { libc::geteuid() },
            0,
            "this test runs systemd-journald in a mount namespace: run it as root"
        );
        assert!(
            Path::new("/lib/systemd/systemd-journald").exists(),
            "this test needs /lib/systemd/systemd-journald (Debian package systemd)"
        );
        let mut holder = Command::new("unshare")
            .args(["-m", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg(
                "mount -t tmpfs tmpfs /run && \
                 { [ ! -d /var/log/journal ] || mount -t tmpfs tmpfs /var/log/journal; } && \
                 mkdir -p /run/systemd/journal /run/log/journal && echo ready && exec sleep 600",
            )
            .stdout(Stdio::piped())
            .spawn()
            .expect("unshare(1)");
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line.trim(), "ready", "the mount namespace was not set up");
        let journald = Command::new("nsenter")
            .args(["-t", &holder.id().to_string(), "-m", "--"])
            .arg("/lib/systemd/systemd-journald")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nsenter(1)");
        let j = Journald { holder, journald };
        let sock = j.root().join("run/systemd/journal/stdout");
        wait_for("journald's stream socket", Duration::from_secs(20), || {
            sock.exists().then_some(())
        });
        j
    }

    /// The namespace's view of `/`.
    fn root(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.holder.id()))
    }

    /// `nsenter` into the namespace, as a command prefix.
    fn enter(&self) -> Vec<String> {
        ["nsenter", "-t", &self.holder.id().to_string(), "-m", "--"]
            .map(String::from)
            .to_vec()
    }

    /// The messages journald holds for `identifier`.
    fn messages(&self, identifier: &str) -> Vec<String> {
        let out = Command::new("nsenter")
            .args(["-t", &self.holder.id().to_string(), "-m", "--"])
            .args(["journalctl", "--no-pager", "-o", "cat", "-t", identifier])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for Journald {
    fn drop(&mut self) {
        for c in [&mut self.journald, &mut self.holder] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The highest `tick N` in `lines`.
fn last_tick(lines: &[String]) -> Option<u64> {
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .max()
}

#[test]
fn journal_mode_survives_upkeeps_restart() {
    let j = Journald::start();
    let prefix = j.enter();
    let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
    let mut d = Daemon::prepare(
        "[defaults]\nlog = \"journal\"\n\n[services.ticker]\ncommand = [\"/bin/sh\", \"-c\", \"echo on-stderr >&2; i=0; while :; do echo tick $i; i=$((i+1)); sleep 0.1; done\"]\n",
        &[],
    );
    let config = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("on_exit = \"stop\"", "on_exit = \"keep\"");
    std::fs::write(&d.config, config).unwrap();
    spawn_with(&mut d, &prefix, "info");
    let pid = d.wait_pid("ticker", Duration::from_secs(10), |_| true);
    let seen = wait_for("ticks in the journal", Duration::from_secs(20), || {
        let m = j.messages("ticker");
        (last_tick(&m) >= Some(3)).then_some(m)
    });
    assert!(
        seen.iter().any(|l| l == "on-stderr"),
        "stderr too: {seen:?}"
    );
    assert!(
        !d.logs.join("ticker.log").exists(),
        "nothing went to the file"
    );

    // upkeep stops and leaves the service running: output written while no
    // upkeep runs still reaches journald (it holds the other end).
    d.signal(libc::SIGTERM);
    assert_eq!(
        d.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        d.stderr()
    );
    assert!(pid_alive(pid), "on_exit = keep leaves the service running");
    let at_stop = last_tick(&j.messages("ticker")).unwrap();
    wait_for(
        "ticks written while upkeep is stopped",
        Duration::from_secs(20),
        || (last_tick(&j.messages("ticker")) >= Some(at_stop + 5)).then_some(()),
    );

    // The next upkeep adopts it, and `upkeep logs` reads the journal.
    spawn_with(&mut d, &prefix, "info");
    assert_eq!(d.wait_pid("ticker", Duration::from_secs(10), |_| true), pid);
    let out = Command::new(prefix[0])
        .args(&prefix[1..])
        .arg(bin())
        .args(["logs", "ticker", "-n", "3", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "upkeep logs: {out:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines.iter().all(|l| l.starts_with("tick ")), "{text}");
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(10));
    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
}

#[test]
fn an_adopted_service_is_bounded_again_as_soon_as_upkeep_is_back() {
    let _heavy = heavy();
    const MAX_SIZE: u64 = 4 * MIB;
    let tmp = tempfile::tempdir().unwrap();
    let count = tmp.path().join("count");
    let mut d = Daemon::prepare(
        &format!(
            "[logs]\nmax_size = \"4MiB\"\nmax_files = 1\n\n{}",
            paced_writer(&count)
        ),
        &[],
    );
    let config = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("on_exit = \"stop\"", "on_exit = \"keep\"");
    std::fs::write(&d.config, config).unwrap();
    spawn_with(&mut d, &[], "info");
    let writer = d.wait_pid("writer", Duration::from_secs(10), |_| true);
    let live = d.logs.join("writer.log");
    let bound = 2 * MAX_SIZE + MAX_SIZE + 5 * MIB;

    // While no upkeep runs, nothing rotates: the file outgrows the bound.
    d.signal(libc::SIGTERM);
    assert_eq!(
        d.wait_exit(Duration::from_secs(20)),
        Some(0),
        "{}",
        d.stderr()
    );
    wait_for(
        "the log to outgrow its bound",
        Duration::from_secs(20),
        || (size(&live) > bound + 4 * MIB).then_some(()),
    );
    // The next upkeep adopts the writer and cuts its log down at once.
    spawn_with(&mut d, &[], "info");
    assert_eq!(
        d.wait_pid("writer", Duration::from_secs(10), |_| true),
        writer
    );
    wait_for(
        "the log back within its bound",
        Duration::from_secs(5),
        || (total(&live, 1) <= bound).then_some(()),
    );
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(3) {
        let t = total(&live, 1);
        assert!(t <= bound, "sum {t} > {bound}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(dropped_bytes(d.port, "writer") > 0);
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(10));
    unsafe { libc::kill(-(writer as i32), libc::SIGKILL) };
}
