//! Stream throughput tests (iperf3's TCP tests) against `sockit serve --perf`: client →
//! server, server → client (`--reverse`), or both at once (`--bidir`), over N parallel
//! connections, with an optional line per interval carrying the kernel's `TCP_INFO` for
//! each connection, and an optional latency probe on a connection of its own.
//!
//! Each connection opens with the control line of [`super::wire`] saying which way its
//! bytes go, so one server serves any number of such tests at once, and each is measured
//! on its own. The test runs on a multi-threaded runtime of its own, one task per
//! connection; a ticker reads each connection's byte counter (one relaxed atomic add per
//! write or read of up to `--size` bytes) and its `TCP_INFO` through a duplicate of its
//! file descriptor, so the data path never stops for a report.
//!
//! At the end an `up` connection half-closes and reads the server's count of what
//! arrived; a `down` connection half-closes, and the server stops sending, sends its
//! socket's `TCP_INFO` readings (one per interval: the ticker has the connection send a
//! byte at each interval's end, and the server reads `TCP_INFO` when that byte comes),
//! and closes. The final report then gives the sender's retransmits, window and RTT for
//! down streams too.
//!
//! With `--interval`, the interval lines of down streams carry the sender's `TCP_INFO`
//! while the test runs: the client opens a watch connection naming its down connections
//! (by the tokens the server gave them), and at each interval's end the ticker asks on
//! it and waits a bounded time for the server's readings. The data connections carry
//! nothing for this, so the data path is untouched.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::histogram::LatencyHistogram;
use super::tcp_info::{self, TcpInfo};
use super::throughput_report::{
    IntervalRecord, LatencyFigures, StreamInterval, StreamSummary, TcpInterval, ThroughputReport,
};
use super::wire::{self, StreamRole};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::transport::{ConnectOptions, Stream, connect_stream};

/// How long the end of a connection may take: the server's count of an `up`
/// connection, the close of a `down` one.
const CLOSING_TIME: Duration = Duration::from_secs(5);

/// The longest `sent` line a client takes (the server keeps at most
/// [`wire::MAX_SENDER_READINGS`] readings, a few hundred bytes each).
const SENT_LINE_LIMIT: usize = 4 << 20;

/// Time between two latency probes: 100 round trips a second.
const PROBE_GAP: Duration = Duration::from_millis(10);

/// Bytes of one latency probe.
const PROBE_SIZE: usize = 8;

/// The longest `info` line a client takes from a watch ([`wire::MAX_WATCHED`]
/// readings of a few hundred bytes each).
const INFO_LINE_LIMIT: usize = 256 << 10;

/// The longest the ticker waits for the sender's readings at an interval's end: an
/// interval line is late by at most this (or half the interval, if shorter); readings
/// that come later are dropped.
const SENDER_WAIT: Duration = Duration::from_secs(1);

/// Which way a stream test's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    /// Client → server (iperf3's default).
    #[default]
    Up,
    /// Server → client (`--reverse`, iperf3 `-R`).
    Down,
    /// Both at once, on separate connections (`--bidir`).
    Both,
}

impl Direction {
    /// The roles of the connections: `streams` of each direction asked for.
    fn roles(self, streams: usize) -> Vec<StreamRole> {
        let one = |role| std::iter::repeat_n(role, streams);
        match self {
            Direction::Up => one(StreamRole::Up).collect(),
            Direction::Down => one(StreamRole::Down).collect(),
            Direction::Both => one(StreamRole::Up).chain(one(StreamRole::Down)).collect(),
        }
    }
}

/// Everything that defines one stream throughput test.
#[derive(Debug, Clone)]
pub struct ThroughputOptions {
    /// The server (`sockit serve --perf`).
    pub endpoint: Endpoint,
    /// Connections per direction.
    pub streams: usize,
    /// Which way the bytes go.
    pub direction: Direction,
    /// The measured span.
    pub duration: Duration,
    /// A report line every this long (`None`: the final report only).
    pub interval: Option<Duration>,
    /// Bytes per write (up) or read (down).
    pub chunk: usize,
    /// Whether to run the latency probe alongside.
    pub latency: bool,
    /// Connect timeout, TLS client and socket options.
    pub connect: ConnectOptions,
}

