//! HTTP(S) and unix-socket HTTP probes with the kubelet's request and
//! redirect rules (`k/k pkg/probe/http`, kubelet-semantics.md §3.3).
//!
//! Each attempt opens a fresh connection (keep-alive off, `Connection:
//! close`), never uses a proxy, does not ask for compression and skips TLS
//! certificate verification (the handshake signature is still checked, as
//! Go's `InsecureSkipVerify` does).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use http_body_util::{BodyExt, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderName, HeaderValue, ACCEPT, CONNECTION, HOST, LOCATION, USER_AGENT};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::pin::Pin;
use tokio::task::JoinHandle;
use upkeep_core::probe::ProbeResult;
use upkeep_spec::Scheme;

use super::{bare_host, connect_tcp, join_host_port, MAX_OUTPUT};

/// Redirects are followed until this many requests have been made; the next
/// redirect fails the probe (Go's "stopped after 10 redirects").
const MAX_REQUESTS: usize = 10;

/// Where one request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    scheme: Scheme,
    /// Host name or IP, without IPv6 brackets.
    host: String,
    port: u16,
    /// The authority as written (`host:port`), the default `Host` header.
    authority: String,
    /// Path and query, starting with `/`, percent-encoded where needed.
    path: String,
}

impl Target {
    fn url(&self) -> String {
        let scheme = match self.scheme {
            Scheme::Http => "http",
            Scheme::Https => "https",
        };
        format!("{scheme}://{}{}", self.authority, self.path)
    }
}

/// The request headers of a probe after the kubelet's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreparedHeaders {
    /// The first non-empty `Host` header, which replaces the request's host.
    host: Option<HeaderValue>,
    /// Every other header, in the given order, plus `User-Agent` and `Accept`.
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// Applies the kubelet's header rules: given headers in order (repeats
/// kept), `Host` taken out to set the request host, `User-Agent` added if
/// absent (an empty one means none is sent), `Accept: */*` added if absent
/// (an empty first `Accept` removes it).
pub(crate) fn prepare_headers(given: &[(String, String)]) -> Result<PreparedHeaders, String> {
    let mut host = None;
    let mut seen_host = false;
    let mut headers = Vec::with_capacity(given.len() + 2);
    for (name, value) in given {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("invalid HTTP header name {name:?}: {e}"))?;
        let value = HeaderValue::from_str(value)
            .map_err(|e| format!("invalid value of HTTP header {name}: {e}"))?;
        if name == HOST {
            if !seen_host && !value.is_empty() {
                host = Some(value);
            }
            seen_host = true;
            continue;
        }
        headers.push((name, value));
    }
    match headers.iter().find(|(n, _)| *n == USER_AGENT) {
        None => headers.push((USER_AGENT, HeaderValue::from_static(super::USER_AGENT))),
        Some((_, v)) if v.is_empty() => headers.retain(|(n, _)| *n != USER_AGENT),
        Some(_) => {}
    }
    match headers.iter().find(|(n, _)| *n == ACCEPT) {
        None => headers.push((ACCEPT, HeaderValue::from_static("*/*"))),
        Some((_, v)) if v.is_empty() => headers.retain(|(n, _)| *n != ACCEPT),
        Some(_) => {}
    }
    Ok(PreparedHeaders { host, headers })
}

