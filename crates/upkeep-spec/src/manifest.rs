//! Static Pod manifests: reading the directory, parsing and validating each
//! file, resolving containers to [`ServiceSpec`]s, and keeping the last good
//! version of each file (design.md section 5).
//!
//! A manifest is parsed (first YAML/JSON document only, serde-saphyr with its
//! default budgets against alias bombs and deep nesting) into a located tree,
//! then walked against the supported PodSpec subset. Every problem of a file
//! is reported in one go; unknown fields are warnings naming the field path.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::{read_capped, resolve_group, resolve_user, Config, DEFAULT_PATH};
use crate::diag::{Diagnostic, Severity};
use crate::expand::{expand, static_lookup};
use crate::hash::{fnv1a_128_hex, spec_hash};
use crate::node::{self, Ctx, Fields, Kind, Node};
use crate::quantity::Quantity;
use crate::types::{
    HostPathType, HostPathVolume, Origin, Probe, ProbeHandler, Probes, Resources, RestartPolicy,
    Scheme, ServiceSpec,
};

/// Largest manifest read (the kubelet's `maxConfigLength`).
pub const MAX_MANIFEST_BYTES: u64 = 10 * 1024 * 1024;

/// A manifest file that parsed and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedPod {
    /// The file.
    pub file: PathBuf,
    /// `metadata.name`.
    pub pod_name: String,
    /// Content hash of the normalized pod spec (comments, whitespace, key order excluded).
    pub hash: String,
    /// One per container.
    pub services: Vec<ServiceSpec>,
    /// Warnings found while loading (unknown fields, hostNetwork false, ...).
    pub warnings: Vec<Diagnostic>,
}

/// What became of one directory entry.
#[derive(Debug, Clone, PartialEq)]
pub enum FileOutcome {
    /// Parsed and valid.
    Pod(LoadedPod),
    /// Rejected: every error found (errors first, then the warnings of the same file).
    Invalid(Vec<Diagnostic>),
    /// Skipped on purpose (editor artifact, subdirectory): a note saying why.
    Ignored(Diagnostic),
}

/// One full listing of the manifests directory.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DirScan {
    /// Every entry looked at, by path.
    pub files: BTreeMap<PathBuf, FileOutcome>,
    /// Problems with the directory itself (missing, insecure permissions).
    pub diagnostics: Vec<Diagnostic>,
    /// The directory could not be listed (missing or unreadable): callers must
    /// keep what runs rather than treat this as "no pods".
    pub unreadable: bool,
}

/// Whether a file name is an editor or package-manager artifact that is
/// never read as a manifest (`*~`, `*.swp`, `*.swx`, `*.bak`, `*.orig`,
/// `*.rej`, `*.dpkg-*`, `#*#`).
pub fn is_editor_artifact(name: &str) -> bool {
    name.ends_with('~')
        || [".swp", ".swx", ".bak", ".orig", ".rej"]
            .iter()
            .any(|s| name.ends_with(s))
        || name.contains(".dpkg-")
        || (name.len() >= 2 && name.starts_with('#') && name.ends_with('#'))
}

/// An image reference without its tag or digest:
/// `registry.k8s.io/etcd:3.5.10-0` gives `registry.k8s.io/etcd`, and a
/// registry port (`localhost:5000/etcd`) is kept.
pub fn image_name(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(colon) if !no_digest[colon..].contains('/') => &no_digest[..colon],
        _ => no_digest,
    }
}

/// Why a manifest directory or file may not be trusted, if it may not: it is
/// writable by group or others, or owned by someone other than root or us.
fn insecure(meta: &std::fs::Metadata, what: &str) -> Option<String> {
    let mode = meta.mode();
    let uid = meta.uid();
    let euid = nix::unistd::geteuid().as_raw();
    if mode & 0o022 != 0 {
        Some(format!(
            "refused: {what} is writable by group or others (mode {:04o}); whoever can write a manifest \
             runs code as root. Fix it with `chmod go-w`, or set allow_writable_manifests = true",
            mode & 0o7777
        ))
    } else if uid != 0 && uid != euid {
        Some(format!(
            "refused: {what} is owned by uid {uid}, not root or upkeep's own uid {euid}; whoever can write \
             a manifest runs code as root. Fix the owner, or set allow_writable_manifests = true"
        ))
    } else {
        None
    }
}

/// Lists and loads every manifest in `cfg.manifests` (a directory, or a
/// single file).
pub fn scan(cfg: &Config) -> DirScan {
    let root = &cfg.manifests;
    let mut out = DirScan::default();
    let meta = match std::fs::metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.diagnostics.push(Diagnostic::warning(
                root,
                None,
                "the manifests directory does not exist (yet): no static pods",
            ));
            out.unreadable = true;
            return out;
        }
        Err(e) => {
            out.diagnostics.push(Diagnostic::error(
                root,
                None,
                format!("cannot read the manifests path: {e}"),
            ));
            out.unreadable = true;
            return out;
        }
    };
    if meta.is_file() {
        out.files.insert(root.clone(), load_file(root, cfg));
        return out;
    }
    if !meta.is_dir() {
        out.diagnostics.push(Diagnostic::error(
            root,
            None,
            "the manifests path is not a directory or file",
        ));
        out.unreadable = true;
        return out;
    }
    if !cfg.allow_writable_manifests {
        if let Some(why) = insecure(&meta, "the manifests directory") {
            out.diagnostics.push(Diagnostic::error(root, None, why));
            out.unreadable = true;
            return out;
        }
    }
    let entries = match std::fs::read_dir(root) {
        Ok(rd) => rd,
        Err(e) => {
            out.diagnostics.push(Diagnostic::error(
                root,
                None,
                format!("cannot list the manifests directory: {e}"),
            ));
            out.unreadable = true;
            return out;
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        match entry {
            Ok(e) => names.push(e.file_name()),
            Err(e) => {
                out.diagnostics.push(Diagnostic::error(
                    root,
                    None,
                    format!("cannot list the manifests directory: {e}"),
                ));
                out.unreadable = true;
            }
        }
    }
    names.sort();
    for name in names {
        let lossy = name.to_string_lossy();
        if lossy.starts_with('.') {
            continue;
        }
        let path = root.join(&name);
        if is_editor_artifact(&lossy) {
            let note = Diagnostic::note(&path, "ignored: editor or package-manager artifact");
            out.files.insert(path, FileOutcome::Ignored(note));
            continue;
        }
        let outcome = match std::fs::metadata(&path) {
            Err(e) => FileOutcome::Invalid(vec![Diagnostic::error(
                &path,
                None,
                format!("cannot read: {e}"),
            )]),
            Ok(m) if m.is_dir() => FileOutcome::Ignored(Diagnostic::note(
                &path,
                "ignored: a subdirectory (not recursing)",
            )),
            Ok(m) if !m.is_file() => {
                FileOutcome::Ignored(Diagnostic::note(&path, "ignored: not a regular file"))
            }
            Ok(_) => load_file(&path, cfg),
        };
        out.files.insert(path, outcome);
    }
    out
}

