//! The bench lane: the plain patterns driven from one epoll set per thread, without a
//! task, a future or a runtime wake-up per connection.
//!
//! Why it exists: with a task per connection, every exchange pays tokio's wake-up,
//! scheduling and readiness bookkeeping, timer and future moves on top of the system
//! calls; the C load generator (`../shared/peers/loadgen.c`) pays only the calls. Here each
//! thread registers its connections once in its own edge-triggered epoll set and waits in
//! it itself, as the server's fast lane does (`crate::server::lane`): one wake-up serves
//! every ready connection with a read and the next request's write.
//!
//! What it drives is decided in one place, [`LaneTarget::of`] (through
//! [`super::BenchOptions::engine`]): `hello`, `echo` and `udp` over TCP or UDP to an IP
//! address, or a Unix stream socket by path; replies that end at the first read or at a
//! byte count; no TLS, proxy, first message or regex. Closed and open loop, rate and
//! connect ramps alike. Everything else runs on the task engine ([`super::measure`]),
//! which is also the reference: the lane keeps its rules exactly:
//!
//! * closed loop: latency counts from the send (for `hello`, from before the connect);
//!   open loop: each connection follows its [`Schedule`], and a request counts from its
//!   due time when it goes out late, from the wake-up at it otherwise (the
//!   coordinated-omission correction of `measure::open_loop_start`); an exchange belongs
//!   to the measured span by its completion;
//! * a failure is counted by kind when it happens (the [`super::measure::Measured`] of its
//!   connection, the same tally the tasks keep), the connection is dropped and tried again
//!   after [`pause_after`] the failure (open loop: at the next due time); a reply slower
//!   than the timeout (from its send) is a timeout, and the connection (or datagram
//!   socket) is replaced at once, so a late reply is never taken for the next one's;
//! * bytes read past an exact reply are the next reply's start; a datagram is one reply;
//!   a reply as long as its request must repeat it ([`echoes`]).
//!
//! Per exchange: one clock read per event, the system calls (and for `hello` the socket's
//! creation, connect and registration), a histogram increment. Times are integers
//! ([`Nanos`] on `CLOCK_MONOTONIC`, the clock of `Instant`): the run's window, timetables
//! and timers are converted once ([`Clock`]), so that filing an exchange is a few
//! integer comparisons, and a small latency one add ([`StagedHistogram`]). The steps one
//! exchange runs through (advance, complete, begin, go, start, write, read, record) are
//! inlined into each other: as calls, their entries and exits cost as much as their
//! bodies. No allocation: the reply buffer is one per thread (a reply is checked as each
//! read comes, an echo against its request, so only its length is kept). Due times,
//! pauses and a connect ramp's openings wait in one heap of timers, whose earliest bounds
//! the wait in the epoll set (a millisecond's resolution, as tokio's timers); timeouts,
//! the interval log's boundaries and the progress bar are looked after by a sweep every
//! [`TICK`].

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};
use socket2::{Domain, SockAddr, SockRef, Socket, Type};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::driver::{FIRST_READ_SIZE, ReplyEnd, Target};
use super::histogram::StagedHistogram;
use super::intervals::{Phase as Filed, Recording};
use super::latencies::{Latencies, interval_boundary};
use super::measure::{FailureKind, Load, Measured, Plan, Schedule, pause_after, phase_of};
use super::progress::ProgressSlot;
use super::window::Window;
use super::{BenchOptions, Pattern};
use crate::clock::monotonic_ns;
use crate::endpoint::{Endpoint, Host, HostPort, UnixAddr};
use crate::error::Error;
use crate::transport::{
    MAX_DATAGRAM, Nagle, SocketOptions, close_uncancellable, connect_error, connect_uncancellable,
    recv_uncancellable, send_uncancellable, tcp_client_socket, udp_client,
};

/// How often timeouts, interval boundaries and the progress bar are looked at (and the
/// longest a wait in the epoll set lasts).
const TICK: Duration = Duration::from_millis(5);
/// Ready connections taken from the epoll set per wait.
const EVENTS_PER_WAIT: usize = 512;
/// Exchanges one connection completes in a row before the others get their turn (a
/// server that sends ahead could otherwise keep the thread on one connection).
const EXCHANGES_PER_TURN: usize = 8;

/// The longest request sure to leave in one segment on any path (IPv6's minimum MTU,
/// less headers and options).
const ONE_SEGMENT: usize = 1200;

/// Why a run does not fit the lane, in words for `--engine lane`.
pub type Unfit = &'static str;

/// Nanoseconds on `CLOCK_MONOTONIC` ([`monotonic_ns`]): every time the lane keeps.
type Nanos = u64;

/// The lane's clock, tied to `Instant` (the same clock) by one reading of each, so the
/// run's instants convert to [`Nanos`] and back.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// An instant ...
    instant: Instant,
    /// ... and the same moment in nanoseconds.
    nanos: Nanos,
}

impl Clock {
    /// Ties the two clocks together now.
    fn new() -> Clock {
        Clock {
            instant: Instant::now(),
            nanos: monotonic_ns(),
        }
    }

    /// The time now.
    #[inline]
    fn now() -> Nanos {
        monotonic_ns()
    }