/// Normalizes a probe path the way Go's `url.Parse` + `URL.String` do for
/// the kubelet: fragment dropped, a leading `/` added, bytes that cannot
/// appear in a request target percent-encoded.
pub(crate) fn normalize_path(path: &str) -> String {
    let path = path.split('#').next().unwrap_or("");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    percent_encode(&path)
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x21..=0x7e).contains(&b)
            && !matches!(
                b,
                b'"' | b'<' | b'>' | b'\\' | b'^' | b'`' | b'{' | b'|' | b'}'
            )
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Removes `.` and `..` segments (a port of Go's `net/url.resolvePath`, which
/// `ResolveReference` applies to every redirect target).
pub(crate) fn remove_dot_segments(full: &str) -> String {
    if full.is_empty() {
        return String::new();
    }
    let mut dst = String::from("/");
    let mut first = true;
    let mut last = "";
    for elem in full.split('/') {
        last = elem;
        if elem == "." {
            first = false;
            continue;
        }
        if elem == ".." {
            let s = dst[1..].to_string();
            dst = String::from("/");
            match s.rfind('/') {
                None => first = true,
                Some(i) => dst.push_str(&s[..i]),
            }
        } else {
            if !first {
                dst.push('/');
            }
            dst.push_str(elem);
            first = false;
        }
    }
    if last == "." || last == ".." {
        dst.push('/');
    }
    if dst.len() > 1 && dst.as_bytes()[1] == b'/' {
        dst.remove(0);
    }
    dst
}

fn split_query(path: &str) -> (&str, &str) {
    match path.find('?') {
        Some(i) => (&path[..i], &path[i..]),
        None => (path, ""),
    }
}

/// Parses `authority[/path][?query]` (what follows `//`).
fn parse_authority(scheme: Scheme, rest: &str) -> Result<Target, String> {
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let close = inner
            .find(']')
            .ok_or_else(|| format!("invalid host in {authority:?}"))?;
        let after = &inner[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("invalid host in {authority:?}")),
        };
        (&inner[..close], port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("no host in {authority:?}"));
    }
    let port = match port {
        None | Some("") => match scheme {
            Scheme::Http => 80,
            Scheme::Https => 443,
        },
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("invalid port {p:?}"))?,
    };
    let (p, q) = split_query(path);
    let p = if p.is_empty() { "/" } else { p };
    Ok(Target {
        scheme,
        host: host.to_string(),
        port,
        authority: authority.to_string(),
        path: percent_encode(&format!("{}{q}", remove_dot_segments(p))),
    })
}

/// Resolves a `Location` against the current target, as Go's
/// `URL.ResolveReference`. Returns the new target and whether the reference
/// was absolute (had a scheme).
pub(crate) fn resolve_location(base: &Target, location: &str) -> Result<(Target, bool), String> {
    let loc = location.split('#').next().unwrap_or("");
    let scheme_end = loc.find(':').filter(|&i| {
        i > 0
            && loc[..i].starts_with(|c: char| c.is_ascii_alphabetic())
            && loc[..i]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    });
    if let Some(i) = scheme_end {
        let scheme = match loc[..i].to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(format!("unsupported protocol scheme {other:?}")),
        };
        let rest = loc[i + 1..]
            .strip_prefix("//")
            .ok_or_else(|| format!("invalid redirect location {location:?}"))?;
        return Ok((parse_authority(scheme, rest)?, true));
    }
    if let Some(rest) = loc.strip_prefix("//") {
        return Ok((parse_authority(base.scheme, rest)?, false));
    }
    let (base_path, _) = split_query(&base.path);
    let (ref_path, query) = split_query(loc);
    let full = if ref_path.is_empty() {
        base_path.to_string()
    } else if ref_path.starts_with('/') {
        ref_path.to_string()
    } else {
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{ref_path}")
    };
    let mut path = remove_dot_segments(&full);
    if path.is_empty() {
        path.push('/');
    }
    path.push_str(query);
    Ok((
        Target {
            path: percent_encode(&path),
            ..base.clone()
        },
        false,
    ))
}

/// An error and its sources, joined with `: `.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

/// Aborts the connection task when the response (and its body) is done with.
struct ConnTask(JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Sends one GET over `io` and returns the response with the task that
/// drives the connection (keep it alive while reading the body).
async fn send<IO>(
    io: IO,
    path: &str,
    host: &HeaderValue,
    headers: &[(HeaderName, HeaderValue)],
) -> Result<(Response<Incoming>, ConnTask), String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = Request::get(path).header(HOST, host.clone());
    for (name, value) in headers {
        builder = builder.header(name.clone(), value.clone());
    }
    let req = builder
        .header(CONNECTION, HeaderValue::from_static("close"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("invalid request: {}", error_chain(&e)))?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| error_chain(&e))?;
    let task = ConnTask(tokio::spawn(async move {
        let _ = conn.await;
    }));
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| error_chain(&e))?;
    Ok((resp, task))
}

