//! The HTTP listener: `/health`, `/health/NAME`, `/livez`, `/metrics`
//! (hyper 1, HTTP/1 only, read-only).
//!
//! Defences, since a stuck status endpoint hides a broken control plane:
//! a connection cap (excess clients wait in the kernel's accept backlog),
//! a header read timeout (slowloris; also closes idle keep-alive
//! connections), a header size cap, a maximum connection age, and no
//! handler that waits on anything: each one copies what it needs out of the
//! snapshot under the read lock and serializes it.

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use upkeep_core::snapshot::Shared;

use crate::health;
use crate::metrics::{self, Metrics};

/// hyper refuses read buffers smaller than this (it asserts).
const HYPER_MIN_BUF: usize = 8192;

/// Settings of the HTTP listener. `Default` gives the production values.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// upkeep's version, for `upkeep_build_info{version}`.
    pub version: String,
    /// `/livez` answers 503 once the supervision loop's heartbeat is older than this.
    pub livez_stale_after: Duration,
    /// A client must send a whole request head within this time (also the
    /// idle keep-alive timeout).
    pub header_read_timeout: Duration,
    /// Largest request head in bytes (at least 8 KiB, hyper's minimum).
    pub max_header_bytes: usize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// A connection is asked to close (after its current response) at this age.
    pub connection_max_age: Duration,
    /// How long in-flight responses get to finish at shutdown or at max age.
    pub shutdown_grace: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            version: env!("CARGO_PKG_VERSION").into(),
            livez_stale_after: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(5),
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_connections: 256,
            connection_max_age: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Production settings with this version (for `upkeep_build_info`).
impl From<&str> for HttpConfig {
    fn from(version: &str) -> Self {
        HttpConfig {
            version: version.into(),
            ..HttpConfig::default()
        }
    }
}

/// Production settings with this version (for `upkeep_build_info`).
impl From<String> for HttpConfig {
    fn from(version: String) -> Self {
        HttpConfig {
            version,
            ..HttpConfig::default()
        }
    }
}

struct State {
    shared: Arc<Shared>,
    config: HttpConfig,
    metrics: Metrics,
}

/// Serves the status endpoints on `listener` with `config` (an
/// [`HttpConfig`], or just the version string for the production settings)
/// until `shutdown` completes, then stops accepting, lets in-flight
/// responses finish (up to `config.shutdown_grace`) and returns. Errors on single connections
/// (malformed requests, timeouts, resets) are logged at debug level and
/// never end the server; accept errors (e.g. out of file descriptors) are
/// logged and retried.
pub async fn serve_http(
    listener: TcpListener,
    shared: Arc<Shared>,
    config: impl Into<HttpConfig>,
    shutdown: impl Future<Output = ()>,
) {
    let config = config.into();
    let metrics = Metrics::new(shared.clone(), &config.version);
    let max = config.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let grace = config.shutdown_grace;
    let state = Arc::new(State {
        shared,
        config,
        metrics,
    });
    let permits = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    let l = &listener;
    while let Some((permit, stream)) =
        crate::accept::next_connection("http", &permits, &mut shutdown, move || async move {
            l.accept().await.map(|(stream, _peer)| stream)
        })
        .await
    {
        let state = state.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(stream, state, stop).await;
        });
    }
    drop(listener);
    // Receivers may all be gone already: nothing to tell then.
    let _ = stop_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(
        grace + Duration::from_millis(500),
        permits.acquire_many(all),
    )
    .await
    .is_err()
    {
        tracing::debug!("http: connections still open at shutdown; dropping them");
    }
}

async fn serve_connection(stream: TcpStream, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let cfg = &state.config;
    let grace = cfg.shutdown_grace;
    let svc_state = state.clone();
    let svc = service_fn(move |req: Request<Incoming>| {
        let state = svc_state.clone();
        async move { Ok::<_, Infallible>(respond(&state, &req)) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.header_read_timeout)
        .max_buf_size(cfg.max_header_bytes.max(HYPER_MIN_BUF))
        .max_headers(cfg.max_headers)
        .keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(stream), svc);
    tokio::pin!(conn);
    let deadline = tokio::time::sleep(cfg.connection_max_age);
    tokio::pin!(deadline);
    let mut draining = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!("http: connection ended: {e}");
                }
                return;
            }
            _ = stop.changed(), if !draining => {
                conn.as_mut().graceful_shutdown();
                draining = true;
                deadline.as_mut().reset(tokio::time::Instant::now() + grace);
            }
            () = &mut deadline => {
                if draining {
                    return; // dropping the connection closes it
                }
                conn.as_mut().graceful_shutdown();
                draining = true;
                deadline.as_mut().reset(tokio::time::Instant::now() + grace);
            }
        }
    }
}

