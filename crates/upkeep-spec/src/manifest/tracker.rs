//! Keeping the last good version of each manifest file across scans, and
//! settling name conflicts between files and with the config's services.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{DirScan, FileOutcome, LoadedPod};
use crate::diag::{Diagnostic, Severity};
use crate::types::ServiceSpec;

/// The desired set derived from the manifests, keeping the last good version of
/// every file that has since become invalid.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Desired {
    /// Services to run, from manifests.
    pub services: Vec<ServiceSpec>,
    /// Current problems (bad files, duplicates), for /health and metrics.
    pub errors: Vec<Diagnostic>,
    /// Warnings and notes of this scan.
    pub warnings: Vec<Diagnostic>,
}

/// Remembers the last good version of each manifest file across scans.
#[derive(Debug, Clone, Default)]
pub struct ManifestTracker {
    last_good: BTreeMap<PathBuf, LoadedPod>,
}

impl ManifestTracker {
    /// An empty tracker (nothing known yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Seeds the last good versions known from before (upkeep's own
    /// restart): a file that is broken, unreadable or missing with its
    /// directory at the first scan keeps this version running.
    pub fn seed(&mut self, pods: impl IntoIterator<Item = LoadedPod>) {
        for pod in pods {
            self.last_good.entry(pod.file.clone()).or_insert(pod);
        }
    }

    /// The pods currently kept, by file (the last good version of each).
    pub fn pods(&self) -> impl Iterator<Item = &LoadedPod> {
        self.last_good.values()
    }

    /// Folds a new scan in and returns what should run. Invalid files keep their
    /// last good version; removed files drop out; an unreadable directory keeps
    /// everything; duplicate pod names keep the one already known (or the first
    /// in name order) and report both files. `host_services` are the config's
    /// services, whose names manifests may not take.
    pub fn update(&mut self, scan: DirScan, host_services: &[ServiceSpec]) -> Desired {
        let mut desired = Desired::default();
        for d in scan.diagnostics {
            if d.severity == Severity::Error {
                desired.errors.push(d);
            } else {
                desired.warnings.push(d);
            }
        }
        if scan.unreadable && scan.files.is_empty() {
            if !self.last_good.is_empty() {
                // Pods run from it: a missing or refused directory is an
                // error for /health, never a removal.
                let kept = self.last_good.len();
                for d in desired.warnings.iter_mut() {
                    d.severity = Severity::Error;
                    d.message = format!(
                        "{}; the last good version of {kept} manifest(s) keeps running",
                        d.message.trim_end_matches(": no static pods")
                    );
                }
                desired.errors.append(&mut desired.warnings);
            }
            desired.services = self
                .last_good
                .values()
                .flat_map(|p| p.services.clone())
                .collect();
            return desired;
        }
        // Candidate version of each file: the new one if valid, else the last good one.
        let mut candidates: BTreeMap<PathBuf, (Option<LoadedPod>, Option<LoadedPod>)> =
            BTreeMap::new();
        for (path, outcome) in scan.files {
            let old = self.last_good.get(&path).cloned();
            match outcome {
                FileOutcome::Pod(pod) => {
                    desired.warnings.extend(pod.warnings.iter().cloned());
                    candidates.insert(path, (Some(pod), old));
                }
                FileOutcome::Invalid(diags) => {
                    for d in diags {
                        if d.severity == Severity::Error {
                            desired.errors.push(d);
                        } else {
                            desired.warnings.push(d);
                        }
                    }
                    if old.is_some() {
                        desired.warnings.push(Diagnostic::warning(
                            &path,
                            None,
                            "invalid: the last good version keeps running until the file is fixed",
                        ));
                    }
                    candidates.insert(path, (None, old));
                }
                FileOutcome::Ignored(note) => desired.warnings.push(note),
                FileOutcome::Settling => {
                    // Not applied yet: whatever ran before keeps running.
                    candidates.insert(path, (None, old));
                }
            }
        }
        if scan.unreadable {
            // A partial listing: keep files we could not see this time.
            for (path, pod) in &self.last_good {
                candidates
                    .entry(path.clone())
                    .or_insert_with(|| (None, Some(pod.clone())));
            }
        }
        // Claim names: host services first, then files already running, then new ones.
        let mut claimed_services: BTreeMap<String, Claim> = BTreeMap::new();
        let mut claimed_pods: BTreeMap<String, PathBuf> = BTreeMap::new();
        for s in host_services {
            claimed_services.insert(
                s.name.clone(),
                Claim {
                    file: s.source.clone(),
                    field: format!("services.{}", s.name),
                },
            );
        }
        let known: Vec<PathBuf> = candidates
            .keys()
            .filter(|p| self.last_good.contains_key(*p))
            .cloned()
            .collect();
        let fresh: Vec<PathBuf> = candidates
            .keys()
            .filter(|p| !self.last_good.contains_key(*p))
            .cloned()
            .collect();
        let mut accepted: BTreeMap<PathBuf, LoadedPod> = BTreeMap::new();
        for path in known.into_iter().chain(fresh) {
            let Some((new, old)) = candidates.remove(&path) else {
                continue;
            };
            let mut chosen = None;
            for (is_new, pod) in [(true, new), (false, old)] {
                let Some(pod) = pod else { continue };
                match conflict(&pod, &path, &claimed_services, &claimed_pods) {
                    None => {
                        chosen = Some(pod);
                        break;
                    }
                    Some(c) => {
                        if is_new {
                            desired.errors.push(Diagnostic::error(
                                &path,
                                Some(c.field),
                                format!(
                                    "duplicate {}: already defined by {} ({}), which stays; this version of the file is not started",
                                    c.what,
                                    c.other.file.display(),
                                    c.other.field
                                ),
                            ));
                        }
                    }
                }
            }
            if let Some(pod) = chosen {
                claimed_pods.insert(pod.pod_name.clone(), path.clone());
                for (i, s) in pod.services.iter().enumerate() {
                    let claim = Claim {
                        file: path.clone(),
                        field: service_field(&pod, i),
                    };
                    claimed_services.insert(s.name.clone(), claim);
                }
                accepted.insert(path, pod);
            }
        }
        desired.services = accepted.values().flat_map(|p| p.services.clone()).collect();
        self.last_good = accepted;
        desired
    }
}

