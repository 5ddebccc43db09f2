//! `sockit relay LISTEN TARGET`: accept on one endpoint and, for each client, connect to
//! the target and copy both ways until both sides close.
//!
//! * Streams (any pair of `tcp://`, `tls://`, `unix:`): one task per client ([`stream`]):
//!   TLS handshake if the listener is `tls://`, connect to the target (TLS client if the
//!   target is `tls://`), then a copy each way: a buffer that grows with the traffic
//!   ([`copy::pipe_both_ways`]), or with `--copy splice`, between two plain sockets on Linux (TCP
//!   or Unix, no TLS, no `--hex`), splice(2) through a kernel pipe ([`splice`]): zero
//!   copy, the bytes never enter user space. Both keep the same contract. When one side
//!   ends its sending (FIN / close_notify), the relay shuts down the other side's
//!   sending in turn, so half-close is passed on and a request/response protocol that
//!   relies on it works through the relay.
//! * Datagrams (`udp://`, `unixgram:` on both sides): one session per client address
//!   ([`datagram`]), each with its own socket to the target so replies find their way
//!   back; sessions end after the idle timeout and their number is capped.
//!
//! Every client first passes the gate (`access::gate`) that `serve` uses, with the
//! same flags and meaning: `--allow` / `--deny` close a denied connection at once (with
//! `--proxy-protocol`, once the header names the real client) and drop a denied sender's
//! datagrams; `--max-conns` holds one slot per relayed connection, and over it a client
//! waits in the backlog or is closed at once (`--max-conns-mode`). Datagram relays cap
//! their clients with `--max-sessions` instead, so `--max-conns` is refused there.
//!
//! Memory is bounded by construction: each direction of each connection owns one buffer
//! (or pipe) of `--buffer` bytes and takes in no more than it has room for, so a slow side
//! slows the other (TCP backpressure) and never grows a queue. [`RelayStats`] counts bytes
//! read and written per direction; their difference is what the relay holds.
//!
//! Shutdown is `serve`'s: stop accepting, let open connections finish within the grace
//! period, then cut them, and return a [`RelaySummary`].

pub(crate) mod copy;
mod datagram;
pub(crate) mod splice;
mod stream;
mod watch;

pub use copy::FlowStats;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::access::AccessPolicy;
use crate::access::gate::{self, ClientAddress, Gate, GateConfig, SourceCounts};
use crate::endpoint::{Delivery, Endpoint};
use crate::error::{Error, Result};
use crate::obs::{Event, EventLog};
use crate::server::OverLimit;
use crate::shutdown::{Drained, Shutdown};
use crate::transport::{Bound, ConnectOptions, Layers, ListenOptions};

/// Everything that shapes a relay, decided at start.
#[derive(Debug, Clone)]
pub struct RelayOptions {
    /// Where each client is forwarded.
    pub target: Endpoint,
    /// How the target is reached: connect timeout, TLS client for a `tls://` target.
    pub connect: ConnectOptions,
    /// TLS for a `tls://` listener and the `--hex` dump of the client side.
    pub layers: Layers,
    /// Bytes buffered per direction per connection: the most held while a side is slow
    /// (the buffer, or the size of the splice pipe with [`CopyMode::Splice`]).
    pub buffer_size: usize,
    /// How stream bytes are copied: through buffers, or spliced where possible.
    pub copy: CopyMode,
    /// Which client addresses are let in (`--allow` / `--deny`): a denied connection is
    /// closed at once, a denied sender's datagrams are dropped.
    pub access: AccessPolicy,
    /// Most stream connections relayed at once (`--max-conns`); `None`: no limit beyond
    /// file descriptors. Stream relays only: datagram relays cap clients with
    /// [`RelayOptions::max_sessions`].
    pub max_conns: Option<usize>,
    /// What a client arriving over `max_conns` gets: waits in the backlog, or is closed.
    pub over_limit: OverLimit,
    /// End a connection or datagram session after this long with no traffic.
    /// `None`: never (datagram sessions then use [`RelayOptions::DEFAULT_SESSION_IDLE`]).
    pub idle_timeout: Option<Duration>,
    /// Most datagram sessions at once.
    pub max_sessions: usize,
    /// How long shutdown lets open connections finish.
    pub grace: Duration,
    /// Options for the listening socket.
    pub listen: ListenOptions,
    /// `--capture DIR`: each client connection's bytes, per direction, in files (for
    /// datagrams, each client's, with an index of the datagrams' boundaries).
    pub capture: Option<crate::obs::hexdump::Capture>,
    /// `--send-proxy v1|v2`: each target connection starts with a PROXY protocol header
    /// naming the client (the one an incoming header named, with `--proxy-protocol`), so
    /// the target sees who really connected.
    pub send_proxy: Option<crate::transport::proxy::SendProxy>,
}

