//! What a throughput test reports: one [`IntervalRecord`] per `--interval` while it runs
//! (a text line per stream and a total, or one NDJSON object), then one
//! [`ThroughputReport`] with totals and, per stream, min/mean/max of each interval
//! figure. Plain data: the engines fill it, this module only shapes and prints it.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::flow_stats::FlowReport;
use super::histogram::{LatencyHistogram, Percentiles};
use super::tcp_info::TcpInfo;
use super::wire::StreamRole;

/// One stream's figures over one interval.
#[derive(Debug, Clone, Serialize)]
pub struct StreamInterval {
    /// The stream's number (from 1), as in the lines and the final report.
    pub stream: usize,
    /// Which way its bytes flow, from the client: up (to the server) or down.
    pub direction: StreamRole,
    /// Payload bytes carried in the interval.
    pub bytes: u64,
    /// The same as a rate.
    pub bits_per_second: f64,
    /// TCP only: the kernel's view at the interval's end, of the client's socket.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpInterval>,
    /// Down streams over TCP: the sending socket's view (the server's), read at the
    /// interval's end through the test's watch connection. The client's own socket only
    /// receives, so its window and RTT say nothing about this data.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_tcp: Option<TcpInterval>,
    /// UDP only: datagrams sent in the interval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub datagrams: Option<u64>,
}

/// `TCP_INFO` at an interval's end, with the counters turned into the interval's share.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TcpInterval {
    /// Segments retransmitted in the interval.
    pub retransmits: u64,
    /// The reading itself (cumulative counters, current window and RTT).
    #[serde(flatten)]
    pub info: TcpInfo,
    /// Time limited by the receiver's window in the interval, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rwnd_limited_us_in_interval: Option<u64>,
    /// Time limited by the send buffer in the interval, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sndbuf_limited_us_in_interval: Option<u64>,
}

impl TcpInterval {
    /// The interval's figures from the reading at its start (`None` at the first) and
    /// its end.
    pub fn between(before: Option<&TcpInfo>, now: TcpInfo) -> TcpInterval {
        let delta = |b: Option<u64>, n: Option<u64>| match (b, n) {
            (Some(b), Some(n)) => Some(n.saturating_sub(b)),
            (None, n) => n,
            _ => None,
        };
        TcpInterval {
            retransmits: now
                .total_retrans
                .saturating_sub(before.map_or(0, |b| b.total_retrans)),
            info: now,
            rwnd_limited_us_in_interval: delta(
                before.and_then(|b| b.rwnd_limited_us),
                now.rwnd_limited_us,
            ),
            sndbuf_limited_us_in_interval: delta(
                before.and_then(|b| b.sndbuf_limited_us),
                now.sndbuf_limited_us,
            ),
        }
    }
}

/// Everything one interval line (or NDJSON object) says.
#[derive(Debug, Clone, Serialize)]
pub struct IntervalRecord {
    /// Always "interval", so an NDJSON reader tells lines from the final report.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Seconds from the start of the test.
    pub start: f64,
    /// Seconds from the start of the test.
    pub end: f64,
    /// Per stream.
    pub streams: Vec<StreamInterval>,
    /// All streams together, bits per second.
    pub total_bits_per_second: f64,
    /// The latency probe's round trips in this interval (`--latency`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyFigures>,
}

/// Round-trip percentiles of the latency probe, µs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct LatencyFigures {
    /// Probes answered.
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
}

impl LatencyFigures {
    /// The figures of a histogram.
    pub fn of(histogram: &LatencyHistogram) -> LatencyFigures {
        let p: Percentiles = histogram.percentiles();
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        LatencyFigures {
            count: histogram.count(),
            p50_us: us(p.p50),
            p90_us: us(p.p90),
            p99_us: us(p.p99),
            max_us: us(p.max),
        }
    }
}

/// Min, mean and max of one figure over a stream's intervals.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut count = 0usize;
        let (mut min, mut max, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
        for v in values {
            count += 1;
            min = min.min(v);
            max = max.max(v);
            sum += v;
        }
        (count > 0).then(|| Spread {
            min,
            mean: sum / count as f64,
            max,
        })
    }
}

