//! `sockit send`: the note's client. Connect, send a message, print the reply, close.
//!
//! With `--count N` the same message goes N times over one connection (or N datagrams),
//! each reply awaited before the next message, within the timeout.
//!
//! Where a reply ends, so that each message is paired with its own reply and none is cut:
//!
//! * datagrams: one datagram is one reply;
//! * `--framing line`: one line;
//! * raw streams with `--reply-size N`: exactly N bytes;
//! * raw streams otherwise: everything that arrives until the server has been quiet for
//!   `--reply-quiet` ([`REPLY_QUIET`]) or closes. `--buffer` is only the size of each read.
//!
//! The `send:` and `receive:` lines show at most [`SHOWN_BYTES`] of a message and then
//! its length, `… (5000 bytes)`, so a bulk message prints one line.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::connect::stream_peer;
use crate::endpoint::{Delivery, Endpoint, PeerAddr};
use crate::error::{Error, Result};
use crate::framing::{Framer, Framing};
use crate::obs::events::SHOWN_BYTES;
use crate::obs::hexdump::{Direction, HexDump, Tap};
use crate::obs::{Event, EventLog};
use crate::transport::proxy_client::ProxyChain;
use crate::transport::tls::ClientTls;
use crate::transport::{
    ConnectOptions, DatagramSocket, MAX_DATAGRAM, Retry, SocketOptions, connect_stream,
    unix_sockaddr,
};

/// How long a raw reply may pause before it counts as complete: far longer than the
/// gaps between the packets of one reply, short enough not to slow a person down.
pub const REPLY_QUIET: Duration = Duration::from_millis(200);

/// Receive buffer for one datagram reply: larger than any UDP datagram (65,535 bytes)
/// and than a Unix datagram under the default socket limits, so none is cut.
const DATAGRAM_RECEIVE: usize = 256 * 1024;

/// Where a raw stream reply ends (line framing ends it at the newline; a datagram is one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyEnd {
    /// When the server has sent nothing for this long, or closes (`--reply-quiet`).
    Quiet(Duration),
    /// After exactly this many bytes (`--reply-size`).
    Size(usize),
}

/// What to send and how to wait for the answer.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// The message (the note's `hello tcp server` by default).
    pub message: Bytes,
    /// How many times to send it and wait for a reply.
    pub count: u64,
    /// Limit for connecting and for each reply.
    pub timeout: Duration,
    /// Raw: the reply ends as `reply_end` says. Line: the message is sent as a line and
    /// the reply is read up to its newline.
    pub framing: Framing,
    /// Where a raw reply ends.
    pub reply_end: ReplyEnd,
    /// Bytes asked for per read (the note's `recv(1024)`); a longer reply takes more reads.
    pub buffer_size: usize,
    /// How a `tls://` server is checked (`None`: the system's trusted roots).
    pub tls: Option<ClientTls>,
    /// `--hex`: dump both directions on stderr.
    pub hex: Option<HexDump>,
    /// `--source` and the other socket options.
    pub socket: SocketOptions,
    /// `--retry`: connecting again while the server is not up.
    pub retry: Retry,
    /// `--proxy`: the proxies to go through (empty: connect directly).
    pub proxies: ProxyChain,
}

impl SendOptions {
    /// The note's client for an endpoint: `hello tcp server` (or `udp`), once, 5 s timeout.
    pub fn seed(endpoint: &Endpoint) -> SendOptions {
        SendOptions {
            message: Bytes::from(format!("hello {} server", endpoint.seed_word())),
            count: 1,
            timeout: Duration::from_secs(5),
            framing: Framing::Raw,
            reply_end: ReplyEnd::Quiet(REPLY_QUIET),
            buffer_size: 1024,
            tls: None,
            hex: None,
            socket: SocketOptions::default(),
            retry: Retry::NEVER,
            proxies: ProxyChain::default(),
        }
    }
}

/// What a successful `send` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReport {
    /// Replies received (equals the count on success).
    pub replies: u64,
    /// Bytes received in all replies.
    pub received: u64,
}

