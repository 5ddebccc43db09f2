//! The zero-copy copy path (Linux, `--copy splice`): when both sides of a relayed
//! connection are plain sockets (TCP or Unix stream, no TLS, no `--hex`), each direction
//! moves its bytes with splice(2) from the source socket into a kernel pipe and from the
//! pipe into the destination socket. The bytes never enter user space: the kernel passes
//! page references along, so the relay's CPU goes into TCP itself rather than into
//! copies. On loopback it carries less than the default buffered copy with large reads,
//! whatever the pipe size (`bench/RESULTS.md`, relay throughput), so it is an option to
//! measure on a real host, not the default.
//!
//! The contract is [`super::copy::pipe_both_ways`]'s, unchanged:
//!
//! * **Bounded memory.** The pipe is the direction's only buffer. It starts at Linux's
//!   default size (64 KiB, less for a smaller `--buffer`) and grows with `F_SETPIPE_SZ`
//!   towards `--buffer` once a transfer fills it, so quiet connections take little of
//!   the user's pipe quota. Each splice into it asks for no more than the room left
//!   under `--buffer`, counted in bytes (spliced in minus spliced out), so a direction
//!   never holds more than `--buffer` bytes whatever the kernel does with pipe slots.
//!   When the destination stops reading, the pipe stays full, the relay stops reading
//!   the source, and TCP pushes back on the sender.
//! * **Counts.** [`FlowStats::read`] grows on each splice in, [`FlowStats::written`] on
//!   each splice out; their difference is what the pipes hold now, and
//!   [`FlowStats::peak_buffered`] the most one pipe ever held.
//!
//! [`FlowStats::read`]: super::copy::FlowStats::read
//! [`FlowStats::written`]: super::copy::FlowStats::written
//! [`FlowStats::peak_buffered`]: super::copy::FlowStats::peak_buffered
//! * **Half-close.** When the source ends (splice returns 0) and the pipe is empty, the
//!   destination's sending side is shut down.
//! * **Idle tracking.** Every splice that moves bytes touches the [`Activity`].
//!
//! Readiness comes from tokio (`poll_read_ready` / `poll_write_ready` and `try_io` on the
//! tokio socket; polling readiness spends the task's cooperative budget, so a busy
//! connection cannot starve the others). If the pipes cannot be made (out of file
//! descriptors, pipe quota used up), [`Splicer::new`] says so and the caller copies
//! through buffers instead.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use rustix::pipe::{self, PipeFlags, SpliceFlags};
use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};

use super::copy::Counters;
use crate::idle::Activity;
use crate::transport::Stream;

/// Flags of every splice: never block on the pipe (the sockets are non-blocking
/// already), and move pages rather than copy them where the kernel can.
const SPLICE_FLAGS: SpliceFlags = SpliceFlags::NONBLOCK.union(SpliceFlags::MOVE);

/// The pipe size a new pipe gets from Linux (16 pages), unless the user's pipes already
/// use up `fs.pipe-user-pages-soft`, when it gets 2 pages only.
pub(crate) const DEFAULT_PIPE: usize = 64 * 1024;

/// A non-blocking kernel pipe: the in-kernel buffer of one direction.
///
/// It starts at the default size (or smaller, for a smaller `--buffer`) and grows towards
/// `--buffer` only once a connection fills it: a relay holding many quiet connections
/// then takes little of the user's pipe quota (`fs.pipe-user-pages-soft`), which counts
/// pipe sizes, not their contents.
#[derive(Debug)]
pub(crate) struct Pipe {
    /// The end bytes are spliced out of, into the destination socket.
    read: OwnedFd,
    /// The end bytes are spliced into, from the source socket.
    write: OwnedFd,
    /// The pipe's size in bytes (`F_GETPIPE_SZ`), at least one page.
    capacity: usize,
    /// A resize failed (quota, `fs.pipe-max-size`): keep the size there is.
    grown_enough: bool,
}