/// Loads one manifest file: ownership and mode check, 10 MiB cap (checked
/// before reading), then [`parse`].
pub fn load_file(path: &Path, cfg: &Config) -> FileOutcome {
    let fail = |msg: String| FileOutcome::Invalid(vec![Diagnostic::error(path, None, msg)]);
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return fail(format!("cannot read: {e}")),
    };
    if !cfg.allow_writable_manifests {
        if let Some(why) = insecure(&meta, "the file") {
            return fail(why);
        }
    }
    if meta.len() > MAX_MANIFEST_BYTES {
        return fail(format!(
            "file is {} bytes, more than the {MAX_MANIFEST_BYTES}-byte (10 MiB) limit",
            meta.len()
        ));
    }
    match read_capped(path, MAX_MANIFEST_BYTES) {
        Ok(bytes) => parse(&bytes, path, cfg),
        Err(e) => fail(format!("cannot read: {e}")),
    }
}

/// Parses manifest text as if read from `path`, for tests and fuzzing.
pub fn parse(text: &[u8], path: &Path, cfg: &Config) -> FileOutcome {
    let fail = |msg: String, line: Option<usize>| {
        FileOutcome::Invalid(vec![Diagnostic::error(path, None, msg).at_line(line)])
    };
    if text.len() as u64 > MAX_MANIFEST_BYTES {
        return fail(
            format!("manifest is more than the {MAX_MANIFEST_BYTES}-byte (10 MiB) limit"),
            None,
        );
    }
    let text = match std::str::from_utf8(text) {
        Ok(t) => t,
        Err(e) => {
            return fail(
                format!(
                    "not valid UTF-8 at byte {} (not a YAML or JSON manifest?)",
                    e.valid_up_to()
                ),
                None,
            )
        }
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if text.contains('\0') {
        return fail(
            "contains a NUL byte (not a YAML or JSON manifest?)".into(),
            None,
        );
    }
    let (root, more) = match node::parse_yaml(text) {
        Ok((Some(root), more)) => (root, more),
        Ok((None, _)) => return fail("empty manifest: no YAML or JSON document".into(), None),
        Err(e) => return fail(format!("invalid YAML: {}", e.message), e.line),
    };
    let mut ctx = Ctx::new(path);
    if more {
        ctx.push(
            Severity::Warning,
            None,
            "",
            "the file holds more than one YAML document; only the first is used (as the kubelet)",
        );
    }
    let pod = read_pod(&mut ctx, &root, cfg);
    match pod {
        Some((pod_name, services)) if !ctx.has_errors() => {
            let hash = fnv1a_128_hex(root.to_json().to_string().as_bytes());
            FileOutcome::Pod(LoadedPod {
                file: path.to_path_buf(),
                pod_name,
                hash,
                services,
                warnings: ctx.diags,
            })
        }
        _ => {
            let mut diags = ctx.diags;
            diags.sort_by_key(|d| std::cmp::Reverse(d.severity));
            FileOutcome::Invalid(diags)
        }
    }
}

// === Name rules ===

/// DNS-1123 label: at most 63 of `[a-z0-9-]`, starting and ending alphanumeric.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS-1123 subdomain: at most 253, dot-separated labels.
fn dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(dns_label)
}

/// IANA service name (a named port): 1-15 of `[a-z0-9-]` with a letter, no
/// leading, trailing or double `-`.
fn iana_svc_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}

// === The pod ===

/// Facts about the pod that containers need.
struct PodInfo {
    name: String,
    namespace: String,
    uid: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    restart: RestartPolicy,
    grace: Duration,
    run_as_user: Option<(u32, Option<u32>)>,
    run_as_group: Option<u32>,
    run_as_non_root: bool,
    volumes: BTreeMap<String, VolumeInfo>,
}

/// A declared volume.
enum VolumeInfo {
    HostPath(PathBuf, HostPathType),
    /// Declared but unusable (already reported).
    Rejected,
}

const POD_SPEC_IGNORED: &[&str] = &[
    "priority",
    "priorityClassName",
    "preemptionPolicy",
    "schedulerName",
    "nodeSelector",
    "affinity",
    "tolerations",
    "dnsPolicy",
    "nodeName",
    "enableServiceLinks",
    "topologySpreadConstraints",
    "automountServiceAccountToken",
    "imagePullSecrets",
    "hostPID",
    "hostIPC",
    "readinessGates",
    "os",
];

const POD_SPEC_UNSUPPORTED: &[(&str, &str)] = &[
    (
        "initContainers",
        "init containers are not supported; ignored",
    ),
    (
        "ephemeralContainers",
        "ephemeral containers are not supported; ignored",
    ),
    ("activeDeadlineSeconds", "not supported; ignored"),
    (
        "hostAliases",
        "not supported (processes see the host's /etc/hosts); ignored",
    ),
    (
        "dnsConfig",
        "not supported (processes use the host's resolver); ignored",
    ),
    (
        "runtimeClassName",
        "not supported (no container runtime); ignored",
    ),
    ("shareProcessNamespace", "not supported; ignored"),
    (
        "hostname",
        "not supported (processes see the host name); ignored",
    ),
    ("subdomain", "not supported; ignored"),
    ("setHostnameAsFQDN", "not supported; ignored"),
    ("overhead", "not supported; ignored"),
    (
        "hostUsers",
        "not supported (processes run in the host user namespace); ignored",
    ),
    ("schedulingGates", "not supported; ignored"),
    (
        "resources",
        "pod-level resources are not supported; set them per container",
    ),
];

/// Walks the whole document. Returns the pod name and its services when the
/// pod got far enough to resolve (errors may still be in `ctx`).
fn read_pod(ctx: &mut Ctx<'_>, root: &Node, cfg: &Config) -> Option<(String, Vec<ServiceSpec>)> {
    let mut top = ctx.fields(root, "")?;
    if matches!(root.kind, Kind::Null) {
        ctx.error(root, "", "empty manifest: no Pod");
        return None;
    }
    // kind first: a Deployment would only produce noise below.
    let kind = top.get("kind").map(|n| (n, ctx.string(n, "kind")));
    match &kind {
        None => ctx.error(
            root,
            "kind",
            "missing: a static manifest holds one object with apiVersion: v1 and kind: Pod",
        ),
        Some((_, Some(k))) if k == "Pod" => {}
        Some((n, Some(k))) if k == "PodList" || k == "List" => {
            ctx.error(
                n,
                "kind",
                format!("{k} is not supported: the kubelet's file source reads exactly one Pod per file; split it into one file per Pod"),
            );
            return None;
        }
        Some((n, Some(k))) => {
            ctx.error(
                n,
                "kind",
                format!(
                    "{k} is not supported: a static manifest must be a Pod (apiVersion: v1, kind: Pod){}",
                    if matches!(k.as_str(), "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet" | "Job") {
                        "; controllers need an API server"
                    } else {
                        ""
                    }
                ),
            );
            return None;
        }
        Some((_, None)) => return None,
    }
    match top.get("apiVersion") {
        None => ctx.error(root, "apiVersion", "missing: must be v1"),
        Some(n) => {
            if let Some(v) = ctx.string(n, "apiVersion") {
                if v != "v1" {
                    ctx.error(
                        n,
                        "apiVersion",
                        format!("{v:?}: a Pod must be apiVersion v1"),
                    );
                }
            }
        }
    }
    top.ignore(&["status"]);
    let (name, namespace, uid_field, labels, annotations) = match top.get("metadata") {
        Some(m) => read_metadata(ctx, m),
        None => {
            ctx.error(root, "metadata.name", "missing: a static pod needs a name");
            (
                None,
                "default".to_string(),
                None,
                BTreeMap::new(),
                BTreeMap::new(),
            )
        }
    };
    let spec = top.get("spec");
    top.finish(ctx, Severity::Warning);
    let Some(spec) = spec else {
        ctx.error(root, "spec", "missing: a Pod needs a spec with containers");
        return None;
    };
    // Without a name (already an error) the rest is still checked.
    let name = name.unwrap_or_default();
    let uid = uid_field.unwrap_or_else(|| {
        let text = format!(
            "{}host:{}file:{}",
            root.to_json(),
            cfg.node_name,
            ctx.file.display()
        );
        fnv1a_128_hex(text.as_bytes())
    });
    let mut info = PodInfo {
        name,
        namespace,
        uid,
        labels,
        annotations,
        restart: RestartPolicy::Always,
        grace: Duration::from_secs(30),
        run_as_user: None,
        run_as_group: None,
        run_as_non_root: false,
        volumes: BTreeMap::new(),
    };
    let services = read_spec(ctx, spec, cfg, &mut info)?;
    Some((info.name, services))
}

