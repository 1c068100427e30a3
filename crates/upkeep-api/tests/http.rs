//! The HTTP listener over real sockets: /health, /health/NAME, /livez,
//! /metrics (checked by promtool), methods, and hostile clients.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use upkeep_api::HttpConfig;

const SERVICE_KEYS: [&str; 11] = [
    "last_exit",
    "live",
    "message",
    "name",
    "next_start_in_ms",
    "pid",
    "ready",
    "restarts",
    "since",
    "source",
    "state",
];

fn keys(v: &serde_json::Value) -> BTreeSet<&str> {
    v.as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect()
}

#[tokio::test]
async fn health_is_200_ok_when_every_service_is_running_and_ready() {
    let server = Server::start(shared_with(healthy_snapshot()), test_config()).await;
    let r = get(server.addr, "/health").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let v = r.json();
    assert_eq!(v["status"], "ok");
    assert_eq!(v["services"].as_array().unwrap().len(), 2);
    assert_eq!(v["manifest_errors"], serde_json::json!([]));
    let etcd = &v["services"][0];
    assert_eq!(etcd["name"], "etcd");
    assert_eq!(etcd["state"], "running");
    assert_eq!(etcd["pid"], 1001);
    assert_eq!(etcd["ready"], true);
    assert_eq!(etcd["live"], true);
    assert_eq!(etcd["last_exit"], serde_json::Value::Null);
    assert_eq!(etcd["next_start_in_ms"], serde_json::Value::Null);
    server.stop().await;
}

#[tokio::test]
async fn health_is_503_degraded_with_exactly_the_contract_fields() {
    let server = Server::start(shared_with(degraded_snapshot()), test_config()).await;
    let r = get(server.addr, "/health").await;
    assert_eq!(r.status, 503);
    let v = r.json();
    assert_eq!(
        keys(&v),
        BTreeSet::from(["status", "services", "manifest_errors", "warnings"])
    );
    assert_eq!(v["status"], "degraded");
    let services = v["services"].as_array().unwrap();
    let names: Vec<&str> = services
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["etcd", "kube-apiserver", "kube-scheduler", CRASHER],
        "name order"
    );
    for s in services {
        // Nothing internal (exits, probe data, start time) and nothing from a spec.
        assert_eq!(keys(s), BTreeSet::from(SERVICE_KEYS), "{s}");
        if !s["last_exit"].is_null() {
            assert_eq!(
                keys(&s["last_exit"]),
                BTreeSet::from(["code", "signal", "reason", "at"])
            );
        }
    }
    let crasher = &services[3];
    assert_eq!(crasher["state"], "backoff");
    assert_eq!(crasher["pid"], serde_json::Value::Null);
    assert_eq!(crasher["restarts"], 37);
    assert_eq!(
        crasher["source"],
        "/etc/kubernetes/manifests/kube-system-pod.yaml"
    );
    assert_eq!(crasher["last_exit"]["code"], 1);
    assert_eq!(crasher["last_exit"]["signal"], serde_json::Value::Null);
    let wait = crasher["next_start_in_ms"]
        .as_u64()
        .expect("next_start_in_ms computed from next_start_at");
    assert!((25_000..=30_000).contains(&wait), "{wait}");
    assert_eq!(services[0]["last_exit"]["signal"], "SIGKILL");
    assert_eq!(services[1]["message"], "readiness probe failed: HTTP 500");
    assert_eq!(
        v["manifest_errors"],
        serde_json::json!([{"file": "/etc/kubernetes/manifests/broken.yaml", "error": "spec.containers[0].image: missing"}])
    );
    server.stop().await;
}

