//! What a receiver learns from one UDP flow: loss, duplicates, reordering and jitter,
//! from nothing but `(sequence number, send time, arrival time)` triples. Pure and
//! sans-IO, so the figures are tested exactly, without a network.
//!
//! * **Loss**: of the datagrams the sender numbered up to the highest one seen (or up to
//!   the count the sender reports at the end, which also counts a lost tail), how many
//!   never arrived. Duplicates do not hide losses: each number counts once.
//! * **Duplicates**: a number seen again, remembered over the last [`SEEN_WINDOW`]
//!   numbers (a bitmap of fixed size, so memory per flow is bounded; a copy older than
//!   that window is counted as late, not as a duplicate).
//! * **Reordering** (RFC 4737 §3.3): a datagram is reordered when its number is below the
//!   next expected one (the highest seen plus one) when it arrives.
//! * **Jitter** (RFC 3550 §6.4.1): for consecutive arrivals i, j,
//!   `D = (Rj − Ri) − (Sj − Si)` and `J += (|D| − J) / 16`. Only differences of each
//!   clock are used, so the sender's and the receiver's clocks need not agree.
//!
//! Figures are kept in total and per interval of *send* time, so the receiver's
//! intervals line up with the lines the sender printed while it sent.

use serde::{Deserialize, Serialize};

/// Numbers remembered behind the highest one, for duplicate detection.
pub const SEEN_WINDOW: u64 = 1 << 16;

/// Intervals kept per flow; later ones count in the totals only (a bound on memory
/// and on the size of the report datagram).
pub const MAX_INTERVALS: usize = 300;

/// The receiver's figures for a span of a flow (the whole of it, or one interval).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowFigures {
    /// Datagrams that arrived, each number once.
    pub received: u64,
    /// Payload bytes of those.
    pub bytes: u64,
    /// Copies of numbers already seen.
    pub duplicates: u64,
    /// Arrivals below the next expected number (RFC 4737).
    pub reordered: u64,
    /// Arrivals too far behind to check for duplicates (counted as received).
    pub late: u64,
    /// The RFC 3550 interarrival jitter at the end of the span, in ns.
    pub jitter_ns: f64,
}

/// The receiver's report on one flow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlowReport {
    /// The whole flow.
    pub total: FlowFigures,
    /// The highest number seen plus one (what the receiver knows was sent).
    pub expected: u64,
    /// Per interval of send time, from the flow's start ([`MAX_INTERVALS`] at most).
    pub intervals: Vec<FlowFigures>,
}

impl FlowReport {
    /// Datagrams lost, given how many the sender says it sent (`None`: the highest
    /// number seen stands in for it).
    pub fn lost(&self, sent: Option<u64>) -> u64 {
        sent.unwrap_or(self.expected)
            .max(self.expected)
            .saturating_sub(self.total.received)
    }

    /// Loss as a percentage of what was sent.
    pub fn loss_percent(&self, sent: Option<u64>) -> f64 {
        let sent = sent.unwrap_or(self.expected).max(self.expected);
        if sent == 0 {
            return 0.0;
        }
        self.lost(Some(sent)) as f64 * 100.0 / sent as f64
    }
}

/// The running state of one flow at the receiver: fixed size but for the intervals,
/// which are capped.
#[derive(Debug, Clone)]
pub struct FlowStats {
    report: FlowReport,
    /// Bit `n % SEEN_WINDOW` set when number `n` (within the window) has arrived.
    seen: Vec<u64>,
    /// The highest number seen, if any.
    highest: Option<u64>,
    /// The previous arrival's transit (receive time − send time, ns), for jitter.
    last_transit: Option<i128>,
    /// The sender's interval in ns (0: no intervals).
    interval_ns: u64,
}

impl FlowStats {
    /// A flow with nothing received yet; `interval_ns` of 0 keeps totals only.
    pub fn new(interval_ns: u64) -> FlowStats {
        FlowStats {
            report: FlowReport::default(),
            seen: vec![0; (SEEN_WINDOW / 64) as usize],
            highest: None,
            last_transit: None,
            interval_ns,
        }
    }

    /// Records one arrival: number `seq` of `bytes` payload bytes, sent at `sent_ns` on
    /// the sender's clock and received at `received_ns` on this one.
    pub fn record(&mut self, seq: u64, bytes: u64, sent_ns: u64, received_ns: u64) {
        let interval = self.interval_index(sent_ns);
        let arrival = self.classify(seq);
        let transit = i128::from(received_ns) - i128::from(sent_ns);
        let jitter = match self.last_transit.replace(transit) {
            Some(previous) => {
                let d = (transit - previous).unsigned_abs() as f64;
                let j = self.report.total.jitter_ns;
                j + (d - j) / 16.0
            }
            None => self.report.total.jitter_ns,
        };
        let figures = std::iter::once(&mut self.report.total).chain(interval.and_then(|i| {
            if self.report.intervals.len() <= i {
                self.report.intervals.resize(i + 1, FlowFigures::default());
            }
            self.report.intervals.get_mut(i)
        }));
        for f in figures {
            f.jitter_ns = jitter;
            match arrival {
                Arrival::Duplicate => f.duplicates += 1,
                Arrival::InOrder | Arrival::Reordered | Arrival::Late => {
                    f.received += 1;
                    f.bytes += bytes;
                    if arrival == Arrival::Reordered || arrival == Arrival::Late {
                        f.reordered += 1;
                    }
                    if arrival == Arrival::Late {
                        f.late += 1;
                    }
                }
            }
        }
    }

    /// The interval a send time falls in, if intervals are kept and it is within the cap.
    fn interval_index(&self, sent_ns: u64) -> Option<usize> {
        if self.interval_ns == 0 {
            return None;
        }
        usize::try_from(sent_ns / self.interval_ns)
            .ok()
            .filter(|&i| i < MAX_INTERVALS)
    }

