//! What upkeep says when something is wrong, each said once and with what to
//! do (issue 14, "small things an operator trips on").

mod common;

use common::*;
use std::process::{Command, Stdio};

#[test]
fn a_client_that_cannot_find_the_daemon_says_how_to_point_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin())
        .args(["restart", "x", "--state-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("pass the daemon's --config or --state-dir"),
        "{err}"
    );
}

#[test]
fn a_port_in_use_is_reported_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let d = Daemon::prepare("", &[]);
    let out = Command::new(bin())
        .args(["run", "--config"])
        .arg(&d.config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    let needle = format!("127.0.0.1:{port}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains(&needle)).collect();
    assert_eq!(
        lines.len(),
        1,
        "the port error is not said exactly once:\n{err}"
    );
}

#[test]
fn check_reports_a_cycle_and_an_unknown_key_together() {
    let d = Daemon::prepare(
        "[services.a]\ncommand = [\"/bin/true\"]\nafter = [\"b\"]\nbogus = 1\n\n[services.b]\ncommand = [\"/bin/true\"]\nafter = [\"a\"]\n",
        &[],
    );
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("services.a.bogus: unknown key"), "{err}");
    assert!(err.contains("dependency cycle: a -> b -> a"), "{err}");
}

#[test]
fn render_text_prints_config_words() {
    let d = Daemon::prepare(
        "[services.a]\ncommand = [\"/bin/true\"]\nrestart = \"on-failure\"\n",
        &[],
    );
    let out = Command::new(bin())
        .args(["render", "a", "--config"])
        .arg(&d.config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("restart:      on-failure"), "{text}");
    assert!(text.contains("log:          file"), "{text}");
    assert!(
        !text.contains("OnFailure") && !text.contains("File"),
        "{text}"
    );
}
