//! The `upkeep` binary: CLI parsing, logging setup and dispatch. The work is
//! done by the library crates: `upkeep-spec` (loading), `upkeep-runtime`
//! (supervision), `upkeep-api` (HTTP and control socket).

mod cli;
mod client;
mod daemon;
mod describe;
mod load;
mod logging;
mod preflight;
mod render;
mod rollout;

use clap::{CommandFactory, Parser};
use cli::{Cli, Command, RolloutCommand};

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Check { paths, quiet } => render::check(&paths, quiet),
        Command::Render {
            name,
            paths,
            output,
        } => render::render(&paths, name.as_deref(), output),
        Command::Man => {
            let man = clap_mangen::Man::new(Cli::command());
            let mut out = std::io::stdout().lock();
            match man.render(&mut out) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("upkeep: writing the man page: {e}");
                    1
                }
            }
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "upkeep", &mut std::io::stdout());
            0
        }
        Command::Run { paths } => {
            logging::init(cli.log_format);
            match daemon::run(&paths) {
                Ok(()) => 0,
                Err(e) => {
                    // Once: the log goes to stderr already (and so to the
                    // journal under systemd).
                    tracing::error!("{e:#}");
                    1
                }
            }
        }
        Command::Status {
            cluster: true,
            paths,
            output,
            ..
        } => rollout::status(&paths, output),
        Command::Status {
            name,
            paths,
            output,
            watch,
            ..
        } => client::status(&paths, name.as_deref(), output, watch),
        Command::Events {
            name,
            follow,
            paths,
            output,
        } => describe::events(&paths, name.as_deref(), follow, output),
        Command::Describe { name, paths } => describe::describe(&paths, &name),
        Command::Rollout { command } => match command {
            RolloutCommand::Status { paths, output } => rollout::status(&paths, output),
            RolloutCommand::Resume { name, paths } => rollout::resume(&paths, &name),
            RolloutCommand::Apply { name, paths, .. } => {
                client::control(&paths, upkeep_core::control::ControlRequest::Apply(name))
            }
        },
        Command::Logs {
            name,
            follow,
            lines,
            paths,
        } => client::logs(&paths, &name, follow, lines),
        Command::Restart { name, paths } => {
            client::control(&paths, upkeep_core::control::ControlRequest::Restart(name))
        }
        Command::Stop { name, paths } => {
            client::control(&paths, upkeep_core::control::ControlRequest::Stop(name))
        }
        Command::Start { name, paths } => {
            client::control(&paths, upkeep_core::control::ControlRequest::Start(name))
        }
    };
    std::process::exit(code);
}
