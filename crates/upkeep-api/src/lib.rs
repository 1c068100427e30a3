//! upkeep's interfaces to people and tools: `/health`, `/health/NAME`, `/livez`
//! and `/metrics` on the HTTP listener (read-only, from the snapshot), and the
//! root-only unix control socket (`restart|stop|start NAME`).

#![warn(missing_docs)]
