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

/// What one signal asks of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalMeaning {
    /// Start the graceful stop (bounded by `--grace`), or keep going with it.
    Stop,
    /// Exit at once with this status, without waiting for the grace period.
    ExitNow(u8),
}

/// The signals a server answers, and what each one means given what came before.
///
/// SIGTERM and SIGHUP mean "stop gracefully", however often they come: coreutils
/// `timeout` and systemd's `KillMode=control-group` send SIGTERM to the process and again
/// to its process group, so one stop request often arrives twice. Only a person repeats
/// Ctrl-C: a SIGINT while the stop is under way, or SIGQUIT (Ctrl-\\) at any time, means
/// "now", with the shell's status for that signal (130, 131).
///
/// SIGHUP drains like SIGTERM rather than reloading: sockit has no configuration file to
/// re-read, and a hang-up (the terminal closed) means nobody is there any more; its
/// default action would kill the process at once and cut in-flight replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM (`kill`, `timeout`, systemd).
    Terminate,
    /// SIGHUP (the terminal closed).
    HangUp,
    /// SIGQUIT (Ctrl-\\).
    Quit,
}

impl StopSignal {
    /// The signal's usual name, for the log line.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
            StopSignal::HangUp => "SIGHUP",
            StopSignal::Quit => "SIGQUIT",
        }
    }

    /// What this signal means when `stopping` says whether a stop is already under way.
    pub fn meaning(self, stopping: bool) -> SignalMeaning {
        match self {
            StopSignal::Quit => SignalMeaning::ExitNow(128 + 3),
            StopSignal::Interrupt if stopping => SignalMeaning::ExitNow(128 + 2),
            StopSignal::Interrupt | StopSignal::Terminate | StopSignal::HangUp => {
                SignalMeaning::Stop
            }
        }
    }
}

/// Turns SIGINT, SIGTERM and SIGHUP into [`Shutdown::trigger`], and a second SIGINT or
/// any SIGQUIT into an immediate exit (see [`StopSignal`]).
///
/// `on_stop` runs once, when the first stop signal arrives and before shutdown is
/// triggered: the CLI tells systemd there that the service is stopping.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn install_signal_handlers(shutdown: Shutdown, on_stop: fn()) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    let mut quit = signal(SignalKind::quit())?;
    tokio::spawn(async move {
        let mut stopping = false;
        loop {
            let received = tokio::select! {
                _ = interrupt.recv() => StopSignal::Interrupt,
                _ = terminate.recv() => StopSignal::Terminate,
                _ = hangup.recv() => StopSignal::HangUp,
                _ = quit.recv() => StopSignal::Quit,
            };
            let name = received.name();
            match received.meaning(stopping) {
                SignalMeaning::Stop if stopping => {
                    tracing::debug!("{name} received: already stopping");
                }
                SignalMeaning::Stop => {
                    stopping = true;
                    tracing::info!(
                        "{name} received: stopping (Ctrl-C again or SIGQUIT to exit at once)"
                    );
                    on_stop();
                    shutdown.trigger();
                }
                SignalMeaning::ExitNow(status) => {
                    tracing::warn!("{name} received: exiting now");
                    std::process::exit(i32::from(status));
                }
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

    #[test]
    fn only_a_second_interrupt_or_a_quit_exits_at_once() {
        use SignalMeaning::{ExitNow, Stop};
        for repeated in [StopSignal::Terminate, StopSignal::HangUp] {
            assert_eq!(repeated.meaning(false), Stop);
            assert_eq!(repeated.meaning(true), Stop, "{repeated:?} again");
        }
        assert_eq!(StopSignal::Interrupt.meaning(false), Stop);
        assert_eq!(StopSignal::Interrupt.meaning(true), ExitNow(130));
        assert_eq!(StopSignal::Quit.meaning(false), ExitNow(131));
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
