//! The state-directory lock with real open file descriptions and children.

mod proc_common;

use proc_common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use upkeep_runtime::lock::{LockError, StateLock, LOCK_FILE};

#[test]
fn second_holder_is_refused_with_the_owner_pid() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state/nested");
    let lock = StateLock::acquire(&dir).unwrap();
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(lock.path(), dir.join(LOCK_FILE));
    assert_eq!(read(lock.path()).trim(), std::process::id().to_string());

    // A second open file description conflicts even within one process.
    let err = StateLock::acquire(&dir).unwrap_err();
    match &err {
        LockError::Held { pid, dir: d } => {
            assert_eq!(*pid, Some(std::process::id()));
            assert_eq!(d, &dir);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "another upkeep (pid {}) is already running with state directory {}",
            std::process::id(),
            dir.display()
        )
    );
    // The refused attempt did not clobber the owner's pid.
    assert_eq!(read(lock.path()).trim(), std::process::id().to_string());

    drop(lock);
    let again = acquire_soon(&dir);
    drop(again);
}

/// flock locks belong to the open file description: a fork by a test
/// running in parallel briefly holds a copy of our (close-on-exec)
/// descriptor until its child execs. So retry briefly.
fn acquire_soon(dir: &std::path::Path) -> StateLock {
    let start = std::time::Instant::now();
    loop {
        match StateLock::acquire(dir) {
            Ok(l) => return l,
            Err(e) if start.elapsed() > DEADLINE => panic!("lock not released: {e}"),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
        }
    }
}

#[test]
fn another_process_is_refused_too() {
    let tmp = tempfile::tempdir().unwrap();
    let lock = StateLock::acquire(tmp.path()).unwrap();
    // util-linux flock(1) in another process: -n fails (exit 1) while held.
    let st = std::process::Command::new("flock")
        .arg("-n")
        .arg(lock.path())
        .arg("true")
        .status();
    // This binary runs no reaper, so waiting on a std Child is safe here.
    let st = st.expect("flock(1) is installed");
    assert_eq!(st.code(), Some(1));
    drop(lock);
    // Free again (see acquire_soon for why this may take a moment).
    drop(acquire_soon(tmp.path()));
    let st = std::process::Command::new("flock")
        .arg("-n")
        .arg(tmp.path().join(LOCK_FILE))
        .arg("true")
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0));
}

#[test]
fn unusable_state_dir_is_an_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    fs::write(&file, "").unwrap();
    let err = StateLock::acquire(&file.join("sub")).unwrap_err();
    assert!(matches!(err, LockError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("file/sub"), "{err}");
}

#[test]
fn deleting_the_lock_file_does_not_free_the_state_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let lock = StateLock::acquire(tmp.path()).unwrap();
    assert!(lock.socket_name().starts_with("upkeep-state-"));
    fs::remove_file(lock.path()).unwrap();
    let err = StateLock::acquire(tmp.path()).unwrap_err();
    match &err {
        // The pid comes from the socket (SO_PEERCRED): the file is gone.
        LockError::Held { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        !lock.path().exists(),
        "the refused attempt recreated the file"
    );
    // The same directory through another path (a symlink) is the same lock.
    let link = tmp.path().with_extension("link");
    std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
    let err = StateLock::acquire(&link).unwrap_err();
    fs::remove_file(&link).unwrap();
    assert!(matches!(err, LockError::Held { .. }), "{err:?}");
    drop(lock);
    drop(acquire_soon(tmp.path()));
}

#[test]
fn the_lock_left_to_a_killed_upkeeps_child_is_waited_for() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join(LOCK_FILE);
    // The pid of an upkeep that is gone: a child we started and reaped.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    fs::write(&path, format!("{gone_pid}\n")).unwrap();
    // What it left behind, as a child that had not exec'd when upkeep was
    // SIGKILLed: the lock, for a moment (util-linux flock(1), same lock).
    let mut holder = std::process::Command::new("flock")
        .arg(&path)
        .args(["sleep", "0.5"])
        .spawn()
        .expect("flock(1) is installed");
    let start = std::time::Instant::now();
    loop {
        let st = std::process::Command::new("flock")
            .arg("-n")
            .arg(&path)
            .arg("true")
            .status()
            .unwrap();
        if st.code() == Some(1) {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "flock(1) never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The recorded holder is dead: acquire waits for the lock instead of
    // refusing ("another upkeep (pid N) is already running" about a dead pid).
    let lock = StateLock::acquire(tmp.path()).expect("waited for the leftover holder");
    assert_eq!(read(lock.path()).trim(), std::process::id().to_string());
    holder.wait().unwrap();
}

#[test]
fn the_socket_left_to_a_killed_upkeeps_child_is_waited_for() {
    let tmp = tempfile::tempdir().unwrap();
    let name = {
        let lock = acquire_soon(tmp.path());
        lock.socket_name().to_string()
    };
    // What a SIGKILLed upkeep leaves behind when one of its children had not
    // exec'd yet: the listening socket, held by the child while the process
    // that called listen() (what SO_PEERCRED names) is gone. Python binds and
    // listens, forks a child that keeps the socket for a moment, and exits.
    let ready = tmp.path().join("ready");
    let script = r#"
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(b"\0" + sys.argv[1].encode())
s.listen(8)
if os.fork() == 0:
    open(sys.argv[2], "w").close()
    time.sleep(0.7)
    os._exit(0)
os._exit(0)
"#;
    let mut listener = std::process::Command::new("python3")
        .args(["-c", script, &name])
        .arg(&ready)
        .spawn()
        .expect("python3 is installed");
    // This binary runs no reaper: waiting on a std Child is safe here.
    let gone_pid = listener.id();
    assert!(listener.wait().unwrap().success());
    // As upkeep leaves it: the lock file names the dead upkeep.
    fs::write(tmp.path().join(LOCK_FILE), format!("{gone_pid}\n")).unwrap();
    let start = std::time::Instant::now();
    while !ready.exists() {
        assert!(start.elapsed() < DEADLINE, "the child never started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // The socket's owner is dead: acquire waits instead of refusing
    // ("another upkeep (pid N) is already running" about a dead pid).
    let lock = StateLock::acquire(tmp.path()).expect("waited for the leftover holder");
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(300),
        "acquired while the child still held the socket? {:?}",
        start.elapsed()
    );
    assert_eq!(lock.socket_name(), name);
}
