//! hostPath volumes bound at their mountPath in a private mount namespace,
//! with real processes, on both spawn paths (clone3 into a cgroup, and
//! fork + pre_exec without one). Needs root.

mod proc_common;

use proc_common::*;
use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use upkeep_core::ExitStatus;
use upkeep_runtime::cgroup::{Cgroup, CgroupRoot};
use upkeep_runtime::spawn::{Output, SpawnRequest};
use upkeep_runtime::volumes::{prepare_volumes, MountPlan};
use upkeep_spec::{HostPathType, HostPathVolume, Propagation};

/// A cgroup of this test under a unique prefix, removed on drop.
struct TestCgroup {
    root: CgroupRoot,
    cg: Cgroup,
}

impl TestCgroup {
    fn new(tag: &str) -> TestCgroup {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let prefix = format!(
            "upkeep-test-mounts-{tag}-{}-{nanos}.slice",
            std::process::id()
        );
        let root = CgroupRoot::detect(&prefix).unwrap();
        let cg = Cgroup::create(&root, "svc").unwrap();
        TestCgroup { root, cg }
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = self.cg.kill();
        for _ in 0..200 {
            if !self.cg.populated() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let _ = self.cg.remove();
        let _ = self.root.remove();
    }
}

fn mount(path: &Path, at: Option<&Path>, read_only: bool) -> HostPathVolume {
    HostPathVolume {
        path: path.to_path_buf(),
        kind: HostPathType::Unchecked,
        mount_path: at.map(Path::to_path_buf),
        read_only,
        propagation: Propagation::None,
    }
}

/// Runs `script` with `plan`, in a cgroup (clone3 path) or not (fork
/// path); returns the exit status and the output.
async fn run_with(
    script: &str,
    plan: Option<&MountPlan>,
    cgroup: Option<&Cgroup>,
) -> std::io::Result<(ExitStatus, String)> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let file = fs::File::create(&out).unwrap();
    let argv = sh(script);
    let env = std_env();
    let mut req = SpawnRequest::new(&argv, &env);
    req.stdout = Output::Fd(file.as_fd());
    req.stderr = Output::Fd(file.as_fd());
    req.cgroup = cgroup;
    req.mounts = plan;
    let sp = req.spawn(&reaper())?;
    let st = exit_of(sp).await;
    Ok((st, read(&out)))
}

fn own_mnt_ns() -> PathBuf {
    fs::read_link("/proc/self/ns/mnt").unwrap()
}

#[tokio::test]
async fn binds_land_where_the_pod_says_and_nothing_leaks_to_the_host() {
    require_root();
    let tcg = TestCgroup::new("bind");
    for cgroup in [Some(&tcg.cg), None] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let data = d.join("host/var/etcd/data");
        fs::create_dir_all(&data).unwrap();
        fs::write(data.join("member"), "m1").unwrap();
        // The mount point does not exist yet: created on the host.
        let target = d.join("pod/var/etcd");
        let vols = [mount(&data, Some(&target), false)];
        let plan = prepare_volumes(&vols).unwrap().expect("a namespace");
        assert_eq!(plan.len(), 1);
        assert!(target.is_dir(), "mount point created on the host");
        let t = target.display();
        let script =
            format!("cat {t}/member; echo; echo written > {t}/new; readlink /proc/self/ns/mnt");
        let (st, out) = run_with(&script, Some(&plan), cgroup).await.unwrap();
        assert_eq!(st, ExitStatus::Exited(0), "{out}");
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("m1"), "{out}");
        let ns = PathBuf::from(lines.next().unwrap());
        assert_ne!(ns, own_mnt_ns(), "a mount namespace of its own");
        // The write landed in the source; the host's mount point is still
        // an empty directory (the bind never reached the host).
        assert_eq!(fs::read_to_string(data.join("new")).unwrap(), "written\n");
        assert_eq!(fs::read_dir(&target).unwrap().count(), 0);
        if let Some(cg) = cgroup {
            assert!(!cg.populated());
        }
    }
}

#[tokio::test]
async fn read_only_bind_fails_writes_with_erofs_and_keeps_the_host_file() {
    require_root();
    let tcg = TestCgroup::new("ro");
    for cgroup in [Some(&tcg.cg), None] {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("conf");
        fs::create_dir(&conf).unwrap();
        fs::write(conf.join("f"), "original").unwrap();
        let vols = [mount(&conf, None, true)];
        let plan = prepare_volumes(&vols)
            .unwrap()
            .expect("readOnly needs a namespace");
        let c = conf.display();
        let script = format!(
            "cat {c}/f; echo; if echo changed > {c}/f; then echo WROTE; fi; \
             if touch {c}/new; then echo CREATED; fi"
        );
        let (st, out) = run_with(&script, Some(&plan), cgroup).await.unwrap();
        assert_eq!(st, ExitStatus::Exited(0), "{out}");
        assert!(out.starts_with("original\n"), "{out}");
        assert!(out.contains("Read-only file system"), "{out}");
        assert!(!out.contains("WROTE") && !out.contains("CREATED"), "{out}");
        assert_eq!(fs::read_to_string(conf.join("f")).unwrap(), "original");
        assert!(!conf.join("new").exists());
        // The host itself can still write there.
        fs::write(conf.join("f"), "host").unwrap();
    }
}

