//! The network side of a benchmark: one [`Driver`] per traffic pattern, over whatever
//! transport the endpoint names (TCP, Unix stream and, through
//! [`connect_stream`], TLS with the run's one client configuration; UDP and Unix datagram through
//! [`DatagramSocket`]).
//!
//! * [`HelloDriver`]: the note's exchange, one connection per request: connect, send,
//!   read the reply, close. The connect is inside the timed exchange.
//! * [`EchoDriver`]: one persistent connection; send a message, wait for the whole reply.
//! * [`StreamDriver`]: one persistent connection; each exchange is one write.
//! * [`DatagramDriver`]: one connected datagram socket; send a request, wait for a reply.
//!   After a timeout (a lost datagram) the socket is replaced, so a late reply can never
//!   be taken for the answer to the next request.
//!
//! Every driver sends the run's [`Messages`] in turn (`--message`, `--message-file`), the
//! first one once per connection (`--first-message`), and reads each reply as the
//! [`ReplyMatcher`] says: the first read, a byte count, up to a delimiter, or up to a regex
//! match; a complete reply that fails `--reply-regex` is an [`Error::ReplyMismatch`].
//!
//! Each driver allocates its buffers once and shares the request bytes with every other
//! connection; the hot path allocates nothing (errors build their message when they
//! happen, which is off the hot path).

use std::cell::RefCell;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::measure::Driver;
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::transport::{ConnectOptions, DatagramSocket, MAX_DATAGRAM, Stream, connect_stream};

/// Most bytes one "first read" reply takes (the note reads 1024); a buffer of this size
/// per connection keeps 10,000 connections within 40 MB.
pub(super) const FIRST_READ_SIZE: usize = 4096;

thread_local! {
    /// One receive buffer per thread for every datagram socket on it, large enough for
    /// any datagram. A datagram is read in one synchronous call, so the borrow never
    /// spans an await and the sockets of a thread can share it.
    static DATAGRAM_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; MAX_DATAGRAM + 1]);
}

/// Longest reply a delimiter or a regex waits for: past this, the reply counts as a
/// mismatch rather than filling memory.
pub const MAX_REPLY: usize = 1024 * 1024;

/// What a reply answers, for a reply as long as what was sent
/// ([`ReplyEnd::SameAsRequest`]): its length frames the reply, and the reply to a request
/// must repeat it, or the server is no echo server and the framing would drift.
#[derive(Debug, Clone, Copy)]
enum Answering<'a> {
    /// A request of the run: an echo of it is expected.
    Request(&'a [u8]),
    /// The first message (a login): only its length counts.
    FirstMessage(usize),
}

impl Answering<'_> {
    /// The length of what was sent.
    fn len(self) -> usize {
        match self {
            Answering::Request(request) => request.len(),
            Answering::FirstMessage(len) => len,
        }
    }

    /// A mismatch unless `reply` repeats the request.
    fn check_echo(self, reply: &[u8]) -> std::result::Result<(), ReplyFailure> {
        match self {
            Answering::Request(request) if reply != request => {
                Err(ReplyFailure::Mismatch(not_an_echo(reply, request)))
            }
            _ => Ok(()),
        }
    }
}

/// Why `reply` is refused as the echo of `request`, in words.
fn not_an_echo(reply: &[u8], request: &[u8]) -> String {
    format!(
        "{:?} is not an echo of the request {:?}; for a server that answers otherwise, end \
         the replies with --reply-until, --reply-size or --reply-regex",
        String::from_utf8_lossy(&reply[..reply.len().min(80)]),
        String::from_utf8_lossy(&request[..request.len().min(80)]),
    )
}

/// Where a reply ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyEnd {
    /// The first read that returns data (the note's `recv(1024)`); any datagram.
    FirstRead,
    /// Exactly this many bytes (at least this many for a datagram).
    Bytes(usize),
    /// As many bytes as the request that was sent (an echo).
    SameAsRequest,
    /// Up to and including this delimiter (`--reply-until`).
    Until(Bytes),
    /// As soon as the bytes received match the regex (`--reply-regex` alone).
    Match,
}

