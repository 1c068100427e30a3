//! The actor on tokio's paused clock against the recording fake executor:
//! no root, no forks, deterministic time.

use super::actor::{Actor, Initial};
use super::*;
use crate::executor::fake::{Call, FakeWorld};
use upkeep_core::machine::Target;
use upkeep_spec::{BackoffSpec, KillMode};

const SIGTERM: i32 = 15;

fn spec(name: &str) -> ServiceSpec {
    let mut s = super::placeholder_spec();
    s.name = name.to_string();
    s.argv = vec!["/bin/daemon".into(), "--v1".into()];
    s.restart = upkeep_spec::RestartPolicy::Always;
    s.stop_grace = Duration::from_secs(3);
    s.backoff = BackoffSpec {
        jitter: 0.0,
        ..BackoffSpec::default()
    };
    s.hash = upkeep_spec::hash::spec_hash(&s);
    s
}

/// A context for actors under test (no state directory behind it).
pub(super) fn ctx() -> Arc<Ctx> {
    let (ready_tx, _) = watch::channel(0u64);
    Arc::new(Ctx {
        shared: Arc::new(Shared::default()),
        ready_tx,
        records: Mutex::new(BTreeMap::new()),
        save: tokio::sync::Notify::new(),
        dirty: std::sync::atomic::AtomicBool::new(false),
        state_dir: PathBuf::from("/nonexistent"),
        holds: Mutex::new(Default::default()),
        write_lock: Mutex::new(()),
        rollout: None,
    })
}

struct Harness {
    world: FakeWorld,
    tx: mpsc::UnboundedSender<Cmd>,
    ctx: Arc<Ctx>,
    join: JoinHandle<()>,
}

impl Harness {
    fn start(spec: ServiceSpec) -> Harness {
        Self::start_with(spec, Initial::Start)
    }

    fn start_with(spec: ServiceSpec, initial: Initial) -> Harness {
        let (world, exec) = FakeWorld::new();
        let ctx = ctx();
        let actor = Actor::new(spec, ctx.clone(), Box::new(exec));
        let (tx, rx) = mpsc::unbounded_channel();
        let join = tokio::spawn(actor.run(initial, rx, None));
        Harness {
            world,
            tx,
            ctx,
            join,
        }
    }

    fn status(&self, name: &str) -> Option<ServiceStatus> {
        self.ctx
            .shared
            .snapshot
            .read()
            .unwrap()
            .services
            .get(name)
            .cloned()
    }

    fn send(&self, cmd: Cmd) {
        self.tx.send(cmd).unwrap();
    }

    fn spawns(&self) -> usize {
        self.world.count(|c| matches!(c, Call::Spawn(..)))
    }

    fn signals(&self, gen: u64) -> usize {
        self.world
            .count(|c| matches!(c, Call::Signal(g, _, _) if *g == gen))
    }
}

/// Lets the actor run until it waits for time or input.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

async fn advance(d: Duration) {
    tokio::time::sleep(d).await;
    settle().await;
}

fn exited(code: i32) -> ExitStatus {
    ExitStatus::Exited(code)
}

#[tokio::test(start_paused = true)]
async fn first_start_spawns_generation_one_and_probes_it() {
    let h = Harness::start(spec("a"));
    settle().await;
    let calls = h.world.calls();
    assert_eq!(
        calls[0],
        Call::Spawn(1, vec!["/bin/daemon".into(), "--v1".into()])
    );
    assert!(matches!(calls[1], Call::StartProbes(1, _)));
    assert_eq!(h.world.live(), vec![1]);
    assert_eq!(h.status("a").unwrap().state, "running");
}

/// Defect 2: exactly one stop signal per stop, whatever arrives meanwhile.
#[tokio::test(start_paused = true)]
async fn one_stop_signal_per_stop_even_with_repeated_requests() {
    let h = Harness::start(spec("a"));
    settle().await;
    h.world.ignore_signal(SIGTERM);
    h.send(Cmd::Event(Event::Hold));
    settle().await;
    // Everything an operator and the reconcile loop can throw at a stop.
    h.send(Cmd::Event(Event::Hold));
    h.send(Cmd::Event(Event::Stop));
    h.send(Cmd::Event(Event::Restart));
    h.send(Cmd::Event(Event::Hold));
    advance(Duration::from_millis(500)).await;
    assert_eq!(h.signals(1), 1, "{:?}", h.world.calls());
    assert_eq!(
        h.world
            .calls()
            .iter()
            .find(|c| matches!(c, Call::Signal(..))),
        Some(&Call::Signal(1, Target::Group, SIGTERM))
    );
    // SIGKILL exactly at the end of the 3 s grace, not before.
    advance(Duration::from_millis(2400)).await;
    assert_eq!(h.world.count(|c| matches!(c, Call::Kill(..))), 0);
    advance(Duration::from_millis(200)).await;
    assert_eq!(
        h.world.count(|c| matches!(c, Call::Kill(1, Target::Group))),
        1
    );
    settle().await;
    // Held: the operator hold is kept (no new generation).
    assert_eq!(h.spawns(), 1);
    assert_eq!(h.status("a").unwrap().state, "stopped");
}

