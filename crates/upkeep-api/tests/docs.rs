//! docs/alerts.yml passes `promtool check rules` and its unit tests
//! (`promtool test rules`), and docs/metrics.md documents every metric that
//! /metrics can emit. promtool is required: these tests fail without it.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, SystemTime};
use upkeep_api::expo::Text;
use upkeep_api::metrics::{definitions, write_snapshot, ProcessCollector};
use upkeep_core::snapshot::{Histogram, ServiceStatus, Snapshot};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool is required for this test (Debian package `prometheus`): {e}")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn alerts_pass_promtool_check_rules() {
    let (ok, out) = promtool(&["check", "rules", "docs/alerts.yml"]);
    assert!(ok, "promtool check rules docs/alerts.yml:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alerts_pass_their_promtool_unit_tests() {
    let (ok, out) = promtool(&["test", "rules", "crates/upkeep-api/tests/alerts_test.yml"]);
    assert!(ok, "promtool test rules:\n{out}");
}

#[test]
fn metrics_doc_covers_every_emitted_metric() {
    let now = SystemTime::now();
    let mut s = ServiceStatus::new("a", "/x", now);
    s.pid = Some(1);
    s.start_time = Some(now);
    s.exits = BTreeMap::from([("exit_nonzero".into(), 1)]);
    s.probe_failures = BTreeMap::from([("liveness".into(), 1)]);
    let mut h = Histogram::default();
    h.observe(0.01);
    s.probe_durations = BTreeMap::from([("liveness".into(), h)]);
    s.next_start_at = Some(now + Duration::from_secs(1));
    let mut snap = Snapshot::default();
    snap.services.insert("a".into(), s);
    snap.rollout = Some(Default::default());
    let mut t = Text::default();
    write_snapshot(&mut t, &snap, "1", now);
    ProcessCollector::new().write(&mut t);
    let usage = upkeep_core::usage::Usage {
        cpu_seconds: Some(1.0),
        memory_working_set_bytes: Some(1),
        memory_rss_bytes: Some(1),
        oom_events: Some(0),
        fs_read_bytes: Some(0),
        fs_write_bytes: Some(0),
        pressure_cpu: Some(Default::default()),
        pressure_memory: Some(Default::default()),
        pressure_io: Some(Default::default()),
    };
    let target = upkeep_api::usage_metrics::Target {
        service: "a".into(),
        pod: None,
        cgroup: None,
        pid: 1,
        start_time: Some(now),
    };
    let row = upkeep_api::usage_metrics::Row::new(&target, "n", usage);
    upkeep_api::usage_metrics::write_usage(&mut t, &[row]);
    let mut names: Vec<String> = t
        .as_str()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| l.split(' ').next().unwrap_or_default().to_string())
        .collect();
    assert!(names.len() >= 30, "{names:?}");
    // What can be emitted is what is defined: nothing defined goes undocumented.
    names.extend(definitions().iter().map(|d| d.name.to_string()));
    let doc = std::fs::read_to_string(repo().join("docs/metrics.md")).expect("docs/metrics.md");
    for name in &names {
        assert!(
            doc.contains(&format!("| `{name}` |")),
            "docs/metrics.md has no table row for {name}"
        );
    }
}
