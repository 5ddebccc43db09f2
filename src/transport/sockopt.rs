//! Socket options set before `bind`/`listen`, through `socket2`, in one place.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, SockRef, Socket, TcpKeepalive, Type};

use crate::endpoint::{Endpoint, Host};
use crate::error::Error;

/// Where a listening socket comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ListenSource {
    /// Create and bind it at the endpoint's address.
    #[default]
    Bind,
    /// `--systemd`: take the one socket systemd passed (`LISTEN_FDS`); the endpoint only
    /// names the protocol to speak on it.
    Systemd,
}

/// How a listening socket is created: the knobs `std`/`tokio` do not expose.
#[derive(Debug, Clone)]
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
    /// `--tos`, `--keepalive`, `--mark`, buffers and the like, set on the listening
    /// socket: Linux copies them to every connection it accepts. The default sets
    /// `TCP_NODELAY` only.
    pub accepted: SocketOptions,
    /// Mode and owners of a Unix socket file (`--mode`, `--owner`, `--group`).
    pub unix_file: super::unix_path::UnixFilePerms,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions {
            backlog: 1024,
            reuse_port: false,
            source: ListenSource::Bind,
            accepted: SocketOptions::default(),
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
    // Every exchange here is a small request and a small reply: no Nagle delay unless
    // --delay asks for it. Linux copies this and the other options to each accepted
    // socket, which saves syscalls per connection.
    opts.accepted
        .apply(&SockRef::from(&socket), addr, Carrier::Tcp)
        .map_err(|e| io::Error::other(e.to_string()))?;
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
    // A group is meant to be shared: every receiver bound to it gets each datagram.
    let group = addr.ip().is_multicast();
    if group {
        socket.set_reuse_address(true)?;
    }
    opts.accepted
        .apply(&SockRef::from(&socket), addr, Carrier::Udp)
        .map_err(|e| io::Error::other(e.to_string()))?;
    socket.set_nonblocking(true)?;
    socket.bind(&SockAddr::from(addr))?;
    if group {
        opts.accepted
            .multicast
            .join(&SockRef::from(&socket), addr.ip())?;
    }
    Ok(socket.into())
}

/// Where the local end of a client socket is bound (`--source ADDR[:PORT]`, nc -s / -p).
///
/// `ip` is `None` for `:PORT` alone: the port is bound on the unspecified address of
/// whichever family the target has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Source {
    /// The local address, or `None` to let the kernel pick one of the target's family.
    pub ip: Option<IpAddr>,
    /// The local port; 0 lets the kernel pick.
    pub port: u16,
}

impl Source {
    /// The address to bind for a connection to `target`, or `None` when the source
    /// address is of the other family and cannot reach it.
    fn local_for(&self, target: SocketAddr) -> Option<SocketAddr> {
        match self.ip {
            Some(ip) if ip.is_ipv4() != target.is_ipv4() => None,
            Some(ip) => Some(SocketAddr::new(ip, self.port)),
            None => Some(SocketAddr::new(unspecified_like(target), self.port)),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.ip, self.port) {
            (Some(ip), 0) => write!(f, "{ip}"),
            (Some(ip), port) => write!(f, "{}", SocketAddr::new(ip, port)),
            (None, port) => write!(f, ":{port}"),
        }
    }
}

impl FromStr for Source {
    type Err = String;

    /// `127.0.0.1`, `127.0.0.1:5000`, `::1`, `[::1]:5000` or `:5000`.
    fn from_str(text: &str) -> Result<Source, String> {
        let text = text.trim();
        let bad = || {
            format!(
                "{text:?} is not a local address: write ADDR, ADDR:PORT, [IPv6]:PORT or :PORT, e.g. 127.0.0.1:5000"
            )
        };
        if let Some(port) = text.strip_prefix(':') {
            let port = port.parse().map_err(|_| bad())?;
            return Ok(Source { ip: None, port });
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(Source {
                ip: Some(addr.ip()),
                port: addr.port(),
            });
        }
        let bare = text.trim_start_matches('[').trim_end_matches(']');
        bare.parse::<IpAddr>()
            .map(|ip| Source {
                ip: Some(ip),
                port: 0,
            })
            .map_err(|_| bad())
    }
}

