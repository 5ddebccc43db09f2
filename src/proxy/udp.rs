//! SOCKS5 UDP ASSOCIATE: a UDP socket per association, on the address the client reached
//! the proxy at, that lives as long as the client's TCP connection (RFC 1928, section 7).
//!
//! Datagrams from the client (its IP address, and the port of its first datagram unless
//! the request named one) carry a SOCKS header naming their destination; the header is
//! taken off, the destination judged by the same rules as CONNECT, and the payload sent.
//! Datagrams from an address the client has sent to come back with a header naming it;
//! datagrams from anyone else are dropped, so the socket is not a way in for strangers.
//! Fragments (FRAG ≠ 0) are dropped: reassembly is optional in the RFC.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;

use super::Shared;
use super::destination::{allowed_addresses, resolve};
use super::outcome::{Delivered, End, Refusal};
use super::socks::{self, Destination, Reply};
use crate::endpoint::PeerAddr;
use crate::idle::Activity;
use crate::obs::throttle::connection_line;
use crate::transport::{MAX_DATAGRAM, Stream};

/// Most destinations one association remembers (for replies) and names it caches: a
/// client spraying datagrams at many addresses cannot grow them without bound.
const MAX_PEERS: usize = 1024;

/// Serves one association until the client's TCP connection ends (or idles, or the
/// proxy shuts down). Returns the relay socket's address, once bound, and how it ended.
pub(crate) async fn associate(
    control: &mut Stream,
    peer: &PeerAddr,
    from: &Destination,
    shared: &Shared,
    delivered: &Delivered,
) -> (Option<SocketAddr>, End) {
    let nowhere = SocketAddr::from(([0, 0, 0, 0], 0));
    let socket = match bind_next_to(control).await {
        Ok(socket) => socket,
        Err(e) => {
            let _ = control
                .write_all(&socks::reply(Reply::GeneralFailure, nowhere))
                .await;
            return (None, End::Refused(Refusal::Io(e)));
        }
    };
    let bound = socket.local_addr().unwrap_or(nowhere);
    if let Err(e) = control
        .write_all(&socks::reply(Reply::Succeeded, bound))
        .await
    {
        return (Some(bound), End::Refused(Refusal::Io(e)));
    }
    let client = Client::expected(peer, from);
    let mut association = Association {
        socket,
        client,
        contacted: HashSet::new(),
        names: HashMap::new(),
        activity: Activity::new(),
    };
    let end = association.run(control, shared, delivered).await;
    (Some(bound), end)
}

/// A UDP socket on the IP address the client reached the proxy at, any port (an
/// IPv4-mapped address as the IPv4 address it carries, so the client's IPv4 datagrams
/// and ours share one family).
async fn bind_next_to(control: &Stream) -> std::io::Result<UdpSocket> {
    let ip = match control {
        Stream::Tcp(tcp) => tcp.local_addr()?.ip().to_canonical(),
        _ => IpAddr::from([0, 0, 0, 0]),
    };
    UdpSocket::bind(SocketAddr::new(ip, 0)).await
}

/// Where the client's datagrams come from.
#[derive(Debug, Clone, Copy)]
struct Client {
    /// The client's IP address (that of its TCP connection), if it has one.
    ip: Option<IpAddr>,
    /// Its UDP port: from the request, or learnt from its first datagram.
    port: Option<u16>,
}

impl Client {
    /// What the request and the TCP connection say about the client.
    fn expected(peer: &PeerAddr, from: &Destination) -> Client {
        let port = match from {
            Destination::Addr(addr) if addr.port() != 0 => Some(addr.port()),
            _ => None,
        };
        Client {
            ip: peer.ip().map(|ip| ip.to_canonical()),
            port,
        }
    }

    /// Whether `source` is the client (learning its port from its first datagram).
    fn is(&mut self, source: SocketAddr) -> bool {
        if self.ip != Some(source.ip().to_canonical()) {
            return false;
        }
        match self.port {
            Some(port) => port == source.port(),
            None => {
                self.port = Some(source.port());
                true
            }
        }
    }

    /// The client's UDP address, once known.
    fn addr(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(self.ip?, self.port?))
    }
}

/// One association's state.
struct Association {
    /// The relay socket.
    socket: UdpSocket,
    /// Who may send through it.
    client: Client,
    /// Destinations the client has sent to: only their datagrams come back.
    contacted: HashSet<SocketAddr>,
    /// Names already resolved and judged (`None`: denied or unresolved).
    names: HashMap<(String, u16), Option<SocketAddr>>,
    /// Last traffic, for the idle timeout.
    activity: Activity,
}

