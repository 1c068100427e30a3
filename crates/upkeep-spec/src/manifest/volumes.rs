//! `spec.volumes` (hostPath volumes only) and a container's `volumeMounts`:
//! each hostPath mounted at its `mountPath`, read-only or not.

use std::path::{Component, Path, PathBuf};

use super::dns_label;
use super::pod::PodInfo;
use crate::diag::Severity;
use crate::node::{Ctx, Fields, Node};
use crate::types::{HostPathType, HostPathVolume, Propagation};

/// A declared volume.
pub(super) enum VolumeInfo {
    HostPath(PathBuf, HostPathType),
    /// Declared but unusable (already reported).
    Rejected,
}

pub(super) fn read_volumes(ctx: &mut Ctx<'_>, n: &Node, info: &mut PodInfo) {
    let Some(items) = ctx.list(n, "spec.volumes") else {
        return;
    };
    for (i, v) in items.iter().enumerate() {
        let path = format!("spec.volumes[{i}]");
        let Some(mut f) = ctx.fields(v, &path) else {
            continue;
        };
        let name = match f.get_some("name") {
            Some(nn) => ctx.string(nn, &f.sub("name")),
            None => {
                ctx.error(v, &f.sub("name"), "missing: every volume needs a name");
                None
            }
        };
        let mut sources = Vec::new();
        let mut info_v = VolumeInfo::Rejected;
        let all: Vec<(String, Node)> = f
            .all()
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect();
        for (key, val) in &all {
            let sub = format!("{path}.{key}");
            match key.as_str() {
                "name" => {}
                "hostPath" => {
                    sources.push(key.clone());
                    if let Some(hp) = read_host_path(ctx, val, &sub) {
                        info_v = hp;
                    }
                }
                "secret"
                | "configMap"
                | "persistentVolumeClaim"
                | "projected"
                | "clusterTrustBundle"
                | "ephemeral" => {
                    sources.push(key.clone());
                    ctx.error(
                        val,
                        &sub,
                        format!("static pods may not reference API objects ({key} volume); use a hostPath volume"),
                    );
                }
                other => {
                    sources.push(key.clone());
                    ctx.error(
                        val,
                        &sub,
                        format!("{other} volumes are not supported; only hostPath volumes are"),
                    );
                }
            }
        }
        if sources.len() > 1 {
            ctx.error(
                v,
                &path,
                format!(
                    "a volume has exactly one source, found {}",
                    sources.join(", ")
                ),
            );
        } else if sources.is_empty() {
            ctx.error(v, &path, "the volume has no source (expected hostPath)");
        }
        if let Some(name) = name {
            if !dns_label(&name) {
                ctx.error(
                    v,
                    &format!("{path}.name"),
                    format!("{name:?} is not a valid volume name (DNS-1123 label)"),
                );
            }
            if info.volumes.insert(name.clone(), info_v).is_some() {
                ctx.error(
                    v,
                    &format!("{path}.name"),
                    format!("duplicate volume name {name:?}"),
                );
            }
        }
    }
}

fn read_host_path(ctx: &mut Ctx<'_>, n: &Node, path: &str) -> Option<VolumeInfo> {
    let mut f = ctx.fields(n, path)?;
    let p = match f.get_some("path") {
        Some(pn) => ctx.string(pn, &f.sub("path")),
        None => {
            ctx.error(n, &f.sub("path"), "missing: a hostPath volume needs a path");
            None
        }
    };
    let mut kind = HostPathType::Unchecked;
    if let Some(t) = f.get_some("type") {
        match ctx.string(t, &f.sub("type")).as_deref() {
            Some("") => {}
            Some("DirectoryOrCreate") => kind = HostPathType::DirectoryOrCreate,
            Some("Directory") => kind = HostPathType::Directory,
            Some("FileOrCreate") => kind = HostPathType::FileOrCreate,
            Some("File") => kind = HostPathType::File,
            Some("Socket") => kind = HostPathType::Socket,
            Some("CharDevice") => kind = HostPathType::CharDevice,
            Some("BlockDevice") => kind = HostPathType::BlockDevice,
            Some(other) => ctx.error(
                t,
                &f.sub("type"),
                format!("{other:?}: expected \"\", DirectoryOrCreate, Directory, FileOrCreate, File, Socket, CharDevice or BlockDevice"),
            ),
            None => {}
        }
    }
    f.finish(ctx, Severity::Warning);
    let p = p?;
    if !p.starts_with('/') {
        ctx.error(
            n,
            &format!("{path}.path"),
            format!("{p:?} must be an absolute path"),
        );
        return None;
    }
    if p.split('/').any(|c| c == "..") {
        ctx.error(
            n,
            &format!("{path}.path"),
            format!("{p:?} has a `..` component: write the path without it (the kubelet refuses it too)"),
        );
        return None;
    }
    Some(VolumeInfo::HostPath(PathBuf::from(p), kind))
}

