//! Client commands that talk to a running daemon: `status` (over HTTP),
//! `restart|stop|start` (over the control socket) and `logs` (from the files,
//! or from journald through `journalctl`).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant, SystemTime};
use upkeep_api::top::UsageSample;
use upkeep_core::control::ControlRequest;

use upkeep_spec::LogMode;

use crate::cli::{Output, Paths};
use crate::load::config_only;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// How long `status` watches CPU use for its CPU column (more than
/// `usage_metrics::MAX_AGE`, so that the two reads are two).
const CPU_WINDOW: Duration = Duration::from_millis(600);
/// How often `status -w` refreshes.
const WATCH_PERIOD: Duration = Duration::from_secs(2);

/// Reads the usage figures from `/metrics` (empty when it cannot).
async fn usage_sample(listen: &str) -> UsageSample {
    match upkeep_api::client::fetch_metrics(listen).await {
        Ok(text) => upkeep_api::top::parse_usage(&text, Instant::now()),
        Err(_) => UsageSample::default(),
    }
}

/// The width to fit the table in: `COLUMNS`, else 120 on a terminal, else
/// no limit (a pipe gets whole lines).
fn line_width() -> usize {
    if let Some(c) = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()) {
        return c;
    }
    if std::io::stdout().is_terminal() {
        120
    } else {
        usize::MAX
    }
}

/// `upkeep status -w`: the table, refreshed in place every 2 s, CPU as the
/// rate since the previous refresh. Runs until interrupted.
fn watch(listen: &str, name: Option<&str>) -> i32 {
    let rt = runtime();
    let mut before = rt.block_on(usage_sample(listen));
    loop {
        std::thread::sleep(WATCH_PERIOD);
        let (health, after) = rt.block_on(async {
            (
                upkeep_api::client::fetch_health(listen, name).await,
                usage_sample(listen).await,
            )
        });
        let body = match health {
            Ok((_, body)) => body,
            Err(e) => {
                eprintln!("upkeep: {e}");
                return 2;
            }
        };
        let table = upkeep_api::client::format_table_with(
            &table_input(name, body),
            SystemTime::now(),
            &upkeep_api::top::cells(&before, &after),
            line_width(),
        );
        // Home, clear to the end of the screen, then the table.
        print!("\x1b[H\x1b[2J{table}");
        let _ = std::io::stdout().flush();
        before = after;
    }
}

fn table_input(name: Option<&str>, body: serde_json::Value) -> serde_json::Value {
    if name.is_some() {
        serde_json::json!({ "services": [body], "manifest_errors": [] })
    } else {
        body
    }
}

/// `upkeep status [NAME] [-w]`.
pub fn status(paths: &Paths, name: Option<&str>, output: Output, watch_mode: bool) -> i32 {
    let cfg = match config_only(paths) {
        Ok((cfg, _)) => cfg,
        Err(e) => {
            eprintln!("upkeep: {e:#}");
            return 2;
        }
    };
    if watch_mode && output == Output::Text {
        return watch(&cfg.listen, name);
    }
    let result = runtime().block_on(upkeep_api::client::fetch_health(&cfg.listen, name));
    match result {
        Ok((code, body)) => {
            if code == 404 {
                eprintln!("upkeep: no service named {:?}", name.unwrap_or_default());
                return 1;
            }
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&body).unwrap_or_default()
                ),
                Output::Text => {
                    let usage = runtime().block_on(async {
                        let before = usage_sample(&cfg.listen).await;
                        tokio::time::sleep(CPU_WINDOW).await;
                        let after = usage_sample(&cfg.listen).await;
                        upkeep_api::top::cells(&before, &after)
                    });
                    print!(
                        "{}",
                        upkeep_api::client::format_table_with(
                            &table_input(name, body),
                            SystemTime::now(),
                            &usage,
                            line_width(),
                        )
                    );
                }
            }
            // With NAME: 0 only if that service is running and ready, so scripts
            // can wait on it. Without: 0 whenever the daemon answered (the table
            // shows what is degraded; `curl /health` gives the overall verdict).
            if name.is_some() {
                i32::from(code != 200)
            } else {
                0
            }
        }
        Err(e) => {
            eprintln!("upkeep: {e}");
            2
        }
    }
}