/// Runs the exchange(s) and prints each `send`/`receive` event.
///
/// # Errors
/// Connection errors ([`Error::Refused`], [`Error::HostNotFound`], [`Error::Timeout`]…),
/// or [`Error::ClosedEarly`]/[`Error::Reset`] if the server goes away mid-exchange.
pub async fn send(
    endpoint: &Endpoint,
    options: &SendOptions,
    events: &EventLog,
) -> Result<SendReport> {
    match endpoint.delivery() {
        Delivery::Stream => send_stream(endpoint, options, events).await,
        Delivery::Datagram => send_datagrams(endpoint, options, events).await,
    }
}

/// The message as it goes on the wire: in line framing, ended with a newline.
fn wire_message(options: &SendOptions) -> Bytes {
    match options.framing {
        Framing::Line { .. } if !options.message.ends_with(b"\n") => {
            let mut line = options.message.to_vec();
            line.push(b'\n');
            Bytes::from(line)
        }
        _ => options.message.clone(),
    }
}

async fn send_stream(
    endpoint: &Endpoint,
    options: &SendOptions,
    events: &EventLog,
) -> Result<SendReport> {
    let connect = connect_options(options);
    let stream = connect_stream(endpoint, connect).await?;
    let peer_addr = stream_peer(&stream, endpoint, &options.proxies);
    let peer = peer_addr
        .as_ref()
        .map_or_else(|| endpoint.to_string(), |p| p.to_string());
    let stream = Tap::maybe(stream, options.hex.as_ref(), peer.clone());
    let mut replies = ReplyReader::new(stream, options, &peer);
    let wire = wire_message(options);
    let mut report = SendReport::default();
    for index in 1..=options.count {
        let during = exchange_phrase(index, options.count);
        replies
            .stream
            .write_all(&wire)
            .await
            .map_err(|e| Error::exchange(e, peer.clone(), format!("while sending {during}")))?;
        if let Some(p) = &peer_addr {
            events.emit(Event::Sent {
                peer: p,
                data: &options.message,
                len: options.message.len(),
                datagram: false,
            });
        }
        let reply = replies.next(&during).await?;
        if let Some(p) = &peer_addr {
            events.emit(Event::Received {
                peer: p,
                data: &reply.shown,
                len: reply.len,
                datagram: false,
            });
        }
        report.replies += 1;
        report.received += reply.len as u64;
    }
    if !replies.pending.is_empty() {
        tracing::warn!(
            "{peer} sent {} bytes more than the {} repl{} read; they were not shown",
            replies.pending.len(),
            options.count,
            if options.count == 1 { "y" } else { "ies" }
        );
    }
    // Half-close, as a polite client does; the server sees EOF and closes its side.
    let _ = replies.stream.shutdown().await;
    Ok(report)
}

/// "message 2 of 3", or "the message" when there is one.
fn exchange_phrase(index: u64, count: u64) -> String {
    if count == 1 {
        "the message".into()
    } else {
        format!("message {index} of {count}")
    }
}

/// One reply as the event line needs it: its first bytes and its length.
struct Reply {
    /// At most [`SHOWN_BYTES`] (line framing: the whole line, which `--max-line` bounds).
    shown: Bytes,
    /// The whole reply's length.
    len: usize,
}

/// Reads replies off a stream one after another. Bytes that arrive after the end of
/// one reply stay in `pending` for the next, so every message gets its own reply.
struct ReplyReader<'a, S> {
    stream: S,
    options: &'a SendOptions,
    peer: &'a str,
    /// Bytes read but not yet part of a reply (line framing reads past a newline).
    pending: Vec<u8>,
    /// Finds the line ends in `pending`.
    framer: Framer,
    /// Scratch space for one read.
    chunk: Vec<u8>,
}

