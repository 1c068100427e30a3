//! Host checks beyond the config and the manifests themselves, for `check`
//! (both) and `run` (the kubelet one, once at start):
//!
//! - the kubelet's config has a `staticPodPath` that is upkeep's manifests
//!   directory (`kubeadm upgrade` writes it back): the kubelet and upkeep would
//!   both run every static Pod;
//! - an `[images]` entry's binary reports (`--version`) another version than
//!   the tag of the manifests' `image:`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use upkeep_spec::config::{Config, DEFAULT_PATH};
use upkeep_spec::manifest::image_name;
use upkeep_spec::types::Origin;
use upkeep_spec::{Diagnostic, ServiceSpec};

/// How long a `--version` may take before it is killed.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest kubelet config or manifest read here (the loader caps manifests too).
const MAX_FILE: u64 = 10 * 1024 * 1024;

/// The fields of a KubeletConfiguration read here.
#[derive(Deserialize)]
struct KubeletConfig {
    #[serde(rename = "staticPodPath")]
    static_pod_path: Option<String>,
}

/// A warning when the kubelet config at `cfg.kubelet_config` has a
/// `staticPodPath` that is `cfg.manifests`. A missing file is no warning (no
/// kubelet, or one configured elsewhere); an unreadable one is.
pub fn kubelet_static_pods(cfg: &Config) -> Option<Diagnostic> {
    let file = &cfg.kubelet_config;
    let text = match read_capped(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            return Some(Diagnostic::warning(
                file.clone(),
                Some("staticPodPath".into()),
                format!("cannot read the kubelet's config ({e}), so cannot tell whether the kubelet also runs the manifests in {}", cfg.manifests.display()),
            ))
        }
    };
    static_pod_overlap(file, &text, &cfg.manifests)
}

/// The pure part of [`kubelet_static_pods`]: `text` is the kubelet config at
/// `file`, `manifests` upkeep's manifests directory.
pub fn static_pod_overlap(file: &Path, text: &str, manifests: &Path) -> Option<Diagnostic> {
    let parsed: KubeletConfig = match serde_saphyr::from_str(text) {
        Ok(k) => k,
        Err(e) => {
            let first = e.to_string();
            let first = first.lines().next().unwrap_or("invalid YAML").to_string();
            return Some(Diagnostic::warning(
                file.to_path_buf(),
                Some("staticPodPath".into()),
                format!("the kubelet's config is not valid YAML ({first}), so cannot tell whether the kubelet also runs the manifests in {}", manifests.display()),
            ));
        }
    };
    let spp = parsed.static_pod_path.filter(|p| !p.trim().is_empty())?;
    if !same_dir(Path::new(spp.trim()), manifests) {
        return None;
    }
    Some(Diagnostic::warning(
        file.to_path_buf(),
        Some("staticPodPath".into()),
        format!(
            "is {spp:?}, upkeep's manifests directory: the kubelet and upkeep both run every static Pod in it \
             (two etcds, two apiservers). Set `staticPodPath: \"\"` in the kubelet's config and restart the kubelet \
             (`kubeadm upgrade` writes it back: see docs/kubeadm.md)"
        ),
    ))
}

/// Whether two paths name the same directory: resolved when both exist,
/// compared without trailing slashes and `.` components otherwise.
fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a.components().collect::<PathBuf>() == b.components().collect::<PathBuf>(),
    }
}

