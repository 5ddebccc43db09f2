//! A shard of the per-message modes (reply, echo, discard; raw framing; no TLS, `--hex` or
//! PROXY header) runs on a thread of its own that waits in one epoll set: its listener,
//! its [`FastLane`] of connections, and a waker for shutdown. Nothing else is involved.
//!
//! Why not tokio's reactor: an epoll set watched by tokio's own epoll set runs the
//! kernel's wake-up callback twice for every event on every connection, once per set, on
//! the CPU of the client that sent it, and each wake-up also pays tokio's park and turn on
//! top of the lane's own `epoll_wait` (`bench/RESULTS.md`, the design choices table).
//! Here the thread sleeps in the lane's `epoll_wait` itself, as the C server does.
//!
//! Built with the `own-table` feature, the thread also takes a descriptor table of its
//! own, as a process of its own would ([`super::own_table`]): no reference counting per
//! system call, no table lock shared with the other shards.
//!
//! Its acceptor admits by the rules every accept loop shares
//! ([`crate::access::admission`]: slot before `accept` in wait mode, gate, count, back-off
//! after resource errors) and only waits its own way: the listener is one more
//! descriptor in the epoll set, and at the `--max-conns` limit (wait mode) a slot freed
//! by another thread is noticed within [`SLOT_RETRY`]. An admitted connection is answered
//! on the spot on this thread, then joins the lane. Shutdown closes the listener,
//! finishes pending answers within the grace period, then closes what is left.

use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Waker};

use super::conn_state::{self, FirstTurn};
use super::fast_lane::{FastLane, LISTENER, WAKER};
use super::own_table::{CallerCopies, Descriptors, Handover, ThreadBound};
use crate::access::admission::{Admission, Admitted, NextAccept, Outcome};
use crate::server::Shared;
use crate::shutdown::Shutdown;
use crate::transport::StdListener;

/// How soon a shard at the `--max-conns` limit (wait mode) looks for a free slot again.
const SLOT_RETRY: Duration = Duration::from_millis(5);
/// Connections accepted per turn before the lane's ready connections get theirs.
const ACCEPTS_PER_TURN: usize = 64;

/// Serves `listener` with a lane on a thread of its own until shutdown, then drains
/// (within `grace`). Gives the listener back when the lane cannot be set up, so the
/// caller can serve it with tasks instead.
pub(crate) async fn serve(
    listener: StdListener,
    shared: &Arc<Shared>,
    grace: Duration,
) -> Result<(), StdListener> {
    if let Some(thread) = start(listener, shared, grace)? {
        thread.finish(&shared.shutdown).await;
    }
    Ok(())
}

/// A lane shard's thread, started: what the caller keeps to hand it its descriptors and
/// to stop it ([`LaneThread::finish`]).
///
/// The thread reports through plain std channels and its join handle, never through a
/// runtime's waker: a waker it dropped could be the last reference to a task, whose
/// destructor would then close the runtime's descriptors on a thread whose table no
/// longer has them ([`super::own_table`]).
pub(crate) struct LaneThread {
    /// Wakes the thread's wait, for shutdown.
    waker: Waker,
    /// The caller's copies of what the thread took along, sent once the thread has a
    /// descriptor table of its own (`None` if it shares the process's).
    copies: std::sync::mpsc::Receiver<Option<CallerCopies>>,
    /// The thread, joined once it has drained.
    thread: std::thread::JoinHandle<()>,
}