impl<'a, S: AsyncRead + Unpin> ReplyReader<'a, S> {
    fn new(stream: S, options: &'a SendOptions, peer: &'a str) -> ReplyReader<'a, S> {
        ReplyReader {
            stream,
            options,
            peer,
            pending: Vec::new(),
            framer: Framer::new(options.framing),
            chunk: vec![0u8; options.buffer_size.max(1)],
        }
    }

    /// The next reply, within the timeout.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the reply does not come (or does not end) in time,
    /// [`Error::ClosedEarly`] when the server closes before it is complete.
    async fn next(&mut self, during: &str) -> Result<Reply> {
        let timeout = self.options.timeout;
        let peer = self.peer;
        let mut got = 0;
        let reading = async {
            match (self.options.framing, self.options.reply_end) {
                (Framing::Line { max_len }, _) => self.line(during, max_len).await,
                (Framing::Raw, ReplyEnd::Size(size)) => self.sized(during, size, &mut got).await,
                (Framing::Raw, ReplyEnd::Quiet(quiet)) => {
                    self.until_quiet(during, quiet, &mut got).await
                }
            }
        };
        match tokio::time::timeout(timeout, reading).await {
            Ok(reply) => reply,
            Err(_) => Err(Error::Timeout {
                doing: self.timeout_phrase(during, peer, got),
                after: timeout,
            }),
        }
    }

    /// What was awaited when the timeout struck: the reply, or its end.
    fn timeout_phrase(&self, during: &str, peer: &str, got: usize) -> String {
        match self.options.reply_end {
            _ if got == 0 => format!("waiting for the reply to {during} from {peer}"),
            ReplyEnd::Size(size) => format!(
                "waiting for the reply to {during} from {peer}: {got} of the {size} bytes of --reply-size came"
            ),
            ReplyEnd::Quiet(quiet) => format!(
                "waiting for the end of the reply to {during} from {peer}: {got} bytes came and it never paused for {} (--reply-quiet) nor closed",
                humantime::format_duration(quiet)
            ),
        }
    }

    /// One read into `chunk`, at most `limit` bytes; 0 means the server closed.
    async fn read_some(&mut self, during: &str, limit: usize) -> Result<usize> {
        let limit = limit.clamp(1, self.chunk.len());
        self.stream
            .read(&mut self.chunk[..limit])
            .await
            .map_err(|e| {
                Error::exchange(
                    e,
                    self.peer.to_string(),
                    format!("while waiting for the reply to {during}"),
                )
            })
    }

    fn closed(&self, during: &str, got: usize) -> Error {
        let during = if got == 0 {
            format!("before replying to {during}")
        } else {
            format!("after {got} bytes of the reply to {during}")
        };
        Error::ClosedEarly {
            peer: self.peer.to_string(),
            during,
        }
    }

    /// Raw framing, `--reply-size`: exactly `size` bytes, never a byte of the next reply.
    async fn sized(&mut self, during: &str, size: usize, got: &mut usize) -> Result<Reply> {
        let mut shown = Vec::new();
        while *got < size {
            let n = self.read_some(during, size - *got).await?;
            if n == 0 {
                return Err(self.closed(during, *got));
            }
            keep_shown(&mut shown, &self.chunk[..n]);
            *got += n;
        }
        Ok(Reply {
            shown: Bytes::from(shown),
            len: size,
        })
    }

    /// Raw framing: everything until the server is quiet for `quiet` or closes.
    async fn until_quiet(
        &mut self,
        during: &str,
        quiet: Duration,
        got: &mut usize,
    ) -> Result<Reply> {
        let mut shown = Vec::new();
        let limit = self.chunk.len();
        let first = self.read_some(during, limit).await?;
        if first == 0 {
            return Err(self.closed(during, 0));
        }
        keep_shown(&mut shown, &self.chunk[..first]);
        *got = first;
        loop {
            match tokio::time::timeout(quiet, self.read_some(during, limit)).await {
                // Quiet for the interval: the reply is complete.
                Err(_) => break,
                // The server closed after its reply: complete too.
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => {
                    keep_shown(&mut shown, &self.chunk[..n]);
                    *got += n;
                }
                Ok(Err(e)) => return Err(e),
            }
        }
        Ok(Reply {
            shown: Bytes::from(shown),
            len: *got,
        })
    }

    /// Line framing: one line, terminator removed; bytes after it wait for the next reply.
    async fn line(&mut self, during: &str, max_len: usize) -> Result<Reply> {
        loop {
            let span = self
                .framer
                .next_frame(&self.pending)
                .map_err(|_| Error::LineTooLong {
                    peer: self.peer.to_string(),
                    max: max_len,
                })?;
            if let Some(span) = span {
                let line = Bytes::copy_from_slice(&self.pending[span.payload.clone()]);
                self.pending.drain(..span.consumed());
                return Ok(Reply {
                    len: line.len(),
                    shown: line,
                });
            }
            let limit = self.chunk.len();
            let n = self.read_some(during, limit).await?;
            if n == 0 {
                let last = self.framer.finish(&self.pending);
                return match last {
                    Some(span) => {
                        let line = Bytes::copy_from_slice(&self.pending[span.payload.clone()]);
                        self.pending.clear();
                        Ok(Reply {
                            len: line.len(),
                            shown: line,
                        })
                    }
                    None => Err(self.closed(during, self.pending.len())),
                };
            }
            self.pending.extend_from_slice(&self.chunk[..n]);
        }
    }
}