    /// An instant in nanoseconds.
    fn nanos(&self, at: Instant) -> Nanos {
        match at.checked_duration_since(self.instant) {
            Some(after) => self.nanos.saturating_add(nanos_of(after)),
            None => self
                .nanos
                .saturating_sub(nanos_of(self.instant.saturating_duration_since(at))),
        }
    }

    /// Nanoseconds as an instant.
    fn instant(&self, at: Nanos) -> Instant {
        let instant = if at >= self.nanos {
            self.instant
                .checked_add(Duration::from_nanos(at - self.nanos))
        } else {
            self.instant
                .checked_sub(Duration::from_nanos(self.nanos - at))
        };
        instant.unwrap_or(self.instant)
    }
}

/// A duration in nanoseconds (saturating).
fn nanos_of(duration: Duration) -> Nanos {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Where the lane connects.
#[derive(Debug, Clone)]
enum Wire {
    /// TCP to an address.
    Tcp(SocketAddr),
    /// A Unix stream socket file.
    Unix(PathBuf),
    /// UDP to an address.
    Udp(SocketAddr),
}

/// When a stream reply is complete, of the ends the lane reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyLength {
    /// The first read that returns data.
    FirstRead,
    /// Exactly this many bytes.
    Exact(usize),
    /// As many bytes as the request.
    SameAsRequest,
}

/// A run the lane can drive: what [`LaneTarget::of`] found.
#[derive(Debug, Clone)]
pub struct LaneTarget {
    /// Where to connect.
    wire: Wire,
    /// Hello, echo or udp.
    pattern: Pattern,
    /// Where a stream reply ends.
    length: ReplyLength,
    /// The local side of every socket.
    socket: SocketOptions,
}

impl LaneTarget {
    /// The rule that sends a run to the lane: a plain transport, a plain reply (any load:
    /// closed or open loop, ramps). The reason it does not fit otherwise.
    ///
    /// # Errors
    /// The first option the lane does not drive, in words.
    pub fn of(options: &BenchOptions) -> Result<LaneTarget, Unfit> {
        if !options.proxies.is_empty() {
            return Err("--proxy");
        }
        if options.messages.first.is_some() {
            return Err("--first-message");
        }
        if options.reply.regex.is_some() {
            return Err("--reply-regex");
        }
        let length = match options.reply.end {
            ReplyEnd::FirstRead => ReplyLength::FirstRead,
            ReplyEnd::Bytes(n) => ReplyLength::Exact(n),
            ReplyEnd::SameAsRequest => ReplyLength::SameAsRequest,
            ReplyEnd::Until(_) | ReplyEnd::Match => return Err("--reply-until"),
        };
        if options.pattern == Pattern::Stream {
            return Err("the stream pattern");
        }
        let ip = |hp: &HostPort| match hp.host {
            Host::Ip(ip) => Ok(SocketAddr::new(ip, hp.port)),
            _ => Err("a host name (give an IP address)"),
        };
        let wire = match &options.endpoint {
            Endpoint::Tcp(hp) => Wire::Tcp(ip(hp)?),
            Endpoint::Udp(hp) => Wire::Udp(ip(hp)?),
            Endpoint::Unix(UnixAddr::Path(path)) => Wire::Unix(path.clone()),
            Endpoint::Unix(UnixAddr::Abstract(_)) => return Err("an abstract Unix socket name"),
            Endpoint::UnixDgram(_) => return Err("Unix datagram sockets"),
            Endpoint::Tls(_) => return Err("TLS"),
        };
        if let Wire::Tcp(addr) | Wire::Udp(addr) = wire
            && !options.socket.reaches(addr)
        {
            return Err("a --source of the other address family");
        }
        let mut socket = options.socket.clone();
        if options.pattern == Pattern::Hello && options.messages.longest() <= ONE_SEGMENT {
            // A hello request is one write on a fresh connection, which Nagle's algorithm
            // never holds back (nothing is unacknowledged yet): the same packets, one
            // system call fewer per exchange.
            socket.nagle = Nagle::On;
        }
        Ok(LaneTarget {
            wire,
            pattern: options.pattern,
            length,
            socket,
        })
    }

    /// The reply buffer one read may fill: as the task engine's (see `driver::Reply`).
    fn room(&self, target: &Target) -> usize {
        match (self.pattern, self.length) {
            (Pattern::Udp, _) => MAX_DATAGRAM + 1,
            (_, ReplyLength::FirstRead) => FIRST_READ_SIZE,
            (_, ReplyLength::Exact(n)) => n.max(FIRST_READ_SIZE),
            (_, ReplyLength::SameAsRequest) => target.messages.longest().max(FIRST_READ_SIZE),
        }
    }

    /// A new non-blocking socket, its connect begun (a datagram socket's done).
    fn open(&self, endpoint: &Endpoint) -> crate::Result<OwnedFd> {
        let refused = |e: io::Error| connect_error(e, endpoint);
        let begun = |result: io::Result<()>| match result {
            Err(e) if e.raw_os_error() != Some(libc::EINPROGRESS) => Err(refused(e)),
            _ => Ok(()),
        };
        match &self.wire {
            Wire::Tcp(addr) => {
                let socket = OwnedFd::from(tcp_client_socket(*addr, &self.socket)?);
                begun(connect_uncancellable(socket.as_fd(), addr))?;
                Ok(socket)
            }
            Wire::Unix(path) => {
                let socket =
                    Socket::new(Domain::UNIX, Type::STREAM.nonblocking(), None).map_err(refused)?;
                begun(SockAddr::unix(path).and_then(|addr| socket.connect(&addr)))?;
                Ok(socket.into())
            }
            Wire::Udp(addr) => {
                let socket = udp_client(*addr, &self.socket)?;
                socket.connect(addr).map_err(refused)?;
                Ok(socket.into())
            }
        }
    }
}

