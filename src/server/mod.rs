//! The server: bind an endpoint, answer every client, never let one client block another.
//!
//! This is the note's server with its stated problem solved. The note's loop does
//! `accept → recv → send → close` on one thread, so a client that connects and sends
//! nothing stops everyone. Here nothing that serves a client waits for it: a silent, slow
//! or hostile client costs its own state and nothing else.
//!
//! A server runs one of five engines, chosen by its endpoint and [`ServeMode`] (one per
//! shard; [`Server::run_threads`] runs several shards, each on its own thread):
//!
//! * **the fast lane** ([`lane::serve`]): reply, echo and discard on streams with raw
//!   framing and no TLS, `--hex` or PROXY layer. A thread of its own waits in an epoll set
//!   holding its listener and its connections; each message is answered on the spot, with
//!   no task and no reactor ([`lane`]);
//! * **a task per connection** ([`tasks::accept_loop`], then [`session::serve_accepted`]
//!   in each connection's task): every other stream server (line framing, TLS, `--hex`,
//!   `--proxy-protocol`, `--exec`, `--chat`, `--perf`). The per-message modes run
//!   [`message_loop`]; exec and chat run in [`crate::behaviour`], `--perf` in [`perf`];
//! * **the datagram answer loop** ([`datagram::receive_loop`]): reply, echo and discard on
//!   datagram endpoints, a thread waiting in `recvmmsg(2)` that answers each sender at
//!   its own address;
//! * **a program per datagram** ([`datagram::receive_loop`] with `--exec`): each
//!   datagram runs the program in a task of its own;
//! * **the flow receiver** ([`datagram::receive_loop`] with `--perf`, then
//!   [`perf_udp::receive_flows`]): a task measuring each UDP sender's flow and reporting
//!   it back when the flow ends.
//!
//! The stream engines share what makes them behave alike: one acceptor's admission
//! rules ([`crate::access::admission`]: the `--max-conns` slot before `accept` in wait
//! mode, the gate with `--allow`/`--deny` and refuse mode, the count and id, back-off on
//! resource errors), the answer to a message and its event ([`answer`]), and how a
//! connection's end is logged, counted and reported ([`end`]).
//!
//! Every accept loop (the lane's, the task engine's, the relay's and the proxy's) admits
//! through that one [`Admission`](crate::access::admission::Admission) step and differs
//! only in how it waits. The task engine, the relay and the proxy wait the async way
//! ([`crate::access::acceptor`]), each with its own handler for an admitted connection.
//! The lane's thread has no async runtime: it waits in its own epoll set, where the
//! listener is one more descriptor beside its connections, so an admitted connection is
//! answered on the spot on that thread.
//!
//! Flow: [`Server::bind`] → [`Server::run`] → one engine per shard until the
//! [`Shutdown`] fires → drain (bounded by [`Limits::grace`]) → [`Summary`].

mod answer;
mod datagram;
mod end;
mod lane;
mod limits;
mod message_loop;
mod perf;
mod perf_udp;
mod session;
mod tasks;

use lane::LaneThread;
// The datagram answer loop polls as the lane does.
use lane::busy_poll;

pub use limits::{Amplification, Limits, OverLimit};

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::access::AccessPolicy;
use crate::access::gate::{self, ClientAddress, Gate, GateConfig, SourceCounts};
use crate::behaviour::Responder;
use crate::behaviour::chat::{ChatOptions, Room};
use crate::behaviour::exec::ExecSpec;
use crate::endpoint::{Delivery, Endpoint};
use crate::error::{Error, Result};
use crate::framing::Framing;
use crate::obs::{Event, EventLog, Stats, StatsBoard, Summary};
use crate::shutdown::{Drained, Shutdown};
use crate::transport::{Bound, Layers, ListenOptions, StdDatagram, StdListener, UnixPathGuard};

