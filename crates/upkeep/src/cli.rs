//! Command-line interface definitions (clap).

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// upkeep: keeps a Kubernetes control-plane node's static Pods and host daemons running.
#[derive(Debug, Parser)]
#[command(name = "upkeep", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Log format for upkeep's own log lines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "UPKEEP_LOG_FORMAT")]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable (no timestamps under journald, which adds its own).
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Output format of `render` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// For people.
    Text,
    /// For scripts: a stable JSON schema.
    Json,
}

/// Where to find the config and the files it names.
#[derive(Debug, Clone, Args)]
pub struct Paths {
    /// Config file [default: /etc/upkeep/upkeep.toml; absent = built-in defaults].
    #[arg(long, short = 'c', value_name = "PATH", env = "UPKEEP_CONFIG")]
    pub config: Option<PathBuf>,
    /// Static Pod manifests directory (overrides the config's `manifests`).
    #[arg(long, value_name = "DIR")]
    pub manifests: Option<PathBuf>,
    /// HTTP listen address for /health and /metrics (overrides `listen`).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// State directory: lock, control socket, adoption records (overrides `state_dir`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the supervisor in the foreground.
    Run {
        /// Paths.
        #[command(flatten)]
        paths: Paths,
    },
    /// Validate the config and every manifest; exit 1 if anything is invalid.
    Check {
        /// Paths.
        #[command(flatten)]
        paths: Paths,
        /// Print only problems, no summary.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Print the fully resolved spec of one or every service.
    Render {
        /// Service name (default: every service).
        name: Option<String>,
        /// Paths.
        #[command(flatten)]
        paths: Paths,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Show the running daemon's view of every service (from /health).
    ///
    /// Exit status: 2 when upkeep is unreachable; with NAME, 1 unless that
    /// service is running and ready; otherwise 0.
    Status {
        /// Only this service; exit non-zero unless it is running and ready.
        name: Option<String>,
        /// Show every master's services, the rollout lock, pending changes
        /// and halts, read from etcd (`[cluster]`), like `upkeep rollout status`.
        #[arg(long, conflicts_with = "name")]
        cluster: bool,
        /// Paths.
        #[command(flatten)]
        paths: Paths,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
        /// Refresh the table in place every 2 s (like `watch kubectl top`).
        #[arg(long, short = 'w')]
        watch: bool,
    },
    /// Print a service's captured output.
    Logs {
        /// Service name.
        name: String,
        /// Keep printing new output.
        #[arg(long, short)]
        follow: bool,
        /// Lines of history to print.
        #[arg(long, short = 'n', default_value_t = 50)]
        lines: usize,
        /// Paths.
        #[command(flatten)]
        paths: Paths,
    },
    /// What happened to the services (starts, exits, OOM kills, probe
    /// transitions, restarts and why, operator actions), newest last.
    Events {
        /// Only this service.
        name: Option<String>,
        /// Keep printing new events.
        #[arg(long, short)]
        follow: bool,
        /// Paths.
        #[command(flatten)]
        paths: Paths,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Everything about one service: state, cgroup, limits and usage,
    /// probes, the last exits with their output, recent events. No argv or env.
    Describe {
        /// Service name.
        name: String,
        /// Paths.
        #[command(flatten)]
        paths: Paths,
    },
    /// Stop a service (full grace) and start it again.
    Restart {
        /// Service name.
        name: String,
        /// Paths.
        #[command(flatten)]
        paths: Paths,
    },
    /// Stop a service and keep it stopped until `upkeep start`.
    Stop {
        /// Service name.
        name: String,
        /// Paths.
        #[command(flatten)]
        paths: Paths,
    },
    /// Start a stopped service.
    Start {
        /// Service name.
        name: String,
        /// Paths.
        #[command(flatten)]
        paths: Paths,
    },
    /// Planned changes across masters (`[cluster]`, issue #16).
    Rollout {
        /// What to do.
        #[command(subcommand)]
        command: RolloutCommand,
    },
    /// Print the man page (roff) to stdout.
    #[command(hide = true)]
    Man,
    /// Print shell completions to stdout.
    #[command(hide = true)]
    Completions {
        /// Shell.
        shell: clap_complete::Shell,
    },
}

/// `upkeep rollout ...`.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Show every master's services, the rollout lock holder, pending
    /// changes and halts, read from etcd.
    ///
    /// Exit status: 2 when etcd cannot be read, otherwise 0.
    Status {
        /// Paths.
        #[command(flatten)]
        paths: Paths,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Clear the halts of a service (every master's): the pending changes of
    /// that service roll again, one master at a time.
    Resume {
        /// Service name.
        name: String,
        /// Paths.
        #[command(flatten)]
        paths: Paths,
    },
    /// Apply this node's pending change of a service now, without the
    /// cluster's rollout lock and gate: for disaster recovery only (etcd has
    /// no quorum and the change is what brings it back).
    Apply {
        /// Service name.
        name: String,
        /// Required: says that you mean to bypass the lock.
        #[arg(long, required = true)]
        without_lock: bool,
        /// Paths.
        #[command(flatten)]
        paths: Paths,
    },
}
