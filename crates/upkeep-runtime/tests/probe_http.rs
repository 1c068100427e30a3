//! HTTP(S), unix-socket HTTP and TCP probes against real servers on
//! loopback (`run_once`).

mod probe_support;

use std::time::{Duration, Instant};

use probe_support::*;
use upkeep_core::probe::ProbeResult;
use upkeep_runtime::probe::{run_once, USER_AGENT};
use upkeep_spec::{ProbeHandler, Scheme};

const T: Duration = Duration::from_secs(2);

fn http(host: &str, port: u16, path: &str) -> ProbeHandler {
    ProbeHandler::Http {
        scheme: Scheme::Http,
        host: host.into(),
        port,
        path: path.into(),
        headers: vec![],
    }
}

fn https(port: u16, path: &str) -> ProbeHandler {
    ProbeHandler::Http {
        scheme: Scheme::Https,
        host: "127.0.0.1".into(),
        port,
        path: path.into(),
        headers: vec![],
    }
}

/// Runs one probe, failing the test if it does not return within its
/// timeout plus a margin.
async fn probe(handler: &ProbeHandler, timeout: Duration) -> ProbeResult {
    let ctx = ctx();
    tokio::time::timeout(
        timeout + Duration::from_secs(2),
        run_once(handler, timeout, &ctx),
    )
    .await
    .expect("run_once overran its timeout")
}

fn assert_failure(r: &ProbeResult, needle: &str) {
    match r {
        ProbeResult::Failure(msg) => {
            assert!(msg.contains(needle), "failure {msg:?} lacks {needle:?}")
        }
        other => panic!("expected a failure containing {needle:?}, got {other:?}"),
    }
}

#[tokio::test]
async fn status_200_is_success_and_500_is_failure() {
    let ok = status_server(200).await;
    let bad = status_server(500).await;
    let found = status_server(302).await; // a 3xx without Location is not followed: a warning, success
    assert_eq!(
        probe(&http("127.0.0.1", ok.port(), "/healthz"), T).await,
        ProbeResult::Success
    );
    assert_eq!(ok.requests()[0].target, "/healthz");
    let r = probe(&http("127.0.0.1", bad.port(), "/"), T).await;
    assert_eq!(
        r,
        ProbeResult::Failure("HTTP probe failed with statuscode: 500".into())
    );
    assert_eq!(
        probe(&http("127.0.0.1", found.port(), "/"), T).await,
        ProbeResult::Success
    );
    for (status, want_ok) in [
        (204, true),
        (399, true),
        (400, false),
        (404, false),
        (503, false),
    ] {
        let s = status_server(status).await;
        let r = probe(&http("127.0.0.1", s.port(), "/"), T).await;
        assert_eq!(r == ProbeResult::Success, want_ok, "status {status}: {r:?}");
    }
}

#[tokio::test]
async fn query_string_is_kept() {
    let s = status_server(200).await;
    let h = http(
        "127.0.0.1",
        s.port(),
        "/health?exclude=NOSPACE&serializable=true",
    );
    assert_eq!(probe(&h, T).await, ProbeResult::Success);
    assert_eq!(
        s.requests()[0].target,
        "/health?exclude=NOSPACE&serializable=true"
    );
}

#[tokio::test]
async fn hanging_server_times_out() {
    let (s, accepted) = hang_server().await;
    let timeout = Duration::from_secs(1);
    let begin = Instant::now();
    let r = probe(&http("127.0.0.1", s.port(), "/"), timeout).await;
    let took = begin.elapsed();
    assert_eq!(r, ProbeResult::Failure("timeout after 1s".into()));
    assert!(
        took >= timeout && took < timeout + Duration::from_millis(500),
        "took {took:?}"
    );
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn refused_connection_is_failure() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let r = probe(&http("127.0.0.1", port, "/"), T).await;
    assert_failure(&r, "refused");
}

