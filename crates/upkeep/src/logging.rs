//! upkeep's own log output: human-readable text (without timestamps when
//! journald captures stderr, since it adds its own) or JSON lines.
//! Filtering follows `RUST_LOG` (default `info`).

use crate::cli::LogFormat;
use std::os::unix::fs::MetadataExt;
use tracing_subscriber::EnvFilter;

/// True when stderr is connected to the journal (systemd sets JOURNAL_STREAM
/// to `dev:inode` of the stream it handed us).
fn stderr_is_journal() -> bool {
    let Ok(v) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

/// Installs the global tracing subscriber.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => {
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            if stderr_is_journal() {
                builder.with_ansi(false).without_time().init()
            } else {
                builder.with_ansi(ansi).init()
            }
        }
    }
}