impl RelayOptions {
    /// Default per-direction bound: what a full-speed copy needs. On loopback, reads of up
    /// to 4 MiB (Linux's default largest TCP send buffer) carry more than smaller ones
    /// (`bench/RESULTS.md`, relay throughput). A buffer starts at 16 KiB and doubles only
    /// when a read fills it, so quiet and chatty connections do not pay for it.
    pub const DEFAULT_BUFFER: usize = 4 * 1024 * 1024;
    /// Datagram sessions must expire even when `--idle-timeout 0` is asked for, or the
    /// map would only ever grow to its cap: this is their idle limit then.
    pub const DEFAULT_SESSION_IDLE: Duration = Duration::from_secs(300);

    /// `--max-conns` of a stream relay started from the command line without one: each
    /// relayed connection holds two descriptors, so this stays inside a 10,000-descriptor
    /// limit with room for the listener, logs and metrics.
    pub const DEFAULT_MAX_CONNS: usize = 4096;

    /// A relay to `target` with the defaults the CLI uses (except `max_conns`, which the
    /// CLI sets to [`RelayOptions::DEFAULT_MAX_CONNS`] for stream relays).
    pub fn new(target: Endpoint) -> RelayOptions {
        RelayOptions {
            target,
            connect: ConnectOptions::new(Duration::from_secs(10)),
            layers: Layers::default(),
            buffer_size: RelayOptions::DEFAULT_BUFFER,
            copy: CopyMode::default(),
            access: AccessPolicy::default(),
            max_conns: None,
            over_limit: OverLimit::default(),
            idle_timeout: Some(Duration::from_secs(300)),
            max_sessions: 1024,
            grace: Duration::from_secs(5),
            listen: ListenOptions::default(),
            capture: None,
            send_proxy: None,
        }
    }
}

/// How a stream relay copies bytes between a client and its target.
///
/// An enum and not a switch so the choice reads in the code, the CLI (`--copy`) and the
/// benchmark tables alike. Buffered is the default because it measured fastest on
/// loopback, against splice at any pipe size (`bench/RESULTS.md`, relay throughput).
/// Splice is there to measure on hosts where copies are dear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CopyMode {
    /// Read into a buffer that grows with the traffic (up to `--buffer`) and write it
    /// out; works for every pair of endpoints, and its large reads carry the most
    #[default]
    Buffered,
    /// splice(2) through a kernel pipe between two plain sockets on Linux (zero copy),
    /// buffers otherwise (TLS, `--hex`, other systems, no pipes left)
    Splice,
}

/// Live counters of a relay, shared with whoever holds [`Relay::stats`] (tests, metrics).
#[derive(Debug, Default)]
pub struct RelayStats {
    /// Clients accepted and let in (stream) or sessions opened (datagram); denied and
    /// refused ones are counted apart. With `--proxy-protocol` the real client is judged
    /// after it is counted here, as `serve` does.
    pub connections: AtomicU64,
    /// Connections or sessions open now.
    pub active: AtomicU64,
    /// Connections that ended on an error (handshake, target unreachable, reset…).
    pub errors: AtomicU64,
    /// Stream connections copied with splice(2) rather than through buffers: shows which
    /// path the bytes took.
    pub spliced: AtomicU64,
    /// Datagrams dropped because the target failed.
    pub dropped: AtomicU64,
    /// Datagram sessions closed early to make room for a new client (`--max-sessions`,
    /// `--max-conns-per-source`).
    pub evicted: AtomicU64,
    /// Clients (connections or datagrams) turned away by `--allow` / `--deny`.
    pub denied: AtomicU64,
    /// Connections turned away because `--max-conns` was reached and
    /// `--max-conns-mode refuse` was chosen.
    pub refused: AtomicU64,
    /// Client → target.
    pub to_target: FlowStats,
    /// Target → client.
    pub to_client: FlowStats,
}

