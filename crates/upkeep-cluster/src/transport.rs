//! One HTTP/1.1 POST of JSON to one etcd endpoint, over TCP or TLS, bounded
//! by a timeout. A fresh connection per request: requests are rare (a few per
//! lease TTL), and a fresh connection never carries a half-dead socket across
//! a member restart.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use crate::error::{EtcdError, Result};

/// A parsed etcd client URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The URL as configured (without a trailing `/`), used in messages.
    pub url: String,
    /// `https://`.
    pub tls: bool,
    /// Host name or IP (IPv6 without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl Endpoint {
    /// Parses `http://host:port` or `https://host:port` (a trailing `/` is allowed).
    pub fn parse(url: &str) -> Result<Endpoint> {
        let bad = |why: &str| EtcdError::BadEndpoint {
            url: url.to_string(),
            why: why.to_string(),
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("must start with http:// or https://"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.contains(['/', '@', '?', '#']) {
            return Err(bad("expected scheme://host:port only"));
        }
        let (host, port) = authority
            .rsplit_once(':')
            .filter(|(_, p)| !p.contains(']'))
            .ok_or_else(|| bad("needs a port"))?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if host.is_empty() {
            return Err(bad("empty host"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| bad("invalid port"))?;
        Ok(Endpoint {
            url: url.trim_end_matches('/').to_string(),
            tls,
            host: host.to_string(),
            port,
        })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The answer: HTTP status and the whole body.
pub(crate) struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// POSTs `body` to `path` on `ep`, all of it (connect, TLS, request, whole
/// response) within `timeout`.
pub(crate) async fn post(
    ep: &Endpoint,
    tls: Option<&Arc<rustls::ClientConfig>>,
    path: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Answer> {
    match tokio::time::timeout(timeout, post_inner(ep, tls, path, body)).await {
        Ok(r) => r,
        Err(_) => Err(EtcdError::Timeout {
            endpoint: ep.url.clone(),
            after: timeout,
        }),
    }
}

async fn post_inner(
    ep: &Endpoint,
    tls: Option<&Arc<rustls::ClientConfig>>,
    path: &str,
    body: Vec<u8>,
) -> Result<Answer> {
    let connect_err = |source: std::io::Error| EtcdError::Connect {
        endpoint: ep.url.clone(),
        source,
    };
    let tcp = TcpStream::connect((ep.host.as_str(), ep.port))
        .await
        .map_err(connect_err)?;
    let _ = tcp.set_nodelay(true);
    if ep.tls {
        let config = tls.ok_or_else(|| EtcdError::NoCa(ep.url.clone()))?;
        let name = ServerName::try_from(ep.host.clone()).map_err(|e| EtcdError::BadEndpoint {
            url: ep.url.clone(),
            why: format!("not a valid TLS server name: {e}"),
        })?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(config))
            .connect(name, tcp)
            .await
            .map_err(connect_err)?;
        exchange(ep, TokioIo::new(stream), path, body).await
    } else {
        exchange(ep, TokioIo::new(tcp), path, body).await
    }
}

async fn exchange<IO>(ep: &Endpoint, io: IO, path: &str, body: Vec<u8>) -> Result<Answer>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let http = |source: hyper::Error| EtcdError::Http {
        endpoint: ep.url.clone(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(http)?;
    // The connection future drives the socket; it ends with the exchange (or
    // is aborted when the timeout drops us).
    let driver = tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header(hyper::header::HOST, ep.authority())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| EtcdError::Decode {
            endpoint: ep.url.clone(),
            what: path.to_string(),
            why: format!("cannot build the request: {e}"),
        })?;
    let result = async {
        let resp = sender.send_request(req).await.map_err(http)?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map_err(http)?.to_bytes();
        Ok(Answer { status, body })
    }
    .await;
    driver.abort();
    result
}

#[cfg(test)]
mod tests {
    use super::Endpoint;

    #[test]
    fn parses_endpoints() {
        let e = Endpoint::parse("https://10.0.0.11:2379/").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (true, "10.0.0.11", 2379));
        assert_eq!(e.url, "https://10.0.0.11:2379");
        let e = Endpoint::parse("http://[::1]:2379").unwrap();
        assert_eq!((e.tls, e.host.as_str(), e.port), (false, "::1", 2379));
        assert_eq!(e.authority(), "[::1]:2379");
        for bad in [
            "10.0.0.1:2379",
            "http://h",
            "http://:1",
            "http://h:0",
            "http://h:1/v3",
        ] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
