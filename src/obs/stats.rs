//! Counters: what a server did, for the shutdown summary and the `--metrics` endpoint.
//!
//! Hot paths never touch the shared atomics per message: each connection (or datagram
//! loop) counts in a plain local [`Tally`] and adds it to the shared [`Stats`] when it ends
//! or every few thousand messages, so threads do not fight over one cache line.
//!
//! Readers (the summary, [`crate::obs::metrics`]) only ever see a [`Summary`] snapshot.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The totals of one server shard (one thread), shared by that shard's connection tasks.
///
/// Aligned to its own cache lines, so shards on different cores never write to the same
/// line; a [`StatsBoard`] adds the shards up when someone asks.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct Stats {
    /// Connections accepted and served (stream servers); denied and refused ones are
    /// counted apart.
    pub connections: AtomicU64,
    /// Connections open right now.
    pub active: AtomicU64,
    /// Messages (or datagrams) received.
    pub messages: AtomicU64,
    /// Replies (messages or datagrams) sent back.
    pub replies: AtomicU64,
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Connections that ended on an error (reset, timeout, oversized line…).
    pub errors: AtomicU64,
    /// Connections closed because their client stayed silent for `--idle-timeout`: the
    /// server doing its job, so apart from `errors`.
    pub idle_closed: AtomicU64,
    /// The same errors by kind, indexed by [`ErrorKind::index`]; count them with
    /// [`Stats::count_error`], which keeps `errors` in step.
    pub errors_by_kind: [AtomicU64; ErrorKind::ALL.len()],
    /// Clients (connections or datagrams) turned away by `--allow` / `--deny`.
    pub denied: AtomicU64,
    /// Connections (or datagrams) turned away because `--max-conns` was reached and
    /// `--max-conns-mode refuse` was chosen.
    pub refused: AtomicU64,
}

/// What went wrong with a connection (or a datagram's program), for `errors_total{kind}`.
///
/// Coarse on purpose: an operator alerting on a metric needs a handful of classes that
/// call for different actions, not every message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The client reset the connection or closed it mid-exchange.
    Reset,
    /// A time limit ran out: message, reply not read, TLS handshake, PROXY header. (A
    /// client closed for staying idle is not an error: see [`Stats::idle_closed`].)
    Timeout,
    /// The TLS handshake failed.
    Tls,
    /// A missing or malformed PROXY protocol header (`--proxy-protocol`).
    Proxy,
    /// A line longer than `--max-line`.
    TooLong,
    /// A chat member fell too far behind and was dropped.
    SlowReader,
    /// A program (`--exec`) could not start, failed (exited non-zero, killed by a
    /// signal), timed out or wrote too much.
    Program,
    /// Any other I/O failure.
    Io,
}

impl ErrorKind {
    /// Every kind, in the order of [`Stats::errors_by_kind`].
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::Reset,
        ErrorKind::Timeout,
        ErrorKind::Tls,
        ErrorKind::Proxy,
        ErrorKind::TooLong,
        ErrorKind::SlowReader,
        ErrorKind::Program,
        ErrorKind::Io,
    ];

    /// Position in [`ErrorKind::ALL`] and in the counter arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The `kind` label value in metrics.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::Reset => "reset",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Tls => "tls",
            ErrorKind::Proxy => "proxy_header",
            ErrorKind::TooLong => "line_too_long",
            ErrorKind::SlowReader => "slow_reader",
            ErrorKind::Program => "program",
            ErrorKind::Io => "io",
        }
    }

    /// The class of a typed error met on a connection.
    pub fn of(error: &crate::Error) -> ErrorKind {
        use crate::Error;
        match error {
            Error::Reset { .. } | Error::ClosedEarly { .. } => ErrorKind::Reset,
            Error::Timeout { .. } | Error::ClientTimeout { .. } | Error::ProxyHeaderLate { .. } => {
                ErrorKind::Timeout
            }
            Error::Tls { .. } => ErrorKind::Tls,
            Error::ProxyHeader { .. } => ErrorKind::Proxy,
            Error::LineTooLong { .. } => ErrorKind::TooLong,
            _ => ErrorKind::Io,
        }
    }
}

/// Errors by kind in a [`Summary`], indexed like [`ErrorKind::ALL`].
///
/// Serialised as an object keyed by [`ErrorKind::label`] (`{"reset":0,"timeout":2,…}`),
/// so a reader of `--log json` never depends on the order of the kinds.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCounts(pub [u64; ErrorKind::ALL.len()]);