/// Starts a lane shard's thread serving `listener`. Gives the listener back when the
/// lane cannot be set up (no epoll set, or not a per-message server); `None` when the
/// thread could not start (logged, and this shard's shutdown triggered).
pub(crate) fn start(
    listener: StdListener,
    shared: &Arc<Shared>,
    grace: Duration,
) -> Result<Option<LaneThread>, StdListener> {
    let Some(lane) = FastLane::for_server(shared) else {
        return Err(listener);
    };
    let waker = match prepare(&lane, &listener) {
        Ok(waker) => waker,
        Err(e) => {
            tracing::error!("cannot set up the server thread: {e}");
            shared.shutdown.trigger();
            return Ok(None);
        }
    };
    let handover = Handover::new(LaneParts {
        listener: Some(listener),
        lane,
    });
    let (copies_tx, copies) = std::sync::mpsc::sync_channel(1);
    let worker_shared = Arc::clone(shared);
    // A thread of its own rather than the runtime's blocking pool: the thread changes
    // its descriptor table, so it must not go back to a pool that would run other work
    // on it.
    let spawned = std::thread::Builder::new()
        .name("sockit-lane".into())
        .spawn(move || {
            let (parts, caller_copies) = handover.take_own();
            let _ = copies_tx.send(caller_copies);
            run(parts, &worker_shared, grace);
        });
    match spawned {
        Ok(thread) => Ok(Some(LaneThread {
            waker,
            copies,
            thread,
        })),
        Err(e) => {
            tracing::error!("cannot start the server thread: {e}");
            shared.shutdown.trigger();
            Ok(None)
        }
    }
}

impl LaneThread {
    /// Closes the caller's copies of what the thread took along (once the thread has a
    /// table of its own), waits for `shutdown`, wakes the thread for it and waits until
    /// the thread has drained.
    ///
    /// The thread's reports are awaited on a thread of the runtime's blocking pool,
    /// which shares the process's table (see [`LaneThread`]).
    pub(crate) async fn finish(self, shutdown: &Shutdown) {
        let LaneThread {
            waker,
            copies,
            thread,
        } = self;
        let mut done = tokio::task::spawn_blocking(move || {
            if let Ok(Some(copies)) = copies.recv() {
                copies.close();
            }
            // A thread that panicked has ended too.
            let _ = thread.join();
        });
        let finished = tokio::select! {
            () = shutdown.triggered() => false,
            _ = &mut done => true,
        };
        if !finished {
            if let Err(e) = waker.wake() {
                tracing::error!("cannot wake the server thread for shutdown: {e}");
            }
            let _ = done.await;
        }
    }
}

/// What a shard's thread serves with: its listener and its lane (the epoll set). Handed
/// over whole ([`Handover`]), so the descriptors its table keeps, and the caller's
/// copies it closes, are read from these owners.
struct LaneParts {
    /// The listener, until shutdown closes it (before the drain).
    listener: Option<StdListener>,
    /// The connections and the epoll set.
    lane: FastLane,
}

impl Descriptors for LaneParts {
    fn descriptors(&self) -> Vec<RawFd> {
        use std::os::fd::AsRawFd;
        let listener = self.listener.iter().map(AsRawFd::as_raw_fd);
        listener.chain(self.lane.descriptors()).collect()
    }
}

/// Registers the listener and a waker in the lane's epoll set.
fn prepare(lane: &FastLane, listener: &StdListener) -> io::Result<Waker> {
    use std::os::fd::AsRawFd;
    let fd = listener.as_raw_fd();
    lane.registry()
        .register(&mut SourceFd(&fd), LISTENER, Interest::READABLE)?;
    Waker::new(lane.registry(), WAKER)
}

/// The shard's loop: serve, accept, repeat until shutdown; then drain.
///
/// Shutdown is looked for only when the waker fired ([`serve`] wakes it when shutdown is
/// asked for, and an early wake stays pending until the first wait): asking the token
/// takes a lock, which the note's one-shot exchange would otherwise pay twice per
/// connection.
fn run(mut parts: ThreadBound<LaneParts>, shared: &Arc<Shared>, grace: Duration) {
    let LaneParts { listener, lane } = &mut *parts;
    let Some(listening) = listener.as_ref() else {
        return;
    };
    let mut acceptor = Acceptor::new(listening, shared, shared.ids.iter());
    loop {
        match lane.turn(acceptor.wake_by()) {
            Ok(woken) => {
                if woken.waker && shared.shutdown.is_triggered() {
                    break;
                }
                acceptor.pending |= woken.listener;
            }
            Err(e) => {
                tracing::error!("waiting for connections failed: {e}; stopping the server");
                shared.shutdown.trigger();
                break;
            }
        }
        acceptor.accept_ready(lane);
    }
    // Closing the listener first: new clients are refused while the rest drains (once
    // every thread's copy of it is closed).
    acceptor.stop(lane);
    *listener = None;
    drain(lane, grace);
}

