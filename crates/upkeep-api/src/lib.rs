//! upkeep's interfaces to people and tools: `/health`, `/health/NAME`, `/livez`
//! and `/metrics` on the HTTP listener (read-only, from the snapshot), and the
//! root-only unix control socket (`restart|stop|start NAME`).
//!
//! Layout:
//! - [`http`]: the hyper server and its routes ([`serve_http`]).
//! - [`health`]: the `/health` JSON, an explicit allow-list view of the snapshot.
//! - [`metrics`]: the `/metrics` body (snapshot, `process_*`), with
//!   [`usage_metrics`] (the services' `container_*` usage) and [`expo`] (the
//!   text exposition format they are written in).
//! - [`control`]: the control socket server ([`serve_control`]) and client.
//! - [`client`]: `upkeep status`: the `/health` client and the table.
//!
//! This crate never reaches into the executor: HTTP handlers read
//! [`upkeep_core::snapshot::Shared`] under its read lock just long enough to
//! serialize, and control requests are handed over a channel.
//! No response ever carries argv, env or other spec content: the snapshot has
//! none, and the `/health` view names every field it serializes.

#![warn(missing_docs)]

mod accept;
pub mod client;
pub mod control;
pub mod expo;
pub mod health;
pub mod http;
pub mod metrics;
pub mod top;
pub mod usage_metrics;

pub use client::{fetch_health, format_table, ClientError};
pub use control::{
    control_request, serve_control, serve_control_with, ControlConfig, ControlSender, ServeError,
};
pub use http::{serve_http, HttpConfig};
