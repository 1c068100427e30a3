//! The workloads (`stamp`, `http-server`) and the stamp-file format they write.
//!
//! A stamp file is a text file of lines appended with `O_APPEND`, one `write`
//! per line, so concurrent writers never interleave within a line:
//!
//! ```text
//! start <CLOCK_REALTIME ns> <pid>
//! exit <CLOCK_REALTIME ns>
//! hang <CLOCK_REALTIME ns>
//! ```
//!
//! Latencies are differences of these stamps (and of stamps the bench takes
//! itself with the same clock), so they do not depend on how fast the bench
//! notices a change.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One line of a stamp file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// A workload process started.
    Start {
        /// CLOCK_REALTIME, ns.
        ns: u64,
        /// Its pid.
        pid: u32,
    },
    /// A workload process is about to exit (status 1).
    Exit {
        /// CLOCK_REALTIME, ns.
        ns: u64,
    },
    /// An http-server workload stopped answering.
    Hang {
        /// CLOCK_REALTIME, ns.
        ns: u64,
    },
}

impl Stamp {
    /// The time of the stamp.
    pub fn ns(&self) -> u64 {
        match *self {
            Stamp::Start { ns, .. } | Stamp::Exit { ns } | Stamp::Hang { ns } => ns,
        }
    }
}

/// `CLOCK_REALTIME` now, in nanoseconds since the epoch.
pub fn now_ns() -> u64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Parses one line; `None` for anything malformed (a torn or foreign line).
pub fn parse_line(line: &str) -> Option<Stamp> {
    let mut it = line.split_ascii_whitespace();
    let kind = it.next()?;
    let ns: u64 = it.next()?.parse().ok()?;
    let stamp = match kind {
        "start" => Stamp::Start {
            ns,
            pid: it.next()?.parse().ok()?,
        },
        "exit" => Stamp::Exit { ns },
        "hang" => Stamp::Hang { ns },
        _ => return None,
    };
    it.next().is_none().then_some(stamp)
}

/// Parses a whole stamp file, skipping malformed lines and a final line
/// without its newline (it may still be being written).
pub fn parse(text: &str) -> Vec<Stamp> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete.lines().filter_map(parse_line).collect()
}

/// Reads and parses `path`; a missing file is an empty list.
pub fn read(path: &Path) -> Vec<Stamp> {
    std::fs::read_to_string(path)
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// Every `start` stamp as `(ns, pid)`.
pub fn starts(stamps: &[Stamp]) -> Vec<(u64, u32)> {
    stamps
        .iter()
        .filter_map(|s| match *s {
            Stamp::Start { ns, pid } => Some((ns, pid)),
            _ => None,
        })
        .collect()
}

/// For every `exit` stamp that is followed by a `start`, the nanoseconds from
/// the exit to that next start (crash -> restart latency).
pub fn exit_to_start(stamps: &[Stamp]) -> Vec<i128> {
    gaps(stamps, |s| matches!(s, Stamp::Exit { .. }))
}

/// For every `hang` stamp followed by a `start`, the nanoseconds from the hang
/// to that next start (liveness failure -> restarted).
pub fn hang_to_start(stamps: &[Stamp]) -> Vec<i128> {
    gaps(stamps, |s| matches!(s, Stamp::Hang { .. }))
}

fn gaps(stamps: &[Stamp], is_trigger: impl Fn(&Stamp) -> bool) -> Vec<i128> {
    let mut out = Vec::new();
    let mut pending: Option<u64> = None;
    for s in stamps {
        if is_trigger(s) {
            pending = Some(s.ns());
        } else if let (Stamp::Start { ns, .. }, Some(t)) = (s, pending) {
            out.push(i128::from(*ns) - i128::from(t));
            pending = None;
        }
    }
    out
}

/// The first `start` after time `t0_ns` whose pid differs from `old_pid`.
pub fn first_start_after(stamps: &[Stamp], t0_ns: u64, old_pid: u32) -> Option<(u64, u32)> {
    starts(stamps)
        .into_iter()
        .find(|&(ns, pid)| ns >= t0_ns && pid != old_pid)
}

/// Appends `line` to `path` with one `write` on an `O_APPEND` descriptor.
pub fn append(path: &Path, line: &str) -> io::Result<()> {
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    let n = f.write(line.as_bytes())?;
    if n != line.len() {
        return Err(io::Error::other(format!(
            "short write to {}: {n} of {} bytes",
            path.display(),
            line.len()
        )));
    }
    Ok(())
}

/// What the `stamp` workload does after stamping its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StampMode {
    /// Stamp `exit` and exit with status 1 after this long.
    ExitAfter(Duration),
    /// Sleep until killed.
    Sleep,
}