/// When a reply is complete, and whether it is the right one.
#[derive(Debug, Clone)]
pub struct ReplyMatcher {
    /// Where the reply ends.
    pub end: ReplyEnd,
    /// The complete reply must match this (`--reply-regex`); otherwise the exchange
    /// counts as a mismatch. With [`ReplyEnd::Match`] it also ends the reply.
    pub regex: Option<regex::bytes::Regex>,
}

impl ReplyMatcher {
    /// A matcher that only frames, with no check.
    pub fn ending(end: ReplyEnd) -> ReplyMatcher {
        ReplyMatcher { end, regex: None }
    }

    /// The framing used for the reply to `--first-message`: the same end, never the
    /// regex (a login's answer is not the exchange's), the first read when the regex was
    /// the end.
    fn for_first_message(&self) -> ReplyMatcher {
        let end = match &self.end {
            ReplyEnd::Match => ReplyEnd::FirstRead,
            other => other.clone(),
        };
        ReplyMatcher::ending(end)
    }
}

impl PartialEq for ReplyMatcher {
    fn eq(&self, other: &Self) -> bool {
        self.end == other.end
            && self.regex.as_ref().map(regex::bytes::Regex::as_str)
                == other.regex.as_ref().map(regex::bytes::Regex::as_str)
    }
}

/// The requests of a run, sent in turn by every connection, and what each connection
/// sends once first.
#[derive(Debug, Clone)]
pub struct Messages {
    /// Sent in turn, one per exchange; never empty.
    pub each: Arc<[Bytes]>,
    /// Sent once per connection before the first exchange (a handshake or a login).
    pub first: Option<Bytes>,
}

impl Messages {
    /// One message, nothing first.
    pub fn one(request: Bytes) -> Messages {
        Messages {
            each: Arc::from(vec![request]),
            first: None,
        }
    }

    /// The longest message.
    pub fn longest(&self) -> usize {
        self.each.iter().map(Bytes::len).max().unwrap_or(0)
    }
}

/// One connection's turn through the messages.
#[derive(Debug)]
struct Turn {
    /// The next message's place in [`Messages::each`].
    next: usize,
}

impl Turn {
    /// The message to send now; moves to the next one.
    #[inline]
    fn take<'a>(&mut self, messages: &'a Messages) -> &'a Bytes {
        let count = messages.each.len().max(1);
        let index = self.next % count;
        self.next = (index + 1) % count;
        &messages.each[index]
    }
}

/// What every driver of a run shares: where to go and what to send.
#[derive(Debug, Clone)]
pub struct Target {
    /// Where to connect.
    pub endpoint: Arc<Endpoint>,
    /// The requests (or, streaming, the chunks written in turn), shared by every
    /// connection.
    pub messages: Messages,
    /// When a reply is complete and right.
    pub reply: ReplyMatcher,
    /// Limit for connecting, and the TLS client shared by every connection.
    pub connect: ConnectOptions,
}

impl Target {
    /// An I/O error while talking to the target, named for what it means to a benchmark.
    pub(super) fn io_error(&self, source: io::Error, during: &str) -> Error {
        if source.kind() == io::ErrorKind::ConnectionRefused {
            return Error::Refused {
                endpoint: (*self.endpoint).clone(),
            };
        }
        Error::exchange(source, self.endpoint.to_string(), during)
    }

    /// A failed reply as an error: the I/O failure, or a mismatch.
    fn reply_error(&self, failure: ReplyFailure, during: &str) -> Error {
        match failure {
            ReplyFailure::Io(source) => self.io_error(source, during),
            ReplyFailure::Mismatch(reason) => Error::ReplyMismatch {
                peer: self.endpoint.to_string(),
                reason,
            },
        }
    }

