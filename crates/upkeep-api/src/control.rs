//! The control socket (`upkeep restart|stop|start NAME`): a unix socket in
//! the state directory, mode 0600, and every peer's uid checked with
//! `SO_PEERCRED` (only root or upkeep's own effective uid may act), so a
//! socket made world-accessible by mistake still refuses strangers.
//!
//! Protocol: the client sends one JSON line (a [`ControlRequest`] in its
//! serde form, e.g. `{"op":"restart","service":"etcd"}`), the server answers
//! one JSON line (a [`ControlReply`]) and closes. Requests are handed to the
//! supervisor over a channel; this module never touches the executor.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, Semaphore};
use upkeep_core::control::{ControlReply, ControlRequest};

use crate::client::ClientError;

/// The supervisor's end of the control channel: each request comes with a
/// oneshot sender for its reply.
pub type ControlSender = mpsc::Sender<(ControlRequest, oneshot::Sender<ControlReply>)>;

/// The reply to a peer whose uid may not act.
pub const DENIED_MESSAGE: &str = "permission denied";

/// How long [`control_request`] waits for the reply: longer than the
/// server's default `reply_timeout`, so the server's answer wins.
pub const CLIENT_REPLY_TIMEOUT: Duration = Duration::from_secs(130);

/// Largest reply line [`control_request`] accepts.
const MAX_REPLY_BYTES: u64 = 64 * 1024;