impl RelayStats {
    /// The relay's metric families for `--metrics`, labelled with the listening
    /// `transport`.
    pub fn write_metrics(&self, transport: &str) -> String {
        use crate::obs::metrics::{MetricKind::*, MetricsText};
        let summary = self.summary();
        let t = [("transport", transport)];
        let mut m = MetricsText::new();
        m.single(
            "sockit_info",
            Gauge,
            "Always 1; the labels say which sockit this is.",
            &[("version", env!("CARGO_PKG_VERSION")), ("role", "relay")],
            1,
        );
        m.single(
            "sockit_relay_connections_accepted_total",
            Counter,
            "Clients accepted (streams) or datagram sessions opened.",
            &t,
            summary.connections,
        );
        m.single(
            "sockit_relay_connections_active",
            Gauge,
            "Connections or sessions open now.",
            &t,
            self.active.load(Ordering::Relaxed),
        );
        m.single(
            "sockit_relay_errors_total",
            Counter,
            "Connections that ended on an error (PROXY header, handshake, target unreachable, reset).",
            &t,
            summary.errors,
        );
        m.single(
            "sockit_relay_connections_denied_total",
            Counter,
            "Clients (connections or datagrams) turned away by --allow/--deny.",
            &t,
            summary.denied,
        );
        m.single(
            "sockit_relay_connections_refused_total",
            Counter,
            "Clients turned away because --max-conns was reached (--max-conns-mode refuse).",
            &t,
            summary.refused,
        );
        m.single(
            "sockit_relay_datagrams_dropped_total",
            Counter,
            "Datagrams dropped (the target failed).",
            &t,
            summary.dropped,
        );
        m.single(
            "sockit_relay_sessions_evicted_total",
            Counter,
            "Datagram sessions closed (the one idle longest) to make room for a new client: --max-sessions or --max-conns-per-source reached.",
            &t,
            self.evicted.load(Ordering::Relaxed),
        );
        m.family(
            "sockit_relay_bytes_total",
            Counter,
            "Bytes delivered, by direction.",
        );
        m.sample(
            "sockit_relay_bytes_total",
            &[("transport", transport), ("direction", "to_target")],
            summary.to_target,
        );
        m.sample(
            "sockit_relay_bytes_total",
            &[("transport", transport), ("direction", "to_client")],
            summary.to_client,
        );
        m.finish()
    }

    /// A point-in-time copy for the summary.
    pub fn summary(&self) -> RelaySummary {
        RelaySummary {
            connections: self.connections.load(Ordering::Relaxed),
            to_target: self.to_target.written.load(Ordering::Relaxed),
            to_client: self.to_client.written.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            denied: self.denied.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// What a relay did, printed at shutdown.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RelaySummary {
    /// Clients (or datagram sessions) relayed.
    pub connections: u64,
    /// Bytes delivered to the target.
    pub to_target: u64,
    /// Bytes delivered to clients.
    pub to_client: u64,
    /// Connections that ended on an error.
    pub errors: u64,
    /// Datagrams dropped.
    pub dropped: u64,
    /// Clients turned away by `--allow` / `--deny`.
    pub denied: u64,
    /// Clients turned away over `--max-conns`.
    pub refused: u64,
}

impl fmt::Display for RelaySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::obs::stats::counted;
        write!(
            f,
            "summary: {}, {} to target, {} to clients, {}",
            counted(self.connections, "connection"),
            counted(self.to_target, "byte"),
            counted(self.to_client, "byte"),
            counted(self.errors, "error"),
        )?;
        if self.dropped > 0 {
            write!(f, ", {} dropped", counted(self.dropped, "datagram"))?;
        }
        if self.denied > 0 {
            write!(f, ", {} denied", self.denied)?;
        }
        if self.refused > 0 {
            write!(f, ", {} refused", self.refused)?;
        }
        Ok(())
    }
}

/// What every relay task shares.
pub(crate) struct Shared {
    /// The relay's options.
    pub options: RelayOptions,
    /// Per-connection events (connected, closed with byte counts).
    pub events: EventLog,
    /// Live counters.
    pub stats: Arc<RelayStats>,
    /// Stop signal and task tracking.
    pub shutdown: Shutdown,
    /// `--max-conns`: one slot per relayed connection.
    pub slots: Option<Arc<Semaphore>>,
    /// Rate-limited access logging for checks made after a PROXY header, in connection
    /// tasks (the accept loop's own [`Gate`] is not shared).
    pub late_gate: Mutex<Gate>,
    /// `--max-conns-per-source` (datagram relays: sessions per source).
    pub sources: Arc<SourceCounts>,
}

impl Shared {
    /// What the gate needs of this listener: its rules and limits, and where it counts.
    pub(crate) fn gate_config(&self) -> GateConfig<'_> {
        GateConfig {
            access: &self.options.access,
            max_conns: self.options.max_conns,
            client_address: if self.options.layers.proxy.is_on() {
                ClientAddress::ProxyHeader
            } else {
                ClientAddress::Socket
            },
            denied: &self.stats.denied,
            refused: &self.stats.refused,
            shutdown: &self.shutdown,
            late_gate: &self.late_gate,
            sources: &self.sources,
        }
    }
}

