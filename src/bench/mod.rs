//! `sockit bench`: a load generator whose numbers can be trusted.
//!
//! It drives a server with one of four traffic patterns over any transport and reports
//! throughput, latency percentiles from an HDR histogram, and failures by kind:
//!
//! | pattern | transport | one exchange |
//! |---|---|---|
//! | [`Pattern::Hello`] | stream | connect, send, read the reply, close (the note's client) |
//! | [`Pattern::Echo`] | stream | send S bytes on a persistent connection, read S bytes back |
//! | [`Pattern::Stream`] | stream | one write of S bytes to a server that discards |
//! | [`Pattern::Udp`] | datagram | send a datagram, wait for a reply (loss counted) |
//!
//! Modules: [`measure`] decides when requests go out (closed or open loop), times them and
//! tallies one connection, behind the [`measure::Driver`] trait; [`driver`] implements that
//! trait over real sockets; [`histogram`] holds latencies, and [`latencies`] the ones a
//! thread's connections share; [`report`] turns the tallies into a [`Report`] (human
//! table, JSON, merge); [`progress`] draws the bar; [`window`] is the run's time line,
//! which both measure and the bar read.
//!
//! Any payload ([`driver::Messages`]) and reply rule ([`driver::ReplyMatcher`]) run over
//! the stream patterns; open loop takes a total rate, optionally ramped up
//! ([`BenchOptions::ramp_up`], its exchanges reported apart), and connections may open at
//! a set pace ([`BenchOptions::connect_rate`]).
//!
//! Throughput tests (iperf3's job) run apart from the patterns above, against
//! `sockit serve --perf`: [`throughput`] (TCP, TLS, Unix streams in either or both
//! directions, per-interval [`tcp_info`]), [`udp_stream`] (UDP at a set bitrate, paced by
//! [`pacer`], measured at the receiver by [`flow_stats`]), over the wire format of
//! [`wire`], reported by [`throughput_report`].
//!
//! Flow: [`BenchOptions`] → [`run`] (or [`run_until`], which a Ctrl-C ends early with a
//! partial report): on each thread, either the [`lane`] (one epoll set, no task per
//! connection) or one tokio task per connection, each with its own driver and buffers,
//! as [`BenchOptions::engine`] decides; one histogram per thread → at the end the
//! connections' [`measure::Measured`] are added up → [`Report::of_run`].

pub mod driver;
pub mod flow_stats;
pub mod histogram;
pub mod hlog;
pub mod intervals;
pub mod lane;
pub mod latencies;
pub mod measure;
pub mod pacer;
pub mod plot;
pub mod progress;
pub mod report;
pub mod start;
pub mod tcp_info;
pub mod throughput;
pub mod throughput_report;
pub mod udp_stream;
pub mod window;
pub mod wire;

pub use measure::Load;
pub use report::{Report, ReportError};

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

use crate::endpoint::{Delivery, Endpoint};
use crate::error::{Error, Result};
use crate::transport::tls::ClientTls;
use crate::transport::{ConnectOptions, MAX_DATAGRAM};
use driver::{
    DatagramDriver, EchoDriver, HelloDriver, Messages, ReplyEnd, ReplyMatcher, StreamDriver, Target,
};
use latencies::SharedLatency;
use measure::{Measured, Plan, run_connection};
use progress::{Progress, RateUnit};
use tokio_util::sync::CancellationToken;
use window::Window;

/// Most connections one run opens: beyond this, memory (a histogram and buffers each)
/// and file descriptors run out before the server does.
pub const MAX_CONNECTIONS: usize = 10_000;

/// Largest stream message or write: 16 MiB.
pub const MAX_STREAM_SIZE: usize = 16 * 1024 * 1024;

/// Longest run accepted: a day. Runs always stop by themselves.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// How long after the window's end the run waits for its threads and connection tasks
/// before giving up on them (they stop at the end by construction; this is a safety net).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Time between the go signal and the first request, so that every thread has woken up
/// by then and all connections start at the same instant.
const START_DELAY: Duration = Duration::from_millis(5);

/// Default message size for `echo`: small, like a typical request.
const DEFAULT_ECHO_SIZE: usize = 64;

/// Default write size for `stream`: 128 KiB, large enough that syscalls are not the limit.
const DEFAULT_STREAM_SIZE: usize = 128 * 1024;

/// The traffic a benchmark sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// The note's exchange: a new connection per request (connect, send, reply, close).
    Hello,
    /// Persistent connections, each sending a message and waiting for it to come back.
    Echo,
    /// Persistent connections writing as fast as they can to a server that discards.
    Stream,
    /// Request and reply datagrams, one outstanding per socket, loss counted.
    Udp,
}

impl Pattern {
    /// The note's exchange for the endpoint's kind: `hello` on streams, `udp` on datagrams.
    pub fn default_for(endpoint: &Endpoint) -> Pattern {
        match endpoint.delivery() {
            Delivery::Stream => Pattern::Hello,
            Delivery::Datagram => Pattern::Udp,
        }
    }

