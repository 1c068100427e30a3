//! Turns upkeep's TOML config and the static Pod manifests of a directory into
//! fully resolved [`ServiceSpec`]s: argv after `$(VAR)` expansion, env, working
//! directory, user, probes with kubelet defaults, restart policy, backoff and
//! stop settings.
//!
//! This crate is pure: it reads files and returns values. It starts no process
//! and needs no async runtime, so `upkeep check` and `upkeep render` use exactly
//! the code the daemon uses.

#![warn(missing_docs)]

pub mod cluster;
pub mod config;
pub mod diag;
pub mod duration;
pub mod expand;
pub mod hash;
pub mod manifest;
pub mod names;
mod node;
pub mod quantity;
pub mod types;

pub use diag::{Diagnostic, Severity};
pub use types::*;
