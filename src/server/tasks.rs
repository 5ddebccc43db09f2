//! The accept loop for stream endpoints whose connections get a task each: take a slot,
//! accept, pass the gate, spawn the connection's task, repeat. (The per-message
//! modes run on a thread of their own instead: [`super::lane`].)
//!
//! With `--max-conns-mode wait` (the default) the slot is taken *before* `accept` (as
//! mini-redis does): at the connection limit the loop stops accepting and the kernel
//! backlog holds further clients, instead of accepting sockets we cannot serve. With
//! `refuse`, every client is accepted and one that finds no free slot is closed at once.
//! A client the access rules deny is closed at once in either mode.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;

use super::accept::{Backoff, count_connection, is_per_connection};
use super::session::serve_accepted;
use super::{OverLimit, Shared};
use crate::access::gate::{self, Gate, Slot};
use crate::endpoint::PeerAddr;
use crate::transport::{StdStream, StreamListener};

/// What the accept loop waits for, whichever comes first.
enum Wake {
    /// Shutdown was asked for.
    Stop,
    /// A connection was accepted (with its slot reserved in wait mode), or accept failed.
    Accepted(Option<Slot>, io::Result<(StdStream, PeerAddr)>),
}

/// Accepts connections until shutdown: each one is served from its first byte in a
/// tracked task of its own.
pub(crate) async fn accept_loop(listener: StreamListener, shared: &Arc<Shared>) {
    let slots = shared.slots.clone();
    let over_limit = shared.options.limits.over_limit;
    let mut gate = Gate::default();
    let mut ids = shared.ids.iter();
    let mut backoff = Backoff::default();
    let stop = shared.shutdown.cancelled();
    tokio::pin!(stop);
    let mut stop_watched = false;
    let mut admission = Admission::new(Duration::ZERO, over_limit, slots.as_ref(), shared);
    loop {
        // Polled by hand rather than with `select!`: shutdown is registered for once and
        // then only checked, and the listener keeps its registration between rounds, so
        // a round costs little more than the accept itself.
        let wake = std::future::poll_fn(|cx| {
            if stop_watched {
                if shared.shutdown.is_triggered() {
                    return Poll::Ready(Wake::Stop);
                }
            } else {
                stop_watched = true;
                if stop.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Wake::Stop);
                }
            }
            match admission.poll_ticket(cx) {
                Poll::Ready(None) => return Poll::Ready(Wake::Stop),
                Poll::Ready(Some(())) => {
                    if let Poll::Ready(accepted) = listener.poll_accept_std(cx) {
                        return Poll::Ready(Wake::Accepted(admission.take_slot(), accepted));
                    }
                }
                Poll::Pending => {}
            }
            Poll::Pending
        })
        .await;
        let (reserved, accepted) = match wake {
            Wake::Stop => break,
            Wake::Accepted(reserved, accepted) => (reserved, accepted),
        };
        let pause = match accepted {
            Ok((stream, peer)) => {
                backoff.reset();
                if let Some(slot) =
                    gate.let_in(&peer, reserved, slots.as_ref(), &shared.gate_config())
                {
                    take_connection(stream, peer, slot, shared, &mut ids);
                }
                // Otherwise denied, or over the limit in refuse mode: closed at once
                // (dropping the stream sends our FIN).
                Duration::ZERO
            }
            Err(e) if is_per_connection(&e) => {
                tracing::debug!("a connection failed before it was accepted: {e}");
                Duration::ZERO
            }
            Err(e) => backoff.after(&e),
        };
        admission = Admission::new(pause, over_limit, slots.as_ref(), shared);
    }
}

/// What must happen before the next `accept`: usually nothing (and then it costs
/// nothing); after a resource error, a back-off pause; with `--max-conns` in wait mode,
/// a reserved slot.
enum Admission<'a> {
    /// Accept now, with this slot (reserved in wait mode; `None` otherwise).
    Open(Option<Slot>),
    /// Pausing or waiting for a slot; the future gives `None` if shutdown came first.
    Waiting(Pin<Box<dyn Future<Output = Option<Option<Slot>>> + Send + 'a>>),
}

impl<'a> Admission<'a> {
    fn new(
        pause: Duration,
        over_limit: OverLimit,
        slots: Option<&'a Arc<Semaphore>>,
        shared: &'a Shared,
    ) -> Admission<'a> {
        let reserves = over_limit == OverLimit::Wait && slots.is_some();
        if pause.is_zero() && !reserves {
            return Admission::Open(None);
        }
        Admission::Waiting(Box::pin(async move {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            gate::reserve_slot(over_limit, slots, &shared.gate_config()).await
        }))
    }

    /// Ready when accepting may go ahead; `None` on shutdown.
    fn poll_ticket(&mut self, cx: &mut Context<'_>) -> Poll<Option<()>> {
        if let Admission::Waiting(waiting) = self {
            match std::task::ready!(waiting.as_mut().poll(cx)) {
                Some(reserved) => *self = Admission::Open(reserved),
                None => return Poll::Ready(None),
            }
        }
        Poll::Ready(Some(()))
    }

    /// The slot reserved for the connection just accepted.
    fn take_slot(&mut self) -> Option<Slot> {
        match self {
            Admission::Open(reserved) => reserved.take(),
            Admission::Waiting(_) => None,
        }
    }
}

/// An admitted connection: handed to a task of its own.
fn take_connection(
    stream: StdStream,
    peer: PeerAddr,
    slot: Slot,
    shared: &Arc<Shared>,
    ids: &mut impl Iterator<Item = u64>,
) {
    let id = count_connection(shared, ids);
    let stream = match stream.into_tokio() {
        Ok(stream) => stream,
        Err(e) => {
            crate::obs::span::in_connection_span(id, &peer, || {
                tracing::warn!("cannot watch the connection: {e}");
            });
            return;
        }
    };
    // PROXY header, late access check, TLS, --hex and the behaviour: all in the
    // connection's own task (and span), so accepting never waits.
    let task = serve_accepted(stream, peer, id, Arc::clone(shared), slot);
    shared.shutdown.spawn(task);
}
