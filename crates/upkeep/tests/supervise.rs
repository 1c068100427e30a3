//! Black-box supervision tests: the real binary, real processes, real signals.

mod common;

use common::*;
use std::time::Duration;

const FAST: &str = "[defaults.backoff]\ninitial = \"0s\"\nmax = \"200ms\"\nfactor = 2.0\nreset_after = \"10m\"\njitter = 0.0\n";

fn pod(name: &str, cmd: &str, extra_spec: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 2\n{extra_spec}  containers:\n  - name: {name}\n    image: example/{name}:1\n    command: [\"/bin/sh\", \"-c\", {cmd:?}]\n"
    )
}

#[test]
fn starts_services_and_pods_with_clean_env() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("env.txt");
    let cfg = format!(
        "{FAST}[services.host]\ncommand = [\"/bin/sh\", \"-c\", \"env > {}; exec sleep 1000\"]\nenv = {{ FOO = \"bar\" }}\n",
        out.display()
    );
    let mut d = Daemon::start(&cfg, &[("web.yaml", &pod("web", "exec sleep 1000", ""))]);
    let host = d.wait_pid("host", Duration::from_secs(10), |_| true);
    let web = d.wait_pid("web", Duration::from_secs(10), |_| true);
    assert_ne!(host, web);
    let env = wait_for("env dump", Duration::from_secs(5), || {
        std::fs::read_to_string(&out)
            .ok()
            .filter(|s| s.contains("FOO"))
    });
    assert!(env.contains("FOO=bar"), "{env}");
    assert!(
        env.contains("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        "{env}"
    );
    assert!(
        !env.contains("UPKEEP_TEST_SECRET_ENV"),
        "upkeep's environment leaked into the service: {env}"
    );
    // Each service is its own session and process group.
    let stat = std::fs::read_to_string(format!("/proc/{web}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    assert_eq!(fields[2], web.to_string(), "pgid == pid");
    assert_eq!(fields[3], web.to_string(), "sid == pid");
    let (code, h) = d.health();
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["status"], "ok");
}

/// Context switches of the daemon's thread named `name`.
fn thread_switches(daemon: u32, name: &str) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{daemon}/task")).unwrap();
    for t in tasks.flatten() {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let status = std::fs::read_to_string(t.path().join("status")).unwrap();
        return status
            .lines()
            .filter(|l| l.contains("ctxt_switches:"))
            .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
            .sum();
    }
    panic!("upkeep {daemon} has no thread named {name}");
}

/// Child exits are the supervisor's business: a crash loop does not wake
/// the HTTP thread (tokio wakes every runtime of a process at each signal it
/// handles, and the kernel hands SIGCHLD to any thread that takes it; the
/// HTTP thread woke about once per exit before).
#[test]
fn a_crash_loop_does_not_wake_the_http_thread() {
    // Each start appends a line to a file: exits are counted without a
    // request (which would wake the thread).
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let cfg = format!(
        "[defaults.backoff]\ninitial = \"0s\"\nmax = \"0s\"\nfactor = 1.0\nreset_after = \"10m\"\njitter = 0.0\n\n\
         [services.crasher]\ncommand = [\"/bin/sh\", \"-c\", \"echo >> {}; sleep 0.01; exit 3\"]\n",
        starts.display()
    );
    let mut d = Daemon::start(&cfg, &[]);
    d.wait_service("crasher", Duration::from_secs(15), "5 restarts", |s| {
        s["restarts"].as_u64().unwrap_or(0) >= 5
    });
    let count = || {
        std::fs::read_to_string(&starts)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    };
    // The request just answered may still be closing.
    std::thread::sleep(Duration::from_millis(300));
    let woken_before = thread_switches(d.pid(), "upkeep-http");
    let before = count();
    // At least 30 exits, however slowly a busy machine runs the loop.
    let exits = wait_for(
        "30 more starts of the crash loop",
        Duration::from_secs(60),
        || {
            let n = count() - before;
            (n >= 30).then_some(n)
        },
    );
    let woken = thread_switches(d.pid(), "upkeep-http") - woken_before;
    assert!(
        woken <= 3,
        "the HTTP thread was woken {woken} times while the crasher exited about {exits} times, with no request"
    );
}

