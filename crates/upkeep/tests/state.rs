//! What upkeep knows survives upkeep: last good manifests, operator holds
//! and process identity across its own restarts, crashes and reloads.
//! Processes are found through the daemon (/health pids), never by a /proc
//! scan.

mod common;

use common::*;
use std::time::{Duration, Instant};

const FAST: &str = "[defaults.backoff]\ninitial = \"0s\"\nmax = \"200ms\"\nfactor = 2.0\nreset_after = \"10m\"\njitter = 0.0\n";

fn pod(name: &str, arg: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: {name}\n    image: x/{name}:1\n    command: [\"/bin/sh\", \"-c\", \"exec sleep {arg}\"]\n"
    )
}

fn pid_of(d: &mut Daemon, name: &str) -> u32 {
    d.wait_pid(name, Duration::from_secs(15), |_| true)
}

/// Restarts upkeep the hard way (SIGKILL) or the soft way (SIGTERM with
/// `on_exit = "keep"`).
fn restart(d: &mut Daemon, sig: i32) {
    d.signal(sig);
    d.wait_exit(Duration::from_secs(15));
    d.spawn();
}

/// Case 1: A broken manifest keeps its last good version running across upkeep's
/// restart, and so does a manifests directory that is missing at start-up.
#[test]
fn last_good_manifest_survives_upkeep_restart_and_a_missing_directory() {
    require_root();
    let mut d = Daemon::prepare(FAST, &[("etcd.yaml", &pod("etcd", "3001"))]);
    set_keep(&d);
    d.spawn();
    let etcd = pid_of(&mut d, "etcd");
    d.track(etcd);
    // Break it: the last good version keeps running.
    let path = d.manifests.join("etcd.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("  oops: [\n");
    std::fs::write(&path, &text).unwrap();
    wait_for(
        "the manifest error in /health",
        Duration::from_secs(15),
        || {
            let (_, h) = d.health();
            (!h["manifest_errors"].as_array().unwrap().is_empty()).then_some(())
        },
    );
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        restart(&mut d, sig);
        let (_, h) = d.health();
        assert!(
            !h["manifest_errors"].as_array().unwrap().is_empty(),
            "the broken file is reported: {h}"
        );
        assert_eq!(pid_of(&mut d, "etcd"), etcd, "etcd was replaced: {h}");
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            pid_alive(etcd),
            "etcd was stopped after upkeep's restart\n{}",
            d.stderr()
        );
        assert_eq!(pid_of(&mut d, "etcd"), etcd);
    }
    // The whole directory gone while upkeep is down: an error, not a removal.
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(15));
    let moved = d.dir.path().join("manifests.away");
    std::fs::rename(&d.manifests, &moved).unwrap();
    d.spawn();
    let (_, h) = d.health();
    assert!(
        !h["manifest_errors"].as_array().unwrap().is_empty(),
        "a missing directory is a manifest error: {h}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(pid_alive(etcd), "etcd was stopped for a missing directory");
    assert_eq!(pid_of(&mut d, "etcd"), etcd);
    // Fixed and back: the fixed spec (same command) keeps the same process.
    std::fs::rename(&moved, &d.manifests).unwrap();
    d.write_manifest("etcd.yaml", &pod("etcd", "3001"));
    wait_for("the error to clear", Duration::from_secs(15), || {
        let (_, h) = d.health();
        h["manifest_errors"]
            .as_array()
            .unwrap()
            .is_empty()
            .then_some(())
    });
    assert_eq!(pid_of(&mut d, "etcd"), etcd);
}