impl Shared {
    /// Completes `grace` after shutdown is triggered: when open connections are cut.
    pub async fn grace_expired(&self) {
        self.shutdown.triggered().await;
        tokio::time::sleep(self.options.grace).await;
    }
}

/// A bound relay, ready to run; binding first lets callers learn the real port.
pub struct Relay {
    /// The endpoint actually bound.
    local: Endpoint,
    /// The listening socket.
    socket: Bound,
    /// How to relay.
    options: RelayOptions,
    /// Live counters.
    stats: Arc<RelayStats>,
}

impl Relay {
    /// Binds `listen`, after checking the pair of endpoints makes sense.
    ///
    /// # Errors
    /// [`Error::Usage`] for a stream/datagram mix, a `tls://` listener without TLS
    /// settings, or `max_conns` on a datagram relay; any listen error.
    pub async fn bind(listen: &Endpoint, options: RelayOptions) -> Result<Relay> {
        if listen.delivery() != options.target.delivery() {
            return Err(Error::Usage(format!(
                "cannot relay {listen} to {}: both must be streams (tcp://, tls://, unix:) or both datagrams (udp://, unixgram:)",
                options.target
            )));
        }
        if matches!(listen, Endpoint::Tls(_)) && options.layers.tls.is_none() {
            return Err(Error::Usage(format!(
                "{listen} needs a certificate: set RelayOptions::layers.tls (the CLI makes one)"
            )));
        }
        if options.layers.proxy.is_on() && listen.delivery() == Delivery::Datagram {
            return Err(Error::Usage(format!(
                "--proxy-protocol reads a header at the start of each connection; {listen} \
                 is a datagram endpoint"
            )));
        }
        if options.max_conns.is_some() && listen.delivery() == Delivery::Datagram {
            return Err(Error::Usage(format!(
                "--max-conns caps stream connections; {listen} is a datagram endpoint: cap \
                 its clients with --max-sessions N instead"
            )));
        }
        let (socket, local) = Bound::bind(listen, &options.listen).await?;
        Ok(Relay {
            local,
            socket,
            options,
            stats: Arc::default(),
        })
    }

    /// The endpoint actually bound.
    pub fn local_endpoint(&self) -> &Endpoint {
        &self.local
    }

    /// The live counters (bytes read and written each way, connections, errors).
    pub fn stats(&self) -> Arc<RelayStats> {
        Arc::clone(&self.stats)
    }

    /// Relays until `shutdown`, then drains within the grace period and sums up.
    pub async fn run(self, events: EventLog, shutdown: Shutdown) -> RelaySummary {
        events.emit(Event::Listening {
            endpoint: &self.local,
        });
        let proxied = self.options.layers.proxy.is_on();
        gate::warn_if_unfilterable(&self.options.access, &self.local, proxied);
        let grace = self.options.grace;
        let shared = Arc::new(Shared {
            slots: gate::slots_for(self.options.max_conns),
            sources: SourceCounts::new(self.options.access.per_source()),
            options: self.options,
            events,
            stats: Arc::clone(&self.stats),
            shutdown: shutdown.clone(),
            late_gate: Mutex::default(),
        });
        match self.socket {
            Bound::Stream(listener) => stream::accept_loop(listener, &shared).await,
            Bound::Datagram(socket) => datagram::receive_loop(socket, &shared).await,
        }
        // Connections cut themselves at the end of the grace period; allow them a moment
        // to log and count before giving up on them.
        let patience = grace + Duration::from_secs(1);
        if let Drained::TimedOut { remaining } = shutdown.drain(patience).await {
            tracing::warn!(
                "{} still running after the grace period",
                crate::obs::stats::counted(remaining as u64, "relay task")
            );
        }
        self.stats.summary()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_turned_away_show_in_the_summary_and_the_metrics() {
        let stats = RelayStats::default();
        stats.connections.fetch_add(4, Ordering::Relaxed);
        assert!(
            stats.summary().to_string().ends_with(" 0 errors"),
            "a relay that turned nobody away keeps the short line"
        );
        stats.denied.fetch_add(3, Ordering::Relaxed);
        stats.refused.fetch_add(2, Ordering::Relaxed);
        let line = stats.summary().to_string();
        assert!(line.ends_with("0 errors, 3 denied, 2 refused"), "{line}");
        let text = stats.write_metrics("tcp");
        assert!(
            text.contains("sockit_relay_connections_denied_total{transport=\"tcp\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("sockit_relay_connections_refused_total{transport=\"tcp\"} 2"),
            "{text}"
        );
    }
}
