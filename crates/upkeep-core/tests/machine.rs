//! The supervision state machine, driven through its public API with injected
//! time: a transition table over every (phase, event) pair, behaviour
//! scenarios, and property tests over random event sequences.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use upkeep_core::machine::{step, Action, AfterStop, Event, Phase, ProbeKill, ServiceState};
use upkeep_core::ExitStatus;
use upkeep_spec::{BackoffSpec, RestartPolicy};

const PID: u32 = 4242;
const SIGKILL: ExitStatus = ExitStatus::Signaled {
    signal: 9,
    core: false,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Default backoff (1s, x2, 60s cap, 10m reset) without jitter.
fn backoff() -> BackoffSpec {
    BackoffSpec {
        jitter: 0.0,
        ..BackoffSpec::default()
    }
}

/// A service plus a clock, fed one event at a time.
struct Sim {
    s: ServiceState,
    now: Instant,
    jitter: f64,
}

impl Sim {
    fn new(policy: RestartPolicy) -> Self {
        let now = Instant::now();
        Sim {
            s: ServiceState::new(policy, backoff(), now),
            now,
            jitter: 0.0,
        }
    }

    fn ev(&mut self, e: Event) -> Vec<Action> {
        let (s, actions) = step(self.s.clone(), e, self.now, self.jitter);
        self.s = s;
        actions
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Start -> Spawned: a running process.
    fn run(&mut self, pid: u32) {
        assert_eq!(self.ev(Event::Start), vec![Action::Spawn]);
        assert_eq!(self.ev(Event::Spawned { pid }), vec![Action::StartProbes]);
        assert_eq!(self.s.phase, Phase::Running { pid });
    }

    fn exit(&mut self, status: ExitStatus) -> Vec<Action> {
        self.ev(Event::Exited { status })
    }

    /// After an exit that restarts: the delay until the Spawn (zero when the
    /// exit spawned directly). Drives Timer events at the deadline, checking
    /// that one a millisecond early is ignored.
    fn wait_for_spawn(&mut self, exit_actions: &[Action]) -> Duration {
        if exit_actions.contains(&Action::Spawn) {
            assert_eq!(self.s.phase, Phase::Starting);
            return Duration::ZERO;
        }
        let until = self.s.deadline().expect("in backoff");
        let d = until.duration_since(self.now);
        if d > Duration::from_millis(1) {
            self.now = until - Duration::from_millis(1);
            assert_eq!(self.ev(Event::Timer), vec![], "early timer must be ignored");
            assert!(matches!(self.s.phase, Phase::Backoff { .. }));
        }
        self.now = until;
        assert_eq!(self.ev(Event::Timer), vec![Action::Spawn]);
        assert_eq!(self.s.phase, Phase::Starting);
        d
    }
}

// === the transition table ===

/// Short names used by the table.
fn phase_label(s: &ServiceState) -> String {
    match s.phase {
        Phase::Stopped => "stopped".into(),
        Phase::Starting if s.stop_pending => "starting(stop)".into(),
        Phase::Starting => "starting".into(),
        Phase::Running { .. } => "running".into(),
        Phase::Stopping {
            then: AfterStop::Stay,
            ..
        } => "stopping(stay)".into(),
        Phase::Stopping {
            then: AfterStop::Restart,
            ..
        } => "stopping(restart)".into(),
        Phase::Stopping {
            then: AfterStop::RestartNow,
            ..
        } => "stopping(now)".into(),
        Phase::Backoff { .. } => "backoff".into(),
        Phase::Completed { failed: false } => "completed(ok)".into(),
        Phase::Completed { failed: true } => "completed(failed)".into(),
    }
}

fn action_label(a: &Action) -> &'static str {
    match a {
        Action::Spawn => "spawn",
        Action::Terminate { probe: None } => "terminate",
        Action::Terminate {
            probe: Some(ProbeKill::Liveness),
        } => "terminate(liveness)",
        Action::Terminate {
            probe: Some(ProbeKill::Startup),
        } => "terminate(startup)",
        Action::StartProbes => "startprobes",
        Action::StopProbes => "stopprobes",
    }
}

fn events() -> Vec<(&'static str, Event)> {
    vec![
        ("Start", Event::Start),
        ("Stop", Event::Stop),
        ("Restart", Event::Restart),
        ("Spawned", Event::Spawned { pid: 7 }),
        (
            "SpawnFailed",
            Event::SpawnFailed {
                error: "no such file".into(),
            },
        ),
        (
            "Exit0",
            Event::Exited {
                status: ExitStatus::Exited(0),
            },
        ),
        (
            "Exit1",
            Event::Exited {
                status: ExitStatus::Exited(1),
            },
        ),
        ("Kill9", Event::Exited { status: SIGKILL }),
        (
            "Liveness",
            Event::ProbeFailed {
                probe: ProbeKill::Liveness,
            },
        ),
        (
            "Startup",
            Event::ProbeFailed {
                probe: ProbeKill::Startup,
            },
        ),
        ("StartupPassed", Event::StartupPassed),
        ("Ready", Event::Readiness { ready: true }),
        ("Unready", Event::Readiness { ready: false }),
        ("Timer", Event::Timer),
    ]
}

/// Every phase the table starts from, at time `now`. Policy Always, one
/// earlier failure (so the next failed run backs off 1s), a process that
/// started 5s ago.
fn fixtures(now: Instant) -> Vec<(&'static str, ServiceState)> {
    let mut base = ServiceState::new(RestartPolicy::Always, backoff(), now - secs(100));
    base.failures = 1;
    base.started_at = Some(now - secs(5));
    let with = |phase: Phase, stop_pending: bool| {
        let mut s = base.clone();
        s.phase = phase;
        s.stop_pending = stop_pending;
        s
    };
    vec![
        ("stopped", with(Phase::Stopped, false)),
        ("starting", with(Phase::Starting, false)),
        ("starting(stop)", with(Phase::Starting, true)),
        ("running", with(Phase::Running { pid: PID }, false)),
        (
            "stopping(stay)",
            with(
                Phase::Stopping {
                    pid: PID,
                    then: AfterStop::Stay,
                },
                false,
            ),
        ),
        (
            "stopping(restart)",
            with(
                Phase::Stopping {
                    pid: PID,
                    then: AfterStop::Restart,
                },
                false,
            ),
        ),
        (
            "stopping(now)",
            with(
                Phase::Stopping {
                    pid: PID,
                    then: AfterStop::RestartNow,
                },
                false,
            ),
        ),
        (
            "backoff(early)",
            with(
                Phase::Backoff {
                    until: now + secs(10),
                },
                false,
            ),
        ),
        ("backoff(due)", with(Phase::Backoff { until: now }, false)),
        (
            "completed(ok)",
            with(Phase::Completed { failed: false }, false),
        ),
        (
            "completed(failed)",
            with(Phase::Completed { failed: true }, false),
        ),
    ]
}

/// The checked-in transition table. Columns follow [`events`]:
/// Start, Stop, Restart, Spawned, SpawnFailed, Exit0, Exit1, Kill9,
/// Liveness, Startup, StartupPassed, Ready, Unready, Timer.
/// `=` means "state unchanged (field for field), no actions"; otherwise
/// `phase` or `phase:action,action`.
/// docs/architecture.md ("Supervision state machine") draws the same table.
const TABLE: &[(&str, [&str; 14])] = &[
    (
        "stopped",
        [
            "starting:spawn",
            "=",
            "starting:spawn",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
        ],
    ),
    (
        "starting",
        [
            "=",
            "starting(stop)",
            "=",
            "running:startprobes",
            "backoff",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
        ],
    ),
    (
        "starting(stop)",
        [
            "starting",
            "=",
            "starting",
            "stopping(stay):terminate",
            "stopped",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
        ],
    ),
    (
        "running",
        [
            "=",
            "stopping(stay):stopprobes,terminate",
            "stopping(now):stopprobes,terminate",
            "=",
            "=",
            "backoff:stopprobes",
            "backoff:stopprobes",
            "backoff:stopprobes",
            "stopping(restart):stopprobes,terminate(liveness)",
            "stopping(restart):stopprobes,terminate(startup)",
            "running",
            "running",
            "=",
            "=",
        ],
    ),
    (
        "stopping(stay)",
        [
            "stopping(now)",
            "=",
            "stopping(now)",
            "=",
            "=",
            "stopped",
            "stopped",
            "stopped",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
        ],
    ),
    (
        "stopping(restart)",
        [
            "=",
            "stopping(stay)",
            "stopping(now)",
            "=",
            "=",
            "backoff",
            "backoff",
            "backoff",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
        ],
    ),
    (
        "stopping(now)",
        [
            "=",
            "stopping(stay)",
            "=",
            "=",
            "=",
            "starting:spawn",
            "starting:spawn",
            "starting:spawn",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
        ],
    ),
    (
        "backoff(early)",
        [
            "starting:spawn",
            "stopped",
            "starting:spawn",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
        ],
    ),
    (
        "backoff(due)",
        [
            "starting:spawn",
            "stopped",
            "starting:spawn",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "starting:spawn",
        ],
    ),
    (
        "completed(ok)",
        [
            "starting:spawn",
            "stopped",
            "starting:spawn",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
        ],
    ),
    (
        "completed(failed)",
        [
            "starting:spawn",
            "stopped",
            "starting:spawn",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
            "=",
        ],
    ),
];

#[test]
fn every_phase_event_pair_matches_the_table() {
    let now = Instant::now() + secs(1000);
    let fixtures = fixtures(now);
    let events = events();
    assert_eq!(TABLE.len(), fixtures.len(), "one table row per fixture");
    let mut checked = 0;
    for ((name, state), (row, cells)) in fixtures.iter().zip(TABLE) {
        assert_eq!(name, row, "table rows follow fixtures()");
        for ((ev_name, ev), want) in events.iter().zip(cells.iter()) {
            let (after, actions) = step(state.clone(), ev.clone(), now, 0.0);
            let ctx = format!("{name} + {ev_name}");
            if *want == "=" {
                assert_eq!(&after, state, "{ctx}: state must be unchanged");
                assert!(actions.is_empty(), "{ctx}: no actions, got {actions:?}");
            } else {
                let got_actions: Vec<&str> = actions.iter().map(action_label).collect();
                let got = if got_actions.is_empty() {
                    phase_label(&after)
                } else {
                    format!("{}:{}", phase_label(&after), got_actions.join(","))
                };
                assert_eq!(got, *want, "{ctx}");
                assert_ne!(
                    &after, state,
                    "{ctx}: a listed transition changes something"
                );
            }
            assert_invariants(&after, &actions, now, &ctx);
            checked += 1;
        }
    }
    assert_eq!(checked, 11 * 14);
}

/// What must hold after every step.
fn assert_invariants(s: &ServiceState, actions: &[Action], now: Instant, ctx: &str) {
    if !matches!(s.phase, Phase::Running { .. }) {
        assert!(!s.ready, "{ctx}: ready outside Running");
    }
    if s.pid().is_none() {
        assert!(!s.started, "{ctx}: started without a process");
    }
    if s.stop_pending {
        assert_eq!(
            s.phase,
            Phase::Starting,
            "{ctx}: stop_pending outside Starting"
        );
    }
    assert_eq!(
        s.deadline().is_some(),
        matches!(s.phase, Phase::Backoff { .. }),
        "{ctx}"
    );
    if actions.contains(&Action::Spawn) {
        assert_eq!(s.phase, Phase::Starting, "{ctx}: Spawn without Starting");
        assert_eq!(s.since, now, "{ctx}: since must move with the phase");
    }
    if actions
        .iter()
        .any(|a| matches!(a, Action::Terminate { .. }))
    {
        assert!(
            matches!(s.phase, Phase::Stopping { .. }),
            "{ctx}: Terminate without Stopping"
        );
    }
    assert!(
        actions.iter().filter(|a| **a == Action::Spawn).count() <= 1,
        "{ctx}: one Spawn at most"
    );
}

// === scenarios ===

#[test]
fn crash_loop_delays_double_up_to_the_cap() {
    let mut sim = Sim::new(RestartPolicy::Always);
    let mut delays = Vec::new();
    sim.run(100);
    for i in 0..12u32 {
        sim.advance(secs(1));
        let actions = sim.exit(ExitStatus::Exited(1));
        assert_eq!(actions[0], Action::StopProbes);
        delays.push(sim.wait_for_spawn(&actions).as_secs());
        assert_eq!(
            sim.ev(Event::Spawned { pid: 101 + i }),
            vec![Action::StartProbes]
        );
    }
    assert_eq!(delays, vec![0, 1, 2, 4, 8, 16, 32, 60, 60, 60, 60, 60]);
    assert_eq!(sim.s.restarts, 12);
    assert_eq!(sim.s.failures, 12);
    assert_eq!(sim.s.last_exit.map(|(e, _)| e), Some(ExitStatus::Exited(1)));
    assert!(
        sim.s.message.contains("exit code 1; restarting in 1m"),
        "{}",
        sim.s.message
    );
}

#[test]
fn crash_loop_with_jitter_stays_within_bounds() {
    let mut sim = Sim::new(RestartPolicy::Always);
    sim.s.backoff.jitter = 0.1;
    sim.jitter = 0.5;
    sim.run(1);
    let mut delays = Vec::new();
    for i in 0..10 {
        sim.advance(secs(1));
        let actions = sim.exit(SIGKILL);
        delays.push(sim.wait_for_spawn(&actions));
        sim.ev(Event::Spawned { pid: 2 + i });
    }
    assert_eq!(delays[0], Duration::ZERO);
    assert_eq!(delays[1], Duration::from_millis(1050));
    assert_eq!(delays[9], Duration::from_secs(63));
}

#[test]
fn healthy_run_resets_the_backoff() {
    let mut sim = Sim::new(RestartPolicy::Always);
    sim.run(1);
    // Five quick crashes: 0, 1, 2, 4, 8.
    for pid in 2..7 {
        sim.advance(secs(1));
        let a = sim.exit(ExitStatus::Exited(1));
        sim.wait_for_spawn(&a);
        sim.ev(Event::Spawned { pid });
    }
    assert_eq!(sim.s.failures, 5);
    // A run just short of 10 minutes does not reset: 16s.
    sim.advance(secs(599));
    let a = sim.exit(ExitStatus::Exited(1));
    assert_eq!(sim.wait_for_spawn(&a), secs(16));
    sim.ev(Event::Spawned { pid: 7 });
    // A 10-minute healthy run does: immediate, then 1s.
    sim.advance(secs(600));
    let a = sim.exit(ExitStatus::Exited(1));
    assert_eq!(sim.wait_for_spawn(&a), Duration::ZERO);
    assert_eq!(sim.s.failures, 1);
    sim.ev(Event::Spawned { pid: 8 });
    sim.advance(secs(1));
    let a = sim.exit(ExitStatus::Exited(1));
    assert_eq!(sim.wait_for_spawn(&a), secs(1));
}

#[test]
fn spawn_failures_back_off_and_count_no_restarts() {
    let mut sim = Sim::new(RestartPolicy::Always);
    assert_eq!(sim.ev(Event::Start), vec![Action::Spawn]);
    let mut delays = Vec::new();
    for _ in 0..4 {
        let a = sim.ev(Event::SpawnFailed {
            error: "exec /usr/bin/etcd: no such file".into(),
        });
        assert!(
            sim.s
                .message
                .starts_with("exec /usr/bin/etcd: no such file"),
            "{}",
            sim.s.message
        );
        delays.push(sim.wait_for_spawn(&a).as_secs());
    }
    assert_eq!(delays, vec![0, 1, 2, 4]);
    assert_eq!(sim.s.restarts, 0, "no process ever started");
    assert_eq!(sim.s.started_at, None);
    sim.ev(Event::Spawned { pid: 9 });
    assert_eq!(sim.s.restarts, 0, "the first process is not a restart");
}

#[test]
fn never_policy_completes() {
    for (status, failed) in [
        (ExitStatus::Exited(0), false),
        (ExitStatus::Exited(3), true),
        (SIGKILL, true),
    ] {
        let mut sim = Sim::new(RestartPolicy::Never);
        sim.run(1);
        sim.advance(secs(2));
        assert_eq!(sim.exit(status), vec![Action::StopProbes]);
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
    let mut sim = Sim::new(RestartPolicy::Never);
    sim.ev(Event::Start);
    assert_eq!(
        sim.ev(Event::SpawnFailed {
            error: "EACCES".into()
        }),
        vec![]
    );
    assert_eq!(sim.s.phase, Phase::Completed { failed: true });
    // An operator start runs it again.
    assert_eq!(sim.ev(Event::Start), vec![Action::Spawn]);
}

#[test]
fn on_failure_policy_restarts_only_failures() {
    let mut sim = Sim::new(RestartPolicy::OnFailure);
    sim.run(1);
    sim.advance(secs(1));
    let a = sim.exit(ExitStatus::Exited(2));
    assert_eq!(a, vec![Action::StopProbes, Action::Spawn]);
    sim.ev(Event::Spawned { pid: 2 });
    sim.advance(secs(1));
    let a = sim.exit(SIGKILL);
    assert_eq!(sim.wait_for_spawn(&a), secs(1));
    sim.ev(Event::Spawned { pid: 3 });
    sim.advance(secs(1));
    assert_eq!(sim.exit(ExitStatus::Exited(0)), vec![Action::StopProbes]);
    assert_eq!(sim.s.phase, Phase::Completed { failed: false });
}

#[test]
fn always_policy_restarts_clean_exits_with_backoff() {
    let mut sim = Sim::new(RestartPolicy::Always);
    sim.run(1);
    for (pid, want) in [(2, 0), (3, 1), (4, 2)] {
        sim.advance(secs(1));
        let a = sim.exit(ExitStatus::Exited(0));
        assert_eq!(sim.wait_for_spawn(&a).as_secs(), want);
        sim.ev(Event::Spawned { pid });
    }
}

#[test]
fn liveness_kill_goes_through_stop_then_backoff() {
    let mut sim = Sim::new(RestartPolicy::Always);
    sim.run(10);
    sim.s.failures = 2; // set after the run: a start from Stopped forgets failures
    sim.ev(Event::StartupPassed);
    sim.ev(Event::Readiness { ready: true });
    assert_eq!(sim.s.state_name(), "running");
    sim.advance(secs(30));
    let a = sim.ev(Event::ProbeFailed {
        probe: ProbeKill::Liveness,
    });
    assert_eq!(
        a,
        vec![
            Action::StopProbes,
            Action::Terminate {
                probe: Some(ProbeKill::Liveness)
            }
        ]
    );
    assert_eq!(
        sim.s.phase,
        Phase::Stopping {
            pid: 10,
            then: AfterStop::Restart
        }
    );
    assert!(!sim.s.ready);
    assert_eq!(sim.s.pid(), Some(10));
    assert!(sim.s.message.contains("liveness"), "{}", sim.s.message);
    // Nothing spawns while the old process is alive, whatever else arrives.
    for e in [
        Event::Start,
        Event::Timer,
        Event::ProbeFailed {
            probe: ProbeKill::Startup,
        },
        Event::StartupPassed,
    ] {
        assert_eq!(sim.ev(e), vec![]);
    }
    sim.advance(secs(2));
    // Exit 0 after SIGTERM is still a failure: 2 failures before -> 2s.
    let a = sim.exit(ExitStatus::Exited(0));
    assert_eq!(a, vec![]);
    assert!(
        sim.s
            .message
            .starts_with("liveness probe failed; exit code 0; restarting in 2s"),
        "{}",
        sim.s.message
    );
    assert_eq!(sim.wait_for_spawn(&a), secs(2));
    assert_eq!(sim.s.failures, 3);
}

#[test]
fn startup_kill_under_on_failure_restarts_even_after_exit_0() {
    let mut sim = Sim::new(RestartPolicy::OnFailure);
    sim.run(10);
    let a = sim.ev(Event::ProbeFailed {
        probe: ProbeKill::Startup,
    });
    assert_eq!(
        a,
        vec![
            Action::StopProbes,
            Action::Terminate {
                probe: Some(ProbeKill::Startup)
            }
        ]
    );
    sim.advance(secs(1));
    let a = sim.exit(ExitStatus::Exited(0));
    assert_eq!(
        a,
        vec![Action::Spawn],
        "kubelet: OnFailure restarts a probe kill whatever the exit code"
    );
    assert!(
        sim.s.message.contains("startup probe failed"),
        "{}",
        sim.s.message
    );
}

#[test]
fn probe_kill_under_never_completes_as_failed() {
    let mut sim = Sim::new(RestartPolicy::Never);
    sim.run(10);
    sim.ev(Event::ProbeFailed {
        probe: ProbeKill::Liveness,
    });
    assert_eq!(sim.exit(ExitStatus::Exited(0)), vec![]);
    assert_eq!(sim.s.phase, Phase::Completed { failed: true });
    assert_eq!(sim.s.last_exit.map(|(e, _)| e), Some(ExitStatus::Exited(0)));
}

#[test]
fn operator_stop_and_start_while_running() {
    let mut sim = Sim::new(RestartPolicy::Always);
    sim.run(1);
    sim.ev(Event::StartupPassed);
    sim.ev(Event::Readiness { ready: true });
    assert!(sim.s.ready && sim.s.started);
    sim.advance(secs(5));
    sim.s.message = "stopped by operator".into(); // the requester annotates
    assert_eq!(
        sim.ev(Event::Stop),
        vec![Action::StopProbes, Action::Terminate { probe: None }]
    );
    assert_eq!(sim.s.state_name(), "stopping");
    assert!(!sim.s.ready);
    assert_eq!(sim.s.since, sim.now);
    sim.advance(secs(1));
    assert_eq!(
        sim.exit(ExitStatus::Signaled {
            signal: 15,
            core: false
        }),
        vec![]
    );
    assert_eq!(sim.s.phase, Phase::Stopped);
    assert_eq!(sim.s.failures, 0, "an operator stop is not a failure");
    assert_eq!(
        sim.s.message, "stopped by operator",
        "a requested stop keeps the caller's message"
    );
    assert!(!sim.s.started);
    // A late duplicate exit is ignored.
    assert_eq!(sim.exit(SIGKILL), vec![]);
    assert_eq!(
        sim.s.last_exit.map(|(e, _)| e),
        Some(ExitStatus::Signaled {
            signal: 15,
            core: false
        })
    );
    assert_eq!(sim.ev(Event::Start), vec![Action::Spawn]);
    sim.ev(Event::Spawned { pid: 2 });
    assert_eq!(sim.s.restarts, 1);
}

#[test]
fn operator_restart_while_running_counts_no_failure() {
    let mut sim = Sim::new(RestartPolicy::Always);
    sim.run(1);
    sim.s.failures = 3;
    sim.advance(secs(5));
    assert_eq!(
        sim.ev(Event::Restart),
        vec![Action::StopProbes, Action::Terminate { probe: None }]
    );
    sim.advance(secs(1));
    assert_eq!(sim.exit(ExitStatus::Exited(0)), vec![Action::Spawn]);
    assert_eq!(
        sim.s.failures, 3,
        "neither counted nor reset after a short run"
    );
    sim.ev(Event::Spawned { pid: 2 });
    // After a long run the restart also resets the count.
    sim.advance(secs(3600));
    sim.ev(Event::Restart);
    sim.exit(ExitStatus::Exited(0));
    assert_eq!(sim.s.failures, 0);
}

#[test]
fn stop_while_starting_terminates_the_new_process() {
    let mut sim = Sim::new(RestartPolicy::Always);
    assert_eq!(sim.ev(Event::Start), vec![Action::Spawn]);
    assert_eq!(sim.ev(Event::Stop), vec![]);
    assert!(sim.s.stop_pending);
    assert_eq!(
        sim.ev(Event::Spawned { pid: 5 }),
        vec![Action::Terminate { probe: None }]
    );
    assert_eq!(
        sim.s.phase,
        Phase::Stopping {
            pid: 5,
            then: AfterStop::Stay
        }
    );
    assert!(!sim.s.stop_pending);
    assert_eq!(sim.exit(ExitStatus::Exited(143)), vec![]);
    assert_eq!(sim.s.phase, Phase::Stopped);

    // The same stop with a failed spawn: nothing to kill, just stopped.
    sim.ev(Event::Start);
    sim.ev(Event::Stop);
    assert_eq!(
        sim.ev(Event::SpawnFailed {
            error: "ENOENT".into()
        }),
        vec![]
    );
    assert_eq!(sim.s.phase, Phase::Stopped);

    // Stop then Start while starting: the start wins, nothing is killed.
    sim.ev(Event::Start);
    sim.ev(Event::Stop);
    sim.ev(Event::Start);
    assert_eq!(sim.ev(Event::Spawned { pid: 6 }), vec![Action::StartProbes]);
}

#[test]
fn start_while_stopping_restarts_once_gone() {
    let mut sim = Sim::new(RestartPolicy::Always);
    sim.run(1);
    sim.ev(Event::Stop);
    assert_eq!(sim.ev(Event::Start), vec![]);
    assert_eq!(
        sim.s.phase,
        Phase::Stopping {
            pid: 1,
            then: AfterStop::RestartNow
        }
    );
    assert_eq!(sim.ev(Event::Stop), vec![]);
    assert_eq!(
        sim.s.phase,
        Phase::Stopping {
            pid: 1,
            then: AfterStop::Stay
        }
    );
    assert_eq!(sim.ev(Event::Restart), vec![]);
    assert_eq!(sim.exit(ExitStatus::Exited(0)), vec![Action::Spawn]);
}

#[test]
fn operator_actions_during_backoff() {
    let mut sim = Sim::new(RestartPolicy::Always);
    sim.run(1);
    sim.s.failures = 4;
    sim.advance(secs(1));
    sim.exit(ExitStatus::Exited(1));
    assert_eq!(sim.s.state_name(), "backoff");
    // Start skips the wait but keeps the failure count.
    assert_eq!(sim.ev(Event::Start), vec![Action::Spawn]);
    assert_eq!(sim.s.failures, 5);
    // The old deadline's timer, arriving late, does nothing now.
    sim.advance(secs(60));
    assert_eq!(sim.ev(Event::Timer), vec![]);
    sim.ev(Event::Spawned { pid: 2 });
    sim.advance(secs(1));
    sim.exit(ExitStatus::Exited(1));
    // Stop in backoff: stopped at once; a late exit or timer changes nothing.
    assert_eq!(sim.ev(Event::Stop), vec![]);
    assert_eq!(sim.s.phase, Phase::Stopped);
    sim.advance(secs(3600));
    assert_eq!(sim.ev(Event::Timer), vec![]);
    assert_eq!(sim.exit(ExitStatus::Exited(1)), vec![]);
    // A fresh start forgets the crash loop.
    assert_eq!(sim.ev(Event::Restart), vec![Action::Spawn]);
    assert_eq!(sim.s.failures, 0);
}

#[test]
fn since_tracks_phase_changes_only() {
    let mut sim = Sim::new(RestartPolicy::Always);
    let t0 = sim.now;
    sim.advance(secs(1));
    sim.ev(Event::Stop); // no-op in Stopped
    assert_eq!(sim.s.since, t0);
    sim.ev(Event::Start);
    assert_eq!(sim.s.since, t0 + secs(1));
    sim.advance(secs(1));
    sim.ev(Event::Spawned { pid: 1 });
    let running_since = sim.now;
    assert_eq!(sim.s.since, running_since);
    assert_eq!(sim.s.started_at, Some(running_since));
    sim.advance(secs(1));
    sim.ev(Event::StartupPassed);
    sim.ev(Event::Readiness { ready: true });
    assert_eq!(
        sim.s.since, running_since,
        "readiness is not a phase change"
    );
    sim.ev(Event::Stop);
    sim.advance(secs(1));
    sim.ev(Event::Start); // then = RestartNow: still stopping
    assert_eq!(sim.s.since, running_since + secs(1));
}

#[test]
fn huge_backoff_does_not_overflow_the_clock() {
    let mut sim = Sim::new(RestartPolicy::Always);
    sim.s.backoff = BackoffSpec {
        initial: Duration::MAX,
        max: Duration::MAX,
        ..backoff()
    };
    sim.run(1);
    sim.s.failures = 1;
    sim.exit(ExitStatus::Exited(1));
    let until = sim.s.deadline().expect("backoff");
    assert!(until > sim.now + secs(86_400 * 365 * 100));
    assert_eq!(sim.ev(Event::Timer), vec![]);
}

/// The deadline logic against tokio's (paused) clock, as the executor uses it:
/// sleep until `deadline()`, then send `Timer` with the current time.
#[tokio::test(start_paused = true)]
async fn backoff_deadline_with_tokio_paused_clock() {
    use tokio::time::{advance, sleep_until, Instant as TokioInstant};

    let now = || TokioInstant::now().into_std();
    let s = ServiceState::new(RestartPolicy::Always, backoff(), now());
    let (s1, _) = step(s, Event::Start, now(), 0.0);
    let (mut s2, _) = step(s1, Event::Spawned { pid: 1 }, now(), 0.0);
    s2.failures = 3;
    advance(secs(1)).await;
    let (mut s, a) = step(
        s2,
        Event::Exited {
            status: ExitStatus::Exited(1),
        },
        now(),
        0.0,
    );
    assert_eq!(a, vec![Action::StopProbes]);
    let deadline = TokioInstant::from_std(s.deadline().expect("in backoff"));
    assert_eq!(deadline - TokioInstant::now(), secs(4));

    // Early wake-up (a spurious timer): ignored.
    advance(Duration::from_millis(3999)).await;
    let (s3, a) = step(s.clone(), Event::Timer, now(), 0.0);
    assert_eq!(a, vec![]);
    assert_eq!(s3, s);
    s = s3;

    // Sleeping until the deadline on the paused clock lands exactly on it.
    sleep_until(deadline).await;
    assert_eq!(TokioInstant::now(), deadline);
    let (s4, a) = step(s, Event::Timer, now(), 0.0);
    assert_eq!(a, vec![Action::Spawn]);
    assert_eq!(s4.phase, Phase::Starting);
    assert_eq!(s4.since, deadline.into_std());
}

// === properties ===

fn any_status() -> impl Strategy<Value = ExitStatus> {
    prop_oneof![
        (-1i32..=255).prop_map(ExitStatus::Exited),
        (1i32..=64, any::<bool>()).prop_map(|(signal, core)| ExitStatus::Signaled { signal, core }),
        Just(ExitStatus::Unknown),
    ]
}

fn any_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        Just(Event::Start),
        Just(Event::Stop),
        Just(Event::Restart),
        (1u32..50).prop_map(|pid| Event::Spawned { pid }),
        Just(Event::SpawnFailed {
            error: "ENOENT".into()
        }),
        any_status().prop_map(|status| Event::Exited { status }),
        prop_oneof![Just(ProbeKill::Liveness), Just(ProbeKill::Startup)]
            .prop_map(|probe| Event::ProbeFailed { probe }),
        Just(Event::StartupPassed),
        any::<bool>().prop_map(|ready| Event::Readiness { ready }),
        Just(Event::Timer),
    ]
}

