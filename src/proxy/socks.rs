//! The SOCKS wire format, server side: pure functions over the bytes received so far, no
//! I/O, so every message a client can send is unit-tested and fuzzed (`fuzz/fuzz_targets/
//! socks_request.rs`).
//!
//! * SOCKS5 (RFC 1928): the greeting (methods offered), the username/password
//!   sub-negotiation (RFC 1929), the request (CONNECT, BIND, UDP ASSOCIATE to an IPv4,
//!   IPv6 or domain address) and the header of each UDP datagram; plus the replies.
//! * SOCKS4 and 4a: the one request (CONNECT to an IPv4 address, or with 4a to a name),
//!   and its eight-byte reply.
//!
//! Each parser answers like [`crate::transport::proxy::parse`]: a complete message and its
//! length (bytes after it belong to the next message or the tunnel), "need more", or a
//! [`SocksError`] that names the reply code the client gets. A prefix of a valid message
//! is always "need more", never an error, so a message that arrives in pieces is read.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The SOCKS5 version byte, first in every SOCKS5 message but the auth sub-negotiation.
pub const SOCKS5: u8 = 0x05;
/// The SOCKS4 version byte.
pub const SOCKS4: u8 = 0x04;
/// The version byte of the username/password sub-negotiation (RFC 1929).
const USER_PASS_VERSION: u8 = 0x01;
/// Longest SOCKS4 user id or 4a host name read before the request is judged malformed
/// (each ends in a NUL; the protocol sets no bound, so this one is ours).
pub const SOCKS4_MAX_FIELD: usize = 255;
/// Longest host name accepted, as DNS allows (RFC 1035: 253 characters in text form).
pub const MAX_HOST_NAME: usize = 253;

/// What a parser made of the bytes received so far (the HTTP CONNECT parser shares it,
/// with its own error type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T, E = SocksError> {
    /// A whole message, `len` bytes long.
    Complete {
        /// Bytes the message took; what follows is not part of it.
        len: usize,
        /// The message.
        value: T,
    },
    /// A prefix of a message: read more.
    NeedMore,
    /// Bytes that can never become a valid message; the client gets the error's reply.
    Invalid(E),
}

/// An authentication method a SOCKS5 client may offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// 0x00: no authentication.
    NoAuth,
    /// 0x02: username and password (RFC 1929).
    UserPass,
}

impl Method {
    /// The method's byte on the wire.
    pub fn byte(self) -> u8 {
        match self {
            Method::NoAuth => 0x00,
            Method::UserPass => 0x02,
        }
    }
}

/// The methods a SOCKS5 client offered in its greeting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Greeting {
    /// Every method byte, in the client's order (unknown ones included, for the log).
    pub methods: Vec<u8>,
}

impl Greeting {
    /// Whether the client offered `method`.
    pub fn offers(&self, method: Method) -> bool {
        self.methods.contains(&method.byte())
    }
}

/// A username and password from the RFC 1929 sub-negotiation, or from HTTP Basic auth.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name, as sent.
    pub user: Vec<u8>,
    /// The password, as sent; never logged or printed.
    pub password: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &String::from_utf8_lossy(&self.user))
            .field("password", &"…")
            .finish()
    }
}

/// What a SOCKS5 request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// 0x01: a TCP tunnel to the destination.
    Connect,
    /// 0x02: listen for one inbound connection (not served: reply 0x07).
    Bind,
    /// 0x03: relay UDP datagrams for the client.
    UdpAssociate,
}

/// Where a client wants to go: an address, or a name the proxy resolves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Destination {
    /// An IPv4 or IPv6 address and port.
    Addr(SocketAddr),
    /// A host name (checked: see [`check_host_name`]) and port.
    Name(String, u16),
}

