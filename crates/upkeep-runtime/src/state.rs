//! The state file: what the next upkeep needs to adopt running services
//! instead of starting duplicates (design.md section 6).
//!
//! Written after a spawn, never before it (design.md section 10). Saved
//! atomically (temporary file, fsync, rename, fsync of the directory). A file
//! that is corrupt or from another version is reported as an error to log and
//! ignore; nothing in it is trusted without checking the live process
//! ([`ServiceRecord::still_alive`]).

use crate::reaper::process_stat;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use upkeep_core::step::StepJournal;
use upkeep_core::ExitStatus;

/// Version written by this upkeep; any other is refused.
pub const STATE_VERSION: u32 = 1;

/// File name inside the state directory.
pub const STATE_FILE: &str = "state.json";

/// A state file bigger than this is refused rather than read.
const MAX_STATE_BYTES: u64 = 16 << 20;

/// One running service as the previous upkeep left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Service name (`pod/container` or a host service name).
    pub name: String,
    /// Main process pid.
    pub pid: u32,
    /// Its start time (field 22 of `/proc/PID/stat`), to detect pid reuse.
    pub start_time: u64,
    /// Hash of the spec it was started from.
    pub spec_hash: String,
    /// Hash of what it executes (`upkeep_spec::hash::exec_hash`); a
    /// different one means replace it. Empty in records of older upkeeps
    /// (then `spec_hash` decides).
    #[serde(default)]
    pub exec_hash: String,
    /// Its process group (= pid: services are session leaders).
    pub pgid: u32,
    /// When it was started, unix milliseconds.
    pub started_at_unix_ms: u64,
    /// Restarts so far.
    pub restarts: u64,
    /// Ready at the time of writing.
    pub ready: bool,
    /// Startup probe passed (or none) at the time of writing.
    pub started: bool,
    /// Exit status of the previous run, if any.
    pub last_exit: Option<ExitStatus>,
    /// Its cgroup, relative to the cgroup2 root (`/upkeep.slice/etcd`).
    pub cgroup: Option<String>,
}

impl ServiceRecord {
    /// True if a process with this pid exists, is not a zombie, and started
    /// at the recorded time (so it is the same process, not a reused pid).
    pub fn still_alive(&self) -> bool {
        match process_stat(self.pid) {
            Ok(stat) => stat.start_time == self.start_time && stat.state != 'Z',
            Err(_) => false,
        }
    }
}

/// The whole state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFile {
    /// Format version ([`STATE_VERSION`]).
    pub version: u32,
    /// Records by service name.
    pub services: BTreeMap<String, ServiceRecord>,
    /// Services held by the operator (`upkeep stop NAME`): they stay stopped
    /// until `upkeep start NAME`, across upkeep's restarts and crashes.
    #[serde(default)]
    pub held: BTreeSet<String>,
    /// `/proc/sys/kernel/random/boot_id` when written: records of another
    /// boot are never adopted (their pids mean nothing now).
    #[serde(default)]
    pub boot_id: String,
}

impl StateFile {
    /// A file of the current version with these records.
    pub fn new(services: BTreeMap<String, ServiceRecord>) -> StateFile {
        StateFile {
            version: STATE_VERSION,
            services,
            held: BTreeSet::new(),
            boot_id: boot_id(),
        }
    }
}

impl Default for StateFile {
    fn default() -> Self {
        StateFile::new(BTreeMap::new())
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), empty if unreadable.
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The last good text of every manifest file, by path: what upkeep runs a
/// pod from when, after its own restart, the file is broken, unreadable or
/// gone with its directory.
pub const LAST_GOOD_FILE: &str = "last-good-manifests.json";

/// Writes the last good manifests atomically (0600).
pub fn save_last_good(dir: &Path, texts: &BTreeMap<PathBuf, String>) -> io::Result<()> {
    let json = serde_json::to_vec(texts).map_err(|e| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{LAST_GOOD_FILE}: {e}"))
    })?;
    write_atomic(dir, LAST_GOOD_FILE, &json)
}

/// Reads the last good manifests; an absent, unreadable or corrupt file
/// is an empty set (with the reason, to log).
pub fn load_last_good(dir: &Path) -> (BTreeMap<PathBuf, String>, Option<String>) {
    let path = dir.join(LAST_GOOD_FILE);
    match fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(m) => (m, None),
            Err(e) => (
                BTreeMap::new(),
                Some(format!("{}: not valid ({e}); ignored", path.display())),
            ),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => (BTreeMap::new(), None),
        Err(e) => (
            BTreeMap::new(),
            Some(format!("{}: {e}; ignored", path.display())),
        ),
    }
}

/// The operator's holds (`upkeep stop NAME`), in a file of their own: the
/// state file is a cache that may be lost (then every process is found again
/// through its cgroup), an operator's stop is not. Written only when a hold
/// changes, before `upkeep stop`/`start` is answered.
pub const HOLDS_FILE: &str = "holds.json";

/// Writes the holds atomically (0600).
pub fn save_holds(dir: &Path, holds: &BTreeSet<String>) -> io::Result<()> {
    let json = serde_json::to_vec(holds)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{HOLDS_FILE}: {e}")))?;
    write_atomic(dir, HOLDS_FILE, &json)
}