/// After shutdown: pending answers go out within `grace`, then every connection ends.
fn drain(lane: &mut FastLane, grace: Duration) {
    lane.begin_drain();
    let deadline = Instant::now() + grace;
    while lane.len() > 0 && Instant::now() < deadline {
        if let Err(e) = lane.turn(Some(deadline)) {
            tracing::warn!("waiting for the last answers failed: {e}");
            break;
        }
    }
    let remaining = lane.len();
    if remaining > 0 {
        tracing::warn!(
            "{} still busy after the {} grace period; closing them",
            crate::obs::stats::counted(remaining as u64, "connection"),
            humantime::format_duration(grace)
        );
        lane.close_all();
    }
}

/// The listening side of a lane shard: the shared admission rules ([`Admission`]) and
/// this loop's own way of waiting (the listener's edge in the epoll set, a retry time).
struct Acceptor<'a, I> {
    listener: &'a StdListener,
    shared: &'a Arc<Shared>,
    /// Slot, gate, count, ids and back-off: the rules every accept loop applies.
    admission: Admission<'a, I>,
    /// The accept loop's read buffer, reused for every first message.
    scratch: Vec<u8>,
    /// The listener may have connections queued (its edge came, or a turn stopped early).
    pending: bool,
    /// When to try again after a pause (a resource error, or no free slot).
    retry_at: Option<Instant>,
}

impl<'a, I: Iterator<Item = u64>> Acceptor<'a, I> {
    /// The acceptor of `listener`, admitting by `shared`'s rules and numbering from
    /// `ids`.
    fn new(listener: &'a StdListener, shared: &'a Arc<Shared>, ids: I) -> Acceptor<'a, I> {
        let admission = Admission::new(
            shared.gate_config(),
            shared.slots.as_ref(),
            shared.options.limits.over_limit,
            &shared.stats.connections,
            ids,
        );
        Acceptor {
            listener,
            shared,
            admission,
            scratch: Vec::new(),
            // Clients may have queued before the thread started.
            pending: true,
            retry_at: None,
        }
    }

    /// When the shard's wait must end for the listener's sake: now, if connections are
    /// still queued from the last turn; at the end of a pause; else not at all.
    fn wake_by(&self) -> Option<Instant> {
        match self.retry_at {
            Some(at) => Some(at),
            None if self.pending => Some(Instant::now()),
            None => None,
        }
    }

    /// Takes the listener out of the epoll set (the caller then closes it).
    fn stop(self, lane: &FastLane) {
        use std::os::fd::AsRawFd;
        let fd = self.listener.as_raw_fd();
        // Closing the descriptor would not remove it while other threads hold copies.
        let _ = lane.registry().deregister(&mut SourceFd(&fd));
    }

    /// Accepts what is queued (up to [`ACCEPTS_PER_TURN`]), unless a pause is on.
    fn accept_ready(&mut self, lane: &mut FastLane) {
        if !self.pending {
            return;
        }
        if let Some(at) = self.retry_at {
            if Instant::now() < at {
                return;
            }
            self.retry_at = None;
        }
        for _ in 0..ACCEPTS_PER_TURN {
            if self.admission.reserve() == NextAccept::AtLimit {
                // The backlog holds the clients until a slot frees.
                self.retry_at = Some(Instant::now() + SLOT_RETRY);
                return;
            }
            match self.admission.admit(self.listener.accept_now()) {
                Outcome::Admitted(admitted) => self.take(admitted, lane),
                Outcome::TurnedAway | Outcome::Skipped => {}
                Outcome::NoneQueued => {
                    self.pending = false;
                    return;
                }
                Outcome::BackOff(pause) => {
                    self.retry_at = Some(Instant::now() + pause);
                    return;
                }
            }
        }
        // More may be queued: the lane's connections get their turn first.
    }

    /// An admitted connection: answered on the spot if its first message is there, then
    /// handed to the lane.
    fn take(&mut self, admitted: Admitted, lane: &mut FastLane) {
        let Admitted {
            stream,
            peer,
            slot,
            id,
        } = admitted;
        match conn_state::serve_now(&stream, &peer, id, self.shared, &mut self.scratch) {
            FirstTurn::Done => {}
            FirstTurn::Continue(state) => lane.adopt(stream, peer, id, slot, state),
        }
    }
}
