//! Benchmark results as data: the [`Report`] a run produces, its JSON form (every figure
//! plus the full latency histogram, so no precision is lost), the human table printed on
//! stdout, and merging reports from several machines into one.
//!
//! The JSON field names and the table's labels are a stable interface (the comparison
//! script and users' scripts read them); `format` names the version. Durations carry their
//! unit in their name: `_s` seconds, `_us` microseconds.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::histogram::{self, LatencyHistogram};
use super::measure::{FailureCounts, Measured};
use super::{BenchOptions, Ending, LoadgenCpu, Pattern, RunSpan};

/// The value of [`Report::format`] this version writes and reads.
pub const FORMAT: &str = "sockit-bench/1";

/// Everything one run (or several merged runs) measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Names this layout, so a later sockit can read or refuse old files knowingly.
    pub format: String,
    /// The endpoint benchmarked (merged runs: every distinct one, comma-separated).
    pub target: String,
    /// The traffic pattern.
    pub pattern: Pattern,
    /// `"closed"` or `"open"`.
    pub load: LoadMode,
    /// Open loop: the requested rate (summed over merged runs).
    pub target_rate_per_s: Option<f64>,
    /// Connections (datagram sockets for `udp`), summed over merged runs.
    pub connections: u64,
    /// Bytes per request, or per write when streaming; the longest when several
    /// requests are sent in turn.
    pub size_bytes: u64,
    /// The shortest request when several of different lengths are sent in turn
    /// (`--message-file` with a delimiter), so the table does not give them all the
    /// longest one's size; `None` when every request is `size_bytes` long.
    #[serde(default)]
    pub size_min_bytes: Option<u64>,
    /// Warm-up before measuring (the longest of merged runs).
    pub warmup_s: f64,
    /// The measured span (the longest of merged runs).
    pub duration_s: f64,
    /// How many runs this report adds up.
    pub runs: u64,
    /// Exchanges completed in the measured span (writes, when streaming).
    pub exchanges: u64,
    /// Exchanges per second (merged: the sum of each run's rate).
    pub exchanges_per_s: f64,
    /// Requests that went out in the measured span, answered or not.
    pub sent: u64,
    /// Payload bytes sent by the completed exchanges.
    pub bytes: u64,
    /// Bytes per second sent (merged: summed).
    pub bytes_per_s: f64,
    /// The same in gigabits per second.
    pub gbit_per_s: f64,
    /// Latency figures, read from [`Report::histogram`]; all zero when streaming.
    pub latency_us: LatencyFigures,
    /// Failures by kind.
    pub errors: ErrorFigures,
    /// Datagram patterns: requests that got no reply within the timeout.
    pub lost: Option<LossFigures>,
    /// Open loop: whether the requests went out at the target rate.
    pub rate_reached: Option<bool>,
    /// Open loop: the longest a request went out after it was due.
    pub max_send_lag_us: u64,
    /// Open loop: requests due in the measured span that never went out.
    pub unsent: u64,
    /// Exchanges still waiting for a reply when the run ended (not in the figures).
    pub in_flight_at_end: u64,
    /// How long the oldest of those had waited.
    pub oldest_in_flight_us: u64,
    /// Threads the load generator drove the connections with (merged: summed).
    pub loadgen_threads: u64,
    /// CPU seconds the load generator used in the measured span (merged: summed).
    pub loadgen_cpu_s: f64,
    /// That CPU time as a share of one core over the span, in percent, summed over the
    /// threads (merged: summed, like the threads): divided by the threads, the share of
    /// each core.
    pub loadgen_cpu_percent: f64,
    /// The busiest load generator thread's CPU time as a share of one core, in percent:
    /// near 100 means that core was saturated and the load generator, not the server,
    /// may be the limit (merged: the highest).
    #[serde(default)]
    pub loadgen_busiest_thread_percent: f64,
    /// The full latency histogram, so reports can be merged without losing precision.
    pub histogram: EncodedHistogram,
    /// The run was interrupted (Ctrl-C): the figures cover the span up to then
    /// (merged: any run partial).
    #[serde(default)]
    pub partial: bool,
    /// With `--ramp-up`: the exchanges completed in the measured span while the rate was
    /// still ramping, kept out of the main figures, which are the steady state's.
    #[serde(default)]
    pub ramp: Option<RampFigures>,
    /// With `--connect-rate`: connections opened per second (merged: summed).
    #[serde(default)]
    pub connect_rate_per_s: Option<f64>,
    /// Connections that got connected at least once (merged: summed).
    #[serde(default)]
    pub connected: u64,
    /// Seconds from the start until the last of those connected: how long a connect ramp
    /// took (merged: the longest).
    #[serde(default)]
    pub all_connected_after_s: Option<f64>,
    /// Set when the load generator itself may be what limited the run; the table says
    /// why in words.
    #[serde(default)]
    pub loadgen_limit: Option<LoadgenLimit>,
    /// Which engine drove the connections (merged: set only when every run used the
    /// same one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<super::EngineKind>,
    /// `tls://`: the TLS handshakes of the whole run, warm-up included, full and resumed
    /// (merged: summed).
    #[serde(default)]
    pub tls_handshakes: Option<TlsHandshakes>,
}

