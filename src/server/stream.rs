//! The accept loop for stream endpoints: take a slot, accept, pass the gate, spawn, repeat.
//!
//! With `--max-conns-mode wait` (the default) the slot is taken *before* `accept` (as
//! mini-redis does): at the connection limit the loop stops accepting and the kernel
//! backlog holds further clients, instead of accepting sockets we cannot serve. With
//! `refuse`, every client is accepted and one that finds no free slot is closed at once.
//! A client the access rules deny is closed at once in either mode.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Shared;
use super::conn::{self, FirstTurn, Prelude};
use super::session::serve_accepted;
use crate::access::gate::{self, Gate};
use crate::transport::StreamListener;

/// Longest pause after a resource error on `accept` (EMFILE and friends).
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// First pause after a resource error on `accept`.
const MIN_BACKOFF: Duration = Duration::from_millis(5);

/// Accepts connections until shutdown, spawning one tracked task per connection.
pub(crate) async fn accept_loop(listener: StreamListener, shared: &Arc<Shared>) {
    let slots = shared.slots.clone();
    let over_limit = shared.options.limits.over_limit;
    let mut gate = Gate::default();
    let mut ids = shared.ids.iter();
    let mut backoff = MIN_BACKOFF;
    let serve_now = conn::can_serve_now(shared);
    let mut scratch = Vec::new();
    let stop = shared.shutdown.cancelled();
    tokio::pin!(stop);
    loop {
        let Some(reserved) = gate::reserve_slot(over_limit, slots.as_ref(), &**shared).await else {
            return;
        };
        let accepted = tokio::select! {
            biased;
            () = stop.as_mut() => return,
            accepted = listener.accept_std() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = MIN_BACKOFF;
                let Some(slot) = gate.let_in(&peer, reserved, slots.as_ref(), &**shared) else {
                    // Denied, or over the limit in refuse mode: closed at once (dropping
                    // the stream sends our FIN).
                    continue;
                };
                shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                let id = ids.next().unwrap_or_default();
                let prelude = if serve_now {
                    match conn::serve_now(&stream, &peer, id, shared, &mut scratch) {
                        // Answered and closed on the spot: no task, no reactor.
                        FirstTurn::Done => continue,
                        FirstTurn::Continue(prelude) => prelude,
                    }
                } else {
                    Prelude::default()
                };
                let stream = match stream.into_tokio() {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!(conn = id, %peer, "cannot watch the connection: {e}");
                        continue;
                    }
                };
                // PROXY header, late access check, TLS, --hex and the behaviour: all in
                // the connection's own task (and span), so accepting never waits.
                let task = serve_accepted(stream, peer, id, Arc::clone(shared), slot, prelude);
                shared.shutdown.spawn(task);
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
