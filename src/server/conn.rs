//! One connection: read a message, answer it, repeat until the client closes.
//!
//! Backpressure is built in: the reply is written completely before the next read, so a
//! client that sends but never reads stops being read from, and the server buffers at most
//! one reply for it. Every wait is bounded: by the idle timeout, by the message timeout
//! once a message has started, and by shutdown.
//!
//! The per-message path is kept lean, because it is what a busy server does all day:
//! the shutdown signal and the deadline timer are set up once per connection (not once
//! per read), the idle timer is re-armed only when it fires (activity just records the
//! time), and answers are written straight from the input or the configured reply,
//! without copying, whenever they are one contiguous slice.

use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFuture;

use super::{AfterReply, Shared};
use crate::endpoint::Delivery;
use crate::error::Error;
use crate::framing::{FrameSpan, Framer, Framing};
use crate::obs::throttle::connection_line;
use crate::obs::{ErrorKind, Event, EventLog, Tally};
use crate::transport::{PeerAddr, StdStream};

/// Why a connection ended.
#[derive(Debug)]
pub(super) enum End {
    /// The client closed its side and every message was answered.
    PeerClosed,
    /// `--close`: the first reply was sent.
    AfterReply,
    /// The server is shutting down.
    Shutdown,
    /// No bytes for the idle timeout.
    Idle(Duration),
    /// A message started but did not complete in time.
    SlowMessage(Duration),
    /// The client did not read a reply within the idle timeout.
    NotReading(Duration),
    /// A failure: reset, oversized line, I/O error.
    Failed(Error),
}

impl End {
    /// A few words for logs and the `closed` event.
    fn reason(&self) -> Cow<'static, str> {
        match self {
            End::PeerClosed => "closed by peer".into(),
            End::AfterReply => "closed after reply".into(),
            End::Shutdown => "server shutting down".into(),
            End::Idle(d) => format!("idle for {}", humantime::format_duration(*d)).into(),
            End::SlowMessage(d) => format!(
                "message not completed within {}",
                humantime::format_duration(*d)
            )
            .into(),
            End::NotReading(d) => {
                format!("reply not read within {}", humantime::format_duration(*d)).into()
            }
            End::Failed(e) => e.to_string().into(),
        }
    }

    /// How the end is logged and counted.
    fn severity(&self) -> EndSeverity {
        match self {
            End::PeerClosed | End::AfterReply | End::Shutdown => EndSeverity::Normal,
            End::Idle(_) => EndSeverity::Idle,
            End::Failed(Error::Reset { .. } | Error::ClosedEarly { .. }) => {
                EndSeverity::ClientTrouble
            }
            End::SlowMessage(_) | End::NotReading(_) | End::Failed(_) => EndSeverity::Problem,
        }
    }

    /// Whether to send our FIN explicitly before closing. After the peer's EOF, or after
    /// the one reply of `--close` (the note's `conn.close()`), closing the socket sends it
    /// anyway; after a failure there may be nobody to send it to.
    pub(super) fn wants_shutdown(&self) -> bool {
        matches!(self, End::Shutdown | End::Idle(_) | End::SlowMessage(_))
    }

    /// The metrics class of an error end.
    fn kind(&self) -> ErrorKind {
        match self {
            End::SlowMessage(_) | End::NotReading(_) => ErrorKind::Timeout,
            End::Failed(e) => ErrorKind::of(e),
            End::PeerClosed | End::AfterReply | End::Shutdown | End::Idle(_) => ErrorKind::Io,
        }
    }
}

/// How unusual a connection's end is: decides its log level and how it is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndSeverity {
    /// The expected end (the client or the program finished, `--close`, shutdown): no
    /// log line, not counted.
    Normal,
    /// The idle timeout closed a silent client: the server doing its job, logged at info
    /// and counted apart from errors (`timed out (idle)` in the summary).
    Idle,
    /// The client's doing (reset, vanished): an error, logged at info.
    ClientTrouble,
    /// Worth an operator's attention (a limit ran out, a program failed): an error,
    /// logged as a warning.
    Problem,
}

