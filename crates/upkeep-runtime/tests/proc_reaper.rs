//! The reaper with real processes: exit statuses, every fatal signal, orphans,
//! failed spawns, pidfd signalling, adoption of non-children.

mod proc_common;

use proc_common::*;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use upkeep_core::ExitStatus;
use upkeep_runtime::reaper::{pidfd_signal, process_start_time, process_stat, Reaper};
use upkeep_runtime::spawn::SpawnRequest;

fn cmd(script: &str) -> Command {
    let mut c = Command::new("/bin/sh");
    c.arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

#[tokio::test]
async fn start_is_idempotent_and_shared() {
    let a = reaper();
    let b = Reaper::start().unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    // The subreaper flag is set on the process (PR_GET_CHILD_SUBREAPER != 0).
    assert!(rustix::process::child_subreaper().unwrap().is_some());
}

#[tokio::test]
async fn exit_codes_are_exact() {
    let r = reaper();
    for code in [0, 1, 3, 42, 255] {
        let sp = r.spawn(&mut cmd(&format!("exit {code}"))).unwrap();
        assert_eq!(exit_of(sp).await, ExitStatus::Exited(code), "exit {code}");
    }
}

#[tokio::test]
async fn every_fatal_signal_is_reported_exactly() {
    let r = reaper();
    // Signals whose default action terminates the process.
    let fatal = [
        libc::SIGHUP,
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGILL,
        libc::SIGTRAP,
        libc::SIGABRT,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGKILL,
        libc::SIGUSR1,
        libc::SIGSEGV,
        libc::SIGUSR2,
        libc::SIGPIPE,
        libc::SIGALRM,
        libc::SIGTERM,
        libc::SIGSTKFLT,
        libc::SIGXCPU,
        libc::SIGXFSZ,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGSYS,
        libc::SIGRTMIN(),
        libc::SIGRTMIN() + 5,
        libc::SIGRTMAX(),
    ];
    for sig in fatal {
        // The shell signals itself (`kill -SEGV $$`); RLIMIT_CORE 0 so no core.
        let mut c = cmd(&format!("ulimit -c 0; kill -{sig} $$; exit 99"));
        let sp = r.spawn(&mut c).unwrap();
        assert_eq!(
            exit_of(sp).await,
            ExitStatus::Signaled {
                signal: sig,
                core: false
            },
            "signal {sig}"
        );
    }
}

#[tokio::test]
async fn core_dump_flag_is_reported() {
    let r = reaper();
    let dir = tempfile::tempdir().unwrap();
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap_or_default();
    assert!(
        !pattern.starts_with('|'),
        "core_pattern pipes to a program; this test expects plain core files"
    );
    let mut c = cmd("ulimit -c unlimited; kill -SEGV $$");
    c.current_dir(dir.path());
    let sp = r.spawn(&mut c).unwrap();
    assert_eq!(
        exit_of(sp).await,
        ExitStatus::Signaled {
            signal: libc::SIGSEGV,
            core: true
        }
    );
}

#[tokio::test]
async fn pidfd_signal_then_reaped_gives_false() {
    let r = reaper();
    let mut c = Command::new("sleep");
    c.arg("30");
    let sp = r.spawn(&mut c).unwrap();
    let _cleanup = Cleanup::pids(vec![sp.pid]);
    assert!(
        pidfd_signal(&sp.pidfd, 0).unwrap(),
        "alive: signal 0 succeeds"
    );
    assert!(pidfd_signal(&sp.pidfd, libc::SIGTERM).unwrap());
    let pidfd = sp.pidfd.try_clone().unwrap();
    assert_eq!(
        exit_of(sp).await,
        ExitStatus::Signaled {
            signal: libc::SIGTERM,
            core: false
        }
    );
    // Reaped: the pidfd refers to nothing any more (never a recycled pid).
    assert!(!pidfd_signal(&pidfd, libc::SIGKILL).unwrap());
    assert!(!pidfd_signal(&pidfd, 0).unwrap());
}

#[tokio::test]
async fn sigkill_through_pidfd() {
    let r = reaper();
    let mut c = Command::new("sleep");
    c.arg("30");
    let sp = r.spawn(&mut c).unwrap();
    let _cleanup = Cleanup::pids(vec![sp.pid]);
    assert!(pidfd_signal(&sp.pidfd, libc::SIGKILL).unwrap());
    assert_eq!(
        exit_of(sp).await,
        ExitStatus::Signaled {
            signal: libc::SIGKILL,
            core: false
        }
    );
}

#[tokio::test]
async fn orphaned_grandchildren_are_reaped() {
    let r = reaper();
    let dir = tempfile::tempdir().unwrap();
    let before = r.orphans_reaped();
    let mut grandchildren = Vec::new();
    for i in 0..20 {
        let out = dir.path().join(format!("gc{i}"));
        let file = std::fs::File::create(&out).unwrap();
        // The grandchild must outlive its shell to become an orphan: with a
        // short sleep, a loaded machine can let the shell reap it itself.
        let mut c = cmd("sleep 1 & echo $!; exit 0");
        c.stdout(file);
        let sp = r.spawn(&mut c).unwrap();
        assert_eq!(exit_of(sp).await, ExitStatus::Exited(0));
        let pid: u32 = read(&out).trim().parse().expect("grandchild pid");
        grandchildren.push(pid);
    }
    let _cleanup = Cleanup::pids(grandchildren.clone());
    // Each grandchild was re-parented to us (subreaper) and must disappear
    // from /proc entirely: reaped, not left as a zombie.
    wait_until("orphaned grandchildren reaped", || {
        grandchildren.iter().all(|&p| {
            process_stat(p)
                .map(|s| s.ppid != std::process::id())
                .unwrap_or(true)
        })
    })
    .await;
    assert!(
        r.orphans_reaped() >= before + 20,
        "orphans counted: {} -> {}",
        before,
        r.orphans_reaped()
    );
}

#[tokio::test]
async fn failed_spawns_return_errors_and_keep_the_reaper_working() {
    let r = reaper();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("not-executable");
    std::fs::write(&plain, "#!/bin/sh\necho hi\n").unwrap();
    let bad_interp = dir.path().join("bad-interp");
    std::fs::write(&bad_interp, "#!/no/such/interpreter\necho hi\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&bad_interp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    let env = std_env();

    for round in 0..30 {
        // Raw Command through the reaper (std's internal wait after a failed
        // exec must not race the reaper: no panic, an error).
        let e = r.spawn(&mut Command::new("/no/such/binary")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);

        let argv = vec!["/no/such/binary".to_string()];
        let e = SpawnRequest::new(&argv, &env).spawn(&r).unwrap_err();
        assert!(e.to_string().contains("\"/no/such/binary\""), "{e}");
        assert!(e.to_string().contains("does not exist"), "{e}");

        let argv = vec![plain.display().to_string()];
        let e = SpawnRequest::new(&argv, &env).spawn(&r).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("permission denied"), "{e}");
        assert!(e.to_string().contains("not-executable"), "{e}");

        let argv = vec![bad_interp.display().to_string()];
        let e = SpawnRequest::new(&argv, &env).spawn(&r).unwrap_err();
        assert!(e.to_string().contains("bad interpreter"), "{e}");
        assert!(e.to_string().contains("/no/such/interpreter"), "{e}");

        let argv = vec!["true".to_string()];
        let missing = dir.path().join("no-such-dir");
        let mut req = SpawnRequest::new(&argv, &env);
        req.working_dir = Some(&missing);
        let e = req.spawn(&r).unwrap_err();
        assert!(e.to_string().contains("working directory"), "{e}");
        assert!(e.to_string().contains("no-such-dir"), "{e}");

        let argv = vec!["no-such-program-anywhere".to_string()];
        let e = SpawnRequest::new(&argv, &env).spawn(&r).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        assert!(e.to_string().contains("no-such-program-anywhere"), "{e}");

        let empty: Vec<String> = Vec::new();
        let e = SpawnRequest::new(&empty, &env).spawn(&r).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);

        // A pre_exec failure is an error too.
        let mut c = Command::new("true");
        // SAFETY: returns an error without touching anything.
        unsafe {
            c.pre_exec(|| Err(std::io::Error::from_raw_os_error(libc::EPERM)));
        }
        assert!(r.spawn(&mut c).is_err());

        // ...and the reaper still works.
        let sp = r.spawn(&mut cmd(&format!("exit {}", round % 7))).unwrap();
        assert_eq!(exit_of(sp).await, ExitStatus::Exited(round % 7));
    }
    assert!(our_zombies_settle().await.is_empty());
}

