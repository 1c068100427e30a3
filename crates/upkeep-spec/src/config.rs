//! The daemon's TOML config file (design.md section 4).
//!
//! The file is parsed into a located tree and walked field by field, so every
//! problem is reported at once, each naming the file, the key and its line.
//! Unknown keys are errors in every table (the equivalent of serde's
//! `deny_unknown_fields`, which stops at the first problem).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::diag::{Diagnostic, Severity};
use crate::hash::spec_hash;
use crate::node::{self, Ctx, Kind, Node};
use crate::types::{
    BackoffSpec, KillMode, LogMode, OnExit, Origin, Probe, ProbeHandler, Probes, Resources,
    RestartPolicy, RolloutMode, Scheme, ServiceSpec, MAX_STOP_GRACE,
};

/// Default config path.
pub const DEFAULT_CONFIG: &str = "/etc/upkeep/upkeep.toml";
/// Default manifests directory.
pub const DEFAULT_MANIFESTS: &str = "/etc/kubernetes/manifests";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9900";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/upkeep";
/// Default log directory.
pub const DEFAULT_LOG_DIR: &str = "/var/log/upkeep";
/// Default kubelet config file, read to warn when its `staticPodPath` is
/// upkeep's manifests directory.
pub const DEFAULT_KUBELET_CONFIG: &str = "/var/lib/kubelet/config.yaml";
/// `PATH` given to every service that does not set one (containerd's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Default node IP.
pub const DEFAULT_NODE_IP: &str = "127.0.0.1";
/// Default coalescing window for manifest directory events.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(100);
/// Default full re-list period (the kubelet's `fileCheckFrequency`).
pub const DEFAULT_RELIST_PERIOD: Duration = Duration::from_secs(20);
/// Default `settle`: how long a manifest must be unchanged before a change
/// of it is applied.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(1);
/// Default log rotation size: 10 MiB.
pub const DEFAULT_LOG_MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Default number of rotated log files kept.
pub const DEFAULT_LOG_MAX_FILES: u32 = 3;
/// Default stop grace for host services.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 10 * 1024 * 1024;

