//! Exec probes through the real reaper: real commands, real process groups,
//! real kills. The tests run one at a time (a shared lock) so that the
//! reaper's count of pending children belongs to one test.

mod probe_support;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use probe_support::ctx;
use upkeep_core::probe::ProbeResult;
use upkeep_runtime::probe::{run_once, ExecContext, MAX_OUTPUT};
use upkeep_spec::ProbeHandler;

static SERIAL: Mutex<()> = Mutex::new(());

/// Runs `body` on a fresh runtime, one test at a time, with a hard deadline.
fn serial<F: std::future::Future<Output = ()>>(body: impl FnOnce() -> F) {
    let _lock = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), body())
            .await
            .expect("test deadline");
    });
}

fn exec(argv: &[&str]) -> ProbeHandler {
    ProbeHandler::Exec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
    }
}

fn sh(script: &str) -> ProbeHandler {
    exec(&["sh", "-c", script])
}

async fn run(h: &ProbeHandler, timeout: Duration, ctx: &ExecContext) -> ProbeResult {
    run_once(h, timeout, ctx).await
}

/// True while `/proc/<pid>` exists (running or zombie).
fn exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

async fn wait_gone(pid: u32, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if !exists(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    !exists(pid)
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

const T: Duration = Duration::from_secs(5);

#[test]
fn exit_codes_decide() {
    serial(|| async {
        let ctx = ctx();
        assert_eq!(run(&exec(&["true"]), T, &ctx).await, ProbeResult::Success);
        assert_eq!(
            run(&exec(&["false"]), T, &ctx).await,
            ProbeResult::Failure("exit code 1".into())
        );
        let r = run(
            &sh("echo; echo first line; echo second >&2; exit 3"),
            T,
            &ctx,
        )
        .await;
        assert_eq!(r, ProbeResult::Failure("exit code 3: first line".into()));
        let r = run(&sh("echo only on stderr >&2; exit 2"), T, &ctx).await;
        assert_eq!(
            r,
            ProbeResult::Failure("exit code 2: only on stderr".into())
        );
        let r = run(&sh("kill -TERM $$"), T, &ctx).await;
        assert_eq!(r, ProbeResult::Failure("killed by SIGTERM".into()));
    });
}

#[test]
fn commands_that_cannot_run_fail() {
    serial(|| async {
        let ctx = ctx();
        match run(&exec(&["/nonexistent/probe-binary"]), T, &ctx).await {
            ProbeResult::Failure(msg) => assert!(msg.contains("cannot run probe command"), "{msg}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run(&exec(&[]), T, &ctx).await,
            ProbeResult::Failure(_)
        ));
        let mut bad_dir = ctx.clone();
        bad_dir.working_dir = PathBuf::from("/nonexistent-dir");
        assert!(matches!(
            run(&exec(&["true"]), T, &bad_dir).await,
            ProbeResult::Failure(_)
        ));
    });
}

#[test]
fn timeout_kills_and_reaps_the_whole_group() {
    serial(|| async {
        let ctx = ctx();
        let dir = tempfile::tempdir().unwrap();
        let (leader, child) = (dir.path().join("leader"), dir.path().join("child"));
        // The shell starts a background sleep in its group, then waits.
        let script = format!(
            "echo $$ > {l}; sleep 30 & echo $! > {c}; wait",
            l = leader.display(),
            c = child.display()
        );
        let timeout = Duration::from_secs(1);
        let begin = Instant::now();
        let r = run(&sh(&script), timeout, &ctx).await;
        let took = begin.elapsed();
        assert_eq!(r, ProbeResult::Failure("timeout after 1s".into()));
        assert!(
            took >= timeout && took < timeout + Duration::from_millis(800),
            "took {took:?}"
        );
        let (leader, child) = (read_pid(&leader), read_pid(&child));
        // The leader's status was awaited before run_once returned: no zombie.
        assert!(
            !exists(leader),
            "probe leader {leader} still exists (zombie?)"
        );
        // The background child was killed with the group and reaped as an orphan.
        assert!(
            wait_gone(child, Duration::from_secs(3)).await,
            "grandchild {child} survived"
        );
    });
}

#[test]
fn plain_sleep_is_killed_at_the_timeout() {
    serial(|| async {
        let ctx = ctx();
        let begin = Instant::now();
        let r = run(&exec(&["sleep", "10"]), Duration::from_secs(1), &ctx).await;
        assert_eq!(r, ProbeResult::Failure("timeout after 1s".into()));
        assert!(
            begin.elapsed() < Duration::from_secs(2),
            "took {:?}",
            begin.elapsed()
        );
    });
}

#[test]
fn leftover_holding_the_output_is_killed_and_exit_status_counts() {
    serial(|| async {
        let ctx = ctx();
        let dir = tempfile::tempdir().unwrap();
        let child = dir.path().join("child");
        let script = format!("sleep 30 & echo $! > {}; exit 0", child.display());
        let timeout = Duration::from_secs(1);
        let r = run(&sh(&script), timeout, &ctx).await;
        // The shell exited 0; its background sleep kept the pipe open until the timeout.
        assert_eq!(r, ProbeResult::Success);
        assert!(
            wait_gone(read_pid(&child), Duration::from_secs(3)).await,
            "leftover survived"
        );
    });
}

#[test]
fn sees_the_given_environment_only() {
    serial(|| async {
        let mut ctx = ctx();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env.txt");
        ctx.env.insert("PROBE_FOO".into(), "bar baz".into());
        ctx.env.insert("OUT".into(), out.display().to_string());
        assert_eq!(
            run(&sh("env > \"$OUT\""), T, &ctx).await,
            ProbeResult::Success
        );
        let text = std::fs::read_to_string(&out).unwrap();
        let keys: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            .collect();
        assert!(text.lines().any(|l| l == "PROBE_FOO=bar baz"), "{text}");
        assert!(
            text.lines().any(|l| l.starts_with("PATH=/usr/local/sbin")),
            "{text}"
        );
        // Nothing of ours leaks in (the shell may add PWD, SHLVL, OLDPWD and _).
        for (k, _) in std::env::vars() {
            if !ctx.env.contains_key(&k) && !["PWD", "SHLVL", "OLDPWD", "_"].contains(&k.as_str()) {
                assert!(
                    !keys.contains(&k.as_str()),
                    "our {k} leaked into the probe: {text}"
                );
            }
        }
        // And the test runner's own environment is not empty, so the check means something.
        assert!(std::env::vars().count() > 0);
    });
}

#[test]
fn runs_in_the_working_dir_and_own_process_group() {
    serial(|| async {
        let mut ctx = ctx();
        let dir = tempfile::tempdir().unwrap();
        let canon = dir.path().canonicalize().unwrap();
        ctx.working_dir = canon.clone();
        let script = format!(
            "test \"$(pwd -P)\" = '{}' && test \"$(ps -o pgid= -p $$ | tr -d ' ')\" = \"$$\"",
            canon.display()
        );
        assert_eq!(run(&sh(&script), T, &ctx).await, ProbeResult::Success);
    });
}

#[test]
fn runs_as_the_given_user() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (it switches to uid/gid 65534)"
    );
    serial(|| async {
        let mut ctx = ctx();
        ctx.uid = Some(65534);
        ctx.gid = Some(65534);
        let r = run(&sh("test \"$(id -u)\" = 65534 && test \"$(id -g)\" = 65534 && test \"$(id -G)\" = 65534"), T, &ctx).await;
        assert_eq!(r, ProbeResult::Success);
    });
}

