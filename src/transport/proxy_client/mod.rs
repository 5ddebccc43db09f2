//! The client side of SOCKS and HTTP CONNECT proxies (`--proxy`): reaching a target
//! through one proxy or a chain of them.
//!
//! A [`ProxyChain`] is the list of hops in the order the user gave them. [`open_tunnel`]
//! connects TCP to the first hop, then asks each hop in turn to connect to the next one
//! and the last hop to connect to the target; what comes back is the TCP connection to
//! the first proxy, now carrying the target's bytes. TLS for a `tls://` target runs on
//! top of it, end to end, checked against the target's name ([`super::stream`]).
//!
//! The wire code lives per protocol: [`socks5`] (CONNECT and UDP ASSOCIATE), [`socks4`]
//! (SOCKS4 and 4a) and [`http`] (CONNECT with Basic auth). Each failure names the hop
//! and the reason ([`Error::ProxyUnreachable`], [`Error::ProxyAuth`],
//! [`Error::ProxyRefused`], [`Error::ProxyProtocol`]).
//!
//! This is not [`super::proxy`], which reads the HAProxy PROXY protocol header on the
//! server side.

mod http;
mod socks4;
mod socks5;

pub use socks5::UdpAssociation;

use std::fmt;
use std::net::SocketAddr;

use tokio::net::TcpStream;

use super::dial::connect_tcp;
use super::sockopt::SocketOptions;
use crate::endpoint::{Endpoint, Host, HostPort};
use crate::error::{Error, Result};

/// The environment variable that holds `USER:PASSWORD` for every hop whose URL names no
/// credentials, so the password stays out of `ps`.
pub const AUTH_ENV: &str = "SOCKIT_PROXY_AUTH";

/// Where credentials come from, for messages about missing ones.
const CREDENTIALS_HINT: &str =
    "give USER:PASSWORD in the URL, in SOCKIT_PROXY_AUTH or in --proxy-auth-file";

/// The protocol a proxy hop speaks, from its URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `socks5://`: SOCKS5, the target's name resolved here, its address sent.
    Socks5,
    /// `socks5h://`: SOCKS5, the target's name sent for the proxy to resolve.
    Socks5Hostname,
    /// `socks4://`: SOCKS4, IPv4 targets only, resolved here.
    Socks4,
    /// `socks4a://`: SOCKS4 with the name sent for the proxy to resolve.
    Socks4a,
    /// `http://`: an HTTP proxy's CONNECT method, with Basic auth when credentials are given.
    HttpConnect,
}

impl ProxyKind {
    /// The scheme as the user writes it.
    pub fn scheme(self) -> &'static str {
        match self {
            ProxyKind::Socks5 => "socks5",
            ProxyKind::Socks5Hostname => "socks5h",
            ProxyKind::Socks4 => "socks4",
            ProxyKind::Socks4a => "socks4a",
            ProxyKind::HttpConnect => "http",
        }
    }

    /// The kind of proxy in messages, with its article ("an HTTP proxy").
    fn described(self) -> &'static str {
        match self {
            ProxyKind::Socks5 | ProxyKind::Socks5Hostname => "a SOCKS5 proxy",
            ProxyKind::Socks4 | ProxyKind::Socks4a => "a SOCKS4 proxy",
            ProxyKind::HttpConnect => "an HTTP proxy",
        }
    }

    /// The port when the URL gives none: 1080 for SOCKS, 3128 for HTTP (as ncat).
    fn default_port(self) -> u16 {
        match self {
            ProxyKind::HttpConnect => 3128,
            _ => 1080,
        }
    }

    /// Whether the target's name is sent as it is, for the proxy to resolve.
    fn sends_names(self) -> bool {
        matches!(
            self,
            ProxyKind::Socks5Hostname | ProxyKind::Socks4a | ProxyKind::HttpConnect
        )
    }

    /// The scheme for a URL, if it is one of ours.
    fn from_scheme(scheme: &str) -> Option<ProxyKind> {
        Some(match scheme.to_ascii_lowercase().as_str() {
            "socks5" => ProxyKind::Socks5,
            "socks5h" => ProxyKind::Socks5Hostname,
            "socks4" => ProxyKind::Socks4,
            "socks4a" => ProxyKind::Socks4a,
            "http" => ProxyKind::HttpConnect,
            _ => return None,
        })
    }
}

