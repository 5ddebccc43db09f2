//! UDP throughput tests at a set bitrate (iperf3 `-u -b`) against `sockit serve --perf`.
//!
//! Each flow is a thread with a connected socket of its own that sends `--size`-byte
//! datagrams on the [`Pacer`]'s schedule, in small batches of one `sendmmsg(2)` each
//! ([`Pacer::batch`]: the datagrams due within 100 µs), each stamped with a
//! [`DatagramHeader`] (flow id, sequence number, send time: one clock reading per
//! batch). It records how far each datagram left from its due time; the report gives
//! the 99th percentile of that error. At the end it sends an `End`
//! datagram (repeated until answered, a few times at most) and reads back the server's
//! [`FlowReport`]: loss, duplicates, reordering and jitter, in total and per interval, so
//! the user sees one report with both sides.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::flow_stats::FlowReport;
use super::histogram::LatencyHistogram;
use super::pacer::{MAX_BATCH, Pacer};
use super::throughput::bits_per_second;
use super::throughput_report::{
    IntervalRecord, StreamInterval, StreamSummary, ThroughputReport, UdpSummary,
};
use super::wire::{DATAGRAM_HEADER, DatagramHeader, DatagramKind, StreamRole};
use std::net::SocketAddr;

use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, Type};

use crate::endpoint::{Endpoint, Host};
use crate::error::{Error, Result};
use crate::transport::Carrier;
use crate::transport::{ConnectOptions, DatagramSocket, MAX_DATAGRAM, batch};

/// How many times the end of a flow is sent before giving up on the receiver's report.
const END_TRIES: u32 = 10;

/// How long each try waits for the report.
const END_WAIT: Duration = Duration::from_millis(200);

/// How often a waiting sender or ticker looks for a stop.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// Highest bitrate accepted: beyond it the figure is a typo, not a plan.
pub const MAX_BITRATE: f64 = 1e12;

/// Everything that defines one UDP throughput test.
#[derive(Debug, Clone)]
pub struct UdpStreamOptions {
    /// The server (`sockit serve --perf` on a udp:// or unixgram: endpoint).
    pub endpoint: Endpoint,
    /// Parallel flows, each at `bitrate`.
    pub streams: usize,
    /// Bits per second per flow (UDP payload, header included).
    pub bitrate: f64,
    /// Bytes per datagram, at least [`DATAGRAM_HEADER`].
    pub size: usize,
    /// The measured span.
    pub duration: Duration,
    /// A report line every this long (`None`: the final report only).
    pub interval: Option<Duration>,
    /// Connect options (source address, socket options).
    pub connect: ConnectOptions,
}

impl UdpStreamOptions {
    /// Checks the rate and size.
    ///
    /// # Errors
    /// [`Error::Usage`] naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.size < DATAGRAM_HEADER || self.size > MAX_DATAGRAM {
            return Err(Error::Usage(format!(
                "--size {}: a UDP throughput datagram is {DATAGRAM_HEADER} to {MAX_DATAGRAM} \
                 bytes ({DATAGRAM_HEADER} bytes of header)",
                self.size
            )));
        }
        if !(self.bitrate.is_finite() && self.bitrate > 0.0 && self.bitrate <= MAX_BITRATE) {
            return Err(Error::Usage(
                "--bitrate must be above 0 and at most 1T (bits per second)".into(),
            ));
        }
        Ok(())
    }
}

/// Parses a bitrate: a number with an optional k, M, G or T (powers of 1000), as iperf3
/// writes them.
///
/// # Errors
/// [`Error::Usage`] for anything else, zero, negative or over [`MAX_BITRATE`].
pub fn parse_bitrate(text: &str) -> Result<f64> {
    let bad = || {
        Error::Usage(format!(
            "--bitrate {text:?}: write bits per second above 0 and at most 1T, such as 100M or 1G"
        ))
    };
    let trimmed = text.trim();
    let (number, factor) = match trimmed.char_indices().last() {
        Some((at, unit)) if unit.is_ascii_alphabetic() => {
            let factor = match unit.to_ascii_lowercase() {
                'k' => 1e3,
                'm' => 1e6,
                'g' => 1e9,
                't' => 1e12,
                _ => return Err(bad()),
            };
            (&trimmed[..at], factor)
        }
        _ => (trimmed, 1.0),
    };
    let value = number.parse::<f64>().map_err(|_| bad())? * factor;
    if value.is_finite() && value > 0.0 && value <= MAX_BITRATE {
        Ok(value)
    } else {
        Err(bad())
    }
}

