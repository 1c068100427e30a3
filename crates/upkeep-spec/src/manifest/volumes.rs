//! `spec.volumes`: hostPath volumes only, each mounted at its own path.

use std::path::{Path, PathBuf};

use super::dns_label;
use super::pod::PodInfo;
use crate::diag::Severity;
use crate::node::{Ctx, Node};
use crate::types::HostPathType;

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

pub(super) fn same_path(a: &str, b: &Path) -> bool {
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