type Metadata = (
    Option<String>,
    String,
    Option<String>,
    BTreeMap<String, String>,
    BTreeMap<String, String>,
);

fn read_metadata(ctx: &mut Ctx<'_>, m: &Node) -> Metadata {
    let mut out: Metadata = (
        None,
        "default".to_string(),
        None,
        BTreeMap::new(),
        BTreeMap::new(),
    );
    let Some(mut f) = ctx.fields(m, "metadata") else {
        return out;
    };
    match f.get_some("name") {
        None => ctx.error(m, "metadata.name", "missing: a static pod needs a name"),
        Some(n) => {
            if let Some(s) = ctx.string(n, "metadata.name") {
                if dns_subdomain(&s) {
                    out.0 = Some(s);
                } else {
                    ctx.error(
                        n,
                        "metadata.name",
                        format!("{s:?} is not a valid name: lower-case letters, digits, '-' and '.', at most 253, starting and ending alphanumeric"),
                    );
                }
            }
        }
    }
    if let Some(n) = f.get_some("namespace") {
        if let Some(s) = ctx.string(n, "metadata.namespace") {
            if dns_label(&s) {
                out.1 = s;
            } else {
                ctx.error(
                    n,
                    "metadata.namespace",
                    format!("{s:?} is not a valid namespace (DNS-1123 label)"),
                );
            }
        }
    }
    if let Some(n) = f.get_some("uid") {
        out.2 = ctx.string(n, "metadata.uid");
    }
    for (key, slot) in [("labels", &mut out.3), ("annotations", &mut out.4)] {
        if let Some(n) = f.get(key) {
            if let Some(mut lf) = ctx.fields(n, &format!("metadata.{key}")) {
                for e in lf.all() {
                    if let Some(v) = ctx.string(&e.value, &format!("metadata.{key}.{}", e.key)) {
                        slot.insert(e.key.clone(), v);
                    }
                }
            }
        }
    }
    f.ignore(&[
        "creationTimestamp",
        "resourceVersion",
        "generation",
        "selfLink",
        "managedFields",
        "ownerReferences",
        "finalizers",
    ]);
    f.unsupported(
        ctx,
        Severity::Warning,
        &[("generateName", "not supported for static pods; use name")],
    );
    f.finish(ctx, Severity::Warning);
    out
}

fn read_spec(
    ctx: &mut Ctx<'_>,
    spec: &Node,
    cfg: &Config,
    info: &mut PodInfo,
) -> Option<Vec<ServiceSpec>> {
    let mut f = ctx.fields(spec, "spec")?;
    f.ignore(POD_SPEC_IGNORED);
    f.unsupported(ctx, Severity::Warning, POD_SPEC_UNSUPPORTED);
    for key in ["serviceAccountName", "serviceAccount"] {
        if let Some(n) = f.get_some(key) {
            ctx.error(
                n,
                &format!("spec.{key}"),
                "static pods may not reference API objects (a service account); remove it",
            );
        }
    }
    if let Some(n) = f.get_some("resourceClaims") {
        ctx.error(
            n,
            "spec.resourceClaims",
            "static pods may not reference API objects (resource claims)",
        );
    }
    match f.get_some("hostNetwork") {
        Some(n) => {
            if ctx.bool(n, "spec.hostNetwork") == Some(false) {
                ctx.warn(
                    n,
                    "spec.hostNetwork",
                    "hostNetwork is false, but upkeep runs every process on the host network",
                );
            }
        }
        None => ctx.push(
            Severity::Warning,
            spec.line,
            "spec.hostNetwork",
            "not set (false), but upkeep runs every process on the host network",
        ),
    }
    if let Some(n) = f.get_some("restartPolicy") {
        match ctx.string(n, "spec.restartPolicy").as_deref() {
            Some("Always") => info.restart = RestartPolicy::Always,
            Some("OnFailure") => info.restart = RestartPolicy::OnFailure,
            Some("Never") => info.restart = RestartPolicy::Never,
            Some(other) => ctx.error(
                n,
                "spec.restartPolicy",
                format!("{other:?}: expected Always, OnFailure or Never"),
            ),
            None => {}
        }
    }
    if let Some(n) = f.get_some("terminationGracePeriodSeconds") {
        if let Some(s) = ctx.int_in(n, "spec.terminationGracePeriodSeconds", 0, i64::MAX.into()) {
            info.grace = Duration::from_secs(s as u64);
        }
    }
    if let Some(n) = f.get("securityContext") {
        if let Some(mut sf) = ctx.fields(n, "spec.securityContext") {
            let (u, g, nr) = read_security_context(ctx, &mut sf);
            info.run_as_user = u;
            info.run_as_group = g;
            info.run_as_non_root = nr.unwrap_or(false);
            sf.finish(ctx, Severity::Warning);
        }
    }
    if let Some(n) = f.get("volumes") {
        read_volumes(ctx, n, info);
    }
    let containers = f.get("containers");
    f.finish(ctx, Severity::Warning);
    let Some(containers) = containers else {
        ctx.error(
            spec,
            "spec.containers",
            "missing: a Pod needs at least one container",
        );
        return None;
    };
    let items = ctx.list(containers, "spec.containers")?;
    if items.is_empty() {
        ctx.error(
            containers,
            "spec.containers",
            "a Pod needs at least one container",
        );
        return None;
    }
    let mut names = BTreeSet::new();
    let mut services = Vec::new();
    for (i, c) in items.iter().enumerate() {
        let path = format!("spec.containers[{i}]");
        if let Some(spec) = read_container(ctx, c, &path, cfg, info, items.len()) {
            if let Origin::StaticPod { container, .. } = &spec.origin {
                if !names.insert(container.clone()) {
                    ctx.error(
                        c,
                        &format!("{path}.name"),
                        format!("duplicate container name {container:?}"),
                    );
                }
            }
            services.push(spec);
        }
    }
    Some(services)
}