impl Pipe {
    /// A pipe of the default size, shrunk to `at_most` bytes (rounded up to a page) if
    /// that is smaller.
    ///
    /// # Errors
    /// When the pipe cannot be created (out of file descriptors).
    pub(crate) fn new(at_most: usize) -> io::Result<Pipe> {
        let (read, write) = pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        let mut pipe = Pipe {
            capacity: pipe_size(&write)?,
            read,
            write,
            grown_enough: false,
        };
        if at_most < pipe.capacity {
            // Shrinking an empty pipe only fails on a kernel without F_SETPIPE_SZ; the
            // byte count still bounds what it holds.
            let _ = pipe.resize(at_most);
        }
        Ok(pipe)
    }

    /// Bytes the pipe can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Grows the pipe towards `wanted` bytes: the largest of `wanted`, `wanted / 2`, …
    /// that the system grants, if more than the pipe has. After a failure it stops trying.
    fn grow_towards(&mut self, wanted: usize) {
        let mut asked = wanted;
        while asked > self.capacity {
            if self.resize(asked).is_ok() {
                return;
            }
            asked /= 2;
        }
        self.grown_enough = true;
    }

    /// `F_SETPIPE_SZ`: the kernel rounds `size` up to a power of two pages.
    fn resize(&mut self, size: usize) -> io::Result<()> {
        self.capacity = pipe::fcntl_setpipe_size(&self.write, size)?;
        Ok(())
    }
}

/// The size of a pipe in bytes.
fn pipe_size(pipe: &OwnedFd) -> io::Result<usize> {
    Ok(pipe::fcntl_getpipe_size(pipe)?)
}

/// splice(2) without offsets: `len` bytes at most from `from` to `to`.
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    Ok(pipe::splice(from, None, to, None, len, SPLICE_FLAGS)?)
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
    fn fd(self) -> BorrowedFd<'a> {
        match self {
            PlainSocket::Tcp(s) => s.as_fd(),
            PlainSocket::Unix(s) => s.as_fd(),
        }
    }

    /// Whether the socket is ready for `interest` (one of readable or writable), else
    /// registers the task for a wake-up. Spends the task's cooperative budget.
    fn poll_ready(self, cx: &mut Context<'_>, interest: Interest) -> Poll<io::Result<()>> {
        match (self, interest.is_readable()) {
            (PlainSocket::Tcp(s), true) => s.poll_read_ready(cx),
            (PlainSocket::Tcp(s), false) => s.poll_write_ready(cx),
            (PlainSocket::Unix(s), true) => s.poll_read_ready(cx),
            (PlainSocket::Unix(s), false) => s.poll_write_ready(cx),
        }
    }

    /// Runs `op`, a syscall on this socket; a `WouldBlock` from it clears tokio's
    /// readiness for `interest`.
    fn try_io<R>(self, interest: Interest, op: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self {
            PlainSocket::Tcp(s) => s.try_io(interest, op),
            PlainSocket::Unix(s) => s.try_io(interest, op),
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
    /// The most either direction holds: `--buffer`.
    limit: usize,
}

impl Splicer {
    /// Pipes for both directions, each holding at most `buffer_size` bytes.
    ///
    /// # Errors
    /// When a pipe cannot be created (out of file descriptors), or comes out smaller than
    /// both the default and `buffer_size` (the user's pipe quota is used up, so Linux
    /// hands out 2-page pipes that would splice a few KiB at a time): the caller then
    /// copies through buffers.
    pub(crate) fn new(buffer_size: usize) -> io::Result<Splicer> {
        let limit = buffer_size.max(1);
        let upstream = Pipe::new(limit)?;
        let downstream = Pipe::new(limit)?;
        let useful = limit.min(DEFAULT_PIPE);
        if upstream.capacity() < useful || downstream.capacity() < useful {
            return Err(io::Error::other(format!(
                "pipes of {} bytes only: the pipe quota (fs.pipe-user-pages-soft) is used up",
                upstream.capacity().min(downstream.capacity())
            )));
        }
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
        let upstream = splice_one_way(client, target, self.upstream, limit, to_target, activity);
        let downstream =
            splice_one_way(target, client, self.downstream, limit, to_client, activity);
        futures_util::future::try_join(upstream, downstream)
            .await
            .map(|_| ())
    }
}

/// One direction: source socket → pipe → destination socket, until the source ends and
/// the pipe is empty; then the destination's sending side is shut down.
///
/// Filling and draining overlap: the pipe takes in more from the source while the
/// destination is still busy with what it holds, up to `limit` bytes (see the module
/// docs), so the sender is not held up by every pause of the receiver.
async fn splice_one_way(
    from: PlainSocket<'_>,
    to: PlainSocket<'_>,
    pipe: Pipe,
    limit: usize,
    counters: Counters<'_>,
    activity: &Activity,
) -> io::Result<()> {
    let mut flow = Flow {
        source: from,
        destination: to,
        pipe,
        limit,
        held: 0,
        source_ended: false,
        pipe_full: false,
        counters,
        activity,
    };
    std::future::poll_fn(|cx| flow.poll_move(cx)).await?;
    to.shutdown_write()
}

/// The state of one direction between polls.
struct Flow<'a> {
    /// Where bytes come from.
    source: PlainSocket<'a>,
    /// Where they go.
    destination: PlainSocket<'a>,
    /// The pipe between them.
    pipe: Pipe,
    /// The most bytes the pipe may hold: `--buffer`, which the pipe grows towards.
    limit: usize,
    /// Bytes in the pipe now: spliced in minus spliced out.
    held: usize,
    /// The source has ended its data (splice returned 0).
    source_ended: bool,
    /// The last fill found no room in the pipe although `held < limit` (the kernel ran out
    /// of pipe slots, each holding a partial page); fill again once some bytes have left.
    pipe_full: bool,
    /// Where moved bytes are counted.
    counters: Counters<'a>,
    /// Noted on every move, for the idle timeout.
    activity: &'a Activity,
}

