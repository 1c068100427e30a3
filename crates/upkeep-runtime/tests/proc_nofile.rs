//! upkeep raises its soft open-files limit to the hard limit; everything it
//! starts gets the original soft limit back: services on both spawn paths
//! (clone3 into a cgroup, fork without one), with and without a uid drop,
//! and every command spawned through the reaper (exec probes, hooks).
//!
//! One test in its own binary: it changes this process's limit, which the
//! other tests of a binary would share.

mod proc_common;

use proc_common::*;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
use std::fs;
use std::process::Command;
use std::time::Duration;
use upkeep_core::probe::ProbeResult;
use upkeep_runtime::nofile::{raise_soft_limit, restore_target, Raise};
use upkeep_runtime::probe::{run_once, ExecContext};
use upkeep_runtime::spawn::SpawnRequest;
use upkeep_spec::ProbeHandler;

#[path = "../../../tests/support/limits.rs"]
mod limits;
use limits::nofile_of;

/// Waits until `pid` runs `sleep` (past its exec), then returns its limit.
async fn limit_after_exec(pid: u32) -> (u64, u64) {
    wait_until("the exec of sleep", || {
        fs::read_link(format!("/proc/{pid}/exe"))
            .map(|p| p.to_string_lossy().contains("sleep"))
            .unwrap_or(false)
    })
    .await;
    nofile_of(pid)
}

#[tokio::test]
async fn children_get_the_soft_limit_upkeep_started_with() {
    require_root();
    // Start as upkeep would under systemd's default: a soft limit below
    // the hard one.
    let hard = getrlimit(Resource::Nofile)
        .maximum
        .expect("a finite hard open-files limit");
    let original = 1024.min(hard / 2);
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(original),
            maximum: Some(hard),
        },
    )
    .unwrap();
    assert_eq!(
        raise_soft_limit(),
        Raise::Raised {
            from: original,
            to: hard
        }
    );
    assert_eq!(restore_target(), Some(original));
    assert_eq!(nofile_of(std::process::id()), (hard, hard));
    // A second call changes nothing and keeps the first original.
    assert_eq!(raise_soft_limit(), Raise::AlreadyAtHard(Some(hard)));
    assert_eq!(restore_target(), Some(original));

    let env = std_env();
    let argv: Vec<String> = vec!["sleep".into(), "30".into()];
    let nobody = 65534;

    // Fork path (no cgroup), as root and after a uid drop.
    for uid in [None, Some(nobody)] {
        let req = SpawnRequest {
            uid,
            ..SpawnRequest::new(&argv, &env)
        };
        let sp = req.spawn(&reaper()).unwrap();
        let _c = Cleanup::pids(vec![sp.pid]);
        assert_eq!(
            limit_after_exec(sp.pid).await,
            (original, hard),
            "fork path, uid {uid:?}"
        );
        kill(sp.pid);
        exit_of(sp).await;
    }

    // clone3 into the service's cgroup, as root and after a uid drop.
    let g = CgroupGuard::new("nofile");
    let cg = &g.cg;
    for uid in [None, Some(nobody)] {
        let req = SpawnRequest {
            uid,
            cgroup: Some(cg),
            ..SpawnRequest::new(&argv, &env)
        };
        let sp = req.spawn(&reaper()).unwrap();
        let _c = Cleanup::pids(vec![sp.pid]);
        assert!(cg.contains(sp.pid), "spawned into its cgroup");
        assert_eq!(
            limit_after_exec(sp.pid).await,
            (original, hard),
            "clone3 path, uid {uid:?}"
        );
        kill(sp.pid);
        exit_of(sp).await;
    }

    // Any command spawned through the reaper.
    let sp = reaper().spawn(Command::new("sleep").arg("30")).unwrap();
    let _c = Cleanup::pids(vec![sp.pid]);
    assert_eq!(limit_after_exec(sp.pid).await, (original, hard), "reaper");
    kill(sp.pid);
    exit_of(sp).await;

    // Exec probes and hooks (the same path), in the service's cgroup and
    // as another user: the command checks its own limits.
    let check = format!("test \"$(ulimit -Sn)\" = {original} && test \"$(ulimit -Hn)\" = {hard}");
    for (uid, cgroup) in [(None, None), (Some(nobody), Some(cg.clone()))] {
        let ctx = ExecContext {
            reaper: reaper(),
            env: env.clone(),
            working_dir: "/".into(),
            uid,
            gid: uid,
            cgroup,
            mount_ns: None,
        };
        let handler = ProbeHandler::Exec { argv: sh(&check) };
        let r = run_once(&handler, Duration::from_secs(10), &ctx).await;
        assert_eq!(r, ProbeResult::Success, "exec probe, uid {uid:?}");
    }

    // upkeep itself keeps the raised limit.
    assert_eq!(nofile_of(std::process::id()), (hard, hard));
}
