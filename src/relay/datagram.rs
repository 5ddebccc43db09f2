//! Datagram relaying: one session per client address.
//!
//! A datagram from a new client opens a session: a socket of our own connected to the
//! target, so the target's replies come back on it and we know which client they are
//! for. A task per session carries replies back to its client and ends the session after
//! the idle timeout (rathole's design: the task removes its own entry). That socket
//! takes the target side's `--source` address, socket options and `--retry`, as a
//! stream relay's connection to the target does.
//!
//! The table of sessions is bounded twice: `--max-sessions` in all, and
//! `--max-conns-per-source` per source (an IPv4 address, an IPv6 /64). A new client always
//! gets a session: at a bound, the session idle longest (of its own source, or of all)
//! is closed to make room, as a NAT table does. A flood of source ports then churns the
//! flood's own sessions, or the oldest ones, instead of locking every newcomer out for the
//! whole idle timeout. Evictions are counted and logged at a bounded rate.
//!
//! Datagrams from senders `--allow` / `--deny` turn away are dropped before anything else
//! (no session, no hex dump), counted as denied and logged at a bounded rate.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::watch::Watchers;
use super::{FlowStats, RelayOptions, Shared};
use crate::access::gate::Gate;
use crate::access::{PerSourceLimit, source_of};
use crate::endpoint::PeerAddr;
use crate::idle::Activity;
use crate::obs::Event;
use crate::obs::hexdump::Direction;
use crate::obs::throttle::{Admit, LogThrottle};
use crate::transport::{DatagramSocket, MAX_DATAGRAM};

/// One client's session.
struct Session {
    /// Id for events and logs.
    id: u64,
    /// Our socket to the target, connected, used for this client only.
    target: DatagramSocket,
    /// Last datagram either way, for expiry and for choosing whom to evict.
    activity: Activity,
    /// Told when the session is evicted, so its task ends at once.
    evicted: Notify,
    /// Bytes delivered to the target for this client.
    to_target: AtomicU64,
    /// Bytes delivered back to the client.
    to_client: AtomicU64,
}

/// Open sessions by client address, with a count per source.
#[derive(Default)]
struct Table {
    /// The sessions.
    by_peer: HashMap<PeerAddr, Arc<Session>, KeyHasher>,
    /// Sessions per source (Unix-socket clients have no source and are not counted).
    per_source: HashMap<IpAddr, usize, KeyHasher>,
}

/// The session table's hasher, looked up with every datagram: foldhash, a few multiplies
/// per address where std's SipHash takes rounds over every byte.
///
/// The keys are addresses a hostile sender chooses, so the seeds come from the operating
/// system's randomness (drawn through std's `RandomState`, whose keys it supplies), not
/// from foldhash's own address-and-clock seed: colliding addresses cannot be worked out
/// in advance. Even a sender that found some could only slow lookups within a table of
/// at most `--max-sessions` entries.
#[derive(Clone)]
struct KeyHasher(foldhash::fast::SeedableRandomState);

impl Default for KeyHasher {
    fn default() -> KeyHasher {
        static SHARED: std::sync::OnceLock<foldhash::SharedSeed> = std::sync::OnceLock::new();
        let shared = SHARED.get_or_init(|| foldhash::SharedSeed::from_u64(random_u64()));
        KeyHasher(foldhash::fast::SeedableRandomState::with_seed(
            random_u64(),
            shared,
        ))
    }
}

impl std::hash::BuildHasher for KeyHasher {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// 64 bits the operating system's randomness decides: a SipHash under std's
/// `RandomState` keys, which come from it.
fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0u64)
}

/// Why a session was evicted, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crowded {
    /// The client's source holds its `--max-conns-per-source`.
    Source(IpAddr, usize),
    /// `--max-sessions` are open.
    Table(usize),
}

impl Table {
    /// Adds a session and counts it against its source.
    fn insert(&mut self, peer: PeerAddr, session: Arc<Session>) {
        if let Some(source) = peer.ip().map(source_of) {
            *self.per_source.entry(source).or_insert(0) += 1;
        }
        if let Some(old) = self.by_peer.insert(peer.clone(), session) {
            // Not expected (a peer is looked up before a session is opened), but never
            // leave a session running without its entry.
            old.evicted.notify_one();
            self.uncount(&peer);
        }
    }

    /// Removes `peer`'s session if it is still session `id` (an evicted session's task
    /// must not remove the newer session of the same peer). Returns it when removed.
    fn remove(&mut self, peer: &PeerAddr, id: u64) -> Option<Arc<Session>> {
        if self.by_peer.get(peer).is_none_or(|s| s.id != id) {
            return None;
        }
        let session = self.by_peer.remove(peer);
        self.uncount(peer);
        session
    }

