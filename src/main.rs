//! The `sockit` binary: parse, run, print the error if any, exit with its code.

// Every unsafe block says why it is sound.
#![warn(clippy::undocumented_unsafe_blocks)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

use sockit::cli::{self, Cli, args::ColorChoice};
use sockit::obs::{EventLog, logging};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let color = use_color(cli.global.color);
    logging::init(&cli.global.log_level, cli.global.log, color);
    let runtime = match build_runtime(&cli) {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the runtime: {e}"), 1, color),
    };
    let events = EventLog::stdout(cli.global.log, cli.global.quiet);
    let result = runtime.block_on(cli::run(cli, &events));
    events.flush();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string(), e.exit_status() as u8, color),
    }
}

/// The runtime `main` runs the command on.
///
/// `serve` runs thread-per-core: its first shard runs right here, on a single-threaded
/// runtime, and it starts its other threads itself. Every other command gets a
/// multi-threaded runtime with `--threads` workers (default: one per core).
fn build_runtime(cli: &Cli) -> std::io::Result<tokio::runtime::Runtime> {
    if cli.command.runs_its_own_threads() {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build();
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(n) = cli.global.threads {
        builder.worker_threads(usize::from(n));
    }
    builder.build()
}

/// Prints `error: …` on stderr (red on a terminal) and returns the exit code.
fn fail(message: &str, code: u8, color: bool) -> ExitCode {
    if color {
        logging::to_stderr(format_args!("\x1b[1;31merror:\x1b[0m {message}\n"));
    } else {
        logging::to_stderr(format_args!("error: {message}\n"));
    }
    ExitCode::from(code)
}

/// Whether to colour stderr: `--color`, then NO_COLOR, then "is it a terminal".
fn use_color(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && std::io::stderr().is_terminal()
        }
    }
}