/// What one flow's thread shares with the ticker while it runs.
#[derive(Default)]
struct FlowCounters {
    bytes: AtomicU64,
    datagrams: AtomicU64,
}

/// What a flow's thread returns.
struct FlowEnd {
    sent: u64,
    sent_per_interval: Vec<u64>,
    pacing: LatencyHistogram,
    receiver: Option<FlowReport>,
    /// Multicast: the reports of the other receivers.
    more_receivers: Vec<FlowReport>,
    error: Option<Error>,
}

/// Runs a test (call from a blocking context); `on_interval` gets each interval's
/// record (sender's figures) as it ends.
///
/// # Errors
/// A socket cannot be opened.
pub fn run_blocking(
    options: &UdpStreamOptions,
    stop: &CancellationToken,
    mut on_interval: impl FnMut(&IntervalRecord),
) -> Result<(ThroughputReport, Option<Error>)> {
    options.validate()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            doing: "starting the UDP test's runtime".into(),
            source,
        })?;
    let mut sockets = Vec::with_capacity(options.streams);
    for _ in 0..options.streams {
        let socket = match multicast_group(&options.endpoint) {
            Some(group) => group_sender(group, options)?,
            None => blocking(runtime.block_on(DatagramSocket::connect_with_options(
                &options.endpoint,
                &options.connect,
            ))?)?,
        };
        sockets.push(socket);
    }
    drop(runtime);
    let cpu_before = super::process_cpu_time();
    let start = Instant::now() + Duration::from_millis(5);
    let end = start + options.duration;
    let mut counters = Vec::with_capacity(sockets.len());
    let mut threads = Vec::with_capacity(sockets.len());
    for (index, socket) in sockets.into_iter().enumerate() {
        let shared = Arc::new(FlowCounters::default());
        counters.push(Arc::clone(&shared));
        let options = options.clone();
        let stop = stop.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("sockit-udp-{index}"))
            .spawn(move || send_flow(&socket, &options, &shared, (start, end), &stop));
        threads.push(spawned.map_err(|source| Error::Io {
            doing: "starting a UDP sender thread".into(),
            source,
        })?);
    }
    let (intervals, ended) = tick(options, &counters, (start, end), stop, &mut on_interval);
    let measured = ended.saturating_duration_since(start);
    let mut summaries = Vec::with_capacity(threads.len());
    let mut first_error = None;
    for (index, thread) in threads.into_iter().enumerate() {
        let ended = thread.join().unwrap_or_else(|_| FlowEnd {
            sent: 0,
            sent_per_interval: Vec::new(),
            pacing: LatencyHistogram::new(),
            receiver: None,
            more_receivers: Vec::new(),
            error: Some(Error::Io {
                doing: "sending a UDP flow".into(),
                source: std::io::Error::other("the sender thread stopped"),
            }),
        });
        let mine: Vec<&StreamInterval> = intervals.iter().filter_map(|r| r.get(index)).collect();
        let bytes = counters[index].bytes.load(Ordering::Relaxed);
        let pacing = ended.pacing.percentiles();
        let mut summary = StreamSummary {
            stream: index + 1,
            direction: StreamRole::Up,
            bytes,
            bits_per_second: bits_per_second(bytes, measured),
            server_received: ended.receiver.as_ref().map(|r| r.total.bytes),
            retransmits: None,
            interval_bits_per_second: None,
            interval_retransmits: None,
            interval_cwnd_bytes: None,
            interval_srtt_us: None,
            interval_rttvar_us: None,
            interval_delivery_rate: None,
            sender_intervals: Vec::new(),
            udp: Some(UdpSummary {
                sent: ended.sent,
                pacing_error_p99_us: pacing.p99.as_secs_f64() * 1e6,
                pacing_error_max_us: pacing.max.as_secs_f64() * 1e6,
                receiver: ended.receiver,
                more_receivers: ended.more_receivers,
                sent_per_interval: ended.sent_per_interval,
            }),
            error: ended.error.as_ref().map(ToString::to_string),
        };
        summary.spread_over(&mine);
        summaries.push(summary);
        if first_error.is_none() {
            first_error = ended.error;
        }
    }
    let up = summaries
        .iter()
        .map(|s| s.bits_per_second)
        .fold(0.0, |sum, rate| sum + rate);
    Ok((
        ThroughputReport {
            kind: "end",
            endpoint: options.endpoint.to_string(),
            seconds: measured.as_secs_f64(),
            streams: summaries,
            up_bits_per_second: up,
            down_bits_per_second: 0.0,
            latency: None,
            client_cpu_seconds: super::process_cpu_time()
                .saturating_sub(cpu_before)
                .as_secs_f64(),
        },
        first_error,
    ))
}

