//! Signalling the processes of a service without ever hitting a stranger.
//!
//! pids are reused within seconds (pid_max is 32768 on many hosts), so no
//! signal here goes to a bare pid or process group id read earlier. Each
//! member is opened as a pidfd first, then checked to still be a member (its
//! cgroup, or its process group), and only then signalled through the pidfd:
//! if the pid was reused before the pidfd was opened, the check fails; if the
//! process dies after, the pidfd refers to the dead process and the signal
//! is a no-op (ESRCH). A member is signalled at most once per call, even
//! when it shows up in several passes.

use std::collections::HashSet;
use std::fs;

use crate::reaper::{open_pidfd, pidfd_signal, process_stat};

/// How many times the member list is re-read to catch processes forked while
/// the signals went out.
const PASSES: usize = 4;

/// Sends `sig` once to every current member: `list` gives candidate pids,
/// `is_member` confirms one after its pidfd is open. `done` holds the
/// (pid, start time) of processes already signalled, so repeated calls for
/// the same stop never signal a process twice. Returns how many processes
/// were signalled by this call.
pub fn signal_members(
    list: impl Fn() -> Vec<u32>,
    is_member: impl Fn(u32) -> bool,
    sig: i32,
    done: &mut Vec<(u32, u64)>,
) -> usize {
    let mut sent = 0;
    let mut seen: HashSet<(u32, u64)> = done.iter().copied().collect();
    for _ in 0..PASSES {
        let mut new = 0;
        for pid in list() {
            let Ok(fd) = open_pidfd(pid) else { continue };
            // Identity after the pidfd is open: the pidfd pins what the pid
            // now means.
            let Ok(st) = process_stat(pid) else { continue };
            if st.state == 'Z' || !is_member(pid) {
                continue;
            }
            let key = (pid, st.start_time);
            if !seen.insert(key) {
                continue;
            }
            done.push(key);
            new += 1;
            if pidfd_signal(&fd, sig).unwrap_or(false) {
                sent += 1;
            }
        }
        if new == 0 {
            break;
        }
    }
    sent
}

/// The processes of process group `pgid` other than its (already reaped)
/// leader, for services run without cgroups. Reads `/proc` (the daemon's
/// fallback when the kernel offers no cgroup to ask).
pub fn pgroup_members(pgid: u32) -> Vec<u32> {
    let Ok(rd) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|&pid| pid != pgid && process_stat(pid).is_ok_and(|st| st.pgrp == pgid))
        .collect()
}

/// True if `pid` is (still) in process group `pgid` and is not its leader.
pub fn in_pgroup(pid: u32, pgid: u32) -> bool {
    pid != pgid && process_stat(pid).is_ok_and(|st| st.pgrp == pgid && st.state != 'Z')
}
