//! Three masters on one machine: three upkeep instances (own config, manifests,
//! state dir and port), each running one member of a 3-member etcd cluster from
//! a kubeadm-style static Pod manifest (Debian's etcd-server, loopback ports).

mod common;

use common::*;
use std::time::Duration;

struct Member {
    d: Daemon,
    client: u16,
}

fn member_manifest(
    i: usize,
    client: u16,
    peer: u16,
    metrics: u16,
    cluster: &str,
    data: &std::path::Path,
) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
  labels:
    component: etcd
    tier: control-plane
spec:
  hostNetwork: true
  priorityClassName: system-node-critical
  terminationGracePeriodSeconds: 10
  containers:
  - name: etcd
    image: registry.k8s.io/etcd:3.5.10-0
    command:
    - etcd
    - --advertise-client-urls=http://127.0.0.1:{client}
    - --data-dir={data}
    - --initial-advertise-peer-urls=http://127.0.0.1:{peer}
    - --initial-cluster={cluster}
    - --initial-cluster-state=new
    - --initial-cluster-token=upkeep-ha-test
    - --listen-client-urls=http://127.0.0.1:{client}
    - --listen-metrics-urls=http://127.0.0.1:{metrics}
    - --listen-peer-urls=http://127.0.0.1:{peer}
    - --name=master-{i}
    - --snapshot-count=10000
    livenessProbe:
      failureThreshold: 8
      httpGet:
        host: 127.0.0.1
        path: /health?exclude=NOSPACE&serializable=true
        port: {metrics}
        scheme: HTTP
      initialDelaySeconds: 10
      periodSeconds: 10
      timeoutSeconds: 15
    readinessProbe:
      httpGet:
        host: 127.0.0.1
        path: /health?serializable=true
        port: {metrics}
      periodSeconds: 1
      failureThreshold: 3
    volumeMounts:
    - mountPath: {data}
      name: etcd-data
  volumes:
  - hostPath:
      path: {data}
      type: DirectoryOrCreate
    name: etcd-data
"#,
        data = data.display()
    )
}

/// A write succeeds within a few seconds: killing the leader costs one election
/// (etcd's election timeout is 1 s), during which a put may fail with
/// "leader changed"; losing quorum would make every attempt fail.
fn put_ok(client: u16, k: &str, v: &str) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if etcdctl(client, &["put", k, v]).status.success() {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn get(client: u16, k: &str) -> Option<String> {
    let o = etcdctl(client, &["get", "--print-value-only", k]);
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

#[test]
fn three_masters_keep_quorum_through_kills_and_a_rolling_upgrade() {
    let ports: Vec<(u16, u16, u16)> = (0..3)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let cluster = (0..3)
        .map(|i| format!("master-{i}=http://127.0.0.1:{}", ports[i].1))
        .collect::<Vec<_>>()
        .join(",");
    let mut members: Vec<Member> = Vec::new();
    for (i, (client, peer, metrics)) in ports.iter().copied().enumerate() {
        let mut d = Daemon::prepare("", &[]);
        let text = std::fs::read_to_string(&d.config)
            .unwrap()
            .replace("on_exit = \"stop\"", "on_exit = \"keep\"");
        std::fs::write(&d.config, text).unwrap();
        let data = d.dir.path().join("etcd-data");
        d.write_manifest(
            "etcd.yaml",
            &member_manifest(i, client, peer, metrics, &cluster, &data),
        );
        d.spawn();
        members.push(Member { d, client });
    }
    for m in members.iter_mut() {
        m.d.wait_service("etcd", Duration::from_secs(90), "member ready", |s| {
            s["ready"] == true
        });
    }
    // Write through one member, read through another.
    assert!(put_ok(members[0].client, "k1", "v1"));
    assert_eq!(get(members[2].client, "k1").as_deref(), Some("v1"));

    // SIGKILL one etcd: the cluster stays writable, the member comes back healthy.
    let victim = members[1].d.service("etcd").unwrap()["pid"]
        .as_u64()
        .unwrap() as u32;
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    assert!(
        put_ok(members[0].client, "k2", "v2"),
        "cluster lost quorum with one member down"
    );
    members[1]
        .d
        .wait_pid("etcd", Duration::from_secs(30), |p| p != victim);
    members[1]
        .d
        .wait_service("etcd", Duration::from_secs(60), "member ready again", |s| {
            s["ready"] == true
        });
    assert_eq!(
        wait_for(
            "k2 on the restarted member",
            Duration::from_secs(20),
            || get(members[1].client, "k2")
        ),
        "v2"
    );

    // SIGKILL one upkeep and restart it: its etcd keeps its pid.
    let etcd2 = members[2].d.service("etcd").unwrap()["pid"]
        .as_u64()
        .unwrap() as u32;
    members[2].d.wait_state_saved(etcd2);
    members[2].d.signal(libc::SIGKILL);
    members[2].d.wait_exit(Duration::from_secs(5));
    assert!(put_ok(members[0].client, "k3", "v3"));
    members[2].d.spawn();
    assert_eq!(
        members[2].d.service("etcd").unwrap()["pid"]
            .as_u64()
            .unwrap() as u32,
        etcd2,
        "etcd was restarted by upkeep's restart"
    );

    // Rolling upgrade: restart all three upkeeps one after another; zero etcd restarts.
    let before: Vec<(u32, u64)> = members
        .iter_mut()
        .map(|m| {
            let s = m.d.service("etcd").unwrap();
            (
                s["pid"].as_u64().unwrap() as u32,
                s["restarts"].as_u64().unwrap(),
            )
        })
        .collect();
    for (i, m) in members.iter_mut().enumerate() {
        m.d.signal(libc::SIGTERM);
        assert_eq!(m.d.wait_exit(Duration::from_secs(10)), Some(0));
        assert!(
            put_ok(m.client, &format!("roll{i}"), "x"),
            "etcd not writable while its upkeep was down"
        );
        m.d.spawn();
        let s =
            m.d.wait_service("etcd", Duration::from_secs(10), "adopted and ready", |s| {
                s["ready"] == true
            });
        assert_eq!(s["pid"].as_u64().unwrap() as u32, before[i].0);
        assert_eq!(s["restarts"].as_u64().unwrap(), before[i].1);
    }
    for m in members.iter() {
        assert_eq!(get(m.client, "roll2").as_deref(), Some("x"));
    }
}
