//! The client side of `upkeep status`: a small HTTP/1 client for `/health`
//! and the table it prints. Also [`ClientError`], shared with the control
//! socket client ([`crate::control::control_request`]).

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{HOST, USER_AGENT};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// How long [`fetch_health`] waits for the whole exchange.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest `/health` body [`fetch_health`] reads.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// Why a client command could not talk to the daemon. Each message says
/// what was tried and what to check.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No socket file: the daemon is not running (or uses another state dir).
    #[error("upkeep is not running (no control socket at {}); if it runs with another config or state directory, pass the daemon's --config or --state-dir", path.display())]
    NotRunning {
        /// The socket path tried.
        path: PathBuf,
    },
    /// A socket file nobody listens on, left by a daemon that died.
    #[error("upkeep is not running (stale control socket at {}: nothing listens on it)", path.display())]
    StaleSocket {
        /// The socket path tried.
        path: PathBuf,
    },
    /// The socket's permissions or upkeep's uid check refused us.
    #[error("permission denied on the control socket {}: run this as root (or as upkeep's user)", path.display())]
    PermissionDenied {
        /// The socket path tried.
        path: PathBuf,
    },
    /// The HTTP listener could not be reached.
    #[error("cannot reach upkeep at {addr}: {source} (is it running? if it listens elsewhere, pass the daemon's --config or --listen)")]
    Unreachable {
        /// The address tried.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The listen address is not `HOST:PORT`.
    #[error("invalid listen address {addr:?}: expected HOST:PORT, e.g. 127.0.0.1:9900")]
    InvalidAddress {
        /// The address given.
        addr: String,
    },
    /// No answer in time.
    #[error("{what}: no answer within {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The limit.
        after: Duration,
    },
    /// An I/O error on an established connection.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP request to {addr} failed: {source}")]
    Http {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The daemon answered something we could not understand.
    #[error("{what}: unexpected response: {detail}")]
    BadResponse {
        /// Which exchange.
        what: String,
        /// What was wrong with it.
        detail: String,
    },
}

/// The address to connect to for a listen address: an unspecified IP
/// (`0.0.0.0`, `::`) becomes the loopback of its family; a host name
/// (`localhost:9900`) is passed on for resolution. An `http://` prefix and a
/// trailing `/` are tolerated.
pub fn connect_target(listen: &str) -> Result<String, ClientError> {
    let trimmed = listen.trim();
    let trimmed = trimmed
        .strip_prefix("http://")
        .unwrap_or(trimmed)
        .trim_end_matches('/');
    if let Ok(mut addr) = trimmed.parse::<SocketAddr>() {
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr.ip() {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
            });
        }
        return Ok(addr.to_string());
    }
    match trimmed.rsplit_once(':') {
        Some((host, port))
            if !host.is_empty() && !host.contains('/') && port.parse::<u16>().is_ok() =>
        {
            Ok(trimmed.to_string())
        }
        _ => Err(ClientError::InvalidAddress {
            addr: listen.to_string(),
        }),
    }
}

/// Percent-encodes a service name for a path segment (`/` too, as `%2F`).
pub fn encode_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `GET /health` (or `/health/NAME`) from the daemon listening on `listen`
/// (`HOST:PORT`, as in the config). Returns the HTTP status (200 healthy,
/// 503 degraded, 404 unknown service) and the JSON body. The whole exchange
/// has a [`FETCH_TIMEOUT`].
pub async fn fetch_health(listen: &str, name: Option<&str>) -> Result<(u16, Value), ClientError> {
    let path = match name {
        Some(n) => format!("/health/{}", encode_segment(n)),
        None => "/health".to_string(),
    };
    let (status, body, addr) = fetch_raw(listen, &path).await?;
    let json: Value = serde_json::from_slice(&body).map_err(|e| ClientError::BadResponse {
        what: format!("GET {path} from {addr} (HTTP {status})"),
        detail: format!("not JSON: {e}"),
    })?;
    Ok((status, json))
}