/// Defect 5: a probe report about the previous generation never acts on
/// the new one.
#[tokio::test(start_paused = true)]
async fn stale_probe_reports_are_dropped() {
    let mut s = spec("a");
    s.backoff.initial = Duration::ZERO;
    let h = Harness::start(s);
    settle().await;
    assert!(h.world.exit(1, exited(1)));
    settle().await;
    // Restarted at once (first failure, zero delay): generation 2 runs.
    assert_eq!(h.world.live(), vec![2]);
    let stale = ProbeReport {
        kind: ProbeKind::Liveness,
        result: ProbeResult::Failure("HTTP 500".into()),
        duration: Duration::from_millis(1),
        flip: Some(false),
    };
    assert!(h.world.probe(1, stale.clone()));
    settle().await;
    assert_eq!(h.signals(2), 0, "a stale liveness failure stopped gen 2");
    assert_eq!(h.status("a").unwrap().state, "running");
    // The same report about the live generation does stop it.
    assert!(h.world.probe(2, stale));
    settle().await;
    assert_eq!(h.signals(2), 1);
}

/// Defect 6: never two generations; a group that cannot be emptied keeps
/// the service in `stopping`, says so, and is retried.
#[tokio::test(start_paused = true)]
async fn no_new_generation_while_the_old_one_is_not_empty() {
    let mut s = spec("a");
    s.backoff.initial = Duration::ZERO;
    let h = Harness::start(s);
    settle().await;
    h.world.hang_groups(true);
    assert!(h.world.exit(1, exited(1)));
    settle().await;
    for _ in 0..30 {
        advance(Duration::from_secs(1)).await;
    }
    assert_eq!(
        h.spawns(),
        1,
        "a second generation started: {:?}",
        h.world.calls()
    );
    let st = h.status("a").unwrap();
    assert_eq!(st.state, "stopping");
    assert!(st.message.contains("still present"), "{}", st.message);
    assert!(
        h.world.count(|c| matches!(c, Call::KillGroup(1))) >= 25,
        "the kill is retried"
    );
    // Once it empties, the restart goes on.
    h.world.hang_groups(false);
    advance(Duration::from_millis(10)).await;
    assert_eq!(h.spawns(), 2);
    assert_eq!(h.world.live(), vec![2]);
    assert!(!h.status("a").unwrap().message.contains("still present"));
}

/// `kill_mode = "process"`: only the main process is signalled and killed,
/// nothing waits for (or kills) what it left behind.
#[tokio::test(start_paused = true)]
async fn kill_mode_process_touches_only_the_main_process() {
    let mut s = spec("containerd");
    s.kill_mode = KillMode::Process;
    s.backoff.initial = Duration::ZERO;
    let h = Harness::start(s);
    settle().await;
    assert!(h.world.exit(1, exited(1)));
    settle().await;
    assert_eq!(h.world.count(|c| matches!(c, Call::KillGroup(_))), 0);
    assert_eq!(h.world.live(), vec![2]);
    h.world.ignore_signal(SIGTERM);
    h.send(Cmd::Event(Event::Restart));
    settle().await;
    assert!(h
        .world
        .calls()
        .contains(&Call::Signal(2, Target::Main, SIGTERM)));
    advance(Duration::from_secs(3)).await;
    assert!(h.world.calls().contains(&Call::Kill(2, Target::Main)));
    assert_eq!(h.world.count(|c| matches!(c, Call::KillGroup(_))), 0);
    assert_eq!(h.world.live(), vec![3]);
}

/// `kill_mode = "mixed"`: the stop signal to the main process, SIGKILL to
/// the rest once it is gone.
#[tokio::test(start_paused = true)]
async fn kill_mode_mixed_signals_main_then_kills_the_group() {
    let mut s = spec("m");
    s.kill_mode = KillMode::Mixed;
    let h = Harness::start(s);
    settle().await;
    h.send(Cmd::Event(Event::Restart));
    settle().await;
    let calls = h.world.calls();
    let sig = calls
        .iter()
        .position(|c| *c == Call::Signal(1, Target::Main, SIGTERM))
        .expect("stop signal to main");
    let kg = calls
        .iter()
        .position(|c| *c == Call::KillGroup(1))
        .expect("group killed after main exit");
    let sp = calls
        .iter()
        .position(|c| matches!(c, Call::Spawn(2, _)))
        .expect("gen 2");
    assert!(sig < kg && kg < sp, "{calls:?}");
}

