//! `sockit connect`: the interactive client. Stdin goes to the socket, the socket goes to
//! stdout, raw bytes, for every transport.
//!
//! Streams (TCP, TLS, Unix) run two independent copies, so neither direction can stall
//! the other (a server that writes a lot before it reads never deadlocks us):
//!
//! * upload: each read of stdin is sent as soon as it arrives (a person typing sees each
//!   line go at once); at the end of stdin the write side is shut down (TCP FIN, TLS
//!   close_notify), which tells the server "no more requests";
//! * download: each read from the socket is written to stdout and flushed at once.
//!
//! The conversation ends when both are done: the server closed and stdin ended. Every
//! byte the server sends before it closes is printed (nc -N). If the server closes first,
//! what stdin still holds is still sent, because the server may only have closed its
//! sending side (nc and ncat do the same); if it no longer takes it, the run fails, since
//! that input was lost. `--quit-after D` also ends the conversation once the server has
//! been quiet for D after the end of stdin, so it never stops while bytes are arriving.
//! `--no-stdin` sends nothing (nc -d). `--idle-timeout` ends after a quiet spell either way.
//!
//! Datagrams (UDP, Unix datagram) have no connection to close: each read of stdin is one
//! datagram; replies are printed as they come; after stdin ends, replies are still
//! printed until none has arrived for `--quit-after` ([`DATAGRAM_LINGER`] by default).
//!
//! Stdin is read on a plain thread, not tokio's blocking pool: a read from a terminal
//! cannot be cancelled, and a pool thread stuck in it would hold the runtime open at exit.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::endpoint::{Delivery, Endpoint, PeerAddr};
use crate::error::{Error, Result};
use crate::idle::Activity;
use crate::obs::hexdump::{Capture, Direction, HexDump, Tap};
use crate::transport::pcap::Pcap;
use crate::transport::proxy_client::ProxyChain;
use crate::transport::{ConnectOptions, DatagramSocket, MAX_DATAGRAM, Stream, connect_stream};

/// After stdin ends on a datagram endpoint, how long to keep printing replies once none
/// has come: long enough for a reply over a slow link, short enough for scripts.
pub const DATAGRAM_LINGER: Duration = Duration::from_secs(2);

/// Bytes read from the socket at a time.
const READ_SIZE: usize = 64 * 1024;

/// Receive buffer for one datagram: larger than any UDP datagram (65,535 bytes) and
/// than a Unix datagram under the default socket limits, so none is cut.
const DATAGRAM_RECEIVE: usize = 256 * 1024;

/// Chunks of stdin queued before the reader thread waits: a little read-ahead, bounded.
const INPUT_DEPTH: usize = 4;

/// Where the bytes to send come from: one item per read (one datagram each, on datagram
/// endpoints). The channel closing is the end of input.
pub type Input = mpsc::Receiver<io::Result<Bytes>>;

/// Whether stdin is sent at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StdinUse {
    /// Send what stdin holds; at its end, shut down our sending side (nc -N).
    #[default]
    Send,
    /// Send nothing and leave the sending side open: only print what the server sends
    /// (`--no-stdin`, nc -d).
    Ignore,
}

/// How line endings in the input are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineEndings {
    /// Byte for byte as read.
    #[default]
    AsIs,
    /// Every `\n` not already preceded by `\r` becomes `\r\n` (`--crlf`).
    Crlf,
}

/// How `connect` behaves.
#[derive(Debug, Clone)]
pub struct InteractiveOptions {
    /// Connect timeout and TLS settings.
    pub connect: ConnectOptions,
    /// Whether stdin is read and sent.
    pub stdin: StdinUse,
    /// `--quit-after`: once stdin has ended, stop when the server has been quiet this
    /// long. `None`: wait for the server to close (streams), or [`DATAGRAM_LINGER`].
    pub quit_after: Option<Duration>,
    /// `--crlf`.
    pub line_endings: LineEndings,
    /// End after this long with no bytes either way. `None`: never for streams, and
    /// [`DATAGRAM_LINGER`] after the end of input for datagrams.
    pub idle_timeout: Option<Duration>,
    /// `--hex`: dump both directions on stderr.
    pub hex: Option<HexDump>,
    /// `--capture DIR`: each connection's bytes, per direction, in files.
    pub capture: Option<Capture>,
    /// `--pcap FILE`: what passes, as synthetic packets (`connect` only).
    pub pcap: Option<Pcap>,
}

