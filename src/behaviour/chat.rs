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
//! mutex, and the connection that reads a line hands it to every other member's mailbox.
//! Each member's own connection task writes its mailbox to its client. So a slow or dead
//! client only ever fills its *own* mailbox.
//!
//! Memory is bounded by what it really costs, not by the text alone:
//! * **One buffer per line.** A line is built once and shared (`Arc`) by every mailbox
//!   holding it; each mailbox entry is one pointer.
//! * **Each member** may hold at most [`ChatOptions::queue_limit`] bytes, counting for every
//!   queued line its whole allocation ([`line_cost`]) and its mailbox entry
//!   ([`ENTRY_COST`]); a member further behind is disconnected (and the server logs it).
//! * **The whole room** (every live line once, every mailbox entry) stays under
//!   [`ChatOptions::room_limit`] (`--chat-memory`); when a line would go over, the members
//!   furthest behind are disconnected first.
//! * **Each sender** is paced by [`SenderRate`] (lines and bytes per second): a flooder is
//!   slowed down (its socket is simply not read, so TCP pushes back), and cannot fill the
//!   mailbox of a member who reads at a normal pace.
//!
//! The code sees byte streams, never sockets; the room itself is plain data and is tested
//! without any I/O.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::endpoint::PeerAddr;
use crate::framing::{Framer, Framing};
use crate::shutdown::Shutdown;

/// Settings of a chat room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatOptions {
    /// The longest line a client may send (`--max-line`); a longer one disconnects it.
    pub max_line: usize,
    /// Bytes (real cost, see [`line_cost`]) that may wait in one member's mailbox; a member
    /// further behind is disconnected.
    pub queue_limit: usize,
    /// Bytes the whole room may hold (`--chat-memory`): every live line once, plus every
    /// mailbox entry.
    pub room_limit: usize,
    /// How fast one member may send.
    pub rate: SenderRate,
}

/// The pace one sender may keep (`--chat-rate`, `--chat-bytes-rate`); 0 means no limit.
/// A sender may burst one second's worth, then waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SenderRate {
    /// Lines per second.
    pub lines_per_sec: u32,
    /// Bytes of text per second.
    pub bytes_per_sec: u64,
}

impl SenderRate {
    /// Default: far more than anyone types, far less than a flood.
    pub const DEFAULT: SenderRate = SenderRate {
        lines_per_sec: 100,
        bytes_per_sec: 256 * 1024,
    };
}

impl ChatOptions {
    /// Default per-member queue: thousands of ordinary lines, and a bounded amount of
    /// memory for a client that stopped reading.
    pub const DEFAULT_QUEUE_LIMIT: usize = 1024 * 1024;
    /// Default for the whole room (`--chat-memory`).
    pub const DEFAULT_ROOM_LIMIT: usize = 64 * 1024 * 1024;
}

impl Default for ChatOptions {
    fn default() -> ChatOptions {
        ChatOptions {
            max_line: 65536,
            queue_limit: ChatOptions::DEFAULT_QUEUE_LIMIT,
            room_limit: ChatOptions::DEFAULT_ROOM_LIMIT,
            rate: SenderRate::DEFAULT,
        }
    }
}

/// What one mailbox entry costs: the pointer in the queue, twice over because a queue's
/// storage grows by doubling.
pub const ENTRY_COST: usize = 2 * std::mem::size_of::<Arc<Line>>();

/// What one heap allocation of `size` bytes takes from a malloc of glibc's shape: an
/// 8-byte header, 16-byte granules, 32 bytes at least.
fn allocation(size: usize) -> usize {
    (size + 8).next_multiple_of(16).max(32)
}

/// What a line of `len` bytes costs while it lives: its text and its shared header.
pub fn line_cost(len: usize) -> usize {
    // The `Arc`'s block holds two counters and the `Line`.
    allocation(2 * std::mem::size_of::<usize>() + std::mem::size_of::<Line>()) + allocation(len)
}

