//! The lock is not inherited by services: a service that outlives upkeep must
//! not keep the next upkeep out. (Own binary: it runs the reaper, which must
//! not share a process with tests that wait on std children.)

mod proc_common;

use proc_common::*;
use upkeep_runtime::lock::StateLock;
use upkeep_runtime::reaper::pidfd_signal;
use upkeep_runtime::spawn::SpawnRequest;

#[tokio::test]
async fn services_do_not_inherit_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let lock = StateLock::acquire(tmp.path()).unwrap();
    let env = std_env();
    let argv = vec!["sleep".to_string(), "30".to_string()];
    let sp = SpawnRequest::new(&argv, &env).spawn(&reaper()).unwrap();
    let _c = Cleanup::pids(vec![sp.pid]);
    drop(lock);
    // The service still runs, yet the lock is free.
    assert!(pidfd_signal(&sp.pidfd, 0).unwrap());
    let again = StateLock::acquire(tmp.path()).unwrap();
    drop(again);
    kill(sp.pid);
    exit_of(sp).await;
}
