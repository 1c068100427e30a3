//! `upkeep check`, `upkeep render`, `--version`, man page and completions.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn kubeadm_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    for c in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        let dst = dir.path().join(format!("{c}.yaml"));
        std::fs::copy(fixtures().join(format!("kubeadm-v1.29-{c}.yaml")), &dst).unwrap();
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    dir
}

/// An empty config file in a directory of its own (not in the manifests dir:
/// every non-dot file there is a manifest).
fn empty_config(_manifests: &std::path::Path) -> std::path::PathBuf {
    let dir = tempfile::tempdir().unwrap().keep();
    let p = dir.join("upkeep.toml");
    std::fs::write(&p, "").unwrap();
    p
}

#[test]
fn check_accepts_the_kubeadm_manifests() {
    let dir = kubeadm_dir();
    let cfg = empty_config(dir.path());
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .arg("--manifests")
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "check failed:\n{stdout}\n{stderr}");
    for c in [
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        assert!(stdout.contains(c), "summary lacks {c}: {stdout}");
    }
    // kube-apiserver is not installed here: a warning, not an error.
    assert!(
        stderr.contains("warning") && stderr.contains("kube-apiserver"),
        "{stderr}"
    );
}

#[test]
fn check_rejects_the_broken_olddocs_scheduler_naming_file_and_mount() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let dst = dir.path().join("kube-scheduler.yaml");
    std::fs::copy(fixtures().join("olddocs-ha-kube-scheduler.yaml"), &dst).unwrap();
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A second bad file: all problems of all files in one run.
    let bad = dir.path().join("deploy.yaml");
    std::fs::write(
        &bad,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n",
    )
    .unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = empty_config(dir.path());
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .arg("--manifests")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("kube-scheduler.yaml") && stderr.contains("default-token-s8ejd"),
        "{stderr}"
    );
    assert!(stderr.to_lowercase().contains("volume"), "{stderr}");
    assert!(
        stderr.contains("deploy.yaml") && stderr.contains("Deployment"),
        "{stderr}"
    );
}

#[test]
fn check_reports_config_errors_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("upkeep.toml");
    std::fs::write(&cfg, "listen = \"127.0.0.1:9900\"\n\n[services.a]\ncommand = [\"/bin/true\"]\nafter = [\"b\"]\n\n[services.b]\ncommand = [\"/bin/true\"]\nafter = [\"a\"]\nbogus_key = 1\n").unwrap();
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(&cfg)
        .arg("--manifests")
        .arg(dir.path().join("none"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("upkeep.toml"), "{stderr}");
    assert!(stderr.contains("bogus_key"), "{stderr}");
}

#[test]
fn render_json_has_the_stable_fields_and_expanded_argv() {
    let dir = kubeadm_dir();
    let cfg = empty_config(dir.path());
    let out = Command::new(bin())
        .args(["render", "etcd", "-o", "json", "--config"])
        .arg(&cfg)
        .arg("--manifests")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let etcd = &v.as_array().unwrap()[0];
    for k in ["name", "source", "argv", "env", "working_dir", "probes"] {
        assert!(etcd.get(k).is_some(), "missing {k}: {etcd}");
    }
    assert_eq!(etcd["name"], "etcd");
    assert_eq!(etcd["argv"][0], "etcd");
    assert!(etcd["argv"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a == "--data-dir=/var/lib/etcd"));
    assert_eq!(etcd["working_dir"], "/");
    let text = Command::new(bin())
        .args(["render", "--config"])
        .arg(&cfg)
        .arg("--manifests")
        .arg(dir.path())
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&text.stdout);
    assert!(
        t.contains("kube-apiserver") && t.contains("kube-scheduler"),
        "{t}"
    );
}

#[test]
fn version_man_and_completions() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("upkeep "));
    let man = Command::new(bin()).arg("man").output().unwrap();
    assert!(String::from_utf8_lossy(&man.stdout).contains(".TH"));
    for sh in ["bash", "zsh", "fish"] {
        let c = Command::new(bin())
            .args(["completions", sh])
            .output()
            .unwrap();
        assert!(c.status.success() && !c.stdout.is_empty(), "{sh}");
    }
}

