//! Black-box tests of the engine defects found by hostile testing: each
//! starts a real upkeep with real services, and finds their processes
//! through the daemon (its /health pid, the pid's cgroup, files the service
//! itself writes), never by scanning /proc for a marker.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FAST: &str = "[defaults.backoff]\ninitial = \"0s\"\nmax = \"100ms\"\nfactor = 2.0\nreset_after = \"10m\"\njitter = 0.0\n";

/// The v2 cgroup directory of `pid`, from `/proc/PID/cgroup`.
fn cgroup_dir_of(pid: u32) -> Option<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mounts.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        post.starts_with("cgroup2 ")
            .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))?
    })?;
    Some(mount.join(rel.trim_start_matches('/')))
}

fn read_pids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills (by pid) processes a test's services left on purpose.
struct Leftovers(Vec<u32>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for &p in &self.0 {
            if pid_alive(p) {
                unsafe { libc::kill(p as i32, libc::SIGKILL) };
            }
        }
    }
}

/// Defect 1: after a `cgroup.kill` (here: the main process left a child
/// behind), every later start was SIGKILLed at birth, for ever.
#[test]
fn a_service_that_leaves_children_behind_keeps_restarting_normally() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{FAST}[services.leaver]\ncommand = [\"/bin/sh\", \"-c\", \"sleep 1000 & echo $$ >> {}/mains; sleep 0.3; exit 1\"]\n",
        dir.path().display()
    );
    let mut d = Daemon::start(&config, &[]);
    // Five generations, each of which ran its shell to its own `exit 1`.
    let s = d.wait_service("leaver", Duration::from_secs(30), "5 restarts", |s| {
        s["restarts"].as_u64().unwrap_or(0) >= 5
    });
    assert_eq!(s["last_exit"]["code"], 1, "{s}");
    let mains = read_pids(&dir.path().join("mains"));
    assert!(
        mains.len() >= 5,
        "only {} generations ran their script",
        mains.len()
    );
    let stderr = d.stderr();
    assert!(
        !stderr.contains("killed by signal SIGKILL") && !stderr.contains("not by upkeep"),
        "generations were killed at birth:\n{stderr}"
    );
}

/// Defect 2: exactly one stop signal per stop (the pidfd and then the
/// process group each delivered one). Counted with a real-time stop signal:
/// those queue, so a second delivery is never merged into the first (with
/// SIGTERM it showed 1 stop in 10).
#[test]
fn every_stop_delivers_exactly_one_stop_signal() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("stops");
    let prog = format!(
        "import signal, sys, time\nsig = signal.SIGRTMIN + 2\nn = [0]\ndef h(s, f):\n    n[0] += 1\n    open({count:?}, 'a').write('STOP\\n')\nsignal.signal(sig, h)\nopen({started:?}, 'a').write('up\\n')\nwhile n[0] == 0:\n    time.sleep(0.01)\ntime.sleep(0.3)\nsys.exit(0)\n",
        count = count.display().to_string(),
        started = dir.path().join("starts").display().to_string(),
    );
    let script = script(dir.path(), "stop.py", &prog);
    let config = format!(
        "{FAST}[services.counter]\ncommand = [\"python3\", {:?}]\nstop_signal = \"SIGRTMIN+2\"\nstop_timeout = \"10s\"\n",
        script.display().to_string()
    );
    let mut d = Daemon::start(&config, &[]);
    const STOPS: usize = 8;
    for i in 0..STOPS {
        let starts = dir.path().join("starts");
        wait_for("the service to be up", Duration::from_secs(20), || {
            (read_lines(&starts) > i).then_some(())
        });
        let out = d.client(&["restart", "counter"]);
        assert!(out.status.success(), "{out:?}");
        wait_for("the stop to complete", Duration::from_secs(20), || {
            (read_lines(&count) > i).then_some(())
        });
    }
    wait_for("the last start", Duration::from_secs(20), || {
        (read_lines(&dir.path().join("starts")) > STOPS).then_some(())
    });
    d.wait_service("counter", Duration::from_secs(10), "running", |s| {
        s["state"] == "running"
    });
    assert_eq!(
        read_lines(&count),
        STOPS,
        "{STOPS} stops delivered {} stop signals",
        read_lines(&count)
    );
}

fn read_lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .count()
}

