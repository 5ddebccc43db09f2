//! `--hex`: traffic in both directions as offset / hex / ASCII lines, on stderr, each
//! chunk headed by its direction and the time it passed (UTC, to the microsecond), as
//! `socat -x -v` heads its chunks. `--capture DIR`: the same bytes, raw, in one file per
//! connection and direction (datagrams also get an index of their boundaries:
//! [`super::datagram_capture`]).
//!
//! ```text
//! < 2026-12-06T18:42:45.123456Z received 16 bytes from 127.0.0.1:50738 (conn 1)
//! < 00000000  68 65 6c 6c 6f 20 74 63  70 20 73 65 72 76 65 72  |hello tcp server|
//! > 2026-12-06T18:42:45.123510Z sent 16 bytes to 127.0.0.1:50738 (conn 1)
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
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::SystemTime;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::datagram_capture::DatagramFiles;
pub use super::direction::Direction;
use super::pcap::{Flow, Pcap};

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
                dump: Some(self.clone()),
                capture: None,
                pcap: None,
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
        let text = format_chunk(direction, peer, offset, data, SystemTime::now());
        // A poisoned lock only means another dump panicked mid-write; keep dumping.
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        // Nowhere to report a failing stderr; the data path must not suffer for it.
        let _ = sink.write_all(text.as_bytes());
        let _ = sink.flush();
    }
}

