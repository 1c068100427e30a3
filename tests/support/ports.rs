//! Loopback ports for processes a test starts and that bind them later
//! (etcd members, a daemon's listener, a fake apiserver).
//!
//! A port from `bind(127.0.0.1:0)` is in the kernel's ephemeral range: once
//! released, the kernel may hand it to the next call, or to any outgoing
//! connection (an etcd member dialing its peers) before our process binds it,
//! and the process then fails with "address in use" or, worse, a probe talks
//! to the wrong server. So ports come from below the ephemeral range, from a
//! counter shared by the whole test binary (never twice in one run) that
//! starts at a random point (two runs on one machine rarely meet), and each
//! is checked free by binding it.
//!
//! Shared by the test crates through `#[path]`; kept in one file.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

/// Lowest port handed out.
const BASE: u32 = 10_000;

/// A loopback port that nothing listens on and that no other call in this
/// test binary has returned.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static START: OnceLock<(u32, u32)> = OnceLock::new();
    let (start, span) = *START.get_or_init(|| {
        let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(32_768);
        let span = low.saturating_sub(BASE).max(1_000);
        let seed = std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
        (seed.wrapping_mul(2_654_435_761) % span, span)
    });
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (BASE + (start + n) % span) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {BASE}..{}", BASE + span);
}