/// The unspecified address (`0.0.0.0` or `::`) of `target`'s family.
fn unspecified_like(target: SocketAddr) -> IpAddr {
    if target.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    }
}

/// Nagle's algorithm on TCP sockets (`--delay` / `--no-delay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Nagle {
    /// `TCP_NODELAY`: every write leaves at once. Right for the small request and reply
    /// exchanges sockit is mostly used for.
    #[default]
    Off,
    /// The kernel may hold small writes back to coalesce them (`--delay`).
    On,
}

/// Whether a UDP socket may send to broadcast addresses (`--broadcast`, nc -b).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Broadcast {
    /// The kernel refuses sends to a broadcast address (`EACCES`).
    #[default]
    Refused,
    /// `SO_BROADCAST` is set.
    Allowed,
}

/// TCP keepalive probes (`--keepalive IDLE[,INTERVAL,COUNT]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Quiet time before the first probe (`TCP_KEEPIDLE`).
    pub idle: Duration,
    /// Time between probes (`TCP_KEEPINTVL`); `None` keeps the system's.
    pub interval: Option<Duration>,
    /// Unanswered probes before the connection is dropped (`TCP_KEEPCNT`); `None` keeps
    /// the system's.
    pub count: Option<u32>,
}

impl FromStr for Keepalive {
    type Err = String;

    /// `30s` or `30s,5s,3`; bare numbers are seconds.
    fn from_str(text: &str) -> Result<Keepalive, String> {
        let bad = |why: String| {
            format!(
                "--keepalive {text:?}: {why} (write IDLE or IDLE,INTERVAL,COUNT, e.g. 30s,5s,3)"
            )
        };
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        let second = |d: Duration| {
            if d.as_secs() == 0 || d.subsec_nanos() != 0 {
                Err(bad(format!(
                    "{} is not a whole number of seconds of 1 or more",
                    humantime::format_duration(d)
                )))
            } else {
                Ok(d)
            }
        };
        let duration = |part: &str| seconds(part).map_err(&bad);
        match parts.as_slice() {
            [idle] => Ok(Keepalive {
                idle: second(duration(idle)?)?,
                interval: None,
                count: None,
            }),
            [idle, interval, count] => Ok(Keepalive {
                idle: second(duration(idle)?)?,
                interval: Some(second(duration(interval)?)?),
                count: Some(
                    count
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=127).contains(n))
                        .ok_or_else(|| bad(format!("{count:?} is not a count from 1 to 127")))?,
                ),
            }),
            _ => Err(bad("give one value or three".into())),
        }
    }
}

/// The local side of a client socket: its source address and the options set on it
/// before it connects. One struct for every command that connects, so the flags mean the
/// same everywhere; [`SocketOptions::apply`] is the one place they become `setsockopt`s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketOptions {
    /// `--source`: bind this address and/or port before connecting.
    pub source: Option<Source>,
    /// `--bind-device`: `SO_BINDTODEVICE`, traffic only through this interface.
    pub bind_device: Option<String>,
    /// `--mark`: `SO_MARK`, for policy routing and firewall rules.
    pub mark: Option<u32>,
    /// `--tos` / `--dscp`: `IP_TOS` (IPv4) or `IPV6_TCLASS` (IPv6), the whole byte.
    pub tos: Option<u8>,
    /// `--ttl` / `--hop-limit`: `IP_TTL` (IPv4) or `IPV6_UNICAST_HOPS` (IPv6).
    pub ttl: Option<u8>,
    /// `--keepalive`: TCP keepalive probes.
    pub keepalive: Option<Keepalive>,
    /// `--delay` / `--no-delay`.
    pub nagle: Nagle,
    /// `--send-buffer`: `SO_SNDBUF` (the kernel doubles it for its bookkeeping).
    pub send_buffer: Option<usize>,
    /// `--recv-buffer`: `SO_RCVBUF` (the kernel doubles it for its bookkeeping).
    pub recv_buffer: Option<usize>,
    /// `--broadcast`: `SO_BROADCAST` on UDP sockets.
    pub broadcast: Broadcast,
    /// `--multicast-if`, `--multicast-ttl`, `--multicast-loop`: UDP sockets whose peer
    /// or bound address is a group.
    pub multicast: super::multicast::Multicast,
}

