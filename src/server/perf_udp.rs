//! `serve --perf` on datagram endpoints: measures every UDP sender's flow and reports it
//! back to the sender when it ends (see [`crate::bench::wire`] for the datagrams).
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

use super::Shared;
use crate::bench::flow_stats::FlowStats;
use crate::bench::wire::{DATAGRAM_HEADER, DatagramHeader, DatagramKind};
use crate::obs::Stats;
use crate::obs::throttle::{Admit, LogThrottle};
use crate::transport::{DatagramSocket, MAX_DATAGRAM, PeerAddr};

/// Flows measured at once; datagrams of more are dropped.
pub const MAX_FLOWS: usize = 1024;

/// A flow silent this long is forgotten (its sender is gone).
pub const FLOW_IDLE: Duration = Duration::from_secs(10);

/// How long an ended flow's report stays to answer a repeated end.
pub const REPORT_KEPT: Duration = Duration::from_secs(10);

/// Datagrams taken per wake-up before the loop looks at its timers again.
const BATCH: usize = 64;

/// How often idle flows are looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Which flow a datagram belongs to.
type FlowKey = (PeerAddr, u64);

/// One flow being measured.
struct Flow {
    stats: FlowStats,
    /// When it started, the receiver's clock base for arrival times.
    started: Instant,
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
    /// Takes one datagram from `peer`, arrived at `now`.
    fn take(&self, datagram: &[u8], peer: &PeerAddr, now: Instant, shared: &Shared) -> Answer {
        let Some(header) = DatagramHeader::read(datagram) else {
            return Answer::Nothing;
        };
        let key = (peer.clone(), header.flow);
        let Ok(mut tables) = self.state.lock() else {
            return Answer::Nothing;
        };
        match header.kind {
            DatagramKind::Data => {
                tables.record(key, &header, datagram.len(), now, shared);
                Answer::Nothing
            }
            DatagramKind::End => tables.end(key, header.flow, now),
            DatagramKind::Report => Answer::Nothing,
        }
    }

    /// Forgets flows silent for `idle` and reports kept past [`REPORT_KEPT`].
    fn sweep(&self, now: Instant, idle: Duration) {
        let Ok(mut tables) = self.state.lock() else {
            return;
        };
        let before = tables.live.len();
        tables.live.retain(|_, flow| {
            let alive = now.duration_since(flow.last_seen) < idle;
            if !alive {
                flow.counters.active.fetch_sub(1, Ordering::Relaxed);
            }
            alive
        });
        let gone = before - tables.live.len();
        if gone > 0 {
            tracing::info!(
                "forgot {gone} UDP flow(s) silent for {} (their senders are gone); {} left",
                humantime::format_duration(idle),
                tables.live.len()
            );
        }
        tables
            .ended
            .retain(|_, (_, at)| now.duration_since(*at) < REPORT_KEPT);
    }
}

impl Tables {
    fn record(
        &mut self,
        key: FlowKey,
        header: &DatagramHeader,
        len: usize,
        now: Instant,
        shared: &Shared,
    ) {
        if !self.live.contains_key(&key) {
            if self.live.len() >= MAX_FLOWS {
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
                return;
            }
            let interval_ns = u64::from(header.interval_ms) * 1_000_000;
            // The receiver's clock starts so that the first arrival reads as its send
            // time: transit is then relative, which is all jitter needs.
            let started = now
                .checked_sub(Duration::from_nanos(header.sent_ns))
                .unwrap_or(now);
            self.live.insert(
                key.clone(),
                Flow {
                    stats: FlowStats::new(interval_ns),
                    started,
                    last_seen: now,
                    counters: Arc::clone(&shared.stats),
                },
            );
            shared.stats.connections.fetch_add(1, Ordering::Relaxed);
            shared.stats.active.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(flow) = self.live.get_mut(&key) {
            let received_ns =
                u64::try_from(now.duration_since(flow.started).as_nanos()).unwrap_or(u64::MAX);
            flow.stats
                .record(header.seq, len as u64, header.sent_ns, received_ns);
            flow.last_seen = now;
            shared.stats.messages.fetch_add(1, Ordering::Relaxed);
            shared
                .stats
                .bytes_in
                .fetch_add(len as u64, Ordering::Relaxed);
        }
    }

    fn end(&mut self, key: FlowKey, flow_id: u64, now: Instant) -> Answer {
        if let Some(flow) = self.live.remove(&key) {
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

/// Receives throughput datagrams until shutdown, answering ends with reports.
pub(crate) async fn receive_flows(
    socket: DatagramSocket,
    flows: &Arc<FlowTable>,
    shared: &Arc<Shared>,
) {
    let mut buffer = vec![0u8; MAX_DATAGRAM + 1];
    let idle = shared
        .options
        .limits
        .idle_timeout
        .map_or(FLOW_IDLE, |limit| limit.min(FLOW_IDLE));
    let mut sweep = tokio::time::interval(SWEEP_EVERY.min(idle).max(Duration::from_millis(100)));
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shared.shutdown.triggered() => return,
            _ = sweep.tick() => flows.sweep(Instant::now(), idle),
            readable = socket.readable() => {
                if let Err(e) = readable {
                    tracing::debug!("waiting for datagrams failed: {e}");
                    continue;
                }
                take_queued(&socket, &mut buffer, flows, shared).await;
            }
        }
    }
}

/// Takes the datagrams queued on the socket, up to [`BATCH`] of them per wake-up, so a
/// busy flow costs one trip through the reactor per batch rather than per datagram.
async fn take_queued(
    socket: &DatagramSocket,
    buffer: &mut [u8],
    flows: &FlowTable,
    shared: &Shared,
) {
    for _ in 0..BATCH {
        let (n, peer) = match socket.try_recv_from(buffer) {
            Ok(got) => got,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                tracing::debug!("receiving a datagram failed: {e}");
                return;
            }
        };
        let answer = flows.take(&buffer[..n], &peer, Instant::now(), shared);
        if let Answer::Report(report) = answer
            && let Err(e) = socket.send_to(&report, &peer).await
        {
            tracing::info!("cannot send a flow's report to its sender: {e}");
        }
    }
}
