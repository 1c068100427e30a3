//! SpawnRequest with real processes: clean env, PATH from the service's env,
//! own session/process group, default signal state, stdin, output fds,
//! uid/gid drop, process-group signalling, hostPath volumes.

mod proc_common;

use proc_common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Duration;
use upkeep_core::ExitStatus;
use upkeep_runtime::reaper::{pidfd_signal, process_stat};
use upkeep_runtime::spawn::{group_alive, signal_group, Output, SpawnRequest};
use upkeep_runtime::volumes::prepare_volumes;
use upkeep_spec::{HostPathType, HostPathVolume};

/// Runs argv with stdout+stderr to a file; returns (status, output).
async fn run(req: &SpawnRequest<'_>) -> (ExitStatus, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let file = fs::File::create(&path).unwrap();
    let req = SpawnRequest {
        stdout: Output::Fd(file.as_fd()),
        stderr: Output::Fd(file.as_fd()),
        ..req.clone()
    };
    let sp = req.spawn(&reaper()).unwrap();
    let st = exit_of(sp).await;
    (st, read(&path))
}

fn argv(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn environment_is_exactly_the_given_one() {
    // Something in upkeep's own environment that must not leak.
    std::env::set_var("UPKEEP_TEST_LEAK", "leaked");
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), "/usr/bin:/bin".to_string());
    env.insert("FOO".to_string(), "bar baz".to_string());
    let a = argv(&["env"]);
    let (st, out) = run(&SpawnRequest::new(&a, &env)).await;
    assert_eq!(st, ExitStatus::Exited(0));
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(lines, vec!["FOO=bar baz", "PATH=/usr/bin:/bin"]);
}

#[tokio::test]
async fn program_is_resolved_against_the_services_path() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("hello-upkeep");
    fs::write(&bin, "#!/bin/sh\necho \"hi $0 $1\"\n").unwrap();
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
    let mut env = BTreeMap::new();
    env.insert(
        "PATH".to_string(),
        format!("/nonexistent:{}", dir.path().display()),
    );
    let a = argv(&["hello-upkeep", "arg1"]);
    let (st, out) = run(&SpawnRequest::new(&a, &env)).await;
    assert_eq!(st, ExitStatus::Exited(0));
    // argv[0] is kept as given; the shell sees the resolved script path.
    assert!(out.starts_with("hi "), "{out}");
    assert!(out.trim_end().ends_with(" arg1"), "{out}");

    // `env` is in upkeep's PATH but not in this service's.
    let a = argv(&["env"]);
    let err = SpawnRequest::new(&a, &env).spawn(&reaper()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::NotFound);
    assert!(err.to_string().contains("\"env\""), "{err}");
    assert!(err.to_string().contains("/nonexistent"), "{err}");
}

#[tokio::test]
async fn child_is_session_and_group_leader_with_clean_fds_and_stdin() {
    let env = std_env();
    let a = argv(&["sleep", "30"]);
    let sp = SpawnRequest::new(&a, &env).spawn(&reaper()).unwrap();
    let _c = Cleanup::pids(vec![sp.pid]);
    let st = process_stat(sp.pid).unwrap();
    assert_eq!(st.pgrp, sp.pid, "own process group");
    assert_eq!(st.session, sp.pid, "own session");
    let our = process_stat(std::process::id()).unwrap();
    assert_ne!(st.session, our.session);
    // stdin is /dev/null; only 0, 1, 2 are open (no pidfd, lock or cgroup fd leaked).
    wait_until("exec done", || {
        fs::read_link(format!("/proc/{}/exe", sp.pid))
            .map(|p| p.to_string_lossy().contains("sleep"))
            .unwrap_or(false)
    })
    .await;
    assert_eq!(
        fs::read_link(format!("/proc/{}/fd/0", sp.pid)).unwrap(),
        PathBuf::from("/dev/null")
    );
    // Right after the exec the dynamic loader has the libraries it maps
    // open for a moment (fd 3 on a busy machine): a leaked descriptor stays,
    // the loader's goes, so wait (with a deadline) for exactly 0, 1, 2.
    let fds = || {
        let mut fds: Vec<String> = fs::read_dir(format!("/proc/{}/fd", sp.pid))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        fds.sort();
        fds
    };
    wait_until("only 0, 1 and 2 open in the service", || {
        fds() == ["0", "1", "2"]
    })
    .await;
    assert!(pidfd_signal(&sp.pidfd, libc::SIGKILL).unwrap());
    exit_of(sp).await;
}

#[tokio::test]
async fn signal_mask_and_dispositions_are_reset() {
    // Block SIGUSR1 and ignore SIGUSR2 in the spawning thread: the child must
    // start with neither.
    let pid = std::thread::spawn(|| {
        block_usr1_ignore_usr2();
        let env = std_env();
        let a = argv(&["sleep", "30"]);
        let sp = SpawnRequest::new(&a, &env).spawn(&reaper()).unwrap();
        std::mem::forget(sp.pidfd);
        sp.pid
    })
    .join()
    .unwrap();
    let _c = Cleanup::pids(vec![pid]);
    default_sigusr2();
    assert_eq!(status_field(pid, "SigBlk:"), "0000000000000000");
    assert_eq!(status_field(pid, "SigIgn:"), "0000000000000000");
    kill(pid);
}