/// Where one connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No exchange under way: the next one begins when the lane gets to it.
    Idle,
    /// Echo: the connect is under way (untimed, as the task engine's `prepare`).
    Connecting,
    /// The request is being written.
    Sending,
    /// The reply is being read.
    Receiving,
    /// After a failure, until this time (closed loop's pause; open loop: none, the
    /// next request is due by the timetable).
    Paused(Nanos),
    /// Open loop: the next request is due at this time.
    Due(Nanos),
    /// A connect ramp: the connection opens at this time.
    Opening(Nanos),
}

/// What a step of reading or writing came to.
enum Turn {
    /// The request is written, or the reply is in.
    Done,
    /// The socket has no more to give or take for now: wait for its next edge.
    Wait,
    /// The call failed.
    Failed(io::Error),
    /// The reply is not the one expected.
    Refused(Error),
}

/// One connection of the lane.
struct Conn {
    /// The socket, registered in the epoll set under the connection's index.
    socket: Option<OwnedFd>,
    /// Where it stands.
    phase: Phase,
    /// When the exchange under way counts from: its send (closed loop), its due time or
    /// the wake-up at it (open loop, as `measure::open_loop_start`).
    started: Nanos,
    /// When the exchange under way went out (echo's untimed connect: when it began): the
    /// timeout runs from here.
    sent: Nanos,
    /// Open loop: the latency origin and due time of the request about to go out.
    origin: Option<(Nanos, Nanos)>,
    /// Open loop: how long after its due time the request under way went out.
    lag: Nanos,
    /// The connection's timetable.
    schedule: Schedule,
    /// The request under way: its place in the run's messages.
    request: usize,
    /// The next message's place.
    next: usize,
    /// Bytes of the request written.
    written: usize,
    /// Bytes of the reply read.
    filled: usize,
    /// Bytes read past the end of the last reply: the start of the next one.
    carried: usize,
    /// The socket may have data to read (an edge came, or the last read filled its room);
    /// with bytes carried from the last reply (`filled` > 0) the reply is read on as well.
    readable: bool,
    /// The socket may take data (an edge came, or it never refused any).
    writable: bool,
    /// Hello: a byte of the request went out, so the connect is known to have worked.
    confirmed: bool,
    /// What it measured.
    measured: Measured,
    /// Its counter on the progress bar.
    progress: Option<ProgressSlot>,
}

impl Conn {
    fn new(progress: Option<ProgressSlot>, schedule: Schedule, now: Nanos) -> Conn {
        Conn {
            socket: None,
            phase: Phase::Idle,
            started: now,
            sent: now,
            origin: None,
            lag: 0,
            schedule,
            request: 0,
            next: 0,
            written: 0,
            filled: 0,
            carried: 0,
            readable: false,
            writable: false,
            confirmed: false,
            measured: Measured::default(),
            progress,
        }
    }
}

/// What one thread's lane needs from the run.
#[derive(Debug, Clone)]
pub(super) struct LaneShare {
    /// What to drive.
    pub(super) lane: LaneTarget,
    /// The endpoint, the messages, the reply rule: shared with the task engine's drivers.
    pub(super) target: Target,
    /// Loop, connection count, timeout, ramps.
    pub(super) plan: Plan,
    /// The run-wide numbers of this thread's connections (their places in the
    /// timetable).
    pub(super) indices: Vec<usize>,
    /// Cancelled to end the run early (Ctrl-C).
    pub(super) stop: CancellationToken,
    /// With `--hlog` or `--plot`: where finished intervals go.
    pub(super) intervals: Option<Recording>,
}

/// A thread's epoll set, made before the go so that a failure shows at start-up.
pub(super) struct LanePoll {
    poll: Poll,
    registry: Registry,
}

impl LanePoll {
    /// A new epoll set.
    ///
    /// # Errors
    /// The system's refusal (out of descriptors or memory).
    pub(super) fn new() -> io::Result<LanePoll> {
        let poll = Poll::new()?;
        let registry = poll.registry().try_clone()?;
        Ok(LanePoll { poll, registry })
    }
}

/// One thread's connections and what driving them needs.
struct Lane {
    share: LaneShare,
    /// The run's time line ...
    window: Window,
    /// ... on the lane's clock.
    span: Window<Nanos>,
    /// How the two convert.
    clock: Clock,
    /// The reply timeout.
    timeout: Nanos,
    registry: Registry,
    conns: Vec<Conn>,
    /// The reply buffer of every connection: only lengths are kept between reads.
    scratch: Vec<u8>,
    /// The bytes one read may take.
    room: usize,
    /// The steady state's latencies.
    steady: StagedHistogram,
    /// The ramp's latencies and the interval recorder (its `steady` stays empty).
    latency: Latencies,
    /// Connections that used their turn and may have more to do.
    again: Vec<usize>,
    /// When waiting connections wake (due times, pauses, connect ramp), earliest first;
    /// an entry whose connection has moved on is skipped.
    timers: BinaryHeap<Reverse<(Nanos, usize)>>,
    /// This thread's CPU time when the measured span began (read at the first tick in
    /// it); the thread ends before the run's end is read, so it measures its own.
    cpu_at_measure_start: Option<Duration>,
}