impl InteractiveOptions {
    /// Defaults: 10 s to connect, stdin sent then half-closed, wait for the server to
    /// close, bytes as read, no idle limit, no dump.
    pub fn new() -> InteractiveOptions {
        InteractiveOptions {
            connect: ConnectOptions::new(Duration::from_secs(10)),
            stdin: StdinUse::Send,
            quit_after: None,
            line_endings: LineEndings::AsIs,
            idle_timeout: None,
            hex: None,
            capture: None,
            pcap: None,
        }
    }
}

impl Default for InteractiveOptions {
    fn default() -> InteractiveOptions {
        InteractiveOptions::new()
    }
}

/// Why a conversation ended normally.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The server closed and the input ended (or a datagram conversation went quiet
    /// after the input ended).
    Finished,
    /// The input ended and the server then sent nothing for `--quit-after`.
    ServerQuiet,
    /// Nothing moved for the idle timeout.
    Idle,
    /// Stdout was closed (e.g. `| head`): a normal way to stop reading.
    OutputClosed,
}

/// What a conversation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectReport {
    /// How it ended.
    pub ended: Ended,
    /// Bytes sent to the server (after `--crlf`).
    pub sent: u64,
    /// Bytes received from the server.
    pub received: u64,
}

/// Reads this process's stdin on its own thread, one chunk per read.
///
/// # Errors
/// When the thread cannot be started.
pub fn stdin_input() -> Result<Input> {
    let (tx, rx) = mpsc::channel(INPUT_DEPTH);
    std::thread::Builder::new()
        .name("sockit-stdin".into())
        .spawn(move || {
            let mut stdin = io::stdin().lock();
            // At most one datagram per read, so a read never needs splitting.
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                let item = match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => Ok(Bytes::copy_from_slice(&buf[..n])),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if tx.blocking_send(item).is_err() || failed {
                    break;
                }
            }
        })
        .map_err(|source| Error::Io {
            doing: "starting the stdin reader".into(),
            source,
        })?;
    Ok(rx)
}

/// An input that has already ended, for `--no-stdin`: stdin is left alone.
pub fn no_input() -> Input {
    mpsc::channel(1).1
}

/// Connects to `endpoint` and runs the conversation between `input` and `output`.
///
/// # Errors
/// Connection errors (refused, timeout, host not found, TLS), a reset in the middle, or
/// a failure reading stdin.
pub async fn connect<O>(
    endpoint: &Endpoint,
    options: &InteractiveOptions,
    input: Input,
    output: O,
) -> Result<ConnectReport>
where
    O: AsyncWrite + Unpin,
{
    match endpoint.delivery() {
        Delivery::Stream => {
            let stream = connect_stream(endpoint, options.connect.clone()).await?;
            let peer = stream_peer(&stream, endpoint, &options.connect.proxies)
                .map_or_else(|| endpoint.to_string(), |p| p.to_string());
            tracing::debug!("connected to {peer}");
            let flow = options.pcap.as_ref().and_then(|_| stream.pcap_flow());
            let stream = Tap::maybe(stream, options.hex.as_ref(), peer.clone())
                .with_pcap(options.pcap.as_ref(), flow, &peer)
                .with_capture(options.capture.as_ref(), 1, &peer)
                .map_err(|source| Error::Io {
                    doing: format!("creating the capture files of {peer}"),
                    source,
                })?;
            talk_stream(stream, &peer, options, input, output).await
        }
        Delivery::Datagram => {
            let socket = DatagramSocket::connect_with_options(endpoint, &options.connect).await?;
            talk_datagrams(&socket, endpoint, options, input, output).await
        }
    }
}

