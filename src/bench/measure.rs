//! The measuring side of a benchmark: when each request goes out (closed or open loop),
//! what its latency is, which results fall inside the measured window, timeouts, and the
//! tally of one connection. It never touches a socket: it drives anything that implements
//! [`Driver`], so the statistics and the schedule are unit-tested with a driver that only
//! sleeps (the seam hyperfine keeps between its scheduler and its executor).
//!
//! **Closed loop** ([`Load::Closed`]): each connection sends its next request as soon as
//! the previous reply is in. Latency runs from the actual send. A server that stalls holds
//! every connection still, so the stall shows up in one sample per connection and the
//! percentiles hide it; that is what closed-loop tools report, and why open loop exists.
//!
//! **Open loop** ([`Load::Open`]): requests are due on a fixed timetable, `rate` per second
//! in total, spread evenly over the connections. Each connection still has at most one
//! request outstanding; when a reply comes late, the next request goes out at once, and
//! its latency counts from when it was *due*, not when it could be sent. So time spent
//! waiting behind a stalled server is in the figures (the coordinated-omission correction
//! that wrk2 made known). A request whose connection was idle and only woke late (timers
//! have millisecond resolution) counts from the wake-up instead: that lateness is the load
//! generator's, not the server's, and is reported separately as the send lag.
//!
//! A rate ramp bends the timetable (the run's count of due requests grows as `t²` until
//! the full rate), and a connect ramp opens each connection at its own time; a connection
//! owns only the requests due after it opens. Latency still counts from the due time.
//!
//! Hot path: per request, one or two clock reads, a histogram increment and a few
//! additions, in memory the connection's task or its thread owns. No allocation, no lock,
//! no shared atomic (the progress bar's counters are per connection and written only by
//! it). Reply timeouts use one timer per connection that is re-armed only when it fires.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep, sleep, sleep_until};
use tokio_util::sync::CancellationToken;

use super::histogram::LatencyHistogram;
use super::intervals::Phase;
use super::latencies::{Latencies, SharedLatency};
use super::progress::ProgressSlot;
use super::window::Window;
use crate::error::Error;

/// How long a connection waits after a failed closed-loop exchange before trying again,
/// so that a dead server (connection refused) is not hammered in a tight loop.
pub const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// The pause after a failure to make a socket on this machine (out of file descriptors
/// or memory, an option the system refuses): it repeats until something changes here, so
/// the connection waits longer, rather than adding a failure every [`ERROR_PAUSE`].
pub const LOCAL_FAILURE_PAUSE: Duration = Duration::from_secs(1);

/// How long a closed-loop connection waits after `error` before it tries again.
pub(super) fn pause_after(error: &Error) -> Duration {
    match error {
        Error::LocalSocket { .. } => LOCAL_FAILURE_PAUSE,
        _ => ERROR_PAUSE,
    }
}

/// The network side of a measurement: one connection's requests and replies.
///
/// A driver is owned by one connection task and reused for every request, so it keeps
/// its connection and buffers between calls. The futures it returns may be dropped
/// half-way (on a reply timeout or at the end of the run); [`Driver::abandon`] is called
/// after a timeout or an error, and must leave the driver ready to start afresh.
pub trait Driver: Send {
    /// Gets ready for the next exchange without timing it: connects if not connected.
    ///
    /// Patterns that open a connection per request (hello) do nothing here.
    fn prepare(&mut self) -> impl Future<Output = crate::Result<()>> + Send;

    /// One timed exchange (a request and its reply, or one write when streaming).
    ///
    /// Returns the payload bytes sent.
    fn exchange(&mut self) -> impl Future<Output = crate::Result<u64>> + Send;

    /// Forgets the connection after an error or a timeout; the next
    /// [`Driver::prepare`] opens a new one (so a late reply cannot be taken for the
    /// answer to a later request).
    fn abandon(&mut self);
}

/// When requests go out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    /// Each connection sends its next request when the previous reply arrives.
    Closed,
    /// Requests are due on a fixed timetable; latency counts from the due time.
    Open {
        /// Requests per second, over all connections together.
        rate: f64,
    },
}

/// What every connection of a run shares: decided once, copied into each task.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Closed or open loop.
    pub load: Load,
    /// How many connections run side by side (the open-loop timetable is split
    /// between them).
    pub connections: usize,
    /// How long to wait for one reply (and for a connection) before counting a timeout.
    pub timeout: Duration,
    /// Open loop: the total rate grows linearly from 0 over this span from the start
    /// (zero: the full rate at once).
    pub ramp_up: Duration,
    /// Connections per second opened from the start (`--connect-rate`); `None`: all at
    /// once.
    pub connect_rate: Option<f64>,
}

impl Plan {
    /// When connection `index` begins: the start, or its place in the connect ramp.
    pub(super) fn connection_start(&self, window: &Window, index: usize) -> Instant {
        match self.connect_rate {
            Some(rate) if rate > 0.0 => window.start + Duration::from_secs_f64(index as f64 / rate),
            _ => window.start,
        }
    }
}

