//! `serve --perf` on streams: the other end of `sockit bench`'s throughput tests.
//!
//! Each connection says what it is for in its first line ([`crate::bench::wire`]): the
//! client sends and the server counts (`up`), the server sends until the client's EOF
//! (`down`), or the server echoes (`ping`, the latency probe). A connection that does not
//! open with the greeting is discarded as `--discard` would. Every connection is its own
//! task, so one server measures any number of test clients at once, each separately, and
//! a client that vanishes ends only its own connection.
//!
//! A `down` connection over TCP is entered in the server's [`Watchlist`] for as long as
//! it lasts, under a random token the client learns in the answer to its greeting; a
//! `watch` connection naming such tokens gets the senders' `TCP_INFO` once per interval
//! while the test runs.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// The most down connections the server's [`Watchlist`] holds at once (each is an open
/// connection, so the connection limit bounds it first; past it a down
/// connection gets no token and its client no live sender figures).
const MAX_WATCHABLE: usize = 65_536;

/// The down connections of every test being served, by token, so a watch connection
/// can read their sockets' `TCP_INFO` while they send. An entry lives exactly as long as
/// its connection: a copy of its socket (shared, not duplicated again).
#[derive(Default)]
pub(crate) struct Watchlist {
    sockets: Mutex<HashMap<u64, Arc<OwnedFd>>>,
    /// Mixed into each token, so two tokens of one server never repeat a seed.
    issued: AtomicU64,
}

impl Watchlist {
    /// Enters a down connection's socket; `None` when the list is full. The entry goes
    /// when the returned guard is dropped.
    fn enter(&self, socket: &Arc<OwnedFd>) -> Option<Entry<'_>> {
        let mut sockets = self.sockets.lock().ok()?;
        if sockets.len() >= MAX_WATCHABLE {
            return None;
        }
        // A random key per call (std's RandomState), so tokens cannot be guessed from
        // one another; a repeat, astronomically unlikely, is drawn again.
        let token = loop {
            let seed = self.issued.fetch_add(1, Ordering::Relaxed);
            let token = std::collections::hash_map::RandomState::new().hash_one(seed);
            if !sockets.contains_key(&token) {
                break token;
            }
        };
        sockets.insert(token, Arc::clone(socket));
        Some(Entry { list: self, token })
    }

    /// The current `TCP_INFO` of the socket under `token`; `None` once it has gone.
    fn reading(&self, token: u64) -> Option<TcpInfo> {
        let socket = self.sockets.lock().ok()?.get(&token).cloned()?;
        tcp_info::read(socket.as_fd())
    }

    /// How many down connections are entered (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.sockets.lock().map_or(0, |s| s.len())
    }
}

/// A down connection's place in the [`Watchlist`], removed on drop.
struct Entry<'w> {
    list: &'w Watchlist,
    token: u64,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        if let Ok(mut sockets) = self.list.sockets.lock() {
            sockets.remove(&self.token);
        }
    }
}

/// Serves one stream connection of `serve --perf`; returns how it ended and its counts.
/// `tcp` is a copy of the connection's TCP socket (under TLS too), whose `TCP_INFO` a
/// `down` connection reports back; `None` for Unix sockets.
pub(crate) async fn serve_stream<S>(
    stream: S,
    tcp: Option<&Arc<OwnedFd>>,
    watchlist: &Watchlist,
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
        watchlist,
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
    tcp: Option<&'t Arc<OwnedFd>>,
    /// Where down connections are entered and watches look them up.
    watchlist: &'t Watchlist,
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
                Opening::Watch { tokens, len } => {
                    if let Err(end) = self.write(wire::ACCEPTED).await {
                        return end;
                    }
                    // Bytes after the watch line are asks already.
                    return self.watch(&tokens, (filled - len) as u64).await;
                }
            }
        };
        let watchlist = self.watchlist;
        let entry = match (role, self.tcp) {
            (StreamRole::Down, Some(socket)) => watchlist.enter(socket),
            _ => None,
        };
        let answer = match &entry {
            Some(entry) => wire::accepted_with_token(entry.token).into_bytes(),
            None => wire::ACCEPTED.to_vec(),
        };
        if let Err(end) = self.write(&answer).await {
            return end;
        }
        let end = match role {
            StreamRole::Up => self.receive_then_report().await,
            StreamRole::Down => self.send_until_eof().await,
            StreamRole::Ping => self.echo().await,
        };
        drop(entry);
        end
    }

    /// `watch`: for every byte (or batch of bytes) the client sends, one `info` line
    /// with the `TCP_INFO` of each watched down connection, read then; `asks` counts the
    /// bytes already read past the watch line.
    async fn watch(&mut self, tokens: &[u64], mut asks: u64) -> End {
        let mut answered = 0;
        loop {
            if asks > answered {
                let readings: Vec<Option<TcpInfo>> = tokens
                    .iter()
                    .map(|token| self.watchlist.reading(*token))
                    .collect();
                if let Err(end) = self.write(&wire::info_line(asks, &readings)).await {
                    return end;
                }
                answered = asks;
            }
            match self.read_some(0).await {
                Ok(0) => return End::PeerClosed,
                Ok(n) => {
                    self.tally.bytes_in += n as u64;
                    asks += n as u64;
                }
                Err(end) => return end,
            }
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
        let tcp = self.tcp.map(AsRef::as_ref);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_down_connection_leaves_the_watchlist_when_it_ends() -> std::io::Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let _client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        let socket = Arc::new(OwnedFd::from(server));
        let watchlist = Watchlist::default();
        let first = watchlist.enter(&socket);
        let second = watchlist.enter(&socket);
        let (Some(first), Some(second)) = (first, second) else {
            panic!("the watchlist refused an entry");
        };
        assert_ne!(first.token, second.token);
        assert!(
            watchlist
                .reading(first.token)
                .is_some_and(|i| i.snd_mss > 0)
        );
        assert_eq!(watchlist.len(), 2);
        let token = first.token;
        drop(first);
        assert_eq!(watchlist.len(), 1);
        assert!(watchlist.reading(token).is_none());
        drop(second);
        assert_eq!(watchlist.len(), 0);
        Ok(())
    }
}
