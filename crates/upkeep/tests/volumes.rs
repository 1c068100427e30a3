//! hostPath volumes bound at their mountPath in a private mount namespace,
//! end to end through the daemon: the old HA guide's etcd.yaml run with the
//! real etcd from Debian, a read-only mount, and volumes that cannot be used.
//! Needs root (mount namespaces).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Host directories the guide's etcd.yaml mounts (created empty if missing).
const GUIDE_HOST_DIRS: &[&str] = &[
    "/var/etcd",
    "/etc/ssl",
    "/usr/share/ssl",
    "/var/ssl",
    "/usr/ssl",
    "/usr/lib/ssl",
    "/usr/local/openssl",
    "/etc/openssl",
    "/etc/pki/tls",
];

/// `olddocs-ha-etcd.yaml` with its placeholders filled for one member on
/// loopback: a static `--initial-cluster` instead of the discovery URL, the
/// test's ports, Debian's etcd binary, and the `varetcd` hostPath at
/// `varetcd`. Nothing else changes (the mounts are the guide's).
fn guide_etcd(client: u16, peer: u16, varetcd: &Path) -> String {
    let fixture = std::fs::read_to_string(repo_fixtures().join("olddocs-ha-etcd.yaml")).unwrap();
    assert!(fixture.contains("      path: /var/etcd/data\n"));
    fixture
        .replace("/usr/local/bin/etcd", "/usr/bin/etcd")
        .replace("${NODE_NAME}", "node1")
        .replace("${NODE_IP}", "127.0.0.1")
        .replace("2380", &peer.to_string())
        .replace("4001", &client.to_string())
        .replace("- --discovery", "- --initial-cluster")
        .replace(
            "- ${DISCOVERY_TOKEN}",
            &format!("- node1=http://127.0.0.1:{peer}"),
        )
        .replace(
            "      path: /var/etcd/data\n",
            &format!("      path: {}\n", varetcd.display()),
        )
}

fn mount_points(pid: u32) -> Vec<String> {
    std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .collect()
}

fn mnt_ns(pid: &str) -> std::path::PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap()
}

