//! Black-box tests of per-service resource usage (issue 14): a real upkeep
//! runs real static pods; figures on `/metrics` are compared with what the
//! kernel says about the service's own pid (found through /health).

mod common;

use common::*;
use std::time::{Duration, Instant};

/// The real python3 interpreter (not a shim): the allocators need it.
fn python3() -> String {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("this test needs python3 on PATH (the memory allocators are python)");
    assert!(out.status.success(), "python3 does not run");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The value of the first sample of `family` whose labels contain all of `labels`.
fn sample(metrics: &str, family: &str, labels: &[&str]) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix(family)?.strip_prefix('{')?;
        let (lbl, value) = rest.rsplit_once("} ")?;
        labels
            .iter()
            .all(|w| lbl.contains(w))
            .then(|| value.trim().parse().ok())?
    })
}

/// utime + stime of `pid` in seconds.
fn cpu_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 / hz
}

/// The service names once `n` are listed.
fn names(d: &mut Daemon, n: usize) -> Vec<String> {
    wait_for("the services to be listed", Duration::from_secs(10), || {
        let (_, health) = d.health();
        let v: Vec<String> = health["services"]
            .as_array()?
            .iter()
            .filter_map(|s| s["name"].as_str().map(String::from))
            .collect();
        (v.len() >= n).then_some(v)
    })
}

