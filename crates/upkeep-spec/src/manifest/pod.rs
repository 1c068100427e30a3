//! The Pod: kind, apiVersion, metadata, and the pod-level spec fields that
//! every container inherits (restart policy, grace, security context, volumes).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::container::read_container;
use super::volumes::{read_volumes, VolumeInfo};
use super::{dns_label, dns_subdomain};
use crate::config::{resolve_group, resolve_user, Config};
use crate::diag::Severity;
use crate::hash::fnv1a_128_hex;
use crate::node::{Ctx, Fields, Kind, Node};
use crate::types::{Origin, RestartPolicy, RolloutMode, ServiceSpec, MAX_STOP_GRACE};

/// Facts about the pod that containers need.
pub(super) struct PodInfo {
    pub(super) name: String,
    pub(super) namespace: String,
    pub(super) uid: String,
    pub(super) labels: BTreeMap<String, String>,
    pub(super) annotations: BTreeMap<String, String>,
    pub(super) restart: RestartPolicy,
    pub(super) grace: Duration,
    pub(super) run_as_user: Option<(u32, Option<u32>)>,
    pub(super) run_as_group: Option<u32>,
    pub(super) run_as_non_root: bool,
    pub(super) volumes: BTreeMap<String, VolumeInfo>,
    /// From the `upkeep.io/rollout` annotation (issue #16).
    pub(super) rollout: RolloutMode,
}

/// The annotation that opts a static pod out of serial rollouts.
pub const ROLLOUT_ANNOTATION: &str = "upkeep.io/rollout";

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

/// A `terminationGracePeriodSeconds` (pod or probe) of at least `min`,
/// clamped to [`MAX_STOP_GRACE`] with a warning when above it.
pub(super) fn grace_seconds(
    ctx: &mut Ctx<'_>,
    n: &Node,
    path: &str,
    min: i128,
) -> Option<Duration> {
    let s = ctx.int_in(n, path, min, i64::MAX.into())?;
    let max = MAX_STOP_GRACE.as_secs();
    match u64::try_from(s) {
        Ok(s) if s <= max => Some(Duration::from_secs(s)),
        _ => {
            ctx.warn(
                n,
                path,
                format!("{s} seconds is more than upkeep's maximum grace of {max} seconds (1 hour); {max} is used"),
            );
            Some(MAX_STOP_GRACE)
        }
    }
}

/// Walks the whole document. Returns the pod name and its services when the
/// pod got far enough to resolve (errors may still be in `ctx`).
pub(super) fn read_pod(
    ctx: &mut Ctx<'_>,
    root: &Node,
    cfg: &Config,
) -> Option<(String, Vec<ServiceSpec>)> {
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
    let rollout = match annotations.get(ROLLOUT_ANNOTATION) {
        None => RolloutMode::Serial,
        Some(v) => RolloutMode::from_name(v).unwrap_or_else(|| {
            ctx.error(
                root,
                &format!("metadata.annotations.{ROLLOUT_ANNOTATION}"),
                format!("{v:?}: expected \"serial\" (one master at a time) or \"immediate\""),
            );
            RolloutMode::Serial
        }),
    };
    let mut info = PodInfo {
        rollout,
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
        if let Some(g) = grace_seconds(ctx, n, "spec.terminationGracePeriodSeconds", 0) {
            info.grace = g;
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
pub(super) fn read_security_context(
    ctx: &mut Ctx<'_>,
    f: &mut Fields<'_>,
) -> (Option<(u32, Option<u32>)>, Option<u32>, Option<bool>) {
    let mut user = None;
    let mut group = None;
    let mut non_root = None;
    if let Some(n) = f.get_some("runAsUser") {
        if let Some(i) = ctx.int_in(n, &f.sub("runAsUser"), 0, u32::MAX.into()) {
            match resolve_user(&Kind::Int(i)) {
                Ok(u) => user = Some(u),
                Err(e) => ctx.error(n, &f.sub("runAsUser"), e),
            }
        }
    }
    if let Some(n) = f.get_some("runAsGroup") {
        if let Some(i) = ctx.int_in(n, &f.sub("runAsGroup"), 0, u32::MAX.into()) {
            match resolve_group(&Kind::Int(i)) {
                Ok(g) => group = Some(g),
                Err(e) => ctx.error(n, &f.sub("runAsGroup"), e),
            }
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