impl ErrorCounts {
    /// The count of one kind.
    pub fn get(&self, kind: ErrorKind) -> u64 {
        self.0[kind.index()]
    }
}

impl serde::Serialize for ErrorCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(ErrorKind::ALL.len()))?;
        for kind in ErrorKind::ALL {
            map.serialize_entry(kind.label(), &self.get(kind))?;
        }
        map.end()
    }
}

/// Counts kept by one task without synchronisation, added to [`Stats`] in one go.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Messages handled.
    pub messages: u64,
    /// Replies sent (a message may get none: `--discard`, chat).
    pub replies: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

/// A point-in-time copy of [`Stats`], printed at shutdown.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Connections accepted.
    pub connections: u64,
    /// Connections open when the snapshot was taken.
    pub active: u64,
    /// Messages or datagrams handled.
    pub messages: u64,
    /// Replies sent.
    pub replies: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Connections that ended on an error.
    pub errors: u64,
    /// The same errors by kind.
    pub errors_by_kind: ErrorCounts,
    /// Connections closed for staying silent `--idle-timeout` (not errors).
    pub idle_closed: u64,
    /// Clients turned away by `--allow` / `--deny`.
    pub denied: u64,
    /// Clients turned away over `--max-conns`.
    pub refused: u64,
}

impl Stats {
    /// Adds a task's local counts to the totals and clears them.
    pub fn absorb(&self, tally: &mut Tally) {
        if tally.messages > 0 {
            self.messages.fetch_add(tally.messages, Ordering::Relaxed);
        }
        if tally.replies > 0 {
            self.replies.fetch_add(tally.replies, Ordering::Relaxed);
        }
        if tally.bytes_in > 0 {
            self.bytes_in.fetch_add(tally.bytes_in, Ordering::Relaxed);
        }
        if tally.bytes_out > 0 {
            self.bytes_out.fetch_add(tally.bytes_out, Ordering::Relaxed);
        }
        *tally = Tally::default();
    }

