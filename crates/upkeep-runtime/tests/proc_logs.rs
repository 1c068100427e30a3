//! Log files with real writers: rotation at spawn, copy-truncate under a
//! live O_APPEND writer, tail, follow across rotation, fallback to /dev/null,
//! and the rotation thread under a real writer.

mod proc_common;

use proc_common::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use upkeep_core::ExitStatus;
use upkeep_runtime::logs::{copy_truncate, tail, Follower, LogFile, Logs, ServiceLog};
use upkeep_runtime::spawn::{Output, SpawnRequest};
use upkeep_spec::LogMode;

fn rotated(p: &Path, n: u32) -> PathBuf {
    PathBuf::from(format!("{}.{n}", p.display()))
}

fn append(path: &Path, text: &str) {
    fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

#[test]
fn pod_names_map_to_safe_files_with_mode_0640() {
    let dir = tempfile::tempdir().unwrap();
    let log = LogFile::open(dir.path(), "kube-system-etcd/etcd", 1000, 2).unwrap();
    assert_eq!(log.path(), dir.path().join("kube-system-etcd_etcd.log"));
    let mode = fs::metadata(log.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

#[test]
fn rotate_at_spawn_keeps_max_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogFile::open(dir.path(), "svc", 100, 2).unwrap();
    let p = log.path().to_path_buf();
    append(&p, "small\n");
    assert!(!log.rotate_if_needed().unwrap(), "under the limit");
    for gen in 1..=3 {
        append(&p, &format!("gen{gen} {}\n", "x".repeat(120)));
        assert!(log.rotate_if_needed().unwrap());
        assert_eq!(fs::metadata(&p).unwrap().len(), 0, "fresh live file");
    }
    assert!(read(&rotated(&p, 1)).starts_with("gen3"));
    assert!(read(&rotated(&p, 2)).starts_with("gen2"));
    assert!(!rotated(&p, 3).exists(), "only max_files kept");
    // The fd handed out after rotation writes to the new file.
    let fd = log.fd().unwrap();
    fs::File::from(fd).write_all(b"new\n").unwrap();
    assert_eq!(read(&p), "new\n");
}

#[test]
fn rotation_reopens_a_deleted_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogFile::open(dir.path(), "svc", 100, 2).unwrap();
    fs::remove_file(log.path()).unwrap();
    assert!(!log.rotate_if_needed().unwrap());
    assert!(log.path().exists());
}

#[tokio::test]
async fn truncate_rotate_under_a_live_append_writer() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogFile::open(dir.path(), "svc", 1000, 3).unwrap();
    let p = log.path().to_path_buf();
    // A real long-running process writing to the log through O_APPEND.
    let env = std_env();
    let a = sh(
        "i=0; while [ $i -lt 400 ]; do echo line$i; i=$((i+1)); done; \
                read x < \"$0\" || true; echo after; sleep 30",
    );
    let fifo = dir.path().join("go");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut argv = a.clone();
    argv.push(fifo.display().to_string());
    let fd = log.fd().unwrap();
    let mut req = SpawnRequest::new(&argv, &env);
    req.stdout = Output::Fd(std::os::fd::AsFd::as_fd(&fd));
    req.stderr = Output::Null;
    let sp = req.spawn(&reaper()).unwrap();
    let _c = Cleanup::pids(vec![sp.pid]);
    wait_until("400 lines written", || read(&p).lines().count() == 400).await;
    let before = read(&p);
    assert!(log.truncate_rotate().unwrap());
    let newest = &before[before.len() - 1000..];
    assert_eq!(
        read(&rotated(&p, 1)),
        newest,
        "the newest max_size bytes copied"
    );
    assert_eq!(fs::metadata(&p).unwrap().len(), 0, "truncated");
    // Let the writer continue: it writes at offset 0, no hole of NULs.
    fs::OpenOptions::new()
        .write(true)
        .open(&fifo)
        .unwrap()
        .write_all(b"go\n")
        .unwrap();
    wait_until("write after truncation", || read(&p) == "after\n").await;
    assert!(!log.truncate_rotate().unwrap(), "small again");
    kill(sp.pid);
    assert_eq!(
        exit_of(sp).await,
        ExitStatus::Signaled {
            signal: libc::SIGKILL,
            core: false
        }
    );
    // The free-function form used by the rotation thread.
    append(&p, &"y".repeat(2000));
    let r = copy_truncate(&p, 1000, 3).unwrap();
    assert!(r.copy_error.is_none());
    assert_eq!((r.kept, r.dropped), (1000, "after\n".len() as u64 + 1000));
    assert_eq!(read(&rotated(&p, 2)), newest, "shifted");
    assert_eq!(read(&rotated(&p, 1)), "y".repeat(1000));
    assert_eq!(fs::metadata(&p).unwrap().len(), 0);
    assert!(copy_truncate(&dir.path().join("missing.log"), 10, 1).is_err());
}