/// One stream's result.
#[derive(Debug, Clone, Serialize)]
pub struct StreamSummary {
    /// Its number (from 1).
    pub stream: usize,
    /// Which way its bytes flowed.
    pub direction: StreamRole,
    /// Bytes the client sent (up) or received (down) in the measured span.
    pub bytes: u64,
    /// The same as a mean rate.
    pub bits_per_second: f64,
    /// Up streams: what the server says it received (the whole connection's bytes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_received: Option<u64>,
    /// TCP: segments retransmitted over the measured span.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retransmits: Option<u64>,
    /// Per interval: rate (bits/s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_bits_per_second: Option<Spread>,
    /// Per interval: retransmits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_retransmits: Option<Spread>,
    /// Per interval: congestion window, bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_cwnd_bytes: Option<Spread>,
    /// Per interval: smoothed RTT, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_srtt_us: Option<Spread>,
    /// Per interval: RTT variance, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_rttvar_us: Option<Spread>,
    /// Per interval: the kernel's delivery rate, bytes/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval_delivery_rate: Option<Spread>,
    /// Down streams: the sending socket's `TCP_INFO` per interval, as the server read
    /// it at each interval's end and sent back at the end of the test (the client's
    /// socket only receives, so its window and RTT say nothing about this data).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sender_intervals: Vec<TcpInterval>,
    /// UDP: what the sender did and what the receiver saw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpSummary>,
    /// Why the stream stopped early, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl StreamSummary {
    /// Fills the per-interval spreads from the stream's interval records: the `TCP_INFO`
    /// figures from the sending side's readings (the client's for up streams, the
    /// server's in [`StreamSummary::sender_intervals`] for down streams).
    pub fn spread_over(&mut self, intervals: &[&StreamInterval]) {
        let sender: Vec<TcpInterval> = match self.direction {
            StreamRole::Up => intervals.iter().filter_map(|i| i.tcp).collect(),
            _ => self.sender_intervals.clone(),
        };
        let tcp = || sender.iter();
        self.retransmits = (!sender.is_empty()).then(|| tcp().map(|t| t.retransmits).sum());
        self.interval_bits_per_second = Spread::of(intervals.iter().map(|i| i.bits_per_second));
        self.interval_retransmits = Spread::of(tcp().map(|t| t.retransmits as f64));
        self.interval_cwnd_bytes = Spread::of(tcp().map(|t| t.info.cwnd_bytes as f64));
        self.interval_srtt_us = Spread::of(tcp().map(|t| t.info.srtt_us as f64));
        self.interval_rttvar_us = Spread::of(tcp().map(|t| t.info.rttvar_us as f64));
        self.interval_delivery_rate =
            Spread::of(tcp().filter_map(|t| t.info.delivery_rate.map(|r| r as f64)));
    }
}

/// A UDP stream's figures: the sender's count and schedule, the receiver's report.
#[derive(Debug, Clone, Serialize)]
pub struct UdpSummary {
    /// Datagrams sent.
    pub sent: u64,
    /// The pacing error's 99th percentile: |actual − scheduled| send time, µs.
    pub pacing_error_p99_us: f64,
    /// The pacing error's maximum, µs.
    pub pacing_error_max_us: f64,
    /// The receiver's figures (`None`: its report never came back).
    pub receiver: Option<FlowReport>,
    /// Multicast: the other receivers' figures, one report each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub more_receivers: Vec<FlowReport>,
    /// Sent per interval, to set against the receiver's intervals for loss.
    pub sent_per_interval: Vec<u64>,
}

/// The whole test's result.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    /// Always "end" (the last NDJSON object).
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The server.
    pub endpoint: String,
    /// The measured span, seconds.
    pub seconds: f64,
    /// Per stream.
    pub streams: Vec<StreamSummary>,
    /// All up streams together, bits per second.
    pub up_bits_per_second: f64,
    /// All down streams together, bits per second.
    pub down_bits_per_second: f64,
    /// The latency probe over the whole test (`--latency`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<LatencyFigures>,
    /// CPU time (user + system) this client used over the test, seconds: with the
    /// bytes, its CPU per byte, to set against another tool's.
    pub client_cpu_seconds: f64,
}

