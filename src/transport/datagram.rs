//! Datagram transports: UDP (IPv4/IPv6) and Unix datagram sockets.
//!
//! A server binds one [`DatagramSocket`] and answers each sender at its own address; a
//! client binds an address of its own (an ephemeral port, or an abstract Unix name so the
//! reply can reach it) and connects to the server, so stray datagrams are filtered out by
//! the kernel and "nothing listening" comes back as connection refused.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use socket2::{SockAddr, SockRef, Type};

use tokio::io::Interest;
use tokio::net::{UdpSocket, UnixDatagram};

use super::activation;
use super::connect::ConnectOptions;
use super::datagram_cred;
use super::errors::{connect_error, ip_listen_error};
use super::listener::host_port;
use super::proxy_client::UdpAssociation;
use super::retry::connect_with_retry;
use super::sockopt::{ListenOptions, ListenSource, SocketOptions, udp_client, udp_socket};
use super::unix_path::{self, UnixPathGuard};
use super::{abstract_path, unix_peer, unix_sockaddr};
use crate::endpoint::{Delivery, Endpoint, HostPort, PeerAddr, UnixAddr};
use crate::error::{Error, Result};

/// The largest UDP payload over IPv4 (65,535 − 8-byte UDP header − 20-byte IP header).
///
/// Receive buffers are at least this large, so no datagram is ever silently truncated.
pub const MAX_DATAGRAM: usize = 65_507;

/// A bound datagram socket of whichever transport the endpoint named.
#[derive(Debug)]
pub enum DatagramSocket {
    /// UDP over IPv4 or IPv6.
    Udp(UdpSocket),
    /// Unix datagram socket; the guard removes its file when dropped.
    Unix(UnixDatagram, Option<UnixPathGuard>),
    /// A client's UDP through a SOCKS5 proxy (`--proxy`, UDP ASSOCIATE): each datagram
    /// carries the SOCKS5 header to and from the proxy's relay. Boxed: it also holds
    /// the control connection.
    Socks(Box<UdpAssociation>),
}

impl DatagramSocket {
    /// Binds a server socket on a datagram endpoint (`udp://`, `unixgram:`).
    ///
    /// # Errors
    /// The same listen errors as [`super::StreamListener::bind`].
    pub async fn bind(endpoint: &Endpoint, opts: &ListenOptions) -> Result<DatagramSocket> {
        let socket =
            if opts.source == ListenSource::Systemd && endpoint.delivery() == Delivery::Datagram {
                passed_socket(endpoint)?
            } else {
                DatagramSocket::bind_own(endpoint, opts).await?
            };
        if let DatagramSocket::Unix(unix, _) = &socket {
            datagram_cred::pass_credentials(unix)
                .map_err(|e| unix_path::listen_error(e, endpoint))?;
        }
        Ok(socket)
    }

    /// Binds a socket of our own (not one systemd passed).
    async fn bind_own(endpoint: &Endpoint, opts: &ListenOptions) -> Result<DatagramSocket> {
        match endpoint {
            Endpoint::Udp(hp) => bind_udp(endpoint, hp, opts).await,
            Endpoint::UnixDgram(addr) => bind_unix(endpoint, addr, opts.unix_file),
            _ => Err(Error::Usage(format!(
                "{endpoint} is a stream endpoint; a datagram socket needs udp:// or unixgram:"
            ))),
        }
    }

    /// Creates a client socket with its own address, connected to `endpoint`.
    ///
    /// # Errors
    /// [`Error::HostNotFound`], or [`Error::Connect`]/[`Error::Refused`] when the kernel
    /// already knows the target cannot be reached (a Unix path with no socket).
    pub async fn connect(endpoint: &Endpoint) -> Result<DatagramSocket> {
        DatagramSocket::connect_with(endpoint, &SocketOptions::default()).await
    }

    /// [`DatagramSocket::connect`] with a source address and socket options
    /// ([`SocketOptions`], UDP only) and `--retry` (a Unix socket not there yet).
    ///
    /// # Errors
    /// As [`DatagramSocket::connect`], and [`Error::LocalSocket`] for a refused option.
    pub async fn connect_with_options(
        endpoint: &Endpoint,
        options: &ConnectOptions,
    ) -> Result<DatagramSocket> {
        if let (Endpoint::Udp(hp), false) = (endpoint, options.proxies.is_empty()) {
            return connect_with_retry(&options.retry, endpoint, || {
                associate(endpoint, hp, options)
            })
            .await;
        }
        connect_with_retry(&options.retry, endpoint, || {
            DatagramSocket::connect_with(endpoint, &options.socket)
        })
        .await
    }