impl Destination {
    /// The port asked for.
    pub fn port(&self) -> u16 {
        match self {
            Destination::Addr(addr) => addr.port(),
            Destination::Name(_, port) => *port,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Addr(addr) => write!(f, "{addr}"),
            Destination::Name(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

/// A SOCKS5 request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// What is asked.
    pub command: Command,
    /// Where to (for UDP ASSOCIATE: where the client will send from, often 0.0.0.0:0).
    pub destination: Destination,
}

/// A SOCKS4 or 4a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socks4Request {
    /// Only CONNECT (1) is served; BIND (2) is parsed so it can be refused properly.
    pub command: Command,
    /// An IPv4 address (SOCKS4) or a name (4a).
    pub destination: Destination,
    /// The user id field, which SOCKS4 clients fill with anything; logged, never checked.
    pub user_id: Vec<u8>,
}

/// SOCKS5 reply codes (RFC 1928, section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// 0x00: succeeded.
    Succeeded,
    /// 0x01: general SOCKS server failure (a malformed request).
    GeneralFailure,
    /// 0x02: connection not allowed by ruleset (`--allow-to` / `--deny-to`).
    NotAllowed,
    /// 0x03: network unreachable.
    NetworkUnreachable,
    /// 0x04: host unreachable (the name does not resolve, or cannot be a name).
    HostUnreachable,
    /// 0x05: connection refused by the destination.
    ConnectionRefused,
    /// 0x06: TTL expired (the connect timed out).
    TtlExpired,
    /// 0x07: command not supported (BIND, an unknown command).
    CommandNotSupported,
    /// 0x08: address type not supported.
    AddressTypeNotSupported,
}

impl Reply {
    /// The code's byte on the wire.
    pub fn code(self) -> u8 {
        match self {
            Reply::Succeeded => 0x00,
            Reply::GeneralFailure => 0x01,
            Reply::NotAllowed => 0x02,
            Reply::NetworkUnreachable => 0x03,
            Reply::HostUnreachable => 0x04,
            Reply::ConnectionRefused => 0x05,
            Reply::TtlExpired => 0x06,
            Reply::CommandNotSupported => 0x07,
            Reply::AddressTypeNotSupported => 0x08,
        }
    }
}

/// Why bytes from a client are not a valid SOCKS message; each maps to the reply the
/// client gets ([`SocksError::reply`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SocksError {
    /// The version byte is not the one the message needs.
    #[error("version byte {found:#04x} where {expected:#04x} was expected")]
    Version {
        /// The byte sent.
        found: u8,
        /// The byte this message needs.
        expected: u8,
    },
    /// A SOCKS5 greeting that offers no method at all.
    #[error("a greeting that offers no authentication method")]
    NoMethods,
    /// A request command that SOCKS5 does not define.
    #[error("unknown command {0:#04x}")]
    UnknownCommand(u8),
    /// An address type other than IPv4 (1), domain (3) or IPv6 (4).
    #[error("unknown address type {0:#04x}")]
    UnknownAddressType(u8),
    /// A host name that cannot exist: empty, too long, a bad label or byte.
    #[error("{0}")]
    BadHostName(String),
    /// A SOCKS4 user id or 4a name longer than [`SOCKS4_MAX_FIELD`] with no NUL.
    #[error("a SOCKS4 field longer than {SOCKS4_MAX_FIELD} bytes without its closing NUL")]
    FieldTooLong,
    /// A SOCKS4 command other than CONNECT (1) or BIND (2).
    #[error("unknown SOCKS4 command {0:#04x}")]
    UnknownSocks4Command(u8),
}

impl SocksError {
    /// The SOCKS5 reply code the client gets for this error.
    pub fn reply(&self) -> Reply {
        match self {
            SocksError::UnknownCommand(_) | SocksError::UnknownSocks4Command(_) => {
                Reply::CommandNotSupported
            }
            SocksError::UnknownAddressType(_) => Reply::AddressTypeNotSupported,
            SocksError::BadHostName(_) => Reply::HostUnreachable,
            SocksError::Version { .. } | SocksError::NoMethods | SocksError::FieldTooLong => {
                Reply::GeneralFailure
            }
        }
    }
}

/// Parses a SOCKS5 greeting: VER NMETHODS METHODS….
pub fn parse_greeting(buf: &[u8]) -> Parsed<Greeting> {
    let Some(&version) = buf.first() else {
        return Parsed::NeedMore;
    };
    if version != SOCKS5 {
        return Parsed::Invalid(SocksError::Version {
            found: version,
            expected: SOCKS5,
        });
    }
    let Some(&count) = buf.get(1) else {
        return Parsed::NeedMore;
    };
    if count == 0 {
        return Parsed::Invalid(SocksError::NoMethods);
    }
    let len = 2 + usize::from(count);
    match buf.get(2..len) {
        Some(methods) => Parsed::Complete {
            len,
            value: Greeting {
                methods: methods.to_vec(),
            },
        },
        None => Parsed::NeedMore,
    }
}