/// How many TLS handshakes a run completed, by kind: shows whether sessions resumed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsHandshakes {
    /// Full handshakes (the certificate sent and checked).
    pub full: u64,
    /// Resumed sessions.
    pub resumed: u64,
}

/// The exchanges of a rate ramp, reported apart from the steady state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RampFigures {
    /// The ramp's length, from the start of traffic.
    pub ramp_up_s: f64,
    /// Exchanges completed in the measured span during the ramp.
    pub exchanges: u64,
    /// Their latency figures.
    pub latency_us: LatencyFigures,
    /// Their histogram.
    pub histogram: EncodedHistogram,
}

/// Why the load generator, not the server, may have been the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadgenLimit {
    /// A load generator thread saturated its core.
    Cpu,
    /// The open-loop rate was not reached.
    Rate,
    /// Both.
    CpuAndRate,
}

/// Closed or open loop, as written in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LoadMode {
    /// Each connection sends when its previous reply arrives.
    Closed,
    /// Requests follow a fixed timetable; latency counts from the due time.
    Open,
}

/// Latency percentiles in whole microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LatencyFigures {
    /// Samples in the histogram.
    pub count: u64,
    /// Fastest.
    pub min: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// 99.99th percentile.
    pub p99_99: u64,
    /// Slowest.
    pub max: u64,
    /// Mean (fractional microseconds).
    pub mean: f64,
    /// Standard deviation (fractional microseconds).
    pub stdev: f64,
}

/// Failures by kind, as written in reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ErrorFigures {
    /// Connection refused: nothing listens.
    pub refused: u64,
    /// Connection reset mid-exchange.
    pub reset: u64,
    /// No reply (or no connection) within the timeout.
    pub timeout: u64,
    /// The peer closed before the whole reply, or a datagram reply was too short.
    pub short_reply: u64,
    /// A reply the reply matcher refused (`--reply-regex`, no `--reply-until` delimiter).
    #[serde(default)]
    pub mismatch: u64,
    /// Anything else.
    pub other: u64,
    /// All of the above.
    pub total: u64,
}

/// Datagram loss.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossFigures {
    /// Requests without a reply within the timeout.
    pub lost: u64,
    /// `lost` as a percentage of requests sent.
    pub percent: f64,
}

/// A histogram in a JSON file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedHistogram {
    /// The unit of the values: `"us"`.
    pub unit: String,
    /// How `data` is encoded: `"hdrhistogram-v2-deflate-base64"`.
    pub encoding: String,
    /// The encoded histogram.
    pub data: String,
}

/// The value of [`LatencyMerge::format`].
pub const LATENCY_FORMAT: &str = "sockit-bench-latency/1";

/// Interval logs (`--hlog`) merged: the latency of every interval of every log added
/// up. A log holds no counts or rates besides its histograms, so this is all a merge of
/// logs can say.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyMerge {
    /// Names this layout.
    pub format: String,
    /// How many logs were added up.
    pub logs: u64,
    /// How many intervals they held.
    pub intervals: u64,
    /// Latency figures of the sum (`count`: the exchanges recorded).
    pub latency_us: LatencyFigures,
    /// The summed histogram, as in [`Report::histogram`].
    pub histogram: EncodedHistogram,
}

impl LatencyMerge {
    /// Adds up the logs, each given as its intervals' summed histogram and how many
    /// intervals it held.
    pub fn of_logs(logs: &[(&LatencyHistogram, u64)]) -> LatencyMerge {
        let mut sum = LatencyHistogram::new();
        for (latency, _) in logs {
            sum.add(latency);
        }
        LatencyMerge {
            format: LATENCY_FORMAT.into(),
            logs: logs.len() as u64,
            intervals: logs.iter().map(|(_, intervals)| intervals).sum(),
            latency_us: LatencyFigures::of(&sum),
            histogram: EncodedHistogram::of(&sum),
        }
    }

    /// The human table: what was merged, then the latency lines of a report.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            let _ = writeln!(out, "{label:<18}{value}");
        };
        line(
            "merged",
            format!(
                "{}, {}",
                counted(self.logs, "interval log"),
                counted(self.intervals, "interval")
            ),
        );
        line("exchanges", self.latency_us.count.to_string());
        if self.latency_us.count == 0 {
            line("latency", "n/a (no exchange recorded)".into());
        } else {
            for (label, value) in self.latency_us.rows() {
                line(label, value);
            }
        }
        out
    }

    /// As pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // Strings, numbers and plain structs only: it always serializes.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }
}

/// Why reports could not be merged or read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The file is not a report this version understands.
    #[error("{0}")]
    Unreadable(String),
    /// The reports measured different things.
    #[error(
        "cannot merge {} run with {} run; merge runs of one pattern",
        with_article(*first),
        with_article(*other)
    )]
    MixedPatterns {
        /// The first report's pattern.
        first: Pattern,
        /// The pattern that differs.
        other: Pattern,
    },
    /// Nothing to merge.
    #[error("no report to merge")]
    Empty,
}

/// "a hello", "an echo": the pattern with its article.
fn with_article(pattern: Pattern) -> String {
    match pattern {
        Pattern::Echo => format!("an {pattern}"),
        Pattern::Hello | Pattern::Stream | Pattern::Udp => format!("a {pattern}"),
    }
}

