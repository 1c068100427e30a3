//! Reading /proc: CPU time, context switches, RSS/PSS, process discovery, and
//! the sweep that kills every process a scenario left behind.

use std::path::Path;

/// Fields of `/proc/PID/stat` the bench uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Parent pid.
    pub ppid: u32,
    /// utime + stime, in clock ticks (all threads).
    pub cpu_ticks: u64,
}

/// Parses `/proc/PID/stat` text (the command name may contain spaces and ')').
pub fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // f[0] = state (field 3), f[1] = ppid (4), f[11] = utime (14), f[12] = stime (15).
    Some(Stat {
        ppid: f.get(1)?.parse().ok()?,
        cpu_ticks: f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?,
    })
}

/// voluntary + nonvoluntary context switches from `/proc/PID/task/TID/status` text.
pub fn parse_ctxsw(status: &str) -> Option<u64> {
    let field = |key: &str| -> Option<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(field("voluntary_ctxt_switches:")? + field("nonvoluntary_ctxt_switches:")?)
}

/// `(Rss, Pss)` in KiB from `/proc/PID/smaps_rollup` text.
pub fn parse_smaps_rollup(text: &str) -> Option<(u64, u64)> {
    let field = |key: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_ascii_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    Some((field("Rss:")?, field("Pss:")?))
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), 100 if unknown.
pub fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(v).ok().filter(|&v| v > 0).unwrap_or(100)
}

/// `/proc/PID/stat` of a live process.
pub fn stat(pid: u32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Context switches summed over every thread of `pid`.
pub fn ctxsw(pid: u32) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = 0;
    for t in tasks.flatten() {
        if let Some(n) = std::fs::read_to_string(t.path().join("status"))
            .ok()
            .as_deref()
            .and_then(parse_ctxsw)
        {
            total += n;
        }
    }
    Some(total)
}

/// `(Rss, Pss)` KiB of `pid`.
pub fn smaps_rollup(pid: u32) -> Option<(u64, u64)> {
    parse_smaps_rollup(&std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?)
}

/// Every pid in /proc.
pub fn all_pids() -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .collect()
}

/// The direct children of `ppid`.
pub fn children(ppid: u32) -> Vec<u32> {
    all_pids()
        .into_iter()
        .filter(|&p| stat(p).is_some_and(|s| s.ppid == ppid))
        .collect()
}

/// The NUL-separated command line of `pid`, joined with spaces.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let parts: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .collect();
    Some(parts.join(" "))
}

/// Processes (other than this one) whose command line mentions `dir` or whose
/// working directory is inside it: everything a scenario in `dir` started.
pub fn pids_under(dir: &Path) -> Vec<u32> {
    let me = std::process::id();
    let needle = dir.to_string_lossy().into_owned();
    all_pids()
        .into_iter()
        .filter(|&p| p != me)
        .filter(|&p| {
            cmdline(p).is_some_and(|c| c.contains(&needle))
                || std::fs::read_link(format!("/proc/{p}/cwd")).is_ok_and(|c| c.starts_with(dir))
        })
        .collect()
}

/// The first live process whose command line contains `needle` and whose
/// argv[0] ends with `argv0_suffix`.
pub fn find_process(needle: &str, argv0_suffix: &str) -> Option<u32> {
    let me = std::process::id();
    all_pids().into_iter().filter(|&p| p != me).find(|&p| {
        let Ok(raw) = std::fs::read(format!("/proc/{p}/cmdline")) else {
            return false;
        };
        let argv0 = raw.split(|&b| b == 0).next().unwrap_or_default();
        argv0.ends_with(argv0_suffix.as_bytes()) && String::from_utf8_lossy(&raw).contains(needle)
    })
}

/// SIGKILLs every process [`pids_under`] `dir`, repeating until none is left
/// (a supervisor may respawn while it is being killed) or 100 rounds pass.
/// Returns how many kills were sent.
pub fn sweep(dir: &Path) -> usize {
    let mut sent = 0;
    for _ in 0..100 {
        let pids = pids_under(dir);
        if pids.is_empty() {
            break;
        }
        for p in pids {
            if let Ok(p) = i32::try_from(p) {
                // SAFETY: kill(2) with a specific positive pid we just found.
                unsafe { libc::kill(p, libc::SIGKILL) };
                sent += 1;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    sent
}

/// Resource use summed over a set of processes at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// How many of the pids were alive.
    pub procs: usize,
    /// utime + stime, ticks.
    pub cpu_ticks: u64,
    /// Context switches, all threads.
    pub ctxsw: u64,
    /// Resident set, KiB.
    pub rss_kib: u64,
    /// Proportional set, KiB.
    pub pss_kib: u64,
}

/// Samples [`Usage`] summed over `pids`.
pub fn usage(pids: &[u32]) -> Usage {
    let mut u = Usage::default();
    for &p in pids {
        let Some(st) = stat(p) else { continue };
        u.procs += 1;
        u.cpu_ticks += st.cpu_ticks;
        u.ctxsw += ctxsw(p).unwrap_or(0);
        if let Some((rss, pss)) = smaps_rollup(p) {
            u.rss_kib += rss;
            u.pss_kib += pss;
        }
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_odd_comm() {
        let text = "1234 (we ird) name)) S 77 1234 1234 0 -1 4194560 100 0 0 0 25 17 0 0 20 0 3 0 555 1000 50";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                ppid: 77,
                cpu_ticks: 42
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[test]
    fn ctxsw_and_smaps() {
        let status = "Name:\tx\nvoluntary_ctxt_switches:\t12\nnonvoluntary_ctxt_switches:\t3\n";
        assert_eq!(parse_ctxsw(status), Some(15));
        assert_eq!(parse_ctxsw("Name: x\n"), None);
        let smaps = "55d0-7ffd ---p 00000000 00:00 0 [rollup]\nRss:                3000 kB\nPss:                1200 kB\nPss_Anon: 5 kB\n";
        assert_eq!(parse_smaps_rollup(smaps), Some((3000, 1200)));
        assert_eq!(parse_smaps_rollup("Rss: 1 kB\n"), None);
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(stat(me).is_some());
        assert!(ctxsw(me).is_some());
        assert!(cmdline(me).is_some_and(|c| !c.is_empty()));
        let u = usage(&[me]);
        assert_eq!(u.procs, 1);
        assert!(u.rss_kib > 0);
        assert!(clk_tck() > 0);
    }
}
