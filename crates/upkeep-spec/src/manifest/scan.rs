//! Listing the manifests directory and reading one file: ownership and mode
//! checks, the size cap, YAML parsing, then the Pod walk of `pod`.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::pod::read_pod;
use super::{DirScan, FileOutcome, LoadedPod, MAX_MANIFEST_BYTES};
use crate::config::{read_capped, Config};
use crate::diag::{Diagnostic, Severity};
use crate::hash::fnv1a_128_hex;
use crate::node::{self, Ctx};

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
    let original: std::sync::Arc<str> = std::sync::Arc::from(text);
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
                text: original,
            })
        }
        _ => {
            let mut diags = ctx.diags;
            diags.sort_by_key(|d| std::cmp::Reverse(d.severity));
            FileOutcome::Invalid(diags)
        }
    }
}