#[test]
fn tail_returns_the_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.log");
    let mut text = String::new();
    for i in 0..5000 {
        text.push_str(&format!("line {i} {}\n", "z".repeat(i % 50)));
    }
    fs::write(&p, &text).unwrap();
    assert!(
        fs::metadata(&p).unwrap().len() > 64 * 1024 * 2,
        "spans several chunks"
    );
    let last = tail(&p, 3).unwrap();
    assert_eq!(last.len(), 3);
    assert!(last[0].starts_with("line 4997 "));
    assert!(last[2].starts_with("line 4999 "));
    let all = tail(&p, 10_000).unwrap();
    assert_eq!(all.len(), 5000);
    assert!(all[0].starts_with("line 0 "));
    let many = tail(&p, 3000).unwrap();
    assert_eq!(many.len(), 3000);
    assert!(many[0].starts_with("line 2000 "));
    assert!(tail(&p, 0).unwrap().is_empty());
    // No trailing newline, empty file, missing file.
    fs::write(&p, "a\nb\nc").unwrap();
    assert_eq!(tail(&p, 2).unwrap(), vec!["b", "c"]);
    fs::write(&p, "").unwrap();
    assert!(tail(&p, 5).unwrap().is_empty());
    assert!(tail(&dir.path().join("nope"), 5).is_err());
}

#[test]
fn follow_survives_both_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogFile::open(dir.path(), "svc", 10, 2).unwrap();
    let p = log.path().to_path_buf();
    append(&p, "old\n");
    let mut f = Follower::from_end(&p).unwrap();
    assert!(f.poll().unwrap().is_empty(), "starts at the end");
    append(&p, "one\ntw");
    assert_eq!(f.poll().unwrap(), vec!["one"]);
    append(&p, "o\n");
    assert_eq!(f.poll().unwrap(), vec!["two"], "partial line completed");
    // Rename rotation: the rest of the old file, then the new one.
    append(&p, "last-in-old\n");
    assert!(log.rotate_if_needed().unwrap());
    append(&p, "first-in-new\n");
    assert_eq!(f.poll().unwrap(), vec!["last-in-old", "first-in-new"]);
    // Copy-truncate rotation: start over at 0.
    append(&p, &"x".repeat(20));
    append(&p, "\n");
    assert_eq!(f.poll().unwrap().len(), 1);
    assert!(log.truncate_rotate().unwrap());
    append(&p, "after-truncate\n");
    assert_eq!(f.poll().unwrap(), vec!["after-truncate"]);

    // from_start and a file that appears later.
    let mut g = Follower::from_start(&p).unwrap();
    assert_eq!(g.poll().unwrap(), vec!["after-truncate"]);
    let later = dir.path().join("later.log");
    let mut h = Follower::from_end(&later).unwrap();
    assert!(h.poll().unwrap().is_empty());
    fs::write(&later, "hello\n").unwrap();
    assert_eq!(h.poll().unwrap(), vec!["hello"]);
}

