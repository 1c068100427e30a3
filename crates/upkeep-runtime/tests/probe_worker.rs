//! The probe worker's timing, gating and thresholds, with tokio's paused
//! clock (time jumps whenever every task waits) and real HTTP servers on
//! loopback in the same runtime.

mod probe_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use probe_support::*;
use tokio::sync::mpsc;
use tokio::time::Instant;
use upkeep_core::probe::ProbeResult;
use upkeep_runtime::probe::{spawn_worker, Initial, ProbeKind, ProbeReport, ProbeWorker};
use upkeep_spec::{Probe, ProbeHandler, Probes, Scheme};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn http_probe(
    port: u16,
    path: &str,
    period: u64,
    timeout: u64,
    success: u32,
    failure: u32,
) -> Probe {
    Probe {
        handler: ProbeHandler::Http {
            scheme: Scheme::Http,
            host: "127.0.0.1".into(),
            port,
            path: path.into(),
            headers: vec![],
        },
        initial_delay: Duration::ZERO,
        period: secs(period),
        timeout: secs(timeout),
        success_threshold: success,
        failure_threshold: failure,
        termination_grace: None,
    }
}

/// A report and when (since the test's start) it arrived.
#[derive(Debug, Clone)]
struct At {
    t: Duration,
    r: ProbeReport,
}

struct Harness {
    t0: Instant,
    rx: mpsc::UnboundedReceiver<ProbeReport>,
    worker: Option<ProbeWorker>,
}

impl Harness {
    fn start(probes: Probes, initial: Initial) -> Harness {
        let (tx, rx) = mpsc::unbounded_channel();
        let t0 = Instant::now();
        let worker = spawn_worker(probes, t0, ctx(), initial, tx);
        Harness {
            t0,
            rx,
            worker: Some(worker),
        }
    }

    /// The next report (time advances as needed), at most `within` from now.
    async fn next(&mut self, within: Duration) -> Option<At> {
        match tokio::time::timeout(within, self.rx.recv()).await {
            Ok(Some(r)) => Some(At {
                t: self.t0.elapsed(),
                r,
            }),
            _ => None,
        }
    }

    /// Every report until `until` (test time since start).
    async fn collect_until(&mut self, until: Duration) -> Vec<At> {
        let mut out = Vec::new();
        loop {
            let now = self.t0.elapsed();
            if now >= until {
                return out;
            }
            match self.next(until - now).await {
                Some(a) => out.push(a),
                None => return out,
            }
        }
    }
}

fn of(kind: ProbeKind, reports: &[At]) -> Vec<At> {
    reports
        .iter()
        .filter(|a| a.r.kind == kind)
        .cloned()
        .collect()
}

fn times(reports: &[At]) -> Vec<u64> {
    reports.iter().map(|a| a.t.as_secs()).collect()
}

fn is_synthetic(a: &At, kind: ProbeKind) -> bool {
    a.r == ProbeReport {
        kind,
        result: ProbeResult::Success,
        duration: Duration::ZERO,
        flip: Some(true),
    }
}

#[tokio::test(start_paused = true)]
async fn without_startup_and_readiness_probes_synthetic_flips_come_first() {
    let live = status_server(200).await;
    let probes = Probes {
        liveness: Some(http_probe(live.port(), "/", 10, 1, 1, 3)),
        ..Default::default()
    };
    let mut h = Harness::start(probes, Initial::default());
    let first = h.next(secs(1)).await.unwrap();
    let second = h.next(secs(1)).await.unwrap();
    assert!(is_synthetic(&first, ProbeKind::Startup), "{first:?}");
    assert!(is_synthetic(&second, ProbeKind::Readiness), "{second:?}");
    let reports = h.collect_until(secs(35)).await;
    // Liveness runs at once, then every period; its initial state is success: no flip.
    assert_eq!(times(&reports), vec![0, 10, 20, 30]);
    assert!(reports
        .iter()
        .all(|a| a.r.kind == ProbeKind::Liveness && a.r.result == ProbeResult::Success));
    assert!(reports.iter().all(|a| a.r.flip.is_none()));
    assert_eq!(live.count(), 4);
}

#[tokio::test(start_paused = true)]
async fn liveness_flips_after_failure_threshold_then_stops() {
    let bad = status_server(500).await;
    let probes = Probes {
        liveness: Some(http_probe(bad.port(), "/", 10, 1, 1, 3)),
        ..Default::default()
    };
    let mut h = Harness::start(probes, Initial::default());
    let all = h.collect_until(secs(120)).await;
    let live = of(ProbeKind::Liveness, &all);
    assert_eq!(times(&live), vec![0, 10, 20]);
    assert_eq!(
        live.iter().map(|a| a.r.flip).collect::<Vec<_>>(),
        vec![None, None, Some(false)]
    );
    assert!(matches!(&live[2].r.result, ProbeResult::Failure(m) if m.contains("500")));
    // On hold after the flip: no further attempts.
    assert_eq!(bad.count(), 3);
    assert!(h.worker.as_ref().unwrap().is_finished());
}