/// How the server's errors about a connection name its client. Every line about a
/// connection is logged under its `conn{id=… peer=…}` span, and its `closed` event has a
/// `peer` field, so the error text says "the client" rather than the address again
/// (`conn{id=1 peer=127.0.0.1:40000}: connection reset by the client while reading`).
pub(crate) const THE_CLIENT: &str = "the client";

/// What to do with a connection once a reply has been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AfterReply {
    /// Keep answering messages until the client closes.
    #[default]
    KeepOpen,
    /// Close after the first reply, exactly as the note's server does (`--close`).
    Close,
}

/// What a server does with each connection (or datagram).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ServeMode {
    /// Answer each message with [`ServeOptions::responder`]: reply, echo or discard.
    #[default]
    Respond,
    /// Run a program per connection with its stdin/stdout wired to the client; on datagram
    /// endpoints, one run per datagram (the datagram on stdin, stdout as the reply).
    Exec(ExecSpec),
    /// Relay every line a client sends to all other clients (stream endpoints only).
    Chat(ChatOptions),
    /// The other end of `sockit bench`'s throughput tests (`--perf`): each stream
    /// connection asks to send, receive or echo; each UDP sender's flow is measured
    /// (loss, reordering, jitter) and reported back to it.
    Perf,
}

/// Everything that shapes how a server answers, decided once at start-up.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// What each connection or datagram gets: answers, a program, or the chat room.
    pub mode: ServeMode,
    /// The answer to each message when `mode` is [`ServeMode::Respond`].
    pub responder: Responder,
    /// Which client addresses are let in (`--allow` / `--deny`).
    pub access: AccessPolicy,
    /// How stream bytes are cut into messages.
    pub framing: Framing,
    /// Bytes per read on streams: the note's `recv(1024)`. Datagrams are always read whole.
    pub buffer_size: usize,
    /// Whether a connection stays open after a reply.
    pub after_reply: AfterReply,
    /// Connection limits and timeouts.
    pub limits: Limits,
    /// Socket options for the listening socket.
    pub listen: ListenOptions,
    /// TLS (for `tls://`) and the `--hex` dump, applied to every accepted connection in
    /// its own task, and the dump applied to datagrams.
    pub layers: Layers,
    /// `--busy-poll`: the longest a serving thread polls for events before it sleeps,
    /// trading its idle time for lower latency (zero: never polls).
    pub busy_poll: Duration,
}

impl ServeOptions {
    /// The note's server for an endpoint: its reply, raw framing, `recv(1024)`.
    pub fn seed(endpoint: &Endpoint) -> ServeOptions {
        ServeOptions {
            mode: ServeMode::Respond,
            responder: Responder::seed_reply(endpoint.seed_word()),
            access: AccessPolicy::default(),
            framing: Framing::Raw,
            buffer_size: 1024,
            after_reply: AfterReply::KeepOpen,
            limits: Limits::default(),
            listen: ListenOptions::default(),
            layers: Layers::default(),
            busy_poll: Duration::ZERO,
        }
    }

    /// Whether this server's connections or datagrams are served by a loop that waits in
    /// the kernel itself (the fast lane, the datagram answer loop), which is where
    /// `--busy-poll` applies: reply, echo and discard, on streams only with raw framing
    /// and no TLS, hex, capture, pcap or PROXY layer.
    pub fn waits_in_kernel(&self, delivery: Delivery) -> bool {
        match delivery {
            Delivery::Datagram => !matches!(self.mode, ServeMode::Exec(_) | ServeMode::Perf),
            Delivery::Stream => {
                matches!(self.mode, ServeMode::Respond)
                    && self.framing == Framing::Raw
                    && self.layers.is_passthrough()
            }
        }
    }
}