#[test]
fn cpu_and_memory_of_a_static_pod_match_the_kernel() {
    require_root();
    let py = python3();
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: load\n  namespace: kube-system\nspec:\n  containers:\n  \
         - name: burner\n    image: x/b:1\n    command: [\"/bin/sh\", \"-c\", \"while :; do :; done\"]\n  \
         - name: alloc\n    image: x/a:1\n    command: [\"{py}\", \"-c\", \"import time\\nb = b'x' * (100 << 20)\\ntime.sleep(1000)\"]\n"
    );
    let mut d = Daemon::start("", &[("load.yaml", &pod)]);
    let names = names(&mut d, 2);
    let burner = names
        .iter()
        .find(|n| n.ends_with("burner"))
        .unwrap()
        .clone();
    let alloc = names.iter().find(|n| n.ends_with("alloc")).unwrap().clone();
    let bpid = d.wait_pid(&burner, Duration::from_secs(10), |_| true);
    let apid = d.wait_pid(&alloc, Duration::from_secs(10), |_| true);
    // Let the burner use a measurable amount of CPU (2 s on a shared machine).
    wait_for(
        "the burner to use 2 s of CPU",
        Duration::from_secs(60),
        || (cpu_of(bpid) >= 2.0).then_some(()),
    );
    let labels = [
        "container=\"burner\"",
        "pod=\"load-test-node\"",
        "namespace=\"kube-system\"",
    ];
    let svc = format!("service=\"{burner}\"");
    let before = cpu_of(bpid);
    let (code, body) = http_get(d.port, "/metrics").unwrap();
    let after = cpu_of(bpid);
    assert_eq!(code, 200);
    let cpu = sample(
        &body,
        "container_cpu_usage_seconds_total",
        &[&labels[..], &[svc.as_str()]].concat(),
    )
    .unwrap_or_else(|| panic!("no cpu sample for the burner:\n{body}"));
    assert!(
        cpu >= before * 0.8 && cpu <= after * 1.2,
        "cpu {cpu} s, /proc says {before}..{after} s"
    );
    assert!(sample(&body, "container_start_time_seconds", &labels).is_some());
    assert!(sample(&body, "container_memory_rss", &labels).is_some());
    assert!(sample(&body, "container_fs_reads_bytes_total", &labels).is_some());

    // The allocator's 100 MB shows as working set once it has allocated.
    let alabels = ["container=\"alloc\"", "pod=\"load-test-node\""];
    let ws = wait_for(
        "the allocator's working set",
        Duration::from_secs(30),
        || {
            let (_, body) = http_get(d.port, "/metrics")?;
            sample(&body, "container_memory_working_set_bytes", &alabels).filter(|v| *v >= 90e6)
        },
    );
    let rss = rss_kib(apid) as f64 * 1024.0;
    assert!(ws >= 90e6, "working set {ws}, rss {rss}");

    // `upkeep status` shows both, like `kubectl top`: the burner near a core.
    let out = d.client(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (cpu_col, mem_col) = (col("CPU"), col("MEMORY"));
    let row = |svc: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.starts_with(svc))
            .unwrap_or_else(|| panic!("no row for {svc}:\n{text}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    let b = row(&burner);
    let millis: f64 = b[cpu_col]
        .trim_end_matches('m')
        .parse()
        .unwrap_or_else(|_| panic!("{text}"));
    assert!(millis >= 100.0, "burner CPU {millis}m:\n{text}");
    let a = row(&alloc);
    let mib: f64 = a[mem_col]
        .trim_end_matches("Mi")
        .parse()
        .unwrap_or_else(|_| panic!("{text}"));
    assert!(mib >= 85.0, "allocator memory {mib}Mi:\n{text}");
}

#[test]
fn a_service_killed_for_its_memory_limit_is_oomkilled() {
    require_root();
    let py = python3();
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hog\nspec:\n  containers:\n  \
         - name: hog\n    image: x/h:1\n    command: [\"{py}\", \"-c\", \"import time\\nb = b'x' * (200 << 20)\\ntime.sleep(1000)\"]\n    \
         resources:\n      limits:\n        memory: 50Mi\n"
    );
    let mut d = Daemon::start("", &[("hog.yaml", &pod)]);
    let name = names(&mut d, 1)[0].clone();
    let s = d.wait_service(&name, Duration::from_secs(30), "an OOMKilled exit", |s| {
        !s["last_exit"].is_null()
    });
    assert_eq!(s["last_exit"]["reason"], "OOMKilled", "{s}");
    assert_eq!(s["last_exit"]["signal"], "SIGKILL", "{s}");
    let (_, body) = http_get(d.port, "/metrics").unwrap();
    let svc = format!("service=\"{name}\"");
    let n = sample(
        &body,
        "upkeep_service_exits_total",
        &["reason=\"OOMKilled\"", &svc],
    )
    .unwrap_or_else(|| panic!("no OOMKilled exit counted:\n{body}"));
    assert!(n >= 1.0);
    assert!(
        d.stderr().contains("OOMKilled"),
        "no OOMKilled log line:\n{}",
        d.stderr()
    );
    let out = d.client(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("OOMKilled"), "status:\n{text}");
}

#[test]
fn status_watch_refreshes_in_place() {
    require_root();
    let mut d = Daemon::start("[services.w]\ncommand = [\"/bin/sleep\", \"1000\"]\n", &[]);
    d.wait_pid("w", Duration::from_secs(10), |_| true);
    let out_path = d.dir.path().join("watch.out");
    let mut child = std::process::Command::new(bin())
        .args(["status", "-w", "--config"])
        .arg(&d.config)
        .stdout(std::fs::File::create(&out_path).unwrap())
        .spawn()
        .unwrap();
    let text = wait_for("two refreshes", Duration::from_secs(20), || {
        let t = std::fs::read_to_string(&out_path).ok()?;
        (t.matches("\x1b[H\x1b[2J").count() >= 2).then_some(t)
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
    let _ = child.wait();
    let last = text.rsplit("\x1b[H\x1b[2J").next().unwrap();
    let row: Vec<&str> = last
        .lines()
        .find(|l| l.starts_with("w "))
        .unwrap_or_else(|| panic!("{text}"))
        .split_whitespace()
        .collect();
    // CPU is a rate between refreshes (a sleeping process: 0m), MEMORY in Mi.
    assert_eq!(row[6], "0m", "{last}");
    assert!(row[7].ends_with("Mi"), "{last}");
}

#[path = "../../../tests/support/limits.rs"]
mod limits;
use limits::nofile_of;

#[test]
fn services_probes_and_hooks_get_the_soft_limit_upkeep_started_with() {
    require_root();
    let hook_out = tempfile::tempdir().unwrap();
    let seen = hook_out.path().join("prestop");
    // The readiness probe passes only if it sees 1024 / 4096.
    let cfg = "[services.lim]\ncommand = [\"/bin/sleep\", \"1000\"]\nreadiness = { exec = [\"/bin/sh\", \"-c\", \"test `ulimit -Sn` = 1024 && test `ulimit -Hn` = 4096\"], period = \"200ms\" }\n";
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hooked\nspec:\n  terminationGracePeriodSeconds: 5\n  containers:\n  \
         - name: hooked\n    image: x/hooked:1\n    command: [\"/bin/sleep\", \"1000\"]\n    lifecycle:\n      preStop:\n        exec:\n          \
         command: [\"/bin/sh\", \"-c\", \"echo `ulimit -Sn` `ulimit -Hn` > {}.tmp && mv {0}.tmp {0}\"]\n",
        seen.display()
    );
    let mut d = Daemon::prepare(cfg, &[("hooked.yaml", &pod)]);
    // As under systemd's default (soft 1024), with room above it.
    d.spawn_wrapped(&["prlimit", "--nofile=1024:4096", "--"]);
    assert_eq!(nofile_of(d.pid()), (4096, 4096), "upkeep raised its own");
    assert!(
        d.stderr()
            .contains("soft limit raised from 1024 to the hard limit 4096"),
        "{}",
        d.stderr()
    );

    let lim = d.wait_pid("lim", Duration::from_secs(10), |_| true);
    assert_eq!(nofile_of(lim), (1024, 4096), "host service");
    let hooked = d.wait_pid("hooked", Duration::from_secs(10), |_| true);
    assert_eq!(nofile_of(hooked), (1024, 4096), "static pod");
    // Exec probe.
    d.wait_service("lim", Duration::from_secs(10), "ready", |s| {
        s["ready"] == true
    });
    // preStop hook.
    std::fs::remove_file(d.manifests.join("hooked.yaml")).unwrap();
    let text = wait_for("the preStop hook's output", Duration::from_secs(15), || {
        std::fs::read_to_string(&seen).ok()
    });
    assert_eq!(text.trim(), "1024 4096");
    // upkeep itself keeps the raised limit.
    assert_eq!(nofile_of(d.pid()), (4096, 4096));
}

/// Samples of `family` in a /metrics body.
fn count_samples(body: &str, family: &str) -> usize {
    body.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .count()
}

#[test]
fn a_tiny_open_files_limit_still_leaves_room_to_spawn_and_scrape() {
    require_root();
    // 36 host services under a hard limit of 256: the usage reader may keep
    // 64 descriptors (a quarter), about 9 services' files; the others are
    // read by path.
    const N: usize = 36;
    let mut cfg = String::new();
    for i in 0..N {
        cfg.push_str(&format!(
            "[services.s{i:02}]\ncommand = [\"/bin/sleep\", \"1000\"]\n"
        ));
    }
    let mut d = Daemon::prepare(&cfg, &[]);
    d.spawn_wrapped(&["prlimit", "--nofile=256:256", "--"]);
    let upkeep = d.pid();
    assert_eq!(nofile_of(upkeep), (256, 256));
    let pids: Vec<u32> = (0..N)
        .map(|i| d.wait_pid(&format!("s{i:02}"), Duration::from_secs(30), |_| true))
        .collect();
    assert_eq!(nofile_of(pids[0]), (256, 256));
    let before = fd_count(upkeep);

    // Fresh reads (scrapes further apart than the 250 ms during which they
    // share one): every service has its figures each time.
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(300));
        let (code, body) = http_get(d.port, "/metrics").expect("/metrics answers");
        assert_eq!(code, 200, "{body}");
        assert_eq!(
            count_samples(&body, "container_cpu_usage_seconds_total"),
            N,
            "{body}"
        );
        assert_eq!(
            count_samples(&body, "container_memory_working_set_bytes"),
            N,
            "{body}"
        );
    }
    // The reader keeps at most 64 (here 63: 9 services of 7 files); 8 more
    // for whatever else upkeep may have open for a moment (a state file
    // being saved). Without the budget: 255, the limit.
    let after = fd_count(upkeep);
    assert!(
        after <= before + 256 / 4 + 8,
        "the usage reader keeps at most a quarter of the limit: {before} descriptors before the scrapes, {after} after"
    );

    // Services still spawn: a killed one is restarted, a new one starts.
    unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) };
    let again = d.wait_pid("s00", Duration::from_secs(30), |p| p != pids[0]);
    d.write_manifest(
        "late.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: late\nspec:\n  containers:\n  - name: late\n    image: x/late:1\n    command: [\"/bin/sleep\", \"1000\"]\n",
    );
    let late = d.wait_pid("late", Duration::from_secs(30), |_| true);
    assert!(pid_alive(again) && pid_alive(late));
    wait_for(
        "the new service on /metrics",
        Duration::from_secs(10),
        || {
            let (code, body) = http_get(d.port, "/metrics")?;
            (code == 200
                && count_samples(&body, "container_cpu_usage_seconds_total") == N + 1
                && body.contains("service=\"late\""))
            .then_some(())
        },
    );
    assert!(
        !d.stderr().contains("Too many open files"),
        "{}",
        d.stderr()
    );
}

