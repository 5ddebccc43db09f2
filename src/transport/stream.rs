//! Byte-stream transports: TCP (IPv4/IPv6), Unix stream sockets and TLS over TCP,
//! listening and connecting.
//!
//! A `tls://` listener is a plain TCP listener: the TLS handshake belongs to each
//! connection's own task ([`super::tls::ServerTls::accept`]), so a slow handshake never
//! holds up `accept`. A `tls://` connection is TCP followed by the client handshake, both
//! within the one connect timeout of [`ConnectOptions`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use socket2::SockAddr;
use tokio::io::unix::AsyncFd;
use tokio::net::{TcpStream, UnixStream};

use super::activation::{self, ListenSource};
use super::sockopt::{ListenOptions, tcp_listener};
use super::tls::ClientTls;
use super::unix_path::{self, UnixPathGuard};
use super::{PeerAddr, unix_peer, unix_sockaddr};
use crate::endpoint::{Delivery, Endpoint, Host, HostPort, UnixAddr};
use crate::error::{Error, Result};

/// A socket accepting stream connections, of whichever transport the endpoint named.
///
/// The sockets are watched with [`AsyncFd`] rather than tokio's listener types so that
/// [`StreamListener::accept_std`] can hand out connections that are not yet registered
/// with the reactor: a server that can answer at once never registers them at all.
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

/// A connection just accepted: non-blocking, but not registered with any runtime yet.
///
/// Reading and writing it never waits (`WouldBlock` instead); [`StdStream::into_tokio`]
/// registers it when the connection has to wait for its client.
#[derive(Debug)]
pub enum StdStream {
    /// A TCP connection.
    Tcp(std::net::TcpStream),
    /// A Unix stream connection.
    Unix(std::os::unix::net::UnixStream),
}

impl StdStream {
    /// Reads what has already arrived; `WouldBlock` when nothing has.
    #[inline]
    pub fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        recv_uncancellable(self.as_fd(), buf)
    }

    /// Writes what the socket buffer takes now; `WouldBlock` when it takes nothing.
    #[inline]
    pub fn write_now(&self, buf: &[u8]) -> io::Result<usize> {
        send_uncancellable(self.as_fd(), buf)
    }

    /// Writes a connection's last bytes and, when the socket takes them all, sends our FIN
    /// with them: on TCP the bytes are held back (`MSG_MORE`) until the FIN joins them, so
    /// a one-shot reply leaves as one segment instead of two and the client acknowledges
    /// once: one segment fewer each way for the note's exchange than a plain write and
    /// close. What the socket does not take now is returned short, as with
    /// [`StdStream::write_now`], and no FIN is sent.
    ///
    /// The FIN is sent by `shutdown`, not left to `close`: a close with unread input
    /// would reset the connection and throw the held-back reply away.
    pub fn write_last_now(&self, buf: &[u8]) -> io::Result<usize> {
        let written = match self {
            StdStream::Tcp(_) => {
                let flags = rustix::net::SendFlags::MORE | rustix::net::SendFlags::NOSIGNAL;
                rustix::net::send(self.as_fd(), buf, flags)?
            }
            StdStream::Unix(_) => self.write_now(buf)?,
        };
        if written == buf.len() {
            // A failure here means the connection is gone; its close follows anyway.
            let _ = self.shutdown_write();
        }
        Ok(written)
    }

    /// Asks the kernel to report this TCP connection readable only once `bytes` have
    /// arrived (`SO_RCVLOWAT`), or its end: a bulk sender then wakes the server once per
    /// large chunk instead of once per segment. Data below the mark stays queued until
    /// more arrives or the caller reads anyway. Linux's Unix stream sockets ignore the
    /// mark when they report readiness, so for them this does nothing.
    ///
    /// # Errors
    /// When the kernel refuses the option.
    pub fn set_wake_threshold(&self, bytes: usize) -> io::Result<()> {
        let StdStream::Tcp(s) = self else {
            return Ok(());
        };
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: SO_RCVLOWAT takes an int; we pass a pointer to one and its size.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(s),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Sends our FIN: no more data from this side (the client may still send).
    ///
    /// # Errors
    /// When the connection is already gone.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            StdStream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            StdStream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }

    /// Registers the connection with the current runtime.
    ///
    /// # Errors
    /// When the reactor cannot take another socket.
    pub fn into_tokio(self) -> io::Result<Stream> {
        match self {
            StdStream::Tcp(s) => TcpStream::from_std(s).map(Stream::Tcp),
            StdStream::Unix(s) => UnixStream::from_std(s).map(Stream::Unix),
        }
    }
}

/// recv(2) as the bare system call, through rustix (its Linux backend makes the call
/// itself, inlined, instead of going through libc). glibc's `recv` (which std calls)
/// brackets every call in pthread cancellation bookkeeping once a process has a second
/// thread: about 60 of the 400 user-space instructions of an echoed message in the fast
/// lane, and glibc's `syscall` wrapper costs another 11 per call. No sockit thread is
/// ever cancelled, so the brackets buy nothing; what skipping them gains is measured in
/// `bench/RESULTS.md` (the design choices table).
#[inline]
fn recv_uncancellable(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let (received, _) = rustix::net::recv(fd, buf, rustix::net::RecvFlags::empty())?;
    Ok(received)
}