/// Reads the holds: `None` when the file does not exist (an upkeep that
/// kept them only in the state file), with the reason when it is
/// unreadable or corrupt (then also `None`).
pub fn load_holds(dir: &Path) -> (Option<BTreeSet<String>>, Option<String>) {
    let path = dir.join(HOLDS_FILE);
    match fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(h) => (Some(h), None),
            Err(e) => (
                None,
                Some(format!("{}: not valid ({e}); ignored", path.display())),
            ),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => (None, None),
        Err(e) => (None, Some(format!("{}: {e}; ignored", path.display()))),
    }
}

/// The rollout step journal ([`upkeep_core::step`]): the changes of the
/// step under way, so that the next upkeep finishes or rolls back a step
/// its predecessor was killed in. Absent when no step is under way. It holds
/// specs (argv, environment): 0600, like every file here.
pub const STEP_FILE: &str = "rollout-step.json";

/// Writes the step journal atomically (0600), or removes the file when the
/// journal is empty.
pub fn save_step_journal(dir: &Path, journal: &StepJournal) -> io::Result<()> {
    if journal.services.is_empty() {
        return match fs::remove_file(dir.join(STEP_FILE)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        };
    }
    let json = serde_json::to_vec_pretty(journal)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{STEP_FILE}: {e}")))?;
    write_atomic(dir, STEP_FILE, &json)
}

/// Reads the step journal; an absent file is an empty journal, an
/// unreadable, corrupt or other-version one too (with the reason, to log).
pub fn load_step_journal(dir: &Path) -> (StepJournal, Option<String>) {
    let path = dir.join(STEP_FILE);
    match fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<StepJournal>(&bytes) {
            Ok(j) if j.version == upkeep_core::step::JOURNAL_VERSION => (j, None),
            Ok(j) => (
                StepJournal::default(),
                Some(format!(
                    "{}: version {} (this upkeep reads {}); ignored",
                    path.display(),
                    j.version,
                    upkeep_core::step::JOURNAL_VERSION
                )),
            ),
            Err(e) => (
                StepJournal::default(),
                Some(format!("{}: not valid ({e}); ignored", path.display())),
            ),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => (StepJournal::default(), None),
        Err(e) => (
            StepJournal::default(),
            Some(format!("{}: {e}; ignored", path.display())),
        ),
    }
}

/// Writes `<dir>/state.json` atomically (0600).
pub fn save(dir: &Path, state: &StateFile) -> io::Result<()> {
    let mut json = serde_json::to_vec_pretty(state)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("state file: {e}")))?;
    json.push(b'\n');
    write_atomic(dir, STATE_FILE, &json)
}

/// Writes `<dir>/<name>` atomically: a temporary file (0600), fsync,
/// rename, fsync of the directory.
fn write_atomic(dir: &Path, name: &str, json: &[u8]) -> io::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let ctx = |what: &str, p: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("state file: {what} {}: {e}", p.display()))
    };
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(json)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(ctx("write", &tmp, e));
    }
    fs::rename(&tmp, &path).map_err(|e| ctx("rename to", &path, e))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| ctx("sync directory", dir, e))
}

/// Why a state file was not used.
#[derive(Debug, thiserror::Error)]
#[error("state file {}: {problem}; ignored", path.display())]
pub struct StateError {
    /// The file.
    pub path: std::path::PathBuf,
    /// What is wrong with it.
    pub problem: StateProblem,
}

/// What is wrong with a state file.
#[derive(Debug, thiserror::Error)]
pub enum StateProblem {
    /// It cannot be read.
    #[error("{0}")]
    Io(#[source] io::Error),
    /// It is larger than upkeep ever writes.
    #[error("larger than {0} bytes")]
    TooBig(u64),
    /// It is not JSON.
    #[error("not valid JSON ({0})")]
    NotJson(#[source] serde_json::Error),
    /// It is JSON but not the shape of a state file.
    #[error("unexpected content ({0})")]
    Content(#[source] serde_json::Error),
    /// It has no version field.
    #[error("no version field")]
    NoVersion,
    /// It has another version.
    #[error("version {found}, this upkeep reads version {expected}")]
    Version {
        /// The version found.
        found: u64,
        /// The version this upkeep reads.
        expected: u32,
    },
    /// A record is filed under another service's name.
    #[error("record {key:?} names service {name:?}")]
    Mismatch {
        /// The key.
        key: String,
        /// The name in the record.
        name: String,
    },
}

/// Reads `<dir>/state.json`: `Ok(None)` if there is none; `Err` (to log,
/// then start from scratch) if it is unreadable, too big, not JSON, not our
/// format, or from another version.
pub fn load(dir: &Path) -> Result<Option<StateFile>, StateError> {
    let path = dir.join(STATE_FILE);
    let err = |problem| StateError {
        path: path.clone(),
        problem,
    };
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(StateProblem::Io(e))),
    };
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(StateProblem::Io(e)))?;
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(err(StateProblem::TooBig(MAX_STATE_BYTES)));
    }
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| err(StateProblem::NotJson(e)))?;
    match value.get("version").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(STATE_VERSION) => {}
        Some(found) => {
            return Err(err(StateProblem::Version {
                found,
                expected: STATE_VERSION,
            }))
        }
        None => return Err(err(StateProblem::NoVersion)),
    }
    let state: StateFile =
        serde_json::from_value(value).map_err(|e| err(StateProblem::Content(e)))?;
    for (key, rec) in &state.services {
        if *key != rec.name {
            return Err(err(StateProblem::Mismatch {
                key: key.clone(),
                name: rec.name.clone(),
            }));
        }
    }
    Ok(Some(state))
}
