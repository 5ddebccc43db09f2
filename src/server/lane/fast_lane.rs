//! The fast lane: connections of the per-message modes served from their shard's own
//! epoll set, without a task or a reactor registration each.
//!
//! Why it exists: with a task per connection, every message pays the runtime's wake-up,
//! scheduling and readiness bookkeeping (about 1,900 instructions under callgrind, against
//! 76 for the hand-written C epoll server). Here each shard registers its connections in
//! one edge-triggered epoll set, which its thread waits in ([`super::lane_shard`], with
//! the listener and a waker in the same set): one wake-up serves every ready connection
//! with a read, an answer and a write, as the C server does.
//!
//! Only connections whose whole state is a few fields come here: reply, echo and discard
//! with raw framing and no TLS, hex or PROXY layer (what [`super::conn_state::serve_now`]
//! serves). The rules are a connection task's ([`crate::server::message_loop`]):
//!
//! * an answer is written completely before the next read, so a client that does not read
//!   stops being read from and holds at most one reply;
//! * the idle timeout closes a silent client, and one that takes no byte of its reply for
//!   that long;
//! * `--close` ends a connection after its first reply;
//! * on shutdown, replies being written are finished (within the grace period), then every
//!   connection gets our FIN.
//!
//! One thing a task does not do: a bulk sender to `--discard` wakes the lane only per [`BULK_WAKE`] bytes (`SO_RCVLOWAT`), so a fast
//! stream costs one wake-up per large chunk rather than per segment; its tail below that
//! mark is read by the idle check and before the close.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Registry, Token};

use super::busy_poll::BusyPoll;
use super::conn_state::{ConnState, answer_now};
use crate::access::gate::Slot;
use crate::behaviour::Responder;
use crate::endpoint::{Delivery, PeerAddr};
use crate::error::Error;
use crate::obs::Tally;
use crate::server::end::{End, report_end};
use crate::server::{AfterReply, Shared, THE_CLIENT};
use crate::transport::StdStream;

/// Ready connections taken from the epoll set per wake-up.
const EVENTS_PER_TURN: usize = 256;
/// Reads one connection gets per turn before the others' turn comes (fairness against a
/// client that sends faster than it is served).
const READS_PER_TURN: usize = 16;
/// A discarded read this large marks a bulk sender (see [`Conn::wakes_in_bulk`]).
const BULK_READ: usize = 64 * 1024;
/// How much a bulk sender's connection collects before it wakes the lane.
const BULK_WAKE: usize = 128 * 1024;

/// One shard's connections served without tasks (see the module docs).
pub(crate) struct FastLane {
    /// The epoll set: the connections, and whatever else the shard's thread waits for
    /// (its listener, its waker), under tokens no descriptor can have.
    poll: mio::Poll,
    /// Where the ready connections are collected.
    events: Events,
    /// How often the idle timeout is checked, and when next; `None` without a timeout.
    sweep: Option<(Duration, Instant)>,
    /// `--busy-poll`: how long a wait polls before it sleeps; `None` when off.
    busy: Option<BusyPoll>,
    /// The connections and what serving them needs.
    conns: Conns,
}

/// What besides connections a lane's wait was woken by.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Woken {
    /// The listener has connections to accept.
    pub(crate) listener: bool,
    /// The waker fired: shutdown may have been asked for.
    pub(crate) waker: bool,
}

impl Woken {
    /// Notes an event's token: the listener's or the waker's here, a connection's
    /// descriptor handed back for serving.
    #[inline]
    fn note(&mut self, token: Token) -> Option<usize> {
        match token {
            LISTENER => self.listener = true,
            WAKER => self.waker = true,
            Token(fd) => return Some(fd),
        }
        None
    }
}

/// The token of the shard's listening socket in the epoll set.
pub(crate) const LISTENER: Token = Token(usize::MAX);
/// The token of the shard's waker (shutdown) in the epoll set.
pub(crate) const WAKER: Token = Token(usize::MAX - 1);