    /// Sends `--first-message` on a fresh connection and reads its reply (untimed by
    /// the watchdog, so bounded here by the connect timeout).
    async fn send_first_message(&self, stream: &mut Stream, reply: &mut Reply) -> Result<()> {
        let Some(first) = &self.messages.first else {
            return Ok(());
        };
        let matcher = self.reply.for_first_message();
        let exchange = async {
            stream
                .write_all(first)
                .await
                .map_err(|e| self.io_error(e, "while sending the first message"))?;
            reply
                .read(stream, &matcher, Answering::FirstMessage(first.len()))
                .await
                .map_err(|f| self.reply_error(f, "before replying to the first message"))
        };
        match tokio::time::timeout(self.connect.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout {
                doing: "waiting for the reply to the first message".into(),
                after: self.connect.timeout,
            }),
        }
    }
}

impl Target {
    /// The error for a reply that does not repeat its request, the reply being framed as
    /// long as the request (`reply`: what of it came so far): as the task engine's
    /// drivers judge it, for the lane, which checks each read as it comes.
    pub(super) fn not_an_echo(&self, reply: &[u8], request: &[u8]) -> Error {
        self.reply_error(ReplyFailure::Mismatch(not_an_echo(reply, request)), "")
    }

    /// The outcome of a datagram exchange whose request had `sent` bytes and whose reply
    /// is `reply`: the payload bytes sent, or why the reply is refused.
    pub(super) fn datagram_verdict(&self, reply: &[u8], sent: usize) -> Result<u64> {
        match check_datagram(reply, &self.reply, sent) {
            Ok(()) => Ok(sent as u64),
            Err(ReplyFailure::Io(short)) => Err(Error::ClosedEarly {
                peer: self.endpoint.to_string(),
                during: format!("with {short}"),
            }),
            Err(mismatch) => Err(self.reply_error(mismatch, "")),
        }
    }
}

/// Why a reply was not accepted.
#[derive(Debug)]
enum ReplyFailure {
    /// Reading failed or the peer closed first.
    Io(io::Error),
    /// The reply arrived but is not the one expected.
    Mismatch(String),
}

impl From<io::Error> for ReplyFailure {
    fn from(error: io::Error) -> Self {
        ReplyFailure::Io(error)
    }
}

/// One connection's reply buffer: reused for every reply; bytes received after the end
/// of a reply (a byte count, a delimiter or a match) are kept for the next one.
#[derive(Debug)]
struct Reply {
    /// Exact and first-read replies: a fixed buffer. Delimited and matched replies: the
    /// bytes received so far.
    buffer: Vec<u8>,
    /// Exact replies: bytes read past the end of the last reply, at the front of
    /// `buffer`: the start of the next one.
    carried: usize,
}

impl Reply {
    /// A buffer for replies to messages of up to `longest` bytes.
    fn new(matcher: &ReplyMatcher, longest: usize) -> Reply {
        let size = match matcher.end {
            ReplyEnd::FirstRead => FIRST_READ_SIZE,
            // Room past the reply, so that a read that leaves the socket empty shows it.
            ReplyEnd::Bytes(n) => n.max(FIRST_READ_SIZE),
            ReplyEnd::SameAsRequest => longest.max(FIRST_READ_SIZE),
            ReplyEnd::Until(_) | ReplyEnd::Match => 0,
        };
        Reply {
            buffer: vec![0; size],
            carried: 0,
        }
    }

