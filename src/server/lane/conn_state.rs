//! A lane connection's state and its two non-blocking steps: the first message answered
//! on the spot by the acceptor ([`serve_now`]), and any message answered without
//! waiting ([`answer_now`]), with what the socket does not take kept for later.

use std::io;

use crate::endpoint::PeerAddr;
use crate::error::Error;
use crate::obs::{Event, EventLog, Tally};
use crate::server::answer::answer_message;
use crate::server::end::{End, report_end};
use crate::server::{AfterReply, Shared, THE_CLIENT};
use crate::transport::StdStream;

/// A lane connection's exchange so far: what it counted, the part of an answer the
/// socket has not taken yet, and whether it was announced and answered.
#[derive(Debug, Default)]
pub(crate) struct ConnState {
    /// Counts so far.
    pub(crate) tally: Tally,
    /// The part of an answer the socket did not take yet, to send first.
    pending: Vec<u8>,
    /// Whether the `connected` event is out already.
    announced: bool,
    /// Whether a reply has been (or is being) sent, for `--close`.
    answered: bool,
}

impl ConnState {
    /// Emits the `connected` event unless that was done already.
    pub(crate) fn announce(&mut self, events: &EventLog, conn: u64, peer: &PeerAddr) {
        if !self.announced {
            events.emit(Event::Connected { conn, peer });
            self.announced = true;
        }
    }

    /// Whether part of an answer is still to be sent.
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Whether a reply has been (or is being) sent, for `--close`.
    pub(crate) fn answered(&self) -> bool {
        self.answered
    }

    /// Sends what the socket takes now of the pending answer; returns how many bytes
    /// went (0 when it took nothing).
    pub(crate) fn send_pending(&mut self, stream: &StdStream) -> Result<usize, End> {
        let written = match stream.write_now(&self.pending) {
            Ok(0) => {
                let e = io::Error::from(io::ErrorKind::WriteZero);
                return Err(End::Failed(Error::exchange(
                    e,
                    THE_CLIENT,
                    "while sending the reply",
                )));
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(e) => {
                return Err(End::Failed(Error::exchange(
                    e,
                    THE_CLIENT,
                    "while sending the reply",
                )));
            }
        };
        self.tally.bytes_out += written as u64;
        self.pending.drain(..written);
        Ok(written)
    }
}

/// How serving on the spot ended.
pub(crate) enum FirstTurn {
    /// The connection is finished (counted and logged); close it.
    Done,
    /// The connection must wait for its client: the lane serves it from here.
    Continue(ConnState),
}

/// Serves a just-accepted connection on the spot when its first message is already
/// there, as the hand-written C server does: one read, one write, and for the note's
/// one-shot exchange (`--close`) the connection is done without ever being registered
/// with the epoll set. Nothing here waits: if the message has not arrived, or the reply
/// does not fit in the socket buffer, the connection goes to the lane with what was
/// done so far.
///
/// `scratch` is the acceptor's read buffer, reused for every connection.
pub(crate) fn serve_now(
    stream: &StdStream,
    peer: &PeerAddr,
    conn: u64,
    shared: &Shared,
    scratch: &mut Vec<u8>,
) -> FirstTurn {
    let options = &shared.options;
    let buffer_size = options.buffer_size.max(1);
    if scratch.len() < buffer_size {
        scratch.resize(buffer_size, 0);
    }
    let mut state = ConnState::default();
    let received = match stream.read_now(&mut scratch[..buffer_size]) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return FirstTurn::Continue(state),
        Ok(0) => Err(End::PeerClosed),
        Ok(n) => Ok(n),
        Err(e) => Err(End::Failed(Error::exchange(e, THE_CLIENT, "while reading"))),
    };
    shared.events.emit(Event::Connected { conn, peer });
    state.announced = true;
    let end = match received {
        Ok(n) => match answer_now(stream, &scratch[..n], peer, conn, shared, &mut state) {
            Ok(())
                if state.answered
                    && state.pending.is_empty()
                    && options.after_reply == AfterReply::Close =>
            {
                End::AfterReply
            }
            Ok(()) => return FirstTurn::Continue(state),
            Err(end) => end,
        },
        Err(end) => end,
    };
    report_end(&end, peer, conn, &state.tally, shared);
    shared.stats.absorb(&mut state.tally);
    FirstTurn::Done
}

