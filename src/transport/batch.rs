//! Many datagrams per system call: `recvmmsg(2)` and `sendmmsg(2)` (Linux).
//!
//! A datagram server's work per request is tiny, so the system call is most of its cost.
//! Receiving up to [`BATCH`] queued datagrams at once, and sending all their replies at
//! once, pays for one entry into the kernel per batch instead of two per datagram.
//!
//! Every slot is as large as the largest datagram, so nothing is ever truncated. The
//! slots are allocated zeroed and untouched, so the memory a small datagram never reaches
//! is never made resident.

use std::io;
use std::os::fd::RawFd;

use socket2::{SockAddr, SockAddrStorage};

use super::MAX_DATAGRAM;
use super::datagram_cred::{CredControl, SenderCred, sender_cred};

/// Datagrams received (and answered) per system call at most.
pub const BATCH: usize = 32;

/// Room for one datagram: the largest possible, rounded up to a page multiple.
const SLOT: usize = MAX_DATAGRAM.div_ceil(4096) * 4096;

/// Buffers for one batch of received datagrams and their senders' addresses.
///
/// The kernel's header arrays are built once, pointing into the batch's own heap
/// buffers, so a receive only resets the lengths the kernel writes back.
pub struct RecvBatch {
    /// The kernel's headers, one per slot (they point into the boxes below).
    headers: Box<[libc::mmsghdr; BATCH]>,
    /// One buffer descriptor per slot.
    iovecs: Box<[libc::iovec; BATCH]>,
    /// `BATCH` slots of `SLOT` bytes.
    slots: Vec<u8>,
    /// Sender of each datagram.
    addrs: Box<[SockAddrStorage; BATCH]>,
    /// Length of each sender address.
    addr_lens: [libc::socklen_t; BATCH],
    /// Length of each datagram.
    lens: [usize; BATCH],
    /// Room for each datagram's `SCM_CREDENTIALS` (Unix sockets with `SO_PASSCRED`).
    controls: Box<[CredControl; BATCH]>,
    /// The credentials each datagram carried, if any.
    creds: [Option<SenderCred>; BATCH],
    /// When each datagram arrived, ns since the Unix epoch (only on a socket with
    /// `SO_TIMESTAMPNS`: see [`enable_arrival_times`]).
    arrivals: [Option<u64>; BATCH],
    /// How many slots the last receive filled.
    count: usize,
}

impl RecvBatch {
    /// Empty buffers for one batch.
    pub fn new() -> RecvBatch {
        let mut batch = RecvBatch {
            // SAFETY: iovec and mmsghdr are plain C structs; zeroed is a valid initial
            // value (null pointers and zero lengths until filled in below).
            headers: Box::new(unsafe { std::mem::zeroed() }),
            // SAFETY: as above.
            iovecs: Box::new(unsafe { std::mem::zeroed() }),
            slots: vec![0; BATCH * SLOT],
            addrs: Box::new(std::array::from_fn(|_| SockAddrStorage::zeroed())),
            addr_lens: [0; BATCH],
            lens: [0; BATCH],
            controls: Box::new([CredControl::new(); BATCH]),
            creds: [None; BATCH],
            arrivals: [None; BATCH],
            count: 0,
        };
        let base = batch.slots.as_mut_ptr();
        for i in 0..BATCH {
            // SAFETY: slot i lies within `slots`, which holds BATCH * SLOT bytes.
            batch.iovecs[i].iov_base = unsafe { base.add(i * SLOT) }.cast();
            batch.iovecs[i].iov_len = SLOT;
            let header = &mut batch.headers[i].msg_hdr;
            header.msg_name = std::ptr::from_mut(&mut batch.addrs[i]).cast();
            header.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_iov = &mut batch.iovecs[i];
            header.msg_iovlen = 1;
            batch.controls[i].attach(header);
        }
        batch
    }

    /// How many datagrams the last receive returned.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether the last receive returned nothing.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Datagram `i` of the last receive.
    pub fn datagram(&self, i: usize) -> &[u8] {
        &self.slots[i * SLOT..i * SLOT + self.lens[i]]
    }

    /// The sender of datagram `i`.
    pub fn sender(&self, i: usize) -> SockAddr {
        // SAFETY: SockAddrStorage is plain bytes without Drop, so a bitwise copy is a valid
        // value; the kernel filled it with an address of `addr_lens[i]` bytes, which fits.
        unsafe { SockAddr::new(std::ptr::read(&self.addrs[i]), self.addr_lens[i]) }
    }

    /// Whether datagrams `i` and `j` came from the same address (a byte comparison, so a
    /// receiver can skip decoding an address it has just decoded).
    pub fn same_sender(&self, i: usize, j: usize) -> bool {
        self.addr_lens[i] == self.addr_lens[j] && self.address_bytes(i) == self.address_bytes(j)
    }

