//! The accept loop shared by the HTTP listener and the control socket: a
//! bounded number of connections, shutdown at any point, and a failed
//! `accept` (e.g. out of fds) retried after a pause instead of spinning.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Waits for a free connection slot, then for the next connection. `None`
/// once `shutdown` completes. `what` names the listener in the log.
pub(crate) async fn next_connection<S, Sh, F, Fut>(
    what: &str,
    permits: &Arc<Semaphore>,
    shutdown: &mut Sh,
    mut accept: F,
) -> Option<(OwnedSemaphorePermit, S)>
where
    Sh: Future<Output = ()> + Unpin,
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<S>>,
{
    let permit = tokio::select! {
        biased;
        () = &mut *shutdown => return None,
        // The semaphore is never closed; nothing left to serve if it were.
        p = permits.clone().acquire_owned() => p.ok()?,
    };
    loop {
        tokio::select! {
            biased;
            () = &mut *shutdown => return None,
            r = accept() => match r {
                Ok(stream) => return Some((permit, stream)),
                Err(e) => {
                    tracing::warn!("{what}: accept failed: {e}");
                    tokio::select! {
                        () = &mut *shutdown => return None,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            },
        }
    }
}
