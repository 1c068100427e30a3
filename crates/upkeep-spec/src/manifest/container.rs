//! One container: command and args, env, ports, security context, volume
//! mounts, resources, lifecycle hooks, and the resolved [`ServiceSpec`].

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::pod::{read_security_context, PodInfo};
use super::probes::{read_probe, ProbeEnv, ProbeKind};
use super::volumes::read_volume_mounts;
use super::{dns_label, iana_svc_name};
use crate::config::{bad_env_name, Config, DEFAULT_PATH};
use crate::diag::Severity;
use crate::expand::{expand, static_lookup};
use crate::hash::spec_hash;
use crate::node::{Ctx, Kind, Node};
use crate::quantity::Quantity;
use crate::types::{KillMode, Origin, Probes, Resources, ServiceSpec};

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

pub(super) fn read_container(
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
        .and_then(|n| ctx.argv_list(n, &format!("{path}.command")));
    let args = f
        .get_some("args")
        .and_then(|n| ctx.argv_list(n, &format!("{path}.args")))
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
    // Volume mounts: every one names a declared hostPath volume.
    let volumes = read_volume_mounts(ctx, &mut f, path, pod);
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
        // A pod's containers always die with their cgroup (no such key in a manifest).
        kill_mode: KillMode::ControlGroup,
        pre_stop,
        probes,
        after: Vec::new(),
        log: cfg.default_log,
        volumes,
        resources,
        rollout: pod.rollout,
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
                let why = bad_env_name(s);
                if let Some(why) = &why {
                    ctx.error(v, &format!("{ep}.name"), why);
                }
                why.is_none()
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
            ctx.error(
                item,
                &format!("{ep}.value"),
                "the value contains a NUL byte: execve(2) would cut it there",
            );
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

pub(super) fn read_exec(
    ctx: &mut Ctx<'_>,
    n: &Node,
    path: &str,
    static_pairs: &[(String, String)],
) -> Option<Vec<String>> {
    let mut f = ctx.fields(n, path)?;
    let cmd = match f.get_some("command") {
        Some(c) => ctx.argv_list(c, &f.sub("command")),
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
