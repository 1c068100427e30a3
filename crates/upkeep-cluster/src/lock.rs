//! [`ClusterLock`]: one holder in the whole cluster, under `<prefix>/lock`.
//!
//! Acquire: grant a lease, then one transaction "if the lock key does not
//! exist (create_revision == 0), put it with our node name, attached to the
//! lease; else read it". The lease is renewed every TTL/3 by a
//! [`KeptLease`]; [`LockGuard::held`] turns `false` the moment that fails.
//! This module only reports the loss: the caller decides (a step already
//! started completes; no new one begins). Release revokes the lease, which
//! deletes the key. A holder that dies without releasing holds the lock
//! until its lease expires, one TTL later.

use std::time::Duration;

use tokio::sync::watch;

use crate::client::{Compare, EtcdClient, TxnOp, TxnOpResult};
use crate::error::Result;
use crate::keys::Keys;
use crate::lease::KeptLease;

/// Default lease TTL of the lock.
pub const DEFAULT_LOCK_TTL: Duration = Duration::from_secs(10);

/// The cluster-wide rollout lock, as seen by one node.
#[derive(Debug, Clone)]
pub struct ClusterLock {
    client: EtcdClient,
    key: String,
    node: String,
    ttl: Duration,
}

/// The outcome of [`ClusterLock::try_acquire`].
#[derive(Debug)]
pub enum Acquire {
    /// This node holds the lock.
    Acquired(LockGuard),
    /// Another holder (its node name) has it.
    Busy {
        /// The holder's node name, as it wrote it.
        holder: String,
    },
}

/// Proof of holding the lock; see the module docs for what dropping it does.
#[derive(Debug)]
pub struct LockGuard {
    lease: KeptLease,
}

impl ClusterLock {
    /// The lock under `keys`, taken in the name of `node` with leases of `ttl`.
    pub fn new(client: EtcdClient, keys: &Keys, node: &str, ttl: Duration) -> Self {
        ClusterLock {
            client,
            key: keys.lock(),
            node: node.to_string(),
            ttl,
        }
    }

    /// Tries once to take the lock.
    pub async fn try_acquire(&self) -> Result<Acquire> {
        let lease = KeptLease::grant(&self.client, self.ttl).await?;
        let key = self.key.as_bytes().to_vec();
        let txn = self
            .client
            .txn(
                &[Compare::CreateRevision(key.clone(), 0)],
                &[TxnOp::Put {
                    key: key.clone(),
                    value: self.node.as_bytes().to_vec(),
                    lease: lease.id(),
                }],
                &[TxnOp::Get(key)],
            )
            .await;
        match txn {
            Ok(t) if t.succeeded => {
                tracing::info!(node = %self.node, lease = lease.id(), "rollout lock acquired");
                Ok(Acquire::Acquired(LockGuard { lease }))
            }
            Ok(t) => {
                let current = match t.results.first() {
                    Some(TxnOpResult::Get(kvs)) => kvs.first().cloned(),
                    _ => None,
                };
                // A retry on another endpoint after a timeout can find the
                // key our first attempt wrote: it carries our lease, so it is ours.
                if current.as_ref().is_some_and(|kv| kv.lease == lease.id()) {
                    tracing::info!(node = %self.node, lease = lease.id(), "rollout lock acquired");
                    return Ok(Acquire::Acquired(LockGuard { lease }));
                }
                // Empty if released between our compare and read: the caller
                // retries.
                let holder = current
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                    .unwrap_or_default();
                let _ = lease.revoke().await;
                Ok(Acquire::Busy { holder })
            }
            Err(e) => {
                let _ = lease.revoke().await;
                Err(e)
            }
        }
    }

    /// The node name of the current holder, if any.
    pub async fn holder(&self) -> Result<Option<String>> {
        Ok(self
            .client
            .get(self.key.as_bytes())
            .await?
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
    }
}

impl LockGuard {
    /// `true` while the lock is held; turns `false` the moment its lease is
    /// lost, and stays `false`.
    pub fn held(&self) -> watch::Receiver<bool> {
        self.lease.alive()
    }

    /// Whether the lock is believed held now.
    pub fn is_held(&self) -> bool {
        self.lease.is_alive()
    }

    /// The lease backing the lock.
    pub fn lease_id(&self) -> i64 {
        self.lease.id()
    }

    /// Releases the lock: revokes the lease, which deletes the key.
    pub async fn release(self) -> Result<()> {
        let id = self.lease.id();
        self.lease.revoke().await?;
        tracing::info!(lease = id, "rollout lock released");
        Ok(())
    }
}