#[tokio::test(start_paused = true)]
async fn initial_delay_counts_from_process_start_on_the_period_grid() {
    let ok = status_server(200).await;
    let mut probe = http_probe(ok.port(), "/", 10, 1, 1, 3);
    probe.initial_delay = secs(15);
    let probes = Probes {
        liveness: Some(probe),
        ..Default::default()
    };
    let mut h = Harness::start(probes, Initial::default());
    let live = of(ProbeKind::Liveness, &h.collect_until(secs(45)).await);
    // Ticks at 0 and 10 are inside the delay; 20 is the first tick after it (kubelet).
    assert_eq!(times(&live), vec![20, 30, 40]);
}

#[tokio::test(start_paused = true)]
async fn startup_gates_liveness_and_readiness() {
    // The startup endpoint fails 3 times, then succeeds.
    let (start_srv, start_status) = switch_server(500).await;
    let live = status_server(200).await;
    let ready = status_server(200).await;
    let probes = Probes {
        startup: Some(http_probe(start_srv.port(), "/startup", 10, 1, 1, 30)),
        liveness: Some(http_probe(live.port(), "/live", 5, 1, 1, 3)),
        readiness: Some(http_probe(ready.port(), "/ready", 5, 1, 1, 3)),
    };
    let mut h = Harness::start(probes, Initial::default());
    let early = h.collect_until(secs(25)).await;
    assert_eq!(times(&early), vec![0, 10, 20]);
    assert!(early
        .iter()
        .all(|a| a.r.kind == ProbeKind::Startup && a.r.flip.is_none()));
    assert_eq!(
        (live.count(), ready.count()),
        (0, 0),
        "gated probes ran before startup passed"
    );

    start_status.store(200, Ordering::SeqCst);
    let rest = h.collect_until(secs(42)).await;
    let startup = of(ProbeKind::Startup, &rest);
    assert_eq!(times(&startup), vec![30]);
    assert_eq!(startup[0].r.flip, Some(true));
    // Readiness runs as soon as startup passed and flips to ready.
    let readiness = of(ProbeKind::Readiness, &rest);
    assert_eq!(readiness[0].t, secs(30));
    assert_eq!(readiness[0].r.flip, Some(true));
    assert!(readiness.len() >= 3, "{readiness:?}");
    // Liveness runs on its own grid once started; never before the startup flip.
    let liveness = of(ProbeKind::Liveness, &rest);
    assert!(
        !liveness.is_empty() && liveness[0].t >= secs(30),
        "{liveness:?}"
    );
    assert!(liveness
        .iter()
        .all(|a| a.r.result == ProbeResult::Success && a.r.flip.is_none()));
    let flip_pos = rest
        .iter()
        .position(|a| a.r.kind == ProbeKind::Startup)
        .unwrap();
    assert!(
        rest[..flip_pos].is_empty(),
        "reports before the startup flip: {:?}",
        &rest[..flip_pos]
    );
    // The startup task is done after its flip.
    assert_eq!(start_srv.count(), 4);
}

#[tokio::test(start_paused = true)]
async fn startup_without_readiness_probe_reports_synthetic_readiness_after_it() {
    let ok = status_server(200).await;
    let mut startup = http_probe(ok.port(), "/", 10, 1, 1, 3);
    startup.initial_delay = secs(3);
    let probes = Probes {
        startup: Some(startup),
        ..Default::default()
    };
    let mut h = Harness::start(probes, Initial::default());
    let a = h.next(secs(30)).await.unwrap();
    let b = h.next(secs(30)).await.unwrap();
    assert_eq!(
        (a.r.kind, a.r.flip, a.t),
        (ProbeKind::Startup, Some(true), secs(10))
    );
    assert!(is_synthetic(&b, ProbeKind::Readiness), "{b:?}");
    assert!(h.next(secs(100)).await.is_none());
}

#[tokio::test(start_paused = true)]
async fn startup_failure_stops_everything() {
    let bad = status_server(503).await;
    let live = status_server(200).await;
    let probes = Probes {
        startup: Some(http_probe(bad.port(), "/", 10, 1, 1, 2)),
        liveness: Some(http_probe(live.port(), "/", 10, 1, 1, 3)),
        readiness: Some(http_probe(live.port(), "/", 10, 1, 1, 3)),
    };
    let mut h = Harness::start(probes, Initial::default());
    let all = h.collect_until(secs(100)).await;
    assert_eq!(times(&all), vec![0, 10]);
    assert_eq!(all[1].r.flip, Some(false));
    assert_eq!(live.count(), 0);
    assert!(h.worker.as_ref().unwrap().is_finished());
}

