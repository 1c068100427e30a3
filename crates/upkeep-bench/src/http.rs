//! A minimal HTTP/1.1 GET client for loopback (health polls and the
//! closed-loop endpoint benchmark), plus `wrk` output parsing.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One response: status code and body (raw; chunked bodies keep their framing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body text.
    pub body: String,
}

/// `GET http://127.0.0.1:port{path}` with `Connection: close`, each of connect,
/// write and read bounded by `timeout`.
pub fn get(port: u16, path: &str, timeout: Duration) -> io::Result<Response> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.set_nodelay(true)?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    // Room for a /metrics body with 100 services at once (about 200 KB):
    // no reads of growing size and no copies while it arrives.
    let mut raw = Vec::with_capacity(256 * 1024);
    s.read_to_end(&mut raw)?;
    parse_response(&raw).ok_or_else(|| io::Error::other("malformed HTTP response"))
}

/// Parses a raw HTTP/1.x response.
pub fn parse_response(raw: &[u8]) -> Option<Response> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status_line = head.lines().next()?;
    let mut parts = status_line.split_ascii_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let status = parts.next()?.parse().ok()?;
    Some(Response {
        status,
        body: body.to_string(),
    })
}

/// Latency percentiles (ms) and request rate from `wrk --latency` output.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WrkResult {
    /// 50th percentile, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Requests per second.
    pub rps: f64,
}

/// Parses `wrk --latency` output ("50%  1.23ms", "Requests/sec: 123.4").
pub fn parse_wrk(out: &str) -> Option<WrkResult> {
    let pct = |key: &str| -> Option<f64> {
        out.lines()
            .map(str::trim)
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| parse_wrk_duration(v.trim()))
    };
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())?;
    Some(WrkResult {
        p50_ms: pct("50%")?,
        p99_ms: pct("99%")?,
        rps,
    })
}

/// `1.23ms`, `850.00us`, `1.02s`, `2.00m` -> milliseconds.
pub fn parse_wrk_duration(v: &str) -> Option<f64> {
    let num_end = v.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = v.split_at(num_end);
    let n: f64 = num.parse().ok()?;
    let factor = match unit.trim() {
        "us" => 1e-3,
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        _ => return None,
    };
    Some(n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_responses() {
        let r =
            parse_response(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: x\r\n\r\n{\"a\":1}")
                .unwrap();
        assert_eq!(
            r,
            Response {
                status: 503,
                body: "{\"a\":1}".into()
            }
        );
        assert!(parse_response(b"garbage").is_none());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_none());
    }

    #[test]
    fn parses_wrk() {
        let out = "Running 10s test @ http://127.0.0.1:1/health\n  1 threads and 4 connections\n  Latency Distribution\n     50%  412.00us\n     75%    1.01ms\n     90%    2.00ms\n     99%    3.50ms\n  1000 requests in 10.00s, 1.00MB read\nRequests/sec:   9876.54\n";
        let w = parse_wrk(out).unwrap();
        assert!((w.p50_ms - 0.412).abs() < 1e-9);
        assert!((w.p99_ms - 3.5).abs() < 1e-9);
        assert!((w.rps - 9876.54).abs() < 1e-9);
        assert_eq!(parse_wrk_duration("1.02s"), Some(1020.0));
        assert_eq!(parse_wrk_duration("1.5x"), None);
        assert!(parse_wrk("nothing").is_none());
    }

    #[test]
    fn get_against_a_real_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf).unwrap();
            c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
                .unwrap();
        });
        let r = get(port, "/x", Duration::from_secs(5)).unwrap();
        t.join().unwrap();
        assert_eq!(
            r,
            Response {
                status: 200,
                body: "hi".into()
            }
        );
    }
}
