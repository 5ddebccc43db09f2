//! `--hex`: traffic in both directions as offset / hex / ASCII lines, on stderr.
//!
//! ```text
//! < received 16 bytes from 127.0.0.1:50738 (conn 1)
//! < 00000000  68 65 6c 6c 6f 20 74 63  70 20 73 65 72 76 65 72  |hello tcp server|
//! > sent 16 bytes to 127.0.0.1:50738 (conn 1)
//! > 00000000  68 65 6c 6c 6f 20 74 63  70 20 63 6c 69 65 6e 74  |hello tcp client|
//! ```
//!
//! `<` marks bytes sockit received from the peer, `>` bytes it sent, always from sockit's
//! own point of view. Offsets count from the start of the connection in each direction,
//! so a dump lines up with positions in the stream however the bytes were split into
//! reads; for datagrams each datagram starts at 0.
//!
//! The dump always goes to stderr: for `connect` and `relay` stdout carries the data
//! itself, and for `serve`/`send` stdout carries events that `--log json` keeps
//! machine-readable. One rule for every command; `2>dump.txt` keeps it.
//!
//! Streams are dumped by wrapping them in a [`Tap`] (one line of wiring per command);
//! datagrams by calling [`HexDump::datagram`]. Each chunk is formatted whole and written
//! under one lock, so dumps of concurrent connections never interleave mid-chunk.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Which way bytes went, from sockit's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// sockit wrote them to the peer (`>`).
    Sent,
    /// sockit read them from the peer (`<`).
    Received,
}

impl Direction {
    /// The marker at the start of every line of a chunk.
    fn marker(self) -> char {
        match self {
            Direction::Sent => '>',
            Direction::Received => '<',
        }
    }

    /// "sent N bytes to" / "received N bytes from".
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Direction::Sent => ("sent", "to"),
            Direction::Received => ("received", "from"),
        }
    }
}

/// Where hex dumps are written. Cheap to clone; clones share the writer and its lock.
#[derive(Clone)]
pub struct HexDump {
    /// Usually stderr; a buffer in tests.
    sink: Arc<Mutex<Box<dyn Write + Send>>>,
}

impl std::fmt::Debug for HexDump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HexDump")
    }
}

impl HexDump {
    /// Dumps to this process's stderr.
    pub fn stderr() -> HexDump {
        HexDump::to_writer(Box::new(io::stderr()))
    }

    /// Dumps to any writer (tests use a shared buffer).
    pub fn to_writer(writer: Box<dyn Write + Send>) -> HexDump {
        HexDump {
            sink: Arc::new(Mutex::new(writer)),
        }
    }

    /// Wraps a stream so everything read from it and written to it is dumped, labelled
    /// with `peer` (e.g. `127.0.0.1:50738 (conn 1)`).
    pub fn tap<S>(&self, stream: S, peer: impl Into<String>) -> Tap<S> {
        Tap {
            inner: stream,
            state: Some(TapState {
                dump: self.clone(),
                peer: peer.into(),
                sent: 0,
                received: 0,
            }),
        }
    }

    /// Dumps one datagram (its offsets start at 0).
    pub fn datagram(&self, direction: Direction, peer: &str, data: &[u8]) {
        self.chunk(direction, peer, 0, data);
    }

    /// Formats one chunk and writes it in one go.
    fn chunk(&self, direction: Direction, peer: &str, offset: u64, data: &[u8]) {
        let text = format_chunk(direction, peer, offset, data);
        // A poisoned lock only means another dump panicked mid-write; keep dumping.
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        // Nowhere to report a failing stderr; the data path must not suffer for it.
        let _ = sink.write_all(text.as_bytes());
        let _ = sink.flush();
    }
}

/// Formats one chunk: a header line, then 16 bytes per line as offset, hex, ASCII.
pub fn format_chunk(direction: Direction, peer: &str, offset: u64, data: &[u8]) -> String {
    let marker = direction.marker();
    let (verb, preposition) = direction.words();
    let mut out = String::with_capacity(32 + data.len().div_ceil(16) * 80);
    let _ = writeln!(
        out,
        "{marker} {verb} {} byte{} {preposition} {peer}",
        data.len(),
        if data.len() == 1 { "" } else { "s" }
    );
    for (i, line) in data.chunks(16).enumerate() {
        let _ = write!(out, "{marker} {:08x} ", offset + (i as u64) * 16);
        for column in 0..16 {
            if column == 8 {
                out.push(' ');
            }
            match line.get(column) {
                Some(byte) => {
                    let _ = write!(out, " {byte:02x}");
                }
                None => out.push_str("   "),
            }
        }
        out.push_str("  |");
        out.extend(line.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        }));
        out.push_str("|\n");
    }
    out
}