/// Reads `volumeMounts` of the container whose fields are `f` (at `path`):
/// each entry must name a declared volume and have a clean absolute
/// `mountPath` that no other entry uses.
pub(super) fn read_volume_mounts(
    ctx: &mut Ctx<'_>,
    f: &mut Fields<'_>,
    path: &str,
    pod: &PodInfo,
) -> Vec<HostPathVolume> {
    let mut volumes: Vec<HostPathVolume> = Vec::new();
    let Some(n) = f.get("volumeMounts") else {
        return volumes;
    };
    let Some(items) = ctx.list(n, &f.sub("volumeMounts")) else {
        return volumes;
    };
    for (i, m) in items.iter().enumerate() {
        let mp = format!("{path}.volumeMounts[{i}]");
        let Some(mut mf) = ctx.fields(m, &mp) else {
            continue;
        };
        let mname = match mf.get_some("name") {
            Some(v) => ctx.string(v, &mf.sub("name")),
            None => {
                ctx.error(m, &mf.sub("name"), "missing: the volume to mount");
                None
            }
        };
        let mount_path = match mf.get_some("mountPath") {
            Some(v) => {
                ctx.string(v, &mf.sub("mountPath"))
                    .and_then(|s| match clean_mount_path(&s) {
                        Ok(p) => Some(p),
                        Err(why) => {
                            ctx.error(v, &mf.sub("mountPath"), format!("{s:?} {why}"));
                            None
                        }
                    })
            }
            None => {
                ctx.error(m, &mf.sub("mountPath"), "missing");
                None
            }
        };
        for key in ["subPath", "subPathExpr"] {
            if let Some(v) = mf.get_some(key) {
                if ctx.string(v, &mf.sub(key)).is_some_and(|s| !s.is_empty()) {
                    ctx.error(
                        v,
                        &mf.sub(key),
                        "not supported: mount the subdirectory as its own hostPath volume",
                    );
                }
            }
        }
        let read_only = match mf.get_some("readOnly") {
            Some(v) => ctx.bool(v, &mf.sub("readOnly")).unwrap_or(false),
            None => false,
        };
        let mut propagation = Propagation::None;
        if let Some(v) = mf.get_some("mountPropagation") {
            match ctx.string(v, &mf.sub("mountPropagation")).as_deref() {
                Some("None") => {}
                Some("HostToContainer") => propagation = Propagation::HostToContainer,
                Some("Bidirectional") => ctx.error(
                    v,
                    &mf.sub("mountPropagation"),
                    "Bidirectional is not supported: mounts made by the process would \
                     propagate to the host; upkeep's mount namespace only receives \
                     (use HostToContainer, or mount at the host path itself)",
                ),
                Some(other) => ctx.error(
                    v,
                    &mf.sub("mountPropagation"),
                    format!("{other:?}: expected None, HostToContainer or Bidirectional"),
                ),
                None => {}
            }
        }
        // recursiveReadOnly (Kubernetes 1.30): the kubelet's default,
        // Disabled, is what upkeep does (submounts keep their own mode).
        mf.ignore(&["recursiveReadOnly"]);
        mf.finish(ctx, Severity::Warning);
        let Some(mname) = mname else { continue };
        let (host, kind) = match pod.volumes.get(&mname) {
            None => {
                ctx.error(
                    m,
                    &format!("{mp}.name"),
                    format!("no such volume {mname:?} in spec.volumes"),
                );
                continue;
            }
            Some(VolumeInfo::Rejected) => continue,
            Some(VolumeInfo::HostPath(host, kind)) => (host, *kind),
        };
        let Some(mount_path) = mount_path else {
            continue;
        };
        if let Some(other) = volumes.iter().find(|v| v.target() == mount_path) {
            ctx.error(
                m,
                &format!("{mp}.mountPath"),
                format!(
                    "{} is already the mountPath of another mount (of {}): \
                     two volumes cannot be mounted at the same place",
                    mount_path.display(),
                    other.path.display()
                ),
            );
            continue;
        }
        let at_own_path = same_path(&mount_path.to_string_lossy(), host);
        volumes.push(HostPathVolume {
            path: host.clone(),
            kind,
            mount_path: (!at_own_path).then_some(mount_path),
            read_only,
            propagation,
        });
    }
    volumes
}

/// A `mountPath` made canonical (no trailing `/`, no `.` or empty
/// components), or why it is refused: not absolute, a `..` component, or
/// `/` itself (the process's root is the host's).
fn clean_mount_path(s: &str) -> Result<PathBuf, &'static str> {
    if !s.starts_with('/') {
        return Err("must be an absolute path");
    }
    if s.split('/').any(|c| c == "..") {
        return Err("has a `..` component: write the path without it (the kubelet refuses it too)");
    }
    let p: PathBuf = Path::new(s)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect();
    if p == Path::new("/") {
        return Err(
            "is the root: the process's root is the host's, nothing can be mounted over it",
        );
    }
    Ok(p)
}

fn same_path(a: &str, b: &Path) -> bool {
    let norm = |s: &str| {
        let t = s.trim_end_matches('/');
        if t.is_empty() {
            "/".to_string()
        } else {
            t.to_string()
        }
    };
    norm(a) == norm(&b.to_string_lossy())
}
