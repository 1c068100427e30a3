//! Services survive upkeep's restart, upgrade and crash, and are adopted
//! (never duplicated) by the next upkeep.

mod common;

use common::*;
use std::time::Duration;

const KEEP: &str = "[defaults.backoff]\ninitial = \"0s\"\nmax = \"200ms\"\nfactor = 2.0\nreset_after = \"10m\"\njitter = 0.0\n";

fn keep_config(extra: &str) -> String {
    // Tests' base config says on_exit = "stop"; a later key would be a duplicate,
    // so these tests rewrite it.
    format!("{KEEP}{extra}")
}

fn pod(name: &str, arg: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: {name}\n    image: x/{name}:1\n    command: [\"/bin/sleep\", \"{arg}\"]\n    readinessProbe:\n      exec:\n        command: [\"/bin/true\"]\n      periodSeconds: 1\n"
    )
}

/// Live service processes of this daemon (found through its cgroups and
/// process tree) with the argv marker.
fn count(d: &Daemon, marker: &str) -> usize {
    d.services_with_arg(marker).len()
}

#[test]
fn sigterm_leaves_services_running_and_the_next_upkeep_adopts_them() {
    let mut d = Daemon::prepare(
        &keep_config("[services.host]\ncommand = [\"/bin/sleep\", \"4242\"]\n"),
        &[("p.yaml", &pod("pod", "4343"))],
    );
    set_keep(&d);
    d.spawn();
    let host = d.wait_pid("host", Duration::from_secs(10), |_| true);
    let pod_pid = d.wait_pid("pod", Duration::from_secs(10), |_| true);
    d.wait_service("pod", Duration::from_secs(10), "ready", |s| {
        s["ready"] == true
    });
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        pid_alive(host) && pid_alive(pod_pid),
        "services must survive upkeep's exit"
    );

    d.spawn();
    // The very first answer already shows the adopted, ready service: no flip to not-ready.
    let (code, h) = d.health();
    let pod_s = h["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "pod")
        .unwrap()
        .clone();
    assert_eq!(pod_s["pid"].as_u64().unwrap() as u32, pod_pid, "{h}");
    assert_eq!(
        pod_s["ready"], true,
        "readiness must survive upkeep's restart: {h}"
    );
    assert_eq!(code, 200, "{h}");
    assert_eq!(
        d.service("host").unwrap()["pid"].as_u64().unwrap() as u32,
        host
    );
    assert_eq!(count(&d, "4242"), 1);
    assert_eq!(count(&d, "4343"), 1);
    // Adopted processes are still supervised: kill one, it comes back.
    unsafe { libc::kill(host as i32, libc::SIGKILL) };
    let host2 = d.wait_pid("host", Duration::from_secs(10), |p| p != host);
    assert_ne!(host, host2);
    let s = d.service("host").unwrap();
    assert!(
        s["last_exit"]["code"].is_null() && s["last_exit"]["signal"].is_null(),
        "adopted exit status is unknown: {s}"
    );
}

#[test]
fn sigkill_of_upkeep_then_restart_adopts_without_duplicates() {
    let mut d = Daemon::prepare(
        &keep_config("[services.host]\ncommand = [\"/bin/sleep\", \"5252\"]\n"),
        &[],
    );
    set_keep(&d);
    d.spawn();
    let host = d.wait_pid("host", Duration::from_secs(10), |_| true);
    d.wait_state_saved(host);
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(5));
    assert!(pid_alive(host));
    d.spawn();
    let again = d.wait_pid("host", Duration::from_secs(10), |_| true);
    assert_eq!(again, host);
    assert_eq!(count(&d, "5252"), 1);
}

#[test]
fn changed_spec_is_restarted_and_dead_service_is_started_after_upkeep_restart() {
    let cfg = keep_config("[services.a]\ncommand = [\"/bin/sleep\", \"6161\"]\n\n[services.b]\ncommand = [\"/bin/sleep\", \"6262\"]\n");
    let mut d = Daemon::prepare(&cfg, &[]);
    set_keep(&d);
    d.spawn();
    let a = d.wait_pid("a", Duration::from_secs(10), |_| true);
    let b = d.wait_pid("b", Duration::from_secs(10), |_| true);
    d.wait_state_saved(a);
    d.wait_state_saved(b);
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(10));
    // While upkeep is away: a's spec changes, b dies.
    let text = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("6161", "6363");
    std::fs::write(&d.config, text).unwrap();
    unsafe { libc::kill(b as i32, libc::SIGKILL) };
    d.spawn();
    let a2 = d.wait_pid("a", Duration::from_secs(10), |p| p != a);
    assert!(std::fs::read_to_string(format!("/proc/{a2}/cmdline"))
        .unwrap()
        .contains("6363"));
    assert!(!pid_alive(a), "the old generation must be stopped");
    d.wait_pid("b", Duration::from_secs(10), |p| p != b);
    assert_eq!(count(&d, "6363"), 1);
    assert_eq!(count(&d, "6161"), 0);
    assert_eq!(count(&d, "6262"), 1);
}

#[test]
fn killing_upkeep_at_any_point_never_duplicates_a_service() {
    let cfg = keep_config(
        "[services.steady]\ncommand = [\"/bin/sleep\", \"7171\"]\n\n[services.flappy]\ncommand = [\"/bin/sh\", \"-c\", \"sleep 0.3; exit 1\", \"7272\"]\nbackoff = { initial = \"300ms\", max = \"300ms\" }\n",
    );
    let mut d = Daemon::prepare(&cfg, &[("p.yaml", &pod("pod", "7373"))]);
    set_keep(&d);
    for round in 0..8u64 {
        d.spawn();
        // Kill at varying points: during start, running, backoff, a manifest change.
        if round % 3 == 1 {
            d.write_manifest(
                "p.yaml",
                &pod("pod", if round % 2 == 0 { "7373" } else { "7373.0" }),
            );
        }
        std::thread::sleep(Duration::from_millis(40 + round * 90));
        d.signal(libc::SIGKILL);
        d.wait_exit(Duration::from_secs(5));
    }
    d.spawn();
    d.wait_pid("steady", Duration::from_secs(10), |_| true);
    d.wait_pid("pod", Duration::from_secs(10), |_| true);
    // A duplicate would be a second process next to the adopted one: watch
    // for one over a few of flappy's restarts.
    hold_for("no duplicates", Duration::from_millis(1500), || {
        let steady = d.services_with_arg("7171");
        let pod = d.services_with_arg("7373");
        let flappy = d.services_with_arg("7272");
        if steady.len() == 1 && pod.len() <= 1 && flappy.len() <= 1 {
            Ok(())
        } else {
            Err(format!("steady {steady:?}, pod {pod:?}, flappy {flappy:?}"))
        }
    });
    let (_, h) = d.health();
    for s in h["services"].as_array().unwrap() {
        if let Some(p) = s["pid"].as_u64() {
            assert!(pid_alive(p as u32), "/health names a dead pid: {s}");
        }
    }
}

#[test]
fn corrupt_state_file_is_reported_and_ignored() {
    let mut d = Daemon::prepare(
        &keep_config("[services.s]\ncommand = [\"/bin/sleep\", \"8181\"]\n"),
        &[],
    );
    std::fs::create_dir_all(&d.state).unwrap();
    std::fs::write(d.state.join("state.json"), "{not json").unwrap();
    d.spawn();
    d.wait_pid("s", Duration::from_secs(10), |_| true);
    assert!(d.stderr().contains("state file"), "{}", d.stderr());
}