fn any_policy() -> impl Strategy<Value = RestartPolicy> {
    prop_oneof![
        Just(RestartPolicy::Always),
        Just(RestartPolicy::OnFailure),
        Just(RestartPolicy::Never)
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary (even nonsensical) event sequences: never a panic, never a
    /// Spawn while a process is alive or a spawn is outstanding, and the
    /// state invariants always hold.
    #[test]
    fn arbitrary_events_never_spawn_over_a_live_process(
        policy in any_policy(),
        steps in prop::collection::vec((any_event(), 0u64..120_000, 0.0f64..1.0), 1..80),
    ) {
        let mut now = Instant::now();
        let mut s = ServiceState::new(policy, BackoffSpec::default(), now);
        for (i, (event, dt_ms, jitter)) in steps.into_iter().enumerate() {
            now += Duration::from_millis(dt_ms);
            let before = s.clone();
            let is_exit = matches!(event, Event::Exited { .. });
            let (after, actions) = step(s, event.clone(), now, jitter);
            let ctx = format!("step {i}: {:?} + {event:?}", before.phase);
            if actions.contains(&Action::Spawn) {
                prop_assert!(before.pid().is_none() || is_exit, "{}: Spawn over a live pid", ctx);
                // From Starting only once the outstanding spawn was answered.
                let answered = matches!(event, Event::Spawned { .. } | Event::SpawnFailed { .. });
                prop_assert!(before.phase != Phase::Starting || answered, "{}: second outstanding spawn", ctx);
            }
            if after.pid().is_some() && before.pid().is_some() {
                prop_assert_eq!(after.pid(), before.pid(), "{}: pid changed without an exit", ctx);
            }
            assert_invariants(&after, &actions, now, &ctx);
            prop_assert!(after.restarts >= before.restarts);
            s = after;
        }
    }

    /// A faithful executor: it spawns on Spawn, kills on Terminate, reports
    /// each outcome once, while the operator and the probes act at random.
    /// The machine's view of the pid always equals the world's, and a Spawn
    /// never happens while the world still has a process.
    #[test]
    fn simulated_executor_never_runs_two_generations(
        policy in any_policy(),
        ops in prop::collection::vec((0u8..10, any_status(), 0u64..90_000, any::<bool>()), 1..150),
    ) {
        let mut now = Instant::now();
        let mut s = ServiceState::new(policy, BackoffSpec::default(), now);
        let mut alive: Option<u32> = None; // the world's process
        let mut spawn_pending = false;
        let mut next_pid = 1u32;
        let mut spawns = 0u64;
        let mut successful_spawns = 0u64;
        for (op, status, dt_ms, flag) in ops {
            now += Duration::from_millis(dt_ms);
            let event = match op {
                0 => Event::Start,
                1 => Event::Stop,
                2 => Event::Restart,
                3 if spawn_pending && flag => {
                    spawn_pending = false;
                    alive = Some(next_pid);
                    next_pid += 1;
                    successful_spawns += 1;
                    Event::Spawned { pid: next_pid - 1 }
                }
                3 if spawn_pending => {
                    spawn_pending = false;
                    Event::SpawnFailed { error: "ENOENT".into() }
                }
                // The process dies (crash, or the end of a termination).
                4 if alive.is_some() => {
                    alive = None;
                    Event::Exited { status }
                }
                5 if alive.is_some() => Event::ProbeFailed { probe: if flag { ProbeKill::Liveness } else { ProbeKill::Startup } },
                6 if alive.is_some() => Event::StartupPassed,
                7 => Event::Readiness { ready: flag },
                // Time passes to the deadline (or a stale timer fires).
                8 => {
                    if let Some(d) = s.deadline() {
                        if flag && d > now { now = d; }
                    }
                    Event::Timer
                }
                _ => Event::Timer,
            };
            let (after, actions) = step(s, event, now, 0.5);
            for a in &actions {
                match a {
                    Action::Spawn => {
                        prop_assert!(alive.is_none(), "Spawn while pid {:?} is alive", alive);
                        prop_assert!(!spawn_pending, "Spawn while a spawn is outstanding");
                        spawn_pending = true;
                        spawns += 1;
                    }
                    Action::Terminate { .. } => prop_assert!(alive.is_some(), "Terminate with nothing alive"),
                    Action::StartProbes | Action::StopProbes => {}
                }
            }
            prop_assert_eq!(after.pid(), alive, "machine and world disagree on the pid");
            prop_assert_eq!(after.phase == Phase::Starting, spawn_pending, "Starting iff a spawn is outstanding");
            assert_invariants(&after, &actions, now, "sim");
            s = after;
        }
        prop_assert!(spawns >= successful_spawns);
        prop_assert_eq!(s.restarts, successful_spawns.saturating_sub(1));
    }
}
