//! Stream listeners: binding `tcp://`, `tls://` and `unix:` endpoints (or taking the
//! socket systemd passed), accepting, and the detached copy each server thread serves.
//!
//! A `tls://` listener is a plain TCP listener: the TLS handshake belongs to each
//! connection's own task ([`super::tls::ServerTls::accept`]), so a slow handshake never
//! holds up `accept`.

use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll};

use socket2::{Domain, Socket, Type};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use socket2::SockAddr;
use tokio::io::unix::AsyncFd;

use super::activation;
use super::errors::ip_listen_error;
use super::sockopt::{ListenOptions, ListenSource, tcp_listener};
use super::std_stream::StdStream;
use super::stream::Stream;
use super::syscall::accept_nonblocking;
use super::unix_path::{self, UnixPathGuard};
use super::unix_sockaddr;
use crate::endpoint::{Delivery, Endpoint, Host, HostPort, PeerAddr, UnixAddr};
use crate::error::{Error, Result};

/// A socket accepting stream connections, of whichever transport the endpoint named.
///
/// The sockets are watched with [`AsyncFd`] rather than tokio's listener types so that
/// [`StreamListener::accept_std`] can hand out connections that are not yet registered
/// with the reactor: the caller registers each on the runtime that serves it.
#[derive(Debug)]
pub enum StreamListener {
    /// TCP over IPv4 or IPv6 (also for `tls://`: TLS starts after `accept`).
    Tcp(AsyncFd<std::net::TcpListener>),
    /// Unix stream socket; the guard removes its file when the listener is dropped.
    Unix(
        AsyncFd<std::os::unix::net::UnixListener>,
        Option<UnixPathGuard>,
    ),
}

impl AsRawFd for StdListener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            StdListener::Tcp(l) => l.as_raw_fd(),
            StdListener::Unix(l) => l.as_raw_fd(),
        }
    }
}

impl StreamListener {
    /// Binds and listens on a stream endpoint (`tcp://`, `tls://`, `unix:`).
    ///
    /// # Errors
    /// [`Error::AddrInUse`], [`Error::PermissionDenied`], [`Error::NotASocket`],
    /// [`Error::HostNotFound`] or [`Error::Listen`], each naming the address.
    pub async fn bind(endpoint: &Endpoint, opts: &ListenOptions) -> Result<StreamListener> {
        if opts.source == ListenSource::Systemd && endpoint.delivery() == Delivery::Stream {
            return passed_listener(endpoint, opts.backlog);
        }
        match endpoint {
            Endpoint::Tcp(hp) | Endpoint::Tls(hp) => bind_tcp(endpoint, hp, opts).await,
            Endpoint::Unix(addr) => bind_unix(endpoint, addr, opts),
            Endpoint::Udp(_) | Endpoint::UnixDgram(_) => Err(Error::Usage(format!(
                "{endpoint} is a datagram endpoint; a stream listener needs tcp:// or unix:"
            ))),
        }
    }

    /// Accepts the next connection, registered with the current runtime.
    ///
    /// Cancel-safe: dropping the future loses no connection.
    pub async fn accept(&self) -> io::Result<(Stream, PeerAddr)> {
        let (stream, peer) = self.accept_std().await?;
        Ok((stream.into_tokio()?, peer))
    }

    /// Accepts the next connection without registering it: the caller may serve it on the
    /// spot and close it, and only register it ([`StdStream::into_tokio`]) if it must wait.
    ///
    /// TCP connections have `TCP_NODELAY` (every exchange here is a small request and a
    /// small reply): Linux copies it from the listener; elsewhere it is set here.
    /// Cancel-safe: dropping the future loses no connection.
    pub async fn accept_std(&self) -> io::Result<(StdStream, PeerAddr)> {
        std::future::poll_fn(|cx| self.poll_accept_std(cx)).await
    }

    /// [`StreamListener::accept_std`] as a poll function, for a loop that waits for
    /// several things at once: the wake-up it registers stays in place between polls
    /// (so one task at a time may poll it).
    pub fn poll_accept_std(&self, cx: &mut Context<'_>) -> Poll<io::Result<(StdStream, PeerAddr)>> {
        match self {
            StreamListener::Tcp(listener) => {
                let (fd, addr) = std::task::ready!(poll_accept_ready(listener, cx))?;
                Poll::Ready(Ok(tcp_accepted(fd, addr)))
            }
            StreamListener::Unix(listener, _) => loop {
                let (fd, addr) = std::task::ready!(poll_accept_ready(listener, cx))?;
                if unix_path::peer_allowed(&fd) {
                    return Poll::Ready(Ok(unix_accepted(fd, addr)));
                }
            },
        }
    }