#[tokio::test]
async fn default_and_custom_headers_reach_the_server() {
    let s = status_server(200).await;
    assert_eq!(
        probe(&http("127.0.0.1", s.port(), "/"), T).await,
        ProbeResult::Success
    );
    let seen = &s.requests()[0];
    assert_eq!(seen.values("user-agent"), vec![USER_AGENT.to_string()]);
    assert_eq!(seen.values("accept"), vec!["*/*".to_string()]);
    assert_eq!(seen.values("connection"), vec!["close".to_string()]);
    assert_eq!(seen.values("host"), vec![format!("127.0.0.1:{}", s.port())]);
    assert!(
        seen.values("accept-encoding").is_empty(),
        "no compression asked for"
    );

    let h = ProbeHandler::Http {
        scheme: Scheme::Http,
        host: "127.0.0.1".into(),
        port: s.port(),
        path: "/custom".into(),
        headers: vec![
            ("X-Probe".into(), "one".into()),
            ("User-Agent".into(), "my-agent/3".into()),
            ("Host".into(), "api.example.test".into()),
            ("x-probe".into(), "two".into()),
            ("Accept".into(), "application/json".into()),
        ],
    };
    assert_eq!(probe(&h, T).await, ProbeResult::Success);
    let seen = &s.requests()[1];
    assert_eq!(seen.target, "/custom");
    assert_eq!(
        seen.values("x-probe"),
        vec!["one".to_string(), "two".to_string()]
    );
    assert_eq!(seen.values("user-agent"), vec!["my-agent/3".to_string()]);
    assert_eq!(seen.values("accept"), vec!["application/json".to_string()]);
    assert_eq!(seen.values("host"), vec!["api.example.test".to_string()]);
}

#[tokio::test]
async fn invalid_header_is_an_error_not_a_failure() {
    let h = ProbeHandler::Http {
        scheme: Scheme::Http,
        host: "127.0.0.1".into(),
        port: 1,
        path: "/".into(),
        headers: vec![("Bad Header".into(), "x".into())],
    };
    assert!(matches!(probe(&h, T).await, ProbeResult::Error(_)));
}

#[tokio::test]
async fn large_body_is_read_only_up_to_the_cap() {
    let big = http_server("127.0.0.1:0", |path| {
        let status = if path == "/bad" { 500 } else { 200 };
        (status, vec![], vec![b'x'; 4 << 20])
    })
    .await;
    let begin = Instant::now();
    assert_eq!(
        probe(&http("127.0.0.1", big.port(), "/"), T).await,
        ProbeResult::Success
    );
    assert_failure(
        &probe(&http("127.0.0.1", big.port(), "/bad"), T).await,
        "statuscode: 500",
    );
    assert!(begin.elapsed() < T, "took {:?}", begin.elapsed());
}

#[tokio::test]
async fn same_host_redirect_chain_is_followed() {
    // /chain/N redirects to /chain/N-1 (301, 302, 303, 307, 308 in turn); /chain/0 answers 200.
    let s = http_server("127.0.0.1:0", |path| {
        let n: u32 = path.trim_start_matches("/chain/").parse().unwrap_or(0);
        if n == 0 {
            return (200, vec![], b"done".to_vec());
        }
        let status = [301, 302, 303, 307, 308][n as usize % 5];
        (
            status,
            vec![("Location".into(), format!("/chain/{}", n - 1))],
            vec![],
        )
    })
    .await;
    assert_eq!(
        probe(&http("127.0.0.1", s.port(), "/chain/3"), T).await,
        ProbeResult::Success
    );
    let targets: Vec<_> = s.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(
        targets,
        vec!["/chain/3", "/chain/2", "/chain/1", "/chain/0"]
    );
    // Go's client: 9 redirects are followed, the 10th fails the probe.
    let before = s.count();
    assert_eq!(
        probe(&http("127.0.0.1", s.port(), "/chain/9"), T).await,
        ProbeResult::Success
    );
    assert_eq!(s.count() - before, 10);
    let before = s.count();
    let r = probe(&http("127.0.0.1", s.port(), "/chain/10"), T).await;
    assert_failure(&r, "stopped after 10 redirects");
    assert_eq!(s.count() - before, 10);
}

