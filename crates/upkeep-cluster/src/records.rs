//! What each master publishes and what every master reads: node records
//! (with the node's own lease, so a master whose upkeep is gone counts as
//! down once its TTL runs out), the known-masters list, the lock holder and
//! halts, read together in one transaction (one consistent revision).
//!
//! Records carry service names, states and spec hashes only: never argv,
//! env or anything else a control-plane component is started with.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::client::{EtcdClient, TxnOp, TxnOpResult};
use crate::error::{EtcdError, Result};
use crate::keys::Keys;
use crate::lease::KeptLease;

/// Default TTL of a node record's lease.
pub const DEFAULT_RECORD_TTL: Duration = Duration::from_secs(10);

/// Whether a service takes part in serial rollouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Rollout {
    /// One master at a time, through the lock (the default).
    #[default]
    Serial,
    /// Changes apply at once, without the lock.
    Immediate,
}

/// One service's state, as published by its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// Service name.
    pub name: String,
    /// Serial or immediate.
    #[serde(default)]
    pub rollout: Rollout,
    /// Ready now.
    pub ready: bool,
    /// Hash of the spec running now.
    pub spec_hash: String,
    /// Hash of a change waiting to be applied, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_hash: Option<String>,
    /// A change of this service was halted (rolled back).
    #[serde(default)]
    pub halted: bool,
    /// Why it waits or was halted, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A node's published state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Node name.
    pub node: String,
    /// Its services.
    pub services: Vec<ServiceRecord>,
}

/// The stored value of a halt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaltRecord {
    /// The node that tried the change and rolled it back.
    pub node: String,
    /// Why, e.g. "not ready within 5m".
    pub reason: String,
}

/// A halted change: `service` at `hash` must not be applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Halt {
    /// Service name.
    pub service: String,
    /// Spec hash of the halted change.
    pub hash: String,
    /// The node that tried it.
    pub node: String,
    /// Why it was halted.
    pub reason: String,
}

/// A change waiting somewhere in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// The node it waits on.
    pub node: String,
    /// Service name.
    pub service: String,
    /// Spec hash it would move to.
    pub hash: String,
}

/// Everything upkeep keeps in etcd, read at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Store revision of the read.
    pub revision: i64,
    /// Every master that ever published (a master without a record is down).
    pub masters: BTreeSet<String>,
    /// Live node records, by node name.
    pub nodes: BTreeMap<String, NodeRecord>,
    /// Records that exist but do not parse: node name → why.
    pub unreadable: BTreeMap<String, String>,
    /// The lock holder's node name.
    pub lock_holder: Option<String>,
    /// Halted changes.
    pub halts: Vec<Halt>,
}

impl ClusterView {
    /// Changes waiting on any node.
    pub fn pending(&self) -> Vec<Pending> {
        self.nodes
            .values()
            .flat_map(|n| {
                n.services.iter().filter_map(|s| {
                    s.pending_hash.as_ref().map(|h| Pending {
                        node: n.node.clone(),
                        service: s.name.clone(),
                        hash: h.clone(),
                    })
                })
            })
            .collect()
    }

    /// The halt of `service` at `hash`, if any.
    pub fn halt_for(&self, service: &str, hash: &str) -> Option<&Halt> {
        self.halts
            .iter()
            .find(|h| h.service == service && h.hash == hash)
    }
}

/// Reads the whole cluster view in one transaction.
pub async fn read_view(client: &EtcdClient, keys: &Keys) -> Result<ClusterView> {
    let t = client
        .txn(
            &[],
            &[
                TxnOp::GetPrefix(keys.nodes().into_bytes()),
                TxnOp::GetPrefix(keys.masters().into_bytes()),
                TxnOp::Get(keys.lock().into_bytes()),
                TxnOp::GetPrefix(keys.halts().into_bytes()),
            ],
            &[],
        )
        .await?;
    let mut lists = t.results.into_iter().map(|r| match r {
        TxnOpResult::Get(kvs) => kvs,
        _ => Vec::new(),
    });
    let (nodes, masters, lock, halts) = (
        lists.next().unwrap_or_default(),
        lists.next().unwrap_or_default(),
        lists.next().unwrap_or_default(),
        lists.next().unwrap_or_default(),
    );
    let mut view = ClusterView {
        revision: t.revision,
        ..Default::default()
    };
    for kv in masters {
        if let Some(name) = Keys::name_under(&kv.key_str(), &keys.masters()) {
            view.masters.insert(name);
        }
    }
    for kv in nodes {
        let Some(name) = Keys::name_under(&kv.key_str(), &keys.nodes()) else {
            continue;
        };
        view.masters.insert(name.clone());
        match serde_json::from_slice::<NodeRecord>(&kv.value) {
            Ok(r) if r.node == name => {
                view.nodes.insert(name, r);
            }
            Ok(r) => {
                view.unreadable.insert(
                    name,
                    format!("the record names another node ({:?})", r.node),
                );
            }
            Err(e) => {
                view.unreadable.insert(name, format!("invalid record: {e}"));
            }
        }
    }
    view.lock_holder = lock
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned());
    for kv in halts {
        let key = kv.key_str();
        let Some((service, hash)) = keys.parse_halt(&key) else {
            continue;
        };
        let (node, reason) = match serde_json::from_slice::<HaltRecord>(&kv.value) {
            Ok(h) => (h.node, h.reason),
            Err(e) => (String::from("?"), format!("unreadable halt record: {e}")),
        };
        view.halts.push(Halt {
            service,
            hash,
            node,
            reason,
        });
    }
    Ok(view)
}

