//! Per-service cgroups on this machine (cgroup2, hybrid or pure), with a
//! unique prefix that is removed afterwards. Needs root.

mod proc_common;

use proc_common::*;
use std::path::Path;
use upkeep_core::ExitStatus;
use upkeep_runtime::cgroup::{Cgroup, CgroupLayout, CgroupRoot};
use upkeep_runtime::spawn::SpawnRequest;
use upkeep_spec::Resources;

/// Removes the test's cgroups however the test ends.
struct RootGuard(CgroupRoot, Vec<String>);

impl Drop for RootGuard {
    fn drop(&mut self) {
        for name in &self.1 {
            if let Some(cg) = Cgroup::find_existing(&self.0, name) {
                let _ = cg.kill();
                for _ in 0..200 {
                    if !cg.populated() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                let _ = cg.remove();
            }
        }
        let _ = self.0.remove();
    }
}

fn unique_prefix(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("upkeep-test-{tag}-{}-{nanos}.slice", std::process::id())
}

#[tokio::test]
async fn create_join_limit_kill_remove() {
    require_root();
    let layout = CgroupLayout::detect().unwrap();
    let v2_mount = layout.v2.clone().expect("this machine mounts cgroup2");
    let prefix = unique_prefix("life");
    let root = CgroupRoot::detect(&prefix).unwrap();
    let service = "etcd-node1/etcd";
    let guard = RootGuard(root.clone(), vec![service.to_string()]);
    assert_eq!(root.v2_dir(), v2_mount.join(&prefix));
    assert!(root.v2_dir().is_dir());

    let cg = Cgroup::create(&root, service).unwrap();
    assert_eq!(cg.path(), v2_mount.join(&prefix).join("etcd-node1_etcd"));
    assert_eq!(cg.relative_path(), format!("/{prefix}/etcd-node1_etcd"));
    assert!(!cg.populated());
    assert_eq!(root.existing(), vec!["etcd-node1_etcd".to_string()]);

    // Limits: v2 where the controller is there, v1 otherwise (hybrid here).
    cg.set_limits(&Resources {
        memory_max: Some(64 << 20),
        cpu_max_millis: Some(500),
    })
    .unwrap();
    let v2c = root.v2_controllers();
    if v2c.iter().any(|c| c == "memory") {
        assert_eq!(read(&cg.path().join("memory.max")).trim(), "67108864");
    } else {
        let mem = layout.v1.get("memory").expect("v1 memory controller");
        let dir = mem.join(&prefix).join("etcd-node1_etcd");
        assert_eq!(read(&dir.join("memory.limit_in_bytes")).trim(), "67108864");
    }
    if v2c.iter().any(|c| c == "cpu") {
        assert_eq!(read(&cg.path().join("cpu.max")).trim(), "50000 100000");
    } else {
        let cpu = layout.v1.get("cpu").expect("v1 cpu controller");
        let dir = cpu.join(&prefix).join("etcd-node1_etcd");
        assert_eq!(read(&dir.join("cpu.cfs_quota_us")).trim(), "50000");
        assert_eq!(read(&dir.join("cpu.cfs_period_us")).trim(), "100000");
    }

    // A service spawned into it is inside before exec.
    let env = std_env();
    let a = sh("sleep 30 & sleep 30");
    let mut req = SpawnRequest::new(&a, &env);
    req.cgroup = Some(&cg);
    let sp = req.spawn(&reaper()).unwrap();
    let _c = Cleanup::groups(vec![sp.pid]);
    assert!(cg.contains(sp.pid));
    let self_cgroup = read(Path::new(&format!("/proc/{}/cgroup", sp.pid)));
    assert!(
        self_cgroup
            .lines()
            .any(|l| l == format!("0::/{prefix}/etcd-node1_etcd")),
        "{self_cgroup}"
    );
    if !v2c.iter().any(|c| c == "memory") {
        assert!(
            self_cgroup
                .lines()
                .any(|l| l.ends_with(&format!(":memory:/{prefix}/etcd-node1_etcd"))),
            "joined the v1 memory group: {self_cgroup}"
        );
    }
    // Its forks are tracked too.
    wait_until("fork tracked", || cg.procs().len() >= 2).await;
    assert!(cg.populated());

    // add_pid moves an outside process in.
    let b = vec!["sleep".to_string(), "30".to_string()];
    let other = SpawnRequest::new(&b, &env).spawn(&reaper()).unwrap();
    let _c2 = Cleanup::pids(vec![other.pid]);
    assert!(!cg.contains(other.pid));
    cg.add_pid(other.pid).unwrap();
    assert!(cg.contains(other.pid));
    assert!(cg.procs().contains(&other.pid));

    // Re-attach by name, as after an upkeep restart.
    let again = Cgroup::find_existing(&root, service).expect("found");
    assert_eq!(again.procs().len(), cg.procs().len());
    assert!(Cgroup::find_existing(&root, "no-such-service").is_none());

    // Not empty: removal refused with the path in the message.
    let err = cg.remove().unwrap_err().to_string();
    assert!(err.contains("etcd-node1_etcd"), "{err}");

    cg.kill().unwrap();
    let sig = ExitStatus::Signaled {
        signal: libc::SIGKILL,
        core: false,
    };
    assert_eq!(exit_of(sp).await, sig);
    assert_eq!(exit_of(other).await, sig);
    wait_until("cgroup empty", || !cg.populated()).await;
    assert!(cg.procs().is_empty());
    cg.remove().unwrap();
    assert!(!cg.path().exists());
    assert!(cg.v1_dirs().is_empty(), "v1 dirs left: {:?}", cg.v1_dirs());
    root.remove().unwrap();
    assert!(!root.v2_dir().exists());
    drop(guard);
}

#[test]
fn limits_can_be_cleared() {
    require_root();
    let prefix = unique_prefix("clear");
    let root = CgroupRoot::detect(&prefix).unwrap();
    let _guard = RootGuard(root.clone(), vec!["svc".into()]);
    let cg = Cgroup::create(&root, "svc").unwrap();
    cg.set_limits(&Resources {
        memory_max: Some(32 << 20),
        cpu_max_millis: None,
    })
    .unwrap();
    cg.set_limits(&Resources::default()).unwrap();
    if root.v2_controllers().iter().any(|c| c == "memory") {
        assert_eq!(read(&cg.path().join("memory.max")).trim(), "max");
    } else {
        let (_, dir) = cg
            .v1_dirs()
            .into_iter()
            .find(|(c, _)| c == "memory")
            .expect("v1 memory group");
        let v: u64 = read(&dir.join("memory.limit_in_bytes"))
            .trim()
            .parse()
            .unwrap();
        assert!(v > 1 << 40, "unlimited again: {v}");
    }
    cg.remove().unwrap();
}

#[test]
fn detection_without_cgroup2_is_an_error_not_a_panic() {
    let err = CgroupRoot::with_layout(CgroupLayout::default(), "x").unwrap_err();
    assert!(err.to_string().contains("no cgroup2"), "{err}");
    // A bogus mount point: creating the prefix fails with a path in the error.
    let layout = CgroupLayout {
        v2: Some("/proc/self/nonexistent".into()),
        ..Default::default()
    };
    let err = CgroupRoot::with_layout(layout, "x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("/proc/self/nonexistent"), "{err}");
}
