//! `upkeep check` and `upkeep render`.

use std::fmt::Write as _;
use upkeep_spec::{ProbeHandler, ServiceSpec, Severity};

use crate::cli::{Output, Paths};
use crate::load::load_all;

/// `upkeep check`: prints every problem; returns the exit code.
pub fn check(paths: &Paths, quiet: bool) -> i32 {
    let mut loaded = load_all(paths);
    if let Some(cfg) = &loaded.config {
        let host = crate::preflight::kubelet_static_pods(cfg)
            .into_iter()
            .chain(crate::preflight::image_versions(cfg, &loaded.services));
        loaded.diagnostics.extend(host);
        loaded
            .diagnostics
            .sort_by(|a, b| b.severity.cmp(&a.severity).then(a.file.cmp(&b.file)));
    }
    if !quiet {
        if let Some(cfg) = &loaded.config {
            let src = cfg
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "built-in defaults".into());
            println!("config: {src}");
            println!("manifests: {}", cfg.manifests.display());
        }
        if !loaded.services.is_empty() {
            let width = loaded
                .services
                .iter()
                .map(|s| s.name.len())
                .max()
                .unwrap_or(0);
            println!("{} service(s):", loaded.services.len());
            for s in &loaded.services {
                println!("  {:width$}  {}", s.name, s.source.display());
            }
        }
    }
    for d in &loaded.diagnostics {
        if quiet && d.severity == Severity::Note {
            continue;
        }
        eprintln!("{d}");
    }
    let errors = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Warning)
        .count();
    if errors > 0 {
        eprintln!("check failed: {errors} error(s), {warnings} warning(s)");
        1
    } else {
        if !quiet {
            println!("ok: {errors} error(s), {warnings} warning(s)");
        }
        0
    }
}

/// `upkeep render`: prints resolved specs; returns the exit code.
pub fn render(paths: &Paths, name: Option<&str>, output: Output) -> i32 {
    let loaded = load_all(paths);
    for d in loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
    {
        eprintln!("{d}");
    }
    if loaded.config.is_none() {
        return 1;
    }
    let selected: Vec<&ServiceSpec> = loaded
        .services
        .iter()
        .filter(|s| name.is_none_or(|n| s.name == n))
        .collect();
    if let Some(n) = name {
        if selected.is_empty() {
            eprintln!(
                "no service named {n:?} (known: {})",
                loaded
                    .services
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return 1;
        }
    }
    match output {
        Output::Json => {
            // The serialized spec leaves out a default kill_mode (so that it
            // does not change the hash of existing services); render shows
            // it always.
            let shown: Vec<serde_json::Value> = selected
                .iter()
                .map(|s| {
                    let mut v = serde_json::to_value(s).expect("specs serialize");
                    if let Some(o) = v.as_object_mut() {
                        o.insert("kill_mode".into(), serde_json::json!(s.kill_mode));
                    }
                    v
                })
                .collect();
            println!(
                "{}",
                serde_json::to_string_pretty(&shown).expect("specs serialize")
            );
        }
        Output::Text => {
            for (i, s) in selected.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{}", text(s));
            }
        }
    }
    i32::from(loaded.has_errors() && name.is_none())
}

/// A config value as the operator writes it in the config (`on-failure`,
/// `file`), not as Rust's Debug prints it.
pub fn config_word<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// `memory 50Mi (52428800 bytes), cpu 500m`, `none` for each limit not set.
pub fn limits_text(r: &upkeep_spec::Resources) -> String {
    let mem = match r.memory_max {
        Some(b) if b % (1 << 20) == 0 => format!("{}Mi ({b} bytes)", b >> 20),
        Some(b) => format!("{b} bytes"),
        None => "none".into(),
    };
    let cpu = match r.cpu_max_millis {
        Some(m) => format!("{m}m"),
        None => "none".into(),
    };
    format!("memory {mem}, cpu {cpu}")
}