/// Parses the RFC 1929 sub-negotiation: VER(1) ULEN UNAME PLEN PASSWD.
pub fn parse_user_pass(buf: &[u8]) -> Parsed<Credentials> {
    let Some(&version) = buf.first() else {
        return Parsed::NeedMore;
    };
    if version != USER_PASS_VERSION {
        return Parsed::Invalid(SocksError::Version {
            found: version,
            expected: USER_PASS_VERSION,
        });
    }
    let Some(&user_len) = buf.get(1) else {
        return Parsed::NeedMore;
    };
    let user_end = 2 + usize::from(user_len);
    let Some(&password_len) = buf.get(user_end) else {
        return Parsed::NeedMore;
    };
    let len = user_end + 1 + usize::from(password_len);
    match (buf.get(2..user_end), buf.get(user_end + 1..len)) {
        (Some(user), Some(password)) => Parsed::Complete {
            len,
            value: Credentials {
                user: user.to_vec(),
                password: password.to_vec(),
            },
        },
        _ => Parsed::NeedMore,
    }
}

/// Parses a SOCKS5 request: VER CMD RSV ATYP DST.ADDR DST.PORT. The reserved byte is not
/// checked (clients are meant to send 0; nothing depends on it).
pub fn parse_request(buf: &[u8]) -> Parsed<Request> {
    let Some(&version) = buf.first() else {
        return Parsed::NeedMore;
    };
    if version != SOCKS5 {
        return Parsed::Invalid(SocksError::Version {
            found: version,
            expected: SOCKS5,
        });
    }
    let Some(&command) = buf.get(1) else {
        return Parsed::NeedMore;
    };
    let command = match command {
        0x01 => Command::Connect,
        0x02 => Command::Bind,
        0x03 => Command::UdpAssociate,
        other => return Parsed::Invalid(SocksError::UnknownCommand(other)),
    };
    if buf.len() < 3 {
        return Parsed::NeedMore;
    }
    match parse_address(&buf[3..]) {
        Parsed::Complete { len, value } => Parsed::Complete {
            len: 3 + len,
            value: Request {
                command,
                destination: value,
            },
        },
        Parsed::NeedMore => Parsed::NeedMore,
        Parsed::Invalid(e) => Parsed::Invalid(e),
    }
}

/// Parses ATYP DST.ADDR DST.PORT, the address block of requests and UDP headers.
pub fn parse_address(buf: &[u8]) -> Parsed<Destination> {
    let Some(&kind) = buf.first() else {
        return Parsed::NeedMore;
    };
    let (addr_len, addr_start) = match kind {
        0x01 => (4, 1),
        0x04 => (16, 1),
        0x03 => match buf.get(1) {
            Some(&len) => (usize::from(len), 2),
            None => return Parsed::NeedMore,
        },
        other => return Parsed::Invalid(SocksError::UnknownAddressType(other)),
    };
    let port_at = addr_start + addr_len;
    let len = port_at + 2;
    let (Some(addr), Some(port)) = (buf.get(addr_start..port_at), buf.get(port_at..len)) else {
        return Parsed::NeedMore;
    };
    let port = u16::from_be_bytes([port[0], port[1]]);
    let destination = match kind {
        0x01 => Destination::Addr(SocketAddr::new(IpAddr::V4(ipv4(addr)), port)),
        0x04 => Destination::Addr(SocketAddr::new(IpAddr::V6(ipv6(addr)), port)),
        _ => match check_host_name(addr) {
            Ok(name) => Destination::Name(name, port),
            Err(e) => return Parsed::Invalid(e),
        },
    };
    Parsed::Complete {
        len,
        value: destination,
    }
}

