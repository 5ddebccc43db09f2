//! Socket activation: serve on a listening socket that systemd (or any launcher speaking
//! its protocol, such as `systemd-socket-activate`) created and passed in, instead of
//! binding one.
//!
//! The protocol (`sd_listen_fds(3)`): the sockets are file descriptors 3, 4, …;
//! `LISTEN_FDS` says how many, `LISTEN_PID` must be our process id (so a child that
//! inherits the environment does not take them), `LISTEN_FDNAMES` optionally names them.
//! The `sd-notify` crate reads these (strictly, and marks the descriptors close-on-exec so
//! `--exec` programs never inherit the listener); this module checks that the socket is
//! of the kind the endpoint asks for and hands it back, ready to listen on; the listener
//! and datagram modules wrap it as they wrap a socket they bind.
//!
//! Why: systemd holds the port while sockit restarts (clients queue in the backlog instead
//! of being refused), sockit can listen on port 443 without privileges, and the unit file
//! stays the one place where addresses are configured.
//!
//! [`notify_ready`] and [`notify_stopping`] tell a `Type=notify` unit about start-up and
//! shutdown (no-ops outside systemd).

use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use socket2::{Domain, SockRef, Socket, Type};

use crate::endpoint::{Delivery, Endpoint};
use crate::error::{Error, Result};

/// The passed descriptors are owned once: a second taker would close them twice.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// The socket systemd passed, checked against the endpoint's kind.
///
/// # Errors
/// [`Error::Activation`] when no socket (or more than one) was passed, it was already
/// taken, or it is not a socket of the endpoint's kind.
fn take(endpoint: &Endpoint) -> Result<Socket> {
    let fail = |reason: String| Error::Activation { reason };
    let fds: Vec<(RawFd, String)> = sd_notify::listen_fds_with_names()
        .map_err(|e| {
            fail(format!(
                "the LISTEN_* environment is malformed ({e}); start sockit from a systemd socket unit"
            ))
        })?
        .collect();
    let (fd, name) = match fds.as_slice() {
        [] => {
            return Err(fail(
                "none was passed (LISTEN_FDS is unset, or LISTEN_PID is not this process); \
                 start sockit from a systemd .socket unit, or drop --systemd to bind the endpoint itself"
                    .into(),
            ));
        }
        [one] => one.clone(),
        many => {
            let names: Vec<String> = many
                .iter()
                .map(|(fd, n)| format!("fd {fd} ({n})"))
                .collect();
            return Err(fail(format!(
                "{} sockets were passed ({}); sockit serves one: give each sockit service its own .socket unit",
                many.len(),
                names.join(", ")
            )));
        }
    };
    // Check before owning: if the descriptor is not the socket we expect (a launcher that
    // set LISTEN_PID but passed nothing), it belongs to someone else in this process
    // (tokio's epoll, say) and must not be closed by us.
    // SAFETY: `listen_fds` has just changed this descriptor's flags, so it is open; it is
    // only borrowed for the checks, which do not close it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    check_kind(&SockRef::from(&borrowed), endpoint, fd, &name).map_err(fail)?;
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Err(fail(format!("fd {fd} was already taken by this process")));
    }
    // SAFETY: systemd passed this socket to us and nothing else in the process owns it:
    // `TAKEN` makes this the only place that wraps it, once.
    Ok(Socket::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Whether the passed socket fits the endpoint: stream or datagram, IP or Unix.
fn check_kind(
    socket: &SockRef<'_>,
    endpoint: &Endpoint,
    fd: RawFd,
    name: &str,
) -> std::result::Result<(), String> {
    let described = |e: std::io::Error| format!("fd {fd} ({name}) is not a usable socket: {e}");
    let kind = socket.r#type().map_err(described)?;
    let domain = socket.domain().map_err(described)?;
    let is_ip = domain == Domain::IPV4 || domain == Domain::IPV6;
    let actual = match (is_ip, kind) {
        (true, Type::STREAM) => "a TCP socket (ListenStream=PORT)",
        (true, Type::DGRAM) => "a UDP socket (ListenDatagram=PORT)",
        (false, Type::STREAM) if domain == Domain::UNIX => {
            "a Unix stream socket (ListenStream=/path)"
        }
        (false, Type::DGRAM) if domain == Domain::UNIX => {
            "a Unix datagram socket (ListenDatagram=/path)"
        }
        _ => "a socket sockit cannot serve",
    };
    let fits = match endpoint {
        Endpoint::Tcp(_) | Endpoint::Tls(_) => is_ip && kind == Type::STREAM,
        Endpoint::Udp(_) => is_ip && kind == Type::DGRAM,
        Endpoint::Unix(_) => domain == Domain::UNIX && kind == Type::STREAM,
        Endpoint::UnixDgram(_) => domain == Domain::UNIX && kind == Type::DGRAM,
    };
    if fits {
        return Ok(());
    }
    let wanted = match endpoint.delivery() {
        Delivery::Stream => "a stream",
        Delivery::Datagram => "a datagram",
    };
    Err(format!(
        "fd {fd} ({name}) is {actual}, but {endpoint} needs {wanted} socket of the {} kind; \
         make the endpoint's scheme match the socket unit (tcp/tls, udp, unix, unixgram)",
        endpoint.scheme()
    ))
}

/// The passed socket, ready to accept: non-blocking, and put in the listening state if
/// the launcher did not (systemd always does). The caller wraps it as the listener of
/// its domain ([`Socket::domain`]).
///
/// # Errors
/// As [`take`], plus [`Error::Listen`] if it cannot listen.
pub(crate) fn stream_socket(endpoint: &Endpoint, backlog: u32) -> Result<Socket> {
    let socket = take(endpoint)?;
    socket
        .set_nonblocking(true)
        .map_err(|source| listen_error(endpoint, source))?;
    if !socket.is_listener().unwrap_or(true) {
        socket
            .listen(i32::try_from(backlog).unwrap_or(i32::MAX))
            .map_err(|source| listen_error(endpoint, source))?;
    }
    Ok(socket)
}

/// The passed socket, non-blocking, for the caller to wrap as the datagram socket of its
/// domain.
///
/// # Errors
/// As [`take`], plus [`Error::Listen`] if it cannot be made non-blocking.
pub(crate) fn datagram_socket(endpoint: &Endpoint) -> Result<Socket> {
    let socket = take(endpoint)?;
    socket
        .set_nonblocking(true)
        .map_err(|source| listen_error(endpoint, source))?;
    Ok(socket)
}

/// Whether a passed socket is a Unix-domain one (otherwise IP).
///
/// # Errors
/// [`Error::Listen`] when the kernel cannot say.
pub(crate) fn is_unix(socket: &Socket, endpoint: &Endpoint) -> Result<bool> {
    let domain = socket
        .domain()
        .map_err(|source| listen_error(endpoint, source))?;
    Ok(domain == Domain::UNIX)
}

/// The error for a passed socket that cannot be set up to listen.
pub(crate) fn listen_error(endpoint: &Endpoint, source: std::io::Error) -> Error {
    Error::Listen {
        endpoint: endpoint.clone(),
        source,
    }
}

/// Tells systemd (`Type=notify`) that sockit is ready to serve. A no-op elsewhere; a
/// failure is only logged, since serving matters more than the notification.
pub fn notify_ready() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!("could not tell systemd we are ready (NOTIFY_SOCKET): {e}");
    }
}

/// Tells systemd that sockit is stopping (draining). A no-op elsewhere.
pub fn notify_stopping() {
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Stopping]) {
        tracing::debug!("could not tell systemd we are stopping: {e}");
    }
}
