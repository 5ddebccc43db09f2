//! The buffered copy path: one direction of one relayed connection, and the counters
//! every copy path keeps.
//!
//! A plain read → write_all loop over one buffer, which is what makes memory bounded: a
//! read happens only once the previous one has been written completely. The buffer
//! starts small and doubles, up to `--buffer`, each time a read fills it: a chatty
//! connection keeps 16 KiB, a bulk transfer gets reads of megabytes.
//!
//! It is the default for every stream pair. Large reads are what make it fast: each
//! wake-up of the relay moves everything queued, so the relay, the sender and the
//! receiver all wake less often. On loopback, reads of up to 4 MiB carried more than
//! iperf3 direct, ahead of the zero-copy path ([`super::splice`], `--copy splice`) at any
//! pipe size (`bench/RESULTS.md`, relay throughput). Both paths keep the same contract:
//! half-close passed on, [`FlowStats`] kept, idle activity noted, at most one buffer's
//! worth held per direction.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::io::poll_read_buf;

use crate::idle::Activity;

/// Byte counters of one direction, summed over every connection of a relay.
///
/// `read - written` is what the relay holds for that direction right now (in its buffers,
/// or in its splice pipes); `peak_buffered` is the most one connection ever held at once.
#[derive(Debug, Default)]
pub struct FlowStats {
    /// Bytes read from the source side (into a buffer, or spliced into a pipe).
    pub read: AtomicU64,
    /// Bytes written to the destination side (from a buffer, or spliced out of a pipe).
    pub written: AtomicU64,
    /// The largest amount one connection held between a read and its write.
    pub peak_buffered: AtomicU64,
}

impl FlowStats {
    /// Notes that one connection holds `bytes` now, for [`FlowStats::peak_buffered`]. A
    /// plain load first: the peak is almost always higher already, and a read costs less
    /// than the locked compare-and-swap of `fetch_max`.
    pub fn note_held(&self, bytes: u64) {
        if bytes > self.peak_buffered.load(Ordering::Relaxed) {
            self.peak_buffered.fetch_max(bytes, Ordering::Relaxed);
        }
    }

    /// Bytes read but not yet written, over all connections.
    pub fn buffered(&self) -> u64 {
        // Written is only ever increased after the matching read, so read ≥ written; load
        // `written` first so a concurrent copy cannot make the difference negative.
        let written = self.written.load(Ordering::Acquire);
        let read = self.read.load(Ordering::Acquire);
        read.saturating_sub(written)
    }
}

/// The first buffer of a copy: enough for any message of a chatty protocol. It is not
/// zero-filled, so a quiet connection keeps only the page or two its reads touched.
const INITIAL_BUFFER: usize = 16 * 1024;

/// The per-connection and relay-wide counters of one direction.
pub(crate) struct Counters<'a> {
    /// This connection's bytes delivered, for its `closed` event.
    pub delivered: &'a AtomicU64,
    /// The relay's totals for the direction.
    pub totals: &'a FlowStats,
}

/// How the second direction to end passes its end on, the first having passed its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LastEnd {
    /// Shuts down the sending side, as the first did: a TLS stream sends its
    /// close_notify, a tap records the end.
    Shutdown,
    /// Leaves it to the close that follows at once: on a plain socket close(2) sends the
    /// same FIN, and one system call per connection is saved.
    Close,
}

/// Where one direction of a copy stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Waiting for bytes from the source.
    Reading,
    /// Writing out `buf[written..]`.
    Writing { written: usize },
    /// The source ended: shutting down the destination's sending side.
    Ending,
    /// The end has been passed on.
    Done,
}

/// One direction of a copy, driven by polls rather than by an `async fn`, so that both
/// directions of a connection run in one future over the two streams themselves (no
/// split halves to lock on every read and write).
///
/// A read happens only once the previous one has been written completely, which is what
/// bounds memory. The buffer starts at [`INITIAL_BUFFER`] (or `--buffer` if smaller) and
/// doubles, up to `limit`, each time a read fills it.
struct Leg<'a> {
    /// The bytes read and not yet written, as many as the last read brought.
    buf: Vec<u8>,
    /// The most the next read may bring.
    capacity: usize,
    /// `--buffer`: what `capacity` grows to.
    limit: usize,
    /// What this direction does next.
    step: Step,
    /// Its counters.
    counters: Counters<'a>,
}

/// What a poll of one direction ended with.
enum Progress {
    /// Bytes moved (and maybe more would, on the next poll).
    Moved,
    /// The end has been passed on: nothing more to do.
    Finished,
}

