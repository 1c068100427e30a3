//! Planned changes across masters (issue #16): three upkeeps on one machine,
//! each with a `[cluster]` table pointing at a 3-member etcd that they run
//! themselves (Debian's etcd as kubeadm-style static pods), and a stand-in
//! "apiserver" static pod (an HTTP server with a readiness probe).
//!
//! - a good change written to all three manifest directories at once rolls
//!   one master at a time (sampled every 50 ms: never two masters with a
//!   serial service not ready), etcd stays writable, all end on the new spec;
//! - a broken change (the new command exits 1) is tried by exactly one
//!   master, rolled back after `ready_timeout`, halted in etcd; the other
//!   two never restart their apiserver and every `/health` names the halt;
//! - while a master holds the lock, a SIGKILLed etcd on another master is
//!   restarted at once (a crash restart never waits).
//!
//! Needs root and etcd/etcdctl (scripts/test.sh installs them); fails
//! loudly without them.

mod common;

use common::*;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(8);

struct Master {
    d: Daemon,
    client: u16,
    api_port: u16,
    /// The etcd manifest with extra flags (one per line, `    - --flag=x`).
    etcd: Box<dyn Fn(&str) -> String>,
}

fn etcd_manifest(
    i: usize,
    client: u16,
    peer: u16,
    metrics: u16,
    cluster: &str,
    data: &std::path::Path,
    extra: &str,
) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: etcd
  namespace: kube-system
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 10
  containers:
  - name: etcd
    image: etcd:3.5.10-0
    command:
    - etcd
    - --advertise-client-urls=http://127.0.0.1:{client}
    - --data-dir={data}
    - --initial-advertise-peer-urls=http://127.0.0.1:{peer}
    - --initial-cluster={cluster}
    - --initial-cluster-state=new
    - --initial-cluster-token=upkeep-rollout-test
    - --listen-client-urls=http://127.0.0.1:{client}
    - --listen-metrics-urls=http://127.0.0.1:{metrics}
    - --listen-peer-urls=http://127.0.0.1:{peer}
    - --name=master-{i}
{extra}    readinessProbe:
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

/// The stand-in apiserver: `version` goes to its environment; `broken`
/// makes its command exit 1 at once.
fn api_manifest(port: u16, version: &str, broken: bool) -> String {
    let command = if broken {
        r#"["sh", "-c", "exit 1"]"#.to_string()
    } else {
        format!(r#"["python3", "-m", "http.server", "--bind", "127.0.0.1", "{port}"]"#)
    };
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: apiserver
  namespace: kube-system
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  containers:
  - name: apiserver
    image: kube-apiserver:v1.30.0
    command: {command}
    env:
    - name: VERSION
      value: "{version}"
    readinessProbe:
      httpGet:
        host: 127.0.0.1
        path: /
        port: {port}
      periodSeconds: 1
      failureThreshold: 1
"#
    )
}

fn health_of(port: u16) -> Option<Value> {
    let (_, body) = http_get(port, "/health")?;
    serde_json::from_str(&body).ok()
}

fn svc<'a>(h: &'a Value, name: &str) -> Option<&'a Value> {
    h["services"].as_array()?.iter().find(|s| s["name"] == name)
}

/// The VERSION a process was started with (found through upkeep's /health).
fn version_of(pid: u64) -> String {
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    env.split(|b| *b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("VERSION="))
        .unwrap_or("")
        .to_string()
}

