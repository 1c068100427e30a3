//! The event log: a bounded ring of [`Event`]s per service, kept in
//! `<state_dir>/events/<service>.jsonl` (one JSON object a line, root-only)
//! so that it survives upkeep's restart. Appends are one `write` each; a
//! file is cut back to its newest [`BOUND`] events (write and rename) once
//! it holds twice as many.

use crate::logs::{log_path, tail};
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;
use upkeep_core::events::{Event, EventSink};
use upkeep_core::snapshot::ManifestError;

/// Events kept per service.
pub const BOUND: usize = 100;
/// Output lines attached to an exit event (the kubelet's
/// FallbackToLogsOnError: 80 lines or 2 KiB; here 20 lines or 4 KiB).
pub const OUTPUT_LINES: usize = 20;
/// Bytes of output attached to an exit event.
pub const OUTPUT_BYTES: usize = 4096;

/// An event log could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("events: cannot {action} {}: {source}", path.display())]
pub struct EventsError {
    /// What was being done.
    pub action: &'static str,
    /// The file or directory.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: io::Error,
}

/// The directory of the event files under `state_dir`.
pub fn events_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("events")
}

fn file_of(dir: &Path, service: &str) -> PathBuf {
    dir.join(format!(
        "{}.jsonl",
        upkeep_spec::names::path_component(service)
    ))
}

/// The event log of a running upkeep.
#[derive(Debug)]
pub struct EventLog {
    dir: PathBuf,
    log_dir: PathBuf,
    /// Lines in each service's file, once known.
    lines: Mutex<HashMap<String, usize>>,
}

impl EventLog {
    /// A log under `state_dir`, attaching output tails from `log_dir`.
    pub fn new(state_dir: &Path, log_dir: &Path) -> Self {
        EventLog {
            dir: events_dir(state_dir),
            log_dir: log_dir.to_path_buf(),
            lines: Mutex::new(HashMap::new()),
        }
    }

    /// Appends `event` to its service's ring.
    pub fn append(&self, event: &Event) -> Result<(), EventsError> {
        let err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| EventsError {
                action,
                path,
                source,
            }
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(err("create", &self.dir))?;
        let path = file_of(&self.dir, &event.service);
        let mut line = serde_json::to_string(event).unwrap_or_default();
        line.push('\n');
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(err("append to", &path))?;
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let n = lines
            .entry(event.service.clone())
            .or_insert_with(|| count_lines(&path));
        *n += 1;
        if *n > 2 * BOUND {
            compact(&path, BOUND).map_err(err("compact", &path))?;
            *n = BOUND;
        }
        Ok(())
    }