    /// One connect attempt with these socket options.
    async fn connect_with(endpoint: &Endpoint, options: &SocketOptions) -> Result<DatagramSocket> {
        match endpoint {
            Endpoint::Udp(hp) => connect_udp(endpoint, hp, options).await,
            Endpoint::UnixDgram(addr) => connect_unix(endpoint, addr),
            _ => Err(Error::Usage(format!(
                "{endpoint} is a stream endpoint, not a datagram one"
            ))),
        }
    }

    /// Receives one datagram and its sender. Cancel-safe.
    ///
    /// On a Unix socket with `--allow-uid`/`--allow-gid`, datagrams from other senders are
    /// dropped here ([`datagram_cred`]), so no caller ever sees them.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, PeerAddr)> {
        match self {
            DatagramSocket::Udp(s) => s.recv_from(buf).await.map(|(n, a)| (n, PeerAddr::Ip(a))),
            DatagramSocket::Unix(s, _) if datagram_cred::checks_senders() => loop {
                let (n, from, cred) = s
                    .async_io(Interest::READABLE, || datagram_cred::recv_with_cred(s, buf))
                    .await?;
                if datagram_cred::sender_allowed(cred) {
                    break Ok((n, PeerAddr::Unix(Box::new(from))));
                }
            },
            DatagramSocket::Unix(s, _) => s.recv_from(buf).await.map(|(n, a)| (n, unix_peer(a))),
            DatagramSocket::Socks(s) => {
                let payload = s.recv(buf).await?;
                Ok((to_front(buf, payload), PeerAddr::Ip(s.relay())))
            }
        }
    }

    /// Receives one datagram if one is queued, without waiting (`WouldBlock` otherwise).
    ///
    /// Servers drain the socket with this before going back to the reactor.
    pub fn try_recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, PeerAddr)> {
        match self {
            DatagramSocket::Udp(s) => s.try_recv_from(buf).map(|(n, a)| (n, PeerAddr::Ip(a))),
            DatagramSocket::Unix(s, _) if datagram_cred::checks_senders() => loop {
                let (n, from, cred) =
                    s.try_io(Interest::READABLE, || datagram_cred::recv_with_cred(s, buf))?;
                if datagram_cred::sender_allowed(cred) {
                    break Ok((n, PeerAddr::Unix(Box::new(from))));
                }
            },
            DatagramSocket::Unix(s, _) => s.try_recv_from(buf).map(|(n, a)| (n, unix_peer(a))),
            DatagramSocket::Socks(s) => {
                let payload = s.try_recv(buf)?;
                Ok((to_front(buf, payload), PeerAddr::Ip(s.relay())))
            }
        }
    }

    /// Waits until a datagram can be read. Cancel-safe.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            DatagramSocket::Udp(s) => s.readable().await,
            DatagramSocket::Unix(s, _) => s.readable().await,
            DatagramSocket::Socks(s) => s.readable().await,
        }
    }

    /// Waits until a datagram can be read; returns the socket's error instead if it has
    /// one to report first (on a connected socket, an ICMP "port unreachable": the peer
    /// refused). Cancel-safe.
    pub async fn readable_or_failed(&self) -> io::Result<()> {
        let wanted = Interest::READABLE | Interest::ERROR;
        let (ready, pending) = match self {
            DatagramSocket::Udp(s) => {
                let ready = s.ready(wanted).await?;
                (ready, ready.is_error().then(|| s.take_error()))
            }
            DatagramSocket::Unix(s, _) => {
                let ready = s.ready(wanted).await?;
                (ready, ready.is_error().then(|| s.take_error()))
            }
            DatagramSocket::Socks(s) => return s.readable().await,
        };
        match pending {
            Some(Ok(Some(error)) | Err(error)) => Err(error),
            _ if ready.is_readable() => Ok(()),
            _ => Err(io::Error::other(
                "the socket reported an error and then none",
            )),
        }
    }

    /// Sends one datagram to `peer` (a server's reply).
    pub async fn send_to(&self, buf: &[u8], peer: &PeerAddr) -> io::Result<usize> {
        match (self, peer) {
            (DatagramSocket::Udp(s), PeerAddr::Ip(addr)) => s.send_to(buf, addr).await,
            (DatagramSocket::Unix(s, _), PeerAddr::Unix(addr)) => {
                s.async_io(Interest::WRITABLE, || SockRef::from(s).send_to(buf, addr))
                    .await
            }
            (DatagramSocket::Socks(s), _) => s.send(buf).await,
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "peer address family does not match the socket",
            )),
        }
    }

    /// Sends one datagram to the connected peer (a client's request).
    pub async fn send(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            DatagramSocket::Udp(s) => s.send(buf).await,
            DatagramSocket::Unix(s, _) => s.send(buf).await,
            DatagramSocket::Socks(s) => s.send(buf).await,
        }
    }

    /// The connected peer as capture files name it (`127.0.0.1:9000`, `/path`), when
    /// the socket knows it.
    pub fn peer_name(&self) -> Option<String> {
        match self {
            DatagramSocket::Udp(s) => s.peer_addr().ok().map(|a| a.to_string()),
            DatagramSocket::Unix(s, _) => s
                .peer_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string())),
            // Named by the endpoint: the socket's own peer is the proxy's relay.
            DatagramSocket::Socks(_) => None,
        }
    }

    /// The local UDP address (`None` for a Unix socket), for `--pcap`.
    pub fn local_ip(&self) -> Option<std::net::SocketAddr> {
        match self {
            DatagramSocket::Udp(s) => s.local_addr().ok(),
            DatagramSocket::Unix(..) | DatagramSocket::Socks(_) => None,
        }
    }

    /// Both ends as a `--pcap` flow (UDP; a Unix socket has no IP addresses, and a
    /// SOCKS association is not recorded).
    pub fn pcap_flow(&self) -> Option<super::pcap::Flow> {
        match self {
            DatagramSocket::Udp(s) => Some(super::pcap::Flow {
                local: s.local_addr().ok()?,
                peer: s.peer_addr().ok()?,
                transport: super::pcap::Transport::Udp,
            }),
            // Through a proxy the packets would name the proxy's relay, not the target.
            DatagramSocket::Unix(..) | DatagramSocket::Socks(_) => None,
        }
    }

    /// Receives one datagram from the connected peer. Cancel-safe.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            DatagramSocket::Udp(s) => s.recv(buf).await,
            DatagramSocket::Unix(s, _) => s.recv(buf).await,
            DatagramSocket::Socks(s) => {
                let payload = s.recv(buf).await?;
                Ok(to_front(buf, payload))
            }
        }
    }

    /// The endpoint actually bound: with port 0, this carries the port the kernel chose.
    pub fn local_endpoint(&self, requested: &Endpoint) -> Endpoint {
        match self {
            DatagramSocket::Udp(s) => match s.local_addr() {
                Ok(addr) => Endpoint::Udp(host_port(addr)),
                Err(_) => requested.clone(),
            },
            DatagramSocket::Socks(_) => requested.clone(),
            DatagramSocket::Unix(socket, _) => {
                match socket
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(Into::into))
                {
                    Some(path) if matches!(requested, Endpoint::UnixDgram(UnixAddr::Path(_))) => {
                        Endpoint::UnixDgram(UnixAddr::Path(path))
                    }
                    _ => requested.clone(),
                }
            }
        }
    }
}

