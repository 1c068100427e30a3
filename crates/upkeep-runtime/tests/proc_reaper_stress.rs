//! 1000 spawn+exit cycles through the reaper, with the reaper task on the
//! same `current_thread` runtime as the spawner (like the daemon): no zombie
//! and no fd left behind. Alone in its binary so the fd count is exact.

mod proc_common;

use proc_common::{deadline, fd_count, our_zombies};
use std::process::{Command, Stdio};
use std::time::Duration;
use upkeep_core::ExitStatus;
use upkeep_runtime::reaper::Reaper;

fn true_cmd() -> Command {
    let mut c = Command::new("/bin/true");
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

#[tokio::test(flavor = "current_thread")]
async fn thousand_cycles_leave_no_zombie_and_no_fd() {
    let r = Reaper::start().unwrap();
    let fds_before = fd_count();
    let reaped_before = r.total_reaped();

    // 500 one at a time.
    for i in 0..500 {
        let sp = r.spawn(&mut true_cmd()).unwrap();
        let st = deadline("exit", sp.exit).await.expect("status routed");
        assert_eq!(st, ExitStatus::Exited(0), "cycle {i}");
    }
    // 500 in bursts of 100 in flight at once.
    for _ in 0..5 {
        let mut waiting = Vec::new();
        for _ in 0..100 {
            waiting.push(r.spawn(&mut true_cmd()).unwrap());
        }
        for sp in waiting {
            let st = deadline("exit", sp.exit).await.expect("status routed");
            assert_eq!(st, ExitStatus::Exited(0));
        }
    }

    assert_eq!(r.pending(), 0, "no registered pid left");
    assert!(r.total_reaped() >= reaped_before + 1000);
    // Everything is reaped; allow the last SIGCHLD a moment.
    let mut zombies = our_zombies();
    for _ in 0..100 {
        if zombies.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        zombies = our_zombies();
    }
    assert!(zombies.is_empty(), "zombies left: {zombies:?}");
    assert_eq!(fd_count(), fds_before, "fd leak");
}
