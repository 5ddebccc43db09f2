//! `sockit completions SHELL` and `sockit man`: shell completion scripts and the man page,
//! generated from the same clap definitions as `--help`, so they never drift from the flags.

use std::io::{self, Write};

use clap::CommandFactory;
use clap_complete::Shell;

use super::Cli;
use crate::error::{Error, Result};

/// Prints the completion script for `shell` on stdout.
///
/// # Errors
/// Writing to stdout failed (a closed pipe only means nobody reads the rest, and is fine).
pub fn print_completions(shell: Shell) -> Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sockit", &mut script);
    write_stdout(&script, "printing the completion script")
}

/// Prints a man page (roff) on stdout: `sockit(1)`, or with a command name that
/// command's own page, `sockit-serve(1)`, which `sockit(1)` refers to.
///
/// # Errors
/// `command` names no command, or writing to stdout failed (a closed pipe only means
/// nobody reads the rest, and is fine).
pub fn print_man_page(command: Option<&str>) -> Result<()> {
    let page_of = match command {
        None => Cli::command(),
        Some(name) => command_page(name)?,
    };
    let mut page = Vec::new();
    clap_mangen::Man::new(page_of)
        .render(&mut page)
        .map_err(|source| Error::Io {
            doing: "rendering the man page".into(),
            source,
        })?;
    write_stdout(&page, "printing the man page")
}

/// The clap command behind `sockit-NAME(1)`.
fn command_page(name: &str) -> Result<clap::Command> {
    let mut cli = Cli::command();
    // Building propagates the global options into each command, so its page lists them,
    // and names it `sockit-NAME`, the page's title.
    cli.build();
    let pages = || cli.get_subcommands().filter(|c| c.get_name() != "help");
    let Some(command) = pages().find(|c| c.get_name() == name) else {
        let known: Vec<&str> = pages().map(clap::Command::get_name).collect();
        return Err(Error::Usage(format!(
            "there is no command {name:?}; the man pages are: {}",
            known.join(", ")
        )));
    };
    Ok(command.clone())
}

/// Writes `bytes` to stdout; a reader that went away (`| head`) is not an error.
fn write_stdout(bytes: &[u8], doing: &str) -> Result<()> {
    let mut stdout = io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => Err(Error::Io {
            doing: doing.into(),
            source: e,
        }),
        _ => Ok(()),
    }
}