/// Reads at most [`MAX_OUTPUT`] bytes of a body; a longer body is not an error.
async fn read_capped(mut body: Incoming) -> Result<Vec<u8>, hyper::Error> {
    let mut buf = Vec::new();
    while buf.len() < MAX_OUTPUT {
        match body.frame().await {
            None => break,
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    let take = data.len().min(MAX_OUTPUT - buf.len());
                    buf.extend_from_slice(&data[..take]);
                }
            }
        }
    }
    Ok(buf)
}

/// The result of a final response (the kubelet's `DoHTTPProbe`).
fn classify(status: u16, url: &str) -> ProbeResult {
    if (300..400).contains(&status) {
        tracing::warn!(
            url,
            status,
            "probe terminated redirects; counted as success"
        );
        ProbeResult::Success
    } else if (200..300).contains(&status) {
        ProbeResult::Success
    } else {
        ProbeResult::Failure(format!("HTTP probe failed with statuscode: {status}"))
    }
}

/// A TLS stream whose peer may close the TCP connection without a TLS
/// `close_notify` (Python's http.server, many Java servers). rustls reports
/// that as `UnexpectedEof`; Go's crypto/tls, and so the kubelet, reads it as
/// the end of the stream, which ends a body delimited by the connection's
/// close. Do the same: a body with a length that is cut short still fails
/// (hyper sees the stream end before the length).
struct EofIsEnd<T>(T);

