//! The crate's error type: every failure a user can cause or meet, each with a one-line
//! message that says what happened and what to do, and a documented exit code.
//!
//! Per-connection failures on a server (a reset, a timeout) use the same type but never reach
//! `main`: the server logs them and keeps serving. Only the failure of the whole command
//! (cannot listen, cannot connect) becomes the process exit code.

use std::fmt;
use std::io;
use std::time::Duration;

use crate::endpoint::{ACCEPTED_FORMS, Endpoint, EndpointError};

/// The crate-wide result alias.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Process exit codes, one per class of failure, so scripts can tell them apart.
///
/// They are listed in the README and checked by the integration tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitStatus {
    /// Everything worked.
    Success = 0,
    /// A failure during an exchange: reset, closed early, unexpected I/O error.
    Failure = 1,
    /// Bad command line: unknown flag, malformed endpoint or value.
    Usage = 2,
    /// A host name did not resolve.
    HostNotFound = 3,
    /// Nothing listens at the address (connection refused).
    Refused = 4,
    /// An operation did not finish within its time limit.
    Timeout = 5,
    /// The server could not listen (address in use, permission denied, not a socket), or
    /// a client's local side could not be set up (`--source` in use or not this host's,
    /// `--bind-device`, `--mark` refused).
    CannotListen = 6,
    /// A TLS handshake or certificate check failed.
    Tls = 7,
    /// `--proxy`: the first proxy could not be reached (refused, unreachable, no such host).
    ProxyUnreachable = 8,
    /// `--proxy`: a proxy refused the credentials, or requires some and none were given.
    ProxyAuth = 9,
    /// `--proxy`: a proxy refused to connect to the next hop or the target (its reply code
    /// in words).
    ProxyRefused = 10,
}

