//! Endpoints: *where* to listen or connect, in the one string syntax every command shares.
//!
//! This module is pure: it parses and prints, and never touches the network. Resolving host
//! names happens in [`HostPort::resolve`], the only `async` function here, so that parsing
//! can be fuzzed and unit-tested without sockets.
//!
//! [`PeerAddr`] is the other side of the same question: *who* is at the other end of a
//! connection or sent a datagram. It lives here, below transport, because access rules,
//! events and behaviours all name peers without touching a socket.
//!
//! | form | meaning |
//! |---|---|
//! | `tcp://HOST:PORT` | TCP over IPv4 or IPv6 |
//! | `udp://HOST:PORT` | UDP over IPv4 or IPv6 |
//! | `tls://HOST:PORT` | TLS over TCP |
//! | `unix:PATH` | Unix stream socket at a file-system path |
//! | `unixgram:PATH` | Unix datagram socket at a file-system path |
//! | `unix:@NAME`, `unixgram:@NAME` | Linux abstract socket (no file) |
//! | `HOST:PORT` | same as `tcp://HOST:PORT` |
//! | `PORT` | same as `tcp://127.0.0.1:PORT` |
//! | `tcp`, `udp`, `tls` | the note's address, `127.0.0.1:8000` |
//!
//! IPv6 literals go in brackets: `tcp://[::1]:8000`, with a zone for link-local
//! addresses: `tcp://[fe80::1%eth0]:8000`. Internationalised host names (`münchen.example`)
//! are turned into their ASCII form (`xn--mnchen-3ya.example`), which is what DNS and TLS
//! certificates carry. A client target may also be given as two words, `HOST PORT`, as nc
//! takes it ([`Endpoint::from_host_and_port`]).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::path::PathBuf;
use std::str::FromStr;

use socket2::SockAddr;

/// The host of the note's demo: every bare scheme word (`tcp`, `udp`) means this address.
pub const SEED_HOST: &str = "127.0.0.1";
/// The port of the note's demo.
pub const SEED_PORT: u16 = 8000;

/// The accepted endpoint forms, shown in every parse error so a user can fix their input.
pub const ACCEPTED_FORMS: &str = "tcp://HOST:PORT, udp://HOST:PORT, tls://HOST:PORT, \
unix:PATH, unixgram:PATH, unix:@NAME, HOST:PORT, PORT, or tcp / udp / tls for 127.0.0.1:8000";

/// A place to listen on or connect to, with its transport.
///
/// One value describes both sides: `serve` binds it, `send` connects to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// TCP stream over IPv4 or IPv6.
    Tcp(HostPort),
    /// UDP datagrams over IPv4 or IPv6.
    Udp(HostPort),
    /// TLS over TCP.
    Tls(HostPort),
    /// Unix-domain stream socket.
    Unix(UnixAddr),
    /// Unix-domain datagram socket.
    UnixDgram(UnixAddr),
}

/// Whether an endpoint carries a byte stream or separate datagrams.
///
/// The server and the client pick their loop from this, not from the scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// A connection carrying an ordered byte stream (TCP, TLS, Unix stream).
    Stream,
    /// Independent messages, each with its sender's address (UDP, Unix datagram).
    Datagram,
}

/// A host and a port, as written by the user (the host may still need resolving).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// An IP literal or a name to resolve.
    pub host: Host,
    /// The port; 0 asks the kernel for a free one when binding.
    pub port: u16,
}

/// The host part of a [`HostPort`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    /// An IPv4 or IPv6 literal: no resolution needed.
    Ip(IpAddr),
    /// A name such as `localhost`, resolved when used (always ASCII: an internationalised
    /// name is kept in its `xn--` form).
    Name(String),
    /// A link-local IPv6 literal with its zone (`fe80::1%eth0`): the interface, by name or
    /// index, that the address belongs to.
    ScopedV6 {
        /// The address.
        ip: Ipv6Addr,
        /// The zone as written: an interface name or a number.
        zone: String,
    },
}

/// The address of a Unix-domain socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UnixAddr {
    /// A socket file in the file system.
    Path(PathBuf),
    /// A Linux abstract-namespace name (written `@name`): no file, gone when the socket closes.
    Abstract(String),
}

