//! `serve --perf` on streams: the other end of `sockit bench`'s throughput tests.
//!
//! Each connection says what it is for in its first line ([`crate::bench::wire`]): the
//! client sends and the server counts (`up`), the server sends until the client's EOF
//! (`down`), or the server echoes (`ping`, the latency probe). A connection that does not
//! open with the greeting is discarded as `--discard` would. Every connection is its own
//! task, so one server measures any number of test clients at once, each separately, and
//! a client that vanishes ends only its own connection.

use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::end::End;
use crate::bench::tcp_info::{self, TcpInfo};
use crate::bench::wire::{self, Opening, StreamRole};
use crate::error::Error;
use crate::obs::Tally;
use crate::shutdown::Shutdown;

/// Bytes per read and per write of filler: large enough that system calls are not the
/// limit.
const CHUNK: usize = 128 * 1024;

/// How long the server waits for a silent client when `--idle-timeout` is off.
const NO_IDLE: Duration = Duration::from_secs(24 * 3600);

/// Serves one stream connection of `serve --perf`; returns how it ended and its counts.
/// `tcp` is a copy of the connection's TCP socket (under TLS too), whose `TCP_INFO` a
/// `down` connection reports back; `None` for Unix sockets.
pub(crate) async fn serve_stream<S>(
    stream: S,
    tcp: Option<&OwnedFd>,
    idle: Option<Duration>,
    shutdown: &Shutdown,
) -> (End, Tally)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut session = Session {
        stream,
        tally: Tally::default(),
        idle: idle.unwrap_or(NO_IDLE),
        buffer: vec![0; CHUNK],
        tcp,
    };
    let end = tokio::select! {
        end = session.run() => end,
        () = shutdown.triggered() => End::Shutdown,
    };
    (end, session.tally)
}

