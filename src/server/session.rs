//! One accepted connection, from its first byte to its behaviour.
//!
//! [`serve_accepted`] is each connection's task: under a `conn{id, peer}` span (so every
//! diagnostic line names the connection), it reads the PROXY header if configured, judges
//! the real client against `--allow`/`--deny` when that had to wait for the header, runs
//! the TLS handshake and hex tap, and hands the connection to its behaviour by
//! [`ServeMode`](super::ServeMode).
//!
//! The per-message modes (reply, echo, discard) go to [`super::message_loop`] (or, with raw framing
//! and no layer, the fast lane: [`super::lane`]), which does its own
//! bookkeeping. The connection-level modes (exec, chat) run in [`crate::behaviour`] and
//! report how they ended; this module turns that report into what every connection gets:
//! the `connected` and `closed` events, the counters, and one log line when the end was
//! not a normal one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::os::fd::OwnedFd;
use tokio::io::{AsyncRead, AsyncWrite};

use tracing::Instrument;

use super::end::EndSeverity as Severity;
use super::message_loop::serve_connection;
use super::{Handler, Shared};
use crate::access::gate::Slot;
use crate::behaviour::chat::{self, ChatEnd, ChatReport};
use crate::behaviour::exec::{self, ClientInfo, ExecEnd, ExecReport, ExecSpec};
use crate::endpoint::PeerAddr;
use crate::error::Error;
use crate::obs::span::{
    announce_client_certificate, connection_span, record_client, record_socket_peer,
};
use crate::obs::throttle::connection_line;
use crate::obs::{ErrorKind, Event, Tally};
use crate::transport::Stream;
use crate::transport::client_cert::ClientIdentity;

/// How one connection-level session ended, ready for the log and the `closed` event.
struct Outcome {
    tally: Tally,
    reason: String,
    severity: Severity,
    /// The metrics class, when the end counts as an error.
    kind: ErrorKind,
}

/// One accepted stream connection, start to end; the body of its task.
///
/// The slot in `--max-conns` is held until the connection is done.
pub(crate) async fn serve_accepted(
    stream: Stream,
    socket_peer: PeerAddr,
    conn: u64,
    shared: Arc<Shared>,
    slot: Slot,
) {
    let passthrough = shared.options.layers.is_passthrough();
    let tcp = match shared.handler {
        Handler::Perf(..) => crate::bench::throughput::duplicate_socket(&stream).map(Arc::new),
        _ => None,
    };
    let origin = Origin {
        tcp: tcp.as_ref(),
        ..Origin::default()
    };
    if passthrough && matches!(shared.handler, Handler::Respond) {
        // The common case, kept lean: the socket itself (no header, no wrapper) and no
        // span (creating one costs more than a hello exchange); the per-message loop
        // names the connection in its own log lines.
        handle_connection(stream, &socket_peer, conn, &shared, Origin::default()).await;
    } else if passthrough {
        let span = connection_span(conn);
        record_socket_peer(&span, false, &socket_peer);
        handle_connection(stream, &socket_peer, conn, &shared, origin)
            .instrument(span)
            .await;
    } else {
        let span = connection_span(conn);
        // Boxed: a TLS handshake is a large future, and every connection's task would
        // otherwise be that large, TLS or not.
        let task = Box::pin(prepare_and_serve(
            stream,
            socket_peer,
            conn,
            &shared,
            (span.clone(), origin.tcp),
        ));
        task.instrument(span).await;
    }
    drop(slot);
}

/// PROXY header → late access check → TLS and hex → behaviour.
async fn prepare_and_serve(
    mut stream: Stream,
    socket_peer: PeerAddr,
    conn: u64,
    shared: &Shared,
    (span, tcp): (tracing::Span, Option<&Arc<OwnedFd>>),
) {
    let layers = &shared.options.layers;
    let proxied = layers.proxy.is_on();
    record_socket_peer(&span, proxied, &socket_peer);
    let peer = match layers.client_address(&mut stream, &socket_peer).await {
        Ok(Some(peer)) => peer,
        Ok(None) => {
            tracing::debug!("closed before sending a PROXY header (a health check?)");
            return;
        }
        Err(e) => {
            shared.stats.count_error(ErrorKind::of(&e));
            connection_line(|more| tracing::warn!("closing connection: {e}{more}"));
            return;
        }
    };
    record_client(&span, proxied, &peer);
    let Some(_per_source) = shared.gate_config().admit_late(&peer) else {
        return;
    };
    if proxied {
        let via = &socket_peer;
        shared.events.emit(Event::Proxied {
            conn,
            peer: &peer,
            via,
        });
    }
    match layers.wrap_accepted(stream, &peer, conn).await {
        Ok(stream) => {
            let certificate = ClientIdentity::of(stream.get_ref());
            if let Some(identity) = &certificate {
                announce_client_certificate(identity, &peer, conn, &shared.events);
            }
            let origin = Origin {
                via: proxied.then_some(&socket_peer),
                certificate: certificate.as_ref(),
                tcp,
            };
            handle_connection(stream, &peer, conn, shared, origin).await;
        }
        Err(e) => {
            shared.stats.count_error(ErrorKind::of(&e));
            let e = naming_the_client(e);
            connection_line(|more| tracing::warn!("{e}{more}"));
        }
    }
}

