//! The accept loop for stream endpoints: take a permit, accept, spawn, repeat.
//!
//! The permit is taken *before* `accept` (as mini-redis does): at the connection limit the
//! loop stops accepting and the kernel backlog holds further clients, instead of accepting
//! sockets we cannot serve.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::Shared;
use super::conn::serve_connection;
use crate::transport::StreamListener;

/// Longest pause after a resource error on `accept` (EMFILE and friends).
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// First pause after a resource error on `accept`.
const MIN_BACKOFF: Duration = Duration::from_millis(5);

/// Accepts connections until shutdown, spawning one tracked task per connection.
pub(crate) async fn accept_loop(listener: StreamListener, shared: &Arc<Shared>) {
    let permits = shared
        .options
        .limits
        .max_conns
        .map(|n| Arc::new(Semaphore::new(n)));
    let mut next_id: u64 = 0;
    let mut backoff = MIN_BACKOFF;
    loop {
        let Some(permit) = acquire(permits.as_ref(), shared).await else {
            return;
        };
        let accepted = tokio::select! {
            biased;
            () = shared.shutdown.triggered() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = MIN_BACKOFF;
                next_id += 1;
                shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                let task_shared = Arc::clone(shared);
                let id = next_id;
                shared.shutdown.spawn(async move {
                    // TLS handshake and --hex tap, in this task so accepting never waits.
                    match task_shared
                        .options
                        .layers
                        .wrap_accepted(stream, &peer, id)
                        .await
                    {
                        Ok(stream) => serve_connection(stream, peer, id, &task_shared).await,
                        Err(e) => {
                            task_shared.stats.errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(conn = id, %peer, "{e}");
                        }
                    }
                    drop(permit);
                });
            }
            Err(e) if is_per_connection(&e) => {
                tracing::debug!("a connection failed before it was accepted: {e}");
            }
            Err(e) => {
                tracing::warn!(
                    "accept failed: {e}; pausing {}ms and serving existing clients{}",
                    backoff.as_millis(),
                    resource_hint(&e)
                );
                tokio::select! {
                    () = shared.shutdown.triggered() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Waits for a connection slot, or for shutdown (`None`). Without a limit, never waits.
async fn acquire(
    permits: Option<&Arc<Semaphore>>,
    shared: &Shared,
) -> Option<Option<OwnedSemaphorePermit>> {
    let Some(permits) = permits else {
        return Some(None);
    };
    tokio::select! {
        biased;
        () = shared.shutdown.triggered() => None,
        // The semaphore is never closed, so acquiring only fails if it were; treat that as
        // shutdown rather than panic.
        permit = Arc::clone(permits).acquire_owned() => permit.ok().map(Some),
    }
}

/// Errors that concern one incoming connection, not the listener: retry at once.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || e.raw_os_error() == Some(libc::EPROTO)
}

/// A remedy for the resource errors `accept` reports.
fn resource_hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EMFILE) => " (out of file descriptors: raise `ulimit -n` or set --max-conns)",
        Some(libc::ENFILE) => " (the system is out of file descriptors)",
        Some(libc::ENOBUFS) | Some(libc::ENOMEM) => " (the kernel is out of memory for sockets)",
        _ => "",
    }
}