/// Everything that can go wrong, with enough context for a message that needs no other line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The endpoint string does not parse.
    #[error("{0} (accepted forms: {ACCEPTED_FORMS})")]
    Endpoint(#[from] EndpointError),

    /// A command-line value is invalid or options conflict.
    #[error("{0}")]
    Usage(String),

    /// A host name did not resolve to any address.
    #[error("could not resolve host {host:?}: {reason}; check the spelling or use an IP address")]
    HostNotFound {
        /// The name the user gave.
        host: String,
        /// What the resolver said.
        reason: String,
    },

    /// Another socket already listens on this address.
    #[error("address {endpoint} is already in use; {hint}")]
    AddrInUse {
        /// Where we tried to listen.
        endpoint: Endpoint,
        /// What to do instead (another port, or stop the other server).
        hint: String,
    },

    /// The OS refused to let us listen or connect at this address.
    #[error("permission denied for {endpoint}: {hint}")]
    PermissionDenied {
        /// The address concerned.
        endpoint: Endpoint,
        /// Why that is usually so and what to do.
        hint: String,
    },

    /// A Unix socket path exists and is not a socket: we never delete such a file.
    #[error(
        "{path} exists and is not a socket; refusing to replace it. Remove it yourself or choose another path"
    )]
    NotASocket {
        /// The offending path.
        path: String,
    },

    /// Listening failed for another reason.
    #[error("cannot listen on {endpoint}: {source}")]
    Listen {
        /// Where we tried to listen.
        endpoint: Endpoint,
        /// The OS error.
        source: io::Error,
    },

    /// Nothing listens at the address.
    #[error(
        "connection refused by {endpoint}: nothing is listening there; start a server with `sockit serve {endpoint}`"
    )]
    Refused {
        /// Where we tried to connect.
        endpoint: Endpoint,
    },

    /// Connecting failed for another reason (unreachable network, no such socket file…).
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// Where we tried to connect.
        endpoint: Endpoint,
        /// The OS error.
        source: io::Error,
    },

    /// A client did not finish a step within the server's own fixed limit (the TLS
    /// handshake): no flag changes it, so the message names none.
    #[error("timed out after {} while {doing}; the server allows every client that long", humantime::format_duration(*after))]
    ClientTimeout {
        /// What the server was waiting for, as a phrase.
        doing: String,
        /// The server's limit.
        after: Duration,
    },

    /// An operation ran past its deadline.
    #[error("timed out after {} while {doing}; raise --timeout if the peer is slow", humantime::format_duration(*after))]
    Timeout {
        /// What we were waiting for, as a phrase ("waiting for the reply from …").
        doing: String,
        /// The limit that was hit.
        after: Duration,
    },

    /// The peer closed the connection before the exchange was complete.
    #[error("{peer} closed the connection {during}")]
    ClosedEarly {
        /// Who closed.
        peer: String,
        /// What we were doing, as a phrase ("before replying to message 2 of 3").
        during: String,
    },

    /// The peer answered, but not with the reply a benchmark's matcher expects
    /// (`--reply-regex`, `--reply-until`).
    #[error("{peer} sent an unexpected reply: {reason}")]
    ReplyMismatch {
        /// Who replied.
        peer: String,
        /// What was wrong with the reply.
        reason: String,
    },

    /// The peer reset the connection.
    #[error("connection reset by {peer} {during}")]
    Reset {
        /// Who reset.
        peer: String,
        /// What we were doing.
        during: String,
    },

    /// A datagram is larger than the transport can carry.
    #[error("message of {size} bytes is too large for one datagram (at most {max}); send less")]
    DatagramTooLarge {
        /// The size attempted.
        size: usize,
        /// The limit.
        max: usize,
    },

    /// A line exceeded the configured maximum before its newline arrived.
    #[error("a line from {peer} exceeded {max} bytes without a newline; raise --max-line")]
    LineTooLong {
        /// Who sent it.
        peer: String,
        /// The configured limit.
        max: usize,
    },

    /// A TLS handshake or certificate check failed.
    #[error("TLS with {peer} failed: {reason}")]
    Tls {
        /// Who we were talking to.
        peer: String,
        /// The cause in words (expired, wrong name, unknown issuer…).
        reason: String,
    },

    /// TLS could not be set up: a certificate, key or CA file is unusable, or there are no
    /// trusted roots. Checked at start, before any connection.
    #[error("cannot use {what}: {reason}")]
    TlsSetup {
        /// The flag and file, or the thing concerned ("--cert cert.pem").
        what: String,
        /// What is wrong and what to do.
        reason: String,
    },

    /// `--proxy-protocol`: no complete header arrived in time (a timeout, with a hint
    /// that fits: the header has no option of its own, and a client that makes it wait is
    /// not a load balancer).
    #[error(
        "no complete PROXY protocol header from {peer} within {}; with --proxy-protocol every connection must come through a load balancer that sends one at once (HAProxy send-proxy, nginx proxy_protocol on)",
        humantime::format_duration(*after)
    )]
    ProxyHeaderLate {
        /// The socket peer.
        peer: String,
        /// The time allowed.
        after: Duration,
    },

    /// `--proxy-protocol`: a connection did not start with a valid PROXY protocol header.
    #[error(
        "bad PROXY protocol header from {peer}: {reason}; with --proxy-protocol every connection must come through a load balancer that sends one (HAProxy send-proxy, nginx proxy_protocol on)"
    )]
    ProxyHeader {
        /// The socket peer (the load balancer, or whoever connected directly).
        peer: String,
        /// What was wrong, in words.
        reason: String,
    },

    /// `--proxy`: the first proxy of the chain cannot be reached.
    #[error("cannot reach {proxy}: {reason}")]
    ProxyUnreachable {
        /// The hop, as "proxy socks5://HOST:PORT" (with its place in a chain).
        proxy: String,
        /// Why, and what to check.
        reason: String,
    },

    /// `--proxy`: a proxy did not accept our credentials, or wants some.
    #[error("{proxy} refused authentication: {reason}")]
    ProxyAuth {
        /// The hop.
        proxy: String,
        /// What it said, and where credentials come from.
        reason: String,
    },

    /// `--proxy`: a proxy would not or could not connect to the next hop or the target.
    #[error("{proxy} could not connect to {target}: {reason}")]
    ProxyRefused {
        /// The hop.
        proxy: String,
        /// What it was asked to connect to.
        target: String,
        /// Its reply code in words.
        reason: String,
    },

    /// `--proxy`: a proxy answered with something its scheme does not allow (a wrong
    /// scheme in the URL, or not a proxy at all).
    #[error("{proxy} broke the protocol: {reason}")]
    ProxyProtocol {
        /// The hop.
        proxy: String,
        /// What was wrong, in words.
        reason: String,
    },

    /// `--systemd`: the socket systemd should have passed is missing or unusable.
    #[error("cannot use the socket from systemd: {reason}")]
    Activation {
        /// What is wrong and what to do.
        reason: String,
    },

    /// `probe` found no open port: the `nc -z` "failure" exit, with the count.
    #[error("no open port on {host} among {probed} probed")]
    NoneOpen {
        /// The host probed.
        host: String,
        /// How many ports were tried.
        probed: usize,
    },

    /// A benchmark completed no exchange in its measured span and met no error either:
    /// every request was still waiting when it ended.
    #[error("no exchange completed in the measured {measured}; {hint}")]
    NothingMeasured {
        /// The measured span, in words ("10s").
        measured: String,
        /// What to try.
        hint: String,
    },

    /// A benchmark was stopped (Ctrl-C) before its warm-up ended, so nothing was measured.
    #[error(
        "interrupted before measuring began (warm-up {warmup}): nothing was measured; let \
         the warm-up end before stopping the run, or shorten it with --warmup"
    )]
    InterruptedInWarmup {
        /// The warm-up, in words ("1s").
        warmup: String,
    },

    /// A benchmark report file cannot be read or used (`sockit bench merge`).
    #[error("{path}: {reason}")]
    BenchReport {
        /// The file.
        path: String,
        /// What is wrong with it, and what to do.
        reason: String,
    },

    /// Any other I/O failure, with what we were doing.
    #[error("{doing}: {source}")]
    Io {
        /// What we were doing, as a phrase.
        doing: String,
        /// The OS error.
        source: io::Error,
    },

    /// A socket option or source address (`--source`, `--bind-device`, `--mark`, …) was
    /// refused by the kernel; checked before anything is sent.
    #[error("cannot use {flag}: {reason}")]
    LocalSocket {
        /// The flag and its value, as typed.
        flag: String,
        /// Why, and what to do.
        reason: String,
    },

    /// `--retry`: every attempt failed; the last failure, and how many were made.
    #[error("{last} (gave up after {attempts} attempts)")]
    GaveUp {
        /// The last attempt's failure.
        last: Box<Error>,
        /// Attempts made in all.
        attempts: u64,
    },

    /// `listen`: the conversation ended before everything was delivered; the counts say
    /// how far it got, so a user knows what the output file holds.
    #[error(
        "{reason}; {received} bytes received (all written to stdout), {sent} bytes of stdin sent"
    )]
    Undelivered {
        /// What ended it, in words.
        reason: String,
        /// Bytes received from the client(s) and written to stdout.
        received: u64,
        /// Bytes of stdin sent to the client(s).
        sent: u64,
        /// The exit code of the cause (1 for a reset, 5 for an idle timeout, …).
        status: ExitStatus,
    },
}

