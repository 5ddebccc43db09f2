//! `sockit bench` as a throughput test (iperf3's job): which flags make a run one, their
//! checks, and printing its interval lines, NDJSON and final report.
//!
//! A run is a throughput test when it asks for something only a throughput test does:
//! `--reverse`, `--bidir`, `--interval` or `--latency` on a stream endpoint (TCP, TLS,
//! Unix), `--bitrate` on a datagram endpoint. Plain `--pattern stream` keeps its own
//! report and still runs against `serve --discard`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::args::BenchArgs;
use super::config::{client_target, client_tls};
use crate::bench::Pattern;
use crate::bench::throughput::{self, Direction, ThroughputOptions};
use crate::bench::throughput_report::{IntervalRecord, ThroughputReport};
use crate::bench::udp_stream::{self, UdpStreamOptions};
use crate::endpoint::Delivery;
use crate::error::{Error, Result};
use crate::transport::ConnectOptions;
use tokio_util::sync::CancellationToken;

/// Default write (and read) size of a TCP throughput stream: 128 KiB.
const STREAM_CHUNK: usize = 128 * 1024;

/// Default datagram size of a UDP throughput flow: fits a 1,500-byte MTU.
const DATAGRAM_SIZE: usize = 1400;

/// A throughput test, ready to run.
#[derive(Debug, Clone)]
pub enum ThroughputTest {
    /// TCP, TLS or Unix streams.
    Streams(ThroughputOptions),
    /// UDP (or Unix datagram) flows at a set bitrate.
    Datagrams(UdpStreamOptions),
}

impl BenchArgs {
    /// Whether any flag makes this run a throughput test.
    fn asks_for_throughput(&self) -> bool {
        self.reverse
            || self.bidir
            || self.interval.is_some()
            || self.latency
            || self.bitrate.is_some()
    }

    /// The throughput test these arguments ask for, if they ask for one.
    ///
    /// # Errors
    /// [`Error::Usage`] for flags that do not fit together or bad values (one line, exit 2).
    pub fn throughput_test(&self) -> Result<Option<ThroughputTest>> {
        if !self.asks_for_throughput() {
            return Ok(None);
        }
        let endpoint = client_target(&self.endpoint, self.port.as_deref())?;
        let connect = ConnectOptions {
            tls: client_tls(&endpoint, &self.tls, self.client_cert.files())?,
            socket: self.socket.checked_for(&endpoint)?,
            proxies: self.proxy.stream_chain(&endpoint)?,
            ..ConnectOptions::new(self.timeout)
        };
        let streams = usize::try_from(self.connections.unwrap_or(1))
            .map_err(|_| Error::Usage("--connections is too large".into()))?;
        if self.duration.is_zero() || self.duration > crate::bench::MAX_DURATION {
            return Err(Error::Usage(
                "--duration must be more than 0 and at most 24h".into(),
            ));
        }
        if self.interval.is_some_and(|i| i.is_zero()) {
            return Err(Error::Usage(
                "--interval must be more than 0, such as 1s or 500ms".into(),
            ));
        }
        let size = self.size.map(|s| usize::try_from(s).unwrap_or(usize::MAX));
        match endpoint.delivery() {
            Delivery::Stream => {
                if let Some(pattern) = self.pattern.filter(|p| *p != Pattern::Stream) {
                    return Err(Error::Usage(format!(
                        "--reverse, --bidir, --interval and --latency run a throughput test \
                         (--pattern stream), not --pattern {pattern}"
                    )));
                }
                if self.bitrate.is_some() {
                    return Err(Error::Usage(
                        "--bitrate paces UDP flows; a stream test runs as fast as the path \
                         allows (use a udp:// endpoint)"
                            .into(),
                    ));
                }
                let direction = match (self.reverse, self.bidir) {
                    (_, true) => Direction::Both,
                    (true, false) => Direction::Down,
                    (false, false) => Direction::Up,
                };
                Ok(Some(ThroughputTest::Streams(ThroughputOptions {
                    endpoint,
                    streams,
                    direction,
                    duration: self.duration,
                    interval: self.interval,
                    chunk: size.unwrap_or(STREAM_CHUNK),
                    latency: self.latency,
                    connect,
                })))
            }
            Delivery::Datagram => {
                let Some(text) = &self.bitrate else {
                    return Err(Error::Usage(
                        "a UDP throughput test needs --bitrate, such as 100M or 1G".into(),
                    ));
                };
                if self.reverse || self.bidir || self.latency {
                    return Err(Error::Usage(
                        "--reverse, --bidir and --latency apply to stream endpoints; a UDP \
                         test sends from the client at --bitrate"
                            .into(),
                    ));
                }
                let options = UdpStreamOptions {
                    endpoint,
                    streams,
                    bitrate: udp_stream::parse_bitrate(text)?,
                    size: size.unwrap_or(DATAGRAM_SIZE),
                    duration: self.duration,
                    interval: self.interval,
                    connect,
                };
                options.validate()?;
                Ok(Some(ThroughputTest::Datagrams(options)))
            }
        }
    }
}

