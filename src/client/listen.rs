//! `sockit listen`: the listening half of nc (`nc -l 9000 > file`). It accepts a client
//! and wires it to stdin and stdout exactly as [`connect`](mod@super::connect) wires a server:
//! the client's bytes go to stdout unchanged, stdin goes to the client, and the half-close
//! rules are connect's own (the same code runs the conversation):
//!
//! * stdin ends → our sending side is shut down (TCP FIN, TLS close_notify) and the
//!   client's bytes are still printed until it closes;
//! * the client closes first → what stdin still holds is still sent; the conversation ends
//!   when stdin ends.
//!
//! Without `--keep-open` the listener takes one client and closes (a Unix socket file is
//! removed then). The exit status says whether everything was delivered: success only
//! when stdin was sent in full and the client's end of data was seen. Anything else
//! (a reset, the client going away before stdin was sent, an idle timeout) is an
//! [`Error::Undelivered`] that names the byte counts.
//!
//! With `--keep-open` the listener takes clients until a signal stops it, several at once
//! (as `ncat -lk`): each read from a client goes to stdout whole, in the order reads
//! complete, so two clients' bytes interleave at read boundaries (up to 64 KiB); stdin
//! is broadcast to every client connected when it is read, and waits while none is. A
//! client's end of data ends its conversation (its connection is closed), since stdin,
//! shared by all, may never end.
//!
//! Datagrams (`udp://`, `unixgram:`) have no connection: the first sender becomes the
//! peer, stdin goes to it as datagrams (one per read) and datagrams from anyone else are
//! ignored (logged at debug level). After stdin ends, datagrams are still printed until
//! none has come for the idle timeout ([`DATAGRAM_LINGER`] by default). With
//! `--keep-open` every sender is a peer: each one's datagrams go to stdout and stdin
//! goes to all of them. At most [`MAX_DATAGRAM_PEERS`] are kept (the default of a datagram
//! relay's `--max-sessions`): a new sender then takes the place of the peer heard from
//! longest ago, as a relay's session table does, so a flood of source ports churns its own
//! entries and neither grows memory nor locks a later sender out.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::PollSender;

use super::connect::{DATAGRAM_LINGER, Ended, Input, InteractiveOptions, talk_stream};
use crate::endpoint::{Endpoint, PeerAddr};
use crate::error::{Error, ExitStatus, Result};
use crate::idle::Activity;
use crate::obs::hexdump::{Capture, Direction, Tap};
use crate::obs::throttle::{Admit, LogThrottle, connection_line};
use crate::shutdown::Shutdown;
use crate::transport::client_cert::ClientIdentity;
use crate::transport::{self, Bound, DatagramSocket, Layers, MAX_DATAGRAM};

/// Most datagram peers a `--keep-open` listener keeps at once (as a datagram relay's
/// default `--max-sessions`); at the cap a new sender replaces the peer idle longest.
pub const MAX_DATAGRAM_PEERS: usize = 1024;

/// How many clients a listener takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Clients {
    /// The first client (or datagram sender), then stop: `nc -l`.
    #[default]
    One,
    /// Client after client, several at once, until a signal: `ncat -lk`.
    KeepOpen,
}

/// How `listen` behaves.
#[derive(Debug, Clone, Default)]
pub struct ListenerOptions {
    /// The conversation with each client: idle timeout and `--hex` (connect's own options;
    /// the connect timeout and TLS client settings are not used).
    pub interactive: InteractiveOptions,
    /// TLS for `tls://` endpoints, and the `--hex` tap, applied to each accepted stream.
    pub layers: Layers,
    /// One client or many.
    pub clients: Clients,
    /// Backlog and the like for the listening socket.
    pub socket: transport::ListenOptions,
}

/// What a listener did, when everything was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ListenReport {
    /// Clients (or datagram peers) served.
    pub clients: u64,
    /// Bytes received from them and written to stdout.
    pub received: u64,
    /// Bytes of stdin sent to them (a broadcast counts once per client).
    pub sent: u64,
}

/// A bound listener, ready to take its client: bind first, print the readiness line,
/// then [`Listener::run`].
#[derive(Debug)]
pub struct Listener {
    bound: Bound,
    local: Endpoint,
    options: ListenerOptions,
}