/// Reads `runAsUser`, `runAsGroup`, `runAsNonRoot` and notes the rest.
#[allow(clippy::type_complexity)]
fn read_security_context(
    ctx: &mut Ctx<'_>,
    f: &mut Fields<'_>,
) -> (Option<(u32, Option<u32>)>, Option<u32>, Option<bool>) {
    let mut user = None;
    let mut group = None;
    let mut non_root = None;
    if let Some(n) = f.get_some("runAsUser") {
        if let Some(i) = ctx.int_in(n, &f.sub("runAsUser"), 0, u32::MAX.into()) {
            user = resolve_user(&Kind::Int(i)).ok();
        }
    }
    if let Some(n) = f.get_some("runAsGroup") {
        if let Some(i) = ctx.int_in(n, &f.sub("runAsGroup"), 0, u32::MAX.into()) {
            group = resolve_group(&Kind::Int(i)).ok();
        }
    }
    if let Some(n) = f.get_some("runAsNonRoot") {
        non_root = ctx.bool(n, &f.sub("runAsNonRoot"));
    }
    f.unsupported(
        ctx,
        Severity::Note,
        &[
            (
                "seccompProfile",
                "not applied: processes run without a seccomp filter",
            ),
            ("seLinuxOptions", "not applied"),
            ("appArmorProfile", "not applied"),
            ("windowsOptions", "not applied"),
            (
                "privileged",
                "not applied: processes run with the privileges of their uid",
            ),
            ("allowPrivilegeEscalation", "not applied"),
            (
                "readOnlyRootFilesystem",
                "not applied: processes see the host filesystem",
            ),
            ("procMount", "not applied"),
        ],
    );
    f.unsupported(
        ctx,
        Severity::Warning,
        &[
            (
                "capabilities",
                "not applied: processes keep the capabilities of their uid",
            ),
            ("fsGroup", "not supported; ignored"),
            ("fsGroupChangePolicy", "not supported; ignored"),
            ("supplementalGroups", "not supported; ignored"),
            ("supplementalGroupsPolicy", "not supported; ignored"),
            ("sysctls", "not supported (would change the host); ignored"),
            ("seLinuxChangePolicy", "not supported; ignored"),
        ],
    );
    (user, group, non_root)
}

