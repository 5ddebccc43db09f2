//! `sockit bench` and `sockit bench merge` on the command line: arguments → typed
//! [`BenchOptions`] (the terminal check for the progress bar happens here, not in the
//! library), then the run, the table on stdout, the JSON file, and the exit status.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::args::{BenchArgs, BenchCommand, GlobalArgs, MergeArgs};
use super::config::{client_target, client_tls};
use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::values::parse_duration;
use crate::bench::driver::{ReplyEnd, ReplyMatcher};
use crate::bench::histogram::LatencyHistogram;
use crate::bench::hlog::IntervalLog;
use crate::bench::intervals::{LatencyLog, MIN_INTERVAL};
use crate::bench::plot::PlotFile;
use crate::bench::report::{EncodedHistogram, LatencyMerge};
use crate::bench::{self, BenchOptions, Load, Outcome, Pattern, ProgressDisplay, Report};
use crate::error::{Error, Result};

/// A validated `bench` command.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The run.
    pub options: BenchOptions,
    /// Where to write the JSON report, if anywhere ("-" is stdout).
    pub json: Option<PathBuf>,
    /// Where to draw the plot (`--plot`), if anywhere.
    pub plot: Option<PathBuf>,
}

impl BenchArgs {
    /// Parses the endpoint and settles every default.
    ///
    /// # Errors
    /// [`Error::Endpoint`] for a malformed endpoint, [`Error::Usage`] for values that do
    /// not fit together.
    pub fn into_config(self) -> Result<BenchConfig> {
        let endpoint = client_target(&self.endpoint, self.port.as_deref())?;
        let tls = client_tls(&endpoint, &self.tls, self.client_cert.files())?;
        let mut options = BenchOptions::new(endpoint, self.pattern);
        options.tls = tls;
        options.socket = self.socket.checked_for(&options.endpoint)?;
        options.proxies = self.proxy.stream_chain(&options.endpoint)?;
        if let Some(size) = self.size {
            options = options.with_size(to_usize(size, "--size")?);
        }
        self.set_messages(&mut options)?;
        self.set_reply(&mut options)?;
        options.connections = to_usize(self.connections.unwrap_or(10), "--connections")?;
        options.duration = self.duration;
        options.warmup = self.warmup;
        options.timeout = self.timeout;
        if let Some(text) = &self.rate {
            let rate = positive_rate(text, "--rate", "requests")?;
            options.load = Load::Open { rate };
        }
        if let Some(text) = &self.rate_per_conn {
            let per_connection = positive_rate(text, "--rate-per-conn", "requests")?;
            options.load = Load::Open {
                rate: per_connection * options.connections as f64,
            };
        }
        if let Some(text) = &self.connect_rate {
            let text = text.trim();
            let number = text.strip_suffix("/s").unwrap_or(text);
            options.connect_rate = Some(positive_rate(number, "--connect-rate", "connections")?);
        }
        if let Some(text) = &self.ramp_up {
            options.ramp_up = parse_duration(text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "--ramp-up {text:?}: write a duration above 0, such as 2s or 500ms"
                    ))
                })?;
        }
        // Checked even without --hlog or --plot, so a bad value never passes unseen.
        if self.hlog_interval < MIN_INTERVAL {
            return Err(Error::Usage(format!(
                "--hlog-interval must be at least {}",
                humantime::format_duration(MIN_INTERVAL)
            )));
        }
        refuse_stdout_path(self.hlog.as_deref(), "--hlog")?;
        refuse_stdout_path(self.plot.as_deref(), "--plot")?;
        if self.hlog.is_some() || self.plot.is_some() {
            options.latency_log = Some(LatencyLog {
                every: self.hlog_interval,
                hlog: self.hlog.clone(),
            });
        }
        if let Some(text) = &self.start_at {
            options.start_at = Some(bench::start::parse_start_time(text)?);
        }
        options.engine = self.engine;
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
            plot: self.plot,
        })
    }
}

