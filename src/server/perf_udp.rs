//! `serve --perf` on datagram endpoints: measures every UDP sender's flow and reports it
//! back to the sender when it ends (see [`crate::bench::wire`] for the datagrams).
//!
//! Each shard's socket is read by a thread of its own in batches (`recvmmsg(2)`), the
//! kernel stamping each datagram's arrival time (`SO_TIMESTAMPNS`), so a busy flow costs
//! one system call and one lock of the flow table per batch and no clock reading per
//! datagram. The socket's receive buffer is [`RECEIVE_BUFFER`] unless `--recv-buffer`
//! says otherwise, so a receiver that is late for a moment loses nothing to its own
//! socket.
//!
//! Each flow (sender address and flow id) has its own [`FlowStats`]: fixed-size state
//! plus at most [`MAX_INTERVALS`](crate::bench::flow_stats::MAX_INTERVALS) intervals, so
//! memory per flow is bounded, and the table holds at most [`MAX_FLOWS`] flows; datagrams
//! of further flows are dropped (and that is logged at a bounded rate). A flow whose
//! sender goes silent for [`FLOW_IDLE`] (or `--idle-timeout`, if shorter) is forgotten, so a sender that vanishes mid-test
//! frees its state. The server's counters see flows as connections: `active` is the
//! flows being measured right now, `connections` the flows started.
//!
//! An ended flow's report is kept for [`REPORT_KEPT`] (at most [`MAX_FLOWS`] of them), so
//! a sender whose report datagram was lost and who asks again gets the same answer. The
//! end of a flow the server never saw gets no answer, so a forged end cannot turn the
//! server into an amplifier.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::os::fd::{AsFd, AsRawFd};

use socket2::{SockAddr, SockRef};

use super::Shared;
use crate::bench::flow_stats::FlowStats;
use crate::bench::wire::{DATAGRAM_HEADER, DatagramHeader, DatagramKind};
use crate::obs::throttle::{Admit, LogThrottle};
use crate::obs::{Stats, Tally};
use crate::transport::batch::{self, RecvBatch};
use crate::transport::{MAX_DATAGRAM, PeerAddr, StdDatagram};

/// Flows measured at once; datagrams of more are dropped.
pub const MAX_FLOWS: usize = 1024;

/// A flow silent this long is forgotten (its sender is gone).
pub const FLOW_IDLE: Duration = Duration::from_secs(10);

/// How long an ended flow's report stays to answer a repeated end.
pub const REPORT_KEPT: Duration = Duration::from_secs(10);

/// The receive buffer of a `serve --perf` datagram socket when `--recv-buffer` does
/// not choose one: room for about 3,000 datagrams of 1,400 bytes (the kernel doubles
/// it), so a burst the receiver is late for waits in the socket rather than being lost
/// there; the kernel caps it at `net.core.rmem_max`.
pub const RECEIVE_BUFFER: usize = 4 << 20;

/// How often idle flows are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Which flow a datagram belongs to.
type FlowKey = (PeerAddr, u64);

/// One flow being measured.
struct Flow {
    stats: FlowStats,
    /// When it started on the receiver's wall clock (ns since the Unix epoch): the base
    /// of its arrival times.
    started_ns: u64,
    /// The last datagram's arrival, for the idle sweep.
    last_seen: Instant,
    /// The counters of the shard that started it, whose `active` it holds.
    counters: Arc<Stats>,
}

/// Every shard's flows: one table for the whole server, since a sender's datagrams may
/// reach any shard's socket copy.
#[derive(Default)]
pub(crate) struct FlowTable {
    state: Mutex<Tables>,
}

#[derive(Default)]
struct Tables {
    live: HashMap<FlowKey, Flow>,
    /// The flow of the last datagram, kept out of `live`: a run of datagrams of one flow
    /// (the usual batch) then costs a comparison per datagram, not a hash lookup.
    hot: Option<(FlowKey, Flow)>,
    /// Reports of ended flows, as sent (header and JSON), with when they ended.
    ended: HashMap<FlowKey, (Vec<u8>, Instant)>,
    /// Rate-limits the "too many flows" line.
    full_log: Option<LogThrottle>,
}