/// The `stamp` workload: stamps `start`, then exits or sleeps. Returns the exit
/// status for `main` (it never returns in [`StampMode::Sleep`]).
pub fn run_stamp(file: &Path, mode: StampMode) -> i32 {
    if let Err(e) = append(
        file,
        &format!("start {} {}\n", now_ns(), std::process::id()),
    ) {
        eprintln!("upkeep-bench stamp: cannot write {}: {e}", file.display());
        return 2;
    }
    match mode {
        StampMode::ExitAfter(d) => {
            std::thread::sleep(d);
            if let Err(e) = append(file, &format!("exit {}\n", now_ns())) {
                eprintln!("upkeep-bench stamp: cannot write {}: {e}", file.display());
            }
            1
        }
        StampMode::Sleep => loop {
            // SAFETY: pause() has no preconditions; it returns only after a
            // caught signal, and this process catches none.
            unsafe { libc::pause() };
        },
    }
}

/// The `http-server` workload: answers `200 ok` on `127.0.0.1:port` and, after
/// `hang_after`, stamps `hang` and keeps accepting connections without ever
/// answering. Stamps `start` first when `stamp` is given. Returns only on a
/// setup error (the exit status for `main`).
pub fn run_http_server(port: u16, hang_after: Option<Duration>, stamp: Option<&Path>) -> i32 {
    let started = Instant::now();
    // A previous generation may still hold the port for a moment.
    let listener = loop {
        match TcpListener::bind(("127.0.0.1", port)) {
            Ok(l) => break l,
            Err(e) if started.elapsed() < Duration::from_secs(5) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                eprintln!("upkeep-bench http-server: cannot bind 127.0.0.1:{port}: {e}");
                return 2;
            }
        }
    };
    if let Some(file) = stamp {
        if let Err(e) = append(
            file,
            &format!("start {} {}\n", now_ns(), std::process::id()),
        ) {
            eprintln!(
                "upkeep-bench http-server: cannot write {}: {e}",
                file.display()
            );
            return 2;
        }
    }
    let hung = Arc::new(AtomicBool::new(false));
    if let Some(after) = hang_after {
        let hung = Arc::clone(&hung);
        let stamp = stamp.map(Path::to_path_buf);
        std::thread::spawn(move || {
            std::thread::sleep(after);
            hung.store(true, Ordering::SeqCst);
            if let Some(file) = stamp {
                let _ = append(&file, &format!("hang {}\n", now_ns()));
            }
        });
    }
    // Connections accepted while hung are kept open and never answered.
    let mut held: Vec<TcpStream> = Vec::new();
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        if hung.load(Ordering::SeqCst) {
            held.push(conn);
            continue;
        }
        let _ = conn.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 4096];
        let mut got = Vec::new();
        while !got.windows(4).any(|w| w == b"\r\n\r\n") && got.len() < 64 * 1024 {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = conn
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n");
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lines() {
        assert_eq!(
            parse_line("start 10 42"),
            Some(Stamp::Start { ns: 10, pid: 42 })
        );
        assert_eq!(parse_line("exit 11"), Some(Stamp::Exit { ns: 11 }));
        assert_eq!(parse_line("hang 12"), Some(Stamp::Hang { ns: 12 }));
        assert_eq!(parse_line("start 10"), None);
        assert_eq!(parse_line("start x 1"), None);
        assert_eq!(parse_line("exit 1 2"), None);
        assert_eq!(parse_line("bogus 1"), None);
        assert_eq!(parse_line(""), None);
    }

    #[test]
    fn parse_skips_torn_tail_and_garbage() {
        let s = parse("start 1 5\nnoise\nexit 3\nstart 7 6\nexit 9");
        assert_eq!(
            s,
            vec![
                Stamp::Start { ns: 1, pid: 5 },
                Stamp::Exit { ns: 3 },
                Stamp::Start { ns: 7, pid: 6 }
            ]
        );
        assert!(parse("start 1 5").is_empty());
    }

    #[test]
    fn gaps_pair_each_trigger_with_next_start() {
        let s = parse("start 100 1\nexit 200\nstart 250 2\nexit 300\nstart 310 3\nexit 400\n");
        assert_eq!(exit_to_start(&s), vec![50, 10]);
        let h = parse("start 0 1\nhang 1000\nstart 3000 2\nhang 4000\n");
        assert_eq!(hang_to_start(&h), vec![2000]);
        assert_eq!(starts(&h), vec![(0, 1), (3000, 2)]);
        assert_eq!(first_start_after(&h, 1, 1), Some((3000, 2)));
        assert_eq!(first_start_after(&h, 0, 2), Some((0, 1)));
        assert_eq!(first_start_after(&h, 3001, 9), None);
    }

    #[test]
    fn append_writes_whole_lines() {
        let dir = std::env::temp_dir().join(format!("upkeep-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s");
        append(&f, "start 1 2\n").unwrap();
        append(&f, "exit 3\n").unwrap();
        assert_eq!(
            read(&f),
            vec![Stamp::Start { ns: 1, pid: 2 }, Stamp::Exit { ns: 3 }]
        );
        assert!(read(&dir.join("missing")).is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
