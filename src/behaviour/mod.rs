//! Behaviours: what a server does with what it receives.
//!
//! Two kinds, both blind to sockets, so each is the same for TCP, Unix, UDP and TLS and is
//! tested without a network:
//!
//! * per message: [`Responder`] (reply, echo, discard) sees only the message bytes and an
//!   output buffer;
//! * per connection: [`exec`] (a program wired to the client) and [`chat`] (a broker
//!   between clients) see a byte stream (`AsyncRead + AsyncWrite`), because they own the
//!   whole exchange, not one answer at a time.

pub mod chat;
pub mod exec;

use bytes::Bytes;

/// How a server answers each message (stream message or datagram).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Responder {
    /// Send a fixed reply: the note's server (`hello tcp client`), or `--reply TEXT`.
    Reply(Bytes),
    /// Send the message back unchanged (`--echo`).
    Echo,
    /// Send nothing; only count what arrives (`--discard`).
    Discard,
}

impl Responder {
    /// The note's reply for a transport word (`tcp` → `hello tcp client`).
    pub fn seed_reply(word: &str) -> Responder {
        Responder::Reply(Bytes::from(format!("hello {word} client")))
    }

    /// The answer to a message, without copying: at most two slices to send one after
    /// the other, or `None` for no answer.
    ///
    /// `framed` is the message *with* its terminator (they are contiguous in the input),
    /// `terminator` its last bytes. An echo is `framed` itself; a fixed reply is the reply
    /// followed by the client's terminator.
    #[inline]
    pub fn answer<'a>(&'a self, framed: &'a [u8], terminator: &'a [u8]) -> Option<[&'a [u8]; 2]> {
        match self {
            Responder::Reply(reply) => Some([reply, terminator]),
            Responder::Echo => Some([framed, &[]]),
            Responder::Discard => None,
        }
    }

    /// Appends the answer to `message` to `out`; returns whether there is an answer.
    ///
    /// `terminator` is the message's line ending (empty in raw framing): an answer to a
    /// line is a line, ended the way the client ended its own.
    #[inline]
    pub fn respond(&self, message: &[u8], terminator: &[u8], out: &mut Vec<u8>) -> bool {
        match self {
            Responder::Reply(reply) => out.extend_from_slice(reply),
            Responder::Echo => out.extend_from_slice(message),
            Responder::Discard => return false,
        }
        out.extend_from_slice(terminator);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_reply_is_the_notes_text() {
        let mut out = Vec::new();
        assert!(Responder::seed_reply("tcp").respond(b"hello tcp server", b"", &mut out));
        assert_eq!(out, b"hello tcp client");
    }

    #[test]
    fn echo_and_reply_end_lines_like_the_client() {
        let mut out = Vec::new();
        Responder::Echo.respond(b"abc", b"\r\n", &mut out);
        Responder::Reply(Bytes::from_static(b"ok")).respond(b"x", b"\n", &mut out);
        assert_eq!(out, b"abc\r\nok\n");
    }

    #[test]
    fn answers_borrow_instead_of_copying() {
        let reply = Responder::Reply(Bytes::from_static(b"ok"));
        assert_eq!(reply.answer(b"x\n", b"\n"), Some([&b"ok"[..], &b"\n"[..]]));
        assert_eq!(
            Responder::Echo.answer(b"x\r\n", b"\r\n"),
            Some([&b"x\r\n"[..], &b""[..]])
        );
        assert_eq!(Responder::Discard.answer(b"x", b""), None);
    }

    #[test]
    fn discard_answers_nothing() {
        let mut out = Vec::new();
        assert!(!Responder::Discard.respond(b"abc", b"\n", &mut out));
        assert!(out.is_empty());
    }
}
