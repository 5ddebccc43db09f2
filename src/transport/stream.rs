//! Connected byte streams: the [`Stream`] every connection is read and written through
//! (TCP, Unix, or TLS over TCP), and connecting to a stream endpoint.
//!
//! A `tls://` connection is TCP followed by the client handshake, both within the one
//! connect timeout of [`ConnectOptions`].

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use tokio::net::{TcpStream, UnixStream};

use super::errors::connect_error;
use super::proxy_client::{ProxyChain, open_tunnel};
use super::retry::{Retry, connect_with_retry};
use super::sockopt::{SocketOptions, tcp_client};
use super::tls::ClientTls;
use super::{PeerAddr, unix_peer};
use crate::endpoint::{Endpoint, HostPort, UnixAddr};
use crate::error::{Error, Result};

/// One connected byte stream.
///
/// An enum rather than a trait object: the server's per-connection code is generic over
/// `AsyncRead + AsyncWrite`, and the match per call costs nothing next to the syscall.
#[derive(Debug)]
pub enum Stream {
    /// A TCP connection.
    Tcp(TcpStream),
    /// A Unix stream connection.
    Unix(UnixStream),
    /// A TLS session over TCP, client or server side. Boxed: the session state is large
    /// and the other variants are a file descriptor.
    Tls(Box<tokio_rustls::TlsStream<TcpStream>>),
}

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
                tls.handshake(tcp, endpoint, hp).await
            }
            Endpoint::Udp(_) | Endpoint::UnixDgram(_) => Err(Error::Usage(format!(
                "{endpoint} is a datagram endpoint, not a stream"
            ))),
        }
    };
    let doing = if options.proxies.is_empty() {
        format!("connecting to {endpoint}")
    } else {
        format!("connecting to {endpoint} through {}", options.proxies)
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .map_err(|_| Error::Timeout {
            doing,
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
        open_tunnel(&options.proxies, hp, &options.socket).await
    }
}

/// Tries every address of `hp`; returns the first connection or the most telling error.
pub(super) async fn connect_tcp(
    endpoint: &Endpoint,
    hp: &HostPort,
    options: &SocketOptions,
) -> Result<TcpStream> {
    let mut last_error = None;
    let addrs = hp.resolve().await?;
    if !addrs.iter().any(|addr| options.reaches(*addr)) {
        return Err(options.no_address_of_source_family(endpoint));
    }
    for addr in addrs.into_iter().filter(|addr| options.reaches(*addr)) {
        match tcp_client(addr, options)?.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                tracing::debug!(%addr, "connect failed: {e}");
                last_error = Some(connect_error(e, endpoint));
            }
        }
    }
    Err(last_error.unwrap_or_else(|| Error::HostNotFound {
        host: hp.host_text(),
        reason: "no addresses".into(),
    }))
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

impl Stream {
    /// Both ends as a `--pcap` flow (TCP and TLS; a Unix stream has no IP addresses).
    pub fn pcap_flow(&self) -> Option<super::pcap::Flow> {
        let tcp = match self {
            Stream::Tcp(s) => s,
            Stream::Tls(s) => s.get_ref().0,
            Stream::Unix(_) => return None,
        };
        Some(super::pcap::Flow {
            local: tcp.local_addr().ok()?,
            peer: tcp.peer_addr().ok()?,
            transport: super::pcap::Transport::Tcp,
        })
    }

    /// Where this stream is connected to, for messages.
    pub fn peer_addr(&self) -> io::Result<PeerAddr> {
        match self {
            Stream::Tcp(s) => s.peer_addr().map(PeerAddr::Ip),
            Stream::Unix(s) => s.peer_addr().map(unix_peer),
            Stream::Tls(s) => s.get_ref().0.peer_addr().map(PeerAddr::Ip),
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