/// A host name a resolver could be asked about: 1 to [`MAX_HOST_NAME`] bytes of letters,
/// digits, `-`, `_` and dots, no empty label except a final dot, no label over 63 bytes.
/// An IP address written as text (some clients send one as a "name") passes too.
///
/// # Errors
/// [`SocksError::BadHostName`] saying what is wrong with it.
pub fn check_host_name(bytes: &[u8]) -> Result<String, SocksError> {
    let bad = |why: &str| Err(SocksError::BadHostName(why.to_string()));
    if bytes.is_empty() {
        return bad("an empty host name");
    }
    if bytes.len() > MAX_HOST_NAME {
        return Err(SocksError::BadHostName(format!(
            "a host name of {} bytes (DNS allows {MAX_HOST_NAME})",
            bytes.len()
        )));
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        return bad("a host name that is not text");
    };
    if text.parse::<IpAddr>().is_ok() {
        return Ok(text.to_string());
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.';
    if let Some(c) = text.chars().find(|&c| !allowed(c)) {
        return Err(SocksError::BadHostName(format!(
            "a host name with the character {:?}",
            c.escape_default().to_string()
        )));
    }
    let labels = text.strip_suffix('.').unwrap_or(text);
    for label in labels.split('.') {
        if label.is_empty() {
            return bad("a host name with an empty label");
        }
        if label.len() > 63 {
            return bad("a host name with a label over 63 bytes");
        }
    }
    Ok(text.to_string())
}

/// Parses a SOCKS4 / 4a request: VN CD DSTPORT DSTIP USERID NUL [HOST NUL].
pub fn parse_socks4(buf: &[u8]) -> Parsed<Socks4Request> {
    let Some(&version) = buf.first() else {
        return Parsed::NeedMore;
    };
    if version != SOCKS4 {
        return Parsed::Invalid(SocksError::Version {
            found: version,
            expected: SOCKS4,
        });
    }
    let Some(&command) = buf.get(1) else {
        return Parsed::NeedMore;
    };
    let command = match command {
        0x01 => Command::Connect,
        0x02 => Command::Bind,
        other => return Parsed::Invalid(SocksError::UnknownSocks4Command(other)),
    };
    let Some(fixed) = buf.get(2..8) else {
        return Parsed::NeedMore;
    };
    let port = u16::from_be_bytes([fixed[0], fixed[1]]);
    let ip = ipv4(&fixed[2..6]);
    let (user_id, after_user) = match nul_terminated(&buf[8..]) {
        Parsed::Complete { len, value } => (value, 8 + len),
        Parsed::NeedMore => return Parsed::NeedMore,
        Parsed::Invalid(e) => return Parsed::Invalid(e),
    };
    // SOCKS4a: 0.0.0.x with x ≠ 0 means "the name follows".
    let octets = ip.octets();
    let is_4a = octets[..3] == [0, 0, 0] && octets[3] != 0;
    let (destination, len) = if is_4a {
        match nul_terminated(&buf[after_user..]) {
            Parsed::Complete { len, value } => match check_host_name(&value) {
                Ok(name) => (Destination::Name(name, port), after_user + len),
                Err(e) => return Parsed::Invalid(e),
            },
            Parsed::NeedMore => return Parsed::NeedMore,
            Parsed::Invalid(e) => return Parsed::Invalid(e),
        }
    } else {
        (
            Destination::Addr(SocketAddr::new(IpAddr::V4(ip), port)),
            after_user,
        )
    };
    Parsed::Complete {
        len,
        value: Socks4Request {
            command,
            destination,
            user_id,
        },
    }
}

/// A field ending in NUL, at most [`SOCKS4_MAX_FIELD`] bytes before it; `len` counts the NUL.
fn nul_terminated(buf: &[u8]) -> Parsed<Vec<u8>> {
    let window = &buf[..buf.len().min(SOCKS4_MAX_FIELD + 1)];
    match window.iter().position(|&b| b == 0) {
        Some(at) => Parsed::Complete {
            len: at + 1,
            value: window[..at].to_vec(),
        },
        None if window.len() > SOCKS4_MAX_FIELD => Parsed::Invalid(SocksError::FieldTooLong),
        None => Parsed::NeedMore,
    }
}

/// A UDP datagram from a SOCKS5 client: RSV(2) FRAG ATYP DST.ADDR DST.PORT DATA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    /// Where the payload goes.
    pub destination: Destination,
    /// The payload.
    pub payload: &'a [u8],
}

/// Why a client's UDP datagram is dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UdpError {
    /// Shorter than its own header.
    #[error("a datagram shorter than its SOCKS5 header")]
    Truncated,
    /// A fragment (FRAG ≠ 0): reassembly is optional in RFC 1928, and not done here.
    #[error("a fragment (FRAG {0}); fragments are not reassembled")]
    Fragment(u8),
    /// The address block is malformed.
    #[error("{0}")]
    Address(SocksError),
}