fn read_volumes(ctx: &mut Ctx<'_>, n: &Node, info: &mut PodInfo) {
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
    Some(VolumeInfo::HostPath(PathBuf::from(p), kind))
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

const CONTAINER_UNSUPPORTED: &[(&str, &str)] = &[
    ("stdin", "not supported; ignored"),
    ("stdinOnce", "not supported; ignored"),
    ("tty", "not supported; ignored"),
    ("volumeDevices", "not supported; ignored"),
    (
        "restartPolicy",
        "container restartPolicy (sidecars) is not supported; the pod's restartPolicy applies",
    ),
    (
        "restartPolicyRules",
        "not supported; the pod's restartPolicy applies",
    ),
    ("resizePolicy", "not supported; ignored"),
];

/// One resolved env entry, in declared order.
struct EnvEntry {
    name: String,
    /// The literal `value` (for the static expansion of exec commands).
    raw: String,
    /// The resolved value; `None` leaves the variable unset.
    value: Option<String>,
}

fn read_container(
    ctx: &mut Ctx<'_>,
    c: &Node,
    path: &str,
    cfg: &Config,
    pod: &PodInfo,
    count: usize,
) -> Option<ServiceSpec> {
    let mut f = ctx.fields(c, path)?;
    f.ignore(&[
        "imagePullPolicy",
        "terminationMessagePath",
        "terminationMessagePolicy",
    ]);
    f.unsupported(ctx, Severity::Warning, CONTAINER_UNSUPPORTED);
    let name = match f.get_some("name") {
        Some(n) => ctx.string(n, &f.sub("name")).and_then(|s| {
            if dns_label(&s) {
                Some(s)
            } else {
                ctx.error(
                    n,
                    &f.sub("name"),
                    format!("{s:?} is not a valid container name (DNS-1123 label)"),
                );
                None
            }
        }),
        None => {
            ctx.error(c, &f.sub("name"), "missing: every container needs a name");
            None
        }
    };
    let image = match f.get_some("image") {
        Some(n) => ctx.string(n, &f.sub("image")).filter(|s| {
            let ok = !s.trim().is_empty();
            if !ok {
                ctx.error(n, &format!("{path}.image"), "must not be empty");
            }
            ok
        }),
        None => {
            ctx.error(
                c,
                &f.sub("image"),
                "missing: the kubelet requires an image (upkeep does not pull it)",
            );
            None
        }
    };
    let command = f
        .get_some("command")
        .and_then(|n| ctx.string_list(n, &format!("{path}.command")));
    let args = f
        .get_some("args")
        .and_then(|n| ctx.string_list(n, &format!("{path}.args")))
        .unwrap_or_default();
    let mut working_dir = PathBuf::from("/");
    if let Some(n) = f.get_some("workingDir") {
        if let Some(s) = ctx.string(n, &f.sub("workingDir")) {
            if s.starts_with('/') {
                working_dir = PathBuf::from(s);
            } else if !s.is_empty() {
                ctx.error(
                    n,
                    &f.sub("workingDir"),
                    format!("{s:?} must be an absolute path"),
                );
            }
        }
    }
    // Ports: name -> number, for named probe ports.
    let mut ports: BTreeMap<String, u16> = BTreeMap::new();
    if let Some(n) = f.get("ports") {
        if let Some(items) = ctx.list(n, &f.sub("ports")) {
            for (i, p) in items.iter().enumerate() {
                let pp = format!("{path}.ports[{i}]");
                let Some(mut pf) = ctx.fields(p, &pp) else {
                    continue;
                };
                let number = match pf.get_some("containerPort") {
                    Some(v) => ctx.int_in(v, &pf.sub("containerPort"), 1, 65535),
                    None => {
                        ctx.error(p, &pf.sub("containerPort"), "missing");
                        None
                    }
                };
                if let Some(v) = pf.get_some("hostPort") {
                    ctx.int_in(v, &pf.sub("hostPort"), 1, 65535);
                }
                if let Some(v) = pf.get_some("name") {
                    if let Some(s) = ctx.string(v, &pf.sub("name")) {
                        if !iana_svc_name(&s) {
                            ctx.error(
                                v,
                                &pf.sub("name"),
                                format!("{s:?} is not a valid port name (IANA service name)"),
                            );
                        } else if let Some(num) = number {
                            ports.insert(s, num as u16);
                        }
                    }
                }
                if let Some(v) = pf.get_some("protocol") {
                    if let Some(s) = ctx.string(v, &pf.sub("protocol")) {
                        if !matches!(s.as_str(), "TCP" | "UDP" | "SCTP") {
                            ctx.error(
                                v,
                                &pf.sub("protocol"),
                                format!("{s:?}: expected TCP, UDP or SCTP"),
                            );
                        }
                    }
                }
                pf.ignore(&["hostIP"]);
                pf.finish(ctx, Severity::Warning);
            }
        }
    }
    // Env, in declared order; each value sees earlier entries only.
    let mut env: Vec<EnvEntry> = Vec::new();
    if let Some(n) = f.get("env") {
        read_env(ctx, n, &format!("{path}.env"), cfg, pod, &mut env);
    }
    if let Some(n) = f.get("envFrom") {
        if let Some(items) = ctx.list(n, &f.sub("envFrom")) {
            for (i, item) in items.iter().enumerate() {
                ctx.error(
                    item,
                    &format!("{path}.envFrom[{i}]"),
                    "static pods may not reference API objects (configMap/secret); set env values directly",
                );
            }
        }
    }
    let (mut uid, mut gid, mut non_root) = (pod.run_as_user, pod.run_as_group, pod.run_as_non_root);
    if let Some(n) = f.get("securityContext") {
        if let Some(mut sf) = ctx.fields(n, &f.sub("securityContext")) {
            let (u, g, nr) = read_security_context(ctx, &mut sf);
            uid = u.or(uid);
            gid = g.or(gid);
            non_root = nr.unwrap_or(non_root);
            sf.finish(ctx, Severity::Warning);
        }
    }
    // Volume mounts: every one must name a declared volume mounted at its own path.
    let mut volumes = Vec::new();
    if let Some(n) = f.get("volumeMounts") {
        if let Some(items) = ctx.list(n, &f.sub("volumeMounts")) {
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
                    Some(v) => ctx.string(v, &mf.sub("mountPath")),
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
                                "not supported: processes see host paths directly",
                            );
                        }
                    }
                }
                mf.ignore(&["readOnly", "mountPropagation", "recursiveReadOnly"]);
                mf.finish(ctx, Severity::Warning);
                let Some(mname) = mname else { continue };
                match pod.volumes.get(&mname) {
                    None => ctx.error(
                        m,
                        &format!("{mp}.name"),
                        format!("no such volume {mname:?} in spec.volumes"),
                    ),
                    Some(VolumeInfo::Rejected) => {}
                    Some(VolumeInfo::HostPath(host, kind)) => {
                        if let Some(mount_path) = mount_path {
                            if !same_path(&mount_path, host) {
                                ctx.error(
                                    m,
                                    &format!("{mp}.mountPath"),
                                    format!(
                                        "mountPath {mount_path:?} differs from the hostPath {:?} of volume {mname:?}: \
                                         upkeep runs processes on the host filesystem, so a hostPath must be mounted at its own path",
                                        host.display()
                                    ),
                                );
                            } else if !volumes.iter().any(|v: &HostPathVolume| &v.path == host) {
                                volumes.push(HostPathVolume {
                                    path: host.clone(),
                                    kind: *kind,
                                });
                            }
                        }
                    }
                }
            }
        }
    }
    // Resources.
    let mut resources = Resources::default();
    if let Some(n) = f.get("resources") {
        read_resources(ctx, n, &f.sub("resources"), &mut resources);
    }
    // Static mapping for exec probes and hooks: the literal value of each entry.
    let static_pairs: Vec<(String, String)> = env
        .iter()
        .map(|e| (e.name.clone(), e.raw.clone()))
        .collect();
    // Lifecycle.
    let mut pre_stop = None;
    let mut stop_signal = "SIGTERM".to_string();
    if let Some(n) = f.get("lifecycle") {
        if let Some(mut lf) = ctx.fields(n, &f.sub("lifecycle")) {
            if let Some(ps) = lf.get_some("preStop") {
                pre_stop = read_pre_stop(ctx, ps, &lf.sub("preStop"), &static_pairs);
            }
            lf.unsupported(
                ctx,
                Severity::Warning,
                &[("postStart", "postStart hooks are not supported; ignored")],
            );
            if let Some(sig) = lf.get_some("stopSignal") {
                if let Some(s) = ctx.string(sig, &lf.sub("stopSignal")) {
                    match crate::config::normalize_signal(&s) {
                        Ok(s) => stop_signal = s,
                        Err(e) => ctx.error(sig, &lf.sub("stopSignal"), e),
                    }
                }
            }
            lf.finish(ctx, Severity::Warning);
        }
    }
    // Probes.
    let mut probes = Probes::default();
    let probe_env = ProbeEnv {
        ports: &ports,
        static_pairs: &static_pairs,
        node_ip: &cfg.node_ip,
    };
    for (key, slot, kind) in [
        ("livenessProbe", &mut probes.liveness, ProbeKind::Liveness),
        (
            "readinessProbe",
            &mut probes.readiness,
            ProbeKind::Readiness,
        ),
        ("startupProbe", &mut probes.startup, ProbeKind::Startup),
    ] {
        if let Some(n) = f.get_some(key) {
            *slot = read_probe(ctx, n, &f.sub(key), kind, &probe_env);
        }
    }
    f.finish(ctx, Severity::Warning);

    // Resolve argv: command ++ args, expanded against the final declared env.
    let final_env: BTreeMap<String, String> = env
        .iter()
        .filter_map(|e| e.value.clone().map(|v| (e.name.clone(), v)))
        .collect();
    let name = name?;
    let image = image?;
    let mut raw_argv = match command {
        Some(cmd) if !cmd.is_empty() => cmd,
        _ => match cfg.images.get(image_name(&image)) {
            Some(entry) => entry.clone(),
            None => {
                ctx.error(
                    c,
                    &format!("{path}.command"),
                    format!(
                        "no command, and no [images] entry for {:?} in the config: upkeep runs no images, \
                         so set command (or map the image to an entrypoint under [images])",
                        image_name(&image)
                    ),
                );
                return None;
            }
        },
    };
    raw_argv.extend(args);
    let argv: Vec<String> = raw_argv
        .iter()
        .map(|a| expand(a, |n| final_env.get(n).cloned()))
        .collect();
    if argv[0].is_empty() {
        ctx.error(
            c,
            &format!("{path}.command"),
            "the program (command[0]) is empty",
        );
    }
    if non_root
        && uid
            .map(|(u, _)| u)
            .unwrap_or_else(|| nix::unistd::geteuid().as_raw())
            == 0
    {
        ctx.error(
            c,
            &format!("{path}.securityContext.runAsNonRoot"),
            "runAsNonRoot is true but the process would run as root; set runAsUser",
        );
    }
    let mut env_map = final_env;
    env_map
        .entry("PATH".to_string())
        .or_insert_with(|| DEFAULT_PATH.to_string());
    let service_name = if count == 1 {
        pod.name.clone()
    } else {
        format!("{}/{}", pod.name, name)
    };
    let mut spec = ServiceSpec {
        name: service_name,
        source: ctx.file.to_path_buf(),
        origin: Origin::StaticPod {
            pod: pod.name.clone(),
            namespace: pod.namespace.clone(),
            container: name,
        },
        argv,
        env: env_map,
        working_dir,
        uid: uid.map(|(u, _)| u),
        gid: gid.or_else(|| uid.and_then(|(_, g)| g)),
        restart: pod.restart,
        backoff: cfg.default_backoff,
        stop_signal,
        stop_grace: pod.grace,
        pre_stop,
        probes,
        after: Vec::new(),
        log: cfg.default_log,
        volumes,
        resources,
        hash: String::new(),
    };
    spec.hash = spec_hash(&spec);
    Some(spec)
}