impl<T: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for EofIsEnd<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            std::task::Poll::Ready(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<T: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for EofIsEnd<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Opens a connection to `target` (TLS for https) and sends the GET.
async fn request(
    target: &Target,
    host: &HeaderValue,
    headers: &[(HeaderName, HeaderValue)],
) -> Result<(Response<Incoming>, ConnTask), String> {
    let tcp = connect_tcp(&target.host, target.port).await.map_err(|e| {
        format!(
            "dial tcp {}: {e}",
            join_host_port(&target.host, target.port)
        )
    })?;
    let _ = tcp.set_nodelay(true);
    match target.scheme {
        Scheme::Http => send(tcp, &target.path, host, headers).await,
        Scheme::Https => {
            let config = tls_config()?;
            let name = ServerName::try_from(bare_host(&target.host).to_string())
                .map_err(|e| format!("invalid TLS server name {:?}: {e}", target.host))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {}", error_chain(&e)))?;
            send(EofIsEnd(tls), &target.path, host, headers).await
        }
    }
}

/// One HTTP(S) probe attempt (not bounded in time: the caller does that).
pub(crate) async fn probe_http(
    scheme: Scheme,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> ProbeResult {
    let prepared = match prepare_headers(headers) {
        Ok(p) => p,
        Err(e) => return ProbeResult::Error(e),
    };
    let host = bare_host(host);
    let mut target = Target {
        scheme,
        host: host.to_string(),
        port,
        authority: join_host_port(host, port),
        path: normalize_path(path),
    };
    let first_host = target.host.clone();
    let default_host = |t: &Target| HeaderValue::from_str(&t.authority);
    let mut host_header = match &prepared.host {
        Some(h) => h.clone(),
        None => match default_host(&target) {
            Ok(h) => h,
            Err(_) => return ProbeResult::Error(format!("invalid host {host:?}")),
        },
    };
    let mut requests = 0usize;
    loop {
        let url = target.url();
        let (resp, conn) = match request(&target, &host_header, &prepared.headers).await {
            Ok(r) => r,
            Err(e) => return ProbeResult::Failure(format!("Get {url:?}: {e}")),
        };
        requests += 1;
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(LOCATION)
            .map(|l| l.to_str().map(str::to_string));
        if matches!(status, 301 | 302 | 303 | 307 | 308) {
            match location {
                Some(Ok(loc)) if !loc.is_empty() => {
                    let (next, absolute) = match resolve_location(&target, &loc) {
                        Ok(n) => n,
                        Err(e) => return ProbeResult::Failure(format!("Get {url:?}: {e}")),
                    };
                    if next.host != first_host {
                        tracing::warn!(
                            url,
                            location = loc,
                            "probe redirect to another host not followed; counted as success"
                        );
                        return ProbeResult::Success;
                    }
                    if requests >= MAX_REQUESTS {
                        return ProbeResult::Failure(format!(
                            "Get {:?}: stopped after 10 redirects",
                            next.url()
                        ));
                    }
                    drop(conn);
                    host_header = match (&prepared.host, absolute) {
                        (Some(h), false) => h.clone(),
                        _ => match default_host(&next) {
                            Ok(h) => h,
                            Err(_) => {
                                return ProbeResult::Failure(format!(
                                    "Get {url:?}: invalid redirect location {loc:?}"
                                ))
                            }
                        },
                    };
                    target = next;
                    continue;
                }
                Some(Err(_)) => {
                    return ProbeResult::Failure(format!("Get {url:?}: invalid Location header"));
                }
                _ => {}
            }
        }
        let body = read_capped(resp.into_body()).await;
        drop(conn);
        return match body {
            Ok(_) => classify(status, &url),
            Err(e) => {
                ProbeResult::Failure(format!("Get {url:?}: reading body: {}", error_chain(&e)))
            }
        };
    }
}

/// One GET over a unix socket (`Host: localhost`); redirects are not
/// followed, so a 3xx counts as success.
pub(crate) async fn probe_unix(socket: &Path, path: &str) -> ProbeResult {
    let prepared = match prepare_headers(&[]) {
        Ok(p) => p,
        Err(e) => return ProbeResult::Error(e),
    };
    let path = normalize_path(path);
    let url = format!("unix://{}{path}", socket.display());
    let stream = match tokio::net::UnixStream::connect(socket).await {
        Ok(s) => s,
        Err(e) => return ProbeResult::Failure(format!("dial unix {}: {e}", socket.display())),
    };
    let host = HeaderValue::from_static("localhost");
    let (resp, conn) = match send(stream, &path, &host, &prepared.headers).await {
        Ok(r) => r,
        Err(e) => return ProbeResult::Failure(format!("Get {url:?}: {e}")),
    };
    let status = resp.status().as_u16();
    let body = read_capped(resp.into_body()).await;
    drop(conn);
    match body {
        Ok(_) => classify(status, &url),
        Err(e) => ProbeResult::Failure(format!("Get {url:?}: reading body: {}", error_chain(&e))),
    }
}

/// Accepts any server certificate (the kubelet's `InsecureSkipVerify`), but
/// still checks the handshake signatures against the presented key.
#[derive(Debug)]
struct SkipVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for SkipVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The shared TLS client configuration (ring provider, TLS 1.2 and 1.3, no
/// certificate verification, no client certificate).
fn tls_config() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS client setup: {e}"))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(SkipVerification(provider)))
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    fn base() -> Target {
        Target {
            scheme: Scheme::Http,
            host: "127.0.0.1".into(),
            port: 8080,
            authority: "127.0.0.1:8080".into(),
            path: "/a/b/c?x=1".into(),
        }
    }

    #[test]
    fn defaults_added_only_when_absent() {
        let p = prepare_headers(&[]).unwrap();
        assert_eq!(p.host, None);
        assert_eq!(
            p.headers,
            vec![(USER_AGENT, hv("kube-probe/1.29")), (ACCEPT, hv("*/*"))]
        );

        let given = vec![
            ("X-Custom".to_string(), "1".to_string()),
            ("user-agent".to_string(), "mine/2".to_string()),
            ("X-Custom".to_string(), "2".to_string()),
            ("Accept".to_string(), "application/json".to_string()),
        ];
        let p = prepare_headers(&given).unwrap();
        let names: Vec<_> = p
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("x-custom", "1"),
                ("user-agent", "mine/2"),
                ("x-custom", "2"),
                ("accept", "application/json")
            ]
        );
    }

    #[test]
    fn empty_accept_and_user_agent_are_removed() {
        let given = vec![
            ("Accept".to_string(), String::new()),
            ("User-Agent".to_string(), String::new()),
        ];
        let p = prepare_headers(&given).unwrap();
        assert!(p.headers.is_empty(), "{:?}", p.headers);
    }

    #[test]
    fn host_header_sets_the_host_and_is_not_repeated() {
        let given = vec![
            ("Host".to_string(), "example.test".to_string()),
            ("host".to_string(), "other.test".to_string()),
        ];
        let p = prepare_headers(&given).unwrap();
        assert_eq!(p.host, Some(hv("example.test")));
        assert!(p.headers.iter().all(|(n, _)| *n != HOST));
    }

    #[test]
    fn bad_headers_are_errors() {
        assert!(prepare_headers(&[("Bad Name".into(), "x".into())]).is_err());
        assert!(prepare_headers(&[("X".into(), "a\nb".into())]).is_err());
    }

    #[test]
    fn paths_are_normalized() {
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("healthz"), "/healthz");
        assert_eq!(
            normalize_path("/health?exclude=NOSPACE&serializable=true"),
            "/health?exclude=NOSPACE&serializable=true"
        );
        assert_eq!(normalize_path("/a b#frag"), "/a%20b");
    }

    #[test]
    fn odd_paths_still_make_valid_requests() {
        for raw in [
            "/a b/\u{fc}?x=[1]&y=\"q\"",
            "/{x}|^`\\",
            "/%zz?%",
            "no-slash?q=1#frag",
        ] {
            let path = normalize_path(raw);
            let req = Request::get(path.as_str()).body(Empty::<Bytes>::new());
            assert!(req.is_ok(), "{raw:?} -> {path:?}");
        }
    }

    #[test]
    fn dot_segments_as_go() {
        for (input, want) in [
            ("/a/b/../c", "/a/c"),
            ("/a/./b/", "/a/b/"),
            ("/a/b/..", "/a/"),
            ("/../x", "/x"),
            ("/", "/"),
            ("/a//b", "/a//b"),
            ("a/b", "/a/b"),
        ] {
            assert_eq!(remove_dot_segments(input), want, "{input}");
        }
    }

    #[test]
    fn locations_resolve_as_go() {
        let b = base();
        let (t, abs) = resolve_location(&b, "/x?y=2").unwrap();
        assert_eq!((t.path.as_str(), t.port, abs), ("/x?y=2", 8080, false));
        let (t, _) = resolve_location(&b, "d").unwrap();
        assert_eq!(t.path, "/a/b/d");
        let (t, _) = resolve_location(&b, "../d").unwrap();
        assert_eq!(t.path, "/a/d");
        let (t, _) = resolve_location(&b, "?q").unwrap();
        assert_eq!(t.path, "/a/b/c?q");
        let (t, abs) = resolve_location(&b, "https://127.0.0.1:9443/s#f").unwrap();
        assert_eq!(
            (t.scheme, t.port, t.path.as_str(), abs),
            (Scheme::Https, 9443, "/s", true)
        );
        let (t, _) = resolve_location(&b, "HTTPS://other.test").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.path.as_str()),
            ("other.test", 443, "/")
        );
        let (t, abs) = resolve_location(&b, "//[::1]:81/v6").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str(), abs),
            ("::1", 81, "[::1]:81", false)
        );
        let (t, _) = resolve_location(&b, "http://user:pw@h.test:82/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("h.test", 82));
        assert!(resolve_location(&b, "ftp://h/").is_err());
        assert!(resolve_location(&b, "http://h:99999/").is_err());
        assert!(resolve_location(&b, "http:/nohost").is_err());
    }

    #[test]
    fn status_classes() {
        assert_eq!(classify(200, "u"), ProbeResult::Success);
        assert_eq!(classify(399, "u"), ProbeResult::Success);
        assert!(matches!(classify(199, "u"), ProbeResult::Failure(_)));
        assert_eq!(
            classify(500, "u"),
            ProbeResult::Failure("HTTP probe failed with statuscode: 500".into())
        );
    }

    #[test]
    fn tls_config_builds() {
        assert!(tls_config().is_ok());
    }
}