#[test]
fn output_is_capped() {
    serial(|| async {
        let ctx = ctx();
        // 1 MiB on one line, then a failing exit: only the first 10 KiB are kept,
        // and the writer is never blocked by a full pipe.
        let r = run(
            &sh("head -c 1048576 /dev/zero | tr '\\0' x; exit 4"),
            T,
            &ctx,
        )
        .await;
        match r {
            ProbeResult::Failure(msg) => {
                assert!(
                    msg.starts_with("exit code 4: xxx"),
                    "{}",
                    &msg[..40.min(msg.len())]
                );
                assert!(
                    msg.len() <= MAX_OUTPUT + 20,
                    "message of {} bytes",
                    msg.len()
                );
            }
            other => panic!("{other:?}"),
        }
    });
}

#[test]
fn many_probes_at_once_leave_nothing_behind() {
    serial(|| async {
        let ctx = ctx();
        let before = ctx.reaper.pending();
        let mut set = tokio::task::JoinSet::new();
        for i in 0..20 {
            let ctx = ctx.clone();
            set.spawn(async move {
                let h = if i % 2 == 0 {
                    exec(&["true"])
                } else {
                    exec(&["sleep", "5"])
                };
                (i, run_once(&h, Duration::from_millis(500), &ctx).await)
            });
        }
        while let Some(res) = set.join_next().await {
            let (i, r) = res.unwrap();
            if i % 2 == 0 {
                assert_eq!(r, ProbeResult::Success);
            } else {
                assert_eq!(r, ProbeResult::Failure("timeout after 500ms".into()));
            }
        }
        assert_eq!(
            ctx.reaper.pending(),
            before,
            "every probe's status was collected"
        );
    });
}

#[test]
fn stopping_the_worker_kills_an_exec_probe_in_flight() {
    use upkeep_runtime::probe::{spawn_worker, Initial};
    use upkeep_spec::{Probe, Probes};
    serial(|| async {
        let ctx = ctx();
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!(
            "echo $$ > {}.tmp && mv {0}.tmp {0} && exec sleep 30",
            pidfile.display()
        );
        let probe = Probe {
            handler: sh(&script),
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(60),
            timeout: Duration::from_secs(20),
            success_threshold: 1,
            failure_threshold: 3,
            termination_grace: None,
        };
        let probes = Probes {
            liveness: Some(probe),
            ..Default::default()
        };
        let (tx, _rx) = tokio::sync::mpsc::unbounded_channel();
        let worker = spawn_worker(
            probes,
            tokio::time::Instant::now(),
            ctx.clone(),
            Initial::default(),
            tx,
        );
        let end = Instant::now() + Duration::from_secs(5);
        while !pidfile.exists() {
            assert!(Instant::now() < end, "the exec probe never started");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let pid = read_pid(&pidfile);
        assert!(exists(pid));
        worker.stop();
        assert!(
            wait_gone(pid, Duration::from_secs(3)).await,
            "probe process {pid} outlived its worker"
        );
    });
}
