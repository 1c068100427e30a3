//! Helpers for the integration tests: a server on an ephemeral port, a raw
//! HTTP/1 client on a plain TCP socket, a fixture snapshot, hard deadlines.

#![allow(dead_code)] // each test file uses a subset

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use upkeep_api::HttpConfig;
use upkeep_core::snapshot::{Histogram, LastExit, ManifestError, ServiceStatus, Shared, Snapshot};
use upkeep_core::ExitStatus;

/// Fails the test (instead of hanging) when `fut` takes longer than `secs`.
pub async fn deadline<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("deadline of {secs}s exceeded: {what}"),
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A running server; dropping the handle leaves it running until the test's
/// runtime ends, `stop()` shuts it down and waits.
pub struct Server {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    pub async fn start(shared: Arc<Shared>, config: impl Into<HttpConfig>) -> Server {
        let config = config.into();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(upkeep_api::serve_http(
            listener,
            shared.clone(),
            config,
            async move {
                let _ = rx.await;
            },
        ));
        Server {
            addr,
            shared,
            stop: Some(tx),
            task,
        }
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        deadline(10, "server shutdown", &mut self.task)
            .await
            .expect("server task");
    }
}

pub fn test_config() -> HttpConfig {
    HttpConfig {
        version: "9.8.7-test".into(),
        ..HttpConfig::default()
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8(self.body.clone()).expect("utf-8 body")
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text()))
    }
}

/// Parses a whole `Connection: close` response (no chunked bodies: the
/// server always sends a content length).
pub fn parse_response(raw: &[u8]) -> Resp {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).expect("ascii head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect();
    Resp {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// Sends `raw` as-is and reads until the server closes.
pub async fn raw_exchange(addr: SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw).await.expect("write request");
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.expect("read response");
    out
}

/// One request with `Connection: close`.
pub async fn request(addr: SocketAddr, method: &str, path: &str) -> Resp {
    let raw = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    parse_response(&deadline(10, "request", raw_exchange(addr, raw.as_bytes())).await)
}

pub async fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path).await
}

fn at(offset_secs: i64) -> SystemTime {
    let now = SystemTime::now();
    if offset_secs >= 0 {
        now + Duration::from_secs(offset_secs as u64)
    } else {
        now - Duration::from_secs((-offset_secs) as u64)
    }
}

fn histogram(values: &[f64]) -> Histogram {
    let mut h = Histogram::default();
    for v in values {
        h.observe(*v);
    }
    h
}

/// A running, ready service.
pub fn running(name: &str, pid: u32) -> ServiceStatus {
    let mut s = ServiceStatus::new(
        name,
        &format!("/etc/kubernetes/manifests/{name}.yaml"),
        at(-300),
    );
    s.state = "running".into();
    s.pid = Some(pid);
    s.ready = true;
    s.start_time = Some(at(-300));
    s
}

/// All services running and ready.
pub fn healthy_snapshot() -> Snapshot {
    let mut snap = Snapshot::default();
    for (name, pid) in [("etcd", 1001), ("kube-apiserver", 1002)] {
        snap.services.insert(name.into(), running(name, pid));
    }
    snap
}

pub const CRASHER: &str = "kube-system-pod/crasher";

/// Several services: a healthy one with probe histograms and past exits,
/// one failing readiness, a crash-looping container of a multi-container
/// pod in backoff, a stopped one; plus a manifest error.
pub fn degraded_snapshot() -> Snapshot {
    let mut snap = Snapshot::default();
    let mut etcd = running("etcd", 1001);
    etcd.restarts = 2;
    etcd.last_exit = Some(LastExit {
        code: None,
        signal: Some("SIGKILL".into()),
        reason: Some("Error".into()),
        at: upkeep_core::snapshot::rfc3339(at(-400)),
    });
    etcd.exits = BTreeMap::from([
        (
            ExitStatus::Signaled {
                signal: 9,
                core: false,
            }
            .reason(),
            1,
        ),
        (ExitStatus::Exited(1).reason(), 1),
    ]);
    etcd.probe_durations = BTreeMap::from([
        (
            "liveness".to_string(),
            histogram(&[0.0008, 0.003, 0.004, 0.02, 0.7, 20.0]),
        ),
        ("readiness".to_string(), histogram(&[0.002])),
    ]);
    etcd.probe_failures = BTreeMap::from([("liveness".to_string(), 1)]);
    snap.services.insert("etcd".into(), etcd);

    let mut api = running("kube-apiserver", 1002);
    api.ready = false;
    api.message = "readiness probe failed: HTTP 500".into();
    api.probe_failures = BTreeMap::from([("readiness".to_string(), 5)]);
    api.probe_durations = BTreeMap::from([("readiness".to_string(), histogram(&[0.01, 0.2]))]);
    snap.services.insert("kube-apiserver".into(), api);

    let mut crasher = ServiceStatus::new(
        CRASHER,
        "/etc/kubernetes/manifests/kube-system-pod.yaml",
        at(-2),
    );
    crasher.state = "backoff".into();
    crasher.restarts = 37;
    crasher.last_exit = Some(LastExit {
        code: Some(1),
        signal: None,
        reason: Some("Error".into()),
        at: upkeep_core::snapshot::rfc3339(at(-2)),
    });
    crasher.next_start_at = Some(at(30));
    crasher.exits = BTreeMap::from([(ExitStatus::Exited(1).reason(), 37)]);
    crasher.message = "restarted 37 times in 10m, last exit code 1".into();
    snap.services.insert(CRASHER.into(), crasher);
    snap.log_dropped_bytes.insert(CRASHER.into(), 65536);

    snap.services.insert(
        "kube-scheduler".into(),
        ServiceStatus::new(
            "kube-scheduler",
            "/etc/kubernetes/manifests/kube-scheduler.yaml",
            at(-10),
        ),
    );
    snap.manifest_errors.push(ManifestError {
        file: "/etc/kubernetes/manifests/broken.yaml".into(),
        error: "spec.containers[0].image: missing".into(),
    });
    snap
}

pub fn shared_with(snapshot: Snapshot) -> Arc<Shared> {
    let shared = Arc::new(Shared::default());
    *shared.snapshot.write().unwrap() = snapshot;
    shared.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    shared
}
