//! `--metrics ADDR`: the HTTP endpoint that serves a running server's (or relay's)
//! counters at `/metrics`, in the text [`crate::obs::metrics`] writes.
//!
//! [`MetricsEndpoint`] is a deliberately tiny HTTP/1.1 responder on its own listener:
//! `GET /metrics` (or `HEAD`) gets the text, anything else a short error, and every
//! response closes the connection. A TCP connection reaches it only once its first bytes
//! have come (or its silence outlasts the read deadline). It has its own limits (a short read deadline, a
//! request-head size, and connections that have sent nothing evicted oldest-first for
//! newcomers), so neither a stuck scraper nor a crowd of idle connections, even one that
//! reconnects the moment it is closed, can tie it up or lock a scraper out.
//!
//! It sits with the commands, above transport and obs: it listens on a socket, and the
//! encoder below it stays pure text.

use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use socket2::SockRef;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::endpoint::{Endpoint, PeerAddr};
use crate::error::{Error, Result};
use crate::obs::metrics::CONTENT_TYPE;
use crate::transport::{Backoff, ListenOptions, Stream, StreamListener, is_per_connection};

/// Produces the exposition text on each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Connections still sending their request head, at most. A newcomer over this evicts
/// the one that has waited longest without sending a byte (only when every one has sent
/// part of a request, the one waiting longest), so idle connections can never lock a
/// scraper out.
const MAX_WAITING: usize = 16;
/// Responses being written at once; a request over this is closed unanswered. A response
/// fits in the socket buffer, so a slot is held only for the moment of writing it.
const MAX_ANSWERING: usize = 64;
/// Longest a scraper may take to send its request head: a scraper sends it at once.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest writing one response may take (a scraper that does not read).
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read; longer ones get 431.
const MAX_REQUEST: usize = 8 * 1024;

/// The `--metrics` HTTP listener, bound and ready to serve.
pub struct MetricsEndpoint {
    listener: StreamListener,
    local: Endpoint,
}

/// The running endpoint; dropping it stops serving.
#[derive(Debug)]
pub struct MetricsHandle {
    task: JoinHandle<()>,
    /// Where it listens (the real port when 0 was asked for).
    pub local: Endpoint,
}

impl Drop for MetricsHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MetricsEndpoint {
    /// Binds `endpoint` (`tcp://HOST:PORT`, `HOST:PORT`, `PORT`, `unix:PATH`).
    ///
    /// # Errors
    /// [`Error::Usage`] for a datagram or `tls://` endpoint; any listen error.
    pub async fn bind(endpoint: &Endpoint) -> Result<MetricsEndpoint> {
        if !matches!(endpoint, Endpoint::Tcp(_) | Endpoint::Unix(_)) {
            return Err(Error::Usage(format!(
                "--metrics serves plain HTTP on a tcp:// or unix: endpoint; {endpoint} is not one (write e.g. --metrics 127.0.0.1:9100)"
            )));
        }
        let listener = StreamListener::bind(endpoint, &ListenOptions::default()).await?;
        defer_accept_until_data(&listener);
        let local = listener.local_endpoint(endpoint);
        Ok(MetricsEndpoint { listener, local })
    }

    /// Where it listens.
    pub fn local_endpoint(&self) -> &Endpoint {
        &self.local
    }

    /// Serves scrapes in the background until the handle is dropped.
    pub fn spawn(self, render: Render) -> MetricsHandle {
        let local = self.local.clone();
        match &local {
            Endpoint::Tcp(hp) => tracing::info!("metrics: http://{hp}/metrics"),
            other => tracing::info!("metrics: GET /metrics on {other}"),
        }
        // The span names this listener in its accept warnings, apart from the server's
        // (an error-level span, so it shows at every --log-level).
        let span = tracing::error_span!("metrics");
        let task = tokio::spawn(accept_scrapes(self.listener, render).instrument(span));
        MetricsHandle { task, local }
    }
}