/// What to do after a datagram.
enum Answer {
    Nothing,
    /// Send this report to the sender.
    Report(Vec<u8>),
}

impl FlowTable {
    /// Takes one received batch, arrived by `now` (the idle sweep's clock); returns the
    /// reports to send, each with its sender. One lock for the whole batch.
    fn take_batch(
        &self,
        batch: &RecvBatch,
        now: Instant,
        tally: &mut Tally,
        shared: &Shared,
    ) -> Vec<(Vec<u8>, SockAddr)> {
        let mut reports = Vec::new();
        let Ok(mut tables) = self.state.lock() else {
            return reports;
        };
        // The sender of the datagram before, reused while the senders are the same.
        let mut peer: Option<PeerAddr> = None;
        for i in 0..batch.len() {
            let datagram = batch.datagram(i);
            let Some(header) = DatagramHeader::read(datagram) else {
                continue;
            };
            let known = i > 0 && batch.same_sender(i, i - 1);
            let peer = match peer.as_ref().filter(|_| known) {
                Some(peer) => peer.clone(),
                None => peer.insert(peer_of(&batch.sender(i))).clone(),
            };
            let key = (peer, header.flow);
            match header.kind {
                DatagramKind::Data => {
                    let arrival = Arrival {
                        at_ns: batch.arrival_ns(i).unwrap_or_else(wall_clock_ns),
                        now,
                    };
                    tables.record(key, &header, datagram.len(), arrival, shared);
                    tally.messages += 1;
                    tally.bytes_in += datagram.len() as u64;
                }
                DatagramKind::End => {
                    if let Answer::Report(report) = tables.end(key, header.flow, now) {
                        reports.push((report, batch.sender(i)));
                    }
                }
                DatagramKind::Report => {}
            }
        }
        reports
    }

    /// Forgets flows silent for `idle` and reports kept past [`REPORT_KEPT`].
    fn sweep(&self, now: Instant, idle: Duration) {
        let Ok(mut tables) = self.state.lock() else {
            return;
        };
        let before = tables.flows();
        let silent = |flow: &Flow| now.duration_since(flow.last_seen) >= idle;
        if let Some((_, flow)) = tables.hot.take_if(|(_, flow)| silent(flow)) {
            flow.counters.active.fetch_sub(1, Ordering::Relaxed);
        }
        tables.live.retain(|_, flow| {
            let alive = !silent(flow);
            if !alive {
                flow.counters.active.fetch_sub(1, Ordering::Relaxed);
            }
            alive
        });
        let gone = before - tables.flows();
        if gone > 0 {
            tracing::info!(
                "forgot {gone} UDP flow(s) silent for {} (their senders are gone); {} left",
                humantime::format_duration(idle),
                tables.flows()
            );
        }
        tables
            .ended
            .retain(|_, (_, at)| now.duration_since(*at) < REPORT_KEPT);
    }
}

impl Tables {
    /// Flows being measured.
    fn flows(&self) -> usize {
        self.live.len() + usize::from(self.hot.is_some())
    }

    /// The flow of `key`, made the hot one; `None` for a flow not being measured.
    fn hot_flow(&mut self, key: &FlowKey) -> Option<&mut Flow> {
        if !self.hot.as_ref().is_some_and(|(hot, _)| hot == key) {
            let flow = self.live.remove(key)?;
            self.make_hot(key.clone(), flow);
        }
        self.hot.as_mut().map(|(_, flow)| flow)
    }

    /// Makes `flow` the hot one, the one before going back to `live`.
    fn make_hot(&mut self, key: FlowKey, flow: Flow) {
        if let Some((key, flow)) = self.hot.replace((key, flow)) {
            self.live.insert(key, flow);
        }
    }

    /// Takes the flow of `key` out of the table.
    fn remove(&mut self, key: &FlowKey) -> Option<Flow> {
        match self.hot.take_if(|(hot, _)| hot == key) {
            Some((_, flow)) => Some(flow),
            None => self.live.remove(key),
        }
    }