impl Error {
    /// The exit code `main` returns for this failure.
    pub fn exit_status(&self) -> ExitStatus {
        match self {
            Error::Endpoint(_) | Error::Usage(_) | Error::BenchReport { .. } => ExitStatus::Usage,
            Error::HostNotFound { .. } => ExitStatus::HostNotFound,
            Error::Refused { .. } => ExitStatus::Refused,
            Error::Timeout { .. } | Error::ClientTimeout { .. } | Error::ProxyHeaderLate { .. } => {
                ExitStatus::Timeout
            }
            Error::AddrInUse { .. }
            | Error::PermissionDenied { .. }
            | Error::NotASocket { .. }
            | Error::Listen { .. }
            | Error::Activation { .. }
            | Error::LocalSocket { .. } => ExitStatus::CannotListen,
            Error::Tls { .. } | Error::TlsSetup { .. } => ExitStatus::Tls,
            Error::ProxyUnreachable { .. } => ExitStatus::ProxyUnreachable,
            Error::ProxyAuth { .. } => ExitStatus::ProxyAuth,
            Error::ProxyRefused { .. } => ExitStatus::ProxyRefused,
            Error::Connect { .. }
            | Error::ClosedEarly { .. }
            | Error::ReplyMismatch { .. }
            | Error::Reset { .. }
            | Error::DatagramTooLarge { .. }
            | Error::LineTooLong { .. }
            | Error::ProxyHeader { .. }
            | Error::ProxyProtocol { .. }
            | Error::NoneOpen { .. }
            | Error::NothingMeasured { .. }
            | Error::InterruptedInWarmup { .. }
            | Error::Io { .. } => ExitStatus::Failure,
            Error::Undelivered { status, .. } => *status,
            Error::GaveUp { last, .. } => last.exit_status(),
        }
    }

    /// Wraps an I/O error met while talking to `peer`, naming resets and early closes as such.
    pub fn exchange(
        source: io::Error,
        peer: impl Into<String>,
        during: impl Into<String>,
    ) -> Error {
        let peer = peer.into();
        let during = during.into();
        if let Some(reason) = explain_after_handshake(&source) {
            return Error::Tls { peer, reason };
        }
        match source.kind() {
            io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                Error::Reset { peer, during }
            }
            io::ErrorKind::BrokenPipe | io::ErrorKind::UnexpectedEof => {
                Error::ClosedEarly { peer, during }
            }
            _ => Error::Io {
                doing: format!("talking to {peer} {during}"),
                source,
            },
        }
    }
}

