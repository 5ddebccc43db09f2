//! The counters of a running server (or relay) in the Prometheus text exposition format:
//! text only, no sockets. [`crate::metrics_http`] serves it at `/metrics` (`--metrics`).
//!
//! [`MetricsText`] writes the text format (version 0.0.4: `# HELP`, `# TYPE`, one sample
//! per line, label values escaped). [`server_metrics`] turns a [`Summary`] snapshot into
//! sockit's metric families; the relay writes its own
//! ([`crate::relay::RelayStats::write_metrics`]). Only snapshots are read, so the counters
//! stay plain atomics on the hot path.
//!
//! Why not the `prometheus-client` crate: it wants to own the metrics (its `Counter` and
//! `Family` types in a `Registry`), so using it means counting twice on the hot path or
//! writing a custom collector that is as long as this encoder; and it writes OpenMetrics,
//! not the classic format every scraper and parser reads. The text format is small and
//! stable, and the integration tests check ours with Python's `prometheus_client` parser.

use std::fmt::Write as _;

use super::stats::{ErrorKind, Summary};

/// The `Content-Type` of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a metric only goes up or can go both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A running total (name ends in `_total`).
    Counter,
    /// A value that goes up and down (open connections).
    Gauge,
}

/// A Prometheus text exposition being written.
#[derive(Debug, Default)]
pub struct MetricsText {
    out: String,
}

impl MetricsText {
    /// An empty exposition.
    pub fn new() -> MetricsText {
        MetricsText::default()
    }

    /// Starts a metric family: its `# HELP` and `# TYPE` lines. Samples follow.
    pub fn family(&mut self, name: &str, kind: MetricKind, help: &str) {
        let kind = match kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        };
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample of the current family.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(label);
                self.out.push_str("=\"");
                for c in value.chars() {
                    match c {
                        '\\' => self.out.push_str("\\\\"),
                        '"' => self.out.push_str("\\\""),
                        '\n' => self.out.push_str("\\n"),
                        c => self.out.push(c),
                    }
                }
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with a single sample.
    pub fn single(
        &mut self,
        name: &str,
        kind: MetricKind,
        help: &str,
        labels: &[(&str, &str)],
        value: u64,
    ) {
        self.family(name, kind, help);
        self.sample(name, labels, value);
    }

    /// The finished text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// The metric families of a server, from one snapshot of its counters.
///
/// `transport` labels every sample (`tcp`, `udp`, `tls`, `unix`, `unixgram`), so one
/// Prometheus query covers several sockit instances of different kinds.
pub fn server_metrics(summary: &Summary, transport: &str) -> String {
    use MetricKind::{Counter, Gauge};
    let mut m = MetricsText::new();
    let t = [("transport", transport)];
    m.single(
        "sockit_info",
        Gauge,
        "Always 1; the labels say which sockit this is.",
        &[("version", env!("CARGO_PKG_VERSION")), ("role", "serve")],
        1,
    );
    let counters: [(&str, &str, u64); 9] = [
        (
            "sockit_connections_accepted_total",
            "Connections accepted (stream endpoints); with --proxy-protocol this includes connections later closed for a bad header or denied by their real address.",
            summary.connections,
        ),
        (
            "sockit_connections_refused_total",
            "Clients turned away because --max-conns was reached (--max-conns-mode refuse).",
            summary.refused,
        ),
        (
            "sockit_connections_denied_total",
            "Clients (connections or datagrams) turned away by --allow/--deny.",
            summary.denied,
        ),
        (
            "sockit_connections_timed_out_total",
            "Connections closed because a time limit ran out (idle, message, unread reply, handshake, PROXY header).",
            summary.timed_out(),
        ),
        (
            "sockit_messages_received_total",
            "Messages (or datagrams) received and handled; an open connection adds its count when it closes or every 4096 messages.",
            summary.messages,
        ),
        (
            "sockit_messages_sent_total",
            "Replies sent.",
            summary.replies,
        ),
        (
            "sockit_received_bytes_total",
            "Bytes read from clients.",
            summary.bytes_in,
        ),
        (
            "sockit_sent_bytes_total",
            "Bytes written to clients.",
            summary.bytes_out,
        ),
        (
            "sockit_connection_errors_total",
            "Connections that ended on an error, all kinds (see sockit_errors_total).",
            summary.errors,
        ),
    ];
    m.single(
        "sockit_connections_active",
        Gauge,
        "Connections open now.",
        &t,
        summary.active,
    );
    for (name, help, value) in counters {
        m.single(name, Counter, help, &t, value);
    }
    m.family(
        "sockit_errors_total",
        Counter,
        "Connections (or datagram programs) that ended on an error, by kind.",
    );
    for kind in ErrorKind::ALL {
        m.sample(
            "sockit_errors_total",
            &[("transport", transport), ("kind", kind.label())],
            summary.errors_by_kind.get(kind),
        );
    }
    m.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::ErrorCounts;

    #[test]
    fn samples_escape_label_values_and_help() {
        let mut m = MetricsText::new();
        m.family("x_total", MetricKind::Counter, "a \\ b\nc");
        m.sample("x_total", &[("a", "q\"b\\c\nd"), ("k", "v")], 3);
        assert_eq!(
            m.finish(),
            "# HELP x_total a \\\\ b\\nc\n# TYPE x_total counter\nx_total{a=\"q\\\"b\\\\c\\nd\",k=\"v\"} 3\n"
        );
    }

    #[test]
    fn server_metrics_carry_every_counter_of_the_snapshot() {
        let mut by_kind = ErrorCounts::default();
        by_kind.0[ErrorKind::Timeout.index()] = 4;
        let summary = Summary {
            connections: 10,
            active: 2,
            messages: 30,
            replies: 29,
            bytes_in: 300,
            bytes_out: 290,
            errors: 4,
            errors_by_kind: by_kind,
            idle_closed: 3,
            denied: 5,
            refused: 6,
        };
        let text = server_metrics(&summary, "tcp");
        for line in [
            "sockit_connections_accepted_total{transport=\"tcp\"} 10",
            "sockit_connections_active{transport=\"tcp\"} 2",
            "sockit_connections_timed_out_total{transport=\"tcp\"} 7",
            "sockit_messages_sent_total{transport=\"tcp\"} 29",
            "sockit_errors_total{transport=\"tcp\",kind=\"timeout\"} 4",
            "sockit_errors_total{transport=\"tcp\",kind=\"reset\"} 0",
            "sockit_connections_denied_total{transport=\"tcp\"} 5",
            "sockit_connections_refused_total{transport=\"tcp\"} 6",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