    /// The endpoint actually bound: with port 0, this carries the port the kernel chose.
    pub fn local_endpoint(&self, requested: &Endpoint) -> Endpoint {
        match self {
            StreamListener::Tcp(listener) => match (listener.get_ref().local_addr(), requested) {
                (Ok(addr), Endpoint::Tls(_)) => Endpoint::Tls(host_port(addr)),
                (Ok(addr), _) => Endpoint::Tcp(host_port(addr)),
                (Err(_), _) => requested.clone(),
            },
            StreamListener::Unix(listener, _) => {
                match listener
                    .get_ref()
                    .local_addr()
                    .ok()
                    .and_then(|a| a.as_pathname().map(Into::into))
                {
                    // A socket from systemd is wherever its unit put it.
                    Some(path) if matches!(requested, Endpoint::Unix(UnixAddr::Path(_))) => {
                        Endpoint::Unix(UnixAddr::Path(path))
                    }
                    _ => requested.clone(),
                }
            }
        }
    }
}

/// The listening socket systemd passed, as the listener of its domain.
///
/// # Errors
/// As [`activation::stream_socket`].
fn passed_listener(endpoint: &Endpoint, backlog: u32) -> Result<StreamListener> {
    let socket = activation::stream_socket(endpoint, backlog)?;
    let listen_error = |source| activation::listen_error(endpoint, source);
    if activation::is_unix(&socket, endpoint)? {
        let std_listener: std::os::unix::net::UnixListener = socket.into();
        // No path guard: the socket file belongs to systemd, which removes it.
        Ok(StreamListener::Unix(
            watch(std_listener).map_err(listen_error)?,
            None,
        ))
    } else {
        let std_listener: std::net::TcpListener = socket.into();
        Ok(StreamListener::Tcp(
            watch(std_listener).map_err(listen_error)?,
        ))
    }
}

