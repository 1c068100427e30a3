//! The shipped `UpkeepServiceStuckInBackoff` alert fires on series taken from
//! a real daemon whose service is stuck in backoff (issue 14: the countdown
//! used to read 0, so the alert could never fire). Needs promtool (Debian
//! package `prometheus`); fails without it.

mod common;

use common::*;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The `upkeep_service_backoff_seconds` sample line of `service`.
fn backoff_line(metrics: &str, service: &str) -> Option<(String, f64)> {
    let want = format!("service=\"{service}\"");
    metrics.lines().find_map(|l| {
        let rest = l.strip_prefix("upkeep_service_backoff_seconds{")?;
        let (labels, value) = rest.rsplit_once("} ")?;
        labels
            .contains(&want)
            .then(|| Some((labels.to_string(), value.trim().parse().ok()?)))?
    })
}

#[test]
fn stuck_in_backoff_alert_fires_on_a_real_daemons_series() {
    require_root();
    // Fails at once, then waits 10 minutes before its next try.
    let config = "[services.stuck]\ncommand = [\"/bin/false\"]\nbackoff = { initial = \"10m\", max = \"10m\", factor = 1.0, jitter = 0.0 }\n";
    let mut d = Daemon::start(config, &[]);
    let s = d.wait_service("stuck", Duration::from_secs(10), "backoff", |s| {
        s["state"] == "backoff"
    });
    assert!(s["next_start_in_ms"].as_u64().unwrap_or(0) > 500_000, "{s}");
    assert!(
        s["message"].as_str().unwrap_or("").contains("exit"),
        "message says nothing of the exit: {s}"
    );

    // Scrape the countdown a few times: it is > 0 and goes down.
    let mut samples = Vec::new();
    let mut labels = String::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while samples.len() < 4 {
        assert!(Instant::now() < deadline, "no backoff samples: {samples:?}");
        let (_, body) = http_get(d.port, "/metrics").unwrap();
        let (l, v) = backoff_line(&body, "stuck")
            .unwrap_or_else(|| panic!("no upkeep_service_backoff_seconds for stuck:\n{body}"));
        labels = l;
        samples.push(v);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(samples.iter().all(|v| *v > 500.0), "{samples:?}");
    assert!(samples.windows(2).all(|w| w[1] < w[0]), "{samples:?}");
    let ms = d.service("stuck").unwrap()["next_start_in_ms"]
        .as_u64()
        .unwrap();
    assert!(ms > 500_000, "next_start_in_ms {ms}");

    // A healthy service (0) for 5 minutes, then stuck: those very samples,
    // once a minute for 17 minutes.
    let values: Vec<String> = (0..22)
        .map(|i| {
            if i < 5 {
                "0".to_string()
            } else {
                format!("{}", samples[i % samples.len()])
            }
        })
        .collect();
    let series =
        format!("upkeep_service_backoff_seconds{{job=\"upkeep\",instance=\"m1:9900\",{labels}}}");
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/alerts.yml");
    let test = format!(
        "rule_files:\n  - {rules:?}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n      - series: '{series}'\n        values: '{}'\n    alert_rule_test:\n      - eval_time: 12m\n        alertname: UpkeepServiceStuckInBackoff\n        exp_alerts: []\n      - eval_time: 21m\n        alertname: UpkeepServiceStuckInBackoff\n        exp_alerts:\n          - exp_labels:\n              severity: warning\n              job: upkeep\n              instance: \"m1:9900\"\n              service: stuck\n            exp_annotations:\n              summary: \"stuck has been in backoff for 15 minutes on m1:9900\"\n              description: \"stuck has been waiting to restart for 15 minutes on m1:9900. See `upkeep status stuck`.\"\n",
        values.join(" ")
    );
    let file = d.dir.path().join("alert_test.yml");
    std::fs::write(&file, test).unwrap();
    let out = std::process::Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool is required for this test (Debian package `prometheus`)");
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
