//! Socket options set before `bind`/`listen`, through `socket2`, in one place.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::activation::ListenSource;

/// How a listening socket is created: the knobs `std`/`tokio` do not expose.
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    /// The `listen(2)` backlog: connections the kernel queues while we are busy.
    /// The note uses 5; small backlogs make clients stall in SYN retries under load,
    /// so the default is 1024 (the kernel caps it at `net.core.somaxconn`).
    pub backlog: u32,
    /// `SO_REUSEPORT`: let several sockets (processes or threads) share one port, with the
    /// kernel spreading connections between them.
    pub reuse_port: bool,
    /// Bind the endpoint, or take the socket systemd passed (`--systemd`).
    pub source: ListenSource,
    /// Mode and owners of a Unix socket file (`--mode`, `--owner`, `--group`).
    pub unix_file: super::unix_path::UnixFilePerms,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions {
            backlog: 1024,
            reuse_port: false,
            source: ListenSource::Bind,
            unix_file: super::unix_path::UnixFilePerms::default(),
        }
    }
}

/// Creates a non-blocking TCP listener on `addr` with our options.
///
/// `SO_REUSEADDR` is set so a restarted server can bind while old connections sit in
/// `TIME_WAIT`; on Linux it does not let two live listeners share a port.
pub(crate) fn tcp_listener(
    addr: SocketAddr,
    opts: &ListenOptions,
) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    // Every exchange here is a small request and a small reply: no Nagle delay. Linux
    // copies this to each accepted socket, which saves a syscall per connection.
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    socket.listen(i32::try_from(opts.backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// Creates a non-blocking UDP socket bound to `addr`.
///
/// `SO_REUSEADDR` is deliberately not set: on Linux it would let a second UDP server bind
/// the same port silently, and "address in use" must be reported.
pub(crate) fn udp_socket(
    addr: SocketAddr,
    opts: &ListenOptions,
) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if opts.reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    Ok(socket.into())
}
