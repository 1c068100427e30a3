//! The JSON shapes of etcd's gRPC gateway (`/v3/...`), as etcd 3.4 and later
//! serve them: 64-bit integers are JSON strings, `bytes` are base64, and
//! fields at their zero value are left out (hence `#[serde(default)]`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// (De)serializes an `i64` as the gateway does: a string (a number is accepted).
pub(crate) mod int {
    use super::*;

    pub fn serialize<S: Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            S(String),
            N(i64),
        }
        match Either::deserialize(d)? {
            Either::S(s) => s.parse().map_err(serde::de::Error::custom),
            Either::N(n) => Ok(n),
        }
    }
}

/// Like [`int`], for `u64` (member ids use the whole range).
pub(crate) mod uint {
    use super::*;

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            S(String),
            N(u64),
        }
        match Either::deserialize(d)? {
            Either::S(s) => s.parse().map_err(serde::de::Error::custom),
            Either::N(n) => Ok(n),
        }
    }
}

/// An empty request body: `{}`.
#[derive(Debug, Serialize)]
pub(crate) struct Empty {}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct Header {
    #[serde(default, with = "uint")]
    pub member_id: u64,
    #[serde(default, with = "int")]
    pub revision: i64,
}

#[derive(Debug, Serialize, Default)]
pub(crate) struct RangeRequest {
    pub key: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub range_end: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub serializable: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireKv {
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub value: String,
    #[serde(default, with = "int")]
    pub create_revision: i64,
    #[serde(default, with = "int")]
    pub mod_revision: i64,
    #[serde(default, with = "int")]
    pub lease: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct RangeResponse {
    #[serde(default)]
    pub kvs: Vec<WireKv>,
}

#[derive(Debug, Serialize)]
pub(crate) struct PutRequest {
    pub key: String,
    pub value: String,
    #[serde(with = "int", skip_serializing_if = "is_zero")]
    pub lease: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PutResponse {
    #[serde(default)]
    pub header: Header,
}

#[derive(Debug, Serialize)]
pub(crate) struct DeleteRequest {
    pub key: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub range_end: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct DeleteResponse {
    #[serde(default, with = "int")]
    pub deleted: i64,
}

#[derive(Debug, Serialize)]
pub(crate) struct WireCompare {
    pub key: String,
    pub target: &'static str,
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_int")]
    pub create_revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_int")]
    pub mod_revision: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_int")]
    pub version: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

pub(crate) mod opt_int {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_str(&v.to_string()),
            None => s.serialize_none(),
        }
    }
}

#[derive(Debug, Serialize)]
pub(crate) enum WireOp {
    #[serde(rename = "request_range")]
    Range(RangeRequest),
    #[serde(rename = "request_put")]
    Put(PutRequest),
    #[serde(rename = "request_delete_range")]
    Delete(DeleteRequest),
}

#[derive(Debug, Serialize)]
pub(crate) struct TxnRequest {
    pub compare: Vec<WireCompare>,
    pub success: Vec<WireOp>,
    pub failure: Vec<WireOp>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireOpResponse {
    pub response_range: Option<RangeResponse>,
    pub response_put: Option<serde_json::Value>,
    pub response_delete_range: Option<DeleteResponse>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct TxnResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub succeeded: bool,
    #[serde(default)]
    pub responses: Vec<WireOpResponse>,
}

#[derive(Debug, Serialize)]
pub(crate) struct LeaseGrantRequest {
    #[serde(rename = "TTL", with = "int")]
    pub ttl: i64,
}

#[derive(Debug, Serialize)]
pub(crate) struct LeaseIdRequest {
    #[serde(rename = "ID", with = "int")]
    pub id: i64,
}

#[derive(Debug, Deserialize)]
pub(crate) struct LeaseResponse {
    #[serde(rename = "ID", default, with = "int")]
    pub id: i64,
    #[serde(rename = "TTL", default, with = "int")]
    pub ttl: i64,
    #[serde(default)]
    pub error: String,
}

/// One message of the keepalive stream: `{"result": ...}` or `{"error": ...}`.
#[derive(Debug, Deserialize)]
pub(crate) struct KeepAliveMessage {
    pub result: Option<LeaseResponse>,
    pub error: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct StatusResponse {
    #[serde(default)]
    pub header: Header,
    #[serde(default)]
    pub version: String,
    #[serde(default, with = "uint")]
    pub leader: u64,
    #[serde(rename = "raftTerm", default, with = "uint")]
    pub raft_term: u64,
    #[serde(rename = "raftIndex", default, with = "uint")]
    pub raft_index: u64,
    #[serde(rename = "dbSize", default, with = "int")]
    pub db_size: i64,
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
    #[serde(default)]
    pub errors: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireMember {
    #[serde(rename = "ID", default, with = "uint")]
    pub id: u64,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    pub client_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    pub is_learner: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct MemberListResponse {
    #[serde(default)]
    pub members: Vec<WireMember>,
}

#[derive(Debug, Serialize)]
pub(crate) struct AlarmRequest {
    pub action: &'static str,
}

#[derive(Debug, Deserialize)]
pub(crate) struct WireAlarm {
    #[serde(rename = "memberID", default, with = "uint")]
    pub member_id: u64,
    #[serde(default)]
    pub alarm: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct AlarmResponse {
    #[serde(default)]
    pub alarms: Vec<WireAlarm>,
}

#[derive(Debug, Serialize)]
pub(crate) struct MoveLeaderRequest {
    #[serde(rename = "targetID", with = "uint")]
    pub target_id: u64,
}

/// The error body of a failed gateway call.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorBody {
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub code: i32,
}