impl EndSeverity {
    /// Logs `reason` at this severity's level and counts the end in `stats`.
    pub(crate) fn log_and_count(self, reason: &str, kind: ErrorKind, stats: &crate::obs::Stats) {
        match self {
            EndSeverity::Normal => tracing::debug!("connection ended: {reason}"),
            EndSeverity::Idle => {
                stats.count_idle_close();
                connection_line(|more| tracing::info!("closing connection: {reason}{more}"));
            }
            EndSeverity::ClientTrouble => {
                stats.count_error(kind);
                connection_line(|more| tracing::info!("connection ended: {reason}{more}"));
            }
            EndSeverity::Problem => {
                stats.count_error(kind);
                connection_line(|more| tracing::warn!("closing connection: {reason}{more}"));
            }
        }
    }
}

/// What happened to a connection before its task started (see [`serve_now`]).
#[derive(Debug, Default)]
pub(crate) struct Prelude {
    /// Counts so far.
    pub(super) tally: Tally,
    /// The part of an answer the socket did not take yet, to send first.
    pending: Vec<u8>,
    /// Whether the `connected` event is out already.
    announced: bool,
    /// Whether a reply has been (or is being) sent, for `--close`.
    answered: bool,
}

impl Prelude {
    /// Emits the `connected` event unless that was done already.
    pub(super) fn announce(&mut self, events: &EventLog, conn: u64, peer: &PeerAddr) {
        if !self.announced {
            events.emit(Event::Connected { conn, peer });
            self.announced = true;
        }
    }

    /// Whether part of an answer is still to be sent.
    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether a reply has been (or is being) sent, for `--close`.
    pub(super) fn answered(&self) -> bool {
        self.answered
    }

    /// Sends what the socket takes now of the pending answer; returns how many bytes
    /// went (0 when it took nothing).
    pub(super) fn send_pending(&mut self, stream: &StdStream) -> Result<usize, End> {
        let written = match stream.write_now(&self.pending) {
            Ok(0) => {
                let e = io::Error::from(io::ErrorKind::WriteZero);
                return Err(End::Failed(Error::exchange(
                    e,
                    super::THE_CLIENT,
                    "while sending the reply",
                )));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                return Err(End::Failed(Error::exchange(
                    e,
                    super::THE_CLIENT,
                    "while sending the reply",
                )));
            }
        };
        self.tally.bytes_out += written as u64;
        self.pending.drain(..written);
        Ok(written)
    }
}

/// How serving on the spot ended.
pub(crate) enum FirstTurn {
    /// The connection is finished (counted and logged); close it.
    Done,
    /// The connection must wait for its client: serve it in a task from here.
    Continue(Prelude),
}

/// Whether [`serve_now`] can serve this server's connections: the per-message loop, raw
/// framing (each read is a message), and no TLS or hex layer.
pub(crate) fn can_serve_now(shared: &Shared) -> bool {
    shared.options.waits_in_kernel(Delivery::Stream)
}

/// Serves a just-accepted connection on the spot when its first message is already
/// there, as the hand-written C server does: one read, one write, and for the note's
/// one-shot exchange (`--close`) the connection is done without ever being registered
/// with the reactor or given a task. Nothing here waits: if the message has not arrived,
/// or the reply does not fit in the socket buffer, the connection continues in a task
/// with what was done so far.
///
/// `scratch` is the accept loop's read buffer, reused for every connection.
pub(crate) fn serve_now(
    stream: &StdStream,
    peer: &PeerAddr,
    conn: u64,
    shared: &Shared,
    scratch: &mut Vec<u8>,
) -> FirstTurn {
    let options = &shared.options;
    let buffer_size = options.buffer_size.max(1);
    if scratch.len() < buffer_size {
        scratch.resize(buffer_size, 0);
    }
    let mut prelude = Prelude::default();
    let received = match stream.read_now(&mut scratch[..buffer_size]) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return FirstTurn::Continue(prelude),
        Ok(0) => Err(End::PeerClosed),
        Ok(n) => Ok(n),
        Err(e) => Err(End::Failed(Error::exchange(
            e,
            super::THE_CLIENT,
            "while reading",
        ))),
    };
    shared.events.emit(Event::Connected { conn, peer });
    prelude.announced = true;
    let end = match received {
        Ok(n) => match answer_now(stream, &scratch[..n], peer, conn, shared, &mut prelude) {
            Ok(())
                if prelude.answered
                    && prelude.pending.is_empty()
                    && options.after_reply == AfterReply::Close =>
            {
                End::AfterReply
            }
            Ok(()) => return FirstTurn::Continue(prelude),
            Err(end) => end,
        },
        Err(end) => end,
    };
    report_end(&end, peer, conn, &prelude.tally, shared);
    shared.stats.absorb(&mut prelude.tally);
    FirstTurn::Done
}

