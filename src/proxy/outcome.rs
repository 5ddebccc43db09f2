//! How a proxied client's request comes out: refused before its tunnel opened (why, and
//! the code each protocol's reply gives for it), or served until it ended (how), with
//! the bytes it moved. Shared by [`super::tunnel`] (CONNECT) and [`super::udp`] (UDP
//! ASSOCIATE), below both.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::http::{HttpError, Status};
use super::rules::DestinationVerdict;
use super::socks::{Method, Reply, SocksError};

/// Why a destination was not reached.
#[derive(Debug)]
pub(crate) enum Unreachable {
    /// The name did not resolve.
    NoSuchHost(String),
    /// Nothing listens there.
    Refused,
    /// No route to the network.
    Network,
    /// No route to the host.
    Host,
    /// The connect (resolving included) took longer than the limit.
    TimedOut(Duration),
    /// Any other connect error.
    Other(io::Error),
}

impl Unreachable {
    /// Sorts a connect error.
    pub(super) fn of(e: io::Error) -> Unreachable {
        match e.kind() {
            io::ErrorKind::ConnectionRefused => Unreachable::Refused,
            io::ErrorKind::NetworkUnreachable => Unreachable::Network,
            io::ErrorKind::HostUnreachable => Unreachable::Host,
            _ => Unreachable::Other(e),
        }
    }
}

/// Why a client was refused before its tunnel opened; each has one reply (by the tunnel's
/// `Stage`) and one log line.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The first byte is neither 0x05, 0x04 nor a letter.
    UnknownProtocol(u8),
    /// A malformed SOCKS message.
    Socks(SocksError),
    /// A malformed or refused HTTP head.
    Http(HttpError),
    /// The client closed in the middle of its handshake.
    Truncated,
    /// The handshake took longer than the limit.
    Late(Duration),
    /// A command this proxy does not serve (BIND; UDP ASSOCIATE over SOCKS4).
    Unsupported(&'static str),
    /// A SOCKS5 greeting without the method the proxy needs (the methods offered).
    NoAcceptableMethod(Vec<u8>, Method),
    /// Credentials that are not in `--credentials`.
    BadPassword(String),
    /// No credentials where `--credentials` requires them.
    NoCredentials,
    /// `--allow-to` / `--deny-to` refuse the destination.
    Denied(String, DestinationVerdict),
    /// The destination could not be reached.
    Unreachable(String, Unreachable),
    /// The client's socket failed.
    Io(io::Error),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownProtocol(byte) => write!(
                f,
                "the first byte {byte:#04x} is not SOCKS5 (0x05), SOCKS4 (0x04) or an HTTP request{}",
                if *byte == 0x16 {
                    " (it looks like TLS)"
                } else {
                    ""
                }
            ),
            Refusal::Socks(e) => write!(f, "malformed SOCKS message: {e}"),
            Refusal::Http(e) => write!(f, "{e}"),
            Refusal::Truncated => f.write_str("the client closed in the middle of its handshake"),
            Refusal::Late(after) => write!(
                f,
                "no complete handshake within {}",
                humantime::format_duration(*after)
            ),
            Refusal::Unsupported(what) => write!(f, "{what} is not supported"),
            Refusal::NoAcceptableMethod(offered, needed) => {
                let offered: Vec<String> = offered.iter().map(|m| format!("{m:#04x}")).collect();
                let needed = match needed {
                    Method::UserPass => "username/password (0x02), as --credentials requires",
                    Method::NoAuth => "no authentication (0x00): no --credentials are set up",
                };
                write!(
                    f,
                    "no acceptable authentication method: the client offers {} and the proxy \
                     takes {needed}",
                    offered.join(", ")
                )
            }
            Refusal::BadPassword(user) => {
                write!(f, "wrong user name or password (user {user:?})")
            }
            Refusal::NoCredentials => {
                f.write_str("no credentials given, and --credentials requires them")
            }
            Refusal::Denied(destination, verdict) => {
                write!(f, "destination {destination} denied: {verdict}")
            }
            Refusal::Unreachable(destination, why) => match why {
                Unreachable::NoSuchHost(reason) => {
                    write!(f, "destination {destination} does not resolve: {reason}")
                }
                Unreachable::Refused => {
                    write!(f, "destination {destination} refused the connection")
                }
                Unreachable::Network => write!(f, "destination {destination}: network unreachable"),
                Unreachable::Host => write!(f, "destination {destination}: no route to host"),
                Unreachable::TimedOut(after) => write!(
                    f,
                    "destination {destination} did not answer within {}",
                    humantime::format_duration(*after)
                ),
                Unreachable::Other(e) => {
                    write!(f, "cannot connect to destination {destination}: {e}")
                }
            },
            Refusal::Io(e) => write!(f, "the client's connection failed: {e}"),
        }
    }
}