/// One connection's state.
struct Session<'t, S> {
    stream: S,
    /// What was read and written.
    tally: Tally,
    /// How long a read (or a write the client does not take) may wait.
    idle: Duration,
    /// Read buffer, reused.
    buffer: Vec<u8>,
    /// A copy of the TCP socket, for `TCP_INFO`.
    tcp: Option<&'t OwnedFd>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<'_, S> {
    /// Reads the opening, then serves the role it asks for.
    async fn run(&mut self) -> End {
        let mut filled = 0;
        let role = loop {
            let n = match self.read_some(filled).await {
                Ok(0) => return End::PeerClosed,
                Ok(n) => n,
                Err(end) => return end,
            };
            filled += n;
            match wire::parse_opening(&self.buffer[..filled]) {
                Opening::Plain => {
                    // What was read while looking for a greeting is data too.
                    self.tally.bytes_in = filled as u64;
                    return self.count_until_eof().await;
                }
                Opening::Incomplete => continue,
                Opening::Unknown => {
                    return End::Failed(Error::Io {
                        doing: "reading the throughput test's greeting".into(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "the client asked for a test this server does not know (use the \
                             same sockit version on both sides)",
                        ),
                    });
                }
                Opening::Greeting { role, len } => {
                    // Bytes after the greeting are data, counted as such.
                    self.tally.bytes_in = (filled - len) as u64;
                    break role;
                }
            }
        };
        if let Err(end) = self.write(wire::ACCEPTED).await {
            return end;
        }
        match role {
            StreamRole::Up => self.receive_then_report().await,
            StreamRole::Down => self.send_until_eof().await,
            StreamRole::Ping => self.echo().await,
        }
    }

    /// One read into the buffer from `at`, under the idle limit.
    async fn read_some(&mut self, at: usize) -> Result<usize, End> {
        let read = self.stream.read(&mut self.buffer[at..]);
        match tokio::time::timeout(self.idle, read).await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(End::Failed(Error::exchange(
                e,
                super::THE_CLIENT,
                "during a throughput test",
            ))),
            Err(_) => Err(End::Idle(self.idle)),
        }
    }

    /// Writes `bytes` whole, under the idle limit (a client that stops reading).
    async fn write(&mut self, bytes: &[u8]) -> Result<(), End> {
        let write = self.stream.write_all(bytes);
        match tokio::time::timeout(self.idle, write).await {
            Ok(Ok(())) => {
                self.tally.bytes_out += bytes.len() as u64;
                Ok(())
            }
            Ok(Err(e)) => Err(End::Failed(Error::exchange(
                e,
                super::THE_CLIENT,
                "during a throughput test",
            ))),
            Err(_) => Err(End::NotReading(self.idle)),
        }
    }

    /// Counts and drops everything until the client's EOF (`--discard`'s behaviour).
    async fn count_until_eof(&mut self) -> End {
        loop {
            match self.read_some(0).await {
                Ok(0) => return End::PeerClosed,
                Ok(n) => self.tally.bytes_in += n as u64,
                Err(end) => return end,
            }
        }
    }

    /// `up`: counts until the client's EOF, then tells it how many bytes arrived.
    async fn receive_then_report(&mut self) -> End {
        let end = self.count_until_eof().await;
        if !matches!(end, End::PeerClosed) {
            return end;
        }
        let line = wire::received_line(self.tally.bytes_in);
        if let Err(end) = self.write(line.as_bytes()).await {
            return end;
        }
        // The client reads the line and closes; a failed shutdown changes nothing.
        let _ = self.stream.shutdown().await;
        End::PeerClosed
    }

    /// `down`: sends filler until the client half-closes (or goes away), reading
    /// `TCP_INFO` for each byte the client sends; after the EOF, sends those readings.
    async fn send_until_eof(&mut self) -> End {
        let filler = crate::bench::filler(CHUNK);
        let (mut reader, mut writer) = tokio::io::split(&mut self.stream);
        let mut probe = [0u8; 512];
        let idle = self.idle;
        let mut sent = 0u64;
        let mut readings: Vec<TcpInfo> = Vec::new();
        let tcp = self.tcp;
        let end = loop {
            tokio::select! {
                read = reader.read(&mut probe) => match read {
                    Ok(0) => break End::PeerClosed,
                    Ok(n) => {
                        self.tally.bytes_in += n as u64;
                        take_readings(tcp, n, &mut readings);
                    }
                    Err(e) => break End::Failed(Error::exchange(e, super::THE_CLIENT, "during a throughput test")),
                },
                written = tokio::time::timeout(idle, writer.write(&filler)) => match written {
                    Ok(Ok(0)) => break End::PeerClosed,
                    Ok(Ok(n)) => sent += n as u64,
                    Ok(Err(e)) => break End::Failed(Error::exchange(e, super::THE_CLIENT, "during a throughput test")),
                    Err(_) => break End::NotReading(idle),
                },
            }
        };
        self.tally.bytes_out += sent;
        if matches!(end, End::PeerClosed) {
            let line = wire::sent_line(&readings);
            if let Ok(Ok(())) = tokio::time::timeout(idle, writer.write_all(&line)).await {
                self.tally.bytes_out += line.len() as u64;
            }
            let _ = writer.shutdown().await;
        }
        end
    }

    /// `ping`: sends every byte back.
    async fn echo(&mut self) -> End {
        loop {
            let n = match self.read_some(0).await {
                Ok(0) => return End::PeerClosed,
                Ok(n) => n,
                Err(end) => return end,
            };
            self.tally.bytes_in += n as u64;
            self.tally.messages += 1;
            let write = self.stream.write_all(&self.buffer[..n]);
            match tokio::time::timeout(self.idle, write).await {
                Ok(Ok(())) => self.tally.bytes_out += n as u64,
                Ok(Err(e)) => {
                    return End::Failed(Error::exchange(
                        e,
                        super::THE_CLIENT,
                        "during a latency probe",
                    ));
                }
                Err(_) => return End::NotReading(self.idle),
            }
        }
    }
}

/// Reads `TCP_INFO` once for `asks` bytes the client sent (one reading per byte, up to
/// [`wire::MAX_SENDER_READINGS`]); nothing without a TCP socket.
fn take_readings(tcp: Option<&OwnedFd>, asks: usize, readings: &mut Vec<TcpInfo>) {
    let room = wire::MAX_SENDER_READINGS.saturating_sub(readings.len());
    if room == 0 {
        return;
    }
    if let Some(info) = tcp.and_then(|fd| tcp_info::read(fd.as_fd())) {
        readings.extend(std::iter::repeat_n(info, asks.min(room)));
    }
}