/// Why an endpoint string was rejected.
///
/// The message names the input and the problem; [`ACCEPTED_FORMS`] is appended by the
/// crate-level error so that every command shows the same help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid endpoint {input:?}: {reason}")]
pub struct EndpointError {
    /// What the user typed.
    pub input: String,
    /// What is wrong with it, in words.
    pub reason: String,
}

impl Endpoint {
    /// The note's TCP demo address, `tcp://127.0.0.1:8000`: the zero-argument default.
    pub fn seed_tcp() -> Endpoint {
        Endpoint::Tcp(HostPort::seed())
    }

    /// Stream or datagram: decides which server loop and which client exchange to run.
    pub fn delivery(&self) -> Delivery {
        match self {
            Endpoint::Tcp(_) | Endpoint::Tls(_) | Endpoint::Unix(_) => Delivery::Stream,
            Endpoint::Udp(_) | Endpoint::UnixDgram(_) => Delivery::Datagram,
        }
    }

    /// The protocol word of the note's default messages (`hello tcp server`, `hello udp client`).
    ///
    /// Unix and TLS endpoints use the word of the delivery they resemble, so the defaults
    /// stay the note's for every transport.
    pub fn seed_word(&self) -> &'static str {
        match self.delivery() {
            Delivery::Stream => "tcp",
            Delivery::Datagram => "udp",
        }
    }

    /// The scheme as written in the canonical form (`tcp`, `udp`, `tls`, `unix`, `unixgram`).
    pub fn scheme(&self) -> &'static str {
        match self {
            Endpoint::Tcp(_) => "tcp",
            Endpoint::Udp(_) => "udp",
            Endpoint::Tls(_) => "tls",
            Endpoint::Unix(_) => "unix",
            Endpoint::UnixDgram(_) => "unixgram",
        }
    }

    /// The host and port of an IP endpoint, `None` for Unix sockets.
    pub fn host_port(&self) -> Option<&HostPort> {
        match self {
            Endpoint::Tcp(hp) | Endpoint::Udp(hp) | Endpoint::Tls(hp) => Some(hp),
            Endpoint::Unix(_) | Endpoint::UnixDgram(_) => None,
        }
    }

    /// Parses a place to connect to: any endpoint form except port 0, which only makes sense
    /// to a server ("any free port").
    ///
    /// # Errors
    /// [`EndpointError`] as for parsing, or naming port 0.
    pub fn parse_target(text: &str) -> Result<Endpoint, EndpointError> {
        let endpoint: Endpoint = text.parse()?;
        if endpoint.host_port().is_some_and(|hp| hp.port == 0) {
            return Err(EndpointError {
                input: text.to_string(),
                reason: "port 0 is not a port one can connect to (to a server it means \"any free \
                         port\"); give the port the server listens on, which it prints at start"
                    .into(),
            });
        }
        Ok(endpoint)
    }

    /// The nc habit, `HOST PORT` as two words (`127.0.0.1 9000`, `tls://example.org 443`,
    /// `::1 80`): the host part may carry a scheme but no port.
    ///
    /// # Errors
    /// [`EndpointError`] when the first word already has a port or is not a host, or the
    /// second is not a port.
    pub fn from_host_and_port(host: &str, port: &str) -> Result<Endpoint, EndpointError> {
        let input = format!("{host} {port}");
        let fail = |reason: String| EndpointError {
            input: input.clone(),
            reason,
        };
        let (scheme, bare) = match host.split_once("://") {
            Some((scheme, rest)) => (format!("{scheme}://"), rest),
            None => (String::new(), host),
        };
        if scheme.is_empty() && (bare.starts_with("unix:") || bare.starts_with("unixgram:")) {
            return Err(fail(
                "a Unix socket has no port; give its path alone, e.g. unix:/tmp/sockit.sock".into(),
            ));
        }
        if parse_host_port(bare).is_ok() {
            return Err(fail(format!(
                "{host} already has a port, so {port:?} is one word too many"
            )));
        }
        let port = parse_port(port.trim()).map_err(fail)?;
        let host_part = match bare.strip_prefix('[').and_then(|b| b.strip_suffix(']')) {
            Some(inside) => format!("[{inside}]"),
            None if bare.contains(':') => format!("[{bare}]"),
            None => bare.to_string(),
        };
        let joined = format!("{scheme}{host_part}:{port}");
        Endpoint::parse_target(&joined).map_err(|e| fail(e.reason))
    }

    /// The same endpoint with another port (used to suggest a free port after "address in use").
    pub fn with_port(&self, port: u16) -> Endpoint {
        let mut copy = self.clone();
        if let Endpoint::Tcp(hp) | Endpoint::Udp(hp) | Endpoint::Tls(hp) = &mut copy {
            hp.port = port;
        }
        copy
    }
}

