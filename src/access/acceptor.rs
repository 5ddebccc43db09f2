//! The async accept loop of `serve`'s task engine, `relay` and `proxy`: take a slot,
//! accept, pass the gate, count the connection, hand it to the caller's handler, repeat.
//!
//! What is admitted, and when accepting pauses, is [`Admission`]'s (the rules every
//! accept loop applies, the fast lane's included; see [`super::admission`]). This loop
//! adds only the async way of waiting: for the listener, for shutdown, for the end of a
//! back-off pause, and (`--max-conns-mode wait` at the limit) for a slot to free.
//!
//! What happens to an admitted connection is the caller's: the handler gets it with its
//! slot and its id, and usually spawns a task for it ([`Admitted::serve_in_task`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Semaphore;
use tracing::Instrument;

use super::OverLimit;
pub(crate) use super::admission::Admitted;
use super::admission::{Admission, NextAccept, Outcome};
use super::gate::{GateConfig, Slot};
use crate::endpoint::PeerAddr;
use crate::obs::span::{connection_span, in_connection_span};
use crate::shutdown::Shutdown;
use crate::transport::{StdStream, Stream, StreamListener};

/// Whether a connection's task runs inside its `conn` span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TaskSpan {
    /// Entered on every poll: lines logged anywhere below (TLS, PROXY header, taps, debug
    /// lines) name the connection.
    Entered,
    /// None for the task: the handler logs its few lines through
    /// [`crate::obs::span::in_connection_span`], which makes the span for the line. Making
    /// and entering a span costs more than relaying a small message, so a connection
    /// that logs nothing pays nothing.
    PerLine,
}

impl Admitted {
    /// Serves the connection in a task `shutdown` tracks, inside the connection's span
    /// when `span` says so: the stream is registered with the runtime, `serve` runs on
    /// it, and the slot is held until `serve` ends. A stream the runtime cannot watch is
    /// logged and dropped, and the accept loop goes on. The relay and the proxy hand
    /// their clients over this way.
    pub fn serve_in_task<F, Fut>(self, shutdown: &Shutdown, span: TaskSpan, serve: F)
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
        let stream = match stream.into_tokio() {
            Ok(stream) => stream,
            Err(e) => {
                in_connection_span(id, &peer, || {
                    tracing::warn!("cannot watch the connection: {e}");
                });
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
        match span {
            TaskSpan::Entered => {
                shutdown.spawn(Box::pin(task.instrument(connection_span(id))));
            }
            TaskSpan::PerLine => {
                shutdown.spawn(Box::pin(task));
            }
        }
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
    /// `accept` gave a connection, or failed.
    Accepted(io::Result<(StdStream, PeerAddr)>),
}

/// What the loop waits for before its next `accept`, besides shutdown: a back-off
/// pause, or (wait mode at the limit) a free slot. Boxed, and made only then, so a round
/// with neither costs nothing.
type Hold<'a> = Pin<Box<dyn Future<Output = Resume> + Send + 'a>>;

/// How a [`Hold`] ended.
enum Resume {
    /// The pause is over.
    Paused,
    /// A slot freed up, taken for the next client.
    Slot(Slot),
    /// The semaphore was closed (it never is): treated as shutdown.
    Closed,
}

impl Acceptor<'_> {
    /// Accepts connections until shutdown, each admitted one counted, given the next of
    /// `ids` and passed to `handle`. The admission rules are [`Admission`]'s; this loop
    /// only waits (for the listener, a pause or a slot) the async way.
    pub(crate) async fn run(
        self,
        ids: impl Iterator<Item = u64>,
        mut handle: impl FnMut(Admitted),
    ) {
        let shutdown = self.gate.shutdown;
        let mut admission = Admission::new(
            self.gate,
            self.slots,
            self.over_limit,
            self.connections,
            ids,
        );
        let stop = shutdown.cancelled();
        tokio::pin!(stop);
        let mut stop_watched = false;
        let mut hold: Option<Hold<'_>> = None;
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
                match std::task::ready!(wait_out(&mut hold, &mut admission, cx)) {
                    Go::Accept => self.listener.poll_accept_std(cx).map(Wake::Accepted),
                    Go::Stop => Poll::Ready(Wake::Stop),
                }
            })
            .await;
            let accepted = match wake {
                Wake::Stop => break,
                Wake::Accepted(accepted) => accepted,
            };
            match admission.admit(accepted) {
                Outcome::Admitted(admitted) => handle(admitted),
                Outcome::BackOff(pause) => hold = Some(Box::pin(pause_for(pause))),
                Outcome::TurnedAway | Outcome::Skipped | Outcome::NoneQueued => {}
            }
        }
    }
}

/// What the loop does once nothing holds it back.
enum Go {
    /// Accept: no pause is on and (wait mode) a slot is held.
    Accept,
    /// Stop: the slots' semaphore was closed.
    Stop,
}

/// Ready when nothing holds the loop back any more (see [`Go`]). Polls `hold` and, at
/// the limit, starts a wait for a slot in it.
fn wait_out<'a, I: Iterator<Item = u64>>(
    hold: &mut Option<Hold<'a>>,
    admission: &mut Admission<'a, I>,
    cx: &mut Context<'_>,
) -> Poll<Go> {
    loop {
        if let Some(waiting) = hold {
            match std::task::ready!(waiting.as_mut().poll(cx)) {
                Resume::Paused => {}
                Resume::Slot(slot) => admission.hold(slot),
                Resume::Closed => return Poll::Ready(Go::Stop),
            }
            *hold = None;
        }
        match (admission.reserve(), admission.slots()) {
            (NextAccept::AtLimit, Some(slots)) => *hold = Some(Box::pin(slot_freed(slots))),
            _ => return Poll::Ready(Go::Accept),
        }
    }
}

/// A back-off pause.
async fn pause_for(pause: Duration) -> Resume {
    tokio::time::sleep(pause).await;
    Resume::Paused
}

/// The next free slot of `slots`.
async fn slot_freed(slots: &Arc<Semaphore>) -> Resume {
    match Arc::clone(slots).acquire_owned().await {
        Ok(permit) => Resume::Slot(Slot::from(permit)),
        Err(_) => Resume::Closed,
    }
}
