//! The zero-copy copy path (Linux): when both sides of a relayed connection are plain
//! sockets (TCP or Unix stream, no TLS, no `--hex`), each direction moves its bytes with
//! splice(2) from the source socket into a kernel pipe and from the pipe into the
//! destination socket. The bytes never enter user space: the kernel passes page
//! references along, which is what lets a relay carry what the loopback itself carries.
//!
//! The contract is [`super::copy::pipe`]'s, unchanged:
//!
//! * **Bounded memory.** The pipe is the direction's only buffer. Its size is asked for
//!   with `F_SETPIPE_SZ` (the `--buffer` size), and each splice into it asks for no more
//!   than the room left under that bound, counted in bytes (spliced in minus spliced
//!   out), so a direction never holds more than `--buffer` bytes whatever the kernel does
//!   with pipe slots. When the destination stops reading, the pipe stays full, the relay
//!   stops reading the source, and TCP pushes back on the sender.
//! * **Counts.** [`FlowStats::read`] grows on each splice in, [`FlowStats::written`] on
//!   each splice out; their difference is what the pipes hold now, and
//!   [`FlowStats::peak_buffered`] the most one pipe ever held.
//! * **Half-close.** When the source ends (splice returns 0) and the pipe is empty, the
//!   destination's sending side is shut down.
//! * **Idle tracking.** Every splice that moves bytes touches the [`Activity`].
//!
//! Readiness comes from tokio (`async_io` on the tokio socket, which also spends the
//! task's cooperative budget, so a busy connection cannot starve the others). If the
//! pipes cannot be made (out of file descriptors), [`Splicer::new`] says so and the caller
//! copies through buffers instead.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

use super::copy::FlowStats;
use crate::idle::Activity;
use crate::transport::Stream;

/// Flags of every splice: never block on the pipe (the sockets are non-blocking
/// already), and move pages rather than copy them where the kernel can.
const SPLICE_FLAGS: libc::c_uint = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;

/// A non-blocking kernel pipe: the in-kernel buffer of one direction.
#[derive(Debug)]
pub(crate) struct Pipe {
    /// The end bytes are spliced out of, into the destination socket.
    read: OwnedFd,
    /// The end bytes are spliced into, from the source socket.
    write: OwnedFd,
    /// Bytes the pipe was sized for (`F_GETPIPE_SZ`), at least one page.
    capacity: usize,
}

impl Pipe {
    /// A pipe sized for `wanted` bytes, or as close below as the system allows.
    ///
    /// Growing a pipe can fail for an unprivileged user (beyond `fs.pipe-max-size`, or once
    /// the user's pipes together pass `fs.pipe-user-pages-soft`): the size is then halved
    /// until it fits, down to the size the pipe already has. [`Pipe::capacity`] tells what
    /// was granted.
    ///
    /// # Errors
    /// When the pipe cannot be created (out of file descriptors).
    pub(crate) fn new(wanted: usize) -> io::Result<Pipe> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let current = pipe_size(&write)?;
        let mut asked = wanted;
        while asked > current {
            let size = libc::c_int::try_from(asked).unwrap_or(libc::c_int::MAX);
            // SAFETY: F_SETPIPE_SZ on a pipe we own; it reads only the integer argument.
            if unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, size) } >= 0 {
                break;
            }
            asked /= 2;
        }
        let capacity = pipe_size(&write)?;
        Ok(Pipe {
            read,
            write,
            capacity,
        })
    }

    /// Bytes the pipe was sized for.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }
}

/// The size of a pipe in bytes.
fn pipe_size(pipe: &OwnedFd) -> io::Result<usize> {
    // SAFETY: F_GETPIPE_SZ on a pipe we own takes no argument.
    let size = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_GETPIPE_SZ) };
    usize::try_from(size).map_err(|_| io::Error::last_os_error())
}

/// splice(2) without offsets: `len` bytes at most from `from` to `to`.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (the caller borrows
    // their owners); null offsets mean "the file position", which pipes and sockets use.
    let moved = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            SPLICE_FLAGS,
        )
    };
    usize::try_from(moved).map_err(|_| io::Error::last_os_error())
}

