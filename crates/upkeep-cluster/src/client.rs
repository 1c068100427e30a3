//! [`EtcdClient`]: etcd's KV, Lease, Cluster and Maintenance APIs over the
//! JSON gateway (`POST /v3/...`), with endpoint failover and a per-request
//! timeout.
//!
//! Failover: a request goes to the endpoint that last worked; on a connect
//! error, a timeout, a broken exchange or an "unavailable" answer (gRPC 14,
//! e.g. a member without a leader) the next endpoint is tried, once each. Any
//! other answer from etcd is final (trying elsewhere would give the same).
//!
//! Nothing here logs request or response bodies: keys, values and TLS files
//! stay out of logs and errors.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::base64;
use crate::error::{EtcdError, Result};
use crate::transport::{self, Endpoint};
use crate::wire;

/// Default per-request timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How to reach etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// Client URLs, tried in order.
    pub endpoints: Vec<String>,
    /// CA of the etcd servers (needed for `https://`).
    pub ca_file: Option<PathBuf>,
    /// Client certificate (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// Client key.
    pub key_file: Option<PathBuf>,
    /// Bound on one request to one endpoint: connect, TLS, answer.
    pub request_timeout: Duration,
}

impl ClientOptions {
    /// Options from the config's `[cluster]` table, with the default timeout.
    pub fn from_config(c: &upkeep_spec::cluster::ClusterConfig) -> Self {
        ClientOptions {
            endpoints: c.etcd.clone(),
            ca_file: c.ca_file.clone(),
            cert_file: c.cert_file.clone(),
            key_file: c.key_file.clone(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// A key and its value, with etcd's bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Revision of the key's creation.
    pub create_revision: i64,
    /// Revision of its last change.
    pub mod_revision: i64,
    /// Lease it is attached to (0: none).
    pub lease: i64,
}

impl KeyValue {
    /// The key as text (lossy).
    pub fn key_str(&self) -> String {
        String::from_utf8_lossy(&self.key).into_owned()
    }
}

/// A granted lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// Lease id.
    pub id: i64,
    /// TTL granted by etcd (it may raise a small request to its minimum).
    pub ttl: Duration,
}

/// A comparison of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// `create_revision(key) == rev` (`0`: the key does not exist).
    CreateRevision(Vec<u8>, i64),
    /// `mod_revision(key) == rev`.
    ModRevision(Vec<u8>, i64),
    /// `value(key) == value`.
    Value(Vec<u8>, Vec<u8>),
}

/// An operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Read one key.
    Get(Vec<u8>),
    /// Read every key under a prefix.
    GetPrefix(Vec<u8>),
    /// Write a key, attached to a lease if not 0.
    Put {
        /// Key.
        key: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// Lease id, 0 for none.
        lease: i64,
    },
    /// Delete one key.
    Delete(Vec<u8>),
    /// Delete every key under a prefix.
    DeletePrefix(Vec<u8>),
}

/// What one operation of a transaction returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResult {
    /// The keys read.
    Get(Vec<KeyValue>),
    /// A put.
    Put,
    /// How many keys were deleted.
    Delete(i64),
}

/// The outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// Whether every comparison held (the success branch ran).
    pub succeeded: bool,
    /// Store revision after the transaction.
    pub revision: i64,
    /// One result per operation of the branch that ran.
    pub results: Vec<TxnOpResult>,
}

/// A member's status (`/v3/maintenance/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The endpoint that answered.
    pub endpoint: String,
    /// Id of the member that answered.
    pub member_id: u64,
    /// Id of the leader it knows (0: none).
    pub leader: u64,
    /// Raft term.
    pub raft_term: u64,
    /// Raft index.
    pub raft_index: u64,
    /// etcd version.
    pub version: String,
    /// Database size in bytes.
    pub db_size: i64,
    /// Whether the member is a learner.
    pub is_learner: bool,
    /// Errors the member reports (e.g. an alarm).
    pub errors: Vec<String>,
}

/// A member of the etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Member id.
    pub id: u64,
    /// Name (empty while an added member has not started).
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs.
    pub client_urls: Vec<String>,
    /// A learner: not voting, being caught up before promotion.
    pub is_learner: bool,
}

/// A raised alarm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    /// The member that raised it.
    pub member_id: u64,
    /// `NOSPACE`, `CORRUPT`, ...
    pub kind: String,
}