    /// Whether the pattern sends datagrams.
    pub fn is_datagram(self) -> bool {
        self == Pattern::Udp
    }

    /// The endpoint kind the pattern needs.
    fn delivery(self) -> Delivery {
        if self.is_datagram() {
            Delivery::Datagram
        } else {
            Delivery::Stream
        }
    }

    /// The request sent by default: the note's message for `hello` and `udp`.
    fn default_request(self, endpoint: &Endpoint) -> Bytes {
        match self {
            Pattern::Hello | Pattern::Udp => {
                Bytes::from(format!("hello {} server", endpoint.seed_word()))
            }
            Pattern::Echo => filler(DEFAULT_ECHO_SIZE),
            Pattern::Stream => filler(DEFAULT_STREAM_SIZE),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pattern::Hello => "hello",
            Pattern::Echo => "echo",
            Pattern::Stream => "stream",
            Pattern::Udp => "udp",
        })
    }
}

/// `size` bytes of printable filler (`abc…xyzabc…`).
pub fn filler(size: usize) -> Bytes {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Which engine drives a run's connections (reported in the JSON as `engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// One epoll set per thread, no task per connection ([`lane`]): the plain patterns,
    /// at the C load generator's cost per exchange.
    Lane,
    /// One tokio task per connection ([`measure`] over [`driver`]): every pattern and
    /// option.
    Tasks,
}

/// `--engine`: which engine the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EngineChoice {
    /// The lane when the run fits it, the tasks otherwise (see [`BenchOptions::engine`]).
    #[default]
    Auto,
    /// The lane; a run it cannot drive is refused, with the reason.
    Lane,
    /// The tasks, whatever the run (to compare the engines).
    Tasks,
}

/// Whether to draw the progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressDisplay {
    /// Draw it on stderr (the CLI chooses this when stdout is a terminal).
    Bar,
    /// Nothing on the terminal while running.
    #[default]
    Hidden,
}

/// Everything that defines one benchmark run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The server to drive.
    pub endpoint: Endpoint,
    /// What traffic to send.
    pub pattern: Pattern,
    /// Connections (datagram sockets) driven side by side, each with one request
    /// outstanding.
    pub connections: usize,
    /// The measured span.
    pub duration: Duration,
    /// Traffic before measuring starts (connections opened, caches warm), not counted.
    pub warmup: Duration,
    /// The requests sent in turn (or the chunks stream writes send), and what each
    /// connection sends once first.
    pub messages: Messages,
    /// When a reply is complete, and whether it is the right one.
    pub reply: ReplyMatcher,
    /// Closed or open loop.
    pub load: Load,
    /// Open loop: the total rate grows linearly from 0 over this span from the start
    /// (zero: none).
    pub ramp_up: Duration,
    /// Connections opened per second from the start (`None`: all at once).
    pub connect_rate: Option<f64>,
    /// How long one reply (or one connect) may take before it counts as a timeout.
    pub timeout: Duration,
    /// Whether to draw a progress bar.
    pub progress: ProgressDisplay,
    /// Threads driving the connections, each with its own runtime; more than one per
    /// core only adds switching.
    pub threads: usize,
    /// The TLS client for a `tls://` endpoint, built once for the run and shared by every
    /// connection (`None`: the system's trusted roots).
    pub tls: Option<ClientTls>,
    /// `--source` and the other socket options of every connection.
    pub socket: crate::transport::SocketOptions,
    /// `--proxy`: the proxies every connection goes through (empty: directly).
    pub proxies: crate::transport::proxy_client::ProxyChain,
    /// Latency per interval of the measured span (`--hlog`, `--plot`); `None`: not kept.
    pub latency_log: Option<intervals::LatencyLog>,
    /// When measuring begins on the wall clock (`--start-at`), the warm-up just before
    /// it; `None`: at once.
    pub start_at: Option<std::time::SystemTime>,
    /// `--engine`: which engine drives the connections.
    pub engine: EngineChoice,
}

/// A finished run: the report, and the first failure for the exit status.
#[derive(Debug)]
pub struct Outcome {
    /// What was measured.
    pub report: Report,
    /// The first failure of the run, if any, kept whole.
    pub first_error: Option<Error>,
    /// With [`BenchOptions::latency_log`]: each interval's figures, in order.
    pub intervals: Vec<intervals::IntervalSummary>,
    /// The failure that stopped the interval log being written, if any.
    pub hlog_error: Option<Error>,
}

