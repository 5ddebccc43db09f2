//! SOCKS5 (RFC 1928) as a client: method negotiation, username/password (RFC 1929),
//! CONNECT, and UDP ASSOCIATE with its datagram header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::{Hop, ProxyChain, Target, reach_first};
use crate::endpoint::HostPort;
use crate::error::{Error, Result};
use crate::transport::sockopt::SocketOptions;

/// The protocol version byte.
const VERSION: u8 = 5;
/// Method: no authentication.
const NO_AUTH: u8 = 0x00;
/// Method: username/password.
const USER_PASS: u8 = 0x02;
/// Method reply: none of the offered methods is acceptable.
const NO_ACCEPTABLE: u8 = 0xff;
/// Command: open a TCP connection.
const CONNECT: u8 = 1;
/// Command: relay UDP datagrams.
const UDP_ASSOCIATE: u8 = 3;
/// Address types.
const ATYP_V4: u8 = 1;
const ATYP_NAME: u8 = 3;
const ATYP_V6: u8 = 4;

/// Negotiates, then asks for a TCP connection to `target`; returns the address the
/// proxy reports as bound.
pub(super) async fn connect(
    hop: &Hop<'_>,
    stream: &mut TcpStream,
    target: &Target,
) -> Result<SocketAddr> {
    negotiate(hop, stream).await?;
    request(hop, stream, CONNECT, target).await
}

/// The greeting and, when the proxy picks it, username/password authentication.
async fn negotiate(hop: &Hop<'_>, stream: &mut TcpStream) -> Result<()> {
    let credentials = hop.hop.credentials.as_ref();
    let greeting: &[u8] = if credentials.is_some() {
        &[VERSION, 2, NO_AUTH, USER_PASS]
    } else {
        &[VERSION, 1, NO_AUTH]
    };
    stream
        .write_all(greeting)
        .await
        .map_err(|e| hop.io_error(e, "while greeting it"))?;
    let mut reply = [0u8; 2];
    stream
        .read_exact(&mut reply)
        .await
        .map_err(|e| hop.io_error(e, "before choosing an authentication method"))?;
    if reply[0] != VERSION {
        return Err(not_socks5(hop, reply[0]));
    }
    match (reply[1], credentials) {
        (NO_AUTH, _) => Ok(()),
        (USER_PASS, Some(credentials)) => authenticate(hop, stream, credentials).await,
        (NO_ACCEPTABLE, Some(_)) => {
            Err(hop.auth_error("it accepts neither no authentication nor username/password"))
        }
        (NO_ACCEPTABLE, None) => Err(hop.auth_error(format!(
            "it requires a user name and password; {}",
            super::CREDENTIALS_HINT
        ))),
        (method, _) => Err(hop.protocol_error(format!(
            "it chose authentication method {method:#04x}, which was not offered"
        ))),
    }
}

/// The RFC 1929 exchange.
async fn authenticate(
    hop: &Hop<'_>,
    stream: &mut TcpStream,
    credentials: &super::Credentials,
) -> Result<()> {
    let user = credentials.user.as_bytes();
    let password = credentials.password.as_bytes();
    let (Ok(user_len), Ok(password_len)) = (u8::try_from(user.len()), u8::try_from(password.len()))
    else {
        return Err(Error::Usage(
            "a SOCKS5 user name and password are at most 255 bytes each".into(),
        ));
    };
    let mut message = Vec::with_capacity(3 + user.len() + password.len());
    message.extend_from_slice(&[1, user_len]);
    message.extend_from_slice(user);
    message.push(password_len);
    message.extend_from_slice(password);
    stream
        .write_all(&message)
        .await
        .map_err(|e| hop.io_error(e, "while sending the credentials"))?;
    let mut reply = [0u8; 2];
    stream.read_exact(&mut reply).await.map_err(|_| {
        hop.auth_error(format!(
            "it closed the connection instead of accepting user {:?}",
            credentials.user
        ))
    })?;
    if reply[1] != 0 {
        return Err(hop.auth_error(format!(
            "user {:?} and the password given were not accepted",
            credentials.user
        )));
    }
    Ok(())
}

