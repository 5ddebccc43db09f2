//! `sockit proxy LISTEN`: a SOCKS5 server (CONNECT and UDP ASSOCIATE, no auth or
//! username/password), a SOCKS4/4a server and an HTTP CONNECT proxy on one port, told
//! apart by the first byte each client sends (0x05, 0x04, or a letter).
//!
//! * Wire formats, pure and fuzzed: [`socks`] (SOCKS5 and 4/4a messages and replies) and
//!   [`http`] (the CONNECT request head, bounded, and the responses).
//! * Policy, pure: [`rules`] (`--allow-to` / `--deny-to`; loopback and private
//!   destinations denied by default) and [`credentials`] (`--credentials FILE`).
//! * I/O: [`tunnel`] runs one client: handshake under a time limit, the destination
//!   judged and reached, the reply, then the relay's copy path (buffers or splice, the
//!   same as `sockit relay`); [`udp`] carries a SOCKS5 UDP ASSOCIATE. Both judge
//!   addresses through [`destination`] and end in an [`outcome`].
//!
//! Clients pass the same gate as `serve` and `relay` (`--allow`, `--deny`,
//! `--max-conns`, `--max-conns-per-source`, `--proxy-protocol`). Every client that
//! passes ends in one `closed` event naming its protocol, destination and byte counts,
//! and every refusal (bad input, wrong password, destination denied, unreachable) in one
//! log line and the protocol's own error reply; the proxy keeps serving the others.
//! Shutdown is the relay's: stop accepting, let tunnels finish within the grace period,
//! then cut them.

pub mod credentials;
mod destination;
pub mod http;
mod outcome;
pub mod rules;
pub mod socks;
mod tunnel;
mod udp;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::access::AccessPolicy;
use crate::access::OverLimit;
use crate::access::gate::{self, ClientAddress, Gate, GateConfig, SourceCounts};
use crate::endpoint::Endpoint;
use crate::error::{Error, Result};
use crate::obs::{Event, EventLog};
use crate::relay::{CopyMode, FlowStats, RelayOptions};
use crate::shutdown::{Drained, Shutdown};
use crate::transport::{Bound, ListenOptions, ProxyProtocol};

pub use credentials::CredentialStore;
pub use rules::DestinationPolicy;

/// Everything that shapes a proxy, decided at start.
#[derive(Debug, Clone)]
pub struct ProxyOptions {
    /// Where tunnels may go (`--allow-to`, `--deny-to`).
    pub destinations: DestinationPolicy,
    /// `--credentials`: `None` lets anyone in without a password.
    pub credentials: Option<CredentialStore>,
    /// Longest a connect to a destination (resolving included) may take.
    pub connect_timeout: Duration,
    /// Longest a client may take to finish its handshake (greeting, auth, request or
    /// CONNECT head): a client that trickles bytes is cut after this.
    pub handshake_timeout: Duration,
    /// Bound on an HTTP CONNECT request head, request line and headers together.
    pub max_head: usize,
    /// Bytes buffered per direction per tunnel (the relay's `--buffer`).
    pub buffer_size: usize,
    /// How tunnel bytes are copied: the relay's buffers, or splice.
    pub copy: CopyMode,
    /// `--allow` / `--deny` for clients.
    pub access: AccessPolicy,
    /// Most clients served at once (`--max-conns`).
    pub max_conns: Option<usize>,
    /// What a client over `max_conns` gets.
    pub over_limit: OverLimit,
    /// `--proxy-protocol`: clients come through a load balancer that says who they are.
    pub proxy_protocol: ProxyProtocol,
    /// End a tunnel (or UDP association) after this long with no traffic; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// How long shutdown lets open tunnels finish.
    pub grace: Duration,
    /// Options for the listening socket.
    pub listen: ListenOptions,
}

impl ProxyOptions {
    /// Default handshake limit: a real client sends its greeting and request at once.
    pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    /// A proxy with the defaults the CLI uses: no authentication, loopback and private
    /// destinations denied, the relay's buffer and connection limit.
    pub fn new() -> ProxyOptions {
        ProxyOptions {
            destinations: DestinationPolicy::default(),
            credentials: None,
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: ProxyOptions::DEFAULT_HANDSHAKE_TIMEOUT,
            max_head: http::MAX_HEAD,
            buffer_size: RelayOptions::DEFAULT_BUFFER,
            copy: CopyMode::default(),
            access: AccessPolicy::default(),
            max_conns: Some(RelayOptions::DEFAULT_MAX_CONNS),
            over_limit: OverLimit::default(),
            proxy_protocol: ProxyProtocol::Off,
            idle_timeout: Some(Duration::from_secs(300)),
            grace: Duration::from_secs(5),
            listen: ListenOptions::default(),
        }
    }
}

