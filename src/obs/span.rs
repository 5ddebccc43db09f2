//! The `conn{id, peer}` span every diagnostic line about one connection is logged under,
//! the same for `serve` and `relay`.

use super::{Event, EventLog};
use crate::endpoint::PeerAddr;
use crate::transport::client_cert::ClientIdentity;

/// The span every diagnostic line of one connection is logged under:
/// `conn{id=7 peer=192.0.2.7:40000}` (text) or `"span":{"id":7,"peer":…}` (JSON).
///
/// At ERROR level so it is enabled whatever `--log-level` lets through: a warning about
/// a connection must name it even when info lines are filtered out. `peer` is filled in
/// once known, which with `--proxy-protocol` is after the header; `via` then names the
/// load balancer the connection came through; `client` names a client certificate's
/// holder (`--client-ca`).
pub(crate) fn connection_span(conn: u64) -> tracing::Span {
    tracing::error_span!(
        "conn",
        id = conn,
        peer = tracing::field::Empty,
        via = tracing::field::Empty,
        client = tracing::field::Empty
    )
}

/// With `--client-ca`: names the client's verified certificate on the connection's span
/// (`client=` on every later line about the connection), in one debug line, and in a
/// `client_certificate` event.
pub(crate) fn announce_client_certificate(
    identity: &ClientIdentity,
    peer: &PeerAddr,
    conn: u64,
    events: &EventLog,
) {
    let name = identity.common_name.as_deref().unwrap_or(&identity.subject);
    tracing::Span::current().record("client", tracing::field::display(name));
    tracing::debug!("client certificate: {identity}");
    let fingerprint = identity.fingerprint.to_string();
    events.emit(Event::ClientCertificate {
        conn,
        peer,
        subject: &identity.subject,
        sans: &identity.sans,
        fingerprint: &fingerprint,
    });
}

/// Runs `log` under the connection's span, so every line about a connection has one
/// shape (`conn{id=7 peer=…}: …`): the span it is served under when there is one (TLS,
/// PROXY header, exec, chat), else a span made for the line (the lean per-message path
/// has none, since making one costs more than a hello exchange).
pub(crate) fn in_connection_span(conn: u64, peer: &PeerAddr, log: impl FnOnce()) {
    let current = tracing::Span::current();
    if current.metadata().is_some_and(|m| m.name() == "conn") {
        log();
    } else {
        let span = connection_span(conn);
        span.record("peer", tracing::field::display(peer));
        span.in_scope(log);
    }
}

/// Records the socket's peer in the connection's span: as `via` when a PROXY header is
/// expected (it is the load balancer), else as `peer`. Call before anything is logged.
pub(crate) fn record_socket_peer(span: &tracing::Span, proxied: bool, socket_peer: &PeerAddr) {
    let field = if proxied { "via" } else { "peer" };
    span.record(field, tracing::field::display(socket_peer));
}

/// Records the client the PROXY header named (with the header off, the socket peer is
/// already recorded).
pub(crate) fn record_client(span: &tracing::Span, proxied: bool, client: &PeerAddr) {
    if proxied {
        span.record("peer", tracing::field::display(client));
    }
}