/// Whole microseconds of a duration.
fn us(duration: Duration) -> u64 {
    duration.as_micros().try_into().unwrap_or(u64::MAX)
}

impl LatencyFigures {
    /// The figures of a histogram.
    fn of(histogram: &LatencyHistogram) -> LatencyFigures {
        let p = histogram.percentiles();
        LatencyFigures {
            count: histogram.count(),
            min: us(p.min),
            p50: us(p.p50),
            p90: us(p.p90),
            p99: us(p.p99),
            p99_9: us(p.p99_9),
            p99_99: us(p.p99_99),
            max: us(p.max),
            mean: p.mean.as_secs_f64() * 1e6,
            stdev: p.stdev.as_secs_f64() * 1e6,
        }
    }

    /// The table's latency lines: label and value.
    fn rows(&self) -> [(&'static str, String); 8] {
        [
            ("latency min", micros(self.min)),
            ("latency p50", micros(self.p50)),
            ("latency p90", micros(self.p90)),
            ("latency p99", micros(self.p99)),
            ("latency p99.9", micros(self.p99_9)),
            ("latency p99.99", micros(self.p99_99)),
            ("latency max", micros(self.max)),
            (
                "latency mean",
                format!("{} ± {}", micros_f(self.mean), micros_f(self.stdev)),
            ),
        ]
    }
}

impl From<FailureCounts> for ErrorFigures {
    fn from(counts: FailureCounts) -> Self {
        ErrorFigures {
            refused: counts.refused,
            reset: counts.reset,
            timeout: counts.timeout,
            short_reply: counts.short_reply,
            mismatch: counts.mismatch,
            other: counts.other,
            total: counts.total(),
        }
    }
}

impl ErrorFigures {
    /// Adds another report's failures.
    fn add(&mut self, other: &ErrorFigures) {
        self.refused += other.refused;
        self.reset += other.reset;
        self.timeout += other.timeout;
        self.short_reply += other.short_reply;
        self.mismatch += other.mismatch;
        self.other += other.other;
        self.total += other.total;
    }
}

impl EncodedHistogram {
    /// Encodes a histogram.
    fn of(histogram: &LatencyHistogram) -> EncodedHistogram {
        EncodedHistogram {
            unit: histogram::UNIT.into(),
            encoding: histogram::ENCODING.into(),
            data: histogram.encode(),
        }
    }

    /// Decodes the histogram.
    ///
    /// # Errors
    /// [`ReportError::Unreadable`] for an unknown unit or encoding, or bad data.
    pub fn decode(&self) -> Result<LatencyHistogram, ReportError> {
        if self.unit != histogram::UNIT || self.encoding != histogram::ENCODING {
            return Err(ReportError::Unreadable(format!(
                "histogram in unit {:?} and encoding {:?}; this sockit reads {:?} / {:?}",
                self.unit,
                self.encoding,
                histogram::UNIT,
                histogram::ENCODING
            )));
        }
        LatencyHistogram::decode(&self.data).map_err(|e| ReportError::Unreadable(e.to_string()))
    }
}

impl Report {
    /// The report of one finished run.
    pub fn of_run(
        options: &BenchOptions,
        measured: &Measured,
        loadgen: LoadgenCpu,
        span: RunSpan,
    ) -> Report {
        let seconds = span.measured.as_secs_f64();
        let steady_seconds = span.steady.as_secs_f64();
        let per_second = |n: u64| {
            if steady_seconds > 0.0 {
                n as f64 / steady_seconds
            } else {
                0.0
            }
        };
        let target_rate = options.rate();
        let lost = options.pattern.is_datagram().then(|| {
            let lost = measured.failures.timeout;
            LossFigures {
                lost,
                percent: percent(lost, measured.sent),
            }
        });
        let rate_reached = target_rate.map(|_| {
            // Each connection may be mid-request at either edge of the window.
            let scheduled = measured.due as f64;
            let allowance = (0.05 * scheduled).max(options.connections as f64);
            measured.sent as f64 + allowance >= scheduled
        });
        let bytes_per_s = per_second(measured.bytes);
        let ramp = (!options.ramp_up.is_zero()).then(|| RampFigures {
            ramp_up_s: options.ramp_up.as_secs_f64(),
            exchanges: measured.ramp_exchanges,
            latency_us: LatencyFigures::of(&measured.ramp_latency),
            histogram: EncodedHistogram::of(&measured.ramp_latency),
        });
        let mut report = Report {
            format: FORMAT.into(),
            target: options.endpoint.to_string(),
            pattern: options.pattern,
            load: if target_rate.is_some() {
                LoadMode::Open
            } else {
                LoadMode::Closed
            },
            target_rate_per_s: target_rate,
            connections: options.connections as u64,
            size_bytes: options.messages.longest() as u64,
            size_min_bytes: shortest_if_shorter(&options.messages),
            warmup_s: options.warmup.as_secs_f64(),
            duration_s: seconds,
            runs: 1,
            exchanges: measured.exchanges,
            exchanges_per_s: per_second(measured.exchanges),
            sent: measured.sent,
            bytes: measured.bytes,
            bytes_per_s,
            gbit_per_s: bytes_per_s * 8.0 / 1e9,
            latency_us: LatencyFigures::of(&measured.latency),
            errors: measured.failures.into(),
            lost,
            rate_reached,
            max_send_lag_us: us(measured.max_send_lag),
            unsent: measured.unsent,
            in_flight_at_end: measured.in_flight_at_end,
            oldest_in_flight_us: us(measured.oldest_in_flight),
            loadgen_threads: loadgen.threads as u64,
            loadgen_cpu_s: loadgen.cpu.as_secs_f64(),
            loadgen_busiest_thread_percent: if seconds > 0.0 {
                100.0 * loadgen.busiest_thread.as_secs_f64() / seconds
            } else {
                0.0
            },
            loadgen_cpu_percent: if seconds > 0.0 {
                100.0 * loadgen.cpu.as_secs_f64() / seconds
            } else {
                0.0
            },
            histogram: EncodedHistogram::of(&measured.latency),
            partial: span.ending == Ending::Interrupted,
            ramp,
            connect_rate_per_s: options.connect_rate,
            connected: measured.connected,
            all_connected_after_s: span.all_connected_after.map(|d| d.as_secs_f64()),
            loadgen_limit: None,
            engine: None,
            tls_handshakes: None,
        };
        report.loadgen_limit = report.limit();
        report
    }