#[tokio::test]
async fn health_of_one_service_by_name_including_names_with_a_slash() {
    let server = Server::start(shared_with(degraded_snapshot()), test_config()).await;
    let etcd = get(server.addr, "/health/etcd").await;
    assert_eq!(
        etcd.status, 200,
        "etcd alone is healthy although the node is degraded"
    );
    let v = etcd.json();
    assert_eq!(keys(&v), BTreeSet::from(SERVICE_KEYS));
    assert_eq!(v["name"], "etcd");

    for path in [
        "/health/kube-system-pod/crasher",
        "/health/kube-system-pod%2Fcrasher",
        "/health/kube-system-pod%2fcrasher",
    ] {
        let r = get(server.addr, path).await;
        assert_eq!(r.status, 503, "{path}");
        assert_eq!(r.json()["name"], CRASHER, "{path}");
    }
    assert_eq!(get(server.addr, "/health/kube-apiserver").await.status, 503);

    let missing = get(server.addr, "/health/nope").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.header("content-type"), Some("application/json"));
    assert_eq!(missing.json()["error"], "unknown service");
    assert_eq!(get(server.addr, "/health/").await.status, 404);
    assert_eq!(get(server.addr, "/health/bad%zz").await.status, 400);
    server.stop().await;
}

#[tokio::test]
async fn livez_follows_the_heartbeat() {
    let shared = shared_with(healthy_snapshot());
    let config = HttpConfig {
        livez_stale_after: Duration::from_secs(10),
        ..test_config()
    };
    let server = Server::start(shared.clone(), config).await;
    let fresh = get(server.addr, "/livez").await;
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.text(), "ok\n");

    shared
        .heartbeat_ms
        .store(now_ms() - 60_000, Ordering::Relaxed);
    let stale = get(server.addr, "/livez").await;
    assert_eq!(stale.status, 503);
    assert!(stale.text().starts_with("stale"), "{}", stale.text());

    shared.heartbeat_ms.store(0, Ordering::Relaxed);
    assert_eq!(get(server.addr, "/livez").await.status, 503, "never ticked");

    shared.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    assert_eq!(get(server.addr, "/livez").await.status, 200, "recovers");
    server.stop().await;
}

fn promtool_check_metrics(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool is required for this test (Debian package `prometheus`): {e}")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && msg.trim().is_empty(), msg)
}