/// Answers a message without waiting; what the socket does not take now goes to
/// `state.pending`.
///
/// Always inlined: it is the middle of the fast lane's per-message path, and as a call
/// it costs register saving on every message.
#[inline(always)]
pub(crate) fn answer_now(
    stream: &StdStream,
    message: &[u8],
    peer: &PeerAddr,
    conn: u64,
    shared: &Shared,
    state: &mut ConnState,
) -> Result<(), End> {
    state.tally.bytes_in += message.len() as u64;
    state.tally.messages += 1;
    let answer = answer_message(shared, conn, peer, message, message, &[]);
    // Raw framing has no terminator, so an answer is always one slice.
    let Some([reply, _]) = answer else {
        return Ok(());
    };
    state.answered = true;
    state.tally.replies += 1;
    // With `--close` this reply is the connection's last: it leaves together with our FIN.
    let last = shared.options.after_reply == AfterReply::Close;
    let sent = if last {
        stream.write_last_now(reply)
    } else {
        stream.write_now(reply)
    };
    let written = match sent {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
        Err(e) => {
            return Err(End::Failed(Error::exchange(
                e,
                THE_CLIENT,
                "while sending the reply",
            )));
        }
    };
    state.tally.bytes_out += written as u64;
    let unsent = &reply[written..];
    if !unsent.is_empty() {
        state.pending.extend_from_slice(unsent);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    use super::{FirstTurn, serve_now};
    use crate::endpoint::{Endpoint, PeerAddr};
    use crate::server::{AfterReply, ServeOptions, Shared};
    use crate::transport::StdStream;

    /// A client connected over loopback, and the server's non-blocking end of it.
    fn pair() -> (TcpStream, StdStream, PeerAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let client = TcpStream::connect(addr).unwrap_or_else(|e| panic!("{e}"));
        client
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{e}"));
        let (server, peer) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
        server
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
        (client, StdStream::Tcp(server), PeerAddr::Ip(peer))
    }

    #[test]
    fn a_connection_with_nothing_to_read_yet_goes_to_the_lane_untouched() {
        let (shared, board) = Shared::for_test(ServeOptions::seed(&Endpoint::seed_tcp()));
        let (_client, stream, peer) = pair();
        let turn = serve_now(&stream, &peer, 1, &shared, &mut Vec::new());
        let FirstTurn::Continue(state) = turn else {
            panic!("a connection without input was finished on the spot");
        };
        assert!(!state.has_pending() && !state.answered());
        assert_eq!(state.tally.messages, 0);
        assert_eq!(board.summary().messages, 0);
    }

    #[test]
    fn the_notes_one_shot_exchange_is_done_on_the_spot_with_reply_and_fin() {
        let options = ServeOptions {
            after_reply: AfterReply::Close,
            ..ServeOptions::seed(&Endpoint::seed_tcp())
        };
        let (shared, board) = Shared::for_test(options);
        let (mut client, stream, peer) = pair();
        client
            .write_all(b"hello tcp server")
            .unwrap_or_else(|e| panic!("{e}"));
        // The message is in the server's socket once the server side can peek it.
        let mut probe = [0u8; 1];
        let StdStream::Tcp(server) = &stream else {
            unreachable!("pair() makes TCP")
        };
        server
            .set_nonblocking(false)
            .unwrap_or_else(|e| panic!("{e}"));
        server
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap_or_else(|e| panic!("{e}"));
        server.peek(&mut probe).unwrap_or_else(|e| panic!("{e}"));
        server
            .set_nonblocking(true)
            .unwrap_or_else(|e| panic!("{e}"));
        let turn = serve_now(&stream, &peer, 1, &shared, &mut Vec::new());
        assert!(matches!(turn, FirstTurn::Done), "not finished on the spot");
        // The FIN is serve_now's own: the server's socket is still open here.
        let mut received = Vec::new();
        client
            .read_to_end(&mut received)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(received, b"hello tcp client");
        drop(stream);
        let summary = board.summary();
        assert_eq!((summary.messages, summary.replies), (1, 1));
    }
}