impl BenchOptions {
    /// The defaults for `endpoint`: its note pattern unless `pattern` says otherwise,
    /// 10 connections, 10 s after 1 s of warm-up, closed loop, 2 s timeout, one thread
    /// per core this process may run on.
    pub fn new(endpoint: Endpoint, pattern: Option<Pattern>) -> BenchOptions {
        let pattern = pattern.unwrap_or_else(|| Pattern::default_for(&endpoint));
        let request = pattern.default_request(&endpoint);
        let reply = match pattern {
            Pattern::Echo => ReplyEnd::SameAsRequest,
            _ => ReplyEnd::FirstRead,
        };
        BenchOptions {
            endpoint,
            pattern,
            connections: 10,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(1),
            messages: Messages::one(request),
            reply: ReplyMatcher::ending(reply),
            load: Load::Closed,
            ramp_up: Duration::ZERO,
            connect_rate: None,
            timeout: Duration::from_secs(2),
            progress: ProgressDisplay::Hidden,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            tls: None,
            socket: crate::transport::SocketOptions::default(),
            proxies: crate::transport::proxy_client::ProxyChain::default(),
            latency_log: None,
            start_at: None,
            engine: EngineChoice::Auto,
        }
    }

    /// The one place a run's engine is chosen. The [`lane`] drives what it can
    /// ([`lane::LaneTarget::of`]: hello, echo and udp over TCP or UDP to an IP address or
    /// a Unix stream path, replies ending at the first read or a byte count, no TLS,
    /// proxy, first message or regex; any load, rate and ramps included), unless
    /// `--engine tasks`; everything else runs on the tasks, which do every option.
    ///
    /// # Errors
    /// [`Error::Usage`] for `--engine lane` on a run the lane cannot drive, saying why.
    pub fn engine(&self) -> Result<(EngineKind, Option<lane::LaneTarget>)> {
        let fit = lane::LaneTarget::of(self);
        match (self.engine, fit) {
            (EngineChoice::Tasks, _) => Ok((EngineKind::Tasks, None)),
            (_, Ok(target)) => Ok((EngineKind::Lane, Some(target))),
            (EngineChoice::Auto, Err(_)) => Ok((EngineKind::Tasks, None)),
            (EngineChoice::Lane, Err(unfit)) => Err(Error::Usage(format!(
                "--engine lane does not drive {unfit}; use --engine auto (or tasks)"
            ))),
        }
    }

    /// Replaces the request with `size` bytes of filler (echo expects as many back).
    pub fn with_size(mut self, size: usize) -> BenchOptions {
        self.messages.each = Arc::from(vec![filler(size)]);
        self
    }

    /// How long the connect ramp takes to open every connection (zero without one).
    pub fn connect_ramp(&self) -> Duration {
        match self.connect_rate {
            Some(rate) if rate.is_finite() && rate > 0.0 => {
                Duration::try_from_secs_f64(self.connections.saturating_sub(1) as f64 / rate)
                    .unwrap_or(Duration::MAX)
            }
            _ => Duration::ZERO,
        }
    }

    /// The open-loop rate, if any.
    pub fn rate(&self) -> Option<f64> {
        match self.load {
            Load::Closed => None,
            Load::Open { rate } => Some(rate),
        }
    }

    /// Checks that the options make sense together.
    ///
    /// # Errors
    /// [`Error::Usage`] naming the option to change.
    pub fn validate(&self) -> Result<()> {
        let usage = |text: String| Err(Error::Usage(text));
        if self.pattern.delivery() != self.endpoint.delivery() {
            let suggestion = match self.endpoint.delivery() {
                Delivery::Datagram => "use --pattern udp",
                Delivery::Stream => "use --pattern hello, echo or stream",
            };
            return usage(format!(
                "pattern {} does not run over {}: {suggestion}",
                self.pattern, self.endpoint
            ));
        }
        if self.connections == 0 || self.connections > MAX_CONNECTIONS {
            return usage(format!(
                "--connections must be between 1 and {MAX_CONNECTIONS}"
            ));
        }
        if self.duration.is_zero() || self.duration > MAX_DURATION {
            return usage("--duration must be more than 0 and at most 24h".into());
        }
        if self.warmup > MAX_DURATION {
            return usage("--warmup must be at most 24h".into());
        }
        if self.timeout.is_zero() {
            return usage("--timeout must be more than 0".into());
        }
        let max_size = if self.pattern.is_datagram() {
            MAX_DATAGRAM
        } else {
            MAX_STREAM_SIZE
        };
        let sizes_fit = |m: &Bytes| !m.is_empty() && m.len() <= max_size;
        if self.messages.each.is_empty() || !self.messages.each.iter().all(sizes_fit) {
            return usage(format!(
                "every message (--size, --message, --message-file) must be between 1 and \
                 {max_size} bytes"
            ));
        }
        if let Some(first) = &self.messages.first {
            if self.pattern.is_datagram() {
                return usage(
                    "--first-message applies to stream patterns (a connection's handshake or \
                     login); datagrams have no connection"
                        .into(),
                );
            }
            if !sizes_fit(first) {
                return usage(format!(
                    "--first-message must be between 1 and {max_size} bytes"
                ));
            }
        }
        if self.reply.end == ReplyEnd::Match && self.reply.regex.is_none() {
            return usage("a reply that ends at a regex match needs --reply-regex".into());
        }
        self.validate_ramps()?;
        self.engine()?;
        if let Some(log) = &self.latency_log {
            log.validate(self.duration)?;
        }
        if let Some(at) = self.start_at {
            start::check_start_time(at, self.warmup, std::time::SystemTime::now())?;
        }
        if let Load::Open { rate } = self.load {
            if self.pattern == Pattern::Stream {
                return usage(
                    "--rate does not apply to the stream pattern, which sends as fast as it can; \
                     use echo or hello for a fixed request rate"
                        .into(),
                );
            }
            if !(rate.is_finite() && rate > 0.0) {
                return usage("--rate must be a number of requests per second above 0".into());
            }
        }
        Ok(())
    }