/// One open test connection, as the ticker sees it.
struct Lane {
    /// Its number, from 1.
    number: usize,
    /// Which way its bytes go.
    role: StreamRole,
    /// Bytes carried so far, written by the connection's task.
    bytes: Arc<AtomicU64>,
    /// A duplicate of its socket, for `TCP_INFO` (`None` on Unix sockets).
    socket: Option<OwnedFd>,
    /// The counter at the last tick.
    last_bytes: u64,
    /// `TCP_INFO` at the last tick.
    last_info: Option<TcpInfo>,
    /// Its interval figures so far.
    intervals: Vec<StreamInterval>,
    /// Down: the server's `TCP_INFO` at the last interval's end, from the watch.
    last_sender: Option<TcpInfo>,
    /// Down: how the ticker asks the server for a `TCP_INFO` reading at each interval's
    /// end.
    asks: Option<Arc<ReadingAsks>>,
}

/// A down connection's asks for the server's `TCP_INFO` readings: the ticker counts one
/// per interval and wakes the connection's task, which sends a byte per ask.
#[derive(Default)]
struct ReadingAsks {
    asked: AtomicU64,
    wake: tokio::sync::Notify,
}

/// A watch connection: the server answers each ask with the `TCP_INFO` of the down
/// connections it names ([`wire`]).
struct SenderWatch {
    /// The connection, buffered for its lines.
    stream: BufReader<Stream>,
    /// The lanes (indices into the test's lanes) it names, in the order named.
    lanes: Vec<usize>,
    /// Asks sent so far; an answer for fewer is stale.
    asked: u64,
    /// A line being read (kept across a timeout).
    line: Vec<u8>,
}

/// The test's watches: being opened beside the test (the server may hold a connection
/// beyond its `--max-conns` back, and the data must not wait for that), then open.
enum Watches {
    /// The task opening them.
    Opening(tokio::task::JoinHandle<Result<Vec<SenderWatch>>>),
    /// Open (empty: none, or they could not be opened).
    Open(Vec<SenderWatch>),
}

impl Watches {
    /// The open watches (`None` while they are being opened). A failure to open them
    /// is said once, and the test goes on without the senders' live figures.
    async fn ready(&mut self) -> Option<&mut Vec<SenderWatch>> {
        if let Watches::Opening(task) = self
            && task.is_finished()
        {
            let opened = match task.await {
                Ok(Ok(watches)) => watches,
                Ok(Err(e)) => {
                    tracing::warn!("the interval lines go without the sender's TCP_INFO: {e}");
                    Vec::new()
                }
                Err(_) => Vec::new(),
            };
            *self = Watches::Open(opened);
        }
        match self {
            Watches::Open(watches) => Some(watches),
            Watches::Opening(_) => None,
        }
    }

    /// Ends the watches (see [`close_watches`]); stops the opening if it is still going.
    async fn close(self) {
        match self {
            Watches::Opening(task) => task.abort(),
            Watches::Open(watches) => close_watches(watches).await,
        }
    }
}

/// How a connection's task ended.
#[derive(Debug, Default)]
struct LaneEnd {
    /// The server's count (up).
    server_received: Option<u64>,
    /// The failure that stopped it early.
    error: Option<Error>,
    /// Down: the server's `TCP_INFO` readings, one per interval.
    sender_readings: Vec<TcpInfo>,
}

/// The latency probe's round trips: this interval's and the whole test's.
#[derive(Default)]
struct ProbeTimes {
    interval: LatencyHistogram,
    total: LatencyHistogram,
}

/// Runs a test on a runtime of its own (call from a blocking context: the CLI's
/// `spawn_blocking`); `on_interval` gets each interval's record as it ends.
///
/// # Errors
/// Connecting or greeting fails for any connection (nothing is measured then); the
/// runtime cannot start.
pub fn run_blocking(
    options: &ThroughputOptions,
    stop: &CancellationToken,
    on_interval: impl FnMut(&IntervalRecord) + Send,
) -> Result<(ThroughputReport, Option<Error>)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("sockit-throughput")
        .build()
        .map_err(|source| Error::Io {
            doing: "starting the throughput test's runtime".into(),
            source,
        })?;
    runtime.block_on(run(options, stop, on_interval))
}

