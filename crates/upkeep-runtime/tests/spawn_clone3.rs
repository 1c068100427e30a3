//! The clone3(CLONE_INTO_CGROUP) spawn path: a service is born in its cgroup,
//! exec failures come back as clear errors (no zombie, no leaked fd), and
//! stdout goes where it is told. Needs root (cgroups).

mod proc_common;

use proc_common::*;
use std::os::unix::fs::PermissionsExt;
use upkeep_core::ExitStatus;
use upkeep_runtime::cgroup::{Cgroup, CgroupRoot};
use upkeep_runtime::spawn::{Output, SpawnRequest};

struct Guard(CgroupRoot, Cgroup);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.1.kill();
        for _ in 0..200 {
            if !self.1.populated() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.1.remove();
        let _ = self.0.remove();
    }
}

#[tokio::test]
async fn born_in_the_cgroup_and_exec_errors_are_clear() {
    require_root();
    let prefix = format!("upkeep-test-clone3-{}.slice", std::process::id());
    let root = CgroupRoot::detect(&prefix).expect("cgroup2 is mounted here");
    let cg = Cgroup::create(&root, "svc").unwrap();
    let _g = Guard(root.clone(), cg.clone());
    let env = std_env();
    let dir = tempfile::tempdir().unwrap();
    let reaper = reaper();

    // The child reads its own cgroup as its first act: it is already inside.
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).unwrap();
    let argv = vec!["cat".to_string(), "/proc/self/cgroup".to_string()];
    let mut req = SpawnRequest::new(&argv, &env);
    req.cgroup = Some(&cg);
    req.stdout = Output::Fd(std::os::fd::AsFd::as_fd(&out));
    let sp = req.spawn(&reaper).unwrap();
    assert_eq!(exit_of(sp).await, ExitStatus::Exited(0));
    let text = read(&out_path);
    assert!(
        text.lines().any(|l| l == format!("0::/{prefix}/svc")),
        "{text}"
    );

    let fds = fd_count();
    // Not executable: EACCES from execve in the child, reported through the pipe.
    let noexec = dir.path().join("noexec");
    std::fs::write(&noexec, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o644)).unwrap();
    let argv = vec![noexec.display().to_string()];
    let mut req = SpawnRequest::new(&argv, &env);
    req.cgroup = Some(&cg);
    let err = match req.spawn(&reaper) {
        Ok(_) => panic!("spawn must fail"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("permission denied"), "{err}");
    // Bad interpreter: ENOENT from execve although the file exists.
    let badint = dir.path().join("badint");
    std::fs::write(&badint, "#!/nonexistent/interp\n").unwrap();
    std::fs::set_permissions(&badint, std::fs::Permissions::from_mode(0o755)).unwrap();
    let argv = vec![badint.display().to_string()];
    let mut req = SpawnRequest::new(&argv, &env);
    req.cgroup = Some(&cg);
    let err = match req.spawn(&reaper) {
        Ok(_) => panic!("spawn must fail"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("interpreter"), "{err}");
    // A missing working directory.
    let argv = vec!["true".to_string()];
    let missing = dir.path().join("missing");
    let mut req = SpawnRequest::new(&argv, &env);
    req.cgroup = Some(&cg);
    req.working_dir = Some(&missing);
    let err = match req.spawn(&reaper) {
        Ok(_) => panic!("spawn must fail"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("working directory"), "{err}");
    // The failed children were reaped and nothing leaked.
    wait_until("failed children reaped", || our_zombies().is_empty()).await;
    assert_eq!(fd_count(), fds, "fd leak on failed spawns");
    wait_until("cgroup empty", || !cg.populated()).await;
}

#[tokio::test]
async fn the_child_gets_default_signals_and_the_spawning_thread_keeps_its_mask() {
    require_root();
    let prefix = format!("upkeep-test-clone3-sig-{}.slice", std::process::id());
    let root = CgroupRoot::detect(&prefix).expect("cgroup2 is mounted here");
    let cg = Cgroup::create(&root, "svc").unwrap();
    let _g = Guard(root.clone(), cg.clone());
    let reaper = reaper();
    // The spawning thread blocks SIGUSR1 and ignores SIGUSR2; around the
    // clone it blocks everything (so no handler of ours runs in a child that
    // shares our memory). The child must start with nothing blocked or
    // ignored, and the thread must get exactly its own mask back.
    let (pid, after) = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: this thread's mask and the SIGUSR2 disposition, which
            // nothing else in this test binary uses.
            let mask = |set: *mut libc::sigset_t| unsafe {
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), set);
            };
            // SAFETY: as above.
            unsafe {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, libc::SIGUSR1);
                libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
                libc::signal(libc::SIGUSR2, libc::SIG_IGN);
            }
            let env = std_env();
            let argv = vec!["sleep".to_string(), "30".to_string()];
            let mut req = SpawnRequest::new(&argv, &env);
            req.cgroup = Some(&cg);
            let sp = req.spawn(&reaper).unwrap();
            std::mem::forget(sp.pidfd);
            // SAFETY: a zeroed sigset_t is a valid out-parameter.
            let mut now: libc::sigset_t = unsafe { std::mem::zeroed() };
            mask(&mut now);
            // SAFETY: sigismember on an initialised set.
            let member = |sig| unsafe { libc::sigismember(&now, sig) == 1 };
            (
                sp.pid,
                (
                    member(libc::SIGUSR1),
                    member(libc::SIGTERM),
                    member(libc::SIGCHLD),
                ),
            )
        })
        .join()
        .unwrap()
    });
    // SAFETY: restore the default disposition.
    unsafe { libc::signal(libc::SIGUSR2, libc::SIG_DFL) };
    assert_eq!(
        after,
        (true, false, false),
        "the spawning thread's mask after the spawn: (SIGUSR1, SIGTERM, SIGCHLD) blocked"
    );
    let status = read(&std::path::PathBuf::from(format!("/proc/{pid}/status")));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap()
    };
    assert_eq!(field("SigBlk:"), "0000000000000000", "{status}");
    assert_eq!(field("SigIgn:"), "0000000000000000", "{status}");
    // It is the service itself (exec'd), in its cgroup.
    let cgroup = read(&std::path::PathBuf::from(format!("/proc/{pid}/cgroup")));
    assert!(
        cgroup.lines().any(|l| l == format!("0::/{prefix}/svc")),
        "{cgroup}"
    );
    kill(pid);
}