/// One side of a connection that splice(2) can read from and write to: a plain socket,
/// borrowed, so both directions can use it at once (tokio keeps read and write readiness
/// apart).
#[derive(Debug, Clone, Copy)]
pub(crate) enum PlainSocket<'a> {
    /// A TCP connection.
    Tcp(&'a TcpStream),
    /// A Unix stream connection.
    Unix(&'a UnixStream),
}

impl<'a> PlainSocket<'a> {
    /// The plain socket under `stream`; `None` for TLS, whose bytes must be decrypted in
    /// user space.
    pub(crate) fn of(stream: &'a Stream) -> Option<PlainSocket<'a>> {
        match stream {
            Stream::Tcp(s) => Some(PlainSocket::Tcp(s)),
            Stream::Unix(s) => Some(PlainSocket::Unix(s)),
            Stream::Tls(_) => None,
        }
    }

    /// The descriptor splice(2) works on.
    fn fd(self) -> RawFd {
        match self {
            PlainSocket::Tcp(s) => s.as_raw_fd(),
            PlainSocket::Unix(s) => s.as_raw_fd(),
        }
    }

    /// Waits until the socket is ready for `interest`, runs `op`, and waits again if `op`
    /// found it not ready after all (`WouldBlock`).
    async fn io(
        self,
        interest: Interest,
        op: impl FnMut() -> io::Result<usize>,
    ) -> io::Result<usize> {
        match self {
            PlainSocket::Tcp(s) => s.async_io(interest, op).await,
            PlainSocket::Unix(s) => s.async_io(interest, op).await,
        }
    }

    /// Ends this side's sending (FIN), keeping its receiving open: half-close passed on.
    fn shutdown_write(self) -> io::Result<()> {
        let socket = match self {
            PlainSocket::Tcp(s) => SockRef::from(s),
            PlainSocket::Unix(s) => SockRef::from(s),
        };
        match socket.shutdown(std::net::Shutdown::Write) {
            // The peer is already gone: its end is as closed as it gets.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            other => other,
        }
    }
}

/// The two pipes of one connection, made before any byte moves so that a failure to make
/// them can still fall back to the buffered copy.
#[derive(Debug)]
pub(crate) struct Splicer {
    /// Client → target.
    upstream: Pipe,
    /// Target → client.
    downstream: Pipe,
    /// The most either direction holds: `--buffer`, or less if the pipes came out smaller.
    limit: usize,
}

/// The per-connection and relay-wide counters of one direction.
pub(crate) struct Counters<'a> {
    /// This connection's bytes delivered, for its `closed` event.
    pub delivered: &'a AtomicU64,
    /// The relay's totals for the direction.
    pub totals: &'a FlowStats,
}

impl Splicer {
    /// Pipes for both directions, each holding at most `buffer_size` bytes.
    ///
    /// # Errors
    /// When a pipe cannot be created; the caller then copies through buffers.
    pub(crate) fn new(buffer_size: usize) -> io::Result<Splicer> {
        let wanted = buffer_size.max(1);
        let upstream = Pipe::new(wanted)?;
        let downstream = Pipe::new(wanted)?;
        let limit = wanted.min(upstream.capacity()).min(downstream.capacity());
        Ok(Splicer {
            upstream,
            downstream,
            limit,
        })
    }

    /// Copies both ways until both directions have ended; the first error stops both.
    ///
    /// # Errors
    /// The first splice or shutdown error; the caller ends the connection.
    pub(crate) async fn run(
        self,
        client: PlainSocket<'_>,
        target: PlainSocket<'_>,
        to_target: Counters<'_>,
        to_client: Counters<'_>,
        activity: &Activity,
    ) -> io::Result<()> {
        let limit = self.limit;
        let upstream = splice_one_way(client, target, &self.upstream, limit, to_target, activity);
        let downstream =
            splice_one_way(target, client, &self.downstream, limit, to_client, activity);
        futures_util::future::try_join(upstream, downstream)
            .await
            .map(|_| ())
    }
}

/// One direction: source socket → pipe → destination socket, until the source ends and
/// the pipe is empty; then the destination's sending side is shut down.
///
/// `limit` bounds the bytes in the pipe (see the module docs).
async fn splice_one_way(
    from: PlainSocket<'_>,
    to: PlainSocket<'_>,
    pipe: &Pipe,
    limit: usize,
    counters: Counters<'_>,
    activity: &Activity,
) -> io::Result<()> {
    let (pipe_in, pipe_out) = (
        pipe.write.as_fd().as_raw_fd(),
        pipe.read.as_fd().as_raw_fd(),
    );
    let (source, destination) = (from.fd(), to.fd());
    let mut held: usize = 0;
    let mut source_ended = false;
    loop {
        if !source_ended && held < limit {
            let room = limit - held;
            let filled = if held == 0 {
                // The pipe is empty, so "would block" can only mean the socket has
                // nothing yet: wait for it.
                Some(
                    from.io(Interest::READABLE, || splice(source, pipe_in, room))
                        .await?,
                )
            } else {
                // Top up while the pipe still holds bytes, without waiting: here "would
                // block" may mean a full pipe rather than an empty socket, so it must not
                // clear the socket's readiness; draining comes next either way.
                match splice(source, pipe_in, room) {
                    Ok(n) => Some(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
                    Err(e) => return Err(e),
                }
            };
            match filled {
                Some(0) => source_ended = true,
                Some(n) => {
                    held += n;
                    counters.totals.read.fetch_add(n as u64, Ordering::Release);
                    counters
                        .totals
                        .peak_buffered
                        .fetch_max(held as u64, Ordering::Relaxed);
                    activity.touch();
                }
                None => {}
            }
        }
        if held > 0 {
            // The pipe holds bytes, so "would block" can only mean the socket is full.
            let n = to
                .io(Interest::WRITABLE, || splice(pipe_out, destination, held))
                .await?;
            held -= n;
            counters
                .totals
                .written
                .fetch_add(n as u64, Ordering::Release);
            counters.delivered.fetch_add(n as u64, Ordering::Relaxed);
            activity.touch();
        } else if source_ended {
            return to.shutdown_write();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn pipes_are_sized_as_asked_and_never_below_a_page() -> io::Result<()> {
        let pipe = Pipe::new(256 * 1024)?;
        assert_eq!(pipe.capacity(), 256 * 1024);
        let tiny = Pipe::new(1)?;
        assert!(tiny.capacity() >= 4096, "{}", tiny.capacity());
        Ok(())
    }

    #[test]
    fn the_limit_is_the_buffer_size_when_the_pipes_allow_it() -> io::Result<()> {
        assert_eq!(Splicer::new(16 * 1024)?.limit, 16 * 1024);
        // Smaller than a page: the pipe is a page, the bound stays what was asked.
        assert_eq!(Splicer::new(1000)?.limit, 1000);
        Ok(())
    }

    /// Two connected Unix socket pairs with a splicer between them: `client` talks to
    /// `far_target` through the relay's two inner ends.
    struct Bench {
        relay_client: UnixStream,
        relay_target: UnixStream,
        client: UnixStream,
        far_target: UnixStream,
    }

    fn socket_pairs() -> io::Result<Bench> {
        let (client, relay_client) = UnixStream::pair()?;
        let (relay_target, far_target) = UnixStream::pair()?;
        Ok(Bench {
            relay_client,
            relay_target,
            client,
            far_target,
        })
    }

    #[tokio::test]
    async fn bytes_go_both_ways_intact_counted_and_each_end_is_passed_on() -> io::Result<()> {
        let Bench {
            relay_client,
            relay_target,
            mut client,
            mut far_target,
        } = socket_pairs()?;
        let (up, down) = (FlowStats::default(), FlowStats::default());
        let (delivered_up, delivered_down) = (AtomicU64::new(0), AtomicU64::new(0));
        let activity = Activity::new();
        let request: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let answer: Vec<u8> = (0..1_000_000u32).map(|i| (i % 13) as u8).collect();
        let relaying = Splicer::new(64 * 1024)?.run(
            PlainSocket::Unix(&relay_client),
            PlainSocket::Unix(&relay_target),
            Counters {
                delivered: &delivered_up,
                totals: &up,
            },
            Counters {
                delivered: &delivered_down,
                totals: &down,
            },
            &activity,
        );
        // The client sends and ends its sending, then reads to the end; the target reads
        // to the end (it sees the client's end through the relay), then answers.
        let client_side = async {
            let (mut reader, mut writer) = client.split();
            let send = async {
                writer.write_all(&request).await?;
                writer.shutdown().await
            };
            let mut got = Vec::new();
            let (sent, received) = tokio::join!(send, reader.read_to_end(&mut got));
            sent?;
            received?;
            io::Result::Ok(got)
        };
        let target_side = async {
            let mut got = Vec::new();
            far_target.read_to_end(&mut got).await?;
            far_target.write_all(&answer).await?;
            far_target.shutdown().await?;
            io::Result::Ok(got)
        };
        let run = async { tokio::try_join!(relaying, client_side, target_side) };
        let ((), at_client, at_target) =
            tokio::time::timeout(std::time::Duration::from_secs(20), run)
                .await
                .unwrap_or_else(|_| panic!("the splice relay did not finish within 20 s"))?;
        assert!(at_target == request, "the target got other bytes than sent");
        assert!(
            at_client == answer,
            "the client got other bytes than answered"
        );
        assert_eq!(delivered_up.load(Ordering::Relaxed), request.len() as u64);
        assert_eq!(delivered_down.load(Ordering::Relaxed), answer.len() as u64);
        assert_eq!(up.read.load(Ordering::Relaxed), request.len() as u64);
        assert_eq!((up.buffered(), down.buffered()), (0, 0));
        assert!(up.peak_buffered.load(Ordering::Relaxed) <= 64 * 1024);
        assert!(up.peak_buffered.load(Ordering::Relaxed) > 0);
        Ok(())
    }

    #[tokio::test]
    async fn a_destination_that_does_not_read_stops_the_copy_at_the_bound() -> io::Result<()> {
        const LIMIT: usize = 8 * 1024;
        let Bench {
            relay_client,
            relay_target,
            client,
            far_target,
        } = socket_pairs()?;
        let (up, down) = (FlowStats::default(), FlowStats::default());
        let (delivered_up, delivered_down) = (AtomicU64::new(0), AtomicU64::new(0));
        let activity = Activity::new();
        let relaying = Splicer::new(LIMIT)?.run(
            PlainSocket::Unix(&relay_client),
            PlainSocket::Unix(&relay_target),
            Counters {
                delivered: &delivered_up,
                totals: &up,
            },
            Counters {
                delivered: &delivered_down,
                totals: &down,
            },
            &activity,
        );
        // Write until the client is pushed back for good (all buffers on the path full),
        // bounded in count; the target never reads.
        let chunk = vec![b'x'; 64 * 1024];
        let flood = async {
            let mut sent = 0usize;
            for _ in 0..4096 {
                match tokio::time::timeout(std::time::Duration::from_millis(300), async {
                    client.writable().await?;
                    client.try_write(&chunk)
                })
                .await
                {
                    Ok(Ok(n)) => sent += n,
                    Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Ok(sent),
                }
            }
            Err(io::Error::other("the client was never pushed back"))
        };
        let sent = tokio::select! {
            sent = flood => sent?,
            relayed = relaying => panic!("the relay ended early: {relayed:?}"),
        };
        assert!(sent > 0);
        let peak = up.peak_buffered.load(Ordering::Relaxed);
        assert!(peak <= LIMIT as u64, "one pipe held {peak} bytes > {LIMIT}");
        assert!(up.buffered() <= LIMIT as u64);
        assert!(
            up.read.load(Ordering::Relaxed) <= sent as u64,
            "more read than sent"
        );
        drop(far_target);
        Ok(())
    }
}
