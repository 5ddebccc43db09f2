//! `sockit bench` and `sockit bench merge` on the command line: arguments → typed
//! [`BenchOptions`] (the terminal check for the progress bar happens here, not in the
//! library), then the run, the table on stdout, the JSON file, and the exit status.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

use super::args::{BenchArgs, BenchCommand, GlobalArgs, MergeArgs};
use super::config::{client_target, client_tls};
use crate::bench::driver::ReplyLength;
use crate::bench::{self, BenchOptions, Load, Pattern, ProgressDisplay, Report};
use crate::error::{Error, Result};

/// A validated `bench` command.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The run.
    pub options: BenchOptions,
    /// Where to write the JSON report, if anywhere ("-" is stdout).
    pub json: Option<PathBuf>,
}

impl BenchArgs {
    /// Parses the endpoint and settles every default.
    ///
    /// # Errors
    /// [`Error::Endpoint`] for a malformed endpoint, [`Error::Usage`] for values that do
    /// not fit together.
    pub fn into_config(self) -> Result<BenchConfig> {
        let endpoint = client_target(&self.endpoint, self.port.as_deref())?;
        let tls = client_tls(&endpoint, &self.tls)?;
        let mut options = BenchOptions::new(endpoint, self.pattern);
        options.tls = tls;
        if let Some(size) = self.size {
            options = options.with_size(to_usize(size, "--size")?);
        }
        if let Some(reply_size) = self.reply_size {
            if options.pattern == Pattern::Stream {
                return Err(Error::Usage(
                    "--reply-size does not apply to the stream pattern, which reads nothing".into(),
                ));
            }
            options.reply = ReplyLength::Bytes(to_usize(reply_size, "--reply-size")?);
        }
        options.connections = to_usize(self.connections, "--connections")?;
        options.duration = self.duration;
        options.warmup = self.warmup;
        options.timeout = self.timeout;
        if let Some(rate) = self.rate {
            options.load = Load::Open { rate };
        }
        let json_on_stdout = self.json.as_deref() == Some(Path::new("-"));
        options.progress = if std::io::stdout().is_terminal() && !json_on_stdout {
            ProgressDisplay::Bar
        } else {
            ProgressDisplay::Hidden
        };
        options.validate()?;
        Ok(BenchConfig {
            options,
            json: self.json,
        })
    }
}

/// A count from the command line as a `usize`.
fn to_usize(value: u64, flag: &str) -> Result<usize> {
    usize::try_from(value).map_err(|_| Error::Usage(format!("{flag} is too large")))
}

/// Runs `sockit bench …` or `sockit bench merge …`.
///
/// # Errors
/// Usage errors; a JSON file that cannot be written; and, when no exchange succeeded, the
/// run's first failure (so the exit status says "refused", "timed out", …).
pub async fn run(args: BenchArgs, global: &GlobalArgs) -> Result<()> {
    if let Some(BenchCommand::Merge(merge_args)) = args.command {
        return merge(merge_args);
    }
    let mut config = args.into_config()?;
    if let Some(threads) = global.threads {
        config.options.threads = usize::from(threads);
    }
    let outcome = bench::run(&config.options).await?;
    publish(&outcome.report, config.json.as_deref())?;
    let warnings = [
        outcome.report.rate_warning(),
        outcome.report.loadgen_warning(),
    ];
    for warning in warnings.into_iter().flatten() {
        tracing::warn!("{warning}");
    }
    if outcome.report.exchanges > 0 {
        if let Some(error) = &outcome.first_error {
            tracing::warn!("first failure: {error}");
        }
        return Ok(());
    }
    Err(outcome
        .first_error
        .unwrap_or_else(|| Error::NothingMeasured {
            measured: humantime::format_duration(config.options.duration).to_string(),
            hint: format!(
                "every request was still waiting at the end; check the server, or raise \
             --duration (and --timeout, now {})",
                humantime::format_duration(config.options.timeout)
            ),
        }))
}

/// `sockit bench merge`: read the reports, add them up, print (and maybe write) the sum.
fn merge(args: MergeArgs) -> Result<()> {
    let mut reports = Vec::with_capacity(args.files.len());
    for path in &args.files {
        reports.push(read_report(path)?);
    }
    let merged = Report::merge(&reports).map_err(|e| Error::BenchReport {
        path: args
            .files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        reason: e.to_string(),
    })?;
    publish(&merged, args.json.as_deref())
}

/// Reads one report file.
fn read_report(path: &Path) -> Result<Report> {
    let bad = |reason: String| Error::BenchReport {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        bad(format!(
            "cannot read it ({e}); give a file written by `sockit bench --json`"
        ))
    })?;
    Report::from_json(&text).map_err(|e| bad(e.to_string()))
}

/// Prints the table (stdout, or stderr when the JSON goes to stdout) and writes the JSON.
fn publish(report: &Report, json: Option<&Path>) -> Result<()> {
    let table = report.to_text();
    match json {
        Some(path) if path == Path::new("-") => {
            crate::obs::logging::to_stderr(format_args!("{table}"));
            write_stdout(&format!("{}\n", report.to_json()))
        }
        Some(path) => {
            write_stdout(&table)?;
            std::fs::write(path, format!("{}\n", report.to_json())).map_err(|source| Error::Io {
                doing: format!("writing the JSON report to {}", path.display()),
                source,
            })
        }
        None => write_stdout(&table),
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn write_stdout(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Io {
            doing: "writing the report".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::args::{Cli, Command};
    use clap::Parser;

    fn bench(args: &[&str]) -> Result<BenchConfig> {
        let mut argv = vec!["sockit", "bench"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).map(|cli| cli.command) {
            Ok(Command::Bench(bench)) => bench.into_config(),
            other => panic!("not a bench command: {other:?}"),
        }
    }

    #[test]
    fn flags_become_options() -> Result<()> {
        let config = bench(&[
            "udp://[::1]:9000",
            "-c",
            "32",
            "-d",
            "3s",
            "--warmup",
            "0",
            "--rate",
            "1000",
            "--size",
            "100",
            "--reply-size",
            "16",
            "--json",
            "out.json",
        ])?;
        let o = &config.options;
        assert_eq!(o.pattern, Pattern::Udp);
        assert_eq!(o.connections, 32);
        assert_eq!(o.duration, std::time::Duration::from_secs(3));
        assert!(o.warmup.is_zero());
        assert_eq!(o.load, Load::Open { rate: 1000.0 });
        assert_eq!(o.request.len(), 100);
        assert_eq!(o.reply, ReplyLength::Bytes(16));
        assert_eq!(config.json, Some(PathBuf::from("out.json")));
        Ok(())
    }

    #[test]
    fn merge_is_a_subcommand_and_needs_files() {
        let cli = Cli::try_parse_from(["sockit", "bench", "merge", "a.json", "b.json"]);
        match cli.map(|c| c.command) {
            Ok(Command::Bench(BenchArgs {
                command: Some(BenchCommand::Merge(m)),
                ..
            })) => assert_eq!(m.files.len(), 2),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["sockit", "bench", "merge"]).is_err());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        assert!(Cli::try_parse_from(["sockit", "bench", "--rate", "0"]).is_err());
        assert!(Cli::try_parse_from(["sockit", "bench", "-c", "0"]).is_err());
        let stream_rate = bench(&["-p", "stream", "--rate", "5"]).err();
        assert!(matches!(stream_rate, Some(Error::Usage(_))));
        let wrong_kind = bench(&["udp", "-p", "echo"]).err();
        assert!(matches!(wrong_kind, Some(Error::Usage(_))));
    }
}