impl Listener {
    /// Binds `endpoint` (port 0 takes any free port).
    ///
    /// # Errors
    /// The listen errors of [`Bound::bind`]: address in use, permission denied, not a
    /// socket, host not found.
    pub async fn bind(endpoint: &Endpoint, options: ListenerOptions) -> Result<Listener> {
        let (bound, local) = Bound::bind(endpoint, &options.socket).await?;
        Ok(Listener {
            bound,
            local,
            options,
        })
    }

    /// The endpoint actually bound (with the port the kernel chose for port 0).
    pub fn local_endpoint(&self) -> &Endpoint {
        &self.local
    }

    /// Takes the client(s) and runs the conversation(s) between `input` and `output`.
    /// `shutdown` stops a `--keep-open` listener; one client runs to its end.
    ///
    /// # Errors
    /// [`Error::Undelivered`] when not everything was delivered (with the counts), or an
    /// I/O error of the listening socket or stdin.
    pub async fn run<O>(self, input: Input, output: O, shutdown: Shutdown) -> Result<ListenReport>
    where
        O: AsyncWrite + Unpin + Send + 'static,
    {
        let feed = Feed::start(input);
        match (self.bound, self.options.clients) {
            (Bound::Stream(listener), Clients::One) => {
                one_stream(listener, &self.options, &feed, output).await
            }
            (Bound::Stream(listener), Clients::KeepOpen) => {
                many_streams(listener, &self.options, &feed, output, shutdown).await
            }
            (Bound::Datagram(socket), clients) => {
                let input = feed.subscribe();
                datagrams(&socket, &self.options, clients, input, output, shutdown).await
            }
        }
    }
}

/// Stdin, shared out: each chunk goes to every subscriber connected when it is read.
/// Nothing is read while nobody subscribes, so what is typed before the first client
/// reaches it.
struct Feed {
    shared: Arc<FeedState>,
}

/// The state the feed's task and the listener share.
#[derive(Default)]
struct FeedState {
    /// Where each chunk goes: one sender per client.
    subscribers: Mutex<Vec<mpsc::Sender<io::Result<Bytes>>>>,
    /// Wakes the task when the first subscriber arrives.
    joined: Notify,
    /// Bytes read from stdin and handed to every subscriber.
    forwarded: AtomicU64,
    /// Stdin has ended and every chunk has been handed on.
    ended: AtomicBool,
}

impl Feed {
    /// Starts the task that reads `input` for the subscribers.
    fn start(input: Input) -> Feed {
        let shared = Arc::new(FeedState::default());
        tokio::spawn(Feed::forward(input, Arc::clone(&shared)));
        Feed { shared }
    }

    /// A new client's stdin: closed at once if stdin has already ended.
    fn subscribe(&self) -> Input {
        let (tx, rx) = mpsc::channel(2);
        if !self.shared.ended.load(Ordering::Acquire) {
            lock(&self.shared.subscribers).push(tx);
            self.shared.joined.notify_one();
        }
        rx
    }

    /// Whether a client that was sent `sent` bytes got all of stdin: stdin ended, and
    /// every byte read from it was sent.
    fn delivered_in_full(&self, sent: u64) -> bool {
        self.shared.ended.load(Ordering::Acquire)
            && self.shared.forwarded.load(Ordering::Acquire) == sent
    }

    /// The feed's task: stdin → every subscriber, until stdin ends.
    async fn forward(mut input: Input, shared: Arc<FeedState>) {
        loop {
            // Read nothing while nobody listens, so it reaches the first client.
            shared.live_subscribers().await;
            let Some(item) = input.recv().await else {
                break;
            };
            // Whoever is connected now, including clients that came during the read.
            let subscribers = shared.live_subscribers().await;
            match item {
                Ok(chunk) => {
                    for subscriber in subscribers {
                        // A client that has gone simply misses the rest.
                        let _ = subscriber.send(Ok(chunk.clone())).await;
                    }
                    let len = chunk.len() as u64;
                    shared.forwarded.fetch_add(len, Ordering::AcqRel);
                }
                Err(e) => {
                    for subscriber in subscribers {
                        let copy = io::Error::new(e.kind(), e.to_string());
                        let _ = subscriber.send(Err(copy)).await;
                    }
                    return;
                }
            }
        }
        shared.ended.store(true, Ordering::Release);
        // Dropping the senders is each client's end of input.
        lock(&shared.subscribers).clear();
    }
}

impl FeedState {
    /// The subscribers still connected, once there is at least one.
    async fn live_subscribers(&self) -> Vec<mpsc::Sender<io::Result<Bytes>>> {
        loop {
            let live = {
                let mut subscribers = lock(&self.subscribers);
                subscribers.retain(|s| !s.is_closed());
                subscribers.clone()
            };
            if !live.is_empty() {
                return live;
            }
            self.joined.notified().await;
        }
    }
}

