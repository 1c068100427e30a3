//! Client commands that talk to a running daemon: `status` (over HTTP),
//! `restart|stop|start` (over the control socket) and `logs` (from the files,
//! or from journald through `journalctl`).

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

/// `upkeep status [NAME]`.
pub fn status(paths: &Paths, name: Option<&str>, output: Output) -> i32 {
    let cfg = match config_only(paths) {
        Ok((cfg, _)) => cfg,
        Err(e) => {
            eprintln!("upkeep: {e:#}");
            return 2;
        }
    };
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
                    let table_input = if name.is_some() {
                        serde_json::json!({ "services": [body], "manifest_errors": [] })
                    } else {
                        body
                    };
                    print!("{}", upkeep_api::client::format_table(&table_input));
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