// TLS failures in words. They live here, below the transport, because a TLS 1.3
// server's verdict on a client certificate reaches the client as a read error after the
// handshake, which [`Error::exchange`] words.

/// The alerts a server sends about the client's certificate, in words; `None` for the
/// others. They are the same whether they end the handshake (TLS 1.2) or arrive at the
/// first read after it (TLS 1.3, where the server checks the client's certificate after
/// the client has finished).
pub(crate) fn explain_server_alert(alert: rustls::AlertDescription) -> Option<String> {
    use rustls::AlertDescription as A;
    match alert {
        A::CertificateRequired => {
            Some("the server requires a client certificate; give --cert and --key".into())
        }
        // TLS 1.2 servers (OpenSSL's among them) answer a missing client certificate
        // with this generic alert.
        A::HandshakeFailure => Some(
            "the server refused the handshake (handshake_failure alert): no TLS version or cipher in common, or it requires a client certificate (give --cert and --key)".into(),
        ),
        A::UnsupportedCertificate => Some(
            "the server cannot use our client certificate (unsupported_certificate alert); a client certificate must list clientAuth in its extended key usage, or have no extended key usage".into(),
        ),
        A::CertificateExpired => Some(
            "the server says our client certificate has expired (certificate_expired alert); give --cert with a current one".into(),
        ),
        A::UnknownCA
        | A::BadCertificate
        | A::CertificateRevoked
        | A::CertificateUnknown
        | A::AccessDenied => Some(format!(
            "the server rejected our client certificate ({}); give --cert with a certificate issued by a CA the server trusts",
            alert_words(alert)
        )),
        _ => None,
    }
}

/// A TLS failure after the handshake (an I/O error rustls raised while reading or
/// writing) in words, when it is one: typically a TLS 1.3 server refusing the client's
/// certificate, which the client learns at its first read. `None` for other errors.
pub(crate) fn explain_after_handshake(e: &io::Error) -> Option<String> {
    let tls = e.get_ref()?.downcast_ref::<rustls::Error>()?;
    Some(match tls {
        rustls::Error::AlertReceived(alert) => explain_server_alert(*alert)
            .unwrap_or_else(|| format!("the peer ended the TLS session ({})", alert_words(*alert))),
        other => format!("the TLS session failed ({})", debug_words(other)),
    })
}

/// The variant name of a `Debug` value as lowercase words (`CaUsedAsEndEntity` → "ca
/// used as end entity"), for the rare errors without a sentence of their own: never
/// Rust's `Debug` syntax in front of a user.
pub(crate) fn debug_words(value: &impl fmt::Debug) -> String {
    let debug = format!("{value:?}");
    let name = debug.split(['(', '{', ' ']).next().unwrap_or_default();
    let mut words = String::new();
    let mut previous_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            words.push(' ');
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        words.push(c.to_ascii_lowercase());
    }
    words
}

/// A TLS alert, as its lowercase protocol name (`bad_certificate`, `unknown_ca`).
pub(crate) fn alert_words(alert: rustls::AlertDescription) -> String {
    let debug = format!("{alert:?}");
    let mut words = String::new();
    let mut previous_lower = false;
    for c in debug.chars() {
        if c.is_ascii_uppercase() && previous_lower {
            words.push('_');
        }
        previous_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        words.push(c.to_ascii_lowercase());
    }
    format!("{words} alert")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_class_of_failure() {
        let endpoint = Endpoint::seed_tcp();
        assert_eq!(
            Error::Refused {
                endpoint: endpoint.clone()
            }
            .exit_status() as u8,
            4
        );
        assert_eq!(
            Error::AddrInUse {
                endpoint,
                hint: String::new()
            }
            .exit_status() as u8,
            6
        );
        assert_eq!(Error::Usage("x".into()).exit_status() as u8, 2);
    }

    #[test]
    fn exchange_errors_name_resets_and_closes() {
        let reset = Error::exchange(io::ErrorKind::ConnectionReset.into(), "p", "while reading");
        assert!(matches!(reset, Error::Reset { .. }));
        let closed = Error::exchange(io::ErrorKind::BrokenPipe.into(), "p", "while writing");
        assert_eq!(closed.to_string(), "p closed the connection while writing");
    }

    #[test]
    fn messages_are_one_line() {
        let e = Error::Endpoint(EndpointError {
            input: "x".into(),
            reason: "y".into(),
        });
        assert!(!e.to_string().contains('\n'));
        assert!(e.to_string().contains("unix:PATH"));
    }
}