/// Runs one thread's connections on the lane for the whole window and returns what they
/// measured, added up.
pub(super) fn run(
    share: LaneShare,
    set: LanePoll,
    window: Window,
    slots: Vec<Option<ProgressSlot>>,
) -> Measured {
    let LanePoll { mut poll, registry } = set;
    let room = share.lane.room(&share.target);
    let mut latencies = Latencies::default();
    if let Some(recording) = &share.intervals {
        latencies.intervals = Some(recording.recorder(window.measure_from));
    }
    let clock = Clock::new();
    let now = Clock::now();
    let plan = share.plan;
    let conns = share
        .indices
        .iter()
        .zip(slots)
        .map(|(&index, slot)| {
            let schedule = Schedule::new(
                plan.load,
                window.start,
                index,
                plan.connections,
                plan.ramp_up,
            );
            Conn::new(slot, schedule, now)
        })
        .collect();
    let mut lane = Lane {
        window,
        span: window.map(|at| clock.nanos(at)),
        clock,
        timeout: nanos_of(plan.timeout),
        registry,
        conns,
        timers: BinaryHeap::new(),
        scratch: vec![0; room],
        room,
        steady: StagedHistogram::new(),
        latency: latencies,
        again: Vec::new(),
        share,
        cpu_at_measure_start: None,
    };
    let ended = lane.drive(&mut poll);
    lane.finish(ended)
}

impl Lane {
    /// Waits for the start, then drives every connection until the end (or the stop);
    /// returns when the run ended.
    fn drive(&mut self, poll: &mut Poll) -> Nanos {
        let mut events = Events::with_capacity(EVENTS_PER_WAIT);
        if let Some(stopped) = self.wait_for_start() {
            return self.clock.nanos(stopped);
        }
        let now = Clock::now();
        for index in 0..self.conns.len() {
            let opens_at = self
                .share
                .plan
                .connection_start(&self.window, self.share.indices[index]);
            self.conns[index].schedule.skip_to(opens_at);
            let opens = self.clock.nanos(opens_at);
            if opens > now {
                self.wait(index, Phase::Opening(opens), opens);
            } else {
                self.begin(index, now);
            }
        }
        let every = self.share.intervals.as_ref().map(|r| r.every);
        let mut boundary = 1_u64;
        let tick = nanos_of(TICK);
        let mut next_tick = now + tick;
        loop {
            let now = Clock::now();
            if now >= self.span.end {
                return self.span.end;
            }
            if self.share.stop.is_cancelled() {
                return now;
            }
            if now >= next_tick {
                if self.cpu_at_measure_start.is_none() && now >= self.span.measure_from {
                    self.cpu_at_measure_start = super::this_thread_cpu_time();
                }
                self.sweep(now);
                if let Some(every) = every {
                    boundary = self.pass_boundaries(now, every, boundary);
                }
                next_tick = now + tick;
            }
            self.wake_timers(now);
            let next_timer = self.timers.peek().map_or(next_tick, |t| t.0.0);
            let wait = if self.again.is_empty() {
                let until = next_tick.min(next_timer).min(self.span.end);
                Duration::from_nanos(until.saturating_sub(now))
            } else {
                Duration::ZERO
            };
            if let Err(e) = poll.poll(&mut events, Some(wait)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::warn!("the benchmark's epoll set failed: {e}");
                return now.min(self.span.end);
            }
            for event in &events {
                let index = event.token().0;
                let Some(conn) = self.conns.get_mut(index) else {
                    continue;
                };
                conn.readable |= event.is_readable() || event.is_read_closed() || event.is_error();
                conn.writable |= event.is_writable() || event.is_error();
                self.advance(index, Clock::now());
            }
            for index in std::mem::take(&mut self.again) {
                self.advance(index, Clock::now());
            }
        }
    }

    /// Sleeps until the window starts, a little at a time so a stop is seen; returns
    /// when the run ended if it was stopped first.
    fn wait_for_start(&self) -> Option<Instant> {
        loop {
            let now = Instant::now();
            if self.share.stop.is_cancelled() {
                return Some(now.min(self.window.end));
            }
            if now >= self.window.start {
                return None;
            }
            let wait = self.window.start.saturating_duration_since(now);
            std::thread::sleep(wait.min(Duration::from_millis(50)));
        }
    }

    /// Closes every connection's tally at `ended` and adds them up, with the thread's
    /// histograms.
    fn finish(self, ended: Nanos) -> Measured {
        let mut total = Measured::default();
        let from = self.window.measure_from;
        let ended = self.clock.instant(ended);
        for mut conn in self.conns {
            if matches!(conn.phase, Phase::Sending | Phase::Receiving) {
                conn.measured.in_flight = Some(self.clock.instant(conn.started));
            }
            conn.measured.end_at(ended, conn.progress.as_ref());
            conn.measured.unsent = conn.schedule.remaining_between(from, ended);
            conn.measured.due = conn.schedule.due_between(from, ended);
            total.absorb(conn.measured);
        }
        let mut latencies = self.latency;
        if let Some(recorder) = latencies.intervals.take() {
            recorder.finish();
        }
        if let (Some(start), Some(end)) = (self.cpu_at_measure_start, super::this_thread_cpu_time())
        {
            total.thread_cpu = end.saturating_sub(start);
        }
        total.latency = self.steady.finish();
        total.ramp_latency = latencies.ramp;
        total
    }