impl Default for ProxyOptions {
    fn default() -> ProxyOptions {
        ProxyOptions::new()
    }
}

/// Live counters of a proxy, shared with whoever holds [`Proxy::stats`] (tests, metrics).
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Clients accepted and let in.
    pub connections: AtomicU64,
    /// Clients being served now.
    pub active: AtomicU64,
    /// Tunnels opened (CONNECT) or UDP associations made.
    pub tunnels: AtomicU64,
    /// Handshakes refused as malformed (bad version, truncated, unknown type, flood…).
    pub malformed: AtomicU64,
    /// Clients refused for missing or wrong credentials.
    pub auth_failed: AtomicU64,
    /// Requests refused by the destination rules.
    pub destinations_denied: AtomicU64,
    /// Destinations that could not be reached (refused, unresolved, timed out).
    pub unreachable: AtomicU64,
    /// Tunnels that ended on an I/O error.
    pub errors: AtomicU64,
    /// Clients turned away by `--allow` / `--deny`.
    pub denied: AtomicU64,
    /// Clients turned away over `--max-conns`.
    pub refused: AtomicU64,
    /// Client → destination.
    pub to_target: FlowStats,
    /// Destination → client.
    pub to_client: FlowStats,
}

impl ProxyStats {
    /// A point-in-time copy for the summary.
    pub fn summary(&self) -> ProxySummary {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        ProxySummary {
            connections: load(&self.connections),
            tunnels: load(&self.tunnels),
            to_target: self.to_target.written.load(Ordering::Relaxed),
            to_client: self.to_client.written.load(Ordering::Relaxed),
            malformed: load(&self.malformed),
            auth_failed: load(&self.auth_failed),
            destinations_denied: load(&self.destinations_denied),
            unreachable: load(&self.unreachable),
            errors: load(&self.errors),
            denied: load(&self.denied),
            refused: load(&self.refused),
        }
    }

    /// The proxy's metric families for `--metrics`.
    pub fn write_metrics(&self) -> String {
        use crate::obs::metrics::{MetricKind::*, MetricsText};
        let s = self.summary();
        let mut m = MetricsText::new();
        m.single(
            "sockit_info",
            Gauge,
            "Always 1; the labels say which sockit this is.",
            &[("version", env!("CARGO_PKG_VERSION")), ("role", "proxy")],
            1,
        );
        let counters: [(&str, &str, u64); 9] = [
            (
                "connections_accepted_total",
                "Clients accepted and let in.",
                s.connections,
            ),
            (
                "tunnels_total",
                "Tunnels opened (CONNECT) and UDP associations made.",
                s.tunnels,
            ),
            (
                "malformed_total",
                "Handshakes refused as malformed.",
                s.malformed,
            ),
            (
                "auth_failed_total",
                "Clients refused for missing or wrong credentials.",
                s.auth_failed,
            ),
            (
                "destinations_denied_total",
                "Requests refused by --allow-to/--deny-to.",
                s.destinations_denied,
            ),
            (
                "unreachable_total",
                "Destinations that could not be reached.",
                s.unreachable,
            ),
            (
                "errors_total",
                "Tunnels that ended on an I/O error.",
                s.errors,
            ),
            (
                "connections_denied_total",
                "Clients turned away by --allow/--deny.",
                s.denied,
            ),
            (
                "connections_refused_total",
                "Clients turned away over --max-conns.",
                s.refused,
            ),
        ];
        for (name, help, value) in counters {
            m.single(&format!("sockit_proxy_{name}"), Counter, help, &[], value);
        }
        m.single(
            "sockit_proxy_connections_active",
            Gauge,
            "Clients being served now.",
            &[],
            self.active.load(Ordering::Relaxed),
        );
        m.family(
            "sockit_proxy_bytes_total",
            Counter,
            "Bytes delivered, by direction.",
        );
        m.sample(
            "sockit_proxy_bytes_total",
            &[("direction", "to_target")],
            s.to_target,
        );
        m.sample(
            "sockit_proxy_bytes_total",
            &[("direction", "to_client")],
            s.to_client,
        );
        m.finish()
    }
}

/// What a proxy did, printed at shutdown.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ProxySummary {
    /// Clients let in.
    pub connections: u64,
    /// Tunnels and UDP associations opened.
    pub tunnels: u64,
    /// Bytes delivered to destinations.
    pub to_target: u64,
    /// Bytes delivered to clients.
    pub to_client: u64,
    /// Malformed handshakes.
    pub malformed: u64,
    /// Authentication failures.
    pub auth_failed: u64,
    /// Requests refused by the destination rules.
    pub destinations_denied: u64,
    /// Destinations not reached.
    pub unreachable: u64,
    /// Tunnels ended by an I/O error.
    pub errors: u64,
    /// Clients turned away by `--allow` / `--deny`.
    pub denied: u64,
    /// Clients turned away over `--max-conns`.
    pub refused: u64,
}

