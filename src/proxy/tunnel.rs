//! One proxy client, start to end: accept (through the gate), PROXY header if any, the
//! handshake of whichever protocol its first byte names, the destination judged and
//! reached, the reply, then the relay's copy path until both sides end.
//!
//! The handshake reads into one buffer and asks the pure parsers ([`super::socks`],
//! [`super::http`]) whether a message is complete, so a message in pieces is read whole
//! and bytes a client sends after its request (before the reply) are kept and passed on
//! to the destination, not lost. The whole handshake runs under
//! `ProxyOptions::handshake_timeout`.
//!
//! The reply form follows the [`Stage`] the handshake reached (a SOCKS5 method choice,
//! auth status or reply; a SOCKS4 reply; an HTTP status), and the code follows the
//! [`Refusal`], so each refusal has exactly one reply and one log line wherever it
//! happens.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Shared;
use super::destination::{allowed_addresses, resolve};
use super::http::{self, Status};
use super::outcome::{Delivered, End, Refusal, Unreachable};
use super::socks::{self, Command, Credentials, Destination, Method, Parsed, Reply};
use super::udp;
use crate::access::acceptor::{Acceptor, Admitted, TaskSpan};
use crate::endpoint::PeerAddr;
use crate::idle::Activity;
use crate::obs::Event;
use crate::obs::span::{record_client, record_socket_peer};
use crate::obs::throttle::connection_line;
use crate::relay::copy::{Counters, LastEnd, pipe_both_ways};
use crate::relay::splice::{PlainSocket, Splicer};
use crate::transport::{Stream, StreamListener};

/// Bytes read at a time during the handshake: more than any SOCKS message, a slice of a
/// CONNECT head.
const HANDSHAKE_READ: usize = 4096;

/// Accepts clients until shutdown, one tracked task each; the gate closes denied clients
/// and, with `--max-conns-mode refuse`, clients over the limit.
pub(crate) async fn accept_loop(listener: StreamListener, shared: &Arc<Shared>) {
    let acceptor = Acceptor {
        listener: &listener,
        gate: shared.gate_config(),
        slots: shared.slots.as_ref(),
        over_limit: shared.options.over_limit,
        connections: &shared.stats.connections,
    };
    acceptor
        .run(1.., |admitted| take_client(admitted, shared))
        .await;
}

/// An admitted client: served in a tracked task of its own, holding its slot.
fn take_client(admitted: Admitted, shared: &Arc<Shared>) {
    let task_shared = Arc::clone(shared);
    admitted.serve_in_task(
        &shared.shutdown,
        TaskSpan::Entered,
        |stream, peer, id| async move {
            serve_client(stream, peer, id, &task_shared).await;
        },
    );
}

/// Which protocol a client speaks, from its first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// 0x05.
    Socks5,
    /// 0x04 (SOCKS4 and 4a).
    Socks4,
    /// An ASCII letter: an HTTP request line.
    Http,
}

impl Protocol {
    /// The name in events and log lines.
    fn name(self) -> &'static str {
        match self {
            Protocol::Socks5 => "socks5",
            Protocol::Socks4 => "socks4",
            Protocol::Http => "http",
        }
    }
}

/// How far a handshake got: decides the form of the error reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Nothing read yet: a client that is not SOCKS or HTTP gets no reply.
    FirstByte,
    /// Reading the SOCKS5 greeting: refused with method 0xFF.
    Socks5Greeting,
    /// Reading the username/password: refused with status 1.
    Socks5Auth,
    /// Reading (or serving) the SOCKS5 request: a reply with a code.
    Socks5Request,
    /// Reading (or serving) the SOCKS4 request: reply 0x5B.
    Socks4Request,
    /// Reading (or serving) the CONNECT head: an HTTP status.
    HttpHead,
}

impl Stage {
    /// The protocol the stage belongs to.
    fn protocol(self) -> Option<Protocol> {
        match self {
            Stage::FirstByte => None,
            Stage::Socks5Greeting | Stage::Socks5Auth | Stage::Socks5Request => {
                Some(Protocol::Socks5)
            }
            Stage::Socks4Request => Some(Protocol::Socks4),
            Stage::HttpHead => Some(Protocol::Http),
        }
    }

