//! The control socket over real unix sockets: round trips, permissions,
//! stale sockets, hostile clients, and a real non-root peer (a forked child
//! that drops to uid 65534 before connecting). Needs root.

mod common;

use common::deadline;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use upkeep_api::{control_request, serve_control_with, ClientError, ControlConfig, ServeError};
use upkeep_core::control::{ControlReply, ControlRequest};

const NOBODY: u32 = 65534;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test must run as root (it checks uid-based refusal); run it as root"
    );
}

type Inbox = mpsc::Receiver<(ControlRequest, oneshot::Sender<ControlReply>)>;

struct Control {
    path: PathBuf,
    _dir: tempfile::TempDir,
    inbox: Inbox,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Control {
    async fn start(config: ControlConfig) -> Control {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upkeep.sock");
        let (tx, inbox) = mpsc::channel(8);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let p = path.clone();
        let task = tokio::spawn(async move {
            serve_control_with(&p, tx, config, async move {
                let _ = stop_rx.await;
            })
            .await
        });
        deadline(5, "control socket appears", async {
            while !path.exists() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        Control {
            path,
            _dir: dir,
            inbox,
            stop: Some(stop_tx),
            task,
        }
    }

    async fn stop(mut self) -> PathBuf {
        let _ = self.stop.take().unwrap().send(());
        deadline(10, "control shutdown", &mut self.task)
            .await
            .unwrap()
            .expect("serve_control result");
        self.path.clone()
    }
}

/// A supervisor stand-in that answers every request with `ok` and echoes it.
fn answer_all(mut inbox: Inbox) -> JoinHandle<Vec<ControlRequest>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while let Some((req, reply)) = inbox.recv().await {
            let message = format!("accepted {req:?}");
            seen.push(req);
            let _ = reply.send(ControlReply { ok: true, message });
        }
        seen
    })
}

