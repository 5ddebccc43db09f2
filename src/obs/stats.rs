//! Counters: what a server did, for the shutdown summary (and later, metrics).
//!
//! Hot paths never touch the shared atomics per message: each connection (or datagram
//! loop) counts in a plain local [`Tally`] and adds it to the shared [`Stats`] when it ends
//! or every few thousand messages, so threads do not fight over one cache line.

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
    /// Bytes read from clients.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients.
    pub bytes_out: AtomicU64,
    /// Connections that ended on an error (reset, timeout, oversized line…).
    pub errors: AtomicU64,
    /// Clients (connections or datagrams) turned away by `--allow` / `--deny`.
    pub denied: AtomicU64,
    /// Connections (or datagrams) turned away because `--max-conns` was reached and
    /// `--max-conns-mode refuse` was chosen.
    pub refused: AtomicU64,
}

/// Counts kept by one task without synchronisation, added to [`Stats`] in one go.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Messages handled.
    pub messages: u64,
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
    /// Messages or datagrams handled.
    pub messages: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Connections that ended on an error.
    pub errors: u64,
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
        if tally.bytes_in > 0 {
            self.bytes_in.fetch_add(tally.bytes_in, Ordering::Relaxed);
        }
        if tally.bytes_out > 0 {
            self.bytes_out.fetch_add(tally.bytes_out, Ordering::Relaxed);
        }
        *tally = Tally::default();
    }

    /// The current totals.
    pub fn summary(&self) -> Summary {
        Summary {
            connections: self.connections.load(Ordering::Relaxed),
            messages: self.messages.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
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
        self.messages += other.messages;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.errors += other.errors;
        self.denied += other.denied;
        self.refused += other.refused;
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
            "summary: {} connections, {} messages, {} bytes in, {} bytes out, {} errors",
            self.connections, self.messages, self.bytes_in, self.bytes_out, self.errors
        )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorb_adds_and_clears() {
        let stats = Stats::default();
        let mut tally = Tally {
            messages: 2,
            bytes_in: 32,
            bytes_out: 16,
        };
        stats.absorb(&mut tally);
        stats.absorb(&mut Tally {
            messages: 1,
            bytes_in: 1,
            bytes_out: 1,
        });
        assert_eq!(tally, Tally::default());
        let summary = stats.summary();
        assert_eq!(
            (summary.messages, summary.bytes_in, summary.bytes_out),
            (3, 33, 17)
        );
        assert_eq!(
            summary.to_string(),
            "summary: 0 connections, 3 messages, 33 bytes in, 17 bytes out, 0 errors"
        );
        let board = StatsBoard::default();
        board.add_shard().absorb(&mut Tally {
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
}