fn read_env(
    ctx: &mut Ctx<'_>,
    n: &Node,
    path: &str,
    cfg: &Config,
    pod: &PodInfo,
    env: &mut Vec<EnvEntry>,
) {
    let Some(items) = ctx.list(n, path) else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let ep = format!("{path}[{i}]");
        let Some(mut f) = ctx.fields(item, &ep) else {
            continue;
        };
        let name = match f.get_some("name") {
            Some(v) => ctx.string(v, &f.sub("name")).filter(|s| {
                let ok = !s.is_empty() && !s.contains('=') && !s.contains('\0');
                if !ok {
                    ctx.error(
                        v,
                        &format!("{ep}.name"),
                        format!("{s:?} is not a valid variable name"),
                    );
                }
                ok
            }),
            None => {
                ctx.error(item, &f.sub("name"), "missing");
                None
            }
        };
        let raw = f
            .get_some("value")
            .and_then(|v| ctx.string(v, &format!("{ep}.value")));
        let value_from = f.get_some("valueFrom");
        f.finish(ctx, Severity::Warning);
        let Some(name) = name else { continue };
        let value = match (raw.as_deref(), value_from) {
            (Some(r), Some(vf)) if !r.is_empty() => {
                ctx.error(
                    vf,
                    &format!("{ep}.valueFrom"),
                    "may not be set together with a non-empty value",
                );
                None
            }
            (_, Some(vf)) => read_value_from(ctx, vf, &format!("{ep}.valueFrom"), cfg, pod),
            (Some(r), None) if !r.is_empty() => Some(expand(r, |n| {
                env.iter()
                    .rev()
                    .find(|e| e.name == n)
                    .and_then(|e| e.value.clone())
            })),
            _ => Some(String::new()),
        };
        if value.as_deref().is_some_and(|v| v.contains('\0')) {
            ctx.error(item, &ep, "the value contains a NUL byte");
        }
        env.push(EnvEntry {
            name,
            raw: raw.unwrap_or_default(),
            value,
        });
    }
}

fn read_value_from(
    ctx: &mut Ctx<'_>,
    n: &Node,
    path: &str,
    cfg: &Config,
    pod: &PodInfo,
) -> Option<String> {
    let mut f = ctx.fields(n, path)?;
    let mut out = None;
    let mut sources = 0;
    for key in ["configMapKeyRef", "secretKeyRef"] {
        if let Some(v) = f.get_some(key) {
            sources += 1;
            ctx.error(v, &f.sub(key), "static pods may not reference API objects (configMap/secret); set the value directly");
        }
    }
    for key in ["resourceFieldRef", "fileKeyRef"] {
        if let Some(v) = f.get_some(key) {
            sources += 1;
            ctx.warn(v, &f.sub(key), "not supported; the variable is left unset");
        }
    }
    if let Some(v) = f.get_some("fieldRef") {
        sources += 1;
        if let Some(mut ff) = ctx.fields(v, &f.sub("fieldRef")) {
            ff.ignore(&["apiVersion"]);
            let fp = match ff.get_some("fieldPath") {
                Some(p) => ctx.string(p, &ff.sub("fieldPath")),
                None => {
                    ctx.error(v, &ff.sub("fieldPath"), "missing");
                    None
                }
            };
            ff.finish(ctx, Severity::Warning);
            if let Some(fp) = fp {
                let lookup = |map: &BTreeMap<String, String>, rest: &str| {
                    let key = rest.strip_prefix("['").and_then(|r| r.strip_suffix("']"))?;
                    Some(map.get(key).cloned().unwrap_or_default())
                };
                let value = match fp.as_str() {
                    "metadata.name" => {
                        Some(format!("{}-{}", pod.name, cfg.node_name.to_lowercase()))
                    }
                    "metadata.namespace" => Some(pod.namespace.clone()),
                    "metadata.uid" => Some(pod.uid.clone()),
                    "spec.nodeName" => Some(cfg.node_name.clone()),
                    "spec.serviceAccountName" => Some(String::new()),
                    "status.hostIP" | "status.podIP" | "status.hostIPs" | "status.podIPs" => {
                        Some(cfg.node_ip.clone())
                    }
                    other => {
                        if let Some(rest) = other.strip_prefix("metadata.labels") {
                            lookup(&pod.labels, rest)
                        } else if let Some(rest) = other.strip_prefix("metadata.annotations") {
                            lookup(&pod.annotations, rest)
                        } else {
                            None
                        }
                    }
                };
                match value {
                    Some(v) => out = Some(v),
                    None => ctx.error(
                        v,
                        &format!("{path}.fieldRef.fieldPath"),
                        format!("unsupported fieldPath {fp:?}"),
                    ),
                }
            }
        }
    }
    f.finish(ctx, Severity::Warning);
    if sources != 1 {
        ctx.error(
            n,
            path,
            format!("valueFrom needs exactly one source, found {sources}"),
        );
    }
    out
}

fn read_resources(ctx: &mut Ctx<'_>, n: &Node, path: &str, res: &mut Resources) {
    let Some(mut f) = ctx.fields(n, path) else {
        return;
    };
    if let Some(l) = f.get("limits") {
        if let Some(mut lf) = ctx.fields(l, &format!("{path}.limits")) {
            for e in lf.all() {
                let p = format!("{path}.limits.{}", e.key);
                let text = match &e.value.kind {
                    Kind::Str(s) => s.clone(),
                    Kind::Int(i) => i.to_string(),
                    Kind::Float(x) => x.to_string(),
                    other => {
                        ctx.error(
                            &e.value,
                            &p,
                            format!(
                                "expected a quantity such as \"100Mi\", found {}",
                                other.describe()
                            ),
                        );
                        continue;
                    }
                };
                let q = match Quantity::parse(&text) {
                    Ok(q) => q,
                    Err(err) => {
                        ctx.error(&e.value, &p, err);
                        continue;
                    }
                };
                match e.key.as_str() {
                    "memory" => match q.value() {
                        Some(b) => res.memory_max = Some(b),
                        None => ctx.error(&e.value, &p, "too large"),
                    },
                    "cpu" => match q.milli_value() {
                        Some(m) => res.cpu_max_millis = Some(m),
                        None => ctx.error(&e.value, &p, "too large"),
                    },
                    _ => ctx.warn(
                        &e.value,
                        &p,
                        "only cpu and memory limits are supported; ignored",
                    ),
                }
            }
        }
    }
    if let Some(r) = f.get("requests") {
        // Requests schedule pods; they mean nothing on one node. Still validate the syntax.
        if let Some(mut rf) = ctx.fields(r, &format!("{path}.requests")) {
            for e in rf.all() {
                let text = match &e.value.kind {
                    Kind::Str(s) => Some(s.clone()),
                    Kind::Int(i) => Some(i.to_string()),
                    Kind::Float(x) => Some(x.to_string()),
                    _ => None,
                };
                if let Some(Err(err)) = text.map(|t| Quantity::parse(&t)) {
                    ctx.error(&e.value, &format!("{path}.requests.{}", e.key), err);
                }
            }
        }
    }
    if let Some(c) = f.get_some("claims") {
        ctx.error(
            c,
            &format!("{path}.claims"),
            "static pods may not reference API objects (resource claims)",
        );
    }
    f.finish(ctx, Severity::Warning);
}

fn read_pre_stop(
    ctx: &mut Ctx<'_>,
    n: &Node,
    path: &str,
    static_pairs: &[(String, String)],
) -> Option<Vec<String>> {
    let mut f = ctx.fields(n, path)?;
    let mut out = None;
    let mut handlers = 0;
    if let Some(e) = f.get_some("exec") {
        handlers += 1;
        out = read_exec(ctx, e, &f.sub("exec"), static_pairs);
    }
    for key in ["httpGet", "tcpSocket", "sleep"] {
        if let Some(v) = f.get_some(key) {
            handlers += 1;
            ctx.warn(
                v,
                &f.sub(key),
                "only exec preStop hooks are supported; this hook is not run",
            );
        }
    }
    f.finish(ctx, Severity::Warning);
    if handlers != 1 {
        ctx.error(
            n,
            path,
            format!("a hook needs exactly one handler, found {handlers}"),
        );
    }
    out
}