/// What every connection task of one shard (thread) shares: read-only options, the
/// shared sinks, and this shard's own counters.
pub(crate) struct Shared {
    /// The server's options.
    pub options: ServeOptions,
    /// Where per-connection events go.
    pub events: EventLog,
    /// This shard's counters (the [`StatsBoard`] adds the shards up).
    pub stats: Arc<Stats>,
    /// Stop signal and task tracking, common to every shard.
    pub shutdown: Shutdown,
    /// The per-connection behaviour, with its run-time state (one chat room for all).
    pub handler: Handler,
    /// `--max-conns`: one semaphore for the whole server, whichever thread accepts.
    pub slots: Option<Arc<Semaphore>>,
    /// Connection ids this shard hands out: `first`, `first + step`, … so ids are unique
    /// across shards without a shared counter.
    pub ids: IdSequence,
    /// Rate-limited access logging for checks made after a PROXY header, in connection
    /// tasks (the accept loop's own [`Gate`] is not shared).
    pub late_gate: std::sync::Mutex<Gate>,
    /// `--max-conns-per-source`: one table for the whole server, whichever thread accepts.
    pub sources: Arc<SourceCounts>,
}

impl Shared {
    /// Whether a message line is printed for each message or datagram: not with
    /// `--quiet`, and never for `--discard`, a sink that shows what it sinks being a copy
    /// of the traffic on stdout (its bytes are in the `closed` events and the summary).
    #[inline]
    pub fn shows_messages(&self) -> bool {
        self.events.wants_messages() && !matches!(self.options.responder, Responder::Discard)
    }
}

