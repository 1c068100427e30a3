//! upkeep's open-files limit (`RLIMIT_NOFILE`), and the one its children get.
//!
//! At start-up the daemon raises its soft limit to the hard limit
//! ([`raise_soft_limit`]), as systemd.exec(5) recommends for programs that
//! need many descriptors and do not use `select(2)`: upkeep keeps
//! descriptors per service (log files, pidfds, the usage files of
//! [`crate::usage`]), and a spawn must never fail for want of one.
//!
//! The soft limit is inherited across `exec`, and many programs still use
//! `select(2)` (which cannot handle descriptors of 1024 and above), so every
//! process upkeep starts gets the original soft limit back in its child
//! routine, between fork and exec ([`crate::spawn`]: services on both spawn
//! paths, and every command spawned through the
//! [`Reaper`](crate::reaper::Reaper): exec probes, `preStop` hooks). A
//! service sees exactly the limit it would have had without the raise. The
//! hard limit is never changed.

use std::sync::atomic::{AtomicU64, Ordering};

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// [`ORIGINAL_SOFT`] before a raise (the value cannot be a real soft
/// limit: the kernel caps `RLIMIT_NOFILE` at `fs.nr_open`).
const NOT_RAISED: u64 = u64::MAX;

/// The soft limit upkeep had before [`raise_soft_limit`] raised it; set once.
static ORIGINAL_SOFT: AtomicU64 = AtomicU64::new(NOT_RAISED);

/// What [`raise_soft_limit`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Raise {
    /// The soft limit went from `from` to `to` (the hard limit).
    Raised {
        /// The original soft limit, which children get back.
        from: u64,
        /// The new soft limit (the hard limit).
        to: u64,
    },
    /// The soft limit was already the hard limit (or unlimited): nothing
    /// to do, and nothing for children to restore.
    AlreadyAtHard(Option<u64>),
    /// The limit could not be read or set: upkeep keeps the limit it has
    /// (and its usage reader keeps fewer descriptors, see
    /// [`crate::usage`]).
    Failed(String),
}

/// Raises upkeep's soft `RLIMIT_NOFILE` to its hard limit and remembers the
/// original soft limit for [`restore_target`]. Logs what it did once.
/// Meant to be called once, at daemon start-up, before anything is
/// spawned; later calls find the soft limit at the hard limit and change
/// nothing (the first call's original is kept).
pub fn raise_soft_limit() -> Raise {
    let r = raise();
    match &r {
        Raise::Raised { from, to } => tracing::info!(
            "open-files limit (RLIMIT_NOFILE): soft limit raised from {from} to the hard limit {to}; services, probes and hooks get {from} back"
        ),
        Raise::AlreadyAtHard(Some(n)) => tracing::debug!(
            "open-files limit (RLIMIT_NOFILE): soft limit already at the hard limit {n}"
        ),
        Raise::AlreadyAtHard(None) => {
            tracing::debug!("open-files limit (RLIMIT_NOFILE): unlimited")
        }
        Raise::Failed(e) => tracing::warn!(
            "open-files limit (RLIMIT_NOFILE): cannot raise the soft limit to the hard limit ({e}); keeping {}",
            soft_limit().map_or("it".to_string(), |n| n.to_string())
        ),
    }
    r
}

fn raise() -> Raise {
    let lim = getrlimit(Resource::Nofile);
    let (Some(soft), hard) = (lim.current, lim.maximum) else {
        return Raise::AlreadyAtHard(None);
    };
    // An unlimited hard limit cannot happen for RLIMIT_NOFILE (capped at
    // fs.nr_open); should it, raise to nr_open's default rather than fail.
    let to = hard.unwrap_or(1 << 20);
    if soft >= to {
        return Raise::AlreadyAtHard(Some(soft));
    }
    let new = Rlimit {
        current: Some(to),
        maximum: hard,
    };
    if let Err(e) = setrlimit(Resource::Nofile, new) {
        return Raise::Failed(format!("setrlimit({soft} -> {to}): {e}"));
    }
    // Only the first raise records the original.
    let _ = ORIGINAL_SOFT.compare_exchange(NOT_RAISED, soft, Ordering::SeqCst, Ordering::SeqCst);
    Raise::Raised { from: soft, to }
}

/// The soft limit every process upkeep starts must get back: `Some` once
/// [`raise_soft_limit`] raised it, `None` when upkeep runs with the limit it
/// was given (then children simply inherit it).
pub fn restore_target() -> Option<u64> {
    match ORIGINAL_SOFT.load(Ordering::SeqCst) {
        NOT_RAISED => None,
        n => Some(n),
    }
}

/// upkeep's soft open-files limit now (`None`: unlimited).
pub fn soft_limit() -> Option<u64> {
    getrlimit(Resource::Nofile).current
}
