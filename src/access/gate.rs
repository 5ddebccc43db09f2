//! The door every client of a listener (`serve` or `relay`) passes before it is served:
//! access rules, the per-source limit, then the connection limit when it refuses rather
//! than waits.
//!
//! Where the rules are applied depends on where the client's address is known: at
//! `accept` (or receive) for direct clients, before anything is spawned; with
//! `--proxy-protocol` only once the header names the real client, in the connection's
//! task ([`GateConfig::admit_late`]). The socket's peer is then the load balancer, and
//! judging it would deny (or allow) everyone at once. What is judged at accept then is
//! whether that balancer is trusted to speak for its clients (`--proxy-from`), as nginx's
//! `set_real_ip_from` and HAProxy's `expect-proxy … if { src LB }` do.
//!
//! The per-source limit (`--max-conns-per-source`) is counted in one table shared by every
//! accept loop ([`SourceCounts`]); each admitted client holds a [`SourceTicket`] for as
//! long as it is served, as it holds its `--max-conns` permit, both inside its [`Slot`].
//!
//! The policy itself is [`crate::access`] (pure); this module applies it for a listener
//! described by a [`GateConfig`]: counts each client turned away, and logs it through a
//! [`LogThrottle`] so a flood (a port scan, a UDP sender spraying datagrams) costs a few
//! lines per second, not one per packet. One implementation for both commands keeps the
//! flags, the counters and the log lines the same in `serve` and `relay`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use tokio::time::Instant;

use super::{AccessPolicy, PerSourceLimit, source_of};
use crate::endpoint::{Endpoint, PeerAddr};
use crate::obs::throttle::{Admit, LogThrottle};
use crate::shutdown::Shutdown;
use crate::transport::DatagramSocket;

/// Where a listener learns its clients' addresses, which decides when the rules apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClientAddress {
    /// From the socket: the rules apply at accept (or receive).
    Socket,
    /// From a PROXY header (`--proxy-protocol`): the socket's peer is a load balancer, so
    /// the rules wait for the header ([`GateConfig::admit_late`]).
    ProxyHeader,
}

/// What the gate is told about one listener: its rules and limits, and where it counts,
/// logs and waits. `serve`, `relay` and `proxy` each build one from their shared state
/// (`Shared::gate_config`), so both apply the same flags with the same counters and lines.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GateConfig<'a> {
    /// The `--allow` / `--deny` rules.
    pub access: &'a AccessPolicy,
    /// `--max-conns`, named in the refusal line.
    pub max_conns: Option<usize>,
    /// Whether the socket's peer is the client or a load balancer speaking for it.
    pub client_address: ClientAddress,
    /// Counter of clients turned away by `--allow` / `--deny`.
    pub denied: &'a AtomicU64,
    /// Counter of clients turned away over `--max-conns` or `--max-conns-per-source`.
    pub refused: &'a AtomicU64,
    /// Stop signal, which ends a wait for a slot.
    pub shutdown: &'a Shutdown,
    /// Rate-limited access logging for checks made after a PROXY header, in connection
    /// tasks (the accept loop's own [`Gate`] is not shared).
    pub late_gate: &'a Mutex<Gate>,
    /// Connections held per source, shared by every accept loop of the listener.
    pub sources: &'a Arc<SourceCounts>,
}

impl GateConfig<'_> {
    /// Whether connections start with a PROXY header.
    fn proxied(&self) -> bool {
        self.client_address == ClientAddress::ProxyHeader
    }

    /// With `--proxy-protocol`, the checks that wait for the real client's address (the
    /// rules and the per-source limit), made in its connection task; counted and logged
    /// (rate-limited across all connections) as at accept. `None`: close the connection.
    /// The slot returned holds the client's per-source share until it is dropped; without
    /// `--proxy-protocol` there is nothing left to check and it is empty.
    pub(crate) fn admit_late(&self, peer: &PeerAddr) -> Option<Slot> {
        if !self.proxied() {
            return Some(Slot::default());
        }
        // A poisoned lock only means another connection panicked mid-log; the throttle
        // state is still usable.
        let mut gate = self
            .late_gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !gate.admit(peer, "connection", self) {
            return None;
        }
        let source = gate.source_ticket(peer, "connection", self)?;
        Some(Slot {
            _permit: None,
            _source: source,
        })
    }
}

/// Connections held per source (see [`PerSourceLimit`]), shared by a listener's accept
/// loops. A std mutex: held for one map update, never across an await.
#[derive(Debug, Default)]
pub(crate) struct SourceCounts {
    /// The limit, from the access policy.
    limit: PerSourceLimit,
    /// Clients served now, by source; a source leaves the map with its last client.
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One client's share of its source's count; dropping it gives the share back.
#[derive(Debug)]
pub(crate) struct SourceTicket {
    /// The table it was taken from.
    counts: Arc<SourceCounts>,
    /// The source it counts against.
    source: IpAddr,
}

/// Why a source was refused another connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SourceFull {
    /// The source (an address or an IPv6 /64).
    pub source: IpAddr,
    /// What it may hold.
    pub limit: usize,
}