#[tokio::test]
async fn redirect_loop_fails() {
    let s = http_server("127.0.0.1:0", |_| {
        (301, vec![("Location".into(), "/loop".into())], vec![])
    })
    .await;
    assert_failure(
        &probe(&http("127.0.0.1", s.port(), "/loop"), T).await,
        "stopped after 10 redirects",
    );
}

#[tokio::test]
async fn redirect_to_another_host_is_not_followed_and_succeeds() {
    // 127.0.0.2 is another host name for the redirect check; nothing listens there.
    let s = http_server("127.0.0.1:0", |_| {
        (
            302,
            vec![("Location".into(), "http://127.0.0.2:1/elsewhere".into())],
            vec![],
        )
    })
    .await;
    assert_eq!(
        probe(&http("127.0.0.1", s.port(), "/"), T).await,
        ProbeResult::Success
    );
    assert_eq!(s.count(), 1);
}

#[tokio::test]
async fn redirect_to_same_host_other_port_is_followed() {
    let target = status_server(500).await;
    let port = target.port();
    let s = http_server("127.0.0.1:0", move |_| {
        (
            307,
            vec![("Location".into(), format!("http://127.0.0.1:{port}/there"))],
            vec![],
        )
    })
    .await;
    assert_failure(
        &probe(&http("127.0.0.1", s.port(), "/"), T).await,
        "statuscode: 500",
    );
    assert_eq!(target.requests()[0].target, "/there");
    // An absolute redirect resets the host header to the new authority.
    assert_eq!(
        target.requests()[0].values("host"),
        vec![format!("127.0.0.1:{port}")]
    );
}

#[tokio::test]
async fn custom_host_survives_relative_redirects() {
    let s = http_server("127.0.0.1:0", |path| match path {
        "/start" => (301, vec![("Location".into(), "/end".into())], vec![]),
        _ => (200, vec![], vec![]),
    })
    .await;
    let h = ProbeHandler::Http {
        scheme: Scheme::Http,
        host: "127.0.0.1".into(),
        port: s.port(),
        path: "/start".into(),
        headers: vec![
            ("Host".into(), "virtual.test".into()),
            ("X-Keep".into(), "1".into()),
        ],
    };
    assert_eq!(probe(&h, T).await, ProbeResult::Success);
    let seen = s.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[1].values("host"), vec!["virtual.test".to_string()]);
    assert_eq!(seen[1].values("x-keep"), vec!["1".to_string()]);
}

#[tokio::test]
async fn https_self_signed_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let s = https_server(dir.path(), |p| {
        if p == "/bad" {
            (503, vec![], vec![])
        } else {
            (200, vec![], b"ok".to_vec())
        }
    })
    .await;
    assert_eq!(
        probe(&https(s.port(), "/livez"), T).await,
        ProbeResult::Success
    );
    assert_eq!(s.requests()[0].target, "/livez");
    assert_failure(&probe(&https(s.port(), "/bad"), T).await, "statuscode: 503");
    // Plain HTTP against the TLS port fails (the server drops the bad handshake).
    assert!(matches!(
        probe(&http("127.0.0.1", s.port(), "/"), T).await,
        ProbeResult::Failure(_)
    ));
}

#[tokio::test]
async fn https_against_plain_http_fails() {
    let s = status_server(200).await;
    assert_failure(&probe(&https(s.port(), "/"), T).await, "TLS");
}

#[tokio::test]
async fn http_to_https_same_host_redirect_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let tls = https_server(dir.path(), |_| (200, vec![], b"secure".to_vec())).await;
    let port = tls.port();
    let plain = http_server("127.0.0.1:0", move |_| {
        (
            301,
            vec![(
                "Location".into(),
                format!("https://127.0.0.1:{port}/secure"),
            )],
            vec![],
        )
    })
    .await;
    assert_eq!(
        probe(&http("127.0.0.1", plain.port(), "/"), T).await,
        ProbeResult::Success
    );
    assert_eq!(tls.requests()[0].target, "/secure");
}

