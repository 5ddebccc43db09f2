//! Answering one message, the same on every stream engine: the responder's answer, and
//! the `message` event that shows it.

use super::Shared;
use crate::endpoint::PeerAddr;
use crate::obs::Event;

/// Answers one message and emits its `message` event (unless messages are not shown);
/// returns the answer, in at most two pieces, for the caller to send.
///
/// `framed` is the message with its line terminator (the whole read, in raw framing),
/// `payload` what the event shows as received (without the terminator), `terminator`
/// the line ending (empty in raw framing).
///
/// Always inlined: it is the middle of the fast lane's per-message path, where a call
/// costs register saving on every message, and with raw framing's empty terminator the
/// event's trimming folds away.
#[inline(always)]
pub(crate) fn answer_message<'a>(
    shared: &'a Shared,
    conn: u64,
    peer: &PeerAddr,
    framed: &'a [u8],
    payload: &[u8],
    terminator: &'a [u8],
) -> Option<[&'a [u8]; 2]> {
    let answer = shared.options.responder.answer(framed, terminator);
    if shared.shows_messages() {
        shared.events.emit(Event::Message {
            conn,
            peer,
            received: payload,
            sent: answer.map(|[first, second]| without_terminator(first, second, terminator)),
        });
    }
    answer
}

/// The answer as the event shows it: without the line terminator that ends it.
#[inline(always)]
fn without_terminator<'a>(first: &'a [u8], second: &'a [u8], terminator: &[u8]) -> &'a [u8] {
    if second.is_empty() {
        &first[..first.len() - terminator.len().min(first.len())]
    } else {
        first
    }
}