/// Records a halt of `service` at `hash` (no lease: it outlives the node's
/// upkeep until a new change or an operator clears it).
pub async fn record_halt(client: &EtcdClient, keys: &Keys, halt: &Halt) -> Result<()> {
    let value = serde_json::to_vec(&HaltRecord {
        node: halt.node.clone(),
        reason: halt.reason.clone(),
    })
    .map_err(|e| encode_error("halt record", e))?;
    client
        .put(keys.halt(&halt.service, &halt.hash).as_bytes(), &value, 0)
        .await?;
    Ok(())
}

/// Clears every halt of `service` (a new change, or `upkeep rollout resume`).
/// Returns how many were cleared.
pub async fn clear_halts(client: &EtcdClient, keys: &Keys, service: &str) -> Result<i64> {
    client
        .delete_prefix(keys.halts_of(service).as_bytes())
        .await
}

fn encode_error(what: &str, e: serde_json::Error) -> EtcdError {
    EtcdError::Decode {
        endpoint: String::new(),
        what: what.to_string(),
        why: format!("cannot encode: {e}"),
    }
}

/// Publishes this node's record under its own lease, renewed in the
/// background. If the lease is lost, the next publish grants a new one (the
/// record was gone meanwhile: others counted this master as down).
#[derive(Debug)]
pub struct NodePublisher {
    client: EtcdClient,
    keys: Keys,
    node: String,
    ttl: Duration,
    lease: Option<KeptLease>,
}

impl NodePublisher {
    /// A publisher for `node`, with leases of `ttl`. Nothing is written yet.
    pub fn new(client: EtcdClient, keys: Keys, node: &str, ttl: Duration) -> Self {
        NodePublisher {
            client,
            keys,
            node: node.to_string(),
            ttl,
            lease: None,
        }
    }

    /// Writes `record` (its `node` must be this publisher's node) and makes
    /// sure this node is in the known-masters list.
    pub async fn publish(&mut self, record: &NodeRecord) -> Result<()> {
        if record.node != self.node {
            return Err(EtcdError::Decode {
                endpoint: String::new(),
                what: "node record".into(),
                why: format!("record of {:?} published as {:?}", record.node, self.node),
            });
        }
        let lease_id = match &self.lease {
            Some(l) if l.is_alive() => l.id(),
            _ => {
                let l = KeptLease::grant(&self.client, self.ttl).await?;
                let id = l.id();
                self.lease = Some(l);
                id
            }
        };
        let value = serde_json::to_vec(record).map_err(|e| encode_error("node record", e))?;
        // The known-masters entry has no lease: a master whose record
        // expired stays known (and counts as down).
        self.client
            .txn(
                &[],
                &[
                    TxnOp::Put {
                        key: self.keys.node(&self.node).into_bytes(),
                        value,
                        lease: lease_id,
                    },
                    TxnOp::Put {
                        key: self.keys.master(&self.node).into_bytes(),
                        value: self.node.as_bytes().to_vec(),
                        lease: 0,
                    },
                ],
                &[],
            )
            .await?;
        Ok(())
    }

    /// `true` while the record's lease is believed alive (false before the
    /// first publish).
    pub fn alive(&self) -> watch::Receiver<bool> {
        match &self.lease {
            Some(l) => l.alive(),
            None => watch::channel(false).1,
        }
    }

    /// Removes the record now (revokes its lease), e.g. on a clean shutdown.
    pub async fn withdraw(mut self) -> Result<()> {
        match self.lease.take() {
            Some(l) => l.revoke().await,
            None => Ok(()),
        }
    }
}

/// Forgets a master for good (decommissioned): its record and its entry in
/// the known-masters list. An operator action, never automatic.
pub async fn forget_master(client: &EtcdClient, keys: &Keys, node: &str) -> Result<()> {
    client
        .txn(
            &[],
            &[
                TxnOp::Delete(keys.node(node).into_bytes()),
                TxnOp::Delete(keys.master(node).into_bytes()),
            ],
            &[],
        )
        .await?;
    Ok(())
}
