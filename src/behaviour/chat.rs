//! `--chat`: every line a client sends goes to every other connected client, prefixed with
//! the sender's tag, as ncat's `--chat` does.
//!
//! ```text
//! <announce> you are <user3>; already connected: <user1> (127.0.0.1:40110), <user2> (…).
//! <announce> 127.0.0.1:40116 is connected as <user4>.      (to the others, on a join)
//! <user1> hello                                            (a line from user1)
//! <announce> <user2> is disconnected.                      (to the others, on a leave)
//! ```
//!
//! There is no broker task to fall behind: the [`Room`] is a map of members behind a
//! mutex, and the connection that reads a line hands it to every other member's queue
//! with a non-blocking send. Each member's own connection task writes its queue to its
//! client. So a slow or dead client only ever fills its *own* queue; when that queue holds
//! more than [`ChatOptions::queue_limit`] bytes, the member is disconnected (and the
//! server logs it) instead of slowing anyone down or growing memory.
//!
//! The code sees byte streams, never sockets; the room itself is plain data and is tested
//! without any I/O.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::framing::{Framer, Framing};
use crate::shutdown::Shutdown;
use crate::transport::PeerAddr;

/// Settings of a chat room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatOptions {
    /// The longest line a client may send (`--max-line`); a longer one disconnects it.
    pub max_line: usize,
    /// Bytes that may wait in one member's queue; a member further behind is disconnected.
    pub queue_limit: usize,
}

impl ChatOptions {
    /// Default per-member queue: hundreds of ordinary lines, and a bounded amount of
    /// memory for a client that stopped reading.
    pub const DEFAULT_QUEUE_LIMIT: usize = 1024 * 1024;
}

impl Default for ChatOptions {
    fn default() -> ChatOptions {
        ChatOptions {
            max_line: 65536,
            queue_limit: ChatOptions::DEFAULT_QUEUE_LIMIT,
        }
    }
}

/// The connected clients of one chat server.
#[derive(Debug)]
pub struct Room {
    options: ChatOptions,
    members: Mutex<BTreeMap<u64, Member>>,
    /// The number in the next member's tag: members are `<user1>`, `<user2>`, … in the
    /// order they joined, whichever server thread accepted them.
    next_number: AtomicU64,
}

/// The room's side of one member.
#[derive(Debug)]
struct Member {
    /// `<user3>`.
    tag: String,
    /// The client's address, for the join announcement.
    peer: String,
    /// The member's queue; its connection task writes what arrives here to the client.
    tx: mpsc::UnboundedSender<Bytes>,
    /// Bytes in the queue, not yet written: the bound that keeps the queue finite.
    queued: Arc<AtomicUsize>,
    /// Cancelled when the member is disconnected for being too slow.
    kicked: CancellationToken,
}

/// A member's side of its place in the room: what its connection task holds.
#[derive(Debug)]
pub struct Seat {
    /// The member's id (the server's connection id).
    pub id: u64,
    /// Its tag as others see it (`<user3>`).
    pub tag: String,
    inbox: mpsc::UnboundedReceiver<Bytes>,
    queued: Arc<AtomicUsize>,
    kicked: CancellationToken,
}

/// What happened when a message was offered to a member.
enum Offer {
    Queued,
    /// The member's queue is over the limit: disconnect it.
    TooSlow,
}

impl Room {
    /// An empty room.
    pub fn new(options: ChatOptions) -> Room {
        Room {
            options,
            members: Mutex::new(BTreeMap::new()),
            next_number: AtomicU64::new(1),
        }
    }

    /// The room's settings.
    pub fn options(&self) -> &ChatOptions {
        &self.options
    }

    /// How many members are connected.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nobody is connected.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The member map. A panic while holding the lock cannot leave it half-updated (every
    /// change is a single insert or remove), so a poisoned lock is still usable.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Member>> {
        self.members
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds a member: welcomes it with the list of who is here, announces it to the others.
    pub fn join(&self, id: u64, peer: &str) -> Seat {
        let number = self.next_number.fetch_add(1, Ordering::Relaxed);
        let tag = format!("<user{number}>");
        let (tx, inbox) = mpsc::unbounded_channel();
        let member = Member {
            tag: tag.clone(),
            peer: peer.to_string(),
            tx,
            queued: Arc::new(AtomicUsize::new(0)),
            kicked: CancellationToken::new(),
        };
        let seat = Seat {
            id,
            tag: tag.clone(),
            inbox,
            queued: Arc::clone(&member.queued),
            kicked: member.kicked.clone(),
        };
        let mut members = self.lock();
        let others: Vec<String> = members
            .values()
            .map(|m| format!("{} ({})", m.tag, m.peer))
            .collect();
        let welcome = if others.is_empty() {
            format!("<announce> you are {tag}; nobody else is connected.\n")
        } else {
            format!(
                "<announce> you are {tag}; already connected: {}.\n",
                others.join(", ")
            )
        };
        // A fresh queue is empty, so the welcome always fits.
        let _ = self.offer(&member, Bytes::from(welcome));
        members.insert(id, member);
        let joined = format!("<announce> {peer} is connected as {tag}.\n");
        self.broadcast(&mut members, Some(id), Bytes::from(joined));
        seat
    }