    /// The bytes of datagram `i`'s sender address, as the kernel wrote them.
    fn address_bytes(&self, i: usize) -> &[u8] {
        let len = (self.addr_lens[i] as usize).min(std::mem::size_of::<SockAddrStorage>());
        // SAFETY: the storage is plain bytes of at least `size_of::<SockAddrStorage>()`,
        // and `len` is capped at that.
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(&self.addrs[i]).cast::<u8>(), len) }
    }

    /// The credentials the kernel attached to datagram `i` (only on a Unix socket with
    /// `SO_PASSCRED`: see [`super::datagram_cred`]).
    pub fn sender_cred(&self, i: usize) -> Option<SenderCred> {
        self.creds[i]
    }

    /// When datagram `i` arrived, in ns since the Unix epoch, as the kernel stamped it
    /// (only on a socket made to by [`enable_arrival_times`]).
    pub fn arrival_ns(&self, i: usize) -> Option<u64> {
        self.arrivals[i]
    }

    /// Waits for a datagram on `fd` (a blocking socket), then takes it and whatever else is
    /// queued, up to [`BATCH`] (`MSG_WAITFORONE`).
    ///
    /// # Errors
    /// Any receive error (`Interrupted` when a signal came first).
    pub fn receive_waiting(&mut self, fd: RawFd) -> io::Result<usize> {
        self.receive(fd, libc::MSG_WAITFORONE)
    }

    /// Takes what is queued on `fd` now, up to [`BATCH`], without waiting (for polling
    /// before a [`RecvBatch::receive_waiting`]).
    ///
    /// # Errors
    /// `WouldBlock` when nothing is queued; any other receive error.
    pub fn receive_queued(&mut self, fd: RawFd) -> io::Result<usize> {
        self.receive(fd, libc::MSG_WAITFORONE | libc::MSG_DONTWAIT)
    }

    fn receive(&mut self, fd: RawFd, flags: libc::c_int) -> io::Result<usize> {
        // The kernel wrote back how much of the address and control room it used, in the
        // headers of the datagrams it returned last time: those get their room back.
        let used = self.headers.iter_mut().zip(self.controls.iter_mut());
        for (header, control) in used.take(self.count) {
            header.msg_hdr.msg_namelen =
                std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            control.attach(&mut header.msg_hdr);
        }
        // SAFETY: every header points at live buffers owned by `self` (heap allocations
        // that do not move while it lives), each with its true length; the kernel writes
        // at most that much.
        let received = unsafe {
            libc::recvmmsg(
                fd,
                self.headers.as_mut_ptr(),
                BATCH as libc::c_uint,
                flags,
                std::ptr::null_mut(),
            )
        };
        if received < 0 {
            // A failed receive fills no header.
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        let count = received as usize;
        for (i, header) in self.headers[..count].iter().enumerate() {
            self.lens[i] = header.msg_len as usize;
            self.addr_lens[i] = header.msg_hdr.msg_namelen;
            self.creds[i] = sender_cred(&header.msg_hdr);
            self.arrivals[i] = arrival_ns(&header.msg_hdr);
        }
        self.count = count;
        Ok(count)
    }
}

// SAFETY: the raw pointers in `headers` and `iovecs` point only into the batch's own
// heap buffers (`slots`, `addrs`, `controls`, `iovecs`), which move with it and are
// touched only through `&mut self`: sending the batch to another thread sends all of it.
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> RecvBatch {
        RecvBatch::new()
    }
}