/// Whom a client names as its peer in logs, events, `--hex` and capture files: through
/// `--proxy` the target (the socket's own peer is the proxy), else the socket's peer.
pub(crate) fn stream_peer(
    stream: &Stream,
    endpoint: &Endpoint,
    proxies: &ProxyChain,
) -> Option<PeerAddr> {
    match endpoint {
        Endpoint::Tcp(hp) | Endpoint::Tls(hp) if !proxies.is_empty() => Some(PeerAddr::target(hp)),
        _ => stream.peer_addr().ok(),
    }
}

/// Counts bytes each way.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    received: AtomicU64,
}

impl Counts {
    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn report(&self, ended: Ended) -> ConnectReport {
        ConnectReport {
            ended,
            sent: self.sent.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
        }
    }
}

/// How the download direction ended.
enum DownloadEnd {
    /// The server closed its side.
    PeerClosed,
    /// Our stdout went away.
    OutputClosed,
}

/// Both directions of a stream conversation, until both end (see the module docs).
pub(crate) async fn talk_stream<S, O>(
    stream: S,
    peer: &str,
    options: &InteractiveOptions,
    input: Input,
    output: O,
) -> Result<ConnectReport>
where
    S: AsyncRead + AsyncWrite + Unpin,
    O: AsyncWrite + Unpin,
{
    let (reader, writer) = tokio::io::split(stream);
    let activity = Activity::new();
    let counts = Counts::default();
    let upload = upload(
        input,
        writer,
        options.line_endings,
        &activity,
        &counts,
        peer,
    );
    let download = download(reader, output, &activity, &counts, peer);
    tokio::pin!(upload, download);
    let mut upload_done = options.stdin == StdinUse::Ignore;
    let mut download_done = false;
    // A failure to send is reported once the download has printed all it can.
    let mut upload_error = None;
    loop {
        let quiet_limit = quiet_limit(options, upload_done);
        tokio::select! {
            result = &mut upload, if !upload_done => {
                upload_done = true;
                // The --quit-after wait counts from the end of input.
                activity.touch();
                match result {
                    Ok(UploadEnd::ShutDown) => {}
                    // The server closed completely and we learn it by shutting down:
                    // everything was sent before, so nothing was lost.
                    Ok(UploadEnd::ShutdownFailed(e)) if download_done && is_closed(&e) => {
                        tracing::debug!("{peer} had already closed: {e}");
                    }
                    Ok(UploadEnd::ShutdownFailed(e)) => {
                        upload_error = Some(Error::exchange(e, peer, "while closing the sending side"));
                    }
                    Err(e) => {
                        upload_error = Some(unsent_input_error(e, peer, counts.sent()));
                    }
                }
            }
            result = &mut download, if !download_done => {
                download_done = true;
                match result {
                    Ok(DownloadEnd::PeerClosed) if !upload_done => {
                        // Someone typing would otherwise wonder why nothing happens.
                        tracing::info!("{peer} closed its side; still sending stdin (Ctrl-D or end of input to finish)");
                    }
                    Ok(DownloadEnd::PeerClosed) => {}
                    Ok(DownloadEnd::OutputClosed) => return Ok(counts.report(Ended::OutputClosed)),
                    Err(e) => return Err(Error::exchange(e, peer, "while receiving")),
                }
            }
            () = activity.quiet_for(quiet_limit) => {
                if let Some(e) = upload_error {
                    return Err(e);
                }
                let ended = quiet_end(options, upload_done);
                match ended {
                    Ended::ServerQuiet => tracing::debug!("{peer} sent nothing for --quit-after: closing"),
                    _ => tracing::info!("no traffic for {}: closing", humantime::format_duration(quiet_limit.unwrap_or_default())),
                }
                return Ok(counts.report(ended));
            }
        }
        if upload_done && download_done {
            return match upload_error {
                Some(e) => Err(e),
                None => Ok(counts.report(Ended::Finished)),
            };
        }
    }
}

