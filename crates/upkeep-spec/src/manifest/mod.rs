//! Static Pod manifests: reading the directory, parsing and validating each
//! file, resolving containers to [`ServiceSpec`]s, and keeping the last good
//! version of each file (design.md section 5).
//!
//! A manifest is parsed (first YAML/JSON document only, serde-saphyr with its
//! default budgets against alias bombs and deep nesting) into a located tree,
//! then walked against the supported PodSpec subset. Every problem of a file
//! is reported in one go; unknown fields are warnings naming the field path.
//!
//! The module is split along the file's seams: `scan` lists the directory and
//! parses one file, `pod` walks the Pod and its spec, `volumes` the hostPath
//! volumes, `container` one container (env, resources, hooks), `probes` the
//! probes, and `tracker` keeps the last good version of each file.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::diag::Diagnostic;
use crate::types::ServiceSpec;

mod container;
mod pod;
mod probes;
mod scan;
mod tracker;
mod volumes;

pub use container::image_name;
pub use scan::{is_editor_artifact, load_file, parse, scan};
pub use tracker::{Desired, ManifestTracker};

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
    /// The file's text as it was parsed: what upkeep persists as the last
    /// good version, to parse again after its own restart.
    pub text: std::sync::Arc<str>,
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
    /// Changed less than `settle` ago: not applied yet (it may be half
    /// written); the version running before is kept.
    Settling,
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

// === Name rules ===

/// DNS-1123 label: at most 63 of `[a-z0-9-]`, starting and ending alphanumeric.
pub(crate) fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS-1123 subdomain: at most 253, dot-separated labels.
pub(crate) fn dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(dns_label)
}

/// IANA service name (a named port): 1-15 of `[a-z0-9-]` with a letter, no
/// leading, trailing or double `-`.
pub(crate) fn iana_svc_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--")
}