    /// Reads one reply to `answering` as `matcher` says, then checks it.
    async fn read(
        &mut self,
        reader: &mut Stream,
        matcher: &ReplyMatcher,
        answering: Answering<'_>,
    ) -> std::result::Result<(), ReplyFailure> {
        let end = match &matcher.end {
            ReplyEnd::FirstRead => {
                let n = reader.read(&mut self.buffer).await?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                }
                n
            }
            ReplyEnd::Bytes(n) => self.read_exact(reader, *n).await?,
            ReplyEnd::SameAsRequest => self.read_exact(reader, answering.len()).await?,
            ReplyEnd::Until(delimiter) => {
                let found = |data: &[u8], from: usize| {
                    let from = from.saturating_sub(delimiter.len().saturating_sub(1));
                    memchr::memmem::find(&data[from..], delimiter)
                        .map(|at| from + at + delimiter.len())
                };
                self.read_until(reader, found).await?
            }
            ReplyEnd::Match => {
                let Some(regex) = &matcher.regex else {
                    return Err(ReplyFailure::Mismatch("no regex to match".into()));
                };
                // A reply holds at least one byte, whatever the regex can match.
                let end =
                    |data: &[u8], _| regex.find_iter(data).map(|m| m.end()).find(|&end| end > 0);
                self.read_until(reader, end).await?
            }
        };
        let verdict = match &matcher.regex {
            _ if matcher.end == ReplyEnd::SameAsRequest => {
                answering.check_echo(&self.buffer[..end])
            }
            Some(regex) if !regex.is_match(&self.buffer[..end]) => {
                Err(ReplyFailure::Mismatch(format!(
                    "{:?} does not match --reply-regex {:?}",
                    String::from_utf8_lossy(&self.buffer[..end.min(80)]),
                    regex.as_str()
                )))
            }
            _ => Ok(()),
        };
        match matcher.end {
            ReplyEnd::Until(_) | ReplyEnd::Match => drop(self.buffer.drain(..end)),
            ReplyEnd::Bytes(_) | ReplyEnd::SameAsRequest => {
                self.buffer.copy_within(end..end + self.carried, 0);
            }
            ReplyEnd::FirstRead => {}
        }
        verdict
    }

    /// Reads exactly `n` bytes into the front of the buffer (after any carried from the
    /// last reply); returns `n`. Each read takes as much as the socket holds; bytes past
    /// `n` are carried to the next reply. A read that leaves the socket empty is noted
    /// ([`Stream::note_drained`]), so the next reply is awaited without a read that
    /// would find nothing.
    async fn read_exact(&mut self, reader: &mut Stream, n: usize) -> io::Result<usize> {
        if self.buffer.len() < n {
            self.buffer.resize(n, 0);
        }
        let mut filled = std::mem::take(&mut self.carried);
        let mut drained = false;
        while filled < n {
            let room = self.buffer.len() - filled;
            let got = reader.read(&mut self.buffer[filled..]).await?;
            if got == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            filled += got;
            drained = got < room;
        }
        if drained {
            reader.note_drained();
        }
        self.carried = filled - n;
        Ok(n)
    }

    /// Reads until `end(received, searched_up_to)` finds where the reply ends; returns
    /// that length. Bytes past it stay in the buffer for the next reply.
    async fn read_until<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        end: impl Fn(&[u8], usize) -> Option<usize>,
    ) -> std::result::Result<usize, ReplyFailure> {
        let mut searched = 0;
        loop {
            if let Some(at) = end(&self.buffer, searched) {
                return Ok(at);
            }
            if self.buffer.len() >= MAX_REPLY {
                let kept = self.buffer.len();
                self.buffer.clear();
                return Err(ReplyFailure::Mismatch(format!(
                    "{kept} bytes arrived without the end of the reply (--reply-until or \
                     --reply-regex)"
                )));
            }
            searched = self.buffer.len();
            self.buffer.reserve(FIRST_READ_SIZE);
            if reader.read_buf(&mut self.buffer).await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
            }
        }
    }

    /// Forgets bytes kept from a connection that is being dropped.
    fn forget(&mut self, matcher: &ReplyMatcher) {
        self.carried = 0;
        if matches!(matcher.end, ReplyEnd::Until(_) | ReplyEnd::Match) {
            self.buffer.clear();
        }
    }
}

/// The note's exchange: a new connection per request.
#[derive(Debug)]
pub struct HelloDriver {
    /// Where and what.
    target: Target,
    /// Which message goes next.
    turn: Turn,
    /// Reused for every reply.
    reply: Reply,
}

impl HelloDriver {
    /// A driver for one connection slot.
    pub fn new(target: Target) -> HelloDriver {
        let reply = Reply::new(&target.reply, target.messages.longest());
        HelloDriver {
            target,
            turn: Turn { next: 0 },
            reply,
        }
    }
}

impl Driver for HelloDriver {
    async fn prepare(&mut self) -> Result<()> {
        Ok(())
    }

