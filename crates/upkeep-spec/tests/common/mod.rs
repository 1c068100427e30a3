//! Shared helpers for the upkeep-spec integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use upkeep_spec::config::Config;
use upkeep_spec::manifest::{FileOutcome, LoadedPod};
use upkeep_spec::{Diagnostic, Severity};

/// The manifest fixtures in the repository (`tests/fixtures/manifests`).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/manifests")
}

/// A config with a fixed node name and IP.
pub fn cfg() -> Config {
    Config {
        node_name: "Master-1".into(),
        node_ip: "10.0.0.11".into(),
        ..Config::defaults()
    }
}

/// The pod, or a panic listing the diagnostics.
pub fn pod(outcome: FileOutcome) -> LoadedPod {
    match outcome {
        FileOutcome::Pod(p) => p,
        other => panic!("expected a valid pod, got {other:#?}"),
    }
}

/// The diagnostics of an invalid file, or a panic.
pub fn invalid(outcome: FileOutcome) -> Vec<Diagnostic> {
    match outcome {
        FileOutcome::Invalid(d) => {
            assert!(
                d.iter().any(|d| d.severity == Severity::Error),
                "invalid without an error: {d:#?}"
            );
            d
        }
        other => panic!("expected an invalid file, got {other:#?}"),
    }
}

/// Whether some error mentions every one of `words` (in message or field).
pub fn has_error(diags: &[Diagnostic], words: &[&str]) -> bool {
    diags.iter().any(|d| {
        d.severity == Severity::Error && {
            let text = d.to_string();
            words.iter().all(|w| text.contains(w))
        }
    })
}

/// Fails loudly when not root (tests that need root must not skip silently).
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root (file ownership checks); run the tests as root"
    );
}