/// The kinds of failure a report counts separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Connection refused: nothing listens (TCP RST to a SYN, ICMP port unreachable).
    Refused,
    /// The connection was reset mid-exchange.
    Reset,
    /// No reply (or no connection) within the timeout; for datagrams, a lost request.
    Timeout,
    /// The peer closed before the whole reply arrived, or replied with too few bytes.
    ShortReply,
    /// A reply arrived that the reply matcher refuses (`--reply-regex`, no delimiter).
    Mismatch,
    /// Anything else (no such socket file, permission denied, …).
    Other,
}

impl FailureKind {
    /// Classifies an error from a driver.
    pub fn of(error: &Error) -> FailureKind {
        match error {
            Error::Refused { .. } => FailureKind::Refused,
            Error::Reset { .. } => FailureKind::Reset,
            Error::Timeout { .. } => FailureKind::Timeout,
            Error::ClosedEarly { .. } => FailureKind::ShortReply,
            Error::ReplyMismatch { .. } => FailureKind::Mismatch,
            _ => FailureKind::Other,
        }
    }
}

/// Failures counted by kind, inside the measured window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailureCounts {
    /// See [`FailureKind::Refused`].
    pub refused: u64,
    /// See [`FailureKind::Reset`].
    pub reset: u64,
    /// See [`FailureKind::Timeout`].
    pub timeout: u64,
    /// See [`FailureKind::ShortReply`].
    pub short_reply: u64,
    /// See [`FailureKind::Mismatch`].
    pub mismatch: u64,
    /// See [`FailureKind::Other`].
    pub other: u64,
}

impl FailureCounts {
    /// Counts one failure.
    fn count(&mut self, kind: FailureKind) {
        let slot = match kind {
            FailureKind::Refused => &mut self.refused,
            FailureKind::Reset => &mut self.reset,
            FailureKind::Timeout => &mut self.timeout,
            FailureKind::ShortReply => &mut self.short_reply,
            FailureKind::Mismatch => &mut self.mismatch,
            FailureKind::Other => &mut self.other,
        };
        *slot += 1;
    }

    /// All failures together.
    pub fn total(&self) -> u64 {
        self.refused + self.reset + self.timeout + self.short_reply + self.mismatch + self.other
    }

    /// Adds another set of counts.
    pub fn add(&mut self, other: &FailureCounts) {
        self.refused += other.refused;
        self.reset += other.reset;
        self.timeout += other.timeout;
        self.short_reply += other.short_reply;
        self.mismatch += other.mismatch;
        self.other += other.other;
    }
}

/// What one connection (or, once added up, a whole run) measured.
#[derive(Debug, Default)]
pub struct Measured {
    /// Latencies of the exchanges completed in the window after the ramp. Connections
    /// record into their thread's [`SharedLatency`]; the thread moves it here when they
    /// are all done.
    pub latency: LatencyHistogram,
    /// Exchanges completed in the window after the ramp.
    pub exchanges: u64,
    /// Payload bytes sent by those exchanges.
    pub bytes: u64,
    /// Latencies of the exchanges completed in the window during the ramp.
    pub ramp_latency: LatencyHistogram,
    /// Exchanges completed in the window during the ramp.
    pub ramp_exchanges: u64,
    /// Open loop: requests due in the window on the timetables of the connections that
    /// were open (what `sent` is checked against).
    pub due: u64,
    /// Connections that got ready (connected) at least once.
    pub connected: u64,
    /// When the last of those first got ready.
    pub last_connected: Option<Instant>,
    /// Requests that went out in the window (successful or not): the open-loop rate check.
    pub sent: u64,
    /// Failures in the window, by kind.
    pub failures: FailureCounts,
    /// The first failure of the run (warm-up included), kept whole for the exit status.
    pub first_error: Option<Error>,
    /// Open loop: the longest a request in the window went out after it was due.
    pub max_send_lag: Duration,
    /// Exchanges still waiting for their reply when the run ended.
    pub in_flight_at_end: u64,
    /// How long the oldest of those had been waiting.
    pub oldest_in_flight: Duration,
    /// CPU time of the busiest thread that measured its own over the measured span (the
    /// lane's threads do, since they end before the run's end is read): the largest
    /// thread's, not a sum.
    pub thread_cpu: Duration,
    /// Open loop: requests due in the window that never went out (the connection was
    /// still behind schedule at the end).
    pub unsent: u64,
    /// Exchanges completed since the start, warm-up included (for the progress bar).
    completed_total: u64,
    /// Bytes sent since the start, warm-up included (for the progress bar).
    bytes_total: u64,
    /// The exchange waiting for its reply right now: when it counts from.
    pub(super) in_flight: Option<Instant>,
}

