//! `log = "journal"`: a stream connection to journald for a service's
//! stdout and stderr, as `sd_journal_stream_fd(3)` makes one.
//!
//! journald (not upkeep) holds the other end, so a service keeps logging
//! while upkeep restarts; journald does rotation, disk caps and rate limits.

use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// journald's stream socket.
pub const STDOUT_SOCKET: &str = "/run/systemd/journal/stdout";

/// syslog priority of every line without a `<N>` prefix: info, systemd's
/// default `SyslogLevel=`.
pub const PRIORITY_INFO: u8 = 6;

/// Why a journal stream could not be made.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The socket is missing or journald does not accept.
    #[error("cannot connect to journald at {path}: {source}")]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The stream header could not be sent.
    #[error("journald at {path} refused the stream header: {source}")]
    Header {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The identifier cannot be sent on one header line.
    #[error("service name {0:?} cannot be a journal identifier (newline)")]
    BadIdentifier(String),
}

/// The header journald's stdout protocol expects, one field per line:
/// identifier, unit id (empty: journald finds the unit from the peer), priority,
/// level prefix (1: a line may start with `<N>`, as systemd's default
/// `SyslogLevelPrefix=yes`), forward to syslog, to kmsg, to console (all 0).
pub fn stream_header(identifier: &str) -> Result<Vec<u8>, JournalError> {
    if identifier.contains('\n') {
        return Err(JournalError::BadIdentifier(identifier.to_string()));
    }
    Ok(format!("{identifier}\n\n{PRIORITY_INFO}\n1\n0\n0\n0\n").into_bytes())
}

/// Connects to journald's stream socket at `socket` and returns the write end
/// for a child's stdout and stderr (one stream for both, as systemd does),
/// with `SYSLOG_IDENTIFIER=identifier`.
pub fn connect_at(socket: &Path, identifier: &str) -> Result<OwnedFd, JournalError> {
    let header = stream_header(identifier)?;
    let mut s = UnixStream::connect(socket).map_err(|source| JournalError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    let hdr_err = |source| JournalError::Header {
        path: socket.to_path_buf(),
        source,
    };
    // As sd_journal_stream_fd: a large send buffer absorbs bursts while
    // journald is busy (best effort), and nothing is ever read on it.
    set_send_buffer(&s, 8 << 20);
    s.shutdown(std::net::Shutdown::Read).map_err(hdr_err)?;
    s.write_all(&header).map_err(hdr_err)?;
    Ok(OwnedFd::from(s))
}

/// Best-effort `SO_SNDBUF`.
fn set_send_buffer(s: &UnixStream, bytes: libc::c_int) {
    use std::os::fd::AsFd;
    crate::spawn::set_send_buffer(s.as_fd(), bytes);
}

/// [`connect_at`] on [`STDOUT_SOCKET`].
pub fn connect(identifier: &str) -> Result<OwnedFd, JournalError> {
    connect_at(Path::new(STDOUT_SOCKET), identifier)
}

/// Whether journald's stream socket exists on this host.
pub fn available() -> bool {
    Path::new(STDOUT_SOCKET).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_as_sd_journal_stream_fd_sends_it() {
        assert_eq!(
            stream_header("kube-system-etcd/etcd").unwrap(),
            b"kube-system-etcd/etcd\n\n6\n1\n0\n0\n0\n"
        );
        assert!(matches!(
            stream_header("a\nb"),
            Err(JournalError::BadIdentifier(_))
        ));
    }

    #[test]
    fn missing_socket_names_the_path() {
        let e = connect_at(Path::new("/nonexistent/journal/stdout"), "x").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/journal/stdout"), "{e}");
    }
}
