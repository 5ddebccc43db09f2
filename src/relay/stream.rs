//! Stream relaying: take a slot, accept, pass the gate, then per client (in its own task)
//! PROXY header and late access check, handshake, connect to the target and copy both
//! ways.
//!
//! `--max-conns` as `serve` applies it: with `--max-conns-mode wait` the slot is taken
//! *before* `accept`, so at the limit the loop stops accepting and the kernel backlog
//! holds further clients; with `refuse` every client is accepted and one that finds no
//! free slot is closed at once (logged, counted). The slot is held until the relayed
//! connection ends.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::Shared;
use super::copy::{Counters, LastEnd, pipe_both_ways};
use super::watch::work_or_watch;
use crate::access::acceptor::{Acceptor, Admitted, TaskSpan};
use crate::error::Error;
use crate::idle::Activity;
use crate::obs::Event;
use crate::obs::hexdump::Tap;
use crate::obs::span::{
    announce_client_certificate, in_connection_span, record_client, record_socket_peer,
};
use crate::obs::throttle::connection_line;
use crate::transport::client_cert::ClientIdentity;
use crate::transport::proxy;
use crate::transport::{PeerAddr, Stream, StreamListener, connect_stream, connect_stream_prefixed};

/// Accepts clients until shutdown, one tracked task each; denied clients and, with
/// `--max-conns-mode refuse`, clients over the limit are closed at once.
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

/// An admitted client: relayed in a tracked task of its own, holding its slot.
fn take_client(admitted: Admitted, shared: &Arc<Shared>) {
    let task_shared = Arc::clone(shared);
    let span = task_span(&shared.options);
    admitted.serve_in_task(&shared.shutdown, span, |stream, peer, id| async move {
        relay_connection(stream, peer, id, &task_shared).await;
    });
}

/// Whether a connection's task needs its span entered: when something below the relay
/// may log about it (TLS on either side, a PROXY header, a tap or capture), or when debug
/// lines are shown. Otherwise the relay's own lines make the span as they are logged,
/// and they read the same.
fn task_span(options: &super::RelayOptions) -> TaskSpan {
    let plain = options.layers.is_passthrough()
        && options.capture.is_none()
        && options.connect.tls.is_none();
    if plain && tracing::level_filters::LevelFilter::current() < tracing::Level::DEBUG {
        TaskSpan::PerLine
    } else {
        TaskSpan::Entered
    }
}

/// Why a relayed connection ended.
enum End {
    /// Both sides finished their data.
    Closed,
    /// No traffic for the idle timeout.
    Idle(Duration),
    /// The grace period after shutdown ran out.
    Shutdown,
    /// The client's TLS handshake failed.
    Handshake(Error),
    /// The target could not be reached.
    Target(Error),
    /// A read or write failed mid-copy.
    Failed(Error),
}

impl End {
    /// The reason in words; the usual ones are not allocated.
    fn reason(&self) -> Cow<'static, str> {
        match self {
            End::Closed => Cow::Borrowed("closed by both sides"),
            End::Idle(d) => format!("idle for {}", humantime::format_duration(*d)).into(),
            End::Shutdown => Cow::Borrowed("relay shutting down"),
            End::Handshake(e) | End::Failed(e) => e.to_string().into(),
            End::Target(e) => format!("target unreachable: {e}").into(),
        }
    }

    fn is_error(&self) -> bool {
        matches!(self, End::Handshake(_) | End::Target(_) | End::Failed(_))
    }
}

/// This connection's delivered bytes each way, for its `closed` event.
#[derive(Default)]
struct Delivered {
    to_target: AtomicU64,
    to_client: AtomicU64,
}