fn read_capped(file: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(file)?
        .take(MAX_FILE)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// The parts of a Pod manifest read here.
#[derive(Deserialize)]
struct Pod {
    spec: Option<PodSpec>,
}

#[derive(Deserialize)]
struct PodSpec {
    #[serde(default)]
    containers: Vec<Container>,
    #[serde(default, rename = "initContainers")]
    init_containers: Vec<Container>,
}

#[derive(Deserialize)]
struct Container {
    image: Option<String>,
}

/// One `image:` of a manifest that an `[images]` entry maps to a binary.
#[derive(Debug, PartialEq)]
struct ImageUse {
    file: PathBuf,
    field: String,
    /// The image without its tag: the `[images]` key.
    name: String,
    /// `x.y.z` from the tag.
    version: String,
    tag: String,
}

/// Warnings for every manifest `image:` whose `[images]` binary reports
/// (`BINARY --version`) another version than the image's tag. Images with no
/// `[images]` entry, tags without an `x.y.z` version, and binaries that do not
/// exist (`check` already warns about those) are left alone.
pub fn image_versions(cfg: &Config, services: &[ServiceSpec]) -> Vec<Diagnostic> {
    image_versions_with(cfg, services, binary_version)
}

/// [`image_versions`] with the `--version` runner injected (tests).
fn image_versions_with(
    cfg: &Config,
    services: &[ServiceSpec],
    mut version_of: impl FnMut(&str) -> Result<String, String>,
) -> Vec<Diagnostic> {
    if cfg.images.is_empty() {
        return Vec::new();
    }
    let mut files: Vec<&Path> = services
        .iter()
        .filter(|s| matches!(s.origin, Origin::StaticPod { .. }))
        .map(|s| s.source.as_path())
        .collect();
    files.sort();
    files.dedup();
    let mut cache: BTreeMap<String, Result<String, String>> = BTreeMap::new();
    let mut out = Vec::new();
    for file in files {
        let Ok(text) = read_capped(file) else {
            continue;
        };
        for u in image_uses(file, &text, &cfg.images) {
            let Some(prog) = cfg.images[&u.name].first() else {
                continue;
            };
            if !Path::new(prog).is_file() {
                continue;
            }
            let found = cache
                .entry(prog.clone())
                .or_insert_with(|| version_of(prog));
            match found {
                Ok(v) if *v == u.version => {}
                Ok(v) => out.push(Diagnostic::warning(
                    u.file.clone(),
                    Some(u.field.clone()),
                    format!(
                        "image tag {:?} is version {}, but the [images] entry for {:?} runs {prog}, whose --version reports {v}: install the binary at the manifest's version",
                        u.tag, u.version, u.name
                    ),
                )),
                Err(e) => out.push(Diagnostic::warning(
                    u.file.clone(),
                    Some(u.field.clone()),
                    format!(
                        "cannot compare with image tag {:?}: {prog} --version {e}",
                        u.tag
                    ),
                )),
            }
        }
    }
    out
}

/// Every container image of the manifest `text` that has an `[images]` entry
/// and a tag with an `x.y.z` version.
fn image_uses(file: &Path, text: &str, images: &BTreeMap<String, Vec<String>>) -> Vec<ImageUse> {
    let Ok(pod) = serde_saphyr::from_str::<Pod>(text) else {
        return Vec::new();
    };
    let Some(spec) = pod.spec else {
        return Vec::new();
    };
    let lists = [
        ("containers", &spec.containers),
        ("initContainers", &spec.init_containers),
    ];
    let mut out = Vec::new();
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            let Some(image) = c.image.as_deref() else {
                continue;
            };
            let name = image_name(image);
            if !images.contains_key(name) {
                continue;
            }
            let tag = image_tag(image);
            let Some(version) = tag.and_then(semver_in) else {
                continue;
            };
            out.push(ImageUse {
                file: file.to_path_buf(),
                field: format!("spec.{list}[{i}].image"),
                name: name.to_string(),
                version,
                tag: tag.unwrap_or_default().to_string(),
            });
        }
    }
    out
}

/// The tag of an image reference (`registry.k8s.io/etcd:3.5.10-0` -> `3.5.10-0`).
fn image_tag(image: &str) -> Option<&str> {
    let no_digest = image.split('@').next().unwrap_or(image);
    let name = image_name(no_digest);
    no_digest
        .strip_prefix(name)
        .and_then(|t| t.strip_prefix(':'))
        .filter(|t| !t.is_empty())
}

/// The first `x.y.z` version in `text`, without a leading `v` and without any
/// suffix (`v1.29.0` -> `1.29.0`, `3.5.10-0` -> `3.5.10`,
/// `etcd Version: 3.5.10` -> `3.5.10`).
fn semver_in(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit()
            && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'v')
        {
            let rest = &text[i..];
            let end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let candidate = rest[..end].trim_end_matches('.');
            let parts: Vec<&str> = candidate.split('.').collect();
            if parts.len() >= 3 && parts[..3].iter().all(|p| !p.is_empty()) {
                return Some(parts[..3].join("."));
            }
            i += end.max(1);
        } else {
            i += 1;
        }
    }
    None
}