#[test]
fn crash_loop_backs_off_and_never_gives_up() {
    let cfg = "[defaults.backoff]\ninitial = \"100ms\"\nmax = \"400ms\"\nfactor = 2.0\nreset_after = \"10m\"\njitter = 0.0\n\n[services.crasher]\ncommand = [\"/bin/sh\", \"-c\", \"exit 3\"]\n";
    let mut d = Daemon::start(cfg, &[]);
    let s = d.wait_service("crasher", Duration::from_secs(15), "8 restarts", |s| {
        s["restarts"].as_u64().unwrap_or(0) >= 8
    });
    assert_eq!(s["last_exit"]["code"], 3);
    // It keeps trying at the cap: state is backoff (or briefly starting/running), never failed.
    let s = d.wait_service("crasher", Duration::from_secs(5), "backoff state", |s| {
        s["state"] == "backoff"
    });
    assert!(s["next_start_in_ms"].as_u64().unwrap() <= 400, "{s}");
    let (code, h) = d.health();
    assert_eq!(code, 503, "{h}");
    assert_eq!(h["status"], "degraded");
    assert!(
        d.stderr().contains("restarted"),
        "crash-loop log line missing:\n{}",
        d.stderr()
    );
}

#[test]
fn every_fatal_signal_is_restarted() {
    let cfg = format!("{FAST}[services.victim]\ncommand = [\"/bin/sleep\", \"1000\"]\n");
    let mut d = Daemon::start(&cfg, &[]);
    let mut pid = d.wait_pid("victim", Duration::from_secs(10), |_| true);
    let signals = [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGILL,
        libc::SIGTRAP,
        libc::SIGABRT,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGKILL,
        libc::SIGUSR1,
        libc::SIGSEGV,
        libc::SIGUSR2,
        libc::SIGPIPE,
        libc::SIGALRM,
        libc::SIGTERM,
        libc::SIGSTKFLT,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGSYS,
    ];
    for sig in signals {
        unsafe { libc::kill(pid as i32, sig) };
        let old = pid;
        pid = d.wait_pid("victim", Duration::from_secs(10), |p| p != old);
        let s = d.service("victim").unwrap();
        assert_eq!(
            s["last_exit"]["signal"],
            upkeep_signal_name(sig),
            "signal {sig}: {s}"
        );
    }
    let s = d.service("victim").unwrap();
    assert_eq!(s["restarts"].as_u64().unwrap(), signals.len() as u64);
}

fn upkeep_signal_name(sig: i32) -> &'static str {
    upkeep_core::exit::signal_name(sig)
}

#[test]
fn stop_leaves_no_descendants() {
    let dir = tempfile::tempdir().unwrap();
    // Every process of the tree runs as `<dir>/sleeper N`, so it can be found
    // by its argv[0]: N tells which one it is.
    let sleeper = dir.path().join("sleeper");
    std::os::unix::fs::symlink("/bin/sleep", &sleeper).unwrap();
    let s = sleeper.display();
    // A child in the group, a child that ignores SIGTERM, a setsid'd grandchild
    // that escapes the process group (only the cgroup catches that one), and
    // the main process, which ignores SIGTERM too (SIGKILL after the grace).
    let cmd = format!(
        "trap '' TERM; {s} 1001 & (trap '' TERM; {s} 1002) & setsid {s} 1003 & exec {s} 1004"
    );
    let mut d = Daemon::start(FAST, &[("tree.yaml", &pod("tree", &cmd, ""))]);
    d.wait_pid("tree", Duration::from_secs(10), |_| true);
    // The tree, found through this daemon (its cgroup and its descendants).
    let marker = sleeper.display().to_string();
    // setsid(1) forks when its caller leads a process group: until its
    // parent has exited, two processes carry " 1003". Wait for the tree to
    // settle into exactly one of each.
    let tree = wait_for("4 processes", Duration::from_secs(10), || {
        let t = d.pids_with_arg(&marker);
        let escapees = t.iter().filter(|p| cmdline(**p).contains(" 1003")).count();
        (t.len() >= 4 && escapees == 1).then_some(t)
    });
    let escapee: Vec<u32> = tree
        .iter()
        .copied()
        .filter(|p| cmdline(*p).contains(" 1003"))
        .collect();
    assert_eq!(escapee.len(), 1, "the setsid'd grandchild: {tree:?}");
    std::fs::remove_file(d.manifests.join("tree.yaml")).unwrap();
    wait_for("tree to leave /health", Duration::from_secs(15), || {
        d.service("tree").is_none().then_some(())
    });
    // By pid, and still checking the argv (a pid may be reused by then).
    let alive = |p: &u32| pid_alive(*p) && cmdline(*p).contains(&marker);
    let left: Vec<u32> = tree
        .iter()
        .copied()
        .filter(|p| !escapee.contains(p))
        .filter(alive)
        .collect();
    assert!(
        left.is_empty(),
        "processes left in the group after stop: {left:?}"
    );
    // The setsid escapee is gone too: the cgroup kill catches it.
    let escaped: Vec<u32> = escapee.iter().copied().filter(alive).collect();
    assert!(
        escaped.is_empty(),
        "setsid'd grandchild escaped the cgroup kill: {escaped:?}"
    );
}

