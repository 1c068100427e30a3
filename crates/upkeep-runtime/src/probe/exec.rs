//! Exec probes: the command runs on the host with the service's environment,
//! directory and user, in its own process group, spawned through the
//! [`Reaper`](crate::reaper::Reaper) (never `tokio::process`, never
//! `Child::wait`).
//!
//! stdout and stderr share one pipe (the kubelet reads combined output), of
//! which at most [`MAX_OUTPUT`] bytes are kept; the rest is drained and
//! dropped so the command never blocks on a full pipe. At the timeout the
//! whole process group is SIGKILLed and its leader's reaped status is
//! awaited, so a probe leaves no zombie behind.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use upkeep_core::probe::ProbeResult;
use upkeep_core::ExitStatus;

use super::{timeout_message, ExecContext, MAX_OUTPUT};
use crate::reaper::{pidfd_signal, Spawned};

/// How long a SIGKILLed probe may take to be reaped before we give up waiting
/// (it only happens if the process is stuck in the kernel).
const REAP_WAIT: Duration = Duration::from_secs(10);

/// SIGKILLs the probe's process group if the attempt is dropped half-way
/// (worker stopped): the reaper still reaps the leader.
struct GroupGuard {
    pgid: i32,
    armed: bool,
}

impl GroupGuard {
    fn kill(&self) {
        // The group exists at least as long as its leader is unreaped, so the
        // id cannot have been recycled while `armed` is set.
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            self.kill();
        }
    }
}

/// The failure message of a non-zero exit: the status and the first line of
/// the output, if any.
pub(crate) fn failure_message(status: &ExitStatus, output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    match text.lines().map(str::trim).find(|l| !l.is_empty()) {
        Some(line) => format!("{status}: {line}"),
        None => status.to_string(),
    }
}

/// Runs one exec probe attempt, bounded by `timeout`.
pub(crate) async fn probe_exec(
    argv: &[String],
    timeout: Duration,
    ctx: &ExecContext,
) -> ProbeResult {
    let Some((program, args)) = argv.split_first() else {
        return ProbeResult::Failure("exec probe has an empty command".into());
    };
    let deadline = Instant::now() + timeout;
    let (writer, mut reader) = match tokio::net::unix::pipe::pipe() {
        Ok(p) => p,
        Err(e) => {
            return ProbeResult::Error(format!("exec probe {program:?}: cannot create a pipe: {e}"))
        }
    };
    let stdout = match writer.into_blocking_fd() {
        Ok(fd) => fd,
        Err(e) => return ProbeResult::Error(format!("exec probe {program:?}: pipe setup: {e}")),
    };
    let stderr = match stdout.try_clone() {
        Ok(fd) => fd,
        Err(e) => return ProbeResult::Error(format!("exec probe {program:?}: pipe setup: {e}")),
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(&ctx.env)
        .stdin(Stdio::null())
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr))
        .process_group(0);
    if let Some(cg) = &ctx.cgroup {
        crate::spawn::join_cgroup_before_exec(&mut cmd, cg.join_fds());
    }
    match &ctx.mount_ns {
        None => {
            cmd.current_dir(&ctx.working_dir);
            if let Some(uid) = ctx.uid {
                cmd.uid(uid);
            }
            if let Some(gid) = ctx.gid {
                cmd.gid(gid);
            }
        }
        Some(ns) => {
            // std would change directory and drop the uid before the
            // closure that enters the namespace; it does all three itself.
            let entered = crate::spawn::enter_mount_ns_before_exec(
                &mut cmd,
                ns,
                &ctx.working_dir,
                ctx.uid,
                ctx.gid,
            );
            if let Err(e) = entered {
                return ProbeResult::Failure(format!(
                    "cannot run probe command {program:?} in the service's mount namespace: {e}"
                ));
            }
        }
    }
    let spawned = ctx.reaper.spawn(&mut cmd);
    // The command holds our copies of the pipe's write end: close them now,
    // or the read side never sees EOF.
    drop(cmd);
    let Spawned {
        pid,
        pidfd,
        mut exit,
    } = match spawned {
        Ok(s) => s,
        // The kubelet counts an exec probe that cannot run as failed.
        Err(e) => {
            return ProbeResult::Failure(format!("cannot run probe command {program:?}: {e}"))
        }
    };
    let Ok(pgid) = i32::try_from(pid) else {
        return ProbeResult::Error(format!("exec probe {program:?}: pid {pid} out of range"));
    };
    let mut guard = GroupGuard { pgid, armed: true };

    let mut output = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut eof = false;
    let mut status: Option<ExitStatus> = None;
    let sleep = tokio::time::sleep_until(deadline);
    tokio::pin!(sleep);
    while !(eof && status.is_some()) {
        tokio::select! {
            read = reader.read(&mut chunk), if !eof => match read {
                Ok(0) | Err(_) => eof = true,
                Ok(n) => {
                    let keep = n.min(MAX_OUTPUT.saturating_sub(output.len()));
                    output.extend_from_slice(&chunk[..keep]);
                }
            },
            st = &mut exit, if status.is_none() => match st {
                Ok(st) => status = Some(st),
                Err(_) => {
                    return ProbeResult::Error(format!(
                        "exec probe {program:?}: the reaper lost pid {pid}"
                    ));
                }
            },
            _ = &mut sleep => break,
        }
    }

    match status {
        Some(st) => {
            if eof {
                // Leader reaped and nobody holds the pipe: nothing left to kill,
                // and the group id may already be free.
                guard.armed = false;
            } else {
                // The command exited but something it started still holds the
                // output pipe: kill the rest of the group (on guard drop).
                tracing::debug!(pid, "exec probe left processes behind; killing its group");
            }
            drop(guard);
            if st.success() {
                ProbeResult::Success
            } else {
                ProbeResult::Failure(failure_message(&st, &output))
            }
        }
        None => {
            guard.kill();
            let _ = pidfd_signal(&pidfd, libc::SIGKILL);
            match tokio::time::timeout(REAP_WAIT, &mut exit).await {
                Ok(_) => guard.armed = false,
                Err(_) => tracing::error!(pid, "exec probe not reaped {REAP_WAIT:?} after SIGKILL"),
            }
            ProbeResult::Failure(timeout_message(timeout))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_message_uses_first_non_empty_line() {
        let st = ExitStatus::Exited(3);
        assert_eq!(failure_message(&st, b""), "exit code 3");
        assert_eq!(
            failure_message(&st, b"\n  boom  \nmore\n"),
            "exit code 3: boom"
        );
        assert_eq!(
            failure_message(&st, &[0xff, b'x']),
            "exit code 3: \u{fffd}x"
        );
    }
}