/// Parses one datagram a client sent to its UDP ASSOCIATE relay.
///
/// # Errors
/// [`UdpError`]: the datagram is dropped (UDP has no reply for it).
pub fn parse_udp_datagram(datagram: &[u8]) -> Result<UdpDatagram<'_>, UdpError> {
    let Some(header) = datagram.get(..3) else {
        return Err(UdpError::Truncated);
    };
    if header[2] != 0 {
        return Err(UdpError::Fragment(header[2]));
    }
    match parse_address(&datagram[3..]) {
        Parsed::Complete { len, value } => Ok(UdpDatagram {
            destination: value,
            payload: &datagram[3 + len..],
        }),
        Parsed::NeedMore => Err(UdpError::Truncated),
        Parsed::Invalid(e) => Err(UdpError::Address(e)),
    }
}

/// The header the relay puts before a reply datagram from `from`.
pub fn udp_header(from: SocketAddr) -> Vec<u8> {
    let mut out = vec![0, 0, 0];
    push_address(&mut out, from);
    out
}

/// The server's choice of method: VER METHOD; `None` is 0xFF, "no acceptable method".
pub fn method_choice(method: Option<Method>) -> [u8; 2] {
    [SOCKS5, method.map_or(0xFF, Method::byte)]
}

/// The RFC 1929 status: 0 accepted, 1 refused.
pub fn auth_status(accepted: bool) -> [u8; 2] {
    [USER_PASS_VERSION, if accepted { 0x00 } else { 0x01 }]
}

/// A SOCKS5 reply: VER REP RSV ATYP BND.ADDR BND.PORT.
pub fn reply(code: Reply, bound: SocketAddr) -> Vec<u8> {
    let mut out = vec![SOCKS5, code.code(), 0];
    push_address(&mut out, bound);
    out
}

/// A SOCKS4 reply: 0x00, 0x5A granted or 0x5B rejected, then port and IPv4 address.
pub fn socks4_reply(granted: bool, bound: SocketAddr) -> [u8; 8] {
    let code = if granted { 0x5A } else { 0x5B };
    let port = bound.port().to_be_bytes();
    let ip = match bound.ip().to_canonical() {
        IpAddr::V4(v4) => v4.octets(),
        IpAddr::V6(_) => [0; 4],
    };
    [0, code, port[0], port[1], ip[0], ip[1], ip[2], ip[3]]
}

