//! A connection just accepted and not registered with any runtime: what the fast lane
//! reads and writes without waiting, and what a connection's task registers.

use std::io;

use std::os::fd::{AsFd, BorrowedFd};

use tokio::net::{TcpStream, UnixStream};

use super::stream::Stream;
use super::syscall::{recv_uncancellable, send_uncancellable};

/// A connection just accepted: non-blocking, but not registered with any runtime yet.
///
/// Reading and writing it never waits (`WouldBlock` instead); [`StdStream::into_tokio`]
/// registers it when the connection has to wait for its client.
#[derive(Debug)]
pub enum StdStream {
    /// A TCP connection.
    Tcp(std::net::TcpStream),
    /// A Unix stream connection.
    Unix(std::os::unix::net::UnixStream),
}

impl StdStream {
    /// Reads what has already arrived; `WouldBlock` when nothing has.
    #[inline]
    pub fn read_now(&self, buf: &mut [u8]) -> io::Result<usize> {
        recv_uncancellable(self.as_fd(), buf)
    }

    /// Writes what the socket buffer takes now; `WouldBlock` when it takes nothing.
    #[inline]
    pub fn write_now(&self, buf: &[u8]) -> io::Result<usize> {
        send_uncancellable(self.as_fd(), buf)
    }

    /// Writes a connection's last bytes and, when the socket takes them all, sends our FIN
    /// with them: on TCP the bytes are held back (`MSG_MORE`) until the FIN joins them, so
    /// a one-shot reply leaves as one segment instead of two and the client acknowledges
    /// once: one segment fewer each way for the note's exchange than a plain write and
    /// close. What the socket does not take now is returned short, as with
    /// [`StdStream::write_now`], and no FIN is sent.
    ///
    /// The FIN is sent by `shutdown`, not left to `close`: a close with unread input
    /// would reset the connection and throw the held-back reply away.
    pub fn write_last_now(&self, buf: &[u8]) -> io::Result<usize> {
        let written = match self {
            StdStream::Tcp(_) => {
                let flags = rustix::net::SendFlags::MORE | rustix::net::SendFlags::NOSIGNAL;
                rustix::net::send(self.as_fd(), buf, flags)?
            }
            StdStream::Unix(_) => self.write_now(buf)?,
        };
        if written == buf.len() {
            // A failure here means the connection is gone; its close follows anyway.
            let _ = self.shutdown_write();
        }
        Ok(written)
    }

    /// Asks the kernel to report this TCP connection readable only once `bytes` have
    /// arrived (`SO_RCVLOWAT`), or its end: a bulk sender then wakes the server once per
    /// large chunk instead of once per segment. Data below the mark stays queued until
    /// more arrives or the caller reads anyway. Linux's Unix stream sockets ignore the
    /// mark when they report readiness, so for them this does nothing.
    ///
    /// # Errors
    /// When the kernel refuses the option.
    pub fn set_wake_threshold(&self, bytes: usize) -> io::Result<()> {
        let StdStream::Tcp(s) = self else {
            return Ok(());
        };
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: SO_RCVLOWAT takes an int; we pass a pointer to one and its size.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(s),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                std::ptr::from_ref(&value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Sends our FIN: no more data from this side (the client may still send).
    ///
    /// # Errors
    /// When the connection is already gone.
    pub fn shutdown_write(&self) -> io::Result<()> {
        match self {
            StdStream::Tcp(s) => s.shutdown(std::net::Shutdown::Write),
            StdStream::Unix(s) => s.shutdown(std::net::Shutdown::Write),
        }
    }

    /// Registers the connection with the current runtime.
    ///
    /// # Errors
    /// When the reactor cannot take another socket.
    pub fn into_tokio(self) -> io::Result<Stream> {
        match self {
            StdStream::Tcp(s) => TcpStream::from_std(s).map(Stream::Tcp),
            StdStream::Unix(s) => UnixStream::from_std(s).map(Stream::Unix),
        }
    }
}

impl AsFd for StdStream {
    #[inline]
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            StdStream::Tcp(s) => s.as_fd(),
            StdStream::Unix(s) => s.as_fd(),
        }
    }
}

impl std::os::fd::AsRawFd for StdStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            StdStream::Tcp(s) => s.as_raw_fd(),
            StdStream::Unix(s) => s.as_raw_fd(),
        }
    }
}
