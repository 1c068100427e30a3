//! The pure heart of upkeep: the per-service supervision state machine, the
//! backoff function, probe threshold counting, and the status snapshot that
//! `/health` and `/metrics` read. Nothing here does I/O or reads the clock:
//! time comes in as an argument, so every transition is testable without
//! processes and without sleeping.

#![warn(missing_docs)]

pub mod backoff;
pub mod cadence;
pub mod control;
pub mod crashlog;
pub mod events;
pub mod exit;
pub mod machine;
pub mod probe;
pub mod snapshot;
pub mod step;
pub mod usage;

pub use exit::ExitStatus;