    /// Whether the figures show the load generator as a possible limit.
    fn limit(&self) -> Option<LoadgenLimit> {
        let cpu = self.loadgen_threads > 0
            && self.loadgen_busiest_thread_percent >= SATURATED_CORE_PERCENT;
        let rate = self.rate_reached == Some(false);
        match (cpu, rate) {
            (true, true) => Some(LoadgenLimit::CpuAndRate),
            (true, false) => Some(LoadgenLimit::Cpu),
            (false, true) => Some(LoadgenLimit::Rate),
            (false, false) => None,
        }
    }

    /// Reads a report from its JSON text.
    ///
    /// # Errors
    /// [`ReportError::Unreadable`] when the text is not a report of this format.
    pub fn from_json(text: &str) -> Result<Report, ReportError> {
        let report: Report = serde_json::from_str(text)
            .map_err(|e| ReportError::Unreadable(format!("not a sockit bench report: {e}")))?;
        if report.format != FORMAT {
            return Err(ReportError::Unreadable(format!(
                "report format {:?}; this sockit reads {FORMAT:?}",
                report.format
            )));
        }
        Ok(report)
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        // A Report holds only strings, numbers, options and plain structs: it always
        // serializes.
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// Combines runs taken at the same time on several machines into one report:
    /// throughputs and counts are summed, histograms added (percentiles are recomputed
    /// from the sum, never averaged), spans and lags take the longest.
    ///
    /// # Errors
    /// [`ReportError::MixedPatterns`] for reports of different patterns,
    /// [`ReportError::Unreadable`] for a histogram that does not decode,
    /// [`ReportError::Empty`] for no reports.
    pub fn merge(reports: &[Report]) -> Result<Report, ReportError> {
        let Some(first) = reports.first() else {
            return Err(ReportError::Empty);
        };
        let mut merged = first.clone();
        let mut histogram = first.histogram.decode()?;
        let mut targets = vec![first.target.clone()];
        for report in &reports[1..] {
            if report.pattern != merged.pattern {
                return Err(ReportError::MixedPatterns {
                    first: merged.pattern,
                    other: report.pattern,
                });
            }
            histogram.add(&report.histogram.decode()?);
            if !targets.contains(&report.target) {
                targets.push(report.target.clone());
            }
            merged.add(report);
        }
        merged.target = targets.join(", ");
        merged.ramp = merge_ramps(reports)?;
        merged.loadgen_limit = merged.limit();
        merged.latency_us = LatencyFigures::of(&histogram);
        merged.histogram = EncodedHistogram::of(&histogram);
        if let Some(lost) = merged.lost.as_mut() {
            lost.percent = percent(lost.lost, merged.sent);
        }
        Ok(merged)
    }

    /// Adds the counts and rates of `other` (the histogram is handled by the caller).
    fn add(&mut self, other: &Report) {
        if self.load != other.load {
            self.load = LoadMode::Open;
        }
        self.target_rate_per_s = match (self.target_rate_per_s, other.target_rate_per_s) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        if self.engine != other.engine {
            self.engine = None;
        }
        self.connections += other.connections;
        let shortest = self.shortest_size().min(other.shortest_size());
        self.size_bytes = self.size_bytes.max(other.size_bytes);
        self.size_min_bytes = (shortest < self.size_bytes).then_some(shortest);
        self.warmup_s = self.warmup_s.max(other.warmup_s);
        self.duration_s = self.duration_s.max(other.duration_s);
        self.runs += other.runs;
        self.exchanges += other.exchanges;
        self.exchanges_per_s += other.exchanges_per_s;
        self.sent += other.sent;
        self.bytes += other.bytes;
        self.bytes_per_s += other.bytes_per_s;
        self.gbit_per_s += other.gbit_per_s;
        self.errors.add(&other.errors);
        self.lost = match (self.lost, other.lost) {
            (Some(a), Some(b)) => Some(LossFigures {
                lost: a.lost + b.lost,
                percent: 0.0,
            }),
            (a, b) => a.or(b),
        };
        self.rate_reached = match (self.rate_reached, other.rate_reached) {
            (Some(a), Some(b)) => Some(a && b),
            (a, b) => a.or(b),
        };
        self.max_send_lag_us = self.max_send_lag_us.max(other.max_send_lag_us);
        self.unsent += other.unsent;
        self.in_flight_at_end += other.in_flight_at_end;
        self.oldest_in_flight_us = self.oldest_in_flight_us.max(other.oldest_in_flight_us);
        self.loadgen_threads += other.loadgen_threads;
        self.loadgen_cpu_s += other.loadgen_cpu_s;
        self.loadgen_cpu_percent += other.loadgen_cpu_percent;
        self.loadgen_busiest_thread_percent = self
            .loadgen_busiest_thread_percent
            .max(other.loadgen_busiest_thread_percent);
        self.partial |= other.partial;
        self.connect_rate_per_s = match (self.connect_rate_per_s, other.connect_rate_per_s) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.connected += other.connected;
        self.tls_handshakes = match (self.tls_handshakes, other.tls_handshakes) {
            (Some(a), Some(b)) => Some(TlsHandshakes {
                full: a.full + b.full,
                resumed: a.resumed + b.resumed,
            }),
            (a, b) => a.or(b),
        };
        self.all_connected_after_s = match (self.all_connected_after_s, other.all_connected_after_s)
        {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }

    /// The human table printed on stdout: one figure per line, label then value.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            let _ = writeln!(out, "{label:<18}{value}");
        };
        line("target", self.target.clone());
        line("pattern", self.describe_pattern());
        line(
            "measured",
            format!(
                "{} after {} warm-up{}",
                seconds(self.duration_s),
                seconds(self.warmup_s),
                if self.runs > 1 {
                    format!(", {} runs merged", self.runs)
                } else {
                    String::new()
                }
            ),
        );
        if self.partial {
            line(
                "partial",
                format!(
                    "yes: interrupted, the figures cover the first {} measured",
                    seconds(self.duration_s)
                ),
            );
        }
        if let Some(rate) = self.target_rate_per_s {
            let verdict = match self.rate_reached {
                Some(false) => "NOT reached",
                _ => "reached",
            };
            let over = if self.ramp.is_some() {
                " over the span, ramp included"
            } else {
                ""
            };
            line(
                "rate",
                format!(
                    "target {}/s, sent {}/s{over}: {verdict}",
                    number(rate),
                    number(self.sent as f64 / self.duration_s.max(f64::MIN_POSITIVE))
                ),
            );
        }
        let unit = if self.pattern == Pattern::Stream {
            "writes"
        } else {
            "exchanges"
        };
        line(
            unit,
            format!("{} ({}/s)", self.exchanges, number(self.exchanges_per_s)),
        );
        line(
            "throughput",
            format!(
                "{} sent ({}/s, {})",
                bytes(self.bytes as f64),
                bytes(self.bytes_per_s),
                // In the unit that fits: small requests read "37.50 kbit/s", not "0.000 Gbit/s".
                super::throughput_report::rate(self.gbit_per_s * 1e9)
            ),
        );
        if self.pattern != Pattern::Stream && self.latency_us.count == 0 {
            line("latency", "n/a (no exchange completed)".into());
        } else if self.pattern != Pattern::Stream {
            for (label, value) in self.latency_us.rows() {
                line(label, value);
            }
        }
        let e = &self.errors;
        line(
            "errors",
            format!(
                "{} (refused {}, reset {}, timeout {}, short reply {}, mismatch {}, other {})",
                e.total, e.refused, e.reset, e.timeout, e.short_reply, e.mismatch, e.other
            ),
        );
        if let Some(words) = self.unconnected_words() {
            line("connected", words);
        }
        if let Some(tls) = self.tls_handshakes {
            line(
                "tls handshakes",
                format!(
                    "{} resumed, {} full (the whole run, warm-up included)",
                    tls.resumed, tls.full
                ),
            );
        }
        if let Some(ramp) = &self.ramp {
            line(
                "ramp",
                format!(
                    "{} up to the full rate, {} exchanges in the measured span, kept out of \
                     the figures above",
                    seconds(ramp.ramp_up_s),
                    ramp.exchanges
                ),
            );
            if ramp.latency_us.count > 0 {
                let l = &ramp.latency_us;
                line(
                    "ramp latency",
                    format!(
                        "p50 {}, p99 {}, max {}",
                        micros(l.p50),
                        micros(l.p99),
                        micros(l.max)
                    ),
                );
            }
        }
        if let Some(rate) = self.connect_rate_per_s {
            let after = self.all_connected_after_s.map_or_else(
                || "none connected".to_string(),
                |s| format!("all in {}", seconds(s)),
            );
            line(
                "connect ramp",
                format!(
                    "{}/s: {} of {} connected, {after}",
                    number(rate),
                    self.connected,
                    self.connections
                ),
            );
        }
        if let Some(lost) = self.lost {
            line(
                "lost",
                format!("{} of {} sent ({:.2}%)", lost.lost, self.sent, lost.percent),
            );
        }
        if self.load == LoadMode::Open {
            line(
                "send lag max",
                format!("{} behind schedule", micros(self.max_send_lag_us)),
            );
            if self.unsent > 0 {
                line("unsent", format!("{} requests never went out", self.unsent));
            }
        }
        if self.loadgen_threads > 0 {
            let per_exchange = if self.exchanges > 0 {
                format!(
                    ", {} CPU per {}",
                    micros_f(self.loadgen_cpu_s * 1e6 / self.exchanges as f64),
                    if self.pattern == Pattern::Stream {
                        "write"
                    } else {
                        "exchange"
                    }
                )
            } else {
                String::new()
            };
            line(
                "load generator",
                format!("{}{per_exchange}", self.loadgen_cpu_words()),
            );
        }
        if let Some(limit) = self.loadgen_limit {
            line("limit", self.limit_words(limit));
        }
        if self.in_flight_at_end > 0 {
            line(
                "in flight at end",
                format!(
                    "{} (oldest {}; not in the figures)",
                    self.in_flight_at_end,
                    micros(self.oldest_in_flight_us)
                ),
            );
        }
        out
    }