    /// Delivers one line from member `from` to every other member, as `<userN> line`.
    /// A line from a member no longer in the room (just disconnected) is dropped.
    pub fn say(&self, from: u64, line: &[u8], terminator: &[u8]) {
        let mut members = self.lock();
        let Some(sender) = members.get(&from) else {
            return;
        };
        let terminator: &[u8] = if terminator.is_empty() {
            b"\n"
        } else {
            terminator
        };
        let mut message = Vec::with_capacity(sender.tag.len() + 1 + line.len() + 2);
        message.extend_from_slice(sender.tag.as_bytes());
        message.push(b' ');
        message.extend_from_slice(line);
        message.extend_from_slice(terminator);
        self.broadcast(&mut members, Some(from), Bytes::from(message));
    }

    /// Removes a member (if still present) and tells the others. Idempotent.
    pub fn leave(&self, id: u64) {
        let mut members = self.lock();
        if let Some(member) = members.remove(&id) {
            let left = format!("<announce> {} is disconnected.\n", member.tag);
            self.broadcast(&mut members, None, Bytes::from(left));
        }
    }

    /// Offers `message` to every member but `except`; disconnects those too far behind and
    /// announces their leaving (which may, in turn, find others too far behind).
    fn broadcast(&self, members: &mut BTreeMap<u64, Member>, except: Option<u64>, message: Bytes) {
        let mut pending = vec![(except, message)];
        while let Some((except, message)) = pending.pop() {
            let too_slow: Vec<u64> = members
                .iter()
                .filter(|(id, _)| Some(**id) != except)
                .filter(|(_, member)| matches!(self.offer(member, message.clone()), Offer::TooSlow))
                .map(|(id, _)| *id)
                .collect();
            for id in too_slow {
                if let Some(member) = members.remove(&id) {
                    tracing::warn!(
                        "chat: {} ({}) has {} bytes waiting, over the {}-byte limit; disconnecting it",
                        member.tag,
                        member.peer,
                        member.queued.load(Ordering::Relaxed),
                        self.options.queue_limit
                    );
                    member.kicked.cancel();
                    let left = format!("<announce> {} is disconnected.\n", member.tag);
                    pending.push((None, Bytes::from(left)));
                }
            }
        }
    }

    /// Queues `message` for `member` unless that would put it over the limit.
    fn offer(&self, member: &Member, message: Bytes) -> Offer {
        let len = message.len();
        if member.queued.load(Ordering::Relaxed) + len > self.options.queue_limit {
            return Offer::TooSlow;
        }
        member.queued.fetch_add(len, Ordering::Relaxed);
        // A closed receiver means the member's connection is ending; it leaves on its own.
        if member.tx.send(message).is_err() {
            member.queued.fetch_sub(len, Ordering::Relaxed);
        }
        Offer::Queued
    }
}

/// How a chat member's connection ended.
#[derive(Debug)]
pub enum ChatEnd {
    /// The client closed its side.
    Closed,
    /// Reading from or writing to the client failed (reset…).
    ClientFailed(io::Error),
    /// The client sent a line longer than `max_line`.
    LineTooLong(usize),
    /// The client did not read fast enough and its queue overflowed.
    TooSlow,
    /// Nothing moved in either direction for this long.
    Idle(Duration),
    /// The server is shutting down.
    Shutdown,
}

/// What happened on one chat connection.
#[derive(Debug)]
pub struct ChatReport {
    /// Why it ended.
    pub end: ChatEnd,
    /// Lines received from the client.
    pub lines: u64,
    /// Bytes read from the client.
    pub bytes_in: u64,
    /// Bytes written to the client.
    pub bytes_out: u64,
}

/// The message being written to the client, and how much of it is out.
struct Outgoing {
    current: Option<Bytes>,
}

/// What one step of writing to the client did.
enum WriteStep {
    Wrote(usize),
    Failed(io::Error),
}

