//! Probes through the real daemon: liveness restarts, readiness gates /health,
//! startup gates the others, and /metrics of a live upkeep passes promtool.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

const FAST: &str = "[defaults.backoff]\ninitial = \"0s\"\nmax = \"200ms\"\nfactor = 2.0\nreset_after = \"10m\"\njitter = 0.0\n";

#[test]
fn liveness_failure_restarts_through_the_backoff_path() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("alive");
    std::fs::write(&flag, "").unwrap();
    let cfg = format!(
        "{FAST}[services.lively]\ncommand = [\"/bin/sleep\", \"1000\"]\nstop_timeout = \"1s\"\nliveness = {{ exec = [\"/bin/test\", \"-f\", \"{}\"], period = \"200ms\", timeout = \"1s\", failure_threshold = 2 }}\n",
        flag.display()
    );
    let mut d = Daemon::start(&cfg, &[]);
    let p1 = d.wait_pid("lively", Duration::from_secs(10), |_| true);
    // A few passing liveness runs restart nothing.
    d.wait_metric(
        "upkeep_probe_duration_seconds_count",
        &[("service", "lively"), ("probe", "liveness")],
        3.0,
        Duration::from_secs(10),
    );
    assert_eq!(
        d.service("lively").unwrap()["pid"].as_u64().unwrap() as u32,
        p1,
        "restarted while live"
    );
    std::fs::remove_file(&flag).unwrap();
    let s = d.wait_service(
        "lively",
        Duration::from_secs(10),
        "restarted after liveness failure",
        |s| s["restarts"].as_u64().unwrap_or(0) >= 1,
    );
    assert!(!pid_alive(p1));
    let st = d.stderr();
    assert!(st.contains("liveness"), "{st}");
    assert_eq!(s["last_exit"]["signal"], "SIGTERM", "{s}");
    let failures = http_get(d.port, "/metrics").unwrap().1;
    assert!(
        failures
            .lines()
            .any(|l| l.starts_with("upkeep_probe_failures_total{") && l.contains("liveness")),
        "{failures}"
    );
}

#[test]
fn readiness_and_startup_gate_health() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let port = free_port();
    let cfg = format!(
        "{FAST}[services.web]\ncommand = [\"python3\", \"-m\", \"http.server\", \"--bind\", \"127.0.0.1\", \"{port}\"]\nworking_dir = \"{dir}\"\nstartup = {{ exec = [\"/bin/test\", \"-f\", \"{started}\"], period = \"200ms\", failure_threshold = 1000 }}\nreadiness = {{ http = \"http://127.0.0.1:{port}/\", period = \"200ms\" }}\n",
        dir = dir.path().display(),
        started = started.display()
    );
    let mut d = Daemon::start(&cfg, &[]);
    d.wait_pid("web", Duration::from_secs(10), |_| true);
    // The startup probe has failed a few times: still starting, not ready.
    d.wait_metric(
        "upkeep_probe_failures_total",
        &[("service", "web"), ("probe", "startup")],
        3.0,
        Duration::from_secs(10),
    );
    let s = d.service("web").unwrap();
    assert_eq!(s["state"], "starting", "startup probe not passed yet: {s}");
    assert_eq!(s["ready"], false);
    assert_eq!(d.health().0, 503);
    assert_eq!(http_get(d.port, "/health/web").unwrap().0, 503);
    std::fs::write(&started, "").unwrap();
    d.wait_service("web", Duration::from_secs(10), "running and ready", |s| {
        s["state"] == "running" && s["ready"] == true
    });
    assert_eq!(d.health().0, 200);
    assert_eq!(http_get(d.port, "/health/web").unwrap().0, 200);
    assert_eq!(http_get(d.port, "/health/nope").unwrap().0, 404);
}

#[test]
fn live_metrics_pass_promtool() {
    let cfg = format!(
        "{FAST}[services.ok]\ncommand = [\"/bin/sleep\", \"1000\"]\nreadiness = {{ exec = [\"/bin/true\"], period = \"200ms\" }}\n\n[services.crashy]\ncommand = [\"/bin/sh\", \"-c\", \"exit 2\"]\n\n[services.ghost]\ncommand = [\"/nonexistent/ghost\"]\n"
    );
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: pod\nspec:\n  containers:\n  - name: a\n    image: x/a:1\n    command: [\"/bin/sleep\", \"1000\"]\n  - name: b\n    image: x/b:1\n    command: [\"/bin/sleep\", \"1001\"]\n    livenessProbe:\n      tcpSocket:\n        host: 127.0.0.1\n        port: 1\n      periodSeconds: 1\n      failureThreshold: 100\n";
    let mut d = Daemon::start(&cfg, &[("pod.yaml", pod), ("broken.yaml", "kind: [")]);
    d.wait_service("crashy", Duration::from_secs(10), "a few restarts", |s| {
        s["restarts"].as_u64().unwrap_or(0) >= 3
    });
    d.wait_pid("pod/b", Duration::from_secs(10), |_| true);
    // Every series below exists once pod/b's liveness probe has failed and
    // ok's readiness probe has run.
    d.wait_metric(
        "upkeep_probe_failures_total",
        &[("service", "pod/b"), ("probe", "liveness")],
        1.0,
        Duration::from_secs(10),
    );
    d.wait_metric(
        "upkeep_probe_duration_seconds_count",
        &[("service", "ok"), ("probe", "readiness")],
        1.0,
        Duration::from_secs(10),
    );
    let (code, body) = http_get(d.port, "/metrics").unwrap();
    assert_eq!(code, 200);
    for name in [
        "upkeep_service_up{",
        "upkeep_service_ready{",
        "upkeep_service_restarts_total{",
        "upkeep_service_exits_total{",
        "upkeep_service_start_time_seconds{",
        "upkeep_service_backoff_seconds{",
        "upkeep_probe_failures_total{",
        "upkeep_probe_duration_seconds_bucket{",
        "upkeep_manifest_errors ",
        "upkeep_build_info{",
        "process_resident_memory_bytes",
    ] {
        assert!(body.contains(name), "missing {name} in:\n{body}");
    }
    assert!(body.contains("upkeep_manifest_errors 1"), "{body}");
    let file = d.dir.path().join("metrics.txt");
    std::fs::write(&file, &body).unwrap();
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool is installed (Debian prometheus; scripts/test.sh installs it)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}\n{body}"
    );
}

#[test]
fn status_exit_codes_follow_readiness() {
    let cfg = format!("{FAST}[services.up]\ncommand = [\"/bin/sleep\", \"1000\"]\n\n[services.down]\ncommand = [\"/bin/sh\", \"-c\", \"exit 1\"]\nbackoff = {{ initial = \"10s\", max = \"10s\" }}\n");
    let mut d = Daemon::start(&cfg, &[]);
    d.wait_pid("up", Duration::from_secs(10), |_| true);
    d.wait_service("down", Duration::from_secs(10), "in backoff", |s| {
        s["state"] == "backoff"
    });
    let all = d.client(&["status"]);
    assert_eq!(all.status.code(), Some(0));
    let table = String::from_utf8_lossy(&all.stdout);
    assert!(
        table.contains("NAME") && table.contains("up") && table.contains("backoff"),
        "{table}"
    );
    assert_eq!(d.client(&["status", "up"]).status.code(), Some(0));
    assert_eq!(d.client(&["status", "down"]).status.code(), Some(1));
    let json = d.client(&["status", "down", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["state"], "backoff");
}