    /// Checks `--ramp-up` and `--connect-rate` against the load and the run's length.
    fn validate_ramps(&self) -> Result<()> {
        let usage = |text: String| Err(Error::Usage(text));
        let run = self.warmup + self.duration;
        if !self.ramp_up.is_zero() {
            if self.load == Load::Closed {
                return usage(
                    "--ramp-up ramps a rate: give --rate or --rate-per-conn as well".into(),
                );
            }
            if self.ramp_up >= run {
                return usage(format!(
                    "--ramp-up {} is not shorter than the run ({} warm-up + {} measured); \
                     shorten it or raise --duration",
                    humantime::format_duration(self.ramp_up),
                    humantime::format_duration(self.warmup),
                    humantime::format_duration(self.duration)
                ));
            }
        }
        if let Some(rate) = self.connect_rate {
            if !(rate.is_finite() && rate > 0.0) {
                return usage(
                    "--connect-rate must be a number of connections per second above 0".into(),
                );
            }
            let ramp = self.connect_ramp();
            if ramp >= run {
                return usage(format!(
                    "--connect-rate {rate}/s opens {} connections in {:.1} s, not shorter than \
                     the run ({} warm-up + {} measured); raise the rate or --duration",
                    self.connections,
                    ramp.as_secs_f64(),
                    humantime::format_duration(self.warmup),
                    humantime::format_duration(self.duration)
                ));
            }
        }
        Ok(())
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ending {
    /// It ran its full duration.
    #[default]
    Complete,
    /// It was stopped early (Ctrl-C): the report covers the span up to then.
    Interrupted,
}

/// The time line a finished run covered, for its report.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunSpan {
    /// The measured span (shorter than asked when interrupted).
    pub measured: Duration,
    /// The part of it after the rate ramp: what the main figures cover.
    pub steady: Duration,
    /// Whether the run went to its end.
    pub ending: Ending,
    /// From the start until the last connection got ready (with a connect ramp, how long
    /// the ramp took); `None` if none did.
    pub all_connected_after: Option<Duration>,
}

/// Runs a benchmark to its end and reports what it measured.
///
/// The connections are shared out over [`BenchOptions::threads`] threads, each waiting in
/// its own epoll set ([`lane`]) or running its own single-threaded tokio runtime (as wrk
/// does), as [`BenchOptions::engine`] decides: a connection never moves between cores and
/// its wake-ups never cross threads. Everything starts together once
/// every thread is ready, and stops by itself after `warmup + duration`; failures of
/// single exchanges are counted, not returned.
///
/// # Errors
/// [`Error::Usage`] for options that do not fit together (see
/// [`BenchOptions::validate`]); [`Error::Io`] if a thread or its runtime cannot start.
pub async fn run(options: &BenchOptions) -> Result<Outcome> {
    run_until(options, CancellationToken::new()).await
}

/// [`run`], stopped early when `stop` is cancelled (Ctrl-C): the report then covers the
/// span up to that moment and says it is partial.
///
/// # Errors
/// As [`run`].
pub async fn run_until(options: &BenchOptions, stop: CancellationToken) -> Result<Outcome> {
    options.validate()?;
    check_target_resolves(options).await?;
    let (engine, lane) = options.engine()?;
    tracing::debug!("engine: {engine:?}");
    let mut share = Share {
        lane,
        pattern: options.pattern,
        stop: stop.clone(),
        target: Target {
            endpoint: Arc::new(options.endpoint.clone()),
            messages: options.messages.clone(),
            reply: options.reply.clone(),
            connect: ConnectOptions {
                socket: options.socket.clone(),
                tls: options.tls.clone(),
                proxies: options.proxies.clone(),
                ..ConnectOptions::new(options.timeout)
            },
        },
        plan: Plan {
            load: options.load,
            connections: options.connections,
            timeout: options.timeout,
            ramp_up: options.ramp_up,
            connect_rate: options.connect_rate,
        },
        intervals: None,
    };
    let mut interval_run = intervals::IntervalRun::prepare(options.latency_log.as_ref())?;
    share.intervals = interval_run.as_ref().map(intervals::IntervalRun::recording);
    ensure_open_files(options.connections as u64 + SPARE_FILES);
    let threads = options.threads.clamp(1, options.connections);
    let mut engines = spawn_engines(&share, threads, options.connections)?;
    drop(share);
    for engine in &mut engines {
        engine.ready().await?;
    }
    let start = match options.start_at {
        Some(at) => {
            let wait = start::until_traffic(at, options.warmup)?;
            tracing::info!(
                "waiting until {} to start measuring (traffic begins {} earlier, for the warm-up)",
                start::rfc3339(at),
                humantime::format_duration(options.warmup)
            );
            tokio::time::Instant::now() + wait
        }
        None => tokio::time::Instant::now() + START_DELAY,
    };
    let window =
        Window::starting_at(start, options.warmup, options.duration).with_ramp(options.ramp_up);
    // Before the progress bar is drawn, so the line does not land below a stale bar.
    announce(options);
    let progress = match options.progress {
        ProgressDisplay::Bar => Some(Progress::start(
            options.connections,
            window,
            rate_unit(options.pattern),
        )),
        ProgressDisplay::Hidden => None,
    };
    if let Some(run) = interval_run.as_mut() {
        let timeline = intervals::Timeline {
            origin: window.measure_from,
            span: window.measured(),
            wall: options.start_at,
        };
        run.start(timeline, threads, &options.endpoint.to_string());
    }
    for engine in &mut engines {
        engine.start(window, progress.as_ref());
    }
    let (cpu, busiest_thread, ended) = cpu_used_while_measuring(&window, &stop).await;
    let measured = gather(engines, ended + STOP_GRACE).await;
    if let Some(progress) = progress {
        progress.finish();
    }
    let measured_span = ended.saturating_duration_since(window.measure_from);
    let span = RunSpan {
        measured: measured_span,
        steady: ended.saturating_duration_since(window.steady_from),
        ending: if ended < window.end {
            Ending::Interrupted
        } else {
            Ending::Complete
        },
        all_connected_after: measured
            .last_connected
            .map(|at| at.saturating_duration_since(window.start)),
    };
    // CPU over the span it was measured on, so the share of a core stays right when a
    // run is cut short.
    let loadgen = LoadgenCpu {
        threads,
        cpu,
        busiest_thread: busiest_thread.max(measured.thread_cpu).min(cpu),
    };
    let mut report = Report::of_run(options, &measured, loadgen, span);
    report.engine = Some(engine);
    report.tls_handshakes = options.tls.as_ref().map(|tls| {
        let counts = tls.handshakes();
        report::TlsHandshakes {
            full: counts.full,
            resumed: counts.resumed,
        }
    });
    let (intervals, hlog_error) = match interval_run {
        Some(run) => run.finish(measured_span).await,
        None => (Vec::new(), None),
    };
    Ok(Outcome {
        report,
        first_error: measured.first_error,
        intervals,
        hlog_error,
    })
}

/// Resolves the target's host name once before any traffic, so a name that does not
/// resolve ends the run at once with the resolver's answer, not after a whole run of
/// failed connections. Through a proxy the proxy may resolve it (socks5h, http), so it is
/// left to the connections.
///
/// # Errors
/// [`Error::HostNotFound`] when the name does not resolve.
async fn check_target_resolves(options: &BenchOptions) -> Result<()> {
    if !options.proxies.is_empty() {
        return Ok(());
    }
    if let Some(host_port) = options.endpoint.host_port() {
        host_port.resolve().await?;
    }
    Ok(())
}

/// Says on stderr what the run does now: the warm-up, then the measured span.
fn announce(options: &BenchOptions) {
    let measuring = humantime::format_duration(options.duration);
    if options.warmup.is_zero() {
        tracing::info!("measuring for {measuring}");
    } else {
        tracing::info!(
            "warming up for {}, then measuring for {measuring}",
            humantime::format_duration(options.warmup)
        );
    }
}

/// Starts `threads` engines, dealing the connections out round-robin.
fn spawn_engines(share: &Share, threads: usize, connections: usize) -> Result<Vec<Engine>> {
    (0..threads)
        .map(|number| {
            let indices = (number..connections).step_by(threads).collect();
            Engine::spawn(number, share.clone(), indices)
        })
        .collect()
}

/// What the progress bar counts for a pattern.
fn rate_unit(pattern: Pattern) -> RateUnit {
    match pattern {
        Pattern::Stream => RateUnit::Bits,
        _ => RateUnit::Exchanges,
    }
}

/// Waits out the run, returning the CPU time the process used during the measured span,
/// and that of its busiest thread: how close the load generator came to being the limit
/// itself (one saturated thread is a limit even when the total looks moderate).
///
/// Returns early when `stop` is cancelled, with the instant the run ended.
async fn cpu_used_while_measuring(
    window: &Window,
    stop: &CancellationToken,
) -> (Duration, Duration, tokio::time::Instant) {
    tokio::select! {
        () = tokio::time::sleep_until(window.measure_from) => {}
        () = stop.cancelled() => {
            return (Duration::ZERO, Duration::ZERO, tokio::time::Instant::now().min(window.end));
        }
    }
    let before = process_cpu_time();
    let threads_before = thread_cpu_times();
    let ended = tokio::select! {
        () = tokio::time::sleep_until(window.end) => window.end,
        () = stop.cancelled() => tokio::time::Instant::now().min(window.end),
    };
    let total = process_cpu_time().saturating_sub(before);
    let busiest = thread_cpu_times()
        .iter()
        .map(|(tid, after)| {
            let start = threads_before
                .iter()
                .find(|(t, _)| t == tid)
                .map_or(Duration::ZERO, |(_, d)| *d);
            after.saturating_sub(start)
        })
        .max()
        .unwrap_or_default();
    (total, busiest.min(total), ended)
}

/// CPU time (user + system) of every thread of this process, from `/proc/self/task`
/// (empty where that is not available).
fn thread_cpu_times() -> Vec<(u64, Duration)> {
    let ticks_per_second = rustix::param::clock_ticks_per_second();
    if ticks_per_second == 0 {
        return Vec::new();
    }
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| {
            let tid = task.file_name().to_str()?.parse::<u64>().ok()?;
            let stat = std::fs::read_to_string(task.path().join("stat")).ok()?;
            let ticks = stat_cpu_ticks(&stat)?;
            Some((
                tid,
                Duration::from_micros(ticks.saturating_mul(1_000_000) / ticks_per_second),
            ))
        })
        .collect()
}