impl BenchArgs {
    /// `--message`, `--message-file` (with `--message-delimiter`) and `--first-message`.
    fn set_messages(&self, options: &mut BenchOptions) -> Result<()> {
        let mut messages = Vec::new();
        if let Some(text) = &self.message {
            messages.push(non_empty(unescape(text, "--message")?, "--message")?);
        }
        if let Some(path) = &self.message_file {
            let content = std::fs::read(path).map_err(|e| {
                Error::Usage(format!(
                    "cannot read --message-file {}: {}",
                    path.display(),
                    e
                ))
            })?;
            messages = split_messages(
                Bytes::from(content),
                self.message_delimiter.as_deref(),
                path,
            )?;
        }
        if !messages.is_empty() {
            options.messages.each = messages.into();
        }
        if let Some(text) = &self.first_message {
            let first = non_empty(unescape(text, "--first-message")?, "--first-message")?;
            options.messages.first = Some(first);
        }
        Ok(())
    }

    /// `--reply-size`, `--reply-until` and `--reply-regex`.
    fn set_reply(&self, options: &mut BenchOptions) -> Result<()> {
        let any =
            self.reply_size.is_some() || self.reply_until.is_some() || self.reply_regex.is_some();
        if any && options.pattern == Pattern::Stream {
            return Err(Error::Usage(
                "--reply-size, --reply-until and --reply-regex do not apply to the stream \
                 pattern, which reads nothing"
                    .into(),
            ));
        }
        if let Some(reply_size) = self.reply_size {
            options.reply.end = ReplyEnd::Bytes(to_usize(reply_size, "--reply-size")?);
        }
        if let Some(text) = &self.reply_until {
            let delimiter = non_empty(unescape(text, "--reply-until")?, "--reply-until")?;
            options.reply.end = ReplyEnd::Until(delimiter);
        }
        if let Some(text) = &self.reply_regex {
            if text.is_empty() {
                return Err(Error::Usage(
                    "--reply-regex is empty; give a pattern the replies must match".into(),
                ));
            }
            let regex = regex::bytes::Regex::new(text).map_err(|e| {
                Error::Usage(format!(
                    "--reply-regex {text:?} is not a regex: {}",
                    regex_words(&e)
                ))
            })?;
            if self.reply_size.is_none() && self.reply_until.is_none() {
                refuse_empty_match_as_end(&regex)?;
                options.reply.end = ReplyEnd::Match;
            }
            options.reply = ReplyMatcher {
                end: options.reply.end.clone(),
                regex: Some(regex),
            };
        }
        Ok(())
    }
}

/// Refuses a `--reply-regex` that is to end the replies but matches no bytes at all
/// (`x*`, `^`): it would end every reply before anything arrived, and count exchanges
/// the server never answered.
fn refuse_empty_match_as_end(regex: &regex::bytes::Regex) -> Result<()> {
    if !regex.is_match(b"") {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "--reply-regex {:?} matches an empty reply, so it cannot say where a reply ends; \
         make it need at least one byte (such as \"x+\" for \"x*\"), or end the replies with \
         --reply-until or --reply-size",
        regex.as_str()
    )))
}

/// The last line of a regex error ("unclosed group"), without its diagram.
fn regex_words(error: &regex::Error) -> String {
    let text = error.to_string();
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map_or(text.clone(), |l| {
            l.trim().trim_start_matches("error: ").to_string()
        })
}

/// A rate from the command line: a finite number above 0.
fn positive_rate(text: &str, flag: &str, unit: &str) -> Result<f64> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err(Error::Usage(format!(
            "{flag} {text:?}: write a number of {unit} per second above 0, such as 100 or 2.5"
        ))),
    }
}

/// Refuses an empty message.
fn non_empty(message: Bytes, flag: &str) -> Result<Bytes> {
    if message.is_empty() {
        return Err(Error::Usage(format!(
            "{flag} is empty; give at least one byte"
        )));
    }
    Ok(message)
}