    /// Times out what waited too long, resumes paused connections, updates the bar.
    fn sweep(&mut self, now: Nanos) {
        let timeout = self.share.plan.timeout;
        // Whatever went out at or before this is late: one comparison per connection.
        let cutoff = now.checked_sub(self.timeout);
        for index in 0..self.conns.len() {
            let conn = &self.conns[index];
            let late = cutoff.is_some_and(|cutoff| conn.sent <= cutoff);
            match conn.phase {
                Phase::Connecting if late => {
                    let error = Error::Timeout {
                        doing: format!("connecting to {}", self.share.target.endpoint),
                        after: timeout,
                    };
                    self.fail_prepare(index, now, error);
                }
                Phase::Sending | Phase::Receiving if late => self.time_out(index, now),
                _ => {}
            }
            let conn = &self.conns[index];
            conn.measured.note_progress(conn.progress.as_ref());
        }
    }

    /// Ships the intervals whose end has passed (as the task engine's ticker does);
    /// returns the next boundary's number.
    fn pass_boundaries(&mut self, now: Nanos, every: Duration, mut index: u64) -> u64 {
        while let Some(at) = interval_boundary(&self.window, every, index) {
            if now < self.clock.nanos(at) {
                break;
            }
            if let Some(recorder) = self.latency.intervals.as_mut() {
                recorder.advance_to(index);
            }
            index += 1;
        }
        index
    }

    /// Does what the connection can do now, a few exchanges at most. Nothing once the
    /// window has ended: what was under way then stays in flight, as the task engine
    /// counts it.
    #[inline(always)]
    fn advance(&mut self, index: usize, now: Nanos) {
        if now >= self.span.end {
            return;
        }
        for _ in 0..EXCHANGES_PER_TURN {
            let conn = &mut self.conns[index];
            match conn.phase {
                Phase::Connecting if conn.writable => self.connected(index, now),
                Phase::Sending if conn.writable => self.write(index, now),
                Phase::Receiving if conn.readable || conn.filled > 0 => {
                    if !self.read(index, now) {
                        return;
                    }
                }
                _ => return,
            }
        }
        self.again.push(index);
    }

    /// Puts the connection to sleep in `phase` until `at`.
    fn wait(&mut self, index: usize, phase: Phase, at: Nanos) {
        self.conns[index].phase = phase;
        self.timers.push(Reverse((at, index)));
    }

    /// Wakes the connections whose time has come (a bounded number per turn, so that a
    /// backlog of failing requests cannot keep the thread from its epoll set).
    fn wake_timers(&mut self, now: Nanos) {
        for _ in 0..self.conns.len().saturating_mul(2).max(1) {
            let Some(&Reverse((at, index))) = self.timers.peek() else {
                return;
            };
            if at > now {
                return;
            }
            self.timers.pop();
            let now = Clock::now();
            match self.conns[index].phase {
                Phase::Due(due) if due == at => {
                    self.conns[index].origin = Some((now, due));
                    self.go(index, now);
                }
                Phase::Opening(opens) | Phase::Paused(opens) if opens == at => {
                    self.begin(index, now)
                }
                _ => {}
            }
        }
    }

    /// Begins the connection's next exchange: at once in closed loop, at its due time
    /// in open loop (at once when that has passed, its latency counting from it).
    #[inline(always)]
    fn begin(&mut self, index: usize, now: Nanos) {
        if now >= self.span.end {
            self.conns[index].phase = Phase::Idle;
            return;
        }
        let clock = self.clock;
        let conn = &mut self.conns[index];
        match conn.schedule.next_due().map(|due| clock.nanos(due)) {
            None => {}
            Some(due) if due >= self.span.end => {
                conn.phase = Phase::Idle;
                return;
            }
            Some(due) if now < due => {
                self.wait(index, Phase::Due(due), due);
                return;
            }
            Some(due) => conn.origin = Some((due, due)),
        }
        self.go(index, now);
    }

    /// Gets the connection ready if it is not (echo and udp connect, untimed) and sends
    /// the request; hello connects inside the timed exchange.
    #[inline(always)]
    fn go(&mut self, index: usize, now: Nanos) {
        let conn = &self.conns[index];
        match self.share.lane.pattern {
            Pattern::Hello => {
                self.start_exchange(index, now);
                match self.attach(index) {
                    Ok(()) => {
                        let conn = &mut self.conns[index];
                        conn.confirmed = false;
                        conn.writable = true;
                        self.write(index, now);
                    }
                    Err(error) => self.fail_exchange(index, now, error),
                }
            }
            Pattern::Echo if conn.socket.is_none() => match self.attach(index) {
                Ok(()) => {
                    let conn = &mut self.conns[index];
                    conn.phase = Phase::Connecting;
                    conn.sent = now;
                }
                Err(error) => self.fail_prepare(index, now, error),
            },
            Pattern::Udp if conn.socket.is_none() => match self.attach(index) {
                Ok(()) => {
                    self.conns[index].writable = true;
                    self.send_next(index, now);
                }
                Err(error) => self.fail_prepare(index, now, error),
            },
            _ => self.send_next(index, now),
        }
    }