    /// The reply a client at this stage gets for `refusal`, if any.
    fn reply_to(self, refusal: &Refusal) -> Option<Vec<u8>> {
        let nowhere = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0));
        match self {
            Stage::FirstByte => None,
            Stage::Socks5Greeting => Some(socks::method_choice(None).to_vec()),
            Stage::Socks5Auth => Some(socks::auth_status(false).to_vec()),
            Stage::Socks5Request => Some(socks::reply(refusal.socks5_reply(), nowhere)),
            Stage::Socks4Request => Some(socks::socks4_reply(false, nowhere).to_vec()),
            Stage::HttpHead => Some(refusal.http_status().response()),
        }
    }
}

/// What a client asked for, once its handshake is done.
enum Ask {
    /// A TCP tunnel.
    Connect(Destination),
    /// A SOCKS5 UDP association; the client says where it will send from.
    UdpAssociate(Destination),
}

/// A client's handshake in progress: its socket, the bytes read and not yet used, and
/// how far it got.
struct Handshake<'a> {
    /// The client.
    stream: &'a mut Stream,
    /// Bytes read and not yet parsed (after the handshake: early tunnel data).
    buf: BytesMut,
    /// How far it got, for the form of an error reply.
    stage: Stage,
}

impl Handshake<'_> {
    /// Reads more from the client.
    async fn fill(&mut self) -> Result<(), Refusal> {
        let mut room = (&mut self.buf).limit(HANDSHAKE_READ);
        match self.stream.read_buf(&mut room).await {
            Ok(0) => Err(Refusal::Truncated),
            Ok(_) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Err(Refusal::Truncated),
            Err(e) => Err(Refusal::Io(e)),
        }
    }

    /// Reads until `parse` finds a whole message, which it takes out of the buffer.
    async fn message<T, E>(
        &mut self,
        parse: impl Fn(&[u8]) -> Parsed<T, E>,
        invalid: impl Fn(E) -> Refusal,
    ) -> Result<T, Refusal> {
        loop {
            match parse(&self.buf) {
                Parsed::Complete { len, value } => {
                    self.buf.advance(len);
                    return Ok(value);
                }
                Parsed::NeedMore => self.fill().await?,
                Parsed::Invalid(e) => return Err(invalid(e)),
            }
        }
    }

    /// Writes a handshake reply.
    async fn send(&mut self, bytes: &[u8]) -> Result<(), Refusal> {
        self.stream.write_all(bytes).await.map_err(Refusal::Io)
    }

    /// The whole handshake: first byte, then the protocol's own messages.
    async fn negotiate(&mut self, options: &super::ProxyOptions) -> Result<Ask, Refusal> {
        if self.buf.is_empty() {
            self.fill().await?;
        }
        match self.buf[0] {
            socks::SOCKS5 => self.socks5(options).await,
            socks::SOCKS4 => self.socks4(options).await,
            byte if byte.is_ascii_alphabetic() => self.http(options).await,
            byte => Err(Refusal::UnknownProtocol(byte)),
        }
    }

    /// SOCKS5: greeting, method choice, auth if required, request.
    async fn socks5(&mut self, options: &super::ProxyOptions) -> Result<Ask, Refusal> {
        self.stage = Stage::Socks5Greeting;
        let greeting = self.message(socks::parse_greeting, Refusal::Socks).await?;
        let method = match options.credentials {
            Some(_) => Method::UserPass,
            None => Method::NoAuth,
        };
        if !greeting.offers(method) {
            return Err(Refusal::NoAcceptableMethod(greeting.methods, method));
        }
        self.send(&socks::method_choice(Some(method))).await?;
        if let Some(store) = &options.credentials {
            self.stage = Stage::Socks5Auth;
            let given = self.message(socks::parse_user_pass, Refusal::Socks).await?;
            check_credentials(store, &given)?;
            self.send(&socks::auth_status(true)).await?;
        }
        self.stage = Stage::Socks5Request;
        let request = self.message(socks::parse_request, Refusal::Socks).await?;
        match request.command {
            Command::Connect => Ok(Ask::Connect(request.destination)),
            Command::UdpAssociate => Ok(Ask::UdpAssociate(request.destination)),
            Command::Bind => Err(Refusal::Unsupported("BIND")),
        }
    }

    /// SOCKS4 / 4a: one request; it carries no password, so `--credentials` refuses it.
    async fn socks4(&mut self, options: &super::ProxyOptions) -> Result<Ask, Refusal> {
        self.stage = Stage::Socks4Request;
        let request = self.message(socks::parse_socks4, Refusal::Socks).await?;
        if options.credentials.is_some() {
            return Err(Refusal::NoCredentials);
        }
        match request.command {
            Command::Connect => Ok(Ask::Connect(request.destination)),
            Command::Bind | Command::UdpAssociate => Err(Refusal::Unsupported("SOCKS4 BIND")),
        }
    }

    /// HTTP: the CONNECT head, with Basic credentials when required.
    async fn http(&mut self, options: &super::ProxyOptions) -> Result<Ask, Refusal> {
        self.stage = Stage::HttpHead;
        let max_head = options.max_head;
        let head = self
            .message(|buf| http::parse_head(buf, max_head), Refusal::Http)
            .await?;
        if let Some(store) = &options.credentials {
            match &head.credentials {
                Some(given) => check_credentials(store, given)?,
                None => return Err(Refusal::NoCredentials),
            }
        }
        Ok(Ask::Connect(head.destination))
    }

    /// The success reply, naming the address the proxy connects from.
    async fn reply_success(&mut self, bound: SocketAddr) -> Result<(), Refusal> {
        let bytes = match self.stage {
            Stage::Socks5Request => socks::reply(Reply::Succeeded, bound),
            Stage::Socks4Request => socks::socks4_reply(true, bound).to_vec(),
            _ => Status::Established.response(),
        };
        self.send(&bytes).await
    }
}