    /// Gives back `peer`'s share of its source.
    fn uncount(&mut self, peer: &PeerAddr) {
        let Some(source) = peer.ip().map(source_of) else {
            return;
        };
        if let Some(count) = self.per_source.get_mut(&source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_source.remove(&source);
            }
        }
    }

    /// Whether a new session for `peer` needs room first, and which bound says so.
    fn crowded(&self, peer: &PeerAddr, max: usize, per_source: PerSourceLimit) -> Option<Crowded> {
        if let Some(ip) = peer.ip()
            && let Some(limit) = per_source.for_ip(ip)
        {
            let source = source_of(ip);
            if self.per_source.get(&source).copied().unwrap_or(0) >= limit {
                return Some(Crowded::Source(source, limit));
            }
        }
        (self.by_peer.len() >= max).then_some(Crowded::Table(max))
    }

    /// The session idle longest among those `crowded` concerns (ties: the older one).
    fn idlest(&self, crowded: Crowded) -> Option<(PeerAddr, Arc<Session>)> {
        let concerned = |peer: &PeerAddr| match crowded {
            Crowded::Source(source, _) => peer.ip().map(source_of) == Some(source),
            Crowded::Table(_) => true,
        };
        self.by_peer
            .iter()
            .filter(|(peer, _)| concerned(peer))
            .min_by_key(|(_, s)| (s.activity.last(), s.id))
            .map(|(peer, s)| (peer.clone(), Arc::clone(s)))
    }
}

/// The table, shared by the receive loop and the sessions' tasks. A std mutex: held only
/// for lookups, inserts and one scan, never across an await.
type Sessions = Arc<Mutex<Table>>;

/// What the receive loop keeps besides the table: ids and the log throttles.
#[derive(Default)]
struct Opener {
    /// The last session id handed out.
    last_id: u64,
    /// Log lines for evictions.
    evicted_log: LogThrottle,
    /// Log lines for sessions the target refused.
    failed_log: LogThrottle,
}

/// Receives client datagrams until shutdown and forwards each through its session.
pub(crate) async fn receive_loop(socket: DatagramSocket, shared: &Arc<Shared>) {
    let socket = Arc::new(socket);
    let sessions: Sessions = Arc::default();
    let mut opener = Opener::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut gate = Gate::default();
    let gate_config = shared.gate_config();
    // Registered once, and polled only when it fires, not again for every datagram.
    let shutdown = pin!(shared.shutdown.triggered());
    let mut stopping = Watchers::new(shutdown);
    loop {
        let received = match stopping.run(pin!(fast::recv_from(&socket, &mut buf))).await {
            Ok(received) => received,
            Err(()) => break,
        };
        let (len, peer) = match received {
            Ok((len, peer)) if gate.admit(&peer, "datagram", &gate_config) => (len, peer),
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!("receive failed: {e}");
                continue;
            }
        };
        let datagram = &buf[..len];
        if let Some(hex) = &shared.options.layers.hex {
            hex.datagram(Direction::Received, &peer.to_string(), datagram);
        }
        if let Some(capture) = &shared.options.capture {
            capture.datagram(Direction::Received, &peer.to_string(), datagram);
        }
        record_pcap(&socket, shared, &peer, Direction::Received, datagram);
        let existing = lock(&sessions).by_peer.get(&peer).cloned();
        let session = match existing {
            Some(session) => session,
            None => match opener.open(&peer, &socket, &sessions, shared).await {
                Some(session) => session,
                None => {
                    drop_datagram(shared);
                    continue;
                }
            },
        };
        session.activity.touch();
        match fast::send(&session.target, datagram).await {
            Ok(_) => {
                count_forwarded(&shared.stats.to_target, len);
                session.to_target.fetch_add(len as u64, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::debug!(session = session.id, %peer, "could not forward a datagram: {e}");
                drop_datagram(shared);
            }
        }
    }
}

/// A session's own socket to the target, with the target side's `--source`, socket
/// options and `--retry`. While the target is retried, the receive loop waits with it
/// (every session goes to that one target); datagrams queue in the socket's receive
/// buffer meanwhile.
async fn connect_target(shared: &Shared) -> crate::Result<DatagramSocket> {
    DatagramSocket::connect_with_options(&shared.options.target, &shared.options.connect).await
}