    /// Opens the connection's socket and registers it.
    fn attach(&mut self, index: usize) -> crate::Result<()> {
        let socket = self.share.lane.open(&self.share.target.endpoint)?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        let raw = socket.as_raw_fd();
        self.registry
            .register(&mut SourceFd(&raw), Token(index), interest)
            .map_err(|source| Error::Io {
                doing: "adding a connection to the benchmark's epoll set".into(),
                source,
            })?;
        let conn = &mut self.conns[index];
        conn.socket = Some(socket);
        conn.readable = false;
        conn.writable = false;
        Ok(())
    }

    /// Echo: the connect finished (or failed); the first exchange goes out.
    fn connected(&mut self, index: usize, now: Nanos) {
        let conn = &self.conns[index];
        let failed = match &conn.socket {
            Some(socket) => match SockRef::from(socket).take_error() {
                Ok(None) => None,
                Ok(Some(e)) | Err(e) => Some(e),
            },
            None => Some(io::ErrorKind::NotConnected.into()),
        };
        match failed {
            Some(e) => {
                let error = connect_error(e, &self.share.target.endpoint);
                self.fail_prepare(index, now, error);
            }
            None => self.send_next(index, now),
        }
    }

    /// Starts a timed exchange on a connected socket and writes its request.
    #[inline(always)]
    fn send_next(&mut self, index: usize, now: Nanos) {
        self.start_exchange(index, now);
        self.write(index, now);
    }

    /// The instant an exchange counts from, and its request.
    #[inline(always)]
    fn start_exchange(&mut self, index: usize, now: Nanos) {
        let count = self.share.target.messages.each.len().max(1);
        let conn = &mut self.conns[index];
        let (started, lag) = match conn.origin.take() {
            Some((started, due)) => (started, now.saturating_sub(due)),
            None => (now, 0),
        };
        if conn.measured.last_connected.is_none() {
            conn.measured.ready(self.clock.instant(now));
        }
        conn.measured.send(&self.span, now);
        conn.started = started;
        conn.sent = now;
        conn.lag = lag;
        conn.request = conn.next.min(count - 1);
        conn.next = if conn.request + 1 < count {
            conn.request + 1
        } else {
            0
        };
        conn.written = 0;
        conn.filled = conn.carried;
        conn.phase = Phase::Sending;
    }

    /// Writes what is left of the request; then the reply is awaited.
    #[inline(always)]
    fn write(&mut self, index: usize, now: Nanos) {
        let messages = &self.share.target.messages;
        let conn = &mut self.conns[index];
        let Some(socket) = conn.socket.as_ref() else {
            return;
        };
        let request = &messages.each[conn.request];
        let mut outcome = Turn::Done;
        while conn.written < request.len() {
            match send_uncancellable(socket.as_fd(), &request[conn.written..]) {
                Ok(n) => {
                    conn.written += n;
                    conn.confirmed = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.writable = false;
                    outcome = Turn::Wait;
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    outcome = Turn::Failed(e);
                    break;
                }
            }
        }
        match outcome {
            Turn::Done => {
                conn.phase = Phase::Receiving;
                // Bytes carried from the last reply may already complete this one, and
                // no edge would come for them.
                if conn.readable || conn.filled > 0 {
                    self.again.push(index);
                }
            }
            Turn::Wait => {}
            Turn::Failed(e) => {
                let error = self.send_error(index, e);
                self.fail_exchange(index, now, error);
            }
            Turn::Refused(error) => self.fail_exchange(index, now, error),
        }
    }

    /// A failed write as an error: a failed connect while nothing went out on a new
    /// `hello` connection, the pattern's own words otherwise.
    fn send_error(&self, index: usize, e: io::Error) -> Error {
        let target = &self.share.target;
        match self.share.lane.pattern {
            Pattern::Hello if !self.conns[index].confirmed => connect_error(e, &target.endpoint),
            Pattern::Hello => target.io_error(e, "while sending the request"),
            Pattern::Udp => target.io_error(e, "while sending a datagram"),
            _ => target.io_error(e, "while sending a message"),
        }
    }

    /// Reads what the socket holds of the reply; completes the exchange when it is all
    /// in. Returns whether the connection may go on at once.
    #[inline(always)]
    fn read(&mut self, index: usize, now: Nanos) -> bool {
        if self.share.lane.pattern == Pattern::Udp {
            return self.read_datagram(index, now);
        }
        match self.read_stream(index) {
            Turn::Done => {
                self.complete(index, now);
                true
            }
            Turn::Wait => false,
            Turn::Failed(e) => {
                let target = &self.share.target;
                let error = target.io_error(e, "before the whole reply arrived");
                self.fail_exchange(index, now, error);
                false
            }
            Turn::Refused(error) => {
                self.fail_exchange(index, now, error);
                false
            }
        }
    }

