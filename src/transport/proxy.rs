//! The PROXY protocol (HAProxy's v1 text and v2 binary headers): a load balancer in front
//! of sockit says who the real client is, in a header before the client's first byte.
//!
//! Two halves:
//! * [`parse`] is pure and fuzzed: given the bytes received so far, it says whether they
//!   hold a complete header (and how long it is), need more, or can never become one.
//!   Field parsing is the `ppp` crate's; *framing* (where a header ends, and whether a
//!   prefix could still become one) is ours, because `ppp` judges some prefixes of valid
//!   v1 headers as malformed (`"PROXY TCP4 192.0.2.1 192.0.2.2 5 "` fails on the empty
//!   destination port), which would reject good clients whose header arrives in pieces.
//! * [`read_header`] applies it to an accepted socket, before TLS: it *peeks* at the
//!   socket (`MSG_PEEK`, as the protocol's specification recommends) and then reads exactly
//!   the header's bytes, so everything after it (a TLS ClientHello, the first request) is
//!   left in the socket for the next layer. The whole read is bounded by a timeout.
//!
//! What the header yields ([`Origin`]): the client's address for `PROXY TCP4/TCP6` (v1)
//! and v2 `PROXY` with IPv4/IPv6 addresses; the socket's own peer for v1 `UNKNOWN`, v2
//! `LOCAL` (the balancer's own health checks) and v2 headers without IP addresses.
//!
//! The other direction, [`encode`], writes the header a relay sends its target
//! (`relay --send-proxy v1|v2`), as HAProxy's `send-proxy` does: the client's address and
//! the address it connected to, or "unknown" when the client is not an IP peer.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, Interest};

use super::Stream;
use crate::endpoint::PeerAddr;
use crate::error::{Error, Result};

/// The v2 header's fixed 12-byte signature.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Every v1 header starts with this.
const V1_PREFIX: &[u8] = b"PROXY ";
/// The longest v1 header the specification allows, CRLF included.
pub const V1_MAX_LEN: usize = 107;
/// The fixed part of a v2 header: signature, version/command, family/protocol, length.
const V2_FIXED_LEN: usize = 16;
/// The longest v2 header accepted (address block plus TLVs). The format allows 64 KiB;
/// real balancers send a few hundred bytes, and a bound keeps a hostile header from
/// costing much memory per connection.
pub const V2_MAX_LEN: usize = 16 * 1024;
/// Bytes peeked at first: a v1 header or a v2 header with IPv6 addresses and a few TLVs.
const PEEK_LEN: usize = 256;

/// Whether accepted connections must start with a PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyProtocol {
    /// No header: the socket's peer is the client.
    #[default]
    Off,
    /// `--proxy-protocol`: every connection starts with a v1 or v2 header, read within
    /// `timeout`; a connection without one is closed. (Accepting both kinds of clients on
    /// one port would let anyone who connects directly claim any address.)
    Required {
        /// Longest a client (the balancer) may take to send the header.
        timeout: Duration,
    },
}

impl ProxyProtocol {
    /// Default time allowed for the header: balancers send it at once, with the connection.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// The usual setting for `--proxy-protocol`.
    pub fn required() -> ProxyProtocol {
        ProxyProtocol::Required {
            timeout: ProxyProtocol::DEFAULT_TIMEOUT,
        }
    }

    /// Whether a header is expected.
    pub fn is_on(&self) -> bool {
        matches!(self, ProxyProtocol::Required { .. })
    }
}

/// Who the header says the connection is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The real client: the addresses of a `PROXY` header.
    Client {
        /// The client's own address.
        source: SocketAddr,
        /// The address the client connected to (at the balancer), which a relay's
        /// `--send-proxy` passes on.
        destination: SocketAddr,
    },
    /// v2 `LOCAL`: the balancer speaking for itself (a health check); use the socket peer.
    Local,
    /// v1 `UNKNOWN`, or v2 without IP addresses: the balancer does not know; use the
    /// socket peer.
    Unknown,
}

/// What the bytes received so far amount to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A complete header of `len` bytes (the connection's data starts after it).
    Complete {
        /// Who the connection is from.
        origin: Origin,
        /// Header length in bytes.
        len: usize,
    },
    /// A prefix of a possible header: wait for more bytes.
    NeedMore,
    /// A v2 header whose total length is known: read exactly `total` bytes, then parse.
    NeedTotal(usize),
    /// These bytes can never start a valid header.
    Invalid(String),
}