/// `--pcap`: one datagram between the relay's UDP listener and client `peer`.
fn record_pcap(
    listener: &DatagramSocket,
    shared: &Shared,
    peer: &PeerAddr,
    direction: Direction,
    datagram: &[u8],
) {
    // The listener's address is asked for only when there is a capture: it costs a
    // system call per datagram.
    let Some(pcap) = &shared.options.layers.pcap else {
        return;
    };
    if let (Some(local), PeerAddr::Ip(peer)) = (listener.local_ip(), peer) {
        pcap.datagram(local, *peer, direction, datagram);
    }
}

/// Counts a datagram that was received but not forwarded.
fn drop_datagram(shared: &Shared) {
    shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
}

/// Counts a forwarded datagram. A datagram is held only while it is being sent, so it is
/// counted as read and written together.
fn count_forwarded(flow: &FlowStats, len: usize) {
    flow.read.fetch_add(len as u64, Ordering::Release);
    flow.written.fetch_add(len as u64, Ordering::Release);
    flow.note_held(len as u64);
}

/// The table, even if a task panicked while holding it (the table itself stays
/// consistent: every critical section is a single insert, remove, lookup or scan).
fn lock(sessions: &Sessions) -> std::sync::MutexGuard<'_, Table> {
    sessions.lock().unwrap_or_else(|e| e.into_inner())
}

impl Opener {
    /// Opens a session for a new client, first evicting the session idle longest if a
    /// bound is reached; `None` if the target is unusable.
    async fn open(
        &mut self,
        peer: &PeerAddr,
        listener: &Arc<DatagramSocket>,
        sessions: &Sessions,
        shared: &Arc<Shared>,
    ) -> Option<Arc<Session>> {
        self.make_room(peer, sessions, shared);
        let target = tokio::select! {
            target = connect_target(shared) => target,
            () = shared.shutdown.triggered() => return None,
        };
        let target = match target {
            Ok(target) => target,
            Err(e) => {
                shared.stats.errors.fetch_add(1, Ordering::Relaxed);
                if let admit @ Admit::Log { .. } = self.failed_log.admit(Instant::now()) {
                    tracing::warn!(%peer, "cannot open a session to the target: {e}{}", admit.suffix());
                }
                return None;
            }
        };
        self.last_id += 1;
        let session = Arc::new(Session {
            id: self.last_id,
            target,
            activity: Activity::new(),
            evicted: Notify::new(),
            to_target: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
        });
        lock(sessions).insert(peer.clone(), Arc::clone(&session));
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        shared.stats.active.fetch_add(1, Ordering::Relaxed);
        shared.events.emit(Event::Connected {
            conn: session.id,
            peer,
        });
        let task = carry_replies(
            Arc::clone(&session),
            peer.clone(),
            Arc::clone(listener),
            Arc::clone(sessions),
            Arc::clone(shared),
        );
        shared.shutdown.spawn(task);
        Some(session)
    }

    /// Evicts sessions idle longest until `peer` fits under both bounds (one, normally).
    fn make_room(&mut self, peer: &PeerAddr, sessions: &Sessions, shared: &Shared) {
        let max = shared.options.max_sessions;
        let per_source = shared.options.access.per_source();
        let mut table = lock(sessions);
        while let Some(crowded) = table.crowded(peer, max, per_source) {
            let Some((old_peer, old)) = table.idlest(crowded) else {
                break;
            };
            table.remove(&old_peer, old.id);
            old.evicted.notify_one();
            shared.stats.evicted.fetch_add(1, Ordering::Relaxed);
            if let admit @ Admit::Log { .. } = self.evicted_log.admit(Instant::now()) {
                let why = match crowded {
                    Crowded::Source(source, n) => format!(
                        "its source {source} holds {n} sessions (--max-conns-per-source {n})"
                    ),
                    Crowded::Table(n) => format!("{n} sessions are open (--max-sessions {n})"),
                };
                tracing::info!(
                    "closed the session of {old_peer}, idle longest, for a new client {peer}: {why}{}",
                    admit.suffix()
                );
            }
        }
    }
}

