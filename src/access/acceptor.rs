//! The accept loop that `serve` (a task per connection), `relay` and `proxy` share: take
//! a slot, accept, pass the gate, count the connection, hand it to the caller's handler,
//! repeat.
//!
//! With `--max-conns-mode wait` (the default) the slot is taken *before* `accept` (as
//! mini-redis does): at the connection limit the loop stops accepting and the kernel
//! backlog holds further clients, instead of accepting sockets nobody can serve. With
//! `refuse`, every client is accepted and one that finds no free slot is closed at once.
//! A client the access rules deny is closed at once in either mode. A failed incoming
//! connection is skipped; a resource error on `accept` (out of descriptors) pauses
//! accepting ([`Backoff`]) while the clients already in are served.
//!
//! What happens to an admitted connection is the caller's: the handler gets it with its
//! slot and its id, and usually spawns a task for it. (The fast lane accepts in its own
//! epoll loop instead; `server/mod.rs` says why.)

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::Instrument;

use super::OverLimit;
use super::gate::{self, Gate, GateConfig, Slot};
use crate::endpoint::PeerAddr;
use crate::obs::span::connection_span;
use crate::shutdown::Shutdown;
use crate::transport::{Backoff, StdStream, Stream, StreamListener, is_per_connection};

/// A connection the gate let in, for the handler.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// The connection, not yet registered with a runtime (the handler registers it where
    /// it serves it).
    pub stream: StdStream,
    /// Who connected (the socket's peer; with `--proxy-protocol`, the load balancer).
    pub peer: PeerAddr,
    /// Its `--max-conns` permit and per-source share, held while it is served.
    pub slot: Slot,
    /// Its connection id, for its span and events.
    pub id: u64,
}

impl Admitted {
    /// Serves the connection in a task `shutdown` tracks, inside the connection's span:
    /// the stream is registered with the runtime, `serve` runs on it, and the slot is held
    /// until `serve` ends. A stream the runtime cannot watch is logged and dropped, and the
    /// accept loop goes on. The relay and the proxy hand their clients over this way.
    pub fn serve_in_task<F, Fut>(self, shutdown: &Shutdown, serve: F)
    where
        F: FnOnce(Stream, PeerAddr, u64) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Admitted {
            stream,
            peer,
            slot,
            id,
        } = self;
        let span = connection_span(id);
        let stream = match stream.into_tokio() {
            Ok(stream) => stream,
            Err(e) => {
                span.in_scope(|| tracing::warn!("cannot watch the connection: {e}"));
                return;
            }
        };
        let served = serve(stream, peer, id);
        let task = async move {
            served.await;
            drop(slot);
        };
        // Boxed: a connection's future is large, and the runtime moves a task's future
        // several times between spawn and completion; a box is moved in one word.
        shutdown.spawn(Box::pin(task.instrument(span)));
    }
}

/// One listener's accept loop: what it accepts on, how it admits, where it counts.
pub(crate) struct Acceptor<'a> {
    /// The listening socket.
    pub listener: &'a StreamListener,
    /// The rules and limits the gate applies, and the shutdown that ends the loop.
    pub gate: GateConfig<'a>,
    /// `--max-conns`: the semaphore shared by every accept loop of the listener.
    pub slots: Option<&'a Arc<Semaphore>>,
    /// What a client over `--max-conns` gets.
    pub over_limit: OverLimit,
    /// Counter of connections admitted (the `accepted` total of the summary and metrics).
    pub connections: &'a AtomicU64,
}

/// What the accept loop waits for, whichever comes first.
enum Wake {
    /// Shutdown was asked for.
    Stop,
    /// A connection was accepted (with its slot reserved in wait mode), or accept failed.
    Accepted(Option<Slot>, io::Result<(StdStream, PeerAddr)>),
}

impl Acceptor<'_> {
    /// Accepts connections until shutdown, each admitted one counted, given the next of
    /// `ids` and passed to `handle`.
    pub(crate) async fn run(
        self,
        mut ids: impl Iterator<Item = u64>,
        mut handle: impl FnMut(Admitted),
    ) {
        let mut gate = Gate::default();
        let mut backoff = Backoff::default();
        let shutdown = self.gate.shutdown;
        let stop = shutdown.cancelled();
        tokio::pin!(stop);
        let mut stop_watched = false;
        let mut admission = self.admission(Duration::ZERO);
        loop {
            // Polled by hand rather than with `select!`: shutdown is registered for once
            // and then only checked, and the listener keeps its registration between
            // rounds, so a round costs little more than the accept itself.
            let wake = std::future::poll_fn(|cx| {
                if stop_watched {
                    if shutdown.is_triggered() {
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
                        if let Poll::Ready(accepted) = self.listener.poll_accept_std(cx) {
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
                    if let Some(slot) = gate.let_in(&peer, reserved, self.slots, &self.gate) {
                        self.connections.fetch_add(1, Ordering::Relaxed);
                        let id = ids.next().unwrap_or_default();
                        handle(Admitted {
                            stream,
                            peer,
                            slot,
                            id,
                        });
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
            admission = self.admission(pause);
        }
    }

    /// What must happen before the next `accept`, after a pause of `pause`.
    fn admission(&self, pause: Duration) -> Admission<'_> {
        Admission::new(pause, self.over_limit, self.slots, self.gate)
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
        config: GateConfig<'a>,
    ) -> Admission<'a> {
        let reserves = over_limit == OverLimit::Wait && slots.is_some();
        if pause.is_zero() && !reserves {
            return Admission::Open(None);
        }
        Admission::Waiting(Box::pin(async move {
            if !pause.is_zero() {
                tokio::select! {
                    biased;
                    () = config.shutdown.triggered() => return None,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            gate::reserve_slot(over_limit, slots, &config).await
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