/// Judges the bytes received so far. Pure: never panics, whatever the input.
pub fn parse(bytes: &[u8]) -> Parsed {
    if bytes.is_empty() {
        return Parsed::NeedMore;
    }
    let v2_seen = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..v2_seen] == V2_SIGNATURE[..v2_seen] {
        return parse_v2(bytes);
    }
    let v1_seen = bytes.len().min(V1_PREFIX.len());
    if bytes[..v1_seen] == V1_PREFIX[..v1_seen] {
        return parse_v1(bytes);
    }
    Parsed::Invalid(format!(
        "it does not start with a PROXY header (v1 \"PROXY …\" or the v2 signature) but with {}",
        describe_start(bytes)
    ))
}

/// A v1 header: one line, at most 107 bytes, ending in CRLF.
fn parse_v1(bytes: &[u8]) -> Parsed {
    let window = &bytes[..bytes.len().min(V1_MAX_LEN)];
    let Some(newline) = memchr::memchr(b'\n', window) else {
        return if bytes.len() >= V1_MAX_LEN {
            Parsed::Invalid(format!(
                "the v1 header has no line end within {V1_MAX_LEN} bytes"
            ))
        } else {
            Parsed::NeedMore
        };
    };
    if newline == 0 || bytes[newline - 1] != b'\r' {
        return Parsed::Invalid("the v1 header line must end in CRLF".into());
    }
    let line = &bytes[..=newline];
    match ppp::v1::Header::try_from(line) {
        Ok(header) => {
            let origin = match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => Origin::Client {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                ppp::v1::Addresses::Tcp6(a) => Origin::Client {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                ppp::v1::Addresses::Unknown => Origin::Unknown,
            };
            Parsed::Complete {
                origin,
                len: line.len(),
            }
        }
        Err(e) => Parsed::Invalid(format!(
            "malformed v1 header \"{}\": {}",
            crate::escape::escaped(line.strip_suffix(b"\r\n").unwrap_or(line)),
            v1_reason(&e)
        )),
    }
}

/// `ppp`'s v1 messages, in the words of our logs.
fn v1_reason(e: &ppp::v1::BinaryParseError) -> String {
    use ppp::v1::{BinaryParseError, ParseError};
    match e {
        BinaryParseError::InvalidUtf8(_) => "it is not text".into(),
        BinaryParseError::Parse(ParseError::InvalidProtocol) => {
            "the protocol must be TCP4, TCP6 or UNKNOWN".into()
        }
        BinaryParseError::Parse(e) => e.to_string().trim_end_matches('.').to_lowercase(),
    }
}

/// A v2 header: 16 fixed bytes, then as many as its length field says.
fn parse_v2(bytes: &[u8]) -> Parsed {
    if bytes.len() < V2_FIXED_LEN {
        return Parsed::NeedMore;
    }
    let total = V2_FIXED_LEN + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if total > V2_MAX_LEN {
        return Parsed::Invalid(format!(
            "the v2 header is {total} bytes long; at most {V2_MAX_LEN} are accepted"
        ));
    }
    match ppp::v2::Header::try_from(bytes) {
        Ok(header) => {
            let origin = match (header.command, header.addresses) {
                (ppp::v2::Command::Local, _) => Origin::Local,
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => Origin::Client {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => Origin::Client {
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                (ppp::v2::Command::Proxy, _) => Origin::Unknown,
            };
            Parsed::Complete {
                origin,
                len: header.len(),
            }
        }
        Err(ppp::v2::ParseError::Partial(..) | ppp::v2::ParseError::Incomplete(..)) => {
            Parsed::NeedTotal(total)
        }
        Err(e) => Parsed::Invalid(format!(
            "malformed v2 header: {}",
            e.to_string().trim_end_matches('.')
        )),
    }
}

/// The first bytes of a connection, for a log line: text if printable, else hex.
fn describe_start(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(16)];
    if head
        .iter()
        .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\r' || *b == b'\n')
    {
        format!("{:?}", String::from_utf8_lossy(head))
    } else {
        let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
        format!("bytes {}", hex.join(" "))
    }
}

/// Which header a relay sends before each target connection's first byte
/// (`--send-proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SendProxy {
    /// The v1 text line (`PROXY TCP4 src dst sport dport`), HAProxy's `send-proxy`.
    V1,
    /// The v2 binary header, HAProxy's `send-proxy-v2`.
    V2,
}

/// The header naming `client` as the connection's source and `local` (the address the
/// client reached) as its destination. When either is not an IP address (a Unix socket
/// peer), the header says the addresses are unknown (v1 `UNKNOWN`, v2 `AF_UNSPEC`), and
/// the receiver uses the connection's own peer. When the families differ, both are
/// written as IPv6, the IPv4 one mapped (`::ffff:a.b.c.d`), as HAProxy does.
pub fn encode(
    version: SendProxy,
    client: Option<SocketAddr>,
    local: Option<SocketAddr>,
) -> Vec<u8> {
    let pair = client.zip(local).map(same_family);
    match version {
        SendProxy::V1 => encode_v1(pair),
        SendProxy::V2 => encode_v2(pair),
    }
}

/// Both addresses in one family: unchanged if they share one, else both IPv6.
fn same_family((source, destination): (SocketAddr, SocketAddr)) -> (SocketAddr, SocketAddr) {
    let as_v6 = |addr: SocketAddr| match addr {
        SocketAddr::V4(v4) => SocketAddr::from((v4.ip().to_ipv6_mapped(), v4.port())),
        v6 => v6,
    };
    if source.is_ipv4() == destination.is_ipv4() {
        (source, destination)
    } else {
        (as_v6(source), as_v6(destination))
    }
}

/// `PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n`, or `PROXY UNKNOWN\r\n`.
fn encode_v1(pair: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    match pair {
        Some((source, destination)) => {
            let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
            format!(
                "PROXY {family} {} {} {} {}\r\n",
                source.ip(),
                destination.ip(),
                source.port(),
                destination.port()
            )
            .into_bytes()
        }
        None => b"PROXY UNKNOWN\r\n".to_vec(),
    }
}

/// The v2 header: signature, `PROXY` command, TCP over IPv4 or IPv6 (or `AF_UNSPEC`
/// with no addresses), the address block; no TLVs.
fn encode_v2(pair: Option<(SocketAddr, SocketAddr)>) -> Vec<u8> {
    /// Version 2, command PROXY.
    const V2_PROXY: u8 = 0x21;
    let (family, addresses) = match pair {
        Some((SocketAddr::V4(source), SocketAddr::V4(destination))) => {
            let mut block = Vec::with_capacity(12);
            block.extend_from_slice(&source.ip().octets());
            block.extend_from_slice(&destination.ip().octets());
            block.extend_from_slice(&source.port().to_be_bytes());
            block.extend_from_slice(&destination.port().to_be_bytes());
            (0x11, block)
        }
        Some((SocketAddr::V6(source), SocketAddr::V6(destination))) => {
            let mut block = Vec::with_capacity(36);
            block.extend_from_slice(&source.ip().octets());
            block.extend_from_slice(&destination.ip().octets());
            block.extend_from_slice(&source.port().to_be_bytes());
            block.extend_from_slice(&destination.port().to_be_bytes());
            (0x21, block)
        }
        // Mixed families never reach here (`same_family`); unknown addresses do.
        _ => (0x00, Vec::new()),
    };
    let mut header = Vec::with_capacity(V2_FIXED_LEN + addresses.len());
    header.extend_from_slice(V2_SIGNATURE);
    header.push(V2_PROXY);
    header.push(family);
    // At most 36 bytes: the cast cannot truncate.
    header.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
    header.extend_from_slice(&addresses);
    header
}

/// Reads the PROXY header at the start of `stream` and returns who the client is: the
/// header's source address, or `socket_peer` when the header carries none.
///
/// Only the header's bytes are consumed. `Ok(None)` means the connection closed before
/// sending anything (a balancer's plain TCP health check): nothing to serve, nothing
/// wrong.
///
/// # Errors
/// [`Error::ProxyHeader`] for a malformed or missing header or a close mid-header;
/// [`Error::ProxyHeaderLate`] when it does not arrive within `timeout`; [`Error::Io`] for
/// socket errors.
pub async fn read_header(
    stream: &mut Stream,
    socket_peer: &PeerAddr,
    timeout: Duration,
) -> Result<Option<PeerAddr>> {
    let addresses = read_header_addresses(stream, socket_peer, timeout).await?;
    Ok(addresses.map(|addresses| addresses.peer))
}

/// What a PROXY header says about a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderAddresses {
    /// The client: the header's source, or the socket's own peer when the header names
    /// none (v1 `UNKNOWN`, v2 `LOCAL`).
    pub peer: PeerAddr,
    /// Where the client connected to, when the header names it: what a relay's
    /// `--send-proxy` passes on as the destination instead of its own address.
    pub destination: Option<SocketAddr>,
}