/// The resolved daemon configuration, every key defaulted.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file it was read from; `None` for built-in defaults.
    pub path: Option<PathBuf>,
    /// Static Pod manifests directory (or single file).
    pub manifests: PathBuf,
    /// HTTP listen address for /health and /metrics.
    pub listen: String,
    /// State directory (lock, control socket, adoption records).
    pub state_dir: PathBuf,
    /// Directory of per-service log files.
    pub log_dir: PathBuf,
    /// Node name (default: hostname, lower-cased).
    pub node_name: String,
    /// Node IP: default probe host and status.hostIP/podIP.
    pub node_ip: String,
    /// What to do with services when upkeep exits.
    pub on_exit: OnExit,
    /// Accept manifests writable by group/others or not owned by root/us.
    pub allow_writable_manifests: bool,
    /// Coalescing window for manifest directory events.
    pub debounce: Duration,
    /// Full re-list period of the manifests directory.
    pub relist_period: Duration,
    /// A changed manifest is applied only once it has been unchanged this
    /// long (a file written in place slowly is never applied half-written).
    pub settle: Duration,
    /// Rotate a service log when it reaches this many bytes.
    pub log_max_size: u64,
    /// Rotated log files kept per service.
    pub log_max_files: u32,
    /// Backoff for every service unless overridden.
    pub default_backoff: BackoffSpec,
    /// Grace period for host services unless overridden.
    pub default_stop_timeout: Duration,
    /// Kill mode for host services unless overridden.
    pub default_kill_mode: KillMode,
    /// Where output goes for every service that does not set `log` (and for
    /// every static pod): `[defaults] log`, `file` unless set.
    pub default_log: LogMode,
    /// Image (without tag) -> entrypoint, for containers with no `command`.
    pub images: BTreeMap<String, Vec<String>>,
    /// The kubelet's config file (`staticPodPath` must not be our manifests).
    pub kubelet_config: PathBuf,
    /// The resolved host services, in file order.
    pub services: Vec<ServiceSpec>,
    /// The `[cluster]` table (issue #16); `None` without it.
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl Config {
    /// The built-in defaults (what a missing default config file means).
    /// `node_name` is this host's name, lower-cased.
    pub fn defaults() -> Config {
        Config {
            path: None,
            manifests: PathBuf::from(DEFAULT_MANIFESTS),
            listen: DEFAULT_LISTEN.to_string(),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            log_dir: PathBuf::from(DEFAULT_LOG_DIR),
            node_name: default_node_name(),
            node_ip: DEFAULT_NODE_IP.to_string(),
            on_exit: OnExit::default(),
            allow_writable_manifests: false,
            debounce: DEFAULT_DEBOUNCE,
            relist_period: DEFAULT_RELIST_PERIOD,
            settle: DEFAULT_SETTLE,
            log_max_size: DEFAULT_LOG_MAX_SIZE,
            log_max_files: DEFAULT_LOG_MAX_FILES,
            default_backoff: BackoffSpec::default(),
            default_stop_timeout: DEFAULT_STOP_TIMEOUT,
            default_kill_mode: KillMode::ControlGroup,
            default_log: LogMode::File,
            images: BTreeMap::new(),
            kubelet_config: PathBuf::from(DEFAULT_KUBELET_CONFIG),
            services: Vec::new(),
            cluster: None,
        }
    }

    /// The host service called `name`, if any.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// This host's name, lower-cased (`localhost` if it cannot be read).
pub fn default_node_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .map(|h| h.trim().to_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Command-line values that override the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--manifests`
    pub manifests: Option<PathBuf>,
    /// `--listen`
    pub listen: Option<String>,
    /// `--state-dir`
    pub state_dir: Option<PathBuf>,
}

impl Overrides {
    fn apply(&self, cfg: &mut Config) {
        if let Some(m) = &self.manifests {
            cfg.manifests = m.clone();
        }
        if let Some(l) = &self.listen {
            cfg.listen = l.clone();
        }
        if let Some(s) = &self.state_dir {
            cfg.state_dir = s.clone();
        }
    }
}

/// Loads the config at `path`. `path == None` means the default path, where a
/// missing file means built-in defaults; an explicit path must exist.
/// Returns the config (when there is no error) and every diagnostic found.
pub fn load(path: Option<&Path>, overrides: &Overrides) -> (Option<Config>, Vec<Diagnostic>) {
    let file = path.unwrap_or_else(|| Path::new(DEFAULT_CONFIG));
    match read_capped(file, MAX_CONFIG_BYTES) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => parse(&text, file, overrides),
            Err(e) => (
                None,
                vec![Diagnostic::error(
                    file,
                    None,
                    format!("not valid UTF-8 (at byte {})", e.utf8_error().valid_up_to()),
                )],
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.is_none() => {
            let mut cfg = Config::defaults();
            overrides.apply(&mut cfg);
            (Some(cfg), Vec::new())
        }
        Err(e) => (
            None,
            vec![Diagnostic::error(
                file,
                None,
                format!("cannot read config file: {e}"),
            )],
        ),
    }
}

/// Reads at most `cap` bytes of `path`; a bigger file is an error.
pub(crate) fn read_capped(path: &Path, cap: u64) -> std::io::Result<Vec<u8>> {
    let f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    if meta.is_dir() {
        return Err(std::io::Error::other("is a directory"));
    }
    if meta.len() > cap {
        return Err(std::io::Error::other(format!(
            "file is {} bytes, more than the {cap}-byte limit",
            meta.len()
        )));
    }
    let mut buf = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    f.take(cap + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(std::io::Error::other(format!(
            "file grew past the {cap}-byte limit"
        )));
    }
    Ok(buf)
}

/// Parses config text (as read from `path`), for tests and fuzzing.
pub fn parse(text: &str, path: &Path, overrides: &Overrides) -> (Option<Config>, Vec<Diagnostic>) {
    let root = match node::parse_toml(text) {
        Ok(root) => root,
        Err(errors) => {
            let diags = errors
                .into_iter()
                .map(|e| {
                    Diagnostic::error(path, None, format!("invalid TOML: {}", e.message))
                        .at_line(e.line)
                })
                .collect();
            return (None, diags);
        }
    };
    let mut ctx = Ctx::new(path);
    let mut cfg = Config::defaults();
    cfg.path = Some(path.to_path_buf());
    read_root(&mut ctx, &root, &mut cfg);
    // Relative paths in the file are relative to the file's directory (so a
    // config works from any working directory); command-line overrides stay
    // relative to the working directory.
    let base = path.parent().unwrap_or(Path::new(""));
    for p in [
        &mut cfg.manifests,
        &mut cfg.state_dir,
        &mut cfg.log_dir,
        &mut cfg.kubelet_config,
    ] {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
    overrides.apply(&mut cfg);
    check_listen(&mut ctx, &root, &cfg.listen);
    let ok = !ctx.has_errors();
    (ok.then_some(cfg), ctx.diags)
}

fn check_listen(ctx: &mut Ctx<'_>, root: &Node, listen: &str) {
    if listen.parse::<std::net::SocketAddr>().is_err() {
        let at = field_node(root, "listen").unwrap_or(root);
        ctx.error(
            at,
            "listen",
            format!(
                "invalid listen address {listen:?}: expected IP:PORT such as \"127.0.0.1:9900\""
            ),
        );
    }
}

fn field_node<'n>(root: &'n Node, key: &str) -> Option<&'n Node> {
    match &root.kind {
        Kind::Map(entries) => entries
            .iter()
            .rev()
            .find(|e| e.key == key)
            .map(|e| &e.value),
        _ => None,
    }
}

fn read_root(ctx: &mut Ctx<'_>, root: &Node, cfg: &mut Config) {
    let Some(mut f) = ctx.fields(root, "") else {
        return;
    };
    if let Some(n) = f.get("manifests") {
        if let Some(p) = path_value(ctx, n, "manifests") {
            cfg.manifests = p;
        }
    }
    if let Some(n) = f.get("listen") {
        if let Some(s) = ctx.string(n, "listen") {
            cfg.listen = s;
        }
    }
    if let Some(n) = f.get("state_dir") {
        if let Some(p) = path_value(ctx, n, "state_dir") {
            cfg.state_dir = p;
        }
    }
    if let Some(n) = f.get("log_dir") {
        if let Some(p) = path_value(ctx, n, "log_dir") {
            cfg.log_dir = p;
        }
    }
    if let Some(n) = f.get("kubelet_config") {
        if let Some(p) = path_value(ctx, n, "kubelet_config") {
            cfg.kubelet_config = p;
        }
    }
    if let Some(n) = f.get("node_name") {
        if let Some(s) = ctx.string(n, "node_name") {
            if s.trim().is_empty() {
                ctx.error(n, "node_name", "must not be empty");
            } else {
                cfg.node_name = s;
            }
        }
    }
    if let Some(n) = f.get("node_ip") {
        if let Some(s) = ctx.string(n, "node_ip") {
            if s.parse::<std::net::IpAddr>().is_err() {
                ctx.error(n, "node_ip", format!("{s:?} is not an IP address"));
            } else {
                cfg.node_ip = s;
            }
        }
    }
    if let Some(n) = f.get("on_exit") {
        match ctx.string(n, "on_exit").as_deref() {
            Some("keep") => cfg.on_exit = OnExit::Keep,
            Some("stop") => cfg.on_exit = OnExit::Stop,
            Some(other) => ctx.error(
                n,
                "on_exit",
                format!("{other:?}: expected \"keep\" or \"stop\""),
            ),
            None => {}
        }
    }
    if let Some(n) = f.get("allow_writable_manifests") {
        if let Some(b) = ctx.bool(n, "allow_writable_manifests") {
            cfg.allow_writable_manifests = b;
        }
    }
    if let Some(n) = f.get("debounce") {
        if let Some(d) = ctx.duration(n, "debounce") {
            cfg.debounce = d;
        }
    }
    if let Some(n) = f.get("relist_period") {
        if let Some(d) = ctx.duration(n, "relist_period") {
            if d.is_zero() {
                ctx.error(n, "relist_period", "must be more than 0s");
            } else {
                cfg.relist_period = d;
            }
        }
    }
    if let Some(n) = f.get("settle") {
        if let Some(d) = ctx.duration(n, "settle") {
            cfg.settle = d;
        }
    }
    if let Some(n) = f.get("logs") {
        read_logs(ctx, n, cfg);
    }
    if let Some(n) = f.get("defaults") {
        read_defaults(ctx, n, cfg);
    }
    if let Some(n) = f.get("images") {
        read_images(ctx, n, cfg);
    }
    if let Some(n) = f.get("services") {
        read_services(ctx, n, cfg);
    }
    if let Some(n) = f.get("cluster") {
        let file = ctx.file;
        cfg.cluster = crate::cluster::read_cluster(ctx, n, file.parent().unwrap_or(Path::new("")));
    }
    f.finish(ctx, Severity::Error);
}

fn path_value(ctx: &mut Ctx<'_>, n: &Node, field: &str) -> Option<PathBuf> {
    let s = ctx.string(n, field)?;
    if s.is_empty() {
        ctx.error(n, field, "must not be empty");
        return None;
    }
    Some(PathBuf::from(s))
}

fn read_logs(ctx: &mut Ctx<'_>, n: &Node, cfg: &mut Config) {
    let Some(mut f) = ctx.fields(n, "logs") else {
        return;
    };
    if let Some(v) = f.get("max_size") {
        let size = match &v.kind {
            Kind::Int(i) => Ok(u64::try_from(*i).unwrap_or(0)),
            Kind::Str(s) => parse_size(s),
            other => Err(format!(
                "expected a byte count or a size such as \"10MiB\", found {}",
                other.describe()
            )),
        };
        match size {
            Ok(b) if b > 0 => cfg.log_max_size = b,
            Ok(_) => ctx.error(v, "logs.max_size", "must be more than 0 bytes"),
            Err(e) => ctx.error(v, "logs.max_size", e),
        }
    }
    if let Some(v) = f.get("max_files") {
        if let Some(i) = ctx.int_in(v, "logs.max_files", 1, 1000) {
            cfg.log_max_files = i as u32;
        }
    }
    f.finish(ctx, Severity::Error);
}

/// Parses a size: a plain byte count or a number with `B`, `K`/`KB` (1000),
/// `Ki`/`KiB` (1024), and likewise `M`, `G`, `T`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(end);
    let num: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected e.g. \"10MiB\" or a byte count"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "k" | "KB" | "kB" => 1000,
        "Ki" | "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "Mi" | "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "Gi" | "GiB" => 1 << 30,
        "T" | "TB" => 1_000_000_000_000,
        "Ti" | "TiB" => 1 << 40,
        other => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {other:?} (use B, KiB, MiB, GiB)"
            ))
        }
    };
    num.checked_mul(mult)
        .ok_or_else(|| format!("invalid size {s:?}: too large"))
}

fn read_defaults(ctx: &mut Ctx<'_>, n: &Node, cfg: &mut Config) {
    let Some(mut f) = ctx.fields(n, "defaults") else {
        return;
    };
    if let Some(v) = f.get("stop_timeout") {
        if let Some(d) = stop_timeout(ctx, v, "defaults.stop_timeout") {
            cfg.default_stop_timeout = d;
        }
    }
    if let Some(v) = f.get("kill_mode") {
        if let Some(m) = kill_mode(ctx, v, "defaults.kill_mode") {
            cfg.default_kill_mode = m;
        }
    }
    if let Some(v) = f.get("backoff") {
        if let Some(b) = read_backoff(ctx, v, "defaults.backoff", BackoffSpec::default()) {
            cfg.default_backoff = b;
        }
    }
    if let Some(v) = f.get("log") {
        if let Some(mode) = read_log_mode(ctx, v, "defaults.log") {
            cfg.default_log = mode;
        }
    }
    f.finish(ctx, Severity::Error);
}

/// A `kill_mode`: `"control-group"`, `"process"` or `"mixed"`.
fn kill_mode(ctx: &mut Ctx<'_>, v: &Node, path: &str) -> Option<KillMode> {
    let s = ctx.string(v, path)?;
    let m = KillMode::from_name(&s);
    if m.is_none() {
        ctx.error(
            v,
            path,
            format!(
                "{s:?}: expected \"control-group\", \"process\" or \"mixed\" (systemd's KillMode)"
            ),
        );
    }
    m
}

/// A `stop_timeout`: a duration of at most [`MAX_STOP_GRACE`].
fn stop_timeout(ctx: &mut Ctx<'_>, v: &Node, path: &str) -> Option<Duration> {
    let d = ctx.duration(v, path)?;
    if d > MAX_STOP_GRACE {
        ctx.error(
            v,
            path,
            format!(
                "{}s is too long: at most 1h (a longer grace would hold every stop, restart and upkeep's shutdown)",
                d.as_secs()
            ),
        );
        return None;
    }
    Some(d)
}

/// Reads a `log` mode: `"file"`, `"journal"` or `"inherit"`.
fn read_log_mode(ctx: &mut Ctx<'_>, v: &Node, field: &str) -> Option<LogMode> {
    match ctx.string(v, field).as_deref() {
        Some("file") => Some(LogMode::File),
        Some("journal") => Some(LogMode::Journal),
        Some("inherit") => Some(LogMode::Inherit),
        Some(other) => {
            ctx.error(
                v,
                field,
                format!("{other:?}: expected \"file\", \"journal\" or \"inherit\""),
            );
            None
        }
        None => None,
    }
}

/// Reads a (partial) backoff table over `base` and validates the result.
fn read_backoff(ctx: &mut Ctx<'_>, n: &Node, path: &str, base: BackoffSpec) -> Option<BackoffSpec> {
    let mut f = ctx.fields(n, path)?;
    let mut b = base;
    let before = ctx.diags.len();
    if let Some(v) = f.get("initial") {
        b.initial = ctx.duration(v, &f.sub("initial")).unwrap_or(b.initial);
    }
    if let Some(v) = f.get("max") {
        b.max = ctx.duration(v, &f.sub("max")).unwrap_or(b.max);
    }
    if let Some(v) = f.get("reset_after") {
        b.reset_after = ctx
            .duration(v, &f.sub("reset_after"))
            .unwrap_or(b.reset_after);
    }
    if let Some(v) = f.get("factor") {
        if let Some(x) = ctx.float(v, &f.sub("factor")) {
            if !x.is_finite() || x < 1.0 {
                ctx.error(
                    v,
                    &f.sub("factor"),
                    format!("must be a number >= 1.0, found {x}"),
                );
            } else {
                b.factor = x;
            }
        }
    }
    if let Some(v) = f.get("jitter") {
        if let Some(x) = ctx.float(v, &f.sub("jitter")) {
            if !(0.0..=1.0).contains(&x) {
                ctx.error(
                    v,
                    &f.sub("jitter"),
                    format!("must be between 0.0 and 1.0, found {x}"),
                );
            } else {
                b.jitter = x;
            }
        }
    }
    if b.max < b.initial {
        ctx.error(
            n,
            path,
            format!(
                "max ({}) must not be less than initial ({})",
                crate::duration::format(b.max),
                crate::duration::format(b.initial)
            ),
        );
    }
    f.finish(ctx, Severity::Error);
    (ctx.diags.len() == before).then_some(b)
}

fn read_images(ctx: &mut Ctx<'_>, n: &Node, cfg: &mut Config) {
    let Some(mut f) = ctx.fields(n, "images") else {
        return;
    };
    for e in f.all() {
        let path = format!("images.{:?}", e.key);
        if let Some(argv) = ctx.string_list(&e.value, &path) {
            if argv.is_empty() || argv[0].is_empty() {
                ctx.error(&e.value, &path, "the entrypoint must be a non-empty list");
            } else {
                cfg.images.insert(e.key.clone(), argv);
            }
        }
    }
}

/// Whether `name` can name a host service (it becomes a log file name).
fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

fn read_services(ctx: &mut Ctx<'_>, n: &Node, cfg: &mut Config) {
    let Some(mut f) = ctx.fields(n, "services") else {
        return;
    };
    let entries = f.all();
    let mut specs = Vec::new();
    let mut after_nodes: Vec<(String, Vec<(String, Node)>)> = Vec::new();
    for e in entries {
        let path = format!("services.{}", e.key);
        if !valid_service_name(&e.key) {
            ctx.error(
                &e.value,
                &path,
                "invalid service name: use letters, digits, '-', '_' and '.', starting with a letter or digit",
            );
        }
        // Targets are checked even for a service with other errors, so that
        // every problem of a service is reported together.
        let (spec, afters) = read_service(ctx, &e.key, &e.value, &path, cfg);
        after_nodes.push((e.key.clone(), afters));
        specs.extend(spec);
    }
    // `after` targets must exist, and must not form a cycle.
    let names: BTreeSet<&str> = entries.iter().map(|e| e.key.as_str()).collect();
    for (svc, afters) in &after_nodes {
        for (target, node) in afters {
            if !names.contains(target.as_str()) {
                ctx.error(
                    node,
                    &format!("services.{svc}.after"),
                    format!("unknown service {target:?} (not a [services] table)"),
                );
            }
        }
    }
    let graph: Vec<(String, Vec<String>)> = after_nodes
        .iter()
        .map(|(s, a)| (s.clone(), a.iter().map(|(t, _)| t.clone()).collect()))
        .collect();
    for cycle in find_cycles(&graph) {
        let first = &cycle[0];
        let at = entries
            .iter()
            .find(|e| &e.key == first)
            .map(|e| &e.value)
            .unwrap_or(n);
        ctx.error(
            at,
            &format!("services.{first}.after"),
            format!("dependency cycle: {}", cycle.join(" -> ")),
        );
    }
    for spec in &mut specs {
        spec.hash = spec_hash(spec);
    }
    cfg.services = specs;
}

/// Every dependency cycle (each reported once), as `a -> b -> a`.
fn find_cycles(graph: &[(String, Vec<String>)]) -> Vec<Vec<String>> {
    let index: BTreeMap<&str, usize> = graph
        .iter()
        .enumerate()
        .map(|(i, (n, _))| (n.as_str(), i))
        .collect();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut color = vec![0u8; graph.len()];
    let mut cycles = Vec::new();
    for start in 0..graph.len() {
        if color[start] != 0 {
            continue;
        }
        // Iterative DFS: (node, next edge index); `stack` is the current path.
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        color[start] = 1;
        while let Some(&mut (node, ref mut edge)) = stack.last_mut() {
            let deps = &graph[node].1;
            if *edge < deps.len() {
                let target = &deps[*edge];
                *edge += 1;
                let Some(&t) = index.get(target.as_str()) else {
                    continue;
                };
                match color[t] {
                    0 => {
                        color[t] = 1;
                        stack.push((t, 0));
                    }
                    1 => {
                        let pos = stack.iter().position(|(n, _)| *n == t).unwrap_or(0);
                        let mut cycle: Vec<String> = stack[pos..]
                            .iter()
                            .map(|(n, _)| graph[*n].0.clone())
                            .collect();
                        cycle.push(graph[t].0.clone());
                        cycles.push(cycle);
                    }
                    _ => {}
                }
            } else {
                color[node] = 2;
                stack.pop();
            }
        }
    }
    cycles
}

/// Why `name` cannot name an environment variable, if it cannot.
pub(crate) fn bad_env_name(name: &str) -> Option<String> {
    if name.is_empty() {
        Some("a variable name must not be empty".to_string())
    } else if name.contains('\0') {
        Some(format!(
            "variable name {name:?} contains a NUL byte: execve(2) would cut it there"
        ))
    } else if name.contains('=') {
        Some(format!(
            "variable name {name:?} contains '=': the environment would read it as NAME=VALUE"
        ))
    } else {
        None
    }
}

/// `(uid_t)-1`: setuid(2) and setgid(2) reject it with EINVAL (it means
/// "leave unchanged" to setreuid(2)), so it can never be a service's id.
const ID_MINUS_ONE: u32 = u32::MAX;

/// Resolves a user (name or number) to `(uid, primary gid if known)`.
pub(crate) fn resolve_user(spec: &Kind) -> Result<(u32, Option<u32>), String> {
    let by_number = |uid: u32| {
        if uid == ID_MINUS_ONE {
            return Err(format!(
                "uid {uid} is (uid_t)-1, which setuid(2) rejects (EINVAL): not a usable user id"
            ));
        }
        let gid = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.gid.as_raw());
        Ok((uid, gid))
    };
    match spec {
        Kind::Int(i) => match u32::try_from(*i) {
            Ok(uid) => by_number(uid),
            Err(_) => Err(format!("uid {i} is out of range")),
        },
        Kind::Str(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) => {
            match s.parse::<u32>() {
                Ok(uid) => by_number(uid),
                Err(_) => Err(format!("uid {s} is out of range")),
            }
        }
        Kind::Str(s) => match nix::unistd::User::from_name(s) {
            Ok(Some(u)) => Ok((u.uid.as_raw(), Some(u.gid.as_raw()))),
            Ok(None) => Err(format!("unknown user {s:?}")),
            Err(e) => Err(format!("cannot look up user {s:?}: {e}")),
        },
        other => Err(format!(
            "expected a user name or number, found {}",
            other.describe()
        )),
    }
}

/// Resolves a group (name or number) to a gid.
pub(crate) fn resolve_group(spec: &Kind) -> Result<u32, String> {
    let by_number = |gid: u32| {
        if gid == ID_MINUS_ONE {
            Err(format!(
                "gid {gid} is (gid_t)-1, which setgid(2) rejects (EINVAL): not a usable group id"
            ))
        } else {
            Ok(gid)
        }
    };
    match spec {
        Kind::Int(i) => u32::try_from(*i)
            .map_err(|_| format!("gid {i} is out of range"))
            .and_then(by_number),
        Kind::Str(s) if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) => s
            .parse::<u32>()
            .map_err(|_| format!("gid {s} is out of range"))
            .and_then(by_number),
        Kind::Str(s) => match nix::unistd::Group::from_name(s) {
            Ok(Some(g)) => Ok(g.gid.as_raw()),
            Ok(None) => Err(format!("unknown group {s:?}")),
            Err(e) => Err(format!("cannot look up group {s:?}: {e}")),
        },
        other => Err(format!(
            "expected a group name or number, found {}",
            other.describe()
        )),
    }
}

/// Validates and normalizes a signal name: `"TERM"`, `"sigterm"` and
/// `"SIGTERM"` all give `"SIGTERM"`.
pub fn normalize_signal(name: &str) -> Result<String, String> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    // Real-time signals, as systemd's KillSignal= takes them: SIGRTMIN,
    // SIGRTMIN+N, SIGRTMAX, SIGRTMAX-N (N up to the 30 real-time signals
    // glibc leaves to applications).
    for (base, sep) in [("SIGRTMIN", '+'), ("SIGRTMAX", '-')] {
        if let Some(rest) = full.strip_prefix(base) {
            let ok = rest.is_empty()
                || rest
                    .strip_prefix(sep)
                    .and_then(|n| n.parse::<u8>().ok())
                    .is_some_and(|n| n <= 30);
            return if ok {
                Ok(full)
            } else {
                Err(format!(
                    "unknown signal {name:?} (real-time signals are written SIGRTMIN+N or SIGRTMAX-N, N at most 30)"
                ))
            };
        }
    }
    full.parse::<nix::sys::signal::Signal>()
        .map(|s| s.as_str().to_string())
        .map_err(|_| format!("unknown signal {name:?} (write e.g. \"SIGTERM\")"))
}

fn read_service(
    ctx: &mut Ctx<'_>,
    name: &str,
    n: &Node,
    path: &str,
    cfg: &Config,
) -> (Option<ServiceSpec>, Vec<(String, Node)>) {
    let before = ctx.diags.len();
    let Some(mut f) = ctx.fields(n, path) else {
        return (None, Vec::new());
    };
    let mut argv = Vec::new();
    match f.get("command") {
        None => ctx.error(
            n,
            &f.sub("command"),
            "missing: every service needs a command (a list: [\"/path/to/bin\", \"arg\"])",
        ),
        Some(v) => {
            if let Some(cmd) = ctx.argv_list(v, &f.sub("command")) {
                if cmd.is_empty() || cmd[0].is_empty() {
                    ctx.error(
                        v,
                        &f.sub("command"),
                        "must be a non-empty list whose first element is the program",
                    );
                }
                argv = cmd;
            }
        }
    }
    if let Some(v) = f.get("args") {
        if let Some(args) = ctx.argv_list(v, &f.sub("args")) {
            argv.extend(args);
        }
    }
    let mut env = BTreeMap::new();
    if let Some(v) = f.get("env") {
        if let Some(mut ef) = ctx.fields(v, &f.sub("env")) {
            for e in ef.all() {
                let p = format!("{}.env.{}", path, e.key);
                if let Some(why) = bad_env_name(&e.key) {
                    ctx.error(&e.value, &f.sub("env"), why);
                    continue;
                }
                if let Some(val) = ctx.string(&e.value, &p) {
                    if val.contains('\0') {
                        ctx.error(
                            &e.value,
                            &p,
                            "the value contains a NUL byte: execve(2) would cut it there",
                        );
                    }
                    env.insert(e.key.clone(), val);
                }
            }
        }
    }
    env.entry("PATH".to_string())
        .or_insert_with(|| DEFAULT_PATH.to_string());
    let mut working_dir = PathBuf::from("/");
    if let Some(v) = f.get("working_dir") {
        if let Some(s) = ctx.string(v, &f.sub("working_dir")) {
            if !s.starts_with('/') {
                ctx.error(v, &f.sub("working_dir"), "must be an absolute path");
            }
            working_dir = PathBuf::from(s);
        }
    }
    let (mut uid, mut gid) = (None, None);
    if let Some(v) = f.get("user") {
        match resolve_user(&v.kind) {
            Ok((u, g)) => {
                uid = Some(u);
                gid = g;
            }
            Err(e) => ctx.error(v, &f.sub("user"), e),
        }
    }
    if let Some(v) = f.get("group") {
        match resolve_group(&v.kind) {
            Ok(g) => gid = Some(g),
            Err(e) => ctx.error(v, &f.sub("group"), e),
        }
    }
    let mut restart = RestartPolicy::Always;
    if let Some(v) = f.get("restart") {
        match ctx.string(v, &f.sub("restart")).as_deref() {
            Some("always") => restart = RestartPolicy::Always,
            Some("on-failure") => restart = RestartPolicy::OnFailure,
            Some("never") => restart = RestartPolicy::Never,
            Some(other) => ctx.error(
                v,
                &f.sub("restart"),
                format!("{other:?}: expected \"always\", \"on-failure\" or \"never\""),
            ),
            None => {}
        }
    }
    let mut afters = Vec::new();
    if let Some(v) = f.get("after") {
        if let Some(items) = ctx.list(v, &f.sub("after")) {
            for (i, item) in items.iter().enumerate() {
                if let Some(s) = ctx.string(item, &format!("{}[{i}]", f.sub("after"))) {
                    if s == name {
                        ctx.error(
                            item,
                            &f.sub("after"),
                            format!("dependency cycle: {name} -> {name}"),
                        );
                    } else if afters.iter().all(|(a, _): &(String, Node)| a != &s) {
                        afters.push((s, item.clone()));
                    }
                }
            }
        }
    }
    let mut stop_signal = "SIGTERM".to_string();
    if let Some(v) = f.get("stop_signal") {
        if let Some(s) = ctx.string(v, &f.sub("stop_signal")) {
            match normalize_signal(&s) {
                Ok(sig) => stop_signal = sig,
                Err(e) => ctx.error(v, &f.sub("stop_signal"), e),
            }
        }
    }
    let mut stop_grace = cfg.default_stop_timeout;
    if let Some(v) = f.get("stop_timeout") {
        if let Some(d) = stop_timeout(ctx, v, &f.sub("stop_timeout")) {
            stop_grace = d;
        }
    }
    let mut kill = cfg.default_kill_mode;
    if let Some(v) = f.get("kill_mode") {
        if let Some(m) = kill_mode(ctx, v, &f.sub("kill_mode")) {
            kill = m;
        }
    }
    let mut rollout = RolloutMode::Serial;
    if let Some(v) = f.get("rollout") {
        if let Some(s) = ctx.string(v, &f.sub("rollout")) {
            match RolloutMode::from_name(&s) {
                Some(m) => rollout = m,
                None => ctx.error(
                    v,
                    &f.sub("rollout"),
                    format!("{s:?}: expected \"serial\" (one master at a time) or \"immediate\""),
                ),
            }
        }
    }
    let mut backoff = cfg.default_backoff;
    if let Some(v) = f.get("backoff") {
        if let Some(b) = read_backoff(ctx, v, &f.sub("backoff"), cfg.default_backoff) {
            backoff = b;
        }
    }
    let mut log = cfg.default_log;
    if let Some(v) = f.get("log") {
        if let Some(mode) = read_log_mode(ctx, v, &f.sub("log")) {
            log = mode;
        }
    }
    let mut probes = Probes::default();
    for (key, slot) in [
        ("liveness", &mut probes.liveness),
        ("readiness", &mut probes.readiness),
        ("startup", &mut probes.startup),
    ] {
        if let Some(v) = f.get(key) {
            *slot = read_host_probe(ctx, v, &f.sub(key), key != "readiness");
        }
    }
    f.finish(ctx, Severity::Error);
    if ctx.diags.len() != before {
        return (None, afters);
    }
    let spec = ServiceSpec {
        name: name.to_string(),
        source: ctx.file.to_path_buf(),
        origin: Origin::HostService,
        argv,
        env,
        working_dir,
        uid,
        gid,
        restart,
        backoff,
        stop_signal,
        stop_grace,
        kill_mode: kill,
        pre_stop: None,
        probes,
        after: afters.iter().map(|(a, _)| a.clone()).collect(),
        log,
        volumes: Vec::new(),
        resources: Resources::default(),
        rollout,
        hash: String::new(),
    };
    (Some(spec), afters)
}

/// Reads a host-service probe table: exactly one of `http`, `http_unix`,
/// `tcp`, `exec`, plus timing keys with kubelet defaults.
fn read_host_probe(
    ctx: &mut Ctx<'_>,
    n: &Node,
    path: &str,
    must_succeed_once: bool,
) -> Option<Probe> {
    let before = ctx.diags.len();
    let mut f = ctx.fields(n, path)?;
    let mut handlers = Vec::new();
    if let Some(v) = f.get("http") {
        if let Some(url) = ctx.string(v, &f.sub("http")) {
            match parse_http_url(&url) {
                Ok((scheme, host, port, p)) => handlers.push(ProbeHandler::Http {
                    scheme,
                    host,
                    port,
                    path: p,
                    headers: Vec::new(),
                }),
                Err(e) => ctx.error(v, &f.sub("http"), e),
            }
        } else {
            handlers.push(ProbeHandler::Unresolved {
                reason: String::new(),
            });
        }
    }
    if let Some(v) = f.get("http_unix") {
        let sub = f.sub("http_unix");
        if let Some(mut hf) = ctx.fields(v, &sub) {
            let socket = match hf.get("socket") {
                Some(s) => ctx.string(s, &hf.sub("socket")),
                None => {
                    ctx.error(v, &hf.sub("socket"), "missing: the unix socket path");
                    None
                }
            };
            let mut req_path = "/".to_string();
            if let Some(p) = hf.get("path") {
                if let Some(p) = ctx.string(p, &hf.sub("path")) {
                    req_path = if p.starts_with('/') {
                        p
                    } else {
                        format!("/{p}")
                    };
                }
            }
            hf.finish(ctx, Severity::Error);
            if let Some(socket) = socket {
                if !socket.starts_with('/') {
                    ctx.error(v, &format!("{sub}.socket"), "must be an absolute path");
                }
                handlers.push(ProbeHandler::HttpUnix {
                    socket: PathBuf::from(socket),
                    path: req_path,
                });
            }
        }
    }
    if let Some(v) = f.get("tcp") {
        if let Some(addr) = ctx.string(v, &f.sub("tcp")) {
            match split_host_port(&addr) {
                Some((host, port)) if !host.is_empty() => {
                    handlers.push(ProbeHandler::Tcp { host, port })
                }
                _ => ctx.error(
                    v,
                    &f.sub("tcp"),
                    format!("{addr:?}: expected HOST:PORT such as \"127.0.0.1:2379\""),
                ),
            }
        }
    }
    if let Some(v) = f.get("exec") {
        if let Some(argv) = ctx.argv_list(v, &f.sub("exec")) {
            if argv.is_empty() || argv[0].is_empty() {
                ctx.error(
                    v,
                    &f.sub("exec"),
                    "must be a non-empty list whose first element is the program",
                );
            }
            handlers.push(ProbeHandler::Exec { argv });
        }
    }
    let mut probe = Probe {
        handler: ProbeHandler::Unresolved {
            reason: String::new(),
        },
        initial_delay: Duration::ZERO,
        period: Duration::from_secs(10),
        timeout: Duration::from_secs(1),
        success_threshold: 1,
        failure_threshold: 3,
        termination_grace: None,
    };
    if let Some(v) = f.get("period") {
        if let Some(d) = ctx.duration(v, &f.sub("period")) {
            if d.is_zero() {
                ctx.error(v, &f.sub("period"), "must be more than 0s");
            }
            probe.period = d;
        }
    }
    if let Some(v) = f.get("timeout") {
        if let Some(d) = ctx.duration(v, &f.sub("timeout")) {
            if d.is_zero() {
                ctx.error(v, &f.sub("timeout"), "must be more than 0s");
            }
            probe.timeout = d;
        }
    }
    if let Some(v) = f.get("initial_delay") {
        if let Some(d) = ctx.duration(v, &f.sub("initial_delay")) {
            probe.initial_delay = d;
        }
    }
    if let Some(v) = f.get("failure_threshold") {
        if let Some(i) = ctx.int_in(v, &f.sub("failure_threshold"), 1, i32::MAX.into()) {
            probe.failure_threshold = i as u32;
        }
    }
    if let Some(v) = f.get("success_threshold") {
        if let Some(i) = ctx.int_in(v, &f.sub("success_threshold"), 1, i32::MAX.into()) {
            if must_succeed_once && i != 1 {
                ctx.error(
                    v,
                    &f.sub("success_threshold"),
                    "must be 1 for liveness and startup probes",
                );
            }
            probe.success_threshold = i as u32;
        }
    }
    f.finish(ctx, Severity::Error);
    if handlers.len() != 1 && ctx.diags.len() == before {
        ctx.error(
            n,
            path,
            format!(
                "a probe needs exactly one of http, http_unix, tcp or exec (found {})",
                handlers.len()
            ),
        );
    }
    if ctx.diags.len() != before {
        return None;
    }
    probe.handler = handlers.pop()?;
    Some(probe)
}

/// Splits `host:port` (`[v6]:port` too) into host (without brackets) and port.
pub(crate) fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p > 0)?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']')?.to_string(),
        None if host.contains(':') => return None,
        None => host.to_string(),
    };
    Some((host, port))
}

/// Parses an `http://` or `https://` URL into scheme, host, port (default
/// 80/443) and path including the query (default `/`).
pub fn parse_http_url(url: &str) -> Result<(Scheme, String, u16, String), String> {
    let bad = |why: &str| format!("invalid probe URL {url:?}: {why}");
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected http://HOST[:PORT]/PATH"))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(bad("the scheme must be http or https")),
    };
    let rest = rest.split('#').next().unwrap_or("");
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(auth_end);
    if authority.contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    let default_port = if scheme == Scheme::Http { 80 } else { 443 };
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => {
                let host = &authority[1..end];
                let after = &authority[end + 1..];
                let port = match after.strip_prefix(':') {
                    Some(p) => p
                        .parse::<u16>()
                        .ok()
                        .filter(|p| *p > 0)
                        .ok_or_else(|| bad("invalid port"))?,
                    None if after.is_empty() => default_port,
                    None => return Err(bad("invalid host")),
                };
                (host.to_string(), port)
            }
            None => return Err(bad("unterminated [IPv6] host")),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (
                h.to_string(),
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("invalid port"))?,
            ),
            None => (authority.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok((scheme, host, port, path))
}