/// Defect 3: the clone3 child used glibc's setgroups/setgid/setuid, whose
/// cross-thread broadcast can hang the child. Restart a `runAsUser` service
/// many times with zero backoff: no start may hang.
#[test]
fn a_run_as_user_service_restarts_many_times_without_a_hang() {
    require_root();
    let manifest = r#"apiVersion: v1
kind: Pod
metadata:
  name: nobody
spec:
  securityContext:
    runAsUser: 65534
    runAsGroup: 65534
  containers:
  - name: nobody
    image: x/true:1
    command: ["/bin/true"]
"#;
    let config = "[defaults.backoff]\ninitial = \"0s\"\nmax = \"0s\"\nfactor = 1.0\nreset_after = \"10m\"\njitter = 0.0\n";
    let mut d = Daemon::start(config, &[("nobody.yaml", manifest)]);
    const TARGET: u64 = 1500;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last = (0u64, Instant::now());
    loop {
        let restarts = d
            .service("nobody")
            .and_then(|s| s["restarts"].as_u64())
            .unwrap_or(0);
        if restarts >= TARGET {
            break;
        }
        if restarts > last.0 {
            last = (restarts, Instant::now());
        }
        // A hung child blocks the supervision thread: restarts stop moving.
        assert!(
            last.1.elapsed() < Duration::from_secs(15),
            "restarts stuck at {restarts} for 15 s\n{}",
            d.stderr()
        );
        assert!(
            Instant::now() < deadline,
            "only {restarts} restarts in 120 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _) = http_get(d.port, "/livez").expect("/livez");
    assert_eq!(code, 200);
}

/// Defect 9: exec probes (and preStop hooks) ran in upkeep's own cgroup, so
/// what they left behind lived for ever. They run in the service's cgroup
/// and die with it.
#[test]
fn what_an_exec_probe_leaves_behind_dies_with_the_service() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let escaped = dir.path().join("escaped");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: probed
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: probed
    image: x/probed:1
    command: ["/bin/sh", "-c", "while true; do sleep 0.1; done"]
    livenessProbe:
      exec:
        command: ["/bin/sh", "-c", "setsid sleep 100 & echo $! >> {}"]
      periodSeconds: 1
"#,
        escaped.display()
    );
    let mut d = Daemon::start(FAST, &[("probed.yaml", &manifest)]);
    let main = d.wait_pid("probed", Duration::from_secs(10), |_| true);
    wait_for(
        "a probe to leave a process",
        Duration::from_secs(15),
        || (!read_pids(&escaped).is_empty()).then_some(()),
    );
    let leaked = read_pids(&escaped);
    let _guard = Leftovers(leaked.clone());
    let service_cg = cgroup_dir_of(main).expect("the service runs in a cgroup");
    for &p in &leaked {
        if pid_alive(p) {
            assert_eq!(
                cgroup_dir_of(p).as_deref(),
                Some(service_cg.as_path()),
                "probe leftover {p} is outside the service's cgroup"
            );
        }
    }
    std::fs::remove_file(d.manifests.join("probed.yaml")).unwrap();
    wait_for("probed removed", Duration::from_secs(20), || {
        d.service("probed").is_none().then_some(())
    });
    for p in read_pids(&escaped) {
        wait_for(
            &format!("probe leftover {p} to be gone"),
            Duration::from_secs(5),
            || (!pid_alive(p)).then_some(()),
        );
    }
}

/// `kill_mode = "process"` (containerd's shims): what the main process
/// left behind survives its crash and restart; under the default
/// (`control-group`) it dies with it.
#[test]
fn kill_mode_process_keeps_a_shim_alive_across_a_crash() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let cmd = |name: &str| {
        format!(
            "[\"/bin/sh\", \"-c\", \"sleep 1000 & echo $! >> {d}/{name}.shims; echo $$ >> {d}/{name}.mains; sleep 0.5; exit 1\"]",
            d = dir.path().display()
        )
    };
    let config = format!(
        "{FAST}[services.containerd]\ncommand = {}\nkill_mode = \"process\"\n[services.grouped]\ncommand = {}\n",
        cmd("containerd"),
        cmd("grouped")
    );
    let mut d = Daemon::start(&config, &[]);
    for name in ["containerd", "grouped"] {
        d.wait_service(name, Duration::from_secs(20), "2 restarts", |s| {
            s["restarts"].as_u64().unwrap_or(0) >= 2
        });
    }
    let shims = read_pids(&dir.path().join("containerd.shims"));
    let _guard = Leftovers(shims.clone());
    assert!(shims.len() >= 3);
    // The shims of the first generations outlived their parents' crashes.
    for &p in &shims[..2] {
        assert!(pid_alive(p), "kill_mode=process: shim {p} was killed");
    }
    let grouped = read_pids(&dir.path().join("grouped.shims"));
    let _guard2 = Leftovers(grouped.clone());
    for &p in &grouped[..2] {
        wait_for(
            &format!("control-group leftover {p} to be killed"),
            Duration::from_secs(5),
            || (!pid_alive(p)).then_some(()),
        );
    }
}