/// One connection in the lane.
struct Conn {
    stream: StdStream,
    peer: PeerAddr,
    id: u64,
    /// The `--max-conns` slot, released when the connection is dropped.
    _slot: Slot,
    /// Counts, the unsent part of an answer, and whether a reply went out.
    state: ConnState,
    /// When bytes last moved either way (the clock of the idle timeout).
    last_activity: Instant,
    /// Whether the client's FIN (or a hang-up) was reported: then a short read does not
    /// mean the socket is empty, since the end of the stream is still to be read and
    /// brings no further edge.
    read_closed: bool,
    /// Whether the epoll set reports this socket becoming writable (only while an answer
    /// is pending, so the steady state gets no write wake-ups).
    watching_writes: bool,
    /// Whether the connection wakes the lane only per [`BULK_WAKE`] bytes (`--discard`,
    /// once the client showed itself a bulk sender): one
    /// wake-up per large chunk instead of one per segment, which is most of the CPU a
    /// bulk discard costs. A tail below the mark is read when the idle check comes by and
    /// before the connection is closed, so no byte goes uncounted and no close is a reset.
    wakes_in_bulk: bool,
}

/// What serving a ready connection came to.
enum Progress {
    /// Everything that arrived is answered: wait for the next edge.
    Drained,
    /// The connection used its reads for this turn and may have more.
    More,
    /// An answer is waiting for the client to read.
    Blocked,
    /// The connection is over.
    Ended(End),
}

/// The connections by descriptor number, with what serving them needs.
struct Conns {
    shared: Arc<Shared>,
    /// The epoll set's registry, for adding and changing registrations.
    registry: Registry,
    /// Indexed by file descriptor: descriptors are small, dense and unique while open.
    by_fd: Vec<Option<Conn>>,
    /// How many entries of `by_fd` are occupied.
    len: usize,
    /// The read buffer, shared by every connection (answers are written before the next
    /// read, so no message outlives its turn).
    scratch: Vec<u8>,
    /// Connections that used their reads last turn and still have input.
    carry: Vec<usize>,
    /// Shutdown: no more reads, only pending answers are finished.
    draining: bool,
}

impl FastLane {
    /// A lane for this shard when its connections can use one (see the module docs);
    /// `None` otherwise, or when the system refuses an epoll set (then each connection
    /// gets a task).
    pub(crate) fn for_server(shared: &Arc<Shared>) -> Option<FastLane> {
        if !shared.options.waits_in_kernel(Delivery::Stream) {
            return None;
        }
        match FastLane::new(shared) {
            Ok(lane) => Some(lane),
            Err(e) => {
                tracing::debug!("no epoll set for the fast lane ({e}); one task per connection");
                None
            }
        }
    }

    fn new(shared: &Arc<Shared>) -> io::Result<FastLane> {
        let poll = mio::Poll::new()?;
        let registry = poll.registry().try_clone()?;
        let sweep = shared.options.limits.idle_timeout.map(|idle| {
            let period = (idle / 8).clamp(Duration::from_millis(10), Duration::from_secs(1));
            (period, Instant::now() + period)
        });
        Ok(FastLane {
            poll,
            events: Events::with_capacity(EVENTS_PER_TURN),
            sweep,
            busy: BusyPoll::new(shared.options.busy_poll),
            conns: Conns {
                shared: Arc::clone(shared),
                registry,
                by_fd: Vec::new(),
                len: 0,
                scratch: vec![0; shared.options.buffer_size.max(1)],
                carry: Vec::new(),
                draining: false,
            },
        })
    }

    /// Where the shard registers its listener ([`LISTENER`]) and waker ([`WAKER`]).
    pub(crate) fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// The descriptors the lane itself holds open (its epoll set, twice: the poller and
    /// the registry's copy), for the shard to close where another thread's table still
    /// has them ([`super::lane_shard`]).
    pub(crate) fn descriptors(&self) -> [std::os::fd::RawFd; 2] {
        [self.poll.as_raw_fd(), self.conns.registry.as_raw_fd()]
    }