/// `upkeep_usage_reads_total{trigger}`: (at scrape time, ahead).
fn reads(body: &str) -> (f64, f64) {
    let get = |t: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(&format!("upkeep_usage_reads_total{{trigger=\"{t}\"}} ")))
            .unwrap_or_else(|| panic!("no upkeep_usage_reads_total{{trigger=\"{t}\"}}:\n{body}"))
            .trim()
            .parse()
            .unwrap()
    };
    (get("scrape"), get("ahead"))
}

/// Scrapes a real daemon running a CPU burner at the instants `at` (after
/// a start of its own), as Prometheus's timers do, and checks that every
/// scrape got a read of its own, never ahead of /proc, and never more
/// reads than scrapes. Returns the reads made (at scrape, ahead).
fn scrape_a_burner_at(at: &[Duration]) -> (f64, f64) {
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: load\n  namespace: kube-system\nspec:\n  containers:\n  \
               - name: burner\n    image: x/b:1\n    command: [\"/bin/sh\", \"-c\", \"while :; do :; done\"]\n";
    let mut d = Daemon::start("", &[("load.yaml", pod)]);
    let name = names(&mut d, 1).remove(0);
    let pid = d.wait_pid(&name, Duration::from_secs(10), |_| true);
    let labels = ["container=\"burner\"", "pod=\"load-test-node\""];
    let mut last_cpu = -1.0;
    let mut first = None;
    let mut body = String::new();
    let start = Instant::now() + Duration::from_millis(500);
    for (i, when) in at.iter().enumerate() {
        let due = start + *when;
        // A scrape that is late on a busy machine goes at once, like
        // Prometheus's next tick would.
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let (code, b) = http_get(d.port, "/metrics").unwrap();
        let after = cpu_of(pid);
        assert_eq!(code, 200);
        let cpu = sample(&b, "container_cpu_usage_seconds_total", &labels)
            .unwrap_or_else(|| panic!("scrape {i}: no cpu sample for the burner:\n{b}"));
        // Each scrape gets a read of its own (the burner's CPU moved on),
        // made before the scrape answered, never an older scrape's.
        assert!(cpu > last_cpu, "scrape {i}: cpu {cpu} s after {last_cpu} s");
        // (/proc counts in clock ticks, the cgroup in microseconds.)
        assert!(
            cpu <= after * 1.2 + 0.05,
            "scrape {i}: cpu {cpu} s, /proc then {after} s"
        );
        last_cpu = cpu;
        first.get_or_insert_with(|| reads(&b));
        body = b;
    }
    let (s0, a0) = first.unwrap();
    let (s1, a1) = reads(&body);
    // Never more reads than scrapes: the first scrape's read is counted in
    // its own body, so the other scrapes account for at most one fewer;
    // the one to spare allows one read ahead that a scrape more than
    // 150 ms late on a busy machine left unused.
    let scrapes = at.len() as f64;
    assert!(
        (s1 - s0) + (a1 - a0) <= scrapes,
        "reads at scrape {s0} -> {s1}, ahead {a0} -> {a1} for {scrapes} scrapes"
    );
    (s1 - s0, a1 - a0)
}

#[test]
fn scrapes_at_a_steady_pace_get_usage_read_just_before_them() {
    require_root();
    // Like Prometheus: one scrape every 700 ms.
    let at: Vec<Duration> = (0..10).map(|i| Duration::from_millis(700 * i)).collect();
    let (scrape, ahead) = scrape_a_burner_at(&at);
    // The third scrape is the first after two gaps that agree; from the
    // fourth on, reads are made ahead (a scrape more than 87 ms late on a
    // busy machine breaks the pace for three: at least 3 of 7 must be
    // ahead).
    assert!(ahead >= 3.0, "reads ahead {ahead}, at scrape {scrape}");
}

#[test]
fn an_ha_pair_of_scrapers_gets_usage_read_just_before_each_scrape() {
    require_root();
    // Two Prometheus servers scraping every 1.4 s, 500 ms apart: the gaps
    // alternate 500 and 900 ms, so no two in a row agree; they repeat
    // every two.
    let at: Vec<Duration> = (0..10)
        .flat_map(|i| [1_400 * i, 1_400 * i + 500])
        .map(Duration::from_millis)
        .collect();
    let (scrape, ahead) = scrape_a_burner_at(&at);
    // The fifth scrape is the first after a repeat (four gaps): the sixth
    // to the twentieth can be read ahead (15). A scrape late by more than
    // 1/8 of its gap on a busy machine breaks the repeat for five: at least
    // 7 must be ahead.
    assert!(ahead >= 7.0, "reads ahead {ahead}, at scrape {scrape}");
}