/// The group and port of a multicast endpoint (`udp://239.1.2.3:5000`).
fn multicast_group(endpoint: &Endpoint) -> Option<SocketAddr> {
    match endpoint {
        Endpoint::Udp(hp) => match hp.host {
            Host::Ip(ip) if ip.is_multicast() => Some(SocketAddr::new(ip, hp.port)),
            _ => None,
        },
        _ => None,
    }
}

/// A sender to a multicast group: not connected, since every receiver's report comes
/// back from its own unicast address.
fn group_sender(group: SocketAddr, options: &UdpStreamOptions) -> Result<BlockingSocket> {
    let failed = |source| Error::Io {
        doing: format!("opening a socket to send to {group}"),
        source,
    };
    let socket = Socket::new(Domain::for_address(group), Type::DGRAM, Some(Protocol::UDP))
        .map_err(failed)?;
    options
        .connect
        .socket
        .apply(&SockRef::from(&socket), group, Carrier::Udp)?;
    Ok(BlockingSocket::Group {
        socket: socket.into(),
        group,
    })
}

/// The socket as a blocking std socket, for a sender thread.
fn blocking(socket: DatagramSocket) -> Result<BlockingSocket> {
    let failed = |source| Error::Io {
        doing: "preparing a UDP sender".into(),
        source,
    };
    match socket {
        DatagramSocket::Udp(s) => {
            let s = s.into_std().map_err(failed)?;
            s.set_nonblocking(false).map_err(failed)?;
            Ok(BlockingSocket::Udp(s))
        }
        DatagramSocket::Socks(_) => Err(Error::Usage(
            "a UDP throughput test sends directly, not through --proxy".into(),
        )),
        DatagramSocket::Unix(s, guard) => {
            let s = s.into_std().map_err(failed)?;
            s.set_nonblocking(false).map_err(failed)?;
            Ok(BlockingSocket::Unix {
                socket: s,
                _guard: guard,
            })
        }
    }
}

/// A connected datagram socket in blocking mode.
enum BlockingSocket {
    Udp(std::net::UdpSocket),
    /// To a multicast group; replies come from each receiver's own address.
    Group {
        socket: std::net::UdpSocket,
        group: SocketAddr,
    },
    Unix {
        socket: std::os::unix::net::UnixDatagram,
        /// Removes the client's own socket file when the test ends.
        _guard: Option<crate::transport::UnixPathGuard>,
    },
}

impl BlockingSocket {
    fn send(&self, datagram: &[u8]) -> std::io::Result<usize> {
        match self {
            BlockingSocket::Udp(s) => s.send(datagram),
            BlockingSocket::Group { socket, group } => socket.send_to(datagram, group),
            BlockingSocket::Unix { socket, .. } => socket.send(datagram),
        }
    }

    /// Sends `datagrams`, back-to-back datagrams of `size` bytes (at most
    /// [`MAX_BATCH`]), in one `sendmmsg(2)`; returns how many went.
    fn send_batch(&self, datagrams: &[u8], size: usize) -> std::io::Result<usize> {
        let group = match self {
            BlockingSocket::Group { group, .. } => Some(SockAddr::from(*group)),
            _ => None,
        };
        let fd = match self {
            BlockingSocket::Udp(s) => s.as_raw_fd(),
            BlockingSocket::Group { socket, .. } => socket.as_raw_fd(),
            BlockingSocket::Unix { socket, .. } => socket.as_raw_fd(),
        };
        let datagrams = datagrams
            .chunks(size)
            .take(MAX_BATCH)
            .map(|datagram| (datagram, group.as_ref()));
        batch::send_batch_waiting(fd, datagrams)
    }