/// Refuses credentials the store does not hold.
fn check_credentials(store: &super::CredentialStore, given: &Credentials) -> Result<(), Refusal> {
    if store.accepts(given) {
        Ok(())
    } else {
        Err(Refusal::BadPassword(
            String::from_utf8_lossy(&given.user).into_owned(),
        ))
    }
}

/// What a client's `closed` event says.
struct Served {
    /// The protocol, once its first byte named one.
    protocol: Option<Protocol>,
    /// Where it asked to go, once known.
    destination: Option<String>,
    /// How it ended.
    end: End,
}

/// One client, start to end, inside its connection span.
async fn serve_client(mut stream: Stream, socket_peer: PeerAddr, conn: u64, shared: &Shared) {
    let span = tracing::Span::current();
    let proxied = shared.options.proxy_protocol.is_on();
    record_socket_peer(&span, proxied, &socket_peer);
    let peer = match client_address(&mut stream, &socket_peer, shared).await {
        Some(peer) => peer,
        None => return,
    };
    record_client(&span, proxied, &peer);
    let Some(_per_source) = shared.gate_config().admit_late(&peer) else {
        return;
    };
    shared.stats.active.fetch_add(1, Ordering::Relaxed);
    shared.events.emit(Event::Connected { conn, peer: &peer });
    let delivered = Delivered::default();
    let served = serve(stream, &peer, shared, &delivered).await;
    let protocol = served.protocol.map_or("none", Protocol::name);
    let reason = served.end.reason();
    match &served.end {
        End::Refused(refusal) => {
            refusal.count(&shared.stats);
            connection_line(|more| tracing::warn!("refused {protocol} client: {reason}{more}"));
        }
        End::Failed(_) => {
            shared.stats.errors.fetch_add(1, Ordering::Relaxed);
            connection_line(|more| tracing::warn!("{reason}{more}"));
        }
        End::Closed | End::Idle(_) | End::Shutdown => {}
    }
    let destination = served.destination.as_deref().unwrap_or("");
    shared.events.emit(Event::TunnelClosed {
        conn,
        peer: &peer,
        protocol,
        destination,
        bytes_in: delivered.to_target.load(Ordering::Relaxed),
        bytes_out: delivered.to_client.load(Ordering::Relaxed),
        reason: &reason,
    });
    shared.stats.active.fetch_sub(1, Ordering::Relaxed);
}