    /// Counts one connection (or datagram) that ended on an error of this kind.
    pub fn count_error(&self, kind: ErrorKind) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        self.errors_by_kind[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one connection closed for staying silent `--idle-timeout`.
    pub fn count_idle_close(&self) {
        self.idle_closed.fetch_add(1, Ordering::Relaxed);
    }

    /// The current totals.
    pub fn summary(&self) -> Summary {
        Summary {
            connections: self.connections.load(Ordering::Relaxed),
            active: self.active.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            replies: self.replies.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            errors_by_kind: ErrorCounts(
                self.errors_by_kind
                    .each_ref()
                    .map(|count| count.load(Ordering::Relaxed)),
            ),
            idle_closed: self.idle_closed.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// Every shard's [`Stats`] of one server, for the summary and for live readers.
///
/// Cheap to clone; readers (the summary, metrics) take the lock only to list the
/// shards, never on the hot path.
#[derive(Debug, Clone, Default)]
pub struct StatsBoard {
    shards: Arc<Mutex<Vec<Arc<Stats>>>>,
}

impl StatsBoard {
    /// Adds a shard and returns its counters.
    pub fn add_shard(&self) -> Arc<Stats> {
        let stats = Arc::new(Stats::default());
        if let Ok(mut shards) = self.shards.lock() {
            shards.push(Arc::clone(&stats));
        }
        stats
    }

    /// The totals over every shard.
    pub fn summary(&self) -> Summary {
        let mut total = Summary::default();
        if let Ok(shards) = self.shards.lock() {
            for shard in shards.iter() {
                total.add(&shard.summary());
            }
        }
        total
    }
}

impl Summary {
    /// Adds another shard's figures to these.
    pub fn add(&mut self, other: &Summary) {
        self.connections += other.connections;
        self.active += other.active;
        self.messages += other.messages;
        self.replies += other.replies;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.errors += other.errors;
        for (mine, theirs) in self.errors_by_kind.0.iter_mut().zip(other.errors_by_kind.0) {
            *mine += theirs;
        }
        self.idle_closed += other.idle_closed;
        self.denied += other.denied;
        self.refused += other.refused;
    }

    /// Connections closed because a time limit ran out: the idle ones, and the timeout
    /// errors (a message or handshake not completed, a reply not read).
    pub fn timed_out(&self) -> u64 {
        self.idle_closed + self.errors_by_kind.get(ErrorKind::Timeout)
    }
}

impl Tally {
    /// Flush to the shared totals every this many messages, so long-lived connections
    /// still show up in live figures.
    pub const FLUSH_EVERY: u64 = 4096;
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "summary: {}, {}, {} in, {} out, {}",
            counted(self.connections, "connection"),
            counted(self.messages, "message"),
            counted(self.bytes_in, "byte"),
            counted(self.bytes_out, "byte"),
            counted(self.errors, "error"),
        )?;
        if self.idle_closed > 0 {
            write!(f, ", {} timed out (idle)", self.idle_closed)?;
        }
        // Only servers with access rules or a refusing limit turn clients away; keep the
        // common line short.
        if self.denied > 0 {
            write!(f, ", {} denied", self.denied)?;
        }
        if self.refused > 0 {
            write!(f, ", {} refused", self.refused)?;
        }
        Ok(())
    }
}

/// `1 connection`, `2 connections`: a count with its noun in the right number (every
/// noun the summaries use takes a plain `s`).
pub fn counted(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorb_adds_and_clears() {
        let stats = Stats::default();
        let mut tally = Tally {
            messages: 2,
            replies: 2,
            bytes_in: 32,
            bytes_out: 16,
        };
        stats.absorb(&mut tally);
        stats.absorb(&mut Tally {
            messages: 1,
            replies: 0,
            bytes_in: 1,
            bytes_out: 1,
        });
        assert_eq!(tally, Tally::default());
        let summary = stats.summary();
        assert_eq!(
            (
                summary.messages,
                summary.replies,
                summary.bytes_in,
                summary.bytes_out
            ),
            (3, 2, 33, 17)
        );
        assert_eq!(
            summary.to_string(),
            "summary: 0 connections, 3 messages, 33 bytes in, 17 bytes out, 0 errors"
        );
        let board = StatsBoard::default();
        board.add_shard().absorb(&mut Tally {
            replies: 2,
            messages: 2,
            bytes_in: 3,
            bytes_out: 4,
        });
        board
            .add_shard()
            .connections
            .fetch_add(5, Ordering::Relaxed);
        let total = board.summary();
        assert_eq!(
            (total.connections, total.messages, total.bytes_out),
            (5, 2, 4)
        );
        stats.denied.fetch_add(2, Ordering::Relaxed);
        stats.refused.fetch_add(1, Ordering::Relaxed);
        assert!(
            stats
                .summary()
                .to_string()
                .ends_with("0 errors, 2 denied, 1 refused")
        );
    }

    #[test]
    fn one_of_a_thing_is_singular_and_idle_closes_are_not_errors() {
        let stats = Stats::default();
        stats.connections.fetch_add(1, Ordering::Relaxed);
        stats.absorb(&mut Tally {
            messages: 1,
            replies: 1,
            bytes_in: 1,
            bytes_out: 16,
        });
        stats.count_error(ErrorKind::Reset);
        stats.count_idle_close();
        stats.count_idle_close();
        let summary = stats.summary();
        assert_eq!(
            summary.to_string(),
            "summary: 1 connection, 1 message, 1 byte in, 16 bytes out, 1 error, \
             2 timed out (idle)"
        );
        assert_eq!((summary.errors, summary.timed_out()), (1, 2));
    }

    #[test]
    fn errors_by_kind_are_an_object_keyed_by_kind() -> Result<(), serde_json::Error> {
        let stats = Stats::default();
        stats.count_error(ErrorKind::TooLong);
        let value = serde_json::to_value(stats.summary())?;
        let by_kind = &value["errors_by_kind"];
        assert_eq!(by_kind["line_too_long"], 1, "{value}");
        assert_eq!(by_kind["reset"], 0, "{value}");
        assert_eq!(
            by_kind.as_object().map(serde_json::Map::len),
            Some(ErrorKind::ALL.len())
        );
        Ok(())
    }

    #[test]
    fn errors_by_kind_add_up_to_errors() {
        let stats = Stats::default();
        stats.count_error(ErrorKind::Timeout);
        stats.count_error(ErrorKind::Timeout);
        stats.count_error(ErrorKind::Reset);
        let summary = stats.summary();
        assert_eq!(summary.errors, 3);
        assert_eq!(summary.timed_out(), 2);
        assert_eq!(summary.errors_by_kind.get(ErrorKind::Reset), 1);
        assert_eq!(summary.errors_by_kind.0.iter().sum::<u64>(), summary.errors);
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind:?} is out of order in ALL");
        }
    }
}
