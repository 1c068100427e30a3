//! systemd integration: READY=1, STATUS=, WATCHDOG=1 and STOPPING=1 on a real
//! NOTIFY_SOCKET, with WATCHDOG_USEC as systemd sets it.

mod common;

use common::*;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sends_ready_status_watchdog_and_stopping() {
    let d = Daemon::prepare("[services.s]\ncommand = [\"/bin/sleep\", \"1000\"]\n", &[]);
    let sock_path = d.dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&d.config)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut got: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut watchdogs = 0;
    while Instant::now() < deadline && watchdogs < 2 {
        if let Ok(n) = sock.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).to_string();
            watchdogs += msg.lines().filter(|l| *l == "WATCHDOG=1").count();
            got.push(msg);
        }
    }
    let all = got.join("\n");
    assert!(all.contains("READY=1"), "no READY=1 in {got:?}");
    assert!(
        all.lines()
            .any(|l| l.starts_with("STATUS=") && l.contains("services")),
        "no STATUS= in {got:?}"
    );
    assert!(
        watchdogs >= 2,
        "expected WATCHDOG=1 pings at half of WATCHDOG_USEC: {got:?}"
    );
    // READY comes once the listener is up: /health answers by then.
    assert!(http_get(d.port, "/health").is_some());
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut stopping = false;
    while Instant::now() < deadline && !stopping {
        if let Ok(n) = sock.recv(&mut buf) {
            stopping = String::from_utf8_lossy(&buf[..n])
                .lines()
                .any(|l| l == "STOPPING=1");
        }
    }
    let status = wait_for("upkeep to exit", Duration::from_secs(10), || {
        child.try_wait().ok().flatten()
    });
    assert!(stopping, "no STOPPING=1");
    assert!(status.success());
}