/// [`read_header`], with the destination the header names as well.
///
/// # Errors
/// As [`read_header`].
pub async fn read_header_addresses(
    stream: &mut Stream,
    socket_peer: &PeerAddr,
    timeout: Duration,
) -> Result<Option<HeaderAddresses>> {
    let reading = read_header_untimed(stream, socket_peer);
    let origin = match tokio::time::timeout(timeout, reading).await {
        Ok(origin) => origin?,
        Err(_) => {
            // Not `Error::Timeout`, whose hint names the client's `--timeout`.
            return Err(Error::ProxyHeaderLate {
                peer: socket_peer.to_string(),
                after: timeout,
            });
        }
    };
    Ok(origin.map(|origin| match origin {
        Origin::Client {
            source,
            destination,
        } => HeaderAddresses {
            peer: PeerAddr::Ip(source),
            destination: Some(destination),
        },
        Origin::Local | Origin::Unknown => HeaderAddresses {
            peer: socket_peer.clone(),
            destination: None,
        },
    }))
}

/// [`read_header`] without its time limit.
async fn read_header_untimed(
    stream: &mut Stream,
    socket_peer: &PeerAddr,
) -> Result<Option<Origin>> {
    let bad = |reason: String| Error::ProxyHeader {
        peer: socket_peer.to_string(),
        reason,
    };
    let io_error = |source: io::Error| Error::Io {
        doing: format!("reading the PROXY protocol header from {socket_peer}"),
        source,
    };
    let mut peeked = [0u8; PEEK_LEN];
    let mut seen = 0;
    loop {
        seen = peek_more(stream, &mut peeked, seen)
            .await
            .map_err(io_error)?;
        if seen == 0 {
            return Ok(None);
        }
        match parse(&peeked[..seen]) {
            Parsed::Complete { origin, len } => {
                stream
                    .read_exact(&mut peeked[..len])
                    .await
                    .map_err(io_error)?;
                return Ok(Some(origin));
            }
            Parsed::NeedTotal(total) => {
                // A v2 header larger than the peek window: read it whole (bounded by
                // V2_MAX_LEN), which also consumes it.
                let mut header = vec![0u8; total];
                stream.read_exact(&mut header).await.map_err(|e| {
                    if e.kind() == io::ErrorKind::UnexpectedEof {
                        bad(format!(
                            "the connection closed inside a {total}-byte v2 header"
                        ))
                    } else {
                        io_error(e)
                    }
                })?;
                return match parse(&header) {
                    Parsed::Complete { origin, .. } => Ok(Some(origin)),
                    Parsed::Invalid(reason) => Err(bad(reason)),
                    Parsed::NeedMore | Parsed::NeedTotal(_) => {
                        Err(bad("the v2 header's length does not add up".into()))
                    }
                };
            }
            Parsed::NeedMore if seen < PEEK_LEN => continue,
            Parsed::NeedMore => {
                return Err(bad(format!(
                    "no complete header in the first {PEEK_LEN} bytes"
                )));
            }
            Parsed::Invalid(reason) => return Err(bad(reason)),
        }
    }
}

