//! `--allow-uid` / `--allow-gid` on `unixgram:` endpoints: each datagram's sender is
//! checked, since a datagram socket has no connection whose peer `SO_PEERCRED` could name.
//!
//! With an allow-list installed, the socket gets `SO_PASSCRED` when it is bound, and the
//! kernel then attaches the sending process's credentials (`SCM_CREDENTIALS`: pid, uid,
//! gid, as it recorded them at send time) to every datagram. A datagram whose sender is
//! not on the list, or that carries no credentials, is dropped before anything else sees
//! it (no reply, no session, no output, no dump), and the drops are logged at a bounded
//! rate. A process with `CAP_SETUID` may claim another uid, as `SCM_CREDENTIALS` allows.

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use socket2::SockAddr;

use super::unix_path::PeerCredAllow;

/// The credentials the kernel attached to one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderCred {
    /// The sending process.
    pub pid: i32,
    /// Its user.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

/// Room for one `SCM_CREDENTIALS` control message, aligned as the kernel writes it.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct CredControl([u8; CONTROL_LEN]);

/// `CMSG_SPACE(sizeof(struct ucred))` on Linux: 16 bytes of header, 12 of ucred, padded.
const CONTROL_LEN: usize = 32;

impl CredControl {
    /// An empty buffer.
    pub const fn new() -> CredControl {
        CredControl([0; CONTROL_LEN])
    }

    /// Points `header`'s control fields at this buffer, so a receive fills it.
    pub fn attach(&mut self, header: &mut libc::msghdr) {
        header.msg_control = self.0.as_mut_ptr().cast();
        header.msg_controllen = CONTROL_LEN as _;
    }
}

impl Default for CredControl {
    fn default() -> CredControl {
        CredControl::new()
    }
}

/// The credentials in a received message's control data, if any.
pub fn sender_cred(header: &libc::msghdr) -> Option<SenderCred> {
    if header.msg_control.is_null() {
        return None;
    }
    // SAFETY: `header` came back from recvmsg/recvmmsg with msg_control pointing at a live
    // buffer of msg_controllen bytes; the CMSG_* macros stay within it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_CREDENTIALS
            {
                let ucred: libc::ucred = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return Some(SenderCred {
                    pid: ucred.pid,
                    uid: ucred.uid,
                    gid: ucred.gid,
                });
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}

/// Whether datagrams on Unix sockets are checked (an allow-list is installed).
pub fn checks_senders() -> bool {
    PeerCredAllow::installed().is_some()
}

/// Asks the kernel for each datagram's credentials, when an allow-list is installed.
///
/// # Errors
/// When the socket refuses `SO_PASSCRED`.
pub fn pass_credentials(socket: &impl AsFd) -> io::Result<()> {
    if checks_senders() {
        rustix::net::sockopt::set_socket_passcred(socket, true)?;
    }
    Ok(())
}

/// The second (since the epoch) of the last refusal logged: one line a second at most.
static LAST_LOGGED_SECOND: AtomicU64 = AtomicU64::new(0);
/// Refusals not logged since the last line.
static SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// Whether a datagram with these credentials (`None`: it carried none) is let in; a
/// refusal is logged, one line a second at most, with the count of those left out.
pub fn sender_allowed(cred: Option<SenderCred>) -> bool {
    let Some(rule) = PeerCredAllow::installed() else {
        return true;
    };
    let allowed = cred.is_some_and(|c| rule.uids.contains(&c.uid) || rule.gids.contains(&c.gid));
    if !allowed {
        log_refusal(cred);
    }
    allowed
}

/// Logs one refusal, or counts it when a line went out this second already.
fn log_refusal(cred: Option<SenderCred>) {
    let second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if LAST_LOGGED_SECOND.swap(second, Ordering::Relaxed) == second {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let suppressed = match SUPPRESSED.swap(0, Ordering::Relaxed) {
        0 => String::new(),
        n => format!(" ({n} similar lines suppressed)"),
    };
    match cred {
        Some(c) => tracing::warn!(
            "dropped a unixgram datagram: uid {} gid {} (pid {}) is not in --allow-uid/--allow-gid{suppressed}",
            c.uid,
            c.gid,
            c.pid,
        ),
        None => {
            tracing::warn!("dropped a unixgram datagram: it carried no credentials{suppressed}")
        }
    }
}

/// One `recvmsg` on a non-blocking Unix datagram socket: the datagram, its sender and
/// the credentials the kernel attached.
///
/// # Errors
/// Any receive error (`WouldBlock` when nothing is queued).
pub fn recv_with_cred(
    socket: &impl AsRawFd,
    buf: &mut [u8],
) -> io::Result<(usize, SockAddr, Option<SenderCred>)> {
    let fd: RawFd = socket.as_raw_fd();
    let mut control = CredControl::new();
    let mut cred = None;
    let mut len = 0usize;
    // SAFETY: try_init hands us storage for an address of at most `addr_len` bytes; the
    // msghdr points at it, at `buf` and at `control`, all live for the call, each with its
    // true length, and the kernel writes no more than those lengths.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, addr_len| {
            let mut iov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            };
            let mut header: libc::msghdr = std::mem::zeroed();
            header.msg_name = storage.cast();
            header.msg_namelen = *addr_len;
            header.msg_iov = &mut iov;
            header.msg_iovlen = 1;
            control.attach(&mut header);
            let received = libc::recvmsg(fd, &mut header, libc::MSG_DONTWAIT);
            if received < 0 {
                return Err(io::Error::last_os_error());
            }
            len = received as usize;
            *addr_len = header.msg_namelen;
            cred = sender_cred(&header);
            Ok(())
        })?
    };
    Ok((len, addr, cred))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn the_kernel_names_the_sending_process() -> io::Result<()> {
        let (receiver, sender) = UnixDatagram::pair()?;
        rustix::net::sockopt::set_socket_passcred(&receiver, true)?;
        sender.send(b"who")?;
        let mut buf = [0u8; 16];
        let (n, _, cred) = recv_with_cred(&receiver, &mut buf)?;
        assert_eq!(&buf[..n], b"who");
        let cred = cred.ok_or_else(|| io::Error::other("no credentials"))?;
        assert_eq!(cred.pid, std::process::id() as i32);
        assert_eq!(cred.uid, rustix::process::getuid().as_raw());
        assert_eq!(cred.gid, rustix::process::getgid().as_raw());
        Ok(())
    }

    #[test]
    fn without_passcred_there_are_no_credentials() -> io::Result<()> {
        let (receiver, sender) = UnixDatagram::pair()?;
        sender.send(b"x")?;
        let mut buf = [0u8; 16];
        let (_, _, cred) = recv_with_cred(&receiver, &mut buf)?;
        assert_eq!(cred, None);
        Ok(())
    }
}