/// Locks a mutex whose data stays valid even if a holder panicked (a list of senders).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Bytes each way through one client's stream, readable after the conversation failed,
/// and the moment the client's data ends.
#[derive(Debug, Default)]
struct Tally {
    received: AtomicU64,
    sent: AtomicU64,
    /// Notified when a read finds the client's end of data.
    peer_closed: Notify,
}

impl Tally {
    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// The error for a conversation that ended before everything was delivered.
    fn undelivered(&self, reason: String, status: ExitStatus) -> Error {
        Error::Undelivered {
            reason,
            received: self.received(),
            sent: self.sent(),
            status,
        }
    }
}

/// A stream that counts what passes through it into a [`Tally`].
struct Counted<S> {
    inner: S,
    tally: Arc<Tally>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let had_room = buf.remaining() > 0;
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        self.tally.received.fetch_add(n, Ordering::Relaxed);
        let end_of_data = match &polled {
            Poll::Ready(Ok(())) => n == 0 && had_room,
            // A TLS client that closes without close_notify: its data is over too.
            Poll::Ready(Err(e)) => e.kind() == io::ErrorKind::UnexpectedEof,
            Poll::Pending => false,
        };
        if end_of_data {
            self.tally.peer_closed.notify_one();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.tally.sent.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One accepted client, its layers (TLS, `--hex`) applied, counted.
struct Client {
    stream: Counted<Tap<transport::Stream>>,
    peer: String,
    tally: Arc<Tally>,
}

/// Accepts the next client that completes its layers (a failed TLS handshake is logged
/// and the next client awaited).
async fn accept_client(
    listener: &transport::StreamListener,
    layers: &Layers,
    interactive: &InteractiveOptions,
    conn: u64,
) -> Result<Client> {
    loop {
        let (stream, peer) = accept(listener).await?;
        match wrap_client(stream, &peer, layers, interactive.capture.as_ref(), conn).await {
            Ok(client) => return Ok(client),
            Err(e) => tracing::warn!("{e}; still waiting for a client"),
        }
    }
}

/// Accepts the next connection. Cancel-safe.
async fn accept(listener: &transport::StreamListener) -> Result<(transport::Stream, PeerAddr)> {
    listener.accept().await.map_err(|source| Error::Io {
        doing: "accepting a client".into(),
        source,
    })
}

/// Applies the layers (TLS handshake, `--hex`) to an accepted connection and counts it.
async fn wrap_client(
    stream: transport::Stream,
    peer: &PeerAddr,
    layers: &Layers,
    capture: Option<&Capture>,
    conn: u64,
) -> Result<Client> {
    let tapped = layers.wrap_accepted(stream, peer, conn).await?;
    let certificate = ClientIdentity::of(tapped.get_ref());
    let stream = tapped
        .with_capture(capture, conn, &peer.to_string())
        .map_err(|source| Error::Io {
            doing: format!("creating the capture files of {peer}"),
            source,
        })?;
    match certificate {
        Some(identity) => tracing::info!("{peer} connected, client certificate {identity}"),
        None => tracing::info!("{peer} connected"),
    }
    let tally = Arc::new(Tally::default());
    Ok(Client {
        stream: Counted {
            inner: stream,
            tally: Arc::clone(&tally),
        },
        peer: peer.to_string(),
        tally,
    })
}

/// Whether a finished conversation delivered everything: the client's end of data was
/// seen and all of stdin was sent.
fn judge(ended: Ended, client: &Client, feed: &Feed, options: &InteractiveOptions) -> Result<()> {
    let tally = &client.tally;
    match ended {
        // `ServerQuiet` needs `--quit-after`, which listen does not offer; were it to come,
        // it is judged as a finished conversation: whether all of stdin went out.
        Ended::Finished | Ended::ServerQuiet if feed.delivered_in_full(tally.sent()) => Ok(()),
        Ended::Finished | Ended::ServerQuiet => Err(tally.undelivered(
            format!(
                "{} stopped taking data before all of stdin was sent",
                client.peer
            ),
            ExitStatus::Failure,
        )),
        Ended::Idle => Err(tally.undelivered(
            format!(
                "no traffic with {} for {}",
                client.peer,
                humantime::format_duration(options.idle_timeout.unwrap_or_default())
            ),
            ExitStatus::Timeout,
        )),
        // Whoever read our stdout stopped reading (`| head`): a normal way to stop.
        Ended::OutputClosed => Ok(()),
    }
}

/// Without `--keep-open`: the first client, to the end of its conversation.
async fn one_stream<O>(
    listener: transport::StreamListener,
    options: &ListenerOptions,
    feed: &Feed,
    output: O,
) -> Result<ListenReport>
where
    O: AsyncWrite + Unpin,
{
    let mut client = accept_client(&listener, &options.layers, &options.interactive, 1).await?;
    // One client only: later ones are refused, and a Unix socket file goes away now.
    drop(listener);
    let input = feed.subscribe();
    let talked = talk_stream(
        &mut client.stream,
        &client.peer,
        &options.interactive,
        input,
        output,
    )
    .await;
    let ended = match talked {
        Ok(report) => report.ended,
        Err(e) => {
            let status = e.exit_status();
            return Err(client.tally.undelivered(e.to_string(), status));
        }
    };
    judge(ended, &client, feed, &options.interactive)?;
    Ok(ListenReport {
        clients: 1,
        received: client.tally.received(),
        sent: client.tally.sent(),
    })
}

/// Output shared by several clients: each write is one chunk on a channel, and one task
/// writes the chunks to the real output in the order they come.
struct SharedOutput {
    chunks: mpsc::Sender<Bytes>,
    writer: tokio::task::JoinHandle<()>,
}

/// One client's handle on a [`SharedOutput`]: each write is queued whole; writes fail
/// once the output is gone, which the conversation takes as "stdout closed".
struct OutputHandle {
    chunks: PollSender<Bytes>,
}

impl AsyncWrite for OutputHandle {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let gone = |_| io::Error::from(io::ErrorKind::BrokenPipe);
        std::task::ready!(self.chunks.poll_reserve(cx)).map_err(gone)?;
        self.chunks
            .send_item(Bytes::copy_from_slice(buf))
            .map_err(gone)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl SharedOutput {
    /// Starts the task writing to `output`.
    fn start<O>(mut output: O) -> SharedOutput
    where
        O: AsyncWrite + Unpin + Send + 'static,
    {
        let (chunks, mut rx) = mpsc::channel::<Bytes>(8);
        let writer = tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                let written = async {
                    output.write_all(&chunk).await?;
                    output.flush().await
                };
                if let Err(e) = written.await {
                    tracing::debug!("stdout closed: {e}");
                    return;
                }
            }
        });
        SharedOutput { chunks, writer }
    }