#[tokio::test]
async fn nested_mount_points_are_created_inside_the_outer_source() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (outer, inner) = (d.join("outer-src"), d.join("inner-src"));
    fs::create_dir_all(&outer).unwrap();
    fs::create_dir_all(&inner).unwrap();
    fs::write(inner.join("i"), "inner").unwrap();
    let file_src = d.join("file-src");
    fs::write(&file_src, "a file").unwrap();
    let at = d.join("pod");
    // Listed deepest first: upkeep orders them.
    let vols = [
        mount(&file_src, Some(&at.join("x/log")), false),
        mount(&inner, Some(&at.join("x")), true),
        mount(&outer, Some(&at), false),
    ];
    let plan = prepare_volumes(&vols).unwrap().unwrap();
    // `pod/x` exists in outer-src, `x/log` in inner-src (a file, for a file).
    assert!(outer.join("x").is_dir());
    assert!(inner.join("log").is_file());
    assert!(
        !at.join("x").exists(),
        "nothing created under the host's pod/"
    );
    let p = at.display();
    let script = format!("cat {p}/x/i; echo; cat {p}/x/log");
    let (st, out) = run_with(&script, Some(&plan), None).await.unwrap();
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
    assert_eq!(out, "inner\na file");
}

#[tokio::test]
async fn a_symlinked_host_path_is_resolved_once_at_start() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (a, b) = (d.join("a"), d.join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    fs::write(a.join("which"), "a").unwrap();
    fs::write(b.join("which"), "b").unwrap();
    let link = d.join("current");
    std::os::unix::fs::symlink(&a, &link).unwrap();
    let vols = [mount(&link, Some(&d.join("seen")), false)];
    let plan = prepare_volumes(&vols).unwrap().unwrap();
    assert!(plan.describe(0).contains(&a.display().to_string()));
    // Repointing the link after the start (here: after the preparation)
    // does not change what is mounted.
    fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&b, &link).unwrap();
    let script = format!("cat {}/which", d.join("seen").display());
    let (st, out) = run_with(&script, Some(&plan), None).await.unwrap();
    assert_eq!(st, ExitStatus::Exited(0), "{out}");
    assert_eq!(out, "a");
}

#[tokio::test]
async fn a_source_that_vanishes_before_the_mount_fails_the_spawn_naming_the_bind() {
    require_root();
    let tcg = TestCgroup::new("gone");
    for cgroup in [Some(&tcg.cg), None] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (keep, gone) = (d.join("keep"), d.join("gone"));
        fs::create_dir(&keep).unwrap();
        fs::create_dir(&gone).unwrap();
        let vols = [
            mount(&keep, Some(&d.join("k")), false),
            mount(&gone, Some(&d.join("g")), false),
        ];
        let plan = prepare_volumes(&vols).unwrap().unwrap();
        fs::remove_dir(&gone).unwrap();
        let marker = d.join("ran");
        let script = format!("touch {}", marker.display());
        let err = run_with(&script, Some(&plan), cgroup).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("\"sh\""), "{msg}");
        assert!(
            msg.contains(&format!(
                "bind of {} at {}",
                gone.display(),
                d.join("g").display()
            )),
            "{msg}"
        );
        assert!(msg.contains("No such file or directory"), "{msg}");
        assert!(
            !marker.exists(),
            "the program never ran with a partial set of mounts"
        );
        if let Some(cg) = cgroup {
            wait_until("the failed child is gone", || !cg.populated()).await;
        }
    }
}

#[test]
fn mounts_at_their_own_path_and_writable_need_no_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let vols = [mount(dir.path(), None, false)];
    assert!(prepare_volumes(&vols).unwrap().is_none());
    // A missing ""-typed source is left alone without a namespace...
    let missing = dir.path().join("missing");
    assert!(prepare_volumes(&[mount(&missing, None, false)])
        .unwrap()
        .is_none());
    assert!(!missing.exists());
    // ...and created as an empty directory when it is bound.
    let plan = prepare_volumes(&[mount(&missing, None, true)]).unwrap();
    assert!(plan.is_some());
    assert!(missing.is_dir());
}

#[test]
fn mount_point_of_the_wrong_type_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("file"), "").unwrap();
    fs::create_dir(d.join("dir")).unwrap();
    let vols = [
        mount(&d.join("dir"), Some(&d.join("file")), false),
        mount(&d.join("file"), Some(&d.join("dir")), false),
    ];
    let err = prepare_volumes(&vols).unwrap_err().to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert!(
        lines[0].contains("mounted at")
            && lines[0].contains("is not a directory but the source is one"),
        "{err}"
    );
    assert!(
        lines[1].contains("is a directory but the source is not"),
        "{err}"
    );
}