    /// How many connections the lane holds.
    pub(crate) fn len(&self) -> usize {
        self.conns.len
    }

    /// Takes over a connection the accept loop could not finish on the spot.
    pub(crate) fn adopt(
        &mut self,
        stream: StdStream,
        peer: PeerAddr,
        id: u64,
        slot: Slot,
        mut state: ConnState,
    ) {
        state.announce(&self.conns.shared.events, id, &peer);
        let now = Instant::now();
        if self.conns.len == 0
            && let Some((period, next_sweep)) = self.sweep.as_mut()
        {
            // The sweep paused while the lane was empty; it starts over from here.
            *next_sweep = now + *period;
        }
        self.conns.adopt(Conn {
            stream,
            peer,
            id,
            _slot: slot,
            watching_writes: state.has_pending(),
            state,
            last_activity: now,
            read_closed: false,
            wakes_in_bulk: false,
        });
    }

    /// One turn of the shard's loop: waits for events until `deadline` at most (not at
    /// all while connections carried over from the last turn still have input), serves
    /// every ready connection, checks the idle timeout when due, and says whether the
    /// listener fired.
    ///
    /// # Errors
    /// When waiting on the epoll set fails (not expected for a plain descriptor).
    pub(crate) fn turn(&mut self, deadline: Option<Instant>) -> io::Result<Woken> {
        let mut wake_by = deadline;
        // An empty lane has nothing to sweep: its wait needs no timer (and no clock read),
        // which is the note's one-client-at-a-time exchange between two clients.
        if let Some((_, next_sweep)) = self.sweep.filter(|_| self.conns.len > 0) {
            wake_by = Some(wake_by.map_or(next_sweep, |d| d.min(next_sweep)));
        }
        let timeout = if self.conns.carry.is_empty() {
            // The clock is read only when there is a deadline to wait for.
            wake_by.map(|at| at.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        let mut woken = Woken::default();
        match self.wait(timeout) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(woken),
            Err(e) => return Err(e),
        }
        if self.conns.len == 0 && self.conns.carry.is_empty() {
            // Only the listener or the waker can have fired.
            for event in self.events.iter() {
                woken.note(event.token());
            }
            return Ok(woken);
        }
        let now = Instant::now();
        // Connections carried over first: they have waited a turn already.
        self.conns.serve_carried(now);
        for event in self.events.iter() {
            if let Some(fd) = woken.note(event.token()) {
                self.conns.serve(fd, event.is_read_closed(), now);
            }
        }
        if let Some((period, next_sweep)) = self.sweep.as_mut()
            && now >= *next_sweep
        {
            *next_sweep = now + *period;
            self.conns.close_idle(now);
        }
        Ok(woken)
    }

    /// Waits for events until `timeout`; with `--busy-poll`, a wait that would sleep polls
    /// for the current window first (see [`super::busy_poll`]).
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        let Some(busy) = self
            .busy
            .as_mut()
            .filter(|_| timeout != Some(Duration::ZERO))
        else {
            return self.poll.poll(&mut self.events, timeout);
        };
        let started = Instant::now();
        let window = timeout.map_or(busy.window(), |t| t.min(busy.window()));
        if !window.is_zero() {
            loop {
                self.poll.poll(&mut self.events, Some(Duration::ZERO))?;
                if !self.events.is_empty() {
                    return Ok(());
                }
                if started.elapsed() >= window {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        let left = timeout.map(|t| t.saturating_sub(started.elapsed()));
        self.poll.poll(&mut self.events, left)?;
        busy.slept(started.elapsed());
        Ok(())
    }

    /// Shutdown: no more reads; every connection without a pending answer ends now, the
    /// others once their answer is out (keep calling [`FastLane::turn`]).
    pub(crate) fn begin_drain(&mut self) {
        self.conns.draining = true;
        self.conns.end_all_idle();
    }

    /// Ends every connection that is left (the grace period is over).
    pub(crate) fn close_all(&mut self) {
        for fd in 0..self.conns.by_fd.len() {
            self.conns.close(fd, End::Shutdown);
        }
    }
}

impl Conns {
    fn adopt(&mut self, conn: Conn) {
        let fd = conn.stream.as_raw_fd();
        let interest = interest(conn.watching_writes);
        let Ok(index) = usize::try_from(fd) else {
            return;
        };
        if let Err(e) = self
            .registry
            .register(&mut SourceFd(&fd), Token(index), interest)
        {
            let end = End::Failed(Error::exchange(e, THE_CLIENT, "while watching"));
            self.finish(conn, end);
            return;
        }
        self.shared.stats.active.fetch_add(1, Ordering::Relaxed);
        if self.by_fd.len() <= index {
            self.by_fd.resize_with(index + 1, || None);
        }
        self.by_fd[index] = Some(conn);
        self.len += 1;
    }

    /// Serves the connections carried over from the last turn.
    fn serve_carried(&mut self, now: Instant) {
        if self.carry.is_empty() {
            return;
        }
        let carried = std::mem::take(&mut self.carry);
        for &fd in &carried {
            self.serve(fd, false, now);
        }
        // Keep the allocation for next time, unless serving carried more over.
        if self.carry.is_empty() {
            self.carry = carried;
            self.carry.clear();
        }
    }

    /// Serves one ready connection (`read_closed`: the event reported the client's FIN).
    /// A descriptor without a connection (closed earlier in
    /// this turn) is passed over.
    fn serve(&mut self, fd: usize, read_closed: bool, now: Instant) {
        let Some(conn) = self.by_fd.get_mut(fd).and_then(Option::as_mut) else {
            return;
        };
        conn.read_closed |= read_closed;
        let progress = advance(conn, &self.shared, &mut self.scratch, now, self.draining);
        let watch_writes = match progress {
            Progress::Ended(end) => return self.close(fd, end),
            Progress::More => {
                self.carry.push(fd);
                false
            }
            Progress::Drained => false,
            Progress::Blocked => true,
        };
        if watch_writes != conn.watching_writes {
            let raw = conn.stream.as_raw_fd();
            if let Err(e) =
                self.registry
                    .reregister(&mut SourceFd(&raw), Token(fd), interest(watch_writes))
            {
                let end = End::Failed(Error::exchange(e, THE_CLIENT, "while watching"));
                return self.close(fd, end);
            }
            conn.watching_writes = watch_writes;
        }
    }

    /// Ends the connections that passed the idle timeout: silent ones, and ones that did
    /// not read any of their reply.
    fn close_idle(&mut self, now: Instant) {
        let Some(limit) = self.shared.options.limits.idle_timeout else {
            return;
        };
        for fd in 0..self.by_fd.len() {
            let Some(conn) = self.by_fd[fd].as_mut() else {
                continue;
            };
            if now.saturating_duration_since(conn.last_activity) < limit {
                continue;
            }
            if conn.wakes_in_bulk {
                // Bytes below the wake-up mark wait unread: take them before calling the
                // client silent.
                match advance(conn, &self.shared, &mut self.scratch, now, false) {
                    Progress::Ended(end) => {
                        self.close(fd, end);
                        continue;
                    }
                    Progress::More => self.carry.push(fd),
                    Progress::Drained | Progress::Blocked => {}
                }
                if conn.last_activity == now {
                    continue;
                }
            }
            let end = if conn.state.has_pending() {
                End::NotReading(limit)
            } else {
                End::Idle(limit)
            };
            self.close(fd, end);
        }
    }

    /// Shutdown: ends every connection that is not in the middle of an answer.
    fn end_all_idle(&mut self) {
        for fd in 0..self.by_fd.len() {
            if matches!(&self.by_fd[fd], Some(conn) if !conn.state.has_pending()) {
                self.close(fd, End::Shutdown);
            }
        }
    }

    fn close(&mut self, fd: usize, end: End) {
        let Some(mut conn) = self.by_fd.get_mut(fd).and_then(Option::take) else {
            return;
        };
        self.len -= 1;
        self.shared.stats.active.fetch_sub(1, Ordering::Relaxed);
        if conn.wakes_in_bulk {
            take_the_tail(&mut conn, &self.shared, &mut self.scratch);
        }
        self.finish(conn, end);
    }

    /// Reports how the connection ended and closes it (closing takes it out of the set).
    fn finish(&self, mut conn: Conn, end: End) {
        if end.wants_shutdown() {
            let _ = conn.stream.shutdown_write();
        }
        report_end(&end, &conn.peer, conn.id, &conn.state.tally, &self.shared);
        self.shared.stats.absorb(&mut conn.state.tally);
    }
}

/// What a connection is registered for: input always, writability only while an answer
/// waits for the client.
fn interest(watch_writes: bool) -> Interest {
    if watch_writes {
        Interest::READABLE | Interest::WRITABLE
    } else {
        Interest::READABLE
    }
}

/// Serves one ready connection as far as it goes without waiting: first the rest of a
/// pending answer, then messages until the socket is empty, an answer does not fit, or
/// the connection's reads for this turn are used.
///
/// Always inlined into [`Conns::serve`], its only hot caller, with [`answer_now`]:
/// as calls they cost register saving and result passing on every message (callgrind
/// counts in `bench/RESULTS.md`).
#[inline(always)]
fn advance(
    conn: &mut Conn,
    shared: &Shared,
    scratch: &mut [u8],
    now: Instant,
    draining: bool,
) -> Progress {
    let options = &shared.options;
    let close_after_reply = options.after_reply == AfterReply::Close;
    if conn.state.has_pending() {
        match conn.state.send_pending(&conn.stream) {
            Err(end) => return Progress::Ended(end),
            Ok(0) => return Progress::Blocked,
            Ok(_) => conn.last_activity = now,
        }
        if conn.state.has_pending() {
            return Progress::Blocked;
        }
        if close_after_reply && conn.state.answered() {
            return Progress::Ended(End::AfterReply);
        }
    }
    if draining {
        return Progress::Ended(End::Shutdown);
    }
    let buffer_size = scratch.len();
    for _ in 0..READS_PER_TURN {
        let n = match conn.stream.read_now(scratch) {
            Ok(0) => return Progress::Ended(End::PeerClosed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Progress::Drained,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                let error = Error::exchange(e, THE_CLIENT, "while reading");
                return Progress::Ended(End::Failed(error));
            }
        };
        conn.last_activity = now;
        let answered = answer_now(
            &conn.stream,
            &scratch[..n],
            &conn.peer,
            conn.id,
            shared,
            &mut conn.state,
        );
        if let Err(end) = answered {
            return Progress::Ended(end);
        }
        if n >= BULK_READ && !conn.wakes_in_bulk && may_wake_in_bulk(shared) {
            // Best effort: without it the kernel wakes the lane per segment, which is only slower.
            conn.wakes_in_bulk = conn.stream.set_wake_threshold(BULK_WAKE).is_ok();
        }
        if conn.state.tally.messages >= Tally::FLUSH_EVERY {
            shared.stats.absorb(&mut conn.state.tally);
        }
        if conn.state.has_pending() {
            return Progress::Blocked;
        }
        if close_after_reply && conn.state.answered() {
            return Progress::Ended(End::AfterReply);
        }
        if n < buffer_size && !conn.read_closed {
            // A short read emptied the socket; new input brings a new edge.
            return Progress::Drained;
        }
    }
    Progress::More
}

/// Whether a bulk sender's connection may wake the lane per large chunk only: when its
/// bytes are discarded, so no reply and no message line waits on each read.
fn may_wake_in_bulk(shared: &Shared) -> bool {
    matches!(shared.options.responder, Responder::Discard)
}

/// Reads what a bulk connection left below its wake-up mark, before it is closed: the
/// bytes are counted, and a close with unread input would reset the connection.
/// Bounded, so a client still sending at full speed cannot hold the lane.
fn take_the_tail(conn: &mut Conn, shared: &Shared, scratch: &mut [u8]) {
    for _ in 0..READS_PER_TURN {
        match conn.stream.read_now(scratch) {
            Ok(n) if n > 0 => {
                let tail = &scratch[..n];
                // Discard answers nothing, so this only counts the bytes.
                let _ = answer_now(
                    &conn.stream,
                    tail,
                    &conn.peer,
                    conn.id,
                    shared,
                    &mut conn.state,
                );
            }
            Ok(_) | Err(_) => return,
        }
    }
}

/// The state machine of a lane connection, driven by real loopback sockets: what the
/// client sends and how it closes, against what the lane answers and how it counts.
#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{Shutdown as Direction, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::FastLane;
    use crate::access::gate::Slot;
    use crate::behaviour::Responder;
    use crate::endpoint::{Endpoint, PeerAddr};
    use crate::obs::{StatsBoard, Summary};
    use crate::server::lane::conn_state::ConnState;
    use crate::server::{ServeOptions, Shared};
    use crate::transport::StdStream;

    /// The longest any test waits for the lane to get somewhere.
    const PATIENCE: Duration = Duration::from_secs(10);

    /// A lane with one connection in it, and the client at the other end.
    struct Rig {
        lane: FastLane,
        client: TcpStream,
        board: StatsBoard,
        /// What the client has read so far.
        received: Vec<u8>,
        /// Whether the client has read the lane's FIN.
        eof: bool,
    }

    impl Rig {
        /// An echo lane (reads of at most `buffer_size` bytes, `idle` timeout) holding
        /// one accepted loopback connection.
        fn echo(buffer_size: usize, idle: Option<Duration>) -> Rig {
            let mut options = ServeOptions::seed(&Endpoint::seed_tcp());
            options.responder = Responder::Echo;
            options.buffer_size = buffer_size;
            options.limits.idle_timeout = idle;
            let (shared, board) = Shared::for_test(options);
            let mut lane = FastLane::new(&shared).unwrap_or_else(|e| panic!("epoll: {e}"));
            let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
            let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
            let client = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
            client
                .set_nonblocking(true)
                .unwrap_or_else(|e| panic!("{e}"));
            let (server, peer) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
            server
                .set_nonblocking(true)
                .unwrap_or_else(|e| panic!("{e}"));
            let stream = StdStream::Tcp(server);
            lane.adopt(
                stream,
                PeerAddr::Ip(peer),
                1,
                Slot::default(),
                ConnState::default(),
            );
            Rig {
                lane,
                client,
                board,
                received: Vec::new(),
                eof: false,
            }
        }

        /// Sends `bytes` from the client (small enough for the socket buffer).
        fn send(&mut self, bytes: &[u8]) {
            self.client
                .write_all(bytes)
                .unwrap_or_else(|e| panic!("{e}"));
        }

        /// Takes what has reached the client, without waiting.
        fn collect(&mut self) {
            let mut buf = [0u8; 4096];
            loop {
                match self.client.read(&mut buf) {
                    Ok(0) => {
                        self.eof = true;
                        return;
                    }
                    Ok(n) => self.received.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                    Err(e) => panic!("the client's read failed: {e}"),
                }
            }
        }

        /// Turns the lane (and collects the client's input) until `done`, within
        /// [`PATIENCE`].
        fn turn_until(&mut self, what: &str, done: impl Fn(&Rig) -> bool) {
            let give_up = Instant::now() + PATIENCE;
            while !done(self) {
                assert!(Instant::now() < give_up, "the lane never got to: {what}");
                let wake_by = Instant::now() + Duration::from_millis(20);
                self.lane
                    .turn(Some(wake_by))
                    .unwrap_or_else(|e| panic!("{e}"));
                self.collect();
            }
        }

        fn summary(&self) -> Summary {
            self.board.summary()
        }
    }

    #[test]
    fn reads_shorter_than_a_message_are_each_answered_as_they_come() {
        let mut rig = Rig::echo(1024, None);
        rig.send(b"hel");
        rig.turn_until("the first piece echoed", |r| r.received == b"hel");
        rig.send(b"lo");
        rig.turn_until("the second piece echoed", |r| r.received == b"hello");
        assert_eq!(rig.lane.len(), 1, "the connection stays open");
    }

    #[test]
    fn input_longer_than_the_buffer_is_read_and_answered_in_buffer_sized_messages() {
        let mut rig = Rig::echo(4, None);
        rig.send(b"hello world!");
        rig.turn_until("everything echoed", |r| r.received == b"hello world!");
        rig.client
            .shutdown(Direction::Write)
            .unwrap_or_else(|e| panic!("{e}"));
        rig.turn_until("the connection closed", |r| r.lane.len() == 0 && r.eof);
        let summary = rig.summary();
        assert_eq!((summary.messages, summary.replies), (3, 3));
        assert_eq!((summary.bytes_in, summary.bytes_out), (12, 12));
        assert_eq!(summary.errors, 0);
    }

    #[test]
    fn a_message_sent_with_msg_more_and_the_fin_is_answered_then_closed() {
        let mut rig = Rig::echo(1024, None);
        let message = b"hello tcp server";
        // MSG_MORE holds the bytes back until the FIN, so message and FIN arrive in one
        // segment: one edge, after which a short read does not mean the socket is empty.
        let sent = rustix::net::send(&rig.client, message, rustix::net::SendFlags::MORE);
        assert_eq!(sent.ok(), Some(message.len()));
        rig.client
            .shutdown(Direction::Write)
            .unwrap_or_else(|e| panic!("{e}"));
        rig.turn_until("the echo, then the FIN", |r| r.eof);
        assert_eq!(rig.received, message);
        assert_eq!(rig.lane.len(), 0);
        let summary = rig.summary();
        assert_eq!(
            (summary.messages, summary.replies, summary.errors),
            (1, 1, 0)
        );
    }

    #[test]
    fn a_reset_ends_the_connection_as_the_clients_error() {
        let mut rig = Rig::echo(1024, None);
        rig.send(b"ping");
        rig.turn_until("the echo", |r| r.received == b"ping");
        socket2::SockRef::from(&rig.client)
            .set_linger(Some(Duration::ZERO))
            .unwrap_or_else(|e| panic!("{e}"));
        // Closing with a zero linger sends a reset instead of a FIN.
        let Rig {
            lane,
            client,
            board,
            ..
        } = rig;
        drop(client);
        let mut lane = lane;
        let give_up = Instant::now() + PATIENCE;
        while lane.len() > 0 {
            assert!(
                Instant::now() < give_up,
                "the reset never ended the connection"
            );
            lane.turn(Some(Instant::now() + Duration::from_millis(20)))
                .unwrap_or_else(|e| panic!("{e}"));
        }
        let summary = board.summary();
        assert_eq!(summary.errors, 1, "a reset counts as an error");
        assert_eq!(summary.messages, 1);
    }

    #[test]
    fn a_silent_client_is_closed_by_the_idle_timeout_with_a_fin() {
        let mut rig = Rig::echo(1024, Some(Duration::from_millis(30)));
        rig.turn_until("the idle close", |r| r.lane.len() == 0 && r.eof);
        let summary = rig.summary();
        assert_eq!(summary.idle_closed, 1);
        assert_eq!(summary.errors, 0, "an idle close is not an error");
    }
}