/// Zombies of ours may exist for an instant between exit and reap.
async fn our_zombies_settle() -> Vec<u32> {
    for _ in 0..200 {
        let z = our_zombies();
        if z.is_empty() {
            return z;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    our_zombies()
}

#[tokio::test]
async fn watch_pid_of_a_non_child_resolves_unknown() {
    let r = reaper();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pid");
    // sh's child, not ours: only the pidfd tells us it exited.
    let mut c = cmd("sleep 0.3 & echo $! > \"$0\"; wait");
    c.arg(&out);
    let parent = r.spawn(&mut c).unwrap();
    let _cleanup = Cleanup::pids(vec![parent.pid]);
    wait_until("grandchild pid written", || read(&out).ends_with('\n')).await;
    let pid: u32 = read(&out).trim().parse().unwrap();
    assert_eq!(process_stat(pid).unwrap().ppid, parent.pid);
    let (pidfd, exit) = r.watch_pid(pid).unwrap();
    assert!(pidfd_signal(&pidfd, 0).unwrap());
    assert_eq!(deadline("adopted exit", exit).await, ExitStatus::Unknown);
    assert_eq!(exit_of(parent).await, ExitStatus::Exited(0));
}

#[tokio::test]
async fn watch_pid_of_a_reparented_orphan_gets_its_real_status() {
    let r = reaper();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pid");
    let mut c = cmd("sh -c 'sleep 1; exit 7' & echo $! > \"$0\"");
    c.arg(&out);
    let parent = r.spawn(&mut c).unwrap();
    assert_eq!(exit_of(parent).await, ExitStatus::Exited(0));
    let pid: u32 = read(&out).trim().parse().unwrap();
    let _cleanup = Cleanup::pids(vec![pid]);
    assert_eq!(
        process_stat(pid).unwrap().ppid,
        std::process::id(),
        "re-parented to us"
    );
    let (_pidfd, exit) = r.watch_pid(pid).unwrap();
    assert_eq!(deadline("orphan exit", exit).await, ExitStatus::Exited(7));
}

#[tokio::test]
async fn watch_pid_of_a_gone_process_is_not_found() {
    let r = reaper();
    let sp = r.spawn(&mut cmd("exit 0")).unwrap();
    let pid = sp.pid;
    exit_of(sp).await;
    let err = r.watch_pid(pid).map(|_| ()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
}

#[tokio::test]
async fn start_time_identifies_a_process() {
    let r = reaper();
    let me = process_start_time(std::process::id()).unwrap();
    assert!(me > 0);
    let mut c = Command::new("sleep");
    c.arg("30");
    let sp = r.spawn(&mut c).unwrap();
    let _cleanup = Cleanup::pids(vec![sp.pid]);
    let t = process_start_time(sp.pid).unwrap();
    assert!(t >= me, "child started after us: {t} vs {me}");
    assert_eq!(process_start_time(sp.pid).unwrap(), t, "stable");
    pidfd_signal(&sp.pidfd, libc::SIGKILL).unwrap();
    let pid = sp.pid;
    exit_of(sp).await;
    assert!(process_start_time(pid).is_err(), "gone after reaping");
}