impl Outgoing {
    /// Writes part of the current message, or waits for the next one. Cancel-safe.
    async fn step<W: AsyncWrite + Unpin>(&mut self, seat: &mut Seat, writer: &mut W) -> WriteStep {
        loop {
            if let Some(message) = self.current.as_mut() {
                return match writer.write(message).await {
                    Ok(0) => WriteStep::Failed(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        message.advance(n);
                        seat.queued.fetch_sub(n, Ordering::Relaxed);
                        if message.is_empty() {
                            self.current = None;
                        }
                        WriteStep::Wrote(n)
                    }
                    Err(e) => WriteStep::Failed(e),
                };
            }
            match seat.inbox.recv().await {
                Some(message) => self.current = Some(message),
                // The room dropped this member's sender: nothing more will come.
                None => return std::future::pending().await,
            }
        }
    }
}

/// Serves one chat client: joins the room, relays its lines to the others and theirs to
/// it, leaves the room. `on_line` sees each line the client sent (for the event log).
pub async fn serve_member<S>(
    room: &Room,
    id: u64,
    peer: &PeerAddr,
    stream: S,
    idle_timeout: Option<Duration>,
    shutdown: &Shutdown,
    on_line: &mut (dyn FnMut(&[u8]) + Send),
) -> ChatReport
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut seat = room.join(id, &peer.to_string());
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut report = ChatReport {
        end: ChatEnd::Closed,
        lines: 0,
        bytes_in: 0,
        bytes_out: 0,
    };
    let mut input = BytesMut::with_capacity(4096);
    let mut framer = Framer::new(Framing::Line {
        max_len: room.options().max_line,
    });
    let mut outgoing = Outgoing { current: None };
    let mut last_activity = Instant::now();
    let kicked = seat.kicked.clone();
    let end = loop {
        let idle_at = idle_timeout.map(|d| last_activity + d);
        input.reserve(4096);
        tokio::select! {
            biased;
            () = shutdown.triggered() => break ChatEnd::Shutdown,
            () = kicked.cancelled() => break ChatEnd::TooSlow,
            step = outgoing.step(&mut seat, &mut writer) => match step {
                WriteStep::Wrote(n) => {
                    report.bytes_out += n as u64;
                    last_activity = Instant::now();
                }
                WriteStep::Failed(e) => break ChatEnd::ClientFailed(e),
            },
            read = reader.read_buf(&mut input) => match read {
                Ok(0) => {
                    if let Some(span) = framer.finish(&input) {
                        on_line(&input[span.payload.clone()]);
                        room.say(id, &input[span.payload], b"");
                        report.lines += 1;
                    }
                    break ChatEnd::Closed;
                }
                Ok(n) => {
                    report.bytes_in += n as u64;
                    last_activity = Instant::now();
                    if let Err(too_long) = pass_lines(room, id, &mut framer, &mut input, &mut report, on_line) {
                        break ChatEnd::LineTooLong(too_long);
                    }
                }
                Err(e) => break ChatEnd::ClientFailed(e),
            },
            () = sleep_until(idle_at) => break ChatEnd::Idle(idle_timeout.unwrap_or_default()),
        }
    };
    room.leave(id);
    if matches!(end, ChatEnd::Closed | ChatEnd::Shutdown | ChatEnd::Idle(_)) {
        // Our FIN, bounded: the client may not be reading.
        let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
    }
    report.end = end;
    report
}

/// Hands every complete line in `input` to the room; returns the limit on an overlong line.
fn pass_lines(
    room: &Room,
    id: u64,
    framer: &mut Framer,
    input: &mut BytesMut,
    report: &mut ChatReport,
    on_line: &mut (dyn FnMut(&[u8]) + Send),
) -> Result<(), usize> {
    loop {
        match framer.next_frame(input) {
            Ok(Some(span)) => {
                on_line(&input[span.payload.clone()]);
                room.say(
                    id,
                    &input[span.payload.clone()],
                    &input[span.terminator.clone()],
                );
                report.lines += 1;
                input.advance(span.consumed());
            }
            Ok(None) => return Ok(()),
            Err(too_long) => return Err(too_long.max_len),
        }
    }
}