/// CPU time (user + system) of the calling thread, from `/proc/thread-self/stat` (`None`
/// where that is not available): for threads that end before the run's end is read.
pub(super) fn this_thread_cpu_time() -> Option<Duration> {
    let ticks_per_second = rustix::param::clock_ticks_per_second();
    if ticks_per_second == 0 {
        return None;
    }
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    let ticks = stat_cpu_ticks(&stat)?;
    Some(Duration::from_micros(
        ticks.saturating_mul(1_000_000) / ticks_per_second,
    ))
}

/// utime + stime (fields 14 and 15) of a `/proc/…/stat` line, in clock ticks. The command
/// name in parentheses may hold spaces, so the fields are counted after its `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(11);
    let user = fields.next()?.parse::<u64>().ok()?;
    let system = fields.next()?.parse::<u64>().ok()?;
    Some(user + system)
}

/// Adds up the engines' results as they finish; an engine not done by `deadline` is
/// given up on (with a warning).
async fn gather(engines: Vec<Engine>, deadline: tokio::time::Instant) -> Measured {
    let mut measured = Measured::default();
    for engine in engines {
        match tokio::time::timeout_at(deadline, engine.done).await {
            Ok(Ok(part)) => measured.absorb(part),
            Ok(Err(_)) => tracing::warn!("a benchmark thread stopped without its results"),
            Err(_) => {
                tracing::warn!("a benchmark thread did not stop in time; its results are lost")
            }
        }
    }
    measured
}