async fn raw_line(path: &Path, line: &[u8]) -> String {
    let mut s = UnixStream::connect(path).await.unwrap();
    let _ = s.write_all(line).await;
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn requests_round_trip_and_the_socket_is_0600_and_removed_at_shutdown() {
    require_root();
    let mut ctl = Control::start(ControlConfig::default()).await;
    let mode = std::fs::metadata(&ctl.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "socket mode {mode:o}");
    let inbox = std::mem::replace(&mut ctl.inbox, mpsc::channel(1).1);
    let supervisor = answer_all(inbox);
    let reqs = [
        ControlRequest::Restart("etcd".into()),
        ControlRequest::Stop("kube-system-pod/c".into()),
        ControlRequest::Start("kube-scheduler".into()),
    ];
    for req in &reqs {
        let reply = deadline(10, "control round trip", control_request(&ctl.path, req))
            .await
            .expect("reply");
        assert!(reply.ok);
        assert_eq!(reply.message, format!("accepted {req:?}"));
    }
    // The wire form is the serde form of ControlRequest.
    let raw = deadline(
        5,
        "raw request",
        raw_line(&ctl.path, b"{\"op\":\"restart\",\"service\":\"etcd\"}\n"),
    )
    .await;
    let reply: ControlReply = serde_json::from_str(raw.trim_end()).unwrap();
    assert!(reply.ok, "{raw}");
    assert!(raw.ends_with('\n'));
    let path = ctl.stop().await;
    assert!(!path.exists(), "socket removed at shutdown");
    let seen = deadline(5, "supervisor ends", supervisor).await.unwrap();
    assert_eq!(seen.len(), 4);
    assert_eq!(&seen[..3], &reqs);
}

#[tokio::test]
async fn bad_requests_get_a_clear_refusal_and_reach_nobody() {
    require_root();
    let config = ControlConfig {
        read_timeout: Duration::from_millis(300),
        reply_timeout: Duration::from_millis(300),
        max_line_bytes: 256,
        ..ControlConfig::default()
    };
    let mut ctl = Control::start(config).await;
    let garbage = deadline(5, "garbage", raw_line(&ctl.path, b"\x00\xffnot json\n")).await;
    assert!(
        garbage.contains("\"ok\":false") && garbage.contains("bad request"),
        "{garbage}"
    );
    let unknown = deadline(
        5,
        "unknown op",
        raw_line(&ctl.path, b"{\"op\":\"reboot\",\"service\":\"etcd\"}\n"),
    )
    .await;
    assert!(unknown.contains("bad request"), "{unknown}");
    let long = format!("{{\"op\":\"stop\",\"service\":\"{}\"}}\n", "x".repeat(1000));
    let too_long = deadline(5, "long line", raw_line(&ctl.path, long.as_bytes())).await;
    assert!(
        too_long.contains("request longer than 256 bytes"),
        "{too_long}"
    );
    // A client that connects and says nothing is answered and dropped.
    let mut silent = UnixStream::connect(&ctl.path).await.unwrap();
    let mut out = String::new();
    deadline(5, "silent client", silent.read_to_string(&mut out))
        .await
        .unwrap();
    assert!(out.contains("no complete request line"), "{out}");
    assert!(
        ctl.inbox.try_recv().is_err(),
        "no bad request reached the supervisor"
    );

    // A supervisor that never answers: the client still gets a reply.
    let req = ControlRequest::Restart("etcd".into());
    let (reply, received) = tokio::join!(control_request(&ctl.path, &req), async {
        let got = deadline(5, "request reaches the supervisor", ctl.inbox.recv())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await; // hold the reply sender past the timeout
        got
    });
    assert_eq!(received.0, req);
    let reply = reply.unwrap();
    assert!(
        !reply.ok && reply.message.contains("no answer from the supervisor"),
        "{reply:?}"
    );
    ctl.stop().await;
}

#[tokio::test]
async fn stale_sockets_are_replaced_and_live_ones_refused() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upkeep.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap()); // a dead daemon's leftover
    assert!(path.exists());
    let (tx, _inbox) = mpsc::channel(1);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let p = path.clone();
    let first = tokio::spawn(async move {
        serve_control_with(&p, tx, ControlConfig::default(), async move {
            let _ = stop_rx.await;
        })
        .await
    });
    deadline(5, "bound", async {
        while std::os::unix::net::UnixStream::connect(&path).is_err() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let (tx2, _inbox2) = mpsc::channel(1);
    let second = deadline(
        5,
        "second server",
        serve_control_with(&path, tx2, ControlConfig::default(), std::future::pending()),
    )
    .await;
    assert!(
        matches!(second, Err(ServeError::InUse { .. })),
        "{second:?}"
    );
    assert!(path.exists(), "the live socket is left alone");
    let _ = stop_tx.send(());
    deadline(5, "first stops", first).await.unwrap().unwrap();

    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "precious").unwrap();
    let (tx3, _inbox3) = mpsc::channel(1);
    let third =
        serve_control_with(&file, tx3, ControlConfig::default(), std::future::pending()).await;
    assert!(
        matches!(third, Err(ServeError::NotASocket { .. })),
        "{third:?}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
}

#[tokio::test]
async fn client_errors_say_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("upkeep.sock");
    let err = control_request(&missing, &ControlRequest::Restart("etcd".into()))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::NotRunning { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "upkeep is not running (no control socket at {}); if it runs with another config or state directory, pass the daemon's --config or --state-dir",
            missing.display()
        )
    );

    drop(std::os::unix::net::UnixListener::bind(&missing).unwrap());
    let stale = control_request(&missing, &ControlRequest::Restart("etcd".into()))
        .await
        .unwrap_err();
    assert!(
        matches!(stale, ClientError::StaleSocket { .. }),
        "{stale:?}"
    );
    assert!(
        stale.to_string().starts_with("upkeep is not running"),
        "{stale}"
    );
}

#[tokio::test]
async fn a_denial_reply_is_a_permission_error_for_the_client() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upkeep.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"{\"ok\":false,\"message\":\"permission denied\"}\n")
            .await
            .unwrap();
    });
    let err = deadline(
        5,
        "denied",
        control_request(&path, &ControlRequest::Stop("etcd".into())),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ClientError::PermissionDenied { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("run this as root"), "{err}");
    server.await.unwrap();
}