    /// "only 981 of 5000 connections; …" when some connections never connected (out of
    /// file descriptors, a server at its limit): the figures then come from fewer
    /// connections than the pattern line says. `None` when all did, when none did (the
    /// failure says why), and with `--connect-rate`, whose line counts them already.
    fn unconnected_words(&self) -> Option<String> {
        if self.connect_rate_per_s.is_some()
            || self.connected == 0
            || self.connected >= self.connections
        {
            return None;
        }
        let sockets = if self.pattern.is_datagram() {
            "sockets"
        } else {
            "connections"
        };
        Some(format!(
            "only {} of {} {sockets}; the others never connected (see the errors and the \
             first failure)",
            self.connected, self.connections
        ))
    }

    /// "echo, 64-byte messages, 10 connections, closed loop".
    fn describe_pattern(&self) -> String {
        let (what, per) = match self.pattern {
            Pattern::Hello => ("hello (a connection per request)", "requests"),
            Pattern::Echo => ("echo", "messages"),
            Pattern::Stream => ("stream", "writes"),
            Pattern::Udp => ("udp", "datagrams"),
        };
        let load = match self.load {
            LoadMode::Closed => "closed loop".to_string(),
            LoadMode::Open => "open loop".to_string(),
        };
        let size = match self.size_min_bytes {
            Some(shortest) => format!("{shortest}- to {}-byte", self.size_bytes),
            None => format!("{}-byte", self.size_bytes),
        };
        format!(
            "{what}, {size} {per}, {}, {load}",
            self.connections_in_words()
        )
    }