/// Answers a message without waiting; what the socket does not take now goes to
/// `prelude.pending`.
///
/// Always inlined: it is the middle of the fast lane's per-message path, and as a call
/// it costs register saving on every message.
#[inline(always)]
pub(super) fn answer_now(
    stream: &StdStream,
    message: &[u8],
    peer: &PeerAddr,
    conn: u64,
    shared: &Shared,
    prelude: &mut Prelude,
) -> Result<(), End> {
    prelude.tally.bytes_in += message.len() as u64;
    prelude.tally.messages += 1;
    let answer = shared.options.responder.answer(message, &[]);
    if shared.shows_messages() {
        shared.events.emit(Event::Message {
            conn,
            peer,
            received: message,
            sent: answer.map(|[first, _]| first),
        });
    }
    // Raw framing has no terminator, so an answer is always one slice.
    let Some([reply, _]) = answer else {
        return Ok(());
    };
    prelude.answered = true;
    prelude.tally.replies += 1;
    // With `--close` this reply is the connection's last: it leaves together with our FIN.
    let last = shared.options.after_reply == AfterReply::Close;
    let sent = if last {
        stream.write_last_now(reply)
    } else {
        stream.write_now(reply)
    };
    let written = match sent {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => {
            return Err(End::Failed(Error::exchange(
                e,
                super::THE_CLIENT,
                "while sending the reply",
            )));
        }
    };
    prelude.tally.bytes_out += written as u64;
    let unsent = &reply[written..];
    if !unsent.is_empty() {
        prelude.pending.extend_from_slice(unsent);
    }
    Ok(())
}

/// Serves one connection to the end, then logs and counts how it ended.
///
/// `prelude` is what [`serve_now`] already did (nothing, for a connection served from
/// its first byte here).
pub(crate) async fn serve_connection<S>(
    stream: S,
    peer: &PeerAddr,
    conn: u64,
    shared: &Shared,
    prelude: Prelude,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    shared.stats.active.fetch_add(1, Ordering::Relaxed);
    let mut prelude = prelude;
    prelude.announce(&shared.events, conn, peer);
    let idle = shared.options.limits.idle_timeout;
    let now = Instant::now();
    // Armed for the idle deadline when there is one; otherwise parked until a message
    // deadline needs it.
    let timer = tokio::time::sleep_until(now + idle.unwrap_or(PARKED));
    tokio::pin!(timer);
    let stop = shared.shutdown.cancelled();
    tokio::pin!(stop);
    let mut session = Session {
        stream,
        peer,
        conn,
        shared,
        input: BytesMut::new(),
        output: Vec::new(),
        framer: Framer::new(shared.options.framing),
        tally: prelude.tally,
        last_activity: now,
        message_started: None,
        timer,
        armed: idle.is_some(),
        timer_watched: false,
        stop_watched: false,
        stop,
    };
    let end = match session
        .finish_prelude(prelude.pending, prelude.answered)
        .await
    {
        Some(end) => end,
        None => session.exchange_loop().await,
    };
    if end.wants_shutdown() {
        // Send our FIN so the client sees a clean end; bounded, since the peer may be gone.
        let _ = tokio::time::timeout(Duration::from_secs(1), session.stream.shutdown()).await;
    }
    report_end(&end, peer, conn, &session.tally, shared);
    shared.stats.absorb(&mut session.tally);
    shared.stats.active.fetch_sub(1, Ordering::Relaxed);
}

/// Logs the end once, at a level matching how unusual it is, counts it, and emits
/// `closed`. The line is logged under the connection's span (`conn{id=7 peer=…}: …`),
/// made here for the connections served without one.
pub(super) fn report_end(end: &End, peer: &PeerAddr, conn: u64, tally: &Tally, shared: &Shared) {
    let severity = end.severity();
    if severity != EndSeverity::Normal {
        let reason = end.reason();
        super::session::in_connection_span(conn, peer, || {
            severity.log_and_count(&reason, end.kind(), &shared.stats);
        });
    }
    if shared.events.wants_messages() {
        shared.events.emit(Event::Closed {
            conn,
            peer,
            messages: tally.messages,
            bytes_in: tally.bytes_in,
            bytes_out: tally.bytes_out,
            reason: &end.reason(),
        });
    }
}