impl Measured {
    /// Counts one completed exchange that finished at `done`; its latency goes into
    /// `latency`.
    #[inline]
    pub(super) fn succeed(
        &mut self,
        window: &Window,
        times: ExchangeTimes,
        done: Instant,
        bytes: u64,
        latency: &RefCell<Latencies>,
    ) {
        let phase = phase_of(window, done);
        self.count_success(phase, bytes, times.lag);
        let Some(phase) = phase else {
            return;
        };
        let took = done.saturating_duration_since(times.started);
        // Never already borrowed: borrows do not span an await (see SharedLatency).
        let Ok(mut histograms) = latency.try_borrow_mut() else {
            return;
        };
        match phase {
            Phase::Steady => histograms.steady.record(took),
            Phase::Ramp => histograms.ramp.record(took),
        }
        if let Some(recorder) = histograms.intervals.as_mut() {
            recorder.record(done, took, phase);
        }
    }

    /// Counts one completed exchange of `bytes` where it fell (`phase`: none outside the
    /// measured span); `lag` is how late its request went out. The caller records its
    /// latency.
    #[inline]
    pub(super) fn count_success(&mut self, phase: Option<Phase>, bytes: u64, lag: Duration) {
        self.completed_total += 1;
        self.bytes_total += bytes;
        match phase {
            None => return,
            Some(Phase::Steady) => {
                self.exchanges += 1;
                self.bytes += bytes;
            }
            Some(Phase::Ramp) => self.ramp_exchanges += 1,
        }
        self.max_send_lag = self.max_send_lag.max(lag);
    }

    /// Notes that the connection got ready at `at`, the first time only.
    pub(super) fn ready(&mut self, at: Instant) {
        if self.last_connected.is_none() {
            self.connected = 1;
            self.last_connected = Some(at);
        }
    }

    /// Counts a request going out (or trying to) at `at`.
    #[inline]
    pub(super) fn send<T: Copy + Ord>(&mut self, window: &Window<T>, at: T) {
        if window.contains(at) {
            self.sent += 1;
        }
    }

    /// Counts one failure at `at`; `error` is only built if it is the run's first.
    pub(super) fn fail<T: Copy + Ord>(
        &mut self,
        window: &Window<T>,
        at: T,
        kind: FailureKind,
        error: impl FnOnce() -> Error,
    ) {
        if window.contains(at) {
            self.failures.count(kind);
        }
        if self.first_error.is_none() {
            self.first_error = Some(error());
        }
    }

    /// Closes the connection's tally at `ended`: the exchange still waiting then, if
    /// any, is counted as in flight (not one that counts from `ended` or later: it went
    /// out after the end); the progress bar gets the last totals.
    pub(super) fn end_at(&mut self, ended: Instant, progress: Option<&ProgressSlot>) {
        if let Some(started) = self.in_flight.take().filter(|&started| started < ended) {
            self.in_flight_at_end = 1;
            self.oldest_in_flight = ended.saturating_duration_since(started);
        }
        self.note_progress(progress);
    }

    /// Publishes the totals so far to the progress bar, if there is one.
    #[inline]
    pub(super) fn note_progress(&self, progress: Option<&ProgressSlot>) {
        if let Some(slot) = progress {
            slot.note(self.completed_total, self.bytes_total);
        }
    }

    /// Adds another connection's results to these.
    pub fn absorb(&mut self, other: Measured) {
        self.latency.add(&other.latency);
        self.exchanges += other.exchanges;
        self.bytes += other.bytes;
        self.ramp_latency.add(&other.ramp_latency);
        self.ramp_exchanges += other.ramp_exchanges;
        self.due += other.due;
        self.connected += other.connected;
        self.last_connected = self.last_connected.max(other.last_connected);
        self.sent += other.sent;
        self.failures.add(&other.failures);
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.max_send_lag = self.max_send_lag.max(other.max_send_lag);
        self.in_flight_at_end += other.in_flight_at_end;
        self.oldest_in_flight = self.oldest_in_flight.max(other.oldest_in_flight);
        self.thread_cpu = self.thread_cpu.max(other.thread_cpu);
        self.unsent += other.unsent;
        self.completed_total += other.completed_total;
        self.bytes_total += other.bytes_total;
    }
}

/// Where an exchange that completed at `done` falls: in the steady state, in the rate
/// ramp, or (none) outside the measured span.
#[inline]
pub(super) fn phase_of<T: Copy + Ord>(window: &Window<T>, done: T) -> Option<Phase> {
    if !window.contains(done) {
        None
    } else if window.is_steady(done) {
        Some(Phase::Steady)
    } else {
        Some(Phase::Ramp)
    }
}

/// The instants of one exchange.
#[derive(Debug, Clone, Copy)]
pub(super) struct ExchangeTimes {
    /// Latency counts from here: the send (closed loop), the due time or the wake-up
    /// (open loop, see [`open_loop_start`]).
    pub(super) started: Instant,
    /// Open loop: how long after its due time the request went out.
    pub(super) lag: Duration,
}

