//! What both stream accept loops (the lane's acceptor and the task engine's loop) do
//! alike: count a connection and give it its id, tell a failed connection from a failed
//! listener, and pause after resource errors.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shared;

/// Longest pause after a resource error on `accept` (EMFILE and friends).
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// First pause after a resource error on `accept`.
const MIN_BACKOFF: Duration = Duration::from_millis(5);

/// A connection's start, the same in both accept loops: counted and given its id.
pub(crate) fn count_connection(shared: &Shared, ids: &mut impl Iterator<Item = u64>) -> u64 {
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    ids.next().unwrap_or_default()
}

/// The pause after resource errors on `accept` (out of descriptors and the like): from
/// [`MIN_BACKOFF`], doubling up to [`MAX_BACKOFF`], back to the start after a success.
/// Both accept loops use it.
#[derive(Debug)]
pub(crate) struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff(MIN_BACKOFF)
    }
}

impl Backoff {
    /// A connection was accepted: the next error pauses briefly again.
    pub(crate) fn reset(&mut self) {
        self.0 = MIN_BACKOFF;
    }

    /// Logs the error and says how long to pause before accepting again.
    pub(crate) fn after(&mut self, e: &io::Error) -> Duration {
        tracing::warn!(
            "accept failed: {e}; pausing {}ms and serving existing clients{}",
            self.0.as_millis(),
            resource_hint(e)
        );
        let pause = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        pause
    }
}

/// Errors that concern one incoming connection, not the listener: retry at once.
pub(crate) fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || e.raw_os_error() == Some(libc::EPROTO)
}

/// A remedy for the resource errors `accept` reports.
fn resource_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EMFILE) => " (out of file descriptors: raise `ulimit -n` or set --max-conns)",
        Some(libc::ENFILE) => " (the system is out of file descriptors)",
        Some(libc::ENOBUFS) | Some(libc::ENOMEM) => " (the kernel is out of memory for sockets)",
        _ => "",
    }
}