/// What one wait for input produced.
enum Read {
    /// This many bytes arrived.
    Data(usize),
    /// The client closed its sending side.
    Eof,
}

/// The state of one connection between messages.
struct Session<'a, 'p, S> {
    stream: S,
    peer: &'a PeerAddr,
    conn: u64,
    shared: &'a Shared,
    /// Bytes read and not yet answered (a partial line, in line framing).
    input: BytesMut,
    /// Scratch space for answers that are not one contiguous slice.
    output: Vec<u8>,
    framer: Framer,
    tally: Tally,
    /// When bytes last moved either way; the idle timeout counts from here.
    last_activity: Instant,
    /// When the first byte of the message now being received arrived.
    message_started: Option<Instant>,
    /// One timer for both deadlines, armed for the earlier; re-armed only when it fires.
    timer: Pin<&'p mut Sleep>,
    /// Whether the timer is armed (it is not polled otherwise).
    armed: bool,
    /// Whether the timer has been polled since it was last armed (so it will wake us).
    timer_watched: bool,
    /// Whether `stop` has been polled once (so shutdown will wake us).
    stop_watched: bool,
    /// Completes when the server shuts down; registered once for the whole connection.
    stop: Pin<&'p mut WaitForCancellationFuture<'a>>,
}

/// Where the timer waits while no deadline applies (it is not polled then).
const PARKED: Duration = Duration::from_secs(365 * 24 * 3600);

