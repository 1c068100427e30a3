//! [`KeptLease`]: a lease granted by etcd and renewed from a tokio task every
//! TTL/3, with a `watch` channel that turns `false` the moment it can no
//! longer be trusted to exist.
//!
//! "The moment" means: a renewal failed (every endpoint), etcd said the lease
//! is gone, or no renewal was confirmed before the TTL last granted ran out
//! (measured from when that renewal was sent). Once `false` it stays
//! `false`: the lease is not renewed again, and whoever relied on it (the
//! lock, a node record) must start over with a new one. Reporting a loss
//! that etcd has not yet noticed is the safe error: the caller stops taking
//! new steps early, never late.

use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::client::EtcdClient;
use crate::error::Result;

/// A lease kept alive in the background. Dropping it stops the renewals
/// without revoking (the lease then expires after its TTL, as if this
/// process had been killed); [`KeptLease::revoke`] ends it at once.
#[derive(Debug)]
pub struct KeptLease {
    client: EtcdClient,
    id: i64,
    ttl: Duration,
    alive: watch::Receiver<bool>,
    task: JoinHandle<()>,
}

impl KeptLease {
    /// Grants a lease of `ttl` and starts renewing it every TTL/3.
    pub async fn grant(client: &EtcdClient, ttl: Duration) -> Result<KeptLease> {
        let sent = Instant::now();
        let lease = client.lease_grant(ttl).await?;
        let (tx, rx) = watch::channel(true);
        let task = tokio::spawn(keep_alive(client.clone(), lease.id, lease.ttl, sent, tx));
        Ok(KeptLease {
            client: client.clone(),
            id: lease.id,
            ttl: lease.ttl,
            alive: rx,
            task,
        })
    }

    /// The lease id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The TTL etcd granted.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// `true` while the lease is believed alive; turns `false` once, for good.
    pub fn alive(&self) -> watch::Receiver<bool> {
        self.alive.clone()
    }

    /// Whether the lease is believed alive now.
    pub fn is_alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Stops renewing and revokes the lease (deleting its keys).
    pub async fn revoke(self) -> Result<()> {
        self.task.abort();
        self.client.lease_revoke(self.id).await
    }
}

impl Drop for KeptLease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Renews `id` every `ttl/3` until a renewal fails or the lease is gone.
async fn keep_alive(
    client: EtcdClient,
    id: i64,
    mut ttl: Duration,
    mut confirmed_at: Instant,
    tx: watch::Sender<bool>,
) {
    loop {
        tokio::time::sleep(ttl / 3).await;
        let expires = confirmed_at + ttl;
        let sent = Instant::now();
        let outcome = tokio::time::timeout_at(expires, client.lease_keepalive(id)).await;
        let why = match outcome {
            Ok(Ok(Some(granted))) => {
                ttl = granted;
                confirmed_at = sent;
                continue;
            }
            Ok(Ok(None)) => "etcd says the lease no longer exists".to_string(),
            Ok(Err(e)) => format!("renewal failed: {e}"),
            Err(_) => format!("no renewal confirmed within the {ttl:?} TTL"),
        };
        tracing::warn!(lease = id, reason = %why, "etcd lease lost");
        let _ = tx.send(false);
        return;
    }
}
