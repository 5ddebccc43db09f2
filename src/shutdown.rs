//! Graceful shutdown: one signal tells every task to stop, and the server waits (a bounded
//! time) for them to finish.
//!
//! This is tokio-util's documented pairing: a [`CancellationToken`] broadcasts "stop", and a
//! [`TaskTracker`] knows when every spawned connection task is done. Connection handlers
//! stop at a message boundary, so a reply that is being written is finished first.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The handle every server task holds: "should I stop?" and "track me".
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tracker: TaskTracker,
}

/// How draining ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every task finished within the grace period.
    Complete,
    /// The grace period ran out with this many tasks still running; they are dropped.
    TimedOut {
        /// Tasks still running.
        remaining: usize,
    },
}

impl Shutdown {
    /// A fresh, untriggered shutdown.
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks every task to stop. Idempotent.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Whether shutdown has been asked for.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when shutdown is asked for; use it as a `select!` arm.
    pub async fn triggered(&self) {
        self.token.cancelled().await;
    }

    /// A future that completes when shutdown is asked for, with a nameable type so a
    /// connection can keep it pinned for its whole life (registered once, not per read).
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.token.cancelled()
    }

    /// The same shutdown for one server thread: a child token (so that thread's
    /// connections wait on their own list, not on one list shared by every thread) and
    /// the same task tracker.
    pub fn for_shard(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
            tracker: self.tracker.clone(),
        }
    }

    /// A child token, cancelled with this one (for sub-systems that stop on their own too).
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Spawns a task that shutdown will wait for.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// How many tracked tasks are running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }

    /// Waits for every tracked task, at most `grace`.
    pub async fn drain(&self, grace: Duration) -> Drained {
        self.tracker.close();
        match tokio::time::timeout(grace, self.tracker.wait()).await {
            Ok(()) => Drained::Complete,
            Err(_) => Drained::TimedOut {
                remaining: self.tracker.len(),
            },
        }
    }
}

/// Turns SIGINT, SIGTERM and SIGHUP into [`Shutdown::trigger`]; a second signal (of any
/// of them) exits at once.
///
/// The second signal is the user saying "now": exit code 130 (interrupted), without
/// waiting for the grace period.
///
/// SIGHUP drains like SIGTERM rather than reloading: sockit has no configuration file to
/// re-read, and a hang-up (the terminal closed) means nobody is there any more; its
/// default action would kill the process at once and cut in-flight replies.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn install_signal_handlers(shutdown: Shutdown) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
                _ = hangup.recv() => "SIGHUP",
            };
            seen += 1;
            if seen == 1 {
                tracing::info!("{name} received: stopping (send it again to exit at once)");
                crate::transport::activation::notify_stopping();
                shutdown.trigger();
            } else {
                tracing::warn!("{name} received again: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn drain_waits_for_tasks_and_reports_stragglers() {
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        shutdown.spawn(async move { s.triggered().await });
        shutdown.spawn(std::future::pending::<()>());
        shutdown.trigger();
        assert!(shutdown.is_triggered());
        let outcome = shutdown.drain(Duration::from_millis(50)).await;
        assert_eq!(outcome, Drained::TimedOut { remaining: 1 });
    }

    #[tokio::test]
    async fn drain_completes_when_tasks_finish() {
        let shutdown = Shutdown::new();
        let s = shutdown.clone();
        shutdown.spawn(async move { s.triggered().await });
        shutdown.trigger();
        assert_eq!(
            shutdown.drain(Duration::from_secs(5)).await,
            Drained::Complete
        );
    }
}
