//! Rate-limited log lines: one bad client gets a line each; a flood does not drown stderr.
//!
//! A server that refuses clients (denied address, over `--max-conns`) logs each refusal,
//! but a flood of them (a UDP sender spraying datagrams, a port scan) must not turn into a
//! flood of lines. [`LogThrottle`] lets a few lines through per window and counts the rest,
//! so the next line that gets through says how many were left out.

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The one throttle for per-connection diagnostic lines (a failed handshake, a bad PROXY
/// header, an unusual end), shared by every connection of the process: a flood of bad
/// clients costs at most [`CONNECTION_LINES_PER_SECOND`] lines per second, the next line
/// naming how many similar ones were left out. Higher than the access log's rate, as each
/// line tells of one connection an operator may be looking for.
static CONNECTION_LINES: LazyLock<Mutex<LogThrottle>> = LazyLock::new(|| {
    Mutex::new(LogThrottle::new(
        CONNECTION_LINES_PER_SECOND,
        Duration::from_secs(1),
    ))
});

/// Per-connection lines let through each second.
pub const CONNECTION_LINES_PER_SECOND: u32 = 50;

/// Writes one per-connection line through [`CONNECTION_LINES`]: `log` gets the suffix to
/// append ("" or " (N similar lines suppressed)"), or is not called when the line is
/// suppressed.
pub fn connection_line(log: impl FnOnce(&str)) {
    let admit = CONNECTION_LINES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .admit(Instant::now());
    if let Admit::Log { .. } = admit {
        log(&admit.suffix());
    }
}

/// Counts events in fixed windows and says which ones to log. Owned by one task.
#[derive(Debug, Clone)]
pub struct LogThrottle {
    /// Lines allowed per window.
    per_window: u32,
    /// Window length.
    window: Duration,
    /// When the current window began.
    window_start: Option<Instant>,
    /// Lines logged in the current window.
    logged: u32,
    /// Events not logged since the last line that was.
    suppressed: u64,
}

/// What to do with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Log it; `suppressed` events before it were left out (mention them when non-zero).
    Log {
        /// Events not logged since the previous line.
        suppressed: u64,
    },
    /// Count it silently.
    Suppress,
}

impl LogThrottle {
    /// Lines per second a throttled log lets through by default.
    pub const DEFAULT_PER_SECOND: u32 = 10;

    /// At most `per_window` lines every `window`.
    pub fn new(per_window: u32, window: Duration) -> LogThrottle {
        LogThrottle {
            per_window,
            window,
            window_start: None,
            logged: 0,
            suppressed: 0,
        }
    }

    /// Decides about an event happening `now`.
    pub fn admit(&mut self, now: Instant) -> Admit {
        let start = *self.window_start.get_or_insert(now);
        if now.saturating_duration_since(start) >= self.window {
            self.window_start = Some(now);
            self.logged = 0;
        }
        if self.logged < self.per_window {
            self.logged += 1;
            Admit::Log {
                suppressed: std::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed += 1;
            Admit::Suppress
        }
    }
}

impl Default for LogThrottle {
    fn default() -> LogThrottle {
        LogThrottle::new(LogThrottle::DEFAULT_PER_SECOND, Duration::from_secs(1))
    }
}

impl Admit {
    /// A suffix for the logged line: empty, or " (N similar lines suppressed)".
    pub fn suffix(&self) -> String {
        match self {
            Admit::Log { suppressed: 0 } | Admit::Suppress => String::new(),
            Admit::Log { suppressed } => format!(" ({suppressed} similar lines suppressed)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_lines_per_window_then_a_count() {
        let mut throttle = LogThrottle::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(throttle.admit(t0), Admit::Log { suppressed: 0 });
        assert_eq!(throttle.admit(t0), Admit::Log { suppressed: 0 });
        assert_eq!(throttle.admit(t0), Admit::Suppress);
        assert_eq!(
            throttle.admit(t0 + Duration::from_millis(999)),
            Admit::Suppress
        );
        let next = throttle.admit(t0 + Duration::from_secs(1));
        assert_eq!(next, Admit::Log { suppressed: 2 });
        assert_eq!(next.suffix(), " (2 similar lines suppressed)");
        assert_eq!(
            throttle.admit(t0 + Duration::from_secs(1)),
            Admit::Log { suppressed: 0 }
        );
    }
}
