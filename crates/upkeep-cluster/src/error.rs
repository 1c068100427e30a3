//! Errors of the etcd client. Each names the endpoint it concerns and, for an
//! answer from etcd, etcd's own message. None carries key material, request
//! bodies or values (node records can name services, never their argv/env).

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// What went wrong talking to etcd.
#[derive(Debug, Error)]
pub enum EtcdError {
    /// The client was built without any endpoint.
    #[error("no etcd endpoint configured")]
    NoEndpoints,
    /// An endpoint URL that cannot be used.
    #[error("invalid etcd endpoint {url:?}: {why}")]
    BadEndpoint {
        /// The URL as given.
        url: String,
        /// Why it is unusable.
        why: String,
    },
    /// A TLS file that cannot be read or parsed (only the path is named).
    #[error("TLS file {path}: {why}")]
    TlsFile {
        /// The file concerned.
        path: PathBuf,
        /// Why it is unusable (never its content).
        why: String,
    },
    /// The TLS settings were rejected by rustls.
    #[error("TLS configuration: {0}")]
    TlsConfig(#[source] rustls::Error),
    /// An https:// endpoint but no CA to verify it with.
    #[error("etcd endpoint {0} is https:// but no ca_file is configured")]
    NoCa(String),
    /// TCP connect or TLS handshake failed.
    #[error("etcd {endpoint}: cannot connect: {source}")]
    Connect {
        /// The endpoint tried.
        endpoint: String,
        /// The I/O error (TLS handshake errors come as I/O errors).
        #[source]
        source: std::io::Error,
    },
    /// No complete answer within the per-request timeout.
    #[error("etcd {endpoint}: no answer within {after:?}")]
    Timeout {
        /// The endpoint tried.
        endpoint: String,
        /// The per-request timeout.
        after: Duration,
    },
    /// The HTTP exchange failed after connecting.
    #[error("etcd {endpoint}: HTTP: {}", chain(source))]
    Http {
        /// The endpoint tried.
        endpoint: String,
        /// hyper's error.
        #[source]
        source: hyper::Error,
    },
    /// etcd answered with an error (gRPC status carried by the gateway).
    #[error("etcd {endpoint}: {message} (HTTP {status}, gRPC code {code})")]
    Etcd {
        /// The endpoint that answered.
        endpoint: String,
        /// HTTP status of the answer.
        status: u16,
        /// gRPC status code (14 = unavailable, 5 = not found, ...).
        code: i32,
        /// etcd's message, e.g. "etcdserver: requested lease not found".
        message: String,
    },
    /// The answer was not the JSON expected.
    #[error("etcd {endpoint}: unexpected answer to {what}: {why}")]
    Decode {
        /// The endpoint that answered.
        endpoint: String,
        /// The request, e.g. "/v3/kv/range".
        what: String,
        /// What did not match.
        why: String,
    },
    /// Every endpoint failed; `last` is the last endpoint's error.
    #[error("no etcd endpoint answered ({tried} tried); last: {last}")]
    AllFailed {
        /// How many endpoints were tried.
        tried: usize,
        /// The last error.
        #[source]
        last: Box<EtcdError>,
    },
}

/// `err` and its causes, joined by ": " (hyper's own message alone, e.g.
/// "connection error", hides the TLS or I/O cause).
fn chain(err: &dyn std::error::Error) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let msg = e.to_string();
        if !s.ends_with(&msg) {
            s = format!("{s}: {msg}");
        }
        cur = e.source();
    }
    s
}

impl EtcdError {
    /// Whether another endpoint might do better: the connection failed, timed
    /// out, or the member answered "unavailable" (gRPC 14, e.g. no leader).
    pub fn is_retryable_elsewhere(&self) -> bool {
        match self {
            EtcdError::Connect { .. } | EtcdError::Timeout { .. } | EtcdError::Http { .. } => true,
            EtcdError::Etcd { code, .. } => *code == 14,
            _ => false,
        }
    }

    /// Whether etcd said the thing asked about does not exist (gRPC 5).
    pub fn is_not_found(&self) -> bool {
        match self {
            EtcdError::Etcd { code, .. } => *code == 5,
            EtcdError::AllFailed { last, .. } => last.is_not_found(),
            _ => false,
        }
    }
}

/// Result with [`EtcdError`].
pub type Result<T, E = EtcdError> = std::result::Result<T, E>;