    /// "1 connection", "10 connections", "32 sockets" (datagrams): for the table and the
    /// plot's title.
    pub fn connections_in_words(&self) -> String {
        let noun = match (self.pattern.is_datagram(), self.connections) {
            (true, 1) => "socket",
            (true, _) => "sockets",
            (false, 1) => "connection",
            (false, _) => "connections",
        };
        format!("{} {noun}", self.connections)
    }

    /// The shortest request's size.
    fn shortest_size(&self) -> u64 {
        self.size_min_bytes.unwrap_or(self.size_bytes)
    }

    /// "55% of each of 2 cores (busiest thread 60%)": the load generator's CPU per core,
    /// never a sum that reads as saturation.
    fn loadgen_cpu_words(&self) -> String {
        let threads = self.loadgen_threads.max(1);
        let per_core = self.loadgen_cpu_percent / threads as f64;
        if threads == 1 {
            return format!("{per_core:.0}% of 1 core");
        }
        format!(
            "{per_core:.0}% of each of {threads} cores on average (busiest thread {:.0}%)",
            self.loadgen_busiest_thread_percent
        )
    }

    /// The load generator's limit in words, for the table.
    fn limit_words(&self, limit: LoadgenLimit) -> String {
        let cpu = || {
            format!(
                "a load generator thread used {:.0}% of its core",
                self.loadgen_busiest_thread_percent
            )
        };
        let rate = || {
            format!(
                "the target rate was not reached ({} requests never went out)",
                self.unsent
            )
        };
        let why = match limit {
            LoadgenLimit::Cpu => cpu(),
            LoadgenLimit::Rate => rate(),
            LoadgenLimit::CpuAndRate => format!("{}, and {}", cpu(), rate()),
        };
        format!("the load generator, not the server, may be the bottleneck: {why}")
    }

    /// The warning to print when a load generator thread saturated its core, so the
    /// figures may describe the load generator rather than the server.
    pub fn loadgen_warning(&self) -> Option<String> {
        if self.loadgen_threads == 0 || self.loadgen_busiest_thread_percent < SATURATED_CORE_PERCENT
        {
            return None;
        }
        Some(format!(
            "a load generator thread used {:.0}% of its core ({}): it may be the limit, not \
             the server; give it more cores (--threads, taskset) or run it from more machines \
             and combine the reports with `sockit bench merge`",
            self.loadgen_busiest_thread_percent,
            self.loadgen_cpu_words()
        ))
    }