/// The room's memory in use, in the units of [`line_cost`] and [`ENTRY_COST`].
#[derive(Debug, Default)]
struct Budget {
    used: AtomicUsize,
    /// The most used since memory was last handed back to the system.
    peak: AtomicUsize,
}

impl Budget {
    fn charge(&self, bytes: usize) {
        let now = self.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    fn release(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// One line as every member receives it (`<user1> hello\n`), built once and shared.
#[derive(Debug)]
pub struct Line {
    text: Box<[u8]>,
    /// Its cost, given back to the budget when the last holder drops it.
    cost: usize,
    budget: Arc<Budget>,
}

impl Line {
    fn new(text: Vec<u8>, budget: &Arc<Budget>) -> Arc<Line> {
        let text = text.into_boxed_slice();
        let cost = line_cost(text.len());
        budget.charge(cost);
        Arc::new(Line {
            text,
            cost,
            budget: Arc::clone(budget),
        })
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        self.budget.release(self.cost);
    }
}

/// Lines waiting for one member, shared by the room (which fills it) and the member's
/// connection task (which empties it).
#[derive(Debug, Default)]
struct Mailbox {
    queue: Mutex<Queue>,
    /// Woken when a line arrives.
    ready: Notify,
    /// Cancelled when the member is disconnected for being too far behind.
    kicked: CancellationToken,
}

#[derive(Debug, Default)]
struct Queue {
    lines: VecDeque<Arc<Line>>,
    /// What the queued lines cost, whole lines and entries: the member's share.
    cost: usize,
}

/// A mailbox that grew past this many entries gives its storage back once empty.
const SHRINK_ABOVE: usize = 1024;

impl Mailbox {
    /// The queue. Every change is a single push, pop or clear, so a poisoned lock still
    /// holds a consistent queue.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What this member's mailbox holds.
    fn cost(&self) -> usize {
        self.lock().cost
    }

    /// Takes the oldest line.
    fn pop(&self, budget: &Budget) -> Option<Arc<Line>> {
        let mut queue = self.lock();
        let line = queue.lines.pop_front()?;
        queue.cost -= line.cost + ENTRY_COST;
        budget.release(ENTRY_COST);
        if queue.lines.is_empty() && queue.lines.capacity() > SHRINK_ABOVE {
            queue.lines.shrink_to(16);
        }
        Some(line)
    }

    /// Drops every queued line (the member is leaving).
    fn clear(&self, budget: &Budget) {
        let mut queue = self.lock();
        budget.release(queue.lines.len() * ENTRY_COST);
        queue.lines = VecDeque::new();
        queue.cost = 0;
    }

    /// Waits for and takes the next line. Cancel-safe: a line is only taken when returned.
    async fn next(&self, budget: &Budget) -> Arc<Line> {
        loop {
            if let Some(line) = self.pop(budget) {
                return line;
            }
            self.ready.notified().await;
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
    /// Memory held by the room's lines and mailboxes.
    budget: Arc<Budget>,
}

/// The room's side of one member.
#[derive(Debug)]
struct Member {
    /// `<user3>`.
    tag: String,
    /// The client's address, for the join announcement.
    peer: String,
    /// The member's mailbox; its connection task writes what arrives here to the client.
    mailbox: Arc<Mailbox>,
}

/// A member's side of its place in the room: what its connection task holds.
#[derive(Debug)]
pub struct Seat {
    /// The member's id (the server's connection id).
    pub id: u64,
    /// Its tag as others see it (`<user3>`).
    pub tag: String,
    mailbox: Arc<Mailbox>,
    budget: Arc<Budget>,
}

/// What happened when a line was offered to a member.
enum Offer {
    Queued,
    /// The member's mailbox is over the limit: disconnect it.
    TooSlow,
}

/// Once the room empties after holding this much, its memory is handed back to the system.
const TRIM_AFTER: usize = 4 * 1024 * 1024;

impl Room {
    /// An empty room.
    pub fn new(options: ChatOptions) -> Room {
        Room {
            options,
            members: Mutex::new(BTreeMap::new()),
            next_number: AtomicU64::new(1),
            budget: Arc::new(Budget::default()),
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

    /// Bytes the room's lines and mailboxes hold now (the figure `--chat-memory` bounds).
    pub fn memory(&self) -> usize {
        self.budget.used()
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
        let member = Member {
            tag: tag.clone(),
            peer: peer.to_string(),
            mailbox: Arc::new(Mailbox::default()),
        };
        let seat = Seat {
            id,
            tag: tag.clone(),
            mailbox: Arc::clone(&member.mailbox),
            budget: Arc::clone(&self.budget),
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
        let welcome = Line::new(welcome.into_bytes(), &self.budget);
        // A fresh mailbox is empty; the welcome fits unless the limit is absurdly small,
        // and then the member is told nothing rather than kicked before it joined.
        let _ = self.offer(&member, &welcome);
        members.insert(id, member);
        let joined = format!("<announce> {peer} is connected as {tag}.\n");
        self.broadcast(&mut members, Some(id), joined.into_bytes());
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
        let mut message = Vec::with_capacity(sender.tag.len() + 1 + line.len() + terminator.len());
        message.extend_from_slice(sender.tag.as_bytes());
        message.push(b' ');
        message.extend_from_slice(line);
        message.extend_from_slice(terminator);
        self.broadcast(&mut members, Some(from), message);
    }

    /// Removes a member (if still present) and tells the others. Idempotent.
    pub fn leave(&self, id: u64) {
        let mut members = self.lock();
        if let Some(member) = members.remove(&id) {
            member.mailbox.clear(&self.budget);
            let left = format!("<announce> {} is disconnected.\n", member.tag);
            self.broadcast(&mut members, None, left.into_bytes());
        }
        if members.is_empty() {
            self.give_memory_back();
        }
    }

    /// Once the room is empty after a busy spell, hands freed memory back to the system:
    /// the allocator keeps freed pages of its per-thread arenas otherwise, and a flood's
    /// peak would stay in the server's resident size for good.
    fn give_memory_back(&self) {
        if self.budget.peak.swap(self.budget.used(), Ordering::Relaxed) < TRIM_AFTER {
            return;
        }
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: malloc_trim only returns free pages to the kernel; it touches no memory
        // the program still owns.
        unsafe {
            libc::malloc_trim(0);
        }
    }

    /// Offers `message` to every member but `except`; disconnects those too far behind and
    /// announces their leaving (which may, in turn, find others too far behind).
    fn broadcast(
        &self,
        members: &mut BTreeMap<u64, Member>,
        except: Option<u64>,
        message: Vec<u8>,
    ) {
        let mut pending = vec![(except, message)];
        while let Some((except, message)) = pending.pop() {
            let line = Line::new(message, &self.budget);
            let recipients =
                members.len() - usize::from(except.is_some_and(|id| members.contains_key(&id)));
            let mut dropped = self.make_room(members, recipients * ENTRY_COST);
            let too_slow: Vec<u64> = members
                .iter()
                .filter(|(id, _)| Some(**id) != except)
                .filter(|(_, member)| matches!(self.offer(member, &line), Offer::TooSlow))
                .map(|(id, _)| *id)
                .collect();
            for member in too_slow.iter().filter_map(|id| members.remove(id)) {
                tracing::warn!(
                    "chat: {} ({}) has {} bytes waiting, over the {}-byte limit; disconnecting it",
                    member.tag,
                    member.peer,
                    member.mailbox.cost(),
                    self.options.queue_limit
                );
                dropped.push(member);
            }
            for member in dropped {
                member.mailbox.clear(&self.budget);
                member.mailbox.kicked.cancel();
                let left = format!("<announce> {} is disconnected.\n", member.tag);
                pending.push((None, left.into_bytes()));
            }
        }
    }

    /// Disconnects the members furthest behind until `extra` more bytes fit in the room;
    /// returns them (already out of the map). When nobody has anything waiting, the line
    /// goes out anyway: the room then exceeds its limit by at most that one line.
    fn make_room(&self, members: &mut BTreeMap<u64, Member>, extra: usize) -> Vec<Member> {
        let mut dropped = Vec::new();
        while self.budget.used().saturating_add(extra) > self.options.room_limit {
            let furthest = members
                .iter()
                .map(|(id, member)| (member.mailbox.cost(), *id))
                .filter(|(cost, _)| *cost > 0)
                .max();
            let Some((cost, id)) = furthest else { break };
            let Some(member) = members.remove(&id) else {
                break;
            };
            tracing::warn!(
                "chat: the room holds {} bytes, at its {}-byte limit (--chat-memory); \
                 disconnecting {} ({}), furthest behind with {cost} bytes waiting",
                self.budget.used(),
                self.options.room_limit,
                member.tag,
                member.peer
            );
            member.mailbox.clear(&self.budget);
            dropped.push(member);
        }
        dropped
    }

    /// Queues `line` for `member` unless that would put it over its limit.
    fn offer(&self, member: &Member, line: &Arc<Line>) -> Offer {
        let charge = line.cost + ENTRY_COST;
        {
            let mut queue = member.mailbox.lock();
            if queue.cost + charge > self.options.queue_limit {
                return Offer::TooSlow;
            }
            // Charged before the entry is visible, so the writer's release never comes first.
            self.budget.charge(ENTRY_COST);
            queue.cost += charge;
            queue.lines.push_back(Arc::clone(line));
        }
        member.mailbox.ready.notify_one();
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

/// Bytes of queued lines gathered into one write: a member that fell behind catches up
/// with a few large writes rather than one small write per line.
const WRITE_BATCH: usize = 16 * 1024;

/// The lines being written to the client (copied out of the mailbox, so their shared
/// buffers are freed at once), and how much of them is out.
struct Outgoing {
    pending: Vec<u8>,
    written: usize,
}

/// What one step of writing to the client did.
enum WriteStep {
    Wrote(usize),
    Failed(io::Error),
}

impl Outgoing {
    /// Writes part of the pending lines, or waits for more. Cancel-safe: lines leave the
    /// mailbox only into `pending`, and `written` moves only after a write completes.
    async fn step<W: AsyncWrite + Unpin>(&mut self, seat: &Seat, writer: &mut W) -> WriteStep {
        if self.written == self.pending.len() {
            self.pending.clear();
            self.written = 0;
            if self.pending.capacity() > 4 * WRITE_BATCH {
                self.pending = Vec::new();
            }
            let first = seat.mailbox.next(&seat.budget).await;
            self.pending.extend_from_slice(&first.text);
            while self.pending.len() < WRITE_BATCH {
                let Some(line) = seat.mailbox.pop(&seat.budget) else {
                    break;
                };
                self.pending.extend_from_slice(&line.text);
            }
        }
        match writer.write(&self.pending[self.written..]).await {
            Ok(0) => WriteStep::Failed(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                self.written += n;
                WriteStep::Wrote(n)
            }
            Err(e) => WriteStep::Failed(e),
        }
    }
}

/// Paces one sender: a token bucket for lines and one for bytes, each holding up to one
/// second's worth. A line may overdraw the byte bucket (so a line longer than a second's
/// bytes still goes), and the sender then waits until it is back above zero.
struct Pacer {
    rate: SenderRate,
    lines: f64,
    bytes: f64,
    refilled: Instant,
}

impl Pacer {
    fn new(rate: SenderRate) -> Pacer {
        Pacer {
            rate,
            lines: f64::from(rate.lines_per_sec),
            bytes: rate.bytes_per_sec as f64,
            refilled: Instant::now(),
        }
    }

    /// `None` when the sender may send a line now, else when it may.
    fn wait(&mut self) -> Option<Instant> {
        let now = Instant::now();
        let elapsed = now.duration_since(self.refilled).as_secs_f64();
        self.refilled = now;
        let (lines_rate, bytes_rate) = (
            f64::from(self.rate.lines_per_sec),
            self.rate.bytes_per_sec as f64,
        );
        self.lines = (self.lines + elapsed * lines_rate).min(lines_rate);
        self.bytes = (self.bytes + elapsed * bytes_rate).min(bytes_rate);
        let lines_wait = if lines_rate > 0.0 && self.lines < 1.0 {
            (1.0 - self.lines) / lines_rate
        } else {
            0.0
        };
        let bytes_wait = if bytes_rate > 0.0 && self.bytes <= 0.0 {
            (1.0 - self.bytes) / bytes_rate
        } else {
            0.0
        };
        let wait = lines_wait.max(bytes_wait);
        (wait > 0.0).then(|| now + Duration::from_secs_f64(wait))
    }

    /// Takes one line of `len` bytes from the buckets.
    fn spend(&mut self, len: usize) {
        self.lines -= 1.0;
        self.bytes -= len as f64;
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
    let seat = room.join(id, &peer.to_string());
    let (mut reader, mut writer) = tokio::io::split(stream);
    let mut report = ChatReport {
        end: ChatEnd::Closed,
        lines: 0,
        bytes_in: 0,
        bytes_out: 0,
    };
    let mut input = BytesMut::with_capacity(4096);
    let mut sender = Sender {
        room,
        id,
        framer: Framer::new(Framing::Line {
            max_len: room.options().max_line,
        }),
        pacer: Pacer::new(room.options().rate),
    };
    let mut outgoing = Outgoing {
        pending: Vec::new(),
        written: 0,
    };
    let mut last_activity = Instant::now();
    let mut paused_until: Option<Instant> = None;
    let kicked = seat.mailbox.kicked.clone();
    let end = loop {
        let idle_at = idle_timeout.map(|d| last_activity + d);
        input.reserve(4096);
        tokio::select! {
            biased;
            () = shutdown.triggered() => break ChatEnd::Shutdown,
            () = kicked.cancelled() => break ChatEnd::TooSlow,
            step = outgoing.step(&seat, &mut writer) => match step {
                WriteStep::Wrote(n) => {
                    report.bytes_out += n as u64;
                    last_activity = Instant::now();
                }
                WriteStep::Failed(e) => break ChatEnd::ClientFailed(e),
            },
            () = sleep_until(paused_until), if paused_until.is_some() => {
                tokio::task::yield_now().await;
                match sender.pass_lines(&mut input, &mut report, on_line) {
                    Ok(until) => paused_until = until,
                    Err(too_long) => break ChatEnd::LineTooLong(too_long),
                }
            }
            read = reader.read_buf(&mut input), if paused_until.is_none() => match read {
                Ok(0) => {
                    if let Some(span) = sender.framer.finish(&input) {
                        on_line(&input[span.payload.clone()]);
                        room.say(id, &input[span.payload], b"");
                        report.lines += 1;
                    }
                    break ChatEnd::Closed;
                }
                Ok(n) => {
                    report.bytes_in += n as u64;
                    last_activity = Instant::now();
                    match sender.pass_lines(&mut input, &mut report, on_line) {
                        Ok(until) => paused_until = until,
                        Err(too_long) => break ChatEnd::LineTooLong(too_long),
                    }
                }
                Err(e) => break ChatEnd::ClientFailed(e),
            },
            () = sleep_until(idle_at) => break ChatEnd::Idle(idle_timeout.unwrap_or_default()),
        }
    };
    room.leave(id);
    drop(outgoing);
    drop(seat);
    if matches!(end, ChatEnd::Closed | ChatEnd::Shutdown | ChatEnd::Idle(_)) {
        // Our FIN, bounded: the client may not be reading.
        let _ = tokio::time::timeout(Duration::from_secs(1), writer.shutdown()).await;
    }
    report.end = end;
    report
}

/// The reading side of one member: cuts its input into lines and hands them to the room
/// at the pace its [`Pacer`] allows.
struct Sender<'a> {
    room: &'a Room,
    id: u64,
    framer: Framer,
    pacer: Pacer,
}

impl Sender<'_> {
    /// Hands complete lines in `input` to the room until none is left (`Ok(None)`) or the
    /// sender must wait (`Ok(Some(until))`, the rest stays in `input`): for its pace, or
    /// after [`LINES_PER_TURN`] lines. Returns the limit on an overlong line.
    fn pass_lines(
        &mut self,
        input: &mut BytesMut,
        report: &mut ChatReport,
        on_line: &mut (dyn FnMut(&[u8]) + Send),
    ) -> Result<Option<Instant>, usize> {
        for _ in 0..LINES_PER_TURN {
            if let Some(until) = self.pacer.wait() {
                return Ok(Some(until));
            }
            match self.framer.next_frame(input) {
                Ok(Some(span)) => {
                    on_line(&input[span.payload.clone()]);
                    self.pacer.spend(span.payload.len());
                    self.room.say(
                        self.id,
                        &input[span.payload.clone()],
                        &input[span.terminator.clone()],
                    );
                    report.lines += 1;
                    input.advance(span.consumed());
                }
                Ok(None) => return Ok(None),
                Err(too_long) => return Err(too_long.max_len),
            }
        }
        // More lines are waiting: let the other members' tasks write before going on.
        Ok(Some(Instant::now()))
    }
}

/// Lines one sender hands to the room before the other members' tasks get a turn (on
/// this thread): a flood read in one go cannot starve the members that write it out.
const LINES_PER_TURN: usize = 256;

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
        while let Some(line) = seat.mailbox.pop(&seat.budget) {
            out.push_str(&String::from_utf8_lossy(&line.text));
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
            queue_limit: 1000,
            ..ChatOptions::default()
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
        assert!(
            slow.mailbox.kicked.is_cancelled(),
            "the slow member must be kicked"
        );
        assert_eq!(room.len(), 2);
        let leave = "<announce> <user3> is disconnected.\n";
        assert!(drain(&mut talker).contains(leave));
        // Everything said after the kick still reached the reader.
        room.say(1, b"still here", b"\n");
        assert_eq!(drain(&mut reader), "<user1> still here\n");
        assert_eq!(slow.mailbox.cost(), 0, "a kicked member's lines are freed");
    }

    #[test]
    fn a_line_is_stored_once_however_many_members_hold_it() {
        let room = Room::new(ChatOptions::default());
        let mut seats: Vec<Seat> = (0..10).map(|id| room.join(id, "p")).collect();
        for seat in &mut seats {
            drain(seat);
        }
        assert_eq!(room.memory(), 0);
        room.say(0, b"hello", b"\n");
        let text = "<user1> hello\n".len();
        assert_eq!(room.memory(), line_cost(text) + 9 * ENTRY_COST);
        for seat in &mut seats {
            drain(seat);
        }
        assert_eq!(room.memory(), 0, "everything is given back once written");
    }

    #[test]
    fn the_room_limit_disconnects_the_members_furthest_behind() {
        let limit = 64 * 1024;
        let room = Room::new(ChatOptions {
            room_limit: limit,
            ..ChatOptions::default()
        });
        let mut talker = room.join(0, "talker");
        let mut reader = room.join(1, "reader");
        let sleepers: Vec<Seat> = (2..50).map(|id| room.join(id, "sleeper")).collect();
        for _ in 0..2000 {
            room.say(0, b"f", b"\n");
            drain(&mut talker);
            drain(&mut reader);
            assert!(room.memory() <= limit + line_cost(64), "{}", room.memory());
        }
        assert!(sleepers.iter().all(|s| s.mailbox.kicked.is_cancelled()));
        assert!(
            !reader.mailbox.kicked.is_cancelled(),
            "a reader keeps its seat"
        );
        assert_eq!(room.len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_sender_is_paced_to_its_rate() {
        let mut pacer = Pacer::new(SenderRate {
            lines_per_sec: 10,
            bytes_per_sec: 1000,
        });
        for _ in 0..10 {
            assert!(pacer.wait().is_none());
            pacer.spend(1);
        }
        let until = pacer.wait();
        assert!(until.is_some(), "the eleventh line within a second waits");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(pacer.wait().is_none(), "a tenth of a second buys one line");
        pacer.spend(5000);
        assert!(pacer.wait().is_some(), "a long line overdraws the bytes");
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