/// Appends to `shown` what it still lacks of its first [`SHOWN_BYTES`] from `bytes`.
fn keep_shown(shown: &mut Vec<u8>, bytes: &[u8]) {
    let room = SHOWN_BYTES.saturating_sub(shown.len());
    shown.extend_from_slice(&bytes[..room.min(bytes.len())]);
}

/// The connect half of the options: timeout, TLS, socket options, retry.
fn connect_options(options: &SendOptions) -> ConnectOptions {
    ConnectOptions {
        timeout: options.timeout,
        tls: options.tls.clone(),
        socket: options.socket.clone(),
        retry: options.retry,
        proxies: options.proxies.clone(),
    }
}

async fn send_datagrams(
    endpoint: &Endpoint,
    options: &SendOptions,
    events: &EventLog,
) -> Result<SendReport> {
    if options.message.len() > MAX_DATAGRAM {
        return Err(Error::DatagramTooLarge {
            size: options.message.len(),
            max: MAX_DATAGRAM,
        });
    }
    let socket = DatagramSocket::connect_with_options(endpoint, &connect_options(options)).await?;
    let peer = datagram_peer(&socket, endpoint);
    let peer_text = peer
        .as_ref()
        .map_or_else(|| endpoint.to_string(), |p| p.to_string());
    let mut buf = vec![0u8; DATAGRAM_RECEIVE];
    let mut report = SendReport::default();
    for index in 1..=options.count {
        let during = exchange_phrase(index, options.count);
        if let Some(hex) = &options.hex {
            hex.datagram(Direction::Sent, &peer_text, &options.message);
        }
        socket
            .send(&options.message)
            .await
            .map_err(|e| datagram_error(e, endpoint, options.message.len(), &peer_text, &during))?;
        if let Some(p) = &peer {
            events.emit(Event::Sent {
                peer: p,
                data: &options.message,
                len: options.message.len(),
                datagram: true,
            });
        }
        let received = tokio::time::timeout(options.timeout, socket.recv(&mut buf))
            .await
            .map_err(|_| Error::Timeout {
                doing: format!(
                    "waiting for the reply to {during} from {peer_text} (UDP gives no error when nothing listens or a datagram is lost)"
                ),
                after: options.timeout,
            })?
            .map_err(|e| datagram_error(e, endpoint, options.message.len(), &peer_text, &during))?;
        let reply = Bytes::copy_from_slice(&buf[..received]);
        if let Some(hex) = &options.hex {
            hex.datagram(Direction::Received, &peer_text, &reply);
        }
        if let Some(p) = &peer {
            events.emit(Event::Received {
                peer: p,
                data: &reply,
                len: reply.len(),
                datagram: true,
            });
        }
        report.replies += 1;
        report.received += reply.len() as u64;
    }
    Ok(report)
}

/// The server's address as the note prints it (`127.0.0.1:8000`, or the socket path).
fn datagram_peer(socket: &DatagramSocket, endpoint: &Endpoint) -> Option<PeerAddr> {
    match socket {
        DatagramSocket::Udp(s) => s.peer_addr().ok().map(PeerAddr::Ip),
        DatagramSocket::Socks(s) => Some(PeerAddr::Ip(s.peer())),
        DatagramSocket::Unix(..) => match endpoint {
            Endpoint::UnixDgram(addr) => unix_sockaddr(addr)
                .ok()
                .map(|a| PeerAddr::Unix(Box::new(a))),
            _ => None,
        },
    }
}

/// Names the datagram errors users meet: nothing listening, datagram too large.
fn datagram_error(
    e: std::io::Error,
    endpoint: &Endpoint,
    size: usize,
    peer: &str,
    during: &str,
) -> Error {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Error::Refused {
            endpoint: endpoint.clone(),
        },
        Some(libc::EMSGSIZE) => Error::DatagramTooLarge {
            size,
            max: MAX_DATAGRAM,
        },
        _ => Error::exchange(e, peer.to_string(), format!("during {during}")),
    }
}
