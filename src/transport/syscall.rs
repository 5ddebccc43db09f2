//! The raw system calls of the per-message path (`recv`, `send`, `accept4`), made
//! directly rather than through glibc's wrappers (see [`recv_uncancellable`] for why).

use std::io;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use socket2::SockAddr;

/// recv(2) as the bare system call, through rustix (its Linux backend makes the call
/// itself, inlined, instead of going through libc). glibc's `recv` (which std calls)
/// brackets every call in pthread cancellation bookkeeping once a process has a second
/// thread: about 60 of the 400 user-space instructions of an echoed message in the fast
/// lane, and glibc's `syscall` wrapper costs another 11 per call. No sockit thread is
/// ever cancelled, so the brackets buy nothing; what skipping them gains is measured in
/// `bench/RESULTS.md` (the design choices table).
#[inline]
pub(crate) fn recv_uncancellable(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    let (received, _) = rustix::net::recv(fd, buf, rustix::net::RecvFlags::empty())?;
    Ok(received)
}

/// send(2) with `MSG_NOSIGNAL` (a closed peer is an `EPIPE` error, not a signal) as the
/// bare system call, for the reason [`recv_uncancellable`] gives.
#[inline]
pub(crate) fn send_uncancellable(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
    Ok(rustix::net::send(
        fd,
        buf,
        rustix::net::SendFlags::NOSIGNAL,
    )?)
}

/// close(2) as the bare system call, for the reason [`recv_uncancellable`] gives (glibc's
/// `close` is a cancellation point too): a load generator that opens a connection per
/// exchange closes one per exchange.
pub(crate) fn close_uncancellable(fd: OwnedFd) {
    use std::os::fd::IntoRawFd;
    // SAFETY: the descriptor was owned, so nothing else uses or closes it.
    unsafe { rustix::io::close(fd.into_raw_fd()) }
}

/// connect(2) as the bare system call (no cancellation bookkeeping, no conversion into a
/// `sockaddr_storage`), for the reason [`recv_uncancellable`] gives.
pub(crate) fn connect_uncancellable(
    fd: BorrowedFd<'_>,
    addr: &std::net::SocketAddr,
) -> io::Result<()> {
    Ok(rustix::net::connect(fd, addr)?)
}

/// `accept(2)`s one connection, already non-blocking, in one system call (`accept4`).
pub(super) fn accept_nonblocking(listener: &impl AsFd) -> io::Result<(OwnedFd, SockAddr)> {
    let fd = listener.as_fd().as_raw_fd();
    // SAFETY: accept4 writes at most `len` bytes into the zeroed storage socket2
    // provides and updates `len`; a non-negative result is a new descriptor that
    // nothing else owns.
    unsafe {
        SockAddr::try_init(
            |storage, len| match accept4_uncancellable(fd, storage.cast(), len) {
                accepted if accepted >= 0 => Ok(OwnedFd::from_raw_fd(accepted)),
                _ => Err(io::Error::last_os_error()),
            },
        )
    }
}

/// accept4(2) with `SOCK_NONBLOCK | SOCK_CLOEXEC`; -1 with `errno` set on failure. The
/// bare system call, not glibc's `accept4`, which brackets the call with pthread
/// cancellation bookkeeping in a process with threads (about 80 instructions of the
/// note's one-shot exchange; see [`recv_uncancellable`]).
///
/// # Safety
/// `storage` must be valid for writes of `*len` bytes, and `len` for a read and a write.
pub(super) unsafe fn accept4_uncancellable(
    fd: RawFd,
    storage: *mut libc::sockaddr,
    len: *mut libc::socklen_t,
) -> RawFd {
    let flags = libc::c_long::from(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC);
    // SAFETY: the caller's pointers are valid as documented; glibc's syscall(3) returns
    // -1 and sets errno on failure.
    let accepted = unsafe {
        libc::syscall(
            libc::SYS_accept4,
            libc::c_long::from(fd),
            storage,
            len,
            flags,
        )
    };
    RawFd::try_from(accepted).unwrap_or(-1)
}
