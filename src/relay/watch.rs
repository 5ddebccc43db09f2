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
    /// The task running [`work_or_watch`].
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

/// Runs `work` until it completes (`Ok`) or until `watch` does first (`Err`); `watch`
/// is polled once at the start and then only when it has been woken.
///
/// Both are taken pinned where the caller holds them, so a large `work` (a connection's
/// whole copy) is not moved into a second future.
pub(crate) async fn work_or_watch<W, G>(
    mut work: Pin<&mut W>,
    mut watch: Pin<&mut G>,
) -> Result<W::Output, G::Output>
where
    W: Future,
    G: Future,
{
    let watchers = Arc::new(WatchersWaker {
        woken: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let watchers_waker = Waker::from(Arc::clone(&watchers));
    std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = work.as_mut().poll(cx) {
            return Poll::Ready(Ok(done));
        }
        // Registered before the flag is read, so a wake-up between the two is not lost.
        watchers.task.register(cx.waker());
        if watchers.woken.swap(false, Ordering::AcqRel)
            && let Poll::Ready(seen) = watch
                .as_mut()
                .poll(&mut Context::from_waker(&watchers_waker))
        {
            return Poll::Ready(Err(seen));
        }
        Poll::Pending
    })
    .await
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