/// A stream wrapper that dumps what passes through it, or passes through untouched.
///
/// Reads are dumped as `<` (received), writes as `>` (sent), each with its running offset.
#[derive(Debug)]
pub struct Tap<S> {
    /// The wrapped stream.
    inner: S,
    /// `None`: no `--hex`, a plain pass-through.
    state: Option<TapState>,
}

/// What a dumping tap keeps: where to write, the label, and the offsets so far.
#[derive(Debug)]
struct TapState {
    dump: HexDump,
    peer: String,
    sent: u64,
    received: u64,
}

impl<S> Tap<S> {
    /// A tap that dumps nothing: the stream as it is.
    pub fn plain(stream: S) -> Tap<S> {
        Tap {
            inner: stream,
            state: None,
        }
    }

    /// Dumps with `dump` when given, else passes through.
    pub fn maybe(stream: S, dump: Option<&HexDump>, peer: impl Into<String>) -> Tap<S> {
        match dump {
            Some(dump) => dump.tap(stream, peer),
            None => Tap::plain(stream),
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped stream, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tap<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let (Poll::Ready(Ok(())), Some(state)) = (&polled, this.state.as_mut()) {
            let new = &buf.filled()[before..];
            if !new.is_empty() {
                state
                    .dump
                    .chunk(Direction::Received, &state.peer, state.received, new);
                state.received += new.len() as u64;
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tap<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let (Poll::Ready(Ok(n)), Some(state)) = (&polled, this.state.as_mut())
            && *n > 0
        {
            state
                .dump
                .chunk(Direction::Sent, &state.peer, state.sent, &buf[..*n]);
            state.sent += *n as u64;
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if self.state.is_some() {
            // Dumping needs to know which bytes went; write the first non-empty slice.
            let first = bufs
                .iter()
                .find(|b| !b.is_empty())
                .map_or(&[][..], |b| &**b);
            return self.poll_write(cx, first);
        }
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.state.is_none() && self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap_or_else(|e| e.into_inner())).into()
        }
    }

    #[test]
    fn a_chunk_is_offset_hex_and_ascii() {
        let text = format_chunk(Direction::Received, "peer", 0, b"hello tcp server!\x00\xff");
        assert_eq!(
            text,
            "< received 19 bytes from peer\n\
             < 00000000  68 65 6c 6c 6f 20 74 63  70 20 73 65 72 76 65 72  |hello tcp server|\n\
             < 00000010  21 00 ff                                          |!..|\n"
        );
    }

    #[test]
    fn offsets_continue_and_one_byte_is_singular() {
        let text = format_chunk(Direction::Sent, "p", 0x20, b"x");
        assert_eq!(
            text,
            "> sent 1 byte to p\n\
             > 00000020  78                                                |x|\n"
        );
    }

    #[test]
    fn empty_datagram_has_only_a_header() {
        assert_eq!(
            format_chunk(Direction::Sent, "p", 0, b""),
            "> sent 0 bytes to p\n"
        );
    }

    #[tokio::test]
    async fn tap_dumps_both_directions_with_running_offsets() -> io::Result<()> {
        let captured = Captured::default();
        let dump = HexDump::to_writer(Box::new(captured.clone()));
        let (near, mut far) = tokio::io::duplex(64);
        let mut tapped = dump.tap(near, "far (conn 1)");
        tapped.write_all(b"ping").await?;
        tapped.write_all(b"!").await?;
        far.write_all(b"pong").await?;
        let mut buf = [0u8; 4];
        tapped.read_exact(&mut buf).await?;
        let mut echoed = [0u8; 5];
        far.read_exact(&mut echoed).await?;
        assert_eq!(
            &echoed, b"ping!",
            "the tap must pass bytes through unchanged"
        );
        let text = captured.text();
        assert!(
            text.contains("> sent 4 bytes to far (conn 1)\n> 00000000  70 69 6e 67"),
            "{text}"
        );
        assert!(text.contains("> 00000004  21"), "{text}");
        assert!(
            text.contains("< received 4 bytes from far (conn 1)\n< 00000000  70 6f 6e 67"),
            "{text}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn plain_tap_writes_nothing() -> io::Result<()> {
        let (near, mut far) = tokio::io::duplex(64);
        let mut tapped = Tap::maybe(near, None, "x");
        tapped.write_all(b"abc").await?;
        let mut buf = [0u8; 3];
        far.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"abc");
        assert!(tapped.is_write_vectored() == tapped.get_ref().is_write_vectored());
        Ok(())
    }
}