/// Asks the kernel to stamp every datagram `fd` receives with its arrival time
/// (`SO_TIMESTAMPNS`), read back with [`RecvBatch::arrival_ns`]: a receiver that takes a
/// batch at once then knows when each datagram came without reading the clock for each.
///
/// # Errors
/// When the kernel refuses the option.
pub fn enable_arrival_times(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the option value is a live c_int of the size given.
    let status = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if status != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The arrival time in a received message's control data (`SCM_TIMESTAMPNS`), ns since
/// the Unix epoch.
fn arrival_ns(header: &libc::msghdr) -> Option<u64> {
    if header.msg_control.is_null() || header.msg_controllen == 0 {
        return None;
    }
    // SAFETY: `header` came back from recvmmsg with msg_control pointing at a live buffer
    // of msg_controllen bytes; the CMSG_* macros stay within it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let at: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                let seconds = u64::try_from(at.tv_sec).ok()?;
                let nanos = u64::try_from(at.tv_nsec).ok()?;
                return seconds.checked_mul(1_000_000_000)?.checked_add(nanos);
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}

/// Sends `replies` (bytes, and a destination unless the socket is connected) on a
/// blocking socket in one system call, at most [`BATCH`] per call, waiting while the
/// send buffer is full.
///
/// Returns how many went (fewer than given when one failed after the first).
///
/// # Errors
/// An error on the first reply, so the caller can skip it and go on.
pub fn send_batch_waiting<'a>(
    fd: RawFd,
    replies: impl Iterator<Item = (&'a [u8], Option<&'a SockAddr>)>,
) -> io::Result<usize> {
    // SAFETY: plain C structs; zeroed is a valid initial value.
    let mut iovecs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: likewise for mmsghdr (null pointers and zero lengths until filled in).
    let mut headers: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
    let mut count = 0;
    for (i, (bytes, to)) in replies.take(BATCH).enumerate() {
        iovecs[i].iov_base = bytes.as_ptr().cast_mut().cast();
        iovecs[i].iov_len = bytes.len();
        let header = &mut headers[i].msg_hdr;
        if let Some(to) = to {
            header.msg_name = to.as_ptr().cast_mut().cast();
            header.msg_namelen = to.len();
        }
        header.msg_iov = &mut iovecs[i];
        header.msg_iovlen = 1;
        count = i + 1;
    }
    if count == 0 {
        return Ok(0);
    }
    // SAFETY: every header points at live, correctly sized buffers that the kernel only
    // reads (sendmmsg does not write through msg_iov or msg_name).
    let sent = unsafe { libc::sendmmsg(fd, headers.as_mut_ptr(), count as libc::c_uint, 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn a_batch_round_trip_keeps_every_datagram_and_sender() -> io::Result<()> {
        let server = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let a = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let b = std::net::UdpSocket::bind("127.0.0.1:0")?;
        a.send_to(b"from a", server.local_addr()?)?;
        b.send_to(&vec![7u8; 60_000], server.local_addr()?)?;
        // On loopback a datagram is queued at the receiver before send_to returns.
        let mut batch = RecvBatch::new();
        assert_eq!(
            batch.receive_waiting(server.as_raw_fd())?,
            2,
            "both datagrams in one batch"
        );
        assert_eq!(batch.datagram(0), b"from a");
        assert_eq!(
            batch.datagram(1).len(),
            60_000,
            "a large datagram is not truncated"
        );
        assert_eq!(batch.sender(0).as_socket(), Some(a.local_addr()?));
        assert!(!batch.same_sender(0, 1), "two senders told apart");
        let to_a = batch.sender(0);
        let to_b = batch.sender(1);
        let replies = [(&b"one"[..], Some(&to_a)), (&b"two"[..], Some(&to_b))];
        assert_eq!(
            send_batch_waiting(server.as_raw_fd(), replies.into_iter())?,
            2
        );
        a.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        b.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
        let mut buf = [0u8; 8];
        let n = a.recv(&mut buf)?;
        assert_eq!(&buf[..n], b"one");
        let n = b.recv(&mut buf)?;
        assert_eq!(&buf[..n], b"two");
        Ok(())
    }

    #[test]
    fn every_receive_of_a_reused_batch_names_the_senders() -> io::Result<()> {
        let server = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let mut batch = RecvBatch::new();
        for round in 0..3 {
            let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
            for _ in 0..=round {
                client.send_to(b"again", server.local_addr()?)?;
            }
            assert_eq!(batch.receive_waiting(server.as_raw_fd())?, round + 1);
            for i in 0..=round {
                assert_eq!(batch.sender(i).as_socket(), Some(client.local_addr()?));
                assert!(batch.same_sender(i, 0));
            }
        }
        Ok(())
    }

    #[test]
    fn arrival_times_come_with_each_datagram_when_asked_for() -> io::Result<()> {
        let server = std::net::UdpSocket::bind("127.0.0.1:0")?;
        enable_arrival_times(server.as_raw_fd())?;
        let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        client.send_to(b"stamped", server.local_addr()?)?;
        let mut batch = RecvBatch::new();
        assert_eq!(batch.receive_waiting(server.as_raw_fd())?, 1);
        let arrival = batch.arrival_ns(0);
        assert!(
            arrival.is_some_and(|at| at >= before),
            "{arrival:?} vs {before}"
        );
        Ok(())
    }

    #[test]
    fn receiving_what_is_queued_does_not_wait_on_a_blocking_socket() -> io::Result<()> {
        let server = std::net::UdpSocket::bind("127.0.0.1:0")?;
        let mut batch = RecvBatch::new();
        let empty = batch.receive_queued(server.as_raw_fd());
        assert!(
            matches!(&empty, Err(e) if e.kind() == io::ErrorKind::WouldBlock),
            "{empty:?}"
        );
        let client = std::net::UdpSocket::bind("127.0.0.1:0")?;
        client.send_to(b"queued", server.local_addr()?)?;
        assert_eq!(batch.receive_queued(server.as_raw_fd())?, 1);
        assert_eq!(batch.datagram(0), b"queued");
        Ok(())
    }
}
