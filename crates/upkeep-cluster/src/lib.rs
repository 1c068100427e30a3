//! Coordination of planned restarts across masters through the cluster's own
//! etcd (issue #16): an etcd client over the JSON gateway, the rollout lock,
//! node records and halts, and the gate that decides whether this master may
//! take a planned step now.
//!
//! This crate talks to etcd and decides; it never starts, stops or signals a
//! service. The supervisor wires it in: it publishes its services' state
//! ([`NodePublisher`]), takes the lock ([`ClusterLock`]), asks the gate
//! ([`gate::decide`]) before each step, and watches [`LockGuard::held`].
//!
//! Why a JSON gateway client and not `etcd-client`: docs/architecture.md,
//! "Talking to etcd".

#![warn(missing_docs)]

pub mod base64;
pub mod client;
pub mod error;
pub mod gate;
pub mod keys;
pub mod lease;
pub mod lock;
pub mod records;
mod tls;
pub mod transport;
mod wire;

pub use client::{
    Alarm, ClientOptions, Compare, EtcdClient, KeyValue, Lease, Member, MemberHealth, Status,
    TxnOp, TxnOpResult, TxnResult,
};
pub use error::EtcdError;
pub use gate::{decide, Blocker, Decision, GateInput};
pub use keys::Keys;
pub use lease::KeptLease;
pub use lock::{Acquire, ClusterLock, LockGuard};
pub use records::{
    clear_halts, forget_master, read_view, record_halt, ClusterView, Halt, HaltRecord,
    NodePublisher, NodeRecord, Pending, Rollout, ServiceRecord,
};