/// Which kind of IP socket options are applied to: TCP-only options skip UDP sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carrier {
    /// A TCP socket (also under TLS).
    Tcp,
    /// A UDP socket.
    Udp,
}

impl SocketOptions {
    /// Sets every option on `socket`, an IP socket of `family` not yet connected, and
    /// binds the source address if one was given. TCP-only options (keepalive, Nagle)
    /// are skipped on UDP sockets, `--broadcast` on TCP ones.
    ///
    /// # Errors
    /// [`Error::LocalSocket`] naming the flag and why the kernel refused it.
    pub(crate) fn apply(
        &self,
        socket: &SockRef<'_>,
        target: SocketAddr,
        carrier: Carrier,
    ) -> crate::Result<()> {
        let v4 = target.is_ipv4();
        if let Some(device) = &self.bind_device {
            socket
                .bind_device(Some(device.as_bytes()))
                .map_err(|e| local_error(format!("--bind-device {device}"), &e, Flag::Device))?;
        }
        if let Some(mark) = self.mark {
            socket
                .set_mark(mark)
                .map_err(|e| local_error(format!("--mark {mark}"), &e, Flag::Mark))?;
        }
        if let Some(tos) = self.tos {
            let set = if v4 {
                socket.set_tos_v4(u32::from(tos))
            } else {
                socket.set_tclass_v6(u32::from(tos))
            };
            set.map_err(|e| local_error(format!("--tos {tos}"), &e, Flag::Other))?;
        }
        if let Some(ttl) = self.ttl {
            let set = if v4 {
                socket.set_ttl_v4(u32::from(ttl))
            } else {
                socket.set_unicast_hops_v6(u32::from(ttl))
            };
            set.map_err(|e| local_error(format!("--ttl {ttl}"), &e, Flag::Other))?;
        }
        if let Some(size) = self.send_buffer {
            socket
                .set_send_buffer_size(size)
                .map_err(|e| local_error(format!("--send-buffer {size}"), &e, Flag::Other))?;
        }
        if let Some(size) = self.recv_buffer {
            socket
                .set_recv_buffer_size(size)
                .map_err(|e| local_error(format!("--recv-buffer {size}"), &e, Flag::Other))?;
        }
        match carrier {
            Carrier::Tcp => self.apply_tcp(socket)?,
            Carrier::Udp => {
                if self.broadcast == Broadcast::Allowed {
                    socket
                        .set_broadcast(true)
                        .map_err(|e| local_error("--broadcast".into(), &e, Flag::Other))?;
                }
                if target.ip().is_multicast() {
                    self.multicast
                        .apply_sender(socket, target.ip())
                        .map_err(|e| local_error("--multicast-if".into(), &e, Flag::Other))?;
                }
            }
        }
        self.bind_source(socket, target)
    }

    /// The TCP-only options: Nagle and keepalive.
    fn apply_tcp(&self, socket: &SockRef<'_>) -> crate::Result<()> {
        // Options are applied to fresh sockets only, where Nagle's algorithm is on: only
        // turning it off takes a system call.
        if self.nagle == Nagle::Off {
            socket
                .set_tcp_nodelay(true)
                .map_err(|e| local_error("--no-delay".into(), &e, Flag::Other))?;
        }
        if let Some(keepalive) = self.keepalive {
            let mut params = TcpKeepalive::new().with_time(keepalive.idle);
            if let Some(interval) = keepalive.interval {
                params = params.with_interval(interval);
            }
            if let Some(count) = keepalive.count {
                params = params.with_retries(count);
            }
            socket.set_tcp_keepalive(&params).map_err(|e| {
                local_error(
                    format!("--keepalive {}", humantime::format_duration(keepalive.idle)),
                    &e,
                    Flag::Other,
                )
            })?;
        }
        Ok(())
    }