/// A user name and password for a proxy. `Debug` hides the password, so logs and
/// error dumps never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name (SOCKS4's user id).
    pub user: String,
    /// The password (unused by SOCKS4).
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

impl Credentials {
    /// Parses `USER:PASSWORD` as held by [`AUTH_ENV`] or a `--proxy-auth-file` (the first
    /// line; the password may contain `:`).
    ///
    /// # Errors
    /// [`Error::Usage`] naming `source` when there is no `:`.
    pub fn parse(text: &str, source: &str) -> Result<Credentials> {
        let line = text.lines().next().unwrap_or("").trim_end_matches('\r');
        let Some((user, password)) = line.split_once(':') else {
            return Err(Error::Usage(format!(
                "{source} must hold USER:PASSWORD on its first line"
            )));
        };
        Ok(Credentials {
            user: user.to_string(),
            password: password.to_string(),
        })
    }
}

/// One proxy of a chain: how to speak to it, where it is, and who we are to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyHop {
    /// The protocol.
    pub kind: ProxyKind,
    /// Where the proxy listens.
    pub addr: HostPort,
    /// Credentials from the URL, the auth file or the environment.
    pub credentials: Option<Credentials>,
}

impl ProxyHop {
    /// Parses `SCHEME://[USER[:PASSWORD]@]HOST[:PORT]` (user and password percent-encoded
    /// where they hold `:`, `@` or `%`).
    ///
    /// # Errors
    /// [`Error::Usage`] saying what is wrong and which forms are accepted.
    pub fn parse(text: &str) -> Result<ProxyHop> {
        let fail = |reason: &str| {
            Error::Usage(format!(
                "invalid --proxy {:?}: {reason} (accepted: socks5://, socks5h://, socks4://, socks4a://, http:// followed by [USER:PASSWORD@]HOST[:PORT])",
                redacted(text)
            ))
        };
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| fail("it has no scheme"))?;
        let kind = ProxyKind::from_scheme(scheme).ok_or_else(|| fail("unknown proxy scheme"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (userinfo, host_port) = match rest.rsplit_once('@') {
            Some((userinfo, host_port)) => (Some(userinfo), host_port),
            None => (None, rest),
        };
        if host_port.contains('/') {
            return Err(fail("a proxy URL has no path"));
        }
        let credentials = userinfo
            .map(|userinfo| {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                Ok::<_, Error>(Credentials {
                    user: percent_decode(user).ok_or_else(|| fail("bad %-escape in the user"))?,
                    password: percent_decode(password)
                        .ok_or_else(|| fail("bad %-escape in the password"))?,
                })
            })
            .transpose()?;
        let addr =
            parse_proxy_address(host_port, kind.default_port()).map_err(|reason| fail(&reason))?;
        Ok(ProxyHop {
            kind,
            addr,
            credentials,
        })
    }
}

impl fmt::Display for ProxyHop {
    /// The URL without credentials, as messages name the hop.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.kind.scheme(), self.addr)
    }
}

/// The proxies to go through, first to last; empty means a direct connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyChain {
    hops: Vec<ProxyHop>,
}

impl ProxyChain {
    /// A chain of these hops, used in order.
    pub fn new(hops: Vec<ProxyHop>) -> ProxyChain {
        ProxyChain { hops }
    }

    /// No proxy: connect directly.
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// The hops, first to last.
    pub fn hops(&self) -> &[ProxyHop] {
        &self.hops
    }

    /// How a message names hop `index`: its URL, with its place when there are several.
    fn label(&self, index: usize) -> String {
        let hop = &self.hops[index];
        if self.hops.len() == 1 {
            format!("proxy {hop}")
        } else {
            format!("proxy {} of {} ({hop})", index + 1, self.hops.len())
        }
    }
}

impl fmt::Display for ProxyChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, hop) in self.hops.iter().enumerate() {
            if i > 0 {
                f.write_str(" then ")?;
            }
            write!(f, "{hop}")?;
        }
        Ok(())
    }
}