/// Runs a test on the current (multi-threaded) runtime; cancelling `stop` (Ctrl-C) ends
/// it early with a report of the span measured so far.
///
/// # Errors
/// As [`run_blocking`].
pub async fn run(
    options: &ThroughputOptions,
    stop: &CancellationToken,
    mut on_interval: impl FnMut(&IntervalRecord) + Send,
) -> Result<(ThroughputReport, Option<Error>)> {
    let roles = options.direction.roles(options.streams);
    let mut streams = Vec::with_capacity(roles.len());
    let mut tokens = Vec::new();
    for (index, role) in roles.iter().enumerate() {
        let (stream, token) = open(options, &role.greeting()).await?;
        streams.push(stream);
        if let Some(token) = token {
            tokens.push((index, token));
        }
    }
    let mut watches = match options.interval {
        Some(_) if !tokens.is_empty() => {
            Watches::Opening(tokio::spawn(open_watches(options.clone(), tokens)))
        }
        _ => Watches::Open(Vec::new()),
    };
    let probe = match options.latency {
        true => Some(open(options, &StreamRole::Ping.greeting()).await?.0),
        false => None,
    };
    let cpu_before = super::process_cpu_time();
    let start = Instant::now();
    let end = start + options.duration;
    // Every connection stops when this is cancelled: at `end`, or earlier on `stop`.
    let finish = stop.child_token();
    let mut lanes = Vec::with_capacity(streams.len());
    let mut tasks = Vec::with_capacity(streams.len());
    for (index, (stream, role)) in streams.into_iter().zip(roles).enumerate() {
        let bytes = Arc::new(AtomicU64::new(0));
        let asks = (role == StreamRole::Down).then(|| Arc::new(ReadingAsks::default()));
        let task_asks = asks.clone();
        lanes.push(Lane {
            number: index + 1,
            role,
            socket: duplicate_socket(&stream),
            bytes: Arc::clone(&bytes),
            last_bytes: 0,
            last_info: None,
            intervals: Vec::new(),
            last_sender: None,
            asks,
        });
        let chunk = options.chunk;
        let finish = finish.clone();
        tasks.push(tokio::spawn(async move {
            match role {
                StreamRole::Down => {
                    let asks = task_asks.unwrap_or_default();
                    receive(stream, &bytes, &finish, chunk, &asks).await
                }
                _ => send(stream, &bytes, &finish, chunk).await,
            }
        }));
    }
    let times = Arc::new(Mutex::new(ProbeTimes::default()));
    let prober =
        probe.map(|stream| tokio::spawn(run_probe(stream, Arc::clone(&times), finish.clone())));
    let ended = tick(
        options,
        (&mut lanes, &mut watches),
        &times,
        (start, end),
        &finish,
        &mut on_interval,
    )
    .await;
    finish.cancel();
    watches.close().await;
    let measured = ended.saturating_duration_since(start);
    let mut first_error = None;
    let mut summaries = Vec::with_capacity(lanes.len());
    for (lane, task) in lanes.iter().zip(tasks) {
        let lane_end = task.await.unwrap_or_else(|e| LaneEnd {
            server_received: None,
            sender_readings: Vec::new(),
            error: Some(Error::Io {
                doing: "running a throughput connection".into(),
                source: std::io::Error::other(e.to_string()),
            }),
        });
        summaries.push(summarize(lane, &lane_end, measured));
        if first_error.is_none() {
            first_error = lane_end.error;
        }
    }
    if let Some(prober) = prober
        && let Ok(Some(e)) = prober.await
        && first_error.is_none()
    {
        first_error = Some(e);
    }
    let latency = match options.latency {
        true => times.lock().ok().map(|t| LatencyFigures::of(&t.total)),
        false => None,
    };
    let rate_of = |role: StreamRole| {
        summaries
            .iter()
            .filter(|s| s.direction == role)
            .map(|s| s.bits_per_second)
            .fold(0.0, |sum, rate| sum + rate)
    };
    let report = ThroughputReport {
        kind: "end",
        endpoint: options.endpoint.to_string(),
        seconds: measured.as_secs_f64(),
        up_bits_per_second: rate_of(StreamRole::Up),
        down_bits_per_second: rate_of(StreamRole::Down),
        streams: summaries,
        latency,
        client_cpu_seconds: super::process_cpu_time()
            .saturating_sub(cpu_before)
            .as_secs_f64(),
    };
    Ok((report, first_error))
}

