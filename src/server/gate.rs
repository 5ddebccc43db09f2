//! The door every client passes before it is served: access rules, then the connection
//! limit when it refuses rather than waits.
//!
//! Where the rules are applied depends on where the client's address is known: at
//! `accept` (or receive) for direct clients, before anything is spawned; with
//! `--proxy-protocol` only once the header names the real client, in the connection's
//! task ([`Shared::admit_late`]). The socket's peer is then the load balancer, and judging
//! it would deny (or allow) everyone at once.
//!
//! The policy itself is [`crate::access`] (pure); this module applies it in the server:
//! counts each client turned away, and logs it through a [`LogThrottle`] so a flood (a
//! port scan, a UDP sender spraying datagrams) costs a few lines per second, not one per
//! packet.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;

use super::Shared;
use crate::obs::throttle::{Admit, LogThrottle};
use crate::transport::PeerAddr;

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
    pub(crate) fn admit_connection(&mut self, peer: &PeerAddr, shared: &Shared) -> bool {
        shared.options.layers.proxy.is_on() || self.admit(peer, "connection", shared)
    }

    /// Whether `peer` may be served. A denied client is counted and logged (rate-limited);
    /// the caller closes it (stream) or drops its datagram.
    pub(crate) fn admit(&mut self, peer: &PeerAddr, what: &str, shared: &Shared) -> bool {
        let access = &shared.options.access;
        if access.is_open() {
            return true;
        }
        let verdict = access.check(peer);
        if verdict.is_allowed() {
            return true;
        }
        shared.stats.denied.fetch_add(1, Ordering::Relaxed);
        if let admit @ Admit::Log { .. } = self.denied_log.admit(Instant::now()) {
            tracing::info!("denied {what} from {peer}: {verdict}{}", admit.suffix());
        }
        false
    }

    /// Takes a slot without waiting; when none is free, counts and logs the refusal and
    /// returns `None` (the caller closes the client or drops the datagram).
    pub(crate) fn try_slot(
        &mut self,
        slots: Option<&Arc<Semaphore>>,
        peer: &PeerAddr,
        what: &str,
        shared: &Shared,
    ) -> Option<Slot> {
        let Some(slots) = slots else {
            return Some(None);
        };
        match Arc::clone(slots).try_acquire_owned() {
            Ok(permit) => Some(Some(permit)),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                shared.stats.refused.fetch_add(1, Ordering::Relaxed);
                if let admit @ Admit::Log { .. } = self.refused_log.admit(Instant::now()) {
                    let limit = shared.options.limits.max_conns.unwrap_or_default();
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

impl Shared {
    /// The access check for a client whose address a PROXY header revealed, made in its
    /// connection task; counted and logged (rate-limited across all connections) as at
    /// accept.
    pub(crate) fn admit_late(&self, peer: &PeerAddr) -> bool {
        if self.options.access.is_open() {
            return true;
        }
        // A poisoned lock only means another connection panicked mid-log; the throttle
        // state is still usable.
        let mut gate = self
            .late_gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        gate.admit(peer, "connection", self)
    }
}

/// The semaphore behind `--max-conns`, or `None` without a limit.
pub(crate) fn slots(shared: &Shared) -> Option<Arc<Semaphore>> {
    shared.slots.clone()
}

/// Waits for a slot, or for shutdown (`None`). Without a limit, never waits.
pub(crate) async fn wait_for_slot(slots: Option<&Arc<Semaphore>>, shared: &Shared) -> Option<Slot> {
    let Some(slots) = slots else {
        return Some(None);
    };
    tokio::select! {
        biased;
        () = shared.shutdown.triggered() => None,
        // The semaphore is never closed, so acquiring only fails if it were; treat that as
        // shutdown rather than panic.
        permit = Arc::clone(slots).acquire_owned() => permit.ok().map(Some),
    }
}
