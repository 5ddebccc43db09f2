//! What an accept loop does when `accept` fails: a failed incoming connection is
//! skipped at once; a resource error (out of descriptors, out of memory) pauses
//! accepting, longer each time, while the clients already in are served.

use std::io;
use std::time::Duration;

/// Longest pause after a resource error on `accept` (EMFILE and friends).
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// First pause after a resource error on `accept`.
const MIN_BACKOFF: Duration = Duration::from_millis(5);

/// The pause after resource errors on `accept` (out of descriptors and the like): from
/// [`MIN_BACKOFF`], doubling up to [`MAX_BACKOFF`], back to the start after a success.
/// Every accept loop uses it: the server's, the relay's and the proxy's through their
/// shared admission step (`access::admission`), the `--metrics` endpoint's directly.
#[derive(Debug)]
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff(MIN_BACKOFF)
    }
}

impl Backoff {
    /// A connection was accepted: the next error pauses briefly again.
    pub fn reset(&mut self) {
        self.0 = MIN_BACKOFF;
    }

    /// Logs the error and says how long to pause before accepting again.
    pub fn after(&mut self, e: &io::Error) -> Duration {
        tracing::warn!(
            "accept failed: {e}; pausing {}ms while existing clients carry on{}",
            self.0.as_millis(),
            resource_hint(e)
        );
        let pause = self.0;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
        pause
    }
}

/// Errors that concern one incoming connection, not the listener: retry at once.
pub fn is_per_connection(e: &io::Error) -> bool {
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

#[cfg(test)]
mod tests {
    use std::io;
    use std::time::Duration;

    use super::{Backoff, MAX_BACKOFF, MIN_BACKOFF, is_per_connection};

    #[test]
    fn the_pause_doubles_up_to_its_cap_and_starts_over_after_a_success() {
        let mut backoff = Backoff::default();
        let out_of_fds = io::Error::from_raw_os_error(libc::EMFILE);
        let pauses: Vec<Duration> = (0..10).map(|_| backoff.after(&out_of_fds)).collect();
        assert_eq!(pauses[0], MIN_BACKOFF);
        assert_eq!(pauses[1], MIN_BACKOFF * 2);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(pauses[9], MAX_BACKOFF);
        backoff.reset();
        assert_eq!(backoff.after(&out_of_fds), MIN_BACKOFF);
    }

    #[test]
    fn a_failed_connection_is_retried_at_once_and_a_resource_error_is_not() {
        for kind in [
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::Interrupted,
        ] {
            assert!(is_per_connection(&kind.into()), "{kind:?}");
        }
        assert!(is_per_connection(&io::Error::from_raw_os_error(
            libc::EPROTO
        )));
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(!is_per_connection(&io::Error::from_raw_os_error(errno)));
        }
    }
}