    async fn exchange(&mut self) -> Result<u64> {
        let target = &self.target;
        let mut stream = connect_stream(&target.endpoint, target.connect.clone()).await?;
        target
            .send_first_message(&mut stream, &mut self.reply)
            .await?;
        let request = self.turn.take(&target.messages);
        stream
            .write_all(request)
            .await
            .map_err(|e| target.io_error(e, "while sending the request"))?;
        self.reply
            .read(&mut stream, &target.reply, Answering::Request(request))
            .await
            .map_err(|f| target.reply_error(f, "before the whole reply arrived"))?;
        self.reply.forget(&target.reply);
        close_tls(&mut stream).await;
        Ok(request.len() as u64)
    }

    fn abandon(&mut self) {
        self.reply.forget(&self.target.reply);
    }
}

/// Ends a TLS connection with a close_notify alert: an OpenSSL server (HAProxy, nginx,
/// stunnel, `s_server`) forgets the session of a connection that ends without one, and
/// the next connection could not resume it. A failure here costs the exchange nothing.
async fn close_tls(stream: &mut Stream) {
    if matches!(stream, Stream::Tls(_)) {
        let _ = stream.shutdown().await;
    }
}

/// Request and reply over one persistent connection.
#[derive(Debug)]
pub struct EchoDriver {
    /// Where and what.
    target: Target,
    /// The connection, opened by `prepare` and dropped after a failure.
    stream: Option<Stream>,
    /// Which message goes next.
    turn: Turn,
    /// Reused for every reply.
    reply: Reply,
}

impl EchoDriver {
    /// A driver for one connection.
    pub fn new(target: Target) -> EchoDriver {
        let reply = Reply::new(&target.reply, target.messages.longest());
        EchoDriver {
            target,
            stream: None,
            turn: Turn { next: 0 },
            reply,
        }
    }
}

impl Driver for EchoDriver {
    async fn prepare(&mut self) -> Result<()> {
        if self.stream.is_none() {
            let target = &self.target;
            let mut stream = connect_stream(&target.endpoint, target.connect.clone()).await?;
            target
                .send_first_message(&mut stream, &mut self.reply)
                .await?;
            self.stream = Some(stream);
        }
        Ok(())
    }

    async fn exchange(&mut self) -> Result<u64> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(not_connected());
        };
        let target = &self.target;
        let request = self.turn.take(&target.messages);
        stream
            .write_all(request)
            .await
            .map_err(|e| target.io_error(e, "while sending a message"))?;
        self.reply
            .read(stream, &target.reply, Answering::Request(request))
            .await
            .map_err(|f| target.reply_error(f, "before the whole reply arrived"))?;
        Ok(request.len() as u64)
    }

    fn abandon(&mut self) {
        self.stream = None;
        self.reply.forget(&self.target.reply);
    }
}

/// Writes as fast as the connection takes them, to a server that discards.
#[derive(Debug)]
pub struct StreamDriver {
    /// Where, and the chunks to write.
    target: Target,
    /// The connection, opened by `prepare` and dropped after a failure.
    stream: Option<Stream>,
    /// Which chunk goes next.
    turn: Turn,
}

impl StreamDriver {
    /// A driver for one connection.
    pub fn new(target: Target) -> StreamDriver {
        StreamDriver {
            target,
            stream: None,
            turn: Turn { next: 0 },
        }
    }
}

impl Driver for StreamDriver {
    async fn prepare(&mut self) -> Result<()> {
        if self.stream.is_none() {
            let target = &self.target;
            let mut stream = connect_stream(&target.endpoint, target.connect.clone()).await?;
            if let Some(first) = &target.messages.first {
                stream
                    .write_all(first)
                    .await
                    .map_err(|e| target.io_error(e, "while sending the first message"))?;
            }
            self.stream = Some(stream);
        }
        Ok(())
    }

