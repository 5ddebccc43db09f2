//! The command line as typed: clap derive structs. "Low args", as ripgrep calls them:
//! values are only parsed and checked here; nothing touches the network or the terminal.
//! [`super::config`] turns them into typed configurations.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::obs::LogFormat;

const ABOUT: &str =
    "A socket toolkit: the note's TCP/UDP hello demo, never blocked, over every transport.";

const LONG_ABOUT: &str = "\
A socket toolkit: the note's TCP/UDP hello demo, never blocked, over every transport.

With no arguments, `sockit serve` and `sockit send` are the note's TCP server and client
on 127.0.0.1:8000, line for line; `sockit serve udp` / `sockit send udp` are its UDP pair.
One async server answers thousands of clients at once: a silent client blocks nobody.";

const MAIN_EXAMPLES: &str = "\
Examples:
  sockit serve                        the note's TCP server on 127.0.0.1:8000
  sockit send                         the note's TCP client: prints the reply
  sockit serve udp                    the note's UDP server
  sockit send udp                     the note's UDP client
  sockit serve tcp://[::1]:9000 --echo
  sockit send unix:/tmp/s.sock 'hi' --count 3

Endpoints:
  tcp://HOST:PORT  udp://HOST:PORT  tls://HOST:PORT  unix:PATH  unixgram:PATH
  unix:@NAME (Linux abstract)  HOST:PORT (TCP)  PORT (TCP on 127.0.0.1)
  tcp | udp (the note's 127.0.0.1:8000); IPv6 in brackets: tcp://[::1]:8000

Exit codes:
  0 ok  1 exchange failed  2 usage  3 host not found  4 refused  5 timeout
  6 cannot listen  7 TLS failure";

const SERVE_EXAMPLES: &str = "\
Examples:
  sockit serve                          the note's server: tcp://127.0.0.1:8000, replies 'hello tcp client'
  sockit serve udp                      the note's UDP server
  sockit serve --close                  close after the first reply, exactly as the note does
  sockit serve tcp://0.0.0.0:9000 --echo --framing line
  sockit serve unix:/tmp/echo.sock --echo
  sockit serve 9000 --reply 'pong' -q   no per-message lines (for load tests)";

const SEND_EXAMPLES: &str = "\
Examples:
  sockit send                           the note's client: sends 'hello tcp server'
  sockit send udp                       the note's UDP client
  sockit send tcp://[::1]:9000 'ping' --count 3
  echo 'hello' | sockit send unix:/tmp/echo.sock - --framing line
  sockit send localhost:9000 hi --timeout 2s";

const BENCH_EXAMPLES: &str = "\
Examples:
  sockit bench                            the note's exchange against 127.0.0.1:8000, 10 s
  sockit bench 9000 -p echo -c 50 -d 5s   50 connections ping-ponging 64 bytes
  sockit bench tcp://127.0.0.1:9000 -p echo --rate 20000 -c 50
                                          open loop: 20,000 requests/s on a fixed schedule
  sockit bench udp://127.0.0.1:9000 -c 32 the note's UDP exchange, 32 outstanding, loss counted
  sockit bench unix:/tmp/s.sock -p stream -c 1
                                          Gbit/s into a server that discards (serve --discard)
  sockit bench 9000 -p echo -d 3s --json run.json
  sockit bench merge a.json b.json --json all.json

Patterns:
  hello   connect, send, read the reply, close: exchanges/s and connect+reply latency
  echo    persistent connections, send S bytes, wait for S bytes back: messages/s, round trip
  stream  persistent connections writing S-byte chunks to a server that discards: Gbit/s
  udp     request/reply datagrams, one outstanding per socket; loss = no reply in --timeout

Closed loop (default): each connection sends when its last reply arrives.
Open loop (--rate R): R requests/s in total on a fixed timetable; latency counts from when
each request was due, so a stalled server shows in the percentiles (coordinated omission).
Connections are shared over --threads N threads (default: the cores this process may use,
so `taskset -c 0 sockit bench ...` drives from one core), each with its own runtime.
The report on stdout has one figure per line, including the load generator's own CPU use
(near 100% per thread: it may be the limit, not the server); --json writes every figure
and the HDR histogram itself (lossless, mergeable). Exit status: 0 if any exchange
succeeded, otherwise the first failure's code (4 refused, 5 timeout, ...).";

const MERGE_EXAMPLES: &str = "\
Examples:
  sockit bench merge a.json b.json                 print the combined report
  sockit bench merge host1.json host2.json --json all.json

Throughputs and counts are summed and histograms added (percentiles come from the sum,
never averaged): for runs taken at the same time against one server from several machines.";

/// The whole command line.
#[derive(Debug, Parser)]
#[command(
    name = "sockit",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = MAIN_EXAMPLES,
    propagate_version = true
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options shared by every command.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// No per-connection or per-message lines (the listening line and errors remain).
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// How events are printed on stdout.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Seed)]
    pub log: LogFormat,

    /// Diagnostics shown on stderr: error, warn, info, debug, trace (RUST_LOG overrides).
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    pub log_level: String,

    /// Worker threads [default: one per CPU core].
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    /// When to colour error messages.
    #[arg(long, value_enum, global = true, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

/// Colour on/off, ripgrep style.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour when stderr is a terminal and NO_COLOR is unset.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Listen and answer every message: the note's server, never blocked.
    #[command(after_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// Send a message and print the reply: the note's client.
    #[command(after_help = SEND_EXAMPLES)]
    Send(SendArgs),
    /// Load-test a server: throughput, latency percentiles, errors by kind.
    #[command(after_help = BENCH_EXAMPLES)]
    Bench(BenchArgs),
}

