//! The `[cluster]` table of the config file (issue #16): the etcd endpoints
//! and TLS files through which masters coordinate planned restarts, the key
//! prefix, and the rollout timings.
//!
//! Without the table nothing changes: `Config::cluster` is `None`. With it,
//! `etcd` is required and every other key has a default. The TLS files are
//! checked for readability here, as a warning (like a missing executable): an
//! unreadable certificate must not stop upkeep from running the control plane;
//! planned changes then wait, saying why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::Severity;
use crate::node::{Ctx, Node};

/// Default key prefix: every key upkeep writes lives under it.
pub const DEFAULT_PREFIX: &str = "/upkeep";
/// Default time a changed service has to become ready before it is rolled back.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// Default time a changed service must stay ready before the next master may go.
pub const DEFAULT_SOAK: Duration = Duration::from_secs(30);

/// The resolved `[cluster]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// etcd client URLs (`http://` or `https://`, with a port), tried in order.
    pub etcd: Vec<String>,
    /// CA bundle that signs the etcd servers' certificates (required for `https://`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate presented to etcd (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// Private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Key prefix, starting with `/` and without a trailing `/`.
    pub prefix: String,
    /// A changed service must be ready within this, or it is rolled back.
    pub ready_timeout: Duration,
    /// A changed service must stay ready this long before the next master goes.
    pub soak: Duration,
}

/// Reads the `[cluster]` table `n`; relative file paths are resolved against
/// `base` (the config file's directory). `None` when the table has errors
/// (each reported in `ctx`).
pub(crate) fn read_cluster(ctx: &mut Ctx<'_>, n: &Node, base: &Path) -> Option<ClusterConfig> {
    let mut f = ctx.fields(n, "cluster")?;
    let before = ctx
        .diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let mut c = ClusterConfig {
        etcd: Vec::new(),
        ca_file: None,
        cert_file: None,
        key_file: None,
        prefix: DEFAULT_PREFIX.to_string(),
        ready_timeout: DEFAULT_READY_TIMEOUT,
        soak: DEFAULT_SOAK,
    };
    match f.get("etcd") {
        None => ctx.error(
            n,
            "cluster.etcd",
            "missing: the list of etcd client URLs is required in [cluster]",
        ),
        Some(v) => {
            if let Some(urls) = ctx.string_list(v, "cluster.etcd") {
                if urls.is_empty() {
                    ctx.error(v, "cluster.etcd", "must list at least one etcd client URL");
                }
                for (i, u) in urls.iter().enumerate() {
                    if let Err(why) = check_endpoint(u) {
                        ctx.error(v, &format!("cluster.etcd[{i}]"), why);
                    }
                }
                c.etcd = urls;
            }
        }
    }
    let mut file = |ctx: &mut Ctx<'_>, key: &str| -> Option<(PathBuf, &Node)> {
        let v = f.get(key)?;
        let s = ctx.string(v, &format!("cluster.{key}"))?;
        if s.is_empty() {
            ctx.error(v, &format!("cluster.{key}"), "must not be empty");
            return None;
        }
        let p = PathBuf::from(s);
        Some((if p.is_relative() { base.join(p) } else { p }, v))
    };
    let ca = file(ctx, "ca_file");
    let cert = file(ctx, "cert_file");
    let key = file(ctx, "key_file");
    for (name, entry) in [("ca_file", &ca), ("cert_file", &cert), ("key_file", &key)] {
        if let Some((p, v)) = entry {
            if let Err(e) = std::fs::File::open(p) {
                ctx.warn(
                    v,
                    &format!("cluster.{name}"),
                    format!(
                        "cannot read {}: {e}; planned changes will wait until it is readable",
                        p.display()
                    ),
                );
            }
        }
    }
    match (&cert, &key) {
        (Some(_), None) => ctx.error(
            n,
            "cluster.key_file",
            "missing: cert_file is set, so key_file (its private key) is needed too",
        ),
        (None, Some(_)) => ctx.error(
            n,
            "cluster.cert_file",
            "missing: key_file is set, so cert_file (the client certificate) is needed too",
        ),
        _ => {}
    }
    if ca.is_none() && c.etcd.iter().any(|u| u.starts_with("https://")) {
        ctx.error(
            n,
            "cluster.ca_file",
            "missing: an https:// etcd endpoint needs ca_file, the CA that signs etcd's server certificates",
        );
    }
    c.ca_file = ca.map(|(p, _)| p);
    c.cert_file = cert.map(|(p, _)| p);
    c.key_file = key.map(|(p, _)| p);
    if let Some(v) = f.get("prefix") {
        if let Some(s) = ctx.string(v, "cluster.prefix") {
            let t = s.trim_end_matches('/');
            if !s.starts_with('/') || t.is_empty() {
                ctx.error(
                    v,
                    "cluster.prefix",
                    format!("{s:?}: expected a key prefix such as \"/upkeep\" (starting with '/', not only '/')"),
                );
            } else {
                c.prefix = t.to_string();
            }
        }
    }
    if let Some(v) = f.get("ready_timeout") {
        if let Some(d) = ctx.duration(v, "cluster.ready_timeout") {
            if d.is_zero() {
                ctx.error(v, "cluster.ready_timeout", "must be more than 0s");
            } else {
                c.ready_timeout = d;
            }
        }
    }
    if let Some(v) = f.get("soak") {
        if let Some(d) = ctx.duration(v, "cluster.soak") {
            c.soak = d;
        }
    }
    f.finish(ctx, Severity::Error);
    let after = ctx
        .diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    (after == before).then_some(c)
}

/// Checks one etcd client URL: `http://` or `https://`, a host and a port,
/// nothing after the port but an optional `/`.
pub fn check_endpoint(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            format!("{url:?}: an etcd client URL must start with http:// or https://")
        })?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('/') || authority.contains('@') || authority.contains('?') {
        return Err(format!(
            "{url:?}: expected scheme://host:port only (no path, user or query)"
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p),
        _ => {
            return Err(format!(
                "{url:?}: needs a port, e.g. https://10.0.0.11:2379"
            ))
        }
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("{url:?}: the host is empty"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{url:?}: {port:?} is not a port number")),
    }
}

#[cfg(test)]
mod tests {
    use super::check_endpoint;

    #[test]
    fn endpoints() {
        assert!(check_endpoint("http://127.0.0.1:2379").is_ok());
        assert!(check_endpoint("https://[::1]:2379/").is_ok());
        assert!(check_endpoint("https://etcd-1.example:2379").is_ok());
        for bad in [
            "127.0.0.1:2379",
            "unix:///x",
            "http://127.0.0.1",
            "http://[::1]",
            "http://:2379",
            "http://h:0",
            "http://h:99999",
            "http://h:2379/v3",
            "http://u@h:2379",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad} accepted");
        }
    }
}
