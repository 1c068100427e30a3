//! Loading config + manifests the same way for `check`, `render` and `run`.

use std::path::Path;
use upkeep_spec::config::{self, Config, Overrides};
use upkeep_spec::manifest::{self, ManifestTracker};
use upkeep_spec::{Diagnostic, ServiceSpec, Severity};

use crate::cli::Paths;

/// Everything `check` and `render` need.
pub struct Loaded {
    /// The config, when it is valid.
    pub config: Option<Config>,
    /// Host services and static Pod containers, in that order.
    pub services: Vec<ServiceSpec>,
    /// Every problem found, errors first.
    pub diagnostics: Vec<Diagnostic>,
}

impl Loaded {
    /// True when any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// Command-line overrides from `--manifests`, `--listen`, `--state-dir`.
pub fn overrides(paths: &Paths) -> Overrides {
    Overrides {
        manifests: paths.manifests.clone(),
        listen: paths.listen.clone(),
        state_dir: paths.state_dir.clone(),
    }
}

/// Loads the config only (for client commands and `run`).
pub fn config_only(paths: &Paths) -> anyhow::Result<(Config, Vec<Diagnostic>)> {
    let (cfg, diags) = config::load(paths.config.as_deref(), &overrides(paths));
    match cfg {
        Some(cfg) => Ok((cfg, diags)),
        None => {
            let lines: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
            anyhow::bail!("invalid configuration:\n{}", lines.join("\n"))
        }
    }
}

/// Loads the config and every manifest, collecting all diagnostics.
pub fn load_all(paths: &Paths) -> Loaded {
    let (cfg, mut diagnostics) = config::load(paths.config.as_deref(), &overrides(paths));
    let Some(cfg) = cfg else {
        return Loaded {
            config: None,
            services: Vec::new(),
            diagnostics,
        };
    };
    let scan = manifest::scan(&cfg);
    let mut tracker = ManifestTracker::new();
    let desired = tracker.update(scan, &cfg.services);
    diagnostics.extend(desired.errors);
    diagnostics.extend(desired.warnings);
    let mut services = cfg.services.clone();
    services.extend(desired.services);
    for svc in &services {
        if let Some(w) = missing_executable(svc) {
            diagnostics.push(w);
        }
    }
    diagnostics.sort_by(|a, b| b.severity.cmp(&a.severity).then(a.file.cmp(&b.file)));
    Loaded {
        config: Some(cfg),
        services,
        diagnostics,
    }
}

/// A warning when `argv[0]` cannot be found (not an error: the binary may be
/// installed later, and the service then starts through the normal backoff path).
fn missing_executable(svc: &ServiceSpec) -> Option<Diagnostic> {
    let prog = svc.argv.first()?;
    let found = if prog.contains('/') {
        is_executable(Path::new(prog))
    } else {
        let path = svc.env.get("PATH").map(String::as_str).unwrap_or("");
        path.split(':')
            .filter(|d| !d.is_empty())
            .any(|d| is_executable(&Path::new(d).join(prog)))
    };
    if found {
        return None;
    }
    Some(Diagnostic::warning(
        svc.source.clone(),
        Some(format!("{}: command", svc.name)),
        format!("executable {prog:?} not found (searched the service's PATH); the service will be retried with backoff until it exists"),
    ))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