impl Refusal {
    /// The SOCKS5 reply code.
    pub(super) fn socks5_reply(&self) -> Reply {
        match self {
            Refusal::Socks(e) => e.reply(),
            Refusal::Unsupported(_) => Reply::CommandNotSupported,
            Refusal::Denied(..) => Reply::NotAllowed,
            Refusal::Unreachable(_, why) => match why {
                Unreachable::NoSuchHost(_) | Unreachable::Host => Reply::HostUnreachable,
                Unreachable::Refused => Reply::ConnectionRefused,
                Unreachable::Network => Reply::NetworkUnreachable,
                Unreachable::TimedOut(_) => Reply::TtlExpired,
                Unreachable::Other(_) => Reply::GeneralFailure,
            },
            _ => Reply::GeneralFailure,
        }
    }

    /// The HTTP status.
    pub(super) fn http_status(&self) -> Status {
        match self {
            Refusal::Http(e) => e.status(),
            Refusal::Late(_) => Status::RequestTimeout,
            Refusal::BadPassword(_) | Refusal::NoCredentials => Status::AuthRequired,
            Refusal::Denied(..) => Status::Forbidden,
            Refusal::Unreachable(_, Unreachable::TimedOut(_)) => Status::GatewayTimeout,
            Refusal::Unreachable(..) => Status::BadGateway,
            _ => Status::BadRequest,
        }
    }

    /// Counts the refusal in its counter.
    pub(super) fn count(&self, stats: &super::ProxyStats) {
        let counter = match self {
            Refusal::NoAcceptableMethod(..) | Refusal::BadPassword(_) | Refusal::NoCredentials => {
                &stats.auth_failed
            }
            Refusal::Denied(..) => &stats.destinations_denied,
            Refusal::Unreachable(..) => &stats.unreachable,
            Refusal::Io(_) => &stats.errors,
            _ => &stats.malformed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// How a served client ended.
pub(crate) enum End {
    /// Both sides finished their data.
    Closed,
    /// No traffic for the idle timeout.
    Idle(Duration),
    /// The grace period after shutdown ran out.
    Shutdown,
    /// Refused before its tunnel opened.
    Refused(Refusal),
    /// A read or write failed mid-tunnel.
    Failed(io::Error),
}

impl End {
    /// In a few words, for the `closed` event.
    pub(super) fn reason(&self) -> String {
        match self {
            End::Closed => "closed by both sides".into(),
            End::Idle(d) => format!("idle for {}", humantime::format_duration(*d)),
            End::Shutdown => "proxy shutting down".into(),
            End::Refused(refusal) => refusal.to_string(),
            End::Failed(e) => format!("tunnel failed: {e}"),
        }
    }
}

/// One client's bytes delivered each way, for its `closed` event.
#[derive(Default)]
pub(crate) struct Delivered {
    /// Client → destination.
    pub to_target: AtomicU64,
    /// Destination → client.
    pub to_client: AtomicU64,
}
