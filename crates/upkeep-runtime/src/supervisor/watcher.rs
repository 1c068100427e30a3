//! The manifests directory watch (inotify through the notify crate).

use super::*;

/// Watches the manifests directory with inotify (the notify crate) and sends
/// a unit message for every relevant event; the supervisor debounces.
pub(super) struct ManifestWatcher {
    watcher: Option<notify::RecommendedWatcher>,
    path: PathBuf,
    ino: Option<u64>,
}

impl ManifestWatcher {
    pub(super) fn new(path: &Path, tx: mpsc::UnboundedSender<()>) -> Self {
        use notify::Watcher;
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(path).ok().map(|m| m.ino());
        let handler = move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                if ev.kind.is_access() {
                    return;
                }
                let _ = tx.send(());
            }
        };
        let watcher = match notify::recommended_watcher(handler) {
            Ok(mut w) => match w.watch(path, notify::RecursiveMode::NonRecursive) {
                Ok(()) => Some(w),
                Err(e) => {
                    debug!(
                        "cannot watch {}: {e} (will retry at the next re-list)",
                        path.display()
                    );
                    None
                }
            },
            Err(e) => {
                warn!("inotify unavailable: {e}; relying on the periodic re-list");
                None
            }
        };
        ManifestWatcher {
            watcher,
            path: path.to_path_buf(),
            ino,
        }
    }

    /// False when the watch could not be placed or the directory was replaced.
    pub(super) fn is_active(&self) -> bool {
        use std::os::unix::fs::MetadataExt;
        self.watcher.is_some() && std::fs::metadata(&self.path).ok().map(|m| m.ino()) == self.ino
    }
}