/// GETs `/metrics` from the daemon listening on `listen` (for the CPU and
/// MEMORY columns of `upkeep status`).
pub async fn fetch_metrics(listen: &str) -> Result<String, ClientError> {
    let (_, body, _) = fetch_raw(listen, "/metrics").await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// One GET of `path`: status, body and the address it came from.
async fn fetch_raw(listen: &str, path: &str) -> Result<(u16, Bytes, String), ClientError> {
    let addr = connect_target(listen)?;
    let path = path.to_string();
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|source| ClientError::Unreachable {
                addr: addr.clone(),
                source,
            })?;
        let http_err = |source| ClientError::Http {
            addr: addr.clone(),
            source,
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_err)?;
        let driver = tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("status client: connection: {e}");
            }
        });
        let req = Request::get(path.as_str())
            .header(HOST, addr.as_str())
            .header(USER_AGENT, concat!("upkeep/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .map_err(|e| ClientError::BadResponse {
                what: "building the request".into(),
                detail: e.to_string(),
            })?;
        let result = async {
            let resp = sender.send_request(req).await.map_err(http_err)?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_BODY_BYTES)
                .collect()
                .await
                .map_err(|e| ClientError::BadResponse {
                    what: format!("GET {path} from {addr}"),
                    detail: e.to_string(),
                })?
                .to_bytes();
            Ok((status, body, addr.clone()))
        }
        .await;
        driver.abort();
        result
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout {
            what: format!("GET {path} from {addr}"),
            after: FETCH_TIMEOUT,
        })?
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses an RFC 3339 time (`2026-11-23T20:11:55.123Z`, `...+01:00`).
pub fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let b = s.as_bytes();
    let num = |from: usize, to: usize| -> Option<i64> {
        let t = b.get(from..to)?;
        if !t.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(t).ok()?.parse().ok()
    };
    let sep_ok = b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && matches!(b.get(10), Some(b'T' | b't' | b' '))
        && b.get(13) == Some(&b':')
        && b.get(16) == Some(&b':');
    if !sep_ok {
        return None;
    }
    let (y, mo, d, h, mi, se) = (
        num(0, 4)?,
        num(5, 7)?,
        num(8, 10)?,
        num(11, 13)?,
        num(14, 16)?,
        num(17, 19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let mut scale = 100_000_000u32;
        for c in frac.bytes().take(digits.min(9)) {
            nanos += u32::from(c - b'0') * scale;
            scale /= 10;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let ob = rest.as_bytes();
            if ob.len() != 6 || ob[3] != b':' || !matches!(ob[0], b'+' | b'-') {
                return None;
            }
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let sign = if ob[0] == b'-' { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se - offset;
    let whole = Duration::from_secs(secs.unsigned_abs());
    let t = if secs >= 0 {
        SystemTime::UNIX_EPOCH.checked_add(whole)?
    } else {
        SystemTime::UNIX_EPOCH.checked_sub(whole)?
    };
    t.checked_add(Duration::from_nanos(u64::from(nanos)))
}

/// A short human form of a duration: `45s`, `5m3s`, `42m`, `2h5m`, `13h`, `3d4h`, `12d`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, hours, mins, secs) = (s / 86_400, (s % 86_400) / 3600, (s % 3600) / 60, s % 60);
    match s {
        0..60 => format!("{s}s"),
        60..600 if secs == 0 => format!("{mins}m"),
        60..600 => format!("{mins}m{secs}s"),
        600..3600 => format!("{mins}m"),
        3600..36_000 if mins == 0 => format!("{hours}h"),
        3600..36_000 => format!("{hours}h{mins}m"),
        36_000..86_400 => format!("{hours}h"),
        86_400..864_000 if hours == 0 => format!("{days}d"),
        86_400..864_000 => format!("{days}d{hours}h"),
        _ => format!("{days}d"),
    }
}

/// Replaces control characters (terminal escapes) with `?`.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn cell_str(v: &Value) -> String {
    match v {
        Value::String(s) => printable(s),
        Value::Null => "-".into(),
        other => printable(&other.to_string()),
    }
}

/// `s` cut to `width` characters, the cut marked with `...`.
fn cut(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let keep: String = s.chars().take(width.saturating_sub(3)).collect();
    format!("{keep}...")
}

fn last_exit_cell(v: &Value) -> String {
    if let Some(r) = v.get("reason").and_then(Value::as_str) {
        if r == "OOMKilled" {
            return r.into();
        }
    }
    if let Some(sig) = v.get("signal").and_then(Value::as_str) {
        return printable(sig);
    }
    match v.get("code").and_then(Value::as_i64) {
        Some(code) => format!("code {code}"),
        None => "-".into(),
    }
}

fn age_cell(since: &Value, now: SystemTime) -> String {
    match since.as_str().and_then(parse_rfc3339) {
        Some(t) => human_duration(now.duration_since(t).unwrap_or_default()),
        None => "-".into(),
    }
}

/// [`format_table_at`] at the current time.
pub fn format_table(health: &Value) -> String {
    format_table_at(health, SystemTime::now())
}

/// The `upkeep status` table for a `/health` body (or a single service
/// object from `/health/NAME`): columns NAME STATE PID RESTARTS AGE READY
/// LAST-EXIT, aligned, AGE measured from `since` at `now`; then manifest
/// errors, if any, one per line under the table.
pub fn format_table_at(health: &Value, now: SystemTime) -> String {
    format_table_with(health, now, &BTreeMap::new(), usize::MAX)
}

/// The narrowest the REASON column is cut to.
pub const MIN_REASON_WIDTH: usize = 20;

/// The `upkeep status` table with its CPU and MEMORY cells by service (see
/// [`crate::top::cells`]; `-` for a service without), NEXT (time to the
/// next start during a backoff) and REASON (the first line of the
/// `/health` message, cut so that lines fit in `line_width` characters, but
/// never to less than [`MIN_REASON_WIDTH`]; `usize::MAX` for no cut).
pub fn format_table_with(
    health: &Value,
    now: SystemTime,
    usage: &BTreeMap<String, (String, String)>,
    line_width: usize,
) -> String {
    let single;
    let services: &[Value] = match health.get("services").and_then(Value::as_array) {
        Some(list) => list,
        None if health.get("name").is_some() => {
            single = [health.clone()];
            &single
        }
        None => &[],
    };
    let mut rows: Vec<[String; 11]> = vec![[
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
        "REASON",
    ]
    .map(String::from)];
    for s in services {
        let field = |k: &str| s.get(k).unwrap_or(&Value::Null);
        let (cpu, mem) = field("name")
            .as_str()
            .and_then(|n| usage.get(n))
            .cloned()
            .unwrap_or_else(|| ("-".into(), "-".into()));
        let next = match field("next_start_in_ms").as_u64() {
            Some(ms) => human_duration(Duration::from_millis(ms.saturating_add(999))),
            None => "-".into(),
        };
        let reason = match field("message").as_str() {
            Some(m) if !m.is_empty() => printable(m.lines().next().unwrap_or("")),
            _ => "-".into(),
        };
        rows.push([
            cell_str(field("name")),
            cell_str(field("state")),
            cell_str(field("pid")),
            cell_str(field("restarts")),
            age_cell(field("since"), now),
            match field("ready").as_bool() {
                Some(true) => "yes".into(),
                Some(false) => "no".into(),
                None => "-".into(),
            },
            cpu,
            mem,
            last_exit_cell(field("last_exit")),
            next,
            reason,
        ]);
    }
    let mut widths = [0usize; 11];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let before_reason: usize = widths[..10].iter().map(|w| w + 3).sum();
    let reason_width = line_width
        .saturating_sub(before_reason)
        .max(MIN_REASON_WIDTH);
    for row in rows.iter_mut().skip(1) {
        row[10] = cut(&row[10], reason_width);
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}   ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if let Some(errors) = health
        .get("manifest_errors")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
    {
        out.push_str("\nMANIFEST ERRORS (the last good version keeps running)\n");
        for e in errors {
            let file = e.get("file").and_then(Value::as_str).unwrap_or("?");
            let error = e.get("error").and_then(Value::as_str).unwrap_or("?");
            let mut lines = error.lines().map(printable);
            let _ = writeln!(
                out,
                "{}: {}",
                printable(file),
                lines.next().unwrap_or_default()
            );
            for more in lines {
                let _ = writeln!(out, "    {more}");
            }
        }
    }
    if let Some(warnings) = health
        .get("warnings")
        .and_then(Value::as_array)
        .filter(|w| !w.is_empty())
    {
        out.push_str("\nWARNINGS\n");
        for w in warnings {
            let file = w.get("file").and_then(Value::as_str).unwrap_or("?");
            let text = w.get("warning").and_then(Value::as_str).unwrap_or("?");
            let _ = writeln!(out, "{}: {}", printable(file), printable(text));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use upkeep_core::snapshot::rfc3339;

    #[test]
    fn rfc3339_round_trips_with_core_and_accepts_offsets() {
        for ms in [0u64, 951_782_400_000, 1_795_464_715_123, 4_102_444_800_999] {
            let t = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{}", rfc3339(t));
        }
        let z = parse_rfc3339("2026-11-23T20:11:55Z").unwrap();
        assert_eq!(parse_rfc3339("2026-11-23T21:11:55+01:00"), Some(z));
        assert_eq!(parse_rfc3339("2026-11-23T19:41:55-00:30"), Some(z));
        for bad in [
            "",
            "2026-11-23",
            "2026-13-01T00:00:00Z",
            "2026-11-23T20:11:55",
            "2026-11-23T20:11:55.Z",
            "x026-11-23T20:11:55Z",
            "2026-11-23T20:11:55+0100",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn human_durations() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (60, "1m"),
            (303, "5m3s"),
            (2520, "42m"),
            (7200, "2h"),
            (7500, "2h5m"),
            (13 * 3600 + 100, "13h"),
            (86_400, "1d"),
            (3 * 86_400 + 4 * 3600 + 5, "3d4h"),
            (12 * 86_400 + 7, "12d"),
        ];
        for (secs, want) in cases {
            assert_eq!(human_duration(Duration::from_secs(secs)), want, "{secs}");
        }
    }

    #[test]
    fn table_columns_are_aligned_and_cells_formatted() {
        let now = parse_rfc3339("2026-11-23T20:10:00Z").unwrap();
        let health = json!({
            "status": "degraded",
            "services": [
                {"name": "etcd", "state": "running", "pid": 1234, "ready": true, "restarts": 0,
                 "since": "2026-11-23T20:04:57.000Z", "last_exit": null},
                {"name": "kube-system-pod/sidecar", "state": "backoff", "pid": null, "ready": false, "restarts": 37,
                 "since": "2026-11-23T18:10:00Z", "last_exit": {"code": 1, "signal": null, "at": "x"},
                 "next_start_in_ms": 4200, "message": "exit code 1; restarting in 5s"},
                {"name": "kube-scheduler", "state": "starting", "pid": 99, "ready": false, "restarts": 2,
                 "since": "garbage", "last_exit": {"code": null, "signal": "SIGKILL", "at": "x"}}
            ],
            "manifest_errors": [{"file": "/m/bad.yaml", "error": "line 3: bad\nsecond line"}]
        });
        let out = format_table_at(&health, now);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
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
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            ["etcd", "running", "1234", "0", "5m3s", "yes", "-", "-", "-", "-", "-"]
        );
        assert_eq!(
            lines[2].split_whitespace().collect::<Vec<_>>(),
            [
                "kube-system-pod/sidecar",
                "backoff",
                "-",
                "37",
                "2h",
                "no",
                "-",
                "-",
                "code",
                "1",
                "5s",
                "exit",
                "code",
                "1;",
                "restarting",
                "in",
                "5s"
            ]
        );
        assert_eq!(
            lines[3].split_whitespace().collect::<Vec<_>>(),
            [
                "kube-scheduler",
                "starting",
                "99",
                "2",
                "-",
                "no",
                "-",
                "-",
                "SIGKILL",
                "-",
                "-"
            ]
        );
        // Every column starts at the same offset on every row.
        for col in [
            "STATE",
            "PID",
            "RESTARTS",
            "AGE",
            "READY",
            "LAST-EXIT",
            "NEXT",
        ] {
            let at = lines[0].find(col).unwrap();
            for row in &lines[1..4] {
                assert_ne!(
                    row.as_bytes()[at],
                    b' ',
                    "column {col} misaligned in {row:?}"
                );
                assert_eq!(
                    row.as_bytes()[at - 1],
                    b' ',
                    "column {col} misaligned in {row:?}"
                );
            }
        }
        assert!(out.contains("MANIFEST ERRORS"));
        assert!(out.contains("/m/bad.yaml: line 3: bad\n    second line\n"));
    }

    #[test]
    fn table_shows_usage_and_cuts_the_reason() {
        let now = parse_rfc3339("2026-11-23T20:10:00Z").unwrap();
        let one = json!({"name": "etcd", "state": "running", "pid": 1, "ready": false, "restarts": 0,
                         "since": "2026-11-23T20:09:00Z", "last_exit": {"code": null, "signal": "SIGKILL", "reason": "OOMKilled", "at": "x"},
                         "message": "readiness probe failed: HTTP probe failed with statuscode: 500"});
        let usage = BTreeMap::from([(
            "etcd".to_string(),
            ("250m".to_string(), "100Mi".to_string()),
        )]);
        let out = format_table_with(&one, now, &usage, 20);
        let row: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(
            row,
            [
                "etcd",
                "running",
                "1",
                "0",
                "1m",
                "no",
                "250m",
                "100Mi",
                "OOMKilled",
                "-",
                "readiness",
                "probe",
                "f..."
            ]
        );
    }

    #[test]
    fn table_accepts_a_single_service_object_and_strips_escapes() {
        let now = parse_rfc3339("2026-11-23T20:10:00Z").unwrap();
        let one = json!({"name": "evil\u{1b}[2J", "state": "running", "pid": 1, "ready": true, "restarts": 0,
                         "since": "2026-11-23T20:09:00Z", "last_exit": null});
        let out = format_table_at(&one, now);
        assert_eq!(out.lines().count(), 2);
        assert!(out.contains("evil?[2J"));
        assert!(!out.contains('\u{1b}'));
        assert!(!out.contains("MANIFEST"));
    }

    #[test]
    fn connect_targets() {
        assert_eq!(connect_target("127.0.0.1:9900").unwrap(), "127.0.0.1:9900");
        assert_eq!(connect_target("0.0.0.0:9900").unwrap(), "127.0.0.1:9900");
        assert_eq!(connect_target("[::]:9900").unwrap(), "[::1]:9900");
        assert_eq!(
            connect_target("http://localhost:9900/").unwrap(),
            "localhost:9900"
        );
        assert!(matches!(
            connect_target("9900"),
            Err(ClientError::InvalidAddress { .. })
        ));
        assert!(matches!(
            connect_target("host:notaport"),
            Err(ClientError::InvalidAddress { .. })
        ));
        assert_eq!(
            encode_segment("kube-system-pod/c x"),
            "kube-system-pod%2Fc%20x"
        );
    }
}
