//! The clone3 spawn path's signal state: a child that shares upkeep's
//! memory until its exec starts with nothing blocked or ignored, and the
//! spawning thread keeps its own mask. Needs root (cgroups). A file of its
//! own: `spawn_clone3.rs` counts the process's descriptors, which a test
//! running beside it in the same process would disturb.

mod proc_common;

use proc_common::*;
use upkeep_runtime::spawn::SpawnRequest;

#[tokio::test]
async fn the_child_gets_default_signals_and_the_spawning_thread_keeps_its_mask() {
    require_root();
    let g = CgroupGuard::new("clone3-sig");
    let (prefix, cg) = (&g.prefix, &g.cg);
    let reaper = reaper();
    // The spawning thread blocks SIGUSR1 and ignores SIGUSR2; around the
    // clone it blocks everything (so no handler of ours runs in a child that
    // shares our memory). The child must start with nothing blocked or
    // ignored, and the thread must get exactly its own mask back.
    let (pid, after) = std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: a valid out-parameter for this thread's mask.
            let mask = |set: *mut libc::sigset_t| unsafe {
                libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), set);
            };
            block_usr1_ignore_usr2();
            let env = std_env();
            let argv = vec!["sleep".to_string(), "30".to_string()];
            let mut req = SpawnRequest::new(&argv, &env);
            req.cgroup = Some(cg);
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
    default_sigusr2();
    assert_eq!(
        after,
        (true, false, false),
        "the spawning thread's mask after the spawn: (SIGUSR1, SIGTERM, SIGCHLD) blocked"
    );
    assert_eq!(status_field(pid, "SigBlk:"), "0000000000000000");
    assert_eq!(status_field(pid, "SigIgn:"), "0000000000000000");
    // It is the service itself (exec'd), in its cgroup.
    let cgroup = read(&std::path::PathBuf::from(format!("/proc/{pid}/cgroup")));
    assert!(
        cgroup.lines().any(|l| l == format!("0::/{prefix}/svc")),
        "{cgroup}"
    );
    kill(pid);
}