    /// Binds `--source`, when given. With a fixed port, `SO_REUSEADDR` lets the same
    /// source port be used again while an earlier connection sits in `TIME_WAIT`, as nc
    /// does; a port a live socket holds is still refused.
    fn bind_source(&self, socket: &SockRef<'_>, target: SocketAddr) -> crate::Result<()> {
        let Some(source) = self.source else {
            return Ok(());
        };
        let Some(local) = source.local_for(target) else {
            return Err(family_mismatch(source, target));
        };
        let flag = format!("--source {source}");
        if source.port != 0 {
            socket
                .set_reuse_address(true)
                .map_err(|e| local_error(flag.clone(), &e, Flag::Source))?;
        }
        socket
            .bind(&SockAddr::from(local))
            .map_err(|e| local_error(flag, &e, Flag::Source))
    }

    /// Whether `--source` can reach `target` (same address family).
    pub(crate) fn reaches(&self, target: SocketAddr) -> bool {
        self.source
            .is_none_or(|source| source.local_for(target).is_some())
    }

    /// The error for a target none of whose addresses has `--source`'s family.
    pub(crate) fn no_address_of_source_family(&self, endpoint: &Endpoint) -> Error {
        let (family, other) = match self.source.and_then(|s| s.ip) {
            Some(IpAddr::V6(_)) => ("IPv6", "IPv4"),
            _ => ("IPv4", "IPv6"),
        };
        let source = self.source.map(|s| s.to_string()).unwrap_or_default();
        Error::Usage(format!(
            "--source {source} is an {family} address but {endpoint} has only {other} addresses; give a source address of the target's family"
        ))
    }

    /// Checks at start-up, on a scratch socket, that every option is accepted (the
    /// interface exists, the privilege is there, the source address is this host's and
    /// free), so a command that listens first (`relay`, `listen`) fails before it starts
    /// rather than on its first connection.
    ///
    /// # Errors
    /// The [`Error::LocalSocket`] or [`Error::Usage`] the first connection would meet.
    pub fn check(&self, target: &Endpoint, carrier: Carrier) -> crate::Result<()> {
        if *self == SocketOptions::default() {
            return Ok(());
        }
        let probe_target = scratch_target(self, target);
        let (kind, protocol) = match carrier {
            Carrier::Tcp => (Type::STREAM, Protocol::TCP),
            Carrier::Udp => (Type::DGRAM, Protocol::UDP),
        };
        let socket = Socket::new(Domain::for_address(probe_target), kind, Some(protocol))
            .map_err(|e| local_error("a socket".into(), &e, Flag::Other))?;
        self.apply(&SockRef::from(&socket), probe_target, carrier)
    }
}

/// A target address of the family the options will meet: the source's, else the
/// target's when it is an IP literal, else IPv4.
fn scratch_target(options: &SocketOptions, target: &Endpoint) -> SocketAddr {
    let literal = match target {
        Endpoint::Tcp(hp) | Endpoint::Tls(hp) | Endpoint::Udp(hp) => match hp.host {
            Host::Ip(ip) => Some(ip),
            _ => None,
        },
        _ => None,
    };
    let ip = options
        .source
        .and_then(|s| s.ip)
        .or(literal)
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    SocketAddr::new(ip, 9)
}

/// Which flag failed, for the remedy in its message.
#[derive(Debug, Clone, Copy)]
enum Flag {
    Source,
    Device,
    Mark,
    Other,
}