/// Appends ATYP ADDR PORT for `addr`.
fn push_address(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(v4) => {
            out.push(0x01);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(0x04);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Four bytes as an IPv4 address (the caller has checked the length).
fn ipv4(bytes: &[u8]) -> Ipv4Addr {
    let mut octets = [0u8; 4];
    octets.copy_from_slice(&bytes[..4]);
    Ipv4Addr::from(octets)
}

/// Sixteen bytes as an IPv6 address (the caller has checked the length).
fn ipv6(bytes: &[u8]) -> Ipv6Addr {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(&bytes[..16]);
    Ipv6Addr::from(octets)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// A SOCKS5 request to `name:port`.
    fn domain_request(name: &[u8], port: u16) -> Vec<u8> {
        let mut out = vec![5, 1, 0, 3, name.len() as u8];
        out.extend_from_slice(name);
        out.extend_from_slice(&port.to_be_bytes());
        out
    }

    #[test]
    fn a_greeting_lists_the_methods_offered() {
        assert_eq!(
            parse_greeting(&[5, 2, 0, 2, 0xAA]),
            Parsed::Complete {
                len: 4,
                value: Greeting {
                    methods: vec![0, 2]
                }
            }
        );
        assert_eq!(parse_greeting(&[5, 2, 0]), Parsed::NeedMore);
        assert_eq!(
            parse_greeting(&[5, 0]),
            Parsed::Invalid(SocksError::NoMethods)
        );
        assert!(matches!(
            parse_greeting(b"GET / HTTP/1.1"),
            Parsed::Invalid(SocksError::Version { found: b'G', .. })
        ));
    }

    #[test]
    fn requests_to_every_address_type_parse() {
        assert_eq!(
            parse_request(&[5, 1, 0, 1, 127, 0, 0, 1, 0x1F, 0x90]),
            Parsed::Complete {
                len: 10,
                value: Request {
                    command: Command::Connect,
                    destination: Destination::Addr(addr("127.0.0.1:8080"))
                }
            }
        );
        let mut v6 = vec![5, 3, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 53]);
        assert!(matches!(
            parse_request(&v6),
            Parsed::Complete { len: 22, value: Request { command: Command::UdpAssociate, destination } }
                if destination == Destination::Addr(addr("[::1]:53"))
        ));
        assert_eq!(
            parse_request(&domain_request(b"example.org", 443)),
            Parsed::Complete {
                len: 7 + 11,
                value: Request {
                    command: Command::Connect,
                    destination: Destination::Name("example.org".into(), 443)
                }
            }
        );
    }

    #[test]
    fn bad_requests_name_their_reply_code() {
        let unknown_type = parse_request(&[5, 1, 0, 9, 1, 2, 3, 4, 0, 80]);
        assert_eq!(
            unknown_type,
            Parsed::Invalid(SocksError::UnknownAddressType(9))
        );
        let Parsed::Invalid(e) = unknown_type else {
            unreachable!()
        };
        assert_eq!(e.reply().code(), 0x08);
        let Parsed::Invalid(e) = parse_request(&[5, 9, 0, 1]) else {
            panic!("an unknown command must be refused")
        };
        assert_eq!(e.reply(), Reply::CommandNotSupported);
        let Parsed::Invalid(e) = parse_request(&domain_request(&[b'a'; 255], 80)) else {
            panic!("a 255-byte name cannot exist")
        };
        assert_eq!(e.reply(), Reply::HostUnreachable);
        assert!(e.to_string().contains("255 bytes"), "{e}");
        assert!(matches!(
            parse_request(&domain_request(b"", 80)),
            Parsed::Invalid(SocksError::BadHostName(_))
        ));
        assert!(matches!(
            parse_request(&domain_request(b"a b\n", 80)),
            Parsed::Invalid(SocksError::BadHostName(_))
        ));
    }

    #[test]
    fn host_names_follow_dns_rules() {
        assert!(check_host_name(b"localhost").is_ok());
        assert!(check_host_name(b"a-b.example.org.").is_ok());
        assert!(check_host_name(b"::1").is_ok());
        assert!(check_host_name(&[b'a'; 64]).is_err());
        assert!(check_host_name(b"a..b").is_err());
        assert!(check_host_name(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn user_pass_and_its_status() {
        assert_eq!(
            parse_user_pass(&[1, 2, b'a', b'b', 1, b'c']),
            Parsed::Complete {
                len: 6,
                value: Credentials {
                    user: b"ab".to_vec(),
                    password: b"c".to_vec()
                }
            }
        );
        assert_eq!(parse_user_pass(&[1, 2, b'a', b'b', 1]), Parsed::NeedMore);
        assert!(matches!(
            parse_user_pass(&[5, 1]),
            Parsed::Invalid(SocksError::Version { .. })
        ));
        assert_eq!(auth_status(false), [1, 1]);
        let shown = format!(
            "{:?}",
            Credentials {
                user: b"u".to_vec(),
                password: b"secret".to_vec()
            }
        );
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn socks4_and_4a_requests_parse() {
        let mut four = vec![4, 1, 0, 80, 127, 0, 0, 1];
        four.extend_from_slice(b"me\0");
        assert_eq!(
            parse_socks4(&four),
            Parsed::Complete {
                len: 11,
                value: Socks4Request {
                    command: Command::Connect,
                    destination: Destination::Addr(addr("127.0.0.1:80")),
                    user_id: b"me".to_vec()
                }
            }
        );
        let mut four_a = vec![4, 1, 0, 80, 0, 0, 0, 1, 0];
        four_a.extend_from_slice(b"localhost\0");
        assert!(matches!(
            parse_socks4(&four_a),
            Parsed::Complete { len: 19, value: Socks4Request { destination, .. } }
                if destination == Destination::Name("localhost".into(), 80)
        ));
        let mut endless = vec![4, 1, 0, 80, 127, 0, 0, 1];
        endless.extend_from_slice(&[b'x'; 300]);
        assert_eq!(
            parse_socks4(&endless),
            Parsed::Invalid(SocksError::FieldTooLong)
        );
        assert_eq!(
            socks4_reply(false, addr("0.0.0.0:0")),
            [0, 0x5B, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn udp_datagrams_carry_their_destination() {
        let mut datagram = vec![0, 0, 0];
        datagram.extend_from_slice(&udp_header(addr("127.0.0.1:53"))[3..]);
        datagram.extend_from_slice(b"query");
        assert_eq!(
            parse_udp_datagram(&datagram),
            Ok(UdpDatagram {
                destination: Destination::Addr(addr("127.0.0.1:53")),
                payload: b"query"
            })
        );
        datagram[2] = 1;
        assert_eq!(parse_udp_datagram(&datagram), Err(UdpError::Fragment(1)));
        assert_eq!(parse_udp_datagram(&[0, 0]), Err(UdpError::Truncated));
    }

    #[test]
    fn replies_carry_the_bound_address() {
        assert_eq!(
            reply(Reply::NotAllowed, addr("0.0.0.0:0")),
            vec![5, 2, 0, 1, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(reply(Reply::Succeeded, addr("[::1]:1")).len(), 22);
        assert_eq!(method_choice(None), [5, 0xFF]);
        assert_eq!(method_choice(Some(Method::UserPass)), [5, 2]);
    }

    /// Every prefix of a valid message is "need more", and the whole message alone
    /// parses the same: what makes a message arriving in pieces safe to read.
    fn prefixes_need_more<T: PartialEq + fmt::Debug>(bytes: &[u8], parse: fn(&[u8]) -> Parsed<T>) {
        let Parsed::Complete { len, value } = parse(bytes) else {
            return;
        };
        assert!(len <= bytes.len());
        assert_eq!(parse(&bytes[..len]), Parsed::Complete { len, value });
        for cut in 0..len {
            assert_eq!(parse(&bytes[..cut]), Parsed::NeedMore, "prefix of {cut}");
        }
    }

    proptest! {
        #[test]
        fn no_input_panics_and_prefixes_of_messages_need_more(
            bytes in proptest::collection::vec(any::<u8>(), 0..300)
        ) {
            prefixes_need_more(&bytes, parse_greeting);
            prefixes_need_more(&bytes, parse_user_pass);
            prefixes_need_more(&bytes, parse_request);
            prefixes_need_more(&bytes, parse_socks4);
            let _ = parse_udp_datagram(&bytes);
        }

        #[test]
        fn valid_messages_in_pieces_need_more_until_whole(
            name in "[a-z0-9]{1,20}(\\.[a-z]{1,10}){0,3}",
            port in any::<u16>(),
            command in 1u8..=3,
            user in proptest::collection::vec(any::<u8>(), 0..40),
            password in proptest::collection::vec(any::<u8>(), 0..40),
            methods in proptest::collection::vec(any::<u8>(), 1..10),
        ) {
            let mut request = domain_request(name.as_bytes(), port);
            request[1] = command;
            prop_assert!(matches!(parse_request(&request), Parsed::Complete { .. }), "{:?} does not parse", request);
            prefixes_need_more(&request, parse_request);
            let mut auth = vec![1, user.len() as u8];
            auth.extend_from_slice(&user);
            auth.push(password.len() as u8);
            auth.extend_from_slice(&password);
            prop_assert!(matches!(parse_user_pass(&auth), Parsed::Complete { .. }), "{:?} does not parse", auth);
            prefixes_need_more(&auth, parse_user_pass);
            let mut greeting = vec![5, methods.len() as u8];
            greeting.extend_from_slice(&methods);
            prefixes_need_more(&greeting, parse_greeting);
            let mut four_a = vec![4, 1, 0, 80, 0, 0, 0, 9];
            four_a.extend(user.iter().map(|&b| b.max(1)));
            four_a.push(0);
            four_a.extend_from_slice(name.as_bytes());
            four_a.push(0);
            prop_assert!(matches!(parse_socks4(&four_a), Parsed::Complete { .. }), "{:?} does not parse", four_a);
            prefixes_need_more(&four_a, parse_socks4);
        }

        #[test]
        fn requests_round_trip_through_their_encoding(
            ip in any::<[u8; 4]>(), port in any::<u16>(), tail in proptest::collection::vec(any::<u8>(), 0..8)
        ) {
            let at = SocketAddr::from((ip, port));
            let mut bytes = reply(Reply::Succeeded, at);
            bytes[1] = 0x01;
            let len = bytes.len();
            bytes.extend_from_slice(&tail);
            prop_assert_eq!(parse_request(&bytes), Parsed::Complete {
                len,
                value: Request { command: Command::Connect, destination: Destination::Addr(at) },
            });
        }
    }
}