/// A datagram socket detached from any tokio runtime, so each server thread can register
/// its own copy of one socket (see [`super::StdListener`]).
#[derive(Debug)]
pub enum StdDatagram {
    /// A UDP socket.
    Udp(std::net::UdpSocket),
    /// A Unix datagram socket.
    Unix(std::os::unix::net::UnixDatagram),
}

impl DatagramSocket {
    /// Detaches the socket from the current runtime; the Unix file guard comes back apart.
    ///
    /// # Errors
    /// When the socket cannot be deregistered.
    pub fn into_std(self) -> io::Result<(StdDatagram, Option<UnixPathGuard>)> {
        match self {
            DatagramSocket::Udp(s) => Ok((StdDatagram::Udp(s.into_std()?), None)),
            DatagramSocket::Unix(s, guard) => Ok((StdDatagram::Unix(s.into_std()?), guard)),
            DatagramSocket::Socks(_) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a UDP association through a SOCKS5 proxy is a client socket; servers cannot use it",
            )),
        }
    }
}

impl std::os::fd::AsFd for StdDatagram {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            StdDatagram::Udp(s) => s.as_fd(),
            StdDatagram::Unix(s) => s.as_fd(),
        }
    }
}

impl StdDatagram {
    /// Makes receiving and sending wait (for a thread that does nothing else). This holds
    /// for every handle on the socket.
    ///
    /// # Errors
    /// When the kernel refuses the change.
    pub fn set_blocking(&self) -> io::Result<()> {
        match self {
            StdDatagram::Udp(s) => s.set_nonblocking(false),
            StdDatagram::Unix(s) => s.set_nonblocking(false),
        }
    }

