//! Connected byte streams: the [`Stream`] every connection is read and written through
//! (TCP, Unix, or TLS over TCP). Accepting makes them ([`super::listener`]), and so do
//! connecting ([`super::connect`]) and the TLS handshake ([`super::tls`]).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use tokio::net::{TcpStream, UnixStream};

use super::unix_peer;
use crate::endpoint::PeerAddr;

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

impl Stream {
    /// Tells the runtime that a read has just left nothing in the socket (it returned
    /// fewer bytes than asked for), so the next read waits for the kernel's next "data
    /// arrived" event instead of first trying a read that would find nothing: a
    /// request-reply client saves one system call per exchange. A newer event is never
    /// lost: the runtime only forgets the readiness it had reported before this call.
    /// TLS keeps decrypted bytes of its own, so nothing changes there.
    pub fn note_drained(&self) {
        let nothing = || Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock));
        // The closure's WouldBlock is the point (it clears the readiness); no I/O happens.
        let _ = match self {
            Stream::Tcp(tcp) => tcp.try_io(tokio::io::Interest::READABLE, nothing),
            Stream::Unix(unix) => unix.try_io(tokio::io::Interest::READABLE, nothing),
            Stream::Tls(_) => Ok(()),
        };
    }

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