#[tokio::test(start_paused = true)]
async fn readiness_flips_both_ways() {
    let (srv, status) = switch_server(200).await;
    let probes = Probes {
        readiness: Some(http_probe(srv.port(), "/", 1, 1, 2, 3)),
        ..Default::default()
    };
    let mut h = Harness::start(probes, Initial::default());
    assert!(is_synthetic(
        &h.next(secs(1)).await.unwrap(),
        ProbeKind::Startup
    ));
    let up = h.collect_until(secs(3)).await; // attempts at 0, 1, 2
    assert_eq!(
        up.iter().map(|a| a.r.flip).collect::<Vec<_>>(),
        vec![None, Some(true), None]
    );
    status.store(500, Ordering::SeqCst);
    let down = h.collect_until(secs(6)).await; // 3, 4, 5
    assert_eq!(times(&down), vec![3, 4, 5]);
    assert_eq!(
        down.iter().map(|a| a.r.flip).collect::<Vec<_>>(),
        vec![None, None, Some(false)]
    );
    status.store(200, Ordering::SeqCst);
    let again = h.collect_until(secs(9)).await; // 6, 7, 8
    assert_eq!(
        again.iter().map(|a| a.r.flip).collect::<Vec<_>>(),
        vec![None, Some(true), None]
    );
    assert!(again.iter().all(|a| a.r.kind == ProbeKind::Readiness));
}

#[tokio::test(start_paused = true)]
async fn adopted_ready_process_starts_ready() {
    let (srv, status) = switch_server(200).await;
    let probes = Probes {
        readiness: Some(http_probe(srv.port(), "/", 1, 1, 1, 2)),
        ..Default::default()
    };
    let mut h = Harness::start(probes, Initial { ready: true });
    assert!(is_synthetic(
        &h.next(secs(1)).await.unwrap(),
        ProbeKind::Startup
    ));
    let ok = h.collect_until(secs(2)).await;
    assert!(ok.iter().all(|a| a.r.flip.is_none()), "{ok:?}");
    status.store(500, Ordering::SeqCst);
    let down = h.collect_until(secs(4)).await;
    assert_eq!(
        down.iter().map(|a| a.r.flip).collect::<Vec<_>>(),
        vec![None, Some(false)]
    );
}

#[tokio::test(start_paused = true)]
async fn slow_liveness_does_not_delay_readiness() {
    let (hang, accepted) = hang_server().await;
    let ok = status_server(200).await;
    let probes = Probes {
        liveness: Some(http_probe(hang.port(), "/", 10, 5, 1, 3)),
        readiness: Some(http_probe(ok.port(), "/", 1, 1, 1, 3)),
        startup: None,
    };
    let mut h = Harness::start(probes, Initial::default());
    assert!(is_synthetic(
        &h.next(secs(1)).await.unwrap(),
        ProbeKind::Startup
    ));
    let all = h.collect_until(secs(6)).await;
    let readiness = of(ProbeKind::Readiness, &all);
    assert_eq!(times(&readiness), vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(readiness[0].r.flip, Some(true));
    let liveness = of(ProbeKind::Liveness, &all);
    assert_eq!(liveness.len(), 1, "{liveness:?}");
    assert_eq!(liveness[0].t, secs(5));
    assert_eq!(
        liveness[0].r.result,
        ProbeResult::Failure("timeout after 5s".into())
    );
    assert_eq!(liveness[0].r.duration, secs(5));
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    // The readiness attempts at 1..=4 arrived while the liveness attempt hung.
    let live_pos = all
        .iter()
        .position(|a| a.r.kind == ProbeKind::Liveness)
        .unwrap();
    assert!(of(ProbeKind::Readiness, &all[..live_pos]).len() >= 5);
}

#[tokio::test(start_paused = true)]
async fn errors_count_neither_way_and_keep_probing() {
    let unresolved = Probe {
        handler: ProbeHandler::Unresolved {
            reason: "no port named \"probe\"".into(),
        },
        initial_delay: Duration::ZERO,
        period: secs(10),
        timeout: secs(1),
        success_threshold: 1,
        failure_threshold: 1,
        termination_grace: None,
    };
    let probes = Probes {
        liveness: Some(unresolved.clone()),
        readiness: Some(unresolved),
        startup: None,
    };
    let mut h = Harness::start(probes, Initial::default());
    assert!(is_synthetic(
        &h.next(secs(1)).await.unwrap(),
        ProbeKind::Startup
    ));
    let all = h.collect_until(secs(25)).await;
    assert_eq!(all.len(), 6, "{all:?}");
    assert!(all
        .iter()
        .all(|a| matches!(a.r.result, ProbeResult::Error(_)) && a.r.flip.is_none()));
}

#[tokio::test(start_paused = true)]
async fn stop_aborts_all_probe_tasks() {
    let srv = status_server(200).await;
    let probes = Probes {
        liveness: Some(http_probe(srv.port(), "/", 1, 1, 1, 3)),
        readiness: Some(http_probe(srv.port(), "/", 1, 1, 1, 3)),
        startup: None,
    };
    let mut h = Harness::start(probes, Initial::default());
    let before = h.collect_until(secs(3)).await;
    assert!(before.len() >= 6);
    h.worker.take().unwrap().stop();
    // Every sender is gone once the tasks are aborted: the channel ends.
    let mut leftover = 0;
    while let Ok(Some(_)) = tokio::time::timeout(secs(5), h.rx.recv()).await {
        leftover += 1;
    }
    assert!(leftover <= 2, "{leftover} reports after stop");
    let count = srv.count();
    tokio::time::sleep(secs(30)).await;
    assert_eq!(srv.count(), count, "probes ran after stop");
}
