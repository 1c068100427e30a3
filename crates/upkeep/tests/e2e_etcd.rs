//! End to end with the real etcd from Debian's etcd-server package, run from a
//! kubeadm-style static Pod manifest (the v1.29 fixture adapted to loopback
//! ports, plain HTTP and a temp data dir).

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

/// The kubeadm v1.29 etcd manifest with its addresses, certificates and data
/// directory replaced for a single loopback member.
pub fn etcd_manifest(client: u16, peer: u16, metrics: u16, data: &std::path::Path) -> String {
    let fixture = std::fs::read_to_string(fixtures().join("kubeadm-v1.29-etcd.yaml")).unwrap();
    let mut out = String::new();
    for line in fixture.lines() {
        let t = line.trim_start();
        // Drop TLS flags: no certificates in a test.
        if [
            "- --cert-file",
            "- --key-file",
            "- --peer-cert-file",
            "- --peer-key-file",
            "- --trusted-ca-file",
            "- --peer-trusted-ca-file",
            "- --client-cert-auth",
            "- --peer-client-cert-auth",
            "- --experimental-initial-corrupt-check",
            "- --experimental-watch-progress-notify-interval",
        ]
        .iter()
        .any(|p| t.starts_with(p))
        {
            continue;
        }
        let line = line
            .replace(
                "https://172.30.1.2:2379",
                &format!("http://127.0.0.1:{client}"),
            )
            .replace("https://127.0.0.1:2379,", "")
            .replace(
                "https://172.30.1.2:2380",
                &format!("http://127.0.0.1:{peer}"),
            )
            .replace(
                "http://127.0.0.1:2381",
                &format!("http://127.0.0.1:{metrics}"),
            )
            .replace("port: 2381", &format!("port: {metrics}"))
            .replace("/var/lib/etcd", &data.display().to_string())
            .replace(
                "/etc/kubernetes/pki/etcd",
                &data.join("pki").display().to_string(),
            )
            .replace("initialDelaySeconds: 10", "initialDelaySeconds: 1")
            .replace("periodSeconds: 10", "periodSeconds: 1");
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn real_etcd_survives_sigkill_with_its_data() {
    assert!(
        Command::new("etcd").arg("--version").output().is_ok(),
        "etcd is not installed (Debian etcd-server; scripts/test.sh installs it)"
    );
    let (client, peer, metrics) = (free_port(), free_port(), free_port());
    let mut d = Daemon::prepare("", &[]);
    let data = d.dir.path().join("etcd-data");
    d.write_manifest("etcd.yaml", &etcd_manifest(client, peer, metrics, &data));
    d.spawn();
    let pid = d.wait_pid("etcd", Duration::from_secs(30), |_| true);
    d.wait_service(
        "etcd",
        Duration::from_secs(60),
        "etcd started and ready",
        |s| s["ready"] == true && s["state"] == "running",
    );
    let out = etcdctl(client, &["put", "upkeep-test-key", "it-survives"]);
    assert!(
        out.status.success(),
        "put failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let pid2 = d.wait_pid("etcd", Duration::from_secs(30), |p| p != pid);
    assert_ne!(pid, pid2);
    let s = d.wait_service("etcd", Duration::from_secs(60), "etcd ready again", |s| {
        s["ready"] == true && s["state"] == "running"
    });
    assert_eq!(s["last_exit"]["signal"], "SIGKILL");
    assert_eq!(s["restarts"], 1);
    let out = wait_for("etcdctl get after restart", Duration::from_secs(20), || {
        let o = etcdctl(client, &["get", "--print-value-only", "upkeep-test-key"]);
        o.status.success().then_some(o)
    });
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "it-survives");
    let (code, _) = d.health();
    assert_eq!(code, 200);
}