/// Sleeps until `deadline`; never completes without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Everything queued for a seat so far, as text.
    fn drain(seat: &mut Seat) -> String {
        let mut out = String::new();
        while let Ok(message) = seat.inbox.try_recv() {
            seat.queued.fetch_sub(message.len(), Ordering::Relaxed);
            out.push_str(&String::from_utf8_lossy(&message));
        }
        out
    }

    #[test]
    fn lines_reach_everyone_but_the_sender_with_its_tag() {
        let room = Room::new(ChatOptions::default());
        let mut one = room.join(1, "10.0.0.1:1");
        assert_eq!(
            drain(&mut one),
            "<announce> you are <user1>; nobody else is connected.\n"
        );
        let mut two = room.join(2, "10.0.0.2:2");
        assert_eq!(
            drain(&mut two),
            "<announce> you are <user2>; already connected: <user1> (10.0.0.1:1).\n"
        );
        assert_eq!(
            drain(&mut one),
            "<announce> 10.0.0.2:2 is connected as <user2>.\n"
        );
        let mut three = room.join(3, "10.0.0.3:3");
        drain(&mut one);
        drain(&mut two);
        drain(&mut three);

        room.say(1, b"hello", b"\r\n");
        assert_eq!(drain(&mut one), "");
        assert_eq!(drain(&mut two), "<user1> hello\r\n");
        assert_eq!(drain(&mut three), "<user1> hello\r\n");

        room.leave(2);
        room.leave(2);
        assert_eq!(drain(&mut one), "<announce> <user2> is disconnected.\n");
        assert_eq!(drain(&mut three), "<announce> <user2> is disconnected.\n");
        assert_eq!(room.len(), 2);
    }

    #[test]
    fn a_member_too_far_behind_is_disconnected_not_waited_for() {
        let room = Room::new(ChatOptions {
            max_line: 100,
            queue_limit: 200,
        });
        let mut talker = room.join(1, "a");
        let mut reader = room.join(2, "b");
        let slow = room.join(3, "c");
        drain(&mut talker);
        drain(&mut reader);
        for i in 0..50 {
            room.say(1, format!("line {i:02}").as_bytes(), b"\n");
            // The reader keeps up; the slow member never reads.
            drain(&mut reader);
        }
        assert!(slow.kicked.is_cancelled(), "the slow member must be kicked");
        assert_eq!(room.len(), 2);
        let leave = "<announce> <user3> is disconnected.\n";
        assert!(drain(&mut talker).contains(leave));
        // Everything said after the kick still reached the reader.
        room.say(1, b"still here", b"\n");
        assert_eq!(drain(&mut reader), "<user1> still here\n");
        assert!(slow.queued.load(Ordering::Relaxed) <= 200);
    }

    #[test]
    fn a_member_that_left_cannot_speak() {
        let room = Room::new(ChatOptions::default());
        let mut one = room.join(1, "a");
        let _two = room.join(2, "b");
        room.leave(2);
        drain(&mut one);
        room.say(2, b"ghost", b"\n");
        assert_eq!(drain(&mut one), "");
    }

    #[tokio::test]
    async fn members_chat_over_streams() {
        let room = Arc::new(Room::new(ChatOptions::default()));
        let shutdown = Shutdown::new();
        let peer = PeerAddr::Ip(std::net::SocketAddr::from(([127, 0, 0, 1], 1)));
        let (mut a, a_server) = tokio::io::duplex(4096);
        let (mut b, b_server) = tokio::io::duplex(4096);
        let serve = |id, stream| {
            let (room, shutdown, peer) = (Arc::clone(&room), shutdown.clone(), peer.clone());
            tokio::spawn(async move {
                serve_member(&room, id, &peer, stream, None, &shutdown, &mut |_| {}).await
            })
        };
        let a_task = serve(1, a_server);
        let mut welcome = [0u8; 54];
        a.read_exact(&mut welcome)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let b_task = serve(2, b_server);
        let mut buf = vec![0u8; 256];
        // a hears b join, then b says hi and a hears it.
        let n = a.read(&mut buf).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(String::from_utf8_lossy(&buf[..n]).contains("connected as <user2>"));
        let n = b.read(&mut buf).await.unwrap_or_else(|e| panic!("{e}"));
        assert!(String::from_utf8_lossy(&buf[..n]).contains("you are <user2>"));
        b.write_all(b"hi\n").await.unwrap_or_else(|e| panic!("{e}"));
        let n = a.read(&mut buf).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf[..n], b"<user2> hi\n");
        drop(b);
        let n = a.read(&mut buf).await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&buf[..n], b"<announce> <user2> is disconnected.\n");
        let b_report = b_task.await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(b_report.lines, 1);
        shutdown.trigger();
        let a_report = a_task.await.unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(a_report.end, ChatEnd::Shutdown));
        assert!(room.is_empty());
    }
}