/// Case 2: `upkeep stop NAME` lasts until `upkeep start NAME`, whatever happens
/// to upkeep.
#[test]
fn operator_stop_survives_upkeep_restarts_and_crashes() {
    require_root();
    let mut d = Daemon::prepare(FAST, &[("etcd.yaml", &pod("etcd", "3002"))]);
    set_keep(&d);
    d.spawn();
    let etcd = pid_of(&mut d, "etcd");
    let out = d.client(&["stop", "etcd"]);
    assert!(out.status.success(), "{out:?}");
    wait_for("etcd stopped", Duration::from_secs(15), || {
        (!pid_alive(etcd)).then_some(())
    });
    for sig in [libc::SIGTERM, libc::SIGKILL, libc::SIGTERM] {
        restart(&mut d, sig);
        std::thread::sleep(Duration::from_millis(1500));
        let s = d.service("etcd").expect("etcd is listed");
        assert_eq!(s["state"], "stopped", "the hold was forgotten: {s}");
        assert!(s["pid"].is_null(), "{s}");
    }
    let out = d.client(&["start", "etcd"]);
    assert!(out.status.success(), "{out:?}");
    let again = pid_of(&mut d, "etcd");
    d.track(again);
    restart(&mut d, libc::SIGKILL);
    assert_eq!(
        pid_of(&mut d, "etcd"),
        again,
        "started again, stays started"
    );
}

/// Case 3: Losing the state file restarts nothing: the process's cgroup says
/// what it runs.
#[test]
fn lost_state_file_restarts_nothing() {
    require_root();
    let mut d = Daemon::prepare(
        &format!(
            "{FAST}[services.kubelet]\ncommand = [\"/bin/sh\", \"-c\", \"exec sleep 3003\"]\n"
        ),
        &[("etcd.yaml", &pod("etcd", "3004"))],
    );
    set_keep(&d);
    d.spawn();
    let etcd = pid_of(&mut d, "etcd");
    let kubelet = pid_of(&mut d, "kubelet");
    d.track(etcd);
    d.track(kubelet);
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        d.signal(sig);
        d.wait_exit(Duration::from_secs(15));
        std::fs::remove_file(d.state.join("state.json")).unwrap();
        d.spawn();
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!(
            pid_of(&mut d, "etcd"),
            etcd,
            "etcd restarted\n{}",
            d.stderr()
        );
        assert_eq!(pid_of(&mut d, "kubelet"), kubelet, "kubelet restarted");
    }
}

/// Case 3, the other way round: a pod deleted and a host service removed
/// while upkeep was down, with the state file lost too, are still stopped:
/// their processes are found through their cgroups, not only through
/// records (found by a random-seed run of chaos.rs).
#[test]
fn removed_while_down_with_the_state_file_lost_is_still_stopped() {
    require_root();
    let config = |old: bool| {
        let mut c = format!(
            "{FAST}[services.kubelet]\ncommand = [\"/bin/sh\", \"-c\", \"exec sleep 3013\"]\n"
        );
        if old {
            c.push_str(
                "[services.old_daemon]\ncommand = [\"/bin/sh\", \"-c\", \"exec sleep 3012\"]\n",
            );
        }
        c
    };
    let mut d = Daemon::prepare(
        &config(true),
        &[
            ("etcd.yaml", &pod("etcd", "3010")),
            ("gone.yaml", &pod("gone", "3011")),
        ],
    );
    set_keep(&d);
    d.spawn();
    let etcd = pid_of(&mut d, "etcd");
    let kubelet = pid_of(&mut d, "kubelet");
    let gone = pid_of(&mut d, "gone");
    let old = pid_of(&mut d, "old_daemon");
    for p in [etcd, kubelet, gone, old] {
        d.track(p);
    }
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(15));
    std::fs::remove_file(d.state.join("state.json")).unwrap();
    std::fs::remove_file(d.dir.path().join("manifests/gone.yaml")).unwrap();
    let text = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace(&config(true), &config(false));
    std::fs::write(&d.config, text).unwrap();
    d.spawn();
    wait_for(
        "the removed pod and host service to be stopped",
        Duration::from_secs(30),
        || (!pid_alive(gone) && !pid_alive(old)).then_some(()),
    );
    assert_eq!(
        pid_of(&mut d, "etcd"),
        etcd,
        "etcd restarted\n{}",
        d.stderr()
    );
    assert_eq!(pid_of(&mut d, "kubelet"), kubelet, "kubelet restarted");
    assert!(d.service("gone").is_none() && d.service("old_daemon").is_none());
    assert!(
        d.stderr().contains("no longer configured: stopping it"),
        "{}",
        d.stderr()
    );
}