impl<S> Session<'_, '_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Sends what [`serve_now`] could not; ends the connection if that was the one reply
    /// of `--close`.
    async fn finish_prelude(&mut self, pending: Vec<u8>, answered: bool) -> Option<End> {
        if !pending.is_empty() {
            self.output = pending;
            let idle = self.shared.options.limits.idle_timeout;
            let sent = write_fully(
                &mut self.stream,
                &self.output,
                &mut self.last_activity,
                &mut self.timer,
                &mut self.timer_watched,
                idle,
            )
            .await;
            if let Err(failure) = sent {
                return Some(self.write_end(failure));
            }
            self.tally.bytes_out += self.output.len() as u64;
        }
        (answered && self.shared.options.after_reply == AfterReply::Close)
            .then_some(End::AfterReply)
    }

    /// The end a failed write means.
    fn write_end(&self, failure: WriteFailure) -> End {
        match failure {
            WriteFailure::NotReading(limit) => End::NotReading(limit),
            WriteFailure::Io(e) => End::Failed(Error::exchange(
                e,
                super::THE_CLIENT,
                "while sending the reply",
            )),
        }
    }

    /// Reads, frames and answers messages until something ends the connection.
    async fn exchange_loop(&mut self) -> End {
        loop {
            let eof = match self.read_more().await {
                Ok(Read::Data(n)) => {
                    self.tally.bytes_in += n as u64;
                    false
                }
                Ok(Read::Eof) => true,
                Err(end) => return end,
            };
            let answered = match self.answer_buffered(eof).await {
                Ok(answered) => answered,
                Err(end) => return end,
            };
            if answered && self.shared.options.after_reply == AfterReply::Close {
                return End::AfterReply;
            }
            if eof {
                return End::PeerClosed;
            }
            self.note_partial_message();
            if self.tally.messages >= Tally::FLUSH_EVERY {
                self.shared.stats.absorb(&mut self.tally);
            }
        }
    }

    /// Starts (or clears) the message clock after the buffered messages were answered,
    /// pulling the timer in when the message deadline comes before the idle one.
    fn note_partial_message(&mut self) {
        if self.input.is_empty() {
            self.message_started = None;
            return;
        }
        if self.message_started.is_none() {
            self.message_started = Some(self.last_activity);
            if let Some(deadline) = self.message_deadline()
                && (!self.armed || deadline < self.timer.deadline())
            {
                self.timer.as_mut().reset(deadline);
                self.timer_watched = false;
                self.armed = true;
            }
        }
    }

    /// When the message being received must be complete, if one has started.
    fn message_deadline(&self) -> Option<Instant> {
        let limit = self.shared.options.limits.message_timeout?;
        Some(self.message_started? + limit)
    }

    /// The timer fired: either a limit really passed (the end to report), or activity
    /// moved the deadline and the timer is re-armed for it.
    fn check_deadlines(&mut self) -> Option<End> {
        let now = Instant::now();
        let limits = &self.shared.options.limits;
        let idle = limits.idle_timeout.map(|d| (self.last_activity + d, d));
        if let Some((deadline, limit)) = idle
            && deadline <= now
        {
            return Some(End::Idle(limit));
        }
        if let (Some(deadline), Some(limit)) = (self.message_deadline(), limits.message_timeout)
            && deadline <= now
        {
            return Some(End::SlowMessage(limit));
        }
        let next = [idle.map(|(at, _)| at), self.message_deadline()]
            .into_iter()
            .flatten()
            .min();
        match next {
            Some(at) => {
                self.timer.as_mut().reset(at);
                self.timer_watched = false;
            }
            None => self.armed = false,
        }
        None
    }

    /// Waits for more bytes, bounded by the deadlines and shutdown.
    ///
    /// Raw framing reads at most `buffer_size` bytes, so each read is one message, as in
    /// the note's `recv(1024)`.
    async fn read_more(&mut self) -> Result<Read, End> {
        let options = &self.shared.options;
        let buffer_size = options.buffer_size.max(1);
        self.input.reserve(buffer_size);
        let limit = match options.framing {
            Framing::Raw => buffer_size,
            Framing::Line { .. } => self.input.capacity() - self.input.len(),
        };
        std::future::poll_fn(|cx| self.poll_read_more(cx, limit)).await
    }

    /// One poll of [`Session::read_more`]: the read first; then, only when it has to
    /// wait, shutdown and the deadline timer.
    ///
    /// Each of those two is polled once to register this task for its wake-up and then
    /// only checked (an atomic load, a flag), so a connection that waits once per message
    /// does not re-register with either on every message.
    fn poll_read_more(&mut self, cx: &mut Context<'_>, limit: usize) -> Poll<Result<Read, End>> {
        loop {
            let mut window = (&mut self.input).limit(limit);
            match tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut window) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(Read::Eof)),
                Poll::Ready(Ok(n)) => {
                    self.last_activity = Instant::now();
                    return Poll::Ready(Ok(Read::Data(n)));
                }
                // A TLS client that closes without a close_notify alert (ncat --ssl, most
                // nc-style clients) is a truncation only if it stopped in the middle of a
                // message; between messages it is an ordinary end.
                Poll::Ready(Err(e))
                    if e.kind() == io::ErrorKind::UnexpectedEof && self.input.is_empty() =>
                {
                    return Poll::Ready(Ok(Read::Eof));
                }
                Poll::Ready(Err(e)) => {
                    return Poll::Ready(Err(End::Failed(Error::exchange(
                        e,
                        super::THE_CLIENT,
                        "while reading",
                    ))));
                }
                Poll::Pending => {}
            }
            if self.stop_fired(cx) {
                return Poll::Ready(Err(End::Shutdown));
            }
            if !(self.armed && self.timer_fired(cx)) {
                return Poll::Pending;
            }
            if let Some(end) = self.check_deadlines() {
                return Poll::Ready(Err(end));
            }
            // Re-armed for a later deadline: go round to watch it.
        }
    }

    /// Whether shutdown has been asked for. The first call registers for the wake-up.
    fn stop_fired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.stop_watched {
            return self.shared.shutdown.is_triggered();
        }
        self.stop_watched = true;
        self.stop.as_mut().poll(cx).is_ready()
    }

    /// Whether the timer went off. The first call after each (re-)arming registers for
    /// the wake-up.
    fn timer_fired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.timer_watched {
            return self.timer.is_elapsed();
        }
        self.timer_watched = true;
        self.timer.as_mut().poll(cx).is_ready()
    }

    /// Answers every complete message in `input` (and, at EOF, the unterminated rest).
    /// Returns whether at least one reply was sent.
    async fn answer_buffered(&mut self, eof: bool) -> Result<bool, End> {
        let mut answered = false;
        loop {
            let span = match self.framer.next_frame(&self.input) {
                Ok(Some(span)) => span,
                Ok(None) if eof => match self.framer.finish(&self.input) {
                    Some(span) => span,
                    None => break,
                },
                Ok(None) => break,
                Err(too_long) => {
                    return Err(End::Failed(Error::LineTooLong {
                        peer: super::THE_CLIENT.into(),
                        max: too_long.max_len,
                    }));
                }
            };
            self.tally.messages += 1;
            let replied = self.answer(&span).await?;
            self.input.advance(span.consumed());
            if replied {
                answered = true;
                if self.shared.options.after_reply == AfterReply::Close {
                    break;
                }
            }
            if self.shared.options.framing == Framing::Raw {
                // A raw read is one message: nothing is left. Clearing (rather than
                // advancing) keeps the buffer at its start, so the next read reuses it
                // without any bookkeeping.
                self.input.clear();
                break;
            }
        }
        Ok(answered)
    }

    /// Answers one message; returns whether anything was sent.
    async fn answer(&mut self, span: &FrameSpan) -> Result<bool, End> {
        let shared = self.shared;
        let framed = &self.input[span.payload.start..span.terminator.end];
        let terminator = &self.input[span.terminator.clone()];
        let answer = shared.options.responder.answer(framed, terminator);
        if shared.shows_messages() {
            shared.events.emit(Event::Message {
                conn: self.conn,
                peer: self.peer,
                received: &self.input[span.payload.clone()],
                sent: answer.map(|[first, second]| without_terminator(first, second, terminator)),
            });
        }
        let Some([first, second]) = answer else {
            return Ok(false);
        };
        // One write per answer: a contiguous answer goes as it is, two pieces are joined.
        let bytes: &[u8] = if second.is_empty() {
            first
        } else {
            self.output.clear();
            self.output.extend_from_slice(first);
            self.output.extend_from_slice(second);
            &self.output
        };
        write_fully(
            &mut self.stream,
            bytes,
            &mut self.last_activity,
            &mut self.timer,
            &mut self.timer_watched,
            shared.options.limits.idle_timeout,
        )
        .await
        .map_err(|failure| self.write_end(failure))?;
        self.tally.bytes_out += bytes.len() as u64;
        self.tally.replies += 1;
        Ok(true)
    }
}