/// Settings of the control socket server. `Default` gives the production values.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Longest request line in bytes, newline included.
    pub max_line_bytes: usize,
    /// A client must send its whole request line within this time.
    pub read_timeout: Duration,
    /// How long to wait for the supervisor's reply (a restart includes the
    /// stop's full grace period).
    pub reply_timeout: Duration,
    /// Clients served at once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            max_line_bytes: 4096,
            read_timeout: Duration::from_secs(5),
            reply_timeout: Duration::from_secs(120),
            max_connections: 16,
        }
    }
}

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A live upkeep already answers on the socket.
    #[error("another upkeep is already listening on the control socket {path}")]
    InUse {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket is in the way.
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket {
        /// The path.
        path: PathBuf,
    },
    /// Inspecting, removing, binding or chmod-ing the socket failed.
    #[error("{action} the control socket {path}: {source}")]
    Io {
        /// What was being done ("binding", ...).
        action: &'static str,
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> ServeError + 'a {
    move |source| ServeError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Removes a stale socket at `path` (nobody answers on it). Refuses when a
/// live server answers or when the path is not a socket.
fn clear_stale(path: &Path) -> Result<(), ServeError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspecting", path)(e)),
    };
    if !meta.file_type().is_socket() {
        return Err(ServeError::NotASocket {
            path: path.to_path_buf(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(ServeError::InUse {
            path: path.to_path_buf(),
        }),
        Err(_) => std::fs::remove_file(path).map_err(io_err("removing the stale", path)),
    }
}

/// [`serve_control_with`] with [`ControlConfig::default`].
pub async fn serve_control(
    path: &Path,
    tx: ControlSender,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    serve_control_with(path, tx, ControlConfig::default(), shutdown).await
}

/// Serves the control socket at `path` until `shutdown` completes, then
/// removes the socket file (if it is still the one it created). A stale
/// socket left by a crashed upkeep is replaced; a live one is an error.
/// The socket is created with mode 0600 and every peer's uid is checked.
pub async fn serve_control_with(
    path: &Path,
    tx: ControlSender,
    config: ControlConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), ServeError> {
    clear_stale(path)?;
    let listener = UnixListener::bind(path).map_err(io_err("binding", path))?;
    // bind() honours the umask (0755 at worst with 022: connect() needs
    // write permission, so others are already locked out); tighten to 0600.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io_err("setting mode 0600 on", path))?;
    let ino = std::fs::symlink_metadata(path)
        .map(|m| (m.dev(), m.ino()))
        .ok();
    let euid = nix::unistd::geteuid().as_raw();
    let config = Arc::new(config);
    let permits = Arc::new(Semaphore::new(
        config.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    tokio::pin!(shutdown);
    let l = &listener;
    while let Some((permit, stream)) =
        crate::accept::next_connection("control", &permits, &mut shutdown, move || async move {
            l.accept().await.map(|(stream, _)| stream)
        })
        .await
    {
        let tx = tx.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let _permit = permit;
            handle_client(stream, tx, &config, euid).await;
        });
    }
    drop(listener);
    // Remove the socket only if it is still ours (not a successor's).
    if ino.is_some()
        && std::fs::symlink_metadata(path)
            .map(|m| (m.dev(), m.ino()))
            .ok()
            == ino
    {
        if let Err(e) = std::fs::remove_file(path) {
            tracing::warn!("control: removing {}: {e}", path.display());
        }
    }
    Ok(())
}

async fn write_reply(stream: &mut UnixStream, reply: &ControlReply) {
    let mut line = serde_json::to_vec(reply)
        .unwrap_or_else(|_| br#"{"ok":false,"message":"internal error"}"#.to_vec());
    line.push(b'\n');
    let write = async {
        stream.write_all(&line).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(Duration::from_secs(5), write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("control: writing the reply: {e}"),
        Err(_) => tracing::debug!("control: the client does not read its reply; dropping it"),
    }
}

fn refuse(message: impl Into<String>) -> ControlReply {
    ControlReply {
        ok: false,
        message: message.into(),
    }
}

async fn handle_client(
    mut stream: UnixStream,
    tx: ControlSender,
    config: &ControlConfig,
    euid: u32,
) {
    let cred = match stream.peer_cred() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("control: cannot read the peer's credentials, refusing: {e}");
            write_reply(&mut stream, &refuse(DENIED_MESSAGE)).await;
            return;
        }
    };
    let uid = cred.uid();
    if uid != 0 && uid != euid {
        tracing::warn!(
            uid,
            pid = cred.pid(),
            "control: refused a request from an unprivileged user"
        );
        write_reply(&mut stream, &refuse(DENIED_MESSAGE)).await;
        return;
    }
    let max = config.max_line_bytes;
    let mut line = Vec::with_capacity(256);
    let read = {
        let mut reader = BufReader::new(&mut stream).take(max as u64 + 1);
        tokio::time::timeout(config.read_timeout, reader.read_until(b'\n', &mut line)).await
    };
    let reply = match read {
        Err(_) => refuse(format!("no complete request line within {:?}", config.read_timeout)),
        Ok(Err(e)) => {
            tracing::debug!("control: reading the request: {e}");
            return;
        }
        Ok(Ok(_)) if line.len() > max => {
            refuse(format!("request longer than {max} bytes"))
        }
        Ok(Ok(_)) => match serde_json::from_slice::<ControlRequest>(line.trim_ascii()) {
            Err(e) => refuse(format!(
                "bad request: {e} (expected one JSON line like {{\"op\":\"restart\",\"service\":\"NAME\"}})"
            )),
            Ok(req) => {
                tracing::info!(uid, request = ?req, "control: request");
                let (reply_tx, reply_rx) = oneshot::channel();
                let exchange = async {
                    if tx.send((req, reply_tx)).await.is_err() {
                        return refuse("upkeep is shutting down");
                    }
                    reply_rx.await.unwrap_or_else(|_| refuse("the supervisor dropped the request"))
                };
                match tokio::time::timeout(config.reply_timeout, exchange).await {
                    Ok(reply) => reply,
                    Err(_) => refuse(format!("no answer from the supervisor within {:?}", config.reply_timeout)),
                }
            }
        },
    };
    write_reply(&mut stream, &reply).await;
}

/// Sends one request to the daemon's control socket at `path` and returns
/// its reply. A refused peer (not root, not upkeep's user), at the socket's
/// permissions or at upkeep's uid check, is [`ClientError::PermissionDenied`];
/// a missing socket is [`ClientError::NotRunning`].
pub async fn control_request(
    path: &Path,
    req: &ControlRequest,
) -> Result<ControlReply, ClientError> {
    let mut stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e) => {
            let path = path.to_path_buf();
            return Err(match e.kind() {
                io::ErrorKind::NotFound => ClientError::NotRunning { path },
                io::ErrorKind::ConnectionRefused => ClientError::StaleSocket { path },
                io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { path },
                _ => ClientError::Io {
                    context: format!("connecting to the control socket {}", path.display()),
                    source: e,
                },
            });
        }
    };
    let mut line = serde_json::to_vec(req).map_err(|e| ClientError::BadResponse {
        what: "encoding the request".into(),
        detail: e.to_string(),
    })?;
    line.push(b'\n');
    let io_ctx = |what: &str| format!("{what} the control socket {}", path.display());
    let exchange = async {
        stream
            .write_all(&line)
            .await
            .map_err(|source| ClientError::Io {
                context: io_ctx("writing to"),
                source,
            })?;
        let mut reply = Vec::new();
        BufReader::new(&mut stream)
            .take(MAX_REPLY_BYTES)
            .read_until(b'\n', &mut reply)
            .await
            .map_err(|source| ClientError::Io {
                context: io_ctx("reading from"),
                source,
            })?;
        Ok::<_, ClientError>(reply)
    };
    let reply = tokio::time::timeout(CLIENT_REPLY_TIMEOUT, exchange)
        .await
        .map_err(|_| ClientError::Timeout {
            what: io_ctx("waiting for a reply on"),
            after: CLIENT_REPLY_TIMEOUT,
        })??;
    if reply.is_empty() {
        return Err(ClientError::BadResponse {
            what: format!("control socket {}", path.display()),
            detail: "upkeep closed the connection without a reply".into(),
        });
    }
    let reply: ControlReply =
        serde_json::from_slice(reply.trim_ascii()).map_err(|e| ClientError::BadResponse {
            what: format!("control socket {}", path.display()),
            detail: e.to_string(),
        })?;
    if !reply.ok && reply.message == DENIED_MESSAGE {
        return Err(ClientError::PermissionDenied {
            path: path.to_path_buf(),
        });
    }
    Ok(reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_stale_refuses_a_regular_file_and_ignores_a_missing_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("none.sock");
        assert!(clear_stale(&missing).is_ok());
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        assert!(matches!(
            clear_stale(&file),
            Err(ServeError::NotASocket { .. })
        ));
        assert!(file.exists(), "a regular file is never removed");
    }

    #[test]
    fn clear_stale_removes_a_dead_socket_and_refuses_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        assert!(matches!(clear_stale(&path), Err(ServeError::InUse { .. })));
        drop(live); // the file stays behind, nobody listens: stale
        assert!(path.exists());
        clear_stale(&path).unwrap();
        assert!(!path.exists());
    }
}
