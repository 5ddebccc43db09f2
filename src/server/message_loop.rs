//! The per-message loop of a connection served by its own task (reply, echo, discard with
//! line framing, TLS, `--hex` or a PROXY header; the fast lane serves the others): read a
//! message, answer it, repeat until the client closes.
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

use super::answer::answer_message;
use super::end::{End, report_end};
use super::{AfterReply, Shared};
use crate::endpoint::PeerAddr;
use crate::error::Error;
use crate::framing::{FrameSpan, Framer, Framing};
use crate::obs::{Event, Tally};

/// Serves one connection from its first byte to the end, then logs and counts how it
/// ended.
pub(crate) async fn serve_connection<S>(stream: S, peer: &PeerAddr, conn: u64, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    shared.stats.active.fetch_add(1, Ordering::Relaxed);
    shared.events.emit(Event::Connected { conn, peer });
    let idle = shared.options.limits.idle_timeout;
    let now = Instant::now();
    // Armed for the idle deadline when there is one; otherwise parked until a message
    // deadline needs it.
    let timer = tokio::time::sleep_until(now + idle.unwrap_or(PARKED));
    tokio::pin!(timer);
    let stop = shared.shutdown.cancelled();
    tokio::pin!(stop);
    let mut exchange = MessageLoop {
        stream,
        peer,
        conn,
        shared,
        input: BytesMut::new(),
        output: Vec::new(),
        framer: Framer::new(shared.options.framing),
        tally: Tally::default(),
        last_activity: now,
        message_started: None,
        timer,
        armed: idle.is_some(),
        timer_watched: false,
        stop_watched: false,
        stop,
    };
    let end = exchange.exchange_loop().await;
    if end.wants_shutdown() {
        // Send our FIN so the client sees a clean end; bounded, since the peer may be gone.
        let _ = tokio::time::timeout(Duration::from_secs(1), exchange.stream.shutdown()).await;
    }
    report_end(&end, peer, conn, &exchange.tally, shared);
    shared.stats.absorb(&mut exchange.tally);
    shared.stats.active.fetch_sub(1, Ordering::Relaxed);
}

/// What one wait for input produced.
enum Read {
    /// This many bytes arrived.
    Data(usize),
    /// The client closed its sending side.
    Eof,
}

/// The state of one connection between messages.
struct MessageLoop<'a, 'p, S> {
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

impl<S> MessageLoop<'_, '_, S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
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

    /// One poll of [`MessageLoop::read_more`]: the read first; then, only when it has to
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
        let answer = answer_message(
            shared,
            self.conn,
            self.peer,
            &self.input[span.payload.start..span.terminator.end],
            &self.input[span.payload.clone()],
            &self.input[span.terminator.clone()],
        );
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