/// One stream's final figures.
fn summarize(lane: &Lane, ended: &LaneEnd, measured: Duration) -> StreamSummary {
    let bytes = lane.bytes.load(Ordering::Relaxed);
    let mut summary = StreamSummary {
        stream: lane.number,
        direction: lane.role,
        bytes,
        bits_per_second: bits_per_second(bytes, measured),
        server_received: ended.server_received,
        retransmits: None,
        interval_bits_per_second: None,
        interval_retransmits: None,
        interval_cwnd_bytes: None,
        interval_srtt_us: None,
        interval_rttvar_us: None,
        interval_delivery_rate: None,
        sender_intervals: sender_intervals(&ended.sender_readings),
        udp: None,
        error: ended.error.as_ref().map(ToString::to_string),
    };
    let intervals: Vec<&StreamInterval> = lane.intervals.iter().collect();
    summary.spread_over(&intervals);
    summary
}

/// The intervals' `TCP_INFO` figures from readings at each interval's end.
fn sender_intervals(readings: &[TcpInfo]) -> Vec<TcpInterval> {
    let mut before = None;
    readings
        .iter()
        .map(|now| {
            let interval = TcpInterval::between(before, *now);
            before = Some(now);
            interval
        })
        .collect()
}

/// A rate from a byte count over a span.
pub fn bits_per_second(bytes: u64, span: Duration) -> f64 {
    let seconds = span.as_secs_f64();
    if seconds <= 0.0 {
        return 0.0;
    }
    bytes as f64 * 8.0 / seconds
}

/// Emits a record at every interval boundary (and at the end) until `end`, or until
/// `finish` is cancelled (the last record then covers the partial interval); returns
/// when the measured span ended.
async fn tick(
    options: &ThroughputOptions,
    (lanes, watches): (&mut [Lane], &mut Watches),
    times: &Mutex<ProbeTimes>,
    (start, end): (Instant, Instant),
    finish: &CancellationToken,
    on_interval: &mut (impl FnMut(&IntervalRecord) + Send),
) -> Instant {
    let mut from = start;
    for k in 1u32.. {
        let boundary = match options.interval {
            Some(every) => start.checked_add(every * k).map_or(end, |t| t.min(end)),
            None => end,
        };
        let to = tokio::select! {
            () = tokio::time::sleep_until(boundary) => boundary,
            () = finish.cancelled() => Instant::now().min(boundary),
        };
        if let Some(every) = options.interval {
            let mut none_yet = Vec::new();
            let watches = watches.ready().await.unwrap_or(&mut none_yet);
            ask_senders(watches).await;
            let mut record = interval_record(lanes, times, options.latency, start, from, to);
            let wait = SENDER_WAIT.min(every / 2);
            let readings = sender_readings(watches, Instant::now() + wait).await;
            attach_sender_readings(&mut record, lanes, readings);
            on_interval(&record);
        }
        if to >= end || finish.is_cancelled() {
            return to;
        }
        from = to;
    }
    end
}

/// Reads every lane's counter and `TCP_INFO` for the interval `from..to`.
fn interval_record(
    lanes: &mut [Lane],
    times: &Mutex<ProbeTimes>,
    latency: bool,
    start: Instant,
    from: Instant,
    to: Instant,
) -> IntervalRecord {
    let span = to.saturating_duration_since(from);
    let mut streams = Vec::with_capacity(lanes.len());
    for lane in lanes.iter_mut() {
        let now = lane.bytes.load(Ordering::Relaxed);
        let bytes = now.saturating_sub(lane.last_bytes);
        lane.last_bytes = now;
        if let Some(asks) = &lane.asks {
            asks.asked.fetch_add(1, Ordering::Relaxed);
            asks.wake.notify_one();
        }
        let info = lane
            .socket
            .as_ref()
            .and_then(|fd| tcp_info::read(fd.as_fd()));
        let tcp = info.map(|info| TcpInterval::between(lane.last_info.as_ref(), info));
        lane.last_info = info.or(lane.last_info);
        let figures = StreamInterval {
            stream: lane.number,
            direction: lane.role,
            bytes,
            bits_per_second: bits_per_second(bytes, span),
            tcp,
            sender_tcp: None,
            datagrams: None,
        };
        lane.intervals.push(figures.clone());
        streams.push(figures);
    }
    let latency = match latency {
        true => times.lock().ok().map(|mut t| {
            let figures = LatencyFigures::of(&t.interval);
            t.interval = LatencyHistogram::new();
            figures
        }),
        false => None,
    };
    IntervalRecord {
        kind: "interval",
        start: from.saturating_duration_since(start).as_secs_f64(),
        end: to.saturating_duration_since(start).as_secs_f64(),
        total_bits_per_second: streams.iter().map(|s| s.bits_per_second).sum(),
        streams,
        latency,
    }
}