/// Bits per second in the largest fitting unit ("9.41 Gbit/s").
pub fn rate(bits_per_second: f64) -> String {
    let (value, unit) = if bits_per_second >= 1e9 {
        (bits_per_second / 1e9, "Gbit/s")
    } else if bits_per_second >= 1e6 {
        (bits_per_second / 1e6, "Mbit/s")
    } else {
        (bits_per_second / 1e3, "kbit/s")
    };
    format!("{value:.2} {unit}")
}

/// Bytes in the largest fitting binary unit.
fn bytes(count: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = count;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.2} {}", units[unit])
}

impl IntervalRecord {
    /// "1.00-2.00": the interval in seconds from the start.
    fn span(&self) -> String {
        format!("{:.2}-{:.2}", self.start, self.end)
    }

    /// The text lines: one per stream, then the total (when more than one stream).
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for s in &self.streams {
            let _ = write!(
                out,
                "[{:>3}] {:>15} s {:>4}  {:>11}  {:>14}",
                s.stream,
                self.span(),
                s.direction.word(),
                bytes(s.bytes as f64),
                rate(s.bits_per_second)
            );
            // A receiving socket's window, RTT and retransmits describe the other
            // direction's ACKs, not this data: the sending socket's are shown (down
            // streams: the server's), the client's stay in the JSON.
            let sender = match s.direction {
                StreamRole::Up => s.tcp.as_ref(),
                _ => s.sender_tcp.as_ref(),
            };
            if let Some(t) = sender {
                out.push_str(&tcp_text(t));
            }
            if let Some(d) = s.datagrams {
                let _ = write!(out, "  {d} datagrams");
            }
            out.push('\n');
        }
        if self.streams.len() > 1 {
            let _ = writeln!(
                out,
                "[SUM] {:>15} s       {:>11}  {:>14}",
                self.span(),
                bytes(self.streams.iter().map(|s| s.bytes as f64).sum()),
                rate(self.total_bits_per_second)
            );
        }
        if let Some(l) = &self.latency {
            let _ = writeln!(
                out,
                "[LAT] {:>15} s  {} probes  p50 {:.0} µs  p99 {:.0} µs  max {:.0} µs",
                self.span(),
                l.count,
                l.p50_us,
                l.p99_us,
                l.max_us
            );
        }
        out
    }
}

impl ThroughputReport {
    /// The closing table.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "throughput to {} over {:.2} s",
            self.endpoint, self.seconds
        );
        for s in &self.streams {
            let _ = write!(
                out,
                "[{:>3}] {:>4}  {:>11}  {:>14}",
                s.stream,
                s.direction.word(),
                bytes(s.bytes as f64),
                rate(s.bits_per_second)
            );
            if let Some(r) = s.server_received {
                let _ = write!(out, "  server received {}", bytes(r as f64));
            }
            if let Some(spread) = &s.interval_bits_per_second {
                let _ = write!(
                    out,
                    "  per interval {} / {} / {} (min/mean/max)",
                    rate(spread.min),
                    rate(spread.mean),
                    rate(spread.max)
                );
            }
            if let Some(spread) = &s.interval_srtt_us {
                let _ = write!(
                    out,
                    "  srtt {:.2}/{:.2}/{:.2} ms",
                    spread.min / 1000.0,
                    spread.mean / 1000.0,
                    spread.max / 1000.0
                );
            }
            if let Some(retransmits) = s.retransmits {
                let _ = write!(out, "  retr {retransmits}");
            }
            out.push('\n');
            for (i, t) in s.sender_intervals.iter().enumerate() {
                let _ = writeln!(out, "      sender interval {:>3}:{}", i + 1, tcp_text(t));
            }
            if let Some(udp) = &s.udp {
                out.push_str(&udp_text(udp));
            }
            if let Some(e) = &s.error {
                let _ = writeln!(out, "      stopped early: {e}");
            }
        }
        if self.up_bits_per_second > 0.0 {
            let _ = writeln!(out, "up   total {}", rate(self.up_bits_per_second));
        }
        if self.down_bits_per_second > 0.0 {
            let _ = writeln!(out, "down total {}", rate(self.down_bits_per_second));
        }
        let _ = writeln!(
            out,
            "client cpu {:.2} s ({:.0} % of one core)",
            self.client_cpu_seconds,
            if self.seconds > 0.0 {
                100.0 * self.client_cpu_seconds / self.seconds
            } else {
                0.0
            }
        );
        if let Some(l) = &self.latency {
            let _ = writeln!(
                out,
                "latency under load: {} probes  p50 {:.0} µs  p90 {:.0} µs  p99 {:.0} µs  max {:.0} µs",
                l.count, l.p50_us, l.p90_us, l.p99_us, l.max_us
            );
        }
        out
    }
}