/// Whether one member serves linearizable reads right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberHealth {
    /// Member id.
    pub id: u64,
    /// Healthy: answered its status without errors, knows a leader and
    /// served a linearizable read (which needs quorum) in time.
    pub healthy: bool,
    /// Why not, when not.
    pub reason: Option<String>,
    /// Its status, when it answered.
    pub status: Option<Status>,
}

/// A client of etcd's JSON gateway. Cheap to clone (shared state).
#[derive(Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

struct Inner {
    endpoints: Vec<Endpoint>,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    current: AtomicUsize,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field(
                "endpoints",
                &self
                    .inner
                    .endpoints
                    .iter()
                    .map(|e| &e.url)
                    .collect::<Vec<_>>(),
            )
            .field("tls", &self.inner.tls.is_some())
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

/// The end of the range of keys that start with `prefix` (etcd's convention).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

fn b64(s: &[u8]) -> String {
    base64::encode(s)
}

impl EtcdClient {
    /// A client for `opts`: endpoints parsed, TLS files read now (so a bad
    /// file is reported at once, naming it). Connects lazily.
    pub fn new(opts: &ClientOptions) -> Result<Self> {
        if opts.endpoints.is_empty() {
            return Err(EtcdError::NoEndpoints);
        }
        let endpoints = opts
            .endpoints
            .iter()
            .map(|u| Endpoint::parse(u))
            .collect::<Result<Vec<_>>>()?;
        let tls = match &opts.ca_file {
            Some(ca) => Some(crate::tls::client_config(
                ca,
                opts.cert_file.as_deref(),
                opts.key_file.as_deref(),
            )?),
            None => {
                if let Some(e) = endpoints.iter().find(|e| e.tls) {
                    return Err(EtcdError::NoCa(e.url.clone()));
                }
                None
            }
        };
        Ok(EtcdClient {
            inner: Arc::new(Inner {
                endpoints,
                tls,
                timeout: opts.request_timeout,
                current: AtomicUsize::new(0),
            }),
        })
    }

    /// The per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.inner.timeout
    }

    /// The configured endpoint URLs.
    pub fn endpoints(&self) -> Vec<String> {
        self.inner.endpoints.iter().map(|e| e.url.clone()).collect()
    }

