//! Transports: turning an [`Endpoint`](crate::endpoint::Endpoint) into live sockets.
//!
//! Everything above this module (server, client, relay, bench) works with three types and
//! never with a concrete socket type:
//!
//! * [`StreamListener`] accepts [`Stream`]s (TCP, Unix stream; TLS after the handshake);
//! * [`Stream`] is one connected byte stream (`AsyncRead + AsyncWrite`), made by
//!   accepting or by [`connect_stream`];
//! * [`Layers`] reads the PROXY protocol header ([`proxy`]), then wraps an accepted stream
//!   in TLS and the `--hex` tap;
//! * [`tls`] holds both sides of TLS (certificates, verification, error wording);
//! * [`client_cert`] adds mutual TLS: the server's `--client-ca` check, the client's
//!   `--cert`, and the verified client's identity;
//! * [`DatagramSocket`] sends and receives whole messages (UDP, Unix datagram);
//! * [`proxy_client`] reaches a target through SOCKS and HTTP CONNECT proxies (`--proxy`);
//! * [`activation`] takes a listening socket from systemd instead of binding one.
//!
//! Inside, imports point one way (a test checks it): socket options and system calls at
//! the bottom; `activation` hands back a plain socket that the listener and datagram
//! modules wrap; `tls` and `client_cert` build on `certs` (PEM files, fingerprints,
//! validity) and `tls` on [`Stream`]; dialling TCP (`dial`) sits below both
//! connecting and the proxy client, and connecting builds on them and on `tls`.
//!
//! Each peer is named by a [`PeerAddr`], printed the same way everywhere
//! (`127.0.0.1:50738`, `[::1]:50738`, `/path`, `@name`).
//!
//! Contract: [`StreamListener::accept`] and the datagram `recv` functions are cancel-safe, so
//! callers may race them against shutdown in `tokio::select!`.

pub mod activation;
mod backoff;
pub mod batch;
mod certs;
pub mod client_cert;
mod connect;
mod datagram;
pub mod datagram_capture;
pub mod datagram_cred;
mod dial;
mod direction;
mod errors;
pub mod hexdump;
mod layers;
mod listener;
pub mod multicast;
pub mod pcap;
pub mod proxy;
pub mod proxy_client;
pub mod retry;
mod sockopt;
mod std_stream;
mod stream;
mod syscall;
pub mod tls;
mod tls_sessions;
mod unix_path;

pub use backoff::{Backoff, is_per_connection};
pub use connect::{ConnectOptions, connect_stream, connect_stream_prefixed};
pub use datagram::{DatagramSocket, MAX_DATAGRAM, StdDatagram};

pub(crate) use errors::connect_error;
pub use layers::Layers;
pub use listener::{StdListener, StreamListener};
pub use proxy::ProxyProtocol;
pub use retry::{Attempts, Retry};
pub use sockopt::{
    Broadcast, Carrier, Keepalive, ListenOptions, ListenSource, Nagle, SocketOptions, Source,
};
pub(crate) use sockopt::{tcp_client_socket, udp_client};
pub use std_stream::StdStream;
pub use stream::Stream;
pub(crate) use syscall::{
    close_uncancellable, connect_uncancellable, recv_uncancellable, send_uncancellable,
};
pub use unix_path::{PeerCredAllow, UnixFilePerms, UnixPathGuard};

/// Who is on the other end: an endpoint-tier type, named here too for code that takes
/// everything about a connection from transport.
pub use crate::endpoint::PeerAddr;

use socket2::SockAddr;

/// A bound socket of either delivery: what a server or a relay listens with.
#[derive(Debug)]
pub enum Bound {
    /// A listener for stream endpoints (`tcp://`, `tls://`, `unix:`).
    Stream(StreamListener),
    /// A socket for datagram endpoints (`udp://`, `unixgram:`).
    Datagram(DatagramSocket),
}

impl Bound {
    /// Binds `endpoint` with the socket its delivery needs; returns it with the endpoint
    /// actually bound (port 0 resolved).
    ///
    /// # Errors
    /// Any listen error: address in use, permission denied, not a socket, host not found.
    pub async fn bind(
        endpoint: &crate::endpoint::Endpoint,
        opts: &ListenOptions,
    ) -> crate::Result<(Bound, crate::endpoint::Endpoint)> {
        Ok(match endpoint.delivery() {
            crate::endpoint::Delivery::Stream => {
                let listener = StreamListener::bind(endpoint, opts).await?;
                let local = listener.local_endpoint(endpoint);
                (Bound::Stream(listener), local)
            }
            crate::endpoint::Delivery::Datagram => {
                let socket = DatagramSocket::bind(endpoint, opts).await?;
                let local = socket.local_endpoint(endpoint);
                (Bound::Datagram(socket), local)
            }
        })
    }
}

/// Converts tokio's Unix address into the socket2 form we keep, which can be sent to again.
fn unix_peer(addr: tokio::net::unix::SocketAddr) -> PeerAddr {
    let std_addr: std::os::unix::net::SocketAddr = addr.into();
    PeerAddr::Unix(Box::new(sockaddr_from_std(&std_addr)))
}

/// Builds a sendable socket2 address from a std Unix address (path, abstract or unnamed).
fn sockaddr_from_std(addr: &std::os::unix::net::SocketAddr) -> SockAddr {
    use std::os::linux::net::SocketAddrExt;
    let built = if let Some(path) = addr.as_pathname() {
        SockAddr::unix(path)
    } else if let Some(name) = addr.as_abstract_name() {
        SockAddr::unix(abstract_path(name))
    } else {
        SockAddr::unix("")
    };
    // Both inputs came from the kernel, so they fit in sun_path; an empty path is the
    // unnamed address, which cannot fail to build.
    built
        .or_else(|_| SockAddr::unix(""))
        .unwrap_or_else(|_| unreachable!("an empty path always fits"))
}

/// The socket2 form of a Unix endpoint address (path or abstract name).
pub(crate) fn unix_sockaddr(addr: &crate::endpoint::UnixAddr) -> std::io::Result<SockAddr> {
    match addr {
        crate::endpoint::UnixAddr::Path(path) => SockAddr::unix(path),
        crate::endpoint::UnixAddr::Abstract(name) => SockAddr::unix(abstract_path(name.as_bytes())),
    }
}

/// The socket2 spelling of an abstract name: a path whose first byte is NUL.
fn abstract_path(name: &[u8]) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = Vec::with_capacity(name.len() + 1);
    bytes.push(0);
    bytes.extend_from_slice(name);
    std::path::PathBuf::from(std::ffi::OsStr::from_bytes(&bytes))
}