/// The messages of a `--message-file`: the whole file, or its pieces between
/// delimiters (one empty piece after a final delimiter is ignored; others are refused).
fn split_messages(content: Bytes, delimiter: Option<&str>, path: &Path) -> Result<Vec<Bytes>> {
    let empty = |which: String| {
        Error::Usage(format!(
            "--message-file {}: {which} is empty; give at least one byte",
            path.display()
        ))
    };
    let Some(delimiter) = delimiter else {
        if content.is_empty() {
            return Err(empty("the file".into()));
        }
        return Ok(vec![content]);
    };
    let delimiter = non_empty(
        unescape(delimiter, "--message-delimiter")?,
        "--message-delimiter",
    )?;
    let mut pieces = Vec::new();
    let mut from = 0;
    for at in memchr::memmem::find_iter(&content, &delimiter[..]) {
        if at < from {
            continue;
        }
        pieces.push(content.slice(from..at));
        from = at + delimiter.len();
    }
    if from < content.len() {
        pieces.push(content.slice(from..));
    }
    if pieces.is_empty() {
        return Err(empty("the file".into()));
    }
    if let Some(n) = pieces.iter().position(Bytes::is_empty) {
        return Err(empty(format!("message {} of {}", n + 1, pieces.len())));
    }
    Ok(pieces)
}

/// Decodes the escapes `\n`, `\r`, `\t`, `\\` and `\xNN` in a message given on the command
/// line; any other backslash sequence is refused, so a typo does not go on the wire.
///
/// # Errors
/// [`Error::Usage`] naming `flag` and the bad sequence.
pub fn unescape(text: &str, flag: &str) -> Result<Bytes> {
    let bad = |what: String| Error::Usage(format!("{flag} {text:?}: {what}"));
    let mut out = Vec::with_capacity(text.len());
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(b'r') => out.push(b'\r'),
            Some(b't') => out.push(b'\t'),
            Some(b'\\') => out.push(b'\\'),
            Some(b'x') => {
                let digits = [bytes.next(), bytes.next()];
                let value = match digits {
                    [Some(h), Some(l)] => std::str::from_utf8(&[h, l])
                        .ok()
                        .and_then(|hex| u8::from_str_radix(hex, 16).ok()),
                    _ => None,
                };
                out.push(value.ok_or_else(|| bad("\\x needs two hex digits, as in \\x0a".into()))?);
            }
            Some(other) => {
                return Err(bad(format!(
                    "unknown escape \\{}; use \\n \\r \\t \\\\ or \\xNN",
                    other as char
                )));
            }
            None => return Err(bad("ends with a lone backslash; write \\\\ for one".into())),
        }
    }
    Ok(Bytes::from(out))
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
    if let Some(test) = args.throughput_test()? {
        return super::throughput::run(test, args.json).await;
    }
    let mut config = args.into_config()?;
    if let Some(threads) = global.threads {
        config.options.threads = usize::from(threads);
    }
    if let Some(path) = config.json.as_deref() {
        refuse_unwritable_json(path)?;
    }
    let plot = config.plot.as_deref().map(PlotFile::create).transpose()?;
    let stop = CancellationToken::new();
    let interrupt = tokio::spawn(stop_on_signal(stop_signals()?, stop.clone()));
    let outcome = bench::run_until(&config.options, stop).await;
    interrupt.abort();
    let mut outcome = outcome?;
    publish(&outcome.report, config.json.as_deref())?;
    write_plot(&outcome, plot)?;
    if let Some(error) = outcome.hlog_error.take() {
        return Err(error);
    }
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
    if stopped_before_measuring(&outcome.report) {
        if let Some(error) = &outcome.first_error {
            tracing::warn!("first failure: {error}");
        }
        return Err(Error::InterruptedInWarmup {
            warmup: humantime::format_duration(config.options.warmup).to_string(),
        });
    }
    Err(outcome
        .first_error
        .unwrap_or_else(|| nothing_measured(&outcome.report, &config.options)))
}

/// Why a run that met no failure measured nothing, over the span it measured: all of
/// `--duration`, or the part before an interrupt.
fn nothing_measured(report: &Report, options: &BenchOptions) -> Error {
    let timeout = humantime::format_duration(options.timeout);
    if report.partial {
        let measured = Duration::from_millis((report.duration_s * 1e3).round() as u64);
        return Error::NothingMeasured {
            measured: format!(
                "{} before the interrupt",
                humantime::format_duration(measured)
            ),
            hint: format!(
                "every request was still waiting when the run was stopped; check the server, \
                 or let the run go on longer (--timeout is {timeout})"
            ),
        };
    }
    Error::NothingMeasured {
        measured: humantime::format_duration(options.duration).to_string(),
        hint: format!(
            "every request was still waiting at the end; check the server, or raise \
             --duration (and --timeout, now {timeout})"
        ),
    }
}

