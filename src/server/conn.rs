//! One connection: read a message, answer it, repeat until the client closes.
//!
//! Backpressure is built in: the reply is written completely before the next read, so a
//! client that sends but never reads stops being read from, and the server buffers at most
//! one reply for it. Every wait is bounded: by the idle timeout, by the message timeout
//! once a message has started, and by shutdown.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::{AfterReply, Shared};
use crate::error::Error;
use crate::framing::{Framer, Framing};
use crate::obs::{ErrorKind, Event, Tally};
use crate::transport::PeerAddr;

/// Why a connection ended.
#[derive(Debug)]
enum End {
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
    fn reason(&self) -> String {
        match self {
            End::PeerClosed => "closed by peer".into(),
            End::AfterReply => "closed after reply".into(),
            End::Shutdown => "server shutting down".into(),
            End::Idle(d) => format!("idle for {}", humantime::format_duration(*d)),
            End::SlowMessage(d) => {
                format!(
                    "message not completed within {}",
                    humantime::format_duration(*d)
                )
            }
            End::NotReading(d) => {
                format!("reply not read within {}", humantime::format_duration(*d))
            }
            End::Failed(e) => e.to_string(),
        }
    }

    fn is_error(&self) -> bool {
        !matches!(self, End::PeerClosed | End::AfterReply | End::Shutdown)
    }

    /// The metrics class of an error end.
    fn kind(&self) -> ErrorKind {
        match self {
            End::Idle(_) | End::SlowMessage(_) | End::NotReading(_) => ErrorKind::Timeout,
            End::Failed(e) => ErrorKind::of(e),
            End::PeerClosed | End::AfterReply | End::Shutdown => ErrorKind::Io,
        }
    }
}

/// What one read produced.
enum Read {
    Data(usize),
    Eof,
    Shutdown,
    Idle(Duration),
    SlowMessage(Duration),
}

/// Serves one connection to the end, then logs and counts how it ended.
pub(crate) async fn serve_connection<S>(mut stream: S, peer: PeerAddr, conn: u64, shared: &Shared)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    shared.stats.active.fetch_add(1, Ordering::Relaxed);
    shared.events.emit(Event::Connected { conn, peer: &peer });
    let mut tally = Tally::default();
    let end = exchange_loop(&mut stream, &peer, conn, shared, &mut tally).await;
    if !matches!(end, End::Failed(_) | End::NotReading(_)) {
        // Send our FIN so the client sees a clean end; bounded, since the peer may be gone.
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.shutdown()).await;
    }
    report_end(&end, &peer, conn, &tally, shared);
    shared.stats.absorb(&mut tally);
    shared.stats.active.fetch_sub(1, Ordering::Relaxed);
}

/// Logs the end once, at a level matching how unusual it is, and emits `closed`.
/// (The connection's span carries its id and peer.)
fn report_end(end: &End, peer: &PeerAddr, conn: u64, tally: &Tally, shared: &Shared) {
    let reason = end.reason();
    if end.is_error() {
        shared.stats.count_error(end.kind());
        match end {
            End::Failed(Error::Reset { .. } | Error::ClosedEarly { .. }) => {
                tracing::info!("connection ended: {reason}");
            }
            _ => tracing::warn!("closing connection: {reason}"),
        }
    }
    shared.events.emit(Event::Closed {
        conn,
        peer,
        messages: tally.messages,
        bytes_in: tally.bytes_in,
        bytes_out: tally.bytes_out,
        reason: &reason,
    });
}

/// Reads, frames and answers messages until something ends the connection.
async fn exchange_loop<S>(
    stream: &mut S,
    peer: &PeerAddr,
    conn: u64,
    shared: &Shared,
    tally: &mut Tally,
) -> End
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let options = &shared.options;
    let mut input = BytesMut::new();
    let mut output = Vec::new();
    let mut framer = Framer::new(options.framing);
    let mut message_started: Option<Instant> = None;
    loop {
        let read = read_more(stream, &mut input, message_started, shared).await;
        let eof = match read {
            Ok(Read::Data(n)) => {
                tally.bytes_in += n as u64;
                false
            }
            Ok(Read::Eof) => true,
            Ok(Read::Shutdown) => return End::Shutdown,
            Ok(Read::Idle(d)) => return End::Idle(d),
            Ok(Read::SlowMessage(d)) => return End::SlowMessage(d),
            Err(e) => return End::Failed(Error::exchange(e, peer.to_string(), "while reading")),
        };
        let answered = match answer_buffered(
            stream,
            &mut input,
            &mut output,
            &mut framer,
            eof,
            peer,
            conn,
            shared,
            tally,
        )
        .await
        {
            Ok(answered) => answered,
            Err(end) => return end,
        };
        if answered && options.after_reply == AfterReply::Close {
            return End::AfterReply;
        }
        if eof {
            return End::PeerClosed;
        }
        message_started = if input.is_empty() {
            None
        } else {
            message_started.or(Some(Instant::now()))
        };
        if tally.messages >= Tally::FLUSH_EVERY {
            shared.stats.absorb(tally);
        }
    }
}

