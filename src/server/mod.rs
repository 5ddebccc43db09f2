//! The server: bind an endpoint, answer every client, never let one client block another.
//!
//! This is the note's server with its stated problem solved. The note's loop does
//! `accept → recv → send → close` on one thread, so a client that connects and sends
//! nothing stops everyone. Here the accept loop only accepts; each connection is its own
//! tokio task, so a silent, slow or hostile client costs one idle task and nothing else.
//! Datagram endpoints run one receive loop ([`datagram`]) that answers each sender at its
//! own address.
//!
//! Every client first passes the [`gate`] (`--allow`/`--deny`, `--max-conns-mode
//! refuse`); then [`session`] hands the connection to its behaviour by [`ServeMode`]: the
//! per-message loop in [`conn`] (reply, echo, discard), a program (`--exec`), or the chat
//! room (`--chat`).
//!
//! Flow: [`Server::bind`] → [`Server::run`] → accept loop / datagram loop until the
//! [`Shutdown`] fires → drain (bounded by [`Limits::grace`]) → [`Summary`].

mod conn;
mod datagram;
mod gate;
mod limits;
mod session;
mod stream;

pub use limits::{Limits, OverLimit};
pub(crate) use session::{connection_span, record_client, record_socket_peer};

use std::sync::Arc;

use crate::access::AccessPolicy;
use crate::behaviour::Responder;
use crate::behaviour::chat::{ChatOptions, Room};
use crate::behaviour::exec::ExecSpec;
use crate::endpoint::{Delivery, Endpoint};
use crate::error::{Error, Result};
use crate::framing::Framing;
use crate::obs::{Event, EventLog, Stats, Summary};
use crate::shutdown::{Drained, Shutdown};
use crate::transport::{DatagramSocket, Layers, ListenOptions, StreamListener};

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
        }
    }
}

/// What every connection task shares: read-only options plus the shared sinks.
pub(crate) struct Shared {
    /// The server's options.
    pub options: ServeOptions,
    /// Where per-connection events go.
    pub events: EventLog,
    /// Totals for the summary and `--metrics`.
    pub stats: Arc<Stats>,
    /// Stop signal and task tracking.
    pub shutdown: Shutdown,
    /// The per-connection behaviour, with its run-time state.
    pub handler: Handler,
    /// Rate-limited access logging for checks made after a PROXY header, in connection
    /// tasks (the accept loop's own [`gate::Gate`] is not shared).
    pub late_gate: std::sync::Mutex<gate::Gate>,
}

/// A [`ServeMode`] made ready to run: the chat room exists only while the server runs.
pub(crate) enum Handler {
    /// The per-message loop with [`ServeOptions::responder`].
    Respond,
    /// A program per connection or datagram.
    Exec(ExecSpec),
    /// The chat room every connection joins.
    Chat(Room),
}

impl Handler {
    fn new(mode: &ServeMode) -> Handler {
        match mode {
            ServeMode::Respond => Handler::Respond,
            ServeMode::Exec(spec) => Handler::Exec(spec.clone()),
            ServeMode::Chat(options) => Handler::Chat(Room::new(*options)),
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
    /// Live counters, readable while it runs ([`Server::stats`]).
    stats: Arc<Stats>,
}

enum Bound {
    Stream(StreamListener),
    Datagram(DatagramSocket),
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
        let (socket, local) = match endpoint.delivery() {
            Delivery::Stream => {
                let listener = StreamListener::bind(endpoint, &options.listen).await?;
                let local = listener.local_endpoint(endpoint);
                (Bound::Stream(listener), local)
            }
            Delivery::Datagram => {
                let socket = DatagramSocket::bind(endpoint, &options.listen).await?;
                let local = socket.local_endpoint(endpoint);
                (Bound::Datagram(socket), local)
            }
        };
        Ok(Server {
            local,
            socket,
            options,
            stats: Arc::default(),
        })
    }

    /// The live counters (for `--metrics`); [`Stats::summary`] reads them.
    pub fn stats(&self) -> Arc<Stats> {
        Arc::clone(&self.stats)
    }

    /// The endpoint actually bound (with the kernel's port when 0 was asked for).
    pub fn local_endpoint(&self) -> &Endpoint {
        &self.local
    }

    /// Serves until `shutdown` fires, then drains and returns the totals.
    ///
    /// Per-connection failures are logged and counted, never returned: one bad client
    /// never stops the server.
    pub async fn run(self, events: EventLog, shutdown: Shutdown) -> Summary {
        events.emit(Event::Listening {
            endpoint: &self.local,
        });
        let grace = self.options.limits.grace;
        if !self.options.access.is_open()
            && matches!(self.local, Endpoint::Unix(_) | Endpoint::UnixDgram(_))
        {
            tracing::warn!(
                "--allow/--deny filter IP addresses; Unix socket clients have none and are \
                 not filtered (protect {} with file permissions)",
                self.local
            );
        }
        let shared = Arc::new(Shared {
            handler: Handler::new(&self.options.mode),
            options: self.options,
            events,
            stats: Arc::clone(&self.stats),
            shutdown: shutdown.clone(),
            late_gate: std::sync::Mutex::default(),
        });
        match self.socket {
            Bound::Stream(listener) => stream::accept_loop(listener, &shared).await,
            Bound::Datagram(socket) => datagram::receive_loop(socket, &shared).await,
        }
        if let Drained::TimedOut { remaining } = shutdown.drain(grace).await {
            tracing::warn!(
                "{remaining} connection(s) still busy after the {} grace period; closing them",
                humantime::format_duration(grace)
            );
        }
        shared.stats.summary()
    }
}