fn put_ok(client: u16, k: &str, v: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if etcdctl(client, &["put", k, v]).status.success() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_masters() -> Vec<Master> {
    let ports: Vec<(u16, u16, u16, u16)> = (0..3)
        .map(|_| (free_port(), free_port(), free_port(), free_port()))
        .collect();
    let cluster = (0..3)
        .map(|i| format!("master-{i}=http://127.0.0.1:{}", ports[i].1))
        .collect::<Vec<_>>()
        .join(",");
    let endpoints = ports
        .iter()
        .map(|p| format!("\"http://127.0.0.1:{}\"", p.0))
        .collect::<Vec<_>>()
        .join(", ");
    let extra = format!(
        "[cluster]\netcd = [{endpoints}]\nprefix = \"/upkeep-test\"\nready_timeout = \"{}s\"\nsoak = \"1s\"\n",
        READY_TIMEOUT.as_secs()
    );
    let mut masters = Vec::new();
    for (i, (client, peer, metrics, api_port)) in ports.iter().copied().enumerate() {
        let mut d = Daemon::prepare(&extra, &[]);
        let text = std::fs::read_to_string(&d.config).unwrap().replace(
            "node_name = \"test-node\"",
            &format!("node_name = \"master-{i}\""),
        );
        std::fs::write(&d.config, text).unwrap();
        let data = d.dir.path().join("etcd-data");
        let cl = cluster.clone();
        let etcd =
            Box::new(move |extra: &str| etcd_manifest(i, client, peer, metrics, &cl, &data, extra));
        d.write_manifest("etcd.yaml", &etcd(""));
        d.write_manifest("apiserver.yaml", &api_manifest(api_port, "v1", false));
        d.spawn();
        masters.push(Master {
            d,
            client,
            api_port,
            etcd,
        });
    }
    for m in masters.iter_mut() {
        for s in ["etcd", "apiserver"] {
            m.d.wait_service(s, Duration::from_secs(90), "ready", |s| s["ready"] == true);
        }
    }
    // Every master has published its record (the gate knows all three).
    wait_for(
        "three node records in etcd",
        Duration::from_secs(30),
        || {
            let o = etcdctl(
                masters[0].client,
                &["get", "--prefix", "--keys-only", "/upkeep-test/nodes/"],
            );
            let text = String::from_utf8_lossy(&o.stdout).to_string();
            (text.lines().filter(|l| !l.is_empty()).count() == 3).then_some(())
        },
    );
    masters
}

/// Samples every master's /health every 50 ms until stopped; returns the
/// most masters seen at once with a serial service not ready, and when.
fn sampler(
    ports: Vec<u16>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let mut worst = (0, Vec::new());
        while !stop.load(Ordering::Relaxed) {
            let mut down = Vec::new();
            for (i, p) in ports.iter().enumerate() {
                let bad = match health_of(*p) {
                    Some(h) => ["etcd", "apiserver"]
                        .iter()
                        .any(|n| svc(&h, n).is_none_or(|s| s["ready"] != true)),
                    None => true,
                };
                if bad {
                    down.push(format!("master-{i}"));
                }
            }
            if down.len() > worst.0 {
                worst = (down.len(), down);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        worst
    })
}

fn api_pid(m: &mut Master) -> u64 {
    m.d.service("apiserver").unwrap()["pid"].as_u64().unwrap()
}

#[test]
fn planned_changes_roll_one_master_at_a_time_and_a_broken_one_halts() {
    require_root();
    let mut masters = start_masters();

    // === 1. a good change to all three at the same instant ===
    let before: Vec<u64> = masters.iter_mut().map(api_pid).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let sample = sampler(masters.iter().map(|m| m.d.port).collect(), stop.clone());
    let writes_ok = Arc::new(AtomicBool::new(true));
    let writer = {
        let (stop, ok, client) = (stop.clone(), writes_ok.clone(), masters[0].client);
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                if !put_ok(client, "rollout-probe", &n.to_string()) {
                    ok.store(false, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        })
    };
    for m in &masters {
        m.d.write_manifest("apiserver.yaml", &api_manifest(m.api_port, "v2", false));
    }
    let t0 = Instant::now();
    for (i, m) in masters.iter_mut().enumerate() {
        let s = m.d.wait_service(
            "apiserver",
            Duration::from_secs(120),
            "the new spec ready",
            |s| {
                s["ready"] == true
                    && s["pid"].as_u64().is_some_and(|p| p != before[i])
                    && s["pid"].as_u64().is_some_and(|p| version_of(p) == "v2")
            },
        );
        assert!(!s["message"].as_str().unwrap_or("").starts_with("pending"));
    }
    // The last master's soak and release, then stop sampling.
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let (worst, who) = sample.join().unwrap();
    writer.join().unwrap();
    eprintln!(
        "good change rolled over three masters in {:?}",
        t0.elapsed()
    );
    assert!(
        worst <= 1,
        "{worst} masters had a serial service not ready at the same time: {who:?}"
    );
    assert_eq!(worst, 1, "the sampler never saw a master step");
    assert!(
        writes_ok.load(Ordering::Relaxed),
        "etcd was not writable throughout"
    );
    for m in masters.iter_mut() {
        let (_, h) = m.d.health();
        assert_eq!(h["rollout"]["lock_held"], false, "{h}");
        assert_eq!(h["rollout"]["pending"], serde_json::json!({}), "{h}");
    }

    // === 2. a broken change to all three; 5. a crash restart meanwhile ===
    let good: Vec<u64> = masters.iter_mut().map(api_pid).collect();
    for m in &masters {
        m.d.write_manifest("apiserver.yaml", &api_manifest(m.api_port, "v3", true));
    }
    let t0 = Instant::now();
    // One master takes the lock and tries.
    let holder = wait_for(
        "a master to hold the rollout lock",
        Duration::from_secs(30),
        || {
            masters.iter().position(|m| {
                health_of(m.d.port).is_some_and(|h| h["rollout"]["lock_held"] == true)
            })
        },
    );
    // 5: SIGKILL etcd on another master while the holder steps: it is
    // restarted at once, never waiting for the lock.
    let other = (holder + 1) % 3;
    let victim = masters[other].d.service("etcd").unwrap()["pid"]
        .as_u64()
        .unwrap() as u32;
    let killed_at = Instant::now();
    unsafe { libc::kill(victim as i32, libc::SIGKILL) };
    masters[other]
        .d
        .wait_pid("etcd", Duration::from_secs(5), |p| p != victim);
    let back_in = killed_at.elapsed();
    eprintln!("etcd of master-{other} restarted {back_in:?} after SIGKILL while master-{holder} held the lock");
    assert!(
        back_in < Duration::from_secs(3),
        "a crash restart waited: {back_in:?}"
    );
    assert!(
        masters
            .iter()
            .any(|m| health_of(m.d.port).is_some_and(|h| h["rollout"]["lock_held"] == true)),
        "the lock was no longer held when etcd came back: the test proved nothing"
    );

    // The holder rolls back after ready_timeout and records the halt.
    let h = wait_for(
        "the halt on the master that tried",
        READY_TIMEOUT + Duration::from_secs(20),
        || {
            health_of(masters[holder].d.port)
                .filter(|h| h["rollout"]["halted"]["apiserver"].is_string())
        },
    );
    let halted_after = t0.elapsed();
    eprintln!(
        "broken change halted after {halted_after:?}: {}",
        h["rollout"]
    );
    assert!(
        halted_after < READY_TIMEOUT + Duration::from_secs(10),
        "rolled back only after {halted_after:?}"
    );
    let o = etcdctl(
        masters[0].client,
        &["get", "--prefix", "/upkeep-test/halts/"],
    );
    let halts = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        halts.contains(&format!("master-{holder}")),
        "no halt recorded in etcd: {halts:?}"
    );
    // It runs the last good spec again.
    masters[holder].d.wait_service(
        "apiserver",
        READY_TIMEOUT + Duration::from_secs(10),
        "the last good spec ready again",
        |s| s["ready"] == true && s["pid"].as_u64().is_some_and(|p| version_of(p) == "v2"),
    );
    // The others never try: give them the time a step would take.
    let settle = Instant::now() + READY_TIMEOUT + Duration::from_secs(3);
    while Instant::now() < settle {
        for (i, m) in masters.iter_mut().enumerate() {
            if i == holder {
                continue;
            }
            let s = m.d.service("apiserver").unwrap();
            assert_eq!(
                s["pid"].as_u64(),
                Some(good[i]),
                "master-{i} restarted its apiserver despite the halt: {s}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (i, m) in masters.iter_mut().enumerate() {
        let (_, h) = m.d.health();
        let text = h.to_string();
        assert!(
            text.contains(&format!("rollout halted: apiserver on master-{holder}")),
            "master-{i}'s /health does not name the halt: {h}"
        );
        let s = svc(&h, "apiserver").unwrap();
        assert_eq!(s["ready"], true, "master-{i}: {s}");
        assert_eq!(version_of(s["pid"].as_u64().unwrap()), "v2");
    }
    let (_, metrics) = http_get(masters[holder].d.port, "/metrics").unwrap();
    assert!(
        metrics.contains("upkeep_rollout_halted{service=\"apiserver\"} 1"),
        "{metrics}"
    );
    let (_, metrics) = http_get(masters[other].d.port, "/metrics").unwrap();
    assert!(
        metrics.contains("upkeep_rollout_pending{service=\"apiserver\"} 1"),
        "{metrics}"
    );

    // The cluster view from etcd, as operators see it.
    let out = masters[other].d.client(&["rollout", "status"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("rollout lock: free"), "{text}");
    assert!(
        text.contains(&format!("apiserver on master-{holder}")),
        "{text}"
    );
    let out = masters[other]
        .d
        .client(&["status", "--cluster", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).expect("status --cluster -o json");
    assert_eq!(v["masters"].as_array().map(Vec::len), Some(3), "{v}");
    assert_eq!(v["pending"].as_array().map(Vec::len), Some(2), "{v}");

    // Resume: the halt is cleared and the broken change rolls on, one master
    // at a time: the next master tries it, rolls back and halts it again.
    let out = masters[other].d.client(&["rollout", "resume", "apiserver"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        "the holder to forget its cleared halt",
        Duration::from_secs(10),
        || {
            health_of(masters[holder].d.port)
                .filter(|h| h["rollout"]["halted"] == serde_json::json!({}))
        },
    );
    let second = wait_for(
        "another master to try and halt the change",
        READY_TIMEOUT + Duration::from_secs(30),
        || {
            masters.iter().enumerate().find_map(|(i, m)| {
                (i != holder
                    && health_of(m.d.port)
                        .is_some_and(|h| h["rollout"]["halted"]["apiserver"].is_string()))
                .then_some(i)
            })
        },
    );
    eprintln!("after resume, master-{second} tried the change and halted it");
}

/// Scenario 4: with one master's upkeep and etcd down, a change pushed to
/// the other two is not applied (it would cost quorum) and both say why;
/// once the third is back, the change rolls.
#[test]
fn a_change_waits_while_a_master_is_down_and_rolls_once_it_is_back() {
    require_root();
    let mut masters = start_masters();
    let before: Vec<u64> = masters.iter_mut().map(api_pid).collect();
    // master-2's upkeep stops, and its services with it (on_exit = "stop").
    masters[2].d.signal(libc::SIGTERM);
    assert_eq!(masters[2].d.wait_exit(Duration::from_secs(30)), Some(0));
    for m in &masters[..2] {
        m.d.write_manifest("apiserver.yaml", &api_manifest(m.api_port, "v2", false));
    }
    // Both wait, saying why, and keep their apiserver.
    for (i, m) in masters[..2].iter().enumerate() {
        let why = wait_for(
            "the change to wait with a reason",
            Duration::from_secs(20),
            || {
                health_of(m.d.port).and_then(|h| {
                    h["rollout"]["pending"]["apiserver"]
                        .as_str()
                        .filter(|w| !w.is_empty())
                        .map(str::to_string)
                })
            },
        );
        eprintln!("master-{i} waits: {why}");
        assert!(
            why.contains("quorum") || why.contains("master-2"),
            "master-{i}: {why}"
        );
    }
    let hold = Instant::now() + Duration::from_secs(5);
    while Instant::now() < hold {
        for (i, m) in masters[..2].iter_mut().enumerate() {
            let s = m.d.service("apiserver").unwrap();
            assert_eq!(
                s["pid"].as_u64(),
                Some(before[i]),
                "master-{i} applied: {s}"
            );
            assert!(
                s["message"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("pending: spec changed: ")),
                "{s}"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The third comes back (first starts never wait); the change rolls.
    masters[2].d.spawn();
    for m in masters.iter_mut() {
        for s in ["etcd", "apiserver"] {
            m.d.wait_service(s, Duration::from_secs(60), "ready", |s| s["ready"] == true);
        }
    }
    for (i, m) in masters[..2].iter_mut().enumerate() {
        m.d.wait_service(
            "apiserver",
            Duration::from_secs(90),
            "the change applied once the third master is back",
            |s| {
                s["ready"] == true
                    && s["pid"]
                        .as_u64()
                        .is_some_and(|p| p != before[i] && version_of(p) == "v2")
            },
        );
    }
}

/// Healthy members as `etcdctl endpoint health --cluster` reports them,
/// asked through every member (so one down member cannot hide the others).
fn healthy_members(clients: &[u16]) -> usize {
    let endpoints = clients
        .iter()
        .map(|c| format!("http://127.0.0.1:{c}"))
        .collect::<Vec<_>>()
        .join(",");
    let o = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(["--command-timeout=2s", "endpoint", "health", "--cluster"])
        .output()
        .expect("etcdctl is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    text.lines().filter(|l| l.contains("is healthy")).count()
}

/// Scenario 3: a change of the etcd manifests on all three at once: the
/// members restart one at a time, each after the previous one is healthy
/// again; etcd never has two unhealthy members.
#[test]
fn an_etcd_change_restarts_one_member_at_a_time() {
    require_root();
    let mut masters = start_masters();
    let clients: Vec<u16> = masters.iter().map(|m| m.client).collect();
    let before: Vec<u64> = masters
        .iter_mut()
        .map(|m| m.d.service("etcd").unwrap()["pid"].as_u64().unwrap())
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let sample = sampler(masters.iter().map(|m| m.d.port).collect(), stop.clone());
    let health = {
        let (stop, clients) = (stop.clone(), clients.clone());
        std::thread::spawn(move || {
            let (mut worst, mut samples) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                worst = worst.max(3 - healthy_members(&clients));
                samples += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            (worst, samples)
        })
    };
    for m in &masters {
        m.d.write_manifest("etcd.yaml", &(m.etcd)("    - --heartbeat-interval=150\n"));
    }
    let t0 = Instant::now();
    for (i, m) in masters.iter_mut().enumerate() {
        m.d.wait_service(
            "etcd",
            Duration::from_secs(120),
            "the new etcd spec ready",
            |s| s["ready"] == true && s["pid"].as_u64().is_some_and(|p| p != before[i]),
        );
    }
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    let (worst, who) = sample.join().unwrap();
    let (unhealthy, samples) = health.join().unwrap();
    eprintln!(
        "etcd change rolled over three members in {:?}; at most {unhealthy} member(s) unhealthy in {samples} etcdctl samples",
        t0.elapsed()
    );
    assert!(worst <= 1, "{worst} masters not ready at once: {who:?}");
    assert_eq!(worst, 1, "the sampler never saw a member restart");
    assert!(unhealthy <= 1, "{unhealthy} etcd members unhealthy at once");
    assert!(put_ok(clients[0], "after-etcd-change", "x"));
}

/// Scenario 6: the lock holder's upkeep is SIGKILLed mid-step. Its lock
/// expires with its lease; the next upkeep on that node finishes the step
/// (adopts the new process, or replaces the old one once it holds the lock
/// again), and the rollout goes on: never two masters holding the lock.
/// Then the same with a broken change: the next upkeep finishes the step
/// from the journal in the state directory, rolling it back and halting it,
/// and no other master tries it.
#[test]
fn the_lock_holder_killed_mid_step_does_not_stop_the_rollout() {
    require_root();
    let mut masters = start_masters();
    let ports: Vec<u16> = masters.iter().map(|m| m.d.port).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let holders = {
        let (stop, ports) = (stop.clone(), ports.clone());
        std::thread::spawn(move || {
            let mut worst = 0;
            while !stop.load(Ordering::Relaxed) {
                let n = ports
                    .iter()
                    .filter(|p| health_of(**p).is_some_and(|h| h["rollout"]["lock_held"] == true))
                    .count();
                worst = worst.max(n);
                std::thread::sleep(Duration::from_millis(50));
            }
            worst
        })
    };
    for m in &masters {
        m.d.write_manifest("apiserver.yaml", &api_manifest(m.api_port, "v2", false));
    }
    let holder = wait_for("a master to hold the lock", Duration::from_secs(30), || {
        ports
            .iter()
            .position(|p| health_of(*p).is_some_and(|h| h["rollout"]["lock_held"] == true))
    });
    std::thread::sleep(Duration::from_millis(300));
    masters[holder].d.signal(libc::SIGKILL);
    masters[holder].d.wait_exit(Duration::from_secs(5));
    eprintln!("SIGKILLed master-{holder}'s upkeep mid-step");
    masters[holder].d.spawn();
    for (i, m) in masters.iter_mut().enumerate() {
        m.d.wait_service(
            "apiserver",
            Duration::from_secs(120),
            "the new spec ready on every master",
            |s| s["ready"] == true && s["pid"].as_u64().is_some_and(|p| version_of(p) == "v2"),
        );
        eprintln!("master-{i} runs v2");
    }

    // === a broken change, and its holder's upkeep SIGKILLed mid-step: the
    // next upkeep on that node finishes the step from the journal: it
    // rolls back and halts, and the others never try ===
    let before: Vec<u64> = masters.iter_mut().map(api_pid).collect();
    let sample = sampler(ports.clone(), stop.clone());
    for m in &masters {
        m.d.write_manifest("apiserver.yaml", &api_manifest(m.api_port, "v3", true));
    }
    // The holder has applied the broken change (its apiserver is down).
    let holder = wait_for(
        "a master to apply the broken change",
        Duration::from_secs(30),
        || {
            ports.iter().position(|p| {
                health_of(*p).is_some_and(|h| {
                    h["rollout"]["lock_held"] == true
                        && svc(&h, "apiserver").is_some_and(|s| s["ready"] != true)
                })
            })
        },
    );
    let journal = masters[holder].d.dir.path().join("state/rollout-step.json");
    assert!(
        journal.exists(),
        "no step journal at {} while the step is under way",
        journal.display()
    );
    masters[holder].d.signal(libc::SIGKILL);
    masters[holder].d.wait_exit(Duration::from_secs(5));
    eprintln!("SIGKILLed master-{holder}'s upkeep while its broken change was applied");
    masters[holder].d.spawn();
    // The new upkeep rolls back to v2 and records the halt.
    masters[holder].d.wait_service(
        "apiserver",
        READY_TIMEOUT + Duration::from_secs(40),
        "the last good spec ready again after upkeep's restart",
        |s| s["ready"] == true && s["pid"].as_u64().is_some_and(|p| version_of(p) == "v2"),
    );
    let h = wait_for("the halt in /health", Duration::from_secs(20), || {
        health_of(ports[holder]).filter(|h| h["rollout"]["halted"]["apiserver"].is_string())
    });
    eprintln!("master-{holder} after restart: {}", h["rollout"]);
    let o = etcdctl(
        masters[0].client,
        &["get", "--prefix", "/upkeep-test/halts/"],
    );
    let halts = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        halts.contains(&format!("master-{holder}")),
        "no halt recorded in etcd: {halts:?}"
    );
    wait_for("the journal to be gone", Duration::from_secs(10), || {
        (!journal.exists()).then_some(())
    });
    // The others keep their apiserver and say why.
    for (i, m) in masters.iter_mut().enumerate() {
        if i == holder {
            continue;
        }
        let why = wait_for(
            "the halt named on the others",
            Duration::from_secs(20),
            || {
                health_of(m.d.port).and_then(|h| {
                    h["rollout"]["pending"]["apiserver"]
                        .as_str()
                        .filter(|w| w.contains("rollout halted"))
                        .map(String::from)
                })
            },
        );
        assert_eq!(api_pid(m), before[i], "master-{i} restarted its apiserver");
        eprintln!("master-{i}: {why}");
    }
    stop.store(true, Ordering::Relaxed);
    let worst = holders.join().unwrap();
    assert!(worst <= 1, "{worst} masters held the rollout lock at once");
    let (down, who) = sample.join().unwrap();
    assert!(down <= 1, "{down} masters not ready at once: {who:?}");
}

/// etcd unreachable, or its client cannot be set up (an unreadable CA
/// file): a planned change waits, in `/health` with the reason, the old
/// process keeps running; `upkeep rollout apply --without-lock` applies it.
#[test]
fn without_etcd_a_change_waits_saying_why_until_applied_without_the_lock() {
    require_root();
    for (cluster, reason) in [
        (
            format!("etcd = [\"http://127.0.0.1:{}\"]\n", free_port()),
            "etcd unreachable",
        ),
        (
            format!(
                "etcd = [\"https://127.0.0.1:{}\"]\nca_file = \"/nonexistent/upkeep-test-ca.crt\"\n",
                free_port()
            ),
            "cannot set up the etcd client",
        ),
    ] {
        let service = |arg: &str| {
            format!("[services.web]\ncommand = [\"/bin/sleep\", \"{arg}\"]\n\n[cluster]\n{cluster}")
        };
        let mut d = Daemon::start(&service("1000"), &[]);
        let pid = d.wait_pid("web", Duration::from_secs(10), |_| true);
        let text = std::fs::read_to_string(&d.config)
            .unwrap()
            .replace("\"1000\"", "\"1001\"");
        std::fs::write(&d.config, text).unwrap();
        d.signal(libc::SIGHUP);
        let s = d.wait_service("web", Duration::from_secs(20), "pending with a reason", |s| {
            s["message"].as_str().is_some_and(|m| m.contains(reason))
        });
        assert!(
            s["message"].as_str().unwrap().starts_with("pending: spec changed: "),
            "{s}"
        );
        let hold = Instant::now() + Duration::from_secs(3);
        while Instant::now() < hold {
            let s = d.service("web").unwrap();
            assert_eq!(s["pid"].as_u64(), Some(u64::from(pid)), "applied without the lock: {s}");
            assert_eq!(s["state"], "running", "{s}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let (_, h) = d.health();
        assert!(h["rollout"]["pending"]["web"].as_str().unwrap().contains(reason), "{h}");
        // Disaster recovery: the operator applies it without the lock.
        let out = d.client(&["rollout", "apply", "web"]);
        assert!(!out.status.success(), "apply without --without-lock must be refused");
        let out = d.client(&["rollout", "apply", "web", "--without-lock"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let new = d.wait_pid("web", Duration::from_secs(20), |p| p != pid);
        let argv = std::fs::read_to_string(format!("/proc/{new}/cmdline")).unwrap();
        assert!(argv.contains("1001"), "{argv:?}");
        let s = d.service("web").unwrap();
        assert!(!s["message"].as_str().unwrap_or("").starts_with("pending"), "{s}");
    }
}