/// `sockit serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen (see `sockit --help` for the forms).
    #[arg(default_value = "tcp", value_name = "ENDPOINT")]
    pub endpoint: String,

    /// Reply with this text to every message [default: the note's "hello tcp client" /
    /// "hello udp client"].
    #[arg(long, value_name = "TEXT", group = "answer")]
    pub reply: Option<String>,

    /// Send every message back unchanged.
    #[arg(long, group = "answer")]
    pub echo: bool,

    /// Send nothing back; only read and count.
    #[arg(long, group = "answer")]
    pub discard: bool,

    /// Close each connection after its first reply, as the note's server does.
    #[arg(long)]
    pub close: bool,

    /// How a stream is cut into messages.
    #[command(flatten)]
    pub framing: FramingArgs,

    /// Most connections served at once; more wait in the kernel backlog.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_conns: Option<u64>,

    /// Close connections silent this long ("0" never).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Time allowed to finish a message once it has started ("0" never).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    pub message_timeout: Duration,

    /// How long Ctrl-C / SIGTERM waits for in-flight exchanges.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub grace: Duration,

    /// listen(2) backlog: connections the kernel queues while we are busy.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub backlog: u32,
}

/// Framing options shared by `serve` and `send`.
#[derive(Debug, Args)]
pub struct FramingArgs {
    /// raw: each read is one message (the note). line: one message per line.
    #[arg(long, value_enum, default_value_t = FramingChoice::Raw)]
    pub framing: FramingChoice,

    /// Bytes per read (the note's recv(1024)).
    #[arg(long, value_name = "BYTES", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=16 * 1024 * 1024))]
    pub buffer: u64,

    /// Longest line accepted with --framing line.
    #[arg(long, value_name = "BYTES", default_value_t = 65536,
          value_parser = clap::value_parser!(u64).range(1..=1024 * 1024 * 1024))]
    pub max_line: u64,
}

/// `--framing` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FramingChoice {
    /// Each read is a message.
    Raw,
    /// Each newline-terminated line is a message.
    Line,
}