    /// POSTs to one endpoint and decodes the answer (or etcd's error).
    async fn call_at<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        ep: &Endpoint,
        path: &str,
        req: &Req,
    ) -> Result<Resp> {
        let body = serde_json::to_vec(req).map_err(|e| EtcdError::Decode {
            endpoint: ep.url.clone(),
            what: path.to_string(),
            why: format!("cannot encode the request: {e}"),
        })?;
        let answer =
            transport::post(ep, self.inner.tls.as_ref(), path, body, self.inner.timeout).await?;
        decode(ep, path, answer.status, &answer.body)
    }

    /// POSTs with failover across the endpoints.
    async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        path: &str,
        req: &Req,
    ) -> Result<Resp> {
        let n = self.inner.endpoints.len();
        let start = self.inner.current.load(Ordering::Relaxed) % n;
        let mut last = None;
        for i in 0..n {
            let idx = (start + i) % n;
            let ep = &self.inner.endpoints[idx];
            match self.call_at(ep, path, req).await {
                Ok(r) => {
                    if idx != start {
                        tracing::info!(endpoint = %ep.url, "etcd: failed over to this endpoint");
                        self.inner.current.store(idx, Ordering::Relaxed);
                    }
                    return Ok(r);
                }
                Err(e) if e.is_retryable_elsewhere() => {
                    tracing::debug!(endpoint = %ep.url, error = %e, "etcd: trying the next endpoint");
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        let last = last.unwrap_or(EtcdError::NoEndpoints);
        if n == 1 {
            Err(last)
        } else {
            Err(EtcdError::AllFailed {
                tried: n,
                last: Box::new(last),
            })
        }
    }

    // === KV ===

    /// The value of `key`, if it exists.
    pub async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let r: wire::RangeResponse = self
            .call(
                "/v3/kv/range",
                &wire::RangeRequest {
                    key: b64(key),
                    ..Default::default()
                },
            )
            .await?;
        Ok(kvs(r.kvs)?.into_iter().next())
    }

    /// Every key under `prefix`, in key order.
    pub async fn get_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>> {
        let r: wire::RangeResponse = self
            .call(
                "/v3/kv/range",
                &wire::RangeRequest {
                    key: b64(prefix),
                    range_end: b64(&prefix_end(prefix)),
                    ..Default::default()
                },
            )
            .await?;
        kvs(r.kvs)
    }

    /// Writes `key`, attached to `lease` unless it is 0. Returns the revision.
    pub async fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<i64> {
        let r: wire::PutResponse = self
            .call(
                "/v3/kv/put",
                &wire::PutRequest {
                    key: b64(key),
                    value: b64(value),
                    lease,
                },
            )
            .await?;
        Ok(r.header.revision)
    }

    /// Deletes `key`; returns how many keys were deleted (0 or 1).
    pub async fn delete(&self, key: &[u8]) -> Result<i64> {
        let r: wire::DeleteResponse = self
            .call(
                "/v3/kv/deleterange",
                &wire::DeleteRequest {
                    key: b64(key),
                    range_end: String::new(),
                },
            )
            .await?;
        Ok(r.deleted)
    }

    /// Deletes every key under `prefix`; returns how many.
    pub async fn delete_prefix(&self, prefix: &[u8]) -> Result<i64> {
        let r: wire::DeleteResponse = self
            .call(
                "/v3/kv/deleterange",
                &wire::DeleteRequest {
                    key: b64(prefix),
                    range_end: b64(&prefix_end(prefix)),
                },
            )
            .await?;
        Ok(r.deleted)
    }

    /// An atomic transaction: if every comparison holds, `success` runs, else `failure`.
    pub async fn txn(
        &self,
        compare: &[Compare],
        success: &[TxnOp],
        failure: &[TxnOp],
    ) -> Result<TxnResult> {
        let req = wire::TxnRequest {
            compare: compare.iter().map(wire_compare).collect(),
            success: success.iter().map(wire_op).collect(),
            failure: failure.iter().map(wire_op).collect(),
        };
        let r: wire::TxnResponse = self.call("/v3/kv/txn", &req).await?;
        let mut results = Vec::with_capacity(r.responses.len());
        for op in r.responses {
            results.push(if let Some(range) = op.response_range {
                TxnOpResult::Get(kvs(range.kvs)?)
            } else if let Some(d) = op.response_delete_range {
                TxnOpResult::Delete(d.deleted)
            } else {
                let _ = op.response_put;
                TxnOpResult::Put
            });
        }
        Ok(TxnResult {
            succeeded: r.succeeded,
            revision: r.header.revision,
            results,
        })
    }

    // === Lease ===

    /// Grants a lease of `ttl` (whole seconds, at least 1).
    pub async fn lease_grant(&self, ttl: Duration) -> Result<Lease> {
        let secs = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let r: wire::LeaseResponse = self
            .call("/v3/lease/grant", &wire::LeaseGrantRequest { ttl: secs })
            .await?;
        if !r.error.is_empty() || r.id == 0 {
            return Err(EtcdError::Etcd {
                endpoint: self.endpoints().join(","),
                status: 200,
                code: 0,
                message: if r.error.is_empty() {
                    "lease grant returned no id".into()
                } else {
                    r.error
                },
            });
        }
        Ok(Lease {
            id: r.id,
            ttl: Duration::from_secs(u64::try_from(r.ttl).unwrap_or(secs as u64)),
        })
    }

    /// Renews a lease once. `Some(ttl)`: renewed for `ttl`; `None`: the lease
    /// no longer exists (expired or revoked).
    ///
    /// The gateway's keepalive is a stream; one POST with one request gets
    /// one answer and the stream ends with the request body.
    pub async fn lease_keepalive(&self, id: i64) -> Result<Option<Duration>> {
        let msg: wire::KeepAliveMessage = self
            .call("/v3/lease/keepalive", &wire::LeaseIdRequest { id })
            .await?;
        if let Some(err) = msg.error {
            let message = err
                .get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("keepalive failed")
                .to_string();
            return Err(EtcdError::Etcd {
                endpoint: self.endpoints().join(","),
                status: 200,
                code: err
                    .get("grpc_code")
                    .or_else(|| err.get("code"))
                    .and_then(|c| c.as_i64())
                    .and_then(|c| i32::try_from(c).ok())
                    .unwrap_or(0),
                message,
            });
        }
        let ttl = msg.result.map(|r| r.ttl).unwrap_or(0);
        Ok((ttl > 0).then(|| Duration::from_secs(ttl as u64)))
    }

    /// Revokes a lease (deleting every key attached to it). A lease that is
    /// already gone is not an error.
    pub async fn lease_revoke(&self, id: i64) -> Result<()> {
        match self
            .call::<_, wire::LeaseResponse>("/v3/lease/revoke", &wire::LeaseIdRequest { id })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Remaining TTL of a lease; `None` if it no longer exists.
    pub async fn lease_time_to_live(&self, id: i64) -> Result<Option<Duration>> {
        let r: wire::LeaseResponse = self
            .call("/v3/lease/timetolive", &wire::LeaseIdRequest { id })
            .await?;
        Ok((r.ttl >= 0).then(|| Duration::from_secs(r.ttl as u64)))
    }

    // === Cluster and maintenance ===

    /// Status of the member behind the current endpoint.
    pub async fn status(&self) -> Result<Status> {
        let r: wire::StatusResponse = self.call("/v3/maintenance/status", &wire::Empty {}).await?;
        // `call` may have failed over; report the endpoint now current.
        let now = self.inner.current.load(Ordering::Relaxed) % self.inner.endpoints.len();
        Ok(status(&self.inner.endpoints[now].url, r))
    }

    /// Status of the member at `url` (no failover: this asks that member).
    pub async fn status_of(&self, url: &str) -> Result<Status> {
        let ep = Endpoint::parse(url)?;
        let r: wire::StatusResponse = self
            .call_at(&ep, "/v3/maintenance/status", &wire::Empty {})
            .await?;
        Ok(status(&ep.url, r))
    }

    /// The cluster's members.
    pub async fn member_list(&self) -> Result<Vec<Member>> {
        let r: wire::MemberListResponse = self
            .call("/v3/cluster/member/list", &wire::Empty {})
            .await?;
        Ok(r.members
            .into_iter()
            .map(|m| Member {
                id: m.id,
                name: m.name,
                peer_urls: m.peer_urls,
                client_urls: m.client_urls,
                is_learner: m.is_learner,
            })
            .collect())
    }

    /// Alarms raised in the cluster (none: empty).
    pub async fn alarms(&self) -> Result<Vec<Alarm>> {
        let r: wire::AlarmResponse = self
            .call(
                "/v3/maintenance/alarm",
                &wire::AlarmRequest { action: "GET" },
            )
            .await?;
        Ok(r.alarms
            .into_iter()
            .filter_map(|a| {
                let kind = match a.alarm? {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Number(n) => match n.as_i64() {
                        Some(0) => return None,
                        Some(1) => "NOSPACE".into(),
                        Some(2) => "CORRUPT".into(),
                        _ => n.to_string(),
                    },
                    other => other.to_string(),
                };
                (kind != "NONE").then_some(Alarm {
                    member_id: a.member_id,
                    kind,
                })
            })
            .collect())
    }

    /// Health of one member, asked at its own client URLs: status without
    /// errors, a known leader, and a linearizable read (which needs quorum).
    pub async fn member_health(&self, member: &Member) -> MemberHealth {
        let mut reason = String::from("no client URL");
        for url in &member.client_urls {
            let ep = match Endpoint::parse(url) {
                Ok(ep) => ep,
                Err(e) => {
                    reason = e.to_string();
                    continue;
                }
            };
            let st = match self
                .call_at::<_, wire::StatusResponse>(&ep, "/v3/maintenance/status", &wire::Empty {})
                .await
            {
                Ok(r) => status(&ep.url, r),
                Err(e) => {
                    reason = e.to_string();
                    continue;
                }
            };
            let why = if !st.errors.is_empty() {
                Some(format!("reports errors: {}", st.errors.join("; ")))
            } else if st.leader == 0 {
                Some("has no leader".to_string())
            } else {
                let read = wire::RangeRequest {
                    key: b64(b"health"),
                    ..Default::default()
                };
                match self
                    .call_at::<_, wire::RangeResponse>(&ep, "/v3/kv/range", &read)
                    .await
                {
                    Ok(_) => None,
                    Err(e) => Some(format!("linearizable read failed: {e}")),
                }
            };
            return MemberHealth {
                id: member.id,
                healthy: why.is_none(),
                reason: why,
                status: Some(st),
            };
        }
        MemberHealth {
            id: member.id,
            healthy: false,
            reason: Some(reason),
            status: None,
        }
    }

    /// Moves raft leadership to `target`. The request must reach the current
    /// leader, so this asks the members for the leader and sends it there.
    pub async fn move_leader(&self, target: u64) -> Result<()> {
        let members = self.member_list().await?;
        let leader_id = self.status().await?.leader;
        let leader = members
            .iter()
            .find(|m| m.id == leader_id)
            .ok_or_else(|| EtcdError::Etcd {
                endpoint: self.endpoints().join(","),
                status: 0,
                code: 14,
                message: format!("leader {leader_id:x} is not in the member list"),
            })?;
        if leader.id == target {
            return Ok(());
        }
        let mut last = EtcdError::BadEndpoint {
            url: leader.name.clone(),
            why: "the leader has no client URL".into(),
        };
        for url in &leader.client_urls {
            let ep = Endpoint::parse(url)?;
            match self
                .call_at::<_, serde_json::Value>(
                    &ep,
                    "/v3/maintenance/transfer-leadership",
                    &wire::MoveLeaderRequest { target_id: target },
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

fn status(endpoint: &str, r: wire::StatusResponse) -> Status {
    Status {
        endpoint: endpoint.to_string(),
        member_id: r.header.member_id,
        leader: r.leader,
        raft_term: r.raft_term,
        raft_index: r.raft_index,
        version: r.version,
        db_size: r.db_size,
        is_learner: r.is_learner,
        errors: r.errors,
    }
}

fn kvs(list: Vec<wire::WireKv>) -> Result<Vec<KeyValue>> {
    list.into_iter()
        .map(|kv| {
            let bad = |what: &str, e: base64::DecodeError| EtcdError::Decode {
                endpoint: String::new(),
                what: "key-value".into(),
                why: format!("{what} is not base64: {e}"),
            };
            Ok(KeyValue {
                key: base64::decode(&kv.key).map_err(|e| bad("key", e))?,
                value: base64::decode(&kv.value).map_err(|e| bad("value", e))?,
                create_revision: kv.create_revision,
                mod_revision: kv.mod_revision,
                lease: kv.lease,
            })
        })
        .collect()
}

fn wire_compare(c: &Compare) -> wire::WireCompare {
    let mut w = wire::WireCompare {
        key: String::new(),
        target: "",
        result: "EQUAL",
        create_revision: None,
        mod_revision: None,
        version: None,
        value: None,
    };
    match c {
        Compare::CreateRevision(k, rev) => {
            w.key = b64(k);
            w.target = "CREATE";
            w.create_revision = Some(*rev);
        }
        Compare::ModRevision(k, rev) => {
            w.key = b64(k);
            w.target = "MOD";
            w.mod_revision = Some(*rev);
        }
        Compare::Value(k, v) => {
            w.key = b64(k);
            w.target = "VALUE";
            w.value = Some(b64(v));
        }
    }
    w
}

fn wire_op(op: &TxnOp) -> wire::WireOp {
    match op {
        TxnOp::Get(k) => wire::WireOp::Range(wire::RangeRequest {
            key: b64(k),
            ..Default::default()
        }),
        TxnOp::GetPrefix(p) => wire::WireOp::Range(wire::RangeRequest {
            key: b64(p),
            range_end: b64(&prefix_end(p)),
            ..Default::default()
        }),
        TxnOp::Put { key, value, lease } => wire::WireOp::Put(wire::PutRequest {
            key: b64(key),
            value: b64(value),
            lease: *lease,
        }),
        TxnOp::Delete(k) => wire::WireOp::Delete(wire::DeleteRequest {
            key: b64(k),
            range_end: String::new(),
        }),
        TxnOp::DeletePrefix(p) => wire::WireOp::Delete(wire::DeleteRequest {
            key: b64(p),
            range_end: b64(&prefix_end(p)),
        }),
    }
}

/// Decodes a gateway answer: 2xx is `Resp` (for a stream, its first
/// message), anything else is etcd's error body.
fn decode<Resp: DeserializeOwned>(
    ep: &Endpoint,
    path: &str,
    status: u16,
    body: &[u8],
) -> Result<Resp> {
    let bad = |why: String| EtcdError::Decode {
        endpoint: ep.url.clone(),
        what: path.to_string(),
        why,
    };
    if !(200..300).contains(&status) {
        let err: wire::ErrorBody = serde_json::Deserializer::from_slice(body)
            .into_iter()
            .next()
            .and_then(|r| r.ok())
            .unwrap_or(wire::ErrorBody {
                error: String::new(),
                message: String::new(),
                code: 0,
            });
        let message = if !err.message.is_empty() {
            err.message
        } else if !err.error.is_empty() {
            err.error
        } else {
            format!("HTTP {status} without an etcd error")
        };
        // The gateway maps "unavailable" to 503; treat it as gRPC 14 even if
        // the body was lost.
        let code = if err.code == 0 && status == 503 {
            14
        } else {
            err.code
        };
        return Err(EtcdError::Etcd {
            endpoint: ep.url.clone(),
            status,
            code,
            message,
        });
    }
    // A streaming endpoint sends one JSON object per message; take the first.
    match serde_json::Deserializer::from_slice(body)
        .into_iter()
        .next()
    {
        Some(Ok(v)) => Ok(v),
        Some(Err(e)) => Err(bad(format!("invalid JSON: {e}"))),
        None => Err(bad("empty answer".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep() -> Endpoint {
        Endpoint::parse("http://127.0.0.1:2379").unwrap()
    }

    /// Answers as etcd 3.4's gateway sends them (captured), zero fields left out.
    #[test]
    fn decodes_gateway_answers() {
        let st: wire::StatusResponse = decode(&ep(), "/s", 200, br#"{"header":{"cluster_id":"324952591200643719","member_id":"3319814642761637952","revision":"2","raft_term":"2"},"version":"3.4.23","dbSize":"20480","leader":"3319814642761637952","raftIndex":"6","raftTerm":"2","raftAppliedIndex":"6","dbSizeInUse":"16384"}"#).unwrap();
        let st = status("e", st);
        assert_eq!(st.member_id, 3319814642761637952);
        assert_eq!(
            (st.leader, st.raft_term, st.raft_index),
            (3319814642761637952, 2, 6)
        );
        assert!(!st.is_learner && st.errors.is_empty());

        let ml: wire::MemberListResponse = decode(&ep(), "/m", 200, br#"{"members":[{"ID":"18446744073709551615","name":"m1","peerURLs":["http://a:2380"],"clientURLs":["http://a:2379"]},{"ID":"7","peerURLs":["http://b:2380"],"isLearner":true}]}"#).unwrap();
        assert_eq!(ml.members[0].id, u64::MAX, "ids use all 64 bits");
        assert!(!ml.members[0].is_learner && ml.members[1].is_learner);
        assert!(ml.members[1].client_urls.is_empty() && ml.members[1].name.is_empty());

        // The keepalive stream: first message; a lease that is gone has no TTL.
        let ka: wire::KeepAliveMessage = decode(
            &ep(),
            "/k",
            200,
            b"{\"result\":{\"ID\":\"5\"}}\n{\"result\":{}}\n",
        )
        .unwrap();
        assert_eq!(ka.result.unwrap().ttl, 0);

        let t: wire::TxnResponse = decode(&ep(), "/t", 200, br#"{"header":{"revision":"2"},"responses":[{"response_range":{"header":{"revision":"2"},"kvs":[{"key":"Zm9v","create_revision":"2","mod_revision":"2","version":"1","value":"YmFy","lease":"9"}],"count":"1"}}]}"#).unwrap();
        assert!(!t.succeeded, "succeeded: false is left out");
        let kv = &kvs(t
            .responses
            .into_iter()
            .next()
            .unwrap()
            .response_range
            .unwrap()
            .kvs)
        .unwrap()[0];
        assert_eq!(
            (kv.key.as_slice(), kv.value.as_slice(), kv.lease),
            (&b"foo"[..], &b"bar"[..], 9)
        );
    }

    #[test]
    fn decodes_etcd_errors_with_the_endpoint() {
        let err = decode::<wire::PutResponse>(&ep(), "/v3/kv/put", 404, br#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#).unwrap_err();
        assert_eq!(err.to_string(), "etcd http://127.0.0.1:2379: etcdserver: requested lease not found (HTTP 404, gRPC code 5)");
        assert!(err.is_not_found() && !err.is_retryable_elsewhere());
        let err = decode::<wire::PutResponse>(&ep(), "/v3/kv/put", 503, b"").unwrap_err();
        assert!(err.is_retryable_elsewhere(), "{err}");
        let err = decode::<wire::PutResponse>(&ep(), "/v3/kv/put", 200, b"").unwrap_err();
        assert!(err.to_string().contains("empty answer"), "{err}");
    }

    #[test]
    fn prefix_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/upkeep/nodes/"), b"/upkeep/nodes0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