#[test]
fn the_guides_etcd_keeps_its_data_in_the_moved_host_path_across_a_sigkill() {
    require_root();
    assert!(
        Command::new("etcd").arg("--version").output().is_ok(),
        "etcd is not installed (Debian etcd-server; scripts/test.sh installs it)"
    );
    // Dropped last: removes the mount points and empty sources the pod
    // created on this host.
    let _created = CreatedDirs::watch(GUIDE_HOST_DIRS);
    let (client, peer) = (free_port(), free_port());
    let mut d = Daemon::prepare("", &[]);
    let varetcd = d.dir.path().join("varetcd");
    let manifest = guide_etcd(client, peer, &varetcd);
    d.write_manifest("etcd.yaml", &manifest);

    // `check` accepts it, `render` shows each mount.
    let out = d.client(&["check"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = d.client(&["render", "etcd-server"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("mount ns:     private"), "{text}");
    assert!(
        text.contains(&format!(
            "hostPath:     {} at /var/etcd (Unchecked, read-write)",
            varetcd.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("hostPath:     /etc/ssl at /etc/ssl (Unchecked, read-only)"),
        "{text}"
    );

    d.spawn();
    let pid = d.wait_pid("etcd-server", Duration::from_secs(30), |_| true);
    d.wait_service(
        "etcd-server",
        Duration::from_secs(60),
        "etcd started and ready",
        |s| s["ready"] == true && s["state"] == "running",
    );
    let out = etcdctl(client, &["put", "guide-key", "kept-in-scratch"]);
    assert!(
        out.status.success(),
        "put failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // etcd's data dir is /var/etcd/data in its namespace; on the host the
    // member is in <scratch>/data, and the host's /var/etcd stays empty.
    assert_ne!(mnt_ns(&pid.to_string()), mnt_ns("self"));
    let mounts = mount_points(pid);
    for p in GUIDE_HOST_DIRS {
        assert!(mounts.iter().any(|m| m == p), "{p} not mounted: {mounts:?}");
    }
    assert!(varetcd.join("data/member").is_dir());
    assert_eq!(std::fs::read_dir("/var/etcd").unwrap().count(), 0);

    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let pid2 = d.wait_pid("etcd-server", Duration::from_secs(30), |p| p != pid);
    let s = d.wait_service(
        "etcd-server",
        Duration::from_secs(60),
        "etcd ready again",
        |s| s["ready"] == true && s["state"] == "running",
    );
    assert_eq!(s["last_exit"]["signal"], "SIGKILL");
    assert_eq!(s["restarts"], 1);
    assert!(mount_points(pid2).iter().any(|m| m == "/var/etcd"));
    let out = wait_for("etcdctl get after restart", Duration::from_secs(20), || {
        let o = etcdctl(client, &["get", "--print-value-only", "guide-key"]);
        o.status.success().then_some(o)
    });
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "kept-in-scratch"
    );
    let (code, _) = d.health();
    assert_eq!(code, 200);
}

#[test]
fn a_write_into_a_read_only_mount_fails_with_erofs_and_the_host_file_is_unchanged() {
    require_root();
    let mut d = Daemon::prepare("", &[]);
    let base = d.dir.path().to_path_buf();
    let (conf, seen, out) = (base.join("conf"), base.join("seen"), base.join("out"));
    std::fs::create_dir(&conf).unwrap();
    std::fs::create_dir(&out).unwrap();
    std::fs::write(conf.join("f"), "original\n").unwrap();
    let script = format!(
        "cat {s}/f > {o}/read; echo changed 2> {o}/err > {s}/f; echo $? > {o}/rc; exec sleep 1000",
        s = seen.display(),
        o = out.display()
    );
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: ro}}\nspec:\n  hostNetwork: true\n  containers:\n  - name: c\n    image: none\n    command: [/bin/sh, -c, {script:?}]\n    volumeMounts:\n    - {{name: conf, mountPath: {seen}, readOnly: true}}\n    - {{name: out, mountPath: {out}}}\n  volumes:\n  - {{name: conf, hostPath: {{path: {conf}, type: Directory}}}}\n  - {{name: out, hostPath: {{path: {out}, type: Directory}}}}\n",
        seen = seen.display(),
        out = out.display(),
        conf = conf.display(),
    );
    d.write_manifest("ro.yaml", &manifest);
    d.spawn();
    let pid = d.wait_pid("ro", Duration::from_secs(30), |_| true);
    let rc = wait_for("the write attempt", Duration::from_secs(20), || {
        let rc = std::fs::read_to_string(out.join("rc")).ok()?;
        rc.ends_with('\n').then_some(rc)
    });
    assert_ne!(rc.trim(), "0");
    let err = std::fs::read_to_string(out.join("err")).unwrap();
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(
        std::fs::read_to_string(out.join("read")).unwrap(),
        "original\n"
    );
    assert_eq!(
        std::fs::read_to_string(conf.join("f")).unwrap(),
        "original\n"
    );
    assert!(mount_points(pid).iter().any(|m| Path::new(m) == seen));
    assert_eq!(
        std::fs::read_dir(&seen).unwrap().count(),
        0,
        "host side empty"
    );
}

#[test]
fn an_unusable_volume_is_a_backoff_with_its_reason_and_no_process() {
    require_root();
    let mut d = Daemon::prepare("", &[]);
    let base = d.dir.path().to_path_buf();
    let missing = base.join("not-there");
    let ran = base.join("ran");
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: bad}}\nspec:\n  hostNetwork: true\n  containers:\n  - name: c\n    image: none\n    command: [/bin/sh, -c, \"touch {ran}; exec sleep 1000\"]\n    volumeMounts:\n    - {{name: data, mountPath: {at}}}\n  volumes:\n  - {{name: data, hostPath: {{path: {missing}, type: Directory}}}}\n",
        ran = ran.display(),
        at = base.join("at").display(),
        missing = missing.display(),
    );
    d.write_manifest("bad.yaml", &manifest);
    d.spawn();
    let s = d.wait_service("bad", Duration::from_secs(20), "backoff", |s| {
        s["state"] == "backoff"
    });
    let msg = s["message"].as_str().unwrap();
    assert!(
        msg.contains(&missing.display().to_string())
            && msg.contains("must be an existing directory"),
        "{msg}"
    );
    assert!(s["pid"].is_null());
    assert!(!ran.exists(), "the process never ran");

    // Fixed on the host: the next attempt starts it.
    std::fs::create_dir(&missing).unwrap();
    d.wait_service("bad", Duration::from_secs(60), "running", |s| {
        s["state"] == "running"
    });
    wait_for("the process ran", Duration::from_secs(10), || {
        ran.exists().then_some(())
    });
}