/// Sends a request for `target` and reads the reply; returns the bound address.
async fn request(
    hop: &Hop<'_>,
    stream: &mut TcpStream,
    command: u8,
    target: &Target,
) -> Result<SocketAddr> {
    let mut message = vec![VERSION, command, 0];
    encode_address(&mut message, target)?;
    stream
        .write_all(&message)
        .await
        .map_err(|e| hop.io_error(e, "while sending the request"))?;
    let mut head = [0u8; 4];
    stream
        .read_exact(&mut head)
        .await
        .map_err(|e| hop.io_error(e, "before replying to the request"))?;
    if head[0] != VERSION {
        return Err(not_socks5(hop, head[0]));
    }
    if head[1] != 0 {
        return Err(hop.refused(target, reply_words(head[1])));
    }
    read_address(hop, stream, head[3]).await
}

/// Appends ATYP, address and port.
fn encode_address(out: &mut Vec<u8>, target: &Target) -> Result<()> {
    match target {
        Target::Addr(SocketAddr::V4(addr)) => {
            out.push(ATYP_V4);
            out.extend_from_slice(&addr.ip().octets());
        }
        Target::Addr(SocketAddr::V6(addr)) => {
            out.push(ATYP_V6);
            out.extend_from_slice(&addr.ip().octets());
        }
        Target::Name(name, _) => {
            let len = u8::try_from(name.len()).map_err(|_| {
                Error::Usage(format!(
                    "the host name {name:?} is longer than the 255 bytes SOCKS5 can carry"
                ))
            })?;
            out.push(ATYP_NAME);
            out.push(len);
            out.extend_from_slice(name.as_bytes());
        }
    }
    let port = match target {
        Target::Addr(addr) => addr.port(),
        Target::Name(_, port) => *port,
    };
    out.extend_from_slice(&port.to_be_bytes());
    Ok(())
}