/// The client's address: the socket's peer, or with `--proxy-protocol` what the header
/// says. `None`: close (no header, or a bad one, logged).
async fn client_address(
    stream: &mut Stream,
    socket_peer: &PeerAddr,
    shared: &Shared,
) -> Option<PeerAddr> {
    let crate::transport::ProxyProtocol::Required { timeout } = shared.options.proxy_protocol
    else {
        return Some(socket_peer.clone());
    };
    match crate::transport::proxy::read_header(stream, socket_peer, timeout).await {
        Ok(Some(peer)) => Some(peer),
        Ok(None) => {
            tracing::debug!("closed before sending a PROXY header (a health check?)");
            None
        }
        Err(e) => {
            shared.stats.malformed.fetch_add(1, Ordering::Relaxed);
            connection_line(|more| tracing::warn!("closing connection: {e}{more}"));
            None
        }
    }
}

/// Handshake, destination, reply, tunnel.
async fn serve(
    mut stream: Stream,
    peer: &PeerAddr,
    shared: &Shared,
    delivered: &Delivered,
) -> Served {
    let options = &shared.options;
    let mut handshake = Handshake {
        stream: &mut stream,
        buf: BytesMut::with_capacity(HANDSHAKE_READ),
        stage: Stage::FirstByte,
    };
    let limit = options.handshake_timeout;
    let asked = tokio::select! {
        asked = tokio::time::timeout(limit, handshake.negotiate(options)) => {
            asked.unwrap_or(Err(Refusal::Late(limit)))
        }
        () = shared.shutdown.triggered() => {
            return Served { protocol: handshake.stage.protocol(), destination: None, end: End::Shutdown };
        }
    };
    let protocol = handshake.stage.protocol();
    let destination = match asked {
        Ok(Ask::Connect(destination)) => destination,
        Ok(Ask::UdpAssociate(from)) => {
            shared.stats.tunnels.fetch_add(1, Ordering::Relaxed);
            let (bound, end) =
                udp::associate(handshake.stream, peer, &from, shared, delivered).await;
            return Served {
                protocol,
                destination: bound.map(|at| format!("udp associate {at}")),
                end,
            };
        }
        Err(refusal) => return refuse(handshake, None, refusal).await,
    };
    let shown = destination.to_string();
    let target = tokio::select! {
        target = reach(&destination, options) => target,
        () = shared.grace_expired() => {
            return Served { protocol, destination: Some(shown), end: End::Shutdown };
        }
    };
    let target = match target {
        Ok(target) => target,
        Err(refusal) => return refuse(handshake, Some(shown), refusal).await,
    };
    let bound = target
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    if let Err(refusal) = handshake.reply_success(bound).await {
        return Served {
            protocol,
            destination: Some(shown),
            end: End::Refused(refusal),
        };
    }
    shared.stats.tunnels.fetch_add(1, Ordering::Relaxed);
    let early = handshake.buf.split().freeze();
    let end = tunnel(stream, Stream::Tcp(target), &early, shared, delivered).await;
    Served {
        protocol,
        destination: Some(shown),
        end,
    }
}

/// Sends the refusal's reply (by the stage the handshake reached) and closes.
///
/// Closing a socket with unread bytes in it sends a reset, which can overtake the reply
/// (a header flood leaves bytes unread): so after the reply and our FIN, what the client
/// still sends is read and dropped until it closes, for at most [`LINGER`] and
/// [`LINGER_BYTES`], as nginx's `lingering_close` does.
async fn refuse(handshake: Handshake<'_>, destination: Option<String>, refusal: Refusal) -> Served {
    if let Some(reply) = handshake.stage.reply_to(&refusal) {
        // The client may be gone already; the refusal is logged either way.
        let _ = handshake.stream.write_all(&reply).await;
        let _ = handshake.stream.shutdown().await;
        let _ = tokio::time::timeout(LINGER, drain(handshake.stream)).await;
    }
    Served {
        protocol: handshake.stage.protocol(),
        destination,
        end: End::Refused(refusal),
    }
}