/// True while the supervision loop's heartbeat (`heartbeat_ms`, unix
/// milliseconds) is no older than `stale_after` at `now`. A heartbeat of 0
/// (never ticked) is stale; one from the future (clock stepped back) is fresh.
pub fn heartbeat_fresh(heartbeat_ms: u64, now: SystemTime, stale_after: Duration) -> bool {
    if heartbeat_ms == 0 {
        return false;
    }
    let now_ms = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let age = now_ms.saturating_sub(heartbeat_ms);
    u128::from(age) <= stale_after.as_millis()
}

/// Decodes `%XX` escapes in a path segment (`kube-system-pod%2Fcontainer`).
/// `None` for a malformed escape or a result that is not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            // from_str_radix alone would accept a sign ("%+1").
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn response(
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

fn json_error(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    response(status, JSON, body)
}

fn json_ok(healthy: bool, result: Result<Vec<u8>, serde_json::Error>) -> Response<Full<Bytes>> {
    match result {
        Ok(mut body) => {
            body.push(b'\n');
            let status = if healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            response(status, JSON, body)
        }
        Err(e) => {
            tracing::error!("http: serializing /health: {e}");
            json_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &serde_json::json!({"error": "internal error"}),
            )
        }
    }
}

enum Route<'a> {
    Health,
    Service(&'a str),
    Livez,
    Metrics,
}

fn respond(state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let route = match path {
        "/health" => Route::Health,
        "/livez" => Route::Livez,
        "/metrics" => Route::Metrics,
        _ => match path.strip_prefix("/health/") {
            Some(name) => Route::Service(name),
            None => {
                return json_error(
                    StatusCode::NOT_FOUND,
                    &serde_json::json!({"error": "not found"}),
                )
            }
        },
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = json_error(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "method not allowed"}),
        );
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let now = SystemTime::now();
    match route {
        Route::Health => {
            let snap = state
                .shared
                .snapshot
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            json_ok(snap.healthy(), health::health_json(&snap, now))
        }
        Route::Service(raw) => {
            let Some(name) = percent_decode(raw) else {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": "malformed service name"}),
                );
            };
            let snap = state
                .shared
                .snapshot
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match snap.services.get(&name) {
                Some(s) => json_ok(s.healthy(), health::service_json(s, now)),
                None => {
                    drop(snap);
                    json_error(
                        StatusCode::NOT_FOUND,
                        &serde_json::json!({"error": "unknown service", "service": name}),
                    )
                }
            }
        }
        Route::Livez => {
            let hb = state.shared.heartbeat_ms.load(Ordering::Relaxed);
            if heartbeat_fresh(hb, now, state.config.livez_stale_after) {
                response(StatusCode::OK, TEXT, b"ok\n".to_vec())
            } else {
                let msg = if hb == 0 {
                    "stale: the supervision loop has not ticked yet\n".to_string()
                } else {
                    format!(
                        "stale: the supervision loop's last tick is older than {:?}\n",
                        state.config.livez_stale_after
                    )
                };
                response(StatusCode::SERVICE_UNAVAILABLE, TEXT, msg.into_bytes())
            }
        }
        Route::Metrics => response(
            StatusCode::OK,
            metrics::CONTENT_TYPE,
            state.metrics.render(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_staleness_uses_injected_time() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let bound = Duration::from_secs(10);
        assert!(heartbeat_fresh(995_000, now, bound));
        assert!(heartbeat_fresh(990_000, now, bound));
        assert!(!heartbeat_fresh(989_999, now, bound));
        assert!(!heartbeat_fresh(0, now, bound));
        assert!(
            heartbeat_fresh(2_000_000, now, bound),
            "a heartbeat from the future is fresh"
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("etcd").as_deref(), Some("etcd"));
        assert_eq!(
            percent_decode("pod%2Fcontainer").as_deref(),
            Some("pod/container")
        );
        assert_eq!(percent_decode("pod%2fc%20x").as_deref(), Some("pod/c x"));
        assert_eq!(percent_decode("a/b").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff%fe"), None);
        assert_eq!(percent_decode("%+1"), None);
    }
}