impl SourceCounts {
    /// An empty table for `limit`.
    pub(crate) fn new(limit: PerSourceLimit) -> Arc<SourceCounts> {
        Arc::new(SourceCounts {
            limit,
            held: Mutex::default(),
        })
    }

    /// Takes a share for `ip`'s source: `Ok(None)` when no limit applies to it,
    /// `Err` when the source already holds its limit.
    pub(crate) fn take(self: &Arc<Self>, ip: IpAddr) -> Result<Option<SourceTicket>, SourceFull> {
        let Some(limit) = self.limit.for_ip(ip) else {
            return Ok(None);
        };
        let source = source_of(ip);
        let mut held = self.lock();
        let count = held.entry(source).or_insert(0);
        if *count >= limit {
            return Err(SourceFull { source, limit });
        }
        *count += 1;
        Ok(Some(SourceTicket {
            counts: Arc::clone(self),
            source,
        }))
    }

    /// How many clients `ip`'s source holds now.
    #[cfg(test)]
    fn held_by(&self, ip: IpAddr) -> usize {
        self.lock().get(&source_of(ip)).copied().unwrap_or(0)
    }

    /// The map, even if a thread panicked while holding it (every update is one step).
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Drop for SourceTicket {
    fn drop(&mut self) {
        let mut held = self.counts.lock();
        if let Some(count) = held.get_mut(&self.source) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.source);
            }
        }
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

/// What an admitted client holds while it is served: its permit in `--max-conns` and its
/// share of its source's `--max-conns-per-source`; each is empty when that limit does not
/// apply. Dropping it frees both.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// The `--max-conns` permit.
    _permit: Option<OwnedSemaphorePermit>,
    /// The per-source share.
    _source: Option<SourceTicket>,
}

impl From<OwnedSemaphorePermit> for Slot {
    fn from(permit: OwnedSemaphorePermit) -> Slot {
        Slot {
            _permit: Some(permit),
            _source: None,
        }
    }
}

impl Gate {
    /// Whether a freshly accepted connection may proceed: [`Gate::admit`] on its socket
    /// peer; with `--proxy-protocol` the rules wait for the real client's address, and
    /// what is judged now is whether the peer may send a header at all (`--proxy-from`).
    pub(crate) fn admit_connection(&mut self, peer: &PeerAddr, config: &GateConfig<'_>) -> bool {
        if config.proxied() {
            self.admit_proxy(peer, config)
        } else {
            self.admit(peer, "connection", config)
        }
    }

    /// Whether `peer` is trusted to send a PROXY header (`--proxy-from`). An untrusted one
    /// is counted as denied and logged (rate-limited); the caller closes it unread.
    fn admit_proxy(&mut self, peer: &PeerAddr, config: &GateConfig<'_>) -> bool {
        let access = config.access;
        if access.trusts_proxy(peer) {
            return true;
        }
        config.denied.fetch_add(1, Ordering::Relaxed);
        if let admit @ Admit::Log { .. } = self.denied_log.admit(Instant::now()) {
            let trusted: Vec<String> = access
                .proxy_from()
                .iter()
                .map(ToString::to_string)
                .collect();
            tracing::info!(
                "refused connection from {peer}: PROXY headers are accepted only from --proxy-from {}{}",
                trusted.join(", "),
                admit.suffix()
            );
        }
        false
    }

    /// A share of `peer`'s source in `--max-conns-per-source` (`Some(None)`: no limit
    /// applies to it). `None`: the source holds its limit; the refusal is counted and
    /// logged (rate-limited) and the caller closes the client.
    pub(crate) fn source_ticket(
        &mut self,
        peer: &PeerAddr,
        what: &str,
        config: &GateConfig<'_>,
    ) -> Option<Option<SourceTicket>> {
        let Some(ip) = peer.ip() else {
            return Some(None);
        };
        match config.sources.take(ip) {
            Ok(ticket) => Some(ticket),
            Err(SourceFull { source, limit }) => {
                config.refused.fetch_add(1, Ordering::Relaxed);
                if let admit @ Admit::Log { .. } = self.refused_log.admit(Instant::now()) {
                    tracing::info!(
                        "refused {what} from {peer}: its source {source} already holds {limit} (--max-conns-per-source {limit}){}",
                        admit.suffix()
                    );
                }
                None
            }
        }
    }

    /// Whether `peer` may be served. A denied client is counted and logged (rate-limited);
    /// the caller closes it (stream) or drops its datagram.
    pub(crate) fn admit(&mut self, peer: &PeerAddr, what: &str, config: &GateConfig<'_>) -> bool {
        let access = config.access;
        if access.is_open() {
            return true;
        }
        let verdict = access.check(peer);
        if verdict.is_allowed() {
            return true;
        }
        config.denied.fetch_add(1, Ordering::Relaxed);
        if let admit @ Admit::Log { .. } = self.denied_log.admit(Instant::now()) {
            tracing::info!("denied {what} from {peer}: {verdict}{}", admit.suffix());
        }
        false
    }

