//! How a connection ended, the same for every stream engine: the reason words of the
//! `closed` event, how unusual the end is (its log level and counter), and the one place
//! that logs, counts and reports it ([`report_end`]).

use std::borrow::Cow;
use std::time::Duration;

use super::Shared;
use crate::endpoint::PeerAddr;
use crate::error::Error;
use crate::obs::throttle::connection_line;
use crate::obs::{ErrorKind, Event, Tally};

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum End {
    /// The client closed its side and every message was answered.
    PeerClosed,
    /// `--close`: the first reply was sent.
    AfterReply,
    /// The server is shutting down.
    Shutdown,
    /// No bytes for the idle timeout.
    Idle(Duration),
    /// A message started but did not complete in time.
    SlowMessage(Duration),
    /// The client did not read a reply within the idle timeout.
    NotReading(Duration),
    /// A failure: reset, oversized line, I/O error.
    Failed(Error),
}

impl End {
    /// A few words for logs and the `closed` event.
    fn reason(&self) -> Cow<'static, str> {
        match self {
            End::PeerClosed => "closed by peer".into(),
            End::AfterReply => "closed after reply".into(),
            End::Shutdown => "server shutting down".into(),
            End::Idle(d) => format!("idle for {}", humantime::format_duration(*d)).into(),
            End::SlowMessage(d) => format!(
                "message not completed within {}",
                humantime::format_duration(*d)
            )
            .into(),
            End::NotReading(d) => {
                format!("reply not read within {}", humantime::format_duration(*d)).into()
            }
            End::Failed(e) => e.to_string().into(),
        }
    }

    /// How the end is logged and counted.
    fn severity(&self) -> EndSeverity {
        match self {
            End::PeerClosed | End::AfterReply | End::Shutdown => EndSeverity::Normal,
            End::Idle(_) => EndSeverity::Idle,
            End::Failed(Error::Reset { .. } | Error::ClosedEarly { .. }) => {
                EndSeverity::ClientTrouble
            }
            End::SlowMessage(_) | End::NotReading(_) | End::Failed(_) => EndSeverity::Problem,
        }
    }

    /// Whether to send our FIN explicitly before closing. After the peer's EOF, or after
    /// the one reply of `--close` (the note's `conn.close()`), closing the socket sends it
    /// anyway; after a failure there may be nobody to send it to.
    pub(crate) fn wants_shutdown(&self) -> bool {
        matches!(self, End::Shutdown | End::Idle(_) | End::SlowMessage(_))
    }

    /// The metrics class of an error end.
    fn kind(&self) -> ErrorKind {
        match self {
            End::SlowMessage(_) | End::NotReading(_) => ErrorKind::Timeout,
            End::Failed(e) => ErrorKind::of(e),
            End::PeerClosed | End::AfterReply | End::Shutdown | End::Idle(_) => ErrorKind::Io,
        }
    }
}

/// How unusual a connection's end is: decides its log level and how it is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndSeverity {
    /// The expected end (the client or the program finished, `--close`, shutdown): no
    /// log line, not counted.
    Normal,
    /// The idle timeout closed a silent client: the server doing its job, logged at info
    /// and counted apart from errors (`timed out (idle)` in the summary).
    Idle,
    /// The client's doing (reset, vanished): an error, logged at info.
    ClientTrouble,
    /// Worth an operator's attention (a limit ran out, a program failed): an error,
    /// logged as a warning.
    Problem,
}

impl EndSeverity {
    /// Logs `reason` at this severity's level and counts the end in `stats`.
    pub(crate) fn log_and_count(self, reason: &str, kind: ErrorKind, stats: &crate::obs::Stats) {
        match self {
            EndSeverity::Normal => tracing::debug!("connection ended: {reason}"),
            EndSeverity::Idle => {
                stats.count_idle_close();
                connection_line(|more| tracing::info!("closing connection: {reason}{more}"));
            }
            EndSeverity::ClientTrouble => {
                stats.count_error(kind);
                connection_line(|more| tracing::info!("connection ended: {reason}{more}"));
            }
            EndSeverity::Problem => {
                stats.count_error(kind);
                connection_line(|more| tracing::warn!("closing connection: {reason}{more}"));
            }
        }
    }
}

/// Logs the end once, at a level matching how unusual it is, counts it, and emits
/// `closed`. The line is logged under the connection's span (`conn{id=7 peer=…}: …`),
/// made here for the connections served without one.
pub(crate) fn report_end(end: &End, peer: &PeerAddr, conn: u64, tally: &Tally, shared: &Shared) {
    let severity = end.severity();
    if severity != EndSeverity::Normal {
        let reason = end.reason();
        crate::obs::span::in_connection_span(conn, peer, || {
            severity.log_and_count(&reason, end.kind(), &shared.stats);
        });
    }
    if shared.events.wants_messages() {
        shared.events.emit(Event::Closed {
            conn,
            peer,
            messages: tally.messages,
            bytes_in: tally.bytes_in,
            bytes_out: tally.bytes_out,
            reason: &end.reason(),
        });
    }
}
