//! The door every client of a listener (`serve` or `relay`) passes before it is served:
//! access rules, then the connection limit when it refuses rather than waits.
//!
//! Where the rules are applied depends on where the client's address is known: at
//! `accept` (or receive) for direct clients, before anything is spawned; with
//! `--proxy-protocol` only once the header names the real client, in the connection's
//! task ([`Guarded::admit_late`]). The socket's peer is then the load balancer, and
//! judging it would deny (or allow) everyone at once.
//!
//! The policy itself is [`crate::access`] (pure); this module applies it for whatever
//! listener implements [`Guarded`]: counts each client turned away, and logs it through a
//! [`LogThrottle`] so a flood (a port scan, a UDP sender spraying datagrams) costs a few
//! lines per second, not one per packet. One implementation for both commands keeps the
//! flags, the counters and the log lines the same in `serve` and `relay`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;

use super::AccessPolicy;
use crate::endpoint::Endpoint;
use crate::obs::throttle::{Admit, LogThrottle};
use crate::shutdown::Shutdown;
use crate::transport::{DatagramSocket, PeerAddr};

/// What a listener's shared state tells the gate: its rules, its limit, where to count
/// the clients turned away. Implemented by the server's and the relay's shared state.
pub(crate) trait Guarded {
    /// The `--allow` / `--deny` rules.
    fn access(&self) -> &AccessPolicy;
    /// `--max-conns`, named in the refusal line.
    fn max_conns(&self) -> Option<usize>;
    /// Whether connections start with a PROXY header, so the socket's peer is a load
    /// balancer and the check waits for the real address.
    fn proxied(&self) -> bool;
    /// Counter of clients turned away by `--allow` / `--deny`.
    fn denied(&self) -> &AtomicU64;
    /// Counter of clients turned away over `--max-conns`.
    fn refused(&self) -> &AtomicU64;
    /// Stop signal, which ends a wait for a slot.
    fn shutdown(&self) -> &Shutdown;
    /// Rate-limited access logging for checks made after a PROXY header, in connection
    /// tasks (the accept loop's own [`Gate`] is not shared).
    fn late_gate(&self) -> &Mutex<Gate>;

    /// The access check for a client whose address a PROXY header revealed, made in its
    /// connection task; counted and logged (rate-limited across all connections) as at
    /// accept.
    fn admit_late(&self, peer: &PeerAddr) -> bool
    where
        Self: Sized,
    {
        if self.access().is_open() {
            return true;
        }
        // A poisoned lock only means another connection panicked mid-log; the throttle
        // state is still usable.
        let mut gate = self
            .late_gate()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        gate.admit(peer, "connection", self)
    }
}

/// The gate of one accept or receive loop (owned by that loop, so no locking).
#[derive(Debug, Default)]
pub(crate) struct Gate {
    /// Log lines for clients turned away by `--allow` / `--deny`.
    denied_log: LogThrottle,
    /// Log lines for clients turned away over `--max-conns`.
    refused_log: LogThrottle,
}

/// A slot in the connection limit; `None` inside when there is no limit.
pub(crate) type Slot = Option<OwnedSemaphorePermit>;

impl Gate {
    /// Whether a freshly accepted connection may proceed: [`Gate::admit`] on its socket
    /// peer, unless `--proxy-protocol` defers the judgement to the real client's address.
    pub(crate) fn admit_connection(&mut self, peer: &PeerAddr, guarded: &impl Guarded) -> bool {
        guarded.proxied() || self.admit(peer, "connection", guarded)
    }

    /// Whether `peer` may be served. A denied client is counted and logged (rate-limited);
    /// the caller closes it (stream) or drops its datagram.
    pub(crate) fn admit(&mut self, peer: &PeerAddr, what: &str, guarded: &impl Guarded) -> bool {
        let access = guarded.access();
        if access.is_open() {
            return true;
        }
        let verdict = access.check(peer);
        if verdict.is_allowed() {
            return true;
        }
        guarded.denied().fetch_add(1, Ordering::Relaxed);
        if let admit @ Admit::Log { .. } = self.denied_log.admit(Instant::now()) {
            tracing::info!("denied {what} from {peer}: {verdict}{}", admit.suffix());
        }
        false
    }