/// `upkeep restart|stop|start NAME`.
pub fn control(paths: &Paths, req: ControlRequest) -> i32 {
    let cfg = match config_only(paths) {
        Ok((cfg, _)) => cfg,
        Err(e) => {
            eprintln!("upkeep: {e:#}");
            return 2;
        }
    };
    let socket = cfg.state_dir.join("upkeep.sock");
    match runtime().block_on(upkeep_api::control::control_request(&socket, &req)) {
        Ok(reply) => {
            if reply.ok {
                println!("{}", reply.message);
                0
            } else {
                eprintln!("upkeep: {}", reply.message);
                1
            }
        }
        Err(e) => {
            eprintln!("upkeep: {e}");
            2
        }
    }
}

/// `upkeep logs NAME [-f] [-n N]`.
pub fn logs(paths: &Paths, name: &str, follow: bool, lines: usize) -> i32 {
    let cfg = match config_only(paths) {
        Ok((cfg, _)) => cfg,
        Err(e) => {
            eprintln!("upkeep: {e:#}");
            return 2;
        }
    };
    // A host service's own `log`, else the default (static pods).
    let mode = cfg.service(name).map_or(cfg.default_log, |s| s.log);
    match mode {
        LogMode::Journal if upkeep_runtime::logs::journal::available() => {
            return journal_logs(name, follow, lines);
        }
        LogMode::Inherit => {
            eprintln!(
                "upkeep: {name} has log = \"inherit\": its output is in upkeep's own log \
                 (journalctl -u upkeep under systemd)"
            );
            return 1;
        }
        // Without journald, `journal` services write to the file.
        LogMode::Journal | LogMode::File => {}
    }
    let path = upkeep_runtime::logs::log_path(&cfg.log_dir, name);
    match upkeep_runtime::logs::tail(&path, lines) {
        Ok(lines) => {
            for l in lines {
                println!("{l}");
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Not a service, or one that never wrote: say which names exist.
            let loaded = crate::load::load_all(paths);
            if loaded.services.iter().any(|s| s.name == name) {
                eprintln!(
                    "upkeep: {name} has no output yet ({} does not exist)",
                    path.display()
                );
            } else {
                let known: Vec<&str> = loaded.services.iter().map(|s| s.name.as_str()).collect();
                eprintln!(
                    "upkeep: no service named {name:?} (known: {})",
                    known.join(", ")
                );
            }
            return 1;
        }
        Err(e) => {
            eprintln!("upkeep: cannot read {}: {e}", path.display());
            return 1;
        }
    }
    if follow {
        let mut follower = match upkeep_runtime::logs::Follower::from_end(&path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("upkeep: following {}: {e}", path.display());
                return 1;
            }
        };
        loop {
            match follower.poll() {
                Ok(lines) => {
                    for l in lines {
                        println!("{l}");
                    }
                }
                Err(e) => {
                    eprintln!("upkeep: following {}: {e}", path.display());
                    return 1;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
    0
}

/// `upkeep logs` for a `log = "journal"` service: `journalctl -t NAME`, with
/// the message text only (as the file shows it).
fn journal_logs(name: &str, follow: bool, lines: usize) -> i32 {
    let mut cmd = std::process::Command::new("journalctl");
    cmd.args(["--no-pager", "--output=cat", "--identifier"])
        .arg(name)
        .arg(format!("--lines={lines}"));
    if follow {
        cmd.arg("--follow");
    }
    match cmd.status() {
        Ok(st) => st.code().unwrap_or(1),
        Err(e) => {
            eprintln!("upkeep: {name} logs to journald, but journalctl cannot run: {e}");
            1
        }
    }
}
