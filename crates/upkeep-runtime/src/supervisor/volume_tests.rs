//! hostPath volumes through the executor seam: the fake runs the real
//! volume preparation, so a volume that cannot be used reaches the actor as
//! a failed spawn (state `backoff`, the reason in the message), and is
//! retried with backoff until it can. No root, paused clock.

use super::actor::{Actor, Initial};
use super::*;
use crate::executor::fake::{Call, FakeWorld};
use upkeep_spec::{BackoffSpec, HostPathType, HostPathVolume};

fn spec(volumes: Vec<HostPathVolume>) -> ServiceSpec {
    let mut s = super::placeholder_spec();
    s.name = "etcd-server".to_string();
    s.argv = vec!["/usr/bin/etcd".into()];
    s.restart = upkeep_spec::RestartPolicy::Always;
    s.backoff = BackoffSpec {
        jitter: 0.0,
        ..BackoffSpec::default()
    };
    s.volumes = volumes;
    s.hash = upkeep_spec::hash::spec_hash(&s);
    s
}

use super::actor_tests::ctx;

fn status(ctx: &Ctx) -> ServiceStatus {
    ctx.shared.snapshot.read().unwrap().services["etcd-server"].clone()
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_volume_that_cannot_be_prepared_is_a_failed_start_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut v = HostPathVolume::at_own_path(data.clone(), HostPathType::Directory);
    v.mount_path = Some(PathBuf::from("/var/etcd"));
    let (world, exec) = FakeWorld::new();
    world.prepare_volumes(true);
    let ctx = ctx();
    let actor = Actor::new(spec(vec![v]), ctx.clone(), Box::new(exec));
    let (tx, rx) = mpsc::unbounded_channel::<Cmd>();
    let join = tokio::spawn(actor.run(Initial::Start, rx, None));
    settle().await;

    let spawns = || world.count(|c| matches!(c, Call::Spawn(..)));
    assert_eq!(spawns(), 1);
    assert!(world.live().is_empty(), "no process without its mounts");
    let st = status(&ctx);
    assert_eq!(st.state, "backoff");
    let shown = data.display().to_string();
    assert!(
        st.message.contains(&shown)
            && st.message.contains("/var/etcd")
            && st.message.contains("must be an existing directory"),
        "{}",
        st.message
    );
    assert!(st.next_start_in_ms.is_some());

    // Still missing at the retry: a second failure, still no process.
    let wait = |st: &ServiceStatus| Duration::from_millis(st.next_start_in_ms.unwrap() + 1);
    tokio::time::sleep(wait(&st)).await;
    settle().await;
    assert_eq!(spawns(), 2);
    assert!(world.live().is_empty());

    // The operator creates it: the next attempt starts the process.
    std::fs::create_dir(&data).unwrap();
    let st = status(&ctx);
    assert_eq!(st.state, "backoff");
    tokio::time::sleep(wait(&st)).await;
    settle().await;
    assert_eq!(spawns(), 3);
    assert_eq!(world.live().len(), 1);
    assert_eq!(world.last_binds(), 1);
    assert_eq!(status(&ctx).state, "running");
    drop(tx);
    join.abort();
}

#[tokio::test(start_paused = true)]
async fn own_path_writable_mounts_spawn_without_a_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let v = HostPathVolume::at_own_path(dir.path().to_path_buf(), HostPathType::Directory);
    let (world, exec) = FakeWorld::new();
    world.prepare_volumes(true);
    let ctx = ctx();
    let actor = Actor::new(spec(vec![v]), ctx.clone(), Box::new(exec));
    let (tx, rx) = mpsc::unbounded_channel::<Cmd>();
    let join = tokio::spawn(actor.run(Initial::Start, rx, None));
    settle().await;
    assert_eq!(world.live().len(), 1);
    assert_eq!(world.last_binds(), 0);
    assert_eq!(status(&ctx).state, "running");
    drop(tx);
    join.abort();
}