/// How long a quiet spell ends a stream conversation: the idle timeout, and once input
/// has ended, `--quit-after` if it is shorter.
fn quiet_limit(options: &InteractiveOptions, input_ended: bool) -> Option<Duration> {
    match (
        options.idle_timeout,
        options.quit_after.filter(|_| input_ended),
    ) {
        (Some(idle), Some(quit)) => Some(idle.min(quit)),
        (idle, quit) => idle.or(quit),
    }
}

/// Which quiet spell ended a stream conversation: `--quit-after` once input has ended
/// (when it is the shorter limit), otherwise the idle timeout.
fn quiet_end(options: &InteractiveOptions, input_ended: bool) -> Ended {
    match options.quit_after {
        Some(quit) if input_ended && options.idle_timeout.is_none_or(|idle| quit <= idle) => {
            Ended::ServerQuiet
        }
        _ => Ended::Idle,
    }
}

/// The error for input the server no longer took: those bytes were lost, so the run
/// must not look successful.
fn unsent_input_error(e: io::Error, peer: &str, sent: u64) -> Error {
    let during = format!("before all of stdin was sent ({sent} bytes were)");
    match e.kind() {
        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => Error::Reset {
            peer: peer.to_string(),
            during,
        },
        _ if is_closed(&e) => Error::ClosedEarly {
            peer: peer.to_string(),
            during,
        },
        _ => Error::exchange(e, peer, "while sending"),
    }
}

/// Whether a write error means the peer has gone (rather than a local failure).
fn is_closed(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::NotConnected
    )
}

/// How the upload direction ended without losing input.
enum UploadEnd {
    /// All input was sent and the sending side shut down.
    ShutDown,
    /// All input was sent; shutting the sending side down failed.
    ShutdownFailed(io::Error),
}

/// Input → socket, then shut the socket's write side down.
///
/// # Errors
/// A failed read of stdin or write to the socket: some input was not sent.
async fn upload<W: AsyncWrite + Unpin>(
    mut input: Input,
    mut writer: W,
    line_endings: LineEndings,
    activity: &Activity,
    counts: &Counts,
    peer: &str,
) -> io::Result<UploadEnd> {
    let mut encoder = CrlfEncoder::default();
    let mut encoded = Vec::new();
    while let Some(chunk) = input.recv().await {
        let chunk = chunk.map_err(|e| io::Error::other(format!("reading stdin: {e}")))?;
        let wire = encode(&chunk, line_endings, &mut encoder, &mut encoded);
        writer.write_all(wire).await?;
        counts.sent.fetch_add(wire.len() as u64, Ordering::Relaxed);
        activity.touch();
    }
    tracing::debug!("end of input: shutting down the sending side to {peer}");
    Ok(match writer.shutdown().await {
        Ok(()) => UploadEnd::ShutDown,
        Err(e) => UploadEnd::ShutdownFailed(e),
    })
}

/// Socket → output, flushed per read, until the server closes or output goes away.
async fn download<R, O>(
    mut reader: R,
    mut output: O,
    activity: &Activity,
    counts: &Counts,
    peer: &str,
) -> io::Result<DownloadEnd>
where
    R: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; READ_SIZE];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) => return Ok(DownloadEnd::PeerClosed),
            Ok(n) => n,
            // A TLS peer that closes TCP without close_notify: the data is complete as far
            // as it is concerned (many servers do this); nothing more will come.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                tracing::debug!("{peer} closed without a TLS close_notify");
                return Ok(DownloadEnd::PeerClosed);
            }
            Err(e) => return Err(e),
        };
        counts.received.fetch_add(n as u64, Ordering::Relaxed);
        activity.touch();
        let written = async {
            output.write_all(&buf[..n]).await?;
            output.flush().await
        };
        if let Err(e) = written.await {
            tracing::debug!("stdout closed: {e}");
            return Ok(DownloadEnd::OutputClosed);
        }
    }
}