/// Answers every complete message in `input` (and, at EOF, the unterminated rest).
/// Returns whether at least one reply was sent.
#[allow(clippy::too_many_arguments)]
async fn answer_buffered<S>(
    stream: &mut S,
    input: &mut BytesMut,
    output: &mut Vec<u8>,
    framer: &mut Framer,
    eof: bool,
    peer: &PeerAddr,
    conn: u64,
    shared: &Shared,
    tally: &mut Tally,
) -> Result<bool, End>
where
    S: AsyncWrite + Unpin,
{
    let options = &shared.options;
    let mut answered = false;
    loop {
        let span = match framer.next_frame(input) {
            Ok(Some(span)) => span,
            Ok(None) if eof => match framer.finish(input) {
                Some(span) => span,
                None => break,
            },
            Ok(None) => break,
            Err(too_long) => {
                return Err(End::Failed(Error::LineTooLong {
                    peer: peer.to_string(),
                    max: too_long.max_len,
                }));
            }
        };
        output.clear();
        let message = &input[span.payload.clone()];
        let terminator = &input[span.terminator.clone()];
        let replied = options.responder.respond(message, terminator, output);
        tally.messages += 1;
        if shared.events.wants_messages() {
            let reply_len = output.len() - terminator.len().min(output.len());
            shared.events.emit(Event::Message {
                conn,
                peer,
                received: message,
                sent: replied.then(|| &output[..reply_len]),
            });
        }
        input.advance(span.consumed());
        if replied {
            write_reply(stream, output, peer, shared).await?;
            tally.bytes_out += output.len() as u64;
            tally.replies += 1;
            answered = true;
            if options.after_reply == AfterReply::Close {
                break;
            }
        }
    }
    Ok(answered)
}

/// Writes one reply completely, within the idle timeout.
async fn write_reply<S>(
    stream: &mut S,
    output: &[u8],
    peer: &PeerAddr,
    shared: &Shared,
) -> Result<(), End>
where
    S: AsyncWrite + Unpin,
{
    let write = stream.write_all(output);
    let result = match shared.options.limits.idle_timeout {
        Some(limit) => match tokio::time::timeout(limit, write).await {
            Ok(result) => result,
            Err(_) => return Err(End::NotReading(limit)),
        },
        None => write.await,
    };
    result.map_err(|e| {
        End::Failed(Error::exchange(
            e,
            peer.to_string(),
            "while sending the reply",
        ))
    })
}

/// Waits for more bytes, bounded by the idle timeout, the message timeout (once a message
/// has started) and shutdown.
///
/// Raw framing reads at most `buffer_size` bytes, so each read is one message, as in the
/// note's `recv(1024)`.
async fn read_more<S>(
    stream: &mut S,
    input: &mut BytesMut,
    message_started: Option<Instant>,
    shared: &Shared,
) -> io::Result<Read>
where
    S: AsyncRead + Unpin,
{
    let options = &shared.options;
    let limits = &options.limits;
    let buffer_size = options.buffer_size.max(1);
    input.reserve(buffer_size);
    let idle_deadline = limits
        .idle_timeout
        .map(|d| (Instant::now() + d, Read::Idle(d)));
    let message_deadline = match (message_started, limits.message_timeout) {
        (Some(start), Some(d)) => Some((start + d, Read::SlowMessage(d))),
        _ => None,
    };
    // The earlier of the two deadlines decides what a timeout means.
    let deadline = match (idle_deadline, message_deadline) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    };
    let limit = match options.framing {
        Framing::Raw => buffer_size,
        Framing::Line { .. } => input.capacity() - input.len(),
    };
    let read = async {
        let mut window = (&mut *input).limit(limit);
        stream.read_buf(&mut window).await
    };
    tokio::select! {
        biased;
        n = read => Ok(match n? { 0 => Read::Eof, n => Read::Data(n) }),
        () = shared.shutdown.triggered() => Ok(Read::Shutdown),
        timed_out = wait_until(deadline) => Ok(timed_out),
    }
}

/// Sleeps until the deadline and returns what it means; never completes without one.
async fn wait_until(deadline: Option<(Instant, Read)>) -> Read {
    match deadline {
        Some((at, meaning)) => {
            tokio::time::sleep_until(at).await;
            meaning
        }
        None => std::future::pending().await,
    }
}