/// The answer as the event shows it: without the line terminator that ends it.
fn without_terminator<'a>(first: &'a [u8], second: &'a [u8], terminator: &[u8]) -> &'a [u8] {
    if second.is_empty() {
        &first[..first.len() - terminator.len().min(first.len())]
    } else {
        first
    }
}

/// Why a reply could not be written.
enum WriteFailure {
    /// No byte of it was taken by the client within the idle timeout.
    NotReading(Duration),
    /// The connection failed.
    Io(io::Error),
}

/// Writes all of `bytes`. A client that takes some bytes now and then is still reading;
/// one that takes nothing for the idle timeout is not, and the write is abandoned.
///
/// It does not stop for shutdown: a reply that has been produced is delivered (the
/// server's grace period bounds the wait).
async fn write_fully<S>(
    stream: &mut S,
    mut bytes: &[u8],
    last_activity: &mut Instant,
    timer: &mut Pin<&mut Sleep>,
    timer_watched: &mut bool,
    idle: Option<Duration>,
) -> Result<(), WriteFailure>
where
    S: AsyncWrite + Unpin,
{
    // The usual case: the socket takes the whole answer at once. The idle clock was
    // just set by the read that brought the message, so it needs no update.
    let first = std::future::poll_fn(|cx| match Pin::new(&mut *stream).poll_write(cx, bytes) {
        Poll::Pending => Poll::Ready(None),
        Poll::Ready(written) => Poll::Ready(Some(written)),
    })
    .await;
    match first {
        Some(Ok(n)) if n == bytes.len() => return Ok(()),
        Some(Ok(0)) => return Err(WriteFailure::Io(io::ErrorKind::WriteZero.into())),
        Some(Ok(n)) => {
            bytes = &bytes[n..];
            *last_activity = Instant::now();
        }
        Some(Err(e)) => return Err(WriteFailure::Io(e)),
        None => {}
    }
    while !bytes.is_empty() {
        let written = match idle {
            None => stream.write(bytes).await,
            Some(limit) => loop {
                tokio::select! {
                    biased;
                    written = stream.write(bytes) => break written,
                    () = timer.as_mut() => {
                        let deadline = *last_activity + limit;
                        if deadline <= Instant::now() {
                            return Err(WriteFailure::NotReading(limit));
                        }
                        timer.as_mut().reset(deadline);
                    }
                }
            },
        };
        // The timer was polled (and maybe re-armed) by the write's wait.
        *timer_watched = idle.is_some();
        match written {
            Ok(0) => return Err(WriteFailure::Io(io::ErrorKind::WriteZero.into())),
            Ok(n) => {
                bytes = &bytes[n..];
                *last_activity = Instant::now();
            }
            Err(e) => return Err(WriteFailure::Io(e)),
        }
    }
    Ok(())
}