/// Asks the kernel to hand a TCP connection to `accept` only once its first bytes have
/// come, waiting up to [`REQUEST_TIMEOUT`] (`TCP_DEFER_ACCEPT`): a client that connects
/// and sends nothing does not reach the waiting queue in that time, so idle connections,
/// even ones that reconnect the moment they are closed, cannot churn a scraper out of it.
/// Best effort: where the option is refused, the queue's bound and eviction still hold.
fn defer_accept_until_data(listener: &StreamListener) {
    let StreamListener::Tcp(tcp) = listener else {
        return;
    };
    let seconds = libc::c_int::try_from(REQUEST_TIMEOUT.as_secs()).unwrap_or(libc::c_int::MAX);
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: setsockopt reads `len` bytes from `seconds`, a live `c_int` on the stack;
    // the descriptor is the listener's own, open for the whole call.
    let set = unsafe {
        libc::setsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&raw const seconds).cast(),
            len,
        )
    };
    if set != 0 {
        tracing::debug!(
            "metrics: TCP_DEFER_ACCEPT refused: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Binds `at` and serves `render`'s text there: the one call `serve` and `relay` make.
///
/// # Errors
/// As [`MetricsEndpoint::bind`].
pub async fn expose(at: &Endpoint, render: Render) -> Result<MetricsHandle> {
    Ok(MetricsEndpoint::bind(at).await?.spawn(render))
}

/// A waiting connection's place in [`Waiting`]: how the queue evicts it, and whether it
/// has sent request bytes, which spares it while silent connections are there to evict.
#[derive(Default)]
struct Ticket {
    /// Cancelled to evict the connection.
    evict: CancellationToken,
    /// Set at the first request byte read.
    spoke: AtomicBool,
}

/// The connections waiting for their request head, oldest first.
#[derive(Default)]
struct Waiting {
    queue: std::sync::Mutex<std::collections::VecDeque<(u64, Arc<Ticket>)>>,
}

impl Waiting {
    /// Adds connection `id`. When [`MAX_WAITING`] are waiting, first evicts the oldest that
    /// has sent nothing, or the oldest of all when each has sent part of a request.
    fn admit(&self, id: u64) -> Arc<Ticket> {
        let ticket = Arc::new(Ticket::default());
        let mut queue = self.lock();
        if queue.len() >= MAX_WAITING {
            let silent = queue
                .iter()
                .position(|(_, t)| !t.spoke.load(Ordering::Acquire));
            if let Some((_, evicted)) = queue.remove(silent.unwrap_or(0)) {
                evicted.evict.cancel();
            }
        }
        queue.push_back((id, Arc::clone(&ticket)));
        ticket
    }

    /// Removes connection `id` (its request arrived, or it ended).
    fn release(&self, id: u64) {
        self.lock().retain(|(waiting, _)| *waiting != id);
    }

    /// The queue; a panic while holding it leaves it consistent (single push/pop/retain).
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(u64, Arc<Ticket>)>> {
        self.queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The accept loop: one short-lived task per scrape. At most [`MAX_WAITING`] connections
/// wait for their request (the oldest is evicted for a newcomer), and a slot of
/// [`MAX_ANSWERING`] is held only while a response is written.
async fn accept_scrapes(listener: StreamListener, render: Render) {
    let waiting = Arc::new(Waiting::default());
    let answering = Arc::new(Semaphore::new(MAX_ANSWERING));
    let mut next_id = 0u64;
    let mut backoff = Backoff::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff.reset();
                accepted
            }
            Err(e) if is_per_connection(&e) => {
                tracing::debug!("a scraper's connection failed before it was accepted: {e}");
                continue;
            }
            Err(e) => {
                // EMFILE and friends: pause as every accept loop does, scrapes in
                // flight carry on.
                tokio::time::sleep(backoff.after(&e)).await;
                continue;
            }
        };
        next_id += 1;
        let id = next_id;
        let evicted = waiting.admit(id);
        let (render, waiting, answering) = (
            Arc::clone(&render),
            Arc::clone(&waiting),
            Arc::clone(&answering),
        );
        tokio::spawn(async move {
            let result =
                answer_scrape(stream, &peer, &render, &evicted, &waiting, id, &answering).await;
            waiting.release(id);
            if let Err(e) = result {
                tracing::debug!(%peer, "metrics: {e}");
            }
        });
    }
}

/// Reads one request head and writes one response.
async fn answer_scrape(
    mut stream: Stream,
    peer: &PeerAddr,
    render: &Render,
    ticket: &Ticket,
    waiting: &Waiting,
    id: u64,
    answering: &Semaphore,
) -> std::io::Result<()> {
    let head = read_request(&mut stream, peer, ticket).await;
    waiting.release(id);
    let response = match head? {
        Head::Complete(request_line) => respond(&request_line, render),
        Head::TooLarge => response(431, "text/plain", "request header too large\n", true),
        Head::Closed => return Ok(()),
    };
    let Ok(_slot) = answering.try_acquire() else {
        return Err(std::io::Error::other(format!(
            "{peer}: too many responses being written at once; closed"
        )));
    };
    let write = async {
        stream.write_all(&response).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(RESPONSE_TIMEOUT, write).await {
        Ok(written) => written,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "{peer} did not read its response within {}s",
                RESPONSE_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// What came in before the blank line.
enum Head {
    /// The request line (the headers are not needed).
    Complete(String),
    /// No blank line within [`MAX_REQUEST`] bytes.
    TooLarge,
    /// The scraper left before finishing its request.
    Closed,
}

/// What ended one wait for request bytes.
enum Wait {
    /// The head was read (or the read failed or timed out).
    Read(std::result::Result<std::io::Result<Head>, tokio::time::error::Elapsed>),
    /// The queue evicted the connection for a newcomer.
    Evicted,
}

/// Reads the request head within [`REQUEST_TIMEOUT`], unless the queue evicts the
/// connection first. An evicted connection whose request bytes have arrived but were not
/// read yet (its task had not run) is a scraper, not an idle client: it is kept.
async fn read_request(
    stream: &mut Stream,
    peer: &PeerAddr,
    ticket: &Ticket,
) -> std::io::Result<Head> {
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut evictable = true;
    let read = loop {
        let reading = tokio::time::timeout_at(deadline, read_head(stream, &mut buf, &ticket.spoke));
        let wait = tokio::select! {
            () = ticket.evict.cancelled(), if evictable => Wait::Evicted,
            read = reading => Wait::Read(read),
        };
        match wait {
            Wait::Read(read) => break read,
            Wait::Evicted if has_unread_bytes(stream) => evictable = false,
            Wait::Evicted => {
                return Err(std::io::Error::other(format!(
                    "{peer} sent no request while newer connections waited; closed"
                )));
            }
        }
    };
    read.unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "{peer} sent no request within {}s",
                REQUEST_TIMEOUT.as_secs()
            ),
        ))
    })
}

