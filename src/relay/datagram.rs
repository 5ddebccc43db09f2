//! Datagram relaying: one session per client address.
//!
//! A datagram from a new client opens a session: a socket of our own connected to the
//! target, so the target's replies come back on it and we know which client they are
//! for. A task per session carries replies back to its client and ends the session after
//! the idle timeout (rathole's design: the task removes its own entry). The number of
//! sessions is capped; past the cap, datagrams from new clients are dropped and counted
//! until a session expires, so a flood of source addresses cannot exhaust descriptors.
//!
//! Datagrams from senders `--allow` / `--deny` turn away are dropped before anything else
//! (no session, no hex dump), counted as denied and logged at a bounded rate.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{FlowStats, RelayOptions, Shared};
use crate::access::gate::Gate;
use crate::idle::Activity;
use crate::obs::Event;
use crate::obs::hexdump::Direction;
use crate::transport::{DatagramSocket, MAX_DATAGRAM, PeerAddr};

/// One client's session.
struct Session {
    /// Id for events and logs.
    id: u64,
    /// Our socket to the target, connected, used for this client only.
    target: DatagramSocket,
    /// Last datagram either way, for expiry.
    activity: Activity,
    /// Bytes delivered to the target for this client.
    to_target: AtomicU64,
    /// Bytes delivered back to the client.
    to_client: AtomicU64,
}

/// Open sessions by client address. A std mutex: held only for lookups and inserts,
/// never across an await.
type Sessions = Arc<Mutex<HashMap<PeerAddr, Arc<Session>>>>;

/// Receives client datagrams until shutdown and forwards each through its session.
pub(crate) async fn receive_loop(socket: DatagramSocket, shared: &Arc<Shared>) {
    let socket = Arc::new(socket);
    let sessions: Sessions = Arc::default();
    let mut next_id = 0;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut gate = Gate::default();
    loop {
        let Some((len, peer)) = gate.next_admitted(&socket, &mut buf, &**shared).await else {
            break;
        };
        let datagram = &buf[..len];
        if let Some(hex) = &shared.options.layers.hex {
            hex.datagram(Direction::Received, &peer.to_string(), datagram);
        }
        let existing = lock(&sessions).get(&peer).cloned();
        let session = match existing {
            Some(session) => session,
            None => {
                next_id += 1;
                match open_session(next_id, &peer, &socket, &sessions, shared).await {
                    Some(session) => session,
                    None => {
                        drop_datagram(shared);
                        continue;
                    }
                }
            }
        };
        session.activity.touch();
        match session.target.send(datagram).await {
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

/// Counts a datagram that was received but not forwarded.
fn drop_datagram(shared: &Shared) {
    shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
}

/// Counts a forwarded datagram. A datagram is held only while it is being sent, so it is
/// counted as read and written together.
fn count_forwarded(flow: &FlowStats, len: usize) {
    flow.read.fetch_add(len as u64, Ordering::Release);
    flow.written.fetch_add(len as u64, Ordering::Release);
    flow.peak_buffered.fetch_max(len as u64, Ordering::Relaxed);
}

/// The map, even if a task panicked while holding it (the map itself stays consistent:
/// every critical section is a single insert, remove or lookup).
fn lock(sessions: &Sessions) -> std::sync::MutexGuard<'_, HashMap<PeerAddr, Arc<Session>>> {
    sessions.lock().unwrap_or_else(|e| e.into_inner())
}

/// Opens a session for a new client, or `None` at the cap or if the target is unusable.
async fn open_session(
    id: u64,
    peer: &PeerAddr,
    listener: &Arc<DatagramSocket>,
    sessions: &Sessions,
    shared: &Arc<Shared>,
) -> Option<Arc<Session>> {
    let max = shared.options.max_sessions;
    if lock(sessions).len() >= max {
        tracing::debug!(%peer, "{max} sessions open (--max-sessions): dropping a datagram from a new client");
        return None;
    }
    let target = match DatagramSocket::connect(&shared.options.target).await {
        Ok(target) => target,
        Err(e) => {
            shared.stats.errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(%peer, "cannot open a session to the target: {e}");
            return None;
        }
    };
    let session = Arc::new(Session {
        id,
        target,
        activity: Activity::new(),
        to_target: AtomicU64::new(0),
        to_client: AtomicU64::new(0),
    });
    lock(sessions).insert(peer.clone(), Arc::clone(&session));
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    shared.stats.active.fetch_add(1, Ordering::Relaxed);
    shared.events.emit(Event::Connected { conn: id, peer });
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

/// Carries the target's replies back to the client until the session idles out or the
/// relay stops, then closes the session.
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
    let reason = loop {
        let received = tokio::select! {
            received = session.target.recv(&mut buf) => received,
            () = session.activity.quiet_for(Some(idle)) => {
                break format!("idle for {}", humantime::format_duration(idle));
            }
            () = shared.shutdown.triggered() => break "relay shutting down".to_string(),
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
        if let Err(e) = listener.send_to(&buf[..len], &peer).await {
            tracing::debug!(session = session.id, %peer, "could not send a reply: {e}");
            shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            session.to_client.fetch_add(len as u64, Ordering::Relaxed);
            count_forwarded(&shared.stats.to_client, len);
        }
    };
    lock(&sessions).remove(&peer);
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
