//! Black-box tests of events and `describe` (issue 14) against a real
//! daemon: events survive upkeep's restart; describe shows the output tail
//! of a crash and no env value; `stop` on a stopped service says so.

mod common;

use common::*;
use std::time::Duration;

fn events_json(d: &Daemon, name: &str) -> Vec<serde_json::Value> {
    let out = d.client(&["events", name, "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap()
}

fn has(events: &[serde_json::Value], reason: &str) -> bool {
    events.iter().any(|e| e["reason"] == reason)
}

#[test]
fn events_survive_a_restart_and_describe_shows_the_crash_output() {
    require_root();
    let config = "[services.crasher]\ncommand = [\"/bin/sh\", \"-c\", \"echo starting up; echo \\\"boom: disk on fire\\\"; sleep 0.3; exit 3\"]\nenv = { SECRET_TOKEN = \"hunter2-do-not-print\" }\nbackoff = { initial = \"1m\", max = \"1m\", factor = 1.0, jitter = 0.0 }\n";
    let mut d = Daemon::start(config, &[]);
    d.wait_service(
        "crasher",
        Duration::from_secs(20),
        "exit 3, then backoff",
        |s| s["last_exit"]["code"] == 3 && s["state"] == "backoff",
    );
    let first = wait_for("the exit event", Duration::from_secs(10), || {
        let ev = events_json(&d, "crasher");
        (has(&ev, "Started") && has(&ev, "Exited")).then_some(ev)
    });
    let exited = first.iter().find(|e| e["reason"] == "Exited").unwrap();
    assert!(
        exited["message"].as_str().unwrap().contains("exit code 3"),
        "{exited}"
    );
    assert!(
        exited.get("output").is_none(),
        "events -o json leaks output"
    );

    // describe: state, the crash with its output, the events; no env value.
    let out = d.client(&["describe", "crasher"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    for want in [
        "Name:          crasher",
        "State:         backoff",
        "boom: disk on fire",
        "Exited",
        "Started",
        "Next start in:",
    ] {
        assert!(text.contains(want), "describe lacks {want:?}:\n{text}");
    }
    assert!(!text.contains("hunter2"), "describe leaks env:\n{text}");
    assert!(
        !text.contains("echo starting"),
        "describe leaks argv:\n{text}"
    );

    // The text table, newest last.
    let table = String::from_utf8_lossy(&d.client(&["events"]).stdout).to_string();
    let started = table.find("Started").unwrap_or_else(|| panic!("{table}"));
    let exited = table.find("Exited").unwrap_or_else(|| panic!("{table}"));
    assert!(started < exited, "{table}");

    // upkeep restarts: the events are still there, and new ones follow.
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));
    d.spawn();
    let after = wait_for(
        "a start after upkeep's restart",
        Duration::from_secs(10),
        || {
            let ev = events_json(&d, "crasher");
            (ev.iter().filter(|e| e["reason"] == "Started").count() >= 2).then_some(ev)
        },
    );
    assert!(
        after.iter().any(|e| e == exited_event(&first)),
        "the exit before the restart is gone: {after:?}"
    );
}

fn exited_event(ev: &[serde_json::Value]) -> &serde_json::Value {
    ev.iter().find(|e| e["reason"] == "Exited").unwrap()
}

#[test]
fn operator_actions_are_events_and_stop_on_stopped_says_so() {
    require_root();
    let config = "[services.steady]\ncommand = [\"/bin/sleep\", \"1000\"]\n";
    let mut d = Daemon::start(config, &[]);
    d.wait_pid("steady", Duration::from_secs(10), |_| true);
    let out = d.client(&["stop", "steady"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "steady: stopping"
    );
    d.wait_service("steady", Duration::from_secs(20), "stopped", |s| {
        s["state"] == "stopped"
    });
    let out = d.client(&["stop", "steady"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "steady: already stopped"
    );
    // `logs` of an unknown name lists the known ones.
    let out = d.client(&["logs", "nosuch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.contains("no service named \"nosuch\" (known: steady)"),
        "{err}"
    );
    let ev = wait_for("the operator event", Duration::from_secs(10), || {
        let ev = events_json(&d, "steady");
        has(&ev, "Operator").then_some(ev)
    });
    assert!(
        ev.iter()
            .any(|e| e["message"] == "stop requested by the operator"),
        "{ev:?}"
    );
}

#[test]
fn a_readiness_flip_is_logged_once_and_its_message_cleared() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let ok = dir.path().join("ok");
    std::fs::write(&ok, "").unwrap();
    let config = format!(
        "[services.web]\ncommand = [\"/bin/sleep\", \"1000\"]\nreadiness = {{ exec = [\"/bin/sh\", \"-c\", \"test -f {} || {{ echo 'not ok: no file'; exit 1; }}\"], period = \"200ms\" }}\n",
        ok.display()
    );
    let mut d = Daemon::start(&config, &[]);
    d.wait_service("web", Duration::from_secs(10), "ready", |s| {
        s["ready"] == true
    });
    std::fs::remove_file(&ok).unwrap();
    let s = d.wait_service("web", Duration::from_secs(10), "not ready", |s| {
        s["ready"] == false
    });
    let msg = s["message"].as_str().unwrap();
    assert!(
        msg.starts_with("readiness probe failed: exit code 1: not ok: no file"),
        "{s}"
    );
    // Many failing runs (200 ms apart), one log line and one event.
    wait_for("more failing runs", Duration::from_secs(10), || {
        let (_, m) = http_get(d.port, "/metrics")?;
        m.lines()
            .find(|l| l.starts_with("upkeep_probe_failures_total{") && l.contains("readiness"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .filter(|n| *n >= 5.0)
    });
    let err = d.stderr();
    assert_eq!(
        err.matches("readiness probe failed").count(),
        1,
        "not once per transition:\n{err}"
    );
    std::fs::write(&ok, "").unwrap();
    let s = d.wait_service("web", Duration::from_secs(10), "ready again", |s| {
        s["ready"] == true
    });
    assert_eq!(s["message"], "", "{s}");
    let ev = events_json(&d, "web");
    let reasons: Vec<&str> = ev.iter().filter_map(|e| e["reason"].as_str()).collect();
    assert_eq!(reasons, ["Started", "Ready", "NotReady", "Ready"], "{ev:?}");
}

#[test]
fn a_manifest_error_and_its_fix_are_events() {
    require_root();
    let mut d = Daemon::start("", &[("web.yaml", "kind: [")]);
    let all = |d: &Daemon| {
        let out = d.client(&["events", "-o", "json"]);
        serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_default()
    };
    let ev = wait_for("a ManifestError event", Duration::from_secs(10), || {
        let ev = all(&d);
        has(&ev, "ManifestError").then_some(ev)
    });
    let e = ev.iter().find(|e| e["reason"] == "ManifestError").unwrap();
    assert!(e["service"].as_str().unwrap().ends_with("web.yaml"), "{e}");
    d.write_manifest(
        "web.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  containers:\n  - name: c\n    image: x/c:1\n    command: [\"/bin/sleep\", \"1000\"]\n",
    );
    wait_for("a ManifestFixed event", Duration::from_secs(10), || {
        has(&all(&d), "ManifestFixed").then_some(())
    });
    d.wait_pid("web", Duration::from_secs(10), |_| true);
}