    /// A writer for one more client.
    fn handle(&self) -> OutputHandle {
        OutputHandle {
            chunks: PollSender::new(self.chunks.clone()),
        }
    }

    /// Completes when the output is gone (its writer stopped on an error).
    async fn closed(&self) {
        self.chunks.closed().await;
    }

    /// Lets the writer finish what is queued.
    async fn finish(self) {
        drop(self.chunks);
        let _ = self.writer.await;
    }
}

/// With `--keep-open`: clients until `shutdown`, each in its own task.
async fn many_streams<O>(
    listener: transport::StreamListener,
    options: &ListenerOptions,
    feed: &Feed,
    output: O,
    shutdown: Shutdown,
) -> Result<ListenReport>
where
    O: AsyncWrite + Unpin + Send + 'static,
{
    let output = SharedOutput::start(output);
    let mut clients = JoinSet::new();
    let mut report = ListenReport::default();
    let mut failed = 0u64;
    let mut next_conn = 1u64;
    loop {
        tokio::select! {
            accepted = accept(&listener) => {
                let (stream, peer) = accepted?;
                let conn = next_conn;
                next_conn += 1;
                let layers = options.layers.clone();
                let interactive = options.interactive.clone();
                let input = feed.subscribe();
                let handle = output.handle();
                clients.spawn(async move {
                    // The handshake runs in the client's task: a slow one holds up nobody.
                    let capture = interactive.capture.as_ref();
                    match wrap_client(stream, &peer, &layers, capture, conn).await {
                        Ok(client) => serve_one(client, interactive, input, handle).await,
                        Err(e) => {
                            tracing::warn!("{e}");
                            ClientOutcome { received: 0, sent: 0, failed: false }
                        }
                    }
                });
            }
            Some(joined) = clients.join_next() => tally_client(joined, &mut report, &mut failed),
            () = output.closed() => break,
            () = shutdown.triggered() => break,
        }
    }
    drop(listener);
    clients.abort_all();
    while let Some(joined) = clients.join_next().await {
        tally_client(joined, &mut report, &mut failed);
    }
    output.finish().await;
    if failed > 0 {
        return Err(Error::Undelivered {
            reason: format!(
                "{failed} of {} client(s) ended before everything was delivered",
                report.clients
            ),
            received: report.received,
            sent: report.sent,
            status: ExitStatus::Failure,
        });
    }
    Ok(report)
}