impl HostPort {
    /// `127.0.0.1:8000`, the address every program of the note uses.
    pub fn seed() -> HostPort {
        HostPort {
            host: Host::Ip(IpAddr::from([127, 0, 0, 1])),
            port: SEED_PORT,
        }
    }

    /// Every socket address this host and port stand for, in resolver order.
    ///
    /// A literal IP gives exactly one address and never touches the resolver.
    ///
    /// # Errors
    /// [`crate::Error::HostNotFound`] when the name does not resolve to any address.
    pub async fn resolve(&self) -> crate::Result<Vec<SocketAddr>> {
        match &self.host {
            Host::Ip(ip) => Ok(vec![SocketAddr::new(*ip, self.port)]),
            Host::ScopedV6 { ip, zone } => {
                let scope = zone_index(zone).ok_or_else(|| crate::Error::HostNotFound {
                    host: self.host.to_string(),
                    reason: format!(
                        "there is no network interface {zone:?} (see `ip link`; a number is taken as an interface index)"
                    ),
                })?;
                Ok(vec![SocketAddr::V6(SocketAddrV6::new(
                    *ip, self.port, 0, scope,
                ))])
            }
            Host::Name(name) => {
                let found = tokio::net::lookup_host((name.as_str(), self.port))
                    .await
                    .map_err(|source| crate::Error::HostNotFound {
                        host: name.clone(),
                        reason: source.to_string(),
                    })?;
                let addrs: Vec<SocketAddr> = found.collect();
                if addrs.is_empty() {
                    return Err(crate::Error::HostNotFound {
                        host: name.clone(),
                        reason: "no addresses".into(),
                    });
                }
                Ok(addrs)
            }
        }
    }
}

/// The interface index a zone names: a number as it is, a name through the kernel.
fn zone_index(zone: &str) -> Option<u32> {
    if let Ok(index) = zone.parse::<u32>() {
        return Some(index);
    }
    let name = std::ffi::CString::new(zone).ok()?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

impl FromStr for Endpoint {
    type Err = EndpointError;

    fn from_str(input: &str) -> Result<Endpoint, EndpointError> {
        let fail = |reason: &str| EndpointError {
            input: input.to_string(),
            reason: reason.to_string(),
        };
        let text = input.trim();
        if text.is_empty() {
            return Err(fail("it is empty"));
        }
        match text {
            "tcp" => return Ok(Endpoint::Tcp(HostPort::seed())),
            "udp" => return Ok(Endpoint::Udp(HostPort::seed())),
            "tls" => return Ok(Endpoint::Tls(HostPort::seed())),
            "unix" | "unixgram" => {
                return Err(fail(
                    "a Unix endpoint needs a path, e.g. unix:/tmp/sockit.sock",
                ));
            }
            _ => {}
        }
        if let Some(rest) = text.strip_prefix("tcp://") {
            return parse_host_port(rest)
                .map(Endpoint::Tcp)
                .map_err(|r| fail(&r));
        }
        if let Some(rest) = text.strip_prefix("udp://") {
            return parse_host_port(rest)
                .map(Endpoint::Udp)
                .map_err(|r| fail(&r));
        }
        if let Some(rest) = text.strip_prefix("tls://") {
            return parse_host_port(rest)
                .map(Endpoint::Tls)
                .map_err(|r| fail(&r));
        }
        // `unixgram:` must be tried before `unix:`, which is its prefix.
        if let Some(rest) = text.strip_prefix("unixgram:") {
            return parse_unix(rest)
                .map(Endpoint::UnixDgram)
                .map_err(|r| fail(&r));
        }
        if let Some(rest) = text.strip_prefix("unix:") {
            return parse_unix(rest).map(Endpoint::Unix).map_err(|r| fail(&r));
        }
        if let Some((scheme, _)) = text.split_once("://") {
            return Err(fail(&format!("unknown scheme {scheme:?}")));
        }
        if text.bytes().all(|b| b.is_ascii_digit()) {
            let port = parse_port(text).map_err(|r| fail(&r))?;
            return Ok(Endpoint::Tcp(HostPort {
                host: Host::Ip(IpAddr::from([127, 0, 0, 1])),
                port,
            }));
        }
        parse_host_port(text)
            .map(Endpoint::Tcp)
            .map_err(|r| fail(&r))
    }
}

/// Parses `HOST:PORT` or `[V6]:PORT`; the error is a reason to show the user.
fn parse_host_port(text: &str) -> Result<HostPort, String> {
    let (host_text, port_text) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or("an opening '[' has no closing ']'")?;
        let port_text = after
            .strip_prefix(':')
            .ok_or("a port is missing after the bracketed address, e.g. [::1]:8000")?;
        (parse_bracketed(inside)?, port_text)
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or("a port is missing, e.g. 127.0.0.1:8000")?;
        if host.contains(':') {
            return Err("IPv6 addresses go in brackets, e.g. tcp://[::1]:8000".into());
        }
        (parse_host(host)?, port)
    };
    let port = parse_port(port_text)?;
    Ok(HostPort {
        host: host_text,
        port,
    })
}