/// One client, start to end: PROXY header (and the access check on the address it
/// names), handshake, connect to the target, copy, report. Runs inside the connection's
/// span.
async fn relay_connection(mut accepted: Stream, socket_peer: PeerAddr, conn: u64, shared: &Shared) {
    let layers = &shared.options.layers;
    let span = tracing::Span::current();
    let proxied = layers.proxy.is_on();
    record_socket_peer(&span, proxied, &socket_peer);
    let (peer, destination) = match layers.client_addresses(&mut accepted, &socket_peer).await {
        Ok(Some(addresses)) => (addresses.peer, addresses.destination),
        Ok(None) => {
            tracing::debug!("closed before sending a PROXY header (a health check?)");
            return;
        }
        Err(e) => {
            shared.stats.errors.fetch_add(1, Ordering::Relaxed);
            in_connection_span(conn, &socket_peer, || {
                connection_line(|more| tracing::warn!("closing connection: {e}{more}"));
            });
            return;
        }
    };
    record_client(&span, proxied, &peer);
    let Some(_per_source) = shared.gate_config().admit_late(&peer) else {
        // Closed at once: dropping the stream sends our FIN.
        return;
    };
    if proxied {
        let via = &socket_peer;
        shared.events.emit(Event::Proxied {
            conn,
            peer: &peer,
            via,
        });
    }
    shared.stats.active.fetch_add(1, Ordering::Relaxed);
    shared.events.emit(Event::Connected { conn, peer: &peer });
    let delivered = Delivered::default();
    let end = relay(accepted, &peer, destination, conn, shared, &delivered).await;
    let reason = end.reason();
    let to_target = delivered.to_target.load(Ordering::Relaxed);
    let to_client = delivered.to_client.load(Ordering::Relaxed);
    if end.is_error() {
        shared.stats.errors.fetch_add(1, Ordering::Relaxed);
        in_connection_span(conn, &peer, || {
            connection_line(|more| tracing::warn!("{reason}{more}"));
        });
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        in_connection_span(conn, &peer, || {
            tracing::debug!(
                "relay closed: {to_target} bytes to target, {to_client} bytes to client ({reason})"
            );
        });
    }
    shared.events.emit(Event::Closed {
        conn,
        peer: &peer,
        messages: 0,
        bytes_in: to_target,
        bytes_out: to_client,
        reason: &reason,
    });
    shared.stats.active.fetch_sub(1, Ordering::Relaxed);
}

/// The relaying itself; returns how it ended. `destination` is where the client
/// connected to when a PROXY header named it (else this relay's own address is).
async fn relay(
    accepted: Stream,
    peer: &PeerAddr,
    destination: Option<SocketAddr>,
    conn: u64,
    shared: &Shared,
    delivered: &Delivered,
) -> End {
    let options = &shared.options;
    // Only a PROXY header sent to the target names it (and asking costs a system call).
    let local = match options.send_proxy {
        Some(_) => destination.or_else(|| local_address(&accepted)),
        None => None,
    };
    let client = match options.layers.wrap_accepted(accepted, peer, conn).await {
        Ok(client) => client,
        Err(e) => return End::Handshake(e),
    };
    if let Some(identity) = ClientIdentity::of(client.get_ref()) {
        announce_client_certificate(&identity, peer, conn, &shared.events);
    }
    let client = match &options.capture {
        None => client,
        Some(capture) => match client.with_capture(Some(capture), conn, &peer.to_string()) {
            Ok(client) => client,
            Err(source) => {
                return End::Failed(Error::Io {
                    doing: format!("creating the capture files of {peer}"),
                    source,
                });
            }
        },
    };
    // One wait for the end of the grace period, registered once for the connect and the
    // copy alike.
    let mut grace = pin!(shared.grace_expired());
    let connecting = connect_target(options, peer, local);
    let target = tokio::select! {
        target = connecting => match target {
            Ok(target) => target,
            Err(e) => return End::Target(e),
        },
        () = grace.as_mut() => return End::Shutdown,
    };
    let activity = Activity::new();
    let copying = copy_both_ways(client, target, shared, delivered, &activity);
    let watching = async {
        tokio::select! {
            () = activity.quiet_for(options.idle_timeout) => {
                End::Idle(options.idle_timeout.unwrap_or_default())
            }
            () = grace.as_mut() => End::Shutdown,
        }
    };
    match work_or_watch(pin!(copying), pin!(watching)).await {
        Ok(Ok(())) => End::Closed,
        Ok(Err(e)) => End::Failed(Error::exchange(e, peer.to_string(), "while relaying")),
        Err(end) => end,
    }
}