/// Runs `prog --version` (clean environment, no stdin, killed after
/// [`VERSION_TIMEOUT`]) and returns the first `x.y.z` it prints.
fn binary_version(prog: &str) -> Result<String, String> {
    let mut child = Command::new(prog)
        .arg("--version")
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not run: {e}"))?;
    let deadline = Instant::now() + VERSION_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {VERSION_TIMEOUT:?}"));
            }
            Err(e) => return Err(format!("wait failed: {e}")),
        }
    }
    let mut text = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut text);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut text);
    }
    semver_in(&text).ok_or_else(|| "printed no x.y.z version".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_tags_and_version_output() {
        assert_eq!(semver_in("3.5.10-0").as_deref(), Some("3.5.10"));
        assert_eq!(semver_in("v1.29.0").as_deref(), Some("1.29.0"));
        assert_eq!(semver_in("Kubernetes v1.29.3\n").as_deref(), Some("1.29.3"));
        assert_eq!(
            semver_in("etcd Version: 3.4.23\nGit SHA: Not provided\nGo Version: go1.19.8\n")
                .as_deref(),
            Some("3.4.23")
        );
        assert_eq!(semver_in("latest"), None);
        assert_eq!(semver_in("1.29"), None);
        assert_eq!(image_tag("registry.k8s.io/etcd:3.5.10-0"), Some("3.5.10-0"));
        assert_eq!(image_tag("localhost:5000/etcd:v1.2.3"), Some("v1.2.3"));
        assert_eq!(image_tag("localhost:5000/etcd"), None);
        assert_eq!(
            image_tag("registry.k8s.io/etcd:3.5.10-0@sha256:ab"),
            Some("3.5.10-0")
        );
    }

    #[test]
    fn static_pod_path_equal_to_the_manifests_dir_is_a_warning() {
        let f = Path::new("/var/lib/kubelet/config.yaml");
        let m = Path::new("/nonexistent-upkeep-test/manifests");
        let same = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nstaticPodPath: /nonexistent-upkeep-test/manifests/\n";
        let d = static_pod_overlap(f, same, m).expect("a warning");
        assert_eq!(d.severity, upkeep_spec::Severity::Warning);
        assert_eq!(d.field.as_deref(), Some("staticPodPath"));
        assert!(d.message.contains("both run every static Pod"), "{d}");
        let other = "kind: KubeletConfiguration\nstaticPodPath: /etc/kubernetes/other\n";
        assert!(static_pod_overlap(f, other, m).is_none());
        let none = "kind: KubeletConfiguration\nclusterDomain: cluster.local\n";
        assert!(static_pod_overlap(f, none, m).is_none());
        let bad = static_pod_overlap(f, "staticPodPath: [unclosed\n", m).expect("a warning");
        assert!(bad.message.contains("not valid YAML"), "{bad}");
    }

    #[test]
    fn image_uses_lists_mapped_images_with_versioned_tags() {
        let images: BTreeMap<String, Vec<String>> = [(
            "registry.k8s.io/etcd".to_string(),
            vec!["/usr/bin/etcd".to_string()],
        )]
        .into();
        let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: etcd\nspec:\n  initContainers:\n  - name: i\n    image: registry.k8s.io/etcd:latest\n  containers:\n  - name: other\n    image: registry.k8s.io/pause:3.9\n  - name: etcd\n    image: registry.k8s.io/etcd:3.5.10-0\n";
        let uses = image_uses(Path::new("/m/etcd.yaml"), text, &images);
        assert_eq!(
            uses,
            [ImageUse {
                file: "/m/etcd.yaml".into(),
                field: "spec.containers[1].image".into(),
                name: "registry.k8s.io/etcd".into(),
                version: "3.5.10".into(),
                tag: "3.5.10-0".into(),
            }]
        );
    }
}