/// Parses what is inside `[…]`: an IPv6 literal, maybe with a zone (`fe80::1%eth0`).
fn parse_bracketed(inside: &str) -> Result<Host, String> {
    let not_v6 = || format!("{inside:?} is not an IPv6 address");
    let Some((address, zone)) = inside.split_once('%') else {
        return inside
            .parse::<Ipv6Addr>()
            .map(|ip| Host::Ip(IpAddr::V6(ip)))
            .map_err(|_| not_v6());
    };
    let ip: Ipv6Addr = address.parse().map_err(|_| not_v6())?;
    let valid_zone = !zone.is_empty()
        && zone.len() < 16
        && zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid_zone {
        return Err(format!(
            "{zone:?} is not a zone; write an interface name or index after '%', e.g. [fe80::1%eth0]"
        ));
    }
    Ok(Host::ScopedV6 {
        ip,
        zone: zone.to_string(),
    })
}

/// Parses an IPv4 literal or a host name (letters, digits, `-`, `_`, `.`); a name with
/// letters beyond ASCII is turned into its `xn--` form (IDNA).
fn parse_host(text: &str) -> Result<Host, String> {
    if !text.is_ascii() {
        let ascii = idna::domain_to_ascii(text)
            .map_err(|_| format!("{text:?} is not an IP address or a host name"))?;
        return parse_host(&ascii);
    }
    if text.is_empty() {
        return Err("the host is empty; use 127.0.0.1 for this machine or 0.0.0.0 for all".into());
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let valid = text.len() <= 253
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(format!("{text:?} is not an IP address or a host name"));
    }
    Ok(Host::Name(text.to_string()))
}

/// Parses a decimal port in 0..=65535.
fn parse_port(text: &str) -> Result<u16, String> {
    if text.is_empty() {
        return Err("the port is empty".into());
    }
    text.parse::<u16>().map_err(|_| {
        if text.bytes().all(|b| b.is_ascii_digit()) {
            format!("{text} is not a port: ports go from 0 to 65535")
        } else {
            format!("{text:?} is not a port (0-65535)")
        }
    })
}

