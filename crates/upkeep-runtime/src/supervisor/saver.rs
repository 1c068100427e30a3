//! The state file's one writer: coalesced background writes, and the
//! final write at exit, never at the same time.

use super::*;

pub(super) async fn state_saver(ctx: Arc<Ctx>) {
    loop {
        ctx.save.notified().await;
        // Coalesce bursts (a restart storm, the first start of every service)
        // into one write. Until it lands, the service's cgroup is the record.
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A change during the sleep left a stored wake-up; the flag makes sure
        // it does not cost a second, identical write.
        if !ctx.dirty.swap(false, std::sync::atomic::Ordering::AcqRel) {
            continue;
        }
        let ctx2 = ctx.clone();
        let _ = tokio::task::spawn_blocking(move || write_state(&ctx2)).await;
    }
}

pub(super) fn write_state(ctx: &Ctx) {
    let _one_writer = ctx.write_lock.lock().unwrap_or_else(|p| p.into_inner());
    let services = ctx
        .records
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut file = StateFile::new(services);
    file.held = ctx.holds.lock().unwrap_or_else(|p| p.into_inner()).clone();
    if let Err(e) = state::save(&ctx.state_dir, &file) {
        warn!("cannot write the state file: {e}");
    }
}