impl<'a> Leg<'a> {
    fn new(buffer_size: usize, counters: Counters<'a>) -> Leg<'a> {
        let limit = buffer_size.max(1);
        let capacity = limit.min(INITIAL_BUFFER);
        Leg {
            // Not zero-filled: a page of it is touched only when a read reaches it, so a
            // quiet connection holds the few KiB it has used, not the whole buffer.
            buf: Vec::with_capacity(capacity),
            capacity,
            limit,
            step: Step::Reading,
            counters,
        }
    }

    /// Moves bytes `from` → `to` until a stream is not ready (`Pending`), or until the end
    /// of `from` has been passed on (`Ready(Ok)`). Notes activity once per poll that moved
    /// bytes.
    ///
    /// # Errors
    /// The first read, write or shutdown error.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        ending: LastEnd,
        activity: &Activity,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        let mut moved = false;
        let outcome = loop {
            match self.poll_step(cx, from, to, ending) {
                Poll::Ready(Ok(Progress::Moved)) => moved = true,
                Poll::Ready(Ok(Progress::Finished)) => break Poll::Ready(Ok(())),
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Pending => break Poll::Pending,
            }
        };
        if moved {
            activity.touch();
        }
        outcome
    }

    /// One step: a read, a write, or passing the end on (`ending` says how).
    fn poll_step<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        ending: LastEnd,
    ) -> Poll<io::Result<Progress>>
    where
        R: AsyncRead + Unpin + ?Sized,
        W: AsyncWrite + Unpin + ?Sized,
    {
        match self.step {
            Step::Reading => {
                self.buf.clear();
                let mut window = (&mut self.buf).limit(self.capacity);
                let n = match ready!(poll_read_buf(Pin::new(&mut *from), cx, &mut window)) {
                    Ok(n) => n,
                    // A TLS peer that closed TCP without close_notify has still ended its data.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => 0,
                    Err(e) => return Poll::Ready(Err(e)),
                };
                if n == 0 {
                    self.step = Step::Ending;
                } else {
                    let totals = self.counters.totals;
                    totals.read.fetch_add(n as u64, Ordering::Release);
                    totals.note_held(n as u64);
                    self.step = Step::Writing { written: 0 };
                }
                Poll::Ready(Ok(Progress::Moved))
            }
            Step::Writing { written } => {
                let n = ready!(Pin::new(&mut *to).poll_write(cx, &self.buf[written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.counters
                    .totals
                    .written
                    .fetch_add(n as u64, Ordering::Release);
                self.counters
                    .delivered
                    .fetch_add(n as u64, Ordering::Relaxed);
                let written = written + n;
                if written < self.buf.len() {
                    self.step = Step::Writing { written };
                } else {
                    self.grow_after(written);
                    self.step = Step::Reading;
                }
                Poll::Ready(Ok(Progress::Moved))
            }
            Step::Ending => {
                if ending == LastEnd::Shutdown {
                    ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                }
                self.step = Step::Done;
                Poll::Ready(Ok(Progress::Finished))
            }
            Step::Done => Poll::Ready(Ok(Progress::Finished)),
        }
    }

    /// After a read of `n` bytes has gone out: a full read means more is probably
    /// waiting, so read more at a time from now on.
    fn grow_after(&mut self, n: usize) {
        if n == self.capacity && self.capacity < self.limit {
            self.capacity = (self.capacity * 2).min(self.limit);
            self.buf = Vec::with_capacity(self.capacity);
        }
    }
}

/// Copies `from` → `to` until `from` ends, then shuts down `to`'s sending side, so the
/// end of one side's data reaches the other (half-close passed on).
///
/// The buffer grows from [`INITIAL_BUFFER`] to `buffer_size` as reads fill it.
///
/// `delivered` counts this connection's bytes written (kept even if the copy fails half
/// way); `totals` the relay's; `activity` feeds the idle timeout.
///
/// # Errors
/// The first read or write error; the caller ends the connection.
#[cfg(test)]
pub(crate) async fn pipe<R, W>(
    from: &mut R,
    to: &mut W,
    buffer_size: usize,
    delivered: &AtomicU64,
    totals: &FlowStats,
    activity: &Activity,
) -> io::Result<()>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut leg = Leg::new(buffer_size, Counters { delivered, totals });
    std::future::poll_fn(|cx| leg.poll_copy(cx, from, to, LastEnd::Shutdown, activity)).await
}

/// Copies both ways at once, one growing buffer per direction ([`Leg`]), until both
/// directions have ended and passed their end on: the buffered copy of the relay and of
/// the proxy's tunnels.
///
/// One future drives both directions over the two streams; a wake-up moves whatever
/// either direction can. The first direction to end always shuts its destination's
/// sending side down; the second does as `last_end` says.
///
/// # Errors
/// The first read or write error of either direction.
pub(crate) async fn pipe_both_ways<C, T>(
    mut client: C,
    mut target: T,
    buffer_size: usize,
    to_target: Counters<'_>,
    to_client: Counters<'_>,
    last_end: LastEnd,
    activity: &Activity,
) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    let mut upstream = Leg::new(buffer_size, to_target);
    let mut downstream = Leg::new(buffer_size, to_client);
    let ending = |other: &Leg<'_>| {
        if other.step == Step::Done {
            last_end
        } else {
            LastEnd::Shutdown
        }
    };
    std::future::poll_fn(|cx| {
        let up_ending = ending(&downstream);
        let up = upstream.poll_copy(cx, &mut client, &mut target, up_ending, activity)?;
        let down_ending = ending(&upstream);
        let down = downstream.poll_copy(cx, &mut target, &mut client, down_ending, activity)?;
        if up.is_ready() && down.is_ready() {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn pipe_copies_counts_and_passes_the_end_on() -> io::Result<()> {
        let (mut source_far, mut source) = tokio::io::duplex(16);
        let (mut sink, mut sink_far) = tokio::io::duplex(1 << 20);
        let totals = FlowStats::default();
        let delivered = AtomicU64::new(0);
        let activity = Activity::new();
        let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let feed = async {
            source_far.write_all(&payload).await?;
            source_far.shutdown().await
        };
        let (fed, copied) = tokio::join!(
            feed,
            pipe(&mut source, &mut sink, 1000, &delivered, &totals, &activity)
        );
        fed?;
        copied?;
        let mut out = Vec::new();
        sink_far.read_to_end(&mut out).await?;
        assert_eq!(out, payload, "bytes and the end of stream must arrive");
        assert_eq!(delivered.load(Ordering::Relaxed), payload.len() as u64);
        assert_eq!(totals.buffered(), 0);
        assert!(totals.peak_buffered.load(Ordering::Relaxed) <= 1000);
        Ok(())
    }

    /// With [`LastEnd::Close`], both ends still reach the far sides once the copy is over
    /// (the streams' close carries the second one), with every byte before them.
    #[tokio::test]
    async fn closing_instead_of_the_last_shutdown_still_ends_both_sides() -> io::Result<()> {
        let (mut client_far, client) = tokio::io::duplex(1024);
        let (target, mut target_far) = tokio::io::duplex(1024);
        let totals = FlowStats::default();
        let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
        let activity = Activity::new();
        client_far.write_all(b"request").await?;
        client_far.shutdown().await?;
        target_far.write_all(b"reply").await?;
        target_far.shutdown().await?;
        pipe_both_ways(
            client,
            target,
            1024,
            Counters {
                delivered: &up,
                totals: &totals,
            },
            Counters {
                delivered: &down,
                totals: &totals,
            },
            LastEnd::Close,
            &activity,
        )
        .await?;
        let (mut to_client, mut to_target) = (Vec::new(), Vec::new());
        client_far.read_to_end(&mut to_client).await?;
        target_far.read_to_end(&mut to_target).await?;
        assert_eq!(to_client, b"reply");
        assert_eq!(to_target, b"request");
        Ok(())
    }

    /// Copies `queued` bytes that wait in full before the copy starts (so every read can
    /// fill whatever buffer it has) with `bound`; returns the largest read.
    async fn largest_read_of_a_backlog(queued: usize, bound: usize) -> io::Result<u64> {
        let (mut source_far, mut source) = tokio::io::duplex(queued);
        let (mut sink, mut sink_far) = tokio::io::duplex(queued);
        let totals = FlowStats::default();
        let delivered = AtomicU64::new(0);
        let activity = Activity::new();
        source_far.write_all(&vec![7u8; queued]).await?;
        source_far.shutdown().await?;
        pipe(
            &mut source,
            &mut sink,
            bound,
            &delivered,
            &totals,
            &activity,
        )
        .await?;
        let mut out = Vec::new();
        sink_far.read_to_end(&mut out).await?;
        assert_eq!(out.len(), queued, "bytes lost or added");
        let peak = totals.peak_buffered.load(Ordering::Relaxed);
        assert!(peak <= bound as u64, "held {peak} > {bound}");
        Ok(peak)
    }

    #[tokio::test]
    async fn the_buffer_grows_under_bulk_traffic_up_to_the_bound() -> io::Result<()> {
        let peak = largest_read_of_a_backlog(1 << 20, 256 * 1024).await?;
        assert!(
            peak > INITIAL_BUFFER as u64,
            "reads never went past the first buffer ({peak})"
        );
        Ok(())
    }

    /// With the relay's default bound, a backlog of bulk data is taken in reads of
    /// megabytes (what makes the default copy fast), never more than the bound.
    #[tokio::test]
    async fn at_the_default_bound_a_backlog_is_read_in_megabytes() -> io::Result<()> {
        const BOUND: usize = crate::relay::RelayOptions::DEFAULT_BUFFER;
        let peak = largest_read_of_a_backlog(2 * BOUND, BOUND).await?;
        assert!(peak > (BOUND / 2) as u64, "reads stayed small ({peak})");
        Ok(())
    }
}