/// What one `--keep-open` client did: its counts, and whether it failed.
struct ClientOutcome {
    received: u64,
    sent: u64,
    failed: bool,
}

/// One `--keep-open` client's conversation, logged when it ends.
async fn serve_one(
    mut client: Client,
    options: InteractiveOptions,
    input: Input,
    output: OutputHandle,
) -> ClientOutcome {
    let tally = Arc::clone(&client.tally);
    // A client's end of data ends its conversation here (as ncat -lk): a listener that
    // runs for days must not keep every client that has finished until stdin ends.
    let talked = tokio::select! {
        talked = talk_stream(&mut client.stream, &client.peer, &options, input, output) => {
            talked.map(|_| ())
        }
        () = tally.peer_closed.notified() => Ok(()),
    };
    let (received, sent) = (tally.received(), tally.sent());
    let failed = match talked {
        Ok(()) => {
            tracing::info!(
                "{} closed: {received} bytes received, {sent} sent",
                client.peer
            );
            false
        }
        Err(e) => {
            tracing::warn!("{e}; {received} bytes received, {sent} sent");
            true
        }
    };
    ClientOutcome {
        received,
        sent,
        failed,
    }
}

/// Adds one finished (or aborted) client to the totals.
fn tally_client(
    joined: std::result::Result<ClientOutcome, tokio::task::JoinError>,
    report: &mut ListenReport,
    failed: &mut u64,
) {
    report.clients += 1;
    match joined {
        Ok(outcome) => {
            report.received += outcome.received;
            report.sent += outcome.sent;
            *failed += u64::from(outcome.failed);
        }
        // Cut off by the stop: it did not fail, it was stopped.
        Err(e) if e.is_cancelled() => {}
        Err(e) => {
            tracing::warn!("a client's task failed: {e}");
            *failed += 1;
        }
    }
}

/// Datagram peers: the first sender, or every sender with `--keep-open`.
async fn datagrams<O>(
    socket: &DatagramSocket,
    options: &ListenerOptions,
    clients: Clients,
    mut input: Input,
    mut output: O,
    shutdown: Shutdown,
) -> Result<ListenReport>
where
    O: AsyncWrite + Unpin,
{
    let hex = options.interactive.hex.as_ref();
    let idle_timeout = options.interactive.idle_timeout;
    let activity = Activity::new();
    let mut peers = Peers::default();
    let mut report = ListenReport::default();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut input_open = true;
    let undelivered = |reason: String, report: &ListenReport, status| Error::Undelivered {
        reason,
        received: report.received,
        sent: report.sent,
        status,
    };
    loop {
        // One peer: after stdin ends, print what still comes until a quiet spell.
        let quiet_limit = match (clients, input_open) {
            (Clients::One, false) => Some(idle_timeout.unwrap_or(DATAGRAM_LINGER)),
            _ => idle_timeout,
        };
        tokio::select! {
            chunk = input.recv(), if input_open && !peers.is_empty() => match chunk {
                Some(Ok(chunk)) => {
                    send_to_peers(socket, peers.addresses(), &chunk, options).await.map_err(|e| {
                        undelivered(e.to_string(), &report, e.exit_status())
                    })?;
                    report.sent += (chunk.len() * peers.len()) as u64;
                    activity.touch();
                }
                Some(Err(source)) => return Err(Error::Io { doing: "reading stdin".into(), source }),
                None => {
                    input_open = false;
                    // The linger counts from the end of input, not from the last datagram.
                    activity.touch();
                }
            },
            received = socket.recv_from(&mut buf) => {
                let (n, from) = received.map_err(|source| Error::Io {
                    doing: "receiving a datagram".into(),
                    source,
                })?;
                if !peers.heard_from(&from) {
                    if let (Clients::One, Some(first)) = (clients, peers.any()) {
                        tracing::debug!("ignoring {n} bytes from {from}: the peer is {first}");
                        continue;
                    }
                    connection_line(|suffix| tracing::info!("{from} is a peer{suffix}"));
                    peers.add(from.clone());
                    report.clients += 1;
                }
                if let Some(hex) = hex {
                    hex.datagram(Direction::Received, &from.to_string(), &buf[..n]);
                }
                if let Some(capture) = &options.interactive.capture {
                    capture.datagram(Direction::Received, &from.to_string(), &buf[..n]);
                }
                record_pcap(socket, options, &from, Direction::Received, &buf[..n]);
                report.received += n as u64;
                activity.touch();
                let written = async {
                    output.write_all(&buf[..n]).await?;
                    output.flush().await
                };
                if let Err(e) = written.await {
                    tracing::debug!("stdout closed: {e}");
                    return Ok(report);
                }
            }
            () = activity.quiet_for(quiet_limit), if !peers.is_empty() => {
                if input_open {
                    let quiet = humantime::format_duration(idle_timeout.unwrap_or_default());
                    return Err(undelivered(format!("no traffic for {quiet}"), &report, ExitStatus::Timeout));
                }
                return Ok(report);
            }
            () = shutdown.triggered() => return Ok(report),
        }
    }
}

