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

/// A config in a directory of its own with `text`.
fn config_with(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("upkeep.toml");
    std::fs::write(&p, text).unwrap();
    (dir, p)
}

fn check(cfg: &std::path::Path, manifests: &std::path::Path) -> (bool, String) {
    let out = Command::new(bin())
        .args(["check", "--config"])
        .arg(cfg)
        .arg("--manifests")
        .arg(manifests)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn check_warns_when_the_kubelet_runs_upkeeps_manifests_too() {
    let manifests = kubeadm_dir();
    let kubelet = tempfile::tempdir().unwrap();
    let kubelet_config = kubelet.path().join("config.yaml");
    let (_c, cfg) = config_with(&format!("kubelet_config = {kubelet_config:?}\n"));
    // No kubelet config: nothing to say.
    let (ok, text) = check(&cfg, manifests.path());
    assert!(ok, "{text}");
    assert!(!text.contains("staticPodPath"), "{text}");
    // kubeadm's default (after `kubeadm upgrade` wrote it back): a warning, exit 0.
    std::fs::write(
        &kubelet_config,
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nstaticPodPath: {}/\n",
            manifests.path().display()
        ),
    )
    .unwrap();
    let (ok, text) = check(&cfg, manifests.path());
    assert!(ok, "a warning must not fail check: {text}");
    assert!(
        text.contains(&kubelet_config.display().to_string())
            && text.contains("staticPodPath")
            && text.contains("both run every static Pod"),
        "{text}"
    );
    // Another directory: no warning.
    std::fs::write(
        &kubelet_config,
        "kind: KubeletConfiguration\nstaticPodPath: /etc/kubernetes/kubelet-only\n",
    )
    .unwrap();
    let (ok, text) = check(&cfg, manifests.path());
    assert!(ok && !text.contains("staticPodPath"), "{text}");
}

#[test]
fn check_warns_when_an_images_binary_reports_another_version_than_the_tag() {
    let manifests = tempfile::tempdir().unwrap();
    std::fs::set_permissions(manifests.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let bin_dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(bin_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    // A stand-in etcd that answers --version as etcd does.
    let fake = script(
        bin_dir.path(),
        "etcd",
        "[ \"$1\" = --version ] && { echo 'etcd Version: 3.5.9'; echo 'Go Version: go1.20.1'; exit 0; }; exec sleep 1000",
    );
    let manifest = |tag: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\n  namespace: kube-system\nspec:\n  hostNetwork: true\n  containers:\n  - name: etcd\n    image: registry.k8s.io/etcd:{tag}\n")
    };
    let file = manifests.path().join("etcd.yaml");
    let write = |tag: &str| {
        std::fs::write(&file, manifest(tag)).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let (_c, cfg) = config_with(&format!(
        "[images]\n\"registry.k8s.io/etcd\" = [{:?}]\n",
        fake.display().to_string()
    ));
    write("3.5.10-0");
    let (ok, text) = check(&cfg, manifests.path());
    assert!(ok, "a warning must not fail check: {text}");
    assert!(
        text.contains(&file.display().to_string())
            && text.contains("spec.containers[0].image")
            && text.contains("3.5.10")
            && text.contains("3.5.9"),
        "{text}"
    );
    // The binary at the tag's version: nothing to say.
    write("3.5.9-0");
    let (ok, text) = check(&cfg, manifests.path());
    assert!(ok, "{text}");
    assert!(!text.contains("--version"), "{text}");
}

#[test]
fn the_daemon_reports_the_kubelet_overlap_in_health() {
    let mut d = Daemon::prepare("", &[]);
    let kubelet_config = d.dir.path().join("kubelet-config.yaml");
    std::fs::write(
        &kubelet_config,
        format!(
            "kind: KubeletConfiguration\nstaticPodPath: {}\n",
            d.manifests.display()
        ),
    )
    .unwrap();
    d.spawn();
    let (code, h) = d.health();
    assert_eq!(code, 200, "a warning is not a failure: {h}");
    let w = h["warnings"].as_array().expect("warnings in /health");
    assert_eq!(w.len(), 1, "{h}");
    assert_eq!(w[0]["file"], kubelet_config.display().to_string());
    assert!(
        w[0]["warning"].as_str().unwrap().contains("staticPodPath"),
        "{h}"
    );
    assert!(d.stderr().contains("staticPodPath"), "{}", d.stderr());
    let status = d.client(&["status"]);
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("WARNINGS"),
        "{}",
        String::from_utf8_lossy(&status.stdout)
    );
}