/// Whether bytes have arrived on `stream` that nobody has read yet (a peek; never waits).
fn has_unread_bytes(stream: &Stream) -> bool {
    let mut byte = [MaybeUninit::uninit()];
    let peeked = match stream {
        Stream::Tcp(s) => SockRef::from(s).peek(&mut byte),
        Stream::Unix(s) => SockRef::from(s).peek(&mut byte),
        Stream::Tls(s) => SockRef::from(s.get_ref().0).peek(&mut byte),
    };
    matches!(peeked, Ok(1..))
}

/// Reads up to the end of the request head (`\r\n\r\n`) into `buf`, which keeps what
/// was read if this is cancelled (so reading can resume); sets `spoke` at the first byte.
async fn read_head(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    spoke: &AtomicBool,
) -> std::io::Result<Head> {
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        spoke.store(true, Ordering::Release);
        buf.extend_from_slice(&chunk[..n]);
        if memchr::memmem::find(buf, b"\r\n\r\n").is_some()
            || memchr::memmem::find(buf, b"\n\n").is_some()
        {
            let line_end = memchr::memchr(b'\n', buf).unwrap_or(buf.len());
            let line = String::from_utf8_lossy(&buf[..line_end]).trim().to_string();
            return Ok(Head::Complete(line));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(Head::TooLarge);
        }
    }
}

/// The response to one request line.
fn respond(request_line: &str, render: &Render) -> Vec<u8> {
    let mut words = request_line.split_ascii_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => {
            let body = render();
            response(200, CONTENT_TYPE, &body, method == "HEAD")
        }
        ("GET" | "HEAD", _) => response(
            404,
            "text/plain",
            "not found: the metrics are at /metrics\n",
            method == "HEAD",
        ),
        _ => response(405, "text/plain", "only GET /metrics is served\n", false),
    }
}

/// A complete HTTP/1.1 response that closes the connection.
fn response(status: u16, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_get_and_head_of_metrics_are_served() {
        let render: Render = Arc::new(|| "m 1\n".to_string());
        let ok =
            String::from_utf8(respond("GET /metrics?x=1 HTTP/1.1", &render)).unwrap_or_default();
        assert!(
            ok.starts_with("HTTP/1.1 200 OK\r\n") && ok.ends_with("\r\n\r\nm 1\n"),
            "{ok}"
        );
        let head =
            String::from_utf8(respond("HEAD /metrics HTTP/1.1", &render)).unwrap_or_default();
        assert!(
            head.contains("Content-Length: 4\r\n") && head.ends_with("\r\n\r\n"),
            "{head}"
        );
        let missing = String::from_utf8(respond("GET / HTTP/1.1", &render)).unwrap_or_default();
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let post =
            String::from_utf8(respond("POST /metrics HTTP/1.1", &render)).unwrap_or_default();
        assert!(
            post.starts_with("HTTP/1.1 405") && post.contains("Allow: GET, HEAD"),
            "{post}"
        );
    }

    #[test]
    fn a_newcomer_evicts_the_oldest_silent_connection_never_one_that_spoke() {
        let waiting = Waiting::default();
        let tickets: Vec<_> = (1..=MAX_WAITING as u64)
            .map(|id| waiting.admit(id))
            .collect();
        tickets[0].spoke.store(true, Ordering::Release);
        waiting.admit(100);
        assert!(!tickets[0].evict.is_cancelled(), "evicted one that spoke");
        assert!(
            tickets[1].evict.is_cancelled(),
            "the oldest silent one stayed"
        );
        assert!(tickets[2..].iter().all(|t| !t.evict.is_cancelled()));
        assert_eq!(waiting.lock().len(), MAX_WAITING);
    }
}
