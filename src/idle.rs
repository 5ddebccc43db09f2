//! Idle detection for a conversation with two directions: both note when bytes move,
//! and a watcher completes once nothing has moved for the limit.
//!
//! One clock for both directions, because "idle" means no traffic either way: a download
//! that streams for an hour keeps an upload-silent connection alive.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// When bytes last moved, in either direction. Shared by reference; atomics keep the
/// future `Send` without a lock.
#[derive(Debug)]
pub struct Activity {
    /// The reference point for `last_ms`.
    start: Instant,
    /// Milliseconds after `start` when bytes last moved.
    last_ms: AtomicU64,
}

impl Activity {
    /// Starts the clock: "now" counts as activity.
    pub fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// Notes that bytes moved just now.
    pub fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// When bytes last moved.
    pub fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Completes once nothing has moved for `limit`; never completes without a limit.
    pub async fn quiet_for(&self, limit: Option<Duration>) {
        let Some(limit) = limit else {
            return std::future::pending().await;
        };
        loop {
            let deadline = self.last() + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
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

    #[tokio::test]
    async fn quiet_for_waits_for_silence_since_the_last_touch() {
        tokio::time::pause();
        let activity = Activity::new();
        let start = Instant::now();
        tokio::time::advance(Duration::from_millis(600)).await;
        activity.touch();
        activity.quiet_for(Some(Duration::from_secs(1))).await;
        assert!(start.elapsed() >= Duration::from_millis(1600));
    }
}
