//! What both stream accept loops (the lane's acceptor and the task engine's loop) do
//! alike: count a connection and give it its id. How they handle `accept`'s errors
//! ([`Backoff`], [`is_per_connection`]) is shared with the relay, in transport.

use std::sync::atomic::Ordering;

use super::Shared;

pub(crate) use crate::transport::{Backoff, is_per_connection};

/// A connection's start, the same in both accept loops: counted and given its id.
pub(crate) fn count_connection(shared: &Shared, ids: &mut impl Iterator<Item = u64>) -> u64 {
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    ids.next().unwrap_or_default()
}