/// What one splice into the pipe did.
enum Filled {
    /// Bytes moved; 0 is the end of the source's data.
    Bytes(usize),
    /// Nothing moved although the pipe holds bytes: either the pipe has no free slot or
    /// the socket has nothing. Not a "would block", so the socket's readiness is kept.
    Stuck,
}

impl Flow<'_> {
    /// Moves bytes until neither side can go on; `Ready` once the source has ended and
    /// the pipe is empty.
    ///
    /// Returns `Pending` only after every side that could move has registered for a
    /// wake-up: a `WouldBlock` clears tokio's readiness, so the loop polls once more to
    /// register before giving up.
    fn poll_move(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut again = false;
            if !self.source_ended && !self.pipe_full && self.held < self.room_limit() {
                again |= self.poll_fill(cx)?;
            }
            if self.held > 0 {
                again |= self.poll_drain(cx)?;
            } else if self.source_ended {
                return Poll::Ready(Ok(()));
            }
            if !again {
                return Poll::Pending;
            }
        }
    }

    /// The most the pipe may hold now: `--buffer`, or the pipe's size while smaller.
    /// A pipe full to its size is grown first (a bulk transfer), as far as allowed.
    fn room_limit(&mut self) -> usize {
        if self.held >= self.pipe.capacity() {
            self.grow();
        }
        self.limit.min(self.pipe.capacity())
    }

    /// Grows the pipe towards `--buffer` unless it is there or cannot grow; whether it
    /// grew.
    fn grow(&mut self) -> bool {
        let before = self.pipe.capacity();
        if before < self.limit && !self.pipe.grown_enough {
            self.pipe.grow_towards(self.limit);
        }
        self.pipe.capacity() > before
    }

    /// Splices from the source into the pipe if the source is ready; whether to loop.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        if self.source.poll_ready(cx, Interest::READABLE)?.is_pending() {
            return Ok(false);
        }
        let room = self.room_limit() - self.held;
        let (source, pipe_in, held) = (self.source.fd(), self.pipe.write.as_fd(), self.held);
        let filled = self.source.try_io(Interest::READABLE, || {
            match splice(source, pipe_in, room) {
                Ok(n) => Ok(Filled::Bytes(n)),
                // With bytes in the pipe, "would block" may mean a full pipe: it must not
                // clear the socket's readiness. With an empty pipe it can only be the socket.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && held > 0 => Ok(Filled::Stuck),
                Err(e) => Err(e),
            }
        });
        match filled {
            Ok(Filled::Bytes(0)) => self.source_ended = true,
            Ok(Filled::Bytes(n)) => {
                self.held += n;
                let totals = self.counters.totals;
                totals.read.fetch_add(n as u64, Ordering::Release);
                totals.note_held(self.held as u64);
                self.activity.touch();
            }
            Ok(Filled::Stuck) => {
                // A pipe at least half full that takes no more is out of slots (each
                // holds a partial page): grow it if it may, else wait for the drain.
                if self.held * 2 >= self.pipe.capacity() && self.grow() {
                    return Ok(true);
                }
                self.pipe_full = true;
                return Ok(false);
            }
            // Readiness cleared: poll again to register for the next wake-up.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        Ok(true)
    }

    /// Splices from the pipe into the destination if it is ready; whether to loop.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        if self
            .destination
            .poll_ready(cx, Interest::WRITABLE)?
            .is_pending()
        {
            return Ok(false);
        }
        let (pipe_out, destination, held) =
            (self.pipe.read.as_fd(), self.destination.fd(), self.held);
        // The pipe holds bytes, so "would block" can only mean the socket is full.
        match self
            .destination
            .try_io(Interest::WRITABLE, || splice(pipe_out, destination, held))
        {
            // Nothing taken from a pipe that holds bytes: the loop would spin, so stop.
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "the destination took no bytes",
                ));
            }
            Ok(n) => {
                self.held -= n;
                self.pipe_full = false;
                self.counters
                    .totals
                    .written
                    .fetch_add(n as u64, Ordering::Release);
                self.counters
                    .delivered
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.activity.touch();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::copy::FlowStats;
    use std::sync::atomic::AtomicU64;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn pipes_start_at_the_default_or_smaller_and_grow_on_demand() -> io::Result<()> {
        let mut pipe = Pipe::new(1 << 20)?;
        assert_eq!(
            pipe.capacity(),
            DEFAULT_PIPE,
            "a new pipe takes no more quota than usual"
        );
        pipe.grow_towards(256 * 1024);
        assert_eq!(pipe.capacity(), 256 * 1024);
        assert_eq!(Pipe::new(16 * 1024)?.capacity(), 16 * 1024);
        let tiny = Pipe::new(1)?;
        assert!(tiny.capacity() >= 4096, "{}", tiny.capacity());
        Ok(())
    }

    #[test]
    fn the_limit_is_the_buffer_size() -> io::Result<()> {
        assert_eq!(Splicer::new(256 * 1024)?.limit, 256 * 1024);
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
        let peak = flood_a_destination_that_does_not_read(8 * 1024).await?;
        assert!(peak > 0, "nothing was spliced");
        Ok(())
    }

    #[tokio::test]
    async fn a_bulk_transfer_grows_the_pipe_up_to_the_bound() -> io::Result<()> {
        let peak = flood_a_destination_that_does_not_read(256 * 1024).await?;
        assert!(
            peak > DEFAULT_PIPE as u64,
            "the pipe never held more than its first {DEFAULT_PIPE} bytes: it did not grow ({peak})"
        );
        Ok(())
    }

    /// A client floods, the target never reads: returns the most one pipe held, after
    /// checking it never passed `LIMIT`.
    async fn flood_a_destination_that_does_not_read(limit: usize) -> io::Result<u64> {
        let Bench {
            relay_client,
            relay_target,
            client,
            far_target,
        } = socket_pairs()?;
        let (up, down) = (FlowStats::default(), FlowStats::default());
        let (delivered_up, delivered_down) = (AtomicU64::new(0), AtomicU64::new(0));
        let activity = Activity::new();
        let relaying = Splicer::new(limit)?.run(
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
        assert!(peak <= limit as u64, "one pipe held {peak} bytes > {limit}");
        assert!(up.buffered() <= limit as u64);
        assert!(
            up.read.load(Ordering::Relaxed) <= sent as u64,
            "more read than sent"
        );
        drop(far_target);
        Ok(peak)
    }
}