#[tokio::test]
async fn unwritable_log_dir_falls_back_to_dev_null() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the directory should be: open fails even as root.
    let not_a_dir = dir.path().join("file");
    fs::write(&not_a_dir, "").unwrap();
    let mut log = ServiceLog::new(&not_a_dir, "svc", 1000, 2);
    let out = log.output();
    assert!(out.fd.is_none());
    let warning = out.warning.clone().expect("a warning");
    assert!(
        warning.contains("svc.log") && warning.contains("/dev/null"),
        "{warning}"
    );
    // Supervision goes on: the service runs with output discarded.
    let env = std_env();
    let a = sh("echo hello; exit 5");
    let mut req = SpawnRequest::new(&a, &env);
    req.stdout = out.as_output();
    req.stderr = out.as_output();
    let sp = req.spawn(&reaper()).unwrap();
    assert_eq!(exit_of(sp).await, ExitStatus::Exited(5));
    assert!(!log.truncate_rotate().unwrap());

    // Once the directory is usable, the next spawn gets the file.
    let good = dir.path().join("logs");
    fs::create_dir(&good).unwrap();
    let mut log = ServiceLog::new(&good, "svc", 1000, 2);
    let out = log.output();
    assert!(out.warning.is_none());
    let req = SpawnRequest {
        stdout: out.as_output(),
        stderr: out.as_output(),
        ..SpawnRequest::new(&a, &env)
    };
    let sp = req.spawn(&reaper()).unwrap();
    assert_eq!(exit_of(sp).await, ExitStatus::Exited(5));
    assert_eq!(read(&log.path()), "hello\n");
}

/// A small tmpfs mounted on a fresh temp dir, unmounted on drop (also on panic).
struct SmallTmpfs {
    dir: tempfile::TempDir,
}