/// Longest a refused client's remaining bytes are read and dropped before closing.
const LINGER: Duration = Duration::from_secs(2);
/// Most bytes read and dropped from a refused client.
const LINGER_BYTES: u64 = 256 * 1024;

/// Reads and drops what the client sends until it closes, at most [`LINGER_BYTES`].
async fn drain(stream: &mut Stream) {
    let mut sink = tokio::io::sink();
    let _ = tokio::io::copy(&mut (&mut *stream).take(LINGER_BYTES), &mut sink).await;
}

/// Resolves the destination, judges every address by the rules, and connects to the
/// first allowed one that answers; all within the connect timeout.
async fn reach(
    destination: &Destination,
    options: &super::ProxyOptions,
) -> Result<TcpStream, Refusal> {
    let shown = destination.to_string();
    let limit = options.connect_timeout;
    let attempt = async {
        let candidates = resolve(destination)
            .await
            .map_err(|why| Refusal::Unreachable(shown.clone(), why))?;
        let allowed = allowed_addresses(&candidates, options, destination)?;
        let mut last = None;
        for addr in allowed {
            match TcpStream::connect(addr).await {
                Ok(stream) => {
                    // Small writes (keystrokes, requests) go out at once, as the relay's do.
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Err(e) => last = Some(e),
            }
        }
        let why = last.map_or(Unreachable::Refused, Unreachable::of);
        Err(Refusal::Unreachable(shown.clone(), why))
    };
    match tokio::time::timeout(limit, attempt).await {
        Ok(result) => result,
        Err(_) => Err(Refusal::Unreachable(
            shown.clone(),
            Unreachable::TimedOut(limit),
        )),
    }
}

/// The open tunnel: early bytes first, then both ways until both end, the idle timeout,
/// or the grace period after shutdown.
async fn tunnel(
    client: Stream,
    mut target: Stream,
    early: &[u8],
    shared: &Shared,
    delivered: &Delivered,
) -> End {
    let stats = &shared.stats;
    if !early.is_empty() {
        if let Err(e) = target.write_all(early).await {
            return End::Failed(e);
        }
        let n = early.len() as u64;
        stats.to_target.read.fetch_add(n, Ordering::Release);
        stats.to_target.written.fetch_add(n, Ordering::Release);
        delivered.to_target.fetch_add(n, Ordering::Relaxed);
    }
    let activity = Activity::new();
    let idle = shared.options.idle_timeout;
    tokio::select! {
        result = copy_both_ways(client, target, shared, delivered, &activity) => match result {
            Ok(()) => End::Closed,
            Err(e) => End::Failed(e),
        },
        () = activity.quiet_for(idle) => End::Idle(idle.unwrap_or_default()),
        () = shared.grace_expired() => End::Shutdown,
    }
}

/// The relay's copy: splice between two plain sockets with `--copy splice` (when pipes
/// can be made), else one growing buffer per direction.
async fn copy_both_ways(
    client: Stream,
    target: Stream,
    shared: &Shared,
    delivered: &Delivered,
    activity: &Activity,
) -> io::Result<()> {
    let options = &shared.options;
    let stats = &shared.stats;
    if options.copy == crate::relay::CopyMode::Splice
        && let (Some(client_socket), Some(target_socket)) =
            (PlainSocket::of(&client), PlainSocket::of(&target))
    {
        match Splicer::new(options.buffer_size) {
            Ok(splicer) => {
                return splicer
                    .run(
                        client_socket,
                        target_socket,
                        Counters {
                            delivered: &delivered.to_target,
                            totals: &stats.to_target,
                        },
                        Counters {
                            delivered: &delivered.to_client,
                            totals: &stats.to_client,
                        },
                        activity,
                    )
                    .await;
            }
            Err(e) => tracing::debug!("no pipes for splice ({e}); copying through buffers"),
        }
    }
    pipe_both_ways(
        client,
        target,
        options.buffer_size,
        Counters {
            delivered: &delivered.to_target,
            totals: &stats.to_target,
        },
        Counters {
            delivered: &delivered.to_client,
            totals: &stats.to_client,
        },
        LastEnd::Shutdown,
        activity,
    )
    .await
}
