//! The admission rules of an accept loop, without its way of waiting: the one piece the
//! lane's epoll loop and the async [`super::acceptor`] (task engine, relay, proxy) share.
//!
//! Each round of either loop is the same two steps:
//!
//! 1. [`Admission::reserve`], before `accept`. With `--max-conns-mode wait` it takes a
//!    slot first (as mini-redis does); when none is free it says
//!    [`NextAccept::AtLimit`] and the loop accepts nothing, so the kernel backlog holds
//!    new clients until a slot frees. With no limit, or in `refuse` mode, nothing is
//!    taken and accepting may go ahead.
//! 2. [`Admission::admit`], with what `accept` gave: the gate judges the client (access
//!    rules, per-source limit, in `refuse` mode a slot taken now), an admitted one is
//!    counted and given its id, a turned-away one is closed at once (dropping its socket
//!    sends our FIN); a failed incoming connection is skipped; a resource error (out of
//!    descriptors) says how long to pause ([`Backoff`]).
//!
//! How the loop waits is its own: the async acceptor polls the listener and, at the
//! limit or in a pause, a timer or the semaphore; the lane waits in its epoll set and
//! looks for a free slot again after a short retry. Both steps are synchronous and, with
//! no limit and no rules, cost no allocation, system call or atomic operation beyond the
//! admitted-connections counter.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::OverLimit;
use super::gate::{Gate, GateConfig, Slot};
use crate::endpoint::PeerAddr;
use crate::transport::{Backoff, StdStream, is_per_connection};

/// A connection the gate let in, for the loop's handler.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The connection, not yet registered with a runtime or an epoll set (the handler
    /// registers it where it serves it).
    pub stream: StdStream,
    /// Who connected (the socket's peer; with `--proxy-protocol`, the load balancer).
    pub peer: PeerAddr,
    /// Its `--max-conns` permit and per-source share, held while it is served.
    pub slot: Slot,
    /// Its connection id, for its span and events.
    pub id: u64,
}

/// What the loop does after one `accept`.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Serve this connection.
    Admitted(Admitted),
    /// Denied, or over the limit in refuse mode: closed already, counted and logged.
    TurnedAway,
    /// This one incoming connection failed before it was accepted: accept again.
    Skipped,
    /// Nothing is queued (a non-blocking `accept` would block): wait for the listener.
    NoneQueued,
    /// Out of a resource (descriptors, memory): pause this long before accepting again,
    /// while the clients already in are served.
    BackOff(Duration),
}

/// Whether the loop may call `accept` now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NextAccept {
    /// Yes (with a slot held for the client, in wait mode).
    Open,
    /// Wait mode at the limit: no slot is free, so no `accept` until one frees
    /// ([`Admission::hold`] gives the loop's own wait for one back).
    AtLimit,
}

/// What is taken before `accept` for `--max-conns`.
#[derive(Debug)]
enum Reservation {
    /// No limit, or refuse mode: nothing (the gate takes the slot after `accept`).
    NotNeeded,
    /// Wait mode, holding no slot yet.
    Wanted,
    /// Wait mode: the slot held for the next client.
    Held(Slot),
}

/// One accept loop's admission: the gate with its log throttles, the `--max-conns`
/// reservation, the back-off after resource errors, the counter and the ids. Owned by
/// the loop, so nothing in it is shared but the counters and the semaphore.
pub(crate) struct Admission<'a, I> {
    /// The rules and limits the gate applies.
    config: GateConfig<'a>,
    /// `--max-conns`: the semaphore shared by every accept loop of the listener.
    slots: Option<&'a Arc<Semaphore>>,
    /// What is held before `accept` (wait mode).
    reservation: Reservation,
    /// This loop's gate (its log throttles).
    gate: Gate,
    /// The pause after resource errors on `accept`.
    backoff: Backoff,
    /// Counter of connections admitted (the `accepted` total of the summary and metrics).
    connections: &'a AtomicU64,
    /// Where admitted connections get their ids.
    ids: I,
}

