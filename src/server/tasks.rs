//! The engine for stream endpoints whose connections get a task each: the shared
//! acceptor ([`crate::access::acceptor`]: slot, accept, gate, count) hands each admitted
//! connection to a task of its own. (The per-message modes run on a thread of their own
//! instead: [`super::lane`].)

use std::sync::Arc;

use super::Shared;
use super::session::serve_accepted;
use crate::access::acceptor::{Acceptor, Admitted};
use crate::transport::StreamListener;

/// Accepts connections until shutdown: each one is served from its first byte in a
/// tracked task of its own.
pub(crate) async fn accept_loop(listener: StreamListener, shared: &Arc<Shared>) {
    let acceptor = Acceptor {
        listener: &listener,
        gate: shared.gate_config(),
        slots: shared.slots.as_ref(),
        over_limit: shared.options.limits.over_limit,
        connections: &shared.stats.connections,
    };
    acceptor
        .run(shared.ids.iter(), |admitted| {
            take_connection(admitted, shared)
        })
        .await;
}

/// An admitted connection: handed to a task of its own.
fn take_connection(admitted: Admitted, shared: &Arc<Shared>) {
    let Admitted {
        stream,
        peer,
        slot,
        id,
    } = admitted;
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