#[tokio::test]
async fn output_goes_to_the_given_fds() {
    let env = std_env();
    let a = sh("echo to-stdout; echo to-stderr >&2; exit 4");
    let (st, out) = run(&SpawnRequest::new(&a, &env)).await;
    assert_eq!(st, ExitStatus::Exited(4));
    assert_eq!(out, "to-stdout\nto-stderr\n");
}

#[tokio::test]
async fn runs_as_the_given_uid_and_gid() {
    require_root();
    let env = std_env();
    let a = sh("id -u; id -g; id -G");
    let mut req = SpawnRequest::new(&a, &env);
    req.uid = Some(65534);
    req.gid = Some(65533);
    req.working_dir = Some(std::path::Path::new("/"));
    let (st, out) = run(&req).await;
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
    assert_eq!(out, "65534\n65533\n65533\n");

    // uid only: the passwd primary group (nobody -> nogroup on Debian), or 0.
    let mut req = SpawnRequest::new(&a, &env);
    req.uid = Some(65534);
    let (st, out) = run(&req).await;
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
    let expected_gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(65534))
        .unwrap()
        .map(|u| u.gid.as_raw())
        .unwrap_or(0);
    assert_eq!(out, format!("65534\n{expected_gid}\n{expected_gid}\n"));
}

#[tokio::test]
async fn signal_group_kills_the_whole_group_even_term_ignorers() {
    let env = std_env();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("pid");
    // Leader and a background child both ignore SIGTERM.
    let a = vec![
        "sh".to_string(),
        "-c".to_string(),
        "trap '' TERM; sleep 30 & echo $! > \"$0\"; wait".to_string(),
        out.display().to_string(),
    ];
    let sp = SpawnRequest::new(&a, &env).spawn(&reaper()).unwrap();
    let pgid = sp.pid;
    let _c = Cleanup::groups(vec![pgid]);
    wait_until("child pid written", || read(&out).ends_with('\n')).await;
    let child: u32 = read(&out).trim().parse().unwrap();
    assert_eq!(process_stat(child).unwrap().pgrp, pgid);
    assert!(group_alive(pgid));

    assert!(signal_group(pgid, libc::SIGTERM).unwrap());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(group_alive(pgid), "SIGTERM is ignored by the group");
    assert!(proc_exists(child));

    assert!(signal_group(pgid, libc::SIGKILL).unwrap());
    assert_eq!(
        exit_of(sp).await,
        ExitStatus::Signaled {
            signal: libc::SIGKILL,
            core: false
        }
    );
    // The background child was re-parented to us and reaped too.
    wait_until("group empty", || !group_alive(pgid)).await;
    assert!(!proc_exists(child));
    assert!(
        !signal_group(pgid, libc::SIGKILL).unwrap(),
        "ESRCH -> false"
    );
}

#[test]
fn volumes_are_prepared_like_the_kubelet() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let vol = |p: PathBuf, kind| HostPathVolume::at_own_path(p, kind);
    // Created: nested directory and a file with missing parents.
    let new_dir = d.join("a/b/c");
    let new_file = d.join("x/y/file.conf");
    let sock_path = d.join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock_path).unwrap();
    fs::write(d.join("existing"), "keep").unwrap();
    let ok = vec![
        vol(new_dir.clone(), HostPathType::DirectoryOrCreate),
        vol(new_dir.clone(), HostPathType::DirectoryOrCreate),
        vol(new_file.clone(), HostPathType::FileOrCreate),
        vol(d.join("existing"), HostPathType::FileOrCreate),
        vol(d.to_path_buf(), HostPathType::Directory),
        vol(d.join("existing"), HostPathType::File),
        vol(sock_path.clone(), HostPathType::Socket),
        vol("/dev/null".into(), HostPathType::CharDevice),
        vol(d.join("whatever"), HostPathType::Unchecked),
    ];
    prepare_volumes(&ok).unwrap();
    assert!(new_dir.is_dir());
    let mode = |p: &PathBuf| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&new_dir), 0o755);
    assert_eq!(mode(&new_file), 0o644);
    assert_eq!(fs::read_to_string(&new_file).unwrap(), "");
    assert_eq!(
        fs::read_to_string(d.join("existing")).unwrap(),
        "keep",
        "not truncated"
    );

    let bad = vec![
        vol(d.join("existing"), HostPathType::DirectoryOrCreate),
        vol(new_dir.clone(), HostPathType::FileOrCreate),
        vol(d.join("missing-dir"), HostPathType::Directory),
        vol(new_dir.clone(), HostPathType::File),
        vol(d.join("existing"), HostPathType::Socket),
        vol("/dev/null".into(), HostPathType::BlockDevice),
        vol(d.join("existing/sub"), HostPathType::DirectoryOrCreate),
    ];
    let err = prepare_volumes(&bad).unwrap_err();
    let err = err.to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), bad.len(), "{err}");
    assert!(
        lines[0].contains("existing") && lines[0].contains("not a directory"),
        "{err}"
    );
    assert!(
        lines[1].contains("a/b/c") && lines[1].contains("not a regular file"),
        "{err}"
    );
    assert!(
        lines[2].contains("missing-dir") && lines[2].contains("must be an existing directory"),
        "{err}"
    );
    assert!(lines[3].contains("not a regular file"), "{err}");
    assert!(lines[4].contains("not a unix socket"), "{err}");
    assert!(
        lines[5].contains("/dev/null") && lines[5].contains("block device"),
        "{err}"
    );
    assert!(
        lines[6].contains("existing/sub") && lines[6].contains("Not a directory"),
        "{err}"
    );
    assert!(!d.join("missing-dir").exists(), "Directory does not create");
}