#[test]
fn follows_the_manifests_directory() {
    let mut d = Daemon::start(FAST, &[]);
    // New file starts its pod.
    d.write_manifest("a.yaml", &pod("alpha", "exec sleep 1001", ""));
    let p1 = d.wait_pid("alpha", Duration::from_secs(10), |_| true);
    // touch and an identical rewrite change nothing.
    let path = d.manifests.join("a.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, format!("# a comment\n{text}")).unwrap();
    d.sync_manifests();
    assert_eq!(
        d.service("alpha").unwrap()["pid"].as_u64().unwrap() as u32,
        p1,
        "a comment changed nothing, yet the pod was restarted:\n{}",
        d.stderr()
    );
    // An edit restarts it with the new spec (old stopped first).
    d.write_manifest("a.yaml", &pod("alpha", "exec sleep 1002", ""));
    let p2 = d.wait_pid("alpha", Duration::from_secs(10), |p| p != p1);
    assert!(!pid_alive(p1), "old generation still running");
    let cmdline = std::fs::read_to_string(format!("/proc/{p2}/cmdline")).unwrap();
    assert!(cmdline.contains("1002"), "{cmdline}");
    // A broken edit keeps the last good version running and reports the error.
    d.write_manifest(
        "a.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: alpha\nspec:\n  containers: [ {name: x\n",
    );
    wait_for("manifest error in /health", Duration::from_secs(10), || {
        let (_, h) = d.health();
        (!h["manifest_errors"].as_array().unwrap().is_empty()).then_some(())
    });
    assert_eq!(
        d.service("alpha").unwrap()["pid"].as_u64().unwrap() as u32,
        p2
    );
    assert!(pid_alive(p2));
    // Fixing it clears the error.
    d.write_manifest("a.yaml", &pod("alpha", "exec sleep 1002", ""));
    wait_for("manifest error cleared", Duration::from_secs(10), || {
        let (_, h) = d.health();
        h["manifest_errors"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    });
    // Editor artifacts are ignored.
    d.write_manifest("a.yaml~", &pod("backup", "exec sleep 1003", ""));
    d.write_manifest("a.yaml.swp", &pod("swap", "exec sleep 1004", ""));
    d.sync_manifests();
    assert!(d.service("backup").is_none() && d.service("swap").is_none());
    // A deleted file stops its pod.
    std::fs::remove_file(&path).unwrap();
    wait_for("alpha removed", Duration::from_secs(10), || {
        d.service("alpha").is_none().then_some(())
    });
    assert!(!pid_alive(p2));
}

#[test]
fn manifests_directory_can_vanish_and_come_back() {
    let mut d = Daemon::start(FAST, &[("a.yaml", &pod("alpha", "exec sleep 1000", ""))]);
    let p1 = d.wait_pid("alpha", Duration::from_secs(10), |_| true);
    let moved = d.dir.path().join("moved");
    std::fs::rename(&d.manifests, &moved).unwrap();
    // An unreadable directory keeps what runs: watch over two re-lists (1 s).
    hold_for(
        "alpha keeps running",
        Duration::from_millis(2500),
        || match d.service("alpha").and_then(|s| s["pid"].as_u64()) {
            Some(p) if p as u32 == p1 => Ok(()),
            other => Err(format!("alpha's pid is now {other:?}, was {p1}")),
        },
    );
    std::fs::rename(&moved, &d.manifests).unwrap();
    d.write_manifest("b.yaml", &pod("beta", "exec sleep 1000", ""));
    // The watch is re-established at the next re-list at the latest (relist 1s here).
    d.wait_pid("beta", Duration::from_secs(30), |_| true);
}

#[test]
fn second_instance_is_refused() {
    let d = Daemon::start("", &[]);
    let out = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
}

#[test]
fn missing_executable_is_a_failed_start_with_backoff() {
    let cfg = format!("{FAST}[services.ghost]\ncommand = [\"/nonexistent/ghostd\", \"--flag\"]\n");
    let mut d = Daemon::start(&cfg, &[]);
    let s = d.wait_service(
        "ghost",
        Duration::from_secs(10),
        "a failed start in backoff",
        |s| s["state"] == "backoff",
    );
    let msg = s["message"].as_str().unwrap().to_lowercase();
    assert!(
        msg.contains("no such file") || msg.contains("not found") || msg.contains("does not exist"),
        "{s}"
    );
    assert!(s["pid"].is_null());
    // It is retried with backoff, never given up, and the log is not flooded:
    // with a 100 ms retry the journal gets one line, not ten a second.
    let first = s["since"].as_str().unwrap().to_string();
    let later = d.wait_service(
        "ghost",
        Duration::from_secs(10),
        "another failed start",
        |s| s["since"] != first.as_str(),
    );
    assert_eq!(later["state"], "backoff");
    let second = later["since"].as_str().unwrap().to_string();
    d.wait_service(
        "ghost",
        Duration::from_secs(10),
        "a third failed start",
        |s| s["since"] != second.as_str(),
    );
    assert_eq!(
        d.stderr().matches("start failed").count(),
        1,
        "{}",
        d.stderr()
    );
    // upkeep itself is fine.
    assert!(http_get(d.port, "/livez").is_some());
}

#[test]
fn sigterm_stops_services_in_reverse_dependency_order_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("order.log");
    let cfg = format!(
        "{FAST}[services.base]\ncommand = [\"/bin/sh\", \"-c\", \"trap 'echo base >> {0}; exit 0' TERM; touch {1}/base.up; while true; do sleep 0.05; done\"]\nreadiness = {{ exec = [\"/bin/true\"], period = \"1s\" }}\n\n[services.top]\ncommand = [\"/bin/sh\", \"-c\", \"trap 'echo top >> {0}; exit 0' TERM; touch {1}/top.up; while true; do sleep 0.05; done\"]\nafter = [\"base\"]\n",
        log.display(),
        dir.path().display()
    );
    let mut d = Daemon::start(&cfg, &[]);
    d.wait_pid("top", Duration::from_secs(15), |_| true);
    // A pid is there as soon as the shell is exec'd; its trap only once the
    // shell has run that far (a SIGTERM before it kills it without a word).
    wait_for("both services' traps", Duration::from_secs(15), || {
        (dir.path().join("base.up").exists() && dir.path().join("top.up").exists()).then_some(())
    });
    let base = d.service("base").unwrap()["pid"].as_u64().unwrap() as u32;
    let top = d.service("top").unwrap()["pid"].as_u64().unwrap() as u32;
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));
    assert!(!pid_alive(base) && !pid_alive(top));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "top\nbase\n");
}