/// Defect 8: without cgroups, what a main process left in its process group
/// was not killed. The cgroup filesystems are hidden from upkeep in a
/// private mount namespace.
#[test]
fn without_cgroups_leftovers_in_the_process_group_are_killed() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "{FAST}[services.leaver]\ncommand = [\"/bin/sh\", \"-c\", \"sleep 1000 & echo $! >> {}/left; sleep 0.3; exit 1\"]\n",
        dir.path().display()
    );
    let mut d = Daemon::prepare(&config, &[]);
    d.spawn_wrapped(&[
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        // A tmpfs over each cgroup mount (the cgroup filesystems stay listed
        // in mountinfo, underneath): upkeep must see that they are gone.
        "for m in $(grep -E ' - cgroup2? ' /proc/self/mountinfo | cut -d' ' -f5 | sort -r); do mount -t tmpfs none \"$m\" || exit 1; done; exec \"$@\"",
        "sh",
    ]);
    d.wait_service("leaver", Duration::from_secs(20), "2 restarts", |s| {
        s["restarts"].as_u64().unwrap_or(0) >= 2
    });
    assert!(
        d.stderr().contains("running without cgroups"),
        "the cgroups were not hidden:\n{}",
        d.stderr()
    );
    let left = read_pids(&dir.path().join("left"));
    let _guard = Leftovers(left.clone());
    for &p in &left[..2] {
        wait_for(
            &format!("leftover {p} in the process group to be killed"),
            Duration::from_secs(5),
            || (!pid_alive(p)).then_some(()),
        );
    }
}

/// Defect 3, by construction: the child of a raw clone3 changes its ids with
/// raw syscalls, never glibc's wrappers, whose cross-thread broadcast
/// (`tgkill(SIGRT_1)` to the parent's threads) can hang it. strace shows
/// every id change of the children and no broadcast.
#[test]
fn the_clone3_child_changes_ids_without_glibc_broadcast() {
    require_root();
    let strace = which("strace").expect("strace is required (Debian package strace)");
    let mut d = Daemon::prepare(
        "[defaults.backoff]\ninitial = \"0s\"\nmax = \"0s\"\nfactor = 1.0\nreset_after = \"10m\"\njitter = 0.0\n[services.nobody]\ncommand = [\"/bin/true\"]\nuser = \"65534\"\n",
        &[],
    );
    let trace = d.dir.path().join("trace");
    let trace_arg = trace.display().to_string();
    d.spawn_wrapped(&[
        strace.to_str().unwrap(),
        "-f",
        "-qq",
        "-e",
        "trace=tgkill,setresuid,setuid",
        "-o",
        &trace_arg,
    ]);
    d.wait_service("nobody", Duration::from_secs(30), "50 restarts", |s| {
        s["restarts"].as_u64().unwrap_or(0) >= 50
    });
    // The child is strace; upkeep is its child: stop upkeep, strace follows.
    let tracer = d.pid();
    let children =
        std::fs::read_to_string(format!("/proc/{tracer}/task/{tracer}/children")).unwrap();
    let upkeep: i32 = children.split_whitespace().next().unwrap().parse().unwrap();
    unsafe { libc::kill(upkeep, libc::SIGTERM) };
    d.wait_exit(Duration::from_secs(20));
    let text = std::fs::read_to_string(&trace).unwrap();
    let id_changes = text
        .lines()
        .filter(|l| l.contains("setresuid(65534"))
        .count();
    assert!(id_changes >= 50, "{id_changes} id changes traced:\n{text}");
    let broadcasts: Vec<&str> = text.lines().filter(|l| l.contains("tgkill(")).collect();
    assert!(
        broadcasts.is_empty(),
        "setxid broadcast in children: {:?}",
        &broadcasts[..broadcasts.len().min(5)]
    );
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// Defect 12: SIGHUP applied `log_dir`, `[logs]` and `relist_period` only
/// partly, silently. Now the keys bound at start-up are named in a warning
/// (and keep their running values), and the rest apply.
#[test]
fn sighup_names_the_keys_that_need_a_restart() {
    require_root();
    let mut d = Daemon::start(
        &format!("{FAST}[services.a]\ncommand = [\"/bin/sh\", \"-c\", \"exec sleep 3010\"]\n"),
        &[],
    );
    let pid = d.wait_pid("a", Duration::from_secs(10), |_| true);
    let text = std::fs::read_to_string(&d.config).unwrap();
    let other_logs = d.dir.path().join("other-logs");
    let text = text
        .replace(
            &format!("log_dir = {:?}", d.logs),
            &format!("log_dir = {other_logs:?}"),
        )
        .replace("relist_period = \"1s\"", "relist_period = \"2s\"");
    assert!(text.contains("other-logs"), "{text}");
    std::fs::write(&d.config, text).unwrap();
    d.signal(libc::SIGHUP);
    wait_for("the warning", Duration::from_secs(10), || {
        d.stderr()
            .lines()
            .find(|l| l.contains("take effect only when upkeep restarts"))
            .map(str::to_string)
    });
    let line = d
        .stderr()
        .lines()
        .find(|l| l.contains("take effect only when upkeep restarts"))
        .unwrap()
        .to_string();
    assert!(line.contains("log_dir"), "{line}");
    assert!(!line.contains("relist_period"), "{line}");
    // Nothing restarted for it, and the service still logs where it did.
    assert_eq!(d.wait_pid("a", Duration::from_secs(5), |_| true), pid);
    assert!(!other_logs.exists());
}