    fn record(
        &mut self,
        key: FlowKey,
        header: &DatagramHeader,
        len: usize,
        arrival: Arrival,
        shared: &Shared,
    ) {
        let now = arrival.now;
        if self.hot_flow(&key).is_none() && !self.start(key, header, arrival, shared) {
            return;
        }
        // The flow of `key` is the hot one now.
        if let Some((_, flow)) = self.hot.as_mut() {
            let received_ns = arrival.at_ns.saturating_sub(flow.started_ns);
            flow.stats
                .record(header.seq, len as u64, header.sent_ns, received_ns);
            flow.last_seen = now;
        }
    }

    /// Starts measuring the flow of `key` (made the hot one); `false` when the table is
    /// full.
    fn start(
        &mut self,
        key: FlowKey,
        header: &DatagramHeader,
        arrival: Arrival,
        shared: &Shared,
    ) -> bool {
        let now = arrival.now;
        if self.flows() >= MAX_FLOWS {
            let throttle = self
                .full_log
                .get_or_insert_with(|| LogThrottle::new(1, Duration::from_secs(10)));
            let admit = throttle.admit(tokio::time::Instant::from_std(now));
            if let Admit::Log { .. } = admit {
                tracing::warn!(
                    "dropping datagrams of a new UDP flow: {MAX_FLOWS} flows are being \
                     measured already{}",
                    admit.suffix()
                );
            }
            return false;
        }
        let interval_ns = u64::from(header.interval_ms) * 1_000_000;
        // The receiver's clock starts so that the first arrival reads as its send
        // time: transit is then relative, which is all jitter needs.
        let started_ns = arrival.at_ns.saturating_sub(header.sent_ns);
        self.make_hot(
            key,
            Flow {
                stats: FlowStats::new(interval_ns),
                started_ns,
                last_seen: now,
                counters: Arc::clone(&shared.stats),
            },
        );
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        shared.stats.active.fetch_add(1, Ordering::Relaxed);
        true
    }

    fn end(&mut self, key: FlowKey, flow_id: u64, now: Instant) -> Answer {
        if let Some(flow) = self.remove(&key) {
            flow.counters.active.fetch_sub(1, Ordering::Relaxed);
            let report = report_datagram(flow_id, &flow.stats);
            if self.ended.len() < MAX_FLOWS {
                self.ended.insert(key, (report.clone(), now));
            }
            return Answer::Report(report);
        }
        // The end of a flow never seen gets no answer: a report to a forged source
        // address would be an amplifier. (A sender all of whose datagrams were lost
        // learns it from the missing report.)
        match self.ended.get(&key) {
            Some((report, _)) => Answer::Report(report.clone()),
            None => Answer::Nothing,
        }
    }
}

/// The report datagram of a flow: the header, then the figures as JSON (intervals
/// dropped from the end if they would not fit in one datagram).
fn report_datagram(flow_id: u64, stats: &FlowStats) -> Vec<u8> {
    let mut report = stats.report().clone();
    loop {
        let json = serde_json::to_vec(&report).unwrap_or_default();
        if DATAGRAM_HEADER + json.len() <= MAX_DATAGRAM || report.intervals.is_empty() {
            let mut out = vec![0; DATAGRAM_HEADER];
            DatagramHeader {
                kind: DatagramKind::Report,
                flow: flow_id,
                seq: 0,
                sent_ns: 0,
                interval_ms: 0,
            }
            .write(&mut out);
            out.extend_from_slice(&json);
            return out;
        }
        let keep = report.intervals.len() / 2;
        report.intervals.truncate(keep);
    }
}

/// The peer a sender's address names.
fn peer_of(sender: &SockAddr) -> PeerAddr {
    sender
        .as_socket()
        .map_or_else(|| PeerAddr::Unix(Box::new(sender.clone())), PeerAddr::Ip)
}