/// The load generator's own CPU use during the measured span.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadgenCpu {
    /// Threads that drove the connections.
    pub threads: usize,
    /// CPU time (user + system) the whole process used.
    pub cpu: Duration,
    /// CPU time of its busiest thread: near the span's length means that thread's core
    /// was saturated.
    pub busiest_thread: Duration,
}

/// File descriptors kept free beyond one per connection (stdio, the runtime's own).
const SPARE_FILES: u64 = 64;

/// Raises the soft limit on open files to `needed` (up to the hard limit), so that
/// thousands of connections do not fail with "too many open files" on a default 1024.
fn ensure_open_files(needed: u64) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    // `None` is "unlimited".
    let before = limit.current.unwrap_or(u64::MAX);
    if before >= needed {
        return;
    }
    let wanted = limit.maximum.map_or(needed, |hard| needed.min(hard));
    limit.current = Some(wanted);
    let allowed = match setrlimit(Resource::Nofile, limit) {
        Ok(()) => wanted,
        Err(_) => before,
    };
    if allowed < needed {
        tracing::warn!(
            "only {allowed} files may be open at once but the run needs about {needed}; \
             connections beyond fail with 'too many open files'; raise `ulimit -n`"
        );
    }
}

/// CPU time (user + system) used so far by this process, all threads together.
pub(crate) fn process_cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the zeroed struct we pass; RUSAGE_SELF is valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// What every connection of a run needs, cloned into each thread.
#[derive(Debug, Clone)]
struct Share {
    /// Set when the lane drives the run (see [`BenchOptions::engine`]).
    lane: Option<lane::LaneTarget>,
    /// Which driver to build.
    pattern: Pattern,
    /// Cancelled to end the run early (Ctrl-C).
    stop: CancellationToken,
    /// Where and what to send.
    target: Target,
    /// Loop, connection count, timeout.
    plan: Plan,
    /// With `--hlog` or `--plot`: the interval length, and where finished intervals go.
    intervals: Option<intervals::Recording>,
}

/// The go signal a thread waits for: the run's time line and its progress counters.
struct Start {
    /// When to begin, measure and stop.
    window: Window,
    /// One progress counter per connection of this thread (none without a bar).
    slots: Vec<Option<progress::ProgressSlot>>,
}