/// Parses what follows `unix:` / `unixgram:`: a path, or `@name` for the abstract namespace.
///
/// `unix:///tmp/s` is not special-cased: its path `///tmp/s` names `/tmp/s` anyway, and
/// keeping the text as typed makes every printed endpoint parse back to itself.
fn parse_unix(text: &str) -> Result<UnixAddr, String> {
    if let Some(name) = text.strip_prefix('@') {
        if name.is_empty() {
            return Err("an abstract socket needs a name after '@'".into());
        }
        if name.len() > 107 {
            return Err("an abstract socket name is at most 107 bytes".into());
        }
        return Ok(UnixAddr::Abstract(name.to_string()));
    }
    if text.is_empty() {
        return Err("the socket path is empty".into());
    }
    // sun_path holds 108 bytes including the terminating NUL.
    if text.len() > 107 {
        return Err(format!(
            "the socket path is {} bytes; Unix sockets allow at most 107",
            text.len()
        ));
    }
    if text.contains('\0') {
        return Err("the socket path contains a NUL byte".into());
    }
    Ok(UnixAddr::Path(PathBuf::from(text)))
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(hp) | Endpoint::Udp(hp) | Endpoint::Tls(hp) => {
                write!(f, "{}://{hp}", self.scheme())
            }
            Endpoint::Unix(addr) | Endpoint::UnixDgram(addr) => {
                write!(f, "{}:{addr}", self.scheme())
            }
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(_)) | Host::ScopedV6 { .. } => {
                write!(f, "[{}]:{}", self.host, self.port)
            }
            Host::Ip(IpAddr::V4(_)) | Host::Name(_) => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// The host as written, without brackets: `127.0.0.1`, `::1`, `fe80::1%eth0`, `example.org`.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::Name(name) => f.write_str(name),
            Host::ScopedV6 { ip, zone } => write!(f, "{ip}%{zone}"),
        }
    }
}

impl fmt::Display for UnixAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Path(path) => write!(f, "{}", path.display()),
            UnixAddr::Abstract(name) => write!(f, "@{name}"),
        }
    }
}

/// Who is on the other end of a connection or sent a datagram.
///
/// Datagram servers send their reply back to this address, so it keeps the full socket
/// address (for Unix sockets, the raw `sockaddr_un`). Comparable and hashable, so it can
/// key per-peer state (the relay's datagram sessions).
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum PeerAddr {
    /// An IPv4 or IPv6 peer.
    Ip(SocketAddr),
    /// A Unix-domain peer: a path, an abstract name, or unnamed. Boxed: a `sockaddr_un`
    /// is 110 bytes, and every connection task carries its peer.
    Unix(Box<SockAddr>),
    /// A target reached through `--proxy`, as the user named it (`db.internal:5432`): the
    /// socket's own peer is the proxy, and the name may be resolved by the proxy only.
    /// Boxed, as `Unix` is, to keep the common `Ip` case small.
    Named(Box<HostPort>),
}

impl PeerAddr {
    /// The peer's IP address, for access control and logs; `None` for Unix peers and
    /// named targets.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match self {
            PeerAddr::Ip(addr) => Some(addr.ip()),
            PeerAddr::Unix(_) | PeerAddr::Named(_) => None,
        }
    }

    /// The target `hp` as a peer: its address when it is an IP literal, else its name.
    pub fn target(hp: &HostPort) -> PeerAddr {
        match hp.host {
            Host::Ip(ip) => PeerAddr::Ip(SocketAddr::new(ip, hp.port)),
            Host::ScopedV6 { .. } | Host::Name(_) => PeerAddr::Named(Box::new(hp.clone())),
        }
    }
}

impl PeerAddr {
    /// Appends the address as [`Display`](fmt::Display) would, without the formatting
    /// machinery for the common IPv4 case: per-message log lines print it every time.
    pub fn push_to(&self, out: &mut String) {
        match self {
            PeerAddr::Ip(SocketAddr::V4(addr)) => {
                let mut digits = itoa::Buffer::new();
                for (i, octet) in addr.ip().octets().iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    out.push_str(digits.format(*octet));
                }
                out.push(':');
                out.push_str(digits.format(addr.port()));
            }
            other => {
                use std::fmt::Write;
                // Writing to a String cannot fail.
                let _ = write!(out, "{other}");
            }
        }
    }
}