/// One connection's timetable.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Closed loop: every request is due as soon as the previous one is done.
    Immediate,
    /// Open loop: request `k` of connection `i` (of `c`) is number `n = i + k·c` of the
    /// run, due when the run's cumulative count reaches `n`: at `start + n / rate`, so the
    /// whole run sends evenly at `rate`; with a ramp of `r` seconds, the rate grows
    /// linearly from 0 to `rate` over `r` (count `rate·t²/2r`), then stays.
    Timetable {
        /// The run's start.
        start: Instant,
        /// This connection's place in the interleaving.
        index: u64,
        /// How many connections share the timetable.
        connections: u64,
        /// Requests per second, in total.
        rate: f64,
        /// The ramp's length in seconds (0: none).
        ramp: f64,
        /// The first request number this connection owns (those due before it opened,
        /// in a connect ramp, are nobody's).
        first: u64,
        /// The next request's number on this connection.
        next: u64,
    },
}

/// Requests the whole run has due by `t` seconds after the start (see
/// [`Schedule::Timetable`]).
fn cumulative_due(rate: f64, ramp: f64, t: f64) -> f64 {
    if t <= 0.0 {
        0.0
    } else if t < ramp {
        rate * t * t / (2.0 * ramp)
    } else {
        rate * (t - ramp / 2.0)
    }
}

/// When the run's request number `n` is due, in seconds after the start: the inverse of
/// [`cumulative_due`].
fn due_offset(rate: f64, ramp: f64, n: f64) -> f64 {
    if ramp > 0.0 && n < rate * ramp / 2.0 {
        (2.0 * n * ramp / rate).sqrt()
    } else {
        n / rate + ramp / 2.0
    }
}

impl Schedule {
    /// The timetable of connection `index` of `connections`, with a rate ramp of `ramp`.
    pub fn new(
        load: Load,
        start: Instant,
        index: usize,
        connections: usize,
        ramp: Duration,
    ) -> Schedule {
        match load {
            Load::Closed => Schedule::Immediate,
            Load::Open { rate } => Schedule::Timetable {
                start,
                index: index as u64,
                connections: connections.max(1) as u64,
                rate,
                ramp: ramp.as_secs_f64(),
                first: 0,
                next: 0,
            },
        }
    }

    /// Gives up the requests due before `at` (the connection opens then, in a connect
    /// ramp): they are not sent and not counted as unsent.
    pub fn skip_to(&mut self, at: Instant) {
        let from = self.first_due_from(at);
        if let Schedule::Timetable { first, next, .. } = self {
            *next = (*next).max(from);
            *first = *next;
        }
    }

    /// The first request number of this connection due at or after `at`.
    fn first_due_from(&self, at: Instant) -> u64 {
        let Schedule::Timetable {
            start,
            index,
            connections,
            rate,
            ramp,
            ..
        } = *self
        else {
            return 0;
        };
        // due(k) >= at  ⇔  i + k·c >= cumulative_due(at).
        let offset = at.saturating_duration_since(start).as_secs_f64();
        let k = (cumulative_due(rate, ramp, offset) - index as f64) / connections as f64;
        if k <= 0.0 { 0 } else { k.ceil() as u64 }
    }

    /// When the next request is due (`None`: now, closed loop), and moves past it.
    pub fn next_due(&mut self) -> Option<Instant> {
        match self {
            Schedule::Immediate => None,
            Schedule::Timetable { next, .. } => {
                let k = *next;
                *next += 1;
                Some(self.due(k))
            }
        }
    }

    /// When request `k` of this connection is due.
    fn due(&self, k: u64) -> Instant {
        match *self {
            Schedule::Immediate => Instant::now(),
            Schedule::Timetable {
                start,
                index,
                connections,
                rate,
                ramp,
                ..
            } => {
                // f64 holds whole nanoseconds exactly up to 2^53 ns (104 days), and
                // computing each due time from the start never accumulates drift.
                let n = index as f64 + k as f64 * connections as f64;
                start + Duration::from_secs_f64(due_offset(rate, ramp, n))
            }
        }
    }

    /// How many requests not yet taken are due inside `[from, end)`.
    pub fn remaining_between(&self, from: Instant, end: Instant) -> u64 {
        let Schedule::Timetable { next, .. } = *self else {
            return 0;
        };
        let low = next.max(self.first_due_from(from));
        self.first_due_from(end).saturating_sub(low)
    }

    /// How many requests of this connection (since it opened) are due inside
    /// `[from, end)`, taken or not.
    pub fn due_between(&self, from: Instant, end: Instant) -> u64 {
        let Schedule::Timetable { first, .. } = *self else {
            return 0;
        };
        let low = first.max(self.first_due_from(from));
        self.first_due_from(end).saturating_sub(low)
    }
}

/// The reply timeout of one connection: a single timer, re-armed only when it fires, so
/// a fast exchange never touches the timer wheel.
struct Watchdog {
    /// Fires at or before the current exchange's deadline.
    timer: Pin<Box<Sleep>>,
    /// How long one exchange may take.
    timeout: Duration,
}