/// A policy change (backoff, probes, grace) applies live: no restart. A
/// change of what is executed replaces the process: stop, then start.
#[tokio::test(start_paused = true)]
async fn policy_changes_apply_live_and_exec_changes_replace() {
    let s = spec("a");
    let h = Harness::start(s.clone());
    settle().await;
    let mut policy_only = s.clone();
    policy_only.backoff.max = Duration::from_secs(5);
    policy_only.stop_grace = Duration::from_secs(7);
    policy_only.hash = upkeep_spec::hash::spec_hash(&policy_only);
    h.send(Cmd::Update(Box::new(policy_only.clone())));
    settle().await;
    assert_eq!(h.signals(1), 0, "{:?}", h.world.calls());
    assert_eq!(h.spawns(), 1);
    let mut new_argv = policy_only;
    new_argv.argv.push("--v2".into());
    new_argv.hash = upkeep_spec::hash::spec_hash(&new_argv);
    h.send(Cmd::Update(Box::new(new_argv)));
    settle().await;
    assert_eq!(h.signals(1), 1);
    assert_eq!(
        h.world.calls().last(),
        Some(&Call::StartProbes(
            2,
            crate::executor::ProbeStart::default()
        ))
    );
    assert!(h.world.calls().contains(&Call::Spawn(
        2,
        vec!["/bin/daemon".into(), "--v1".into(), "--v2".into()]
    )));
}

/// A held service stays down whatever the reconcile loop sends, and an
/// operator start brings it back.
#[tokio::test(start_paused = true)]
async fn hold_survives_updates_and_restarts_until_released() {
    let s = spec("etcd");
    let h = Harness::start(s.clone());
    settle().await;
    h.send(Cmd::Event(Event::Hold));
    settle().await;
    assert_eq!(h.status("etcd").unwrap().state, "stopped");
    let mut changed = s;
    changed.argv.push("--new".into());
    changed.hash = upkeep_spec::hash::spec_hash(&changed);
    h.send(Cmd::Update(Box::new(changed)));
    h.send(Cmd::Event(Event::Restart));
    h.send(Cmd::Event(Event::Start));
    advance(Duration::from_secs(60)).await;
    assert_eq!(h.spawns(), 1);
    h.send(Cmd::Event(Event::Release));
    settle().await;
    assert_eq!(h.spawns(), 2);
    assert_eq!(h.status("etcd").unwrap().state, "running");
}

/// The backoff countdown is a real countdown (issue: it read 0).
#[tokio::test(start_paused = true)]
async fn backoff_deadline_is_in_the_future() {
    let mut s = spec("a");
    s.backoff.initial = Duration::from_secs(4);
    let h = Harness::start(s);
    settle().await;
    assert!(h.world.exit(1, exited(1))); // failure 1: immediate
    settle().await;
    assert!(h.world.exit(2, exited(1))); // failure 2: 4 s
    settle().await;
    let st = h.status("a").unwrap();
    assert_eq!(st.state, "backoff");
    let left = st.next_start_in_ms.expect("a countdown while in backoff");
    assert!((3900..=4000).contains(&left), "{left}");
    advance(Duration::from_secs(4)).await;
    assert_eq!(h.spawns(), 3);
}

/// Shutdown: the actor stops its process, waits for the group, and ends.
#[tokio::test(start_paused = true)]
async fn shutdown_stops_and_ends_the_actor() {
    let h = Harness::start(spec("a"));
    settle().await;
    let (tx, rx) = oneshot::channel();
    h.send(Cmd::Shutdown(tx));
    settle().await;
    rx.await.unwrap();
    settle().await;
    assert!(h.join.is_finished());
    assert!(h.world.calls().contains(&Call::Finish));
    assert!(h.status("a").is_none());
    assert!(h.world.live().is_empty());
}

/// Adoption: the record's process is watched, not restarted, when it runs
/// the current spec; replaced when what it executes changed.
#[tokio::test(start_paused = true)]
async fn adoption_keeps_a_current_process_and_replaces_a_stale_one() {
    let s = spec("a");
    let rec = ServiceRecord {
        name: "a".into(),
        pid: 4242,
        start_time: 1,
        spec_hash: s.hash.clone(),
        exec_hash: upkeep_spec::hash::exec_hash(&s),
        pgid: 4242,
        started_at_unix_ms: unix_ms(),
        restarts: 3,
        ready: true,
        started: true,
        last_exit: None,
        cgroup: None,
    };
    let h = Harness::start_with(s.clone(), Initial::Adopt(rec.clone()));
    settle().await;
    assert_eq!(h.world.calls()[0], Call::Adopt(1, 4242));
    assert_eq!(h.spawns(), 0);
    assert_eq!(h.status("a").unwrap().restarts, 3);

    let mut stale = rec;
    stale.exec_hash = "0".repeat(32);
    let h2 = Harness::start_with(s, Initial::Adopt(stale));
    settle().await;
    assert_eq!(h2.signals(1), 1);
    assert_eq!(h2.spawns(), 1);
}
