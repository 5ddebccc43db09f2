//! `--metrics ADDR`: the counters of a running server (or relay) in the Prometheus text
//! exposition format, over HTTP at `/metrics`.
//!
//! Two parts:
//! * [`MetricsText`] writes the text format (version 0.0.4: `# HELP`, `# TYPE`, one
//!   sample per line, label values escaped). [`server_metrics`] turns a [`Summary`]
//!   snapshot into sockit's metric families; the relay writes its own
//!   ([`crate::relay::RelayStats::write_metrics`]). Only snapshots are read, so the
//!   counters stay plain atomics on the hot path.
//! * [`MetricsEndpoint`] is a deliberately tiny HTTP/1.1 responder on its own listener:
//!   `GET /metrics` (or `HEAD`) gets the text, anything else a short error, and every
//!   response closes the connection. It has its own limits (a short read deadline, a request-head
//!   size, and idle connections evicted oldest-first for newcomers), so neither a stuck
//!   scraper nor a crowd of idle connections can tie it up or lock a scraper out.
//!
//! Why not the `prometheus-client` crate: it wants to own the metrics (its `Counter` and
//! `Family` types in a `Registry`), so using it means counting twice on the hot path or
//! writing a custom collector that is as long as this encoder; and it writes OpenMetrics,
//! not the classic format every scraper and parser reads. The text format is small and
//! stable, and the integration tests check ours with Python's `prometheus_client` parser.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::stats::{ErrorKind, Summary};
use crate::endpoint::{Endpoint, PeerAddr};
use crate::error::{Error, Result};
use crate::transport::{ListenOptions, Stream, StreamListener};

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

/// Produces the exposition text on each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// Connections still sending their request head, at most. A newcomer over this evicts
/// the one that has waited longest, so idle connections can never lock a scraper out.
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
        let task = tokio::spawn(accept_scrapes(self.listener, render));
        MetricsHandle { task, local }
    }
}

/// Binds `at` and serves `render`'s text there: the one call `serve` and `relay` make.
///
/// # Errors
/// As [`MetricsEndpoint::bind`].
pub async fn expose(at: &Endpoint, render: Render) -> Result<MetricsHandle> {
    Ok(MetricsEndpoint::bind(at).await?.spawn(render))
}

/// The connections waiting for their request head, oldest first: each with a token that
/// evicts it.
#[derive(Default)]
struct Waiting {
    queue: std::sync::Mutex<std::collections::VecDeque<(u64, CancellationToken)>>,
}

impl Waiting {
    /// Adds connection `id`; evicts the oldest waiting one when [`MAX_WAITING`] are waiting.
    fn admit(&self, id: u64) -> CancellationToken {
        let token = CancellationToken::new();
        let mut queue = self.lock();
        if queue.len() >= MAX_WAITING
            && let Some((_, oldest)) = queue.pop_front()
        {
            oldest.cancel();
        }
        queue.push_back((id, token.clone()));
        token
    }

    /// Removes connection `id` (its request arrived, or it ended).
    fn release(&self, id: u64) {
        self.lock().retain(|(waiting, _)| *waiting != id);
    }

    /// The queue; a panic while holding it leaves it consistent (single push/pop/retain).
    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(u64, CancellationToken)>> {
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
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::debug!("metrics: accept failed: {e}");
                // EMFILE and friends: do not spin; the main server's accept loop logs them.
                tokio::time::sleep(Duration::from_millis(100)).await;
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
    evicted: &CancellationToken,
    waiting: &Waiting,
    id: u64,
    answering: &Semaphore,
) -> std::io::Result<()> {
    let head = tokio::select! {
        () = evicted.cancelled() => {
            return Err(std::io::Error::other(format!(
                "{peer} sent no request while newer connections waited; closed"
            )));
        }
        head = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut stream)) => head,
    };
    waiting.release(id);
    let head = match head {
        Ok(head) => head?,
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "{peer} sent no request within {}s",
                    REQUEST_TIMEOUT.as_secs()
                ),
            ));
        }
    };
    let response = match head {
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

/// Reads up to the end of the request head (`\r\n\r\n`).
async fn read_head(stream: &mut Stream) -> std::io::Result<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(Head::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        if memchr::memmem::find(&buf, b"\r\n\r\n").is_some()
            || memchr::memmem::find(&buf, b"\n\n").is_some()
        {
            let line_end = memchr::memchr(b'\n', &buf).unwrap_or(buf.len());
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
}