impl fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddr::Ip(SocketAddr::V4(addr)) => write_v4(f, addr),
            PeerAddr::Ip(addr) => write!(f, "{addr}"),
            // A client picks its own Unix address, so its bytes are escaped as message
            // bodies are (`\n`, `\u{1b}`, `\xff`): a name holding a newline or a
            // terminal escape can neither forge a log line nor colour the terminal.
            PeerAddr::Unix(addr) => {
                use std::os::unix::ffi::OsStrExt;
                let path = addr.as_pathname().filter(|p| !p.as_os_str().is_empty());
                if let Some(path) = path {
                    f.write_str(&crate::escape::escaped(path.as_os_str().as_bytes()))
                } else if let Some(name) = addr.as_abstract_namespace() {
                    write!(f, "@{}", crate::escape::escaped(name))
                } else {
                    f.write_str("(unnamed)")
                }
            }
            PeerAddr::Named(hp) => write!(f, "{hp}"),
        }
    }
}

impl fmt::Debug for PeerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `a.b.c.d:port` written without the formatting machinery, which costs several times
/// as much: every accepted connection writes its peer this way (into its log span).
fn write_v4(f: &mut fmt::Formatter<'_>, addr: &SocketAddrV4) -> fmt::Result {
    // "255.255.255.255:65535"
    let mut text = [0u8; 21];
    let mut len = 0;
    for (i, octet) in addr.ip().octets().into_iter().enumerate() {
        if i > 0 {
            text[len] = b'.';
            len += 1;
        }
        push_decimal(&mut text, &mut len, u16::from(octet));
    }
    text[len] = b':';
    len += 1;
    push_decimal(&mut text, &mut len, addr.port());
    f.write_str(std::str::from_utf8(&text[..len]).map_err(|_| fmt::Error)?)
}