/// A datagram conversation: each input chunk is one datagram; replies go to output.
async fn talk_datagrams<O>(
    socket: &DatagramSocket,
    endpoint: &Endpoint,
    options: &InteractiveOptions,
    mut input: Input,
    mut output: O,
) -> Result<ConnectReport>
where
    O: AsyncWrite + Unpin,
{
    let peer = endpoint.to_string();
    let capture = options.capture.as_ref();
    let capture_peer = socket.peer_name().unwrap_or_else(|| peer.clone());
    let pcap = options.pcap.as_ref().zip(socket.pcap_flow());
    let mut counted = (0u64, 0u64);
    let activity = Activity::new();
    let counts = Counts::default();
    let mut encoder = CrlfEncoder::default();
    let mut encoded = Vec::new();
    let mut buf = vec![0u8; DATAGRAM_RECEIVE];
    let mut input_open = options.stdin == StdinUse::Send;
    loop {
        let quiet_limit = if input_open {
            options.idle_timeout
        } else {
            Some(
                options
                    .quit_after
                    .or(options.idle_timeout)
                    .unwrap_or(DATAGRAM_LINGER),
            )
        };
        tokio::select! {
            chunk = input.recv(), if input_open => match chunk {
                Some(Ok(chunk)) => {
                    let wire = encode(&chunk, options.line_endings, &mut encoder, &mut encoded);
                    send_datagram(socket, endpoint, wire, options.hex.as_ref(), &peer).await?;
                    if let Some(capture) = capture {
                        capture.datagram(Direction::Sent, &capture_peer, wire);
                    }
                    if let Some((pcap, flow)) = &pcap {
                        pcap.record(flow, Direction::Sent, counted.0, counted.1, wire);
                        counted.0 += wire.len() as u64;
                    }
                    counts.sent.fetch_add(wire.len() as u64, Ordering::Relaxed);
                    activity.touch();
                }
                Some(Err(source)) => {
                    return Err(Error::Io { doing: "reading stdin".into(), source });
                }
                None => {
                    input_open = false;
                    // The linger counts from the end of input, not from the last reply.
                    activity.touch();
                }
            },
            received = socket.recv(&mut buf) => {
                let n = received.map_err(|e| datagram_error(e, endpoint, &peer))?;
                if let Some(hex) = &options.hex {
                    hex.datagram(Direction::Received, &peer, &buf[..n]);
                }
                if let Some(capture) = capture {
                    capture.datagram(Direction::Received, &capture_peer, &buf[..n]);
                }
                if let Some((pcap, flow)) = &pcap {
                    pcap.record(flow, Direction::Received, counted.1, counted.0, &buf[..n]);
                    counted.1 += n as u64;
                }
                counts.received.fetch_add(n as u64, Ordering::Relaxed);
                activity.touch();
                let written = async {
                    output.write_all(&buf[..n]).await?;
                    output.flush().await
                };
                if written.await.is_err() {
                    return Ok(counts.report(Ended::OutputClosed));
                }
            }
            () = activity.quiet_for(quiet_limit) => {
                return Ok(counts.report(if input_open { Ended::Idle } else { Ended::Finished }));
            }
        }
    }
}

/// Sends one datagram, refusing one too large instead of letting the kernel truncate it.
async fn send_datagram(
    socket: &DatagramSocket,
    endpoint: &Endpoint,
    datagram: &[u8],
    hex: Option<&HexDump>,
    peer: &str,
) -> Result<()> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(Error::DatagramTooLarge {
            size: datagram.len(),
            max: MAX_DATAGRAM,
        });
    }
    if let Some(hex) = hex {
        hex.datagram(Direction::Sent, peer, datagram);
    }
    socket
        .send(datagram)
        .await
        .map_err(|e| datagram_error(e, endpoint, peer))?;
    Ok(())
}

