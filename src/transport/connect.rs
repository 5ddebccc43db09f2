//! Connecting to a stream endpoint: TCP (each resolved address in turn), Unix, and
//! `tls://`, which is TCP followed by the client handshake, both within the one connect
//! timeout of [`ConnectOptions`].

use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use super::dial::connect_tcp;
use super::errors::connect_error;
use super::proxy_client::{ProxyChain, open_tunnel};
use super::retry::{Retry, connect_with_retry};
use super::sockopt::SocketOptions;
use super::stream::Stream;
use super::tls::ClientTls;
use crate::endpoint::{Endpoint, HostPort, UnixAddr};
use crate::error::{Error, Result};

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
    /// The local side: source address and socket options (IP endpoints only).
    pub socket: SocketOptions,
    /// Whether a failed connect is tried again; the timeout bounds each attempt.
    pub retry: Retry,
    /// `--proxy`: the proxies to go through, in order (empty: connect directly). TLS
    /// runs end to end inside the tunnel, checked against the target's name.
    pub proxies: ProxyChain,
}

impl ConnectOptions {
    /// Plain connect options with this timeout and default TLS (system roots).
    pub fn new(timeout: Duration) -> ConnectOptions {
        ConnectOptions {
            timeout,
            tls: None,
            socket: SocketOptions::default(),
            retry: Retry::NEVER,
            proxies: ProxyChain::default(),
        }
    }
}

impl From<Duration> for ConnectOptions {
    fn from(timeout: Duration) -> ConnectOptions {
        ConnectOptions::new(timeout)
    }
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
    connect_stream_prefixed(endpoint, options, &[]).await
}

/// [`connect_stream`], sending `prefix` as the connection's first bytes: on the plain
/// socket, before any TLS handshake (and inside any `--proxy` tunnel). A relay's
/// `--send-proxy` header goes there, since a PROXY header must precede TLS.
///
/// # Errors
/// As [`connect_stream`], and the write error if the prefix cannot be sent.
pub async fn connect_stream_prefixed(
    endpoint: &Endpoint,
    options: impl Into<ConnectOptions>,
    prefix: &[u8],
) -> Result<Stream> {
    let options = options.into();
    connect_with_retry(&options.retry, endpoint, || {
        connect_once(endpoint, &options, prefix)
    })
    .await
}

/// Writes `prefix` on a fresh connection (nothing when it is empty).
async fn send_prefix<S: AsyncWrite + Unpin>(
    stream: &mut S,
    endpoint: &Endpoint,
    prefix: &[u8],
) -> Result<()> {
    if prefix.is_empty() {
        return Ok(());
    }
    stream.write_all(prefix).await.map_err(|e| {
        Error::exchange(
            e,
            endpoint.to_string(),
            "while sending the connection's header",
        )
    })
}

/// One connect attempt of [`connect_stream_prefixed`].
async fn connect_once(
    endpoint: &Endpoint,
    options: &ConnectOptions,
    prefix: &[u8],
) -> Result<Stream> {
    let timeout = options.timeout;
    let attempt = async {
        match endpoint {
            Endpoint::Tcp(hp) => {
                let mut tcp = connect_tcp_maybe_proxied(endpoint, hp, options).await?;
                send_prefix(&mut tcp, endpoint, prefix).await?;
                Ok(Stream::Tcp(tcp))
            }
            Endpoint::Unix(_) if !options.proxies.is_empty() => Err(Error::Usage(format!(
                "{endpoint} is a local socket; --proxy applies to tcp:// and tls:// targets only"
            ))),
            Endpoint::Unix(addr) => {
                let mut unix = connect_unix(endpoint, addr).await?;
                send_prefix(&mut unix, endpoint, prefix).await?;
                Ok(unix)
            }
            Endpoint::Tls(hp) => {
                let tls = match &options.tls {
                    Some(tls) => tls.clone(),
                    None => ClientTls::system()?,
                };
                let mut tcp = connect_tcp_maybe_proxied(endpoint, hp, options).await?;
                send_prefix(&mut tcp, endpoint, prefix).await?;
                // Boxed: the handshake's future is the largest part of a connect, and
                // every plain connect's future (a relay holds one per connection) would
                // otherwise be that large.
                Box::pin(tls.handshake(tcp, endpoint, hp)).await
            }
            Endpoint::Udp(_) | Endpoint::UnixDgram(_) => Err(Error::Usage(format!(
                "{endpoint} is a datagram endpoint, not a stream"
            ))),
        }
    };
    // Put in words only when it is needed: formatting costs more than a loopback connect.
    let doing = || {
        if options.proxies.is_empty() {
            format!("connecting to {endpoint}")
        } else {
            format!("connecting to {endpoint} through {}", options.proxies)
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| Error::Timeout {
            doing: doing(),
            after: timeout,
        })?
}

/// A TCP connection to `hp`: directly, or through the `--proxy` chain.
async fn connect_tcp_maybe_proxied(
    endpoint: &Endpoint,
    hp: &HostPort,
    options: &ConnectOptions,
) -> Result<TcpStream> {
    if options.proxies.is_empty() {
        connect_tcp(endpoint, hp, &options.socket).await
    } else {
        // Boxed, as the TLS handshake is: only a connect through proxies pays for the
        // tunnel's large future.
        Box::pin(open_tunnel(&options.proxies, hp, &options.socket)).await
    }
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
