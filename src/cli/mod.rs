//! The command-line front end: arguments ([`args`]) → typed configuration ([`config`]) →
//! the library call for the chosen command ([`run`]).

pub mod args;
pub mod bench;
pub mod config;

pub use args::Cli;

use crate::client;
use crate::error::Result;
use crate::obs::EventLog;
use crate::server::Server;
use crate::shutdown::{Shutdown, install_signal_handlers};

use args::{Command, GlobalArgs};

/// Runs one parsed command line to completion.
///
/// # Errors
/// Whatever made the command fail; `main` prints it and exits with its code.
pub async fn run(cli: Cli, events: &EventLog) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args.into_config()?, &cli.global, events).await,
        Command::Send(args) => {
            let config = args.into_config()?;
            client::send(&config.endpoint, &config.options, events).await?;
            Ok(())
        }
        Command::Bench(args) => bench::run(args, &cli.global).await,
    }
}

/// `sockit serve`: bind, serve until a signal, drain, print the summary on stderr.
async fn serve(config: config::ServeConfig, _global: &GlobalArgs, events: &EventLog) -> Result<()> {
    let server = Server::bind(&config.endpoint, config.options).await?;
    let shutdown = Shutdown::new();
    install_signal_handlers(shutdown.clone()).map_err(|source| crate::Error::Io {
        doing: "installing the signal handlers".into(),
        source,
    })?;
    let summary = server.run(events.clone(), shutdown).await;
    events.flush();
    eprintln!("{summary}");
    Ok(())
}