/// send(2) with `MSG_NOSIGNAL` (a closed peer is an `EPIPE` error, not a signal) as the
/// bare system call, for the reason [`recv_uncancellable`] gives.
#[inline]
fn send_uncancellable(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    Ok(rustix::net::send(
        fd,
        buf,
        rustix::net::SendFlags::NOSIGNAL,
    )?)
}

impl AsRawFd for StdListener {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            StdListener::Tcp(l) => l.as_raw_fd(),
            StdListener::Unix(l) => l.as_raw_fd(),
        }
    }
}

impl AsFd for StdStream {
    #[inline]
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the descriptor stays open as long as `self`, which the result borrows.
        // (std's own `as_fd` is not inlined across crates; `as_raw_fd` is, and this is
        // on the per-message path.)
        unsafe { BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }
}

impl std::os::fd::AsRawFd for StdStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            StdStream::Tcp(s) => s.as_raw_fd(),
            StdStream::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// `accept(2)`s one connection, already non-blocking, in one system call (`accept4`).
fn accept_nonblocking(listener: &impl AsFd) -> io::Result<(OwnedFd, SockAddr)> {
    let fd = listener.as_fd().as_raw_fd();
    // SAFETY: accept4 writes at most `len` bytes into the zeroed storage socket2
    // provides and updates `len`; a non-negative result is a new descriptor that
    // nothing else owns.
    unsafe {
        SockAddr::try_init(
            |storage, len| match accept4_uncancellable(fd, storage.cast(), len) {
                accepted if accepted >= 0 => Ok(OwnedFd::from_raw_fd(accepted)),
                _ => Err(io::Error::last_os_error()),
            },
        )
    }
}