/// Forks a child that drops to uid/gid 65534, connects to `path`, sends
/// `request` and copies the reply to a pipe. Returns `Err(errno)` if the
/// connect failed, else the reply bytes. The child only makes raw syscalls
/// (async-signal-safe after fork in a threaded process); every buffer is
/// prepared before the fork. Hard deadline: the child is killed by pid.
fn exchange_as_nobody(path: &Path, request: &'static [u8]) -> Result<Vec<u8>, i32> {
    use std::os::unix::ffi::OsStrExt;
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    assert!(bytes.len() < addr.sun_path.len(), "socket path too long");
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let addr_len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let mut fds = [0i32; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    let timeout = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };

    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // Child: async-signal-safe calls only, then _exit.
        unsafe {
            let fail = |tag: u8| {
                let errno = *libc::__errno_location();
                let msg = [tag, errno as u8, (errno >> 8) as u8];
                libc::write(wr, msg.as_ptr().cast(), 3);
                libc::_exit(1);
            };
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
            {
                fail(b'U');
            }
            let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
            if fd < 0 {
                fail(b'S');
            }
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
            if libc::connect(fd, (&addr as *const libc::sockaddr_un).cast(), addr_len) != 0 {
                fail(b'C');
            }
            let ok = [b'K'];
            libc::write(wr, ok.as_ptr().cast(), 1);
            libc::write(fd, request.as_ptr().cast(), request.len());
            let mut buf = [0u8; 4096];
            loop {
                let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
                if n <= 0 {
                    break;
                }
                libc::write(wr, buf.as_ptr().cast(), n as usize);
            }
            libc::_exit(0);
        }
    }
    // Parent.
    unsafe { libc::close(wr) };
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = unsafe { libc::read(rd, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
        unsafe { libc::close(rd) };
        let _ = done_tx.send(out);
    });
    let out = match done_rx.recv_timeout(Duration::from_secs(15)) {
        Ok(out) => out,
        Err(_) => {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            panic!("the uid {NOBODY} child did not finish within 15s (killed)");
        }
    };
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    match out.first() {
        Some(b'K') => Ok(out[1..].to_vec()),
        Some(b'C') => Err(i32::from(out[1]) | (i32::from(out[2]) << 8)),
        Some(b'U') => panic!("the child could not drop to uid {NOBODY}"),
        _ => panic!("unexpected child output {out:?}"),
    }
}

#[tokio::test]
async fn a_non_root_peer_is_refused_by_mode_and_by_uid_check() {
    require_root();
    let mut ctl = Control::start(ControlConfig::default()).await;
    // The directory must be traversable for the unprivileged child.
    std::fs::set_permissions(
        ctl.path.parent().unwrap(),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let req: &'static [u8] = b"{\"op\":\"stop\",\"service\":\"etcd\"}\n";

    // Mode 0600: the kernel refuses the connect itself.
    let path = ctl.path.clone();
    let first = deadline(
        20,
        "nobody connects (0600)",
        tokio::task::spawn_blocking(move || exchange_as_nobody(&path, req)),
    )
    .await
    .unwrap();
    assert_eq!(
        first,
        Err(libc::EACCES),
        "connect to a 0600 root socket as uid {NOBODY}"
    );

    // A socket opened up by mistake: SO_PEERCRED still refuses.
    std::fs::set_permissions(&ctl.path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let path = ctl.path.clone();
    let second = deadline(
        20,
        "nobody connects (0666)",
        tokio::task::spawn_blocking(move || exchange_as_nobody(&path, req)),
    )
    .await
    .unwrap();
    let reply = String::from_utf8(second.expect("connect succeeds on a 0666 socket")).unwrap();
    assert_eq!(reply, "{\"ok\":false,\"message\":\"permission denied\"}\n");
    assert!(
        ctl.inbox.try_recv().is_err(),
        "the refused request never reached the supervisor"
    );

    // Root is still served.
    let start = ControlRequest::Start("etcd".into());
    let (reply, got) = tokio::join!(control_request(&ctl.path, &start), async {
        let (req, tx) = deadline(5, "root request", ctl.inbox.recv()).await.unwrap();
        let _ = tx.send(ControlReply {
            ok: true,
            message: "ok".into(),
        });
        req
    });
    assert!(reply.unwrap().ok);
    assert_eq!(got, start);
    ctl.stop().await;
}