/// Who holds a service name: the file and the field that gave it.
#[derive(Debug, Clone)]
struct Claim {
    file: PathBuf,
    field: String,
}

/// A name of a pod that is already taken.
struct Conflict {
    /// The field of the pod that gave the name.
    field: String,
    /// What is duplicated, e.g. `service name "etcd"`.
    what: String,
    /// Who holds it.
    other: Claim,
}

/// The field a pod's `i`th service takes its name from: the pod name for a
/// single container, else the container name.
fn service_field(pod: &LoadedPod, i: usize) -> String {
    if pod.services.len() == 1 {
        "metadata.name".to_string()
    } else {
        format!("spec.containers[{i}].name")
    }
}

/// The first of `pod`'s names (pod name, then service names) that another
/// source already holds.
fn conflict(
    pod: &LoadedPod,
    path: &Path,
    services: &BTreeMap<String, Claim>,
    pods: &BTreeMap<String, PathBuf>,
) -> Option<Conflict> {
    if let Some(other) = pods.get(&pod.pod_name).filter(|o| o.as_path() != path) {
        return Some(Conflict {
            field: "metadata.name".to_string(),
            what: format!("pod name {:?}", pod.pod_name),
            other: Claim {
                file: other.clone(),
                field: "metadata.name".to_string(),
            },
        });
    }
    pod.services.iter().enumerate().find_map(|(i, s)| {
        services
            .get(&s.name)
            .filter(|o| o.file.as_path() != path)
            .map(|o| Conflict {
                field: service_field(pod, i),
                what: format!("service name {:?}", s.name),
                other: o.clone(),
            })
    })
}