    /// Wakes every thread blocked receiving on this socket, for good: from now on a
    /// receive that finds nothing queued returns at once, empty (`shutdown(SHUT_RD)`;
    /// Linux wakes the receivers even on an unconnected datagram socket, although the call
    /// itself reports "not connected" there).
    pub fn stop_receivers(&self) {
        let _ = SockRef::from(self).shutdown(std::net::Shutdown::Read);
    }

    /// Another handle on the same socket.
    ///
    /// # Errors
    /// When the process is out of file descriptors.
    pub fn try_clone(&self) -> io::Result<StdDatagram> {
        match self {
            StdDatagram::Udp(s) => s.try_clone().map(StdDatagram::Udp),
            StdDatagram::Unix(s) => s.try_clone().map(StdDatagram::Unix),
        }
    }

    /// A socket for another server thread: with `SO_REUSEPORT` a new UDP socket bound to
    /// the same address (the kernel then sends each client's datagrams to one of them),
    /// otherwise another handle on this one.
    ///
    /// # Errors
    /// When the new socket cannot be bound or the descriptor copied.
    pub fn sibling(&self, opts: &ListenOptions) -> io::Result<StdDatagram> {
        match self {
            StdDatagram::Udp(s) if opts.reuse_port => {
                udp_socket(s.local_addr()?, opts).map(StdDatagram::Udp)
            }
            _ => self.try_clone(),
        }
    }

    /// Registers this copy with the current runtime.
    ///
    /// # Errors
    /// When the socket cannot be registered with the runtime's reactor.
    pub fn into_tokio(self) -> io::Result<DatagramSocket> {
        match self {
            StdDatagram::Udp(s) => UdpSocket::from_std(s).map(DatagramSocket::Udp),
            StdDatagram::Unix(s) => {
                UnixDatagram::from_std(s).map(|s| DatagramSocket::Unix(s, None))
            }
        }
    }
}

/// Binds the first resolved address that works.
async fn bind_udp(
    endpoint: &Endpoint,
    hp: &HostPort,
    opts: &ListenOptions,
) -> Result<DatagramSocket> {
    let mut last_error = None;
    for addr in hp.resolve().await? {
        match udp_socket(addr, opts).and_then(UdpSocket::from_std) {
            Ok(socket) => return Ok(DatagramSocket::Udp(socket)),
            Err(e) => last_error = Some(ip_listen_error(e, endpoint, addr)),
        }
    }
    Err(last_error.unwrap_or_else(|| Error::HostNotFound {
        host: hp.host_text(),
        reason: "no addresses".into(),
    }))
}

/// The datagram socket systemd passed, as the socket of its domain.
///
/// # Errors
/// As [`activation::datagram_socket`].
fn passed_socket(endpoint: &Endpoint) -> Result<DatagramSocket> {
    let socket = activation::datagram_socket(endpoint)?;
    let listen_error = |source| activation::listen_error(endpoint, source);
    if activation::is_unix(&socket, endpoint)? {
        let std_socket: std::os::unix::net::UnixDatagram = socket.into();
        Ok(DatagramSocket::Unix(
            UnixDatagram::from_std(std_socket).map_err(listen_error)?,
            None,
        ))
    } else {
        let std_socket: std::net::UdpSocket = socket.into();
        Ok(DatagramSocket::Udp(
            UdpSocket::from_std(std_socket).map_err(listen_error)?,
        ))
    }
}