impl Watchdog {
    /// A watchdog that has not been armed yet.
    fn new(timeout: Duration, far: Instant) -> Watchdog {
        Watchdog {
            timer: Box::pin(sleep_until(far + timeout)),
            timeout,
        }
    }

    /// Runs `exchange` until it finishes or `sent + timeout` passes (`None`).
    async fn guard<F: Future>(&mut self, sent: Instant, exchange: F) -> Option<F::Output> {
        let deadline = sent + self.timeout;
        if self.timer.deadline() > deadline {
            self.timer.as_mut().reset(deadline);
        }
        tokio::pin!(exchange);
        loop {
            tokio::select! {
                biased;
                output = &mut exchange => return Some(output),
                () = &mut self.timer => {
                    let now = Instant::now();
                    if now >= deadline {
                        // Park the timer far ahead; the next guard pulls it in.
                        self.timer.as_mut().reset(now + self.timeout * 2);
                        return None;
                    }
                    // It was set for an earlier exchange: move it to this one's deadline.
                    self.timer.as_mut().reset(deadline);
                }
            }
        }
    }
}

/// Runs one connection for the whole window and returns what it measured; its latencies
/// go into `latency`, shared with the other connections of its thread.
///
/// Stops by itself at `window.end`, whatever the server does.
pub async fn run_connection<D: Driver>(
    mut driver: D,
    plan: Plan,
    window: Window,
    index: usize,
    progress: Option<ProgressSlot>,
    latency: SharedLatency,
    stop: CancellationToken,
) -> Measured {
    let mut measured = Measured::default();
    let mut schedule = Schedule::new(
        plan.load,
        window.start,
        index,
        plan.connections,
        plan.ramp_up,
    );
    let ended = {
        let work = drive(
            &mut driver,
            (plan, index),
            window,
            &mut schedule,
            &mut measured,
            progress.as_ref(),
            &latency,
        );
        tokio::select! {
            biased;
            () = sleep_until(window.end) => window.end,
            () = stop.cancelled() => Instant::now().min(window.end),
            () = work => window.end,
        }
    };
    measured.end_at(ended, progress.as_ref());
    measured.unsent = schedule.remaining_between(window.measure_from, ended);
    measured.due = schedule.due_between(window.measure_from, ended);
    measured
}

/// The request loop of one connection; cancelled at the window's end.
async fn drive<D: Driver>(
    driver: &mut D,
    (plan, index): (Plan, usize),
    window: Window,
    schedule: &mut Schedule,
    measured: &mut Measured,
    progress: Option<&ProgressSlot>,
    latency: &RefCell<Latencies>,
) {
    let mut watchdog = Watchdog::new(plan.timeout, window.end);
    // Every connection starts at the same instant, however long its thread took to start
    // (or at its place in the connect ramp).
    let opens = plan.connection_start(&window, index);
    sleep_until(opens).await;
    schedule.skip_to(opens);
    loop {
        // Open loop: when this request's latency counts from (see `open_loop_start`).
        let open_start = match schedule.next_due() {
            Some(due) if due >= window.end => return,
            Some(due) => Some(open_loop_start(due).await),
            None => None,
        };
        if let Err(error) = driver.prepare().await {
            let now = Instant::now();
            let pause = pause_after(&error);
            measured.send(&window, now);
            measured.fail(&window, now, FailureKind::of(&error), || error);
            driver.abandon();
            pause_after_error(plan.load, pause).await;
            continue;
        }
        let sent = Instant::now();
        if sent >= window.end {
            // The run is over; its timer has not fired yet (timers are late by up to a
            // millisecond). A request sent now would be reported as in flight at the end.
            return;
        }
        measured.ready(sent);
        let times = match open_start {
            Some((started, due)) => ExchangeTimes {
                started,
                lag: sent.saturating_duration_since(due),
            },
            None => ExchangeTimes {
                started: sent,
                lag: Duration::ZERO,
            },
        };
        measured.send(&window, sent);
        measured.in_flight = Some(times.started);
        let outcome = watchdog.guard(sent, driver.exchange()).await;
        let done = Instant::now();
        measured.in_flight = None;
        match outcome {
            Some(Ok(bytes)) => {
                measured.succeed(&window, times, done, bytes, latency);
                measured.note_progress(progress);
            }
            Some(Err(error)) => {
                let pause = pause_after(&error);
                measured.fail(&window, done, FailureKind::of(&error), || error);
                driver.abandon();
                pause_after_error(plan.load, pause).await;
            }
            None => {
                let after = plan.timeout;
                measured.fail(&window, done, FailureKind::Timeout, || Error::Timeout {
                    doing: "waiting for a reply".into(),
                    after,
                });
                driver.abandon();
            }
        }
    }
}

