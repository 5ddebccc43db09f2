//! Work raced against watchers that rarely fire (the idle timeout, the end of the
//! shutdown grace period), polling the watchers only when they have been woken.
//!
//! `select!` polls every branch on every wake-up, so a relayed connection would check its
//! idle timer and the shutdown signal again for each message it carries. Here the work is
//! polled on every wake-up and the watchers only after a wake-up of their own, which
//! makes a message cost the copy alone.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// The waker the watchers get: it notes that they have something to say and wakes the
/// task.
struct WatchersWaker {
    /// Set by a wake-up of the watchers, cleared when they are polled.
    woken: AtomicBool,
    /// The task running the work.
    task: AtomicWaker,
}

impl Wake for WatchersWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// Watchers that several pieces of work in turn are raced against (a datagram session
/// receives one reply after another under the same idle timer and shutdown signal); the
/// watchers stay registered between them.
pub(crate) struct Watchers<'a, G: Future> {
    /// What is watched for, pinned where the caller holds it.
    watch: Pin<&'a mut G>,
    /// Whether the watchers were woken, and the task to wake.
    flag: Arc<WatchersWaker>,
    /// The waker the watchers are polled with: `flag`'s.
    waker: Waker,
}

impl<'a, G: Future> Watchers<'a, G> {
    /// Watchers over `watch`, polled at the first [`Watchers::run`].
    pub(crate) fn new(watch: Pin<&'a mut G>) -> Watchers<'a, G> {
        let flag = Arc::new(WatchersWaker {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(Arc::clone(&flag));
        Watchers { watch, flag, waker }
    }

    /// Runs `work` until it completes (`Ok`) or until the watchers do first (`Err`; do
    /// not run anything under them after that). The watchers are polled only when they
    /// have been woken.
    pub(crate) async fn run<W: Future>(
        &mut self,
        mut work: Pin<&mut W>,
    ) -> Result<W::Output, G::Output> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = work.as_mut().poll(cx) {
                return Poll::Ready(Ok(done));
            }
            // Registered before the flag is read, so a wake-up between the two is not lost.
            self.flag.task.register(cx.waker());
            if self.flag.woken.swap(false, Ordering::AcqRel)
                && let Poll::Ready(seen) = self
                    .watch
                    .as_mut()
                    .poll(&mut Context::from_waker(&self.waker))
            {
                return Poll::Ready(Err(seen));
            }
            Poll::Pending
        })
        .await
    }
}

/// Runs `work` until it completes (`Ok`) or until `watch` does first (`Err`); `watch`
/// is polled once at the start and then only when it has been woken.
///
/// Both are taken pinned where the caller holds them, so a large `work` (a connection's
/// whole copy) is not moved into a second future.
pub(crate) async fn work_or_watch<W, G>(
    work: Pin<&mut W>,
    watch: Pin<&mut G>,
) -> Result<W::Output, G::Output>
where
    W: Future,
    G: Future,
{
    Watchers::new(watch).run(work).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::time::Duration;

    #[tokio::test]
    async fn the_watcher_ends_work_that_never_completes() {
        let ended = work_or_watch(
            pin!(std::future::pending::<()>()),
            pin!(tokio::time::sleep(Duration::from_millis(10))),
        )
        .await;
        assert!(ended.is_err(), "the watcher's wake-up was lost");
    }

    #[tokio::test]
    async fn work_that_completes_wins() {
        let (tx, rx) = tokio::sync::oneshot::channel::<u8>();
        let work = async move { rx.await.unwrap_or_default() };
        let sending = tokio::spawn(async move {
            tokio::task::yield_now().await;
            let _ = tx.send(7);
        });
        let ended = work_or_watch(pin!(work), pin!(std::future::pending::<()>())).await;
        assert_eq!(ended, Ok(7));
        let _ = sending.await;
    }
}