/// An interval's `TCP_INFO` figures as text: retransmits, window, RTT and, where the
/// kernel has them, delivery rate and limited time.
fn tcp_text(t: &TcpInterval) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "  retr {:>3}  cwnd {:>10}  rtt {:.2}/{:.2} ms",
        t.retransmits,
        bytes(t.info.cwnd_bytes as f64),
        t.info.srtt_us as f64 / 1000.0,
        t.info.rttvar_us as f64 / 1000.0
    );
    if let Some(r) = t.info.delivery_rate {
        let _ = write!(out, "  delivery {}", rate(r as f64 * 8.0));
    }
    if let (Some(rw), Some(sb)) = (
        t.rwnd_limited_us_in_interval,
        t.sndbuf_limited_us_in_interval,
    ) {
        let _ = write!(
            out,
            "  rwnd-limited {:.0} ms  sndbuf-limited {:.0} ms",
            rw as f64 / 1000.0,
            sb as f64 / 1000.0
        );
    }
    out
}

/// The UDP lines of a stream: sender, receiver, and the receiver's intervals.
fn udp_text(udp: &UdpSummary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "      sent {} datagrams; pacing error p99 {:.1} µs, max {:.1} µs",
        udp.sent, udp.pacing_error_p99_us, udp.pacing_error_max_us
    );
    let Some(r) = &udp.receiver else {
        let _ = writeln!(
            out,
            "      the receiver's report did not come back (is the server `sockit serve --perf`?)"
        );
        return out;
    };
    let _ = writeln!(
        out,
        "      received {}  lost {} ({:.3} %)  duplicates {}  reordered {}  jitter {:.1} µs",
        r.total.received,
        r.lost(Some(udp.sent)),
        r.loss_percent(Some(udp.sent)),
        r.total.duplicates,
        r.total.reordered,
        r.total.jitter_ns / 1000.0
    );
    for (n, other) in udp.more_receivers.iter().enumerate() {
        let _ = writeln!(
            out,
            "      receiver {}: received {}  lost {}  reordered {}  jitter {:.1} µs",
            n + 2,
            other.total.received,
            other.lost(Some(udp.sent)),
            other.total.reordered,
            other.total.jitter_ns / 1000.0
        );
    }
    for (i, (figures, sent)) in r.intervals.iter().zip(&udp.sent_per_interval).enumerate() {
        let lost = sent.saturating_sub(figures.received);
        let _ = writeln!(
            out,
            "      interval {:>3}: sent {sent}  received {}  lost {lost}  reordered {}  duplicates {}  jitter {:.1} µs",
            i + 1,
            figures.received,
            figures.reordered,
            figures.duplicates,
            figures.jitter_ns / 1000.0
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_and_rates_read_right() {
        let s = Spread::of([1.0, 2.0, 6.0]);
        assert!(s.is_some_and(|s| s.min == 1.0 && s.mean == 3.0 && s.max == 6.0));
        assert!(Spread::of(std::iter::empty()).is_none());
        assert_eq!(rate(9.41e9), "9.41 Gbit/s");
        assert_eq!(rate(2.5e6), "2.50 Mbit/s");
        assert_eq!(bytes(2048.0), "2.00 KiB");
    }

    #[test]
    fn interval_counters_are_differences() {
        let before = TcpInfo {
            total_retrans: 3,
            rwnd_limited_us: Some(100),
            ..TcpInfo::default()
        };
        let now = TcpInfo {
            total_retrans: 5,
            rwnd_limited_us: Some(250),
            ..TcpInfo::default()
        };
        let t = TcpInterval::between(Some(&before), now);
        assert_eq!(t.retransmits, 2);
        assert_eq!(t.rwnd_limited_us_in_interval, Some(150));
        assert_eq!(t.sndbuf_limited_us_in_interval, None);
    }
}