/// accept4(2) with `SOCK_NONBLOCK | SOCK_CLOEXEC`; -1 with `errno` set on failure. The
/// bare system call, not glibc's `accept4`, which brackets the call with pthread
/// cancellation bookkeeping in a process with threads (about 80 instructions of the
/// note's one-shot exchange; see [`recv_uncancellable`]).
///
/// # Safety
/// `storage` must be valid for writes of `*len` bytes, and `len` for a read and a write.
unsafe fn accept4_uncancellable(
    fd: RawFd,
    storage: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> RawFd {
    let flags = libc::c_long::from(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    // SAFETY: the caller's pointers are valid as documented; glibc's syscall(3) returns
    // -1 and sets errno on failure.
    let accepted = unsafe {
        libc::syscall(
            libc::SYS_accept4,
            libc::c_long::from(fd),
            storage,
            len,
            flags,
        )
    };
    RawFd::try_from(accepted).unwrap_or(-1)
}

/// One connected byte stream.
///
/// An enum rather than a trait object: the server's per-connection code is generic over
/// `AsyncRead + AsyncWrite`, and the match per call costs nothing next to the syscall.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix stream connection.
    Unix(UnixStream),
    /// A TLS session over TCP, client or server side. Boxed: the session state is large
    /// and the other variants are a file descriptor.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

/// How to connect: the limit on the attempt and, for `tls://`, how to check the server.
///
/// A small struct rather than more arguments, so new connect settings do not change
/// every caller. `From<Duration>` keeps the common "just a timeout" call short.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Bounds the whole attempt: every resolved address, and the TLS handshake.
    pub timeout: Duration,
    /// The TLS client for `tls://` endpoints; `None` means the system's trusted roots,
    /// loaded when first needed. Ignored for other schemes.
    pub tls: Option<ClientTls>,
}

impl ConnectOptions {
    /// Plain connect options with this timeout and default TLS (system roots).
    pub fn new(timeout: Duration) -> ConnectOptions {
        ConnectOptions { timeout, tls: None }
    }
}

impl From<Duration> for ConnectOptions {
    fn from(timeout: Duration) -> ConnectOptions {
        ConnectOptions::new(timeout)
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
            return activation::stream_listener(endpoint, opts.backlog);
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

/// Maps a bind/listen error on an IP address to the user-facing error with a remedy.
pub(crate) fn ip_listen_error(source: io::Error, endpoint: &Endpoint, addr: SocketAddr) -> Error {
    match source.kind() {
        io::ErrorKind::AddrInUse => {
            let next = endpoint.with_port(addr.port().checked_add(1).unwrap_or(1024));
            Error::AddrInUse {
                endpoint: endpoint.clone(),
                hint: format!("stop the program using it or pick another port, e.g. {next}"),
            }
        }
        io::ErrorKind::PermissionDenied => Error::PermissionDenied {
            endpoint: endpoint.clone(),
            hint: "ports below 1024 need root or CAP_NET_BIND_SERVICE; use a port of 1024 or more"
                .into(),
        },
        io::ErrorKind::AddrNotAvailable => Error::Listen {
            endpoint: endpoint.clone(),
            source: io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                format!("{} is not an address of this machine", addr.ip()),
            ),
        },
        _ => Error::Listen {
            endpoint: endpoint.clone(),
            source,
        },
    }
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
                unix_path::bind_with_perms(path, opts.unix_file, || socket.bind(&sockaddr))?
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

/// Connects to a stream endpoint, trying each resolved address in turn; for `tls://`,
/// then runs the TLS handshake.
///
/// The timeout bounds the whole attempt, all addresses and the handshake included.
///
/// # Errors
/// [`Error::Refused`] when nothing listens, [`Error::Timeout`], [`Error::HostNotFound`],
/// [`Error::Tls`]/[`Error::TlsSetup`] for TLS, or [`Error::Connect`] with the OS reason.
pub async fn connect_stream(
    endpoint: &Endpoint,
    options: impl Into<ConnectOptions>,
) -> Result<Stream> {
    let options = options.into();
    let timeout = options.timeout;
    let attempt = async {
        match endpoint {
            Endpoint::Tcp(hp) => connect_tcp(endpoint, hp).await.map(Stream::Tcp),
            Endpoint::Unix(addr) => connect_unix(endpoint, addr).await,
            Endpoint::Tls(hp) => {
                let tls = match options.tls {
                    Some(tls) => tls,
                    None => ClientTls::system()?,
                };
                let tcp = connect_tcp(endpoint, hp).await?;
                tls.handshake(tcp, endpoint, hp).await
            }
            Endpoint::Udp(_) | Endpoint::UnixDgram(_) => Err(Error::Usage(format!(
                "{endpoint} is a datagram endpoint, not a stream"
            ))),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| Error::Timeout {
            doing: format!("connecting to {endpoint}"),
            after: timeout,
        })?
}

/// Tries every address of `hp`; returns the first connection or the most telling error.
async fn connect_tcp(endpoint: &Endpoint, hp: &HostPort) -> Result<TcpStream> {
    let mut last_error = None;
    for addr in hp.resolve().await? {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => {
                tracing::debug!(%addr, "connect failed: {e}");
                last_error = Some(connect_error(e, endpoint));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| Error::HostNotFound {
        host: hp.host_text(),
        reason: "no addresses".into(),
    }))
}

/// Connects to a Unix stream socket by path or abstract name.
async fn connect_unix(endpoint: &Endpoint, addr: &UnixAddr) -> Result<Stream> {
    let result = match addr {
        UnixAddr::Path(path) => UnixStream::connect(path).await,
        UnixAddr::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            match std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
                Ok(sockaddr) => UnixStream::connect_addr(&sockaddr.into()).await,
                Err(e) => Err(e),
            }
        }
    };
    result
        .map(Stream::Unix)
        .map_err(|e| connect_error(e, endpoint))
}

/// A Unix path that exists but is no socket (a regular file, a directory) refuses
/// connections like a stale socket does; it is said as what it is, with the same exit
/// status as a missing socket file, since no server can listen there.
fn unix_path_not_a_socket(source: &io::Error, endpoint: &Endpoint) -> Option<Error> {
    use std::os::unix::fs::FileTypeExt;
    let (Endpoint::Unix(UnixAddr::Path(path)) | Endpoint::UnixDgram(UnixAddr::Path(path))) =
        endpoint
    else {
        return None;
    };
    if source.kind() != io::ErrorKind::ConnectionRefused {
        return None;
    }
    let kind = std::fs::metadata(path).ok()?.file_type();
    if kind.is_socket() {
        return None;
    }
    let what = if kind.is_dir() {
        "a directory"
    } else {
        "a file, not a socket"
    };
    Some(Error::Connect {
        endpoint: endpoint.clone(),
        source: io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} is {what}; give the path of the socket a server listens on",
                path.display()
            ),
        ),
    })
}

/// Maps a connect error to the user-facing error: refused, permission, missing file…
pub(crate) fn connect_error(source: io::Error, endpoint: &Endpoint) -> Error {
    if let Some(not_a_socket) = unix_path_not_a_socket(&source, endpoint) {
        return not_a_socket;
    }
    match source.kind() {
        io::ErrorKind::ConnectionRefused => Error::Refused {
            endpoint: endpoint.clone(),
        },
        io::ErrorKind::TimedOut => Error::Timeout {
            doing: format!("connecting to {endpoint}"),
            after: Duration::ZERO,
        },
        io::ErrorKind::NotFound => Error::Connect {
            endpoint: endpoint.clone(),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                "no socket file at that path; is the server running?",
            ),
        },
        io::ErrorKind::PermissionDenied => Error::PermissionDenied {
            endpoint: endpoint.clone(),
            hint: "you may not open that socket; check its permissions".into(),
        },
        _ => Error::Connect {
            endpoint: endpoint.clone(),
            source,
        },
    }
}

impl HostPort {
    /// The host as the user wrote it, for messages.
    pub(crate) fn host_text(&self) -> String {
        self.host.to_string()
    }
}

impl Stream {
    /// Where this stream is connected to, for messages.
    pub fn peer_addr(&self) -> io::Result<PeerAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(PeerAddr::Ip),
            Stream::Unix(s) => s.peer_addr().map(unix_peer),
            Stream::Tls(s) => s.get_ref().0.peer_addr().map(PeerAddr::Ip),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
