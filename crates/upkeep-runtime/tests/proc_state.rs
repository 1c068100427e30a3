//! The state file: atomic save, load, corrupt and foreign files rejected,
//! liveness by pid + start time.

mod proc_common;

use proc_common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use upkeep_core::ExitStatus;
use upkeep_runtime::reaper::process_start_time;
use upkeep_runtime::spawn::SpawnRequest;
use upkeep_runtime::state::{load, save, ServiceRecord, StateFile, STATE_FILE, STATE_VERSION};

fn record(name: &str, pid: u32, start_time: u64) -> ServiceRecord {
    ServiceRecord {
        name: name.to_string(),
        pid,
        start_time,
        spec_hash: "abc123".into(),
        exec_hash: String::new(),
        pgid: pid,
        started_at_unix_ms: 1_700_000_000_000,
        restarts: 3,
        ready: true,
        started: true,
        last_exit: Some(ExitStatus::Signaled {
            signal: 9,
            core: false,
        }),
        cgroup: Some("/upkeep.slice/etcd-node1_etcd".into()),
    }
}

fn sample() -> StateFile {
    let mut services = BTreeMap::new();
    for (i, name) in ["etcd-node1/etcd", "kubelet"].iter().enumerate() {
        let mut r = record(name, 100 + i as u32, 5000 + i as u64);
        if i == 1 {
            r.last_exit = Some(ExitStatus::Exited(1));
            r.cgroup = None;
        }
        services.insert(name.to_string(), r);
    }
    StateFile::new(services)
}

#[test]
fn round_trip_is_exact_and_atomic() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(load(dir.path()).unwrap(), None, "no file yet");
    let state = sample();
    save(dir.path(), &state).unwrap();
    assert_eq!(load(dir.path()).unwrap(), Some(state.clone()));
    let path = dir.path().join(STATE_FILE);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Only the final file is left behind.
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec![STATE_FILE.to_string()]);
    // Overwrite.
    let mut next = state;
    next.services.remove("kubelet");
    save(dir.path(), &next).unwrap();
    assert_eq!(load(dir.path()).unwrap(), Some(next));
}

#[test]
fn corrupt_and_foreign_files_are_errors_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(STATE_FILE);
    let good = serde_json::to_string(&sample()).unwrap();
    let cases: Vec<(String, &str)> = vec![
        ("{not json".into(), "not valid JSON"),
        (good[..good.len() / 2].to_string(), "not valid JSON"),
        ("\u{0}\u{1}binary".into(), "not valid JSON"),
        (good.replace("\"version\":1", "\"version\":2"), "version 2"),
        (
            good.replace("\"version\":1", "\"version\":\"1\""),
            "no version",
        ),
        ("{\"services\":{}}".into(), "no version"),
        (
            format!("{{\"version\":{STATE_VERSION},\"services\":[1,2]}}"),
            "unexpected content",
        ),
        (
            good.replace("\"pid\":100", "\"pid\":-5"),
            "unexpected content",
        ),
        (
            good.replace("\"name\":\"kubelet\"", "\"name\":\"other\""),
            "names service",
        ),
    ];
    for (text, expect) in cases {
        fs::write(&path, &text).unwrap();
        let err = load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains(expect),
            "{expect:?} not in {err:?} for {text:?}"
        );
        assert!(err.contains(&path.display().to_string()), "{err}");
    }
    // Too big to be ours.
    fs::write(&path, vec![b' '; (16 << 20) + 10]).unwrap();
    assert!(load(dir.path())
        .unwrap_err()
        .to_string()
        .contains("larger than"));
    // Unreadable (a directory in its place).
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    assert!(load(dir.path()).is_err());
}

#[test]
fn save_into_a_missing_dir_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = save(&dir.path().join("missing"), &sample()).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[tokio::test]
async fn still_alive_checks_pid_and_start_time() {
    let env = std_env();
    let argv = vec!["sleep".to_string(), "30".to_string()];
    let sp = SpawnRequest::new(&argv, &env).spawn(&reaper()).unwrap();
    let _c = Cleanup::pids(vec![sp.pid]);
    let start = process_start_time(sp.pid).unwrap();
    let live = record("svc", sp.pid, start);
    assert!(live.still_alive());
    // Same pid, different start time: a reused pid, not our process.
    assert!(!record("svc", sp.pid, start + 1).still_alive());
    assert!(!record("svc", sp.pid, 0).still_alive());
    kill(sp.pid);
    exit_of(sp).await;
    assert!(!live.still_alive(), "gone");
    assert!(!record("svc", u32::MAX, 1).still_alive());
}