    /// Reads a stream reply until it is complete or the socket is empty; a reply that
    /// ends at a byte count leaves what came past it for the next one. A reply framed as
    /// long as its request must repeat it (as the task engine's drivers judge): each read
    /// is compared as it comes with what an echo server sends there ([`echoes`]).
    #[inline(always)]
    fn read_stream(&mut self, index: usize) -> Turn {
        let messages = &self.share.target.messages;
        let conn = &mut self.conns[index];
        let Some(socket) = conn.socket.as_ref() else {
            return Turn::Wait;
        };
        let need = match self.share.lane.length {
            ReplyLength::FirstRead => None,
            ReplyLength::Exact(n) => Some(n),
            ReplyLength::SameAsRequest => Some(messages.each[conn.request].len()),
        };
        loop {
            if let Some(n) = need
                && conn.filled >= n
            {
                conn.carried = conn.filled - n;
                return Turn::Done;
            }
            let room = self.room.saturating_sub(conn.filled).max(1);
            match recv_uncancellable(socket.as_fd(), &mut self.scratch[..room]) {
                Ok(0) => return Turn::Failed(io::ErrorKind::UnexpectedEof.into()),
                Ok(got) => {
                    conn.readable = got >= room;
                    if need.is_none() {
                        return Turn::Done;
                    }
                    if self.share.lane.length == ReplyLength::SameAsRequest {
                        let read = &self.scratch[..got];
                        if !echoes(&messages.each, conn.request, conn.filled, read) {
                            let request = &messages.each[conn.request];
                            let mut reply = request[..conn.filled.min(request.len())].to_vec();
                            reply.extend_from_slice(read);
                            return Turn::Refused(self.share.target.not_an_echo(&reply, request));
                        }
                    }
                    conn.filled += got;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    conn.readable = false;
                    return Turn::Wait;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Turn::Failed(e),
            }
        }
    }

    /// Reads one datagram and judges it as the reply. A datagram socket is read once per
    /// edge: the reply comes after the request, with an edge of its own.
    fn read_datagram(&mut self, index: usize, now: Nanos) -> bool {
        let conn = &mut self.conns[index];
        let Some(socket) = conn.socket.as_ref() else {
            return false;
        };
        conn.readable = false;
        let target = &self.share.target;
        let verdict = match recv_uncancellable(socket.as_fd(), &mut self.scratch) {
            // Any datagram is the reply (the lane takes no regex).
            Ok(_) if self.share.lane.length == ReplyLength::FirstRead => Ok(0),
            Ok(n) => {
                let sent = target.messages.each[conn.request].len();
                target.datagram_verdict(&self.scratch[..n], sent)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                conn.readable = true;
                return true;
            }
            Err(e) => Err(target.io_error(e, "while waiting for the reply")),
        };
        match verdict {
            Ok(_) => {
                self.complete(index, now);
                true
            }
            Err(error) => {
                self.fail_exchange(index, now, error);
                false
            }
        }
    }

    /// The exchange is done: counted, then the next one begins.
    #[inline(always)]
    fn complete(&mut self, index: usize, now: Nanos) {
        let bytes = self.share.target.messages.each[self.conns[index].request].len() as u64;
        let conn = &mut self.conns[index];
        let filed = phase_of(&self.span, now);
        let lag = match conn.lag {
            0 => Duration::ZERO,
            lag => Duration::from_nanos(lag),
        };
        conn.measured.count_success(filed, bytes, lag);
        if let Some(filed) = filed {
            let took = now.saturating_sub(conn.started);
            self.record(filed, took, now);
        }
        let conn = &mut self.conns[index];
        conn.phase = Phase::Idle;
        if self.share.lane.pattern == Pattern::Hello {
            self.drop_socket(index);
        }
        self.begin(index, now);
    }

    /// Records the latency of an exchange that took `took` and completed at `done`, in
    /// the histogram of its phase (and the interval log's).
    #[inline(always)]
    fn record(&mut self, filed: Filed, took: Nanos, done: Nanos) {
        match filed {
            Filed::Steady => self.steady.record_nanos(took),
            Filed::Ramp => self.latency.ramp.record(Duration::from_nanos(took)),
        }
        if let Some(recorder) = self.latency.intervals.as_mut() {
            let done = self.clock.instant(done);
            recorder.record(done, Duration::from_nanos(took), filed);
        }
    }

    /// A timed exchange failed: counted by kind, the connection dropped, the next try
    /// after the closed loop's pause.
    fn fail_exchange(&mut self, index: usize, now: Nanos, error: Error) {
        let pause = pause_after(&error);
        let conn = &mut self.conns[index];
        conn.measured
            .fail(&self.span, now, FailureKind::of(&error), || error);
        self.pause(index, now, pause);
    }

    /// Getting ready (connecting) failed: counted as a request that went out and failed,
    /// as the task engine counts a failed `prepare`.
    fn fail_prepare(&mut self, index: usize, now: Nanos, error: Error) {
        let pause = pause_after(&error);
        let conn = &mut self.conns[index];
        conn.origin = None;
        conn.measured.send(&self.span, now);
        conn.measured
            .fail(&self.span, now, FailureKind::of(&error), || error);
        self.pause(index, now, pause);
    }

    /// No reply in time: a timeout, and a fresh connection at once.
    fn time_out(&mut self, index: usize, now: Nanos) {
        let after = self.share.plan.timeout;
        let conn = &mut self.conns[index];
        conn.measured
            .fail(&self.span, now, FailureKind::Timeout, || Error::Timeout {
                doing: "waiting for a reply".into(),
                after,
            });
        self.drop_socket(index);
        self.begin(index, now);
    }

    /// Drops the connection; the next try comes after `pause` in closed loop (see
    /// [`pause_after`]), when the timetable says in open loop (through the timers either
    /// way, so a run of failures never recurses).
    fn pause(&mut self, index: usize, now: Nanos, pause: Duration) {
        self.drop_socket(index);
        let until = match self.share.plan.load {
            Load::Closed => now.saturating_add(nanos_of(pause)),
            Load::Open { .. } => now,
        };
        self.wait(index, Phase::Paused(until), until);
    }

    /// Closes the socket (which takes it out of the epoll set) and forgets what it
    /// carried.
    fn drop_socket(&mut self, index: usize) {
        let conn = &mut self.conns[index];
        if let Some(socket) = conn.socket.take() {
            close_uncancellable(socket);
        }
        conn.carried = 0;
        conn.filled = 0;
        conn.readable = false;
        conn.writable = false;
        conn.phase = Phase::Idle;
    }
}

/// Whether `read`, which came `offset` bytes into the reply to message `request`, is
/// what an echo server sends there: the rest of that message, then the following
/// messages in turn (a server may answer ahead; each connection sends the messages in
/// order, so what follows is known).
#[inline]
fn echoes(messages: &[Bytes], request: usize, offset: usize, read: &[u8]) -> bool {
    // Nearly always: the read is a part of the request it answers.
    match messages
        .get(request)
        .and_then(|m| m.get(offset..offset + read.len()))
    {
        Some(expected) => expected == read,
        None => echoes_ahead(messages, request, offset, read),
    }
}

/// [`echoes`] for a read that runs past the end of its request.
#[cold]
fn echoes_ahead(
    messages: &[Bytes],
    mut request: usize,
    mut offset: usize,
    mut read: &[u8],
) -> bool {
    while !read.is_empty() {
        let Some(message) = messages.get(request) else {
            return false;
        };
        // An empty message would never consume a byte (the options refuse one anyway).
        let Some(expected) = message.get(offset..).filter(|rest| !rest.is_empty()) else {
            return false;
        };
        let take = expected.len().min(read.len());
        if expected[..take] != read[..take] {
            return false;
        }
        read = &read[take..];
        offset = 0;
        request = (request + 1) % messages.len();
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::measure::Load;

    fn options(endpoint: &str, pattern: Pattern) -> BenchOptions {
        let endpoint: Endpoint = endpoint.parse().unwrap_or_else(|e| panic!("{e}"));
        BenchOptions::new(endpoint, Some(pattern))
    }

    fn unfit(options: &BenchOptions) -> Option<Unfit> {
        LaneTarget::of(options).err()
    }

    #[test]
    fn an_echo_is_the_request_then_the_following_messages_in_turn() {
        let messages = [Bytes::from_static(b"ab"), Bytes::from_static(b"cde")];
        assert!(echoes(&messages, 0, 0, b"ab"));
        assert!(echoes(&messages, 0, 1, b"b"));
        assert!(echoes(&messages, 1, 0, b"cdeab"), "answered ahead, in turn");
        assert!(echoes(&messages, 1, 2, b"eabcd"), "and around again");
        assert!(!echoes(&messages, 0, 0, b"AB"), "not an echo");
        assert!(
            !echoes(&messages, 0, 0, b"abX"),
            "a byte no message has there"
        );
        let one = [Bytes::from_static(b"ping")];
        assert!(echoes(&one, 0, 0, b"pingpi"));
        assert!(!echoes(&one, 0, 0, b"ping!"));
        assert!(!echoes(&[], 0, 0, b"x"));
        assert!(
            !echoes(&[Bytes::new()], 0, 0, b"x"),
            "an empty message ends the walk"
        );
    }

    #[test]
    fn the_plain_patterns_fit_at_any_load() {
        let mut echo = options("tcp://127.0.0.1:9", Pattern::Echo);
        assert_eq!(unfit(&echo), None);
        echo.load = Load::Open { rate: 100.0 };
        echo.connect_rate = Some(10.0);
        assert_eq!(unfit(&echo), None);
        assert_eq!(unfit(&options("udp://[::1]:9", Pattern::Udp)), None);
        let unix = options("unix:/tmp/sockit-lane-test.sock", Pattern::Hello);
        assert_eq!(unfit(&unix), None);
    }

    #[test]
    fn what_the_lane_does_not_drive_is_named() {
        let cases = [
            (options("tls://127.0.0.1:9", Pattern::Echo), "TLS"),
            (options("tcp://localhost:9", Pattern::Echo), "a host name"),
            (
                options("tcp://127.0.0.1:9", Pattern::Stream),
                "the stream pattern",
            ),
            (
                options("unixgram:/tmp/x.sock", Pattern::Udp),
                "Unix datagram",
            ),
        ];
        for (options, reason) in cases {
            let got = unfit(&options);
            assert!(got.is_some_and(|u| u.contains(reason)), "{got:?}");
        }
        let mut first = options("tcp://127.0.0.1:9", Pattern::Echo);
        first.messages.first = Some(bytes::Bytes::from_static(b"hi"));
        assert_eq!(unfit(&first), Some("--first-message"));
        let mut until = options("tcp://127.0.0.1:9", Pattern::Echo);
        until.reply = super::super::driver::ReplyMatcher::ending(ReplyEnd::Until(
            bytes::Bytes::from_static(b"\n"),
        ));
        assert_eq!(unfit(&until), Some("--reply-until"));
    }
}
