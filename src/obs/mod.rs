//! Observability: what sockit tells people while it runs.
//!
//! * [`events`]: the per-connection and per-message lines on stdout (the note's format,
//!   text, or JSON);
//! * [`logging`]: diagnostics (errors, warnings, debug) on stderr through `tracing`;
//! * [`stats`]: counters behind the shutdown summary and the metrics;
//! * [`metrics`]: the counters in Prometheus text format (served by
//!   [`crate::metrics_http`]);
//! * [`escape`]: printing arbitrary bytes as one safe line;
//! * [`throttle`]: rate-limited log lines for floods (refused clients, denied datagrams).
//! * [`hexdump`]: `--hex`, traffic as offset / hex / ASCII on stderr.
//! * [`span`]: the `conn{id, peer}` span of each connection's diagnostics.

pub mod events;
pub mod logging;
pub mod metrics;
pub mod span;
pub mod stats;
pub mod throttle;

// Below transport (whose layers and addresses use them), named here with the rest of
// what sockit shows.
pub use crate::escape;
pub use crate::transport::hexdump;

pub use events::{Event, EventLog, LogFormat};
pub use hexdump::{HexDump, Tap};
pub use stats::{ErrorCounts, ErrorKind, Stats, StatsBoard, Summary, Tally};