/// The datagram peers of a listener, each with when it was last heard from, capped at
/// [`MAX_DATAGRAM_PEERS`].
#[derive(Default)]
struct Peers {
    /// Peer → the moment its last datagram came.
    last_heard: HashMap<PeerAddr, Instant>,
    /// Log lines for peers forgotten to make room.
    forgotten_log: LogThrottle,
}

impl Peers {
    /// Notes a datagram from `peer`; whether it is already a peer.
    fn heard_from(&mut self, peer: &PeerAddr) -> bool {
        match self.last_heard.get_mut(peer) {
            Some(last) => {
                *last = Instant::now();
                true
            }
            None => false,
        }
    }

    /// Takes `peer` on, first forgetting the peer idle longest when the cap is reached.
    fn add(&mut self, peer: PeerAddr) {
        if self.last_heard.len() >= MAX_DATAGRAM_PEERS
            && let Some(idlest) = self.idlest()
        {
            self.last_heard.remove(&idlest);
            if let admit @ Admit::Log { .. } = self.forgotten_log.admit(Instant::now()) {
                tracing::info!(
                    "forgot the peer {idlest}, idle longest, for a new peer {peer}: \
                     {MAX_DATAGRAM_PEERS} peers is the most listen keeps{}",
                    admit.suffix()
                );
            }
        }
        self.last_heard.insert(peer, Instant::now());
    }

    /// The peer heard from longest ago.
    fn idlest(&self) -> Option<PeerAddr> {
        self.last_heard
            .iter()
            .min_by_key(|(_, last)| **last)
            .map(|(peer, _)| peer.clone())
    }

    /// One of the peers (the only one without `--keep-open`).
    fn any(&self) -> Option<&PeerAddr> {
        self.last_heard.keys().next()
    }

    /// Whether nobody has sent a datagram yet.
    fn is_empty(&self) -> bool {
        self.last_heard.is_empty()
    }

    /// How many peers stdin goes to.
    fn len(&self) -> usize {
        self.last_heard.len()
    }

    /// Every peer, for a broadcast.
    fn addresses(&self) -> impl Iterator<Item = &PeerAddr> {
        self.last_heard.keys()
    }
}

/// `--pcap`: one datagram between this UDP socket and `peer`.
fn record_pcap(
    socket: &DatagramSocket,
    options: &ListenerOptions,
    peer: &PeerAddr,
    direction: Direction,
    datagram: &[u8],
) {
    if let (Some(pcap), Some(local), PeerAddr::Ip(peer)) =
        (&options.layers.pcap, socket.local_ip(), peer)
    {
        pcap.datagram(local, *peer, direction, datagram);
    }
}

/// Sends one chunk of stdin to every peer as one datagram each.
async fn send_to_peers(
    socket: &DatagramSocket,
    peers: impl Iterator<Item = &PeerAddr>,
    datagram: &[u8],
    options: &ListenerOptions,
) -> Result<()> {
    for peer in peers {
        if let Some(hex) = &options.interactive.hex {
            hex.datagram(Direction::Sent, &peer.to_string(), datagram);
        }
        socket
            .send_to(datagram, peer)
            .await
            .map_err(|e| Error::exchange(e, peer.to_string(), "while sending a datagram"))?;
        if let Some(capture) = &options.interactive.capture {
            capture.datagram(Direction::Sent, &peer.to_string(), datagram);
        }
        record_pcap(socket, options, peer, Direction::Sent, datagram);
    }
    Ok(())
}
