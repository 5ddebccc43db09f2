//! Idle detection for a conversation with two directions: both note when bytes move,
//! and a watcher completes once nothing has moved for the limit.
//!
//! One clock for both directions, because "idle" means no traffic either way: a download
//! that streams for an hour keeps an upload-silent connection alive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::coarse_monotonic_ms as now_ms;

/// When bytes last moved, in either direction. Shared by reference; atomics keep the
/// future `Send` without a lock.
///
/// It is read on a coarse clock ([`now_ms`]): a relay notes activity twice per message,
/// and the precise clock costs more than the rest of that note. The idle timeout only
/// needs milliseconds, and the coarse clock lags by a few at most.
#[derive(Debug)]
pub struct Activity {
    /// [`now_ms`] when bytes last moved.
    last_ms: AtomicU64,
}

impl Activity {
    /// Starts the clock: "now" counts as activity.
    pub fn new() -> Activity {
        Activity {
            last_ms: AtomicU64::new(now_ms()),
        }
    }

    /// Notes that bytes moved just now.
    pub fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// When bytes last moved.
    pub fn last(&self) -> Instant {
        let now = Instant::now();
        now.checked_sub(self.quiet()).unwrap_or(now)
    }

    /// How long nothing has moved.
    fn quiet(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    /// Completes once nothing has moved for `limit`; never completes without a limit.
    pub async fn quiet_for(&self, limit: Option<Duration>) {
        let Some(limit) = limit else {
            return std::future::pending().await;
        };
        loop {
            let quiet = self.quiet();
            if quiet >= limit {
                return;
            }
            // At least a millisecond, so a coarse clock a tick behind cannot spin.
            tokio::time::sleep((limit - quiet).max(Duration::from_millis(1))).await;
        }
    }
}

impl Default for Activity {
    fn default() -> Activity {
        Activity::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real time: the coarse clock does not follow tokio's paused clock. The bound
    /// allows the coarse clock's tick (at most 10 ms) by which a touch can be dated early.
    #[tokio::test]
    async fn quiet_for_waits_for_silence_since_the_last_touch() {
        let activity = Activity::new();
        tokio::time::sleep(Duration::from_millis(60)).await;
        activity.touch();
        let touched = std::time::Instant::now();
        activity.quiet_for(Some(Duration::from_millis(200))).await;
        assert!(touched.elapsed() >= Duration::from_millis(190));
        assert!(activity.last() <= Instant::now());
    }
}