fn text(s: &ServiceSpec) -> String {
    let mut o = String::new();
    let d = upkeep_spec::duration::format;
    let _ = writeln!(o, "{}", s.name);
    let _ = writeln!(o, "  source:       {}", s.source.display());
    let _ = writeln!(o, "  argv:");
    for a in &s.argv {
        let _ = writeln!(o, "    {a}");
    }
    let _ = writeln!(o, "  env:");
    for (k, v) in &s.env {
        let _ = writeln!(o, "    {k}={v}");
    }
    let _ = writeln!(o, "  working_dir:  {}", s.working_dir.display());
    let who = |v: Option<u32>| {
        v.map(|v| v.to_string())
            .unwrap_or_else(|| "(upkeep's)".into())
    };
    let _ = writeln!(o, "  uid/gid:      {}/{}", who(s.uid), who(s.gid));
    let _ = writeln!(o, "  restart:      {}", config_word(&s.restart));
    let b = &s.backoff;
    let _ = writeln!(
        o,
        "  backoff:      initial {} max {} factor {} reset_after {} jitter {}",
        d(b.initial),
        d(b.max),
        b.factor,
        d(b.reset_after),
        b.jitter
    );
    let _ = writeln!(
        o,
        "  stop:         {} then SIGKILL after {}",
        s.stop_signal,
        d(s.stop_grace)
    );
    let _ = writeln!(o, "  kill_mode:    {}", s.kill_mode);
    if let Some(p) = &s.pre_stop {
        let _ = writeln!(o, "  preStop:      {}", p.join(" "));
    }
    if !s.after.is_empty() {
        let _ = writeln!(o, "  after:        {}", s.after.join(", "));
    }
    for (kind, p) in [
        ("liveness", &s.probes.liveness),
        ("readiness", &s.probes.readiness),
        ("startup", &s.probes.startup),
    ] {
        if let Some(p) = p {
            let what = match &p.handler {
                ProbeHandler::Http {
                    scheme,
                    host,
                    port,
                    path,
                    ..
                } => {
                    format!(
                        "{}://{}:{}{}",
                        if *scheme == upkeep_spec::Scheme::Https {
                            "https"
                        } else {
                            "http"
                        },
                        host,
                        port,
                        path
                    )
                }
                ProbeHandler::HttpUnix { socket, path } => {
                    format!("http+unix {}{}", socket.display(), path)
                }
                ProbeHandler::Tcp { host, port } => format!("tcp {host}:{port}"),
                ProbeHandler::Exec { argv } => format!("exec {}", argv.join(" ")),
                ProbeHandler::Unresolved { reason } => format!("unresolved ({reason})"),
            };
            let _ = writeln!(
                o,
                "  {kind:<10}    {what} delay {} period {} timeout {} success {} failure {}",
                d(p.initial_delay),
                d(p.period),
                d(p.timeout),
                p.success_threshold,
                p.failure_threshold
            );
        }
    }
    if !s.volumes.is_empty() {
        let ns = if upkeep_spec::needs_mount_namespace(&s.volumes) {
            "private (each mount bound at its mountPath)"
        } else {
            "the host's (every mount at its own path, writable)"
        };
        let _ = writeln!(o, "  mount ns:     {ns}");
    }
    for v in &s.volumes {
        let _ = writeln!(
            o,
            "  hostPath:     {} at {} ({:?}, {}{})",
            v.path.display(),
            v.target().display(),
            v.kind,
            if v.read_only {
                "read-only"
            } else {
                "read-write"
            },
            match v.propagation {
                upkeep_spec::Propagation::None => "",
                upkeep_spec::Propagation::HostToContainer => ", HostToContainer",
            }
        );
    }
    if s.resources.memory_max.is_some() || s.resources.cpu_max_millis.is_some() {
        let _ = writeln!(o, "  limits:       {}", limits_text(&s.resources));
    }
    let _ = writeln!(o, "  log:          {}", config_word(&s.log));
    let _ = writeln!(o, "  hash:         {}", s.hash);
    o
}
