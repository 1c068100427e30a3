//! `set_thread_latency`: the HTTP thread's nice value and short scheduler
//! slice, read back from the kernel for the thread and for a thread it
//! starts (the usage reads run on those).
//!
//! A binary of its own: it changes the scheduling of the thread it runs on.

mod proc_common;

use proc_common::require_root;
use std::time::Duration;

/// (nice, slice in ns if the kernel shows it) of the calling thread.
fn own_nice_and_slice() -> (i64, Option<u64>) {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 1..];
    // Fields from the state (3rd): nice is the 19th field overall.
    let nice = rest.split_whitespace().nth(16).unwrap().parse().unwrap();
    let slice = std::fs::read_to_string("/proc/thread-self/sched")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("se.slice"))?
                .split(':')
                .nth(1)?
                .trim()
                .parse()
                .ok()
        });
    (nice, slice)
}

/// Whether the kernel takes a fair-class thread's slice from
/// `sched_attr.sched_runtime` (Linux 6.12 and later).
fn kernel_has_custom_slices() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let (major, minor) = (v.next().unwrap(), v.next().unwrap_or(0));
    (major, minor) >= (6, 12)
}

#[test]
fn a_thread_gets_its_nice_value_and_slice_and_passes_them_on() {
    require_root();
    let (here, inherited) = std::thread::spawn(|| {
        upkeep_runtime::spawn::set_thread_latency(-5, Duration::from_micros(500));
        let here = own_nice_and_slice();
        let inherited = std::thread::spawn(own_nice_and_slice).join().unwrap();
        (here, inherited)
    })
    .join()
    .unwrap();
    assert_eq!(here.0, -5, "nice of the thread");
    assert_eq!(inherited.0, -5, "nice of a thread it starts");
    if kernel_has_custom_slices() {
        assert_eq!(here.1, Some(500_000), "slice of the thread (ns)");
        assert_eq!(
            inherited.1,
            Some(500_000),
            "slice of a thread it starts (ns)"
        );
    } else {
        eprintln!("kernel before 6.12: no custom slice to check, only the nice value");
    }
    // The thread that ran the test is untouched.
    assert_eq!(own_nice_and_slice().0, 0);
}