/// Opens a TCP connection to `target` through every hop of `chain`, in order.
///
/// `socket` (source address, socket options) applies to the connection to the first
/// proxy, the only socket this machine opens. The caller bounds the time.
///
/// # Errors
/// [`Error::ProxyUnreachable`] when the first proxy cannot be reached,
/// [`Error::ProxyAuth`], [`Error::ProxyRefused`] or [`Error::ProxyProtocol`] naming the
/// hop that failed, [`Error::HostNotFound`] when a name this machine resolves does not.
pub async fn open_tunnel(
    chain: &ProxyChain,
    target: &HostPort,
    socket: &SocketOptions,
) -> Result<TcpStream> {
    let Some(first) = chain.hops.first() else {
        return Err(Error::Usage("no proxy to connect through".into()));
    };
    let mut stream = reach_first(chain, first, socket).await?;
    for (index, hop) in chain.hops.iter().enumerate() {
        let next = chain.hops.get(index + 1).map_or(target, |next| &next.addr);
        let here = Hop {
            label: chain.label(index),
            hop,
        };
        tracing::debug!("{}: asking for a tunnel to {next}", here.label);
        here.connect(&mut stream, next).await?;
    }
    Ok(stream)
}

/// Connects TCP to the first proxy, naming it when that fails.
pub(super) async fn reach_first(
    chain: &ProxyChain,
    first: &ProxyHop,
    socket: &SocketOptions,
) -> Result<TcpStream> {
    let endpoint = Endpoint::Tcp(first.addr.clone());
    connect_tcp(&endpoint, &first.addr, socket)
        .await
        .map_err(|e| unreachable(chain.label(0), e))
}

/// The error for a first proxy that cannot be reached, from the connect error.
fn unreachable(proxy: String, cause: Error) -> Error {
    let reason = match cause {
        Error::Refused { .. } => {
            "connection refused: nothing listens there; check the proxy's address and that it runs"
                .to_string()
        }
        Error::Connect { source, .. } => source.to_string(),
        Error::HostNotFound { host, reason } => {
            format!("could not resolve {host:?}: {reason}")
        }
        // A local-side failure (--source, --bind-device) is the user's to fix, not the proxy's.
        other @ Error::LocalSocket { .. } => return other,
        other => other.to_string(),
    };
    Error::ProxyUnreachable { proxy, reason }
}

/// One hop while it is being asked for a tunnel: the hop and how messages name it.
struct Hop<'a> {
    /// "proxy socks5://…" or "proxy 2 of 3 (socks5://…)".
    label: String,
    /// The hop.
    hop: &'a ProxyHop,
}

impl Hop<'_> {
    /// Asks this hop, over `stream`, for a connection to `next`.
    async fn connect(&self, stream: &mut TcpStream, next: &HostPort) -> Result<()> {
        let next = self.target_for(next).await?;
        match self.hop.kind {
            ProxyKind::Socks5 | ProxyKind::Socks5Hostname => {
                socks5::connect(self, stream, &next).await.map(drop)
            }
            ProxyKind::Socks4 | ProxyKind::Socks4a => socks4::connect(self, stream, &next).await,
            ProxyKind::HttpConnect => http::connect(self, stream, &next).await,
        }
    }

    /// The address to put in the request: the name as it is when the proxy resolves
    /// names, else the first address it resolves to here.
    async fn target_for(&self, next: &HostPort) -> Result<Target> {
        match &next.host {
            Host::Name(name) if self.hop.kind.sends_names() => {
                Ok(Target::Name(name.clone(), next.port))
            }
            Host::Ip(ip) => Ok(Target::Addr(SocketAddr::new(*ip, next.port))),
            _ => {
                let addrs = next.resolve().await?;
                let chosen = match self.hop.kind {
                    ProxyKind::Socks4 => addrs.iter().find(|a| a.is_ipv4()).copied(),
                    _ => addrs.first().copied(),
                };
                chosen.map(Target::Addr).ok_or_else(|| Error::HostNotFound {
                    host: next.host.to_string(),
                    reason: "no IPv4 address, and socks4:// carries only IPv4; use socks4a:// or socks5h:// to let the proxy resolve it".into(),
                })
            }
        }
    }

    /// The error for credentials the hop did not accept or needs.
    fn auth_error(&self, reason: impl Into<String>) -> Error {
        Error::ProxyAuth {
            proxy: self.label.clone(),
            reason: reason.into(),
        }
    }

    /// The error for a target the hop would not or could not connect to.
    fn refused(&self, target: &Target, reason: impl Into<String>) -> Error {
        Error::ProxyRefused {
            proxy: self.label.clone(),
            target: target.to_string(),
            reason: reason.into(),
        }
    }

    /// The error for a reply that is not the protocol the URL's scheme names.
    fn protocol_error(&self, reason: impl Into<String>) -> Error {
        Error::ProxyProtocol {
            proxy: self.label.clone(),
            reason: reason.into(),
        }
    }

    /// The error for a failed read or write on the way to this hop.
    fn io_error(&self, source: std::io::Error, doing: &str) -> Error {
        match source.kind() {
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => self.protocol_error(format!(
                "it closed the connection {doing}; is it {}?",
                self.hop.kind.described()
            )),
            _ => self.protocol_error(format!("{doing}: {source}")),
        }
    }
}