    /// Lets an accepted connection in, or not (`None`: close it; it has been counted and
    /// logged). Its address must pass the rules and its source must be under
    /// `--max-conns-per-source` (with `--proxy-protocol` both wait for the real client's
    /// address: [`GateConfig::admit_late`]), and it needs a slot in `--max-conns`: the one
    /// reserved before `accept` ([`super::admission::Admission::reserve`], mode wait), or one taken now (mode
    /// refuse).
    pub(crate) fn let_in(
        &mut self,
        peer: &PeerAddr,
        reserved: Option<Slot>,
        slots: Option<&Arc<Semaphore>>,
        config: &GateConfig<'_>,
    ) -> Option<Slot> {
        if !self.admit_connection(peer, config) {
            return None;
        }
        let source = if config.proxied() {
            None
        } else {
            self.source_ticket(peer, "connection", config)?
        };
        let slot = match reserved {
            Some(slot) => slot,
            None => self.try_slot(slots, peer, "connection", config)?,
        };
        Some(Slot {
            _source: source,
            ..slot
        })
    }

    /// Waits for the next datagram from a sender the rules admit (the others are dropped,
    /// counted and logged); `None` when shutdown comes first. A receive error concerns one
    /// peer only (an ICMP error queued on the socket) and is passed over.
    pub(crate) async fn next_admitted(
        &mut self,
        socket: &DatagramSocket,
        buf: &mut [u8],
        config: &GateConfig<'_>,
    ) -> Option<(usize, PeerAddr)> {
        loop {
            let received = tokio::select! {
                biased;
                () = config.shutdown.triggered() => return None,
                received = socket.recv_from(buf) => received,
            };
            match received {
                Ok((len, peer)) if self.admit(&peer, "datagram", config) => {
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
        config: &GateConfig<'_>,
    ) -> Option<Slot> {
        let Some(slots) = slots else {
            return Some(Slot::default());
        };
        match Arc::clone(slots).try_acquire_owned() {
            Ok(permit) => Some(Slot::from(permit)),
            Err(TryAcquireError::NoPermits | TryAcquireError::Closed) => {
                config.refused.fetch_add(1, Ordering::Relaxed);
                if let admit @ Admit::Log { .. } = self.refused_log.admit(Instant::now()) {
                    let limit = config.max_conns.unwrap_or_default();
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

/// Waits for a slot, or for shutdown (`None`). Without a limit, never waits.
pub(crate) async fn wait_for_slot(
    slots: Option<&Arc<Semaphore>>,
    config: &GateConfig<'_>,
) -> Option<Slot> {
    let Some(slots) = slots else {
        return Some(Slot::default());
    };
    tokio::select! {
        biased;
        () = config.shutdown.triggered() => None,
        // The semaphore is never closed, so acquiring only fails if it were; treat that as
        // shutdown rather than panic.
        permit = Arc::clone(slots).acquire_owned() => permit.ok().map(Slot::from),
    }
}

/// Says once, at start, that rules on a Unix socket filter nobody (its clients have no
/// IP address), so nobody believes a `--deny` protects it; and that `--proxy-protocol`
/// without `--proxy-from` believes whoever connects.
pub(crate) fn warn_if_unfilterable(access: &AccessPolicy, local: &Endpoint, proxied: bool) {
    let unix = matches!(local, Endpoint::Unix(_) | Endpoint::UnixDgram(_));
    if !access.is_open() && unix {
        tracing::warn!(
            "--allow/--deny filter IP addresses; Unix socket clients have none and are \
             not filtered (protect {local} with file permissions)"
        );
    }
    if proxied && !unix && access.proxy_from().is_empty() {
        tracing::warn!(
            "--proxy-protocol without --proxy-from believes a PROXY header from any \
             source: a client that connects directly can claim any address and pass \
             --allow/--deny as it; name your load balancers with --proxy-from CIDR"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn a_source_holds_at_most_its_limit_and_gets_shares_back() {
        let counts = SourceCounts::new(PerSourceLimit::Everyone(2));
        let a = counts.take(ip("192.0.2.7"));
        let b = counts.take(ip("::ffff:192.0.2.7"));
        assert!(matches!((&a, &b), (Ok(Some(_)), Ok(Some(_)))));
        assert_eq!(
            counts.take(ip("192.0.2.7")).err(),
            Some(SourceFull {
                source: ip("192.0.2.7"),
                limit: 2
            })
        );
        assert!(
            matches!(counts.take(ip("192.0.2.8")), Ok(Some(_))),
            "another source"
        );
        drop(a);
        assert_eq!(counts.held_by(ip("192.0.2.7")), 1);
        drop(b);
        assert_eq!(counts.held_by(ip("192.0.2.7")), 0);
    }

    #[test]
    fn an_ipv6_slash_64_is_one_source_and_loopback_is_spared_by_default() {
        let counts = SourceCounts::new(PerSourceLimit::NonLoopback(1));
        let _held = counts.take(ip("2001:db8::1"));
        assert!(counts.take(ip("2001:db8::ffff:2")).is_err());
        assert!(matches!(counts.take(ip("2001:db8:0:1::1")), Ok(Some(_))));
        assert!(matches!(counts.take(ip("127.0.0.1")), Ok(None)));
    }
}