/// The error for a flag the kernel refused, with the reason in plain words.
fn local_error(flag: String, source: &io::Error, which: Flag) -> Error {
    let reason = match (which, source.raw_os_error()) {
        (Flag::Source, Some(libc::EADDRINUSE)) => {
            "that port is in use by another socket; pick another port or leave the port out".into()
        }
        (Flag::Source, Some(libc::EADDRNOTAVAIL)) => {
            "that is not an address of this machine; see `ip addr` for the addresses it has".into()
        }
        (Flag::Source, Some(libc::EACCES)) => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE".into()
        }
        (Flag::Device, Some(libc::ENODEV)) => {
            "there is no network interface of that name; see `ip link` for the names".into()
        }
        (Flag::Device, Some(libc::EPERM)) => {
            "binding to an interface needs root or CAP_NET_RAW".into()
        }
        (Flag::Mark, Some(libc::EPERM)) => "marking packets needs root or CAP_NET_ADMIN".into(),
        _ => source.to_string(),
    };
    Error::LocalSocket { flag, reason }
}

/// A duration as `30s`, `2m` or a bare number of seconds.
fn seconds(text: &str) -> Result<Duration, String> {
    if let Ok(n) = text.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    humantime::parse_duration(text).map_err(|e| e.to_string())
}

/// The error for `--source` of one family and a target address of the other.
fn family_mismatch(source: Source, target: SocketAddr) -> Error {
    let family = |v4: bool| if v4 { "IPv4" } else { "IPv6" };
    let source_v4 = source.ip.is_none_or(|ip| ip.is_ipv4());
    Error::Usage(format!(
        "--source {source} is an {} address but the target {target} is {}; give a source address of the target's family",
        family(source_v4),
        family(target.is_ipv4())
    ))
}

/// A non-blocking socket of a client: on Linux made so in the `socket(2)` call itself
/// (`SOCK_NONBLOCK`), which saves two `fcntl(2)` calls per connection.
fn nonblocking_socket(domain: Domain, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    #[cfg(target_os = "linux")]
    {
        Socket::new(domain, ty.nonblocking(), Some(protocol))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let socket = Socket::new(domain, ty, Some(protocol))?;
        socket.set_nonblocking(true)?;
        Ok(socket)
    }
}

/// Creates a client TCP socket for `target` with `options` set and the source bound,
/// ready for tokio to connect.
///
/// # Errors
/// [`Error::LocalSocket`] when an option or the source address is refused.
pub(crate) fn tcp_client(
    target: SocketAddr,
    options: &SocketOptions,
) -> crate::Result<tokio::net::TcpSocket> {
    let socket = tcp_client_socket(target, options)?;
    Ok(tokio::net::TcpSocket::from_std_stream(socket.into()))
}

/// A non-blocking client TCP socket for `target` with `options` set (and `--source`
/// bound), not yet connected: what [`tcp_client`] hands to tokio, and what a load
/// generator that waits in its own epoll set connects itself.
///
/// # Errors
/// [`Error::LocalSocket`] when an option or the source address is refused.
pub(crate) fn tcp_client_socket(
    target: SocketAddr,
    options: &SocketOptions,
) -> crate::Result<Socket> {
    let socket = nonblocking_socket(Domain::for_address(target), Type::STREAM, Protocol::TCP)
        .map_err(|e| local_error("a TCP socket".into(), &e, Flag::Other))?;
    options.apply(&SockRef::from(&socket), target, Carrier::Tcp)?;
    Ok(socket)
}

/// Creates a client UDP socket for `target` with `options` set and bound (to
/// `--source`, or an ephemeral port of the target's family).
///
/// # Errors
/// [`Error::LocalSocket`] when an option or the source address is refused.
pub(crate) fn udp_client(
    target: SocketAddr,
    options: &SocketOptions,
) -> crate::Result<std::net::UdpSocket> {
    let socket = nonblocking_socket(Domain::for_address(target), Type::DGRAM, Protocol::UDP)
        .map_err(|e| local_error("a UDP socket".into(), &e, Flag::Other))?;
    let sockref = SockRef::from(&socket);
    options.apply(&sockref, target, Carrier::Udp)?;
    if options.source.is_none() {
        let any = SocketAddr::new(unspecified_like(target), 0);
        sockref
            .bind(&SockAddr::from(any))
            .map_err(|e| local_error("an ephemeral port".into(), &e, Flag::Other))?;
    }
    Ok(socket.into())
}