    /// The warning to print when an open-loop run fell short of its rate.
    pub fn rate_warning(&self) -> Option<String> {
        if self.rate_reached != Some(false) {
            return None;
        }
        let rate = self.target_rate_per_s.unwrap_or_default();
        Some(format!(
            "the target rate of {}/s was not reached ({}/s sent, {} requests never went out); \
             each connection has one request outstanding, so raise --connections, or lower --rate",
            number(rate),
            number(self.sent as f64 / self.duration_s.max(f64::MIN_POSITIVE)),
            self.unsent
        ))
    }
}

/// The ramps of several reports added up (their histograms added).
fn merge_ramps(reports: &[Report]) -> Result<Option<RampFigures>, ReportError> {
    let mut merged: Option<(RampFigures, LatencyHistogram)> = None;
    for ramp in reports.iter().filter_map(|r| r.ramp.as_ref()) {
        let histogram = ramp.histogram.decode()?;
        merged = Some(match merged {
            None => (ramp.clone(), histogram),
            Some((mut sum, mut sum_histogram)) => {
                sum.ramp_up_s = sum.ramp_up_s.max(ramp.ramp_up_s);
                sum.exchanges += ramp.exchanges;
                sum_histogram.add(&histogram);
                (sum, sum_histogram)
            }
        });
    }
    Ok(merged.map(|(mut ramp, histogram)| {
        ramp.latency_us = LatencyFigures::of(&histogram);
        ramp.histogram = EncodedHistogram::of(&histogram);
        ramp
    }))
}

/// A thread busy this share of the time (percent of one core) is taken as saturated.
const SATURATED_CORE_PERCENT: f64 = 90.0;

/// `part` as a percentage of `whole` (0 when `whole` is 0).
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// A rate with one decimal below 100, whole above.
fn number(value: f64) -> String {
    if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// A span in seconds, short ("3 s", "0.5 s").
fn seconds(value: f64) -> String {
    format!("{} s", trim(format!("{value:.3}")))
}

/// A count of microseconds, in µs below 10 ms, ms below 10 s, s above.
fn micros(value: u64) -> String {
    micros_f(value as f64)
}

/// Fractional microseconds in the unit that reads best.
fn micros_f(value: f64) -> String {
    if value < 10_000.0 {
        format!("{} µs", trim(format!("{value:.1}")))
    } else if value < 10_000_000.0 {
        format!("{} ms", trim(format!("{:.2}", value / 1e3)))
    } else {
        format!("{} s", trim(format!("{:.3}", value / 1e6)))
    }
}

/// Bytes in B, kB, MB, GB (decimal).
fn bytes(value: f64) -> String {
    let (scaled, unit) = if value >= 1e9 {
        (value / 1e9, "GB")
    } else if value >= 1e6 {
        (value / 1e6, "MB")
    } else if value >= 1e3 {
        (value / 1e3, "kB")
    } else {
        (value, "B")
    };
    format!("{} {unit}", trim(format!("{scaled:.2}")))
}

/// "3.000" → "3", "0.500" → "0.5".
fn trim(text: String) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// "1 interval", "3 intervals": a count with its noun.
fn counted(count: impl Into<u64>, noun: &str) -> String {
    let count = count.into();
    if count == 1 {
        format!("{count} {noun}")
    } else {
        format!("{count} {noun}s")
    }
}

/// The shortest of the requests sent in turn, when it is shorter than the longest.
fn shortest_if_shorter(messages: &super::driver::Messages) -> Option<u64> {
    let shortest = messages.each.iter().map(bytes::Bytes::len).min()?;
    (shortest < messages.longest()).then_some(shortest as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(pattern: Pattern, latencies_us: &[u64], exchanges_per_s: f64) -> Report {
        let mut histogram = LatencyHistogram::new();
        for &v in latencies_us {
            histogram.record(Duration::from_micros(v));
        }
        Report {
            format: FORMAT.into(),
            target: "tcp://127.0.0.1:9000".into(),
            pattern,
            load: LoadMode::Closed,
            target_rate_per_s: None,
            connections: 2,
            size_bytes: 16,
            size_min_bytes: None,
            warmup_s: 1.0,
            duration_s: 2.0,
            runs: 1,
            exchanges: latencies_us.len() as u64,
            exchanges_per_s,
            sent: latencies_us.len() as u64,
            bytes: 16 * latencies_us.len() as u64,
            bytes_per_s: 16.0 * exchanges_per_s,
            gbit_per_s: 16.0 * exchanges_per_s * 8.0 / 1e9,
            latency_us: LatencyFigures::of(&histogram),
            errors: ErrorFigures {
                timeout: 1,
                total: 1,
                ..ErrorFigures::default()
            },
            lost: None,
            rate_reached: None,
            max_send_lag_us: 0,
            unsent: 0,
            in_flight_at_end: 2,
            oldest_in_flight_us: 7,
            loadgen_threads: 1,
            loadgen_cpu_s: 0.5,
            loadgen_cpu_percent: 25.0,
            loadgen_busiest_thread_percent: 25.0,
            histogram: EncodedHistogram::of(&histogram),
            partial: false,
            ramp: None,
            connect_rate_per_s: None,
            connected: 2,
            all_connected_after_s: Some(0.0),
            loadgen_limit: None,
            engine: None,
            tls_handshakes: None,
        }
    }

    #[test]
    fn json_round_trips() {
        let report = sample(Pattern::Echo, &[10, 20, 30, 4000], 1234.5);
        let back = Report::from_json(&report.to_json()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, report);
        let histogram = back.histogram.decode().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(histogram.count(), 4);
    }

    #[test]
    fn merging_adds_histograms_and_sums_throughput() {
        let fast = sample(Pattern::Echo, &[100; 900], 450.0);
        let slow = sample(Pattern::Echo, &[10_000; 100], 50.0);
        let merged = Report::merge(&[fast, slow]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(merged.runs, 2);
        assert_eq!(merged.exchanges, 1000);
        assert_eq!(merged.exchanges_per_s, 500.0);
        assert_eq!(merged.connections, 4);
        assert_eq!(merged.errors.timeout, 2);
        assert_eq!(merged.loadgen_threads, 2);
        assert_eq!(merged.loadgen_cpu_s, 1.0);
        // Percentages add up with the threads, so per core they stay those of one run.
        assert_eq!(merged.loadgen_cpu_percent, 50.0);
        assert!(
            merged.to_text().contains("25% of each of 2 cores"),
            "{}",
            merged.to_text()
        );
        assert_eq!(merged.latency_us.count, 1000);
        // Added, not averaged: the median is the fast runs', p99 the slow one's.
        assert_eq!(merged.latency_us.p50, 100);
        // 10 ms with 3 significant figures: the bucket's upper end, 10.007 ms.
        assert!(
            (10_000..=10_010).contains(&merged.latency_us.p99),
            "{merged:?}"
        );
        assert_eq!(merged.target, "tcp://127.0.0.1:9000");
        let histogram = merged.histogram.decode().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(histogram.count(), 1000);
    }

    #[test]
    fn merging_different_patterns_is_refused() {
        let a = sample(Pattern::Echo, &[1], 1.0);
        let b = sample(Pattern::Hello, &[1], 1.0);
        let error = Report::merge(&[a, b]).err();
        assert!(matches!(error, Some(ReportError::MixedPatterns { .. })));
        let words = error.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            words.starts_with("cannot merge an echo run with a hello run"),
            "{words}"
        );
        assert_eq!(Report::merge(&[]).err(), Some(ReportError::Empty));
    }

    #[test]
    fn other_files_are_refused_with_a_reason() {
        let error = Report::from_json("{}").err().map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("not a sockit bench report")));
        let mut old = sample(Pattern::Echo, &[1], 1.0);
        old.format = "sockit-bench/0".into();
        let error = Report::from_json(&old.to_json())
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("sockit-bench/1")));
    }

    #[test]
    fn text_table_has_the_documented_labels() {
        let text = sample(Pattern::Echo, &[100, 200, 20_000], 1.5).to_text();
        for label in [
            "target",
            "pattern",
            "measured",
            "exchanges",
            "throughput",
            "latency p50",
            "latency p99.99",
            "latency max",
            "errors",
            "in flight at end",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(label)),
                "{label} missing in\n{text}"
            );
        }
        // Above 2 ms the histogram keeps 3 significant figures, reported rounded up.
        assert!(text.contains("latency max       20.02 ms"), "{text}");
        assert!(text.contains("latency p50       200 µs"), "{text}");
        let stream = sample(Pattern::Stream, &[], 10.0).to_text();
        assert!(!stream.contains("latency"), "{stream}");
    }

    #[test]
    fn units_read_well() {
        assert_eq!(micros(162), "162 µs");
        assert_eq!(micros(20_123), "20.12 ms");
        assert_eq!(micros(12_500_000), "12.5 s");
        assert_eq!(bytes(19_700_000.0), "19.7 MB");
        assert_eq!(seconds(3.0), "3 s");
        assert_eq!(number(307_818.94), "307819");
    }

    /// Issue 15 item 10: no exchange gives no latency figures, not a row of zeros.
    #[test]
    fn no_exchange_says_latency_is_not_available() {
        let empty = sample(Pattern::Hello, &[], 0.0);
        let text = empty.to_text();
        assert!(text.contains("latency           n/a"), "{text}");
        assert!(!text.contains("latency max"), "{text}");
    }

    /// Issue 15 item 10: CPU per core, and a warning when one thread's core is saturated
    /// even though the average is not.
    #[test]
    fn load_generator_cpu_is_per_core_with_a_warning_for_a_saturated_one() {
        let mut report = sample(Pattern::Echo, &[100], 1.0);
        report.loadgen_threads = 2;
        report.loadgen_cpu_percent = 100.0;
        report.loadgen_busiest_thread_percent = 50.0;
        assert!(
            report
                .to_text()
                .contains("50% of each of 2 cores on average (busiest thread 50%)"),
            "{}",
            report.to_text()
        );
        assert_eq!(report.loadgen_warning(), None);
        report.loadgen_busiest_thread_percent = 97.0;
        let warning = report.loadgen_warning().unwrap_or_default();
        assert!(warning.contains("97% of its core"), "{warning}");
    }
}
