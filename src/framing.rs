//! Framing: where one message ends in a byte stream.
//!
//! Check-then-cut, as mini-redis does: [`Framer::next_frame`] looks at the bytes buffered so
//! far and reports the span of the next complete message without copying or allocating; the
//! caller uses the bytes and then drops `consumed` bytes from its buffer. Partial-message
//! state (how far we already scanned for a newline) lives in the [`Framer`], so a read that is
//! cancelled in a `select!` loses nothing.

use std::ops::Range;

/// How a byte stream is cut into messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// Each `read` is one message, as in the note's `recv(1024)`.
    #[default]
    Raw,
    /// One message per `\n`-terminated line (a preceding `\r` is part of the terminator).
    Line {
        /// The longest line accepted, without its terminator; longer lines end the connection.
        max_len: usize,
    },
}

/// The location of one complete message in the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSpan {
    /// The message bytes, without any line terminator.
    pub payload: Range<usize>,
    /// The terminator that followed it (`\n`, `\r\n`, or empty for raw and for a final
    /// unterminated line), so replies can end lines the way the client does.
    pub terminator: Range<usize>,
}

impl FrameSpan {
    /// How many bytes to drop from the front of the buffer once the message is handled.
    pub fn consumed(&self) -> usize {
        self.terminator.end
    }
}

/// A line grew past the limit before its newline arrived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line longer than {max_len} bytes")]
pub struct LineTooLong {
    /// The configured limit.
    pub max_len: usize,
}

/// Finds message boundaries in a growing buffer; one per connection.
#[derive(Debug, Clone)]
pub struct Framer {
    /// The rule in force.
    framing: Framing,
    /// Bytes at the front of the buffer already known to contain no newline, so each byte
    /// is scanned once however the stream is split.
    scanned: usize,
}

impl Framer {
    /// A framer at the start of a stream.
    pub fn new(framing: Framing) -> Framer {
        Framer {
            framing,
            scanned: 0,
        }
    }

    /// The next complete message at the front of `buf`, if there is one.
    ///
    /// # Errors
    /// [`LineTooLong`] when line framing has buffered more than the limit without a newline.
    pub fn next_frame(&mut self, buf: &[u8]) -> Result<Option<FrameSpan>, LineTooLong> {
        match self.framing {
            Framing::Raw => Ok(whole(buf)),
            Framing::Line { max_len } => self.next_line(buf, max_len),
        }
    }

    /// At end of stream: whatever is left is the last message (an unterminated line is
    /// still data the peer sent, and is never dropped).
    pub fn finish(&mut self, buf: &[u8]) -> Option<FrameSpan> {
        self.scanned = 0;
        whole(buf)
    }

    fn next_line(&mut self, buf: &[u8], max_len: usize) -> Result<Option<FrameSpan>, LineTooLong> {
        let start = self.scanned.min(buf.len());
        let Some(offset) = memchr::memchr(b'\n', &buf[start..]) else {
            self.scanned = buf.len();
            // Allow one extra byte: a line of exactly max_len may be waiting for "\n" after "\r".
            if buf.len() > max_len.saturating_add(1) {
                return Err(LineTooLong { max_len });
            }
            return Ok(None);
        };
        self.scanned = 0;
        let newline = start + offset;
        let payload_end = if newline > 0 && buf[newline - 1] == b'\r' {
            newline - 1
        } else {
            newline
        };
        if payload_end > max_len {
            return Err(LineTooLong { max_len });
        }
        Ok(Some(FrameSpan {
            payload: 0..payload_end,
            terminator: payload_end..newline + 1,
        }))
    }
}

/// The whole buffer as one message without terminator; `None` when it is empty.
fn whole(buf: &[u8]) -> Option<FrameSpan> {
    (!buf.is_empty()).then_some(FrameSpan {
        payload: 0..buf.len(),
        terminator: buf.len()..buf.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// (payload, terminator) pairs, in order.
    type Messages = Vec<(Vec<u8>, Vec<u8>)>;

    /// Feeds `chunks` one by one as a connection would, collecting (payload, terminator).
    fn split_all(framing: Framing, chunks: &[Vec<u8>]) -> Result<Messages, LineTooLong> {
        let mut framer = Framer::new(framing);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(span) = framer.next_frame(&buf)? {
                out.push((
                    buf[span.payload.clone()].to_vec(),
                    buf[span.terminator.clone()].to_vec(),
                ));
                buf.drain(..span.consumed());
            }
        }
        if let Some(span) = framer.finish(&buf) {
            out.push((buf[span.payload.clone()].to_vec(), Vec::new()));
        }
        Ok(out)
    }

    #[test]
    fn raw_framing_takes_each_read_whole() {
        let got = split_all(
            Framing::Raw,
            &[b"hello tcp server".to_vec(), b"x\ny".to_vec()],
        );
        assert_eq!(
            got,
            Ok(vec![
                (b"hello tcp server".to_vec(), vec![]),
                (b"x\ny".to_vec(), vec![])
            ])
        );
    }

    #[test]
    fn lines_keep_their_terminator_apart() {
        let got = split_all(Framing::Line { max_len: 100 }, &[b"a\r\nbb\nc".to_vec()]);
        assert_eq!(
            got,
            Ok(vec![
                (b"a".to_vec(), b"\r\n".to_vec()),
                (b"bb".to_vec(), b"\n".to_vec()),
                (b"c".to_vec(), vec![]),
            ])
        );
    }

    #[test]
    fn overlong_lines_are_refused_with_or_without_newline() {
        let framing = Framing::Line { max_len: 4 };
        assert_eq!(
            split_all(framing, &[b"123456".to_vec()]),
            Err(LineTooLong { max_len: 4 })
        );
        assert_eq!(
            split_all(framing, &[b"12345\n".to_vec()]),
            Err(LineTooLong { max_len: 4 })
        );
        assert!(split_all(framing, &[b"1234\r\n".to_vec()]).is_ok());
    }

    proptest! {
        /// Any split of the byte stream yields the same messages.
        #[test]
        fn any_split_gives_the_same_lines(data in proptest::collection::vec(
            prop_oneof![Just(b'\n'), Just(b'\r'), any::<u8>()], 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..20))
        {
            let framing = Framing::Line { max_len: 1000 };
            let whole = split_all(framing, std::slice::from_ref(&data));
            let mut points: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
            points.sort_unstable();
            let mut chunks = Vec::new();
            let mut last = 0;
            for p in points {
                chunks.push(data[last..p].to_vec());
                last = p;
            }
            chunks.push(data[last..].to_vec());
            prop_assert_eq!(whole, split_all(framing, &chunks));
        }
    }
}