    /// The tail of `service`'s output file, capped (for exit events).
    fn output_tail(&self, service: &str) -> Option<String> {
        let lines = tail(&log_path(&self.log_dir, service), OUTPUT_LINES).ok()?;
        if lines.is_empty() {
            return None;
        }
        let text = lines.join("\n");
        let cut = text.len().saturating_sub(OUTPUT_BYTES);
        let start = (cut..=text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        Some(text[start..].to_string())
    }
}

fn count_lines(path: &Path) -> usize {
    fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// Keeps the newest `keep` lines of `path` (write a temp file, rename).
fn compact(path: &Path, keep: usize) -> io::Result<()> {
    let text = fs::read_to_string(path)?;
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(keep);
    let mut out = lines[from..].join("\n");
    out.push('\n');
    let tmp = path.with_extension("jsonl.tmp");
    fs::write(&tmp, out)?;
    fs::rename(&tmp, path)
}

impl EventSink for EventLog {
    fn record(&self, service: &str, reason: &str, message: &str, with_output: bool) {
        let at_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let event = Event {
            at_ms,
            service: service.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            output: if with_output {
                self.output_tail(service)
            } else {
                None
            },
        };
        if let Err(e) = self.append(&event) {
            tracing::warn!(service, "{e}");
        }
    }
}

/// The events of a change in the manifest errors, as (file, reason,
/// message): `ManifestError` for each error that is new, `ManifestFixed` for
/// each file that had errors and has none now. The file path stands for the
/// service (`upkeep events` lists them with the services).
pub fn manifest_changes(
    before: &[ManifestError],
    after: &[ManifestError],
) -> Vec<(String, &'static str, String)> {
    let mut out = Vec::new();
    for e in after.iter().filter(|e| !before.contains(e)) {
        out.push((
            e.file.clone(),
            "ManifestError",
            format!("{} (the last good version, if any, keeps running)", e.error),
        ));
    }
    let mut fixed: Vec<&str> = before
        .iter()
        .map(|e| e.file.as_str())
        .filter(|f| !after.iter().any(|a| a.file == *f))
        .collect();
    fixed.dedup();
    for f in fixed {
        out.push((
            f.to_string(),
            "ManifestFixed",
            "the manifest is valid again".into(),
        ));
    }
    out
}

/// The events kept under `state_dir`, of `service` or of all services,
/// oldest first. Lines that do not parse are skipped.
pub fn load(state_dir: &Path, service: Option<&str>) -> Result<Vec<Event>, EventsError> {
    let dir = events_dir(state_dir);
    let files: Vec<PathBuf> = match service {
        Some(s) => vec![file_of(&dir, s)],
        None => match fs::read_dir(&dir) {
            Ok(rd) => rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(source) => {
                return Err(EventsError {
                    action: "list",
                    path: dir,
                    source,
                })
            }
        },
    };
    let mut events = Vec::new();
    for f in files {
        let text = match fs::read_to_string(&f) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(EventsError {
                    action: "read",
                    path: f,
                    source,
                })
            }
        };
        events.extend(
            text.lines()
                .filter_map(|l| serde_json::from_str::<Event>(l).ok()),
        );
    }
    events.sort_by_key(|e| e.at_ms);
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(service: &str, at_ms: u64) -> Event {
        Event {
            at_ms,
            service: service.into(),
            reason: "Started".into(),
            message: format!("started {at_ms}"),
            output: None,
        }
    }

    #[test]
    fn ring_is_bounded_and_survives_a_new_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::new(dir.path(), dir.path());
        for i in 0..(2 * BOUND as u64 + 5) {
            log.append(&ev("kube-system-etcd/etcd", i)).unwrap();
        }
        log.append(&ev("other", 1)).unwrap();
        let all = load(dir.path(), Some("kube-system-etcd/etcd")).unwrap();
        assert!(
            all.len() <= 2 * BOUND && all.len() >= BOUND,
            "{}",
            all.len()
        );
        assert_eq!(all.last().unwrap().at_ms, 2 * BOUND as u64 + 4);
        // A new log (upkeep restarted) appends after what is there.
        let again = EventLog::new(dir.path(), dir.path());
        again.append(&ev("other", 2)).unwrap();
        let others = load(dir.path(), Some("other")).unwrap();
        assert_eq!(others.iter().map(|e| e.at_ms).collect::<Vec<_>>(), [1, 2]);
        let every = load(dir.path(), None).unwrap();
        assert_eq!(every.len(), all.len() + 2);
        assert!(every.windows(2).all(|w| w[0].at_ms <= w[1].at_ms));
    }

    #[test]
    fn manifest_errors_and_fixes() {
        let e = |f: &str, m: &str| ManifestError {
            file: f.into(),
            error: m.into(),
        };
        let before = [e("/m/a.yaml", "bad"), e("/m/b.yaml", "bad")];
        let after = [e("/m/b.yaml", "bad"), e("/m/c.yaml", "worse")];
        let ch = manifest_changes(&before, &after);
        assert_eq!(ch.len(), 2);
        assert_eq!((ch[0].0.as_str(), ch[0].1), ("/m/c.yaml", "ManifestError"));
        assert!(ch[0].2.starts_with("worse"));
        assert_eq!((ch[1].0.as_str(), ch[1].1), ("/m/a.yaml", "ManifestFixed"));
    }

    #[test]
    fn output_tail_is_capped() {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(1000);
        let text: String = (0..30).map(|i| format!("{i} {long}\n")).collect();
        fs::write(log_path(dir.path(), "svc"), text).unwrap();
        let log = EventLog::new(dir.path(), dir.path());
        let tail = log.output_tail("svc").unwrap();
        assert!(tail.len() <= OUTPUT_BYTES);
        assert!(tail.ends_with(&long));
        assert_eq!(load(dir.path(), Some("nosuch")).unwrap(), vec![]);
    }
}