/// Registers a listening socket (or an epoll set) with the current runtime, for
/// readability only.
pub(crate) fn watch<L: AsRawFd>(listener: L) -> io::Result<AsyncFd<L>> {
    // SAFETY: the std listener types own their descriptor: it stays open, and is the
    // same descriptor, until the listener is dropped, which only happens after the
    // AsyncFd gives it back (`into_inner`) or is dropped itself.
    unsafe { AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

/// An accepted TCP connection, with `TCP_NODELAY` (Linux hands it down from the listener).
fn tcp_accepted(fd: OwnedFd, addr: SockAddr) -> (StdStream, PeerAddr) {
    let stream = std::net::TcpStream::from(fd);
    let peer = addr
        .as_socket()
        .map_or_else(|| PeerAddr::Unix(Box::new(addr)), PeerAddr::Ip);
    (StdStream::Tcp(stream), peer)
}

/// An accepted Unix stream connection.
fn unix_accepted(fd: OwnedFd, addr: SockAddr) -> (StdStream, PeerAddr) {
    let stream = std::os::unix::net::UnixStream::from(fd);
    (StdStream::Unix(stream), PeerAddr::Unix(Box::new(addr)))
}

/// Accepts one connection once the listener is readable. Cancel-safe.
fn poll_accept_ready<L: AsRawFd + AsFd>(
    listener: &AsyncFd<L>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<(OwnedFd, SockAddr)>> {
    loop {
        let mut ready = std::task::ready!(listener.poll_read_ready(cx))?;
        match ready.try_io(|inner| accept_nonblocking(inner.get_ref())) {
            Ok(accepted) => return Poll::Ready(accepted),
            // Someone else took the connection (another thread's copy of the socket):
            // wait for the next one.
            Err(_would_block) => continue,
        }
    }
}

/// A listening socket detached from any tokio runtime.
///
/// A server with several threads gives each thread's runtime its own copy (`dup(2)`) of
/// one listening socket: the kernel hands each connection to whichever thread accepts it
/// first, and that thread serves it to the end, with no hand-off between threads.
#[derive(Debug)]
pub enum StdListener {
    /// A TCP listener.
    Tcp(std::net::TcpListener),
    /// A Unix stream listener.
    Unix(std::os::unix::net::UnixListener),
}

impl StreamListener {
    /// Detaches the socket from the current runtime. The Unix file guard comes back
    /// apart: it belongs to the server as a whole, not to any one copy of the socket.
    ///
    /// # Errors
    /// When the socket cannot be deregistered (it then stays with the runtime).
    pub fn into_std(self) -> io::Result<(StdListener, Option<UnixPathGuard>)> {
        match self {
            StreamListener::Tcp(listener) => Ok((StdListener::Tcp(listener.into_inner()), None)),
            StreamListener::Unix(listener, guard) => {
                Ok((StdListener::Unix(listener.into_inner()), guard))
            }
        }
    }
}

impl StdListener {
    /// Another handle on the same listening socket.
    ///
    /// # Errors
    /// When the process is out of file descriptors.
    pub fn try_clone(&self) -> io::Result<StdListener> {
        match self {
            StdListener::Tcp(l) => l.try_clone().map(StdListener::Tcp),
            StdListener::Unix(l) => l.try_clone().map(StdListener::Unix),
        }
    }

    /// A listener for another server thread: with `SO_REUSEPORT` (`opts.reuse_port`), a
    /// new socket bound to the same TCP address, so the kernel spreads connections over
    /// the threads' own accept queues; otherwise (and always for Unix sockets, which have
    /// no such option) another handle on this one.
    ///
    /// # Errors
    /// When the new socket cannot be bound or the descriptor copied.
    pub fn sibling(&self, opts: &ListenOptions) -> io::Result<StdListener> {
        match self {
            StdListener::Tcp(l) if opts.reuse_port => {
                tcp_listener(l.local_addr()?, opts).map(StdListener::Tcp)
            }
            _ => self.try_clone(),
        }
    }

    /// Accepts the next queued connection without waiting (`WouldBlock` when there is
    /// none; the listener is non-blocking), for a loop that watches the listener itself.
    ///
    /// # Errors
    /// `WouldBlock`, or what `accept(2)` reports.
    pub fn accept_now(&self) -> io::Result<(StdStream, PeerAddr)> {
        match self {
            StdListener::Tcp(l) => accept_nonblocking(l).map(|(fd, addr)| tcp_accepted(fd, addr)),
            StdListener::Unix(l) => loop {
                let (fd, addr) = accept_nonblocking(l)?;
                if unix_path::peer_allowed(&fd) {
                    return Ok(unix_accepted(fd, addr));
                }
            },
        }
    }

    /// Registers this copy with the current runtime (call it on the thread that serves it).
    ///
    /// # Errors
    /// When the socket cannot be registered with the runtime's reactor.
    pub fn into_tokio(self) -> io::Result<StreamListener> {
        match self {
            StdListener::Tcp(l) => watch(l).map(StreamListener::Tcp),
            StdListener::Unix(l) => watch(l).map(|l| StreamListener::Unix(l, None)),
        }
    }
}

/// A [`HostPort`] for a concrete socket address.
pub(crate) fn host_port(addr: SocketAddr) -> HostPort {
    HostPort {
        host: Host::Ip(addr.ip()),
        port: addr.port(),
    }
}

/// Binds the first resolved address that works, so `localhost` binds whichever family exists.
async fn bind_tcp(
    endpoint: &Endpoint,
    hp: &HostPort,
    opts: &ListenOptions,
) -> Result<StreamListener> {
    let mut last_error = None;
    for addr in hp.resolve().await? {
        match tcp_listener(addr, opts).and_then(watch) {
            Ok(listener) => return Ok(StreamListener::Tcp(listener)),
            Err(e) => last_error = Some(ip_listen_error(e, endpoint, addr)),
        }
    }
    Err(last_error.unwrap_or_else(|| Error::HostNotFound {
        host: hp.host_text(),
        reason: "no addresses".into(),
    }))
}

/// Binds a Unix stream socket, replacing a stale file but never a live socket or other file.
fn bind_unix(endpoint: &Endpoint, addr: &UnixAddr, opts: &ListenOptions) -> Result<StreamListener> {
    let sockaddr = unix_sockaddr(addr);
    let guard_path = match addr {
        UnixAddr::Path(path) => {
            unix_path::prepare(path, endpoint, Type::STREAM)?;
            Some(path.as_path())
        }
        UnixAddr::Abstract(_) => None,
    };
    let listen = || -> io::Result<std::os::unix::net::UnixListener> {
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        let sockaddr = sockaddr?;
        match guard_path {
            Some(path) => {
                unix_path::bind_with_perms(path, opts.unix_file, || socket.bind(&sockaddr))?;
            }
            None => socket.bind(&sockaddr)?,
        }
        socket.listen(i32::try_from(opts.backlog).unwrap_or(i32::MAX))?;
        Ok(socket.into())
    };
    let listener = listen()
        .and_then(watch)
        .map_err(|e| unix_path::listen_error(e, endpoint))?;
    let guard = guard_path.map(UnixPathGuard::new);
    Ok(StreamListener::Unix(listener, guard))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use std::io;
    use std::os::fd::AsRawFd;

    use super::{StdListener, StreamListener};
    use crate::endpoint::{Endpoint, UnixAddr};
    use crate::error::Error;
    use crate::transport::ListenOptions;
    use crate::transport::StdStream;

    fn endpoint(text: &str) -> Endpoint {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[tokio::test]
    async fn port_zero_binds_the_kernels_port_and_accepts_with_the_clients_address() {
        let requested = endpoint("tcp://127.0.0.1:0");
        let listener = StreamListener::bind(&requested, &ListenOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let local = listener.local_endpoint(&requested);
        let port = local.host_port().map_or(0, |hp| hp.port);
        assert_ne!(port, 0, "{local}");
        let mut client =
            std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
        client.write_all(b"x").unwrap_or_else(|e| panic!("{e}"));
        let (_stream, peer) = listener.accept().await.unwrap_or_else(|e| panic!("{e}"));
        let client_addr = client.local_addr().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(peer.to_string(), client_addr.to_string());
    }

    #[tokio::test]
    async fn a_port_in_use_is_refused_with_the_address_named() {
        let first = StreamListener::bind(&endpoint("tcp://127.0.0.1:0"), &ListenOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let taken = first.local_endpoint(&endpoint("tcp://127.0.0.1:0"));
        let second = StreamListener::bind(&taken, &ListenOptions::default()).await;
        assert!(
            matches!(&second, Err(Error::AddrInUse { endpoint, .. }) if *endpoint == taken),
            "{:?}",
            second.err().map(|e| e.to_string())
        );
    }

    #[tokio::test]
    async fn a_unix_listener_never_replaces_a_regular_file_and_removes_its_own_socket() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let file = dir.path().join("data.txt");
        std::fs::write(&file, b"keep me").unwrap_or_else(|e| panic!("{e}"));
        let on_file = Endpoint::Unix(UnixAddr::Path(file.clone()));
        let refused = StreamListener::bind(&on_file, &ListenOptions::default()).await;
        assert!(refused.is_err(), "a regular file was taken over");
        assert_eq!(
            std::fs::read(&file).unwrap_or_else(|e| panic!("{e}")),
            b"keep me"
        );

        let path = dir.path().join("server.sock");
        let socket = Endpoint::Unix(UnixAddr::Path(path.clone()));
        let listener = StreamListener::bind(&socket, &ListenOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(path.exists());
        let (_std, guard) = listener.into_std().unwrap_or_else(|e| panic!("{e}"));
        drop(guard);
        assert!(!path.exists(), "the socket file outlived its server");
    }

    async fn bind(text: &str, opts: &ListenOptions) -> StreamListener {
        StreamListener::bind(&endpoint(text), opts)
            .await
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// The TCP port `listener` got.
    fn port(listener: &StreamListener) -> u16 {
        let local = listener.local_endpoint(&endpoint("tcp://127.0.0.1:0"));
        local.host_port().map_or(0, |hp| hp.port)
    }

    #[tokio::test]
    async fn a_detached_listener_accepts_without_waiting_and_says_when_nothing_is_queued() {
        let listener = bind("tcp://127.0.0.1:0", &ListenOptions::default()).await;
        let port = port(&listener);
        let (detached, guard) = listener.into_std().unwrap_or_else(|e| panic!("{e}"));
        assert!(guard.is_none(), "a TCP listener has no file to remove");
        let nothing = detached.accept_now().map(|_| ());
        assert_eq!(
            nothing.map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
        let _client =
            std::net::TcpStream::connect(("127.0.0.1", port)).unwrap_or_else(|e| panic!("{e}"));
        let (stream, _) = detached.accept_now().unwrap_or_else(|e| panic!("{e}"));
        let StdStream::Tcp(stream) = stream else {
            panic!("a TCP listener accepted a Unix stream");
        };
        let mut buf = [0u8; 1];
        assert_eq!(
            std::io::Read::read(&mut &stream, &mut buf).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock),
            "accepted connections are non-blocking"
        );
    }

    #[tokio::test]
    async fn a_sibling_with_reuse_port_is_a_socket_of_its_own_on_the_same_port() {
        let opts = ListenOptions {
            reuse_port: true,
            ..ListenOptions::default()
        };
        let listener = bind("tcp://127.0.0.1:0", &opts).await;
        let port = port(&listener);
        let (first, _) = listener.into_std().unwrap_or_else(|e| panic!("{e}"));
        let sibling = first.sibling(&opts).unwrap_or_else(|e| panic!("{e}"));
        let (StdListener::Tcp(a), StdListener::Tcp(b)) = (&first, &sibling) else {
            panic!("TCP listeners expected");
        };
        assert_ne!(a.as_raw_fd(), b.as_raw_fd());
        let local = b.local_addr().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(local.port(), port);
    }
}
