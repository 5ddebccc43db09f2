//! Limits: how many clients, and how long each may stay silent or take over one message.
//!
//! Plain data, decided by the CLI; enforced by the accept loop (`max_conns`,
//! `over_limit`) and by each connection (`idle_timeout`, `message_timeout`).

use std::time::Duration;

pub use crate::access::OverLimit;

/// Bounds that keep one client, or many, from holding the server's resources forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most connections served at once (for `--exec` on datagrams: programs running at
    /// once). `None`: no limit beyond file descriptors.
    pub max_conns: Option<usize>,
    /// What happens to a client that arrives when `max_conns` are being served.
    pub over_limit: OverLimit,
    /// Close a connection after this long with no bytes in either direction, and give up
    /// on a reply the client does not read within it. `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Once the first byte of a message has arrived, the rest must arrive within this
    /// (slowloris defence for line framing). `None`: never.
    pub message_timeout: Option<Duration>,
    /// How long shutdown waits for in-flight exchanges before closing them.
    pub grace: Duration,
}

impl Limits {
    /// Default idle timeout: long enough for a person at a keyboard, short enough that
    /// abandoned connections do not pile up.
    pub const DEFAULT_IDLE: Duration = Duration::from_secs(300);
    /// Default time allowed to finish a message once it has started.
    pub const DEFAULT_MESSAGE: Duration = Duration::from_secs(30);
    /// Default shutdown grace period.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_conns: None,
            over_limit: OverLimit::Wait,
            idle_timeout: Some(Limits::DEFAULT_IDLE),
            message_timeout: Some(Limits::DEFAULT_MESSAGE),
            grace: Limits::DEFAULT_GRACE,
        }
    }
}
