//! preStop hooks, readiness-gated dependencies, resource limits, JSON logs.

mod common;

use common::*;
use std::time::Duration;

const FAST: &str = "[defaults.backoff]\ninitial = \"0s\"\nmax = \"200ms\"\nfactor = 2.0\nreset_after = \"10m\"\njitter = 0.0\n";

#[test]
fn prestop_runs_before_the_stop_signal_inside_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("order.log");
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hooked
spec:
  terminationGracePeriodSeconds: 5
  containers:
  - name: hooked
    image: x/hooked:1
    command: ["/bin/sh", "-c", "trap 'echo term >> {log}; exit 0' TERM; while true; do sleep 0.05; done"]
    env:
    - name: WHO
      value: prestop
    lifecycle:
      preStop:
        exec:
          command: ["/bin/sh", "-c", "echo $(WHO) >> {log}"]
"#,
        log = log.display()
    );
    let mut d = Daemon::start(FAST, &[("hooked.yaml", &manifest)]);
    let pid = d.wait_pid("hooked", Duration::from_secs(10), |_| true);
    std::fs::remove_file(d.manifests.join("hooked.yaml")).unwrap();
    wait_for("hooked removed", Duration::from_secs(15), || {
        d.service("hooked").is_none().then_some(())
    });
    assert!(!pid_alive(pid));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "prestop\nterm\n");
}

#[test]
fn after_waits_for_the_dependency_to_be_ready() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready");
    let cfg = format!(
        "{FAST}[services.base]\ncommand = [\"/bin/sleep\", \"1000\"]\nreadiness = {{ exec = [\"/bin/test\", \"-f\", \"{}\"], period = \"100ms\" }}\n\n[services.top]\ncommand = [\"/bin/sleep\", \"1001\"]\nafter = [\"base\"]\n",
        flag.display()
    );
    let mut d = Daemon::start(&cfg, &[]);
    d.wait_pid("base", Duration::from_secs(10), |_| true);
    // base has failed its readiness probe a few times: top must still wait.
    d.wait_metric(
        "upkeep_probe_failures_total",
        &[("service", "base"), ("probe", "readiness")],
        3.0,
        Duration::from_secs(10),
    );
    let top = d.service("top").unwrap();
    assert!(
        top["pid"].is_null(),
        "top started before base was ready: {top}"
    );
    assert!(
        top["message"]
            .as_str()
            .unwrap()
            .contains("waiting for base"),
        "{top}"
    );
    std::fs::write(&flag, "").unwrap();
    d.wait_pid("top", Duration::from_secs(10), |_| true);
}

#[test]
fn memory_and_cpu_limits_land_in_the_cgroup() {
    require_root();
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: limited\nspec:\n  containers:\n  - name: limited\n    image: x/l:1\n    command: [\"/bin/sleep\", \"1000\"]\n    resources:\n      limits:\n        memory: 64Mi\n        cpu: 500m\n";
    let mut d = Daemon::start(FAST, &[("limited.yaml", manifest)]);
    let pid = d.wait_pid("limited", Duration::from_secs(10), |_| true);
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path_of = |controller: &str| {
        cgroups.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            (ctrls.split(',').any(|c| c == controller)).then(|| path.to_string())
        })
    };
    let v2 = path_of("").unwrap_or_default();
    assert!(v2.contains("upkeep"), "not in an upkeep cgroup: {cgroups}");
    let limit = if let Some(p) = path_of("memory").filter(|p| p != "/") {
        std::fs::read_to_string(format!("/sys/fs/cgroup/memory{p}/memory.limit_in_bytes")).unwrap()
    } else {
        std::fs::read_to_string(format!("/sys/fs/cgroup{v2}/memory.max")).unwrap()
    };
    assert_eq!(limit.trim(), (64u64 << 20).to_string(), "{cgroups}");
    if let Some(p) = path_of("cpu").filter(|p| p != "/") {
        let quota =
            std::fs::read_to_string(format!("/sys/fs/cgroup/cpu{p}/cpu.cfs_quota_us")).unwrap();
        let period =
            std::fs::read_to_string(format!("/sys/fs/cgroup/cpu{p}/cpu.cfs_period_us")).unwrap();
        let (q, per): (u64, u64) = (
            quota.trim().parse().unwrap(),
            period.trim().parse().unwrap(),
        );
        assert_eq!(q * 1000 / per, 500, "cpu quota {q}/{per}");
    }
}

#[test]
fn json_log_format() {
    let mut d = Daemon::prepare("", &[]);
    let child = std::process::Command::new(bin())
        .args(["--log-format", "json", "run", "--config"])
        .arg(&d.config)
        .stderr(std::process::Stdio::from(
            std::fs::File::create(d.dir.path().join("upkeep.stderr")).unwrap(),
        ))
        .spawn()
        .unwrap();
    d.child = Some(child);
    let port = d.port;
    wait_for("health", Duration::from_secs(10), || {
        http_get(port, "/health")
    });
    let first = wait_for("a first log line", Duration::from_secs(10), || {
        d.stderr().lines().next().map(str::to_string)
    });
    let v: serde_json::Value =
        serde_json::from_str(&first).unwrap_or_else(|e| panic!("not JSON ({e}): {first}"));
    assert!(
        v.get("level").is_some() && v.get("message").is_some(),
        "{v}"
    );
}

#[test]
fn logs_follow_prints_new_output() {
    let cfg = format!(
        "{FAST}[services.ticker]\ncommand = [\"/bin/sh\", \"-c\", \"i=0; while true; do i=$((i+1)); echo tick-$i; sleep 0.1; done\"]\n"
    );
    let mut d = Daemon::start(&cfg, &[]);
    d.wait_pid("ticker", Duration::from_secs(10), |_| true);
    let out = d.dir.path().join("follow.out");
    let mut follower = std::process::Command::new(bin())
        .args(["logs", "ticker", "-f", "-n", "1", "--config"])
        .arg(&d.config)
        .stdout(std::fs::File::create(&out).unwrap())
        .spawn()
        .unwrap();
    let pid = follower.id();
    // Lines keep arriving after the initial tail.
    let lines = wait_for("followed lines", Duration::from_secs(10), || {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        let n = text.lines().filter(|l| l.starts_with("tick-")).count();
        (n >= 5).then_some(text)
    });
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let _ = follower.wait();
    let nums: Vec<u64> = lines
        .lines()
        .filter_map(|l| l.strip_prefix("tick-")?.parse().ok())
        .collect();
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1),
        "lines out of order or missing: {nums:?}"
    );
}

#[test]
fn run_creates_the_state_dir_0700_and_the_log_dir_0750_and_keeps_existing_modes() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    // Neither exists yet: upkeep creates them (with a missing parent for the logs).
    let mut d = Daemon::prepare("", &[]);
    let nested_logs = d.dir.path().join("var/log/upkeep");
    let text = std::fs::read_to_string(&d.config).unwrap().replace(
        &format!("log_dir = {:?}", d.logs),
        &format!("log_dir = {nested_logs:?}"),
    );
    std::fs::write(&d.config, text).unwrap();
    d.spawn();
    assert_eq!(mode(&d.state), 0o700, "state_dir");
    assert_eq!(mode(&nested_logs), 0o750, "log_dir");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
    // An existing directory is left as the operator set it.
    std::fs::set_permissions(&nested_logs, std::fs::Permissions::from_mode(0o755)).unwrap();
    d.spawn();
    assert_eq!(mode(&nested_logs), 0o755, "an existing log_dir was changed");
    assert_eq!(mode(&d.state), 0o700);
}