impl SmallTmpfs {
    /// Mounts by syscall, not mount(8): another test's reaper in this
    /// process collects every child, so a child's exit status may be gone
    /// (ECHILD) by the time `Command::status` asks for it.
    fn mount(size: &str) -> SmallTmpfs {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let target = CString::new(dir.path().as_os_str().as_bytes()).unwrap();
        let opts = CString::new(format!("size={size},mode=0755")).unwrap();
        // SAFETY: mount(2) with valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                opts.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting a tmpfs on {}: {}",
            dir.path().display(),
            std::io::Error::last_os_error()
        );
        SmallTmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallTmpfs {
    fn drop(&mut self) {
        use std::os::unix::ffi::OsStrExt;
        let target = std::ffi::CString::new(self.dir.path().as_os_str().as_bytes()).unwrap();
        // SAFETY: umount2(2) on the tmpfs this value mounted.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

#[test]
fn copy_truncate_on_a_full_disk_still_truncates_and_counts() {
    // 1 MiB of disk, a 700 KiB log, max_size 512 KiB: the rotated copy cannot
    // fit, so the live file is emptied anyway and every byte counted.
    let fs_ = SmallTmpfs::mount("1m");
    let p = fs_.path().join("svc.log");
    fs::write(&p, vec![b'x'; 700 * 1024]).unwrap();
    fs::write(rotated(&p, 1), b"older\n").unwrap();
    let r = copy_truncate(&p, 512 * 1024, 2).unwrap();
    let e = r.copy_error.expect("the copy fails on a full disk");
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    assert_eq!((r.kept, r.dropped), (0, 700 * 1024));
    assert_eq!(fs::metadata(&p).unwrap().len(), 0, "truncated anyway");
    assert!(!rotated(&p, 1).exists(), "no partial copy left behind");
    assert_eq!(read(&rotated(&p, 2)), "older\n", "older files kept");
}

#[tokio::test]
async fn rotation_thread_rotates_a_file_that_reaches_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let shared = std::sync::Arc::new(upkeep_core::snapshot::Shared::default());
    let logs = Logs::new(dir.path(), 64 * 1024, 2, Some(shared.clone()));
    // Registered before the file exists, as for a service not started yet.
    let mut log = logs.service("svc", LogMode::File);
    let out = log.output();
    assert!(out.warning.is_none(), "{:?}", out.warning);
    let p = log.path();
    // A real process writes 100 KiB in one write(2) through the descriptor.
    let env = std_env();
    let a: Vec<String> = [
        "python3",
        "-c",
        "import os, time; os.write(1, b'x' * 102400 + b'\\n'); time.sleep(30)",
    ]
    .map(String::from)
    .to_vec();
    let mut req = SpawnRequest::new(&a, &env);
    req.stdout = out.as_output();
    req.stderr = out.as_output();
    let sp = req.spawn(&reaper()).unwrap();
    let _c = Cleanup::pids(vec![sp.pid]);
    // The rotation thread may see the file at any size from 64 KiB on (the
    // writer's pipe hands it over in pieces on a busy machine): whenever it
    // rotates, `.1` gets the newest 64 KiB, the rest of that moment's file is
    // counted as dropped, and what is written after lands in the live file.
    // So every byte is accounted for, and the bound holds.
    const TOTAL: u64 = 102_401;
    let dropped = || {
        let snap = shared.snapshot.read().unwrap();
        snap.log_dropped_bytes.get("svc").copied().unwrap_or(0)
    };
    wait_until(
        "rotation of the 100 KiB file, every byte accounted for",
        || {
            let one = fs::metadata(rotated(&p, 1)).map(|m| m.len()).unwrap_or(0);
            let live = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            let d = dropped();
            eprintln!("rotated {one}, live {live}, dropped {d}");
            one == 64 * 1024 && one + live + d == TOTAL
        },
    )
    .await;
    let live = fs::metadata(&p).unwrap().len();
    assert!(live < 64 * 1024, "live file within its bound: {live}");
    // Later writes through the same O_APPEND descriptor land at the live
    // file's end, not at the writer's old offset (no sparse hole).
    kill(sp.pid);
    let _ = exit_of(sp).await;
    fs::File::from(log.output().fd.unwrap())
        .write_all(b"next\n")
        .unwrap();
    let text = read(&p);
    assert_eq!(text.len() as u64, live + 5, "appended at the end");
    assert!(text.ends_with("next\n"));
    assert!(!text.contains('\0'), "no hole");
}

#[tokio::test]
async fn journal_mode_streams_to_journald_and_falls_back_to_the_file() {
    use std::io::Read;
    use std::os::unix::net::UnixListener;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stdout");
    let logs = Logs::new(dir.path(), 1 << 20, 2, None).with_journal_socket(&sock);
    let mut log = logs.service("kube-system-etcd/etcd", LogMode::Journal);

    // No journald: the file, with one warning that names the socket.
    let out = log.output();
    let w = out.warning.clone().expect("a warning");
    assert!(
        w.contains(&sock.display().to_string()) && w.contains(".log"),
        "{w}"
    );
    assert!(out.fd.is_some(), "falls back to the file");
    assert!(log.output().warning.is_none(), "warned once");

    // A listener that speaks for journald: header, then the child's output.
    let listener = UnixListener::bind(&sock).unwrap();
    let out = log.output();
    assert!(out.warning.is_none());
    let env = std_env();
    let a = sh("echo to-stdout; echo to-stderr >&2");
    let mut req = SpawnRequest::new(&a, &env);
    req.stdout = out.as_output();
    req.stderr = out.as_output();
    let sp = req.spawn(&reaper()).unwrap();
    drop(out); // upkeep keeps no copy: journald sees EOF when the service ends
    assert_eq!(exit_of(sp).await, ExitStatus::Exited(0));
    let (mut conn, _) = listener.accept().unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut got = String::new();
    conn.read_to_string(&mut got).unwrap();
    assert_eq!(
        got,
        "kube-system-etcd/etcd\n\n6\n1\n0\n0\n0\nto-stdout\nto-stderr\n"
    );
}