impl fmt::Display for ProxySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::obs::stats::counted;
        write!(
            f,
            "summary: {}, {}, {} to destinations, {} to clients, {}",
            counted(self.connections, "connection"),
            counted(self.tunnels, "tunnel"),
            counted(self.to_target, "byte"),
            counted(self.to_client, "byte"),
            counted(self.errors, "error"),
        )?;
        let refusals = [
            (self.malformed, "malformed"),
            (self.auth_failed, "failed authentication"),
            (self.destinations_denied, "destinations denied"),
            (self.unreachable, "unreachable"),
            (self.denied, "denied"),
            (self.refused, "refused"),
        ];
        for (count, what) in refusals {
            if count > 0 {
                write!(f, ", {count} {what}")?;
            }
        }
        Ok(())
    }
}

/// What every client task shares.
pub(crate) struct Shared {
    /// The proxy's options.
    pub options: ProxyOptions,
    /// Per-client events (connected, closed with destination and byte counts).
    pub events: EventLog,
    /// Live counters.
    pub stats: Arc<ProxyStats>,
    /// Stop signal and task tracking.
    pub shutdown: Shutdown,
    /// `--max-conns`: one slot per client.
    pub slots: Option<Arc<Semaphore>>,
    /// Rate-limited access logging for checks made after a PROXY header.
    pub late_gate: Mutex<Gate>,
    /// `--max-conns-per-source`.
    pub sources: Arc<SourceCounts>,
}

impl Shared {
    /// What the gate needs of this listener: its rules and limits, and where it counts.
    pub(crate) fn gate_config(&self) -> GateConfig<'_> {
        GateConfig {
            access: &self.options.access,
            max_conns: self.options.max_conns,
            client_address: if self.options.proxy_protocol.is_on() {
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
    /// Completes `grace` after shutdown is triggered: when open tunnels are cut.
    pub async fn grace_expired(&self) {
        self.shutdown.triggered().await;
        tokio::time::sleep(self.options.grace).await;
    }
}

/// A bound proxy, ready to run; binding first lets callers learn the real port.
pub struct Proxy {
    /// The endpoint actually bound.
    local: Endpoint,
    /// The listening socket.
    socket: Bound,
    /// How to proxy.
    options: ProxyOptions,
    /// Live counters.
    stats: Arc<ProxyStats>,
}

impl Proxy {
    /// Binds `listen`, a `tcp://` endpoint (UDP ASSOCIATE binds its relay sockets on the
    /// same address).
    ///
    /// # Errors
    /// [`Error::Usage`] for anything but `tcp://`; any listen error.
    pub async fn bind(listen: &Endpoint, options: ProxyOptions) -> Result<Proxy> {
        if !matches!(listen, Endpoint::Tcp(_)) {
            return Err(Error::Usage(format!(
                "a proxy listens on tcp://HOST:PORT (SOCKS and HTTP CONNECT clients speak TCP); \
                 {listen} is not tcp://"
            )));
        }
        let (socket, local) = Bound::bind(listen, &options.listen).await?;
        Ok(Proxy {
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

    /// The live counters.
    pub fn stats(&self) -> Arc<ProxyStats> {
        Arc::clone(&self.stats)
    }

    /// Serves until `shutdown`, then drains within the grace period and sums up.
    pub async fn run(self, events: EventLog, shutdown: Shutdown) -> ProxySummary {
        announce(&self.options);
        events.emit(Event::Listening {
            endpoint: &self.local,
        });
        let proxied = self.options.proxy_protocol.is_on();
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
        if let Bound::Stream(listener) = self.socket {
            tunnel::accept_loop(listener, &shared).await;
        }
        let patience = grace + Duration::from_secs(1);
        if let Drained::TimedOut { remaining } = shutdown.drain(patience).await {
            tracing::warn!(
                "{} still running after the grace period",
                crate::obs::stats::counted(remaining as u64, "proxy task")
            );
        }
        self.stats.summary()
    }
}

/// Says at start, loudly, where tunnels may go and who may open them.
fn announce(options: &ProxyOptions) {
    tracing::warn!("{}", options.destinations.describe());
    if options.credentials.is_none() {
        tracing::warn!(
            "no --credentials: any client that reaches this port may open tunnels \
             (SOCKS5 without authentication, HTTP CONNECT without Proxy-Authorization, SOCKS4)"
        );
    }
}