/// "Connection refused" on a connected datagram socket is the ICMP answer "nothing
/// listens there"; anything else is an exchange failure.
fn datagram_error(e: io::Error, endpoint: &Endpoint, peer: &str) -> Error {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => Error::Refused {
            endpoint: endpoint.clone(),
        },
        Some(libc::EMSGSIZE) => Error::DatagramTooLarge {
            size: 0,
            max: MAX_DATAGRAM,
        },
        _ => Error::exchange(e, peer, "while exchanging datagrams"),
    }
}

/// The bytes to send for one input chunk: as read, or with CRLF line endings.
fn encode<'a>(
    chunk: &'a [u8],
    line_endings: LineEndings,
    encoder: &mut CrlfEncoder,
    scratch: &'a mut Vec<u8>,
) -> &'a [u8] {
    match line_endings {
        LineEndings::AsIs => chunk,
        LineEndings::Crlf => {
            scratch.clear();
            encoder.encode(chunk, scratch);
            scratch
        }
    }
}

/// Turns `\n` into `\r\n`, leaving existing `\r\n` alone, across chunk boundaries.
#[derive(Debug, Default)]
pub struct CrlfEncoder {
    /// Whether the previous chunk ended with `\r`, so a `\n` starting this one is
    /// already a CRLF.
    after_cr: bool,
}

impl CrlfEncoder {
    /// Appends the encoded `input` to `out`.
    pub fn encode(&mut self, input: &[u8], out: &mut Vec<u8>) {
        out.reserve(input.len() + input.len() / 8);
        for &byte in input {
            if byte == b'\n' && !self.after_cr {
                out.push(b'\r');
            }
            out.push(byte);
            self.after_cr = byte == b'\r';
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crlf(chunks: &[&[u8]]) -> Vec<u8> {
        let mut encoder = CrlfEncoder::default();
        let mut out = Vec::new();
        for chunk in chunks {
            encoder.encode(chunk, &mut out);
        }
        out
    }

    #[test]
    fn crlf_turns_lf_into_crlf_once() {
        assert_eq!(crlf(&[b"a\nb\r\nc"]), b"a\r\nb\r\nc");
        assert_eq!(crlf(&[b"\n\n"]), b"\r\n\r\n");
        // A CR at the end of one read and the LF at the start of the next is one CRLF.
        assert_eq!(crlf(&[b"x\r", b"\ny\n"]), b"x\r\ny\r\n");
        assert_eq!(crlf(&[b"x", b"\n"]), b"x\r\n");
    }

    #[tokio::test]
    async fn stream_conversation_half_closes_and_keeps_reading() -> Result<()> {
        let (near, mut far) = tokio::io::duplex(1024);
        let (tx, rx) = mpsc::channel(4);
        let mut output = Vec::new();
        let server = async {
            let mut request = Vec::new();
            // The client's EOF arrives after its input: read to the end, then answer.
            far.read_to_end(&mut request).await?;
            far.write_all(b"reply to ").await?;
            far.write_all(&request).await?;
            far.shutdown().await?;
            Ok::<_, io::Error>(())
        };
        let client = async {
            let options = InteractiveOptions {
                line_endings: LineEndings::Crlf,
                ..InteractiveOptions::new()
            };
            let sending = async {
                let _ = tx.send(Ok(Bytes::from_static(b"hi\n"))).await;
                drop(tx);
            };
            let (report, ()) = tokio::join!(
                talk_stream(near, "test", &options, rx, &mut output),
                sending
            );
            report
        };
        let (report, served) = tokio::join!(client, server);
        served.map_err(|e| Error::Io {
            doing: "server".into(),
            source: e,
        })?;
        let report = report?;
        assert_eq!(output, b"reply to hi\r\n");
        assert_eq!(report.ended, Ended::Finished);
        assert_eq!((report.sent, report.received), (4, 13));
        Ok(())
    }
}
