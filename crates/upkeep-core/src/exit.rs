//! How a process ended.

use serde::{Deserialize, Serialize};

/// Exit status of a supervised process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// `exit(code)`.
    Exited(i32),
    /// Killed by a signal.
    Signaled {
        /// Signal number.
        signal: i32,
        /// A core dump was written.
        core: bool,
    },
    /// The process was adopted from an earlier upkeep, so only its parent knew
    /// the status.
    Unknown,
}

impl ExitStatus {
    /// True for `Exited(0)`.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Exited(0))
    }

    /// The exit code, if it exited.
    pub fn code(&self) -> Option<i32> {
        match self {
            ExitStatus::Exited(c) => Some(*c),
            _ => None,
        }
    }

    /// The signal number, if killed by one.
    pub fn signal(&self) -> Option<i32> {
        match self {
            ExitStatus::Signaled { signal, .. } => Some(*signal),
            _ => None,
        }
    }

    /// Low-cardinality label for `upkeep_service_exits_total{reason}`:
    /// `exit_0`, `exit_nonzero`, the signal name (`SIGKILL`), or `unknown`.
    pub fn reason(&self) -> String {
        match self {
            ExitStatus::Exited(0) => "exit_0".into(),
            ExitStatus::Exited(_) => "exit_nonzero".into(),
            ExitStatus::Signaled { signal, .. } => signal_name(*signal).into(),
            ExitStatus::Unknown => "unknown".into(),
        }
    }
}

/// The kubelet's reason for a container that ended by its memory limit.
pub const OOM_KILLED: &str = "OOMKilled";

impl ExitStatus {
    /// True if this status can be an OOM kill: killed by SIGKILL. Whether it
    /// was is for the memory cgroup's `oom_kill` counter to say.
    pub fn may_be_oom_kill(&self) -> bool {
        matches!(self, ExitStatus::Signaled { signal, .. } if *signal == libc_sigkill())
    }

    /// The kubelet's `lastState.terminated.reason` for this status:
    /// `Completed` for exit 0, `Error` for any other exit or signal, `None`
    /// when unknown. An OOM kill is [`OOM_KILLED`], decided by the caller.
    pub fn kubelet_reason(&self) -> Option<&'static str> {
        match self {
            ExitStatus::Exited(0) => Some("Completed"),
            ExitStatus::Exited(_) | ExitStatus::Signaled { .. } => Some("Error"),
            ExitStatus::Unknown => None,
        }
    }
}

/// SIGKILL's number on Linux (every architecture).
const fn libc_sigkill() -> i32 {
    9
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(c) => write!(f, "exit code {c}"),
            ExitStatus::Signaled { signal, core } => {
                write!(f, "killed by {}", signal_name(*signal))?;
                if *core {
                    write!(f, " (core dumped)")?;
                }
                Ok(())
            }
            ExitStatus::Unknown => write!(f, "exit status unknown (adopted process)"),
        }
    }
}

/// Linux signal name for a number (`"SIGKILL"` for 9), or `"SIG<n>"`.
pub fn signal_name(signal: i32) -> &'static str {
    const NAMES: [&str; 32] = [
        "SIG0",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    if (0..32).contains(&signal) {
        NAMES[signal as usize]
    } else {
        "SIGRT"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_reasons() {
        assert_eq!(ExitStatus::Exited(0).kubelet_reason(), Some("Completed"));
        assert_eq!(ExitStatus::Exited(3).kubelet_reason(), Some("Error"));
        let kill = ExitStatus::Signaled {
            signal: 9,
            core: false,
        };
        assert_eq!(kill.kubelet_reason(), Some("Error"));
        assert!(kill.may_be_oom_kill());
        assert!(!ExitStatus::Signaled {
            signal: 15,
            core: false
        }
        .may_be_oom_kill());
        assert_eq!(ExitStatus::Unknown.kubelet_reason(), None);
    }
}
