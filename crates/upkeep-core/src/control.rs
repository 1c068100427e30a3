//! Requests over the control socket (`upkeep restart|stop|start NAME`).

use serde::{Deserialize, Serialize};

/// One control request, sent as a JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", content = "service", rename_all = "lowercase")]
pub enum ControlRequest {
    /// Stop (full grace) and start again at once.
    Restart(String),
    /// Stop and keep stopped (also across manifest re-lists) until started.
    Stop(String),
    /// Start a stopped service.
    Start(String),
    /// Apply the service's pending planned change now, without the
    /// cluster's rollout lock (`upkeep rollout apply --without-lock`, for
    /// disaster recovery).
    Apply(String),
}

/// The answer, sent as a JSON line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlReply {
    /// Whether the request was accepted.
    pub ok: bool,
    /// What happened, or why not.
    pub message: String,
}