impl Shared {
    /// What the gate needs of this listener: its rules and limits, and where it counts.
    pub(crate) fn gate_config(&self) -> GateConfig<'_> {
        GateConfig {
            access: &self.options.access,
            max_conns: self.options.limits.max_conns,
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

/// A shard's share of connection ids (shard k of n: k+1, k+1+n, k+1+2n, …).
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdSequence {
    /// The first id.
    pub first: u64,
    /// The distance between ids.
    pub step: u64,
}

impl IdSequence {
    /// Iterates this shard's ids.
    pub fn iter(self) -> impl Iterator<Item = u64> {
        (0..).map(move |i: u64| self.first + i * self.step)
    }
}

/// A [`ServeMode`] made ready to run: the chat room exists only while the server runs.
pub(crate) enum Handler {
    /// The per-message loop with [`ServeOptions::responder`].
    Respond,
    /// A program per connection or datagram.
    Exec(ExecSpec),
    /// The chat room every connection joins, on whichever thread it is served.
    Chat(Arc<Room>),
    /// Throughput tests; the UDP flows of every shard in one table, and the down
    /// connections a watch may read.
    Perf(Arc<perf_udp::FlowTable>, Arc<perf::Watchlist>),
}

impl Handler {
    /// A handle on the same behaviour for another shard (the chat room is shared).
    fn share(&self) -> Handler {
        match self {
            Handler::Respond => Handler::Respond,
            Handler::Exec(spec) => Handler::Exec(spec.clone()),
            Handler::Chat(room) => Handler::Chat(Arc::clone(room)),
            Handler::Perf(flows, watchlist) => {
                Handler::Perf(Arc::clone(flows), Arc::clone(watchlist))
            }
        }
    }

    fn new(mode: &ServeMode) -> Handler {
        match mode {
            ServeMode::Respond => Handler::Respond,
            ServeMode::Exec(spec) => Handler::Exec(spec.clone()),
            ServeMode::Chat(options) => Handler::Chat(Arc::new(Room::new(*options))),
            ServeMode::Perf => Handler::Perf(Arc::default(), Arc::default()),
        }
    }
}

/// A bound server, ready to run. Binding is separate from running so callers (and tests)
/// learn the real address (port 0) before any client connects.
pub struct Server {
    /// The endpoint actually bound.
    local: Endpoint,
    /// The socket.
    socket: Bound,
    /// The options it will serve with.
    options: ServeOptions,
    /// Its counters, readable while it runs.
    stats: StatsBoard,
}

impl Server {
    /// Binds the endpoint with the given options.
    ///
    /// # Errors
    /// Any listen error: address in use, permission denied, not a socket, host not found.
    ///
    /// [`Error::Usage`] for `--chat` on a datagram endpoint: a chat room needs connections.
    pub async fn bind(endpoint: &Endpoint, options: ServeOptions) -> Result<Server> {
        if matches!(options.mode, ServeMode::Chat(_)) && endpoint.delivery() == Delivery::Datagram {
            return Err(Error::Usage(format!(
                "--chat relays lines between connected clients and needs a stream endpoint \
                 (tcp://, unix:); {endpoint} is a datagram endpoint"
            )));
        }
        if matches!(endpoint, Endpoint::Tls(_)) && options.layers.tls.is_none() {
            return Err(crate::Error::Usage(format!(
                "{endpoint} needs a certificate: set ServeOptions::layers.tls (the CLI makes one)"
            )));
        }
        if options.layers.proxy.is_on() && endpoint.delivery() == Delivery::Datagram {
            return Err(Error::Usage(format!(
                "--proxy-protocol reads a header at the start of each connection; {endpoint} \
                 is a datagram endpoint"
            )));
        }
        if !options.busy_poll.is_zero() && !options.waits_in_kernel(endpoint.delivery()) {
            tracing::warn!(
                "--busy-poll has no effect on this server: it applies to reply, echo and \
                 discard (on streams without TLS, --hex, --capture, --pcap, \
                 --proxy-protocol or line framing); \
                 serving as usual"
            );
        }
        let (socket, local) = Bound::bind(endpoint, &options.listen).await?;
        Ok(Server {
            local,
            socket,
            options,
            stats: StatsBoard::default(),
        })
    }

    /// The endpoint actually bound (with the kernel's port when 0 was asked for).
    pub fn local_endpoint(&self) -> &Endpoint {
        &self.local
    }

    /// The server's counters (for `--metrics`): a handle that stays valid while it runs
    /// and after; [`StatsBoard::summary`] adds up every thread's share.
    pub fn stats(&self) -> StatsBoard {
        self.stats.clone()
    }

    /// Serves on the current runtime until `shutdown` fires, then drains and returns
    /// the totals. This is one shard; [`Server::run_threads`] runs several.
    ///
    /// Per-connection failures are logged and counted, never returned: one bad client
    /// never stops the server.
    pub async fn run(self, events: EventLog, shutdown: Shutdown) -> Summary {
        let (board, plan) = self.prepare(events, shutdown);
        plan.announce();
        // The Unix socket file's guard stays here until the server has stopped.
        match plan.socket.into_std() {
            Ok((socket, _guard)) => shard(socket, plan.shared, plan.grace).await,
            Err(e) => {
                tracing::error!("the server cannot take its socket from the runtime: {e}");
                plan.shared.shutdown.trigger();
            }
        }
        board.summary()
    }

    /// Serves with `threads` threads, each with its own copy of the listening socket;
    /// the calling task serves as the first of them. An extra shard of the fast lane is
    /// the lane's thread alone (the calling task stops it at shutdown); one of the other
    /// engines gets a thread with a single-threaded runtime of its own.
    ///
    /// Thread-per-core: a connection is accepted and served by one thread to its end, so
    /// nothing on the per-message path crosses threads (no work-stealing hand-off, no
    /// shared counter), and the kernel spreads connections over the threads that accept.
    ///
    /// # Errors
    /// When the socket cannot be copied for the extra threads (out of file descriptors)
    /// or a thread cannot start; the server then stops before serving anyone.
    pub async fn run_threads(
        self,
        threads: usize,
        events: EventLog,
        shutdown: Shutdown,
    ) -> Result<Summary> {
        if threads <= 1 {
            return Ok(self.run(events, shutdown).await);
        }
        let (board, plan) = self.prepare(events, shutdown.clone());
        let failed = |e: std::io::Error| Error::Io {
            doing: "starting the server threads".into(),
            source: e,
        };
        let (std_socket, guard) = plan.socket.into_std().map_err(failed)?;
        let mut finished = Vec::with_capacity(threads - 1);
        let mut lanes = Vec::with_capacity(threads - 1);
        for index in 1..threads {
            let copy = match std_socket.sibling(&plan.shared.options.listen) {
                Ok(copy) => copy,
                Err(e) => {
                    shutdown.trigger();
                    finish_lanes(lanes).await;
                    return Err(failed(e));
                }
            };
            let ids = IdSequence {
                first: index as u64 + 1,
                step: threads as u64,
            };
            let shared = Arc::new(plan.shared.for_shard(board.add_shard(), ids));
            // A lane shard is its lane's thread alone; the other engines get a thread
            // with a runtime of their own.
            let copy = match copy {
                StdBound::Stream(listener) => match lane::start(listener, &shared, plan.grace) {
                    Ok(Some(thread)) => {
                        lanes.push((thread, shared));
                        continue;
                    }
                    // Logged, and this shard stopped.
                    Ok(None) => continue,
                    Err(listener) => StdBound::Stream(listener),
                },
                datagram => datagram,
            };
            let (done_tx, done_rx) = tokio::sync::oneshot::channel();
            let grace = plan.grace;
            let spawned = std::thread::Builder::new()
                .name(format!("sockit-shard-{index}"))
                .spawn(move || {
                    run_shard_thread(copy, shared, grace);
                    let _ = done_tx.send(());
                });
            if let Err(e) = spawned {
                shutdown.trigger();
                finish_lanes(lanes).await;
                return Err(failed(e));
            }
            finished.push(done_rx);
        }
        // Only now: a client (or a test) that sees the line finds every thread's socket.
        announce(&plan.shared, &plan.local);
        let first = Arc::new(plan.shared.for_shard(
            Arc::clone(&plan.shared.stats),
            IdSequence {
                first: 1,
                step: threads as u64,
            },
        ));
        tokio::join!(shard(std_socket, first, plan.grace), finish_lanes(lanes));
        for done in finished {
            // A shard that panicked drops its sender; the others are still waited for.
            let _ = done.await;
        }
        drop(guard);
        Ok(board.summary())
    }

    /// Builds the first shard's shared state (the caller announces the server).
    fn prepare(self, events: EventLog, shutdown: Shutdown) -> (StatsBoard, Plan) {
        let proxied = self.options.layers.proxy.is_on();
        gate::warn_if_unfilterable(&self.options.access, &self.local, proxied);
        let grace = self.options.limits.grace;
        let slots = gate::slots_for(self.options.limits.max_conns.or_else(|| {
            let datagram_exec = matches!(self.options.mode, ServeMode::Exec(_))
                && self.local.delivery() == Delivery::Datagram;
            datagram_exec.then_some(datagram::DEFAULT_PROGRAMS)
        }));
        let shared = Shared {
            sources: SourceCounts::new(self.options.access.per_source()),
            handler: Handler::new(&self.options.mode),
            options: self.options,
            events,
            stats: self.stats.add_shard(),
            shutdown,
            slots,
            ids: IdSequence { first: 1, step: 1 },
            late_gate: std::sync::Mutex::default(),
        };
        let plan = Plan {
            local: self.local,
            socket: self.socket,
            shared: Arc::new(shared),
            grace,
        };
        (self.stats, plan)
    }
}

impl Plan {
    /// The `listening` line (the note's `server start at: …`), once the server's
    /// sockets are all open.
    fn announce(&self) {
        announce(&self.shared, &self.local);
    }
}

/// Emits the `listening` line for `local`.
fn announce(shared: &Shared, local: &Endpoint) {
    shared.events.emit(Event::Listening { endpoint: local });
}

/// Everything the first shard needs to start.
struct Plan {
    /// The endpoint bound, for the `listening` line.
    local: Endpoint,
    socket: Bound,
    shared: Arc<Shared>,
    grace: Duration,
}

impl Shared {
    /// One shard's state for unit tests of the engines: `options`, no events, counters
    /// on the board it comes with.
    #[cfg(test)]
    pub(crate) fn for_test(options: ServeOptions) -> (Arc<Shared>, StatsBoard) {
        let board = StatsBoard::default();
        let shared = Shared {
            sources: SourceCounts::new(options.access.per_source()),
            handler: Handler::new(&options.mode),
            options,
            events: EventLog::disabled(),
            stats: board.add_shard(),
            shutdown: Shutdown::new(),
            slots: None,
            ids: IdSequence { first: 1, step: 1 },
            late_gate: std::sync::Mutex::default(),
        };
        (Arc::new(shared), board)
    }

    /// The same server state for another shard, with that shard's own counters.
    fn for_shard(&self, stats: Arc<Stats>, ids: IdSequence) -> Shared {
        Shared {
            ids,
            options: self.options.clone(),
            events: self.events.clone(),
            stats,
            shutdown: self.shutdown.for_shard(),
            handler: self.handler.share(),
            slots: self.slots.clone(),
            late_gate: std::sync::Mutex::default(),
            sources: Arc::clone(&self.sources),
        }
    }
}

/// A socket detached from its runtime, to be registered on a shard's thread.
enum StdBound {
    Stream(StdListener),
    Datagram(StdDatagram),
}

impl Bound {
    fn into_std(self) -> std::io::Result<(StdBound, Option<UnixPathGuard>)> {
        match self {
            Bound::Stream(listener) => listener
                .into_std()
                .map(|(l, guard)| (StdBound::Stream(l), guard)),
            Bound::Datagram(socket) => socket
                .into_std()
                .map(|(s, guard)| (StdBound::Datagram(s), guard)),
        }
    }
}

impl StdBound {
    /// The socket another shard serves: its own `SO_REUSEPORT` socket, or a copy of this.
    fn sibling(&self, opts: &ListenOptions) -> std::io::Result<StdBound> {
        match self {
            StdBound::Stream(l) => l.sibling(opts).map(StdBound::Stream),
            StdBound::Datagram(s) => s.sibling(opts).map(StdBound::Datagram),
        }
    }
}

/// Stops the extra lane shards at shutdown (see [`LaneThread::finish`]), all at once.
async fn finish_lanes(lanes: Vec<(LaneThread, Arc<Shared>)>) {
    futures_util::future::join_all(
        lanes
            .into_iter()
            .map(|(thread, shared)| async move { thread.finish(&shared.shutdown).await }),
    )
    .await;
}

/// One shard's thread (of the engines other than the lane): a single-threaded runtime
/// serving its copy of the socket.
fn run_shard_thread(socket: StdBound, shared: Arc<Shared>, grace: Duration) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("a server thread cannot start its runtime: {e}");
            return;
        }
    };
    runtime.block_on(shard(socket, shared, grace));
}

/// Serves one copy of the socket until shutdown, then waits (at most `grace`) for every
/// connection task to finish.
///
/// The socket comes unregistered: the per-message stream modes and the datagram answer
/// loop wait on their own threads and never register it with the runtime; the other
/// modes register it here.
async fn shard(socket: StdBound, shared: Arc<Shared>, grace: Duration) {
    match socket {
        StdBound::Stream(listener) => {
            // The per-message modes get a thread with the fast lane; the others (or when
            // the system refuses the lane an epoll set) a task per connection.
            if let Err(listener) = lane::serve(listener, &shared, grace).await {
                match listener.into_tokio() {
                    Ok(listener) => tasks::accept_loop(listener, &shared).await,
                    Err(e) => {
                        tracing::error!("a server thread cannot register its socket: {e}");
                        shared.shutdown.trigger();
                    }
                }
            }
        }
        StdBound::Datagram(socket) => datagram::receive_loop(socket, &shared).await,
    }
    if let Drained::TimedOut { remaining } = shared.shutdown.drain(grace).await {
        tracing::warn!(
            "{} still busy after the {} grace period; closing them",
            crate::obs::stats::counted(remaining as u64, "connection"),
            humantime::format_duration(grace)
        );
    }
}