/// A pod whose file is deleted, with upkeep killed while the pod is still
/// stopping and another manifest broken: the next upkeep still stops it
/// (the removed file's last good text is kept until its pod is gone, so the
/// next upkeep knows it was removed; found by a random-seed chaos run).
#[test]
fn a_pod_removed_and_upkeep_killed_during_its_stop_is_stopped_while_another_is_broken() {
    require_root();
    let slow = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: slow\nspec:\n  terminationGracePeriodSeconds: 4\n  containers:\n  - name: slow\n    image: x/slow:1\n    command: [\"/bin/sh\", \"-c\", \"trap '' TERM; while true; do sleep 0.2; done\", \"3020\"]\n";
    let mut d = Daemon::prepare(
        FAST,
        &[("slow.yaml", slow), ("other.yaml", &pod("other", "3021"))],
    );
    set_keep(&d);
    d.spawn();
    let pid = pid_of(&mut d, "slow");
    d.track(pid);
    let other = pid_of(&mut d, "other");
    d.track(other);
    let path = d.dir.path().join("manifests/other.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("  oops: [\n");
    std::fs::write(&path, text).unwrap();
    wait_for("the manifest error", Duration::from_secs(20), || {
        let (_, h) = d.health();
        (!h["manifest_errors"].as_array()?.is_empty()).then_some(())
    });
    std::fs::remove_file(d.dir.path().join("manifests/slow.yaml")).unwrap();
    wait_for(
        "the removed pod's stop to begin",
        Duration::from_secs(20),
        || (d.service("slow")?["state"] == "stopping").then_some(()),
    );
    assert!(pid_alive(pid), "slow ignores SIGTERM: still stopping");
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(15));
    d.spawn();
    wait_for(
        "the removed pod to be stopped by the next upkeep",
        Duration::from_secs(30),
        || (!pid_alive(pid)).then_some(()),
    );
    assert_eq!(
        pid_of(&mut d, "other"),
        other,
        "the broken pod's last good version keeps running"
    );
}

/// Case 4: A crash during a stop never leaves the old processes adopted as
/// current: a record always describes the process that actually runs.
#[test]
fn a_crash_during_a_stop_still_replaces_the_old_processes() {
    require_root();
    const N: usize = 30;
    let svc = |i: usize, v: &str| {
        format!(
            "[services.s{i}]\ncommand = [\"/bin/sh\", \"-c\", \"trap '' TERM; while true; do sleep 0.2; done\", \"{v}\"]\nstop_timeout = \"3s\"\n"
        )
    };
    let config = |v: &str| {
        let mut c = FAST.to_string();
        for i in 0..N {
            c.push_str(&svc(i, v));
        }
        c
    };
    let mut d = Daemon::prepare(&config("v1"), &[]);
    d.spawn();
    let old: Vec<u32> = (0..N).map(|i| pid_of(&mut d, &format!("s{i}"))).collect();
    // Change every argv, reload, and crash upkeep mid-stop.
    let text = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("\"v1\"", "\"v2\"");
    std::fs::write(&d.config, text).unwrap();
    d.signal(libc::SIGHUP);
    wait_for("the stops to begin", Duration::from_secs(10), || {
        let (_, h) = d.health();
        h["services"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["state"] == "stopping")
            .then_some(())
    });
    std::thread::sleep(Duration::from_millis(1000));
    d.signal(libc::SIGKILL);
    d.wait_exit(Duration::from_secs(10));
    d.spawn();
    // Every service ends on a new process; every old one is gone.
    for (i, &p) in old.iter().enumerate() {
        let name = format!("s{i}");
        let new = d.wait_pid(&name, Duration::from_secs(30), |q| q != p);
        let cmdline = std::fs::read(format!("/proc/{new}/cmdline")).unwrap_or_default();
        assert!(
            String::from_utf8_lossy(&cmdline).contains("v2"),
            "{name} runs the old spec"
        );
        wait_for(&format!("old {name} gone"), Duration::from_secs(15), || {
            (!pid_alive(p)).then_some(())
        });
    }
}

/// Case 6: A change of supervision policy alone (backoff, grace, probes) applies
/// live: nothing restarts.
#[test]
fn a_policy_change_restarts_nothing() {
    require_root();
    let mut d = Daemon::prepare(
        &format!(
            "{FAST}[services.kubelet]\ncommand = [\"/bin/sh\", \"-c\", \"exec sleep 3006\"]\n"
        ),
        &[("etcd.yaml", &pod("etcd", "3007"))],
    );
    d.spawn();
    let etcd = pid_of(&mut d, "etcd");
    let kubelet = pid_of(&mut d, "kubelet");
    let text = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("max = \"200ms\"", "max = \"5s\"")
        .replace(
            "command = [\"/bin/sh\", \"-c\", \"exec sleep 3006\"]",
            "command = [\"/bin/sh\", \"-c\", \"exec sleep 3006\"]\nstop_timeout = \"7s\"",
        );
    std::fs::write(&d.config, text).unwrap();
    d.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(
        pid_of(&mut d, "etcd"),
        etcd,
        "a backoff change restarted etcd"
    );
    assert_eq!(
        pid_of(&mut d, "kubelet"),
        kubelet,
        "a policy change restarted kubelet"
    );
    assert_eq!(d.service("etcd").unwrap()["restarts"], 0);
    assert_eq!(d.service("kubelet").unwrap()["restarts"], 0);
}

/// Case 7: A manifest written in place slowly is never applied half-written.
#[test]
fn a_slowly_written_manifest_is_applied_only_once_complete() {
    require_root();
    let mut d = Daemon::start(FAST, &[]);
    let full = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: slow\nspec:\n  containers:\n  - name: slow\n    image: x/slow:1\n    command: [\"/bin/sh\", \"-c\", \"sleep 3008; :\"]\n    args: [\"--data-dir=/var/lib/slow\"]\n";
    // A valid prefix first (no args), the rest 400 ms later, in place.
    let cut = full.find("    args:").unwrap();
    let path = d.manifests.join("slow.yaml");
    std::fs::write(&path, &full[..cut]).unwrap();
    std::thread::sleep(Duration::from_millis(400));
    std::fs::write(&path, full).unwrap();
    let pid = pid_of(&mut d, "slow");
    let cmdline = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap())
        .to_string();
    assert!(
        cmdline.contains("--data-dir"),
        "started half-written: {cmdline:?}"
    );
    assert_eq!(d.service("slow").unwrap()["restarts"], 0);
}

/// Case 8: A record from another boot is never adopted.
#[test]
fn a_record_from_another_boot_is_not_adopted() {
    require_root();
    let mut d = Daemon::prepare(
        &format!("{FAST}[services.host]\ncommand = [\"/bin/sh\", \"-c\", \"exec sleep 3009\"]\n"),
        &[],
    );
    set_keep(&d);
    d.spawn();
    let host = pid_of(&mut d, "host");
    d.track(host);
    d.signal(libc::SIGTERM);
    d.wait_exit(Duration::from_secs(10));
    // Pretend the record was written in another boot (same pid and start
    // time: exactly the match a reboot can produce).
    let path = d.state.join("state.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["boot_id"] = serde_json::json!("00000000-0000-0000-0000-000000000000");
    // And without the cgroup to fall back on.
    v["services"]["host"]["cgroup"] = serde_json::Value::Null;
    std::fs::write(&path, serde_json::to_vec(&v).unwrap()).unwrap();
    d.spawn();
    assert!(
        d.stderr().contains("another boot"),
        "the record of another boot was trusted:\n{}",
        d.stderr()
    );
    // Not adopted from the record; found through its cgroup (which cannot
    // outlive a reboot), so still exactly one process.
    assert_eq!(pid_of(&mut d, "host"), host);
    let _ = Instant::now();
}
