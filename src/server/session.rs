//! One accepted connection, handed to its behaviour by [`ServeMode`](super::ServeMode).
//!
//! The per-message modes (reply, echo, discard) go to [`super::conn`], which does its own
//! bookkeeping. The connection-level modes (exec, chat) run in [`crate::behaviour`] and
//! report how they ended; this module turns that report into what every connection gets:
//! the `connected` and `closed` events, the counters, and one log line when the end was
//! not a normal one.

use std::sync::atomic::Ordering;

use super::conn::{Prelude, serve_connection};
use super::{Handler, Shared};
use crate::behaviour::chat::{self, ChatEnd, ChatReport};
use crate::behaviour::exec::{self, ClientInfo, ExecEnd, ExecReport, ExecSpec};
use crate::error::Error;
use crate::obs::{Event, Tally};
use crate::transport::PeerAddr;
use tokio::io::{AsyncRead, AsyncWrite};

/// How unusual an end is: decides the log level and whether it counts as an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    /// The expected end (the client or the program finished, shutdown): no log line.
    Normal,
    /// The client's doing (reset, vanished): counted, logged at info.
    ClientTrouble,
    /// Worth an operator's attention (idle timeout, program cannot start): counted,
    /// logged as a warning.
    Problem,
}

/// How one connection-level session ended, ready for the log and the `closed` event.
struct Outcome {
    tally: Tally,
    reason: String,
    severity: Severity,
}

/// Serves one connection with the server's behaviour.
///
/// `prelude` is what the accept loop already did for the per-message mode (see
/// [`super::conn::serve_now`]); the other modes start from nothing.
pub(crate) async fn handle_connection<S>(
    stream: S,
    peer: &PeerAddr,
    conn: u64,
    shared: &Shared,
    prelude: Prelude,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match &shared.handler {
        Handler::Respond => serve_connection(stream, peer, conn, shared, prelude).await,
        Handler::Exec(spec) => {
            begin(peer, conn, shared);
            let client = ClientInfo { conn, peer };
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
            end(exec_outcome(spec, &report, peer), peer, conn, shared);
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
            end(chat_outcome(&report, peer), peer, conn, shared);
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
    match outcome.severity {
        Severity::Normal => tracing::debug!(conn, %peer, "connection ended: {reason}"),
        Severity::ClientTrouble => tracing::info!(conn, %peer, "connection ended: {reason}"),
        Severity::Problem => tracing::warn!(conn, %peer, "closing connection: {reason}"),
    }
    if outcome.severity != Severity::Normal {
        shared.stats.errors.fetch_add(1, Ordering::Relaxed);
    }
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

/// The `closed` reason and severity of an exec connection.
fn exec_outcome(spec: &ExecSpec, report: &ExecReport, peer: &PeerAddr) -> Outcome {
    let status = program_status(report);
    let (reason, severity) = match &report.end {
        ExecEnd::Finished => (status, Severity::Normal),
        ExecEnd::ClientFailed(e) => {
            let e = Error::exchange(
                std::io::Error::new(e.kind(), e.to_string()),
                peer.to_string(),
                "while relaying the program's data",
            );
            (format!("{e}; {status}"), Severity::ClientTrouble)
        }
        ExecEnd::Idle(d) => (
            format!(
                "idle for {} (raise --idle-timeout); {status}",
                humantime::format_duration(*d)
            ),
            Severity::Problem,
        ),
        ExecEnd::Shutdown => (format!("server shutting down; {status}"), Severity::Normal),
        ExecEnd::CannotStart(e) => (
            format!("cannot start `{}`: {e}", spec.command_line()),
            Severity::Problem,
        ),
    };
    Outcome {
        tally: Tally {
            messages: 0,
            bytes_in: report.bytes_in,
            bytes_out: report.bytes_out,
        },
        reason,
        severity,
    }
}

/// The `closed` reason and severity of a chat connection.
fn chat_outcome(report: &ChatReport, peer: &PeerAddr) -> Outcome {
    let (reason, severity) = match &report.end {
        ChatEnd::Closed => ("closed by peer".to_string(), Severity::Normal),
        ChatEnd::ClientFailed(e) => {
            let e = Error::exchange(
                std::io::Error::new(e.kind(), e.to_string()),
                peer.to_string(),
                "while chatting",
            );
            (e.to_string(), Severity::ClientTrouble)
        }
        ChatEnd::LineTooLong(max) => (
            Error::LineTooLong {
                peer: peer.to_string(),
                max: *max,
            }
            .to_string(),
            Severity::Problem,
        ),
        ChatEnd::TooSlow => (
            "too slow: its queue of undelivered chat lines overflowed".to_string(),
            Severity::ClientTrouble,
        ),
        ChatEnd::Idle(d) => (
            format!(
                "idle for {} (raise --idle-timeout)",
                humantime::format_duration(*d)
            ),
            Severity::Problem,
        ),
        ChatEnd::Shutdown => ("server shutting down".to_string(), Severity::Normal),
    };
    Outcome {
        tally: Tally {
            messages: report.lines,
            bytes_in: report.bytes_in,
            bytes_out: report.bytes_out,
        },
        reason,
        severity,
    }
}