/// Connects to the target and, with `--send-proxy`, sends the PROXY header naming the
/// client (and `local`, the address it reached: the one an incoming PROXY header named,
/// or this relay's own) before anything else, TLS included.
async fn connect_target(
    options: &super::RelayOptions,
    peer: &PeerAddr,
    local: Option<SocketAddr>,
) -> crate::Result<Stream> {
    let Some(version) = options.send_proxy else {
        return connect_stream(&options.target, options.connect.clone()).await;
    };
    let client = match peer {
        PeerAddr::Ip(addr) => Some(*addr),
        _ => None,
    };
    let header = proxy::encode(version, client, local);
    connect_stream_prefixed(&options.target, options.connect.clone(), &header).await
}

/// The local address of an accepted connection: where the client connected to (`None`
/// for Unix sockets).
fn local_address(stream: &Stream) -> Option<SocketAddr> {
    match stream {
        Stream::Tcp(tcp) => tcp.local_addr().ok(),
        Stream::Tls(tls) => tls.get_ref().0.local_addr().ok(),
        Stream::Unix(_) => None,
    }
}

/// Both directions at once until both have ended; the first error stops both.
///
/// With [`super::CopyMode::Splice`] on Linux, two plain sockets are spliced (zero copy,
/// see [`super::splice`]); anything else, or pipes that cannot be made, is copied through
/// one buffer per direction.
async fn copy_both_ways(
    client: Tap<Stream>,
    target: Stream,
    shared: &Shared,
    delivered: &Delivered,
    activity: &Activity,
) -> std::io::Result<()> {
    if let Some(splicing) = try_splice(&client, &target, shared, delivered, activity) {
        return splicing.await;
    }
    copy_buffered(client, target, shared, delivered, activity).await
}

/// The splice copy when both sides are plain sockets, no layer needs the bytes, and the
/// pipes could be made; `None` otherwise.
fn try_splice<'a>(
    client: &'a Tap<Stream>,
    target: &'a Stream,
    shared: &'a Shared,
    delivered: &'a Delivered,
    activity: &'a Activity,
) -> Option<impl Future<Output = std::io::Result<()>> + 'a> {
    use super::CopyMode;
    use super::splice::{PlainSocket, Splicer};
    let options = &shared.options;
    if options.copy != CopyMode::Splice || options.layers.hex.is_some() || options.capture.is_some()
    {
        return None;
    }
    let client_socket = PlainSocket::of(client.get_ref())?;
    let target_socket = PlainSocket::of(target)?;
    let splicer = match Splicer::new(options.buffer_size) {
        Ok(splicer) => splicer,
        Err(e) => {
            tracing::debug!("no pipes for splice ({e}); copying through buffers");
            return None;
        }
    };
    shared.stats.spliced.fetch_add(1, Ordering::Relaxed);
    let stats = &shared.stats;
    Some(splicer.run(
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
    ))
}

/// The default copy: one growing buffer per direction ([`pipe_both_ways`]).
async fn copy_buffered(
    client: Tap<Stream>,
    target: Stream,
    shared: &Shared,
    delivered: &Delivered,
    activity: &Activity,
) -> std::io::Result<()> {
    let stats = &shared.stats;
    let last_end = last_end_of(&client, &target, shared);
    pipe_both_ways(
        client,
        target,
        shared.options.buffer_size,
        Counters {
            delivered: &delivered.to_target,
            totals: &stats.to_target,
        },
        Counters {
            delivered: &delivered.to_client,
            totals: &stats.to_client,
        },
        last_end,
        activity,
    )
    .await
}

/// How the copy passes the second end on: two plain sockets with nothing tapping the
/// bytes are simply closed (the close sends the FIN a shutdown would); anything else is
/// shut down (TLS sends close_notify, a tap records the end).
fn last_end_of(client: &Tap<Stream>, target: &Stream, shared: &Shared) -> LastEnd {
    use super::splice::PlainSocket;
    let options = &shared.options;
    let layers = &options.layers;
    let tapped = layers.hex.is_some() || layers.pcap.is_some() || options.capture.is_some();
    let plain = PlainSocket::of(client.get_ref()).is_some() && PlainSocket::of(target).is_some();
    if plain && !tapped {
        LastEnd::Close
    } else {
        LastEnd::Shutdown
    }
}
