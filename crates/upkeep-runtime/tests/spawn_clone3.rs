//! The clone3(CLONE_INTO_CGROUP) spawn path: a service is born in its cgroup,
//! exec failures come back as clear errors (no zombie, no leaked fd), and
//! stdout goes where it is told. Needs root (cgroups).

mod proc_common;

use proc_common::*;
use std::os::unix::fs::PermissionsExt;
use upkeep_core::ExitStatus;
use upkeep_runtime::spawn::{Output, SpawnRequest};

#[tokio::test]
async fn born_in_the_cgroup_and_exec_errors_are_clear() {
    require_root();
    let g = CgroupGuard::new("clone3");
    let (prefix, cg) = (&g.prefix, &g.cg);
    let env = std_env();
    let dir = tempfile::tempdir().unwrap();
    let reaper = reaper();

    // The child reads its own cgroup as its first act: it is already inside.
    let out_path = dir.path().join("out");
    let out = std::fs::File::create(&out_path).unwrap();
    let argv = vec!["cat".to_string(), "/proc/self/cgroup".to_string()];
    let mut req = SpawnRequest::new(&argv, &env);
    req.cgroup = Some(cg);
    req.stdout = Output::Fd(std::os::fd::AsFd::as_fd(&out));
    let sp = req.spawn(&reaper).unwrap();
    assert_eq!(exit_of(sp).await, ExitStatus::Exited(0));
    let text = read(&out_path);
    assert!(
        text.lines().any(|l| l == format!("0::/{prefix}/svc")),
        "{text}"
    );

    let fds = fd_count();
    // Not executable: EACCES from execve in the child, reported through the pipe.
    let noexec = dir.path().join("noexec");
    std::fs::write(&noexec, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&noexec, std::fs::Permissions::from_mode(0o644)).unwrap();
    let argv = vec![noexec.display().to_string()];
    let mut req = SpawnRequest::new(&argv, &env);
    req.cgroup = Some(cg);
    let err = match req.spawn(&reaper) {
        Ok(_) => panic!("spawn must fail"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("permission denied"), "{err}");
    // Bad interpreter: ENOENT from execve although the file exists.
    let badint = dir.path().join("badint");
    std::fs::write(&badint, "#!/nonexistent/interp\n").unwrap();
    std::fs::set_permissions(&badint, std::fs::Permissions::from_mode(0o755)).unwrap();
    let argv = vec![badint.display().to_string()];
    let mut req = SpawnRequest::new(&argv, &env);
    req.cgroup = Some(cg);
    let err = match req.spawn(&reaper) {
        Ok(_) => panic!("spawn must fail"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("interpreter"), "{err}");
    // A missing working directory.
    let argv = vec!["true".to_string()];
    let missing = dir.path().join("missing");
    let mut req = SpawnRequest::new(&argv, &env);
    req.cgroup = Some(cg);
    req.working_dir = Some(&missing);
    let err = match req.spawn(&reaper) {
        Ok(_) => panic!("spawn must fail"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("working directory"), "{err}");
    // The failed children were reaped and nothing leaked.
    wait_until("failed children reaped", || our_zombies().is_empty()).await;
    assert_eq!(fd_count(), fds, "fd leak on failed spawns");
    wait_until("cgroup empty", || !cg.populated()).await;
}