/// A duplicate of a TCP connection's socket (TLS: the socket under it), so the ticker
/// (or the server's `down` side) reads `TCP_INFO` while the task owns the stream; `None`
/// for Unix sockets.
pub(crate) fn duplicate_socket(stream: &Stream) -> Option<OwnedFd> {
    let fd: BorrowedFd<'_> = match stream {
        Stream::Tcp(tcp) => tcp.as_fd(),
        Stream::Tls(tls) => tls.get_ref().0.as_fd(),
        Stream::Unix(_) => return None,
    };
    fd.try_clone_to_owned().ok()
}

/// Connects and sends `greeting` (a role's, or a watch line); returns once the server
/// has agreed, with the token it gave the connection (down connections over TCP).
async fn open(options: &ThroughputOptions, greeting: &[u8]) -> Result<(Stream, Option<u64>)> {
    let endpoint = &options.endpoint;
    let mut stream = connect_stream(endpoint, options.connect.clone()).await?;
    let greet = async {
        stream.write_all(greeting).await?;
        read_line(&mut stream).await
    };
    let not_perf = || Error::ClosedEarly {
        peer: endpoint.to_string(),
        during: "before agreeing to a throughput test; is it `sockit serve --perf`?".into(),
    };
    match tokio::time::timeout(options.connect.timeout, greet).await {
        Ok(Ok(line)) => match wire::parse_accepted(&line) {
            Some(token) => Ok((stream, token)),
            None => Err(not_perf()),
        },
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(not_perf()),
        Ok(Err(e)) => Err(Error::exchange(
            e,
            endpoint.to_string(),
            "while starting a throughput test",
        )),
        Err(_) => Err(Error::Timeout {
            doing: format!(
                "waiting for {endpoint} to agree to a throughput test (is it `sockit serve --perf`?)"
            ),
            after: options.connect.timeout,
        }),
    }
}

/// Opens the watches of the down connections that have tokens (`(lane index, token)`),
/// [`wire::MAX_WATCHED`] to a watch.
///
/// # Errors
/// As [`open`].
async fn open_watches(
    options: ThroughputOptions,
    tokens: Vec<(usize, u64)>,
) -> Result<Vec<SenderWatch>> {
    let mut watches = Vec::new();
    for group in tokens.chunks(wire::MAX_WATCHED) {
        let named: Vec<u64> = group.iter().map(|(_, token)| *token).collect();
        let (stream, _) = open(&options, &wire::watch_line(&named)).await?;
        watches.push(SenderWatch {
            stream: BufReader::new(stream),
            lanes: group.iter().map(|(lane, _)| *lane).collect(),
            asked: 0,
            line: Vec::new(),
        });
    }
    Ok(watches)
}

/// Asks every watch for the senders' readings now (one byte each); a watch that fails
/// is dropped (its streams' lines then lack the sender's figures).
async fn ask_senders(watches: &mut Vec<SenderWatch>) {
    let mut kept = Vec::with_capacity(watches.len());
    for mut watch in watches.drain(..) {
        let ask = tokio::time::timeout(SENDER_WAIT, watch.stream.get_mut().write_all(b"?"));
        if let Ok(Ok(())) = ask.await {
            watch.asked += 1;
            kept.push(watch);
        }
    }
    *watches = kept;
}

/// The readings the watches answer by `deadline`, as `(lane index, reading)`; a watch
/// that fails or answers nonsense is dropped, one that is late keeps its place (its
/// late answer is skipped next time).
async fn sender_readings(
    watches: &mut Vec<SenderWatch>,
    deadline: Instant,
) -> Vec<(usize, TcpInfo)> {
    let mut readings = Vec::new();
    let mut kept = Vec::with_capacity(watches.len());
    for mut watch in watches.drain(..) {
        match tokio::time::timeout_at(deadline, watch_answer(&mut watch)).await {
            Ok(Ok(answer)) => {
                let named = watch.lanes.iter().zip(answer);
                readings.extend(named.filter_map(|(lane, info)| Some((*lane, info?))));
                kept.push(watch);
            }
            Ok(Err(_)) => {}
            Err(_) => kept.push(watch),
        }
    }
    *watches = kept;
    readings
}