fn read_exec(
    ctx: &mut Ctx<'_>,
    n: &Node,
    path: &str,
    static_pairs: &[(String, String)],
) -> Option<Vec<String>> {
    let mut f = ctx.fields(n, path)?;
    let cmd = match f.get_some("command") {
        Some(c) => ctx.string_list(c, &f.sub("command")),
        None => None,
    };
    f.finish(ctx, Severity::Warning);
    match cmd {
        Some(cmd) if !cmd.is_empty() && !cmd[0].is_empty() => Some(
            cmd.iter()
                .map(|a| expand(a, static_lookup(static_pairs)))
                .collect(),
        ),
        _ => {
            ctx.error(
                n,
                &format!("{path}.command"),
                "must be a non-empty list whose first element is the program",
            );
            None
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

struct ProbeEnv<'a> {
    ports: &'a BTreeMap<String, u16>,
    static_pairs: &'a [(String, String)],
    node_ip: &'a str,
}

/// The `host` (empty or absent: the node IP) and the required `port` of an
/// `httpGet` or `tcpSocket` handler at `path`.
fn read_host_port(
    ctx: &mut Ctx<'_>,
    n: &Node,
    f: &mut Fields<'_>,
    path: &str,
    env: &ProbeEnv<'_>,
) -> (String, Option<Result<u16, String>>) {
    let port = match f.get_some("port") {
        Some(p) => read_port(ctx, p, &f.sub("port"), env),
        None => {
            ctx.error(n, &f.sub("port"), "missing");
            None
        }
    };
    let host = f
        .get_some("host")
        .and_then(|h| ctx.string(h, &format!("{path}.host")))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| env.node_ip.to_string());
    (host, port)
}

/// A probe port: an integer 1-65535 or a named port (IANA service name).
fn read_port(
    ctx: &mut Ctx<'_>,
    n: &Node,
    path: &str,
    env: &ProbeEnv<'_>,
) -> Option<Result<u16, String>> {
    match &n.kind {
        Kind::Int(_) => ctx.int_in(n, path, 1, 65535).map(|p| Ok(p as u16)),
        Kind::Str(s) => {
            if !iana_svc_name(s) {
                ctx.error(
                    n,
                    path,
                    format!("{s:?} is neither a port number nor a valid port name"),
                );
                return None;
            }
            match env.ports.get(s) {
                Some(p) => Some(Ok(*p)),
                None => {
                    let why = format!("named port {s:?} is not declared in the container's ports");
                    ctx.warn(n, path, format!("{why}; the probe cannot run (its results count neither way, as with the kubelet)"));
                    Some(Err(why))
                }
            }
        }
        other => {
            ctx.error(
                n,
                path,
                format!("expected a port number or name, found {}", other.describe()),
            );
            None
        }
    }
}

fn read_probe(
    ctx: &mut Ctx<'_>,
    n: &Node,
    path: &str,
    kind: ProbeKind,
    env: &ProbeEnv<'_>,
) -> Option<Probe> {
    let before = ctx
        .diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let mut f = ctx.fields(n, path)?;
    let mut handlers: Vec<Option<ProbeHandler>> = Vec::new();
    let mut grpc = false;
    if let Some(h) = f.get_some("httpGet") {
        handlers.push(read_http_get(ctx, h, &f.sub("httpGet"), env));
    }
    if let Some(h) = f.get_some("tcpSocket") {
        let sub = f.sub("tcpSocket");
        let handler = ctx.fields(h, &sub).and_then(|mut tf| {
            let (host, port) = read_host_port(ctx, h, &mut tf, &sub, env);
            tf.finish(ctx, Severity::Warning);
            Some(match port? {
                Ok(port) => ProbeHandler::Tcp { host, port },
                Err(reason) => ProbeHandler::Unresolved { reason },
            })
        });
        handlers.push(handler);
    }
    if let Some(h) = f.get_some("exec") {
        handlers.push(
            read_exec(ctx, h, &f.sub("exec"), env.static_pairs)
                .map(|argv| ProbeHandler::Exec { argv }),
        );
    }
    if let Some(h) = f.get_some("grpc") {
        grpc = true;
        handlers.push(None);
        ctx.warn(
            h,
            &f.sub("grpc"),
            "gRPC probes are not supported; this probe is dropped",
        );
    }
    let int_field =
        |ctx: &mut Ctx<'_>, f: &mut Fields<'_>, key: &str, min: i128, default: u32| -> u32 {
            match f.get_some(key) {
                Some(v) => match ctx.int_in(v, &f.sub(key), min.min(0), i32::MAX.into()) {
                    // 0 means "use the default", as the API server's defaulting does.
                    Some(0) => default,
                    Some(x) if x < min => {
                        ctx.error(v, &f.sub(key), format!("must be at least {min}"));
                        default
                    }
                    Some(x) => x as u32,
                    None => default,
                },
                None => default,
            }
        };
    let initial_delay = int_field(ctx, &mut f, "initialDelaySeconds", 0, 0);
    let period = int_field(ctx, &mut f, "periodSeconds", 1, 10);
    let timeout = int_field(ctx, &mut f, "timeoutSeconds", 1, 1);
    let success = int_field(ctx, &mut f, "successThreshold", 1, 1);
    let failure = int_field(ctx, &mut f, "failureThreshold", 1, 3);
    let mut termination_grace = None;
    if let Some(v) = f.get_some("terminationGracePeriodSeconds") {
        if kind == ProbeKind::Readiness {
            ctx.error(
                v,
                &f.sub("terminationGracePeriodSeconds"),
                "not allowed on a readiness probe",
            );
        } else if let Some(s) = ctx.int_in(
            v,
            &f.sub("terminationGracePeriodSeconds"),
            1,
            i64::MAX.into(),
        ) {
            termination_grace = Some(Duration::from_secs(s as u64));
        }
    }
    if kind != ProbeKind::Readiness && success != 1 {
        let line = f.get("successThreshold").and_then(|v| v.line).or(n.line);
        ctx.push(
            Severity::Error,
            line,
            &f.sub("successThreshold"),
            "must be 1 for liveness and startup probes",
        );
    }
    f.finish(ctx, Severity::Warning);
    if handlers.len() != 1 {
        ctx.error(
            n,
            path,
            format!(
                "a probe needs exactly one handler (exec, httpGet, tcpSocket or grpc), found {}",
                handlers.len()
            ),
        );
        return None;
    }
    let errors_now = ctx
        .diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    if grpc || errors_now != before {
        return None;
    }
    Some(Probe {
        handler: handlers.pop()??,
        initial_delay: Duration::from_secs(initial_delay.into()),
        period: Duration::from_secs(period.into()),
        timeout: Duration::from_secs(timeout.into()),
        success_threshold: success,
        failure_threshold: failure,
        termination_grace,
    })
}

fn read_http_get(
    ctx: &mut Ctx<'_>,
    n: &Node,
    path: &str,
    env: &ProbeEnv<'_>,
) -> Option<ProbeHandler> {
    let mut f = ctx.fields(n, path)?;
    let (host, port) = read_host_port(ctx, n, &mut f, path, env);
    let mut req_path = f
        .get_some("path")
        .and_then(|p| ctx.string(p, &format!("{path}.path")))
        .unwrap_or_default();
    if !req_path.starts_with('/') {
        req_path.insert(0, '/');
    }
    let mut scheme = Scheme::Http;
    if let Some(s) = f.get_some("scheme") {
        match ctx.string(s, &f.sub("scheme")).as_deref() {
            Some("HTTP") => scheme = Scheme::Http,
            Some("HTTPS") => scheme = Scheme::Https,
            Some(other) => ctx.error(
                s,
                &f.sub("scheme"),
                format!("{other:?}: expected HTTP or HTTPS"),
            ),
            None => {}
        }
    }
    let mut headers = Vec::new();
    if let Some(h) = f.get("httpHeaders") {
        if let Some(items) = ctx.list(h, &f.sub("httpHeaders")) {
            for (i, item) in items.iter().enumerate() {
                let hp = format!("{path}.httpHeaders[{i}]");
                let Some(mut hf) = ctx.fields(item, &hp) else {
                    continue;
                };
                let name = hf
                    .get_some("name")
                    .and_then(|v| ctx.string(v, &format!("{hp}.name")));
                let value = hf
                    .get_some("value")
                    .and_then(|v| ctx.string(v, &format!("{hp}.value")))
                    .unwrap_or_default();
                hf.finish(ctx, Severity::Warning);
                match name {
                    Some(name) if !name.is_empty() => headers.push((name, value)),
                    _ => ctx.error(
                        item,
                        &format!("{hp}.name"),
                        "missing: every header needs a name",
                    ),
                }
            }
        }
    }
    f.finish(ctx, Severity::Warning);
    Some(match port? {
        Ok(port) => ProbeHandler::Http {
            scheme,
            host,
            port,
            path: req_path,
            headers,
        },
        Err(reason) => ProbeHandler::Unresolved { reason },
    })
}

// === The tracker ===

/// The desired set derived from the manifests, keeping the last good version of
/// every file that has since become invalid.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    /// Services to run, from manifests.
    pub services: Vec<ServiceSpec>,
    /// Current problems (bad files, duplicates), for /health and metrics.
    pub errors: Vec<Diagnostic>,
    /// Warnings and notes of this scan.
    pub warnings: Vec<Diagnostic>,
}