/// Appends `value` in decimal at `text[*len..]`.
fn push_decimal(text: &mut [u8; 21], len: &mut usize, value: u16) {
    let mut digits = [0u8; 5];
    let mut count = 0;
    let mut rest = value;
    loop {
        digits[count] = b'0' + (rest % 10) as u8;
        count += 1;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    for &digit in digits[..count].iter().rev() {
        text[*len] = digit;
        *len += 1;
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn an_ipv4_peer_reads_as_std_writes_it() {
        for text in [
            "0.0.0.0:0",
            "127.0.0.1:8000",
            "255.255.255.255:65535",
            "10.20.3.4:10",
        ] {
            let addr: SocketAddr = text.parse().expect("a test address");
            assert_eq!(PeerAddr::Ip(addr).to_string(), addr.to_string());
        }
    }
    use super::*;

    fn parse(text: &str) -> Endpoint {
        match text.parse::<Endpoint>() {
            Ok(endpoint) => endpoint,
            Err(e) => panic!("{text:?} should parse: {e}"),
        }
    }

    fn reason(text: &str) -> String {
        match text.parse::<Endpoint>() {
            Ok(endpoint) => panic!("{text:?} should not parse, got {endpoint:?}"),
            Err(e) => e.reason,
        }
    }

    #[test]
    fn bare_words_mean_the_notes_address() {
        assert_eq!(parse("tcp").to_string(), "tcp://127.0.0.1:8000");
        assert_eq!(parse("udp").to_string(), "udp://127.0.0.1:8000");
        assert_eq!(parse("tls").to_string(), "tls://127.0.0.1:8000");
    }

    #[test]
    fn canonical_forms_round_trip() {
        for text in [
            "tcp://127.0.0.1:8000",
            "udp://[::1]:9",
            "tls://example.org:443",
            "unix:/tmp/a.sock",
            "unixgram:/tmp/b.sock",
            "unix:@abstract-name",
            "unixgram:@x",
            "tcp://localhost:0",
        ] {
            assert_eq!(parse(text).to_string(), text);
        }
    }

    #[test]
    fn bare_host_port_and_port_are_tcp() {
        assert_eq!(parse("localhost:80").to_string(), "tcp://localhost:80");
        assert_eq!(parse("[::1]:80").to_string(), "tcp://[::1]:80");
        assert_eq!(parse("9000").to_string(), "tcp://127.0.0.1:9000");
    }

    #[test]
    fn delivery_and_seed_words() {
        assert_eq!(parse("udp").delivery(), Delivery::Datagram);
        assert_eq!(parse("unixgram:/x").seed_word(), "udp");
        assert_eq!(parse("unix:/x").seed_word(), "tcp");
        assert_eq!(parse("tls").seed_word(), "tcp");
    }

    #[test]
    fn malformed_inputs_say_what_is_wrong() {
        assert!(reason("").contains("empty"));
        assert!(reason("tcp://127.0.0.1").contains("port is missing"));
        assert!(reason("tcp://127.0.0.1:70000").contains("not a port"));
        assert!(reason("tcp://::1:80").contains("brackets"));
        assert!(reason("tcp://[::1:80").contains("closing"));
        assert!(reason("tcp://[nope]:80").contains("not an IPv6"));
        assert!(reason("sctp://1.2.3.4:5").contains("unknown scheme"));
        assert!(reason("unix:").contains("empty"));
        assert!(reason("unix").contains("needs a path"));
        assert!(reason("tcp://:80").contains("host is empty"));
        assert!(reason("tcp://bad host:80").contains("not an IP address"));
        let long = format!("unix:/{}", "a".repeat(200));
        assert!(reason(&long).contains("at most 107"));
    }

    /// Found by the `endpoint_parse` fuzz target: stripping `//` made `unix:////` print as
    /// `unix://`, which did not parse back.
    #[test]
    fn fuzz_regression_slashes_after_unix_round_trip() {
        for text in ["unix:////", "unix://x", "unixgram:///tmp/s"] {
            let endpoint = parse(text);
            assert_eq!(parse(&endpoint.to_string()), endpoint);
        }
    }

    #[test]
    fn with_port_changes_only_ip_endpoints() {
        assert_eq!(
            parse("tcp").with_port(8001).to_string(),
            "tcp://127.0.0.1:8001"
        );
        assert_eq!(parse("unix:/x").with_port(1).to_string(), "unix:/x");
    }

    #[tokio::test]
    async fn literal_ips_resolve_without_a_lookup() -> crate::Result<()> {
        let hp = HostPort::seed();
        assert_eq!(
            hp.resolve().await?,
            vec!["127.0.0.1:8000".parse().unwrap_or_else(|_| unreachable!())]
        );
        Ok(())
    }

    /// Issue 15 item 9: a number that is too large is named as a bad port, not as a
    /// missing one.
    #[test]
    fn an_out_of_range_bare_port_is_named_as_such() {
        assert!(reason("65536").contains("65536 is not a port: ports go from 0 to 65535"));
        assert!(!reason("65536").contains("missing"));
    }

    /// Issue 15 item 9: port 0 is for servers only.
    #[test]
    fn port_zero_is_refused_as_a_target_with_the_reason() -> Result<(), EndpointError> {
        let refused = Endpoint::parse_target("0").err().map(|e| e.reason);
        assert!(
            refused
                .as_deref()
                .is_some_and(|r| r.contains("port 0") && !r.contains("sockit serve")),
            "{refused:?}"
        );
        assert_eq!(parse("0").to_string(), "tcp://127.0.0.1:0");
        assert_eq!(
            Endpoint::parse_target("udp://[::1]:53")?.to_string(),
            "udp://[::1]:53"
        );
        Ok(())
    }

    /// Issue 15 item 9: `HOST PORT` as nc takes them.
    #[test]
    fn host_and_port_as_two_words() -> Result<(), EndpointError> {
        let two = |host: &str, port: &str| Endpoint::from_host_and_port(host, port);
        assert_eq!(
            two("127.0.0.1", "9000")?.to_string(),
            "tcp://127.0.0.1:9000"
        );
        assert_eq!(
            two("tls://example.org", "443")?.to_string(),
            "tls://example.org:443"
        );
        assert_eq!(two("::1", "80")?.to_string(), "tcp://[::1]:80");
        assert_eq!(two("udp://[::1]", "53")?.to_string(), "udp://[::1]:53");
        assert!(two("127.0.0.1:80", "90").is_err_and(|e| e.reason.contains("already has a port")));
        assert!(two("127.0.0.1", "http").is_err_and(|e| e.reason.contains("not a port")));
        assert!(two("127.0.0.1", "0").is_err_and(|e| e.reason.contains("port 0")));
        assert!(two("unix:/tmp/s", "1").is_err_and(|e| e.reason.contains("no port")));
        Ok(())
    }

    /// Issue 15 item 9: internationalised names become their ASCII (punycode) form, which
    /// prints and parses back unchanged. Nothing is resolved.
    #[test]
    fn idn_hosts_are_converted_to_ascii() {
        let endpoint = parse("tcp://münchen.example:80");
        assert_eq!(endpoint.to_string(), "tcp://xn--mnchen-3ya.example:80");
        assert_eq!(parse(&endpoint.to_string()), endpoint);
        assert_eq!(
            parse("bücher.example:1").to_string(),
            "tcp://xn--bcher-kva.example:1"
        );
        assert!(reason("tcp://bad host:80").contains("not an IP address"));
        assert!(reason("tcp://a\u{0}b.example:80").contains("not an IP address"));
    }

    /// Issue 15 item 9: IPv6 zone ids, by name or index.
    #[test]
    fn ipv6_zone_ids_are_accepted() {
        let scoped = parse("tcp://[fe80::1%lo]:8000");
        assert_eq!(
            scoped.host_port().map(|hp| hp.host.clone()),
            Some(Host::ScopedV6 {
                ip: "fe80::1".parse().unwrap_or_else(|_| unreachable!()),
                zone: "lo".into()
            })
        );
        assert_eq!(scoped.to_string(), "tcp://[fe80::1%lo]:8000");
        assert_eq!(parse(&scoped.to_string()), scoped);
        assert_eq!(
            parse("udp://[fe80::1%253]:53").to_string(),
            "udp://[fe80::1%253]:53"
        );
        assert!(reason("tcp://[fe80::1%]:80").contains("not a zone"));
        assert!(reason("tcp://[fe80::1%a b]:80").contains("not a zone"));
        assert!(reason("tcp://[nope%lo]:80").contains("not an IPv6"));
    }

    #[tokio::test]
    async fn a_zone_resolves_to_its_interface_index() -> crate::Result<()> {
        let by_index = parse("tcp://[fe80::1%1]:80");
        let addrs = by_index.host_port().map(HostPort::resolve);
        let Some(addrs) = addrs else { unreachable!() };
        match addrs.await?.as_slice() {
            [SocketAddr::V6(v6)] => assert_eq!(v6.scope_id(), 1),
            other => panic!("{other:?}"),
        }
        let missing = parse("tcp://[fe80::1%no-such-if0]:80");
        let Some(hp) = missing.host_port() else {
            unreachable!()
        };
        let error = hp
            .resolve()
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("no network interface"), "{error}");
        Ok(())
    }

    #[test]
    fn push_to_prints_what_display_prints() {
        let peers = [
            PeerAddr::Ip("127.0.0.1:50738".parse().unwrap_or_else(|e| panic!("{e}"))),
            PeerAddr::Ip("255.0.10.9:0".parse().unwrap_or_else(|e| panic!("{e}"))),
            PeerAddr::Ip("[::1]:8000".parse().unwrap_or_else(|e| panic!("{e}"))),
            PeerAddr::Unix(Box::new(
                SockAddr::unix("/tmp/x.sock").unwrap_or_else(|e| panic!("{e}")),
            )),
        ];
        for peer in peers {
            let mut fast = String::new();
            peer.push_to(&mut fast);
            assert_eq!(fast, peer.to_string());
        }
    }

    #[test]
    fn a_unix_peer_name_cannot_break_a_line_or_colour_the_terminal() {
        let forged = SockAddr::unix("/tmp/a\nsummary: 0 connections\x1b[31m.sock")
            .unwrap_or_else(|e| panic!("{e}"));
        let shown = PeerAddr::Unix(Box::new(forged)).to_string();
        assert_eq!(shown, "/tmp/a\\nsummary: 0 connections\\u{1b}[31m.sock");
    }

    #[test]
    fn a_proxied_target_is_named_as_written_or_by_its_ip_literal() {
        let target = |text: &str| match parse(text) {
            Endpoint::Tcp(hp) => PeerAddr::target(&hp),
            other => panic!("not tcp: {other}"),
        };
        assert_eq!(
            target("tcp://db.internal:5432").to_string(),
            "db.internal:5432"
        );
        assert_eq!(target("tcp://db.internal:5432").ip(), None);
        assert_eq!(
            target("tcp://[::1]:80"),
            PeerAddr::Ip("[::1]:80".parse().unwrap_or_else(|e| panic!("{e}")))
        );
    }
}