/// Reads BND.ADDR and BND.PORT of a reply. A name is read and dropped (reported as the
/// unspecified address): no client use needs it.
async fn read_address(hop: &Hop<'_>, stream: &mut TcpStream, atyp: u8) -> Result<SocketAddr> {
    let during = |e| hop.io_error(e, "in the middle of its reply");
    let ip = match atyp {
        ATYP_V4 => {
            let mut octets = [0u8; 4];
            stream.read_exact(&mut octets).await.map_err(during)?;
            IpAddr::V4(Ipv4Addr::from(octets))
        }
        ATYP_V6 => {
            let mut octets = [0u8; 16];
            stream.read_exact(&mut octets).await.map_err(during)?;
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        ATYP_NAME => {
            let len = stream.read_u8().await.map_err(during)?;
            let mut name = vec![0u8; usize::from(len)];
            stream.read_exact(&mut name).await.map_err(during)?;
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        }
        other => {
            return Err(hop.protocol_error(format!(
                "its reply has address type {other}, which SOCKS5 does not define"
            )));
        }
    };
    let port = stream.read_u16().await.map_err(during)?;
    Ok(SocketAddr::new(ip, port))
}

/// The error for a first byte that is not SOCKS version 5.
fn not_socks5(hop: &Hop<'_>, version: u8) -> Error {
    let guess = match version {
        b'H' => " (it looks like an HTTP proxy: use http://)",
        0 | 4 => " (it looks like a SOCKS4 proxy: use socks4a://)",
        _ => "",
    };
    hop.protocol_error(format!(
        "it answered with version byte {version:#04x}, not SOCKS5's 0x05{guess}"
    ))
}

/// RFC 1928's reply codes in words.
fn reply_words(code: u8) -> String {
    let words = match code {
        1 => "general SOCKS server failure",
        2 => "connection not allowed by its rules",
        3 => "network unreachable",
        4 => "host unreachable",
        5 => "connection refused by the target",
        6 => "TTL expired",
        7 => "command not supported",
        8 => "address type not supported",
        _ => return format!("unknown reply code {code}"),
    };
    format!("{words} (SOCKS5 reply {code})")
}

/// A UDP association through one SOCKS5 proxy: the control connection that keeps it
/// alive and the local UDP socket that talks to the proxy's relay.
///
/// Every datagram to the relay carries the SOCKS5 UDP header naming the target; every
/// datagram from it carries the sender, which [`UdpAssociation::recv`] strips.
#[derive(Debug)]
pub struct UdpAssociation {
    /// The TCP connection the association lives as long as; never read or written
    /// after the reply, but closing it ends the association.
    _control: TcpStream,
    /// Our UDP socket, connected to the relay.
    socket: UdpSocket,
    /// The header put before every payload.
    header: Vec<u8>,
    /// The relay's address, for messages.
    relay: SocketAddr,
    /// The target, as the request named it.
    target: Target,
}

impl UdpAssociation {
    /// Asks the only hop of `chain` (a SOCKS5 proxy) to relay datagrams to `target`.
    ///
    /// # Errors
    /// [`Error::Usage`] when the chain is not one SOCKS5 hop; otherwise as
    /// [`super::open_tunnel`].
    pub async fn open(
        chain: &ProxyChain,
        target: &HostPort,
        socket: &SocketOptions,
    ) -> Result<UdpAssociation> {
        let [only] = chain.hops() else {
            return Err(Error::Usage(
                "udp:// goes through exactly one --proxy, a socks5:// or socks5h:// one (a UDP relay cannot be reached through another proxy)".into(),
            ));
        };
        if !matches!(
            only.kind,
            super::ProxyKind::Socks5 | super::ProxyKind::Socks5Hostname
        ) {
            return Err(Error::Usage(format!(
                "udp:// through a proxy needs SOCKS5 UDP ASSOCIATE; {only} cannot carry datagrams"
            )));
        }
        let hop = Hop {
            label: chain.label(0),
            hop: only,
        };
        let target = hop.target_for(target).await?;
        let mut control = reach_first(chain, only, socket).await?;
        let proxy_ip = control
            .peer_addr()
            .map_err(|e| hop.io_error(e, "after connecting"))?
            .ip();
        negotiate(&hop, &mut control).await?;
        // The address we send from is not known before the socket exists behind any
        // NAT, so the request leaves it unspecified, as RFC 1928 allows.
        let any = Target::Addr(SocketAddr::new(unspecified_like(proxy_ip), 0));
        let bound = request(&hop, &mut control, UDP_ASSOCIATE, &any)
            .await
            .map_err(|e| match e {
                Error::ProxyRefused { proxy, reason, .. } => Error::ProxyRefused {
                    proxy,
                    target: format!("udp://{target} (UDP ASSOCIATE)"),
                    reason,
                },
                other => other,
            })?;
        // A relay bound to the wildcard address is reached at the proxy's own address.
        let relay = if bound.ip().is_unspecified() {
            SocketAddr::new(proxy_ip, bound.port())
        } else {
            bound
        };
        let local = SocketAddr::new(unspecified_like(relay.ip()), 0);
        let udp = UdpSocket::bind(local)
            .await
            .map_err(|e| hop.io_error(e, "while opening the local UDP socket"))?;
        udp.connect(relay)
            .await
            .map_err(|e| hop.io_error(e, "while connecting to its UDP relay"))?;
        let mut header = vec![0, 0, 0];
        encode_address(&mut header, &target)?;
        tracing::debug!("{}: UDP relay at {relay} for {target}", hop.label);
        Ok(UdpAssociation {
            _control: control,
            socket: udp,
            header,
            relay,
            target,
        })
    }

    /// Sends one payload to the target through the relay.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn send(&self, payload: &[u8]) -> std::io::Result<usize> {
        let mut datagram = Vec::with_capacity(self.header.len() + payload.len());
        datagram.extend_from_slice(&self.header);
        datagram.extend_from_slice(payload);
        self.socket.send(&datagram).await?;
        Ok(payload.len())
    }

    /// Receives one datagram from the relay into `buf` and returns the payload's range
    /// in it; datagrams without a valid header are skipped.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn recv(&self, buf: &mut [u8]) -> std::io::Result<std::ops::Range<usize>> {
        loop {
            let len = self.socket.recv(buf).await?;
            match payload_start(&buf[..len]) {
                Some(start) => return Ok(start..len),
                None => tracing::debug!(
                    "dropped a datagram from the SOCKS5 relay {} without a valid header",
                    self.relay
                ),
            }
        }
    }

    /// [`UdpAssociation::recv`] without waiting: `WouldBlock` when nothing is queued.
    ///
    /// # Errors
    /// The socket's error, or `WouldBlock`.
    pub fn try_recv(&self, buf: &mut [u8]) -> std::io::Result<std::ops::Range<usize>> {
        loop {
            let len = self.socket.try_recv(buf)?;
            if let Some(start) = payload_start(&buf[..len]) {
                return Ok(start..len);
            }
        }
    }

    /// Waits until a datagram from the relay can be read. Cancel-safe.
    ///
    /// # Errors
    /// The socket's error.
    pub async fn readable(&self) -> std::io::Result<()> {
        self.socket.readable().await
    }

    /// The relay's address.
    pub fn relay(&self) -> SocketAddr {
        self.relay
    }

    /// Who the datagrams are for, as printed: the target's address, or the relay's when
    /// the proxy resolves the target's name (socks5h), which is then never looked up here.
    pub fn peer(&self) -> SocketAddr {
        match &self.target {
            Target::Addr(addr) => *addr,
            Target::Name(..) => self.relay,
        }
    }
}