/// Waits for an open-loop request's due time and returns when its latency counts from,
/// with the due time.
///
/// * The connection is still busy past the due time (the previous reply came late): the
///   latency counts from the due time, so waiting behind a slow server is measured (the
///   coordinated-omission correction).
/// * The connection is idle and sleeps until the due time: the latency counts from when it
///   wakes. Timers have a resolution of about a millisecond; counting that oversleep, the
///   load generator's own lateness, would add up to 1 ms to every sample and say nothing
///   about the server. The lateness still shows in the report's send lag.
async fn open_loop_start(due: Instant) -> (Instant, Instant) {
    if Instant::now() < due {
        sleep_until(due).await;
        (Instant::now(), due)
    } else {
        (due, due)
    }
}

/// Closed loop: a short pause after a failure. Open loop: none, the timetable paces.
async fn pause_after_error(load: Load, pause: Duration) {
    if load == Load::Closed {
        sleep(pause).await;
    }
}

#[cfg(test)]
mod tests {
    //! The measurement logic against drivers that only sleep, in tokio's paused time:
    //! every figure is exact, so these tests pin the arithmetic, not the machine.

    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A driver whose reply takes a fixed time, except during a stall of the "server".
    #[derive(Clone)]
    struct FakeServer {
        /// How long every reply takes.
        delay: Duration,
        /// Replies are held back until the end of this span, if it covers them.
        stall: Option<(Instant, Instant)>,
        /// Fail every exchange with this kind.
        failing: Option<FailureKind>,
        /// Exchanges started, across clones.
        started: Arc<AtomicU64>,
    }

    impl FakeServer {
        fn new(delay: Duration) -> FakeServer {
            FakeServer {
                delay,
                stall: None,
                failing: None,
                started: Arc::new(AtomicU64::new(0)),
            }
        }
    }

    impl Driver for FakeServer {
        async fn prepare(&mut self) -> crate::Result<()> {
            Ok(())
        }

        async fn exchange(&mut self) -> crate::Result<u64> {
            self.started.fetch_add(1, Ordering::Relaxed);
            if let Some(kind) = self.failing {
                return Err(match kind {
                    FailureKind::Refused => Error::Refused {
                        endpoint: crate::Endpoint::seed_tcp(),
                    },
                    _ => Error::ClosedEarly {
                        peer: "fake".into(),
                        during: "in a test".into(),
                    },
                });
            }
            let mut ready = Instant::now() + self.delay;
            if let Some((from, until)) = self.stall
                && ready >= from
                && ready < until
            {
                ready = until;
            }
            sleep_until(ready).await;
            Ok(10)
        }

        fn abandon(&mut self) {}
    }

    const MS: Duration = Duration::from_millis(1);

    /// Equal to the histogram's resolution: 3 significant figures, rounded up.
    fn assert_close(got: Duration, want: Duration) {
        let slack = want / 1000 + Duration::from_micros(1);
        assert!(
            got >= want && got <= want + slack,
            "{got:?} is not {want:?} to 3 significant figures"
        );
    }

    async fn run(server: FakeServer, load: Load, connections: usize, window: Window) -> Measured {
        let plan = Plan {
            load,
            connections,
            timeout: Duration::from_secs(2),
            ramp_up: Duration::ZERO,
            connect_rate: None,
        };
        run_plan(server, plan, window).await
    }

    async fn run_plan(server: FakeServer, plan: Plan, window: Window) -> Measured {
        let connections = plan.connections;
        let latency = SharedLatency::default();
        let local = tokio::task::LocalSet::new();
        let mut total = local
            .run_until(async {
                let tasks: Vec<_> = (0..connections)
                    .map(|i| {
                        let connection = run_connection(
                            server.clone(),
                            plan,
                            window,
                            i,
                            None,
                            latency.clone(),
                            CancellationToken::new(),
                        );
                        tokio::task::spawn_local(connection)
                    })
                    .collect();
                let mut total = Measured::default();
                for task in tasks {
                    total.absorb(task.await.unwrap_or_else(|e| panic!("{e}")));
                }
                total
            })
            .await;
        let latencies = latency.take();
        total.latency = latencies.steady;
        total.ramp_latency = latencies.ramp;
        total
    }