/// Whether the run was interrupted before its measured span began (in the warm-up, or
/// while waiting for `--start-at`).
fn stopped_before_measuring(report: &Report) -> bool {
    report.partial && report.duration_s == 0.0
}

/// Draws the plot, if asked for.
fn write_plot(outcome: &Outcome, plot: Option<PlotFile>) -> Result<()> {
    if let Some(plot) = plot {
        let latency = outcome.report.histogram.decode().map_err(|e| Error::Io {
            doing: "drawing the plot".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let title = format!(
            "sockit bench {} ({}, {})",
            outcome.report.target,
            outcome.report.pattern,
            outcome.report.connections_in_words()
        );
        plot.write(&title, &latency, &outcome.intervals)?;
    }
    Ok(())
}

/// The signals that end a run early with a partial report: Ctrl-C (SIGINT), and SIGTERM
/// and SIGHUP (`timeout`, a job runner, a closed terminal), which stop `serve` too.
struct StopSignals {
    /// SIGINT.
    interrupt: tokio::signal::unix::Signal,
    /// SIGTERM.
    terminate: tokio::signal::unix::Signal,
    /// SIGHUP.
    hangup: tokio::signal::unix::Signal,
}

/// Listens for the [`StopSignals`] from now on, so one that arrives while the run starts
/// up already ends it with a report, not the default abrupt exit.
///
/// # Errors
/// [`Error::Io`] if a signal handler cannot be installed.
fn stop_signals() -> Result<StopSignals> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind| {
        signal(kind).map_err(|source| Error::Io {
            doing: "listening for Ctrl-C and SIGTERM".into(),
            source,
        })
    };
    Ok(StopSignals {
        interrupt: listen(SignalKind::interrupt())?,
        terminate: listen(SignalKind::terminate())?,
        hangup: listen(SignalKind::hangup())?,
    })
}

/// Cancels `stop` on the first of the [`StopSignals`], so the run ends early with a
/// partial report.
async fn stop_on_signal(mut signals: StopSignals, stop: CancellationToken) {
    let name = tokio::select! {
        Some(()) = signals.interrupt.recv() => "interrupted",
        Some(()) = signals.terminate.recv() => "SIGTERM received",
        Some(()) = signals.hangup.recv() => "SIGHUP received",
        else => return,
    };
    tracing::warn!("{name}: stopping the run and reporting what was measured so far");
    stop.cancel();
}

/// `sockit bench merge`: read the reports (or interval logs), add them up, print (and
/// maybe write) the sum.
fn merge(args: MergeArgs) -> Result<()> {
    refuse_stdout_path(args.plot.as_deref(), "--plot")?;
    if let Some(path) = args.json.as_deref() {
        refuse_unwritable_json(path)?;
    }
    let mut texts = Vec::with_capacity(args.files.len());
    for path in &args.files {
        texts.push(read_merge_input(path)?);
    }
    let logs_given = texts.iter().filter(|t| IntervalLog::is_meant(t)).count();
    if logs_given == texts.len() {
        let mut logs = Vec::with_capacity(texts.len());
        for (path, text) in args.files.iter().zip(&texts) {
            logs.push(IntervalLog::parse(text).map_err(|e| unusable(path, &e))?);
        }
        return merge_logs(&args, &logs);
    }
    if logs_given > 0 {
        return Err(Error::BenchReport {
            path: joined(&args.files),
            reason: "cannot merge JSON reports with interval logs; merge the JSON reports, \
                     or the interval logs of the same runs"
                .into(),
        });
    }
    let mut reports = Vec::with_capacity(texts.len());
    for (path, text) in args.files.iter().zip(&texts) {
        reports.push(
            Report::from_json(&String::from_utf8_lossy(text)).map_err(|e| unusable(path, &e))?,
        );
    }
    let merged = Report::merge(&reports).map_err(|e| Error::BenchReport {
        path: joined(&args.files),
        reason: e.to_string(),
    })?;
    if let Some(path) = &args.plot {
        let mut runs = Vec::with_capacity(reports.len());
        for (file, report) in args.files.iter().zip(&reports) {
            runs.push((file.display().to_string(), decode(file, &report.histogram)?));
        }
        let title = format!(
            "sockit bench merge: {} runs of {} against {}",
            merged.runs, merged.pattern, merged.target
        );
        PlotFile::create(path)?.write_comparison(
            &title,
            &runs,
            &decode(path, &merged.histogram)?,
        )?;
    }
    publish(&merged, args.json.as_deref())
}

/// A file `bench merge` cannot use, and why.
fn unusable(path: &Path, error: &impl std::fmt::Display) -> Error {
    Error::BenchReport {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

/// `bench merge` of interval logs: their histograms added up, the latency printed (and
/// maybe written as JSON and plotted).
fn merge_logs(args: &MergeArgs, logs: &[IntervalLog]) -> Result<()> {
    let summed: Vec<_> = logs.iter().map(|l| (&l.latency, l.intervals)).collect();
    let merged = LatencyMerge::of_logs(&summed);
    if let Some(path) = &args.plot {
        let runs: Vec<_> = args
            .files
            .iter()
            .zip(logs)
            .map(|(file, log)| (file.display().to_string(), log.latency.clone()))
            .collect();
        let title = format!("sockit bench merge: {} interval logs", merged.logs);
        PlotFile::create(path)?.write_comparison(
            &title,
            &runs,
            &decode(path, &merged.histogram)?,
        )?;
    }
    publish_text_and_json(&merged.to_text(), &merged.to_json(), args.json.as_deref())
}

/// The files' names, comma-separated, for an error about all of them.
fn joined(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Decodes a report's histogram; a failure names the file.
fn decode(file: &Path, histogram: &EncodedHistogram) -> Result<LatencyHistogram> {
    histogram.decode().map_err(|e| Error::BenchReport {
        path: file.display().to_string(),
        reason: e.to_string(),
    })
}

/// Reads one file given to `bench merge`: a JSON report or an interval log.
fn read_merge_input(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::BenchReport {
        path: path.display().to_string(),
        reason: format!(
            "cannot read it ({e}); give a file written by `sockit bench --json` or `--hlog`"
        ),
    })
}

/// Refuses "-" for an option that writes only to a file (`--hlog`, `--plot`): with
/// `--json`, "-" is stdout, so it is not silently taken as a file named "-".
fn refuse_stdout_path(path: Option<&Path>, flag: &str) -> Result<()> {
    if path != Some(Path::new("-")) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{flag} writes to a file, not to stdout (\"-\" is stdout only for --json); give a \
         file name, such as ./- for a file named \"-\""
    )))
}

/// Refuses a `--json` file that cannot be written, before the run rather than after it
/// (stdout, "-", always can be). Nothing is left behind: a file that was not there is
/// created to try, then removed, so a run refused later leaves no empty report.
///
/// # Errors
/// [`Error::Usage`] naming the file and why.
fn refuse_unwritable_json(path: &Path) -> Result<()> {
    if path == Path::new("-") {
        return Ok(());
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true);
    let created = !path.exists();
    if created {
        open.create_new(true);
    }
    open.open(path)
        .map_err(|e| Error::Usage(format!("cannot write --json {}: {e}", path.display())))?;
    if created {
        let _ = std::fs::remove_file(path);
    }
    Ok(())
}

/// Prints the table (stdout, or stderr when the JSON goes to stdout) and writes the JSON.
fn publish(report: &Report, json: Option<&Path>) -> Result<()> {
    publish_text_and_json(&report.to_text(), &report.to_json(), json)
}

/// Prints `table` (stdout, or stderr when the JSON goes to stdout) and writes `json`.
fn publish_text_and_json(table: &str, json_text: &str, json: Option<&Path>) -> Result<()> {
    match json {
        Some(path) if path == Path::new("-") => {
            crate::obs::logging::to_stderr(format_args!("{table}"));
            write_stdout(&format!("{json_text}\n"))
        }
        Some(path) => {
            write_stdout(table)?;
            std::fs::write(path, format!("{json_text}\n")).map_err(|source| Error::Io {
                doing: format!("writing the JSON report to {}", path.display()),
                source,
            })
        }
        None => write_stdout(table),
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
        assert_eq!(o.messages.longest(), 100);
        assert_eq!(o.reply.end, ReplyEnd::Bytes(16));
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
        assert!(matches!(bench(&["--rate", "0"]), Err(Error::Usage(_))));
        assert!(matches!(bench(&["--rate", "-1"]), Err(Error::Usage(_))));
        assert!(Cli::try_parse_from(["sockit", "bench", "-c", "0"]).is_err());
        let stream_rate = bench(&["-p", "stream", "--rate", "5"]).err();
        assert!(matches!(stream_rate, Some(Error::Usage(_))));
        let wrong_kind = bench(&["udp", "-p", "echo"]).err();
        assert!(matches!(wrong_kind, Some(Error::Usage(_))));
    }

    #[test]
    fn messages_decode_their_escapes_and_refuse_unknown_ones() -> Result<()> {
        assert_eq!(&unescape(r"PING\r\n", "--message")?[..], b"PING\r\n");
        assert_eq!(
            &unescape(r"a\tb\\c\x00\xff", "--message")?[..],
            b"a\tb\\c\x00\xff"
        );
        for bad in [r"\q", r"\x4", r"\xzz", "end\\"] {
            let error = unescape(bad, "--message").err().map(|e| e.to_string());
            assert!(error.is_some_and(|e| e.starts_with("--message")), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn a_message_file_splits_at_its_delimiter() -> Result<()> {
        let path = Path::new("m.txt");
        let file = Bytes::from_static(b"PING\r\n--GET a\r\n--");
        let pieces = split_messages(file.clone(), Some("--"), path)?;
        assert_eq!(pieces, [&b"PING\r\n"[..], &b"GET a\r\n"[..]]);
        assert_eq!(split_messages(file, None, path)?.len(), 1);
        let empty_middle = split_messages(Bytes::from_static(b"a----b"), Some("--"), path);
        assert!(empty_middle.is_err());
        assert!(split_messages(Bytes::new(), None, path).is_err());
        Ok(())
    }

    #[test]
    fn payload_rate_and_ramp_flags_become_options() -> Result<()> {
        let config = bench(&[
            "-p",
            "echo",
            "-c",
            "10",
            "--message",
            r"PING\r\n",
            "--first-message",
            r"HELLO\n",
            "--reply-until",
            r"\r\n",
            "--reply-regex",
            "^\\+PONG",
            "--rate-per-conn",
            "100",
            "--connect-rate",
            "50/s",
            "--ramp-up",
            "2s",
        ])?;
        let o = &config.options;
        assert_eq!(&o.messages.each[0][..], b"PING\r\n");
        assert_eq!(o.messages.first.as_deref(), Some(&b"HELLO\n"[..]));
        assert_eq!(o.reply.end, ReplyEnd::Until(Bytes::from_static(b"\r\n")));
        assert!(o.reply.regex.is_some());
        assert_eq!(o.load, Load::Open { rate: 1000.0 });
        assert_eq!(o.connect_rate, Some(50.0));
        assert_eq!(o.ramp_up, std::time::Duration::from_secs(2));
        let alone = bench(&["-p", "echo", "--reply-regex", "x"])?;
        assert_eq!(alone.options.reply.end, ReplyEnd::Match);
        Ok(())
    }

    #[test]
    fn bad_payload_and_rate_values_are_one_line_usage_errors() {
        for args in [
            &["--message", ""][..],
            &["--reply-regex", "("],
            &["--rate-per-conn", "0"],
            &["--rate-per-conn", "-5"],
            &["--connect-rate", "0/s"],
            &["--ramp-up", "0"],
            &["--rate", "10", "--ramp-up", "1h"],
            &["--message-file", "/nonexistent/sockit/messages"],
        ] {
            match bench(args) {
                Err(Error::Usage(words)) => assert!(!words.contains('\n'), "{args:?}: {words}"),
                other => panic!("{args:?}: {other:?}"),
            }
        }
    }
}