/// One thread running a share of the connections in its own epoll set (the lane) or on
/// its own single-threaded runtime (the tasks).
struct Engine {
    /// Which connections are this thread's.
    indices: Vec<usize>,
    /// Reports that the epoll set or the runtime is made (or why it is not).
    ready: Option<tokio::sync::oneshot::Receiver<std::io::Result<()>>>,
    /// Gives the go.
    start: std::sync::mpsc::Sender<Start>,
    /// Delivers the thread's results.
    done: tokio::sync::oneshot::Receiver<Measured>,
}

impl Engine {
    /// Starts thread `number` for the connections `indices`; it makes its epoll set (the
    /// lane) or builds its runtime, and waits for [`Engine::start`].
    fn spawn(number: usize, share: Share, indices: Vec<usize>) -> Result<Engine> {
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        let (start, start_rx) = std::sync::mpsc::channel::<Start>();
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let mine = indices.clone();
        std::thread::Builder::new()
            .name(format!("sockit-bench-{number}"))
            .spawn(move || {
                if share.lane.is_some() {
                    run_lane_thread(share, mine, (ready_tx, start_rx, done_tx));
                    return;
                }
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                // The sender is dropped without a go if the run is abandoned.
                let Ok(go) = start_rx.recv() else { return };
                let measured = runtime.block_on(run_share_timing_cpu(share, mine, go));
                let _ = done_tx.send(measured);
            })
            .map_err(|source| Error::Io {
                doing: "starting a benchmark thread".into(),
                source,
            })?;
        Ok(Engine {
            indices,
            ready: Some(ready),
            start,
            done,
        })
    }

    /// Waits until the thread's runtime is built.
    async fn ready(&mut self) -> Result<()> {
        let Some(ready) = self.ready.take() else {
            return Ok(());
        };
        let failed = |source| Error::Io {
            doing: "starting a benchmark thread's runtime".into(),
            source,
        };
        match ready.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(source)) => Err(failed(source)),
            Err(_) => Err(failed(std::io::Error::other("the thread ended early"))),
        }
    }

    /// Gives the go.
    fn start(&self, window: Window, progress: Option<&Progress>) {
        let slots = self
            .indices
            .iter()
            .map(|&index| progress.map(|p| p.slot(index)))
            .collect();
        // A thread that is gone has already reported through `done`.
        let _ = self.start.send(Start { window, slots });
    }
}

/// A lane thread: makes its epoll set, waits for the go, drives its connections, and
/// delivers their results.
fn run_lane_thread(
    share: Share,
    indices: Vec<usize>,
    (ready, go, done): (
        tokio::sync::oneshot::Sender<std::io::Result<()>>,
        std::sync::mpsc::Receiver<Start>,
        tokio::sync::oneshot::Sender<Measured>,
    ),
) {
    let Some(target) = share.lane else { return };
    let set = match lane::LanePoll::new() {
        Ok(set) => set,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    // The sender is dropped without a go if the run is abandoned.
    let Ok(Start { window, slots }) = go.recv() else {
        return;
    };
    let lane_share = lane::LaneShare {
        lane: target,
        target: share.target,
        plan: share.plan,
        indices,
        stop: share.stop,
        intervals: share.intervals,
    };
    let _ = done.send(lane::run(lane_share, set, window, slots));
}

/// Runs one thread's connections, one task each, and adds up their results.
async fn run_share(share: Share, indices: Vec<usize>, go: Start) -> Measured {
    let Start { window, slots } = go;
    let latency = SharedLatency::default();
    let recording = share.intervals.clone();
    if let Some(recording) = &recording {
        latency.borrow_mut().intervals = Some(recording.recorder(window.measure_from));
    }
    let local = tokio::task::LocalSet::new();
    let mut measured = local
        .run_until(async {
            let mut tasks = JoinSet::new();
            for (index, slot) in indices.into_iter().zip(slots) {
                let target = share.target.clone();
                let plan = share.plan;
                let latency = latency.clone();
                let stop = share.stop.clone();
                match share.pattern {
                    Pattern::Hello => {
                        let driver = HelloDriver::new(target);
                        tasks.spawn_local(run_connection(
                            driver, plan, window, index, slot, latency, stop,
                        ))
                    }
                    Pattern::Echo => {
                        let driver = EchoDriver::new(target);
                        tasks.spawn_local(run_connection(
                            driver, plan, window, index, slot, latency, stop,
                        ))
                    }
                    Pattern::Stream => {
                        let driver = StreamDriver::new(target);
                        tasks.spawn_local(run_connection(
                            driver, plan, window, index, slot, latency, stop,
                        ))
                    }
                    Pattern::Udp => {
                        let driver = DatagramDriver::new(target);
                        tasks.spawn_local(run_connection(
                            driver, plan, window, index, slot, latency, stop,
                        ))
                    }
                };
            }
            let collected = collect(tasks, window.end + STOP_GRACE);
            match &recording {
                Some(recording) => {
                    let ticker = latencies::keep_pace(latency.clone(), window, recording.every);
                    tokio::select! {
                        measured = collected => measured,
                        () = ticker => Measured::default(),
                    }
                }
                None => collected.await,
            }
        })
        .await;
    let mut latencies = latency.take();
    if let Some(recorder) = latencies.intervals.take() {
        recorder.finish();
    }
    measured.latency = latencies.steady;
    measured.ramp_latency = latencies.ramp;
    measured
}

/// [`run_share`], with the thread's own CPU time over the measured span in
/// [`Measured::thread_cpu`]: the thread ends about when the run does, often before the
/// process-wide reading of every thread's CPU at the run's end can see it.
async fn run_share_timing_cpu(share: Share, indices: Vec<usize>, go: Start) -> Measured {
    let measure_from = go.window.measure_from;
    // On this thread's own runtime, so the reading is this thread's.
    let cpu_at_measure_start = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from).await;
        this_thread_cpu_time()
    });
    let mut measured = run_share(share, indices, go).await;
    if cpu_at_measure_start.is_finished()
        && let Ok(Some(start)) = cpu_at_measure_start.await
        && let Some(end) = this_thread_cpu_time()
    {
        measured.thread_cpu = end.saturating_sub(start);
    }
    measured
}