#[test]
fn bad_mount_paths_fail_check_naming_file_and_field() {
    let d = Daemon::prepare("", &[]);
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostNetwork: true\n  containers:\n  - name: c\n    image: none\n    command: [/bin/true]\n    volumeMounts:\n    - {name: v, mountPath: /srv/x}\n    - {name: w, mountPath: /srv/x/}\n    - {name: v, mountPath: relative}\n  volumes:\n  - {name: v, hostPath: {path: /srv/a}}\n  - {name: w, hostPath: {path: /srv/b}}\n";
    d.write_manifest("p.yaml", manifest);
    let out = d.client(&["check"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("p.yaml"), "{err}");
    assert!(
        err.contains("spec.containers[0].volumeMounts[1].mountPath")
            && err.contains("already the mountPath"),
        "{err}"
    );
    assert!(
        err.contains("spec.containers[0].volumeMounts[2].mountPath") && err.contains("absolute"),
        "{err}"
    );
}

#[test]
fn exec_probes_run_in_the_services_mount_namespace() {
    require_root();
    let mut d = Daemon::prepare("", &[]);
    let base = d.dir.path().to_path_buf();
    let (conf, seen) = (base.join("conf"), base.join("seen"));
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("ready"), "yes\n").unwrap();
    // On the host, <seen> is an empty directory: the probe passes only if
    // it sees the bind.
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: probed}}\nspec:\n  hostNetwork: true\n  containers:\n  - name: c\n    image: none\n    command: [/bin/sleep, \"1000\"]\n    workingDir: {seen}\n    readinessProbe:\n      exec: {{command: [/bin/sh, -c, \"test \\\"$(cat ready)\\\" = yes\"]}}\n      periodSeconds: 1\n    volumeMounts:\n    - {{name: conf, mountPath: {seen}, readOnly: true}}\n  volumes:\n  - {{name: conf, hostPath: {{path: {conf}}}}}\n",
        seen = seen.display(),
        conf = conf.display(),
    );
    d.write_manifest("probed.yaml", &manifest);
    d.spawn();
    d.wait_service("probed", Duration::from_secs(30), "ready", |s| {
        s["ready"] == true && s["state"] == "running"
    });
    assert!(!seen.join("ready").exists());
}

#[test]
fn an_adopted_process_keeps_its_namespace_and_its_probes_still_enter_it() {
    require_root();
    let mut d = Daemon::prepare("", &[]);
    let text = std::fs::read_to_string(&d.config)
        .unwrap()
        .replace("on_exit = \"stop\"", "on_exit = \"keep\"");
    std::fs::write(&d.config, text).unwrap();
    let base = d.dir.path().to_path_buf();
    let (conf, seen) = (base.join("conf"), base.join("seen"));
    std::fs::create_dir(&conf).unwrap();
    std::fs::write(conf.join("ready"), "yes\n").unwrap();
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: kept}}\nspec:\n  hostNetwork: true\n  containers:\n  - name: c\n    image: none\n    command: [/bin/sleep, \"1000\"]\n    readinessProbe:\n      exec: {{command: [/bin/sh, -c, \"test \\\"$(cat {seen}/ready)\\\" = yes\"]}}\n      periodSeconds: 1\n    volumeMounts:\n    - {{name: conf, mountPath: {seen}, readOnly: true}}\n  volumes:\n  - {{name: conf, hostPath: {{path: {conf}}}}}\n",
        seen = seen.display(),
        conf = conf.display(),
    );
    d.write_manifest("kept.yaml", &manifest);
    d.spawn();
    let pid = d.wait_pid("kept", Duration::from_secs(30), |_| true);
    d.wait_service("kept", Duration::from_secs(30), "ready", |s| {
        s["ready"] == true
    });
    let ns = mnt_ns(&pid.to_string());
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(pid_alive(pid), "the service outlives upkeep");

    d.spawn();
    let s = d.wait_service("kept", Duration::from_secs(30), "adopted", |s| {
        s["pid"].as_u64() == Some(u64::from(pid))
    });
    assert_eq!(s["restarts"], 0, "{s}");
    assert_eq!(mnt_ns(&pid.to_string()), ns, "nothing redone at adoption");
    // The file changes to "no": the probe of the adopted process reads it
    // through the process's namespace and the service turns unready.
    std::fs::write(conf.join("ready"), "no\n").unwrap();
    d.wait_service("kept", Duration::from_secs(30), "unready", |s| {
        s["ready"] == false
    });
    std::fs::write(conf.join("ready"), "yes\n").unwrap();
    d.wait_service("kept", Duration::from_secs(30), "ready again", |s| {
        s["ready"] == true && s["pid"].as_u64() == Some(u64::from(pid))
    });
}