#[tokio::test]
async fn metrics_have_every_contract_name_and_pass_promtool() {
    let server = Server::start(shared_with(degraded_snapshot()), test_config()).await;
    let r = get(server.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text();
    for name in [
        "upkeep_service_up",
        "upkeep_service_ready",
        "upkeep_service_state",
        "upkeep_service_restarts_total",
        "upkeep_service_exits_total",
        "upkeep_service_start_time_seconds",
        "upkeep_service_backoff_seconds",
        "upkeep_probe_failures_total",
        "upkeep_probe_duration_seconds",
        "upkeep_manifest_errors",
        "upkeep_log_dropped_bytes_total",
        "upkeep_build_info",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "no HELP for {name}:\n{text}"
        );
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "no TYPE for {name}"
        );
    }
    let lines: Vec<&str> = text.lines().collect();
    let has = |line: &str| lines.contains(&line);
    assert!(has("upkeep_service_up{service=\"etcd\"} 1"));
    assert!(has(
        "upkeep_service_up{service=\"kube-system-pod/crasher\"} 0"
    ));
    assert!(has("upkeep_service_ready{service=\"kube-apiserver\"} 0"));
    assert!(has(
        "upkeep_service_restarts_total{service=\"kube-system-pod/crasher\"} 37"
    ));
    assert!(has("upkeep_service_exits_total{service=\"kube-system-pod/crasher\",reason=\"exit_nonzero\"} 37"));
    assert!(has(
        "upkeep_service_exits_total{service=\"etcd\",reason=\"SIGKILL\"} 1"
    ));
    assert!(has(
        "upkeep_service_state{service=\"kube-system-pod/crasher\",state=\"backoff\"} 1"
    ));
    assert!(has(
        "upkeep_service_state{service=\"kube-system-pod/crasher\",state=\"running\"} 0"
    ));
    assert!(has(
        "upkeep_probe_failures_total{service=\"kube-apiserver\",probe=\"readiness\"} 5"
    ));
    assert!(has("upkeep_manifest_errors 1"));
    assert!(has(
        "upkeep_log_dropped_bytes_total{service=\"kube-system-pod/crasher\"} 65536"
    ));
    assert!(has("upkeep_log_dropped_bytes_total{service=\"etcd\"} 0"));
    assert!(has("upkeep_build_info{version=\"9.8.7-test\"} 1"));
    assert!(has("upkeep_service_backoff_seconds{service=\"etcd\"} 0"));
    let backoff: f64 = lines
        .iter()
        .find_map(|l| {
            l.strip_prefix("upkeep_service_backoff_seconds{service=\"kube-system-pod/crasher\"} ")
        })
        .expect("crasher backoff")
        .parse()
        .unwrap();
    assert!((25.0..=30.0).contains(&backoff), "{backoff}");
    // Histogram: cumulative buckets, +Inf == count, sum.
    let liveness = "service=\"etcd\",probe=\"liveness\"";
    assert!(has(&format!(
        "upkeep_probe_duration_seconds_bucket{{{liveness},le=\"0.001\"}} 1"
    )));
    assert!(has(&format!(
        "upkeep_probe_duration_seconds_bucket{{{liveness},le=\"0.005\"}} 3"
    )));
    assert!(has(&format!(
        "upkeep_probe_duration_seconds_bucket{{{liveness},le=\"15\"}} 5"
    )));
    assert!(has(&format!(
        "upkeep_probe_duration_seconds_bucket{{{liveness},le=\"+Inf\"}} 6"
    )));
    assert!(has(&format!(
        "upkeep_probe_duration_seconds_count{{{liveness}}} 6"
    )));
    assert!(lines.iter().any(|l| l.starts_with(&format!(
        "upkeep_probe_duration_seconds_sum{{{liveness}}} 20.72"
    ))));
    // Only running services have a start time.
    assert!(text.contains("upkeep_service_start_time_seconds{service=\"etcd\"}"));
    assert!(!text.contains("upkeep_service_start_time_seconds{service=\"kube-scheduler\"}"));
    // process_* are real: this process has open fds and resident memory.
    let value = |name: &str| -> f64 {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("{name}"))
            .parse()
            .unwrap()
    };
    assert!(value("process_open_fds") >= 3.0);
    assert!(value("process_max_fds") >= value("process_open_fds"));
    assert!(value("process_resident_memory_bytes") > 1_000_000.0);
    assert!(value("process_virtual_memory_bytes") >= value("process_resident_memory_bytes"));
    let start = value("process_start_time_seconds");
    let now = now_ms() as f64 / 1000.0;
    assert!(
        start > now - 3600.0 && start <= now + 1.0,
        "start {start} vs now {now}"
    );

    let (ok, msg) = promtool_check_metrics(&text);
    assert!(
        ok,
        "promtool check metrics:\n{msg}\n--- metrics ---\n{text}"
    );
    // The checker itself is strict: a counter without _total and HELP fails.
    assert!(!promtool_check_metrics("# TYPE foo counter\nfoo 1\n").0);
    server.stop().await;
}

#[tokio::test]
async fn metrics_of_an_empty_snapshot_pass_promtool() {
    // The daemon's form: just the version, production settings otherwise.
    let server = Server::start(shared_with(Default::default()), "9.8.7-test").await;
    let text = get(server.addr, "/metrics").await.text();
    assert!(text.contains("upkeep_manifest_errors 0"));
    assert!(text.contains("upkeep_build_info{version=\"9.8.7-test\"} 1"));
    let (ok, msg) = promtool_check_metrics(&text);
    assert!(ok, "promtool check metrics:\n{msg}\n{text}");
    server.stop().await;
}

#[tokio::test]
async fn wrong_methods_get_405_and_unknown_paths_404() {
    let server = Server::start(shared_with(healthy_snapshot()), test_config()).await;
    for path in ["/health", "/health/etcd", "/metrics", "/livez"] {
        for method in ["POST", "PUT", "DELETE"] {
            let r = request(server.addr, method, path).await;
            assert_eq!(r.status, 405, "{method} {path}");
            assert!(
                r.header("allow").unwrap().contains("GET"),
                "{method} {path}"
            );
        }
    }
    assert_eq!(request(server.addr, "POST", "/nope").await.status, 404);
    let r = get(server.addr, "/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not found");
    assert_eq!(get(server.addr, "/").await.status, 404);
    assert_eq!(get(server.addr, "/healthz").await.status, 404);
    // Query strings are ignored.
    assert_eq!(get(server.addr, "/health?verbose=1").await.status, 200);
    // HEAD: status and headers, no body.
    let head = request(server.addr, "HEAD", "/health").await;
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn keep_alive_serves_several_requests_on_one_connection() {
    let server = Server::start(shared_with(healthy_snapshot()), test_config()).await;
    let raw = "GET /livez HTTP/1.1\r\nHost: t\r\n\r\nGET /health/etcd HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let out = deadline(
        10,
        "pipelined requests",
        raw_exchange(server.addr, raw.as_bytes()),
    )
    .await;
    let text = String::from_utf8_lossy(&out);
    assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 2, "{text}");
    server.stop().await;
}