/// Remembers the last good version of each manifest file across scans.
#[derive(Debug, Clone, Default)]
pub struct ManifestTracker {
    last_good: BTreeMap<PathBuf, LoadedPod>,
}

impl ManifestTracker {
    /// An empty tracker (nothing known yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// The pods currently kept, by file (the last good version of each).
    pub fn pods(&self) -> impl Iterator<Item = &LoadedPod> {
        self.last_good.values()
    }

    /// Folds a new scan in and returns what should run. Invalid files keep their
    /// last good version; removed files drop out; an unreadable directory keeps
    /// everything; duplicate pod names keep the one already known (or the first
    /// in name order) and report both files. `host_services` are the config's
    /// services, whose names manifests may not take.
    pub fn update(&mut self, scan: DirScan, host_services: &[ServiceSpec]) -> Desired {
        let mut desired = Desired::default();
        for d in scan.diagnostics {
            if d.severity == Severity::Error {
                desired.errors.push(d);
            } else {
                desired.warnings.push(d);
            }
        }
        if scan.unreadable && scan.files.is_empty() {
            desired.services = self
                .last_good
                .values()
                .flat_map(|p| p.services.clone())
                .collect();
            return desired;
        }
        // Candidate version of each file: the new one if valid, else the last good one.
        let mut candidates: BTreeMap<PathBuf, (Option<LoadedPod>, Option<LoadedPod>)> =
            BTreeMap::new();
        for (path, outcome) in scan.files {
            let old = self.last_good.get(&path).cloned();
            match outcome {
                FileOutcome::Pod(pod) => {
                    desired.warnings.extend(pod.warnings.iter().cloned());
                    candidates.insert(path, (Some(pod), old));
                }
                FileOutcome::Invalid(diags) => {
                    for d in diags {
                        if d.severity == Severity::Error {
                            desired.errors.push(d);
                        } else {
                            desired.warnings.push(d);
                        }
                    }
                    if old.is_some() {
                        desired.warnings.push(Diagnostic::warning(
                            &path,
                            None,
                            "invalid: the last good version keeps running until the file is fixed",
                        ));
                    }
                    candidates.insert(path, (None, old));
                }
                FileOutcome::Ignored(note) => desired.warnings.push(note),
            }
        }
        if scan.unreadable {
            // A partial listing: keep files we could not see this time.
            for (path, pod) in &self.last_good {
                candidates
                    .entry(path.clone())
                    .or_insert_with(|| (None, Some(pod.clone())));
            }
        }
        // Claim names: host services first, then files already running, then new ones.
        let mut claimed_services: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut claimed_pods: BTreeMap<String, PathBuf> = BTreeMap::new();
        for s in host_services {
            claimed_services.insert(s.name.clone(), s.source.clone());
        }
        let known: Vec<PathBuf> = candidates
            .keys()
            .filter(|p| self.last_good.contains_key(*p))
            .cloned()
            .collect();
        let fresh: Vec<PathBuf> = candidates
            .keys()
            .filter(|p| !self.last_good.contains_key(*p))
            .cloned()
            .collect();
        let mut accepted: BTreeMap<PathBuf, LoadedPod> = BTreeMap::new();
        for path in known.into_iter().chain(fresh) {
            let Some((new, old)) = candidates.remove(&path) else {
                continue;
            };
            let mut chosen = None;
            for (is_new, pod) in [(true, new), (false, old)] {
                let Some(pod) = pod else { continue };
                match conflict(&pod, &path, &claimed_services, &claimed_pods) {
                    None => {
                        chosen = Some(pod);
                        break;
                    }
                    Some((other, what)) => {
                        if is_new {
                            desired.errors.push(Diagnostic::error(
                                &path,
                                Some("metadata.name".into()),
                                format!(
                                    "duplicate {what}: already defined by {}, which stays; this version of the file is not started",
                                    other.display()
                                ),
                            ));
                        }
                    }
                }
            }
            if let Some(pod) = chosen {
                claimed_pods.insert(pod.pod_name.clone(), path.clone());
                for s in &pod.services {
                    claimed_services.insert(s.name.clone(), path.clone());
                }
                accepted.insert(path, pod);
            }
        }
        desired.services = accepted.values().flat_map(|p| p.services.clone()).collect();
        self.last_good = accepted;
        desired
    }
}

/// The file already holding one of `pod`'s names, and which name.
fn conflict(
    pod: &LoadedPod,
    path: &Path,
    services: &BTreeMap<String, PathBuf>,
    pods: &BTreeMap<String, PathBuf>,
) -> Option<(PathBuf, String)> {
    if let Some(other) = pods.get(&pod.pod_name).filter(|o| o.as_path() != path) {
        return Some((other.clone(), format!("pod name {:?}", pod.pod_name)));
    }
    pod.services.iter().find_map(|s| {
        services
            .get(&s.name)
            .filter(|o| o.as_path() != path)
            .map(|o| (o.clone(), format!("service name {:?}", s.name)))
    })
}
