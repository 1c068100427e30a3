//! The rollout step journal (issue #16): what a step under way has changed,
//! kept in the state directory so that an upkeep killed mid-step is
//! followed by one that finishes the step or rolls it back.
//!
//! The coordinator writes an entry before it lets a service apply its
//! change ([`StepPhase::Applying`], with the spec that ran before), marks it
//! [`StepPhase::RolledBack`] before it orders a rollback, and removes it once
//! the step succeeded or the halt is recorded in etcd. The next upkeep reads
//! the file once; each service's actor decides with [`resume`] what to do.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use upkeep_spec::ServiceSpec;

/// Version of the journal's format; a file of another version is ignored.
pub const JOURNAL_VERSION: u32 = 1;

/// The whole journal: the changes of the step under way, by service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepJournal {
    /// [`JOURNAL_VERSION`].
    pub version: u32,
    /// Entries by service name.
    pub services: BTreeMap<String, StepEntry>,
}

impl Default for StepJournal {
    fn default() -> Self {
        StepJournal {
            version: JOURNAL_VERSION,
            services: BTreeMap::new(),
        }
    }
}

/// One service's change in the step under way.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepEntry {
    /// Spec hash of the change being applied.
    pub to_hash: String,
    /// The spec that ran before the change: what a rollback starts again.
    pub from: ServiceSpec,
    /// When the change was granted (unix milliseconds).
    pub granted_unix_ms: u64,
    /// Where the step was.
    pub phase: StepPhase,
}

/// Where a service's step was when the journal was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum StepPhase {
    /// The change was granted: it must be ready within `ready_timeout` of
    /// `granted_unix_ms`, then stay ready for `soak`.
    Applying,
    /// The change failed and the rollback to `from` was ordered; the halt
    /// may not be recorded in etcd yet.
    RolledBack {
        /// Why the change failed.
        why: String,
    },
}

/// What a service does with the journal entry an earlier upkeep left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resume {
    /// Nothing to finish for the process: the desired spec is another one
    /// (the operator changed it again, or reverted it), or the old process
    /// still runs (the change was never applied; it waits for the lock as
    /// any pending change). A `RolledBack` entry's halt is still recorded.
    Drop,
    /// The change was applied: the step goes on (ready by the deadline, then
    /// the soak), and a failure rolls back to the entry's `from`.
    Continue,
    /// The rollback was ordered but the changed spec may still run: roll
    /// back to `from` now.
    RollBack {
        /// Why the change failed.
        why: String,
    },
}

/// Decides what a service resumes from `entry`, given the hash of the spec
/// it is now told to run and, for an adopted process, whether that process
/// runs it (`Some(true)`), runs something else (`Some(false)`), or there is
/// no process to adopt (`None`: it is started from the desired spec).
pub fn resume(entry: &StepEntry, desired_hash: &str, adopted_current: Option<bool>) -> Resume {
    if desired_hash != entry.to_hash || adopted_current == Some(false) {
        return Resume::Drop;
    }
    match &entry.phase {
        StepPhase::Applying => Resume::Continue,
        StepPhase::RolledBack { why } => Resume::RollBack { why: why.clone() },
    }
}

/// How long an inherited step still has for the change to be ready:
/// what is left of `ready_timeout` since the grant, but never less than
/// `min(ready_timeout, floor)` (the new upkeep has just adopted or started
/// the process; its probes need a moment before they can say "ready").
pub fn remaining(
    granted_unix_ms: u64,
    now_unix_ms: u64,
    ready_timeout: Duration,
    floor: Duration,
) -> Duration {
    let elapsed = Duration::from_millis(now_unix_ms.saturating_sub(granted_unix_ms));
    ready_timeout
        .saturating_sub(elapsed)
        .max(ready_timeout.min(floor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(phase: StepPhase) -> StepEntry {
        let mut from = upkeep_spec::config::parse(
            "[services.web]\ncommand = [\"/bin/sleep\", \"1\"]\n",
            std::path::Path::new("/etc/upkeep/upkeep.toml"),
            &Default::default(),
        )
        .0
        .expect("valid config")
        .services
        .remove(0);
        from.hash = "old".into();
        StepEntry {
            to_hash: "new".into(),
            from,
            granted_unix_ms: 1_000,
            phase,
        }
    }

    #[test]
    fn an_applied_change_goes_on() {
        let e = entry(StepPhase::Applying);
        assert_eq!(resume(&e, "new", Some(true)), Resume::Continue);
        assert_eq!(resume(&e, "new", None), Resume::Continue);
    }

    #[test]
    fn an_unapplied_or_superseded_change_is_dropped() {
        let e = entry(StepPhase::Applying);
        assert_eq!(resume(&e, "new", Some(false)), Resume::Drop);
        assert_eq!(resume(&e, "newer", Some(true)), Resume::Drop);
        assert_eq!(resume(&e, "old", Some(true)), Resume::Drop);
    }

    #[test]
    fn an_ordered_rollback_is_finished() {
        let e = entry(StepPhase::RolledBack {
            why: "not ready".into(),
        });
        assert_eq!(
            resume(&e, "new", Some(true)),
            Resume::RollBack {
                why: "not ready".into()
            }
        );
        assert_eq!(
            resume(&e, "new", None),
            Resume::RollBack {
                why: "not ready".into()
            }
        );
        // The old spec runs already: nothing to do for the process.
        assert_eq!(resume(&e, "new", Some(false)), Resume::Drop);
    }

    #[test]
    fn the_deadline_is_what_is_left_but_never_nothing() {
        let t = Duration::from_secs(300);
        let f = Duration::from_secs(30);
        assert_eq!(remaining(0, 100_000, t, f), Duration::from_secs(200));
        assert_eq!(remaining(0, 290_000, t, f), Duration::from_secs(30));
        assert_eq!(remaining(0, 10_000_000, t, f), Duration::from_secs(30));
        // A short ready_timeout is its own floor.
        let short = Duration::from_secs(5);
        assert_eq!(remaining(0, 10_000_000, short, f), short);
        // A clock that went back: the whole timeout.
        assert_eq!(remaining(5_000, 1_000, t, f), t);
    }

    #[test]
    fn the_journal_round_trips() {
        let mut j = StepJournal::default();
        j.services.insert(
            "web".into(),
            entry(StepPhase::RolledBack { why: "x".into() }),
        );
        j.services.insert("db".into(), entry(StepPhase::Applying));
        let text = serde_json::to_string(&j).unwrap();
        let back: StepJournal = serde_json::from_str(&text).unwrap();
        assert_eq!(back, j);
    }
}
