//! One upkeep per state directory, even when someone deletes the lock file
//! (defect 11: two upkeeps adopted the same services and killed each
//! other's processes).

mod common;

use common::*;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs a second `upkeep run` on `d`'s config (same state dir) with its own
/// HTTP port; returns its exit code and stderr, or kills it (by pid) and fails
/// if it is still running at the deadline.
fn second_upkeep(d: &Daemon) -> (Option<i32>, String) {
    let stderr_path = d.dir.path().join("second.stderr");
    let mut child = Command::new(bin())
        .args(["run", "--config"])
        .arg(&d.config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&stderr_path).unwrap()))
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (st.code(), std::fs::read_to_string(&stderr_path).unwrap());
        }
        if Instant::now() > deadline {
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
            let _ = child.wait();
            panic!(
                "the second upkeep was still running after 20s (two upkeeps on one state dir):\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_second_upkeep_refuses_even_after_the_lock_file_is_deleted() {
    require_root();
    let mut d = Daemon::start("", &[]);
    let first = d.pid();
    let lock = d.state.join("upkeep.lock");
    assert!(lock.is_file(), "no lock file at {}", lock.display());
    std::fs::remove_file(&lock).unwrap();

    let (code, stderr) = second_upkeep(&d);
    assert!(
        code.is_some_and(|c| c != 0),
        "second upkeep exit {code:?}:\n{stderr}"
    );
    let want = format!(
        "another upkeep (pid {first}) is already running with state directory {}",
        d.state.display()
    );
    assert!(stderr.contains(&want), "want {want:?} in:\n{stderr}");
    assert_eq!(
        stderr.matches(&want).count(),
        1,
        "said more than once:\n{stderr}"
    );

    // The first keeps running and serving.
    assert!(
        d.child.as_mut().unwrap().try_wait().unwrap().is_none(),
        "the first upkeep exited:\n{}",
        d.stderr()
    );
    assert!(pid_alive(first));
    let (code, _) = d.health();
    assert!(code == 200 || code == 503, "/health answered {code}");
    // The refused attempt did not take the lock file either.
    assert!(!lock.exists(), "the second upkeep recreated the lock file");
}

#[test]
fn a_second_upkeep_refuses_with_the_lock_file_in_place() {
    require_root();
    let mut d = Daemon::start("", &[]);
    let first = d.pid();
    let (code, stderr) = second_upkeep(&d);
    assert!(
        code.is_some_and(|c| c != 0),
        "second upkeep exit {code:?}:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("another upkeep (pid {first})")),
        "{stderr}"
    );
    assert!(d.child.as_mut().unwrap().try_wait().unwrap().is_none());
    // After the first exits, a new one starts on the same state dir.
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(20)), Some(0));
    d.spawn();
    assert!(pid_alive(d.pid()));
}