/// Carries the target's replies back to the client until the session idles out, is
/// evicted or the relay stops, then closes the session.
async fn carry_replies(
    session: Arc<Session>,
    peer: PeerAddr,
    listener: Arc<DatagramSocket>,
    sessions: Sessions,
    shared: Arc<Shared>,
) {
    let idle = shared
        .options
        .idle_timeout
        .unwrap_or(RelayOptions::DEFAULT_SESSION_IDLE);
    let peer_text = peer.to_string();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Registered once for the session's life, and polled only when one of them fires,
    // not again for every reply.
    let watching = pin!(async {
        tokio::select! {
            () = session.activity.quiet_for(Some(idle)) => {
                format!("idle for {}", humantime::format_duration(idle))
            }
            () = session.evicted.notified() => {
                "evicted, idle longest, to make room for a new client".to_string()
            }
            () = shared.shutdown.triggered() => "relay shutting down".to_string(),
        }
    });
    let mut watchers = Watchers::new(watching);
    let reason = loop {
        let received = match watchers
            .run(pin!(fast::recv(&session.target, &mut buf)))
            .await
        {
            Ok(received) => received,
            Err(reason) => break reason,
        };
        let len = match received {
            Ok(len) => len,
            Err(e) => {
                // ICMP "port unreachable" from the target comes back as an error here.
                tracing::debug!(session = session.id, "target: {e}");
                continue;
            }
        };
        session.activity.touch();
        if let Some(hex) = &shared.options.layers.hex {
            hex.datagram(Direction::Sent, &peer_text, &buf[..len]);
        }
        if let Err(e) = fast::send_to(&listener, &buf[..len], &peer).await {
            tracing::debug!(session = session.id, %peer, "could not send a reply: {e}");
            shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            if let Some(capture) = &shared.options.capture {
                capture.datagram(Direction::Sent, &peer_text, &buf[..len]);
            }
            record_pcap(&listener, &shared, &peer, Direction::Sent, &buf[..len]);
            session.to_client.fetch_add(len as u64, Ordering::Relaxed);
            count_forwarded(&shared.stats.to_client, len);
        }
    };
    lock(&sessions).remove(&peer, session.id);
    shared.stats.active.fetch_sub(1, Ordering::Relaxed);
    shared.events.emit(Event::Closed {
        conn: session.id,
        peer: &peer,
        messages: 0,
        bytes_in: session.to_target.load(Ordering::Relaxed),
        bytes_out: session.to_client.load(Ordering::Relaxed),
        reason: &reason,
    });
}

/// The relay's per-datagram socket calls for UDP: receives through tokio's poll
/// functions, which keep one waker per socket and direction, rather than its async ones,
/// which queue a waiter for every call; sends tried at once, and waited for only when the
/// socket is full. Other sockets take [`DatagramSocket`]'s own calls.
///
/// A receive this way must have one task receiving on the socket (the waker slot is
/// shared): the receive loop on the listener, a session's task on its target socket.
mod fast {
    use std::io;

    use tokio::io::ReadBuf;

    use crate::endpoint::PeerAddr;
    use crate::transport::DatagramSocket;

    /// A datagram and its sender, on a socket only the calling task receives on.
    pub(super) async fn recv_from(
        socket: &DatagramSocket,
        buf: &mut [u8],
    ) -> io::Result<(usize, PeerAddr)> {
        let DatagramSocket::Udp(udp) = socket else {
            return socket.recv_from(buf).await;
        };
        let mut window = ReadBuf::new(buf);
        let from = std::future::poll_fn(|cx| udp.poll_recv_from(cx, &mut window)).await?;
        Ok((window.filled().len(), PeerAddr::Ip(from)))
    }

    /// A datagram from the connected peer, on a socket only the calling task receives on.
    pub(super) async fn recv(socket: &DatagramSocket, buf: &mut [u8]) -> io::Result<usize> {
        let DatagramSocket::Udp(udp) = socket else {
            return socket.recv(buf).await;
        };
        let mut window = ReadBuf::new(buf);
        std::future::poll_fn(|cx| udp.poll_recv(cx, &mut window)).await?;
        Ok(window.filled().len())
    }

    /// Sends to the connected peer.
    pub(super) async fn send(socket: &DatagramSocket, datagram: &[u8]) -> io::Result<usize> {
        if let DatagramSocket::Udp(udp) = socket {
            match udp.try_send(datagram) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                sent => return sent,
            }
        }
        socket.send(datagram).await
    }

    /// Sends to `peer` (any number of tasks may send on the socket).
    pub(super) async fn send_to(
        socket: &DatagramSocket,
        datagram: &[u8],
        peer: &PeerAddr,
    ) -> io::Result<usize> {
        if let (DatagramSocket::Udp(udp), PeerAddr::Ip(addr)) = (socket, peer) {
            match udp.try_send_to(datagram, *addr) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                sent => return sent,
            }
        }
        socket.send_to(datagram, peer).await
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    /// Each table draws its own seeds: the same address hashes differently in two of
    /// them (a collision found against one says nothing about the other).
    #[test]
    fn every_table_hashes_with_seeds_of_its_own() {
        let peer = PeerAddr::Ip("192.0.2.7:40000".parse().unwrap_or_else(|e| panic!("{e}")));
        let one = KeyHasher::default();
        let other = KeyHasher::default();
        assert_eq!(one.hash_one(&peer), one.hash_one(&peer));
        assert_ne!(one.hash_one(&peer), other.hash_one(&peer));
    }
}