    /// Where `seq` stands against what arrived before; marks it seen.
    fn classify(&mut self, seq: u64) -> Arrival {
        let Some(highest) = self.highest else {
            self.highest = Some(seq);
            self.report.expected = seq + 1;
            self.mark(seq);
            return Arrival::InOrder;
        };
        if seq > highest {
            // Forget the numbers that slide out of the window.
            let forget = (seq - highest).min(SEEN_WINDOW);
            for n in 0..forget {
                self.clear(seq - n);
            }
            self.highest = Some(seq);
            self.report.expected = seq + 1;
            self.mark(seq);
            return Arrival::InOrder;
        }
        if highest - seq >= SEEN_WINDOW {
            return Arrival::Late;
        }
        if self.is_marked(seq) {
            return Arrival::Duplicate;
        }
        self.mark(seq);
        Arrival::Reordered
    }

    fn bit(seq: u64) -> (usize, u64) {
        let slot = seq % SEEN_WINDOW;
        ((slot / 64) as usize, 1 << (slot % 64))
    }

    fn mark(&mut self, seq: u64) {
        let (word, bit) = Self::bit(seq);
        self.seen[word] |= bit;
    }

    fn clear(&mut self, seq: u64) {
        let (word, bit) = Self::bit(seq);
        self.seen[word] &= !bit;
    }

    fn is_marked(&self, seq: u64) -> bool {
        let (word, bit) = Self::bit(seq);
        self.seen[word] & bit != 0
    }

    /// The figures so far.
    pub fn report(&self) -> &FlowReport {
        &self.report
    }
}

/// How one arrival relates to the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Arrival {
    /// Above every number seen so far.
    InOrder,
    /// Below the next expected number, not seen before.
    Reordered,
    /// Seen before.
    Duplicate,
    /// Too far behind to tell.
    Late,
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// Feeds `seqs` in order of arrival, each sent at seq ms and received 5 ms later.
    fn feed(seqs: impl IntoIterator<Item = u64>) -> FlowStats {
        let mut stats = FlowStats::new(1000 * MS);
        for seq in seqs {
            stats.record(seq, 100, seq * MS, seq * MS + 5 * MS);
        }
        stats
    }

    #[test]
    fn skipping_every_tenth_number_reads_ten_percent_loss() {
        let stats = feed((0..1000).filter(|n| n % 10 != 9));
        let report = stats.report();
        assert_eq!(report.total.received, 900);
        assert_eq!(report.lost(Some(1000)), 100);
        assert!((report.loss_percent(Some(1000)) - 10.0).abs() < 1e-9);
        assert_eq!(report.total.reordered, 0);
        assert_eq!(report.total.duplicates, 0);
    }

    #[test]
    fn a_lost_tail_is_counted_once_the_sender_says_how_many_it_sent() {
        let report = feed(0..90).report().clone();
        assert_eq!(report.lost(None), 0);
        assert_eq!(report.lost(Some(100)), 10);
    }

    #[test]
    fn swapped_pairs_read_one_reordering_per_pair() {
        // 1 0 3 2 5 4 …: every even number arrives after its odd neighbour.
        let stats = feed((0..1000u64).map(|n| n ^ 1));
        let report = stats.report();
        assert_eq!(report.total.reordered, 500);
        assert_eq!(report.total.received, 1000);
        assert_eq!(report.lost(Some(1000)), 0);
        assert_eq!(report.total.duplicates, 0);
    }

    #[test]
    fn duplicates_are_counted_and_do_not_hide_a_loss() {
        let stats = feed([0, 1, 1, 2, 2, 2, 4]);
        let report = stats.report();
        assert_eq!(report.total.duplicates, 3);
        assert_eq!(report.total.received, 4);
        assert_eq!(report.lost(Some(5)), 1);
    }

    #[test]
    fn scripted_jitter_reads_the_rfc3550_value() {
        // Sent every 10 ms; transit alternates 5 ms and 7 ms, so |D| is 2 ms each time
        // and J converges to 2 ms: J_n = 2 ms × (1 − (15/16)^n).
        let mut stats = FlowStats::new(0);
        for seq in 0..1000u64 {
            let transit = if seq % 2 == 0 { 5 * MS } else { 7 * MS };
            stats.record(seq, 100, seq * 10 * MS, seq * 10 * MS + transit);
        }
        let jitter = stats.report().total.jitter_ns;
        let expected = 2.0 * MS as f64;
        assert!(
            (jitter - expected).abs() <= expected * 0.05,
            "jitter {jitter} ns, expected {expected} ns"
        );
    }

    #[test]
    fn a_steady_transit_has_no_jitter() {
        let stats = feed(0..100);
        assert_eq!(stats.report().total.jitter_ns, 0.0);
    }

    #[test]
    fn intervals_follow_send_time_and_are_capped() {
        let mut stats = FlowStats::new(10 * MS);
        for seq in 0..30u64 {
            stats.record(seq, 10, seq * MS, seq * MS + MS);
        }
        let report = stats.report();
        assert_eq!(report.intervals.len(), 3);
        assert!(report.intervals.iter().all(|i| i.received == 10));
        stats.record(30, 10, u64::MAX / 2, u64::MAX / 2);
        assert_eq!(stats.report().intervals.len(), 3);
        assert_eq!(stats.report().total.received, 31);
    }

    #[test]
    fn numbers_far_behind_are_late_not_duplicates() {
        let mut stats = feed([0, SEEN_WINDOW + 10]);
        stats.record(1, 100, MS, 6 * MS);
        assert_eq!(stats.report().total.late, 1);
        assert_eq!(stats.report().total.duplicates, 0);
    }
}