#[tokio::test]
async fn slowloris_is_cut_off_while_others_are_served() {
    let config = HttpConfig {
        header_read_timeout: Duration::from_secs(2),
        ..test_config()
    };
    let server = Server::start(shared_with(healthy_snapshot()), config).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\nX-Slow: aaaa")
        .await
        .unwrap();
    let started = Instant::now();

    // Another client is served at once while the slow one stalls.
    let other = get(server.addr, "/health").await;
    assert_eq!(other.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "served in {:?}",
        started.elapsed()
    );

    // The slow one is disconnected after the header timeout (EOF or reset).
    let mut buf = Vec::new();
    let read = deadline(5, "slowloris disconnect", slow.read_to_end(&mut buf)).await;
    let elapsed = started.elapsed();
    assert!(
        read.is_err() || !buf.starts_with(b"HTTP/1.1 200"),
        "the stalled request must not be served"
    );
    assert!(
        elapsed >= Duration::from_millis(1800),
        "cut off too early: {elapsed:?}"
    );
    assert_eq!(
        get(server.addr, "/livez").await.status,
        200,
        "server still up"
    );
    server.stop().await;
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let config = HttpConfig {
        header_read_timeout: Duration::from_millis(300),
        ..test_config()
    };
    let server = Server::start(shared_with(healthy_snapshot()), config).await;
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    c.write_all(b"GET /livez HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    // The response arrives, then the idle connection is closed by the server.
    deadline(5, "idle close", c.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(
        buf.starts_with(b"HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    server.stop().await;
}

#[tokio::test]
async fn the_connection_cap_queues_clients_instead_of_spawning_more() {
    let config = HttpConfig {
        max_connections: 1,
        header_read_timeout: Duration::from_millis(400),
        ..test_config()
    };
    let server = Server::start(shared_with(healthy_snapshot()), config).await;
    let mut hog = TcpStream::connect(server.addr).await.unwrap();
    hog.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await; // let the server accept it
    let started = Instant::now();
    let r = get(server.addr, "/livez").await;
    assert_eq!(r.status, 200);
    // Served only once the hog's header timeout freed the one slot.
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "served after {:?}",
        started.elapsed()
    );
    drop(hog);
    server.stop().await;
}

#[tokio::test]
async fn oversized_headers_are_refused_and_the_server_survives() {
    let server = Server::start(shared_with(healthy_snapshot()), test_config()).await;
    let big = format!(
        "GET /health HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200 * 1024)
    );
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    // The server may close before it has read everything: a write error is fine.
    let _ = s.write_all(big.as_bytes()).await;
    let mut buf = Vec::new();
    let _ = deadline(5, "oversized header", s.read_to_end(&mut buf)).await;
    assert!(
        !buf.starts_with(b"HTTP/1.1 200"),
        "an oversized request must not be served"
    );
    if !buf.is_empty() {
        assert!(
            buf.starts_with(b"HTTP/1.1 431"),
            "{}",
            String::from_utf8_lossy(&buf[..buf.len().min(200)])
        );
    }
    assert_eq!(get(server.addr, "/health").await.status, 200);
    server.stop().await;
}

#[tokio::test]
async fn garbage_bytes_do_not_kill_the_server() {
    let server = Server::start(shared_with(healthy_snapshot()), test_config()).await;
    let mut seed: u32 = 0x1234_5678;
    for round in 0..20 {
        let junk: Vec<u8> = (0..(64 + round * 97))
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let _ = s.write_all(&junk).await;
        let _ = s.shutdown().await;
        let mut buf = Vec::new();
        let _ = deadline(5, "garbage response", s.read_to_end(&mut buf)).await;
        assert!(
            !buf.starts_with(b"HTTP/1.1 200"),
            "garbage must not be answered with 200"
        );
    }
    for raw in [
        &b"\x00\x00\x00\r\n\r\n"[..],
        b"GET\r\n\r\n",
        b"GET / HTTP/9.9\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ] {
        let _ = deadline(5, "malformed request", raw_exchange(server.addr, raw)).await;
    }
    assert_eq!(
        get(server.addr, "/health").await.status,
        200,
        "still serving"
    );
    server.stop().await;
}

#[tokio::test]
async fn two_hundred_concurrent_requests_all_succeed() {
    let server = Server::start(shared_with(degraded_snapshot()), test_config()).await;
    let addr = server.addr;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            tokio::spawn(async move {
                let path = match i % 4 {
                    0 => "/health",
                    1 => "/metrics",
                    2 => "/health/etcd",
                    _ => "/livez",
                };
                (path, get(addr, path).await)
            })
        })
        .collect();
    let mut ok = 0;
    deadline(30, "200 concurrent requests", async {
        for t in tasks {
            let (path, r) = t.await.expect("client task");
            let want = if path == "/health" { 503 } else { 200 };
            assert_eq!(r.status, want, "{path}");
            assert!(!r.body.is_empty(), "{path}");
            ok += 1;
        }
    })
    .await;
    assert_eq!(ok, 200);
    server.stop().await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns() {
    let server = Server::start(shared_with(healthy_snapshot()), test_config()).await;
    let addr = server.addr;
    assert_eq!(get(addr, "/livez").await.status, 200);
    server.stop().await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "the port is closed after shutdown"
    );
}

#[tokio::test]
async fn fetch_health_and_format_table_against_a_live_server() {
    let server = Server::start(shared_with(degraded_snapshot()), test_config()).await;
    let listen = server.addr.to_string();
    let (code, body) = upkeep_api::fetch_health(&listen, None)
        .await
        .expect("fetch /health");
    assert_eq!(code, 503);
    let table = upkeep_api::format_table(&body);
    let first: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        first,
        [
            "NAME",
            "STATE",
            "PID",
            "RESTARTS",
            "AGE",
            "READY",
            "CPU",
            "MEMORY",
            "LAST-EXIT",
            "NEXT",
            "REASON"
        ]
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(CRASHER) && l.contains("backoff") && l.contains("code 1")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("etcd ") && l.contains("5m") && l.contains("SIGKILL")),
        "{table}"
    );
    assert!(
        table.contains("/etc/kubernetes/manifests/broken.yaml: spec.containers[0].image: missing")
    );

    let (code, one) = upkeep_api::fetch_health(&listen, Some(CRASHER))
        .await
        .expect("fetch one");
    assert_eq!(code, 503);
    assert_eq!(one["name"], CRASHER);
    let (code, _) = upkeep_api::fetch_health(&listen, Some("etcd"))
        .await
        .unwrap();
    assert_eq!(code, 200);
    let (code, missing) = upkeep_api::fetch_health(&listen, Some("nope"))
        .await
        .unwrap();
    assert_eq!(
        (code, missing["error"].as_str()),
        (404, Some("unknown service"))
    );

    let port = server.addr.port();
    server.stop().await;
    let err = upkeep_api::fetch_health(&format!("127.0.0.1:{port}"), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, upkeep_api::ClientError::Unreachable { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with(&format!("cannot reach upkeep at 127.0.0.1:{port}")),
        "{err}"
    );
}

#[tokio::test]
async fn fetch_health_times_out_on_a_server_that_never_answers() {
    // A listener that accepts (kernel backlog) but never reads.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let started = Instant::now();
    let err = deadline(10, "fetch timeout", upkeep_api::fetch_health(&addr, None))
        .await
        .unwrap_err();
    assert!(
        matches!(err, upkeep_api::ClientError::Timeout { .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    drop(silent);
}
