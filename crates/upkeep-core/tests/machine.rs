//! The supervision state machine (`upkeep_core::machine`), driven through its
//! public API with injected time (no processes, no sleeps):
//!
//! - scenario tests: crash loops and the backoff reset, restart policies,
//!   probe kills, stale reports of another generation, the stop sequence
//!   (preStop, one stop signal, SIGKILL at the deadline), kill modes,
//!   draining, the operator hold, the dependency wait, adoption, policy
//!   changes and the "killed at birth" alarm;
//! - the transition table of `docs/architecture.md`, generated from `step`
//!   and compared with the document (`UPKEEP_BLESS=1` rewrites it);
//! - property tests: random event sequences, and a simulated executor that
//!   answers every action faithfully while the operator, the probes and the
//!   processes act at random.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use upkeep_core::machine::{
    step, Action, Adopted, AfterStop, Event, Gen, Phase, Planned, Policy, ProbeKill, ServiceState,
    StopStage, Target, DRAIN_RETRY, DRAIN_WARN_AFTER, KILLED_AT_BIRTH, SPAWN_FAILURE_MIN_DELAY,
};
use upkeep_core::ExitStatus;
use upkeep_spec::{BackoffSpec, KillMode, RestartPolicy};

const SIGTERM: i32 = 15;
const KILLED: ExitStatus = ExitStatus::Signaled {
    signal: 9,
    core: false,
};
const TERMINATED: ExitStatus = ExitStatus::Signaled {
    signal: 15,
    core: false,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// The default policy (Always, control-group, 30 s grace, no preStop) with
/// the default backoff (1 s, x2, 60 s cap, 10 min reset) without jitter.
fn policy() -> Policy {
    Policy {
        backoff: BackoffSpec {
            jitter: 0.0,
            ..BackoffSpec::default()
        },
        ..Policy::default()
    }
}

fn with_restart(restart: RestartPolicy) -> Policy {
    Policy {
        restart,
        ..policy()
    }
}

fn with_mode(kill_mode: KillMode) -> Policy {
    Policy {
        kill_mode,
        ..policy()
    }
}

fn is_spawn(a: &Action) -> bool {
    matches!(a, Action::Spawn { .. })
}

fn is_signal(a: &Action) -> bool {
    matches!(a, Action::Signal { .. })
}

fn count(actions: &[Action], f: fn(&Action) -> bool) -> usize {
    actions.iter().filter(|a| f(a)).count()
}

/// A service plus a clock, fed one event at a time.
struct Sim {
    s: ServiceState,
    now: Instant,
    jitter: f64,
}

impl Sim {
    fn new(policy: Policy) -> Self {
        let now = Instant::now();
        Sim {
            s: ServiceState::new(policy, now),
            now,
            jitter: 0.0,
        }
    }

    fn ev(&mut self, e: Event) -> Vec<Action> {
        let ctx = format!("{:?} + {e:?}", self.s.phase);
        let (s, actions) = step(self.s.clone(), e, self.now, self.jitter);
        assert_invariants(&s, &actions, self.now, &ctx);
        self.s = s;
        actions
    }

    /// Feeds `e` and asserts that nothing at all changed.
    fn ignored(&mut self, e: Event) {
        let before = self.s.clone();
        let ctx = format!("{:?} + {e:?}", before.phase);
        let actions = self.ev(e);
        assert_eq!(actions, vec![], "{ctx}: no actions");
        assert_eq!(self.s, before, "{ctx}: state unchanged");
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    fn gen(&self) -> Gen {
        self.s.gen
    }

    /// Start -> Spawned: a running process of a new generation.
    fn run(&mut self, pid: u32) {
        let g = self.gen() + 1;
        assert_eq!(self.ev(Event::Start), vec![Action::Spawn { gen: g }]);
        self.spawned(pid);
    }

    /// Answers the outstanding Spawn with success.
    fn spawned(&mut self, pid: u32) {
        let gen = self.gen();
        assert_eq!(self.s.phase, Phase::Starting);
        assert_eq!(
            self.ev(Event::Spawned { gen, pid }),
            vec![Action::StartProbes {
                gen,
                started: false,
                ready: false
            }]
        );
        assert_eq!(self.s.phase, Phase::Running { pid });
    }

    /// The main process of the current generation exited.
    fn exited(&mut self, status: ExitStatus) -> Vec<Action> {
        let ran = self
            .s
            .started_at
            .map_or(Duration::ZERO, |t| self.now.saturating_duration_since(t));
        self.ev(Event::Exited {
            gen: self.gen(),
            status,
            ran,
        })
    }

    fn group_empty(&mut self) -> Vec<Action> {
        self.ev(Event::GroupEmpty { gen: self.gen() })
    }

    /// The main process exits and, under control-group and mixed, what it
    /// left is cleared: the actions of both steps. Nothing spawns before the
    /// group is empty.
    fn crash(&mut self, status: ExitStatus) -> Vec<Action> {
        let g = self.gen();
        let mut a = self.exited(status);
        if a.contains(&Action::KillGroup { gen: g }) {
            assert!(matches!(self.s.phase, Phase::Draining { .. }));
            assert_eq!(count(&a, is_spawn), 0, "no Spawn before GroupEmpty");
            a.extend(self.group_empty());
        }
        a
    }

    /// After a run ended with a restart due: the delay until the Spawn (zero
    /// when `actions` spawned already). Sends Timer at the deadline, checking
    /// that one a millisecond early is ignored.
    fn wait_for_spawn(&mut self, actions: &[Action]) -> Duration {
        if count(actions, is_spawn) > 0 {
            assert_eq!(self.s.phase, Phase::Starting);
            return Duration::ZERO;
        }
        let next = Action::Spawn {
            gen: self.gen() + 1,
        };
        let until = self.s.deadline().expect("in backoff");
        assert!(matches!(self.s.phase, Phase::Backoff { .. }));
        let d = until.duration_since(self.now);
        if d > ms(1) {
            self.now = until - ms(1);
            self.ignored(Event::Timer);
        }
        self.now = until;
        assert_eq!(self.ev(Event::Timer), vec![next]);
        assert_eq!(self.s.phase, Phase::Starting);
        d
    }

    /// Answers every report a faithful executor would send until nothing is
    /// under way (preStop hooks end, processes die on the stop signal, groups
    /// empty, a spawn that is to be stopped succeeds with pid 900+gen). Stops
    /// at a new `Starting`. Returns all actions.
    fn settle(&mut self) -> Vec<Action> {
        let mut all = Vec::new();
        for _ in 0..20 {
            let gen = self.gen();
            let a = match self.s.phase {
                Phase::Starting if self.s.stop_pending || self.s.restart_after_spawn => {
                    self.ev(Event::Spawned {
                        gen,
                        pid: 900 + gen as u32,
                    })
                }
                Phase::Stopping {
                    stage: StopStage::PreStop,
                    ..
                } => self.ev(Event::PreStopDone { gen }),
                Phase::Stopping { .. } => self.exited(TERMINATED),
                Phase::Draining { .. } => self.group_empty(),
                _ => return all,
            };
            all.extend(a);
        }
        panic!("not settled after 20 steps: {:?}", self.s);
    }
}

/// What must hold after every step.
fn assert_invariants(s: &ServiceState, actions: &[Action], now: Instant, ctx: &str) {
    if !matches!(s.phase, Phase::Running { .. }) {
        assert!(!s.ready, "{ctx}: ready outside Running");
    }
    if s.pid().is_none() {
        assert!(!s.started, "{ctx}: started without a process");
    }
    if s.phase != Phase::Starting {
        assert!(!s.stop_pending, "{ctx}: stop_pending outside Starting");
        assert!(
            !s.restart_after_spawn,
            "{ctx}: restart_after_spawn outside Starting"
        );
    }
    assert!(count(actions, is_spawn) <= 1, "{ctx}: one Spawn at most");
    assert!(count(actions, is_signal) <= 1, "{ctx}: one Signal at most");
    if let Some(Action::Spawn { gen }) = actions.iter().find(|a| is_spawn(a)) {
        assert!(!s.held, "{ctx}: Spawn while held");
        assert_eq!(s.phase, Phase::Starting, "{ctx}: Spawn without Starting");
        assert_eq!(*gen, s.gen, "{ctx}: Spawn of the current generation");
        assert_eq!(s.since, now, "{ctx}: since moves with a new spawn");
    }
    for a in actions {
        if let Action::Signal { gen, .. } | Action::Kill { gen, .. } = a {
            assert_eq!(*gen, s.gen, "{ctx}: signals go to the current generation");
        }
    }
    if s.held {
        assert!(
            !matches!(
                s.phase,
                Phase::Running { .. } | Phase::Waiting | Phase::Backoff { .. }
            ),
            "{ctx}: held but {:?}",
            s.phase
        );
    }
}

// === restart policy and backoff ===

#[test]
fn crash_loop_delays_double_up_to_the_cap() {
    let mut sim = Sim::new(policy());
    let mut delays = Vec::new();
    sim.run(100);
    for i in 0..12u32 {
        sim.advance(secs(1));
        let g = sim.gen();
        let exit = sim.exited(ExitStatus::Exited(1));
        assert_eq!(exit, vec![Action::StopProbes, Action::KillGroup { gen: g }]);
        let gone = sim.group_empty();
        assert_eq!(gone[0], Action::Release { gen: g });
        delays.push(sim.wait_for_spawn(&gone).as_secs());
        sim.spawned(101 + i);
    }
    assert_eq!(delays, vec![0, 1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60]);
    assert_eq!(sim.s.restarts, 12);
    assert_eq!(sim.s.failures, 12);
    assert_eq!(sim.gen(), 13);
    assert_eq!(sim.s.last_exit.map(|(e, _)| e), Some(ExitStatus::Exited(1)));
    // Running again: the restart message is gone (issue 14).
    assert_eq!(sim.s.message, "");
}

#[test]
fn crash_loop_with_jitter_stays_within_bounds() {
    let mut sim = Sim::new(policy());
    sim.s.policy.backoff.jitter = 0.1;
    sim.jitter = 0.5;
    sim.run(1);
    let mut delays = Vec::new();
    for i in 0..10 {
        sim.advance(secs(1));
        let a = sim.crash(KILLED);
        delays.push(sim.wait_for_spawn(&a));
        sim.spawned(2 + i);
    }
    assert_eq!(delays[0], Duration::ZERO);
    assert_eq!(delays[1], ms(1050));
    assert_eq!(delays[9], secs(63));
}

#[test]
fn healthy_run_resets_the_backoff() {
    let mut sim = Sim::new(policy());
    sim.run(1);
    // Five quick crashes: 0, 1, 2, 4, 8.
    for pid in 2..7 {
        sim.advance(secs(1));
        let a = sim.crash(ExitStatus::Exited(1));
        sim.wait_for_spawn(&a);
        sim.spawned(pid);
    }
    assert_eq!(sim.s.failures, 5);
    // A run just short of 10 minutes does not reset: 16 s.
    sim.advance(secs(599));
    let a = sim.crash(ExitStatus::Exited(1));
    assert_eq!(sim.wait_for_spawn(&a), secs(16));
    sim.spawned(7);
    // A 10-minute run does: immediate, then 1 s.
    sim.advance(secs(600));
    let a = sim.crash(ExitStatus::Exited(1));
    assert_eq!(sim.wait_for_spawn(&a), Duration::ZERO);
    assert_eq!(sim.s.failures, 1);
    sim.spawned(8);
    sim.advance(secs(1));
    let a = sim.crash(ExitStatus::Exited(1));
    assert_eq!(sim.wait_for_spawn(&a), secs(1));
}

#[test]
fn spawn_failures_back_off_at_least_the_minimum_and_count_no_restarts() {
    let mut sim = Sim::new(policy());
    assert_eq!(sim.ev(Event::Start), vec![Action::Spawn { gen: 1 }]);
    let mut delays = Vec::new();
    for _ in 0..4 {
        let gen = sim.gen();
        let a = sim.ev(Event::SpawnFailed {
            gen,
            error: "exec /usr/bin/etcd: no such file".into(),
        });
        assert_eq!(a, vec![Action::Release { gen }]);
        assert!(
            sim.s
                .message
                .starts_with("exec /usr/bin/etcd: no such file"),
            "{}",
            sim.s.message
        );
        delays.push(sim.wait_for_spawn(&a));
    }
    // A zero backoff is stretched to the minimum: a failed exec never spins.
    assert_eq!(
        delays,
        vec![SPAWN_FAILURE_MIN_DELAY, secs(1), secs(2), secs(4)]
    );
    assert_eq!(sim.s.restarts, 0, "no process ever started");
    assert_eq!(sim.s.started_at, None);
    sim.spawned(9);
    assert_eq!(sim.s.restarts, 0, "the first process is not a restart");
}

#[test]
fn never_policy_completes() {
    for (status, failed) in [
        (ExitStatus::Exited(0), false),
        (ExitStatus::Exited(3), true),
        (KILLED, true),
    ] {
        let mut sim = Sim::new(with_restart(RestartPolicy::Never));
        sim.run(1);
        sim.advance(secs(2));
        let a = sim.crash(status);
        assert_eq!(
            a,
            vec![
                Action::StopProbes,
                Action::KillGroup { gen: 1 },
                Action::Release { gen: 1 }
            ]
        );
        assert_eq!(sim.s.phase, Phase::Completed { failed });
        assert_eq!(
            sim.s.state_name(),
            if failed { "failed" } else { "stopped" }
        );
        assert_eq!(sim.s.since, sim.now);
        assert!(
            sim.s.message.contains("not restarting"),
            "{}",
            sim.s.message
        );
    }
    let mut sim = Sim::new(with_restart(RestartPolicy::Never));
    sim.ev(Event::Start);
    let a = sim.ev(Event::SpawnFailed {
        gen: 1,
        error: "EACCES".into(),
    });
    assert_eq!(a, vec![Action::Release { gen: 1 }]);
    assert_eq!(sim.s.phase, Phase::Completed { failed: true });
    // An operator start runs it again.
    assert_eq!(sim.ev(Event::Start), vec![Action::Spawn { gen: 2 }]);
}

#[test]
fn on_failure_policy_restarts_only_failures() {
    let mut sim = Sim::new(with_restart(RestartPolicy::OnFailure));
    sim.run(1);
    sim.advance(secs(1));
    let a = sim.crash(ExitStatus::Exited(2));
    assert_eq!(a.last(), Some(&Action::Spawn { gen: 2 }));
    sim.spawned(2);
    sim.advance(secs(1));
    let a = sim.crash(KILLED);
    assert_eq!(sim.wait_for_spawn(&a), secs(1));
    sim.spawned(3);
    sim.advance(secs(1));
    let a = sim.crash(ExitStatus::Exited(0));
    assert_eq!(count(&a, is_spawn), 0);
    assert_eq!(sim.s.phase, Phase::Completed { failed: false });
}

#[test]
fn always_policy_restarts_clean_exits_with_backoff() {
    let mut sim = Sim::new(policy());
    sim.run(1);
    for (pid, want) in [(2, 0), (3, 1), (4, 2)] {
        sim.advance(secs(1));
        let a = sim.crash(ExitStatus::Exited(0));
        assert_eq!(sim.wait_for_spawn(&a).as_secs(), want);
        sim.spawned(pid);
    }
}

#[test]
fn huge_backoff_does_not_overflow_the_clock() {
    let mut sim = Sim::new(policy());
    sim.s.policy.backoff = BackoffSpec {
        initial: Duration::MAX,
        max: Duration::MAX,
        ..policy().backoff
    };
    sim.run(1);
    sim.s.failures = 1;
    sim.crash(ExitStatus::Exited(1));
    let until = sim.s.deadline().expect("backoff");
    assert!(until > sim.now + secs(86_400 * 365 * 100));
    sim.ignored(Event::Timer);
}

// === probes ===

#[test]
fn liveness_kill_uses_its_grace_then_backs_off() {
    let mut sim = Sim::new(Policy {
        liveness_grace: Some(secs(5)),
        startup_grace: Some(secs(7)),
        ..policy()
    });
    sim.run(10);
    sim.s.failures = 2; // set after the run: a start from Stopped forgets failures
    sim.ev(Event::StartupPassed { gen: 1 });
    sim.ev(Event::Readiness {
        gen: 1,
        ready: true,
        why: String::new(),
    });
    assert_eq!(sim.s.state_name(), "running");
    assert!(sim.s.ready && sim.s.started);
    sim.advance(secs(30));
    let t0 = sim.now;
    let a = sim.ev(Event::ProbeFailed {
        gen: 1,
        probe: ProbeKill::Liveness,
        why: "HTTP 500".into(),
    });
    assert_eq!(
        a,
        vec![
            Action::StopProbes,
            Action::Signal {
                gen: 1,
                target: Target::Group,
                signal: SIGTERM
            }
        ]
    );
    assert_eq!(
        sim.s.phase,
        Phase::Stopping {
            pid: 10,
            then: AfterStop::Restart,
            stage: StopStage::Signalled,
            kill_at: t0 + secs(5),
        }
    );
    assert!(!sim.s.ready);
    assert_eq!(sim.s.pid(), Some(10));
    assert_eq!(sim.s.message, "liveness probe failed: HTTP 500");
    // Nothing spawns while the old process is alive, whatever else arrives.
    for e in [
        Event::Start,
        Event::Timer,
        Event::ProbeFailed {
            gen: 1,
            probe: ProbeKill::Startup,
            why: "x".into(),
        },
        Event::StartupPassed { gen: 1 },
    ] {
        sim.ignored(e);
    }
    sim.advance(secs(2));
    // Exit 0 after SIGTERM is still a failure: 2 failures before -> 2 s.
    let a = sim.crash(ExitStatus::Exited(0));
    assert_eq!(
        a,
        vec![Action::KillGroup { gen: 1 }, Action::Release { gen: 1 }]
    );
    assert_eq!(
        sim.s.message,
        "liveness probe failed: HTTP 500; exit code 0; restarting in 2s"
    );
    assert_eq!(sim.wait_for_spawn(&a), secs(2));
    assert_eq!(sim.s.failures, 3);
}

#[test]
fn startup_kill_under_on_failure_restarts_even_after_exit_0() {
    let mut sim = Sim::new(Policy {
        startup_grace: Some(secs(7)),
        ..with_restart(RestartPolicy::OnFailure)
    });
    sim.run(10);
    let t0 = sim.now;
    sim.ev(Event::ProbeFailed {
        gen: 1,
        probe: ProbeKill::Startup,
        why: "connection refused".into(),
    });
    assert_eq!(
        sim.s.deadline(),
        Some(t0 + secs(7)),
        "the startup probe's grace"
    );
    sim.advance(secs(1));
    let a = sim.crash(ExitStatus::Exited(0));
    assert_eq!(
        a.last(),
        Some(&Action::Spawn { gen: 2 }),
        "kubelet: OnFailure restarts a probe kill whatever the exit code"
    );
    assert!(
        sim.s
            .message
            .starts_with("startup probe failed: connection refused"),
        "{}",
        sim.s.message
    );
}

#[test]
fn probe_kill_under_never_completes_as_failed() {
    let mut sim = Sim::new(with_restart(RestartPolicy::Never));
    sim.run(10);
    sim.ev(Event::ProbeFailed {
        gen: 1,
        probe: ProbeKill::Liveness,
        why: "timeout".into(),
    });
    let a = sim.crash(ExitStatus::Exited(0));
    assert_eq!(count(&a, is_spawn), 0);
    assert_eq!(sim.s.phase, Phase::Completed { failed: true });
    assert_eq!(sim.s.last_exit.map(|(e, _)| e), Some(ExitStatus::Exited(0)));
}

#[test]
fn readiness_flips_and_clears_its_message() {
    let mut sim = Sim::new(policy());
    sim.run(1);
    sim.ev(Event::StartupPassed { gen: 1 });
    sim.ev(Event::Readiness {
        gen: 1,
        ready: false,
        why: "HTTP 503".into(),
    });
    assert!(!sim.s.ready);
    assert_eq!(sim.s.message, "readiness probe failed: HTTP 503");
    sim.ev(Event::Readiness {
        gen: 1,
        ready: true,
        why: String::new(),
    });
    assert!(sim.s.ready);
    assert_eq!(sim.s.message, "");
}

// === generations ===

/// Every report carries its generation; a report about another one (late
/// from the previous process, or bogus from the future) changes nothing.
#[test]
fn stale_events_of_another_generation_are_ignored() {
    fn stale(gen: Gen) -> Vec<Event> {
        vec![
            Event::Exited {
                gen,
                status: ExitStatus::Exited(1),
                ran: secs(1),
            },
            Event::Exited {
                gen,
                status: KILLED,
                ran: ms(1),
            },
            Event::Spawned { gen, pid: 77 },
            Event::SpawnFailed {
                gen,
                error: "ENOENT".into(),
            },
            Event::ProbeFailed {
                gen,
                probe: ProbeKill::Liveness,
                why: "x".into(),
            },
            Event::ProbeFailed {
                gen,
                probe: ProbeKill::Startup,
                why: "x".into(),
            },
            Event::StartupPassed { gen },
            Event::Readiness {
                gen,
                ready: true,
                why: String::new(),
            },
            Event::Readiness {
                gen,
                ready: false,
                why: "x".into(),
            },
            Event::PreStopDone { gen },
            Event::GroupEmpty { gen },
        ]
    }
    let mut sim = Sim::new(Policy {
        pre_stop: true,
        ..policy()
    });
    sim.run(1);
    sim.advance(secs(1));
    let a = sim.crash(ExitStatus::Exited(1));
    sim.wait_for_spawn(&a);
    // Starting generation 2: reports of 1 (and 3) are stale.
    for e in stale(1).into_iter().chain(stale(3)) {
        sim.ignored(e);
    }
    sim.spawned(2);
    // Running generation 2.
    for e in stale(1).into_iter().chain(stale(3)) {
        sim.ignored(e);
    }
    // Stopping generation 2 (preStop running).
    sim.ev(Event::Stop);
    assert!(matches!(
        sim.s.phase,
        Phase::Stopping {
            stage: StopStage::PreStop,
            ..
        }
    ));
    for e in stale(1).into_iter().chain(stale(3)) {
        sim.ignored(e);
    }
    sim.ev(Event::PreStopDone { gen: 2 });
    // Draining generation 2.
    sim.exited(TERMINATED);
    assert!(matches!(sim.s.phase, Phase::Draining { .. }));
    for e in stale(1).into_iter().chain(stale(3)) {
        sim.ignored(e);
    }
    assert_eq!(sim.group_empty(), vec![Action::Release { gen: 2 }]);
    assert_eq!(sim.s.phase, Phase::Stopped);
    // Stopped: even the last generation's reports are stale now.
    for e in stale(1).into_iter().chain(stale(2)).chain(stale(3)) {
        sim.ignored(e);
    }
}

// === the stop sequence ===

/// One stop signal per generation, whatever arrives while it stops.
#[test]
fn exactly_one_stop_signal_per_generation() {
    let timers = || (0..10).map(|_| Event::Timer).collect::<Vec<_>>();
    let sequences: Vec<(&str, Vec<Event>)> = vec![
        ("Stop twice", vec![Event::Stop, Event::Stop]),
        (
            "Restart during Stopping",
            vec![Event::Stop, Event::Restart, Event::Restart],
        ),
        (
            "Restart twice",
            vec![Event::Restart, Event::Restart, Event::SpecChanged],
        ),
        (
            "Hold then Stop",
            vec![Event::Hold, Event::Stop, Event::Hold],
        ),
        (
            "Hold, Release, Start, Stop",
            vec![
                Event::Hold,
                Event::Release,
                Event::Start,
                Event::Stop,
                Event::Restart,
            ],
        ),
        ("Timer storm", [vec![Event::Stop], timers()].concat()),
        (
            "probe kill then operator",
            vec![
                Event::ProbeFailed {
                    gen: 1,
                    probe: ProbeKill::Liveness,
                    why: "x".into(),
                },
                Event::ProbeFailed {
                    gen: 1,
                    probe: ProbeKill::Startup,
                    why: "x".into(),
                },
                Event::Stop,
                Event::Restart,
                Event::Hold,
            ],
        ),
    ];
    for pre_stop in [false, true] {
        for (name, events) in &sequences {
            let mut sim = Sim::new(Policy {
                pre_stop,
                ..policy()
            });
            sim.run(1);
            let mut all = Vec::new();
            for e in events {
                sim.advance(ms(100));
                all.extend(sim.ev(e.clone()));
                // preStop ends (twice: a duplicate report) between requests.
                all.extend(sim.ev(Event::PreStopDone { gen: 1 }));
                all.extend(sim.ev(Event::PreStopDone { gen: 1 }));
            }
            assert_eq!(
                count(&all, is_signal),
                1,
                "{name} (preStop {pre_stop}): {all:?}"
            );
            // The deadline passes, a storm of timers: one SIGKILL.
            sim.advance(secs(31));
            for _ in 0..5 {
                all.extend(sim.ev(Event::Timer));
            }
            let kills = all
                .iter()
                .filter(|a| matches!(a, Action::Kill { .. }))
                .count();
            assert_eq!(kills, 1, "{name}: one SIGKILL");
            assert_eq!(count(&all, is_signal), 1, "{name}: still one stop signal");
            assert!(
                all.iter().all(|a| !is_spawn(a)),
                "{name}: no Spawn while it stops"
            );
        }
    }
}

#[test]
fn sigkill_exactly_at_the_deadline_not_before() {
    let mut sim = Sim::new(policy());
    sim.run(1);
    sim.advance(secs(3));
    let t0 = sim.now;
    assert_eq!(
        sim.ev(Event::Stop),
        vec![
            Action::StopProbes,
            Action::Signal {
                gen: 1,
                target: Target::Group,
                signal: SIGTERM
            }
        ]
    );
    assert_eq!(sim.s.deadline(), Some(t0 + secs(30)));
    sim.now = t0 + secs(30) - Duration::from_nanos(1);
    sim.ignored(Event::Timer);
    sim.now = t0 + secs(30);
    assert_eq!(
        sim.ev(Event::Timer),
        vec![Action::Kill {
            gen: 1,
            target: Target::Group
        }]
    );
    assert!(sim.s.killed);
    assert!(matches!(
        sim.s.phase,
        Phase::Stopping {
            stage: StopStage::Killed,
            ..
        }
    ));
    // A main process that does not die of SIGKILL (uninterruptible sleep)
    // is killed again every DRAIN_RETRY, and the message says so.
    assert_eq!(sim.s.deadline(), Some(t0 + secs(30) + DRAIN_RETRY));
    sim.now = t0 + secs(30) + DRAIN_RETRY - Duration::from_nanos(1);
    sim.ignored(Event::Timer);
    sim.now = t0 + secs(30) + DRAIN_RETRY;
    assert_eq!(
        sim.ev(Event::Timer),
        vec![Action::Kill {
            gen: 1,
            target: Target::Group
        }]
    );
    assert!(
        sim.s.message.contains("has not exited after SIGKILL"),
        "{}",
        sim.s.message
    );
    assert_eq!(sim.s.state_name(), "stopping");
    // The SIGKILL upkeep sent is no surprise: no alarm.
    let a = sim.crash(KILLED);
    assert!(!a.iter().any(|a| matches!(a, Action::Alarm(_))), "{a:?}");
    assert_eq!(sim.s.phase, Phase::Stopped);
}

#[test]
fn prestop_runs_within_the_grace_then_the_signal() {
    let mut sim = Sim::new(Policy {
        pre_stop: true,
        grace: secs(10),
        min_signal_grace: secs(2),
        ..policy()
    });
    sim.run(1);
    let t0 = sim.now;
    assert_eq!(
        sim.ev(Event::Stop),
        vec![
            Action::StopProbes,
            Action::RunPreStop {
                gen: 1,
                timeout: secs(10)
            }
        ]
    );
    assert_eq!(sim.s.deadline(), Some(t0 + secs(10)));
    // The hook ends early: the signal now, SIGKILL still at the end of the grace.
    sim.advance(secs(3));
    assert_eq!(
        sim.ev(Event::PreStopDone { gen: 1 }),
        vec![Action::Signal {
            gen: 1,
            target: Target::Group,
            signal: SIGTERM
        }]
    );
    assert_eq!(sim.s.deadline(), Some(t0 + secs(10)));
    // The hook ends late: SIGKILL no sooner than min_signal_grace after the signal.
    let mut sim = Sim::new(sim.s.policy.clone());
    sim.run(1);
    let t0 = sim.now;
    sim.ev(Event::Stop);
    sim.advance(secs(9));
    assert_eq!(count(&sim.ev(Event::PreStopDone { gen: 1 }), is_signal), 1);
    assert_eq!(sim.s.deadline(), Some(t0 + secs(11)));
}

#[test]
fn prestop_that_uses_the_whole_grace_still_gets_min_signal_grace() {
    let mut sim = Sim::new(Policy {
        pre_stop: true,
        grace: secs(10),
        min_signal_grace: secs(2),
        ..policy()
    });
    sim.run(1);
    let t0 = sim.now;
    sim.ev(Event::Stop);
    sim.now = t0 + secs(10) - ms(1);
    sim.ignored(Event::Timer);
    sim.now = t0 + secs(10);
    assert_eq!(
        sim.ev(Event::Timer),
        vec![Action::Signal {
            gen: 1,
            target: Target::Group,
            signal: SIGTERM
        }],
        "the hook is out of time: the stop signal, not SIGKILL"
    );
    assert_eq!(sim.s.deadline(), Some(t0 + secs(12)));
    // The hook's late report changes nothing.
    sim.ignored(Event::PreStopDone { gen: 1 });
    sim.now = t0 + secs(12) - ms(1);
    sim.ignored(Event::Timer);
    sim.now = t0 + secs(12);
    assert_eq!(
        sim.ev(Event::Timer),
        vec![Action::Kill {
            gen: 1,
            target: Target::Group
        }]
    );
}

#[test]
fn zero_grace_skips_the_prestop_hook() {
    let mut sim = Sim::new(Policy {
        pre_stop: true,
        grace: Duration::ZERO,
        ..policy()
    });
    sim.run(1);
    let a = sim.ev(Event::Stop);
    assert_eq!(count(&a, is_signal), 1);
    assert!(!a.iter().any(|a| matches!(a, Action::RunPreStop { .. })));
    assert_eq!(sim.s.deadline(), Some(sim.now));
    assert_eq!(
        sim.ev(Event::Timer),
        vec![Action::Kill {
            gen: 1,
            target: Target::Group
        }]
    );
}

// === kill modes ===

/// control-group: the signal and SIGKILL go to the group; the main exit is
/// followed by draining, and the next generation spawns only after GroupEmpty.
#[test]
fn kill_mode_control_group() {
    let mut sim = Sim::new(with_mode(KillMode::ControlGroup));
    sim.run(1);
    let a = sim.ev(Event::Restart);
    assert_eq!(
        a[1],
        Action::Signal {
            gen: 1,
            target: Target::Group,
            signal: SIGTERM
        }
    );
    sim.advance(secs(30));
    assert_eq!(
        sim.ev(Event::Timer),
        vec![Action::Kill {
            gen: 1,
            target: Target::Group
        }]
    );
    assert_eq!(sim.exited(KILLED), vec![Action::KillGroup { gen: 1 }]);
    assert!(matches!(
        sim.s.phase,
        Phase::Draining {
            then: Some(AfterStop::RestartNow),
            ..
        }
    ));
    assert_eq!(sim.s.state_name(), "stopping");
    assert_eq!(
        sim.group_empty(),
        vec![Action::Release { gen: 1 }, Action::Spawn { gen: 2 }]
    );
}

/// process: only the main process is signalled and killed; its exit ends
/// the generation at once (what it left behind survives, by design).
#[test]
fn kill_mode_process() {
    let mut sim = Sim::new(with_mode(KillMode::Process));
    sim.run(1);
    let a = sim.ev(Event::Restart);
    assert_eq!(
        a[1],
        Action::Signal {
            gen: 1,
            target: Target::Main,
            signal: SIGTERM
        }
    );
    sim.advance(secs(30));
    assert_eq!(
        sim.ev(Event::Timer),
        vec![Action::Kill {
            gen: 1,
            target: Target::Main
        }]
    );
    assert_eq!(
        sim.exited(KILLED),
        vec![Action::Release { gen: 1 }, Action::Spawn { gen: 2 }]
    );
    // A crash: no draining either.
    sim.spawned(2);
    let a = sim.exited(ExitStatus::Exited(1));
    assert_eq!(
        a,
        vec![
            Action::StopProbes,
            Action::Release { gen: 2 },
            Action::Spawn { gen: 3 }
        ]
    );
}

/// mixed: the stop signal to the main process, SIGKILL to the group,
/// draining after the main exit.
#[test]
fn kill_mode_mixed() {
    let mut sim = Sim::new(with_mode(KillMode::Mixed));
    sim.run(1);
    let a = sim.ev(Event::Stop);
    assert_eq!(
        a[1],
        Action::Signal {
            gen: 1,
            target: Target::Main,
            signal: SIGTERM
        }
    );
    sim.advance(secs(30));
    assert_eq!(
        sim.ev(Event::Timer),
        vec![Action::Kill {
            gen: 1,
            target: Target::Group
        }]
    );
    assert_eq!(sim.exited(KILLED), vec![Action::KillGroup { gen: 1 }]);
    assert!(matches!(sim.s.phase, Phase::Draining { .. }));
    assert_eq!(sim.group_empty(), vec![Action::Release { gen: 1 }]);
    assert_eq!(sim.s.phase, Phase::Stopped);
    // A crash under mixed drains too.
    sim.run(2);
    assert_eq!(
        sim.exited(ExitStatus::Exited(1)),
        vec![Action::StopProbes, Action::KillGroup { gen: 2 }]
    );
}

// === draining ===

#[test]
fn draining_retries_the_kill_and_never_spawns_before_the_group_is_empty() {
    let mut sim = Sim::new(policy());
    sim.run(1);
    sim.advance(secs(20));
    let t0 = sim.now;
    assert_eq!(
        sim.exited(ExitStatus::Exited(1)),
        vec![Action::StopProbes, Action::KillGroup { gen: 1 }]
    );
    assert_eq!(sim.s.message, "exit code 1");
    assert_eq!(sim.s.deadline(), Some(t0 + DRAIN_RETRY));
    let mut all = Vec::new();
    let mut kills = 0;
    // Twelve seconds of stuck processes, with every request an operator can make.
    for step in 1..=24u32 {
        sim.now = t0 + DRAIN_RETRY * step / 2;
        let a = sim.ev(Event::Timer);
        if step % 2 == 0 {
            assert_eq!(a, vec![Action::KillGroup { gen: 1 }], "retry at {step}");
            kills += 1;
            assert_eq!(sim.s.deadline(), Some(sim.now + DRAIN_RETRY));
        } else {
            assert_eq!(a, vec![], "no retry before DRAIN_RETRY");
        }
        let waited = sim.now - t0;
        if waited >= DRAIN_WARN_AFTER {
            assert!(
                sim.s.message.contains("still present"),
                "after {waited:?}: {}",
                sim.s.message
            );
        } else {
            assert!(
                !sim.s.message.contains("still present"),
                "{}",
                sim.s.message
            );
        }
        all.extend(a);
        for e in [Event::Start, Event::Restart, Event::SpecChanged] {
            all.extend(sim.ev(e));
        }
    }
    assert_eq!(kills, 12);
    assert_eq!(
        sim.s.message,
        "exit code 1; processes of the old generation are still present 12s after SIGKILL: \
         not starting a new one until they are gone",
        "the note follows the cause, once"
    );
    assert_eq!(count(&all, is_spawn), 0, "{all:?}");
    assert_eq!(sim.s.state_name(), "stopping");
    assert!(!sim.s.is_quiet());
    // The operator's restart requests are honoured once the group is gone.
    let a = sim.group_empty();
    assert_eq!(
        a,
        vec![Action::Release { gen: 1 }, Action::Spawn { gen: 2 }]
    );
    assert!(
        !sim.s.message.contains("still present"),
        "{}",
        sim.s.message
    );
}

#[test]
fn draining_after_a_crash_backs_off_once_empty() {
    let mut sim = Sim::new(policy());
    sim.run(1);
    sim.s.failures = 3;
    sim.advance(secs(1));
    sim.exited(ExitStatus::Exited(1));
    sim.advance(DRAIN_WARN_AFTER);
    sim.ev(Event::Timer);
    assert!(sim.s.message.contains("still present"), "{}", sim.s.message);
    let a = sim.group_empty();
    assert_eq!(a, vec![Action::Release { gen: 1 }]);
    assert!(matches!(sim.s.phase, Phase::Backoff { .. }));
    // The cause survives the warning.
    assert_eq!(sim.s.message, "exit code 1; restarting in 4s");
}

// === operator hold ===

#[test]
fn hold_in_every_phase_stops_and_nothing_but_release_starts() {
    let now = Instant::now() + secs(1000);
    for (name, state) in fixtures(now) {
        let mut sim = Sim {
            s: state,
            now,
            jitter: 0.0,
        };
        let mut all = sim.ev(Event::Hold);
        assert!(sim.s.held, "{name}");
        assert_eq!(sim.s.message, "stopped by operator", "{name}");
        for e in [
            Event::Start,
            Event::Restart,
            Event::SpecChanged,
            Event::Hold,
        ] {
            all.extend(sim.ev(e));
        }
        all.extend(sim.settle());
        for e in [
            Event::Start,
            Event::Restart,
            Event::SpecChanged,
            Event::Timer,
            Event::Dependencies {
                waiting_for: vec![],
            },
        ] {
            all.extend(sim.ev(e));
        }
        assert_eq!(
            sim.s.phase,
            Phase::Stopped,
            "{name}: held services end stopped"
        );
        assert!(
            all.iter().all(|a| !is_spawn(a)),
            "{name}: a held service never starts: {all:?}"
        );
        assert!(count(&all, is_signal) <= 1, "{name}");
        // Release starts it.
        sim.s.waiting_for.clear();
        let a = sim.ev(Event::Release);
        assert!(!sim.s.held);
        assert_eq!(a, vec![Action::Spawn { gen: sim.gen() }], "{name}");
    }
}

/// Release in any phase, even while the hold's stop is still under way,
/// starts through `Waiting` when a dependency is not ready.
#[test]
fn release_in_every_phase_waits_for_dependencies() {
    let now = Instant::now() + secs(1000);
    for (name, state) in fixtures(now) {
        let mut sim = Sim {
            s: state,
            now,
            jitter: 0.0,
        };
        let spawning = sim.s.phase == Phase::Starting;
        sim.ev(Event::Hold);
        sim.ev(Event::Dependencies {
            waiting_for: vec!["containerd".into()],
        });
        let mut all = sim.ev(Event::Release);
        all.extend(sim.settle());
        assert_eq!(count(&all, is_spawn), 0, "{name}: {all:?}");
        if spawning {
            // The spawn under way (asked while nothing was missing) goes on.
            assert_eq!(sim.s.phase, Phase::Starting, "{name}");
        } else {
            assert_eq!(sim.s.phase, Phase::Waiting, "{name}");
            assert_eq!(
                sim.s.message, "waiting for containerd to be ready",
                "{name}"
            );
            let a = sim.ev(Event::Dependencies {
                waiting_for: vec![],
            });
            assert_eq!(a, vec![Action::Spawn { gen: sim.gen() }], "{name}");
        }
    }
}

#[test]
fn release_while_the_hold_stops_it_restarts_once_gone() {
    let mut sim = Sim::new(Policy {
        pre_stop: true,
        ..policy()
    });
    sim.run(1);
    sim.ev(Event::Hold);
    assert_eq!(sim.ev(Event::Release), vec![]);
    assert!(!sim.s.held);
    let a = sim.settle();
    assert_eq!(count(&a, is_signal), 1);
    assert_eq!(a.last(), Some(&Action::Spawn { gen: 2 }));
}

#[test]
fn hold_while_starting_stops_the_new_process() {
    let mut sim = Sim::new(policy());
    sim.ev(Event::Start);
    assert_eq!(sim.ev(Event::Hold), vec![]);
    assert!(sim.s.stop_pending);
    sim.ignored(Event::Start);
    let a = sim.ev(Event::Spawned { gen: 1, pid: 5 });
    assert_eq!(
        a,
        vec![
            Action::StopProbes,
            Action::Signal {
                gen: 1,
                target: Target::Group,
                signal: SIGTERM
            }
        ]
    );
    sim.settle();
    assert_eq!(sim.s.phase, Phase::Stopped);
    // The same with a failed spawn: nothing to stop.
    sim.ev(Event::Release);
    sim.ev(Event::Hold);
    let a = sim.ev(Event::SpawnFailed {
        gen: 2,
        error: "ENOENT".into(),
    });
    assert_eq!(a, vec![Action::Release { gen: 2 }]);
    assert_eq!(sim.s.phase, Phase::Stopped);
    // Hold then Release while starting: the process runs.
    sim.ev(Event::Release);
    sim.ev(Event::Hold);
    sim.ev(Event::Release);
    sim.spawned(6);
}

#[test]
fn release_waits_for_dependencies() {
    let mut sim = Sim::new(policy());
    sim.ev(Event::Hold);
    sim.ev(Event::Dependencies {
        waiting_for: vec!["containerd".into()],
    });
    assert_eq!(sim.ev(Event::Release), vec![]);
    assert_eq!(sim.s.phase, Phase::Waiting);
    assert_eq!(sim.s.message, "waiting for containerd to be ready");
    assert_eq!(
        sim.ev(Event::Dependencies {
            waiting_for: vec![]
        }),
        vec![Action::Spawn { gen: 1 }]
    );
}

// === dependencies ===

#[test]
fn start_waits_for_dependencies() {
    let mut sim = Sim::new(policy());
    sim.ev(Event::Dependencies {
        waiting_for: vec!["containerd".into(), "etcd".into()],
    });
    assert_eq!(
        sim.s.phase,
        Phase::Stopped,
        "dependencies alone start nothing"
    );
    assert_eq!(sim.ev(Event::Start), vec![]);
    assert_eq!(sim.s.phase, Phase::Waiting);
    assert_eq!(sim.s.state_name(), "starting");
    assert!(sim.s.is_quiet());
    assert_eq!(sim.s.message, "waiting for containerd, etcd to be ready");
    for e in [
        Event::Start,
        Event::Restart,
        Event::SpecChanged,
        Event::Timer,
    ] {
        sim.ignored(e);
    }
    assert_eq!(
        sim.ev(Event::Dependencies {
            waiting_for: vec!["etcd".into()]
        }),
        vec![]
    );
    assert_eq!(sim.s.message, "waiting for etcd to be ready");
    assert_eq!(
        sim.ev(Event::Dependencies {
            waiting_for: vec![]
        }),
        vec![Action::Spawn { gen: 1 }]
    );
    assert_eq!(sim.s.message, "");
    sim.spawned(1);
    // A dependency that becomes unready later does not touch a running service.
    assert_eq!(
        sim.ev(Event::Dependencies {
            waiting_for: vec!["etcd".into()]
        }),
        vec![]
    );
    assert_eq!(sim.s.phase, Phase::Running { pid: 1 });
    // A crash restarts it anyway (a restart is not a start).
    let a = sim.crash(ExitStatus::Exited(1));
    assert_eq!(a.last(), Some(&Action::Spawn { gen: 2 }));
    sim.spawned(2);
    // The replacement after a spec change is a start: it waits.
    sim.ev(Event::SpecChanged);
    let a = sim.settle();
    assert_eq!(count(&a, is_spawn), 0, "{a:?}");
    assert_eq!(sim.s.phase, Phase::Waiting);
    assert_eq!(
        sim.ev(Event::Dependencies {
            waiting_for: vec![]
        }),
        vec![Action::Spawn { gen: 3 }]
    );
}

#[test]
fn stop_and_hold_leave_the_dependency_wait() {
    for e in [Event::Stop, Event::Hold] {
        let mut sim = Sim::new(policy());
        sim.ev(Event::Dependencies {
            waiting_for: vec!["containerd".into()],
        });
        sim.ev(Event::Start);
        assert_eq!(sim.ev(e.clone()), vec![]);
        assert_eq!(sim.s.phase, Phase::Stopped, "{e:?}");
        assert_eq!(
            sim.ev(Event::Dependencies {
                waiting_for: vec![]
            }),
            vec![]
        );
        assert_eq!(sim.s.phase, Phase::Stopped, "{e:?}");
    }
}

// === adoption ===

fn adopted(current: bool) -> Adopted {
    Adopted {
        pid: 555,
        started_at: Instant::now(),
        restarts: 4,
        started: true,
        ready: true,
        current,
    }
}

#[test]
fn adopting_a_current_process_keeps_it() {
    let mut sim = Sim::new(policy());
    sim.advance(secs(60));
    let a = sim.ev(Event::Adopt(adopted(true)));
    assert_eq!(
        a,
        vec![Action::StartProbes {
            gen: 1,
            started: true,
            ready: true
        }]
    );
    assert_eq!(sim.s.phase, Phase::Running { pid: 555 });
    assert_eq!(sim.s.restarts, 4);
    assert!(sim.s.ready && sim.s.started);
    assert_eq!(sim.s.message, "adopted pid 555 from a previous upkeep");
    // Its exit is an ordinary exit; the next process is a restart.
    let a = sim.crash(ExitStatus::Unknown);
    sim.wait_for_spawn(&a);
    sim.spawned(556);
    assert_eq!(sim.s.restarts, 5);
    // Adoption is only for a service with nothing running.
    sim.ignored(Event::Adopt(adopted(true)));
}

#[test]
fn adopting_a_stale_process_replaces_it() {
    let mut sim = Sim::new(policy());
    let a = sim.ev(Event::Adopt(adopted(false)));
    assert_eq!(
        a,
        vec![
            Action::StartProbes {
                gen: 1,
                started: true,
                ready: true
            },
            Action::StopProbes,
            Action::Signal {
                gen: 1,
                target: Target::Group,
                signal: SIGTERM
            }
        ]
    );
    assert!(sim.s.message.contains("spec changed"), "{}", sim.s.message);
    let a = sim.settle();
    assert_eq!(a.last(), Some(&Action::Spawn { gen: 2 }));
    assert_eq!(sim.s.failures, 0, "a replacement is not a failure");
}

#[test]
fn adopting_while_held_stops_it() {
    let mut sim = Sim::new(policy());
    sim.ev(Event::Hold);
    let a = sim.ev(Event::Adopt(adopted(true)));
    assert_eq!(count(&a, is_signal), 1);
    assert!(
        sim.s.message.contains("held by the operator"),
        "{}",
        sim.s.message
    );
    let a = sim.settle();
    assert_eq!(count(&a, is_spawn), 0);
    assert_eq!(sim.s.phase, Phase::Stopped);
    assert!(sim.s.held);
}

// === policy ===

#[test]
fn policy_changes_never_emit_actions() {
    let now = Instant::now() + secs(1000);
    let changed = Policy {
        restart: RestartPolicy::Never,
        grace: secs(5),
        pre_stop: false,
        kill_mode: KillMode::Process,
        stop_signal: 2,
        ..policy()
    };
    for (name, state) in fixtures(now) {
        let (after, actions) = step(
            state.clone(),
            Event::Policy(Box::new(changed.clone())),
            now,
            0.0,
        );
        assert_eq!(actions, vec![], "{name}");
        assert_eq!(after.policy, changed, "{name}");
        assert_eq!(after.phase, state.phase, "{name}: the phase stays");
    }
}

#[test]
fn policy_changes_apply_to_the_next_stop() {
    let mut sim = Sim::new(policy());
    sim.run(1);
    sim.ev(Event::Policy(Box::new(Policy {
        grace: secs(3),
        stop_signal: 2,
        ..policy()
    })));
    let t0 = sim.now;
    let a = sim.ev(Event::Stop);
    assert_eq!(
        a[1],
        Action::Signal {
            gen: 1,
            target: Target::Group,
            signal: 2
        }
    );
    assert_eq!(sim.s.deadline(), Some(t0 + secs(3)));
    // A change during the stop does not move the deadline already set.
    sim.ev(Event::Policy(Box::new(policy())));
    assert_eq!(sim.s.deadline(), Some(t0 + secs(3)));
}

// === the "killed at birth" alarm ===

#[test]
fn sigkill_at_birth_not_sent_by_upkeep_raises_an_alarm() {
    let mut sim = Sim::new(policy());
    sim.run(1);
    let a = sim.ev(Event::Exited {
        gen: 1,
        status: KILLED,
        ran: ms(3),
    });
    let alarm = a.iter().find_map(|a| match a {
        Action::Alarm(text) => Some(text.clone()),
        _ => None,
    });
    let alarm = alarm.expect("an alarm");
    assert!(
        alarm.contains("killed by SIGKILL 3 ms after start"),
        "{alarm}"
    );
    assert!(alarm.contains("not by upkeep"), "{alarm}");
    assert_eq!(sim.s.message, alarm);
    sim.group_empty();

    // Not at birth, or not SIGKILL: no alarm.
    for (status, ran) in [
        (KILLED, KILLED_AT_BIRTH),
        (KILLED, secs(60)),
        (TERMINATED, ms(1)),
        (ExitStatus::Exited(137), ms(1)),
    ] {
        let mut sim = Sim::new(policy());
        sim.run(1);
        let a = sim.ev(Event::Exited {
            gen: 1,
            status,
            ran,
        });
        assert!(
            !a.iter().any(|a| matches!(a, Action::Alarm(_))),
            "{status:?} {ran:?}: {a:?}"
        );
    }
}

/// A stop under way does not hide a SIGKILL upkeep did not send: a Hold
/// right after the spawn (preStop running, or SIGTERM sent) and the process
/// dies of SIGKILL 3 ms after its start.
#[test]
fn sigkill_at_birth_during_a_stop_raises_an_alarm() {
    for pre_stop in [false, true] {
        let mut sim = Sim::new(Policy {
            pre_stop,
            ..policy()
        });
        sim.ev(Event::Start);
        sim.ev(Event::Hold);
        sim.ev(Event::Spawned { gen: 1, pid: 5 });
        assert!(matches!(sim.s.phase, Phase::Stopping { .. }));
        let a = sim.ev(Event::Exited {
            gen: 1,
            status: KILLED,
            ran: ms(3),
        });
        assert!(
            a.iter().any(|a| matches!(a, Action::Alarm(_))),
            "preStop {pre_stop}: {a:?}"
        );
        assert_eq!(
            sim.s.message, "stopped by operator",
            "the requester's message stays"
        );
    }
}

#[test]
fn sigkill_sent_by_upkeep_raises_no_alarm() {
    // Zero grace: SIGKILL at once, the process dies within a millisecond.
    let mut sim = Sim::new(Policy {
        grace: Duration::ZERO,
        ..policy()
    });
    sim.run(1);
    sim.ev(Event::Stop);
    sim.ev(Event::Timer);
    assert!(sim.s.killed);
    let a = sim.ev(Event::Exited {
        gen: 1,
        status: KILLED,
        ran: ms(1),
    });
    assert!(!a.iter().any(|a| matches!(a, Action::Alarm(_))), "{a:?}");
    // SIGKILL as the stop signal.
    let mut sim = Sim::new(Policy {
        stop_signal: 9,
        ..policy()
    });
    sim.run(1);
    sim.ev(Event::Restart);
    let a = sim.ev(Event::Exited {
        gen: 1,
        status: KILLED,
        ran: ms(1),
    });
    assert!(!a.iter().any(|a| matches!(a, Action::Alarm(_))), "{a:?}");
}

// === requests in other phases ===

#[test]
fn operator_restart_counts_no_failure() {
    let mut sim = Sim::new(policy());
    sim.run(1);
    sim.s.failures = 3;
    sim.advance(secs(5));
    sim.ev(Event::Restart);
    assert_eq!(sim.s.message, "restart requested");
    sim.advance(secs(1));
    let a = sim.settle();
    assert_eq!(a.last(), Some(&Action::Spawn { gen: 2 }));
    assert_eq!(
        sim.s.failures, 3,
        "neither counted nor reset after a short run"
    );
    assert_eq!(sim.s.message, "");
    sim.spawned(2);
    // After a long run the restart also resets the count.
    sim.advance(secs(3600));
    sim.ev(Event::Restart);
    sim.settle();
    assert_eq!(sim.s.failures, 0);
}

#[test]
fn spec_change_while_starting_replaces_the_new_process() {
    let mut sim = Sim::new(policy());
    sim.ev(Event::Start);
    assert_eq!(sim.ev(Event::SpecChanged), vec![]);
    assert!(sim.s.restart_after_spawn);
    let a = sim.ev(Event::Spawned { gen: 1, pid: 5 });
    assert_eq!(count(&a, is_signal), 1);
    let a = sim.settle();
    assert_eq!(a.last(), Some(&Action::Spawn { gen: 2 }));
    // With a failed spawn, the new spec is tried at once.
    sim.ev(Event::SpecChanged);
    let a = sim.ev(Event::SpawnFailed {
        gen: 2,
        error: "ENOENT".into(),
    });
    assert_eq!(
        a,
        vec![Action::Release { gen: 2 }, Action::Spawn { gen: 3 }]
    );
    // Either way the replacement is a start: it waits for the dependencies.
    for spawned in [true, false] {
        let mut sim = Sim::new(policy());
        sim.ev(Event::Start);
        sim.ev(Event::SpecChanged);
        sim.ev(Event::Dependencies {
            waiting_for: vec!["etcd".into()],
        });
        let mut a = if spawned {
            sim.ev(Event::Spawned { gen: 1, pid: 5 })
        } else {
            sim.ev(Event::SpawnFailed {
                gen: 1,
                error: "ENOENT".into(),
            })
        };
        a.extend(sim.settle());
        assert_eq!(count(&a, is_spawn), 0, "spawned {spawned}: {a:?}");
        assert_eq!(sim.s.phase, Phase::Waiting, "spawned {spawned}");
    }
}

/// A manifest that changes while its service is being stopped (removal,
/// shutdown) does not bring it back: the next start uses the new spec.
#[test]
fn spec_change_does_not_undo_a_stop() {
    let mut sim = Sim::new(Policy {
        pre_stop: true,
        ..policy()
    });
    sim.run(1);
    sim.ev(Event::Stop);
    sim.ignored(Event::SpecChanged);
    sim.ev(Event::PreStopDone { gen: 1 });
    sim.ignored(Event::SpecChanged);
    sim.exited(TERMINATED);
    sim.ignored(Event::SpecChanged);
    let a = sim.settle();
    assert_eq!(a, vec![Action::Release { gen: 1 }]);
    assert_eq!(sim.s.phase, Phase::Stopped);
    // Stop while starting, then a spec change: still stopped once spawned.
    sim.ev(Event::Start);
    sim.ev(Event::Stop);
    sim.ignored(Event::SpecChanged);
    assert!(sim.s.stop_pending);
    let a = sim.settle();
    assert_eq!(count(&a, is_spawn), 0, "{a:?}");
    assert_eq!(sim.s.phase, Phase::Stopped);
    // A spec change during a restart's stop or a crash's drain still replaces.
    sim.ev(Event::Start);
    sim.spawned(3);
    sim.exited(ExitStatus::Exited(1));
    sim.ev(Event::SpecChanged);
    assert!(matches!(
        sim.s.phase,
        Phase::Draining {
            then: Some(AfterStop::RestartNow),
            ..
        }
    ));
    assert_eq!(sim.group_empty().last(), Some(&Action::Spawn { gen: 4 }));
}

#[test]
fn operator_actions_during_backoff() {
    let mut sim = Sim::new(policy());
    sim.run(1);
    sim.s.failures = 4;
    sim.advance(secs(1));
    sim.crash(ExitStatus::Exited(1));
    assert_eq!(sim.s.state_name(), "backoff");
    // Start skips the wait but keeps the failure count.
    assert_eq!(sim.ev(Event::Start), vec![Action::Spawn { gen: 2 }]);
    assert_eq!(sim.s.failures, 5);
    // The old deadline's timer, arriving late, does nothing now.
    sim.advance(secs(60));
    sim.ignored(Event::Timer);
    sim.spawned(2);
    sim.advance(secs(1));
    sim.crash(ExitStatus::Exited(1));
    // Stop in backoff: stopped at once; a late timer changes nothing.
    assert_eq!(sim.ev(Event::Stop), vec![]);
    assert_eq!(sim.s.phase, Phase::Stopped);
    sim.advance(secs(3600));
    sim.ignored(Event::Timer);
    // A fresh start forgets the crash loop.
    assert_eq!(sim.ev(Event::Restart), vec![Action::Spawn { gen: 3 }]);
    assert_eq!(sim.s.failures, 0);
}

#[test]
fn since_tracks_phase_changes_only() {
    let mut sim = Sim::new(policy());
    let t0 = sim.now;
    sim.advance(secs(1));
    sim.ev(Event::Stop); // no-op in Stopped
    assert_eq!(sim.s.since, t0);
    sim.ev(Event::Start);
    assert_eq!(sim.s.since, t0 + secs(1));
    sim.advance(secs(1));
    sim.spawned(1);
    let running_since = sim.now;
    assert_eq!(sim.s.since, running_since);
    assert_eq!(sim.s.started_at, Some(running_since));
    sim.advance(secs(1));
    sim.ev(Event::StartupPassed { gen: 1 });
    assert_eq!(sim.s.since, running_since, "startup is not a phase change");
    sim.ev(Event::Stop);
    sim.advance(secs(1));
    sim.ev(Event::Start); // then = RestartNow: still stopping
    assert_eq!(sim.s.since, running_since + secs(1));
}

/// The deadline logic against tokio's (paused) clock, as the executor uses it:
/// sleep until `deadline()`, then send `Timer` with the current time.
#[tokio::test(start_paused = true)]
async fn backoff_deadline_with_tokio_paused_clock() {
    use tokio::time::{advance, sleep_until, Instant as TokioInstant};

    let now = || TokioInstant::now().into_std();
    let s = ServiceState::new(Policy::default(), now());
    let (s, _) = step(s, Event::Start, now(), 0.0);
    let (mut s, _) = step(s, Event::Spawned { gen: 1, pid: 1 }, now(), 0.0);
    s.failures = 3;
    s.policy.kill_mode = KillMode::Process;
    advance(secs(1)).await;
    let exit = Event::Exited {
        gen: 1,
        status: ExitStatus::Exited(1),
        ran: secs(1),
    };
    let (mut s, a) = step(s, exit, now(), 0.0);
    assert_eq!(a, vec![Action::StopProbes, Action::Release { gen: 1 }]);
    let deadline = TokioInstant::from_std(s.deadline().expect("in backoff"));
    assert_eq!(deadline - TokioInstant::now(), secs(4));

    // Early wake-up (a spurious timer): ignored.
    advance(ms(3999)).await;
    let (s3, a) = step(s.clone(), Event::Timer, now(), 0.0);
    assert_eq!(a, vec![]);
    assert_eq!(s3, s);
    s = s3;

    // Sleeping until the deadline on the paused clock lands exactly on it.
    sleep_until(deadline).await;
    assert_eq!(TokioInstant::now(), deadline);
    let (s4, a) = step(s, Event::Timer, now(), 0.0);
    assert_eq!(a, vec![Action::Spawn { gen: 2 }]);
    assert_eq!(s4.phase, Phase::Starting);
    assert_eq!(s4.since, deadline.into_std());
}

// === the transition table (docs/architecture.md) ===

const PID: u32 = 4242;

/// One representative state per phase variant, at time `now`: policy
/// Always, control-group, a preStop hook, 30 s grace, 2 s minimum signal
/// grace, backoff without jitter; generation 3, one earlier failure (so a
/// failed run backs off 1 s), a process that started 5 s ago. Every
/// deadline is due at `now`, so `Timer` shows what it does.
fn fixtures(now: Instant) -> Vec<(&'static str, ServiceState)> {
    let mut base = ServiceState::new(
        Policy {
            pre_stop: true,
            min_signal_grace: secs(2),
            ..policy()
        },
        now - secs(100),
    );
    base.gen = 3;
    base.failures = 1;
    base.restarts = 2;
    base.started_at = Some(now - secs(5));
    let with = |phase: Phase| {
        let mut s = base.clone();
        s.phase = phase;
        if s.pid().is_some() {
            s.started = true;
        }
        s
    };
    let stopping = |stage: StopStage| Phase::Stopping {
        pid: PID,
        then: AfterStop::Stay,
        stage,
        kill_at: now,
    };
    let mut held = with(Phase::Stopped);
    held.held = true;
    held.message = "stopped by operator".into();
    let mut waiting = with(Phase::Waiting);
    waiting.waiting_for = vec!["containerd".into()];
    let mut running = with(Phase::Running { pid: PID });
    running.ready = true;
    let mut killed = with(stopping(StopStage::Killed));
    killed.killed = true;
    let mut gated = running.clone();
    gated.policy.gated = true;
    let mut gated_pending = gated.clone();
    gated_pending.pending = Some(Planned::SpecChanged);
    gated_pending.message = "pending: spec changed: waiting for the rollout lock".into();
    vec![
        ("Stopped", with(Phase::Stopped)),
        ("Stopped, held", held),
        ("Waiting", waiting),
        ("Starting", with(Phase::Starting)),
        ("Running", running),
        (
            "Stopping (stay, preStop)",
            with(stopping(StopStage::PreStop)),
        ),
        (
            "Stopping (stay, signalled)",
            with(stopping(StopStage::Signalled)),
        ),
        ("Stopping (stay, killed)", killed),
        (
            "Draining (after a crash)",
            with(Phase::Draining {
                status: ExitStatus::Exited(1),
                then: None,
                last_kill: now - DRAIN_RETRY,
                began: now - DRAIN_RETRY,
            }),
        ),
        ("Running, gated", gated),
        ("Running, gated, pending", gated_pending),
        ("Backoff", with(Phase::Backoff { until: now })),
        (
            "Completed (failed)",
            with(Phase::Completed { failed: true }),
        ),
    ]
}

/// One event of each kind, about the current generation (3) of the fixtures.
fn table_events(now: Instant) -> Vec<(&'static str, Event)> {
    let gen = 3;
    vec![
        ("Start", Event::Start),
        ("Stop", Event::Stop),
        ("Restart", Event::Restart),
        ("Hold", Event::Hold),
        ("Release", Event::Release),
        ("SpecChanged", Event::SpecChanged),
        (
            "Policy",
            Event::Policy(Box::new(Policy {
                grace: secs(10),
                ..policy()
            })),
        ),
        (
            "Dependencies(ready)",
            Event::Dependencies {
                waiting_for: vec![],
            },
        ),
        (
            "Dependencies(waiting)",
            Event::Dependencies {
                waiting_for: vec!["etcd".into()],
            },
        ),
        (
            "Adopt",
            Event::Adopt(Adopted {
                pid: 555,
                started_at: now - secs(60),
                restarts: 0,
                started: true,
                ready: true,
                current: true,
            }),
        ),
        ("Spawned", Event::Spawned { gen, pid: 77 }),
        (
            "SpawnFailed",
            Event::SpawnFailed {
                gen,
                error: "ENOENT".into(),
            },
        ),
        (
            "Exited",
            Event::Exited {
                gen,
                status: ExitStatus::Exited(1),
                ran: secs(5),
            },
        ),
        (
            "Exited(SIGKILL at birth)",
            Event::Exited {
                gen,
                status: KILLED,
                ran: ms(5),
            },
        ),
        ("GroupEmpty", Event::GroupEmpty { gen }),
        ("PreStopDone", Event::PreStopDone { gen }),
        (
            "ProbeFailed",
            Event::ProbeFailed {
                gen,
                probe: ProbeKill::Liveness,
                why: "x".into(),
            },
        ),
        ("StartupPassed", Event::StartupPassed { gen }),
        (
            "Readiness",
            Event::Readiness {
                gen,
                ready: false,
                why: "x".into(),
            },
        ),
        ("Timer", Event::Timer),
        ("StepGranted", Event::StepGranted),
        ("StepCancelled", Event::StepCancelled),
        ("StepWaiting", Event::StepWaiting { why: "x".into() }),
        ("RollBack", Event::RollBack { why: "x".into() }),
    ]
}

/// The phase as the table names it, with the flags that matter.
fn phase_label(s: &ServiceState) -> String {
    let then_label = |t: AfterStop| match t {
        AfterStop::Stay => "stay",
        AfterStop::Restart => "restart",
        AfterStop::RestartNow => "restart now",
    };
    let mut label = match &s.phase {
        Phase::Stopped => "Stopped".to_string(),
        Phase::Waiting => "Waiting".to_string(),
        Phase::Starting => "Starting".to_string(),
        Phase::Running { .. } => "Running".to_string(),
        Phase::Stopping { then, stage, .. } => {
            let stage = match stage {
                StopStage::PreStop => "preStop",
                StopStage::Signalled => "signalled",
                StopStage::Killed => "killed",
            };
            format!("Stopping ({}, {stage})", then_label(*then))
        }
        Phase::Draining { then: None, .. } => "Draining (after a crash)".to_string(),
        Phase::Draining { then: Some(t), .. } => format!("Draining ({})", then_label(*t)),
        Phase::Backoff { .. } => "Backoff".to_string(),
        Phase::Completed { failed: true } => "Completed (failed)".to_string(),
        Phase::Completed { failed: false } => "Completed".to_string(),
    };
    for (flag, name) in [
        (s.held, "held"),
        (s.stop_pending, "stop pending"),
        (s.restart_after_spawn, "restart after spawn"),
        (s.policy.gated, "gated"),
        (s.pending.is_some(), "pending"),
    ] {
        if flag {
            label.push_str(", ");
            label.push_str(name);
        }
    }
    label
}

fn action_label(a: &Action) -> String {
    let target = |t: &Target| match t {
        Target::Main => "main",
        Target::Group => "group",
    };
    match a {
        Action::Spawn { .. } => "Spawn".into(),
        Action::StartProbes { .. } => "StartProbes".into(),
        Action::StopProbes => "StopProbes".into(),
        Action::RunPreStop { .. } => "RunPreStop".into(),
        Action::Signal { target: t, .. } => format!("Signal({})", target(t)),
        Action::Kill { target: t, .. } => format!("Kill({})", target(t)),
        Action::KillGroup { .. } => "KillGroup".into(),
        Action::Release { .. } => "Release".into(),
        Action::Alarm(_) => "Alarm".into(),
        Action::RequestStep { .. } => "RequestStep".into(),
    }
}

/// The transition table generated from `step`: for every fixture and event
/// kind, the next phase and the actions. Events with the same outcome in a
/// phase share a row; events that change nothing at all are listed as
/// ignored.
fn transition_table() -> String {
    let now = Instant::now() + secs(1000);
    let events = table_events(now);
    let mut out = String::from("| Phase | Event | Next phase | Actions |\n|---|---|---|---|\n");
    for (name, state) in fixtures(now) {
        // (outcome, event names), in the order of the first event.
        let mut rows: Vec<((String, String), Vec<&str>)> = Vec::new();
        let mut ignored = Vec::new();
        for (ev_name, ev) in &events {
            let (after, actions) = step(state.clone(), ev.clone(), now, 0.0);
            assert_invariants(&after, &actions, now, &format!("{name} + {ev_name}"));
            if after == state && actions.is_empty() {
                ignored.push(*ev_name);
                continue;
            }
            let acts: Vec<String> = actions.iter().map(action_label).collect();
            let acts = if acts.is_empty() {
                "—".to_string()
            } else {
                acts.join(", ")
            };
            let outcome = (phase_label(&after), acts);
            match rows.iter_mut().find(|(o, _)| *o == outcome) {
                Some((_, names)) => names.push(ev_name),
                None => rows.push((outcome, vec![ev_name])),
            }
        }
        for ((next, acts), names) in rows {
            out.push_str(&format!(
                "| {name} | {} | {next} | {acts} |\n",
                names.join(", ")
            ));
        }
        if !ignored.is_empty() {
            out.push_str(&format!(
                "| {name} | {} | (ignored) | — |\n",
                ignored.join(", ")
            ));
        }
    }
    out
}

const TABLE_BEGIN: &str = "<!-- transition-table:begin -->";
const TABLE_END: &str = "<!-- transition-table:end -->";

/// The table in docs/architecture.md is the one `step` produces. With
/// `UPKEEP_BLESS=1` the test rewrites the document's table instead.
#[test]
fn transition_table_in_the_docs_matches_step() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/architecture.md");
    let doc = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let begin = doc
        .find(TABLE_BEGIN)
        .unwrap_or_else(|| panic!("{}: no {TABLE_BEGIN} marker", path.display()));
    let end = doc
        .find(TABLE_END)
        .unwrap_or_else(|| panic!("{}: no {TABLE_END} marker", path.display()));
    assert!(begin < end, "{}: markers out of order", path.display());
    let current = &doc[begin + TABLE_BEGIN.len()..end];
    let generated = format!("\n{}", transition_table());
    if std::env::var_os("UPKEEP_BLESS").is_some_and(|v| v == "1") {
        let updated = format!(
            "{}{generated}{}",
            &doc[..begin + TABLE_BEGIN.len()],
            &doc[end..]
        );
        if updated != doc {
            std::fs::write(&path, updated)
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
        return;
    }
    if current != generated {
        let first = current
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(current.lines().count().min(generated.lines().count()));
        panic!(
            "{}: the transition table differs from what `step` does (first at line {first} of the table).\n\
             Review the change, then run: UPKEEP_BLESS=1 cargo test -p upkeep-core --test machine transition_table\n\
             --- generated ---\n{generated}",
            path.display()
        );
    }
}

// === properties ===

fn any_status() -> impl Strategy<Value = ExitStatus> {
    prop_oneof![
        (-1i32..=255).prop_map(ExitStatus::Exited),
        (1i32..=64, any::<bool>()).prop_map(|(signal, core)| ExitStatus::Signaled { signal, core }),
        Just(KILLED),
        Just(ExitStatus::Unknown),
    ]
}

fn any_restart() -> impl Strategy<Value = RestartPolicy> {
    prop_oneof![
        Just(RestartPolicy::Always),
        Just(RestartPolicy::OnFailure),
        Just(RestartPolicy::Never)
    ]
}

fn any_mode() -> impl Strategy<Value = KillMode> {
    prop_oneof![
        Just(KillMode::ControlGroup),
        Just(KillMode::Process),
        Just(KillMode::Mixed)
    ]
}

/// A policy drawn from one byte, with the given kill mode (the jittered
/// default backoff).
fn policy_from(arg: u8, kill_mode: KillMode) -> Policy {
    Policy {
        restart: [
            RestartPolicy::Always,
            RestartPolicy::OnFailure,
            RestartPolicy::Never,
        ][usize::from(arg % 3)],
        pre_stop: arg & 4 != 0,
        grace: [Duration::ZERO, secs(1), secs(30)][usize::from((arg >> 3) % 3)],
        min_signal_grace: if arg & 32 != 0 {
            secs(2)
        } else {
            Duration::ZERO
        },
        liveness_grace: (arg & 64 != 0).then(|| secs(5)),
        kill_mode,
        ..Policy::default()
    }
}

/// The longest wait a backoff may set with `p`.
fn backoff_bound(p: &Policy) -> Duration {
    let jitter = p.backoff.jitter.clamp(0.0, 1.0);
    p.backoff
        .max
        .mul_f64(1.0 + jitter)
        .max(SPAWN_FAILURE_MIN_DELAY)
        + ms(1)
}

/// Checks the step properties that hold whatever the events: the state
/// invariants, one stop signal per generation, failures no more than runs
/// that ended, a backoff within its bound.
struct Checker {
    signals: BTreeMap<Gen, u32>,
    run_ends: u64,
}

impl Checker {
    fn new() -> Self {
        Checker {
            signals: BTreeMap::new(),
            run_ends: 0,
        }
    }

    fn check(
        &mut self,
        before: &ServiceState,
        event: &Event,
        after: &ServiceState,
        actions: &[Action],
        now: Instant,
    ) -> Result<(), TestCaseError> {
        let ctx = format!(
            "{:?} + {event:?} -> {:?} {actions:?}",
            before.phase, after.phase
        );
        assert_invariants(after, actions, now, &ctx);
        if matches!(event, Event::Exited { .. } | Event::SpawnFailed { .. }) {
            self.run_ends += 1;
        }
        for a in actions {
            if let Action::Signal { gen, .. } = a {
                let n = self.signals.entry(*gen).or_default();
                *n += 1;
                prop_assert!(*n <= 1, "two stop signals for generation {}: {}", gen, ctx);
            }
        }
        prop_assert!(
            u64::from(after.failures) <= self.run_ends,
            "{} failures after {} ended runs: {}",
            after.failures,
            self.run_ends,
            ctx
        );
        if let Phase::Backoff { until } = after.phase {
            if !matches!(before.phase, Phase::Backoff { .. }) {
                prop_assert!(
                    until <= now + backoff_bound(&after.policy),
                    "backoff of {:?}: {}",
                    until - now,
                    ctx
                );
            }
        }
        if matches!(event, Event::Policy(_)) {
            prop_assert!(actions.is_empty(), "a policy change acted: {}", ctx);
        }
        Ok(())
    }
}

/// A random event, its generation drawn near the current one.
fn random_event(kind: u8, arg: u8, status: ExitStatus, s: &ServiceState, now: Instant) -> Event {
    let gen = (s.gen + u64::from(arg % 3)).saturating_sub(1);
    let ran = ms(u64::from(arg) * 7);
    match kind % 21 {
        0 => Event::Start,
        1 => Event::Stop,
        2 => Event::Restart,
        3 => Event::Hold,
        4 => Event::Release,
        5 => Event::SpecChanged,
        6 => Event::Policy(Box::new(policy_from(
            arg,
            [KillMode::ControlGroup, KillMode::Process, KillMode::Mixed][usize::from(arg % 3)],
        ))),
        7 => Event::Dependencies {
            waiting_for: if arg & 1 == 0 {
                vec![]
            } else {
                vec!["containerd".into()]
            },
        },
        8 => Event::Adopt(Adopted {
            pid: 500 + u32::from(arg),
            started_at: now - ran,
            restarts: u64::from(arg),
            started: arg & 1 != 0,
            ready: arg & 2 != 0,
            current: arg & 4 != 0,
        }),
        9 => Event::Spawned {
            gen,
            pid: 100 + u32::from(arg),
        },
        10 => Event::SpawnFailed {
            gen,
            error: "ENOENT".into(),
        },
        11 | 12 => Event::Exited { gen, status, ran },
        13 => Event::GroupEmpty { gen },
        14 => Event::PreStopDone { gen },
        15 => Event::ProbeFailed {
            gen,
            probe: if arg & 8 != 0 {
                ProbeKill::Liveness
            } else {
                ProbeKill::Startup
            },
            why: "x".into(),
        },
        16 => Event::StartupPassed { gen },
        17 => Event::Readiness {
            gen,
            ready: arg & 8 != 0,
            why: "x".into(),
        },
        _ => Event::Timer,
    }
}

/// What the simulated world knows of one generation.
#[derive(Debug)]
struct GenWorld {
    pid: u32,
    /// The main process lives.
    main: bool,
    /// Other processes of the generation (forked by the main process).
    members: u32,
    /// The members survive SIGKILL until the world frees them (D state).
    stuck: bool,
    /// The main process got the stop signal.
    signalled: bool,
    born: Instant,
    /// `KillGroup` requests still to answer with `GroupEmpty`.
    empty_waiters: u32,
}

/// A simulated executor and the processes it runs. It answers every action
/// faithfully: reports go into a FIFO queue delivered at random moments,
/// between operator requests, probe results and process deaths.
struct World {
    mode: KillMode,
    gens: BTreeMap<Gen, GenWorld>,
    queue: std::collections::VecDeque<Event>,
    prestop: Option<Gen>,
    probes: Option<Gen>,
    next_pid: u32,
    rng: u64,
    /// Spawns succeed and nothing gets stuck (the end of a case).
    reliable: bool,
}

impl World {
    fn new(mode: KillMode, seed: u64) -> Self {
        World {
            mode,
            gens: BTreeMap::new(),
            queue: Default::default(),
            prestop: None,
            probes: None,
            next_pid: 1000,
            rng: seed | 1,
            reliable: false,
        }
    }

    /// One in `n`, from a xorshift generator.
    fn chance(&mut self, n: u64) -> bool {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % n == 0
    }

    fn group_mode(&self) -> bool {
        self.mode != KillMode::Process
    }

    fn answer_empty(&mut self, gen: Gen) {
        if let Some(w) = self.gens.get_mut(&gen) {
            if !w.main && w.members == 0 {
                for _ in 0..std::mem::take(&mut w.empty_waiters) {
                    self.queue.push_back(Event::GroupEmpty { gen });
                }
            }
        }
    }

    fn main_dies(&mut self, gen: Gen, status: ExitStatus, now: Instant) {
        if let Some(w) = self.gens.get_mut(&gen) {
            if w.main {
                w.main = false;
                let ran = now.saturating_duration_since(w.born);
                self.queue.push_back(Event::Exited { gen, status, ran });
            }
        }
    }

    /// Performs the machine's actions.
    fn perform(&mut self, actions: &[Action], now: Instant) -> Result<(), TestCaseError> {
        for a in actions {
            match a {
                Action::Spawn { gen } => {
                    prop_assert!(
                        !self.queue.iter().any(|e| matches!(
                            e,
                            Event::Spawned { .. } | Event::SpawnFailed { .. }
                        )),
                        "Spawn {} while a spawn is outstanding",
                        gen
                    );
                    for (g, w) in &self.gens {
                        prop_assert!(*g < *gen, "generation {} reused", gen);
                        prop_assert!(
                            !w.main,
                            "Spawn {} while the main process of {} lives",
                            gen,
                            g
                        );
                        if self.group_mode() {
                            prop_assert!(
                                w.members == 0,
                                "Spawn {} while {} processes of {} are left",
                                gen,
                                w.members,
                                g
                            );
                        }
                    }
                    if !self.reliable && self.chance(5) {
                        self.queue.push_back(Event::SpawnFailed {
                            gen: *gen,
                            error: "ENOENT".into(),
                        });
                    } else {
                        let pid = self.next_pid;
                        self.next_pid += 1;
                        let stuck = !self.reliable && self.chance(4);
                        self.gens.insert(
                            *gen,
                            GenWorld {
                                pid,
                                main: true,
                                members: 0,
                                stuck,
                                signalled: false,
                                born: now,
                                empty_waiters: 0,
                            },
                        );
                        self.queue.push_back(Event::Spawned { gen: *gen, pid });
                    }
                }
                Action::StartProbes { gen, .. } => self.probes = Some(*gen),
                Action::StopProbes => self.probes = None,
                Action::RunPreStop { gen, .. } => self.prestop = Some(*gen),
                Action::Signal { gen, target, .. } => {
                    if !self.group_mode() {
                        prop_assert_eq!(*target, Target::Main);
                    }
                    let honour = self.chance(2);
                    let w = self
                        .gens
                        .get_mut(gen)
                        .expect("signal to a known generation");
                    w.signalled = true;
                    if *target == Target::Group && honour && !w.stuck {
                        w.members = 0;
                    }
                }
                Action::Kill { gen, target } => {
                    if !self.group_mode() {
                        prop_assert_eq!(*target, Target::Main);
                    }
                    self.main_dies(*gen, KILLED, now);
                    let w = self.gens.get_mut(gen).expect("kill of a known generation");
                    if *target == Target::Group && !w.stuck {
                        w.members = 0;
                    }
                }
                Action::KillGroup { gen } => {
                    prop_assert!(self.group_mode(), "KillGroup under kill mode process");
                    let w = self
                        .gens
                        .get_mut(gen)
                        .expect("KillGroup of a known generation");
                    prop_assert!(!w.main, "KillGroup {} before its main process exited", gen);
                    if !w.stuck {
                        w.members = 0;
                    }
                    w.empty_waiters += 1;
                    self.answer_empty(*gen);
                }
                Action::Release { gen } => {
                    if let Some(w) = self.gens.get(gen) {
                        prop_assert!(!w.main, "Release {} with its main process alive", gen);
                        if self.group_mode() {
                            prop_assert!(w.members == 0, "Release {} with processes left", gen);
                        }
                    }
                }
                Action::Alarm(_) => {}
                // Never emitted: the simulated services are not gated.
                Action::RequestStep { .. } => prop_assert!(false, "RequestStep without gating"),
            }
        }
        Ok(())
    }

    /// The machine's view and the world's agree.
    fn agrees(&self, s: &ServiceState) -> Result<(), TestCaseError> {
        for (g, w) in &self.gens {
            if w.main {
                prop_assert_eq!(*g, s.gen, "a live main process of an old generation");
            }
        }
        if let Some(pid) = s.pid() {
            let w = self.gens.get(&s.gen);
            prop_assert_eq!(
                w.map(|w| w.pid),
                Some(pid),
                "machine and world disagree on the pid"
            );
        }
        // Starting exactly while the spawn of its generation is unanswered.
        let in_flight: Vec<Gen> = self
            .queue
            .iter()
            .filter_map(|e| match e {
                Event::Spawned { gen, .. } | Event::SpawnFailed { gen, .. } => Some(*gen),
                _ => None,
            })
            .collect();
        if s.phase == Phase::Starting {
            prop_assert_eq!(
                in_flight,
                vec![s.gen],
                "Starting without its spawn in flight"
            );
        } else {
            prop_assert!(in_flight.is_empty(), "a spawn in flight outside Starting");
        }
        Ok(())
    }
}

/// A machine, its world and the checker, run together.
struct Harness {
    s: ServiceState,
    world: World,
    checker: Checker,
    now: Instant,
    /// The service is wanted: the last of Start/Restart/Release/Stop/Hold
    /// was not Stop or Hold. `SpecChanged` never makes it wanted.
    wanted: bool,
    /// `Spawned` reports the machine accepted.
    spawned: u64,
}

impl Harness {
    fn feed(&mut self, event: Event) -> Result<(), TestCaseError> {
        let (after, actions) = step(self.s.clone(), event.clone(), self.now, 0.5);
        self.checker
            .check(&self.s, &event, &after, &actions, self.now)?;
        if matches!(event, Event::Spawned { .. })
            && matches!(after.phase, Phase::Running { .. } | Phase::Stopping { .. })
        {
            self.spawned += 1;
        }
        match event {
            Event::Start | Event::Restart | Event::Release => self.wanted = true,
            Event::Stop | Event::Hold => self.wanted = false,
            _ => {}
        }
        if !self.wanted {
            prop_assert!(
                !actions.iter().any(is_spawn),
                "Spawn after Stop/Hold: {:?} + {:?} -> {:?}",
                self.s.phase,
                event,
                actions
            );
        }
        self.world.perform(&actions, self.now)?;
        self.world.agrees(&after)?;
        self.s = after;
        Ok(())
    }

    /// One random happening: a request, a report delivered, a process that
    /// dies or forks, a probe result, time passing.
    fn op(&mut self, kind: u8, arg: u8, status: ExitStatus) -> Result<(), TestCaseError> {
        let current = self.s.gen;
        let event = match kind % 24 {
            0 => Event::Start,
            1 => Event::Stop,
            2 => Event::Restart,
            3 => Event::Hold,
            4 => Event::Release,
            5 => Event::SpecChanged,
            6 => Event::Policy(Box::new(policy_from(arg, self.world.mode))),
            7 => Event::Dependencies {
                waiting_for: if arg & 1 == 0 {
                    vec![]
                } else {
                    vec!["containerd".into()]
                },
            },
            8 => {
                if let Some(d) = self.s.deadline() {
                    self.now = self.now.max(d);
                }
                Event::Timer
            }
            9 => Event::Timer,
            10..=14 => match self.world.queue.pop_front() {
                Some(e) => e,
                None => return Ok(()),
            },
            15 => {
                // The main process of the newest generation exits (on the
                // stop signal, or on its own).
                let Some((&gen, w)) = self.world.gens.iter().next_back() else {
                    return Ok(());
                };
                let status = if w.signalled { TERMINATED } else { status };
                self.world.main_dies(gen, status, self.now);
                return Ok(());
            }
            16 => {
                if let Some(w) = self.world.gens.values_mut().next_back() {
                    if w.main {
                        w.members += 1;
                    }
                }
                return Ok(());
            }
            17 => {
                // A stuck process finally dies.
                let gens: Vec<Gen> = self.world.gens.keys().copied().collect();
                for gen in gens {
                    let w = self.world.gens.get_mut(&gen).expect("listed");
                    if w.members > 0 && (w.stuck || arg & 1 == 0) {
                        w.members -= 1;
                        w.stuck = w.stuck && w.members > 0;
                        self.world.answer_empty(gen);
                        break;
                    }
                }
                return Ok(());
            }
            18 => match self.world.prestop.take() {
                Some(gen) => Event::PreStopDone { gen },
                None => return Ok(()),
            },
            19..=21 => {
                let Some(gen) = self.world.probes else {
                    return Ok(());
                };
                match kind % 3 {
                    0 => Event::ProbeFailed {
                        gen,
                        probe: if arg & 1 == 0 {
                            ProbeKill::Liveness
                        } else {
                            ProbeKill::Startup
                        },
                        why: "x".into(),
                    },
                    1 => Event::StartupPassed { gen },
                    _ => Event::Readiness {
                        gen,
                        ready: arg & 1 == 0,
                        why: "x".into(),
                    },
                }
            }
            _ => {
                // A late probe result of the previous generation.
                let gen = current.saturating_sub(1);
                Event::Readiness {
                    gen,
                    ready: true,
                    why: String::new(),
                }
            }
        };
        self.feed(event)
    }

    /// Release, all dependencies ready, Start, then let the world run its
    /// course without new crashes or failed spawns: the service must end up
    /// running.
    fn start_and_settle(&mut self) -> Result<(), TestCaseError> {
        self.world.reliable = true;
        self.feed(Event::Release)?;
        self.feed(Event::Dependencies {
            waiting_for: vec![],
        })?;
        self.feed(Event::Start)?;
        let mut restarts_left = 3;
        for _ in 0..1000 {
            if let Some(e) = self.world.queue.pop_front() {
                self.feed(e)?;
                continue;
            }
            // A failure already in flight may complete it (restart policy):
            // the operator starts it again.
            if matches!(self.s.phase, Phase::Completed { .. }) && restarts_left > 0 {
                restarts_left -= 1;
                self.feed(Event::Start)?;
                continue;
            }
            if let Some(gen) = self.world.prestop.take() {
                self.feed(Event::PreStopDone { gen })?;
                continue;
            }
            let gen = self.s.gen;
            if let Some(w) = self.world.gens.get_mut(&gen) {
                if w.main && matches!(self.s.phase, Phase::Stopping { .. }) {
                    self.world.main_dies(gen, TERMINATED, self.now);
                    continue;
                }
                if w.members > 0 && matches!(self.s.phase, Phase::Draining { .. }) {
                    w.stuck = false;
                    w.members = 0;
                    self.world.answer_empty(gen);
                    continue;
                }
            }
            match self.s.deadline() {
                Some(d) => {
                    self.now = self.now.max(d);
                    self.feed(Event::Timer)?;
                }
                None => break,
            }
        }
        prop_assert!(
            matches!(self.s.phase, Phase::Running { .. }),
            "a wanted service does not run: {:?}",
            self.s
        );
        Ok(())
    }

    /// Stop, then let the world run its course: everything must end with
    /// the service stopped and nothing of it left.
    fn stop_and_settle(&mut self) -> Result<(), TestCaseError> {
        self.feed(Event::Stop)?;
        for _ in 0..1000 {
            if let Some(e) = self.world.queue.pop_front() {
                self.feed(e)?;
                continue;
            }
            if let Some(gen) = self.world.prestop.take() {
                self.feed(Event::PreStopDone { gen })?;
                continue;
            }
            let gen = self.s.gen;
            if let Some(w) = self.world.gens.get_mut(&gen) {
                if w.main && matches!(self.s.phase, Phase::Stopping { .. }) {
                    self.world.main_dies(gen, TERMINATED, self.now);
                    continue;
                }
                if w.members > 0 && matches!(self.s.phase, Phase::Draining { .. }) {
                    w.stuck = false;
                    w.members = 0;
                    self.world.answer_empty(gen);
                    if !self.world.queue.is_empty() {
                        continue;
                    }
                }
            }
            match self.s.deadline() {
                Some(d) => {
                    self.now = self.now.max(d);
                    self.feed(Event::Timer)?;
                }
                None => break,
            }
        }
        prop_assert_eq!(&self.s.phase, &Phase::Stopped, "not stopped: {:?}", self.s);
        for (g, w) in &self.world.gens {
            prop_assert!(!w.main, "main process of {} still alive", g);
            if self.world.group_mode() {
                prop_assert!(w.members == 0, "processes of {} left", g);
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary (even nonsensical) events, generations near the current
    /// one: never a panic, the state invariants hold, at most one stop
    /// signal per generation, failures and backoff bounded.
    #[test]
    fn random_events_never_break_the_invariants(
        policy_arg in any::<u8>(),
        steps in prop::collection::vec((any::<u8>(), any::<u8>(), any_status(), 0u64..120_000), 1..100),
    ) {
        let mut now = Instant::now();
        let mut s = ServiceState::new(policy_from(policy_arg, KillMode::ControlGroup), now);
        let mut checker = Checker::new();
        for (kind, arg, status, dt_ms) in steps {
            now += Duration::from_millis(dt_ms);
            let event = random_event(kind, arg, status, &s, now);
            let (after, actions) = step(s.clone(), event.clone(), now, f64::from(arg) / 256.0);
            checker.check(&s, &event, &after, &actions, now)?;
            if after.pid().is_some() && s.pid().is_some() && after.gen == s.gen {
                prop_assert_eq!(after.pid(), s.pid(), "pid changed within a generation");
            }
            prop_assert!(after.gen >= s.gen);
            prop_assert!(after.restarts >= s.restarts || matches!(event, Event::Adopt(_)));
            s = after;
        }
    }

    /// A faithful simulated executor, processes that fork, ignore signals
    /// and get stuck, and random requests and probe results in between:
    /// `Spawn` never happens while a process of an earlier generation may
    /// exist (under control-group and mixed, nothing of it; under process,
    /// its main process), nor after Stop/Hold until a start request; the
    /// machine's pid is the world's; `restarts` counts the spawns after the
    /// first; a final start always ends running, and a final stop with
    /// nothing left.
    #[test]
    fn simulated_executor_never_overlaps_generations(
        restart in any_restart(),
        mode in any_mode(),
        seed in any::<u64>(),
        adopt in prop::option::of((any::<bool>(), any::<bool>())),
        ops in prop::collection::vec((any::<u8>(), any::<u8>(), any_status(), 0u64..3_000), 1..200),
    ) {
        let now = Instant::now() + secs(3600);
        let mut h = Harness {
            s: ServiceState::new(Policy { restart, kill_mode: mode, ..Policy::default() }, now),
            world: World::new(mode, seed),
            checker: Checker::new(),
            now,
            wanted: false,
            spawned: 0,
        };
        if let Some((current, hold_first)) = adopt {
            h.wanted = !hold_first;
            if hold_first {
                h.feed(Event::Hold)?;
            }
            h.world.gens.insert(1, GenWorld {
                pid: 1,
                main: true,
                members: 2,
                stuck: false,
                signalled: false,
                born: now - secs(60),
                empty_waiters: 0,
            });
            h.feed(Event::Adopt(Adopted {
                pid: 1,
                started_at: now - secs(60),
                restarts: 3,
                started: true,
                ready: true,
                current,
            }))?;
        } else {
            h.feed(Event::Start)?;
        }
        for (kind, arg, status, dt_ms) in ops {
            h.now += Duration::from_millis(dt_ms);
            h.op(kind, arg, status)?;
        }
        h.start_and_settle()?;
        // Every accepted spawn after the first (or after the adopted process,
        // which brings its own count) is a restart.
        let want = match adopt {
            Some(_) => 3 + h.spawned,
            None => h.spawned.saturating_sub(1),
        };
        prop_assert_eq!(h.s.restarts, want);
        h.stop_and_settle()?;
    }
}

// === planned changes under the cluster (issue #16) ===

fn gated() -> Policy {
    Policy {
        gated: true,
        ..policy()
    }
}

#[test]
fn gated_spec_change_waits_keeping_the_process_until_granted() {
    let mut sim = Sim::new(gated());
    sim.run(10);
    let a = sim.ev(Event::SpecChanged);
    assert_eq!(
        a,
        vec![Action::RequestStep {
            planned: Planned::SpecChanged
        }]
    );
    assert_eq!(sim.s.phase, Phase::Running { pid: 10 });
    assert_eq!(sim.s.pending, Some(Planned::SpecChanged));
    assert!(sim.s.message.starts_with("pending: spec changed"));
    // Why it waits goes to the message; nothing else moves.
    assert_eq!(
        sim.ev(Event::StepWaiting {
            why: "master m2 holds the rollout lock".into()
        }),
        vec![]
    );
    assert_eq!(
        sim.s.message,
        "pending: spec changed: master m2 holds the rollout lock"
    );
    assert_eq!(sim.s.phase, Phase::Running { pid: 10 });
    // Granted: the normal replacement, exactly one stop signal.
    let a = sim.ev(Event::StepGranted);
    assert_eq!(count(&a, is_signal), 1);
    assert_eq!(sim.s.pending, None);
    let a = sim.settle();
    assert_eq!(count(&a, is_spawn), 1);
    assert_eq!(sim.s.phase, Phase::Starting);
    // Once nothing is pending, a grant is ignored.
    sim.spawned(11);
    sim.ignored(Event::StepGranted);
}

#[test]
fn gated_operator_restart_waits_and_a_spec_change_supersedes_it() {
    let mut sim = Sim::new(gated());
    sim.run(10);
    assert_eq!(
        sim.ev(Event::Restart),
        vec![Action::RequestStep {
            planned: Planned::Restart
        }]
    );
    assert_eq!(sim.s.pending, Some(Planned::Restart));
    assert_eq!(
        sim.ev(Event::SpecChanged),
        vec![Action::RequestStep {
            planned: Planned::SpecChanged
        }]
    );
    // A restart does not downgrade a pending spec change.
    sim.ev(Event::Restart);
    assert_eq!(sim.s.pending, Some(Planned::SpecChanged));
}

#[test]
fn crash_liveness_and_first_start_never_wait_and_keep_the_change_pending() {
    let mut sim = Sim::new(gated());
    // First start: no request, a spawn at once.
    assert_eq!(sim.ev(Event::Start), vec![Action::Spawn { gen: 1 }]);
    sim.spawned(10);
    sim.ev(Event::SpecChanged);
    assert_eq!(sim.s.pending, Some(Planned::SpecChanged));
    // A crash restarts (through the backoff) without asking anyone.
    let a = sim.crash(ExitStatus::Exited(1));
    assert!(!a.iter().any(|x| matches!(x, Action::RequestStep { .. })));
    sim.wait_for_spawn(&a);
    sim.spawned(11);
    assert_eq!(sim.s.pending, Some(Planned::SpecChanged), "still pending");
    // A liveness kill restarts without asking either.
    let a = sim.ev(Event::ProbeFailed {
        gen: sim.gen(),
        probe: ProbeKill::Liveness,
        why: "x".into(),
    });
    assert_eq!(count(&a, is_signal), 1);
    assert!(!a.iter().any(|x| matches!(x, Action::RequestStep { .. })));
}

#[test]
fn ungated_and_immediate_services_never_wait() {
    let mut sim = Sim::new(policy());
    sim.run(10);
    let a = sim.ev(Event::SpecChanged);
    assert_eq!(count(&a, is_signal), 1);
    assert_eq!(sim.s.pending, None);
    // Not running: a gated change applies at once (nothing runs to keep).
    let mut sim = Sim::new(gated());
    sim.run(10);
    sim.s.failures = 2; // a crash loop: the next restart backs off
    let a = sim.crash(ExitStatus::Exited(1));
    assert!(matches!(sim.s.phase, Phase::Backoff { .. }), "{a:?}");
    let a = sim.ev(Event::SpecChanged);
    assert_eq!(a, vec![Action::Spawn { gen: sim.gen() }]);
    assert_eq!(sim.s.pending, None);
}

#[test]
fn cancelled_change_is_forgotten() {
    let mut sim = Sim::new(gated());
    sim.run(10);
    sim.ev(Event::SpecChanged);
    assert_eq!(sim.ev(Event::StepCancelled), vec![]);
    assert_eq!(sim.s.pending, None);
    assert_eq!(sim.s.message, "");
    sim.ignored(Event::StepGranted);
    sim.ignored(Event::StepCancelled);
    sim.ignored(Event::StepWaiting { why: "x".into() });
}

#[test]
fn rollback_replaces_a_failing_new_process_at_once_and_says_why() {
    let mut sim = Sim::new(gated());
    sim.run(10);
    sim.ev(Event::SpecChanged);
    sim.ev(Event::StepGranted);
    sim.settle();
    sim.spawned(11);
    // The new spec crash-loops: in backoff when the coordinator gives up.
    sim.s.failures = 2;
    let a = sim.crash(ExitStatus::Exited(1));
    assert!(matches!(sim.s.phase, Phase::Backoff { .. }), "{a:?}");
    let a = sim.ev(Event::RollBack {
        why: "apiserver on m1: not ready within 5s".into(),
    });
    assert_eq!(a, vec![Action::Spawn { gen: sim.gen() }]);
    assert!(sim.s.message.starts_with("rollout halted: apiserver on m1"));
    // Running but not ready: a rollback replaces it too, without asking.
    sim.spawned(12);
    let a = sim.ev(Event::RollBack { why: "x".into() });
    assert_eq!(count(&a, is_signal), 1);
    assert!(!a.iter().any(|x| matches!(x, Action::RequestStep { .. })));
}

#[test]
fn adopting_a_stale_process_while_gated_waits_for_the_lock() {
    let mut sim = Sim::new(gated());
    let a = sim.ev(Event::Adopt(adopted(false)));
    assert!(matches!(sim.s.phase, Phase::Running { .. }));
    assert_eq!(count(&a, is_signal), 0);
    assert!(a.contains(&Action::RequestStep {
        planned: Planned::SpecChanged
    }));
    assert_eq!(sim.s.pending, Some(Planned::SpecChanged));
    let a = sim.ev(Event::StepGranted);
    assert_eq!(count(&a, is_signal), 1);
}

#[test]
fn a_held_service_never_waits() {
    let mut sim = Sim::new(gated());
    sim.run(10);
    sim.ev(Event::SpecChanged);
    sim.ev(Event::Hold);
    sim.settle();
    assert_eq!(sim.s.phase, Phase::Stopped);
    // Another change while held: applied on release, nothing pending.
    sim.ev(Event::SpecChanged);
    assert_eq!(sim.s.pending, None);
}