/// Runs a throughput test: interval lines (text on stdout, or NDJSON to `json`) while it
/// runs, then the final report.
///
/// # Errors
/// The test could not start (refused, not a `--perf` server); a stream or flow failed
/// mid-test (after the report is printed, so no lost byte hides behind exit 0).
pub async fn run(test: ThroughputTest, json: Option<PathBuf>) -> Result<()> {
    let mut output = Output::open(json.as_deref())?;
    let stop = CancellationToken::new();
    let interrupt = tokio::spawn(stop_on_interrupt(stop.clone()));
    let outcome = tokio::task::spawn_blocking(move || {
        let result = match &test {
            ThroughputTest::Streams(options) => {
                throughput::run_blocking(options, &stop, |record| output.interval(record))
            }
            ThroughputTest::Datagrams(options) => {
                udp_stream::run_blocking(options, &stop, |record| output.interval(record))
            }
        };
        result.map(|(report, error)| {
            output.end(&report);
            (error, output.failure.take())
        })
    })
    .await
    .map_err(|e| Error::Io {
        doing: "running the throughput test".into(),
        source: std::io::Error::other(e.to_string()),
    });
    interrupt.abort();
    let outcome = outcome?;
    let (stream_error, write_error) = outcome?;
    if let Some(e) = write_error {
        return Err(e);
    }
    match stream_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Cancels `stop` on Ctrl-C, so the test ends early with a report of what it measured.
async fn stop_on_interrupt(stop: CancellationToken) {
    if tokio::signal::ctrl_c().await.is_ok() {
        tracing::warn!("interrupted: ending the test and reporting what was measured so far");
        stop.cancel();
    }
}

/// Where the lines go: text to stdout (stderr when the NDJSON goes to stdout), NDJSON
/// to a file or stdout.
struct Output {
    /// The NDJSON sink, if any.
    json: Option<Box<dyn Write + Send>>,
    /// Whether the text goes to stderr (the NDJSON has stdout).
    text_to_stderr: bool,
    /// The first failure to write, reported at the end.
    failure: Option<Error>,
}

impl Output {
    fn open(json: Option<&Path>) -> Result<Output> {
        let (json, text_to_stderr): (Option<Box<dyn Write + Send>>, bool) = match json {
            None => (None, false),
            Some(path) if path == Path::new("-") => (Some(Box::new(std::io::stdout())), true),
            Some(path) => {
                let file = std::fs::File::create(path).map_err(|source| Error::Io {
                    doing: format!("creating the JSON file {}", path.display()),
                    source,
                })?;
                (Some(Box::new(std::io::LineWriter::new(file))), false)
            }
        };
        Ok(Output {
            json,
            text_to_stderr,
            failure: None,
        })
    }

    fn interval(&mut self, record: &IntervalRecord) {
        self.text(&record.to_text());
        self.ndjson(&serde_json::to_string(record).unwrap_or_default());
    }

    fn end(&mut self, report: &ThroughputReport) {
        self.text(&report.to_text());
        self.ndjson(&serde_json::to_string(report).unwrap_or_default());
    }

    fn text(&mut self, text: &str) {
        if self.text_to_stderr {
            crate::obs::logging::to_stderr(format_args!("{text}"));
            return;
        }
        let mut stdout = std::io::stdout().lock();
        let written = stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush());
        self.note(written, "writing the report");
    }

    fn ndjson(&mut self, line: &str) {
        let Some(sink) = self.json.as_mut() else {
            return;
        };
        let written = sink
            .write_all(line.as_bytes())
            .and_then(|()| sink.write_all(b"\n"))
            .and_then(|()| sink.flush());
        self.note(written, "writing the JSON lines");
    }

    /// Keeps the first write failure; a closed pipe (`| head`) is not one.
    fn note(&mut self, written: std::io::Result<()>, doing: &str) {
        if let Err(source) = written
            && source.kind() != std::io::ErrorKind::BrokenPipe
            && self.failure.is_none()
        {
            self.failure = Some(Error::Io {
                doing: doing.into(),
                source,
            });
        }
    }
}