/// `sockit send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Where to send (see `sockit --help` for the forms).
    #[arg(default_value = "tcp", value_name = "ENDPOINT")]
    pub endpoint: String,

    /// The message; "-" reads it from stdin [default: the note's "hello tcp server" /
    /// "hello udp server"].
    #[arg(value_name = "MESSAGE")]
    pub message: Option<String>,

    /// Send the message this many times, waiting for each reply.
    #[arg(short = 'n', long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,

    /// Give up connecting or waiting for a reply after this long.
    #[arg(short = 't', long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// How the reply is read.
    #[command(flatten)]
    pub framing: FramingArgs,
}

/// `sockit bench`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct BenchArgs {
    /// `sockit bench merge …` instead of a run.
    #[command(subcommand)]
    pub command: Option<BenchCommand>,

    /// The server to load (see `sockit --help` for the forms).
    #[arg(default_value = "tcp", value_name = "ENDPOINT")]
    pub endpoint: String,

    /// Traffic to send [default: hello on stream endpoints, udp on datagram endpoints].
    #[arg(short, long, value_enum)]
    pub pattern: Option<crate::bench::Pattern>,

    /// Connections (datagram sockets) side by side, each with one request outstanding.
    #[arg(short, long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=crate::bench::MAX_CONNECTIONS as u64))]
    pub connections: u64,

    /// How long to measure.
    #[arg(short, long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Load before measuring starts, not counted.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,

    /// Bytes per request (per write for stream) [default: the note's 16-byte message for
    /// hello and udp, 64 for echo, 131072 for stream].
    #[arg(short, long, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..=crate::bench::MAX_STREAM_SIZE as u64))]
    pub size: Option<u64>,

    /// Open loop: this many requests per second in total, on a fixed timetable.
    #[arg(short, long, value_name = "PER_SECOND", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// A reply (or a connect) slower than this counts as a timeout; for udp, a loss.
    #[arg(short, long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub timeout: Duration,

    /// A reply is complete after this many bytes [default: echo: --size; hello and udp:
    /// the first read / any datagram].
    #[arg(long, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(1..=crate::bench::MAX_STREAM_SIZE as u64))]
    pub reply_size: Option<u64>,

    /// Also write every figure and the latency histogram as JSON to FILE ("-": stdout,
    /// and the table goes to stderr).
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,
}

/// `sockit bench` subcommands.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Combine JSON reports of simultaneous runs: throughputs summed, histograms added.
    #[command(after_help = MERGE_EXAMPLES)]
    Merge(MergeArgs),
}

/// `sockit bench merge`.
#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Reports written by `sockit bench --json`.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<std::path::PathBuf>,

    /// Also write the combined report as JSON to FILE ("-": stdout).
    #[arg(long, value_name = "FILE")]
    pub json: Option<std::path::PathBuf>,
}

/// Parses a rate in requests per second: a positive number.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(rate),
        _ => Err("write a number of requests per second above 0, such as 1000 or 2.5".into()),
    }
}

/// Parses "5s", "250ms", "1m30s"; a bare number is seconds; "0" means zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    if let Ok(seconds) = text.parse::<f64>()
        && seconds.is_finite()
        && seconds >= 0.0
    {
        return Ok(Duration::from_secs_f64(seconds));
    }
    humantime::parse_duration(text)
        .map_err(|e| format!("{e} (write a duration such as 500ms, 5s or 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1").is_err());
    }

    #[test]
    fn zero_arguments_mean_the_note() -> Result<(), clap::Error> {
        let cli = Cli::try_parse_from(["sockit", "serve"])?;
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(args.endpoint, "tcp");
        assert_eq!(args.framing.buffer, 1024);
        Ok(())
    }

    #[test]
    fn answer_modes_are_exclusive() {
        assert!(Cli::try_parse_from(["sockit", "serve", "--echo", "--reply", "x"]).is_err());
        assert!(Cli::try_parse_from(["sockit", "serve", "--echo", "--discard"]).is_err());
    }
}