/// When a datagram arrived.
#[derive(Clone, Copy)]
struct Arrival {
    /// The kernel's stamp (or the wall clock), ns since the Unix epoch: for jitter.
    at_ns: u64,
    /// The batch's monotonic time: for the idle sweep.
    now: Instant,
}

/// The wall clock in ns since the Unix epoch, for a datagram the kernel did not stamp.
fn wall_clock_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Receives throughput datagrams until shutdown, answering ends with reports, on a
/// thread of its own that waits in `recvmmsg(2)` (the reasons are those of the answer
/// loop in [`super::datagram`]); this task only stops it at shutdown.
///
/// The socket is made blocking, which holds for every thread's copy of it: that is safe
/// because in this mode no thread registers it with a runtime.
pub(crate) async fn receive_flows(
    socket: StdDatagram,
    flows: &Arc<FlowTable>,
    shared: &Arc<Shared>,
) {
    let idle = shared
        .options
        .limits
        .idle_timeout
        .map_or(FLOW_IDLE, |limit| limit.min(FLOW_IDLE));
    let prepared = socket.try_clone().and_then(|stopper| {
        prepare(&socket, idle, shared)?;
        Ok(stopper)
    });
    let stopper = match prepared {
        Ok(stopper) => stopper,
        Err(e) => {
            tracing::error!("cannot set up the throughput receiver: {e}");
            shared.shutdown.trigger();
            return;
        }
    };
    let worker_flows = Arc::clone(flows);
    let worker_shared = Arc::clone(shared);
    let mut worker = tokio::task::spawn_blocking(move || {
        measure_until_stopped(&socket, &worker_flows, &worker_shared, idle);
    });
    let finished = tokio::select! {
        () = shared.shutdown.triggered() => false,
        _ = &mut worker => true,
    };
    if !finished {
        stopper.stop_receivers();
        let _ = worker.await;
    }
}

/// Makes the socket blocking with a receive timeout (so the idle sweep runs when no
/// datagram comes), asks for arrival stamps, and gives it [`RECEIVE_BUFFER`] unless
/// `--recv-buffer` chose a size.
fn prepare(socket: &StdDatagram, idle: Duration, shared: &Shared) -> std::io::Result<()> {
    socket.set_blocking()?;
    let sock = SockRef::from(socket);
    sock.set_read_timeout(Some(sweep_every(idle)))?;
    if shared.options.listen.accepted.recv_buffer.is_none() {
        // Best effort: the kernel caps it at net.core.rmem_max.
        let _ = sock.set_recv_buffer_size(RECEIVE_BUFFER);
    }
    if let StdDatagram::Udp(_) = socket
        && let Err(e) = batch::enable_arrival_times(socket.as_fd().as_raw_fd())
    {
        tracing::debug!("no arrival stamps from the kernel ({e}); reading the clock instead");
    }
    Ok(())
}

/// How often idle flows are looked for.
fn sweep_every(idle: Duration) -> Duration {
    SWEEP_EVERY.min(idle).max(Duration::from_millis(100))
}

/// The receive loop: take a batch, record it, answer ends, sweep idle flows now and
/// then, until shutdown.
fn measure_until_stopped(socket: &StdDatagram, flows: &FlowTable, shared: &Shared, idle: Duration) {
    let fd = socket.as_fd().as_raw_fd();
    let mut batch = RecvBatch::new();
    let mut tally = Tally::default();
    let every = sweep_every(idle);
    let mut next_sweep = Instant::now() + every;
    loop {
        let received = batch.receive_waiting(fd);
        if shared.shutdown.is_triggered() {
            break;
        }
        let now = Instant::now();
        match received {
            Ok(_) => {
                for (report, to) in flows.take_batch(&batch, now, &mut tally, shared) {
                    if let Err(e) = SockRef::from(socket).send_to(&report, &to) {
                        tracing::info!("cannot send a flow's report to its sender: {e}");
                    }
                }
                shared.stats.absorb(&mut tally);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                tracing::debug!("receiving datagrams failed: {e}");
                // A lasting failure must not spin.
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if now >= next_sweep {
            flows.sweep(now, idle);
            next_sweep = now + every;
        }
    }
}