    fn recv(&self, buffer: &mut [u8], wait: Duration) -> std::io::Result<usize> {
        match self {
            BlockingSocket::Udp(s) => {
                s.set_read_timeout(Some(wait))?;
                s.recv(buffer)
            }
            BlockingSocket::Group { socket, .. } => {
                socket.set_read_timeout(Some(wait))?;
                socket.recv_from(buffer).map(|(n, _)| n)
            }
            BlockingSocket::Unix { socket, .. } => {
                socket.set_read_timeout(Some(wait))?;
                socket.recv(buffer)
            }
        }
    }
}

/// One flow: send on schedule until `end`, then collect the receiver's report.
fn send_flow(
    socket: &BlockingSocket,
    options: &UdpStreamOptions,
    counters: &FlowCounters,
    (start, end): (Instant, Instant),
    stop: &CancellationToken,
) -> FlowEnd {
    let flow = flow_id();
    let interval_ms = options
        .interval
        .map_or(0, |i| u32::try_from(i.as_millis()).unwrap_or(u32::MAX));
    let mut sending = Sending::new(options, start, interval_ms);
    let mut error = None;
    let end_ns = sending.start_ns + u64::try_from((end - start).as_nanos()).unwrap_or(u64::MAX);
    while let Some(first_due) = sending
        .pacer
        .due_ns(sending.start_ns, sending.sent)
        .filter(|due| *due < end_ns)
    {
        let count = sending.batch_before(end_ns);
        // The batch leaves when its middle datagram is due.
        let middle = sending
            .pacer
            .due_ns(sending.start_ns, sending.sent + (count as u64 - 1) / 2)
            .unwrap_or(first_due);
        if !wait_unless_stopped(middle, stop) {
            break;
        }
        if let Err(e) = sending.send_batch(socket, flow, count, counters) {
            error = Some(match e.kind() {
                std::io::ErrorKind::ConnectionRefused => Error::Refused {
                    endpoint: options.endpoint.clone(),
                },
                _ => Error::exchange(e, options.endpoint.to_string(), "while sending datagrams"),
            });
            break;
        }
    }
    let sent = sending.sent;
    let mut receivers = match error {
        None => ask_for_report(socket, flow, sent),
        Some(_) => Vec::new(),
    };
    if error.is_none() && receivers.is_empty() {
        error = Some(Error::Timeout {
            doing: format!(
                "waiting for the receiver's report from {} (is it `sockit serve --perf`?)",
                options.endpoint
            ),
            after: END_WAIT * END_TRIES,
        });
    }
    let receiver = (!receivers.is_empty()).then(|| receivers.remove(0));
    FlowEnd {
        sent,
        sent_per_interval: sending.sent_per_interval,
        pacing: sending.pacing,
        receiver,
        more_receivers: receivers,
        error,
    }
}

/// A sender's state: the schedule, the batch's datagrams and what was sent.
struct Sending {
    pacer: Pacer,
    /// The schedule's start on the monotonic clock, ns.
    start_ns: u64,
    /// Room for a batch: [`Pacer::batch`] datagrams of `size` bytes, back to back.
    datagrams: Vec<u8>,
    size: usize,
    interval_ms: u32,
    pacing: LatencyHistogram,
    sent_per_interval: Vec<u64>,
    /// Datagrams sent (and the next one's sequence number).
    sent: u64,
}

impl Sending {
    fn new(options: &UdpStreamOptions, start: Instant, interval_ms: u32) -> Sending {
        Pacer::tighten_timer_slack();
        let pacer = Pacer::new(start, options.bitrate, options.size);
        let one = super::filler(options.size);
        Sending {
            pacer,
            start_ns: pacer.start_ns(),
            datagrams: one.repeat(pacer.batch()),
            size: options.size,
            interval_ms,
            pacing: LatencyHistogram::new(),
            sent_per_interval: Vec::new(),
            sent: 0,
        }
    }