    async fn exchange(&mut self) -> Result<u64> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(not_connected());
        };
        let chunk = self.turn.take(&self.target.messages);
        match stream.write(chunk).await {
            Ok(0) => Err(self.target.io_error(
                io::ErrorKind::WriteZero.into(),
                "while streaming (it accepts no more data)",
            )),
            Ok(n) => Ok(n as u64),
            Err(e) => Err(self.target.io_error(e, "while streaming")),
        }
    }

    fn abandon(&mut self) {
        self.stream = None;
    }
}

/// Request and reply datagrams over one connected socket.
#[derive(Debug)]
pub struct DatagramDriver {
    /// Where and what.
    target: Target,
    /// The socket, replaced after a failure or a lost datagram.
    socket: Option<DatagramSocket>,
    /// Which message goes next.
    turn: Turn,
}

impl DatagramDriver {
    /// A driver for one socket.
    pub fn new(target: Target) -> DatagramDriver {
        DatagramDriver {
            target,
            socket: None,
            turn: Turn { next: 0 },
        }
    }
}

/// Waits for one datagram on a connected socket and checks it with `check`, reading it
/// into the thread's shared buffer. A refusal (ICMP port unreachable) is the error it
/// returns, as soon as it comes.
async fn receive_datagram<T>(socket: &DatagramSocket, check: impl Fn(&[u8]) -> T) -> io::Result<T> {
    loop {
        socket.readable_or_failed().await?;
        let received = DATAGRAM_BUFFER.with(|buffer| {
            // The borrow lasts for this one non-blocking call only (see DATAGRAM_BUFFER).
            let mut buffer = buffer.borrow_mut();
            socket
                .try_recv_from(&mut buffer)
                .map(|(n, _)| check(&buffer[..n]))
        });
        match received {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

/// Whether a datagram of `sent` bytes got the right reply.
fn check_datagram(
    reply: &[u8],
    matcher: &ReplyMatcher,
    sent: usize,
) -> std::result::Result<(), ReplyFailure> {
    let expected = match &matcher.end {
        ReplyEnd::Bytes(n) => *n,
        ReplyEnd::SameAsRequest => sent,
        ReplyEnd::FirstRead | ReplyEnd::Until(_) | ReplyEnd::Match => 0,
    };
    if reply.len() < expected {
        return Err(ReplyFailure::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!(
                "a {}-byte reply where {expected} were expected",
                reply.len()
            ),
        )));
    }
    if let ReplyEnd::Until(delimiter) = &matcher.end
        && !reply.ends_with(delimiter)
    {
        return Err(ReplyFailure::Mismatch(
            "the reply datagram does not end with --reply-until".into(),
        ));
    }
    match &matcher.regex {
        Some(regex) if !regex.is_match(reply) => Err(ReplyFailure::Mismatch(format!(
            "{:?} does not match --reply-regex {:?}",
            String::from_utf8_lossy(&reply[..reply.len().min(80)]),
            regex.as_str()
        ))),
        _ => Ok(()),
    }
}

impl Driver for DatagramDriver {
    async fn prepare(&mut self) -> Result<()> {
        if self.socket.is_none() {
            self.socket = Some(
                DatagramSocket::connect_with_options(&self.target.endpoint, &self.target.connect)
                    .await?,
            );
        }
        Ok(())
    }

    async fn exchange(&mut self) -> Result<u64> {
        let Some(socket) = self.socket.as_ref() else {
            return Err(not_connected());
        };
        let target = &self.target;
        let request = self.turn.take(&target.messages);
        socket
            .send(request)
            .await
            .map_err(|e| target.io_error(e, "while sending a datagram"))?;
        let sent = request.len();
        receive_datagram(socket, |reply| target.datagram_verdict(reply, sent))
            .await
            .map_err(|e| target.io_error(e, "while waiting for the reply"))?
    }

    fn abandon(&mut self) {
        self.socket = None;
    }
}

/// `exchange` without a successful `prepare`: a bug in the caller, reported as an error.
fn not_connected() -> Error {
    Error::Io {
        doing: "benchmark exchange".into(),
        source: io::Error::new(io::ErrorKind::NotConnected, "no connection was prepared"),
    }
}