    /// Lets an accepted connection in, or not (`None`: close it; it has been counted and
    /// logged). Its address must pass the rules (unless `--proxy-protocol` defers that to
    /// the real client's address), and it needs a slot in `--max-conns`: the one reserved
    /// before `accept` ([`reserve_slot`], mode wait), or one taken now (mode refuse).
    pub(crate) fn let_in(
        &mut self,
        peer: &PeerAddr,
        reserved: Option<Slot>,
        slots: Option<&Arc<Semaphore>>,
        guarded: &impl Guarded,
    ) -> Option<Slot> {
        if !self.admit_connection(peer, guarded) {
            return None;
        }
        match reserved {
            Some(slot) => Some(slot),
            None => self.try_slot(slots, peer, "connection", guarded),
        }
    }

    /// Waits for the next datagram from a sender the rules admit (the others are dropped,
    /// counted and logged); `None` when shutdown comes first. A receive error concerns one
    /// peer only (an ICMP error queued on the socket) and is passed over.
    pub(crate) async fn next_admitted(
        &mut self,
        socket: &DatagramSocket,
        buf: &mut [u8],
        guarded: &impl Guarded,
    ) -> Option<(usize, PeerAddr)> {
        loop {
            let received = tokio::select! {
                biased;
                () = guarded.shutdown().triggered() => return None,
                received = socket.recv_from(buf) => received,
            };
            match received {
                Ok((len, peer)) if self.admit(&peer, "datagram", guarded) => {
                    return Some((len, peer));
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("receive failed: {e}"),
            }
        }
    }

    /// Takes a slot without waiting; when none is free, counts and logs the refusal and
    /// returns `None` (the caller closes the client or drops the datagram).
    pub(crate) fn try_slot(
        &mut self,
        slots: Option<&Arc<Semaphore>>,
        peer: &PeerAddr,
        what: &str,
        guarded: &impl Guarded,
    ) -> Option<Slot> {
        let Some(slots) = slots else {
            return Some(None);
        };
        match Arc::clone(slots).try_acquire_owned() {
            Ok(permit) => Some(Some(permit)),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                guarded.refused().fetch_add(1, Ordering::Relaxed);
                if let admit @ Admit::Log { .. } = self.refused_log.admit(Instant::now()) {
                    let limit = guarded.max_conns().unwrap_or_default();
                    tracing::info!(
                        "refused {what} from {peer}: {limit} already being served (--max-conns {limit}, --max-conns-mode refuse){}",
                        admit.suffix()
                    );
                }
                None
            }
        }
    }
}

/// The semaphore behind `--max-conns`, or `None` without a limit.
pub(crate) fn slots_for(max_conns: Option<usize>) -> Option<Arc<Semaphore>> {
    max_conns.map(|n| Arc::new(Semaphore::new(n)))
}

/// Before `accept`: in `--max-conns-mode wait`, waits for a slot (so at the limit the
/// kernel backlog holds new clients); in `refuse` mode reserves nothing (`Some(None)`), as
/// [`Gate::let_in`] decides after `accept`. `None`: shutdown came first.
pub(crate) async fn reserve_slot(
    over_limit: crate::access::OverLimit,
    slots: Option<&Arc<Semaphore>>,
    guarded: &impl Guarded,
) -> Option<Option<Slot>> {
    match over_limit {
        crate::access::OverLimit::Wait => wait_for_slot(slots, guarded).await.map(Some),
        crate::access::OverLimit::Refuse => Some(None),
    }
}

/// Waits for a slot, or for shutdown (`None`). Without a limit, never waits.
pub(crate) async fn wait_for_slot(
    slots: Option<&Arc<Semaphore>>,
    guarded: &impl Guarded,
) -> Option<Slot> {
    let Some(slots) = slots else {
        return Some(None);
    };
    tokio::select! {
        biased;
        () = guarded.shutdown().triggered() => None,
        // The semaphore is never closed, so acquiring only fails if it were; treat that as
        // shutdown rather than panic.
        permit = Arc::clone(slots).acquire_owned() => permit.ok().map(Some),
    }
}

/// Says once, at start, that rules on a Unix socket filter nobody (its clients have no
/// IP address), so nobody believes a `--deny` protects it.
pub(crate) fn warn_if_unfilterable(access: &AccessPolicy, local: &Endpoint) {
    if !access.is_open() && matches!(local, Endpoint::Unix(_) | Endpoint::UnixDgram(_)) {
        tracing::warn!(
            "--allow/--deny filter IP addresses; Unix socket clients have none and are \
             not filtered (protect {local} with file permissions)"
        );
    }
}