/// Peeks at the socket until it holds more than `seen` bytes (or the peer closed: then
/// `Ok(seen)` if data remains unread, `Ok(0)` if nothing ever came). Returns the count
/// peeked. Nothing is consumed.
async fn peek_more(stream: &Stream, buf: &mut [u8], seen: usize) -> io::Result<usize> {
    loop {
        match stream {
            Stream::Tcp(s) => s.readable().await?,
            Stream::Unix(s) => s.readable().await?,
            Stream::Tls(_) => {
                return Err(io::Error::other(
                    "the PROXY header is read before TLS, on the plain socket",
                ));
            }
        }
        // Returning WouldBlock from `try_io` clears the readiness tokio holds, so when the
        // bytes are only a prefix the next `readable()` waits for new data instead of
        // spinning on the same bytes.
        let peek = || {
            let n = peek_now(stream, buf)?;
            if n == seen && n != 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        };
        let result = match stream {
            Stream::Tcp(s) => s.try_io(Interest::READABLE, peek),
            Stream::Unix(s) => s.try_io(Interest::READABLE, peek),
            Stream::Tls(_) => unreachable!("rejected above"),
        };
        match result {
            Ok(0) if seen > 0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed mid-header",
                ));
            }
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// One non-blocking `recv(MSG_PEEK)` on the stream's socket.
fn peek_now(stream: &Stream, buf: &mut [u8]) -> io::Result<usize> {
    use rustix::net::{RecvFlags, recv};
    use std::os::fd::AsFd;
    let fd = match stream {
        Stream::Tcp(s) => s.as_fd(),
        Stream::Unix(s) => s.as_fd(),
        Stream::Tls(s) => s.get_ref().0.as_fd(),
    };
    let (peeked, _) = recv(fd, buf, RecvFlags::PEEK | RecvFlags::DONTWAIT)?;
    Ok(peeked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut bytes = V2_SIGNATURE.to_vec();
        bytes.push(0x20 | command);
        bytes.push(family);
        let len = u16::try_from(addresses.len() + tlvs.len()).unwrap_or(u16::MAX);
        bytes.extend_from_slice(&len.to_be_bytes());
        bytes.extend_from_slice(addresses);
        bytes.extend_from_slice(tlvs);
        bytes
    }

    fn client(source: &str, destination: &str) -> Origin {
        let addr = |text: &str| text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
        Origin::Client {
            source: addr(source),
            destination: addr(destination),
        }
    }

    #[test]
    fn v1_tcp4_tcp6_and_unknown() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\nGET /";
        assert_eq!(
            parse(line),
            Parsed::Complete {
                origin: client("192.0.2.7:40000", "198.51.100.1:443"),
                len: line.len() - 5
            }
        );
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n";
        assert_eq!(
            parse(line),
            Parsed::Complete {
                origin: client("[2001:db8::7]:40000", "[2001:db8::1]:443"),
                len: line.len()
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Complete {
                origin: Origin::Unknown,
                len: 15
            }
        );
    }

    #[test]
    fn every_prefix_of_a_valid_header_waits_for_more() {
        // `ppp` alone calls some of these prefixes malformed (an empty port after a space).
        let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n".to_vec();
        let v6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 5 6\r\n".to_vec();
        let v2 = v2(
            1,
            0x11,
            &[192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x40, 1, 187],
            &[],
        );
        for header in [v1, v6, v2] {
            for cut in 0..header.len() {
                let verdict = parse(&header[..cut]);
                assert!(
                    matches!(verdict, Parsed::NeedMore | Parsed::NeedTotal(_)),
                    "prefix {:?} judged {verdict:?}",
                    String::from_utf8_lossy(&header[..cut])
                );
            }
            assert!(matches!(parse(&header), Parsed::Complete { len, .. } if len == header.len()));
        }
    }

    #[test]
    fn a_v1_prefix_ending_in_a_separator_is_not_malformed() {
        // `ppp` on its own calls this malformed (empty destination port): the reason the
        // framing here waits for the CRLF before handing a v1 line to it.
        for prefix in [
            &b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 "[..],
            b"PROXY TCP4 192.0.2.7 ",
            b"PROXY TCP6 ::1 ::1 1 2\r",
        ] {
            assert_eq!(parse(prefix), Parsed::NeedMore, "{prefix:?}");
        }
    }

    #[test]
    fn v2_proxy_local_and_unspecified() {
        let addresses = [192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x40, 1, 187];
        let header = v2(1, 0x11, &addresses, &[0x04, 0, 1, 42]); // with a NOOP TLV
        assert_eq!(
            parse(&header),
            Parsed::Complete {
                origin: client("192.0.2.7:40000", "198.51.100.1:443"),
                len: header.len()
            }
        );
        let mut v6 = [0u8; 36];
        v6[15] = 1; // ::1
        v6[31] = 2;
        v6[32..34].copy_from_slice(&7000u16.to_be_bytes());
        assert!(matches!(
            parse(&v2(1, 0x21, &v6, &[])),
            Parsed::Complete { origin, .. } if origin == client("[::1]:7000", "[::2]:0")
        ));
        assert!(matches!(
            parse(&v2(0, 0x00, &[], &[])),
            Parsed::Complete {
                origin: Origin::Local,
                len: 16
            }
        ));
        assert!(matches!(
            parse(&v2(1, 0x00, &[], &[])),
            Parsed::Complete {
                origin: Origin::Unknown,
                ..
            }
        ));
    }

    /// Issue 19 item 3: what `--send-proxy` writes, the parser reads back as the client.
    #[test]
    fn encoded_headers_round_trip_through_the_parser() {
        let cases = [
            ("192.0.2.7:40000", "198.51.100.1:443", "192.0.2.7:40000"),
            (
                "[2001:db8::7]:40000",
                "[2001:db8::1]:443",
                "[2001:db8::7]:40000",
            ),
            (
                "192.0.2.7:40000",
                "[2001:db8::1]:443",
                "[::ffff:192.0.2.7]:40000",
            ),
        ];
        for version in [SendProxy::V1, SendProxy::V2] {
            for (source, destination, seen) in cases {
                let source: SocketAddr = source.parse().unwrap_or_else(|e| panic!("{e}"));
                let destination: SocketAddr = destination.parse().unwrap_or_else(|e| panic!("{e}"));
                let mut header = encode(version, Some(source), Some(destination));
                let len = header.len();
                header.extend_from_slice(b"payload");
                assert_eq!(
                    parse(&header),
                    Parsed::Complete {
                        origin: client(seen, &destination.to_string()),
                        len
                    },
                    "{version:?} {source} {destination}"
                );
            }
            let unknown = encode(
                version,
                None,
                Some("127.0.0.1:1".parse().unwrap_or_else(|e| panic!("{e}"))),
            );
            assert!(
                matches!(parse(&unknown), Parsed::Complete { origin: Origin::Unknown, len } if len == unknown.len()),
                "{version:?}"
            );
        }
        assert_eq!(
            encode(
                SendProxy::V1,
                Some(SocketAddr::from(([192, 0, 2, 7], 40000))),
                Some(SocketAddr::from(([198, 51, 100, 1], 443)))
            ),
            b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n"
        );
    }

    #[test]
    fn a_long_v2_header_asks_for_its_whole_length() {
        let header = v2(1, 0x11, &[0; 12], &vec![0u8; 1000]);
        assert_eq!(parse(&header[..PEEK_LEN]), Parsed::NeedTotal(header.len()));
    }

    #[test]
    fn garbage_is_rejected_at_once_with_what_was_seen() {
        let Parsed::Invalid(reason) = parse(b"GET / HTTP/1.1\r\n") else {
            panic!("HTTP accepted as a PROXY header");
        };
        assert!(reason.contains("\"GET / HTTP/1.1"), "{reason}");
        assert!(matches!(parse(&[0x16, 0x03, 0x01]), Parsed::Invalid(r) if r.contains("16 03 01")));
        assert!(
            matches!(parse(b"PROXY TCP5 a b 1 2\r\n"), Parsed::Invalid(r) if r.contains("TCP4, TCP6"))
        );
        assert!(
            matches!(parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"), Parsed::Invalid(r) if r.contains("CRLF"))
        );
        let long = [b"PROXY ".as_slice(), &[b'x'; 200]].concat();
        assert!(matches!(parse(&long), Parsed::Invalid(r) if r.contains("107")));
        let mut bad_version = v2(1, 0x11, &[0; 12], &[]);
        bad_version[12] = 0x31;
        assert!(matches!(parse(&bad_version), Parsed::Invalid(r) if r.contains("v2")));
        let huge = v2(1, 0x11, &[0; 12], &vec![0u8; V2_MAX_LEN]);
        assert!(matches!(parse(&huge[..16]), Parsed::Invalid(r) if r.contains("at most")));
    }
}