/// Reads a watch's lines until the answer to its latest ask (older ones are skipped).
async fn watch_answer(watch: &mut SenderWatch) -> std::io::Result<Vec<Option<TcpInfo>>> {
    loop {
        read_bounded_line(&mut watch.stream, &mut watch.line, INFO_LINE_LIMIT).await?;
        let parsed = wire::parse_info(&watch.line);
        watch.line.clear();
        match parsed {
            Some((asks, readings)) if asks >= watch.asked => return Ok(readings),
            Some(_) => {}
            None => return Err(std::io::ErrorKind::InvalidData.into()),
        }
    }
}

/// Appends one line (with its newline) to `line`, at most `limit` bytes of it; safe to
/// cancel and call again with the same `line`.
async fn read_bounded_line(
    stream: &mut BufReader<Stream>,
    line: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<()> {
    loop {
        let available = stream.fill_buf().await?;
        if available.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let (taken, done) = match memchr::memchr(b'\n', available) {
            Some(at) => (at + 1, true),
            None => (available.len(), false),
        };
        line.extend_from_slice(&available[..taken]);
        stream.consume(taken);
        if done {
            return Ok(());
        }
        if line.len() > limit {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

/// Puts the senders' readings into the interval's record and the lanes' figures.
fn attach_sender_readings(
    record: &mut IntervalRecord,
    lanes: &mut [Lane],
    readings: Vec<(usize, TcpInfo)>,
) {
    for (index, info) in readings {
        let Some(lane) = lanes.get_mut(index) else {
            continue;
        };
        let figures = TcpInterval::between(lane.last_sender.as_ref(), info);
        lane.last_sender = Some(info);
        if let Some(kept) = lane.intervals.last_mut() {
            kept.sender_tcp = Some(figures);
        }
        if let Some(line) = record.streams.iter_mut().find(|s| s.stream == lane.number) {
            line.sender_tcp = Some(figures);
        }
    }
}

/// Ends the watches: half-closes each and reads to the server's close, so neither side
/// is left with unread bytes (a reset); bounded by [`CLOSING_TIME`].
async fn close_watches(watches: Vec<SenderWatch>) {
    let closing = async {
        for mut watch in watches {
            if watch.stream.get_mut().shutdown().await.is_ok() {
                let mut rest = Vec::new();
                let _ = (&mut watch.stream)
                    .take(INFO_LINE_LIMIT as u64 * 4)
                    .read_to_end(&mut rest)
                    .await;
            }
        }
    };
    let _ = tokio::time::timeout(CLOSING_TIME, closing).await;
}

/// Reads one control line, byte by byte so nothing after it is taken (it is data).
async fn read_line(stream: &mut Stream) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(32);
    while line.len() < wire::MAX_CONTROL_LINE {
        let byte = stream.read_u8().await?;
        line.push(byte);
        if byte == b'\n' {
            break;
        }
    }
    Ok(line)
}

/// Up: writes filler until `finish`, then half-closes and reads the server's count.
async fn send(
    mut stream: Stream,
    bytes: &AtomicU64,
    finish: &CancellationToken,
    chunk: usize,
) -> LaneEnd {
    let filler = super::filler(chunk);
    let deadline = finish.cancelled();
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            () = &mut deadline => break,
            written = stream.write(&filler) => match written {
                Ok(n) if n > 0 => { bytes.fetch_add(n as u64, Ordering::Relaxed); }
                Ok(_) => return failed(std::io::ErrorKind::WriteZero.into(), "while sending"),
                Err(e) => return failed(e, "while sending"),
            },
        }
    }
    let closing = async {
        stream.shutdown().await?;
        read_line(&mut stream).await
    };
    match tokio::time::timeout(CLOSING_TIME, closing).await {
        Ok(Ok(line)) => LaneEnd {
            server_received: wire::parse_received(&line),
            ..LaneEnd::default()
        },
        Ok(Err(e)) => failed(e, "while reading the server's count"),
        Err(_) => LaneEnd::default(),
    }
}

/// Down: reads until `finish`, sending a byte for each of the ticker's asks (the server
/// reads its `TCP_INFO` then); then half-closes and reads the server's readings after
/// the last filler.
async fn receive(
    mut stream: Stream,
    bytes: &AtomicU64,
    finish: &CancellationToken,
    chunk: usize,
    asks: &ReadingAsks,
) -> LaneEnd {
    let mut buffer = vec![0u8; chunk];
    let mut answered = 0u64;
    let deadline = finish.cancelled();
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            biased;
            () = &mut deadline => break,
            () = asks.wake.notified() => {
                if let Err(e) = ask_for_readings(&mut stream, asks, &mut answered).await {
                    return failed(e, "while asking for the server's TCP_INFO");
                }
            }
            read = stream.read(&mut buffer) => match read {
                Ok(0) => return failed(std::io::ErrorKind::UnexpectedEof.into(), "while receiving"),
                Ok(n) => { bytes.fetch_add(n as u64, Ordering::Relaxed); }
                Err(e) => return failed(e, "while receiving"),
            },
        }
    }
    let closing = async {
        ask_for_readings(&mut stream, asks, &mut answered).await?;
        stream.shutdown().await?;
        read_sent_line(&mut stream, &mut buffer).await
    };
    // What arrives after the end is not counted; a slow close is not a failure.
    let sender_readings = match tokio::time::timeout(CLOSING_TIME, closing).await {
        Ok(Ok(tail)) => wire::parse_sent(&tail).unwrap_or_default(),
        _ => Vec::new(),
    };
    LaneEnd {
        sender_readings,
        ..LaneEnd::default()
    }
}