/// Binds a Unix datagram socket, replacing a stale file but never a live one.
fn bind_unix(
    endpoint: &Endpoint,
    addr: &UnixAddr,
    perms: unix_path::UnixFilePerms,
) -> Result<DatagramSocket> {
    let sockaddr = unix_sockaddr(addr);
    let guard_path = match addr {
        UnixAddr::Path(path) => {
            unix_path::prepare(path, endpoint, Type::DGRAM)?;
            Some(path.as_path())
        }
        UnixAddr::Abstract(_) => None,
    };
    let bound = match guard_path {
        Some(path) => unix_path::bind_with_perms(path, perms, || unix_dgram_bound(sockaddr)),
        None => unix_dgram_bound(sockaddr),
    };
    let socket = bound.map_err(|e| unix_path::listen_error(e, endpoint))?;
    Ok(DatagramSocket::Unix(
        socket,
        guard_path.map(UnixPathGuard::new),
    ))
}

/// A non-blocking Unix datagram socket bound to `sockaddr`.
fn unix_dgram_bound(sockaddr: io::Result<SockAddr>) -> io::Result<UnixDatagram> {
    let socket = socket2::Socket::new(socket2::Domain::UNIX, Type::DGRAM, None)?;
    socket.set_nonblocking(true)?;
    socket.bind(&sockaddr?)?;
    UnixDatagram::from_std(socket.into())
}

/// Binds an ephemeral port of the target's family and connects to the first address.
async fn connect_udp(
    endpoint: &Endpoint,
    hp: &HostPort,
    options: &SocketOptions,
) -> Result<DatagramSocket> {
    let mut last_error = None;
    let addrs = hp.resolve().await?;
    if !addrs.iter().any(|addr| options.reaches(*addr)) {
        return Err(options.no_address_of_source_family(endpoint));
    }
    for addr in addrs.into_iter().filter(|addr| options.reaches(*addr)) {
        let socket = udp_client(addr, options)?;
        let attempt = async {
            let socket = UdpSocket::from_std(socket)?;
            socket.connect(addr).await?;
            Ok::<_, io::Error>(socket)
        };
        match attempt.await {
            Ok(socket) => return Ok(DatagramSocket::Udp(socket)),
            Err(e) => last_error = Some(connect_error(e, endpoint)),
        }
    }
    Err(last_error.unwrap_or_else(|| Error::HostNotFound {
        host: hp.host_text(),
        reason: "no addresses".into(),
    }))
}

/// Binds an abstract client name (no file to clean up) and connects to the server socket.
fn connect_unix(endpoint: &Endpoint, addr: &UnixAddr) -> Result<DatagramSocket> {
    static NEXT_CLIENT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "sockit-client-{}-{}",
        std::process::id(),
        NEXT_CLIENT.fetch_add(1, Ordering::Relaxed)
    );
    let target = unix_sockaddr(addr);
    let connect = || -> io::Result<UnixDatagram> {
        let socket = unix_dgram_bound(SockAddr::unix(abstract_path(name.as_bytes())))?;
        SockRef::from(&socket).connect(&target?)?;
        Ok(socket)
    };
    connect()
        .map(|socket| DatagramSocket::Unix(socket, None))
        .map_err(|e| connect_error(e, endpoint))
}

/// One attempt at `udp://` through the `--proxy` chain: a SOCKS5 UDP association, within
/// the connect timeout.
async fn associate(
    endpoint: &Endpoint,
    hp: &HostPort,
    options: &ConnectOptions,
) -> Result<DatagramSocket> {
    let association = UdpAssociation::open(&options.proxies, hp, &options.socket);
    tokio::time::timeout(options.timeout, association)
        .await
        .map_err(|_| Error::Timeout {
            doing: format!("setting up UDP to {endpoint} through {}", options.proxies),
            after: options.timeout,
        })?
        .map(|association| DatagramSocket::Socks(Box::new(association)))
}

/// Moves the payload at `range` of `buf` to its start; returns its length.
fn to_front(buf: &mut [u8], range: std::ops::Range<usize>) -> usize {
    let len = range.len();
    buf.copy_within(range, 0);
    len
}