#[test]
fn no_zombies_no_fd_leaks_flat_memory_after_many_restarts() {
    let cfg = "[defaults.backoff]\ninitial = \"0s\"\nmax = \"0s\"\nfactor = 1.0\nreset_after = \"10m\"\njitter = 0.0\n\n[services.blink]\ncommand = [\"/bin/sh\", \"-c\", \"(sleep 0 &) ; exit 1\"]\n";
    let mut d = Daemon::start(cfg, &[]);
    // During the storm, fds come and go (a state file being written, the
    // pipes of a spawn in flight): compare quiet states, with blink stopped.
    let quiet = |d: &mut Daemon| {
        let out = d.client(&["stop", "blink"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        d.wait_service("blink", Duration::from_secs(20), "stopped", |s| {
            s["state"] == "stopped" && s["pid"].is_null()
        });
        let pid = d.pid();
        // Every exited process is reaped: no zombie lingers once it is quiet.
        wait_for(
            "no zombie children of upkeep",
            Duration::from_secs(10),
            || zombies_of(pid).is_empty().then_some(()),
        );
    };
    d.wait_service("blink", Duration::from_secs(30), "100 restarts", |s| {
        s["restarts"].as_u64().unwrap_or(0) >= 100
    });
    quiet(&mut d);
    let pid = d.pid();
    // The quiet state settles (the state file written, our /health
    // connection closed): its lowest fd count over a second is the baseline.
    let fds = (0..20)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(50));
            fd_count(pid)
        })
        .min()
        .unwrap();
    let rss = rss_kib(pid);
    let out = d.client(&["start", "blink"]);
    assert!(out.status.success());
    d.wait_service("blink", Duration::from_secs(180), "1000 restarts", |s| {
        s["restarts"].as_u64().unwrap_or(0) >= 1000
    });
    quiet(&mut d);
    let fds2 = wait_for(
        &format!("upkeep's fds back to {fds} in the quiet state"),
        Duration::from_secs(10),
        || {
            let n = fd_count(pid);
            (n <= fds).then_some(n)
        },
    );
    assert!(fds2 <= fds, "fd leak: {fds} -> {fds2}");
    let rss2 = rss_kib(pid);
    assert!(rss2 < rss + 2048, "memory grew: {rss} KiB -> {rss2} KiB");
}