    fn window(warmup: Duration, duration: Duration) -> Window {
        Window::starting_now(warmup, duration)
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_measures_the_reply_time() {
        let measured = run(
            FakeServer::new(20 * MS),
            Load::Closed,
            2,
            window(Duration::ZERO, Duration::from_secs(1)),
        )
        .await;
        let p = measured.latency.percentiles();
        assert_close(p.p50, 20 * MS);
        assert_close(p.max, 20 * MS);
        assert_close(p.min, 20 * MS);
        // 1 s / 20 ms per connection; the 50th reply of each lands exactly on the end.
        assert_eq!(measured.exchanges, 2 * 49);
        assert_eq!(measured.bytes, 2 * 49 * 10);
        assert_eq!(measured.failures.total(), 0);
        assert_eq!(measured.in_flight_at_end, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn warm_up_is_not_counted() {
        let server = FakeServer::new(10 * MS);
        let started = Arc::clone(&server.started);
        let measured = run(
            server,
            Load::Closed,
            1,
            window(Duration::from_millis(500), Duration::from_millis(500)),
        )
        .await;
        // 100 exchanges fit in the second; the 50 of the warm-up are not in the results.
        assert_eq!(started.load(Ordering::Relaxed), 100);
        assert_eq!(measured.exchanges, 50);
        assert_eq!(measured.latency.count(), 50);
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_keeps_the_rate_and_measures_the_reply_time() {
        let measured = run(
            FakeServer::new(20 * MS),
            Load::Open { rate: 100.0 },
            4,
            window(Duration::ZERO, Duration::from_secs(1)),
        )
        .await;
        // 100/s over 4 connections: each sends every 40 ms, replies take 20 ms.
        assert_eq!(measured.sent, 100);
        assert!((98..=100).contains(&measured.exchanges), "{measured:?}");
        let p = measured.latency.percentiles();
        assert_close(p.p50, 20 * MS);
        assert_close(p.max, 20 * MS);
        assert_eq!(measured.max_send_lag, Duration::ZERO);
        assert_eq!(measured.unsent, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_reports_a_rate_it_cannot_reach() {
        let measured = run(
            FakeServer::new(20 * MS),
            Load::Open { rate: 200.0 },
            2,
            window(Duration::ZERO, Duration::from_secs(1)),
        )
        .await;
        // Two connections with 20 ms replies can carry 100/s, not 200/s: half the
        // timetable is never sent, and latency grows with the backlog.
        assert!(measured.sent <= 101, "{measured:?}");
        assert!(measured.unsent >= 95, "{measured:?}");
        let p = measured.latency.percentiles();
        assert!(p.max >= Duration::from_millis(450), "{p:?}");
        assert!(measured.max_send_lag >= Duration::from_millis(450));
    }

    /// The coordinated-omission case: the same 500 ms stall, seen by both loops.
    #[tokio::test(start_paused = true)]
    async fn a_stall_shows_in_open_loop_and_hides_in_closed_loop() {
        let stalled = |w: &Window| {
            let mut server = FakeServer::new(MS);
            server.stall = Some((
                w.start + Duration::from_millis(400),
                w.start + Duration::from_millis(900),
            ));
            server
        };
        let w = window(Duration::ZERO, Duration::from_millis(1500));
        let closed = run(stalled(&w), Load::Closed, 2, w).await;
        let w = window(Duration::ZERO, Duration::from_millis(1500));
        let open = run(stalled(&w), Load::Open { rate: 200.0 }, 2, w).await;

        let closed = closed.latency.percentiles();
        let open_p = open.latency.percentiles();
        // Closed loop: one stalled sample per connection among ~2000 fast ones.
        assert_eq!(closed.p99, MS);
        assert!(closed.max >= Duration::from_millis(499), "{closed:?}");
        // Open loop: everything due during the stall waited for it (a third of the run).
        assert!(open_p.p90 >= Duration::from_millis(300), "{open_p:?}");
        assert!(open_p.p99 >= Duration::from_millis(450), "{open_p:?}");
        assert_eq!(open_p.p50, MS);
        assert!(
            open.sent >= 295,
            "the backlog is sent after the stall: {open:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_never_answers_times_out() {
        let measured = run(
            FakeServer::new(Duration::from_secs(3600)),
            Load::Closed,
            1,
            Window::starting_now(Duration::ZERO, Duration::from_secs(5)),
        )
        .await;
        // 2 s timeout: two timeouts in 5 s, the third exchange still waiting at the end.
        assert_eq!(measured.failures.timeout, 2);
        assert_eq!(measured.exchanges, 0);
        assert_eq!(measured.in_flight_at_end, 1);
        assert!(matches!(measured.first_error, Some(Error::Timeout { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_counted_by_kind_with_a_pause_between() {
        let mut server = FakeServer::new(MS);
        server.failing = Some(FailureKind::Refused);
        let measured = run(
            server,
            Load::Closed,
            1,
            window(Duration::ZERO, Duration::from_millis(100)),
        )
        .await;
        assert_eq!(measured.failures.refused, 10, "one per 10 ms pause");
        assert_eq!(measured.failures.total(), 10);
        assert!(matches!(measured.first_error, Some(Error::Refused { .. })));

        let mut server = FakeServer::new(MS);
        server.failing = Some(FailureKind::ShortReply);
        let measured = run(
            server,
            Load::Closed,
            1,
            window(Duration::ZERO, Duration::from_millis(100)),
        )
        .await;
        assert_eq!(measured.failures.short_reply, 10);
    }

    #[test]
    fn a_request_sent_at_or_after_the_end_is_not_in_flight_at_the_end() {
        let ended = Instant::now();
        let mut late = Measured {
            in_flight: Some(ended + Duration::from_micros(300)),
            ..Measured::default()
        };
        late.end_at(ended, None);
        assert_eq!(late.in_flight_at_end, 0);
        let mut waiting = Measured {
            in_flight: Some(ended - Duration::from_millis(2)),
            ..Measured::default()
        };
        waiting.end_at(ended, None);
        assert_eq!(waiting.in_flight_at_end, 1);
        assert_eq!(waiting.oldest_in_flight, Duration::from_millis(2));
    }

    #[test]
    fn timetable_interleaves_connections_evenly() {
        let start = Instant::now();
        let mut a = Schedule::new(Load::Open { rate: 1000.0 }, start, 0, 2, Duration::ZERO);
        let mut b = Schedule::new(Load::Open { rate: 1000.0 }, start, 1, 2, Duration::ZERO);
        let offsets = |s: &mut Schedule| -> Vec<Duration> {
            (0..3)
                .map(|_| s.next_due().map(|d| d - start).unwrap_or_default())
                .collect()
        };
        assert_eq!(offsets(&mut a), [Duration::ZERO, 2 * MS, 4 * MS]);
        assert_eq!(offsets(&mut b), [MS, 3 * MS, 5 * MS]);
        // Due times in [9 ms, 19 ms) still ahead of connection a: 10, 12, …, 18.
        assert_eq!(a.remaining_between(start + 9 * MS, start + 19 * MS), 5);
        // Those already taken (0, 2, 4) are not counted again.
        assert_eq!(a.remaining_between(start, start + 7 * MS), 1);
        assert_eq!(
            Schedule::new(Load::Closed, start, 0, 1, Duration::ZERO).next_due(),
            None
        );
    }

    #[test]
    fn failure_kinds_follow_the_error() {
        let refused = Error::Refused {
            endpoint: crate::Endpoint::seed_tcp(),
        };
        assert_eq!(FailureKind::of(&refused), FailureKind::Refused);
        let closed = Error::exchange(std::io::ErrorKind::UnexpectedEof.into(), "p", "x");
        assert_eq!(FailureKind::of(&closed), FailureKind::ShortReply);
        let reset = Error::exchange(std::io::ErrorKind::ConnectionReset.into(), "p", "x");
        assert_eq!(FailureKind::of(&reset), FailureKind::Reset);
        let other = Error::Usage("x".into());
        assert_eq!(FailureKind::of(&other), FailureKind::Other);
    }

    #[test]
    fn a_ramp_grows_the_rate_linearly_then_holds_it() {
        let start = Instant::now();
        let ramp = Duration::from_secs(2);
        let mut a = Schedule::new(Load::Open { rate: 100.0 }, start, 0, 1, ramp);
        // The ramp's 2 s carry rate·ramp/2 = 100 requests, the next second 100 more.
        assert_eq!(a.due_between(start, start + ramp), 100);
        assert_eq!(a.due_between(start + ramp, start + 3 * ramp / 2), 100);
        // A quarter of the ramp's requests in its first half (the count grows as t²).
        assert_eq!(a.due_between(start, start + Duration::from_secs(1)), 25);
        let offsets: Vec<_> = (0..3)
            .filter_map(|_| a.next_due())
            .map(|d| d - start)
            .collect();
        assert_eq!(offsets[0], Duration::ZERO);
        assert!(offsets[1] > offsets[2] - offsets[1], "{offsets:?}");
        // A connection that opens late owns only what is due after it opens.
        let mut late = Schedule::new(Load::Open { rate: 100.0 }, start, 0, 1, Duration::ZERO);
        late.skip_to(start + Duration::from_secs(1));
        assert_eq!(late.due_between(start, start + Duration::from_secs(2)), 100);
        assert_eq!(
            late.remaining_between(start, start + Duration::from_secs(2)),
            100
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_ramp_reports_its_exchanges_apart() {
        let plan = Plan {
            load: Load::Open { rate: 100.0 },
            connections: 2,
            timeout: Duration::from_secs(2),
            ramp_up: Duration::from_secs(1),
            connect_rate: None,
        };
        let w = window(Duration::ZERO, Duration::from_secs(2)).with_ramp(plan.ramp_up);
        let measured = run_plan(FakeServer::new(MS), plan, w).await;
        // 50 requests during the ramp, 100 in the steady second after it.
        assert!((49..=50).contains(&measured.ramp_exchanges), "{measured:?}");
        assert!((99..=100).contains(&measured.exchanges), "{measured:?}");
        assert_eq!(measured.latency.count(), measured.exchanges);
        assert_eq!(measured.ramp_latency.count(), measured.ramp_exchanges);
        assert_eq!(measured.due, 150);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connect_ramp_opens_connections_at_its_pace() {
        let plan = Plan {
            load: Load::Closed,
            connections: 10,
            timeout: Duration::from_secs(2),
            ramp_up: Duration::ZERO,
            connect_rate: Some(5.0),
        };
        let w = window(Duration::ZERO, Duration::from_secs(3));
        let measured = run_plan(FakeServer::new(MS), plan, w).await;
        assert_eq!(measured.connected, 10);
        let last = measured.last_connected.map(|t| t - w.start);
        assert_eq!(last, Some(Duration::from_millis(1800)));
    }
}