/// Adds up every connection's results; tasks still running at `deadline` are stopped.
async fn collect(mut tasks: JoinSet<Measured>, deadline: tokio::time::Instant) -> Measured {
    let mut total = Measured::default();
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(measured))) => total.absorb(measured),
            Ok(Some(Err(e))) => tracing::warn!("a benchmark connection task failed: {e}"),
            Ok(None) => return total,
            Err(_) => {
                tracing::warn!(
                    "{} benchmark connections did not stop in time; their results are lost",
                    tasks.len()
                );
                tasks.abort_all();
                return total;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_ticks_counts_after_a_name_with_spaces() {
        let stat = "42 (sockit bench 0) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0";
        assert_eq!(stat_cpu_ticks(stat), Some(10));
        assert_eq!(stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_thread_appears_in_the_thread_cpu_times() {
        assert!(!thread_cpu_times().is_empty());
    }

    fn options(endpoint: &str, pattern: Option<Pattern>) -> BenchOptions {
        let endpoint: Endpoint = endpoint.parse().unwrap_or_else(|e| panic!("{e}"));
        BenchOptions::new(endpoint, pattern)
    }

    #[test]
    fn defaults_are_the_notes_exchange() {
        let tcp = options("tcp", None);
        assert_eq!(tcp.pattern, Pattern::Hello);
        assert_eq!(&tcp.messages.each[0][..], b"hello tcp server");
        let udp = options("udp", None);
        assert_eq!(udp.pattern, Pattern::Udp);
        assert_eq!(&udp.messages.each[0][..], b"hello udp server");
        let echo = options("tcp", Some(Pattern::Echo)).with_size(100);
        assert_eq!(echo.reply.end, ReplyEnd::SameAsRequest);
        assert_eq!(&echo.messages.each[0][..4], b"abcd");
        assert!(tcp.validate().is_ok() && udp.validate().is_ok() && echo.validate().is_ok());
    }

    #[test]
    fn mismatched_or_impossible_options_are_refused_with_advice() {
        let message = |o: BenchOptions| o.validate().err().map(|e| e.to_string());
        let wrong = message(options("udp://127.0.0.1:9", Some(Pattern::Echo)));
        assert!(wrong.is_some_and(|m| m.contains("--pattern udp")));
        let wrong = message(options("tcp", Some(Pattern::Udp)));
        assert!(wrong.is_some_and(|m| m.contains("hello, echo or stream")));
        let mut stream = options("tcp", Some(Pattern::Stream));
        stream.load = Load::Open { rate: 10.0 };
        assert!(message(stream).is_some_and(|m| m.contains("--rate")));
        let mut zero = options("tcp", None);
        zero.connections = 0;
        assert!(message(zero).is_some_and(|m| m.contains("--connections")));
        let big = options("udp", None).with_size(MAX_DATAGRAM + 1);
        assert!(message(big).is_some_and(|m| m.contains("--size")));
        let mut ramp = options("tcp", None);
        ramp.load = Load::Open { rate: 10.0 };
        ramp.ramp_up = ramp.warmup + ramp.duration;
        assert!(message(ramp).is_some_and(|m| m.contains("--ramp-up")));
        let mut connect = options("tcp", None);
        connect.connections = 100;
        connect.connect_rate = Some(5.0);
        assert!(message(connect).is_some_and(|m| m.contains("--connect-rate")));
        let mut first = options("udp", None);
        first.messages.first = Some(Bytes::from_static(b"hi"));
        assert!(message(first).is_some_and(|m| m.contains("--first-message")));
        let mut nan = options("tcp", None);
        nan.load = Load::Open { rate: f64::NAN };
        assert!(message(nan).is_some_and(|m| m.contains("--rate")));
    }
}