/// A failed handshake's error as the connection's span shows it: the span names the peer,
/// so the text says "the client" (`TLS with the client failed: …`).
fn naming_the_client(error: Error) -> Error {
    match error {
        Error::Tls { reason, .. } => Error::Tls {
            peer: super::THE_CLIENT.into(),
            reason,
        },
        other => other,
    }
}

/// What the layers learned about a client besides its address, for `--exec` programs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Origin<'a> {
    /// With `--proxy-protocol`: the balancer that sent the header.
    via: Option<&'a PeerAddr>,
    /// With `--client-ca`: the client's verified certificate.
    certificate: Option<&'a ClientIdentity>,
    /// `serve --perf`: a copy of the TCP socket under the stream, for `TCP_INFO`.
    tcp: Option<&'a Arc<OwnedFd>>,
}

/// Serves one connection with the server's behaviour.
pub(crate) async fn handle_connection<S>(
    stream: S,
    peer: &PeerAddr,
    conn: u64,
    shared: &Shared,
    origin: Origin<'_>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match &shared.handler {
        Handler::Respond => serve_connection(stream, peer, conn, shared).await,
        Handler::Exec(spec) => {
            begin(peer, conn, shared);
            let client = ClientInfo {
                via: origin.via,
                certificate: origin.certificate,
                ..ClientInfo::new(conn, peer)
            };
            let idle = shared.options.limits.idle_timeout;
            // Boxed: the program's plumbing is a large future, and it would otherwise make
            // every connection's task that large, whatever its mode.
            let report = Box::pin(exec::serve_stream(
                spec,
                stream,
                &client,
                idle,
                &shared.shutdown,
            ))
            .await;
            end(exec_outcome(spec, &report), peer, conn, shared);
        }
        Handler::Chat(room) => {
            begin(peer, conn, shared);
            let idle = shared.options.limits.idle_timeout;
            let events = &shared.events;
            let mut on_line = |line: &[u8]| {
                if events.wants_messages() {
                    events.emit(Event::Message {
                        conn,
                        peer,
                        received: line,
                        sent: None,
                    });
                }
            };
            // Boxed for the same reason as exec.
            let report = Box::pin(chat::serve_member(
                room,
                conn,
                peer,
                stream,
                idle,
                &shared.shutdown,
                &mut on_line,
            ))
            .await;
            end(chat_outcome(&report), peer, conn, shared);
        }
        Handler::Perf(_, watchlist) => {
            begin(peer, conn, shared);
            let idle = shared.options.limits.idle_timeout;
            let (ended, mut tally) =
                super::perf::serve_stream(stream, origin.tcp, watchlist, idle, &shared.shutdown)
                    .await;
            super::end::report_end(&ended, peer, conn, &tally, shared);
            shared.stats.absorb(&mut tally);
            shared.stats.active.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Counts the connection as active and announces it.
fn begin(peer: &PeerAddr, conn: u64, shared: &Shared) {
    shared.stats.active.fetch_add(1, Ordering::Relaxed);
    shared.events.emit(Event::Connected { conn, peer });
}

/// Logs an unusual end, emits `closed`, adds the counts to the totals.
fn end(mut outcome: Outcome, peer: &PeerAddr, conn: u64, shared: &Shared) {
    let reason = &outcome.reason;
    outcome
        .severity
        .log_and_count(reason, outcome.kind, &shared.stats);
    shared.events.emit(Event::Closed {
        conn,
        peer,
        messages: outcome.tally.messages,
        bytes_in: outcome.tally.bytes_in,
        bytes_out: outcome.tally.bytes_out,
        reason,
    });
    shared.stats.absorb(&mut outcome.tally);
    shared.stats.active.fetch_sub(1, Ordering::Relaxed);
}

/// Words for how a program ended: "program exited with status 0", "… killed by signal 9".
fn program_status(report: &ExecReport) -> String {
    use std::os::unix::process::ExitStatusExt;
    match report.status {
        Some(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("program exited with status {code}"),
            (None, Some(signal)) if report.killed => {
                format!("program killed by the server (signal {signal})")
            }
            (None, Some(signal)) => format!("program killed by signal {signal}"),
            (None, None) => format!("program ended ({status})"),
        },
        None => "program state unknown".into(),
    }
}

/// Whether a program that finished on its own failed: it exited non-zero, or a signal
/// killed it. SIGPIPE is not a failure: it means the client stopped reading, and a
/// program the server killed was stopped on purpose.
pub(crate) fn program_failed(report: &ExecReport) -> bool {
    status_is_failure(report.status, report.killed)
}

/// See [`program_failed`]; shared with the per-datagram runs.
pub(crate) fn status_is_failure(status: Option<std::process::ExitStatus>, killed: bool) -> bool {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(status) => !status.success() && !killed && status.signal() != Some(libc::SIGPIPE),
        None => false,
    }
}

/// The `closed` reason and severity of an exec connection.
fn exec_outcome(spec: &ExecSpec, report: &ExecReport) -> Outcome {
    let status = program_status(report);
    let (reason, severity, kind) = match &report.end {
        ExecEnd::Finished if program_failed(report) => {
            (status, Severity::Problem, ErrorKind::Program)
        }
        ExecEnd::Finished => (status, Severity::Normal, ErrorKind::Io),
        ExecEnd::ClientFailed(e) => {
            let e = Error::exchange(
                std::io::Error::new(e.kind(), e.to_string()),
                super::THE_CLIENT,
                "while relaying the program's data",
            );
            let kind = ErrorKind::of(&e);
            (format!("{e}; {status}"), Severity::ClientTrouble, kind)
        }
        ExecEnd::Idle(d) => (
            format!(
                "idle for {} (raise --idle-timeout); {status}",
                humantime::format_duration(*d)
            ),
            Severity::Idle,
            ErrorKind::Timeout,
        ),
        ExecEnd::ClientClosed(d) => (
            format!(
                "the client closed and the program wrote nothing for {} (--exec-eof-wait); {status}",
                humantime::format_duration(*d)
            ),
            Severity::Normal,
            ErrorKind::Io,
        ),
        ExecEnd::Shutdown => (
            format!("server shutting down; {status}"),
            Severity::Normal,
            ErrorKind::Io,
        ),
        ExecEnd::CannotStart(e) => (
            format!("cannot start `{}`: {e}", spec.command_line()),
            Severity::Problem,
            ErrorKind::Program,
        ),
    };
    Outcome {
        tally: Tally {
            bytes_in: report.bytes_in,
            bytes_out: report.bytes_out,
            ..Tally::default()
        },
        reason,
        severity,
        kind,
    }
}

/// The `closed` reason and severity of a chat connection.
fn chat_outcome(report: &ChatReport) -> Outcome {
    let (reason, severity, kind) = match &report.end {
        ChatEnd::Closed => (
            "closed by peer".to_string(),
            Severity::Normal,
            ErrorKind::Io,
        ),
        ChatEnd::ClientFailed(e) => {
            let e = Error::exchange(
                std::io::Error::new(e.kind(), e.to_string()),
                super::THE_CLIENT,
                "while chatting",
            );
            let kind = ErrorKind::of(&e);
            (e.to_string(), Severity::ClientTrouble, kind)
        }
        ChatEnd::LineTooLong(max) => (
            Error::LineTooLong {
                peer: super::THE_CLIENT.into(),
                max: *max,
            }
            .to_string(),
            Severity::Problem,
            ErrorKind::TooLong,
        ),
        ChatEnd::TooSlow => (
            "too slow: its queue of undelivered chat lines overflowed".to_string(),
            Severity::ClientTrouble,
            ErrorKind::SlowReader,
        ),
        ChatEnd::Idle(d) => (
            format!(
                "idle for {} (raise --idle-timeout)",
                humantime::format_duration(*d)
            ),
            Severity::Idle,
            ErrorKind::Timeout,
        ),
        ChatEnd::Shutdown => (
            "server shutting down".to_string(),
            Severity::Normal,
            ErrorKind::Io,
        ),
    };
    Outcome {
        tally: Tally {
            messages: report.lines,
            bytes_in: report.bytes_in,
            bytes_out: report.bytes_out,
            ..Tally::default()
        },
        reason,
        severity,
        kind,
    }
}
