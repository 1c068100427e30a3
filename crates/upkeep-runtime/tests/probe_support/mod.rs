//! Real targets for the probe tests: HTTP, HTTPS (self-signed, made with
//! `openssl` at test time), unix-socket HTTP and "hang" servers on loopback
//! ephemeral ports, each a task of the test's runtime (aborted on drop).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;
use upkeep_runtime::probe::ExecContext;
use upkeep_runtime::reaper::Reaper;

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Path and query.
    pub target: String,
    /// Header (lower-case name, value), in wire order.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    /// Every value of header `name`.
    pub fn values(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// What a route answers: status, extra headers, body.
pub type Reply = (u16, Vec<(String, String)>, Vec<u8>);

type Router = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// A running test server; the task is aborted on drop.
pub struct Server {
    /// Where it listens (TCP servers).
    pub addr: Option<SocketAddr>,
    /// Requests seen so far.
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: JoinHandle<()>,
}

impl Server {
    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.addr.expect("tcp server").port()
    }

    /// Requests seen so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Number of requests seen so far.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_conn<IO>(io: IO, router: Router, seen: Arc<Mutex<Vec<Seen>>>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req: Request<Incoming>| {
        let router = router.clone();
        let seen = seen.clone();
        async move {
            let target = req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default();
            let headers = req
                .headers()
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            seen.lock().unwrap().push(Seen {
                target: target.clone(),
                headers,
            });
            let (status, extra, body) = router(&target);
            let mut resp = Response::builder().status(status);
            for (n, v) in extra {
                resp = resp.header(n, v);
            }
            Ok::<_, Infallible>(resp.body(Full::new(Bytes::from(body))).unwrap())
        }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .await;
}

/// An HTTP server on `bind` (e.g. `127.0.0.1:0`) answering with `router(path_and_query)`.
pub async fn http_server(
    bind: &str,
    router: impl Fn(&str) -> Reply + Send + Sync + 'static,
) -> Server {
    let listener = TcpListener::bind(bind).await.expect("bind test server");
    let addr = listener.local_addr().unwrap();
    let router: Router = Arc::new(router);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve_conn(stream, router.clone(), s.clone()));
        }
    });
    Server {
        addr: Some(addr),
        seen,
        task,
    }
}

/// An HTTP server on 127.0.0.1 always answering `status` with a short body.
pub async fn status_server(status: u16) -> Server {
    http_server("127.0.0.1:0", move |_| (status, vec![], b"body".to_vec())).await
}

/// An HTTP server whose status can be changed while it runs.
pub async fn switch_server(initial: u16) -> (Server, Arc<AtomicU16>) {
    let status = Arc::new(AtomicU16::new(initial));
    let s = status.clone();
    let server = http_server("127.0.0.1:0", move |_| {
        (s.load(Ordering::SeqCst), vec![], b"ok".to_vec())
    })
    .await;
    (server, status)
}

/// A TCP server that accepts connections and never answers (keeps them open).
/// The counter tells how many connections were accepted.
pub async fn hang_server() -> (Server, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = accepted.clone();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });
    (
        Server {
            addr: Some(addr),
            seen: Arc::new(Mutex::new(Vec::new())),
            task,
        },
        accepted,
    )
}

/// An HTTP server on a unix socket at `path`.
pub async fn unix_server(
    path: &Path,
    router: impl Fn(&str) -> Reply + Send + Sync + 'static,
) -> Server {
    let listener = UnixListener::bind(path).expect("bind unix socket");
    let router: Router = Arc::new(router);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(serve_conn(stream, router.clone(), s.clone()));
        }
    });
    Server {
        addr: None,
        seen,
        task,
    }
}

/// A self-signed certificate (CN `wrong.example`, so it matches no name we
/// connect to) and its PKCS#8 key, both DER, made with the `openssl` CLI.
///
/// `openssl` runs through the reaper: once the reaper's `waitpid(-1)` loop
/// runs in this process, std's `Command::output` would lose its child's
/// status (ECHILD).
pub async fn self_signed(dir: &Path) -> (Vec<u8>, Vec<u8>) {
    let reaper = reaper();
    let run = |args: &[&str]| {
        let err = std::fs::File::create(dir.join("openssl.err")).unwrap();
        let mut cmd = std::process::Command::new("openssl");
        cmd.args(args)
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(err);
        let spawned = reaper
            .spawn(&mut cmd)
            .expect("the openssl CLI is needed for the HTTPS tests (apt-get install openssl)");
        (format!("{args:?}"), spawned.exit)
    };
    for args in [
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
            "-days",
            "1",
            "-subj",
            "/CN=wrong.example",
        ][..],
        &[
            "x509", "-in", "cert.pem", "-outform", "DER", "-out", "cert.der",
        ][..],
        &[
            "pkcs8", "-topk8", "-nocrypt", "-in", "key.pem", "-outform", "DER", "-out", "key.der",
        ][..],
    ] {
        let (what, exit) = run(args);
        let status = tokio::time::timeout(std::time::Duration::from_secs(20), exit)
            .await
            .expect("openssl took too long")
            .expect("reaper dropped openssl");
        let err = std::fs::read_to_string(dir.join("openssl.err")).unwrap_or_default();
        assert!(status.success(), "openssl {what}: {status}: {err}");
    }
    (
        std::fs::read(dir.join("cert.der")).unwrap(),
        std::fs::read(dir.join("key.der")).unwrap(),
    )
}

/// An HTTPS server on 127.0.0.1 with a fresh self-signed certificate.
pub async fn https_server(
    dir: &Path,
    router: impl Fn(&str) -> Reply + Send + Sync + 'static,
) -> Server {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let (cert, key) = self_signed(dir).await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )
        .expect("server TLS config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router: Router = Arc::new(router);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, router, s) = (acceptor.clone(), router.clone(), s.clone());
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(stream).await {
                    serve_conn(tls, router, s).await;
                }
            });
        }
    });
    Server {
        addr: Some(addr),
        seen,
        task,
    }
}

/// The process-wide reaper, its SIGCHLD task on a runtime of its own that
/// lives as long as the test process: a test's runtime ending must not stop
/// the reaping for the tests still running.
pub fn reaper() -> Arc<Reaper> {
    static REAPER: OnceLock<Arc<Reaper>> = OnceLock::new();
    REAPER
        .get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    tx.send(Reaper::start()).unwrap();
                    std::future::pending::<()>().await
                });
            });
            rx.recv().unwrap().expect("start the reaper")
        })
        .clone()
}

/// An exec context with a minimal environment, `/` as working directory and
/// upkeep's own user, on the test process's [`reaper`].
pub fn ctx() -> ExecContext {
    let reaper = reaper();
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_string(),
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
    );
    ExecContext {
        cgroup: None,
        reaper,
        env,
        working_dir: PathBuf::from("/"),
        uid: None,
        gid: None,
        mount_ns: None,
    }
}