impl<'a, I: Iterator<Item = u64>> Admission<'a, I> {
    /// The admission of a loop applying `config`, with `slots` for `--max-conns` (taken
    /// before `accept` when `over_limit` is wait), counting admitted connections in
    /// `connections` and numbering them from `ids`.
    pub(crate) fn new(
        config: GateConfig<'a>,
        slots: Option<&'a Arc<Semaphore>>,
        over_limit: OverLimit,
        connections: &'a AtomicU64,
        ids: I,
    ) -> Admission<'a, I> {
        let reservation = match (slots, over_limit) {
            (Some(_), OverLimit::Wait) => Reservation::Wanted,
            _ => Reservation::NotNeeded,
        };
        Admission {
            config,
            slots,
            reservation,
            gate: Gate::default(),
            backoff: Backoff::default(),
            connections,
            ids,
        }
    }

    /// Before `accept`: in wait mode, takes a slot for the next client if none is held
    /// and one is free. [`NextAccept::AtLimit`]: do not accept yet.
    pub(crate) fn reserve(&mut self) -> NextAccept {
        if let Reservation::Wanted = self.reservation {
            let Some(slots) = self.slots else {
                return NextAccept::Open;
            };
            match Arc::clone(slots).try_acquire_owned() {
                Ok(permit) => self.reservation = Reservation::Held(Slot::from(permit)),
                Err(_) => return NextAccept::AtLimit,
            }
        }
        NextAccept::Open
    }

    /// Wait mode: a slot the loop waited for after [`NextAccept::AtLimit`], held for the
    /// next client.
    pub(crate) fn hold(&mut self, slot: Slot) {
        self.reservation = Reservation::Held(slot);
    }

    /// The `--max-conns` semaphore a loop at the limit waits on.
    pub(crate) fn slots(&self) -> Option<&'a Arc<Semaphore>> {
        self.slots
    }

    /// After `accept`: what to do with what it gave (see [`Outcome`]).
    pub(crate) fn admit(&mut self, accepted: io::Result<(StdStream, PeerAddr)>) -> Outcome {
        match accepted {
            Ok((stream, peer)) => {
                self.backoff.reset();
                self.let_in(stream, peer)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Outcome::NoneQueued,
            Err(e) if is_per_connection(&e) => {
                tracing::debug!("a connection failed before it was accepted: {e}");
                Outcome::Skipped
            }
            Err(e) => Outcome::BackOff(self.backoff.after(&e)),
        }
    }

    /// An accepted connection through the gate, with the slot held for it (wait mode).
    fn let_in(&mut self, stream: StdStream, peer: PeerAddr) -> Outcome {
        let reserved = self.take_reserved();
        match self.gate.let_in(&peer, reserved, self.slots, &self.config) {
            Some(slot) => {
                self.connections.fetch_add(1, Ordering::Relaxed);
                let id = self.ids.next().unwrap_or_default();
                Outcome::Admitted(Admitted {
                    stream,
                    peer,
                    slot,
                    id,
                })
            }
            // Dropping the stream closes it.
            None => Outcome::TurnedAway,
        }
    }

    /// The slot held for the connection just accepted (wait mode); the next one needs
    /// a slot of its own.
    fn take_reserved(&mut self) -> Option<Slot> {
        if !matches!(self.reservation, Reservation::Held(_)) {
            return None;
        }
        match std::mem::replace(&mut self.reservation, Reservation::Wanted) {
            Reservation::Held(slot) => Some(slot),
            Reservation::Wanted | Reservation::NotNeeded => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;
    use crate::access::gate::{ClientAddress, SourceCounts};
    use crate::access::{AccessPolicy, PerSourceLimit, parse_range};
    use crate::shutdown::Shutdown;
    use crate::transport::StdListener;

    /// What a listener's [`GateConfig`] points at, owned by the test.
    struct Rules {
        access: AccessPolicy,
        max_conns: Option<usize>,
        slots: Option<Arc<Semaphore>>,
        denied: AtomicU64,
        refused: AtomicU64,
        connections: AtomicU64,
        shutdown: Shutdown,
        late_gate: Mutex<Gate>,
        sources: Arc<SourceCounts>,
    }

    impl Rules {
        fn new(access: AccessPolicy, max_conns: Option<usize>) -> Rules {
            Rules {
                access,
                max_conns,
                slots: max_conns.map(|n| Arc::new(Semaphore::new(n))),
                denied: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                connections: AtomicU64::new(0),
                shutdown: Shutdown::new(),
                late_gate: Mutex::default(),
                sources: SourceCounts::new(PerSourceLimit::default()),
            }
        }

        fn admission(&self, over_limit: OverLimit) -> Admission<'_, std::ops::RangeFrom<u64>> {
            let config = GateConfig {
                access: &self.access,
                max_conns: self.max_conns,
                client_address: ClientAddress::Socket,
                denied: &self.denied,
                refused: &self.refused,
                shutdown: &self.shutdown,
                late_gate: &self.late_gate,
                sources: &self.sources,
            };
            Admission::new(
                config,
                self.slots.as_ref(),
                over_limit,
                &self.connections,
                7..,
            )
        }

        /// The one `--max-conns` slot, taken by someone else.
        fn take_the_slot(&self) -> tokio::sync::OwnedSemaphorePermit {
            let slots = self.slots.as_ref().unwrap_or_else(|| panic!("no limit"));
            Arc::clone(slots)
                .try_acquire_owned()
                .unwrap_or_else(|e| panic!("{e}"))
        }

        fn count(counter: &AtomicU64) -> u64 {
            counter.load(Ordering::Relaxed)
        }
    }

    /// A non-blocking loopback listener and its address.
    fn listener() -> (StdListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        listener
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        (StdListener::Tcp(listener), addr)
    }

    /// A client whose connection is queued on the listener (the handshake is done).
    fn client(addr: SocketAddr) -> TcpStream {
        let client = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{e}"));
        client
    }

    /// Whether the server closed `client` (it reads the end of the stream).
    fn closed(mut client: TcpStream) -> bool {
        let mut buf = [0u8; 1];
        matches!(client.read(&mut buf), Ok(0))
    }

    #[test]
    fn an_admitted_connection_is_counted_and_numbered() {
        let rules = Rules::new(AccessPolicy::default(), None);
        let mut admission = rules.admission(OverLimit::Wait);
        let (listener, addr) = listener();
        let _client = client(addr);
        assert_eq!(admission.reserve(), NextAccept::Open);
        match admission.admit(listener.accept_now()) {
            Outcome::Admitted(admitted) => assert_eq!(admitted.id, 7),
            other => panic!("not admitted: {other:?}"),
        }
        assert_eq!(Rules::count(&rules.connections), 1);
        assert!(matches!(
            admission.admit(listener.accept_now()),
            Outcome::NoneQueued
        ));
    }

    #[test]
    fn wait_mode_at_the_limit_takes_no_accept_until_a_slot_frees() {
        let rules = Rules::new(AccessPolicy::default(), Some(1));
        let mut admission = rules.admission(OverLimit::Wait);
        let (listener, addr) = listener();
        let taken = rules.take_the_slot();
        let _waiting = client(addr);
        assert_eq!(admission.reserve(), NextAccept::AtLimit);
        assert_eq!(admission.reserve(), NextAccept::AtLimit, "still no slot");
        drop(taken);
        assert_eq!(admission.reserve(), NextAccept::Open);
        let admitted = match admission.admit(listener.accept_now()) {
            Outcome::Admitted(admitted) => admitted,
            other => panic!("the waiting client was not admitted: {other:?}"),
        };
        assert_eq!(
            admission.reserve(),
            NextAccept::AtLimit,
            "the admitted client holds the slot it was reserved"
        );
        drop(admitted);
        assert_eq!(admission.reserve(), NextAccept::Open);
        assert_eq!(Rules::count(&rules.refused), 0);
    }

    #[test]
    fn wait_mode_hands_a_slot_waited_for_to_the_next_client() {
        let rules = Rules::new(AccessPolicy::default(), Some(1));
        let mut admission = rules.admission(OverLimit::Wait);
        let (listener, addr) = listener();
        let taken = rules.take_the_slot();
        assert_eq!(admission.reserve(), NextAccept::AtLimit);
        admission.hold(Slot::from(taken));
        assert_eq!(admission.reserve(), NextAccept::Open);
        let _client = client(addr);
        assert!(matches!(
            admission.admit(listener.accept_now()),
            Outcome::Admitted(_)
        ));
    }

    #[test]
    fn refuse_mode_over_the_limit_accepts_closes_and_counts() {
        let rules = Rules::new(AccessPolicy::default(), Some(1));
        let mut admission = rules.admission(OverLimit::Refuse);
        let (listener, addr) = listener();
        let _taken = rules.take_the_slot();
        let extra = client(addr);
        assert_eq!(admission.reserve(), NextAccept::Open, "refuse mode accepts");
        assert!(matches!(
            admission.admit(listener.accept_now()),
            Outcome::TurnedAway
        ));
        assert_eq!(Rules::count(&rules.refused), 1);
        assert_eq!(Rules::count(&rules.connections), 0);
        assert!(closed(extra), "the refused client is closed at once");
    }

    #[test]
    fn a_denied_client_is_closed_and_counted() {
        let deny = parse_range("127.0.0.0/8").unwrap_or_else(|e| panic!("{e}"));
        let rules = Rules::new(AccessPolicy::new(Vec::new(), vec![deny]), Some(1));
        let mut admission = rules.admission(OverLimit::Wait);
        let (listener, addr) = listener();
        let denied = client(addr);
        assert_eq!(admission.reserve(), NextAccept::Open);
        assert!(matches!(
            admission.admit(listener.accept_now()),
            Outcome::TurnedAway
        ));
        assert_eq!(Rules::count(&rules.denied), 1);
        assert_eq!(Rules::count(&rules.connections), 0);
        assert!(closed(denied), "the denied client is closed at once");
        assert_eq!(
            admission.reserve(),
            NextAccept::Open,
            "the slot reserved for the denied client is free again"
        );
    }

    #[test]
    fn out_of_descriptors_backs_off_longer_each_time_and_a_failed_connection_is_skipped() {
        let rules = Rules::new(AccessPolicy::default(), None);
        let mut admission = rules.admission(OverLimit::Wait);
        let out_of_fds = || Err(io::Error::from_raw_os_error(libc::EMFILE));
        let first = match admission.admit(out_of_fds()) {
            Outcome::BackOff(pause) => pause,
            other => panic!("no back-off on EMFILE: {other:?}"),
        };
        assert!(first > Duration::ZERO);
        assert!(
            matches!(admission.admit(out_of_fds()), Outcome::BackOff(second) if second > first)
        );
        let aborted = io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert!(matches!(admission.admit(Err(aborted)), Outcome::Skipped));
        let would_block = io::Error::from(io::ErrorKind::WouldBlock);
        assert!(matches!(
            admission.admit(Err(would_block)),
            Outcome::NoneQueued
        ));
        assert_eq!(Rules::count(&rules.connections), 0);
    }
}