#[tokio::test]
async fn ipv6_loopback() {
    let s = http_server("[::1]:0", |_| (200, vec![], vec![])).await;
    assert_eq!(
        probe(&http("::1", s.port(), "/v6"), T).await,
        ProbeResult::Success
    );
    assert_eq!(
        probe(&http("[::1]", s.port(), "/v6"), T).await,
        ProbeResult::Success
    );
    assert_eq!(
        s.requests()[0].values("host"),
        vec![format!("[::1]:{}", s.port())]
    );
    let tcp = ProbeHandler::Tcp {
        host: "::1".into(),
        port: s.port(),
    };
    assert_eq!(probe(&tcp, T).await, ProbeResult::Success);
}

#[tokio::test]
async fn unix_socket_ping() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    let s = unix_server(&sock, |p| match p {
        "/_ping" => (200, vec![], b"OK".to_vec()),
        _ => (500, vec![], vec![]),
    })
    .await;
    let ping = ProbeHandler::HttpUnix {
        socket: sock.clone(),
        path: "/_ping".into(),
    };
    assert_eq!(probe(&ping, T).await, ProbeResult::Success);
    let seen = &s.requests()[0];
    assert_eq!(seen.target, "/_ping");
    assert_eq!(seen.values("host"), vec!["localhost".to_string()]);
    assert_eq!(seen.values("user-agent"), vec![USER_AGENT.to_string()]);
    let bad = ProbeHandler::HttpUnix {
        socket: sock,
        path: "/other".into(),
    };
    assert_failure(&probe(&bad, T).await, "statuscode: 500");
    let missing = ProbeHandler::HttpUnix {
        socket: dir.path().join("nope.sock"),
        path: "/_ping".into(),
    };
    assert_failure(&probe(&missing, T).await, "nope.sock");
}

#[tokio::test]
async fn tcp_open_and_closed_ports() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap().port();
    let r = probe(
        &ProbeHandler::Tcp {
            host: "127.0.0.1".into(),
            port: open,
        },
        T,
    )
    .await;
    assert_eq!(r, ProbeResult::Success);
    // The probe connected (the connection sits in the backlog) and closed it at once.
    let (mut conn, _) = tokio::time::timeout(T, listener.accept())
        .await
        .unwrap()
        .unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(T, tokio::io::AsyncReadExt::read(&mut conn, &mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, 0, "the probe closed its connection");
    drop(listener);
    let r = probe(
        &ProbeHandler::Tcp {
            host: "127.0.0.1".into(),
            port: open,
        },
        T,
    )
    .await;
    assert_failure(&r, "refused");
}

#[tokio::test]
async fn unresolved_is_an_error() {
    let h = ProbeHandler::Unresolved {
        reason: "no port named \"metrics\"".into(),
    };
    assert_eq!(
        probe(&h, T).await,
        ProbeResult::Error("no port named \"metrics\"".into())
    );
}

/// Python's http.server over TLS: HTTP/1.0, no Content-Length, and the
/// connection closed without a TLS close_notify. The kubelet (Go) reads
/// that as the end of the body and counts the status code; so must we.
const PY_TLS_SERVER: &str = r#"
import http.server, ssl, sys, os
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 500 if self.path == "/bad" else 200
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"body until close\n")
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("cert.pem", "key.pem")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
with open("port.tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename("port.tmp", "port")
srv.serve_forever()
"#;

#[tokio::test]
async fn https_body_ended_by_close_without_close_notify_counts_the_status() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path()).await;
    let mut cmd = std::process::Command::new("python3");
    cmd.args(["-c", PY_TLS_SERVER])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null());
    let server = reaper()
        .spawn(&mut cmd)
        .expect("python3 is needed for this test (apt-get install python3)");
    let pid = server.pid;
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.0 as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    let _kill = Kill(pid);
    let deadline = Instant::now() + Duration::from_secs(20);
    let port: u16 = loop {
        if let Ok(p) = std::fs::read_to_string(dir.path().join("port")) {
            break p.trim().parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the python TLS server did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        probe(&https(port, "/healthz"), T).await,
        ProbeResult::Success
    );
    assert_failure(&probe(&https(port, "/bad"), T).await, "statuscode: 500");
}
