//! What every service actor shares: the snapshot, the adoption records and
//! operator holds (saved by the state saver), readiness for `after`.

use super::*;

/// State shared by all actors.
pub(super) struct Ctx {
    pub(super) shared: Arc<Shared>,
    /// Bumped whenever any service's readiness changes (for `after`).
    pub(super) ready_tx: watch::Sender<u64>,
    /// Adoption records by service name; saved by the state saver.
    pub(super) records: Mutex<BTreeMap<String, ServiceRecord>>,
    /// Wakes the state saver.
    pub(super) save: tokio::sync::Notify,
    /// Records changed since the last write.
    pub(super) dirty: std::sync::atomic::AtomicBool,
    pub(super) state_dir: PathBuf,
    /// Services held by the operator; saved with the records.
    pub(super) holds: Mutex<std::collections::BTreeSet<String>>,
    /// One writer of the state file at a time (the saver and the final
    /// write at exit never overlap).
    pub(super) write_lock: Mutex<()>,
    /// The rollout coordinator's link (issue #16); `None` without `[cluster]`.
    pub(super) rollout: Option<super::rollout::Link>,
}

impl Ctx {
    /// Records an operator hold (or its end) for the state file.
    pub(super) fn set_hold(&self, name: &str, held: bool) {
        let mut holds = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        let changed = if held {
            holds.insert(name.to_string())
        } else {
            holds.remove(name)
        };
        drop(holds);
        if changed {
            self.dirty.store(true, std::sync::atomic::Ordering::Release);
            self.save.notify_one();
        }
    }

    /// True if the operator holds `name` stopped.
    pub(super) fn is_held(&self, name: &str) -> bool {
        self.holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(name)
    }

    pub(super) fn record(&self, name: &str, rec: Option<ServiceRecord>) {
        let mut recs = self.records.lock().unwrap_or_else(|p| p.into_inner());
        let changed = match rec {
            Some(r) => recs.insert(name.to_string(), r.clone()).as_ref() != Some(&r),
            None => recs.remove(name).is_some(),
        };
        drop(recs);
        // Only real changes cost a write (and its fsyncs).
        if changed {
            self.dirty.store(true, std::sync::atomic::Ordering::Release);
            self.save.notify_one();
        }
    }

    /// Counts a bug upkeep caught and survived (`upkeep_internal_errors_total`).
    pub(super) fn internal_error(&self, kind: &str) {
        let mut snap = self
            .shared
            .snapshot
            .write()
            .unwrap_or_else(|p| p.into_inner());
        *snap.internal_errors.entry(kind.to_string()).or_default() += 1;
    }

    pub(super) fn bump_ready(&self) {
        self.ready_tx.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The services of `after` that are not ready now.
    pub(super) fn not_ready(&self, after: &[String]) -> Vec<String> {
        if after.is_empty() {
            return Vec::new();
        }
        let snap = self
            .shared
            .snapshot
            .read()
            .unwrap_or_else(|p| p.into_inner());
        after
            .iter()
            .filter(|d| !snap.services.get(*d).is_some_and(|s| s.healthy()))
            .cloned()
            .collect()
    }
}