/// What a hop is asked to connect to: a resolved address, or a name it resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// An address.
    Addr(SocketAddr),
    /// A host name and a port.
    Name(String, u16),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Addr(addr) => write!(f, "{addr}"),
            Target::Name(name, port) => write!(f, "{name}:{port}"),
        }
    }
}

/// `HOST[:PORT]` of a proxy URL, with the scheme's port when none is given.
fn parse_proxy_address(text: &str, default_port: u16) -> std::result::Result<HostPort, String> {
    if text.is_empty() {
        return Err("it names no host".into());
    }
    let colons = text.matches(':').count();
    let full = if text.starts_with('[') {
        if text.contains("]:") {
            format!("tcp://{text}")
        } else {
            format!("tcp://{text}:{default_port}")
        }
    } else {
        match colons {
            0 => format!("tcp://{text}:{default_port}"),
            1 => format!("tcp://{text}"),
            // A bare IPv6 literal: no port.
            _ => format!("tcp://[{text}]:{default_port}"),
        }
    };
    match Endpoint::parse_target(&full) {
        Ok(Endpoint::Tcp(hp)) => Ok(hp),
        Ok(_) => Err("it is not a host and port".into()),
        Err(e) => Err(e.reason),
    }
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL with any password replaced, for messages.
fn redacted(text: &str) -> String {
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}")
        }
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme_with_its_default_port() {
        let hop = ProxyHop::parse("socks5h://proxy.example").unwrap();
        assert_eq!(hop.kind, ProxyKind::Socks5Hostname);
        assert_eq!(hop.addr.port, 1080);
        let hop = ProxyHop::parse("http://127.0.0.1").unwrap();
        assert_eq!(hop.to_string(), "http://127.0.0.1:3128");
        let hop = ProxyHop::parse("socks4a://[::1]:9050").unwrap();
        assert_eq!(hop.addr.port, 9050);
        assert_eq!(hop.kind, ProxyKind::Socks4a);
    }

    #[test]
    fn credentials_are_percent_decoded_and_hidden() {
        let hop = ProxyHop::parse("socks5://al%40ice:p%3Ass@127.0.0.1:1080").unwrap();
        let creds = hop.credentials.clone().unwrap();
        assert_eq!(creds.user, "al@ice");
        assert_eq!(creds.password, "p:ss");
        assert!(!format!("{hop:?}").contains("p:ss"));
        assert!(!hop.to_string().contains("ice"));
    }

    #[test]
    fn bad_urls_say_why_without_the_password() {
        let err = ProxyHop::parse("ftp://u:secret@host:1")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown proxy scheme"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = ProxyHop::parse("127.0.0.1:1080").unwrap_err().to_string();
        assert!(err.contains("no scheme"), "{err}");
        let err = ProxyHop::parse("socks5://host:99999")
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid --proxy"), "{err}");
    }

    #[test]
    fn auth_text_splits_at_the_first_colon() {
        let creds = Credentials::parse("bob:a:b\nignored", "x").unwrap();
        assert_eq!(
            (creds.user.as_str(), creds.password.as_str()),
            ("bob", "a:b")
        );
        assert!(Credentials::parse("nocolon", "SOCKIT_PROXY_AUTH").is_err());
    }
}