impl Association {
    /// Relays until the control connection ends, the idle timeout, or shutdown.
    async fn run(&mut self, control: &mut Stream, shared: &Shared, delivered: &Delivered) -> End {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut ignored = [0u8; 512];
        let idle = shared.options.idle_timeout;
        loop {
            tokio::select! {
                read = control.read(&mut ignored) => match read {
                    Ok(0) => return End::Closed,
                    // Bytes on the control connection mean nothing once associated.
                    Ok(_) => {}
                    Err(e) => return End::Failed(e),
                },
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, source)) => self.datagram(&buf[..len], source, shared, delivered).await,
                    Err(e) => tracing::debug!("UDP receive failed: {e}"),
                },
                () = self.activity.quiet_for(idle) => return End::Idle(idle.unwrap_or_default()),
                () = shared.grace_expired() => return End::Shutdown,
            }
        }
    }

    /// One datagram: from the client, out to its destination; from a destination, back
    /// to the client; from anyone else, dropped.
    async fn datagram(
        &mut self,
        bytes: &[u8],
        source: SocketAddr,
        shared: &Shared,
        delivered: &Delivered,
    ) {
        if self.client.is(source) {
            self.outbound(bytes, shared, delivered).await;
        } else if self.contacted.contains(&source) {
            let Some(client) = self.client.addr() else {
                return;
            };
            let mut framed = socks::udp_header(source);
            framed.extend_from_slice(bytes);
            if self.socket.send_to(&framed, client).await.is_ok() {
                count(&shared.stats.to_client, &delivered.to_client, bytes.len());
                self.activity.touch();
            }
        } else {
            tracing::debug!(
                "dropped a datagram from {source}: not the client, nor a destination it sent to"
            );
        }
    }

    /// A client datagram: header off, destination judged, payload sent.
    async fn outbound(&mut self, bytes: &[u8], shared: &Shared, delivered: &Delivered) {
        let datagram = match socks::parse_udp_datagram(bytes) {
            Ok(datagram) => datagram,
            Err(e) => {
                shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
                connection_line(|more| {
                    tracing::warn!("dropped a UDP datagram from the client: {e}{more}")
                });
                return;
            }
        };
        let Some(target) = self.judge(&datagram.destination, shared).await else {
            return;
        };
        if self.contacted.len() < MAX_PEERS {
            self.contacted.insert(target);
        }
        if self.socket.send_to(datagram.payload, target).await.is_ok() {
            count(
                &shared.stats.to_target,
                &delivered.to_target,
                datagram.payload.len(),
            );
            self.activity.touch();
        }
    }

    /// The address to send to, if the rules allow it (names resolved once and cached).
    async fn judge(&mut self, destination: &Destination, shared: &Shared) -> Option<SocketAddr> {
        let key = match destination {
            Destination::Name(name, port) => Some((name.clone(), *port)),
            Destination::Addr(_) => None,
        };
        if let Some(cached) = key.as_ref().and_then(|key| self.names.get(key)) {
            return *cached;
        }
        let judged = match resolve(destination).await {
            Ok(candidates) => match allowed_addresses(&candidates, &shared.options, destination) {
                Ok(allowed) => allowed.first().copied(),
                Err(refusal) => {
                    shared
                        .stats
                        .destinations_denied
                        .fetch_add(1, Ordering::Relaxed);
                    connection_line(|more| {
                        tracing::warn!("dropped a UDP datagram: {refusal}{more}")
                    });
                    None
                }
            },
            Err(_) => {
                shared.stats.unreachable.fetch_add(1, Ordering::Relaxed);
                connection_line(|more| {
                    tracing::warn!("dropped a UDP datagram: {destination} does not resolve{more}")
                });
                None
            }
        };
        if let Some(key) = key
            && self.names.len() < MAX_PEERS
        {
            self.names.insert(key, judged);
        }
        judged
    }
}

/// Counts `len` bytes delivered one way.
fn count(totals: &crate::relay::FlowStats, delivered: &std::sync::atomic::AtomicU64, len: usize) {
    let n = len as u64;
    totals.read.fetch_add(n, Ordering::Release);
    totals.written.fetch_add(n, Ordering::Release);
    delivered.fetch_add(n, Ordering::Relaxed);
}