/// Sends one byte per ask not yet answered.
async fn ask_for_readings(
    stream: &mut Stream,
    asks: &ReadingAsks,
    answered: &mut u64,
) -> std::io::Result<()> {
    let asked = asks.asked.load(Ordering::Relaxed);
    while *answered < asked {
        let n = (asked - *answered).min(64) as usize;
        stream.write_all(&[b'?'; 64][..n]).await?;
        *answered += n as u64;
    }
    Ok(())
}

/// Reads to the server's EOF; returns what came from the first newline on (the `sent`
/// line after the filler), at most [`SENT_LINE_LIMIT`] bytes of it.
async fn read_sent_line(stream: &mut Stream, buffer: &mut [u8]) -> std::io::Result<Vec<u8>> {
    let mut tail: Option<Vec<u8>> = None;
    loop {
        let n = stream.read(buffer).await?;
        if n == 0 {
            return Ok(tail.unwrap_or_default());
        }
        let got = &buffer[..n];
        match &mut tail {
            Some(tail) => {
                let room = SENT_LINE_LIMIT.saturating_sub(tail.len());
                tail.extend_from_slice(&got[..n.min(room)]);
            }
            None => {
                if let Some(at) = memchr::memchr(b'\n', got) {
                    let rest = &got[at..];
                    tail = Some(rest[..rest.len().min(SENT_LINE_LIMIT)].to_vec());
                }
            }
        }
    }
}

/// A connection that failed mid-test.
fn failed(source: std::io::Error, during: &str) -> LaneEnd {
    LaneEnd {
        error: Some(Error::exchange(source, "the server", during)),
        ..LaneEnd::default()
    }
}

/// The latency probe: a small message and its echo every [`PROBE_GAP`] until `finish`.
async fn run_probe(
    mut stream: Stream,
    times: Arc<Mutex<ProbeTimes>>,
    finish: CancellationToken,
) -> Option<Error> {
    let mut echo = [0u8; PROBE_SIZE];
    let mut next = Instant::now();
    let mut round = 0u64;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = finish.cancelled() => break,
        }
        next += PROBE_GAP;
        round += 1;
        let sent = Instant::now();
        let trip = async {
            stream.write_all(&round.to_be_bytes()).await?;
            stream.read_exact(&mut echo).await
        };
        let trip = async {
            tokio::select! {
                done = trip => Some(done),
                () = finish.cancelled() => None,
            }
        };
        match trip.await {
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                return Some(Error::exchange(e, "the server", "during the latency probe"));
            }
            None => break,
        }
        let rtt = sent.elapsed();
        if let Ok(mut t) = times.lock() {
            t.interval.record(rtt);
            t.total.record(rtt);
        }
    }
    let _ = stream.shutdown().await;
    None
}