    /// How many of the next batch are due before `end_ns` (at least 1).
    fn batch_before(&self, end_ns: u64) -> usize {
        let mut count = self.pacer.batch();
        while count > 1
            && self
                .pacer
                .due_ns(self.start_ns, self.sent + count as u64 - 1)
                .is_none_or(|due| due >= end_ns)
        {
            count -= 1;
        }
        count
    }

    /// Stamps the next `count` datagrams with one clock reading and sends them in one
    /// system call; records each one's pacing error.
    ///
    /// # Errors
    /// A send error other than a full buffer (a datagram the kernel drops for want of
    /// buffer space, ENOBUFS, is counted as sent and lost, as the receiver sees it).
    fn send_batch(
        &mut self,
        socket: &BlockingSocket,
        flow: u64,
        count: usize,
        counters: &FlowCounters,
    ) -> std::io::Result<()> {
        let now_ns = super::pacer::monotonic_ns();
        let sent_ns = now_ns.saturating_sub(self.start_ns);
        for (j, datagram) in self
            .datagrams
            .chunks_exact_mut(self.size)
            .take(count)
            .enumerate()
        {
            DatagramHeader {
                kind: DatagramKind::Data,
                flow,
                seq: self.sent + j as u64,
                sent_ns,
                interval_ms: self.interval_ms,
            }
            .write(datagram);
        }
        let mut done = 0;
        while done < count {
            let batch = &self.datagrams[done * self.size..count * self.size];
            match socket.send_batch(batch, self.size) {
                Ok(n) => done += n.max(1),
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => done += 1,
                Err(e) => return Err(e),
            }
        }
        for j in 0..count as u64 {
            let due = self
                .pacer
                .due_ns(self.start_ns, self.sent + j)
                .unwrap_or(now_ns);
            self.pacing
                .record(Duration::from_nanos(now_ns.abs_diff(due)));
        }
        if self.interval_ms > 0 {
            let index = (sent_ns / (u64::from(self.interval_ms) * 1_000_000)) as usize;
            if self.sent_per_interval.len() <= index {
                self.sent_per_interval.resize(index + 1, 0);
            }
            self.sent_per_interval[index] += count as u64;
        }
        self.sent += count as u64;
        counters
            .bytes
            .fetch_add((count * self.size) as u64, Ordering::Relaxed);
        counters
            .datagrams
            .fetch_add(count as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Waits until the monotonic clock reads `due_ns`, in slices at first, so a stop
/// (Ctrl-C) is seen within [`STOP_CHECK`] even at a slow rate; returns `false` when
/// stopped.
fn wait_unless_stopped(due_ns: u64, stop: &CancellationToken) -> bool {
    let check = STOP_CHECK.as_nanos() as u64;
    loop {
        let now = super::pacer::monotonic_ns();
        if due_ns.saturating_sub(now) <= check {
            break;
        }
        if stop.is_cancelled() {
            return false;
        }
        std::thread::sleep(STOP_CHECK);
    }
    Pacer::sleep_until_ns(due_ns);
    !stop.is_cancelled()
}

/// Sends the end of flow `flow` until the receiver's report comes back (a few tries);
/// to a multicast group, every receiver's report that comes back in the first window
/// that brings any.
fn ask_for_report(socket: &BlockingSocket, flow: u64, sent: u64) -> Vec<FlowReport> {
    let mut end = [0u8; DATAGRAM_HEADER];
    DatagramHeader {
        kind: DatagramKind::End,
        flow,
        seq: sent,
        sent_ns: 0,
        interval_ms: 0,
    }
    .write(&mut end);
    let mut buffer = vec![0u8; MAX_DATAGRAM + 1];
    let one_receiver = !matches!(socket, BlockingSocket::Group { .. });
    let mut reports = Vec::new();
    for _ in 0..END_TRIES {
        if socket.send(&end).is_err() {
            return reports;
        }
        let deadline = Instant::now() + END_WAIT;
        while let Some(wait) = deadline.checked_duration_since(Instant::now()) {
            let Ok(n) = socket.recv(&mut buffer, wait.max(Duration::from_millis(1))) else {
                break;
            };
            let Some(header) = DatagramHeader::read(&buffer[..n]) else {
                continue;
            };
            if header.kind == DatagramKind::Report
                && header.flow == flow
                && let Ok(report) = serde_json::from_slice(&buffer[DATAGRAM_HEADER..n])
            {
                reports.push(report);
                if one_receiver {
                    return reports;
                }
            }
        }
        if !reports.is_empty() {
            return reports;
        }
    }
    reports
}

/// A flow id unlikely to collide with another sender's: the clock and the process id
/// mixed (a collision only merges two flows' figures from the same address).
fn flow_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let thread = std::thread::current().id();
    let mut hash = std::hash::DefaultHasher::new();
    std::hash::Hash::hash(&(nanos, std::process::id(), thread), &mut hash);
    std::hash::Hasher::finish(&hash)
}

/// Emits each interval's sender-side record until `end` or a stop; returns them all,
/// stream by stream, and when the measured span ended.
fn tick(
    options: &UdpStreamOptions,
    counters: &[Arc<FlowCounters>],
    (start, end): (Instant, Instant),
    stop: &CancellationToken,
    on_interval: &mut impl FnMut(&IntervalRecord),
) -> (Vec<Vec<StreamInterval>>, Instant) {
    let mut all = Vec::new();
    let mut last: Vec<(u64, u64)> = vec![(0, 0); counters.len()];
    let mut from = start;
    for k in 1u32.. {
        let boundary = match options.interval {
            Some(every) => start.checked_add(every * k).map_or(end, |t| t.min(end)),
            None => end,
        };
        let to = sleep_until_or_stop(boundary, stop);
        if options.interval.is_none() {
            return (all, to);
        }
        let span = to.saturating_duration_since(from);
        let streams: Vec<StreamInterval> = counters
            .iter()
            .zip(last.iter_mut())
            .enumerate()
            .map(|(index, (c, last))| {
                let now = (
                    c.bytes.load(Ordering::Relaxed),
                    c.datagrams.load(Ordering::Relaxed),
                );
                let bytes = now.0.saturating_sub(last.0);
                let datagrams = now.1.saturating_sub(last.1);
                *last = now;
                StreamInterval {
                    stream: index + 1,
                    direction: StreamRole::Up,
                    bytes,
                    bits_per_second: bits_per_second(bytes, span),
                    tcp: None,
                    sender_tcp: None,
                    datagrams: Some(datagrams),
                }
            })
            .collect();
        let record = IntervalRecord {
            kind: "interval",
            start: from.saturating_duration_since(start).as_secs_f64(),
            end: to.saturating_duration_since(start).as_secs_f64(),
            total_bits_per_second: streams.iter().map(|s| s.bits_per_second).sum(),
            streams,
            latency: None,
        };
        on_interval(&record);
        all.push(record.streams);
        if to >= end || stop.is_cancelled() {
            return (all, to);
        }
        from = to;
    }
    (all, end)
}

/// Sleeps until `until`, or until `stop` (checked every [`STOP_CHECK`]); returns when
/// it woke.
fn sleep_until_or_stop(until: Instant, stop: &CancellationToken) -> Instant {
    loop {
        let now = Instant::now();
        if now >= until {
            return until;
        }
        if stop.is_cancelled() {
            return now;
        }
        std::thread::sleep(until.saturating_duration_since(now).min(STOP_CHECK));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrates_read_like_iperf3s() -> Result<()> {
        assert_eq!(parse_bitrate("100M")?, 100e6);
        assert_eq!(parse_bitrate("1G")?, 1e9);
        assert_eq!(parse_bitrate("2.5k")?, 2500.0);
        assert_eq!(parse_bitrate("64000")?, 64000.0);
        for bad in ["0", "-1M", "5X", "", "G", "2T", "nan", "inf"] {
            let error = parse_bitrate(bad).err().map(|e| e.to_string());
            assert!(error.is_some_and(|e| e.contains("--bitrate")), "{bad}");
        }
        Ok(())
    }
}