#[test]
fn sighup_restarts_only_changed_services() {
    let cfg_a = format!("{FAST}[services.one]\ncommand = [\"/bin/sleep\", \"1001\"]\n\n[services.two]\ncommand = [\"/bin/sleep\", \"1002\"]\n");
    let mut d = Daemon::start(&cfg_a, &[]);
    let one = d.wait_pid("one", Duration::from_secs(10), |_| true);
    let two = d.wait_pid("two", Duration::from_secs(10), |_| true);
    let text = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("1002", "1003");
    std::fs::write(&d.config, text).unwrap();
    d.signal(libc::SIGHUP);
    let two2 = d.wait_pid("two", Duration::from_secs(10), |p| p != two);
    assert!(std::fs::read_to_string(format!("/proc/{two2}/cmdline"))
        .unwrap()
        .contains("1003"));
    assert_eq!(
        d.service("one").unwrap()["pid"].as_u64().unwrap() as u32,
        one
    );
    // An invalid config on SIGHUP keeps everything as it is.
    std::fs::write(&d.config, "this is = = not toml").unwrap();
    d.signal(libc::SIGHUP);
    wait_for("the reload to be refused", Duration::from_secs(10), || {
        d.stderr().contains("invalid").then_some(())
    });
    assert_eq!(
        d.service("two").unwrap()["pid"].as_u64().unwrap() as u32,
        two2
    );
}

#[test]
fn control_socket_stop_start_restart() {
    let cfg = format!("{FAST}[services.ctl]\ncommand = [\"/bin/sleep\", \"1000\"]\n");
    let mut d = Daemon::start(&cfg, &[]);
    let p1 = d.wait_pid("ctl", Duration::from_secs(10), |_| true);
    let out = d.client(&["restart", "ctl"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p2 = d.wait_pid("ctl", Duration::from_secs(10), |p| p != p1);
    let out = d.client(&["stop", "ctl"]);
    assert!(out.status.success());
    d.wait_service("ctl", Duration::from_secs(10), "stopped", |s| {
        s["state"] == "stopped" && s["pid"].is_null()
    });
    assert!(!pid_alive(p2));
    // Stays stopped across re-lists (1 s).
    hold_for("ctl stays stopped", Duration::from_millis(2500), || {
        let s = d.service("ctl").unwrap();
        (s["state"] == "stopped")
            .then_some(())
            .ok_or_else(|| s.to_string())
    });
    let out = d.client(&["start", "ctl"]);
    assert!(out.status.success());
    d.wait_pid("ctl", Duration::from_secs(10), |p| p != p2);
    let out = d.client(&["restart", "nope"]);
    assert!(!out.status.success());
    // The socket is root-only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(d.state.join("upkeep.sock"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn logs_are_captured_and_readable() {
    let cfg = format!("{FAST}[services.talker]\ncommand = [\"/bin/sh\", \"-c\", \"echo line-one; echo line-two >&2; exec sleep 1000\"]\n");
    let mut d = Daemon::start(&cfg, &[]);
    d.wait_pid("talker", Duration::from_secs(10), |_| true);
    wait_for("log lines", Duration::from_secs(5), || {
        let out = d.client(&["logs", "talker", "-n", "10"]);
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        (s.contains("line-one") && s.contains("line-two")).then_some(())
    });
}

#[test]
fn secrets_never_appear_in_http_responses() {
    let token = "s3cr3t-t0ken-9f8e7d";
    // The secrets are arguments the shell ignores ($0, $1): the services run
    // steadily (sleep itself would refuse an unknown option and crash-loop).
    let cfg = format!("{FAST}[services.secretive]\ncommand = [\"/bin/sh\", \"-c\", \"exec sleep 1000\", \"sh\", \"--token={token}\"]\nenv = {{ API_TOKEN = \"{token}\" }}\n");
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: sec\nspec:\n  containers:\n  - name: sec\n    image: x/y:1\n    command: [\"/bin/sh\", \"-c\", \"exec sleep 1000\", \"sh\", \"--password={token}\"]\n    env:\n    - name: PASSWORD\n      value: {token}\n"
    );
    let mut d = Daemon::start(&cfg, &[("sec.yaml", &manifest)]);
    d.wait_pid("secretive", Duration::from_secs(10), |_| true);
    d.wait_pid("sec", Duration::from_secs(10), |_| true);
    for path in [
        "/health",
        "/health/sec",
        "/health/secretive",
        "/metrics",
        "/livez",
    ] {
        let (_, body) = http_get(d.port, path).unwrap();
        assert!(!body.contains(token), "{path} leaks the token: {body}");
    }
    assert!(!d.stderr().contains(token), "the log leaks the token");
}