/// The wildcard address of `ip`'s family.
fn unspecified_like(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// Where the payload of a relayed datagram starts, after RSV, FRAG and the sender's
/// address; `None` for a fragment or a header that does not parse.
fn payload_start(datagram: &[u8]) -> Option<usize> {
    let (&[0, 0, frag, atyp], _) = datagram.split_first_chunk::<4>()? else {
        return None;
    };
    if frag != 0 {
        return None;
    }
    let address_len = match atyp {
        ATYP_V4 => 4,
        ATYP_V6 => 16,
        ATYP_NAME => 1 + usize::from(*datagram.get(4)?),
        _ => return None,
    };
    let start = 4 + address_len + 2;
    (start <= datagram.len()).then_some(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_addresses_encode_as_rfc_1928() {
        let mut out = Vec::new();
        encode_address(&mut out, &Target::Name("ab".into(), 80)).unwrap();
        assert_eq!(out, [ATYP_NAME, 2, b'a', b'b', 0, 80]);
        out.clear();
        encode_address(&mut out, &Target::Addr("127.0.0.1:258".parse().unwrap())).unwrap();
        assert_eq!(out, [ATYP_V4, 127, 0, 0, 1, 1, 2]);
        let long = Target::Name("a".repeat(256), 1);
        assert!(encode_address(&mut out, &long).is_err());
    }

    #[test]
    fn relayed_datagrams_lose_their_header() {
        let datagram = [0, 0, 0, ATYP_V4, 127, 0, 0, 1, 0, 80, b'h', b'i'];
        assert_eq!(payload_start(&datagram), Some(10));
        let fragment = [0, 0, 1, ATYP_V4, 127, 0, 0, 1, 0, 80, b'h'];
        assert_eq!(payload_start(&fragment), None);
        assert_eq!(payload_start(&[0, 0, 0, ATYP_NAME]), None);
        assert_eq!(payload_start(&[0, 0, 0, 9, 1, 2]), None);
    }

    proptest::proptest! {
        #[test]
        fn any_relayed_datagram_is_split_or_dropped_without_panicking(datagram in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Some(start) = payload_start(&datagram) {
                proptest::prop_assert!(start <= datagram.len());
            }
        }
    }

    #[test]
    fn reply_codes_read_as_words() {
        assert_eq!(
            reply_words(5),
            "connection refused by the target (SOCKS5 reply 5)"
        );
        assert!(reply_words(42).contains("42"));
    }
}
