//! Liveness, readiness and startup probes with the kubelet's defaults.

use std::collections::BTreeMap;
use std::time::Duration;

use super::container::read_exec;
use super::iana_svc_name;
use super::pod::grace_seconds;
use crate::diag::Severity;
use crate::node::{Ctx, Fields, Kind, Node};
use crate::types::{Probe, ProbeHandler, Scheme};

/// Which probe is read (readiness allows what the others do not).
#[derive(Clone, Copy, PartialEq)]
pub(super) enum ProbeKind {
    Liveness,
    Readiness,
    Startup,
}

/// What a probe may refer to: named ports, the static env, the node IP.
pub(super) struct ProbeEnv<'a> {
    pub(super) ports: &'a BTreeMap<String, u16>,
    pub(super) static_pairs: &'a [(String, String)],
    pub(super) node_ip: &'a str,
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

pub(super) fn read_probe(
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
        } else {
            termination_grace = grace_seconds(ctx, v, &f.sub("terminationGracePeriodSeconds"), 1);
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