/// Formats one chunk: a header line with the time `at`, then 16 bytes per line as
/// offset, hex, ASCII.
pub fn format_chunk(
    direction: Direction,
    peer: &str,
    offset: u64,
    data: &[u8],
    at: SystemTime,
) -> String {
    let marker = direction.marker();
    let (verb, preposition) = direction.words();
    let mut out = String::with_capacity(64 + data.len().div_ceil(16) * 80);
    let _ = writeln!(
        out,
        "{marker} {} {verb} {} byte{} {preposition} {peer}",
        humantime::format_rfc3339_micros(at),
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

/// What an observing tap keeps: where to dump and capture, the label, and the offsets
/// so far.
#[derive(Debug)]
struct TapState {
    dump: Option<HexDump>,
    capture: Option<CaptureFiles>,
    /// `--pcap`: the file and the connection's addresses.
    pcap: Option<(Pcap, Flow)>,
    peer: String,
    sent: u64,
    received: u64,
}

impl TapState {
    /// Dumps and captures one chunk that went `direction`, and advances its offset.
    fn observe(&mut self, direction: Direction, data: &[u8]) {
        let offset = match direction {
            Direction::Sent => &mut self.sent,
            Direction::Received => &mut self.received,
        };
        if let Some(dump) = &self.dump {
            dump.chunk(direction, &self.peer, *offset, data);
        }
        let seq = *offset;
        *offset += data.len() as u64;
        if let Some((pcap, flow)) = &self.pcap {
            let ack = match direction {
                Direction::Sent => self.received,
                Direction::Received => self.sent,
            };
            pcap.record(flow, direction, seq, ack, data);
        }
        if let Some(capture) = &mut self.capture
            && let Err(e) = capture.write(direction, data)
        {
            tracing::warn!(
                "capture of {} stopped: {e}; the connection goes on",
                self.peer
            );
            self.capture = None;
        }
    }
}

/// `--capture DIR`: a directory that takes one pair of files per connection, and for
/// datagram endpoints one set of files per peer (see [`super::datagram_capture`]).
/// Cheap to clone; clones share the datagram peers' open files.
#[derive(Debug, Clone)]
pub struct Capture {
    dir: Arc<PathBuf>,
    /// The datagram peers' files, shared by every task that sees datagrams.
    datagrams: Arc<Mutex<DatagramFiles>>,
}

impl Capture {
    /// Checks that `dir` exists (creating it if needed) and takes files, so a bad
    /// directory fails the command before it connects or listens.
    ///
    /// # Errors
    /// A one-line reason naming the directory.
    pub fn new(dir: &Path) -> Result<Capture, String> {
        let fail = |e: io::Error| format!("cannot write captures to {}: {e}", dir.display());
        std::fs::create_dir_all(dir).map_err(fail)?;
        let check = dir.join(format!(".sockit-capture-check-{}", std::process::id()));
        File::create(&check).map_err(fail)?;
        let _ = std::fs::remove_file(&check);
        Ok(Capture {
            dir: Arc::new(dir.to_path_buf()),
            datagrams: Arc::default(),
        })
    }

    /// Records one datagram that went `direction` with `peer`, keeping its boundaries
    /// (the files and their index are described in [`super::datagram_capture`]).
    pub fn datagram(&self, direction: Direction, peer: &str, data: &[u8]) {
        let stem = |conn: u64| format!("conn{conn}_{}", file_safe(peer));
        // A poisoned lock only means another capture panicked mid-write; keep capturing.
        let mut files = self.datagrams.lock().unwrap_or_else(|e| e.into_inner());
        files.record(&self.dir, direction, peer, data, stem);
    }

    /// The two files of connection `conn` with `peer`:
    /// `DIR/conn<N>_<peer>.sent` (what sockit sent) and `.received`.
    fn open(&self, conn: u64, peer: &str) -> io::Result<CaptureFiles> {
        let stem = format!("conn{conn}_{}", file_safe(peer));
        let create = |suffix: &str| {
            File::create(self.dir.join(format!("{stem}.{suffix}"))).map(BufWriter::new)
        };
        Ok(CaptureFiles {
            sent: create("sent")?,
            received: create("received")?,
        })
    }

    /// The file a direction of connection `conn` with `peer` goes to (for tests and
    /// messages).
    pub fn path(&self, conn: u64, peer: &str, direction: Direction) -> PathBuf {
        let suffix = match direction {
            Direction::Sent => "sent",
            Direction::Received => "received",
        };
        self.dir
            .join(format!("conn{conn}_{}.{suffix}", file_safe(peer)))
    }
}

/// A peer as a file name part: `127.0.0.1:5000` → `127.0.0.1_5000`, `[::1]:5000` →
/// `__1_5000`; anything but letters, digits, `.` and `-` becomes `_`.
fn file_safe(peer: &str) -> String {
    let trimmed = peer.trim_start_matches('[').replacen("]:", ":", 1);
    trimmed
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The open files of one captured connection.
#[derive(Debug)]
struct CaptureFiles {
    sent: BufWriter<File>,
    received: BufWriter<File>,
}

impl CaptureFiles {
    /// Appends `data` to its direction's file. Buffered; flushed when the connection
    /// ends (the files are dropped with the tap).
    fn write(&mut self, direction: Direction, data: &[u8]) -> io::Result<()> {
        match direction {
            Direction::Sent => self.sent.write_all(data),
            Direction::Received => self.received.write_all(data),
        }
    }
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

    /// Also writes the bytes of connection `conn` with `peer` to `capture`'s files, when
    /// given.
    ///
    /// # Errors
    /// When the capture files cannot be created.
    pub fn with_capture(
        mut self,
        capture: Option<&Capture>,
        conn: u64,
        peer: &str,
    ) -> io::Result<Tap<S>> {
        let Some(capture) = capture else {
            return Ok(self);
        };
        let files = capture.open(conn, peer)?;
        self.observed(peer).capture = Some(files);
        Ok(self)
    }

    /// Also records what passes in `pcap` as packets of `flow`, when both are given (a
    /// Unix stream has no IP addresses to put in packets).
    pub fn with_pcap(mut self, pcap: Option<&Pcap>, flow: Option<Flow>, peer: &str) -> Tap<S> {
        if let (Some(pcap), Some(flow)) = (pcap, flow) {
            self.observed(peer).pcap = Some((pcap.clone(), flow));
        }
        self
    }

    /// The observing state, made if this tap was a plain pass-through.
    fn observed(&mut self, peer: &str) -> &mut TapState {
        self.state.get_or_insert_with(|| TapState {
            dump: None,
            capture: None,
            pcap: None,
            peer: peer.to_string(),
            sent: 0,
            received: 0,
        })
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
                state.observe(Direction::Received, new);
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
            state.observe(Direction::Sent, &buf[..*n]);
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
        let this = self.get_mut();
        // What was sent is complete: put it on disk now, not only when the tap drops.
        if let Some(capture) = this.state.as_mut().and_then(|s| s.capture.as_mut()) {
            let _ = capture.sent.flush();
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
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

    /// A fixed moment for the headers: 2026-12-06T18:42:45.123456Z.
    fn at() -> SystemTime {
        humantime::parse_rfc3339("2026-12-06T18:42:45.123456Z").unwrap_or(SystemTime::UNIX_EPOCH)
    }

    #[test]
    fn a_chunk_is_offset_hex_and_ascii() {
        let text = format_chunk(
            Direction::Received,
            "peer",
            0,
            b"hello tcp server!\x00\xff",
            at(),
        );
        assert_eq!(
            text,
            "< 2026-12-06T18:42:45.123456Z received 19 bytes from peer\n\
             < 00000000  68 65 6c 6c 6f 20 74 63  70 20 73 65 72 76 65 72  |hello tcp server|\n\
             < 00000010  21 00 ff                                          |!..|\n"
        );
    }

    #[test]
    fn offsets_continue_and_one_byte_is_singular() {
        let text = format_chunk(Direction::Sent, "p", 0x20, b"x", at());
        assert_eq!(
            text,
            "> 2026-12-06T18:42:45.123456Z sent 1 byte to p\n\
             > 00000020  78                                                |x|\n"
        );
    }

    #[test]
    fn empty_datagram_has_only_a_header() {
        assert_eq!(
            format_chunk(Direction::Sent, "p", 0, b"", at()),
            "> 2026-12-06T18:42:45.123456Z sent 0 bytes to p\n"
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
            text.contains(" sent 4 bytes to far (conn 1)\n> 00000000  70 69 6e 67"),
            "{text}"
        );
        assert!(text.contains("> 00000004  21"), "{text}");
        assert!(
            text.contains(" received 4 bytes from far (conn 1)\n< 00000000  70 6f 6e 67"),
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