#[test]
fn status_fails_when_upkeep_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("upkeep.toml");
    std::fs::write(&cfg, format!("listen = \"127.0.0.1:{}\"\n", free_port())).unwrap();
    let out = Command::new(bin())
        .args(["status", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).is_empty());
}

/// A config with `text` in a directory of its own, and an empty manifests dir.
fn config_dir(text: &str) -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("upkeep.toml");
    std::fs::write(&cfg, text).unwrap();
    let manifests = dir.path().join("manifests");
    std::fs::create_dir(&manifests).unwrap();
    std::fs::set_permissions(&manifests, std::fs::Permissions::from_mode(0o700)).unwrap();
    (dir, cfg, manifests)
}

fn run(args: &[&str], cfg: &std::path::Path, manifests: &std::path::Path) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(cfg)
        .arg("--manifests")
        .arg(manifests)
        .output()
        .unwrap()
}

#[test]
fn render_shows_kill_mode_as_written() {
    let (_dir, cfg, manifests) = config_dir(
        "[services.containerd]\ncommand = [\"/bin/true\"]\nkill_mode = \"process\"\n[services.plain]\ncommand = [\"/bin/true\"]\n",
    );
    let out = run(&["render", "-o", "json"], &cfg, &manifests);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "containerd");
    assert_eq!(v[0]["kill_mode"], "process");
    assert_eq!(v[1]["kill_mode"], "control-group");
    let out = run(&["render", "containerd"], &cfg, &manifests);
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("kill_mode:    process"), "{t}");
}

#[test]
fn check_names_file_field_and_why_for_a_bad_kill_mode() {
    let (_dir, cfg, manifests) =
        config_dir("[services.containerd]\ncommand = [\"/bin/true\"]\nkill_mode = \"procss\"\n");
    let out = run(&["check"], &cfg, &manifests);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("upkeep.toml")
            && stderr.contains("services.containerd.kill_mode")
            && stderr.contains("\"control-group\", \"process\" or \"mixed\""),
        "{stderr}"
    );
}

#[test]
fn check_reports_every_validation_gap_together() {
    let (_dir, cfg, manifests) = config_dir(
        "[services.a]\ncommand = [\"/bin/true\", \"x\\u0000\"]\nafter = [\"nope\"]\nuser = 4294967295\nstop_timeout = \"2h\"\n",
    );
    let out = run(&["check"], &cfg, &manifests);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for want in [
        "services.a.command[1]: contains a NUL byte",
        "services.a.after: unknown service \"nope\"",
        "services.a.user: uid 4294967295 is (uid_t)-1",
        "services.a.stop_timeout: 7200s is too long: at most 1h",
    ] {
        assert!(stderr.contains(want), "missing {want:?} in:\n{stderr}");
    }
}

#[test]
fn check_rejects_a_pod_taking_a_host_service_name_naming_both() {
    let (_dir, cfg, manifests) = config_dir(
        "[services.x_y]\ncommand = [\"/bin/true\"]\n[services.etcd]\ncommand = [\"/bin/true\"]\n",
    );
    let write = |name: &str, text: &str| {
        let p = manifests.join(name);
        std::fs::write(&p, text).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    // Pod x, container y: service "x/y", distinct from host service "x_y".
    write("x.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec:\n  hostNetwork: true\n  containers:\n  - name: y\n    image: i\n    command: [\"/bin/true\"]\n  - name: z\n    image: i\n    command: [\"/bin/true\"]\n");
    let out = run(&["check"], &cfg, &manifests);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Pod etcd: service "etcd", the host service's name.
    write("etcd.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\nspec:\n  hostNetwork: true\n  containers:\n  - name: etcd\n    image: i\n    command: [\"/bin/true\"]\n");
    let out = run(&["check"], &cfg, &manifests);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("etcd.yaml: metadata.name: duplicate service name \"etcd\"")
            && stderr.contains("upkeep.toml (services.etcd)"),
        "{stderr}"
    );
}
